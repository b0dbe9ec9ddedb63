// Bitcoin Core's ZMQ notifications, read with the `zeromq` package (libzmq bindings with
// prebuilt binaries in the npm package: nothing to compile at set-up).
//
// Core publishes each notification as a three-part message (doc/zmq.md):
//   [topic, body, sequence]
// where `sequence` is a 4-byte little-endian counter per topic that starts at 0 and grows by
// one per message. A missing number means messages were lost (ZMQ drops silently when the
// subscriber falls behind its high-water mark, or while it reconnects); the backend then
// resyncs by RPC. The `sequence` topic's body is:
//   <32-byte hash, display order><1-byte label>[<8-byte little-endian mempool sequence>]
// with label C (block connected), D (block disconnected), A (transaction added to the
// mempool) or R (transaction removed, for a reason other than a block); A and R carry the
// mempool sequence number.

import { Subscriber } from "zeromq";

type SequenceLabel = "C" | "D" | "A" | "R";

export interface SequenceNotice {
  hash: string;
  label: SequenceLabel;
  mempoolSequence?: bigint;
}

export interface ZmqMessage {
  topic: string;
  body: Buffer;
  sequence: number;
}

/** Splits a Core notification; throws on a shape Core never sends. */
export function parseNotification(parts: Buffer[]): ZmqMessage {
  if (parts.length !== 3) throw new Error(`a ZMQ notification has 3 parts, this one ${parts.length}`);
  const [topic, body, seq] = parts as [Buffer, Buffer, Buffer];
  if (seq.length !== 4) throw new Error(`the sequence part is 4 bytes, this one ${seq.length}`);
  if (topic.length > 32) throw new Error("topic longer than 32 bytes");
  return { topic: topic.toString("latin1"), body, sequence: seq.readUInt32LE(0) };
}

export function parseSequenceBody(body: Buffer): SequenceNotice {
  if (body.length !== 33 && body.length !== 41) throw new Error(`a sequence body is 33 or 41 bytes, this one ${body.length}`);
  const label = String.fromCharCode(body[32]!);
  if (label !== "C" && label !== "D" && label !== "A" && label !== "R") throw new Error(`unknown sequence label ${JSON.stringify(label)}`);
  const hash = body.subarray(0, 32).toString("hex");
  if (label === "A" || label === "R") {
    if (body.length !== 41) throw new Error(`a mempool (${label}) sequence body is 41 bytes, this one ${body.length}`);
    return { hash, label, mempoolSequence: body.readBigUInt64LE(33) };
  }
  if (body.length !== 33) throw new Error(`a block (${label}) sequence body is 33 bytes, this one ${body.length}`);
  return { hash, label };
}

/** Tracks one topic's 4-byte counter; says how many messages were lost before this one. */
export class SequenceTracker {
  private last: number | null = null;

  /** Messages missed between the previous one and `seq` (0 when none; wraps at 2^32). */
  observe(seq: number): number {
    const prev = this.last;
    this.last = seq;
    if (prev === null) return 0;
    return (seq - prev - 1 + 0x1_0000_0000) % 0x1_0000_0000;
  }

  /** Forget the last number (after a reconnect the publisher may have restarted at 0). */
  reset(): void {
    this.last = null;
  }
}

export interface ZmqListenerOptions {
  endpoint: string;
  topic: string;
  onMessage: (msg: ZmqMessage) => void;
  onError: (err: Error) => void;
  /** Subscriber high-water mark (messages queued before ZMQ drops); default 10 000. */
  highWaterMark?: number;
}

/** A subscriber to one endpoint and topic that hands every message to onMessage until closed. */
export class ZmqListener {
  private readonly socket: Subscriber;
  private closed = false;

  constructor(private readonly opts: ZmqListenerOptions) {
    this.socket = new Subscriber({ receiveHighWaterMark: opts.highWaterMark ?? 10_000, linger: 0 });
  }

  start(): void {
    this.socket.connect(this.opts.endpoint);
    this.socket.subscribe(this.opts.topic);
    void this.loop();
  }

  private async loop(): Promise<void> {
    while (!this.closed) {
      let parts: Buffer[];
      try {
        parts = await this.socket.receive();
      } catch (err) {
        if (!this.closed) this.opts.onError(err as Error);
        return;
      }
      try {
        const msg = parseNotification(parts);
        if (msg.topic === this.opts.topic) this.opts.onMessage(msg);
      } catch (err) {
        this.opts.onError(err as Error);
      }
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.close();
  }
}
