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

/**
 * A frame body of more than this many bytes that spans reads is gathered into a buffer of its
 * own while it arrives (see Gather); a smaller one is joined at its last read (one copy of at
 * most this much).
 */
export const GATHER_FROM_BYTES = 64 * 1024;
/** Reads shorter than this are merged (see Gather.keep): one Buffer object per read would cost ~100 bytes a byte. */
const SMALL_READ_BYTES = 1024;
/** Merged small reads become one part at this many reads or bytes (so a merge copies at most ~64 KiB). */
const MERGE_READS = 1024;
const MERGE_BYTES = 64 * 1024;
/** Once the frame's buffer exists, each read copies itself and at most this many times its size of the backlog. */
const BACKLOG_PER_BYTE = 2;

/**
 * The body of one frame that spans reads, held in proportion to what has arrived. Until half
 * the body is there, the reads are kept as they came (short reads merged); then the body's
 * buffer is allocated and each later read is copied into its place, together with up to twice
 * its size of the reads kept before (the backlog). The backlog is smaller than half the body
 * and the reads still to come bring more than half of it, so it is all in place when the last
 * byte arrives: no read copies more than three times its own size (plus a merge of at most
 * MERGE_BYTES), none the whole frame; memory is what arrived, then at most the body's size
 * plus the backlog (under three times what arrived).
 */
class Gather {
  /** Body bytes arrived. */
  arrived = 0;
  /** Kept reads not yet in `body`, in order; `parts[0]` from `partAt` on. */
  private parts: Buffer[] = [];
  private partAt = 0;
  /** Short reads since the last merge. */
  private small: Buffer[] = [];
  private smallBytes = 0;
  /** The body's buffer, once half of it has arrived; the backlog fills body[filled .. backlogEnd). */
  private body: Buffer | undefined;
  private filled = 0;

  constructor(
    readonly length: number,
    private readonly gatherFrom: number,
  ) {}

  /** Takes the frame's bytes from `bytes` (at most what is missing); returns the body once whole. */
  add(bytes: Buffer): Buffer | undefined {
    this.arrived += bytes.length;
    if (!this.body && this.length > this.gatherFrom && 2 * this.arrived >= this.length) {
      this.flushSmall(false);
      this.body = Buffer.allocUnsafeSlow(this.length);
    }
    if (!this.body) {
      this.keep(bytes);
      if (this.arrived < this.length) return undefined;
      this.flushSmall(false);
      const whole = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.length);
      this.parts = [];
      return whole;
    }
    bytes.copy(this.body, this.arrived - bytes.length);
    this.fillBacklog(BACKLOG_PER_BYTE * bytes.length);
    if (this.arrived < this.length) return undefined;
    // By the arithmetic above the backlog is in place; copied here should it not be (never more than it).
    this.fillBacklog(Infinity);
    const body = this.body;
    this.body = undefined;
    return body;
  }

  /** A read kept before the body's buffer exists. */
  private keep(bytes: Buffer): void {
    if (bytes.length >= SMALL_READ_BYTES) {
      this.flushSmall(false);
      this.parts.push(bytes);
      return;
    }
    this.small.push(bytes);
    this.smallBytes += bytes.length;
    if (this.small.length >= MERGE_READS || this.smallBytes >= MERGE_BYTES) this.flushSmall(true);
  }

  /** Moves the short reads to `parts`, merged into one if `merge`. */
  private flushSmall(merge: boolean): void {
    if (this.small.length === 0) return;
    if (merge) this.parts.push(Buffer.concat(this.small, this.smallBytes));
    else for (const b of this.small) this.parts.push(b);
    this.small = [];
    this.smallBytes = 0;
  }

  /** Copies up to `budget` bytes of the backlog into the body, releasing what is copied. */
  private fillBacklog(budget: number): void {
    const body = this.body!;
    let i = 0;
    while (budget > 0 && i < this.parts.length) {
      const part = this.parts[i]!;
      const n = Math.min(budget, part.length - this.partAt);
      part.copy(body, this.filled, this.partAt, this.partAt + n);
      this.filled += n;
      budget -= n;
      this.partAt += n;
      if (this.partAt === part.length) {
        i++;
        this.partAt = 0;
      }
    }
    if (i > 0) this.parts = this.parts.slice(i);
  }

  /** Bytes held for this frame (for tests of its memory). */
  get held(): number {
    let n = this.body ? this.body.length : 0;
    for (const p of this.parts) n += p.length;
    return n + this.smallBytes - this.partAt;
  }
}

