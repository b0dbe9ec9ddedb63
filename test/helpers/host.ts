// A real modhost for modhost's own tests: a Host (host/host.ts) on an EmbeddedChain that only
// mines when the test says so, a temp directory with a modules dir built from fixtures (or
// inline modules), temp data and storage dirs, explicit grants, short limits, and every log
// line captured so that tests can assert on them. The configuration is the public harness's
// (testing/index.ts testHostConfig, TEST_LIMITS); what is added here is what modhost's own
// tests need and authors do not: fixtures by name, inline modules, ava's context, a second
// host on the same directory, the bus recorded from a subscription.
//
//   const h = await startHost(t, {
//     modules: ["good", "throws-in-start"],
//     grants: { good: ["read_chain_state", "read_storage", "write_storage", "subscribe_events"] },
//   });
//   await h.chain.mine(1);
//   await h.waitForLog(/stored block/, { source: "good" });
//
// Every host is stopped in t.teardown, and its temp directory removed.

import type { ExecutionContext } from "ava";
import { cp, mkdir, mkdtemp, readFile, realpath, rm, writeFile } from "node:fs/promises";
import { execa } from "execa";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Host } from "../../host/host.ts";
import type { HostConfig, Limits, MissingGrantPolicy } from "../../host/config.ts";
import { Logger, type LogRecord } from "../../host/log.ts";
import { EmbeddedChain } from "../../chain/embedded.ts";
import type { ChainBackend } from "../../chain/backend.ts";
import { formatDescriptor } from "../../capabilities/grants.ts";
import { loadManifest } from "../../host/manifest.ts";
import type { ModuleStatus } from "../../host/manager.ts";
import type { BusEvent } from "../../host/events/bus.ts";
import { type GrantSpec, testHostConfig } from "../../testing/index.ts";

// One definition of the test limits and the grant form, shared with the public harness.
export { TEST_LIMITS, type GrantSpec } from "../../testing/index.ts";

export const FIXTURES = fileURLToPath(new URL("../fixtures/modules/", import.meta.url));
export const ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** An inline module: its manifest and files (path relative to the module dir -> content). */
export interface InlineModule {
  toml: string;
  files: Record<string, string>;
}

export interface TestHostOptions {
  /** Fixture directory names under test/fixtures/modules to copy in. */
  modules?: string[];
  /** Extra modules written inline: directory name -> module. */
  inline?: Record<string, InlineModule>;
  /** Operator grants per module: a list of descriptors, or the full form. */
  grants?: Record<string, string[] | GrantSpec>;
  /** Over the test defaults (see TEST_LIMITS). */
  limits?: Partial<Limits>;
  /** Per-module limits ([modules.limits.NAME]). */
  moduleLimits?: Record<string, Partial<Limits>>;
  moduleConfigs?: Record<string, Record<string, unknown>>;
  onMissingGrant?: MissingGrantPolicy;
  /** Last word on the config before the host starts. */
  configure?: (config: HostConfig) => void;
  /** Do not call host.start() (the test wants to subscribe to the bus first). */
  noStart?: boolean;
  /** Reuse this temp directory (e.g. a second host on the same storage). */
  dir?: string;
  /**
   * Grant every module without an entry in `grants` exactly what its manifest requests
   * (as an operator who read the manifest would).
   */
  grantRequested?: boolean;
  /**
   * The host's chain backend, made over the embedded chain (a Core backend reading it through a
   * facade, say): the host uses it instead of the embedded chain, which is closed after the host.
   */
  backend?: (chain: EmbeddedChain) => Promise<ChainBackend>;
}

/**
 * How long a wait waits when the test does not say: a condition that follows a module's work
 * on a machine at load 20-30 (a TypeScript module's start alone can take 10 s there). A wait
 * ends as soon as its condition holds: this only bounds a failure.
 */
export const WAIT_MS = 30_000;

export interface WaitOptions {
  timeoutMs?: number;
  /** Only lines from this source (a module name, "host", "chain"). */
  source?: string;
  /** Only records from index `since` on (see `mark()`). */
  since?: number;
}

export class TestHost {
  readonly records: LogRecord[] = [];
  /** Formatted lines, as the Logger writes them. */
  readonly lines: string[] = [];
  /** Every bus event published since the host was created. */
  readonly events: Array<{ type: string; payload: unknown; time: number }> = [];
  readonly host: Host;
  readonly chain: EmbeddedChain;
  private stopped: Promise<void> | undefined;

