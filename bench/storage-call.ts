// Storage call from an isolate: a module's `await ctx.storage.get(tree, key)` (and `put`) on
// a small value, against a raw classic-level get (put) on a LevelDB in the same run.
//
// How the module's calls are timed. An isolate has Date.now() (whole milliseconds) and no
// performance.now(), so per-call latency cannot be measured from inside. It is measured from
// the host instead: the host's ApiHub.handle is wrapped to stamp, with performance.now(),
// the moment each request reaches it. The module (bench/fixtures/modules/storage-bench)
// makes its calls strictly one after another, so the time between two consecutive requests
// arriving is exactly one call as the module sees it, plus the module's own loop (a few
// instructions): host serves the request -> response frame -> isolate host -> the isolate's
// promise resolves -> the module issues the next call -> isolate host -> request frame ->
// host. Each interval is one sample. The module also times each phase with Date.now() and
// logs the totals; their mean is printed as a cross-check. The wrapper also records how
// long the hub took to serve each request (validation, grant check, ModuleStore), which
// splits a call into "host work" and "everything else" (IPC, MessagePack, isolate crossing).
//
// Pipelined: the module issues `batch` gets at once and awaits them all, `rounds` times
// back to back; the time from the first request of one round to the first of the next is
// one round, and batch / round time is one throughput sample.
//
// Baseline: classic-level get / put (sequential, per call) and `batch` gets awaited together,
// on a database of its own, with the same key and the same encoded value bytes, measured
// alternating with the module's runs. References: ModuleStore.get/put called
// directly, and the ApiHub serving storage_get / storage_insert in-process (no IPC).

import path from "node:path";
import { performance } from "node:perf_hooks";
import { ClassicLevel } from "classic-level";
import { ModuleManager } from "../host/manager.ts";
import { EventBus } from "../host/events/bus.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { ApiHub } from "../host/hub.ts";
import { ModuleStore } from "../storage/store.ts";
import { encodeKey, encodeValue } from "../storage/codec.ts";
import { parseDescriptor, resolveGrants } from "../capabilities/grants.ts";
import type { CallContext } from "../capabilities/types.ts";
import { atCleanup, benchConfig, captureLogger, dumpLog, makeTempDir, removeTempDir, type Benchmark, type Row, stampRequests, FAIR_SHARE_RAISED } from "./common.ts";
import { summarise } from "./stats.ts";

const MODULE = "bench-storage";
const TREE = "bench";
/** The same value the fixture writes. */
const VALUE = { height: 812345, hash: "00000000000000000002a7c4c1e48d76", ok: true };
const N = 2000;
/** Unmeasured calls before each sequential phase (JIT warm-up on both sides). */
const WARMUP = 1000;
/** The module runs this many times (each a fresh isolate host), alternating with the baseline. */
const MODULE_RUNS = 3;
const ROUNDS = 30;
const BATCH = 100;
/** Pipelined rounds left out at the start (warm-up). */
const SKIP_ROUNDS = 3;

const B_GET = "classic-level get, sequential (per call)";
const B_PUT = "classic-level put, sequential (per call)";
const B_PIPE = `classic-level get, ${BATCH} in flight (throughput)`;

type Db = ClassicLevel<Uint8Array, Uint8Array>;

