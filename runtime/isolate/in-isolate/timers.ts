// setTimeout, setInterval, clearTimeout and clearInterval of a module's isolate (with
// manage_timers). The timers live here, in the isolate: a binary heap ordered by deadline, then
// by the order they were set (Node's and the HTML spec's order for equal deadlines). The host
// sees at most one of them: ONE one-shot host task (schedule_task), armed for the earliest
// deadline, moved when an earlier one is set or the earliest is cleared, cancelled when none is
// left. When it fires, the callbacks that are due run, each as its own turn (the promise jobs it
// queued run before the next starts), for at most one slice of time (the isolate host's
// invocation slice): what is still due then waits for the next slice, the host task armed again
// at once, so that many callbacks due together never make one crossing run past cpu_time_ms,
// and the module's answers, events and calls go in between.
//
// Bounded by construction: at most MAX_PENDING_TIMERS timers wait here (past it setTimeout
// throws a RangeError naming the constant), each in the module's own heap (memory_mb); the host
// holds one task for all of them, not one per timer as before (10,000 setTimeout(0) in one turn
// were 10,000 host requests, 9,744 of them refused past the host's 256 timers per module, as
// many log lines, and the module's backlog filled).
//
// Nothing here is a security boundary (see main.ts): it gives modules what JavaScript code
// expects of these functions.

/** The most timers that may wait in one isolate; past it setTimeout and setInterval throw a RangeError. */
export const MAX_PENDING_TIMERS = 100_000;
/** Node's longest delay (2^31-1 ms); a longer one is 1 ms, as in Node, with a warning (once). */
const TIMEOUT_MAX = 2 ** 31 - 1;
/** The longest delay the host's schedule_task takes (capabilities/timers.ts, MAX_TIMER_SECONDS): a later deadline is armed for this, and again from there. */
const HOST_MAX_DELAY_MS = 2_000_000_000;
/**
 * After each callback the loop yields this many times, so that the promise jobs the callback
 * queued (and theirs, this many levels deep: an async function awaiting an async function)
 * run before the next callback starts, as Node drains its microtasks between two timers.
 */
const DRAIN_HOPS = 4;

type Fn = (...args: unknown[]) => unknown;

/** What the shim needs of the rest of the bootstrap. */
export interface TimerHost {
  /** schedule_task: runs `fn` once after delaySeconds; resolves with the task's id. */
  after(delaySeconds: number, fn: () => unknown): Promise<unknown>;
  /** cancel_timer. */
  cancel(id: unknown): Promise<unknown>;
  log(level: "warn" | "error", message: string): void;
  /** How long one slice of due callbacks may run, in ms. */
  sliceMs(): number;
}

interface Globals {
  setTimeout: unknown;
  setInterval: unknown;
  clearTimeout: unknown;
  clearInterval: unknown;
}

// Taken before module code runs: the shim's own bookkeeping does not go through what a module
// may replace.
const apply = Reflect.apply;
const promiseThen = Promise.prototype.then;
const resolved = Promise.resolve();
const clock = Date.now;
const now = () => apply(clock, Date, []) as number;
const later = (fn: () => void) => apply(promiseThen, resolved, [fn]);

/** The host task armed for the earliest deadline. */
interface Armed {
  at: number;
  id: unknown;
  /** Replaced (moved or no longer needed): cancelled as soon as its id is known. */
  dropped: boolean;
}

