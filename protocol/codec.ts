// One file: the validating scan and the encoder enforce the same limits of docs/protocol.md
// section 3, so both sides of each limit stay in one view.
//
// The frame body codec: MessagePack, restricted to plain data (docs/protocol.md section 3).
//
// Decoding is two passes. First `validate`, a scan of the bytes that reads only headers (and
// the bytes of non-ASCII strings, for UTF-8): it accepts exactly the subset of the protocol
// (nil, booleans, integers, floats, UTF-8 strings, binary, arrays, maps with string keys) and
// refuses everything else (extension types, which covers msgpackr's records, structured
// clones and shared references; the reserved byte 0xc1; non-string map keys; `__proto__`
// keys; invalid UTF-8; trailing bytes). Every limit (nesting depth, string and binary lengths,
// values per frame, which bounds array and map lengths) is checked from the header, before
// anything it announces is built or walked. Only then does msgpackr build the value: a general
// decoder followed by a check did the work first (a frame of shared references, 813 bytes,
// expanded into a DAG walked as a tree and froze the host). Our own single-pass decoder was
// measured too: 2-4x slower than msgpackr at building objects, so the scan stays separate.
//
// Cost: validate is ~0.15-0.25 us for a small request (msgpackr's decode ~0.5-0.8 us).
// Refusals cost next to nothing: 4 M nils or 16 MiB of nesting, 0.01-0.02 ms; 32,760 distinct
// map keys are refused after 4,097 of them were hashed (~0.2 ms); 16 MiB of strings after the
// string headers of the first MiB were read. The worst accepted frames (bench/host-loop.ts and
// in-process medians, on the shared 2-core machine at load 4-6; several times more at load
// 20): 4,096 distinct map keys (max_map_keys, the cost of V8 interning each new property name)
// 2-5 ms; 1 MiB of strings (max_total_string_bytes) 2-4 ms; 65,535 values 3-4 ms whatever
// their kind (nils, 65,500 strings of 16 bytes, a 9,000-put storage transaction; 10-20 ms at
// the 90th percentile, garbage collection); 16 MiB of binary ~0 (a view of the body). The
// tiniest containers cost most: 65,500 empty maps (one object each) 10 ms median, 30 ms at
// worst, empty arrays 4 / 15 ms, small integers 2 / 2 ms (in-process, 15 decodes each, load 3);
// under a real session at load 10, bench/host-loop.ts, the longest stall with empty maps was
// 26 ms. Since then the host builds a body of more than STEPPED_BUILD_VALUES values in steps
// (BodyBuilder, below; FrameChannel with a gate), the loop turning between them: the longest
// piece for 65,500 empty maps went from 9.9 ms median (70 ms worst) to 4.7 ms (9.6 ms) at load
// 3-4, in-process; the garbage collection of what is built is not split. A 16 MiB frame of tiny
// items is refused past max_values from its headers, at ~0 cost. Before
// max_total_string_bytes, 16 MiB of strings cost 45-170 ms (one string or 65,500 of 200
// bytes: V8 string allocation and the garbage collection it brings): a module's large data
// travels as binary (docs/protocol.md section 3.1).
//
// max_total_string_bytes binds only what a module sends (DEFAULT_BODY_LIMITS, which the host
// decodes with and the SDKs encode with); the host sends with HOST_BODY_LIMITS, bound by the
// frame alone, since its answers carry the hex of blocks it already holds.
//
// max_map_keys counts distinct keys (KeyCounter below): messages repeat their keys (a storage
// transaction of thousands of puts), and a repeated key costs V8 almost nothing.
//
// Encoding uses msgpackr after a walk (`toWire`) that checks the same limits, so a peer never
// receives a body it must refuse, and writes integers beyond 32 bits as int64 (msgpackr alone
// would write float64, which a typed decoder such as rmp-serde rejects for u64 fields).

import { isUtf8 } from "node:buffer";
import { closeSync, openSync, readSync } from "node:fs";
import { Packr } from "msgpackr";

const packr = new Packr({ useRecords: false, mapsAsObjects: true, variableMapSize: true, int64AsType: "number" });

/** Nesting (containers on the path to the deepest value) a data value may have: storage values, params, results, payloads. */
export const MAX_VALUE_DEPTH = 64;
/**
 * Whether `value` has more than `max` containers (arrays, maps) on the path to its deepest
 * value (a data value may have MAX_VALUE_DEPTH). The frame's own limit (max_depth) leaves
 * room for the message around a data value, so a receiver checks a data value's own depth
 * where it matters: a module's invocation result, the params of a module call. Visits only
 * containers; recursion is bounded by the depth of the decoded body (max_depth).
 */
export function deeperThan(value: unknown, max: number): boolean {
  if (value === null || typeof value !== "object" || value instanceof Uint8Array) return false;
  if (max <= 0) return true;
  const items = Array.isArray(value) ? value : Object.values(value);
  for (const item of items) if (item !== null && typeof item === "object" && deeperThan(item, max - 1)) return true;
  return false;
}

/** Nesting the message around a data value may add (request > params > ops > op > value). */
const ENVELOPE_DEPTH = 8;

export interface BodyLimits {
  /** Containers (arrays, maps) on the path to the deepest value, the body's own map included. */
  maxDepth: number;
  /** UTF-8 bytes of one string (map keys included). */
  maxStringBytes: number;
  /** UTF-8 bytes of all strings in one body (map keys included): what decoding them costs the receiver. */
  maxTotalStringBytes: number;
  /** Bytes of one binary value. */
  maxBinaryBytes: number;
  /** Values in one body: every nil, number, string, binary, array and map, keys included. */
  maxValues: number;
  /**
   * Distinct map keys in one body: a key of at most SHORT_KEY_BYTES bytes counts once however
   * often it appears (in any map of the body), a longer key counts at every appearance.
   */
  maxMapKeys: number;
}

/** Map keys up to this many UTF-8 bytes count once per body towards max_map_keys; longer ones at every appearance. */
export const SHORT_KEY_BYTES = 64;

/**
 * max_total_string_bytes of a body a module sends (the host receives): every string becomes a
 * string of the receiver's language, and on the host that costs its shared event loop ~3 ms
 * per MiB (allocation and the garbage collection it brings; bench/host-loop.ts), binary
 * nothing (a view of the frame). Large data travels as binary (docs/protocol.md section 3.1).
 */
const MAX_TOTAL_STRING_BYTES = 1024 * 1024;

/** The limits of a body a module sends, which the host receives: the protocol's limits (docs/protocol.md section 3.1). */
export const DEFAULT_BODY_LIMITS: Readonly<BodyLimits> = Object.freeze({
  maxDepth: MAX_VALUE_DEPTH + ENVELOPE_DEPTH,
  maxStringBytes: 16 * 1024 * 1024,
  maxTotalStringBytes: MAX_TOTAL_STRING_BYTES,
  maxBinaryBytes: 16 * 1024 * 1024,
  maxValues: 65_536,
  maxMapKeys: 4096,
});

/**
 * The limits of a body the host sends (a module receives): the same, but for
 * max_total_string_bytes, which only the frame bounds. The host's answers may carry the hex of
 * transactions it already holds (a block's raw bytes go as binary: docs/protocol.md 6.3), and
 * a module's decoding cost is its own, in its own process.
 */
export const HOST_BODY_LIMITS: Readonly<BodyLimits> = Object.freeze({
  ...DEFAULT_BODY_LIMITS,
  maxTotalStringBytes: Number.MAX_SAFE_INTEGER,
});

/** The names the limits go by in errors and in docs/protocol.md. */
const LIMIT_NAMES: Record<keyof BodyLimits, string> = {
  maxDepth: "max_depth",
  maxStringBytes: "max_string_bytes",
  maxTotalStringBytes: "max_total_string_bytes",
  maxBinaryBytes: "max_binary_bytes",
  maxValues: "max_values",
  maxMapKeys: "max_map_keys",
};

export class CodecError extends Error {
  constructor(
    message: string,
    /** The protocol limit that was exceeded, when that is why ("max_depth", ...). */
    limit?: string,
  ) {
    super(message);
    this.name = "CodecError";
    if (limit !== undefined) (this as { limit?: string }).limit = limit;
  }

  /** Declared, not defined: no property of an error is undefined (test reporters refuse it). */
  declare readonly limit?: string;
}

export type EncodeErrorCode = "result_too_large" | "not_plain_data";

/** A value that cannot be sent: too large for the peer's limits, or not plain data. */
export class EncodeError extends Error {
  constructor(
    readonly code: EncodeErrorCode,
    message: string,
    limit?: string,
  ) {
    super(message);
    this.name = "EncodeError";
    if (limit !== undefined) (this as { limit?: string }).limit = limit;
  }

  /** Declared, not defined: no property of an error is undefined (test reporters refuse it). */
  declare readonly limit?: string;
}

// ---------------------------------------------------------------------------------------
// Decoding: a validating scan of the bytes, then msgpackr.

const STACK_REMAINING = new Int32Array(DEFAULT_BODY_LIMITS.maxDepth + 2);
const STACK_IS_MAP = new Uint8Array(DEFAULT_BODY_LIMITS.maxDepth + 2);
// "__proto__" as bytes, to spot it among map keys without decoding them.
const PROTO = Buffer.from("__proto__");

