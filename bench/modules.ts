// Modules the benchmarks build at run time, in a modules directory of their own:
//  - Node-based native modules: a fixture written on the SDK's ModuleClient (bench/fixtures/*.ts)
//    bundled into ONE executable ESM script (sdk/node/bundle.ts).
//    A sandboxed native module sees only the system directories and its own directory, so it
//    cannot import from the repository's node_modules; the bundle needs only `node` on the PATH.
//  - copies of a TypeScript fixture module under other names (several modules, one source).
//  - Rust native modules: a fixture crate (bench/fixtures/rust-ready) built once with
//    scripts/build-rust.sh --bench, its binary copied into each module's directory.

import { execFile } from "node:child_process";
import { access, chmod, copyFile, mkdir, readFile, readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { bundleNodeModule } from "../sdk/node/bundle.ts";
import { MODULES_DIR, ROOT } from "./common.ts";

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

/** The release binary of bench/fixtures/rust-ready (connect, ready, wait for the shutdown). */
export const RUST_READY = path.join(ROOT, "bench", "fixtures", "rust-ready", "target", "release", "rust-ready");

let rustBuild: Promise<string | undefined> | undefined;

/**
 * RUST_READY, built with `scripts/build-rust.sh --bench` when it is missing (once per process);
 * undefined, with why in `notes`, when it cannot be built here (no cargo, no crates).
 */
export function rustReadyBinary(notes: string[]): Promise<string | undefined> {
  rustBuild ??= (async () => {
    if (await access(RUST_READY).then(() => true, () => false)) return RUST_READY;
    const built = await new Promise<string | undefined>((resolve) => {
      execFile(path.join(ROOT, "scripts", "build-rust.sh"), ["--bench"], { cwd: ROOT, timeout: 600_000 }, (err, _out, stderr) => {
        resolve(err ? `${err.message.split("\n")[0]}: ${stderr.trim().split("\n").slice(-2).join(" ")}` : undefined);
      });
    });
    if (built !== undefined) {
      notes.push(`no Rust native rows: scripts/build-rust.sh --bench failed (${built})`);
      return undefined;
    }
    return RUST_READY;
  })();
  return rustBuild;
}

/** Write native module `name` running the Rust binary `binary` (a copy) into `modulesDir`; returns its directory. */
export async function writeRustModule(modulesDir: string, name: string, binary: string): Promise<string> {
  const dir = path.join(modulesDir, name);
  await mkdir(dir, { recursive: true });
  const entry = path.basename(binary);
  await writeFile(path.join(dir, "module.toml"), [
    `name = "${name}"`,
    `version = "1.0.0"`,
    `entry_point = "${entry}"`,
    `runtime = "native"`,
    `description = "Benchmark fixture (native, Rust: bench/fixtures/rust-ready)"`,
    `capabilities = []`,
    "",
  ].join("\n"));
  await copyFile(binary, path.join(dir, entry));
  await chmod(path.join(dir, entry), 0o755);
  await chmod(dir, 0o755);
  return dir;
}
