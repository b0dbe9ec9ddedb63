// TOML files the tests build.

import { writeFile } from "node:fs/promises";
import { MAX_TOML_BYTES } from "../../host/toml.ts";

/**
 * Writes a modhost.toml of MAX_TOML_BYTES (at most) whose [host] table holds only keys it does
 * not know (`k0 = 0`, `k1 = 1`, ...: ~71,000 of them), each one a problem of the file; returns
 * how many.
 */
export async function writeUnknownKeysToml(file: string): Promise<number> {
  const lines = ["[host]"];
  let size = 7;
  for (let i = 0; size + 16 < MAX_TOML_BYTES; i++) {
    lines.push(`k${i} = ${i}`);
    size += lines.at(-1)!.length + 1;
  }
  await writeFile(file, `${lines.join("\n")}\n`);
  return lines.length - 1;
}
