// A short, fixed run of each edges fuzz target (fuzz/edges-driver.ts): seeded from fixtures and
// the docs' examples, fixed seed, so a failure replays. Fails on any finding (an error of an
// undocumented type, a wrong answer), a hang (an input that does not finish within the
// watchdog's time) or heap growth. Longer runs: npm run fuzz:edges.

import test from "ava";
import { describe, failed, fuzzTarget, generate, TARGETS } from "../fuzz/edges-driver.ts";

const ITERATIONS: Record<(typeof TARGETS)[number], number> = {
  "config-toml": 400,
  "manifest-toml": 400,
  "registry-index": 400,
  "jsonrpc-body": 300,
  "core-facade-body": 300,
  "http-response": 200,
  "core-answer": 200,
  "zmq-notice": 2000,
};

test("inputs are a pure function of seed and iteration (findings replay)", (t) => {
  const seeds = [Buffer.from("a = 1\n[b]\nc = 'd'\n")];
  const a = generate(seeds, ["[x]"], 42, 17, 1024);
  t.deepEqual(Buffer.from(generate(seeds, ["[x]"], 42, 17, 1024)), Buffer.from(a));
  t.notDeepEqual(Buffer.from(generate(seeds, ["[x]"], 43, 17, 1024)), Buffer.from(a));
  t.deepEqual(Buffer.from(generate(seeds, [], 1, 0, 1024)), seeds[0], "iteration 0 is the first seed itself");
});

test("the watchdog reports an input that hangs, with its iteration", async (t) => {
  t.timeout(120_000);
  const r = await fuzzTarget("hang-probe", { iterations: 20, seed: 1, hangMs: 1500 });
  t.true(failed(r));
  t.is(r.hang?.iteration, 3, describe(r));
});

for (const target of TARGETS) {
  test(`fuzz ${target}: ${ITERATIONS[target]} inputs, no finding, no hang, no heap growth`, async (t) => {
    t.timeout(240_000, "fuzzing on a loaded machine");
    const r = await fuzzTarget(target, { iterations: ITERATIONS[target], seed: 20261204, hangMs: 20_000, maxHeapGrowthMB: 32 });
    t.log(describe(r));
    t.false(failed(r), describe(r));
    t.is(r.iterations, ITERATIONS[target]);
  });
}

test("core-answer's finding (seed 26, iteration 3873: a node's JSON-RPC error with an empty message, once handed on as an error without words) replays clean", async (t) => {
  t.timeout(120_000);
  const r = await fuzzTarget("core-answer", { iterations: 1, seed: 26, only: 3873, hangMs: 20_000 });
  t.false(failed(r), describe(r));
  t.is(r.iterations, 1);
});
