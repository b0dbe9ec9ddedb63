// How fast one module may hand blocks to the chain (submit_block, queue_received_block).
//
// Regtest proof of work is trivial: a module allowed to submit blocks can mine a full 4 MB
// block in milliseconds and submit them as fast as the chain checks them, each one stored for
// good (blocks, undo data, the transaction index and the UTXO set on disk). Two token buckets
// per module bound that: blocks per minute and bytes the chain writes for them per minute,
// each with a burst of one minute's worth (the bytes at least one maximal block, so any valid
// block can pass). A block is admitted against its size; what the chain then wrote beyond it
// is taken after, into debt. A block over either bucket is refused at once, before it is
// read, naming the limit, its value and when the module may try again; a block the chain does
// not accept gives its tokens back. Over any minute a module's blocks make the chain write at
// most twice the rate (burst and refill) plus one block's writes.
// The chain's own cap on what it stores ([chain] max_chain_mb) bounds all modules together.

import { CapabilityError } from "./types.ts";

/** One module's rate: [modules.limits.NAME] submit_blocks_per_minute and submit_block_mb_per_minute. */
export interface BlockRate {
  blocksPerMinute: number;
  mbPerMinute: number;
}

/** Defaults: a miner module may make two full blocks a minute, or 120 small ones. */
export const DEFAULT_BLOCK_RATE: BlockRate = Object.freeze({ blocksPerMinute: 120, mbPerMinute: 8 });

/** The largest block (weight 4,000,000, every byte at least weight 1): the byte bucket always holds one. */
const MAX_BLOCK_BYTES = 4_000_000;
const MB = 1_000_000;
const MINUTE_MS = 60_000;

class Bucket {
  private tokens: number;
  private last: number;

  constructor(private readonly capacity: () => number, now: number) {
    this.tokens = capacity();
    this.last = now;
  }

  /** Tokens now (refilled at capacity per minute). */
  level(now: number): number {
    const cap = this.capacity();
    this.tokens = Math.min(cap, this.tokens + ((now - this.last) / MINUTE_MS) * cap);
    this.last = now;
    return this.tokens;
  }

  /** Milliseconds until `n` tokens are there (0: now). */
  waitFor(n: number, now: number): number {
    const missing = n - this.level(now);
    return missing <= 0 ? 0 : Math.ceil((missing / this.capacity()) * MINUTE_MS);
  }

  take(n: number): void {
    this.tokens -= n;
  }

  give(n: number, now: number): void {
    this.level(now);
    this.tokens = Math.min(this.capacity(), this.tokens + n);
  }
}

export class BlockBudget {
  private readonly modules = new Map<string, { blocks: Bucket; bytes: Bucket }>();

  constructor(private readonly rate: (module: string) => BlockRate = () => DEFAULT_BLOCK_RATE, private readonly clock: () => number = Date.now) {}

  /**
   * Take one block of `bytes` from `module`'s budget, or throw `quota_exceeded` naming the
   * limit. The charge then either gives the share back (the chain did not accept the block) or
   * takes what the chain wrote for it beyond `bytes`, going into debt.
   */
  take(module: string, bytes: number): BlockCharge {
    const now = this.clock();
    let b = this.modules.get(module);
    if (!b) {
      const r = () => this.rate(module);
      b = { blocks: new Bucket(() => r().blocksPerMinute, now), bytes: new Bucket(() => Math.max(r().mbPerMinute * MB, MAX_BLOCK_BYTES), now) };
      this.modules.set(module, b);
    }
    const r = this.rate(module);
    const blockWait = b.blocks.waitFor(1, now);
    if (blockWait > 0) {
      throw new CapabilityError("quota_exceeded", `module ${module} handed the chain ${r.blocksPerMinute} blocks within the last minute, its limit (submit_blocks_per_minute = ${r.blocksPerMinute}): the block was not read; try again in ${blockWait} ms, or the operator raises submit_blocks_per_minute in [modules.limits.${module}]`);
    }
    const byteWait = b.bytes.waitFor(bytes, now);
    if (byteWait > 0) {
      throw new CapabilityError("quota_exceeded", `module ${module} handed the chain more block bytes than its limit allows (submit_block_mb_per_minute = ${r.mbPerMinute}, bursts of one minute's worth, at least one 4 MB block): this ${bytes}-byte block was not read; try again in ${byteWait} ms, or the operator raises submit_block_mb_per_minute in [modules.limits.${module}]`);
    }
    b.blocks.take(1);
    b.bytes.take(bytes);
    const buckets = b;
    return {
      giveBack: () => {
        const at = this.clock();
        buckets.blocks.give(1, at);
        buckets.bytes.give(bytes, at);
      },
      // What the chain wrote beyond the block's size (undo data, index, UTXO set: a block of
      // many small outputs writes ~25 times its size) is owed: the module's next blocks wait.
      written: (stored: number) => {
        if (stored > bytes) buckets.bytes.take(stored - bytes);
      },
    };
  }
}

/** One admitted block: give its share back (not accepted), or charge what the chain wrote for it. */
export interface BlockCharge {
  giveBack(): void;
  written(storedBytes: number): void;
}
