// The typed methods of `ctx` and the types they answer.
//
// Generated from the catalogue: edit the family file (capabilities/*.ts; named types in
// capabilities/schemas.ts), not this file. `node bin/modhost.js docs --write` rewrites it;
// test/docs.test.ts fails when it is stale.
//
// Imported by sdk/types/index.ts (what module authors import as modhost/sdk), which adds the
// methods written by hand (listed in HandWritten below, with why).

/** Plain data: what crosses into and out of a module (copied, never shared). */
export type Plain = null | boolean | number | string | Uint8Array | Plain[] | { [key: string]: Plain };

export type Hex = string;

export interface BlockHeader {
  hash: Hex;
  height: number;
  version: number;
  prev_hash: Hex;
  merkle_root: Hex;
  time: number;
  bits: number;
  nonce: number;
  /** Hex of the 80 serialised header bytes (empty in the Rust SDK when include_hex is false). */
  hex: string;
}

export interface TxInput {
  txid: Hex;
  vout: number;
  script_sig: Hex;
  sequence: number;
  witness: Hex[];
  /** True for the single input of a coinbase transaction. */
  coinbase: boolean;
}

export interface TxOutput {
  value: number;
  script_pubkey: Hex;
  /** The regtest address of the output script, when it has one. */
  address: string | null;
}

export interface Transaction {
  txid: Hex;
  wtxid: Hex;
  version: number;
  locktime: number;
  inputs: TxInput[];
  outputs: TxOutput[];
  size: number;
  vsize: number;
  weight: number;
  /**
   * Present, and true, when the transaction is too wide to describe in one message (its
   * description would pass 61,440 MessagePack values: 13 per input, one per witness item, 7 per
   * output; about 8,700 outputs): `inputs` and `outputs` are then empty, `input_count` and
   * `output_count` say how many it has, and its raw `hex` (get_transaction, or a block read with
   * include_hex) holds them all (docs/protocol.md, "Wide transactions"). Absent otherwise. Not
   * in the Rust SDK's struct: there, empty `inputs` say it (a transaction has one input at
   * least).
   */
  truncated?: boolean;
  /** With `truncated`: how many inputs the transaction has. */
  input_count?: number;
  /** With `truncated`: how many outputs the transaction has. */
  output_count?: number;
  /** Full serialisation, witness included (binary on the wire, hex in the SDKs). */
  hex: string;
}

export interface Block {
  header: BlockHeader;
  hash: Hex;
  height: number;
  size: number;
  weight: number;
  /** Transactions in the block: the length of `transactions` once every page is read. */
  tx_count: number;
  /**
   * On the wire, one answer carries a page of `transactions` (docs/protocol.md, "Paged
   * answers"): the `tx_offset` to ask for next, or null after the last page. The SDKs read every
   * page, so a block they return has all its transactions and null here.
   */
  next_tx_offset: number | null;
  transactions: Transaction[];
  /** Full block serialisation (binary on the wire, hex in the SDKs). */
  hex: string;
}

export interface LightBlockHeader {
  hash: Hex;
  height: number;
  version: number;
  prev_hash: Hex;
  merkle_root: Hex;
  time: number;
  bits: number;
  nonce: number;
}

export interface LightTransaction {
  txid: Hex;
  wtxid: Hex;
  version: number;
  locktime: number;
  inputs: TxInput[];
  outputs: TxOutput[];
  size: number;
  vsize: number;
  weight: number;
  /**
   * Present, and true, when the transaction is too wide to describe in one message (its
   * description would pass 61,440 MessagePack values: 13 per input, one per witness item, 7 per
   * output; about 8,700 outputs): `inputs` and `outputs` are then empty, `input_count` and
   * `output_count` say how many it has, and its raw `hex` (get_transaction, or a block read with
   * include_hex) holds them all (docs/protocol.md, "Wide transactions"). Absent otherwise. Not
   * in the Rust SDK's struct: there, empty `inputs` say it (a transaction has one input at
   * least).
   */
  truncated?: boolean;
  /** With `truncated`: how many inputs the transaction has. */
  input_count?: number;
  /** With `truncated`: how many outputs the transaction has. */
  output_count?: number;
}

/**
 * A block without the raw hex of the block, its header and its transactions (include_hex:
 * false).
 */
