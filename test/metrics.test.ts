// Metrics: the store's rules (kinds, names, labels, bounds), the Prometheus rendering, the
// report/get/all methods with their permissions from real TypeScript modules, and /metrics on
// the RPC server.

import test from "ava";
import v8 from "node:v8";
import { runInNewContext } from "node:vm";
import { MetricsStore, HISTOGRAM_BUCKETS, MAX_OBSERVATIONS_PER_REPORT, MAX_SERIES, type HistogramValue } from "../host/services/metrics.ts";
import { renderPrometheus } from "../host/services/prometheus.ts";
import { encodeBody } from "../protocol/codec.ts";
import { hostBytes, MODULE_BYTES_DEFAULT_MB } from "../protocol/host-bytes.ts";
import { CapabilityError, type CallContext } from "../capabilities/types.ts";
import { HubError } from "../host/hub.ts";
import { parseDescriptor, resolveGrants } from "../capabilities/grants.ts";
import { startHost, type InlineModule, type TestHost } from "./helpers/host.ts";
import { call, get, manifest, post } from "./helpers/rpc.ts";

function codeOf(fn: () => void): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof CapabilityError ? err.code : `not a CapabilityError: ${String(err)}`;
  }
  return undefined;
}

test("the store: counters add, gauges set, histograms count in fixed buckets; names, labels and kinds are checked", (t) => {
  const m = new MetricsStore(() => 1234);
  m.report("a", { name: "blocks_total", kind: "counter", value: 2, labels: {} });
  m.report("a", { name: "blocks_total", kind: "counter", value: 3, labels: {} });
  m.report("a", { name: "temp", kind: "gauge", value: 7, labels: { room: "x" } });
  m.report("a", { name: "temp", kind: "gauge", value: -1.5, labels: { room: "x" } });
  m.report("a", { name: "temp", kind: "gauge", value: 4, labels: { room: "y" } });
  const obs = Array.from({ length: MAX_OBSERVATIONS_PER_REPORT }, (_, i) => i);
  m.report("a", { name: "lat", kind: "histogram", value: obs, labels: {} });
  m.report("a", { name: "lat", kind: "histogram", value: [5000, 6000, 1e9], labels: {} });
  const got = m.get("a");
  t.deepEqual(got.find((x) => x.name === "blocks_total"), { name: "blocks_total", kind: "counter", value: 5, labels: {}, timestamp: 1234 });
  t.deepEqual(got.filter((x) => x.name === "temp").map((x) => [x.labels.room, x.value]), [["x", -1.5], ["y", 4]]);
  const lat = got.find((x) => x.name === "lat")!.value as HistogramValue;
  t.is(lat.count, MAX_OBSERVATIONS_PER_REPORT + 3);
  t.is(lat.sum, (999 * 1000) / 2 + 5000 + 6000 + 1e9);
  // Cumulative: 0 is <= 0.001; 1 <= 1; 2 <= 2.5; ... 999 <= 1000; 5000 <= 5000; 6000 <= 10000; 1e9 only in +Inf.
  t.deepEqual(lat.buckets, [[0.001, 1], [1, 2], [2.5, 3], [5, 6], [10, 11], [25, 26], [50, 51], [100, 101], [250, 251], [500, 501], [1000, 1000], [5000, 1001], [10000, 1002]]);
  t.true(lat.buckets.length <= HISTOGRAM_BUCKETS.length, "bounded by the fixed buckets, not by the observations");
  t.deepEqual(m.get("b"), []);
  t.deepEqual(Object.keys(m.all()), ["a"]);

  const bad = (metric: Parameters<MetricsStore["report"]>[1]) => codeOf(() => m.report("a", metric));
  t.is(bad({ name: "1abc", kind: "gauge", value: 1, labels: {} }), "invalid_params");
  t.is(bad({ name: "a-b", kind: "gauge", value: 1, labels: {} }), "invalid_params");
  t.is(bad({ name: "modhost_up", kind: "gauge", value: 1, labels: {} }), "invalid_params", "the host's prefix is reserved");
  t.is(bad({ name: "x", kind: "gauge", value: 1, labels: { module: "other" } }), "invalid_params", "module is the host's label");
  t.is(bad({ name: "x", kind: "gauge", value: 1, labels: { __name__: "y" } }), "invalid_params");
  t.is(bad({ name: "x", kind: "gauge", value: 1, labels: { "bad-label": "y" } }), "invalid_params");
  t.is(bad({ name: "x", kind: "gauge", value: Number.NaN, labels: {} }), "invalid_params");
  t.is(bad({ name: "x", kind: "gauge", value: [1, 2], labels: {} }), "invalid_params");
  t.is(bad({ name: "blocks_total", kind: "counter", value: -1, labels: {} }), "invalid_params", "counters only go up");
  t.is(bad({ name: "blocks_total", kind: "gauge", value: 1, labels: { other: "labels" } }), "invalid_params", "one name, one kind");
  t.is(m.get("a").find((x) => x.name === "blocks_total")!.value, 5, "refused reports change nothing");

  for (let i = m.seriesCount("a"); i < MAX_SERIES; i++) m.report("a", { name: "many", kind: "gauge", value: i, labels: { i: String(i) } });
  t.is(bad({ name: "many", kind: "gauge", value: 1, labels: { i: "one too many" } }), "quota_exceeded");
  m.report("a", { name: "many", kind: "gauge", value: 1, labels: { i: "10" } }); // an existing series is fine
  t.is(m.seriesCount("a"), MAX_SERIES);

  m.forget("a");
  t.deepEqual(m.get("a"), []);
});

