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

import { bytesToHex, hexToBytes, utf8ToBytes } from "@noble/hashes/utils.js";
import { Script } from "@scure/btc-signer";
import type {
  Block,
  BlockHeader,
  BlockTemplate,
  ChainBackend,
  ChainEventName,
  ChainEvents,
  ChainInfo,
  ChainListener,
  Hex,
  MempoolEntry,
  MempoolInfo,
  NetworkStats,
  OutPoint,
  PeerInfo,
  SubmitBlockResult,
  Transaction,
  Utxo,
} from "./backend.ts";
import {
  BLOCK_TX_WEIGHT,
  COINBASE_MATURITY,
  FINAL_SEQUENCE,
  MAX_MONEY,
  REGTEST_BITS,
  type StoredBlock,
  blockSubsidy,
  coinbaseTransaction,
  genesisBlock,
  mineBlock,
  storeBlock,
} from "./blocks.ts";
import {
  type RawTransaction,
  decodeBlock,
  describeTransaction,
  decodeTransaction,
  difficultyFromBits,
  displayHex,
  internalBytes,
  merkleRoot,
  targetFromBits,
  witnessCommitment,
} from "./serialise.ts";
import { Wallet, type Payment } from "./wallet.ts";

const LOCKTIME_THRESHOLD = 500_000_000;
/** Header version of templates: BIP9 version bits, nothing signalled (as the embedded miner). */
const TEMPLATE_VERSION = 0x20000000;
const MAX_BLOCK_WEIGHT = 4_000_000;
/** Blocks may be at most this many seconds ahead of the clock (bitcoind: two hours). */
const MAX_FUTURE_BLOCK_TIME = 2 * 60 * 60;
/** OP_RETURN OP_PUSHBYTES_36 0xaa21a9ed: the BIP141 witness commitment output prefix. */
const WITNESS_COMMITMENT_PREFIX = "6a24aa21a9ed";
const NULL_TXID_HEX = "00".repeat(32);
const NULL_VOUT = 0xffffffff;
const DEFAULT_SEED = utf8ToBytes("modhost embedded regtest chain");

/** Smallest output createTransaction makes (well above P2WPKH dust, 294 sats). */
const MIN_CREATED_OUTPUT = 1_000;
const MAX_CREATED_OUTPUTS = 1_000;
/** Recent blocks whose confirmed fee rates inform estimateFee and hash-rate estimation. */
const FEE_HISTORY_BLOCKS = 10;
const HASH_RATE_BLOCKS = 120;

export interface EmbeddedChainOptions {
  /** Blocks mined after genesis at creation (default 101, so coinbases can be spent). */
  matureBlocks?: number;
  /** Clock in Unix seconds (default Date.now() / 1000). Block times never go below MTP + 1. */
  now?: () => number;
  /** Seed for the wallet keys and random choices (default a fixed seed). */
  seed?: Uint8Array;
}

interface MempoolRecord {
  tx: Transaction;
  fee: number;
  time: number;
}

export class EmbeddedChain implements ChainBackend {
  readonly name = "embedded-regtest";
  /** The wallet's main regtest address: coinbases and change pay here. */
  readonly walletAddress: string;

  private readonly now: () => number;
  private readonly wallet: Wallet;
  private readonly listeners = new Set<ChainListener>();
  /** The active chain, indexed by height. */
  private readonly chain: StoredBlock[] = [];
  /** Every block ever built, including ones reorganised away (like bitcoind's block index). */
  private readonly byHash = new Map<Hex, StoredBlock>();
  /** Confirmed transactions of the active chain: txid -> block hash and position. */
  private readonly txIndex = new Map<Hex, { hash: Hex; index: number }>();
  private readonly utxos = new Map<string, Utxo>();
  private readonly mempool = new Map<Hex, MempoolRecord>();
  /** Outpoints spent by mempool transactions -> the spending txid. */
  private readonly mempoolSpends = new Map<string, Hex>();
  /** Coinbase extra nonce, never reused, so blocks rebuilt at a height get new hashes. */
  private extraNonce = 0;

