// How long the host's event loop is held by the worst frames a module may send (issue #8,
// "no work a module can trigger runs on the host's loop for more than a few milliseconds").
// Not part of `npm run bench` (it measures stalls, not speed): run it alone,
//   node_modules/.bin/node --import=tsx --no-node-snapshot bench/host-loop.ts [frames per kind]
// A real HostSession (ApiHub, embedded chain, a LevelDB store, the event bus) serves a probe in
// another process, which sends N frames of each kind through a Unix socket and waits for the
// answers. For each kind: the longest stall of the host's loop (perf_hooks
// monitorEventLoopDelay), the loop time the module was charged (host_cpu_ms_per_s) and the
// wall time of the kind.
//
// Last run (2026-12-05, 5 frames of each kind, the shared 2-core machine at load 5.5, so every
// figure is inflated several times; decode charged per frame): 16 MiB strings, 65,500 strings
// of 200 bytes and the indexer shape of 3,000 txs are refused (max_total_string_bytes /
// max_values) in 2-11 ms including the frame's copy; a 1 MiB string 0.4 ms; 65,500 strings of
// 16 bytes 14 ms, of 2 bytes 21 ms, 65,500 nils 7 ms, a 9,000-put transaction 21 ms (in-process
// medians at load 4-5: 3-4 ms each); 16 MiB of binary 1 ms. The longest stalls (100-300 ms)
// came with the 16 MiB frames, refused or binary alike (reading and copying them, and garbage
// collection), and with a 3 MB block as binary: the chain decodes it on the loop (~200 ms).
//
// Run of 2026-12-05 15:16 (5 frames of each kind, load 8-10: other sessions' suites; every
// figure inflated many times), with the tiniest containers at max_values added: 65,500 empty
// maps longest stall 26 ms (decode charged 59 ms for the 5), empty arrays 30 ms (36), small
// integers 33 ms (18); 65,500 nils in the same run 92 ms (104). Tiny items are no worse than
// the rows above: max_values bounds them.
//
// Run of 2026-12-05 07:41 (2 frames of each kind, load 15-20: six other sessions' suites; every
// figure inflated many times): a valid block of 15,000 transactions, now read, checked and
// connected in slices (chain/parse.ts, chain/slices.ts), longest stall 185 ms over its 3.4 s
// (young-generation GCs of the block's objects; the same block in-process before the slices:
// a 9.2 s stall at load 16, after: 0.2-0.4 s at load 16-20, 33-80 ms at load 6-9); get_block
// of it with its 0.9 MB hex 21 ms; get_mempool_txids pages (20,000 in the mempool) 4-15 ms;
// get_block_template with 20,000 in the mempool, bounded to a page, 50 ms (sorted once per
// mempool change). The zero-filled 3 MB "block" is now refused at its first bytes (5 ms).
//
// Run of 2026-12-05 09:15 (3 frames of each kind, load 9-11: other sessions' suites and a Rust
// build; every figure inflated many times), after blocks' raw bytes went on the wire as binary
// (docs/protocol.md 6.3): get_block of a 3.9 MB block of 390 witness-heavy transactions, first
// page (3.9 MB of binary, the block read back from LevelDB in slices for the first frame):
// longest stall 103 ms, 134 ms charged per frame; its second page (1 MiB of transaction hex)
// 42 ms. The same first page encoded in-process at that load, 7 times each, fresh (as for a
// block's first reader): with the block's 7.8 MB hex string, median 171-185 ms (max 720-870);
// with its bytes as binary, median 26-29 ms (max 79-83): the rest is the bytes' copies.
// get_block_template with 20,000 in the mempool now answers the first page of a whole
// template (296 ms stall at this load, against 50 ms for a cut template at load 6-9 before).
//
// Runs of 2026-12-05 23:40 (5 frames of each kind, HOST_LOOP_KINDS='16 MiB of binary|1 MiB
// binary value|15 puts|16 MiB ASCII', two interleaved pairs, load 8): a 16 MiB binary request,
// longest stall 194-210 ms with frames joined at their last read, 66 ms gathered as they arrive
// (protocol/frame.ts); a refused 16 MiB string 209-363 against 113-263 ms; a storage_transaction
// of 15 values of 1 MiB 250-641 ms both ways (LevelDB's chained batch growing past 8 MiB in one
// synchronous put: 95-396 ms per such put in the profile; docs/security.md).
//
// Runs of 2026-12-06 02:46-03:06 (5 frames of each kind, same three kinds, three runs at load
// 11-30: other sessions' suites), with the host's GC pauses per kind (PerformanceObserver): 16 MiB
// of binary, longest stall 188 / 134 / 462 ms, longest GC 120 / 118 / 381 ms (major, the third
// run records kinds); storage_insert of 1 MiB, 81 / 66 / 338 ms, GC 33 / 42 / 63 ms (major);
// 15 puts of 1 MiB, 406 / 348 / 648 ms, GC 139 / 104 / 121 ms. The batch's puts alone:
// bench/leveldb-batch.ts.
//
// Runs of 2026-12-06 06:45 (3 frames of each kind, a quiet machine: load 1.5-1.8), V8's default
// young generation against `node --max-semi-space-size=4`, two interleaved pairs (default / 4):
// get_block_template with 20,000 in the mempool, longest stall 88, 100 / 26, 21 ms (longest
// minor GC 83, 95 / 16, 13 ms; GC in all 83, 95 / 138, 134 ms, wall 739, 740 / 952, 887 ms);
// the 15,000-transaction block 39, 53 / 28, 33 ms; 16 MiB of binary 32, 30 / 21, 34 ms; 15 puts
// of 1 MiB 89, 27 / 109, 95 ms (the batch's growth, not GC); the rest within noise. A smaller
// young generation cuts the longest pause where many objects survive a scavenge (the template,
// the block) for more GC in all; the host does not set it (a flag must be given at Node's
// start, before the heap is made): not adopted without the throughput benches beside it.

