// The socket fuzzer: mutated frames through a real socket to a real host. Independent of the
// in-process targets (fuzz/protocol-*.ts): a real Host (modhost/testing, the full sandbox where
// the machine gives it) runs a native module (fuzz/socket-module.ts) that writes mutated frames
// to its channel, a batch at a time, each batch followed by a probe request it waits for; next
// to it the canary ("good", test/fixtures/modules/good) stores every block.
//
//   npm run fuzz:socket -- --minutes 5 --seed 3 [--fuzzers 2] [--framing-errors]
//
// Checked while it runs, every ~2 s: a block is mined and the canary must store it within 5 s;
// the RPC server must answer within 5 s. At the end: frames sent (from the modules' progress
// lines), instances started, the longest event-loop delay, the host's heap after a full
// collection, its RSS and external memory against the start, host log and audit bytes (this
// process runs the test harness too, which keeps every log record and event), and any host error
// (an internal error, the last-resort handler). Exits non-zero on a late block, an unanswered
// RPC call, a host error, a module probe unanswered for 60 s, no new frames for STALL_LIMIT_MS
// (60 s: the modules' progress files, written every 20 batches, stopped growing) or none at all,
// or heap growth past 64 MB.

import { chmod, copyFile, mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { startHost } from "../testing/index.ts";
import { bundleNodeModule } from "../sdk/node/bundle.ts";
import { protocolVectorFrames } from "./driver.ts";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;
const MB = 1024 * 1024;
const args = process.argv.slice(2);
const flag = (name: string, fallback: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const minutes = flag("minutes", 2);
const seed = flag("seed", 1);
const fuzzers = flag("fuzzers", 1);
const framingErrors = args.includes("--framing-errors");

const work = await mkdtemp(path.join(tmpdir(), "modhost-fuzz-socket-"));
const fuzzDir = path.join(work, "fuzzer");
await mkdir(fuzzDir);
const GRANTS = [
  "read_blockchain", "read_chain_state", "read_mempool", "read_storage", "write_storage", "manage_storage", "subscribe_events", "publish_events",
  "report_metrics", "read_metrics", "manage_timers", "register_module_api", "register_rpc_endpoint", "discover_modules", "call_module=good",
];
const seeds = (await protocolVectorFrames()).map((f) => f.subarray(4)).filter((b) => b.length > 0);
// The seeds go inside the bundle: the sandbox holds only the module's verified entry point.
const entry = path.join(work, "entry.mjs");
await writeFile(entry, `globalThis.__modhostFuzzSeeds = ${JSON.stringify(seeds.map((b) => Buffer.from(b).toString("hex")))};\nawait import(${JSON.stringify(fileURLToPath(new URL("./socket-module.ts", import.meta.url)))});\n`);
await writeFile(path.join(fuzzDir, "main.mjs"), await bundleNodeModule(entry), { mode: 0o755 });
const good = fileURLToPath(new URL("../test/fixtures/modules/good/", import.meta.url));
const goodDir = path.join(work, "good");
await mkdir(goodDir);
for (const f of ["module.toml", "index.ts"]) await copyFile(path.join(good, f), path.join(goodDir, f));
const dirs = [goodDir];
const names: string[] = [];
for (let i = 0; i < fuzzers; i++) {
  const name = `fuzzer${i}`;
  const d = path.join(work, name);
  await mkdir(d);
  await writeFile(path.join(d, "module.toml"), `name = "${name}"\nversion = "0.1.0"\nentry_point = "main.mjs"\nruntime = "native"\ncapabilities = [${GRANTS.map((g) => JSON.stringify(g)).join(", ")}]\n`);
  await copyFile(path.join(fuzzDir, "main.mjs"), path.join(d, "main.mjs"));
  await chmod(path.join(d, "main.mjs"), 0o755);
  await chmod(d, 0o755);
  dirs.push(d);
  names.push(name);
}

const hostErrors: string[] = [];
const h = await startHost({
  modules: dirs,
  config: Object.fromEntries(names.map((n, i) => [n, { seed: seed * 100 + i, framing_errors: framingErrors }])),
  // A fuzzed module restarts as often as its channel is closed; it is never quarantined.
  moduleLimits: Object.fromEntries(names.map((n) => [n, { max_restarts: 1_000_000, restart_window_ms: 1000, quarantine_after: 0 }])),
});
h.host.logger.addSink((r) => {
  if (r.source === "host" && r.level === "error" && /internal|last-resort|escaped every handler/i.test(r.message)) hostErrors.push(r.message.slice(0, 500));
});
await h.waitForState("good", "running", 30_000);
for (const n of names) await h.waitForState(n, "running", 30_000);

const loop = monitorEventLoopDelay({ resolution: 10 });
loop.enable();
// The longest delay tells nothing of its cause: the host's own work on the loop, this harness's
// forced full collections (every ~2 s, in the same process), or a machine that did not run the
// process (load, nice). A 10 ms ticker measures each gap between its turns in wall time and in
// CPU time of the loop's thread, the forced collections' gaps apart: a gap of seconds with little
// CPU is scheduling, with CPU close to its wall time the host's (or the collector's) work.
const threadCpuMs = () => {
  const u = process.threadCpuUsage();
  return (u.user + u.system) / 1000;
};
const gaps = { wallMs: 0, cpuMs: 0, atS: 0, cpuWallMs: 0, cpuAtS: 0, gcWallMs: 0, gcCpuMs: 0 };
const tickerStarted = Date.now();
let tickWall = performance.now();
let tickCpu = threadCpuMs();
const ticker = setInterval(() => {
  const wall = performance.now();
  const cpu = threadCpuMs();
  const at = Math.round((Date.now() - tickerStarted) / 1000);
  if (wall - tickWall > gaps.wallMs) Object.assign(gaps, { wallMs: wall - tickWall, cpuMs: cpu - tickCpu, atS: at });
  if (cpu - tickCpu > gaps.cpuWallMs) Object.assign(gaps, { cpuWallMs: cpu - tickCpu, cpuAtS: at });
  tickWall = wall;
  tickCpu = cpu;
}, 10);
/** A forced full collection, timed apart from the host's turns. */
const collect = () => {
  const wall = performance.now();
  const cpu = threadCpuMs();
  gc();
  gaps.gcWallMs = Math.max(gaps.gcWallMs, performance.now() - wall);
  gaps.gcCpuMs = Math.max(gaps.gcCpuMs, threadCpuMs() - cpu);
  tickWall = performance.now();
  tickCpu = threadCpuMs();
};
collect();
const heap0 = process.memoryUsage().heapUsed;
const rss0 = process.memoryUsage().rss;
const external0 = process.memoryUsage().external;
const logBytes = () => h.lines.reduce((n, l) => n + Buffer.byteLength(l) + 1, 0);
const auditBytes = async () => (await stat(h.config.host.audit_log).catch(() => ({ size: 0 }))).size;
const log0 = logBytes();
const audit0 = await auditBytes();
const started = Date.now();
let blocks = 0;
let late = 0;
let unanswered = 0;
let peakHeap = 0;
// The modules' frames must keep coming: a stall means the host stopped serving them (their
// probes wait, and the log line saying so is never read behind them). A request named
// "constructor" once stalled them at 0 frames while every other check passed.
const STALL_LIMIT_MS = 60_000;
let lastFrames = 0;
let lastGrowthAt = Date.now();
let longestStallMs = 0;
console.log(`socket fuzzer: ${fuzzers} module(s), seed ${seed}, ${minutes} min${framingErrors ? ", with framing errors" : ""}`);
while (Date.now() - started < minutes * 60_000) {
  const mark = h.mark();
  const height = await h.mine(1);
  blocks++;
  if (!(await h.waitForLog(new RegExp(`^stored block ${height}$`), { module: "good", since: mark, timeoutMs: 5000 }).then(() => true, () => false))) late++;
  if (!(await Promise.race([h.rpc("list").then(() => true, () => false), new Promise<boolean>((r) => setTimeout(() => r(false), 5000))]))) unanswered++;
  collect();
  peakHeap = Math.max(peakHeap, process.memoryUsage().heapUsed - heap0);
  const frames = framesSent();
  if (frames !== lastFrames) {
    lastFrames = frames;
    lastGrowthAt = Date.now();
  }
  longestStallMs = Math.max(longestStallMs, Date.now() - lastGrowthAt);
  if (blocks % 30 === 0) console.log(`  ${Math.round((Date.now() - started) / 1000)} s: ${framesSent().toLocaleString("en")} frames, heap +${(peakHeap / MB).toFixed(0)} MB at most, ${late} late blocks, ${unanswered} unanswered RPC calls`);
  await new Promise((r) => setTimeout(r, 2000));
}
loop.disable();
clearInterval(ticker);

/** Frames sent by every instance of every fuzzing module: the last progress file of each instance. */
function framesSent(): number {
  let total = 0;
  for (const n of names) {
    const dir = path.join(h.config.modules.data_dir, n);
    for (const f of existsSync(dir) ? readdirSync(dir) : []) {
      if (f.startsWith("progress-") && f.endsWith(".json")) total += (JSON.parse(readFileSync(path.join(dir, f), "utf8") || "{}") as { sent?: number }).sent ?? 0;
    }
  }
  return total;
}
// The first instance of each, and one more after each crash (restarts counts only its window).
const instances = names.length + h.events.filter((e) => e.type === "ModuleCrashed" && names.includes((e.payload as { module: string }).module)).length;
const stuck = names.flatMap((n) => h.logs(n).filter((r) => /probe unanswered/.test(r.message)));
gc();
const heap = process.memoryUsage().heapUsed - heap0;
const report = {
  seconds: Math.round((Date.now() - started) / 1000),
  frames: framesSent(),
  instances,
  blocks,
  lateBlocks: late,
  unansweredRpc: unanswered,
  probesUnanswered: stuck.length,
  longestStallS: Math.round(longestStallMs / 1000),
  hostErrors: hostErrors.length,
  longestLoopDelayMs: Math.round(loop.max / 1e6),
  // The longest gap between the ticker's turns outside the forced collections, its CPU, and when.
  longestGap: `${Math.round(gaps.wallMs)} ms wall, ${Math.round(gaps.cpuMs)} ms of the loop thread's CPU, at ${gaps.atS} s`,
  mostCpuInAGap: `${Math.round(gaps.cpuWallMs)} ms, at ${gaps.cpuAtS} s`,
  longestForcedCollection: `${Math.round(gaps.gcWallMs)} ms wall, ${Math.round(gaps.gcCpuMs)} ms CPU`,
  heapGrowthMb: +(heap / MB).toFixed(1),
  peakHeapGrowthMb: +(peakHeap / MB).toFixed(1),
  rssGrowthMb: +((process.memoryUsage().rss - rss0) / MB).toFixed(1),
  externalGrowthMb: +((process.memoryUsage().external - external0) / MB).toFixed(1),
  hostLogKiB: Math.round((logBytes() - log0) / 1024),
  auditKiB: Math.round(((await auditBytes()) - audit0) / 1024),
  states: Object.fromEntries(names.map((n) => [n, `${h.status(n)?.state} restarts=${h.status(n)?.restarts}`])),
};
console.log(JSON.stringify(report, null, 2));
for (const e of hostErrors.slice(0, 5)) console.log(`host error: ${e}`);
for (const n of names) for (const r of h.logs(n).filter((r) => r.level !== "info").slice(0, 8)) console.log(`[${n}] ${r.message.slice(0, 300)}`);
for (const n of names) for (const r of h.logs("host").filter((r) => r.message.startsWith(`${n} crashed`)).slice(0, 5)) console.log(`${r.message.slice(0, 300)}`);
await h.stop();
await rm(work, { recursive: true, force: true });
const failed = late > 0 || unanswered > 0 || hostErrors.length > 0 || stuck.length > 0 || longestStallMs > STALL_LIMIT_MS || report.frames === 0 || heap > 64 * MB;
process.exit(failed ? 1 : 0);
