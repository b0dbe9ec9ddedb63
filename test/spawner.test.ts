// The spawner (runtime/sandbox/spawner.ts): the process that starts module processes for the
// host, so the host's loop never forks for them. What it must do: pass a child's stdout, stderr
// and channel (fd 3, a socketpair) back to the host as handles that carry bytes both ways,
// report the pid and the exit, leave nothing of itself in the child, refuse malformed calls;
// under the real host, be the parent of every module process (native, isolate host), take
// them with it when it is killed (each module then restarts per its policy, the log naming the
// spawner), and leave no module process behind when the host is killed with -9.

import test from "ava";
import { spawn } from "node:child_process";
import { readdir, readFile, readlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { SPAWN_LIMITS, spawnerPid, spawnViaSpawner, stopSpawner, type Spawned } from "../runtime/sandbox/spawner.ts";
import { ROOT, startHost, tempDir, waitFor, writeModule, type InlineModule, type TestHost } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";

const LONG = 120_000;
const PROBE = fileURLToPath(new URL("./fixtures/native-probe/main.ts", import.meta.url));
const CLINGING = fileURLToPath(new URL("./fixtures/clinging/main.ts", import.meta.url));
const SLOW_READY = fileURLToPath(new URL("./fixtures/slow-ready/main.ts", import.meta.url));

/** Alive and not a zombie. */
async function alive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  return stat !== "" && !/^\d+ \(.*\) [ZX] /s.test(stat);
}

async function parentOf(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
}

/** Everything read from `s` until it ends. */
function readAll(s: NodeJS.ReadableStream): Promise<string> {
  return new Promise((resolve) => {
    let out = "";
    s.on("data", (b: Buffer) => (out += b.toString()));
    s.on("end", () => resolve(out));
  });
}

function exitOf(s: Spawned): Promise<[number | null, NodeJS.Signals | null]> {
  if (s.child.exitCode !== null || s.child.signalCode !== null) return Promise.resolve([s.child.exitCode, s.child.signalCode]);
  return new Promise((resolve) => s.child.once("exit", (code: number | null, signal: NodeJS.Signals | null) => resolve([code, signal])));
}

test.after.always(() => stopSpawner());

function quiet(name: string): InlineModule {
  return {
    toml: `name = "${name}"\nversion = "1.0.0"\nentry_point = "index.ts"\ncapabilities = []\n`,
    files: { "index.ts": `import type { ModuleContext } from "modhost/sdk";\nexport default function start(ctx: ModuleContext): void { ctx.log.info("${name} up"); }\n` },
  };
}

function pidOf(h: TestHost, name: string): number {
  const pid = h.manager.processOf(name)?.pid;
  if (pid === undefined) throw new Error(`${name} has no process`);
  return pid;
}

test.serial("the spawner passes stdout, stderr and the fd-3 socketpair back as handles: bytes flow both ways, written before the hand-over too; the pid comes at once, the exit with its code; the child is the spawner's", async (t) => {
  t.timeout(LONG);
  // The child writes on all three before the host has its handles (nothing may be lost or read
  // by the spawner), then echoes a line over its channel and exits with 7.
  const script = "echo early-out; echo early-err >&2; echo early-ch >&3; read x <&3; echo got:$x >&3; exit 7";
  const s = await spawnViaSpawner({ command: "/bin/sh", args: ["-c", script], env: {}, cwd: "/" });
  t.true(Number.isInteger(s.child.pid));
  t.teardown(() => void s.child.kill("SIGKILL"));
  t.is(await parentOf(s.child.pid!), spawnerPid()!, "its parent is the spawner");
  t.not(await parentOf(s.child.pid!), process.pid);
  const out = readAll(s.stdout);
  const err = readAll(s.stderr);
  const ch = readAll(s.channel);
  s.channel.write("hello\n");
  t.deepEqual(await exitOf(s), [7, null]);
  t.is(await out, "early-out\n");
  t.is(await err, "early-err\n");
  t.is(await ch, "early-ch\ngot:hello\n");
  t.false(s.child.kill("SIGKILL"), "no kill after the exit: the spawner has reaped that pid");
});

