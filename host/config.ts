// modhost.toml: the operator's configuration. Every section and key is optional and has a
// default; unknown keys are errors (with "did you mean"), since a typo in a grant or a limit
// must not silently fall back to a default. Relative paths are resolved against the
// directory of the config file.

import { isIP } from "node:net";
import path from "node:path";
import { DEFAULT_CGROUP_LIMITS, DEFAULT_SANDBOX_LIMITS, type SandboxMode } from "../runtime/sandbox/policy.ts";
import { DEFAULT_RPC_LIMITS, type RpcLimits } from "./rpc/server.ts";
import type { Descriptor } from "../capabilities/grants.ts";
import { closest } from "../capabilities/catalogue.ts";
import { MODULE_NAME_HINT, MODULE_NAME_RE, readDescriptors } from "./manifest.ts";
import { PROVIDER_ROLES, type ProviderRole } from "../capabilities/event-types.ts";
import { Checker, readToml, type IntegerRule, type TomlPath } from "./toml.ts";
import { HOOK_PAYLOAD_RANGE, HOOK_POINT_NAMES, HOOK_TIMEOUT_RANGE, type HooksConfig } from "../capabilities/hooks.ts";
import {
  checkPublisherRefs, defaultRegistry, defaultTrust, readModuleTrust, readRegistry, readTrust,
  type ModuleTrust, type RegistryConfig, type TrustConfig,
} from "./verify/config.ts";

export type RestartPolicy = "never" | "on-failure" | "always";
export type MissingGrantPolicy = "refuse" | "reduce";
export type LogLevel = "debug" | "info" | "warn" | "error";

export interface Limits {
  /** Isolate heap limit (min 8). */
  memory_mb: number;
  /** Max time of one synchronous run inside the module (start, one event handler, ...). */
  cpu_time_ms: number;
  start_timeout_ms: number;
  stop_timeout_ms: number;
  storage_max_bytes: number;
  storage_max_keys: number;
  storage_max_trees: number;
  restart: RestartPolicy;
  /** Within restart_window_ms. */
  max_restarts: number;
  restart_window_ms: number;
  /** Max queued events per subscriber before the oldest are dropped (and counted). */
  event_queue: number;
  /** After SIGTERM, how long before SIGKILL. */
  kill_timeout_ms: number;
  /** How often the host asks a running module whether it is healthy (0 = never). */
  health_interval_ms: number;
  /** A health request unanswered for this long marks the module unresponsive; it is killed. */
  health_timeout_ms: number;
  /** If this module fails for good (crashes and will not be restarted), stop the host. */
  important: boolean;
  // rlimits inside the sandbox (0 = no limit), of native modules and of the isolate hosts of
  // TypeScript modules; isolate hosts get at least what Node and V8 need (isolateHostLimits in
  // runtime/isolate/runtime.ts: address space, open files, threads).
  /** RLIMIT_AS: virtual address space per process. */
  address_space_mb: number;
  /** RLIMIT_NOFILE. */
  open_files: number;
  /** RLIMIT_NPROC: processes and threads of the module, together. */
  processes: number;
  /** RLIMIT_CPU: CPU seconds per process over its whole life. */
  cpu_seconds: number;
  /** RLIMIT_FSIZE: largest file the module may write. */
  file_size_mb: number;
  /** Longest a TypeScript module's handler (event, RPC, module API, timer, CLI, provider) may take before it is given up on. */
  handler_timeout_ms: number;
  /** Bytes per second the module may add to the host log (its logs, stdout, stderr, denials). */
  log_bytes_per_second: number;
  /** Bytes per second of audit records the module may cause (denials, audited actions). */
  audit_bytes_per_second: number;
  // The module's cgroup (runtime/sandbox/cgroup.ts), for all its processes together; `processes`
  // above is also its pids.max.
  /** Memory of all the module's processes together, shmem/memfd/tmpfs included (0 = no limit). */
  memory_total_mb: number;
  /** CPU weight among the host's modules, 1-10000 (100 = normal). */
  cpu_weight: number;
  /** CPU ceiling of the module, percent of one core (0 = none). */
  cpu_max_percent: number;
  /** Quarantine the module after this many failures (crashes, failed starts) within quarantine_window_ms (0 = never). */
  quarantine_after: number;
  quarantine_window_ms: number;
  // Fair share of the host (host/session.ts, storage/store.ts, host/events/bus.ts): what one
  // module may make the host do for it, so that its flood is its own latency, not others'.
  /** Requests served at once; further ones wait (the host stops reading the module's socket). */
  max_requests_in_flight: number;
  /** Requests per second (a burst of one second's worth); further ones wait. */
  requests_per_second: number;
  /** Host CPU time (ms per second) spent serving the module's requests; over it they wait. */
  host_cpu_ms_per_s: number;
  /** Longest the host works on one request before answering `timeout`. */
  request_timeout_ms: number;
  /** Event types one module may be subscribed to at once. */
  max_subscriptions: number;
  /** Bytes of answers and events sent but not yet read by the module; past it, it is disconnected. */
  max_unread_bytes: number;
  /** Events sent to a module and not yet acknowledged. */
  event_window: number;
  /** Bytes (keys + values) one storage_iter call reads; a paged call stops there and returns a cursor. */
  storage_iter_max_bytes: number;
  /** The module's LevelDB operations running at once (the rest wait in its own queue). */
  storage_io_concurrency: number;
  /**
   * Development only: "127.0.0.1:PORT" turns on the V8 inspector for this TypeScript module
   * (Chrome DevTools, VS Code) on that loopback address; "" (the default) leaves it off.
   */
  inspect: string;
}

