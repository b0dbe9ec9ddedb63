// How the isolate host script (runtime/isolate/worker.ts, bundled by esbuild: runtime.ts when the
// host runs from source, scripts/build-dist.mjs for dist/) gets its builtins and packages. It
// runs without a startup snapshot (--no-node-snapshot, which isolated-vm needs), so every
// builtin it loads is compiled at every isolate host's boot, for every TypeScript module start:
//  - builtins (`node:*`) come from process.getBuiltinModule, as CommonJS: an ES import of a
//    builtin makes Node build its ES facade, which reads every export, lazy ones included
//    (node:fs's `promises` loads readline and the REPL history; node:util's, streams,
//    worker_threads, the diff code). (esbuild's interop still reads the descriptors of what it
//    imports, which for node:util loads the same: worker.ts takes parseArgs itself.)
//  - isolated-vm and msgpackr are required by absolute path (resolved here, never bundled).
//  - msgpackr's native string extractor (msgpackr-extract) is loaded without its search: its
//    index asks node-gyp-build-optional-packages for the addon of this platform, which loads
//    detect-libc, which loads node:child_process (and node:dgram and more). The host resolves
//    the addon's file once with that same resolver (same node binary, same machine); the script
//    requires it and puts it in require's cache under msgpackr-extract's entry point before it
//    requires msgpackr, which finds it there. Where the host finds no addon, msgpackr is
//    required as it is (and finds none either).
// Together: 113 builtins at boot instead of 150 (78 for an empty script); test/isolate-natives.

import { createRequire } from "node:module";
import path from "node:path";
import type { Plugin } from "esbuild";

/** Required by absolute path; everything else the isolate host imports is bundled (or a builtin). */
export const NATIVE_PACKAGES = ["isolated-vm", "msgpackr"];

const NAMESPACE = "modhost-isolate-natives";

/** msgpackr-extract's entry point and the addon file it would load, as msgpackr (at `msgpackr`) would find them; undefined when there is none. */
export function msgpackrExtractor(msgpackr: string): { entry: string; addon: string } | undefined {
  try {
    const fromMsgpackr = createRequire(msgpackr);
    const entry = fromMsgpackr.resolve("msgpackr-extract");
    const gypBuild = createRequire(entry)("node-gyp-build-optional-packages") as { path(dir: string): string };
    return { entry, addon: gypBuild.path(path.dirname(entry)) };
  } catch {
    return undefined;
  }
}

/** The module that stands for "msgpackr" in the isolate host script (CommonJS): the extractor primed, then msgpackr. */
export function msgpackrModule(msgpackr: string, extractor = msgpackrExtractor(msgpackr)): string {
  // Not fatal: where the addon cannot be loaded in the sandbox (a path outside the packages it
  // binds, say), msgpackr looks for it itself, as before, and runs without it if that fails too.
  const prime = extractor
    ? [
        `try {`,
        `  const entry = ${JSON.stringify(extractor.entry)};`,
        `  const cached = new Module(entry);`,
        `  cached.filename = entry;`,
        `  cached.exports = load(${JSON.stringify(extractor.addon)});`,
        `  cached.loaded = true;`,
        `  load.cache[entry] = cached;`,
        `} catch {}`,
      ]
    : [];
  return [
    `const { createRequire, Module } = process.getBuiltinModule("node:module");`,
    `const load = createRequire(${JSON.stringify(msgpackr)});`,
    ...prime,
    `module.exports = load(${JSON.stringify(msgpackr)});`,
    "",
  ].join("\n");
}

/**
 * The esbuild plugin for the isolate host script; `require` resolves the packages (from the
 * checkout's node_modules). Every module it makes is CommonJS, which esbuild's interop reads
 * named imports from: an ES import of a builtin (`import { readFileSync } from "node:fs"`)
 * makes Node build its ES facade, which reads every export, lazy ones included: node:fs's
 * `promises` loads readline and the REPL history, node:util's loads the diff and colour code,
 * node:net's more streams (~45 builtins in all, each compiled at boot without a snapshot). A
 * CommonJS package imported by ES import is parsed once more for its export names.
 */
export function isolateHostNatives(require: NodeJS.Require): Plugin {
  return {
    name: "isolate-host-natives",
    setup(build) {
      build.onResolve({ filter: /^node:/ }, (args) => ({ path: args.path, namespace: NAMESPACE }));
      build.onResolve({ filter: /^(isolated-vm|msgpackr)$/ }, (args) => ({ path: require.resolve(args.path), namespace: NAMESPACE }));
      build.onLoad({ filter: /.*/, namespace: NAMESPACE }, (args) => {
        if (args.path.startsWith("node:")) return { contents: `module.exports = process.getBuiltinModule(${JSON.stringify(args.path)});\n`, loader: "js" };
        if (/[\\/]msgpackr[\\/]/.test(args.path)) return { contents: msgpackrModule(args.path), loader: "js" };
        return { contents: `module.exports = process.getBuiltinModule("node:module").createRequire(${JSON.stringify(args.path)})(${JSON.stringify(args.path)});\n`, loader: "js" };
      });
    },
  };
}
