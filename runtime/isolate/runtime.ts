// The host side of the isolate runtime: compile the module, and start an isolate host (a
// child process running ./worker.ts) for it. The worker script is bundled once per host
// process with esbuild, so an isolate host starts as plain JavaScript.
//
// The isolate host runs in the same OS sandbox as a native module (runtime/sandbox), as
// defence in depth: code that escaped V8 and isolated-vm would hold only what that process
// holds. What it is given (sandboxedIsolateSpawnSpec): the system directories read-only (node
// is /usr/bin/node), the worker script, the packages it imports at run time (isolated-vm and
// msgpackr with their dependencies, nothing else of node_modules) and the module's compiled
// bundle, each read-only at its own path; the channel on fd 3; no network, no data directory
// (the host serves a TypeScript module's files, under its grants), the module's own uid.

import { createRequire } from "node:module";
import { createHash, randomBytes } from "node:crypto";
import { chmod, chown, lstat, mkdir, readFile, realpath, rename, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";
import { bootstrapDefine, buildBootstrap } from "./bootstrap.ts";
import { compileModule, type CompiledModule } from "./compile.ts";
import { isolateHostNatives, NATIVE_PACKAGES } from "./natives.ts";
import { METHODS } from "../../capabilities/families.ts";
import type { SpawnSpec } from "../process.ts";
import type { IsolateHostLimits, RuntimeManifest } from "../types.ts";
import {
  moduleUid, sandboxSpawnSpec, SYSTEM_DIRS,
  type CgroupLimits, type SandboxedSpawn, type SandboxLimits, type SandboxMode, type SandboxPolicy,
} from "../sandbox/index.ts";

const require = createRequire(import.meta.url);
const WORKER_SOURCE = fileURLToPath(new URL("./worker.ts", import.meta.url));

let workerPath: Promise<string> | undefined;

/** Defined (true) by scripts/build-dist.mjs in dist/modhost.mjs, which ships the worker prebuilt next to it. */
declare const __MODHOST_DIST__: boolean | undefined;

/** The isolate host script: prebuilt (dist/isolate-host.mjs) when running the built host, bundled here otherwise. */
async function workerCode(): Promise<string> {
  if (typeof __MODHOST_DIST__ !== "undefined" && __MODHOST_DIST__) {
    return readFile(new URL("./isolate-host.mjs", import.meta.url), "utf8");
  }
  const result = await esbuild.build({
    define: bootstrapDefine(await buildBootstrap()),
    entryPoints: [WORKER_SOURCE],
    bundle: true,
    write: false,
    format: "esm",
    platform: "node",
    target: "node24",
    logLevel: "silent",
    plugins: [isolateHostNatives(require)],
  });
  return result.outputFiles[0]!.text;
}

/**
 * The catalogue's shape as the isolate host needs it (method, js name, family, argument names),
 * as a declaration put at the top of the script: the isolate host then never imports the
 * capability implementations (worker.ts says why).
 */
function methodTable(): string {
  const table = [...METHODS.values()].map((m) => ({ name: m.name, js: m.js, family: m.family, args: [...m.args], ...(m.pages ? { pages: m.pages } : {}), ...(m.sdk ? { sdk: m.sdk } : {}) }));
  return `const __MODHOST_METHODS__ = ${JSON.stringify(table)};\n`;
}

/** Write the isolate host script where every module's uid can read it (once per process). */
export function isolateHostScript(): Promise<string> {
  workerPath ??= (async () => {
    const code = methodTable() + (await workerCode());
    const digest = createHash("sha256").update(code).digest("hex").slice(0, 16);
    // The script runs under every module's uid (in the sandbox): readable by all, and kept in
    // a directory that others may pass through (the util-linux sandbox sees the host's tree)
    // but not list or write. Its name is predictable, so a directory someone else made or can
    // write to is refused: they could have planted a script of their own.
    const dir = path.join(os.tmpdir(), `modhost-${process.getuid?.() ?? "user"}`);
    await mkdir(dir, { recursive: true, mode: 0o711 });
    const st = await lstat(dir);
    if (!st.isDirectory() || st.uid !== process.getuid?.() || (st.mode & 0o022) !== 0) {
      throw new Error(`${dir} is not a directory of this user that only it can write to: refusing to run isolate hosts from there`);
    }
    if ((st.mode & 0o777) !== 0o711) await chmod(dir, 0o711);
    const file = path.join(dir, `isolate-host-${digest}.mjs`);
    const existing = await lstat(file).catch(() => undefined);
    if (!existing?.isFile() || existing.size !== Buffer.byteLength(code)) {
      // Not named by pid: hosts in other PID namespaces share this directory, and their pids.
      const tmp = `${file}.${randomBytes(6).toString("hex")}.tmp`;
      await writeFile(tmp, code, { mode: 0o644 });
      await chmod(tmp, 0o644); // whatever the umask
      await rename(tmp, file);
    } else if ((existing.mode & 0o777) !== 0o644) {
      await chmod(file, 0o644); // written by an older modhost, 0600
    }
    return file;
  })();
  return workerPath;
}

let packageDirs: Promise<string[]> | undefined;

/** Dependencies that only install a package (isolated-vm downloads its prebuilt addon with
 * prebuild-install, which brings ~35 packages): never loaded at run time, so not bound. */
const INSTALL_ONLY = new Set(["prebuild-install"]);

/**
 * The package directories the worker script loads at run time: NATIVE_PACKAGES and, through
 * their dependencies and optional dependencies, whatever they load (msgpackr's native
 * accelerator msgpackr-extract, node-gyp-build-optional-packages, detect-libc and the
 * platform's prebuilt package). Real paths, as the script imports them. A dependency that is
 * not installed is left out (an optional one the package copes without).
 */
export function isolateHostPackages(): Promise<string[]> {
  packageDirs ??= (async () => {
    const dirs = new Set<string>();
    const visit = async (dir: string): Promise<void> => {
      if (dirs.has(dir)) return;
      dirs.add(dir);
      const pkg = JSON.parse(await readFile(path.join(dir, "package.json"), "utf8")) as { dependencies?: object; optionalDependencies?: object };
      for (const dep of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies })) {
        if (INSTALL_ONLY.has(dep)) continue;
        const found = await findPackage(dep, dir);
        if (found) await visit(found);
      }
    };
    for (const name of NATIVE_PACKAGES) {
      const root = await packageRoot(name, require.resolve(name));
      if (!root) throw new Error(`cannot find the directory of the ${name} package`);
      await visit(root);
    }
    return [...dirs].sort();
  })();
  return packageDirs;
}