export interface LightBlock {
  header: LightBlockHeader;
  hash: Hex;
  height: number;
  size: number;
  weight: number;
  /** Transactions in the block: the length of `transactions` once every page is read. */
  tx_count: number;
  /**
   * On the wire, one answer carries a page of `transactions` (docs/protocol.md, "Paged
   * answers"): the `tx_offset` to ask for next, or null after the last page. The SDKs read every
   * page, so a block they return has all its transactions and null here.
   */
  next_tx_offset: number | null;
  transactions: LightTransaction[];
}

export interface ChainInfo {
  chain: "regtest" | "testnet" | "signet" | "main";
  tip_hash: Hex;
  height: number;
  bits: number;
  difficulty: number;
  /** Total work of the active chain, as a decimal string (it exceeds 2^53). */
  chain_work: string;
  median_time: number;
  is_synced: boolean;
}

export interface Utxo {
  txid: Hex;
  vout: number;
  value: number;
  script_pubkey: Hex;
  address: string | null;
  height: number;
  coinbase: boolean;
}

export interface MempoolTxids {
  /** A page of txids (the SDKs join every page). */
  txids: Hex[];
  /** Pass it as `after` for the next page; null after the last. */
  next_after: number | null;
  /** Transactions in the mempool when the page was read. */
  count: number;
  /**
   * What the pages follow: "accepted" (the embedded chain: order of acceptance, each transaction
   * exactly once), "position" (Bitcoin Core: position in its list).
   */
  order: string;
}

export interface MempoolEntry {
  txid: Hex;
  fee: number;
  vsize: number;
  /** Fee rate in sat/vB. */
  fee_rate: number;
  time: number;
}

export interface MempoolInfo {
  transaction_count: number;
  size_bytes: number;
  total_fee_sats: number;
}

export interface Entry {
  key: string;
  value: Plain;
}

export interface IterPage {
  entries: Entry[];
  /**
   * Pass it back (with the same other options) for the next page; null at the end of the range.
   */
  cursor: string | null;
}

export type StorageOp = { op: "put"; key: string; value: Plain } | { op: "delete"; key: string };

export interface TransactionPart {
  id: number;
  more: boolean;
}

export interface StorageQuota {
  max_bytes: number;
  max_keys: number;
  max_trees: number;
  max_value_bytes: number;
  max_key_bytes: number;
}

export interface StorageUsage {
  bytes: number;
  keys: number;
  trees: number;
  quota: StorageQuota;
}

export interface IterOptions {
  gt?: string;
  gte?: string;
  lt?: string;
  lte?: string;
  /** Only keys starting with this string (combined with the range options). */
  prefix?: string;
  reverse?: boolean;
  /** Default 1000, at most 10000. */
  limit?: number;
  /**
   * Page through a range: the answer is {entries, cursor} instead of an array, and it stops at
   * the byte limit (storage_iter_max_bytes) as well as at `limit`.
   */
  paged?: boolean;
  /** From a previous paged answer: go on after the last entry it returned. */
  cursor?: string;
}

export interface CliArg {
  name: string;
  required?: boolean;
  about?: string;
}

export interface CliCommand {
  name: string;
  about?: string;
  args?: CliArg[];
}

export interface CliSpec {
  name?: string;
  about?: string;
  version?: number;
  commands?: CliCommand[];
  subcommands?: CliCommand[];
}

export type MetricKind = "counter" | "gauge" | "histogram";

/** A histogram read back: observations counted in fixed buckets. */
export interface HistogramSummary {
  count: number;
  sum: number;
  /** [upper bound, cumulative count] pairs, in increasing bound order. */
  buckets: Array<[number, number]>;
}

export interface Metric {
  name: string;
  kind: MetricKind;
  /**
   * Counter and gauge: the value; histogram: a bounded summary {count, sum, buckets: [[upper
   * bound, cumulative count], ...]} over fixed buckets.
   */
  value: number | number[] | HistogramSummary;
  labels: Record<string, string>;
  /** Milliseconds since the epoch, set by the host. */
  timestamp: number;
}

export type FileType = "file" | "directory" | "symlink" | "other";

export interface DirEntry {
  name: string;
  type: FileType;
}