export const DEFAULT_LIMITS: Limits = Object.freeze({
  memory_mb: 128,
  cpu_time_ms: 1000,
  start_timeout_ms: 10_000,
  stop_timeout_ms: 5000,
  storage_max_bytes: 64 * 1024 * 1024,
  storage_max_keys: 1_000_000,
  storage_max_trees: 64,
  restart: "on-failure",
  max_restarts: 5,
  restart_window_ms: 60_000,
  event_queue: 1024,
  kill_timeout_ms: 2000,
  health_interval_ms: 10_000,
  health_timeout_ms: 5000,
  important: false,
  address_space_mb: DEFAULT_SANDBOX_LIMITS.address_space_mb,
  open_files: DEFAULT_SANDBOX_LIMITS.open_files,
  processes: DEFAULT_SANDBOX_LIMITS.processes,
  cpu_seconds: DEFAULT_SANDBOX_LIMITS.cpu_seconds,
  file_size_mb: DEFAULT_SANDBOX_LIMITS.file_size_mb,
  handler_timeout_ms: 120_000,
  log_bytes_per_second: 32 * 1024,
  audit_bytes_per_second: 16 * 1024,
  memory_total_mb: DEFAULT_CGROUP_LIMITS.memory_mb,
  cpu_weight: DEFAULT_CGROUP_LIMITS.cpu_weight,
  cpu_max_percent: DEFAULT_CGROUP_LIMITS.cpu_max_percent,
  quarantine_after: 5,
  quarantine_window_ms: 600_000,
  max_requests_in_flight: 64,
  requests_per_second: 2000,
  host_cpu_ms_per_s: 250,
  request_timeout_ms: 30_000,
  max_subscriptions: 64,
  max_unread_bytes: 32 * 1024 * 1024,
  event_window: 64,
  storage_iter_max_bytes: 1024 * 1024,
  storage_io_concurrency: 2,
  inspect: "",
});

/** Bounds of the numeric limits; anything not listed is "0 or more". */
const LIMIT_RULES: Partial<Record<keyof Limits, IntegerRule>> = {
  memory_mb: { min: 8 },
  cpu_time_ms: { min: 1 },
  start_timeout_ms: { min: 1 },
  restart_window_ms: { min: 1 },
  event_queue: { min: 1 },
  kill_timeout_ms: { min: 1 },
  health_timeout_ms: { min: 1 },
  handler_timeout_ms: { min: 1 },
  log_bytes_per_second: { min: 1024 },
  audit_bytes_per_second: { min: 1024 },
  cpu_weight: { min: 1, max: 10_000 },
  quarantine_window_ms: { min: 1 },
  max_requests_in_flight: { min: 1 },
  requests_per_second: { min: 1 },
  host_cpu_ms_per_s: { min: 1, max: 1000 },
  request_timeout_ms: { min: 1 },
  max_subscriptions: { min: 1 },
  max_unread_bytes: { min: 1024 * 1024 },
  event_window: { min: 1 },
  storage_iter_max_bytes: { min: 1024 },
  storage_io_concurrency: { min: 1 },
};

const RESTART_POLICIES: readonly RestartPolicy[] = ["never", "on-failure", "always"];
const MISSING_GRANT_POLICIES: readonly MissingGrantPolicy[] = ["refuse", "reduce"];

export interface ModuleGrants {
  allow: Descriptor[];
  deny: Descriptor[];
  on_missing_grant?: MissingGrantPolicy;
}

