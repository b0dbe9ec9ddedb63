// Talking to a registry: fetch and verify its index, download blobs into the content-addressed
// cache.
//
// An index is accepted only when (1) index.sig carries valid signatures over the exact bytes
// of index.json by at least [registry] threshold of the [registry] keys, (2) it has not
// expired, and (3) its version is not lower than the highest version this machine has seen
// from the same registry URL (kept in [registry] state_file), and, at the same version, its
// bytes are the same. (2) stops a registry mirror or an attacker on the path from serving a
// stale index forever; (3) stops them from replaying an older signed index to hide updates.
// The state is updated as soon as a newer valid index is seen.
//
// Blobs are downloaded to a temporary file while hashing, checked (size and SHA-256), and only
// then moved into the cache as cache_dir/<hex>. A cached blob is hashed again before use.

import { createHash, randomBytes } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile, open } from "node:fs/promises";
import path from "node:path";
import type { HostConfig } from "../config.ts";
import { ModhostError } from "../errors.ts";
import { sha256Hex } from "../verify/hash.ts";
import {
  blobPath, INDEX_FILE, MAX_INDEX_BYTES, parseIndex, parseSignatures, SIGNATURE_FILE, verifyIndexSignatures, type RegistryIndex,
} from "./format.ts";
import type { Progress } from "./progress.ts";

export interface VerifiedIndex {
  url: string;
  index: RegistryIndex;
  sha256: string;
}

interface RegistryState {
  registries: Record<string, { version: number; index_sha256: string; seen: string; expires: string }>;
}

const TIMEOUT_MS = 60_000;

/** What reading a registry needs of the configuration (a worker thread gets just this). */
export type RegistrySettings = Pick<HostConfig, "file" | "registry">;

function registryOf(config: RegistrySettings): { url: string; keys: string[]; threshold: number } {
  const r = config.registry;
  if (!r.url) {
    throw new ModhostError("no_registry", `no registry configured in ${config.file ?? "the configuration"}`, 'add a [registry] section with url = "..." and keys = ["<the registry\'s public key>"] to modhost.toml');
  }
  return { url: r.url, keys: r.keys, threshold: r.threshold };
}

async function get(url: string, maxBytes: number): Promise<Uint8Array> {
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(TIMEOUT_MS), redirect: "follow" });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    throw new ModhostError("registry_unreachable", `cannot reach the registry at ${url}: ${cause?.code ?? cause?.message ?? (err as Error).message}`, "check [registry] url in modhost.toml and that the registry is up");
  }
  if (!res.ok) throw new ModhostError("registry_http", `the registry answered ${res.status} ${res.statusText} for ${url}`, "check [registry] url; the registry may be incomplete");
  const chunks: Uint8Array[] = [];
  let n = 0;
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      n += chunk.byteLength;
      if (n > maxBytes) throw new ModhostError("registry_invalid", `${url} is larger than ${maxBytes} bytes`, "the registry is broken or hostile");
      chunks.push(chunk);
    }
  } catch (err) {
    throw bodyFailed(err, url, n);
  }
  return Buffer.concat(chunks);
}

/**
 * A body that stopped arriving (the timeout's DOMException, a reset connection's TypeError) as
 * the registry error it is; a ModhostError thrown inside the loop passes through.
 */
function bodyFailed(err: unknown, url: string, received: number): unknown {
  if (err instanceof ModhostError) return err;
  const e = err as { name?: string; message?: string; cause?: { code?: string } };
  const why = e.name === "TimeoutError" ? `no complete answer within the time limit` : (e.cause?.code ?? e.message ?? String(err));
  return new ModhostError("registry_unreachable", `the download of ${url} broke after ${received} bytes: ${why}`, "check that the registry is up and try again");
}

async function readState(file: string): Promise<RegistryState> {
  try {
    const data = JSON.parse(await readFile(file, "utf8")) as RegistryState;
    if (data && typeof data === "object" && data.registries && typeof data.registries === "object") return data;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { registries: {} };
    throw new ModhostError("registry_state", `cannot read the registry state file ${file}: ${(err as Error).message}`, "fix or remove it (removing it forgets which index versions were seen: rollback protection starts again)");
  }
  throw new ModhostError("registry_state", `the registry state file ${file} is malformed`, "fix or remove it (removing it forgets which index versions were seen)");
}

