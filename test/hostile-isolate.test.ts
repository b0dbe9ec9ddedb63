// Hostile TypeScript probes of the isolate's edges (issue #8 item 6), under the real host and
// sandbox, all at once next to the canary ("good", which stores every block):
//   t-microtask  an endless chain of microtasks after an await (`for (;;) await null`): it never
//                returns to the isolate host's loop, so only the CPU watchdog can end it
//   t-traps      module API and JSON-RPC methods answering values that fight the copy: a getter
//                that throws, a proxy whose traps throw, a proxy array claiming 2^32-1 elements,
//                a thenable, toJSON, an error whose message is a proxy
//   t-loops      answers whose getter or ownKeys trap never returns
//   t-caller     calls every method of both, in turn, without pause
//   t-closures   passes what is not data to ctx APIs: functions, symbols, bigints, proxies,
//                getters that throw, as storage values, event payloads, log fields, metric labels
//   t-timers     setTimeout with Infinity, NaN, -1, 2^31, 1e308 and a string; 2000 setInterval
//                each cleared at once; ctx.timers.every(1e-9) until refused
//   t-strings    doubles a string until V8 refuses, recurses until the stack ends, and looks for
//                WebAssembly, SharedArrayBuffer and Atomics (also through Function("return this"))
// While they run: the canary stores every block within 5 s and RPC answers within 5 s. Each
// probe's outcome is what the docs promise (an error it can catch, or its own isolate stopped
// by cpu_time_ms, named in the crash reason); every probe restarts.

import test from "ava";
import { buildModulesDir, sleep, startHost, tempDir, GOOD_GRANTS } from "./helpers/host.ts";
import { inlineModule, timerService } from "./helpers/modules.ts";
import { post } from "./helpers/rpc.ts";
import { canaryRound } from "./helpers/canary.ts";

const TRAPS = ["throwingGetter", "throwingProxy", "hugeProxyArray", "thenable", "toJson", "errorProxy"];
const LOOPS = ["loopingGetter", "loopingKeys"];

