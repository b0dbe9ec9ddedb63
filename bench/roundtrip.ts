// Protocol round trip: a module's request to the host and the answer, over the real module
// channel, against a raw socket ping-pong of the same sizes measured in the same run.
//
// Result: a child Node process (bench/fixtures/rt-client.ts) uses the SDK's ModuleClient on
// its fd 3 (what a module author gets), and a second one (bench/fixtures/wire-client.ts) speaks
// the same protocol with the raw client's economy: precomputed request frames, answers matched
// by their bytes, so that host and raw server are measured by the same kind of client (the
// issue's "native request RTT" compares servers). In both, the host side is the real thing: spawnModule (socketpair on fd 3,
// FrameChannel, HostSession), the ApiHub (method lookup, grant check, valibot parameters) and
// the method's handler. Two methods, each against its own baseline:
// - get_block_height (EmbeddedChain.getBlockHeight);
// - storage_get of a small value (ModuleStore.getNow: a classic-level getSync; the stored
//   bytes go into the answer as they are, PreEncoded, after one pass over their headers).
// The child measures, with performance.now(): sequential round trips (one sample each), and
// pipelined throughput with WINDOW requests in flight; and its own CPU time per sequential call
// (process.cpuUsage), shown in a note next to the raw client's: unlike the latency, it is not
// inflated by waiting for a CPU, so it shows the module side's cost on a busy machine too.
//
// Baseline: the same loops (bench/fixtures/loops.ts) in a child of the same kind, over the
// same kind of socketpair, with 4-byte length-prefixed frames of exactly the sizes the
// MessagePack request and response have, answered by a minimal frame reader here: no
// MessagePack, no message validation, no hub. For get_block_height it answers fixed bytes;
// for storage_get it does a classic-level getSync of the same key (the same encoded key
// bytes, on a database of its own holding the same value bytes) and answers the response's
// envelope followed by the bytes read. The difference is modhost's per-message cost.
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
import { ClassicLevel } from "classic-level";
import { EmbeddedChain } from "../chain/embedded.ts";
import { ModuleStore } from "../storage/store.ts";
import { encodeKey, encodeValue } from "../storage/codec.ts";
import { ApiHub } from "../host/hub.ts";
import { encodeBody } from "../protocol/codec.ts";
import { parseDescriptor, resolveGrants } from "../capabilities/grants.ts";
import { spawnModule } from "../host/session.ts";
import { ROOT, captureLogger, dumpLog, makeTempDir, removeTempDir, track, waitForRecord, type Benchmark, type Row } from "./common.ts";
import { summarise } from "./stats.ts";

const RT_CLIENT = fileURLToPath(new URL("./fixtures/rt-client.ts", import.meta.url));
const RAW_CLIENT = fileURLToPath(new URL("./fixtures/raw-client.ts", import.meta.url));
const WIRE_CLIENT = fileURLToPath(new URL("./fixtures/wire-client.ts", import.meta.url));

const MODULE = "bench-roundtrip";
/** Fair-share limits raised so that they do not cap the rate measured (defaults: 2000 req/s, 250 ms/s). */
export const BENCH_FLOW = { requestsPerSecond: 1_000_000, hostCpuMsPerS: 1000, maxInFlight: 1024 };
const ROUNDS = 3;
const WINDOW = 64;
const LOOPS = { warmup: 1000, n: 5000, total: 10_000, window: WINDOW, reps: 3 };
const TREE = "bench";
const KEY = "tip";
/** A small stored value (as bench/storage-call.ts's). */
const VALUE = { height: 812345, hash: "00000000000000000002a7c4c1e48d76", ok: true };

/** Where the children run: a CPU number, or undefined for wherever the scheduler puts them. */
interface Placement {
  label: string;
  cpu: number | undefined;
}

interface Samples {
  latency_ms: number[];
  /** The child's CPU time (user + system) per measured sequential call, µs (loops.ts). */
  cpu_us: number;
  rates: number[];
}

