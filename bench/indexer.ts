// A TypeScript block indexer vs the same logic in-process. For each block: getBlock(hash) and
// one storage transaction of 3 puts per transaction (bench/fixtures/modules/indexer). Blocks of
// about 1000 and 3000 transactions are built on an embedded regtest chain first (signed
// wallet transactions; it takes a while on a busy machine). The module indexes each block
// WARMUP + ROUNDS times in its start() and times each with Date.now(); the baseline runs
// indexBlock() here against EmbeddedChain.getBlock and a classic-level database with the
// storage codec's keys and values (what ModuleStore writes underneath), ROUNDS times after a
// warm-up.
// Both sides are compared warm: the baseline runs in this long-lived process, whose code
// (msgpackr, classic-level, the chain) is already compiled by V8, while every module run is a
// fresh isolate host and isolate whose first blocks run in V8's interpreter (the first block
// of a run took 3-5x the later ones in a trace). The first WARMUP blocks of each module run
// are therefore not in the result; they are shown as their own row ("cold"), so nothing is
// hidden. Each size runs in its own module run: a size the module cannot fetch (the answer
// over a protocol limit) is reported as a note, and the other sizes are still measured.
// Each size is measured twice: with getBlock's full answer (every transaction's raw hex and the
// block's) and with the light form (include_hex: false), which is all an indexer needs; the
// baseline asks for the same form.
// Goal: <= 2x the in-process logic. MODHOST_BENCH_INDEXER_SIZES overrides the sizes ("1000,3000"),
// MODHOST_BENCH_INDEXER_ROUNDS the timed blocks of each module run (3; more for a profile).

import path from "node:path";
import { performance } from "node:perf_hooks";
import { ClassicLevel } from "classic-level";
import { ModuleManager } from "../host/manager.ts";
import { EventBus } from "../host/events/bus.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { encodeKey, encodeValue } from "../storage/codec.ts";
import { atCleanup, benchConfig, captureLogger, dumpLog, FAIR_SHARE_RAISED, makeTempDir, processTree, removeTempDir, treeCpuMs, type Benchmark, type Row } from "./common.ts";
import { summarise } from "./stats.ts";

const MODULE = "bench-indexer";
const ROUNDS = Math.max(1, Math.floor(Number(process.env.MODHOST_BENCH_INDEXER_ROUNDS ?? 3)) || 3);
/** Blocks each module run indexes before the timed ones (a fresh process: V8 compiles as it goes). */
const WARMUP = 2;
const SIZES = (process.env.MODHOST_BENCH_INDEXER_SIZES ?? "1000,3000").split(",").map(Number).filter((n) => n > 0);

export const indexer: Benchmark = {
  name: "indexer",
  title: `TS block indexer (getBlock + one storage transaction, 3 keys per tx), blocks of ${SIZES.join(" and ")} txs, vs the same logic in-process`,
  async run(): Promise<Row[]> {
    const dir = await makeTempDir("idx");
    const chain = await EmbeddedChain.create(); // 101 blocks: the first coinbase is mature
    const raw = new ClassicLevel<Uint8Array, Uint8Array>(path.join(dir, "raw"), { keyEncoding: "view", valueEncoding: "view" });
    try {
      await raw.open();
      const t0 = performance.now();
      const hashes: string[] = [];
      for (const size of SIZES) hashes.push(await blockOf(chain, size));
      const built = performance.now() - t0;
      const counts: number[] = [];
      for (const h of hashes) counts.push((await chain.getBlock(h))!.transactions.length);

      const rows: Row[] = [];
      for (const light of [false, true]) rows.push(...(await measure(dir, chain, raw, hashes, counts, light)));
      if (rows[0]) rows[0].note = `${rows[0].note ?? ""}; blocks built in ${(built / 1000).toFixed(1)} s; module times are Date.now() (whole ms) per block`;
      return rows;
    } finally {
      await raw.close();
      await chain.close();
      await removeTempDir(dir);
    }
  },
};

