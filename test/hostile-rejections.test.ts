// A TypeScript module's own unhandled promise rejections (issue #8), under the real host and
// sandbox, next to the canary ("good", which stores every block). The probe leaves promises
// rejected and unhandled everywhere module code runs: after an await (in a loop, a thousand
// per turn, with 64 KiB messages, with values that are not errors), in an event handler and in
// a JSON-RPC handler that also returns an answer. isolated-vm fails the task that ran the code
// with the first such promise; the isolate host reports it in the module's log, at most 10 a
// second, the rest counted in one line a second, each line cut, then held to the module's log
// budget by the host. Checks: the rejections are in the log (before the fix those after an
// await were dropped unseen), the flood's lines stay within that rate, the JSON-RPC caller gets
// the handler's answer (invocations cross in batches and each answer leaves on its own, so the
// task's rejection no longer takes it: before, the caller got module_error, "answer is lost"),
// the canary stores every block within 5 s, RPC answers within 5 s, and the probe restarts.

import test from "ava";
import { buildModulesDir, sleep, startHost, tempDir, GOOD_GRANTS } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";
import { post } from "./helpers/rpc.ts";
import { canaryRound } from "./helpers/canary.ts";

const PROBE = inlineModule("t-rejects", ["read_chain_state", "subscribe_events", "register_rpc_endpoint"], `
  await ctx.rpc.register("lost", "answers 42, leaving a promise rejected on the way", () => {
    Promise.reject(new Error("rejected in an rpc handler"));
    return 42;
  });
  ctx.events.on("NewBlock", () => { Promise.reject(new Error("rejected in an event handler")); });
  void (async () => {
    const end = Date.now() + 4000;
    for (let i = 0; Date.now() < end; i++) {
      await ctx.chain.getBlockHeight();
      if (i % 4 === 0) Promise.reject(new Error("rejected after an await " + i + " " + "x".repeat(65536)));
      else if (i % 4 === 1) for (let j = 0; j < 1000; j++) Promise.reject(new Error("one of a thousand " + j));
      else if (i % 4 === 2) Promise.reject({ notAnError: "y".repeat(1 << 20) });
      else Promise.reject(new Proxy(new Error("proxied"), { get() { throw new Error("trap threw"); } }));
    }
    ctx.log.info("flood over");
  })();
`);

test("a module's unhandled promise rejections (after an await, in a flood, in event and JSON-RPC handlers, with huge or trapped values) are reported in its log at most 10 lines a second, each cut; the RPC caller still gets the handler's answer; the canary gets every block, RPC answers, the probe restarts", async (t) => {
  t.timeout(180_000);
  const dir = await tempDir(t);
  await buildModulesDir(dir, ["good"], { "t-rejects": PROBE });
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, "t-rejects": ["read_chain_state", "subscribe_events", "register_rpc_endpoint"] },
    // A budget far above what the reports may use: the rate seen is the isolate host's own.
    moduleLimits: { "t-rejects": { log_bytes_per_second: 16 * 1024 * 1024 } },
  });
  await h.waitForState("good", "running", 30_000);
  await h.waitForState("t-rejects", "running", 30_000);
  const start = h.mark();
  const t0 = Date.now();

  let late = 0;
  let unanswered = 0;
  let rpcAnswer: any;
  const reportsOf = () => h.logsOf("t-rejects", start).filter((r) => r.message.startsWith("unhandled promise rejection: "));
  // During the flood, then (its rate spent) until the handlers' rejections have been reported.
  const flooding = () => !h.logsOf("t-rejects", start).some((r) => r.message === "flood over");
  const handlersReported = () => ["rejected in an event handler", "rejected in an rpc handler"].every((m) => reportsOf().some((r) => r.message.includes(m)));
  for (let i = 0; i < 30 && (i < 3 || flooding() || !handlersReported()); i++) {
    const { stored, answered } = await canaryRound(h);
    if (!stored) late++;
    if (!answered) unanswered++;
    rpcAnswer = await post(h, { jsonrpc: "2.0", id: 1, method: "t-rejects.lost", params: {} }).then((a) => a.json);
    await sleep(500);
  }
  const seconds = (Date.now() - t0) / 1000;
  t.is(late, 0, "the canary stored every block within 5 s");
  t.is(unanswered, 0, "the host answered every RPC call within 5 s");

  const lines = h.logsOf("t-rejects", start);
  const reports = reportsOf();
  const summaries = lines.filter((r) => /^\d+ more unhandled promise rejections not shown \(at most 10 a second are reported\)$/.test(r.message));
  t.log(`${reports.length} reports and ${summaries.length} summaries in ${seconds.toFixed(1)} s`);
  t.true(reports.some((r) => /^unhandled promise rejection: Error: rejected after an await \d+ x+/.test(r.message)), "a rejection after an await is reported with its message");
  t.true(reports.some((r) => /rejected in an event handler/.test(r.message)), "a rejection in an event handler is reported");
  t.true(reports.some((r) => /rejected in an rpc handler/.test(r.message)), "a rejection in a JSON-RPC handler is reported");
  t.true(reports.some((r) => r.message === "unhandled promise rejection: a rejected value that is not an Error"), "a rejected plain object is named, not copied into the log");
  t.true(summaries.length > 0, "the flood beyond the rate is counted in a summary line");
  t.true(reports.length <= 10 * (Math.ceil(seconds) + 1), `at most 10 reports a second (${reports.length} in ${seconds.toFixed(1)} s)`);
  t.true(lines.every((r) => r.message.length <= 8192), "every line is cut to the module log's message limit");

  t.is(rpcAnswer?.result, 42, `the JSON-RPC caller gets the handler's answer, not a hang or a lost answer: ${JSON.stringify(rpcAnswer)?.slice(0, 300)}`);
  t.is(h.status("t-rejects")?.state, "running", "the probe keeps running");

  await h.manager.reload("t-rejects");
  await h.waitForState("t-rejects", "running", 30_000);
  const mark = h.mark();
  await h.waitForLog(/^unhandled promise rejection: /, { source: "t-rejects", since: mark, timeoutMs: 10_000 });
  t.pass();
});

