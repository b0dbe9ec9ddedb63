// One file: the chain's state (tip, UTXO set with undo, mempool) and the mutations that keep it
// consistent share private state; validation and the mempool are chain/validation.ts and
// chain/mempool.ts.
//
// The embedded regtest chain: an in-process Bitcoin chain with real regtest data.
//
// It starts from the real regtest genesis block and mines real blocks on top of it: real
// serialisation, txids and merkle roots, BIP34 heights, BIP141 witness commitments, proof
// of work at regtest difficulty, a UTXO set with undo data, a fee-paying mempool of
// BIP143-signed transactions, and reorganisations on demand. It is a data source for
// modules, not a validator: transactions are checked structurally and against the UTXO set
// (existence, conflicts, maturity, amounts, finality) but their scripts are not executed.
// It has no peers and no network.
//
// Event order. Listeners run synchronously, after the state change they describe, so a
// listener that reads the chain sees that change. Mining a block emits
// MempoolTransactionRemoved ("block", then "conflict") for the transactions it confirms or
// evicts, then NewBlock. A reorg emits BlockDisconnected for each disconnected block (tip
// first), MempoolTransactionRemoved ("reorg") for mempool transactions the shorter chain
// invalidates, MempoolTransactionAdded for the disconnected transactions that return to the
// mempool, the events of mining each replacement block, and finally ChainReorg. Listeners
// should not call mining or mempool methods synchronously: those would run mid-operation.
//
// Persistence and memory. The chain lives in its own database (./store.ts): LevelDB in the
// host's data directory (`dataDir`), so a restarted host continues the same chain, or
// memory-level for a throwaway chain. Every connected or disconnected block is one atomic
// batch, so a process killed between (or during) blocks reopens on a consistent tip. In memory
// the chain keeps at most `blockCache` full blocks (with their undo data, and together at most
// `blockCacheBytes` by storedBlockBytes' estimate) plus the tip, the
// summaries (hash, time, work) of the last HEADER_WINDOW blocks of the active chain, at most
// `utxoCache` UTXOs, and the mempool; everything else is read from the database when asked
// for. The mempool is not persisted: after a restart it is empty, and the wallet coins its
// transactions spent are spendable again.
//
// Mutations (mining, reorgs, transactions, submitted blocks) run one at a time (a queue);
// reads do not wait for them. Blocks and transactions handed out are frozen and shared:
// readers must not (and cannot) change them.
//
// Where the rest is: a submitted block's checks and consensus finality in ./validation.ts (as
// bitcoind's validation.cpp), the pool in ./mempool.ts (txmempool.cpp), block building in
// ./blocks.ts, the wallet in ./wallet.ts, the database in ./store.ts. This file stays over 500
// lines on purpose: what is left is the chain state (tip, header window, caches, mempool,
// database) and every operation that changes it, which must all run inside one mutation queue
// and keep memory and database in step (connectBlock/disconnectTip write one batch, then update
// memory, then emit); splitting them would hand that private state to several files.

import { bytesToHex, concatBytes, hexToBytes, utf8ToBytes } from "@noble/hashes/utils.js";
import type {
  Block,
  BlockHeader,
  BlockOptions,
  LightBlock,
  BlockTemplate,
  ChainBackend,
  ChainEventName,
  ChainEvents,
  ChainInfo,
  ChainListener,
  Hex,
  MempoolEntry,
  MempoolInfo,
  MempoolPage,
  NetworkStats,
  OutPoint,
  PeerInfo,
  SubmitBlockResult,
  Transaction,
  Utxo,
} from "./backend.ts";
import { bytesOfRaw } from "./backend.ts";
import {
  BLOCK_TX_WEIGHT,
  REGTEST_GENESIS_HASH,
  COINBASE_MATURITY,
  MAX_MONEY,
  REGTEST_BITS,
  type StoredBlock,
  blockSubsidy,
  coinbaseTransaction,
  genesisBlock,
  mineBlock,
  deepFreeze,
  storeParsedBlock,
} from "./blocks.ts";
import {
  describeTransaction,
  decodeTransaction,
  difficultyFromBits,
  scriptOfAddress,
  targetFromBits,
  sha256d,
} from "./serialise.ts";
import { BlockRejected, MAX_BLOCK_WEIGHT, WITNESS_COMMITMENT_PREFIX, checkBlock, isFinal, outpointKey } from "./validation.ts";
import { ParseError, type ParsedBlock, merkleRootOf, parseBlock, parseTransaction } from "./parse.ts";
import { Slicer } from "./slices.ts";
import { Mempool, type MempoolRecord, feeRate, mempoolEntry } from "./mempool.ts";
import { Wallet, type Payment } from "./wallet.ts";
import { Lru } from "./lru.ts";
import { ChainStore, STORE_VERSION, heightKey, walletKey, type BatchBytes, type BlockRecord, type ChainState, type StoreOp } from "./store.ts";

/** Header version of templates: BIP9 version bits, nothing signalled (as the embedded miner). */
const TEMPLATE_VERSION = 0x20000000;
const DEFAULT_SEED = utf8ToBytes("modhost embedded regtest chain");

/** Smallest output createTransaction makes (well above P2WPKH dust, 294 sats). */
const MIN_CREATED_OUTPUT = 1_000;
const MAX_CREATED_OUTPUTS = 1_000;
/** Recent blocks whose confirmed fee rates inform estimateFee and hash-rate estimation. */
const FEE_HISTORY_BLOCKS = 10;
const HASH_RATE_BLOCKS = 120;
/** Summaries of this many recent active blocks stay in memory (median time past, hash rate). */
const HEADER_WINDOW = HASH_RATE_BLOCKS;
/** Defaults of the memory bounds (see EmbeddedChainOptions). */
const DEFAULT_BLOCK_CACHE = 64;
const DEFAULT_UTXO_CACHE = 20_000;
const DEFAULT_BLOCK_CACHE_BYTES = 128 * 1024 * 1024;
const DEFAULT_MAX_STORED_BYTES = 4096 * 1_000_000;
const DEFAULT_UTXO_CACHE_BYTES = 64 * 1024 * 1024;

/**
 * What a cached UTXO holds of host memory, estimated from above: its script and address
 * strings and the object. A block's outputs can carry ~4 MB of script between them, so the
 * count alone (utxoCache) let the cache hold gigabytes of scripts.
 */
function utxoBytes(utxo: Utxo): number {
  return 2 * (utxo.script_pubkey.length + (utxo.address?.length ?? 0)) + 256;
}

/**
 * What a cached block holds of host memory, estimated from above: its serialisation, its
 * transactions' bytes, the hex of their scripts and witness items (two characters a byte), the
 * pages modules read it in (kept with the block) and the objects of each transaction.
 * Measured: a block of one 3.9 MB-witness transaction held ~10 MB in the chain, more once read.
 */
function storedBlockBytes(stored: StoredBlock): number {
  return 6 * stored.block.size + 1024 * stored.block.transactions.length;
}
/** A submitted block or transaction is at most this many bytes (weight 4,000,000, every byte at least weight 1). */
const MAX_TX_BYTES = 4_000_000;