export const storageCall: Benchmark = {
  name: "storage-call",
  title: "Storage call from an isolate (ctx.storage.get / put of a ~60-byte value)",
  async run(): Promise<Row[]> {
    const dir = await makeTempDir("storage");
    const chain = await EmbeddedChain.create({ matureBlocks: 0 });
    const raw = new ClassicLevel<Uint8Array, Uint8Array>(path.join(dir, "raw"), { keyEncoding: "view", valueEncoding: "view" });
    await raw.open();
    try {
      const base = { get: [] as number[], put: [] as number[], pipe: [] as number[] };
      const ref = { storeGet: [] as number[], storePut: [] as number[], hubGet: [] as number[], hubPut: [] as number[] };
      let putSeq = 0;
      const baselineRun = async () => {
        base.get.push(...(await rawGets(raw, N)));
        const puts = await rawPuts(raw, N, putSeq);
        putSeq += WARMUP + N;
        base.put.push(...puts);
        base.pipe.push(...(await rawPipelined(raw, ROUNDS - SKIP_ROUNDS - 1)));
      };

      await references(dir, chain, ref);
      const runs: ModuleResult[] = [];
      for (let i = 0; i < MODULE_RUNS; i++) {
        await baselineRun();
        runs.push(await runModule(path.join(dir, `host-${i}`), chain));
      }
      const pool = (f: (r: ModuleResult) => number[]) => runs.flatMap(f);
      const mod = {
        get: pool((r) => r.get), getService: pool((r) => r.getService), put: pool((r) => r.put), putService: pool((r) => r.putService), pipe: pool((r) => r.pipe),
        self: { get_ms: sum(runs.map((r) => r.self.get_ms)), put_ms: sum(runs.map((r) => r.self.put_ms)), pipelined_ms: sum(runs.map((r) => r.self.pipelined_ms)) },
      };

      const perCall = (ms: number) => (ms / (N * MODULE_RUNS)) * 1000;
      const mean = (xs: number[]) => (summarise(xs).mean * 1000).toFixed(0);
      return [
        {
          what: "isolate: await ctx.storage.get, sequential (per call)", kind: "result", unit: "ms", stats: summarise(mod.get), vs: B_GET,
          note: `mean ${mean(mod.get)} µs; the module's own clock says ${perCall(mod.self.get_ms).toFixed(0)} µs (mean, Date.now() over ${N} calls x ${MODULE_RUNS} runs)`,
        },
        { what: "  of which the host serving it (ApiHub.handle)", kind: "piece", unit: "ms", stats: summarise(mod.getService) },
        {
          what: "isolate: await ctx.storage.put, sequential (per call)", kind: "result", unit: "ms", stats: summarise(mod.put), vs: B_PUT,
          note: `mean ${mean(mod.put)} µs; the module's own clock says ${perCall(mod.self.put_ms).toFixed(0)} µs (mean, Date.now() over ${N} calls x ${MODULE_RUNS} runs)`,
        },
        { what: "  of which the host serving it (ApiHub.handle)", kind: "piece", unit: "ms", stats: summarise(mod.putService) },
        {
          what: `isolate: ${BATCH} x ctx.storage.get in flight (Promise.all)`, kind: "result", unit: "ops/s", stats: summarise(mod.pipe), vs: B_PIPE,
          note: `the module's own clock says ${((ROUNDS * BATCH * MODULE_RUNS) / (mod.self.pipelined_ms / 1000)).toFixed(0)} gets/s over all ${ROUNDS} rounds x ${MODULE_RUNS} runs; samples are rounds ${SKIP_ROUNDS + 1}..${ROUNDS - 1} of each run`,
        },
        { what: B_GET, kind: "baseline", unit: "ms", stats: summarise(base.get) },
        { what: B_PUT, kind: "baseline", unit: "ms", stats: summarise(base.put) },
        { what: B_PIPE, kind: "baseline", unit: "ops/s", stats: summarise(base.pipe) },
        { what: "ModuleStore.get in-process", kind: "reference", unit: "ms", stats: summarise(ref.storeGet), vs: B_GET },
        { what: "ApiHub.handle(storage_get) in-process", kind: "reference", unit: "ms", stats: summarise(ref.hubGet), vs: B_GET },
        { what: "ModuleStore.put in-process", kind: "reference", unit: "ms", stats: summarise(ref.storePut), vs: B_PUT },
        { what: "ApiHub.handle(storage_insert) in-process", kind: "reference", unit: "ms", stats: summarise(ref.hubPut), vs: B_PUT },
      ];
    } finally {
      await raw.close();
      await chain.close();
      await removeTempDir(dir);
    }
  },
};

// ---- the module ---------------------------------------------------------------------------

interface ModuleResult {
  get: number[];
  getService: number[];
  put: number[];
  putService: number[];
  pipe: number[];
  self: { get_ms: number; put_ms: number; pipelined_ms: number };
}