const TRAPS = inlineModule("t-text", ["subscribe_events", "register_rpc_endpoint"], `
  const allTraps = new Proxy({}, Object.fromEntries(["get", "getPrototypeOf", "ownKeys", "getOwnPropertyDescriptor", "has"].map((k) => [k, () => { throw new Error("trap " + k + " threw"); }])));
  const stackThrows = new Error("stack getter");
  Object.defineProperty(stackThrows, "stack", { get() { throw new Error("stack threw"); } });
  const values: Record<string, unknown> = {
    errorWithThrowingStack: stackThrows,
    toJsonAndToPrimitiveThrow: { toJSON() { throw new Error("toJSON threw"); }, [Symbol.toPrimitive]() { throw new Error("toPrimitive threw"); } },
    nullPrototypeToJsonThrows: Object.assign(Object.create(null), { toJSON() { throw new Error("toJSON threw"); } }),
    proxyAllTrapsThrow: allTraps,
  };
  const outcomes: Record<string, string> = {};
  for (const [k, v] of Object.entries(values)) {
    try { ctx.log.info(v as any); ctx.log.info("fields " + k, { v }); outcomes[k] = "ok"; } catch (e: any) { outcomes[k] = "threw"; }
  }
  ctx.log.info("text report", outcomes);
  const thrownMessageThrows = { get message() { throw new Error("message threw"); }, get code() { throw new Error("code threw"); } };
  await ctx.rpc.register("throwsTrapped", "throws a value whose message and code getters throw", () => { throw thrownMessageThrows; });
  await ctx.rpc.register("throwsProxy", "throws a proxy whose every trap throws", () => { throw allTraps; });
  let events = 0;
  ctx.events.on("NewBlock", () => { events++; if (events % 2) throw allTraps; ctx.log.info("event " + events); });
`);

test("values whose every way to text throws (a stack getter, toJSON and Symbol.toPrimitive, a null prototype, a proxy whose traps throw), logged, thrown by JSON-RPC and event handlers: ctx.log never throws, callers get module_error, nothing is taken for an unhandled rejection, later events arrive; the canary gets every block", async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  await buildModulesDir(dir, ["good"], { "t-text": TRAPS });
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, "t-text": ["subscribe_events", "register_rpc_endpoint"] },
  });
  await h.waitForState("good", "running", 30_000);
  await h.waitForState("t-text", "running", 30_000);
  const report = (await h.waitForLog(/^text report$/, { source: "t-text", timeoutMs: 30_000 })).fields as Record<string, string>;
  t.deepEqual(report, { errorWithThrowingStack: "ok", toJsonAndToPrimitiveThrow: "ok", nullPrototypeToJsonThrows: "ok", proxyAllTrapsThrow: "ok" }, "ctx.log never throws");
  for (const m of ["throwsTrapped", "throwsProxy"]) {
    const a = await post(h, { jsonrpc: "2.0", id: 1, method: `t-text.${m}`, params: {} });
    t.is(a.json?.error?.data?.code, "module_error", `${m}: module_error`);
    t.regex(String(a.json?.error?.message), /cannot be shown as text/, `${m}: the caller is told the value could not be shown`);
  }
  let late = 0;
  for (let i = 0; i < 4; i++) {
    if (!(await canaryRound(h, { rpc: false })).stored) late++;
  }
  t.is(late, 0, "the canary stored every block within 5 s");
  await h.waitForLog(/^event 4$/, { source: "t-text", timeoutMs: 10_000 });
  t.truthy(h.logsOf("t-text").find((r) => /^event handler for NewBlock failed: \(a value that cannot be shown as text/.test(r.message)), "a handler's throw is logged as what could be said of it");
  t.is(h.logsOf("t-text").filter((r) => r.message.startsWith("unhandled promise rejection")).length, 0, "no throw was taken for an unhandled rejection");
  t.is(h.status("t-text")?.state, "running");
});
