// Compiling a TypeScript module for an isolate: esbuild bundles the entry point and the
// module's own relative imports into one script. Anything else is refused with a clear error:
// `node:` built-ins and bare package names do not exist inside an isolate (a module reaches
// the outside world only through the capabilities in `ctx`), and imports may not leave the
// module's directory.

import path from "node:path";
import { createHash } from "node:crypto";
import { readFile, realpath } from "node:fs/promises";
import { builtinModules } from "node:module";
import * as esbuild from "esbuild";
import { hashFile, type HashedFile } from "./hashing.ts";
import { bundleCache, type BundleCache } from "./bundle-cache.ts";

export interface CompiledModule {
  /** The script that runs in the isolate (an IIFE assigning the module's exports to a global). */
  code: string;
  /** SHA-256 (hex) of `code`: exactly what runs. */
  sha256: string;
  /** Source files that went into the bundle, relative to the module directory, sorted. */
  files: string[];
  /**
   * The same files with the SHA-256 of the bytes the bundle was built from: each file is read
   * once and esbuild compiles that snapshot, so these hashes describe exactly what runs
   * (host/verify/hash.ts turns them into the module's hash).
   */
  sources: HashedFile[];
}

export class CompileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CompileError";
  }
}

/** The global the bundle assigns the module's exports to. */
const EXPORTS_GLOBAL = "__modhost_exports";

const BUILTINS = new Set(builtinModules);

/**
 * esbuild's options for a module bundle, but the entry point, the directory and the plugins.
 * Part of the bundle cache's key (bundle-cache.ts), with esbuild's version.
 */
const BUILD_OPTIONS = {
  bundle: true,
  write: false,
  metafile: true,
  format: "iife",
  globalName: EXPORTS_GLOBAL,
  platform: "neutral",
  target: "es2022",
  logLevel: "silent",
  // Inline, with the sources: stack traces are mapped back to the author's files
  // (./sourcemap.ts) and the inspector shows them. Paths in it are relative to the module
  // directory (absWorkingDir), never the host's. The isolate host strips the comment before
  // running the bundle unless the inspector is on.
  sourcemap: "inline",
  sourcesContent: true,
  legalComments: "none",
  // A fixed TypeScript configuration instead of whatever tsconfig.json happens to sit in a
  // parent directory of the module: the same module compiles to the same bundle (and
  // sha256) wherever it is installed. ES modules are strict code, so the bundle is too
  // (without this, esbuild's iife is sloppy unless a parent tsconfig says "strict").
  tsconfigRaw: { compilerOptions: { strict: true, alwaysStrict: true } },
} as const satisfies esbuild.BuildOptions;

export interface CompileOptions {
  /** Where bundles are kept between compiles (default: the process's, bundle-cache.ts); null: none. */
  cache?: BundleCache | null;
}

/**
 * Bundle the module in `moduleDir` from `entryPoint`. A bundle built before from the same
 * sources, under the same directory listing, is taken from the cache (bundle-cache.ts says
 * why that is exactly what esbuild would build now); its sources are read and hashed again.
 */
export async function compileModule(moduleDir: string, entryPoint: string, options: CompileOptions = {}): Promise<CompiledModule> {
  const root = await realpath(moduleDir);
  const entry = path.resolve(root, entryPoint);
  const cache = options.cache === undefined ? bundleCache : options.cache;
  const key = cache ? await cache.keyFor(root, entry, [esbuild.version, BUILD_OPTIONS]) : undefined;
  if (cache && key) {
    const hit = await cache.get(key, root);
    if (hit) return { code: hit.code, sha256: hit.sha256, files: hit.files, sources: hit.sources };
  }
  const compiled = await build(root, entry);
  // Kept only if the directory listing did not change while esbuild ran: the bundle must be
  // what that listing resolves to.
  if (cache && key && (await cache.keyFor(root, entry, [esbuild.version, BUILD_OPTIONS])) === key) cache.put(key, compiled);
  return compiled;
}

async function build(root: string, entry: string): Promise<CompiledModule> {
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
  // Every file esbuild loads is read here, once; the bundle is built from these bytes and
  // their hashes are the module's identity (no window between hashing and bundling).
  const sources = new Map<string, HashedFile>();
  const snapshot: esbuild.Plugin = {
    name: "modhost-snapshot",
    setup(build) {
      build.onLoad({ filter: /.*/, namespace: "file" }, async (args) => {
        const rel = path.relative(root, args.path).split(path.sep).join("/");
        if (rel === "" || rel.startsWith("../") || rel === ".." || path.isAbsolute(rel)) {
          return { errors: [{ text: `${args.path} is outside the module directory` }] };
        }
        const bytes = await readFile(args.path);
        sources.set(rel, hashFile(rel, bytes));
        return { contents: bytes, loader: "default" };
      });
    },
  };
  let result: esbuild.BuildResult<{ write: false; metafile: true }>;
  try {
    result = await esbuild.build({
      ...BUILD_OPTIONS,
      entryPoints: [entry],
      absWorkingDir: root,
      plugins: [refuse, snapshot],
    });
  } catch (err) {
    const failure = err as esbuild.BuildFailure;
    // esbuild names files relative to the module directory ("index.ts"); name them the way
    // config errors do, so the line says which module's file it is and an editor can open it.
    const where = (file: string) => displayPath(path.resolve(root, file));
    const lines = (failure.errors ?? []).slice(0, MAX_REPORTED_ERRORS).map((e) => (e.location ? `${where(e.location.file)}:${e.location.line}:${e.location.column + 1}: ${e.text}\n${codeFrame(e.location)}` : e.text));
    const more = (failure.errors?.length ?? 0) - MAX_REPORTED_ERRORS;
    if (more > 0) lines.push(`(${more} more error(s) not shown)`);
    throw new CompileError(lines.length ? lines.join("\n") : (err as Error).message);
  }
  const code = result.outputFiles[0]!.text;
  return {
    code,
    sha256: createHash("sha256").update(code).digest("hex"),
    files: Object.keys(result.metafile.inputs).sort(),
    sources: [...sources.values()],
  };
}

/** At most this many compile errors are shown (esbuild stops at a few anyway). */
const MAX_REPORTED_ERRORS = 10;
/** A code frame shows at most this much of the offending line, around the column. */
const FRAME_WIDTH = 120;

/**
 * A short code frame under a compile error:
 *     3 | let a b = 1;
 *       |       ^
 * The line is cut to FRAME_WIDTH characters around the column (a minified line can be huge).
 */
function codeFrame(loc: { line: number; column: number; length?: number; lineText: string }): string {
  let text = loc.lineText.replace(/\t/g, " ");
  let column = loc.column;
  if (text.length > FRAME_WIDTH) {
    const start = Math.max(0, Math.min(column - FRAME_WIDTH / 2, text.length - FRAME_WIDTH));
    text = text.slice(start, start + FRAME_WIDTH);
    column -= start;
  }
  const gutter = String(loc.line);
  const marks = "^".repeat(Math.max(1, Math.min(loc.length ?? 1, text.length - column)));
  return `    ${gutter} | ${text}\n    ${" ".repeat(gutter.length)} | ${" ".repeat(Math.max(0, column))}${marks}`;
}

/** Under the working directory: relative to it; anywhere else: absolute (as host/errors.ts does). */
function displayPath(file: string): string {
  const rel = path.relative(process.cwd(), file);
  return rel !== "" && !rel.startsWith("..") && !path.isAbsolute(rel) ? rel : file;
}
