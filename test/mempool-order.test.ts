// The mempool keeps its fee-rate order as transactions come and go (chain/mempool.ts), instead
// of sorting every record again after each change on the host's loop: the order it keeps must
// be the order a full sort gives, whatever the sequence of additions and removals, and its
// totals must be the sums over what is present.

import test from "ava";
import { Mempool, feeRate, type MempoolRecord } from "../chain/mempool.ts";
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
