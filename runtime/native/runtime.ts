// The native runtime: a module binary (Rust, or any language) runs as its own process and
// speaks the module protocol on fd 3. This file says how to start it: the arguments and
// environment the seeds promise (--module-id, --data-dir, MODULE_ID, MODULE_NAME, DATA_DIR,
// MODULE_CONFIG_<KEY>) and nothing else of the host's environment. nativeSpawnSpec is the bare
// form; sandboxedNativeSpawnSpec wraps it in the sandbox (runtime/sandbox).

import path from "node:path";
import type { SpawnSpec } from "../process.ts";
import type { RuntimeManifest } from "../types.ts";
import type { EffectiveGrants } from "../../capabilities/grants.ts";
import { moduleUid, sandboxSpawnSpec, type CgroupLimits, type SandboxedSpawn, type SandboxLimits, type SandboxMode } from "../sandbox/index.ts";

/** MODULE_CONFIG_<KEY> for every config entry; tables and arrays as JSON. */
function configEnv(config: Readonly<Record<string, unknown>>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(config)) {
    const name = `MODULE_CONFIG_${key.toUpperCase().replace(/[^A-Z0-9_]/g, "_")}`;
    env[name] = typeof value === "string" ? value : JSON.stringify(value);
  }
  return env;
}

/** `binary`: what to execute instead of the entry point (the manager's verified private copy, host/verify/module.ts). */
export function nativeSpawnSpec(manifest: RuntimeManifest, dataDir: string, config: Readonly<Record<string, unknown>>, binary = path.resolve(manifest.dir, manifest.entry_point)): SpawnSpec {
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

export interface NativeSandboxOptions {
  grants: EffectiveGrants;
  limits: SandboxLimits;
  /** Default "auto" (config: [modules] native_sandbox). */
  mode?: SandboxMode;
  /** The host passes the uid its UidTable allocated. Default: moduleUid(manifest.name); the gid is the same number. */
  uid?: number;
  /** Limits of the module's cgroup (all its processes together); none: no cgroup. */
  cgroup?: CgroupLimits;
  /**
   * The verified copy of the binary to execute (host/verify/module.ts materialiseBinary).
   * Its directory, which holds nothing else, is then the module directory the sandbox binds
   * read-only, instead of the manifest's directory.
   */
  binary?: string;
}

/** nativeSpawnSpec inside the sandbox: network only with network_access, the module's own uid. */
export function sandboxedNativeSpawnSpec(
  manifest: RuntimeManifest,
  dataDir: string,
  config: Readonly<Record<string, unknown>>,
  opts: NativeSandboxOptions,
): Promise<SandboxedSpawn> {
  const spec = nativeSpawnSpec(manifest, path.resolve(dataDir), config, opts.binary && path.resolve(opts.binary));
  const uid = opts.uid ?? moduleUid(manifest.name);
  return sandboxSpawnSpec(spec, {
    dataDir: path.resolve(dataDir),
    moduleDir: opts.binary ? path.dirname(path.resolve(opts.binary)) : path.resolve(manifest.dir),
    binary: spec.command,
    network: opts.grants.has("network_access"),
    limits: opts.limits,
    uid,
    gid: uid,
    mode: opts.mode ?? "auto",
    ...(opts.cgroup ? { cgroup: { name: manifest.name, limits: opts.cgroup } } : {}),
  });
}
