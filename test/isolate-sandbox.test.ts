// The isolate hosts of TypeScript modules run in the same OS sandbox as native modules
// (runtime/isolate/runtime.ts, runtime/sandbox): a module still works end to end; its isolate
// host runs under the module's uid with no capabilities, in namespaces of its own, with the
// rlimits V8 needs; and code that escaped the isolate (simulated: a payload script run in place
// of the worker, under the same policy) finds nothing of the host's. Needs root and bubblewrap,
// as test/sandbox.test.ts does.

import test from "ava";
import type { ExecutionContext } from "ava";
import { spawn } from "node:child_process";
import { chmod, chown, cp, lstat, mkdir, readdir, readFile, readlink, rm, stat, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import type { Socket } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseToml } from "smol-toml";
import { DEFAULT_LIMITS, defaultConfig, parseConfig, sandboxModeFor, type HostConfig } from "../host/config.ts";
import { ModuleStore } from "../storage/store.ts";
import { compileForIsolate, ISOLATE_HOST_MIN, isolateHostCgroupLimits, isolateHostLimits, isolateHostPackages, isolateHostScript } from "../runtime/isolate/runtime.ts";
import { loadManifest } from "../host/manifest.ts";
import { describeSandboxes, plannedLevel, type SandboxCapabilities, type SandboxMode } from "../runtime/sandbox/index.ts";
import { eventually, listen, processesOf } from "./helpers/procs.ts";
import { moduleUid } from "../runtime/sandbox/policy.ts";
import { FIXTURES, GOOD_GRANTS, ROOT, startHost, tempDir } from "./helpers/host.ts";
import { field, goodAs, sandboxedNode } from "./helpers/sandboxed.ts";
import { payloadSpawn } from "./helpers/isolate-payload.ts";

const require = createRequire(import.meta.url);
const HOST = fileURLToPath(new URL("./fixtures/isolate-sandbox/host.ts", import.meta.url));
const MB = 1024 * 1024;


/** "Max processes  128  128  processes" -> "128". */
function limit(limits: string, name: string): string | undefined {
  return new RegExp(`^${name}\\s+(\\S+)\\s+(\\S+)`, "m").exec(limits)?.[1];
}

// ---------------------------------------------------------------------------------------
// The module, end to end

test("a TypeScript module runs end to end with its isolate host sandboxed: storage, events, replay", async (t) => {
  const h = await startHost(t, {
    modules: ["good", "watcher"],
    grants: { good: GOOD_GRANTS, watcher: ["subscribe_events=ModuleLoaded,ModuleCrashed,ModuleRestarted"] },
  });
  t.regex((await h.waitForLog(/^module sandbox: /, { source: "host" })).message,
    /^module sandbox: native modules full, TypeScript isolate hosts full; kernel limits per module: cgroup v[12] memory\+pids\+cpu$/);
  for (const name of ["good", "watcher"]) {
    t.is(h.mustStatus(name).state, "running", name);
    t.is(h.mustStatus(name).sandbox, "full", name);
  }
  t.truthy(h.records.find((r) => r.source === "host" && /^loaded good /.test(r.message) && r.fields?.["sandbox"] === "full"));
  await h.waitForLog(/^SAW ModuleLoaded good /, { source: "watcher" });
  const since = h.mark();
  const height = await h.mine(2);
  await h.waitForLog(new RegExp(`^stored block ${height}$`), { source: "good", since });
  t.deepEqual(h.records.filter((r) => r.source === "host" && /sandbox: /.test(r.message) && r.level === "warn").map((r) => r.message), [], "no sandbox notes");
  await h.stop();
  const store = await ModuleStore.open(h.storageDir("good"));
  t.teardown(() => store.close());
  t.truthy(await store.get("blocks", String(height).padStart(10, "0")));
  t.is(await store.get("blocks", "stopped"), "host shutdown", "stop() ran in the sandbox too");
});

