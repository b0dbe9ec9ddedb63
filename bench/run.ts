// The benchmark runner: `npm run bench` runs every benchmark, `npm run bench -- <name> ...`
// only those named (a unique prefix is enough). Each benchmark prints its own report when it
// finishes; a summary table of every result and baseline follows at the end.
//
// Ratios compare a result with a baseline measured in the same run, on the same machine, a
// moment apart: "cost x" is how many times more expensive the result is than the baseline
// (time / baseline time; for throughput, baseline rate / rate). Above 1 means slower.

import os from "node:os";
import * as esbuild from "esbuild";
import { cleanupNow, type Benchmark, type Row } from "./common.ts";
import { fmtMB, fmtMs, fmtRate } from "./stats.ts";
import { coldStart } from "./cold-start.ts";
import { storageCall } from "./storage-call.ts";
import { roundtrip } from "./roundtrip.ts";
import { sandboxStart } from "./sandbox-start.ts";
import { fanout } from "./fanout.ts";
import { storageBatch } from "./storage-batch.ts";
import { isolatePaths } from "./isolate-paths.ts";
import { manyModules } from "./many-modules.ts";
import { jsonrpc } from "./jsonrpc.ts";
import { moduleApi } from "./module-api.ts";
import { indexer } from "./indexer.ts";
import { poolShare } from "./pool-share.ts";
import { dnsBench } from "./dns.ts";
import { paceBench } from "./pace.ts";
import { timersBench } from "./timers.ts";
import { jsonoffBench } from "./jsonoff.ts";
import { offloopBench } from "./offloop.ts";
import { uidsBench } from "./uids.ts";

const BENCHMARKS: Benchmark[] = [coldStart, storageCall, roundtrip, sandboxStart, fanout, storageBatch, isolatePaths, manyModules, jsonrpc, moduleApi, indexer, poolShare, dnsBench, paceBench, timersBench, offloopBench, jsonoffBench, uidsBench];

process.on("exit", cleanupNow);
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    console.error(`\n${signal}: cleaning up`);
    cleanupNow();
    process.exit(130);
  });
}

function pick(names: string[]): Benchmark[] {
  if (names.length === 0) return BENCHMARKS;
  return names.map((name) => {
    const exact = BENCHMARKS.find((b) => b.name === name);
    const matches = exact ? [exact] : BENCHMARKS.filter((b) => b.name.startsWith(name));
    if (matches.length !== 1) {
      console.error(`${matches.length ? "ambiguous" : "unknown"} benchmark "${name}"; choose from: ${BENCHMARKS.map((b) => b.name).join(", ")}`);
      process.exit(2);
    }
    return matches[0]!;
  });
}

function value(row: Row, v: number): string {
  return row.unit === "ms" ? fmtMs(v) : row.unit === "MB" ? fmtMB(v) : fmtRate(v);
}

/** Cost of `row` relative to `base` (>1: slower). */
function ratio(row: Row, base: Row): number {
  return row.unit === "ops/s" ? base.stats.median / row.stats.median : row.stats.median / base.stats.median;
}

function fmtRatio(r: number): string {
  return `${r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2)}x`;
}

function pad(s: string, n: number, right = false): string {
  return right ? s.padStart(n) : s.padEnd(n);
}

function table(rows: Array<{ bench: string; row: Row; base?: Row }>, withBench: boolean): string {
  const head = [...(withBench ? ["benchmark"] : []), "measurement", "kind", "median", "p90", "p99", "n", "cost x", "baseline"];
  const lines = rows.map(({ bench, row, base }) => {
    const lat = row.unit !== "ops/s";
    return [
      ...(withBench ? [bench] : []),
      row.what,
      row.kind,
      value(row, row.stats.median),
      lat && row.stats.n > 1 ? value(row, row.stats.p90) : "-",
      lat && row.stats.n > 1 ? value(row, row.stats.p99) : "-",
      String(row.stats.n),
      base ? fmtRatio(ratio(row, base)) : "",
      base ? `${value(base, base.stats.median)} (${base.what.trim()})` : "",
    ];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => (i === head.length - 1 ? 0 : l[i]!.length))));
  const numeric = new Set(["median", "p90", "p99", "n", "cost x"]);
  const fmt = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : pad(c, widths[i]!, numeric.has(head[i]!)))).join("  ").trimEnd();
  return [fmt(head), fmt(head.map((_, i) => "-".repeat(i === head.length - 1 ? 8 : widths[i]!))), ...lines.map(fmt)].join("\n");
}

/** Other work on the machine inflates every number; say so when there is a lot of it. */
function busyWarning(): void {
  const load = os.loadavg()[0] ?? 0;
  const cpus = os.availableParallelism();
  if (load > cpus * 0.75) {
    console.log(`warning: the machine is busy (1-minute load ${load.toFixed(2)} on ${cpus} CPUs): absolute numbers are inflated; the ratios hold up better`);
  }
}

async function main(): Promise<void> {
  const chosen = pick(process.argv.slice(2));
  const cpus = os.cpus();
  console.log("modhost benchmarks");
  console.log(`node ${process.version} (v8 ${process.versions.v8}), ${os.platform()} ${os.arch()}, ${cpus.length} CPUs (${cpus[0]?.model.trim() ?? "unknown model"}), load average ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}`);
  busyWarning();
  console.log(`running: ${chosen.map((b) => b.name).join(", ")}`);
  console.log("cost x = result / baseline (time), baseline / result (throughput), both medians measured in this run; > 1 means slower\n");

  const all: Array<{ bench: string; row: Row; base?: Row }> = [];
  let failed = false;
  const started = performance.now();
  for (const b of chosen) {
    console.log(`== ${b.name}: ${b.title}`);
    const t0 = performance.now();
    let rows: Row[];
    try {
      rows = await b.run();
    } catch (err) {
      failed = true;
      console.log(`FAILED: ${(err as Error).stack ?? String(err)}\n`);
      continue;
    }
    const withBase = rows.map((row) => ({ bench: b.name, row, ...(row.vs ? { base: rows.find((r) => r.what === row.vs) } : {}) }));
    console.log(table(withBase, false));
    for (const r of rows) if (r.note) console.log(`  note: ${r.what.trim()}: ${r.note}`);
    console.log(`(${((performance.now() - t0) / 1000).toFixed(1)} s)\n`);
    all.push(...withBase.filter((x) => x.row.kind === "result" || x.row.kind === "baseline"));
  }
  await esbuild.stop();
  if (all.length > 0) {
    console.log("== summary: results and their baselines");
    console.log(table(all, true));
  }
  console.log(`\ntotal ${((performance.now() - started) / 1000).toFixed(1)} s; load average now ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}`);
  busyWarning();
  cleanupNow();
  process.exit(failed ? 1 : 0);
}

await main();
