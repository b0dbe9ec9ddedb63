// The native-module sandbox against a hostile program (test/fixtures/hostile/hostile.c, built
// here with cc): every attack runs for real inside the sandbox and must fail in the expected way.
// Needs root, bubblewrap and util-linux (CI installs bubblewrap).

import test from "ava";
import type { ExecutionContext } from "ava";
import { spawn } from "node:child_process";
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, rm, rmdir, stat, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
  chooseVariant, DEFAULT_SANDBOX_LIMITS, describeKernelLimits, describeSandboxes, detectCgroups, detectSandbox, plannedLevel, sandboxSpawnSpec, SandboxUnavailableError,
  type SandboxCapabilities, type SandboxedSpawn, type SandboxLimits, type SandboxMode,
} from "../runtime/sandbox/index.ts";
import {
  AUDIT_ARCH, DENIED_SYSCALLS, seccompProgram, SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO, SECCOMP_RET_KILL_PROCESS, SYSCALLS,
  type SeccompArch,
} from "../runtime/sandbox/seccomp.ts";
import { eventually, listen, processesOf } from "./helpers/procs.ts";
import { DEFAULT_CGROUP_LIMITS, moduleUid, MODULE_UID_BASE, MODULE_UID_RANGE } from "../runtime/sandbox/policy.ts";
import { UID_TABLE_FILE, UidTable } from "../runtime/sandbox/uids.ts";
import { createModuleCgroup, limitFiles, probeCgroupsWith, startTimeOf, type CgroupLimits } from "../runtime/sandbox/cgroup.ts";
import { compileHostile } from "./helpers/native.ts";

async function rmdirSafe(dir: string): Promise<void> {
  await rmdir(dir).catch(() => undefined);
}

/** Pids (host view) of the live processes of a uid. */
async function pidsOfUid(uid: number): Promise<number[]> {
  const out: number[] = [];
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
    if (new RegExp(`^Uid:\\s+${uid}\\s`, "m").test(status) && !/^State:\s+Z/m.test(status)) out.push(Number(pid));
  }
  return out;
}

const HOST = fileURLToPath(new URL("./fixtures/hostile/host.ts", import.meta.url));

interface World {
  /** Under /tmp: the full sandbox must cope with a data directory below its private /tmp. */
  base: string;
  /** Under /var/tmp: the degraded sandbox can only make /tmp private when nothing of the module is in it. */
  degradedBase: string;
  moduleDir: string;
  degradedModuleDir: string;
  /** A host file outside any data directory. */
  secret: string;
  /** A file in the host's /tmp. */
  tmpMarker: string;
  /** Another module's data directory, with a file in it. */
  sibling: string;
  degradedSibling: string;
}

let world: World;

async function compile(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await chmod(dir, 0o755);
  await compileHostile(path.join(dir, "hostile"));
}

test.before(async () => {
  const base = await mkdtemp(path.join(os.tmpdir(), "modhost-sandbox-test-"));
  const degradedBase = await mkdtemp("/var/tmp/modhost-sandbox-test-");
  for (const b of [base, degradedBase]) await chmod(b, 0o755);
  const moduleDir = path.join(base, "modules", "hostile");
  const degradedModuleDir = path.join(degradedBase, "modules", "hostile");
  await compile(moduleDir);
  await compile(degradedModuleDir);
  const secret = path.join(base, "secret.txt");
  await writeFile(secret, "host secret\n", { mode: 0o644 });
  const tmpMarker = path.join(os.tmpdir(), `modhost-marker-${process.pid}`);
  await writeFile(tmpMarker, "host tmp\n", { mode: 0o644 });
  const [sibling, degradedSibling] = [path.join(base, "data", "other"), path.join(degradedBase, "data", "other")];
  for (const dir of [sibling, degradedSibling]) {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await writeFile(path.join(dir, "secret"), "other module's\n", { mode: 0o600 });
    await chown(dir, 1_999_999_999, 1_999_999_999);
  }
  world = { base, degradedBase, moduleDir, degradedModuleDir, secret, tmpMarker, sibling, degradedSibling };
});

test.after.always(async () => {
  if (!world) return;
  await rm(world.base, { recursive: true, force: true });
  await rm(world.degradedBase, { recursive: true, force: true });
  await rm(world.tmpMarker, { force: true });
});

// Each run gets a uid of its own: runs are concurrent and RLIMIT_NPROC counts per uid.
let nextUid = 1_950_000_000 + (process.pid % 10_000) * 100;
let nextData = 0;

interface RunOptions {
  network?: boolean;
  limits?: Partial<SandboxLimits>;
  mode?: SandboxMode;
  /** Answer on fd 3: called with each chunk the module writes. */
  onChannel?: (chunk: Buffer, socket: Socket) => void;
  /** Called once the process is running (e.g. to kill it). */
  onSpawn?: (pid: number, uid: number, sandbox: SandboxedSpawn) => void | Promise<void>;
  /** Give the run a cgroup with these limits (over DEFAULT_CGROUP_LIMITS), as the host does. */
  cgroup?: Partial<CgroupLimits>;
  timeoutMs?: number;
}

interface Run {
  sandbox: SandboxedSpawn;
  /** Time sandboxSpawnSpec took. */
  buildMs: number;
  uid: number;
  dataDir: string;
  stdout: string;
  stderr: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  ms: number;
  /** attack name -> [outcome, detail] from the RESULT lines. */
  results: Map<string, [string, string]>;
  /** With a cgroup: its exitReason(), read after the exit and before release(). */
  cgroupReason?: string | null;
  /** With a cgroup: its directories existed until release() and are gone after. */
  cgroupDirs?: string[];
}