test("the isolate host runs as the module's uid, without capabilities, in namespaces of its own, with V8's rlimits", async (t) => {
  const name = `sbx-ident-${process.pid}`;
  const h = await startHost(t, {
    inline: { [name]: await goodAs(name) },
    grants: { [name]: GOOD_GRANTS },
    // The product defaults (the test harness raises processes: see TEST_LIMITS).
    moduleLimits: { [name]: { processes: DEFAULT_LIMITS.processes, address_space_mb: DEFAULT_LIMITS.address_space_mb, memory_mb: 64 } },
  });
  t.is(h.mustStatus(name).sandbox, "full");
  const launcher = h.manager.processOf(name)!.pid!;
  const pid = await sandboxedNode(launcher);
  t.not(pid, launcher, "the manager's pid is bubblewrap's; node runs below it");
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const uid = moduleUid(name);
  t.is(field(status, "Uid"), `${uid}\t${uid}\t${uid}\t${uid}`);
  t.is(field(status, "Gid"), `${uid}\t${uid}\t${uid}\t${uid}`);
  t.is(field(status, "Groups"), "");
  for (const set of ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]) t.is(field(status, set), "0000000000000000", set);
  t.is(field(status, "NoNewPrivs"), "1");
  t.is(field(status, "Seccomp"), "2", "seccomp filter mode");
  for (const ns of ["net", "pid", "mnt", "ipc", "uts"]) {
    t.not(await readlink(`/proc/${pid}/ns/${ns}`), await readlink(`/proc/self/ns/${ns}`), `its own ${ns} namespace`);
  }
  const limits = await readFile(`/proc/${pid}/limits`, "utf8");
  t.is(limit(limits, "Max processes"), "128");
  t.is(limit(limits, "Max address space"), String((ISOLATE_HOST_MIN.addressSpaceBaseMb + 3 * 64) * MB), "raised to what V8 needs: the base + 3 x memory_mb");
  t.is(limit(limits, "Max open files"), "1024");
  t.is(limit(limits, "Max core file size"), "0");
  const threads = Number(field(status, "Threads"));
  const fds = (await readdir(`/proc/${pid}/fd`)).length;
  t.log(`isolate host: ${threads} threads, ${fds} fds, VmSize ${field(status, "VmSize")}, VmPeak ${field(status, "VmPeak")}`);
  t.true(threads >= 5 && threads < isolateHostLimits(DEFAULT_LIMITS).processes / 2, `${threads} threads`);
  // The bundle it runs: handed to the module's gid, read-only; the worker script readable by all.
  const args = (await readFile(`/proc/${pid}/cmdline`, "utf8")).split("\0");
  const bundle = args[args.indexOf("--bundle") + 1]!;
  const st = await stat(bundle);
  t.deepEqual([st.uid, st.gid, st.mode & 0o777], [0, uid, 0o440]);
  t.false(args.includes("--data-dir"), "no data directory: the host serves its files");
  t.is(await readlink(`/proc/${pid}/cwd`), "/");
  const script = await isolateHostScript();
  t.is((await stat(script)).mode & 0o777, 0o644);
  t.is((await stat(path.dirname(script))).mode & 0o777, 0o711);
  t.is((await stat(path.dirname(bundle))).mode & 0o777, 0o711, "the run directory: pass through, no listing");
  // Still works: storage and events.
  const since = h.mark();
  const height = await h.mine(1);
  await h.waitForLog(new RegExp(`^stored block ${height}$`), { source: name, since });
});

