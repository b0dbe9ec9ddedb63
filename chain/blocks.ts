// Regtest consensus constants and block construction for the embedded chain: the genesis
// block, coinbases (BIP34 height, BIP141 witness commitment) and proof-of-work mining.

import { bytesToHex, concatBytes, hexToBytes, utf8ToBytes } from "@noble/hashes/utils.js";
import { CompactSize, Script } from "@scure/btc-signer";
import type { Block, Hex, Transaction, Utxo } from "./backend.ts";
import {
  type HeaderFields,
  type RawTransaction,
  describeTransaction,
  displayHex,
  encodeBlock,
  encodeHeader,
  grindNonce,
  internalBytes,
  merkleRoot,
  sha256d,
  targetFromBits,
  witnessCommitment,
  workFromBits,
} from "./serialise.ts";
import { type ParsedBlock, merkleRootOf } from "./parse.ts";
import { sealBytes } from "../protocol/codec.ts";
import { Slicer } from "./slices.ts";

export const REGTEST_GENESIS_HASH = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206";
const GENESIS_MERKLE_ROOT = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b";
const GENESIS_MESSAGE = "The Times 03/Jan/2009 Chancellor on brink of second bailout for banks";
const GENESIS_PUBKEY =
  "04678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5f";
const GENESIS_TIME = 1296688602;
const GENESIS_NONCE = 2;

export const REGTEST_BITS = 0x207fffff;
const REGTEST_TARGET = targetFromBits(REGTEST_BITS);
export const COINBASE_MATURITY = 100;
const HALVING_INTERVAL = 150;
const COIN = 100_000_000;
const INITIAL_SUBSIDY = 50 * COIN;
export const MAX_MONEY = 21_000_000 * COIN;
const MAX_BLOCK_WEIGHT = 4_000_000;
/** Weight kept free for the header and coinbase when filling a block (bitcoind's default). */
const RESERVED_BLOCK_WEIGHT = 8_000;
/** Weight available to non-coinbase transactions in a block. */
export const BLOCK_TX_WEIGHT = MAX_BLOCK_WEIGHT - RESERVED_BLOCK_WEIGHT;
/** BIP9 version bits with no deployment signalled, as bitcoind's regtest miner uses. */
const BLOCK_VERSION = 0x20000000;
export const FINAL_SEQUENCE = 0xffffffff;
const NULL_TXID = new Uint8Array(32);
const COINBASE_VOUT = 0xffffffff;
/** OP_RETURN OP_PUSHBYTES_36 0xaa21a9ed: the BIP141 witness commitment output prefix. */
const WITNESS_COMMITMENT_PREFIX = hexToBytes("6a24aa21a9ed");

/** A block with what the chain needs to account for it. */
export interface StoredBlock {
  block: Block;
  /** Fee of each transaction, by position (0 for the coinbase). */
  fees: number[];
  /** For each transaction, the UTXOs it spent, to restore on disconnect. Filled on connect. `block` is frozen. */
  undo: Utxo[][];
  chainWork: bigint;
  /** The serialised block, when the chain has it at hand (a submitted or loaded block): stored as is. */
  raw?: Uint8Array;
}

/** 50 BTC, halving every 150 blocks on regtest; zero once shifted out. */
export function blockSubsidy(height: number): number {
  const halvings = Math.floor(height / HALVING_INTERVAL);
  return halvings >= 64 ? 0 : Math.floor(INITIAL_SUBSIDY / 2 ** halvings);
}

/** The regtest genesis block, built from its components. */
export function genesisBlock(): StoredBlock {
  const coinbase = describeTransaction({
    version: 1,
    segwitFlag: false,
    inputs: [
      {
        txid: NULL_TXID,
        index: COINBASE_VOUT,
        // 486604799 is 0x1d00ffff, mainnet's difficulty-1 bits; then a push of the byte 4.
        finalScriptSig: Script.encode([486604799, new Uint8Array([4]), utf8ToBytes(GENESIS_MESSAGE)]),
        sequence: FINAL_SEQUENCE,
      },
    ],
    outputs: [{ amount: BigInt(INITIAL_SUBSIDY), script: Script.encode([hexToBytes(GENESIS_PUBKEY), "CHECKSIG"]) }],
    witnesses: undefined,
    lockTime: 0,
  });
  const header: HeaderFields = {
    version: 1,
    prev_hash: "00".repeat(32),
    merkle_root: displayHex(merkleRoot([internalBytes(coinbase.txid)])),
    time: GENESIS_TIME,
    bits: REGTEST_BITS,
    nonce: GENESIS_NONCE,
  };
  const genesis = storeBlock(header, 0, [coinbase], [0], 0n);
  if (genesis.block.hash !== REGTEST_GENESIS_HASH || header.merkle_root !== GENESIS_MERKLE_ROOT) {
    throw new Error(`regtest genesis mismatch: built ${genesis.block.hash}`);
  }
  return genesis;
}

export interface BlockTemplate {
  parent: StoredBlock;
  /** Non-coinbase transactions, in block order, with their fees. */
  transactions: { tx: Transaction; fee: number }[];
  time: number;
  /** Pushed after the BIP34 height so blocks rebuilt at one height differ. */
  extraNonce: number;
  payoutScript: Uint8Array;
}

/**
 * Build the coinbase, then grind the nonce until the header meets the regtest target. In
 * slices (`slicer`): a full block's two merkle roots (~32,000 double SHA-256 each) and its
 * encoding held the host's loop 0.3-1 s under load, and a module filling the mempool decides
 * how full the next mined block is.
 */
