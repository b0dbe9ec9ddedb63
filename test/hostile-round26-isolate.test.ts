// Hostile probes of round 26 (issue #8): TypeScript modules, under the real host and sandbox,
// next to the canary ("good", which stores every block):
//   outside  memory the isolate holds outside the V8 heap that isolated-vm's memory_mb counts,
//            taken a little per call while the module yields between calls
//            (test/fixtures/hostile-round26-isolate/outside.ts):
//              rab   resizable ArrayBuffers (`new ArrayBuffer(0, { maxByteLength })`, resized and
//                    filled): V8 commits their pages itself, not through the allocator that holds
//                    other buffers to memory_mb. 30 of 8 MiB grew the isolate host from 54 to
//                    287 MB with a memory_mb of 64 (outside the host: 4.1 GB at a heap limit of
//                    64). Now the ArrayBuffer constructor modules reach refuses maxByteLength
//                    (in-isolate/main.ts), naming memory_mb.
//              intl  Intl.DateTimeFormat objects kept, 200 a call (ICU's memory, ~12 KB each
//                    outside a heap of ~100 bytes): the isolate host's size check acted only
//                    while its isolate had not yielded, so an idle module over its ceiling was
//                    left there (with sync crossings never looked at: 290 MB after 3.5 s idle)
//                    until the kernel's memory_total_mb. Now it looks while idle too, after a
//                    collection of its own garbage, for IDLE_OVER_MS (worker.ts).
//   liars    errors worded as isolated-vm's own ("Script execution timed out.", "... due to memory
//            limit"), thrown by start() at once or left rejected by a handler: the isolate host
//            read the text and reported a run past cpu_time_ms or memory_mb (and, for a handler's
//            rejection, took it for the isolate's death: not reported, or the module ended). Now
//            only isolated-vm's state decides (worker.ts explain).
//   native   one call of engine code that never looks for V8's request to stop: the decimal text
//            of a BigInt of 2^26 bits (~18 s of CPU in a bare isolate, where a `timeout` of 500 ms
//            waited for all of it; test/fixtures/hostile-round26-isolate/native-ops.ts). Held:
//            the isolate host says goodbye naming cpu_time_ms, and the host kills it
//            CLOSED_CHANNEL_GRACE_MS later (3.1 s from the call) or, with sync crossings, the
//            watchdog thread ends it (1.4 s). An Int32Array sort of 28 M elements (~3 s) does
//            not fit the default memory_mb.
//   console  console lines asking for far more text than a line keeps (16 Ki characters), each
//            in one stretch (test/fixtures/hostile-round26-isolate/console.ts): 100 objects of
//            1 MB of JSON in one call (ended for memory_mb 64), 1,000 lines of one (each
//            converted, then dropped past the stretch's budget: ended for cpu_time_ms), four
//            strings of 2^26 characters joined whole (ended for memory_mb). Now a line's parts
//            are converted after its line is taken, cut before they are joined, none past a full
//            line, and what is converted counts toward MAX_LOG_CHARS_PER_STRETCH (main.ts lineText).
// While they run: the canary stores every block within 5 s, RPC answers within 5 s, no turn of
// the host's loop takes 250 ms of its CPU, its heap, log and descriptors stay within bounds.
// The tests watch this process's loop, so they run one at a time.

import test, { type ExecutionContext } from "ava";
import { loadavg } from "node:os";
import { buildModulesDir, GOOD_GRANTS, sleep, startHost, tempDir, } from "./helpers/host.ts";
import { IDLE_OVER_MS, ISOLATE_HOST_RSS_BASE_MB } from "../runtime/isolate/exit-codes.ts";
import { post } from "./helpers/rpc.ts";
import { inlineModule } from "./helpers/modules.ts";
import { watchHost } from "./helpers/host-watch.ts";
import { fixtureModules, crossings, sampleSize, isolateHostRss } from "./helpers/isolate-probes.ts";

const load = () => loadavg().map((l) => l.toFixed(1)).join(" ");
const MiB = 1024 * 1024;

const fixtureModule = fixtureModules("hostile-round26-isolate", "round 26");

