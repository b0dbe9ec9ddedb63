// Start-up with many modules: 1, 10 and 50 modules (half TypeScript, half native) brought to
// ready by a fresh ModuleManager (prepare() + startAll(): discovery, verification, bundling,
// sandboxes, spawns, handshakes, start()). The modules of one dependency level start
// concurrently, [modules] start_concurrency at a time (0: the CPU count), so the goal is that
// 50 modules take at most 5x what one takes, not 50x.
//
// TypeScript: copies of bench/fixtures/modules/trivial. Native, each size twice: the smallest
// Rust module (bench/fixtures/rust-ready, the SDK's Client: connect, ready, wait; what native
// modules in this project are, e.g. modules/rust-example) and the smallest Node module
// (bench/fixtures/native-ready.ts, bundled; a Node boot of its own, ~4x the CPU of the Rust
// one). With an odd count the extra one is TypeScript, so "1 module" is one TypeScript module.
// The Rust rows need cargo (scripts/build-rust.sh --bench builds the fixture once); without it
// only the Node rows are measured (said in a note). MODHOST_BENCH_MANY_NATIVE picks the kinds
// ("rust,node").
// Bounded: ROUNDS rounds (sizes interleaved in each), every start has start_timeout_ms 120 s.
// MODHOST_BENCH_MANY_DATA="volume,scan" measures each native size with and without data volumes,
// interleaved (default "auto": the host's choice). MODHOST_BENCH_MANY_ROUNDS overrides the round count; MODHOST_BENCH_MANY_SIZES the sizes
// ("1,10,50"); MODHOST_BENCH_MANY_CONCURRENCY sets [modules] start_concurrency (default 0, the
// host's default).
//
// CPU: each size also reports the CPU time used until all modules ran, per module: the host's
// own (process.cpuUsage) and, where cgroup v1's cpuacct controller is writable (root), that of
// the whole process tree (the host, esbuild, every sandbox launcher and module process: the bench
// process runs in a cpuacct cgroup of its own, which children inherit; modhost moves modules
// into memory, pids and cpu cgroups only). CPU-seconds divided by the CPUs is the least time a
// start of that many modules can take on this machine.

