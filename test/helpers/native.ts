// Native modules written in TypeScript for Node (test fixtures speaking the protocol, with the
// SDK or by hand), as a host finds them: a module directory with its manifest and the fixture
// bundled into one executable script (sdk/node/bundle.ts), since a native module's sandbox
// holds only its own directory.

import { execFile } from "node:child_process";
import { chmod, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { bundleNodeModule } from "../../sdk/node/bundle.ts";
import { writeModule } from "./host.ts";

/** Each fixture is bundled once per test process. */
const bundles = new Map<string, Promise<string>>();

/**
 * Write `fixture` (a path or file URL of its main .ts) as the native module `name` in
 * `modulesDir`, requesting `capabilities`, with `extraToml` appended to its manifest; returns
 * the module's directory.
 */
export async function writeNodeNative(modulesDir: string, name: string, fixture: string | URL, capabilities: string[] = [], extraToml = ""): Promise<string> {
  const file = typeof fixture === "string" ? fixture : fileURLToPath(fixture);
  const toml = `name = "${name}"\nversion = "0.1.0"\nentry_point = "main.mjs"\nruntime = "native"\ncapabilities = ${JSON.stringify(capabilities)}\n${extraToml}`;
  const dir = await writeModule(modulesDir, name, { toml, files: {} });
  let code = bundles.get(file);
  if (!code) bundles.set(file, (code = bundleNodeModule(file)));
  await writeFile(path.join(dir, "main.mjs"), await code, { mode: 0o755 });
  await chmod(dir, 0o755);
  return dir;
}

/** test/fixtures/hostile/hostile.c: the hostile program the sandbox and kernel-limit tests run. */
const HOSTILE_C = fileURLToPath(new URL("../fixtures/hostile/hostile.c", import.meta.url));

/** Compile hostile.c to `out` (an executable), with the machine's cc. */
export function compileHostile(out: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    execFile("cc", ["-O1", "-o", out, HOSTILE_C], (err, _o, stderr) => (err ? reject(new Error(`cc: ${stderr}`)) : resolve()));
  });
}