/** Rows for every size, with the full or the light form of the block on both sides. */
async function measure(dir: string, chain: EmbeddedChain, raw: ClassicLevel<Uint8Array, Uint8Array>, hashes: string[], counts: number[], light: boolean): Promise<Row[]> {
  const form = light ? ", light form (no hex)" : "";
  const mod: number[][] = hashes.map(() => []);
  const cold: number[][] = hashes.map(() => []);
  const base: number[][] = hashes.map(() => []);
  const baseCpu: number[][] = hashes.map(() => []);
  const failed: Array<string | undefined> = hashes.map(() => undefined);
  const served: BlockServed[][] = hashes.map(() => []);
  for (const h of hashes) await indexBlock(chain, raw, h, light); // warm-up
  for (let run = 0; run < 2; run++) {
    for (const [i, h] of hashes.entries()) {
      for (let r = 0; r < ROUNDS; r++) {
        const t = performance.now();
        const cpu = processCpuMs();
        await indexBlock(chain, raw, h, light);
        base[i]!.push(performance.now() - t);
        baseCpu[i]!.push(processCpuMs() - cpu);
      }
      if (failed[i] !== undefined) continue;
      try {
        const { ms, blocks } = await moduleRun(dir, chain, h, `${light ? "light" : "full"}-${run}-${i}`, light);
        cold[i]!.push(...ms.slice(0, WARMUP));
        mod[i]!.push(...ms.slice(WARMUP));
        served[i]!.push(...blocks.slice(WARMUP));
      } catch (err) {
        failed[i] = (err as Error).message.split("\n").find((l) => l.includes("failed to start")) ?? (err as Error).message.split("\n")[0]!;
      }
    }
  }
  const rows: Row[] = [];
  for (const [i, n] of counts.entries()) {
    const b = `in-process: getBlock + classic-level batch, ${n}-tx block${form}`;
    if (failed[i] !== undefined) {
      rows.push({ what: b, kind: "baseline", unit: "ms", stats: summarise(base[i]!), note: `the module could not index the ${n}-tx block: ${failed[i]!.trim()}` });
      continue;
    }
    rows.push(
      { what: `TS indexer, ${n}-tx block (${3 * n} puts)${form}`, kind: "result", unit: "ms", stats: summarise(mod[i]!), vs: b, note: `goal <= 2x; blocks ${WARMUP + 1}..${WARMUP + ROUNDS} of 2 module runs (both sides warm)` },
      { what: `  the same, first ${WARMUP} blocks of a fresh module process (cold)`, kind: "piece", unit: "ms", stats: summarise(cold[i]!), vs: b },
      ...[...new Set(served[i]!.flatMap((blk) => [...blk.methods.keys()]))].map((method): Row => {
        const per = served[i]!.map((blk) => blk.methods.get(method) ?? { n: 0, ms: 0 });
        const counts = [...new Set(per.map((e) => e.n))].join("/");
        return { what: `  host serving ${method}, per block (${counts} crossings)`, kind: "piece", unit: "ms", stats: summarise(per.map((e) => e.ms)), note: "from the request's arrival at the hub to its answer, summed over the block's requests (the host's side of the path; the rest is the module's process and the socket)" };
      }),
      { what: "  host process CPU per block, all its threads", kind: "piece", unit: "ms", stats: summarise(served[i]!.map((blk) => blk.cpuMs)), vs: `  in-process CPU per block, ${n}-tx${form}`, note: "from the block's first get_block to its last answer: the host's work (decoding, the hub, LevelDB's thread pool, garbage collection) in CPU time, which a loaded machine inflates far less than the wall times" },
      { what: "  module process CPU per block, all its threads (isolate host and isolate)", kind: "piece", unit: "ms", stats: summarise(served[i]!.map((blk) => blk.moduleCpuMs)), vs: `  in-process CPU per block, ${n}-tx${form}`, note: "the same window, the module's processes (the isolate host's threads, the isolate's among them; /proc schedstat, ns): what it costs to carry the block into the isolate and the transaction out, and the module's own code" },
      { what: b, kind: "baseline", unit: "ms", stats: summarise(base[i]!) },
      { what: `  in-process CPU per block, ${n}-tx${form}`, kind: "reference", unit: "ms", stats: summarise(baseCpu[i]!), note: "the baseline's CPU time (all threads of this process)" },
    );
  }
  return rows;
}

/** Mine a block with about `size` wallet transactions (split a coin, then spend the pieces); its hash. */
async function blockOf(chain: EmbeddedChain, size: number): Promise<string> {
  const pieces = size - 1;
  // Coins to split: each split transaction makes up to 1000 outputs.
  const splits = Math.ceil(pieces / 1000);
  await chain.mine(splits); // one more mature coinbase each
  for (let s = 0; s < splits; s++) await chain.createTransaction({ outputs: Math.min(1000, pieces - s * 1000), feeRate: 1 });
  await chain.mine(1, { includeMempool: true });
  for (let i = 0; i < pieces; i++) await chain.createTransaction({ feeRate: 1 });
  const [hash] = await chain.mine(1, { includeMempool: true });
  return hash!;
}

