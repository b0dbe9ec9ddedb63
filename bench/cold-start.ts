// Module cold start: from "start loading a module" to "module ready".
//
// Result: a fresh ModuleManager per iteration runs prepare() + startAll() for a trivial
// TypeScript module (bench/fixtures/modules/trivial), the real path: discover + manifest,
// grants, compile with esbuild, write the bundle, spawn the isolate host, handshake,
// isolate set-up, the module's start(), ready. Timed in the host process until startAll()
// resolves with the module running.
//
// Pieces: the core steps done one by one (runtime/isolate/runtime.ts + runtime/process.ts, as
// manager.ts does them), timed between steps: compile (from the bundle cache after the first
// start; esbuild without the cache is timed beside it), bundle file + spawn spec, the
// spawn() call itself, spawn -> hello (Node boots, loads the worker bundle with isolated-vm,
// connects), hello -> ready (welcome, isolate + context, bootstrap, module load, start()).
// They use the bare isolateSpawnSpec: whatever the manager adds around them (discovery and
// manifest parsing, verification, a sandbox wrapper around the isolate host where the host
// applies one) is in the result and not in the pieces, so "result - sum of the steps" is
// what those extras cost.
//
// Baseline: a bare isolated-vm isolate in this process: new Isolate + createContext +
// compile and run a trivial script. References: how long Node takes to boot (spawn to the
// first byte on stdout), started as the isolate host is (minimal environment): plain, with
// --no-node-snapshot (which isolated-vm needs and the isolate host is started with), and
// with that plus isolated-vm, plus msgpackr, imported.
//
// The manager path, the step-by-step path, the baseline and the references take turns, so
// drift in machine load hits all of them.
// The very first start in the process (esbuild's service starting, the worker bundle being
// built) is reported on its own and kept out of the statistics.

import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import ivm from "isolated-vm";
import { ModuleManager } from "../host/manager.ts";
import { EventBus } from "../host/events/bus.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { ApiHub } from "../host/hub.ts";
import { loadManifest, type ModuleManifest } from "../host/manifest.ts";
import { limitsFor } from "../host/config.ts";
import { compileForIsolate, isolateSpawnSpec } from "../runtime/isolate/runtime.ts";
import { compileModule } from "../runtime/isolate/compile.ts";
import type { ModuleProcess } from "../runtime/process.ts";
import { spawnModule, type HostSession } from "../host/session.ts";
import { MODULES_DIR, atCleanup, benchConfig, captureLogger, dumpLog, makeTempDir, removeTempDir, track, type Benchmark, type Row } from "./common.ts";
import { summarise } from "./stats.ts";

const MODULE = "bench-trivial";
const ITERATIONS = 20;
const BASELINE_PER_ITERATION = 2;
const BOOT_SAMPLES = 12;

const BASELINE = "bare isolate in-process (new Isolate + createContext + run trivial script)";
const RESULT = "module cold start: ModuleManager prepare()+startAll() -> running";

