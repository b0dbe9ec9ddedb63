// modhost/testing: a real modhost for module authors' tests, from any test runner (ava,
// node:test, vitest; Rust authors run a node:test file with `modhost test`).
//
//   import { startHost } from "modhost/testing";
//
//   const h = await startHost({ modules: ["."] });     // grants: what module.toml requests
//   after(() => h.stop());                             // or { teardown: t.after.bind(t) }
//   const height = await h.mine(1);
//   await h.waitForLog(new RegExp(`block ${height}`), { module: "my-module" });
//   const row = await h.storage("my-module").get("blocks", String(height));
//
// Each host runs the embedded regtest chain (in memory, mining only when the test says so,
// 101 blocks mined at start so that coins are spendable), copies of the given module
// directories in a temporary directory of its own (data, storage, run files, audit log; removed
// at stop), its RPC server on a free loopback port, and short limits: tests in parallel
// processes or in one process do not share anything. Modules run sandboxed exactly as under
// `modhost run`; only their grants come from the test.

import { cp, mkdir, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Host } from "../host/host.ts";
import { defaultConfig, type HostConfig, type Limits, type MissingGrantPolicy } from "../host/config.ts";
import { Logger, type LogRecord } from "../host/log.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { formatDescriptor, parseDescriptor } from "../capabilities/grants.ts";
import { loadManifest, type ModuleManifest } from "../host/manifest.ts";
import type { ModuleStatus } from "../host/manager.ts";
import type { Metric } from "../capabilities/types.ts";
import type { ModuleStore } from "../storage/store.ts";

export type { LogRecord, ModuleStatus, Metric, HostConfig, Limits };

/** The operator's grant for one module: descriptors as in modhost.toml (`"subscribe_events=NewBlock"`). */
export interface GrantSpec {
  allow: string[];
  deny?: string[];
  on_missing_grant?: MissingGrantPolicy;
}

/** What a test host's configuration is made from (`testHostConfig`; `startHost` takes these too). */
export interface HostConfigOptions {
  /**
   * Grants per module name. With `startHost`, a module without an entry gets exactly what its
   * module.toml requests (as an operator who read the manifest would); give a smaller list to
   * test how the module copes with less.
   */
  grants?: Record<string, string[] | GrantSpec>;
  /** Per-module configuration ([modules.module_configs.NAME]); the schema's defaults fill the rest. */
  config?: Record<string, Record<string, unknown>>;
  /** Limits for every module, over the harness defaults (TEST_LIMITS). */
  limits?: Partial<Limits>;
  /** Per-module limits ([modules.limits.NAME]). */
  moduleLimits?: Record<string, Partial<Limits>>;
  /** What happens to a module that requests more than it was granted (default: the product's). */
  onMissingGrant?: MissingGrantPolicy;
}

export interface StartOptions extends HostConfigOptions {
  /**
   * Module directories (each with a module.toml), absolute or relative to the current
   * directory. Each is copied into the host's own modules directory (without node_modules,
   * .git and, for a native module, anything under target/ except its entry_point binary).
   */
  modules: string[];
  /** Last word on the host configuration before the host starts. */
  configure?: (config: HostConfig) => void;
  /** Register the host's stop with the test runner: `t.teardown.bind(t)` (ava), `t.after.bind(t)` (node:test), `onTestFinished` (vitest). */
  teardown?: (fn: () => Promise<void>) => void;
  /** Use this directory (created if needed, kept at stop) instead of a new temporary one. */
  dir?: string;
  /** Print every log line to stderr as it happens (also: MODHOST_TEST_LOG=1). */
  echoLogs?: boolean;
  /** Create the host without starting it (call `h.start()`). */
  noStart?: boolean;
}

/**
 * Limits of a test host: generous start timeouts (a loaded machine running tests in parallel
 * can take seconds to spawn a process), fast stops, no health checks racing with the test.
 */
