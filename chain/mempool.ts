// The embedded chain's memory pool, the part of bitcoind's txmempool.cpp it needs: the
// accepted transactions with their fees, which outpoints they spend (conflicts are found by
// outpoint, in O(1)), and block-template selection by fee rate. What may enter is decided by
// the chain (./embedded.ts acceptToMempool, against the UTXO set and ./validation.ts); this
// file only keeps what was accepted, within its bound (`maxBytes`, `[chain] max_mempool_mb`: a
// full mempool takes a transaction only by evicting lower fee rates). Not persisted: a
// restarted chain starts with it empty.

import type { Hex, MempoolEntry, MempoolInfo, Transaction } from "./backend.ts";
import { outpointKey } from "./validation.ts";

export interface MempoolRecord {
  /** Frozen: shared with every reader. */
  tx: Transaction;
  fee: number;
  /** When it was accepted (Unix seconds). */
  time: number;
  /** Order of acceptance, set by Mempool.add: the key of mempool pages. */
  seq?: number;
}

/** Default of `[chain] max_mempool_mb`: what the mempool's transactions may hold of host memory (heldBytes); bitcoind's -maxmempool default. */
const DEFAULT_MEMPOOL_BYTES = 300 * 1024 * 1024;

/**
 * What a transaction costs the host's memory while in the mempool, estimated from above: its
 * serialisation (kept as bytes), the hex of its scripts and witness items (two characters a
 * byte), and the objects and txid strings of its inputs and outputs. Measured under the real
 * host: a 3.9 MB-witness transaction held ~12-16 MB of heap and external memory (3x its size
 * plus the frame it came in until collected), a 1-in-1-out one of 61 bytes ~1.7 KB (estimated
 * 2.2 KB).
 */
export function heldBytes(tx: Transaction): number {
  return 3 * tx.size + 512 * (tx.inputs.length + tx.outputs.length) + 1024;
}

/** The mempool cannot take a transaction without going over its bound (the message says what to do). */
export class MempoolFull extends Error {}

