// Mining and transaction submission through a real isolate module: a block built from
// get_block_template, ground at regtest difficulty here, is accepted through submit_block and
// announced with NewBlock; bad blocks are rejected with the reason and change nothing;
// queue_received_block takes the same path; submit_transaction accepts a valid spend and
// refuses a double spend with the chain's reason.

import test from "ava";
import { hexToBytes } from "@noble/hashes/utils.js";
import { startHost, type TestHost } from "./helpers/host.ts";
import { REPORT, callApi, hubCall, hubError, inlineModule, type Outcome } from "./helpers/modules.ts";
import type { BlockTemplate, SubmitBlockResult } from "../chain/backend.ts";
import { PAYOUT, buildBlock, makeCoinbase, spend } from "./helpers/blocks.ts";
import { decodeTransaction, describeTransaction } from "../chain/serialise.ts";
import { blockSubsidy } from "../chain/blocks.ts";
import { hexOfRaw } from "../chain/backend.ts";

const MINER_CAPS = ["read_blockchain", "submit_block", "queue_inbound_block", "send_transactions", "register_module_api"];
const MINER = inlineModule("miner", MINER_CAPS, `
  await ctx.modules.registerApi({
    template: (p: any) => ctx.mining.getBlockTemplate(p),
    submit: (p: any) => report(() => ctx.mining.submitBlock(p.hex)),
    // The raw bytes as binary (Uint8Array), the form for large blocks (max_total_string_bytes).
    submitBytes: (p: any) => report(() => ctx.mining.submitBlock(new Uint8Array(p.hex.match(/../g).map((b: string) => parseInt(b, 16))))),
    queue: (p: any) => report(() => ctx.mining.queueBlock(p.hex)),
    send: (p: any) => report(() => ctx.mempool.submit(p.hex)),
  });
`, REPORT);

async function host(t: import("ava").ExecutionContext): Promise<TestHost> {
  const h = await startHost(t, { inline: { miner: MINER }, grants: { miner: MINER_CAPS } });
  t.is(h.mustStatus("miner").state, "running");
  return h;
}

test("template -> grind -> submit_block: accepted, connected, NewBlock; again, as bytes: duplicate", async (t) => {
  const h = await host(t);
  const txid = await h.chain.createTransaction({ feeRate: 5 });
  const fee = (await h.chain.getMempoolEntry(txid))!.fee;
  const tip = await h.chain.getChainTip();
  const height = await h.chain.getBlockHeight();

  const tpl = await callApi<BlockTemplate>(h, "miner", "template", { coinbase_script: PAYOUT, rules: ["segwit"] });
  t.is(tpl.previous_block_hash, tip);
  t.is(tpl.height, height + 1);
  t.is(tpl.bits, 0x207fffff);
  t.is(tpl.target, "7fffff" + "0".repeat(58));
  t.true(tpl.min_time <= tpl.cur_time);
  t.deepEqual(tpl.transactions.map((x) => x.txid), [txid]);
  t.is(tpl.transactions[0]!.fee, fee);
  t.is(tpl.coinbase_value, blockSubsidy(height + 1) + fee);
  t.truthy(tpl.coinbase_tx);
  t.regex(tpl.default_witness_commitment, /^6a24aa21a9ed[0-9a-f]{64}$/);

  const since = h.events.length;
  const block = buildBlock(tpl);
  const r = await callApi<Outcome>(h, "miner", "submit", { hex: block.hex });
  t.deepEqual(r, { ok: true, value: { result: "accepted", hash: block.hash } });
  t.is(await h.chain.getChainTip(), block.hash);
  t.is(await h.chain.getBlockHeight(), height + 1);
  t.false(await h.chain.isInMempool(txid), "the transaction was confirmed");
  const confirmed = await h.chain.getBlockByHeight(height + 1);
  t.deepEqual(confirmed?.transactions.map((x) => x.txid), [tpl.coinbase_tx!.txid, txid]);
  const ev = await h.waitForEvent("NewBlock", (p) => p.hash === block.hash, { since });
  t.deepEqual(ev.payload, { hash: block.hash, height: height + 1, time: tpl.cur_time, tx_count: 2 });
  t.truthy(h.events.slice(since).find((e) => e.type === "MempoolTransactionRemoved" && (e.payload as { txid: string; reason: string }).txid === txid && (e.payload as { reason: string }).reason === "block"));
  // The coinbase is spendable chain state now.
  t.truthy(await h.chain.getUtxo({ txid: tpl.coinbase_tx!.txid, vout: 0 }));

  t.deepEqual(await callApi(h, "miner", "submit", { hex: block.hex }), { ok: true, value: { result: "duplicate", hash: block.hash } });
  t.deepEqual(await callApi(h, "miner", "submitBytes", { hex: block.hex }), { ok: true, value: { result: "duplicate", hash: block.hash } }, "the same block as bytes");
});

