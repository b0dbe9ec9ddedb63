// The chain backend: where every piece of node data a module can read comes from.
//
// modhost never lets a module touch consensus state. Modules read chain data through
// capabilities, and capabilities read it through this interface. The default backend is
// the embedded regtest chain (./embedded.ts); the Bitcoin Core backend (./bitcoind/)
// implements the same interface over a real node's JSON-RPC and ZMQ.
//
// Every value crossing this interface is plain data (strings, numbers, booleans, arrays,
// plain objects) so that it can be copied into an isolate or encoded onto the wire as is.
// Hashes and txids are lowercase hex in display (RPC) byte order, as bitcoind prints them.
// Amounts are integer satoshis.

import type { ChainEvents } from "../protocol/events.ts";

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
  /** Hex of the 80 serialised header bytes. */
  hex: Hex;
}

interface TxInput {
  txid: Hex;
  vout: number;
  script_sig: Hex;
  sequence: number;
  witness: Hex[];
  /** True for the single input of a coinbase transaction. */
  coinbase: boolean;
}

interface TxOutput {
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
   * Full serialisation, witness included: its bytes (the embedded chain: modules get them as
   * binary and their SDK makes the hex, docs/protocol.md 6.3), or its hex (a backend that only
   * has hex, as Bitcoin Core's JSON answers). hexOfRaw / bytesOfRaw read either.
   */
  hex: Uint8Array | Hex;
}

export interface Block {
  header: BlockHeader;
  hash: Hex;
  height: number;
  size: number;
  weight: number;
  transactions: Transaction[];
  /**
   * Full block serialisation: its bytes (the embedded chain, which never makes the block's
   * hex: modules get the bytes as binary and their SDK makes the hex, docs/protocol.md 6.3),
   * or its hex (a backend that only has hex, as Bitcoin Core's JSON answers).
   */
  hex: Uint8Array | Hex;
}

/** The hex of a raw serialisation held as bytes or as hex (Block.hex, Transaction.hex). */
export function hexOfRaw(raw: Uint8Array | Hex): Hex {
  return typeof raw === "string" ? raw : Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString("hex");
}

/** The bytes of a raw serialisation held as bytes or as hex (Block.hex, Transaction.hex). */
export function bytesOfRaw(raw: Uint8Array | Hex): Uint8Array {
  return typeof raw === "string" ? Buffer.from(raw, "hex") : raw;
}

/** A block without the raw hex of the block, its header and its transactions (get_block with include_hex = false). */
export type LightBlock = Omit<Block, "hex" | "header" | "transactions"> & {
  header: Omit<BlockHeader, "hex">;
  transactions: Array<Omit<Transaction, "hex">>;
};

export interface BlockOptions {
  /** false: leave out the raw hex of the block, its header and its transactions (default true). */
  includeHex?: boolean;
}

export interface OutPoint {
  txid: Hex;
  vout: number;
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

/** One page of the mempool's txids (getMempoolPage). */
export interface MempoolPage {
  /** Txids in the order the page's backend keeps (the embedded chain: the order they were accepted). */
  txids: Hex[];
  /** Where the next page starts (pass it as `after`), null after the last page. */
  next_after: number | null;
  /** Transactions in the mempool when this page was read. */
  count: number;
  /** What the pages follow: "accepted" (order of acceptance, a keyset) or "position" (an offset into a list). */
  order: "accepted" | "position";
}

export interface NetworkStats {
  peer_count: number;
  hash_rate: number;
  bytes_sent: number;
  bytes_received: number;
}

export interface PeerInfo {
  addr: string;
  transport_type: string;
  services: number;
  version: number;
  connected_since: number;
}

/** What a miner needs to build the next block (get_block_template). */
export interface BlockTemplate {
  version: number;
  previous_block_hash: Hex;
  height: number;
  bits: number;
  /** The proof-of-work target for `bits`, as 64 hex characters. */
  target: Hex;
  /** Suggested header time, and the earliest the chain accepts (median time past + 1). */
  cur_time: number;
  min_time: number;
  /** Mempool transactions for the block, in a valid order, with their fees. */
  transactions: Array<{ txid: Hex; wtxid: Hex; hex: Uint8Array | Hex; fee: number; weight: number }>;
  /** Subsidy plus the fees of `transactions`: the most the coinbase may pay out. */
  coinbase_value: number;
  /** The BIP141 witness commitment output script (uses a 32-byte zero witness reserved value). */
  default_witness_commitment: Hex;
  /** With a coinbase script: a complete coinbase (BIP34 height, commitment) paying coinbase_value to it. */
  coinbase_tx?: { txid: Hex; hex: Uint8Array | Hex };
}

export interface SubmitBlockResult {
  result: "accepted" | "duplicate" | "rejected";
  /** Why a block was rejected (a bitcoind-style reason code and an explanation). */
  reason?: string;
  /** The block hash, when the block could be decoded. */
  hash?: Hex;
  /** Bytes the chain wrote to its database for an accepted block (embedded chain; not sent to modules). */
  storedBytes?: number;
}

/** Events a backend emits (payloads in protocol/events.ts, shared with the SDKs). Payloads are plain data. */
export type { ChainEvents } from "../protocol/events.ts";

export type ChainEventName = keyof ChainEvents;

/** The backend cannot reach its node now; the call may succeed later. */
export class BackendUnavailableError extends Error {
  readonly code = "backend_unavailable";
  constructor(message: string) {
    super(message);
    this.name = "BackendUnavailableError";
  }
}
export type ChainListener = <K extends ChainEventName>(name: K, payload: ChainEvents[K]) => void;

export interface ChainBackend {
  readonly name: string;

