// Fault scenarios of round 16: kill -9 at every step of a native module's data-volume mount
// (runtime/sandbox/volume.ts: the first start that makes the image and moves an existing data
// directory into it, a raised max_data_bytes that grows it offline, a raised max_data_files that
// rebuilds it, a lowered max_data_bytes that shrinks it), and the same under the real host.
// A child process mounts the volume as a host's start does and is killed with SIGKILL just
// before step N (test/helpers/volume-crash-hook.mjs counts each system tool and each change to
// the file system; no cleanup runs: a real crash), for every N; then what the next host start
// does (cleanStaleVolumes, then mountVolume) must mount it with every file as it was, and leave
// no mount, loop device, half-made image (.new), set-aside directory (.old) or private
// mountpoint (.mnt) behind. Needs root, loop devices and e2fsprogs, like test/data-volume.test.ts.

import test from "ava";
import type { ExecutionContext } from "ava";
import { spawn } from "node:child_process";
import { mkdir, readdir, readFile, realpath, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { cleanStaleVolumes, loopDevicesOf, mountVolume, VOLUMES_DIR, volumeTools, type VolumeQuota } from "../runtime/sandbox/volume.ts";
import { ROOT, tempDir, waitFor } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { alive, descendants } from "./helpers/procs.ts";

const HOOK = path.join(ROOT, "test/helpers/volume-crash-hook.mjs");
const CHILD = path.join(ROOT, "test/helpers/volume-crash-child.ts");
const MODHOST = path.join(ROOT, "bin", "modhost.js");
const HOG = fileURLToPath(new URL("./fixtures/disk-hog/main.ts", import.meta.url));
const MiB = 1024 * 1024;
const LONG = 120_000;
/** Kills (child processes) and recoveries run at once in a sweep. */
const SWEEP_CONCURRENCY = 2;

const unavailable = await volumeTools();
const why = typeof unavailable === "string" ? unavailable : undefined;
/** Where volumes cannot be made, skip with the reason (CI, as root with loop devices, counts a skip as a failure). */
const vtest = (title: string, fn: (t: ExecutionContext) => Promise<void>) => {
  if (why) test.skip(`${title} (skipped: ${why})`, fn);
  else test.serial(title, fn);
};

/** Every file under `dir` (relative path -> contents; directories as "dir"), sorted. */
async function contents(dir: string, prefix = ""): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of (await readdir(path.join(dir, prefix), { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
    const rel = path.join(prefix, e.name);
    if (e.isDirectory()) Object.assign(out, { [rel]: "dir" }, await contents(dir, rel));
    else out[rel] = await readFile(path.join(dir, rel), "utf8");
  }
  return out;
}

/** What the mounts of a killed host may leave under `root`: mounts, loop devices of its images, files beside NAME.ext4. */
async function leftovers(root: string, name: string): Promise<string[]> {
  const real = await realpath(root);
  const left: string[] = [];
  for (const l of (await readFile("/proc/self/mountinfo", "utf8")).split("\n")) {
    const point = l.split(" ")[4] ?? "";
    if (point.startsWith(real + "/")) left.push(`mount on ${point}`);
  }
  for (const dev of await loopDevicesOf()) {
    const backing = (await readFile(`/sys/block/${path.basename(dev)}/loop/backing_file`, "utf8").catch(() => "")).trim();
    if (backing.startsWith(real + "/")) left.push(`loop device ${dev} on ${backing}`);
  }
  for (const f of await readdir(path.join(real, VOLUMES_DIR)).catch(() => [] as string[])) if (f !== `${name}.ext4`) left.push(`${VOLUMES_DIR}/${f}`);
  return left;
}

/** Mount in a child killed just before step `step` (0: never); resolves with the steps it took and how it ended. */
function mountChild(root: string, name: string, q: VolumeQuota, step: number): Promise<{ steps: string[]; end: string; output: string }> {
  const child = spawn(process.execPath, ["--import", HOOK, "--no-node-snapshot", CHILD, root, name, String(q.maxBytes), String(q.maxEntries)], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, VOLUME_CRASH_STEP: String(step), VOLUME_CRASH_TRACE: "1" },
  });
  let output = "";
  child.stdout.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr.on("data", (d: Buffer) => (output += d.toString()));
  return new Promise((resolve) => {
    child.on("close", (code, signal) => {
      const steps = [...output.matchAll(/^volume step \d+: (.*)$/gm)].map((m) => m[1]!);
      resolve({ steps, end: signal ?? `exit ${code}`, output });
    });
  });
}