import { fork } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { monitorEventLoopDelay, PerformanceObserver } from "node:perf_hooks";
import { FrameChannel, HOST_SIDE } from "../protocol/channel.ts";
import { HostSession } from "../host/session.ts";
import { ApiHub } from "../host/hub.ts";
import { EventBus } from "../host/events/bus.ts";
import { Logger } from "../host/log.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { ModuleStore } from "../storage/store.ts";
import { parseDescriptor, resolveGrants } from "../capabilities/grants.ts";
import { bigBlock, fillMempool } from "../test/helpers/big-block.ts";

// ---- many modules at once (issue #8: the host's loop across all modules) -----------------
//   node_modules/.bin/node --import=tsx --no-node-snapshot bench/host-loop.ts --flooders N [seconds] [shapes,...]
// N probe processes flood the host's sessions in one shape at a time (pipelined requests that
// they read, the tiniest non-request frames, refused frames never read, requests with 65,500
// strings of 16 bytes), next to a canary that receives a NewBlock event published every 100 ms
// and acknowledges it. For each shape, three phases of `seconds` each in the same run: the
// flooders connected and idle (the baseline), flooding with the turn budget off (the loop as
// before runtime/turn.ts), and flooding with it on. Reported: the host's longest loop delay
// (monitorEventLoopDelay max, and its p99), the canary's longest and p99 lateness (publish to
// its receipt), and the requests/frames the host served for the flooders per second.
//
// Runs of 2026-12-05 (8 flooders, 4 s per phase, the shared 2-core machine at load 15-29 from
// other sessions' suites, so every figure is inflated and noisy; rerun on a quiet machine).
// loop delay max / canary lateness max, in ms:
//   shape     idle          budget off      budget on (5 ms)
//   requests  56 / 99       1311 / 1211     79 / 69     (answers 14.4k/s off, 16.0k/s on)
//   tiny      154 / 94      991 / 985       163 / 83    (p99 loop delay 95 ms on; before the
//                                                        gate was asked within a chunk)
//   refused   72 / 87       672 / 668       177 / 30    (p99 9-11 ms both)
//   heavy     79 / 30       334 / 348       223 / 206   (one 1 MiB-of-strings frame is one piece)
// A second run at load 29 (after the gate within a chunk): requests 2050/2034 off, 835/844 on;
// tiny 1148/1157 off, 266/103 on (p99 114); refused 579/7 off, 75/107 on; heavy 314/320 off,
// 164/406 on; its idle rows reached 436 ms: the machine, not the host.
if (process.argv[2] === "--flooder") {
  const { encodeBody, decodeBody, HOST_BODY_LIMITS } = await import("../protocol/codec.ts");
  const { encodeFrame, FrameDecoder } = await import("../protocol/frame.ts");
  const name = process.argv[4]!;
  const sock = net.connect(process.argv[3]!);
  await new Promise((r) => sock.once("connect", r));
  const dec = new FrameDecoder(64 * 1024 * 1024);
  let welcome!: () => void;
  const welcomed = new Promise<void>((r) => (welcome = r));
  const late: number[] = [];
  let answers = 0;
  sock.on("data", (c) => {
    for (const b of dec.push(c)) {
      const f = decodeBody(b, HOST_BODY_LIMITS) as Record<string, any>;
      if (f.t === "welcome") welcome();
      else if (f.t === "response") answers++;
      else if (f.t === "event") {
        late.push(Date.now() - f.payload.published);
        sock.write(encodeFrame(encodeBody({ t: "ack", seq: f.seq })));
      }
    }
  });
  sock.write(encodeFrame(encodeBody({ t: "hello", module: name, version: "1.0.0", protocol: [1, 1] })));
  await welcomed;
  sock.write(encodeFrame(encodeBody({ t: "request", id: 1, method: "subscribe_events", params: { types: ["NewBlock"] } })));
  const { Packr } = await import("msgpackr");
  const raw = new Packr({ useRecords: false, mapsAsObjects: true, variableMapSize: true });
  const batch = (make: (i: number) => unknown, n: number) => Buffer.concat(Array.from({ length: n }, (_, i) => encodeFrame(raw.pack(make(i)))));
  const strings = Array.from({ length: 65_500 }, (_, i) => `${i}`.padEnd(16, "y"));
  const shapes: Record<string, Buffer> = {
    requests: batch((i) => ({ t: "request", id: 10 + i, method: "get_block_height", params: {} }), 1000),
    tiny: batch((i) => (i % 2 ? { t: "log", level: "debug", message: "x" } : { t: "ack", seq: 1 }), 1000),
    refused: batch((i) => (i % 2 ? { t: "request", id: 7 } : { t: "hello", protocol: [1, 1], module: name, version: "1.0.0" }), 1000),
    heavy: batch((i) => ({ t: "request", id: 10 + i, method: "get_block_height", params: { a: strings } }), 4),
  };
  let flooding: string | undefined;
  process.on("message", async (m: { flood?: string; stop?: boolean; report?: boolean }) => {
    if (m.flood) {
      flooding = m.flood;
      answers = 0;
      if (flooding === "refused") sock.pause();
      const chunk = shapes[flooding]!;
      while (flooding === m.flood) {
        if (!sock.write(chunk)) await new Promise((r) => sock.once("drain", r));
        else await new Promise((r) => setImmediate(r));
      }
    } else if (m.stop) {
      flooding = undefined;
      sock.resume();
      process.send!({ answers });
    } else if (m.report) {
      process.send!({ late: late.splice(0) });
    }
  });
  process.send!({ ready: true });
  await new Promise(() => {});
}