/**
 * Incremental decoder. Feed it reads as they arrive; it returns whole bodies. Frames inside one
 * read are returned as views of it (the common case, many small frames per read, copies
 * nothing). A frame that spans reads is held as its reads until whole (see Gather): joined at
 * its last read when small, gathered into its own buffer as it arrives when large. Joining
 * everything buffered on every read would cost time quadratic in the frame's size (seconds of
 * the host's loop for one 16 MiB frame); joining a large frame at its last read was one copy
 * of up to 16 MiB in one piece (107 ms median into fresh memory at load 19).
 */
export class FrameDecoder {
  /** A length prefix split across reads: its bytes so far. */
  private head = Buffer.alloc(4);
  private headBytes = 0;
  /** The frame whose body is arriving. */
  private frame: Gather | undefined;

  /**
   * @param gatherFrom bodies larger than this are gathered as they arrive (GATHER_FROM_BYTES;
   *   smaller in tests and fuzzing, so that small frames take that path too)
   */
  constructor(
    private readonly maxFrameBytes = DEFAULT_MAX_FRAME_BYTES,
    private readonly gatherFrom = GATHER_FROM_BYTES,
  ) {}

  /**
   * A framing error found after whole frames in the same chunk: those frames are returned
   * first (a module's last messages before its bad frame still count), then this is set and
   * every later push throws it.
   */
  error: FramingError | undefined;

  /** Returns complete frame bodies; throws FramingError on a bad length prefix. */
  push(chunk: Buffer): Buffer[] {
    if (this.error) throw this.error;
    const out: Buffer[] = [];
    let off = 0;
    while (off < chunk.length) {
      if (this.frame) {
        const frame = this.frame;
        const n = Math.min(chunk.length - off, frame.length - frame.arrived);
        const body = frame.add(off === 0 && n === chunk.length ? chunk : chunk.subarray(off, off + n));
        off += n;
        if (!body) break;
        this.frame = undefined;
        out.push(body);
        continue;
      }
      let len: number;
      if (this.headBytes > 0 || chunk.length - off < 4) {
        const n = Math.min(4 - this.headBytes, chunk.length - off);
        chunk.copy(this.head, this.headBytes, off, off + n);
        this.headBytes += n;
        off += n;
        if (this.headBytes < 4) break;
        this.headBytes = 0;
        len = this.head.readUInt32BE(0);
      } else {
        len = chunk.readUInt32BE(off);
        off += 4;
      }
      if (len === 0 || len > this.maxFrameBytes) {
        const err = new FramingError(len === 0 ? "zero-length frame" : `frame of ${len} bytes exceeds the maximum of ${this.maxFrameBytes}`);
        this.error = err;
        if (out.length === 0) throw err;
        return out;
      }
      if (chunk.length - off >= len) {
        out.push(chunk.subarray(off, off + len));
        off += len;
      } else {
        this.frame = new Gather(len, this.gatherFrom);
      }
    }
    return out;
  }

  /** Bytes received that do not yet form a whole frame (a truncated frame at close). */
  get buffered(): number {
    return this.frame ? 4 + this.frame.arrived : this.headBytes;
  }

  /** Bytes (header included) the frame being received needs before it is whole; 0 when none is. */
  get expected(): number {
    return this.frame ? 4 + this.frame.length : this.headBytes > 0 ? 4 : 0;
  }

  /** Bytes this decoder holds for the frame in progress (its reads, then its buffer and backlog). */
  get held(): number {
    return this.frame ? this.frame.held : this.headBytes;
  }
}
