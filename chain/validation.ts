// Block and transaction validity for the embedded chain, the part of bitcoind's validation.cpp
// it implements: a submitted block's checks (CheckBlock and ContextualCheckBlock, then the
// spends ConnectBlock checks against the UTXO set) and consensus finality. Script execution is
// left out, as for the mempool (./embedded.ts says why). Pure functions over what the caller
// passes in (the tip, the clock, reads of blocks and UTXOs): the chain (./embedded.ts) owns the
// state and runs these inside its mutation queue.

import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";
import { Script } from "@scure/btc-signer";
import type { Hex, Transaction, Utxo } from "./backend.ts";
import { concatBytes } from "@noble/hashes/utils.js";
import { COINBASE_MATURITY, FINAL_SEQUENCE, MAX_MONEY, REGTEST_BITS, type StoredBlock, blockSubsidy, storeParsedBlock } from "./blocks.ts";
import { type ParsedBlock, merkleRootOf } from "./parse.ts";
import { displayHex, sha256d, targetFromBits } from "./serialise.ts";
import { Slicer } from "./slices.ts";

/** Below this a locktime is a height, from it a Unix time (BIP 113 compares times with the MTP). */
const LOCKTIME_THRESHOLD = 500_000_000;
export const MAX_BLOCK_WEIGHT = 4_000_000;
/** How far ahead of the clock a block's time may be (bitcoind's MAX_FUTURE_BLOCK_TIME). */
const MAX_FUTURE_BLOCK_TIME = 2 * 60 * 60;
/** OP_RETURN, push 36, the BIP141 commitment header. */
export const WITNESS_COMMITMENT_PREFIX = "6a24aa21a9ed";
const NULL_TXID_HEX = "00".repeat(32);
const NULL_VOUT = 0xffffffff;

/** A submitted block failed a check; the message is the reason code and an explanation. */
export class BlockRejected extends Error {}

/** What checking a block needs of the chain it would extend. */
export interface BlockCheckContext {
  /** The active tip: the only parent a block may have (side branches are not kept). */
  readonly tip: StoredBlock;
  /** Clock in Unix seconds. */
  now(): number;
  /** Median time past of the (up to) 11 active blocks ending at `height`. */
  medianTimePast(height: number): number;
  /** A known block (active or not) by hash. */
  loadBlock(hash: Hex): Promise<StoredBlock | undefined>;
  /** A confirmed unspent output by outpoint key (`txid:vout`). */
  readUtxo(key: string): Promise<Utxo | undefined>;
}

export function outpointKey(txid: Hex, vout: number): string {
  return `${txid}:${vout}`;
}

/**
 * Consensus finality: a non-zero locktime binds only if some input's sequence is not final. A
 * height locktime is compared with `height`, a time locktime with `medianTimePast`.
 */
export function isFinal(tx: Transaction, height: number, medianTimePast: number): boolean {
  if (tx.locktime === 0 || tx.inputs.every((input) => input.sequence === FINAL_SEQUENCE)) return true;
  return tx.locktime < (tx.locktime < LOCKTIME_THRESHOLD ? height : medianTimePast);
}

/**
 * Check a decoded block as the next block on `ctx.tip`. The checks are bitcoind's, minus
 * script execution: proof of work against the block's bits, bits as the chain requires,
 * parent = the active tip, time after the median time past and at most two hours ahead,
 * version, a single coinbase first with the BIP34 height, merkle root, no duplicate
 * transactions, weight, finality, every input spending an unspent output (of the UTXO set or
 * earlier in the block) with coinbase maturity, outputs within inputs, the coinbase paying at
 * most subsidy + fees, and the BIP141 witness commitment. Returns the block ready to connect;
 * throws BlockRejected with bitcoind's reason code.
 */
