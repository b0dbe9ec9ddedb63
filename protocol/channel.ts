// One file: a channel's writes, reads and backpressure share the accounting of its buffers.
//
// A message channel over one stream socket: frames out, frames in, decoded bodies as
// events. It knows nothing of what the messages mean; the host session and the module
// clients build on it.
//
// Writes are coalesced: frames sent during one turn of the event loop go out together in one
// write(2) once the turn's callback and its promise continuations are done (process.nextTick
// from the first frame: the answers of a chunk's requests settle in one drain of the microtask
// queue and leave together), in the order they were sent. A write system call per frame cost
// 39% of the host's time serving pipelined requests; waiting for the end of the loop's turn
// (setImmediate) instead cost the host's round trips a trip through the loop (its turn budget
// resumes work in setImmediate callbacks); the isolate host waits for the end of the loop's phase
// (ChannelOptions.flushAt "loop": its frames come from many callbacks in one phase). What waits is bounded:
// once COALESCE_BYTES are waiting they are written at once, and `unsentBytes` (waiting here plus
// queued in the socket) lets the sender apply backpressure.

import { EventEmitter } from "node:events";
import type { Duplex } from "node:stream";
import { DEFAULT_MAX_FRAME_BYTES, FrameDecoder, FramingError } from "./frame.ts";
import { type BodyBuilder, CodecError, decodeBody, decodeBodyStepped, DEFAULT_BODY_LIMITS, EncodeError, encodeBodyParts, encodeEnvelope, encodeEnvelopeParts, HOST_BODY_LIMITS, readEnvelope, type BodyLimits, type ReadEnvelope } from "./codec.ts";

// The clock is the global `performance` (node:perf_hooks would load its histogram and timerify
// code into every isolate host at boot: runtime/isolate/natives.ts), read once at its first
// use, not when this file loads (reading the global loads perf_hooks too): the global is a lazy
// accessor that Node runs on every read (~0.15 µs at load 5-9, where the call to now() itself
// costs about as much), and this file reads the clock about three times per chunk read.
let clock: typeof globalThis.performance | undefined;
/** performance.now(). */
function clockNow(): number {
  return (clock ??= globalThis.performance).now();
}

/** Frames of one chunk handled between two questions to the gate (ChannelOptions.gate). */
const GATE_EVERY = 64;

/**
 * A large body (codec.ts STEPPED_BUILD_VALUES) is built in pieces of at most about this long
 * (or until the gate's budget for the turn is spent), the loop getting a turn between them.
 */
const BUILD_PIECE_MS = 2;

/** Frames waiting for the end of the turn are written at once when they reach this many bytes. */
const COALESCE_BYTES = 64 * 1024;

/** Frames smaller than this are queued as one buffer (header and body copied together); larger ones as their pieces. */
const COPY_BELOW_BYTES = 4096;

/**
 * Bodies of at least this many bytes have their decoding timed (performance.now() costs more
 * than decoding a small request). Below it a body holds at most a few hundred values: tens of
 * microseconds, bounded by the sender's request rate.
 */
const TIMED_BODY_BYTES = 4096;

/** What could be read of a body that was refused: enough to answer it by id. */
type Envelope = ReadEnvelope;

export interface ChannelEvents {
  /**
   * A frame whose body decoded to plain data. `decodeMs` is the time decoding it took on this
   * loop, measured for bodies of TIMED_BODY_BYTES or more (0 for smaller ones), so the
   * receiver can charge it to the sender's share. `bodyBytes` is the body's size: what the
   * receiver may hold while it acts on the message (the host bounds it per module).
   */
  message: [body: unknown, decodeMs: number, bodyBytes: number];
  /**
   * A whole frame whose body was refused (not MessagePack, not plain data, over a limit); the
   * stream itself is still in sync. `envelope` has the body's `t` and `id` when they could be read.
   */
  bad_body: [error: CodecError, envelope: Envelope, decodeMs: number];
  /** The channel closed; `error` says why when it was not a clean end. */
  close: [error?: Error];
  /**
   * One chunk read from the socket was handled: `ms` is the time from its arrival to the end
   * of the `message` / `bad_body` handlers of every frame in it (decoding included), so that a
   * receiver can charge the sender for floods of small frames too (each too cheap to time).
   * Measured and emitted only while someone listens.
   */
  chunk: [ms: number];
}

