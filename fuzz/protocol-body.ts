// Fuzz target: the body decoder and message validation. Any body is decoded, validated as a
// module message and as a host message, and its envelope read; only CodecError and
// MessageError may come out. What decodes must be accepted by the encoder too and round-trip
// to the same value (what one side accepts, the other can send back). What decodes is within
// max_map_keys by an independent count; seeds at that limit (distinct short keys, repeated
// long ones) let mutations make keys equal, distinct, short or long. Likewise for
// max_total_string_bytes: what decodes holds at most that many bytes of strings (keys
// included), and seeds a few bytes under it let mutations lengthen a string past it. What
// decodes is built the same by BodyBuilder, stopped at every chance (a seed of 9,000 tiny
// containers makes it stop many times; one of 1,200 storage ops, small maps, has it build runs
// of them with msgpackr).

import { isDeepStrictEqual } from "node:util";
import { Packr } from "msgpackr";
import { BodyBuilder, CodecError, decodeBody, DEFAULT_BODY_LIMITS, encodeBody, readEnvelope, SHORT_KEY_BYTES } from "../protocol/codec.ts";
import { MessageError, parseHostMessage, parseModuleMessage } from "../protocol/messages.ts";
import { protocolVectorFrames, type FuzzTarget } from "./driver.ts";

export async function bodyTarget(): Promise<FuzzTarget> {
  return {
    name: "protocol-body",
    seeds: [...(await protocolVectorFrames()).map((f) => f.subarray(4)), ...mapKeySeeds(), ...stringSeeds(), containerSeed(), opsSeed()],
    run(input) {
      const env = readEnvelope(input);
      if (env.id !== undefined && !(Number.isSafeInteger(env.id) && env.id > 0)) throw new Error(`envelope id ${env.id}`);
      let value: unknown;
      try {
        value = decodeBody(input);
      } catch (err) {
        if (err instanceof CodecError) return;
        throw err;
      }
      // The host builds a body of many values in steps (BodyBuilder): the same value, however cut.
      const builder = new BodyBuilder(Buffer.from(input));
      while (!builder.step(() => true));
      if (!isDeepStrictEqual(builder.value, value)) throw new Error("BodyBuilder built a different value than decodeBody");
      const keys = distinctKeys(value);
      if (keys > DEFAULT_BODY_LIMITS.maxMapKeys) throw new Error(`decoded a body of ${keys} distinct map keys`);
      const strings = stringBytes(value);
      if (strings > DEFAULT_BODY_LIMITS.maxTotalStringBytes) throw new Error(`decoded a body of ${strings} bytes of strings`);
      const again = decodeBody(encodeBody(value));
      if (!isDeepStrictEqual(normalise(again), normalise(value))) throw new Error("decode(encode(value)) differs from value");
      for (const parse of [parseModuleMessage, parseHostMessage]) {
        try {
          parse(structuredClone(value));
        } catch (err) {
          if (!(err instanceof MessageError)) throw err;
        }
      }
    },
  };
}

/** A body of 9,000 empty maps and arrays: more than STEPPED_BUILD_VALUES, built in steps by the host. */
function containerSeed(): Uint8Array {
  return encodeBody({ t: "x", a: Array.from({ length: 9000 }, (_, i) => (i % 2 ? {} : [])) });
}

/** A storage transaction of 1,200 puts (~18,000 values): BodyBuilder builds runs of its small maps with msgpackr. */
function opsSeed(): Uint8Array {
  const ops = Array.from({ length: 1200 }, (_, n) => ({ op: "put", key: `k${n}`, value: n % 3 ? { n, s: "v".repeat(n % 40), ok: true } : [n, null] }));
  return encodeBody({ t: 0, id: 1, method: "storage_transaction", params: { tree: "t", ops } });
}

/** Bodies at max_map_keys, packed as is (the encoder would check them). */
function mapKeySeeds(): Uint8Array[] {
  const raw = new Packr({ useRecords: false, mapsAsObjects: true, variableMapSize: true });
  const max = DEFAULT_BODY_LIMITS.maxMapKeys;
  const distinct = Object.fromEntries(Array.from({ length: max - 2 }, (_, i) => [`k${i}`, 0]));
  const long = "L".repeat(SHORT_KEY_BYTES + 1);
  return [
    raw.pack({ t: "x", p: distinct }),
    raw.pack({ t: "x", a: Array.from({ length: max - 2 }, () => ({ [long]: 0 })) }),
    raw.pack({ t: "x", a: Array.from({ length: 2 * max }, (_, i) => ({ [`${"s".repeat(62)}${i % 97}`]: 0 })) }),
  ];
}

/** Bodies a few bytes under max_total_string_bytes: one long string, and many short ones with keys. */
function stringSeeds(): Uint8Array[] {
  const raw = new Packr({ useRecords: false, mapsAsObjects: true, variableMapSize: true });
  const max = DEFAULT_BODY_LIMITS.maxTotalStringBytes;
  return [
    raw.pack({ t: "x", s: "é".repeat((max - 8) / 2 - 1) }),
    raw.pack({ t: "x", a: Array.from({ length: 1000 }, (_, i) => ({ k: `${i}`.padEnd(Math.floor(max / 1000) - 8, "y") })) }),
  ];
}

/** max_total_string_bytes counted on a decoded value: UTF-8 bytes of every string and map key. */
function stringBytes(v: unknown): number {
  let n = 0;
  const walk = (x: unknown): void => {
    if (typeof x === "string") n += Buffer.byteLength(x);
    else if (Array.isArray(x)) x.forEach(walk);
    else if (x && typeof x === "object" && !(x instanceof Uint8Array)) {
      for (const [k, y] of Object.entries(x)) {
        n += Buffer.byteLength(k);
        walk(y);
      }
    }
  };
  walk(v);
  return n;
}

/** max_map_keys counted on a decoded value: short keys once, long ones (over 64 UTF-8 bytes) at each appearance. */
function distinctKeys(v: unknown): number {
  const short = new Set<string>();
  let long = 0;
  const walk = (x: unknown): void => {
    if (Array.isArray(x)) x.forEach(walk);
    else if (x && typeof x === "object" && !(x instanceof Uint8Array)) {
      for (const [k, y] of Object.entries(x)) {
        if (Buffer.byteLength(k) > SHORT_KEY_BYTES) long++;
        else short.add(k);
        walk(y);
      }
    }
  };
  walk(v);
  return short.size + long;
}

/** Binary comes back as a Buffer either way; compare bytes. */
function normalise(v: unknown): unknown {
  if (v instanceof Uint8Array) return Buffer.from(v).toString("hex");
  if (Array.isArray(v)) return v.map(normalise);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, normalise(x)]));
  return v;
}