export const coldStart: Benchmark = {
  name: "cold-start",
  title: "Module cold start (trivial TypeScript module, isolate host)",
  async run(): Promise<Row[]> {
    const chain = await EmbeddedChain.create({ matureBlocks: 0 });
    const tmp = await makeTempDir("boot");
    try {
      const manifest = await loadManifest(path.join(MODULES_DIR, "trivial", "module.toml"));
      const total: number[] = [];
      const stop: number[] = [];
      const pieces = { compileUncached: [] as number[], compile: [] as number[], prepare: [] as number[], spawn: [] as number[], hello: [] as number[], ready: [] as number[], sum: [] as number[] };
      const baseline: number[] = [];
      const warm: number[] = [];
      let warmSandbox: string | undefined;

      // Node boot references, started like the isolate host: a script file, a minimal
      // environment, a directory of its own. The native packages are imported by absolute
      // path, resolved as require() does, as the worker bundle does (runtime/isolate/runtime.ts).
      const require = createRequire(import.meta.url);
      const script = async (name: string, imports: string[]) => {
        const file = path.join(tmp, name);
        await writeFile(file, [...imports, "process.stdout.write('x');"].join("\n"));
        return file;
      };
      const ivmImport = `import ivm from ${JSON.stringify(require.resolve("isolated-vm"))};`;
      const packrImport = `import { Packr } from ${JSON.stringify(require.resolve("msgpackr"))};`;
      const empty = await script("empty.mjs", []);
      const withIvm = await script("ivm.mjs", [ivmImport]);
      const withDeps = await script("deps.mjs", [ivmImport, packrImport]);
      const boots = { plain: [] as number[], noSnapshot: [] as number[], ivm: [] as number[], deps: [] as number[] };
      const bootRound = async () => [
        await bootTime([empty], tmp),
        await bootTime(["--no-node-snapshot", empty], tmp),
        await bootTime(["--no-node-snapshot", withIvm], tmp),
        await bootTime(["--no-node-snapshot", withDeps], tmp),
      ] as const;

      // Warm-up: one of each, outside the statistics. The first manager start pays for what
      // happens once per host process.
      const first = await managerStart(chain);
      await stepwiseStart(chain, manifest);
      for (let i = 0; i < 3; i++) await bareIsolate();
      await bootRound();

      for (let i = 0; i < ITERATIONS; i++) {
        const m = await managerStart(chain);
        total.push(m.startMs);
        stop.push(m.stopMs);
        const s = await stepwiseStart(chain, manifest);
        pieces.compile.push(s.compile);
        pieces.compileUncached.push(s.compileUncached);
        pieces.prepare.push(s.prepare);
        pieces.spawn.push(s.spawn);
        pieces.hello.push(s.hello);
        pieces.ready.push(s.ready);
        pieces.sum.push(s.compile + s.prepare + s.spawn + s.hello + s.ready);
        for (let j = 0; j < BASELINE_PER_ITERATION; j++) baseline.push(await bareIsolate());
        if (i % 5 === 4) {
          const w = await warmStarts(chain, 5);
          warm.push(...w.startMs);
          warmSandbox = w.sandbox;
        }
        if (i < BOOT_SAMPLES) {
          const [a, b, c, d] = await bootRound();
          boots.plain.push(a);
          boots.noSnapshot.push(b);
          boots.ivm.push(c);
          boots.deps.push(d);
        }
      }

      return [
        { what: RESULT, kind: "result", unit: "ms", stats: summarise(total), vs: BASELINE, note: `the manager reports the module's confinement as "${first.sandbox ?? "(not reported)"}"` },
        { what: "module start from the isolate pool: ModuleManager load() -> running, a booted pool process waiting", kind: "result", unit: "ms", stats: summarise(warm), vs: BASELINE, note: `the manager reports the pooled module's confinement as "${warmSandbox ?? "(not reported)"}"` },
        { what: "  compile (bundle of the module: a bundle cache hit, sources read and hashed again)", kind: "piece", unit: "ms", stats: summarise(pieces.compile) },
        { what: "  compile without the bundle cache (esbuild; not part of the sum)", kind: "piece", unit: "ms", stats: summarise(pieces.compileUncached) },
        { what: "  write bundle + spawn spec", kind: "piece", unit: "ms", stats: summarise(pieces.prepare) },
        { what: "  spawn() call (fork + exec)", kind: "piece", unit: "ms", stats: summarise(pieces.spawn) },
        { what: "  spawned -> hello (node boot, worker bundle + isolated-vm load, connect)", kind: "piece", unit: "ms", stats: summarise(pieces.hello) },
        { what: "  hello -> ready (welcome, isolate, bootstrap, module load, start())", kind: "piece", unit: "ms", stats: summarise(pieces.ready), vs: BASELINE },
        { what: "  sum of the steps (bare spawn spec, none of the manager's extras)", kind: "piece", unit: "ms", stats: summarise(pieces.sum), vs: BASELINE },
        { what: BASELINE, kind: "baseline", unit: "ms", stats: summarise(baseline) },
        { what: "first cold start in this process (+ esbuild service, worker bundle)", kind: "reference", unit: "ms", stats: summarise([first.startMs]) },
        { what: "stop: ModuleManager shutdown() of the module (shutdown invocation -> exit)", kind: "reference", unit: "ms", stats: summarise(stop) },
        { what: "node boot: empty script (spawn -> first stdout byte)", kind: "reference", unit: "ms", stats: summarise(boots.plain) },
        { what: "node boot: empty script, --no-node-snapshot", kind: "reference", unit: "ms", stats: summarise(boots.noSnapshot) },
        { what: "node boot: --no-node-snapshot, import isolated-vm", kind: "reference", unit: "ms", stats: summarise(boots.ivm) },
        { what: "node boot: --no-node-snapshot, import isolated-vm + msgpackr", kind: "reference", unit: "ms", stats: summarise(boots.deps) },
      ];
    } finally {
      await chain.close();
      await removeTempDir(tmp);
    }
  },
};