export interface EmbeddedChainOptions {
  /** Blocks mined after genesis when the chain is created (default 101, so coinbases can be spent). Ignored when `dataDir` already holds a chain. */
  matureBlocks?: number;
  /** Clock in Unix seconds (default Date.now() / 1000). Block times never go below MTP + 1. */
  now?: () => number;
  /** Seed for the wallet keys and random choices (default a fixed seed). */
  seed?: Uint8Array;
  /** Directory of the chain's LevelDB database (created if missing); without it the chain lives in memory and ends with the process. */
  dataDir?: string;
  /** Full blocks (with undo data) kept in memory besides the tip (default 64, [chain] block_cache). */
  blockCache?: number;
  /** UTXOs kept in memory (default 20000, [chain] utxo_cache). */
  utxoCache?: number;
  /** What the cached UTXOs may hold of host memory together, estimated (default 64 MiB, [chain] utxo_cache_mb; utxoBytes). */
  utxoCacheBytes?: number;
  /** What the cached blocks may hold of host memory together, estimated (default 128 MiB, [chain] block_cache_mb; storedBlockBytes). */
  blockCacheBytes?: number;
  /** What the mempool's transactions may hold of host memory (default 300 MiB, [chain] max_mempool_mb; ./mempool.ts heldBytes). */
  mempoolBytes?: number;
  /**
   * What the chain's database may hold (default 4096 MB, [chain] max_chain_mb; ChainState.liveBytes).
   * A submitted block whose batch would pass it is rejected (chain-full) before it is written;
   * near and at it mined blocks carry only the mempool transactions that fit, then none.
   */
  maxStoredBytes?: number;
  /** The setting that sets maxStoredBytes, named in the rejection (default "[chain] max_chain_mb"). */
  maxStoredSetting?: string;
}

/** What the chain keeps in memory of a recent active block. */
interface HeaderSummary {
  hash: Hex;
  height: number;
  time: number;
  chainWork: bigint;
  /** The block's serialised size and its largest transaction's (knownBlockSize); absent when read back from the database. */
  sizes?: { size: number; largestTx: number };
}

/** Counts of what the chain holds in memory (for tests and metrics). */
export interface MemoryCounts {
  blocks: number;
  /** What the cached blocks hold, estimated (storedBlockBytes), against [chain] block_cache_mb. */
  blockBytes: number;
  headers: number;
  utxos: number;
  /** What the cached UTXOs hold, estimated (utxoBytes), against [chain] utxo_cache_mb. */
  utxoBytes: number;
  mempool: number;
  /** What the mempool's transactions hold, estimated (./mempool.ts heldBytes), against its bound. */
  mempoolBytes: number;
  /** Bytes written for connected blocks (on disk, not in memory), against maxStoredBytes. */
  storedBytes: number;
  maxStoredBytes: number;
}

export class EmbeddedChain implements ChainBackend {
  readonly name = "embedded-regtest";
  /** The wallet's main regtest address: coinbases and change pay here. */
  readonly walletAddress: string;

  private readonly now: () => number;
  private readonly wallet: Wallet;
  private readonly listeners = new Set<ChainListener>();
  private readonly genesis: StoredBlock;
  /** The active tip (always in memory, besides the block cache). */
  private tipBlock: StoredBlock;
  /** Summaries of the last HEADER_WINDOW active blocks, in height order, ending at the tip. */
  private headers: HeaderSummary[] = [];
  /** Recently used blocks by hash, active or not. */
  private readonly blocks: Lru<Hex, StoredBlock>;
  /** Recently used confirmed UTXOs by outpoint key. */
  private readonly utxoCache: Lru<string, Utxo>;
  /** Light views of blocks (no hex), made once per block. */
  private readonly lightViews = new WeakMap<Block, LightBlock>();
  private readonly mempool: Mempool;
  /** Coinbase extra nonce, never reused, so blocks rebuilt at a height get new hashes. */
  private extraNonce = 0;
  /** Changes with every block written: a UTXO read that spans a write does not fill the cache. */
  private utxoGeneration = 0;
  /** Mutations run one after another. */
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;
  /** What the database holds (ChainState.liveBytes), and its bound. */
  private storedBytes = 0;
  /** False while the count of a database made before it is measured (measureStored). */
  private counted = true;
  /** The measuring of an older database's count, while it runs. */
  measuring: Promise<void> | undefined;
  private readonly maxStoredBytes: number;
  private readonly maxStoredSetting: string;

  private constructor(opts: EmbeddedChainOptions, private readonly store: ChainStore) {
    this.now = opts.now ?? (() => Date.now() / 1000);
    this.wallet = new Wallet(opts.seed ?? DEFAULT_SEED);
    this.walletAddress = this.wallet.mainAddress;
    const blockCache = opts.blockCache ?? DEFAULT_BLOCK_CACHE;
    const utxoCache = opts.utxoCache ?? DEFAULT_UTXO_CACHE;
    assertCount("blockCache", blockCache);
    assertCount("utxoCache", utxoCache);
    this.blocks = new Lru(blockCache, { maxBytes: opts.blockCacheBytes ?? DEFAULT_BLOCK_CACHE_BYTES, weigh: storedBlockBytes });
    this.utxoCache = new Lru(utxoCache, { maxBytes: opts.utxoCacheBytes ?? DEFAULT_UTXO_CACHE_BYTES, weigh: utxoBytes });
    this.mempool = new Mempool(opts.mempoolBytes);
    this.maxStoredBytes = opts.maxStoredBytes ?? DEFAULT_MAX_STORED_BYTES;
    this.maxStoredSetting = opts.maxStoredSetting ?? "[chain] max_chain_mb";
    this.genesis = genesisBlock();
    this.tipBlock = this.genesis;
    this.headers = [summaryOf(this.genesis)];
  }

  /**
   * Open the chain in `opts.dataDir` and continue it, or create a new one there (or in
   * memory without `dataDir`): genesis plus `matureBlocks` mined blocks.
   */
  static async create(opts: EmbeddedChainOptions = {}): Promise<EmbeddedChain> {
    const matureBlocks = opts.matureBlocks ?? COINBASE_MATURITY + 1;
    assertCount("matureBlocks", matureBlocks);
    const store = await ChainStore.open(opts.dataDir);
    let chain: EmbeddedChain;
    try {
      chain = new EmbeddedChain(opts, store);
      const state = await store.readState();
      if (state === undefined) {
        await chain.writeGenesis();
        await chain.mineBlocks(matureBlocks, false);
      } else {
        await chain.resume(state);
      }
    } catch (err) {
      await store.close();
      throw err;
    }
    return chain;
  }

  /** Where the chain's database is (null: in memory). */
  get dataDir(): string | null {
    return this.store.location;
  }

  /** What the chain holds in memory right now (entries, not bytes). */
  memoryCounts(): MemoryCounts {
    return { blocks: this.blocks.size, blockBytes: this.blocks.bytes, headers: this.headers.length, utxos: this.utxoCache.size, utxoBytes: this.utxoCache.bytes, mempool: this.mempool.size, mempoolBytes: this.mempool.held, storedBytes: this.storedBytes, maxStoredBytes: this.maxStoredBytes };
  }

  // ---- Mining and reorganisation ----

  /** Mine `count` blocks on the tip, by default filling them from the mempool. */
  async mine(count = 1, opts: { includeMempool?: boolean } = {}): Promise<Hex[]> {
    assertCount("count", count);
    return this.exclusive(() => this.mineBlocks(count, opts.includeMempool ?? true));
  }