export const TEST_LIMITS: Partial<Limits> = {
  memory_mb: 64,
  // The product's default stretch: isolated-vm's cpuTime grows while the isolate's thread holds
  // the isolate, descheduled or not, so on a loaded machine a short stretch can read as hundreds
  // of ms. Tests about the limit set their own.
  cpu_time_ms: 1000,
  // A start is its process's boot and the module's start(): at load 20-30 with other test
  // hosts booting beside it, a module whose start() makes a few hundred host calls took over
  // 20 s. Tests about the limit set their own.
  start_timeout_ms: 60_000,
  stop_timeout_ms: 1000,
  max_restarts: 3,
  restart_window_ms: 60_000,
  kill_timeout_ms: 500,
  health_interval_ms: 0,
  // RLIMIT_NPROC counts the threads of a module's uid machine-wide and the uid comes from the
  // module's name: parallel test hosts running the same module share it.
  processes: 4096,
};

export interface WaitOptions {
  /** Default 30 s. */
  timeoutMs?: number;
  /** Only lines from this source: a module's name, or "host", "chain", "rpc". */
  module?: string;
  /** The same as `module` (the name test/helpers/host.ts uses). */
  source?: string;
  /** Only records from index `since` on (see `mark()`). */
  since?: number;
}

/** An error answer of a JSON-RPC call: `code` (e.g. -32000 for a module handler's throw) and message. */
export class RpcError extends Error {
  /** Declared, not defined: no property of an error is undefined (see host/errors.ts). */
  declare readonly data?: unknown;

  constructor(readonly code: number, message: string, data?: unknown) {
    super(message);
    this.name = "RpcError";
    if (data !== undefined) (this as { data?: unknown }).data = data;
  }
}

/** Read access to one module's storage (its own LevelDB), while it runs or after it stopped. */
export interface StorageReader {
  get<T = unknown>(tree: string, key: string): Promise<T | undefined>;
  iterate<T = unknown>(tree: string, opts?: { gte?: string; lte?: string; gt?: string; lt?: string; reverse?: boolean; limit?: number }): Promise<Array<{ key: string; value: T }>>;
  trees(): Promise<string[]>;
}

export class TestHost {
  /** Every log record (host, chain and modules), in order. */
  readonly records: LogRecord[] = [];
  /** The same as formatted lines. */
  readonly lines: string[] = [];
  /** Every bus event since the host was created (node events and modules' own `module:name` events). */
  readonly events: Array<{ type: string; payload: unknown; time: number }> = [];
  readonly host: Host;
  private stopping: Promise<void> | undefined;

  constructor(
    /** The host's own directory: modules/, data/, audit.log. */
    readonly dir: string,
    readonly config: HostConfig,
    readonly chain: EmbeddedChain,
    /** The module names, in the order given. */
    readonly modules: string[],
    private readonly removeDir: boolean,
    echo: boolean,
  ) {
    const logger = new Logger({
      level: "debug",
      format: "pretty",
      write: (line) => {
        this.lines.push(line);
        if (echo) process.stderr.write(`${line}\n`);
      },
    });
    logger.addSink((r) => this.records.push(r));
    this.host = new Host({ config, logger, chain });
    // Every event published, whoever subscribes (modules' own "module:name" events too).
    const bus = this.host.bus;
    const publish = bus.publish.bind(bus);
    bus.publish = (type: string, payload: unknown) => {
      this.events.push({ type, payload, time: Date.now() });
      publish(type, payload);
    };
  }

  /** Start the host (only with `noStart`): loads the modules and waits until each is running or failed. */
  start(): Promise<void> {
    return this.host.start();
  }

  // ---- the chain ----

  /** Mine `n` blocks (with the mempool's transactions); returns the new height. */
  async mine(n = 1): Promise<number> {
    await this.chain.mine(n);
    return this.chain.getBlockHeight();
  }

  /** Replace the top `depth` blocks with `newBlocks` (default depth + 1) new ones; modules see BlockDisconnected, NewBlock and ChainReorg. */
  reorg(depth: number, newBlocks = depth + 1): Promise<{ disconnected: string[]; connected: string[] }> {
    return this.chain.reorg(depth, { newBlocks });
  }

