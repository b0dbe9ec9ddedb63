// The host: one running modhost. It wires the chain backend, the event bus, the module
// manager and the logger together, produces blocks on the embedded chain when configured to,
// and shuts down in order: NodeShutdown to every module, modules stopped in reverse dependency
// levels, NodeShutdownCompleted. At start the RPC port is taken before any module starts.

import { watch, type FSWatcher } from "node:fs";
import { mkdir, readdir } from "node:fs/promises";
import path from "node:path";
import { startInspectors, type InspectorServer } from "./inspector.ts";
import { limitsFor, sandboxModeFor, strayModuleWarnings, type HostConfig } from "./config.ts";
import { loadConfigOffLoop } from "./config-off.ts";
import { EventBus } from "./events/bus.ts";
import { hostTurn } from "../runtime/turn.ts";
import { hostBytes } from "../protocol/host-bytes.ts";
import { Logger, type SourceLogger } from "./log.ts";
import { changedSections, ModuleManager } from "./manager.ts";
import { RegistryDiscovery } from "./registry/discover.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import type { ChainBackend } from "../chain/backend.ts";
import { HOST_VERSION } from "./version.ts";
import { AuditLog } from "./audit.ts";
import { createServices } from "./services/index.ts";
import { describeSandboxes, detectSandbox } from "../runtime/sandbox/index.ts";
import { cleanStaleVolumes, volumesReleased } from "../runtime/sandbox/volume.ts";
import { holdToolRunner } from "../runtime/sandbox/tool-runner.ts";
import { holdSpawner } from "../runtime/sandbox/spawner.ts";
import { describeDataVolumes } from "./data-quota.ts";
import { RpcRegistry } from "./services/rpc.ts";
import { MetricsStore } from "./services/metrics.ts";
import { RpcServer } from "./rpc/server.ts";
import { leftByCommand, lockModulesDir, recoverModulesDir } from "./registry/journal.ts";
import { RpcAuth } from "./rpc/auth.ts";
import { createDispatcher, metricsPage, type AdminDeps } from "./rpc/admin.ts";
import { ModhostError } from "./errors.ts";
import { createChain } from "./chain.ts";
import { NodeEvents } from "./node-events.ts";
import type { CoreFacade } from "../chain/bitcoind/facade.ts";
import { tryLock, type DirLock } from "../storage/lock.ts";
import { defaultPoolJobs, poolThreads, threadPool } from "../storage/pool.ts";
import { configureDns, MAX_LOOKUPS_IN_FLIGHT } from "../capabilities/dns.ts";

/** The host's lock in each data directory it owns (host/host.ts lockDataDirs). */
const HOST_LOCK = ".modhost-host.lock";

export interface HostOptions {
  config: HostConfig;
  logger?: Logger;
  /** Grant modules everything they request (modhost dev). */
  grantAll?: boolean;
  /** Use this chain instead of creating the configured backend. */
  chain?: ChainBackend;
}

export class Host {
  readonly logger: Logger;
  /** Sending events shares the host's per-turn budget: a fan-out to many subscribers is sliced. */
  readonly bus = new EventBus({ gate: hostTurn });
  config: HostConfig;
  chain!: ChainBackend;
  /** Events the host derives from what it watches (host/node-events.ts). */
  nodeEvents: NodeEvents | undefined;
  /** ModuleDiscovered from the registry ([registry] discover_minutes), while the host runs. */
  discovery: RegistryDiscovery | undefined;
  /** The embedded chain's Core-compatible RPC ([chain] core_rpc_bind), while it runs. */
  chainFacade: CoreFacade | undefined;
  manager!: ModuleManager;
  audit!: AuditLog;
  /** Non-zero when the host stopped because something went wrong. */
  exitCode = 0;
  private readonly log: SourceLogger;
  private blockTimer: NodeJS.Timeout | undefined;
  private configWatcher: FSWatcher | undefined;
  private stopping: Promise<void> | undefined;
  /** This host's hold on the shared tool runner (runtime/sandbox/tool-runner.ts), let go at stop. */
  private releaseToolRunner: (() => Promise<void>) | undefined;
  private releaseSpawner: (() => Promise<void>) | undefined;
  private reloads: Promise<unknown> = Promise.resolve();
  /** The host locks in the data directories (lockDataDirs), held until the host has stopped. */
  private readonly dataLocks: DirLock[] = [];
  /** Module RPC methods and CLI specs. */
  rpc!: RpcRegistry;
  /** Module metrics. */
  metrics!: MetricsStore;
  /** The JSON-RPC server, while it runs ([rpc] enabled). */
  rpcServer: RpcServer | undefined;
  private rpcAuth: RpcAuth | undefined;
  /** When start() began (ms since the epoch). */
  startedAt = Date.now();