export interface HostConfig {
  /** Absolute path; null when built from defaults. */
  file: string | null;
  /** Base directory for relative paths: the config file's directory, or the cwd. */
  dir: string;
  /** The TOML text, for locating later problems (a module's config) in the file. */
  source: string | null;
  host: {
    log_level: LogLevel;
    log_format: "pretty" | "json";
    /** Absolute path of the append-only audit log (JSON lines). */
    audit_log: string;
    /** Publish a HealthCheck event this often (0 = never). */
    health_event_seconds: number;
    /** Publish DiskSpaceLow when the data directory's free space falls below this (0 = never). */
    disk_space_low_mb: number;
    /** Pre-booted isolate hosts kept warm for TypeScript module starts (runtime/isolate/pool.ts); 0 = off. */
    isolate_pool: number;
  };
  chain: {
    backend: "embedded" | "bitcoind";
    /** bitcoind: the node's JSON-RPC URL. */
    rpc_url: string;
    /** bitcoind: the node's .cookie file (absolute), or rpc_user + rpc_password. */
    rpc_cookie_file: string | null;
    rpc_user: string | null;
    rpc_password: string | null;
    /** bitcoind: the node's zmqpubsequence endpoint; none: poll. */
    zmq_sequence: string | null;
    /** bitcoind: safety-net poll of the node's best block (0 = the default: 1 s without ZMQ, 30 s with it). */
    poll_interval_ms: number;
    /** embedded: serve it over Bitcoin Core's RPC on this "host:port" (none = off), for ordinary Bitcoin tools. */
    core_rpc_bind: string | null;
    /** embedded: and publish Core's ZMQ topics here, e.g. "tcp://127.0.0.1:28332" (none = off). */
    core_zmq_bind: string | null;
    /** 0 = never mine automatically. */
    block_interval_seconds: number;
    /** Random mempool transactions created between blocks. */
    transactions_per_block: number;
    mature_blocks: number;
    /** Absolute: the embedded chain's own LevelDB database (blocks, UTXO set, wallet coins). */
    data_dir: string;
    /** Full blocks (with undo data) the embedded chain keeps in memory besides its tip. */
    block_cache: number;
    /** UTXOs the embedded chain keeps in memory. */
    utxo_cache: number;
    /** Most blocks one `chain mine` mines, and deepest `chain reorg` (admin RPC). */
    max_blocks_per_call: number;
  };
  modules: {
    enabled: boolean;
    /** Absolute. */
    modules_dir: string;
    /** Absolute. */
    data_dir: string;
    /** [] = all discovered. */
    enabled_modules: string[];
    disabled_modules: string[];
    on_missing_grant: MissingGrantPolicy;
    /** How native modules are sandboxed: "auto" (best available, refuse if none), "full", "degraded", "off". */
    /**
     * How module processes are sandboxed, native modules and the isolate hosts of TypeScript
     * modules alike: "auto" (best available; if there is none, native modules are refused and
     * isolate hosts run unsandboxed, with a warning), "full", "degraded", "off".
     */
    sandbox: SandboxMode;
    /** The older key, for native modules only: overrides `sandbox` for them when set (null: unset). */
    native_sandbox: SandboxMode | null;
    module_configs: Record<string, Record<string, unknown>>;
    /** [modules.default_limits] merged over DEFAULT_LIMITS. */
    default_limits: Limits;
    limits: Record<string, Partial<Limits>>;
    grants: Record<string, ModuleGrants>;
    /** [modules.trust.NAME]: whose signatures count for the module, and its signature policy. */
    trust: Record<string, ModuleTrust>;
    /** [modules.providers]: the module the operator chose for each provider role. */
    providers: Partial<Record<ProviderRole, string>>;
    /** How many modules start at the same time (each once its dependencies are up); 0 = the CPU count. */
    start_concurrency: number;
  };
  storage: { dir: string };
  rpc: RpcConfig;
  /** [trust]: signature policy and publishers' keys (host/verify/config.ts). */
  trust: TrustConfig;
  /** [registry]: where modhost install finds modules (host/registry). */
  registry: RegistryConfig;
  /** [hooks.POINT]: the operator's order, failure policy, deadline and payload limit per hook point (capabilities/hooks.ts). */
  hooks: HooksConfig;
}

/** The [rpc] limits (RpcLimits, host/rpc/server.ts) are keys of [rpc] too. */
export interface RpcConfig extends RpcLimits {
  /** Serve JSON-RPC (and /metrics) while the host runs. */
  enabled: boolean;
  /** Address to listen on; loopback unless allow_remote. */
  bind: string;
  /** 0 = any free port (tests). */
  port: number;
  allow_remote: boolean;
  /** Absolute; written with mode 0600 at start, removed at stop. */
  cookie_file: string;
  user?: string;
  password?: string;
  /** How long a module's RPC method or CLI command may take. */
  call_timeout_ms: number;
  /** Serve /metrics without authentication (for Prometheus scrapers). */
  metrics_without_auth: boolean;
}