test("a module filling a large heap (memory_mb 512) is stopped by its memory limit, not by the address-space limit", async (t) => {
  // Under the native default of 2048 MB of address space, V8 aborts (SIGABRT) before the
  // isolate reaches 512 MB; the isolate host's floor (ISOLATE_HOST_MIN: base + 3 x memory_mb) leaves room.
  const h = await startHost(t, {
    modules: ["hog-memory"],
    grants: { "hog-memory": ["subscribe_events=NewBlock"] },
    moduleLimits: { "hog-memory": { memory_mb: 512, address_space_mb: 2048, restart: "never", cpu_time_ms: 20_000 } },
  });
  t.is(h.mustStatus("hog-memory").sandbox, "full");
  const limits = await readFile(`/proc/${await sandboxedNode(h.manager.processOf("hog-memory")!.pid!)}/limits`, "utf8");
  t.is(limit(limits, "Max address space"), String((ISOLATE_HOST_MIN.addressSpaceBaseMb + 3 * 512) * MB));
  await h.mine(1);
  const crash = (await h.waitForEvent("ModuleCrashed", (p) => p["module"] === "hog-memory", { timeoutMs: 40_000 })).payload as Record<string, unknown>;
  t.regex(String(crash["error"]), /exceeded its memory limit of 512 MB \(memory_mb\)/);
  // Without the floor: "killed by SIGABRT (exit code 134)" and no memory message. And the
  // isolate host waits for the large isolate's teardown before it exits (worker.ts, die()):
  // exiting during it crashed the process with SIGSEGV (139).
  t.is(crash["exit_code"], 71);
});

test("a crash of the sandboxed isolate host is reported and restarted; its processes are gone", async (t) => {
  const name = `sbx-crash-${process.pid}`;
  const h = await startHost(t, { inline: { [name]: await goodAs(name) }, grants: { [name]: GOOD_GRANTS } });
  const node = await sandboxedNode(h.manager.processOf(name)!.pid!);
  const since = h.events.length;
  process.kill(node, "SIGKILL"); // inside the sandbox: bwrap reports 128 + 9
  await h.waitForEvent("ModuleCrashed", (p) => p["module"] === name, { since });
  await h.waitForEvent("ModuleRestarted", (p) => p["module"] === name, { since, timeoutMs: 15_000 });
  await h.waitForState(name, "running");
  t.is(h.mustStatus(name).sandbox, "full");
  const after = h.mark();
  const height = await h.mine(1);
  await h.waitForLog(new RegExp(`^stored block ${height}$`), { source: name, since: after });
  await h.stop();
  t.true(await eventually(async () => (await processesOf(moduleUid(name))) === 0, 3000), "nothing left under its uid");
});

// ---------------------------------------------------------------------------------------
// What an escape would find: a payload run in place of the worker, under the same policy

interface World {
  dir: string;
  manifestFile: string;
  /** The module's compiled bundle, in a run directory like the manager's (0711). */
  bundle: string;
  /** Another module's bundle next to it. */
  otherBundle: string;
  /** Its own data directory as the manager makes it, and another module's, each with a file. */
  ownData: string;
  otherData: string;
  /** A world-readable host file. */
  secret: string;
}

async function world(t: ExecutionContext): Promise<World> {
  const dir = await tempDir(t, "modhost-isbx-");
  await chmod(dir, 0o755);
  const modulesDir = path.join(dir, "modules");
  await cp(path.join(FIXTURES, "good"), path.join(modulesDir, "good"), { recursive: true });
  const manifestFile = path.join(modulesDir, "good", "module.toml");
  const compiled = await compileForIsolate(await loadManifest(manifestFile));
  const run = path.join(dir, "run");
  await mkdir(run, { mode: 0o711 });
  await chmod(run, 0o711);
  const bundle = path.join(run, "good.js");
  const otherBundle = path.join(run, "other.js");
  await writeFile(bundle, compiled.code, { mode: 0o600 });
  await writeFile(otherBundle, compiled.code, { mode: 0o644 });
  const ownData = path.join(dir, "data", "good");
  const otherData = path.join(dir, "data", "other");
  for (const d of [ownData, otherData]) {
    await mkdir(d, { recursive: true, mode: 0o700 });
    await writeFile(path.join(d, "secret"), "module data\n", { mode: 0o600 });
  }
  await chown(otherData, 1_999_999_998, 1_999_999_998);
  await chmod(path.join(dir, "data"), 0o755);
  const secret = path.join(dir, "secret.txt");
  await writeFile(secret, "host secret\n", { mode: 0o644 });
  return { dir, manifestFile, bundle, otherBundle, ownData, otherData, secret };
}