/**
 * Decodes exactly one MessagePack value of plain data within `limits`; throws CodecError
 * (naming the limit, when one was exceeded) otherwise.
 */
export function decodeBody(bytes: Uint8Array, limits: Readonly<BodyLimits> = DEFAULT_BODY_LIMITS): unknown {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  validate(buf, limits);
  try {
    // msgpackr's native string extraction was measured at 2-3x the CPU time of TextDecoder on
    // long strings (a 16 MiB string of two-byte characters: 137 vs 81 ms; 65,500 strings of 200
    // bytes: 145 vs 54 ms; 1 MiB of two-byte characters 5.7 vs 1.6 ms), so a body with many
    // bytes in long strings is built by decodeValidated instead (same result, see its
    // comment). Short strings are the other way round (65,500 of 16 bytes: msgpackr 2.8 ms,
    // decodeValidated 6.1 ms, ~0.05 us more per string), hence the weighing against their count.
    if (lastScan.longStringBytes > STRING_HEAVY_BYTES && lastScan.longStringBytes > 16 * lastScan.shortStrings) return decodeValidated(buf);
    return packr.unpack(buf);
  } catch (err) {
    // validate() accepted it, so this is a bug here or in msgpackr; still a refusal, not a crash.
    throw new CodecError(`invalid MessagePack: ${(err as Error).message}`);
  }
}

/**
 * Bodies of more values than this are built in steps (BodyBuilder) by a receiver that can wait
 * between them (FrameChannel with a gate: the host's module sessions), each step at most this
 * many values. Building is what grows with the count of values: a body of 65,500 empty maps,
 * the costliest shape within max_values, held the host's loop 8-45 ms in one piece (msgpackr,
 * in-process, load 2-4); a step of 8,192 values of that shape ~1-2 ms. Below this count a body
 * is built in one piece.
 */
export const STEPPED_BUILD_VALUES = 8192;

/** A decoded body, or a builder to be run in steps for a large one (decodeBodyStepped). */
export type SteppedDecode = { done: true; value: unknown } | { done: false; builder: BodyBuilder };

/**
 * Like decodeBody (same checks, same result), but a body of more than STEPPED_BUILD_VALUES
 * values is validated now and returned as a BodyBuilder, whose steps the caller runs when the
 * loop has time for them.
 */
export function decodeBodyStepped(bytes: Uint8Array, limits: Readonly<BodyLimits> = DEFAULT_BODY_LIMITS): SteppedDecode {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.length <= STEPPED_BUILD_VALUES) return { done: true, value: decodeBody(buf, limits) };
  validate(buf, limits);
  if (lastScan.values <= STEPPED_BUILD_VALUES) return { done: true, value: buildValidated(buf) };
  return { done: false, builder: new BodyBuilder(buf) };
}

/** Builds a validated body in one piece, as decodeBody does after validate(). */
function buildValidated(buf: Buffer): unknown {
  try {
    if (lastScan.longStringBytes > STRING_HEAVY_BYTES && lastScan.longStringBytes > 16 * lastScan.shortStrings) return decodeValidated(buf);
    return packr.unpack(buf);
  } catch (err) {
    throw new CodecError(`invalid MessagePack: ${(err as Error).message}`);
  }
}

/** Values a BodyBuilder builds between two questions to its caller's `due`. */
const BUILD_CHECK_EVERY = 1024;
/**
 * A run of sibling values of a large body with at most this many values and bytes (containers,
 * keys and elements counted) is built by msgpackr in one call, not value by value by the builder:
 * a 1000-tx block's storage transaction (3000 puts, ~45,000 values) took 3.5 ms to validate and
 * build step by step, against ~1.6 ms to validate and unpack with msgpackr. Bodies at most
 * STEPPED_BUILD_VALUES values are already unpacked by msgpackr whole, so this is the same
 * decoder on smaller pieces. The byte bound keeps long strings with the builder (TextDecoder,
 * see decodeBody); the count bound keeps a step's length bounded.
 */
const SUBTREE_VALUES = 256;
const SUBTREE_BYTES = 16 * 1024;

/**
 * Builds a body that validate() accepted, in steps: exactly the value decodeValidated (and
 * msgpackr) gives, but iterative, with an explicit stack (bounded by max_depth), so that it
 * can stop between any two values and go on later. It trusts validate() for the structure.
 */
export class BodyBuilder {
  readonly #b: Buffer;
  #pos = 0;
  /** Open containers, innermost last: the container, whether a map, entries (or elements) announced, filled so far, a map's pending key. */
  readonly #open: Array<unknown[] | Record<string, unknown>> = [];
  readonly #isMap: boolean[] = [];
  readonly #count: number[] = [];
  readonly #filled: number[] = [];
  readonly #key: Array<string | undefined> = [];
  #value: unknown;
  #done = false;
  /** Work done so far: values built, and headers read looking for a container's end (spanOf). */
  #work = 0;
  /** Steps run so far (for tests). */
  steps = 0;
  /** Values built by msgpackr, in runs (for tests). */
  unpacked = 0;
  /** Values of a run without maps still to be built here (spanOf is not asked again for them). */
  #plain = 0;

  constructor(b: Buffer) {
    this.#b = b;
  }

  get done(): boolean {
    return this.#done;
  }