async function readPackageName(dir: string): Promise<string | undefined> {
  try {
    return (JSON.parse(await readFile(path.join(dir, "package.json"), "utf8")) as { name?: string }).name;
  } catch {
    return undefined;
  }
}

/** The directory of package `name` that holds `file`. */
async function packageRoot(name: string, file: string): Promise<string | undefined> {
  for (let dir = path.dirname(file); dir !== path.dirname(dir); dir = path.dirname(dir)) {
    if ((await readPackageName(dir)) === name) return realpath(dir);
  }
  return undefined;
}

/** Package `name` as require() would find it from `from`: node_modules/<name> here or above. */
async function findPackage(name: string, from: string): Promise<string | undefined> {
  for (let dir = from; dir !== path.dirname(dir); dir = path.dirname(dir)) {
    if (path.basename(dir) === "node_modules") continue;
    const candidate = path.join(dir, "node_modules", name);
    if ((await readPackageName(candidate)) === name) return realpath(candidate);
  }
  return undefined;
}

/**
 * SYNC_CROSSINGS, the one switch of sync crossings: module code runs in synchronous crossings
 * on the isolate host's main thread (a call's answer reaches the module without a hand-over to
 * the isolate's thread), each bounded by a watchdog thread (sync-watchdog.ts). Read when an
 * isolate host is spawned: MODHOST_ISOLATE_SYNC=1 turns it on, 0 off; the default is below
 * (docs/performance-log.md, "Sync crossings", has the figures that chose it).
 */
export function syncCrossings(): boolean {
  const v = process.env.MODHOST_ISOLATE_SYNC;
  return v === undefined || v === "" ? SYNC_CROSSINGS_DEFAULT : v === "1";
}
const SYNC_CROSSINGS_DEFAULT = false;

/**
 * Whether this module's isolate host runs sync crossings. While a crossing runs, the isolate
 * host's main thread answers nothing (health, shutdown): the longest a crossing can hold it is
 * cpu_time_ms + 2 sampling periods + a 10 ms tick of CPU time (sync-watchdog.ts), and then the
 * process is ended. A module whose health_timeout_ms is not at least twice that (room for a
 * loaded machine, where CPU time lags the clock) keeps the asynchronous form, so a legitimate
 * long stretch is never taken for an unresponsive module. The defaults (1000 and 5000) qualify.
 * Not with the inspector (development), which needs the isolate's own thread.
 */