export interface FileMetadata {
  /** The canonical path, relative to the data directory ("" for the directory itself). */
  path: string;
  size: number;
  is_file: boolean;
  is_directory: boolean;
  /** Milliseconds since the epoch. */
  modified: number;
  /** Milliseconds since the epoch; null when the filesystem does not record it. */
  created: number | null;
}

export interface ModuleInfo {
  name: string;
  version: string;
  /** "native" or "isolate". */
  runtime: string;
  /** "running", "starting", "stopped", "crashed", "failed", "quarantined", ... */
  state: string;
  description: string | null;
  /** Methods of its module API, when it registered one. */
  api: string[];
}

export type ProviderKind = "lightning" | "payment" | "mining" | "governance";

export interface NetworkStats {
  peer_count: number;
  /** Estimated network hash rate (hashes per second). */
  hash_rate: number;
  bytes_sent: number;
  bytes_received: number;
}

export interface PeerInfo {
  addr: string;
  transport_type: string;
  /** Service bits the peer advertises. */
  services: number;
  /** Its protocol version. */
  version: number;
  /** Seconds since the epoch. */
  connected_since: number;
}

export interface HttpResponse {
  status: number;
  /** Names lowercased; a header received several times is joined with ", ". */
  headers: Record<string, string>;
  /** At most 8 MiB; a string with encoding "utf8". */
  body: Uint8Array | string;
  /** The URL that answered: the one requested, normalised (redirects are not followed). */
  url: string;
}

export interface BlockTemplateOptions {
  rules?: string[];
  coinbase_script?: Hex;
  page?: string;
}

export interface TemplateTransaction {
  txid: Hex;
  wtxid: Hex;
  /** Binary on the wire, hex in the SDKs. */
  hex: Hex;
  fee: number;
  weight: number;
}

export interface CoinbaseTx {
  txid: Hex;
  /** Binary on the wire, hex in the SDKs. */
  hex: Hex;
}

export interface BlockTemplate {
  version: number;
  previous_block_hash: Hex;
  height: number;
  bits: number;
  /** The proof-of-work target for `bits`, as 64 hex characters. */
  target: Hex;
  /** Suggested header time; min_time is the earliest the chain accepts (median time past + 1). */
  cur_time: number;
  min_time: number;
  /** Mempool transactions for the block, in a valid order, with their fees. */
  transactions: TemplateTransaction[];
  /** Subsidy plus the fees of `transactions`: the most the coinbase may pay out. */
  coinbase_value: number;
  /** The BIP141 witness commitment output script (uses a 32-byte zero witness reserved value). */
  default_witness_commitment: Hex;
  /**
   * With a coinbase script: a complete coinbase (BIP34 height, commitment) paying coinbase_value
   * to it.
   */
  coinbase_tx?: CoinbaseTx;
  /** Names this template; its later pages are asked by `page` (next_page). */
  template_id: string;
  /** Transactions in the whole template: the length of `transactions` once every page is read. */
  tx_count: number;
  /**
   * On the wire, one answer carries a page of `transactions` (docs/protocol.md, "Paged
   * answers"): the `page` to ask for next, or null after the last page. The SDKs read every
   * page, so a template they return has all its transactions and null here.
   */
  next_page: string | null;
}

export type SubmitBlockStatus = "accepted" | "duplicate" | "rejected";

export interface SubmitBlockResult {
  result: SubmitBlockStatus;
  /** Why a block was rejected (a bitcoind-style reason code and an explanation). */
  reason?: string;
  /** The block hash, when the block could be decoded. */
  hash?: Hex;
}

export type HookPoint = "tx_submit" | "block_template" | "rpc_dispatch" | "module_load";

export interface HookRegistered {
  point: HookPoint;
  order: string[];
}

/** ctx.chain: Read blocks, transactions, UTXOs and chain state. */
export interface ChainMethods {
  /** Block header by hash, or null. Needs read_blockchain. */
  getBlockHeader(hash: Hex): Promise<BlockHeader | null>;
  /** Confirmed or mempool transaction by txid, or null. Needs read_blockchain. */
  getTransaction(txid: Hex): Promise<Transaction | null>;
  /** Whether a transaction is known. Needs read_blockchain. */
  hasTransaction(txid: Hex): Promise<boolean>;
  /** Hash of the active chain's tip. Needs read_chain_state. */
  getChainTip(): Promise<Hex>;
  /** Height of the active chain's tip. Needs read_chain_state. */
  getBlockHeight(): Promise<number>;
  /** Chain name, tip, height, difficulty, chain work. Needs read_chain_state. */
  getChainInfo(): Promise<ChainInfo>;
  /** Unspent output by outpoint, or null. Needs read_utxo. */
  getUtxo(txid: Hex, vout: number): Promise<Utxo | null>;
}