/** The top-level tables of modhost.toml (ConfigLoaded at start lists them all). */
export const CONFIG_SECTIONS = ["host", "chain", "modules", "storage", "rpc", "trust", "registry", "hooks"] as const;
const SECTIONS = CONFIG_SECTIONS;
const MODULES_KEYS = [
  "enabled", "modules_dir", "data_dir", "enabled_modules", "disabled_modules", "on_missing_grant", "sandbox", "native_sandbox",
  "module_configs", "default_limits", "limits", "grants", "trust", "providers",
  "module_configs", "default_limits", "limits", "grants", "trust", "start_concurrency",
] as const;

export function defaultConfig(dir: string): HostConfig {
  const base = path.resolve(dir);
  return {
    file: null,
    dir: base,
    source: null,
    host: { log_level: "info", log_format: "pretty", audit_log: path.resolve(base, "data/audit.log"), health_event_seconds: 60, disk_space_low_mb: 1024, isolate_pool: 1 },
    chain: {
      backend: "embedded", block_interval_seconds: 0, transactions_per_block: 3, mature_blocks: 101,
      data_dir: path.resolve(base, "data/chain"), block_cache: 64, utxo_cache: 20_000, max_blocks_per_call: 1000,
      rpc_url: "http://127.0.0.1:8332/", rpc_cookie_file: null, rpc_user: null, rpc_password: null, zmq_sequence: null, poll_interval_ms: 0,
      core_rpc_bind: null, core_zmq_bind: null,
    },
    modules: {
      enabled: true,
      modules_dir: path.resolve(base, "modules"),
      data_dir: path.resolve(base, "data/modules"),
      enabled_modules: [],
      disabled_modules: [],
      on_missing_grant: "refuse",
      sandbox: "auto",
      native_sandbox: null,
      module_configs: {},
      default_limits: { ...DEFAULT_LIMITS },
      limits: {},
      grants: {},
      trust: {},
      providers: {},
      start_concurrency: 0,
    },
    storage: { dir: path.resolve(base, "data/storage") },
    rpc: {
      enabled: true, bind: "127.0.0.1", port: 8339, allow_remote: false, cookie_file: path.resolve(base, "data/.cookie"),
      call_timeout_ms: 10_000, metrics_without_auth: false, ...DEFAULT_RPC_LIMITS,
    },
    trust: defaultTrust(),
    registry: defaultRegistry(base),
    hooks: {},
  };
}

export async function loadConfig(file: string): Promise<HostConfig> {
  const abs = path.resolve(file);
  const { data, source } = await readToml(abs);
  return parseConfig(data, source, abs);
}

/** Validates a parsed modhost.toml. Throws one ConfigError listing every problem found. */
export function parseConfig(data: Record<string, unknown>, source: string, file: string): HostConfig {
  const abs = path.resolve(file);
  const config = defaultConfig(path.dirname(abs));
  config.file = abs;
  config.source = source;
  const c = new Checker(file, source);
  c.knownKeys(data, [], SECTIONS);
  readHost(c, data, config);
  readChain(c, data, config);
  readModules(c, data, config);
  readRpc(c, data, config);
  readTrust(c, data, config.trust);
  readRegistry(c, data, config.registry, config.dir);
  checkPublisherRefs(c, config.trust, config.modules.trust);
  readHooks(c, data, config);
  const storage = c.table(data["storage"], ["storage"]);
  if (storage) {
    c.knownKeys(storage, ["storage"], ["dir"]);
    config.storage.dir = readDir(c, storage, ["storage"], "dir", config.dir) ?? config.storage.dir;
  }
  c.throwIfProblems();
  return config;
}

const SANDBOX_MODES: readonly SandboxMode[] = ["auto", "full", "degraded", "off"];

/** The sandbox mode for a runtime's processes: [modules] sandbox, or native_sandbox for native modules when set. */
export function sandboxModeFor(config: HostConfig, runtime: "isolate" | "native"): SandboxMode {
  return (runtime === "native" ? config.modules.native_sandbox : null) ?? config.modules.sandbox;
}

export function limitsFor(config: HostConfig, module: string): Limits {
  const own = Object.hasOwn(config.modules.limits, module) ? config.modules.limits[module] : undefined;
  return { ...config.modules.default_limits, ...own };
}

/** The operator's grants for a module; empty allow and deny when there are none. */
export function grantsFor(config: HostConfig, module: string): ModuleGrants {
  const own = Object.hasOwn(config.modules.grants, module) ? config.modules.grants[module] : undefined;
  return own ?? { allow: [], deny: [] };
}

export function missingGrantPolicy(config: HostConfig, module: string): MissingGrantPolicy {
  return grantsFor(config, module).on_missing_grant ?? config.modules.on_missing_grant;
}

// ---------------------------------------------------------------------------------------
// Sections

