// The host side of the isolate runtime: compile the module, and start an isolate host (a
// child process running ./worker.ts) for it. The worker script is bundled once per host
// process with esbuild, so an isolate host starts as plain JavaScript.

import { createRequire } from "node:module";
import { createHash } from "node:crypto";
import { mkdir, writeFile, access } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";
import { compileModule, type CompiledModule } from "./compile.ts";
import type { SpawnSpec } from "../process.ts";
import type { Limits } from "../../host/config.ts";
import type { ModuleManifest } from "../../host/manifest.ts";

const require = createRequire(import.meta.url);
const WORKER_SOURCE = fileURLToPath(new URL("./worker.ts", import.meta.url));
/** Resolved from here so the bundled worker finds them wherever it is written. */
const NATIVE_PACKAGES = ["isolated-vm", "msgpackr"];

let workerPath: Promise<string> | undefined;

/** Bundle worker.ts into a plain ESM script (once per process). */
export function isolateHostScript(): Promise<string> {
  workerPath ??= (async () => {
    const result = await esbuild.build({
      entryPoints: [WORKER_SOURCE],
      bundle: true,
      write: false,
      format: "esm",
      platform: "node",
      target: "node20",
      logLevel: "silent",
      plugins: [{
        name: "absolute-natives",
        setup(build) {
          build.onResolve({ filter: new RegExp(`^(${NATIVE_PACKAGES.join("|")})$`) }, (args) => ({ path: require.resolve(args.path), external: true }));
        },
      }],
    });
    const code = result.outputFiles[0]!.text;
    const digest = createHash("sha256").update(code).digest("hex").slice(0, 16);
    const dir = path.join(os.tmpdir(), `modhost-${process.getuid?.() ?? "user"}`);
    const file = path.join(dir, `isolate-host-${digest}.mjs`);
    try {
      await access(file);
    } catch {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const tmp = `${file}.${process.pid}.tmp`;
      await writeFile(tmp, code, { mode: 0o600 });
      await import("node:fs/promises").then((fs) => fs.rename(tmp, file));
    }
    return file;
  })();
  return workerPath;
}

export async function compileForIsolate(manifest: ModuleManifest): Promise<CompiledModule> {
  return compileModule(manifest.dir, manifest.entry_point);
}

/** How to start the isolate host for `manifest`, given its compiled bundle on disk. */
export async function isolateSpawnSpec(manifest: ModuleManifest, bundleFile: string, limits: Limits, dataDir: string): Promise<SpawnSpec> {
  const script = await isolateHostScript();
  return {
    command: process.execPath,
    args: [
      "--no-node-snapshot",
      // Room for the isolate's heap (its own limit is enforced inside) plus the host code.
      `--max-old-space-size=${limits.memory_mb + 96}`,
      script,
      "--module-id", manifest.name,
      "--module-version", manifest.version,
      "--data-dir", dataDir,
      "--bundle", bundleFile,
      "--memory-mb", String(limits.memory_mb),
      "--cpu-time-ms", String(limits.cpu_time_ms),
      "--start-timeout-ms", String(limits.start_timeout_ms),
    ],
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", MODULE_ID: manifest.name, MODULE_NAME: manifest.name, DATA_DIR: dataDir },
    cwd: dataDir,
  };
}
