// The host's fair share of libuv's thread pool (storage/pool.ts, issue #8): modules' LevelDB
// jobs and file API calls wait in one share that admits at most `jobs` of them at
// once and gives a free place to the module with the fewest running. First the share alone
// (deterministic: jobs the test ends by hand), then a store's jobs through it, then hostile
// modules of both runtimes keeping the pool busy with the longest jobs they can make (scans of
// tombstones) under the real host, next to a canary whose storage writes and reads must each
// be answered within a bound made of the jobs' measured length.

import test, { type ExecutionContext } from "ava";
import { fileURLToPath } from "node:url";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { PoolShare, poolThreads, threadPool } from "../storage/pool.ts";
import { ApiHub } from "../host/hub.ts";
import { parseDescriptor, resolveGrants } from "../capabilities/grants.ts";
import type { CallContext, HostServices } from "../capabilities/types.ts";
import type { ChainBackend } from "../chain/backend.ts";
import { ModuleStore } from "../storage/store.ts";
import { buildModulesDir, startHost, tempDir, waitFor, type TestHost } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { inlineModule } from "./helpers/modules.ts";
import { call } from "./helpers/rpc.ts";

/** A job the test ends by hand: `started` once the share admitted it. */
function manual() {
  let end!: () => void;
  let started = false;
  const done = new Promise<void>((resolve) => (end = resolve));
  return {
    fn: () => {
      started = true;
      return done;
    },
    end,
    get started() {
      return started;
    },
  };
}

/** Let every admission the share makes on a settled job happen (a few promise turns). */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

test("the pool share runs at most `jobs` at once; a module with nothing running gets the next free place ahead of another module's whole queue", async (t) => {
  const share = new PoolShare(2);
  const hog = Array.from({ length: 10 }, () => manual());
  const hogDone = hog.map((j) => share.run("hog", j.fn));
  await settle();
  t.deepEqual(hog.map((j) => j.started), [true, true, false, false, false, false, false, false, false, false], "two at once");
  const canary = manual();
  const canaryDone = share.run("canary", canary.fn);
  await settle();
  t.false(canary.started, "no place free yet");
  hog[0]!.end();
  await settle();
  t.true(canary.started, "the canary took the first place that freed, ahead of the hog's 8 waiting jobs");
  t.false(hog[2]!.started);
  t.like(share.stats(), { jobs: 2, running: 2, waiting: 8 });
  canary.end();
  await canaryDone;
  for (const j of hog) j.end();
  await Promise.all(hogDone);
  t.like(share.stats(), { running: 0, waiting: 0, admitted: 11 });
});

test("the pool share admits each module's jobs in the order they came, and alternates between modules with as many running", async (t) => {
  const share = new PoolShare(1);
  const order: string[] = [];
  const job = (who: string) => share.run(who.split(":")[0]!, async () => void order.push(who));
  const blocker = manual();
  const first = share.run("x", blocker.fn);
  const all = ["a:1", "a:2", "a:3", "b:1", "b:2", "c:1"].map(job);
  blocker.end();
  await Promise.all([first, ...all]);
  t.deepEqual(order, ["a:1", "b:1", "c:1", "a:2", "b:2", "a:3"]);
});

test("a job that fails gives its place back; pool jobs must be a positive integer", async (t) => {
  const share = new PoolShare(1);
  await t.throwsAsync(share.run("m", async () => Promise.reject(new Error("boom"))), { message: "boom" });
  t.is(await share.run("m", async () => 7), 7);
  t.like(share.stats(), { running: 0, waiting: 0 });
  t.throws(() => new PoolShare(0), { instanceOf: RangeError, message: /pool jobs must be a positive integer, got 0/ });
});

test("a store's LevelDB jobs go through its pool share, and its writes still complete in the order they were made", async (t) => {
  const dir = await tempDir(t);
  const share = new PoolShare(1);
  const store = await ModuleStore.open(dir, undefined, { pool: share, label: "m" });
  t.teardown(() => store.close());
  await store.openTree("t");
  const blocker = manual();
  const held = share.run("other", blocker.fn);
  const done: number[] = [];
  const writes = [0, 1, 2, 3].map((i) => store.put("t", "k", i).then(() => void done.push(i)));
  await settle();
  t.deepEqual(done, [], "no write completes while the share's one place is taken");
  t.true(share.stats().waiting >= 1, "the store's job waits in the share");
  blocker.end();
  await Promise.all([held, ...writes]);
  t.deepEqual(done, [0, 1, 2, 3]);
  t.is(await store.get("t", "k"), 3);
});