  /** The body's value, once done. */
  get value(): unknown {
    if (!this.#done) throw new Error("BodyBuilder: the body is not built yet");
    return this.#value;
  }

  /**
   * Builds values until the body is done (true), or STEPPED_BUILD_VALUES units of work were
   * done (a value built, a header read by spanOf: at most ~258 more in the last call), or
   * `due()`, asked every BUILD_CHECK_EVERY units, says to stop (false: call again later).
   */
  step(due: () => boolean): boolean {
    this.steps++;
    const start = this.#work;
    for (;;) {
      const check = this.#work + BUILD_CHECK_EVERY;
      while (!this.#done && this.#work < check) this.#next();
      if (this.#done) return true;
      if (this.#work - start >= STEPPED_BUILD_VALUES || due()) return false;
    }
  }

  /** Reads one value (a container's header opens it) and places what is complete. */
  #next(): void {
    const b = this.#b;
    if (this.#plain > 0) this.#plain--;
    else {
      // The values left in the innermost open container (a map's keys counted), or the body itself.
      const top = this.#open.length - 1;
      const left = top < 0 ? 1 : this.#isMap[top] ? 2 * (this.#count[top]! - this.#filled[top]!) - (this.#key[top] === undefined ? 0 : 1) : this.#count[top]! - this.#filled[top]!;
      const end = spanOf(b, this.#pos, left, SUBTREE_VALUES, SUBTREE_BYTES);
      this.#work += span.read;
      if (span.items > 0 && span.maps > 0) {
        const piece = b.subarray(this.#pos, end);
        this.#pos = end;
        this.unpacked += span.items;
        if (span.items === 1) this.#place(packr.unpack(piece));
        else for (const v of packr.unpackMultiple(piece) as unknown[]) this.#place(v);
        return;
      }
      // A run without a map (scalars, arrays) is built here: faster than msgpackr's calls for it.
      if (span.items > 1) this.#plain = span.items - 1;
    }
    this.#work++;
    const m = b[this.#pos++]!;
    let v: unknown;
    let n = -1; // entries of a container
    let map = false;
    if (m < 0x80) v = m;
    else if (m >= 0xe0) v = m - 0x100;
    else if (m < 0x90) (n = m & 0x0f), (map = true);
    else if (m < 0xa0) n = m & 0x0f;
    else if (m < 0xc0) v = this.#str(m & 0x1f);
    else {
      let x: number;
      switch (m) {
        case 0xc0: v = null; break;
        case 0xc2: v = false; break;
        case 0xc3: v = true; break;
        case 0xc4: v = this.#bin(b[this.#pos++]!); break;
        case 0xc5: x = b.readUInt16BE(this.#pos); this.#pos += 2; v = this.#bin(x); break;
        case 0xc6: x = b.readUInt32BE(this.#pos); this.#pos += 4; v = this.#bin(x); break;
        case 0xca: v = b.readFloatBE(this.#pos); this.#pos += 4; break;
        case 0xcb: v = b.readDoubleBE(this.#pos); this.#pos += 8; break;
        case 0xcc: v = b[this.#pos++]!; break;
        case 0xcd: v = b.readUInt16BE(this.#pos); this.#pos += 2; break;
        case 0xce: v = b.readUInt32BE(this.#pos); this.#pos += 4; break;
        case 0xcf: v = b.readUInt32BE(this.#pos) * 0x1_0000_0000 + b.readUInt32BE(this.#pos + 4); this.#pos += 8; break;
        case 0xd0: v = b.readInt8(this.#pos); this.#pos += 1; break;
        case 0xd1: v = b.readInt16BE(this.#pos); this.#pos += 2; break;
        case 0xd2: v = b.readInt32BE(this.#pos); this.#pos += 4; break;
        case 0xd3: v = b.readInt32BE(this.#pos) * 0x1_0000_0000 + b.readUInt32BE(this.#pos + 4); this.#pos += 8; break;
        case 0xd9: v = this.#str(b[this.#pos++]!); break;
        case 0xda: x = b.readUInt16BE(this.#pos); this.#pos += 2; v = this.#str(x); break;
        case 0xdb: x = b.readUInt32BE(this.#pos); this.#pos += 4; v = this.#str(x); break;
        case 0xdc: n = b.readUInt16BE(this.#pos); this.#pos += 2; break;
        case 0xdd: n = b.readUInt32BE(this.#pos); this.#pos += 4; break;
        case 0xde: n = b.readUInt16BE(this.#pos); this.#pos += 2; map = true; break;
        case 0xdf: n = b.readUInt32BE(this.#pos); this.#pos += 4; map = true; break;
        default: throw new CodecError(`invalid MessagePack at byte ${this.#pos - 1}: 0x${m.toString(16)} (validate should have refused it)`);
      }
    }
    if (n > 0) {
      this.#open.push(map ? {} : new Array<unknown>(n));
      this.#isMap.push(map);
      this.#count.push(n);
      this.#filled.push(0);
      this.#key.push(undefined);
      return;
    }
    this.#place(n === 0 ? (map ? {} : []) : v);
  }

  /** Puts a complete value into its container, closing every container it completes. */
  #place(v: unknown): void {
    for (;;) {
      const top = this.#open.length - 1;
      if (top < 0) {
        this.#value = v;
        this.#done = true;
        return;
      }
      const c = this.#open[top]!;
      if (this.#isMap[top]) {
        const k = this.#key[top];
        if (k === undefined) {
          this.#key[top] = v as string;
          return;
        }
        (c as Record<string, unknown>)[k] = v;
        this.#key[top] = undefined;
      } else {
        (c as unknown[])[this.#filled[top]!] = v;
      }
      if (++this.#filled[top]! < this.#count[top]!) return;
      // The container is complete: it is the value to place in its own container.
      v = c;
      this.#open.pop();
      this.#isMap.pop();
      this.#count.pop();
      this.#filled.pop();
      this.#key.pop();
    }
  }

  #str(n: number): string {
    const b = this.#b;
    const s = n > 64 ? utf8.decode(b.subarray(this.#pos, this.#pos + n)) : b.toString("utf8", this.#pos, this.#pos + n);
    this.#pos += n;
    return s;
  }

  #bin(n: number): Buffer {
    return this.#b.subarray(this.#pos, (this.#pos += n));
  }
}

/** What spanOf found in its last call: the whole values it spans, and the headers it read (those of a value that did not fit included). */
const span = { items: 0, read: 0, maps: 0 };

/**
 * The end of the longest run of whole values from `pos` of a validated body, at most `maxItems`
 * of them, that has at most `maxValues` values (containers, map keys and elements counted) in
 * at most `maxBytes` bytes; span.items says how many (0: the first value alone is larger).
 * span.maps counts the maps with entries among them. Reads headers only, at most `maxValues` +
 * 1 of them, however large the values.
 */
function spanOf(b: Buffer, pos: number, maxItems: number, maxValues: number, maxBytes: number): number {
  const limit = pos + maxBytes;
  let end = pos;
  let items = 0;
  let read = 0;
  let maps = 0;
  let mapsBefore = 0;
  item: while (items < maxItems) {
    let pending = 1;
    let x: number;
    while (pending > 0) {
      if (read > maxValues || pos > limit) break item;
      read++;
      pending--;
      const m = b[pos++]!;
      if (m < 0x80 || m >= 0xe0) continue;
      if (m < 0x90) {
        pending += 2 * (m & 0x0f);
        if (m > 0x80) maps++;
      } else if (m < 0xa0) pending += m & 0x0f;
      else if (m < 0xc0) pos += m & 0x1f;
      else {
        switch (m) {
          case 0xc0: case 0xc2: case 0xc3: break;
          case 0xc4: case 0xd9: pos += 1 + b[pos]!; break;
          case 0xc5: case 0xda: pos += 2 + b.readUInt16BE(pos); break;
          case 0xc6: case 0xdb: pos += 4 + b.readUInt32BE(pos); break;
          case 0xcc: case 0xd0: pos += 1; break;
          case 0xcd: case 0xd1: pos += 2; break;
          case 0xca: case 0xce: case 0xd2: pos += 4; break;
          case 0xcb: case 0xcf: case 0xd3: pos += 8; break;
          case 0xdc: pending += b.readUInt16BE(pos); pos += 2; break;
          case 0xdd: pending += b.readUInt32BE(pos); pos += 4; break;
          case 0xde: x = b.readUInt16BE(pos); pending += 2 * x; pos += 2; if (x > 0) maps++; break;
          case 0xdf: x = b.readUInt32BE(pos); pending += 2 * x; pos += 4; if (x > 0) maps++; break;
          // Not of the subset (validate refused it already): the builder says so.
          default: break item;
        }
      }
    }
    if (read > maxValues || pos > limit) break;
    items++;
    end = pos;
    mapsBefore = maps;
  }
  span.items = items;
  span.read = read;
  span.maps = mapsBefore;
  return end;
}

/**
 * Checks that `b` is exactly one MessagePack value of the protocol's subset, within `limits`,
 * reading only headers (and the bytes of non-ASCII strings, for UTF-8). Iterative, with an
 * explicit stack bounded by maxDepth; allocates nothing proportional to the input.
 */
function fail(limits: Readonly<BodyLimits>, at: number, message: string, limit?: keyof BodyLimits): never {
  if (limit) {
    throw new CodecError(`${message} at byte ${at}: over the protocol limit ${LIMIT_NAMES[limit]} = ${limits[limit]} (docs/protocol.md, section 3)`, LIMIT_NAMES[limit]);
  }
  throw new CodecError(`invalid MessagePack at byte ${at}: ${message}`);
}

/** What the last validate() saw of the strings, for decodeBody's choice of decoder. */
const lastScan = { shortStrings: 0, longStringBytes: 0, values: 0 };

/** Returns the bytes of all strings in the body, map keys included. */
export function validate(b: Buffer, limits: Readonly<BodyLimits> = DEFAULT_BODY_LIMITS): number {
  const end = b.length;
  let stringBytes = 0;
  let shortStrings = 0;
  let longStringBytes = 0;
  const remaining = limits.maxDepth + 2 <= STACK_REMAINING.length ? STACK_REMAINING : new Int32Array(limits.maxDepth + 2);
  const isMap = limits.maxDepth + 2 <= STACK_IS_MAP.length ? STACK_IS_MAP : new Uint8Array(limits.maxDepth + 2);
  let budget = limits.maxValues;
  const keys = keyCounter(limits.maxMapKeys);
  let pos = 0;
  let depth = 0; // containers open
  remaining[0] = 1; // the body: one value
  isMap[0] = 0;
  if (end === 0) fail(limits, pos, "empty body");
  for (;;) {
    while (remaining[depth] === 0) {
      if (depth === 0) {
        if (pos !== end) fail(limits, pos, `${end - pos} bytes after the value; a body is exactly one value`);
        lastScan.shortStrings = shortStrings;
        lastScan.longStringBytes = longStringBytes;
        lastScan.values = limits.maxValues - budget;
        return stringBytes;
      }
      depth--;
    }
    const isKey = isMap[depth] === 1 && remaining[depth]! % 2 === 0;
    remaining[depth]!--;
    if (--budget < 0) fail(limits, pos, "too many values in one body", "maxValues");
    if (pos >= end) fail(limits, pos, "truncated: the body ends inside a value");
    const at = pos;
    const m = b[pos++]!;
    let n = -1; // length of a string or binary, entries of a container
    let kind = 0; // 1 string, 2 binary, 3 array, 4 map
    if (m < 0x80 || m >= 0xe0) kind = 0;
    else if (m < 0x90) (kind = 4), (n = m & 0x0f);
    else if (m < 0xa0) (kind = 3), (n = m & 0x0f);
    else if (m < 0xc0) (kind = 1), (n = m & 0x1f);
    else {
      let size = 0; // bytes of the length field or of the scalar after the type byte
      switch (m) {
        case 0xc0: case 0xc2: case 0xc3: break;
        case 0xc4: kind = 2; size = 1; break;
        case 0xc5: kind = 2; size = 2; break;
        case 0xc6: kind = 2; size = 4; break;
        case 0xca: size = 4; break;
        case 0xcb: size = 8; break;
        case 0xcc: case 0xd0: size = 1; break;
        case 0xcd: case 0xd1: size = 2; break;
        case 0xce: case 0xd2: size = 4; break;
        case 0xcf: case 0xd3: size = 8; break;
        case 0xd9: kind = 1; size = 1; break;
        case 0xda: kind = 1; size = 2; break;
        case 0xdb: kind = 1; size = 4; break;
        case 0xdc: kind = 3; size = 2; break;
        case 0xdd: kind = 3; size = 4; break;
        case 0xde: kind = 4; size = 2; break;
        case 0xdf: kind = 4; size = 4; break;
        case 0xc1: fail(limits, at, "the reserved byte 0xc1 is not a value"); break;
        default: // 0xc7-0xc9, 0xd4-0xd8
          fail(limits, at, `extension type 0x${m.toString(16)} is not plain data; only nil, booleans, numbers, strings, binary, arrays and maps with string keys are allowed`);
      }
      if (end - pos < size) fail(limits, at, `truncated: the body ends inside a value`);
      if (kind !== 0) n = size === 1 ? b[pos]! : size === 2 ? b.readUInt16BE(pos) : b.readUInt32BE(pos);
      pos += size;
    }
    if (isKey && kind !== 1) fail(limits, at, `a map key must be a string, not ${KIND_NAMES[kind]}`);
    switch (kind) {
      case 1: {
        if (n > limits.maxStringBytes) fail(limits, at, `string of ${n} bytes`, "maxStringBytes");
        if (end - pos < n) fail(limits, at, `truncated: a string of ${n} bytes with ${end - pos} left`);
        stringBytes += n;
        if (n > 64) longStringBytes += n;
        else shortStrings++;
        if (stringBytes > limits.maxTotalStringBytes) fail(limits, at, `${stringBytes} bytes of strings so far (${TOTAL_STRINGS_HINT})`, "maxTotalStringBytes");
        let ascii = true;
        if (n > 32) ascii = false;
        else for (let i = pos; i < pos + n; i++) if (b[i]! >= 0x80) { ascii = false; break; }
        if (!ascii && !isUtf8(b.subarray(pos, pos + n))) fail(limits, at, "string is not valid UTF-8");
        if (isKey) {
          if (n === 9 && b.compare(PROTO, 0, 9, pos, pos + 9) === 0) {
            fail(limits, at, 'the map key "__proto__" is not allowed (JavaScript would take it for the prototype); rename it');
          }
          if (keys.count(b, pos, n)) fail(limits, at, MAP_KEYS_MESSAGE, "maxMapKeys");
        }
        pos += n;
        break;
      }
      case 2:
        if (n > limits.maxBinaryBytes) fail(limits, at, `binary of ${n} bytes`, "maxBinaryBytes");
        if (end - pos < n) fail(limits, at, `truncated: binary of ${n} bytes with ${end - pos} left`);
        pos += n;
        break;
      case 3:
      case 4: {
        const items = kind === 4 ? 2 * n : n;
        if (depth + 1 > limits.maxDepth) fail(limits, at, "value nested too deeply", "maxDepth");
        // Every item is a value of the budget and takes at least one byte: check both first.
        if (items > budget) fail(limits, at, `${kind === 4 ? `map of ${n} entries` : `array of ${n} elements`}`, "maxValues");
        if (items > end - pos) fail(limits, at, `${kind === 4 ? `map of ${n} entries` : `array of ${n} elements`} in ${end - pos} remaining bytes`);
        depth++;
        remaining[depth] = items;
        isMap[depth] = kind === 4 ? 1 : 0;
        break;
      }
    }
  }
}

const TOTAL_STRINGS_HINT = "send large data, such as a block, a transaction, a file or an HTTP body, as binary: strings cost the receiver far more";

const MAP_KEYS_MESSAGE =
  "too many distinct map keys in one body (each new key costs the receiver a new property name; a map keyed by data, such as ids or hashes, belongs in an array of [key, value] pairs, or split across messages)";

/**
 * Counts the distinct map keys of one body (max_map_keys): a key of at most SHORT_KEY_BYTES
 * bytes counts once per body, a longer one at every appearance. Until the body has more keys
 * than the limit, keys are only recorded (offset and length: most bodies have a few keys and
 * pay two array writes per key); past it, the recorded keys and every later short key go into
 * an open-addressing set keyed by a hash of their bytes. The hash is multilinear with random
 * per-process coefficients (one per byte position), so a module cannot choose keys that
 * collide; equal hashes are confirmed byte by byte (at most 64 bytes). Work: at most 64 steps
 * per key, tables sized by the limit, never by the input.
 */
class KeyCounter {
  readonly recOff: Int32Array;
  readonly recLen: Int32Array;
  readonly slotOff: Int32Array; // key offset + 1; 0 is an empty slot
  readonly slotLen: Int32Array;
  readonly slotHash: Int32Array;
  readonly mask: number;
  recorded = 0;
  long = 0;
  short = 0; // distinct short keys, once hashing
  hashing = false;

  constructor(readonly max: number) {
    this.recOff = new Int32Array(max + 1);
    this.recLen = new Int32Array(max + 1);
    let size = 16;
    while (size < 2 * (max + 1)) size *= 2;
    this.slotOff = new Int32Array(size);
    this.slotLen = new Int32Array(size);
    this.slotHash = new Int32Array(size);
    this.mask = size - 1;
  }

  reset(): void {
    if (this.hashing) this.slotOff.fill(0);
    this.recorded = this.long = this.short = 0;
    this.hashing = false;
  }

  /** Counts the key at b[pos, pos + n); true when the body now has more distinct keys than max. */
  count(b: Buffer, pos: number, n: number): boolean {
    if (n > SHORT_KEY_BYTES) return ++this.long + (this.hashing ? this.short : this.recorded) > this.max;
    if (!this.hashing) {
      this.recOff[this.recorded] = pos;
      this.recLen[this.recorded] = n;
      if (++this.recorded + this.long <= this.max) return false;
      // More keys than the limit: from here on, count only the distinct ones.
      this.hashing = true;
      for (let i = 0; i < this.recorded; i++) this.insert(b, this.recOff[i]!, this.recLen[i]!);
    } else {
      this.insert(b, pos, n);
    }
    return this.short + this.long > this.max;
  }

  private insert(b: Buffer, pos: number, n: number): void {
    let h = Math.imul(n + 1, KEY_COEF[SHORT_KEY_BYTES]!);
    for (let i = 0; i < n; i++) h = (h + Math.imul(b[pos + i]! + 1, KEY_COEF[i]!)) | 0;
    h ^= h >>> 16;
    h = Math.imul(h, 0x45d9f3b);
    h ^= h >>> 16;
    for (let slot = h & this.mask; ; slot = (slot + 1) & this.mask) {
      const off = this.slotOff[slot]!;
      if (off === 0) {
        this.slotOff[slot] = pos + 1;
        this.slotLen[slot] = n;
        this.slotHash[slot] = h;
        this.short++;
        return;
      }
      if (this.slotHash[slot] === h && this.slotLen[slot] === n) {
        let same = true;
        for (let i = 0, o = off - 1; i < n; i++) if (b[o + i] !== b[pos + i]) { same = false; break; }
        if (same) return;
      }
    }
  }
}

const KEY_COEF = randomInts(SHORT_KEY_BYTES + 1);

/**
 * `n` random 32-bit integers from the kernel (/dev/urandom, which every module process has: the
 * sandbox's /dev holds it), or from Web Crypto where it cannot be read. Not the `crypto` global
 * first: touching it loads Web Crypto's modules, ~20 ms of CPU at every boot of a Node process
 * without a startup snapshot, which is how every isolate host boots (this file is part of it;
 * docs/performance-log.md, 2026-12-06 "Start CPU").
 */
function randomInts(n: number): Int32Array {
  const out = new Int32Array(n);
  const bytes = new Uint8Array(out.buffer);
  try {
    const fd = openSync("/dev/urandom", "r");
    try {
      for (let got = 0; got < bytes.length; ) {
        const r = readSync(fd, bytes, got, bytes.length - got, null);
        if (r <= 0) throw new Error("/dev/urandom ended");
        got += r;
      }
    } finally {
      closeSync(fd);
    }
  } catch {
    crypto.getRandomValues(out);
  }
  return out;
}
/** One counter per limit in use (validate is synchronous: a counter serves one body at a time). */
const keyCounters = new Map<number, KeyCounter>();

function keyCounter(max: number): KeyCounter {
  let c = keyCounters.get(max);
  if (!c) {
    if (keyCounters.size >= 8) keyCounters.clear();
    c = new KeyCounter(max);
    keyCounters.set(max, c);
  }
  c.reset();
  return c;
}

/** A body with more bytes than this in strings longer than 64 bytes (and few short strings) is built by decodeValidated (TextDecoder), not by msgpackr. */
export const STRING_HEAVY_BYTES = 64 * 1024;

const utf8 = new TextDecoder("utf-8");

/**
 * Builds the value of a body that validate() accepted, exactly as msgpackr (with the options
 * of `packr` above) would: maps as plain objects (the last of repeated keys wins), binary as a
 * Buffer view into the body, 64-bit integers as numbers. It trusts validate() for the
 * structure (no bounds or type checks of its own) and decodes strings with TextDecoder.
 * Recursive: validate bounded the depth at max_depth.
 */
export function decodeValidated(b: Buffer): unknown {
  let pos = 0;
  const str = (n: number): string => {
    const s = n > 64 ? utf8.decode(b.subarray(pos, pos + n)) : b.toString("utf8", pos, pos + n);
    pos += n;
    return s;
  };
  const arr = (n: number): unknown[] => {
    const out = new Array<unknown>(n);
    for (let i = 0; i < n; i++) out[i] = read();
    return out;
  };
  const map = (n: number): Record<string, unknown> => {
    const out: Record<string, unknown> = {};
    for (let i = 0; i < n; i++) {
      const k = read() as string;
      out[k] = read();
    }
    return out;
  };
  const bin = (n: number): Buffer => b.subarray(pos, (pos += n));
  function read(): unknown {
    const m = b[pos++]!;
    if (m < 0x80) return m;
    if (m >= 0xe0) return m - 0x100;
    if (m < 0x90) return map(m & 0x0f);
    if (m < 0xa0) return arr(m & 0x0f);
    if (m < 0xc0) return str(m & 0x1f);
    let v: number;
    switch (m) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return bin(b[pos++]!);
      case 0xc5: v = b.readUInt16BE(pos); pos += 2; return bin(v);
      case 0xc6: v = b.readUInt32BE(pos); pos += 4; return bin(v);
      case 0xca: v = b.readFloatBE(pos); pos += 4; return v;
      case 0xcb: v = b.readDoubleBE(pos); pos += 8; return v;
      case 0xcc: return b[pos++]!;
      case 0xcd: v = b.readUInt16BE(pos); pos += 2; return v;
      case 0xce: v = b.readUInt32BE(pos); pos += 4; return v;
      case 0xcf: v = b.readUInt32BE(pos) * 0x1_0000_0000 + b.readUInt32BE(pos + 4); pos += 8; return v;
      case 0xd0: v = b.readInt8(pos); pos += 1; return v;
      case 0xd1: v = b.readInt16BE(pos); pos += 2; return v;
      case 0xd2: v = b.readInt32BE(pos); pos += 4; return v;
      case 0xd3: v = b.readInt32BE(pos) * 0x1_0000_0000 + b.readUInt32BE(pos + 4); pos += 8; return v;
      case 0xd9: return str(b[pos++]!);
      case 0xda: v = b.readUInt16BE(pos); pos += 2; return str(v);
      case 0xdb: v = b.readUInt32BE(pos); pos += 4; return str(v);
      case 0xdc: v = b.readUInt16BE(pos); pos += 2; return arr(v);
      case 0xdd: v = b.readUInt32BE(pos); pos += 4; return arr(v);
      case 0xde: v = b.readUInt16BE(pos); pos += 2; return map(v);
      case 0xdf: v = b.readUInt32BE(pos); pos += 4; return map(v);
    }
    throw new CodecError(`invalid MessagePack at byte ${pos - 1}: 0x${m.toString(16)} (validate should have refused it)`);
  }
  return read();
}

const KIND_NAMES = ["a number, nil or boolean", "a string", "binary", "an array", "a map"];

/** What readEnvelope found of a body that did not decode. */
export interface ReadEnvelope {
  t?: string;
  id?: number;
  /** Its `method` (a string of at most 64 bytes). */
  method?: string;
  /**
   * `params.part.id` (an integer) when its params are a map that names one; null when its
   * params are a map read to its end without one; absent when that could not be told (no
   * params map, or the bytes stopped making sense first). A storage transaction's part that
   * did not decode still names the transaction it would drop (docs/protocol.md 6.2).
   */
  part?: number | null;
}

/**
 * The `t`, `id`, `method` and `params.part.id` of a body that did not decode, read from its
 * top-level map without decoding the rest (so a refused request can still be answered with its
 * own id, and a refused part of a transaction drop its transaction). Best effort: returns what
 * it found before the bytes stopped making sense or ENVELOPE_SCAN_VALUES values were passed.
 * No recursion, no allocation per value; stops as soon as it has them all.
 */
export function readEnvelope(bytes: Uint8Array): ReadEnvelope {
  const b = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: ReadEnvelope = {};
  scanLeft = ENVELOPE_SCAN_VALUES;
  if (!header(b, 0) || hKind !== K_MAP) return out;
  const entries = hCount;
  let p = hNext;
  let params = false;
  for (let i = 0; i < entries && (out.t === undefined || out.id === undefined || out.method === undefined || !params); i++) {
    if (!header(b, p)) break;
    const keyKind: number = hKind;
    const keyLen = hCount;
    const keyEnd = hNext;
    if (!header(b, keyEnd)) break;
    if (keyKind === K_STR && keyLen <= 6) {
      const name = b.toString("latin1", keyEnd - keyLen, keyEnd);
      if (name === "id" && (hKind as number) === K_INT && Number.isSafeInteger(hInt) && hInt > 0) out.id = hInt;
      if (name === "t" && (hKind as number) === K_STR && hCount <= 64) out.t = b.toString("utf8", hNext - hCount, hNext);
      if (name === "method" && (hKind as number) === K_STR && hCount <= 64) out.method = b.toString("utf8", hNext - hCount, hNext);
      if (name === "params" && (hKind as number) === K_MAP) {
        params = true;
        p = readPart(b, hCount, hNext, out);
        if (p < 0) break;
        continue;
      }
    }
    p = skip(b, keyEnd);
    if (p < 0) break;
  }
  return out;
}

/**
 * Reads the `part.id` of a params map of `entries` entries whose first key is at `p` into
 * `out.part` (null once the map is read through without one); returns the offset past the
 * map, or -1 when the bytes stop making sense (`out.part` then stays as found).
 */
function readPart(b: Buffer, entries: number, p: number, out: ReadEnvelope): number {
  for (let i = 0; i < entries; i++) {
    if (!header(b, p)) return -1;
    const isPart = hKind === K_STR && hCount === 4 && b.toString("latin1", hNext - 4, hNext) === "part";
    const valueAt = hNext;
    if (isPart && out.part === undefined && header(b, valueAt) && hKind === K_MAP) {
      const n = hCount;
      let q = hNext;
      for (let j = 0; j < n && q >= 0; j++) {
        if (!header(b, q)) return -1;
        const isId = (hKind as number) === K_STR && hCount === 2 && b.toString("latin1", hNext - 2, hNext) === "id";
        const at = hNext;
        if (isId && header(b, at) && (hKind as number) === K_INT && Number.isSafeInteger(hInt)) out.part = hInt;
        q = skip(b, at);
      }
      if (q < 0) return -1;
      p = q;
      continue;
    }
    p = skip(b, valueAt);
    if (p < 0) return -1;
  }
  out.part ??= null;
  return p;
}

const K_OTHER = 0, K_INT = 1, K_STR = 2, K_BIN = 3, K_ARRAY = 4, K_MAP = 5;
// The last header read by header(): its kind, count (entries, elements, or bytes of a string
// or binary), integer value, and the offset after it (after the payload for all but containers).
let hKind: number = K_OTHER;
let hCount = 0;
let hInt = 0;
let hNext = 0;

function set(kind: number, count: number, next: number, b: Buffer): boolean {
  hKind = kind;
  hCount = count;
  hNext = next + (kind === K_STR || kind === K_BIN ? count : 0);
  return hNext <= b.length;
}

/** Reads one header at `p` into hKind/hCount/hInt/hNext; false when the bytes end or make no sense. */
function header(b: Buffer, p: number): boolean {
  if (p >= b.length) return false;
  const m = b[p]!;
  const left = b.length - p - 1;
  if (m < 0x80 || m >= 0xe0) {
    hInt = m < 0x80 ? m : m - 0x100;
    return set(K_INT, 0, p + 1, b);
  }
  if (m < 0x90) return set(K_MAP, m & 0x0f, p + 1, b);
  if (m < 0xa0) return set(K_ARRAY, m & 0x0f, p + 1, b);
  if (m < 0xc0) return set(K_STR, m & 0x1f, p + 1, b);
  switch (m) {
    case 0xc0: case 0xc2: case 0xc3: return set(K_OTHER, 0, p + 1, b);
    case 0xc4: return left >= 1 && set(K_BIN, b[p + 1]!, p + 2, b);
    case 0xc5: return left >= 2 && set(K_BIN, b.readUInt16BE(p + 1), p + 3, b);
    case 0xc6: return left >= 4 && set(K_BIN, b.readUInt32BE(p + 1), p + 5, b);
    // extensions are skipped like binary (their type byte counted in the header)
    case 0xc7: return left >= 2 && set(K_BIN, b[p + 1]!, p + 3, b);
    case 0xc8: return left >= 3 && set(K_BIN, b.readUInt16BE(p + 1), p + 4, b);
    case 0xc9: return left >= 5 && set(K_BIN, b.readUInt32BE(p + 1), p + 6, b);
    case 0xca: return set(K_OTHER, 0, p + 5, b);
    case 0xcb: return set(K_OTHER, 0, p + 9, b);
    case 0xd4: return set(K_OTHER, 0, p + 3, b);
    case 0xd5: return set(K_OTHER, 0, p + 4, b);
    case 0xd6: return set(K_OTHER, 0, p + 6, b);
    case 0xd7: return set(K_OTHER, 0, p + 10, b);
    case 0xd8: return set(K_OTHER, 0, p + 18, b);
    case 0xd9: return left >= 1 && set(K_STR, b[p + 1]!, p + 2, b);
    case 0xda: return left >= 2 && set(K_STR, b.readUInt16BE(p + 1), p + 3, b);
    case 0xdb: return left >= 4 && set(K_STR, b.readUInt32BE(p + 1), p + 5, b);
    case 0xdc: return left >= 2 && set(K_ARRAY, b.readUInt16BE(p + 1), p + 3, b);
    case 0xdd: return left >= 4 && set(K_ARRAY, b.readUInt32BE(p + 1), p + 5, b);
    case 0xde: return left >= 2 && set(K_MAP, b.readUInt16BE(p + 1), p + 3, b);
    case 0xdf: return left >= 4 && set(K_MAP, b.readUInt32BE(p + 1), p + 5, b);
  }
  const size = m === 0xcc || m === 0xd0 ? 1 : m === 0xcd || m === 0xd1 ? 2 : m === 0xce || m === 0xd2 ? 4 : m === 0xcf || m === 0xd3 ? 8 : -1;
  if (size < 0 || left < size) return false; // 0xc1, or truncated
  switch (m) {
    case 0xcc: hInt = b[p + 1]!; break;
    case 0xcd: hInt = b.readUInt16BE(p + 1); break;
    case 0xce: hInt = b.readUInt32BE(p + 1); break;
    case 0xcf: hInt = b.readUInt32BE(p + 1) * 0x1_0000_0000 + b.readUInt32BE(p + 5); break;
    case 0xd0: hInt = b.readInt8(p + 1); break;
    case 0xd1: hInt = b.readInt16BE(p + 1); break;
    case 0xd2: hInt = b.readInt32BE(p + 1); break;
    default: hInt = b.readInt32BE(p + 1) * 0x1_0000_0000 + b.readUInt32BE(p + 5);
  }
  return set(K_INT, 0, p + 1 + size, b);
}

/**
 * Values readEnvelope passes at most (each a header read by skip): twice what a body may hold
 * (max_values), so that every field of a body refused for anything else is found. Before, it
 * walked every value before `t` and `id`: a refused 16 MiB body of nils (refused from its array
 * header by the validator) with its params first held the host's loop 230-390 ms (load 7);
 * 131,072 values take ~1-3 ms.
 */
const ENVELOPE_SCAN_VALUES = 2 * DEFAULT_BODY_LIMITS.maxValues;
/** What is left of ENVELOPE_SCAN_VALUES in the readEnvelope under way. */
let scanLeft = 0;

/** Offset just past the value at `p` (containers included), or -1 (also past scanLeft values). Iterative. */
function skip(b: Buffer, p: number): number {
  let pending = 1;
  while (pending > 0) {
    if (--scanLeft < 0 || !header(b, p)) return -1;
    pending--;
    if (hKind === K_ARRAY) pending += hCount;
    else if (hKind === K_MAP) pending += 2 * hCount;
    // Every pending value needs at least one byte: a count beyond the bytes left is a lie.
    if (pending > b.length - hNext) return -1;
    p = hNext;
  }
  return p;
}

// ---------------------------------------------------------------------------------------
// Encoding

/**
 * Prepare a value for the wire, checking it against `limits` (those of the receiver):
 * integers beyond 32 bits become BigInt (so msgpackr writes int64), `undefined` in arrays
 * becomes nil and map entries whose value is `undefined` are left out, as JSON does.
 * Throws EncodeError `not_plain_data` for anything else that is not plain data (functions,
 * symbols, class instances, Map, Date, cycles, `__proto__` keys) and `result_too_large` for a
 * value over the limits. Iterative over siblings, recursive over depth, which the limit
 * bounds; a cycle is caught by the ancestor check long before that.
 */
export function toWire(value: unknown, limits: Readonly<BodyLimits> = DEFAULT_BODY_LIMITS): unknown {
  const state: PrepareState = { values: limits.maxValues, stringBytes: limits.maxTotalStringBytes, ancestors: [], keys: [], limits, mapKeys: newKeyCount() };
  return prepare(value, 0, state);
}

/** max_map_keys on the sending side: as KeyCounter counts (long keys at every appearance). */
interface KeyCount {
  /** Short keys seen, until there are more keys than the limit; then undefined and `distinct` holds them. */
  seen: string[] | undefined;
  distinct: Set<string> | undefined;
  long: number;
}

function newKeyCount(): KeyCount {
  return { seen: [], distinct: undefined, long: 0 };
}

function countKey(k: string, s: PrepareState): void {
  const c = s.mapKeys;
  const max = s.limits.maxMapKeys;
  // UTF-8 is 1-3 bytes per UTF-16 unit: measure only when the bounds do not decide.
  const long = k.length > SHORT_KEY_BYTES || (k.length * 3 > SHORT_KEY_BYTES && Buffer.byteLength(k) > SHORT_KEY_BYTES);
  if (long) c.long++;
  else if (c.seen) {
    c.seen.push(k);
    if (c.seen.length + c.long > max) {
      c.distinct = new Set(c.seen);
      c.seen = undefined;
    }
  } else c.distinct!.add(k);
  if ((c.seen ? c.seen.length : c.distinct!.size) + c.long > max) {
    tooLarge(`${pathOf(s)} brings the message to more than ${max} distinct map keys (a map keyed by data, such as ids or hashes, fits as an array of [key, value] pairs)`, "maxMapKeys", s.limits);
  }
}

interface PrepareState {
  values: number;
  /** UTF-8 bytes of strings still allowed (max_total_string_bytes), map keys included. */
  stringBytes: number;
  ancestors: object[];
  /** Map keys and array indexes down to the value being prepared, for error messages. */
  keys: Array<string | number>;
  limits: Readonly<BodyLimits>;
  mapKeys: KeyCount;
  /** Still true after the walk when every object and array in the value was frozen. */
  frozen?: boolean;
  /** encodeBodyParts: binary values of OUT_OF_LINE_BYTES or more, replaced by markers (see there). */
  outOfLine?: OutOfLine;
}

function pathOf(s: PrepareState): string {
  let out = "value";
  for (const k of s.keys) out += typeof k === "number" ? `[${k}]` : `.${k.length > 64 ? k.slice(0, 64) + "..." : k}`;
  return out.length > 300 ? out.slice(0, 300) + "..." : out;
}

function tooLarge(what: string, limit: keyof BodyLimits, limits: Readonly<BodyLimits>): never {
  throw new EncodeError("result_too_large", `${what}: over the protocol limit ${LIMIT_NAMES[limit]} = ${limits[limit]} (docs/protocol.md, section 3); send less at a time`, LIMIT_NAMES[limit]);
}

/** max_total_string_bytes on the sending side: the UTF-8 bytes of `v` (exact, as the receiver counts them). */
function countString(v: string, s: PrepareState): void {
  // The host's own sending limits (HOST_BODY_LIMITS) bound strings by the frame alone: nothing to count.
  if (s.limits.maxTotalStringBytes >= Number.MAX_SAFE_INTEGER) return;
  // A string of ASCII is as many bytes as UTF-16 units; Buffer.byteLength only when needed.
  s.stringBytes -= v.length < 16 && isAsciiShort(v) ? v.length : Buffer.byteLength(v);
  if (s.stringBytes < 0) {
    tooLarge(`${pathOf(s)} brings the message to ${s.limits.maxTotalStringBytes - s.stringBytes} bytes of strings (${TOTAL_STRINGS_HINT})`, "maxTotalStringBytes", s.limits);
  }
}

function isAsciiShort(v: string): boolean {
  for (let i = 0; i < v.length; i++) if (v.charCodeAt(i) > 0x7f) return false;
  return true;
}

function prepare(v: unknown, depth: number, s: PrepareState): unknown {
  if (--s.values < 0) tooLarge(`more than ${s.limits.maxValues} values in one message`, "maxValues", s.limits);
  switch (typeof v) {
    case "number":
      return Number.isInteger(v) && (v > 0xffffffff || v < -0x80000000) && Number.isSafeInteger(v) ? BigInt(v) : v;
    case "string":
      // UTF-8 is at most 3 bytes per UTF-16 unit; measure only when that bound could be over.
      if (v.length * 3 > s.limits.maxStringBytes && Buffer.byteLength(v) > s.limits.maxStringBytes) {
        tooLarge(`${pathOf(s)} is a string of ${Buffer.byteLength(v)} bytes`, "maxStringBytes", s.limits);
      }
      countString(v, s);
      return v;
    case "boolean":
      return v;
    case "undefined":
      return null;
    case "bigint":
      if (v > 0xffff_ffff_ffff_ffffn || v < -0x8000_0000_0000_0000n) throw new EncodeError("not_plain_data", `${pathOf(s)} is a bigint outside the 64-bit integer range`);
      return v;
    case "object":
      break;
    default:
      throw new EncodeError("not_plain_data", `${pathOf(s)} is a ${typeof v}, which is not plain data`);
  }
  if (v === null) return v;
  if (v instanceof Uint8Array) {
    if (s.frozen && !sealed.has(v)) s.frozen = false; // its bytes can change: never reuse an encoding of it
    if (v.byteLength > s.limits.maxBinaryBytes) tooLarge(`${pathOf(s)} is binary of ${v.byteLength} bytes`, "maxBinaryBytes", s.limits);
    if (s.outOfLine && v.byteLength >= OUT_OF_LINE_BYTES) return outOfLineMarker(s.outOfLine, v);
    return v;
  }
  if (s.frozen && !Object.isFrozen(v)) s.frozen = false;
  if (s.ancestors.includes(v)) throw new EncodeError("not_plain_data", `${pathOf(s)} refers back to a value that contains it (a cycle)`);
  if (depth + 1 > s.limits.maxDepth) tooLarge(`${pathOf(s)} is nested too deeply`, "maxDepth", s.limits);
  s.ancestors.push(v);
  let result: unknown;
  if (Array.isArray(v)) {
    // Its length against what is left of max_values before any element is visited: a sparse
    // array (`a[2 ** 32 - 2] = 1`, 4,294,967,295 long and a few bytes of memory) was walked, and
    // copied whole by slice() at its first hole, for minutes (a module's log field or request
    // param held its isolate host's thread, where no CPU watchdog runs).
    if (v.length > s.values) tooLarge(`${pathOf(s)} is an array of ${v.length} elements, more than ${s.limits.maxValues} values in one message`, "maxValues", s.limits);
    let out: unknown[] | undefined;
    for (let i = 0; i < v.length; i++) {
      s.keys.push(i);
      const w = prepare(v[i], depth + 1, s);
      s.keys.pop();
      if (w !== v[i]) (out ??= v.slice())[i] = w;
    }
    result = out ?? v;
  } else {
    const proto: unknown = Object.getPrototypeOf(v);
    if (proto !== Object.prototype && proto !== null) {
      throw new EncodeError("not_plain_data", `${pathOf(s)} is a ${(v as object).constructor?.name ?? "object"}; only plain objects, arrays, Uint8Array and primitives can be sent`);
    }
    let out: Record<string, unknown> | undefined;
    for (const k of Object.keys(v)) {
      if (k === "__proto__") throw new EncodeError("not_plain_data", `${pathOf(s)} has a "__proto__" key, which the receiver refuses`);
      const x = (v as Record<string, unknown>)[k];
      if (x === undefined) {
        out ??= { ...(v as Record<string, unknown>) };
        delete out[k];
        continue;
      }
      if (--s.values < 0) tooLarge(`more than ${s.limits.maxValues} values in one message`, "maxValues", s.limits);
      if (k.length * 3 > s.limits.maxStringBytes && Buffer.byteLength(k) > s.limits.maxStringBytes) {
        tooLarge(`${pathOf(s)} has a key of ${Buffer.byteLength(k)} bytes`, "maxStringBytes", s.limits);
      }
      countKey(k, s);
      s.keys.push(k);
      countString(k, s);
      const w = prepare(x, depth + 1, s);
      s.keys.pop();
      if (w !== x) (out ??= { ...(v as Record<string, unknown>) })[k] = w;
    }
    result = out ?? v;
  }
  s.ancestors.pop();
  return result;
}

/** Encodes a message body; throws EncodeError when the value cannot be sent (see toWire). */
export function encodeBody(value: unknown, limits: Readonly<BodyLimits> = DEFAULT_BODY_LIMITS): Buffer {
  return packr.pack(toWire(value, limits));
}

/**
 * Binary values of at least this many bytes are not copied into an encoding by encodeBodyParts
 * (msgpackr copies every value into its output: a 15 MiB binary value took 166-185 ms median
 * in one piece on this machine kind at load 8, most of it the fresh memory's page faults). At
 * this size msgpackr writes bin 32, the header encodeBodyParts writes.
 */
const OUT_OF_LINE_BYTES = 64 * 1024;
/** A marker: bin 8 of 16 bytes, a nonce of 12 and the value's index. */
const MARKER_BYTES = 18;

/** encodeBodyParts' large binary values, in the order met, and the nonce of their markers (made at the first). */
interface OutOfLine {
  nonce: Uint8Array | undefined;
  values: Uint8Array[];
}

function outOfLineMarker(o: OutOfLine, v: Uint8Array): Buffer {
  o.nonce ??= globalThis.crypto.getRandomValues(new Uint8Array(12));
  const m = Buffer.allocUnsafe(16);
  m.set(o.nonce, 0);
  m.writeUInt32BE(o.values.length, 12);
  o.values.push(v);
  return m;
}

/**
 * The bytes of encodeBody(value, limits), as parts to be written one after the other: every
 * binary value of OUT_OF_LINE_BYTES or more is a part of its own, a view of the value (not
 * copied), so sending a large answer copies none of its binary on the loop. The value is
 * packed with each such binary replaced by a marker (16 bytes: a random nonce for this call and
 * the value's index, so no value of anyone's can equal it), and the markers, found in order,
 * are replaced by the bin 32 header and the bytes. The caller must not change those bytes
 * until they are written.
 */
export function encodeBodyParts(value: unknown, limits: Readonly<BodyLimits> = DEFAULT_BODY_LIMITS): Buffer[] {
  const outOfLine: OutOfLine = { nonce: undefined, values: [] };
  const state: PrepareState = { values: limits.maxValues, stringBytes: limits.maxTotalStringBytes, ancestors: [], keys: [], limits, mapKeys: newKeyCount(), outOfLine };
  const packed = packr.pack(prepare(value, 0, state));
  if (outOfLine.values.length === 0) return [packed];
  // msgpackr's result may share its buffer with later encodings: the packed pieces are copied
  // (they hold everything but the large binary values).
  const parts: Buffer[] = [];
  const marker = Buffer.allocUnsafe(MARKER_BYTES);
  marker[0] = 0xc4;
  marker[1] = 16;
  marker.set(outOfLine.nonce!, 2);
  let from = 0;
  for (let i = 0; i < outOfLine.values.length; i++) {
    marker.writeUInt32BE(i, 14);
    const at = packed.indexOf(marker, from);
    if (at < 0) throw new Error(`encodeBodyParts: the marker of binary value ${i} is missing from the packed body`);
    const v = outOfLine.values[i]!;
    const head = Buffer.allocUnsafe(at - from + 5);
    packed.copy(head, 0, from, at);
    head[at - from] = 0xc6;
    head.writeUInt32BE(v.byteLength, at - from + 1);
    parts.push(head, Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength));
    from = at + MARKER_BYTES;
  }
  parts.push(Buffer.from(packed.subarray(from)));
  return parts;
}

/**
 * `bytes` in memory of their own when they view more than twice their size; otherwise `bytes`.
 * A binary value decoded from a frame is a view of it (msgpackr and BodyBuilder copy nothing),
 * and a frame that arrived within one read is a view of that read: kept as they are, 200 bytes
 * of a module's would keep its whole frame (up to 16 MiB) or read (64 KiB) alive while only
 * the 200 bytes are counted. Whoever keeps a module's bytes beyond the request that brought
 * them (a queued event payload, a transaction in the mempool, a block) keeps what this returns.
 * The copy costs at most the value's own size, and owns an exact-size allocation (not a slice
 * of Buffer's shared pool, which would pin 8 KiB).
 */
export function ownBytes(bytes: Uint8Array): Uint8Array {
  if (bytes.buffer.byteLength <= 2 * bytes.byteLength) return bytes;
  const own = Buffer.allocUnsafeSlow(bytes.byteLength);
  own.set(bytes);
  return own;
}

/**
 * `value` (decoded plain data: maps, arrays, scalars, bytes) with every byte array in it passed
 * through ownBytes, in place. Recursion is bounded by the decoded body's depth (max_depth).
 */
export function ownBytesIn(value: unknown): unknown {
  if (value instanceof Uint8Array) return ownBytes(value);
  if (value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) if (value[i] !== null && typeof value[i] === "object") value[i] = ownBytesIn(value[i]);
  } else {
    const o = value as Record<string, unknown>;
    for (const k of Object.keys(o)) if (o[k] !== null && typeof o[k] === "object") o[k] = ownBytesIn(o[k]);
  }
  return value;
}

/**
 * Encodings of deeply frozen values, by identity and limits: a value no one can change encodes
 * to the same bytes every time. The embedded chain hands every reader the same frozen block
 * (chain/blocks.ts deepFreeze), and the walk and the packing of a 1000-transaction block (~1.7
 * MB) cost the host ~100 ms under load for every get_block of it; every indexer asks for the
 * same block on NewBlock. Only values of at least FROZEN_CACHE_MIN_BYTES are kept (small ones
 * encode faster than a lookup pays); the map is weak, so a block dropped from the chain's
 * cache is dropped here too.
 */
/** Byte arrays whose owner promised never to change them (sealBytes): they count as frozen. */
const sealed = new WeakSet<Uint8Array>();

/**
 * Promise that `bytes` never change, so that a frozen value holding them is encoded once
 * (encodeEnvelope): the embedded chain's blocks carry their raw bytes (chain/blocks.ts). A
 * typed array cannot be frozen; whoever seals one must never write to it again.
 */
export function sealBytes<B extends Uint8Array>(bytes: B): B {
  sealed.add(bytes);
  return bytes;
}

const frozenEncodings = new WeakMap<object, { limits: Readonly<BodyLimits>; bytes: Buffer; values: number }>();
const FROZEN_CACHE_MIN_BYTES = 16 * 1024;
/** Values the envelope of encodeEnvelope adds at most (15 entries, keys and values). */
const ENVELOPE_VALUES = 31;
/** Keys the envelope of encodeEnvelope adds at most, counted against max_map_keys as if all were distinct. */
const ENVELOPE_KEYS = 15;
/** UTF-8 bytes of strings (keys included) the envelope of encodeEnvelope may have, kept free of the value's max_total_string_bytes. */
const ENVELOPE_STRING_BYTES = 4096;

/**
 * Encodes the map `{ ...head, [key]: value }` as encodeBody would (same limits, same bytes up
 * to key order), as pieces to be written one after the other: the value's encoding is reused,
 * not copied, when the value is deeply frozen and was encoded before with the same limits.
 * `head` holds at most 14 small entries (the envelope: t, id, ...).
 */
export function encodeEnvelope(head: Record<string, unknown>, key: string, value: unknown, limits: Readonly<BodyLimits> = DEFAULT_BODY_LIMITS, shared?: object): Buffer[] {
  if (value instanceof PreEncoded) {
    if (limits.maxValues > ENVELOPE_VALUES && limits.maxTotalStringBytes > 2 * ENVELOPE_STRING_BYTES && Object.keys(head).length <= 14 && sentAsIs(value.bytes, limits)) {
      return encodeEnvelopeParts(head, key, value.bytes, limits);
    }
    return encodeEnvelope(head, key, value.decode(value.bytes), limits, shared);
  }
  if (limits.maxValues <= ENVELOPE_VALUES || limits.maxTotalStringBytes <= 2 * ENVELOPE_STRING_BYTES || Object.keys(head).length > 14) return [encodeBody({ ...head, [key]: value }, limits)];
  const frozen = value !== null && typeof value === "object" && Object.isFrozen(value);
  if (shared !== undefined && !frozen) {
    // One value sent to many receivers (an event's payload to every subscriber): encoded for
    // the first, its bytes (or its EncodeError) reused for the others.
    let hit = sharedEncodings.get(shared);
    if (!hit || hit.limits !== limits) {
      try {
        hit = { limits, bytes: encodeValueAlone(key, value, limits).bytes };
      } catch (err) {
        if (!(err instanceof EncodeError)) throw err;
        hit = { limits, error: err };
      }
      sharedEncodings.set(shared, hit);
    }
    if (hit.error) throw hit.error;
    return encodeEnvelopeParts(head, key, hit.bytes!, limits);
  }
  if (!frozen) return [encodeBody({ ...head, [key]: value }, limits)];
  let hit = frozenEncodings.get(value);
  if (!hit || hit.limits !== limits) {
    // The value's own budget leaves room for the envelope, so that the whole body stays within
    // max_values; its depth starts at 1, as inside the envelope.
    const { bytes, state } = encodeValueAlone(key, value, limits);
    if (!state.frozen || bytes.length < FROZEN_CACHE_MIN_BYTES) return encodeEnvelopeParts(head, key, bytes, limits);
    hit = { limits, bytes, values: limits.maxValues - ENVELOPE_VALUES - state.values };
    frozenEncodings.set(value, hit);
  }
  return encodeEnvelopeParts(head, key, hit.bytes, limits);
}

/**
 * A value already in MessagePack, as `bytes` (a stored value: storage/store.ts getNow), with
 * `decode` to read it. encodeEnvelope sends the bytes as they are when they are what it would
 * write for the decoded value and within its limits (sentAsIs); otherwise it decodes them and
 * encodes the value as any other. Only a caller that sends with encodeEnvelope
 * (FrameChannel.sendEnvelope) may be handed one (CallContext.answersEncoded).
 */
export class PreEncoded {
  constructor(
    readonly bytes: Buffer,
    readonly decode: (bytes: Buffer) => unknown,
  ) {}
}

// sentAsIs's stack: the items left at each open container; negative for a map's.
const asIsStack = new Float64Array(256);

/**
 * Whether `b` is one MessagePack value that encodeEnvelope may send as it is under `limits`:
 * integers past 32 bits as int64 (the wire's form: a typed decoder such as rmp-serde refuses
 * a float64 for a u64 field), no float64 holding a safe integer, float32 or extension (which toWire
 * would write otherwise), map keys strings but "__proto__", and within the limits with the
 * envelope's share left, as encodeValueAlone counts them, map keys counted at every appearance
 * (at most their distinct count). False is not a refusal: the value is then decoded and sent
 * through toWire, which decides exactly. One pass over the headers (a string's or binary's bytes
 * are skipped), no allocation.
 */
export function sentAsIs(b: Buffer, limits: Readonly<BodyLimits>): boolean {
  if (limits.maxDepth >= asIsStack.length) return false;
  let values = limits.maxValues - ENVELOPE_VALUES;
  let keys = limits.maxMapKeys - ENVELOPE_KEYS;
  const countStrings = limits.maxTotalStringBytes < Number.MAX_SAFE_INTEGER;
  let stringBytes = limits.maxTotalStringBytes - ENVELOPE_STRING_BYTES;
  let level = 0;
  let left = 1; // items left at this level (the map's keys and values both, for a map)
  let inMap = false;
  let p = 0;
  for (;;) {
    while (left === 0) {
      if (level === 0) return p === b.length;
      const up = asIsStack[--level]!;
      inMap = up < 0;
      left = inMap ? -up - 1 : up; // a map's count is stored as -(count + 1), as 0 is not negative
    }
    const isKey = inMap && left % 2 === 0;
    left--;
    if (--values < 0 || !header(b, p)) return false;
    const m = b[p]!;
    switch (hKind) {
      case K_INT:
        if (isKey) return false;
        // int64 for what does not fit 32 bits (as toWire writes it), and only that.
        if (m === 0xcf || (m === 0xd3 && (!Number.isSafeInteger(hInt) || (hInt >= -0x8000_0000 && hInt <= 0xffff_ffff)))) return false;
        break;
      case K_STR:
        if (hCount > limits.maxStringBytes) return false;
        if (countStrings && (stringBytes -= hCount) < 0) return false;
        if (isKey) {
          if (--keys < 0) return false;
          if (hCount === 9 && b.toString("latin1", hNext - 9, hNext) === "__proto__") return false;
        }
        break;
      case K_BIN:
        if (isKey || m >= 0xc7 || hCount > limits.maxBinaryBytes) return false; // 0xc7-0xc9: extensions
        break;
      case K_ARRAY:
      case K_MAP: {
        // The value sits at depth 1 of the envelope (encodeValueAlone).
        if (isKey || level + 2 > limits.maxDepth) return false;
        const items = hKind === K_MAP ? 2 * hCount : hCount;
        if (items > b.length - hNext) return false;
        asIsStack[level++] = inMap ? -left - 1 : left;
        inMap = hKind === K_MAP;
        left = items;
        break;
      }
      default:
        // nil, false, true; a float64 but one holding a safe integer (-0 too), which toWire writes as an integer.
        if (isKey || (m !== 0xc0 && m !== 0xc2 && m !== 0xc3 && (m !== 0xcb || Number.isSafeInteger(b.readDoubleBE(p + 1))))) return false;
    }
    p = hNext;
  }
}

/** Encodings of values sent to many receivers, by the sender's holder object (encodeEnvelope's `shared`). */
const sharedEncodings = new WeakMap<object, { limits: Readonly<BodyLimits>; bytes?: Buffer; error?: EncodeError }>();

/**
 * The encoding of a value to be sent inside an envelope (encodeEnvelope), on its own. Its
 * budgets leave room for the envelope, so that the whole body stays within max_values and
 * max_map_keys; its depth starts at 1, as inside the envelope.
 */
function encodeValueAlone(key: string, value: unknown, limits: Readonly<BodyLimits>): { bytes: Buffer; state: PrepareState } {
  const state: PrepareState = { values: limits.maxValues - ENVELOPE_VALUES, stringBytes: limits.maxTotalStringBytes - ENVELOPE_STRING_BYTES, ancestors: [], keys: [key], limits, frozen: true, mapKeys: newKeyCount() };
  // The envelope's own keys (at most 15) count too, as if all were distinct from the value's.
  state.mapKeys.long = ENVELOPE_KEYS;
  // A copy: msgpackr's result may share its buffer with later encodings.
  const bytes = Buffer.from(packr.pack(prepare(value, 1, state)));
  return { bytes, state };
}

/** The map of head's entries and key: encodedValue, as [head and key, the value's bytes]. */
export function encodeEnvelopeParts(head: Record<string, unknown>, key: string, encodedValue: Buffer, limits: Readonly<BodyLimits>): Buffer[] {
  // The head's strings (and the key) within what encodeValueAlone left free of max_total_string_bytes.
  const headLimits = limits.maxTotalStringBytes > ENVELOPE_STRING_BYTES ? { ...limits, maxTotalStringBytes: ENVELOPE_STRING_BYTES - Buffer.byteLength(key) } : limits;
  const headBytes = packr.pack(toWire(head, headLimits));
  const entries = Object.keys(head).length + 1;
  // variableMapSize: a map of fewer than 16 entries is a fixmap (0x80 | count).
  if (headBytes[0] !== (0x80 | (entries - 1))) throw new Error(`encodeEnvelope: unexpected map header 0x${headBytes[0]?.toString(16)}`);
  const keyBytes = packr.pack(key);
  const first = Buffer.allocUnsafe(headBytes.length + keyBytes.length);
  headBytes.copy(first, 0);
  first[0] = 0x80 | entries;
  keyBytes.copy(first, headBytes.length);
  return [first, encodedValue];
}
