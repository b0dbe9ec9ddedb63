// Hostile probes of round 24 (issue #8): TypeScript modules, under the real host and sandbox,
// next to the canary ("good", which stores every block):
//   hoard    with sync crossings (runtime.ts syncCrossings), an RPC handler that allocates small
//            arrays without pause: its isolate host's main thread runs the module's code then,
//            so its own size check (worker.ts, ISOLATE_HOST_RSS_BASE_MB + 2 x memory_mb) could
//            not run; the watchdog thread must (sync-watchdog.ts), naming memory_mb
//   copies   16,000 unawaited host calls in one turn, each naming one string of 1 MB: 1 MB in
//            the isolate's heap, a copy per call outside it (in-isolate/stretch.ts
//            MAX_CALL_BYTES_PER_STRETCH), in both crossing forms
//   (test/fixtures/hostile-round24-isolate/grower.ts)
//   callers  32 module calls in flight at once, for 8 s, to a method of one line answering
//            60,000 empty objects (round 23's answers.ts): each answer's check and copy costs the
//            callee ~40 ms, and those of one crossing ran together (in-isolate/main.ts
//            MAX_ANSWER_BYTES_PER_BATCH, invokeMany)
//   busy     a module over its host_cpu_ms_per_s (its socket read only part of the time) whose
//            API method never answers: how long its callers wait past their timeout
//            (host/session.ts invoke; test/fixtures/hostile-round24-isolate/busy.ts)
//   holder   a memory_mb of 8, holding buffers up to its limit, reloaded while its stop() asks
//            for more: does the size check or the stop misreport it (holder.ts; found nothing)
//   long errors  a bundle or start() failing with an error of a 1 MiB message: the isolate host's
//            goodbye and lines saying why must reach the host (worker.ts clip)
// While they run: the canary stores every block within 5 s, RPC answers within 5 s, no turn of
// the host's loop takes 250 ms of its CPU, its heap, log and descriptors stay within bounds.
// The tests watch this process's loop, so they run one at a time.

import test, { type ExecutionContext } from "ava";
import { readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { buildModulesDir, GOOD_GRANTS, sleep, startHost, tempDir, type InlineModule, } from "./helpers/host.ts";
import { ISOLATE_HOST_RSS_BASE_MB } from "../runtime/isolate/exit-codes.ts";
import { post } from "./helpers/rpc.ts";
import { callApi } from "./helpers/modules.ts";
import { watchHost } from "./helpers/host-watch.ts";
import { fixtureModules, crossings, sampleSize } from "./helpers/isolate-probes.ts";

const load = () => loadavg().map((l) => l.toFixed(1)).join(" ");
const MiB = 1024 * 1024;

const fixtureModule = fixtureModules("hostile-round24-isolate", "round 24");

const GROWER_CAPS = ["register_rpc_endpoint", "publish_events"];
const MEMORY_MB = 64;
const CEILING = (ISOLATE_HOST_RSS_BASE_MB + 2 * MEMORY_MB) * MiB;
// What an isolate host may grow by past its ceiling before it is ended: the watchdog looks every
// 100 ms (min(100, cpu_time_ms / 4)) and the sampler every 50; the loop grew it ~200 MB a second
// on a quiet machine, less on a loaded one.
const PAST_CEILING = 96 * MiB;

async function growerHost(t: ExecutionContext, name: string, limits: Record<string, number>) {
  const dir = await tempDir(t);
  await buildModulesDir(dir, ["good"], { [name]: fixtureModule(name, "grower.ts", GROWER_CAPS) });
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, [name]: GROWER_CAPS },
    moduleLimits: { [name]: { memory_mb: MEMORY_MB, health_timeout_ms: 30_000, max_restarts: 5, ...limits } },
  });
  await h.waitForState("good", "running", 60_000);
  await h.waitForLog(/^ready$/, { source: name, timeoutMs: 60_000 });
  return h;
}