if (process.argv[2] === "--flooders") {
  const { hostTurn } = await import("../runtime/turn.ts");
  const n = Number(process.argv[3] ?? 8);
  const seconds = Number(process.argv[4] ?? 5);
  const dir = mkdtempSync(path.join(os.tmpdir(), "modhost-loop-"));
  const sockPath = path.join(dir, "s");
  const chain = await EmbeddedChain.create({ matureBlocks: 1 });
  const store = await ModuleStore.open(path.join(dir, "store"), { maxKeys: 1000, maxBytes: 1 << 20 }, { label: "flooders" });
  const logger = new Logger({ level: "error", write: () => {} });
  const hub = new ApiHub({ onDenied: () => {} });
  const bus = new EventBus();
  const descriptors = ["read_chain_state", "subscribe_events"].map((d) => parseDescriptor(d));
  const { effective } = resolveGrants(descriptors, descriptors, []);
  const sessions: HostSession[] = [];
  const server = net.createServer();
  // As runtime/process.ts makes a module's channel (its input shares the host's turn budget);
  // connection k is module m<k> (the probes connect one at a time and say that name).
  let accepted = 0;
  server.on("connection", (socket) => {
    const name = `m${accepted++}`;
    const channel = new FrameChannel(socket, { ...HOST_SIDE, gate: hostTurn });
    sessions.push(new HostSession(channel, { module: name, grants: effective, hub, bus, logger, call: { module: name, chain, store, config: {}, dataDir: dir } }));
  });
  await new Promise<void>((r) => server.listen(sockPath, r));
  const spawnOne = async (name: string) => {
    const p = fork(new URL(import.meta.url).pathname, ["--flooder", sockPath, name], { execArgv: ["--import=tsx"] });
    await new Promise((r) => p.once("message", r));
    return p;
  };
  // One at a time, so that connection k is module m<k>.
  const canary = await spawnOne("m0");
  const flooders = [];
  for (let i = 1; i <= n; i++) flooders.push(await spawnOne(`m${i}`));
  await new Promise((r) => setTimeout(r, 500));
  const ask = <T>(p: ReturnType<typeof fork>, m: unknown) => new Promise<T>((r) => {
    p.once("message", (x) => r(x as T));
    p.send(m as never);
  });
  const publisher = setInterval(() => bus.publish("NewBlock", { published: Date.now() }), 100);
  const h = monitorEventLoopDelay({ resolution: 1 });
  const q = (xs: number[], f: number) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * f))]! : NaN);
  console.log(`${n} flooders of each shape next to a canary receiving a NewBlock event every 100 ms; ${seconds} s per phase; turn budget ${hostTurn.budgetMs} ms`);
  console.log("shape | phase | loop delay max (ms) | loop delay p99 (ms) | canary lateness max (ms) | canary lateness p99 (ms) | answers to flooders per s | turns carried");
  const budget = hostTurn.budgetMs;
  for (const shape of (process.argv[5] ?? "requests,tiny,refused,heavy").split(",")) {
    for (const phase of ["idle", "budget off", "budget on"]) {
      hostTurn.budgetMs = phase === "budget off" ? Infinity : budget;
      await ask(canary, { report: true });
      const carried0 = hostTurn.carriedTurns;
      h.reset();
      h.enable();
      if (phase !== "idle") for (const f of flooders) f.send({ flood: shape });
      await new Promise((r) => setTimeout(r, seconds * 1000));
      h.disable();
      const answered = phase === "idle" ? [] : await Promise.all(flooders.map((f) => ask<{ answers: number }>(f, { stop: true })));
      const { late } = await ask<{ late: number[] }>(canary, { report: true });
      const answers = answered.reduce((a, b) => a + b.answers, 0);
      console.log(`${shape} | ${phase} | ${(h.max / 1e6).toFixed(0)} | ${(h.percentile(99) / 1e6).toFixed(0)} | ${Math.max(0, ...late)} | ${q(late, 0.99)} (${late.length} events) | ${(answers / seconds).toFixed(0)} | ${hostTurn.carriedTurns - carried0}`);
      // Let what the flood left (answers on their way, parked work) settle before the next phase.
      await new Promise((r) => setTimeout(r, 1500));
    }
  }
  clearInterval(publisher);
  for (const p of [canary, ...flooders]) p.kill();
  for (const s of sessions) s.close();
  server.close();
  await store.close();
  await chain.close();
  rmSync(dir, { recursive: true, force: true });
  process.exit(0);
}