const OUTSIDE_CAPS = ["register_rpc_endpoint"];
const MEMORY_MB = 64;
const CEILING = (ISOLATE_HOST_RSS_BASE_MB + 2 * MEMORY_MB) * MiB;

async function outsideHost(t: ExecutionContext, name: string) {
  const dir = await tempDir(t);
  await buildModulesDir(dir, ["good"], { [name]: fixtureModule(name, "outside.ts", OUTSIDE_CAPS) });
  // memory_total_mb well above the ceiling: the kernel's limit is not what should end it.
  const h = await startHost(t, { dir, modules: [], grants: { good: GOOD_GRANTS, [name]: OUTSIDE_CAPS }, moduleLimits: { [name]: { memory_mb: MEMORY_MB, memory_total_mb: 768, max_restarts: 10, health_timeout_ms: 30_000 } } });
  await h.waitForState("good", "running", 60_000);
  await h.waitForLog(/^ready$/, { source: name, timeoutMs: 60_000 });
  return h;
}

const RAB_CALLS = 30;
const RAB_MB = 8;

test.serial(`a TypeScript module asking for a resizable ArrayBuffer of ${RAB_MB} MiB in each of ${RAB_CALLS} calls (V8 commits their pages outside isolated-vm's count of memory_mb) is refused at each, naming memory_mb, by every way to the constructor (a buffer's constructor, the prototype's, Reflect.construct, a subclass, an options getter answering otherwise the second time); other buffers work as before; its isolate host grows by less than ${RAB_MB * 4} MB, it keeps running, the canary stores every block and RPC answers`, async (t) => {
  t.timeout(120_000);
  const name = "r26-rab";
  const h = await outsideHost(t, name);
  const watch = watchHost(t, h);
  await watch.round();
  const canary = watch.canaryLoop(500, 2);
  const before = await isolateHostRss(h, name);
  const size = sampleSize(h, name);
  const answers: { kept?: number; error?: string }[] = [];
  for (let i = 0; i < RAB_CALLS; i++) {
    const r = await post(h, { jsonrpc: "2.0", id: i, method: `${name}.rab`, params: { mb: RAB_MB } });
    answers.push(r.json.result ?? { error: JSON.stringify(r.json.error) });
    await sleep(20);
  }
  const peak = await size.stop();
  const ways = await post(h, { jsonrpc: "2.0", id: 100, method: `${name}.ways`, params: {} });
  await canary.stop();
  t.log(`${RAB_CALLS} calls: the first answered ${JSON.stringify(answers[0]).slice(0, 200)}, the last ${JSON.stringify(answers.at(-1)).slice(0, 80)}; the isolate host ${(before / MiB).toFixed(0)} MB before, at most ${(peak / MiB).toFixed(0)} MB during (ceiling ${CEILING / MiB} MB); load ${load()}`);
  t.true(answers.every((a) => a.kept === 0 && /resizable ArrayBuffers \(maxByteLength\) are not available.*memory_mb/.test(a.error ?? "")), "every call refused, naming memory_mb");
  t.true(peak - before < RAB_MB * 4 * MiB, `the isolate host grew by ${((peak - before) / MiB).toFixed(0)} MB`);
  t.deepEqual(ways.json.result, {
    constructorOfABuffer: "RangeError", prototypeConstructor: "RangeError", reflect: "RangeError", subclass: "RangeError", flippingGetter: "fixed",
    plain: [16, true, true, 12, true, true, 8, "[object ArrayBuffer]", 32],
  }, JSON.stringify(ways.json).slice(0, 400));
  t.is(h.status(name)?.state, "running");
  watch.assertCanary(t);
  await watch.finish(t, 1);
});

const INTL_PER_CALL = 200;