export class Mempool {
  /**
   * @param maxBytes what the records may hold together (heldBytes); a transaction that would
   * pass it is taken only by evicting transactions of lower fee rates (evictionsFor).
   */
  constructor(readonly maxBytes = DEFAULT_MEMPOOL_BYTES) {
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 1) throw new Error(`mempool maxBytes must be a positive integer, not ${maxBytes}`);
  }

  readonly #records = new Map<Hex, MempoolRecord>();
  /** Outpoints spent by mempool transactions -> the spending txid. */
  readonly #spends = new Map<string, Hex>();
  /**
   * Records in the order they were accepted (seq ascending), removed ones included until the
   * next compaction (at most as many removed as present): pages seek here by binary search.
   */
  #order: MempoolRecord[] = [];
  #removed = 0;
  #seq = 0;

  get size(): number {
    return this.#records.size;
  }

  has(txid: Hex): boolean {
    return this.#records.has(txid);
  }

  get(txid: Hex): MempoolRecord | undefined {
    return this.#records.get(txid);
  }

  /** Txids in the order they were accepted. */
  txids(): Hex[] {
    return [...this.#records.keys()];
  }

  /** A snapshot of the records (safe to iterate while removing). */
  records(): MempoolRecord[] {
    return [...this.#records.values()];
  }

  /** The mempool transaction spending outpoint `key` (`txid:vout`), if any. */
  spenderOf(key: string): Hex | undefined {
    return this.#spends.get(key);
  }

  /** Add an accepted transaction (the caller checked it does not conflict). */
  add(record: MempoolRecord): void {
    record.seq = ++this.#seq;
    // Into the fee-rate order by binary search (after equal rates: acceptance order among them).
    const rate = feeRate(record);
    const byRate = this.#byFeeRate;
    let lo = 0;
    let hi = byRate.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (feeRate(byRate[mid] as MempoolRecord) >= rate) lo = mid + 1;
      else hi = mid;
    }
    byRate.splice(lo, 0, record);
    this.#vsize += record.tx.vsize;
    this.#held += heldBytes(record.tx);
    this.#fees += record.fee;
    this.version++;
    this.#order.push(record);
    this.#records.set(record.tx.txid, record);
    for (const input of record.tx.inputs) this.#spends.set(outpointKey(input.txid, input.vout), record.tx.txid);
  }

  /** Remove a transaction; returns what was removed, or undefined if it was not there. */
  remove(txid: Hex): MempoolRecord | undefined {
    const record = this.#records.get(txid);
    if (record === undefined) return undefined;
    this.#records.delete(txid);
    this.#stale++;
    this.#vsize -= record.tx.vsize;
    this.#held -= heldBytes(record.tx);
    this.#fees -= record.fee;
    this.version++;
    for (const input of record.tx.inputs) this.#spends.delete(outpointKey(input.txid, input.vout));
    if (++this.#removed > this.#records.size && this.#removed > 1024) {
      this.#order = this.#order.filter((r) => this.#records.get(r.tx.txid) === r);
      this.#removed = 0;
    }
    return record;
  }

  /**
   * At most `limit` txids accepted after sequence number `after`, in order of acceptance, and
   * the sequence number to ask the next page after (null: none is left). Costs a binary search
   * and the page (plus removed records not yet compacted away), whatever the mempool's size.
   */
  page(after: number, limit: number): { txids: Hex[]; next: number | null } {
    const order = this.#order;
    let lo = 0;
    let hi = order.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((order[mid]?.seq as number) <= after) lo = mid + 1;
      else hi = mid;
    }
    const txids: Hex[] = [];
    let last = after;
    let i = lo;
    for (; i < order.length && txids.length < limit; i++) {
      const record = order[i] as MempoolRecord;
      if (this.#records.get(record.tx.txid) !== record) continue;
      txids.push(record.tx.txid);
      last = record.seq as number;
    }
    // Anything present past the page? (removed records in between are skipped.)
    for (; i < order.length; i++) {
      const record = order[i] as MempoolRecord;
      if (this.#records.get(record.tx.txid) === record) return { txids, next: last };
    }
    return { txids, next: null };
  }

  /**
   * Every record, highest fee rate first. The order is kept as the mempool changes (a binary
   * search and an insertion per transaction accepted; removed ones are dropped at the next
   * read, one pass): sorting it again after each change cost ~50 ms per 100,000 records (far
   * more under load) on the host's loop, and a module alternating submit_transaction with
   * get_block_template or get_fee_estimate caused one sort per call. The array is live: callers
   * must not change it, nor hold it across an await.
   */
  byFeeRate(): readonly MempoolRecord[] {
    if (this.#stale > 0) {
      this.#byFeeRate = this.#byFeeRate.filter((r) => this.#records.get(r.tx.txid) === r);
      this.#stale = 0;
    }
    return this.#byFeeRate;
  }
  #byFeeRate: MempoolRecord[] = [];
  /** Removed records still in #byFeeRate. */
  #stale = 0;
  /** Sums over the records, kept as they come and go (info() in O(1)). */
  #vsize = 0;
  #held = 0;
  #fees = 0;

  /** What the records hold together (heldBytes), against maxBytes. */
  get held(): number {
    return this.#held;
  }

  /**
   * The records to evict so that `record` fits under maxBytes: the lowest fee rates first, each
   * strictly lower than the newcomer's (bitcoind's rule for a full mempool, without its rising
   * minimum fee). Throws MempoolFull, evicting nothing, when that cannot make room: the
   * transaction alone is over the bound, or what it would have to evict pays as much as it
   * does. Costs a walk over the records it evicts (plus removed ones not yet compacted away).
   */
  evictionsFor(record: MempoolRecord): MempoolRecord[] {
    const need = heldBytes(record.tx);
    if (need > this.maxBytes) {
      throw new MempoolFull(`transaction ${record.tx.txid} would hold ~${need} bytes of the mempool's ${this.maxBytes} ([chain] max_mempool_mb) alone: it cannot be taken; send a smaller transaction, or the operator raises max_mempool_mb`);
    }
    const evict: MempoolRecord[] = [];
    let free = this.maxBytes - this.#held;
    if (need <= free) return evict;
    const rate = feeRate(record);
    const byRate = this.byFeeRate();
    for (let i = byRate.length - 1; i >= 0 && need > free; i--) {
      const low = byRate[i] as MempoolRecord;
      if (feeRate(low) >= rate) break;
      evict.push(low);
      free += heldBytes(low.tx);
    }
    if (need > free) {
      const lowest = byRate.length > 0 ? feeRate(byRate[byRate.length - 1] as MempoolRecord) : 0;
      throw new MempoolFull(`mempool full: its transactions hold ~${this.#held} of the ${this.maxBytes} bytes [chain] max_mempool_mb allows, and this transaction's fee rate (${rate.toFixed(3)} sat/vB) does not beat enough of them (lowest ${lowest.toFixed(3)} sat/vB) to make room for its ~${need} bytes; pay a higher fee rate, or wait for a block to take transactions out`);
    }
    return evict;
  }
  /** Changes with every transaction added or removed (what depends on the whole pool is cached against it). */
  version = 0;

  /** What goes in the next block: highest fee rate first, skipping what no longer fits in `maxWeight`. */
  select(maxWeight: number): MempoolRecord[] {
    const selected: MempoolRecord[] = [];
    let weight = 0;
    for (const record of this.byFeeRate()) {
      if (weight + record.tx.weight > maxWeight) continue;
      weight += record.tx.weight;
      selected.push(record);
    }
    return selected;
  }

  /** `size_bytes` is the sum of virtual sizes, like bitcoind's getmempoolinfo "bytes". */
  info(): MempoolInfo {
    return { transaction_count: this.#records.size, size_bytes: this.#vsize, total_fee_sats: this.#fees };
  }
}

/** Sats per virtual byte. */
export function feeRate(record: MempoolRecord): number {
  return record.fee / record.tx.vsize;
}

export function mempoolEntry(record: MempoolRecord): MempoolEntry {
  return {
    txid: record.tx.txid,
    fee: record.fee,
    vsize: record.tx.vsize,
    fee_rate: feeRate(record),
    time: record.time,
  };
}