  constructor(private readonly opts: HostOptions) {
    this.config = opts.config;
    this.logger = opts.logger ?? new Logger({ level: opts.config.host.log_level, format: opts.config.host.log_format });
    this.log = this.logger.for("host");
    // Per-module log budgets follow the configuration, reloads included.
    this.logger.moduleBytesPerSecond = (module) => limitsFor(this.config, module).log_bytes_per_second;
    // The host's loop budget per turn, shared by every module's input ([host] turn_budget_ms).
    hostTurn.setBudget(opts.config.host.turn_budget_ms);
    // Modules' jobs in libuv's thread pool at once, all modules together ([host] pool_jobs).
    threadPool.setJobs(opts.config.host.pool_jobs || defaultPoolJobs());
    // What the host holds for all modules together ([host] module_bytes_mb).
    hostBytes.setCap(opts.config.host.module_bytes_mb * 1024 * 1024);
    // Where http_request's names are looked up ([host] dns_servers; the hosts file first).
    configureDns({ servers: opts.config.host.dns_servers });
  }

  async start(): Promise<void> {
    const started = Date.now();
    this.startedAt = started;
    this.log.info(`modhost ${HOST_VERSION} starting`, { config: this.config.file ?? "(defaults)" });
    // The process that runs mount, chown and the sandbox probes for the host, forked now while
    // the heap is small, so the host's loop never forks for them (runtime/sandbox/tool-runner.ts).
    this.releaseToolRunner = holdToolRunner();
    // The process that starts the module processes, for the same reason (runtime/sandbox/spawner.ts).
    this.releaseSpawner = holdSpawner();
    // Before anything is opened or started: one host per data directory, whatever else differs.
    await this.lockDataDirs();
    await this.cleanStaleVolumes();
    if (this.opts.grantAll) this.log.warn("development mode: every module gets every capability it requests");
    if (this.opts.chain) this.chain = this.opts.chain;
    else {
      const configured = await createChain(this.config, this.logger.for("chain"));
      this.chain = configured.backend;
      this.chainFacade = configured.facade;
    }
    const info = await this.chain.getChainInfo();
    this.logger.log("info", "chain", `${this.chain.name} backend ready`, { chain: info.chain, height: info.height, tip: info.tip_hash.slice(0, 16), ...(this.chain instanceof EmbeddedChain ? { data: this.chain.dataDir ?? "memory" } : {}) });
    this.nodeEvents = new NodeEvents({
      chain: this.chain,
      bus: this.bus,
      modules: () => (this.manager ? this.manager.status().map((m) => ({ name: m.name, state: m.state })) : []),
      dataDir: path.dirname(this.config.storage.dir),
      healthEventSeconds: this.config.host.health_event_seconds,
      diskSpaceLowMb: this.config.host.disk_space_low_mb,
      warn: (message) => this.log.warn(message),
    });
    this.chain.subscribe((name, payload) => {
      this.bus.publish(name, payload);
      this.nodeEvents?.onChainEvent(name, payload);
    });
    await this.reportSandbox();
    if (this.stopRequested) return;

    this.audit = new AuditLog(this.config.host.audit_log, {
      moduleBytesPerSecond: (module) => limitsFor(this.config, module).audit_bytes_per_second,
      maxBytes: this.config.host.audit_max_mb * 1024 * 1024,
      keep: this.config.host.audit_keep,
    });
    this.manager = new ModuleManager({ config: this.config, chain: this.chain, bus: this.bus, logger: this.logger, grantAll: this.opts.grantAll, audit: this.audit,
      onImportantFailure: (module, reason) => {
        this.exitCode = 1;
        void this.stop(`important module ${module} failed: ${reason}`);
      },
    });
    this.rpc = new RpcRegistry({ session: (module) => this.manager.session(module) });
    this.metrics = new MetricsStore();
    this.manager.services = createServices({
      bus: this.bus, manager: this.manager, rpc: this.rpc, metrics: this.metrics, logger: this.logger,
      providers: this.config.modules.providers, grantAll: this.opts.grantAll === true,
      hooks: () => this.config.hooks,
      blockRate: (module) => {
        const l = limitsFor(this.config, module);
        return { blocksPerMinute: l.submit_blocks_per_minute, mbPerMinute: l.submit_block_mb_per_minute };
      },
    });
    this.manager.services.blockSubmitted = (hash, module) => this.nodeEvents?.blockSubmitted(hash, module);
    await this.manager.removeStaleRunDirs();
    // The port first: a second host on the same config stops here, before any module's code runs.
    await this.startRpc();
    if (this.stopRequested) return;
    // The chain does not wait for modules: a module whose start() hangs (up to its
    // start_timeout_ms) must not hold up block production any more than the others' start.
    this.startBlockProduction();
    if (this.config.modules.enabled) {
      await this.recoverModulesDir();
      await this.manager.prepare();
      if (this.stopRequested) return;
      // Config entries naming no installed module (a typo, most often), and a host with none at all.
      const found = await this.manager.discover();
      for (const w of strayModuleWarnings(this.config, [...found.manifests.map((m) => m.name), ...found.broken.map((b) => path.basename(b.dir))])) this.log.warn(w);
      await this.manager.startAll();
      if (this.stopRequested) return;
      // Modules installed, updated or removed while no host ran (ModuleInstalled, ...).
      await this.manager.takeInventory();
    } else {
      this.log.warn("modules are disabled ([modules] enabled = false)");
    }
    this.inspectors = await startInspectors(this.config, this.manager.status(), { session: (m) => this.manager.session(m), log: this.logger.for("inspector") });
    const running = this.manager.status().filter((s) => s.state === "running").map((s) => s.name);
    this.bus.publish("NodeStartupCompleted", { modules: running });
    this.log.info(`ready in ${Date.now() - started} ms`, { running: running.join(",") || "none" });
    this.nodeEvents.start();
    if (this.config.modules.enabled) {
      this.discovery = new RegistryDiscovery({
        config: () => this.config,
        installed: () => this.manager.installedVersions(),
        announced: () => this.manager.announcements(),
        publish: (p) => this.bus.publish("ModuleDiscovered", p),
        log: { info: (m) => this.logger.log("info", "registry", m), warn: (m) => this.logger.log("warn", "registry", m) },
      });
      this.discovery.start();
    }
    this.watchConfig();
  }

