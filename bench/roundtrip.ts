// Protocol round trip: a module's request to the host and the answer, over the real module
// channel, against a raw socket ping-pong of the same sizes measured in the same run.
//
// Result: a child Node process (bench/fixtures/rt-client.ts) uses the SDK's ModuleClient on
// its fd 3, and the host side is the real thing: spawnModuleProcess (socketpair on fd 3,
// FrameChannel, HostSession), the ApiHub (method lookup, grant check, valibot parameters) and
// EmbeddedChain.getBlockHeight. Method: get_block_height. The child measures, with
// performance.now(): sequential round trips (one sample each), and pipelined throughput
// with WINDOW requests in flight.
//
// Baseline: the same loops (bench/fixtures/loops.ts) in a child of the same kind, over the
// same kind of socketpair, with 4-byte length-prefixed frames of exactly the sizes the
// MessagePack request and response have, answered by a minimal frame reader here: no
// MessagePack, no message validation, no hub. The difference is modhost's per-message cost.
//
// Both children are started with `--import tsx`, as the benchmark runs from source. Three
// rounds, alternating baseline and result, samples pooled.
//
// CPU placement. A ping-pong between two processes costs very different amounts depending
// on whether they share a CPU (each hand-over is a context switch) or not (each hand-over
// wakes the other CPU from idle: on a VM, an inter-processor interrupt through the
// hypervisor, tens of µs). Left to the scheduler, the same run lands in one regime or the
// other, so the raw baseline alone varied 3x between runs. With taskset available and two
// or more CPUs, this benchmark therefore pins itself (all threads) to CPU 0 for its duration
// and runs every measurement twice: child on CPU 0 ("same CPU") and on CPU 1 ("two CPUs").
// Without taskset it runs unpinned and says so.

import { onRawFrames } from "./fixtures/raw-frames.ts";
import { spawn, spawnSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Socket } from "node:net";
import { fileURLToPath } from "node:url";
import { EventBus } from "../host/events/bus.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { ApiHub } from "../host/hub.ts";
import { encodeBody } from "../protocol/codec.ts";
import { parseDescriptor, resolveGrants } from "../capabilities/grants.ts";
import { spawnModule } from "../host/session.ts";
import { ROOT, captureLogger, dumpLog, makeTempDir, removeTempDir, track, waitForRecord, type Benchmark, type Row } from "./common.ts";
import { summarise } from "./stats.ts";

const RT_CLIENT = fileURLToPath(new URL("./fixtures/rt-client.ts", import.meta.url));
const RAW_CLIENT = fileURLToPath(new URL("./fixtures/raw-client.ts", import.meta.url));

const MODULE = "bench-roundtrip";
/** Fair-share limits raised so that they do not cap the rate measured (defaults: 2000 req/s, 250 ms/s). */
export const BENCH_FLOW = { requestsPerSecond: 1_000_000, hostCpuMsPerS: 1000, maxInFlight: 1024 };
const ROUNDS = 3;
const WINDOW = 64;
const LOOPS = { warmup: 1000, n: 5000, total: 10_000, window: WINDOW, reps: 3 };

/** Where the children run: a CPU number, or undefined for wherever the scheduler puts them. */
interface Placement {
  label: string;
  cpu: number | undefined;
}

interface Samples {
  latency_ms: number[];
  rates: number[];
}

export const roundtrip: Benchmark = {
  name: "roundtrip",
  title: "Protocol round trip: get_block_height, ModuleClient <-> HostSession over a socketpair",
  async run(): Promise<Row[]> {
    const chain = await EmbeddedChain.create({ matureBlocks: 1 });
    const dir = await makeTempDir("rt");
    // The sizes the real messages have (ids of 4 digits, as most of the run's are).
    const height = await chain.getBlockHeight();
    const requestBytes = encodeBody({ t: "request", id: 1234, method: "get_block_height", params: {} }).length;
    const responseBytes = encodeBody({ t: "response", id: 1234, result: height }).length;
    const runRaw = (cpu: number | undefined) => rawRun(requestBytes, responseBytes, cpu);
    const savedAffinity = os.platform() === "linux" ? affinityOf(process.pid) : undefined;
    const cpus = savedAffinity ? parseCpuList(savedAffinity) : [];
    const pinned = cpus.length >= 2;
    const [home, other] = cpus;
    const placements: Placement[] = pinned
      ? [{ label: "same CPU", cpu: home }, { label: "two CPUs", cpu: other }]
      : [{ label: "unpinned", cpu: undefined }];
    try {
      if (pinned) setAffinity(process.pid, String(home));
      const rows: Row[] = [];
      for (const place of placements) {
        const real: Samples[] = [];
        const raw: Samples[] = [];
        for (let i = 0; i < ROUNDS; i++) {
          raw.push(await runRaw(place.cpu));
          real.push(await runReal(chain, dir, place.cpu));
        }
        const pool = (xs: Samples[], k: keyof Samples) => xs.flatMap((x) => x[k]);
        const bLat = `raw socketpair ping-pong, sequential [${place.label}]`;
        const bThr = `raw socketpair ping-pong, ${WINDOW} in flight [${place.label}]`;
        rows.push(
          { what: `get_block_height round trip, sequential [${place.label}]`, kind: "result", unit: "ms", stats: summarise(pool(real, "latency_ms")), vs: bLat },
          { what: `get_block_height, ${WINDOW} in flight [${place.label}]`, kind: "result", unit: "ops/s", stats: summarise(pool(real, "rates")), vs: bThr },
          { what: bLat, kind: "baseline", unit: "ms", stats: summarise(pool(raw, "latency_ms")) },
          { what: bThr, kind: "baseline", unit: "ops/s", stats: summarise(pool(raw, "rates")) },
        );
      }
      rows[0]!.note = `frames: request ${requestBytes} B, response ${responseBytes} B of MessagePack, + 4 B length; throughput samples are ${LOOPS.total} requests each; ${
        pinned ? `host pinned to CPU ${home}, child on CPU ${home} (same CPU) or CPU ${other} (two CPUs)` : "taskset not available or only one CPU: not pinned, expect run-to-run variation"}`;
      return rows;
    } finally {
      if (pinned) setAffinity(process.pid, savedAffinity!);
      await chain.close();
      await removeTempDir(dir);
    }
  },
};

