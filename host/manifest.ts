// module.toml: a module's manifest, in the format of the BLVM node's manifests
// (name, version, entry_point, capabilities, dependencies, governance, signatures, binary,
// compatibility) plus modhost's `runtime`. Validation is strict: unknown keys are errors,
// since a typo in a security-relevant field must not pass silently. Signatures and the
// binary hash are only checked for shape here; verifying them is a later step.
//
// MANIFEST_SCHEMA (valibot, with host/schema.ts's TOML tables) is the one declaration of the
// file: the types, defaults and validation with located errors come from it; rules across keys
// are rawChecks after a table's schema, on the fields that are valid on their own.

import path from "node:path";
import semver from "semver";
import * as v from "valibot";
import { GrantSyntaxError, parseDescriptor, type Descriptor } from "../capabilities/grants.ts";
import { bool, checked, checkSchema, doc, either, int, KEY, namedTables, oneOf, pathTo, say, str, strings, table } from "./schema.ts";
import { Checker, isTable, MANIFEST_LIMIT, readToml, typeName } from "./toml.ts";

type Runtime = "isolate" | "native";

export interface ConfigField {
  type: ConfigFieldType;
  description?: string;
  default?: unknown;
  required: boolean;
}

type ConfigFieldType = "string" | "number" | "integer" | "boolean" | "array" | "table" | "any";

export interface Threshold {
  m: number;
  n: number;
}

export interface MaintainerSignature {
  name: string;
  /** Hex: 33-byte compressed or 32-byte x-only public key. */
  key: string;
  /** Hex: 64-byte Schnorr, or DER / 64-byte compact ECDSA. */
  signature: string;
  scheme?: "schnorr" | "ecdsa";
}

/** Dependency keys that name the host itself, not a module; checked against the host version. */
export const NODE_DEPENDENCY_NAMES = ["modhost", "blvm-node", "bllvm-node"];

export const MODULE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
export const MODULE_NAME_HINT = "use 1 to 64 letters, digits, '-' and '_', starting with a letter or digit";

const ISOLATE_EXTENSIONS = [".ts", ".mts", ".js", ".mjs"];
const CONFIG_FIELD_TYPES: readonly ConfigFieldType[] = ["string", "number", "integer", "boolean", "array", "table", "any"];
/** Type names from other languages, and what they are called here. */
const CONFIG_TYPE_ALIASES: Readonly<Record<string, ConfigFieldType>> = {
  int: "integer", i32: "integer", i64: "integer", u32: "integer", u64: "integer", uint: "integer", long: "integer",
  float: "number", double: "number", f64: "number", decimal: "number",
  str: "string", text: "string", bool: "boolean",
  list: "array", vec: "array", object: "table", dict: "table", map: "table", record: "table",
};

// ---------------------------------------------------------------------------------------
// The schema

const moduleNameProblem = (name: string) => (MODULE_NAME_RE.test(name) ? undefined : { message: `"${name}" is not a valid module name`, hint: MODULE_NAME_HINT });

/** A strict semantic version, with the loose form it was probably meant as. */
const version = () => checked((s) => (isStrictVersion(s) ? undefined : { message: `"${s}" is not a semantic version`, hint: versionHint(s) }));

const ENTRY_HINT = 'name a file inside the module directory, e.g. "index.ts" or "bin/my-module"';

/**
 * The characters an entry point may have. Node's path.normalize takes time that grows faster
 * than the path with many ".." segments: an entry_point of "../" repeated to 200 KB held the
 * host's loop for 97 s (100 KB: 1.6 s; 4 KB: 16-19 ms; 1 KB: 0.1 ms, load 14), at every
 * discovery of the modules.
 */
export const MAX_ENTRY_POINT_CHARS = 1024;