function readHost(c: Checker, data: Record<string, unknown>, config: HostConfig): void {
  const at = ["host"];
  const t = c.table(data["host"], at);
  if (!t) return;
  c.knownKeys(t, at, ["log_level", "log_format", "audit_log", "health_event_seconds", "disk_space_low_mb", "isolate_pool"]);
  config.host.health_event_seconds = c.integer(t, at, "health_event_seconds", { min: 0 }) ?? config.host.health_event_seconds;
  config.host.disk_space_low_mb = c.integer(t, at, "disk_space_low_mb", { min: 0 }) ?? config.host.disk_space_low_mb;
  config.host.isolate_pool = c.integer(t, at, "isolate_pool", { min: 0, max: 16 }) ?? config.host.isolate_pool;
  config.host.log_level = c.oneOf(t, at, "log_level", ["debug", "info", "warn", "error"] as const) ?? config.host.log_level;
  config.host.log_format = c.oneOf(t, at, "log_format", ["pretty", "json"] as const) ?? config.host.log_format;
  config.host.audit_log = readDir(c, t, at, "audit_log", config.dir) ?? config.host.audit_log;
}

const RPC_LIMIT_KEYS = Object.keys(DEFAULT_RPC_LIMITS) as (keyof RpcLimits)[];

function readRpc(c: Checker, data: Record<string, unknown>, config: HostConfig): void {
  const at = ["rpc"];
  const t = c.table(data["rpc"], at);
  if (!t) return;
  const r = config.rpc;
  c.knownKeys(t, at, ["enabled", "bind", "port", "allow_remote", "cookie_file", "user", "password", "call_timeout_ms", "metrics_without_auth", ...RPC_LIMIT_KEYS]);
  for (const key of RPC_LIMIT_KEYS) r[key] = c.integer(t, at, key, { min: 1 }) ?? r[key];
  if (r.header_timeout_ms > r.request_timeout_ms) {
    c.report([...at, t["header_timeout_ms"] !== undefined ? "header_timeout_ms" : "request_timeout_ms"], `header_timeout_ms (${r.header_timeout_ms}) is longer than request_timeout_ms (${r.request_timeout_ms})`, "the headers are part of the request: make request_timeout_ms at least header_timeout_ms");
  }
  r.enabled = c.boolean(t, at, "enabled") ?? r.enabled;
  r.allow_remote = c.boolean(t, at, "allow_remote") ?? r.allow_remote;
  r.metrics_without_auth = c.boolean(t, at, "metrics_without_auth") ?? r.metrics_without_auth;
  r.port = c.integer(t, at, "port", { min: 0, max: 65535 }) ?? r.port;
  r.call_timeout_ms = c.integer(t, at, "call_timeout_ms", { min: 1 }) ?? r.call_timeout_ms;
  r.cookie_file = readDir(c, t, at, "cookie_file", config.dir) ?? r.cookie_file;
  const bind = c.string(t, at, "bind");
  if (bind !== undefined) {
    if (isIP(bind) === 0 && bind !== "localhost") {
      c.report([...at, "bind"], `"${bind}" is not an IP address`, 'write an address such as "127.0.0.1" or "::1"');
    } else {
      r.bind = bind;
      if (!isLoopback(bind) && !r.allow_remote) {
        c.report([...at, "bind"], `"${bind}" is not a loopback address: the RPC server would be reachable from other machines`, "keep the default \"127.0.0.1\", or set allow_remote = true in [rpc] if you mean it (and put TLS in front: RPC is plain HTTP)");
      }
    }
  }
  const user = c.string(t, at, "user");
  const password = c.string(t, at, "password");
  if (user !== undefined && (user === "" || user.includes(":") || user === "__cookie__")) {
    c.report([...at, "user"], `"${user}" cannot be an RPC user name`, 'use a non-empty name without ":" (and not "__cookie__", which the cookie uses)');
  } else if ((user === undefined) !== (password === undefined)) {
    c.report([...at, user === undefined ? "password" : "user"], "user and password go together", "set both, or neither (the cookie file always works)");
  } else if (user !== undefined && password !== undefined) {
    if (password.length < 8) c.report([...at, "password"], "the RPC password is shorter than 8 characters", "use a long random password, or only the cookie file");
    else {
      r.user = user;
      r.password = password;
    }
  }
}

/** Whether an IP literal (or "localhost") is a loopback address. */
export function isLoopback(address: string): boolean {
  if (address === "localhost" || address === "::1") return true;
  if (isIP(address) === 4) return address.startsWith("127.");
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return mapped !== null && mapped[1]!.startsWith("127.");
}

