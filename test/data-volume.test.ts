// Data volumes (runtime/sandbox/volume.ts, host/data-quota.ts) under the real host and sandbox,
// with real loop mounts: a hostile native module (test/fixtures/disk-hog) writing as fast as it
// can past max_data_bytes is held to it by the kernel (ENOSPC, nothing past the quota on disk,
// the module not killed), one creating files past max_data_files is refused by the kernel and
// stopped by the host within its inode rounding; a host killed with -9 leaves mounts that the
// next host removes before starting the module with its data intact; load/unload/reload cycles
// leave no mount and no loop device; an existing directory with files is moved into a volume,
// and a migration a crash interrupted is finished; a raised quota grows the volume, a raised
// max_data_files rebuilds it with more inodes.
// Needs root, loop devices and e2fsprogs: CI here has them (and counts a skip as a failure);
// elsewhere each test says why it skips.

import test from "ava";
import type { ExecutionContext } from "ava";
import { execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { lstat, mkdir, readdir, readFile, realpath, statfs, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loopDevicesOf, mountVolume, VOLUMES_DIR, volumeTools } from "../runtime/sandbox/volume.ts";
import { ROOT, startHost, tempDir, waitFor, GOOD_GRANTS, type TestHost } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { call, get } from "./helpers/rpc.ts";

const MAIN = fileURLToPath(new URL("./fixtures/disk-hog/main.ts", import.meta.url));
const MODHOST = path.join(ROOT, "bin", "modhost.js");
const MiB = 1024 * 1024;
const LONG = 120_000;

const unavailable = await volumeTools();
const why = typeof unavailable === "string" ? unavailable : undefined;
/** Where volumes cannot be made, skip with the reason (CI, as root with loop devices, counts a skip as a failure). */
const vtest = (title: string, fn: (t: ExecutionContext) => Promise<void>) => {
  if (why) test.skip(`${title} (skipped: ${why})`, fn);
  else test.serial(title, fn);
};

/** The mounts on `dir` (this process's mount namespace). */
async function mountsOn(dir: string): Promise<number> {
  const text = await readFile("/proc/self/mountinfo", "utf8");
  return text.split("\n").filter((l) => l.split(" ")[4] === path.resolve(dir)).length;
}

/** What the directory holds on disk (du: allocated blocks of every file and directory, itself included). */
async function diskBytes(dir: string): Promise<number> {
  let sum = (await lstat(dir)).blocks * 512;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    sum += e.isDirectory() ? await diskBytes(p) : (await lstat(p)).blocks * 512;
  }
  return sum;
}

async function hostWithHog(t: ExecutionContext, name: string, attack: Record<string, number>, limits: Record<string, unknown>, seed?: (dataDir: string, root: string) => Promise<void>, grants: string[] = []): Promise<TestHost> {
  const dir = await tempDir(t);
  await writeNodeNative(path.join(dir, "modules"), name, MAIN, grants);
  const root = path.join(dir, "data", "modules");
  await mkdir(path.join(root, name), { recursive: true, mode: 0o700 });
  await seed?.(path.join(root, name), root);
  return startHost(t, { dir, modules: ["good"], grants: { good: GOOD_GRANTS, [name]: grants }, moduleLimits: { [name]: limits }, moduleConfigs: { [name]: attack } });
}

async function canaryCarriesOn(t: ExecutionContext, h: TestHost): Promise<void> {
  const mark = h.mark();
  const height = await h.mine(1);
  await h.waitForLog(new RegExp(`stored block ${height}`), { source: "good", since: mark, timeoutMs: 30_000 });
  t.is(h.mustStatus("good").state, "running", "the canary runs");
}

vtest("a native module writing 64 KiB files as fast as it can past max_data_bytes = 4 MiB is refused by the kernel (ENOSPC) at the quota: at most 4 MiB on disk, not killed; the canary carries on", async (t) => {
  const h = await hostWithHog(t, "gusher", { files: 10_000, bytes: 64 * 1024 }, { max_data_bytes: 4 * MiB, restart: "never" });
  const wrote = await h.waitForLog(/^disk-hog wrote$/, { source: "gusher", timeoutMs: 60_000 });
  const f = wrote.fields as { files: number; bytes: number; error?: string };
  t.is(f.error, "ENOSPC", "the kernel told it");
  t.true(f.bytes >= 4 * MiB - 4 * 64 * 1024, `it could store about its quota (${f.bytes} bytes in whole files)`);
  const dataDir = path.join(h.config.modules.data_dir, "gusher");
  const onDisk = await diskBytes(dataDir);
  t.log(`${f.files} whole files written, ${onDisk} bytes on disk (quota ${4 * MiB})`);
  t.true(onDisk <= 4 * MiB, `${onDisk} bytes on disk, quota ${4 * MiB}: no overshoot`);
  const s = await statfs(dataDir);
  t.true((s.blocks - s.bfree) * s.bsize <= 4 * MiB, "the file system's own count agrees");
  t.is(await mountsOn(dataDir), 1, "its directory is its volume");
  t.is(h.mustStatus("gusher").state, "running", "not killed: the failed write was its to handle");
  t.regex(h.lines.join("\n"), /loaded gusher .*data=volume/);
  await canaryCarriesOn(t, h);
});

