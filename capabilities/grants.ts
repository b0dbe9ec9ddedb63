// Grants: what a module may do, Deno-style.
//
// A descriptor is a permission name, optionally narrowed to scopes:
//   "read_blockchain"                      the whole permission
//   "call_module=price-feed,block-stats"   only these target modules
//   "read_filesystem=reports"              only data-dir paths under reports/
//   "network_access=api.example.com:443"   only that host and port
// Manifests request descriptors; the operator allows and denies descriptors. The effective
// grant of a module is the intersection of what it requested and what the operator allowed,
// minus what the operator denied. Deny always wins, including at call time for scoped denies.

import { domainToASCII } from "node:url";
import { isIP } from "node:net";
import path from "node:path";
import { HOST_EVENT_NAMES, isHostEvent } from "./event-types.ts";
import { HOOK_POINT_NAMES, PERMISSIONS, closest, normalisePermission, PERMISSION_NAMES, type Permission, type ScopeKind } from "./catalogue.ts";

/** "all" means unscoped: the whole permission. */
export type Scope = "all" | readonly string[];

export interface Descriptor {
  permission: Permission;
  scope: Scope;
}

export class GrantSyntaxError extends Error {
  constructor(message: string, readonly hint?: string) {
    super(message);
    this.name = "GrantSyntaxError";
  }
}

const MODULE_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
const EVENT_NAME = /^[A-Za-z][A-Za-z0-9_.:-]{0,127}$/;

/** Parse one descriptor string. Throws GrantSyntaxError with a hint on bad input. */
export function parseDescriptor(text: string): Descriptor {
  const eq = text.indexOf("=");
  const rawName = (eq === -1 ? text : text.slice(0, eq)).trim();
  const permission = normalisePermission(rawName);
  if (!permission) {
    const guess = closest(rawName, PERMISSION_NAMES);
    throw new GrantSyntaxError(
      `unknown capability "${rawName}"`,
      guess ? `did you mean "${guess}"? (all permissions: docs/permissions.md)` : "see docs/permissions.md for the list of permissions",
    );
  }
  if (eq === -1) return { permission, scope: "all" };
  const kind = PERMISSIONS[permission].scope;
  if (kind === "none") {
    throw new GrantSyntaxError(`"${permission}" cannot be scoped`, `write "${permission}" without "=..."`);
  }
  const parts = text.slice(eq + 1).split(",").map((s) => s.trim());
  if (parts.length === 0 || parts.some((p) => p === "")) {
    throw new GrantSyntaxError(`empty scope in "${text}"`, `list scopes separated by commas, e.g. "${permission}=${example(kind)}"`);
  }
  return { permission, scope: [...new Set(parts.map((p) => canonicalScope(kind, p)))].sort() };
}

function example(kind: ScopeKind): string {
  return { none: "", path: "reports", host: "api.example.com:443", module: "price-feed", event: "NewBlock", hook: "tx_submit" }[kind];
}

/** Canonical form of one scope entry; throws GrantSyntaxError when it is not acceptable. */
function canonicalScope(kind: ScopeKind, raw: string): string {
  switch (kind) {
    case "path":
      return canonicalRelativePath(raw);
    case "host":
      return canonicalHostPort(raw);
    case "module":
      if (!MODULE_NAME.test(raw)) throw new GrantSyntaxError(`"${raw}" is not a module name`, "module names use letters, digits, '-' and '_'");
      return raw;
    case "event":
      if (!EVENT_NAME.test(raw)) throw new GrantSyntaxError(`"${raw.slice(0, 200)}" is not an event type`, "use event type names such as NewBlock (docs/events.md)");
      // A host event must be one this host has (a typo would subscribe to nothing, silently);
      // a module's own events are MODULE:NAME.
      if (!raw.includes(":") && !isHostEvent(raw)) {
        const guess = closest(raw, HOST_EVENT_NAMES);
        throw new GrantSyntaxError(
          `"${raw}" is not an event type of this host`,
          `${guess ? `did you mean "${guess}"? ` : ""}docs/events.md lists the host's event types; a module's own events are written MODULE:NAME`,
        );
      }
      return raw;
    case "hook":
      if (!(HOOK_POINT_NAMES as readonly string[]).includes(raw)) {
        const guess = closest(raw, HOOK_POINT_NAMES);
        throw new GrantSyntaxError(`"${raw}" is not a hook point`, `${guess ? `did you mean "${guess}"? ` : ""}hook points: ${HOOK_POINT_NAMES.join(", ")}`);
      }
      return raw;
    case "none":
      throw new GrantSyntaxError("this permission has no scope");
  }
}