for (const sync of [false, true]) {
  test.serial(`a TypeScript module keeping Intl objects (memory outside its heap) ${INTL_PER_CALL} a call until its isolate host is over ISOLATE_HOST_RSS_BASE_MB + 2 x memory_mb, then idle (${sync ? "sync" : "asynchronous"} crossings): it is ended within IDLE_OVER_MS and 3 s, naming memory_mb, not left there or to the kernel at memory_total_mb; it restarts and answers, the canary stores every block and RPC answers`, async (t) => {
    t.timeout(120_000);
    crossings(t, sync);
    const name = "r26-intl";
    const h = await outsideHost(t, name);
    const watch = watchHost(t, h);
    await watch.round();
    const canary = watch.canaryLoop(500, 2);
    const mark = h.records.length;
    let calls = 0;
    let rss = 0;
    // Small steps (~2.4 MB, a few ms each), each followed by a pause: the module is idle nearly
    // all the time. Stops 4 steps (~10 MB, more than the isolate host's own garbage) after the
    // first size seen over the ceiling, or once the module is gone.
    let over = 0;
    while (calls < 1000 && over < 4) {
      const r = await post(h, { jsonrpc: "2.0", id: calls, method: `${name}.intl`, params: { n: INTL_PER_CALL } });
      calls++;
      if (r.json.error) break;
      rss = await isolateHostRss(h, name);
      if (rss > CEILING) over++;
      await sleep(20);
    }
    const idleAt = Date.now();
    // Its first look over the ceiling (a sample, <= 100 ms), IDLE_OVER_MS, the next look, then
    // the process's end and the host's hearing of it: 3 s of slack for a loaded machine.
    const crashed = await h.waitForLog(new RegExp(`^${name} crashed`), { source: "host", since: mark, timeoutMs: IDLE_OVER_MS + 3000 }).catch(() => undefined);
    const endedMs = Date.now() - idleAt;
    const after = await isolateHostRss(h, name);
    t.log(`${calls} calls, the isolate host at ${(rss / MiB).toFixed(0)} MB (ceiling ${CEILING / MiB} MB); ${crashed ? `ended ${endedMs} ms after: ${crashed.message.slice(0, 400)}` : `not ended after ${endedMs} ms: ${(after / MiB).toFixed(0)} MB`}; load ${load()}`);
    t.truthy(crashed, "ended");
    t.regex(crashed?.message ?? "", /exceeded its memory limit of 64 MB \(memory_mb\)/);
    t.notRegex(crashed?.message ?? "", /the kernel killed/);
    await h.waitForState(name, "running", 60_000);
    const ping = await post(h, { jsonrpc: "2.0", id: 9999, method: `${name}.ping`, params: {} });
    t.is(ping.json.result, "pong");
    await canary.stop();
    watch.assertCanary(t);
    await watch.finish(t, 1);
  });
}

const LIAR_CAPS = ["register_rpc_endpoint"];
const TIMED_OUT = "Script execution timed out.";
const MEMORY_LIMIT = "Isolate was disposed during execution due to memory limit";