/** The entry point, normalised, never leaving the module directory. */
const entryPoint = () =>
  v.pipe(
    str(),
    v.rawTransform<string, string>(({ dataset, addIssue, NEVER }) => {
      const entry = dataset.value;
      const fail = (message: string) => {
        addIssue({ message: say(message, ENTRY_HINT) });
        return NEVER;
      };
      if (entry.length > MAX_ENTRY_POINT_CHARS) return fail(`an entry_point of ${entry.length} characters, more than the ${MAX_ENTRY_POINT_CHARS} it may have (MAX_ENTRY_POINT_CHARS): "${entry.slice(0, 40)}..."`);
      if (entry.trim() === "" || entry.includes("\0")) return fail("entry_point is empty");
      const slashed = entry.replace(/\\/g, "/");
      if (path.isAbsolute(entry) || slashed.startsWith("/") || /^[A-Za-z]:/.test(slashed) || slashed.startsWith("~")) return fail(`"${entry}" is an absolute path`);
      const norm = path.posix.normalize(slashed);
      if (norm === ".." || norm.startsWith("../")) return fail(`"${entry}" leaves the module directory`);
      if (norm === "." || norm.endsWith("/")) return fail(`"${entry}" is a directory`);
      return norm;
    }),
  );

/**
 * The characters a dependency range may have. semver reads a range in time that grows with
 * it, with large constants (a range of 1 MB, "1.x 1.x ...", took 5.3 s to check and 4.8 s to
 * match a version, at load 5-7), and every discovery of the modules (each start, load, unload
 * and reload) reads every module.toml on the host's loop. Real ranges take a few dozen.
 */
export const MAX_RANGE_CHARS = 256;

/** [dependencies] and [optional_dependencies]: module name -> semver range (commas turned into spaces). */
const dependencies = () =>
  namedTables(
    moduleNameProblem,
    v.pipe(
      v.string((i: v.StringIssue) => say(`expected a version range string, found ${typeName(i.input)}`, `write "${KEY}" = ">=1.0.0"`)),
      v.rawTransform<string, string>(({ dataset, addIssue, NEVER }) => {
        if (dataset.value.length > MAX_RANGE_CHARS) {
          addIssue({ message: say(`a version range of ${dataset.value.length} characters, more than the ${MAX_RANGE_CHARS} a range may have (MAX_RANGE_CHARS): "${dataset.value.slice(0, 40)}..."`, 'write a short range, e.g. ">=1.0.0 <2.0.0" or "^1.2.0 || ^2.0.0"') });
          return NEVER;
        }
        const range = normaliseRange(dataset.value);
        if (range !== undefined) return range;
        addIssue({ message: say(`"${dataset.value}" is not a version range`, 'use ">=1.0.0", "<=2.0.0", "=1.2.3", "^1.0.0", "~1.2.0" or ">=1.0.0,<2.0.0"') });
        return NEVER;
      }),
    ),
  );

/** One [config_schema] field: `key = "description"`, or a table. */
const CONFIG_FIELD = either<ConfigField, ConfigField>(
  (x) => typeof x === "string",
  v.pipe(
    v.string(),
    v.transform((description): ConfigField => ({ type: "any", description, required: false })),
  ),
  v.pipe(
    table({
      type: v.optional(oneOf(CONFIG_FIELD_TYPES, CONFIG_TYPE_ALIASES), "any"),
      default: v.optional(v.unknown()),
      required: v.optional(bool(), false),
      description: v.optional(str()),
    }),
    v.rawCheck(({ dataset, addIssue }) => {
      const f = dataset.value as { type?: ConfigFieldType; default?: unknown };
      if (f.type !== undefined && f.default !== undefined && !matchesType(f.default, f.type)) {
        addIssue({ message: say(`default is ${typeName(f.default)}, but the type is "${f.type}"`, `make the default a ${f.type} or change the type`), path: pathTo("default") });
      }
    }),
    v.transform((f): ConfigField => {
      const out: ConfigField = { type: f.type, required: f.required };
      if (f.description !== undefined) out.description = f.description;
      if (f.default !== undefined) out.default = f.default;
      return out;
    }),
  ),
);

