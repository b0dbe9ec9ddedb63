// A small mutation fuzzer for the parsers at modhost's edges (config and manifest TOML, the
// registry index, JSON-RPC bodies, http_request answers, a Core node's answers and ZMQ notices). Each target (fuzz/<area>-*.ts) says
// how to seed it and what one input must do: return, or throw only its documented error type;
// anything else is a finding. The loop runs in a worker thread so that the main thread can
// watch it: an input that takes longer than `hangMs` is a hang (the worker is terminated), and
// heap growth between the warm-up and the end beyond `maxHeapGrowthMB` is a leak.
//
// Inputs are a pure function of (seed, iteration): a finding is reported with its iteration and
// the input itself (base64), and `--seed S --only I` replays it.
//
//   npm run fuzz:edges -- [--iterations N] [--seed S] [--only I] [target ...]
//   (targets: config-toml manifest-toml registry-index jsonrpc-body core-facade-body http-response
//    core-answer zmq-notice; default all)

import { Worker } from "node:worker_threads";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

export interface EdgesTarget {
  /** Inputs to mutate (fixtures, docs examples). */
  seeds(): Promise<Uint8Array[]> | Uint8Array[];
  /** Tokens worth inserting (syntax of the format). */
  dictionary?: string[];
  /** Inputs are cut to this length (default 64 KiB). */
  maxInputBytes?: number;
  setup?(): Promise<void> | void;
  teardown?(): Promise<void> | void;
  /** One input. Throw (anything) only for a finding: an unexpected error type, a wrong answer. */
  run(input: Uint8Array): Promise<void> | void;
}

export interface Finding {
  iteration: number;
  /** base64 */
  input: string;
  error: string;
}

export interface FuzzResult {
  target: string;
  iterations: number;
  findings: Finding[];
  /** Set when an input did not finish within hangMs. */
  hang?: Finding;
  heapGrowthBytes: number;
  /** The slowest inputs by CPU time of the worker's thread (replay one with --only), at most 5. */
  slowest?: Array<{ iteration: number; ms: number; bytes: number }>;
  /** The longest delay of the worker's event loop after the warm-up (its servers run on it), ms; absent when the loop never turned (a target that never yields). */
  maxLoopDelayMs?: number;
  /** Set when the heap grew more than maxHeapGrowthMB. */
  leak?: string;
}

export interface FuzzOptions {
  iterations: number;
  seed?: number;
  /** Replay this one iteration only. */
  only?: number;
  hangMs?: number;
  maxHeapGrowthMB?: number;
  /** Stop after this many findings (default 5). */
  maxFindings?: number;
}

export const TARGETS = ["config-toml", "manifest-toml", "registry-index", "jsonrpc-body", "core-facade-body", "http-response", "core-answer", "zmq-notice"] as const;

// ---------------------------------------------------------------------------------------
// Deterministic mutation

/** mulberry32: a small seeded PRNG. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const INTERESTING = ["\0", "\n", "\r\n", "\\", '"', "'", "'''", '"""', "\u00ff", "\ud800", "🙂", "-1", "0", "1e999", "9007199254740993", "NaN", "inf", "true", "null", "{}", "[]"];

/** Input number `i` of a run with `seed`: a seed input with 1 to 6 mutations. */
export function generate(seeds: readonly Uint8Array[], dictionary: readonly string[], seed: number, i: number, maxBytes: number): Uint8Array {
  const r = rng((seed * 0x9e3779b1) ^ (i * 0x85ebca6b));
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  let b = Buffer.from(pick(seeds));
  if (i < seeds.length) return seeds[i]!; // every seed as it is, first
  const tokens = [...dictionary, ...INTERESTING];
  const rounds = 1 + Math.floor(r() * 6);
  for (let k = 0; k < rounds; k++) {
    const at = Math.floor(r() * (b.length + 1));
    switch (Math.floor(r() * 9)) {
      case 0: // flip a bit
        if (b.length) b[at % b.length]! ^= 1 << Math.floor(r() * 8);
        break;
      case 1: // random byte
        if (b.length) b[at % b.length] = Math.floor(r() * 256);
        break;
      case 2: { // delete a span
        const n = Math.floor(r() * 16) + 1;
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + n)]);
        break;
      }
      case 3: // insert a token
        b = Buffer.concat([b.subarray(0, at), Buffer.from(pick(tokens)), b.subarray(at)]);
        break;
      case 4: { // repeat a span (deep nesting, long lines)
        const n = Math.floor(r() * 8) + 1;
        const span = b.subarray(at, at + n);
        const times = Math.floor(r() * 200) + 2;
        b = Buffer.concat([b.subarray(0, at), Buffer.concat(Array(times).fill(span)), b.subarray(at)]);
        break;
      }
      case 5: { // splice in part of another seed
        const other = pick(seeds);
        const from = Math.floor(r() * (other.length + 1));
        b = Buffer.concat([b.subarray(0, at), other.subarray(from, from + Math.floor(r() * 64)), b.subarray(at)]);
        break;
      }
      case 6: // truncate
        b = b.subarray(0, at);
        break;
      case 7: { // swap two lines
        const lines = b.toString("latin1").split("\n");
        if (lines.length > 1) {
          const x = Math.floor(r() * lines.length);
          const y = Math.floor(r() * lines.length);
          [lines[x], lines[y]] = [lines[y]!, lines[x]!];
          b = Buffer.from(lines.join("\n"), "latin1");
        }
        break;
      }
      default: { // replace a number with an extreme one
        const s = b.toString("latin1").replace(/\d+/, () => pick(["0", "-1", "4294967296", "99999999999999999999", "1.5", "1e308"]));
        b = Buffer.from(s, "latin1");
      }
    }
  }
  return b.length > maxBytes ? b.subarray(0, maxBytes) : b;
}

