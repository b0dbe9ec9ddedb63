// A fair share of libuv's thread pool between modules.
//
// Every asynchronous LevelDB operation (classic-level) and file-system call runs as a job on libuv's thread pool: one pool per process, a fixed number of threads
// (UV_THREADPOOL_SIZE, 4 unless set before its first use), jobs taken in FIFO order and never
// preempted. Left to libuv, a module that keeps its share of jobs queued (each store admits
// `storage_io_concurrency` at once) delays every other module's job by the whole queue ahead of
// it: two modules iterating over tombstones (100-170 ms a job) filled all four threads.
//
// The host hands the pool module work through one PoolShare instead: at most `jobs` module
// jobs run at once (fewer than the pool's threads, so the host's own work, and the modules'
// jobs already admitted, always find a thread), and a free slot goes to the waiting module
// with the fewest jobs running, ties to the one admitted longest ago (round-robin). A module's
// own jobs are admitted in the order they came (its FIFO). So a module that has nothing
// running waits for the first slot to free, at most one job of those running, never for
// another module's queue.

import { performance } from "node:perf_hooks";

/** Who a job is for: a module's name (its store and its files share the one share). */
export type PoolTenant = string | object;

/** Threads libuv's pool has when UV_THREADPOOL_SIZE is `env` (libuv: 4 unless set, 1-1024). */
export function poolThreads(env: string | undefined = process.env.UV_THREADPOOL_SIZE): number {
  const n = Number.parseInt(env ?? "", 10);
  return Number.isSafeInteger(n) && n > 0 ? Math.min(n, 1024) : 4;
}

/**
 * Threads kept for the host's own work (its files, the chain database's reads, the hosts file
 * read for http_request). Modules' DNS lookups take no thread: capabilities/dns.ts.
 */
const HOST_THREADS = 4;

/** Module jobs at once when the operator leaves it to the host: the threads but HOST_THREADS (at least one). */
export function defaultPoolJobs(threads = poolThreads()): number {
  return Math.max(1, threads - HOST_THREADS);
}

export interface PoolStats {
  /** Module jobs admitted at once. */
  jobs: number;
  running: number;
  waiting: number;
  /** Jobs admitted since start. */
  admitted: number;
  /** Longest job seen: from admission to its settling (what a module with nothing running may wait for). */
  longestJobMs: number;
}

/** Jobs that ended while it was open (PoolShare.watch): their count and the longest. */
export interface PoolWatch {
  readonly jobs: number;
  readonly longestJobMs: number;
  close(): void;
}

interface Tenant {
  readonly queue: Array<() => void>;
  running: number;
  /** Admission number of its last job (0: none since it was last idle). */
  last: number;
}

export class PoolShare {
  #jobs: number;
  readonly #tenants = new Map<PoolTenant, Tenant>();
  #running = 0;
  #waiting = 0;
  #admitted = 0;
  #longest = 0;
  readonly #watches = new Set<{ jobs: number; longestJobMs: number }>();

  constructor(jobs = defaultPoolJobs()) {
    this.#jobs = checkJobs(jobs);
  }

  /** Module jobs admitted at once from now on (jobs running keep their slots). */
  setJobs(jobs: number): void {
    this.#jobs = checkJobs(jobs);
    this.#next();
  }

  /**
   * Runs `fn`, one thread-pool job for `tenant` (or a few in sequence: it holds its slot until
   * it settles), once the share admits it.
   */
  async run<T>(tenant: PoolTenant, fn: () => Promise<T>): Promise<T> {
    let t = this.#tenants.get(tenant);
    if (t === undefined) {
      t = { queue: [], running: 0, last: 0 };
      this.#tenants.set(tenant, t);
    }
    if (this.#running < this.#jobs && this.#waiting === 0) this.#admit(t);
    else {
      const waiter = t;
      await new Promise<void>((resolve) => {
        waiter.queue.push(resolve);
        this.#waiting++;
      });
    }
    const start = performance.now();
    try {
      return await fn();
    } finally {
      const ms = performance.now() - start;
      this.#longest = Math.max(this.#longest, ms);
      for (const w of this.#watches) {
        w.jobs++;
        w.longestJobMs = Math.max(w.longestJobMs, ms);
      }
      t.running--;
      this.#running--;
      if (t.running === 0 && t.queue.length === 0) this.#tenants.delete(tenant);
      this.#next();
    }
  }

  stats(): PoolStats {
    return { jobs: this.#jobs, running: this.#running, waiting: this.#waiting, admitted: this.#admitted, longestJobMs: this.#longest };
  }

  /** Counts the jobs that end from now until `close()`, and the longest of them. */
  watch(): PoolWatch {
    const w = { jobs: 0, longestJobMs: 0, close: () => void this.#watches.delete(w) };
    this.#watches.add(w);
    return w;
  }

  #admit(t: Tenant): void {
    t.running++;
    this.#running++;
    t.last = ++this.#admitted;
  }

  /** Fills free slots: the waiting tenant with the fewest jobs running, then the one admitted longest ago. */
  #next(): void {
    while (this.#running < this.#jobs && this.#waiting > 0) {
      let pick: Tenant | undefined;
      for (const t of this.#tenants.values()) {
        if (t.queue.length === 0) continue;
        if (pick === undefined || t.running < pick.running || (t.running === pick.running && t.last < pick.last)) pick = t;
      }
      if (pick === undefined) return;
      const resolve = pick.queue.shift()!;
      this.#waiting--;
      this.#admit(pick);
      resolve();
    }
  }
}

function checkJobs(jobs: number): number {
  if (!Number.isSafeInteger(jobs) || jobs < 1) throw new RangeError(`pool jobs must be a positive integer, got ${String(jobs)}`);
  return jobs;
}

/** The process's share for storage and files: libuv has one thread pool per process. */
export const threadPool = new PoolShare();