async function run(t: ExecutionContext, attack: string[], opts: RunOptions = {}): Promise<Run> {
  const degraded = opts.mode === "degraded";
  const moduleDir = degraded ? world.degradedModuleDir : world.moduleDir;
  const dataDir = path.join(degraded ? world.degradedBase : world.base, "data", `m${nextData++}`);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const uid = nextUid++;
  const binary = path.join(moduleDir, "hostile");
  const env = { PATH: "/usr/bin:/bin", MODULE_ID: "hostile", DATA_DIR: dataDir, MODHOST_FD: "3" };
  const building = performance.now();
  const sandbox = await sandboxSpawnSpec(
    { command: binary, args: attack, env, cwd: dataDir },
    {
      dataDir, moduleDir, binary, uid, gid: uid,
      network: opts.network ?? false,
      limits: { ...DEFAULT_SANDBOX_LIMITS, ...opts.limits },
      mode: opts.mode ?? "full",
      ...(opts.cgroup ? { cgroup: { name: "hostile", limits: { ...DEFAULT_CGROUP_LIMITS, ...opts.cgroup } } } : {}),
    },
  );
  const buildMs = performance.now() - building;
  const { spec } = sandbox;
  const started = performance.now();
  // As spawnModuleProcess does it.
  const child = spawn(spec.command, spec.args, { cwd: spec.cwd, env: spec.env, stdio: ["ignore", "pipe", "pipe", "pipe"], detached: true });
  const channel = child.stdio[3] as Socket;
  channel.on("data", (chunk) => opts.onChannel?.(chunk, channel));
  channel.on("error", () => undefined);
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  // onSpawn runs beside the process; its failure is the test's, awaited once the process ended.
  const pid = child.pid;
  const spawned = pid === undefined ? undefined : Promise.resolve().then(() => opts.onSpawn?.(pid, uid, sandbox));
  spawned?.catch(() => undefined); // handled below
  const timeoutMs = opts.timeoutMs ?? 20_000;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, timeoutMs);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on("close", (c, s) => resolve([c, s])));
  clearTimeout(timer);
  await spawned?.catch((err: Error) => {
    throw timedOut ? new Error(`the run was killed at its ${timeoutMs} ms timeout (timeoutMs) while onSpawn still ran, which then failed: ${err.message}`) : err;
  });
  const ms = performance.now() - started;
  const cgroupReason = await sandbox.cgroup?.exitReason();
  await sandbox.release();
  const results = new Map<string, [string, string]>();
  for (const line of stdout.split("\n")) {
    const m = /^RESULT (\S+) (\S+) (.*)$/.exec(line);
    if (m) results.set(m[1]!, [m[2]!, m[3]!]);
  }
  if (stderr) t.log(`stderr: ${stderr.trim()}`);
  return { sandbox, buildMs, uid, dataDir, stdout, stderr, code, signal, ms, results, cgroupReason, cgroupDirs: sandbox.cgroup?.dirs };
}

function outcome(r: Run, attack: string): string | undefined {
  return r.results.get(attack)?.[0];
}

function detail(r: Run, attack: string): string | undefined {
  return r.results.get(attack)?.[1];
}

// ---------------------------------------------------------------------------------------
// Detection

test.serial("this machine has the full sandbox", async (t) => {
  const caps = await detectSandbox();
  t.log(JSON.stringify(caps));
  t.is(caps.best, "full", caps.problems.join("; "));
  t.is(await detectSandbox(), caps, "cached");
});

test("a run reports level full and no notes", async (t) => {
  const r = await run(t, ["ids"]);
  t.is(r.sandbox.level, "full");
  t.deepEqual(r.sandbox.notes, []);
  t.is(r.code, 0);
});

// ---------------------------------------------------------------------------------------
// Identity, environment, file descriptors

test("runs as its own non-root uid with no capabilities, no_new_privs, seccomp, PID 2", async (t) => {
  const r = await run(t, ["ids"]);
  t.regex(r.stdout, new RegExp(`STATUS Uid:\\s+${r.uid}\\s+${r.uid}\\s+${r.uid}\\s+${r.uid}\\n`));
  t.regex(r.stdout, new RegExp(`STATUS Gid:\\s+${r.uid}\\s+${r.uid}\\s+${r.uid}\\s+${r.uid}\\n`));
  for (const set of ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]) t.regex(r.stdout, new RegExp(`STATUS ${set}:\\s+0000000000000000\\n`));
  t.regex(r.stdout, /STATUS NoNewPrivs:\s+1\n/);
  t.regex(r.stdout, /STATUS Seccomp:\s+2\n/, "seccomp filter mode");
  t.regex(r.stdout, /^PID 2$/m, "its own PID namespace (bwrap's init is 1)");
});

test("the environment is exactly the spec's (plus PWD = the data directory)", async (t) => {
  process.env["MODHOST_TEST_SECRET"] = "leak";
  const r = await run(t, ["env"]);
  const env = Object.fromEntries(r.stdout.split("\n").filter((l) => l.startsWith("ENV ")).map((l) => {
    const kv = l.slice(4);
    return [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)];
  }));
  t.deepEqual(env, { PATH: "/usr/bin:/bin", MODULE_ID: "hostile", DATA_DIR: r.dataDir, MODHOST_FD: "3", PWD: r.dataDir });
});

test("only fds 0-3 reach the module (no seccomp fd, nothing the host inherited)", async (t) => {
  const r = await run(t, ["fds"]);
  const fds = r.stdout.split("\n").filter((l) => l.startsWith("FD ")).map((l) => Number(l.slice(3))).sort((a, b) => a - b);
  t.deepEqual(fds, [0, 1, 2, 3]);
});

test("the fd 3 channel works both ways", async (t) => {
  let received = "";
  const r = await run(t, ["channel"], {
    onChannel: (chunk, socket) => {
      received += chunk.toString();
      socket.write("hello from the host");
    },
  });
  t.is(received, "hello from the sandbox");
  t.deepEqual(r.results.get("channel"), ["ok", "hello from the host"]);
});

