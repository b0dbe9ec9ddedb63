// Between Bitcoin Core's RPC formats and modhost's chain types (../backend.ts).
//
// Blocks and transactions are read from Core as raw hex (getblock verbosity 0,
// getrawtransaction verbose=false) and decoded by the same code that serialises the embedded
// chain, so a module sees byte-for-byte the same Block whichever backend serves it. The
// other way (./facade.ts) writes the JSON shapes that Core documents for its RPC help.

import { bytesToHex } from "@noble/hashes/utils.js";
import { OutScript, Script } from "@scure/btc-signer";
import type { Block, BlockHeader, BlockTemplate, ChainInfo, Hex, Transaction } from "../backend.ts";
import { storeParsedBlock } from "../blocks.ts";
import { parseBlock, ParseError, parseTransaction, type ParsedBlock } from "../parse.ts";
import { decodeHeader } from "../serialise.ts";
import { Slicer } from "../slices.ts";
import { MAX_BLOCK_WEIGHT } from "../validation.ts";

const SATS_PER_BTC = 100_000_000;

/** BTC amounts as Core prints them (JSON numbers with up to 8 decimals) to integer satoshis. */
export function btcToSats(btc: number): number {
  return Math.round(btc * SATS_PER_BTC);
}

export function satsToBtc(sats: number): number {
  return sats / SATS_PER_BTC;
}

/** Core's fee rate in BTC/kvB to sat/vB. */
export function btcPerKvbToSatPerVb(rate: number): number {
  return (rate * SATS_PER_BTC) / 1000;
}

export function bitsFromHex(bits: string): number {
  if (!/^[0-9a-f]{8}$/i.test(bits)) throw new Error(`bits must be 8 hex digits, got ${JSON.stringify(bits)}`);
  return Number.parseInt(bits, 16);
}

export function bitsToHex(bits: number): string {
  return bits.toString(16).padStart(8, "0");
}

/**
 * Bytes a node may answer for one block or transaction, checked on the hex's length before it
 * is decoded: a block weighs at most 4,000,000 (MAX_BLOCK_WEIGHT) and each byte at least 1. A
 * node, or anything in its place, could answer up to the RPC client's 64 MiB.
 */
export const MAX_NODE_BLOCK_BYTES = 4_000_000;

/** A node's answer that is not what was asked for or not what Core sends; the message says which. */
export class NodeAnswerError extends Error {
  override name = "NodeAnswerError";
}

/** The bytes of a node's hex answer: a string of hex of at most MAX_NODE_BLOCK_BYTES bytes, decoded natively. */
function bytesOfNodeHex(hex: unknown, what: string): Buffer {
  if (typeof hex !== "string") throw new NodeAnswerError(`the node answered ${what} with ${typeof hex}, not hex`);
  if (hex.length > 2 * MAX_NODE_BLOCK_BYTES) {
    throw new NodeAnswerError(`the node answered ${what} with ${Math.ceil(hex.length / 2)} bytes, more than a block holds (MAX_NODE_BLOCK_BYTES, ${MAX_NODE_BLOCK_BYTES})`);
  }
  // Buffer's decoder stops at the first pair that is not hex: a shorter result means a bad digit.
  const bytes = Buffer.from(hex, "hex");
  if (hex.length % 2 !== 0 || bytes.length * 2 !== hex.length) throw new NodeAnswerError(`the node answered ${what} with text that is not hex`);
  return bytes;
}

/**
 * A block from its serialisation, read in slices (../parse.ts: a block of 15,000 transactions
 * decoded in one stretch held the loop 0.5-0.7 s), its weight within MAX_BLOCK_WEIGHT, and its
 * hash the one asked for. `height` comes from the node (the bytes do not say it).
 */
export async function blockFromHex(hex: unknown, height: number, hash: Hex): Promise<Block> {
  const what = `getblock ${hash}`;
  let parsed: ParsedBlock;
  try {
    parsed = await parseBlock(bytesOfNodeHex(hex, what), { maxWeight: MAX_BLOCK_WEIGHT });
  } catch (err) {
    if (err instanceof ParseError) throw new NodeAnswerError(`the node answered ${what} with bytes that are not a block: ${err.message}`);
    throw err;
  }
  if (parsed.header.hash !== hash) throw new NodeAnswerError(`the node answered ${what} with block ${parsed.header.hash}`);
  return (await storeParsedBlock(parsed, height, [], 0n, new Slicer())).block;
}

/**
 * getblockchaininfo's chainwork (hex, 256 bits) in decimal. Checked to be at most 64 hex digits
 * before it is converted: a BigInt's decimal is computed in time that grows faster than its
 * length, and a node answering 1 MB of hex held the host's loop 1.4 s in one call.
 */
export function chainWorkFromHex(hex: unknown): string {
  if (typeof hex !== "string" || !/^[0-9a-f]{1,64}$/i.test(hex)) {
    throw new NodeAnswerError(`the node answered getblockchaininfo with a chainwork that is not 1 to 64 hex digits (${typeof hex === "string" ? `${hex.length} characters` : typeof hex})`);
  }
  return BigInt(`0x${hex}`).toString(10);
}

/** Heights a node may answer: Core's are 32-bit signed integers. */
export const MAX_NODE_HEIGHT = 2 ** 31 - 1;

/**
 * getblockheader's verbose answer for `hash`, checked: its hash the one asked, its height an
 * integer in Core's range and, when the caller knows it, the height asked (a node answering a
 * header at height 2^53 had the backend ask for every height up to it, holding all it read).
 */
