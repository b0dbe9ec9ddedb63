// The canonical form of a manifest: what maintainers sign (docs/signing.md).
//
//   data     = module.toml as TOML data (any TOML parser gives the same tree)
//   unsigned = data without its top-level "signatures" table (everything else stays, including
//              [binary] hash, so one signature covers the manifest and the code)
//   message  = "modhost-manifest-v1\n" || JCS(unsigned)          (UTF-8)
//   digest   = SHA-256(message)                                   (32 bytes)
//   signature: BIP340 Schnorr over the 32-byte digest (or ECDSA over the same digest, no
//              further hashing, low S)
//
// JCS is RFC 8785: object keys sorted by UTF-16 code units, no whitespace, strings and
// numbers as ECMAScript's JSON.stringify writes them. TOML has values JSON has not: dates and
// times, and inf/nan floats. A manifest holding one cannot be signed (quote it as a string).
// Integers and floats are both numbers (1 and 1.0 are the same).

import { ModhostError } from "../errors.ts";
import { isTable } from "../toml.ts";
import { sha256Bytes } from "./hash.ts";

const MANIFEST_DOMAIN = "modhost-manifest-v1\n";

/** RFC 8785 canonical JSON of TOML data. Throws on values JSON cannot hold. */
export function canonicalJson(value: unknown, at = ""): string {
  if (value === null) return "null";
  switch (typeof value) {
    case "string":
      return JSON.stringify(value);
    case "boolean":
      return value ? "true" : "false";
    case "number":
      if (!Number.isFinite(value)) throw unsignable(at, `${value} (inf and nan have no JSON form)`);
      return JSON.stringify(value);
    case "bigint":
      return value.toString();
    default:
      break;
  }
  if (Array.isArray(value)) return `[${value.map((v, i) => canonicalJson(v, `${at}[${i}]`)).join(",")}]`;
  if (value instanceof Date) throw unsignable(at, "a TOML date/time");
  if (isTable(value) || (typeof value === "object" && Object.getPrototypeOf(value) === null)) {
    const obj = value as Record<string, unknown>;
    const keys = Object.keys(obj).filter((k) => obj[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k], at ? `${at}.${k}` : k)}`).join(",")}}`;
  }
  throw unsignable(at, typeof value);
}

function unsignable(at: string, what: string): ModhostError {
  return new ModhostError("unsignable", `the manifest value at ${at || "(top)"} is ${what}, which the signed form cannot hold`, "write it as a string (quoted) instead");
}

/** The manifest data that signatures cover: all of it but the top-level "signatures" table. */
function unsignedManifest(data: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(data)) if (k !== "signatures") out[k] = v;
  return out;
}

/** The exact bytes that are hashed and signed. */
export function manifestMessage(data: Record<string, unknown>): Uint8Array {
  return new TextEncoder().encode(MANIFEST_DOMAIN + canonicalJson(unsignedManifest(data)));
}

/** SHA-256 of manifestMessage: the 32 bytes a maintainer signs. */
export function manifestDigest(data: Record<string, unknown>): Uint8Array {
  return sha256Bytes(manifestMessage(data));
}
