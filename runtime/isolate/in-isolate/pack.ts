// A storage transaction leaves the isolate as MessagePack bytes made here, not as an object
// graph: copying 3,000 ops out (a structured clone on each side of the crossing) and encoding
// them again in the isolate host cost more than the whole in-process indexer (bench/indexer.ts,
// docs/performance-log.md). The isolate host puts the bytes in the request's frame as they are.
//
// Nothing here is a security boundary (a module can tamper with anything in its isolate): the
// host decodes these bytes with every limit of the codec (protocol/codec.ts), as it decodes a
// native module's, and refuses a frame that breaks one (invalid_message). What this encoder
// does not handle exactly as the isolate host's encoder would (undefined at the top, class
// instances, functions, bigints, lone surrogates, `__proto__` keys, a value nested past the
// protocol's depth, an op over one part's weight, more ops than a transaction may have) makes
// it give up: the transaction then goes the old way, whose errors name the problem.
//
// Values are written as the isolate host's encoder writes them (protocol/codec.ts toWire and
// msgpackr): integers in the smallest integer form (beyond 32 bits as int64), other numbers as
// float64, `undefined` in an array as nil, a map entry whose value is undefined left out.

import { PART } from "./parts.ts";

/** The protocol's depth limit for a data value (protocol/codec.ts MAX_VALUE_DEPTH; written in when the bootstrap is built). */
declare const __MODHOST_MAX_VALUE_DEPTH__: number;
/** Ops of one transaction over all its parts (the host's limit, capabilities/storage.ts); past it the old path's error says so. */
const MAX_OPS = 10_000;
/**
 * Bytes of all the parts together, past which the encoder gives up: the host holds at most 32 MiB
 * of a module's transactions in parts (storage/store.ts MAX_STAGED_BYTES), and encoding every
 * part up front must not double, without end, what a module's huge transaction holds.
 */
const MAX_PACKED_BYTES = 32 * 1024 * 1024;
/** A tree name longer than this goes the old way (the host's limit on names is far below). */
const MAX_TREE_CHARS = 1024;
/** Map keys up to this many UTF-8 bytes count once per message towards max_map_keys (protocol/codec.ts SHORT_KEY_BYTES). */
const SHORT_KEY_BYTES = 64;

/** The ops encoded one after the other; each part a run of them that fits one message. */
export interface PackedOps {
  tree: string;
  bytes: Uint8Array;
  /** [first byte, end byte, ops] of each part. */
  parts: Array<[number, number, number]>;
}

class GiveUp {}
const GIVE_UP = new GiveUp();
/** The op being encoded took its part past PART's weight (thrown as soon as it does: a value that contains itself ends here too). */
const OVER = new GiveUp();

let buf = new Uint8Array(64 * 1024);
let view = new DataView(buf.buffer);
let n = 0;
// The weight of the part being filled (PART in parts.ts), as the host's decoder counts it.
let values = 0;
let stringBytes = 0;
let binBytes = 0;
let longKeys = 0;
let shortKeys = new Set<string>();

function room(k: number): void {
  if (n + k <= buf.length) return;
  if (n + k > MAX_PACKED_BYTES) throw GIVE_UP;
  let size = buf.length * 2;
  while (size < n + k) size *= 2;
  const next = new Uint8Array(size);
  next.set(buf.subarray(0, n));
  buf = next;
  view = new DataView(buf.buffer);
}

function header(len: number, fix: number, fixMax: number, c8: number, c16: number, c32: number): void {
  room(5);
  if (len <= fixMax && fix >= 0) buf[n++] = fix | len;
  else if (len < 0x100 && c8 >= 0) {
    buf[n++] = c8;
    buf[n++] = len;
  } else if (len < 0x10000) {
    buf[n++] = c16;
    view.setUint16(n, len);
    n += 2;
  } else {
    buf[n++] = c32;
    view.setUint32(n, len);
    n += 4;
  }
}