  private constructor(opts: EmbeddedChainOptions) {
    this.now = opts.now ?? (() => Date.now() / 1000);
    this.wallet = new Wallet(opts.seed ?? DEFAULT_SEED);
    this.walletAddress = this.wallet.mainAddress;
    const genesis = genesisBlock();
    // Like bitcoind, the genesis coinbase is neither indexed nor added to the UTXO set.
    this.chain.push(genesis);
    this.byHash.set(genesis.block.hash, genesis);
  }

  static async create(opts: EmbeddedChainOptions = {}): Promise<EmbeddedChain> {
    const matureBlocks = opts.matureBlocks ?? COINBASE_MATURITY + 1;
    assertCount("matureBlocks", matureBlocks);
    const chain = new EmbeddedChain(opts);
    chain.mineBlocks(matureBlocks, false);
    return chain;
  }

  // ---- Mining and reorganisation ----

  /** Mine `count` blocks on the tip, by default filling them from the mempool. */
  async mine(count = 1, opts: { includeMempool?: boolean } = {}): Promise<Hex[]> {
    assertCount("count", count);
    return this.mineBlocks(count, opts.includeMempool ?? true);
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
    const height = this.height;
    if (!Number.isInteger(depth) || depth < 1 || depth > height) {
      throw new RangeError(`reorg depth must be an integer from 1 to the chain height ${height}, got ${depth}`);
    }
    const newBlocks = opts.newBlocks ?? depth + 1;
    assertCount("newBlocks", newBlocks);

    const oldTip = this.tip.block.hash;
    const removed: StoredBlock[] = [];
    for (let i = 0; i < depth; i++) removed.push(this.disconnectTip());

    for (const [txid, record] of [...this.mempool]) {
      if (!this.spendsAreValid(record.tx)) this.removeFromMempool(txid, "reorg");
    }
    for (const stored of removed.slice().reverse()) {
      for (const tx of stored.block.transactions.slice(1)) {
        try {
          this.acceptToMempool(tx);
        } catch {
          // Invalid on the shorter chain (say it spent a disconnected coinbase): dropped.
        }
      }
    }

    const disconnected = removed.map((stored) => stored.block.hash);
    const connected = this.mineBlocks(newBlocks, opts.includeMempool ?? false);
    this.emit("ChainReorg", {
      old_tip: oldTip,
      new_tip: this.tip.block.hash,
      fork_height: height - depth,
      disconnected,
      connected,
    });
    return { disconnected, connected };
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
    const feeRate = opts.feeRate ?? 1 + Math.floor(this.wallet.random() * 50);
    if (!Number.isFinite(feeRate) || feeRate <= 0) throw new RangeError(`feeRate must be positive, got ${feeRate}`);

    // Upper bound of a one-input P2WPKH transaction's vsize: at most 13 vB of overhead (10.5,
    // plus 2 for a 3-byte output count), 68 for the input, 31 per output.
    const feeBound = Math.ceil(feeRate * (13 + 68 + 31 * (outputs + 1)));
    const minValue = feeBound + (outputs + 1) * MIN_CREATED_OUTPUT;
    const utxo = this.spendableWalletUtxo(minValue);
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
    let fee = feeBound;
    for (let attempt = 0; ; attempt++) {
      const tx = sign(fee);
      const exact = Math.ceil(feeRate * tx.vsize);
      if (exact === fee || (exact < fee && attempt >= 3)) return this.acceptToMempool(tx).tx.txid;
      fee = exact;
    }
  }

  /**
   * Accept an externally built transaction into the mempool. Every input must spend a
   * confirmed UTXO that no mempool transaction spends (mature, if a coinbase output), and
   * outputs must not exceed inputs. Scripts and signatures are not checked.
   */
  async submitTransaction(hex: Hex): Promise<Hex> {
    let raw: RawTransaction;
    try {
      raw = decodeTransaction(hexToBytes(hex));
    } catch (err) {
      throw new Error(`transaction decode failed: ${(err as Error).message}`);
    }
    return this.acceptToMempool(describeTransaction(raw)).tx.txid;
  }

