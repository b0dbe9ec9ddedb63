// scratch exploration
import test from "ava";
import { buildModulesDir, sleep, startHost, tempDir, GOOD_GRANTS } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";
import { call, post } from "./helpers/rpc.ts";

const TS = {
  "t-microtask": inlineModule("t-microtask", ["read_chain_state"], `
    void (async () => { await ctx.chain.getBlockHeight(); ctx.log.info("spinning microtasks"); for (;;) await null; })();
  `),
  "t-proxy": inlineModule("t-proxy", ["register_module_api", "register_rpc_endpoint"], `
    const loopKeys = () => new Proxy({}, { ownKeys() { for (;;) {} }, get() { for (;;) {} } });
    const throwing = () => ({ get a() { throw new Error("getter threw"); } });
    const looping = () => ({ get a() { for (;;) {} } });
    const proxyArr = () => new Proxy([1, 2, 3], { get(t, k) { if (k === "length") return 2 ** 32 - 1; return 1; } });
    const toJson = () => ({ toJSON() { for (;;) {} } });
    const api = { loopKeys, throwing, looping, proxyArr, toJson, thenable: () => ({ then(r: any) { r(this); } }), errGetter: () => { const e: any = new Error("x"); Object.defineProperty(e, "message", { get() { for (;;) {} } }); throw e; }, errProxy: () => { throw new Proxy({}, { get() { throw new Error("trap"); } }); } };
    await ctx.modules.registerApi(api);
    for (const k of Object.keys(api)) await ctx.rpc.register(k, "probe " + k, api[k]);
  `),
  "t-caller": inlineModule("t-caller", ["call_module"], `
    void (async () => {
      for (let i = 0; i < 40; i++) {
        for (const m of ["loopKeys", "throwing", "looping", "proxyArr", "toJson", "thenable", "errGetter", "errProxy"]) {
          const r = await ctx.modules.call("t-proxy", m, {}).then((v: any) => "ok " + JSON.stringify(v).slice(0, 80), (e: any) => "err " + e.code + " " + String(e.message).slice(0, 120));
          if (i === 0) ctx.log.info("call " + m + ": " + r);
        }
      }
      ctx.log.info("caller done");
    })();
  `),
  "t-closures": inlineModule("t-closures", ["read_storage", "write_storage", "publish_events", "report_metrics"], `
    const tries: Record<string, () => unknown> = {
      putFn: () => ctx.storage.put("t", "k", () => 1),
      putGetterLoop: () => ctx.storage.put("t", "k", { get a() { for (;;) {} } }),
      putGetterThrow: () => ctx.storage.put("t", "k", { get a() { throw new Error("g"); } }),
      putProxy: () => ctx.storage.put("t", "k", new Proxy({}, { ownKeys() { return ["a"]; }, getOwnPropertyDescriptor() { return { value: 1, enumerable: true, configurable: true }; } })),
      publishProxy: () => ctx.events.publish("x", new Proxy({}, {})),
      logGetter: () => ctx.log.info("x", { get a() { throw new Error("g"); } }),
      logProxy: () => ctx.log.info(new Proxy({}, { get() { throw new Error("trap"); } })),
      logToString: () => ctx.log.info({ toString() { for (;;) {} } }),
      metricLabels: () => ctx.metrics.report("m", 1, { labels: new Proxy({}, { ownKeys() { throw new Error("k"); } }) }),
      symbolKey: () => ctx.storage.put("t", Symbol("s") as any, 1),
      bigint: () => ctx.storage.put("t", "k", 10n),
    };
    await ctx.storage.openTree("t").catch(() => {});
    void (async () => {
      for (const [k, f] of Object.entries(tries)) {
        try { const r = await f(); ctx.log.info("try " + k + ": ok " + String(r)); } catch (e: any) { ctx.log.info("try " + k + ": " + (e && e.code) + " " + String(e && e.message).slice(0, 150)); }
      }
      ctx.log.info("closures done");
    })();
  `),
  "t-timers": inlineModule("t-timers", ["manage_timers"], `
    let fired = 0;
    for (const d of [Infinity, NaN, -1, 2 ** 31, 1e308, "abc", 0]) { try { setTimeout(() => fired++, d as any); } catch (e) { ctx.log.info("setTimeout threw " + e); } }
    void (async () => {
      const ids: any[] = [];
      for (let i = 0; i < 2000; i++) { const b = setInterval(() => fired++, 0); clearInterval(b); }
      for (let i = 0; i < 500; i++) { try { const id = await ctx.timers.after(0); await ctx.timers.cancel(id); } catch (e: any) { ctx.log.info("after/cancel: " + e.code); break; } }
      for (let i = 0; i < 300; i++) { try { ids.push(await ctx.timers.every(1e-9, () => { fired++; })); } catch (e: any) { ctx.log.info("every: " + e.code + " " + e.message); break; } }
      ctx.log.info("timers registered " + ids.length);
    })();
  `),
  "t-strings": inlineModule("t-strings", ["read_chain_state"], `
    void (async () => {
      let s = "x";
      try { for (;;) s += s; } catch (e) { ctx.log.info("concat: " + e); }
      const rec = (n: number): number => rec(n + 1) + 1;
      try { rec(0); } catch (e) { ctx.log.info("recursion: " + e); }
      const g: any = globalThis;
      ctx.log.info("globals: " + ["WebAssembly", "SharedArrayBuffer", "Atomics", "eval", "Function"].map((k) => k + "=" + typeof g[k]).join(" "));
      try { ctx.log.info("fn ctor: " + typeof (Function("return this")() as any).WebAssembly); } catch (e) { ctx.log.info("fn ctor: " + e); }
      ctx.log.info("strings done");
    })();
  `),
};

test("explore", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"], TS);
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, ...Object.fromEntries(Object.entries(TS).map(([n, m]) => [n, JSON.parse(m.toml.match(/capabilities = (.*)/)![1]!)])) , "t-caller": ["call_module=t-proxy"] },
    moduleLimits: { "t-microtask": { cpu_time_ms: 1000 } },
  });
  await h.waitForState("good", "running", 30_000);
  for (let i = 0; i < 8; i++) {
    const mark = h.mark();
    const height = await h.mine(1);
    const ok = await h.waitForLog(new RegExp(`^stored block ${height}$`), { source: "good", since: mark, timeoutMs: 5000 }).then(() => true, () => false);
    const answered = await Promise.race([call(h, "list").then(() => true, () => false), sleep(5000).then(() => false)]);
    t.log(`block ${height} stored=${ok} rpc=${answered}`);
    await sleep(1000);
  }
  for (const m of ["loopKeys", "throwing", "looping", "proxyArr", "toJson", "thenable", "errGetter", "errProxy"]) {
    const r = await Promise.race([post(h, { jsonrpc: "2.0", id: 1, method: `t-proxy.${m}`, params: {} }).then((a) => JSON.stringify(a.json).slice(0, 200)), sleep(20000).then(() => "no answer in 20 s")]);
    t.log(`rpc ${m}: ${r}`);
  }
  for (const n of Object.keys(TS)) t.log(n, h.status(n)?.state, h.status(n)?.restarts, h.status(n)?.problem);
  for (const r of h.records) if (r.source !== "good" && !/stored block/.test(r.message)) t.log(`${r.level} [${r.source}] ${r.message.slice(0, 300)}`);
  for (const n of Object.keys(TS)) {
    await h.manager.reload(n).catch((e) => t.log("reload " + n + " " + e));
    await h.waitForState(n, "running", 30_000).catch((e) => t.log(String(e).slice(0, 300)));
  }
  t.pass();
});