  /**
   * Replace the top `depth` blocks with `newBlocks` (default depth + 1) new ones built on the
   * fork point. Disconnected non-coinbase transactions that are still valid return to the
   * mempool; the replacement blocks include mempool transactions only if `includeMempool`.
   */
  async reorg(
    depth: number,
    opts: { newBlocks?: number; includeMempool?: boolean } = {},
  ): Promise<{ disconnected: Hex[]; connected: Hex[] }> {
    const newBlocks = opts.newBlocks ?? depth + 1;
    return this.exclusive(async () => {
      const height = this.height;
      if (!Number.isInteger(depth) || depth < 1 || depth > height) {
        throw new RangeError(`reorg depth must be an integer from 1 to the chain height ${height}, got ${depth}`);
      }
      assertCount("newBlocks", newBlocks);

      const oldTip = this.tip.block.hash;
      const removed: StoredBlock[] = [];
      for (let i = 0; i < depth; i++) removed.push(await this.disconnectTip());

      for (const record of this.mempool.records()) {
        if (!(await this.spendsAreValid(record.tx))) this.removeFromMempool(record.tx.txid, "reorg");
      }
      for (const stored of removed.slice().reverse()) {
        for (const tx of stored.block.transactions.slice(1)) {
          try {
            await this.acceptToMempool(tx);
          } catch {
            // Invalid on the shorter chain (say it spent a disconnected coinbase): dropped.
          }
        }
      }

      const disconnected = removed.map((stored) => stored.block.hash);
      const connected = await this.mineBlocks(newBlocks, opts.includeMempool ?? false);
      this.emit("ChainReorg", {
        old_tip: oldTip,
        new_tip: this.tip.block.hash,
        fork_height: height - depth,
        disconnected,
        connected,
      });
      return { disconnected, connected };
    });
  }

  // ---- Transactions ----

  /**
   * Build, sign and add to the mempool a transaction spending one mature, confirmed wallet
   * UTXO that no mempool transaction spends. It pays `outputs` (default 1) outputs to the
   * wallet's rotating recipient keys, plus change, with a fee of `feeRate` (sat/vB, default
   * random 1..50) times its vsize. Throws when no such UTXO exists: mine more blocks.
   */
  async createTransaction(opts: { outputs?: number; feeRate?: number } = {}): Promise<Hex> {
    const outputs = opts.outputs ?? 1;
    if (!Number.isInteger(outputs) || outputs < 1 || outputs > MAX_CREATED_OUTPUTS) {
      throw new RangeError(`outputs must be an integer from 1 to ${MAX_CREATED_OUTPUTS}, got ${outputs}`);
    }
    return this.exclusive(async () => {
      const feeRate = opts.feeRate ?? 1 + Math.floor(this.wallet.random() * 50);
      if (!Number.isFinite(feeRate) || feeRate <= 0) throw new RangeError(`feeRate must be positive, got ${feeRate}`);
      const minValue = feeBound(feeRate, outputs) + (outputs + 1) * MIN_CREATED_OUTPUT;
      const utxo = await this.spendableWalletUtxo(minValue);
      if (utxo === undefined) {
        throw new Error(`no mature, unspent wallet UTXO of at least ${minValue} sats: mine more blocks`);
      }
      // Payments take at most half of what is left above the minimum outputs; change gets the rest.
      const spread = utxo.value - minValue;
      const payments: Payment[] = [];
      for (let i = 0; i < outputs; i++) {
        const extra = Math.floor((spread * this.wallet.random()) / (2 * outputs));
        payments.push({ script: this.wallet.recipientScript(), amount: BigInt(MIN_CREATED_OUTPUT + extra) });
      }
      return this.signAndAccept(utxo, payments, feeRate, outputs);
    });
  }

  /**
   * Pay `amount` sats from the wallet to a regtest `address` (bcrt1..., m/n..., 2...): one
   * mature wallet coin in, the payment and change out, at `feeRate` sat/vB (default: the
   * chain's estimate for 6 blocks). The transaction goes to the mempool; returns its txid.
   */
  async send(address: string, amount: number, opts: { feeRate?: number } = {}): Promise<{ txid: Hex; fee: number }> {
    const script = scriptOfAddress(address);
    if (!Number.isSafeInteger(amount) || amount < MIN_CREATED_OUTPUT || amount > MAX_MONEY) {
      throw new RangeError(`amount must be an integer number of sats from ${MIN_CREATED_OUTPUT} to ${MAX_MONEY}, got ${amount}`);
    }
    return this.exclusive(async () => {
      const feeRate = opts.feeRate ?? (await this.estimateFee(6));
      if (!Number.isFinite(feeRate) || feeRate <= 0) throw new RangeError(`feeRate must be positive, got ${feeRate}`);
      const minValue = feeBound(feeRate, 1) + amount + MIN_CREATED_OUTPUT;
      const utxo = await this.spendableWalletUtxo(minValue);
      if (utxo === undefined) {
        throw new Error(`no mature, unspent wallet coin of at least ${minValue} sats (amount + fee + change): mine more blocks, or send less`);
      }
      const txid = await this.signAndAccept(utxo, [{ script, amount: BigInt(amount) }], feeRate, 1);
      return { txid, fee: (this.mempool.get(txid) as MempoolRecord).fee };
    });
  }

  /**
   * Sign a spend of `utxo` paying `payments` plus change to the wallet, with a fee of `feeRate`
   * times its vsize, and accept it into the mempool.
   */
  private async signAndAccept(utxo: Utxo, payments: Payment[], feeRate: number, outputs: number): Promise<Hex> {
    const paid = payments.reduce((sum, p) => sum + Number(p.amount), 0);
    const sign = (fee: number): Transaction =>
      describeTransaction(
        decodeTransaction(
          this.wallet.signSpend(utxo, [
            ...payments,
            { script: this.wallet.mainScript, amount: BigInt(utxo.value - paid - fee) },
          ]),
        ),
      );
    // The fee depends on the vsize, which depends (through the signature's length) on the
    // change amount, so re-sign until they agree. Starting from the upper bound, this settles
    // in one or two rounds; should the signature length flip-flop, accept the larger fee.
    let fee = feeBound(feeRate, outputs);
    for (let attempt = 0; ; attempt++) {
      const tx = sign(fee);
      const exact = Math.ceil(feeRate * tx.vsize);
      if (exact === fee || (exact < fee && attempt >= 3)) return (await this.acceptToMempool(tx)).tx.txid;
      fee = exact;
    }
  }

  /**
   * Accept an externally built transaction into the mempool. Every input must spend a
   * confirmed UTXO that no mempool transaction spends (mature, if a coinbase output), and
   * outputs must not exceed inputs. Scripts and signatures are not checked.
   */
  async submitTransaction(hexOrBytes: Hex | Uint8Array): Promise<Hex> {
    let tx: Transaction;
    try {
      tx = await parseTransaction(rawOf(hexOrBytes, "transaction"));
    } catch (err) {
      throw new Error(`transaction decode failed: ${(err as Error).message}`);
    }
    return this.exclusive(async () => (await this.acceptToMempool(tx)).tx.txid);
  }

  // ---- Mining: templates and submitted blocks ----

  /** A template for the next block, filled from the mempool as the embedded miner would. */
  async getBlockTemplate(opts: { coinbaseScript?: Hex } = {}): Promise<BlockTemplate> {
    const parent = this.tip;
    const height = parent.block.height + 1;
    const selected = this.mempool.select(BLOCK_TX_WEIGHT);
    const coinbaseValue = blockSubsidy(height) + selected.reduce((sum, record) => sum + record.fee, 0);
    const wtxids = selected.map((record) => record.tx.wtxid);
    const minTime = this.medianTimePast(parent.block.height) + 1;
    // BIP141 commitment over up to ~16,000 wtxids: hashed in slices (the merkle root), then with the zero reserved value.
    const commitment = sha256d(concatBytes(await merkleRootOf(["00".repeat(32), ...wtxids], new Slicer()), new Uint8Array(32)));
    const template: BlockTemplate = {
      version: TEMPLATE_VERSION,
      previous_block_hash: parent.block.hash,
      height,
      bits: REGTEST_BITS,
      target: targetFromBits(REGTEST_BITS).toString(16).padStart(64, "0"),
      cur_time: Math.max(Math.floor(this.now()), minTime),
      min_time: minTime,
      transactions: selected.map(({ tx, fee }) => ({ txid: tx.txid, wtxid: tx.wtxid, hex: tx.hex, fee, weight: tx.weight })),
      coinbase_value: coinbaseValue,
      default_witness_commitment: WITNESS_COMMITMENT_PREFIX + bytesToHex(commitment),
    };
    if (opts.coinbaseScript !== undefined) {
      const coinbase = describeTransaction(
        coinbaseTransaction(height, this.extraNonce++, coinbaseValue, hexToBytes(opts.coinbaseScript), wtxids, commitment),
      );
      template.coinbase_tx = { txid: coinbase.txid, hex: coinbase.hex };
    }
    return template;
  }