for (const sync of [false, true]) {
  test.serial(`TypeScript modules whose start() throws, at once, errors worded as isolated-vm's ("${TIMED_OUT}", "${MEMORY_LIMIT}"), and whose handler leaves such errors rejected and unhandled (${sync ? "sync" : "asynchronous"} crossings): each failed start says the module's own message, naming neither cpu_time_ms nor memory_mb; the rejections are reported in the module's log, which keeps running and answers`, async (t) => {
    t.timeout(120_000);
    crossings(t, sync);
    const dir = await tempDir(t);
    const modules = {
      "r26-says-timeout": inlineModule("r26-says-timeout", LIAR_CAPS, `throw new Error(${JSON.stringify(TIMED_OUT)});`),
      "r26-says-memory": inlineModule("r26-says-memory", LIAR_CAPS, `throw new Error(${JSON.stringify(MEMORY_LIMIT)});`),
      "r26-rejects": inlineModule("r26-rejects", LIAR_CAPS, `
  await ctx.rpc.register("reject", "leaves its message rejected with no handler", (p: any) => { Promise.reject(new Error(String(p.m))); return "answered"; });
  await ctx.rpc.register("ping", "answers at once", () => "pong");
  ctx.log.info("ready");`),
    };
    await buildModulesDir(dir, ["good"], modules);
    const grants = Object.fromEntries(Object.keys(modules).map((n) => [n, LIAR_CAPS]));
    const h = await startHost(t, { dir, modules: [], grants: { good: GOOD_GRANTS, ...grants }, moduleLimits: { "r26-rejects": { max_restarts: 0 } } });
    await h.waitForState("good", "running", 60_000);
    await h.waitForLog(/^ready$/, { source: "r26-rejects", timeoutMs: 60_000 });
    const failed = (name: string) => h.waitForLog(new RegExp(`failed to load ${name}`), { source: "host", timeoutMs: 60_000 });
    const timeout = await failed("r26-says-timeout");
    const memory = await failed("r26-says-memory");
    t.log(`${timeout.message.slice(0, 240)} || ${memory.message.slice(0, 240)}`);
    t.true(timeout.message.includes(TIMED_OUT) && !/cpu_time_ms/.test(timeout.message), timeout.message.slice(0, 300));
    t.true(memory.message.includes(MEMORY_LIMIT) && !/memory_mb/.test(memory.message), memory.message.slice(0, 300));
    const mark = h.records.length;
    for (const [i, m] of [TIMED_OUT, MEMORY_LIMIT].entries()) {
      const r = await post(h, { jsonrpc: "2.0", id: i, method: "r26-rejects.reject", params: { m } });
      t.log(`rejecting "${m}": ${JSON.stringify(r.json).slice(0, 200)}`);
      await sleep(300);
    }
    await h.waitForLog(new RegExp(`unhandled promise rejection: Error: ${MEMORY_LIMIT}`), { source: "r26-rejects", since: mark, timeoutMs: 10_000 }).catch(() => undefined);
    const lines = h.records.slice(mark).filter((r) => r.source === "r26-rejects" || (r.source === "host" && r.message.includes("r26-rejects")));
    t.log(lines.map((r) => `${r.source}: ${r.message.slice(0, 160)}`).join(" | "));
    for (const m of [TIMED_OUT, MEMORY_LIMIT]) t.true(lines.some((r) => r.source === "r26-rejects" && r.message.startsWith(`unhandled promise rejection: Error: ${m}`)), `the rejection "${m}" is reported`);
    t.false(lines.some((r) => r.source === "host" && /crashed/.test(r.message)), "r26-rejects did not crash");
    const ping = await post(h, { jsonrpc: "2.0", id: 9, method: "r26-rejects.ping", params: {} });
    t.is(ping.json.result, "pong");
  });
}

const NATIVE_CAPS = ["register_rpc_endpoint"];
const BIGINT_BITS = 2 ** 26;
/** runtime/process.ts CLOSED_CHANNEL_GRACE_MS: how long the host waits for a process that said goodbye before SIGKILL. */
const CLOSED_CHANNEL_GRACE_MS = 2000;

