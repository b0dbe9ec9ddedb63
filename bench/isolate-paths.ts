// The isolate fast paths, each next to its baseline in the same run (turns interleaved,
// RUNS times, median and spread over the runs):
//  - a TypeScript module's `await ctx.storage.get` and `await ctx.chain.getBlockHeight()`,
//    sequential, vs the same code in a bare in-process isolate calling a host function that
//    does the same work (classic-level get + value decode; the chain's height) through an
//    isolated-vm Reference (goals: <= 2x and <= 3x);
//  - Promise.all of 1000 gets from the module vs Promise.all of 1000 raw classic-level gets
//    in this process (goal: >= 0.5x the baseline's speed, i.e. cost <= 2x);
//  - cold start of a trivial TypeScript module (a fresh ModuleManager: prepare + startAll,
//    sandbox, spawn, handshake, ready) vs a bare in-process isolate + context + the same
//    bundle evaluated and its start() run (goal: <= 5x);
//  - PSS of that idle module's process tree (the isolate host, with its sandbox wrapper) vs a
//    bare `node --no-node-snapshot` that imported isolated-vm and made one isolate + context
//    (goal: <= 1.2x).
// The module times its phases with Date.now() over n calls (an isolate has nothing finer), as
// the bare isolate does with the same code, so both sides are means per call within a run.
// The machine is shared: compare the ratios, not the absolute numbers.

import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import ivm from "isolated-vm";
import { ClassicLevel } from "classic-level";
import { ModuleManager } from "../host/manager.ts";
import { EventBus } from "../host/events/bus.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { compileModule } from "../runtime/isolate/compile.ts";
import { decodeValue, encodeKey, encodeValue } from "../storage/codec.ts";
import { atCleanup, benchConfig, captureLogger, dumpLog, makeTempDir, MODULES_DIR, removeTempDir, sleep, track, type Benchmark, type Row, FAIR_SHARE_RAISED } from "./common.ts";
import { summarise } from "./stats.ts";

const MODULE = "bench-isolate-paths";
const TRIVIAL = "bench-trivial";
const RUNS = 5;
const N = 2000;
const ROUNDS = 10;
const BATCH = 1000;
const VALUE = { height: 812345, hash: "00000000000000000002a7c4c1e48d76", ok: true };

const B_GET = "bare isolate: await get (Reference -> classic-level get), per call";
const B_HEIGHT = "bare isolate: await getBlockHeight (Reference), per call";
const B_ALL = `raw classic-level: Promise.all of ${BATCH} gets, per round`;
const B_START = "bare isolate: new Isolate + context + eval bundle + start()";
const B_PSS = "bare node --no-node-snapshot + isolated-vm + 1 isolate, idle PSS";

/** The phases of bench/fixtures/modules/isolate-paths, for the bare isolate (get and height are globals there). */
const BARE_SCRIPT = `
(async () => {
  for (let i = 0; i < 300; i++) await get();
  for (let i = 0; i < 300; i++) await height();
  let t0 = Date.now();
  for (let i = 0; i < ${N}; i++) await get();
  const get_us = ((Date.now() - t0) * 1000) / ${N};
  t0 = Date.now();
  for (let i = 0; i < ${N}; i++) await height();
  const height_us = ((Date.now() - t0) * 1000) / ${N};
  return JSON.stringify({ get_us, height_us });
})()`;