test.serial("a child holds fds 0-3 only (stdin /dev/null, three sockets): nothing of the spawner (its IPC channel, descriptors it inherited) reaches it", async (t) => {
  const s = await spawnViaSpawner({ command: "/bin/sleep", args: ["600"], env: {}, cwd: "/" });
  t.teardown(() => void s.child.kill("SIGKILL"));
  // What the command holds once it runs: the steps before it (setpriv, the parent check's shell,
  // each exec'ing the next) hold their own descriptors for a moment.
  await waitFor(async () => (await readFile(`/proc/${s.child.pid}/cmdline`, "utf8")).startsWith("/bin/sleep\0"), 30_000, "sleep to be exec'd");
  t.deepEqual((await readdir(`/proc/${s.child.pid}/fd`)).sort(), ["0", "1", "2", "3"]);
  t.is(await readlink(`/proc/${s.child.pid}/fd/0`), "/dev/null");
  const sockets = await Promise.all(["1", "2", "3"].map((fd) => readlink(`/proc/${s.child.pid}/fd/${fd}`)));
  for (const l of sockets) t.regex(l, /^socket:/);
  t.is(new Set(sockets).size, 3, "three distinct socketpairs");
  const spawnerIpc = await readlink(`/proc/${spawnerPid()}/fd/3`);
  t.false(sockets.includes(spawnerIpc), "not the spawner's IPC channel");
  t.true(s.child.kill("SIGKILL"));
  t.deepEqual(await exitOf(s), [null, "SIGKILL"]);
});

test.serial(`a call past the spawner's bounds (${SPAWN_LIMITS.args} arguments) is refused naming them; a command that cannot start is an error naming it; the spawner carries on`, async (t) => {
  const over = await t.throwsAsync(spawnViaSpawner({ command: "/bin/true", args: Array.from({ length: SPAWN_LIMITS.args + 1 }, () => "x"), env: {}, cwd: "/" }));
  t.regex(over!.message, new RegExp(`refused a malformed call \\(over ${SPAWN_LIMITS.args} arguments or ${SPAWN_LIMITS.bytes} bytes`));
  const missing = await t.throwsAsync(spawnViaSpawner({ command: "/nonexistent/module", args: [], env: {}, cwd: "/" }));
  t.regex(missing!.message, /could not start process: spawn \/nonexistent\/module ENOENT/);
  const s = await spawnViaSpawner({ command: "/bin/true", args: [], env: {}, cwd: "/" });
  t.deepEqual(await exitOf(s), [0, null]);
});

test.serial("a spawner killed with -9 fails nothing silently: a process it ran is reported as ended naming the spawner, and is gone with it though nothing sandboxes it; the next spawn starts a new spawner", async (t) => {
  t.timeout(LONG);
  const s = await spawnViaSpawner({ command: "/bin/sleep", args: ["600"], env: {}, cwd: "/", tie: true });
  const old = spawnerPid()!;
  process.kill(old, "SIGKILL");
  t.deepEqual(await exitOf(s), [null, null]);
  t.regex(s.child.lost ?? "", new RegExp(`its spawner \\(pid ${old}\\) killed by SIGKILL`));
  // A bare sleep (no bwrap, no cgroup, its channel still open), tied as the host ties an
  // unsandboxed process, dies with its spawner (setpriv --pdeathsig KILL); before, it ran on for its 600 s.
  await waitFor(async () => !(await alive(s.child.pid!)), 30_000, `sleep (pid ${s.child.pid}) to die with its spawner`);
  const next = await spawnViaSpawner({ command: "/bin/true", args: [], env: {}, cwd: "/" });
  t.not(spawnerPid(), old);
  t.deepEqual(await exitOf(next), [0, null]);
  s.channel.destroy();
  await stopSpawner();
});

test.serial("under the real host, module processes (a native module, an isolate host) are children of the spawner, not of the host", async (t) => {
  t.timeout(2 * LONG);
  const dir = await tempDir(t, "modhost-spawner-");
  const modulesDir = path.join(dir, "modules");
  await writeNodeNative(modulesDir, "probe", PROBE);
  const h = await startHost(t, { dir, inline: { quiet: quiet("quiet") }, grants: { probe: [], quiet: [] } });
  t.teardown(() => h.stop());
  await h.waitForState("probe", "running", LONG);
  await h.waitForState("quiet", "running", LONG);
  const spawner = spawnerPid()!;
  t.truthy(spawner);
  for (const name of ["probe", "quiet"]) {
    t.is(await parentOf(pidOf(h, name)), spawner, `${name}'s parent is the spawner`);
  }
});

test.serial("under the real host, a spawner killed with -9 takes its module processes with it; each module restarts per its policy under a new spawner, the log naming the spawner", async (t) => {
  t.timeout(3 * LONG);
  const dir = await tempDir(t, "modhost-spawner-");
  await writeNodeNative(path.join(dir, "modules"), "probe", PROBE);
  const h = await startHost(t, { dir, inline: { quiet: quiet("quiet") }, grants: { probe: [], quiet: [] } });
  t.teardown(() => h.stop());
  await h.waitForState("probe", "running", LONG);
  await h.waitForState("quiet", "running", LONG);
  const old = spawnerPid()!;
  const before = { probe: pidOf(h, "probe"), quiet: pidOf(h, "quiet") };
  const since = h.mark();
  process.kill(old, "SIGKILL");
  for (const name of ["probe", "quiet"] as const) {
    await h.waitForLog(new RegExp(`^${name} crashed: its spawner \\(pid ${old}\\) killed by SIGKILL`), { source: "host", since, timeoutMs: LONG });
    await h.waitFor(async () => h.status(name)?.state === "running" && h.manager.processOf(name)?.pid !== before[name], LONG, `${name} to run again`);
    await waitFor(async () => !(await alive(before[name])), LONG, `${name}'s old process (pid ${before[name]}) to be gone`);
    const spawner = spawnerPid()!;
    t.not(spawner, old);
    t.is(await parentOf(pidOf(h, name)), spawner, `${name} runs under the new spawner`);
  }
});

