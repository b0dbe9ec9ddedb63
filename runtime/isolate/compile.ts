// Compiling a TypeScript module for an isolate: esbuild bundles the entry point and the
// module's own relative imports into one script. Anything else is refused with a clear error:
// `node:` built-ins and bare package names do not exist inside an isolate (a module reaches
// the outside world only through the capabilities in `ctx`), and imports may not leave the
// module's directory.

import path from "node:path";
import { createHash } from "node:crypto";
import { lstat, realpath } from "node:fs/promises";
import { builtinModules } from "node:module";
import * as esbuild from "esbuild";
import { MAX_SOURCE_FILE_BYTES, type HashedFile } from "./hashing.ts";
import { bundleCache, type BundleCache } from "./bundle-cache.ts";
import { bundlerOverruns, MAX_BUNDLER_RSS_MB, watchBuild } from "./bundler-watch.ts";
import { checkModuleFile, ModuleFileError, readModuleFile, type FileLimit } from "../module-file.ts";

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

// What a module's sources may be: checked as each file is read, before esbuild parses it (a
// 50 MB index.ts took esbuild 49 s and the host's loop a stall of 1.1 s decoding its 175 MB
// bundle, the host's memory +0.6 GB; the shipped modules' sources are 84 KB together).
/** Bytes of all the files one bundle is built from. */
export const MAX_SOURCE_BYTES = 2 * 1024 * 1024;
/** Files one bundle is built from. */
export const MAX_SOURCE_FILES = 1000;
/**
 * Imports of one bundle, at most: counted before esbuild parses a file, as the words that can
 * make one (`import`, `require`, `from`, `url(` and `\u` escapes, which can spell `require`),
 * so the count is at least the imports. Each import is a callback of the build's plugins on the
 * host's loop (~50-180 us) and, refused, an error esbuild keeps: 1 MB of `import "xN";` (59,000
 * bare names) took 89 s to fail, 21.5 s of the host's CPU. The shipped modules have at most 90.
 */
export const MAX_IMPORTS = 4096;
/**
 * Bytes of the bundle esbuild makes of them, checked before the host decodes it: esbuild
 * inlines TypeScript enum values (bundler-watch.ts), so small sources can make a bundle of
 * hundreds of MB. 2 MiB of sources of the costliest characters make ~15 MiB with the source map.
 */
export const MAX_BUNDLE_BYTES = 32 * 1024 * 1024;