// ---------------------------------------------------------------------------------------
// File system

test("host files outside the data directory are invisible", async (t) => {
  for (const file of [world.secret, "/etc/shadow", "/etc/passwd", "/root", path.join(world.sibling, "secret")]) {
    const r = await run(t, ["read", file]);
    t.is(outcome(r, "read"), "ENOENT", file);
  }
});

test("the system is visible read-only, the module directory too", async (t) => {
  t.is(outcome(await run(t, ["read", "/etc/ld.so.cache"]), "read"), "ok");
  t.is(outcome(await run(t, ["read", "/usr/bin/true"]), "read"), "ok");
  t.is(outcome(await run(t, ["write", "/usr/pwned"]), "write"), "EROFS");
  t.is(outcome(await run(t, ["write", "/etc/pwned"]), "write"), "EACCES", "/etc is bubblewrap's directory on the root tmpfs, owned by root");
  t.is(outcome(await run(t, ["write", path.join(world.moduleDir, "pwned")]), "write"), "EROFS");
  t.is(outcome(await run(t, ["write", "/pwned"]), "write"), "EACCES");
  t.false(await stat("/usr/pwned").then(() => true, () => false));
});

test("the data directory is writable and the file belongs to the module's uid", async (t) => {
  const r = await run(t, ["write", "inside.txt"]);
  t.is(outcome(r, "write"), "ok");
  const st = await stat(path.join(r.dataDir, "inside.txt"));
  t.is(st.uid, r.uid);
  t.is((await stat(r.dataDir)).mode & 0o777, 0o700);
});

test("/tmp is private: the host's /tmp is not visible and writes do not reach it", async (t) => {
  t.is(outcome(await run(t, ["read", world.tmpMarker]), "read"), "ENOENT");
  const name = `/tmp/modhost-sandbox-wrote-${process.pid}`;
  t.is(outcome(await run(t, ["write", name]), "write"), "ok", "a private tmpfs");
  t.false(await stat(name).then(() => true, () => false));
});

test("file size limit", async (t) => {
  const r = await run(t, ["bigfile", "big", "4"], { limits: { file_size_mb: 1 } });
  t.is(outcome(r, "bigfile"), "EFBIG");
  t.is((await stat(path.join(r.dataDir, "big"))).size, 1024 * 1024);
});

// ---------------------------------------------------------------------------------------
// Network

test("no network: TCP to the host's loopback fails (socket(AF_INET) is denied)", async (t) => {
  const { server, port } = await listen();
  t.teardown(() => server.close());
  const r = await run(t, ["connect", "127.0.0.1", String(port)]);
  t.deepEqual(r.results.get("connect"), ["EPERM", "socket"]);
});

test("with network_access: TCP to the host's loopback works", async (t) => {
  const { server, port } = await listen();
  t.teardown(() => server.close());
  const r = await run(t, ["connect", "127.0.0.1", String(port)], { network: true });
  t.deepEqual(r.results.get("connect"), ["ok", "connect"]);
  t.true(r.sandbox.notes.some((n) => n.includes("network_access")));
});

test("raw, packet and netlink sockets are denied, with or without network; Unix sockets only without network", async (t) => {
  for (const network of [false, true]) {
    const r = await run(t, ["rawsock"], { network });
    t.is(outcome(r, "rawsock-packet"), "EPERM");
    t.is(outcome(r, "rawsock-inet"), "EPERM");
    t.is(outcome(r, "rawsock-netlink"), "EPERM");
    t.is(outcome(r, "unix-socket"), network ? "EPERM" : "ok");
  }
});

test("attack: connecting to an abstract Unix socket of the host's network namespace (no file: no permission stands in the way) fails with network_access (socket(AF_UNIX) is denied) and without it (its own namespace has none)", async (t) => {
  // Before: with network_access the module shared the host's namespace and socket(AF_UNIX) was allowed: "ok connect", accepted.
  const name = `modhost-sandbox-test-${process.pid}-${Date.now()}`;
  let accepted = 0;
  const server = createServer((c) => {
    accepted++;
    c.destroy();
  });
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(`\0${name}`, () => resolve()));
  t.teardown(() => server.close());
  const withNetwork = await run(t, ["abstract", name], { network: true });
  t.deepEqual(withNetwork.results.get("abstract"), ["EPERM", "socket"]);
  const without = await run(t, ["abstract", name]);
  t.deepEqual(without.results.get("abstract"), ["ECONNREFUSED", "connect"]);
  t.is(accepted, 0, "the host's abstract socket was never reached");
});

// ---------------------------------------------------------------------------------------
// Processes and privileges

test("ptrace of the host is denied and the host's PIDs do not exist", async (t) => {
  for (const pid of [process.pid, process.ppid]) {
    t.is(outcome(await run(t, ["ptrace", String(pid)]), "ptrace"), "EPERM");
    t.is(outcome(await run(t, ["kill", String(pid)]), "kill"), "ESRCH");
  }
});

test("setting the clock is denied", async (t) => {
  const r = await run(t, ["clock"]);
  t.is(outcome(r, "clock_settime"), "EPERM");
  t.is(outcome(r, "settimeofday"), "EPERM");
});

test("mount, namespaces, bpf, keyrings, chroot, io_uring, reboot are denied", async (t) => {
  const r = await run(t, ["privileged"]);
  for (const call of ["mount", "umount2", "unshare-user", "unshare-net", "clone-newuser", "bpf", "keyctl", "add_key", "chroot", "io_uring_setup", "reboot"]) {
    t.is(outcome(r, call), "EPERM", call);
  }
  t.is(outcome(r, "clone3"), "ENOSYS", "so that libc falls back to clone()");
});

