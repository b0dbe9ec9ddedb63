// module.toml: a module's manifest, in the format of the BLVM node's manifests
// (name, version, entry_point, capabilities, dependencies, governance, signatures, binary,
// compatibility) plus modhost's `runtime`. Validation is strict: unknown keys are errors,
// since a typo in a security-relevant field must not pass silently. Signatures and the
// binary hash are only checked for shape here; verifying them is a later step.

import path from "node:path";
import semver from "semver";
import { GrantSyntaxError, parseDescriptor, type Descriptor } from "../capabilities/grants.ts";
import * as v from "valibot";
import { checkSchema, say, strings } from "./schema.ts";
import { Checker, isTable, readToml, typeName, type TomlPath } from "./toml.ts";

export type Runtime = "isolate" | "native";

export interface ConfigField {
  type: ConfigFieldType;
  description?: string;
  default?: unknown;
  required: boolean;
}

export type ConfigFieldType = "string" | "number" | "integer" | "boolean" | "array" | "table" | "any";

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

export interface ModuleManifest {
  /** Absolute path of module.toml. */
  file: string;
  /** Absolute directory of the module. */
  dir: string;
  name: string;
  version: string;
  /** Relative to dir, normalised, never leaving dir. */
  entry_point: string;
  runtime: Runtime;
  description?: string;
  author?: string;
  capabilities: Descriptor[];
  /** Module (or host, see NODE_DEPENDENCY_NAMES) name -> semver range (commas turned into spaces). */
  dependencies: Record<string, string>;
  optional_dependencies: Record<string, string>;
  config_schema: Record<string, ConfigField>;
  governance?: { tier?: string; maintainers: string[]; threshold?: Threshold; review_period_days?: number };
  signatures?: { maintainers: MaintainerSignature[]; threshold?: Threshold };
  binary?: { hash?: string; size?: number; download_url?: string };
  compatibility?: {
    min_consensus_version?: string;
    min_protocol_version?: string;
    min_node_version?: string;
    max_node_version?: string;
    tested_with: string[];
  };
}

/** Dependency keys that name the host itself, not a module; checked against the host version. */
export const NODE_DEPENDENCY_NAMES = ["modhost", "blvm-node", "bllvm-node"];

export const MODULE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
export const MODULE_NAME_HINT = "use 1 to 64 letters, digits, '-' and '_', starting with a letter or digit";

const TOP_LEVEL_KEYS = [
  "name", "version", "entry_point", "runtime", "description", "author", "capabilities", "dependencies",
  "optional_dependencies", "config_schema", "governance", "signatures", "binary", "compatibility",
] as const;

const ISOLATE_EXTENSIONS = [".ts", ".mts", ".js", ".mjs"];
const CONFIG_FIELD_TYPES: readonly ConfigFieldType[] = ["string", "number", "integer", "boolean", "array", "table", "any"];
/** Type names from other languages, and what they are called here. */
const CONFIG_TYPE_ALIASES: Readonly<Record<string, ConfigFieldType>> = {
  int: "integer", i32: "integer", i64: "integer", u32: "integer", u64: "integer", uint: "integer", long: "integer",
  float: "number", double: "number", f64: "number", decimal: "number",
  str: "string", text: "string", bool: "boolean",
  list: "array", vec: "array", object: "table", dict: "table", map: "table", record: "table",
};

export async function loadManifest(file: string): Promise<ModuleManifest> {
  const abs = path.resolve(file);
  const { data, source } = await readToml(abs);
  return parseManifest(data, source, abs);
}