const threshold = () =>
  v.pipe(
    checked((s) => (parseThreshold(s) ? undefined : { message: `"${s}" is not a valid threshold`, hint: 'write "M-of-N" with 1 <= M <= N, e.g. "2-of-3"' })),
    v.transform((s) => parseThreshold(s)!),
  );

const GOVERNANCE = v.pipe(
  table({
    tier: v.optional(str()),
    maintainers: v.optional(strings(), []),
    threshold: v.optional(threshold()),
    review_period_days: v.optional(int()),
  }),
  v.rawCheck(({ dataset, addIssue }) => {
    const g = dataset.value as { maintainers?: string[]; threshold?: Threshold };
    const count = g.maintainers?.length ?? 0;
    if (g.threshold && count > 0 && g.threshold.n !== count) {
      addIssue({
        message: say(`threshold "${g.threshold.m}-of-${g.threshold.n}" does not match the ${count} maintainers listed`, `write "${Math.min(g.threshold.m, count)}-of-${count}" or list ${g.threshold.n} maintainers`),
        path: pathTo("threshold"),
      });
    }
  }),
);

const HEX = /^[0-9a-fA-F]*$/;

const MAINTAINER_SIGNATURE = v.pipe(
  table(
    {
      name: str(),
      key: checked((key) => (isPublicKeyHex(key) ? undefined : { message: "not a public key", hint: "use hex: 33-byte compressed (66 characters, starting 02 or 03) or 32-byte x-only (64 characters)" })),
      signature: str(),
      scheme: v.optional(oneOf(["schnorr", "ecdsa"] as const)),
    },
    {},
    'write { name = "...", key = "...", signature = "..." }',
  ),
  v.rawCheck(({ dataset, addIssue }) => {
    const s = dataset.value as { signature?: string; scheme?: "schnorr" | "ecdsa" };
    if (s.signature !== undefined && !isSignatureHex(s.signature, s.scheme)) {
      const hint = s.scheme === "schnorr" ? "use hex of a 64-byte Schnorr signature (128 characters)" : "use hex of a 64-byte Schnorr or compact ECDSA signature (128 characters), or a DER ECDSA signature";
      addIssue({ message: say("not a signature", hint), path: pathTo("signature") });
    }
  }),
  v.transform((s): MaintainerSignature => {
    const out: MaintainerSignature = { name: s.name, key: s.key.toLowerCase(), signature: s.signature.toLowerCase() };
    if (s.scheme) out.scheme = s.scheme;
    return out;
  }),
);

/**
 * Maintainer signatures a manifest may carry. Each is a Schnorr or ECDSA verification on the
 * host's loop at every load and reload: the 1 MiB a module.toml may have holds ~3,500, seconds
 * of the loop. A module is signed by a few maintainers.
 */
export const MAX_MAINTAINER_SIGNATURES = 16;

const SIGNATURES = table({
  maintainers: v.optional(
    v.pipe(
      v.array(MAINTAINER_SIGNATURE, (i: v.ArrayIssue) => say(`expected an array of tables, found ${typeName(i.input)}`, 'write maintainers = [{ name = "...", key = "...", signature = "..." }]')),
      v.maxLength(MAX_MAINTAINER_SIGNATURES, (i) => say(`${(i.input as unknown[]).length} signatures, more than the ${MAX_MAINTAINER_SIGNATURES} a manifest may carry (MAX_MAINTAINER_SIGNATURES)`, "keep the signatures of the maintainers the threshold names")),
    ),
    [],
  ),
  threshold: v.optional(threshold()),
});

const BINARY = table({
  hash: v.optional(checked((hash) => (/^sha256:[0-9a-f]{64}$/.test(hash) ? undefined : { message: `"${hash}" is not a SHA-256 hash`, hint: 'write "sha256:" followed by 64 lowercase hex characters' }))),
  size: v.optional(int()),
  download_url: v.optional(checked((url) => (isHttpUrl(url) ? undefined : { message: `"${url}" is not an http(s) URL`, hint: 'write a URL starting with "https://"' }))),
});