export async function checkBlock({ header, transactions: txs, raw }: ParsedBlock, ctx: BlockCheckContext, slicer = new Slicer()): Promise<StoredBlock> {
  const tick = () => slicer.tick();
  const reject = (code: string, why: string): never => {
    throw new BlockRejected(`${code}: ${why}`);
  };
  const { hash } = header;

  // The header.
  const target = targetFromBits(header.bits);
  if (target === 0n || BigInt(`0x${hash}`) > target) {
    reject("high-hash", `the block hash ${hash} is above the target of its bits 0x${header.bits.toString(16)} (proof of work failed)`);
  }
  const parent = ctx.tip;
  if (header.prev_hash !== parent.block.hash) {
    const known = await ctx.loadBlock(header.prev_hash);
    if (known !== undefined) {
      reject("not-on-tip", `the block builds on ${header.prev_hash} (height ${known.block.height}), not on the active tip ${parent.block.hash} (height ${parent.block.height}); side branches are not supported`);
    }
    reject("prev-blk-not-found", `the parent block ${header.prev_hash} is unknown`);
  }
  const height = parent.block.height + 1;
  if (header.bits !== REGTEST_BITS) reject("bad-diffbits", `bits 0x${header.bits.toString(16)}, the chain requires 0x${REGTEST_BITS.toString(16)}`);
  const mtp = ctx.medianTimePast(parent.block.height);
  if (header.time <= mtp) reject("time-too-old", `block time ${header.time} is not after the median time past ${mtp}`);
  if (header.time > Math.floor(ctx.now()) + MAX_FUTURE_BLOCK_TIME) reject("time-too-new", `block time ${header.time} is more than two hours in the future`);
  if (header.version < 4) reject("bad-version", `version ${header.version} is obsolete (BIP34, BIP66 and BIP65 need at least 4)`);

  // The transactions, structurally (parseBlock read and hashed them, in slices).
  if (txs.length === 0) reject("bad-blk-length", "the block has no transactions");
  const root = displayHex(await merkleRootOf(txs.map((tx) => tx.txid), slicer));
  if (root !== header.merkle_root) reject("bad-txnmrklroot", `the merkle root is ${header.merkle_root}, the transactions give ${root}`);
  if (new Set(txs.map((tx) => tx.txid)).size !== txs.length) reject("bad-txns-duplicate", "a transaction appears twice");
  const coinbase = txs[0] as Transaction;
  if (!(coinbase.inputs[0]?.coinbase ?? false)) reject("bad-cb-missing", "the first transaction is not a coinbase");
  for (const tx of txs) {
    await tick();
    if (tx.inputs.length === 0) reject("bad-txns-vin-empty", `transaction ${tx.txid} has no inputs`);
    if (tx.outputs.length === 0) reject("bad-txns-vout-empty", `transaction ${tx.txid} has no outputs`);
    // Input by input and output by output in slices: one transaction may have tens of
    // thousands of either (a 40,000-output coinbase held the loop ~100 ms in this function).
    let total = 0;
    for (const output of tx.outputs) {
      const pause = tick();
      if (pause) await pause;
      if (output.value > MAX_MONEY) reject("bad-txns-vout-toolarge", `transaction ${tx.txid} has an output above the money supply`);
      total += output.value;
    }
    if (total > MAX_MONEY) reject("bad-txns-txouttotal-toolarge", `transaction ${tx.txid} pays out more than the money supply`);
    const keys = new Set<string>();
    for (const input of tx.inputs) {
      const pause = tick();
      if (pause) await pause;
      const key = outpointKey(input.txid, input.vout);
      if (keys.has(key)) reject("bad-txns-inputs-duplicate", `transaction ${tx.txid} spends the same output twice`);
      keys.add(key);
    }
    if (tx !== coinbase && tx.inputs.some((input) => input.txid === NULL_TXID_HEX && input.vout === NULL_VOUT)) {
      reject(tx.inputs.length === 1 ? "bad-cb-multiple" : "bad-txns-prevout-null", `transaction ${tx.txid} has a coinbase input but is not first`);
    }
    if (!isFinal(tx, height, mtp)) reject("bad-txns-nonfinal", `transaction ${tx.txid} is not final at height ${height}`);
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
    const witnessRoot = await merkleRootOf([NULL_TXID_HEX, ...txs.slice(1).map((tx) => tx.wtxid)], slicer);
    const expected = bytesToHex(sha256d(concatBytes(witnessRoot, hexToBytes(reserved[0] as string))));
    if (commitment.script_pubkey.slice(12, 76) !== expected) reject("bad-witness-merkle-match", "the witness commitment does not match the transactions");
  } else if (txs.some((tx) => tx.inputs.some((input) => input.witness.length > 0))) {
    reject("unexpected-witness", "the block has witness data but no witness commitment");
  }

  // Against the UTXO set, in block order: outputs created earlier in the block are spendable.
  const created = new Map<string, { value: number; height: number; coinbase: boolean }>();
  const spent = new Set<string>();
  const addOutputs = async (tx: Transaction, isCoinbase: boolean) => {
    for (let vout = 0; vout < tx.outputs.length; vout++) {
      const pause = tick();
      if (pause) await pause;
      const output = tx.outputs[vout]!;
      if (!output.script_pubkey.startsWith("6a")) created.set(outpointKey(tx.txid, vout), { value: output.value, height, coinbase: isCoinbase });
    }
  };
  const fees = [0];
  let totalFees = 0;
  await addOutputs(coinbase, true);
  for (const tx of txs.slice(1)) {
    let inputValue = 0;
    for (const input of tx.inputs) {
      await tick();
      const key = outpointKey(input.txid, input.vout);
      const utxo = spent.has(key) ? undefined : (created.get(key) ?? (await ctx.readUtxo(key)));
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
    await addOutputs(tx, false);
  }
  const paid = coinbase.outputs.reduce((sum, output) => sum + output.value, 0);
  const allowed = blockSubsidy(height) + totalFees;
  if (paid > allowed) reject("bad-cb-amount", `the coinbase pays ${paid} sats, at most ${allowed} (subsidy ${blockSubsidy(height)} + fees ${totalFees}) are allowed`);

  const stored = await storeParsedBlock({ header, transactions: txs, raw }, height, fees, parent.chainWork, slicer);
  if (stored.block.weight > MAX_BLOCK_WEIGHT) reject("bad-blk-weight", `block weight ${stored.block.weight} exceeds ${MAX_BLOCK_WEIGHT}`);
  return stored;
}