const SOURCE_FILE_LIMIT: FileLimit = {
  maxBytes: MAX_SOURCE_FILE_BYTES,
  name: "MAX_SOURCE_FILE_BYTES",
  fix: "split the file, or keep large data out of the sources (a module can read it from its data directory)",
};

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
  const resolverFiles = new ResolverFiles(root);
  const entryProblem = await resolverFiles.check(entry);
  if (entryProblem) throw new CompileError(entryProblem);
  // The first MAX_REPORTED_ERRORS refusals are esbuild errors; the rest are only counted (each
  // marked external, which esbuild takes at no cost: an error is ~0.3-1.5 ms of its time) and
  // said after the errors shown. The build fails either way.
  let refusals = 0;
  const refused = (text: string): esbuild.OnResolveResult => (++refusals <= MAX_REPORTED_ERRORS ? { errors: [{ text }] } : { path: `refused:${refusals}`, external: true });
  const refuse: esbuild.Plugin = {
    name: "modhost-imports",
    setup(build) {
      build.onResolve({ filter: /.*/ }, async (args) => {
        if (args.kind === "entry-point") return undefined;
        const spec = args.path;
        const where = path.relative(root, args.importer) || args.importer;
        if (spec.startsWith("node:") || BUILTINS.has(spec) || BUILTINS.has(spec.split("/")[0]!)) {
          return refused(`"${spec}" is a Node.js built-in, which does not exist inside an isolate (imported by ${where}); use the capabilities on ctx instead`);
        }
        if (!spec.startsWith("./") && !spec.startsWith("../")) {
          return refused(`"${spec}" is not a relative import (imported by ${where}); a module may bundle only its own files: copy what you need into the module directory and import it with "./"`);
        }
        const resolved = path.resolve(path.dirname(args.importer), spec);
        let real = resolved;
        try {
          real = await realpath(resolved);
        } catch {
          // Not found as written; esbuild tries extensions next. Still check the directory.
        }
        if (real !== root && !real.startsWith(root + path.sep)) {
          return refused(`"${spec}" (imported by ${where}) is outside the module directory`);
        }
        const problem = await resolverFiles.check(resolved);
        return problem ? refused(problem) : undefined;
      });
    },
  };
  // Every file esbuild loads is read here, once; the bundle is built from these bytes and
  // their hashes are the module's identity (no window between hashing and bundling).
  const sources = new Map<string, HashedFile>();
  let sourceBytes = 0;
  let importWords = 0;
  const snapshot: esbuild.Plugin = {
    name: "modhost-snapshot",
    setup(build) {
      build.onLoad({ filter: /.*/, namespace: "file" }, async (args) => {
        const rel = path.relative(root, args.path).split(path.sep).join("/");
        if (rel === "" || rel.startsWith("../") || rel === ".." || path.isAbsolute(rel)) {
          return { errors: [{ text: `${args.path} is outside the module directory` }] };
        }
        if (sources.size >= MAX_SOURCE_FILES) {
          return { errors: [{ text: `${rel}: the bundle would be built from more than ${MAX_SOURCE_FILES} files (MAX_SOURCE_FILES); merge small files` }] };
        }
        let read: { bytes: Buffer; sha256: string };
        try {
          read = await readModuleFile(args.path, SOURCE_FILE_LIMIT, rel);
        } catch (err) {
          if (err instanceof ModuleFileError) return { errors: [{ text: err.message }] };
          throw err;
        }
        sourceBytes += read.bytes.byteLength;
        if (sourceBytes > MAX_SOURCE_BYTES) {
          return { errors: [{ text: `${rel}: the bundle's sources pass ${MAX_SOURCE_BYTES} bytes together (MAX_SOURCE_BYTES); keep large data out of the sources (a module can read it from its data directory)` }] };
        }
        importWords += importWordsIn(read.bytes);
        if (importWords > MAX_IMPORTS) {
          return { errors: [{ text: `${rel}: the bundle's sources may import more than ${MAX_IMPORTS} times (MAX_IMPORTS; counted as the words import, require, from, url( and \\u escapes, ${importWords} so far); merge files, or import fewer names` }] };
        }
        sources.set(rel, { path: rel, sha256: read.sha256, size: read.bytes.byteLength });
        return { contents: read.bytes, loader: "default" };
      });
    },
  };
  let result: esbuild.BuildResult<{ write: false; metafile: true }>;
  const run = () => esbuild.build({ ...BUILD_OPTIONS, entryPoints: [entry], absWorkingDir: root, plugins: [refuse, snapshot] });
  const overrunsBefore = bundlerOverruns().count;
  const ended = watchBuild();
  try {
    try {
      result = await run();
    } catch (err) {
      // esbuild's service died (its Go runtime's fatal error on sources nested too deep):
      // started again, and this build run once more on the new one. It may have been
      // another module's build that crashed it; this module's own sources crash it again.
      if (!(await restartedBundler(err))) throw err;
      result = await run();
    }
  } catch (err) {
    if (STOPPED.test((err as Error).message)) {
      await restartedBundler(err);
      const overruns = bundlerOverruns();
      if (overruns.count > overrunsBefore) {
        throw new CompileError(`the bundler's process passed ${MAX_BUNDLER_RSS_MB} MB (MAX_BUNDLER_RSS_MB; it had ${overruns.lastMb} MB) while building this module and was ended, and the build stopped again when run once more on a new one: what esbuild makes of these sources is too large (sources nested hundreds of thousands deep; TypeScript enum members built from other members, or a long enum string used in many places, which esbuild inlines by value): use plain constants or a lookup instead`);
      }
      throw new CompileError(`the bundler stopped twice while building this module (esbuild's service crashed: sources nested hundreds of thousands deep overflow its parser's stack); it is started again for the next build`);
    }
    const failure = err as esbuild.BuildFailure;
    // esbuild names files relative to the module directory ("index.ts"); name them the way
    // config errors do, so the line says which module's file it is and an editor can open it.
    const where = (file: string) => displayPath(path.resolve(root, file));
    const lines = (failure.errors ?? []).slice(0, MAX_REPORTED_ERRORS).map((e) => (e.location ? `${where(e.location.file)}:${e.location.line}:${e.location.column + 1}: ${e.text}\n${codeFrame(e.location)}` : e.text));
    const more = (failure.errors?.length ?? 0) - MAX_REPORTED_ERRORS + Math.max(0, refusals - MAX_REPORTED_ERRORS);
    if (more > 0) lines.push(`(${more} more error(s) not shown)`);
    throw new CompileError(lines.length ? lines.join("\n") : (err as Error).message);
  } finally {
    ended();
  }
  const output = result.outputFiles[0]!;
  if (output.contents.byteLength > MAX_BUNDLE_BYTES) {
    throw new CompileError(`the bundle esbuild made of this module is ${output.contents.byteLength} bytes, more than the ${MAX_BUNDLE_BYTES} allowed (MAX_BUNDLE_BYTES), from ${sourceBytes} bytes of sources: TypeScript enum values are inlined where they are used (a long enum string used in many places is copied to each); use plain constants or a lookup instead`);
  }
  const code = output.text;
  return {
    code,
    sha256: createHash("sha256").update(code).digest("hex"),
    files: Object.keys(result.metafile.inputs).sort(),
    sources: [...sources.values()],
  };
}