test.serial("with sync crossings, a TypeScript RPC handler that allocates small arrays without pause for up to 4 s of cpu_time_ms is ended naming memory_mb once its isolate host passes ISOLATE_HOST_RSS_BASE_MB + 2 x memory_mb, not by the kernel at memory_total_mb; it restarts and answers, the canary stores every block and RPC answers", async (t) => {
  t.timeout(120_000);
  crossings(t, true);
  const name = "r24-hoard";
  const h = await growerHost(t, name, { cpu_time_ms: 4000 });
  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(500, 4);
  const size = sampleSize(h, name);
  const mark = h.mark();
  const t0 = Date.now();
  const r = await post(h, { jsonrpc: "2.0", id: 1, method: `${name}.hoard`, params: {} });
  const ms = Date.now() - t0;
  await h.waitForLog(/^ready$/, { source: name, since: mark, timeoutMs: 60_000 });
  const peak = await size.stop();
  const crash = h.records.slice(mark).find((x) => x.source === "host" && x.message.startsWith(`${name} crashed`))?.message ?? "(no crash logged)";
  t.log(`hoard answered in ${ms} ms: ${JSON.stringify(r.json?.error ?? r.json?.result).slice(0, 160)}; its isolate host held at most ${(peak / MiB).toFixed(0)} MB (ceiling ${CEILING / MiB} MB); ${crash.slice(0, 300)} (load ${load()})`);
  t.true(peak > 0, "its isolate host was sampled");
  t.true(peak <= CEILING + PAST_CEILING, `its isolate host held ${(peak / MiB).toFixed(0)} MB, within ${CEILING / MiB} MB and a sample's growth`);
  t.regex(crash, /memory limit of 64 MB \(memory_mb\)/, "the crash names memory_mb");
  t.notRegex(crash, /memory_total_mb|cpu_time_ms/, "not the kernel's limit, nor cpu_time_ms");
  const pong = await post(h, { jsonrpc: "2.0", id: 2, method: `${name}.ping`, params: {} });
  t.is(pong.json?.result, "pong", "it answers after its restart");
  await canary.stop();
  watch.assertCanary(t);
  await watch.finish(t, 1);
});

for (const sync of [false, true]) {
  test.serial(`a TypeScript module making 16,000 unawaited host calls in one turn, each naming the same 1 MB string (${sync ? "sync" : "asynchronous"} crossings): past MAX_CALL_BYTES_PER_STRETCH its calls fail with quota_exceeded naming it before they are copied out, its isolate host stays within ISOLATE_HOST_RSS_BASE_MB + 2 x memory_mb, it keeps running and answers; the canary stores every block and RPC answers`, async (t) => {
    t.timeout(120_000);
    crossings(t, sync);
    const name = "r24-copies";
    const h = await growerHost(t, name, {});
    const watch = watchHost(t, h);
    const canary = watch.canaryLoop(500, 4);
    const size = sampleSize(h, name);
    const t0 = Date.now();
    const r = await post(h, { jsonrpc: "2.0", id: 1, method: `${name}.copies`, params: { calls: 16_000, chars: 1_000_000 } });
    const ms = Date.now() - t0;
    await sleep(1000);
    const peak = await size.stop();
    const outcomes = (r.json?.result ?? {}) as Record<string, number>;
    t.log(`copies answered in ${ms} ms: ${JSON.stringify(r.json?.error ?? outcomes).slice(0, 600)}; its isolate host held at most ${(peak / MiB).toFixed(0)} MB (ceiling ${CEILING / MiB} MB) (load ${load()})`);
    t.true(peak > 0, "its isolate host was sampled");
    t.true(peak <= CEILING, `its isolate host held ${(peak / MiB).toFixed(0)} MB, within ${CEILING / MiB} MB`);
    const refused = Object.entries(outcomes).filter(([o]) => o.startsWith("quota_exceeded") && o.includes("MAX_CALL_BYTES_PER_STRETCH")).reduce((n, [, c]) => n + c, 0);
    t.true(refused >= 16_000 - 17, `at most 17 calls (16 MiB of params and the first) left the isolate; ${refused} were refused naming MAX_CALL_BYTES_PER_STRETCH`);
    t.is(h.status(name)?.state, "running", "it still runs");
    const pong = await post(h, { jsonrpc: "2.0", id: 2, method: `${name}.ping`, params: {} });
    t.is(pong.json?.result, "pong", "it answers");
    await canary.stop();
    watch.assertCanary(t);
    await watch.finish(t, 1);
  });
}

const ANSWERS_CAPS = ["register_module_api", "register_rpc_endpoint"];