export function syncCrossingsFor(limits: Pick<IsolateHostLimits, "cpu_time_ms" | "health_timeout_ms" | "inspect">): boolean {
  if (!syncCrossings() || limits.inspect) return false;
  return limits.health_timeout_ms === undefined || limits.health_timeout_ms >= 2 * longestCrossingMs(limits.cpu_time_ms);
}
/** The most CPU time a synchronous crossing may take before the watchdog ends it (sync-watchdog.ts). */
export function longestCrossingMs(cpuTimeMs: number): number {
  return cpuTimeMs + 2 * watchdogSampleMs(cpuTimeMs) + 10;
}
/** How often the watchdogs look (worker.ts SAMPLE_MS, sync-watchdog.ts). */
function watchdogSampleMs(cpuTimeMs: number): number {
  return Math.min(100, Math.max(5, Math.floor(Math.max(10, cpuTimeMs) / 4)));
}

export async function compileForIsolate(manifest: RuntimeManifest): Promise<CompiledModule> {
  return compileModule(manifest.dir, manifest.entry_point);
}

/**
 * How to start the isolate host for `manifest`, given its compiled bundle on disk. The bare
 * form; sandboxedIsolateSpawnSpec wraps it in the sandbox. `dataDir`: the module's data
 * directory, as its working directory (and --data-dir, DATA_DIR); null for none (the
 * sandboxed form: the isolate host never uses it, the host serves the module's files), then
 * the working directory is /.
 */
export async function isolateSpawnSpec(manifest: RuntimeManifest, bundleFile: string, limits: IsolateHostLimits, dataDir: string | null): Promise<SpawnSpec> {
  const script = await isolateHostScript();
  return {
    command: process.execPath,
    args: [
      "--no-node-snapshot",
      // gc() for its size check: its own garbage goes before an idle isolate is blamed (worker.ts).
      "--expose-gc",
      // Room for the isolate's heap (its own limit is enforced inside) plus the host code.
      `--max-old-space-size=${limits.memory_mb + 96}`,
      script,
      "--module-id", manifest.name,
      "--module-version", manifest.version,
      ...(dataDir ? ["--data-dir", dataDir] : []),
      "--bundle", bundleFile,
      "--memory-mb", String(limits.memory_mb),
      "--cpu-time-ms", String(limits.cpu_time_ms),
      "--start-timeout-ms", String(limits.start_timeout_ms),
      "--handler-timeout-ms", String(limits.handler_timeout_ms),
      ...(limits.inspect ? ["--inspect"] : []),
      ...(syncCrossingsFor(limits) ? ["--sync-crossings"] : []),
    ],
    env: { PATH: "/usr/local/bin:/usr/bin:/bin", MODULE_ID: manifest.name, MODULE_NAME: manifest.name, ...(dataDir ? { DATA_DIR: dataDir } : {}) },
    cwd: dataDir ?? "/",
  };
}

/**
 * What an isolate host needs at least, whatever the operator's rlimits (measured with Node 20
 * and isolated-vm 5 under the sandbox, test/isolate-sandbox.test.ts; rechecked with Node 24 and
 * isolated-vm 7, where a 16 MB isolate filling its heap aborted in pthread_create (EAGAIN) at
 * 2096 MB and stopped cleanly at its limit from 3072 MB, so the base is 4096):
 *  - address space: V8 reserves ~1.6 GB of virtual memory up front (code range, heap) and
 *    does not start below ~1.5 GB (1440 MB failed, 1536 MB ran; "Failed to reserve virtual
 *    memory for CodeRange"); an isolate that fills its memory_mb needs more on top (memory_mb
 *    512 aborted at 2048 MB instead of stopping at its limit, ran at 2560; 1024 needed 3072).
 *    The isolate's heap is limited by memory_mb inside and --max-old-space-size outside; this
 *    is only the backstop.
 *  - threads: 12-13 (main, 4 libuv, 4 V8 platform, isolated-vm's, inspector's signal
 *    thread); RLIMIT_NPROC counts them all, per uid.
 *  - open files: about 25.
 *  - memory of the whole process (its cgroup, memory_total_mb): an idle isolate host is charged
 *    ~25 MB; one filling a 512 MB heap peaked at ~620 MB (Node 24, isolated-vm 7, cgroup v1,
 *    test/kernel-limits.test.ts and test/isolate-sandbox.test.ts), so 192 + 2 x memory_mb.
 * 0 (no limit) stays 0.
 */