/** The real path: a fresh manager, prepare() + startAll(); then a graceful shutdown. */
async function managerStart(chain: EmbeddedChain): Promise<{ startMs: number; stopMs: number; sandbox: string | undefined }> {
  const dir = await makeTempDir("cold");
  const { logger, records } = captureLogger();
  const config = benchConfig(dir, MODULE);
  // The cold path: no pool process booted behind it (warmStarts measures the pool).
  config.host.isolate_pool = 0;
  const manager = new ModuleManager({ config, chain, bus: new EventBus(), logger });
  let stopped = false;
  // A process the manager starts is only reachable through it (and runs in its own group).
  const forget = atCleanup(() => manager.processOf(MODULE)?.kill());
  try {
    const t0 = performance.now();
    await manager.prepare();
    await manager.startAll();
    const t1 = performance.now();
    const status = manager.status().find((s) => s.name === MODULE);
    if (status?.state !== "running") throw new Error(`${MODULE} did not start: ${status?.problem ?? "no status"}\n${dumpLog(records)}`);
    const t2 = performance.now();
    await manager.shutdown();
    stopped = true;
    return { startMs: t1 - t0, stopMs: performance.now() - t2, sandbox: status.sandbox };
  } finally {
    if (!stopped) await manager.shutdown().catch(() => {});
    forget();
    await removeTempDir(dir);
  }
}

/**
 * Starts from the isolate pool ([host] isolate_pool = 1): one manager, the module unloaded and
 * loaded `n` times; each load is timed once the pool has a booted process waiting (as after an
 * author's pause, or at a restart some time after the last start), load() -> running.
 */
async function warmStarts(chain: EmbeddedChain, n: number): Promise<{ startMs: number[]; sandbox: string | undefined }> {
  const dir = await makeTempDir("warm");
  const { logger, records } = captureLogger();
  const config = benchConfig(dir, MODULE);
  config.host.isolate_pool = 1;
  const manager = new ModuleManager({ config, chain, bus: new EventBus(), logger });
  const forget = atCleanup(() => manager.processOf(MODULE)?.kill());
  const startMs: number[] = [];
  let sandbox: string | undefined;
  try {
    await manager.prepare();
    await manager.startAll();
    for (let i = 0; i < n; i++) {
      await manager.unload(MODULE);
      for (let wait = 0; (manager.poolStats()?.waiting.length ?? 0) < 1; wait++) {
        if (wait > 6000) throw new Error(`no pool process booted within 60 s\n${dumpLog(records)}`);
        await new Promise((r) => setTimeout(r, 10));
      }
      const t0 = performance.now();
      const status = await manager.load(MODULE);
      startMs.push(performance.now() - t0);
      if (status.state !== "running") throw new Error(`${MODULE} did not start: ${status.problem ?? "?"}\n${dumpLog(records)}`);
      sandbox = status.sandbox;
    }
    const taken = manager.poolStats()?.taken ?? 0;
    if (taken < n) throw new Error(`only ${taken} of ${n} starts took a pool process\n${dumpLog(records)}`);
    return { startMs, sandbox };
  } finally {
    await manager.shutdown().catch(() => {});
    forget();
    await removeTempDir(dir);
  }
}