test.serial("a host killed with -9 leaves no module process and no spawner behind", async (t) => {
  t.timeout(3 * LONG);
  const dir = await tempDir(t, "modhost-spawner-");
  await writeNodeNative(path.join(dir, "modules"), "probe", PROBE);
  await writeModule(path.join(dir, "modules"), "quiet", quiet("quiet"));
  const config = await writeHostConfig(dir);
  const run = runHost(t, dir, config);
  const { host, exited } = run;
  const pids: number[] = [];
  for (const name of ["probe", "quiet"]) {
    const m = await waitFor(() => new RegExp(`loaded ${name} .*pid=(\\d+)`).exec(run.out), LONG, `${name} to be loaded`, () => run.out);
    pids.push(Number(m[1]));
  }
  const spawner = await parentOf(pids[0]!);
  t.not(spawner, host.pid, "the module's parent is not the host");
  t.is(await parentOf(spawner), host.pid!, "its parent is the host's spawner");
  host.kill("SIGKILL");
  await exited;
  await waitFor(async () => !(await alive(spawner)), LONG, "the spawner to be gone");
  for (const pid of pids) await waitFor(async () => !(await alive(pid)), LONG, `module process ${pid} to be gone`);
  t.pass();
});

// With the sandbox "off" nothing but the spawner's own setpriv --pdeathsig KILL ties a module to
// it: no bwrap (--die-with-parent), no cgroup. The module here ignores SIGTERM and the close of
// its channel, so only that ends it; before, it outlived a spawner killed with -9.
test.serial("with the sandbox \"off\", a spawner killed with -9 takes its module processes with it (a native module that ignores SIGTERM and its channel's close, an isolate host); each restarts under a new spawner", async (t) => {
  t.timeout(3 * LONG);
  const dir = await tempDir(t, "modhost-spawner-");
  await writeNodeNative(path.join(dir, "modules"), "clinging", CLINGING);
  const h = await startHost(t, {
    dir, inline: { quiet: quiet("quiet") }, grants: { clinging: [], quiet: [] },
    configure: (c) => {
      c.modules.sandbox = "off";
      c.modules.native_sandbox = null;
    },
  });
  t.teardown(() => h.stop());
  await h.waitForState("clinging", "running", LONG);
  await h.waitForState("quiet", "running", LONG);
  for (const name of ["clinging", "quiet"]) {
    const loaded = h.records.find((r) => r.message.startsWith(`loaded ${name} `));
    t.is(loaded?.fields?.sandbox, "none", `${name} runs unsandboxed`);
  }
  const old = spawnerPid()!;
  const before = { clinging: pidOf(h, "clinging"), quiet: pidOf(h, "quiet") };
  const since = h.mark();
  const killed = performance.now();
  process.kill(old, "SIGKILL");
  for (const name of ["clinging", "quiet"] as const) {
    await waitFor(async () => !(await alive(before[name])), 30_000, `${name}'s process (pid ${before[name]}) to die with its spawner`);
    t.log(`${name} gone ${(performance.now() - killed).toFixed(0)} ms after the spawner was killed`);
  }
  for (const name of ["clinging", "quiet"] as const) {
    await h.waitForLog(new RegExp(`^${name} crashed: its spawner \\(pid ${old}\\) killed by SIGKILL`), { source: "host", since, timeoutMs: LONG });
    await h.waitFor(async () => h.status(name)?.state === "running" && h.manager.processOf(name)?.pid !== before[name], LONG, `${name} to run again`);
  }
});

