// Length-delimited framing: every frame is a 4-byte big-endian body length followed by the
// body. The length counts the body only. A zero length, or a length above the negotiated
// maximum, is a framing error: the stream can no longer be trusted and the connection closes.

export const DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024;

export class FramingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FramingError";
  }
}

export function encodeFrame(body: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(4 + body.length);
  frame.writeUInt32BE(body.length, 0);
  frame.set(body, 4);
  return frame;
}

/** Parts of a frame still arriving that are merged into one (see FrameDecoder.push). */
const COMPACT_PARTS = 1024;

/**
 * Incremental decoder. Feed it chunks as they arrive; it returns whole bodies. It copies only
 * when a frame spans chunks, so the common case (many small frames per chunk) allocates
 * nothing but the returned views. A large frame arriving in many chunks is gathered without
 * copying until all of it is there, then copied once (joining the buffered chunks on every
 * arrival would cost time quadratic in the frame size: seconds of the host's event loop for
 * one 16 MiB frame), and a frame trickled a few bytes per read has its parts merged every
 * COMPACT_PARTS reads (each of its bytes copied once more).
 */
export class FrameDecoder {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** pending[0 .. compacted) are already compacted parts (see push). */
  private compacted = 0;
  /** Bytes needed before the buffered data can yield anything (a header, or a whole frame). */
  private needed = 4;

  constructor(private readonly maxFrameBytes = DEFAULT_MAX_FRAME_BYTES) {}

  /**
   * A framing error found after whole frames in the same chunk: those frames are returned
   * first (a module's last messages before its bad frame still count), then this is set and
   * every later push throws it.
   */
  error: FramingError | undefined;

  /** Returns complete frame bodies; throws FramingError on a bad length prefix. */
  push(chunk: Buffer): Buffer[] {
    if (this.error) throw this.error;
    if (chunk.length === 0) return [];
    let buf: Buffer;
    if (this.pendingBytes === 0) {
      buf = chunk;
    } else {
      this.pending.push(chunk);
      this.pendingBytes += chunk.length;
      if (this.pendingBytes < this.needed) {
        // A frame trickled in a byte per read would hold one Buffer object (~100 bytes) per byte
        // received: every COMPACT_PARTS parts, those since the last compaction become one, so
        // each byte is copied once more at most and the list holds ~1/1000 of the reads.
        if (this.pending.length - this.compacted >= COMPACT_PARTS) {
          const tail = this.pending.splice(this.compacted);
          this.pending.push(Buffer.concat(tail));
          this.compacted = this.pending.length;
        }
        return [];
      }
      buf = Buffer.concat(this.pending, this.pendingBytes);
      this.pending = [];
      this.pendingBytes = 0;
      this.compacted = 0;
    }
    const out: Buffer[] = [];
    let off = 0;
    this.needed = 4;
    while (buf.length - off >= 4) {
      const len = buf.readUInt32BE(off);
      if (len === 0 || len > this.maxFrameBytes) {
        const err = new FramingError(len === 0 ? "zero-length frame" : `frame of ${len} bytes exceeds the maximum of ${this.maxFrameBytes}`);
        if (out.length === 0) throw err;
        this.error = err;
        return out;
      }
      if (buf.length - off - 4 < len) {
        this.needed = 4 + len;
        break;
      }
      out.push(buf.subarray(off + 4, off + 4 + len));
      off += 4 + len;
    }
    if (off < buf.length) {
      const rest = buf.subarray(off);
      this.pending.push(rest);
      this.pendingBytes = rest.length;
    }
    return out;
  }

  /** Bytes received that do not yet form a whole frame (a truncated frame at close). */
  get buffered(): number {
    return this.pendingBytes;
  }

  /** Bytes (header included) the frame being received needs before it is whole; 0 when none is. */
  get expected(): number {
    return this.pendingBytes > 0 ? Math.max(this.needed, 4) : 0;
  }
}
