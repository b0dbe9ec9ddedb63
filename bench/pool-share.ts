// The thread-pool share under attack: a canary store's operation (a put, then an iteration of
// one entry: two thread-pool jobs each) while HOGS other stores keep SCANS iterations over
// TOMBSTONES deleted keys each in flight (one long thread-pool job per scan), in-process.
//
// Result: the canary's operation with the hogs, every store's jobs going through one PoolShare
// of defaultPoolJobs() places (what the host does). Baseline: the canary's operation alone, no
// hogs, in the same run. Reference: the same attack with a share of 1024 places (every job
// straight into libuv's first-come-first-served queue, as before the share). A piece: the
// hogs' scan jobs (the longest job ended during each canary operation).
//
// The three phases take turns, ROUNDS times; each opens its stores afresh with its own share.
// The thread count is the process's (UV_THREADPOOL_SIZE, 4 unless set before the pool's first
// use: `UV_THREADPOOL_SIZE=8 npm run bench -- pool-share` measures what `modhost run` has).

import path from "node:path";
import { defaultPoolJobs, PoolShare, poolThreads } from "../storage/pool.ts";
import { ModuleStore } from "../storage/store.ts";
import { makeTempDir, removeTempDir, type Benchmark, type Row } from "./common.ts";
import { summarise } from "./stats.ts";

const HOGS = 3;
const SCANS = 32;
const TOMBSTONES = 200_000;
const OPS = 15;
const ROUNDS = 2;

const ALONE = "canary put + iteration, alone (per operation)";

async function openStores(dir: string, share: PoolShare): Promise<{ canary: ModuleStore; hogs: ModuleStore[] }> {
  const canary = await ModuleStore.open(path.join(dir, "canary"), undefined, { label: "canary", pool: share });
  await canary.openTree("blocks");
  const hogs: ModuleStore[] = [];
  for (let i = 0; i < HOGS; i++) {
    hogs.push(await ModuleStore.open(path.join(dir, `hog-${i}`), { maxKeys: 10_000_000 }, { label: `hog-${i}`, pool: share, ioConcurrency: SCANS }));
  }
  return { canary, hogs };
}

/** Deletes of keys that never existed: each leaves a tombstone a scan of the tree walks over. */
async function arm(dir: string): Promise<void> {
  for (let i = 0; i < HOGS; i++) {
    const s = await ModuleStore.open(path.join(dir, `hog-${i}`), { maxKeys: 10_000_000 }, { pool: new PoolShare(1024) });
    await s.openTree("t");
    for (let n = 0; n < TOMBSTONES; n += 10_000) {
      await s.batch("t", Array.from({ length: 10_000 }, (_, k) => ({ op: "delete" as const, key: `d${String(n + k).padStart(10, "0")}` })));
    }
    await s.close();
  }
}

/** OPS canary operations (ms each) with the hogs scanning, or alone; and the longest job during each. */
async function phase(dir: string, share: PoolShare, withHogs: boolean): Promise<{ ops: number[]; longest: number[] }> {
  const { canary, hogs } = await openStores(dir, share);
  let stop = false;
  const scanners = withHogs
    ? hogs.flatMap((h) => Array.from({ length: SCANS }, async () => {
        while (!stop) await h.iterate("t", { limit: 1 });
      }))
    : [];
  const ops: number[] = [];
  const longest: number[] = [];
  try {
    for (let i = 0; i < OPS; i++) {
      const watch = share.watch();
      const key = String(i).padStart(10, "0");
      const t0 = performance.now();
      await canary.put("blocks", key, { height: i });
      await canary.iterate("blocks", { gte: key, limit: 1 });
      ops.push(performance.now() - t0);
      watch.close();
      longest.push(watch.longestJobMs);
    }
  } finally {
    stop = true;
    await Promise.all(scanners);
    await Promise.all([canary.close(), ...hogs.map((h) => h.close())]);
  }
  return { ops, longest };
}

export const poolShare: Benchmark = {
  name: "pool-share",
  title: `The thread-pool share: a canary's storage while ${HOGS} stores scan ${TOMBSTONES.toLocaleString("en")} tombstones, ${SCANS} scans each in flight`,
  async run(): Promise<Row[]> {
    const dir = await makeTempDir("pool-share");
    try {
      await arm(dir);
      const s = { alone: [] as number[], shared: [] as number[], unshared: [] as number[], jobs: [] as number[] };
      for (let r = 0; r < ROUNDS; r++) {
        s.alone.push(...(await phase(dir, new PoolShare(defaultPoolJobs()), false)).ops);
        const shared = await phase(dir, new PoolShare(defaultPoolJobs()), true);
        s.shared.push(...shared.ops);
        s.jobs.push(...shared.longest);
        s.unshared.push(...(await phase(dir, new PoolShare(1024), true)).ops);
      }
      const threads = `${poolThreads()} threads, the share ${defaultPoolJobs()} places`;
      return [
        { what: "canary put + iteration, hogs scanning, through the share (per operation)", kind: "result", unit: "ms", stats: summarise(s.shared), vs: ALONE, note: threads },
        { what: "  longest job ended during each operation", kind: "piece", unit: "ms", stats: summarise(s.jobs), vs: ALONE },
        { what: "canary put + iteration, hogs scanning, no share (1024 places: libuv's queue)", kind: "reference", unit: "ms", stats: summarise(s.unshared), vs: ALONE },
        { what: ALONE, kind: "baseline", unit: "ms", stats: summarise(s.alone) },
      ];
    } finally {
      await removeTempDir(dir);
    }
  },
};
