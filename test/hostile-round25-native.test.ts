// Hostile probes of round 25 (issue #8): native modules, through the socket protocol.
//   churn     a native module that takes and lets go of everything it can hold in the host in
//             one instance, thousands of rounds (test/fixtures/hostile-round25-native/churn.ts):
//             an event subscription, a periodic timer and a scheduled task, a JSON-RPC method,
//             a module API, a hook at rpc_dispatch, a storage tree opened, written and dropped,
//             and a transaction sent in parts whose last part is refused. A census of the host
//             (test/helpers/census.ts) before and after; then what it holds when it stops (a
//             timer of 0.05 s, a task, a hook at tx_submit, a method, an API) is looked for once it is
//             unloaded, and once it is loaded again (a timer or hook of the old instance left
//             in the new one's way). Before: the last part, refused for its parameters by the
//             hub, never reached the store, so the earlier part stayed held for 60 s: 1,000 of
//             1,000 next transactions refused quota_exceeded (4 open at most). Nothing else grew.
//   families  four native modules each reporting MAX_SERIES (1000) gauges under names of their
//             own (test/fixtures/hostile-round25-native/families.ts), then GET /metrics, the
//             buffers the host holds sampled while it renders and writes the page. Before: each
//             family had a page piece of 64 KiB of its own: the 477 KiB page held 236-252 MiB.
//   page      ten native modules each at the metrics limits (1000 histograms with 200-character
//             labels: ~7 MB of page each) and one with 10 gauges, then GET /metrics. Before: the
//             page held every module's series whatever their number (~7 MB a module at the
//             limits: 256 modules would make 1.6 GiB at every scrape).
//   ts-parts  the churn probe's finding, from a TypeScript module: storage transactions sent in
//             parts whose later part fails inside the isolate (a function value, an array past
//             max_values), never reaching the host, each followed by a good one. Before: the
//             earlier parts stayed held for 60 s, and 5 of 8 good transactions were refused.

import test from "ava";
import { fileURLToPath } from "node:url";
import { buildModulesDir, GOOD_GRANTS, sleep, startHost, tempDir } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { watchHost } from "./helpers/host-watch.ts";
import { call, get } from "./helpers/rpc.ts";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;
const MB = 1024 * 1024;
import { census, grown } from "./helpers/census.ts";
import { MAX_METRICS_PAGE_BYTES } from "../host/services/prometheus.ts";
import { inlineModule } from "./helpers/modules.ts";

/**
 * The census's default skips, and the event bus's per-subscriber queues (arrays compacted past
 * 1,024 spent places, host/events/bus.ts): the canary's grow by the events it takes.
 */
const SKIP = [/(^|\.)chain\b/, /\.gate\b/, /\.subs\[\]\.(queue|unacked)$/];

const FAMILIES = fileURLToPath(new URL("./fixtures/hostile-round25-native/families.ts", import.meta.url));
const CHURN = fileURLToPath(new URL("./fixtures/hostile-round25-native/churn.ts", import.meta.url));
const CHURN_CAPS = ["subscribe_events", "register_rpc_endpoint", "register_module_api", "manage_timers", "register_hook", "read_storage", "write_storage", "manage_storage"];
const CHURN_GRANTS = [...CHURN_CAPS.filter((c) => c !== "register_hook"), "register_hook=rpc_dispatch", "register_hook=tx_submit"];
const ROUNDS = 1000;
/** Requests in one round of churn.ts. */
const PER_ROUND = 17;

interface Services {
  timers: { stats(m: string): { active: number } };
  hooks: { chain(point: string): string[] };
  modules: { apis: Map<string, Set<string>> };
}

