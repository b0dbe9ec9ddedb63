// What a data volume costs (runtime/sandbox/volume.ts), against the scan mode it replaces, in
// the same run. Not part of `npm run bench` (it needs root and loop devices): run it alone,
//   node_modules/.bin/node --import=tsx --no-node-snapshot bench/data-volume.ts [rounds]
// 1. The data directory's part of a module start and stop, interleaved: mountVolume + release
//    of an existing 256 MiB image (mount, reserve check, unmount, loop device freed) against
//    scan mode's (mkdir, measureDataDir of the empty directory); and the first start's creation
//    (truncate, mkfs.ext4, mount, lost+found removed, unmount, mount, reserve).
// 2. Write throughput a module gets, as an unprivileged uid (setpriv): dd of 64 MiB in 1 MiB
//    writes into a volume and into a plain directory on the host's file system, interleaved,
//    page cache (no sync) and to disk (conv=fdatasync).

import { execFileSync } from "node:child_process";
import { chmod, chown, mkdir, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { measureDataDir } from "../capabilities/fs-path.ts";
import { mountVolume, volumeTools } from "../runtime/sandbox/volume.ts";
import { median } from "./stats.ts";

const rounds = Number(process.argv[2] ?? 11);
if (typeof (await volumeTools()) === "string") {
  console.log(`no volumes here: ${String(await volumeTools())}`);
  process.exit(0);
}
const MiB = 1024 * 1024;
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
