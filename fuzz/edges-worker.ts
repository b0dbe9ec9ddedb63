// The fuzz loop of fuzz/edges-driver.ts, in a worker thread: runs one target over its
// generated inputs, publishing the iteration in progress for the driver's hang watchdog, and
// measures heap growth between the warm-up and the end.

import { runInNewContext } from "node:vm";
import { setFlagsFromString } from "node:v8";
import { parentPort, workerData } from "node:worker_threads";
import { generate, type EdgesTarget, type Finding, type FuzzOptions, type FuzzResult } from "./edges-driver.ts";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

const { target, opts, progress } = workerData as { target: string; opts: Required<Pick<FuzzOptions, "iterations" | "seed" | "maxFindings" | "maxHeapGrowthMB">> & FuzzOptions; progress: Int32Array };
const t = ((await import(`./${target}.ts`)) as { default: EdgesTarget }).default;
const seeds = await t.seeds();
if (seeds.length === 0) throw new Error(`${target} has no seeds`);
await t.setup?.();
const findings: Finding[] = [];
const maxBytes = t.maxInputBytes ?? 64 * 1024;
const warmup = Math.min(opts.iterations, Math.max(50, Math.floor(opts.iterations / 10)));
let heapStart = 0;
let done = 0;
const range = opts.only !== undefined ? [opts.only] : Array.from({ length: opts.iterations }, (_, i) => i);
for (const i of range) {
  if (i === warmup) {
    gc();
    heapStart = process.memoryUsage().heapUsed;
  }
  const input = generate(seeds, t.dictionary ?? [], opts.seed, i, maxBytes);
  Atomics.store(progress, 0, i);
  Atomics.store(progress, 1, 1);
  try {
    await t.run(input);
  } catch (err) {
    findings.push({ iteration: i, input: Buffer.from(input).toString("base64"), error: (err as Error)?.stack ?? String(err) });
    if (findings.length >= opts.maxFindings) break;
  }
  Atomics.store(progress, 1, 0);
  done++;
}
await t.teardown?.();
gc();
const heapGrowthBytes = heapStart === 0 ? 0 : Math.max(0, process.memoryUsage().heapUsed - heapStart);
const result: FuzzResult = { target, iterations: done, findings, heapGrowthBytes };
if (heapGrowthBytes > opts.maxHeapGrowthMB * 1024 * 1024) {
  result.leak = `the heap grew by ${(heapGrowthBytes / 1024 / 1024).toFixed(1)} MiB between iteration ${warmup} and the end (more than ${opts.maxHeapGrowthMB} MiB)`;
}
parentPort!.postMessage(result);
