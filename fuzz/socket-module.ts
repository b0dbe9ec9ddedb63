// The module side of the socket fuzzer (fuzz/socket.ts): a native module, run by a real host
// in the real sandbox, that writes mutated frames to its real channel (fd 3). It is bundled
// into one script (sdk/node/bundle.ts) with its seeds, the protocol vectors' frames (in hex, as
// globalThis.__modhostFuzzSeeds, set by the entry fuzz/socket.ts writes: a native module's
// sandbox holds only its verified entry point), and a request for every method the welcome lists. After each batch of frames it sends a probe request (get_block_height, an id no
// mutation uses) and waits for its answer before the next batch: the host must keep answering.
// A mutated goodbye is not sent (it would only end this instance); framing errors are, rarely
// (they end the channel: the host restarts the module, which starts again with the next seed).
// Every 20 batches it logs "fuzz progress" with its counts, and writes them to progress-SEED.json
// in its data directory.

import { renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import { encodeFrame } from "../protocol/frame.ts";
import { decodeBody, encodeBody } from "../protocol/codec.ts";
import { parseModuleMessage } from "../protocol/messages.ts";
import { type Frame, rawChannel } from "../test/fixtures/raw-channel.ts";
import { mutate, Rng } from "./driver.ts";

const PROBE_BASE = 2 ** 50;
let onWelcome: ((f: Frame) => void) | undefined;
let onProbe: ((id: number) => void) | undefined;
let responses = 0;
let events = 0;
let lastSeq = 0;
const { sock, send } = rawChannel(
  (f) => {
    if (onWelcome) {
      const r = onWelcome;
      onWelcome = undefined;
      r(f);
    } else if (f.t === "response") {
      responses++;
      if (typeof f.id === "number" && f.id > PROBE_BASE) onProbe?.(f.id);
    } else if (f.t === "event") {
      events++;
      lastSeq = Math.max(lastSeq, f.seq as number);
    } else if (f.t === "invocation") {
      send({ t: "invocation_result", id: f.id, result: f.kind === "health" ? { healthy: true } : null });
      if (f.kind === "shutdown") setTimeout(() => process.exit(0), 10);
    }
  },
  () => process.stderr.write("fuzz: the host sent a frame that does not decode\n"),
);

const me = process.env.MODULE_ID ?? "";
const welcome = await new Promise<Frame>((resolve) => {
  onWelcome = resolve;
  send({ t: "hello", protocol: [1, 2], module: me, version: "0.1.0", sdk: "fuzz" });
});
if (welcome.t !== "welcome") process.exit(3);
send({ t: "ready" });
const config = welcome.config as { seed?: number; batch?: number; framing_errors?: boolean };
// Each instance its own stream of inputs: the configured seed and this process's start time.
const seed = ((config.seed ?? 1) * 1_000_003 + Date.now()) >>> 0;
const rng = new Rng(seed);
const batch = config.batch ?? 256;

const corpus: Uint8Array[] = [];
for (const hex of (globalThis as { __modhostFuzzSeeds?: string[] }).__modhostFuzzSeeds ?? []) corpus.push(Buffer.from(hex, "hex"));
const params: Record<string, unknown> = {
  tree: "t", key: "k", value: { a: [1, "x", null, true, 2.5] }, height: 1, hash: "00".repeat(32), types: ["NewBlock"], name: "e",
  payload: { n: 1 }, limit: 3, interval_seconds: 1, delay_seconds: 1, timer_id: 1, method: "m", methods: ["m"], ops: [{ op: "put", key: "a", value: 1 }],
};
let id = 1;
for (const method of welcome.methods as string[]) corpus.push(encodeBody({ t: "request", id: id++, method, params }));
// Names a host table keyed by plain objects would find on Object.prototype (a request named
// "constructor" once made the host's byte accounts NaN: test/hostile-round24-native.test.ts).
for (const method of Object.getOwnPropertyNames(Object.prototype)) corpus.push(encodeBody({ t: "request", id: id++, method, params }));
corpus.push(encodeBody({ t: "log", level: "info", message: "fuzz", fields: { a: 1 } }), encodeBody({ t: "ack", seq: 1 }), encodeBody({ t: "invocation_result", id: 1, result: 1 }));

function goodbye(body: Uint8Array): boolean {
  try {
    return parseModuleMessage(decodeBody(body)).t === "goodbye";
  } catch {
    return false;
  }
}

let sent = 0;
let probes = 0;
let nextProbe = PROBE_BASE;
for (let round = 1; ; round++) {
  const parts: Buffer[] = [];
  for (let i = 0; i < batch; i++) {
    const body = mutate(corpus[rng.below(corpus.length)]!, corpus, rng, 64 * 1024);
    if (body.length === 0 || goodbye(body)) continue;
    if (config.framing_errors && rng.below(50_000) === 0) {
      // A frame whose length prefix lies: the host closes this channel (a framing error).
      const f = encodeFrame(body);
      f.writeUInt32BE(rng.pick([0, 0xffffffff, 0x7fffffff, 64 * 1024 * 1024 + 1]), 0);
      parts.push(f);
    } else {
      parts.push(encodeFrame(body));
    }
    sent++;
  }
  if (lastSeq) parts.push(encodeFrame(encodeBody({ t: "ack", seq: lastSeq })));
  const probeId = ++nextProbe;
  parts.push(encodeFrame(encodeBody({ t: "request", id: probeId, method: "get_block_height", params: {} })));
  const answered = new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 60_000);
    onProbe = (got) => {
      if (got === probeId) {
        clearTimeout(timer);
        resolve(true);
      }
    };
  });
  if (!sock.write(Buffer.concat(parts))) await new Promise((r) => sock.once("drain", r));
  if (!(await answered)) {
    send({ t: "log", level: "error", message: "fuzz probe unanswered for 60 s", fields: { sent, probes } });
  } else {
    probes++;
  }
  if (round % 20 === 0) {
    const progress = { seed, sent, probes, responses, events };
    send({ t: "log", level: "info", message: "fuzz progress", fields: progress });
    // Also in its data directory: its log lines share a budget with the mutated ones.
    // Written aside and renamed, so the harness never reads a file half-written (it read 0 then).
    const file = path.join(welcome.data_dir as string, `progress-${seed}.json`);
    writeFileSync(`${file}.tmp`, JSON.stringify(progress));
    renameSync(`${file}.tmp`, file);
  }
}