test.serial("a TypeScript module keeping 32 module calls in flight for 8 s to a method of one line answering 60,000 empty objects (~40 ms of the callee's checking and copying each): the callee is never stopped for cpu_time_ms, every call is answered, the canary stores every block and RPC answers", async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const answers: InlineModule = {
    toml: [`name = "r24-answers"`, `version = "0.1.0"`, `entry_point = "index.ts"`, `description = "round 24: round 23's costly answers"`, `capabilities = ${JSON.stringify(ANSWERS_CAPS)}`, ""].join("\n"),
    files: { "index.ts": readFileSync(new URL("./fixtures/hostile-round23-isolate/answers.ts", import.meta.url), "utf8") },
  };
  await buildModulesDir(dir, ["good"], { "r24-answers": answers, "r24-callers": fixtureModule("r24-callers", "caller.ts", ["call_module"]) });
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, "r24-answers": ANSWERS_CAPS, "r24-callers": ["call_module=r24-answers"] },
    // The caller takes in up to 32 answers in one crossing (its own doing): room for that on a
    // loaded machine, so the test is about the callee.
    moduleLimits: { "r24-answers": { memory_mb: 256 }, "r24-callers": { memory_mb: 128, cpu_time_ms: 5000 } },
    moduleConfigs: { "r24-callers": { target: "r24-answers", method: "maps", lanes: 32, ms: 8000, timeout_ms: 60_000 } },
  });
  await h.waitForState("good", "running", 60_000);
  await h.waitForLog(/^answering$/, { source: "r24-answers", timeoutMs: 60_000 });
  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(500, 4);
  const done = await h.waitForLog(/^calls$/, { source: "r24-callers", timeoutMs: 90_000 });
  const outcomes = JSON.parse(String(done.fields?.outcomes ?? "{}")) as Record<string, number>;
  const crashes = h.records.filter((r) => r.source === "host" && r.message.startsWith("r24-answers crashed"));
  t.log(`calls: ${JSON.stringify(outcomes)}, the longest ${String(done.fields?.longest)} ms; r24-answers crashed ${crashes.length} times${crashes[0] ? ` (${crashes[0].message.slice(0, 200)})` : ""} (load ${load()})`);
  t.is(crashes.length, 0, "the callee was never stopped");
  t.true((outcomes.ok ?? 0) > 32, "calls were answered");
  t.deepEqual(Object.keys(outcomes), ["ok"], "every call was answered with the value");
  t.is(h.status("r24-answers")?.state, "running", "the callee still runs");
  await canary.stop();
  watch.assertCanary(t);
  await watch.finish(t, 1);
});


const BUSY_CAPS = ["register_module_api", "read_storage", "write_storage"];
const CALL_TIMEOUT_MS = 4000;
const BUSY_REQUEST_TIMEOUT_MS = 1000;

test.serial(`module API calls to a TypeScript module over its host_cpu_ms_per_s (the host reads its socket only part of the time) whose method never answers: each times out after its ${CALL_TIMEOUT_MS} ms and at most the module's request_timeout_ms more, for the time its socket was not read (before: a whole timeout more whenever reading was paused at the deadline)`, async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  await buildModulesDir(dir, [], { "r24-busy": fixtureModule("r24-busy", "busy.ts", BUSY_CAPS) });
  const h = await startHost(t, {
    dir, modules: [],
    grants: { "r24-busy": BUSY_CAPS },
    moduleLimits: { "r24-busy": { host_cpu_ms_per_s: 20, request_timeout_ms: BUSY_REQUEST_TIMEOUT_MS } },
  });
  await h.waitForLog(/^busy$/, { source: "r24-busy", timeoutMs: 60_000 });
  const took = await Promise.all(Array.from({ length: 8 }, async () => {
    const t0 = Date.now();
    const err = await callApi(h, "r24-busy", "hang", {}, CALL_TIMEOUT_MS).then(() => undefined, (e: Error) => e.message);
    return { ms: Date.now() - t0, err };
  }));
  t.log(`8 calls with a timeout of ${CALL_TIMEOUT_MS} ms ended after ${took.map((x) => x.ms).join(", ")} ms: ${[...new Set(took.map((x) => x.err))].join(" | ").slice(0, 300)} (load ${load()})`);
  // The deadline, the module's request_timeout_ms at most for the time its socket was not read, and a loaded machine's timer lateness.
  const bound = CALL_TIMEOUT_MS + BUSY_REQUEST_TIMEOUT_MS + 2000;
  for (const x of took) t.true(x.ms <= bound, `a call ended after ${x.ms} ms, within ${bound}`);
  t.true(took.every((x) => /did not answer within/.test(x.err ?? "")), "each timed out");
});