/** One method measured: how the module calls it, what the host serves it with, and its raw stand-in. */
interface Case {
  method: string;
  params: Record<string, unknown>;
  permission: string;
  store: ModuleStore | undefined;
  /** The raw server's answer to one request frame (4-byte length included). */
  answer: () => Buffer;
  requestBytes: number;
  responseBytes: number;
}

export const roundtrip: Benchmark = {
  name: "roundtrip",
  title: "Protocol round trip: get_block_height and storage_get, ModuleClient <-> HostSession over a socketpair",
  async run(): Promise<Row[]> {
    const chain = await EmbeddedChain.create({ matureBlocks: 1 });
    const dir = await makeTempDir("rt");
    const store = await ModuleStore.open(path.join(dir, "store"), undefined, { label: MODULE });
    const raw = new ClassicLevel<Uint8Array, Uint8Array>(path.join(dir, "raw"), { keyEncoding: "view", valueEncoding: "view" });
    const savedAffinity = os.platform() === "linux" ? affinityOf(process.pid) : undefined;
    const cpus = savedAffinity ? parseCpuList(savedAffinity) : [];
    const pinned = cpus.length >= 2;
    const [home, other] = cpus;
    const placements: Placement[] = pinned
      ? [{ label: "same CPU", cpu: home }, { label: "two CPUs", cpu: other }]
      : [{ label: "unpinned", cpu: undefined }];
    try {
      await store.openTree(TREE);
      await store.put(TREE, KEY, VALUE);
      await raw.open();
      const keyBytes = encodeKey(KEY, 1024);
      await raw.put(keyBytes, encodeValue(VALUE, 1 << 20));
      const cases = [await blockHeightCase(chain), storageGetCase(raw, keyBytes, store)];
      if (pinned) setAffinity(process.pid, String(home));
      const rows: Row[] = [];
      for (const c of cases) {
        for (const place of placements) {
          const real: Samples[] = [];
          const wire: Samples[] = [];
          const base: Samples[] = [];
          for (let i = 0; i < ROUNDS; i++) {
            base.push(await rawRun(c, place.cpu));
            real.push(await runReal(c, chain, dir, place.cpu, RT_CLIENT));
            wire.push(await runReal(c, chain, dir, place.cpu, WIRE_CLIENT));
          }
          const pool = (xs: Samples[], k: "latency_ms" | "rates") => xs.flatMap((x) => x[k]);
          const stand = c.store ? "raw socketpair server + classic-level getSync" : "raw socketpair ping-pong";
          const bLat = `${stand}, sequential [${place.label}]`;
          const bThr = `${stand}, ${WINDOW} in flight [${place.label}]`;
          const cpu = (xs: Samples[]) => summarise(xs.map((x) => x.cpu_us)).median.toFixed(1);
          rows.push(
            { what: `${c.method} round trip, sequential [${place.label}]`, kind: "result", unit: "ms", stats: summarise(pool(real, "latency_ms")), vs: bLat, note: `the module process's CPU time per sequential call ${cpu(real)} µs (median of the rounds), the raw client's ${cpu(base)} µs` },
            { what: `${c.method}, ${WINDOW} in flight [${place.label}]`, kind: "result", unit: "ops/s", stats: summarise(pool(real, "rates")), vs: bThr },
            { what: `${c.method} round trip, sequential, raw client [${place.label}]`, kind: "result", unit: "ms", stats: summarise(pool(wire, "latency_ms")), vs: bLat, note: `the raw baseline's client speaking the protocol (precomputed frames, answers matched by their bytes): the host alone against the raw server; its CPU per call ${cpu(wire)} µs` },
            { what: `${c.method}, ${WINDOW} in flight, raw client [${place.label}]`, kind: "result", unit: "ops/s", stats: summarise(pool(wire, "rates")), vs: bThr },
            { what: bLat, kind: "baseline", unit: "ms", stats: summarise(pool(base, "latency_ms")) },
            { what: bThr, kind: "baseline", unit: "ops/s", stats: summarise(pool(base, "rates")) },
          );
        }
      }
      rows[0]!.note = `${rows[0]!.note}; frames: ${cases.map((c) => `${c.method} request ${c.requestBytes} B, response ${c.responseBytes} B`).join("; ")} of MessagePack, + 4 B length; throughput samples are ${LOOPS.total} requests each; ${
        pinned ? `host pinned to CPU ${home}, child on CPU ${home} (same CPU) or CPU ${other} (two CPUs)` : "taskset not available or only one CPU: not pinned, expect run-to-run variation"}`;
      return rows;
    } finally {
      if (pinned) setAffinity(process.pid, savedAffinity!);
      await chain.close();
      await store.close();
      await raw.close();
      await removeTempDir(dir);
    }
  },
};

