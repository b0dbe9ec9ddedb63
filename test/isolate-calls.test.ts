// The isolate call path under the real host: the calls a TypeScript module makes in one turn
// leave its isolate together (one crossing, runtime/isolate/in-isolate/main.ts), go to the
// host in one write (the isolate host sends them with ModuleClient.requestEach) and are each
// checked, limited and answered on their own. Real isolate host, real LevelDB.

import test from "ava";
import { startHost } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";

const KINDS = 6;
const ROUNDS = 50;

// One turn: ROUNDS x KINDS calls of six kinds, interleaved, awaited together. Each answer is
// logged as a short code, in the order the calls were made.
const BATCH = inlineModule("batch-calls", ["read_storage", "write_storage", "read_chain_state"], `
  await ctx.storage.openTree("t");
  for (let i = 0; i < 10; i++) await ctx.storage.put("t", "k" + i, { i, text: "value " + i });
  const calls = [];
  for (let r = 0; r < ${ROUNDS}; r++) {
    calls.push(ctx.storage.get("t", "k" + (r % 10)));             // a value
    calls.push(ctx.storage.get("t", "absent" + r));               // null
    calls.push(ctx.storage.get("no-such-tree", "k"));             // the host's error for this call alone
    calls.push(ctx.storage.get("t", "x".repeat(1025 + r)));       // over the key limit (1024 bytes)
    calls.push(ctx.chain.getBlockHeight());                       // another method in the same turn
    calls.push(ctx.storage.put("t", "big" + r, "y".repeat(r % 10 === 0 ? 1100 * 1024 : 10)));  // every tenth over the frame's string limit
  }
  const settled = await Promise.allSettled(calls);
  const codes = settled.map((s, i) => {
    if (s.status === "rejected") return "E:" + s.reason.code + ":" + String(s.reason.message).slice(0, 400);
    if (i % ${KINDS} === ${KINDS - 1}) return "written";
    const v = s.value;
    if (v === null || v === undefined) return "null";
    if (typeof v === "number") return "n:" + v;
    return "v:" + v.i + ":" + v.text;
  });
  ctx.log.info("BATCH", { codes });
  const after = await ctx.storage.get("t", "big1");
  const bigWritten = await ctx.storage.has("t", "big0");
  ctx.log.info("AFTER", { after, bigWritten });
`);

test("a module's many calls in one turn are each answered, in order, with per-call errors kept apart and limits applied per call", async (t) => {
  const h = await startHost(t, { inline: { "batch-calls": BATCH }, grants: { "batch-calls": ["read_storage", "write_storage", "read_chain_state"] } });
  const height = await h.chain.getBlockHeight();
  const codes = (await h.waitForLog(/^BATCH$/, { source: "batch-calls", timeoutMs: 60_000 })).fields!.codes as string[];
  t.is(codes.length, ROUNDS * KINDS, "one answer per call");
  for (let r = 0; r < ROUNDS; r++) {
    const [value, absent, noTree, longKey, tip, put] = codes.slice(r * KINDS, (r + 1) * KINDS);
    const at = `round ${r}`;
    t.is(value, `v:${r % 10}:value ${r % 10}`, `${at}: the value of k${r % 10}, not a neighbour's`);
    t.is(absent, "null", at);
    t.regex(noTree!, /^E:not_found:tree "no-such-tree" does not exist/, at);
    t.regex(longKey!, /^E:invalid_params:.*over the limit of 1024 bytes/, at);
    t.is(tip, `n:${height}`, at);
    if (r % 10 === 0) t.regex(put!, /^E:result_too_large:.*over the protocol limit max_total_string_bytes = \d+/, `${at}: the oversized put fails alone, naming the limit`);
    else t.is(put, "written", `${at}: a put in the same turn as an oversized one is written`);
  }
  const after = (await h.waitForLog(/^AFTER$/, { source: "batch-calls" })).fields!;
  t.deepEqual(after, { after: "y".repeat(10), bigWritten: false }, "the small puts were written, the oversized one was not");
  t.is(h.mustStatus("batch-calls").state, "running", "the refused calls did not end the module");
});