function loopArgs(): string[] {
  return Object.entries(LOOPS).flatMap(([k, v]) => [`--${k}`, String(v)]);
}

/** `node args`, on `cpu` when given. */
function nodeCommand(cpu: number | undefined, args: string[]): { command: string; args: string[] } {
  return cpu === undefined
    ? { command: process.execPath, args }
    : { command: "taskset", args: ["-c", String(cpu), process.execPath, ...args] };
}

/** The CPU list of `pid` as taskset prints it ("0,1", "0-3,8"); undefined without taskset. */
function affinityOf(pid: number): string | undefined {
  const out = spawnSync("taskset", ["-pc", String(pid)], { encoding: "utf8" });
  return out.status === 0 ? /list:\s*(\S+)/.exec(out.stdout)?.[1] : undefined;
}

function parseCpuList(list: string): number[] {
  return list.split(",").flatMap((part) => {
    const [a, b] = part.split("-").map(Number);
    if (a === undefined || !Number.isInteger(a)) return [];
    return b === undefined ? [a] : Array.from({ length: b - a + 1 }, (_, i) => a + i);
  });
}

/** Pin every thread of `pid` to `cpus`. */
function setAffinity(pid: number, cpus: string): void {
  const out = spawnSync("taskset", ["-a", "-pc", cpus, String(pid)], { encoding: "utf8" });
  if (out.status !== 0) throw new Error(`taskset -a -pc ${cpus} ${pid} failed: ${out.stderr}`);
}

/** The real path: a module process with ModuleClient, served by HostSession + ApiHub. */
async function runReal(chain: EmbeddedChain, dir: string, cpu: number | undefined): Promise<Samples> {
  const { logger, records } = captureLogger();
  const out = path.join(dir, `rt-${process.hrtime.bigint()}.json`);
  const requested = [parseDescriptor("read_chain_state")];
  const proc = spawnModule({
    ...nodeCommand(cpu, ["--import", "tsx", RT_CLIENT, "--module", MODULE, "--out", out, ...loopArgs()]),
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
    cwd: ROOT,
  }, {
    module: MODULE,
    grants: resolveGrants(requested, requested, []).effective,
    hub: new ApiHub(),
    bus: new EventBus(),
    logger,
    call: { module: MODULE, chain, store: undefined, config: {}, dataDir: dir },
    // What is measured is the path, not the fair-share limits: as an operator would raise
    // requests_per_second and host_cpu_ms_per_s for a module that needs this rate.
    flow: BENCH_FLOW,
  }, logger);
  track(proc.child);
  try {
    await waitForRecord(records, (r) => r.source === MODULE && r.message === "roundtrip done", 120_000, proc.exited);
    const s = JSON.parse(await readFile(out, "utf8")) as Samples;
    if (!Array.isArray(s?.latency_ms) || s.latency_ms.length !== LOOPS.n) throw new Error(`bad report from the client\n${dumpLog(records)}`);
    return s;
  } finally {
    await proc.stop("benchmark done", { graceMs: 2000, termMs: 1000 });
  }
}

/** The baseline: same loops, fixed-size length-prefixed frames, nothing else. */
async function rawRun(requestBytes: number, responseBytes: number, cpu: number | undefined): Promise<Samples> {
  const { command, args } = nodeCommand(cpu, ["--import", "tsx", RAW_CLIENT, "--request-bytes", String(requestBytes), ...loopArgs()]);
  const child = track(spawn(command, args, {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
    stdio: ["ignore", "pipe", "pipe", "pipe"],
  }));
  const socket = child.stdio[3] as Socket;
  const response = Buffer.alloc(4 + responseBytes, 0x5a);
  response.writeUInt32BE(responseBytes, 0);
  onRawFrames(socket, () => socket.write(response));
  socket.on("error", () => {});
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (c) => resolve(c));
  });
  socket.destroy();
  if (code !== 0) throw new Error(`raw client failed (code ${code}): ${stderr.slice(0, 1000)}`);
  return JSON.parse(stdout.trim().split("\n").at(-1)!) as Samples;
}