/** The module's logic (bench/fixtures/modules/indexer/index.ts), in-process. */
async function indexBlock(chain: EmbeddedChain, raw: ClassicLevel<Uint8Array, Uint8Array>, hash: string, light: boolean): Promise<void> {
  const block = await chain.getBlock(hash, { includeHex: !light });
  if (!block) throw new Error(`no block ${hash}`);
  const ops: Array<{ type: "put"; key: Uint8Array; value: Uint8Array }> = [];
  const put = (key: string, value: unknown) => ops.push({ type: "put", key: encodeKey(key, 1024), value: encodeValue(value, 1 << 20) });
  for (const [n, tx] of block.transactions.entries()) {
    const out = tx.outputs[0];
    put(`tx:${tx.txid}`, { height: block.height, index: n, vsize: tx.vsize });
    put(`out:${tx.txid}:0`, { value: out ? out.value : 0, address: out ? out.address : null });
    put(`blk:${block.height}:${n}`, tx.txid);
  }
  await raw.batch(ops);
}

async function moduleRun(dir: string, chain: EmbeddedChain, hash: string, label: string, light: boolean): Promise<{ ms: number[]; blocks: BlockServed[] }> {
  const { logger, records } = captureLogger();
  const config = benchConfig(path.join(dir, `host-${label}`), MODULE, {
    allow: ["read_blockchain", "read_storage", "write_storage"],
    limits: { ...FAIR_SHARE_RAISED, start_timeout_ms: 600_000, cpu_time_ms: 5000 },
    config: { hashes: [hash], rounds: WARMUP + ROUNDS, light },
  });
  const manager = new ModuleManager({ config, chain, bus: new EventBus(), logger });
  const served = serveLog(manager);
  const forget = atCleanup(() => manager.processOf(MODULE)?.kill());
  try {
    await manager.prepare();
    await manager.startAll();
  } finally {
    await manager.shutdown();
    forget();
  }
  const done = records.find((r) => r.source === MODULE && r.message === "indexer done");
  if (!done?.fields) throw new Error(`${MODULE} did not report\n${dumpLog(records)}`);
  return { ms: (done.fields as { ms: number[][] }).ms[0]!, blocks: served.blocks };
}

/**
 * What the host served for one block: crossings (requests) and host time (arrival to answer,
 * ms), by method; and the host process's CPU time (all its threads: LevelDB's thread pool and
 * the garbage collector too) from the block's first get_block to its last answer, which a
 * loaded machine inflates far less than the wall times.
 */
interface BlockServed {
  methods: Map<string, { n: number; ms: number }>;
  cpuAtStart: number;
  cpuMs: number;
  moduleCpuAtStart: number;
  moduleCpuMs: number;
}

/** CPU time of this process so far (every thread), ms. */
function processCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/**
 * Every request the module makes, stamped on arrival and when served (the host's side of the
 * path), grouped by block: a get_block without tx_offset starts the next block.
 */
function serveLog(manager: ModuleManager): { blocks: BlockServed[] } {
  const blocks: BlockServed[] = [];
  let pids: number[] | undefined;
  const moduleCpu = () => {
    pids ??= processTree(manager.processOf(MODULE)?.pid);
    return treeCpuMs(pids);
  };
  // The session calls dispatch(): a value when the handler answered at once, else a promise.
  const dispatch = manager.hub.dispatch.bind(manager.hub);
  manager.hub.dispatch = (call, grants, method, params) => {
    if (method === "get_block" && params["tx_offset"] === undefined) blocks.push({ methods: new Map(), cpuAtStart: processCpuMs(), cpuMs: 0, moduleCpuAtStart: moduleCpu(), moduleCpuMs: 0 });
    const block = blocks.at(-1);
    const at = performance.now();
    const p = dispatch(call, grants, method, params);
    const done = () => {
      if (!block) return;
      const e = block.methods.get(method) ?? { n: 0, ms: 0 };
      e.n++;
      e.ms += performance.now() - at;
      block.methods.set(method, e);
      block.cpuMs = processCpuMs() - block.cpuAtStart;
      if (method === "storage_transaction") block.moduleCpuMs = moduleCpu() - block.moduleCpuAtStart;
    };
    if (p instanceof Promise) p.then(done, done);
    else done();
    return p;
  };
  return { blocks };
}