// ---------------------------------------------------------------------------------------
// The other work a module makes the host do in the pool: file API calls (its DNS lookups take
// no thread: test/dns.test.ts)

function hubFor(dataDir: string, resolve: HostServices["resolve"], module = "files") {
  const hub = new ApiHub({});
  const call: CallContext = {
    module, dataDir, chain: undefined as unknown as ChainBackend, store: undefined, config: {},
    services: { publish: () => true, resolve },
    events: { subscribe: () => [], unsubscribe: () => [], subscribed: () => [] },
    log: () => {},
  };
  const grants = (p: string) => resolveGrants([parseDescriptor(p)], [parseDescriptor(p)], []).effective;
  return { handle: (permission: string, method: string, params: Record<string, unknown>) => hub.handle(call, grants(permission), method, params) };
}

/** Takes every place of `share` with jobs of other modules (one each); `release` ends them. */
function fill(share: PoolShare) {
  const held = Array.from({ length: share.stats().jobs }, () => manual());
  const done = held.map((j, i) => share.run(`another-module-${i}`, j.fn));
  return { release: () => Promise.all(held.map((j) => j.end()).concat(done as never[])) };
}

test.serial("a file API call is one job in the host's pool share: it waits while the share is full and runs once a place frees", async (t) => {
  const dir = await tempDir(t);
  await writeFile(path.join(dir, "f"), "content");
  const { handle } = hubFor(dir, undefined);
  const full = fill(threadPool);
  let answered = false;
  const read = handle("read_filesystem", "read_file", { path: "f", encoding: "utf8" }).then((v) => ((answered = true), v));
  await waitFor(() => threadPool.stats().waiting > 0, 10_000, "the read waiting in the share");
  t.false(answered, "no answer while every place is taken");
  await full.release();
  t.is(await read, "content");
});

// ---------------------------------------------------------------------------------------
// Hostile modules under the real host

const HOG_FIXTURE = fileURLToPath(new URL("./fixtures/pool-hog/main.ts", import.meta.url));
const HOG_CAPS = ["read_storage", "write_storage", "subscribe_events"];

// The TypeScript twin of test/fixtures/pool-hog: tombstones, then, from the next block on, 64
// scans of them in flight and a writer adding fresh ones.
const POOL_HOG = (name: string) => inlineModule(name, HOG_CAPS, `
  void (async () => {
    let next = 0;
    const deletes = () => Array.from({ length: 10000 }, () => ({ op: "delete", key: "d" + String(next++).padStart(10, "0") }));
    await ctx.storage.openTree("t");
    while (next < 300000) await ctx.storage.transaction("t", deletes());
    ctx.log.info("armed", { tombstones: next });
    await new Promise<void>((resolve) => void ctx.events.subscribe("NewBlock", async () => resolve()));
    const iterate = async () => { for (;;) await ctx.storage.iterate("t", { limit: 1 }); };
    const write = async () => { for (;;) await ctx.storage.transaction("t", deletes()); };
    for (let i = 0; i < 64; i++) void iterate().catch(() => {});
    void write().catch(() => {});
  })();
`);

// For every block: a write (put: its old size read, then the batch written: two thread-pool
// jobs) and a read through the pool (an iteration: its step and its close, two jobs), each
// timed in the module, then a log line with both.
const CANARY = inlineModule("canary", ["subscribe_events", "read_storage", "write_storage"], `
  await ctx.storage.openTree("blocks");
  await ctx.events.subscribe("NewBlock", async (ev: any) => {
    const key = String(ev.payload.height).padStart(10, "0");
    const t0 = Date.now();
    await ctx.storage.put("blocks", key, ev.payload.hash);
    const t1 = Date.now();
    const back = await ctx.storage.iterate("blocks", { gte: key, limit: 1 });
    const t2 = Date.now();
    if (back.length === 1 && back[0].value === ev.payload.hash) ctx.log.info("stored block " + ev.payload.height, { write_ms: t1 - t0, read_ms: t2 - t1 });
  });
  ctx.log.info("canary up");
`);

