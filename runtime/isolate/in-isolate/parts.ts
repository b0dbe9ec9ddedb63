// A storage transaction whose ops do not fit one message goes in parts of one id (the host
// holds them and writes all at once with the last: docs/protocol.md section 6.2). What one
// part may weigh: under the protocol's per-message limits (max_values 65,536; 1 MiB of
// strings; 4,096 distinct map keys), with room for the message around it.

import { utf8Length } from "./text.ts";

export const PART = { values: 48000, stringBytes: 768 * 1024, keys: 3500, bytes: 12 * 1024 * 1024 };

interface Weight {
  values: number;
  stringBytes: number;
  keys: number;
  bytes: number;
  keySet: Set<string>;
}

const weightless = (): Weight => ({ values: 0, stringBytes: 0, keys: 0, bytes: 0, keySet: new Set() });

function weighInto(v: unknown, w: Weight): void {
  w.values++;
  if (typeof v === "string") {
    w.stringBytes += utf8Length(v, Infinity);
  } else if (v instanceof Uint8Array) {
    w.bytes += v.byteLength;
  } else if (Array.isArray(v)) {
    for (const x of v) weighInto(x, w);
  } else if (v !== null && typeof v === "object") {
    const record = v as Record<string, unknown>;
    for (const k of Object.keys(record)) {
      w.values++;
      w.stringBytes += utf8Length(k, Infinity);
      // A key over 64 bytes counts at every appearance, a shorter one once (max_map_keys).
      if (k.length > 21 || !w.keySet.has(k)) {
        w.keySet.add(k);
        w.keys++;
      }
      weighInto(record[k], w);
    }
  }
}

/** The ops in parts that each fit one message; one part when they all do. */
export function splitOps(ops: unknown[]): unknown[][] {
  const parts: unknown[][] = [];
  let part: unknown[] = [];
  let w = weightless();
  for (const op of ops) {
    weighInto(op, w);
    const over = w.values > PART.values || w.stringBytes > PART.stringBytes || w.keys > PART.keys || w.bytes + w.stringBytes > PART.bytes;
    if (over && part.length > 0) {
      // This op starts the next part (alone it may still be too big: the host then says which limit).
      parts.push(part);
      part = [];
      w = weightless();
      weighInto(op, w);
    }
    part.push(op);
  }
  parts.push(part);
  return parts;
}