const COMPATIBILITY = table({
  min_consensus_version: v.optional(version()),
  min_protocol_version: v.optional(version()),
  min_node_version: v.optional(version()),
  max_node_version: v.optional(version()),
  tested_with: v.optional(
    strings(
      v.rawCheck<string>(({ dataset, addIssue }) => {
        if (dataset.typed && !isStrictVersion(dataset.value)) addIssue({ message: say(`"${dataset.value}" is not a semantic version`, versionHint(dataset.value)) });
      }),
    ),
    [],
  ),
});

/** module.toml. */
const MANIFEST_SCHEMA = v.pipe(
  table({
    name: doc(
      checked((name) => moduleNameProblem(name) ?? (NODE_DEPENDENCY_NAMES.includes(name) ? { message: `"${name}" is reserved for the host`, hint: "choose another module name" } : undefined)),
      "the module's name: 1 to 64 letters, digits, '-' and '_'",
    ),
    version: doc(version(), "its semantic version"),
    entry_point: doc(entryPoint(), "the file to run, relative to the module directory"),
    runtime: v.optional(doc(oneOf(["isolate", "native"] as const), "isolate (TypeScript/JavaScript) or native; default: from the entry point's extension")),
    description: v.optional(str()),
    author: v.optional(str()),
    capabilities: v.optional(doc(descriptorList(), "the permissions it requests"), []),
    dependencies: v.optional(doc(dependencies(), "modules (or the host) it needs, with semver ranges"), {}),
    optional_dependencies: v.optional(doc(dependencies(), "modules it uses when present"), {}),
    config_schema: v.optional(
      doc(namedTables((key) => (key === "__proto__" ? { message: 'the key "__proto__" is not allowed', hint: "rename the setting" } : undefined), CONFIG_FIELD), "its settings ([modules.module_configs.NAME])"),
      {},
    ),
    governance: v.optional(GOVERNANCE),
    signatures: v.optional(SIGNATURES),
    binary: v.optional(BINARY),
    compatibility: v.optional(COMPATIBILITY),
  }),
  v.rawCheck(({ dataset, addIssue }) => {
    const m = dataset.value as { name?: string; dependencies?: Record<string, string>; optional_dependencies?: Record<string, string> };
    for (const key of ["dependencies", "optional_dependencies"] as const) {
      if (m.name !== undefined && m[key] && Object.hasOwn(m[key], m.name)) {
        addIssue({ message: say("a module cannot depend on itself", `remove "${m.name}" from [${key}]`), path: pathTo(key, m.name) });
      }
    }
    for (const dep of Object.keys(m.optional_dependencies ?? {})) {
      if (m.dependencies && Object.hasOwn(m.dependencies, dep)) {
        addIssue({ message: say(`"${dep}" is also a required dependency`, "list it in [dependencies] or [optional_dependencies], not both"), path: pathTo("optional_dependencies", dep) });
      }
    }
  }),
);

type Parsed = v.InferOutput<typeof MANIFEST_SCHEMA>;

export type ModuleManifest = Omit<Parsed, "runtime"> & {
  /** Absolute path of module.toml. */
  file: string;
  /** Absolute directory of the module. */
  dir: string;
  runtime: Runtime;
};

export async function loadManifest(file: string): Promise<ModuleManifest> {
  const abs = path.resolve(file);
  const { data, source } = await readToml(abs, MANIFEST_LIMIT);
  return parseManifest(data, source, abs);
}

/** Validates a parsed module.toml. Throws one ConfigError listing every problem found. */
/** Capabilities a manifest may request. */
export const MAX_MANIFEST_CAPABILITIES = 256;
/** Modules [dependencies] (and, apart, [optional_dependencies]) may name. */
export const MAX_MANIFEST_DEPENDENCIES = 64;
/**
 * The characters of all the version ranges of one manifest together ([dependencies] and
 * [optional_dependencies]), counted before any is read: semver reads a `||` chain of prereleases
 * of MAX_RANGE_CHARS in ~0.15-1.7 ms (spikes of 100 ms and more under load, much of it garbage
 * collection), so 128 such ranges took 60-75 ms of the loop per manifest at every discovery, and
 * the plan matched each against a version again. Real manifests take a few dozen characters.
 */