function sum(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

async function runModule(dir: string, chain: EmbeddedChain): Promise<ModuleResult> {
  const { logger, records } = captureLogger();
  const config = benchConfig(dir, MODULE, {
    allow: ["read_storage", "write_storage"],
    limits: { ...FAIR_SHARE_RAISED, start_timeout_ms: 120_000, cpu_time_ms: 5000 },
    config: { n: N, warmup: WARMUP, rounds: ROUNDS, batch: BATCH },
  });
  const manager = new ModuleManager({ config, chain, bus: new EventBus(), logger });

  const arrivals = stampRequests(manager.hub);

  // A process the manager starts is only reachable through it (and runs in its own group).
  const forget = atCleanup(() => manager.processOf(MODULE)?.kill());
  try {
    await manager.prepare();
    await manager.startAll();
    const status = manager.status().find((s) => s.name === MODULE);
    if (status?.state !== "running") throw new Error(`${MODULE} did not run: ${status?.problem ?? "no status"}\n${dumpLog(records)}`);
  } finally {
    await manager.shutdown();
    forget();
  }

  const done = records.find((r) => r.source === MODULE && r.message === "storage-bench done");
  if (!done?.fields) throw new Error(`${MODULE} did not report\n${dumpLog(records)}`);

  // Cut the request stream into the module's phases (see the fixture) and check the cut.
  let at = 0;
  const take = (count: number, method: string) => {
    const part = arrivals.slice(at, at + count);
    at += count;
    if (part.length !== count || part.some((a) => a.method !== method)) {
      throw new Error(`unexpected request sequence near #${at - count}: wanted ${count} x ${method}, got ${part.map((a) => a.method).slice(0, 5).join(",")}...`);
    }
    return part;
  };
  take(1, "storage_open_tree");
  take(1, "storage_insert");
  const gets = take(WARMUP + N, "storage_get").slice(WARMUP);
  const puts = take(WARMUP + N, "storage_insert").slice(WARMUP);
  const pipe = take(ROUNDS * BATCH, "storage_get");
  if (at !== arrivals.length) throw new Error(`${arrivals.length - at} more requests than expected`);

  const intervals = (xs: typeof arrivals) => xs.slice(1).map((x, i) => x.at - xs[i]!.at);
  const service = (xs: typeof arrivals) => xs.map((x) => x.served! - x.at);
  const roundStarts = Array.from({ length: ROUNDS }, (_, r) => pipe[r * BATCH]!.at);
  const rates = roundStarts.slice(1).map((t, r) => BATCH / ((t - roundStarts[r]!) / 1000)).slice(SKIP_ROUNDS);
  const f = done.fields as Record<string, number>;
  return {
    get: intervals(gets),
    getService: service(gets),
    put: intervals(puts),
    putService: service(puts),
    pipe: rates,
    self: { get_ms: f.get_ms ?? NaN, put_ms: f.put_ms ?? NaN, pipelined_ms: f.pipelined_ms ?? NaN },
  };
}

// ---- baseline: classic-level --------------------------------------------------------------

const KEY = encodeKey("k", 1024);
const VALUE_BYTES = encodeValue(VALUE, 1 << 20);
const putKey = (i: number) => encodeKey(`p${String(i).padStart(6, "0")}`, 1024);

async function rawGets(db: Db, n: number): Promise<number[]> {
  await db.put(KEY, VALUE_BYTES);
  const out: number[] = [];
  for (let i = 0; i < WARMUP + n; i++) {
    const t0 = performance.now();
    const v = await db.get(KEY);
    const t1 = performance.now();
    if (v === undefined) throw new Error("raw get: value missing");
    if (i >= WARMUP) out.push(t1 - t0);
  }
  return out;
}

async function rawPuts(db: Db, n: number, from: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < WARMUP + n; i++) {
    const k = putKey(from + i);
    const t0 = performance.now();
    await db.put(k, VALUE_BYTES);
    const t1 = performance.now();
    if (i >= WARMUP) out.push(t1 - t0);
  }
  return out;
}

async function rawPipelined(db: Db, rounds: number): Promise<number[]> {
  const out: number[] = [];
  for (let r = 0; r < rounds + SKIP_ROUNDS; r++) {
    const t0 = performance.now();
    const calls: Promise<unknown>[] = [];
    for (let i = 0; i < BATCH; i++) calls.push(db.get(KEY));
    await Promise.all(calls);
    const t1 = performance.now();
    if (r >= SKIP_ROUNDS) out.push(BATCH / ((t1 - t0) / 1000));
  }
  return out;
}

// ---- references: the store and the hub, in-process ----------------------------------------

async function references(dir: string, chain: EmbeddedChain, out: { storeGet: number[]; storePut: number[]; hubGet: number[]; hubPut: number[] }): Promise<void> {
  const store = await ModuleStore.open(path.join(dir, "ref-store"), undefined, { label: MODULE });
  try {
    await store.openTree(TREE);
    await store.put(TREE, "k", VALUE);
    const requested = [parseDescriptor("read_storage"), parseDescriptor("write_storage")];
    const grants = resolveGrants(requested, requested, []).effective;
    const hub = new ApiHub();
    const call: CallContext = {
      module: MODULE, chain, store, config: {}, dataDir: dir,
      services: { publish: () => true },
      events: { subscribe: () => [], unsubscribe: () => [], subscribed: () => [] },
      log: () => {},
    };
    const time = async (samples: number[], n: number, fn: (i: number) => Promise<unknown>) => {
      for (let i = 0; i < WARMUP + n; i++) {
        const t0 = performance.now();
        await fn(i);
        const t1 = performance.now();
        if (i >= WARMUP) samples.push(t1 - t0);
      }
    };
    let seq = 0;
    const key = () => `p${String(seq++).padStart(6, "0")}`;
    await time(out.storeGet, N, () => store.get(TREE, "k"));
    await time(out.hubGet, N, () => hub.handle(call, grants, "storage_get", { tree: TREE, key: "k" }));
    await time(out.storePut, N, () => store.put(TREE, key(), VALUE));
    await time(out.hubPut, N, () => hub.handle(call, grants, "storage_insert", { tree: TREE, key: key(), value: VALUE }));
  } finally {
    await store.close();
  }
}
