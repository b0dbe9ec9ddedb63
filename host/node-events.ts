// Events the host produces from what it watches (capabilities/event-types.ts, producer
// "host"): NewTransaction beside MempoolTransactionAdded, FeeRateChanged and difficulty changes
// after each block, BlockMined for blocks modules submitted, and on a timer HealthCheck and
// DiskSpaceLow. Everything here is bounded: one estimate and two header reads per block, one
// statfs and one status list per interval.

import { statfs } from "node:fs/promises";
import type { ChainBackend, ChainEventName, ChainEvents, Hex } from "../chain/backend.ts";
import type { EventBus } from "./events/bus.ts";

export interface NodeEventsOptions {
  chain: ChainBackend;
  bus: EventBus;
  /** The modules' states for HealthCheck. */
  modules: () => Array<{ name: string; state: string }>;
  /** The directory whose free space is watched (the host's data directory). */
  dataDir: string;
  healthEventSeconds: number;
  diskSpaceLowMb: number;
  warn: (message: string) => void;
}

export class NodeEvents {
  private feeRate: number | null = null;
  private timer: NodeJS.Timeout | undefined;
  private diskLow = false;
  /** Blocks submitted by modules, by hash, until the chain connects them (bounded). */
  private readonly submitted = new Map<Hex, string>();

  constructor(private readonly opts: NodeEventsOptions) {}

  /** Chain backend events in, the host's derived events out. */
  onChainEvent<K extends ChainEventName>(name: K, payload: ChainEvents[K]): void {
    if (name === "MempoolTransactionAdded") this.opts.bus.publish("NewTransaction", payload);
    if (name === "NewBlock") {
      const block = payload as ChainEvents["NewBlock"];
      const by = this.submitted.get(block.hash);
      if (by !== undefined) {
        this.submitted.delete(block.hash);
        this.opts.bus.publish("BlockMined", { hash: block.hash, height: block.height, submitted_by: by });
      }
      void this.afterBlock(block.hash).catch((err: Error) => this.opts.warn(`after block ${block.height}: ${err.message}`));
    }
  }

  /** A module's submit_block was accepted: its NewBlock becomes BlockMined too. */
  blockSubmitted(hash: Hex, module: string): void {
    if (this.submitted.size >= 64) this.submitted.delete(this.submitted.keys().next().value!);
    this.submitted.set(hash, module);
  }

  private async afterBlock(hash: Hex): Promise<void> {
    const rate = await this.opts.chain.estimateFee(1);
    if (this.feeRate !== null && rate !== this.feeRate) {
      this.opts.bus.publish("FeeRateChanged", { target_blocks: 1, old_fee_rate: this.feeRate, new_fee_rate: rate });
    }
    this.feeRate = rate;
    const header = await this.opts.chain.getBlockHeader(hash);
    if (!header || header.height === 0) return;
    const parent = await this.opts.chain.getBlockHeader(header.prev_hash);
    if (parent && parent.bits !== header.bits) {
      const change = { height: header.height, old_bits: parent.bits, new_bits: header.bits };
      this.opts.bus.publish("MiningDifficultyChanged", change);
      this.opts.bus.publish("DifficultyAdjusted", change);
    }
  }

  start(): void {
    const seconds = this.opts.healthEventSeconds;
    if (seconds <= 0 && this.opts.diskSpaceLowMb <= 0) return;
    const interval = (seconds > 0 ? seconds : 60) * 1000;
    this.timer = setInterval(() => void this.tick(seconds > 0).catch((err: Error) => this.opts.warn(`periodic checks: ${err.message}`)), interval);
    this.timer.unref();
  }

  /** One round of the periodic checks (exposed for tests). */
  async tick(health = true): Promise<void> {
    if (health) {
      const modules = this.opts.modules().map((m) => ({ module: m.name, state: m.state, healthy: m.state === "running" }));
      this.opts.bus.publish("HealthCheck", { modules, chain_height: await this.opts.chain.getBlockHeight().catch(() => -1) });
    }
    if (this.opts.diskSpaceLowMb > 0) {
      const fs = await statfs(this.opts.dataDir);
      const free = fs.bavail * fs.bsize;
      const threshold = this.opts.diskSpaceLowMb * 1024 * 1024;
      // Once per crossing below the threshold, not at every tick.
      if (free < threshold && !this.diskLow) {
        this.opts.bus.publish("DiskSpaceLow", { path: this.opts.dataDir, free_bytes: free, total_bytes: fs.blocks * fs.bsize, threshold_bytes: threshold });
      }
      this.diskLow = free < threshold;
    }
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