test("submit_block takes the block as bytes: a block mined from a template is accepted that way", async (t) => {
  const h = await host(t);
  const tpl = await callApi<BlockTemplate>(h, "miner", "template", { coinbase_script: PAYOUT });
  const block = buildBlock(tpl);
  t.deepEqual(await callApi(h, "miner", "submitBytes", { hex: block.hex }), { ok: true, value: { result: "accepted", hash: block.hash } });
  t.is(await h.chain.getChainTip(), block.hash);
});

test("bad blocks are rejected with the reason and change nothing", async (t) => {
  const h = await host(t);
  const tip = await h.chain.getChainTip();
  const tpl = await callApi<BlockTemplate>(h, "miner", "template", { coinbase_script: PAYOUT });
  const since = h.events.length;
  const submit = async (hex: string): Promise<SubmitBlockResult> => {
    const r = await callApi<Outcome>(h, "miner", "submit", { hex });
    if (!r.ok) throw new Error(`submit failed: ${r.code} ${r.message}`);
    return r.value as SubmitBlockResult;
  };
  const reason = async (hex: string) => {
    const r = await submit(hex);
    t.is(r.result, "rejected", JSON.stringify(r));
    return r.reason ?? "";
  };

  t.regex(await reason(buildBlock(tpl, { badPow: true }).hex), /^high-hash: /);
  t.regex(await reason(buildBlock(tpl, { merkleRoot: "11".repeat(32) }).hex), /^bad-txnmrklroot: /);
  t.regex(await reason(buildBlock(tpl, { coinbase: makeCoinbase(tpl, [], tpl.coinbase_value + 1) }).hex), /^bad-cb-amount: the coinbase pays 5000000001 sats, at most 5000000000/);
  t.regex(await reason(buildBlock(tpl, { prev: "22".repeat(32) }).hex), /^prev-blk-not-found: /);
  // A transaction spending an output that does not exist.
  t.regex(await reason(buildBlock(tpl, { txs: [spend("33".repeat(32), 0, 1000)] }).hex), /^bad-txns-inputs-missingorspent: /);
  // An immature coinbase (the tip's).
  const tipBlock = (await h.chain.getBlock(tip))!;
  t.regex(await reason(buildBlock(tpl, { txs: [spend(tipBlock.transactions[0]!.txid, 0, 1000)] }).hex), /^bad-txns-premature-spend-of-coinbase: /);
  // Without the witness commitment matching the transactions.
  const one = (await h.chain.getBlockByHeight(1))!.transactions[0]!;
  const good = spend(one.txid, 0, 1000);
  t.regex(await reason(buildBlock(tpl, { txs: [good], coinbase: tpl.coinbase_tx! }).hex), /^bad-witness-merkle-match: /);
  // Not a block at all.
  t.regex(await reason("00"), /^bad-block-decode: /);
  const garbage = await callApi<Outcome>(h, "miner", "submit", { hex: "zz" });
  t.is(!garbage.ok && garbage.code, "invalid_params");

  t.is(await h.chain.getChainTip(), tip, "the tip did not move");
  t.falsy(h.events.slice(since).find((e) => e.type === "NewBlock"));

  // A valid block built on an old tip: the chain moved on meanwhile.
  const stale = buildBlock(tpl);
  await h.mine(1);
  t.regex(await reason(stale.hex), /^not-on-tip: .*side branches are not supported/);

  // The same spend, with a matching commitment, on the new tip: accepted (and its fee paid).
  const tpl2 = await callApi<BlockTemplate>(h, "miner", "template", {});
  t.is(tpl2.coinbase_tx, undefined, "no coinbase_tx without coinbase_script");
  const fee = one.outputs[0]!.value - 1000;
  const block = buildBlock(tpl2, { txs: [good], coinbase: makeCoinbase(tpl2, [good], tpl2.coinbase_value + fee) });
  t.is((await submit(block.hex)).result, "accepted");
  t.truthy(await h.chain.getUtxo({ txid: good.txid, vout: 0 }));
  t.is(await h.chain.getUtxo({ txid: one.txid, vout: 0 }), null);
});