  /**
   * Check a serialised block (./validation.ts checkBlock: bitcoind's checks minus script
   * execution) and connect it on the tip. An accepted block emits the same events as a mined one.
   */
  async submitBlock(hexOrBytes: Hex | Uint8Array): Promise<SubmitBlockResult> {
    // Read in slices (./parse.ts), outside the mutation queue: the loop and other mutations go on meanwhile.
    const slicer = new Slicer();
    let parsed: ParsedBlock;
    try {
      const bytes = rawOf(hexOrBytes, "block");
      // Before any work proportional to the block: a chain at its cap takes no more.
      if (this.storedBytes + bytes.length > this.maxStoredBytes) return this.chainFull(bytes.length);
      parsed = await parseBlock(bytes, { maxWeight: MAX_BLOCK_WEIGHT }, slicer);
    } catch (err) {
      // Whatever the bytes made the reader throw, the answer is a rejection (the interface never throws for a bad block).
      const message = err instanceof Error ? err.message : String(err);
      return { result: "rejected", reason: message.startsWith("bad-blk-weight") ? message : `bad-block-decode: the block could not be decoded (${message})` };
    }
    const hash = parsed.header.hash;
    return this.exclusive(async () => {
      if (this.blocks.has(hash) || hash === this.tip.block.hash || (await this.store.hasBlock(hash))) return { result: "duplicate" as const, hash };
      let stored: StoredBlock;
      try {
        stored = await checkBlock(parsed, {
          tip: this.tip,
          now: this.now,
          medianTimePast: (height) => this.medianTimePast(height),
          loadBlock: (blockHash) => this.loadBlock(blockHash),
          readUtxo: (key) => this.readUtxo(key),
        }, slicer);
      } catch (err) {
        if (err instanceof BlockRejected) return { result: "rejected" as const, reason: err.message, hash };
        throw err;
      }
      let written = 0;
      try {
        written = await this.connectBlock(stored, slicer, this.maxStoredBytes);
      } catch (err) {
        if (err instanceof ChainFull) return { ...this.chainFull(err.size, err.adds), hash };
        throw err;
      }
      return { result: "accepted" as const, hash, storedBytes: written };
    });
  }

  private chainFull(size: number, adds?: number): SubmitBlockResult {
    const mb = (n: number) => (n / 1_000_000).toFixed(1);
    const what = adds === undefined ? `this ${size}-byte block` : `this ${size}-byte block, whose writes would add ${mb(adds)} MB,`;
    return { result: "rejected", reason: `chain-full: the embedded chain's database holds ${mb(this.storedBytes)} MB; ${what} would pass its limit of ${mb(this.maxStoredBytes)} MB (${this.maxStoredSetting}): the operator raises it, or starts a new chain in another data_dir` };
  }

  // ---- ChainBackend: blocks and transactions ----

  /** Sizes of the tip, a cached block or one of the last HEADER_WINDOW active blocks; no I/O. */
  knownBlockSize(hash: Hex): { size: number; largestTx: number } | undefined {
    if (hash === this.tipBlock.block.hash) return sizesOf(this.tipBlock);
    const cached = this.blocks.peek(hash);
    if (cached !== undefined) return sizesOf(cached);
    for (let i = this.headers.length - 1; i >= 0; i--) {
      const h = this.headers[i] as HeaderSummary;
      if (h.hash === hash) return h.sizes;
    }
    return undefined;
  }

  /**
   * A block by hash (active or reorganised away), or null. The same frozen object goes to
   * every reader; with `includeHex: false` a lighter frozen view without the raw hex of the
   * block, its header and its transactions (made once per block).
   */
  async getBlock(hash: Hex): Promise<Block | null>;
  async getBlock(hash: Hex, opts: BlockOptions): Promise<Block | LightBlock | null>;
  async getBlock(hash: Hex, opts: BlockOptions = {}): Promise<Block | LightBlock | null> {
    const stored = await this.loadBlock(hash);
    return stored === undefined ? null : this.view(stored.block, opts);
  }

  async getBlockHeader(hash: Hex): Promise<BlockHeader | null> {
    const stored = await this.loadBlock(hash);
    return stored === undefined ? null : stored.block.header;
  }

  async getBlockByHeight(height: number): Promise<Block | null>;
  async getBlockByHeight(height: number, opts: BlockOptions): Promise<Block | LightBlock | null>;
  async getBlockByHeight(height: number, opts: BlockOptions = {}): Promise<Block | LightBlock | null> {
    const stored = await this.activeBlock(height);
    return stored === undefined ? null : this.view(stored.block, opts);
  }

  /** A mempool or confirmed (active chain) transaction. */
  async getTransaction(txid: Hex): Promise<Transaction | null> {
    const tx = this.mempool.get(txid)?.tx ?? (await this.confirmedTransaction(txid));
    return tx ?? null;
  }

  async hasTransaction(txid: Hex): Promise<boolean> {
    return this.mempool.has(txid) || (await this.store.tx(txid)) !== undefined;
  }

  async getChainTip(): Promise<Hex> {
    return this.tip.block.hash;
  }

  async getBlockHeight(): Promise<number> {
    return this.height;
  }

  chainTipNow(): Hex {
    return this.tip.block.hash;
  }

  blockHeightNow(): number {
    return this.height;
  }

  /** An output of the confirmed UTXO set; mempool spends do not hide it. */
  async getUtxo(outpoint: OutPoint): Promise<Utxo | null> {
    const utxo = await this.readUtxo(outpointKey(outpoint.txid, outpoint.vout));
    return utxo === undefined ? null : { ...utxo };
  }

  async getChainInfo(): Promise<ChainInfo> {
    const tip = this.tip;
    return {
      chain: "regtest",
      tip_hash: tip.block.hash,
      height: tip.block.height,
      bits: tip.block.header.bits,
      difficulty: difficultyFromBits(tip.block.header.bits),
      chain_work: tip.chainWork.toString(),
      median_time: this.medianTimePast(tip.block.height),
      is_synced: true,
    };
  }

  // ---- ChainBackend: mempool ----

  async getMempoolTransactions(): Promise<Hex[]> {
    return this.mempool.txids();
  }

  async getMempoolPage(after: number, limit: number): Promise<MempoolPage> {
    const { txids, next } = this.mempool.page(after, limit);
    return { txids, next_after: next, count: this.mempool.size, order: "accepted" };
  }

  async getMempoolTransaction(txid: Hex): Promise<Transaction | null> {
    return this.mempool.get(txid)?.tx ?? null;
  }

  async getMempoolEntry(txid: Hex): Promise<MempoolEntry | null> {
    const record = this.mempool.get(txid);
    return record === undefined ? null : mempoolEntry(record);
  }

