// A binary value decoded from a module's frame is a view of the frame (or of the read it came
// in): kept beyond its request as it is, a few bytes of a module's keep the whole frame alive
// while only those bytes are counted. The host keeps module bytes in two places beyond the
// request: queued event payloads and the chain (a transaction in the mempool, a block). Each
// attack below sends small values padded into 2 MiB frames (the padding in a key the host
// ignores) and measures what the host process holds afterwards.

import test from "ava";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { ownBytes, ownBytesIn } from "../protocol/codec.ts";
import { openSession } from "./helpers/peer.ts";
import { mempoolTransactions } from "./helpers/big-block.ts";
import { EventBus } from "../host/events/bus.ts";
import { waitFor } from "./helpers/host.ts";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;
const MB = 1024 * 1024;
const PAD = Buffer.alloc(2 * MB, 0xee);

function held(): number {
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
}

test("ownBytes copies a byte array that views more than twice its size (into an exact allocation), and returns one that does not as it is; ownBytesIn does so in place through maps and arrays", (t) => {
  const frame = Buffer.alloc(4096, 1);
  const small = frame.subarray(10, 20);
  const own = ownBytes(small);
  t.not(own, small);
  t.true(Buffer.from(own).equals(small));
  t.is(own.buffer.byteLength, 10, "an allocation of its own size, not a slice of a shared pool");
  const most = frame.subarray(0, 3000);
  t.is(ownBytes(most), most);
  const value = { a: [1, frame.subarray(0, 1), { b: frame.subarray(5, 9) }], c: most, d: "s" };
  t.is(ownBytesIn(value), value);
  t.is((value.a[1] as Uint8Array).buffer.byteLength, 1);
  t.is(((value.a[2] as { b: Uint8Array }).b).buffer.byteLength, 4);
  t.is(value.c, most);
});

test.serial("a module's event payloads queued for a subscriber that does not take them hold their own bytes, not their frames: 64 payloads of one byte of binary, each in a 2 MiB frame, grow the host by under 16 MB (+134 MB when each kept its frame)", async (t) => {
  const bus = new EventBus();
  const queued: unknown[] = [];
  // Window 1, never acknowledged: the first event is in flight, the other 63 wait in the queue.
  bus.subscribe("slow", (e) => queued.push(e), { window: 1 }).types.add("pad:tick");
  const { peer } = await openSession(t, { module: "pad", bus, grants: ["publish_events"], handshake: true });
  const before = held();
  for (let i = 0; i < 64; i++) peer.send({ t: "request", id: 100 + i, method: "publish_event", params: { name: "tick", payload: { b: Buffer.from([i]) } }, pad: PAD });
  await waitFor(() => peer.frames.filter((f) => f.t === "response" && (f.id as number) >= 100).length === 64 || undefined, 60_000, "64 answers");
  const answers = peer.frames.filter((f) => f.t === "response" && (f.id as number) >= 100);
  t.true(answers.every((f) => f.result === "pad:tick"), JSON.stringify(answers.find((f) => f.result !== "pad:tick")));
  const grew = held() - before;
  t.is(queued.length, 1, "one event in flight, the rest queued");
  t.true(grew < 16 * MB, `the host grew by ${(grew / MB).toFixed(1)} MB holding 64 queued one-byte payloads`);
  t.log(`grew by ${(grew / MB).toFixed(1)} MB`);
});

test.serial("transactions a module submits as binary are kept in the mempool as their own bytes, not their frames: 32 transactions, each in a 2 MiB frame, grow the host by under 16 MB (+72 MB when each kept its frame)", async (t) => {
  const { peer, chain } = await openSession(t, { module: "pad", freshChain: true, grants: ["send_transactions"], handshake: true });
  const txs = await mempoolTransactions(chain, 32);
  const before = held();
  for (let i = 0; i < txs.length; i++) peer.send({ t: "request", id: 100 + i, method: "submit_transaction", params: { hex: Buffer.from(txs[i]!) }, pad: PAD });
  await waitFor(() => peer.frames.filter((f) => f.t === "response" && (f.id as number) >= 100).length === 32 || undefined, 60_000, "32 answers");
  const answers = peer.frames.filter((f) => f.t === "response" && (f.id as number) >= 100);
  t.true(answers.every((f) => typeof f.result === "string"), JSON.stringify(answers.find((f) => typeof f.result !== "string")));
  const grew = held() - before;
  t.true(grew < 16 * MB, `the host grew by ${(grew / MB).toFixed(1)} MB holding 32 mempool transactions`);
  t.log(`grew by ${(grew / MB).toFixed(1)} MB`);
});