for (const sync of [false, true]) {
  test.serial(`a TypeScript RPC handler converting a BigInt of 2^26 bits to text (~18 s of engine code that never looks for V8's request to stop, which isolated-vm's timeout and the watchdog's disposal wait for; ${sync ? "sync" : "asynchronous"} crossings): the module is ended naming cpu_time_ms within cpu_time_ms + CLOSED_CHANNEL_GRACE_MS + 5 s, restarts and answers; the canary stores every block and RPC answers (a probe that found it held)`, async (t) => {
    t.timeout(120_000);
    crossings(t, sync);
    const dir = await tempDir(t);
    const name = "r26-native";
    await buildModulesDir(dir, ["good"], { [name]: fixtureModule(name, "native-ops.ts", NATIVE_CAPS) });
    const h = await startHost(t, { dir, modules: [], grants: { good: GOOD_GRANTS, [name]: NATIVE_CAPS }, moduleLimits: { [name]: { max_restarts: 5 } } });
    await h.waitForState("good", "running", 60_000);
    await h.waitForLog(/^ready$/, { source: name, timeoutMs: 60_000 });
    const watch = watchHost(t, h);
    await watch.round();
    const canary = watch.canaryLoop(500, 2);
    const mark = h.records.length;
    const t0 = Date.now();
    const r = await post(h, { jsonrpc: "2.0", id: 1, method: `${name}.bigint`, params: { bits: BIGINT_BITS } });
    const answerMs = Date.now() - t0;
    const crashed = await h.waitForLog(new RegExp(`^${name} crashed`), { source: "host", since: mark, timeoutMs: 60_000 }).catch(() => undefined);
    const endedMs = Date.now() - t0;
    t.log(`answered after ${answerMs} ms: ${JSON.stringify(r.json).slice(0, 160)}; ended after ${endedMs} ms: ${crashed?.message.slice(0, 300)}; load ${load()}`);
    t.truthy(r.json.error, "the call failed");
    t.regex(crashed?.message ?? "", /cpu_time_ms/);
    // cpu_time_ms (1000) and a watchdog sample (100 ms), then at most the host's grace before
    // SIGKILL; 5 s of slack for a loaded machine, far below the conversion's own ~18 s.
    t.true(endedMs < 1100 + CLOSED_CHANNEL_GRACE_MS + 5000, `ended after ${endedMs} ms`);
    await h.waitForState(name, "running", 60_000);
    await h.waitForLog(/^ready$/, { source: name, since: mark, timeoutMs: 60_000 });
    const ping = await post(h, { jsonrpc: "2.0", id: 2, method: `${name}.ping`, params: {} });
    t.is(ping.json.result, "pong");
    await canary.stop();
    watch.assertCanary(t);
    await watch.finish(t, 1);
  });
}

const CONSOLE_CAPS = ["register_rpc_endpoint"];

test.serial(`console lines asking for far more text than a line keeps, each in one stretch (one console.log of 100 objects of 1 MB of JSON, 1,000 lines of one such object, 100 lines of four strings of 2^26 characters), with a memory_mb of 64: each call answers (no cpu_time_ms or memory_mb), what was converted counts toward MAX_LOG_CHARS_PER_STRETCH and the rest of the lines are dropped and said; the canary stores every block and RPC answers`, async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const name = "r26-console";
  await buildModulesDir(dir, ["good"], { [name]: fixtureModule(name, "console.ts", CONSOLE_CAPS) });
  const h = await startHost(t, { dir, modules: [], grants: { good: GOOD_GRANTS, [name]: CONSOLE_CAPS }, moduleLimits: { [name]: { memory_mb: MEMORY_MB, max_restarts: 5 } } });
  await h.waitForState("good", "running", 60_000);
  await h.waitForLog(/^ready$/, { source: name, timeoutMs: 60_000 });
  const watch = watchHost(t, h);
  await watch.round();
  const canary = watch.canaryLoop(500, 2);
  const mark = h.records.length;
  const figures: string[] = [];
  for (const [method, params] of [["many", { n: 100 }], ["lines", { n: 1000 }], ["strs", { len: 2 ** 26 }]] as const) {
    const r = await post(h, { jsonrpc: "2.0", id: 1, method: `${name}.${method}`, params });
    figures.push(`${method}: ${JSON.stringify(r.json.result ?? r.json.error).slice(0, 200)}`);
    t.is(typeof r.json.result, "number", `${method} answered`);
    // The next stretch says what the last one dropped.
    await post(h, { jsonrpc: "2.0", id: 2, method: `${name}.ping`, params: {} });
  }
  await sleep(500);
  await canary.stop();
  const crashes = h.records.slice(mark).filter((r) => r.source === "host" && r.message.startsWith(`${name} crashed`));
  const dropped = h.records.slice(mark).find((r) => r.source === name && /log lines dropped.*MAX_LOG_CHARS_PER_STRETCH/.test(r.message));
  t.log(`${figures.join("; ")}; ${h.logsOf(name, mark).length} lines heard; ${dropped?.message.slice(0, 120)}; load ${load()}`);
  t.deepEqual(crashes.map((r) => r.message.slice(0, 200)), [], "not ended");
  t.truthy(dropped, "the lines dropped are said, naming the limit");
  t.is(h.status(name)?.state, "running");
  watch.assertCanary(t);
  await watch.finish(t, 1);
});