  async getMempoolInfo(): Promise<MempoolInfo> {
    return this.mempool.info();
  }

  async isInMempool(txid: Hex): Promise<boolean> {
    return this.mempool.has(txid);
  }

  /**
   * If the mempool holds more than `targetBlocks` blocks' worth of transactions, a new one
   * must outbid the highest-paying transaction that would be left out. Otherwise the estimate
   * is a percentile of the fee rates in the mempool and the last few blocks: the median for
   * the next block, lower for later targets (the 1/(2 * target) quantile). At least 1.
   */
  async estimateFee(targetBlocks: number): Promise<number> {
    if (!Number.isInteger(targetBlocks) || targetBlocks < 1) {
      throw new RangeError(`targetBlocks must be a positive integer, got ${targetBlocks}`);
    }
    // Sorting every fee rate of the mempool and of 10 blocks (up to ~150,000 of them) per call
    // would let a module hold the loop with a loop of calls: kept until the tip or the mempool changes.
    const key = `${this.tip.block.hash}:${this.mempool.version}`;
    if (this.feeEstimates.key !== key) this.feeEstimates = { key, byTarget: new Map() };
    const known = this.feeEstimates.byTarget.get(targetBlocks);
    if (known !== undefined) return known;
    const estimate = await this.computeFeeEstimate(targetBlocks);
    if (this.feeEstimates.key === key) this.feeEstimates.byTarget.set(targetBlocks, estimate);
    return estimate;
  }

  private feeEstimates: { key: string; byTarget: Map<number, number> } = { key: "", byTarget: new Map() };

  private async computeFeeEstimate(targetBlocks: number): Promise<number> {
    const pending = this.mempool.byFeeRate();
    const capacity = targetBlocks * BLOCK_TX_WEIGHT;
    let weight = 0;
    for (const record of pending) {
      weight += record.tx.weight;
      if (weight > capacity) return Math.max(1, Math.ceil(feeRate(record)) + 1);
    }

    const rates = pending.map(feeRate);
    for (const summary of this.headers.slice(-FEE_HISTORY_BLOCKS)) {
      const stored = await this.loadBlock(summary.hash);
      stored?.block.transactions.forEach((tx, i) => {
        if (i > 0) rates.push((stored.fees[i] ?? 0) / tx.vsize);
      });
    }
    if (rates.length === 0) return 1;
    // The index-th smallest of up to ~170,000 rates: a selection in linear time, not a sort.
    const index = Math.min(rates.length - 1, Math.floor(rates.length / (2 * targetBlocks)));
    return Math.max(1, Math.ceil(nthSmallest(Float64Array.from(rates), index)));
  }

  // ---- ChainBackend: network ----

  /** The embedded chain has no network: no peers, no traffic; hash rate from recent blocks. */
  async getNetworkStats(): Promise<NetworkStats> {
    return { peer_count: 0, hash_rate: this.estimateHashRate(), bytes_sent: 0, bytes_received: 0 };
  }

  /** Always empty: the embedded chain has no peers. */
  async getPeers(): Promise<PeerInfo[]> {
    return [];
  }

  // ---- ChainBackend: events ----

  subscribe(listener: ChainListener): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /** Wait for the running mutation, then close the database. Safe to call more than once. */
  async close(): Promise<void> {
    this.listeners.clear();
    if (this.closed) return;
    this.closed = true;
    await this.queue.catch(() => undefined);
    await this.store.close();
  }

  // ---- Internals ----

  private get tip(): StoredBlock {
    return this.tipBlock;
  }

  private get height(): number {
    return this.tipBlock.block.height;
  }

