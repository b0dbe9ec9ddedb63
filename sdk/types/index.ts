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
  Block, BlockHeader, ChainInfo, Hex, MempoolEntry, MempoolInfo, Transaction, Utxo,
} from "../../host/chain/backend.ts";
import type { HostEvents } from "../../host/events/types.ts";

export type {
  Block, BlockHeader, ChainInfo, Hex, MempoolEntry, MempoolInfo, Transaction, TxInput, TxOutput, Utxo,
} from "../../host/chain/backend.ts";
export type { HostEvents } from "../../host/events/types.ts";

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
  getBlock(hash: Hex): Promise<Block | null>;
  getBlockHeader(hash: Hex): Promise<BlockHeader | null>;
  getBlockByHeight(height: number): Promise<Block | null>;
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
}

export interface IterOptions {
  gt?: string;
  gte?: string;
  lt?: string;
  lte?: string;
  prefix?: string;
  reverse?: boolean;
  /** Default 1000, at most 10000. */
  limit?: number;
}

export type StorageOp = { op: "put"; key: string; value: Plain } | { op: "delete"; key: string };

export interface StorageUsage {
  bytes: number;
  keys: number;
  trees: number;
  quota: { maxBytes: number; maxKeys: number; maxTrees: number; maxValueBytes: number; maxKeyBytes: number };
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
  /** Entries in key order (UTF-8 bytes). */
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
  on<K extends EventName>(types: K | K[], handler: (event: HostEvent<K>) => void | Promise<void>): Promise<() => Promise<void>>;
  unsubscribe(types: EventName[]): Promise<string[]>;
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
}

/** The shape of a module's entry file. */
export interface ModuleExports {
  default(ctx: ModuleContext): void | Promise<void>;
  stop?(reason: string): void | Promise<void>;
}
