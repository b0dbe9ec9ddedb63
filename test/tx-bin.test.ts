// A transaction's raw serialisation is MessagePack bin on the wire from protocol 2 on, like a
// block's (docs/protocol.md 6.3): get_transaction (mempool and confirmed), get_mempool_transaction,
// the transactions of a block's pages and of a block template. A module that speaks only
// version 1 gets the same bytes as hex strings (host/older-protocol.ts, from the catalogue's
// RawHex paths), and the chain keeps its bytes whatever a version-1 session was sent.

import test from "ava";
import { EmbeddedChain } from "../chain/embedded.ts";
import { openSession } from "./helpers/peer.ts";
import { startHost } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";

const GRANTS = ["read_blockchain", "read_chain_state", "read_mempool"];
const hexOf = (b: unknown) => Buffer.from(b as Uint8Array).toString("hex");

test("transactions' raw bytes are bin in protocol 2 and the same bytes as hex in protocol 1: get_transaction, get_mempool_transaction, block pages, block templates", async (t) => {
  const chain = await EmbeddedChain.create();
  const v2 = await openSession(t, { chain, grants: GRANTS, protocol: [1, 2] });
  const v1 = await openSession(t, { chain, grants: GRANTS, protocol: [1, 1] });
  const both = async (method: string, params: Record<string, unknown>) => [(await v2.peer.call(method, params)).result, (await v1.peer.call(method, params)).result] as [Record<string, unknown>, Record<string, unknown>];

  const txid = await chain.createTransaction();
  for (const method of ["get_transaction", "get_mempool_transaction"]) {
    const [bin, hex] = await both(method, { txid });
    t.true(bin.hex instanceof Uint8Array, `${method}: bin in protocol 2`);
    t.is(typeof hex.hex, "string", `${method}: hex in protocol 1`);
    t.is(hexOf(bin.hex), hex.hex as string);
    t.is(bin.txid, txid);
  }

  const [tplBin, tplHex] = await both("get_block_template", {});
  const binTxs = tplBin.transactions as Array<{ txid: string; hex: unknown }>;
  const hexTxs = tplHex.transactions as Array<{ txid: string; hex: unknown }>;
  t.true(binTxs.some((x) => x.txid === txid), "the template holds the transaction");
  for (const [i, x] of binTxs.entries()) {
    t.true(x.hex instanceof Uint8Array, "template transaction: bin");
    t.is(hexTxs[i]!.hex, hexOf(x.hex), "template transaction: hex in protocol 1");
  }

  const [hash] = await chain.mine(1);
  const [blockBin, blockHex] = await both("get_block", { hash });
  const txsBin = blockBin.transactions as Array<{ txid: string; hex: unknown }>;
  const txsHex = blockHex.transactions as Array<{ txid: string; hex: unknown }>;
  t.is(txsBin.length, 2, "coinbase and the transaction");
  for (const [i, x] of txsBin.entries()) {
    t.true(x.hex instanceof Uint8Array, `block transaction ${i}: bin`);
    t.is(txsHex[i]!.hex, hexOf(x.hex), `block transaction ${i}: hex in protocol 1`);
  }
  const [confirmed, confirmedHex] = await both("get_transaction", { txid });
  t.true(confirmed.hex instanceof Uint8Array && confirmedHex.hex === hexOf(confirmed.hex), "a confirmed transaction too");
  // What the chain keeps is still the bytes.
  t.true((await chain.getTransaction(txid))!.hex instanceof Uint8Array);
});

const TX_READER = inlineModule("tx-reader", ["read_blockchain", "read_chain_state", "read_mempool"], `
  const txid = ctx.config.txid as string;
  const mem = await ctx.mempool.getTransaction(txid);
  const chainTx = await ctx.chain.getTransaction(txid);
  const tip = await ctx.chain.getChainTip();
  const block = await ctx.chain.getBlock(tip);
  ctx.log.info("read", {
    mempool: typeof mem?.hex, chain: typeof chainTx?.hex, block: block!.transactions.map((x: { hex: unknown }) => typeof x.hex).join(","),
    same: mem?.hex === chainTx?.hex, hex: chainTx?.hex,
  });
`);

test("a TypeScript module gets a transaction's hex as a string from the isolate SDK (bin on the wire): ctx.mempool.getTransaction, ctx.chain.getTransaction, a block's transactions", async (t) => {
  const h = await startHost(t, { inline: { "tx-reader": TX_READER }, grants: { "tx-reader": ["read_blockchain", "read_chain_state", "read_mempool"] }, noStart: true });
  const txid = await h.chain.createTransaction();
  h.config.modules.module_configs["tx-reader"] = { txid };
  await h.host.start();
  const r = (await h.waitForLog(/^read$/, { source: "tx-reader", timeoutMs: 60_000 })).fields as Record<string, unknown>;
  t.deepEqual([r.mempool, r.chain, r.same], ["string", "string", true]);
  t.true(String(r.block).split(",").every((x) => x === "string"), `block transactions: ${r.block}`);
  t.is(r.hex, hexOf((await h.chain.getTransaction(txid))!.hex));
});
