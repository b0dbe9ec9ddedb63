// One file: one state machine per module and the commands that drive it, read together to see
// that no two commands run at once for a module and none leaves an instance behind.
//
// The module manager: which modules run, and the operator's commands on them. It discovers
// modules, applies the operator's selection and grants (host/manager-plan.ts), loads them in
// dependency order at most start_concurrency at a time, unloads dependants first, and runs
// load, unload, reload, enable and reconfigure at runtime. The processes themselves (start,
// exit, restart policy with backoff, quarantine, health, stop escalation) are the
// supervisor's (host/supervisor.ts); a module that fails is reported and isolated, every
// other module keeps running.
//
// Each module is one state machine, driven only through its own command queue (host/lifecycle.ts
// KeyedQueue): load, unload, reload, enable, a scheduled restart and the shutdown's stop run one
// after another for one module, and independently for different modules.
//
//   pending -> starting -> running -> stopping -> stopped
//                 |           | (exit)
//                 v           v
//              failed      crashed --(restart timer)--> starting
//                 \           |
//                  +--> quarantined (quarantine_after failures within quarantine_window_ms;
//                                    persisted; only `modhost enable` lifts it)

import { stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { ApiHub } from "./hub.ts";
import { CONFIG_SECTIONS, limitsFor, type HostConfig } from "./config.ts";
import { NODE_DEPENDENCY_NAMES, type ModuleManifest } from "./manifest.ts";
import { checkRanges, planLoad } from "./deps.ts";
import { moduleConfig } from "./module-config.ts";
import { ModhostError } from "./errors.ts";
import type { HostEvents } from "../capabilities/event-types.ts";
import type { SourceLogger } from "./log.ts";
import { HOST_VERSION } from "./version.ts";
import { describeGrants, formatDescriptor } from "../capabilities/grants.ts";
import { ModuleStore } from "../storage/store.ts";
import type { AuditRecord } from "./audit.ts";
import type { HostServices } from "../capabilities/types.ts";
import type { HostSession } from "./session.ts";
import { KeyedQueue, LifecycleState } from "./lifecycle.ts";
import type { ModuleProcess } from "../runtime/process.ts";
import { quarantineProblem, Supervisor, type ModuleRecord, type SupervisorOptions } from "./supervisor.ts";
import { changedSections, dependencyLevels, discoverModules, newRecord, notFound, preverify, selectModules, Semaphore, statusOf, type Discovery, type ModuleStatus } from "./manager-plan.ts";

export { changedSections, type Discovery, type ModuleStatus };

/** [modules] start_concurrency = 0: how many modules boot at once, from the CPU count. */
export function defaultConcurrency(): number {
  return Math.max(1, os.availableParallelism());
}

export interface ManagerOptions extends SupervisorOptions {
  /** Grant every module what it requests (modhost dev). The host logs a warning. */
  grantAll?: boolean;
}

export class ModuleManager {
  private readonly records = new Map<string, ModuleRecord>();
  /** Modules that never got a record (bad manifest, dependency problems, disabled). */
  private readonly notLoaded = new Map<string, { problem: string; manifest?: ModuleManifest }>();
  readonly hub: ApiHub;
  private readonly log: SourceLogger;
  private loadOrder: string[] = [];
  /** Every command on one module (load, unload, reload, enable, restart, stop) runs after the previous one. */
  private readonly queue = new KeyedQueue();
  /** The processes: start, exit, restart policy, health, stop (host/supervisor.ts). */
  private readonly supervisor: Supervisor;
  /** Quarantine and failure history, persisted in the data directory. */
  private lifecycleState: LifecycleState | undefined;
  private inventoryRun: Promise<void> = Promise.resolve();
  /** The inventory (name, version pairs) this manager last wrote to the state file. */
  private savedInventory: string | undefined;
  /** Host services handed to every module's calls; set by the host before modules start. */
  services: HostServices | undefined;

  constructor(private opts: ManagerOptions) {
    this.log = opts.logger.for("host");
    this.hub = new ApiHub({
      onDenied: (d) => {
        opts.logger.note(d.module, "warn", `denied: ${d.reason}`);
        opts.audit?.write({ kind: "denied", module: d.module, action: d.method, permission: d.permission, reason: d.reason });
      },
      onAction: (a) => {
        const detail = { ...(a.targets ? { targets: a.targets } : {}), ...(a.error ? { error: a.error } : {}) };
        opts.audit?.write({
          kind: "action", module: a.module, action: a.method,
          ...(a.permission ? { permission: a.permission } : {}),
          ...(Object.keys(detail).length > 0 ? { detail } : {}),
        });
      },
      // Once per failing request: held to the host's budget for notes about that module.
      onInternalError: (module, method, err) => opts.logger.note(module, "error", `${method} from ${module} failed: ${(err as Error)?.stack ?? String(err)}`, undefined, "host"),
    });
    this.supervisor = new Supervisor(opts, {
      hub: this.hub,
      queue: this.queue,
      services: () => this.services,
      lifecycle: () => this.lifecycleState,
      replay: (name, type) => (type === "ModuleLoaded" ? this.loadedEvents() : type === "ConfigLoaded" ? [{ type, payload: this.configLoadedFor(name, [...CONFIG_SECTIONS]) }] : []),
    });
  }

  /** The persisted quarantine state; opened by prepare(), or on the first command without it. */
  private async state(): Promise<LifecycleState> {
    return (this.lifecycleState ??= await LifecycleState.open(this.opts.config.modules.data_dir, (m) => this.log.warn(m)));
  }

  private audit(module: string, action: string, detail?: AuditRecord["detail"], reason?: string): void {
    this.opts.audit?.write({ kind: "lifecycle", module, action, ...(reason ? { reason } : {}), ...(detail ? { detail } : {}) });
  }

  private publish<K extends "ModuleInstalled" | "ModuleUpdated" | "ModuleRemoved">(type: K, payload: HostEvents[K]): void {
    this.opts.bus.publish(type, payload);
  }

  /**
   * Compare what modules_dir holds with what the host saw there last (kept across restarts in
   * the lifecycle state file) and publish ModuleInstalled, ModuleUpdated and ModuleRemoved for
   * the differences. The host calls it once its modules have started, and after every load,
   * reload and unload: what `modhost install`, `update` and `remove` ask a running host to do.
   * Changes made while no host ran are announced at the next start. One at a time.
   */
  takeInventory(): Promise<void> {
    const run = this.inventoryRun.then(async () => {
      const state = await this.state();
      const { manifests } = await this.discover();
      const now = new Map(manifests.map((m) => [m.name, m.version]));
      const diff = state.takeInventory(now);
      for (const e of diff.installed) {
        this.log.info(`${e.module} ${e.version} was installed`);
        this.publish("ModuleInstalled", e);
      }
      for (const e of diff.updated) {
        this.log.info(`${e.module} was updated: ${e.old_version} -> ${e.new_version}`);
        this.publish("ModuleUpdated", e);
      }
      for (const e of diff.removed) {
        this.log.info(`${e.module} ${e.version} was removed`);
        this.publish("ModuleRemoved", e);
      }
      // Every load, unload and reload takes the inventory; the file is written only when it
      // changed since this manager last wrote it (other changes of the state save themselves).
      const key = JSON.stringify([...now]);
      if (key === this.savedInventory) return;
      await state.save();
      this.savedInventory = key;
    });
    this.inventoryRun = run.catch((err: Error) => this.log.warn(`cannot take the inventory of modules_dir: ${err.message}`));
    return this.inventoryRun;
  }

  /** What modules_dir holds: name -> version (for RegistryDiscovery). */
  async installedVersions(): Promise<Map<string, string>> {
    const { manifests } = await this.discover();
    return new Map(manifests.map((m) => [m.name, m.version]));
  }

  /** The module versions announced as ModuleDiscovered, kept in the lifecycle state file. */
  async announcements(): Promise<{ all(): Array<[string, string]>; set(name: string, version: string): void; save(): Promise<void> }> {
    const state = await this.state();
    return { all: () => state.announcedVersions(), set: (n, v) => state.announce(n, v), save: () => state.save() };
  }

  /** Read every `<modules_dir>/<dir>/module.toml`. Broken manifests are reported, not fatal. */
  discover(): Promise<Discovery> {
    return discoverModules(this.opts.config.modules.modules_dir);
  }

  /**
   * Decide what will load: enabled/disabled lists, dependency plan, grants, quarantine. Fills
   * the records; returns nothing, `status()` shows the outcome.
   */
  async prepare(): Promise<void> {
    const { config } = this.opts;
    const { manifests, broken } = await this.discover();
    for (const b of broken) this.notLoaded.set(path.basename(b.dir), { problem: `invalid manifest:\n${b.error}` });

    const wanted = selectModules(config, manifests, this.notLoaded);

    const plan = planLoad(wanted, HOST_VERSION, await checkRanges(wanted, HOST_VERSION));
    for (const s of plan.skipped) this.notLoaded.set(s.name, { problem: s.reason, manifest: wanted.find((m) => m.name === s.name) });
    for (const n of plan.notes) this.log.info(`${n.name}: ${n.note}`);

    const state = await this.state();
    for (const manifest of plan.order) {
      const rec = this.makeRecord(manifest);
      const q = state.peek(manifest.name)?.quarantined;
      if (q && rec.state !== "skipped") {
        rec.state = "quarantined";
        rec.problem = quarantineProblem(manifest.name, q.failures, q.reason, q.since);
      }
      this.records.set(manifest.name, rec);
    }
    this.loadOrder = plan.order.map((m) => m.name);
  }

  /** A record for `manifest` with its effective grants; "skipped" when grants are refused. */
  private makeRecord(manifest: ModuleManifest, previous?: ModuleRecord): ModuleRecord {
    return newRecord(this.opts.config, this.opts.grantAll === true, manifest, previous);
  }

  /** How many modules start at once ([modules] start_concurrency; 0 = defaultConcurrency()). */
  private get concurrency(): number {
    const n = this.opts.config.modules.start_concurrency;
    return n > 0 ? n : defaultConcurrency();
  }

  /**
   * The modules grouped by dependency level: level 0 depends on nothing loaded, level n on
   * modules of lower levels only (hard and optional dependencies that are present).
   */
  levels(): string[][] {
    return dependencyLevels(this.loadOrder, (name) => this.records.get(name)?.manifest);
  }

  /**
   * Load every prepared module in dependency order: a module starts as soon as the modules it
   * depends on have started (or failed), at most [modules] start_concurrency at a time, so the
   * modules of one level start concurrently. A module whose start hangs holds up only the
   * modules that depend on it, and those only up to its start_timeout_ms: its start slot is
   * given back once its process has booted and said hello.
   */
  async startAll(): Promise<void> {
    const done = new Map<string, Promise<void>>();
    const slots = new Semaphore(this.concurrency);
    for (const name of this.loadOrder) {
      const rec = this.records.get(name);
      if (!rec) continue;
      const deps = [...Object.keys(rec.manifest.dependencies), ...Object.keys(rec.manifest.optional_dependencies ?? {})].filter((d) => this.records.has(d));
      done.set(name, (async () => {
        await Promise.all(deps.map((d) => done.get(d)));
        if (rec.state === "skipped") {
          this.log.error(`not loading ${name}: ${rec.problem}`);
          this.audit(name, "refused", { missing: rec.missing.map((m) => formatDescriptor(m.permission, m.scope)) }, rec.problem);
          return;
        }
        if (rec.state === "quarantined") {
          this.log.error(`not loading ${name}: ${rec.problem}`);
          this.audit(name, "quarantined", undefined, rec.problem);
          return;
        }
        const blocker = Object.keys(rec.manifest.dependencies).find((d) => this.records.has(d) && this.records.get(d)!.state !== "running");
        if (blocker) {
          rec.state = "skipped";
          rec.problem = `depends on ${blocker}, which is not running (${this.records.get(blocker)!.state})`;
          this.log.error(`not loading ${name}: ${rec.problem}`);
          return;
        }
        // The slot bounds what costs CPU at start (verification, spawning, booting Node for an
        // isolate host), so it is given back once the module has said hello: a module whose
        // start() then hangs keeps no other module from starting.
        await slots.run((release) => this.queue.run(name, async () => {
          if (this.supervisor.shuttingDown || rec.state !== "pending") return;
          await this.supervisor.start(rec, 0, release);
        }));
      })().catch((err: Error) => this.log.error(`starting ${name} failed: ${err.message}`)));
    }
    await Promise.all(done.values());
    for (const [name, nl] of this.notLoaded) {
      // Left out on purpose by the operator: say so quietly. Anything else is a problem.
      const chosen = /enabled_modules|disabled_modules/.test(nl.problem);
      this.opts.logger.log(chosen ? "info" : "error", "host", `not loading ${name}: ${nl.problem}`);
    }
  }

  /** Remove the run directories of hosts that died without cleaning up (their pid is gone). */
  removeStaleRunDirs(): Promise<void> {
    return this.supervisor.removeStaleRunDirs();
  }

  /** What the isolate pool did so far (tests, bench); undefined without one. */
  poolStats(): ReturnType<Supervisor["poolStats"]> {
    return this.supervisor.poolStats();
  }

  /**
   * ConfigLoaded as module `name` receives it: the sections that changed, and its own
   * configuration as JSON (the seeds' `config_json`). Never the host's whole configuration:
   * that holds credentials and paths no module was granted.
   */
  configLoadedFor(name: string, changed: string[]): HostEvents["ConfigLoaded"] {
    const rec = this.records.get(name);
    if (!rec) return { changed_sections: changed };
    try {
      return { changed_sections: changed, config_json: JSON.stringify(moduleConfig(this.opts.config, rec.manifest)) };
    } catch {
      return { changed_sections: changed }; // a configuration the module cannot take is reported by reconfigure
    }
  }

  private loadedEvents(): Array<{ type: string; payload: unknown }> {
    return [...this.records.values()].filter((r) => r.state === "running").map((r) => ({
      type: "ModuleLoaded",
      payload: { module: r.name, version: r.manifest.version, runtime: r.manifest.runtime },
    }));
  }

  /** Stop one module (graceful, then forced) and emit ModuleUnloaded. Queued behind the module's other commands. */
  async unload(name: string, reason = "unloaded by the operator"): Promise<void> {
    const rec = this.records.get(name);
    if (!rec) throw new ModhostError("not_found", `no module named ${name}`);
    rec.cancelStart?.(reason);
    try {
      await this.queue.run(name, () => this.supervisor.stop(rec, reason, true));
    } finally {
      await this.takeInventory();
    }
  }

  /**
   * Load (or load again) one module at runtime: re-read its manifest from disk, check that
   * its hard dependencies are running, apply the grants, start it. Other modules are untouched.
   * Queued behind the module's other commands; a pending restart is cancelled (this load is
   * the new instance).
   */
  async load(name: string): Promise<ModuleStatus> {
    try {
      return await this.queue.run(name, () => this.doLoad(name));
    } finally {
      await this.takeInventory();
    }
  }

  private async doLoad(name: string): Promise<ModuleStatus> {
    await this.state();
    const existing = this.records.get(name);
    if (existing && (existing.state === "running" || existing.state === "starting" || existing.state === "stopping")) {
      throw new ModhostError("invalid_state", `${name} is ${existing.state}`, existing.state === "running" ? `use reload to restart it` : undefined);
    }
    if (existing?.state === "quarantined" || this.lifecycleState?.peek(name)?.quarantined) {
      throw new ModhostError("quarantined", `${name} is quarantined: ${existing?.problem ?? "too many failures"}`, `fix the module, then run: modhost enable ${name}`);
    }
    const { manifests, broken } = await this.discover();
    const manifest = manifests.find((m) => m.name === name);
    if (!manifest) throw notFound(name, broken, this.opts.config.modules.modules_dir);
    if (this.opts.config.modules.disabled_modules.includes(name)) throw new ModhostError("invalid_state", `${name} is in [modules] disabled_modules`);
    // Planned against what is installed (the running modules as they run, the others as on
    // disk), so that a dependency that is installed but not running is not "not installed".
    const running = [...this.records.values()].filter((r) => r.state === "running" && r.name !== name).map((r) => r.manifest);
    const runningNames = new Set(running.map((m) => m.name));
    const planned = [...running, ...manifests.filter((m) => m.name !== name && !runningNames.has(m.name)), manifest];
    const plan = planLoad(planned, HOST_VERSION, await checkRanges(planned, HOST_VERSION));
    const skipped = plan.skipped.find((s) => s.name === name);
    if (skipped) throw new ModhostError("dependency", `${name} cannot load: ${skipped.reason}`);
    const idle = Object.entries(manifest.dependencies).filter(([dep]) => !NODE_DEPENDENCY_NAMES.includes(dep) && !runningNames.has(dep));
    if (idle.length > 0) {
      const what = idle.map(([dep, range]) => `${dep} ${range} (${manifests.find((m) => m.name === dep)?.version} is installed, ${this.records.get(dep)?.state ?? "not loaded"})`);
      throw new ModhostError("dependency", `${name} cannot load: it needs ${what.join(", ")}, installed but not running`, `start ${idle.length === 1 ? "it" : "them"} first: ${idle.map(([dep]) => `modhost ${this.records.get(dep)?.state === "quarantined" ? "enable" : "load"} ${dep}`).join(", then ")}; then load ${name} again`);
    }
    const fresh = this.makeRecord(manifest, existing);
    let rec: ModuleRecord;
    if (existing) {
      // The previous instance ends here: no pending restart, no process, no open store.
      await this.supervisor.endInstance(existing);
      // One record per module, for good: its identity is what timers and exit handlers check.
      Object.assign(existing, { manifest: fresh.manifest, state: fresh.state, problem: fresh.problem, grants: fresh.grants, missing: fresh.missing, limits: fresh.limits, verified: undefined, sha256: undefined, sandbox: undefined });
      rec = existing;
    } else {
      rec = fresh;
      this.records.set(name, rec);
    }
    this.notLoaded.delete(name);
    if (!this.loadOrder.includes(name)) this.loadOrder.push(name);
    if (rec.state === "skipped") throw new ModhostError("permission_denied", rec.problem ?? "grants refused");
    await this.supervisor.start(rec);
    if (rec.state !== "running") throw new ModhostError("load_failed", `${name} failed to load: ${rec.problem}`);
    return this.status().find((s) => s.name === name)!;
  }

  /** Stop a module and load it again from disk (new code, manifest and grants are re-read); one queued command. */
  async reload(name: string): Promise<ModuleStatus> {
    if (!this.records.has(name)) {
      const nl = this.notLoaded.get(name);
      if (nl) throw new ModhostError("invalid_state", `${name} is not loaded: ${nl.problem}`, `fix it, then run: modhost load ${name}`);
      throw new ModhostError("not_found", `no module named ${name}`);
    }
    this.records.get(name)!.cancelStart?.("reload");
    try {
      return await this.reloadQueued(name);
    } finally {
      await this.takeInventory();
    }
  }

  private reloadQueued(name: string): Promise<ModuleStatus> {
    return this.queue.run(name, async () => {
      const rec = this.records.get(name)!;
      if (rec.state === "quarantined") {
        throw new ModhostError("quarantined", `${name} is quarantined: ${rec.problem}`, `fix the module, then run: modhost enable ${name}`);
      }
      await preverify(name, this.records.get(name)?.state === "running", this.opts.config);
      await this.supervisor.stop(rec, "reload", true);
      return this.doLoad(name);
    });
  }

  /**
   * Lift a module's quarantine (the operator says it is fixed): forget its failures, persist
   * that, and load it again from disk.
   */
  async enable(name: string): Promise<ModuleStatus> {
    return this.queue.run(name, async () => {
      const rec = this.records.get(name);
      const persisted = (await this.state()).peek(name)?.quarantined;
      if (!persisted && rec?.state !== "quarantined") {
        if (!rec && !this.notLoaded.has(name)) throw new ModhostError("not_found", `no module named ${name}`);
        throw new ModhostError("invalid_state", `${name} is not quarantined (it is ${rec?.state ?? "skipped"})`, rec?.state === "running" ? undefined : `use: modhost load ${name}`);
      }
      this.lifecycleState?.release(name);
      await this.lifecycleState?.save();
      if (rec) {
        rec.state = "stopped";
        rec.problem = undefined;
        rec.restartTimes = [];
      }
      this.log.info(`${name}: quarantine lifted by the operator; loading it`);
      this.audit(name, "enable", undefined, "quarantine lifted by the operator");
      return this.doLoad(name);
    });
  }

  /**
   * Apply a changed operator configuration to running modules: new module configs are pushed
   * to the modules (config invocation; ctx.config changes), new grants take effect from the
   * next request (a module that would now be refused is unloaded), new limits apply from the
   * next start. Returns the sections that changed, for ConfigLoaded.
   */
  async reconfigure(next: HostConfig): Promise<string[]> {
    const prev = this.opts.config;
    const changed = changedSections(prev, next);
    this.opts.config = next;
    for (const rec of this.records.values()) {
      const name = rec.name;
      const touched = (section: string) => changed.includes(`modules.${section}.${name}`) || (section === "limits" && changed.includes("modules.default_limits"));
      if (touched("limits")) rec.limits = limitsFor(next, name);
      const session = this.session(name);
      if (!session) continue;
      if (touched("grants") || changed.includes("modules.on_missing_grant")) {
        const updated = this.makeRecord(rec.manifest, rec);
        if (updated.state === "skipped") {
          this.log.warn(`${name}: the new grants refuse it; unloading`);
          await this.unload(name, "grants withdrawn by the operator");
          rec.problem = updated.problem;
          continue;
        }
        rec.grants = updated.grants;
        rec.missing = updated.missing;
        session.setGrants(rec.grants);
        this.log.info(`${name}: grants now ${describeGrants(rec.grants).join(", ") || "none"}`);
        this.audit(name, "grants", { grants: describeGrants(rec.grants) });
      }
      if (touched("module_configs")) {
        try {
          await session.setConfig(moduleConfig(next, rec.manifest), rec.limits.start_timeout_ms);
          this.log.info(`${name}: configuration updated`);
        } catch (err) {
          this.log.error(`${name}: new configuration not applied: ${(err as Error).message}`);
        }
      }
    }
    return changed;
  }

  /**
   * Stop every module, dependants before what they depend on, everything else concurrently,
   * each with its own stop_timeout_ms and kill_timeout_ms. Pending restarts are cancelled.
   */
  async shutdown(): Promise<void> {
    this.supervisor.shuttingDown = true;
    for (const rec of this.records.values()) {
      this.supervisor.cancelRestart(rec);
      rec.cancelStart?.("host shutdown");
    }
    // Each module stops as soon as the modules that depend on it have stopped (or were killed
    // at their deadlines): a hung stop() holds up only what that module depends on, never an
    // unrelated module, whatever its level.
    const stopped = new Map<string, Promise<void>>();
    const names = this.levels().flat();
    for (const name of names.reverse()) {
      const rec = this.records.get(name)!;
      const dependants = names.filter((n) => {
        const m = this.records.get(n)!.manifest;
        return Object.hasOwn(m.dependencies, name) || Object.hasOwn(m.optional_dependencies ?? {}, name);
      });
      const after = dependants.map((d) => stopped.get(d)).filter((p): p is Promise<void> => p !== undefined);
      stopped.set(name, (async () => {
        await Promise.all(after);
        await this.queue.run(name, () => this.supervisor.stop(rec, "host shutdown", false)).catch(() => undefined);
      })());
    }
    await Promise.all(stopped.values());
    await this.lifecycleState?.save().catch((err: Error) => this.log.warn(`cannot save the quarantine state: ${err.message}`));
    await this.supervisor.close();
  }

  status(): ModuleStatus[] {
    const out = [...this.records.values()].map(statusOf);
    for (const [name, nl] of this.notLoaded) {
      out.push({ name, version: nl.manifest?.version ?? null, runtime: nl.manifest?.runtime ?? null, state: "skipped", problem: nl.problem, grants: [], missing: [], restarts: 0 });
    }
    return out;
  }

  get order(): readonly string[] {
    return this.loadOrder;
  }

  /** The connection of a running module, for calls into it (module API, RPC, timers). */
  session(name: string): HostSession | undefined {
    const rec = this.records.get(name);
    return rec?.state === "running" && rec.process && !rec.process.hasExited ? rec.process.session : undefined;
  }

  /** The manifest of a known module. */
  manifestOf(name: string): ModuleManifest | undefined {
    return this.records.get(name)?.manifest;
  }

  /** The live process of a module (for tests and health checks). */
  processOf(name: string): ModuleProcess<HostSession> | undefined {
    return this.records.get(name)?.process;
  }

  /** The open store of a running module (the test harness reads it while the module runs). */
  storeOf(name: string): ModuleStore | undefined {
    return this.records.get(name)?.store;
  }

  /**
   * Run `fn` with a module's store, for readers outside the module (the test harness): the live
   * store while an instance has it open; otherwise one opened for the call inside the module's
   * queue, after any close in progress, so that no load, start or restart opens the directory
   * meanwhile (LevelDB has one holder: a reader that opened it on its own made a load that came
   * at the same moment fail with "lock held"). A start that has not opened its store yet is
   * waited for, briefly, rather than queued behind (its start() may take long).
   */
  async withStore<T>(name: string, fn: (store: ModuleStore) => Promise<T>): Promise<T> {
    for (let waited = 0; ; waited += 5) {
      const rec = this.records.get(name);
      if (rec?.store) return fn(rec.store);
      const opens = rec !== undefined && (["read_storage", "write_storage", "manage_storage"] as const).some((p) => rec.grants.has(p));
      if (rec?.state !== "starting" || !opens || waited >= 30_000) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    return this.queue.run(name, async () => {
      const rec = this.records.get(name);
      if (rec?.store) return fn(rec.store);
      await rec?.storeClosing;
      const dir = path.join(this.opts.config.storage.dir, name);
      if (!(await stat(dir).catch(() => undefined))) {
        throw new ModhostError("not_found", `module ${name} has no storage (yet): nothing was written, or it lacks read_storage/write_storage`);
      }
      const store = await ModuleStore.open(dir);
      try {
        return await fn(store);
      } finally {
        await store.close();
      }
    });
  }
}

