// The host's budget per turn of its loop, shared by every module's channel (runtime/turn.ts):
// past it, a chunk read is parked with its socket paused and handled in a later turn, in the
// order read, round-robin with the other channels' parked chunks. Checked with real sockets,
// each chunk's handling made to cost more than the budget (a busy wait), so the outcome does
// not depend on the machine's speed.

import test from "ava";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { mkdtempSync, rmSync } from "node:fs";
import { FrameChannel, HOST_SIDE } from "../protocol/channel.ts";
import { encodeBody, STEPPED_BUILD_VALUES } from "../protocol/codec.ts";
import { encodeFrame } from "../protocol/frame.ts";
import { TurnBudget } from "../runtime/turn.ts";

function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

/**
 * `senders` clients each write `frames` frames (one per write, a little apart so that most
 * arrive as chunks of their own) to channels sharing `gate`; every chunk handled costs 2 ms.
 * Returns the most chunks handled within one turn of the loop and what each channel received.
 */
async function flood(gate: TurnBudget | undefined, senders: number, frames: number): Promise<{ mostPerTurn: number; received: number[][] }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "modhost-turn-"));
  const sockPath = path.join(dir, "s");
  const received: number[][] = Array.from({ length: senders }, () => []);
  let turn = 0;
  let inTurn = 0;
  let mostPerTurn = 0;
  let ticking = true;
  const tick = () => {
    turn++;
    inTurn = 0;
    if (ticking) setImmediate(tick);
  };
  setImmediate(tick);
  let lastTurn = -1;
  let done!: () => void;
  const all = new Promise<void>((r) => (done = r));
  let connections = 0;
  const server = net.createServer((socket) => {
    const me = connections++;
    const channel = new FrameChannel(socket, { ...HOST_SIDE, ...(gate ? { gate } : {}) });
    channel.on("message", (body) => {
      received[me]!.push((body as { n: number }).n);
      if (received.every((r) => r.length === frames)) done();
    });
    channel.on("chunk", () => {
      if (turn !== lastTurn) (lastTurn = turn), (inTurn = 0);
      inTurn++;
      mostPerTurn = Math.max(mostPerTurn, inTurn);
      busy(2);
    });
  });
  await new Promise<void>((r) => server.listen(sockPath, r));
  const clients = await Promise.all(Array.from({ length: senders }, () => new Promise<net.Socket>((r) => {
    const c = net.connect(sockPath, () => r(c));
  })));
  // Every client sends the same numbers, so which channel is whose does not matter.
  for (let n = 0; n < frames; n++) {
    for (const c of clients) c.write(encodeFrame(encodeBody({ t: "log", level: "debug", message: "x", n })));
    await new Promise((r) => setTimeout(r, 1));
  }
  await all;
  ticking = false;
  for (const c of clients) c.destroy();
  server.close();
  rmSync(dir, { recursive: true, force: true });
  return { mostPerTurn, received };
}

test.serial("channels sharing a turn budget: once a turn's work passes it, further chunks wait for later turns (at most one handled as the turn's input and one resumed at its end), and every channel's frames arrive complete and in order", async (t) => {
  const gate = new TurnBudget(1);
  const { mostPerTurn, received } = await flood(gate, 8, 60);
  for (const r of received) t.deepEqual(r, Array.from({ length: 60 }, (_, i) => i), "every frame, in the order sent");
  t.true(gate.parkedTotal > 0, `chunks were parked (${gate.parkedTotal})`);
  t.is(gate.waiting, 0, "nothing is left parked");
  t.true(mostPerTurn <= 2, `at most 2 chunks of 2 ms were handled in one turn (saw ${mostPerTurn})`);
});

test.serial("without the shared budget the same flood is handled as it arrives: many chunks of 2 ms in one turn (what the budget prevents)", async (t) => {
  const { mostPerTurn, received } = await flood(undefined, 8, 60);
  for (const r of received) t.is(r.length, 60);
  t.true(mostPerTurn > 2, `${mostPerTurn} chunks in one turn`);
});

test("parked work is resumed in the order it was parked, one piece at least per turn even when each piece is over the budget, and a piece parked again goes to the back", async (t) => {
  const gate = new TurnBudget(1);
  const order: string[] = [];
  t.false(gate.overBudget(), "the turn's first work starts its window");
  busy(2);
  t.true(gate.overBudget());
  const piece = (name: string, again = false) => () => {
    order.push(name);
    busy(2);
    if (again) gate.park(piece(`${name}'`));
  };
  gate.park(piece("a", true));
  gate.park(piece("b"));
  gate.park(piece("c"));
  while (gate.waiting > 0) await new Promise((r) => setImmediate(r));
  t.deepEqual(order, ["a", "b", "c", "a'"]);
  t.true(gate.carriedTurns >= 3, "each 2 ms piece had a turn of its own");
});

