// Types for module authors: what `ctx` holds inside a TypeScript module.
//
//   import type { ModuleContext } from "modhost/sdk";
//   export default async function start(ctx: ModuleContext) { ... }
//
// A family object (ctx.chain, ctx.storage, ...) and each of its methods exist only when the
// operator granted the permission behind it. With the default policy a module that is
// running has everything its manifest requests; an operator who chose on_missing_grant =
// "reduce" may start it with less, and ctx.module.grants says what it has.
// docs/permissions.md lists which permission unlocks which method.
//
// The methods of each family and the types they answer are generated from the catalogue into
// ./generated.ts (`modhost docs --write`); this file adds what is written by hand: the methods
// that take a function or have overloads (generated.ts lists them in HandWritten, with why),
// events, errors, logging and the shape of ctx.

import type {
  Block, ChainMethods, CliSpec, EventsMethods, FsMethods, Hex, HooksMethods, HookPoint, HookRegistered, IterOptions, IterPage, LightBlock,
  LightningMethods, MempoolMethods, Metric, MetricsMethods, MiningMethods, ModulesMethods, NetworkMethods, Plain, RpcMethods, StorageMethods, TimersMethods,
} from "./generated.ts";
import type { HostEvents } from "./events.ts";

export type {
  Block, BlockHeader, BlockTemplate, BlockTemplateOptions, CatalogueMethods, ChainInfo, CliArg, CliCommand, CliSpec, CoinbaseTx, DirEntry, Entry,
  FileMetadata, FileType, HandWritten, Hex, HookPoint, HookRegistered, IterOptions, IterPage, LightBlock, LightBlockHeader, LightTransaction, MempoolEntry,
  MempoolInfo, Metric, MetricKind, ModuleInfo, NetworkStats, PeerInfo, Plain, ProviderKind, StorageOp, StorageQuota, StorageUsage, SubmitBlockResult,
  SubmitBlockStatus, TemplateTransaction, Transaction, TxInput, TxOutput, Utxo,
} from "./generated.ts";
export type { ChainEvents, HostEvents, ProviderRole, RoleEvents } from "./events.ts";

/** An error from the host: `code` is machine-readable, `message` says what to do. */
export interface ModhostError extends Error {
  readonly code:
    | "permission_denied" | "invalid_params" | "unknown_method" | "not_found" | "quota_exceeded"
    | "backend_error" | "timeout" | "unavailable" | "internal";
  readonly method: string;
}

export interface Logger {
  debug(message: unknown, fields?: Record<string, unknown>): void;
  info(message: unknown, fields?: Record<string, unknown>): void;
  warn(message: unknown, fields?: Record<string, unknown>): void;
  error(message: unknown, fields?: Record<string, unknown>): void;
}

export interface ChainApi extends ChainMethods {
  /**
   * A block by hash (also one reorganised away), or null. `{ include_hex: false }` leaves out
   * the raw hex of the block, its header and its transactions: about half the bytes, for
   * modules that read fields only.
   */
  getBlock(hash: Hex): Promise<Block | null>;
  getBlock(hash: Hex, options: { include_hex: false }): Promise<LightBlock | null>;
  getBlock(hash: Hex, options: { include_hex?: boolean }): Promise<Block | LightBlock | null>;
  /** The active chain's block at a height, or null; `include_hex` as for getBlock. */
  getBlockByHeight(height: number): Promise<Block | null>;
  getBlockByHeight(height: number, options: { include_hex: false }): Promise<LightBlock | null>;
  getBlockByHeight(height: number, options: { include_hex?: boolean }): Promise<Block | LightBlock | null>;
}

export type MempoolApi = MempoolMethods;

export interface StorageApi extends StorageMethods {
  /** Entries in key order (UTF-8 bytes), one page at a time: pass `cursor` back until it is null. */
  iterate<T extends Plain = Plain>(tree: string, options: IterOptions & { paged: true }): Promise<IterPage & { entries: Array<{ key: string; value: T }> }>;
  /** Entries in key order (UTF-8 bytes); refused when they exceed storage_iter_max_bytes (then page). */
  iterate<T extends Plain = Plain>(tree: string, options?: IterOptions): Promise<Array<{ key: string; value: T }>>;
}

export type EventName = keyof HostEvents;

export interface HostEvent<K extends EventName = EventName> {
  readonly type: K;
  readonly payload: HostEvents[K];
  /** Per-module sequence number. */
  readonly seq: number;
  /** Events dropped for this module just before this one (its queue overflowed). */
  readonly missed: number;
}