test.serial(`a native module that takes and lets go of a subscription, a timer, a task, a JSON-RPC method, a module API, a hook, a storage tree and a staged transaction part ${2 * ROUNDS} rounds in one instance (${2 * ROUNDS * PER_ROUND} requests): a census of the host does not grow, and after its unload nothing it held is left (no timer, task, hook, method or API of it), nor after its next load beyond what the new instance takes`, async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  await writeNodeNative(modulesDir, "r25-churn", CHURN, CHURN_CAPS);
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, "r25-churn": CHURN_GRANTS },
    moduleLimits: { "r25-churn": { requests_per_second: 100_000 } },
  });
  await h.waitForState("good", "running", 60_000);
  await h.waitForState("r25-churn", "running", 60_000);
  const held = (await h.waitForLog(/^holding$/, { source: "r25-churn", timeoutMs: 60_000 })).fields as Record<string, unknown>;
  t.log(`holding: ${JSON.stringify(held)}`);
  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(1000, 3);
  // In calls of 25 rounds, their counts summed: 425 requests, 0.2 s on a quiet machine and
  // 1.1 s at load 5 (100 rounds took 4.5 s there), within [rpc] call_timeout_ms (10 s).
  const go = async (rounds: number) => {
    const sum: Record<string, number> = {};
    for (let done = 0; done < rounds; done += 25) {
      const r = (await call(h, "r25-churn.go", { rounds: Math.min(25, rounds - done) })) as Record<string, number | string>;
      for (const [k, v] of Object.entries(r)) {
        if (typeof v === "number") sum[k] = (sum[k] ?? 0) + v;
        else (sum as Record<string, unknown>)[k] ??= v;
      }
    }
    return sum;
  };

  // Warm up: every path once, so that the first census has seen it.
  const warm = await go(50);
  t.log(`warm-up: ${JSON.stringify(warm)}`);
  const a = await census(h, 7, SKIP);
  const first = await go(ROUNDS);
  const b = await census(h, 7, SKIP);
  const second = await go(ROUNDS);
  const c = await census(h, 7, SKIP);
  t.log(`${ROUNDS} rounds in ${first.ms} ms, then ${ROUNDS} in ${second.ms} ms: ${JSON.stringify(second)}`);
  for (const m of ["subscribe_events", "unsubscribe_events", "register_timer", "schedule_task", "register_rpc_endpoint", "unregister_rpc_endpoint", "register_module_api", "unregister_module_api", "register_hook", "unregister_hook", "storage_open_tree", "storage_drop_tree"]) {
    t.is(second[`${m}:ok`], ROUNDS, `${m} succeeded in every round`);
  }
  t.is(second["cancel_timer:ok"], 2 * ROUNDS, "every timer and task was cancelled");
  t.is(second["storage_transaction:invalid_params"], ROUNDS, "every last part was refused");
  t.regex(String(second["storage_transaction:invalid_params:message"]), /the parts of transaction \d+ held so far, if any, are dropped too/, "the refusal says the held parts are dropped");
  t.is(second["storage_transaction:ok"], 2 * ROUNDS, "every put and every first part was taken");
  t.is(second["storage_transaction:quota_exceeded"] ?? 0, 0, "no first part was refused for the parts of refused transactions still held (before: 1000 of 1000, \"more than 4 transactions sent in parts are open at once\")");
  t.log(`grown over the first ${ROUNDS} rounds: ${grown(a, b).join("; ") || "nothing"}`);
  t.log(`grown over the next ${ROUNDS}: ${grown(b, c, 4).join("; ") || "nothing"}`);
  // What the host holds, counted: no map, set, array, account, descriptor or directory grows.
  // The heap of this process (the host's and the test's) is checked apart: it also holds the
  // code compiled as the rounds run (35 -> 44 MB over both runs once at load 9, nothing in others).
  const counted = (x: Record<string, number>) => Object.fromEntries(Object.entries(x).filter(([k]) => k !== "process.heapMB"));
  t.deepEqual(grown(counted(a), counted(c), 4), [], `the census did not grow over ${2 * ROUNDS} rounds`);
  t.true(c["process.heapMB"]! - b["process.heapMB"]! < 16, `the heap grew by ${c["process.heapMB"]! - b["process.heapMB"]!} MB over the second ${ROUNDS} rounds`);

  const services = h.manager.services as unknown as Services;
  t.is(services.timers.stats("r25-churn").active, 2, "the instance holds its kept timer and task, no more");
  t.deepEqual(services.hooks.chain("tx_submit"), ["r25-churn"], "its kept hook is in the chain once");
  t.deepEqual(services.hooks.chain("rpc_dispatch"), [], "none of the hooks it let go of is");
  t.deepEqual([...(services.modules.apis.get("r25-churn") ?? [])], ["kept"], "its API is the one it kept");

  await h.manager.unload("r25-churn");
  await sleep(500);
  t.is(services.timers.stats("r25-churn").active, 0, "no timer or task of it is left after its unload");
  t.deepEqual(services.hooks.chain("tx_submit"), [], "no hook of it is left in the chain");
  t.false(services.modules.apis.has("r25-churn"), "no API of it is left");
  const rpcAfter = await call(h, "r25-churn.go", { rounds: 1 }).then(() => "answered", (e: Error) => e.message);
  t.notRegex(rpcAfter, /^answered$/, "its JSON-RPC method is gone");
  const d = await census(h, 7, SKIP);
  t.log(`after the unload: grown ${grown(c, d).join("; ") || "nothing"}`);

  const mark = h.mark();
  await h.manager.load("r25-churn");
  await h.waitForState("r25-churn", "running", 60_000);
  const again = (await h.waitForLog(/^holding$/, { source: "r25-churn", since: mark, timeoutMs: 60_000 })).fields as Record<string, unknown>;
  t.is(again.hook, "ok", "the new instance registers its hook");
  t.is(services.timers.stats("r25-churn").active, 2, "the new instance holds its own timer and task, none of the old one's");
  t.deepEqual(services.hooks.chain("tx_submit"), ["r25-churn"], "the chain holds the new instance's hook once");
  t.deepEqual(await go(1).then((r) => r["register_hook:ok"]), 1, "the new instance's method is served through its hook chain");

  await canary.stop();
  watch.assertCanary(t);
  await watch.finish(t, 1);
});