export async function mineBlock(template: BlockTemplate, slicer = new Slicer()): Promise<StoredBlock> {
  const { parent } = template;
  const height = parent.block.height + 1;
  const fees = template.transactions.map((entry) => entry.fee);
  const reward = blockSubsidy(height) + fees.reduce((sum, fee) => sum + fee, 0);
  const wtxids = template.transactions.map((entry) => entry.tx.wtxid);
  const commitment = sha256d(concatBytes(await merkleRootOf(["00".repeat(32), ...wtxids], slicer), new Uint8Array(32)));
  const coinbase = describeTransaction(
    coinbaseTransaction(height, template.extraNonce, reward, template.payoutScript, wtxids, commitment),
  );
  const transactions = [coinbase, ...template.transactions.map((entry) => entry.tx)];
  const header: HeaderFields = {
    version: BLOCK_VERSION,
    prev_hash: parent.block.hash,
    merkle_root: displayHex(await merkleRootOf(transactions.map((tx) => tx.txid), slicer)),
    time: template.time,
    bits: REGTEST_BITS,
    nonce: 0,
  };
  header.nonce = grindNonce(encodeHeader(header), REGTEST_TARGET);
  const headerBytes = encodeHeader(header);
  // The block's bytes, a transaction at a time (encodeBlock's work, in slices).
  const parts: Uint8Array[] = [headerBytes, CompactSize.encode(BigInt(transactions.length))];
  for (const tx of transactions) {
    parts.push(typeof tx.hex === "string" ? Buffer.from(tx.hex, "hex") : tx.hex);
    const pause = slicer.tick();
    if (pause) await pause;
  }
  return storeBlock(header, height, transactions, [0, ...fees], parent.chainWork, Buffer.concat(parts));
}

/**
 * scriptSig: BIP34 height, then the extra nonce (as bitcoind's miner does). Outputs: the
 * reward, then the BIP141 witness commitment. Witness: the 32-byte reserved value (zeros).
 */
export function coinbaseTransaction(
  height: number,
  extraNonce: number,
  reward: number,
  payoutScript: Uint8Array,
  wtxids: Hex[],
  /** The witness commitment of `wtxids`, when the caller has it (made in slices): not made again. */
  commitment?: Uint8Array,
): RawTransaction {
  const reservedValue = new Uint8Array(32);
  return {
    version: 2,
    segwitFlag: true,
    inputs: [
      {
        txid: NULL_TXID,
        index: COINBASE_VOUT,
        finalScriptSig: Script.encode([height, extraNonce]),
        sequence: FINAL_SEQUENCE,
      },
    ],
    outputs: [
      { amount: BigInt(reward), script: payoutScript },
      { amount: 0n, script: concatBytes(WITNESS_COMMITMENT_PREFIX, commitment ?? witnessCommitment(wtxids, reservedValue)) },
    ],
    witnesses: [[reservedValue]],
    lockTime: 0,
  };
}

function storeBlock(
  header: HeaderFields,
  height: number,
  transactions: Transaction[],
  fees: number[],
  parentWork: bigint,
  encoded?: Uint8Array,
): StoredBlock {
  const headerBytes = encodeHeader(header);
  const hash = displayHex(sha256d(headerBytes));
  const bytes = encoded ?? encodeBlock(
    headerBytes,
    transactions.map((tx) => tx.hex),
  );
  // Weight = 3 x stripped size + total size. Only transactions carry witness data, and a
  // transaction's stripped size is (weight - size) / 3.
  const witnessBytes = transactions.reduce((sum, tx) => sum + tx.size - (tx.weight - tx.size) / 3, 0);
  const block: Block = {
    header: { hash, height, ...header, hex: bytesToHex(headerBytes) },
    hash,
    height,
    size: bytes.length,
    weight: (bytes.length - witnessBytes) * 3 + bytes.length,
    transactions,
    hex: sealBytes(bytes),
  };
  // Frozen: readers get this very object (no copy per reader), so nobody may change it.
  return { block: deepFreeze(block), fees, undo: transactions.map(() => []), chainWork: parentWork + workFromBits(header.bits), raw: bytes };
}

/**
 * The StoredBlock of a block read by parseBlock (./parse.ts): its transactions are already
 * frozen; the bytes it came from are the block's `hex` (binary: no hex is made on the host's
 * loop) and what the database keeps (no re-encoding).
 */
export async function storeParsedBlock(parsed: ParsedBlock, height: number, fees: number[], parentWork: bigint, _slicer: Slicer): Promise<StoredBlock> {
  const { header: { hash, ...fields }, transactions, raw } = parsed;
  let witnessBytes = 0;
  for (const tx of transactions) witnessBytes += tx.size - (tx.weight - tx.size) / 3;
  const block: Block = {
    header: Object.freeze({ hash, height, ...fields, hex: Buffer.from(raw.buffer, raw.byteOffset, 80).toString("hex") }),
    hash,
    height,
    size: raw.length,
    weight: (raw.length - witnessBytes) * 3 + raw.length,
    transactions: Object.freeze(transactions) as Transaction[],
    hex: sealBytes(raw),
  };
  return { block: Object.freeze(block), fees, undo: transactions.map(() => []), chainWork: parentWork + workFromBits(fields.bits), raw };
}

/** Freeze a plain-data value and everything in it. */
export function deepFreeze<T>(value: T): T {
  // A typed array with elements cannot be frozen (a block's raw bytes: sealed instead, sealBytes).
  if (value !== null && typeof value === "object" && !ArrayBuffer.isView(value) && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const key of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[key]);
  }
  return value;
}
