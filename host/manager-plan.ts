// The manager's plan: which modules there are, which of them the operator wants, with what
// grants (or why they are refused), in which dependency levels, whether what is on disk may
// replace a running version (a reload), and what `modhost list` says about each. Functions of
// the configuration and of what modules_dir holds; the manager (host/manager.ts) keeps the
// records they make and runs the operator's commands on them.

import { opendir } from "node:fs/promises";
import path from "node:path";
import { grantsFor, limitsFor, missingGrantPolicy, type HostConfig } from "./config.ts";
import { loadManifest, type ModuleManifest } from "./manifest.ts";
import { ConfigError, ModhostError, formatProblem } from "./errors.ts";
import { describeGrants, formatDescriptor, resolveGrants, type Descriptor, type MissingGrant } from "../capabilities/grants.ts";
import type { ModuleRecord, ModuleState } from "./supervisor.ts";
import { snapshotModule, verificationError, verifyModule } from "./verify/module.ts";
import { dataStatus, type DataStatus } from "./data-quota.ts";

export interface ModuleStatus {
  name: string;
  version: string | null;
  runtime: string | null;
  state: ModuleState;
  /** Why the module is skipped, failed, crashed or quarantined. */
  problem?: string;
  grants: string[];
  missing: string[];
  pid?: number;
  restarts: number;
  sha256?: string;
  /** The OS sandbox actually applied to the module's process (the isolate host, for a TypeScript module): full, degraded or none. */
  sandbox?: string;
  /** Integrity and signature verification of what runs (host/verify). */
  verification?: string;
  /** Its data directory's usage against its quota (host/data-quota.ts), as last measured; absent before its first start. */
  data?: DataStatus;
  /** While it is starting: what the start waits for now ("the previous instance's storage to close", "its start()"). */
  waiting_for?: string;
}

export interface Discovery {
  manifests: ModuleManifest[];
  /** Module directories whose manifest could not be read, with the error. */
  broken: { dir: string; error: string }[];
}

/** Read every `<dir>/<module>/module.toml` ([modules] modules_dir). Broken manifests are reported, not fatal. */
/** How many module.toml files discoverModules reads at once. */
const DISCOVER_READS = 8;

/**
 * The most entries modules_dir may hold (module directories and anything else), counted before
 * any manifest is read. Every start, load, unload and reload reads every manifest in it (twice
 * for a command) and plans them together: what that costs grows with the modules and their
 * dependencies (up to 64 hard and 64 optional each), and without a limit a directory of 10,000
 * entries made each command parse 20,000 manifests.
 */
export const MAX_MODULES = 256;

export async function discoverModules(dir: string): Promise<Discovery> {
  const entries: string[] = [];
  let seen = 0;
  try {
    for await (const e of await opendir(dir)) {
      if (++seen > MAX_MODULES) {
        throw new ModhostError("config_error", `modules_dir ${dir} holds more than the ${MAX_MODULES} entries it may hold (MAX_MODULES)`, `keep at most ${MAX_MODULES} modules (and nothing else) in ${dir}; move the rest to another directory`);
      }
      if (e.isDirectory()) entries.push(e.name);
    }
  } catch (err) {
    if (err instanceof ModhostError) throw err;
    throw new ModhostError("config_error", `modules_dir ${dir} cannot be read: ${(err as Error).message}`, "set [modules] modules_dir in modhost.toml to a directory that holds your modules");
  }
  entries.sort();
  // Read DISCOVER_READS manifests at a time: one after another, each read waited for its
  // round trip through libuv's thread pool (~1 ms each on a busy machine), and every load,
  // unload and reload discovers twice (the command, then the inventory). Results keep the
  // sorted order of the directory names.
  const results: Array<ModuleManifest | { broken: Discovery["broken"][number] } | undefined> = new Array(entries.length);
  let next = 0;
  const reader = async () => {
    for (let i = next++; i < entries.length; i = next++) {
      const name = entries[i]!;
      try {
        results[i] = await loadManifest(path.join(dir, name, "module.toml"));
      } catch (err) {
        if ((err as ConfigError).problems?.some((p) => /not found|ENOENT/i.test(p.message))) continue; // not a module directory
        results[i] = { broken: { dir: path.join(dir, name), error: err instanceof ConfigError ? err.problems.map((p) => formatProblem(p)).join("\n") : (err as Error).message } };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(DISCOVER_READS, entries.length) }, reader));
  const manifests: ModuleManifest[] = [];
  const broken: Discovery["broken"] = [];
  for (const r of results) {
    if (r === undefined) continue;
    if ("broken" in r) broken.push(r.broken);
    else manifests.push(r);
  }
  return { manifests, broken };
}

