// Module timers (HostServices.timers): periodic timers and one-shot tasks that the host keeps
// and delivers into the module as `timer` invocations {id}.
//
// Bounds, so that timers cannot be turned against the host:
// - an interval is at least MIN_INTERVAL_MS (shorter ones are raised to it);
// - a module has at most MAX_TIMERS_PER_MODULE timers and pending tasks (quota_exceeded);
// - runs of one timer never overlap: a tick that comes while the previous run is still going
//   is skipped and counted;
// - each run must answer within the invocation timeout; a run that does not is logged and
//   the timer goes on.
// Timers belong to the module that made them: only it can cancel them, and they die with its
// process (`forget`). Ids are never reused, so an id from a previous process means nothing.

import { CapabilityError } from "../../capabilities/types.ts";
import type { HostSession } from "../session.ts";
import type { LogLevel } from "../../protocol/messages.ts";

const MIN_INTERVAL_MS = 50;
export const MAX_TIMERS_PER_MODULE = 256;
const TIMER_INVOKE_TIMEOUT_MS = 30_000;
/** A due task whose module is not running yet (still starting) is retried this often. */
const NOT_RUNNING_RETRY_MS = 50;

export interface TimerServiceOptions {
  /** The connection of a running module, or undefined. */
  session: (module: string) => HostSession | undefined;
  log?: (level: LogLevel, source: string, message: string, fields?: Record<string, unknown>) => void;
  minIntervalMs?: number;
  maxPerModule?: number;
  invokeTimeoutMs?: number;
}

interface TimerRecord {
  id: number;
  module: string;
  once: boolean;
  intervalMs: number;
  handle: NodeJS.Timeout;
  running: boolean;
  fired: number;
  skipped: number;
  failed: number;
}

export interface TimerStats {
  active: number;
  fired: number;
  skipped: number;
  failed: number;
}

export class TimerService {
  private readonly timers = new Map<number, TimerRecord>();
  private readonly byModule = new Map<string, Set<number>>();
  /** Totals per module, kept after timers end (reset by forget). */
  private readonly totals = new Map<string, { fired: number; skipped: number; failed: number }>();
  private nextId = 1;
  readonly minIntervalMs: number;
  readonly maxPerModule: number;
  private readonly invokeTimeoutMs: number;

  constructor(private readonly opts: TimerServiceOptions) {
    this.minIntervalMs = opts.minIntervalMs ?? MIN_INTERVAL_MS;
    this.maxPerModule = opts.maxPerModule ?? MAX_TIMERS_PER_MODULE;
    this.invokeTimeoutMs = opts.invokeTimeoutMs ?? TIMER_INVOKE_TIMEOUT_MS;
  }

  register(module: string, intervalMs: number): number {
    const rec = this.add(module, false, Math.max(this.minIntervalMs, intervalMs));
    rec.handle = setInterval(() => this.tick(rec), rec.intervalMs);
    rec.handle.unref();
    return rec.id;
  }

  schedule(module: string, delayMs: number): number {
    const rec = this.add(module, true, Math.max(0, delayMs));
    rec.handle = setTimeout(() => this.tick(rec), rec.intervalMs);
    rec.handle.unref();
    return rec.id;
  }

  cancel(module: string, id: number): boolean {
    const rec = this.timers.get(id);
    if (!rec || rec.module !== module) return false; // another module's timer is not this one's to cancel
    this.remove(rec);
    return true;
  }

  /** Drop every timer of `module` (its process ended). */
  forget(module: string): void {
    for (const id of [...(this.byModule.get(module) ?? [])]) {
      const rec = this.timers.get(id);
      if (rec) this.remove(rec);
    }
    this.byModule.delete(module);
    this.totals.delete(module);
  }

  stats(module: string): TimerStats {
    const t = this.totals.get(module) ?? { fired: 0, skipped: 0, failed: 0 };
    return { active: this.byModule.get(module)?.size ?? 0, ...t };
  }

  /** Every timer of every module (for shutdown and tests). */
  get size(): number {
    return this.timers.size;
  }

  private add(module: string, once: boolean, intervalMs: number): TimerRecord {
    const mine = this.byModule.get(module) ?? new Set<number>();
    if (mine.size >= this.maxPerModule) {
      throw new CapabilityError("quota_exceeded", `a module may have at most ${this.maxPerModule} timers and pending tasks at once; cancel some first (cancel_timer)`);
    }
    const rec: TimerRecord = { id: this.nextId++, module, once, intervalMs, handle: undefined as unknown as NodeJS.Timeout, running: false, fired: 0, skipped: 0, failed: 0 };
    this.timers.set(rec.id, rec);
    mine.add(rec.id);
    this.byModule.set(module, mine);
    if (!this.totals.has(module)) this.totals.set(module, { fired: 0, skipped: 0, failed: 0 });
    return rec;
  }

  private remove(rec: TimerRecord): void {
    clearTimeout(rec.handle);
    clearInterval(rec.handle);
    this.timers.delete(rec.id);
    const mine = this.byModule.get(rec.module);
    mine?.delete(rec.id);
    if (mine?.size === 0) this.byModule.delete(rec.module);
  }

  private tick(rec: TimerRecord): void {
    if (this.timers.get(rec.id) !== rec) return;
    const totals = this.totals.get(rec.module);
    const session = this.opts.session(rec.module);
    if (!session) {
      // Not running: still starting (a task registered in start()), or stopping. A periodic
      // tick is skipped; a task waits for the module (or for forget, when it never runs).
      if (rec.once) {
        rec.handle = setTimeout(() => this.tick(rec), NOT_RUNNING_RETRY_MS);
        rec.handle.unref();
      } else {
        rec.skipped++;
        if (totals) totals.skipped++;
      }
      return;
    }
    if (rec.running) {
      rec.skipped++;
      if (totals) totals.skipped++;
      return;
    }
    rec.running = true;
    rec.fired++;
    if (totals) totals.fired++;
    if (rec.once) this.remove(rec); // a task runs once; its slot is free as soon as it starts
    session.invoke("timer", { id: rec.id }, this.invokeTimeoutMs).catch((err: Error) => {
      rec.failed++;
      if (totals && this.totals.get(rec.module) === totals) totals.failed++;
      this.opts.log?.("warn", rec.module, `timer ${rec.id} failed: ${err.message}`);
    }).finally(() => {
      rec.running = false;
    });
  }
}