test.serial("with the sandbox \"off\", a host killed with -9 leaves no module process (one that ignores SIGTERM and its channel's close) and no spawner behind", async (t) => {
  t.timeout(3 * LONG);
  const dir = await tempDir(t, "modhost-spawner-");
  await writeNodeNative(path.join(dir, "modules"), "clinging", CLINGING);
  const config = await writeHostConfig(dir, ['sandbox = "off"']);
  const run = runHost(t, dir, config);
  const { host, exited } = run;
  const m = await waitFor(() => /loaded clinging .*sandbox=none.*pid=(\d+)/.exec(run.out), LONG, "clinging to be loaded unsandboxed", () => run.out);
  const pid = Number(m[1]);
  const spawner = await parentOf(pid);
  t.is(await parentOf(spawner), host.pid!, "the module's parent is the host's spawner");
  host.kill("SIGKILL");
  await exited;
  await waitFor(async () => !(await alive(spawner)), 30_000, "the spawner to be gone");
  await waitFor(async () => !(await alive(pid)), 30_000, `module process ${pid} to be gone`);
  t.pass();
});

/** Mounts at or under `dir` (this process's mount namespace, which the host's tool runner shares). */
async function mountsUnder(dir: string): Promise<number> {
  const root = path.resolve(dir);
  return (await readFile("/proc/self/mountinfo", "utf8")).split("\n").filter((l) => {
    const at = l.split(" ")[4];
    return at !== undefined && (at === root || at.startsWith(`${root}/`));
  }).length;
}

/** Every live process below `root` (children, theirs, ...), by the parents in /proc. */
async function descendants(root: number): Promise<number[]> {
  const parents = new Map<number, number>();
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`/proc/${name}/stat`, "utf8").catch(() => "");
    if (stat) parents.set(Number(name), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const [child, parent] of parents) if (parent === p) { out.push(child); walk(child); }
  };
  walk(root);
  return out;
}

/** `modhost run` of `config` as its own process, its output collected. */
/** A host config in `dir` (modules in dir/modules, no RPC, unsigned modules allowed); `modules` adds [modules] keys, `extra` whole sections. */
async function writeHostConfig(dir: string, modules: string[] = [], extra: string[] = []): Promise<string> {
  const config = path.join(dir, "modhost.toml");
  await writeFile(config, [
    "[chain]", "block_interval_seconds = 0", "",
    "[modules]", 'modules_dir = "modules"', 'data_dir = "data/modules"', ...modules, "",
    ...extra,
    "[storage]", 'dir = "data/storage"', "",
    "[rpc]", "enabled = false", "",
    "[trust]", 'signatures = "allow-unsigned"', "",
  ].join("\n"));
  return config;
}

function runHost(t: import("ava").ExecutionContext, dir: string, config: string) {
  const host = spawn(process.execPath, [path.join(ROOT, "bin", "modhost.js"), "run", "--config", config], { cwd: dir, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1" } });
  t.teardown(() => void host.kill("SIGKILL"));
  const run = { host, out: "", exited: new Promise<void>((resolve) => host.once("exit", () => resolve())) };
  host.stdout.on("data", (d: Buffer) => (run.out += d.toString()));
  host.stderr.on("data", (d: Buffer) => (run.out += d.toString()));
  return run;
}

test.serial("a host killed with -9 while a native module starts (spawned, its volume mounted, hello said, not ready): module and spawner gone; the next host on the same directories starts it on its volume and, stopped, leaves no mount behind", async (t) => {
  t.timeout(4 * LONG);
  const dir = await tempDir(t, "modhost-spawner-");
  await writeNodeNative(path.join(dir, "modules"), "slow", SLOW_READY);
  const config = await writeHostConfig(dir, [], ["[modules.limits.slow]", "start_timeout_ms = 120000", ""]);
  const first = runHost(t, dir, config);
  // Its pid as it says it is its sandbox's (a pid namespace): the host's processes are found by their parents.
  await waitFor(() => /slow-ready pid \d+/.exec(first.out), LONG, "slow to say hello", () => first.out);
  const left = await descendants(first.host.pid!);
  t.true(left.length >= 3, `the host's spawner, its tool runner and the module's processes: ${left.join(", ")}`);
  first.host.kill("SIGKILL");
  await first.exited;
  for (const pid of left) await waitFor(async () => !(await alive(pid)), 30_000, `process ${pid} of the killed host to be gone`);

  const second = runHost(t, dir, config);
  const ready = await waitFor(() => /loaded slow .*pid=(\d+)/.exec(second.out), LONG, "slow to be loaded by the next host", () => second.out);
  // Its stderr line and the host's "loaded" line come by different ways (a pipe, its socket): either may be printed first.
  await waitFor(() => /slow-ready ready pid/.test(second.out), LONG, "slow to say it found the marker it wrote on its volume before the kill", () => second.out);
  t.regex(second.out, /slow-ready ready pid/, "it found the marker it wrote on its volume before the kill");
  t.true(await alive(Number(ready[1])));
  second.host.kill("SIGTERM");
  await second.exited;
  await waitFor(async () => !(await alive(Number(ready[1]))), 30_000, "the module to be gone after the host's stop");
  t.is(await mountsUnder(path.join(dir, "data")), 0, "no mount left under the data directory");
});
