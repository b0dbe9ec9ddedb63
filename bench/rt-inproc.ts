// Profiling aid for the native round trip (not part of `npm run bench`): the host's own
// JavaScript per request, without the sockets and the other process that make `roundtrip`'s
// figures move with the machine's load. The real FrameChannel (with the host's turn budget),
// HostSession, ApiHub and chain (and store, for storage_get) serve sequential requests arriving
// on a stub socket, each in its own turn of the loop (setImmediate, as a socket read would be);
// the answer's write starts the next. Printed: this thread's CPU per request, median of the
// rounds. The stub's own part (the loop's turn, its emit) is in every figure alike.
//
// Given two source trees (a copy of another commit beside this one, node_modules shared), it
// loads both in one process and alternates their rounds, so that both see the same machine:
// the A/B for a change to this path (medians, the median of the paired differences, and in how
// many pairs B was cheaper). Single-tree runs also work under --cpu-prof.
//   node --no-node-snapshot --import tsx bench/rt-inproc.ts [--method get_block_height|storage_get] [--n 10000] [--rounds 12] [--pause] [TREE_A [TREE_B]]
// Instructions per request (load-independent): one tree per run, under callgrind with --pause
// (see handOver), e.g. scripts driven by `callgrind_control -i on|off PID`.
import { EventEmitter } from "node:events";
import path from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { summarise } from "./stats.ts";

const { values, positionals } = parseArgs({
  options: { method: { type: "string", default: "get_block_height" }, n: { type: "string", default: "10000" }, rounds: { type: "string", default: "12" }, pause: { type: "boolean", default: false } },
  allowPositionals: true,
});
const METHOD = values.method;
if (METHOD !== "get_block_height" && METHOD !== "storage_get") throw new Error("--method is get_block_height or storage_get");
const N = Number(values.n);
const ROUNDS = Number(values.rounds);
const HERE = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const trees = positionals.length > 0 ? positionals.map((p) => path.resolve(p)) : [HERE];

/** The socket the channel reads and writes: every write is an answer. */
class StubSocket extends EventEmitter {
  writableLength = 0;
  writableNeedDrain = false;
  onWrite: () => void = () => {};
  write(): boolean {
    this.onWrite();
    return true;
  }
  cork(): void {}
  uncork(): void {}
  pause(): this { return this; }
  resume(): this { return this; }
  destroy(): this { return this; }
  end(): this { return this; }
}

type Run = (count: number) => Promise<void>;

/** Each tree's bench/common.ts cleanup (its temporary directories), run before exiting. */
const cleanups: Array<() => void> = [];