/** The seeded data of a module: two files and a directory with one. */
async function seed(dir: string): Promise<void> {
  await mkdir(path.join(dir, "sub"), { recursive: true });
  await writeFile(path.join(dir, "acked"), "written before the crash");
  await writeFile(path.join(dir, "sub", "nested"), "in a directory of its own");
}

interface Scenario {
  /** The module's volume before the mount that is killed (undefined: none yet, its directory holds the seeded files). */
  before?: VolumeQuota;
  /** The quota of the mount that is killed. */
  after: VolumeQuota;
  /** A step the mount must take (so that the scenario is what it says). */
  takes: RegExp;
}

/** A root holding the scenario's starting point: a directory of files, or a volume made at `before` with them inside. */
async function prepare(t: ExecutionContext, s: Scenario, name: string): Promise<string> {
  const root = await tempDir(t, "modhost-volcrash-");
  if (!s.before) {
    await seed(path.join(root, name));
    return root;
  }
  const v = await mountVolume(root, name, s.before);
  await seed(v.dir);
  await v.release();
  return root;
}

/** Kill the mount of `s` before each of its steps; after each, the next start's recovery must find everything. */
async function sweep(t: ExecutionContext, s: Scenario): Promise<void> {
  const name = "vol";
  const full = await mountChild(await prepare(t, s, name), name, s.after, 0);
  t.is(full.end, "exit 0", full.output);
  t.true(full.steps.some((x) => s.takes.test(x)), `the mount takes ${s.takes}: ${full.steps.join("; ")}`);
  const expected = await (async () => {
    const d = await tempDir(t);
    await seed(d);
    return contents(d);
  })();
  // The kills at different steps are independent (each its own root): a few at a time.
  // With a volume there already, the steps before its first mount (making the directories that
  // exist, removing a .new that does not) are those the first scenario kills at: skipped here.
  const first = s.before ? full.steps.findIndex((x) => /^mount /.test(x)) : 0;
  const steps = full.steps.map((_, i) => i + 1).slice(first);
  const one = async (k: number) => {
    const root = await prepare(t, s, name);
    const killed = await mountChild(root, name, s.after, k);
    t.is(killed.end, "SIGKILL", `killed before step ${k} (${full.steps[k - 1]})`);
    // What the next host start does, before the module starts.
    await cleanStaleVolumes(root);
    const v = await mountVolume(root, name, s.after);
    t.deepEqual(await contents(v.dir), expected, `after a kill before step ${k} (${full.steps[k - 1]}): every file, and nothing else`);
    await v.release();
    t.deepEqual(await leftovers(root, name), [], `after a kill before step ${k} (${full.steps[k - 1]}) and the next start: nothing left behind`);
    await rm(root, { recursive: true, force: true });
  };
  await Promise.all(Array.from({ length: SWEEP_CONCURRENCY }, async () => {
    for (let k = steps.shift(); k !== undefined; k = steps.shift()) await one(k);
  }));
}

vtest("kill -9 before each step of a first mount that moves an existing data directory into a new volume: the next start has every file, no mount, loop device, .new, .old or .mnt left", async (t) => {
  t.timeout(10 * LONG);
  await sweep(t, { after: { maxBytes: 4 * MiB, maxEntries: 100 }, takes: /^cp / });
});

vtest("kill -9 before each step of a mount that grows the volume offline for a raised max_data_bytes: the next start has every file (and no lost+found of e2fsck's), nothing left behind", async (t) => {
  t.timeout(10 * LONG);
  await sweep(t, { before: { maxBytes: 4 * MiB, maxEntries: 100 }, after: { maxBytes: 64 * MiB, maxEntries: 100 }, takes: /^resize2fs / });
});

vtest("kill -9 before each step of a mount that shrinks the volume for a lowered max_data_bytes: the next start has every file (and no lost+found of e2fsck's), nothing left behind", async (t) => {
  t.timeout(10 * LONG);
  await sweep(t, { before: { maxBytes: 64 * MiB, maxEntries: 100 }, after: { maxBytes: 4 * MiB, maxEntries: 100 }, takes: /^resize2fs / });
});

vtest("kill -9 before each step of a mount that rebuilds the volume for a raised max_data_files: the next start has every file, nothing left behind", async (t) => {
  t.timeout(10 * LONG);
  await sweep(t, { before: { maxBytes: 4 * MiB, maxEntries: 100 }, after: { maxBytes: 4 * MiB, maxEntries: 3000 }, takes: /^mkfs\.ext4 / });
});

