// `modhost sign`: pin a module's code and sign its manifest, by editing module.toml's text.
//
// The [binary] and [signatures] sections are rewritten cleanly at the end of the file (their
// comments are lost); everything else, comments included, stays as written. The other
// maintainers' signatures are kept when they still verify over the new canonical manifest
// (they signed the same code and manifest) and dropped otherwise, with their names reported.
// The result is parsed again and must give the digest that was signed, or nothing is written.

import { readFile, rename, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { parse } from "smol-toml";
import { ModhostError } from "../errors.ts";
import { loadManifest, parseManifest, type MaintainerSignature } from "../manifest.ts";
import { isTable } from "../toml.ts";
import { manifestDigest } from "./canonical.ts";
import { signDigest, verifyDigest, xOnlyKey, type Scheme, type SecretKey } from "./keys.ts";
import { snapshotModule, type ModuleSnapshot } from "./module.ts";

export interface SignResult {
  file: string;
  snapshot: ModuleSnapshot;
  digest: Uint8Array;
  /** This key's signature replaced an earlier one of the same key. */
  replaced: boolean;
  /** Names of signatures dropped because they no longer verify. */
  dropped: string[];
  /** Signatures in the manifest now. */
  signatures: MaintainerSignature[];
}

const SECTIONS = ["binary", "signatures"];

/** The first segment of a table header line ("[binary]", "[[signatures.maintainers]]"), or undefined when the line is not one. */
function headerName(line: string): string | undefined {
  const m = /^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$/.exec(line);
  if (!m) return undefined;
  const first = /^("([^"]*)"|'([^']*)'|[A-Za-z0-9_-]+)/.exec(m[1]!);
  return first ? (first[2] ?? first[3] ?? first[1]) : "";
}

/** The text without the [binary] and [signatures] sections (and their sub-tables). */
export function stripSections(text: string, names = SECTIONS): string {
  const lines = text.split(/\r?\n/);
  const out: string[] = [];
  let removing = false;
  let removed: string[] = [];
  for (const line of lines) {
    const name = headerName(line);
    if (name !== undefined) {
      // The comment sign wrote above [binary] goes with it, every copy of it: signing once
      // added one more each time, and manifests signed then still carry them all.
      if (!removing && names.includes(name)) dropSignComments(out);
      if (removing) {
        // Comments right before the next header belong to it.
        let keep = removed.length;
        while (keep > 0 && /^\s*(#.*)?$/.test(removed[keep - 1]!)) keep--;
        out.push(...removed.slice(keep));
        removed = [];
      }
      removing = names.includes(name);
    }
    if (removing) removed.push(line);
    else out.push(line);
  }
  while (out.length > 0 && out[out.length - 1]!.trim() === "") out.pop();
  return out.join("\n") + "\n";
}

function tomlString(s: string): string {
  return JSON.stringify(s);
}

/** The comment `modhost sign` writes above [binary]; stripSections removes it with the sections. */
const SIGN_COMMENT = ["# Written by modhost sign: the hash of what runs, and maintainer signatures over the", "# canonical manifest (docs/signing.md). Edit anything else and sign again."];

/** Removes from the end of `out` every copy of SIGN_COMMENT, with the blank lines around them. */
function dropSignComments(out: string[]): void {
  for (;;) {
    let end = out.length;
    while (end > 0 && out[end - 1]!.trim() === "") end--;
    const start = end - SIGN_COMMENT.length;
    if (start < 0 || out.slice(start, end).join("\n") !== SIGN_COMMENT.join("\n")) return;
    out.length = start;
  }
}

function renderSections(binary: Record<string, unknown>, signatures: MaintainerSignature[], threshold: string | undefined): string {
  const lines = ["", ...SIGN_COMMENT, "[binary]"];
  lines.push(`hash = ${tomlString(String(binary["hash"]))}`);
  if (binary["size"] !== undefined) lines.push(`size = ${Number(binary["size"])}`);
  if (typeof binary["download_url"] === "string") lines.push(`download_url = ${tomlString(binary["download_url"])}`);
  lines.push("", "[signatures]");
  if (threshold !== undefined) lines.push(`threshold = ${tomlString(threshold)}`);
  lines.push("maintainers = [");
  for (const s of signatures) {
    lines.push(`  { name = ${tomlString(s.name)}, key = ${tomlString(s.key)}, signature = ${tomlString(s.signature)}${s.scheme ? `, scheme = ${tomlString(s.scheme)}` : ""} },`);
  }
  lines.push("]");
  return lines.join("\n") + "\n";
}

export async function signModule(dir: string, key: SecretKey, opts: { scheme?: Scheme } = {}): Promise<SignResult> {
  const scheme = opts.scheme ?? "schnorr";
  const file = path.resolve(dir, "module.toml");
  const manifest = await loadManifest(file);
  const snapshot = await snapshotModule(manifest);
  const text = await readFile(file, "utf8");
  const data = parse(text) as Record<string, unknown>;

  const oldBinary = isTable(data["binary"]) ? data["binary"] : {};
  const binary: Record<string, unknown> = { ...oldBinary, hash: snapshot.hash, size: snapshot.size };
  const signed: Record<string, unknown> = { ...data, binary };
  const digest = manifestDigest(signed);

  const mine = key.publicKey;
  const keep: MaintainerSignature[] = [];
  const dropped: string[] = [];
  let replaced = false;
  for (const s of manifest.signatures?.maintainers ?? []) {
    if (xOnlyKey(s.key) === mine) {
      replaced = true;
      continue;
    }
    if (verifyDigest(digest, s.signature, s.key, s.scheme ?? "schnorr")) keep.push(s);
    else dropped.push(s.name);
  }
  const sig: MaintainerSignature = {
    name: key.name,
    key: scheme === "ecdsa" ? key.compressed : key.publicKey,
    signature: signDigest(digest, key, scheme),
  };
  if (scheme === "ecdsa") sig.scheme = "ecdsa";
  const signatures = [...keep, sig];
  const threshold = isTable(data["signatures"]) && typeof data["signatures"]["threshold"] === "string" ? data["signatures"]["threshold"] : undefined;

  const base = stripSections(text);
  const rest = parse(base) as Record<string, unknown>;
  if ("binary" in rest || "signatures" in rest) {
    throw new ModhostError("cannot_edit", `${file}: binary or signatures is written as a dotted key or inline table, which modhost sign cannot rewrite`, "write them as [binary] and [signatures] sections (or remove them) and sign again");
  }
  const next = base + renderSections(binary, signatures, threshold);
  const nextData = parse(next) as Record<string, unknown>;
  parseManifest(nextData, next, file); // still a valid manifest
  const check = manifestDigest(nextData);
  if (Buffer.compare(Buffer.from(check), Buffer.from(digest)) !== 0) {
    throw new ModhostError("cannot_edit", `${file}: rewriting [binary] and [signatures] changed other parts of the manifest; nothing was written`, "move [binary] and [signatures] to the end of the file as plain sections and sign again");
  }
  const mode = (await stat(file)).mode & 0o777;
  const tmp = `${file}.sign-${process.pid}.tmp`;
  await writeFile(tmp, next, { mode });
  await rename(tmp, file);
  return { file, snapshot, digest, replaced, dropped, signatures };
}
