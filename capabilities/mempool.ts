// Mempool data and fee estimates, read from the chain backend.
import * as v from "valibot";
import { CapabilityError, method, type Family } from "./types.ts";
import { answerTxOrNull } from "./tx-form.ts";
import { Hex, MempoolEntry, MempoolInfo, MempoolTxids, Transaction, f64, hash, none } from "./schemas.ts";
import { MAX_BLOCK_BYTES, rawBytes, toBytes } from "./mining.ts";
import { HookRejection } from "./hooks.ts";
import { parseTransaction } from "../chain/parse.ts";
import { hexOfRaw } from "../chain/backend.ts";

/**
 * Txids in one answer of get_mempool_txids (and the most get_mempool_transactions answers):
 * 512 KiB of strings, well inside a page's 16,384 values and 1 MiB (capabilities/pages.ts),
 * so the host encodes it in a few milliseconds. docs/protocol.md 6.1.
 */
export const MEMPOOL_PAGE = 8_192;

export const mempool: Family = {
  name: "mempool",
  summary: "Read mempool transactions, size and fee estimates.",
  methods: [
    method({
      name: "get_mempool_transactions", result: v.array(Hex), js: "getTransactions", permission: "read_mempool", args: [], params: none,
      via: { method: "get_mempool_txids", field: "txids" },
      handWritten: { rust: "get_mempool_transactions reads every page of get_mempool_txids" },
      summary: `Every txid in the mempool. The SDKs read them through get_mempool_txids, a page at a time; on the wire this method answers them as one array while they fit one answer (${MEMPOOL_PAGE.toLocaleString("en")}), and result_too_large past that.`,
      handler: async (c) => {
        const page = await c.chain.getMempoolPage(0, MEMPOOL_PAGE);
        if (page.next_after !== null) {
          throw new CapabilityError("result_too_large", `the mempool holds ${page.count} transactions, more than one answer of get_mempool_transactions carries (${MEMPOOL_PAGE}): use get_mempool_txids (ctx.mempool.getTxids() in TypeScript), which answers in pages`);
        }
        return page.txids;
      },
    }),
    method({
      name: "get_mempool_txids", result: MempoolTxids, js: "getTxids", permission: "read_mempool", args: ["options"],
      params: v.object({ after: v.optional(v.pipe(v.number(), v.integer("after must be an integer"), v.minValue(0, "after must be 0 or more"))) }),
      pages: { cursor: "after", items: "txids", next: "next_after", same: "order" },
      handWritten: { rust: "get_mempool_txids joins every page into a Vec<String>" },
      summary: `Txids in the mempool, a page of at most ${MEMPOOL_PAGE.toLocaleString("en")} at a time after \`after\` (default 0: the first page); the SDKs read every page.`,
      handler: (c, p) => c.chain.getMempoolPage(p.after ?? 0, MEMPOOL_PAGE),
    }),
    method({ name: "get_mempool_transaction", result: v.nullable(Transaction), js: "getTransaction", permission: "read_mempool", args: ["txid"], params: v.object({ txid: hash }), summary: "Mempool transaction by txid, or null.", handler: async (c, p) => answerTxOrNull(await c.chain.getMempoolTransaction(p.txid)) }),
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
          let tx: { txid: string; hex: Uint8Array | string };
          try {
            tx = await parseTransaction(bytes);
          } catch (err) {
            throw new CapabilityError("invalid_params", `transaction rejected: ${(err as Error).message}`);
          }
          // The hook payload keeps its hex string (its schema, capabilities/hooks.ts).
          await c.services.hooks.run("tx_submit", { txid: tx.txid, hex: hexOfRaw(tx.hex), module: c.module }, { caller: c.module });
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