/** ctx.mempool: Read mempool transactions, size and fee estimates. */
export interface MempoolMethods {
  /**
   * Every txid in the mempool. The SDKs read them through get_mempool_txids, a page at a time;
   * on the wire this method answers them as one array while they fit one answer (8,192), and
   * result_too_large past that. Needs read_mempool.
   */
  getTransactions(): Promise<Hex[]>;
  /**
   * Txids in the mempool, a page of at most 8,192 at a time after `after` (default 0: the first
   * page); the SDKs read every page. Needs read_mempool.
   */
  getTxids(options?: { after?: number }): Promise<MempoolTxids>;
  /** Mempool transaction by txid, or null. Needs read_mempool. */
  getTransaction(txid: Hex): Promise<Transaction | null>;
  /** Fee, vsize and fee rate of a mempool transaction, or null. Needs read_mempool. */
  getEntry(txid: Hex): Promise<MempoolEntry | null>;
  /** Transaction count, bytes and total fees. Needs read_mempool. */
  getSize(): Promise<MempoolInfo>;
  /** Whether a txid is in the mempool. Needs read_mempool. */
  has(txid: Hex): Promise<boolean>;
  /** Fee rate (sat/vB) to confirm within target_blocks. Needs read_mempool. */
  estimateFee(targetBlocks: number): Promise<number>;
  /**
   * Submit a serialised transaction (binary, or hex) to the mempool; returns its txid. A refused
   * transaction fails with invalid_params and the reason; one refused by a tx_submit hook with
   * hook_rejected, naming the hook's module. Needs send_transactions.
   */
  submit(hex: Hex | Uint8Array): Promise<Hex>;
}

/** ctx.storage: The module's own key-value trees (LevelDB), with quotas. */
export interface StorageMethods {
  /** Create a tree if it does not exist. Needs write_storage. */
  openTree(tree: string): Promise<true>;
  /** Names of the module's trees. Needs read_storage. */
  listTrees(): Promise<string[]>;
  /** Delete a tree and all its keys. Needs manage_storage. */
  dropTree(tree: string): Promise<true>;
  /** Value of a key, or null. Needs read_storage. */
  get<T extends Plain = Plain>(tree: string, key: string): Promise<T | null>;
  /** Whether a key exists. Needs read_storage. */
  has(tree: string, key: string): Promise<boolean>;
  /** Set a key to a value (any plain data). Needs write_storage. */
  put(tree: string, key: string, value: Plain): Promise<true>;
  /** Delete a key; true if it existed. Needs write_storage. */
  delete(tree: string, key: string): Promise<boolean>;
  /**
   * Apply put/delete operations atomically: all or none (at most 10000 over all parts of a
   * transaction sent in parts). Needs write_storage.
   */
  transaction(tree: string, ops: StorageOp[]): Promise<true>;
  /** Bytes, keys and trees used, and the quota. Needs read_storage. */
  usage(): Promise<StorageUsage>;
}

/** ctx.events: Subscribe to node and module events. */
export interface EventsMethods {
  /**
   * Publish an event in this module's namespace, as "module-name:name" (payload: plain data, at
   * most 65536 bytes); returns the full event type. A provider role's event (PaymentSettled,
   * BlockTemplateUpdated, ...) is published as the real type, only by the module the operator
   * designated for the role, with a payload checked against its schema. Needs publish_events.
   */
  publish(name: string, payload?: Plain): Promise<string>;
  /**
   * Remove event types from the subscription; returns the remaining list. Needs
   * subscribe_events.
   */
  unsubscribe(types: string[]): Promise<string[]>;
}

/** ctx.config: The module's own configuration. */
export type ConfigMethods = Record<never, never>;