/**
 * The characters a path scope may have, counted before it is normalised: Node's
 * path.normalize takes time that grows faster than the path with many ".." segments (a
 * manifest's "read_filesystem=../../..." of 300 KB held the host's loop for 182 s, at every
 * discovery of the modules; 1 KB takes 0.1 ms).
 */
export const MAX_PATH_SCOPE_CHARS = 1024;

/** A path scope is relative to the module's data directory and may not leave it. */
export function canonicalRelativePath(raw: string): string {
  if (raw.length > MAX_PATH_SCOPE_CHARS) {
    throw new GrantSyntaxError(`a path scope of ${raw.length} characters, more than the ${MAX_PATH_SCOPE_CHARS} it may have (MAX_PATH_SCOPE_CHARS): "${raw.slice(0, 40)}..."`, "name a directory inside the module's data directory, e.g. \"reports\"");
  }
  if (raw.includes("\0")) throw new GrantSyntaxError("path scope contains a NUL byte");
  if (path.isAbsolute(raw) || raw.startsWith("~")) {
    throw new GrantSyntaxError(`path scope "${raw}" is absolute`, "path scopes are relative to the module's data directory, e.g. \"reports\"");
  }
  const norm = path.posix.normalize(raw.replace(/\\/g, "/")).replace(/\/+$/, "");
  if (norm === ".." || norm.startsWith("../")) {
    throw new GrantSyntaxError(`path scope "${raw}" leaves the module's data directory`, "remove the \"..\" components");
  }
  return norm === "" ? "." : norm;
}

/**
 * Canonical "host" or "host:port". Hostnames are lowercased and IDNA-encoded; IP literals must
 * be written in their one canonical form (dotted quad, bracketed IPv6). Forms that resolvers
 * read as numbers ("2130706433", "0x7f.1", "127.1", "0177.0.0.1") are refused, because they
 * would let a grant name one thing and reach another.
 */