const NATIVE_HOGS = ["hog-native-1", "hog-native-2"];
const TS_HOGS = ["hog-ts-1", "hog-ts-2"];
const HOGS = [...NATIVE_HOGS, ...TS_HOGS];
/** Pool jobs per canary operation, at most (a put: its batch, the quota's read of the old size being synchronous; an iteration: its step and its close). */
const JOBS_PER_OP = 2;
/** The canary's own RPC round trip, its slices of work and the answer on a loaded machine, beside the pool. */
const OVERHEAD_MS = 300;
const BLOCKS = 8;

async function hogHost(t: ExecutionContext): Promise<TestHost> {
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir);
  for (const name of NATIVE_HOGS) await writeNodeNative(modulesDir, name, HOG_FIXTURE, HOG_CAPS);
  // Each hog is allowed many jobs at once (an operator may raise storage_io_concurrency): the
  // share must stay fair whatever one module's own queue admits.
  // Its iterations' answers are small (storage_iter_max_bytes 64 KiB), so max_unread_bytes
  // holds none of the 64 back.
  const hogLimits = { storage_io_concurrency: 64, max_requests_in_flight: 128, storage_iter_max_bytes: 65_536, host_cpu_ms_per_s: 1000, cpu_time_ms: 10_000, restart: "never" } as const;
  return startHost(t, {
    dir,
    inline: { canary: CANARY, ...Object.fromEntries(TS_HOGS.map((n) => [n, POOL_HOG(n)])) },
    grants: { canary: ["subscribe_events", "read_storage", "write_storage"], ...Object.fromEntries(HOGS.map((n) => [n, HOG_CAPS])) },
    moduleLimits: Object.fromEntries(HOGS.map((n) => [n, hogLimits])),
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

test.serial("native and TypeScript modules keeping the thread pool busy with scans of 300,000 tombstones cannot starve another module's storage: each of the canary's writes and reads waits for at most one job at a time, and the host's RPC answers", async (t) => {
  t.timeout(300_000);
  const h = await hogHost(t);
  await h.waitForLog(/^canary up$/, { source: "canary", timeoutMs: 60_000 });
  for (const name of HOGS) await h.waitForLog(/^armed$/, { source: name, timeoutMs: 200_000 });
  await h.mine(1); // the hogs attack from this block on
  // The attack is on when the modules' jobs could fill every thread of the pool.
  const busy = () => threadPool.stats().running + threadPool.stats().waiting >= poolThreads();
  await waitFor(busy, 60_000, "module jobs for every thread of the pool");
  const rows: Array<{ write: number; read: number; bound: number; longest: number }> = [];
  for (let i = 0; i < BLOCKS; i++) {
    const watch = threadPool.watch();
    const mark = h.mark();
    const height = await h.mine(1);
    const rec = await h.waitForLog(new RegExp(`^stored block ${height}$`), { source: "canary", since: mark, timeoutMs: 60_000 });
    watch.close();
    const f = rec.fields as { write_ms: number; read_ms: number };
    // What the canary may wait for: per job of its own, one job running when it came (the
    // share gives it the next free place), at most the longest job that ended meanwhile; its
    // own jobs (a put of one key, an iteration of one entry) are small beside a scan.
    const bound = JOBS_PER_OP * watch.longestJobMs + OVERHEAD_MS;
    rows.push({ write: f.write_ms, read: f.read_ms, bound, longest: watch.longestJobMs });
    t.true(busy(), "the hogs kept the pool busy");
    const answered = await Promise.race([call(h, "list").then(() => true, () => false), new Promise<boolean>((r) => setTimeout(() => r(false), 10_000))]);
    t.true(answered, `the host answered an RPC call within 10 s after block ${height}`);
  }
  t.log(rows.map((r) => `write ${r.write} ms, read ${r.read} ms, bound ${r.bound.toFixed(0)} ms (longest job ${r.longest.toFixed(0)} ms)`).join("\n"));
  // Medians over the blocks: one stall of a loaded machine is not what is tested.
  const bound = median(rows.map((r) => r.bound));
  t.true(median(rows.map((r) => r.write)) <= bound, `the canary's writes took ${median(rows.map((r) => r.write))} ms (median), over ${bound.toFixed(0)} ms`);
  t.true(median(rows.map((r) => r.read)) <= bound, `the canary's reads took ${median(rows.map((r) => r.read))} ms (median), over ${bound.toFixed(0)} ms`);
  for (const name of HOGS) t.is(h.mustStatus(name).state, "running", `${name} was held back, not stopped`);
});
