// What the host holds for all modules together: one cap over the sum of per-module bounds.
//
// Each module's memory in the host is bounded on its own (host/session.ts: max_unread_bytes,
// max_request_bytes_in_flight; storage/store.ts: transactions staged in parts), but nothing
// bounded their sum: the host runs up to MAX_MODULES modules, each of which may hold its
// maxima (32 MiB of answers sent and unread or reserved, 32 MiB of requests being served,
// 32 MiB of staged parts) at once, ~96 MiB a module, 3 GiB for 32 modules.
//
// HostBytes is that cap ([host] module_bytes_mb). Each holder (a module's session, its store,
// its metric series: host/services/metrics.ts) has an account whose `measure` says what it holds
// now, read when needed (no bookkeeping on every change). Before work that adds bytes (a request
// admitted with its params and its answer's reservation, a staged part, a new metric series),
// the holder asks `admits(bytes)`:
// - within its fair part, `cap / 2 / accounts`, it is admitted whatever the others hold: a
//   module under its fair part is never held back by the others;
// - past it, it is admitted while the sum of what every account holds, with these bytes, stays
//   within half the cap (the shared half, first come, first served); else it waits or is
//   refused, the caller's choice, naming the key.
// - past it, with the shared half full, a holder within its fair part may still have one
//   request past it at a time (`oneFree`): a request's reservation is often a whole frame
//   (get_block_by_height: 16 MiB for any block), more than a fair part among many modules, and
//   a module within its share must not wait for others that never let go (a module that does
//   not read its socket holds what it was sent for as long as it stays within its limits).
// So the accounts hold at most half the cap shared plus their fair parts (half the cap in all):
// the cap, plus one request per module (its frame and its answer's reservation). Beyond it:
// the fair parts of accounts that were larger before more accounts joined, and what is not
// admitted but sent (events within each module's event_window, invocations), each bounded per
// module.
//
// A holder that may wait (a session's request) does not ask again on a timer: it joins one
// FIFO (`wait`) and is woken when some account lets go of bytes (`released`), in slices of
// WAKE_SLICE per turn of the loop, oldest first; one that still does not fit joins again at
// the back, so modules take turns. Before, each waiting module asked again every 10 ms: 256
// modules waiting cost the host's loop 25,600 admission checks a second while nothing changed.
// What lets go announces it (a session: an answer sent or reservation released, a write taken
// by the kernel, a frame received, its end; a store: a staged transaction finished, expired,
// dropped; a cap or account change). Bytes whose release no one announces are caught by one
// check of the list every WAIT_RECHECK_MS for the whole host, not one timer per module.

import { performance } from "node:perf_hooks";

/** Waiters woken per turn of the loop after a release: the rest in later turns. */
const WAKE_SLICE = 32;

/** While any waits, the list is walked at least this often (releases not announced). */
export const WAIT_RECHECK_MS = 1000;

/** Default cap: what a 2-core machine with 4-8 GB keeps for modules' bytes ([host] module_bytes_mb). */
export const MODULE_BYTES_DEFAULT_MB = 1024;

export interface HeldAccount {
  /** The module it holds bytes for (named in errors). */
  readonly module: string;
  /**
   * Whether `bytes` more may be held now, and on which ground (see the file's header): within
   * its fair part, within the shared half, or as its one request past its fair part (`oneFree`:
   * the caller has none such being served; it marks it until it ends). False: not now.
   */
  admits(bytes: number, oneFree?: boolean): "fair" | "shared" | "one" | false;
  /** Its fair part of the cap now. */
  fairPart(): number;
  /** Stop counting it (its session closed, its store closed); also stops its wait. */
  leave(): void;
  /**
   * Call `wake` once, after some account lets go of bytes (in its turn among the waiters,
   * oldest first); a holder that still does not fit waits again. Waiting already: no change.
   */
  wait(wake: () => void): void;
  /**
   * It no longer waits: what it waited for fits now, found another way than its wake (its own
   * answer let go of bytes and it looked again). Before, such a holder stayed in the waiting list
   * until a pass woke it for nothing (106 of 256 in one run), counted in `waiting`, which makes
   * channels report what they write (writeWatch).
   */
  unwait(): void;
  /** It let go of bytes: waiters may fit now (cheap when none wait). */
  released(): void;
}

export class HostBytes {
  #cap = MODULE_BYTES_DEFAULT_MB * 1024 * 1024;
  readonly #accounts = new Set<{ module: string; measure: () => number }>();
  /** Admissions past a fair part refused or made to wait (for tests and metrics). */
  refusedTotal = 0;
  /** Waiters woken (for tests and metrics). */
  wokenTotal = 0;
  /** Who waits for room, oldest first (a Set keeps insertion order). */
  readonly #waiters = new Set<() => void>();
  /** Waiters left to wake in this pass; a release during a pass asks for another. */
  #passLeft = 0;
  #passAgain = false;
  #passScheduled = false;
  #recheck: NodeJS.Timeout | undefined;