test("a fork bomb stops at the processes limit; the host is fine", async (t) => {
  const r = await run(t, ["forkbomb", "10000"], { limits: { processes: 16 } });
  const got = Number(detail(r, "forkbomb"));
  t.log(`fork bomb with processes = 16: ${got} children, then ${outcome(r, "forkbomb")}`);
  t.is(outcome(r, "forkbomb"), "EAGAIN");
  t.true(got >= 10 && got <= 16, `${got} children`);
  t.is(await processesOf(r.uid), 0, "all gone");
  const ok = await new Promise<number | null>((resolve) => spawn("/bin/true").on("exit", resolve));
  t.is(ok, 0, "the host can still spawn");
});

test("memory beyond address_space_mb fails", async (t) => {
  const r = await run(t, ["memory", "1024"], { limits: { address_space_mb: 256 } });
  t.is(outcome(r, "memory"), "ENOMEM");
  const got = Number(detail(r, "memory"));
  t.log(`allocated ${got} MB of 1024 with address_space_mb = 256`);
  t.true(got > 100 && got < 256, `${got} MB`);
});

test("open files are limited", async (t) => {
  const r = await run(t, ["openfiles", "1000"], { limits: { open_files: 64 } });
  t.is(outcome(r, "openfiles"), "EMFILE");
  t.true(Number(detail(r, "openfiles")) <= 64);
});

test("a CPU spin is ended by cpu_seconds", async (t) => {
  const r = await run(t, ["spin"], { limits: { cpu_seconds: 1 } });
  t.log(`spin with cpu_seconds = 1 ended after ${r.ms.toFixed(0)} ms, exit code ${r.code}`);
  t.regex(r.stdout, /SPINNING/);
  t.true(r.code === 128 + os.constants.signals.SIGXCPU || r.code === 128 + os.constants.signals.SIGKILL, `exit ${r.code} ${r.signal}`);
  t.true(r.ms < 10_000, "CPU seconds, not wall time: a loaded machine stretches it");
});

test("killing the sandbox's process ends every process of the module", async (t) => {
  const r = await run(t, ["hang"], {
    timeoutMs: 60_000, // the kill is onSpawn's; this is only the backstop
    onSpawn: async (pid, uid) => {
      t.true(await eventually(async () => (await processesOf(uid)) === 2, 30_000), "the module and its child run");
      process.kill(pid, "SIGTERM");
    },
  });
  t.is(outcome(r, "hang"), "ok");
  t.log(`after SIGTERM: exit code ${r.code}, signal ${r.signal}`);
  t.true(await eventually(async () => (await processesOf(r.uid)) === 0, 2000));
});

// ---------------------------------------------------------------------------------------
// The module's cgroup (cgroup.ts): memory, tasks and CPU of all its processes together

const MB = 1024 * 1024;
const cgroupsHere = async () => (await detectCgroups()).kind !== "none";

function lastProgress(r: Run, attack: string): number {
  const all = [...r.stdout.matchAll(new RegExp(`^PROGRESS ${attack} (\\d+)$`, "gm"))].map((m) => Number(m[1]));
  return all.at(-1) ?? 0;
}

test("this machine gives each module a cgroup with memory, pids and cpu", async (t) => {
  const cg = await detectCgroups();
  t.log(describeKernelLimits(cg));
  t.not(cg.kind, "none", cg.problems.join("; "));
  t.truthy(cg.hostDirs.memory);
  t.truthy(cg.hostDirs.pids);
  t.truthy(cg.hostDirs.cpu);
  const caps = await detectSandbox();
  t.regex(describeSandboxes({ native: "auto", isolate: "auto" }, caps).text, /kernel limits per module: cgroup v[12] memory\+pids\+cpu/);
});

test("every process of the module is in its cgroup, with its limits; the cgroup is gone after release", async (t) => {
  if (!(await cgroupsHere())) return t.fail("no cgroups on this machine");
  let inside: boolean[] = [];
  let limits: string[] = [];
  const r = await run(t, ["hang"], {
    cgroup: { memory_mb: 96, processes: 20, cpu_weight: 50, cpu_max_percent: 30 },
    timeoutMs: 60_000, // the kill is onSpawn's; this is only the backstop
    onSpawn: async (pid, uid, sandbox) => {
      t.true(await eventually(async () => (await processesOf(uid)) === 2, 30_000), "the module and its child run");
      const cg = sandbox.cgroup!;
      const members = new Set<number>();
      for (const d of cg.dirs) for (const l of (await readFile(path.join(d, "cgroup.procs"), "utf8")).split("\n")) if (l) members.add(Number(l));
      const ofUid = await pidsOfUid(uid);
      inside = [members.has(pid), ...ofUid.map((p) => members.has(p))];
      const read = (file: string) => readFile(path.join(cg.dirs.find((d) => existsSync(path.join(d, file)))!, file), "utf8").then((x) => x.trim());
      limits = cg.kind === "v1"
        ? [await read("memory.limit_in_bytes"), await read("pids.max"), await read("cpu.shares"), await read("cpu.cfs_quota_us")]
        : [await read("memory.max"), await read("pids.max"), await read("cpu.weight"), await read("cpu.max")];
      process.kill(pid, "SIGKILL");
    },
  });
  t.is(outcome(r, "hang"), "ok");
  t.true(inside.length === 3 && inside.every(Boolean), `launcher and both module processes in the cgroup: ${inside}`);
  if (r.sandbox.cgroup!.kind === "v1") t.deepEqual(limits, [String(96 * MB), "20", "512", "30000"]);
  else t.deepEqual(limits, [String(96 * MB), "20", "50", "30000 100000"]);
  t.is(r.sandbox.level, "full");
  for (const d of r.cgroupDirs!) t.false(existsSync(d), `${d} removed`);
});