export const MAX_MANIFEST_RANGE_CHARS = 2048;

/**
 * Counted before anything is checked (maintainer signatures too): each capability and dependency costs a parse, a
 * did-you-mean and a located error when wrong, at every discovery on the host's loop (20,000
 * capabilities and 5,000 dependencies, valid, took 0.85 s; 50,000 unknown capabilities 4.6 s).
 */
function checkCounts(c: Checker, data: Record<string, unknown>): boolean {
  const limits = [
    ["capabilities", MAX_MANIFEST_CAPABILITIES, "MAX_MANIFEST_CAPABILITIES"],
    ["dependencies", MAX_MANIFEST_DEPENDENCIES, "MAX_MANIFEST_DEPENDENCIES"],
    ["optional_dependencies", MAX_MANIFEST_DEPENDENCIES, "MAX_MANIFEST_DEPENDENCIES"],
  ] as const;
  let ok = true;
  for (const [key, max, name] of limits) {
    const value = data[key];
    const n = Array.isArray(value) ? value.length : value !== null && typeof value === "object" ? Object.keys(value).length : 0;
    if (n > max) {
      c.report([key], `${n} entries, more than the ${max} a manifest may have (${name})`, key === "capabilities" ? "request what the module uses; a scoped permission takes several targets in one entry" : "a module depends on a few others");
      ok = false;
    }
  }
  // A range longer than MAX_RANGE_CHARS is refused naming that limit (here too, so that none of
  // the others is read either).
  let rangeChars = 0;
  let overlong = false;
  for (const key of ["dependencies", "optional_dependencies"]) {
    const table = data[key];
    if (table === null || typeof table !== "object" || Array.isArray(table)) continue;
    for (const [name, range] of Object.entries(table as Record<string, unknown>)) {
      if (typeof range !== "string") continue;
      rangeChars += range.length;
      if (range.length > MAX_RANGE_CHARS && !overlong) {
        c.report([key, name], `a version range of ${range.length} characters, more than the ${MAX_RANGE_CHARS} a range may have (MAX_RANGE_CHARS): "${range.slice(0, 40)}..."`, 'write a short range, e.g. ">=1.0.0 <2.0.0" or "^1.2.0 || ^2.0.0"');
        overlong = true;
        ok = false;
      }
    }
  }
  if (rangeChars > MAX_MANIFEST_RANGE_CHARS && !overlong) {
    c.report(["dependencies"], `version ranges of ${rangeChars} characters in all, more than the ${MAX_MANIFEST_RANGE_CHARS} a manifest may have (MAX_MANIFEST_RANGE_CHARS)`, 'write short ranges, e.g. ">=1.0.0 <2.0.0" or "^1.2.0"');
    ok = false;
  }
  // Maintainer signatures too: the schema checked every entry (key, signature, name) before
  // their count, ~470 bogus ones in 32 KiB, 52 ms of the loop at load 13-25.
  const signatures = data["signatures"];
  const maintainers = signatures !== null && typeof signatures === "object" ? (signatures as Record<string, unknown>)["maintainers"] : undefined;
  if (Array.isArray(maintainers) && maintainers.length > MAX_MAINTAINER_SIGNATURES) {
    c.report(["signatures", "maintainers"], `${maintainers.length} signatures, more than the ${MAX_MAINTAINER_SIGNATURES} a manifest may carry (MAX_MAINTAINER_SIGNATURES)`, "keep the signatures of the maintainers the threshold names");
    ok = false;
  }
  return ok;
}

export function parseManifest(data: Record<string, unknown>, source: string, file: string): ModuleManifest {
  const c = new Checker(file, source);
  if (!checkCounts(c, data)) c.throwIfProblems();
  const abs = path.resolve(file);
  const parsed = checkSchema(c, MANIFEST_SCHEMA, data);
  c.throwIfProblems();
  const m = parsed!;
  return { file: abs, dir: path.dirname(abs), ...m, runtime: m.runtime ?? inferRuntime(m.entry_point) };
}