for (const sync of [false, true]) {
  test.serial(`a TypeScript module with a memory_mb of 8 holding as many 1 MiB buffers as its isolate lets it, whose stop() tries to take more, reloaded 3 times (${sync ? "sync" : "asynchronous"} crossings): each instance stops cleanly (no crash, no stop timeout, its isolate host's size check does not end it), each new one holds buffers again (within twice memory_mb) and the last answers`, async (t) => {
    t.timeout(120_000);
    crossings(t, sync);
    const dir = await tempDir(t);
    const name = "r24-holder";
    await buildModulesDir(dir, [], { [name]: fixtureModule(name, "holder.ts", ["register_rpc_endpoint"]) });
    const h = await startHost(t, { dir, modules: [], grants: { [name]: ["register_rpc_endpoint"] }, moduleLimits: { [name]: { memory_mb: 8 } } });
    await h.waitForLog(/^holding$/, { source: name, timeoutMs: 60_000 });
    const mark = h.mark();
    const took: number[] = [];
    for (let i = 0; i < 3; i++) {
      const since = h.mark();
      const t0 = Date.now();
      await h.manager.reload(name);
      took.push(Date.now() - t0);
      await h.waitForLog(/^holding$/, { source: name, since, timeoutMs: 60_000 });
    }
    const held = h.records.filter((r) => r.source === name && r.message === "holding").map((r) => Number(r.fields?.mib));
    const ends = h.records.slice(mark).filter((r) => (r.source === "host" && /crashed|did not stop|memory_mb/.test(r.message)) || (r.source === name && r.level === "error"));
    t.log(`MiB held by each instance: ${held.join(", ")}; reloads took ${took.join(", ")} ms; ${ends.length ? ends.map((r) => r.message.slice(0, 200)).join(" | ") : "no crash, stop timeout or memory line"} (load ${load()})`);
    // isolated-vm's limit is soft (10 MiB of buffers were let in at 8): within twice memory_mb, what the isolate host's size allows for.
    t.true(held.length === 4 && held.every((n) => n > 0 && n <= 16), "each instance held some buffers, within twice memory_mb");
    t.deepEqual(ends, [], "no instance crashed, ran past its stop timeout or was ended for memory");
    const pong = await post(h, { jsonrpc: "2.0", id: 1, method: `${name}.ping`, params: {} });
    t.is(pong.json?.result, "pong", "the last instance answers");
  });
}

const LONG_ERRORS: Record<string, string> = {
  // Its bundle throws as it is evaluated.
  "r24-load-throws": `throw new Error("m".repeat(1 << 20));\nexport default async function start(): Promise<void> {}\n`,
  // Its start() throws.
  "r24-start-throws": `export default async function start(): Promise<void> {\n  throw new Error("s".repeat(1 << 20));\n}\n`,
  // Its bundle leaves promises rejected with such errors as it is evaluated.
  "r24-load-rejects": `for (let i = 0; i < 100; i++) void Promise.reject(new Error("r".repeat(1 << 20)));\nexport default async function start(): Promise<void> {}\n`,
};

test.serial("TypeScript modules whose loading or start() fails with an error of a 1 MiB message (thrown, or rejected unhandled as the bundle is evaluated): each failed load says why, in the module's goodbye and its log line, cut", async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  await buildModulesDir(dir, [], Object.fromEntries(Object.entries(LONG_ERRORS).map(([name, code]) => [name, {
    toml: [`name = "${name}"`, `version = "0.1.0"`, `entry_point = "index.ts"`, `description = "round 24: a failure with a long message"`, `capabilities = []`, ""].join("\n"),
    files: { "index.ts": code },
  }])));
  const h = await startHost(t, { dir, modules: [], grants: Object.fromEntries(Object.keys(LONG_ERRORS).map((n) => [n, []])), moduleLimits: Object.fromEntries(Object.keys(LONG_ERRORS).map((n) => [n, { max_restarts: 0 }])) });
  for (const name of Object.keys(LONG_ERRORS)) {
    const failed = await h.waitForLog(new RegExp(`^failed to load ${name}:`), { source: "host", timeoutMs: 60_000 });
    const own = h.records.filter((r) => r.source === name && r.level === "error");
    t.log(`${name}: ${failed.message.slice(0, 140)}… (${failed.message.length} characters); its own error lines: ${own.length ? `${own.map((r) => r.message.length).join(", ")} characters` : "none"}`);
    t.regex(failed.message, /module said goodbye: failed to start: (loading the module|start): [msr]{1000}/, `${name}: the failed load says why`);
    t.true(own.length > 0 && own.every((r) => r.message.length <= 8192), `${name}: its error lines reached the host, cut`);
  }
});