test("memfd hoarding (shared memory, not address space) is stopped at the module's memory limit", async (t) => {
  // RLIMIT_AS does not count a memfd's pages: without the cgroup this holds 768 MB.
  const r = await run(t, ["memfd", "768"], { cgroup: { memory_mb: 128 } });
  const got = lastProgress(r, "memfd");
  t.log(`memfd hoard with memory_total_mb = 128: got to ${got} MB, then exit ${r.code} ${r.signal}; ${r.cgroupReason}`);
  t.is(outcome(r, "memfd"), undefined, "it never finished");
  t.true(got < 128, `${got} MB`);
  t.regex(r.cgroupReason ?? "", /memory limit.*memory_total_mb = 128/);
  t.true(await eventually(async () => (await processesOf(r.uid)) === 0, 3000), "nothing of it left");
});

test("many processes each allocating are stopped together at the module's memory limit", async (t) => {
  // 8 x 48 MB: each far below address_space_mb, together three times memory_total_mb.
  const r = await run(t, ["children", "8", "48"], { cgroup: { memory_mb: 128 } });
  const d = Object.fromEntries((detail(r, "children") ?? "").split(",").map((kv) => kv.split("=")).map(([k, v]) => [k, Number(v)]));
  t.log(`8 children x 48 MB with memory_total_mb = 128: ${detail(r, "children")}; ${r.cgroupReason}`);
  t.is(d.started, 8);
  t.true(d.killed! >= 1, "the kernel killed some");
  t.true(d.held! * 48 < 128, `${d.held} held their 48 MB`);
  t.regex(r.cgroupReason ?? "", /killed \d+ of its processes at its memory limit/);
});

