/**
 * Key and value encoding for module storage.
 *
 * Values are msgpack (msgpackr, no records) of *plain data* only: null, boolean,
 * number, string, Uint8Array, arrays and plain objects. Anything that would not
 * round-trip faithfully (undefined, functions, symbols, bigint, Date, Map, class
 * instances, other typed arrays, cycles, `__proto__` keys) is rejected up front
 * with `invalid_params` (over the wire a `__proto__` key does not even get here: the frame
 * decoder refuses the message), so what a module reads back is exactly what it wrote
 * (caveat: -0 comes back as 0, as msgpack has no negative-zero integer).
 *
 * Integers past 32 bits are written as int64, as the wire writes them (protocol/codec.ts
 * toWire), so that a stored value is the answer's bytes as they are (PreEncoded); values
 * written before hold them as float64, read back alike (as numbers) and re-encoded when sent.
 *
 * Keys are strings stored as their UTF-8 bytes, so ordering is by UTF-8 bytes.
 */
import { Packr } from "msgpackr";
import { StorageError } from "./errors.ts";
import { MAX_VALUE_DEPTH as WIRE_MAX_VALUE_DEPTH } from "../protocol/codec.ts";

// int64AsType "number": int64 is written only for safe integers (int64Form).
const packr = new Packr({ useRecords: false, variableMapSize: true, int64AsType: "number" });
const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Nesting deeper than this is rejected (also bounds the recursion below). It is the wire's
 * limit for a data value, so every value stored can be read back in one frame.
 */
const MAX_VALUE_DEPTH = WIRE_MAX_VALUE_DEPTH;

// A lone (unpaired) UTF-16 surrogate cannot be encoded as UTF-8: two different
// strings would map to the same key bytes, so such keys are rejected.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Validates that `key` is a well-formed string of at most `maxBytes` UTF-8 bytes; returns its bytes. */
export function encodeKey(key: unknown, maxBytes: number, what = "key"): Uint8Array {
  checkKey(key, maxBytes, what);
  return utf8.encode(key as string);
}

/**
 * What encodeKey checks, without encoding: the key's UTF-8 length. For a caller that writes
 * many keys into one buffer of its own (ModuleStore.batch), instead of a Uint8Array (and an
 * ArrayBuffer, which the garbage collector tracks one by one) for each.
 */
export function checkKey(key: unknown, maxBytes: number, what = "key"): number {
  if (typeof key !== "string") {
    throw new StorageError("invalid_params", `${what} must be a string, got ${describe(key)}`);
  }
  // UTF-8 takes at least one byte per UTF-16 unit: a key this long is too long, refused
  // before any work proportional to its length.
  if (key.length > maxBytes) {
    throw new StorageError("invalid_params", `${what} is at least ${key.length} bytes (UTF-8), over the limit of ${maxBytes} bytes (a fixed limit of storage keys: use a shorter key, e.g. a hash of a long one)`);
  }
  if (LONE_SURROGATE.test(key)) {
    throw new StorageError("invalid_params", `${what} contains an unpaired UTF-16 surrogate`);
  }
  const length = Buffer.byteLength(key, "utf8");
  if (length > maxBytes) {
    throw new StorageError(
      "invalid_params",
      `${what} is ${length} bytes (UTF-8), over the limit of ${maxBytes} bytes (a fixed limit of storage keys: use a shorter key, e.g. a hash of a long one)`,
    );
  }
  return length;
}

export function decodeKey(bytes: Uint8Array): string {
  return utf8Decoder.decode(bytes);
}

/**
 * Validates `value` as plain data and msgpack-encodes it. The validation walk also adds up a
 * lower bound of the encoded size and stops as soon as that passes `maxBytes`, so an
 * oversized value is refused after work bounded by the limit, not by the value.
 */
export function encodeValue(value: unknown, maxBytes: number): Uint8Array {
  const budget: SizeBudget = { size: 0, max: maxBytes, wide: false };
  try {
    checkPlain(value, "value", 0, SEEN, budget);
  } finally {
    SEEN.length = 0; // empty already after a walk that accepted the value
  }
  const bytes = packr.pack(budget.wide ? int64Form(value) : value);
  if (bytes.length > maxBytes) {
    throw new StorageError(
      "invalid_params",
      `value encodes to ${bytes.length} bytes, over the limit of ${maxBytes} bytes (a fixed limit of storage values: split the value over several keys)`,
    );
  }
  return bytes;
}

export function decodeValue(bytes: Uint8Array): unknown {
  return normalizeBinary(packr.unpack(bytes));
}

/**
 * The containers on the path of the value being walked (cycles); one stack for every value,
 * walks being synchronous. A stack searched from the top, not a Set: hashing every object of a
 * value cost the walk ~0.3 us an object (65,000 empty maps, the most a frame carries: 23-40 ms
 * median in one piece at load 22, against 1-1.5 ms for packing them); the path is at most
 * MAX_VALUE_DEPTH long, and an empty container, which cannot close a cycle, is not searched.
 */
const SEEN: object[] = [];

interface SizeBudget {
  /** Lower bound of the encoded size of what was walked so far. */
  size: number;
  max: number;
  /** An integer past 32 bits was met (int64Form). */
  wide: boolean;
}

/** A safe integer msgpackr would write as float64: past the 32-bit forms (int32, uint32). */
const isWide = (v: number): boolean => (v > 0xffff_ffff || v < -0x8000_0000) && Number.isSafeInteger(v);

/**
 * `v` (checked plain data) with every integer past 32 bits a BigInt, which msgpackr writes as
 * int64 (as protocol/codec.ts toWire does), containers copied only on the path to one.
 * Recursion is bounded by MAX_VALUE_DEPTH (checked before).
 */
