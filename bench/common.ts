// What the benchmarks share: the result rows the runner prints, temp directories and child
// processes that are always cleaned up (also on Ctrl-C), a logger that keeps every record in
// memory instead of printing it, and the host configuration the module benchmarks run with.

import { spawn } from "node:child_process";
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { defaultConfig, type HostConfig, type Limits } from "../host/config.ts";
import { Logger, type LogRecord } from "../host/log.ts";
import type { ApiHub } from "../host/hub.ts";
import { parseDescriptor } from "../capabilities/grants.ts";
import type { Summary } from "./stats.ts";

export const ROOT = fileURLToPath(new URL("../", import.meta.url));
/** The modules the benchmarks run (one directory each). */
export const MODULES_DIR = fileURLToPath(new URL("./fixtures/modules/", import.meta.url));
export const FIXTURES = fileURLToPath(new URL("./fixtures/", import.meta.url));

/**
 * One line of a benchmark's report.
 *  - result:    what the benchmark is about; compared with `vs`.
 *  - baseline:  the reference the results are compared with, measured in the same run.
 *  - piece:     a part of a result (where the time goes).
 *  - reference: another point of comparison, for context.
 */
export interface Row {
  what: string;
  kind: "result" | "baseline" | "piece" | "reference";
  /** "ms": the samples are durations in milliseconds; "ops/s": rates; "MB": sizes in MiB (like durations, less is better). */
  unit: "ms" | "ops/s" | "MB";
  stats: Summary;
  /** `what` of the row (in the same benchmark) this one is compared with. */
  vs?: string;
  note?: string;
}

export interface Benchmark {
  name: string;
  title: string;
  run(): Promise<Row[]>;
}

// ---- cleanup ------------------------------------------------------------------------------

/** A child process (or one the spawner started, runtime/sandbox/spawner.ts: it kills those itself when this process ends). */
interface Tracked {
  readonly exitCode: number | null;
  readonly signalCode: NodeJS.Signals | null;
  kill(signal?: NodeJS.Signals): boolean;
  once(event: "exit", listener: () => void): unknown;
}

const children = new Set<Tracked>();
const tempDirs = new Set<string>();
const callbacks = new Set<() => void>();

/** Run `fn` (synchronous) if the process ends or is interrupted before the returned function is called. */
export function atCleanup(fn: () => void): () => void {
  callbacks.add(fn);
  return () => callbacks.delete(fn);
}

/** Kill `child` if the benchmark process ends (or is interrupted) while it still runs. */
export function track<C extends Tracked>(child: C): C {
  if (child.exitCode === null && child.signalCode === null) {
    children.add(child);
    child.once("exit", () => children.delete(child));
  }
  return child;
}

/** A port server in a child Node (a test fixture that prints its port on its first line of stdout), killed by `stop` or at the end. */
export async function portServer(args: string[]): Promise<{ port: number; stop: () => void }> {
  const server = track(spawn(process.execPath, args, { stdio: ["pipe", "pipe", "inherit"] }));
  const port = await new Promise<number>((resolve) => server.stdout!.once("data", (d: Buffer) => resolve(Number(d.toString().trim()))));
  return { port, stop: () => server.kill("SIGKILL") };
}

/** CPU time of this thread, in ms. */
const threadCpuMs = (): number => {
  const u = process.threadCpuUsage();
  return (u.user + u.system) / 1000;
};

/** CPU of this thread per second of `run`, in ms (`run` runs to its own deadline; its failure is part of what is measured). */
export async function cpuPerSecond(run: () => Promise<unknown>): Promise<number> {
  const cpu0 = threadCpuMs();
  const t0 = performance.now();
  await run().catch(() => undefined);
  return ((threadCpuMs() - cpu0) / (performance.now() - t0)) * 1000;
}

export async function makeTempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `modhost-bench-${prefix}-`));
  tempDirs.add(dir);
  return dir;
}

export async function removeTempDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

/** Synchronous last resort (process exit, Ctrl-C): kill tracked children, remove temp dirs. */
export function cleanupNow(): void {
  for (const fn of callbacks) {
    try {
      fn();
    } catch {
      // best effort
    }
  }
  callbacks.clear();
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
  children.clear();
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}

// ---- logging ------------------------------------------------------------------------------

/** A logger that prints nothing and keeps every record (module logs included). */
export function captureLogger(): { logger: Logger; records: LogRecord[] } {
  const records: LogRecord[] = [];
  const logger = new Logger({ level: "error", write: () => {} });
  logger.addSink((r) => records.push(r));
  return { logger, records };
}

/** The captured log, for error messages when a benchmark could not run. */
export function dumpLog(records: readonly LogRecord[], last = 20): string {
  return records.slice(-last).map((r) => `  ${r.level} [${r.source}] ${r.message}${r.fields ? " " + JSON.stringify(r.fields).slice(0, 300) : ""}`).join("\n");
}

/** Resolves with the first record (already logged or still to come) that matches. */
export function waitForRecord(records: LogRecord[], match: (r: LogRecord) => boolean, timeoutMs: number, abort?: Promise<unknown>): Promise<LogRecord> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = () => {
      const found = records.find(match);
      if (found) return resolve(found);
      if (Date.now() - started > timeoutMs) return reject(new Error(`timed out after ${timeoutMs} ms waiting for a log record\n${dumpLog(records)}`));
      setTimeout(poll, 5);
    };
    void abort?.then(() => setTimeout(() => {
      const found = records.find(match);
      if (found) resolve(found);
      else reject(new Error(`the module process ended before reporting\n${dumpLog(records)}`));
    }, 20));
    poll();
  });
}

