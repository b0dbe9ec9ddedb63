// The protocol fuzz targets (fuzz/), a short fixed run of each: the same seed every time, so a
// failure here replays. The long run is `npm run fuzz`. Each run fails on a crash (the target
// threw), a hang (one input past its bound) or heap growth past a bound.

import test from "ava";
import { formatReport, fuzz, type FuzzTarget } from "../fuzz/driver.ts";
import { frameTarget } from "../fuzz/protocol-frame.ts";
import { bodyTarget } from "../fuzz/protocol-body.ts";
import { handshakeTarget } from "../fuzz/protocol-handshake.ts";
import { sessionTarget } from "../fuzz/protocol-session.ts";

const run = (target: FuzzTarget, iterations: number, hangMs: number) => fuzz(target, { iterations, seed: 20261204, hangMs, maxHeapGrowthMb: 48 });

test.serial("fuzz protocol-frame: 3000 chunked byte streams, no crash, no bytes lost or invented", async (t) => {
  const r = await run(await frameTarget(), 3000, 1000);
  t.is(r.failures.length, 0, formatReport(r));
  t.is(r.iterations, 3000);
});

test.serial("fuzz protocol-body: 3000 bodies decoded, validated, re-encoded; no crash, what decodes round-trips", async (t) => {
  const r = await run(await bodyTarget(), 3000, 1000);
  t.is(r.failures.length, 0, formatReport(r));
  t.is(r.iterations, 3000);
});

test.serial("fuzz protocol-handshake: 300 first contacts end open, closed or waiting, consistently", async (t) => {
  const r = await run(await handshakeTarget(), 300, 5000);
  t.is(r.failures.length, 0, formatReport(r));
  t.is(r.iterations, 300);
});

test.serial("fuzz protocol-session: 3000 frames through the real session and hub, every request answered by its id", async (t) => {
  const r = await run(await sessionTarget({ batch: 200 }), 3000, 15_000);
  t.is(r.failures.length, 0, formatReport(r));
  t.is(r.iterations, 3000);
});

test.serial("fuzz driver: a crash, a hang (by the wall for a promise, by CPU time for a synchronous input) and a leak in a target are each reported with the input; a synchronous input that only waits is not a hang", async (t) => {
  const seeds = [Buffer.from("81a174a3616b63", "hex")];
  const crash = await fuzz({ name: "crash", seeds, run: (b) => { if (b.includes(0xc1)) throw new Error("boom"); } }, { iterations: 2000, seed: 3 });
  t.true(crash.failures.some((f) => f.kind === "crash" && f.message.includes("boom") && f.input.includes("c1")), formatReport(crash));
  const hang = await fuzz({ name: "hang", seeds, run: (b) => (b.length > 12 ? new Promise(() => {}) : undefined) }, { iterations: 200, seed: 3, hangMs: 50 });
  t.true(hang.failures.some((f) => f.kind === "hang"), formatReport(hang));
  // A synchronous input is a hang by the CPU it takes, not by the wall: one that burns 80 ms is
  // reported; one that waits 80 ms without running (as a busy machine makes any input wait) is not.
  const burn = (ms: number) => { const end = process.threadCpuUsage().user + ms * 1000; while (process.threadCpuUsage().user < end); };
  const slow = await fuzz({ name: "burns", seeds, run: (b) => void (b.length > 12 && burn(80)) }, { iterations: 30, seed: 3, hangMs: 50 });
  t.true(slow.failures.some((f) => f.kind === "hang" && /ms of CPU/.test(f.message)), formatReport(slow));
  const cell = new Int32Array(new SharedArrayBuffer(4));
  const waits = await fuzz({ name: "waits", seeds, run: (b) => void (b.length > 12 && Atomics.wait(cell, 0, 0, 80)) }, { iterations: 30, seed: 3, hangMs: 50 });
  t.false(waits.failures.some((f) => f.kind === "hang"), formatReport(waits));
  const kept: unknown[] = [];
  const leak = await fuzz({ name: "leak", seeds, run: () => void kept.push(new Array(10_000).fill(1)) }, { iterations: 300, seed: 3, maxHeapGrowthMb: 8 });
  t.true(leak.failures.some((f) => f.kind === "leak"), formatReport(leak));
});