function int64Form(v: unknown): unknown {
  if (typeof v === "number") return isWide(v) ? BigInt(v) : v;
  if (v === null || typeof v !== "object" || v instanceof Uint8Array) return v;
  if (Array.isArray(v)) {
    let out: unknown[] | undefined;
    for (let i = 0; i < v.length; i++) {
      const w = int64Form(v[i]);
      if (w !== v[i]) (out ??= v.slice())[i] = w;
    }
    return out ?? v;
  }
  let out: Record<string, unknown> | undefined;
  const o = v as Record<string, unknown>;
  for (const k in o) {
    if (!Object.hasOwn(o, k)) continue;
    const w = int64Form(o[k]);
    if (w !== o[k]) (out ??= { ...o })[k] = w;
  }
  return out ?? v;
}

function grow(budget: SizeBudget, bytes: number): void {
  budget.size += bytes;
  if (budget.size > budget.max) {
    throw new StorageError("invalid_params", `value encodes to at least ${budget.size} bytes, over the limit of ${budget.max} bytes (a fixed limit of storage values: split the value over several keys)`);
  }
}

/**
 * A refusal found deep in a value: the path to it is put together on the way out (each level
 * adds its step), so a value that is accepted never builds a path string per field.
 */
class Refusal {
  readonly steps: string[] = [];
  constructor(readonly message: (path: string) => string) {}
}

function checkPlain(v: unknown, path: string, depth: number, seen: object[], budget: SizeBudget): void {
  try {
    walkPlain(v, depth, seen, budget);
  } catch (err) {
    if (!(err instanceof Refusal)) throw err;
    throw new StorageError("invalid_params", err.message(path + err.steps.reverse().join("")));
  }
}

function walkPlain(v: unknown, depth: number, seen: object[], budget: SizeBudget): void {
  switch (typeof v) {
    case "string":
      grow(budget, 1 + v.length); // UTF-8 has at least one byte per UTF-16 unit
      return;
    case "number":
      if (isWide(v)) budget.wide = true;
      grow(budget, 1);
      return;
    case "boolean":
      grow(budget, 1);
      return;
    case "undefined":
      throw new Refusal((path) => `${path} is undefined; use null or omit the property`);
    case "object":
      break;
    default: {
      // function, symbol, bigint
      const type = typeof v;
      throw new Refusal((path) => `${path} is a ${type}, which cannot be stored`);
    }
  }
  if (v === null) {
    grow(budget, 1);
    return;
  }
  if (v instanceof Uint8Array) {
    grow(budget, 2 + v.byteLength); // includes Buffer; read back as a plain Uint8Array
    return;
  }
  grow(budget, 1);
  if (depth >= MAX_VALUE_DEPTH) {
    throw new Refusal((path) => `${path} is nested deeper than ${MAX_VALUE_DEPTH} levels, the most a data value may have (max_depth, a fixed protocol limit: docs/protocol.md section 3); store a flatter value`);
  }
  if (Array.isArray(v)) {
    if (v.length > 0 && seen.includes(v)) throw new Refusal((path) => `${path} is a circular reference`);
    seen.push(v);
    for (let i = 0; i < v.length; i++) {
      try {
        walkPlain(v[i], depth + 1, seen, budget);
      } catch (err) {
        if (err instanceof Refusal) err.steps.push(`[${i}]`);
        throw err;
      }
    }
  } else {
    const proto: unknown = Object.getPrototypeOf(v);
    if (proto !== Object.prototype && proto !== null) {
      const what = describe(v);
      throw new Refusal((path) => `${path} is a ${what}; only plain objects, arrays, Uint8Array and primitives can be stored`);
    }
    seen.push(v);
    let first = true;
    for (const k in v) {
      if (!Object.hasOwn(v, k)) continue;
      if (first) {
        first = false;
        // Not empty: it could close a cycle (itself excluded, just pushed).
        if (seen.indexOf(v) < seen.length - 1) throw new Refusal((path) => `${path} is a circular reference`);
      }
      if (k === "__proto__") throw new Refusal((path) => `${path} has a "__proto__" key, which is refused (JavaScript readers would take it for the prototype); rename it`);
      grow(budget, 1 + k.length);
      try {
        walkPlain((v as Record<string, unknown>)[k], depth + 1, seen, budget);
      } catch (err) {
        if (err instanceof Refusal) err.steps.push(`.${k}`);
        throw err;
      }
    }
  }
  seen.pop(); // shared (non-circular) references are fine
}

/** msgpackr decodes binary as Node Buffer; hand back plain Uint8Array views (no copy). */
function normalizeBinary(v: unknown): unknown {
  if (v === null || typeof v !== "object") return v;
  if (v instanceof Uint8Array) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) v[i] = normalizeBinary(v[i]);
  } else {
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) o[k] = normalizeBinary(o[k]);
  }
  return v;
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (typeof v !== "object") return typeof v;
  return (v as object).constructor?.name ?? "object";
}

/** Byte-wise comparison (LevelDB's default comparator). */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b);
}

/**
 * Smallest byte string greater than every string starting with `prefix`, or
 * undefined if there is none (empty prefix / all 0xFF — never the case for UTF-8).
 */
export function prefixUpperBound(prefix: Uint8Array): Uint8Array | undefined {
  let end = prefix.length;
  while (end > 0 && prefix[end - 1] === 0xff) end--;
  if (end === 0) return undefined;
  const out = prefix.slice(0, end);
  out[end - 1] = out[end - 1]! + 1;
  return out;
}
