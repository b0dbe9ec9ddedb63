// Host memory per module with every per-module limit at its maximum at once (issue #8), in both
// runtimes: a TypeScript probe (through ctx) and a native one (test/fixtures/hostile-maxed,
// through the wire methods) each subscribes to 64 event types of long names, opens 64 trees, registers 256
// JSON-RPC methods with 1 KiB descriptions, a CLI spec of 64 commands, a module API of 256
// methods, 256 timers, the most metric series its labels allow, and keeps 64 module calls in
// flight to a module that never answers them. The host's heap (after a full garbage
// collection) is measured before and after, and again once the probe is reloaded (all of it is
// forgotten with its process): the growth must be bounded and small, and given back.

import { fileURLToPath } from "node:url";
import v8 from "node:v8";
import vm from "node:vm";
import test from "ava";
import { buildModulesDir, sleep, startHost, tempDir, GOOD_GRANTS } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { callApi, inlineModule } from "./helpers/modules.ts";
import { call } from "./helpers/rpc.ts";

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;

/** The host's heap in use after full collections (the test process is the host). */
async function heapUsed(): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc();
    await sleep(50);
  }
  return v8.getHeapStatistics().used_heap_size;
}

const MAX_CAPS = ["subscribe_events", "read_storage", "write_storage", "register_rpc_endpoint", "register_module_api", "manage_timers", "report_metrics", "call_module"];
const MAXED = inlineModule("t-max", MAX_CAPS, `
  const counts: Record<string, number | string> = {};
  let skip = new Set<string>();
  const tryEach = async (what: string, n: number, f: (i: number) => Promise<unknown>) => {
    if (skip.has(what)) return;
    let ok = 0;
    for (let i = 0; i < n; i++) {
      try { await f(i); ok++; } catch (e: any) { counts[what + " refused"] = String(e.code) + ": " + String(e.message).slice(0, 400); break; }
    }
    counts[what] = ok;
    ctx.log.info("phase " + what + " " + ok);
  };
  const long = (c: string, n: number, i: number) => (c.repeat(n) + i).slice(-n);
  await ctx.modules.registerApi({
    go: async (p: { skip?: string[] }) => {
      skip = new Set(p?.skip ?? []);
      await tryEach("subscriptions", 70, (i) => ctx.events.subscribe(["t-sink:" + long("e", 64, i)], () => {}));
      await tryEach("trees", 70, (i) => ctx.storage.openTree(long("t", 64, i)));
      await tryEach("rpc methods", 260, (i) => ctx.rpc.register(long("m", 64, i), "d".repeat(1024), () => 1));
      const about = "a".repeat(1024);
      await tryEach("cli specs", 1, () => ctx.rpc.registerCli({ name: "t-max", about, commands: Array.from({ length: 64 }, (_, i) => ({ name: long("c", 64, i), about, args: Array.from({ length: 12 }, (_, j) => ({ name: long("x", 64, j), about: "b".repeat(1000) })) })) }));
      const api: Record<string, () => unknown> = {};
      for (let i = 0; i < 255; i++) api[long("f", 64, i)] = () => 1;
      await tryEach("api methods", 1, () => ctx.modules.registerApi({ ...api, go: () => counts }));
      await tryEach("timers", 260, () => ctx.timers.every(3600, () => {}));
      await tryEach("metric series", 1010, (i) => ctx.metrics.report(long("n", 100, i), 1, { kind: "gauge", labels: Object.fromEntries(Array.from({ length: 16 }, (_, j) => [long("l", 120, j), long("\\u0101", 256, i)])) }));
      if (!skip.has("in flight")) for (let i = 0; i < 64; i++) void ctx.modules.call("t-sink", "hang", {}, 60_000).catch(() => {});
      return counts;
    },
  });
`);
const SINK = inlineModule("t-sink", ["register_module_api"], `
  let held = 0;
  await ctx.modules.registerApi({ hang: () => { held++; return new Promise(() => {}); }, held: () => held });
`);

