// Modules the benchmarks build at run time, in a modules directory of their own:
//  - Node-based native modules: a fixture written on the SDK's ModuleClient (bench/fixtures/*.ts)
//    bundled into ONE executable ESM script (sdk/node/bundle.ts).
//    A sandboxed native module sees only the system directories and its own directory, so it
//    cannot import from the repository's node_modules; the bundle needs only `node` on the PATH.
//  - copies of a TypeScript fixture module under other names (several modules, one source).

import { chmod, copyFile, mkdir, readFile, readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { bundleNodeModule } from "../sdk/node/bundle.ts";
import { MODULES_DIR } from "./common.ts";

const bundles = new Map<string, Promise<string>>();

/** `fixture` (a file name in bench/fixtures) and what it imports, as one script (built once per process). */
export function bundleScript(fixture: string): Promise<string> {
  let code = bundles.get(fixture);
  if (!code) {
    code = bundleNodeModule(fileURLToPath(new URL(`./fixtures/${fixture}`, import.meta.url)));
    bundles.set(fixture, code);
  }
  return code;
}

/** The bundled entry point's file name; .mjs so node reads it as ESM. */
export const NATIVE_ENTRY = "main.mjs";

/** Write native module `name` running the bundled `fixture` into `modulesDir`; returns its directory. */
export async function writeNativeModule(modulesDir: string, name: string, fixture: string, capabilities: string[] = []): Promise<string> {
  const dir = path.join(modulesDir, name);
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, "module.toml"), [
    `name = "${name}"`,
    `version = "1.0.0"`,
    `entry_point = "${NATIVE_ENTRY}"`,
    `runtime = "native"`,
    `description = "Benchmark fixture (native, bundled from bench/fixtures/${fixture})"`,
    `capabilities = [${capabilities.map((c) => JSON.stringify(c)).join(", ")}]`,
    "",
  ].join("\n"));
  const file = path.join(dir, NATIVE_ENTRY);
  await writeFile(file, await bundleScript(fixture));
  // The module's uid (not root) runs it: readable and executable by others.
  await chmod(file, 0o755);
  await chmod(dir, 0o755);
  return dir;
}

/** Copy the fixture module bench/fixtures/modules/`fixture` into `modulesDir` as module `name`. */
export async function copyModule(fixture: string, modulesDir: string, name: string): Promise<string> {
  const from = path.join(MODULES_DIR, fixture);
  const dir = path.join(modulesDir, name);
  await mkdir(dir, { recursive: true });
  for (const file of await readdir(from)) {
    if (file === "module.toml") {
      const toml = await readFile(path.join(from, file), "utf8");
      await writeFile(path.join(dir, file), toml.replace(/^name = ".*"$/m, `name = "${name}"`));
    } else {
      await copyFile(path.join(from, file), path.join(dir, file));
    }
  }
  return dir;
}