export function checkedHeader<T extends { hash: Hex; height: number }>(answer: T, hash: Hex, height?: number): T {
  if (answer === null || typeof answer !== "object") throw new NodeAnswerError(`the node answered getblockheader ${hash} with something that is not a header`);
  if (answer.hash !== hash) throw new NodeAnswerError(`the node answered getblockheader ${hash} with header ${String(answer.hash).slice(0, 64)}`);
  if (!Number.isSafeInteger(answer.height) || answer.height < 0 || answer.height > MAX_NODE_HEIGHT) {
    throw new NodeAnswerError(`the node answered getblockheader ${hash} with height ${String(answer.height).slice(0, 32)}, not a block height (0 to ${MAX_NODE_HEIGHT})`);
  }
  if (height !== undefined && answer.height !== height) throw new NodeAnswerError(`the node answered getblockhash ${height} with block ${hash}, whose header says height ${answer.height}`);
  return answer;
}

/** A header from its 80 bytes' hex, its hash the one asked for. */
export function headerFromHex(hex: unknown, height: number, hash?: Hex): BlockHeader {
  if (typeof hex !== "string" || hex.length !== 160) throw new NodeAnswerError(`the node answered getblockheader ${hash ?? ""} with something that is not 80 bytes of hex`);
  const { hash: got, ...fields } = decodeHeader(bytesOfNodeHex(hex, "getblockheader"));
  if (hash !== undefined && got !== hash) throw new NodeAnswerError(`the node answered getblockheader ${hash} with header ${got}`);
  return { hash: got, height, ...fields, hex };
}

/** A transaction from its serialisation, read in slices, its txid the one asked for. */
export async function transactionFromHex(hex: unknown, txid: Hex): Promise<Transaction> {
  const what = `getrawtransaction ${txid}`;
  let tx: Transaction;
  try {
    tx = await parseTransaction(bytesOfNodeHex(hex, what));
  } catch (err) {
    if (err instanceof ParseError) throw new NodeAnswerError(`the node answered ${what} with bytes that are not a transaction: ${err.message}`);
    throw err;
  }
  if (tx.txid !== txid) throw new NodeAnswerError(`the node answered ${what} with transaction ${tx.txid}`);
  return tx;
}

const CHAIN_NAMES: Record<string, ChainInfo["chain"]> = { main: "main", test: "testnet", testnet4: "testnet", signet: "signet", regtest: "regtest" };
const CORE_CHAIN_NAMES: Record<ChainInfo["chain"], string> = { main: "main", testnet: "test", signet: "signet", regtest: "regtest" };

export function chainName(core: string): ChainInfo["chain"] {
  // Own keys only: a node answering "constructor" must not name Object.prototype's.
  const name = Object.hasOwn(CHAIN_NAMES, core) ? CHAIN_NAMES[core] : undefined;
  if (!name) throw new Error(`unknown chain ${JSON.stringify(core)} from the node`);
  return name;
}

export function coreChainName(chain: ChainInfo["chain"]): string {
  return CORE_CHAIN_NAMES[chain];
}

/** getblocktemplate's answer (BIP22/23/9/141 fields) to modhost's template. */
export function templateFromCore(t: CoreBlockTemplate): BlockTemplate {
  return {
    version: t.version,
    previous_block_hash: t.previousblockhash,
    height: t.height,
    bits: bitsFromHex(t.bits),
    target: t.target,
    cur_time: t.curtime,
    min_time: t.mintime,
    transactions: t.transactions.map((tx) => ({ txid: tx.txid, wtxid: tx.hash, hex: tx.data, fee: tx.fee, weight: tx.weight })),
    coinbase_value: t.coinbasevalue,
    default_witness_commitment: t.default_witness_commitment ?? "",
  };
}

export interface CoreBlockTemplate {
  version: number;
  rules: string[];
  vbavailable: Record<string, number>;
  vbrequired: number;
  previousblockhash: Hex;
  transactions: Array<{ data: Hex; txid: Hex; hash: Hex; depends: number[]; fee: number; sigops: number; weight: number }>;
  coinbaseaux: Record<string, string>;
  coinbasevalue: number;
  longpollid: string;
  target: Hex;
  mintime: number;
  mutable: string[];
  noncerange: string;
  sigoplimit: number;
  sizelimit: number;
  weightlimit: number;
  curtime: number;
  bits: string;
  height: number;
  default_witness_commitment?: Hex;
}

/** A script's type name as Core's RPC prints it (scriptPubKey.type). */
export function scriptType(script: Uint8Array): string {
  try {
    const out = OutScript.decode(script);
    switch (out.type) {
      case "pkh":
        return "pubkeyhash";
      case "sh":
        return "scripthash";
      case "wpkh":
        return "witness_v0_keyhash";
      case "wsh":
        return "witness_v0_scripthash";
      case "tr":
        return "witness_v1_taproot";
      case "pk":
        return "pubkey";
      case "ms":
        return "multisig";
      case "unknown":
        break;
      default:
        break;
    }
  } catch {
    // not a standard output script
  }
  if (script.length > 0 && script[0] === 0x6a) return "nulldata";
  return "nonstandard";
}

/** Script disassembly in Core's asm style: opcodes by name, pushes as hex, small numbers as digits. */
export function scriptAsm(script: Uint8Array): string {
  try {
    return Script.decode(script)
      .map((op) => (op instanceof Uint8Array ? bytesToHex(op) : typeof op === "number" ? String(op) : `OP_${op}`))
      .join(" ");
  } catch {
    return "[error]";
  }
}

