// Verifying a module before it runs: integrity, maintainer signatures, compatibility.
//
//   snapshotModule   reads what will run exactly once: the manifest's TOML data, and the
//                    TypeScript sources (bundled from that snapshot) or the native binary's
//                    bytes; computes the module hash (hash.ts).
//   verifyModule     decides, under the operator's policy for the module, whether it may run.
//   verifyForStart   both, for the manager: throws a ModhostError saying what failed and what
//                    to do; logs the loud warnings of "allow-unsigned".
//
// The rules (docs/signing.md, docs/operator-guide.md "Verified modules and the registry"):
//   - [binary] hash present: it must equal the computed hash, under every policy.
//   - [compatibility] and a dependency on the host must be satisfied, under every policy.
//   - signatures = "require" (the default): [binary] hash must be present ("pinned"), and at
//     least `threshold` distinct operator-pinned keys must have validly signed the canonical
//     manifest (canonical.ts), which includes the hash.
//   - signatures = "allow-unsigned": missing or insufficient signatures and a missing hash are
//     allowed, with a warning at every start.

import { chmod, mkdir, mkdtemp, realpath, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { isDeepStrictEqual } from "node:util";
import type { HostConfig } from "../config.ts";
import { ModhostError } from "../errors.ts";
import { parseManifest, type ModuleManifest } from "../manifest.ts";
import { MANIFEST_LIMIT, readToml } from "../toml.ts";
import { compileModule, CompileError } from "../../runtime/isolate/compile.ts";
import { ModuleFileError, readModuleFile } from "../../runtime/module-file.ts";
import { manifestDigest } from "./canonical.ts";
import { checkCompatibility, type CompatResult } from "./compat.ts";
import type { SignaturePolicy } from "./config.ts";
import { shortHash, sourceTreeHash, type HashedFile } from "./hash.ts";
import { checkSignatures, describeRoot, describeSigners, policyFor, type SignatureResult, type TrustRoot } from "./trust.ts";

export interface ModuleSnapshot {
  name: string;
  runtime: ModuleManifest["runtime"];
  /** "sha256:<hex>": the module hash computed from what was read. */
  hash: string;
  /** Bytes hashed (the binary, or the sum of the sources). */
  size: number;
  /** What the hash covers: the sources, or the binary (at its entry_point path). */
  files: HashedFile[];
  /** module.toml as TOML data, as read for this check (the signed form is derived from it). */
  data: Record<string, unknown>;
  /** SHA-256 of the canonical manifest: what maintainers sign. */
  digest: Uint8Array;
  /** TypeScript: the bundle built from the hashed snapshot. */
  bundle?: { code: string; sha256: string };
  /** Native: the binary's bytes; exactly these are executed. */
  binary?: Uint8Array;
}

type Integrity = "ok" | "mismatch" | "unpinned";

export interface VerificationReport {
  module: string;
  policy: SignaturePolicy;
  root?: TrustRoot;
  hash: string;
  /** [binary] hash of the manifest. */
  pinned?: string;
  integrity: Integrity;
  signatures: SignatureResult;
  compat: CompatResult;
  ok: boolean;
  /** When not ok: what failed, and what to do. */
  error?: { message: string; hint: string };
  /** For the log, at every start (the "allow-unsigned" warning, invalid signatures, notes). */
  warnings: string[];
  /** One line for status, `modhost check` and the audit log. */
  summary: string;
}

export interface VerifiedModule {
  manifest: ModuleManifest;
  snapshot: ModuleSnapshot;
  report: VerificationReport;
  /** Native: the private copy that is executed (see materialiseBinary). */
  binaryFile?: string;
}

// ---------------------------------------------------------------------------------------
// Reading

/**
 * module.toml as data, read again for the signature check. The manager loaded `manifest` from
 * the same file earlier: if the file changed since, the data would not describe the manifest
 * in use, so that is an error.
 */
async function readManifestData(manifest: ModuleManifest): Promise<Record<string, unknown>> {
  const { data, source } = await readToml(manifest.file, MANIFEST_LIMIT);
  const again = parseManifest(data, source, manifest.file);
  if (!isDeepStrictEqual(again, manifest)) {
    throw new ModhostError("verification_failed", `${manifest.name}: ${manifest.file} changed while the module was being loaded`, `load it again (modhost load ${manifest.name})`);
  }
  return data;
}

/** Read what will run, once, and hash it. Throws CompileError (TypeScript) or not_found (native binary). */
export async function snapshotModule(manifest: ModuleManifest, data?: Record<string, unknown>): Promise<ModuleSnapshot> {
  const toml = data ?? (await readManifestData(manifest));
  const base = { name: manifest.name, runtime: manifest.runtime, data: toml, digest: manifestDigestOrThrow(manifest.name, toml) };
  if (manifest.runtime === "isolate") {
    const compiled = await compileModule(manifest.dir, manifest.entry_point);
    const listed = new Set(compiled.sources.map((s) => s.path));
    const unhashed = compiled.files.filter((f) => !listed.has(f));
    if (unhashed.length > 0) throw new ModhostError("verification_failed", `${manifest.name}: the bundle includes files that were not hashed: ${unhashed.join(", ")}`);
    return {
      ...base,
      hash: sourceTreeHash(compiled.sources),
      size: compiled.sources.reduce((n, f) => n + f.size, 0),
      files: compiled.sources,
      bundle: { code: compiled.code, sha256: compiled.sha256 },
    };
  }
  const file = path.resolve(manifest.dir, manifest.entry_point);
  const buildIt = "build it first: npm run setup builds the shipped native modules (or scripts/build-rust.sh)";
  let real: string;
  try {
    real = await realpath(file);
  } catch (err) {
    throw new ModhostError("not_found", `${manifest.name}: entry point ${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, buildIt);
  }
  const dir = await realpath(manifest.dir);
  if (!real.startsWith(dir + path.sep)) {
    // A symlink to /proc/self/exe, /dev/zero or a host file: the host would read it, hash it
    // and copy it where the module runs.
    throw new ModhostError("verification_failed", `${manifest.name}: entry point ${file} is a symbolic link to ${real}, outside the module directory`, "copy the binary into the module directory");
  }
  let read: { bytes: Buffer; sha256: string };
  try {
    read = await readModuleFile(real, BINARY_LIMIT, file);
  } catch (err) {
    if (!(err instanceof ModuleFileError)) throw err;
    throw new ModhostError(err.reason === "unreadable" ? "not_found" : "verification_failed", `${manifest.name}: entry point ${err.message}`, err.reason === "unreadable" ? buildIt : undefined);
  }
  const bytes = read.bytes;
  return { ...base, hash: `sha256:${read.sha256}`, size: bytes.byteLength, files: [{ path: manifest.entry_point, sha256: read.sha256, size: bytes.byteLength }], binary: bytes };
}

/**
 * Bytes of a native module's binary: the host reads it whole (and keeps it while the module
 * runs: exactly these bytes are executed). A 1.9 GiB sparse file was read into the host's
 * memory; the shipped binaries are ~1 MB.
 */
export const MAX_BINARY_BYTES = 128 * 1024 * 1024;
const BINARY_LIMIT = { maxBytes: MAX_BINARY_BYTES, name: "MAX_BINARY_BYTES", fix: "strip the binary (debug information) or build it in release mode" };

function manifestDigestOrThrow(name: string, data: Record<string, unknown>): Uint8Array {
  try {
    return manifestDigest(data);
  } catch (err) {
    const e = err as ModhostError;
    throw new ModhostError("verification_failed", `${name}: module.toml cannot be verified: ${e.message}`, e.hint);
  }
}

// ---------------------------------------------------------------------------------------
// Deciding

export function verifyModule(manifest: ModuleManifest, snapshot: ModuleSnapshot, config: HostConfig): VerificationReport {
  const name = manifest.name;
  const { policy, root } = policyFor(config, name);
  const pinned = manifest.binary?.hash;
  const integrity: Integrity = pinned === undefined ? "unpinned" : pinned === snapshot.hash ? "ok" : "mismatch";
  const signatures = checkSignatures(snapshot.digest, manifest.signatures?.maintainers ?? [], root);
  const compat = checkCompatibility(manifest);
  const report: VerificationReport = { module: name, policy, hash: snapshot.hash, integrity, signatures, compat, ok: true, warnings: [...compat.notes.map((n) => `${name}: ${n}`)], summary: "" };
  if (root) report.root = root;
  if (pinned !== undefined) report.pinned = pinned;
  const signed = `${signatures.count} of ${signatures.threshold} required signature${signatures.threshold === 1 ? "" : "s"} from trusted keys`;
  const signedBy = `signed by: ${describeSigners(signatures.checks)}; trusted: ${describeRoot(root)}`;
  const fail = (message: string, hint: string) => {
    report.ok = false;
    report.error = { message, hint };
    report.summary = `REFUSED: ${message.split("\n")[0]}`;
    return report;
  };

  if (integrity === "mismatch") {
    return fail(
      `integrity check failed for ${name}: what would run is ${snapshot.hash}, but module.toml [binary] hash says ${pinned} (hashed: ${snapshot.files.map((f) => f.path).join(", ")})`,
      `its files changed after it was signed: reinstall it (modhost install ${name}) or restore the signed files; if you changed it yourself, re-sign it (modhost sign ${manifest.dir} --key FILE)`,
    );
  }
  const size = manifest.binary?.size;
  if (size !== undefined && size !== snapshot.size) {
    return fail(`integrity check failed for ${name}: [binary] size is ${size}, but what would run is ${snapshot.size} bytes`, `re-sign it (modhost sign ${manifest.dir} --key FILE), which sets hash and size`);
  }
  if (compat.problems.length > 0) {
    return fail(`compatibility check failed for ${name}: ${compat.problems.join("; ")}`, `install a version of ${name} made for this modhost (modhost update ${name}), or run a modhost version it supports`);
  }
  const invalidTrusted = signatures.checks.filter((c) => c.trusted && !c.valid);
  if (policy === "require") {
    const unsignedHint = `or, for local development only, set signatures = "allow-unsigned" in [modules.trust.${name}]`;
    if (integrity === "unpinned") {
      return fail(
        `signature check failed for ${name}: module.toml has no [binary] hash, so no signature can cover its code (signatures = "require")`,
        `have it signed: modhost sign ${manifest.dir} --key FILE sets [binary] hash and signs; ${unsignedHint}`,
      );
    }
    if (!root) {
      return fail(
        `signature check failed for ${name}: no trusted keys are configured for it (signatures = "require"); ${signedBy}`,
        `pin its maintainers' public keys in modhost.toml: [modules.trust.${name}] keys = ["<hex>"] (or publisher = "NAME" with [trust.publishers.NAME] keys = [...]); never copy them from the manifest without checking them; ${unsignedHint}`,
      );
    }
    if (!signatures.met) {
      const untrusted = signatures.checks.filter((c) => c.valid && !c.trusted);
      const hint = invalidTrusted.length > 0
        ? `the manifest or its code changed after ${invalidTrusted.map((c) => c.name).join(", ")} signed it: reinstall ${name} from a trusted source, or have it signed again`
        : untrusted.length > 0
          ? `it is signed by keys you do not trust; if you know ${untrusted.map((c) => c.name).join(", ")} and have checked the key, add it to ${root.source}; otherwise install a build signed by your trusted maintainers`
          : `ask more of the trusted maintainers to sign it (modhost sign ${manifest.dir} --key FILE)`;
      return fail(`signature check failed for ${name}: ${signed}; ${signedBy}`, `${hint}; ${unsignedHint}`);
    }
  }
  if (invalidTrusted.length > 0) {
    report.warnings.push(`${name}: invalid signature(s) from trusted key(s): ${invalidTrusted.map((c) => c.name).join(", ")} (the manifest or code changed after they signed)`);
  }
  if (signatures.met && integrity === "ok") {
    const who = signatures.checks.filter((c) => c.counted).map((c) => c.name).join(", ");
    report.summary = `verified: ${shortHash(snapshot.hash)} signed by ${signatures.count} of ${signatures.threshold} required trusted keys (${who}; ${root!.source})`;
    return report;
  }
  // allow-unsigned, not (fully) verified.
  const why = integrity === "unpinned"
    ? "no [binary] hash, so its code is not pinned"
    : !root
      ? "no trusted keys configured for it"
      : `${signed}`;
  report.summary = `UNVERIFIED (signatures = "allow-unsigned"): ${why}; ${shortHash(snapshot.hash)}`;
  report.warnings.unshift(
    `!!! ${name} runs UNVERIFIED: ${why}. It is allowed only because signatures = "allow-unsigned" applies to it. `
    + `Use this for local development only; in production pin its maintainers' keys and set signatures = "require".`,
  );
  return report;
}

