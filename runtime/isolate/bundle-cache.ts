// The bundle cache: a TypeScript module's compiled bundle, kept in the host process and reused
// when the module's sources are byte for byte the same and nothing that decides how its imports
// resolve has changed. A start, a restart, a reload and `modhost dev`'s check before a load each
// bundle the module; esbuild takes ~7-10 ms of a start that the pool has brought down to tens of
// milliseconds. Copies of one module under other names (the same files, another module.toml)
// share an entry: the key holds no absolute path, and neither does the bundle (compile.ts).
//
// Why a hit is exactly what esbuild would build now:
//  - esbuild's output depends on the build options (fixed in compile.ts; their JSON and
//    esbuild's version are part of the key), the entry point, the contents of the files it
//    reads and how each import resolves. Imports may only be relative and stay inside the
//    module directory (compile.ts refuses anything else), so resolution depends only on which
//    paths exist in that directory, what kind they are (file, directory, symlink and its
//    target) and the files the resolver reads on its own (package.json, tsconfig.json,
//    jsconfig.json): the key is the listing of the whole directory with those, and the
//    resolver files' contents hashed.
//  - The contents of the files the bundle was built from are checked at every hit: each is
//    read again and its SHA-256 compared with the one recorded when it was bundled. Those fresh
//    hashes are what the module's hash is computed from (host/verify), exactly as after a
//    compile, so verification sees what is on disk now, never the cache.
//  - The entry's bundle is checked against its own SHA-256 before it is used: an entry that
//    was changed in memory (a bug, corruption) is dropped and the module compiled again.
// A directory with more than MAX_TREE_ENTRIES entries (or deeper than MAX_TREE_DEPTH) is not
// cached: walking it at every start could cost more than bundling.

import path from "node:path";
import type { Dir } from "node:fs";
import { lstat, opendir, readlink } from "node:fs/promises";
import { MAX_SOURCE_FILE_BYTES, sha256Hex, type HashedFile } from "./hashing.ts";
import { readModuleFile, type FileLimit } from "../module-file.ts";

/** Bundles kept at most (least recently used dropped first). */
const MAX_CACHED_BUNDLES = 64;
/** Bytes of bundles (UTF-16 length of the code, x2) kept at most. */
const MAX_CACHED_BYTES = 64 * 1024 * 1024;
/** A bundle larger than this is not cached. */
const MAX_CACHED_BUNDLE_BYTES = 8 * 1024 * 1024;
/** A module directory with more entries than this is not cached (walking it is the price of a lookup). */
export const MAX_TREE_ENTRIES = 2000;
/** Nor one deeper than this. */
const MAX_TREE_DEPTH = 16;
/** Entries per key (copies of one listing with different sources). */
const MAX_PER_KEY = 4;

/**
 * What the cache reads again: files of at most a bundle's source file limit (compile.ts
 * MAX_SOURCE_FILE_BYTES; a file past it, or not a regular file, is a miss, and the compile
 * that follows says why).
 */
const REREAD_LIMIT: FileLimit = { maxBytes: MAX_SOURCE_FILE_BYTES, name: "MAX_SOURCE_FILE_BYTES", fix: "" };

/** Files esbuild's resolver reads itself (not through onLoad): their contents are in the key. */
const RESOLVER_FILES = new Set(["package.json", "tsconfig.json", "jsconfig.json"]);

export interface CachedBundle {
  code: string;
  /** SHA-256 (hex) of `code`, taken when it was built. */
  sha256: string;
  /** The bundle's inputs, relative to the module directory, sorted. */
  files: string[];
  /** The files it was built from, with the hashes of the bytes esbuild compiled. */
  sources: HashedFile[];
}

export interface CacheStats {
  hits: number;
  misses: number;
  /** Entries dropped because their bundle no longer matched its SHA-256. */
  corrupt: number;
  /** Lookups not cached: the directory is too large or could not be listed. */
  uncacheable: number;
}

export class BundleCache {
  private readonly entries = new Map<string, CachedBundle[]>();
  private bytes = 0;
  readonly stats: CacheStats = { hits: 0, misses: 0, corrupt: 0, uncacheable: 0 };

  /**
   * The key of the module in `root` (a real path) built from `entry` with `options`, or
   * undefined when the directory is not cacheable.
   */
  async keyFor(root: string, entry: string, options: unknown): Promise<string | undefined> {
    const listing = await treeListing(root);
    if (listing === undefined) {
      this.stats.uncacheable++;
      return undefined;
    }
    return sha256Hex(JSON.stringify([path.relative(root, entry), options, listing]));
  }

  /**
   * A cached bundle for `key` whose sources in `root` still have the recorded contents; the
   * sources come back freshly hashed from what was read now. undefined on a miss.
   */
  async get(key: string, root: string): Promise<CachedBundle | undefined> {
    const list = this.entries.get(key);
    if (list) {
      for (const entry of [...list]) {
        const fresh = await rehash(root, entry.sources);
        if (!fresh) continue;
        if (sha256Hex(entry.code) !== entry.sha256) {
          // Not what was built: never run it; compile again.
          this.stats.corrupt++;
          this.remove(key, entry);
          continue;
        }
        // Most recently used last.
        this.entries.delete(key);
        this.entries.set(key, list);
        this.stats.hits++;
        return { ...entry, sources: fresh };
      }
    }
    this.stats.misses++;
    return undefined;
  }

