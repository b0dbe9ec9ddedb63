// Module timers (HostServices.timers): periodic timers and one-shot tasks that the host keeps
// and delivers into the module as `timer` invocations {id}.
//
// Bounds, so that timers cannot be turned against the host:
// - an interval is at least MIN_INTERVAL_MS (shorter ones are raised to it);
// - a module has at most MAX_TIMERS_PER_MODULE timers and pending tasks (quota_exceeded);
// - runs of one timer never overlap: a tick that comes while the previous run is still going
//   is skipped and counted. The host does not wake for those ticks: a periodic timer is armed
//   again only when its run has ended, for the next tick after it, and the ticks it passed
//   are counted then. A run that never answers costs the host one wake-up per invocation
//   timeout, not one per interval (256 such timers at 50 ms were 5,120 wake-ups a second);
// - each run must answer within the invocation timeout; a run that does not, or fails, is
//   logged and the timer goes on. What failed is said in at most one line per module per
//   FAILURE_LOG_WINDOW_MS, with a count of the rest: a module whose 256 timers fail at every
//   tick made the host build 5,120 warnings a second for its log budget to drop.
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
/** At most one line about a module's failed timer runs per this interval (the rest are counted in it). */
const FAILURE_LOG_WINDOW_MS = 10_000;

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
  /** Times the host woke for this module's timers (a run, or a tick while the module was not running). */
  wakeups: number;
}

type Totals = Omit<TimerStats, "active">;

/** One module's failed runs not yet said in the log (see logFailure). */
interface FailureWindow {
  /** When the last line was written; the next one waits for FAILURE_LOG_WINDOW_MS after it. */
  loggedAt: number;
  unlogged: number;
  last: string;
  timer: NodeJS.Timeout | undefined;
}

export class TimerService {
  private readonly timers = new Map<number, TimerRecord>();
  private readonly byModule = new Map<string, Set<number>>();
  /** Totals per module, kept after timers end (reset by forget). */
  private readonly totals = new Map<string, Totals>();
  private readonly failures = new Map<string, FailureWindow>();
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
    this.arm(rec, rec.intervalMs);
    return rec.id;
  }

  schedule(module: string, delayMs: number): number {
    const rec = this.add(module, true, Math.max(0, delayMs));
    this.arm(rec, rec.intervalMs);
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
    const f = this.failures.get(module);
    if (f) {
      clearTimeout(f.timer);
      this.failures.delete(module);
    }
  }

  stats(module: string): TimerStats {
    const t = this.totals.get(module) ?? { fired: 0, skipped: 0, failed: 0, wakeups: 0 };
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
    if (!this.totals.has(module)) this.totals.set(module, { fired: 0, skipped: 0, failed: 0, wakeups: 0 });
    return rec;
  }

  private arm(rec: TimerRecord, delayMs: number): void {
    rec.handle = setTimeout(() => this.tick(rec), delayMs);
    rec.handle.unref();
  }

  private remove(rec: TimerRecord): void {
    clearTimeout(rec.handle);
    this.timers.delete(rec.id);
    const mine = this.byModule.get(rec.module);
    mine?.delete(rec.id);
    if (mine?.size === 0) this.byModule.delete(rec.module);
  }

  private tick(rec: TimerRecord): void {
    if (this.timers.get(rec.id) !== rec) return;
    const totals = this.totals.get(rec.module);
    if (totals) totals.wakeups++;
    const session = this.opts.session(rec.module);
    if (!session) {
      // Not running: still starting (a task registered in start()), or stopping. A periodic
      // tick is skipped; a task waits for the module (or for forget, when it never runs).
      if (!rec.once) {
        rec.skipped++;
        if (totals) totals.skipped++;
      }
      this.arm(rec, rec.once ? NOT_RUNNING_RETRY_MS : rec.intervalMs);
      return;
    }
    rec.running = true;
    rec.fired++;
    if (totals) totals.fired++;
    if (rec.once) this.remove(rec); // a task runs once; its slot is free as soon as it starts
    const startedAt = Date.now();
    session.invoke("timer", { id: rec.id }, this.invokeTimeoutMs).catch((err: Error) => {
      rec.failed++;
      if (totals && this.totals.get(rec.module) === totals) totals.failed++;
      this.logFailure(rec, err.message);
    }).finally(() => {
      rec.running = false;
      if (rec.once || this.timers.get(rec.id) !== rec) return;
      // The ticks that came while it ran were skipped: count them, and wake for the next one.
      const elapsed = Date.now() - startedAt;
      const passed = Math.floor(elapsed / rec.intervalMs);
      rec.skipped += passed;
      if (totals && this.totals.get(rec.module) === totals) totals.skipped += passed;
      this.arm(rec, rec.intervalMs - (elapsed % rec.intervalMs));
    });
  }

  /**
   * A failed run, said in the module's log: the first at once, then at most one line per
   * FAILURE_LOG_WINDOW_MS counting the failures since, with the last one's reason.
   */
  private logFailure(rec: TimerRecord, message: string): void {
    const log = this.opts.log;
    if (!log) return;
    let f = this.failures.get(rec.module);
    if (!f) this.failures.set(rec.module, (f = { loggedAt: 0, unlogged: 0, last: "", timer: undefined }));
    const now = Date.now();
    if (now - f.loggedAt >= FAILURE_LOG_WINDOW_MS && f.unlogged === 0) {
      f.loggedAt = now;
      log("warn", rec.module, `timer ${rec.id} failed: ${message}`);
      return;
    }
    f.unlogged++;
    f.last = `timer ${rec.id}: ${message}`;
    if (f.timer) return;
    const window = f;
    window.timer = setTimeout(() => {
      window.timer = undefined;
      if (this.failures.get(rec.module) !== window || window.unlogged === 0) return;
      log("warn", rec.module, `${window.unlogged} more timer runs failed in ${FAILURE_LOG_WINDOW_MS / 1000} s (at most one line about them is written per ${FAILURE_LOG_WINDOW_MS / 1000} s); the last: ${window.last}`, { failed: window.unlogged });
      window.loggedAt = Date.now();
      window.unlogged = 0;
      window.last = "";
    }, Math.max(0, f.loggedAt + FAILURE_LOG_WINDOW_MS - now));
    window.timer.unref();
  }
}