export function verificationError(report: VerificationReport): ModhostError {
  return new ModhostError("verification_failed", report.error?.message ?? `${report.module} failed verification`, report.error?.hint);
}

// ---------------------------------------------------------------------------------------
// For the manager

export interface VerifyLog {
  warn(message: string): void;
}

/**
 * Verify a module for a start. Without `previous` (a load or a reload) everything is read
 * from disk again. With `previous` (a restart after a crash) the verified in-memory snapshot
 * is used again (the same code restarts; disk changes take effect with a reload), and the
 * policy, signatures and compatibility are checked again against the current configuration.
 */
export async function verifyForStart(manifest: ModuleManifest, config: HostConfig, previous: VerifiedModule | undefined, log: VerifyLog): Promise<VerifiedModule> {
  const snapshot = previous && previous.manifest === manifest ? previous.snapshot : await snapshotModule(manifest);
  const report = verifyModule(manifest, snapshot, config);
  if (!report.ok) throw verificationError(report);
  for (const w of report.warnings) log.warn(w);
  const out: VerifiedModule = { manifest, snapshot, report };
  if (previous?.binaryFile) out.binaryFile = previous.binaryFile;
  return out;
}

/**
 * Write the verified native binary to a fresh private directory under `runDir` and return its
 * path: the module executes this copy, so what runs is what was hashed, whatever happens to
 * the module directory afterwards. The directory and file belong to the host's user, are not
 * writable by anyone else (dir 0755, file 0555), and the directory is the only thing of the
 * module's the sandbox binds (read-only). A previous copy of the same module is removed.
 */