export const isolatePaths: Benchmark = {
  name: "isolate-paths",
  title: "Isolate fast paths: a TypeScript module vs a bare in-process isolate (calls, start, memory)",
  async run(): Promise<Row[]> {
    const dir = await makeTempDir("isolate-paths");
    const chain = await EmbeddedChain.create({ matureBlocks: 0 });
    const raw = new ClassicLevel<Uint8Array, Uint8Array>(path.join(dir, "raw"), { keyEncoding: "view", valueEncoding: "view" });
    await raw.open();
    const key = encodeKey("k", 1024);
    await raw.put(key, encodeValue(VALUE, 1 << 20));
    const s = { get: [] as number[], height: [] as number[], all: [] as number[], start: [] as number[], pss: [] as number[] };
    const b = { get: [] as number[], height: [] as number[], all: [] as number[], start: [] as number[], pss: [] as number[] };
    const trivial = await compileModule(path.join(MODULES_DIR, "trivial"), "index.ts");
    try {
      for (let run = 0; run < RUNS; run++) {
        const m = await moduleCalls(path.join(dir, `calls-${run}`), chain);
        s.get.push(m.get_us / 1000);
        s.height.push(m.height_us / 1000);
        s.all.push(m.all_ms);
        const bare = await bareCalls(raw, key, chain);
        b.get.push(bare.get_us / 1000);
        b.height.push(bare.height_us / 1000);
        b.all.push(await rawAll(raw, key));
        const started = await moduleStart(path.join(dir, `start-${run}`), chain);
        s.start.push(started.ms);
        s.pss.push(started.pssKb);
        b.start.push(await bareStart(trivial.code));
        if (run < 3) b.pss.push(await barePss());
      }
    } finally {
      await raw.close();
      await chain.close();
      await removeTempDir(dir);
    }
    const spread = (xs: number[]) => { const st = summarise(xs); return `median of ${xs.length} runs; min ${st.min.toFixed(3)}, max ${st.max.toFixed(3)}`; };
    const kb = (xs: number[]) => summarise(xs.map((x) => x / 1024)); // kB -> MB
    return [
      { what: "TS module: await ctx.storage.get, per call", kind: "result", unit: "ms", stats: summarise(s.get), vs: B_GET, note: `${spread(s.get)} (goal <= 2x)` },
      { what: B_GET, kind: "baseline", unit: "ms", stats: summarise(b.get) },
      { what: "TS module: await ctx.chain.getBlockHeight(), per call", kind: "result", unit: "ms", stats: summarise(s.height), vs: B_HEIGHT, note: `${spread(s.height)} (goal <= 3x)` },
      { what: B_HEIGHT, kind: "baseline", unit: "ms", stats: summarise(b.height) },
      { what: `TS module: Promise.all of ${BATCH} ctx.storage.get, per round`, kind: "result", unit: "ms", stats: summarise(s.all), vs: B_ALL, note: `${spread(s.all)} (goal: cost <= 2x, i.e. >= 0.5x the speed)` },
      { what: B_ALL, kind: "baseline", unit: "ms", stats: summarise(b.all) },
      { what: "TS module cold start (trivial module, prepare + startAll)", kind: "result", unit: "ms", stats: summarise(s.start), vs: B_START, note: `${spread(s.start)}; no pre-booted pool yet (goal <= 5x)` },
      { what: B_START, kind: "baseline", unit: "ms", stats: summarise(b.start) },
      { what: "TS module idle PSS (isolate host process tree)", kind: "result", unit: "MB", stats: kb(s.pss), vs: B_PSS, note: `${spread(s.pss.map((x) => x / 1024))} MB (goal <= 1.2x)` },
      { what: B_PSS, kind: "baseline", unit: "MB", stats: kb(b.pss) },
    ];
  },
};