  /**
   * Take the host lock in each directory whose contents a host owns (module stores, module
   * data): a second host on them stops here, before its chain, port or any module. The kernel
   * releases the locks when this process dies (storage/lock.ts), so a killed host never
   * leaves one behind, in whatever PID namespace it ran.
   */
  private async lockDataDirs(): Promise<void> {
    const dirs = [...new Set([this.config.storage.dir, this.config.modules.data_dir].map((d) => path.resolve(d)))];
    for (const dir of dirs) {
      const lockDir = path.join(dir, HOST_LOCK);
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const got = await tryLock(lockDir, true);
      if (got.state !== "locked") {
        this.log.error(`another modhost is running on ${dir} (it holds ${lockDir}); stopping`);
        this.exitCode = 1;
        await this.stop("another host holds the data directory");
        throw new ModhostError("busy", `another modhost is running on ${dir} (it holds ${lockDir})`, "stop the other host, or give this one its own [storage] dir and [modules] data_dir");
      }
      this.dataLocks.push(got.lock);
    }
  }

  /** Unmount the data volumes a host killed with -9 left mounted (under this host's lock, before any module starts). */
  private async cleanStaleVolumes(): Promise<void> {
    try {
      const cleaned = await cleanStaleVolumes(this.config.modules.data_dir);
      if (cleaned.length > 0) this.log.warn(`unmounted data volumes an earlier host left mounted: ${cleaned.join(", ")}`);
    } catch (err) {
      this.log.error(`could not unmount the data volumes an earlier host left (${(err as Error).message}): those modules may fail to start`);
    }
  }