  constructor(readonly dir: string, readonly config: HostConfig, chain: EmbeddedChain, backend?: ChainBackend) {
    this.chain = chain;
    const logger = new Logger({ level: "debug", format: "pretty", write: (line) => this.lines.push(line) });
    logger.addSink((r) => this.records.push(r));
    this.host = new Host({ config, logger, chain: backend ?? chain });
    // Record every event type on the bus.
    const all = this.host.bus.subscribe("test-recorder", (ev: BusEvent) => this.events.push({ type: ev.type, payload: ev.payload, time: ev.time }), { queueLimit: 100_000 });
    for (const type of ALL_EVENT_TYPES) all.types.add(type);
  }

  get manager() {
    return this.host.manager;
  }

  /** The index of the next log record: pass it as `since` to look only at what comes after. */
  mark(): number {
    return this.records.length;
  }

  status(name: string): ModuleStatus | undefined {
    return this.host.manager.status().find((s) => s.name === name);
  }

  /** The status of `name`; fails the test when there is none. */
  mustStatus(name: string): ModuleStatus {
    const s = this.status(name);
    if (!s) throw new Error(`no status for module ${name}; have: ${this.host.manager.status().map((x) => x.name).join(", ")}`);
    return s;
  }

  storageDir(name: string): string {
    return path.join(this.config.storage.dir, name);
  }

  logsOf(source: string, since = 0): LogRecord[] {
    return this.records.slice(since).filter((r) => r.source === source);
  }

  /** Poll `predicate` until it returns a truthy value; throws with `what` after the timeout. */
  async waitFor<T>(predicate: () => T | Promise<T>, timeoutMs = WAIT_MS, what: string | (() => string) = "condition"): Promise<NonNullable<T>> {
    return waitFor(predicate, timeoutMs, what, () => this.tail());
  }

  /** Wait for a log record whose message matches `re`; returns it. */
  async waitForLog(re: RegExp, opts: WaitOptions = {}): Promise<LogRecord> {
    const since = opts.since ?? 0;
    return this.waitFor(
      () => this.records.slice(since).find((r) => (opts.source === undefined || r.source === opts.source) && re.test(r.message)),
      opts.timeoutMs ?? WAIT_MS,
      `a log line matching ${re}${opts.source ? ` from ${opts.source}` : ""}`,
    );
  }

  /** Wait for a bus event of `type` (from index `since` of `events`) matching `match`. */
  async waitForEvent(type: string, match: (payload: Record<string, unknown>) => boolean = () => true, opts: { timeoutMs?: number; since?: number } = {}) {
    return this.waitFor(
      () => this.events.slice(opts.since ?? 0).find((e) => e.type === type && match(e.payload as Record<string, unknown>)),
      opts.timeoutMs ?? WAIT_MS,
      `a ${type} event`,
    );
  }

  async waitForState(name: string, state: ModuleStatus["state"] | ModuleStatus["state"][], timeoutMs = WAIT_MS): Promise<ModuleStatus> {
    const states = Array.isArray(state) ? state : [state];
    return this.waitFor(() => {
      const s = this.status(name);
      return s && states.includes(s.state) ? s : undefined;
    }, timeoutMs, () => {
      const now = this.status(name);
      return `${name} to be ${states.join(" or ")} (now ${now?.state}${now?.waiting_for ? `, waiting for ${now.waiting_for}` : ""})`;
    });
  }

  /** Mine `n` blocks and return the new height. */
  async mine(n = 1): Promise<number> {
    await this.chain.mine(n);
    return this.chain.getBlockHeight();
  }

  tail(n = 40): string {
    return this.lines.slice(-n).map((l) => (l.length > 400 ? `${l.slice(0, 400)}... (${l.length} chars)` : l)).join("\n");
  }

  stop(): Promise<void> {
    this.stopped ??= this.host.stop("test over");
    return this.stopped;
  }
}

const ALL_EVENT_TYPES = [
  "NewBlock", "BlockDisconnected", "ChainReorg", "MempoolTransactionAdded", "MempoolTransactionRemoved",
  "ModuleLoaded", "ModuleUnloaded", "ModuleCrashed", "ModuleRestarted", "ConfigLoaded",
  "NodeStartupCompleted", "NodeShutdown", "NodeShutdownCompleted",
];