test("a fork bomb stops at the cgroup's task limit even without RLIMIT_NPROC", async (t) => {
  const r = await run(t, ["forkbomb", "10000"], { limits: { processes: 0 }, cgroup: { processes: 16 } });
  const got = Number(detail(r, "forkbomb"));
  t.log(`fork bomb with pids.max = 16 and no RLIMIT_NPROC: ${got} children, then ${outcome(r, "forkbomb")}`);
  t.is(outcome(r, "forkbomb"), "EAGAIN");
  t.true(got >= 8 && got < 16, `${got} children (the launcher chain and the module count too)`);
  t.regex(r.cgroupReason ?? "", /refused at its limit of 16 \(processes/);
  t.is(await processesOf(r.uid), 0, "all gone");
});

test("cgroup v2: a module's limits are written as memory.max, memory.swap.max, pids.max, cpu.weight, cpu.max", async (t) => {
  // A fake cgroup2 tree (plain files), for the writes only: this machine's cgroups may be v1.
  const root = await mkdtemp(path.join(os.tmpdir(), "modhost-cgroup2-"));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  await writeFile(path.join(root, "cgroup.controllers"), "cpuset cpu io memory pids\n");
  await writeFile(path.join(root, "cgroup.subtree_control"), "");
  const support = await probeCgroupsWith({
    root: true, pid: 4242, pidNs: "1", startTime: "77",
    mountInfo: `30 20 0:26 / ${root} rw,nosuid - cgroup2 cgroup2 rw\n`,
    procCgroup: "0::/\n",
  });
  t.is(support.kind, "v2", support.problems.join("; "));
  t.is(support.description, "cgroup v2 memory+pids+cpu");
  t.is(await readFile(path.join(root, "cgroup.subtree_control"), "utf8"), "+memory +pids +cpu");
  t.is(await readFile(path.join(root, "modhost-1-4242-77", "cgroup.subtree_control"), "utf8"), "+memory +pids +cpu", "and for the module cgroups below");
  t.deepEqual(limitFiles("v2", { memory_mb: 300, processes: 50, cpu_weight: 200, cpu_max_percent: 150 }, true), [
    ["memory", "memory.max", String(300 * MB)], ["memory", "memory.swap.max", "0"], ["pids", "pids.max", "50"],
    ["cpu", "cpu.weight", "200"], ["cpu", "cpu.max", "150000 100000"],
  ]);
  t.deepEqual(limitFiles("v1", { memory_mb: 300, processes: 0, cpu_weight: 200, cpu_max_percent: 0 }, true), [
    ["memory", "memory.limit_in_bytes", String(300 * MB)], ["memory", "memory.memsw.limit_in_bytes", String(300 * MB)],
    ["cpu", "cpu.shares", "2048"],
  ]);
  const cg = await createModuleCgroup(support, "price-feed", { memory_mb: 300, processes: 50, cpu_weight: 200, cpu_max_percent: 150 });
  t.deepEqual(cg.dirs, [path.join(root, "modhost-1-4242-77", cg.dirs[0]!.split("/").at(-1)!)]);
  t.regex(cg.dirs[0]!, /\/price-feed-\d+$/);
  t.is(await readFile(path.join(cg.dirs[0]!, "memory.max"), "utf8"), String(300 * MB));
  t.is(await readFile(path.join(cg.dirs[0]!, "cpu.max"), "utf8"), "150000 100000");
});

test("cgroup probing: not root gives none (rlimits only), and the level says degraded", async (t) => {
  const support = await probeCgroupsWith({ root: false, pid: 1, pidNs: "1", startTime: "1", mountInfo: "", procCgroup: "" });
  t.is(support.kind, "none");
  t.regex(describeKernelLimits(support), /none, rlimits per process only \(the host is not root/);
  const caps: SandboxCapabilities = {
    root: true, arch: "x86_64", seccomp: true, tools: {} as SandboxCapabilities["tools"], bwrapWorks: true, unshareWorks: true,
    best: "full", fallback: true, problems: [], cgroups: support,
  };
  t.is(plannedLevel("auto", caps), "degraded");
  t.is(plannedLevel("full", caps), "refused");
  t.is(plannedLevel("auto", { ...caps, cgroups: { ...support, kind: "v1", description: "cgroup v1 memory+pids+cpu" } }), "full");
});

test("the cgroups of a host that died are removed by the next host", async (t) => {
  const cg = await detectCgroups();
  if (cg.kind === "none") return t.fail("no cgroups on this machine");
  // A pid that is certainly dead: a process that ran and was reaped.
  const dead = await new Promise<number>((resolve) => { const p = spawn("/bin/true"); p.on("exit", () => resolve(p.pid!)); });
  const ns = /modhost-(\d+)-\d+-\d+$/.exec(cg.hostDirs.memory!)![1]!;
  const stale = [...new Set(Object.values(cg.hostDirs))].map((d) => path.join(path.dirname(d), `modhost-${ns}-${dead}`));
  for (const d of stale) await mkdir(path.join(d, "left-over-1"), { recursive: true });
  const otherNs = path.join(path.dirname(cg.hostDirs.memory!), `modhost-1-${dead}`);
  await mkdir(otherNs);
  t.teardown(() => rmdirSafe(otherNs));
  await probeCgroupsWith({
    root: true, pid: process.pid, pidNs: ns, startTime: (await startTimeOf(process.pid))!,
    mountInfo: await readFile("/proc/self/mountinfo", "utf8"), procCgroup: await readFile("/proc/self/cgroup", "utf8"),
  });
  for (const d of stale) t.false(existsSync(d), `${d} removed`);
  t.true(existsSync(otherNs), "another PID namespace's directory is left alone (its pids mean nothing here)");
});

for (const mode of ["full", "degraded"] as const) {
  test(`${mode}: no module outlives its host (host killed with SIGKILL)`, async (t) => {
    const base = mode === "degraded" ? world.degradedBase : world.base;
    const moduleDir = mode === "degraded" ? world.degradedModuleDir : world.moduleDir;
    const dataDir = path.join(base, "data", `m${nextData++}`);
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    const uid = nextUid++;
    const host = spawn(process.execPath, ["--import", "tsx", HOST, mode, moduleDir, dataDir, String(uid)], { stdio: ["ignore", "pipe", "inherit"] });
    t.teardown(() => host.kill("SIGKILL"));
    await new Promise<void>((resolve, reject) => {
      let out = "";
      host.stdout!.on("data", (d) => {
        out += d;
        if (out.includes("RESULT hang ok")) resolve();
      });
      host.on("exit", () => reject(new Error(`host exited: ${out}`)));
    });
    await eventually(async () => (await processesOf(uid)) === 2, 2000);
    t.is(await processesOf(uid), 2, "the module and its child run");
    host.kill("SIGKILL");
    t.true(await eventually(async () => (await processesOf(uid)) === 0, 3000), "gone after the host died");
  });
}

// ---------------------------------------------------------------------------------------
// Degraded (util-linux) and none

test("degraded: util-linux fallback, reported as such, and what it still blocks", async (t) => {
  const { server, port } = await listen();
  t.teardown(() => server.close());
  const ids = await run(t, ["ids"], { mode: "degraded" });
  t.is(ids.sandbox.level, "degraded");
  t.true(ids.sandbox.notes.some((n) => n.includes("no seccomp")));
  t.regex(ids.stdout, new RegExp(`STATUS Uid:\\s+${ids.uid}\\s`));
  t.regex(ids.stdout, /STATUS CapEff:\s+0000000000000000\n/);
  t.regex(ids.stdout, /STATUS CapBnd:\s+0000000000000000\n/);
  t.regex(ids.stdout, /STATUS NoNewPrivs:\s+1\n/);
  t.regex(ids.stdout, /^PID 1$/m, "its own PID namespace");
  const o = async (attack: string[], name = attack[0]!, opts: RunOptions = {}) => outcome(await run(t, attack, { mode: "degraded", ...opts }), name);
  t.is(await o(["read", world.tmpMarker]), "ENOENT", "private /tmp");
  t.is(await o(["read", "/etc/shadow"]), "EACCES", "file permissions only");
  t.is(await o(["read", path.join(world.degradedSibling, "secret")]), "EACCES", "another module's data (0700, its own uid)");
  t.is(await o(["write", "/usr/pwned"]), "EACCES");
  t.is(await o(["connect", "127.0.0.1", String(port)]), "ENETUNREACH", "empty network namespace");
  t.is(await o(["connect", "127.0.0.1", String(port)], "connect", { network: true }), "ok");
  t.is(await o(["kill", String(process.pid)]), "ESRCH");
  t.is(await o(["ptrace", String(process.pid)]), "ESRCH");
  t.is(await o(["clock"], "clock_settime"), "EPERM");
  const priv = await run(t, ["privileged"], { mode: "degraded" });
  t.is(outcome(priv, "mount"), "EPERM", "no capabilities");
  t.is(outcome(priv, "reboot"), "EPERM");
  t.log(`degraded, without seccomp: ${[...priv.results].map(([k, [v]]) => `${k} ${v}`).join(", ")}`);
  t.is(await o(["rawsock"], "rawsock-packet"), "EPERM");
  const env = await run(t, ["env"], { mode: "degraded" });
  t.false(env.stdout.includes("MODHOST_TEST_SECRET"));
  t.deepEqual(env.stdout.split("\n").filter((l) => l.startsWith("ENV ")).map((l) => l.slice(4, l.indexOf("="))).sort(),
    ["DATA_DIR", "MODHOST_FD", "MODULE_ID", "PATH", "PWD"]);
  const bomb = await run(t, ["forkbomb", "10000"], { mode: "degraded", limits: { processes: 16 } });
  t.is(outcome(bomb, "forkbomb"), "EAGAIN");
  t.true(Number(detail(bomb, "forkbomb")) <= 16);
  let received = "";
  const ch = await run(t, ["channel"], { mode: "degraded", onChannel: (c, s) => { received += c; s.write("pong"); } });
  t.is(received, "hello from the sandbox");
  t.deepEqual(ch.results.get("channel"), ["ok", "pong"]);
  const fds = await run(t, ["fds"], { mode: "degraded" });
  t.deepEqual(fds.stdout.split("\n").filter((l) => l.startsWith("FD ")).map((l) => Number(l.slice(3))).sort(), [0, 1, 2, 3]);
});

test("degraded: SIGKILL ends every process of the module (SIGTERM does not: unshare blocks it)", async (t) => {
  const r = await run(t, ["hang"], {
    mode: "degraded",
    timeoutMs: 60_000, // the kill is onSpawn's; this is only the backstop
    onSpawn: async (pid, uid) => {
      t.true(await eventually(async () => (await processesOf(uid)) === 2, 30_000), "the module and its child run");
      process.kill(pid, "SIGTERM");
      await new Promise((res) => setTimeout(res, 300));
      t.is(await processesOf(uid), 2, "SIGTERM changed nothing");
      process.kill(pid, "SIGKILL");
    },
  });
  t.is(outcome(r, "hang"), "ok");
  t.is(r.signal, "SIGKILL");
  t.true(await eventually(async () => (await processesOf(r.uid)) === 0, 2000));
});

test("mode off: the spec is returned unwrapped, level none, tied to the spawner (nothing else would kill it with the spawner)", async (t) => {
  const spec = { command: "/x/bin", args: ["a"], env: { A: "1" }, cwd: "/x" };
  const r = await sandboxSpawnSpec(spec, {
    dataDir: "/x", moduleDir: "/x", binary: "/x/bin", network: false, limits: DEFAULT_SANDBOX_LIMITS, uid: 5, gid: 5, mode: "off",
  });
  t.is(r.level, "none");
  t.deepEqual(r.spec, { ...spec, tieToSpawner: true });
});

test("choosing: none available refuses (pointing at the opt-out); full refuses when only degraded exists", (t) => {
  const caps = (over: Partial<SandboxCapabilities>): SandboxCapabilities => ({
    root: true, arch: "x86_64", seccomp: true, tools: {} as SandboxCapabilities["tools"], bwrapWorks: false, unshareWorks: false,
    best: "none", fallback: false, problems: ["bubblewrap is not installed"], ...over,
  });
  const policy = (mode: SandboxMode) => ({ dataDir: "/d", moduleDir: "/m", binary: "/m/b", network: false, limits: DEFAULT_SANDBOX_LIMITS, uid: 7, gid: 7, mode });
  const err = t.throws(() => chooseVariant(policy("auto"), caps({})), { instanceOf: SandboxUnavailableError });
  t.regex(err!.message, /native_sandbox = "off"/);
  t.throws(() => chooseVariant(policy("full"), caps({ best: "degraded", fallback: true })), { instanceOf: SandboxUnavailableError });
  t.is(chooseVariant(policy("auto"), caps({ best: "degraded", fallback: true })), "util-linux");
  t.is(chooseVariant(policy("auto"), caps({ best: "full", fallback: true, bwrapWorks: true })), "bwrap");
  t.is(chooseVariant(policy("degraded"), caps({ best: "full", fallback: true, bwrapWorks: true })), "util-linux");
  t.is(chooseVariant(policy("auto"), caps({ root: false, best: "degraded", bwrapWorks: true })), "bwrap-unprivileged");
});

test("the binary must be executable by the module's uid", async (t) => {
  const dir = path.join(world.base, "modules", "private");
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFile(path.join(dir, "bin"), "", { mode: 0o700 });
  const dataDir = path.join(world.base, "data", "private");
  await mkdir(dataDir, { recursive: true });
  await t.throwsAsync(sandboxSpawnSpec({ command: path.join(dir, "bin"), args: [], env: {}, cwd: dataDir }, {
    dataDir, moduleDir: dir, binary: path.join(dir, "bin"), network: false, limits: DEFAULT_SANDBOX_LIMITS, uid: nextUid++, gid: 1, mode: "full",
  }), { message: /not executable/ });
});

test("module uids are stable, distinct per name and in their range", (t) => {
  t.is(moduleUid("price-feed"), moduleUid("price-feed"));
  t.not(moduleUid("price-feed"), moduleUid("block-stats"));
  for (const name of ["a", "price-feed", "x".repeat(64)]) {
    t.true(moduleUid(name) >= MODULE_UID_BASE && moduleUid(name) < MODULE_UID_BASE + MODULE_UID_RANGE);
  }
});

test("module uids come from a table: colliding names get distinct uids, stable across reopening", async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "modhost-uids-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, UID_TABLE_FILE);
  // "evil-mm7zi" hashes to the uid of "good" (found by brute force in about 15 s).
  t.is(moduleUid("evil-mm7zi"), moduleUid("good"));
  const table = await UidTable.open(file);
  const good = await table.uidFor("good");
  const evil = await table.uidFor("evil-mm7zi");
  t.not(evil, good);
  t.true(evil >= MODULE_UID_BASE && evil < MODULE_UID_BASE + MODULE_UID_RANGE);
  t.is(await table.uidFor("good"), good, "the same name, the same uid");
  // Many at once: all distinct.
  const names = Array.from({ length: 50 }, (_, i) => `m${i}`);
  const uids = await Promise.all(names.map((n) => table.uidFor(n)));
  t.is(new Set([...uids, good, evil]).size, 52);
  // Persisted (0600): another host on the same data directory gets the same answers, and the
  // order of first use no longer matters.
  t.is((await stat(file)).mode & 0o777, 0o600);
  const again = await UidTable.open(file);
  t.is(await again.uidFor("evil-mm7zi"), evil);
  t.is(await again.uidFor("good"), good);
  t.deepEqual(await Promise.all(names.map((n) => again.uidFor(n))), uids);
});

test("a damaged uid table is refused with what is wrong, never silently replaced", async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "modhost-uids-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, UID_TABLE_FILE);
  const uid = MODULE_UID_BASE + 5;
  await writeFile(file, JSON.stringify({ version: 1, uids: { a: uid, b: uid } }));
  await t.throwsAsync(UidTable.open(file), { message: /damaged \(b and a share uid \d+\): restore it from a backup/ });
  await writeFile(file, JSON.stringify({ version: 1, uids: { a: 0 } }));
  await t.throwsAsync(UidTable.open(file), { message: /a: 0 is not a module uid/ });
  await writeFile(file, "{ not json");
  await t.throwsAsync(UidTable.open(file), { message: /damaged/ });
  t.is(await readFile(file, "utf8"), "{ not json", "left as it was");
});

