// The embedded chain's memory pool, the part of bitcoind's txmempool.cpp it needs: the
// accepted transactions with their fees, which outpoints they spend (conflicts are found by
// outpoint, in O(1)), and block-template selection by fee rate. What may enter is decided by
// the chain (./embedded.ts acceptToMempool, against the UTXO set and ./validation.ts); this
// file only keeps what was accepted. Not persisted: a restarted chain starts with it empty.

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

export class Mempool {
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
    this.#byFeeRate = undefined;
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
    this.#byFeeRate = undefined;
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
   * Every record, highest fee rate first. The order is kept until the mempool changes: a
   * module asking for templates or fee estimates in a loop costs one sort per change of the
   * mempool, not one per call (100,000 records take ~50 ms to sort). Callers must not change it.
   */
  byFeeRate(): readonly MempoolRecord[] {
    this.#byFeeRate ??= this.records().sort((a, b) => feeRate(b) - feeRate(a));
    return this.#byFeeRate;
  }
  #byFeeRate: MempoolRecord[] | undefined;
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
    let size = 0;
    let fees = 0;
    for (const record of this.#records.values()) {
      size += record.tx.vsize;
      fees += record.fee;
    }
    return { transaction_count: this.#records.size, size_bytes: size, total_fee_sats: fees };
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