test.serial("four native modules each reporting 1000 gauges under metric names of their own (4,000 families of one line): GET /metrics answers every family while the host's buffers grow by less than 16 MiB (before: a page piece of 64 KiB reserved per family, 250 MiB held for a page of 477 KiB)", async (t) => {
  t.timeout(180_000);
  const dir = await tempDir(t);
  const names = ["r25-fam-a", "r25-fam-b", "r25-fam-c", "r25-fam-d"];
  const modulesDir = await buildModulesDir(dir, ["good"]);
  for (const n of names) await writeNodeNative(modulesDir, n, FAMILIES, ["report_metrics"]);
  const h = await startHost(t, { dir, modules: [], grants: { good: GOOD_GRANTS, ...Object.fromEntries(names.map((n) => [n, ["report_metrics"]])) } });
  await h.waitForState("good", "running", 60_000);
  for (const n of names) {
    const reported = (await h.waitForLog(/^reported$/, { source: n, timeoutMs: 60_000 })).fields as Record<string, number>;
    t.deepEqual(reported, { ok: 1000 }, `${n} reported its 1000 gauges`);
  }
  const scrape = async () => {
    gc();
    const base = process.memoryUsage().arrayBuffers;
    let peak = base;
    const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage().arrayBuffers); }, 1);
    const started = Date.now();
    const page = await get(h, "/metrics").finally(() => clearInterval(sampler));
    peak = Math.max(peak, process.memoryUsage().arrayBuffers);
    return { page, ms: Date.now() - started, grewMb: (peak - base) / MB };
  };
  await scrape(); // the first: code paths compiled
  const runs = [await scrape(), await scrape(), await scrape()];
  const last = runs[2]!;
  t.is(last.page.status, 200);
  const families = last.page.text.split("\n").filter((l) => l.startsWith("# TYPE f_r25_fam_")).length;
  t.log(`page ${(Buffer.byteLength(last.page.text) / 1024).toFixed(0)} KiB, ${families} module families; the host's buffers grew by ${runs.map((r) => r.grewMb.toFixed(1)).join(", ")} MiB at most during the scrapes, which took ${runs.map((r) => r.ms).join(", ")} ms`);
  t.is(families, 4000, "every family is on the page");
  for (const r of runs) t.true(r.grewMb < 16, `the buffers grew by ${r.grewMb.toFixed(1)} MiB during a scrape`);
});

