// The "did you mean" guess (capabilities/catalogue.ts closest) is asked with names a JSON-RPC
// client or a module controls, against candidates that grow with the modules loaded (every
// module's RPC methods): its work is bounded by CLOSEST_MAX_CELLS edit-distance cells.

import test from "ava";
import { closest, CLOSEST_MAX_CELLS } from "../capabilities/catalogue.ts";

const names = (n: number) => Array.from({ length: n }, (_, i) => `module${i % 50}.method_of_some_length_${i}`);

test("closest finds a near name among a few, and skips names whose length alone is too far", (t) => {
  t.is(closest("module3.method_of_some_length_3x", names(10)), "module3.method_of_some_length_3");
  t.is(closest("abc", ["abd", "a".repeat(5000)]), "abd");
});

test("closest over 50 modules x 256 methods stops after CLOSEST_MAX_CELLS: the nearest name, placed past the budget, is not compared (a farther one before it is the guess)", (t) => {
  const many = names(12_800);
  const query = "module7.method_of_some_length_12757x";
  // Each comparison costs about (37 + 1) x (36 + 1) cells: the budget covers ~700 of 12,800.
  const compared = Math.floor(CLOSEST_MAX_CELLS / (38 * 37));
  t.true(compared < 12_757);
  const guess = closest(query, many);
  t.not(guess, "module7.method_of_some_length_12757", "the nearest name sits past the budget");
  t.regex(guess ?? "", /^module\d+\.method_of_some_length_\d+$/, "a guess from the names compared");
  t.is(closest(query, [...many.slice(0, 10), "module7.method_of_some_length_12757"]), "module7.method_of_some_length_12757");
});