import { chmod, mkdir, readFile, rmdir, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { defaultConcurrency, ModuleManager } from "../host/manager.ts";
import { EventBus } from "../host/events/bus.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { atCleanup, benchConfigFor, captureLogger, dumpLog, makeTempDir, removeTempDir, type BenchModuleOptions, type Benchmark, type Row } from "./common.ts";
import { copyModule, rustReadyBinary, writeNativeModule, writeRustModule } from "./modules.ts";
import { summarise } from "./stats.ts";
import { spawnModulesDirectly } from "../runtime/process.ts";

const ROUNDS = Number(process.env.MODHOST_BENCH_MANY_ROUNDS ?? 2);
const SIZES = (process.env.MODHOST_BENCH_MANY_SIZES ?? "1,10,50").split(",").map(Number).filter((n) => n > 0);
const LARGEST = Math.max(...SIZES);
const CONCURRENCY = Number(process.env.MODHOST_BENCH_MANY_CONCURRENCY ?? 0);
const KINDS = (process.env.MODHOST_BENCH_MANY_NATIVE ?? "rust,node").split(",").filter((k): k is NativeKind => k === "rust" || k === "node");
/** How native modules' data directories are held (data_volume), each interleaved with the others: "auto" (the default), or e.g. "volume,scan" to see what volumes cost. */
const DATA = (process.env.MODHOST_BENCH_MANY_DATA ?? "auto").split(",").filter((d): d is DataMode => d === "auto" || d === "volume" || d === "scan");
type DataMode = "auto" | "volume" | "scan";
/**
 * Who forks the module processes, each interleaved with the others: "spawner" (the default: the
 * spawner process, runtime/sandbox/spawner.ts) and "host" (this process, as before the spawner:
 * spawnModulesDirectly), e.g. MODHOST_BENCH_MANY_SPAWN="spawner,host" for a before/after.
 */
const SPAWN = (process.env.MODHOST_BENCH_MANY_SPAWN ?? "spawner").split(",").filter((d): d is SpawnMode => d === "spawner" || d === "host");
type SpawnMode = "spawner" | "host";

/** What the native half of a start is: the Rust fixture or the Node one. */
type NativeKind = "rust" | "node";

/** CPU time used: the host's own, and the whole tree's where cpuacct is available (ms). */
interface Cpu {
  host: number;
  tree?: number;
}

/** The whole process tree's CPU time, through a cgroup v1 cpuacct group of its own (root only). */
class TreeCpu {
  private constructor(private readonly dir: string) {}

  static async open(): Promise<TreeCpu | undefined> {
    const dir = `/sys/fs/cgroup/cpuacct/modhost-bench-${process.pid}`;
    try {
      await mkdir(dir);
      await writeFile(path.join(dir, "cgroup.procs"), String(process.pid));
      return new TreeCpu(dir);
    } catch {
      await rmdir(dir).catch(() => undefined);
      return undefined;
    }
  }

  async ms(): Promise<number> {
    return Number(await readFile(path.join(this.dir, "cpuacct.usage"), "utf8")) / 1e6;
  }

  async close(): Promise<void> {
    await writeFile("/sys/fs/cgroup/cpuacct/cgroup.procs", String(process.pid)).catch(() => undefined);
    // Children that are still exiting keep it busy for a moment.
    for (let i = 0; i < 50; i++) {
      if (await rmdir(this.dir).then(() => true, () => false)) return;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function names(n: number, kind: NativeKind): { ts: string[]; native: string[] } {
  const nNative = Math.floor(n / 2);
  return {
    ts: Array.from({ length: n - nNative }, (_, i) => `bench-many-ts-${i}`),
    native: Array.from({ length: nNative }, (_, i) => `bench-many-${kind}-${i}`),
  };
}

/** A size and native kind measured: "1" (one TypeScript module: no native one), "10/rust", ... */
interface Case {
  n: number;
  kind: NativeKind;
  data: DataMode;
  spawn: SpawnMode;
}

function label(c: Case): string {
  const by = SPAWN.length > 1 ? (c.spawn === "host" ? ", forked by the host (before)" : ", forked by the spawner") : "";
  if (c.n === 1) return `1 module to ready${by}`;
  const { ts, native } = names(c.n, c.kind);
  return `${c.n} modules to ready (${ts.length} TS + ${native.length} ${c.kind === "rust" ? "Rust" : "Node"} native)${c.data === "auto" ? "" : `, data_volume = "${c.data}"`}${by}`;
}

export const manyModules: Benchmark = {
  name: "many-modules",
  title: `Start-up of ${SIZES.join(", ")} modules (half TypeScript, half native): ModuleManager prepare() + startAll() -> all running`,
  async run(): Promise<Row[]> {
    const tmp = await makeTempDir("many");
    await chmod(tmp, 0o711);
    const chain = await EmbeddedChain.create({ matureBlocks: 1 });
    try {
      const modulesDir = path.join(tmp, "modules");
      const notes: string[] = [];
      const rust = KINDS.includes("rust") ? await rustReadyBinary(notes) : undefined;
      const kinds = KINDS.filter((k) => k === "node" || rust !== undefined);
      for (const kind of kinds) {
        const all = names(LARGEST, kind);
        if (kind === "node") for (const name of all.native) await writeNativeModule(modulesDir, name, "native-ready.ts");
        else for (const name of all.native) await writeRustModule(modulesDir, name, rust!);
      }
      for (const name of names(LARGEST, "node").ts) await copyModule("trivial", modulesDir, name);
      await chmod(modulesDir, 0o755);
      // One TypeScript module has no native half: measured once per round, not per kind.
      const cases: Case[] = SIZES.flatMap((n) => SPAWN.flatMap((spawn) => (n === 1 ? [{ n, kind: kinds[0] ?? "node", data: "auto" as const, spawn }] : kinds.flatMap((kind) => DATA.map((data) => ({ n, kind, data, spawn }))))));
      const samples = new Map<Case, number[]>(cases.map((c) => [c, []]));
      const cpu = new Map<Case, Cpu[]>(cases.map((c) => [c, []]));
      const tree = await TreeCpu.open();
      try {
        // One unmeasured start first (esbuild's service, the isolate host script, the uid table).
        for (const spawn of SPAWN) await startAllOf(tmp, chain, modulesDir, { n: 1, kind: "node", data: "auto", spawn }, -1, tree);
        for (let r = 0; r < ROUNDS; r++) {
          for (const c of cases) {
            const m = await startAllOf(tmp, chain, modulesDir, c, r, tree);
            samples.get(c)!.push(m.ms);
            cpu.get(c)!.push(m.cpu);
          }
        }
      } finally {
        await tree?.close();
      }
      const rows: Row[] = cases.map((c) => ({
        what: label(c),
        kind: c.n === 1 ? "baseline" : "result",
        unit: "ms",
        stats: summarise(samples.get(c)!),
        ...(c.n === 1 ? {} : { vs: label({ ...c, n: 1 }) }),
        note: cpuNote(c.n, cpu.get(c)!),
      }));
      const conc = CONCURRENCY > 0 ? String(CONCURRENCY) : `0 (the host's default: ${defaultConcurrency()} on ${os.availableParallelism()} CPUs)`;
      rows[0]!.note = `${ROUNDS} rounds, sizes interleaved; start_concurrency ${conc}; goal: 50 modules <= 5x one; ${[...notes, rows[0]!.note].join("; ")}`;
      if (!SIZES.includes(1)) for (const r of rows) delete r.vs;
      return rows;
    } finally {
      await chain.close();
      await removeTempDir(tmp);
    }
  },
};

/** "CPU per module: host X ms, whole tree Y ms (Z CPU-s in all: at least W s on N CPUs)", medians. */
function cpuNote(n: number, samples: Cpu[]): string {
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const host = median(samples.map((c) => c.host));
  const trees = samples.flatMap((c) => (c.tree === undefined ? [] : [c.tree]));
  const cpus = os.availableParallelism();
  if (trees.length === 0) return `CPU until all ran: the host's own ${(host / n).toFixed(0)} ms per module (no cpuacct cgroup here for the whole tree)`;
  const tree = median(trees);
  return `CPU until all ran, per module: the host ${(host / n).toFixed(0)} ms, the whole process tree ${(tree / n).toFixed(0)} ms (${(tree / 1000).toFixed(2)} CPU-s in all: at least ${(tree / 1000 / cpus).toFixed(2)} s on ${cpus} CPUs)`;
}

/** A fresh manager with the first `n` modules enabled: prepare() + startAll() until all run; then shut down. */
async function startAllOf(tmp: string, chain: EmbeddedChain, modulesDir: string, c: Case, round: number, tree: TreeCpu | undefined): Promise<{ ms: number; cpu: Cpu }> {
  const { n } = c;
  const { ts, native } = names(n, c.kind);
  const enabled = [...ts, ...native];
  const dir = path.join(tmp, `run-${n}-${c.kind}-${c.data}-${c.spawn}-${round}`);
  spawnModulesDirectly(c.spawn === "host");
  await mkdir(dir, { recursive: true, mode: 0o711 });
  const { logger, records } = captureLogger();
  const opts: BenchModuleOptions = { limits: { start_timeout_ms: 120_000 } };
  // data_volume for the native half only (a TypeScript module never gets a volume).
  const nativeOpts: BenchModuleOptions = { limits: { start_timeout_ms: 120_000, ...(c.data === "auto" ? {} : { data_volume: c.data }) } };
  const config = benchConfigFor(dir, Object.fromEntries(enabled.map((m) => [m, native.includes(m) ? nativeOpts : opts])), modulesDir);
  config.modules.start_concurrency = CONCURRENCY;
  const manager = new ModuleManager({ config, chain, bus: new EventBus(), logger });
  const forget = atCleanup(() => {
    for (const m of enabled) manager.processOf(m)?.kill();
  });
  try {
    const tree0 = await tree?.ms();
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await manager.prepare();
    await manager.startAll();
    const ms = performance.now() - t0;
    const used = process.cpuUsage(cpu0);
    const tree1 = await tree?.ms();
    const notRunning = manager.status().filter((s) => enabled.includes(s.name) && s.state !== "running");
    if (notRunning.length > 0) {
      throw new Error(`${notRunning.length} of ${n} modules did not start: ${notRunning.slice(0, 3).map((s) => `${s.name}: ${s.problem ?? s.state}`).join("; ")}\n${dumpLog(records)}`);
    }
    return { ms, cpu: { host: (used.user + used.system) / 1000, ...(tree0 !== undefined && tree1 !== undefined ? { tree: tree1 - tree0 } : {}) } };
  } finally {
    await manager.shutdown().catch(() => {});
    forget();
    spawnModulesDirectly(false);
  }
}
