// Fuzz target: module.toml through loadManifest. The only error allowed is ConfigError with
// messages; syntax errors are located.

import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { loadManifest } from "../host/manifest.ts";
import type { EdgesTarget } from "./edges-driver.ts";
import { checkConfigError } from "./config-toml.ts";
import { codeBlocks, filesNamed } from "./edges-seeds.ts";

let dir = "";
let file = "";

const target: EdgesTarget = {
  dictionary: ["name = ", "version = ", "entry_point = ", "runtime = ", "capabilities = [", "[dependencies]", "[binary]", "[config]", "[compatibility]", "hash = ", '"1.0.0"', '"^1"', '"network_access=127.0.0.1:80"'],
  async seeds() {
    return [...(await filesNamed(["modules", "test/fixtures", "sdk"], "module.toml")), ...(await codeBlocks("docs/module-guide.md", "toml")), ...(await codeBlocks("docs/signing.md", "toml"))];
  },
  async setup() {
    dir = await mkdtemp(path.join(tmpdir(), "modhost-fuzz-manifest-"));
    file = path.join(dir, "module.toml");
  },
  async teardown() {
    await rm(dir, { recursive: true, force: true });
  },
  async run(input) {
    await writeFile(file, input);
    try {
      await loadManifest(file);
    } catch (err) {
      checkConfigError(err, "loadManifest");
    }
  },
};
export default target;
