// The registry's static layout, which any HTTP server can serve:
//
//   index.json             what the registry offers (RegistryIndex), with a version number that
//                          only goes up and an expiry time
//   index.sig              detached signatures of index.json by the registry's key(s)
//   blobs/sha256/<hex>     content-addressed files: every module.toml and every file of every
//                          module version, named by the SHA-256 of its bytes
//
// index.sig signs the exact bytes of index.json:
//   digest = SHA-256("modhost-registry-index-v1\n" || bytes of index.json), BIP340 Schnorr.
// The registry's signature says "this registry offers these files"; it is not a maintainer's
// signature. The module's own [signatures] are checked against the operator's trust as well
// (docs/operator-guide.md, "Verified modules and the registry").

import * as v from "valibot";
import { ModhostError } from "../errors.ts";
import { isStrictVersion, MAX_RANGE_CHARS, MODULE_NAME_RE } from "../manifest.ts";
import { sha256Bytes, sha256Hex, checkListedPath } from "../verify/hash.ts";
import { MAX_BINARY_BYTES } from "../verify/module.ts";
import { MAX_MANIFEST_BYTES } from "../toml.ts";
import { signDigest, verifyDigest, xOnlyKey, shortKey, type SecretKey } from "../verify/keys.ts";

export const INDEX_FORMAT = "modhost-registry-index-v1";
const SIGNATURE_FORMAT = "modhost-registry-signature-v1";
const INDEX_DOMAIN = "modhost-registry-index-v1\n";
export const INDEX_FILE = "index.json";
export const SIGNATURE_FILE = "index.sig";
/**
 * Bytes of index.json. Parsing and checking it runs on the caller's loop (the running host's,
 * for discovery) in one piece: 32 MiB of index (62,500 module versions) took 7.1 s at load 10.
 * 8 MiB holds ~16,000 versions.
 */
export const MAX_INDEX_BYTES = 8 * 1024 * 1024;
/** Files of one module version in the index (a TypeScript bundle is built from at most 1,000). */
export const MAX_PACKAGE_FILES = 2000;
/** Bytes of one module version's files together, as the index declares them (checked before any is downloaded). */
export const MAX_PACKAGE_BYTES = 256 * 1024 * 1024;
/**
 * Signatures index.sig may carry. Each one a pinned key made costs a Schnorr verification on
 * the caller's loop (the running host's, for discovery): 4,700 of them, what 1 MiB holds, took
 * 22 s of it (load 12) and made a 179 KB error message. A registry signs with a few keys.
 */
export const MAX_INDEX_SIGNATURES = 16;

export function blobPath(hex: string): string {
  return `blobs/sha256/${hex}`;
}

const Hex64 = v.pipe(v.string(), v.regex(/^[0-9a-f]{64}$/, "expected 64 lowercase hex characters"));
const Size = v.pipe(v.number(), v.integer(), v.minValue(0));
const FileSize = v.pipe(Size, v.maxValue(MAX_BINARY_BYTES, `larger than the ${MAX_BINARY_BYTES} bytes a module's file may have (MAX_BINARY_BYTES)`));
const FileEntry = v.strictObject({
  path: v.pipe(v.string(), v.check((p) => {
    try {
      checkListedPath(p);
      return p !== "module.toml";
    } catch {
      return false;
    }
  }, "not a safe relative path")),
  sha256: Hex64,
  size: FileSize,
  executable: v.optional(v.boolean()),
});
const VersionEntry = v.pipe(v.strictObject({
  runtime: v.picklist(["isolate", "native"]),
  description: v.optional(v.string()),
  /** The module hash ([binary] hash). */
  hash: v.pipe(v.string(), v.regex(/^sha256:[0-9a-f]{64}$/)),
  manifest: v.strictObject({ sha256: Hex64, size: v.pipe(Size, v.maxValue(MAX_MANIFEST_BYTES, `larger than the ${MAX_MANIFEST_BYTES} bytes a module.toml may have (MAX_MANIFEST_BYTES)`)) }),
  files: v.pipe(v.array(FileEntry), v.maxLength(MAX_PACKAGE_FILES, `more than the ${MAX_PACKAGE_FILES} files a module version may have (MAX_PACKAGE_FILES)`)),
  capabilities: v.array(v.string()),
  dependencies: v.record(v.string(), v.pipe(v.string(), v.maxLength(MAX_RANGE_CHARS, `a dependency range longer than the ${MAX_RANGE_CHARS} characters a range may have (MAX_RANGE_CHARS)`))),
  /** x-only keys of valid maintainer signatures at build time (informational). */
  signers: v.array(Hex64),
  published: v.string(),
}), v.check((e) => e.files.reduce((n, f) => n + f.size, 0) <= MAX_PACKAGE_BYTES, `its files are more than the ${MAX_PACKAGE_BYTES} bytes a module version may have together (MAX_PACKAGE_BYTES)`));
const ModuleEntry = v.strictObject({
  versions: v.record(v.pipe(v.string(), v.check(isStrictVersion, "not a semantic version")), VersionEntry),
});
const IndexSchema = v.strictObject({
  format: v.literal(INDEX_FORMAT),
  version: v.pipe(v.number(), v.integer(), v.minValue(1)),
  generated: v.pipe(v.string(), v.isoTimestamp()),
  expires: v.pipe(v.string(), v.isoTimestamp()),
  modules: v.record(v.pipe(v.string(), v.regex(MODULE_NAME_RE)), ModuleEntry),
});
const SignatureSchema = v.strictObject({
  format: v.literal(SIGNATURE_FORMAT),
  index_sha256: Hex64,
  signatures: v.array(v.strictObject({ key: Hex64, signature: v.pipe(v.string(), v.regex(/^[0-9a-f]{128}$/)) })),
});

