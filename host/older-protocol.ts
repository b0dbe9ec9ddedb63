// What a module that negotiated an older protocol version gets instead of the current form of
// an answer (docs/protocol.md section 9). The host keeps speaking an old version while the SDKs
// that speak it are in use; what each version changed is listed here and in the spec.
//
// Version 2: raw serialisations (the catalogue's RawHex fields: a block's bytes, a
// transaction's, a template transaction's, a template's coinbase) are MessagePack bin. Version
// 1 sent them as hex strings; a version-1 session still gets hex strings, made here, on the
// host's loop: the cost version 2 removed (an 8 MB string for a 4 MB block's first page) is
// paid only by modules whose SDK predates it.

import { METHODS } from "../capabilities/families.ts";

/** The oldest version whose answers are sent as the hub returns them. */
const BIN_RAW_SERIALISATIONS = 2;

/**
 * The version-1 form of frozen answers (a block's cached pages), made once per answer and
 * frozen in turn: the codec then encodes it once too, so a version-1 module asking for the same
 * block again and again costs the host what it did before version 2, not a new hex each time.
 */
const olderForms = new WeakMap<object, unknown>();

/** `result` of `method` as a session that negotiated `version` must receive it. */
export function answerForVersion(version: number, method: string, result: unknown): unknown {
  if (version >= BIN_RAW_SERIALISATIONS) return result;
  const paths = METHODS.get(method)?.sdk?.hex;
  if (!paths || result === null || typeof result !== "object") return result;
  const frozen = Object.isFrozen(result);
  const known = frozen ? olderForms.get(result) : undefined;
  if (known !== undefined) return known;
  let out: unknown = result;
  for (const p of paths) out = hexAt(out, p.split("."), 0);
  if (frozen && out !== result) olderForms.set(result, out);
  return out;
}

/**
 * `value` with the bytes at `path` (keys, "*" for every item of an array) replaced by their hex;
 * copied along the path only where something changed (answers may be frozen and shared), and
 * a copy of a frozen value frozen too.
 */
function hexAt(value: unknown, path: readonly string[], i: number): unknown {
  if (i === path.length) return value instanceof Uint8Array ? Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("hex") : value;
  if (value === null || typeof value !== "object" || value instanceof Uint8Array) return value;
  const seg = path[i]!;
  if (seg === "*") {
    if (!Array.isArray(value)) return value;
    let copy: unknown[] | undefined;
    for (let k = 0; k < value.length; k++) {
      const v = hexAt(value[k], path, i + 1);
      if (v !== value[k]) (copy ??= [...value])[k] = v;
    }
    return copy ? likeFrozen(value, copy) : value;
  }
  if (Array.isArray(value) || !Object.hasOwn(value, seg)) return value;
  const rec = value as Record<string, unknown>;
  const v = hexAt(rec[seg], path, i + 1);
  return v === rec[seg] ? value : likeFrozen(value, { ...rec, [seg]: v });
}

const likeFrozen = <T extends object>(source: object, copy: T): T => (Object.isFrozen(source) ? Object.freeze(copy) : copy);
