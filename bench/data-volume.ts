// What a data volume costs (runtime/sandbox/volume.ts), against the scan mode it replaces, in
// the same run. Not part of `npm run bench` (it needs root and loop devices): run it alone,
//   node_modules/.bin/node --import=tsx --no-node-snapshot bench/data-volume.ts [rounds]
// 1. The data directory's part of a module start and stop, interleaved: mountVolume + release
//    of an existing 256 MiB image (mount, reserve check, unmount, loop device freed) against
//    scan mode's (mkdir, measureDataDir of the empty directory); and the first start's creation
//    (truncate, mkfs.ext4, mount, lost+found removed, root made private, reserve).
// 2. Write throughput a module gets, as an unprivileged uid (setpriv): dd of 64 MiB in 1 MiB
//    writes into a volume and into a plain directory on the host's file system, interleaved,
//    page cache (no sync) and to disk (conv=fdatasync).
// (3. below, before 2.: the host's loop during start/stop, tool runner against forks.)

import { execFileSync } from "node:child_process";
import { chmod, chown, mkdir, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { measureDataDir } from "../capabilities/fs-path.ts";
import { prepareDataDir } from "../runtime/sandbox/datadir.ts";
import { runToolsInline, startToolRunner, toolRuns } from "../runtime/sandbox/tool-runner.ts";
import { mountVolume, volumeTools } from "../runtime/sandbox/volume.ts";
import { loopLateness } from "./common.ts";
import { median } from "./stats.ts";

const rounds = Number(process.argv[2] ?? 11);
if (typeof (await volumeTools()) === "string") {
  console.log(`no volumes here: ${String(await volumeTools())}`);
  process.exit(0);
}
const MiB = 1024 * 1024;
startToolRunner(); // as the host does at boot, before its heap grows
const quota = { maxBytes: 256 * MiB, maxEntries: 10_000 };
const root = await mkdtemp(path.join(os.tmpdir(), "modhost-volume-bench-"));
await chmod(root, 0o755); // the writing uid must reach its directories
const load = () => os.loadavg().map((l) => l.toFixed(2)).join(" ");
console.log(`data-volume bench: ${rounds} rounds, load ${load()}`);

const created: number[] = [];
const volume: number[] = [];
const scan: number[] = [];
for (let i = 0; i < rounds; i++) {
  let t0 = performance.now();
  const fresh = await mountVolume(root, `new${i}`, quota);
  await fresh.release();
  created.push(performance.now() - t0);
  t0 = performance.now();
  const v = await mountVolume(root, "vol", quota);
  await v.release();
  volume.push(performance.now() - t0);
  t0 = performance.now();
  await mkdir(path.join(root, "plain"), { recursive: true, mode: 0o700 });
  await measureDataDir(path.join(root, "plain"), quota, "plain");
  scan.push(performance.now() - t0);
  await rm(path.join(root, ".volumes", `new${i}.ext4`), { force: true });
}
const ms = (xs: number[]) => `${median(xs).toFixed(1)} ms (min ${Math.min(...xs).toFixed(1)}, max ${Math.max(...xs).toFixed(1)})`;
console.log(`start+stop, existing volume: ${ms(volume)}`);
console.log(`start+stop, scan mode (mkdir, measure the empty directory): ${ms(scan)}`);
console.log(`first start+stop, creating the volume: ${ms(created)}`);

// 3. The host's event loop during start/stop: 20 cycles of a module's data directory (mount,
//    hand-over, unmount) in a process whose heap has grown like a host's (~300 MB of live
//    objects), the tools run by the tool runner (runtime/sandbox/tool-runner.ts) against the
//    same tools forked from this process with execFile (as before the runner), cycle by cycle
//    interleaved; the loop's lateness (a 1 ms interval) over each mode's cycles, and the tools each cycle ran.
{
  const cycles = 20;
  // Memory like a host's that has run a while: 256 MiB touched (a fork copies the page tables
  // of all of it) and ~60 MiB of live objects (kept small so major GCs do not dominate the delay).
  const rss = Buffer.alloc(256 * MiB, 1);
  const heap: unknown[] = [];
  for (let i = 0; i < 500_000; i++) heap.push({ i, s: `entry ${i}`, a: [i] });
  // The loop's lateness, charged to the mode running then.
  const lateness = loopLateness(["runner", "inline"] as const);
  const delays = lateness.delays;
  const times: Record<"runner" | "inline", number[]> = { runner: [], inline: [] };
  // One unmeasured cycle each first: the images created (mkfs), the runner and the code warm.
  for (const mode of ["runner", "inline"] as const) {
    runToolsInline(mode === "inline");
    await (await mountVolume(root, `loop-${mode}`, quota)).release();
  }
  const before = toolRuns();
  for (let i = 0; i < cycles; i++) {
    for (const mode of i % 2 === 0 ? (["runner", "inline"] as const) : (["inline", "runner"] as const)) {
      runToolsInline(mode === "inline");
      lateness.charge(mode);
      const t0 = performance.now();
      const v = await mountVolume(root, `loop-${mode}`, quota);
      await prepareDataDir(v.dir, 61_235, 61_235, "/bin/chown");
      await v.release();
      times[mode].push(performance.now() - t0);
      lateness.charge(undefined);
    }
  }
  runToolsInline(false);
  lateness.stop();
  const after = toolRuns();
  const ran = Object.entries(after).map(([k, n]) => [k, (n - (before[k] ?? 0)) / (2 * cycles)] as const).filter(([, n]) => n > 0);
  console.log(`host loop over ${cycles} start/stop cycles each (heap ${(process.memoryUsage().heapUsed / MiB).toFixed(0)} MiB, rss ${(process.memoryUsage().rss / MiB).toFixed(0)} MiB), load ${load()}:`);
  for (const mode of ["runner", "inline"] as const) {
    const d = delays[mode].sort((a, b) => a - b);
    const sum = d.reduce((a, b) => a + b, 0);
    console.log(`  tools ${mode === "runner" ? "in the tool runner" : "forked from the host (before)"}: loop delay max ${d.at(-1)!.toFixed(1)} ms, p99 ${d[Math.floor(d.length * 0.99)]!.toFixed(1)} ms, total ${sum.toFixed(0)} ms over ${d.length} samples; start+stop ${ms(times[mode])}`);
  }
  console.log(`  tools run per start+stop of an existing volume: ${ran.map(([k, n]) => `${k} ${n}`).join(", ")}`);
  heap.length = 0;
  rss.fill(0, 0, 1); // kept alive until here
}

const UID = 61_234;
const dd = (dir: string, sync: boolean): number => {
  const t0 = performance.now();
  execFileSync("setpriv", ["--reuid", String(UID), "--regid", String(UID), "--clear-groups", "dd", "if=/dev/zero", `of=${dir}/f`, "bs=1M", "count=64", ...(sync ? ["conv=fdatasync"] : [])], { stdio: "ignore" });
  const s = (performance.now() - t0) / 1000;
  execFileSync("rm", ["-f", `${dir}/f`]);
  return 64 / s;
};
const v = await mountVolume(root, "tput", quota);
const rates: Record<string, number[]> = { "volume, page cache": [], "plain, page cache": [], "volume, fdatasync": [], "plain, fdatasync": [] };
try {
  await chown(v.dir, UID, UID);
  const plain = path.join(root, "plain");
  await chown(plain, UID, UID);
  for (let i = 0; i < rounds; i++) {
    rates["volume, page cache"]!.push(dd(v.dir, false));
    rates["plain, page cache"]!.push(dd(plain, false));
    rates["volume, fdatasync"]!.push(dd(v.dir, true));
    rates["plain, fdatasync"]!.push(dd(plain, true));
  }
} finally {
  await v.release(); // never left mounted, whatever failed
}
for (const [what, xs] of Object.entries(rates)) console.log(`write 64 MiB, ${what}: ${median(xs).toFixed(0)} MB/s (min ${Math.min(...xs).toFixed(0)}, max ${Math.max(...xs).toFixed(0)})`);
console.log(`load now ${load()}`);
await rm(root, { recursive: true, force: true });
