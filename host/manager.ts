// The module manager: discover modules, validate them, resolve dependencies, apply the
// operator's grants, load in dependency order, unload in reverse, supervise (crash ->
// ModuleCrashed -> restart policy with backoff), and shut down gracefully. A module that
// fails is reported and isolated; every other module keeps running.

import { access, chmod, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { constants as fsConstants } from "node:fs";
import os, { constants as osConstants } from "node:os";
import path from "node:path";
import { ApiHub } from "./hub.ts";
import { grantsFor, limitsFor, missingGrantPolicy, sandboxModeFor, type HostConfig, type Limits } from "./config.ts";
import { loadManifest, type ModuleManifest } from "./manifest.ts";
import { planLoad } from "./deps.ts";
import { moduleConfig } from "./module-config.ts";
import { ConfigError, ModhostError, formatProblem } from "./errors.ts";
import type { EventBus } from "./events/bus.ts";
import type { HostEvents } from "./events/types.ts";
import type { Logger, SourceLogger } from "./log.ts";
import type { ChainBackend } from "../chain/backend.ts";
import { HOST_VERSION } from "./version.ts";
import { describeGrants, formatDescriptor, resolveGrants, type Descriptor, type GrantRule, type MissingGrant } from "../capabilities/grants.ts";
import type { Permission } from "../capabilities/catalogue.ts";
import { ModuleStore } from "../storage/store.ts";
import type { AuditLog, AuditRecord } from "./audit.ts";
import type { HostServices } from "../capabilities/types.ts";
import type { HostSession } from "./session.ts";
import { flowLimits } from "./session.ts";
import { spawnModuleProcess, type ModuleProcess, type SpawnSpec } from "../runtime/process.ts";
import { nativeSpawnSpec, sandboxedNativeSpawnSpec } from "../runtime/native/runtime.ts";
import type { SandboxLevel } from "../runtime/sandbox/policy.ts";
import { sandboxedIsolateSpawnSpec } from "../runtime/isolate/runtime.ts";
import { materialiseBinary, snapshotModule, verificationError, verifyForStart, verifyModule, type VerifiedModule } from "./verify/module.ts";

export type ModuleState = "pending" | "starting" | "running" | "stopping" | "stopped" | "crashed" | "failed" | "skipped";

export interface ModuleStatus {
  name: string;
  version: string | null;
  runtime: string | null;
  state: ModuleState;
  /** Why the module is skipped, failed or crashed. */
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
  process?: ModuleProcess;
  store?: ModuleStore;
  restartTimes: number[];
  restartTimer?: NodeJS.Timeout;
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

export class ModuleManager {
  private readonly records = new Map<string, ModuleRecord>();
  /** Modules that never got a record (bad manifest, dependency problems, disabled). */
  private readonly notLoaded = new Map<string, { problem: string; manifest?: ModuleManifest }>();
  readonly hub: ApiHub;
  private readonly log: SourceLogger;
  private runDir: string | undefined;
  private loadOrder: string[] = [];
  private shuttingDown = false;
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

  private audit(module: string, action: string, detail?: AuditRecord["detail"], reason?: string): void {
    this.opts.audit?.write({ kind: "lifecycle", module, action, ...(reason ? { reason } : {}), ...(detail ? { detail } : {}) });
  }

  private publish<K extends keyof HostEvents>(type: K, payload: HostEvents[K]): void {
    this.opts.bus.publish(type, payload);
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
   * Decide what will load: enabled/disabled lists, dependency plan, grants. Fills the records;
   * returns nothing, `status()` shows the outcome.
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

    for (const manifest of plan.order) this.records.set(manifest.name, this.makeRecord(manifest));
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
      limits: limitsFor(config, manifest.name), restartTimes: previous?.restartTimes ?? [],
    };
    if (missing.length > 0 && missingGrantPolicy(config, manifest.name) === "refuse") {
      record.state = "skipped";
      record.problem = missingGrantsMessage(manifest, missing, granted.allow);
    }
    return record;
  }

  /** Load every prepared module in dependency order. */
  async startAll(): Promise<void> {
    for (const name of this.loadOrder) {
      const rec = this.records.get(name)!;
      if (rec.state === "skipped") {
        this.log.error(`not loading ${name}: ${rec.problem}`);
        this.audit(name, "refused", { missing: rec.missing.map((m) => formatDescriptor(m.permission, m.scope)) }, rec.problem);
        continue;
      }
      const blocker = Object.keys(rec.manifest.dependencies).find((d) => this.records.has(d) && this.records.get(d)!.state !== "running");
      if (blocker) {
        rec.state = "skipped";
        rec.problem = `depends on ${blocker}, which is not running (${this.records.get(blocker)!.state})`;
        this.log.error(`not loading ${name}: ${rec.problem}`);
        continue;
      }
      await this.start(rec);
    }
    for (const [name, nl] of this.notLoaded) {
      // Left out on purpose by the operator: say so quietly. Anything else is a problem.
      const chosen = /enabled_modules|disabled_modules/.test(nl.problem);
      this.opts.logger.log(chosen ? "info" : "error", "host", `not loading ${name}: ${nl.problem}`);
    }
  }

  private async ensureRunDir(): Promise<string> {
    if (!this.runDir) {
      const dir = await mkdtemp(path.join(os.tmpdir(), "modhost-run-"));
      // Others may pass through, not list: sandboxed modules (their own uids) read their files here.
      await chmod(dir, 0o711);
      this.runDir = dir;
    }
    return this.runDir;
  }

  /** Start one module; resolves when it is running or has failed (never throws). */
  private async start(rec: ModuleRecord, attempt = 0): Promise<void> {
    const { manifest, limits } = rec;
    rec.state = "starting";
    rec.problem = undefined;
    if (rec.missing.length > 0) {
      this.log.warn(`${rec.name} loads without: ${rec.missing.map((m) => formatDescriptor(m.permission, m.scope)).join(", ")} (on_missing_grant = "reduce")`);
    }
    try {
      if (!this.opts.chain) throw new ModhostError("internal", "no chain backend: modules cannot start");
      const dataDir = path.join(this.opts.config.modules.data_dir, rec.name);
      await mkdir(dataDir, { recursive: true, mode: 0o700 });
      rec.store ??= await this.openStore(rec);
      const config = moduleConfig(this.opts.config, manifest);
      const spec = manifest.runtime === "isolate"
        ? await this.isolateSpec(rec, dataDir)
        : await this.nativeSpec(rec, dataDir, config);
      const proc = spawnModuleProcess(spec, {
        module: rec.name,
        grants: rec.grants,
        hub: this.hub,
        bus: this.opts.bus,
        logger: this.opts.logger,
        call: { module: rec.name, chain: this.opts.chain, store: rec.store, config, dataDir, ...(this.services ? { services: this.services } : {}) },
        eventQueue: limits.event_queue,
        eventWindow: limits.event_window, flow: flowLimits(limits),
        handshakeTimeoutMs: limits.start_timeout_ms,
        replay: (type) => (type === "ModuleLoaded" ? this.loadedEvents() : []),
      }, this.opts.logger);
      rec.process = proc;
      void proc.exited.then((info) => this.onExit(rec, proc, info.code, info.signal));
      await raceReady(proc, limits.start_timeout_ms);
      rec.state = "running";
      this.watchHealth(rec, proc);
      this.log.info(`loaded ${rec.name} ${manifest.version}`, { runtime: manifest.runtime, sandbox: rec.sandbox, pid: proc.pid, grants: describeGrants(rec.grants).join(",") || "none" });
      this.audit(rec.name, attempt > 0 ? "restart" : "load", { version: manifest.version, runtime: manifest.runtime, sandbox: rec.sandbox, grants: describeGrants(rec.grants), sha256: rec.sha256, verification: rec.verified?.report.summary, pid: proc.pid });
      if (attempt > 0) this.publish("ModuleRestarted", { module: rec.name, attempt });
      this.publish("ModuleLoaded", { module: rec.name, version: manifest.version, runtime: manifest.runtime });
    } catch (err) {
      rec.state = "failed";
      const hint = (err as ModhostError).hint;
      rec.problem = (err as Error).message + (hint ? ` (fix: ${hint})` : "");
      rec.process?.kill();
      this.log.error(`failed to load ${rec.name}: ${rec.problem}`);
      if ((err as ModhostError).code === "verification_failed") this.audit(rec.name, "refused", { verification: "failed" }, rec.problem);
      // A restart that fails leaves the module down for good, as a crash without restart does.
      if (attempt > 0 && rec.limits.important && !this.shuttingDown) {
        this.log.error(`${rec.name} is marked important and could not be restarted: stopping the host`);
        this.opts.onImportantFailure?.(rec.name, rec.problem);
      }
    }
  }

  /**
   * How to start a native module: inside the sandbox (runtime/sandbox), at the level the
   * machine allows and the operator's [modules] sandbox (or native_sandbox) asks for. A binary that is not
   * there (not built yet) is a clear error.
   */
  private async nativeSpec(rec: ModuleRecord, dataDir: string, config: Record<string, unknown>): Promise<SpawnSpec> {
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
    });
    rec.sandbox = sandboxed.level;
    for (const note of sandboxed.notes) this.log.warn(`${rec.name} sandbox: ${note}`);
    return sandboxed.spec;
  }

  /** Compile a TypeScript module and say how to start its isolate host, in the sandbox as for a native module. */
  private async isolateSpec(rec: ModuleRecord, dataDir: string): Promise<SpawnSpec> {
    // Verify (hash, signatures, compatibility); the bundle is built from the hashed snapshot.
    rec.verified = await verifyForStart(rec.manifest, this.opts.config, rec.verified, this.log);
    const compiled = rec.verified.snapshot.bundle!;
    rec.sha256 = compiled.sha256;
    const bundle = path.join(await this.ensureRunDir(), `${rec.name}-${compiled.sha256.slice(0, 16)}.js`);
    await writeFile(bundle, compiled.code, { mode: 0o600 });
    const sandboxed = await sandboxedIsolateSpawnSpec(rec.manifest, bundle, rec.limits, { mode: sandboxModeFor(this.opts.config, "isolate") });
    rec.sandbox = sandboxed.level;
    for (const note of sandboxed.notes) this.log.warn(`${rec.name} sandbox: ${note}`);
    return sandboxed.spec;
  }

  /**
   * Ask the module regularly whether it is healthy. A module that does not answer within
   * health_timeout_ms is unresponsive (a hung process, a wedged event loop): it is killed,
   * which the exit handler reports as a crash and the restart policy handles.
   */
  private watchHealth(rec: ModuleRecord, proc: ModuleProcess): void {
    const every = rec.limits.health_interval_ms;
    if (every <= 0) return;
    const timer = setInterval(() => {
      if (rec.process !== proc || rec.state !== "running" || proc.hasExited) {
        clearInterval(timer);
        return;
      }
      proc.session.invoke("health", {}, rec.limits.health_timeout_ms).catch((err: Error) => {
        if (rec.process !== proc || rec.state !== "running" || proc.hasExited) return;
        this.log.error(`${rec.name} is unresponsive (${err.message}); killing it`);
        proc.session.closeError ??= new Error(`unresponsive: no answer to a health check within ${rec.limits.health_timeout_ms} ms (health_timeout_ms)`);
        proc.kill();
      });
    }, every);
    timer.unref();
    void proc.exited.then(() => clearInterval(timer));
  }

  private async openStore(rec: ModuleRecord): Promise<ModuleStore | undefined> {
    const uses = (["read_storage", "write_storage", "manage_storage"] as const).some((p) => rec.grants.has(p));
    if (!uses) return undefined;
    const { limits } = rec;
    return ModuleStore.open(path.join(this.opts.config.storage.dir, rec.name), {
      maxBytes: limits.storage_max_bytes, maxKeys: limits.storage_max_keys, maxTrees: limits.storage_max_trees,
    }, { label: rec.name, iterMaxBytes: limits.storage_iter_max_bytes, ioConcurrency: limits.storage_io_concurrency });
  }

  private loadedEvents(): Array<{ type: string; payload: unknown }> {
    return [...this.records.values()].filter((r) => r.state === "running").map((r) => ({
      type: "ModuleLoaded",
      payload: { module: r.name, version: r.manifest.version, runtime: r.manifest.runtime },
    }));
  }

  private onExit(rec: ModuleRecord, proc: ModuleProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (rec.process !== proc) return; // an older process of a restarted module
    // Whatever the module registered (timers, API, RPC methods) dies with its process.
    this.services?.forget?.(rec.name);
    // Only a running module crashes; a failed start is reported by start(), a stop by unload().
    if (rec.state !== "running") return;
    const reason = proc.session.closeError?.message ?? describeExit(code, signal);
    const { restart, max_restarts, restart_window_ms } = rec.limits;
    const now = Date.now();
    rec.restartTimes = rec.restartTimes.filter((t) => now - t < restart_window_ms);
    const wants = !this.shuttingDown && (restart === "always" || (restart === "on-failure" && !(code === 0 && signal === null)));
    const willRestart = wants && rec.restartTimes.length < max_restarts;
    rec.state = "crashed";
    rec.problem = reason;
    this.log.error(`${rec.name} crashed: ${reason}`, { exit_code: code, signal, will_restart: willRestart });
    this.publish("ModuleCrashed", { module: rec.name, error: reason, exit_code: code, signal, will_restart: willRestart });
    this.audit(rec.name, "crash", { exit_code: code, signal, will_restart: willRestart }, reason);
    if (!willRestart) {
      if (wants) {
        rec.state = "failed";
        rec.problem = `${reason}; gave up after ${max_restarts} restarts within ${restart_window_ms} ms`;
        this.log.error(`${rec.name}: ${rec.problem}`);
      }
      if (rec.limits.important && !this.shuttingDown) {
        this.log.error(`${rec.name} is marked important and is not coming back: stopping the host`);
        this.opts.onImportantFailure?.(rec.name, rec.problem ?? reason);
      }
      return;
    }
    rec.restartTimes.push(now);
    const delay = Math.min(30_000, 250 * 2 ** (rec.restartTimes.length - 1));
    this.log.info(`restarting ${rec.name} in ${delay} ms (restart ${rec.restartTimes.length} of ${max_restarts})`);
    rec.restartTimer = setTimeout(() => {
      rec.restartTimer = undefined;
      if (rec.state === "crashed" && !this.shuttingDown) void this.start(rec, rec.restartTimes.length);
    }, delay);
  }

  /** Stop one module (graceful, then forced) and emit ModuleUnloaded. */
  async unload(name: string, reason = "unloaded by the operator"): Promise<void> {
    const rec = this.records.get(name);
    if (!rec) throw new ModhostError("not_found", `no module named ${name}`);
    if (rec.restartTimer) clearTimeout(rec.restartTimer);
    const proc = rec.process;
    const wasUp = rec.state === "running" || rec.state === "starting";
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
    await rec.store?.close();
    rec.store = undefined;
    if (wasUp) {
      this.log.info(`unloaded ${name}`, { reason });
      this.publish("ModuleUnloaded", { module: name, version: rec.manifest.version, reason });
      this.audit(name, "unload", undefined, reason);
    }
  }

  /**
   * Load (or load again) one module at runtime: re-read its manifest from disk, check that
   * its hard dependencies are running, apply the grants, start it. Other modules are untouched.
   */
  async load(name: string): Promise<ModuleStatus> {
    const existing = this.records.get(name);
    if (existing && (existing.state === "running" || existing.state === "starting" || existing.state === "stopping")) {
      throw new ModhostError("invalid_state", `${name} is ${existing.state}`, existing.state === "running" ? `use reload to restart it` : undefined);
    }
    const { manifests } = await this.discover();
    const manifest = manifests.find((m) => m.name === name);
    if (!manifest) throw new ModhostError("not_found", `no module named ${name} in ${this.opts.config.modules.modules_dir}`);
    if (this.opts.config.modules.disabled_modules.includes(name)) throw new ModhostError("invalid_state", `${name} is in [modules] disabled_modules`);
    const running = [...this.records.values()].filter((r) => r.state === "running" && r.name !== name).map((r) => r.manifest);
    const plan = planLoad([...running, manifest], HOST_VERSION);
    const skipped = plan.skipped.find((s) => s.name === name);
    if (skipped) throw new ModhostError("dependency", `${name} cannot load: ${skipped.reason}`);
    const rec = this.makeRecord(manifest, existing);
    this.records.set(name, rec);
    this.notLoaded.delete(name);
    if (!this.loadOrder.includes(name)) this.loadOrder.push(name);
    if (rec.state === "skipped") throw new ModhostError("permission_denied", rec.problem ?? "grants refused");
    await this.start(rec);
    if (rec.state !== "running") throw new ModhostError("load_failed", `${name} failed to load: ${rec.problem}`);
    return this.status().find((s) => s.name === name)!;
  }

  /** Stop a module and load it again from disk (new code, manifest and grants are re-read). */
  async reload(name: string): Promise<ModuleStatus> {
    if (!this.records.has(name)) throw new ModhostError("not_found", `no module named ${name}`);
    await this.preverify(name);
    await this.unload(name, "reload");
    return this.load(name);
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
    let report;
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

  /** Stop every module in reverse load order. */
  async shutdown(): Promise<void> {
    this.shuttingDown = true;
    for (const name of [...this.loadOrder].reverse()) {
      const rec = this.records.get(name);
      if (!rec) continue;
      if (rec.restartTimer) clearTimeout(rec.restartTimer);
      if (rec.process && !rec.process.hasExited) await this.unload(name, "host shutdown");
      else await rec.store?.close();
    }
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
  processOf(name: string): ModuleProcess | undefined {
    return this.records.get(name)?.process;
  }
}

/**
 * How a process ended, in words. Inside the sandbox a module runs under a shell and a launcher,
 * so a module killed by a signal shows up as exit code 128 + N: name the signal then.
 */
export function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  if (signal) return `killed by ${signal}`;
  if (code !== null && code > 128 && code < 128 + 65) {
    const name = Object.entries(osConstants.signals).find(([, n]) => n === code - 128)?.[0];
    if (name) return `killed by ${name} (exit code ${code})${name === "SIGXCPU" ? ": it used up its cpu_seconds limit" : ""}`;
  }
  return `exited with code ${code}`;
}

