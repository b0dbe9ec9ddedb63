// A least-recently-used map with a fixed capacity in entries and, optionally, a budget in
// bytes (each value weighed once, when it is set): what the embedded chain keeps of blocks and
// UTXOs in memory, in front of its database. A block can hold ~20 MB of host memory (a 4 MB
// block of witness data: its bytes, the hex of its witness items, its pages), so a count alone
// let 64 such blocks hold over a gigabyte.

export interface LruBudget<V> {
  /** Most bytes the entries may weigh together; a value weighing more alone is not kept. */
  maxBytes: number;
  /** What a value holds, estimated from above. */
  weigh: (value: V) => number;
}

export class Lru<K, V> {
  private readonly map = new Map<K, V>();
  private readonly weights = new Map<K, number>();
  #bytes = 0;

  constructor(readonly capacity: number, private readonly budget?: LruBudget<V>) {
    if (!Number.isInteger(capacity) || capacity < 0) throw new RangeError(`LRU capacity must be a non-negative integer, got ${capacity}`);
    if (budget && (!Number.isSafeInteger(budget.maxBytes) || budget.maxBytes < 0)) throw new RangeError(`LRU byte budget must be a non-negative integer, got ${budget.maxBytes}`);
  }

  get size(): number {
    return this.map.size;
  }

  /** What the entries weigh together (0 without a budget). */
  get bytes(): number {
    return this.#bytes;
  }

  get(key: K): V | undefined {
    const value = this.map.get(key);
    if (value === undefined) return undefined;
    // Re-insert: a Map iterates in insertion order, so the first key is the least recent.
    this.map.delete(key);
    this.map.set(key, value);
    return value;
  }

  /** The value, without making it the most recent. */
  peek(key: K): V | undefined {
    return this.map.get(key);
  }

  has(key: K): boolean {
    return this.map.has(key);
  }

  set(key: K, value: V): void {
    this.delete(key);
    if (this.capacity === 0) return;
    const weight = this.budget ? this.budget.weigh(value) : 0;
    if (this.budget && weight > this.budget.maxBytes) return;
    this.map.set(key, value);
    if (this.budget) {
      this.weights.set(key, weight);
      this.#bytes += weight;
    }
    while (this.map.size > this.capacity || (this.budget && this.#bytes > this.budget.maxBytes)) this.delete(this.map.keys().next().value as K);
  }

  delete(key: K): void {
    if (!this.map.delete(key)) return;
    const weight = this.weights.get(key);
    if (weight !== undefined) {
      this.weights.delete(key);
      this.#bytes -= weight;
    }
  }
}
