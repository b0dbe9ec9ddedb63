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
import * as v from "valibot";
import { checked, doc, int, namedTables, oneOf, say, str, strings, table, valid } from "../schema.ts";
import { type Checker, isTable, type TomlPath } from "../toml.ts";
import { xOnlyKey } from "./keys.ts";

export type SignaturePolicy = "require" | "allow-unsigned";
const SIGNATURE_POLICIES: readonly SignaturePolicy[] = ["require", "allow-unsigned"];

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

// ---------------------------------------------------------------------------------------
// Schemas (host/schema.ts): declared once, checked with located errors, documented from here.

const KEY_HINT = "write 64 hex characters (x-only, as modhost keygen prints) or 66 (compressed, starting 02 or 03)";

/** A list of secp256k1 public keys, as x-only hex; a bad or repeated one is reported at its index. */
function keyList() {
  return v.pipe(
    strings(
      v.rawTransform<string, string>(({ dataset, addIssue, NEVER }) => {
        const x = xOnlyKey(dataset.value);
        if (x) return x;
        addIssue({ message: say(`"${dataset.value}" is not a secp256k1 public key`, KEY_HINT) });
        return NEVER;
      }),
    ),
    v.rawTransform<string[], string[]>(({ dataset, addIssue, NEVER }) => {
      const seen = new Set<string>();
      let twice = false;
      dataset.value.forEach((x, i) => {
        if (!seen.has(x)) {
          seen.add(x);
          return;
        }
        twice = true;
        const path = [{ type: "array", origin: "value", input: dataset.value, key: i, value: x }] as unknown as [v.ArrayPathItem];
        addIssue({ message: say("the same key is listed twice (x-only and compressed forms of one key are the same signer)", "remove the duplicate"), path });
      });
      return twice ? NEVER : dataset.value;
    }),
  );
}

const threshold = () => int({ min: 1 });
const signaturePolicy = () => oneOf(SIGNATURE_POLICIES);
const nameProblem = (kind: string) => (name: string) => (MODULE_NAME_RE.test(name) ? undefined : { message: `"${name}" is not a valid ${kind} name`, hint: MODULE_NAME_HINT });

/** [trust.publishers.NAME]. */
const PUBLISHER_SCHEMA = table(
  {
    keys: doc(keyList(), "the publisher's public keys (x-only or compressed hex)"),
    threshold: v.optional(doc(threshold(), "distinct trusted signers needed, 1 to the number of keys"), 1),
  },
  { keys: 'add keys = ["<public key hex>"]' },
);

/** [trust]. */
export const TRUST_SCHEMA = table({
  signatures: v.optional(doc(signaturePolicy(), "what a module without its own `signatures` setting needs: `require` a trusted signature, or `allow-unsigned`"), "require"),
  publisher: v.optional(doc(str(), "the publisher (from `[trust.publishers]`) trusted for modules without their own `[modules.trust.NAME]`", { shown: "none" })),
  publishers: v.optional(doc(namedTables(nameProblem("publisher"), PUBLISHER_SCHEMA), "`[trust.publishers.NAME]`: each publisher's `keys` and `threshold`"), {}),
});

/** One [modules.trust.NAME] table. */
export const MODULE_TRUST_SCHEMA = table({
  publisher: v.optional(doc(str(), "trust this publisher from `[trust.publishers]` for the module")),
  keys: v.optional(doc(keyList(), "or trust these keys (not with `publisher`)")),
  threshold: v.optional(doc(threshold(), "with `keys`: distinct trusted signers needed")),
  signatures: v.optional(doc(signaturePolicy(), "the module's own signature policy")),
});

const pathString = (base: string) =>
  v.pipe(
    checked((s) => (s.trim() === "" || s.includes("\0") ? { message: "empty path", hint: "write a path, relative to the config file or absolute" } : undefined)),
    v.transform((s) => path.resolve(base, s)),
  );

/** [registry]; paths resolved against `base` (the config file's directory). */
export function registrySchema(base: string) {
  return table({
    url: v.optional(
      doc(
        v.pipe(
          checked((url) => (isHttpUrl(url) ? undefined : { message: `"${url}" is not an http(s) URL`, hint: 'write the base URL of the registry, e.g. "https://modules.example.org/"' })),
          v.transform((url) => (url.endsWith("/") ? url : `${url}/`)),
        ),
        "base URL of the registry (`index.json`, `index.sig` and `blobs/` under it); without it `modhost search`, `install` and `update` have nowhere to look",
        { shown: "none" },
      ),
    ),
    keys: v.optional(doc(keyList(), "the public keys that sign the registry's index (64 or 66 hex, as for `[trust]`); required with `url`"), []),
    threshold: v.optional(doc(threshold(), "distinct keys of `keys` whose signatures of the index are needed (1 to the number of keys)"), 1),
    cache_dir: v.optional(doc(pathString(base), "verified downloads, named by their SHA-256; relative to the config file"), "data/registry/blobs"),
    state_file: v.optional(doc(pathString(base), "the highest index version seen per registry URL: an older index is refused (rollback protection)"), "data/registry/state.json"),
    discover_minutes: v.optional(doc(int({ min: 0, max: 7 * 24 * 60 }), "minutes between a running host's looks at the registry to announce new modules and versions (`ModuleDiscovered`); 0 to 10080, 0: never"), 0),
  });
}

