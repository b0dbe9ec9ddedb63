// `modhost registry build DIR --out OUT --key FILE`: make (or extend) a static registry.
//
// DIR is a module directory or a directory of module directories. For each module the files
// that its hash covers (the TypeScript sources the bundle includes, or the native binary)
// and its module.toml become blobs under OUT/blobs/sha256/, and its version is added to
// OUT/index.json. Versions already in OUT stay (a registry keeps its history), and a version
// that is already published cannot change: rebuilding it with other content is an error. Each
// build raises the index version by one, sets a new expiry, and signs the index.

import { mkdir, readdir, readFile, rename, stat, writeFile } from "node:fs/promises";
import type { Dirent } from "node:fs";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { isDeepStrictEqual } from "node:util";
import { parse } from "smol-toml";
import { ModhostError } from "../errors.ts";
import { loadManifest, parseManifest, type ModuleManifest } from "../manifest.ts";
import { formatDescriptor } from "../../capabilities/grants.ts";
import { sha256Hex } from "../verify/hash.ts";
import { xOnlyKey, type SecretKey } from "../verify/keys.ts";
import { snapshotModule } from "../verify/module.ts";
import { checkSignatures } from "../verify/trust.ts";

import {
  blobPath, INDEX_FILE, INDEX_FORMAT, parseIndex, SIGNATURE_FILE, signIndex, type FileEntry, type RegistryIndex, type VersionEntry,
} from "./format.ts";

export interface BuildOptions {
  /** Module directories, or directories of module directories; none: sign the index again with a new version and expiry. */
  sources: string[];
  out: string;
  /** The registry's signing key(s). */
  keys: SecretKey[];
  /** Default 30. */
  expiresDays?: number;
  /** Overrides expiresDays (tests make expired indexes with it). */
  expiresAt?: Date;
  /** The new index version; default: the previous one plus one. */
  version?: number;
  now?: Date;
  log?: (line: string) => void;
}

export interface BuildResult {
  index: RegistryIndex;
  added: string[];
  unchanged: string[];
  warnings: string[];
}

async function isFile(p: string): Promise<boolean> {
  return stat(p).then((s) => s.isFile(), () => false);
}

async function moduleDirs(sources: string[]): Promise<string[]> {
  const dirs: string[] = [];
  for (const src of sources) {
    const abs = path.resolve(src);
    if (await isFile(path.join(abs, "module.toml"))) {
      dirs.push(abs);
      continue;
    }
    let entries: Dirent[];
    try {
      entries = await readdir(abs, { withFileTypes: true });
    } catch (err) {
      throw new ModhostError("not_found", `cannot read ${abs}: ${(err as Error).message}`, "name a module directory or a directory of module directories");
    }
    for (const e of entries.filter((x) => x.isDirectory() && !x.name.startsWith(".")).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (await isFile(path.join(abs, e.name, "module.toml"))) dirs.push(path.join(abs, e.name));
    }
  }
  if (dirs.length === 0 && sources.length > 0) throw new ModhostError("not_found", `no module.toml found in ${sources.join(", ")}`, "name a module directory or a directory of module directories");
  return dirs;
}

