// Reading serialised transactions and blocks that a module or a remote party sent, in slices
// (./slices.ts), straight into the chain's plain-data view (backend.ts Transaction).
//
// Why not @scure/btc-signer's RawTx here (./serialise.ts uses it for what the chain builds
// itself): a 3 MB block decoded with RawTx and described with describeTransaction held the
// host's loop for 0.2-3 s in one piece (RawTx.encode alone, run twice per transaction to get
// the txid and wtxid, costs ~3 µs per input), and RawTx has no public way to decode from an
// offset, so a block cannot be decoded a transaction at a time. This reader walks the bytes
// once: each field becomes its hex with Buffer's native encoder, the txid and wtxid are hashed
// from the original bytes (node:crypto, no re-encoding), and every 4 ms it gives the loop a
// turn, inside a transaction as well (one transaction may be a whole block). It accepts exactly
// what RawTx accepts (canonical CompactSize, no trailing bytes); test/chain-parse.test.ts checks
// it against RawTx + describeTransaction.

import { createHash } from "node:crypto";
import type { Hex, Transaction } from "./backend.ts";
import { addressOf, decodeHeader, type HeaderFields } from "./serialise.ts";
import { Slicer } from "./slices.ts";
import { sealBytes } from "../protocol/codec.ts";

/** Thrown for bytes that are not a transaction or block; the message says where and why. */
export class ParseError extends Error {}

/** A block read by parseBlock: its header, its transactions (frozen), and the bytes it came from. */
export interface ParsedBlock {
  header: HeaderFields & { hash: Hex };
  transactions: Transaction[];
  raw: Uint8Array;
}

/** Limits checked while reading, before the work they bound is done. */
export interface ParseLimits {
  /** Block weight (3 x stripped size + size) at most this: reading stops as soon as it is passed. */
  maxWeight: number;
}

class Reader {
  pos: number;
  readonly buf: Buffer;
  constructor(bytes: Uint8Array, pos = 0) {
    this.buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = pos;
  }

  need(n: number, what: string): void {
    if (n > this.buf.length - this.pos) throw new ParseError(`${what} at byte ${this.pos} runs past the end (${n} bytes needed, ${this.buf.length - this.pos} left)`);
  }

  u32(what: string): number {
    this.need(4, what);
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }

  /** CompactSize, canonical (the shortest form) as consensus requires. */
  size(what: string): number {
    this.need(1, what);
    const first = this.buf[this.pos] as number;
    this.pos++;
    if (first < 0xfd) return first;
    let v: number;
    let min: number;
    if (first === 0xfd) {
      this.need(2, what);
      v = this.buf.readUInt16LE(this.pos);
      this.pos += 2;
      min = 0xfd;
    } else if (first === 0xfe) {
      this.need(4, what);
      v = this.buf.readUInt32LE(this.pos);
      this.pos += 4;
      min = 0x10000;
    } else {
      this.need(8, what);
      const big = this.buf.readBigUInt64LE(this.pos);
      this.pos += 8;
      if (big <= 0xffffffffn) throw new ParseError(`${what}: non-canonical CompactSize`);
      // Anything this large runs past the end of any block: say so now.
      throw new ParseError(`${what} ${big} runs past the end of the data`);
    }
    if (v < min) throw new ParseError(`${what}: non-canonical CompactSize`);
    return v;
  }

  /** Hex of the next `n` bytes. */
  hex(n: number, what: string): string {
    this.need(n, what);
    const s = this.buf.toString("hex", this.pos, this.pos + n);
    this.pos += n;
    return s;
  }

  /** Hex of the next `n` bytes in reverse order (a txid as displayed). */
  reversedHex(n: number, what: string): string {
    this.need(n, what);
    const s = Buffer.from(this.buf.subarray(this.pos, this.pos + n)).reverse().toString("hex");
    this.pos += n;
    return s;
  }
}

const sha256d = (...parts: Uint8Array[]): Buffer => {
  const first = createHash("sha256");
  for (const part of parts) first.update(part);
  return createHash("sha256").update(first.digest()).digest();
};
const display = (hash: Buffer): Hex => Buffer.from(hash).reverse().toString("hex");

const NULL_TXID = "00".repeat(32);
const NULL_VOUT = 0xffffffff;

