// Profiling aid for the sequential TS calls of bench/isolate-paths.ts (not part of `npm run bench`):
// runs bench/fixtures/modules/isolate-paths (its Promise.all phase cut short) under a
// ModuleManager and prints, per sequential `await ctx.storage.get` and per
// `await ctx.chain.getBlockHeight()`: the module's wall time (its own clock), the CPU time of
// each thread of the host process and of the module's process tree (/proc schedstat), and the
// voluntary context switches (each one a thread that went to sleep and had to be woken), taken
// where the host dispatches the first and last call of each phase. The bare in-process isolate
// of bench/isolate-paths.ts runs between module runs, measured the same way (this process's
// threads). CPU time and wake-ups are what a loaded machine inflates least. The host's rows
// include this process's garbage collections (count and pause per call; the first phase
// after the module's start also pays for the start's promotions).
//   node --no-node-snapshot --import tsx bench/seq-profile.ts [--runs 3] [--n 5000]
// Switches: SEQ_UNSANDBOXED=1 runs the module without the sandbox; SEQ_MARKS=1 prints the
// phases' bounds on the clock of --cpu-prof profiles (to cut a profile into the phases);
// SEQ_STRACE=get|height writes `strace -c -f` of each process over that phase to
// /tmp/seq-strace-PHASE-ROLE.txt; SEQ_HEAP=1 prints where this process allocates per call
// (sampling heap profiler, collected objects included).
import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { PerformanceObserver, constants as perfConstants } from "node:perf_hooks";
import ivm from "isolated-vm";
import { ClassicLevel } from "classic-level";
import type { ModuleManager } from "../host/manager.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { decodeValue, encodeKey, encodeValue } from "../storage/codec.ts";
import { makeTempDir, processTree, removeTempDir } from "./common.ts";
import { summarise } from "./stats.ts";
import { ISOLATE_PATHS_MODULE, runIsolatePathsModule } from "./isolate-paths-module.ts";

const { values } = parseArgs({ options: { runs: { type: "string" }, n: { type: "string" } } });
const RUNS = Number(values.runs ?? 3);
const N = Number(values.n ?? 5000);
const MODULE = ISOLATE_PATHS_MODULE;
const VALUE = { height: 812345, hash: "00000000000000000002a7c4c1e48d76", ok: true };

