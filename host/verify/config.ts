// The operator's trust configuration in modhost.toml: whose signatures count for which module,
// how many are needed, what happens to unsigned modules, and which registry to install from.
// Trust comes from here only, never from a manifest (docs/signing.md).
//
//   [trust]
//   signatures = "require"            # default policy: "require" | "allow-unsigned"
//   publisher = "core"                # modules without [modules.trust.NAME] trust this publisher
//
//   [trust.publishers.core]
//   keys = ["<x-only or compressed hex>", ...]
//   threshold = 2                     # distinct trusted signers needed (default 1)
//
//   [modules.trust.block-stats]
//   publisher = "core"                # or: keys = [...] and threshold = N
//   signatures = "allow-unsigned"     # this module only
//
//   [registry]
//   url = "https://modules.example.org/"
//   keys = ["<hex>"]                  # the registry's index signing keys
//   threshold = 1
//   cache_dir = "data/registry/blobs" # content-addressed download cache
//   state_file = "data/registry/state.json"

import path from "node:path";
import { MODULE_NAME_HINT, MODULE_NAME_RE } from "../manifest.ts";
import type { Checker, TomlPath } from "../toml.ts";
import { xOnlyKey } from "./keys.ts";

export type SignaturePolicy = "require" | "allow-unsigned";
export const SIGNATURE_POLICIES: readonly SignaturePolicy[] = ["require", "allow-unsigned"];

export interface TrustedKeys {
  /** x-only hex, distinct. */
  keys: string[];
  /** Distinct trusted signers needed, 1..keys.length. */
  threshold: number;
}

export interface TrustConfig {
  /** The policy of modules without their own `signatures` setting. */
  signatures: SignaturePolicy;
  /** The publisher trusted for modules without their own trust entry. */
  publisher?: string;
  publishers: Record<string, TrustedKeys>;
}

export interface ModuleTrust {
  publisher?: string;
  keys?: string[];
  threshold?: number;
  signatures?: SignaturePolicy;
}

export interface RegistryConfig {
  /** Base URL of the registry (index.json, index.sig and blobs/ under it); unset: no registry. */
  url?: string;
  /** x-only hex of the keys that sign the index. */
  keys: string[];
  threshold: number;
  /** Absolute: content-addressed cache of downloaded blobs. */
  cache_dir: string;
  /** Absolute: the highest index version seen per registry (rollback protection). */
  state_file: string;
  /**
   * How often a running host fetches the (verified) index to announce modules it does not have,
   * or newer versions of those it has, as ModuleDiscovered; 0 (the default): never, the host
   * contacts no registry on its own.
   */
  discover_minutes: number;
}

export function defaultTrust(): TrustConfig {
  return { signatures: "require", publishers: {} };
}

export function defaultRegistry(base: string): RegistryConfig {
  return {
    keys: [],
    threshold: 1,
    cache_dir: path.resolve(base, "data/registry/blobs"),
    state_file: path.resolve(base, "data/registry/state.json"),
    discover_minutes: 0,
  };
}

/** An array of public keys; each bad or repeated one is reported at its index. */
function readKeys(c: Checker, t: Record<string, unknown>, at: TomlPath): string[] | undefined {
  const list = c.stringArray(t, at, "keys");
  if (!list) return undefined;
  const out: string[] = [];
  (t["keys"] as unknown[]).forEach((k, i) => {
    if (typeof k !== "string") return;
    const x = xOnlyKey(k);
    if (!x) c.report([...at, "keys", i], `"${k}" is not a secp256k1 public key`, "write 64 hex characters (x-only, as modhost keygen prints) or 66 (compressed, starting 02 or 03)");
    else if (out.includes(x)) c.report([...at, "keys", i], "the same key is listed twice (x-only and compressed forms of one key are the same signer)", "remove the duplicate");
    else out.push(x);
  });
  return out;
}

function readThreshold(c: Checker, t: Record<string, unknown>, at: TomlPath, keys: number): number | undefined {
  const n = c.integer(t, at, "threshold", { min: 1 });
  if (n !== undefined && keys > 0 && n > keys) {
    c.report([...at, "threshold"], `threshold ${n} is more than the ${keys} key(s) listed`, `use a threshold from 1 to ${keys}, or list more keys`);
    return undefined;
  }
  return n;
}

function readTrustedKeys(c: Checker, t: Record<string, unknown>, at: TomlPath): TrustedKeys {
  c.knownKeys(t, at, ["keys", "threshold"]);
  const keys = readKeys(c, t, at) ?? [];
  if (keys.length === 0 && t["keys"] === undefined) c.report([...at, "keys"], 'missing required key "keys"', 'add keys = ["<public key hex>"]');
  const threshold = readThreshold(c, t, at, keys.length) ?? 1;
  return { keys, threshold };
}

