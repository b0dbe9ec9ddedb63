// Between Bitcoin Core's RPC formats and modhost's chain types (../backend.ts).
//
// Blocks and transactions are read from Core as raw hex (getblock verbosity 0,
// getrawtransaction verbose=false) and decoded by the same code that serialises the embedded
// chain, so a module sees byte-for-byte the same Block whichever backend serves it. The
// other way (./facade.ts) writes the JSON shapes that Core documents for its RPC help.

import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";
import { OutScript, Script } from "@scure/btc-signer";
import type { Block, BlockHeader, BlockTemplate, ChainInfo, Hex, Transaction } from "../backend.ts";
import { decodeBlock, decodeHeader, decodeTransaction, describeTransaction, encodeHeader } from "../serialise.ts";

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

/** A block from its serialisation; `height` comes from the node (the bytes do not say it). */
export function blockFromHex(hex: Hex, height: number): Block {
  const bytes = hexToBytes(hex);
  const decoded = decodeBlock(bytes);
  const transactions = decoded.transactions.map((raw) => describeTransaction(raw));
  const { hash, ...fields } = decoded.header;
  const witnessBytes = transactions.reduce((sum, tx) => sum + tx.size - (tx.weight - tx.size) / 3, 0);
  return {
    header: { hash, height, ...fields, hex: bytesToHex(encodeHeader(fields)) },
    hash,
    height,
    size: bytes.length,
    weight: (bytes.length - witnessBytes) * 3 + bytes.length,
    transactions,
    hex,
  };
}

export function headerFromHex(hex: Hex, height: number): BlockHeader {
  const { hash, ...fields } = decodeHeader(hexToBytes(hex));
  return { hash, height, ...fields, hex };
}

export function transactionFromHex(hex: Hex): Transaction {
  return describeTransaction(decodeTransaction(hexToBytes(hex)));
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

