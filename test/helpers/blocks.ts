// Building blocks and transactions by hand for tests that mine through the host: a block on a
// template (coinbase, merkle root, header, nonce ground at the template's target) and an
// unsigned spend (the embedded chain does not run scripts).

import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";
import type { BlockTemplate } from "../../chain/backend.ts";
import {
  type RawTransaction, describeTransaction, displayHex, encodeBlock, encodeHeader, grindNonce, internalBytes, merkleRoot, sha256d,
} from "../../chain/serialise.ts";
import { coinbaseTransaction } from "../../chain/blocks.ts";
import { hexOfRaw } from "../../chain/backend.ts";

/** OP_TRUE: anyone can spend (the embedded chain does not run scripts anyway). */
export const PAYOUT = "51";

export interface BuildOptions {
  /** Non-coinbase transactions (default: the template's). */
  txs?: Array<{ txid: string; wtxid: string; hex: string | Uint8Array }>;
  /** The coinbase (default: the template's coinbase_tx, or one built for `txs`). */
  coinbase?: { txid: string; hex: string | Uint8Array };
  prev?: string;
  merkleRoot?: string;
  /** Find a nonce that fails proof of work instead. */
  badPow?: boolean;
}

/** Serialise a block on `tpl` and grind its nonce at the template's target. */
export function buildBlock(tpl: BlockTemplate, opts: BuildOptions = {}): { hex: string; hash: string } {
  const txs = opts.txs ?? tpl.transactions;
  const coinbase = opts.coinbase ?? (opts.txs === undefined && tpl.coinbase_tx ? tpl.coinbase_tx : makeCoinbase(tpl, txs));
  const all = [coinbase, ...txs];
  const header = encodeHeader({
    version: tpl.version,
    prev_hash: opts.prev ?? tpl.previous_block_hash,
    merkle_root: opts.merkleRoot ?? displayHex(merkleRoot(all.map((tx) => internalBytes(tx.txid)))),
    time: tpl.cur_time,
    bits: tpl.bits,
    nonce: 0,
  });
  const target = BigInt(`0x${tpl.target}`);
  if (opts.badPow) {
    const view = new DataView(header.buffer, header.byteOffset, 80);
    for (let nonce = 0; ; nonce++) {
      view.setUint32(76, nonce, true);
      if (BigInt(`0x${displayHex(sha256d(header))}`) > target) break;
    }
  } else {
    grindNonce(header, target);
  }
  return { hex: bytesToHex(encodeBlock(header, all.map((tx) => tx.hex))), hash: displayHex(sha256d(header)) };
}

/** A coinbase for `txs` paying `value` (default the template's coinbase_value). */
export function makeCoinbase(tpl: BlockTemplate, txs: Array<{ wtxid: string }>, value = tpl.coinbase_value): { txid: string; hex: string } {
  const tx = describeTransaction(coinbaseTransaction(tpl.height, 7, value, hexToBytes(PAYOUT), txs.map((x) => x.wtxid)));
  return { txid: tx.txid, hex: hexOfRaw(tx.hex) };
}

/** An unsigned transaction spending one output (scripts are not executed by the embedded chain). */
export function spend(txid: string, vout: number, value: number): { txid: string; wtxid: string; hex: string } {
  const raw: RawTransaction = {
    version: 2,
    segwitFlag: false,
    inputs: [{ txid: hexToBytes(txid), index: vout, finalScriptSig: new Uint8Array(0), sequence: 0xffffffff }],
    outputs: [{ amount: BigInt(value), script: hexToBytes(PAYOUT) }],
    witnesses: undefined,
    lockTime: 0,
  };
  const tx = describeTransaction(raw);
  return { txid: tx.txid, wtxid: tx.wtxid, hex: hexOfRaw(tx.hex) };
}

