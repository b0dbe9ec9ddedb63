// The module manager: discover modules, validate them, resolve dependencies, apply the
// operator's grants, load in dependency order, unload in reverse, supervise (crash ->
// ModuleCrashed -> restart policy with backoff -> quarantine after too many failures), and
// shut down gracefully. A module that fails is reported and isolated; every other module keeps
// running.
//
// Each module is one state machine, driven only through its own command queue (host/lifecycle.ts
// KeyedQueue): load, unload, reload, enable, a scheduled restart and the shutdown's stop run one
// after another for one module, and independently for different modules. The process, store,
// health probe and restart timer belong to the current instance; every path that ends an
// instance releases them.
//
//   pending -> starting -> running -> stopping -> stopped
//                 |           | (exit)
//                 v           v
//              failed      crashed --(restart timer)--> starting
//                 \           |
//                  +--> quarantined (quarantine_after failures within quarantine_window_ms;
//                                    persisted; only `modhost enable` lifts it)

import { access, chmod, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { constants as fsConstants } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ApiHub } from "./hub.ts";
import { CONFIG_SECTIONS, grantsFor, limitsFor, missingGrantPolicy, sandboxModeFor, type HostConfig, type Limits } from "./config.ts";
import { loadManifest, type ModuleManifest } from "./manifest.ts";
import { planLoad } from "./deps.ts";
import { moduleConfig } from "./module-config.ts";
import { ConfigError, ModhostError, formatProblem } from "./errors.ts";
import type { EventBus } from "./events/bus.ts";
import type { HostEvents } from "../capabilities/event-types.ts";
import type { Logger, SourceLogger } from "./log.ts";
import type { ChainBackend } from "../chain/backend.ts";
import { HOST_VERSION } from "./version.ts";
import { describeGrants, formatDescriptor, resolveGrants, type Descriptor, type GrantRule, type MissingGrant } from "../capabilities/grants.ts";
import type { Permission } from "../capabilities/catalogue.ts";
import { ModuleStore } from "../storage/store.ts";
import type { AuditLog, AuditRecord } from "./audit.ts";
import type { HostServices } from "../capabilities/types.ts";
import { HookRejection } from "../capabilities/hooks.ts";
import { adoptModule, flowLimits, InvocationError, spawnModule, type HostSession } from "./session.ts";
import { fairDeadline, KeyedQueue, LifecycleState, LoopStallMeter, removeStaleRunDirs, runDirPrefix } from "./lifecycle.ts";
import { describeExit, type ModuleProcess } from "../runtime/process.ts";
import { nativeSpawnSpec, sandboxedNativeSpawnSpec } from "../runtime/native/runtime.ts";
import type { SandboxLevel } from "../runtime/sandbox/policy.ts";
import { UID_TABLE_FILE, UidTable, type SandboxedSpawn } from "../runtime/sandbox/index.ts";
import { poolProfile, sandboxedIsolateSpawnSpec } from "../runtime/isolate/runtime.ts";
import { IsolatePool, type PoolStats } from "../runtime/isolate/pool.ts";
import type { StartedChild } from "../runtime/process.ts";
import { describeWarning, RESOURCE_SAMPLE_MS, ResourceWatch } from "./resource-watch.ts";
import { materialiseBinary, snapshotModule, verificationError, verifyForStart, verifyModule, type VerifiedModule } from "./verify/module.ts";

type ModuleState = "pending" | "starting" | "running" | "stopping" | "stopped" | "crashed" | "failed" | "skipped" | "quarantined";

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
}

interface ModuleRecord {
  name: string;
  manifest: ModuleManifest;
  state: ModuleState;
  problem?: string;
  grants: Map<Permission, GrantRule>;
  missing: MissingGrant[];
  limits: Limits;
  /** The current instance's process; an older process's exit is ignored. */
  process?: ModuleProcess<HostSession>;
  /** The current instance's store; closed whenever its process is gone for good or restarts. */
  store?: ModuleStore;
  /** A close of the previous instance's store still under way: a new open waits for it (LevelDB's lock). */
  storeClosing?: Promise<void>;
  restartTimes: number[];
  restartTimer?: NodeJS.Timeout;
  healthTimer?: NodeJS.Timeout;
  /** Ends a start in progress at once (unload, reload, shutdown need not wait for start_timeout_ms). */
  cancelStart?: (reason: string) => void;
  /** Why the host killed the current process (unresponsive), which outranks how its channel closed. */
  killReason?: string;
  /** Bumped by every operator command and by shutdown: a restart scheduled before it is void. */
  epoch: number;
  sha256?: string;
  /** The sandbox level actually applied to the module's process (native, or the isolate host). */
  sandbox?: SandboxLevel;
  /** The verified snapshot of what runs; a restart after a crash runs it again (host/verify/module.ts). */
  verified?: VerifiedModule;
}

export interface ManagerOptions {
  config: HostConfig;
  /** Needed to start modules; `modhost check` prepares without one. */
  chain?: ChainBackend;
  bus: EventBus;
  logger: Logger;
  /** Grant every module what it requests (modhost dev). The host logs a warning. */
  grantAll?: boolean;
  /** Where denials and privileged actions are recorded. */
  audit?: AuditLog;
  /** A module marked important died for good; the host stops. */
  onImportantFailure?: (module: string, reason: string) => void;
}

export interface Discovery {
  manifests: ModuleManifest[];
  /** Module directories whose manifest could not be read, with the error. */
  broken: { dir: string; error: string }[];
}

/** Start errors a retry cannot fix: a restart that fails with one of these is not retried. */
const PERMANENT_START_ERRORS = new Set(["verification_failed", "not_found", "permission_denied", "config_error", "internal", "hook_rejected"]);

