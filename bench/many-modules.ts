// Start-up with many modules: 1, 10 and 50 modules (half TypeScript, half native) brought to
// ready by a fresh ModuleManager (prepare() + startAll(): discovery, verification, bundling,
// sandboxes, spawns, handshakes, start()). The modules of one dependency level start
// concurrently, [modules] start_concurrency at a time (0: the CPU count), so the goal is that
// 50 modules take at most 5x what one takes, not 50x.
//
// TypeScript: copies of bench/fixtures/modules/trivial; native: the smallest Node module
// (bench/fixtures/native-ready.ts, bundled). With an odd count the extra one is TypeScript.
// Bounded: ROUNDS rounds (sizes interleaved in each), every start has start_timeout_ms 120 s.
// MODHOST_BENCH_MANY_ROUNDS overrides the round count; MODHOST_BENCH_MANY_SIZES the sizes
// ("1,10,50").

import { chmod, mkdir } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { ModuleManager } from "../host/manager.ts";
import { EventBus } from "../host/events/bus.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { atCleanup, benchConfigFor, captureLogger, dumpLog, makeTempDir, removeTempDir, type BenchModuleOptions, type Benchmark, type Row } from "./common.ts";
import { copyModule, writeNativeModule } from "./modules.ts";
import { summarise } from "./stats.ts";

const ROUNDS = Number(process.env.MODHOST_BENCH_MANY_ROUNDS ?? 2);
const SIZES = (process.env.MODHOST_BENCH_MANY_SIZES ?? "1,10,50").split(",").map(Number).filter((n) => n > 0);
const LARGEST = Math.max(...SIZES);

function names(n: number): { ts: string[]; native: string[] } {
  const nNative = Math.floor(n / 2);
  return {
    ts: Array.from({ length: n - nNative }, (_, i) => `bench-many-ts-${i}`),
    native: Array.from({ length: nNative }, (_, i) => `bench-many-native-${i}`),
  };
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
      const all = names(LARGEST);
      for (const name of all.ts) await copyModule("trivial", modulesDir, name);
      for (const name of all.native) await writeNativeModule(modulesDir, name, "native-ready.ts");
      await chmod(modulesDir, 0o755);
      const samples = new Map<number, number[]>(SIZES.map((n) => [n, []]));
      // One unmeasured start first (esbuild's service, the isolate host script, the uid table).
      await startAllOf(tmp, chain, modulesDir, 1, -1);
      for (let r = 0; r < ROUNDS; r++) {
        for (const n of SIZES) samples.get(n)!.push(await startAllOf(tmp, chain, modulesDir, n, r));
      }
      const one = `1 module to ready`;
      const rows: Row[] = SIZES.map((n) => ({
        what: n === 1 ? one : `${n} modules to ready (${names(n).ts.length} TS + ${names(n).native.length} native)`,
        kind: n === 1 ? "baseline" : "result",
        unit: "ms",
        stats: summarise(samples.get(n)!),
        ...(n === 1 ? {} : { vs: one }),
      }));
      rows[0]!.note = `${ROUNDS} rounds, sizes interleaved; start_concurrency 0 (= ${os.availableParallelism()} CPUs); goal: 50 modules <= 5x one`;
      if (!SIZES.includes(1)) for (const r of rows) delete r.vs;
      return rows;
    } finally {
      await chain.close();
      await removeTempDir(tmp);
    }
  },
};

/** A fresh manager with the first `n` modules enabled: prepare() + startAll() until all run; then shut down. */
async function startAllOf(tmp: string, chain: EmbeddedChain, modulesDir: string, n: number, round: number): Promise<number> {
  const { ts, native } = names(n);
  const enabled = [...ts, ...native];
  const dir = path.join(tmp, `run-${n}-${round}`);
  await mkdir(dir, { recursive: true, mode: 0o711 });
  const { logger, records } = captureLogger();
  const opts: BenchModuleOptions = { limits: { start_timeout_ms: 120_000 } };
  const manager = new ModuleManager({ config: benchConfigFor(dir, Object.fromEntries(enabled.map((m) => [m, opts])), modulesDir), chain, bus: new EventBus(), logger });
  const forget = atCleanup(() => {
    for (const m of enabled) manager.processOf(m)?.kill();
  });
  try {
    const t0 = performance.now();
    await manager.prepare();
    await manager.startAll();
    const ms = performance.now() - t0;
    const notRunning = manager.status().filter((s) => enabled.includes(s.name) && s.state !== "running");
    if (notRunning.length > 0) {
      throw new Error(`${notRunning.length} of ${n} modules did not start: ${notRunning.slice(0, 3).map((s) => `${s.name}: ${s.problem ?? s.state}`).join("; ")}\n${dumpLog(records)}`);
    }
    return ms;
  } finally {
    await manager.shutdown().catch(() => {});
    forget();
  }
}