if (process.argv[2] === "--probe") {
  // The probe: a separate process, so its encoding does not count against the host's loop.
  const { encodeBody, decodeBody, HOST_BODY_LIMITS } = await import("../protocol/codec.ts");
  const { encodeFrame, FrameDecoder } = await import("../protocol/frame.ts");
  const sock = net.connect(process.argv[3]!);
  const dec = new FrameDecoder();
  let waiting: ((f: Record<string, unknown>) => void) | undefined;
  const seen: Record<string, unknown>[] = [];
  sock.on("data", (c) => {
    for (const b of dec.push(c)) {
      const f = decodeBody(b, HOST_BODY_LIMITS) as Record<string, unknown>;
      if (waiting) waiting(f);
      else seen.push(f);
    }
  });
  const next = () => new Promise<Record<string, unknown>>((r) => (seen.length ? r(seen.shift()!) : (waiting = (f) => ((waiting = undefined), r(f)))));
  // Packed as is: the SDK's encoder (toWire) refuses what the host would refuse.
  const { Packr } = await import("msgpackr");
  const raw = new Packr({ useRecords: false, mapsAsObjects: true, variableMapSize: true });
  const send = (m: unknown) => sock.write(encodeFrame(m && typeof m === "object" && (m as { t?: string }).t === "hello" ? encodeBody(m) : raw.pack(m)));
  await new Promise((r) => sock.once("connect", r));
  send({ t: "hello", module: "probe", version: "1.0.0", protocol: [1, 1] });
  while ((await next()).t !== "welcome");
  send({ t: "request", id: 1_000_000, method: "storage_open_tree", params: { tree: "t" } });
  while ((await next()).id !== 1_000_000);
  const keys: Record<string, null> = {};
  for (let i = 0; i < 32_760; i++) keys[`k${i.toString(36)}`] = null;
  const kinds: Record<string, () => Record<string, unknown>> = {
    "32,760 distinct map keys": () => ({ method: "get_block_height", params: { keys } }),
    "a 16 MiB ASCII string": () => ({ method: "get_block_height", params: { s: "a".repeat(16 * 1024 * 1024 - 200) } }),
    "a 16 MiB string of two-byte characters": () => ({ method: "get_block_height", params: { s: "é".repeat(8 * 1024 * 1024 - 200) } }),
    "65,500 strings of 200 bytes": () => ({ method: "get_block_height", params: { a: Array.from({ length: 65_500 }, (_, i) => `${i}`.padEnd(200, "y")) } }),
    "a 1 MiB string (max_total_string_bytes)": () => ({ method: "get_block_height", params: { s: "a".repeat(1024 * 1024 - 100) } }),
    "65,500 strings of 16 bytes (1 MiB in all)": () => ({ method: "get_block_height", params: { a: Array.from({ length: 65_500 }, (_, i) => `${i}`.padEnd(16, "y")) } }),
    "65,500 strings of 2 bytes": () => ({ method: "get_block_height", params: { a: Array.from({ length: 65_500 }, (_, i) => String.fromCharCode(97 + (i % 26), 97 + ((i / 26) % 26))) } }),
    "indexer shape: storage_transaction of 3 puts x 3,000 txs": () => ({ method: "storage_transaction", params: { tree: "t", ops: indexerOps(3000) } }),
    "3 MB block as binary (submit_block)": () => ({ method: "submit_block", params: { hex: Buffer.alloc(3_000_000) } }),
    "65,500 nils": () => ({ method: "get_block_height", params: { a: new Array(65_500).fill(null) } }),
    // The tiniest containers at max_values: each an object or array built (issue #8).
    "65,500 empty maps": () => ({ method: "get_block_height", params: { a: Array.from({ length: 65_500 }, () => ({})) } }),
    "65,500 empty arrays": () => ({ method: "get_block_height", params: { a: Array.from({ length: 65_500 }, () => []) } }),
    "65,500 small integers": () => ({ method: "get_block_height", params: { a: Array.from({ length: 65_500 }, (_, i) => i & 63) } }),
    "storage_transaction of 9,000 puts": () => ({ method: "storage_transaction", params: { tree: "t", ops: Array.from({ length: 9_000 }, (_, i) => ({ op: "put", key: `k${i}`, value: i })) } }),
    "4,090 distinct map keys (under max_map_keys)": () => ({ method: "get_block_height", params: Object.fromEntries(Array.from({ length: 4_090 }, (_, i) => [`q${i.toString(36)}`, null])) }),
    "16 MiB of binary": () => ({ method: "get_block_height", params: { b: Buffer.alloc(16 * 1024 * 1024 - 200) } }),
    // A storage value at its limit (1 MiB of binary), and a transaction of 15 of them: LevelDB's
    // batch buffer passes 8 MiB on the way (it grows by doubling, copying what it holds).
    "storage_insert of a 1 MiB binary value": () => ({ method: "storage_insert", params: { tree: "t", key: "big", value: Buffer.alloc(1024 * 1024 - 64, 7) } }),
    "storage_transaction of 15 puts of 1 MiB values": () => ({ method: "storage_transaction", params: { tree: "t", ops: Array.from({ length: 15 }, (_, i) => ({ op: "put", key: `big${i}`, value: Buffer.alloc(1024 * 1024 - 64, i) })) } }),
    "log with 16 MiB message and 1 MiB fields": () => ({ t: "log", level: "info", message: "m".repeat(16 * 1024 * 1024 - 2 * 1024 * 1024), fields: { f: "f".repeat(1024 * 1024) } }),
  };
  /** bench/indexer.ts's transaction for a block of `txs` transactions (its keys and values, made up). */
  function indexerOps(txs: number): unknown[] {
    const ops: unknown[] = [];
    for (let n = 0; n < txs; n++) {
      const txid = n.toString(16).padStart(64, "c");
      ops.push({ op: "put", key: `tx:${txid}`, value: { height: 101, index: n, vsize: 141 } });
      ops.push({ op: "put", key: `out:${txid}:0`, value: { value: 5_000_000, address: `bcrt1q${n.toString(36).padStart(38, "x")}` } });
      ops.push({ op: "put", key: `blk:101:${n}`, value: txid });
    }
    return ops;
  }
  // What the chain prepared (bench/host-loop.ts, the host side): a valid heavy block on its tip.
  const { readFileSync } = await import("node:fs");
  const heavy = readFileSync(process.argv[5]!);
  kinds[`a valid block of 15,000 transactions (${(heavy.length / 1e6).toFixed(2)} MB) as binary (submit_block; then duplicates)`] = () => ({ method: "submit_block", params: { hex: heavy } });
  kinds["get_block of that block, first page (with its raw hex)"] = () => ({ method: "get_block_by_height", params: { height: Number(process.argv[6]) } });
  kinds["get_block of a 3.9 MB block of 390 witness-heavy transactions, first page (its raw bytes as binary)"] = () => ({ method: "get_block_by_height", params: { height: Number(process.argv[7]) } });
  kinds["get_block of that 3.9 MB block, second page (1 MiB of transaction hex)"] = () => ({ method: "get_block_by_height", params: { height: Number(process.argv[7]), tx_offset: 1 } });
  kinds["get_mempool_txids, first page, 20,000 in the mempool"] = () => ({ method: "get_mempool_txids", params: {} });
  kinds["get_mempool_txids, third page"] = () => ({ method: "get_mempool_txids", params: { after: 16_384 } });
  kinds["get_block_template, 20,000 in the mempool"] = () => ({ method: "get_block_template", params: {} });
  const n = Number(process.argv[4] ?? 5);
  let id = 1;
  // HOST_LOOP_KINDS=regex: only the kinds whose name matches (the host's setup stays the same).
  const only = process.env.HOST_LOOP_KINDS ? new RegExp(process.env.HOST_LOOP_KINDS) : undefined;
  for (const [name, make] of Object.entries(kinds)) {
    if (only && !only.test(name)) continue;
    process.send!({ start: name });
    await new Promise((r) => process.once("message", r));
    const frame = make();
    const waiting = new Set<unknown>();
    for (let i = 0; i < n; i++) {
      if (frame.t === "log") send(frame);
      else {
        waiting.add(id);
        send({ t: "request", id: id++, ...frame });
      }
    }
    // One cheap request behind them: with the frames before it answered, the kind is done
    // (a request the host works on in slices may be answered after it).
    const last = id++;
    waiting.add(last);
    send({ t: "request", id: last, method: "get_block_height", params: {} });
    const outcome = new Set<string>();
    while (waiting.size > 0) {
      const f = await next();
      if (f.t !== "response" || !waiting.delete(f.id)) continue;
      if (f.id !== last) outcome.add(f.error ? (f.error as { code: string }).code : ((f.result as { result?: string } | null)?.result ?? "answered"));
    }
    process.send!({ done: name, outcome: frame.t === "log" ? "logged" : [...outcome].join(",") });
    await new Promise((r) => process.once("message", r));
  }
  process.exit(0);
}