/** The words that can make an import (MAX_IMPORTS), in a source's bytes. */
const IMPORT_WORDS = /import|require|from|url\(|\\u/g;
function importWordsIn(bytes: Buffer): number {
  return bytes.toString("latin1").match(IMPORT_WORDS)?.length ?? 0;
}

/** esbuild's errors when its service process has exited. */
const STOPPED = /The service (was stopped|is no longer running)/;

/**
 * After esbuild's service process died (a Go stack overflow on deeply nested sources ends it
 * with a fatal error), every later build failed with "The service is no longer running" until
 * the host restarted: one module's sources stopped every other TypeScript module from loading.
 * esbuild.stop() lets the next build start a new service. True when `err` says the service
 * had stopped.
 */
async function restartedBundler(err: unknown): Promise<boolean> {
  if (!STOPPED.test((err as Error)?.message ?? "")) return false;
  await esbuild.stop();
  return true;
}

/**
 * esbuild's resolver reads package.json itself (not through onLoad) in the directory of each
 * file it resolves and in every directory above it: a FIFO there hung the build forever, and
 * a symlink to /proc/self/environ or a huge file was read by the bundler. Each such
 * package.json inside the module directory is checked before esbuild resolves a path under
 * it: a regular file (a symlink only to one inside the directory) of at most
 * MAX_SOURCE_FILE_BYTES. Directories above the module directory are the operator's.
 */
class ResolverFiles {
  private readonly checked = new Map<string, string | undefined>();
  private readonly root: string;
  constructor(root: string) {
    this.root = root;
  }

  /** The problem with a package.json in `target` or a directory above it up to the root, or undefined. */
  async check(target: string): Promise<string | undefined> {
    for (let dir = target; dir === this.root || dir.startsWith(this.root + path.sep); dir = path.dirname(dir)) {
      let problem = this.checked.get(dir);
      if (!this.checked.has(dir)) {
        problem = await this.checkOne(path.join(dir, "package.json"));
        this.checked.set(dir, problem);
      }
      if (problem) return problem;
      if (dir === this.root) break;
    }
    return undefined;
  }

  private async checkOne(file: string): Promise<string | undefined> {
    const rel = path.relative(this.root, file);
    const st = await lstat(file).catch(() => undefined);
    if (!st) return undefined;
    if (st.isSymbolicLink()) {
      const real = await realpath(file).catch(() => undefined);
      if (real === undefined) return `${rel} is a symbolic link that does not resolve`;
      if (!real.startsWith(this.root + path.sep)) return `${rel} is a symbolic link to outside the module directory`;
    }
    try {
      await checkModuleFile(file, SOURCE_FILE_LIMIT, rel);
    } catch (err) {
      if (err instanceof ModuleFileError) return err.message;
      throw err;
    }
    return undefined;
  }
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
