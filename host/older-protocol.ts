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
import { splitHexPaths, withRawHex } from "../protocol/raw-hex.ts";

/** Each method's hex paths, split once. */
const HEX_PATHS = new Map([...METHODS.values()].flatMap((m) => {
  const paths = splitHexPaths(m.sdk?.hex);
  return paths ? [[m.name, paths] as const] : [];
}));

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
  const paths = HEX_PATHS.get(method);
  if (!paths || result === null || typeof result !== "object") return result;
  const frozen = Object.isFrozen(result);
  const known = frozen ? olderForms.get(result) : undefined;
  if (known !== undefined) return known;
  const out = withRawHex(result, paths);
  if (frozen && out !== result) olderForms.set(result, out);
  return out;
}
