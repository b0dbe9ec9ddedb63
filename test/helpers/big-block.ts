// A block as heavy as consensus allows, built fast on an embedded chain for the tests and the
// benchmark of what a submitted block costs the host's loop: one block whose coinbase pays
// `count` OP_TRUE outputs, 100 blocks to mature it, then a block of `count` transactions each
// spending one of them, each carrying `witnessBytes` of witness data in `witnessItems` items
// (the embedded chain does not run scripts). Returned as raw bytes, not yet submitted.

import { hexToBytes } from "@noble/hashes/utils.js";
import { RawTx } from "@scure/btc-signer";
import { parseBlock } from "../../chain/parse.ts";
import type { EmbeddedChain } from "../../chain/embedded.ts";
import { blockSubsidy, coinbaseTransaction } from "../../chain/blocks.ts";
import { type RawTransaction, describeTransaction, displayHex, encodeBlock, encodeHeader, grindNonce, internalBytes, merkleRoot } from "../../chain/serialise.ts";
import type { BlockTemplate, Transaction } from "../../chain/backend.ts";
import { PAYOUT } from "./blocks.ts";

/** A block on `tpl` made of `txs` after a coinbase paying `outputs` (or the template's value). */
function blockOn(tpl: BlockTemplate, txs: Array<{ txid: string; wtxid: string; hex: string | Uint8Array }>, outputs?: number): Uint8Array {
  // The subsidy alone: the template's value counts fees of its mempool transactions, not of `txs`.
  const value = blockSubsidy(tpl.height);
  const raw = coinbaseTransaction(tpl.height, 7, value, hexToBytes(PAYOUT), txs.map((t) => t.wtxid));
  if (outputs !== undefined) {
    const each = Math.floor(value / outputs);
    raw.outputs = Array.from({ length: outputs }, () => ({ amount: BigInt(each), script: hexToBytes(PAYOUT) }));
    raw.segwitFlag = false;
    raw.witnesses = undefined;
  }
  const coinbase = describeTransaction(raw);
  const all = [coinbase, ...txs];
  const header = encodeHeader({
    version: tpl.version, prev_hash: tpl.previous_block_hash, merkle_root: displayHex(merkleRoot(all.map((t) => internalBytes(t.txid)))),
    time: tpl.cur_time, bits: tpl.bits, nonce: 0,
  });
  grindNonce(header, BigInt(`0x${tpl.target}`));
  return encodeBlock(header, all.map((t) => t.hex));
}

/**
 * A block on `tpl` of its coinbase alone, paying the subsidy to one output per script in
 * `scripts` (the first gets it all): how a module makes a block of any size up to the weight
 * limit (non-witness bytes weigh 4: ~990 KB of script at most) without spending anything.
 */
export function coinbaseBlock(tpl: Pick<BlockTemplate, "height" | "version" | "previous_block_hash" | "cur_time" | "bits" | "target">, scripts: Uint8Array[], extraNonce = 7): Uint8Array {
  const value = blockSubsidy(tpl.height);
  const raw = coinbaseTransaction(tpl.height, extraNonce, value, hexToBytes(PAYOUT), []);
  raw.outputs = scripts.map((script, i) => ({ amount: BigInt(i === 0 ? value : 0), script }));
  raw.segwitFlag = false;
  raw.witnesses = undefined;
  const coinbase = describeTransaction(raw);
  const header = encodeHeader({
    version: tpl.version, prev_hash: tpl.previous_block_hash, merkle_root: coinbase.txid,
    time: tpl.cur_time, bits: tpl.bits, nonce: 0,
  });
  grindNonce(header, BigInt(`0x${tpl.target}`));
  return encodeBlock(header, [coinbase.hex]);
}

export interface BigBlockShape {
  /** Non-coinbase transactions. */
  count: number;
  /** Witness bytes per transaction (0: no witness). */
  witnessBytes: number;
  /** Witness items per transaction the bytes are split into (default 1). */
  witnessItems?: number;
}

/** A block whose coinbase pays `count` OP_TRUE outputs, then 100 blocks: the coinbase, spendable. */
async function fund(chain: EmbeddedChain, count: number): Promise<Transaction> {
  const funding = blockOn(await chain.getBlockTemplate(), [], count);
  const funded = await chain.submitBlock(funding);
  if (funded.result !== "accepted") throw new Error(`funding block ${funded.result}: ${funded.reason}`);
  const fundingTx = (await parseBlock(funding, { maxWeight: 4_000_000 })).transactions[0] as Transaction;
  await chain.mine(100, { includeMempool: false });
  return fundingTx;
}

/** Fill the mempool of `chain` with `count` more transactions (one input, one output each); their txids. */
export async function fillMempool(chain: EmbeddedChain, count: number): Promise<string[]> {
  const txs = await mempoolTransactions(chain, count);
  const txids: string[] = [];
  // Submitted 1,000 at a time: the chain accepts them one after another, in this order.
  for (let from = 0; from < count; from += 1000) txids.push(...(await Promise.all(txs.slice(from, from + 1000).map((tx) => chain.submitTransaction(tx)))));
  return txids;
}

/** `count` valid transactions for `chain`'s mempool (each spends its own output of one funding transaction), not submitted. */
export async function mempoolTransactions(chain: EmbeddedChain, count: number): Promise<Uint8Array[]> {
  const fundingTx = await fund(chain, count);
  const prev = hexToBytes(fundingTx.txid);
  const payout = hexToBytes(PAYOUT);
  return Array.from({ length: count }, (_, i) => {
    const raw: RawTransaction = {
      version: 2, segwitFlag: false, witnesses: undefined, lockTime: 0,
      inputs: [{ txid: prev, index: i, finalScriptSig: new Uint8Array(0), sequence: 0xffffffff }],
      outputs: [{ amount: BigInt(fundingTx.outputs[i]!.value - 100), script: payout }],
    };
    return RawTx.encode(raw);
  });
}

/** Prepare `chain` (102 blocks) and return the heavy block for its next height, unsubmitted. */
export async function bigBlock(chain: EmbeddedChain, shape: BigBlockShape): Promise<Uint8Array> {
  const fundingTx = await fund(chain, shape.count);
  const items = shape.witnessItems ?? 1;
  const itemBytes = Math.max(1, Math.floor(shape.witnessBytes / items));
  const txs = Array.from({ length: shape.count }, (_, i) => {
    const raw: RawTransaction = {
      version: 2, segwitFlag: shape.witnessBytes > 0,
      inputs: [{ txid: hexToBytes(fundingTx.txid), index: i, finalScriptSig: new Uint8Array(0), sequence: 0xffffffff }],
      outputs: [{ amount: BigInt(fundingTx.outputs[i]!.value - 100), script: hexToBytes(PAYOUT) }],
      witnesses: shape.witnessBytes > 0 ? [Array.from({ length: items }, (_, k) => new Uint8Array(itemBytes).fill((i + k) & 0xff))] : undefined,
      lockTime: 0,
    };
    const tx = describeTransaction(raw);
    return { txid: tx.txid, wtxid: tx.wtxid, hex: tx.hex };
  });
  return blockOn(await chain.getBlockTemplate(), txs);
}
