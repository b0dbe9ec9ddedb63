// The frame body codec: MessagePack, with maps decoded as plain objects and no record
// extension, so that any MessagePack library in any language reads and writes it.
//
// Two details keep it portable. Integers that do not fit 32 bits are written as MessagePack
// int64/uint64 (msgpackr alone would write them as float64, which a typed decoder expecting
// u64, such as rmp-serde, rejects). And decoding accepts only plain data: nil, booleans,
// numbers, strings, binary, arrays and maps with string keys; extension types and the
// reserved 0xc1 byte are refused.

import { C1, Packr } from "msgpackr";

const packr = new Packr({ useRecords: false, mapsAsObjects: true, variableMapSize: true, int64AsType: "number" });

export class CodecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CodecError";
  }
}

export function encodeBody(value: unknown): Buffer {
  return packr.pack(widenIntegers(value));
}

/** Decodes exactly one MessagePack value of plain data; throws CodecError otherwise. */
export function decodeBody(bytes: Uint8Array): unknown {
  let values: unknown[];
  try {
    values = packr.unpackMultiple(bytes);
  } catch (err) {
    throw new CodecError(`invalid MessagePack: ${(err as Error).message}`);
  }
  if (values.length !== 1) throw new CodecError(`expected one MessagePack value in the frame, found ${values.length}`);
  checkPlain(values[0], 0);
  return values[0];
}

const MAX_DEPTH = 64;

function checkPlain(v: unknown, depth: number): void {
  if (v === null || typeof v === "boolean" || typeof v === "number" || typeof v === "string") return;
  // msgpackr decodes the reserved byte to a marker object instead of failing.
  if (v === C1) throw new CodecError("invalid MessagePack: the reserved byte 0xc1 is not a value");
  if (depth > MAX_DEPTH) throw new CodecError(`value nested deeper than ${MAX_DEPTH} levels`);
  if (v instanceof Uint8Array) return;
  if (Array.isArray(v)) {
    for (const x of v) checkPlain(x, depth + 1);
    return;
  }
  if (typeof v === "object" && Object.getPrototypeOf(v) === Object.prototype) {
    for (const k in v) checkPlain((v as Record<string, unknown>)[k], depth + 1);
    return;
  }
  const what = typeof v === "object" ? (v as object).constructor?.name ?? "object" : typeof v;
  throw new CodecError(`unsupported MessagePack value (${what}); only nil, booleans, numbers, strings, binary, arrays and maps are allowed`);
}

/**
 * Prepare a value for the wire: integers beyond 32 bits become BigInt (so msgpackr writes
 * int64), `undefined` in arrays becomes nil and map entries whose value is `undefined` are
 * left out, as JSON does. (msgpackr would write `undefined` as an extension type, which the
 * receiver refuses; a request carrying one could then never be answered by id.)
 */
function widenIntegers(v: unknown): unknown {
  if (typeof v === "number") {
    return Number.isInteger(v) && (v > 0xffffffff || v < -0x80000000) && Number.isSafeInteger(v) ? BigInt(v) : v;
  }
  if (v === undefined) return null;
  if (v === null || typeof v !== "object" || v instanceof Uint8Array) return v;
  if (Array.isArray(v)) {
    let out: unknown[] | undefined;
    for (let i = 0; i < v.length; i++) {
      const w = widenIntegers(v[i]);
      if (w !== v[i]) (out ??= v.slice())[i] = w;
    }
    return out ?? v;
  }
  let out: Record<string, unknown> | undefined;
  for (const k in v) {
    const x = (v as Record<string, unknown>)[k];
    if (x === undefined) {
      out ??= { ...(v as Record<string, unknown>) };
      delete out[k];
      continue;
    }
    const w = widenIntegers(x);
    if (w !== x) (out ??= { ...(v as Record<string, unknown>) })[k] = w;
  }
  return out ?? v;
}