/** ctx.rpc: Serve JSON-RPC methods (as <module>.<method>) and CLI commands (modhost <module> <command>). */
export interface RpcMethods {
  /** Stop serving a method; true if it was registered. Needs register_rpc_endpoint. */
  unregister(method: string): Promise<boolean>;
}

/** ctx.metrics: Report the module's metrics; read modules' metrics. */
export interface MetricsMethods {
  /**
   * A module's metrics: [{name, kind, value, labels, timestamp}] (empty when it reported none or
   * is not running); a histogram's value is {count, sum, buckets: [[le, cumulative count],
   * ...]}. Needs read_metrics.
   */
  get(module: string): Promise<Metric[]>;
  /** Every running module's metrics, by module name. Needs read_metrics. */
  all(): Promise<Record<string, Metric[]>>;
}

/** ctx.fs: Files in the module's own data directory (symbolic links are never followed). */
export interface FsMethods {
  /**
   * Create or replace a file with a string (UTF-8) or bytes; with `append` (ctx: `{ append: true
   * }`) add to its end. Needs write_filesystem.
   */
  writeFile(path: string, data: string | Uint8Array, options?: { append?: boolean }): Promise<true>;
  /**
   * Delete a file, a symbolic link (not its target) or an empty directory. Needs
   * manage_filesystem.
   */
  deleteFile(path: string): Promise<true>;
  /**
   * Entries of a directory sorted by name, as { name, type }; type is "file", "directory",
   * "symlink" or "other" (at most 10000). Needs read_filesystem.
   */
  listDirectory(path: string): Promise<DirEntry[]>;
  /** Create a directory and any missing parents. Needs manage_filesystem. */
  createDirectory(path: string): Promise<true>;
  /**
   * { path, size, is_file, is_directory, modified, created } (milliseconds; created may be
   * null). Needs read_filesystem.
   */
  stat(path: string): Promise<FileMetadata>;
}

/** ctx.modules: Call other modules' APIs, expose one, and discover running modules. */
export interface ModulesMethods {
  /** Withdraw this module's API. Needs register_module_api. */
  unregisterApi(): Promise<true>;
  /**
   * Every loaded module: name, version, runtime, state, description, API methods. Needs
   * discover_modules.
   */
  list(): Promise<ModuleInfo[]>;
  /** Public information about one module, or null. Needs discover_modules. */
  info(module: string): Promise<ModuleInfo | null>;
  /** Whether a module is running now. Needs discover_modules. */
  isAvailable(module: string): Promise<boolean>;
}

/** ctx.timers: Periodic timers and one-shot tasks, delivered into the module. */
export interface TimersMethods {
  /**
   * Stop a timer or a pending task of this module; false if there was none. Needs manage_timers.
   */
  cancel(timerId: number): Promise<boolean>;
}

/** ctx.lightning: Lightning node information and payment state, answered by a provider module. */
export interface LightningMethods {
  /**
   * The Lightning node's URL, from the lightning provider (its getNodeUrl). Needs
   * read_lightning.
   */
  getNodeUrl<T extends Plain = Plain>(): Promise<T>;
  /**
   * Lightning node information, from the lightning provider (its getInfo). Needs read_lightning.
   */
  getInfo<T extends Plain = Plain>(): Promise<T>;
  /**
   * State of a payment, from the payment provider (its getPaymentState({payment_id})). Needs
   * read_payment.
   */
  getPaymentState<T extends Plain = Plain>(paymentId: string): Promise<T>;
}

/** ctx.network: Network statistics and peers; HTTP requests to granted hosts, made by the host. */
export interface NetworkMethods {
  /** Peer count, hash rate, bytes sent and received. Needs read_network. */
  getStats(): Promise<NetworkStats>;
  /** Connected peers: address, transport, services, version, since. Needs read_network. */
  getPeers(): Promise<PeerInfo[]>;
}