export async function materialiseBinary(v: VerifiedModule, runDir: string): Promise<string> {
  const bytes = v.snapshot.binary;
  if (!bytes) throw new Error(`${v.manifest.name} is not a native module`);
  // Others may pass through (not list) the run directory: a sandboxed module runs under its own uid.
  await chmod(runDir, 0o711);
  const base = path.join(runDir, "native");
  await mkdir(base, { recursive: true, mode: 0o711 });
  await chmod(base, 0o711);
  if (v.binaryFile) await rm(path.dirname(v.binaryFile), { recursive: true, force: true });
  const dir = await mkdtemp(path.join(base, `${v.manifest.name}-`));
  await chmod(dir, 0o755);
  const file = path.join(dir, path.basename(v.manifest.entry_point));
  await writeFile(file, bytes, { mode: 0o555, flag: "wx" });
  await chmod(file, 0o555);
  v.binaryFile = file;
  return file;
}

/** For `modhost check` and `modhost verify`: the verification of one module, never throwing. */
export async function checkModule(manifest: ModuleManifest, config: HostConfig): Promise<{ report?: VerificationReport; snapshot?: ModuleSnapshot; problem?: string }> {
  let snapshot: ModuleSnapshot;
  try {
    snapshot = await snapshotModule(manifest);
  } catch (err) {
    if (err instanceof CompileError) return { problem: `does not compile:\n${err.message}` };
    const hint = (err as ModhostError).hint;
    return { problem: `${(err as Error).message}${hint ? `\n  fix: ${hint}` : ""}` };
  }
  const report = verifyModule(manifest, snapshot, config);
  if (report.ok) return { report, snapshot };
  return { report, snapshot, problem: `${report.error!.message}\n  fix: ${report.error!.hint}` };
}
