#!/usr/bin/env node
// Builds the JavaScript that `modhost` runs in production into dist/ (git-ignored):
//   dist/modhost.mjs       the command line and the host (host/cli.ts and all it imports)
//   dist/isolate-host.mjs  the isolate host script (runtime/isolate/worker.ts), with the isolate
//                          bootstrap (runtime/isolate/in-isolate/, built by runtime/isolate/bootstrap.ts)
//                          written in
//   dist/build.json        what they were built from: every source file with its size and
//                          mtime, and the checkout's path (bin/modhost.js uses dist/ only while
//                          all of it still matches, and falls back to tsx otherwise)
// Packages stay in node_modules (imported at run time, never bundled). Run by `npm run setup`
// and `npm run build`; takes about a second.
import * as esbuild from "esbuild";
import { mkdir, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const dist = path.join(root, "dist");
const require = createRequire(import.meta.url);

// The isolate bootstrap's builder and the isolate host's packages (runtime/isolate/natives.ts:
// isolated-vm and msgpackr by absolute path) are TypeScript, shared with the development path
// (runtime/isolate/runtime.ts): tsx loads them.
const { register } = await import("tsx/esm/api");
const unregister = register();
const { bootstrapDefine, buildBootstrap } = await import("../runtime/isolate/bootstrap.ts");
const { isolateHostNatives } = await import("../runtime/isolate/natives.ts");
const bootstrap = await buildBootstrap(root);
await unregister();

await mkdir(dist, { recursive: true });
const common = { bundle: true, format: "esm", platform: "node", target: "node24", logLevel: "warning", metafile: true, write: false, absWorkingDir: root };
const [cli, worker] = await Promise.all([
  esbuild.build({
    ...common,
    // registry-look.mjs: the worker thread of a registry look (host/registry/look.ts);
    // config-read.mjs: the worker thread that reads modhost.toml at a reload (host/config-off.ts).
    entryPoints: { modhost: "host/cli.ts", "registry-look": "host/registry/look-worker.ts", "config-read": "host/config-worker.ts" },
    packages: "external",
    // Split at host/cli.ts's dynamic imports: `modhost version`, `--help` and the remote commands
    // load a small chunk, not the host (chunks sit next to modhost.mjs: runtime/isolate/runtime.ts
    // finds isolate-host.mjs relative to its own chunk).
    splitting: true,
    outdir: "dist",
    chunkNames: "chunk-[hash]",
    outExtension: { ".js": ".mjs" },
    // runtime/isolate/runtime.ts takes the isolate host from dist/ instead of bundling it.
    define: { __MODHOST_DIST__: "true" },
    // Bundled ESM has no require(); a few dependencies of the host still call it.
    banner: { js: 'import { createRequire as __modhostRequire } from "node:module"; const require = __modhostRequire(import.meta.url);' },
  }),
  esbuild.build({
    ...common,
    entryPoints: ["runtime/isolate/worker.ts"],
    define: bootstrapDefine(bootstrap),
    plugins: [isolateHostNatives(require)],
  }),
]);

// natives.ts shapes the isolate host script from outside the bundle (an esbuild plugin); the
// module it makes for msgpackr is in the metafile under the plugin's namespace, not a file.
const inputs = new Set([...Object.keys(cli.metafile.inputs), ...Object.keys(worker.metafile.inputs), ...bootstrap.inputs, "runtime/isolate/natives.ts"]);
const sources = {};
for (const rel of [...inputs].sort()) {
  if (rel.startsWith("node_modules/") || rel.startsWith("modhost-isolate-natives:")) continue;
  const st = await stat(path.join(root, rel));
  sources[rel] = [st.size, Math.floor(st.mtimeMs)];
}
const write = async (name, text) => {
  const tmp = path.join(dist, `${name}.${process.pid}.tmp`);
  await writeFile(tmp, text);
  await rename(tmp, path.join(dist, name));
};
// Every file is replaced by a rename, so a host running from dist/ meanwhile never finds one
// missing or half-written (the tests rebuild dist/ while others run the built host).
for (const file of cli.outputFiles) await write(path.basename(file.path), file.text);
await write("isolate-host.mjs", worker.outputFiles[0].text);
// Last: bin/modhost.js trusts dist/ only once this names what the files above were built from.
await write("build.json", JSON.stringify({ root, node: process.version, sources }, null, 1) + "\n");
// Then the chunks of an earlier build that this one has not written again go (their names are
// content hashes: the same sources write the same chunks, which were replaced in place above).
const written = new Set(cli.outputFiles.map((f) => path.basename(f.path)));
for (const old of await readdir(dist)) if (/^chunk-.*\.mjs$/.test(old) && !written.has(old)) await rm(path.join(dist, old), { force: true });
console.log(`build: dist/ from ${Object.keys(sources).length} source files`);