/** Which parts of the configuration differ: top-level sections and per-module tables. */
export function changedSections(a: HostConfig, b: HostConfig): string[] {
  const out: string[] = [];
  const same = (x: unknown, y: unknown) => JSON.stringify(x) === JSON.stringify(y);
  for (const section of ["host", "chain", "storage", "rpc"] as const) if (!same(a[section], b[section])) out.push(section);
  const { module_configs: _c1, limits: _l1, grants: _g1, ...restA } = a.modules;
  const { module_configs: _c2, limits: _l2, grants: _g2, ...restB } = b.modules;
  for (const key of Object.keys(restA) as (keyof typeof restA)[]) if (!same(restA[key], restB[key])) out.push(`modules.${key}`);
  for (const table of ["module_configs", "limits", "grants"] as const) {
    const names = new Set([...Object.keys(a.modules[table]), ...Object.keys(b.modules[table])]);
    for (const name of [...names].sort()) if (!same(a.modules[table][name], b.modules[table][name])) out.push(`modules.${table}.${name}`);
  }
  return out;
}

async function raceReady(proc: ModuleProcess, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  // The channel may close before the exit is seen: then say how the process ended, when it
  // ends soon, rather than just "connection closed".
  const ready = proc.session.ready.catch(async (err: Error) => {
    if (proc.session.closeError) throw err;
    const info = await Promise.race([proc.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), 1000).unref())]);
    throw info ? new Error(`process ${describeExit(info.code, info.signal)} during start-up`) : err;
  });
  try {
    await Promise.race([
      ready,
      proc.exited.then(async (info) => {
        // Let a goodbye that explains the exit arrive first.
        await new Promise((r) => setImmediate(r));
        throw new Error(proc.session.closeError?.message ?? `process ${describeExit(info.code, info.signal)} during start-up`);
      }),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`did not become ready within ${timeoutMs} ms (start_timeout_ms)`)), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The refusal message: what is missing, and the exact lines that would grant it. */
export function missingGrantsMessage(manifest: ModuleManifest, missing: MissingGrant[], allowed: Descriptor[]): string {
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