function readChain(c: Checker, data: Record<string, unknown>, config: HostConfig): void {
  const at = ["chain"];
  const t = c.table(data["chain"], at);
  if (!t) return;
  c.knownKeys(t, at, [
    "backend", "block_interval_seconds", "transactions_per_block", "mature_blocks", "data_dir", "block_cache", "utxo_cache", "max_blocks_per_call",
    "rpc_url", "rpc_cookie_file", "rpc_user", "rpc_password", "zmq_sequence", "poll_interval_ms", "core_rpc_bind", "core_zmq_bind",
  ]);
  const chain = config.chain;
  chain.backend = c.oneOf(t, at, "backend", ["embedded", "bitcoind"] as const) ?? chain.backend;
  const url = c.string(t, at, "rpc_url");
  if (url !== undefined) {
    if (!/^https?:\/\/[^/\s]+(\/.*)?$/.test(url)) c.report([...at, "rpc_url"], `"${url}" is not an http URL`, 'write the node\'s RPC address, e.g. "http://127.0.0.1:8332/"');
    else chain.rpc_url = url;
  }
  chain.rpc_cookie_file = readDir(c, t, at, "rpc_cookie_file", config.dir) ?? chain.rpc_cookie_file;
  const user = c.string(t, at, "rpc_user");
  const password = c.string(t, at, "rpc_password");
  if ((user === undefined) !== (password === undefined)) {
    c.report([...at, user === undefined ? "rpc_password" : "rpc_user"], "rpc_user and rpc_password go together", "set both (`modhost bitcoind-config` prints them with the node's rpcauth line), or use rpc_cookie_file");
  } else if (user !== undefined && password !== undefined) {
    chain.rpc_user = user;
    chain.rpc_password = password;
  }
  for (const key of ["zmq_sequence", "core_zmq_bind"] as const) {
    const endpoint = c.string(t, at, key);
    if (endpoint === undefined) continue;
    if (!/^(tcp:\/\/[^\s]+:\d+|ipc:\/\/\S+)$/.test(endpoint)) c.report([...at, key], `"${endpoint}" is not a ZMQ endpoint`, 'write "tcp://HOST:PORT" (as in the node\'s zmqpubsequence line) or "ipc:///path"');
    else chain[key] = endpoint;
  }
  chain.poll_interval_ms = c.integer(t, at, "poll_interval_ms", { min: 0 }) ?? chain.poll_interval_ms;
  const bind = c.string(t, at, "core_rpc_bind");
  if (bind !== undefined) {
    const m = /^(.+):(\d{1,5})$/.exec(bind);
    if (!m || Number(m[2]) > 65535) c.report([...at, "core_rpc_bind"], `"${bind}" is not HOST:PORT`, 'write e.g. "127.0.0.1:18443" (regtest\'s usual RPC port)');
    else if (!isLoopback(m[1]!.replace(/^\[|\]$/g, ""))) c.report([...at, "core_rpc_bind"], `"${bind}" is not a loopback address`, "serve the Core-compatible RPC on 127.0.0.1 only: it has no TLS");
    else chain.core_rpc_bind = bind;
  }
  if (chain.backend === "bitcoind" && chain.rpc_cookie_file === null && chain.rpc_user === null) {
    c.report([...at, "backend"], "the bitcoind backend needs credentials", "set rpc_cookie_file (the node's .cookie) or rpc_user + rpc_password (`modhost bitcoind-config` prints a least-authority user)");
  }
  chain.block_interval_seconds = c.integer(t, at, "block_interval_seconds") ?? chain.block_interval_seconds;
  chain.transactions_per_block = c.integer(t, at, "transactions_per_block") ?? chain.transactions_per_block;
  chain.mature_blocks = c.integer(t, at, "mature_blocks") ?? chain.mature_blocks;
  chain.data_dir = readDir(c, t, at, "data_dir", config.dir) ?? chain.data_dir;
  chain.block_cache = c.integer(t, at, "block_cache", { min: 1, max: 100_000 }) ?? chain.block_cache;
  chain.utxo_cache = c.integer(t, at, "utxo_cache", { min: 0, max: 10_000_000 }) ?? chain.utxo_cache;
  chain.max_blocks_per_call = c.integer(t, at, "max_blocks_per_call", { min: 1, max: 100_000 }) ?? chain.max_blocks_per_call;
}