const TS = {
  "t-microtask": inlineModule("t-microtask", ["read_chain_state"], `
    void (async () => { await ctx.chain.getBlockHeight(); ctx.log.info("spinning microtasks"); for (;;) await null; })();
  `),
  "t-traps": inlineModule("t-traps", ["register_module_api", "register_rpc_endpoint"], `
    const api: Record<string, () => unknown> = {
      throwingGetter: () => ({ get a() { throw new Error("getter threw"); } }),
      throwingProxy: () => new Proxy({}, { ownKeys() { throw new Error("trap threw"); }, get() { throw new Error("trap threw"); } }),
      hugeProxyArray: () => new Proxy([1, 2, 3], { get(t, k) { return k === "length" ? 2 ** 32 - 1 : 1; } }),
      thenable: () => ({ then(r: (v: unknown) => void) { r({ resolved: true }); } }),
      toJson: () => ({ toJSON() { return "x".repeat(1 << 20); }, v: 1 }),
      errorProxy: () => { throw new Proxy(new Error("proxied"), { get() { throw new Error("trap threw"); } }); },
    };
    await ctx.modules.registerApi(api);
    for (const k of Object.keys(api)) await ctx.rpc.register(k, "probe " + k, api[k]);
  `),
  "t-loops": inlineModule("t-loops", ["register_module_api"], `
    await ctx.modules.registerApi({
      loopingGetter: () => ({ get a() { for (;;) {} } }),
      loopingKeys: () => new Proxy({}, { ownKeys() { for (;;) {} } }),
    });
  `),
  "t-caller": inlineModule("t-caller", ["call_module", "manage_timers"], `
    void (async () => {
      // Both targets start with it: wait until t-traps answers before counting outcomes.
      for (let i = 0; i < 600; i++) {
        if (await ctx.modules.call("t-traps", "thenable", {}).then(() => true, () => false)) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const outcomes: Record<string, Record<string, number>> = {};
      for (let i = 0; i < 5; i++) {
        for (const [target, methods] of [["t-traps", ${JSON.stringify(TRAPS)}], ["t-loops", ${JSON.stringify(LOOPS)}]] as const) {
          for (const m of methods) {
            const r = await ctx.modules.call(target, m, {}, 15000).then(() => "ok", (e: any) => String(e.code));
            (outcomes[m] ??= {})[r] = (outcomes[m][r] ?? 0) + 1;
          }
        }
      }
      ctx.log.info("caller report", outcomes);
    })();
  `),
  "t-closures": inlineModule("t-closures", ["read_storage", "write_storage", "publish_events", "report_metrics"], `
    const tries: Record<string, () => unknown> = {
      putFunction: () => ctx.storage.put("t", "k", () => 1),
      putThrowingGetter: () => ctx.storage.put("t", "k", { get a() { throw new Error("getter threw"); } }),
      putProxy: () => ctx.storage.put("t", "k", new Proxy({}, { ownKeys() { throw new Error("trap threw"); } })),
      putSymbolKey: () => ctx.storage.put("t", Symbol("s"), 1),
      publishProxy: () => ctx.events.publish("x", new Proxy({ a: 1 }, { get() { throw new Error("trap threw"); } })),
      publishFunction: () => ctx.events.publish("x", { f() {} }),
      metricLabelsProxy: () => ctx.metrics.report("m", 1, { labels: new Proxy({}, { ownKeys() { throw new Error("trap threw"); } }) }),
      logThrowingFields: () => ctx.log.info("x", { get a() { throw new Error("getter threw"); } }),
      logProxyMessage: () => ctx.log.info(new Proxy({}, { get() { throw new Error("trap threw"); } })),
    };
    await ctx.storage.openTree("t");
    void (async () => {
      const outcomes: Record<string, string> = {};
      for (const [k, f] of Object.entries(tries)) {
        try { await f(); outcomes[k] = "ok"; } catch (e: any) { outcomes[k] = (e && e.code) || (e && e.name) || "thrown"; }
      }
      ctx.log.info("closures report", outcomes);
    })();
  `),
  "t-timers": inlineModule("t-timers", ["manage_timers"], `
    for (const d of [Infinity, NaN, -1, 2 ** 31, 1e308, "abc"]) setTimeout(() => {}, d as any);
    void (async () => {
      for (let i = 0; i < 2000; i++) clearInterval(setInterval(() => {}, 0));
      let every = 0;
      let refused = "";
      for (let i = 0; i < 300; i++) {
        try { await ctx.timers.every(1e-9, () => {}); every++; } catch (e: any) { refused = e.code; break; }
      }
      ctx.log.info("timers report", { every, refused });
    })();
  `),
  "t-strings": inlineModule("t-strings", ["read_chain_state"], `
    void (async () => {
      const report: Record<string, string> = {};
      let s = "x";
      try { for (;;) s += s; } catch (e: any) { report.concat = e.name; }
      const rec = (n: number): number => rec(n + 1) + 1;
      try { rec(0); } catch (e: any) { report.recursion = e.name; }
      const g: any = globalThis;
      const viaFunction: any = Function("return this")();
      for (const k of ["WebAssembly", "SharedArrayBuffer", "Atomics"]) report[k] = typeof g[k] + "/" + typeof viaFunction[k];
      report.height = String(await ctx.chain.getBlockHeight());
      ctx.log.info("strings report", report);
    })();
  `),
};
const PROBES = Object.keys(TS);

