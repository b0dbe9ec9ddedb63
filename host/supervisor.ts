// The supervisor: the life of one module's process, from spawn to exit. It starts an instance
// (store, load hooks, the runtime's prepared process, the session, the wait for ready), notices
// its exit, applies the restart policy (backoff; quarantine after too many failures; safe mode:
// a failed start at boot or by the operator is not retried), watches its health and resources,
// and stops it (graceful, then SIGTERM, then SIGKILL). What kind of process that is, isolate
// host or native binary, is the runtime's business (host/supervisor-runtimes.ts); the health
// probe and the resource watch of a running instance are in host/supervisor-health.ts.
//
// The manager (host/manager.ts) decides which module runs when: discovery, ordering,
// grants, the operator's commands. It drives the supervisor from inside each module's command
// queue (host/lifecycle.ts KeyedQueue), which the supervisor also uses for its scheduled
// restarts, so a restart never races a command on the same module.

import path from "node:path";
import type { ApiHub } from "./hub.ts";
import type { HostConfig, Limits } from "./config.ts";
import type { ModuleManifest } from "./manifest.ts";
import { moduleConfig } from "./module-config.ts";
import { ModhostError } from "./errors.ts";
import type { EventBus } from "./events/bus.ts";
import type { HostEvents } from "../capabilities/event-types.ts";
import type { Logger, SourceLogger } from "./log.ts";
import type { ChainBackend } from "../chain/backend.ts";
import { describeGrants, formatDescriptor, type MissingGrant } from "../capabilities/grants.ts";
import { ModuleStore } from "../storage/store.ts";
import type { AuditLog, AuditRecord } from "./audit.ts";
import type { HostServices } from "../capabilities/types.ts";
import { HookRejection } from "../capabilities/hooks.ts";
import { flowLimits, type HostSession, type SessionOptions } from "./session.ts";
import { fairDeadline, type KeyedQueue, type LifecycleState, LoopStallMeter, removeStaleRunDirs, createRunDir, type RunDir } from "./lifecycle.ts";
import type { ModuleProcess } from "../runtime/process.ts";
import { UID_TABLE_FILE, UidTable } from "../runtime/sandbox/index.ts";
import { stopHealth, watchHealth, watchResources, type WatchEnv } from "./supervisor-health.ts";
import { openDataDir, watchDataDir, watchVolume, type OpenedDataDir } from "./data-quota.ts";
import { makeRuntimes, type ModuleRuntime, type RuntimeTarget } from "./supervisor-runtimes.ts";

export type ModuleState = "pending" | "starting" | "running" | "stopping" | "stopped" | "crashed" | "failed" | "skipped" | "quarantined";

/** One module, for good: its identity is what timers and exit handlers check. */
export interface ModuleRecord extends RuntimeTarget {
  state: ModuleState;
  problem?: string;
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
  /** Its data directory as last opened: its usage against the quota, for `modhost list` and /metrics. */ data?: OpenedDataDir;
  /** While it starts: what the start waits for now (`modhost list`), so a start that takes long says where. */ step?: string;
}

export interface SupervisorOptions {
  config: HostConfig;
  /** Needed to start modules; `modhost check` prepares without one. */
  chain?: ChainBackend;
  bus: EventBus;
  logger: Logger;
  /** Where denials and privileged actions are recorded. */
  audit?: AuditLog;
  /** A module marked important died for good; the host stops. */
  onImportantFailure?: (module: string, reason: string) => void;
}

/** What the supervisor takes from the manager. */
interface SupervisorLinks {
  hub: ApiHub;
  /** The per-module command queue: a scheduled restart runs in it. */
  queue: KeyedQueue;
  /** Host services handed to every module's calls, once the host has set them. */
  services(): HostServices | undefined;
  /** Quarantine and failure history, once opened. */
  lifecycle(): LifecycleState | undefined;
  /** Events a module receives when it subscribes to a type that happened before it started. */
  replay(name: string, type: string): Array<{ type: string; payload: unknown }>;
}

/** Start errors a retry cannot fix: a restart that fails with one of these is not retried. */
const PERMANENT_START_ERRORS = new Set(["verification_failed", "not_found", "permission_denied", "config_error", "internal", "hook_rejected", "quota_exceeded"]);

/** `p`, with `step` recorded as what `rec`'s start waits for meanwhile. */
const awaiting = <T>(rec: ModuleRecord, step: string, p: Promise<T>): Promise<T> => ((rec.step = step), p);

export class Supervisor {
  private readonly log: SourceLogger;
  private runDir: Promise<RunDir> | undefined;
  /** Module name -> uid, persisted in the data directory (runtime/sandbox/uids.ts). */
  private uids: Promise<UidTable> | undefined;
  /** Set once the host shuts down: nothing starts or restarts after it. */
  shuttingDown = false;
  /** The host's own loop stalls, so that deadlines never blame a module for them. */
  private meterInstance: LoopStallMeter | undefined;
  private readonly runtimes: Record<ModuleManifest["runtime"], ModuleRuntime>;
  /** What the isolate pool did so far (tests, bench); undefined without one. */
  readonly poolStats: ReturnType<typeof makeRuntimes>["poolStats"];

