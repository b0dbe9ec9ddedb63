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

/** Linux's MAX_ARG_STRLEN: one environment entry (NAME=value and its NUL) holds at most this many bytes. */
export const MAX_ENV_ENTRY_BYTES = 128 * 1024;
/** What all MODULE_CONFIG_ entries may take together (the kernel's whole limit is ~1/4 of the stack rlimit). */
export const MAX_CONFIG_ENV_BYTES = 1024 * 1024;

/**
 * MODULE_CONFIG_<KEY> for every config entry; tables and arrays as JSON. An entry the kernel
 * would refuse (spawn's bare E2BIG) is refused here, naming the key and the limit.
 */
function configEnv(module: string, config: Readonly<Record<string, unknown>>): Record<string, string> {
  const env: Record<string, string> = {};
  let total = 0;
  for (const [key, value] of Object.entries(config)) {
    const name = `MODULE_CONFIG_${key.toUpperCase().replace(/[^A-Z0-9_]/g, "_")}`;
    const text = typeof value === "string" ? value : JSON.stringify(value);
    const bytes = Buffer.byteLength(name) + 1 + Buffer.byteLength(text) + 1;
    total += bytes;
    if (bytes > MAX_ENV_ENTRY_BYTES || total > MAX_CONFIG_ENV_BYTES) {
      const what = bytes > MAX_ENV_ENTRY_BYTES ? `${name} is ${bytes} bytes, over the ${MAX_ENV_ENTRY_BYTES} bytes one environment entry may hold` : `its MODULE_CONFIG_ entries take ${total} bytes with ${name}, over ${MAX_CONFIG_ENV_BYTES} in all`;
      throw new Error(`the config of native module ${module} cannot be passed in its environment: ${what}; keep large data in a file the module reads and put its path in [modules.${module}]`);
    }
    env[name] = text;
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
      ...configEnv(manifest.name, config),
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