/**
 * The manifests the operator wants loaded ([modules] enabled_modules, disabled_modules); the
 * others, and enabled modules that are not there, go in `notLoaded` with the reason.
 */
export function selectModules(config: HostConfig, manifests: ModuleManifest[], notLoaded: Map<string, { problem: string; manifest?: ModuleManifest }>): ModuleManifest[] {
  const { enabled_modules: on, disabled_modules: off } = config.modules;
  const wanted = manifests.filter((m) => {
    if (off.includes(m.name)) {
      notLoaded.set(m.name, { problem: "disabled in [modules] disabled_modules", manifest: m });
      return false;
    }
    if (on.length > 0 && !on.includes(m.name)) {
      notLoaded.set(m.name, { problem: "not listed in [modules] enabled_modules", manifest: m });
      return false;
    }
    return true;
  });
  for (const name of on) {
    if (!manifests.some((m) => m.name === name) && !notLoaded.has(name)) {
      notLoaded.set(name, { problem: `listed in enabled_modules but not found in ${config.modules.modules_dir}` });
    }
  }
  return wanted;
}

/**
 * A record for `manifest` with its effective grants; "skipped" when grants are refused.
 * `grantAll` (modhost dev) grants what the manifest requests. A record made again for a
 * module keeps its restart history and epoch from `previous`.
 */
export function newRecord(config: HostConfig, grantAll: boolean, manifest: ModuleManifest, previous?: ModuleRecord): ModuleRecord {
  const granted = grantsFor(config, manifest.name);
  const allow: Descriptor[] = grantAll ? manifest.capabilities : granted.allow;
  const { effective, missing } = resolveGrants(manifest.capabilities, allow, granted.deny);
  const record: ModuleRecord = {
    name: manifest.name, manifest, state: "pending", grants: effective, missing,
    limits: limitsFor(config, manifest.name), restartTimes: previous?.restartTimes ?? [], epoch: previous?.epoch ?? 0,
  };
  if (missing.length > 0 && missingGrantPolicy(config, manifest.name) === "refuse") {
    record.state = "skipped";
    record.problem = missingGrantsMessage(manifest, missing, granted.allow);
  }
  return record;
}

/**
 * The modules of `order` grouped by dependency level: level 0 depends on nothing loaded,
 * level n on modules of lower levels only (hard and optional dependencies that are present).
 */
export function dependencyLevels(order: readonly string[], manifestOf: (name: string) => ModuleManifest | undefined): string[][] {
  const level = new Map<string, number>();
  for (const name of order) {
    const manifest = manifestOf(name);
    if (!manifest) continue;
    const deps = [...Object.keys(manifest.dependencies), ...Object.keys(manifest.optional_dependencies ?? {})];
    level.set(name, 1 + Math.max(-1, ...deps.map((d) => level.get(d) ?? -1)));
  }
  const out: string[][] = [];
  for (const name of order) {
    const l = level.get(name);
    if (l !== undefined) (out[l] ??= []).push(name);
  }
  return out.filter((l) => l !== undefined);
}

/**
 * Before a reload stops the running module: the code and manifest now on disk must pass
 * verification (integrity, signatures, compatibility), or the reload is refused and the
 * running, verified version keeps running. The load that follows verifies again.
 */
export async function preverify(name: string, running: boolean, config: HostConfig): Promise<void> {
  const keeps = running ? "; the running version keeps running" : "";
  const { manifests, broken } = await discoverModules(config.modules.modules_dir);
  const manifest = manifests.find((m) => m.name === name);
  if (!manifest) {
    const e = notFound(name, broken, config.modules.modules_dir, `reload of ${name} refused: `);
    throw new ModhostError(e.code, `${e.message}${keeps}`, e.hint);
  }
  let report: ReturnType<typeof verifyModule>;
  try {
    report = verifyModule(manifest, await snapshotModule(manifest), config);
  } catch (err) {
    throw new ModhostError("load_failed", `reload of ${name} refused: ${(err as Error).message}${keeps}`, (err as ModhostError).hint);
  }
  if (!report.ok) {
    const e = verificationError(report);
    throw new ModhostError("verification_failed", `reload of ${name} refused: ${e.message}${keeps}`, e.hint);
  }
}

/**
 * The answer to a command for a module that discovery did not find: when its directory is there
 * but its manifest is broken, the problem as discovery reports it (file, line, column, fix), not
 * "no module named" (which is what load and reload answered before while its status named it).
 */