async function writeBlob(out: string, hex: string, bytes: Uint8Array): Promise<void> {
  const file = path.join(out, ...blobPath(hex).split("/"));
  if (await isFile(file)) {
    const have = await readFile(file);
    if (sha256Hex(have) === hex) return;
  }
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${randomBytes(6).toString("hex")}.tmp`;
  await writeFile(tmp, bytes, { mode: 0o644 });
  await rename(tmp, file);
}

async function writeAtomic(file: string, text: string): Promise<void> {
  const tmp = `${file}.${randomBytes(6).toString("hex")}.tmp`;
  await writeFile(tmp, text, { mode: 0o644 });
  await rename(tmp, file);
}

/** One module version as an index entry, its blobs written to `out`. */
async function packModule(dir: string, out: string, now: Date, warn: (w: string) => void): Promise<{ manifest: ModuleManifest; entry: VersionEntry }> {
  const file = path.join(dir, "module.toml");
  const manifest = await loadManifest(file);
  const manifestBytes = await readFile(file);
  const text = manifestBytes.toString("utf8");
  const data = parse(text) as Record<string, unknown>;
  if (!isDeepStrictEqual(parseManifest(data, text, file), manifest)) throw new ModhostError("changed", `${file} changed during the build`, "build again");
  const snapshot = await snapshotModule(manifest, data);
  const what = `${manifest.name} ${manifest.version}`;
  const pinned = manifest.binary?.hash;
  if (pinned !== undefined && pinned !== snapshot.hash) {
    throw new ModhostError("verification_failed", `${what} (${dir}): [binary] hash says ${pinned}, but its files hash to ${snapshot.hash}`, `the files changed after it was signed: sign it again (modhost sign ${dir} --key FILE)`);
  }
  if (pinned === undefined) warn(`${what} is not pinned (no [binary] hash): operators who require signatures will refuse it (modhost sign ${dir} --key FILE)`);
  const claimed = (manifest.signatures?.maintainers ?? []).map((s) => xOnlyKey(s.key)).filter((k): k is string => k !== undefined);
  const sigs = checkSignatures(snapshot.digest, manifest.signatures?.maintainers ?? [], { keys: [...new Set(claimed)], threshold: 1 });
  for (const c of sigs.checks) if (!c.valid) warn(`${what}: the signature of ${c.name} does not verify (the manifest or code changed after it was signed)`);
  if (pinned !== undefined && sigs.count === 0) warn(`${what} carries no valid maintainer signature`);

  await writeBlob(out, sha256Hex(manifestBytes), manifestBytes);
  const files: FileEntry[] = [];
  for (const f of snapshot.files) {
    let bytes: Uint8Array;
    if (snapshot.binary) bytes = snapshot.binary;
    else {
      bytes = await readFile(path.join(dir, ...f.path.split("/")));
      if (sha256Hex(bytes) !== f.sha256) throw new ModhostError("changed", `${path.join(dir, f.path)} changed during the build`, "build again");
    }
    await writeBlob(out, f.sha256, bytes);
    files.push({ path: f.path, sha256: f.sha256, size: f.size, ...(snapshot.binary ? { executable: true } : {}) });
  }
  const entry: VersionEntry = {
    runtime: manifest.runtime,
    hash: snapshot.hash,
    manifest: { sha256: sha256Hex(manifestBytes), size: manifestBytes.byteLength },
    files,
    capabilities: manifest.capabilities.map((d) => formatDescriptor(d.permission, d.scope)),
    dependencies: { ...manifest.dependencies },
    signers: sigs.checks.filter((c) => c.counted).map((c) => c.signer!),
    published: now.toISOString(),
  };
  if (manifest.description !== undefined) entry.description = manifest.description;
  return { manifest, entry };
}

export async function buildRegistry(opts: BuildOptions): Promise<BuildResult> {
  if (opts.keys.length === 0) throw new ModhostError("usage", "a registry index must be signed: pass --key FILE");
  const now = opts.now ?? new Date();
  const out = path.resolve(opts.out);
  await mkdir(out, { recursive: true });
  const warnings: string[] = [];
  const warn = (w: string) => {
    warnings.push(w);
    opts.log?.(`warning: ${w}`);
  };

  const indexFile = path.join(out, INDEX_FILE);
  let previous: RegistryIndex | undefined;
  if (await isFile(indexFile)) previous = parseIndex(await readFile(indexFile), indexFile);
  const modules: RegistryIndex["modules"] = structuredClone(previous?.modules ?? {});

  const added: string[] = [];
  const unchanged: string[] = [];
  const seen = new Set<string>();
  for (const dir of await moduleDirs(opts.sources)) {
    const { manifest, entry } = await packModule(dir, out, now, warn);
    const id = `${manifest.name}@${manifest.version}`;
    if (seen.has(id)) throw new ModhostError("duplicate", `${manifest.name} ${manifest.version} is given twice`, "give each module version once");
    seen.add(id);
    const versions = (modules[manifest.name] ??= { versions: {} }).versions;
    const old = Object.hasOwn(versions, manifest.version) ? versions[manifest.version] : undefined;
    if (old) {
      if (old.hash === entry.hash && old.manifest.sha256 === entry.manifest.sha256) {
        unchanged.push(id);
        continue;
      }
      throw new ModhostError(
        "immutable",
        `${manifest.name} ${manifest.version} is already published in ${out} with other content (hash ${old.hash}, manifest ${old.manifest.sha256.slice(0, 12)}…)`,
        "published versions never change (clients may have installed them): bump the version in module.toml and sign again",
      );
    }
    versions[manifest.version] = entry;
    added.push(id);
  }

  const version = opts.version ?? (previous?.version ?? 0) + 1;
  if (previous && version <= previous.version) {
    throw new ModhostError("usage", `the index version must go up: ${out} is at version ${previous.version}`, `use --version ${previous.version + 1} or more (or leave it out)`);
  }
  const expires = opts.expiresAt ?? new Date(now.getTime() + (opts.expiresDays ?? 30) * 86_400_000);
  const index: RegistryIndex = { format: INDEX_FORMAT, version, generated: now.toISOString(), expires: expires.toISOString(), modules };
  const bytes = Buffer.from(JSON.stringify(index, null, 2) + "\n", "utf8");
  const sig = signIndex(bytes, opts.keys);
  // index.sig first: a client that fetches between the two writes sees a mismatch and retries.
  await writeAtomic(path.join(out, SIGNATURE_FILE), JSON.stringify(sig, null, 2) + "\n");
  await writeAtomic(indexFile, bytes.toString("utf8"));
  return { index, added, unchanged, warnings };
}