export const ISOLATE_HOST_MIN = { addressSpaceBaseMb: 4096, addressSpacePerHeapMb: 3, processes: 64, openFiles: 128, memoryBaseMb: 192, memoryPerHeapMb: 2 } as const;

/** The rlimits of an isolate host: the operator's, raised to ISOLATE_HOST_MIN where lower. */
export function isolateHostLimits(limits: IsolateHostLimits): SandboxLimits {
  const atLeast = (value: number, min: number) => (value === 0 ? 0 : Math.max(value, min));
  return {
    address_space_mb: atLeast(limits.address_space_mb, ISOLATE_HOST_MIN.addressSpaceBaseMb + ISOLATE_HOST_MIN.addressSpacePerHeapMb * limits.memory_mb),
    open_files: atLeast(limits.open_files, ISOLATE_HOST_MIN.openFiles),
    processes: atLeast(limits.processes, ISOLATE_HOST_MIN.processes),
    cpu_seconds: limits.cpu_seconds,
    file_size_mb: limits.file_size_mb,
  };
}

export interface IsolateSandboxOptions {
  /** Default "auto" (config: [modules] sandbox). */
  mode?: SandboxMode;
  /** The host passes the uid its UidTable allocated. Default: moduleUid(manifest.name); the gid is the same number. */
  uid?: number;
  /** Give the isolate host a cgroup (isolateHostCgroupLimits); the host always does. Default false. */
  cgroup?: boolean;
}

/**
 * The cgroup limits of an isolate host: the operator's, with memory raised to what Node, V8 and
 * a full isolate heap need (ISOLATE_HOST_MIN: a base plus twice memory_mb, measured in
 * test/isolate-sandbox.test.ts) and tasks to ISOLATE_HOST_MIN.processes. 0 stays unlimited.
 */
export function isolateHostCgroupLimits(limits: IsolateHostLimits): CgroupLimits {
  const atLeast = (value: number, min: number) => (value === 0 ? 0 : Math.max(value, min));
  return {
    memory_mb: atLeast(limits.memory_total_mb, ISOLATE_HOST_MIN.memoryBaseMb + ISOLATE_HOST_MIN.memoryPerHeapMb * limits.memory_mb),
    processes: atLeast(limits.processes, ISOLATE_HOST_MIN.processes),
    cpu_weight: limits.cpu_weight,
    cpu_max_percent: limits.cpu_max_percent,
  };
}

/**
 * The isolate host's bare spec and the sandbox policy it runs under (sandboxedIsolateSpawnSpec
 * puts them together; tests run payloads of their own under the same policy). Hands the
 * bundle to the module's gid, read-only (root:gid 0440): its directory is the manager's.
 */
export async function isolateHostSandbox(
  manifest: RuntimeManifest,
  bundleFile: string,
  limits: IsolateHostLimits,
  opts: IsolateSandboxOptions = {},
): Promise<{ spec: SpawnSpec; policy: SandboxPolicy }> {
  const bundle = path.resolve(bundleFile);
  const spec = await isolateSpawnSpec(manifest, bundle, limits, null);
  const uid = opts.uid ?? moduleUid(manifest.name);
  const mode = opts.mode ?? "auto";
  if (mode !== "off" && process.getuid?.() === 0) {
    await chown(bundle, 0, uid);
    await chmod(bundle, 0o440);
  }
  const node = spec.command;
  const systemNode = SYSTEM_DIRS.some((d) => node.startsWith(`${d}/`));
  return {
    spec,
    policy: {
      dataDir: null,
      moduleDir: null,
      binary: node,
      readOnly: [...(systemNode ? [] : [node]), await isolateHostScript(), ...(await isolateHostPackages()), bundle],
      network: false,
      limits: isolateHostLimits(limits),
      uid,
      gid: uid,
      mode,
      allowNone: true,
      ...(opts.cgroup ? { cgroup: { name: manifest.name, limits: isolateHostCgroupLimits(limits) } } : {}),
    },
  };
}