function readModules(c: Checker, data: Record<string, unknown>, config: HostConfig): void {
  const at = ["modules"];
  const t = c.table(data["modules"], at);
  if (!t) return;
  const m = config.modules;
  c.knownKeys(t, at, MODULES_KEYS);
  m.enabled = c.boolean(t, at, "enabled") ?? m.enabled;
  m.modules_dir = readDir(c, t, at, "modules_dir", config.dir) ?? m.modules_dir;
  m.data_dir = readDir(c, t, at, "data_dir", config.dir) ?? m.data_dir;
  m.enabled_modules = readModuleNames(c, t, at, "enabled_modules");
  m.disabled_modules = readModuleNames(c, t, at, "disabled_modules");
  m.disabled_modules.forEach((name) => {
    if (m.enabled_modules.includes(name)) {
      c.report([...at, "disabled_modules", m.disabled_modules.indexOf(name)], `"${name}" is both enabled and disabled`, "remove it from one of the two lists");
    }
  });
  m.on_missing_grant = c.oneOf(t, at, "on_missing_grant", MISSING_GRANT_POLICIES) ?? m.on_missing_grant;
  m.sandbox = c.oneOf(t, at, "sandbox", SANDBOX_MODES) ?? m.sandbox;
  m.native_sandbox = c.oneOf(t, at, "native_sandbox", SANDBOX_MODES) ?? m.native_sandbox;
  m.start_concurrency = c.integer(t, at, "start_concurrency", { min: 0, max: 1024 }) ?? m.start_concurrency;

  const defaults = c.table(t["default_limits"], [...at, "default_limits"]);
  if (defaults) m.default_limits = { ...DEFAULT_LIMITS, ...readLimits(c, defaults, [...at, "default_limits"]) };
  m.limits = perModule(c, t, [...at, "limits"], (table, p) => readLimits(c, table, p));
  m.grants = perModule(c, t, [...at, "grants"], (table, p) => readGrants(c, table, p));
  m.module_configs = perModule(c, t, [...at, "module_configs"], (table) => table);
  m.trust = perModule(c, t, [...at, "trust"], (table, p) => readModuleTrust(c, table, p));
  const providers = c.table(t["providers"], [...at, "providers"]);
  if (providers) {
    c.knownKeys(providers, [...at, "providers"], PROVIDER_ROLES);
    for (const role of PROVIDER_ROLES) {
      const name = c.string(providers, [...at, "providers"], role);
      if (name === undefined) continue;
      if (!MODULE_NAME_RE.test(name)) c.report([...at, "providers", role], `"${name}" is not a valid module name`, MODULE_NAME_HINT);
      else m.providers[role] = name;
    }
  }
}

/**
 * A table of per-module tables ([modules.limits.NAME], ...): checks each key is a module name
 * and each value a table, and reads the value with `read`.
 */
function perModule<T>(c: Checker, parent: Record<string, unknown>, at: TomlPath, read: (table: Record<string, unknown>, path: TomlPath) => T): Record<string, T> {
  const out: Record<string, T> = {};
  const key = at.at(-1) as string;
  const t = c.table(parent[key], at);
  if (!t) return out;
  for (const [name, value] of Object.entries(t)) {
    const p = [...at, name];
    if (!MODULE_NAME_RE.test(name)) {
      c.report(p, `"${name}" is not a valid module name`, MODULE_NAME_HINT);
      continue;
    }
    const table = c.table(value, p);
    if (table) out[name] = read(table, p);
  }
  return out;
}

function readLimits(c: Checker, t: Record<string, unknown>, at: TomlPath): Partial<Limits> {
  const keys = Object.keys(DEFAULT_LIMITS) as (keyof Limits)[];
  c.knownKeys(t, at, keys);
  const out: Partial<Limits> = {};
  for (const key of keys) {
    if (key === "important") {
      const important = c.boolean(t, at, "important");
      if (important !== undefined) out.important = important;
      continue;
    }
    if (key === "inspect") {
      const inspect = c.string(t, at, "inspect");
      if (inspect === undefined) continue;
      const problem = inspectAddressProblem(inspect);
      if (problem) c.report([...at, "inspect"], problem, 'write inspect = "127.0.0.1:9229" (development only; the debugger can run any code in the module), or leave it out');
      else out.inspect = inspect;
      continue;
    }
    if (key === "restart") {
      const restart = c.oneOf(t, at, "restart", RESTART_POLICIES);
      if (restart !== undefined) out.restart = restart;
      continue;
    }
    const n = c.integer(t, at, key, LIMIT_RULES[key]);
    if (n !== undefined) out[key] = n;
  }
  return out;
}

function readGrants(c: Checker, t: Record<string, unknown>, at: TomlPath): ModuleGrants {
  c.knownKeys(t, at, ["allow", "deny", "on_missing_grant"]);
  const out: ModuleGrants = { allow: readDescriptors(c, t, at, "allow"), deny: readDescriptors(c, t, at, "deny") };
  const policy = c.oneOf(t, at, "on_missing_grant", MISSING_GRANT_POLICIES);
  if (policy !== undefined) out.on_missing_grant = policy;
  return out;
}

function readModuleNames(c: Checker, t: Record<string, unknown>, at: TomlPath, key: string): string[] {
  const names = c.stringArray(t, at, key);
  if (!names) return [];
  const out: string[] = [];
  (t[key] as unknown[]).forEach((name, index) => {
    if (typeof name !== "string") return; // reported by stringArray
    if (MODULE_NAME_RE.test(name)) out.push(name);
    else c.report([...at, key, index], `"${name}" is not a valid module name`, MODULE_NAME_HINT);
  });
  return out;
}