const NATIVE = fileURLToPath(new URL("./fixtures/hostile-maxed/main.ts", import.meta.url));

// One at a time: both measure this process's heap.
for (const probe of ["t-max", "n-max"] as const) {
test.serial(`${probe === "t-max" ? "a TypeScript" : "a native"} module with every per-module limit at its maximum at once (64 subscriptions, 64 trees, 256 RPC methods, a 64-command CLI spec, 256 API methods, 256 timers, its metric series, 64 calls in flight) grows the host's heap by a bounded amount, given back when it is reloaded; the canary gets every block, RPC answers`, async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"], { ...(probe === "t-max" ? { "t-max": MAXED } : {}), "t-sink": SINK });
  if (probe === "n-max") {
    await writeNodeNative(modulesDir, "n-max", NATIVE, MAX_CAPS);
  }
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, [probe]: [...MAX_CAPS.filter((c) => c !== "call_module"), "call_module=t-sink"], "t-sink": ["register_module_api"] },
    moduleLimits: { [probe]: { handler_timeout_ms: 120_000, storage_max_trees: 64 } },
  });
  for (const m of ["good", probe, "t-sink"]) await h.waitForState(m, "running", 30_000);
  const mb = (n: number) => (n / 1024 / 1024).toFixed(2);
  /** Max everything, check the canary and RPC meanwhile, reload the probe: the heap at each step. */
  const round = async () => {
    const before = await heapUsed();
    const held = await callApi<number>(h, "t-sink", "held");
    const counts = await callApi<Record<string, number | string>>(h, probe, "go", { skip: (process.env.SKIP ?? "").split(",") }, 120_000);
    if (!process.env.SKIP?.includes("in flight")) await h.waitFor(async () => (await callApi<number>(h, "t-sink", "held")) >= held + 64, 30_000, "the sink to hold 64 more calls");
    const maxed = await heapUsed();
    const mark = h.mark();
    const height = await h.mine(1);
    await h.waitForLog(new RegExp(`^stored block ${height}$`), { source: "good", since: mark, timeoutMs: 5000 });
    t.truthy(await Promise.race([call(h, "list").then(() => true, () => false), sleep(5000).then(() => false)]), "RPC answered within 5 s");
    await h.manager.reload(probe);
    await h.waitForState(probe, "running", 30_000);
    const after = await heapUsed();
    return { counts, before, maxed, after };
  };
  // The first round also compiles the host's code for every path it takes: measure the second.
  const first = await round();
  let r = await round();
  for (let i = 2; i < Number(process.env.ROUNDS ?? 2); i++) {
    const before = r.before;
    r = await round();
    t.log(`round ${i + 1}: ${mb(r.before)} MiB before (+${mb(r.before - before)} since the last), +${mb(r.maxed - r.before)} maxed, ${mb(r.after - r.before)} after`);
  }
  t.log("reached", r.counts);
  t.log(`host heap: first round +${mb(first.maxed - first.before)} MiB, ${mb(first.after - first.before)} after the reload; second round ${mb(r.before)} MiB before, +${mb(r.maxed - r.before)} MiB with every limit at its maximum, ${mb(r.after - r.before)} after the reload`);
  for (const [what, n] of [["subscriptions", 64], ["trees", 64], ["rpc methods", 256], ["cli specs", 1], ["api methods", 1], ["timers", 256]] as const) t.is(r.counts[what], n, `${what} at the limit`);
  t.regex(String(r.counts["metric series refused"]), /^quota_exceeded: .* the 262144 the host keeps for a module/, "metric series stop at the names-and-labels limit, which the refusal names");
  t.true(r.maxed - r.before < 6 * 1024 * 1024, `a maxed module grows the host heap by less than 6 MiB (${mb(r.maxed - r.before)} MiB)`);
  t.true(r.after - r.before < 1.5 * 1024 * 1024, `what it held is given back when it is reloaded (${mb(r.after - r.before)} MiB left)`);
});
}
