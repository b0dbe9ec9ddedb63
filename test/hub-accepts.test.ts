// A method's `accepts` (capabilities/types.ts) lets the hub skip the schema's parse for
// parameters checked by hand: it must never pass what the schema refuses, and what it leaves to
// the schema must still be refused in the schema's words. storage_transaction has one.

import test from "ava";
import * as v from "valibot";
import { METHODS } from "../capabilities/families.ts";

const def = METHODS.get("storage_transaction")!;
const accepts = def.accepts!;

const put = (key: unknown, value: unknown = 1) => ({ op: "put", key, value });
const CASES: Array<[string, Record<string, unknown>]> = [
  ["puts and deletes", { tree: "t", ops: [put("a"), { op: "delete", key: "b" }, put("c", { x: [1, "y"] })] }],
  ["no ops", { tree: "t", ops: [] }],
  ["a first part", { tree: "t", ops: [put("a")], part: { id: 7, more: true } }],
  ["the last part", { tree: "t", ops: [put("a")], part: { id: 0xffffffff, more: false } }],
  ["a put of null", { tree: "t", ops: [put("a", null)] }],
  ["extra keys everywhere", { tree: "t", ops: [{ op: "put", key: "a", value: 1, extra: true }], part: { id: 1, more: false, x: 1 }, other: 1 }],
  ["a put without a value", { tree: "t", ops: [{ op: "put", key: "a" }] }],
  ["an unknown op", { tree: "t", ops: [{ op: "upsert", key: "a", value: 1 }] }],
  ["a number key", { tree: "t", ops: [put(5)] }],
  ["an op that is null", { tree: "t", ops: [null] }],
  ["an op that is an array", { tree: "t", ops: [["put", "a", 1]] }],
  ["a tree that is not a string", { tree: 1, ops: [] }],
  ["ops that are not an array", { tree: "t", ops: { 0: put("a") } }],
  ["no ops at all", { tree: "t" }],
  ["too many ops", { tree: "t", ops: Array.from({ length: 10_001 }, (_, i) => put(`k${i}`)) }],
  ["a part id that is negative", { tree: "t", ops: [], part: { id: -1, more: false } }],
  ["a part id that is a fraction", { tree: "t", ops: [], part: { id: 1.5, more: false } }],
  ["a part id over 32 bits", { tree: "t", ops: [], part: { id: 2 ** 32, more: false } }],
  ["a part without more", { tree: "t", ops: [], part: { id: 1 } }],
  ["a part that is null", { tree: "t", ops: [], part: null }],
];

test("storage_transaction's hand check passes only what its schema accepts, and the schema still refuses the rest", (t) => {
  let passed = 0;
  for (const [what, params] of CASES) {
    const schema = v.safeParse(def.params, params);
    if (accepts(params)) {
      passed++;
      t.true(schema.success, `${what}: passed by hand, so the schema must accept it too`);
    } else if (!schema.success) {
      t.regex(v.summarize(schema.issues), /\S/, `${what}: refused with the schema's words`);
    }
  }
  t.is(passed, 6, "the common forms are all passed by hand");
  t.false(accepts(CASES.find(([w]) => w === "too many ops")![1]));
  const tooMany = v.safeParse(def.params, CASES.find(([w]) => w === "too many ops")![1]);
  t.false(tooMany.success);
  t.regex(tooMany.success ? "" : v.summarize(tooMany.issues), /at most 10000 operations per transaction/);
});