// ---------------------------------------------------------------------------------------
// Running a target in a watched worker

const WORKER = fileURLToPath(new URL("./edges-worker.ts", import.meta.url));

export function fuzzTarget(target: string, opts: FuzzOptions): Promise<FuzzResult> {
  const hangMs = opts.hangMs ?? 10_000;
  const progress = new Int32Array(new SharedArrayBuffer(8)); // [iteration in progress, 1 while running one]
  const worker = new Worker(WORKER, {
    workerData: { target, opts: { seed: 1, maxFindings: 5, maxHeapGrowthMB: 64, ...opts }, progress },
    // Node refuses --no-node-snapshot in a worker; tsx comes along.
    execArgv: process.execArgv.filter((a) => !a.includes("node-snapshot")),
    resourceLimits: { maxOldGenerationSizeMb: 512 },
  });
  return new Promise((resolve, reject) => {
    let last = -1;
    let since = Date.now();
    const watch = setInterval(() => {
      const now = Atomics.load(progress, 0);
      if (now !== last || Atomics.load(progress, 1) === 0) {
        last = now;
        since = Date.now();
        return;
      }
      if (Date.now() - since > hangMs) {
        clearInterval(watch);
        worker.removeAllListeners("exit");
        void worker.terminate();
        void hangFinding(target, opts, now, hangMs).then(resolve, reject);
      }
    }, 200);
    worker.once("message", (result: FuzzResult) => {
      clearInterval(watch);
      resolve(result);
    });
    worker.once("error", (err) => {
      clearInterval(watch);
      reject(err);
    });
    worker.once("exit", (code) => {
      clearInterval(watch);
      if (code !== 0) reject(new Error(`the fuzz worker for ${target} exited with code ${code} (out of memory past 512 MiB?)`));
    });
  });
}

async function hangFinding(target: string, opts: FuzzOptions, iteration: number, hangMs: number): Promise<FuzzResult> {
  const mod = (await import(`./${target}.ts`)) as { default: EdgesTarget };
  const t = mod.default;
  const input = generate(await t.seeds(), t.dictionary ?? [], opts.seed ?? 1, iteration, t.maxInputBytes ?? 64 * 1024);
  const hang = { iteration, input: Buffer.from(input).toString("base64"), error: `did not finish within ${hangMs} ms` };
  return { target, iterations: iteration, findings: [], hang, heapGrowthBytes: 0 };
}

/** Whether a result has anything to report. */
export function failed(r: FuzzResult): boolean {
  return r.findings.length > 0 || r.hang !== undefined || r.leak !== undefined;
}

export function describe(r: FuzzResult): string {
  const loop = r.maxLoopDelayMs === undefined ? "" : `, longest loop delay ${r.maxLoopDelayMs} ms`;
  const lines = [`${r.target}: ${r.iterations} inputs, ${r.findings.length} findings, heap growth ${(r.heapGrowthBytes / 1024 / 1024).toFixed(1)} MiB${loop}`];
  for (const s of r.slowest ?? []) lines.push(`  slow: iteration ${s.iteration}, ${s.ms} ms of CPU, ${s.bytes} bytes`);
  for (const f of [...r.findings, ...(r.hang ? [r.hang] : [])]) lines.push(`  iteration ${f.iteration}: ${f.error}\n    input (base64): ${f.input.slice(0, 2000)}`);
  if (r.leak) lines.push(`  ${r.leak}`);
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------
// Command line

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { values, positionals } = parseArgs({
    options: { iterations: { type: "string", default: "20000" }, seed: { type: "string", default: String(Date.now() % 1e9) }, only: { type: "string" } },
    allowPositionals: true,
  });
  const targets = positionals.length ? positionals : [...TARGETS];
  let bad = 0;
  for (const target of targets) {
    const opts: FuzzOptions = { iterations: Number(values.iterations), seed: Number(values.seed), ...(values.only !== undefined ? { only: Number(values.only) } : {}) };
    const started = Date.now();
    const r = await fuzzTarget(target, opts);
    console.log(`${describe(r)}\n  seed ${opts.seed}, ${((Date.now() - started) / 1000).toFixed(1)} s`);
    if (failed(r)) bad++;
  }
  process.exit(bad ? 1 : 0);
}