async function writeState(file: string, state: RegistryState): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${randomBytes(6).toString("hex")}.tmp`;
  await writeFile(tmp, JSON.stringify(state, null, 2) + "\n", { mode: 0o600 });
  await rename(tmp, file);
}

/** Fetch index.json and index.sig, verify them, check expiry and rollback, record the version. */
export async function fetchIndex(config: RegistrySettings, opts: { now?: Date } = {}): Promise<VerifiedIndex> {
  const { url, keys, threshold } = registryOf(config);
  const indexUrl = new URL(INDEX_FILE, url).href;
  const bytes = await get(indexUrl, MAX_INDEX_BYTES);
  const sigBytes = await get(new URL(SIGNATURE_FILE, url).href, 1024 * 1024);
  const sigs = parseSignatures(sigBytes, url);
  // The signature first: nothing of an unsigned index is trusted, not even its shape.
  verifyIndexSignatures(bytes, sigs, keys, threshold, url);
  const index = parseIndex(bytes, url);
  const sha256 = sha256Hex(bytes);
  const now = opts.now ?? new Date();
  const expires = new Date(index.expires);
  if (!(expires.getTime() > now.getTime())) {
    throw new ModhostError(
      "registry_expired",
      `the registry index from ${url} (version ${index.version}) expired at ${index.expires}; now is ${now.toISOString()}: refusing a stale index`,
      "the registry has not been re-signed in time (its operator runs modhost registry build again), or someone is serving an old copy; also check this machine's clock",
    );
  }
  const stateFile = config.registry.state_file;
  const state = await readState(stateFile);
  const seen = state.registries[url];
  if (seen && index.version < seen.version) {
    throw new ModhostError(
      "registry_rollback",
      `the registry at ${url} served index version ${index.version}, but version ${seen.version} was already seen (${seen.seen}): refusing a rollback to an older index, which could hide updates`,
      `someone may be replaying an old index; try again later or ask the registry operator. If the registry was really reset, remove the entry for ${url} from ${stateFile}`,
    );
  }
  if (seen && index.version === seen.version && sha256 !== seen.index_sha256) {
    throw new ModhostError(
      "registry_equivocation",
      `the registry at ${url} served a different index under the same version ${index.version} (sha256 ${sha256.slice(0, 16)}…, seen before: ${seen.index_sha256.slice(0, 16)}…)`,
      "a registry must bump the version for every change; ask the registry operator",
    );
  }
  if (!seen || index.version > seen.version) {
    state.registries[url] = { version: index.version, index_sha256: sha256, seen: now.toISOString(), expires: index.expires };
    await writeState(stateFile, state);
  }
  return { url, index, sha256 };
}

/** The bytes of blob `hex` (`size` bytes), from the cache or the registry; verified either way. */
export async function fetchBlob(config: HostConfig, url: string, hex: string, size: number, progress?: Progress, what = ""): Promise<Uint8Array> {
  const cacheDir = config.registry.cache_dir;
  const cached = path.join(cacheDir, hex);
  try {
    const bytes = await readFile(cached);
    if (bytes.byteLength === size && sha256Hex(bytes) === hex) {
      progress?.add(size);
      return bytes;
    }
    await rm(cached, { force: true }); // corrupted cache entry: fetch it again
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  await mkdir(cacheDir, { recursive: true, mode: 0o700 });
  const blobUrl = new URL(blobPath(hex), url).href;
  let res: Response;
  try {
    res = await fetch(blobUrl, { signal: AbortSignal.timeout(TIMEOUT_MS * 5) });
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause;
    throw new ModhostError("registry_unreachable", `cannot download ${what || hex} from ${blobUrl}: ${cause?.code ?? (err as Error).message}`, "check that the registry is up and try again");
  }
  if (!res.ok) throw new ModhostError("registry_http", `the registry answered ${res.status} for ${blobUrl} (${what})`, "the registry is incomplete; tell its operator");
  const tmp = path.join(cacheDir, `.${hex}.${randomBytes(6).toString("hex")}.part`);
  const fh = await open(tmp, "wx", 0o600);
  const hash = createHash("sha256");
  let n = 0;
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      n += chunk.byteLength;
      if (n > size) break;
      hash.update(chunk);
      await fh.write(chunk);
      progress?.add(chunk.byteLength);
    }
  } catch (err) {
    await fh.close();
    await rm(tmp, { force: true });
    throw bodyFailed(err, blobUrl, n);
  }
  await fh.close();
  const got = hash.digest("hex");
  if (n !== size || got !== hex) {
    await rm(tmp, { force: true });
    throw new ModhostError(
      "blob_mismatch",
      `download check failed for ${what || hex}: the registry index says ${size} bytes with sha256 ${hex}, but ${blobUrl} served ${n > size ? `more than ${size}` : n} bytes${n <= size ? ` with sha256 ${got}` : ""}`,
      "the registry or something between it and you served tampered or corrupted content; nothing was installed. Try again later, and tell the registry operator",
    );
  }
  await rename(tmp, cached);
  return readFile(cached);
}
