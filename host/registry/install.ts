// Installing, updating and removing modules from a registry.
//
// Every module version goes through the same steps, and nothing reaches modules_dir unless
// all of them pass for everything the command installs:
//   1. fetch and verify the index (client.ts: registry signatures, expiry, rollback);
//   2. resolve NAME[@RANGE] and its dependencies (resolve.ts);
//   3. download each blob (module.toml and every file) into the cache, checking its SHA-256;
//   4. assemble the module in <modules_dir>/.staging/<name>-XXXXXX (steps 3 to 5: stage.ts);
//   5. verify the staged module exactly as the host will before running it (host/verify):
//      the module hash of the staged files equals the index's and [binary] hash, the
//      maintainers' signatures meet the operator's trust for the module, [compatibility];
//      the staged files are exactly what the hash covers; the manifest agrees with the index;
//   6. rename the staged directories into modules_dir (same file system: atomic), journaled
//      (journal.ts): the plan of renames is written and fsynced first, so a command killed at
//      any point is finished (or undone) by the next registry command or the next host start,
//      and a module is always installed in exactly one version, the old or the new.
// An update whose new version requests capabilities that the operator has not granted is
// verified and kept in <modules_dir>/.pending/<name> instead of replacing the installed
// version; `modhost update --activate NAME` puts it in place once the grants are there.

import { mkdir, readdir, rm, rmdir, stat } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import path from "node:path";
import semver from "semver";
import { grantsFor, type HostConfig } from "../config.ts";
import { ModhostError } from "../errors.ts";
import { loadManifest, NODE_DEPENDENCY_NAMES, type ModuleManifest } from "../manifest.ts";
import { satisfies } from "../deps.ts";
import { formatDescriptor, resolveGrants } from "../../capabilities/grants.ts";
import { clientFor } from "../rpc/client.ts";
import { terminalLine } from "../log.ts";
import { snapshotModule, verificationError, verifyModule } from "../verify/module.ts";
import { fetchIndex } from "./client.ts";
import { applyPlan, lockModulesDir, recoverModulesDir, type CrashHook, type Rename } from "./journal.ts";
import { cleanupStaging, downloadAndStage, type Staged } from "./stage.ts";
import type { ProgressSink } from "./progress.ts";
import { availableVersions, parseSpec, resolve } from "./resolve.ts";

export interface RegistryOptions {
  /** The clock (tests). */
  now?: Date;
  /** Where to report (default console.log). */
  log?: (line: string) => void;
  /** Where the progress bar goes (default stderr, drawn only on a terminal). */
  progress?: ProgressSink;
  /** Tell a running host to load/reload/unload (default true). */
  notifyHost?: boolean;
  /** Called before each journaled step (tests kill the process there: journal.ts). */
  crash?: CrashHook;
}

interface Installed {
  manifest: ModuleManifest;
  dir: string;
}

const PENDING = ".pending";
const TRASH = ".trash";

/**
 * The longest line a registry command prints. What it prints holds what the registry and the
 * modules it publishes say (descriptions, capabilities, dependency ranges, signers' names, the
 * running host's answers): every line is escaped for the operator's terminal as `modhost list`
 * escapes module text (terminalLine, host/log.ts) and cut here, saying how much was cut.
 */
export const MAX_REGISTRY_LINE_CHARS = 2000;

function out(opts: RegistryOptions): (lines: string | readonly string[]) => void {
  const say = opts.log ?? ((line) => console.log(line));
  return (lines) => {
    // A message of several lines comes as an array: a newline inside a line is escaped too, so
    // that remote text cannot start a line of its own.
    for (const line of typeof lines === "string" ? [lines] : lines) say(terminalLine(line, MAX_REGISTRY_LINE_CHARS));
  };
}

