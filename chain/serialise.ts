// Bitcoin wire formats and consensus arithmetic for the embedded chain.
//
// Transactions are encoded and decoded with @scure/btc-signer's RawTx coder; headers,
// blocks, merkle trees, proof-of-work targets and chain work are computed here. Byte order
// follows Bitcoin: hashes are used in internal (little-endian) order inside headers and
// merkle trees and shown byte-reversed ("display order") everywhere else. RawTx already
// stores an input's previous txid in display order.

import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex, concatBytes, hexToBytes } from "@noble/hashes/utils.js";
import { Address, CompactSize, OutScript, RawTx } from "@scure/btc-signer";
import { BTCArray } from "@scure/btc-signer/script.js";
import type { Hex, Transaction } from "./backend.ts";
import { sealBytes } from "../protocol/codec.ts";

/** Regtest address parameters (btc-signer ships main and testnet only). */
export const REGTEST_NETWORK = { bech32: "bcrt", pubKeyHash: 0x6f, scriptHash: 0xc4, wif: 0xef } as const;

/**
 * A transaction as the RawTx coder sees it. Spelled out because btc-signer's published
 * declarations do not resolve their helper types, leaving RawTx's shape as `any`.
 */
export interface RawTransaction {
  version: number;
  segwitFlag: boolean;
  /** `txid` is the previous transaction's id in display order (RawTx reverses it). */
  inputs: { txid: Uint8Array; index: number; finalScriptSig: Uint8Array; sequence: number }[];
  outputs: { amount: bigint; script: Uint8Array }[];
  witnesses: Uint8Array[][] | undefined;
  lockTime: number;
}

const NULL_HASH = new Uint8Array(32);
const COINBASE_VOUT = 0xffffffff;
const TransactionList = BTCArray(RawTx);

export function sha256d(bytes: Uint8Array): Uint8Array {
  return sha256(sha256(bytes));
}

/** Display-order hex of a hash held in internal byte order. */
export function displayHex(internal: Uint8Array): Hex {
  return bytesToHex(Uint8Array.from(internal).reverse());
}

/** Internal-order bytes of a display-order hash. */
export function internalBytes(display: Hex): Uint8Array {
  return hexToBytes(display).reverse();
}

/** The regtest address of an output script, or null (OP_RETURN, bare pubkey, non-standard). */
export function addressOf(script: Uint8Array): string | null {
  try {
    return Address(REGTEST_NETWORK).encode(OutScript.decode(script));
  } catch {
    return null;
  }
}

/** The output script of a regtest address; throws an Error saying why for anything else. */
export function scriptOfAddress(address: string): Uint8Array {
  try {
    return OutScript.encode(Address(REGTEST_NETWORK).decode(address));
  } catch (err) {
    throw new Error(`"${address}" is not a regtest address (bcrt1..., m/n... or 2...): ${(err as Error).message}`);
  }
}

function isCoinbaseInput(input: RawTransaction["inputs"][number]): boolean {
  return input.index === COINBASE_VOUT && input.txid.every((b) => b === 0);
}

/** Serialisation without witness data: what the txid commits to. */
function strippedBytes(raw: RawTransaction): Uint8Array {
  return raw.segwitFlag ? RawTx.encode({ ...raw, segwitFlag: false, witnesses: undefined }) : RawTx.encode(raw);
}

/** Plain-data view of a transaction, with txid, wtxid, size, vsize and weight. */
export function describeTransaction(raw: RawTransaction): Transaction {
  const full = RawTx.encode(raw);
  const stripped = strippedBytes(raw);
  const weight = stripped.length * 3 + full.length;
  const coinbase = raw.inputs.length === 1 && raw.inputs[0] !== undefined && isCoinbaseInput(raw.inputs[0]);
  return {
    txid: displayHex(sha256d(stripped)),
    wtxid: displayHex(sha256d(full)),
    version: raw.version,
    locktime: raw.lockTime,
    inputs: raw.inputs.map((input, i) => ({
      txid: bytesToHex(input.txid),
      vout: input.index,
      script_sig: bytesToHex(input.finalScriptSig),
      sequence: input.sequence,
      witness: (raw.witnesses?.[i] ?? []).map((item) => bytesToHex(item)),
      coinbase,
    })),
    outputs: raw.outputs.map((output) => ({
      value: Number(output.amount),
      script_pubkey: bytesToHex(output.script),
      address: addressOf(output.script),
    })),
    size: full.length,
    vsize: Math.ceil(weight / 4),
    weight,
    // The bytes (binary on the wire; the SDKs make the hex), sealed: they never change.
    hex: sealBytes(full),
  };
}

/** Decode a full transaction; throws on malformed bytes or trailing data. */
export function decodeTransaction(bytes: Uint8Array): RawTransaction {
  return RawTx.decode(bytes) as RawTransaction;
}