const n = Number(process.argv[2] ?? 5);
const dir = mkdtempSync(path.join(os.tmpdir(), "modhost-loop-"));
const sockPath = path.join(dir, "s");
// The chain on disk, as the host keeps it ([chain] data_dir), with 20,000 transactions in its
// mempool and a valid block of 15,000 transactions ready for its tip (test/helpers/big-block.ts).
const chain = await EmbeddedChain.create({ matureBlocks: 1, dataDir: path.join(dir, "chain") });
// A block near the 4 MB limit, on the chain before the probe starts (its get_block rows).
const fat = await chain.submitBlock(await bigBlock(chain, { count: 390, witnessBytes: 9_800 }));
if (fat.result !== "accepted") throw new Error(`the 3.9 MB block was not accepted: ${fat.reason}`);
const fatHeight = await chain.getBlockHeight();
await fillMempool(chain, 20_000);
const heavyPath = path.join(dir, "heavy.block");
writeFileSync(heavyPath, await bigBlock(chain, { count: 15_000, witnessBytes: 0 }));
const heavyHeight = (await chain.getBlockHeight()) + 1;
const store = await ModuleStore.open(path.join(dir, "store"), { maxKeys: 1_000_000, maxBytes: 1 << 30 }, { label: "probe" });
const logger = new Logger({ level: "info", write: () => {} });
const hub = new ApiHub({ onDenied: () => {} });
const descriptors = ["read_blockchain", "read_chain_state", "read_mempool", "read_storage", "write_storage", "submit_block"].map((d) => parseDescriptor(d));
const { effective } = resolveGrants(descriptors, descriptors, []);
let session: HostSession | undefined;
const server = net.createServer((socket) => {
  session = new HostSession(new FrameChannel(socket, HOST_SIDE), {
    module: "probe", grants: effective, hub, bus: new EventBus(), logger,
    call: { module: "probe", chain, store, config: {}, dataDir: dir },
  });
});
await new Promise<void>((r) => server.listen(sockPath, r));
const probe = fork(new URL(import.meta.url).pathname, ["--probe", sockPath, String(n), heavyPath, String(heavyHeight), String(fatHeight)], { execArgv: ["--import=tsx"] });
const h = monitorEventLoopDelay({ resolution: 1 });
// The host's garbage collections during each kind: the longest pause (and its kind: major
// mark-compact, minor scavenge), and the sum (ms).
let gcs: Array<{ ms: number; kind: string }> = [];
const GC_KINDS: Record<number, string> = { 1: "minor", 4: "major", 8: "incremental", 16: "weak callbacks" };
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcs.push({ ms: e.duration, kind: GC_KINDS[((e as unknown as { detail?: { kind?: number } }).detail)?.kind ?? 0] ?? "?" });
}).observe({ entryTypes: ["gc"] });
const longestGc = (list: typeof gcs) => {
  const top = list.reduce<(typeof gcs)[number] | undefined>((a, g) => (!a || g.ms > a.ms ? g : a), undefined);
  return top ? `${top.ms.toFixed(1)} ${top.kind}` : "-";
};
let t0 = 0, cpu0 = 0;
console.log(`${n} frames of each kind, then one small request; host_cpu_ms_per_s 250 (the default)`);
console.log("kind | outcome | longest loop stall (ms) | decode charged (ms) | loop time charged (ms) | wall (ms) | longest GC (ms) | GC in all (ms)");
probe.on("message", (m: { start?: string; done?: string; outcome?: string }) => {
  if (m.start) {
    h.reset();
    h.enable();
    t0 = performance.now();
    cpu0 = session!.flowStats.cpuMs;
    (session!.flowStats as { decodeMs: number }).decodeMs = 0;
    gcs = [];
  } else {
    h.disable();
    const wall = performance.now() - t0;
    console.log(`${m.done} | ${m.outcome} | ${(h.max / 1e6).toFixed(1)} | ${session!.flowStats.decodeMs.toFixed(1)} | ${(session!.flowStats.cpuMs - cpu0).toFixed(1)} | ${wall.toFixed(0)} | ${longestGc(gcs)} | ${gcs.reduce((a, g) => a + g.ms, 0).toFixed(1)}`);
  }
  probe.send("go");
});
await new Promise((r) => probe.once("exit", r));
session?.close();
server.close();
await store.close();
await chain.close();
rmSync(dir, { recursive: true, force: true });
process.exit(0);