/** The same steps as ModuleManager.start() for an isolate module, timed one by one. */
async function stepwiseStart(chain: EmbeddedChain, manifest: ModuleManifest): Promise<{ compileUncached: number; compile: number; prepare: number; spawn: number; hello: number; ready: number }> {
  const dir = await makeTempDir("steps");
  const { logger, records } = captureLogger();
  const config = benchConfig(dir, MODULE);
  let proc: ModuleProcess<HostSession> | undefined;
  try {
    const u0 = performance.now();
    await compileModule(manifest.dir, manifest.entry_point, { cache: null });
    const compileUncached = performance.now() - u0;
    const t0 = performance.now();
    const compiled = await compileForIsolate(manifest);
    const t1 = performance.now();
    const dataDir = path.join(config.modules.data_dir, MODULE);
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    const bundle = path.join(dir, `${MODULE}-${compiled.sha256.slice(0, 16)}.js`);
    await writeFile(bundle, compiled.code, { mode: 0o600 });
    const limits = limitsFor(config, MODULE);
    const spec = await isolateSpawnSpec(manifest, bundle, limits, dataDir);
    const t2 = performance.now();
    proc = await spawnModule(spec, {
      module: MODULE,
      grants: new Map(),
      hub: new ApiHub(),
      bus: new EventBus(),
      logger,
      call: { module: MODULE, chain, store: undefined, config: {}, dataDir },
      eventQueue: limits.event_queue,
      handshakeTimeoutMs: limits.start_timeout_ms,
    }, logger);
    track(proc.child);
    const t3 = performance.now();
    const died = proc.exited.then((info) => {
      throw new Error(`isolate host exited during start-up (code ${info.code})\n${dumpLog(records)}`);
    });
    await Promise.race([proc.session.handshake, died]);
    const t4 = performance.now();
    await Promise.race([proc.session.ready, died]);
    const t5 = performance.now();
    died.catch(() => {});
    return { compileUncached, compile: t1 - t0, prepare: t2 - t1, spawn: t3 - t2, hello: t4 - t3, ready: t5 - t4 };
  } finally {
    await proc?.stop("benchmark done", { graceMs: 2000, termMs: 1000 });
    await removeTempDir(dir);
  }
}

/** The baseline: an isolate in this process, from nothing to a script's result. */
async function bareIsolate(): Promise<number> {
  const t0 = performance.now();
  const isolate = new ivm.Isolate({ memoryLimit: 128 });
  const context = await isolate.createContext();
  const script = await isolate.compileScript("const x = 1 + 1; x");
  const result = await script.run(context);
  const t1 = performance.now();
  if (result !== 2) throw new Error("bare isolate: wrong result");
  isolate.dispose();
  return t1 - t0;
}

/**
 * Spawn node with `args` and time until its first byte on stdout; waits for the exit. The
 * environment is PATH only, as the isolate host's: inherited variables can cost a lot at
 * boot (NODE_EXTRA_CA_CERTS, for one, makes Node parse a CA bundle before running anything).
 */
function bootTime(args: string[], cwd: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let elapsed: number | undefined;
    const child = track(spawn(process.execPath, args, { cwd, env: { PATH: process.env.PATH ?? "/usr/bin:/bin" }, stdio: ["ignore", "pipe", "pipe"] }));
    let stderr = "";
    child.stdout!.once("data", () => (elapsed = performance.now() - t0));
    child.stdout!.resume();
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    child.once("error", reject);
    child.once("exit", (code) => {
      if (elapsed !== undefined && code === 0) resolve(elapsed);
      else reject(new Error(`node ${args.join(" ")} failed (code ${code}): ${stderr.slice(0, 500)}`));
    });
  });
}
