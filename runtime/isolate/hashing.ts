// The SHA-256 of each source file, taken from the bytes the compiler reads (one snapshot:
// what is hashed is what is bundled). host/verify/hash.ts builds the module's hash from these.

import { createHash } from "node:crypto";

/** Bytes of one source file (and of a package.json esbuild's resolver reads): compile.ts checks it before esbuild parses the file. */
export const MAX_SOURCE_FILE_BYTES = 1024 * 1024;

export interface HashedFile {
  /** Relative to the module directory, "/"-separated. */
  path: string;
  /** Hex SHA-256 of the content. */
  sha256: string;
  size: number;
}

export function sha256Hex(data: Uint8Array | string): string {
  return createHash("sha256").update(data).digest("hex");
}

export function hashFile(path: string, bytes: Uint8Array): HashedFile {
  return { path, sha256: sha256Hex(bytes), size: bytes.byteLength };
}