test("queue_received_block takes the same path; submit_block needs its grant", async (t) => {
  const h = await host(t);
  const tpl = await callApi<BlockTemplate>(h, "miner", "template", { coinbase_script: PAYOUT });
  const block = buildBlock(tpl);
  const denied = await hubError(h, "reader", ["read_blockchain"], "submit_block", { hex: block.hex });
  t.is(denied.code, "permission_denied");
  t.regex(denied.message, /submit_block/);
  const bad = await callApi<Outcome>(h, "miner", "queue", { hex: buildBlock(tpl, { badPow: true }).hex });
  t.is(bad.ok && (bad.value as SubmitBlockResult).result, "rejected");
  t.deepEqual(await callApi(h, "miner", "queue", { hex: block.hex }), { ok: true, value: { result: "accepted", hash: block.hash } });
  t.is(await h.chain.getChainTip(), block.hash);
  // get_block_template needs only read_blockchain, as in the BLVM node.
  const tpl2 = (await hubCall(h, "reader", ["read_blockchain"], "get_block_template", {})) as BlockTemplate;
  t.is(tpl2.previous_block_hash, block.hash);
});

test("submit_transaction: a valid spend enters the mempool; a double spend is refused with the reason", async (t) => {
  const h = await host(t);
  const coinbase = (await h.chain.getBlockByHeight(1))!.transactions[0]!;
  const value = coinbase.outputs[0]!.value;
  const tx = spend(coinbase.txid, 0, value - 10_000);
  const since = h.events.length;
  t.deepEqual(await callApi(h, "miner", "send", { hex: tx.hex }), { ok: true, value: tx.txid });
  t.true(await h.chain.isInMempool(tx.txid));
  t.is((await h.chain.getMempoolEntry(tx.txid))?.fee, 10_000);
  await h.waitForEvent("MempoolTransactionAdded", (p) => p.txid === tx.txid, { since });

  const double = spend(coinbase.txid, 0, value - 20_000);
  const r = await callApi<Outcome>(h, "miner", "send", { hex: double.hex });
  t.is(!r.ok && r.code, "invalid_params");
  t.regex(!r.ok ? r.message : "", new RegExp(`^transaction rejected: input ${coinbase.txid}:0 conflicts with mempool transaction ${tx.txid}`));
  t.false(await h.chain.isInMempool(double.txid));

  // A wallet transaction (signed by the chain's wallet) already in the mempool: refused as such.
  const walletTx = (await h.chain.getTransaction(await h.chain.createTransaction()))!;
  const again = await callApi<Outcome>(h, "miner", "send", { hex: walletTx.hex });
  t.regex(!again.ok ? again.message : "", /already in the mempool/);
  // Its outputs changed: a different transaction spending the same coin.
  const raw = decodeTransaction(hexToBytes(hexOfRaw(walletTx.hex)));
  raw.outputs[0]!.amount -= 1n;
  const mutated = describeTransaction(raw);
  const conflict = await callApi<Outcome>(h, "miner", "send", { hex: mutated.hex });
  t.regex(!conflict.ok ? conflict.message : "", /conflicts with mempool transaction/);

  const junk = await callApi<Outcome>(h, "miner", "send", { hex: "0200" });
  t.is(!junk.ok && junk.code, "invalid_params");
  t.regex(!junk.ok ? junk.message : "", /decode failed/);
  const denied = await hubError(h, "reader", ["read_mempool"], "submit_transaction", { hex: tx.hex });
  t.is(denied.code, "permission_denied");
});

test("network family: stats and peers from the backend", async (t) => {
  const h = await host(t);
  const stats = (await hubCall(h, "net", ["read_network"], "get_network_stats", {})) as { peer_count: number; hash_rate: number };
  t.is(stats.peer_count, 0);
  t.true(stats.hash_rate >= 0);
  t.deepEqual(await hubCall(h, "net", ["read_network"], "get_network_peers", {}), []);
  t.is((await hubError(h, "net", ["read_mempool"], "get_network_peers", {})).code, "permission_denied");
});