export interface EventsApi extends EventsMethods {
  /**
   * Call `handler` for every event of the given type(s), in order, one at a time. Resolves to
   * a function that unsubscribes this handler.
   */
  subscribe<K extends EventName>(types: K | K[], handler: (event: HostEvent<K>) => void | Promise<void>): Promise<() => Promise<void>>;
  /** Module events ("block-stats:summary"): published by that module with publish_event. */
  subscribe(types: ModuleEventName | ModuleEventName[], handler: (event: ModuleEvent) => void | Promise<void>): Promise<() => Promise<void>>;
  /** The same as subscribe. */
  on<K extends EventName>(types: K | K[], handler: (event: HostEvent<K>) => void | Promise<void>): Promise<() => Promise<void>>;
  on(types: ModuleEventName | ModuleEventName[], handler: (event: ModuleEvent) => void | Promise<void>): Promise<() => Promise<void>>;
}

/** The type of an event a module published: "<module>:<name>". */
export type ModuleEventName = `${string}:${string}`;

export interface ModuleEvent {
  readonly type: ModuleEventName;
  readonly payload: Plain;
  readonly seq: number;
  readonly missed: number;
}

/** What a module API handler gets besides the params: who called (set by the host, not forgeable). */
export interface ApiCallMeta {
  readonly caller: string;
}

// biome-ignore lint/suspicious/noConfusingVoidType: a handler may return nothing (void), which `undefined` would not accept.
export type ModuleApiHandler = (params: Plain, meta: ApiCallMeta) => Plain | void | Promise<Plain | void>;

export interface ModulesApi extends ModulesMethods {
  /**
   * Needs call_module (for `target`). Call a method of `target`'s API; rejects with
   * unavailable (not running), unknown_method, timeout (default 10 s, at most 60 s),
   * quota_exceeded (calls nested more than 8 deep), or module_error (the handler threw).
   */
  call<T extends Plain = Plain>(target: string, method: string, params?: Plain, timeoutMs?: number): Promise<T>;
  /** Needs register_module_api. Expose these functions (replaces an earlier API). */
  registerApi(api: Record<string, ModuleApiHandler>): Promise<true>;
}

/**
 * Needs manage_timers. Host timers, delivered into the module; they die with it. At most 256
 * timers and pending tasks per module; intervals are at least 0.05 s; a tick is skipped while
 * the previous run of the same timer is still going. With this family, setTimeout and
 * setInterval work too: kept in the module's isolate, not as host timers (at most 100,000
 * waiting, MAX_PENDING_TIMERS), and run by one host task.
 */
export interface TimersApi extends TimersMethods {
  every(intervalSeconds: number, fn: () => void | Promise<void>): Promise<number>;
  after(delaySeconds: number, fn: () => void | Promise<void>): Promise<number>;
}

/** What a provider module implements for its kind; each function gets the call's params. */
export interface LightningProvider {
  getNodeUrl?(params: Record<string, never>): Plain | Promise<Plain>;
  getInfo?(params: Record<string, never>): Plain | Promise<Plain>;
}

export interface PaymentProvider {
  getPaymentState?(params: { payment_id: string }): Plain | Promise<Plain>;
}

/**
 * Answered by the module registered as the provider; with none running these reject with
 * unavailable ("no Lightning provider module is running").
 */
export interface LightningApi extends LightningMethods {
  /** Needs register_module_api. Become the provider of a kind (one provider per kind). */
  provide(kind: "lightning", impl: LightningProvider): Promise<true>;
  provide(kind: "payment", impl: PaymentProvider): Promise<true>;
}

export interface HttpRequestOptions {
  /** Default GET; GET and HEAD take no body. */
  method?: "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH";
  /** Not Host, Connection, Keep-Alive, Content-Length, Transfer-Encoding, TE, Trailer, Upgrade, Expect, Proxy-*: the host sets those. */
  headers?: Record<string, string>;
  /** A string is sent as UTF-8. At most 1 MiB. */
  body?: string | Uint8Array;
  /** For the whole exchange: default 10000, at most 60000; then the call fails with `timeout`. */
  timeout_ms?: number;
  /** "utf8": the answer's body as a string (invalid UTF-8 becomes U+FFFD). Default: bytes. */
  encoding?: "utf8" | "binary";
  /**
   * The longest body taken (default and at most 8 MiB); a longer one fails with quota_exceeded.
   * While the request runs its answer holds this much of the module's max_unread_bytes (three
   * times as utf8): a small bound lets more requests run at once.
   */
  max_bytes?: number;
}

export interface HttpResponse<Body extends Uint8Array | string = Uint8Array> {
  status: number;
  /** Names lowercased; a header received several times is joined with ", ". */
  headers: Record<string, string>;
  /** At most 8 MiB (a longer answer fails with quota_exceeded). */
  body: Body;
  /** The URL that answered: the one requested, normalised (redirects are not followed). */
  url: string;
}