// ---------------------------------------------------------------------------------------
// The seccomp program, checked without the kernel: syscall numbers against the kernel
// headers, and decisions by a classic-BPF interpreter (which covers aarch64 on x86_64).

test("syscall numbers match the kernel headers", async (t) => {
  const headers: Record<SeccompArch, string> = {
    x86_64: "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
    aarch64: "/usr/include/asm-generic/unistd.h",
  };
  for (const arch of ["x86_64", "aarch64"] as const) {
    const text: string | undefined = await readFile(headers[arch], "utf8").catch(() => undefined);
    if (!text) {
      t.log(`no ${headers[arch]}: skipped`);
      continue;
    }
    const nr = (name: string) => {
      const m = new RegExp(`#define __NR(?:3264)?_${name}\\s+(\\d+)`).exec(text);
      return m ? Number(m[1]) : undefined;
    };
    const table = SYSCALLS[arch];
    for (const name of DENIED_SYSCALLS) t.is<number | undefined, number | undefined>(table.denied[name], nr(name), `${arch} ${name}`);
    for (const name of ["socket", "clone", "clone3"] as const) t.is<number | undefined, number | undefined>(table[name], nr(name), `${arch} ${name}`);
  }
});

/** Runs a classic BPF program (the opcodes seccomp.ts emits) over a seccomp_data. */
function runBpf(program: Buffer, data: { nr: number; arch: number; args?: number[] }): number {
  const mem = Buffer.alloc(64);
  mem.writeUInt32LE(data.nr >>> 0, 0);
  mem.writeUInt32LE(data.arch >>> 0, 4);
  (data.args ?? []).forEach((a, i) => { mem.writeUInt32LE(a >>> 0, 16 + 8 * i); });
  let acc = 0;
  for (let pc = 0; pc < program.length / 8; pc++) {
    const code = program.readUInt16LE(pc * 8);
    const jt = program.readUInt8(pc * 8 + 2);
    const jf = program.readUInt8(pc * 8 + 3);
    const k = program.readUInt32LE(pc * 8 + 4);
    switch (code) {
      case 0x20: acc = mem.readUInt32LE(k); break;
      case 0x05: pc += k; break;
      case 0x15: pc += acc === k ? jt : jf; break;
      case 0x35: pc += acc >= k ? jt : jf; break;
      case 0x45: pc += (acc & k) !== 0 ? jt : jf; break;
      case 0x06: return k;
      default: throw new Error(`unknown opcode ${code}`);
    }
  }
  throw new Error("fell off the end");
}

