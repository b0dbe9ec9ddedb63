// Builds the native probe module of test/catalogue.test.ts: test/fixtures/native-probe/main.ts
// and everything it imports (the SDK's ModuleClient, the protocol code, msgpackr) bundled with
// esbuild into ONE executable ESM script with a shebang. A sandboxed native module sees only
// the system directories and its own directory, so it cannot import from the repository's
// node_modules; the bundle needs nothing but `node` on the PATH.

import { chmod, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";
import { writeModule, type InlineModule } from "./host.ts";

const MAIN = fileURLToPath(new URL("../fixtures/native-probe/main.ts", import.meta.url));
/** The entry point in the module directory; .mjs so node reads it as ESM, hence runtime = "native". */
export const NATIVE_PROBE_FILE = "probe.mjs";

let bundled: Promise<string> | undefined;

/** The probe as one script (built once per process). */
export function nativeProbeCode(): Promise<string> {
  bundled ??= esbuild.build({
    entryPoints: [MAIN],
    bundle: true,
    write: false,
    format: "esm",
    platform: "node",
    target: "node20",
    logLevel: "silent",
    banner: { js: "#!/usr/bin/env node" },
    // msgpackr's optional native accelerator: its require fails inside a try and msgpackr
    // carries on in plain JavaScript.
    external: ["msgpackr-extract"],
  }).then((r) => r.outputFiles[0]!.text);
  return bundled;
}

/** module.toml of a native probe requesting `capabilities`. */
export function nativeProbeManifest(name: string, capabilities: string[]): string {
  return [
    `name = "${name}"`,
    `version = "0.1.0"`,
    `entry_point = "${NATIVE_PROBE_FILE}"`,
    `runtime = "native"`,
    `description = "catalogue probe (native)"`,
    `capabilities = [${capabilities.map((c) => JSON.stringify(c)).join(", ")}]`,
    "",
  ].join("\n");
}

/** Write a native probe module into `modulesDir`; the script is made executable (0755). */
export async function writeNativeProbe(modulesDir: string, name: string, capabilities: string[]): Promise<string> {
  const mod: InlineModule = { toml: nativeProbeManifest(name, capabilities), files: {} };
  const dir = await writeModule(modulesDir, name, mod);
  const file = path.join(dir, NATIVE_PROBE_FILE);
  await writeFile(file, await nativeProbeCode(), { mode: 0o755 });
  await chmod(file, 0o755);
  await chmod(dir, 0o755);
  return dir;
}