/** TypeScript and JavaScript entry points run in an isolate; anything else is a native binary. */
function inferRuntime(entryPoint: string): Runtime {
  return ISOLATE_EXTENSIONS.includes(path.extname(entryPoint).toLowerCase()) ? "isolate" : "native";
}

/** "2-of-3" -> { m: 2, n: 3 }; undefined when malformed. */
export function parseThreshold(text: string): Threshold | undefined {
  const m = /^([0-9]{1,4})-of-([0-9]{1,4})$/.exec(text.trim());
  if (!m) return undefined;
  const t = { m: Number(m[1]), n: Number(m[2]) };
  return t.m >= 1 && t.m <= t.n ? t : undefined;
}

/** A dependency range as semver reads it: BLVM's ">=1.0.0,<2.0.0" becomes ">=1.0.0 <2.0.0". */
export function normaliseRange(text: string): string | undefined {
  const norm = text
    .split(",")
    .map((s) => s.trim())
    .join(" ")
    .trim();
  if (norm === "") return undefined;
  return semver.validRange(norm) === null ? undefined : norm;
}

/** A strict semantic version: "1.2.3", "1.2.3-rc.1", "1.2.3+build"; not "1.0", "v1.0.0" or " 1.0.0". */
export function isStrictVersion(text: string): boolean {
  return /^[0-9]/.test(text) && text.trim() === text && semver.valid(text) !== null;
}

/** A grant descriptor ("read_blockchain", "call_module=price-feed"), parsed; a bad one is reported with the grammar's hint. */
function descriptor() {
  return v.rawTransform<string, Descriptor>(({ dataset, addIssue, NEVER }) => {
    try {
      return parseDescriptor(dataset.value);
    } catch (err) {
      if (!(err instanceof GrantSyntaxError)) throw err;
      addIssue({ message: say(err.message, err.hint) });
      return NEVER;
    }
  });
}

/** An array of grant descriptors; each bad one is reported at its element with the grammar's hint. */
export function descriptorList() {
  return strings(descriptor());
}

function versionHint(v: string): string {
  const loose = semver.valid(v, { loose: true }) ?? semver.coerce(v)?.version;
  return loose ? `write it as MAJOR.MINOR.PATCH: "${loose}"` : 'write it as MAJOR.MINOR.PATCH, e.g. "1.0.0"';
}

function matchesType(value: unknown, type: ConfigFieldType): boolean {
  switch (type) {
    case "any":
      return true;
    case "string":
      return typeof value === "string";
    case "number":
      return typeof value === "number";
    case "integer":
      return typeof value === "number" && Number.isInteger(value);
    case "boolean":
      return typeof value === "boolean";
    case "array":
      return Array.isArray(value);
    case "table":
      return isTable(value);
  }
}

function isPublicKeyHex(key: string): boolean {
  if (!HEX.test(key)) return false;
  return (key.length === 66 && /^0[23]/.test(key)) || key.length === 64;
}

function isSignatureHex(sig: string, scheme: "schnorr" | "ecdsa" | undefined): boolean {
  if (!HEX.test(sig) || sig.length % 2 !== 0) return false;
  if (sig.length === 128) return true;
  if (scheme === "schnorr") return false;
  // DER: 0x30 <len> 0x02 <r> 0x02 <s>, at most 72 bytes; the length byte covers the rest.
  const bytes = sig.length / 2;
  return sig.startsWith("30") && bytes >= 8 && bytes <= 72 && Number.parseInt(sig.slice(2, 4), 16) === bytes - 2;
}

function isHttpUrl(text: string): boolean {
  try {
    const u = new URL(text);
    return (u.protocol === "https:" || u.protocol === "http:") && u.hostname !== "";
  } catch {
    return false;
  }
}