test.serial("one chunk holding a thousand frames is handled across turns (the gate is asked every 64 frames), in order", async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "modhost-turn-"));
  const sockPath = path.join(dir, "s");
  const gate = new TurnBudget(1);
  let turn = 0;
  let ticking = true;
  const tick = () => {
    turn++;
    if (ticking) setImmediate(tick);
  };
  setImmediate(tick);
  const got: Array<[number, number]> = [];
  let done!: () => void;
  const all = new Promise<void>((r) => (done = r));
  const server = net.createServer((socket) => {
    const channel = new FrameChannel(socket, { ...HOST_SIDE, gate });
    channel.on("message", (body) => {
      got.push([(body as { n: number }).n, turn]);
      busy(0.1); // 64 frames: 6.4 ms, over the 1 ms budget
      if (got.length === 1000) done();
    });
  });
  await new Promise<void>((r) => server.listen(sockPath, r));
  const client = net.connect(sockPath);
  await new Promise((r) => client.once("connect", r));
  // 1000 frames of ~20 bytes in one write: one chunk of about 20 KB.
  client.write(Buffer.concat(Array.from({ length: 1000 }, (_, n) => encodeFrame(encodeBody({ t: "log", level: "debug", message: "x", n })))));
  await all;
  ticking = false;
  client.destroy();
  server.close();
  rmSync(dir, { recursive: true, force: true });
  t.deepEqual(got.map(([n]) => n), Array.from({ length: 1000 }, (_, i) => i), "every frame, in order");
  const turns = new Set(got.map(([, k]) => k)).size;
  t.true(turns >= 1000 / 64 / 2, `handled over ${turns} turns`);
  t.true(gate.parkedTotal > 0);
});

/**
 * A client writes one frame of 65,500 empty maps (the costliest shape to build within
 * max_values) and a small frame after it, in one write, to a channel with `gate` (or none).
 * Returns the turns of the loop (setImmediate ticks) between the first chunk handled and the
 * big frame's message, and the order of the messages. With `end`, the client ends its stream
 * right after the write.
 */
async function bigFrame(gate: TurnBudget | undefined, end = false): Promise<{ turns: number; order: string[]; length: number }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "modhost-turn-"));
  const sockPath = path.join(dir, "s");
  let turn = 0;
  let ticking = true;
  const tick = () => {
    turn++;
    if (ticking) setImmediate(tick);
  };
  setImmediate(tick);
  let firstChunk = -1;
  let builtAt = -1;
  let length = 0;
  const order: string[] = [];
  let done!: () => void;
  const all = new Promise<void>((r) => (done = r));
  const server = net.createServer((socket) => {
    const channel = new FrameChannel(socket, { ...HOST_SIDE, ...(gate ? { gate } : {}) });
    channel.on("chunk", () => {
      if (firstChunk < 0) firstChunk = turn;
    });
    channel.on("message", (body) => {
      const m = body as { t: string; a?: unknown[] };
      order.push(m.t);
      if (m.t === "big") (builtAt = turn), (length = m.a!.length);
      if (order.length === 2) done();
    });
  });
  await new Promise<void>((r) => server.listen(sockPath, r));
  const client = await new Promise<net.Socket>((r) => {
    const c = net.connect(sockPath, () => r(c));
  });
  const big = encodeBody({ t: "big", a: Array.from({ length: 65_500 }, () => ({})) });
  client.write(Buffer.concat([encodeFrame(big), encodeFrame(encodeBody({ t: "small" }))]));
  if (end) client.end();
  await all;
  ticking = false;
  client.destroy();
  server.close();
  rmSync(dir, { recursive: true, force: true });
  return { turns: builtAt - firstChunk, order, length };
}

test.serial("with the shared budget, a frame of 65,500 empty maps is built over at least 7 turns of the loop (8,192 values a turn at most), whole and before the frame after it", async (t) => {
  const { turns, order, length } = await bigFrame(new TurnBudget(5));
  t.is(length, 65_500);
  t.deepEqual(order, ["big", "small"]);
  const least = Math.ceil(65_502 / STEPPED_BUILD_VALUES) - 1;
  t.true(turns >= least, `built over ${turns} turns of the loop (at least ${least})`);
});

test.serial("without the shared budget (a module's own channel) the same frame is built in one piece: what the budget's pieces prevent on the host", async (t) => {
  const { turns, order, length } = await bigFrame(undefined);
  t.is(length, 65_500);
  t.deepEqual(order, ["big", "small"]);
  t.true(turns <= 3, `${turns} turns (the frame's chunks may arrive in different turns)`);
});

test.serial("a frame being built in pieces when its sender ends the stream is still delivered whole, before the frame after it", async (t) => {
  const { order, length } = await bigFrame(new TurnBudget(5), true);
  t.is(length, 65_500);
  t.deepEqual(order, ["big", "small"]);
});