/** Modules in modules_dir by manifest name (hidden directories such as .staging are not modules). */
export async function installedModules(config: HostConfig): Promise<Map<string, Installed>> {
  const dir = config.modules.modules_dir;
  const found = new Map<string, Installed>();
  let entries: string[] = [];
  try {
    entries = (await readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory() && !e.name.startsWith(".")).map((e) => e.name).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  for (const name of entries) {
    try {
      const manifest = await loadManifest(path.join(dir, name, "module.toml"));
      found.set(manifest.name, { manifest, dir: path.join(dir, name) });
    } catch {
      // not a module, or a broken one: modhost check reports those
    }
  }
  return found;
}

function versionsOf(installed: Map<string, Installed>): Map<string, string> {
  return new Map([...installed].map(([n, i]) => [n, i.manifest.version]));
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(() => true, () => false);
}

// ---------------------------------------------------------------------------------------
// Putting staged modules in place

/**
 * A new place under .trash for a directory being replaced or removed: [where it goes, the
 * container to delete afterwards]. Nothing is created: the journaled rename makes it, so a
 * crash before the journal leaves nothing behind.
 */
async function asidePath(config: HostConfig, name: string): Promise<[string, string]> {
  const container = path.join(config.modules.modules_dir, TRASH, `${name}-${randomBytes(6).toString("hex")}`);
  return [path.join(container, "module"), container];
}

/** Renames that put staged modules at modules_dir/<name>; refused when a target exists. */
async function activationSteps(config: HostConfig, staged: Staged[]): Promise<Rename[]> {
  const steps: Rename[] = [];
  for (const s of staged) {
    const target = path.join(config.modules.modules_dir, s.name);
    if (await exists(target)) throw new ModhostError("exists", `${target} appeared while installing; nothing was installed`, "remove it or choose another module");
    steps.push({ from: s.dir, to: target });
  }
  return steps;
}

/** Journaled renames in modules_dir (journal.ts). */
function commit(config: HostConfig, what: string, steps: Rename[], leftovers: string[], opts: RegistryOptions): Promise<void> {
  return applyPlan(config.modules.modules_dir, what, steps, leftovers, opts.crash);
}

/** Finish or undo what an interrupted command left (journal.ts); says so when it did something. The caller holds modules_dir. */
async function recoverHeld(config: HostConfig, opts: RegistryOptions): Promise<void> {
  const done = await recoverModulesDir(config.modules.modules_dir);
  if (done) out(opts)(`${done} in ${config.modules.modules_dir}`);
  await rmdir(path.join(config.modules.modules_dir, TRASH)).catch(() => undefined); // when empty
}

/**
 * Run one command holding modules_dir (journal.ts lockModulesDir: a second command meanwhile
 * is refused as busy), after finishing what an interrupted one left.
 */
async function exclusive<T>(config: HostConfig, opts: RegistryOptions, command: () => Promise<T>): Promise<T> {
  const lock = await lockModulesDir(config.modules.modules_dir);
  try {
    await recoverHeld(config, opts);
    return await command();
  } finally {
    await lock.release();
  }
}

/** Finish or undo what an interrupted command left in modules_dir. */
export function recover(config: HostConfig, opts: RegistryOptions = {}): Promise<void> {
  return exclusive(config, opts, async () => undefined);
}

// ---------------------------------------------------------------------------------------
// Capabilities

interface CapabilityDiff {
  added: string[];
  removed: string[];
  kept: string[];
  /** Requested by the new version and not granted by the operator's current config. */
  ungranted: string[];
}

function capabilityDiff(config: HostConfig, before: ModuleManifest | undefined, after: ModuleManifest): CapabilityDiff {
  const fmt = (m: ModuleManifest | undefined) => (m?.capabilities ?? []).map((d) => formatDescriptor(d.permission, d.scope));
  const old = new Set(fmt(before));
  const now = fmt(after);
  const granted = grantsFor(config, after.name);
  const { missing } = resolveGrants(after.capabilities, granted.allow, granted.deny);
  return {
    added: now.filter((c) => !old.has(c)),
    removed: [...old].filter((c) => !now.includes(c)),
    kept: now.filter((c) => old.has(c)),
    ungranted: missing.map((m) => formatDescriptor(m.permission, m.scope)),
  };
}

function describeDiff(config: HostConfig, name: string, d: CapabilityDiff): string[] {
  const lines = ["  capabilities:"];
  const ungranted = new Set(d.ungranted);
  for (const c of d.added) lines.push(`    + ${c}  (new${ungranted.has(c) ? "; NOT granted" : "; granted"})`);
  for (const c of d.removed) lines.push(`    - ${c}  (no longer requested)`);
  for (const c of d.kept) lines.push(`      ${c}  (unchanged${ungranted.has(c) ? "; NOT granted" : ""})`);
  if (d.added.length + d.removed.length + d.kept.length === 0) lines.push("      (none)");
  for (const c of d.ungranted) if (!d.added.includes(c) && !d.kept.includes(c)) lines.push(`    ! ${c}  (NOT granted)`);
  if (d.ungranted.length > 0) lines.push(...grantLines(config, name, d.ungranted));
  return lines;
}

function grantLines(config: HostConfig, name: string, ungranted: string[]): string[] {
  const granted = grantsFor(config, name).allow.map((g) => formatDescriptor(g.permission, g.scope));
  const allow = [...new Set([...granted, ...ungranted])];
  return [
    `  to grant them, put this in ${config.file ?? "modhost.toml"}:`,
    `    [modules.grants.${name}]`,
    `    allow = [${allow.map((a) => JSON.stringify(a)).join(", ")}]`,
  ];
}

// ---------------------------------------------------------------------------------------
// The running host

async function tellHost(config: HostConfig, method: "load" | "reload" | "unload", name: string, opts: RegistryOptions): Promise<void> {
  const say = out(opts);
  if (opts.notifyHost === false) return;
  let client: Awaited<ReturnType<typeof clientFor>>;
  try {
    client = await clientFor(config);
  } catch (err) {
    const later = method === "unload" ? "nothing to stop" : `${name} loads at the next start (modhost run)`;
    if ((err as ModhostError).code === "not_running") say(`no host is running: ${later}`);
    else say(`could not tell the host (${(err as Error).message}): ${later}, or run modhost ${method} ${name}`);
    return;
  }
  try {
    await client.call(method, { module: name });
    say(`the running host ${method === "unload" ? "unloaded" : method === "load" ? "loaded" : "reloaded"} ${name}`);
  } catch (err) {
    const code = (err as ModhostError).code;
    if (code === "not_running") {
      say(`no host is running: ${method === "unload" ? "nothing to stop" : `${name} loads at the next start (modhost run)`}`);
      return;
    }
    // Not running (never found, or left out with a problem, which the new version may fix): load it.
    if (method === "reload" && /no module named| is not loaded: /.test((err as Error).message)) return tellHost(config, "load", name, opts);
    if (method === "unload" && /no module named/.test((err as Error).message)) return;
    const hint = (err as ModhostError).hint;
    say([`the running host could not ${method} ${name}: ${(err as Error).message}`, ...(hint ? [`  fix: ${hint}`] : [])]);
  }
}

// ---------------------------------------------------------------------------------------
// Commands

export async function search(config: HostConfig, term: string | undefined, opts: RegistryOptions = {}): Promise<Array<{ name: string; latest: string; installed?: string; description?: string }>> {
  // Reading only: while another command holds modules_dir, search without recovering.
  const lock = await lockModulesDir(config.modules.modules_dir).catch(() => undefined);
  try {
    if (lock) await recoverHeld(config, opts);
  } finally {
    await lock?.release();
  }
  const vi = await fetchIndex(config, opts);
  const installed = await installedModules(config);
  const t = term?.toLowerCase();
  const rows = [];
  for (const name of Object.keys(vi.index.modules).sort()) {
    const versions = availableVersions(vi.index, name);
    const latest = versions.at(-1);
    if (!latest) continue;
    const e = vi.index.modules[name]!.versions[latest]!;
    if (t && !name.toLowerCase().includes(t) && !(e.description ?? "").toLowerCase().includes(t)) continue;
    const row: { name: string; latest: string; installed?: string; description?: string } = { name, latest };
    const have = installed.get(name)?.manifest.version;
    if (have) row.installed = have;
    if (e.description) row.description = e.description;
    rows.push(row);
    // What the index says of a module is its author's text (a description, capabilities,
    // ranges): out() escapes and cuts each line (MAX_REGISTRY_LINE_CHARS).
    const say = out(opts);
    say(`${name} ${latest}${have ? ` (installed: ${have})` : ""}${versions.length > 1 ? ` [versions: ${versions.join(", ")}]` : ""}`);
    if (e.description) say(`    ${e.description}`);
    say(`    ${e.runtime}; capabilities: ${e.capabilities.join(", ") || "none"}${Object.keys(e.dependencies).length ? `; depends on: ${Object.entries(e.dependencies).map(([d, r]) => `${d} ${r}`).join(", ")}` : ""}`);
  }
  if (rows.length === 0) out(opts)(term ? `no module matches "${term}" in ${vi.url} (index version ${vi.index.version})` : `the registry ${vi.url} offers no modules`);
  return rows;
}

export interface InstallResult {
  installed: Array<{ name: string; version: string; dir: string; verification: string }>;
}

export function install(config: HostConfig, spec: string, opts: RegistryOptions = {}): Promise<InstallResult> {
  return exclusive(config, opts, () => installHeld(config, spec, opts));
}

async function installHeld(config: HostConfig, spec: string, opts: RegistryOptions = {}): Promise<InstallResult> {
  const say = out(opts);
  const { name, range } = parseSpec(spec);
  const vi = await fetchIndex(config, opts);
  const installed = await installedModules(config);
  const have = installed.get(name);
  if (have) {
    throw new ModhostError("exists", `${name} ${have.manifest.version} is already installed (${have.dir})`, `to get a newer version: modhost update ${name}${range !== "*" ? `@${range}` : ""}`);
  }
  const plan = resolve(vi.index, [{ name, range, by: "you" }], versionsOf(installed));
  for (const p of plan) {
    const target = path.join(config.modules.modules_dir, p.name);
    if (await exists(target)) throw new ModhostError("exists", `${target} exists but holds no module named ${p.name}`, `move it away, then install again`);
  }
  say(`installing ${plan.map((p) => `${p.name} ${p.version}`).join(", ")} from ${vi.url} (index version ${vi.index.version})`);
  const staged = await downloadAndStage(config, vi, plan, { progress: opts.progress, log: out(opts) });
  let dirs: string[];
  try {
    const steps = await activationSteps(config, staged);
    await commit(config, `install of ${staged.map((s) => `${s.name} ${s.version}`).join(", ")}`, steps, [], opts);
    dirs = steps.map((s) => s.to);
  } finally {
    await cleanupStaging(config, staged);
  }
  const result: InstallResult = { installed: [] };
  staged.forEach((s, i) => {
    result.installed.push({ name: s.name, version: s.version, dir: dirs[i]!, verification: s.report.summary });
    say(`installed ${s.name} ${s.version} in ${dirs[i]}: ${s.report.summary}`);
    const d = capabilityDiff(config, undefined, s.manifest);
    if (d.ungranted.length > 0) {
      say(`  ${s.name} requests capabilities you have not granted: ${d.ungranted.join(", ")}; it will not load until you grant them`);
      say(grantLines(config, s.name, d.ungranted));
    }
  });
  for (const s of staged) await tellHost(config, "load", s.name, opts);
  return result;
}

export interface UpdateOutcome {
  name: string;
  from: string;
  to?: string;
  status: "updated" | "pending" | "up-to-date";
}

export function update(config: HostConfig, spec: string | undefined, opts: RegistryOptions & { force?: boolean } = {}): Promise<UpdateOutcome[]> {
  return exclusive(config, opts, () => updateHeld(config, spec, opts));
}

async function updateHeld(config: HostConfig, spec: string | undefined, opts: RegistryOptions & { force?: boolean } = {}): Promise<UpdateOutcome[]> {
  const say = out(opts);
  const vi = await fetchIndex(config, opts);
  let installed = await installedModules(config);
  const targets: { name: string; range: string }[] = [];
  if (spec) {
    const { name, range } = parseSpec(spec);
    if (!installed.has(name)) throw new ModhostError("not_found", `${name} is not installed`, `install it: modhost install ${spec}`);
    targets.push({ name, range });
  } else {
    for (const name of [...installed.keys()].sort()) if (Object.hasOwn(vi.index.modules, name)) targets.push({ name, range: "*" });
    if (targets.length === 0) say(`none of the installed modules is in the registry ${vi.url}`);
  }
  const outcomes: UpdateOutcome[] = [];
  for (const t of targets) {
    const current = installed.get(t.name)!;
    const from = current.manifest.version;
    const newer = availableVersions(vi.index, t.name).filter((v) => semver.gt(v, from) && semver.satisfies(v, t.range, { includePrerelease: true }));
    const to = semver.rsort(newer)[0];
    if (!to) {
      say(`${t.name} ${from} is up to date${t.range !== "*" ? ` for ${t.range}` : ""} (registry index version ${vi.index.version})`);
      outcomes.push({ name: t.name, from, status: "up-to-date" });
      continue;
    }
    // Modules that depend on this one must accept the new version.
    const broken = [...installed.values()].filter((i) => i.manifest.name !== t.name && Object.hasOwn(i.manifest.dependencies, t.name) && !satisfies(to, i.manifest.dependencies[t.name]!));
    if (broken.length > 0 && !opts.force) {
      throw new ModhostError("dependency", `cannot update ${t.name} to ${to}: ${broken.map((b) => `${b.manifest.name} ${b.manifest.version} needs ${t.name} ${b.manifest.dependencies[t.name]}`).join("; ")}`, `update those first, choose a version they accept (modhost update ${t.name}@RANGE), or pass --force`);
    }
    const others = versionsOf(installed);
    others.delete(t.name);
    const plan = resolve(vi.index, [{ name: t.name, range: `=${to}`, by: "you" }], others);
    say(`updating ${t.name} ${from} -> ${to}${plan.length > 1 ? ` (with ${plan.filter((p) => p.name !== t.name).map((p) => `${p.name} ${p.version}`).join(", ")})` : ""} from ${vi.url} (index version ${vi.index.version})`);
    const staged = await downloadAndStage(config, vi, plan, { progress: opts.progress, log: out(opts) });
    try {
      const mine = staged.find((s) => s.name === t.name)!;
      const deps = staged.filter((s) => s !== mine);
      // New dependencies are new modules: installed now, like modhost install would, in the
      // same journaled step as the update itself.
      const depSteps = await activationSteps(config, deps);
      const reportDeps = () => {
        for (const [i, s] of deps.entries()) say(`installed ${s.name} ${s.version} in ${depSteps[i]!.to}: ${s.report.summary}`);
      };
      const diff = capabilityDiff(config, current.manifest, mine.manifest);
      if (diff.ungranted.length > 0) {
        const pendingRoot = path.join(config.modules.modules_dir, PENDING);
        await mkdir(pendingRoot, { recursive: true, mode: 0o755 });
        const pending = path.join(pendingRoot, t.name);
        const steps = [...depSteps];
        const leftovers: string[] = [];
        if (await exists(pending)) {
          const [aside, container] = await asidePath(config, `${t.name}.pending`);
          steps.push({ from: pending, to: aside });
          leftovers.push(container);
        }
        steps.push({ from: mine.dir, to: pending });
        await commit(config, `update of ${t.name} ${from} -> ${to} (kept pending)`, steps, leftovers, opts);
        reportDeps();
        say([
          `${t.name} ${to} is verified (${mine.report.summary}) but NOT activated: it requests capabilities you have not granted.`,
          `${t.name} ${from} stays installed (and running, if it is).`,
          ...describeDiff(config, t.name, diff),
          `  then activate it: modhost update --activate ${t.name}`,
          `  (the new version waits in ${pending})`,
        ]);
        outcomes.push({ name: t.name, from, to, status: "pending" });
        for (const s of deps) await tellHost(config, "load", s.name, opts);
        continue;
      }
      const [aside, container] = await asidePath(config, t.name);
      await commit(config, `update of ${t.name} ${from} -> ${to}`, [...depSteps, { from: current.dir, to: aside }, { from: mine.dir, to: current.dir }], [container], opts);
      reportDeps();
      say([`updated ${t.name} ${from} -> ${to}: ${mine.report.summary}`, ...describeDiff(config, t.name, diff)]);
      outcomes.push({ name: t.name, from, to, status: "updated" });
      for (const s of deps) await tellHost(config, "load", s.name, opts);
      await tellHost(config, "reload", t.name, opts);
    } finally {
      await cleanupStaging(config, staged);
    }
    installed = await installedModules(config);
  }
  return outcomes;
}

/** `modhost update --activate NAME`: verify the pending version again and put it in place if its capabilities are granted now. */
export function activatePending(config: HostConfig, name: string, opts: RegistryOptions = {}): Promise<UpdateOutcome> {
  return exclusive(config, opts, () => activatePendingHeld(config, name, opts));
}

async function activatePendingHeld(config: HostConfig, name: string, opts: RegistryOptions = {}): Promise<UpdateOutcome> {
  const say = out(opts);
  const pending = path.join(config.modules.modules_dir, PENDING, name);
  if (!(await exists(path.join(pending, "module.toml")))) {
    throw new ModhostError("not_found", `no pending update of ${name} (${pending})`, `modhost update ${name} fetches one`);
  }
  const installed = await installedModules(config);
  const current = installed.get(name);
  const manifest = await loadManifest(path.join(pending, "module.toml"));
  if (manifest.name !== name) throw new ModhostError("verification_failed", `${pending} holds module ${manifest.name}, not ${name}`, `remove ${pending}`);
  const report = verifyModule(manifest, await snapshotModule(manifest), config);
  if (!report.ok) {
    const e = verificationError(report);
    throw new ModhostError(e.code, `the pending ${name} ${manifest.version} failed verification: ${e.message}`, e.hint);
  }
  const diff = capabilityDiff(config, current?.manifest, manifest);
  if (diff.ungranted.length > 0) {
    throw new ModhostError("permission_denied", [
      `the pending ${name} ${manifest.version} still requests capabilities you have not granted: ${diff.ungranted.join(", ")}; not activated`,
      ...describeDiff(config, name, diff),
    ].join("\n"), `grant them in ${config.file ?? "modhost.toml"}, then run modhost update --activate ${name} again (or modhost remove the pending version: rm -r ${pending})`);
  }
  for (const [dep, range] of Object.entries(manifest.dependencies)) {
    if (NODE_DEPENDENCY_NAMES.includes(dep)) continue;
    const have = installed.get(dep)?.manifest.version;
    if (!have || !satisfies(have, range)) throw new ModhostError("dependency", `${name} ${manifest.version} needs ${dep} ${range}, ${have ? `but ${have} is installed` : "which is not installed"}`, `modhost ${have ? "update" : "install"} ${dep}@${range}, then activate again`);
  }
  const what = `activation of ${name} ${current ? `${current.manifest.version} -> ` : ""}${manifest.version}`;
  if (current) {
    const [aside, container] = await asidePath(config, name);
    await commit(config, what, [{ from: current.dir, to: aside }, { from: pending, to: current.dir }], [container], opts);
  } else {
    const target = path.join(config.modules.modules_dir, name);
    if (await exists(target)) throw new ModhostError("exists", `${target} exists but holds no module named ${name}`, "move it away, then activate again");
    await commit(config, what, [{ from: pending, to: target }], [], opts);
  }
  await rmdir(path.join(config.modules.modules_dir, TRASH)).catch(() => undefined); // when empty
  await rmdir(path.join(config.modules.modules_dir, PENDING)).catch(() => undefined); // when empty
  say([`activated ${name} ${current ? `${current.manifest.version} -> ` : ""}${manifest.version}: ${report.summary}`, ...describeDiff(config, name, diff)]);
  await tellHost(config, "reload", name, opts);
  return { name, from: current?.manifest.version ?? "", to: manifest.version, status: "updated" };
}

export function remove(config: HostConfig, name: string, opts: RegistryOptions & { force?: boolean } = {}): Promise<void> {
  return exclusive(config, opts, () => removeHeld(config, name, opts));
}

async function removeHeld(config: HostConfig, name: string, opts: RegistryOptions & { force?: boolean } = {}): Promise<void> {
  const say = out(opts);
  const installed = await installedModules(config);
  const mod = installed.get(name);
  const pending = path.join(config.modules.modules_dir, PENDING, name);
  if (!mod) {
    if (await exists(pending)) {
      await rm(pending, { recursive: true, force: true });
      say(`removed the pending update of ${name}`);
      return;
    }
    throw new ModhostError("not_found", `${name} is not installed in ${config.modules.modules_dir}`);
  }
  const dependents = [...installed.values()].filter((i) => Object.hasOwn(i.manifest.dependencies, name));
  if (dependents.length > 0 && !opts.force) {
    throw new ModhostError("dependency", `cannot remove ${name}: ${dependents.map((d) => `${d.manifest.name} ${d.manifest.version} depends on it (${d.manifest.dependencies[name]})`).join("; ")}`, `remove those first (modhost remove ${dependents[0]!.manifest.name}), or pass --force (they will not load without it)`);
  }
  await tellHost(config, "unload", name, opts);
  const [aside, container] = await asidePath(config, name);
  const steps: Rename[] = [{ from: mod.dir, to: aside }];
  if (await exists(pending)) steps.push({ from: pending, to: path.join(container, "pending") });
  await commit(config, `removal of ${name} ${mod.manifest.version}`, steps, [container], opts);
  await rmdir(path.join(config.modules.modules_dir, TRASH)).catch(() => undefined); // when empty
  say(`removed ${name} ${mod.manifest.version} (${mod.dir})${dependents.length ? `; modules that depend on it will not load: ${dependents.map((d) => d.manifest.name).join(", ")}` : ""}`);
}
