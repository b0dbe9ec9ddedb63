// A small mutation fuzzer driver, shared by the fuzz targets in this folder.
//
// A target is a function of bytes that must not throw (it catches the errors its input is
// expected to cause and throws only on a real failure: a crash, a broken invariant). The
// driver feeds it seeds and mutations of what is in the corpus, deterministically from a
// seed, and reports three kinds of failure: a throw (crash), one input taking longer than
// `hangMs` (hang), and heap growth beyond `maxHeapGrowthMb` between the start and the end of
// the run after garbage collection (leak). A failing input is kept, in hex, in the report.
//
// No coverage guidance: mutations are biased towards what breaks length-prefixed MessagePack
// (length fields, container and string headers, extension and reserved bytes, boundaries).

import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

export interface FuzzTarget {
  name: string;
  /** Inputs to start from (the corpus grows with nothing else: mutations are not kept). */
  seeds: Uint8Array[];
  /** Run one input. Throw only for a real failure. */
  run(input: Uint8Array): void | Promise<void>;
  /** How many protocol frames one input stands for (for the report); default 1. */
  framesOf?(input: Uint8Array): number;
  /** Called once after the run (close sockets, stores). */
  close?(): void | Promise<void>;
}

export interface FuzzOptions {
  iterations: number;
  /** PRNG seed: the same seed replays the same inputs. */
  seed?: number;
  /** One input taking longer than this is a hang. */
  hangMs?: number;
  /** Heap growth (after GC) over the run above this is a leak. */
  maxHeapGrowthMb?: number;
  /** Largest mutated input. */
  maxInputBytes?: number;
  /** Stop early (still a pass) after this long; 0 = no limit. */
  timeLimitMs?: number;
  /** Called every `progressEvery` iterations. */
  onProgress?: (done: number, report: FuzzReport) => void;
  progressEvery?: number;
  /** Run each of the slowest inputs this many times again after the run (default 0: the short runs in npm test). */
  replays?: number;
}

export interface Failure {
  kind: "crash" | "hang" | "leak";
  message: string;
  /** The input, hex (for a leak: the last one). */
  input: string;
  iteration: number;
}

export interface FuzzReport {
  target: string;
  iterations: number;
  frames: number;
  failures: Failure[];
  slowestMs: number;
  /**
   * The slowest inputs (CPU time of this thread), the slowest first, at most SLOWEST_KEPT; each
   * run again `replays` times after the run (`replayedMs`: the least wall time), so that an input
   * slow only because a collection, a clock tick or the machine's load fell in it is told from a
   * slow one.
   */
  slowest: Array<{ iteration: number; ms: number; bytes: number; input: string; replayedMs?: number; data?: Uint8Array }>;
  heapGrowthMb: number;
  elapsedMs: number;
}

/** xorshift32: small, fast and reproducible. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 0x9e3779b9;
  }
  next(): number {
    let x = this.s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s;
  }
  /** 0 <= n < max */
  below(max: number): number {
    return max <= 0 ? 0 : this.next() % max;
  }
  pick<T>(a: readonly T[]): T {
    return a[this.below(a.length)]!;
  }
}