/** The session's own timer for a health probe: only a backstop, the manager judges with a fair deadline. */
const HEALTH_INVOKE_BACKSTOP_MS = 0x7fffffff;

export class ModuleManager {
  private readonly records = new Map<string, ModuleRecord>();
  /** Modules that never got a record (bad manifest, dependency problems, disabled). */
  private readonly notLoaded = new Map<string, { problem: string; manifest?: ModuleManifest }>();
  readonly hub: ApiHub;
  private readonly log: SourceLogger;
  private runDir: string | undefined;
  private loadOrder: string[] = [];
  /** Module name -> uid, persisted in the data directory (runtime/sandbox/uids.ts). */
  private uids: Promise<UidTable> | undefined;
  /** Pre-booted isolate hosts ([host] isolate_pool; runtime/isolate/pool.ts); made at the first TypeScript start. */
  private pool: IsolatePool | undefined;
  private shuttingDown = false;
  /** Every command on one module (load, unload, reload, enable, restart, stop) runs after the previous one. */
  private readonly queue = new KeyedQueue();
  /** The host's own loop stalls, so that deadlines never blame a module for them. */
  private meterInstance: LoopStallMeter | undefined;
  /** Quarantine and failure history, persisted in the data directory. */
  private lifecycleState: LifecycleState | undefined;
  private inventoryRun: Promise<void> = Promise.resolve();
  /** Host services handed to every module's calls; set by the host before modules start. */
  services: HostServices | undefined;