// ---- host configuration -------------------------------------------------------------------

/**
 * Fair-share limits raised for a benchmark module, as an operator would for a module that
 * needs the rate: a benchmark measures the path, and the defaults (requests_per_second 2000,
 * host_cpu_ms_per_s 250, max_requests_in_flight 64) would cap what it measures. Every other
 * bound (frame, body, queue, memory, CPU time) stays the default.
 */
export const FAIR_SHARE_RAISED: Partial<Limits> = { requests_per_second: 1_000_000, host_cpu_ms_per_s: 1000, max_requests_in_flight: 1024 };

export interface BenchModuleOptions {
  /** Grant descriptors for the module ("read_storage", ...). */
  allow?: string[];
  limits?: Partial<Limits>;
  config?: Record<string, unknown>;
}

/** Defaults, with data and storage in `dir`, the bench fixtures as modules dir, one module enabled. */
export function benchConfig(dir: string, module: string, opts: BenchModuleOptions = {}): HostConfig {
  return benchConfigFor(dir, { [module]: opts });
}

/** Defaults, with data and storage in `dir`, `modulesDir` as modules dir, these modules enabled. */
export function benchConfigFor(dir: string, modules: Record<string, BenchModuleOptions>, modulesDir = MODULES_DIR): HostConfig {
  const config = defaultConfig(dir);
  config.modules.modules_dir = modulesDir;
  config.modules.enabled_modules = Object.keys(modules);
  // Any free port for the RPC server: the default (8339) is taken by whichever host runs first,
  // so a benchmark started while another host runs on the machine (another checkout's bench or
  // tests) failed at start ("127.0.0.1:8339 is in use").
  config.rpc.port = 0;
  // The fixtures are not signed: run them as local development modules, as an operator
  // would with [modules.trust.NAME] signatures = "allow-unsigned". (Written without the
  // config's types so that the benchmarks also build on a host without signature checks.)
  const trust = (config.modules as unknown as Record<string, unknown>)["trust"];
  for (const [module, opts] of Object.entries(modules)) {
    config.modules.grants[module] = { allow: (opts.allow ?? []).map(parseDescriptor), deny: [] };
    if (opts.limits) config.modules.limits[module] = opts.limits;
    if (opts.config) config.modules.module_configs[module] = opts.config;
    if (trust !== null && typeof trust === "object") (trust as Record<string, unknown>)[module] = { signatures: "allow-unsigned" };
  }
  return config;
}

/** A request as the hub saw it: when it arrived and when it had been served. */
export interface Arrival {
  method: string;
  at: number;
  served?: number;
}

/** Stamp every request as it reaches `hub`, and when the hub has served it (host-side timing). */
export function stampRequests(hub: ApiHub): Arrival[] {
  const arrivals: Arrival[] = [];
  // The session calls dispatch(): a value when the handler answered at once, else a promise.
  const dispatch = hub.dispatch.bind(hub);
  hub.dispatch = (call, grants, method, params) => {
    const rec: Arrival = { method, at: performance.now() };
    arrivals.push(rec);
    const p = dispatch(call, grants, method, params);
    const served = () => (rec.served = performance.now());
    if (p instanceof Promise) p.then(served, served);
    else served();
    return p;
  };
  return arrivals;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ---- process trees -----------------------------------------------------------------------

/** `root` and its descendants (the sandbox's launcher, the isolate host), found once per module run. */
export function processTree(root: number | undefined): number[] {
  if (root === undefined) return [];
  const parent = new Map<number, number>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      parent.set(Number(name), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {
      // gone meanwhile
    }
  }
  const tree = [root];
  for (let i = 0; i < tree.length; i++) for (const [pid, ppid] of parent) if (ppid === tree[i]) tree.push(pid);
  return tree;
}

/** CPU time of every thread of `pids` so far (/proc/PID/task/TID/schedstat: ns), ms. */
export function treeCpuMs(pids: number[]): number {
  let ns = 0;
  for (const pid of pids) {
    try {
      for (const tid of readdirSync(`/proc/${pid}/task`)) ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // gone meanwhile
    }
  }
  return ns / 1e6;
}

/**
 * The loop's lateness, sampled by a 1 ms interval and charged to the mode running then
 * (`charge(mode)`, or `charge(undefined)` between measurements). One monitorEventLoopDelay per
 * mode cannot be used: re-enabling one records the gap since it was disabled as a delay.
 */
export function loopLateness<M extends string>(modes: readonly M[]): { delays: Record<M, number[]>; charge(mode: M | undefined): void; charged(): M | undefined; stop(): void } {
  const delays = Object.fromEntries(modes.map((m) => [m, [] as number[]])) as Record<M, number[]>;
  let current: M | undefined;
  let last = performance.now();
  const sampler = setInterval(() => {
    const now = performance.now();
    if (current !== undefined) delays[current].push(Math.max(0, now - last - 1));
    last = now;
  }, 1);
  return {
    delays,
    charge(mode) {
      current = mode;
      last = performance.now();
    },
    charged: () => current,
    stop: () => clearInterval(sampler),
  };
}