/** Bytes that mean something to a MessagePack or frame reader. */
const INTERESTING_BYTES = [
  0x00, 0x01, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9,
  0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd3, 0xd4, 0xd6, 0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff,
];
const INTERESTING_U32 = [0, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff, 262_144, 262_145, 16 * 1024 * 1024, 16 * 1024 * 1024 + 1];
/** Headers a hostile peer likes: huge containers and strings, extensions, nesting. */
const HOSTILE_SNIPPETS = [
  [0xdd, 0xff, 0xff, 0xff, 0xff],
  [0xdf, 0x00, 0x04, 0x00, 0x01],
  [0xdb, 0x01, 0x00, 0x00, 0x00],
  [0xc6, 0x7f, 0xff, 0xff, 0xff],
  [0xd6, 0x69, 0, 0, 0, 1],
  [0xd6, 0x70, 0, 0, 0, 1],
  [0xd4, 0x72, 0x40],
  [0xa9, ...Buffer.from("__proto__")],
  [0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91],
  [0xa1, 0xff],
  [0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
];

export function mutate(input: Uint8Array, corpus: readonly Uint8Array[], rng: Rng, maxBytes: number): Uint8Array {
  let b = Buffer.from(input);
  const rounds = 1 + rng.below(4);
  for (let r = 0; r < rounds; r++) {
    const at = rng.below(b.length + 1);
    switch (rng.below(11)) {
      case 0: // flip a bit
        if (b.length) b[rng.below(b.length)]! ^= 1 << rng.below(8);
        break;
      case 1: // an interesting byte
        if (b.length) b[rng.below(b.length)] = rng.pick(INTERESTING_BYTES);
        break;
      case 2: // a random byte
        if (b.length) b[rng.below(b.length)] = rng.below(256);
        break;
      case 3: { // insert random bytes
        const n = 1 + rng.below(8);
        const ins = Buffer.alloc(n);
        for (let i = 0; i < n; i++) ins[i] = rng.below(256);
        b = Buffer.concat([b.subarray(0, at), ins, b.subarray(at)]);
        break;
      }
      case 4: { // delete a range
        const n = 1 + rng.below(Math.max(1, Math.min(16, b.length - at)));
        b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + n))]);
        break;
      }
      case 5: { // duplicate a range
        const from = rng.below(b.length + 1);
        const n = rng.below(Math.min(64, b.length - from) + 1);
        b = Buffer.concat([b.subarray(0, at), b.subarray(from, from + n), b.subarray(at)]);
        break;
      }
      case 6: { // a big-endian boundary integer (lengths live there)
        const v = rng.pick(INTERESTING_U32);
        const size = rng.pick([1, 2, 4]);
        if (b.length >= size) {
          const p = rng.below(b.length - size + 1);
          if (size === 1) b[p] = v & 0xff;
          else if (size === 2) b.writeUInt16BE(v & 0xffff, p);
          else b.writeUInt32BE(v >>> 0, p);
        }
        break;
      }
      case 7: // a hostile header
        b = Buffer.concat([b.subarray(0, at), Buffer.from(rng.pick(HOSTILE_SNIPPETS)), b.subarray(at)]);
        break;
      case 8: { // splice with another corpus entry
        const other = rng.pick(corpus);
        const from = rng.below(other.length + 1);
        b = Buffer.concat([b.subarray(0, at), Buffer.from(other.subarray(from, from + rng.below(other.length - from + 1)))]);
        break;
      }
      case 9: // truncate
        b = b.subarray(0, at);
        break;
      case 10: { // repeat a byte many times (deep nesting, long runs)
        const n = 16 + rng.below(256);
        b = Buffer.concat([b.subarray(0, at), Buffer.alloc(n, rng.pick([0x91, 0x81, 0xc0, 0xa1, rng.below(256)])), b.subarray(at)]);
        break;
      }
    }
  }
  return b.length > maxBytes ? b.subarray(0, maxBytes) : b;
}

let gcFn: (() => void) | undefined;
/** Full garbage collection, also when node was started without --expose-gc. */
export function collectGarbage(): void {
  if (!gcFn) {
    setFlagsFromString("--expose-gc");
    gcFn = runInNewContext("gc") as () => void;
  }
  gcFn();
}

const heapMb = () => process.memoryUsage().heapUsed / (1024 * 1024);

export async function fuzz(target: FuzzTarget, opts: FuzzOptions): Promise<FuzzReport> {
  const rng = new Rng(opts.seed ?? 1);
  const hangMs = opts.hangMs ?? 2000;
  const maxBytes = opts.maxInputBytes ?? 64 * 1024;
  const report: FuzzReport = { target: target.name, iterations: 0, frames: 0, failures: [], slowestMs: 0, slowest: [], heapGrowthMb: 0, elapsedMs: 0 };
  const started = performance.now();
  const corpus = target.seeds.length ? target.seeds : [new Uint8Array([0x80])];
  // Warm up (JIT, caches, lazily created state) before the heap baseline.
  for (const s of corpus) await runOne(target, s, 0, hangMs, report);
  collectGarbage();
  const heapBefore = heapMb();
  let last: Uint8Array = corpus[0]!;
  for (let i = 0; i < opts.iterations; i++) {
    if (opts.timeLimitMs && performance.now() - started > opts.timeLimitMs) break;
    const input = i < corpus.length ? corpus[i]! : mutate(rng.pick(corpus), corpus, rng, maxBytes);
    last = input;
    await runOne(target, input, i, hangMs, report);
    report.iterations++;
    if (report.failures.length >= 10) break;
    if (opts.onProgress && opts.progressEvery && (i + 1) % opts.progressEvery === 0) opts.onProgress(i + 1, report);
  }
  for (const slow of report.slowest) {
    // The least wall time of the replays: this thread's CPU clock advances in the kernel's
    // ticks (4 ms here), fine for a run's sum and for hangs, too coarse for one short input.
    let least = Number.POSITIVE_INFINITY;
    for (let k = 0; k < (opts.replays ?? 0) && slow.data; k++) {
      const quiet: FuzzReport = { ...report, failures: [], slowest: [] };
      const t0 = performance.now();
      await runOne(target, slow.data, slow.iteration, hangMs, quiet);
      least = Math.min(least, performance.now() - t0);
      report.failures.push(...quiet.failures); // a replay that fails is a finding too
    }
    if (Number.isFinite(least)) slow.replayedMs = Math.round(least * 1000) / 1000;
    delete slow.data;
  }
  await target.close?.();
  collectGarbage();
  report.heapGrowthMb = Math.round((heapMb() - heapBefore) * 10) / 10;
  if (report.heapGrowthMb > (opts.maxHeapGrowthMb ?? 64)) {
    report.failures.push({ kind: "leak", message: `heap grew by ${report.heapGrowthMb} MB over the run (bound ${opts.maxHeapGrowthMb ?? 64} MB)`, input: Buffer.from(last).toString("hex"), iteration: report.iterations });
  }
  report.elapsedMs = Math.round(performance.now() - started);
  return report;
}

