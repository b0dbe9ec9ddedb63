// Seed inputs for the edges fuzz targets (files from the repository and the examples in the
// docs), and the raw HTTP client the targets behind a server share.

import net from "node:net";
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

/** POST `body` to 127.0.0.1:`port` on a fresh connection with this Authorization; the status and body text. */
export function postRaw(port: number, authorization: string, body: Uint8Array): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    s.on("connect", () => {
      s.write(`POST / HTTP/1.1\r\nHost: x\r\nAuthorization: ${authorization}\r\nConnection: close\r\nContent-Length: ${body.length}\r\n\r\n`);
      s.end(body);
    });
    s.on("data", (d: Buffer) => chunks.push(d));
    s.on("error", reject);
    s.on("close", () => {
      const text = Buffer.concat(chunks).toString("utf8");
      const m = /^HTTP\/1\.1 (\d{3}) /.exec(text);
      if (!m) return reject(new Error(`no HTTP answer: ${JSON.stringify(text.slice(0, 200))}`));
      resolve({ status: Number(m[1]), text: text.slice(text.indexOf("\r\n\r\n") + 4) });
    });
  });
}
