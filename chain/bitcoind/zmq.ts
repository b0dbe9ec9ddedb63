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

import { setTimeout as sleep } from "node:timers/promises";
import { Subscriber } from "zeromq";

/**
 * Bytes of one frame a publisher may send (libzmq's ZMQ_MAXMSGSIZE, checked on the frame's
 * announced size before it is received: a peer past it is disconnected). The sequence topic's
 * largest frame is 41 bytes. Before, a publisher's frames of 100 MB were each received whole,
 * and up to the high-water mark of them (10,000) could wait in the subscriber's queue.
 */
const ZMQ_MAX_FRAME_BYTES = 1024;
/**
 * Notifications read a second, after a burst of as many; past it the listener stops reading
 * and libzmq's queue (its high-water mark) fills, then drops, and the gap in the sequence
 * numbers asks for one resync by RPC. Each notification read costs the loop ~9 µs (quiet
 * machine): a publisher sending 70,000-100,000 a second took 30-45% of the loop's CPU before.
 */
export const ZMQ_NOTICES_PER_SECOND = 5000;
/** After a disconnect, the subscriber's socket is made again this much later (see ZmqListener.start). */
const ZMQ_REOPEN_MS = 1000;

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

/**
 * A subscriber to one endpoint and topic that hands every message to onMessage until closed,
 * at most ZMQ_NOTICES_PER_SECOND of them a second (after a burst of as many), each frame at
 * most ZMQ_MAX_FRAME_BYTES.
 */
export class ZmqListener {
  private socket: Subscriber | null = null;
  /** Which socket is current: a loop or a disconnect of an earlier one is ignored. */
  private generation = 0;
  private reopenTimer: NodeJS.Timeout | null = null;
  private closed = false;
  /** Messages read so far. */
  received = 0;
  /** Sockets opened again after a disconnect. */
  reopened = 0;
  #tokens = ZMQ_NOTICES_PER_SECOND;
  #refilled = performance.now();

  constructor(private readonly opts: ZmqListenerOptions) {}

  /** How long to wait before reading the next message (0: now), one taken. */
  private pace(): number {
    const now = performance.now();
    this.#tokens = Math.min(ZMQ_NOTICES_PER_SECOND, this.#tokens + ((now - this.#refilled) * ZMQ_NOTICES_PER_SECOND) / 1000);
    this.#refilled = now;
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return 0;
    }
    return ((1 - this.#tokens) * 1000) / ZMQ_NOTICES_PER_SECOND;
  }

  start(): void {
    const socket = new Subscriber({ receiveHighWaterMark: this.opts.highWaterMark ?? 10_000, linger: 0, maxMessageSize: ZMQ_MAX_FRAME_BYTES });
    const generation = ++this.generation;
    this.socket = socket;
    // libzmq connects again by itself after a lost connection, but not after a protocol error
    // (a frame past ZMQ_MAX_FRAME_BYTES among them): the socket is made again, at most once a
    // ZMQ_REOPEN_MS, so that one such frame does not end the notifications for good.
    socket.events.on("disconnect", () => this.reopen(generation));
    socket.connect(this.opts.endpoint);
    socket.subscribe(this.opts.topic);
    void this.loop(socket, generation);
  }

  private reopen(generation: number): void {
    if (this.closed || generation !== this.generation || this.reopenTimer !== null) return;
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = null;
      if (this.closed || generation !== this.generation) return;
      this.closeSocket();
      this.reopened++;
      this.start();
    }, ZMQ_REOPEN_MS);
    this.reopenTimer.unref();
  }

  private async loop(socket: Subscriber, generation: number): Promise<void> {
    const current = () => !this.closed && generation === this.generation;
    while (current()) {
      const wait = this.pace();
      if (wait > 0) {
        // Timers of less than a few ms come late: wait for several tokens at once.
        await sleep(Math.max(wait, 20));
        continue;
      }
      let parts: Buffer[];
      try {
        parts = await socket.receive();
      } catch (err) {
        if (current()) this.opts.onError(err as Error);
        return;
      }
      if (!current()) return;
      this.received++;
      try {
        const msg = parseNotification(parts);
        if (msg.topic === this.opts.topic) this.opts.onMessage(msg);
      } catch (err) {
        this.opts.onError(err as Error);
      }
    }
  }

  private closeSocket(): void {
    const socket = this.socket;
    this.socket = null;
    this.generation++;
    if (socket === null) return;
    socket.close(); // its event observer ends with it
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.reopenTimer !== null) clearTimeout(this.reopenTimer);
    this.closeSocket();
  }
}
