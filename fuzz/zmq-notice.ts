// Fuzz target: Bitcoin Core's ZMQ notifications as modhost reads them (chain/bitcoind/zmq.ts), a
// remote party's bytes. The input is cut into message parts at each 0xff byte; the parts go
// through parseNotification, a `sequence` body through parseSequenceBody, and the sequence
// number through a SequenceTracker. Each must answer or throw a plain Error with a message,
// and what it answers must be what Core's doc/zmq.md says it can be.

import { parseNotification, parseSequenceBody, SequenceTracker } from "../chain/bitcoind/zmq.ts";
import type { EdgesTarget } from "./edges-driver.ts";

const tracker = new SequenceTracker();
const HASH = Buffer.from("0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206", "hex");
const seq = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
const message = (...parts: Buffer[]) => Buffer.concat(parts.flatMap((p, i) => (i === 0 ? [p] : [Buffer.from([0xff]), p])));

function plain(err: unknown): void {
  if (!(err instanceof Error) || err.constructor !== Error || !err.message) throw new Error(`threw ${(err as Error)?.name ?? typeof err}: ${String((err as Error)?.message ?? err)}`);
}

const target: EdgesTarget = {
  dictionary: ["\xff", "sequence", "hashblock", "rawtx", "C", "D", "A", "R", "\x00\x00\x00\x00", "\xfe\xfe\xfe\xfe"],
  maxInputBytes: 4096,
  seeds() {
    return [
      message(Buffer.from("sequence"), Buffer.concat([HASH, Buffer.from("C")]), seq(0)),
      message(Buffer.from("sequence"), Buffer.concat([HASH, Buffer.from("A"), Buffer.alloc(8, 1)]), seq(7)),
      message(Buffer.from("sequence"), Buffer.concat([HASH, Buffer.from("D")]), seq(0xfffffffe)),
      message(Buffer.from("hashblock"), HASH, seq(3)),
      message(Buffer.from("sequence"), Buffer.concat([HASH, Buffer.from("R"), Buffer.alloc(8, 0xfe)]), seq(1)),
    ];
  },
  run(input) {
    const parts: Buffer[] = [];
    let from = 0;
    for (let i = 0; i <= input.length; i++) {
      if (i === input.length || input[i] === 0xff) {
        parts.push(Buffer.from(input.subarray(from, i)));
        from = i + 1;
      }
    }
    let msg: ReturnType<typeof parseNotification>;
    try {
      msg = parseNotification(parts);
    } catch (err) {
      plain(err);
      return;
    }
    if (!Number.isInteger(msg.sequence) || msg.sequence < 0 || msg.sequence > 0xffffffff) throw new Error(`sequence ${msg.sequence}`);
    const missed = tracker.observe(msg.sequence);
    if (!Number.isInteger(missed) || missed < 0 || missed > 0xffffffff) throw new Error(`missed ${missed}`);
    if (msg.topic !== "sequence") return;
    try {
      const notice = parseSequenceBody(msg.body);
      if (!/^[0-9a-f]{64}$/.test(notice.hash)) throw new Error(`hash ${notice.hash}`);
      if ((notice.label === "A" || notice.label === "R") !== (notice.mempoolSequence !== undefined)) throw new Error(`label ${notice.label} with mempool sequence ${notice.mempoolSequence}`);
    } catch (err) {
      plain(err);
    }
  },
};
export default target;