function isHttpUrl(text: string): boolean {
  try {
    const u = new URL(text);
    return (u.protocol === "http:" || u.protocol === "https:") && u.hostname !== "";
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------
// Cross-field rules: run after the schema, each on fields that are valid on their own.

/** A threshold above the number of keys; `keys`: the raw list. */
function checkThreshold(c: Checker, t: Record<string, unknown>, at: TomlPath): void {
  if (!Array.isArray(t["keys"]) || !valid(threshold(), t["threshold"])) return;
  // The distinct valid keys listed (a bad one is reported by the schema).
  const count = new Set((t["keys"] as unknown[]).map((k) => (typeof k === "string" ? xOnlyKey(k) : undefined)).filter((x) => x !== undefined)).size;
  const n = t["threshold"] as number;
  if (count > 0 && n > count) c.report([...at, "threshold"], `threshold ${n} is more than the ${count} key(s) listed`, `use a threshold from 1 to ${count}, or list more keys`);
}

/** The rules of [trust] across keys: each publisher's threshold against its keys. */
export function readTrustRules(c: Checker, t: Record<string, unknown>): void {
  const pubs = t["publishers"];
  if (!isTable(pubs)) return;
  for (const [name, p] of Object.entries(pubs)) if (MODULE_NAME_RE.test(name) && isTable(p)) checkThreshold(c, p, ["trust", "publishers", name]);
}

/** The rules of one [modules.trust.NAME] table across its keys. */
export function moduleTrustRules(c: Checker, t: Record<string, unknown>, at: TomlPath): void {
  if (typeof t["publisher"] === "string" && Array.isArray(t["keys"])) {
    c.report([...at, "keys"], "publisher and keys cannot both be set", "trust either a publisher from [trust.publishers] or a list of keys, not both");
  }
  checkThreshold(c, t, at);
  if (valid(threshold(), t["threshold"]) && t["keys"] === undefined) {
    c.report([...at, "threshold"], "threshold without keys", "set threshold with keys = [...]; a publisher's threshold is set in [trust.publishers.NAME]");
  }
}

/** Publishers named anywhere must be defined; `data`: the whole parsed modhost.toml. */
export function checkPublisherRefs(c: Checker, data: Record<string, unknown>): void {
  const tables = (t: unknown, key: string): Array<[string, Record<string, unknown>]> =>
    isTable(t) && isTable(t[key]) ? Object.entries(t[key]).filter((e): e is [string, Record<string, unknown>] => MODULE_NAME_RE.test(e[0]) && isTable(e[1])) : [];
  const trust = data["trust"];
  const known = tables(trust, "publishers").map(([name]) => name);
  const hint = known.length ? `define it in [trust.publishers.NAME]; known publishers: ${known.join(", ")}` : "define it: [trust.publishers.NAME] with keys = [...]";
  const publisher = isTable(trust) ? trust["publisher"] : undefined;
  if (typeof publisher === "string" && !known.includes(publisher)) {
    c.report(["trust", "publisher"], `unknown publisher "${publisher}"`, hint);
  }
  for (const [name, m] of tables(data["modules"], "trust")) {
    const p = m["publisher"];
    if (typeof p === "string" && !known.includes(p)) c.report(["modules", "trust", name, "publisher"], `unknown publisher "${p}"`, hint);
  }
}

/** The rules of [registry] across its keys. */
export function registryRules(c: Checker, t: Record<string, unknown>): void {
  const at = ["registry"];
  const hasUrl = typeof t["url"] === "string" && isHttpUrl(t["url"]);
  const keys = v.safeParse(keyList(), t["keys"] ?? []);
  if (hasUrl && keys.success && keys.output.length === 0) {
    c.report([...at, "keys"], "a registry needs the keys that sign its index", "add keys = [\"<public key hex>\"] with the registry's public key (modhost registry build prints it)");
  }
  checkThreshold(c, t, at);
  const discover = t["discover_minutes"];
  if (valid(int({ min: 0, max: 7 * 24 * 60 }), discover) && (discover as number) > 0 && !hasUrl) {
    c.report([...at, "discover_minutes"], "discover_minutes needs a registry to look at", "set [registry] url and keys, or remove discover_minutes");
  }
}
