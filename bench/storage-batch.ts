// Storage batch write: one storage_transaction of 1000 puts (~100-byte values, distinct keys)
// through the capability, against a raw classic-level batch of the same 1000 puts in the same
// run. Per batch: latency, and puts/s (1000 / latency).
//
// Result, from an isolate: a module (bench/fixtures/modules/storage-batch) awaits
// ctx.storage.transaction(tree, ops) BATCHES times, one after another, with every batch built
// before the first call. As in storage-call, it is timed from the host: ApiHub.handle is
// wrapped to stamp each request's arrival (and when the hub has served it), and the time
// between two consecutive arrivals is one call as the module sees it: the ops copied out of
// the isolate, MessagePack over the channel, validation (valibot, per op), ModuleStore.batch
// (encoding, quota check, one LevelDB batch with the tree's counters) and the way back.
//
// Result, in-process: ApiHub.handle(call, grants, "storage_transaction", {tree, ops}) on a
// ModuleStore, no IPC. Reference: ModuleStore.batch directly.
//
// Baseline: classic-level batch() of the same keys and the same value bytes (MessagePack,
// encoded before the clock starts) on a database of its own.
//
// Each of the MODULE_RUNS rounds uses fresh databases for all four; the three in-process ones
// take turns batch by batch, then the module runs. The first SKIP batches of each are warm-up.

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

const MODULE = "bench-storage-batch";
const TREE = "bench";
const SIZE = 1000;
const BATCHES = 40;
const SKIP = 5;
const MODULE_RUNS = 3;

/** The same keys and values the fixture writes. */
const HASH = "00000000000000000002a7c4c1e48d76c5a37902165a270156b7a8d72728a054";
const key = (b: number, i: number) => `b${String(b).padStart(4, "0")}-${String(i).padStart(6, "0")}`;
const value = (n: number) => ({ height: 800_000 + n, hash: HASH, time: 1_700_000_000 + n, ok: true });
const ops = (b: number) => Array.from({ length: SIZE }, (_, i) => ({ op: "put" as const, key: key(b, i), value: value(b * SIZE + i) }));

const B_LAT = `classic-level batch of ${SIZE} puts (per batch)`;
const B_RATE = "classic-level batch: puts/s";

export const storageBatch: Benchmark = {
  name: "storage-batch",
  title: `Storage batch write: storage_transaction of ${SIZE} puts (~100-byte values)`,
  async run(): Promise<Row[]> {
    const dir = await makeTempDir("batch");
    const chain = await EmbeddedChain.create({ matureBlocks: 0 });
    try {
      const s = { raw: [] as number[], hub: [] as number[], store: [] as number[], mod: [] as number[], service: [] as number[], self: 0 };
      for (let run = 0; run < MODULE_RUNS; run++) {
        const local = await inProcess(path.join(dir, `local-${run}`), chain);
        s.raw.push(...local.raw);
        s.hub.push(...local.hub);
        s.store.push(...local.store);
        const m = await runModule(path.join(dir, `host-${run}`), chain);
        s.mod.push(...m.batches);
        s.service.push(...m.service);
        s.self += m.selfMs;
      }
      const rate = (ms: number[]) => ms.map((t) => SIZE / (t / 1000));
      const bytes = encodeValue(value(0), 1 << 20).length;
      return [
        {
          what: `isolate: await ctx.storage.transaction, ${SIZE} puts (per batch)`, kind: "result", unit: "ms", stats: summarise(s.mod), vs: B_LAT,
          note: `values ${bytes} B of MessagePack, keys ${key(0, 0).length} B; the module's own clock says ${(s.self / (BATCHES * MODULE_RUNS)).toFixed(2)} ms per batch (mean over all ${BATCHES} x ${MODULE_RUNS})`,
        },
        { what: "  of which the host serving it (ApiHub.handle)", kind: "piece", unit: "ms", stats: summarise(s.service), vs: B_LAT },
        { what: "isolate: ctx.storage.transaction puts/s", kind: "result", unit: "ops/s", stats: summarise(rate(s.mod)), vs: B_RATE },
        { what: `ApiHub.handle(storage_transaction) in-process, ${SIZE} puts (per batch)`, kind: "result", unit: "ms", stats: summarise(s.hub), vs: B_LAT },
        { what: "ApiHub.handle(storage_transaction) in-process: puts/s", kind: "result", unit: "ops/s", stats: summarise(rate(s.hub)), vs: B_RATE },
        { what: B_LAT, kind: "baseline", unit: "ms", stats: summarise(s.raw) },
        { what: B_RATE, kind: "baseline", unit: "ops/s", stats: summarise(rate(s.raw)) },
        { what: `ModuleStore.batch in-process, ${SIZE} puts (per batch)`, kind: "reference", unit: "ms", stats: summarise(s.store), vs: B_LAT },
      ];
    } finally {
      await chain.close();
      await removeTempDir(dir);
    }
  },
};