/** Read one transaction at r.pos, ticking `slicer` per input, output and witness item. */
async function readTransaction(r: Reader, slicer: Slicer, index: number): Promise<Transaction> {
  const at = (what: string) => `transaction ${index}: ${what}`;
  const start = r.pos;
  r.need(4, at("version"));
  const version = r.buf.readInt32LE(r.pos);
  r.pos += 4;
  const segwit = r.buf[r.pos] === 0 && r.buf[r.pos + 1] === 1;
  if (segwit) r.pos += 2;
  const inputCount = r.size(at("input count"));
  const inputs: Transaction["inputs"] = [];
  const raws: { txid: string; vout: number }[] = [];
  for (let i = 0; i < inputCount; i++) {
    const txid = r.reversedHex(32, at(`input ${i}`));
    const vout = r.u32(at(`input ${i}`));
    const scriptSig = r.hex(r.size(at(`input ${i} script length`)), at(`input ${i} script`));
    const sequence = r.u32(at(`input ${i} sequence`));
    raws.push({ txid, vout });
    inputs.push({ txid, vout, script_sig: scriptSig, sequence, witness: [], coinbase: false });
    const pause = slicer.tick();
    if (pause) await pause;
  }
  const outputCount = r.size(at("output count"));
  const outputs: Transaction["outputs"] = [];
  for (let i = 0; i < outputCount; i++) {
    r.need(8, at(`output ${i} value`));
    const value = Number(r.buf.readBigUInt64LE(r.pos));
    r.pos += 8;
    const length = r.size(at(`output ${i} script length`));
    r.need(length, at(`output ${i} script`));
    const script = r.buf.subarray(r.pos, r.pos + length);
    const scriptPubkey = r.hex(length, at(`output ${i} script`));
    outputs.push({ value, script_pubkey: scriptPubkey, address: addressOf(script) });
    const pause = slicer.tick();
    if (pause) await pause;
  }
  const witnessStart = r.pos;
  if (segwit) {
    for (const input of inputs) {
      const items = r.size(at("witness item count"));
      for (let k = 0; k < items; k++) {
        input.witness.push(r.hex(r.size(at("witness item length")), at("witness item")));
        const pause = slicer.tick();
        if (pause) await pause;
      }
    }
  }
  // A marker and flag with nothing but empty witnesses is refused, as bitcoind refuses it
  // ("Superfluous witness record") and RawTx does: the same transaction has another encoding.
  if (segwit && inputs.every((input) => input.witness.length === 0)) throw new ParseError(at("a segwit marker with only empty witnesses (a superfluous witness record)"));
  const witnessEnd = r.pos;
  const locktime = r.u32(at("locktime"));
  const end = r.pos;
  const full = r.buf.subarray(start, end);
  const strippedSize = end - start - (segwit ? 2 + witnessEnd - witnessStart : 0);
  const weight = strippedSize * 3 + full.length;
  const coinbase = raws.length === 1 && raws[0]?.txid === NULL_TXID && raws[0].vout === NULL_VOUT;
  if (coinbase) (inputs[0] as { coinbase: boolean }).coinbase = true;
  const txidHash = segwit
    ? sha256d(r.buf.subarray(start, start + 4), r.buf.subarray(start + 6, witnessStart), r.buf.subarray(witnessEnd, end))
    : sha256d(full);
  const tx: Transaction = {
    txid: display(txidHash),
    wtxid: segwit ? display(sha256d(full)) : display(txidHash),
    version,
    locktime,
    inputs,
    outputs,
    size: full.length,
    vsize: Math.ceil(weight / 4),
    weight,
    // The bytes, a view of the block's (no copy, no hex on the host's loop): binary on the wire.
    hex: sealBytes(new Uint8Array(full.buffer, full.byteOffset, full.byteLength)),
  };
  for (const input of inputs) {
    Object.freeze(input.witness);
    Object.freeze(input);
  }
  for (const output of outputs) Object.freeze(output);
  Object.freeze(inputs);
  Object.freeze(outputs);
  return Object.freeze(tx);
}

/**
 * One serialised transaction (a submitted one: up to a block's size), read in slices. Throws
 * ParseError on malformed bytes or trailing data.
 */
export async function parseTransaction(bytes: Uint8Array, slicer = new Slicer()): Promise<Transaction> {
  const r = new Reader(bytes);
  const tx = await readTransaction(r, slicer, 0);
  if (r.pos !== r.buf.length) throw new ParseError(`${r.buf.length - r.pos} bytes after the transaction`);
  return tx;
}

/**
 * A serialised block, read a transaction at a time in slices. Stops with ParseError as soon as
 * the weight read so far passes `limits.maxWeight` (before reading the rest), on malformed
 * bytes, and on trailing data.
 */
export async function parseBlock(bytes: Uint8Array, limits: ParseLimits, slicer = new Slicer()): Promise<ParsedBlock> {
  if (bytes.length < 80) throw new ParseError(`a block is at least 80 bytes (its header), got ${bytes.length}`);
  const header = decodeHeader(bytes.subarray(0, 80));
  const r = new Reader(bytes, 80);
  const count = r.size("transaction count");
  // Each transaction is at least 10 bytes: a count past that is a lie, found before reading on.
  if (count * 10 > r.buf.length - r.pos) throw new ParseError(`the block claims ${count} transactions in ${r.buf.length - r.pos} bytes`);
  let weight = r.pos * 4;
  const transactions: Transaction[] = [];
  for (let i = 0; i < count; i++) {
    const tx = await readTransaction(r, slicer, i);
    weight += tx.weight;
    if (weight > limits.maxWeight) throw new ParseError(`bad-blk-weight: the block's weight passes ${limits.maxWeight} at transaction ${i}`);
    transactions.push(tx);
    // A tick per transaction too: one with no inputs or outputs (10 bytes) ticks nowhere above,
    // and 100,000 of them (4 MB of zeros after a header) were read in one stretch of 300-700 ms.
    const pause = slicer.tick();
    if (pause) await pause;
  }
  if (r.pos !== r.buf.length) throw new ParseError(`${r.buf.length - r.pos} bytes after the block's last transaction`);
  return { header, transactions, raw: bytes };
}

/** Merkle root (internal byte order) over txids in display order, in slices. */
export async function merkleRootOf(txids: readonly Hex[], slicer: Slicer): Promise<Buffer> {
  if (txids.length === 0) throw new Error("merkle root of no hashes");
  let level: Buffer[] = [];
  for (const t of txids) {
    level.push(Buffer.from(t, "hex").reverse());
    const pause = slicer.tick();
    if (pause) await pause;
  }
  while (level.length > 1) {
    const next: Buffer[] = [];
    for (let i = 0; i < level.length; i += 2) {
      const left = level[i] as Buffer;
      next.push(sha256d(left, level[i + 1] ?? left));
      const pause = slicer.tick();
      if (pause) await pause;
    }
    level = next;
  }
  return level[0] as Buffer;
}