export function canonicalHostPort(raw: string): string {
  let host = raw.trim();
  // A URL where host:port belongs: say so, and show the scope the URL means.
  const scheme = /^([a-z][a-z0-9+.-]{0,15}):\/\//i.exec(host);
  if (scheme) {
    let fix = "write the host and port only, e.g. api.example.com:443";
    try {
      const url = new URL(host);
      const port = url.port || ({ "https:": "443", "http:": "80", "wss:": "443", "ws:": "80" } as Record<string, string>)[url.protocol];
      if (url.hostname && port) fix = `write "${url.hostname}:${port}" (the scope is a host and port, not a URL: no scheme, no path)`;
    } catch {
      // not even a URL: the general advice stands
    }
    throw new GrantSyntaxError(`"${raw.slice(0, 200)}" is a URL; a network scope is host:port`, fix);
  }
  let port: string | undefined;
  if (host.startsWith("[")) {
    const end = host.indexOf("]");
    if (end === -1) throw new GrantSyntaxError(`"${raw}" has an unclosed "["`);
    const rest = host.slice(end + 1);
    host = host.slice(1, end);
    if (rest !== "") {
      if (!rest.startsWith(":")) throw new GrantSyntaxError(`unexpected "${rest}" after IPv6 address in "${raw}"`);
      port = rest.slice(1);
    }
    if (isIP(host) !== 6) throw new GrantSyntaxError(`"${host}" is not an IPv6 address`);
    host = `[${canonicalIPv6(host)}]`;
  } else {
    const colon = host.lastIndexOf(":");
    if (colon !== -1) {
      if (host.indexOf(":") !== colon) throw new GrantSyntaxError(`"${raw}" looks like an IPv6 address`, "write IPv6 addresses in brackets: [::1]:8080");
      port = host.slice(colon + 1);
      host = host.slice(0, colon);
    }
    host = canonicalHostname(host, raw);
  }
  if (port !== undefined) {
    if (!/^[0-9]{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) {
      throw new GrantSyntaxError(`"${port}" is not a port number in "${raw}"`, "ports are 1 to 65535");
    }
    return `${host}:${Number(port)}`;
  }
  return host;
}

function canonicalHostname(host: string, raw: string): string {
  const lower = host.toLowerCase().replace(/\.$/, "");
  if (lower === "") throw new GrantSyntaxError(`"${raw}" has no host`);
  if (isIP(lower) === 4) {
    const octets = lower.split(".");
    if (octets.some((o) => o.length > 1 && o.startsWith("0"))) {
      throw new GrantSyntaxError(`"${raw}" uses leading zeros (read as octal by some resolvers)`, "write the address as a plain dotted quad");
    }
    return lower;
  }
  // The URL standard reads a host whose last label is a number ("2130706433", "127.1",
  // "0x7f.1", "foo.0x10") as an IPv4 address. Only the canonical dotted quad is accepted.
  const last = lower.split(".").at(-1)!;
  if (/^[0-9]+$/.test(last) || /^0x[0-9a-f]*$/.test(last)) {
    throw new GrantSyntaxError(`"${raw}" is a numeric address in a non-canonical form`, "write IPv4 addresses as a dotted quad such as 127.0.0.1");
  }
  const ascii = domainToASCII(lower);
  if (ascii === "" || !/^[a-z0-9-]+(\.[a-z0-9-]+)*$/.test(ascii) || ascii.split(".").some((l) => l.length > 63 || l.startsWith("-") || l.endsWith("-"))) {
    throw new GrantSyntaxError(`"${raw}" is not a valid host name`);
  }
  return ascii;
}

function canonicalIPv6(addr: string): string {
  // Let the URL parser produce the canonical (compressed, lowercase) form.
  return new URL(`http://[${addr}]/`).hostname.slice(1, -1);
}

/** Does `target` (already canonical) fall inside `scope` (canonical)? */
function scopeCovers(kind: ScopeKind, scope: string, target: string): boolean {
  switch (kind) {
    case "path":
      return scope === "." || target === scope || target.startsWith(scope + "/");
    case "host": {
      if (scope === target) return true;
      // "host" covers every port of host; "host:port" covers only that port.
      const bare = target.startsWith("[") ? target.slice(0, target.indexOf("]") + 1) : target.split(":")[0];
      return scope === bare;
    }
    case "module":
    case "event":
    case "hook":
    case "none":
      return scope === target;
  }
}

// ---------------------------------------------------------------------------------------
// Grant sets

export interface GrantRule {
  allow: Scope;
  /** Scoped denies are kept and checked at call time; an unscoped deny removes the permission. */
  deny: readonly string[];
}

/** The effective grants of one module: permission -> what is allowed and denied. */
export type EffectiveGrants = ReadonlyMap<Permission, GrantRule>;

export interface MissingGrant {
  permission: Permission;
  /** Scopes the module asked for and did not get, or "all". */
  scope: Scope;
  reason: "not_allowed" | "denied";
}

function mergeScopes(a: Scope, b: Scope): Scope {
  if (a === "all" || b === "all") return "all";
  return [...new Set([...a, ...b])].sort();
}

/** Fold a list of descriptors into permission -> scope (union of scopes). */
function foldDescriptors(list: readonly Descriptor[]): Map<Permission, Scope> {
  const out = new Map<Permission, Scope>();
  for (const d of list) {
    const prev = out.get(d.permission);
    out.set(d.permission, prev === undefined ? d.scope : mergeScopes(prev, d.scope));
  }
  return out;
}

/**
 * The intersection of what a module requested with what the operator allowed, minus denies.
 * Returns the effective grants and, separately, every requested grant that was not given.
 */
export function resolveGrants(
  requested: readonly Descriptor[],
  allowed: readonly Descriptor[],
  denied: readonly Descriptor[],
): { effective: Map<Permission, GrantRule>; missing: MissingGrant[] } {
  const req = foldDescriptors(requested);
  const allow = foldDescriptors(allowed);
  const deny = foldDescriptors(denied);
  const effective = new Map<Permission, GrantRule>();
  const missing: MissingGrant[] = [];

  for (const [permission, want] of req) {
    const kind = PERMISSIONS[permission].scope;
    const denyScope = deny.get(permission);
    if (denyScope === "all") {
      missing.push({ permission, scope: want, reason: "denied" });
      continue;
    }
    const have = allow.get(permission);
    if (have === undefined) {
      missing.push({ permission, scope: want, reason: "not_allowed" });
      continue;
    }
    let granted: Scope;
    if (want === "all") {
      granted = have;
    } else if (have === "all") {
      granted = want;
    } else {
      const inside = want.filter((w) => have.some((h) => scopeCovers(kind, h, w)));
      const outside = want.filter((w) => !inside.includes(w));
      if (outside.length > 0) missing.push({ permission, scope: outside, reason: "not_allowed" });
      if (inside.length === 0) continue;
      granted = inside;
    }
    const denyList = denyScope ?? [];
    if (granted !== "all") {
      const left = granted.filter((g) => !denyList.some((d) => scopeCovers(kind, d, g)));
      const removed = granted.filter((g) => !left.includes(g));
      if (removed.length > 0) missing.push({ permission, scope: removed, reason: "denied" });
      if (left.length === 0) continue;
      granted = left;
    }
    effective.set(permission, { allow: granted, deny: denyList });
  }
  return { effective, missing };
}

export type GrantDecision = { ok: true } | { ok: false; reason: string };

/**
 * The call-time check. `target` is the canonical scope target of the call (a path relative to
 * the data directory, a host:port, a module name, an event type) for scoped permissions.
 */
export function checkGrant(grants: EffectiveGrants, permission: Permission, target?: string): GrantDecision {
  const rule = grants.get(permission);
  if (!rule) return { ok: false, reason: `missing capability "${permission}"` };
  if (target === undefined) return { ok: true };
  const kind = PERMISSIONS[permission].scope;
  if (rule.deny.some((d) => scopeCovers(kind, d, target))) {
    return { ok: false, reason: `"${permission}" is denied for ${describeTarget(kind, target)}` };
  }
  if (rule.allow === "all" || rule.allow.some((a) => scopeCovers(kind, a, target))) return { ok: true };
  return { ok: false, reason: `"${permission}" is not granted for ${describeTarget(kind, target)} (granted: ${rule.allow.join(", ")})` };
}

function describeTarget(kind: ScopeKind, target: string): string {
  return { none: target, path: `path "${target}"`, host: `host "${target}"`, module: `module "${target}"`, event: `event "${target}"`, hook: `hook point "${target}"` }[kind];
}

export function formatDescriptor(permission: Permission, scope: Scope): string {
  return scope === "all" ? permission : `${permission}=${scope.join(",")}`;
}

/** Grants as descriptor strings, for the handshake, `modhost check` and logs. */
export function describeGrants(grants: EffectiveGrants): string[] {
  const out: string[] = [];
  for (const [p, rule] of grants) {
    out.push(formatDescriptor(p, rule.allow));
    for (const d of rule.deny) out.push(`!${p}=${d}`);
  }
  return out.sort();
}
