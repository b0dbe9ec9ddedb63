// Mempool data and fee estimates, read from the chain backend.
import * as v from "valibot";
import { CapabilityError, method, type Family } from "./types.ts";
import { Hex, MempoolEntry, MempoolInfo, Transaction, f64, hash, none } from "./schemas.ts";
import { MAX_BLOCK_BYTES, rawBytes, toBytes } from "./mining.ts";
import { HookRejection } from "./hooks.ts";
import { parseTransaction } from "../chain/parse.ts";

export const mempool: Family = {
  name: "mempool",
  summary: "Read mempool transactions, size and fee estimates.",
  methods: [
    method({ name: "get_mempool_transactions", result: v.array(Hex), js: "getTransactions", permission: "read_mempool", args: [], params: none, summary: "Txids in the mempool.", handler: (c) => c.chain.getMempoolTransactions() }),
    method({ name: "get_mempool_transaction", result: v.nullable(Transaction), js: "getTransaction", permission: "read_mempool", args: ["txid"], params: v.object({ txid: hash }), summary: "Mempool transaction by txid, or null.", handler: (c, p) => c.chain.getMempoolTransaction(p.txid) }),
    method({ name: "get_mempool_entry", result: v.nullable(MempoolEntry), js: "getEntry", permission: "read_mempool", args: ["txid"], params: v.object({ txid: hash }), summary: "Fee, vsize and fee rate of a mempool transaction, or null.", handler: (c, p) => c.chain.getMempoolEntry(p.txid) }),
    method({ name: "get_mempool_size", result: MempoolInfo, js: "getSize", permission: "read_mempool", args: [], params: none, summary: "Transaction count, bytes and total fees.", handler: (c) => c.chain.getMempoolInfo() }),
    method({ name: "check_transaction_in_mempool", result: v.boolean(), js: "has", permission: "read_mempool", args: ["txid"], params: v.object({ txid: hash }), summary: "Whether a txid is in the mempool.", handler: (c, p) => c.chain.isInMempool(p.txid) }),
    method({
      name: "get_fee_estimate", result: f64, js: "estimateFee", permission: "read_mempool", args: ["target_blocks"],
      params: v.object({ target_blocks: v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(1008)) }),
      summary: "Fee rate (sat/vB) to confirm within target_blocks.", handler: (c, p) => c.chain.estimateFee(p.target_blocks),
    }),
    method({
      name: "submit_transaction", result: Hex, js: "submit", permission: "send_transactions", args: ["hex"], params: v.object({ hex: rawBytes(MAX_BLOCK_BYTES) }),
      handWritten: { rust: "submit_transaction (hex, sent as binary) and submit_transaction_bytes" },
      summary: "Submit a serialised transaction (binary, or hex) to the mempool; returns its txid. A refused transaction fails with invalid_params and the reason; one refused by a tx_submit hook with hook_rejected, naming the hook's module.",
      audit: true,
      handler: async (c, p) => {
        const bytes = toBytes(p.hex);
        // The tx_submit hooks see the transaction first (capabilities/hooks.ts); only when there are any.
        if (c.services.hooks?.active("tx_submit")) {
          let tx: { txid: string; hex: string };
          try {
            tx = await parseTransaction(bytes);
          } catch (err) {
            throw new CapabilityError("invalid_params", `transaction rejected: ${(err as Error).message}`);
          }
          await c.services.hooks.run("tx_submit", { txid: tx.txid, hex: tx.hex, module: c.module });
        }
        try {
          return await c.chain.submitTransaction(bytes);
        } catch (err) {
          if (err instanceof HookRejection) throw err;
          throw new CapabilityError("invalid_params", `transaction rejected: ${(err as Error).message}`);
        }
      },
    }),
  ],
};