/**
 * The baseline (classic-level batches, keys and values encoded beforehand), the hub serving
 * storage_transaction in-process, and ModuleStore.batch, each on a database of its own, taking
 * turns batch by batch. The ops are built before the clock starts, as the module builds them.
 */
async function inProcess(dir: string, chain: EmbeddedChain): Promise<{ raw: number[]; hub: number[]; store: number[] }> {
  const db = new ClassicLevel<Uint8Array, Uint8Array>(path.join(dir, "raw"), { keyEncoding: "view", valueEncoding: "view" });
  await db.open();
  const hubStore = await ModuleStore.open(path.join(dir, "hub"), undefined, { label: MODULE });
  const store = await ModuleStore.open(path.join(dir, "store"), undefined, { label: MODULE });
  try {
    await hubStore.openTree(TREE);
    await store.openTree(TREE);
    const granted = [parseDescriptor("write_storage")];
    const grants = resolveGrants(granted, granted, []).effective;
    const hub = new ApiHub();
    const call: CallContext = {
      module: MODULE, chain, store: hubStore, config: {}, dataDir: dir,
      services: { publish: () => true },
      events: { subscribe: () => [], unsubscribe: () => [], subscribed: () => [] },
      log: () => {},
    };
    const out = { raw: [] as number[], hub: [] as number[], store: [] as number[] };
    const time = async (samples: number[], b: number, fn: () => Promise<unknown>) => {
      const t0 = performance.now();
      await fn();
      const t1 = performance.now();
      if (b >= SKIP) samples.push(t1 - t0);
    };
    for (let b = 0; b < BATCHES; b++) {
      const raw = ops(b).map((op) => ({ type: "put" as const, key: encodeKey(op.key, 1024), value: encodeValue(op.value, 1 << 20) }));
      const viaHub = ops(b);
      const viaStore = ops(b);
      await time(out.raw, b, () => db.batch(raw));
      await time(out.hub, b, () => hub.handle(call, grants, "storage_transaction", { tree: TREE, ops: viaHub }));
      await time(out.store, b, () => store.batch(TREE, viaStore));
    }
    return out;
  } finally {
    await db.close();
    await hubStore.close();
    await store.close();
  }
}

/** The isolate module, timed from the host; see the top of this file. */
async function runModule(dir: string, chain: EmbeddedChain): Promise<{ batches: number[]; service: number[]; selfMs: number }> {
  const { logger, records } = captureLogger();
  const config = benchConfig(dir, MODULE, {
    allow: ["write_storage"],
    limits: { ...FAIR_SHARE_RAISED, start_timeout_ms: 120_000, cpu_time_ms: 5000 },
    config: { batches: BATCHES, size: SIZE },
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
  const done = records.find((r) => r.source === MODULE && r.message === "storage-batch done");
  if (!done?.fields) throw new Error(`${MODULE} did not report\n${dumpLog(records)}`);
  const methods = arrivals.map((a) => a.method);
  if (methods.length !== BATCHES + 1 || methods[0] !== "storage_open_tree" || methods.slice(1).some((m) => m !== "storage_transaction")) {
    throw new Error(`unexpected request sequence: ${methods.slice(0, 5).join(",")}... (${methods.length} requests)`);
  }
  const txs = arrivals.slice(1);
  return {
    batches: txs.slice(1).map((x, i) => x.at - txs[i]!.at).slice(SKIP),
    service: txs.map((x) => x.served! - x.at).slice(SKIP),
    selfMs: Number((done.fields as Record<string, unknown>).ms),
  };
}
