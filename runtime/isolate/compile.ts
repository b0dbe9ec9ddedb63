// Compiling a TypeScript module for an isolate: esbuild bundles the entry point and the
// module's own relative imports into one script. Anything else is refused with a clear error:
// `node:` built-ins and bare package names do not exist inside an isolate (a module reaches
// the outside world only through the capabilities in `ctx`), and imports may not leave the
// module's directory.

import path from "node:path";
import { createHash } from "node:crypto";
import { realpath } from "node:fs/promises";
import { builtinModules } from "node:module";
import * as esbuild from "esbuild";

export interface CompiledModule {
  /** The script that runs in the isolate (an IIFE assigning the module's exports to a global). */
  code: string;
  /** SHA-256 (hex) of `code`: exactly what runs. */
  sha256: string;
  /** Source files that went into the bundle, relative to the module directory, sorted. */
  files: string[];
}

export class CompileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CompileError";
  }
}

/** The global the bundle assigns the module's exports to. */
export const EXPORTS_GLOBAL = "__modhost_exports";

const BUILTINS = new Set(builtinModules);

export async function compileModule(moduleDir: string, entryPoint: string): Promise<CompiledModule> {
  const root = await realpath(moduleDir);
  const entry = path.resolve(root, entryPoint);
  const refuse: esbuild.Plugin = {
    name: "modhost-imports",
    setup(build) {
      build.onResolve({ filter: /.*/ }, async (args) => {
        if (args.kind === "entry-point") return undefined;
        const spec = args.path;
        const where = path.relative(root, args.importer) || args.importer;
        if (spec.startsWith("node:") || BUILTINS.has(spec) || BUILTINS.has(spec.split("/")[0]!)) {
          return { errors: [{ text: `"${spec}" is a Node.js built-in, which does not exist inside an isolate (imported by ${where}); use the capabilities on ctx instead` }] };
        }
        if (!spec.startsWith("./") && !spec.startsWith("../")) {
          return { errors: [{ text: `"${spec}" is not a relative import (imported by ${where}); a module may bundle only its own files: copy what you need into the module directory and import it with "./"` }] };
        }
        const resolved = path.resolve(path.dirname(args.importer), spec);
        let real = resolved;
        try {
          real = await realpath(resolved);
        } catch {
          // Not found as written; esbuild tries extensions next. Still check the directory.
        }
        if (real !== root && !real.startsWith(root + path.sep)) {
          return { errors: [{ text: `"${spec}" (imported by ${where}) is outside the module directory` }] };
        }
        return undefined;
      });
    },
  };
  let result: esbuild.BuildResult<{ write: false; metafile: true }>;
  try {
    result = await esbuild.build({
      entryPoints: [entry],
      absWorkingDir: root,
      bundle: true,
      write: false,
      metafile: true,
      format: "iife",
      globalName: EXPORTS_GLOBAL,
      platform: "neutral",
      target: "es2022",
      logLevel: "silent",
      plugins: [refuse],
      sourcemap: false,
      legalComments: "none",
      // A fixed TypeScript configuration instead of whatever tsconfig.json happens to sit in a
      // parent directory of the module: the same module compiles to the same bundle (and
      // sha256) wherever it is installed. ES modules are strict code, so the bundle is too
      // (without this, esbuild's iife is sloppy unless a parent tsconfig says "strict").
      tsconfigRaw: { compilerOptions: { strict: true, alwaysStrict: true } },
    });
  } catch (err) {
    const failure = err as esbuild.BuildFailure;
    const lines = (failure.errors ?? []).map((e) => (e.location ? `${e.location.file}:${e.location.line}:${e.location.column + 1}: ${e.text}` : e.text));
    throw new CompileError(lines.length ? lines.join("\n") : (err as Error).message);
  }
  const code = result.outputFiles[0]!.text;
  return {
    code,
    sha256: createHash("sha256").update(code).digest("hex"),
    files: Object.keys(result.metafile.inputs).sort(),
  };
}