test.serial("series count in [host] module_bytes_mb: past its fair part, while the host holds more than half the cap, a module's new series is refused naming the key; its process's end gives the bytes back (before: per module only, ~230 MiB for MAX_MODULES modules at the limits)", (t) => {
  const MiB = 1024 * 1024;
  hostBytes.setCap(2 * MiB);
  t.teardown(() => hostBytes.setCap(MODULE_BYTES_DEFAULT_MB * MiB));
  // Another holder keeps the shared half (1 MiB) full.
  const hog = hostBytes.join("hog", () => MiB);
  t.teardown(() => hog.leave());
  // The total is read at most once a millisecond: each reading here asks for a fresh one.
  let readings = 0;
  const total = () => hostBytes.total(performance.now() + 2 * ++readings);
  const m = new MetricsStore();
  const label = "v".repeat(200);
  let admitted = 0;
  let refusal: unknown;
  for (let i = 0; i < MAX_SERIES; i++) {
    try {
      m.report("labelled", { name: "wide", kind: "histogram", value: [1], labels: { i: `${i}${label}` } });
      admitted++;
    } catch (err) {
      refusal = err;
      break;
    }
  }
  const fair = 2 * MiB / 2 / hostBytes.accounts;
  t.log(`${admitted} series admitted, fair part ${fair} bytes among ${hostBytes.accounts} accounts, the host's total ${total()}`);
  t.true(refusal instanceof CapabilityError, `refused before MAX_SERIES: ${String(refusal)}`);
  t.is((refusal as CapabilityError).code, "quota_exceeded");
  t.regex((refusal as Error).message, /\[host\] module_bytes_mb/);
  // What the heap measure holds per series of this size, from above (~900 bytes measured in-process).
  t.true(admitted * 900 <= fair && admitted * 1200 > fair - 1200, `${admitted} series of ~900-1200 bytes each fill a fair part of ${fair}`);
  t.true(total() >= MiB + admitted * 900, "the series count in the host's total");
  m.report("labelled", { name: "wide", kind: "histogram", value: [2], labels: { i: `0${label}` } }); // an existing series is fine
  m.forget("labelled");
  t.is(total(), MiB, "its process's end gives them back");
  m.report("labelled", { name: "wide", kind: "histogram", value: [1], labels: { i: "again" } });
  t.is(m.seriesCount("labelled"), 1);
  m.forget("labelled");
});