/** `modhost run` from the sources (MODHOST_TSX=1, so that the hook sees runtime/sandbox/volume.ts) under the crash hook, its output gathered. */
function runHost(t: ExecutionContext, dir: string, config: string, crashAt?: string) {
  const env: Record<string, string> = { ...(process.env as Record<string, string>), NO_COLOR: "1", MODHOST_TSX: "1", VOLUME_CRASH_TRACE: "1" };
  if (crashAt) env.VOLUME_CRASH_AT = crashAt;
  const child = spawn(process.execPath, ["--import", HOOK, MODHOST, "run", "--config", config], { cwd: dir, stdio: ["ignore", "pipe", "pipe"], env });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<string>((resolve) => child.once("exit", (code, signal) => resolve(signal ?? `exit ${code}`)));
  t.teardown(() => void child.kill("SIGKILL"));
  return { child, output: () => out, exited };
}

vtest("under the real host: killed with -9 at the commit of a first mount (its directory set aside), then the next host at the reserve of the redone one; the third host runs the module with its data, nothing leaked", async (t) => {
  t.timeout(6 * LONG);
  const dir = await tempDir(t, "modhost-volhost-");
  const name = `mover${process.pid}`;
  await writeNodeNative(path.join(dir, "modules"), name, HOG);
  const config = path.join(dir, "modhost.toml");
  await writeFile(config, [
    "[chain]", "block_interval_seconds = 0", "",
    "[modules]", 'modules_dir = "modules"', 'data_dir = "data/modules"', "",
    "[modules.default_limits]", "stop_timeout_ms = 1000", "",
    `[modules.limits.${name}]`, `max_data_bytes = ${4 * MiB}`, "",
    `[modules.module_configs.${name}]`, "files = 2", "bytes = 1000", "",
    "[storage]", 'dir = "data/storage"', "",
    "[rpc]", "enabled = false", "",
    "[trust]", 'signatures = "allow-unsigned"', "",
  ].join("\n"));
  const root = path.join(dir, "data", "modules");
  const dataDir = path.join(root, name);
  await seed(dataDir); // what the module had acknowledged before it got a volume
  const expected = await contents(dataDir);

  const kills: Array<[string, RegExp]> = [
    [`^rename .*${name}\\.ext4\\.new$`, /^volume step \d+: rename .*\.ext4\.new$/m],
    ["^tune2fs ", /^volume step \d+: tune2fs /m],
  ];
  for (const [at, step] of kills) {
    const host = runHost(t, dir, config, at);
    // Its tool runner and spawner (started at boot, before any mount), seen while it runs.
    const seen = new Set<number>();
    let watching = true;
    const watch = (async () => {
      while (watching) {
        for (const pid of await descendants(host.child.pid!)) seen.add(pid);
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    t.is(await host.exited, "SIGKILL", host.output());
    watching = false;
    await watch;
    t.regex(host.output(), step, "killed at that step");
    t.true(seen.size >= 2, `its helper processes were seen (${[...seen].join(", ")})`);
    // They go with it (their IPC channels close), and so do the tools they ran.
    await waitFor(() => [...seen].every((pid) => !alive(pid)), 30_000, `the killed host's processes (${[...seen].join(", ")}) to be gone`);
  }
  // The set-aside directory was put back and moved in again: nothing of it is lost.
  const third = runHost(t, dir, config);
  await waitFor(() => third.output().includes("disk-hog wrote"), LONG, "the module to run under the third host", third.output);
  t.regex(third.output(), /unmounted data volumes an earlier host left mounted/);
  t.regex(third.output(), new RegExp(`loaded ${name} .*data=volume`));
  const files = await contents(dataDir);
  t.deepEqual(files, { ...expected, "hog-0": "a".repeat(1000), "hog-1": "a".repeat(1000) }, "the acknowledged data and what the module wrote now, nothing else");
  const own = `mount on ${await realpath(dataDir)}`;
  t.deepEqual((await leftovers(root, name)).filter((l) => l !== own && !l.startsWith("loop device")), [], "no .new, .old or .mnt, no other mount");
  t.is((await loopDevicesOf(path.join(await realpath(root), VOLUMES_DIR, `${name}.ext4`))).length, 1, "one loop device: its own");
  third.child.kill("SIGTERM");
  t.is(await third.exited, "exit 0", third.output());
  await waitFor(async () => (await leftovers(root, name)).length === 0, 30_000, "nothing left after a clean stop");
  t.deepEqual(await leftovers(root, name), []);
});
