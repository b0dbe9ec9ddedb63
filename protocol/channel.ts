// A message channel over one stream socket: frames out, frames in, decoded bodies as
// events. It knows nothing of what the messages mean; the host session and the module
// clients build on it.

import { EventEmitter } from "node:events";
import type { Duplex } from "node:stream";
import { DEFAULT_MAX_FRAME_BYTES, encodeFrame, FrameDecoder, FramingError } from "./frame.ts";
import { CodecError, decodeBody, encodeBody } from "./codec.ts";

export interface ChannelEvents {
  /** A frame whose body decoded to plain data. */
  message: [body: unknown];
  /** A whole frame whose body is not valid MessagePack; the stream itself is still in sync. */
  bad_body: [error: CodecError];
  /** The channel closed; `error` says why when it was not a clean end. */
  close: [error?: Error];
}

export class FrameChannel extends EventEmitter<ChannelEvents> {
  private readonly decoder: FrameDecoder;
  private closed = false;

  constructor(
    private readonly socket: Duplex,
    readonly maxFrameBytes = DEFAULT_MAX_FRAME_BYTES,
  ) {
    super();
    this.decoder = new FrameDecoder(maxFrameBytes);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (err) => this.finish(err));
    socket.on("close", () => this.finish());
    socket.on("end", () => {
      const left = this.decoder.buffered;
      this.finish(left > 0 ? new FramingError(`connection ended inside a frame (${left} bytes of a truncated frame)`) : undefined);
    });
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    let bodies: Buffer[];
    try {
      bodies = this.decoder.push(chunk);
    } catch (err) {
      this.close(err as Error);
      return;
    }
    for (const body of bodies) {
      if (this.closed) return;
      let value: unknown;
      try {
        value = decodeBody(body);
      } catch (err) {
        this.emit("bad_body", err as CodecError);
        continue;
      }
      this.emit("message", value);
    }
  }

  /**
   * Send one message. Returns false when the socket's buffer is full: the caller should wait
   * for `drained()` before sending more bulk traffic. Throws if the message is too large.
   */
  send(message: unknown): boolean {
    if (this.closed) return false;
    const body = encodeBody(message);
    if (body.length > this.maxFrameBytes) {
      throw new FramingError(`message of ${body.length} bytes exceeds the maximum frame size of ${this.maxFrameBytes}`);
    }
    return this.socket.write(encodeFrame(body));
  }

  get congested(): boolean {
    return this.socket.writableNeedDrain;
  }

  /** Resolves when the socket can take more data (at once when it already can). */
  drained(): Promise<void> {
    if (!this.socket.writableNeedDrain || this.closed) return Promise.resolve();
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

  /** Close the channel; with `error` when closing because something went wrong. */
  close(error?: Error): void {
    if (this.closed) return;
    this.finish(error);
    this.socket.destroy();
  }

  /** Send a last message, then end the stream once it is flushed. */
  closeAfter(message: unknown): void {
    if (this.closed) return;
    try {
      this.socket.end(encodeFrame(encodeBody(message)));
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
    if (!this.closed) this.socket.pause();
  }

  resumeReading(): void {
    if (!this.closed) this.socket.resume();
  }

  /** Bytes handed to `send` that the peer has not read yet (queued in this process). */
  get queuedBytes(): number {
    return this.socket.writableLength;
  }

  private finish(error?: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.emit("close", error);
  }
}
