// What filling one LevelDB batch costs the host's thread, put by put (issue #8, docs/security.md
// "what a large frame still does in one piece"). Not part of `npm run bench` (it measures
// stalls, not speed): run it alone,
//   node_modules/.bin/node --import=tsx bench/leveldb-batch.ts [rounds]
// classic-level builds leveldb's WriteBatch (one std::string) in its synchronous batch.put on
// the calling thread, chained or array batch alike; storage/store.ts fills a chained batch op by
// op with turns of the loop between slices. The string grows by doubling, so the put that
// passes a power of two copies everything before it into fresh memory. Three ways, interleaved:
//   fill N:      N values of 1 MiB into a fresh batch, as the store does (15: one frame's
//                transaction; 47: a transaction in parts at the limit, 32 MiB held + a frame);
//   presize 15:  one put of the whole size first, then clear() (leveldb keeps the string's
//                capacity), then the 15 puts: no copy while filling, but the presizing put
//                writes the whole size (and classic-level copies its value first) in one piece.
// Reports, per round, the longest single put (which one) and the presizing put.
//
// Run of 2026-12-06 02:57 (3 rounds each, twice interleaved, load 16-17: other workloads' tests):
// fill 15: longest put 188-466 ms (median ~443), always the 9th (past 8 MiB), the others' median
// 30-68 ms; presize 15: the presizing put 316-1587 ms (median ~1180), then every put under
// 41 ms; fill 47: longest put 354-768 ms (median ~720), the 33rd (past 32 MiB). At load 1.5-1.8
// (02:20): fill 15 longest 33-84 ms, presizing put 54-220 ms. The cost is first touches of fresh
// pages on this guest: 16 MiB written to fresh memory 67-227 ms, written again 1-2 ms.

import { ClassicLevel } from "classic-level";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";

const MiB = 1024 * 1024;
const rounds = Number(process.argv[2] ?? 3);
const dir = mkdtempSync(path.join(os.tmpdir(), "modhost-batch-"));
const db = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: "buffer", valueEncoding: "buffer" });
await db.open();
const values = Array.from({ length: 47 }, (_, i) => Buffer.alloc(MiB - 64, i));
const turn = () => new Promise((r) => setImmediate(r));

async function round(mode: "fill" | "presize", n: number, r: number): Promise<string> {
  const batch = db.batch();
  let presize = 0;
  if (mode === "presize") {
    const t0 = performance.now();
    batch.put(Buffer.from("presize"), Buffer.alloc(n * MiB));
    batch.clear();
    presize = performance.now() - t0;
  }
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    batch.put(Buffer.from(`${mode}-${n}-${r}-${i}`), values[i]!);
    times.push(performance.now() - t0);
    await turn();
  }
  await batch.write();
  const longest = Math.max(...times);
  const rest = times.filter((_, i) => i !== times.indexOf(longest)).sort((a, b) => a - b);
  return `${mode} ${n} | ${longest.toFixed(1)} (put ${times.indexOf(longest) + 1}) | ${rest[Math.floor(rest.length / 2)]!.toFixed(2)} | ${mode === "presize" ? presize.toFixed(1) : "-"}`;
}

console.log(`${rounds} rounds of each, interleaved; load ${os.loadavg().map((l) => l.toFixed(1)).join(" ")}`);
console.log("way | longest put (ms) | median of the other puts (ms) | presizing put (ms)");
for (let r = 0; r < rounds; r++) {
  for (const [mode, n] of [["fill", 15], ["presize", 15], ["fill", 47]] as const) {
    await new Promise((res) => setTimeout(res, 100));
    console.log(await round(mode, n, r));
  }
}
await db.close();
rmSync(dir, { recursive: true, force: true });
