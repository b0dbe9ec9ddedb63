// JSON text of an RPC answer, written in slices that each hold the host's event loop for at
// most ~SLICE_MS, and refused once it grows past a byte limit.
//
// Why not JSON.stringify: a module's RPC answer is bounded only by the frame (16 MiB), and
// JSON.stringify of such an answer holds the loop in one piece: measured under load on the
// shared 2-core machine, a 16 MiB string 0.5-1.2 s, 65,000 strings of 200 bytes 0.3-0.7 s, and a
// 1 MiB binary value 0.2 s (Buffer's toJSON makes an array of numbers, 2 MB of JSON per MiB).
// Here the walk is iterative, a long string is escaped in pieces of STRING_PIECE characters,
// the loop is given back (setImmediate) whenever a slice has run SLICE_MS, and the output is
// counted as it grows: an answer over the limit is abandoned at once, not built in full.
//
// Output matches JSON.stringify for plain data (and for toJSON, undefined, functions, NaN) with
// two differences: binary (Uint8Array, Buffer) is written as a hex string, as bitcoind writes
// bytes, and a bigint as its decimal digits (JSON.stringify would throw).

/** Time one slice may run before the loop is given back. */
const SLICE_MS = 2;
/** Characters of a long string escaped at once. */
const STRING_PIECE = 64 * 1024;
/** Bytes of binary hex-encoded at once. */
const BINARY_PIECE = 32 * 1024;
/** Output gathered before it becomes a Buffer. */
const FLUSH_CHARS = 64 * 1024;

export class JsonTooLargeError extends Error {
  constructor(readonly limit: number) {
    super(`more than ${limit} bytes of JSON`);
    this.name = "JsonTooLargeError";
  }
}

interface Frame {
  /** The array or the object's keys being walked. */
  items: unknown[] | string[];
  obj?: Record<string, unknown>;
  i: number;
  /** Something was written inside this container (a comma goes before the next). */
  wrote: boolean;
}

/**
 * The JSON text of `value` as Buffers (UTF-8), or throws JsonTooLargeError as soon as more
 * than `maxBytes` were written. Gives the event loop back between slices of SLICE_MS.
 */
export async function jsonChunks(value: unknown, maxBytes: number, yieldLoop: () => Promise<void> = defaultYield): Promise<Buffer[]> {
  const small = smallJson(value, maxBytes);
  if (small !== undefined) return [Buffer.from(small.text)];
  const out: Buffer[] = [];
  let bytes = 0;
  let pending: string[] = [];
  let pendingChars = 0;
  let sliceStart = performance.now();
  const flush = (): void => {
    if (pendingChars === 0) return;
    const b = Buffer.from(pending.join(""));
    pending = [];
    pendingChars = 0;
    bytes += b.length;
    if (bytes > maxBytes) throw new JsonTooLargeError(maxBytes);
    out.push(b);
  };
  const write = (s: string): void => {
    pending.push(s);
    pendingChars += s.length;
    // A character is at most 3 bytes of UTF-8: flush early enough to stop near the limit.
    if (pendingChars >= FLUSH_CHARS || bytes + pendingChars * 3 > maxBytes) flush();
  };
  const maybeYield = async (): Promise<void> => {
    if (performance.now() - sliceStart < SLICE_MS) return;
    await yieldLoop();
    sliceStart = performance.now();
  };

  const stack: Frame[] = [];
  let steps = 0;
  // Writes one value; returns a new frame for a container (its opening bracket written).
  const writeValue = async (v: unknown): Promise<Frame | undefined> => {
    switch (typeof v) {
      case "string":
        if (v.length <= STRING_PIECE) write(JSON.stringify(v));
        else {
          write('"');
          for (let i = 0; i < v.length; ) {
            let end = Math.min(i + STRING_PIECE, v.length);
            // Never split a surrogate pair between two pieces.
            if (end < v.length && (v.charCodeAt(end - 1) & 0xfc00) === 0xd800) end--;
            const piece = JSON.stringify(v.slice(i, end));
            write(piece.slice(1, -1));
            i = end;
            await maybeYield();
          }
          write('"');
        }
        return undefined;
      case "number":
        write(Number.isFinite(v) ? String(v) : "null");
        return undefined;
      case "boolean":
        write(v ? "true" : "false");
        return undefined;
      case "bigint":
        write(v.toString());
        return undefined;
      case "object":
        break;
      default: // undefined, function, symbol: null in an array (left out of objects by the caller)
        write("null");
        return undefined;
    }
    if (v === null) {
      write("null");
      return undefined;
    }
    if (v instanceof Uint8Array) {
      const b = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
      write('"');
      for (let i = 0; i < b.length; i += BINARY_PIECE) {
        write(b.toString("hex", i, Math.min(i + BINARY_PIECE, b.length)));
        await maybeYield();
      }
      write('"');
      return undefined;
    }
    if (Array.isArray(v)) {
      write("[");
      return { items: v, i: 0, wrote: false };
    }
    write("{");
    const obj = v as Record<string, unknown>;
    return { items: Object.keys(obj), obj, i: 0, wrote: false };
  };

  let top = await writeValue(toJson(value, ""));
  if (top) stack.push(top);
  while (stack.length > 0) {
    const f = stack[stack.length - 1]!;
    if (f.i >= f.items.length) {
      write(f.obj ? "}" : "]");
      stack.pop();
      continue;
    }
    if ((++steps & 1023) === 0) await maybeYield();
    let child: unknown;
    if (f.obj) {
      const key = f.items[f.i++] as string;
      child = toJson(f.obj[key], key);
      if (child === undefined || typeof child === "function" || typeof child === "symbol") continue;
      write(f.wrote ? `,${JSON.stringify(key)}:` : `${JSON.stringify(key)}:`);
    } else {
      child = toJson(f.items[f.i], String(f.i));
      f.i++;
      if (f.wrote) write(",");
    }
    f.wrote = true;
    top = await writeValue(child);
    if (top) stack.push(top);
  }
  flush();
  return out;
}

