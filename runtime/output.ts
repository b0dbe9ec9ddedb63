// Reading a module's stdout and stderr: bytes in, lines out, memory bounded by the line limit.
// A line is never built beyond `maxBytes`: over-long lines are handed on cut at the limit
// (marked `cut`) the moment they reach it, and the rest of that line is skipped as it arrives.
// (readline builds the whole line first: a module writing 600 MiB without a newline made it
// throw "Invalid string length" inside a stream handler.)

/** Bytes of one stdout/stderr line kept; the rest of a longer line is discarded. */
export const OUTPUT_LINE_BYTES = 4096;

export type LineHandler = (line: Buffer, cut: boolean) => void;

export class LineCutter {
  private parts: Buffer[] = [];
  private length = 0;
  /** Inside the over-long rest of a line that was already handed on cut. */
  private skipping = false;

  constructor(private readonly onLine: LineHandler, private readonly maxBytes = OUTPUT_LINE_BYTES) {}

  push(chunk: Buffer): void {
    let start = 0;
    while (start < chunk.length) {
      const nl = chunk.indexOf(0x0a, start);
      const end = nl === -1 ? chunk.length : nl;
      if (this.skipping) {
        if (nl === -1) return;
        this.skipping = false;
        start = nl + 1;
        continue;
      }
      const room = this.maxBytes - this.length;
      if (end - start > room) {
        // Over the limit: hand on what fits, skip the rest of the line.
        if (room > 0) this.keep(chunk.subarray(start, start + room));
        this.flush(true);
        this.skipping = nl === -1;
        start = nl === -1 ? chunk.length : nl + 1;
        continue;
      }
      if (end > start) this.keep(chunk.subarray(start, end));
      if (nl === -1) return;
      this.flush(false);
      start = nl + 1;
    }
  }

  /** The stream ended: hand on a last line without a newline. */
  end(): void {
    if (this.length > 0) this.flush(false);
    this.skipping = false;
  }

  private keep(part: Buffer): void {
    // A copy: a slice would keep the whole chunk alive.
    this.parts.push(Buffer.from(part));
    this.length += part.length;
  }

  private flush(cut: boolean): void {
    let line = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.length);
    this.parts = [];
    this.length = 0;
    if (!cut && line.length > 0 && line[line.length - 1] === 0x0d) line = line.subarray(0, line.length - 1);
    this.onLine(line, cut);
  }
}