  /** Run a mutation after the ones before it (and before the ones after it). */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(() => {
      if (this.closed) throw new Error("the chain is closed (the host is stopping)");
      return fn();
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  private emit<K extends ChainEventName>(name: K, payload: ChainEvents[K]): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(name, structuredClone(payload));
      } catch {
        // A failing listener is its owner's problem; the chain carries on.
      }
    }
  }

  private view(block: Block, opts: BlockOptions): Block | LightBlock {
    if (opts.includeHex ?? true) return block;
    let light = this.lightViews.get(block);
    if (light === undefined) {
      const { hex: _hex, header, transactions, ...rest } = block;
      const { hex: _headerHex, ...headerFields } = header;
      light = deepFreeze({ ...rest, header: headerFields, transactions: transactions.map(({ hex: _txHex, ...tx }) => tx) });
      this.lightViews.set(block, light);
    }
    return light;
  }

  // ---- Internals: the database ----

  /** A new database: the genesis block at height 0 and the initial chain state. */
  private async writeGenesis(): Promise<void> {
    const genesis = this.genesis;
    const state = this.stateRecord(genesis.block.hash, 0);
    await this.store.write([
      { type: "put", sub: "b", key: genesis.block.hash, value: blockRecord(genesis) },
      { type: "put", sub: "h", key: heightKey(0), value: { hash: genesis.block.hash, time: genesis.block.header.time, work: genesis.chainWork.toString() } },
      { type: "put", sub: "s", key: "state", value: state },
    ], undefined, (b) => { state.liveBytes = this.storedBytes = b.written; });
  }

  /** An existing database: continue from its tip. */
  private async resume(state: ChainState): Promise<void> {
    const where = this.store.location ?? "memory";
    if (state.version !== STORE_VERSION) {
      throw new Error(`the chain database ${where} has format version ${state.version}; this modhost reads version ${STORE_VERSION}. Move it away to start a new chain`);
    }
    if (state.wallet !== this.wallet.mainAddress) {
      throw new Error(`the chain database ${where} belongs to another wallet seed (its wallet is ${state.wallet}, this chain's is ${this.wallet.mainAddress}). Use the seed it was made with, or move it away to start a new chain`);
    }
    const tip = await this.loadBlock(state.tip);
    if (tip === undefined || tip.block.height !== state.height) {
      throw new Error(`the chain database ${where} is damaged: its tip block ${state.tip} (height ${state.height}) is missing. Move it away to start a new chain`);
    }
    this.tipBlock = tip;
    this.extraNonce = state.extraNonce;
    this.wallet.restore(state);
    await this.refillHeaders();
    if (typeof state.liveBytes === "number") {
      this.storedBytes = state.liveBytes;
    } else {
      // A database made before the count: the older count (every put, never lowered) stands in
      // while the database is walked, in slices, after the open returns.
      this.storedBytes = state.storedBytes ?? 0;
      this.counted = false;
      this.measuring = this.measureStored();
    }
  }

  /** Walk the database for what it holds; blocks written meanwhile are added to the walk's snapshot. */
  private async measureStored(): Promise<void> {
    const before = this.storedBytes;
    try {
      const walked = await this.store.measure();
      this.storedBytes = walked + (this.storedBytes - before);
      this.counted = true;
    } catch {
      // Closed meanwhile: the next open measures again.
    } finally {
      this.measuring = undefined;
    }
  }

  /** Reload the header window from the database, ending at the tip. */
  private async refillHeaders(): Promise<void> {
    const tipHeight = this.height;
    const entries = await this.store.heightRange(Math.max(0, tipHeight - HEADER_WINDOW + 1), tipHeight);
    if (entries.length === 0 || entries[entries.length - 1]?.hash !== this.tip.block.hash) {
      throw new Error(`the chain database ${this.store.location ?? "memory"} is damaged: the active chain index does not end at the tip ${this.tip.block.hash}`);
    }
    this.headers = entries.map((e) => ({ hash: e.hash, height: e.height, time: e.time, chainWork: BigInt(e.work) }));
  }

  private stateRecord(tip: Hex, height: number): ChainState {
    return { version: STORE_VERSION, tip, height, extraNonce: this.extraNonce, ...this.wallet.state, wallet: this.wallet.mainAddress, ...(this.counted ? { liveBytes: this.storedBytes } : { storedBytes: this.storedBytes }) };
  }

  /** A block by hash from the cache or the database (decoded and frozen once). */
  private async loadBlock(hash: Hex): Promise<StoredBlock | undefined> {
    if (hash === this.tipBlock.block.hash) return this.tipBlock;
    if (hash === REGTEST_GENESIS_HASH) return this.genesis;
    const cached = this.blocks.get(hash);
    if (cached !== undefined) return cached;
    const record = await this.store.block(hash);
    if (record === undefined) return undefined;
    const stored = await storedFromRecord(record);
    this.blocks.set(hash, stored);
    return stored;
  }

  /** The active block at `height`, or undefined above the tip. */
  private async activeBlock(height: number): Promise<StoredBlock | undefined> {
    if (!Number.isInteger(height) || height < 0 || height > this.height) return undefined;
    if (height === this.height) return this.tip;
    const first = this.headers[0] as HeaderSummary;
    const hash = height >= first.height ? this.headers[height - first.height]?.hash : (await this.store.atHeight(height))?.hash;
    return hash === undefined ? undefined : this.loadBlock(hash);
  }

  private async readUtxo(key: string): Promise<Utxo | undefined> {
    const cached = this.utxoCache.get(key);
    if (cached !== undefined) return cached;
    const generation = this.utxoGeneration;
    const utxo = await this.store.utxo(key);
    // A block written while the read was on its way may have spent it: cache only what is current.
    if (utxo !== undefined && generation === this.utxoGeneration) this.utxoCache.set(key, utxo);
    return utxo;
  }

  /**
   * Write one block's batch (in slices, ./store.ts) and bring the UTXO cache in step with it
   * (in slices too). Reads that started before the write cannot put what it changed back into
   * the cache (utxoGeneration); the next mutation starts only when this one has finished.
   */
  private async writeAndCache(ops: StoreOp[], utxoView: Map<string, Utxo | null>, slicer: Slicer, counted?: (bytes: BatchBytes) => void): Promise<void> {
    this.utxoGeneration++;
    try {
      await this.store.write(ops, slicer, counted);
    } finally {
      this.utxoGeneration++;
    }
    for (const [key, utxo] of utxoView) {
      if (utxo === null) this.utxoCache.delete(key);
      else this.utxoCache.set(key, utxo);
      await slicer.tick();
    }
  }

  private async mineBlocks(count: number, includeMempool: boolean): Promise<Hex[]> {
    const hashes: Hex[] = [];
    for (let i = 0; i < count; i++) {
      const parent = this.tip;
      const stored = await mineBlock({
        parent,
        // Near its cap (maxStoredBytes) the chain takes only what fits (weight counts every
        // byte at least once); at it, it goes on with blocks of their coinbase alone.
        transactions: includeMempool && this.storedBytes < this.maxStoredBytes ? this.mempool.select(Math.min(BLOCK_TX_WEIGHT, this.maxStoredBytes - this.storedBytes)) : [],
        time: Math.max(Math.floor(this.now()), this.medianTimePast(parent.block.height) + 1),
        extraNonce: this.extraNonce++,
        payoutScript: this.wallet.mainScript,
      });
      await this.connectBlock(stored);
      hashes.push(stored.block.hash);
    }
    return hashes;
  }

  /**
   * Connect a checked block on the tip: one database batch, then memory, then events. With a
   * `limit`, a batch that would make the database hold more is dropped before it is written
   * (ChainFull), the chain unchanged. Returns the bytes the batch wrote (its puts).
   */
  private async connectBlock(stored: StoredBlock, slicer = new Slicer(), limit?: number): Promise<number> {
    const { block } = stored;
    const confirmed: Hex[] = [];
    const conflicts = new Set<Hex>();
    // The UTXO changes of this block (null: spent), so a transaction can spend an output
    // created earlier in the same block.
    const utxoView = new Map<string, Utxo | null>();
    // The spent outputs read from the database (not created in this block): their deletion frees bytes.
    const spentStored = new Map<string, Utxo>();
    const walletOps = new Map<string, StoreOp>();
    const ops: StoreOp[] = [];
    for (let index = 0; index < block.transactions.length; index++) {
      const tx = block.transactions[index] as Transaction;
      const spent: Utxo[] = [];
      await slicer.tick();
      for (const input of tx.inputs) {
        if (input.coinbase) continue;
        await slicer.tick();
        const key = outpointKey(input.txid, input.vout);
        const inBlock = utxoView.has(key);
        const utxo = inBlock ? utxoView.get(key) : await this.readUtxo(key);
        // Blocks are built only from mempool transactions checked against this UTXO set.
        if (utxo === undefined || utxo === null) throw new Error(`internal error: block spends missing output ${key}`);
        spent.push(utxo);
        utxoView.set(key, null);
        if (!inBlock) spentStored.set(key, utxo);
        if (this.wallet.owns(utxo.script_pubkey)) {
          const wkey = walletKey(utxo.height, key);
          walletOps.set(wkey, { type: "del", sub: "w", key: wkey, ...(inBlock ? {} : { value: walletCoin(utxo) }) });
        }
        // Blocks mined from a conflict-free mempool never trigger this; it is the rule for
        // any block that confirms a different spend of an output a mempool transaction spends.
        const spender = this.mempool.spenderOf(key);
        if (spender !== undefined && spender !== tx.txid) conflicts.add(spender);
      }
      stored.undo[index] = spent;
      // Output by output in slices too: one transaction may have 40,000 of them (a wide
      // coinbase held the loop 100-250 ms here in one stretch).
      for (let vout = 0; vout < tx.outputs.length; vout++) {
        const output = tx.outputs[vout]!;
        const pause = slicer.tick();
        if (pause) await pause;
        if (output.script_pubkey.startsWith("6a")) continue; // OP_RETURN: provably unspendable
        const key = outpointKey(tx.txid, vout);
        const utxo = utxoOf(tx, vout, block.height, index);
        utxoView.set(key, utxo);
        if (this.wallet.owns(output.script_pubkey)) {
          const wkey = walletKey(block.height, key);
          walletOps.set(wkey, { type: "put", sub: "w", key: wkey, value: walletCoin(utxo) });
        }
      }
      ops.push({ type: "put", sub: "t", key: tx.txid, value: txLocation(block.hash, index) });
      if (this.mempool.has(tx.txid)) confirmed.push(tx.txid);
    }
    for (const [key, utxo] of utxoView) {
      ops.push(utxo === null ? { type: "del", sub: "u", key, value: spentStored.get(key) } : { type: "put", sub: "u", key, value: utxo });
      const pause = slicer.tick();
      if (pause) await pause;
    }
    ops.push(...walletOps.values());
    const state = this.stateRecord(block.hash, block.height);
    ops.push(
      { type: "put", sub: "b", key: block.hash, value: blockRecord(stored) },
      { type: "put", sub: "h", key: heightKey(block.height), value: heightEntry(stored) },
      { type: "put", sub: "s", key: "state", value: state },
    );
    // The state record carries what the database holds after this batch (./store.ts write);
    // past `limit` the batch is dropped before it is written.
    let written = 0;
    let holds = this.storedBytes;
    await this.writeAndCache(ops, utxoView, slicer, (bytes) => {
      holds = this.storedBytes + bytes.written - bytes.freed;
      if (limit !== undefined && holds > limit && holds > this.storedBytes) throw new ChainFull(block.size, holds - this.storedBytes);
      written = bytes.written;
      if (this.counted) state.liveBytes = holds;
      else state.storedBytes = holds;
    });
    this.storedBytes = holds;
    this.blocks.set(this.tipBlock.block.hash, this.tipBlock);
    this.tipBlock = stored;
    this.headers.push(summaryOf(stored));
    if (this.headers.length > HEADER_WINDOW) this.headers.shift();

    // One event each, to every subscriber: a block confirming 15,000 mempool transactions is
    // 15,000 publishes, so these run in slices too.
    for (const txid of confirmed) {
      this.removeFromMempool(txid, "block");
      await slicer.tick();
    }
    for (const txid of conflicts) {
      this.removeFromMempool(txid, "conflict");
      await slicer.tick();
    }
    this.emit("NewBlock", {
      hash: block.hash,
      height: block.height,
      time: block.header.time,
      tx_count: block.transactions.length,
    });
    return written;
  }

  /** Disconnect the tip: one database batch restoring the UTXOs it spent, then memory, then the event. */
  private async disconnectTip(): Promise<StoredBlock> {
    const stored = this.tip;
    const parent = await this.loadBlock(stored.block.header.prev_hash);
    if (parent === undefined || stored.block.height === 0) throw new Error(`internal error: the parent of block ${stored.block.hash} is missing`);
    const txs = stored.block.transactions;
    const height = stored.block.height;
    const utxoView = new Map<string, Utxo | null>();
    const walletOps = new Map<string, StoreOp>();
    const ops: StoreOp[] = [];
    // Outputs of this block spent in it were never in the database: deleting them frees nothing.
    const spentInBlock = new Set<string>();
    for (const spent of stored.undo) for (const u of spent) if (u.height === height) spentInBlock.add(outpointKey(u.txid, u.vout));
    // In slices, as connecting is: a block of 15,000 transactions, or one of 40,000 outputs.
    const slicer = new Slicer();
    for (let index = txs.length - 1; index >= 0; index--) {
      const tx = txs[index] as Transaction;
      for (let vout = 0; vout < tx.outputs.length; vout++) {
        const pause = slicer.tick();
        if (pause) await pause;
        const output = tx.outputs[vout]!;
        const key = outpointKey(tx.txid, vout);
        // As connectBlock put it: what its deletion frees.
        const held = output.script_pubkey.startsWith("6a") || spentInBlock.has(key) ? undefined : utxoOf(tx, vout, height, index);
        utxoView.set(key, null);
        ops.push({ type: "del", sub: "u", key, ...(held ? { value: held } : {}) });
        if (this.wallet.owns(output.script_pubkey)) {
          const wkey = walletKey(height, key);
          walletOps.set(wkey, { type: "del", sub: "w", key: wkey, ...(held ? { value: walletCoin(held) } : {}) });
        }
      }
      ops.push({ type: "del", sub: "t", key: tx.txid, value: txLocation(stored.block.hash, index) });
      for (const utxo of stored.undo[index] ?? []) {
        const pause = slicer.tick();
        if (pause) await pause;
        const key = outpointKey(utxo.txid, utxo.vout);
        utxoView.set(key, utxo);
        if (this.wallet.owns(utxo.script_pubkey)) {
          const wkey = walletKey(utxo.height, key);
          walletOps.set(wkey, { type: "put", sub: "w", key: wkey, value: { value: utxo.value, coinbase: utxo.coinbase } });
        }
      }
    }
    for (const [key, utxo] of utxoView) {
      // The outputs it created are deleted above (with what each frees): only the restored ones here.
      if (utxo !== null) ops.push({ type: "put", sub: "u", key, value: utxo });
      const pause = slicer.tick();
      if (pause) await pause;
    }
    ops.push(...walletOps.values());
    const state = this.stateRecord(parent.block.hash, parent.block.height);
    ops.push(
      { type: "del", sub: "h", key: heightKey(height), value: heightEntry(stored) },
      { type: "put", sub: "s", key: "state", value: state },
    );
    let holds = this.storedBytes;
    await this.writeAndCache(ops, utxoView, slicer, (bytes) => {
      holds = this.storedBytes + bytes.written - bytes.freed;
      if (this.counted) state.liveBytes = holds;
      else state.storedBytes = holds;
    });
    this.storedBytes = holds;
    this.blocks.set(stored.block.hash, stored);
    this.blocks.delete(parent.block.hash);
    this.tipBlock = parent;
    this.headers.pop();
    if (this.headers.length < 11 && (this.headers[0]?.height ?? 0) > 0) await this.refillHeaders();
    this.emit("BlockDisconnected", { hash: stored.block.hash, height: stored.block.height });
    return stored;
  }

  private async acceptToMempool(tx: Transaction): Promise<MempoolRecord> {
    if (tx.inputs.length === 0 || tx.outputs.length === 0) throw new Error("transaction has no inputs or no outputs");
    if (tx.inputs.some((input) => input.coinbase)) throw new Error("a coinbase transaction is only valid in a block");
    if (this.mempool.has(tx.txid)) throw new Error(`transaction ${tx.txid} is already in the mempool`);
    if ((await this.store.tx(tx.txid)) !== undefined) throw new Error(`transaction ${tx.txid} is already confirmed`);
    if (tx.weight > BLOCK_TX_WEIGHT) throw new Error(`transaction weight ${tx.weight} does not fit in a block`);
    const keys = tx.inputs.map((input) => outpointKey(input.txid, input.vout));
    if (new Set(keys).size !== keys.length) throw new Error("transaction spends the same output twice");

    const inputValue = await this.checkSpends(tx);
    let outputValue = 0;
    for (const output of tx.outputs) {
      if (output.value > MAX_MONEY) throw new Error(`output value ${output.value} exceeds the money supply`);
      outputValue += output.value;
    }
    if (outputValue > MAX_MONEY) throw new Error(`total output value ${outputValue} exceeds the money supply`);
    if (outputValue > inputValue) {
      throw new Error(`outputs (${outputValue} sats) exceed inputs (${inputValue} sats)`);
    }

    const record: MempoolRecord = { tx: deepFreeze(tx), fee: inputValue - outputValue, time: Math.floor(this.now()) };
    // Bounded: a full mempool takes it only in place of lower fee rates (throws, evicting nothing, otherwise).
    const slicer = new Slicer();
    for (const low of this.mempool.evictionsFor(record)) {
      this.removeFromMempool(low.tx.txid, "evicted");
      await slicer.tick();
    }
    this.mempool.add(record);
    const { txid, fee, vsize, fee_rate } = mempoolEntry(record);
    this.emit("MempoolTransactionAdded", { txid, fee, vsize, fee_rate });
    return record;
  }

  /**
   * Check a transaction could go in the next block: final, and every input a confirmed,
   * mature UTXO that no other mempool transaction spends. Returns the input value.
   */
  private async checkSpends(tx: Transaction): Promise<number> {
    const nextHeight = this.height + 1;
    if (!isFinal(tx, nextHeight, this.medianTimePast(this.height))) throw new Error(`transaction is not final at height ${nextHeight}`);
    let value = 0;
    for (const input of tx.inputs) {
      const key = outpointKey(input.txid, input.vout);
      const utxo = await this.readUtxo(key);
      if (utxo === undefined) throw new Error(`input ${key} does not spend an unspent confirmed output`);
      const spender = this.mempool.spenderOf(key);
      if (spender !== undefined && spender !== tx.txid) {
        throw new Error(`input ${key} conflicts with mempool transaction ${spender}`);
      }
      if (utxo.coinbase && nextHeight - utxo.height < COINBASE_MATURITY) {
        throw new Error(
          `input ${key} spends a coinbase output from height ${utxo.height}, immature until height ${utxo.height + COINBASE_MATURITY}`,
        );
      }
      value += utxo.value;
    }
    return value;
  }

  private async spendsAreValid(tx: Transaction): Promise<boolean> {
    try {
      await this.checkSpends(tx);
      return true;
    } catch {
      return false;
    }
  }

  private removeFromMempool(txid: Hex, reason: ChainEvents["MempoolTransactionRemoved"]["reason"]): void {
    if (this.mempool.remove(txid) === undefined) return;
    this.emit("MempoolTransactionRemoved", { txid, reason });
  }

  /** The oldest mature, confirmed wallet UTXO worth at least `minValue` not spent in the mempool. */
  private async spendableWalletUtxo(minValue: number): Promise<Utxo | undefined> {
    const nextHeight = this.height + 1;
    for await (const { outpoint, height, coin } of this.store.walletCoins()) {
      if (coin.value < minValue || this.mempool.spenderOf(outpoint) !== undefined) continue;
      // Coins are in height order: from here on every coinbase is immature.
      if (coin.coinbase && nextHeight - height < COINBASE_MATURITY) continue;
      const utxo = await this.readUtxo(outpoint);
      if (utxo !== undefined) return utxo;
    }
    return undefined;
  }

  private async confirmedTransaction(txid: Hex): Promise<Transaction | undefined> {
    const location = await this.store.tx(txid);
    if (location === undefined) return undefined;
    return (await this.loadBlock(location.hash))?.block.transactions[location.index];
  }

  /** Median time of the (up to) 11 blocks ending at `height`, one of the recent blocks in memory. */
  private medianTimePast(height: number): number {
    const first = (this.headers[0] as HeaderSummary).height;
    const end = height - first + 1;
    if (end < 1 || end > this.headers.length || (first > 0 && end < 11)) {
      throw new Error(`internal error: median time past of height ${height} is outside the header window ${first}..${first + this.headers.length - 1}`);
    }
    const times = this.headers
      .slice(Math.max(0, end - 11), end)
      .map((summary) => summary.time)
      .sort((a, b) => a - b);
    return times[Math.floor(times.length / 2)] as number;
  }

  /** Hashes per second: the work of the last blocks (genesis excluded) over their time span. */
  private estimateHashRate(): number {
    const recent = this.headers.filter((summary) => summary.height > 0).slice(-HASH_RATE_BLOCKS);
    const first = recent[0];
    const last = recent[recent.length - 1];
    if (first === undefined || last === undefined) return 0;
    const span = last.time - first.time;
    return span > 0 ? Number(last.chainWork - first.chainWork) / span : 0;
  }
}

