// The chain's reader of submitted transactions and blocks (chain/parse.ts) fuzzed against
// RawTx + describeTransaction (fuzz/chain-parse.ts): a short fixed run, the same seed every
// time, so a failure here replays; the long run is `npm run fuzz -- chain`. And the inputs the
// differential run found, kept.

import test from "ava";
import { formatReport, fuzz } from "../fuzz/driver.ts";
import { chainParseTarget } from "../fuzz/chain-parse.ts";
import { ParseError, parseTransaction } from "../chain/parse.ts";
import { decodeTransaction } from "../chain/serialise.ts";

test("fuzz chain-parse: 3000 mutated transactions read alike by the chain's reader and RawTx, or refused by both (the reader only with ParseError)", async (t) => {
  const r = await fuzz(await chainParseTarget(), { iterations: 3000, seed: 20261205, hangMs: 5000, maxHeapGrowthMb: 48 });
  t.is(r.failures.length, 0, formatReport(r));
  t.is(r.iterations, 3000);
});

test("a segwit marker with only empty witnesses is refused, as RawTx refuses it (found by the differential fuzzer)", async (t) => {
  // Version 2, marker and flag, one input whose witness has no items, five outputs.
  const found = Buffer.from(
    "020000000001010000000000000000000000000000000000000000000000000000000000000000ffffffff03ffffffff0100f2052a0100000001510120000000000000000000000000016500ffffffff0100f2052a01000000015101200000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "hex",
  );
  t.throws(() => decodeTransaction(found), { message: /empty witness/ });
  await t.throwsAsync(parseTransaction(found), { instanceOf: ParseError, message: /superfluous witness record/ });
});