  /**
   * Finish (or undo) an install or update that was interrupted (host/registry/journal.ts)
   * before modules are read, holding modules_dir as a registry command would. While a live
   * command holds it, the host starts with what is there (the command tells it what changed).
   */
  private async recoverModulesDir(): Promise<void> {
    const dir = this.config.modules.modules_dir;
    // Nothing left by a command: no lock to take (modules_dir may be read-only to the host).
    if (!(await readdir(dir).catch(() => [] as string[])).some(leftByCommand)) return;
    try {
      const lock = await lockModulesDir(this.config.modules.modules_dir);
      try {
        const done = await recoverModulesDir(this.config.modules.modules_dir);
        if (done) this.log.warn(`${done} in ${this.config.modules.modules_dir}`);
      } finally {
        await lock.release();
      }
    } catch (err) {
      this.log.error(`modules directory: ${(err as Error).message}${(err as ModhostError).hint ? ` (fix: ${(err as ModhostError).hint})` : ""}`);
    }
  }

  /** A stop() came while start() awaited: start nothing more (stop() stops only what exists when it runs). */
  private get stopRequested(): boolean {
    return this.stopping !== undefined;
  }

  /** Serve JSON-RPC and /metrics ([rpc]); a server that cannot start stops the host. */
  private async startRpc(): Promise<void> {
    const rpc = this.config.rpc;
    if (!rpc.enabled) {
      this.log.info("RPC server disabled ([rpc] enabled = false)");
      return;
    }
    const deps: AdminDeps = {
      manager: this.manager, chain: this.chain, registry: this.rpc, metrics: this.metrics, audit: this.audit,
      startedAt: this.startedAt, callTimeoutMs: rpc.call_timeout_ms,
      stop: (reason) => void this.stop(reason),
      server: () => this.rpcServer,
      chainMaxBlocks: this.config.chain.max_blocks_per_call,
    };
    const auth = RpcAuth.create({ cookieFile: rpc.cookie_file, ...(rpc.user !== undefined && rpc.password !== undefined ? { user: rpc.user, password: rpc.password } : {}) });
    const server = new RpcServer({
      bind: rpc.bind, port: rpc.port, auth, metricsWithoutAuth: rpc.metrics_without_auth, limits: rpc,
      dispatch: createDispatcher(deps), metricsText: () => metricsPage(deps), log: this.logger.for("rpc"),
    });
    try {
      const at = await server.start();
      this.rpcServer = server;
      // Only once the port is ours: a second host on the same config must not replace the
      // running host's cookie.
      await auth.writeCookie(at.port);
      this.rpcAuth = auth;
      this.logger.log("info", "rpc", `JSON-RPC on http://${at.host.includes(":") ? `[${at.host}]` : at.host}:${at.port}/`, { cookie: rpc.cookie_file });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const why = e.code === "EADDRINUSE" ? `${rpc.bind}:${rpc.port} is in use (is another modhost running?)` : e.message;
      this.log.error(`RPC server cannot start: ${why}`);
      this.exitCode = 1;
      await this.stop("the RPC server cannot start");
      throw new ModhostError("rpc_unavailable", `the RPC server cannot start: ${why}`, "stop the other process, or set another [rpc] port in modhost.toml (or [rpc] enabled = false)");
    }
  }