vtest("a native module creating files past max_data_files = 1000 is refused by the kernel (ENOSPC) within its inode rounding and stopped by the host, naming max_data_files", async (t) => {
  const h = await hostWithHog(t, "spawner", { files: 3000, bytes: 10 }, { max_data_files: 1000, restart: "never" });
  const wrote = await h.waitForLog(/^disk-hog wrote$/, { source: "spawner", timeoutMs: 60_000 });
  const f = wrote.fields as { files: number; error?: string };
  t.is(f.error, "ENOSPC", "the kernel refused the next file");
  t.true(f.files >= 1000 && f.files <= 1000 + 64, `${f.files} files: the kernel's inode count is max_data_files rounded up (at most 64 more here)`);
  const crashed = await h.waitFor(() => h.events.find((e) => e.type === "ModuleCrashed" && (e.payload as { module: string }).module === "spawner"), 30_000, "its stop");
  t.regex((crashed.payload as { error: string }).error, /holds \d+ entries, over max_data_files = 1000; .*raise max_data_files in \[modules\.limits\.spawner\]/);
  await canaryCarriesOn(t, h);
});

vtest("a native module's data volume usage is shown against its quota by list (RPC and its JSON), modhost list's DATA and FILES columns and /metrics, as the file system counts it", async (t) => {
  const h = await hostWithHog(t, "filler", { files: 40, bytes: 50_000 }, { max_data_bytes: 4 * MiB, max_data_files: 1000, restart: "never" });
  const wrote = await h.waitForLog(/^disk-hog wrote$/, { source: "filler", timeoutMs: 60_000 });
  t.is((wrote.fields as { files: number }).files, 40, "it wrote its 40 files");
  const dataDir = path.join(h.config.modules.data_dir, "filler");
  // The host reads the volume's counts each second: wait until its figure is the file system's own.
  const usedNow = async () => { const s = await statfs(dataDir); return (s.blocks - s.bfree) * s.bsize; };
  let used = await usedNow();
  type Data = { mode: string; bytes: number; files: number; max_bytes: number; max_files: number };
  const listed = async () => ((await call(h, "list")) as Array<{ name: string; data?: Data }>).find((m) => m.name === "filler")?.data;
  const data = await waitFor(async () => { const d = await listed(); used = await usedNow(); return d && d.bytes === used ? d : undefined; }, 30_000, () => `list to show ${used} bytes used`);
  t.log(`list: ${JSON.stringify(data)}; statfs: ${used} bytes used`);
  t.is(data.mode, "volume");
  t.true(data.bytes >= 40 * 50_000 && data.bytes <= 4 * MiB, `${data.bytes} bytes: its 40 files of 50,000 bytes, within the quota`);
  t.true(data.files >= 40 && data.files <= 48, `${data.files} files: its 40 (and the file system's own directories at most)`);
  t.is(data.max_bytes, 4 * MiB);
  t.is(data.max_files, 1000);
  // The same figures on /metrics (read until they are the file system's: the host reads them each second).
  const page = await waitFor(async () => { const text = (await get(h, "/metrics")).text; return text.includes(`modhost_module_data_bytes{module="filler"} ${await usedNow()}\n`) ? text : undefined; }, 30_000, "/metrics to show the bytes used");
  t.true(page.includes(`modhost_module_data_bytes{module="filler"} ${data.bytes}\n`), "/metrics: modhost_module_data_bytes");
  t.true(page.includes(`modhost_module_data_files{module="filler"} ${data.files}\n`), "/metrics: modhost_module_data_files");
  t.true(page.includes(`modhost_module_data_max_bytes{module="filler"} ${4 * MiB}\n`), "/metrics: modhost_module_data_max_bytes");
  t.true(page.includes(`modhost_module_data_max_files{module="filler"} 1000\n`), "/metrics: modhost_module_data_max_files");
  const port = h.host.rpcServer!.address!.port;
  const text = await run(process.execPath, [MODHOST, "list", "--rpcport", String(port), "--rpccookiefile", h.config.rpc.cookie_file]);
  t.log(text);
  t.regex(text, /^MODULE .* RESTARTS\s+DATA\s+FILES$/m, "the columns");
  t.regex(text, new RegExp(`^filler .* \\d+\\.\\d MiB/4\\.0 MiB\\s+${data.files}/1000$`, "m"), "its row: bytes and files against the quota");
});