/**
 * A budget shared by many channels on one loop (runtime/turn.ts TurnBudget, the host's): asked
 * before each chunk read is handled, and every GATE_EVERY frames within one; over it, the
 * chunk (or the rest of its frames) is parked, the socket not read, and handled when `park`'s
 * callback runs, in the order read.
 */
export interface ReadGate {
  /** `now`: performance.now() of this moment when the caller has read the clock already (each read costs ~50-150 ns in this VM). */
  overBudget(now?: number): boolean;
  park(resume: () => void): void;
}

export interface ChannelOptions {
  maxFrameBytes?: number;
  /** The budget per turn of the loop that this channel's input shares with others (none: handled as read). */
  gate?: ReadGate;
  /** Limits on the bodies received (default: the protocol's, DEFAULT_BODY_LIMITS). */
  limits?: Readonly<BodyLimits>;
  /** Limits on the bodies sent, those the peer receives with (default: `limits`). */
  sendLimits?: Readonly<BodyLimits>;
  /**
   * Longest a frame may take to arrive once its first bytes have (none: no limit). Past it,
   * while this side has been reading, the channel is closed with a FramingError naming it.
   */
  frameDeadlineMs?: number;
  /**
   * When the frames waiting are written: "turn" (the default), once the callback that sent the
   * first of them and its promise continuations are done (process.nextTick); "loop", once the
   * loop has run every callback of the phase it is in (setImmediate: same iteration from the
   * poll and timers phases). "loop" is for a process whose frames come from many callbacks run
   * back to back in one phase, none of them from setImmediate callbacks: the isolate host, where
   * isolated-vm hands the main thread every call that finished on the isolate's thread in one
   * wake-up, each in its own callback (runtime/isolate/worker.ts). Not the host: its turn budget
   * resumes parked work in setImmediate callbacks, whose frames would then wait a whole loop.
   */
  flushAt?: "turn" | "loop";
}

/**
 * How long the host waits for the rest of a frame a module has begun (HOST_SIDE): a module
 * that sends a header announcing 16 MiB and the body but its last byte, or drips it a byte a
 * second, held that much host memory for as long as it liked; now for at most this long, then
 * its channel is closed as a framing error (it restarts per its policy). A whole frame of the
 * maximum size crosses a Unix socket in milliseconds.
 */
export const FRAME_DEADLINE_MS = 30_000;

/**
 * The two ends' limits: they differ only in max_total_string_bytes, which bounds the strings
 * of what a module sends (what they cost the host's shared loop to decode), not of what the
 * host sends (codec.ts HOST_BODY_LIMITS).
 */
export const HOST_SIDE: Readonly<ChannelOptions> = Object.freeze({ limits: DEFAULT_BODY_LIMITS, sendLimits: HOST_BODY_LIMITS, frameDeadlineMs: FRAME_DEADLINE_MS });
export const MODULE_SIDE: Readonly<ChannelOptions> = Object.freeze({ limits: HOST_BODY_LIMITS, sendLimits: DEFAULT_BODY_LIMITS });