export interface NetworkApi extends NetworkMethods {
  /**
   * Needs network_access for the URL's host:port. The host makes the request: http: and https:
   * only, no credentials in the URL, redirects returned (3xx with its location header) rather
   * than followed, a host name must resolve to public addresses. Rejects with permission_denied
   * (host not granted), invalid_params, timeout, quota_exceeded (answer over 8 MiB) or
   * unavailable (cannot connect, TLS failure, 16 requests of this module already in flight).
   */
  fetch(url: string, options: HttpRequestOptions & { encoding: "utf8" }): Promise<HttpResponse<string>>;
  fetch(url: string, options?: HttpRequestOptions): Promise<HttpResponse>;
}

export type MiningApi = MiningMethods;

/** What a hook answers; returning nothing is `continue`. */
export type HookAnswer =
  | { result: "continue" }
  /** Only the fields the point declares modifiable may differ (the others may be left out). */
  | { result: "modify"; payload: Record<string, Plain> }
  /** Stops the chain: the caller is refused with this reason, naming this module. */
  | { result: "reject"; reason: string };

// biome-ignore lint/suspicious/noConfusingVoidType: a hook that returns nothing continues, and `undefined` would not accept a void function.
export type HookHandler = (payload: Readonly<Record<string, Plain>>, meta: { readonly point: HookPoint }) => HookAnswer | void | Promise<HookAnswer | void>;

/**
 * Needs register_hook (scoped by point). One hook per point and module; registering again
 * replaces it. The handler must answer within the point's deadline (operator: [hooks.POINT]
 * timeout_ms); a failure is handled by the point's failure policy (fail-open or fail-closed).
 */
export interface HooksApi extends HooksMethods {
  /** Resolves to the chain's order at the point (module names). A cycle of before/after is refused. */
  register(point: HookPoint, handler: HookHandler, options?: { before?: string[]; after?: string[] }): Promise<HookRegistered>;
}

/**
 * Files in the module's own data directory. Paths are relative to it ("" or "." is the
 * directory itself); absolute paths, "..", backslashes and control characters are refused, and
 * symbolic links are never followed. Files are limited to 8 MiB, listings to 10000 entries.
 */
export interface FsApi extends FsMethods {
  readFile(path: string): Promise<Uint8Array>;
  readFile(path: string, encoding: "utf8"): Promise<string>;
  readFile(path: string, encoding?: "utf8" | "binary"): Promise<Uint8Array | string>;
}

/** What a CLI command returns: a string is printed as is, anything else as JSON. */
// biome-ignore lint/suspicious/noConfusingVoidType: a handler may return nothing (void), which `undefined` would not accept.
export type CliHandler = (args: string[]) => Plain | void | Promise<Plain | void>;

/**
 * JSON-RPC methods on the host's RPC server, served as "<module>.<method>". The handler gets the
 * request's params (an object or an array; {} when absent) and returns plain data; what it
 * throws reaches the caller as a JSON-RPC error with its message.
 */
export interface RpcApi extends RpcMethods {
  /** Resolves to the full name clients call ("block-stats.summary"). */
  // biome-ignore lint/suspicious/noConfusingVoidType: a handler may return nothing (void), which `undefined` would not accept.
  register(method: string, description: string, handler: (params: Plain) => Plain | void | Promise<Plain | void>): Promise<string>;
  /** Declare CLI commands and their handlers (replaces any earlier ones). */
  registerCli(spec: CliSpec, commands: Record<string, CliHandler>): Promise<true>;
}

export interface MetricsApi extends MetricsMethods {
  /**
   * Counters add `value`, gauges set it, histograms record observations. The kind defaults to
   * gauge for a number and histogram for a list. Names and labels follow Prometheus' rules.
   */
  report(name: string, value: number | number[], options?: { kind?: Metric["kind"]; labels?: Record<string, string> }): Promise<true>;
}

export interface ModuleContext {
  readonly module: { readonly name: string; readonly version: string; readonly id: string; readonly grants: readonly string[] };
  /** [modules.module_configs.<name>] from the operator's modhost.toml. */
  readonly config: Readonly<Record<string, Plain>>;
  readonly log: Logger;
  readonly chain: ChainApi;
  readonly mempool: MempoolApi;
  readonly storage: StorageApi;
  readonly events: EventsApi;
  readonly fs: FsApi;
  /** With register_rpc_endpoint. */
  readonly rpc: RpcApi;
  /** With report_metrics (report) and read_metrics (get, all). */
  readonly metrics: MetricsApi;
  /** With call_module, register_module_api, discover_modules. */
  readonly modules: ModulesApi;
  readonly timers: TimersApi;
  /** With read_lightning, read_payment, register_module_api (provide). */
  readonly lightning: LightningApi;
  /** With read_network (getStats, getPeers) and network_access (fetch). */
  readonly network: NetworkApi;
  readonly mining: MiningApi;
  /** With register_hook. */
  readonly hooks: HooksApi;
}

/** The shape of a module's entry file. */
export interface ModuleExports {
  default(ctx: ModuleContext): void | Promise<void>;
  stop?(reason: string): void | Promise<void>;
}