  /** The operator's cap in bytes ([host] module_bytes_mb). */
  setCap(bytes: number): void {
    if (!Number.isSafeInteger(bytes) || bytes < 1) throw new RangeError(`module bytes cap ${bytes} is out of range: [host] module_bytes_mb must be a whole number of MiB, at least 1`);
    this.#cap = bytes;
    this.released();
  }

  /** Bytes were let go: wake the waiters (a pass over them, in slices). */
  released(): void {
    if (this.#waiters.size === 0) return;
    if (this.#passLeft > 0) {
      this.#passAgain = true;
      return;
    }
    this.#passLeft = this.#waiters.size;
    this.#schedulePass();
  }

  get waiting(): number {
    return this.#waiters.size;
  }

  #schedulePass(): void {
    if (this.#passScheduled) return;
    this.#passScheduled = true;
    setImmediate(this.#wakeSlice);
  }

  /** Wakes up to WAKE_SLICE waiters of this pass, oldest first; the rest in the next turn. */
  readonly #wakeSlice = (): void => {
    this.#passScheduled = false;
    this.#totalAt = -1; // the waiters of this slice read the total afresh, once
    let n = Math.min(WAKE_SLICE, this.#passLeft);
    for (const wake of this.#waiters) {
      if (n-- <= 0) break;
      this.#waiters.delete(wake);
      this.#passLeft--;
      this.wokenTotal++;
      wake();
    }
    if (this.#waiters.size === 0) this.#passLeft = 0;
    if (this.#passLeft === 0 && this.#passAgain) {
      this.#passAgain = false;
      this.#passLeft = this.#waiters.size;
    }
    if (this.#passLeft > 0) this.#schedulePass();
  };

  #wait(wake: () => void): void {
    this.#waiters.add(wake);
    this.#recheck ??= setTimeout(this.#recheckNow, WAIT_RECHECK_MS).unref();
  }

  readonly #recheckNow = (): void => {
    this.#recheck = undefined;
    if (this.#waiters.size === 0) return;
    this.released();
    this.#recheck = setTimeout(this.#recheckNow, WAIT_RECHECK_MS).unref();
  };

  #unwait(wake: () => void): void {
    if (!this.#waiters.delete(wake)) return;
    if (this.#passLeft > 0) this.#passLeft--;
  }

  get cap(): number {
    return this.#cap;
  }

  #totalAt = -1;
  #totalCached = 0;

  /**
   * What every account holds now: read at most once a millisecond (the waiters woken in one
   * slice, and requests admitted in one turn, share one walk of every account). Bytes admitted
   * meanwhile are added to it at once; bytes let go count at the next reading (each slice of
   * waiters woken starts one; it errs on the side of holding back).
   */
  total(now = performance.now()): number {
    if (now - this.#totalAt < 1 && this.#totalAt >= 0) return this.#totalCached;
    let sum = 0;
    for (const a of this.#accounts) sum += a.measure();
    this.#totalAt = now;
    this.#totalCached = sum;
    return sum;
  }

  get accounts(): number {
    return this.#accounts.size;
  }

  /** An account for `module`, whose `measure` returns the bytes it holds now (cheaply: it is read at admissions). */
  join(module: string, measure: () => number): HeldAccount {
    // An account whose measure is not a number of bytes (a bug: a NaN reservation once made
    // every comparison false) counts 0 in the total and is admitted nothing itself, so that it
    // holds back only its own module, never the others' shared half.
    const broken = (b: number) => !(Number.isFinite(b) && b >= 0);
    const entry = { module, measure: () => {
      const b = measure();
      return broken(b) ? 0 : b;
    } };
    this.#accounts.add(entry);
    let waiting: (() => void) | undefined;
    const fairPart = (): number => Math.floor(this.#cap / 2 / Math.max(1, this.#accounts.size));
    return {
      module,
      fairPart,
      admits: (bytes: number, oneFree = false) => {
        const own = measure();
        if (broken(own) || broken(bytes)) {
          this.refusedTotal++;
          return false;
        }
        const fair = fairPart();
        let ground: "fair" | "shared" | "one" | false = false;
        if (own + bytes <= fair) ground = "fair";
        else if (this.total() + bytes <= this.#cap / 2) ground = "shared";
        else if (oneFree && own <= fair) ground = "one";
        if (ground === false) {
          this.refusedTotal++;
          return false;
        }
        // What it now holds counts at once, also in a total read this millisecond.
        this.#totalCached += bytes;
        return ground;
      },
      leave: () => {
        if (waiting) this.#unwait(waiting);
        waiting = undefined;
        // Fewer accounts: larger fair parts, and its bytes are no longer counted.
        if (this.#accounts.delete(entry)) this.released();
      },
      unwait: () => {
        if (waiting) this.#unwait(waiting);
        waiting = undefined;
      },
      wait: (wake: () => void) => {
        if (!this.#accounts.has(entry)) return;
        if (waiting && waiting !== wake) this.#unwait(waiting);
        waiting = wake;
        this.#wait(wake);
      },
      released: () => this.released(),
    };
  }
}

/** The host process's one cap, set from [host] module_bytes_mb at start (host/host.ts). */
export const hostBytes = new HostBytes();