export function notFound(name: string, broken: Discovery["broken"], modulesDir: string, prefix = ""): ModhostError {
  const b = broken.find((x) => path.basename(x.dir) === name);
  if (b) return new ModhostError("invalid_manifest", `${prefix}${name} has an invalid manifest:\n${b.error}`, `fix ${path.join(b.dir, "module.toml")}, then load it again`);
  return new ModhostError("not_found", `${prefix}no module named ${name} in ${modulesDir}`);
}

/** What `modhost list` shows of a module that has a record. */
export function statusOf(rec: ModuleRecord): ModuleStatus {
  return {
    name: rec.name,
    version: rec.manifest.version,
    runtime: rec.manifest.runtime,
    state: rec.state,
    ...(rec.problem ? { problem: rec.problem } : {}),
    grants: describeGrants(rec.grants),
    missing: rec.missing.map((m) => formatDescriptor(m.permission, m.scope)),
    ...(rec.process?.pid && !rec.process.hasExited ? { pid: rec.process.pid } : {}),
    restarts: rec.restartTimes.length,
    ...(rec.sha256 ? { sha256: rec.sha256 } : {}),
    ...(rec.sandbox ? { sandbox: rec.sandbox } : {}),
    ...(rec.verified ? { verification: rec.verified.report.summary } : {}),
    ...(rec.data ? { data: dataStatus(rec.data) } : {}),
    ...(rec.state === "starting" && rec.step ? { waiting_for: rec.step } : {}),
  };
}

/** At most `limit` tasks at a time; the others wait their turn (first come, first served). */
export class Semaphore {
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly limit: number) {}

  /** Run `task` in a slot; it may give the slot back early with `release` (later calls do nothing). */
  async run<T>(task: (release: () => void) => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((r) => this.waiting.push(r));
    this.active++;
    let held = true;
    const release = () => {
      if (!held) return;
      held = false;
      this.active--;
      this.waiting.shift()?.();
    };
    try {
      return await task(release);
    } finally {
      release();
    }
  }
}

/** Which parts of the configuration differ: top-level sections and per-module tables. */
export function changedSections(a: HostConfig, b: HostConfig): string[] {
  const out: string[] = [];
  const same = (x: unknown, y: unknown) => JSON.stringify(x) === JSON.stringify(y);
  for (const section of ["host", "chain", "storage", "rpc", "hooks"] as const) if (!same(a[section], b[section])) out.push(section);
  const { module_configs: _c1, limits: _l1, grants: _g1, ...restA } = a.modules;
  const { module_configs: _c2, limits: _l2, grants: _g2, ...restB } = b.modules;
  for (const key of Object.keys(restA) as (keyof typeof restA)[]) if (!same(restA[key], restB[key])) out.push(`modules.${key}`);
  for (const table of ["module_configs", "limits", "grants"] as const) {
    const names = new Set([...Object.keys(a.modules[table]), ...Object.keys(b.modules[table])]);
    for (const name of [...names].sort()) if (!same(a.modules[table][name], b.modules[table][name])) out.push(`modules.${table}.${name}`);
  }
  return out;
}

/** The refusal message: what is missing, and the exact lines that would grant it. */
function missingGrantsMessage(manifest: ModuleManifest, missing: MissingGrant[], allowed: Descriptor[]): string {
  const notAllowed = missing.filter((m) => m.reason === "not_allowed");
  const denied = missing.filter((m) => m.reason === "denied");
  const lines = [`module ${manifest.name} requests capabilities the operator has not granted: ${missing.map((m) => formatDescriptor(m.permission, m.scope)).join(", ")}`];
  if (notAllowed.length > 0) {
    const allow = [...new Set([...allowed.map((d) => formatDescriptor(d.permission, d.scope)), ...notAllowed.map((m) => formatDescriptor(m.permission, m.scope))])];
    lines.push(
      "  to grant them, put this in modhost.toml:",
      `    [modules.grants.${manifest.name}]`,
      `    allow = [${allow.map((a) => JSON.stringify(a)).join(", ")}]`,
    );
  }
  if (denied.length > 0) {
    lines.push(`  denied in [modules.grants.${manifest.name}] deny: ${denied.map((m) => formatDescriptor(m.permission, m.scope)).join(", ")}`);
  }
  lines.push(`  or load it without them: on_missing_grant = "reduce" in [modules.grants.${manifest.name}]`);
  return lines.join("\n");
}