/** isolateSpawnSpec inside the sandbox (see the top of this file): the level and notes say what it got. */
export async function sandboxedIsolateSpawnSpec(
  manifest: RuntimeManifest,
  bundleFile: string,
  limits: IsolateHostLimits,
  opts: IsolateSandboxOptions = {},
): Promise<SandboxedSpawn> {
  const { spec, policy } = await isolateHostSandbox(manifest, bundleFile, limits, opts);
  return sandboxSpawnSpec(spec, policy);
}

/**
 * What a pre-booted isolate host is started with, and so what a module must have to be handed
 * one (runtime/isolate/pool.ts): its sandbox mode, Node's heap size and its rlimits. Everything
 * else of a module's (name, bundle, isolate limits, cgroup) comes at hand-over.
 */
export interface PoolProfile {
  mode: SandboxMode;
  maxOldSpaceMb: number;
  /** The isolate's memory limit (memory_mb): a pool process builds its isolate with it before hand-over. */
  memoryMb: number;
  rlimits: SandboxLimits;
  /** The cgroup limits it waits under until hand-over (then it moves into its module's). */
  cgroup: CgroupLimits;
}

export function poolProfile(limits: IsolateHostLimits, mode: SandboxMode): PoolProfile {
  return { mode, maxOldSpaceMb: limits.memory_mb + 96, memoryMb: limits.memory_mb, rlimits: isolateHostLimits(limits), cgroup: isolateHostCgroupLimits(limits) };
}

/** Two modules with the same key can take each other's pooled isolate hosts (cgroup limits are set at hand-over). */
export function profileKey(p: PoolProfile): string {
  return JSON.stringify([p.mode, p.maxOldSpaceMb, p.memoryMb, p.rlimits]);
}

/**
 * A pre-booted isolate host: the worker script with --pool and nothing of any module (no name,
 * no bundle, no module environment), sandboxed as isolateHostSandbox does (same read-only
 * paths but the bundle, no network, no data directory, rlimits, seccomp) under `uid`, a
 * single-use uid (UidTable.freshUid), in a cgroup of its own until hand-over.
 */
export async function pooledIsolateSpawnSpec(profile: PoolProfile, uid: number): Promise<SandboxedSpawn> {
  const { spec, policy } = await pooledIsolateSandbox(profile, uid);
  return sandboxSpawnSpec(spec, policy);
}

/** pooledIsolateSpawnSpec's bare spec and sandbox policy (tests run payloads of their own under it). */
export async function pooledIsolateSandbox(profile: PoolProfile, uid: number): Promise<{ spec: SpawnSpec; policy: SandboxPolicy }> {
  const script = await isolateHostScript();
  const spec: SpawnSpec = {
    command: process.execPath,
    args: ["--no-node-snapshot", "--expose-gc", `--max-old-space-size=${profile.maxOldSpaceMb}`, script, "--pool", "--memory-mb", String(profile.memoryMb), ...(syncCrossings() ? ["--sync-crossings"] : [])],
    env: { PATH: "/usr/local/bin:/usr/bin:/bin" },
    cwd: "/",
  };
  const node = spec.command;
  const systemNode = SYSTEM_DIRS.some((d) => node.startsWith(`${d}/`));
  return { spec, policy: {
    dataDir: null,
    moduleDir: null,
    binary: node,
    readOnly: [...(systemNode ? [] : [node]), script, ...(await isolateHostPackages())],
    network: false,
    limits: profile.rlimits,
    uid,
    gid: uid,
    mode: profile.mode,
    allowNone: true,
    cgroup: { name: "isolate-pool", limits: profile.cgroup },
  } };
}

/** The hand-over a pooled isolate host reads before its hello (worker.ts), for `manifest`. */
export function handoverMessage(manifest: RuntimeManifest, bundleCode: string, limits: IsolateHostLimits): Record<string, unknown> {
  return {
    t: "handover",
    module: manifest.name,
    version: manifest.version,
    bundle: bundleCode,
    memory_mb: limits.memory_mb,
    cpu_time_ms: limits.cpu_time_ms,
    start_timeout_ms: limits.start_timeout_ms,
    handler_timeout_ms: limits.handler_timeout_ms,
    inspect: Boolean(limits.inspect),
    // The pool process runs the watchdog thread if the switch was on when it booted; this says
    // whether this module uses it.
    sync_crossings: syncCrossingsFor(limits),
  };
}
