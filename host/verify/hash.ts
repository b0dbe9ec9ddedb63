// Hashing what runs. Two forms, both "sha256:<64 lowercase hex>" as [binary] hash writes them:
//
//   native module:     SHA-256 of the binary's bytes (what `sha256sum BINARY` prints).
//   TypeScript module: SHA-256 of the listing of the source files the bundle is built from,
//                      one line per file, sorted by path (byte order of the UTF-8 path):
//                          <sha256 hex of the file><space><space><path relative to the module dir>\n
//                      which is exactly the output of `sha256sum` for those files in that
//                      order, so `sha256sum index.ts summary.ts | sha256sum` reproduces it.
//
// The file list is what esbuild's bundle includes (runtime/isolate/compile.ts reads each file
// once, hashes that snapshot and bundles from it), so the hash is stable across machines and
// esbuild versions: it depends on the files' paths and contents only. docs/signing.md.

import { createHash } from "node:crypto";
import { ModhostError } from "../errors.ts";

// A hashed file and its hash are made where the sources are read (the TypeScript compiler in
// runtime/isolate/hashing.ts); verification builds on them.
import { hashFile, sha256Hex, type HashedFile } from "../../runtime/isolate/hashing.ts";
export { hashFile, sha256Hex, type HashedFile };

export function sha256Bytes(data: Uint8Array | string): Uint8Array {
  return new Uint8Array(createHash("sha256").update(data).digest());
}


/** A path the listing can hold unambiguously: relative, "/"-separated, no "." or ".." parts, no control characters or backslashes. */
export function checkListedPath(p: string): void {
  const bad = p === "" || p.startsWith("/") || /[\x00-\x1f\x7f\\]/.test(p) || p.split("/").some((s) => s === "" || s === "." || s === "..");
  if (bad) {
    throw new ModhostError("bad_path", `the file name ${JSON.stringify(p)} cannot be hashed`, "use relative paths without control characters, backslashes, \".\" or \"..\" parts");
  }
}

/** Sort by the UTF-8 bytes of the path (as `LC_ALL=C sort` does). */
function sortByPath<T extends { path: string }>(files: readonly T[]): T[] {
  return [...files].sort((a, b) => Buffer.compare(Buffer.from(a.path, "utf8"), Buffer.from(b.path, "utf8")));
}

/** The listing a TypeScript module's hash is taken over (see the file comment). */
export function sourceListing(files: readonly HashedFile[]): string {
  const sorted = sortByPath(files);
  for (let i = 0; i < sorted.length; i++) {
    checkListedPath(sorted[i]!.path);
    if (i > 0 && sorted[i]!.path === sorted[i - 1]!.path) throw new ModhostError("bad_path", `the file ${sorted[i]!.path} is listed twice`);
  }
  return sorted.map((f) => `${f.sha256}  ${f.path}\n`).join("");
}

/** "sha256:<hex>" of a TypeScript module's sources. */
export function sourceTreeHash(files: readonly HashedFile[]): string {
  return `sha256:${sha256Hex(sourceListing(files))}`;
}

/** "sha256:0123456789ab…" for messages. */
export function shortHash(hash: string, chars = 12): string {
  return hash.length > 7 + chars ? `${hash.slice(0, 7 + chars)}…` : hash;
}