/** Loop devices holding an image under `dir` (the kernel names backing files by their real path). */
async function loopDevicesUnder(dir: string): Promise<number> {
  const root = (await realpath(dir)) + "/";
  let n = 0;
  for (const dev of await loopDevicesOf()) {
    const backing = (await readFile(`/sys/block/${path.basename(dev)}/loop/backing_file`, "utf8").catch(() => "")).trim();
    if (backing.startsWith(root)) n++;
  }
  return n;
}

vtest("load, unload, reload and restart cycles leave no mount and no loop device behind", async (t) => {
  const h = await hostWithHog(t, "cycler", { files: 2, bytes: 1000 }, { max_data_bytes: 4 * MiB });
  const dataDir = path.join(h.config.modules.data_dir, "cycler");
  const image = path.join(h.config.modules.data_dir, VOLUMES_DIR, "cycler.ext4");
  t.is(await mountsOn(dataDir), 1);
  for (let i = 0; i < 3; i++) {
    await h.manager.unload("cycler");
    await waitFor(async () => (await loopDevicesOf(image)).length === 0 && (await mountsOn(dataDir)) === 0, 30_000, "its volume to go after unload");
    t.true(existsSync(image), "the image stays (its data)");
    await h.manager.load("cycler");
    t.is(await mountsOn(dataDir), 1, "mounted once after load");
    await h.manager.reload("cycler");
    t.is(await mountsOn(dataDir), 1, "mounted once after reload");
    t.is((await loopDevicesOf(image)).length, 1, "one loop device");
  }
  // A crash and its restart (the restart policy).
  const pid = h.mustStatus("cycler").pid!;
  process.kill(pid, "SIGKILL");
  await h.waitFor(() => h.events.find((e) => e.type === "ModuleRestarted" && (e.payload as { module: string }).module === "cycler"), 60_000, "its restart");
  t.is(await mountsOn(dataDir), 1, "mounted once after the restart");
  t.deepEqual((await readdir(dataDir)).sort(), ["hog-0", "hog-1"], "its files, and nothing of the file system's own (lost+found)");
  await h.stop();
  await waitFor(async () => (await loopDevicesOf(image)).length === 0, 30_000, "its loop device to go at host stop");
  t.is(await mountsOn(dataDir), 0, "no mount after the host stopped");
  // Counted under this host's data directory only: test files running alongside make volumes of their own.
  t.is(await loopDevicesUnder(h.config.modules.data_dir), 0, "no loop device left holding an image of this host's");
});

vtest("an existing data directory with files is moved into a new volume at its first start; a migration interrupted after the old directory was set aside is finished, nothing lost", async (t) => {
  const h = await hostWithHog(t, "settler", { files: 0, bytes: 0 }, { max_data_bytes: 4 * MiB }, async (dataDir) => {
    await mkdir(path.join(dataDir, "sub"));
    await writeFile(path.join(dataDir, "sub", "kept.txt"), "old data");
    await writeFile(path.join(dataDir, "top.bin"), Buffer.alloc(100_000, 7));
  });
  const dataDir = path.join(h.config.modules.data_dir, "settler");
  t.is(await mountsOn(dataDir), 1, "its directory is now a volume");
  t.is(await readFile(path.join(dataDir, "sub", "kept.txt"), "utf8"), "old data");
  t.is((await readFile(path.join(dataDir, "top.bin"))).length, 100_000);
  t.regex(h.lines.join("\n"), /settler: data volume .*existing data directory was moved into a new volume/);
  t.false(existsSync(path.join(h.config.modules.data_dir, VOLUMES_DIR, "settler.old")), "the old copy is gone once committed");

  // A crash after the directory was set aside and before the commit: NAME.old holds the files,
  // the directory is empty, a half-made NAME.ext4.new lies there.
  const h2 = await hostWithHog(t, "mover", { files: 0, bytes: 0 }, { max_data_bytes: 4 * MiB }, async (_dataDir, root) => {
    const old = path.join(root, VOLUMES_DIR, "mover.old");
    await mkdir(old, { recursive: true });
    await writeFile(path.join(old, "precious"), "do not lose me");
    await writeFile(path.join(root, VOLUMES_DIR, "mover.ext4.new"), "half an image");
  });
  const moverDir = path.join(h2.config.modules.data_dir, "mover");
  t.is(h2.mustStatus("mover").state, "running");
  t.is(await mountsOn(moverDir), 1);
  t.is(await readFile(path.join(moverDir, "precious"), "utf8"), "do not lose me");
});