export async function waitFor<T>(predicate: () => T | Promise<T>, timeoutMs = WAIT_MS, what: string | (() => string) = "condition", context?: () => string): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await predicate();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === "function" ? what() : what}${context ? `\n--- log tail ---\n${context()}` : ""}`);
    }
    await sleep(25);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export async function tempDir(t: ExecutionContext, prefix = "modhost-test-"): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  t.teardown(async () => {
    await unmountUnder(dir);
    // Retried: a module's process that outlives its host's stop by a moment (a grandchild, or a
    // killed host's child) may still create a file while the walk removes the directory
    // (ENOTEMPTY, seen in CI at load 17-21).
    await rm(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  });
  return dir;
}

/**
 * Detach what is mounted under `dir`: a host killed with -9 (a test's teardown kills its
 * child) leaves its native modules' data volumes mounted (the next host start would unmount
 * them), and removing the directory would then fail with EBUSY. Lazily, so files a dying
 * module still holds do not keep it; the loop device goes with the last of them.
 */
async function unmountUnder(dir: string): Promise<void> {
  const mountinfo = await readFile("/proc/self/mountinfo", "utf8").catch(() => "");
  const root = (await realpath(dir).catch(() => dir)) + "/";
  // Field 5 is the mount point (octal escapes for spaces and the like); deepest first.
  const points = mountinfo.split("\n").map((l) => l.split(" ")[4] ?? "").filter((p) => p.startsWith(root)).sort((a, b) => b.length - a.length);
  for (const point of points) await execa("umount", ["-l", point], { reject: false });
}

/** Write a module directory: module.toml and its files. */
export async function writeModule(modulesDir: string, dirName: string, mod: InlineModule): Promise<string> {
  const dir = path.join(modulesDir, dirName);
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, "module.toml"), mod.toml);
  for (const [file, content] of Object.entries(mod.files)) {
    await mkdir(path.dirname(path.join(dir, file)), { recursive: true });
    await writeFile(path.join(dir, file), content);
  }
  return dir;
}

/** A modules dir under `dir` with the given fixtures copied in and the inline modules written. */
export async function buildModulesDir(dir: string, fixtures: string[] = [], inline: Record<string, InlineModule> = {}): Promise<string> {
  const modulesDir = path.join(dir, "modules");
  await mkdir(modulesDir, { recursive: true });
  for (const name of fixtures) await cp(path.join(FIXTURES, name), path.join(modulesDir, name), { recursive: true });
  for (const [name, mod] of Object.entries(inline)) await writeModule(modulesDir, name, mod);
  return modulesDir;
}

/** The host config the harness uses (also handy to write a modhost.toml for the CLI). */
export function testConfig(dir: string, modulesDir: string, opts: TestHostOptions = {}): HostConfig {
  const { limits, onMissingGrant, grants, moduleLimits, moduleConfigs } = opts;
  const config = testHostConfig(dir, modulesDir, { limits, onMissingGrant, grants, moduleLimits, config: moduleConfigs });
  opts.configure?.(config);
  return config;
}

/** Build, start and (in teardown) stop a host. */
export async function startHost(t: ExecutionContext, opts: TestHostOptions = {}): Promise<TestHost> {
  const dir = opts.dir ?? (await tempDir(t));
  const modulesDir = await buildModulesDir(dir, opts.modules, opts.inline);
  const grants = { ...opts.grants };
  if (opts.grantRequested) {
    for (const name of [...(opts.modules ?? []), ...Object.keys(opts.inline ?? {})]) {
      const manifest = await loadManifest(path.join(modulesDir, name, "module.toml")).catch(() => undefined);
      if (manifest && !Object.hasOwn(grants, manifest.name)) grants[manifest.name] = manifest.capabilities.map((c) => formatDescriptor(c.permission, c.scope));
    }
  }
  const config = testConfig(dir, modulesDir, { ...opts, grants });
  const chain = await EmbeddedChain.create({
    matureBlocks: config.chain.mature_blocks, blockCacheBytes: config.chain.block_cache_mb * 1024 * 1024, mempoolBytes: config.chain.max_mempool_mb * 1024 * 1024,
    utxoCacheBytes: config.chain.utxo_cache_mb * 1024 * 1024, maxStoredBytes: config.chain.max_chain_mb * 1_000_000,
  });
  const backend = opts.backend ? await opts.backend(chain) : undefined;
  const h = new TestHost(dir, config, chain, backend);
  // ava runs teardowns in reverse order of registration: the host stops before its
  // directory is removed.
  t.teardown(async () => {
    await h.stop();
    if (backend) await chain.close();
    if (!t.passed) t.log(`--- host log tail (${path.basename(dir)}) ---\n${h.tail(60)}`);
  });
  if (!opts.noStart) await h.host.start();
  return h;
}

/** Descriptors the "good" fixture needs. */
export const GOOD_GRANTS = ["read_blockchain", "read_chain_state", "subscribe_events", "read_storage", "write_storage"];