test("TypeScript probes of the isolate's edges (microtask loops, answers and arguments that fight the copy, extreme timers, string and stack exhaustion): each gets an error or its own isolate stopped, the canary gets every block, RPC answers, every probe restarts", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  await buildModulesDir(dir, ["good"], TS);
  const grants = Object.fromEntries(Object.entries(TS).map(([n, m]) => [n, JSON.parse(m.toml.match(/capabilities = (.*)/)![1]!) as string[]]));
  const h = await startHost(t, {
    dir, modules: [],
    grants: { ...grants, good: GOOD_GRANTS, "t-caller": ["call_module=t-traps", "call_module=t-loops", "manage_timers"] },
    // The looping probes are stopped at each endless stretch: let them restart often enough.
    // t-timers' report must not be dropped by its log budget (its 2000 setIntervals were each a
    // host timer, refused past 256 with an error line each, before they were kept in the isolate).
    moduleLimits: { ...Object.fromEntries(PROBES.map((p) => [p, { max_restarts: 50, quarantine_after: 0 }])), "t-timers": { max_restarts: 50, quarantine_after: 0, log_bytes_per_second: 16 * 1024 * 1024 } },
  });
  await h.waitForState("good", "running", 30_000);
  for (const p of PROBES) await h.waitForState(p, "running", 30_000);

  let late = 0;
  let unanswered = 0;
  const rpcAnswers: Record<string, string> = {};
  for (let i = 0; i < 6; i++) {
    const { stored, answered } = await canaryRound(h);
    if (!stored) late++;
    if (!answered) unanswered++;
    // A JSON-RPC client calling the trapped answers: each is answered, never left hanging.
    const m = TRAPS[i % TRAPS.length]!;
    rpcAnswers[m] = await Promise.race([post(h, { jsonrpc: "2.0", id: 1, method: `t-traps.${m}`, params: {} }).then((a) => (a.json?.error ? `error ${a.json.error.data?.code ?? a.json.error.code}` : "result")), sleep(20_000).then(() => "no answer")]);
    await sleep(1000);
  }
  t.is(late, 0, "the canary stored every block within 5 s");
  t.is(unanswered, 0, "the host answered every RPC call within 5 s");
  t.log("JSON-RPC answers", rpcAnswers);
  t.false(Object.values(rpcAnswers).includes("no answer"), "every JSON-RPC call of a trapped answer was answered");

  const report = async (source: string, message: string) => (await h.waitForLog(new RegExp(`^${message}$`), { source, timeoutMs: 120_000 })).fields as Record<string, any>;
  const caller = await report("t-caller", "caller report");
  t.log("module API calls", caller);
  // A trapped answer is an error for the caller (or a plain result for a thenable); a looping one
  // costs its module its isolate (unavailable to the caller), never a hang (timeout).
  for (const m of [...TRAPS, ...LOOPS]) {
    const outcomes = caller[m] as Record<string, number>;
    t.is(Object.values(outcomes).reduce((a, b) => a + b, 0), 5, `${m}: every call settled`);
    t.falsy(outcomes.timeout, `${m}: no call waited for its deadline`);
  }
  for (const m of LOOPS) t.falsy(caller[m].ok, `${m}: a looping answer is never delivered`);
  t.truthy(h.records.find((r) => r.source === "host" && /^t-loops crashed: .*cpu_time_ms/.test(r.message)), "t-loops was stopped by its CPU watchdog, which the crash reason names");
  t.truthy(h.records.find((r) => r.source === "host" && /^t-microtask crashed: .*cpu_time_ms/.test(r.message)), "an endless microtask chain is stopped by the CPU watchdog, which the crash reason names");

  const closures = await report("t-closures", "closures report");
  // (A bigint is data: MessagePack has 64-bit integers.)
  t.log("ctx calls with what is not data", closures);
  for (const [k, outcome] of Object.entries(closures)) {
    if (k.startsWith("log")) continue; // ctx.log makes text of what it cannot send: never throws
    t.not(outcome, "ok", `${k} was refused`);
  }
  t.is(h.status("t-closures")?.state, "running", "t-closures survived every refusal");

  const timers = await report("t-timers", "timers report");
  t.is(timers.refused, "quota_exceeded");
  t.true(timers.every <= 256, `at most 256 timers (${timers.every})`);
  // Every setInterval it cleared is cancelled once its id arrives: what it holds is what it kept.
  await h.waitFor(() => timerService(h).stats("t-timers").active <= timers.every, 30_000, "t-timers' cleared intervals to be cancelled");

  const strings = await report("t-strings", "strings report");
  t.deepEqual(strings, { concat: "RangeError", recursion: "RangeError", WebAssembly: "undefined/undefined", SharedArrayBuffer: "undefined/undefined", Atomics: "undefined/undefined", height: strings.height });
  t.is(h.status("t-strings")?.state, "running");

  for (const p of PROBES) {
    await h.manager.reload(p);
    await h.waitForState(p, "running", 30_000);
  }
  const mark = h.mark();
  const height = await h.mine(1);
  await h.waitForLog(new RegExp(`^stored block ${height}$`), { source: "good", since: mark, timeoutMs: 10_000 });
  t.pass();
});
