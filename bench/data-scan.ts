// What the data directory quota's scan costs (host/data-quota.ts: a running native module's
// directory is measured every 10 s). Not part of `npm run bench`: run it alone,
//   node_modules/.bin/node --import=tsx --no-node-snapshot bench/data-scan.ts [files]
// A directory of N files (default 10,000, the default max_data_files) in 10 subdirectories is
// measured by measureDataDir (capabilities/fs-path.ts), interleaved with two baselines in the
// same run: the walk as first written (one fs/promises call per file: opendir, lstat) and
// `du -sb` (GNU du, a C walk of the same tree); ROUNDS rounds each, medians. For the
// scan it also reports the host process's CPU time (all its threads: the loop and libuv's) and
// the longest the host's loop was held in one turn (a 1 ms interval timer's largest lateness).
//
// Runs of 2026-12-05 16:09 (2-core machine at load 3.2-3.8, shared with other sessions), three
// runs, medians of 11 rounds each:
//   measureDataDir: 74-76 ms wall, 78-82 ms CPU; longest timer lateness +3.6-4.3 ms (idle +0.3)
//   async walk (before): 357-362 ms wall, 378-389 ms CPU; du -sb: 41 ms wall
// At load 9-10 earlier: measureDataDir 133-193 ms wall, 101-110 ms CPU; async 1086 ms, 794 ms CPU.
// write_file of 100 bytes (16:17, load 4-5, two runs): new files 482 / 542 µs with the quota,
// 402 / 611 µs without; over one file 388 / 458 µs with, 389 / 622 µs without (noisy: the
// second run's baseline was slower than the quota).

import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { lstat, open, opendir, type FileHandle } from "node:fs/promises";
import { constants as C } from "node:fs";
import { measureDataDir, parsePath, writeFileAt } from "../capabilities/fs-path.ts";
import { DataUsage } from "../capabilities/fs-usage.ts";

/** The walk before (commit 752f307): the same anchored walk, one fs/promises call per file. */
async function asyncWalk(dir: FileHandle, m: { bytes: number; entries: number }): Promise<void> {
  const subdirs: string[] = [];
  for await (const e of await opendir(`/proc/self/fd/${dir.fd}`, { bufferSize: 256 })) {
    m.entries++;
    if (e.isFile()) {
      const st = await lstat(`/proc/self/fd/${dir.fd}/${e.name}`).catch(() => null);
      if (st?.isFile()) m.bytes += st.size;
    } else if (e.isDirectory()) subdirs.push(e.name);
  }
  for (const name of subdirs) {
    const sub = await open(`/proc/self/fd/${dir.fd}/${name}`, C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW);
    try {
      await asyncWalk(sub, m);
    } finally {
      await sub.close();
    }
  }
}

const N = Number(process.argv[2] ?? 10_000);
const ROUNDS = 11;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

const base = await mkdtemp(path.join(os.tmpdir(), "modhost-bench-scan-"));
for (let d = 0; d < 10; d++) {
  mkdirSync(path.join(base, `d${d}`));
  for (let i = 0; i < N / 10; i++) writeFileSync(path.join(base, `d${d}`, `f${i}`), "0123456789");
}
const quota = { maxBytes: 0, maxEntries: N + 100 };
const scan = { wall: [] as number[], cpu: [] as number[], turn: [] as number[] };
const du: number[] = [];
const before = { wall: [] as number[], cpu: [] as number[] };
/** The same timer's largest lateness while the loop is idle for as long as a scan took: the machine's own share of it. */
const idle: number[] = [];
let entries = 0;
for (let r = 0; r < ROUNDS; r++) {
  let last = performance.now();
  let worst = 0;
  const tick = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last);
    last = now;
  }, 1);
  const [w0, c0] = [performance.now(), cpuMs()];
  const m = await measureDataDir(base, quota, "bench");
  scan.wall.push(performance.now() - w0);
  scan.cpu.push(cpuMs() - c0);
  clearInterval(tick);
  scan.turn.push(Math.max(0, worst - 1));
  entries = m.entries;
  {
    let lastIdle = performance.now();
    let worstIdle = 0;
    const t2 = setInterval(() => {
      const now = performance.now();
      worstIdle = Math.max(worstIdle, now - lastIdle);
      lastIdle = now;
    }, 1);
    await new Promise((r) => setTimeout(r, scan.wall.at(-1)));
    clearInterval(t2);
    idle.push(Math.max(0, worstIdle - 1));
  }
  {
    const [w0, c0] = [performance.now(), cpuMs()];
    const root = await open(base, C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW);
    const m = { bytes: 0, entries: 0 };
    await asyncWalk(root, m);
    await root.close();
    before.wall.push(performance.now() - w0);
    before.cpu.push(cpuMs() - c0);
    if (m.entries !== entries) throw new Error(`the async walk counted ${m.entries}, the scan ${entries}`);
  }
  const d0 = performance.now();
  execFileSync("du", ["-sb", base]);
  du.push(performance.now() - d0);
}
await rm(base, { recursive: true, force: true });
const f = (x: number) => x.toFixed(1);
console.log(`${entries} entries (${N} files, 10 directories), ${ROUNDS} rounds, load ${os.loadavg().map((l) => l.toFixed(1)).join(" ")}`);
console.log(`measureDataDir: ${f(median(scan.wall))} ms wall, ${f(median(scan.cpu))} ms CPU, longest loop turn +${f(median(scan.turn))} ms (median; max ${f(Math.max(...scan.turn))} ms)`);
console.log(`idle loop for as long (baseline): longest timer lateness +${f(median(idle))} ms (median; max ${f(Math.max(...idle))} ms)`);
console.log(`async walk, one fs/promises call per file (before, baseline): ${f(median(before.wall))} ms wall, ${f(median(before.cpu))} ms CPU`);
console.log(`du -sb (baseline): ${f(median(du))} ms wall`);

// What the quota adds to the file API: write_file of 100 bytes, 2000 times, to new files and
// over one file, with the count (lock, no-create open then O_EXCL create) and without, alternating.
const WRITES = 2000;
const wdir = await mkdtemp(path.join(os.tmpdir(), "modhost-bench-writes-"));
const data = new Uint8Array(100);
const writes = { quota: { fresh: [] as number[], over: [] as number[] }, none: { fresh: [] as number[], over: [] as number[] } };
for (let r = 0; r < 5; r++) {
  for (const kind of ["quota", "none"] as const) {
    const usage = kind === "quota" ? new DataUsage("bench", { maxBytes: 0, maxEntries: 1e6 }, 0, 0) : undefined;
    const sub = path.join(wdir, `${kind}-${r}`);
    mkdirSync(sub);
    let t0 = performance.now();
    for (let i = 0; i < WRITES; i++) await writeFileAt(sub, parsePath(`f${i}`), data, false, usage);
    writes[kind].fresh.push(((performance.now() - t0) * 1000) / WRITES);
    t0 = performance.now();
    for (let i = 0; i < WRITES; i++) await writeFileAt(sub, parsePath("same"), data, false, usage);
    writes[kind].over.push(((performance.now() - t0) * 1000) / WRITES);
  }
}
await rm(wdir, { recursive: true, force: true });
console.log(`write_file of 100 bytes, new files / over one file (median of 5 x ${WRITES}): with the quota ${f(median(writes.quota.fresh))} / ${f(median(writes.quota.over))} µs; without (baseline) ${f(median(writes.none.fresh))} / ${f(median(writes.none.over))} µs`);
