// Steps 3 to 5 of an install (install.ts): download each blob of a planned module version into
// <modules_dir>/.staging/<name>-XXXXXX, checking its SHA-256 (client.ts), and verify the staged
// module exactly as the host will before running it: its manifest agrees with the index, the
// module hash of the staged files equals the index's, the maintainers' signatures meet the
// operator's trust, and the hash covers every file there is. Nothing here touches modules_dir
// itself: install.ts puts staged modules in place, journaled.

import { chmod, mkdir, mkdtemp, rm, rmdir, writeFile } from "node:fs/promises";
import path from "node:path";
import type { HostConfig } from "../config.ts";
import { ModhostError } from "../errors.ts";
import { loadManifest, type ModuleManifest } from "../manifest.ts";
import { snapshotModule, verificationError, verifyModule, type VerificationReport } from "../verify/module.ts";
import { fetchBlob, type VerifiedIndex } from "./client.ts";
import type { VersionEntry } from "./format.ts";
import { Progress, type ProgressSink } from "./progress.ts";
import type { PlannedInstall } from "./resolve.ts";
import { STAGING } from "./journal.ts";

/** A verified module version in the staging area. */
export interface Staged {
  name: string;
  version: string;
  dir: string;
  manifest: ModuleManifest;
  report: VerificationReport;
}

interface StageOptions {
  /** Where the progress bar goes (default stderr, drawn only on a terminal). */
  progress?: ProgressSink | undefined;
  /** Where warnings of the verification go. */
  log: (line: string) => void;
}

const TRASH = ".trash";

async function stage(config: HostConfig, vi: VerifiedIndex, p: PlannedInstall, progress: Progress, opts: StageOptions): Promise<Staged> {
  const root = path.join(config.modules.modules_dir, STAGING);
  // What commands killed while staging left here is removed by the next one, which holds
  // modules_dir before it stages (journal.ts recoverModulesDir): no guess by age.
  await mkdir(root, { recursive: true, mode: 0o700 });
  const dir = await mkdtemp(path.join(root, `${p.name}-`));
  const what = `${p.name} ${p.version}`;
  try {
    const e = p.entry;
    progress.setLabel(what);
    const manifestBytes = await fetchBlob(config, vi.url, e.manifest.sha256, e.manifest.size, progress, `${what} module.toml`);
    await writeFile(path.join(dir, "module.toml"), manifestBytes, { mode: 0o644 });
    for (const f of e.files) {
      const bytes = await fetchBlob(config, vi.url, f.sha256, f.size, progress, `${what} ${f.path}`);
      const target = path.join(dir, ...f.path.split("/"));
      await mkdir(path.dirname(target), { recursive: true, mode: 0o755 });
      await writeFile(target, bytes, { mode: f.executable ? 0o755 : 0o644, flag: "wx" });
    }
    const manifest = await verifyStaged(dir, p.name, p.version, e);
    const snapshot = await snapshotModule(manifest);
    const report = verifyModule(manifest, snapshot, config);
    if (!report.ok) {
      const err = verificationError(report);
      throw new ModhostError(err.code, `${what} from the registry: ${err.message}`, err.hint);
    }
    // What the hash covers must be all there is: no unverified extra files.
    const covered = new Set(snapshot.files.map((f) => f.path));
    const extra = e.files.map((f) => f.path).filter((f) => !covered.has(f));
    if (extra.length > 0) {
      throw new ModhostError("verification_failed", `${what} from the registry carries files its hash does not cover: ${extra.join(", ")}`, "the package is malformed; tell the registry operator");
    }
    if (snapshot.hash !== e.hash) {
      throw new ModhostError("verification_failed", `${what}: the registry index says its hash is ${e.hash}, but the downloaded files hash to ${snapshot.hash}`, "the registry index and its files disagree; nothing was installed; tell the registry operator");
    }
    for (const w of report.warnings) opts.log(`warning: ${w}`);
    await chmod(dir, 0o755);
    return { name: p.name, version: p.version, dir, manifest, report };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** The staged manifest must be the module and version the index describes. */
async function verifyStaged(dir: string, name: string, version: string, e: VersionEntry): Promise<ModuleManifest> {
  let manifest: ModuleManifest;
  try {
    manifest = await loadManifest(path.join(dir, "module.toml"));
  } catch (err) {
    throw new ModhostError("verification_failed", `${name} ${version} from the registry has an invalid module.toml: ${(err as Error).message}`, "tell the registry operator");
  }
  const problems: string[] = [];
  if (manifest.name !== name) problems.push(`its manifest names "${manifest.name}"`);
  if (manifest.version !== version) problems.push(`its manifest says version ${manifest.version}`);
  if (manifest.runtime !== e.runtime) problems.push(`its manifest says runtime ${manifest.runtime}, the index ${e.runtime}`);
  const deps = JSON.stringify(Object.entries(manifest.dependencies).sort());
  const claimed = JSON.stringify(Object.entries(e.dependencies).sort());
  if (deps !== claimed) problems.push(`its manifest's dependencies ${deps} differ from the index's ${claimed}`);
  if (problems.length > 0) {
    throw new ModhostError("verification_failed", `${name} ${version} from the registry does not match the registry index: ${problems.join("; ")}`, "the registry is inconsistent or tampered with; nothing was installed");
  }
  return manifest;
}

/** Download and stage every planned module, all verified; on any failure nothing stays staged. */
export async function downloadAndStage(config: HostConfig, vi: VerifiedIndex, plan: PlannedInstall[], opts: StageOptions): Promise<Staged[]> {
  const total = plan.reduce((n, p) => n + p.entry.manifest.size + p.entry.files.reduce((m, f) => m + f.size, 0), 0);
  const progress = new Progress(total, opts.progress ?? process.stderr);
  const staged: Staged[] = [];
  try {
    for (const p of plan) staged.push(await stage(config, vi, p, progress, opts));
    progress.finish();
    return staged;
  } catch (err) {
    progress.finish();
    await cleanupStaging(config, staged);
    throw err;
  }
}

/** Remove staged modules (after they were put in place, or on failure) and the then empty staging and trash directories. */
export async function cleanupStaging(config: HostConfig, staged: Staged[]): Promise<void> {
  for (const s of staged) await rm(s.dir, { recursive: true, force: true });
  await rmdir(path.join(config.modules.modules_dir, STAGING)).catch(() => undefined); // when empty
  await rmdir(path.join(config.modules.modules_dir, TRASH)).catch(() => undefined); // when empty
}