/** A string as UTF-8 with its header; its byte length. */
function str(s: string): number {
  const units = s.length;
  // ASCII first (the usual case): as many bytes as UTF-16 units.
  room(5 + 3 * units);
  const start = n;
  header(units, 0xa0, 31, 0xd9, 0xda, 0xdb);
  let at = n;
  let i = 0;
  for (; i < units; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x80) break;
    buf[at++] = c;
  }
  if (i === units) {
    n = at;
    return units;
  }
  // Not ASCII: count the bytes, then write again behind the right header.
  let len = 0;
  for (let j = 0; j < units; j++) {
    const c = s.charCodeAt(j);
    if (c < 0x80) len += 1;
    else if (c < 0x800) len += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(j + 1);
      if (!(d >= 0xdc00 && d <= 0xdfff)) throw GIVE_UP; // a lone surrogate
      len += 4;
      j++;
    } else if (c >= 0xdc00 && c <= 0xdfff) throw GIVE_UP;
    else len += 3;
  }
  n = start;
  header(len, 0xa0, 31, 0xd9, 0xda, 0xdb);
  at = n;
  for (let j = 0; j < units; j++) {
    let c = s.charCodeAt(j);
    if (c < 0x80) buf[at++] = c;
    else if (c < 0x800) {
      buf[at++] = 0xc0 | (c >> 6);
      buf[at++] = 0x80 | (c & 0x3f);
    } else if (c >= 0xd800 && c <= 0xdbff) {
      c = 0x10000 + ((c - 0xd800) << 10) + (s.charCodeAt(++j) - 0xdc00);
      buf[at++] = 0xf0 | (c >> 18);
      buf[at++] = 0x80 | ((c >> 12) & 0x3f);
      buf[at++] = 0x80 | ((c >> 6) & 0x3f);
      buf[at++] = 0x80 | (c & 0x3f);
    } else {
      buf[at++] = 0xe0 | (c >> 12);
      buf[at++] = 0x80 | ((c >> 6) & 0x3f);
      buf[at++] = 0x80 | (c & 0x3f);
    }
  }
  n = at;
  return len;
}

function num(v: number): void {
  room(9);
  if (Number.isInteger(v) && Math.abs(v) <= Number.MAX_SAFE_INTEGER) {
    if (v >= 0) {
      if (v < 0x80) buf[n++] = v;
      else if (v < 0x100) {
        buf[n++] = 0xcc;
        buf[n++] = v;
      } else if (v < 0x10000) {
        buf[n++] = 0xcd;
        view.setUint16(n, v);
        n += 2;
      } else if (v <= 0xffffffff) {
        buf[n++] = 0xce;
        view.setUint32(n, v);
        n += 4;
      } else {
        buf[n++] = 0xd3;
        view.setBigInt64(n, BigInt(v));
        n += 8;
      }
    } else if (v >= -32) buf[n++] = v & 0xff;
    else if (v >= -0x80) {
      buf[n++] = 0xd0;
      view.setInt8(n++, v);
    } else if (v >= -0x8000) {
      buf[n++] = 0xd1;
      view.setInt16(n, v);
      n += 2;
    } else if (v >= -0x80000000) {
      buf[n++] = 0xd2;
      view.setInt32(n, v);
      n += 4;
    } else {
      buf[n++] = 0xd3;
      view.setBigInt64(n, BigInt(v));
      n += 8;
    }
    return;
  }
  buf[n++] = 0xcb;
  view.setFloat64(n, v);
  n += 8;
}

function key(k: string): void {
  if (k === "__proto__") throw GIVE_UP;
  const len = str(k);
  stringBytes += len;
  values++;
  if (len > SHORT_KEY_BYTES) longKeys++;
  else shortKeys.add(k);
}

