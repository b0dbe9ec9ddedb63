// Fuzz target: modhost.toml through loadConfig (smol-toml, then the schema checks with located
// problems). The only error allowed is ConfigError, each problem with a message; a TOML syntax
// error carries its line and column.

import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { loadConfig } from "../host/config.ts";
import { ConfigError } from "../host/errors.ts";
import type { EdgesTarget } from "./edges-driver.ts";
import { codeBlocks, filesNamed } from "./edges-seeds.ts";

let dir = "";
let file = "";

export function checkConfigError(err: unknown, what: string): void {
  if (!(err instanceof ConfigError)) throw new Error(`${what} threw ${(err as Error)?.name ?? typeof err} instead of ConfigError: ${(err as Error)?.stack ?? String(err)}`);
  if (err.problems.length === 0 || err.problems.some((p) => typeof p.message !== "string" || p.message === "")) throw new Error(`${what}: a ConfigError without a problem message`);
  for (const p of err.problems) {
    if (p.message.startsWith("TOML syntax error") && (p.line === undefined || p.column === undefined)) throw new Error(`${what}: a syntax error without a location: ${p.message}`);
  }
}

const target: EdgesTarget = {
  dictionary: ["[rpc]", "[modules]", "[modules.grants.x]", "[[a]]", "[trust]", "[registry]", "allow = [", "max_connections = ", "port = ", "= ", '"', "#", "\n[", "]", "{ a = 1 }", "0x7f", "1979-05-27T07:32:00Z"],
  async seeds() {
    return [...(await filesNamed(["."], "modhost.toml")), ...(await codeBlocks("docs/operator-guide.md", "toml")), ...(await codeBlocks("docs/signing.md", "toml")), Buffer.from("")];
  },
  async setup() {
    dir = await mkdtemp(path.join(tmpdir(), "modhost-fuzz-config-"));
    file = path.join(dir, "modhost.toml");
  },
  async teardown() {
    await rm(dir, { recursive: true, force: true });
  },
  async run(input) {
    await writeFile(file, input);
    try {
      await loadConfig(file);
    } catch (err) {
      checkConfigError(err, "loadConfig");
    }
  },
};
export default target;