export interface HeaderFields {
  version: number;
  prev_hash: Hex;
  merkle_root: Hex;
  time: number;
  bits: number;
  nonce: number;
}

/** The 80-byte block header. */
export function encodeHeader(h: HeaderFields): Uint8Array {
  const bytes = new Uint8Array(80);
  const view = new DataView(bytes.buffer);
  view.setInt32(0, h.version, true);
  bytes.set(internalBytes(h.prev_hash), 4);
  bytes.set(internalBytes(h.merkle_root), 36);
  view.setUint32(68, h.time, true);
  view.setUint32(72, h.bits, true);
  view.setUint32(76, h.nonce, true);
  return bytes;
}

export function decodeHeader(bytes: Uint8Array): HeaderFields & { hash: Hex } {
  if (bytes.length !== 80) throw new Error(`block header must be 80 bytes, got ${bytes.length}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, 80);
  return {
    hash: displayHex(sha256d(bytes)),
    version: view.getInt32(0, true),
    prev_hash: displayHex(bytes.subarray(4, 36)),
    merkle_root: displayHex(bytes.subarray(36, 68)),
    time: view.getUint32(68, true),
    bits: view.getUint32(72, true),
    nonce: view.getUint32(76, true),
  };
}

/**
 * Find a nonce whose header hash is at or below the target, writing it into `header`.
 * At regtest difficulty about every second attempt succeeds.
 */
export function grindNonce(header: Uint8Array, target: bigint): number {
  const view = new DataView(header.buffer, header.byteOffset, 80);
  for (let nonce = 0; nonce <= 0xffffffff; nonce++) {
    view.setUint32(76, nonce, true);
    if (hashValue(sha256d(header)) <= target) return nonce;
  }
  throw new Error("nonce space exhausted");
}

/** A hash (internal byte order) read as the 256-bit little-endian integer PoW compares. */
function hashValue(internal: Uint8Array): bigint {
  return BigInt(`0x${displayHex(internal)}`);
}

/** Merkle root over hashes in internal order; odd levels duplicate their last hash. */
export function merkleRoot(hashes: Uint8Array[]): Uint8Array {
  if (hashes.length === 0) throw new Error("merkle root of no hashes");
  let level = hashes;
  while (level.length > 1) {
    const next: Uint8Array[] = [];
    for (let i = 0; i < level.length; i += 2) {
      const left = level[i] as Uint8Array;
      const right = level[i + 1] ?? left;
      next.push(sha256d(concatBytes(left, right)));
    }
    level = next;
  }
  return level[0] as Uint8Array;
}

/**
 * BIP141 witness commitment: SHA256d(witness merkle root || reserved value), where the
 * coinbase's wtxid counts as zero and the reserved value is the coinbase witness item.
 */
export function witnessCommitment(nonCoinbaseWtxids: Hex[], reservedValue: Uint8Array): Uint8Array {
  const root = merkleRoot([NULL_HASH, ...nonCoinbaseWtxids.map(internalBytes)]);
  return sha256d(concatBytes(root, reservedValue));
}

/** Full block serialisation: header, compact-size count, transactions. */
export function encodeBlock(header: Uint8Array, txHexes: ReadonlyArray<Uint8Array | Hex>): Uint8Array {
  return concatBytes(header, CompactSize.encode(BigInt(txHexes.length)), ...txHexes.map((h) => (typeof h === "string" ? Buffer.from(h, "hex") : h)));
}

/** Split a serialised block back into its header and transactions (throws on trailing bytes). */
export function decodeBlock(bytes: Uint8Array): {
  header: HeaderFields & { hash: Hex };
  transactions: RawTransaction[];
} {
  return {
    header: decodeHeader(bytes.subarray(0, 80)),
    transactions: TransactionList.decode(bytes.subarray(80)) as RawTransaction[],
  };
}

/** Expand compact `bits` into the 256-bit target. */
export function targetFromBits(bits: number): bigint {
  const exponent = bits >>> 24;
  const mantissa = BigInt(bits & 0x007fffff);
  return exponent <= 3 ? mantissa >> BigInt(8 * (3 - exponent)) : mantissa << BigInt(8 * (exponent - 3));
}

/** Difficulty as bitcoind reports it: the difficulty-1 target (bits 0x1d00ffff) over this one. */
export function difficultyFromBits(bits: number): number {
  let shift = (bits >>> 24) & 0xff;
  let difficulty = 0x0000ffff / (bits & 0x00ffffff);
  for (; shift < 29; shift++) difficulty *= 256;
  for (; shift > 29; shift--) difficulty /= 256;
  return difficulty;
}

/** Expected number of hashes to find a block at these bits: 2^256 / (target + 1). */
export function workFromBits(bits: number): bigint {
  return (1n << 256n) / (targetFromBits(bits) + 1n);
}