/** Validates a parsed module.toml. Throws one ConfigError listing every problem found. */
export function parseManifest(data: Record<string, unknown>, source: string, file: string): ModuleManifest {
  const c = new Checker(file, source);
  const abs = path.resolve(file);
  c.knownKeys(data, [], TOP_LEVEL_KEYS);

  const name = readName(c, data);
  const version = readVersion(c, data, ["version"], true);
  const entry = readEntryPoint(c, data);
  const runtime = c.oneOf(data, [], "runtime", ["isolate", "native"] as const);
  const description = c.string(data, [], "description");
  const author = c.string(data, [], "author");
  const capabilities = readDescriptors(c, data, [], "capabilities");
  const dependencies = readDependencies(c, data, "dependencies", name);
  const optional = readDependencies(c, data, "optional_dependencies", name);
  for (const dep of Object.keys(optional)) {
    if (Object.hasOwn(dependencies, dep)) {
      c.report(["optional_dependencies", dep], `"${dep}" is also a required dependency`, "list it in [dependencies] or [optional_dependencies], not both");
    }
  }
  const config_schema = readConfigSchema(c, data);
  const governance = readGovernance(c, data);
  const signatures = readSignatures(c, data);
  const binary = readBinary(c, data);
  const compatibility = readCompatibility(c, data);
  c.throwIfProblems();

  const manifest: ModuleManifest = {
    file: abs,
    dir: path.dirname(abs),
    name: name!,
    version: version!,
    entry_point: entry!,
    runtime: runtime ?? inferRuntime(entry!),
    capabilities,
    dependencies,
    optional_dependencies: optional,
    config_schema,
  };
  if (description !== undefined) manifest.description = description;
  if (author !== undefined) manifest.author = author;
  if (governance) manifest.governance = governance;
  if (signatures) manifest.signatures = signatures;
  if (binary) manifest.binary = binary;
  if (compatibility) manifest.compatibility = compatibility;
  return manifest;
}

