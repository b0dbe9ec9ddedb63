// The mempool keeps its fee-rate order as transactions come and go (chain/mempool.ts), instead
// of sorting every record again after each change on the host's loop: the order it keeps must
// be the order a full sort gives, whatever the sequence of additions and removals, and its
// totals must be the sums over what is present.

import test from "ava";
import { Mempool, MempoolFull, feeRate, heldBytes, type MempoolRecord } from "../chain/mempool.ts";
import type { Transaction } from "../chain/backend.ts";

function record(n: number, fee: number, vsize: number): MempoolRecord {
  const txid = n.toString(16).padStart(64, "0");
  const tx = { txid, wtxid: txid, version: 2, locktime: 0, inputs: [{ txid: "ff".repeat(32), vout: n, script_sig: "", sequence: 0, witness: [], coinbase: false }], outputs: [], size: vsize, vsize, weight: vsize * 4, hex: "" } as Transaction;
  return { tx, fee, time: 0 };
}

test("the kept fee-rate order equals a stable sort of what is present after random additions and removals, and the totals are the sums", (t) => {
  const pool = new Mempool();
  let seed = 7;
  const random = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const present: MempoolRecord[] = [];
  for (let step = 0; step < 6_000; step++) {
    if (present.length > 0 && random() < 0.35) {
      const [gone] = present.splice(Math.floor(random() * present.length), 1);
      t.is(pool.remove(gone!.tx.txid), gone);
    } else {
      // Few distinct rates, so that ties (kept in order of acceptance) are common.
      const r = record(step, Math.floor(random() * 8) * 100, 100 + Math.floor(random() * 3) * 50);
      pool.add(r);
      present.push(r);
    }
    if (step % 500 === 0 || step === 5_999) {
      const expected = [...present].sort((a, b) => feeRate(b) - feeRate(a)).map((r) => r.tx.txid);
      t.deepEqual(pool.byFeeRate().map((r) => r.tx.txid), expected, `order at step ${step}`);
      t.deepEqual(pool.info(), {
        transaction_count: present.length,
        size_bytes: present.reduce((s, r) => s + r.tx.vsize, 0),
        total_fee_sats: present.reduce((s, r) => s + r.fee, 0),
      });
    }
  }
});

test("the fee estimate's quantile is the value a sort puts at that index, for random, tied and sorted inputs", async (t) => {
  const { nthSmallest } = await import("../chain/embedded.ts");
  let seed = 3;
  const random = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const inputs = [
    Array.from({ length: 5_001 }, () => random() * 100),
    Array.from({ length: 4_000 }, () => Math.floor(random() * 4)),
    Array.from({ length: 3_000 }, (_, i) => i),
    Array.from({ length: 3_000 }, (_, i) => 3_000 - i),
    [7],
  ];
  for (const values of inputs) {
    const sorted = [...values].sort((a, b) => a - b);
    for (const k of [0, 1, Math.floor(values.length / 2), Math.floor(values.length / 20), values.length - 1]) {
      t.is(nthSmallest(Float64Array.from(values), k), sorted[k]!, `k = ${k} of ${values.length}`);
    }
  }
});

test("a full mempool (maxBytes) takes a transaction only by evicting strictly lower fee rates, lowest first; otherwise it refuses naming max_mempool_mb and evicts nothing", (t) => {
  const one = heldBytes(record(0, 100, 1000).tx);
  const pool = new Mempool(10 * one);
  // Ten of 1000 vB at fee rates 0.1 ... 1.0 sat/vB: full.
  for (let i = 0; i < 10; i++) {
    const r = record(i, (i + 1) * 100, 1000);
    t.deepEqual(pool.evictionsFor(r), []);
    pool.add(r);
  }
  t.is(pool.held, 10 * one);
  // Same rate as the lowest: nothing to evict for it.
  const same = record(100, 100, 1000);
  t.throws(() => pool.evictionsFor(same), { instanceOf: MempoolFull, message: /mempool full.*\[chain\] max_mempool_mb.*pay a higher fee rate/ });
  // Three times the size at 0.35 sat/vB: the three lowest (0.1, 0.2, 0.3) make room, lowest first.
  const big = record(101, 1050, 3000);
  t.deepEqual(pool.evictionsFor(big).map((r) => r.fee), [100, 200, 300]);
  // Five times the size at 0.35 sat/vB: only three are lower; refused, and nothing changed.
  t.throws(() => pool.evictionsFor(record(102, 1750, 5000)), { instanceOf: MempoolFull });
  t.is(pool.size, 10);
  t.is(pool.held, 10 * one);
  // Over the bound alone: refused whatever it pays.
  t.throws(() => pool.evictionsFor(record(103, 1e9, 16 * 1000)), { instanceOf: MempoolFull, message: /alone/ });
  for (const r of pool.evictionsFor(big)) pool.remove(r.tx.txid);
  pool.add(big);
  t.true(pool.held <= 10 * one);
  t.is(pool.size, 8);
});

test("the embedded chain's submitTransaction refuses past max bytes and evicts a lower fee rate for a higher one, announcing it as evicted", async (t) => {
  const { EmbeddedChain } = await import("../chain/embedded.ts");
  const { mempoolTransactions } = await import("./helpers/big-block.ts");
  const { RawTx } = await import("@scure/btc-signer");
  const chain = await EmbeddedChain.create({ mempoolBytes: 4 * 1024 * 1024 });
  const base = await mempoolTransactions(chain, 6);
  const removed: Array<{ txid: string; reason: string }> = [];
  chain.subscribe((name, payload) => {
    if (name === "MempoolTransactionRemoved") removed.push(payload as { txid: string; reason: string });
  });
  // Each with 400 KB of witness (~1.2 MB held): three fit in 4 MiB, the fourth is refused.
  const heavy = (i: number, feeCut: number) => {
    const tx = RawTx.decode(base[i]!);
    tx.outputs[0]!.amount -= BigInt(feeCut);
    return RawTx.encode({ ...tx, segwitFlag: true, witnesses: [[new Uint8Array(400_000).fill(i)]] });
  };
  const txids: string[] = [];
  for (let i = 0; i < 3; i++) txids.push(await chain.submitTransaction(heavy(i, 0)));
  await t.throwsAsync(chain.submitTransaction(heavy(3, 0)), { message: /mempool full/ });
  t.is(chain.memoryCounts().mempool, 3);
  const rich = await chain.submitTransaction(heavy(4, 100_000));
  t.is(chain.memoryCounts().mempool, 3);
  t.true(chain.memoryCounts().mempoolBytes <= 4 * 1024 * 1024);
  t.deepEqual(removed, [{ txid: txids[2], reason: "evicted" }], "the last of the equal rates (acceptance order) went");
  t.truthy(await chain.getMempoolEntry(rich));
});
