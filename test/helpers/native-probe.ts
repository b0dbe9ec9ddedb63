// Builds the native probe module of test/catalogue.test.ts: test/fixtures/native-probe/main.ts
// and everything it imports, bundled into one executable script by the Node SDK's
// bundleNodeModule (sdk/node/bundle.ts), as a Node-based native module is packaged.

import { chmod, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { bundleNodeModule } from "../../sdk/node/bundle.ts";
import { writeModule, type InlineModule } from "./host.ts";

const MAIN = fileURLToPath(new URL("../fixtures/native-probe/main.ts", import.meta.url));
/** The entry point in the module directory; .mjs so node reads it as ESM, hence runtime = "native". */
export const NATIVE_PROBE_FILE = "probe.mjs";

let bundled: Promise<string> | undefined;

/** The probe as one script (built once per process). */
export function nativeProbeCode(): Promise<string> {
  bundled ??= bundleNodeModule(MAIN);
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