/** ctx.mining: Block templates, and submitting mined blocks. */
export interface MiningMethods {
  /**
   * A template for the next block: parent, height, bits, target, times, mempool transactions
   * with fees (highest fee rate first, a full block's worth), coinbase value, witness
   * commitment; with coinbase_script also a ready coinbase transaction paying to it. One answer
   * carries a page of the transactions (template_id, next_page: the host keeps a template of
   * several pages 60 s, at most 4 per module); the SDKs read them all. With block_template hooks
   * registered, the template is one page (16,384 values, 1 MiB of hex) before the hooks see it.
   * `rules` is accepted for compatibility (templates always follow segwit rules). Needs
   * read_blockchain.
   */
  getBlockTemplate(options?: BlockTemplateOptions): Promise<BlockTemplate>;
  /**
   * Submit a serialised block (binary, or hex); answers {result, reason?, hash?} with result
   * "accepted", "duplicate" or "rejected" (reason: why). Needs submit_block.
   */
  submitBlock(hex: Hex | Uint8Array): Promise<SubmitBlockResult>;
  /**
   * Hand the node a serialised block (binary, or hex) as if a peer had sent it; checked and
   * connected like submit_block, same answer. Needs queue_inbound_block.
   */
  queueBlock(hex: Hex | Uint8Array): Promise<SubmitBlockResult>;
}

/** ctx.hooks: Hooks with results at the host's hook points (docs/module-guide.md, Hooks). */
export interface HooksMethods {
  /** Remove this module's hook at `point`; true if it had one. Needs register_hook. */
  unregister(point: HookPoint): Promise<boolean>;
}

/** The methods of each family on `ctx`, by name: every one must be on its family's interface. */
export interface CatalogueMethods {
  chain: "getBlock" | "getBlockHeader" | "getBlockByHeight" | "getTransaction" | "hasTransaction" | "getChainTip" | "getBlockHeight" | "getChainInfo" | "getUtxo";
  mempool: "getTransactions" | "getTxids" | "getTransaction" | "getEntry" | "getSize" | "has" | "estimateFee" | "submit";
  storage: "openTree" | "listTrees" | "dropTree" | "get" | "has" | "put" | "delete" | "iterate" | "transaction" | "usage";
  events: "subscribe" | "publish" | "unsubscribe";
  config: "get";
  rpc: "register" | "unregister" | "registerCli";
  metrics: "report" | "get" | "all";
  fs: "readFile" | "writeFile" | "deleteFile" | "listDirectory" | "createDirectory" | "stat";
  modules: "call" | "registerApi" | "unregisterApi" | "list" | "info" | "isAvailable";
  timers: "every" | "after" | "cancel";
  lightning: "getNodeUrl" | "getInfo" | "getPaymentState" | "provide";
  network: "getStats" | "getPeers" | "fetch";
  mining: "getBlockTemplate" | "submitBlock" | "queueBlock";
  hooks: "register" | "unregister";
}

/** The methods sdk/types/index.ts writes by hand, and why. */
export interface HandWritten {
  /** chain.getBlock: overloads: include_hex: false answers a LightBlock. */
  "chain.getBlock": true;
  /** chain.getBlockByHeight: overloads: include_hex: false answers a LightBlock. */
  "chain.getBlockByHeight": true;
  /** storage.iterate: overloads: paged: true answers an IterPage. */
  "storage.iterate": true;
  /** events.subscribe: takes a function, which the host calls with `event` invocations. */
  "events.subscribe": true;
  /** config.get: not a method on ctx: ctx.config is the configuration itself, kept current by the host. */
  "config.get": true;
  /** rpc.register: takes a function, which the host calls with `rpc` invocations. */
  "rpc.register": true;
  /** rpc.registerCli: takes a function, which the host calls with `cli` invocations. */
  "rpc.registerCli": true;
  /** metrics.report: a number or a list, kind and labels in options. */
  "metrics.report": true;
  /** fs.readFile: overloads: encoding "utf8" answers a string. */
  "fs.readFile": true;
  /** modules.call: params and result generic. */
  "modules.call": true;
  /** modules.registerApi: takes a function, which the host calls with `module_api` invocations. */
  "modules.registerApi": true;
  /** timers.every: takes a function, which the host calls with `timer` invocations. */
  "timers.every": true;
  /** timers.after: takes a function, which the host calls with `timer` invocations. */
  "timers.after": true;
  /** lightning.provide: takes a function, which the host calls with `provider` invocations. */
  "lightning.provide": true;
  /** network.fetch: overloads: encoding "utf8" answers a string body. */
  "network.fetch": true;
  /** hooks.register: takes a function, which the host calls with `hook` invocations. */
  "hooks.register": true;
}