  constructor(private readonly opts: SupervisorOptions, private readonly links: SupervisorLinks) {
    this.log = opts.logger.for("host");
    this.watchEnv = { log: this.log, logger: opts.logger, meter: () => this.meter, warn: (w) => this.publish("ResourceLimitWarning", w) };
    const made = makeRuntimes({
      config: () => this.opts.config,
      log: this.log,
      logger: opts.logger,
      runDir: () => this.ensureRunDir(),
      uids: () => this.uidTable(),
      shuttingDown: () => this.shuttingDown,
    });
    this.runtimes = made.runtimes;
    this.poolStats = made.poolStats;
  }

  private get meter(): LoopStallMeter { return (this.meterInstance ??= new LoopStallMeter()); }

  /** What the health probe and the resource watch use (host/supervisor-health.ts). */
  private readonly watchEnv: WatchEnv;

  private audit(module: string, action: string, detail?: AuditRecord["detail"], reason?: string): void {
    this.opts.audit?.write({ kind: "lifecycle", module, action, ...(reason ? { reason } : {}), ...(detail ? { detail } : {}) });
  }

  private publish<K extends keyof HostEvents>(type: K, payload: HostEvents[K]): void { this.opts.bus.publish(type, payload); }

  /** End the previous instance of a module that loads again: no restart, health probe, process or store. */
  async endInstance(rec: ModuleRecord): Promise<void> {
    this.cancelRestart(rec);
    stopHealth(rec);
    if (rec.process && !rec.process.hasExited) {
      rec.process.kill();
      await rec.process.exited;
    }
    await this.releaseStore(rec);
  }

  /** Void any restart scheduled so far (an operator command or the shutdown comes first). */
  cancelRestart(rec: ModuleRecord): void {
    rec.epoch++;
    if (rec.restartTimer) clearTimeout(rec.restartTimer);
    rec.restartTimer = undefined;
  }

  /** At the end of the host's shutdown, once every module has stopped: the meter, the runtimes (the isolate pool), the run directory. */
  async close(): Promise<void> {
    this.meterInstance?.close();
    for (const runtime of Object.values(this.runtimes)) await runtime.close();
    await (await this.runDir?.catch(() => undefined))?.remove();
  }

  private async ensureRunDir(): Promise<string> {
    // Locked for this process's lifetime: a later host removes it once the kernel has released
    // the lock (this process is gone), whatever PID namespace either runs in (host/lifecycle.ts).
    // A failure is not kept: the next start tries again.
    return (await (this.runDir ??= createRunDir().catch((err: unknown) => { this.runDir = undefined; throw err; }))).dir;
  }