  put(key: string, bundle: CachedBundle): void {
    const size = bundle.code.length * 2;
    if (size > MAX_CACHED_BUNDLE_BYTES) return;
    const list = this.entries.get(key) ?? [];
    // Two starts of copies of one module that compiled at the same time: keep one.
    if (list.some((e) => e.sha256 === bundle.sha256 && sameSources(e.sources, bundle.sources))) return;
    list.push({ ...bundle, files: [...bundle.files], sources: bundle.sources.map((s) => ({ ...s })) });
    this.bytes += size;
    while (list.length > MAX_PER_KEY) this.bytes -= list.shift()!.code.length * 2;
    this.entries.delete(key);
    this.entries.set(key, list);
    for (const [k, l] of this.entries) {
      if (this.bytes <= MAX_CACHED_BYTES && this.count() <= MAX_CACHED_BUNDLES) break;
      if (k === key && l.length === 1) continue;
      for (const e of l.splice(0)) this.bytes -= e.code.length * 2;
      this.entries.delete(k);
    }
  }

  /** How many bundles are kept. */
  count(): number {
    let n = 0;
    for (const l of this.entries.values()) n += l.length;
    return n;
  }

  /** Every kept entry (tests: to tamper with one). */
  all(): CachedBundle[] {
    return [...this.entries.values()].flat();
  }

  clear(): void {
    this.entries.clear();
    this.bytes = 0;
  }

  private remove(key: string, entry: CachedBundle): void {
    const list = this.entries.get(key);
    if (!list) return;
    const i = list.indexOf(entry);
    if (i >= 0) {
      list.splice(i, 1);
      this.bytes -= entry.code.length * 2;
    }
    if (list.length === 0) this.entries.delete(key);
  }
}

/** The process's bundle cache (compile.ts uses it unless told otherwise). */
export const bundleCache = new BundleCache();

function sameSources(a: HashedFile[], b: HashedFile[]): boolean {
  return a.length === b.length && a.every((f, i) => f.path === b[i]!.path && f.sha256 === b[i]!.sha256);
}

/** How many sources rehash reads at once (one after another, each read is a round trip through libuv's thread pool). */
const REHASH_READS = 8;

/** Read each source again: their fresh hashes (in the order of `sources`) if all are unchanged, undefined otherwise. */
async function rehash(root: string, sources: HashedFile[]): Promise<HashedFile[] | undefined> {
  const fresh: HashedFile[] = new Array(sources.length);
  let changed = false;
  let next = 0;
  const reader = async () => {
    for (let i = next++; i < sources.length && !changed; i = next++) {
      const s = sources[i]!;
      let read: { bytes: Buffer; sha256: string };
      try {
        read = await readModuleFile(path.join(root, ...s.path.split("/")), REREAD_LIMIT);
      } catch {
        changed = true;
        return;
      }
      const h = { path: s.path, sha256: read.sha256, size: read.bytes.byteLength };
      if (h.sha256 !== s.sha256 || h.size !== s.size) changed = true;
      fresh[i] = h;
    }
  };
  await Promise.all(Array.from({ length: Math.min(REHASH_READS, sources.length) }, reader));
  return changed ? undefined : fresh;
}

/**
 * Every entry under `root` (not following symlinks), sorted: "f path", "d path", "l path ->
 * target", "o path" for anything else; resolver files with the hash of their contents.
 * undefined past MAX_TREE_ENTRIES or MAX_TREE_DEPTH, or when a directory cannot be read.
 */
async function treeListing(root: string): Promise<string[] | undefined> {
  const out: string[] = [];
  const walk = async (dir: string, rel: string, depth: number): Promise<boolean> => {
    if (depth > MAX_TREE_DEPTH) return false;
    // Entries a few dozen at a time, stopping past the limit: readdir() listed a directory of
    // 100,000 files whole, 72-108 ms of the host's loop at each start, to give up on it.
    let handle: Dir;
    try {
      handle = await opendir(dir, { bufferSize: 64 });
    } catch {
      return false;
    }
    const subdirs: Array<[string, string]> = [];
    try {
      for await (const d of handle) {
        if (out.length >= MAX_TREE_ENTRIES) return false;
        const p = rel ? `${rel}/${d.name}` : d.name;
        const full = path.join(dir, d.name);
        if (d.isDirectory()) {
          out.push(`d ${p}`);
          subdirs.push([full, p]);
        } else if (d.isSymbolicLink()) {
          out.push(`l ${p} -> ${await readlink(full).catch(() => "?")}`);
        } else if (d.isFile()) {
          if (RESOLVER_FILES.has(d.name)) {
            const read = await readModuleFile(full, REREAD_LIMIT).catch(() => undefined);
            out.push(`f ${p} ${read ? read.sha256 : "?"}`);
          } else {
            out.push(`f ${p}`);
          }
        } else {
          out.push(`o ${p}`);
        }
      }
    } catch {
      return false;
    } finally {
      // A loop left early closes it (for await calls return()); closing twice is refused.
      await handle.close().catch(() => {});
    }
    for (const [full, p] of subdirs) if (!(await walk(full, p, depth + 1))) return false;
    return true;
  };
  const st = await lstat(root).catch(() => undefined);
  if (!st?.isDirectory()) return undefined;
  if (!(await walk(root, "", 0))) return undefined;
  return out.sort();
}