test.serial(`ten native modules each at the metrics limits (1000 histograms, ~7 MB of /metrics page each) and one with 10 gauges: the page's module series stay within MAX_METRICS_PAGE_BYTES (${MAX_METRICS_PAGE_BYTES / MB} MiB), the small module's all on it, the big ones sharing the rest fairly, what is left off counted per module in modhost_module_metric_series_omitted and said in a comment naming MAX_METRICS_PAGE_BYTES (before: every series, the page growing ~7 MB with every such module)`, async (t) => {
  t.timeout(240_000);
  const dir = await tempDir(t);
  const big = Array.from({ length: 10 }, (_, i) => `r25-big-${String.fromCharCode(97 + i)}`);
  const small = "r25-small";
  const modulesDir = await buildModulesDir(dir, ["good"]);
  for (const n of [...big, small]) await writeNodeNative(modulesDir, n, FAMILIES, ["report_metrics"]);
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, ...Object.fromEntries([...big, small].map((n) => [n, ["report_metrics"]])) },
    moduleConfigs: { ...Object.fromEntries(big.map((n) => [n, { mode: "histograms" }])), [small]: { count: 10 } },
  });
  await h.waitForState("good", "running", 60_000);
  for (const n of [...big, small]) {
    const reported = (await h.waitForLog(/^reported$/, { source: n, timeoutMs: 120_000 })).fields as Record<string, number>;
    t.deepEqual(reported, { ok: n === small ? 10 : 1000 }, `${n} reported all its series`);
  }
  const started = Date.now();
  const page = await get(h, "/metrics");
  const ms = Date.now() - started;
  t.is(page.status, 200);
  const lines = page.text.split("\n");
  const moduleBytes = lines.filter((l) => /\{module="r25-/.test(l) && !l.startsWith("modhost_")).reduce((n, l) => n + Buffer.byteLength(l) + 1, 0);
  const shown = new Map<string, number>();
  const omitted = new Map<string, number>();
  for (const l of lines) {
    const c = /^r25_latency_count\{module="([^"]+)"/.exec(l);
    if (c) shown.set(c[1]!, (shown.get(c[1]!) ?? 0) + 1);
    const o = /^modhost_module_metric_series_omitted\{module="([^"]+)"\} (\d+)$/.exec(l);
    if (o) omitted.set(o[1]!, Number(o[2]));
  }
  const smallShown = lines.filter((l) => l.startsWith("f_r25_small_")).length;
  t.log(`page ${(Buffer.byteLength(page.text) / MB).toFixed(1)} MiB in ${ms} ms, modules' series ${(moduleBytes / MB).toFixed(1)} MiB; histograms shown per big module: ${[...shown.values()].join(", ")}; omitted: ${[...omitted.values()].join(", ")}; the small module's gauges: ${smallShown}`);
  t.true(moduleBytes <= MAX_METRICS_PAGE_BYTES, `the modules' series take ${moduleBytes} bytes of the page`);
  t.is(smallShown, 10, "every gauge of the small module is on the page");
  t.regex(page.text, /^# modhost: .*MAX_METRICS_PAGE_BYTES/m, "a comment names the limit");
  for (const n of big) {
    t.true((shown.get(n) ?? 0) > 0, `${n} has series on the page`);
    t.is((shown.get(n) ?? 0) + (omitted.get(n) ?? 0), 1000, `${n}: shown and omitted make its 1000`);
  }
  const counts = big.map((n) => shown.get(n) ?? 0);
  t.true(Math.max(...counts) - Math.min(...counts) <= 2, "the big modules share the page equally");
  t.false(omitted.has(small), "nothing of the small module is left off");
});

const TS_PARTS = inlineModule("r25-ts-parts", ["read_storage", "write_storage"], `
  await ctx.storage.openTree("t");
  const seen: Record<string, number> = {};
  const first: Record<string, string> = {};
  const count = (k: string, e?: any) => { seen[k] = (seen[k] ?? 0) + 1; if (e) first[k] ??= String(e?.message).slice(0, 300); };
  for (let round = 0; round < 8; round++) {
    // 1,200 puts of 1 KiB strings (more than one message's 1 MiB of strings: two parts), then an
    // op whose value the isolate cannot send: a function, or an array of 70,000 values.
    const ops: any[] = Array.from({ length: 1200 }, (_, k) => ({ op: "put", key: "k" + k, value: "x".repeat(1024) }));
    ops.push({ op: "put", key: "bad", value: round % 2 ? (() => 1) : new Array(70_000).fill(1) });
    try { await ctx.storage.transaction("t", ops); count("bad:ok"); } catch (e: any) { count("bad:" + String(e?.code ?? e?.name), e); }
    const good = Array.from({ length: 1200 }, (_, k) => ({ op: "put", key: "g" + k, value: "y".repeat(1024) }));
    try { await ctx.storage.transaction("t", good); count("good:ok"); } catch (e: any) { count("good:" + String(e?.code ?? e?.name), e); }
  }
  ctx.log.info("parts report", { seen, first, written: await ctx.storage.has("t", "g1199"), bad: await ctx.storage.has("t", "k0") });
`);

test.serial("a TypeScript module whose storage transactions in parts fail in the isolate at a later part (a function value, an array past max_values), eight times, each followed by a good transaction in parts: every good one is written, none refused quota_exceeded, nothing of the failed ones written (before: their earlier parts stayed held in the host for 60 s, and 5 of 8 good ones were refused, \"more than 4 transactions sent in parts are open at once\")", async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  await buildModulesDir(dir, ["good"], { "r25-ts-parts": TS_PARTS });
  const h = await startHost(t, { dir, modules: [], grants: { good: GOOD_GRANTS, "r25-ts-parts": ["read_storage", "write_storage"] } });
  const report = (await h.waitForLog(/^parts report$/, { source: "r25-ts-parts", timeoutMs: 90_000 })).fields as { seen: Record<string, number>; first: Record<string, string>; written: boolean; bad: boolean };
  t.log(JSON.stringify(report));
  t.is(report.seen["good:ok"], 8, "every good transaction was written");
  t.is(report.seen["good:quota_exceeded"] ?? 0, 0, "no good transaction was refused for the parts of failed ones still held");
  t.is((report.seen["bad:not_plain_data"] ?? 0) + (report.seen["bad:result_too_large"] ?? 0), 8, "every bad transaction failed, naming why");
  t.true(report.written, "the good transactions' keys are there");
  t.false(report.bad, "nothing of the failed transactions was written");
});