/** Per thread (process role / thread name): CPU ns and voluntary context switches so far. */
type Sample = Map<string, { ns: number; sw: number }>;
function sample(roles: Array<[string, number]>): Sample {
  const out: Sample = new Map();
  // This process's collections, as pseudo-threads: "µs" is then scavenges per 1000 calls, and the pause µs per call.
  out.set("host: scavenges per 1000", { ns: gcs.minor * 1e6, sw: 0 });
  out.set("host: mark-compacts per 1000", { ns: gcs.major * 1e6, sw: 0 });
  out.set("host: GC pause µs", { ns: gcs.ms * 1e6, sw: 0 });
  for (const [role, pid] of roles) {
    let tids: string[] = [];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const tid of tids) {
      try {
        const comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim();
        const name = `${role}/${Number(tid) === pid ? "main" : comm}`;
        const ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
        const sw = Number(/voluntary_ctxt_switches:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/task/${tid}/status`, "utf8"))?.[1] ?? 0);
        const cur = out.get(name) ?? { ns: 0, sw: 0 };
        out.set(name, { ns: cur.ns + ns, sw: cur.sw + sw });
      } catch {
        // gone meanwhile
      }
    }
  }
  return out;
}
/** (b - a) per call: µs of CPU and switches, threads with less than 0.5 µs left out. */
function perCall(a: Sample, b: Sample, n: number): Map<string, { us: number; sw: number }> {
  const out = new Map<string, { us: number; sw: number }>();
  for (const [k, v] of b) {
    const w = a.get(k) ?? { ns: 0, sw: 0 };
    const us = (v.ns - w.ns) / 1000 / n;
    if (us >= 0.5) out.set(k, { us, sw: (v.sw - w.sw) / n });
  }
  return out;
}

type Phase = Map<string, { us: number; sw: number }>;

const inspector = process.env.SEQ_HEAP ? new (await import("node:inspector")).Session() : undefined;
inspector?.connect();
function heapMark(name: string): void {
  if (name === "get0" || name === "h0") {
    inspector!.post("HeapProfiler.startSampling", { samplingInterval: 256, includeObjectsCollectedByMinorGC: true, includeObjectsCollectedByMajorGC: true });
    return;
  }
  inspector!.post("HeapProfiler.stopSampling", (err, res) => {
    if (err) throw err;
    type Node = { callFrame: { functionName: string; url: string; lineNumber: number }; selfSize: number; children: Node[] };
    const bySite = new Map<string, number>();
    let total = 0;
    const walk = (n: Node, stack: string[]) => {
      const here = `${n.callFrame.functionName || "(anon)"} ${n.callFrame.url.split("/").slice(-2).join("/")}:${n.callFrame.lineNumber}`;
      if (n.selfSize > 0) {
        const key = [here, ...stack.slice(-2)].join(" < ");
        bySite.set(key, (bySite.get(key) ?? 0) + n.selfSize);
        total += n.selfSize;
      }
      for (const c of n.children) walk(c, [...stack, here].slice(-3).reverse().slice(0, 3).reverse());
    };
    walk((res as unknown as { profile: { head: Node } }).profile.head, []);
    console.log(`heap ${name}: ${(total / (N - 1)).toFixed(0)} bytes allocated per call (sampled)`);
    for (const [k, v] of [...bySite].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log(`  ${(v / (N - 1)).toFixed(0).padStart(6)} B  ${k}`);
  });
}

// This process's garbage collections (the host's, or the bare isolate's process), counted per phase.
const gcs = { minor: 0, major: 0, ms: 0 };
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const kind = ((e as { detail?: unknown }).detail as { kind?: number } | undefined)?.kind;
    if (kind === perfConstants.NODE_PERFORMANCE_GC_MINOR) gcs.minor++;
    else gcs.major++;
    gcs.ms += e.duration;
  }
}).observe({ entryTypes: ["gc"] });

async function moduleRun(dir: string, chain: EmbeddedChain): Promise<{ get_us: number; height_us: number; get: Phase; height: Phase }> {
  let gets = 0;
  let heights = 0;
  let roles: Array<[string, number]> | undefined;
  let tracers: ChildProcess[] = [];
  const marks: Record<string, Sample> = {};
  const mark = (name: string, manager: ModuleManager) => {
    roles ??= [["host", process.pid], ...processTree(manager.processOf(MODULE)?.pid).map((p, i): [string, number] => [`mod${i}`, p])];
    marks[name] = sample(roles);
    // For cutting a --cpu-prof profile into the phases (its timestamps are this clock's, µs).
    if (process.env.SEQ_MARKS) console.log(`mark ${name} ${process.hrtime.bigint() / 1000n}`);
    // SEQ_STRACE=get|height: `strace -c -f` of the module's process tree (and of this process) over that phase.
    const traced = process.env.SEQ_STRACE;
    if (traced && name === (traced === "get" ? "get0" : "h0")) {
      tracers = roles!.filter(([role]) => role !== "mod0").map(([role, pid]) => spawn("strace", ["-c", "-f", "-p", String(pid), "-o", `/tmp/seq-strace-${traced}-${role}.txt`], { stdio: "ignore" }));
    }
    if (traced && name === (traced === "get" ? "get1" : "h1")) for (const t of tracers) t.kill("SIGINT");
    // SEQ_HEAP=1: where this process allocates over each phase (sampled, collected objects included).
    if (process.env.SEQ_HEAP) heapMark(name);
  };
  const fields = await runIsolatePathsModule(dir, chain, {
    config: { n: N, rounds: 1, batch: 1 },
    unsandboxed: Boolean(process.env.SEQ_UNSANDBOXED),
    onRequest: (method, manager) => {
      if (method === "storage_get") {
        ++gets;
        if (gets === 301) mark("get0", manager);
        if (gets === 300 + N) mark("get1", manager);
      } else if (method === "get_block_height") {
        ++heights;
        if (heights === 301) mark("h0", manager);
        if (heights === 301 + N - 1) mark("h1", manager);
      }
    },
  });
  if (!marks.h1) throw new Error(`${MODULE} reported before its last height was marked`);
  const f = fields as { get_us: number; height_us: number };
  return { ...f, get: perCall(marks.get0!, marks.get1!, N - 1), height: perCall(marks.h0!, marks.h1!, N - 1) };
}

async function bareRun(raw: ClassicLevel<Uint8Array, Uint8Array>, key: Uint8Array, chain: EmbeddedChain): Promise<{ get_us: number; height_us: number; get: Phase; height: Phase }> {
  const isolate = new ivm.Isolate({ memoryLimit: 128 });
  const marks: Record<string, Sample> = {};
  const roles: Array<[string, number]> = [["host", process.pid]];
  let gets = 0;
  let heights = 0;
  let tracer: ChildProcess | undefined;
  const bareMark = (name: string): Sample => {
    const traced = process.env.SEQ_STRACE;
    if (traced && name === (traced === "get" ? "get0" : "h0")) tracer = spawn("strace", ["-c", "-f", "-p", String(process.pid), "-o", `/tmp/seq-strace-${traced}-bare.txt`], { stdio: "ignore" });
    if (traced && name === (traced === "get" ? "get1" : "h1")) tracer?.kill("SIGINT");
    return sample(roles);
  };
  try {
    const context = await isolate.createContext();
    const g = context.global;
    await g.set("getRef", new ivm.Reference(async () => {
      ++gets;
      if (gets === 301) marks.get0 = bareMark("get0");
      if (gets === 300 + N) marks.get1 = bareMark("get1");
      return decodeValue((await raw.get(key))!);
    }));
    await g.set("heightRef", new ivm.Reference(async () => {
      ++heights;
      if (heights === 301) marks.h0 = bareMark("h0");
      if (heights === 301 + N - 1) marks.h1 = bareMark("h1");
      return chain.getBlockHeight();
    }));
    await context.eval(`
      globalThis.get = () => getRef.apply(undefined, [], { result: { promise: true, copy: true } });
      globalThis.height = () => heightRef.apply(undefined, [], { result: { promise: true, copy: true } });`);
    const f = JSON.parse((await context.eval(`
(async () => {
  for (let i = 0; i < 300; i++) await get();
  let t0 = Date.now();
  for (let i = 0; i < ${N}; i++) await get();
  const get_us = ((Date.now() - t0) * 1000) / ${N};
  for (let i = 0; i < 300; i++) await height();
  t0 = Date.now();
  for (let i = 0; i < ${N}; i++) await height();
  const height_us = ((Date.now() - t0) * 1000) / ${N};
  return JSON.stringify({ get_us, height_us });
})()`, { promise: true })) as string);
    return { ...f, get: perCall(marks.get0!, marks.get1!, N - 1), height: perCall(marks.h0!, marks.h1!, N - 1) };
  } finally {
    isolate.dispose();
  }
}

const dir = await makeTempDir("seqprof");
const chain = await EmbeddedChain.create({ matureBlocks: 0 });
const raw = new ClassicLevel<Uint8Array, Uint8Array>(path.join(dir, "raw"), { keyEncoding: "view", valueEncoding: "view" });
await raw.open();
const key = encodeKey("k", 1024);
await raw.put(key, encodeValue(VALUE, 1 << 20));
type Run = Awaited<ReturnType<typeof moduleRun>>;
const mods: Run[] = [];
const bares: Run[] = [];
try {
  for (let run = 0; run < RUNS; run++) {
    mods.push(await moduleRun(path.join(dir, `m${run}`), chain));
    bares.push(await bareRun(raw, key, chain));
  }
} finally {
  await raw.close();
  await chain.close();
  await removeTempDir(dir);
}
const med = (xs: number[]) => summarise(xs).median;
for (const [label, runs] of [["module", mods], ["bare", bares]] as const) {
  for (const phase of ["get", "height"] as const) {
    const wall = runs.map((r) => (phase === "get" ? r.get_us : r.height_us));
    const keys = [...new Set(runs.flatMap((r) => [...r[phase].keys()]))].sort();
    const threads = keys.map((k) => {
      const us = med(runs.map((r) => r[phase].get(k)?.us ?? 0));
      const sw = med(runs.map((r) => r[phase].get(k)?.sw ?? 0));
      return { k, us, sw };
    }).filter((t) => t.us >= 0.5);
    const total = threads.filter((t) => !t.k.includes(": ")).reduce((s, t) => s + t.us, 0); // threads only, not the GC pseudo-rows
    console.log(`${label} ${phase}: wall ${wall.map((x) => x.toFixed(1)).join(" ")} µs/call (median ${med(wall).toFixed(1)}); CPU ${total.toFixed(1)} µs/call`);
    for (const t of threads) console.log(`    ${t.k.padEnd(28)} ${t.us.toFixed(1).padStart(7)} µs  ${t.sw.toFixed(2)} sw`);
  }
}
console.log(`load ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}`);