export class FrameChannel extends EventEmitter<ChannelEvents> {
  private readonly decoder: FrameDecoder;
  private closed = false;
  private handling = false;
  readonly maxFrameBytes: number;
  readonly limits: Readonly<BodyLimits>;
  readonly sendLimits: Readonly<BodyLimits>;
  /** Frames (each one buffer, its header included) waiting for the end of the turn. */
  private out: Buffer[] = [];
  private outBytes = 0;
  private flushScheduled = false;
  private readonly flushAtLoop: boolean;
  private readonly gate: ReadGate | undefined;
  /** Chunks read and not yet handled, waiting for the gate (the socket is paused meanwhile). */
  private parked: Array<Buffer | Buffer[]> | undefined;
  /** A large body being built in pieces (with a gate only); the frames after it wait in `parked`. */
  private building: BodyBuilder | undefined;
  /** The size of the body being built. */
  private buildingBytes = 0;
  /** Set while parked input is handled whatever the budget (the stream ends): a body is built whole. */
  private draining = false;
  /** The receiver asked not to read (pauseReading); the gate may pause the socket too. */
  private readPaused = false;
  private readonly frameDeadlineMs: number | undefined;
  /** The frame deadline's timer, while a frame is incomplete (see watchFrame). */
  private frameTimer: NodeJS.Timeout | undefined;
  /** Frames received whole, and how many there were when the timer was armed. */
  private framesWhole = 0;
  private framesAtArm = 0;
  /** Since when this side has not been reading (pauseReading, or input parked for the gate); 0 while it reads. */
  private pausedAt = 0;
  /** Milliseconds this side has not been reading, in all, and that total when the timer was armed. */
  private pausedMs = 0;
  private pausedAtArm = 0;
  private readonly flushNow = () => {
    this.flushScheduled = false;
    this.flush();
  };

