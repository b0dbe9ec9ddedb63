// The native runtime: a module binary (Rust, or any language) runs as its own process and
// speaks the module protocol on fd 3. This file says how to start it: the arguments and
// environment the seeds promise (--module-id, --data-dir, MODULE_ID, MODULE_NAME, DATA_DIR,
// MODULE_CONFIG_<KEY>) and nothing else of the host's environment.

import path from "node:path";
import type { SpawnSpec } from "../process.ts";
import type { ModuleManifest } from "../../host/manifest.ts";

/** MODULE_CONFIG_<KEY> for every config entry; tables and arrays as JSON. */
export function configEnv(config: Readonly<Record<string, unknown>>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(config)) {
    const name = `MODULE_CONFIG_${key.toUpperCase().replace(/[^A-Z0-9_]/g, "_")}`;
    env[name] = typeof value === "string" ? value : JSON.stringify(value);
  }
  return env;
}

export function nativeSpawnSpec(manifest: ModuleManifest, dataDir: string, config: Readonly<Record<string, unknown>>): SpawnSpec {
  const binary = path.resolve(manifest.dir, manifest.entry_point);
  return {
    command: binary,
    args: ["--module-id", manifest.name, "--data-dir", dataDir],
    env: {
      PATH: "/usr/local/bin:/usr/bin:/bin",
      MODULE_ID: manifest.name,
      MODULE_NAME: manifest.name,
      DATA_DIR: dataDir,
      MODHOST_FD: "3",
      ...configEnv(config),
    },
    cwd: dataDir,
  };
}
