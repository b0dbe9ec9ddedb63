// The host's loop shared by all modules: a budget per turn of the event loop.
//
// Each module is held to its own share of the host's time (host/session.ts FlowLimits), but
// nothing there bounds the sum within one turn: with many modules flooding at once, the loop
// ran one socket callback after another (decoding, serving, encoding answers) for hundreds of
// milliseconds before a timer, the RPC server or a quiet module's block event got its turn.
//
// TurnBudget bounds it. Work on a module's input (a chunk read from its socket, its stdout and
// stderr, requests waiting for their share) asks `overBudget()` first: once the work done since
// the turn's first such callback passes `budgetMs`, the caller does not do its work now but
// `park()`s it, and stops reading its socket or pipe meanwhile (the kernel holds the bytes, the
// module's writes block). At the end of the turn (setImmediate) parked work is resumed in the
// order it was parked (round-robin across modules: each parks at most once at a time and goes
// to the back of the queue), again only until the budget is spent; the rest waits one more turn.
// A module's own input stays in order: what it sent is handled in the order it was read.
//
// The measure is wall time on the loop since the turn's first gated callback, so it includes
// what the callbacks cost beyond their own code (garbage collection, answers encoded in
// promise continuations). One callback is never cut: a turn can overrun by one chunk's work.

import { AsyncResource } from "node:async_hooks";
import { performance } from "node:perf_hooks";

/**
 * Default work per turn (and per end-of-turn round of parked work) before new work is parked;
 * the host sets the operator's [host] turn_budget_ms (host/config.ts) with setBudget at start.
 */
export const TURN_BUDGET_MS = 5;

export class TurnBudget {
  private windowStart = 0;
  private endScheduled = false;
  private queue: Array<() => void> = [];
  private head = 0;
  /** Work parked over the process's life (for tests and metrics). */
  parkedTotal = 0;
  /** Turns ended with parked work left for the next one. */
  carriedTurns = 0;

  constructor(public budgetMs = TURN_BUDGET_MS) {}

  /** The operator's budget ([host] turn_budget_ms): a whole number of milliseconds, 1 to 1000. */
  setBudget(ms: number): void {
    if (!Number.isInteger(ms) || ms < 1 || ms > 1000) {
      throw new RangeError(`turn budget ${ms} ms is out of range: [host] turn_budget_ms must be a whole number from 1 to 1000`);
    }
    this.budgetMs = ms;
  }

  /** True when this turn's work passed the budget: park instead of working now. `now`: the caller's clock reading of this moment, when it has one. */
  overBudget(now = performance.now()): boolean {
    if (this.windowStart === 0) {
      this.windowStart = now;
      this.scheduleEnd();
      return false;
    }
    return now - this.windowStart >= this.budgetMs;
  }

  /** Run `resume` in a later turn, after what was parked before it. */
  park(resume: () => void): void {
    // Resumed in the parker's async context (runtime/process.ts moduleScope: an error that
    // escapes is still attributed to the module whose input caused it), and an error of one
    // piece is thrown in that context on its own, never stopping the others.
    this.queue.push(AsyncResource.bind(() => {
      try {
        resume();
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }));
    this.parkedTotal++;
    this.scheduleEnd();
  }

  /** Work parked and not yet resumed. */
  get waiting(): number {
    return this.queue.length - this.head;
  }

  private scheduleEnd(): void {
    if (this.endScheduled) return;
    this.endScheduled = true;
    setImmediate(this.endTurn);
  }

  private readonly endTurn = (): void => {
    this.endScheduled = false;
    // Parked work gets a window of its own; at least one piece runs each turn, so everything
    // parked is resumed however busy the loop is. Work parked again while this runs goes to
    // the back of the queue.
    this.windowStart = performance.now();
    const end = this.queue.length;
    let first = true;
    while (this.head < end && (first || performance.now() - this.windowStart < this.budgetMs)) {
      first = false;
      const resume = this.queue[this.head]!;
      this.queue[this.head++] = undefined as unknown as () => void;
      resume();
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    // The next turn's work starts its own window.
    this.windowStart = 0;
    if (this.waiting > 0) {
      this.carriedTurns++;
      this.scheduleEnd();
    }
  };
}

/** The host process's one budget, shared by every module's channel, output and requests. */
export const hostTurn = new TurnBudget();