  constructor(
    private readonly socket: Duplex,
    options: number | ChannelOptions = {},
  ) {
    super();
    const opts = typeof options === "number" ? { maxFrameBytes: options } : options;
    this.maxFrameBytes = opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    this.limits = opts.limits ?? DEFAULT_BODY_LIMITS;
    this.sendLimits = opts.sendLimits ?? this.limits;
    this.decoder = new FrameDecoder(this.maxFrameBytes);
    this.gate = opts.gate;
    this.frameDeadlineMs = opts.frameDeadlineMs;
    this.flushAtLoop = opts.flushAt === "loop";
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (err) => this.finish(err));
    // What was read before the end is handled before it (a goodbye written just before exiting).
    socket.on("close", () => {
      this.handleParked();
      this.finish();
    });
    socket.on("end", () => {
      this.handleParked();
      const left = this.decoder.buffered;
      this.finish(left > 0 ? new FramingError(`connection ended inside a frame (${left} bytes of a truncated frame)`) : undefined);
    });
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    if (this.parked) {
      this.parked.push(chunk);
      this.socket.pause();
      return;
    }
    // One clock reading for the gate and the chunk's timing.
    const now = this.gate ? clockNow() : undefined;
    if (now !== undefined && this.gate!.overBudget(now)) {
      this.park([chunk]);
      return;
    }
    const rest = this.handleTimed(chunk, now);
    if (rest) this.park([rest]);
  }

  /** Wait for the gate with `items` (chunks, or the frames of a chunk not yet handled) and the socket paused. */
  private park(items: Array<Buffer | Buffer[]>): void {
    this.parked = items;
    if (this.pausedAt === 0) this.pausedAt = Date.now();
    this.socket.pause();
    this.gate!.park(this.unpark);
  }

  /** The gate's turn came: handle what was parked, in order, while the budget allows. */
  private readonly unpark = (): void => {
    const items = this.parked;
    if (!items) return;
    this.parked = undefined;
    for (let i = 0; i < items.length; i++) {
      if (this.closed) return;
      if (i > 0 && this.gate!.overBudget()) {
        this.park(items.slice(i));
        return;
      }
      const rest = this.handleTimed(items[i]!);
      if (rest) {
        this.park([rest, ...items.slice(i + 1)]);
        return;
      }
    }
    if (!this.closed && !this.readPaused && !this.parked) this.socket.resume();
    this.readingAgain();
  };

  /** This side reads again unless it still waits (pauseReading or parked): the time it did not counts for no frame. */
  private readingAgain(): void {
    if (this.pausedAt === 0 || this.readPaused || this.parked) return;
    this.pausedMs += Date.now() - this.pausedAt;
    this.pausedAt = 0;
  }

  /** Parked input handled now, whatever the budget (the stream ends). */
  private handleParked(): void {
    const items = this.parked;
    this.parked = undefined;
    this.draining = true;
    try {
      for (const item of items ?? []) {
        let rest = this.closed ? undefined : this.handleTimed(item);
        while (rest && !this.closed) rest = this.handleTimed(rest);
      }
    } finally {
      this.draining = false;
    }
  }

  /** True while input read waits for the gate (the host's budget per turn). */
  get isParked(): boolean {
    return this.parked !== undefined;
  }

  /** Handle a chunk read (or the rest of one); returns the frames left for a later turn, if any. `now`: the clock read just before, if it was. */
  private handleTimed(item: Buffer | Buffer[], now?: number): Buffer | Buffer[] | undefined {
    // Timed only for a receiver that charges it (the host's session; a module's client does not).
    const start = this.listenerCount("chunk") > 0 ? (now ?? clockNow()) : 0;
    this.handling = true;
    let rest: Buffer | Buffer[] | undefined;
    try {
      rest = this.handleChunk(item);
    } finally {
      this.handling = false;
    }
    if (!this.closed && start > 0) this.emit("chunk", clockNow() - start);
    return rest;
  }

  /** True while a chunk of input is being handled (its `message` / `bad_body` handlers run). */
  get handlingInput(): boolean {
    return this.handling;
  }

  /**
   * The frames of one chunk, in order. A chunk of 64 KiB can hold thousands of small frames:
   * every GATE_EVERY frames the gate is asked, and past its budget the rest is returned, to
   * be handled in a later turn (the socket stays paused until then). A large body is built in
   * pieces (buildPiece): while it is not done, the item (or the frames after the body) is
   * returned, to be handled after it.
   */
  private handleChunk(item: Buffer | Buffer[]): Buffer | Buffer[] | undefined {
    if (this.building && !this.buildPiece(clockNow())) return item;
    let bodies: Buffer[];
    if (Array.isArray(item)) {
      bodies = item;
    } else {
      try {
        bodies = this.decoder.push(item);
      } catch (err) {
        this.close(err as Error);
        return undefined;
      }
      this.framesWhole += bodies.length;
      if (this.frameDeadlineMs !== undefined) this.watchFrame();
    }
    for (let i = 0; i < bodies.length; i++) {
      if (this.closed) return undefined;
      if (i > 0 && i % GATE_EVERY === 0 && this.gate?.overBudget()) return bodies.slice(i);
      const body = bodies[i]!;
      let value: unknown;
      const t0 = body.length >= TIMED_BODY_BYTES ? clockNow() : 0;
      try {
        if (this.gate) {
          // Validated now; a body of many values is built in pieces, the frames after it wait.
          const r = decodeBodyStepped(body, this.limits);
          if (!r.done) {
            this.building = r.builder;
            this.buildingBytes = body.length;
            if (!this.buildPiece(t0)) return bodies.slice(i + 1);
            continue;
          }
          value = r.value;
        } else value = decodeBody(body, this.limits);
      } catch (err) {
        const error = err instanceof CodecError ? err : new CodecError(String((err as Error)?.message ?? err));
        const envelope = readEnvelope(body);
        this.emit("bad_body", error, envelope, t0 ? clockNow() - t0 : 0);
        continue;
      }
      this.emit("message", value, t0 ? clockNow() - t0 : 0, body.length);
    }
    // Frames before a bad length prefix were delivered above; now the stream is lost.
    if (this.decoder.error && !this.closed) this.close(this.decoder.error);
  }

  /**
   * One piece of the body being built, from `t0` (when this piece of work began): until the
   * body is done (emitted as a message: true) or BUILD_PIECE_MS passed or the gate's budget is
   * spent (false: the rest in a later turn). Each piece's time is charged with its chunk's
   * (the "chunk" event), the last one's also as the message's decodeMs.
   */
  private buildPiece(t0: number): boolean {
    const builder = this.building!;
    let done: boolean;
    try {
      done = builder.step(() => !this.draining && (clockNow() - t0 >= BUILD_PIECE_MS || this.gate!.overBudget()));
    } catch (err) {
      // validate() accepted the body, so this is a bug in the builder: a refusal, not a crash.
      this.building = undefined;
      const error = new CodecError(`invalid MessagePack: ${(err as Error)?.message ?? String(err)}`);
      this.emit("bad_body", error, {}, clockNow() - t0);
      return true;
    }
    if (!done) return false;
    this.building = undefined;
    this.emit("message", builder.value, clockNow() - t0, this.buildingBytes);
    return true;
  }

  /**
   * The frame deadline: armed when input ends inside a frame, let go when none is incomplete.
   * When it fires, a frame that was incomplete then and is still (no whole frame since) has had
   * frameDeadlineMs, less the time this side did not read (its own flow control: the rest may
   * be waiting in the socket), for which it waits again, with a second more.
   */
  private watchFrame(): void {
    if (this.decoder.buffered === 0) {
      clearTimeout(this.frameTimer);
      this.frameTimer = undefined;
      return;
    }
    if (this.frameTimer) return;
    this.framesAtArm = this.framesWhole;
    this.pausedAtArm = this.pausedMs;
    this.armFrameTimer(this.frameDeadlineMs!);
  }

  private armFrameTimer(delayMs: number): void {
    this.frameTimer = setTimeout(() => {
      this.frameTimer = undefined;
      if (this.closed || this.decoder.buffered === 0) return;
      if (this.framesWhole !== this.framesAtArm) {
        this.watchFrame(); // another frame: its own deadline
        return;
      }
      const paused = this.pausedMs - this.pausedAtArm + (this.pausedAt ? Date.now() - this.pausedAt : 0);
      if (paused > 0) {
        this.pausedAtArm = this.pausedMs + (this.pausedAt ? Date.now() - this.pausedAt : 0);
        this.armFrameTimer(paused + 1000);
        return;
      }
      const deadline = this.frameDeadlineMs!;
      this.close(new FramingError(`a frame begun over ${deadline} ms ago is still incomplete (${this.decoder.buffered} of its ${this.decoder.expected} bytes arrived): a frame must arrive whole within ${deadline} ms of its first bytes while the host reads (a fixed limit of the host); the connection is closed`));
    }, delayMs);
    this.frameTimer.unref();
  }

  /**
   * Send one message (it leaves at the end of this turn of the event loop, after the messages
   * sent before it). Returns false when the sender should slow down: wait for `drained()`
   * before sending more bulk traffic. Throws EncodeError (`result_too_large`,
   * `not_plain_data`) when the message cannot be sent; nothing is sent then.
   */
  send(message: unknown): boolean {
    if (this.closed) return false;
    // Large binary values are parts of their own, not copied (codec.ts encodeBodyParts).
    return this.sendBody(...encodeBodyParts(message, this.sendLimits));
  }

  /**
   * send() of `{ ...head, [key]: value }`, where `value` may be large and shared: a deeply
   * frozen value (a block) is encoded once and its bytes reused (codec.ts encodeEnvelope), and
   * so is a value sent with the same `shared` holder (one event's payload to every subscriber).
   */
  sendEnvelope(head: Record<string, unknown>, key: string, value: unknown, shared?: object, reserved?: number): boolean {
    if (this.closed) return false;
    const parts = encodeEnvelope(head, key, value, this.sendLimits, shared);
    // `reserved`: the most bytes the sender counted on for this frame (host/session.ts reserves
    // each answer's bound of max_unread_bytes before serving it); a larger one is not sent.
    if (reserved !== undefined) {
      let length = 0;
      for (const p of parts) length += p.length;
      if (length > reserved && length <= this.maxFrameBytes) {
        throw new EncodeError("result_too_large", `the answer encodes to ${length} bytes, over the ${reserved} bytes reserved for it (capabilities/answer-bounds.ts: the host's bound for this method is wrong; report it)`, "max_unread_bytes");
      }
    }
    return this.sendBody(...parts);
  }

  /**
   * send() of `{ ...head, [key]: <the value encoded as `encodedValue`> }`: the bytes go into the
   * frame as they are, unchecked (the isolate host's storage transactions, encoded inside the
   * isolate). The receiver decodes them with its limits like any frame.
   */
  sendEncoded(head: Record<string, unknown>, key: string, encodedValue: Buffer): boolean {
    if (this.closed) return false;
    return this.sendBody(...encodeEnvelopeParts(head, key, encodedValue, this.sendLimits));
  }

  /** Queue one frame whose body is `parts`, one after the other. */
  private sendBody(...parts: Buffer[]): boolean {
    let length = 0;
    for (const p of parts) length += p.length;
    if (length > this.maxFrameBytes) {
      throw new EncodeError("result_too_large", `the message encodes to ${length} bytes, over the maximum frame size of ${this.maxFrameBytes} bytes (max_frame_bytes); send less at a time`, "max_frame_bytes");
    }
    if (length < COPY_BELOW_BYTES) {
      // A small frame: header and body in one buffer (copied once here, not again at the flush).
      const frame = Buffer.allocUnsafe(4 + length);
      frame.writeUInt32BE(length, 0);
      let at = 4;
      for (const p of parts) at += p.copy(frame, at);
      this.out.push(frame);
    } else {
      const header = Buffer.allocUnsafe(4);
      header.writeUInt32BE(length, 0);
      this.out.push(header, ...parts);
    }
    this.outBytes += 4 + length;
    if (this.outBytes >= COALESCE_BYTES) {
      this.flush();
    } else if (!this.flushScheduled) {
      this.flushScheduled = true;
      if (this.flushAtLoop) setImmediate(this.flushNow);
      else process.nextTick(this.flushNow);
    }
    return !this.congested;
  }

  /**
   * Told when a write has been handed to the kernel (`unsentBytes` fell), while `wanted()` says
   * so: the host session announces it to [host] module_bytes_mb's waiters while there are any
   * (protocol/host-bytes.ts). Asked per flush, so a write carries no callback (and the stream no
   * extra tick) when nobody waits.
   */
  writeWatch: { wanted(): boolean; written(): void } | undefined;

  private readonly written = (): void => {
    this.writeWatch?.written();
  };

  /** Write what waits, in one system call. */
  private flush(): void {
    if (this.outBytes === 0 || this.closed) return;
    const out = this.out;
    const bytes = this.outBytes;
    this.out = [];
    this.outBytes = 0;
    const done = this.writeWatch?.wanted() ? this.written : undefined;
    if (bytes < COALESCE_BYTES) {
      this.socket.write(out.length === 1 ? out[0]! : Buffer.concat(out, bytes), done);
    } else {
      // Large: no copy; the corked writes leave as one writev.
      this.socket.cork();
      for (let i = 0; i < out.length; i++) this.socket.write(out[i]!, i === out.length - 1 ? done : undefined);
      this.socket.uncork();
    }
  }

  /** Bytes held for the frame being received (FrameDecoder.held): at most about its size. */
  get arrivingBytes(): number {
    return this.decoder.held;
  }

  /** Bytes sent but not yet handed to the kernel: waiting here plus queued in the socket. */
  get unsentBytes(): number {
    return this.outBytes + this.socket.writableLength;
  }

  get congested(): boolean {
    return this.socket.writableNeedDrain || this.outBytes >= COALESCE_BYTES;
  }

  /** Resolves when the socket can take more data (at once when it already can). */
  drained(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.flush();
    if (!this.socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.socket.off("drain", done);
        this.off("close", done);
        resolve();
      };
      this.socket.once("drain", done);
      this.once("close", done);
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Close the channel; with `error` when closing because something went wrong. Unsent frames are dropped. */
  close(error?: Error): void {
    if (this.closed) return;
    this.out = [];
    this.outBytes = 0;
    this.finish(error);
    this.socket.destroy();
  }

  /** Send a last message after those already sent, then end the stream once it is flushed. */
  closeAfter(message: unknown): void {
    if (this.closed) return;
    try {
      this.send(message);
      this.flush();
      this.socket.end();
    } catch {
      this.socket.destroy();
    }
    // Give a peer that does not read a moment, then cut it off.
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  /**
   * Stop reading: the kernel's socket buffer fills and the peer's writes block (backpressure).
   * Frames of a chunk already read are still emitted.
   */
  pauseReading(): void {
    this.readPaused = true;
    if (this.pausedAt === 0) this.pausedAt = Date.now();
    if (!this.closed) this.socket.pause();
  }

  /** Read again (unless chunks already read wait for the gate: reading resumes after them). */
  resumeReading(): void {
    this.readPaused = false;
    if (!this.closed && !this.parked) this.socket.resume();
    this.readingAgain();
  }

  private finish(error?: Error): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.frameTimer);
    this.emit("close", error);
  }
}
