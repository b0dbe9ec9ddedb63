// Sliced work (chain/slices.ts) shares the loop's turns: however many jobs are sliced at once
// (64 blocks submitted together, each read in slices), one turn of the loop runs one slice of
// them, not one slice of each. Measured in CPU time of the loop's thread, which a loaded
// machine does not stretch.

import test from "ava";
import { Slicer, sliceQueueHeld } from "../chain/slices.ts";
import { watchTurns } from "./helpers/turns.ts";

/** A job of ~`ms` of its own work in slices: ticks after every 20 µs of busy work. */
async function job(ms: number): Promise<void> {
  const slicer = new Slicer();
  for (let done = 0; done < ms; done += 0.02) {
    const t0 = performance.now();
    while (performance.now() - t0 < 0.02);
    const pause = slicer.tick();
    if (pause) await pause;
  }
}

test("64 jobs sliced at once share the loop's turns: no turn runs more than a few slices of 4 ms", async (t) => {
  t.timeout(120_000);
  const watch = watchTurns();
  // Started a turn apart, as the host's session starts requests (runtime/turn.ts); each then
  // runs a first slice and waits for its next.
  const jobs: Array<Promise<void>> = [];
  for (let i = 0; i < 64; i++) {
    jobs.push(job(40));
    await new Promise((r) => setImmediate(r));
  }
  await Promise.all(jobs);
  await watch.stop();
  const { longest, turns } = watch;
  t.log(`longest turn ${longest.toFixed(1)} ms of CPU over ${turns} turns (64 jobs of 40 ms in slices of 4 ms)`);
  // One slice is ~4 ms; each job resuming in its own immediate ran every waiting job's slice in one turn (~100 ms here).
  t.true(longest < 30, `longest turn ${longest.toFixed(1)} ms`);
  t.true(turns > 200, `${turns} turns`);
});

test.serial("sliced work that never lets the queue empty: the queue holds the jobs waiting, not every slice since it was last empty", async (t) => {
  // Three jobs pausing 3,000 times each, one always waiting while another runs: the queue
  // never empties until the end. It held all 9,000 entries before it was trimmed from the front.
  let most = 0;
  const job = async () => {
    const slicer = new Slicer(0);
    for (let i = 0; i < 3000; i++) {
      await slicer.pause();
      most = Math.max(most, sliceQueueHeld());
    }
  };
  await Promise.all([job(), job(), job()]);
  t.log(`the queue held at most ${most} entries over 9,000 slices`);
  t.true(most <= 2100, `held ${most}`);
  t.is(sliceQueueHeld(), 0);
});