/** Upper bound of a one-input P2WPKH transaction's fee: at most 13 vB of overhead (10.5, plus 2 for a 3-byte output count), 68 for the input, 31 per output (payments + change). */
function feeBound(feeRate: number, outputs: number): number {
  return Math.ceil(feeRate * (13 + 68 + 31 * (outputs + 1)));
}

function summaryOf(stored: StoredBlock): HeaderSummary {
  return { hash: stored.block.hash, height: stored.block.height, time: stored.block.header.time, chainWork: stored.chainWork, sizes: sizesOf(stored) };
}

/** A block's size and its largest transaction's, worked out once per block. */
const sizes = new WeakMap<StoredBlock, { size: number; largestTx: number }>();
function sizesOf(stored: StoredBlock): { size: number; largestTx: number } {
  let known = sizes.get(stored);
  if (known === undefined) {
    let largestTx = 0;
    for (const tx of stored.block.transactions) largestTx = Math.max(largestTx, tx.size);
    known = Object.freeze({ size: stored.block.size, largestTx });
    sizes.set(stored, known);
  }
  return known;
}

function blockRecord(stored: StoredBlock): BlockRecord {
  const raw = stored.raw ?? bytesOfRaw(stored.block.hex);
  return { height: stored.block.height, raw, fees: stored.fees, undo: stored.undo, work: stored.chainWork.toString() };
}