function value(v: unknown, depth: number): void {
  if (++values > PART.values || binBytes + stringBytes > PART.bytes) throw OVER;
  switch (typeof v) {
    case "string":
      if (v.length > PART.bytes) throw OVER; // before room() for it
      stringBytes += str(v);
      return;
    case "number":
      num(v);
      return;
    case "boolean":
      room(1);
      buf[n++] = v ? 0xc3 : 0xc2;
      return;
    case "undefined": // only inside an array (map entries are left out first): nil, as toWire
      room(1);
      buf[n++] = 0xc0;
      return;
    case "object":
      break;
    default:
      throw GIVE_UP;
  }
  if (v === null) {
    room(1);
    buf[n++] = 0xc0;
    return;
  }
  if (depth >= __MODHOST_MAX_VALUE_DEPTH__) throw GIVE_UP;
  const proto: unknown = Object.getPrototypeOf(v);
  if (proto === Uint8Array.prototype) {
    const bytes = v as Uint8Array;
    header(bytes.byteLength, -1, -1, 0xc4, 0xc5, 0xc6);
    room(bytes.byteLength);
    buf.set(bytes, n);
    n += bytes.byteLength;
    binBytes += bytes.byteLength;
    return;
  }
  if (proto === Array.prototype) {
    const list = v as unknown[];
    header(list.length, 0x90, 15, -1, 0xdc, 0xdd);
    for (let i = 0; i < list.length; i++) value(list[i], depth + 1);
    return;
  }
  if (proto !== Object.prototype && proto !== null) throw GIVE_UP;
  const record = v as Record<string, unknown>;
  const keys = Object.keys(record);
  let count = 0;
  for (const k of keys) if (record[k] !== undefined) count++;
  header(count, 0x80, 15, -1, 0xde, 0xdf);
  for (const k of keys) {
    const item = record[k];
    if (item === undefined) continue;
    key(k);
    value(item, depth + 1);
  }
}

const over = () =>
  values > PART.values || stringBytes > PART.stringBytes || shortKeys.size + longKeys > PART.keys || binBytes + stringBytes > PART.bytes;

const fresh = () => {
  values = 0;
  stringBytes = 0;
  binBytes = 0;
  longKeys = 0;
  shortKeys = new Set();
};

/**
 * The ops as MessagePack, split into parts that each fit one message (the weights of parts.ts,
 * counted as the host's decoder counts them); undefined when this encoder gives up (above).
 */
export function packOps(tree: unknown, ops: unknown[]): PackedOps | undefined {
  if (typeof tree !== "string" || tree.length > MAX_TREE_CHARS) return undefined;
  if (ops.length > MAX_OPS || Object.getPrototypeOf(ops) !== Array.prototype) return undefined;
  n = 0;
  fresh();
  const parts: Array<[number, number, number]> = [];
  let partStart = 0;
  let count = 0;
  try {
    str(tree); // gives up on a name that is not valid UTF-8, which packParams writes
    n = 0;
    for (let i = 0; i < ops.length; i++) {
      const opStart = n;
      try {
        value(ops[i], 0);
        if (!over()) {
          count++;
          continue;
        }
      } catch (err) {
        if (err !== OVER) throw err;
      }
      // This op starts the next part; alone over a part's weight, the old path says which limit.
      if (count === 0) return undefined;
      parts.push([partStart, opStart, count]);
      n = opStart;
      fresh();
      value(ops[i], 0);
      if (over()) return undefined;
      partStart = opStart;
      count = 1;
    }
    parts.push([partStart, n, count]);
    return { tree, bytes: buf.slice(0, n), parts };
  } catch (err) {
    if (err === GIVE_UP || err === OVER) return undefined;
    throw err;
  } finally {
    shrink();
  }
}

/** Let a large buffer go: one huge transaction must not keep its size in the isolate. */
function shrink(): void {
  if (buf.length <= 1024 * 1024) return;
  buf = new Uint8Array(64 * 1024);
  view = new DataView(buf.buffer);
}

/** The params of part `i` of `packed` as MessagePack: `{ tree, ops, part? }`, the map the isolate host's encoder would have written. */
export function packParams(packed: PackedOps, i: number, part: { id: number; more: boolean } | undefined): Uint8Array {
  const [from, to, count] = packed.parts[i]!;
  n = 0;
  try {
    header(part ? 3 : 2, 0x80, 15, -1, 0xde, 0xdf);
    str("tree");
    str(packed.tree);
    str("ops");
    header(count, 0x90, 15, -1, 0xdc, 0xdd);
    room(to - from);
    buf.set(packed.bytes.subarray(from, to), n);
    n += to - from;
    if (part) {
      str("part");
      header(2, 0x80, 15, -1, 0xde, 0xdf);
      str("id");
      num(part.id);
      str("more");
      room(1);
      buf[n++] = part.more ? 0xc3 : 0xc2;
    }
    return buf.slice(0, n);
  } finally {
    shrink();
  }
}