/** TypeScript and JavaScript entry points run in an isolate; anything else is a native binary. */
export function inferRuntime(entryPoint: string): Runtime {
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

// ---------------------------------------------------------------------------------------
// Fields

function readName(c: Checker, data: Record<string, unknown>): string | undefined {
  const name = c.string(data, [], "name", true);
  if (name === undefined) return undefined;
  if (!MODULE_NAME_RE.test(name)) {
    c.report(["name"], `"${name}" is not a valid module name`, MODULE_NAME_HINT);
    return undefined;
  }
  if (NODE_DEPENDENCY_NAMES.includes(name)) {
    c.report(["name"], `"${name}" is reserved for the host`, "choose another module name");
    return undefined;
  }
  return name;
}

function readVersion(c: Checker, table: Record<string, unknown>, path: TomlPath, required = false): string | undefined {
  const key = path.at(-1) as string;
  const parent = path.slice(0, -1);
  const v = c.string(table, parent, key, required);
  if (v === undefined) return undefined;
  if (isStrictVersion(v)) return v;
  c.report(path, `"${v}" is not a semantic version`, versionHint(v));
  return undefined;
}

function versionHint(v: string): string {
  const loose = semver.valid(v, { loose: true }) ?? semver.coerce(v)?.version;
  return loose ? `write it as MAJOR.MINOR.PATCH: "${loose}"` : 'write it as MAJOR.MINOR.PATCH, e.g. "1.0.0"';
}

function readEntryPoint(c: Checker, data: Record<string, unknown>): string | undefined {
  const entry = c.string(data, [], "entry_point", true);
  if (entry === undefined) return undefined;
  const hint = 'name a file inside the module directory, e.g. "index.ts" or "bin/my-module"';
  if (entry.trim() === "" || entry.includes("\0")) {
    c.report(["entry_point"], "entry_point is empty", hint);
    return undefined;
  }
  const slashed = entry.replace(/\\/g, "/");
  if (path.isAbsolute(entry) || slashed.startsWith("/") || /^[A-Za-z]:/.test(slashed) || slashed.startsWith("~")) {
    c.report(["entry_point"], `"${entry}" is an absolute path`, hint);
    return undefined;
  }
  const norm = path.posix.normalize(slashed);
  if (norm === ".." || norm.startsWith("../")) {
    c.report(["entry_point"], `"${entry}" leaves the module directory`, hint);
    return undefined;
  }
  if (norm === "." || norm.endsWith("/")) {
    c.report(["entry_point"], `"${entry}" is a directory`, hint);
    return undefined;
  }
  return norm;
}

/** A grant descriptor ("read_blockchain", "call_module=price-feed"), parsed; a bad one is reported with the grammar's hint. */
export function descriptor() {
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

/** An array of grant descriptors; each bad one is reported at its element with the grammar's hint. */
export function readDescriptors(c: Checker, table: Record<string, unknown>, path: TomlPath, key: string): Descriptor[] {
  if (table[key] === undefined) return [];
  return checkSchema(c, descriptorList(), table[key], [...path, key]) ?? [];
}

function readDependencies(c: Checker, data: Record<string, unknown>, key: string, self: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  const table = c.table(data[key], [key]);
  if (!table) return out;
  for (const [dep, value] of Object.entries(table)) {
    const at = [key, dep];
    if (!MODULE_NAME_RE.test(dep)) {
      c.report(at, `"${dep}" is not a valid module name`, MODULE_NAME_HINT);
      continue;
    }
    if (dep === self) {
      c.report(at, "a module cannot depend on itself", `remove "${dep}" from [${key}]`);
      continue;
    }
    if (typeof value !== "string") {
      c.report(at, `expected a version range string, found ${typeName(value)}`, `write "${dep}" = ">=1.0.0"`);
      continue;
    }
    const range = normaliseRange(value);
    if (range === undefined) {
      c.report(at, `"${value}" is not a version range`, 'use ">=1.0.0", "<=2.0.0", "=1.2.3", "^1.0.0", "~1.2.0" or ">=1.0.0,<2.0.0"');
      continue;
    }
    out[dep] = range;
  }
  return out;
}

function readConfigSchema(c: Checker, data: Record<string, unknown>): Record<string, ConfigField> {
  const out: Record<string, ConfigField> = {};
  const table = c.table(data["config_schema"], ["config_schema"]);
  if (!table) return out;
  for (const [key, value] of Object.entries(table)) {
    const at = ["config_schema", key];
    if (key === "__proto__") {
      c.report(at, 'the key "__proto__" is not allowed', "rename the setting");
      continue;
    }
    // The seeds' short form: `key = "description"`.
    if (typeof value === "string") {
      out[key] = { type: "any", description: value, required: false };
      continue;
    }
    const field = c.table(value, at);
    if (!field) continue;
    const parsed = readConfigField(c, field, at);
    if (parsed) out[key] = parsed;
  }
  return out;
}

function readConfigField(c: Checker, field: Record<string, unknown>, at: TomlPath): ConfigField | undefined {
  const before = c.problems.length;
  c.knownKeys(field, at, ["type", "default", "required", "description"]);
  const type = c.oneOf(field, at, "type", CONFIG_FIELD_TYPES, CONFIG_TYPE_ALIASES) ?? "any";
  const description = c.string(field, at, "description");
  const required = c.boolean(field, at, "required") ?? false;
  const dflt = field["default"];
  if (dflt !== undefined && !matchesType(dflt, type)) {
    c.report([...at, "default"], `default is ${typeName(dflt)}, but the type is "${type}"`, `make the default a ${type} or change the type`);
  }
  if (c.problems.length > before) return undefined;
  const out: ConfigField = { type, required };
  if (description !== undefined) out.description = description;
  if (dflt !== undefined) out.default = dflt;
  return out;
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

function readThreshold(c: Checker, table: Record<string, unknown>, path: TomlPath): Threshold | undefined {
  const text = c.string(table, path, "threshold");
  if (text === undefined) return undefined;
  const t = parseThreshold(text);
  if (!t) c.report([...path, "threshold"], `"${text}" is not a valid threshold`, 'write "M-of-N" with 1 <= M <= N, e.g. "2-of-3"');
  return t;
}

function readGovernance(c: Checker, data: Record<string, unknown>): ModuleManifest["governance"] {
  const at = ["governance"];
  const table = c.table(data["governance"], at);
  if (!table) return undefined;
  c.knownKeys(table, at, ["tier", "maintainers", "threshold", "review_period_days"]);
  const tier = c.string(table, at, "tier");
  const maintainers = c.stringArray(table, at, "maintainers") ?? [];
  const threshold = readThreshold(c, table, at);
  const review = c.integer(table, at, "review_period_days");
  if (threshold && maintainers.length > 0 && threshold.n !== maintainers.length) {
    c.report(
      [...at, "threshold"],
      `threshold "${threshold.m}-of-${threshold.n}" does not match the ${maintainers.length} maintainers listed`,
      `write "${Math.min(threshold.m, maintainers.length)}-of-${maintainers.length}" or list ${threshold.n} maintainers`,
    );
  }
  const out: NonNullable<ModuleManifest["governance"]> = { maintainers };
  if (tier !== undefined) out.tier = tier;
  if (threshold) out.threshold = threshold;
  if (review !== undefined) out.review_period_days = review;
  return out;
}

const HEX = /^[0-9a-fA-F]*$/;

function readSignatures(c: Checker, data: Record<string, unknown>): ModuleManifest["signatures"] {
  const at = ["signatures"];
  const table = c.table(data["signatures"], at);
  if (!table) return undefined;
  c.knownKeys(table, at, ["maintainers", "threshold"]);
  const threshold = readThreshold(c, table, at);
  const maintainers: MaintainerSignature[] = [];
  const list = table["maintainers"];
  if (list !== undefined && !Array.isArray(list)) {
    c.report([...at, "maintainers"], `expected an array of tables, found ${typeName(list)}`, 'write maintainers = [{ name = "...", key = "...", signature = "..." }]');
  } else if (list) {
    list.forEach((entry: unknown, index) => {
      const sig = readMaintainerSignature(c, entry, [...at, "maintainers", index]);
      if (sig) maintainers.push(sig);
    });
  }
  const out: NonNullable<ModuleManifest["signatures"]> = { maintainers };
  if (threshold) out.threshold = threshold;
  return out;
}

function readMaintainerSignature(c: Checker, entry: unknown, at: TomlPath): MaintainerSignature | undefined {
  if (!isTable(entry)) {
    c.report(at, `expected a table, found ${typeName(entry)}`, 'write { name = "...", key = "...", signature = "..." }');
    return undefined;
  }
  const before = c.problems.length;
  c.knownKeys(entry, at, ["name", "key", "signature", "scheme"]);
  const name = c.string(entry, at, "name", true);
  const key = c.string(entry, at, "key", true);
  const signature = c.string(entry, at, "signature", true);
  const scheme = c.oneOf(entry, at, "scheme", ["schnorr", "ecdsa"] as const);
  if (key !== undefined && !isPublicKeyHex(key)) {
    c.report([...at, "key"], "not a public key", "use hex: 33-byte compressed (66 characters, starting 02 or 03) or 32-byte x-only (64 characters)");
  }
  if (signature !== undefined && !isSignatureHex(signature, scheme)) {
    c.report(
      [...at, "signature"],
      "not a signature",
      scheme === "schnorr" ? "use hex of a 64-byte Schnorr signature (128 characters)" : "use hex of a 64-byte Schnorr or compact ECDSA signature (128 characters), or a DER ECDSA signature",
    );
  }
  if (c.problems.length > before) return undefined;
  const out: MaintainerSignature = { name: name!, key: key!.toLowerCase(), signature: signature!.toLowerCase() };
  if (scheme) out.scheme = scheme;
  return out;
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

function readBinary(c: Checker, data: Record<string, unknown>): ModuleManifest["binary"] {
  const at = ["binary"];
  const table = c.table(data["binary"], at);
  if (!table) return undefined;
  c.knownKeys(table, at, ["hash", "size", "download_url"]);
  const out: NonNullable<ModuleManifest["binary"]> = {};
  const hash = c.string(table, at, "hash");
  if (hash !== undefined) {
    if (/^sha256:[0-9a-f]{64}$/.test(hash)) out.hash = hash;
    else c.report([...at, "hash"], `"${hash}" is not a SHA-256 hash`, 'write "sha256:" followed by 64 lowercase hex characters');
  }
  const size = c.integer(table, at, "size");
  if (size !== undefined) out.size = size;
  const url = c.string(table, at, "download_url");
  if (url !== undefined) {
    if (isHttpUrl(url)) out.download_url = url;
    else c.report([...at, "download_url"], `"${url}" is not an http(s) URL`, 'write a URL starting with "https://"');
  }
  return out;
}

function isHttpUrl(text: string): boolean {
  try {
    const u = new URL(text);
    return (u.protocol === "https:" || u.protocol === "http:") && u.hostname !== "";
  } catch {
    return false;
  }
}

function readCompatibility(c: Checker, data: Record<string, unknown>): ModuleManifest["compatibility"] {
  const at = ["compatibility"];
  const table = c.table(data["compatibility"], at);
  if (!table) return undefined;
  const versions = ["min_consensus_version", "min_protocol_version", "min_node_version", "max_node_version"] as const;
  c.knownKeys(table, at, [...versions, "tested_with"]);
  const out: NonNullable<ModuleManifest["compatibility"]> = { tested_with: [] };
  for (const key of versions) {
    const v = readVersion(c, table, [...at, key]);
    if (v !== undefined) out[key] = v;
  }
  if (c.stringArray(table, at, "tested_with")) {
    (table["tested_with"] as unknown[]).forEach((v, index) => {
      if (typeof v !== "string") return; // reported by stringArray
      if (isStrictVersion(v)) out.tested_with.push(v);
      else c.report([...at, "tested_with", index], `"${v}" is not a semantic version`, versionHint(v));
    });
  }
  return out;
}
