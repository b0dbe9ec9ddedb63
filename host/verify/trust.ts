// Whose signatures count for a module, and how many of them there are.
//
// The trusted keys come from the operator's configuration only ([modules.trust.NAME], or the
// publisher named there or in [trust] publisher). The keys written in the manifest's
// [signatures] only say which key a signature claims to be from: a signature counts when it
// verifies against that key AND that key is pinned by the operator. Each trusted signer counts
// once, however many signatures it made (and whatever names they carry). The manifest's own
// [signatures] threshold and [governance] section are informational: they never lower the
// operator's threshold.

import type { HostConfig } from "../config.ts";
import { escapeText } from "../log.ts";
import type { MaintainerSignature } from "../manifest.ts";
import type { SignaturePolicy, TrustedKeys } from "./config.ts";
import { shortKey, verifyDigest, xOnlyKey, type Scheme } from "./keys.ts";

export interface TrustRoot extends TrustedKeys {
  /** Where it comes from, for messages: 'publisher "core"' or "[modules.trust.x] keys". */
  source: string;
}

export interface ModulePolicy {
  policy: SignaturePolicy;
  /** Undefined: the operator pinned no keys for this module. */
  root?: TrustRoot;
}

export function policyFor(config: HostConfig, module: string): ModulePolicy {
  const own = Object.hasOwn(config.modules.trust, module) ? config.modules.trust[module] : undefined;
  const policy = own?.signatures ?? config.trust.signatures;
  const publisher = own?.keys ? undefined : own?.publisher ?? config.trust.publisher;
  if (own?.keys) {
    return { policy, root: { keys: own.keys, threshold: own.threshold ?? 1, source: `[modules.trust.${module}] keys` } };
  }
  if (publisher !== undefined && Object.hasOwn(config.trust.publishers, publisher)) {
    const p = config.trust.publishers[publisher]!;
    return { policy, root: { keys: p.keys, threshold: p.threshold, source: `publisher "${publisher}"` } };
  }
  return { policy };
}

export interface SignatureCheck {
  name: string;
  /** As written in the manifest. */
  key: string;
  /** x-only hex; undefined when the key is not a point. */
  signer?: string;
  scheme: Scheme;
  /** The signature verifies against the key it names. */
  valid: boolean;
  /** The key is pinned by the operator. */
  trusted: boolean;
  /** Counted towards the threshold (valid, trusted, first from this signer). */
  counted: boolean;
}

export interface SignatureResult {
  checks: SignatureCheck[];
  /** Distinct trusted signers with a valid signature. */
  count: number;
  threshold: number;
  met: boolean;
}

/**
 * Characters of a signer's name shown (in verification reports, errors and hints). The name is
 * what the manifest's signer wrote, however long, with whatever characters: it reaches the
 * operator's terminal through `modhost install`, `update`, `verify` and `check`.
 */
const MAX_SIGNER_NAME_CHARS = 64;

/** A signer's name as shown: escaped like module text in the log (host/log.ts), cut at MAX_SIGNER_NAME_CHARS. */
function shownSignerName(name: string): string {
  const shown = escapeText(name, MAX_SIGNER_NAME_CHARS);
  return shown.cut > 0 ? `${shown.text}... (${shown.cut} more characters)` : shown.text;
}

/** Check every signature of a manifest over `digest` against the operator's `root`; each check's `name` is the signer's as shown. */
export function checkSignatures(digest: Uint8Array, signatures: readonly MaintainerSignature[], root: TrustedKeys | undefined): SignatureResult {
  const trusted = new Set(root?.keys ?? []);
  const counted = new Set<string>();
  const checks: SignatureCheck[] = signatures.map((s) => {
    const scheme: Scheme = s.scheme ?? "schnorr";
    const signer = xOnlyKey(s.key);
    const valid = signer !== undefined && verifyDigest(digest, s.signature, s.key, scheme);
    const isTrusted = signer !== undefined && trusted.has(signer);
    const counts = valid && isTrusted && !counted.has(signer!);
    if (counts) counted.add(signer!);
    const check: SignatureCheck = { name: shownSignerName(s.name), key: s.key, scheme, valid, trusted: isTrusted, counted: counts };
    if (signer !== undefined) check.signer = signer;
    return check;
  });
  const threshold = root?.threshold ?? 1;
  return { checks, count: counted.size, threshold, met: root !== undefined && counted.size >= threshold };
}

/** 'alice (ab12cd34…ef01: valid, trusted)', one per signature. */
export function describeSigners(checks: readonly SignatureCheck[]): string {
  if (checks.length === 0) return "nobody (no [signatures])";
  return checks.map((c) => {
    const what = [c.valid ? "valid" : "INVALID signature", c.trusted ? "trusted" : "not trusted"];
    if (c.valid && c.trusted && !c.counted) what.push("same signer counted once");
    return `${c.name} (${shortKey(c.signer ?? c.key)}: ${what.join(", ")})`;
  }).join(", ");
}

export function describeRoot(root: TrustRoot | undefined): string {
  if (!root) return "no keys pinned";
  return `${root.source}: ${root.keys.map(shortKey).join(", ")} (threshold ${root.threshold})`;
}