test("reading metrics costs what the answer holds: 1000 histograms of 1000 observations answer in bounded size, and a too-large answer is refused before it is built", (t) => {
  const m = new MetricsStore();
  const obs = Array.from({ length: 1000 }, (_, i) => i / 7);
  for (let i = 0; i < MAX_SERIES; i++) m.report("heavy", { name: "lat", kind: "histogram", value: obs, labels: { i: String(i) } });
  const size = encodeBody({ t: "response", id: 1, result: m.all() }).length;
  // The same series used to be answered with every observation: about 9 MB.
  t.true(size < 600_000, `${size} bytes`);
  t.true(m.answerSize(["heavy"]) >= size, `the estimate (${m.answerSize(["heavy"])}) bounds the real size (${size})`);
  const err = t.throws(() => m.all(100_000), { instanceOf: CapabilityError });
  t.is((err as CapabilityError).code, "invalid_params");
  t.regex(err!.message, /get_all_metrics: the answer could be \d+ bytes, more than the 100000 bytes one message may carry/);
  t.throws(() => m.get("heavy", 100_000), { message: /get_module_metrics/ });
  t.is(m.get("heavy", 1_000_000).length, MAX_SERIES);
});

test("an answer one message cannot carry is refused before it is built, whatever the reason: histograms with every bucket filled until past max_values (the last answer that passes encodes), 16 distinct label names a series until past max_map_keys", (t) => {
  // Every bucket filled: 0.001 ... 100000 and +Inf.
  const everywhere = [...HISTOGRAM_BUCKETS, 1e9];
  const m = new MetricsStore();
  let passing = 0;
  for (let i = 0; i < MAX_SERIES; i++) {
    m.report("full", { name: "lat", kind: "histogram", value: everywhere, labels: { i: String(i) } });
    try {
      m.get("full", 16 * 1024 * 1024);
      passing = i + 1;
    } catch (err) {
      t.is((err as CapabilityError).code, "invalid_params");
      t.regex((err as Error).message, /get_module_metrics: the answer would hold \d+ values, more than the 65536 one message may carry \(max_values/);
      break;
    }
  }
  // Before: all 1000 were built (get answered) and the answer then failed to encode.
  t.true(passing > 600 && passing < MAX_SERIES, `${passing} series passed`);
  const m2 = new MetricsStore();
  for (let i = 0; i < passing; i++) m2.report("full", { name: "lat", kind: "histogram", value: everywhere, labels: { i: String(i) } });
  t.notThrows(() => encodeBody({ t: "response", id: 1, result: m2.get("full", 16 * 1024 * 1024) }), "the largest answer that passes is one message");
  t.throws(() => m.all(16 * 1024 * 1024), { message: /get_all_metrics: the answer would hold \d+ values/ });

  const k = new MetricsStore();
  for (let i = 0; i < 250; i++) k.report("keys", { name: `g${i}`, kind: "gauge", value: 1, labels: Object.fromEntries(Array.from({ length: 16 }, (_, j) => [`l${i}_${j}`, "x"])) });
  t.notThrows(() => encodeBody({ t: "response", id: 1, result: k.get("keys", 16 * 1024 * 1024) }), "4000 distinct label names: one message");
  for (let i = 250; i < 260; i++) k.report("keys", { name: `g${i}`, kind: "gauge", value: 1, labels: Object.fromEntries(Array.from({ length: 16 }, (_, j) => [`l${i}_${j}`, "x"])) });
  t.throws(() => k.get("keys", 16 * 1024 * 1024), { message: /the answer could hold \d+ distinct map keys \(label names\), more than the 4096 one message may carry \(max_map_keys/ });
  // Forgotten with the module's process.
  k.forget("keys");
  t.deepEqual(k.get("keys", 16 * 1024 * 1024), []);
});

test("Prometheus text: module label, escaping, histograms with fixed buckets, kind clashes between modules", async (t) => {
  const m = new MetricsStore();
  m.report("mod-a", { name: "jobs_total", kind: "counter", value: 3, labels: { path: 'a"b\\c\nd' } });
  m.report("mod-a", { name: "lat", kind: "histogram", value: [1, 2, 3, 4, 5], labels: {} });
  m.report("mod-b", { name: "jobs_total", kind: "gauge", value: 9, labels: {} });
  const text = (await renderPrometheus([{ name: "modhost_up", help: "Up.", type: "gauge", samples: [{ value: 1 }] }], m)).join("");
  t.true(text.startsWith("# HELP modhost_up Up.\n# TYPE modhost_up gauge\nmodhost_up 1\n"));
  t.true(text.includes('# TYPE jobs_total counter\njobs_total{module="mod-a",path="a\\"b\\\\c\\nd"} 3\n'), text);
  t.true(text.includes("# TYPE lat histogram\n"), text);
  t.true(text.includes('lat_bucket{module="mod-a",le="1"} 1\nlat_bucket{module="mod-a",le="2.5"} 2\nlat_bucket{module="mod-a",le="5"} 5\n'), text);
  t.true(text.includes('lat_bucket{module="mod-a",le="100000"} 5\nlat_bucket{module="mod-a",le="+Inf"} 5\n'), text);
  t.true(text.includes('lat_sum{module="mod-a"} 15\nlat_count{module="mod-a"} 5\n'), text);
  t.true(text.includes('# TYPE jobs_total_gauge gauge\njobs_total_gauge{module="mod-b"} 9\n'), text);
  t.is(text.match(/^# TYPE jobs_total /gm)?.length, 1, "one TYPE per family");
  t.true(text.endsWith("\n"));
});

// ---------------------------------------------------------------------------------------
// From modules

const REPORTER: InlineModule = {
  toml: manifest("reporter", ["report_metrics", "register_rpc_endpoint"]),
  files: {
    "index.ts": `
export default async function start(ctx: any) {
  await ctx.metrics.report("blocks_total", 1, { kind: "counter" });
  await ctx.metrics.report("blocks_total", 1, { kind: "counter" });
  await ctx.metrics.report("temp", 3.5, { labels: { room: "cellar" } });
  await ctx.metrics.report("latency_ms", [10, 20, 30]);
  await ctx.rpc.register("report", "Report a metric", async (p: any) => {
    try {
      await ctx.metrics.report(p.name, p.value, p.options);
      return "ok";
    } catch (err: any) {
      return err.code + ": " + err.message;
    }
  });
  await ctx.rpc.register("canRead", "", () => typeof ctx.metrics.get);
  ctx.log.info("reported");
}
`,
  },
};

const READER: InlineModule = {
  toml: manifest("reader", ["read_metrics", "register_rpc_endpoint"]),
  files: {
    "index.ts": `
export default async function start(ctx: any) {
  await ctx.rpc.register("get", "", (p: any) => ctx.metrics.get(p.module));
  await ctx.rpc.register("all", "", () => ctx.metrics.all());
  await ctx.rpc.register("canReport", "", () => typeof ctx.metrics.report);
  ctx.log.info("reading");
}
`,
  },
};

async function metricsHost(t: import("ava").ExecutionContext, configure?: (c: import("../host/config.ts").HostConfig) => void): Promise<TestHost> {
  const h = await startHost(t, {
    inline: { reporter: REPORTER, reader: READER },
    grants: { reporter: ["report_metrics", "register_rpc_endpoint"], reader: ["read_metrics", "register_rpc_endpoint"] },
    ...(configure ? { configure } : {}),
  });
  await h.waitForLog(/^reported$/, { source: "reporter" });
  await h.waitForLog(/^reading$/, { source: "reader" });
  return h;
}

test("modules report with report_metrics and read with read_metrics; each only what it was granted; metrics go with the process", async (t) => {
  const h = await metricsHost(t);

  const mine = await call(h, "reader.get", { module: "reporter" });
  const byName = Object.fromEntries(mine.map((m: { name: string }) => [m.name, m]));
  t.like(byName.blocks_total, { kind: "counter", value: 2, labels: {} });
  t.like(byName.temp, { kind: "gauge", value: 3.5, labels: { room: "cellar" } });
  t.like(byName.latency_ms, { kind: "histogram", value: { count: 3, sum: 60, buckets: [[10, 1], [25, 2], [50, 3]] } });
  t.true(typeof byName.temp.timestamp === "number" && byName.temp.timestamp > 0);
  t.deepEqual(Object.keys(await call(h, "reader.all")), ["reporter"]);

  // Bad names and labels come back to the module as invalid_params.
  t.regex(await call(h, "reporter.report", { name: "bad-name", value: 1 }), /^invalid_params: .*not valid/);
  t.regex(await call(h, "reporter.report", { name: "x", value: 1, options: { labels: { module: "reader" } } }), /^invalid_params: .*reserved/);
  t.is(await call(h, "reporter.report", { name: "blocks_total", value: 5, options: { kind: "counter" } }), "ok");
  t.like((await call(h, "reader.get", { module: "reporter" })).find((m: { name: string }) => m.name === "blocks_total"), { value: 7 });

  // Without the permission the method is not on ctx ...
  t.is(await call(h, "reporter.canRead"), "undefined");
  t.is(await call(h, "reader.canReport"), "undefined");

  // ... and the hub, which every request from either runtime goes through, refuses it (called
  // here as a session calls it; test/hostile-native.test.ts sends such requests as raw frames).
  const services = h.manager.services!;
  const ctxFor = (module: string): CallContext => ({
    module, services, chain: h.chain, store: undefined, config: {}, dataDir: "/nowhere",
    events: { subscribe: () => [], unsubscribe: () => [], subscribed: () => [] }, log: () => {},
  });
  const grants = (list: string[]) => resolveGrants(list.map(parseDescriptor), list.map(parseDescriptor), []).effective;
  const hub = h.manager.hub;
  for (const [method, params] of [["report_metric", { name: "x", value: 1 }], ["get_module_metrics", { module: "reporter" }], ["get_all_metrics", {}]] as const) {
    const err = await t.throwsAsync(hub.handle(ctxFor("intruder"), grants([]), method, params));
    t.true(err instanceof HubError && err.wire.code === "permission_denied", `${method}: ${err?.message}`);
  }
  const noRead = await t.throwsAsync(hub.handle(ctxFor("intruder"), grants(["report_metrics"]), "get_all_metrics", {}));
  t.true(noRead instanceof HubError && noRead.wire.code === "permission_denied");
  await hub.handle(ctxFor("intruder"), grants(["report_metrics"]), "report_metric", { name: "x", value: 1 });
  t.deepEqual((await call(h, "reader.get", { module: "intruder" })).map((m: { name: string }) => m.name), ["x"], "reported under the caller's own name");

  // A module's metrics go when its process does.
  await call(h, "unload", { module: "reporter" });
  t.deepEqual(await call(h, "reader.get", { module: "reporter" }), []);
});

test("the /metrics page of ten modules each holding 1000 histograms with the longest labels under one family name is rendered whole, in slices: 280,000 lines (before: spread into one call, a RangeError), with turns of the loop between slices", async (t) => {
  t.timeout(120_000);
  const m = new MetricsStore();
  for (let mod = 0; mod < 10; mod++) {
    for (let i = 0; i < MAX_SERIES; i++) m.report(`mod-${mod}`, { name: "h", kind: "histogram", value: [1, 2, 3], labels: { a: "x".repeat(200) + String(i).padStart(6, "0") } });
  }
  let turns = 0;
  let ticking = true;
  const tick = () => {
    turns++;
    if (ticking) setImmediate(tick);
  };
  setImmediate(tick);
  // Without the page's bound (MAX_METRICS_PAGE_BYTES, which this page of ~70 MB would pass:
  // test/hostile-round25-native.test.ts checks it): every line, in slices.
  const pieces = await renderPrometheus([], m, Infinity);
  ticking = false;
  let lines = 0;
  for (const p of pieces) for (let i = p.indexOf("\n"); i !== -1; i = p.indexOf("\n", i + 1)) lines++;
  t.is(lines, 10 * MAX_SERIES * (HISTOGRAM_BUCKETS.length + 3) + 2, "every bucket, +Inf, sum and count line of every series, and the family's HELP and TYPE");
  t.true(turns >= 10, `the loop had ${turns} turns while the page was rendered`);
});

test.serial("the /metrics page of four modules at the limits (26 MiB) is held outside the JavaScript heap while it is written: the garbage collector does not copy it (before: 26 MiB of strings, minor collections of 0.3-0.5 s at load 25)", async (t) => {
  t.timeout(120_000);
  v8.setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  const m = new MetricsStore();
  for (let mod = 0; mod < 4; mod++) {
    for (let i = 0; i < MAX_SERIES; i++) m.report(`m-${mod}`, { name: "h", kind: "histogram", value: [1, 2, 3], labels: { a: "x".repeat(200) + String(i).padStart(6, "0") } });
  }
  gc();
  const heapBefore = v8.getHeapStatistics().used_heap_size;
  const pieces = await renderPrometheus([], m);
  gc();
  const heapHeld = v8.getHeapStatistics().used_heap_size - heapBefore;
  let bytes = 0;
  for (const p of pieces) bytes += p.length;
  t.true(bytes > 26 * 2 ** 20, `the page is ${bytes} bytes`);
  const MiB = (n: number) => (n / 2 ** 20).toFixed(1);
  t.true(heapHeld < 2 * 2 ** 20, `holding the ${MiB(bytes)} MiB page takes ${MiB(heapHeld)} MiB of the JavaScript heap (at most 2 MiB)`);
  t.true(pieces.every((p) => p.length <= 64 * 1024 + 8192), "pieces of at most 64 KiB (a series' lines are never cut)");
});

test("GET /metrics renders module and host metrics; auth is required unless metrics_without_auth", async (t) => {
  const h = await metricsHost(t);
  const page = await get(h, "/metrics");
  t.is(page.status, 200);
  t.regex(page.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  const text = page.text;
  t.regex(text, /^# TYPE blocks_total counter\nblocks_total\{module="reporter"\} 2$/m);
  t.regex(text, /^temp\{module="reporter",room="cellar"\} 3\.5$/m);
  t.regex(text, /^# TYPE latency_ms histogram$/m);
  t.regex(text, /^latency_ms_bucket\{module="reporter",le="25"\} 2$/m);
  t.regex(text, /^latency_ms_count\{module="reporter"\} 3$/m);
  t.regex(text, /^modhost_up 1$/m);
  t.regex(text, /^modhost_chain_height 101$/m);
  t.regex(text, /^modhost_module_up\{module="reporter"\} 1$/m);
  t.regex(text, /^modhost_module_up\{module="reader"\} 1$/m);
  const requests = Number(/^modhost_module_requests_total\{module="reporter"\} (\d+)$/m.exec(text)?.[1]);
  t.true(requests >= 6, `reporter made ${requests} requests`);
  t.regex(text, /^modhost_module_events_dropped_total\{module="reporter"\} 0$/m);
  t.regex(text, /^modhost_rpc_calls_total \d+$/m);

  t.is((await get(h, "/metrics", null)).status, 401);

  await call(h, "unload", { module: "reporter" });
  const after = (await get(h, "/metrics")).text;
  t.regex(after, /^modhost_module_up\{module="reporter"\} 0$/m);
  t.notRegex(after, /blocks_total/);
});

test("metrics_without_auth opens /metrics only", async (t) => {
  const h = await startHost(t, { configure: (c) => (c.rpc.metrics_without_auth = true) });
  const page = await get(h, "/metrics", null);
  t.is(page.status, 200);
  t.regex(page.text, /^modhost_up 1$/m);
  t.is((await post(h, { jsonrpc: "2.0", id: 1, method: "list" }, null)).status, 401);
});