vtest("a raised max_data_bytes grows the volume at the next start, and the module can use it", async (t) => {
  const h = await hostWithHog(t, "grower", { files: 0, bytes: 0 }, { max_data_bytes: 4 * MiB });
  const dataDir = path.join(h.config.modules.data_dir, "grower");
  const before = await statfs(dataDir);
  t.true(before.bavail * before.bsize <= 4 * MiB);
  await h.manager.unload("grower");
  const c = h.config;
  await h.manager.reconfigure({ ...c, modules: { ...c.modules, limits: { ...c.modules.limits, grower: { ...c.modules.limits.grower, max_data_bytes: 64 * MiB } } } });
  await h.manager.load("grower");
  const after = await statfs(dataDir);
  const room = (after.blocks - after.bfree + after.bavail) * after.bsize;
  t.log(`room for the module: ${room} bytes (max_data_bytes = ${64 * MiB})`);
  t.true(room <= 64 * MiB && room >= 64 * MiB - 4096, "exactly its quota, to the block");
  t.regex(h.lines.join("\n"), /grower: data volume .*grown to \d+ bytes for max_data_bytes = 67108864/);
});

vtest("a raised max_data_files rebuilds the volume with that many inodes at the next start, its files kept, and the module can create past the old count", async (t) => {
  const h = await hostWithHog(t, "inoder", { files: 60, bytes: 100 }, { max_data_files: 100 }, (dir) => writeFile(path.join(dir, "precious"), "do not lose me"));
  const dataDir = path.join(h.config.modules.data_dir, "inoder");
  await waitFor(() => h.lines.some((l) => l.includes("disk-hog wrote")), LONG, "the module to write its files", () => h.lines.join("\n"));
  const before = await statfs(dataDir);
  t.true(before.files < 400, `few inodes at first (${before.files})`);
  await h.manager.unload("inoder");
  const c = h.config;
  await h.manager.reconfigure({
    ...c,
    modules: {
      ...c.modules,
      limits: { ...c.modules.limits, inoder: { ...c.modules.limits.inoder, max_data_files: 3000 } },
      module_configs: { ...c.modules.module_configs, inoder: { files: 1000, bytes: 10 } },
    },
  });
  const wroteBefore = h.lines.filter((l) => l.includes("disk-hog wrote")).length;
  await h.manager.load("inoder");
  t.regex(h.lines.join("\n"), /inoder: data volume .*rebuilt with 3000 entries for max_data_files = 3000/);
  await waitFor(() => h.lines.filter((l) => l.includes("disk-hog wrote")).length > wroteBefore, LONG, "the module to write again", () => h.lines.join("\n"));
  const after = await statfs(dataDir);
  t.true(after.files >= 3000 + 10, `inodes for the new count (${after.files})`);
  const last = h.lines.filter((l) => l.includes("disk-hog wrote")).at(-1) ?? "";
  // No error at all: 1000 files fit (no ENOSPC), and the 60 it had were still its own to
  // overwrite (the copy kept their owner; root's files would fail with EACCES).
  t.notRegex(last, /error/, last);
  t.is((await readdir(dataDir)).filter((n) => n.startsWith("hog-")).length, 1000);
  t.is(await readFile(path.join(dataDir, "precious"), "utf8"), "do not lose me");
  t.false(existsSync(path.join(h.config.modules.data_dir, VOLUMES_DIR, "inoder.ext4.new")), "no new image left beside it");
});

