// The turns of this process's event loop, watched from the outside: how much CPU time of the
// loop's thread passed between two of them (a loaded machine stretches wall time, not this).

/** CPU time (user + system) of this thread, in ms. */
export function threadCpuMs(): number {
  const u = process.threadCpuUsage();
  return (u.user + u.system) / 1000;
}

export interface TurnWatch {
  /** The longest turn so far, in ms of the thread's CPU. */
  readonly longest: number;
  /** Turns seen so far. */
  readonly turns: number;
  /** Start a new measurement: returns the longest turn until now. */
  reset(): number;
  /** Stop watching (after the turn in progress). */
  stop(): Promise<void>;
}

/** Watch every turn of the loop (one setImmediate each) until stop(). */
export function watchTurns(): TurnWatch {
  let longest = 0;
  let turns = 0;
  let running = true;
  const ticker = (async () => {
    let last = threadCpuMs();
    while (running) {
      await new Promise((r) => setImmediate(r));
      const now = threadCpuMs();
      longest = Math.max(longest, now - last);
      last = now;
      turns++;
    }
  })();
  return {
    get longest() { return longest; },
    get turns() { return turns; },
    reset() {
      const was = longest;
      longest = 0;
      return was;
    },
    async stop() {
      running = false;
      await ticker;
    },
  };
}