/** [trust] and [trust.publishers.NAME]. */
export function readTrust(c: Checker, data: Record<string, unknown>, into: TrustConfig): void {
  const at = ["trust"];
  const t = c.table(data["trust"], at);
  if (!t) return;
  c.knownKeys(t, at, ["signatures", "publisher", "publishers"]);
  into.signatures = c.oneOf(t, at, "signatures", SIGNATURE_POLICIES) ?? into.signatures;
  const publisher = c.string(t, at, "publisher");
  if (publisher !== undefined) into.publisher = publisher;
  const pubs = c.table(t["publishers"], [...at, "publishers"]);
  if (!pubs) return;
  for (const [name, value] of Object.entries(pubs)) {
    const p = [...at, "publishers", name];
    if (!MODULE_NAME_RE.test(name)) {
      c.report(p, `"${name}" is not a valid publisher name`, MODULE_NAME_HINT);
      continue;
    }
    const table = c.table(value, p);
    if (table) into.publishers[name] = readTrustedKeys(c, table, p);
  }
}

/** One [modules.trust.NAME] table. */
export function readModuleTrust(c: Checker, t: Record<string, unknown>, at: TomlPath): ModuleTrust {
  c.knownKeys(t, at, ["publisher", "keys", "threshold", "signatures"]);
  const out: ModuleTrust = {};
  const publisher = c.string(t, at, "publisher");
  const keys = readKeys(c, t, at);
  if (publisher !== undefined && keys !== undefined) {
    c.report([...at, "keys"], "publisher and keys cannot both be set", "trust either a publisher from [trust.publishers] or a list of keys, not both");
  }
  if (publisher !== undefined) out.publisher = publisher;
  if (keys !== undefined) out.keys = keys;
  const threshold = readThreshold(c, t, at, keys?.length ?? 0);
  if (threshold !== undefined) {
    if (keys === undefined) c.report([...at, "threshold"], "threshold without keys", "set threshold with keys = [...]; a publisher's threshold is set in [trust.publishers.NAME]");
    else out.threshold = threshold;
  }
  const policy = c.oneOf(t, at, "signatures", SIGNATURE_POLICIES);
  if (policy !== undefined) out.signatures = policy;
  return out;
}

/** Publishers named anywhere must be defined. */
export function checkPublisherRefs(c: Checker, trust: TrustConfig, modules: Record<string, ModuleTrust>): void {
  const known = Object.keys(trust.publishers);
  const hint = known.length ? `define it in [trust.publishers.NAME]; known publishers: ${known.join(", ")}` : "define it: [trust.publishers.NAME] with keys = [...]";
  if (trust.publisher !== undefined && !Object.hasOwn(trust.publishers, trust.publisher)) {
    c.report(["trust", "publisher"], `unknown publisher "${trust.publisher}"`, hint);
  }
  for (const [name, m] of Object.entries(modules)) {
    if (m.publisher !== undefined && !Object.hasOwn(trust.publishers, m.publisher)) {
      c.report(["modules", "trust", name, "publisher"], `unknown publisher "${m.publisher}"`, hint);
    }
  }
}

/** [registry]. */
export function readRegistry(c: Checker, data: Record<string, unknown>, into: RegistryConfig, base: string): void {
  const at = ["registry"];
  const t = c.table(data["registry"], at);
  if (!t) return;
  c.knownKeys(t, at, ["url", "keys", "threshold", "cache_dir", "state_file", "discover_minutes"]);
  const url = c.string(t, at, "url");
  if (url !== undefined) {
    let ok = false;
    try {
      const u = new URL(url);
      ok = (u.protocol === "http:" || u.protocol === "https:") && u.hostname !== "";
    } catch {
      ok = false;
    }
    if (ok) into.url = url.endsWith("/") ? url : `${url}/`;
    else c.report([...at, "url"], `"${url}" is not an http(s) URL`, 'write the base URL of the registry, e.g. "https://modules.example.org/"');
  }
  into.keys = readKeys(c, t, at) ?? [];
  if (into.url !== undefined && into.keys.length === 0) {
    c.report([...at, "keys"], "a registry needs the keys that sign its index", "add keys = [\"<public key hex>\"] with the registry's public key (modhost registry build prints it)");
  }
  into.threshold = readThreshold(c, t, at, into.keys.length) ?? into.threshold;
  into.discover_minutes = c.integer(t, at, "discover_minutes", { min: 0, max: 7 * 24 * 60 }) ?? into.discover_minutes;
  if (into.discover_minutes > 0 && into.url === undefined) c.report([...at, "discover_minutes"], "discover_minutes needs a registry to look at", 'set [registry] url and keys, or remove discover_minutes');
  for (const key of ["cache_dir", "state_file"] as const) {
    const v = c.string(t, at, key);
    if (v === undefined) continue;
    if (v.trim() === "" || v.includes("\0")) c.report([...at, key], "empty path", `write a path, relative to the config file or absolute`);
    else into[key] = path.resolve(base, v);
  }
}