vtest("a module that fills its volume directly and then writes through the file API (written as root, past the kernel's reserve) is refused with quota_exceeded, counted from a fresh measurement: nothing past the quota on disk", async (t) => {
  const h = await hostWithHog(t, "apiwriter", { files: 64, bytes: 64 * 1024, apiBytes: MiB }, { max_data_bytes: 4 * MiB }, undefined, ["write_filesystem"]);
  const dataDir = path.join(h.config.modules.data_dir, "apiwriter");
  await waitFor(() => h.lines.some((l) => l.includes("disk-hog api")), LONG, "the module's file API write", () => h.lines.join("\n"));
  const api = h.lines.find((l) => l.includes("disk-hog api")) ?? "";
  t.log(api);
  t.regex(api, /quota_exceeded: creating \\?"api-file\\?" with 1048576 bytes would make \d+ bytes .*over max_data_bytes = 4194304 \(it holds \d+\)/);
  t.false(existsSync(path.join(dataDir, "api-file")) && (await lstat(path.join(dataDir, "api-file"))).size > 0, "nothing of it written");
  const du = await diskBytes(dataDir);
  t.true(du <= 4 * MiB, `at most the quota on disk (${du} bytes)`);
});

/** `modhost run` as a process, its output gathered. */
function runHost(t: ExecutionContext, dir: string, config: string) {
  const child = spawn(process.execPath, [MODHOST, "run", "--config", config], { cwd: dir, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1" } });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  t.teardown(() => void child.kill("SIGKILL"));
  return { child, output: () => out, exited };
}

vtest("a host killed with -9 leaves its module's volume mounted: the next host unmounts it (and frees its loop device) before the module starts, with its data intact", async (t) => {
  t.timeout(4 * LONG);
  const dir = await tempDir(t, "modhost-volume-");
  const name = `keeper${process.pid}`;
  await writeNodeNative(path.join(dir, "modules"), name, MAIN);
  const config = path.join(dir, "modhost.toml");
  const write = (files: number) => writeFile(config, [
    "[chain]", "block_interval_seconds = 0", "",
    "[modules]", 'modules_dir = "modules"', 'data_dir = "data/modules"', "",
    "[modules.default_limits]", "stop_timeout_ms = 1000", "",
    `[modules.limits.${name}]`, `max_data_bytes = ${4 * MiB}`, "",
    `[modules.module_configs.${name}]`, `files = ${files}`, "bytes = 1000", "",
    "[storage]", 'dir = "data/storage"', "",
    "[rpc]", "enabled = false", "",
    "[trust]", 'signatures = "allow-unsigned"', "",
  ].join("\n"));
  await write(3);
  const dataDir = path.join(dir, "data", "modules", name);
  const image = path.join(dir, "data", "modules", VOLUMES_DIR, `${name}.ext4`);
  const first = runHost(t, dir, config);
  await waitFor(() => first.output().includes("disk-hog wrote"), LONG, "the first host's module to write", first.output);
  t.is(await mountsOn(dataDir), 1);
  first.child.kill("SIGKILL");
  await first.exited;
  t.is(await mountsOn(dataDir), 1, "the killed host left its mount");
  await write(0); // the next instance writes nothing: what is there is what the first left
  const second = runHost(t, dir, config);
  await waitFor(() => /ready in \d+ ms/.test(second.output()), LONG, "the next host to be ready", second.output);
  t.regex(second.output(), new RegExp(`unmounted data volumes an earlier host left mounted: ${name}`));
  t.regex(second.output(), new RegExp(`loaded ${name} .*data=volume`));
  t.is(await mountsOn(dataDir), 1, "mounted once, not stacked");
  t.is((await loopDevicesOf(image)).length, 1, "one loop device");
  t.deepEqual((await readdir(dataDir)).sort(), ["hog-0", "hog-1", "hog-2"], "its data intact");
  t.is((await readFile(path.join(dataDir, "hog-2"))).length, 1000);
  second.child.kill("SIGTERM");
  t.is(await second.exited, 0, second.output());
  t.is(await mountsOn(dataDir), 0, "no mount after a clean stop");
  await waitFor(async () => (await loopDevicesOf(image)).length === 0, 30_000, "its loop device to be freed");
});

vtest("a lowered max_data_bytes: files over it keep the module from starting (naming max_data_bytes); once they are gone the volume is shrunk to the new quota", async (t) => {
  const h = await hostWithHog(t, "shrinker", { files: 0, bytes: 0 }, { max_data_bytes: 64 * MiB, restart: "never" });
  const dataDir = path.join(h.config.modules.data_dir, "shrinker");
  const image = path.join(h.config.modules.data_dir, VOLUMES_DIR, "shrinker.ext4");
  await writeFile(path.join(dataDir, "big.bin"), Buffer.alloc(6 * MiB, 1));
  await h.manager.unload("shrinker");
  const c = h.config;
  await h.manager.reconfigure({ ...c, modules: { ...c.modules, limits: { ...c.modules.limits, shrinker: { ...c.modules.limits.shrinker, max_data_bytes: 4 * MiB } } } });
  await h.manager.load("shrinker").catch(() => undefined);
  const failed = await h.waitForState("shrinker", "failed", 30_000);
  t.regex(failed.problem ?? "", /max_data_bytes = 4194304/);
  t.is(await mountsOn(dataDir), 0, "no mount left by the failed start");
  await waitFor(async () => (await loopDevicesOf(image)).length === 0, 30_000, "no loop device left by the failed start");
  // The operator removes the file (mounting the image as the operator guide says).
  const mnt = await tempDir(t, "modhost-mnt-");
  await run("mount", ["-o", "loop", image, mnt]);
  await writeFile(path.join(mnt, "big.bin"), "");
  await run("umount", [mnt]);
  await waitFor(async () => (await loopDevicesOf(image)).length === 0, 30_000, "the operator's loop device to go");
  await h.manager.load("shrinker");
  t.is(h.mustStatus("shrinker").state, "running");
  const s = await statfs(dataDir);
  t.true((s.blocks - s.bfree + s.bavail) * s.bsize <= 4 * MiB, "its room is the new quota");
  t.regex(h.lines.join("\n"), /shrinker: data volume .*shrunk to \d+ bytes for max_data_bytes = 4194304/);
});

vtest("an image that a loop device already holds (another host's mount, say) is not mounted a second time: the start fails naming the device, and does not fall back to scans", async (t) => {
  const h = await hostWithHog(t, "twice", { files: 0, bytes: 0 }, { max_data_bytes: 4 * MiB, restart: "never" });
  const image = path.join(h.config.modules.data_dir, VOLUMES_DIR, "twice.ext4");
  await h.manager.unload("twice");
  await waitFor(async () => (await loopDevicesOf(image)).length === 0, 30_000, "its loop device to go");
  const device = (await run("losetup", ["--find", "--show", image])).trim();
  t.teardown(() => run("losetup", ["-d", device]).then(() => undefined, () => undefined));
  await h.manager.load("twice").catch(() => undefined);
  const failed = await h.waitForState("twice", "failed", 60_000);
  t.regex(failed.problem ?? "", new RegExp(`still held by ${device}`));
  // It has a volume, so it never falls back to scans (its data is in the image): the fix says so.
  t.regex(failed.problem ?? "", /does not fall back to scans: fix the cause/);
  t.is(await mountsOn(path.join(h.config.modules.data_dir, "twice")), 0);
});

vtest("a volume's release detaches only its own loop device: the same device, freed by the kernel after the unmount and attached to the same image by someone else at once, is left holding it (before, the release waited 5 s for the name and then detached it)", async (t) => {
  const root = path.join(await tempDir(t), "data");
  const v = await mountVolume(root, "reuse", { maxBytes: 4 * MiB, maxEntries: 1000 });
  const { image, device } = v;
  t.teardown(() => run("losetup", ["-d", device]).then(() => undefined, () => undefined));
  // Someone else's losetup on the very name, as soon as the kernel frees it.
  const attacher = (async () => {
    for (const until = Date.now() + 15_000; Date.now() < until; ) {
      if (!(await loopDevicesOf(image)).includes(device) && (await run("losetup", [device, image]).then(() => true, () => false))) return true;
    }
    return false;
  })();
  await v.release();
  t.true(await attacher, `${device} was attached again after the release freed it`);
  await new Promise((r) => setTimeout(r, 200));
  t.deepEqual(await loopDevicesOf(image), [device], "the other party's device still holds the image");
});

vtest("a new volume for max_data_bytes of 8, 16 and 24 MiB mounts with exactly its quota free to the module (before, mkfs chose a smaller journal than the image counted, and the image was too large to reserve the rest of: such a module never started)", async (t) => {
  const root = path.join(await tempDir(t), "data");
  for (const mb of [8, 16, 24]) {
    const v = await mountVolume(root, `m${mb}`, { maxBytes: mb * MiB, maxEntries: 10_000 });
    try {
      const s = await statfs(v.dir);
      // What the module may still use, with what is used (its root directory) : the quota's blocks.
      t.is((s.bavail + (s.blocks - s.bfree)) * s.bsize, mb * MiB, `max_data_bytes = ${mb} MiB`);
    } finally {
      await v.release();
    }
  }
});

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, (err, out, stderr) => (err ? reject(new Error(`${cmd}: ${stderr}`)) : resolve(out)));
  });
}