  /** A signed wallet transaction into the mempool (modules see MempoolTransactionAdded); returns its txid. */
  sendTransaction(opts: { outputs?: number; feeRate?: number } = {}): Promise<string> {
    return this.chain.createTransaction(opts);
  }

  /** Pay `amount` sats to a regtest address from the chain's wallet; returns the txid and fee. */
  send(address: string, amount: number, opts: { feeRate?: number } = {}): Promise<{ txid: string; fee: number }> {
    return this.chain.send(address, amount, opts);
  }

  height(): Promise<number> {
    return this.chain.getBlockHeight();
  }

  // ---- the modules ----

  status(name: string): ModuleStatus | undefined {
    return this.host.manager.status().find((s) => s.name === name);
  }

  manifest(name: string): ModuleManifest | undefined {
    return this.host.manager.manifestOf(name);
  }

  /**
   * Call a JSON-RPC method on the host's RPC server, over HTTP with the host's cookie, as an
   * operator's client would: a module's method is `"<module>.<method>"`. Returns the result;
   * throws RpcError with the error's code and message.
   */
  async rpc(method: string, params?: unknown): Promise<any> {
    const addr = this.host.rpcServer?.address;
    if (!addr) throw new Error("the host has no RPC server running (it is stopped, or [rpc] is off in `configure`)");
    const cookie = await readFile(this.config.rpc.cookie_file, "utf8");
    const res = await fetch(`http://${addr.host}:${addr.port}/`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Basic ${Buffer.from(cookie.trim()).toString("base64")}` },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, ...(params !== undefined ? { params } : {}) }),
    });
    const text = await res.text();
    if (res.status !== 200) throw new RpcError(-res.status, `HTTP ${res.status}: ${text}`);
    const body = JSON.parse(text) as { result?: unknown; error?: { code: number; message: string; data?: unknown } };
    if (body.error) throw new RpcError(body.error.code, body.error.message, body.error.data);
    return body.result;
  }

  /**
   * Call a method of a module's module API (what `ctx.modules.registerApi` registered), as a
   * module named `caller` (default "test") would: the callee sees that caller.
   */
  callModule(module: string, method: string, params: unknown = {}, opts: { caller?: string; timeoutMs?: number } = {}): Promise<any> {
    const directory = this.host.manager.services?.modules;
    if (!directory) throw new Error("the host has not started its module services yet (call after startHost resolves)");
    return directory.call(opts.caller ?? "test", module, method, params, opts.timeoutMs ?? 30_000);
  }

  /** A module's metrics as it reported them (what `ctx.metrics.get(module)` returns). */
  metrics(module: string): Metric[] {
    return this.host.metrics.get(module);
  }

  /** The value of one metric series (the first whose labels include `labels`), or undefined. */
  metric(module: string, name: string, labels: Record<string, string> = {}): Metric["value"] | undefined {
    return this.metrics(module).find((m) => m.name === name && Object.entries(labels).every(([k, v]) => m.labels[k] === v))?.value;
  }

  /** Read a module's storage: through the host's open store while it runs, from its LevelDB after it stopped. */
  storage(module: string): StorageReader {
    // Through the host, which knows when the module holds its store (LevelDB has one holder).
    const withStore = async <T>(fn: (store: ModuleStore) => Promise<T>): Promise<T> => {
      if (!this.host.manager) throw new Error("the host has not started: call start() first (the host opens module storage)");
      return this.host.manager.withStore(module, fn);
    };
    return {
      get: <T>(tree: string, key: string) => withStore(async (s) => (await s.get(tree, key)) as T | undefined),
      iterate: <T>(tree: string, opts = {}) => withStore(async (s) => (await s.iterate(tree, opts)) as Array<{ key: string; value: T }>),
      trees: () => withStore((s) => s.listTrees()),
    };
  }

  /** Log records of one source (a module name, "host", "chain"), from index `since` on. */
  logs(source: string, since = 0): LogRecord[] {
    return this.records.slice(since).filter((r) => r.source === source);
  }

  /** The index of the next log record and event: pass it as `since` to wait only for what comes after. */
  mark(): number {
    return this.records.length;
  }

  /** The index of the next event, for `waitForEvent`'s `since`. */
  eventMark(): number {
    return this.events.length;
  }

  // ---- waiting ----

  /** Poll `predicate` (every 25 ms) until it returns a truthy value; throws after `timeoutMs` with the log's tail. */
  async waitFor<T>(predicate: () => T | Promise<T>, timeoutMs = 30_000, what = "a condition"): Promise<NonNullable<T>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await predicate();
      if (v) return v as NonNullable<T>;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n--- log tail ---\n${this.tail()}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /** Wait for a log record whose message matches `re` (from `opts.module` if given); returns it. */
  waitForLog(re: RegExp, opts: WaitOptions = {}): Promise<LogRecord> {
    const source = opts.module ?? opts.source;
    return this.waitFor(
      () => this.records.slice(opts.since ?? 0).find((r) => (source === undefined || r.source === source) && re.test(r.message)),
      opts.timeoutMs ?? 30_000,
      `a log line matching ${re}${source ? ` from ${source}` : ""}`,
    );
  }

  /** Wait for a bus event of `type` (e.g. "ModuleCrashed", or a module's own "my-module:summary") whose payload matches. */
  waitForEvent(type: string, match: (payload: any) => boolean = () => true, opts: { timeoutMs?: number; since?: number } = {}): Promise<{ type: string; payload: any; time: number }> {
    return this.waitFor(
      () => this.events.slice(opts.since ?? 0).find((e) => e.type === type && match(e.payload)),
      opts.timeoutMs ?? 30_000,
      `a ${type} event`,
    );
  }

  /** Wait until a module is in one of `states` ("running", "failed", "crashed", ...). */
  waitForState(name: string, states: ModuleStatus["state"] | Array<ModuleStatus["state"]>, timeoutMs = 30_000): Promise<ModuleStatus> {
    const want = Array.isArray(states) ? states : [states];
    return this.waitFor(() => {
      const s = this.status(name);
      return s && want.includes(s.state) ? s : undefined;
    }, timeoutMs, `${name} to be ${want.join(" or ")} (now ${this.status(name)?.state ?? "unknown"})`);
  }

  /** The last `n` log lines (for failure messages). */
  tail(n = 40): string {
    return this.lines.slice(-n).map((l) => (l.length > 400 ? `${l.slice(0, 400)}... (${l.length} chars)` : l)).join("\n");
  }

  /** Stop the host (modules get their stop call) and remove its temporary directory. Safe to call twice. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.host.stop("test over");
      if (this.removeDir) await rm(this.dir, { recursive: true, force: true });
    })();
    return this.stopping;
  }

  /** `await using h = await startHost(...)` stops it at the end of the block. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

/** Copy a module directory into `modulesDir`, leaving out what the module does not run from. */
async function copyModule(src: string, modulesDir: string): Promise<ModuleManifest> {
  const manifest = await loadManifest(path.join(src, "module.toml"));
  const dest = path.join(modulesDir, manifest.name);
  if (await stat(dest).catch(() => undefined)) throw new Error(`startHost: two modules named ${manifest.name} (${src})`);
  const entry = path.normalize(manifest.entry_point);
  await cp(src, dest, {
    recursive: true,
    filter: (from) => {
      const rel = path.relative(src, from);
      if (rel === "") return true;
      const top = rel.split(path.sep)[0]!;
      if (top === "node_modules" || top === ".git") return false;
      // A native module's build directory: only the entry binary (and the directories on its way).
      if (top === "target") return entry === rel || entry.startsWith(rel + path.sep);
      return true;
    },
  });
  return manifest;
}

/**
 * The configuration of a test host whose directory is `dir` and modules directory
 * `modulesDir`: debug logs, the embedded chain mining only when told (101 blocks at start),
 * data and storage under `dir`, the RPC server on any free port, TEST_LIMITS under `limits`,
 * the given grants (descriptors as in modhost.toml), unsigned modules allowed (they run with
 * the "allow-unsigned" warning, as under `modhost dev`; set `config.trust` to test
 * signatures), and no isolate pool (`[host] isolate_pool = 0`; set it in `configure` to test
 * with one). `startHost` builds its hosts with it; modhost's own tests do too.
 */
export function testHostConfig(dir: string, modulesDir: string, opts: HostConfigOptions = {}): HostConfig {
  const config = defaultConfig(dir);
  config.host.log_level = "debug";
  config.chain.block_interval_seconds = 0;
  config.chain.mature_blocks = 101;
  config.modules.modules_dir = modulesDir;
  config.modules.data_dir = path.join(dir, "data", "modules");
  config.storage.dir = path.join(dir, "data", "storage");
  // Any free port: tests run in parallel.
  config.rpc.port = 0;
  config.modules.default_limits = { ...config.modules.default_limits, ...TEST_LIMITS, ...opts.limits };
  if (opts.onMissingGrant) config.modules.on_missing_grant = opts.onMissingGrant;
  for (const [name, spec] of Object.entries(opts.grants ?? {})) {
    const g = Array.isArray(spec) ? { allow: spec } : spec;
    config.modules.grants[name] = {
      allow: g.allow.map((d) => parseDescriptor(d)),
      deny: (g.deny ?? []).map((d) => parseDescriptor(d)),
      ...(g.on_missing_grant ? { on_missing_grant: g.on_missing_grant } : {}),
    };
  }
  config.modules.limits = { ...opts.moduleLimits };
  config.modules.module_configs = { ...opts.config };
  config.trust.signatures = "allow-unsigned";
  // No pre-booted isolate host: a test host starts its modules once, so a pool would boot a
  // process that nobody takes, and tests running in parallel would boot twice as many.
  config.host.isolate_pool = 0;
  return config;
}

/** Start a host with the given modules; it is ready (modules started or failed) when this resolves. */
export async function startHost(opts: StartOptions): Promise<TestHost> {
  if (!Array.isArray(opts.modules) || opts.modules.length === 0) {
    throw new TypeError('startHost: give the module directories to run, e.g. startHost({ modules: ["."] })');
  }
  const dir = opts.dir ? path.resolve(opts.dir) : await mkdtemp(path.join(tmpdir(), "modhost-test-"));
  let removeDir = !opts.dir;
  try {
    const modulesDir = path.join(dir, "modules");
    await mkdir(modulesDir, { recursive: true });
    const manifests: ModuleManifest[] = [];
    for (const m of opts.modules) {
      const src = path.resolve(m);
      if (!(await stat(path.join(src, "module.toml")).catch(() => undefined))) {
        throw new Error(`startHost: ${src} has no module.toml (give the directory of a module)`);
      }
      manifests.push(await copyModule(src, modulesDir));
    }

    const grants: Record<string, string[] | GrantSpec> = { ...opts.grants };
    for (const m of manifests) {
      if (!Object.hasOwn(grants, m.name)) grants[m.name] = m.capabilities.map((c) => formatDescriptor(c.permission, c.scope));
    }
    const config = testHostConfig(dir, modulesDir, { ...opts, grants });
    config.modules.enabled_modules = manifests.map((m) => m.name);
    config.host.audit_log = path.join(dir, "audit.log");
    config.rpc.cookie_file = path.join(dir, ".cookie");
    opts.configure?.(config);

    const chain = await EmbeddedChain.create({ matureBlocks: config.chain.mature_blocks });
    const h = new TestHost(dir, config, chain, manifests.map((m) => m.name), removeDir, opts.echoLogs ?? process.env.MODHOST_TEST_LOG === "1");
    removeDir = false; // h.stop() removes it from now on
    opts.teardown?.(() => h.stop());
    if (!opts.noStart) {
      try {
        await h.start();
      } catch (err) {
        await h.stop().catch(() => undefined);
        throw err;
      }
    }
    return h;
  } finally {
    if (removeDir) await rm(dir, { recursive: true, force: true });
  }
}