/** CPU time of this thread, in ms: what an input costs, whatever else the machine runs. */
const threadCpuMs = () => {
  const u = process.threadCpuUsage();
  return (u.user + u.system) / 1000;
};

async function runOne(target: FuzzTarget, input: Uint8Array, iteration: number, hangMs: number, report: FuzzReport): Promise<void> {
  const cpu0 = threadCpuMs();
  let timer: NodeJS.Timeout | undefined;
  try {
    const done = target.run(input);
    if (done) {
      await Promise.race([
        done,
        new Promise((_, reject) => (timer = setTimeout(() => reject(new HangError(`no result within ${hangMs} ms`)), hangMs))),
      ]);
    }
  } catch (err) {
    const hang = err instanceof HangError;
    report.failures.push({ kind: hang ? "hang" : "crash", message: hang ? err.message : String((err as Error)?.stack ?? err), input: Buffer.from(input).toString("hex").slice(0, 20_000), iteration });
  } finally {
    clearTimeout(timer);
  }
  // A synchronous target cannot be interrupted: it is a hang if it took too long, counted in
  // this thread's CPU time, not the wall's: on a busy machine (CI runs many test files at once,
  // at load 20 and more) the wall time of one input grows tenfold while its cost does not.
  const ms = threadCpuMs() - cpu0;
  if (ms > report.slowestMs) report.slowestMs = Math.round(ms * 100) / 100;
  keepSlowest(report.slowest, iteration, ms, input);
  if (ms > hangMs && !report.failures.some((f) => f.iteration === iteration)) {
    report.failures.push({ kind: "hang", message: `one input took ${Math.round(ms)} ms of CPU (bound ${hangMs} ms)`, input: Buffer.from(input).toString("hex").slice(0, 20_000), iteration });
  }
  report.frames += target.framesOf?.(input) ?? 1;
}

class HangError extends Error {}

/** How many of the slowest inputs a report names: enough to see a class, not only one outlier. */
const SLOWEST_KEPT = 5;

function keepSlowest(kept: FuzzReport["slowest"], iteration: number, ms: number, input: Uint8Array): void {
  if (kept.length >= SLOWEST_KEPT && ms <= kept[kept.length - 1]!.ms) return;
  kept.push({ iteration, ms: Math.round(ms * 100) / 100, bytes: input.length, input: Buffer.from(input.subarray(0, 48)).toString("hex"), data: Uint8Array.from(input) });
  kept.sort((a, b) => b.ms - a.ms);
  if (kept.length > SLOWEST_KEPT) kept.pop();
}

/** Seeds from docs/protocol-vectors.json: every vector's frame and every invalid input. */
export async function protocolVectorFrames(): Promise<Buffer[]> {
  const { readFile } = await import("node:fs/promises");
  const json = JSON.parse(await readFile(new URL("../docs/protocol-vectors.json", import.meta.url), "utf8")) as {
    vectors: Array<{ frame: string }>;
    invalid: Array<{ bytes: string; fill?: { at: number; byte: string; count: number } }>;
  };
  return [...json.vectors.map((v) => Buffer.from(v.frame, "hex")), ...json.invalid.map((v) => {
    const b = Buffer.from(v.bytes, "hex");
    return v.fill ? Buffer.concat([b.subarray(0, v.fill.at), Buffer.alloc(v.fill.count, Number.parseInt(v.fill.byte, 16)), b.subarray(v.fill.at)]) : b;
  })];
}

export function formatReport(r: FuzzReport): string {
  const head = `${r.target}: ${r.iterations} inputs, ${r.frames} frames, ${r.failures.length} failures, slowest input ${r.slowestMs} ms, heap growth ${r.heapGrowthMb} MB, ${(r.elapsedMs / 1000).toFixed(1)} s`;
  const slow = r.slowest.map((s) => `  slow: input ${s.iteration}, ${s.ms} ms of CPU${s.replayedMs === undefined ? "" : ` (replayed: ${s.replayedMs} ms of wall time at least)`}, ${s.bytes} bytes, from ${s.input}`);
  return [head, ...slow, ...r.failures.map((f) => `  ${f.kind} at input ${f.iteration}: ${f.message.split("\n").slice(0, 6).join("\n    ")}\n    input: ${f.input.slice(0, 400)}`)].join("\n");
}