export function installTimers(global: Globals, host: TimerHost): void {
  const heap: Timeout[] = [];
  const byId = new Map<number, Timeout>();
  let nextSeq = 1;
  let nextId = 1;
  let armed: Armed | null = null;
  let inFlight = false;
  let rearmQueued = false;
  let running = false;
  let failing = false;
  let warnedOverflow = false;

  const before = (a: Timeout, b: Timeout) => a.at < b.at || (a.at === b.at && a.seq < b.seq);
  const place = (t: Timeout, i: number) => {
    heap[i] = t;
    t.slot = i;
  };
  const up = (i: number) => {
    const t = heap[i]!;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(t, heap[p]!)) break;
      place(heap[p]!, i);
      i = p;
    }
    place(t, i);
  };
  const down = (i: number) => {
    const t = heap[i]!;
    const n = heap.length;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && before(heap[c + 1]!, heap[c]!)) c++;
      if (!before(heap[c]!, t)) break;
      place(heap[c]!, i);
      i = c;
    }
    place(t, i);
  };
  const insert = (t: Timeout) => {
    t.seq = nextSeq++;
    place(t, heap.length);
    up(t.slot);
    if (t.id) byId.set(t.id, t);
    if (t.slot === 0) rearmSoon();
  };
  const remove = (t: Timeout) => {
    const i = t.slot;
    if (i < 0) return;
    t.slot = -1;
    const last = heap.pop()!;
    if (last !== t) {
      place(last, i);
      down(i);
      up(last.slot);
    }
    if (i === 0) rearmSoon();
  };
  const full = (what: string) => {
    if (heap.length >= MAX_PENDING_TIMERS) {
      throw new RangeError(`${what}: ${heap.length} timers are waiting already, the most this module may have (MAX_PENDING_TIMERS, ${MAX_PENDING_TIMERS}); clear some (clearTimeout) or wait for them before setting more`);
    }
  };
  /** A delay as Node takes it: a number of ms up to 2^31-1; above, 1 ms (with one warning); below 0 or not a number, 0. */
  const delayOf = (what: string, ms: unknown, least: number) => {
    let d = Number(ms);
    if (d > TIMEOUT_MAX) {
      if (!warnedOverflow) {
        warnedOverflow = true;
        host.log("warn", `${what}: ${d} ms does not fit into a 32-bit signed integer (more than 2147483647 ms, as in Node); the delay was set to 1 ms (said once)`);
      }
      d = 1;
    }
    // Not Math.max: NaN (an object, undefined) is `least` too.
    return Number.isNaN(d) || d < least ? least : d;
  };

  class Timeout {
    at = 0;
    seq = 0;
    /** Its place in the heap; -1 when not waiting. */
    slot = -1;
    /** Its number (Symbol.toPrimitive), 0 until asked for. */
    id = 0;
    /** Cleared: never runs again, refresh() does nothing. */
    cleared = false;
    referenced = true;
    readonly callback: Fn;
    readonly delay: number;
    readonly repeat: boolean;
    readonly args: unknown[] | undefined;
    constructor(callback: Fn, delay: number, repeat: boolean, args: unknown[] | undefined) {
      this.callback = callback;
      this.delay = delay;
      this.repeat = repeat;
      this.args = args;
    }
    /** The module's lifetime does not depend on its timers: kept for code written for Node, it changes nothing. */
    ref(): this {
      this.referenced = true;
      return this;
    }
    /** See ref(). */
    unref(): this {
      this.referenced = false;
      return this;
    }
    hasRef(): boolean {
      return this.referenced;
    }
    /** Starts its delay again from now; a timeout that has run is set again, as in Node. */
    refresh(): this {
      if (this.cleared) return this;
      if (this.slot < 0) {
        if (this.repeat && this === current) {
          // An interval refreshed from its own callback: re-armed from now when it returns.
          this.at = now() + this.delay;
          refreshed = true;
          return this;
        }
        full("refresh");
      } else remove(this);
      this.at = now() + this.delay;
      insert(this);
      return this;
    }
    close(): this {
      clear(this);
      return this;
    }
    [Symbol.toPrimitive](): number {
      if (!this.id) {
        this.id = nextId++;
        if (this.slot >= 0 || this === current) byId.set(this.id, this);
      }
      return this.id;
    }
  }
  const dispose = (Symbol as { dispose?: symbol }).dispose;
  if (dispose) {
    Object.defineProperty(Timeout.prototype, dispose, {
      value(this: Timeout) {
        clear(this);
      },
    });
  }
  let current: Timeout | null = null;
  let refreshed = false;

  const set = (repeat: boolean) => {
    const what = repeat ? "setInterval" : "setTimeout";
    return (callback: unknown, ms?: unknown, ...args: unknown[]): Timeout => {
      if (typeof callback !== "function") throw new TypeError(`${what}(callback, ms): callback must be a function`);
      full(what);
      // An interval of 0 would be due again at once, for ever: 1 ms at least, as in Node.
      const t = new Timeout(callback as Fn, delayOf(what, ms, repeat ? 1 : 0), repeat, args.length > 0 ? args : undefined);
      t.at = now() + t.delay;
      insert(t);
      return t;
    };
  };
  const clear = (timer: unknown) => {
    const t = timer instanceof Timeout ? timer : typeof timer === "number" || typeof timer === "string" ? byId.get(Number(timer)) : undefined;
    if (!t || t.cleared) return;
    t.cleared = true;
    if (t.id) byId.delete(t.id);
    remove(t);
  };

  // -- the host task ------------------------------------------------------------------------
  const drop = (a: Armed) => {
    a.dropped = true;
    if (a.id !== undefined) apply(promiseThen, host.cancel(a.id), [undefined, () => {}]);
  };
  function rearmSoon() {
    if (rearmQueued) return;
    rearmQueued = true;
    later(rearm);
  }
  /** Keeps one host task armed for the earliest deadline (one request in flight at a time: its answer looks again). */
  function rearm() {
    rearmQueued = false;
    if (running || inFlight) return;
    const top = heap[0];
    if (armed && top && armed.at === top.at) return;
    if (armed) {
      drop(armed);
      armed = null;
    }
    if (!top) return;
    const a: Armed = { at: top.at, id: undefined, dropped: false };
    armed = a;
    inFlight = true;
    const delayMs = Math.min(HOST_MAX_DELAY_MS, Math.max(0, Math.ceil(top.at - now())));
    apply(promiseThen, host.after(delayMs / 1000, () => fire(a)), [
      (id: unknown) => {
        inFlight = false;
        a.id = id;
        failing = false;
        if (a.dropped) drop(a);
        rearmSoon();
      },
      (err: unknown) => {
        inFlight = false;
        if (armed === a) armed = null;
        // quota_exceeded (the module holds all its host timers itself) and the like: the timers
        // wait until the next setTimeout or clearTimeout tries again. Said once per failure run.
        if (!failing) {
          failing = true;
          host.log("error", `setTimeout/setInterval: ${heap.length} timers wait, and the host task that runs them could not be set (${err && (err as Error).message ? (err as Error).message : String(err)}); the next setTimeout or clearTimeout tries again`);
        }
      },
    ]);
  }

  /** The host task `a` fired: run what is due, for one slice at most. */
  async function fire(a: Armed): Promise<void> {
    if (armed === a) armed = null;
    if (running) return;
    running = true;
    try {
      const end = now() + host.sliceMs();
      let ran = 0;
      while (heap.length > 0) {
        const t = heap[0]!;
        const at = now();
        if (t.at > at || (ran > 0 && at >= end)) break;
        remove(t);
        ran++;
        if (!t.repeat && t.id) byId.delete(t.id);
        current = t;
        refreshed = false;
        try {
          if (t.args) apply(t.callback, t, t.args);
          else apply(t.callback, t, []);
        } catch (err) {
          host.log("error", `a ${t.repeat ? "setInterval" : "setTimeout"} callback threw: ${describe(err)}`);
        }
        for (let i = 0; i < DRAIN_HOPS; i++) await undefined;
        current = null;
        if (t.repeat && !t.cleared && t.slot < 0) {
          if (!refreshed) {
            // From the time it was due, not from when it ran; ticks it missed are skipped, not run in a burst.
            const late = now() - t.at;
            t.at += late < t.delay ? t.delay : t.delay * (Math.floor(late / t.delay) + 1);
          }
          insert(t);
        } else if (t.slot < 0 && t.id) {
          // Numbered during its own callback (+this) and not set again: no longer known by it.
          byId.delete(t.id);
        }
      }
    } finally {
      current = null;
      running = false;
      rearm();
    }
  }

  global.setTimeout = set(false);
  global.setInterval = set(true);
  global.clearTimeout = clear;
  global.clearInterval = clear;
}

function describe(err: unknown): string {
  try {
    const stack = err && typeof (err as Error).stack === "string" ? (err as Error).stack! : "";
    return (stack || String(err)).slice(0, 4000);
  } catch {
    return "(an error that cannot be read)";
  }
}
