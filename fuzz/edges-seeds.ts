// Seed inputs for the edges fuzz targets: files from the repository and the examples in the docs.

import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../", import.meta.url));

/** The ```LANG blocks of a Markdown file under the repository root. */
export async function codeBlocks(file: string, lang: string): Promise<Uint8Array[]> {
  const text = await readFile(path.join(ROOT, file), "utf8");
  const out: Uint8Array[] = [];
  const re = new RegExp("```" + lang + "\\n([\\s\\S]*?)```", "g");
  for (const m of text.matchAll(re)) out.push(Buffer.from(m[1]!));
  return out;
}

/** Files named `name` anywhere under `dirs` (repository-relative), skipping node_modules. */
export async function filesNamed(dirs: string[], name: string): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      if (e.name === "node_modules" || e.name.startsWith(".")) continue;
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.name === name) out.push(await readFile(p));
    }
  };
  for (const d of dirs) await walk(path.join(ROOT, d));
  return out;
}