  /** Say in the startup log how module processes (native, and isolate hosts) will be confined on this machine. */
  private async reportSandbox(): Promise<void> {
    const caps = await detectSandbox();
    const { text, full } = describeSandboxes({ native: sandboxModeFor(this.config, "native"), isolate: sandboxModeFor(this.config, "isolate") }, caps);
    if (full) this.log.info(text);
    else this.log.warn(text);
    const volumes = await describeDataVolumes(this.config.modules.data_dir);
    if (volumes.volumes) this.log.info(volumes.text);
    else this.log.warn(volumes.text);
    const pool = this.config.host.isolate_pool;
    this.log.info(pool > 0
      ? `isolate pool: ${pool} pre-booted isolate host${pool === 1 ? "" : "s"} kept for TypeScript module starts ([host] isolate_pool), each in the same sandbox under a single-use uid, moved into its module's cgroup at hand-over`
      : "isolate pool: off ([host] isolate_pool = 0): every TypeScript module start boots its isolate host");
    this.log.info(`thread pool: ${poolThreads()} threads (UV_THREADPOOL_SIZE); modules' storage and file jobs at most ${threadPool.stats().jobs} at once ([host] pool_jobs), shared fairly between modules; DNS lookups for http_request take no thread (the host's own stub resolver, at most ${MAX_LOOKUPS_IN_FLIGHT} at once), servers ${this.config.host.dns_servers.length > 0 ? this.config.host.dns_servers.join(", ") : "from /etc/resolv.conf"} ([host] dns_servers)`);
  }

  /** Re-read the config file when it changes (and on SIGHUP, see the CLI); debounced. */
  private watchConfig(): void {
    const file = this.config.file;
    if (!file) return;
    let timer: NodeJS.Timeout | undefined;
    try {
      this.configWatcher = watch(path.dirname(file), (_event, name) => {
        if (name !== path.basename(file)) return;
        clearTimeout(timer);
        timer = setTimeout(() => void this.reloadConfig(), 200);
      });
      this.configWatcher.unref();
    } catch (err) {
      this.log.warn(`cannot watch ${file} for changes: ${(err as Error).message}`);
    }
  }

  /**
   * Load the config file again and apply what can change at runtime (module configs, grants,
   * limits). A file with errors is reported and ignored: the running configuration stays.
   * Publishes ConfigLoaded with the changed sections.
   */
  async reloadConfig(): Promise<string[]> {
    // Reloads run one at a time (the file watcher, SIGHUP and callers can overlap). Each caller
    // is answered with what changed between the configuration running when it asked and the
    // one running when its reload is done, so a reload that an earlier one already applied
    // still reports the change, and never before the modules were given it.
    const before = this.config;
    const run = this.reloads.then(() => this.reloadOnce());
    this.reloads = run.catch(() => undefined);
    await run;
    return this.config === before ? [] : changedSections(before, this.config);
  }

  /** The report of the last refused reload, and when (the same report is not logged again). */
  private refusedReport: string | undefined;
  private refusedAt = "";