/** A directory setting, resolved against the config file's directory. */
function readDir(c: Checker, t: Record<string, unknown>, at: TomlPath, key: string, base: string): string | undefined {
  const dir = c.string(t, at, key);
  if (dir === undefined) return undefined;
  if (dir.trim() === "" || dir.includes("\0")) {
    c.report([...at, key], "empty path", `write a path, relative to the config file or absolute, e.g. ${key} = "data"`);
    return undefined;
  }
  return path.resolve(base, dir);
}

/** [hooks.POINT]: order = ["a", "b"], failure = "open" | "closed", timeout_ms, max_payload_bytes. */
function readHooks(c: Checker, data: Record<string, unknown>, config: HostConfig): void {
  const at = ["hooks"];
  const t = c.table(data["hooks"], at);
  if (!t) return;
  c.knownKeys(t, at, HOOK_POINT_NAMES);
  for (const point of HOOK_POINT_NAMES) {
    const p = [...at, point];
    const table = c.table(t[point], p);
    if (!table) continue;
    c.knownKeys(table, p, ["order", "failure", "timeout_ms", "max_payload_bytes"]);
    const own: NonNullable<HooksConfig[typeof point]> = {};
    if (table["order"] !== undefined) {
      const order = readModuleNames(c, table, p, "order");
      const twice = order.find((name, i) => order.indexOf(name) !== i);
      if (twice !== undefined) c.report([...p, "order"], `"${twice}" is listed twice`, "list each module once");
      else own.order = order;
    }
    const failure = c.oneOf(table, p, "failure", ["open", "closed"] as const);
    if (failure !== undefined) own.failure = failure;
    const timeout = c.integer(table, p, "timeout_ms", HOOK_TIMEOUT_RANGE);
    if (timeout !== undefined) own.timeout_ms = timeout;
    const max = c.integer(table, p, "max_payload_bytes", HOOK_PAYLOAD_RANGE);
    if (max !== undefined) own.max_payload_bytes = max;
    config.hooks[point] = own;
  }
}

/**
 * Why `inspect` (a [modules.limits] key) cannot be used, or undefined: it must be "" (off) or a
 * loopback address with a port. Whoever reaches the inspector can run any code in the module,
 * with its grants; it is never served on another interface.
 */
export function inspectAddressProblem(value: string): string | undefined {
  if (value === "") return undefined;
  const m = /^(127\.0\.0\.1|localhost|\[::1\]):(\d{1,5})$/.exec(value);
  if (!m) return `inspect = "${value}" is not a loopback address with a port: the inspector is only served on 127.0.0.1, localhost or [::1]`;
  const port = Number(m[2]);
  if (port > 65535) return `inspect = "${value}": the port must be from 1 to 65535 (0: any free port)`;
  return undefined;
}

/**
 * Entries of the configuration that name a module that is not installed: a grant, an
 * enabled_modules/disabled_modules entry, a module_configs, limits or trust table. Each is
 * most likely a typo (the closest installed name is suggested) or a module not installed
 * yet; the host warns and runs the modules it has. `installed`: the module names found in
 * modules_dir. With no module at all, one warning says so.
 */
export function strayModuleWarnings(config: HostConfig, installed: Iterable<string>): string[] {
  const names = [...installed];
  const m = config.modules;
  const where = config.file ?? "the configuration";
  if (names.length === 0) {
    return [`there are no modules in ${m.modules_dir} ([modules] modules_dir in ${where}): the host runs with none (RPC and the chain only); install one with modhost install NAME, or point modules_dir at your modules`];
  }
  const known = new Set(names);
  const entries: Array<[string, string]> = [
    ...m.enabled_modules.map((n) => [n, "[modules] enabled_modules"] as [string, string]),
    ...m.disabled_modules.map((n) => [n, "[modules] disabled_modules"] as [string, string]),
    ...Object.keys(m.grants).map((n) => [n, `[modules.grants.${n}]`] as [string, string]),
    ...Object.keys(m.module_configs).map((n) => [n, `[modules.module_configs.${n}]`] as [string, string]),
    ...Object.keys(m.limits).map((n) => [n, `[modules.limits.${n}]`] as [string, string]),
    ...Object.keys(m.trust).map((n) => [n, `[modules.trust.${n}]`] as [string, string]),
  ];
  const out: string[] = [];
  for (const [name, key] of entries) {
    if (known.has(name)) continue;
    const guess = closest(name, names);
    out.push(`${key} in ${where} names module "${name}", which is not in ${m.modules_dir}${guess ? `; did you mean "${guess}"?` : ""} (the entry has no effect until such a module is installed)`);
  }
  return out;
}
