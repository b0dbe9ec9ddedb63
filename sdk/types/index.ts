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

import type {
  Block, BlockHeader, BlockTemplate, LightBlock, ChainInfo, Hex, MempoolEntry, MempoolInfo, NetworkStats, PeerInfo, SubmitBlockResult, Transaction, Utxo,
} from "../../chain/backend.ts";
import type { HostEvents } from "../../capabilities/event-types.ts";
import type { IterOptions } from "../../storage/store.ts";
import type { FileMetadata } from "../../capabilities/fs-path.ts";
import type { Metric } from "../../capabilities/types.ts";

export type {
  Block, BlockHeader, BlockTemplate, LightBlock, ChainInfo, Hex, MempoolEntry, MempoolInfo, NetworkStats, PeerInfo, SubmitBlockResult, Transaction, TxInput, TxOutput, Utxo,
} from "../../chain/backend.ts";
export type { HostEvents } from "../../capabilities/event-types.ts";

/** Plain data: what crosses into and out of a module (copied, never shared). */
export type Plain = null | boolean | number | string | Uint8Array | Plain[] | { [key: string]: Plain };

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

export interface ChainApi {
  /**
   * A block by hash (also one reorganised away), or null. `{ include_hex: false }` leaves out
   * the raw hex of the block, its header and its transactions: about half the bytes, for
   * modules that read fields only.
   */
  getBlock(hash: Hex): Promise<Block | null>;
  getBlock(hash: Hex, options: { include_hex: false }): Promise<LightBlock | null>;
  getBlock(hash: Hex, options: { include_hex?: boolean }): Promise<Block | LightBlock | null>;
  getBlockHeader(hash: Hex): Promise<BlockHeader | null>;
  /** The active chain's block at a height, or null; `include_hex` as for getBlock. */
  getBlockByHeight(height: number): Promise<Block | null>;
  getBlockByHeight(height: number, options: { include_hex: false }): Promise<LightBlock | null>;
  getBlockByHeight(height: number, options: { include_hex?: boolean }): Promise<Block | LightBlock | null>;
  getTransaction(txid: Hex): Promise<Transaction | null>;
  hasTransaction(txid: Hex): Promise<boolean>;
  getChainTip(): Promise<Hex>;
  getBlockHeight(): Promise<number>;
  getChainInfo(): Promise<ChainInfo>;
  getUtxo(txid: Hex, vout: number): Promise<Utxo | null>;
}

export interface MempoolApi {
  getTransactions(): Promise<Hex[]>;
  getTransaction(txid: Hex): Promise<Transaction | null>;
  getEntry(txid: Hex): Promise<MempoolEntry | null>;
  getSize(): Promise<MempoolInfo>;
  has(txid: Hex): Promise<boolean>;
  /** Fee rate in sat/vB to confirm within `targetBlocks` (1..1008). */
  estimateFee(targetBlocks: number): Promise<number>;
  /** Needs send_transactions. Submit a serialised transaction; resolves to its txid, rejects (invalid_params) with the reason. */
  submit(hex: Hex): Promise<Hex>;
}

/** Bounds for storage iteration: gt/gte/lt/lte/prefix, reverse, limit (default 1000, at most 10000). */
export type { IterOptions };

export type StorageOp = { op: "put"; key: string; value: Plain } | { op: "delete"; key: string };

export interface StorageUsage {
  bytes: number;
  keys: number;
  trees: number;
  quota: { max_bytes: number; max_keys: number; max_trees: number; max_value_bytes: number; max_key_bytes: number };
}

