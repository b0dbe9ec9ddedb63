// Work in slices: a long loop over what a module or a remote party sent (the transactions of a
// submitted block, the inputs of one transaction, the ops of a block's database batch) calls
// `tick()` once per element; every SLICE_MS of work it gives the event loop a turn
// (setImmediate), so other modules, the RPC server and timers are served between slices. The
// whole job takes as long as before (plus a turn per slice); what changes is that no single
// stretch of it holds the host's loop for more than about SLICE_MS.

import { AsyncLocalStorage } from "node:async_hooks";
import { performance } from "node:perf_hooks";

/**
 * Who pays for sliced work. The host's session serves each module request inside
 * `sliceAccount.run(charge, ...)`; every slice, when it ends with a turn of the loop, is
 * charged to that module's host CPU share (host_cpu_ms_per_s), so that work which outlives the
 * request's synchronous part (a submitted block read and connected in slices) still counts. The
 * last, partial slice of a job is not charged, and a first slice run inside the request's
 * synchronous part is charged twice (at most SLICE_MS each way); work outside any request (the
 * host's own mining) has no account. The reading and parsing of an http_request answer is
 * charged the same way (capabilities/http.ts). The account answers how long its module is over
 * its share (ms; 0 or nothing: it is not), for work that can wait (an answer's reading does).
 */
export const sliceAccount = new AsyncLocalStorage<(ms: number) => number | undefined>();

/** Longest stretch of sliced work between two turns of the event loop. */
const SLICE_MS = 4;
/** Elements between two looks at the clock (a look costs ~50 ns; an element ~0.2-20 µs). */
const CHECK_EVERY = 32;

/**
 * Sliced jobs waiting for their next slice, resumed one per turn of the loop, oldest first.
 * Each job used to resume in its own setImmediate: all of them ran in the same turn, so 64
 * blocks submitted at once held the loop for 64 slices (~250-700 ms of CPU in one turn,
 * fuzz/protocol-grammar.ts); now a turn runs one slice of sliced work, however many jobs wait.
 */
const waiting: Array<(() => void) | undefined> = [];
let head = 0;
let scheduled = false;

function resumeNext(): void {
  const resume = waiting[head];
  waiting[head++] = undefined;
  if (head === waiting.length) {
    waiting.length = 0;
    head = 0;
    scheduled = false;
  } else {
    // Under sliced work that never lets the queue empty, what was resumed is dropped from the
    // front now and then, so the array holds the jobs waiting, not every job since it was empty.
    if (head >= 1024 && head * 2 >= waiting.length) {
      waiting.splice(0, head);
      head = 0;
    }
    // Scheduled while the loop runs its immediates: it runs in the next turn, not this one.
    setImmediate(resumeNext);
  }
  resume?.();
}

const turn = (): Promise<void> => new Promise((resolve) => {
  waiting.push(resolve);
  if (!scheduled) {
    scheduled = true;
    setImmediate(resumeNext);
  }
});

/** Entries the queue of waiting slices holds now (waiting or already resumed): tests bound it. */
export function sliceQueueHeld(): number {
  return waiting.length;
}

/** Who a slice is charged to: the function sliceAccount holds, or no one. */
type Account = ((ms: number) => unknown) | undefined;

export class Slicer {
  #deadline: number;
  #count = 0;
  readonly #fixed: { readonly account: Account } | undefined;
  /** Turns given so far (tests check that long work did yield). */
  yields = 0;

  /**
   * `fixed`: charge every slice to this account, taken when the work was asked for, instead of
   * the one sliceAccount holds when the slice ends. A module's storage transaction needs it: the
   * store's write lock may run the work from another request's turn (storage/store.ts).
   */
  constructor(private readonly budgetMs = SLICE_MS, fixed?: { readonly account: Account }) {
    this.#deadline = performance.now() + budgetMs;
    this.#fixed = fixed;
  }

  /** One element done; resolves at once, or after a turn of the loop when the slice is used up. */
  tick(): Promise<void> | undefined {
    if (++this.#count % CHECK_EVERY !== 0 || performance.now() < this.#deadline) return undefined;
    return this.pause();
  }

  /** As tick, for an element that is itself large: looks at the clock every time. */
  due(): Promise<void> | undefined {
    return performance.now() < this.#deadline ? undefined : this.pause();
  }

  /** Give the loop a turn now and start a new slice. */
  async pause(): Promise<void> {
    this.yields++;
    (this.#fixed ? this.#fixed.account : sliceAccount.getStore())?.(performance.now() - (this.#deadline - this.budgetMs));
    await turn();
    this.#deadline = performance.now() + this.budgetMs;
  }
}