export type FileEntry = v.InferOutput<typeof FileEntry>;
export type VersionEntry = v.InferOutput<typeof VersionEntry>;
export type RegistryIndex = v.InferOutput<typeof IndexSchema>;
export type IndexSignatures = v.InferOutput<typeof SignatureSchema>;

function problems(issues: v.BaseIssue<unknown>[]): string {
  return issues.slice(0, 5).map((i) => `${v.getDotPath(i) ?? "(top)"}: ${i.message}`).join("; ");
}

/** Parse and shape-check index.json bytes. */
export function parseIndex(bytes: Uint8Array, where: string): RegistryIndex {
  let data: unknown;
  try {
    data = JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch (err) {
    throw new ModhostError("registry_invalid", `the registry index from ${where} is not JSON: ${(err as Error).message}`);
  }
  const r = v.safeParse(IndexSchema, data);
  if (!r.success) throw new ModhostError("registry_invalid", `the registry index from ${where} is malformed: ${problems(r.issues)}`, "the registry is broken or not a modhost registry; tell its operator");
  return r.output;
}

export function parseSignatures(bytes: Uint8Array, where: string): IndexSignatures {
  let data: unknown;
  try {
    data = JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch (err) {
    throw new ModhostError("registry_invalid", `the index signature file from ${where} is not JSON: ${(err as Error).message}`);
  }
  const count = (data as { signatures?: unknown } | null)?.signatures;
  if (Array.isArray(count) && count.length > MAX_INDEX_SIGNATURES) {
    throw new ModhostError("registry_invalid", `the index signature file from ${where} carries ${count.length} signatures, more than the ${MAX_INDEX_SIGNATURES} allowed (MAX_INDEX_SIGNATURES)`, "the registry is broken or hostile; tell its operator (a registry is signed by a few keys)");
  }
  const r = v.safeParse(SignatureSchema, data);
  if (!r.success) throw new ModhostError("registry_invalid", `the index signature file from ${where} is malformed: ${problems(r.issues)}`);
  return r.output;
}

function indexDigest(indexBytes: Uint8Array): Uint8Array {
  return sha256Bytes(Buffer.concat([Buffer.from(INDEX_DOMAIN, "utf8"), Buffer.from(indexBytes)]));
}

export function signIndex(indexBytes: Uint8Array, keys: readonly SecretKey[]): IndexSignatures {
  const digest = indexDigest(indexBytes);
  return {
    format: SIGNATURE_FORMAT,
    index_sha256: sha256Hex(indexBytes),
    signatures: keys.map((k) => ({ key: k.publicKey, signature: signDigest(digest, k) })),
  };
}

/**
 * Check index.sig against the operator's registry keys: at least `threshold` distinct pinned
 * keys with a valid signature over these exact index bytes. Throws with what failed.
 */
export function verifyIndexSignatures(indexBytes: Uint8Array, sigs: IndexSignatures, trusted: readonly string[], threshold: number, where: string): void {
  const digest = indexDigest(indexBytes);
  const pinned = new Set(trusted.map((k) => xOnlyKey(k) ?? k));
  const good = new Set<string>();
  const seen: string[] = [];
  let tampered = false;
  // parseSignatures bounds how many there are (MAX_INDEX_SIGNATURES): each is verified once.
  for (const s of sigs.signatures.slice(0, MAX_INDEX_SIGNATURES)) {
    const valid = verifyDigest(digest, s.signature, s.key, "schnorr");
    const isTrusted = pinned.has(s.key);
    seen.push(`${shortKey(s.key)} (${valid ? "valid" : "INVALID"}, ${isTrusted ? "trusted" : "not trusted"})`);
    if (valid && isTrusted) good.add(s.key);
    if (!valid && isTrusted) tampered = true;
  }
  if (good.size >= threshold) return;
  throw new ModhostError(
    "registry_signature",
    `the registry index from ${where} is not signed by the registry's keys: ${good.size} of ${threshold} required valid signatures from [registry] keys; signed by: ${seen.join(", ") || "nobody"}; trusted: ${[...pinned].map(shortKey).join(", ")}`,
    tampered
      ? "index.json was changed after it was signed (or the download was corrupted): do not use this registry until its operator re-signs it"
      : "check [registry] url and keys in modhost.toml: the keys must be the ones the registry operator published; if the registry changed its key, verify the new key out of band before pinning it",
  );
}