/** A block read back from the database, in slices (a full block would otherwise hold the loop for its whole decoding). */
async function storedFromRecord(record: BlockRecord): Promise<StoredBlock> {
  const parsed = await parseBlock(record.raw, { maxWeight: Number.MAX_SAFE_INTEGER });
  const stored = await storeParsedBlock(parsed, record.height, record.fees, 0n, new Slicer());
  return { ...stored, undo: record.undo, chainWork: BigInt(record.work) };
}

/** The bytes of what a module or remote party submitted: binary as is, hex decoded (natively; a bad digit is refused). */
function rawOf(hexOrBytes: Hex | Uint8Array, what: string): Uint8Array {
  const size = hexOrBytes instanceof Uint8Array ? hexOrBytes.length : typeof hexOrBytes === "string" ? hexOrBytes.length / 2 : -1;
  if (size < 0) throw new ParseError("expected the raw bytes, or their hex");
  // Checked before any decoding: a block is at most 4 MB (weight 4,000,000, every byte at least weight 1).
  if (size > MAX_TX_BYTES) throw new ParseError(`the ${what} is ${Math.ceil(size)} bytes, more than a block holds (${MAX_TX_BYTES})`);
  if (hexOrBytes instanceof Uint8Array) return hexOrBytes;
  // Buffer's decoder stops at the first pair that is not hex: a shorter result means a bad digit.
  const bytes = Buffer.from(hexOrBytes, "hex");
  if (hexOrBytes.length % 2 !== 0 || bytes.length * 2 !== hexOrBytes.length) throw new ParseError("expected hex: an even number of 0-9a-f characters");
  return bytes;
}

/** The `k`-th smallest value of `a` (0-based), by quickselect (Hoare partitions; `a` is reordered). */
export function nthSmallest(a: Float64Array, k: number): number {
  let lo = 0;
  let hi = a.length - 1;
  while (lo < hi) {
    const pivot = a[(lo + hi) >>> 1] as number;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while ((a[i] as number) < pivot) i++;
      while ((a[j] as number) > pivot) j--;
      if (i <= j) {
        const x = a[i] as number;
        a[i] = a[j] as number;
        a[j] = x;
        i++;
        j--;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else break;
  }
  return a[k] as number;
}

function assertCount(what: string, value: number): void {
  if (!Number.isInteger(value) || value < 0) throw new RangeError(`${what} must be a non-negative integer, got ${value}`);
}

/** A UTXO record as connectBlock puts it (and disconnectTip counts its deletion): the same fields in the same order. */
function utxoOf(tx: Transaction, vout: number, height: number, index: number): Utxo {
  const output = tx.outputs[vout]!;
  return { txid: tx.txid, vout, value: output.value, script_pubkey: output.script_pubkey, address: output.address, height, coinbase: index === 0 };
}

function walletCoin(utxo: Utxo): { value: number; coinbase: boolean } {
  return { value: utxo.value, coinbase: utxo.coinbase };
}

function txLocation(hash: Hex, index: number): { hash: Hex; index: number } {
  return { hash, index };
}

function heightEntry(stored: StoredBlock): { hash: Hex; time: number; work: string } {
  return { hash: stored.block.hash, time: stored.block.header.time, work: stored.chainWork.toString() };
}

/** A submitted block whose batch would pass max_chain_mb: dropped before it is written. */
class ChainFull extends Error {
  constructor(readonly size: number, readonly adds: number) {
    super(`the block would add ${adds} bytes past the chain's limit`);
  }
}
