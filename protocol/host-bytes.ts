// What the host holds for all modules together: one cap over the sum of per-module bounds.
//
// Each module's memory in the host is bounded on its own (host/session.ts: max_unread_bytes,
// max_request_bytes_in_flight; storage/store.ts: transactions staged in parts), but nothing
// bounded their sum: the host runs up to MAX_MODULES modules, each of which may hold its
// maxima (32 MiB of answers sent and unread or reserved, 32 MiB of requests being served,
// 32 MiB of staged parts) at once, ~96 MiB a module, 3 GiB for 32 modules.
//
// HostBytes is that cap ([host] module_bytes_mb). Each holder (a module's session, its store)
// has an account whose `measure` says what it holds now, read when needed (no bookkeeping on
// every change). Before work that adds bytes (a request admitted with its params and its
// answer's reservation, a staged part), the holder asks `admits(bytes)`:
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

import { performance } from "node:perf_hooks";

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
  /** Stop counting it (its session closed, its store closed). */
  leave(): void;
}

export class HostBytes {
  #cap = MODULE_BYTES_DEFAULT_MB * 1024 * 1024;
  readonly #accounts = new Set<{ module: string; measure: () => number }>();
  /** Admissions past a fair part refused or made to wait (for tests and metrics). */
  refusedTotal = 0;

  /** The operator's cap in bytes ([host] module_bytes_mb). */
  setCap(bytes: number): void {
    if (!Number.isSafeInteger(bytes) || bytes < 1) throw new RangeError(`module bytes cap ${bytes} is out of range: [host] module_bytes_mb must be a whole number of MiB, at least 1`);
    this.#cap = bytes;
  }

  get cap(): number {
    return this.#cap;
  }

  #totalAt = -1;
  #totalCached = 0;

  /**
   * What every account holds now: read at most once a millisecond (a module waiting for room
   * asks again every few milliseconds; with hundreds waiting, each asking would walk every
   * account). Bytes admitted meanwhile are added to it at once; bytes let go count only at the
   * next reading (it errs on the side of holding back).
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
    const entry = { module, measure };
    this.#accounts.add(entry);
    const fairPart = (): number => Math.floor(this.#cap / 2 / Math.max(1, this.#accounts.size));
    return {
      module,
      fairPart,
      admits: (bytes: number, oneFree = false) => {
        const own = measure();
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
        this.#accounts.delete(entry);
      },
    };
  }
}

/** The host process's one cap, set from [host] module_bytes_mb at start (host/host.ts). */
export const hostBytes = new HostBytes();
