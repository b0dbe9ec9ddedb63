// The fuzz loop of fuzz/edges-driver.ts, in a worker thread: runs one target over its
// generated inputs, publishing the iteration in progress for the driver's hang watchdog, and
// measures heap growth between the warm-up and the end, each input's CPU time on this thread
// (the slowest kept) and the longest delay of this thread's loop (the servers a target starts
// run on it, so a parser stalling them shows there).

import { monitorEventLoopDelay } from "node:perf_hooks";
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
const slowest: NonNullable<FuzzResult["slowest"]> = [];
const loop = monitorEventLoopDelay({ resolution: 10 });
const cpuMs = () => {
  const u = process.threadCpuUsage();
  return (u.user + u.system) / 1000;
};
let done = 0;
const range = opts.only !== undefined ? [opts.only] : Array.from({ length: opts.iterations }, (_, i) => i);
for (const i of range) {
  if (i === warmup) {
    gc();
    heapStart = process.memoryUsage().heapUsed;
    loop.enable();
  }
  const input = generate(seeds, t.dictionary ?? [], opts.seed, i, maxBytes);
  Atomics.store(progress, 0, i);
  Atomics.store(progress, 1, 1);
  const cpu0 = cpuMs();
  try {
    await t.run(input);
  } catch (err) {
    findings.push({ iteration: i, input: Buffer.from(input).toString("base64"), error: (err as Error)?.stack ?? String(err) });
    if (findings.length >= opts.maxFindings) break;
  }
  Atomics.store(progress, 1, 0);
  if (i >= warmup) keepSlowest(slowest, i, cpuMs() - cpu0, input.length);
  done++;
}
await t.teardown?.();
gc();
const heapGrowthBytes = heapStart === 0 ? 0 : Math.max(0, process.memoryUsage().heapUsed - heapStart);
loop.disable();
const result: FuzzResult = { target, iterations: done, findings, heapGrowthBytes, slowest, ...(loop.count > 0 ? { maxLoopDelayMs: Math.round(loop.max / 1e5) / 10 } : {}) };
if (heapGrowthBytes > opts.maxHeapGrowthMB * 1024 * 1024) {
  result.leak = `the heap grew by ${(heapGrowthBytes / 1024 / 1024).toFixed(1)} MiB between iteration ${warmup} and the end (more than ${opts.maxHeapGrowthMB} MiB)`;
}
parentPort!.postMessage(result);

function keepSlowest(kept: NonNullable<FuzzResult["slowest"]>, iteration: number, ms: number, bytes: number): void {
  if (kept.length >= 5 && ms <= kept[kept.length - 1]!.ms) return;
  kept.push({ iteration, ms: Math.round(ms * 10) / 10, bytes });
  kept.sort((a, b) => b.ms - a.ms);
  if (kept.length > 5) kept.pop();
}
