// A storage_get is answered in the pass that admits it (its read is synchronous: getSync), and
// its answer's reservation of max_unread_bytes (1 MiB, the value quota) is released there too
// (host/session.ts serve). Before, every answer was sent from a promise continuation: the
// requests of one read were admitted first, each reserving 1 MiB, so the 31st of a module's
// Promise.all of 1000 gets waited for max_unread_bytes (32 MiB) and the gets were served 30 at a
// time, each 30 in a write and a crossing into the isolate of their own.

import test from "ava";
import { startHost } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";

const GETTER = inlineModule("getter", ["read_storage", "write_storage"], `
  await ctx.storage.openTree("t");
  await ctx.storage.transaction("t", Array.from({ length: 1000 }, (_, i) => ({ op: "put", key: "k" + i, value: { i, s: "v" + i } })));
  let right = 0;
  let wrong = 0;
  for (let round = 0; round < 3; round++) {
    const values = await Promise.all(Array.from({ length: 1000 }, (_, i) => ctx.storage.get("t", "k" + i)));
    values.forEach((v, i) => (v && v.i === i && v.s === "v" + i ? right++ : wrong++));
  }
  const missing = await Promise.all(Array.from({ length: 10 }, (_, i) => ctx.storage.get("t", "none" + i)));
  ctx.log.info("gets done", { right, wrong, missing: missing.filter((v) => v === null).length });
`);

test("a TypeScript module's Promise.all of 1000 storage_get: each answered with its own key's value, and none waits for max_unread_bytes (each answer's 1 MiB reservation is released as it is sent)", async (t) => {
  t.timeout(180_000);
  const h = await startHost(t, {
    modules: [],
    inline: { getter: GETTER },
    grants: { getter: ["read_storage", "write_storage"] },
    // Defaults but for the rate: 3000 gets at once must not wait for requests_per_second either.
    moduleLimits: { getter: { requests_per_second: 1_000_000, start_timeout_ms: 120_000 } },
  });
  const done = await h.waitForLog(/^gets done$/, { source: "getter", timeoutMs: 120_000 });
  t.deepEqual(done.fields, { right: 3000, wrong: 0, missing: 10 });
  const session = h.manager.session("getter")!;
  t.log(`waited: unread ${session.flowStats.waitedUnread}, in flight ${session.flowStats.waitedInFlight}, cpu ${session.flowStats.waitedCpu}; peak in flight ${session.flowStats.peakInFlight}`);
  t.is(session.flowStats.waitedUnread, 0, "no get waited for room under max_unread_bytes");
  t.is(session.reservedBytes, 0, "every reservation was released");
});