  /** Remove the run directories of hosts that died without cleaning up (their lock is free). */
  async removeStaleRunDirs(): Promise<void> {
    const removed = await removeStaleRunDirs(undefined, (await this.runDir?.catch(() => undefined))?.dir);
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

  /**
   * Start one module; resolves when it is running or has failed (never throws). Runs inside
   * the module's queue. A restart (attempt > 0) that fails is handled like a crash: retried
   * per the restart policy, or the module is quarantined or given up on. `booted` is called
   * once the module's process has booted and said hello (or the start ended first).
   */
  async start(rec: ModuleRecord, attempt = 0, booted?: () => void): Promise<void> {
    const ended = this.runtimes[rec.manifest.runtime].beginStart();
    try {
      await this.startOnce(rec, attempt, booted);
    } finally {
      ended();
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
    let data: OpenedDataDir | undefined; // its volume goes once its process is gone, or the start failed
    try {
      if (!this.opts.chain) throw new ModhostError("internal", "no chain backend: modules cannot start");
      const { dataDir, usage, mode: dataMode } = (data = rec.data = await awaiting(rec, "its data directory", openDataDir(this.opts.config, rec.name, limits, manifest.runtime, this.log)));
      await awaiting(rec, "the previous instance's storage to close", rec.storeClosing ?? Promise.resolve());
      rec.store ??= await awaiting(rec, "its storage to open", this.openStore(rec));
      rec.store?.dropStaged(); // a new instance: the last one's unfinished transaction parts are not its own
      const config = moduleConfig(this.opts.config, manifest);
      await awaiting(rec, "module_load hooks", this.runLoadHooks(rec, attempt));
      const runtime = this.runtimes[manifest.runtime];
      const sandboxed = await awaiting(rec, "its verification and sandbox", runtime.prepare(rec, dataDir, config));
      let proc: ModuleProcess<HostSession>;
      try {
        const services = this.links.services();
        const sessionOptions: SessionOptions = {
          module: rec.name,
          grants: rec.grants,
          hub: this.links.hub,
          bus: this.opts.bus,
          logger: this.opts.logger,
          call: { module: rec.name, chain: this.opts.chain, store: rec.store, config, dataDir, dataUsage: usage, ...(services ? { services } : {}) },
          eventQueue: limits.event_queue, eventQueueBytes: limits.event_queue_bytes,
          eventWindow: limits.event_window,
          flow: flowLimits(limits),
          // A backstop only: readiness is judged below with a deadline fair to the module.
          handshakeTimeoutMs: limits.start_timeout_ms * 4,
          replay: (type) => this.links.replay(rec.name, type),
        };
        proc = await awaiting(rec, "its process to launch", runtime.launch(sandboxed, sessionOptions, this.opts.logger));
      } catch (err) {
        sandboxed.pooled?.child.kill("SIGKILL");
        await sandboxed.release();
        throw err;
      }
      rec.process = proc;
      // Its cgroup goes with it; a cgroup limit that ended it (an OOM kill is a bare SIGKILL) is in the crash reason.
      void proc.exited.then(async (info) => {
        const why = (await sandboxed.cgroup?.exitReason().catch(() => null)) ?? undefined;
        if (why) this.log.warn(`${rec.name}: ${why}`);
        await data?.release().catch((err: Error) => this.log.error(`${rec.name}: its data volume: ${err.message}`));
        this.onExit(rec, proc, info.code, info.signal, why);
        await sandboxed.release();
      });
      if (booted) void proc.session.handshake.then(booted, booted);
      await awaiting(rec, manifest.runtime === "native" ? "its ready" : "its start()", Promise.race([this.awaitReady(proc, limits.start_timeout_ms, runtime), cancellation]));
      if (cancelled) throw new ModhostError("cancelled", `start cancelled: ${cancelled}`);
      if (this.shuttingDown) throw new ModhostError("invalid_state", "the host is shutting down");
      rec.cancelStart = rec.step = undefined;
      rec.state = "running";
      watchHealth(rec, proc, this.watchEnv);
      watchResources(rec, proc, sandboxed.cgroup, this.watchEnv);
      if (manifest.runtime === "native") (dataMode === "volume" ? watchVolume : watchDataDir)(rec, proc, dataDir, usage, this.log);
      this.log.info(`loaded ${rec.name} ${manifest.version}`, { runtime: manifest.runtime, sandbox: rec.sandbox, ...runtime.describe(sandboxed), ...(manifest.runtime === "native" ? { data: dataMode } : {}), pid: proc.pid, grants: describeGrants(rec.grants).join(",") || "none", ...(rec.verified ? { verification: rec.verified.report.summary } : {}) });
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
      stopHealth(rec);
      await Promise.all([this.releaseStore(rec), data?.release().catch(() => undefined)]);
      rec.cancelStart = rec.step = undefined;
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
    const hooks = this.links.services()?.hooks;
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
  private async awaitReady(proc: ModuleProcess<HostSession>, timeoutMs: number, runtime: ModuleRuntime): Promise<void> {
    // The channel may close before the exit is seen: then say how the process ended, when it
    // ends soon, rather than just "connection closed".
    const ready = proc.session.ready.catch(async (err: Error) => {
      if (proc.session.closeError) throw err;
      const info = await Promise.race([proc.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), 1000).unref())]);
      throw info ? new Error(`process ${proc.endReason(info)} during start-up`) : err;
    });
    const outcome = Promise.race([
      ready,
      proc.exited.then(async (info) => {
        // Let a goodbye that explains the exit arrive first.
        await new Promise((r) => setImmediate(r));
        throw new Error(proc.session.closeError?.message ?? `process ${proc.endReason(info)} during start-up`);
      }),
    ]);
    let settled = false;
    const settle = outcome.then(() => { settled = true; }, () => { settled = true; });
    const inTime = await fairDeadline(timeoutMs, this.meter, () => settled, settle);
    if (!inTime) throw new Error(runtime.notReady(timeoutMs));
    await outcome;
  }

  /**
   * After a crash or a failed start: count the failure, then quarantine the module (too many
   * failures in the window), restart it later (the restart policy allows), or leave it down.
   * A start the operator asked for (load, reload, enable, boot) that fails is not retried.
   */
  private afterFailure(
    rec: ModuleRecord, reason: string,
    how: { kind: "crash"; code: number | null; signal: NodeJS.Signals | null; fault?: boolean } | { kind: "restart"; permanent: boolean } | { kind: "start" },
  ): void {
    const { restart, max_restarts, restart_window_ms, quarantine_after, quarantine_window_ms } = rec.limits;
    const now = Date.now();
    const failures = this.links.lifecycle()?.addFailure(rec.name, now, quarantine_window_ms) ?? 0;
    const quarantine = quarantine_after > 0 && failures >= quarantine_after;
    rec.restartTimes = rec.restartTimes.filter((t) => now - t < restart_window_ms);
    // Code 0 after the host ended its channel for a fault (a framing error, a refusal, past
    // max_unread_bytes) is how an SDK leaves when its channel closes, not a clean exit.
    const clean = how.kind === "crash" && how.code === 0 && how.signal === null && !how.fault;
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
    void this.links.lifecycle()?.save().catch((err: Error) => this.log.warn(`cannot save the quarantine state: ${err.message}`));
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
    this.links.lifecycle()?.quarantine(rec.name, reason, failures);
    const q = this.links.lifecycle()?.peek(rec.name)?.quarantined;
    rec.problem = quarantineProblem(rec.name, failures, reason, q?.since ?? Date.now());
    this.log.error(`${rec.name} quarantined: ${rec.problem}`, { failures, window_ms: rec.limits.quarantine_window_ms });
    this.audit(rec.name, "quarantine", { failures, window_ms: rec.limits.quarantine_window_ms }, reason);
    void this.links.lifecycle()?.save().catch((err: Error) => this.log.warn(`cannot save the quarantine state: ${err.message}`));
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
      void this.links.queue.run(rec.name, async () => {
        // An operator command or the shutdown came first: this restart is void.
        if (rec.epoch !== epoch || rec.state !== "crashed" || this.shuttingDown) return;
        await this.start(rec, rec.restartTimes.length);
      });
    }, delay);
  }

  private uidTable(): Promise<UidTable> {
    // A damaged table fails this start with the problem named; it is read again at the next one.
    this.uids ??= UidTable.open(path.join(this.opts.config.modules.data_dir, UID_TABLE_FILE), { claimsDir: process.getuid?.() === 0 ? this.opts.config.host.uid_claims_dir : undefined, log: this.log }).catch((err: Error) => {
      this.uids = undefined;
      throw new ModhostError("config_error", err.message, `fix or restore ${UID_TABLE_FILE} in [modules] data_dir`);
    });
    return this.uids;
  }

  private async openStore(rec: ModuleRecord): Promise<ModuleStore | undefined> {
    const uses = (["read_storage", "write_storage", "manage_storage"] as const).some((p) => rec.grants.has(p));
    if (!uses) return undefined;
    const { limits } = rec;
    return ModuleStore.open(path.join(this.opts.config.storage.dir, rec.name), {
      maxBytes: limits.storage_max_bytes, maxKeys: limits.storage_max_keys, maxTrees: limits.storage_max_trees,
    }, { label: rec.name, iterMaxBytes: limits.storage_iter_max_bytes, ioConcurrency: limits.storage_io_concurrency });
  }

  private onExit(rec: ModuleRecord, proc: ModuleProcess<HostSession>, code: number | null, signal: NodeJS.Signals | null, cgroupWhy?: string): void {
    if (rec.process !== proc) return; // an older process of a restarted module
    // Whatever the module registered (timers, API, RPC methods) dies with its process.
    this.links.services()?.forget?.(rec.name);
    // Only a running module crashes; a failed start is reported by start(), a stop by unload().
    if (rec.state !== "running") return;
    stopHealth(rec);
    // The next instance (a restart) opens the store afresh; nothing holds it meanwhile.
    void this.releaseStore(rec);
    const reason = rec.killReason ?? [proc.endReason({ code, signal }), cgroupWhy].filter(Boolean).join(": ");
    if (this.shuttingDown) {
      rec.state = "crashed";
      rec.problem = reason;
      this.log.error(`${rec.name} crashed during shutdown: ${reason}`, { exit_code: code, signal });
      return;
    }
    this.afterFailure(rec, reason, { kind: "crash", code, signal, fault: proc.session.endedForFault });
  }

  /**
   * Stop the current instance: cancel a pending restart, stop the health probe, end the
   * process (graceful, then SIGTERM, then SIGKILL, each with its own deadline), close the
   * store. `byOperator` also turns a crashed or failed module into a stopped one.
   */
  async stop(rec: ModuleRecord, reason: string, byOperator: boolean): Promise<void> {
    this.cancelRestart(rec);
    stopHealth(rec);
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
      // Its registrations (hooks, RPC, API, timers, providers) end before stop() returns: onExit
      // forgets them only after the cgroup read, and not once a reload put a new process in.
      if (proc?.hasExited) this.links.services()?.forget?.(name);
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
}

/** What `list` says about a quarantined module, with the way out. */
export function quarantineProblem(name: string, failures: number, reason: string, since: number): string {
  return `quarantined since ${new Date(since).toISOString()} after ${failures} failures (quarantine_after); last: ${reason}. Fix the module, then run: modhost enable ${name}`;
}