/** A session of `tree`'s code on a stub socket, after its handshake; returns a runner of `count` sequential requests. */
async function setup(tree: string): Promise<Run> {
  // Each tree's own modules (import paths differ, so a second tree is a second instance).
  const imp = (p: string) => import(path.join(tree, p));
  const [{ EventBus }, { EmbeddedChain }, { ApiHub }, { ModuleStore }, grants, { HostSession }, { FrameChannel, HOST_SIDE }, { hostTurn }, proc, { encodeBody }, { encodeFrame }, { PROTOCOL_VERSION }, common, { BENCH_FLOW }] = await Promise.all([
    imp("host/events/bus.ts"), imp("chain/embedded.ts"), imp("host/hub.ts"), imp("storage/store.ts"), imp("capabilities/grants.ts"), imp("host/session.ts"),
    imp("protocol/channel.ts"), imp("runtime/turn.ts"), imp("runtime/process.ts"), imp("protocol/codec.ts"), imp("protocol/frame.ts"), imp("protocol/messages.ts"),
    imp("bench/common.ts"), imp("bench/roundtrip.ts"),
  ]);
  cleanups.push(common.cleanupNow);
  const chain = await EmbeddedChain.create({ matureBlocks: 1 });
  const dir = await common.makeTempDir("rt-inproc");
  const storage = METHOD === "storage_get";
  const store = storage ? await ModuleStore.open(path.join(dir, "store"), undefined, { label: "rt" }) : undefined;
  if (store) {
    await store.openTree("bench");
    await store.put("bench", "tip", { height: 812345, hash: "00000000000000000002a7c4c1e48d76", ok: true });
  }
  const requested = [grants.parseDescriptor(storage ? "read_storage" : "read_chain_state")];
  const socket = new StubSocket();
  // The module's scope on the socket's and the channel's events, as runtime/process.ts spawnChild sets it.
  // (A tree without moduleContext entered it with moduleScope.run.)
  const context = proc.moduleContext?.("rt");
  const inScope = (e: EventEmitter) => {
    const emit = e.emit.bind(e);
    e.emit = context
      ? (...a: Parameters<typeof emit>) => (proc.moduleScope.getStore() === "rt" ? emit(...a) : context.runInAsyncScope(emit, null, ...a))
      : (...a: Parameters<typeof emit>) => proc.moduleScope.run("rt", () => emit(...a));
  };
  inScope(socket);
  const channel = new FrameChannel(socket, { ...HOST_SIDE, gate: hostTurn });
  inScope(channel);
  const { logger } = common.captureLogger();
  proc.moduleScope.run("rt", () => new HostSession(channel, {
    module: "rt", grants: grants.resolveGrants(requested, requested, []).effective, hub: new ApiHub(), bus: new EventBus(), logger,
    call: { module: "rt", chain, store, config: {}, dataDir: dir }, flow: BENCH_FLOW,
  }));
  const params = storage ? { tree: "bench", key: "tip" } : {};
  const frames: Buffer[] = Array.from({ length: 4096 }, (_, i) => encodeFrame(encodeBody({ t: "request", id: 1000 + i, method: METHOD, params })));
  await new Promise<void>((resolve) => {
    socket.onWrite = resolve;
    socket.emit("data", encodeFrame(encodeBody({ t: "hello", protocol: [1, PROTOCOL_VERSION], module: "rt", version: "1.0.0", sdk: "rt-inproc" })));
  });
  socket.emit("data", encodeFrame(encodeBody({ t: "ready" })));
  return (count) => new Promise<void>((resolve) => {
    let sent = 0;
    const next = () => socket.emit("data", frames[sent++ % frames.length]);
    socket.onWrite = () => (sent >= count ? resolve() : void setImmediate(next));
    setImmediate(next);
  });
}

/**
 * With --pause: says `word` on stdout and waits for a line on stdin, so that a driver can turn
 * valgrind's instrumentation on for the measured rounds only (`valgrind --tool=callgrind
 * --instr-atstart=no`, then `callgrind_control -i on PID` after "warm", `-i off` after "done").
 */
async function handOver(word: string): Promise<void> {
  if (!values.pause) return;
  console.log(word);
  await new Promise<void>((resolve) => process.stdin.once("data", () => resolve()));
}

const runs: Run[] = [];
for (const tree of trees) runs.push(await setup(tree));
for (const run of runs) await run(5000); // warm-up
await handOver("warm");
const cpu: number[][] = runs.map(() => []);
for (let r = 0; r < ROUNDS; r++) {
  // Alternate which tree goes first.
  const order = r % 2 === 0 ? runs.map((_, i) => i) : runs.map((_, i) => runs.length - 1 - i);
  for (const i of order) {
    const c0 = process.threadCpuUsage();
    await runs[i]!(N);
    const c = process.threadCpuUsage(c0);
    cpu[i]!.push((c.user + c.system) / N);
  }
}
await handOver("done");
const fmt = (us: number) => `${us.toFixed(2)} µs`;
trees.forEach((tree, i) => {
  const s = summarise(cpu[i]!);
  console.log(`${METHOD}, ${tree}: host thread CPU per request ${fmt(s.median)} (min ${fmt(s.min)}, max ${fmt(s.max)}, ${ROUNDS} rounds of ${N})`);
});
if (runs.length === 2) {
  const diffs = cpu[0]!.map((a, k) => a - cpu[1]![k]!);
  console.log(`B - A: median of the paired differences ${fmt(-summarise(diffs).median)}; B cheaper in ${diffs.filter((d) => d > 0).length} of ${diffs.length} pairs`);
}
for (const cleanup of cleanups) cleanup();
process.exit(0);