  /** Blocks are shared between readers: treat them as read-only (the embedded chain freezes them). */
  getBlock(hash: Hex): Promise<Block | null>;
  getBlock(hash: Hex, opts: BlockOptions): Promise<Block | LightBlock | null>;
  getBlockHeader(hash: Hex): Promise<BlockHeader | null>;
  getBlockByHeight(height: number): Promise<Block | null>;
  getBlockByHeight(height: number, opts: BlockOptions): Promise<Block | LightBlock | null>;
  getTransaction(txid: Hex): Promise<Transaction | null>;
  hasTransaction(txid: Hex): Promise<boolean>;
  getChainTip(): Promise<Hex>;
  getBlockHeight(): Promise<number>;
  /**
   * The tip's hash and height when this backend knows them without asking anyone (the embedded
   * chain keeps its tip in memory): get_chain_tip and get_block_height answer them as values, in
   * the same pass as the request (host/session.ts serve), without a promise per call. A backend
   * that must ask its node leaves them out.
   */
  chainTipNow?(): Hex;
  blockHeightNow?(): number;
  getUtxo(outpoint: OutPoint): Promise<Utxo | null>;
  getChainInfo(): Promise<ChainInfo>;

  getMempoolTransactions(): Promise<Hex[]>;
  /**
   * At most `limit` txids, starting after cursor `after` (0: the first page). The embedded
   * chain pages by the order of acceptance (a keyset: every transaction in the mempool through
   * the whole reading appears exactly once, those accepted meanwhile at the end); the Core
   * backend by position in Core's list.
   */
  getMempoolPage(after: number, limit: number): Promise<MempoolPage>;
  getMempoolTransaction(txid: Hex): Promise<Transaction | null>;
  getMempoolEntry(txid: Hex): Promise<MempoolEntry | null>;
  getMempoolInfo(): Promise<MempoolInfo>;
  isInMempool(txid: Hex): Promise<boolean>;
  /** Fee rate in sat/vB expected to confirm within `targetBlocks`; at least 1. */
  estimateFee(targetBlocks: number): Promise<number>;

  getNetworkStats(): Promise<NetworkStats>;
  getPeers(): Promise<PeerInfo[]>;

  /** A template for a block on the current tip, filled from the mempool. */
  getBlockTemplate(opts?: { coinbaseScript?: Hex }): Promise<BlockTemplate>;
  /** Check a serialised block (raw bytes, or their hex) fully and connect it on the tip; never throws for a bad block. */
  submitBlock(block: Hex | Uint8Array): Promise<SubmitBlockResult>;
  /**
   * A block's serialised size and its largest transaction's, if the backend holds them in
   * memory (no I/O: the host asks before it admits a request, capabilities/answer-bounds.ts);
   * undefined otherwise, and from backends that never know.
   */
  knownBlockSize?(hash: Hex): { size: number; largestTx: number } | undefined;
  /** Accept a serialised transaction (raw bytes, or their hex) into the mempool; throws an Error whose message is the reason when refused. */
  submitTransaction(tx: Hex | Uint8Array): Promise<Hex>;

  /** Subscribe to backend events; returns an unsubscribe function. */
  subscribe(listener: ChainListener): () => void;

  close(): Promise<void>;
}