async function withManager<T>(dir: string, chain: EmbeddedChain, module: string, opts: Parameters<typeof benchConfig>[2], work: (m: ModuleManager) => Promise<T>): Promise<T> {
  const { logger, records } = captureLogger();
  const manager = new ModuleManager({ config: benchConfig(dir, module, opts), chain, bus: new EventBus(), logger });
  const forget = atCleanup(() => manager.processOf(module)?.kill());
  try {
    return await work(manager);
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${dumpLog(records)}`);
  } finally {
    await manager.shutdown();
    forget();
  }
}

async function moduleCalls(dir: string, chain: EmbeddedChain): Promise<{ get_us: number; height_us: number; all_ms: number }> {
  const { logger, records } = captureLogger();
  const config = benchConfig(dir, MODULE, { allow: ["read_storage", "write_storage", "read_chain_state"], limits: { ...FAIR_SHARE_RAISED, start_timeout_ms: 300_000, cpu_time_ms: 5000, handler_timeout_ms: 300_000 }, config: { n: N, rounds: ROUNDS, batch: BATCH } });
  const manager = new ModuleManager({ config, chain, bus: new EventBus(), logger });
  const forget = atCleanup(() => manager.processOf(MODULE)?.kill());
  try {
    await manager.prepare();
    await manager.startAll();
  } finally {
    await manager.shutdown();
    forget();
  }
  const done = records.find((r) => r.source === MODULE && r.message === "isolate-paths done");
  if (!done?.fields) throw new Error(`${MODULE} did not report\n${dumpLog(records)}`);
  return done.fields as { get_us: number; height_us: number; all_ms: number };
}

async function bareCalls(raw: ClassicLevel<Uint8Array, Uint8Array>, key: Uint8Array, chain: EmbeddedChain): Promise<{ get_us: number; height_us: number }> {
  const isolate = new ivm.Isolate({ memoryLimit: 128 });
  try {
    const context = await isolate.createContext();
    const g = context.global;
    await g.set("getRef", new ivm.Reference(async () => decodeValue((await raw.get(key))!)));
    await g.set("heightRef", new ivm.Reference(async () => chain.getBlockHeight()));
    await context.eval(`
      globalThis.get = () => getRef.apply(undefined, [], { result: { promise: true, copy: true } });
      globalThis.height = () => heightRef.apply(undefined, [], { result: { promise: true, copy: true } });`);
    return JSON.parse((await context.eval(BARE_SCRIPT, { promise: true })) as string);
  } finally {
    isolate.dispose();
  }
}

async function rawAll(raw: ClassicLevel<Uint8Array, Uint8Array>, key: Uint8Array): Promise<number> {
  const round = () => Promise.all(Array.from({ length: BATCH }, async () => decodeValue((await raw.get(key))!)));
  await round();
  const t0 = performance.now();
  for (let r = 0; r < ROUNDS; r++) await round();
  return (performance.now() - t0) / ROUNDS;
}

async function moduleStart(dir: string, chain: EmbeddedChain): Promise<{ ms: number; pssKb: number }> {
  return withManager(dir, chain, TRIVIAL, { limits: { start_timeout_ms: 120_000 } }, async (manager) => {
    const t0 = performance.now();
    await manager.prepare();
    await manager.startAll();
    const ms = performance.now() - t0;
    const status = manager.status().find((x) => x.name === TRIVIAL);
    if (status?.state !== "running") throw new Error(`${TRIVIAL} did not run: ${status?.problem}`);
    await sleep(1000); // idle: start-up garbage collected, nothing running
    const pid = manager.processOf(TRIVIAL)?.pid;
    if (!pid) throw new Error("no pid");
    return { ms, pssKb: await treePss(pid) };
  });
}

async function bareStart(code: string): Promise<number> {
  const t0 = performance.now();
  const isolate = new ivm.Isolate({ memoryLimit: 128 });
  const context = await isolate.createContext();
  await context.eval(code);
  await context.eval("__modhost_exports.default({})", { promise: true });
  const ms = performance.now() - t0;
  isolate.dispose();
  return ms;
}

async function barePss(): Promise<number> {
  const script = "import('isolated-vm').then(async ({ default: ivm }) => { const i = new ivm.Isolate({ memoryLimit: 128 }); await i.createContext(); console.log('ready'); setInterval(() => {}, 1000); })";
  const child = track(spawn(process.execPath, ["--no-node-snapshot", "-e", script], { cwd: path.dirname(new URL(import.meta.url).pathname), stdio: ["ignore", "pipe", "inherit"] }));
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on("data", (d: Buffer) => d.toString().includes("ready") && resolve());
      child.once("exit", (c) => reject(new Error(`bare node exited ${c}`)));
    });
    await sleep(1000);
    return await treePss(child.pid!);
  } finally {
    child.kill("SIGKILL");
  }
}

/** PSS (kB) of `pid` and every descendant (the sandbox wrapper and the isolate host under it). */
async function treePss(pid: number): Promise<number> {
  const { readdir } = await import("node:fs/promises");
  const parents = new Map<number, number>();
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, "utf8").catch(() => "");
    const m = /\) \S+ (\d+)/.exec(stat);
    if (m) parents.set(Number(entry), Number(m[1]));
  }
  const tree = new Set([pid]);
  for (let grew = true; grew;) {
    grew = false;
    for (const [p, pp] of parents) if (!tree.has(p) && tree.has(pp)) (tree.add(p), (grew = true));
  }
  let total = 0;
  for (const p of tree) {
    const rollup = await readFile(`/proc/${p}/smaps_rollup`, "utf8").catch(() => "");
    const m = /^Pss:\s+(\d+) kB/m.exec(rollup);
    if (m) total += Number(m[1]);
  }
  return total;
}