export interface StorageApi {
  /** Create the tree if needed. Every other call needs an opened tree. */
  openTree(tree: string): Promise<true>;
  listTrees(): Promise<string[]>;
  dropTree(tree: string): Promise<true>;
  get<T extends Plain = Plain>(tree: string, key: string): Promise<T | null>;
  has(tree: string, key: string): Promise<boolean>;
  put(tree: string, key: string, value: Plain): Promise<true>;
  delete(tree: string, key: string): Promise<boolean>;
  /** Entries in key order (UTF-8 bytes), one page at a time: pass `cursor` back until it is null. */
  iterate<T extends Plain = Plain>(tree: string, options: IterOptions & { paged: true }): Promise<{ entries: Array<{ key: string; value: T }>; cursor: string | null }>;
  /** Entries in key order (UTF-8 bytes); refused when they exceed storage_iter_max_bytes (then page). */
  iterate<T extends Plain = Plain>(tree: string, options?: IterOptions): Promise<Array<{ key: string; value: T }>>;
  /** All operations or none. */
  transaction(tree: string, ops: StorageOp[]): Promise<true>;
  usage(): Promise<StorageUsage>;
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

export interface EventsApi {
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
  unsubscribe(types: Array<EventName | ModuleEventName>): Promise<string[]>;
  /**
   * Needs publish_events. Publish `payload` (plain data, at most 64 KiB) as "<this module>:<name>";
   * `name` may not contain ":" nor be a node event name. Resolves to the full event type.
   */
  publish(name: string, payload?: Plain): Promise<string>;
}

/** The type of an event a module published: "<module>:<name>". */
export type ModuleEventName = `${string}:${string}`;

export interface ModuleEvent {
  readonly type: ModuleEventName;
  readonly payload: Plain;
  readonly seq: number;
  readonly missed: number;
}

/** Public information about a loaded module. */
export interface ModuleInfo {
  name: string;
  version: string;
  runtime: string;
  /** "running", "starting", "stopped", "crashed", "failed", ... */
  state: string;
  description: string | null;
  /** Methods of its module API. */
  api: string[];
}

/** What a module API handler gets besides the params: who called (set by the host, not forgeable). */
export interface ApiCallMeta {
  readonly caller: string;
}

// biome-ignore lint/suspicious/noConfusingVoidType: a handler may return nothing (void), which `undefined` would not accept.
export type ModuleApiHandler = (params: Plain, meta: ApiCallMeta) => Plain | void | Promise<Plain | void>;

export interface ModulesApi {
  /**
   * Needs call_module (for `target`). Call a method of `target`'s API; rejects with
   * unavailable (not running), unknown_method, timeout (default 10 s, at most 60 s),
   * quota_exceeded (calls nested more than 8 deep), or module_error (the handler threw).
   */
  call<T extends Plain = Plain>(target: string, method: string, params?: Plain, timeoutMs?: number): Promise<T>;
  /** Needs register_module_api. Expose these functions (replaces an earlier API). */
  registerApi(api: Record<string, ModuleApiHandler>): Promise<true>;
  unregisterApi(): Promise<true>;
  /** Needs discover_modules. */
  list(): Promise<ModuleInfo[]>;
  info(name: string): Promise<ModuleInfo | null>;
  isAvailable(name: string): Promise<boolean>;
}

/**
 * Needs manage_timers. Host timers, delivered into the module; they die with it. At most 256
 * timers and pending tasks per module; intervals are at least 0.05 s; a tick is skipped while
 * the previous run of the same timer is still going. With this family, setTimeout and
 * setInterval work too.
 */
export interface TimersApi {
  every(intervalSeconds: number, fn: () => void | Promise<void>): Promise<number>;
  after(delaySeconds: number, fn: () => void | Promise<void>): Promise<number>;
  cancel(id: number): Promise<boolean>;
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
export interface LightningApi {
  /** Needs read_lightning. */
  getNodeUrl(): Promise<Plain>;
  getInfo(): Promise<Plain>;
  /** Needs read_payment. */
  getPaymentState(paymentId: string): Promise<Plain>;
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

export interface NetworkApi {
  /** Needs read_network. */
  getStats(): Promise<NetworkStats>;
  getPeers(): Promise<PeerInfo[]>;
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

export interface MiningApi {
  /** Needs read_blockchain. With coinbase_script, the template carries a ready coinbase_tx. */
  getBlockTemplate(options?: { rules?: string[]; coinbase_script?: Hex }): Promise<BlockTemplate>;
  /** Needs submit_block. */
  submitBlock(hex: Hex): Promise<SubmitBlockResult>;
  /** Needs queue_inbound_block: the block is handled as if a peer had sent it. */
  queueBlock(hex: Hex): Promise<SubmitBlockResult>;
}

/** The host's hook points (docs/module-guide.md, Hooks). */
export type HookPoint = "tx_submit" | "block_template" | "rpc_dispatch" | "module_load";

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
export interface HooksApi {
  /** Resolves to the chain's order at the point (module names). A cycle of before/after is refused. */
  register(point: HookPoint, handler: HookHandler, options?: { before?: string[]; after?: string[] }): Promise<{ point: HookPoint; order: string[] }>;
  unregister(point: HookPoint): Promise<boolean>;
}

/** A directory entry of fs.listDirectory. */
export interface DirEntry {
  name: string;
  type: "file" | "directory" | "symlink" | "other";
}

export type { FileMetadata };

/**
 * Files in the module's own data directory. Paths are relative to it ("" or "." is the
 * directory itself); absolute paths, "..", backslashes and control characters are refused, and
 * symbolic links are never followed. Files are limited to 8 MiB, listings to 10000 entries.
 */
export interface FsApi {
  readFile(path: string): Promise<Uint8Array>;
  readFile(path: string, encoding: "utf8"): Promise<string>;
  readFile(path: string, encoding?: "utf8" | "binary"): Promise<Uint8Array | string>;
  /** Create or truncate and write; strings are written as UTF-8. */
  writeFile(path: string, data: string | Uint8Array, options?: { append?: boolean }): Promise<true>;
  /** A file, a symbolic link (not its target) or an empty directory. */
  deleteFile(path: string): Promise<true>;
  /** Sorted by name. */
  listDirectory(path: string): Promise<DirEntry[]>;
  /** Creates missing parents too; succeeds if it already exists. */
  createDirectory(path: string): Promise<true>;
  stat(path: string): Promise<FileMetadata>;
}

/** The module's CLI: `modhost <module> <command> [args]` runs `command`. */
export interface CliSpec {
  /** Shown in help; defaults to the module's name. */
  name?: string;
  about?: string;
  commands: Array<{ name: string; about?: string; args?: Array<{ name: string; required?: boolean; about?: string }> }>;
}

/** What a CLI command returns: a string is printed as is, anything else as JSON. */
// biome-ignore lint/suspicious/noConfusingVoidType: a handler may return nothing (void), which `undefined` would not accept.
export type CliHandler = (args: string[]) => Plain | void | Promise<Plain | void>;

/**
 * JSON-RPC methods on the host's RPC server, served as "<module>.<method>". The handler gets the
 * request's params (an object or an array; {} when absent) and returns plain data; what it
 * throws reaches the caller as a JSON-RPC error with its message.
 */
export interface RpcApi {
  /** Resolves to the full name clients call ("block-stats.summary"). */
  // biome-ignore lint/suspicious/noConfusingVoidType: a handler may return nothing (void), which `undefined` would not accept.
  register(method: string, description: string, handler: (params: Plain) => Plain | void | Promise<Plain | void>): Promise<string>;
  unregister(method: string): Promise<boolean>;
  /** Declare CLI commands and their handlers (replaces any earlier ones). */
  registerCli(spec: CliSpec, commands: Record<string, CliHandler>): Promise<true>;
}

/** A reported metric (counter and gauge: the value; histogram: the last, up to 1000, observations). */
export type { Metric };

export interface MetricsApi {
  /**
   * Counters add `value`, gauges set it, histograms record observations. The kind defaults to
   * gauge for a number and histogram for a list. Names and labels follow Prometheus' rules.
   */
  report(name: string, value: number | number[], options?: { kind?: Metric["kind"]; labels?: Record<string, string> }): Promise<true>;
  /** Needs read_metrics. */
  get(module: string): Promise<Metric[]>;
  /** Needs read_metrics. */
  all(): Promise<Record<string, Metric[]>>;
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