/** The sizes the real messages have (ids of 4 digits, as most of the run's are). */
function sizes(method: string, params: Record<string, unknown>, result: unknown): { requestBytes: number; responseBytes: number } {
  return {
    requestBytes: encodeBody({ t: "request", id: 1234, method, params }).length,
    responseBytes: encodeBody({ t: "response", id: 1234, result }).length,
  };
}

async function blockHeightCase(chain: EmbeddedChain): Promise<Case> {
  const { requestBytes, responseBytes } = sizes("get_block_height", {}, await chain.getBlockHeight());
  const response = Buffer.alloc(4 + responseBytes, 0x5a);
  response.writeUInt32BE(responseBytes, 0);
  return { method: "get_block_height", params: {}, permission: "read_chain_state", store: undefined, answer: () => response, requestBytes, responseBytes };
}

/** storage_get: the raw server reads the value's bytes and sends them behind the response's envelope. */
function storageGetCase(raw: ClassicLevel<Uint8Array, Uint8Array>, keyBytes: Uint8Array, store: ModuleStore): Case {
  const params = { tree: TREE, key: KEY };
  const { requestBytes, responseBytes } = sizes("storage_get", params, VALUE);
  // The envelope is { t, id, result: ... } with result last: its bytes are those of a nil result but the nil.
  const nil = encodeBody({ t: "response", id: 1234, result: null });
  const head = Buffer.alloc(4 + nil.length - 1);
  head.writeUInt32BE(responseBytes, 0);
  nil.copy(head, 4, 0, nil.length - 1);
  const answer = () => {
    const value = raw.getSync(keyBytes);
    if (value === undefined) throw new Error("the raw baseline's key is missing");
    return Buffer.concat([head, value]);
  };
  if (answer().length !== 4 + responseBytes) throw new Error(`the raw storage_get answer is ${answer().length - 4} bytes, not ${responseBytes}`);
  return { method: "storage_get", params, permission: "read_storage", store, answer, requestBytes, responseBytes };
}

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

/**
 * The real path: a module process served by HostSession + ApiHub. `client` is rt-client.ts (the
 * SDK's ModuleClient) or wire-client.ts (the raw client's loops on the real protocol).
 */
async function runReal(c: Case, chain: EmbeddedChain, dir: string, cpu: number | undefined, client: string): Promise<Samples> {
  const { logger, records } = captureLogger();
  const out = path.join(dir, `rt-${process.hrtime.bigint()}.json`);
  const requested = [parseDescriptor(c.permission)];
  const proc = await spawnModule({
    ...nodeCommand(cpu, ["--import", "tsx", client, "--module", MODULE, "--out", out, "--method", c.method, "--params", JSON.stringify(c.params), ...loopArgs()]),
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
    cwd: ROOT,
  }, {
    module: MODULE,
    grants: resolveGrants(requested, requested, []).effective,
    hub: new ApiHub(),
    bus: new EventBus(),
    logger,
    call: { module: MODULE, chain, store: c.store, config: {}, dataDir: dir },
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

/** The baseline: same loops, length-prefixed frames of the same sizes, nothing else (and the storage read, for storage_get). */
async function rawRun(c: Case, cpu: number | undefined): Promise<Samples> {
  const { command, args } = nodeCommand(cpu, ["--import", "tsx", RAW_CLIENT, "--request-bytes", String(c.requestBytes), ...loopArgs()]);
  const child = track(spawn(command, args, {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
    stdio: ["ignore", "pipe", "pipe", "pipe"],
  }));
  const socket = child.stdio[3] as Socket;
  onRawFrames(socket, () => socket.write(c.answer()));
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