  private async reloadOnce(): Promise<string[]> {
    if (!this.config.file || this.stopping) return [];
    let next: HostConfig;
    try {
      // Read, parsed and checked in a worker thread: not on the loop the modules are served on.
      next = await loadConfigOffLoop(this.config.file);
    } catch (err) {
      // The same report again (a file saved again, SIGHUP, an editor's several writes) is one
      // short line: the report itself is up to MAX_REPORT_CHARS, and reloads have no rate limit.
      const report = (err as Error).message;
      if (report === this.refusedReport) {
        this.log.error(`configuration not reloaded, keeping the running one: the file has the same problems as at the refused reload of ${this.refusedAt} (not repeated here)`);
        return [];
      }
      this.refusedReport = report;
      this.refusedAt = new Date().toISOString();
      this.log.error(`configuration not reloaded, keeping the running one:\n${report}`);
      return [];
    }
    this.refusedReport = undefined;
    const changed = await this.manager.reconfigure(next);
    if (changed.length === 0) return [];
    const later = changed.filter((c) => ["host", "chain", "storage", "rpc"].includes(c) || c === "modules.modules_dir" || c === "modules.data_dir");
    if (later.length) this.log.warn(`changes to ${later.join(", ")} take effect after a restart`);
    this.config = next;
    this.log.info(`configuration reloaded`, { changed: changed.join(",") });
    this.bus.publishEach("ConfigLoaded", (module) => this.manager.configLoadedFor(module, changed));
    return changed;
  }

  private startBlockProduction(): void {
    const seconds = this.config.chain.block_interval_seconds;
    if (seconds <= 0 || !(this.chain instanceof EmbeddedChain)) return;
    const chain = this.chain;
    const tick = async () => {
      try {
        for (let i = 0; i < this.config.chain.transactions_per_block; i++) {
          // Early on the wallet has few mature coins; fewer transactions is fine.
          const made = await chain.createTransaction().then(() => true, () => false);
          if (!made) break;
        }
        const [hash] = await chain.mine(1);
        const height = await chain.getBlockHeight();
        this.logger.log("info", "chain", `mined block ${height}`, { hash: hash?.slice(0, 16) });
      } catch (err) {
        this.logger.log("error", "chain", `block production failed: ${(err as Error).message}`);
      }
      // A tick that was running when the host began to stop must not start another.
      if (this.stopping) return;
      this.blockTimer = setTimeout(tick, seconds * 1000);
    };
    this.blockTimer = setTimeout(tick, seconds * 1000);
  }

  /** Inspector servers (development only: modules with an `inspect` limit). */
  inspectors: InspectorServer[] = [];
  /** Resolves once the host has stopped (for any reason). */
  // Declared before `stopped`: class fields are defined in order, and a later bare declaration
  // would reset what the promise executor assigned.
  private resolveStopped!: () => void;
  readonly stopped: Promise<void> = new Promise((resolve) => (this.resolveStopped = resolve));

  /** Graceful shutdown; safe to call more than once. */
  stop(reason = "shutdown"): Promise<void> {
    this.stopping ??= (async () => {
      const started = Date.now();
      clearTimeout(this.blockTimer);
      this.nodeEvents?.stop();
      this.discovery?.stop();
      const timeout = Math.ceil(this.config.modules.default_limits.stop_timeout_ms / 1000);
      this.log.info(`shutting down (${reason})`);
      this.configWatcher?.close();
      await Promise.all(this.inspectors.map((i) => i.close()));
      // No new admin calls while modules stop; the cookie goes with the server.
      await this.rpcServer?.stop();
      this.rpcServer = undefined;
      await this.rpcAuth?.removeCookie();
      this.bus.publish("NodeShutdown", { reason, timeout_seconds: timeout });
      // Honour the timeout: modules that subscribed get until then to handle the event.
      await this.bus.settled("NodeShutdown", timeout * 1000);
      await this.manager?.shutdown();
      await volumesReleased(this.config.modules.data_dir); // modules' data volumes unmounted before the lock goes
      this.bus.publish("NodeShutdownCompleted", { duration_ms: Date.now() - started });
      await this.chainFacade?.stop();
      await this.chain?.close();
      this.audit?.close();
      for (const lock of this.dataLocks.splice(0)) await lock.release();
      await this.releaseToolRunner?.();
      await this.releaseSpawner?.();
      this.log.info(`stopped in ${Date.now() - started} ms`);
      this.resolveStopped();
    })();
    return this.stopping;
  }
}