  constructor(private opts: ManagerOptions) {
    this.log = opts.logger.for("host");
    this.hub = new ApiHub({
      onDenied: (d) => {
        opts.logger.log("warn", d.module, `denied: ${d.reason}`);
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
      onInternalError: (module, method, err) => opts.logger.log("error", "host", `${method} from ${module} failed: ${(err as Error)?.stack ?? String(err)}`),
    });
  }

  /** The persisted quarantine state; opened by prepare(), or on the first command without it. */
  private async state(): Promise<LifecycleState> {
    return (this.lifecycleState ??= await LifecycleState.open(this.opts.config.modules.data_dir, (m) => this.log.warn(m)));
  }

  private get meter(): LoopStallMeter {
    return (this.meterInstance ??= new LoopStallMeter());
  }

  private audit(module: string, action: string, detail?: AuditRecord["detail"], reason?: string): void {
    this.opts.audit?.write({ kind: "lifecycle", module, action, ...(reason ? { reason } : {}), ...(detail ? { detail } : {}) });
  }

  private publish<K extends keyof HostEvents>(type: K, payload: HostEvents[K]): void {
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
      const diff = state.takeInventory(new Map(manifests.map((m) => [m.name, m.version])));
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
      await state.save();
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
  async announcements(): Promise<{ get(name: string): string | undefined; set(name: string, version: string): void; save(): Promise<void> }> {
    const state = await this.state();
    return { get: (n) => state.announcedVersion(n), set: (n, v) => state.announce(n, v), save: () => state.save() };
  }

  /** Read every `<modules_dir>/<dir>/module.toml`. Broken manifests are reported, not fatal. */
  async discover(): Promise<Discovery> {
    const dir = this.opts.config.modules.modules_dir;
    let entries: string[];
    try {
      entries = (await readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name).sort();
    } catch (err) {
      throw new ModhostError("config_error", `modules_dir ${dir} cannot be read: ${(err as Error).message}`, "set [modules] modules_dir in modhost.toml to a directory that holds your modules");
    }
    const manifests: ModuleManifest[] = [];
    const broken: Discovery["broken"] = [];
    for (const name of entries) {
      const file = path.join(dir, name, "module.toml");
      try {
        manifests.push(await loadManifest(file));
      } catch (err) {
        if ((err as ConfigError).problems?.some((p) => /not found|ENOENT/i.test(p.message))) continue; // not a module directory
        broken.push({ dir: path.join(dir, name), error: err instanceof ConfigError ? err.problems.map(formatProblem).join("\n") : (err as Error).message });
      }
    }
    return { manifests, broken };
  }

  /**
   * Decide what will load: enabled/disabled lists, dependency plan, grants, quarantine. Fills
   * the records; returns nothing, `status()` shows the outcome.
   */
  async prepare(): Promise<void> {
    const { config } = this.opts;
    const { manifests, broken } = await this.discover();
    for (const b of broken) this.notLoaded.set(path.basename(b.dir), { problem: `invalid manifest:\n${b.error}` });

    const wanted = manifests.filter((m) => {
      const { enabled_modules: on, disabled_modules: off } = config.modules;
      if (off.includes(m.name)) {
        this.notLoaded.set(m.name, { problem: "disabled in [modules] disabled_modules", manifest: m });
        return false;
      }
      if (on.length > 0 && !on.includes(m.name)) {
        this.notLoaded.set(m.name, { problem: "not listed in [modules] enabled_modules", manifest: m });
        return false;
      }
      return true;
    });
    for (const name of config.modules.enabled_modules) {
      if (!manifests.some((m) => m.name === name) && !this.notLoaded.has(name)) {
        this.notLoaded.set(name, { problem: `listed in enabled_modules but not found in ${config.modules.modules_dir}` });
      }
    }

    const plan = planLoad(wanted, HOST_VERSION);
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
    const { config } = this.opts;
    const granted = grantsFor(config, manifest.name);
    const allow: Descriptor[] = this.opts.grantAll ? manifest.capabilities : granted.allow;
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

  /** How many modules start at once ([modules] start_concurrency; 0 = the CPU count). */
  private get concurrency(): number {
    const n = this.opts.config.modules.start_concurrency;
    return n > 0 ? n : Math.max(1, os.availableParallelism());
  }

  /**
   * The modules grouped by dependency level: level 0 depends on nothing loaded, level n on
   * modules of lower levels only (hard and optional dependencies that are present).
   */
  levels(): string[][] {
    const level = new Map<string, number>();
    for (const name of this.loadOrder) {
      const rec = this.records.get(name);
      if (!rec) continue;
      const deps = [...Object.keys(rec.manifest.dependencies), ...Object.keys(rec.manifest.optional_dependencies ?? {})];
      level.set(name, 1 + Math.max(-1, ...deps.map((d) => level.get(d) ?? -1)));
    }
    const out: string[][] = [];
    for (const name of this.loadOrder) {
      const l = level.get(name);
      if (l !== undefined) (out[l] ??= []).push(name);
    }
    return out.filter((l) => l !== undefined);
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
          if (this.shuttingDown || rec.state !== "pending") return;
          await this.start(rec, 0, release);
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

  private async ensureRunDir(): Promise<string> {
    if (!this.runDir) {
      // The owner's pid is in the name: a later host removes it once this process is gone.
      const dir = await mkdtemp(runDirPrefix());
      // Others may pass through, not list: sandboxed modules (their own uids) read their files here.
      await chmod(dir, 0o711);
      this.runDir = dir;
    }
    return this.runDir;
  }

  /** Remove the run directories of hosts that died without cleaning up (their pid is gone). */
  async removeStaleRunDirs(): Promise<void> {
    const removed = await removeStaleRunDirs();
    if (removed.length > 0) this.log.info(`removed ${removed.length} run director${removed.length === 1 ? "y" : "ies"} of hosts that are gone`, { dirs: removed.join(",") });
  }

  /** Close the current instance's store; a later open waits for the close to finish. */
  private releaseStore(rec: ModuleRecord): Promise<void> {
    const store = rec.store;
    rec.store = undefined;
    if (store) {
      const prev = rec.storeClosing ?? Promise.resolve();
      rec.storeClosing = prev.then(() => store.close()).catch((err: Error) => this.log.warn(`${rec.name}: closing its storage failed: ${err.message}`));
    }
    return rec.storeClosing ?? Promise.resolve();
  }

  private stopHealth(rec: ModuleRecord): void {
    if (rec.healthTimer) clearInterval(rec.healthTimer);
    rec.healthTimer = undefined;
  }

  /**
   * Start one module; resolves when it is running or has failed (never throws). Runs inside
   * the module's queue. A restart (attempt > 0) that fails is handled like a crash: retried
   * per the restart policy, or the module is quarantined or given up on.
   */
  /** `booted` is called once the module's process has booted and said hello (or the start ended first). */
  private async start(rec: ModuleRecord, attempt = 0, booted?: () => void): Promise<void> {
    // No pool process is booted while a TypeScript module starts: the refill waits for the end.
    const pool = rec.manifest.runtime === "isolate" ? this.isolatePool() : undefined;
    pool?.beginStart();
    try {
      await this.startOnce(rec, attempt, booted);
    } finally {
      pool?.endStart();
    }
  }

  private async startOnce(rec: ModuleRecord, attempt: number, booted?: () => void): Promise<void> {
    const { manifest, limits } = rec;
    rec.state = "starting";
    rec.problem = undefined;
    rec.killReason = undefined;
    let cancelled: string | undefined;
    let cancel!: (err: Error) => void;
    const cancellation = new Promise<never>((_, reject) => (cancel = reject));
    cancellation.catch(() => undefined);
    rec.cancelStart = (reason) => {
      cancelled ??= reason;
      cancel(new ModhostError("cancelled", `start cancelled: ${reason}`));
    };
    if (rec.missing.length > 0) {
      this.log.warn(`${rec.name} loads without: ${rec.missing.map((m) => formatDescriptor(m.permission, m.scope)).join(", ")} (on_missing_grant = "reduce")`);
    }
    try {
      if (!this.opts.chain) throw new ModhostError("internal", "no chain backend: modules cannot start");
      const dataDir = path.join(this.opts.config.modules.data_dir, rec.name);
      await mkdir(dataDir, { recursive: true, mode: 0o700 });
      await rec.storeClosing;
      rec.store ??= await this.openStore(rec);
      const config = moduleConfig(this.opts.config, manifest);
      await this.runLoadHooks(rec, attempt);
      const sandboxed = await this.runtimes[manifest.runtime](rec, dataDir, config);
      let proc: ModuleProcess<HostSession>;
      try {
        const sessionOptions: Parameters<typeof spawnModule>[1] = {
          module: rec.name,
          grants: rec.grants,
          hub: this.hub,
          bus: this.opts.bus,
          logger: this.opts.logger,
          call: { module: rec.name, chain: this.opts.chain, store: rec.store, config, dataDir, ...(this.services ? { services: this.services } : {}) },
          eventQueue: limits.event_queue,
          eventWindow: limits.event_window,
          flow: flowLimits(limits),
          // A backstop only: readiness is judged below with a deadline fair to the module.
          handshakeTimeoutMs: limits.start_timeout_ms * 4,
          replay: (type) => (type === "ModuleLoaded" ? this.loadedEvents() : type === "ConfigLoaded" ? [{ type, payload: this.configLoadedFor(rec.name, [...CONFIG_SECTIONS]) }] : []),
        };
        proc = sandboxed.pooled
          ? adoptModule(sandboxed.pooled, sessionOptions, this.opts.logger)
          : spawnModule(sandboxed.spec, sessionOptions, this.opts.logger);
      } catch (err) {
        sandboxed.pooled?.child.kill("SIGKILL");
        await sandboxed.release();
        throw err;
      }
      // Its cgroup goes with it (what is left in it is killed); say when a cgroup limit ended it.
      void proc.exited.then(async () => {
        const why = await sandboxed.cgroup?.exitReason();
        if (why) this.log.warn(`${rec.name}: ${why}`);
        await sandboxed.release();
      });
      rec.process = proc;
      void proc.exited.then((info) => this.onExit(rec, proc, info.code, info.signal));
      if (booted) void proc.session.handshake.then(booted, booted);
      await Promise.race([this.awaitReady(proc, limits.start_timeout_ms, rec.manifest.runtime), cancellation]);
      if (cancelled) throw new ModhostError("cancelled", `start cancelled: ${cancelled}`);
      if (this.shuttingDown) throw new ModhostError("invalid_state", "the host is shutting down");
      rec.cancelStart = undefined;
      rec.state = "running";
      this.watchHealth(rec, proc);
      this.watchResources(rec, proc, sandboxed.cgroup);
      this.log.info(`loaded ${rec.name} ${manifest.version}`, { runtime: manifest.runtime, sandbox: rec.sandbox, ...(manifest.runtime === "isolate" ? { isolate_pool: sandboxed.pooled ? "warm" : "cold" } : {}), pid: proc.pid, grants: describeGrants(rec.grants).join(",") || "none", ...(rec.verified ? { verification: rec.verified.report.summary } : {}) });
      this.audit(rec.name, attempt > 0 ? "restart" : "load", { version: manifest.version, runtime: manifest.runtime, sandbox: rec.sandbox, grants: describeGrants(rec.grants), sha256: rec.sha256, verification: rec.verified?.report.summary, pid: proc.pid });
      if (attempt > 0) this.publish("ModuleRestarted", { module: rec.name, attempt });
      this.publish("ModuleLoaded", { module: rec.name, version: manifest.version, runtime: manifest.runtime });
    } catch (err) {
      const hint = (err as ModhostError).hint;
      const problem = (err as Error).message + (hint ? ` (fix: ${hint})` : "");
      // Nothing of this instance outlives the failure: its process is gone and its store closed.
      const proc = rec.process;
      if (proc && !proc.hasExited) {
        proc.kill();
        await Promise.race([proc.exited, new Promise((r) => setTimeout(r, limits.kill_timeout_ms + 1000).unref())]);
      }
      this.stopHealth(rec);
      await this.releaseStore(rec);
      rec.cancelStart = undefined;
      if (cancelled) {
        // Not the module's failure: the operator or the shutdown ended the start.
        rec.state = "stopped";
        rec.problem = `start cancelled: ${cancelled}`;
        this.log.info(`${rec.name}: start cancelled (${cancelled})`);
        return;
      }
      rec.state = "failed";
      rec.problem = problem;
      this.log.error(`failed to load ${rec.name}: ${rec.problem}`);
      if ((err as ModhostError).code === "verification_failed") this.audit(rec.name, "refused", { verification: "failed" }, rec.problem);
      if (this.shuttingDown) return;
      // What a retry cannot fix (refused verification, a missing binary, no sandbox) is final.
      const permanent = (err instanceof ModhostError && PERMANENT_START_ERRORS.has(err.code)) || (err as Error).name === "SandboxUnavailableError";
      this.afterFailure(rec, `start failed: ${problem}`, attempt > 0 ? { kind: "restart", permanent } : { kind: "start" });
    }
  }

  /** The module_load hooks (capabilities/hooks.ts): a refusal ends this start for good (hook_rejected). */
  private async runLoadHooks(rec: ModuleRecord, attempt: number): Promise<void> {
    const hooks = this.services?.hooks;
    if (!hooks?.active("module_load")) return;
    try {
      await hooks.run("module_load", {
        module: rec.name, version: rec.manifest.version, runtime: rec.manifest.runtime, grants: describeGrants(rec.grants), restart: attempt > 0,
      });
    } catch (err) {
      if (err instanceof HookRejection) {
        this.audit(rec.name, "refused", { hook_module: err.hookModule, point: err.point }, err.reason);
        throw new ModhostError("hook_rejected", err.message, err.failed
          ? `start the hook module "${err.hookModule}" again, or set [hooks.module_load] failure = "open" in modhost.toml`
          : `ask whoever runs the hook module "${err.hookModule}" why, or remove register_hook=module_load from its grants`);
      }
      throw err;
    }
  }

  /** Wait for the module's ready, or its exit, or start_timeout_ms of the host's own time. */
  private async awaitReady(proc: ModuleProcess<HostSession>, timeoutMs: number, runtime?: string): Promise<void> {
    // The channel may close before the exit is seen: then say how the process ended, when it
    // ends soon, rather than just "connection closed".
    const ready = proc.session.ready.catch(async (err: Error) => {
      if (proc.session.closeError) throw err;
      const info = await Promise.race([proc.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), 1000).unref())]);
      throw info ? new Error(`process ${describeExit(info.code, info.signal)} during start-up`) : err;
    });
    const outcome = Promise.race([
      ready,
      proc.exited.then(async (info) => {
        // Let a goodbye that explains the exit arrive first.
        await new Promise((r) => setImmediate(r));
        throw new Error(proc.session.closeError?.message ?? `process ${describeExit(info.code, info.signal)} during start-up`);
      }),
    ]);
    let settled = false;
    const settle = outcome.then(() => { settled = true; }, () => { settled = true; });
    const inTime = await fairDeadline(timeoutMs, this.meter, () => settled, settle);
    if (!inTime) throw new Error(runtime === "native"
      ? `did not call ready() within ${timeoutMs} ms: a native module must send \`ready\` after its registrations (client.ready() in the Rust SDK), see docs/module-guide.md#native-modules-rust-or-any-language; if it needs longer, raise start_timeout_ms in [modules.limits.NAME]`
      : `its start() did not finish within ${timeoutMs} ms: the host waits for start() (and what it awaits) before the module counts as running, see docs/module-guide.md#typescript-modules; if it needs longer, raise start_timeout_ms in [modules.limits.NAME]`);
    await outcome;
  }

  /**
   * After a crash or a failed start: count the failure, then quarantine the module (too many
   * failures in the window), restart it later (the restart policy allows), or leave it down.
   * A start the operator asked for (load, reload, enable, boot) that fails is not retried.
   */
  private afterFailure(
    rec: ModuleRecord, reason: string,
    how: { kind: "crash"; code: number | null; signal: NodeJS.Signals | null } | { kind: "restart"; permanent: boolean } | { kind: "start" },
  ): void {
    const { restart, max_restarts, restart_window_ms, quarantine_after, quarantine_window_ms } = rec.limits;
    const now = Date.now();
    const failures = this.lifecycleState?.addFailure(rec.name, now, quarantine_window_ms) ?? 0;
    const quarantine = quarantine_after > 0 && failures >= quarantine_after;
    rec.restartTimes = rec.restartTimes.filter((t) => now - t < restart_window_ms);
    const clean = how.kind === "crash" && how.code === 0 && how.signal === null;
    const retriable = how.kind === "crash" || (how.kind === "restart" && !how.permanent);
    const wants = retriable && !quarantine && (restart === "always" || (restart === "on-failure" && !clean));
    const willRestart = wants && rec.restartTimes.length < max_restarts;
    if (how.kind === "crash") {
      rec.state = "crashed";
      rec.problem = reason;
      this.log.error(`${rec.name} crashed: ${reason}`, { exit_code: how.code, signal: how.signal, will_restart: willRestart, quarantined: quarantine });
      this.publish("ModuleCrashed", { module: rec.name, error: reason, exit_code: how.code, signal: how.signal, will_restart: willRestart, quarantined: quarantine });
      this.audit(rec.name, "crash", { exit_code: how.code, signal: how.signal, will_restart: willRestart, quarantined: quarantine }, reason);
    } else if (how.kind === "restart") {
      this.audit(rec.name, "restart_failed", { will_restart: willRestart, quarantined: quarantine }, reason);
    }
    void this.lifecycleState?.save().catch((err: Error) => this.log.warn(`cannot save the quarantine state: ${err.message}`));
    if (quarantine) {
      this.quarantine(rec, reason, failures);
    } else if (willRestart) {
      rec.state = "crashed";
      rec.problem = reason;
      this.scheduleRestart(rec, now);
      return;
    } else if (wants) {
      rec.state = "failed";
      rec.problem = `${reason}; gave up after ${max_restarts} restarts within ${restart_window_ms} ms`;
      this.log.error(`${rec.name}: ${rec.problem}`);
    }
    // A start at boot or asked for by the operator (load, reload, enable) that fails is
    // reported by whoever asked; safe mode: the host keeps booting even for an important module.
    if (how.kind === "start") return;
    if (rec.limits.important && !this.shuttingDown) {
      this.log.error(`${rec.name} is marked important and is not coming back: stopping the host`);
      this.opts.onImportantFailure?.(rec.name, rec.problem ?? reason);
    }
  }

  private quarantine(rec: ModuleRecord, reason: string, failures: number): void {
    if (rec.restartTimer) clearTimeout(rec.restartTimer);
    rec.restartTimer = undefined;
    rec.state = "quarantined";
    this.lifecycleState?.quarantine(rec.name, reason, failures);
    const q = this.lifecycleState?.peek(rec.name)?.quarantined;
    rec.problem = quarantineProblem(rec.name, failures, reason, q?.since ?? Date.now());
    this.log.error(`${rec.name} quarantined: ${rec.problem}`, { failures, window_ms: rec.limits.quarantine_window_ms });
    this.audit(rec.name, "quarantine", { failures, window_ms: rec.limits.quarantine_window_ms }, reason);
    void this.lifecycleState?.save().catch((err: Error) => this.log.warn(`cannot save the quarantine state: ${err.message}`));
  }

  private scheduleRestart(rec: ModuleRecord, now: number): void {
    rec.restartTimes.push(now);
    const { max_restarts } = rec.limits;
    const delay = Math.min(30_000, 250 * 2 ** (rec.restartTimes.length - 1));
    this.log.info(`restarting ${rec.name} in ${delay} ms (restart ${rec.restartTimes.length} of ${max_restarts})`);
    const epoch = rec.epoch;
    if (rec.restartTimer) clearTimeout(rec.restartTimer);
    rec.restartTimer = setTimeout(() => {
      rec.restartTimer = undefined;
      void this.queue.run(rec.name, async () => {
        // An operator command or the shutdown came first: this restart is void.
        if (rec.epoch !== epoch || rec.state !== "crashed" || this.shuttingDown) return;
        await this.start(rec, rec.restartTimes.length);
      });
    }, delay);
  }

  /** How each runtime turns a module into the spec of its (sandboxed) process. */
  private readonly runtimes: Record<ModuleManifest["runtime"], (rec: ModuleRecord, dataDir: string, config: Record<string, unknown>) => Promise<SandboxedSpawn & { pooled?: StartedChild }>> = {
    isolate: (rec, dataDir) => this.isolateSpec(rec, dataDir),
    native: (rec, dataDir, config) => this.nativeSpec(rec, dataDir, config),
  };

  /**
   * How to start a native module: inside the sandbox (runtime/sandbox), at the level the
   * machine allows and the operator's [modules] sandbox (or native_sandbox) asks for. A binary that is not
   * there (not built yet) is a clear error.
   */
  private async nativeSpec(rec: ModuleRecord, dataDir: string, config: Record<string, unknown>): Promise<SandboxedSpawn> {
    const binary = nativeSpawnSpec(rec.manifest, dataDir, config).command;
    if (!rec.verified) {
      try {
        await access(binary, fsConstants.X_OK);
      } catch {
        throw new ModhostError("not_found", `${rec.name}: entry point ${binary} is missing or not executable`, "build it first: npm run setup builds the shipped native modules (or scripts/build-rust.sh)");
      }
    }
    // Verify (hash, signatures, compatibility) and execute a private copy of the hashed bytes.
    rec.verified = await verifyForStart(rec.manifest, this.opts.config, rec.verified, this.log);
    rec.sha256 = rec.verified.snapshot.hash.slice("sha256:".length);
    const copy = await materialiseBinary(rec.verified, await this.ensureRunDir());
    const { limits } = rec;
    const sandboxed = await sandboxedNativeSpawnSpec(rec.manifest, dataDir, config, {
      binary: copy,
      grants: rec.grants,
      limits: { address_space_mb: limits.address_space_mb, open_files: limits.open_files, processes: limits.processes, cpu_seconds: limits.cpu_seconds, file_size_mb: limits.file_size_mb },
      mode: sandboxModeFor(this.opts.config, "native"),
      uid: await this.uidFor(rec.name),
      cgroup: { memory_mb: limits.memory_total_mb, processes: limits.processes, cpu_weight: limits.cpu_weight, cpu_max_percent: limits.cpu_max_percent },
    });
    rec.sandbox = sandboxed.level;
    for (const note of sandboxed.notes) this.log.warn(`${rec.name} sandbox: ${note}`);
    return sandboxed;
  }

  /** The isolate pool, made on first use; undefined when [host] isolate_pool is 0. */
  private isolatePool(): IsolatePool | undefined {
    const size = this.opts.config.host.isolate_pool;
    // A changed isolate_pool (the config was reloaded) takes effect from the next start.
    if (this.pool && this.pool.size !== size) {
      void this.pool.close();
      this.pool = undefined;
    }
    if (size === 0 || this.shuttingDown) return undefined;
    this.pool ??= new IsolatePool({
      size,
      freshUid: async () => (await this.uidTable()).freshUid(),
      log: this.log,
      output: this.opts.logger.module("isolate-pool"),
    });
    return this.pool;
  }

  /** What the isolate pool did so far (tests, bench); undefined without one. */
  poolStats(): (PoolStats & { waiting: number[] }) | undefined {
    return this.pool ? { ...this.pool.stats, waiting: this.pool.waiting() } : undefined;
  }

  /** The module's own uid, from the table in the data directory (allocated on first use). */
  private async uidFor(name: string): Promise<number> {
    return (await this.uidTable()).uidFor(name);
  }

  private uidTable(): Promise<UidTable> {
    // A damaged table fails this start with the problem named; it is read again at the next one.
    this.uids ??= UidTable.open(path.join(this.opts.config.modules.data_dir, UID_TABLE_FILE)).catch((err: Error) => {
      this.uids = undefined;
      throw new ModhostError("config_error", err.message, `fix or restore ${UID_TABLE_FILE} in [modules] data_dir`);
    });
    return this.uids;
  }

  /** Compile a TypeScript module and say how to start its isolate host, in the sandbox as for a native module. */
  private async isolateSpec(rec: ModuleRecord, _dataDir: string): Promise<SandboxedSpawn & { pooled?: StartedChild }> {
    // Verify (hash, signatures, compatibility); the bundle is built from the hashed snapshot.
    rec.verified = await verifyForStart(rec.manifest, this.opts.config, rec.verified, this.log);
    const compiled = rec.verified.snapshot.bundle!;
    rec.sha256 = compiled.sha256;
    // A pre-booted isolate host of the same profile, when the pool has one: handed the bundle
    // on its channel, moved into the module's cgroup (runtime/isolate/pool.ts).
    const mode = sandboxModeFor(this.opts.config, "isolate");
    const taken = await this.isolatePool()?.take(poolProfile(rec.limits, mode), rec.manifest, compiled.code, rec.limits);
    if (taken) {
      rec.sandbox = taken.sandboxed.level;
      for (const note of taken.sandboxed.notes) this.log.warn(`${rec.name} sandbox: ${note}`);
      return { ...taken.sandboxed, pooled: taken.started };
    }
    const bundle = path.join(await this.ensureRunDir(), `${rec.name}-${compiled.sha256.slice(0, 16)}.js`);
    await writeFile(bundle, compiled.code, { mode: 0o600 });
    const sandboxed = await sandboxedIsolateSpawnSpec(rec.manifest, bundle, rec.limits, { mode, uid: await this.uidFor(rec.name), cgroup: true });
    rec.sandbox = sandboxed.level;
    for (const note of sandboxed.notes) this.log.warn(`${rec.name} sandbox: ${note}`);
    return sandboxed;
  }

  /**
   * Ask the module regularly whether it is healthy. A module that does not answer within
   * health_timeout_ms is unresponsive (a hung process, a wedged event loop): it is killed,
   * which the exit handler reports as a crash and the restart policy handles. The deadline is
   * fair: what has arrived is read before judging, and time the host's own loop was stalled
   * does not count against the module. One probe at a time.
   */
  private watchHealth(rec: ModuleRecord, proc: ModuleProcess<HostSession>): void {
    const every = rec.limits.health_interval_ms;
    this.stopHealth(rec);
    if (every <= 0) return;
    let probing = false;
    const timer = setInterval(() => {
      if (rec.process !== proc || rec.state !== "running" || proc.hasExited) {
        clearInterval(timer);
        return;
      }
      if (probing) return;
      probing = true;
      void this.probeHealth(rec, proc).finally(() => (probing = false));
    }, every);
    timer.unref();
    rec.healthTimer = timer;
    void proc.exited.then(() => clearInterval(timer));
  }

  /**
   * Samples what the module uses of its limits every RESOURCE_SAMPLE_MS and publishes a
   * ResourceLimitWarning (and logs it) when one nears its limit, rate-limited per resource
   * (host/resource-watch.ts). Ends with the process.
   */
  private watchResources(rec: ModuleRecord, proc: ModuleProcess<HostSession>, cgroup: { memoryBytes(): Promise<number | null> } | undefined): void {
    const watch = new ResourceWatch(rec.name, rec.limits);
    const moduleLog = this.opts.logger.module(rec.name);
    let sampling = false;
    const timer = setInterval(() => {
      if (rec.process !== proc || rec.state !== "running" || proc.hasExited) {
        clearInterval(timer);
        return;
      }
      if (sampling) return;
      sampling = true;
      void (async () => {
        const memoryBytes = cgroup && rec.limits.memory_total_mb > 0 ? await cgroup.memoryBytes().catch(() => null) : null;
        const session = proc.session;
        const warnings = watch.sample({
          at: performance.now(), memoryBytes, inFlight: session.inFlightRequests, requests: session.stats.requests,
          cpuMs: session.flowStats.cpuMs, unreadBytes: session.unreadBytes, logBytes: moduleLog.totals.writtenBytes + moduleLog.totals.droppedBytes,
        });
        for (const w of warnings) {
          this.log.warn(describeWarning(w), { module: w.module, resource: w.resource, used: w.used, limit: w.limit });
          this.publish("ResourceLimitWarning", w);
        }
      })().catch(() => {}).finally(() => (sampling = false));
    }, RESOURCE_SAMPLE_MS);
    timer.unref();
    void proc.exited.then(() => clearInterval(timer));
  }

  private async probeHealth(rec: ModuleRecord, proc: ModuleProcess<HostSession>): Promise<void> {
    const timeout = rec.limits.health_timeout_ms;
    let answered = false;
    const answer = proc.session.invoke("health", {}, HEALTH_INVOKE_BACKSTOP_MS).then(
      () => { answered = true; },
      // Any answer, even an error, shows the module is alive; a closed channel is its exit's business.
      (err: unknown) => { if (!(err instanceof InvocationError && err.wire.code === "timeout")) answered = true; },
    );
    const inTime = await fairDeadline(timeout, this.meter, () => answered, answer);
    if (inTime || rec.process !== proc || rec.state !== "running" || proc.hasExited) return;
    this.log.error(`${rec.name} is unresponsive (no answer to a health check within ${timeout} ms of the host's own running time); killing it`);
    rec.killReason = `unresponsive: no answer to a health check within ${timeout} ms (health_timeout_ms)`;
    proc.session.closeError ??= new Error(rec.killReason);
    proc.kill();
  }

  private async openStore(rec: ModuleRecord): Promise<ModuleStore | undefined> {
    const uses = (["read_storage", "write_storage", "manage_storage"] as const).some((p) => rec.grants.has(p));
    if (!uses) return undefined;
    const { limits } = rec;
    return ModuleStore.open(path.join(this.opts.config.storage.dir, rec.name), {
      maxBytes: limits.storage_max_bytes, maxKeys: limits.storage_max_keys, maxTrees: limits.storage_max_trees,
    }, { label: rec.name, iterMaxBytes: limits.storage_iter_max_bytes, ioConcurrency: limits.storage_io_concurrency });
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

  private onExit(rec: ModuleRecord, proc: ModuleProcess<HostSession>, code: number | null, signal: NodeJS.Signals | null): void {
    if (rec.process !== proc) return; // an older process of a restarted module
    // Whatever the module registered (timers, API, RPC methods) dies with its process.
    this.services?.forget?.(rec.name);
    // Only a running module crashes; a failed start is reported by start(), a stop by unload().
    if (rec.state !== "running") return;
    this.stopHealth(rec);
    // The next instance (a restart) opens the store afresh; nothing holds it meanwhile.
    void this.releaseStore(rec);
    const reason = rec.killReason ?? proc.endReason({ code, signal });
    if (this.shuttingDown) {
      rec.state = "crashed";
      rec.problem = reason;
      this.log.error(`${rec.name} crashed during shutdown: ${reason}`, { exit_code: code, signal });
      return;
    }
    this.afterFailure(rec, reason, { kind: "crash", code, signal });
  }

  /** Stop one module (graceful, then forced) and emit ModuleUnloaded. Queued behind the module's other commands. */
  async unload(name: string, reason = "unloaded by the operator"): Promise<void> {
    const rec = this.records.get(name);
    if (!rec) throw new ModhostError("not_found", `no module named ${name}`);
    rec.cancelStart?.(reason);
    try {
      await this.queue.run(name, () => this.stop(rec, reason, true));
    } finally {
      await this.takeInventory();
    }
  }

  /**
   * Stop the current instance: cancel a pending restart, stop the health probe, end the
   * process (graceful, then SIGTERM, then SIGKILL, each with its own deadline), close the
   * store. `byOperator` also turns a crashed or failed module into a stopped one.
   */
  private async stop(rec: ModuleRecord, reason: string, byOperator: boolean): Promise<void> {
    rec.epoch++;
    if (rec.restartTimer) clearTimeout(rec.restartTimer);
    rec.restartTimer = undefined;
    this.stopHealth(rec);
    const name = rec.name;
    const proc = rec.process;
    const wasUp = rec.state === "running" || rec.state === "starting";
    if (wasUp || (proc && !proc.hasExited)) {
      rec.state = "stopping";
      if (proc && !proc.hasExited) {
        const grace = rec.limits.stop_timeout_ms;
        const asked = proc.session.isOpen;
        const how = await proc.stop(reason, { graceMs: grace, termMs: rec.limits.kill_timeout_ms });
        if (how.via === "SIGKILL" || how.via === "SIGTERM") {
          this.log.warn(asked ? `${name} did not stop within ${grace} ms; ended with ${how.via}` : `${name} was not connected; ended with ${how.via}`);
        }
      }
      rec.state = "stopped";
    } else if (byOperator && (rec.state === "crashed" || rec.state === "failed")) {
      rec.state = "stopped";
    }
    await this.releaseStore(rec);
    if (wasUp) {
      this.log.info(`unloaded ${name}`, { reason });
      this.publish("ModuleUnloaded", { module: name, version: rec.manifest.version, reason });
      this.audit(name, "unload", undefined, reason);
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
    const { manifests } = await this.discover();
    const manifest = manifests.find((m) => m.name === name);
    if (!manifest) throw new ModhostError("not_found", `no module named ${name} in ${this.opts.config.modules.modules_dir}`);
    if (this.opts.config.modules.disabled_modules.includes(name)) throw new ModhostError("invalid_state", `${name} is in [modules] disabled_modules`);
    const running = [...this.records.values()].filter((r) => r.state === "running" && r.name !== name).map((r) => r.manifest);
    const plan = planLoad([...running, manifest], HOST_VERSION);
    const skipped = plan.skipped.find((s) => s.name === name);
    if (skipped) throw new ModhostError("dependency", `${name} cannot load: ${skipped.reason}`);
    const fresh = this.makeRecord(manifest, existing);
    let rec: ModuleRecord;
    if (existing) {
      // The previous instance ends here: no pending restart, no process, no open store.
      existing.epoch++;
      if (existing.restartTimer) clearTimeout(existing.restartTimer);
      existing.restartTimer = undefined;
      this.stopHealth(existing);
      if (existing.process && !existing.process.hasExited) {
        existing.process.kill();
        await existing.process.exited;
      }
      await this.releaseStore(existing);
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
    await this.start(rec);
    if (rec.state !== "running") throw new ModhostError("load_failed", `${name} failed to load: ${rec.problem}`);
    return this.status().find((s) => s.name === name)!;
  }

  /** Stop a module and load it again from disk (new code, manifest and grants are re-read); one queued command. */
  async reload(name: string): Promise<ModuleStatus> {
    if (!this.records.has(name)) throw new ModhostError("not_found", `no module named ${name}`);
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
      await this.preverify(name);
      await this.stop(rec, "reload", true);
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
   * Before a reload stops the running module: the code and manifest now on disk must pass
   * verification (integrity, signatures, compatibility), or the reload is refused and the
   * running, verified version keeps running. The load that follows verifies again.
   */
  private async preverify(name: string): Promise<void> {
    const running = this.records.get(name)?.state === "running";
    const keeps = running ? "; the running version keeps running" : "";
    const manifest = (await this.discover()).manifests.find((m) => m.name === name);
    if (!manifest) throw new ModhostError("not_found", `reload of ${name} refused: no module named ${name} in ${this.opts.config.modules.modules_dir}${keeps}`);
    let report: ReturnType<typeof verifyModule>;
    try {
      report = verifyModule(manifest, await snapshotModule(manifest), this.opts.config);
    } catch (err) {
      throw new ModhostError("load_failed", `reload of ${name} refused: ${(err as Error).message}${keeps}`, (err as ModhostError).hint);
    }
    if (!report.ok) {
      const e = verificationError(report);
      throw new ModhostError("verification_failed", `reload of ${name} refused: ${e.message}${keeps}`, e.hint);
    }
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
    this.shuttingDown = true;
    for (const rec of this.records.values()) {
      rec.epoch++;
      if (rec.restartTimer) clearTimeout(rec.restartTimer);
      rec.restartTimer = undefined;
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
        await this.queue.run(name, () => this.stop(rec, "host shutdown", false)).catch(() => undefined);
      })());
    }
    await Promise.all(stopped.values());
    this.meterInstance?.close();
    await this.pool?.close();
    await this.lifecycleState?.save().catch((err: Error) => this.log.warn(`cannot save the quarantine state: ${err.message}`));
    if (this.runDir) await rm(this.runDir, { recursive: true, force: true });
  }

  status(): ModuleStatus[] {
    const out: ModuleStatus[] = [];
    for (const rec of this.records.values()) {
      out.push({
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
      });
    }
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
}

/** At most `limit` tasks at a time; the others wait their turn (first come, first served). */
class Semaphore {
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

/** What `list` says about a quarantined module, with the way out. */
function quarantineProblem(name: string, failures: number, reason: string, since: number): string {
  return `quarantined since ${new Date(since).toISOString()} after ${failures} failures (quarantine_after); last: ${reason}. Fix the module, then run: modhost enable ${name}`;
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