/**
 * Most answers (every host method's, most modules'): when `value` is small and plain
 * (smallPlain), its JSON text and UTF-8 length, else undefined. JSON.stringify is several times
 * faster than jsonChunks's walk and, on at most SMALL_VALUES values and SMALL_CHARS characters,
 * holds the loop for microseconds. A caller that writes the text as a string lets node:http send
 * head and body in one write (a Buffer body goes out as a second buffer of a writev).
 */
export function smallJson(value: unknown, maxBytes: number): { text: string; bytes: number } | undefined {
  if (!smallPlain(value)) return undefined;
  const text = JSON.stringify(value) ?? "null";
  const bytes = Buffer.byteLength(text);
  if (bytes > maxBytes) throw new JsonTooLargeError(maxBytes);
  return { text, bytes };
}

/** Values and string characters under which an answer is written by JSON.stringify in one piece. */
const SMALL_VALUES = 512;
const SMALL_CHARS = 32 * 1024;

/**
 * Whether `value` is small plain data that JSON.stringify writes exactly as jsonChunks would:
 * no binary (written as hex here), no bigint (JSON.stringify throws), no toJSON, and at most
 * SMALL_VALUES values and SMALL_CHARS characters of strings and keys. Stops counting at the limit.
 */
function smallPlain(value: unknown): boolean {
  let values = 0;
  let chars = 0;
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (++values > SMALL_VALUES) return false;
    if (typeof v === "string") {
      chars += v.length;
      if (chars > SMALL_CHARS) return false;
    } else if (typeof v === "bigint") {
      return false;
    } else if (v !== null && typeof v === "object") {
      if (v instanceof Uint8Array || typeof (v as { toJSON?: unknown }).toJSON === "function") return false;
      if (Array.isArray(v)) {
        if (v.length > SMALL_VALUES) return false;
        for (const item of v) stack.push(item);
      } else {
        for (const k in v) {
          if (!Object.hasOwn(v, k)) continue;
          chars += k.length;
          if (chars > SMALL_CHARS || ++values > SMALL_VALUES) return false;
          stack.push((v as Record<string, unknown>)[k]);
        }
      }
    }
  }
  return true;
}

/** A value's toJSON result, as JSON.stringify uses it (binary keeps its own: hex). */
function toJson(v: unknown, key: string): unknown {
  if (v !== null && typeof v === "object" && !(v instanceof Uint8Array) && typeof (v as { toJSON?: unknown }).toJSON === "function") {
    return (v as { toJSON: (k: string) => unknown }).toJSON(key);
  }
  return v;
}

function defaultYield(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * A lower bound of the bytes of `value`'s JSON text, found without writing it; stops counting
 * once past `stopAbove` (and answers a number above it). For a batch's answers as they arrive
 * (host/rpc/server.ts): an answer that cannot fit in what is left of max_response_bytes is
 * dropped at once instead of being held until the whole batch is in. Each kind counts at most
 * its shortest JSON (a string its UTF-16 length and quotes, binary its hex, a number one
 * digit), so a bound over the limit means the text surely is. Iterative; synchronous, one
 * step per value (a module's answer has at most 65,536, max_values).
 */
export function jsonBytesAtLeast(value: unknown, stopAbove: number): number {
  let bytes = 0;
  const stack: unknown[] = [value];
  while (stack.length > 0 && bytes <= stopAbove) {
    const v = stack.pop();
    switch (typeof v) {
      case "string":
        bytes += v.length + 2;
        continue;
      case "number":
      case "bigint":
        bytes += 1;
        continue;
      case "boolean":
        bytes += 4;
        continue;
      case "object":
        break;
      default:
        continue; // undefined, functions: nothing, or null in an array (a lower bound either way)
    }
    if (v === null) bytes += 4;
    else if (v instanceof Uint8Array) bytes += 2 * v.byteLength + 2;
    else if (Array.isArray(v)) {
      bytes += 1 + Math.max(v.length, 1);
      if (bytes > stopAbove) break;
      for (const item of v) stack.push(item);
    } else if (typeof (v as { toJSON?: unknown }).toJSON === "function") bytes += 2;
    else {
      bytes += 2;
      for (const k in v) {
        if (!Object.hasOwn(v, k)) continue;
        bytes += k.length + 3;
        stack.push((v as Record<string, unknown>)[k]);
      }
    }
  }
  return bytes;
}