// Each run gets a uid of its own: runs are concurrent and RLIMIT_NPROC counts per uid.
let nextUid = 1_960_000_000 + (process.pid % 10_000) * 100;

interface PayloadRun {
  code: number | null;
  stdout: string;
  stderr: string;
  level: string;
  notes: string[];
  result: Record<string, any>;
}

/** A file in /tmp that the probe writes (private in the full sandbox, the host's in the degraded one). */
const tmpFile = (uid: number) => `/tmp/modhost-isbx-pwned-${uid}`;

async function probe(t: ExecutionContext, w: World, mode: SandboxMode, port: number, uid: number): Promise<PayloadRun> {
  t.teardown(() => rm(tmpFile(uid), { force: true }));
  const input = {
    read: [
      w.bundle, await isolateHostScript(), require.resolve("isolated-vm"),
      w.secret, w.otherBundle, path.join(w.ownData, "secret"), path.join(w.otherData, "secret"),
      "/etc/shadow", "/etc/passwd", "/root/.bashrc", path.join(ROOT, "package.json"), path.join(ROOT, "node_modules", "esbuild", "package.json"),
    ],
    write: ["/usr/pwned", w.bundle, await isolateHostScript(), path.join(w.dir, "pwned"), path.join(w.ownData, "pwned"), tmpFile(uid)],
    list: [path.dirname(w.bundle), path.join(ROOT, "node_modules")],
    hostPid: process.pid,
    port,
    ivm: require.resolve("isolated-vm"),
    msgpackr: require.resolve("msgpackr"),
  };
  const sandboxed = await payloadSpawn(w.manifestFile, w.bundle, ["probe", JSON.stringify(input)], { uid, mode });
  const { spec } = sandboxed;
  const child = spawn(spec.command, spec.args, { cwd: spec.cwd, env: spec.env, stdio: ["ignore", "pipe", "pipe", "pipe"], detached: true });
  (child.stdio[3] as Socket).on("error", () => undefined);
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  const code = await new Promise<number | null>((resolve) => child.on("close", (c) => resolve(c)));
  clearTimeout(timer);
  if (stderr) t.log(`stderr: ${stderr.trim()}`);
  const line = stdout.split("\n").find((l) => l.startsWith("RESULT "));
  if (!line) throw new Error(`no result (exit ${code}): ${stdout}\n${stderr}`);
  return { code, stdout, stderr, level: sandboxed.level, notes: sandboxed.notes, result: JSON.parse(line.slice(7)) as Record<string, any> };
}