test("seccomp decisions on x86_64 and aarch64", (t) => {
  const EPERM = SECCOMP_RET_ERRNO | 1;
  const ENOSYS = SECCOMP_RET_ERRNO | 38;
  const reads = { x86_64: 0, aarch64: 63 };
  for (const network of [false, true]) {
    const p = seccompProgram({ network });
    t.is(p.length % 8, 0);
    for (const arch of ["x86_64", "aarch64"] as const) {
      const a = AUDIT_ARCH[arch];
      const s = SYSCALLS[arch];
      t.is(runBpf(p, { nr: reads[arch], arch: a }), SECCOMP_RET_ALLOW, `${arch} read`);
      for (const name of DENIED_SYSCALLS) t.is(runBpf(p, { nr: s.denied[name], arch: a }), EPERM, `${arch} ${name}`);
      t.is(runBpf(p, { nr: s.clone3, arch: a }), ENOSYS);
      t.is(runBpf(p, { nr: s.clone, arch: a, args: [17 /* SIGCHLD: fork */] }), SECCOMP_RET_ALLOW);
      t.is(runBpf(p, { nr: s.clone, arch: a, args: [0x003d0f00 /* pthread_create */] }), SECCOMP_RET_ALLOW);
      t.is(runBpf(p, { nr: s.clone, arch: a, args: [0x10000000 | 17 /* CLONE_NEWUSER */] }), EPERM);
      t.is(runBpf(p, { nr: s.socket, arch: a, args: [1] }), network ? EPERM : SECCOMP_RET_ALLOW, "AF_UNIX (with network: the host's abstract sockets)");
      t.is(runBpf(p, { nr: s.socket, arch: a, args: [2] }), network ? SECCOMP_RET_ALLOW : EPERM, "AF_INET");
      t.is(runBpf(p, { nr: s.socket, arch: a, args: [10] }), network ? SECCOMP_RET_ALLOW : EPERM, "AF_INET6");
      t.is(runBpf(p, { nr: s.socket, arch: a, args: [17] }), EPERM, "AF_PACKET");
      t.is(runBpf(p, { nr: s.socket, arch: a, args: [16] }), EPERM, "AF_NETLINK");
    }
    t.is(runBpf(p, { nr: 0x40000000, arch: AUDIT_ARCH.x86_64 }), SECCOMP_RET_KILL_PROCESS, "x32 ABI");
    t.is(runBpf(p, { nr: 3, arch: 0x40000003 /* i386 */ }), SECCOMP_RET_KILL_PROCESS, "foreign arch");
  }
});