  // ---- Mining: templates and submitted blocks ----

  /** A template for the next block, filled from the mempool as the embedded miner would. */
  async getBlockTemplate(opts: { coinbaseScript?: Hex } = {}): Promise<BlockTemplate> {
    const parent = this.tip;
    const height = parent.block.height + 1;
    const selected = this.selectFromMempool();
    const coinbaseValue = blockSubsidy(height) + selected.reduce((sum, record) => sum + record.fee, 0);
    const wtxids = selected.map((record) => record.tx.wtxid);
    const minTime = this.medianTimePast(parent.block.height) + 1;
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
      default_witness_commitment: WITNESS_COMMITMENT_PREFIX + bytesToHex(witnessCommitment(wtxids, new Uint8Array(32))),
    };
    if (opts.coinbaseScript !== undefined) {
      const coinbase = describeTransaction(
        coinbaseTransaction(height, this.extraNonce++, coinbaseValue, hexToBytes(opts.coinbaseScript), wtxids),
      );
      template.coinbase_tx = { txid: coinbase.txid, hex: coinbase.hex };
    }
    return template;
  }

  /**
   * Check a serialised block and connect it on the tip. The checks are bitcoind's, minus
   * script execution (as for the mempool): proof of work against the block's bits, bits as
   * the chain requires, parent = the active tip (a block building on another known block is
   * rejected: side branches are not kept), time after the median time past and at most two
   * hours ahead, version, a single coinbase first with the BIP34 height, merkle root, no
   * duplicate transactions, weight, finality, every input spending an unspent output (of the
   * UTXO set or earlier in the block) with coinbase maturity, outputs within inputs, the
   * coinbase paying at most subsidy + fees, and the BIP141 witness commitment. An accepted
   * block emits the same events as a mined one.
   */
  async submitBlock(hex: Hex): Promise<SubmitBlockResult> {
    let decoded: ReturnType<typeof decodeBlock>;
    try {
      decoded = decodeBlock(hexToBytes(hex));
    } catch (err) {
      return { result: "rejected", reason: `bad-block-decode: the block could not be decoded (${(err as Error).message})` };
    }
    const hash = decoded.header.hash;
    if (this.byHash.has(hash)) return { result: "duplicate", hash };
    let stored: StoredBlock;
    try {
      stored = this.checkBlock(decoded);
    } catch (err) {
      if (err instanceof BlockRejected) return { result: "rejected", reason: err.message, hash };
      throw err;
    }
    this.connectBlock(stored);
    return { result: "accepted", hash };
  }

  private checkBlock({ header, transactions: raws }: ReturnType<typeof decodeBlock>): StoredBlock {
    const reject = (code: string, why: string): never => {
      throw new BlockRejected(`${code}: ${why}`);
    };
    const { hash, ...fields } = header;

    // The header.
    const target = targetFromBits(header.bits);
    if (target === 0n || BigInt(`0x${hash}`) > target) {
      reject("high-hash", `the block hash ${hash} is above the target of its bits 0x${header.bits.toString(16)} (proof of work failed)`);
    }
    const parent = this.tip;
    if (header.prev_hash !== parent.block.hash) {
      const known = this.byHash.get(header.prev_hash);
      if (known !== undefined) {
        reject("not-on-tip", `the block builds on ${header.prev_hash} (height ${known.block.height}), not on the active tip ${parent.block.hash} (height ${parent.block.height}); side branches are not supported`);
      }
      reject("prev-blk-not-found", `the parent block ${header.prev_hash} is unknown`);
    }
    const height = parent.block.height + 1;
    if (header.bits !== REGTEST_BITS) reject("bad-diffbits", `bits 0x${header.bits.toString(16)}, the chain requires 0x${REGTEST_BITS.toString(16)}`);
    const mtp = this.medianTimePast(parent.block.height);
    if (header.time <= mtp) reject("time-too-old", `block time ${header.time} is not after the median time past ${mtp}`);
    if (header.time > Math.floor(this.now()) + MAX_FUTURE_BLOCK_TIME) reject("time-too-new", `block time ${header.time} is more than two hours in the future`);
    if (header.version < 4) reject("bad-version", `version ${header.version} is obsolete (BIP34, BIP66 and BIP65 need at least 4)`);

    // The transactions, structurally.
    if (raws.length === 0) reject("bad-blk-length", "the block has no transactions");
    let txs: Transaction[] = [];
    try {
      txs = raws.map((raw) => describeTransaction(raw));
    } catch (err) {
      reject("bad-txns", `a transaction could not be encoded (${(err as Error).message})`);
    }
    const root = displayHex(merkleRoot(txs.map((tx) => internalBytes(tx.txid))));
    if (root !== header.merkle_root) reject("bad-txnmrklroot", `the merkle root is ${header.merkle_root}, the transactions give ${root}`);
    if (new Set(txs.map((tx) => tx.txid)).size !== txs.length) reject("bad-txns-duplicate", "a transaction appears twice");
    const coinbase = txs[0] as Transaction;
    if (!(coinbase.inputs[0]?.coinbase ?? false)) reject("bad-cb-missing", "the first transaction is not a coinbase");
    for (const tx of txs) {
      if (tx.inputs.length === 0) reject("bad-txns-vin-empty", `transaction ${tx.txid} has no inputs`);
      if (tx.outputs.length === 0) reject("bad-txns-vout-empty", `transaction ${tx.txid} has no outputs`);
      let total = 0;
      for (const output of tx.outputs) {
        if (output.value > MAX_MONEY) reject("bad-txns-vout-toolarge", `transaction ${tx.txid} has an output above the money supply`);
        total += output.value;
      }
      if (total > MAX_MONEY) reject("bad-txns-txouttotal-toolarge", `transaction ${tx.txid} pays out more than the money supply`);
      const keys = tx.inputs.map((input) => outpointKey(input.txid, input.vout));
      if (new Set(keys).size !== keys.length) reject("bad-txns-inputs-duplicate", `transaction ${tx.txid} spends the same output twice`);
      if (tx !== coinbase && tx.inputs.some((input) => input.txid === NULL_TXID_HEX && input.vout === NULL_VOUT)) {
        reject(tx.inputs.length === 1 ? "bad-cb-multiple" : "bad-txns-prevout-null", `transaction ${tx.txid} has a coinbase input but is not first`);
      }
      if (!this.isFinal(tx, height)) reject("bad-txns-nonfinal", `transaction ${tx.txid} is not final at height ${height}`);
    }
    const scriptSig = coinbase.inputs[0]?.script_sig ?? "";
    if (scriptSig.length < 4 || scriptSig.length > 200) reject("bad-cb-length", "the coinbase scriptSig must be 2 to 100 bytes");
    const heightPush = bytesToHex(Script.encode([height]));
    if (!scriptSig.startsWith(heightPush)) reject("bad-cb-height", `the coinbase scriptSig must start with the block height ${height} (BIP34: ${heightPush})`);

    // BIP141: a block with witness data commits to it in the coinbase's last commitment output.
    const commitment = [...coinbase.outputs].reverse().find((o) => o.script_pubkey.length >= 76 && o.script_pubkey.startsWith(WITNESS_COMMITMENT_PREFIX));
    if (commitment !== undefined) {
      const reserved = coinbase.inputs[0]?.witness ?? [];
      if (reserved.length !== 1 || (reserved[0] as string).length !== 64) {
        reject("bad-witness-nonce-size", "the coinbase witness must be one 32-byte reserved value");
      }
      const expected = bytesToHex(witnessCommitment(txs.slice(1).map((tx) => tx.wtxid), hexToBytes(reserved[0] as string)));
      if (commitment.script_pubkey.slice(12, 76) !== expected) reject("bad-witness-merkle-match", "the witness commitment does not match the transactions");
    } else if (txs.some((tx) => tx.inputs.some((input) => input.witness.length > 0))) {
      reject("unexpected-witness", "the block has witness data but no witness commitment");
    }

    // Against the UTXO set, in block order: outputs created earlier in the block are spendable.
    const created = new Map<string, { value: number; height: number; coinbase: boolean }>();
    const spent = new Set<string>();
    const addOutputs = (tx: Transaction, isCoinbase: boolean) => tx.outputs.forEach((output, vout) => {
      if (!output.script_pubkey.startsWith("6a")) created.set(outpointKey(tx.txid, vout), { value: output.value, height, coinbase: isCoinbase });
    });
    const fees = [0];
    let totalFees = 0;
    addOutputs(coinbase, true);
    for (const tx of txs.slice(1)) {
      let inputValue = 0;
      for (const input of tx.inputs) {
        const key = outpointKey(input.txid, input.vout);
        const utxo = spent.has(key) ? undefined : (created.get(key) ?? this.utxos.get(key));
        if (utxo === undefined) reject("bad-txns-inputs-missingorspent", `input ${key} of transaction ${tx.txid} does not spend an unspent output`);
        const coin = utxo as { value: number; height: number; coinbase: boolean };
        if (coin.coinbase && height - coin.height < COINBASE_MATURITY) {
          reject("bad-txns-premature-spend-of-coinbase", `input ${key} of transaction ${tx.txid} spends a coinbase from height ${coin.height}, immature until ${coin.height + COINBASE_MATURITY}`);
        }
        spent.add(key);
        inputValue += coin.value;
      }
      const outputValue = tx.outputs.reduce((sum, output) => sum + output.value, 0);
      if (outputValue > inputValue) reject("bad-txns-in-belowout", `transaction ${tx.txid} pays out ${outputValue} sats from ${inputValue}`);
      fees.push(inputValue - outputValue);
      totalFees += inputValue - outputValue;
      addOutputs(tx, false);
    }
    const paid = coinbase.outputs.reduce((sum, output) => sum + output.value, 0);
    const allowed = blockSubsidy(height) + totalFees;
    if (paid > allowed) reject("bad-cb-amount", `the coinbase pays ${paid} sats, at most ${allowed} (subsidy ${blockSubsidy(height)} + fees ${totalFees}) are allowed`);

    const stored = storeBlock(fields, height, txs, fees, parent.chainWork);
    if (stored.block.weight > MAX_BLOCK_WEIGHT) reject("bad-blk-weight", `block weight ${stored.block.weight} exceeds ${MAX_BLOCK_WEIGHT}`);
    if (stored.block.hash !== hash) reject("bad-block-encoding", "the block does not re-encode to the same header");
    return stored;
  }

  // ---- ChainBackend: blocks and transactions ----

  async getBlock(hash: Hex): Promise<Block | null> {
    const stored = this.byHash.get(hash);
    return stored === undefined ? null : structuredClone(stored.block);
  }

  async getBlockHeader(hash: Hex): Promise<BlockHeader | null> {
    const stored = this.byHash.get(hash);
    return stored === undefined ? null : structuredClone(stored.block.header);
  }

  async getBlockByHeight(height: number): Promise<Block | null> {
    const stored = this.chain[height];
    return stored === undefined ? null : structuredClone(stored.block);
  }

  /** A mempool or confirmed (active chain) transaction. */
  async getTransaction(txid: Hex): Promise<Transaction | null> {
    const tx = this.mempool.get(txid)?.tx ?? this.confirmedTransaction(txid);
    return tx === undefined ? null : structuredClone(tx);
  }

  async hasTransaction(txid: Hex): Promise<boolean> {
    return this.mempool.has(txid) || this.txIndex.has(txid);
  }

  async getChainTip(): Promise<Hex> {
    return this.tip.block.hash;
  }

  async getBlockHeight(): Promise<number> {
    return this.height;
  }

  /** An output of the confirmed UTXO set; mempool spends do not hide it. */
  async getUtxo(outpoint: OutPoint): Promise<Utxo | null> {
    const utxo = this.utxos.get(outpointKey(outpoint.txid, outpoint.vout));
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
    return [...this.mempool.keys()];
  }

  async getMempoolTransaction(txid: Hex): Promise<Transaction | null> {
    const record = this.mempool.get(txid);
    return record === undefined ? null : structuredClone(record.tx);
  }

  async getMempoolEntry(txid: Hex): Promise<MempoolEntry | null> {
    const record = this.mempool.get(txid);
    return record === undefined ? null : mempoolEntry(record);
  }

  /** `size_bytes` is the sum of virtual sizes, like bitcoind's getmempoolinfo "bytes". */
  async getMempoolInfo(): Promise<MempoolInfo> {
    let size = 0;
    let fees = 0;
    for (const record of this.mempool.values()) {
      size += record.tx.vsize;
      fees += record.fee;
    }
    return { transaction_count: this.mempool.size, size_bytes: size, total_fee_sats: fees };
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
    const pending = [...this.mempool.values()].sort(byFeeRateDescending);
    const capacity = targetBlocks * BLOCK_TX_WEIGHT;
    let weight = 0;
    for (const record of pending) {
      weight += record.tx.weight;
      if (weight > capacity) return Math.max(1, Math.ceil(feeRate(record)) + 1);
    }

    const rates = pending.map(feeRate);
    for (const stored of this.chain.slice(-FEE_HISTORY_BLOCKS)) {
      stored.block.transactions.forEach((tx, i) => {
        if (i > 0) rates.push((stored.fees[i] ?? 0) / tx.vsize);
      });
    }
    if (rates.length === 0) return 1;
    rates.sort((a, b) => a - b);
    const index = Math.min(rates.length - 1, Math.floor(rates.length / (2 * targetBlocks)));
    return Math.max(1, Math.ceil(rates[index] as number));
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

  async close(): Promise<void> {
    this.listeners.clear();
  }

  // ---- Internals ----

  private get tip(): StoredBlock {
    return this.chain[this.chain.length - 1] as StoredBlock;
  }

  private get height(): number {
    return this.chain.length - 1;
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

  private mineBlocks(count: number, includeMempool: boolean): Hex[] {
    const hashes: Hex[] = [];
    for (let i = 0; i < count; i++) {
      const parent = this.tip;
      const stored = mineBlock({
        parent,
        transactions: includeMempool ? this.selectFromMempool() : [],
        time: Math.max(Math.floor(this.now()), this.medianTimePast(parent.block.height) + 1),
        extraNonce: this.extraNonce++,
        payoutScript: this.wallet.mainScript,
      });
      this.connectBlock(stored);
      hashes.push(stored.block.hash);
    }
    return hashes;
  }

  /** Highest fee rate first, skipping what no longer fits in the block. */
  private selectFromMempool(): MempoolRecord[] {
    const selected: MempoolRecord[] = [];
    let weight = 0;
    for (const record of [...this.mempool.values()].sort(byFeeRateDescending)) {
      if (weight + record.tx.weight > BLOCK_TX_WEIGHT) continue;
      weight += record.tx.weight;
      selected.push(record);
    }
    return selected;
  }

  private connectBlock(stored: StoredBlock): void {
    const { block } = stored;
    const confirmed: Hex[] = [];
    const conflicts = new Set<Hex>();
    block.transactions.forEach((tx, index) => {
      const spent: Utxo[] = [];
      for (const input of tx.inputs) {
        if (input.coinbase) continue;
        const key = outpointKey(input.txid, input.vout);
        const utxo = this.utxos.get(key);
        // Blocks are built only from mempool transactions checked against this UTXO set.
        if (utxo === undefined) throw new Error(`internal error: block spends missing output ${key}`);
        spent.push(utxo);
        this.utxos.delete(key);
        // Blocks mined from a conflict-free mempool never trigger this; it is the rule for
        // any block that confirms a different spend of an output a mempool transaction spends.
        const spender = this.mempoolSpends.get(key);
        if (spender !== undefined && spender !== tx.txid) conflicts.add(spender);
      }
      stored.undo[index] = spent;
      tx.outputs.forEach((output, vout) => {
        if (output.script_pubkey.startsWith("6a")) return; // OP_RETURN: provably unspendable
        this.utxos.set(outpointKey(tx.txid, vout), {
          txid: tx.txid,
          vout,
          value: output.value,
          script_pubkey: output.script_pubkey,
          address: output.address,
          height: block.height,
          coinbase: index === 0,
        });
      });
      this.txIndex.set(tx.txid, { hash: block.hash, index });
      if (this.mempool.has(tx.txid)) confirmed.push(tx.txid);
    });
    this.chain.push(stored);
    this.byHash.set(block.hash, stored);

    for (const txid of confirmed) this.removeFromMempool(txid, "block");
    for (const txid of conflicts) this.removeFromMempool(txid, "conflict");
    this.emit("NewBlock", {
      hash: block.hash,
      height: block.height,
      time: block.header.time,
      tx_count: block.transactions.length,
    });
  }

  private disconnectTip(): StoredBlock {
    const stored = this.chain.pop() as StoredBlock;
    const txs = stored.block.transactions;
    for (let index = txs.length - 1; index >= 0; index--) {
      const tx = txs[index] as Transaction;
      tx.outputs.forEach((_, vout) => this.utxos.delete(outpointKey(tx.txid, vout)));
      this.txIndex.delete(tx.txid);
      for (const utxo of stored.undo[index] ?? []) this.utxos.set(outpointKey(utxo.txid, utxo.vout), utxo);
    }
    this.emit("BlockDisconnected", { hash: stored.block.hash, height: stored.block.height });
    return stored;
  }

  private acceptToMempool(tx: Transaction): MempoolRecord {
    if (tx.inputs.length === 0 || tx.outputs.length === 0) throw new Error("transaction has no inputs or no outputs");
    if (tx.inputs.some((input) => input.coinbase)) throw new Error("a coinbase transaction is only valid in a block");
    if (this.mempool.has(tx.txid)) throw new Error(`transaction ${tx.txid} is already in the mempool`);
    if (this.txIndex.has(tx.txid)) throw new Error(`transaction ${tx.txid} is already confirmed`);
    if (tx.weight > BLOCK_TX_WEIGHT) throw new Error(`transaction weight ${tx.weight} does not fit in a block`);
    const keys = tx.inputs.map((input) => outpointKey(input.txid, input.vout));
    if (new Set(keys).size !== keys.length) throw new Error("transaction spends the same output twice");

    const inputValue = this.checkSpends(tx);
    let outputValue = 0;
    for (const output of tx.outputs) {
      if (output.value > MAX_MONEY) throw new Error(`output value ${output.value} exceeds the money supply`);
      outputValue += output.value;
    }
    if (outputValue > MAX_MONEY) throw new Error(`total output value ${outputValue} exceeds the money supply`);
    if (outputValue > inputValue) {
      throw new Error(`outputs (${outputValue} sats) exceed inputs (${inputValue} sats)`);
    }

    const record: MempoolRecord = { tx, fee: inputValue - outputValue, time: Math.floor(this.now()) };
    this.mempool.set(tx.txid, record);
    for (const key of keys) this.mempoolSpends.set(key, tx.txid);
    const { txid, fee, vsize, fee_rate } = mempoolEntry(record);
    this.emit("MempoolTransactionAdded", { txid, fee, vsize, fee_rate });
    return record;
  }

  /**
   * Check a transaction could go in the next block: final, and every input a confirmed,
   * mature UTXO that no other mempool transaction spends. Returns the input value.
   */
  private checkSpends(tx: Transaction): number {
    const nextHeight = this.height + 1;
    if (!this.isFinal(tx, nextHeight)) throw new Error(`transaction is not final at height ${nextHeight}`);
    let value = 0;
    for (const input of tx.inputs) {
      const key = outpointKey(input.txid, input.vout);
      const utxo = this.utxos.get(key);
      if (utxo === undefined) throw new Error(`input ${key} does not spend an unspent confirmed output`);
      const spender = this.mempoolSpends.get(key);
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

  private spendsAreValid(tx: Transaction): boolean {
    try {
      this.checkSpends(tx);
      return true;
    } catch {
      return false;
    }
  }

  /** Consensus finality: a non-zero locktime binds only if some input's sequence is not final. */
  private isFinal(tx: Transaction, height: number): boolean {
    if (tx.locktime === 0 || tx.inputs.every((input) => input.sequence === FINAL_SEQUENCE)) return true;
    const limit = tx.locktime < LOCKTIME_THRESHOLD ? height : this.medianTimePast(this.height);
    return tx.locktime < limit;
  }

  private removeFromMempool(txid: Hex, reason: ChainEvents["MempoolTransactionRemoved"]["reason"]): void {
    const record = this.mempool.get(txid);
    if (record === undefined) return;
    this.mempool.delete(txid);
    for (const input of record.tx.inputs) this.mempoolSpends.delete(outpointKey(input.txid, input.vout));
    this.emit("MempoolTransactionRemoved", { txid, reason });
  }

  /** The oldest mature, confirmed wallet UTXO worth at least `minValue` not spent in the mempool. */
  private spendableWalletUtxo(minValue: number): Utxo | undefined {
    const nextHeight = this.height + 1;
    for (const [key, utxo] of this.utxos) {
      if (utxo.value < minValue || !this.wallet.owns(utxo.script_pubkey) || this.mempoolSpends.has(key)) continue;
      if (utxo.coinbase && nextHeight - utxo.height < COINBASE_MATURITY) continue;
      return utxo;
    }
    return undefined;
  }

  private confirmedTransaction(txid: Hex): Transaction | undefined {
    const location = this.txIndex.get(txid);
    if (location === undefined) return undefined;
    return this.byHash.get(location.hash)?.block.transactions[location.index];
  }

  /** Median time of the (up to) 11 blocks ending at `height`. */
  private medianTimePast(height: number): number {
    const times = this.chain
      .slice(Math.max(0, height - 10), height + 1)
      .map((stored) => stored.block.header.time)
      .sort((a, b) => a - b);
    return times[Math.floor(times.length / 2)] as number;
  }

  /** Hashes per second: the work of the last blocks (genesis excluded) over their time span. */
  private estimateHashRate(): number {
    const recent = this.chain.slice(Math.max(1, this.chain.length - HASH_RATE_BLOCKS));
    const first = recent[0];
    const last = recent[recent.length - 1];
    if (first === undefined || last === undefined) return 0;
    const span = last.block.header.time - first.block.header.time;
    return span > 0 ? Number(last.chainWork - first.chainWork) / span : 0;
  }
}

/** A submitted block failed a check; the message is the reason code and an explanation. */
class BlockRejected extends Error {}

function outpointKey(txid: Hex, vout: number): string {
  return `${txid}:${vout}`;
}

function feeRate(record: MempoolRecord): number {
  return record.fee / record.tx.vsize;
}

function byFeeRateDescending(a: MempoolRecord, b: MempoolRecord): number {
  return feeRate(b) - feeRate(a);
}

function mempoolEntry(record: MempoolRecord): MempoolEntry {
  return {
    txid: record.tx.txid,
    fee: record.fee,
    vsize: record.tx.vsize,
    fee_rate: feeRate(record),
    time: record.time,
  };
}

function assertCount(what: string, value: number): void {
  if (!Number.isInteger(value) || value < 0) throw new RangeError(`${what} must be a non-negative integer, got ${value}`);
}
