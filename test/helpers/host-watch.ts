// What a hostile test watches of the host (this test process) while an attack runs: the longest
// turn of its loop in CPU time, its heap and open descriptors (sampled after a forced collection,
// whose own turn is not counted), the growth of its log, and the canary's rounds
// (helpers/canary.ts): how many, how many late or unanswered or failed. One watch per host run;
// finish() makes the assertions every such test makes.

import type { ExecutionContext } from "ava";
import { readdirSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { TestHost } from "./host.ts";
import { canaryRound, type CanaryRound } from "./canary.ts";
import { watchTurns } from "./turns.ts";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;
const MB = 1024 * 1024;
const openFds = () => readdirSync("/proc/self/fd").length;

export interface HostWatch {
  /** Take the longest turn since the last sample, the heap's growth and the open descriptors. */
  sample(): void;
  /**
   * One canary round, counted, then a sample: late when the block was not stored in 5 s,
   * unanswered when RPC was not; a round that failed (mining threw) counts as both, its error kept.
   */
  round(): Promise<CanaryRound>;
  /**
   * Canary rounds in the background, one every `pauseMs` after the last, until the returned
   * `stop()` is called and at least `minRounds` ran; `stop()` resolves when the last round is done.
   * The test's teardown stops them however the test ends.
   */
  canaryLoop(pauseMs: number, minRounds: number): { stop(): Promise<void> };
  /** The rounds so far: how many, late, unanswered, and the host heap's growth at most (MB). */
  readonly tally: { rounds: number; late: number; unanswered: number; heapMb: number; errors: string[] };
  /** t.is(late, 0), t.is(unanswered, 0) and no failed round, for the rounds so far. */
  assertCanary(t: ExecutionContext): void;
  /**
   * Sample, stop watching, log the figures and assert: no turn of 250 ms of CPU (when turns are
   * watched), heap growth under 96 MB, fewer than 200 descriptors more, and a log within
   * `attackers` × (64 KiB + 32 KiB/s) + 1 MiB.
   */
  finish(t: ExecutionContext, attackers: number): Promise<void>;
}

export interface WatchOptions {
  /**
   * Watch every turn of the host's loop (a ticker that keeps the loop busy: default true). Off
   * for a test whose probes time the loop themselves, or that must not add a ticker's turns.
   */
  turns?: boolean;
}

/** Starts watching now; the test's teardown stops the watch however the test ends. */
export function watchHost(t: ExecutionContext, h: TestHost, opts: WatchOptions = {}): HostWatch {
  gc();
  const heap0 = process.memoryUsage().heapUsed;
  const fds0 = openFds();
  const logBytes = () => h.lines.reduce((n, l) => n + Buffer.byteLength(l) + 1, 0);
  const log0 = logBytes();
  const started = Date.now();
  const turns = opts.turns === false ? undefined : watchTurns();
  t.teardown(() => turns?.stop());
  let longestTurn = 0;
  let rounds = 0;
  let late = 0;
  let unanswered = 0;
  const errors: string[] = [];
  let peak = 0;
  let fdsPeak = 0;
  const sample = () => {
    // Forced collections are the test's, not the host's: the turn they run in is not counted.
    longestTurn = Math.max(longestTurn, turns?.reset() ?? 0);
    gc();
    turns?.reset();
    peak = Math.max(peak, process.memoryUsage().heapUsed - heap0);
    fdsPeak = Math.max(fdsPeak, openFds());
  };
  const watch: HostWatch = {
    sample,
    canaryLoop(pauseMs, minRounds) {
      let over = false;
      const loop = (async () => {
        do {
          await watch.round();
          await sleep(pauseMs);
        } while (!over || rounds < minRounds);
      })();
      t.teardown(() => {
        over = true;
      });
      return {
        stop() {
          over = true;
          return loop;
        },
      };
    },
    async round() {
      const r = await canaryRound(h).catch((err: Error): CanaryRound => {
        errors.push(err.message);
        return { mark: h.mark(), height: -1, stored: false, answered: false };
      });
      rounds++;
      if (!r.stored) late++;
      if (!r.answered) unanswered++;
      sample();
      return r;
    },
    get tally() {
      return { rounds, late, unanswered, heapMb: peak / MB, errors };
    },
    assertCanary(t) {
      t.deepEqual(errors, [], "every canary round ran");
      t.true(rounds > 0, "the canary ran");
      t.is(late, 0, `the canary stored every block within 5 s (${late} of ${rounds} late)`);
      t.is(unanswered, 0, `the host answered every RPC call within 5 s (${unanswered} of ${rounds} not)`);
    },
    async finish(t, attackers) {
      sample();
      await turns?.stop();
      const seconds = (Date.now() - started) / 1000;
      const logGrowth = logBytes() - log0;
      t.log(`over ${seconds.toFixed(0)} s: canary rounds ${rounds}, late ${late}, unanswered ${unanswered}; longest host loop turn ${turns ? `${longestTurn.toFixed(0)} ms of CPU (forced collections excluded)` : "not watched"}; heap +${(peak / MB).toFixed(1)} MB at most; open descriptors ${fds0} -> at most ${fdsPeak}, ${openFds()} after; host log +${(logGrowth / 1024).toFixed(0)} KiB`);
      if (turns) t.true(longestTurn < 250, `no turn of the host's loop took 250 ms of its CPU (${longestTurn.toFixed(0)} ms)`);
      t.true(peak < 96 * MB, `host heap grew ${(peak / MB).toFixed(0)} MB`);
      t.true(fdsPeak - fds0 < 200, `the host's open descriptors went from ${fds0} to at most ${fdsPeak}`);
      t.true(logGrowth <= attackers * (64 * 1024 + 32 * 1024 * seconds) + MB, `host log grew ${logGrowth} bytes in ${seconds.toFixed(0)} s`);
    },
  };
  return watch;
}