test("an escaped isolate (full sandbox): host files, other modules' data and bundles, network, host PIDs are out of reach", async (t) => {
  const w = await world(t);
  const { server, port } = await listen();
  t.teardown(() => server.close());
  const uid = nextUid++;
  const r = await probe(t, w, "full", port, uid);
  t.is(r.level, "full");
  t.deepEqual(r.notes, []);
  t.is(r.code, 0);
  const { result } = r;
  t.is(result.uid, uid);
  t.is(result.gid, uid);
  t.is(result.status.CapEff, "0000000000000000");
  t.is(result.status.CapBnd, "0000000000000000");
  t.is(result.status.Seccomp, "2");
  t.is(result.status.NoNewPrivs, "1");
  t.is(result.cwd, "/");
  // What it needs, and only that.
  t.is(result.isolate, 42, "isolated-vm loads and runs an isolate");
  t.is(result.msgpackr, 64);
  t.is(result.extract, "function", "msgpackr's native accelerator loads too");
  t.is(result.read[w.bundle], "ok", "its own bundle (root:gid 0440)");
  t.is(result.read[await isolateHostScript()], "ok");
  t.is(result.read[require.resolve("isolated-vm")], "ok");
  for (const p of [w.secret, w.otherBundle, path.join(w.ownData, "secret"), path.join(w.otherData, "secret"), "/etc/shadow", "/etc/passwd", "/root/.bashrc",
    path.join(ROOT, "package.json"), path.join(ROOT, "node_modules", "esbuild", "package.json")]) {
    t.is(result.read[p], "ENOENT", p);
  }
  t.deepEqual(result.list[path.dirname(w.bundle)], ["good.js"], "bubblewrap's directory on the way to the bundle: nothing else");
  // The packages the isolate host loads, and the one that holds the node binary when Node
  // comes from node_modules (set-up installs Node 24 there on machines whose system Node is older).
  const nodeModules = path.join(ROOT, "node_modules");
  const fromNodeModules = process.execPath.startsWith(nodeModules + path.sep) ? [process.execPath] : [];
  const packages = [...new Set([...(await isolateHostPackages()), ...fromNodeModules].map((p) => path.relative(nodeModules, p).split("/")[0]!))].sort();
  t.deepEqual(result.list[path.join(ROOT, "node_modules")], packages, "of node_modules, only the packages the isolate host loads");
  // Nothing writable but its private /tmp.
  t.is(result.write["/usr/pwned"], "EROFS");
  t.true(["EROFS", "EACCES"].includes(result.write[w.bundle]), result.write[w.bundle]);
  t.true(["EROFS", "EACCES"].includes(result.write[await isolateHostScript()]), result.write[await isolateHostScript()]);
  t.true(["ENOENT", "EACCES"].includes(result.write[path.join(w.dir, "pwned")]), result.write[path.join(w.dir, "pwned")]);
  t.is(result.write[path.join(w.ownData, "pwned")], "ENOENT", "no data directory: the host serves the module's files");
  t.is(result.write[tmpFile(uid)], "ok", "a private tmpfs");
  t.false(await lstat(tmpFile(uid)).then(() => true, () => false));
  t.false(await lstat(path.join(w.dir, "pwned")).then(() => true, () => false));
  // No network, no host processes.
  t.is(result.connect, "EPERM", "socket(AF_INET) is denied");
  t.is(result.kill, "ESRCH");
  t.deepEqual(result.pids, [1, 2], "bubblewrap's init and itself");
  // The checkout may itself live under /tmp (CI clones anywhere): its first component is the
  // way to the packages, whatever it is.
  const top = ROOT.split("/").filter(Boolean)[0]!;
  const allowed = new Set(["bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "tmp", "usr", top]);
  t.deepEqual(result.root.filter((e: string) => !allowed.has(e)), [], "only the system, /tmp, and the way to the packages");
  t.true(result.root.includes(top), "the way to the packages is there");
  t.is(limit(result.limits, "Max address space"), String((ISOLATE_HOST_MIN.addressSpaceBaseMb + ISOLATE_HOST_MIN.addressSpacePerHeapMb * DEFAULT_LIMITS.memory_mb) * MB));
  t.is(limit(result.limits, "Max processes"), String(DEFAULT_LIMITS.processes));
});

test("an escaped isolate running many processes that each allocate is held to the isolate host's cgroup memory", async (t) => {
  const w = await world(t);
  const uid = nextUid++;
  // memory_total_mb 256 (the floor for memory_mb 32 is 192 + 64); 6 x (Node + 64 MB) is far more.
  const sandboxed = await payloadSpawn(w.manifestFile, w.bundle, ["hog", "6,64"], { uid, mode: "full", cgroup: true, limits: { memory_total_mb: 256, memory_mb: 32 } });
  t.truthy(sandboxed.cgroup, "the isolate host has a cgroup");
  const { spec } = sandboxed;
  const child = spawn(spec.command, spec.args, { cwd: spec.cwd, env: spec.env, stdio: ["ignore", "pipe", "pipe", "pipe"], detached: true });
  (child.stdio[3] as Socket).on("error", () => undefined);
  let stdout = "";
  child.stdout!.on("data", (d) => (stdout += d));
  const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
  await new Promise((resolve) => child.on("close", resolve));
  clearTimeout(timer);
  const reason = await sandboxed.cgroup!.exitReason();
  await sandboxed.release();
  const line = stdout.split("\n").find((l) => l.startsWith("RESULT "));
  t.log(`${line ?? "(no result: the payload itself was killed)"}; ${reason}`);
  t.regex(reason ?? "", /the kernel killed \d+ of its processes at its memory limit.*memory_total_mb = 256/);
  if (line) {
    const r = JSON.parse(line.slice(7)) as { held: number; killed: number };
    t.true(r.killed >= 1, "some were killed");
    t.true(r.held * 64 < 256, `${r.held} held 64 MB`);
  }
  t.true(await eventually(async () => (await processesOf(uid)) === 0, 5000), "nothing of it is left");
});

test("an escaped isolate (degraded sandbox, util-linux): its own uid, no capabilities, other modules' data refused", async (t) => {
  const w = await world(t);
  const { server, port } = await listen();
  t.teardown(() => server.close());
  const uid = nextUid++;
  const r = await probe(t, w, "degraded", port, uid);
  t.is(r.level, "degraded");
  t.true(r.notes.some((n) => n.includes("no seccomp")));
  t.true(r.notes.some((n) => n.startsWith("/tmp is shared with the host")), "its files are under /tmp");
  const { result } = r;
  t.is(result.uid, uid);
  t.is(result.status.CapEff, "0000000000000000");
  t.is(result.status.NoNewPrivs, "1");
  t.is(result.isolate, 42);
  t.is(result.read[w.bundle], "ok");
  t.is(result.read[path.join(w.otherData, "secret")], "EACCES", "another module's data (0700, its own uid)");
  t.is(result.read[path.join(w.ownData, "secret")], "EACCES", "not even its own: the host serves its files");
  t.is(result.read["/etc/shadow"], "EACCES");
  t.is(result.list[path.dirname(w.bundle)], "EACCES", "the run directory can be passed through, not listed");
  t.is(result.write["/usr/pwned"], "EACCES");
  t.is(result.write[w.bundle], "EACCES");
  t.is(result.connect, "ENETUNREACH", "an empty network namespace");
  t.is(result.kill, "ESRCH");
  t.deepEqual(result.pids.slice(0, 1), [1], "its own PID namespace");
});

test("the isolate host dies with its host (host killed with SIGKILL)", async (t) => {
  const w = await world(t);
  const uid = nextUid++;
  const host = spawn(process.execPath, ["--import", "tsx", HOST, w.manifestFile, w.bundle, String(uid), "full"], { stdio: ["ignore", "pipe", "inherit"] });
  t.teardown(() => host.kill("SIGKILL"));
  await new Promise<void>((resolve, reject) => {
    let out = "";
    host.stdout!.on("data", (d) => {
      out += d;
      if (out.includes("READY")) resolve();
    });
    host.on("exit", () => reject(new Error(`host exited: ${out}`)));
  });
  t.true(await eventually(async () => (await processesOf(uid)) === 1, 3000), "the payload runs under its uid");
  host.kill("SIGKILL");
  t.true(await eventually(async () => (await processesOf(uid)) === 0, 3000), "gone after the host died");
});

// ---------------------------------------------------------------------------------------
// Levels and configuration

test("[modules] sandbox = \"degraded\": TypeScript modules run in the util-linux sandbox, reported as degraded", async (t) => {
  const name = `sbx-degraded-${process.pid}`;
  const h = await startHost(t, {
    inline: { [name]: await goodAs(name) },
    grants: { [name]: GOOD_GRANTS },
    configure: (c) => {
      c.modules.sandbox = "degraded";
    },
  });
  t.is(h.mustStatus(name).state, "running", h.tail());
  t.is(h.mustStatus(name).sandbox, "degraded");
  t.truthy(h.records.find((r) => r.level === "warn" && r.message.startsWith(`${name} sandbox: degraded sandbox (util-linux`)));
  t.regex((await h.waitForLog(/^module sandbox: /, { source: "host" })).message, /native modules degraded \(configured "degraded"\), TypeScript isolate hosts degraded/);
  const pid = await sandboxedNode(h.manager.processOf(name)!.pid!);
  t.regex((await readFile(`/proc/${pid}/status`, "utf8")), new RegExp(`^Uid:\\s+${moduleUid(name)}\\s`, "m"));
  const since = h.mark();
  const height = await h.mine(1);
  await h.waitForLog(new RegExp(`^stored block ${height}$`), { source: name, since });
});

test("[modules] sandbox = \"off\": the isolate host runs unsandboxed, reported as none with a warning", async (t) => {
  const name = `sbx-off-${process.pid}`;
  const h = await startHost(t, {
    inline: { [name]: await goodAs(name) },
    grants: { [name]: GOOD_GRANTS },
    configure: (c) => {
      c.modules.sandbox = "off";
    },
  });
  t.is(h.mustStatus(name).sandbox, "none");
  t.truthy(h.records.find((r) => r.level === "warn" && r.message.startsWith(`${name} sandbox: not sandboxed: the operator turned the sandbox off (mode "off")`)));
  t.regex((await h.waitForLog(/^module sandbox: /, { source: "host" })).message, /native modules none \(configured "off"\), TypeScript isolate hosts none \(configured "off"\)/);
  const pid = h.manager.processOf(name)!.pid!;
  t.regex(await readFile(`/proc/${pid}/status`, "utf8"), /^Uid:\s+0\s/m, "the host's own uid");
  const since = h.mark();
  const height = await h.mine(1);
  await h.waitForLog(new RegExp(`^stored block ${height}$`), { source: name, since });
});

test("config: [modules] sandbox applies to both runtimes; native_sandbox overrides it for native modules", (t) => {
  const parse = (modules: Record<string, string>): HostConfig => {
    const source = `[modules]\n${Object.entries(modules).map(([k, v]) => `${k} = "${v}"`).join("\n")}\n`;
    return parseConfig(parseToml(source), source, "/x/modhost.toml");
  };
  const d = defaultConfig("/x");
  t.is(d.modules.sandbox, "auto");
  t.is(d.modules.native_sandbox, null);
  t.is(sandboxModeFor(d, "native"), "auto");
  t.is(sandboxModeFor(d, "isolate"), "auto");
  const both = parse({ sandbox: "full" });
  t.is(sandboxModeFor(both, "native"), "full");
  t.is(sandboxModeFor(both, "isolate"), "full");
  const legacy = parse({ native_sandbox: "off" });
  t.is(sandboxModeFor(legacy, "native"), "off", "an existing native_sandbox keeps its meaning");
  t.is(sandboxModeFor(legacy, "isolate"), "auto", "and does not turn the isolate hosts' sandbox off");
  const mixed = parse({ sandbox: "degraded", native_sandbox: "full" });
  t.is(sandboxModeFor(mixed, "native"), "full");
  t.is(sandboxModeFor(mixed, "isolate"), "degraded");
  const err = t.throws(() => parse({ sandbox: "maybe" }));
  t.regex(JSON.stringify((err as { problems?: unknown }).problems ?? err?.message), /modules\.sandbox/);
});

test("levels: with no sandbox on the machine, \"auto\" refuses native modules but runs isolate hosts unsandboxed", (t) => {
  const caps = (over: Partial<SandboxCapabilities>): SandboxCapabilities => ({
    root: true, arch: "x86_64", seccomp: true, tools: {} as SandboxCapabilities["tools"], bwrapWorks: false, unshareWorks: false,
    best: "none", fallback: false, problems: ["bubblewrap is not installed"], ...over,
  });
  const none = caps({});
  t.is(plannedLevel("auto", none), "refused");
  t.is(plannedLevel("auto", none, true), "none");
  t.is(plannedLevel("full", none, true), "refused", "an explicit \"full\" is never weakened");
  t.is(plannedLevel("off", none), "none");
  const full = caps({ best: "full", fallback: true, bwrapWorks: true, problems: [] });
  t.is(plannedLevel("auto", full, true), "full");
  t.is(plannedLevel("degraded", full, true), "degraded");
  const line = describeSandboxes({ native: "auto", isolate: "auto" }, none);
  t.false(line.full);
  t.is(line.text, "module sandbox: native modules unavailable (they will not start), TypeScript isolate hosts none; bubblewrap is not installed");
  t.deepEqual(describeSandboxes({ native: "auto", isolate: "auto" }, full), { text: "module sandbox: native modules full, TypeScript isolate hosts full", full: true });
});

test("isolate host rlimits: the operator's, raised to what Node and V8 need; 0 stays unlimited", (t) => {
  t.deepEqual(isolateHostLimits(DEFAULT_LIMITS), {
    address_space_mb: ISOLATE_HOST_MIN.addressSpaceBaseMb + 3 * DEFAULT_LIMITS.memory_mb, open_files: 1024, processes: 128, cpu_seconds: 0, file_size_mb: 1024,
  });
  t.deepEqual(isolateHostLimits({ ...DEFAULT_LIMITS, memory_mb: 1024, address_space_mb: 256, open_files: 16, processes: 8, cpu_seconds: 30 }), {
    address_space_mb: ISOLATE_HOST_MIN.addressSpaceBaseMb + 3 * 1024, open_files: 128, processes: 64, cpu_seconds: 30, file_size_mb: 1024,
  });
  t.deepEqual(isolateHostLimits({ ...DEFAULT_LIMITS, address_space_mb: 0, open_files: 0, processes: 0 }), {
    address_space_mb: 0, open_files: 0, processes: 0, cpu_seconds: 0, file_size_mb: 1024,
  });
  t.is(isolateHostLimits({ ...DEFAULT_LIMITS, address_space_mb: 16_384 }).address_space_mb, 16_384);
});

test("isolate host cgroup limits: the operator's, memory and tasks raised to what Node and V8 need; 0 stays unlimited", (t) => {
  t.deepEqual(isolateHostCgroupLimits(DEFAULT_LIMITS), { memory_mb: 512, processes: 128, cpu_weight: 100, cpu_max_percent: 100 });
  t.deepEqual(isolateHostCgroupLimits({ ...DEFAULT_LIMITS, memory_mb: 1024, memory_total_mb: 256, processes: 8, cpu_weight: 5, cpu_max_percent: 0 }), {
    memory_mb: ISOLATE_HOST_MIN.memoryBaseMb + 2 * 1024, processes: 64, cpu_weight: 5, cpu_max_percent: 0,
  });
  t.deepEqual(isolateHostCgroupLimits({ ...DEFAULT_LIMITS, memory_total_mb: 0, processes: 0 }), { memory_mb: 0, processes: 0, cpu_weight: 100, cpu_max_percent: 100 });
});

test("the packages bound for the isolate host: isolated-vm, msgpackr and what they load, nothing else", async (t) => {
  const names = await Promise.all((await isolateHostPackages()).map(async (d) => (JSON.parse(await readFile(path.join(d, "package.json"), "utf8")) as { name: string }).name));
  t.log(names.join(", "));
  t.true(names.includes("isolated-vm"));
  t.true(names.includes("msgpackr"));
  t.true(names.includes("msgpackr-extract"), "msgpackr's native accelerator, which it loads when it can");
  for (const absent of ["prebuild-install", "tar-fs", "esbuild", "tsx", "classic-level", "valibot", "ava"]) t.false(names.includes(absent), absent);
});

// ---------------------------------------------------------------------------------------
// Cost

