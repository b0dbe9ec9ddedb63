// Hostile TypeScript probes of round 17 (issue #8): what crosses out of the isolate, the
// in-isolate shim's own bounds with the intrinsics they use replaced, CPU and memory inside the
// isolate with no host call, and reentrancy through the host. Under the real host and sandbox,
// all at once next to the canary ("good", which stores every block). The probes are the API
// methods of one module (test/fixtures/hostile-round17/index.ts), run under several names:
//   x-amp    values copied once per reference: one 1 MiB string named by 2,000 elements of an
//            event payload; one 8 MiB string in 2,000 publish calls of one turn; log fields and
//            a console line naming a 1 MiB string 1,000 times (directly and through toJSON).
//            Before: the copy out of the isolate (2 GB to 16 GB, outside memory_mb) grew the
//            isolate host to its cgroup limit, where the kernel killed it, and the crash reason
//            blamed cpu_time_ms; a log line built a gigabyte of JSON. Now a call's params are
//            checked in the isolate before any copy (max_total_string_bytes, max_values,
//            max_depth, the frame, every reference counted) and refused naming the limit; log
//            text and fields are held to MAX_TEXT_JSON_CHARS and MAX_LOG_FIELDS_CHARS as the
//            JSON is made.
//            Then the shim's intrinsics replaced: Uint8Array[Symbol.hasInstance] answering true
//            (params taken for bytes), Object.keys answering [] (an answer of 2,000 keys naming
//            the string passed the check before: copied out whole), Map.prototype.size answering
//            0 (before: MAX_CALLS_UNANSWERED never refused). Now the shim uses the intrinsics as
//            they were before module code ran.
//            And what is checked is what is sent: a payload changed after the call (before the
//            turn's calls cross), getters answering "" to the check and the 1 MiB string after,
//            in params and in an answer; an answer forged after its check through
//            Object.prototype.then or Promise.prototype.then. Now the check makes the copy that
//            is sent, and the shim hands it on with the intrinsics it took at its start.
//   x-cpu    catastrophic RegExp backtracking, a BigInt power, a `then` getter that spins, a
//            thenable that resolves to itself, Intl objects without end (held: each stopped by
//            cpu_time_ms, named in the crash reason, and restarted; the Intl objects, which hold
//            memory outside the heap, may be stopped by memory_mb first)
//   x-mem    64 ArrayBuffers of 64 MiB (held: the isolate's allocator refuses, the module goes on);
//            a thrown 16 MiB string and an Error of 9,000 frames (held: an error for the caller, cut)
//   x-ring-a/b  a ring of module calls, a -> b -> a -> ..., without end (held: each hop is a call
//            in flight of its caller, refused past the module's limit; the ring unwinds)
//   x-echo   an event handler that publishes the event it handles (held: 1000 events/s, bursts of 2000)
//   x-timers 10,000 setTimeout(0) in one turn. Before: each was a host timer, 9,744 refused past
//            256 per module, as many log lines, and the module's backlog filled (its next request
//            refused naming MAX_BACKLOG). Now the timers are kept in the isolate, one host task
//            runs them (held: all 10,000 fire, no refusal, no log line)
// While they run: the canary stores every block within 5 s, RPC answers within 5 s, the host's
// heap, descriptors and log stay bounded; afterwards every probe answers ping.

import test from "ava";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { buildModulesDir, sleep, startHost, tempDir, GOOD_GRANTS, type TestHost } from "./helpers/host.ts";
import { callApi, inlineModule } from "./helpers/modules.ts";
import { PUBLISH_RATE } from "../capabilities/events.ts";
import { descendants } from "./helpers/procs.ts";
import { watchHost } from "./helpers/host-watch.ts";

const PROBE = fileURLToPath(new URL("./fixtures/hostile-round17/index.ts", import.meta.url));
const CAPS = ["register_module_api", "publish_events", "subscribe_events", "read_chain_state", "manage_timers"];
const NAMES = ["x-amp", "x-cpu", "x-mem", "x-ring-a", "x-ring-b", "x-echo", "x-timers"];
const CPU = ["regex", "bigint", "thenGetter", "thenSelf", "intl"];
const MIB = 1024 * 1024;

type Outcome = { ok: true; value: unknown } | { ok: false; code: string; message: string };

/** Peak RSS (MB) of every process of a module while `during` runs. */
async function rssPeakOf(h: TestHost, name: string, during: Promise<unknown>): Promise<number> {
  let peak = 0;
  let on = true;
  void during.finally(() => (on = false)).catch(() => undefined);
  while (on) {
    const pid = h.status(name)?.pid;
    if (pid) {
      let sum = 0;
      for (const p of [pid, ...(await descendants(pid))]) {
        const status = await readFile(`/proc/${p}/status`, "utf8").catch(() => "");
        sum += Number(status.match(/VmRSS:\s+(\d+)/)?.[1] ?? 0) / 1024;
      }
      peak = Math.max(peak, sum);
    }
    await sleep(25);
  }
  return peak;
}

const crashesOf = (h: TestHost, name: string, since: number) =>
  h.records.slice(since).filter((r) => r.source === "host" && r.message.startsWith(`${name} crashed: `)).map((r) => r.message);

test.serial("round 17 under the real host: params, log text and fields copied once per reference are refused before the copy, naming the limit; the shim's bounds hold with Object.keys, Uint8Array[Symbol.hasInstance] and Map.prototype.size replaced; RegExp, BigInt and thenable spins stopped by cpu_time_ms, an Intl spin by cpu_time_ms or memory_mb; ArrayBuffers refused; call rings, self-feeding events and 10,000 timers bounded: the canary gets every block, RPC answers, host heap and log stay bounded", async (t) => {
  t.timeout(480_000);
  const source = await readFile(PROBE, "utf8");
  const probe = (name: string) => ({ ...inlineModule(name, name.startsWith("x-ring") ? [...CAPS, "call_module"] : CAPS, ""), files: { "index.ts": source } });
  const dir = await tempDir(t);
  await buildModulesDir(dir, ["good"], Object.fromEntries(NAMES.map((n) => [n, probe(n)])));
  const again = { max_restarts: 50, quarantine_after: 0 };
  const h = await startHost(t, {
    dir, modules: [],
    grants: {
      good: GOOD_GRANTS,
      ...Object.fromEntries(NAMES.map((n) => [n, CAPS])),
      "x-ring-a": [...CAPS, "call_module=x-ring-b"],
      "x-ring-b": [...CAPS, "call_module=x-ring-a"],
    },
    // x-amp's 30,000 calls of one stretch, 13,616 of them refused (an Error each), can pass
    // 1 s of the isolate's CPU on a loaded machine: that is not what it probes.
    moduleLimits: { ...Object.fromEntries(NAMES.map((n) => [n, again])), "x-amp": { ...again, cpu_time_ms: 10_000 } },
    moduleConfigs: { "x-ring-a": { peer: "x-ring-b" }, "x-ring-b": { peer: "x-ring-a" } },
  });
  for (const m of ["good", ...NAMES]) await h.waitForState(m, "running", 90_000);
  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(300, 4);

  const figures: Record<string, unknown> = {};
  const call = <T>(n: string, m: string, ms = 60_000) => callApi<T>(h, n, m, {}, ms);

  const amp = async () => {
    const restarts = h.mustStatus("x-amp").restarts;
    const mark = h.mark();
    // Each probe runs whatever the one before did (on the old code, the first took the module down).
    const lost = (e: Error): Outcome => ({ ok: true, value: `no answer: ${e.message}` });
    const back = () => h.waitFor(async () => (await call("x-amp", "ping", 5000).catch(() => undefined)) === "pong", 90_000, "x-amp to answer ping");
    const run = (async () => {
      const params = await call<Outcome>("x-amp", "ampParams").catch(lost);
      await back();
      const turn = await call<{ refused: number; first: Outcome }>("x-amp", "ampTurn").catch((e: Error) => ({ refused: 0, first: lost(e) }));
      await back();
      await call("x-amp", "ampFields").catch(lost);
      await back();
      const changed = await call<Outcome>("x-amp", "changedAfter").catch(lost);
      await back();
      const getter = await call<{ o: Outcome; reads: number }>("x-amp", "getterTwice").catch((e: Error) => ({ o: lost(e), reads: -1 }));
      await back();
      const answerGetter = await call<Record<string, string>>("x-amp", "answerGetter").then((a) => Object.values(a).join("").length, (e: Error) => e.message);
      await back();
      await back();
      const instance = await call<Outcome>("x-amp", "tamperInstance").catch(lost);
      await back();
      const keys = await call("x-amp", "tamperKeys").then(() => "answered", (e: Error) => e.message);
      await back();
      const size = await call<Record<string, number>>("x-amp", "tamperSize", 120_000).catch((e: Error) => ({ [`no answer: ${e.message}`]: 0 }) as Record<string, number>);
      // Last: the replaced Promise.prototype.then stays.
      const forged: Record<string, unknown> = {};
      for (const m of ["forgeThen", "forgePromiseThen"]) {
        await back();
        forged[m] = await call<unknown>("x-amp", m).catch((e: Error) => `no answer: ${e.message}`);
      }
      return { params, turn, changed, getter, answerGetter, forged, instance, keys, size };
    })();
    const [rss, got] = await Promise.all([rssPeakOf(h, "x-amp", run), run]);
    figures["x-amp"] = { rssPeakMb: Math.round(rss), ...got, keys: got.keys.slice(0, 200), crashes: crashesOf(h, "x-amp", mark).map((c) => c.slice(0, 200)) };
    t.log("x-amp", figures["x-amp"]);
    for (const [what, o] of [["one string named by 2,000 elements", got.params], ["8 MiB in 2,000 calls of one turn", got.turn.first], ["with Uint8Array[Symbol.hasInstance] replaced", got.instance]] as const) {
      t.false(o.ok, `${what}: refused`);
      if (!o.ok) t.regex(o.message, /max_total_string_bytes/, `${what}: the refusal names max_total_string_bytes`);
    }
    t.is(got.turn.refused, 2000, "each of the 2,000 calls of one turn refused");
    t.deepEqual(got.changed, { ok: true, value: "x-amp:x" }, "a payload changed after the call: what was checked is sent (an empty list)");
    t.deepEqual(got.getter, { o: { ok: true, value: "x-amp:x" }, reads: 2000 }, "getters read once each, by the check: their first answers are sent");
    t.is(got.answerGetter, 0, "an answer's getters read once: the caller gets what was checked (2,000 empty strings)");
    t.deepEqual(got.forged, { forgeThen: "small", forgePromiseThen: "small" }, "an answer forged after its check through Object.prototype.then or Promise.prototype.then: the caller gets what was checked");
    t.regex(got.keys, /result_too_large/, "an answer of 2,000 keys naming the string, with Object.keys replaced: result_too_large");
    // 30,000 unawaited calls in 30 turns: past 16,384 unanswered the shim refuses them (before: none).
    t.true((got.size.MAX_CALLS_UNANSWERED ?? 0) >= 30_000 - 16_384 - 1000, `with Map.prototype.size replaced, ${got.size.MAX_CALLS_UNANSWERED ?? 0} of 30,000 unawaited calls refused naming MAX_CALLS_UNANSWERED`);
    const lines = h.logsOf("x-amp", mark).map((r) => r.message);
    t.is(lines.filter((l) => /fields dropped: .*MAX_LOG_FIELDS_CHARS/.test(l)).length, 2, "both lines' fields dropped naming MAX_LOG_FIELDS_CHARS");
    t.true(lines.some((l) => /MAX_TEXT_JSON_CHARS/.test(l)), "the console line says it was not shown, naming MAX_TEXT_JSON_CHARS");
    t.deepEqual(crashesOf(h, "x-amp", mark), [], "x-amp never crashed");
    t.is(h.mustStatus("x-amp").restarts, restarts, "x-amp was not restarted");
    t.true(rss < 256, `x-amp's processes peaked at ${rss.toFixed(0)} MB`);
  };

  const cpu = async () => {
    const reasons: Record<string, string> = {};
    for (const m of CPU) {
      const mark = h.mark();
      const answer = await call("x-cpu", m).then(() => "answered", (e: Error) => e.message);
      const crash = await h.waitFor(() => crashesOf(h, "x-cpu", mark)[0], 60_000, `x-cpu to crash on ${m} (${answer})`);
      reasons[m] = crash.slice(0, 160);
      // The Intl spin keeps every object it makes, and each holds ICU memory outside the V8
      // heap: the isolate host's own size check (memory_mb, ISOLATE_HOST_RSS_BASE_MB) may end
      // it before cpu_time_ms does. Either limit stops it; the crash reason names which.
      const limits = m === "intl" ? /cpu_time_ms|\(memory_mb\)/ : /cpu_time_ms/;
      t.regex(crash, limits, `${m}: stopped by ${m === "intl" ? "cpu_time_ms or memory_mb" : "cpu_time_ms"}, which the crash reason names`);
      await h.waitForState("x-cpu", "running", 60_000);
      t.is(await call("x-cpu", "ping"), "pong", `${m}: x-cpu runs again`);
    }
    figures["x-cpu"] = reasons;
  };

  const others = async () => {
    const buffers = await call<{ ok: boolean; n: number; error: string }>("x-mem", "buffers");
    figures["x-mem"] = buffers;
    t.false(buffers.ok, "64 ArrayBuffers of 64 MiB: refused");
    t.is(buffers.error, "RangeError", "as a RangeError the module catches");
    for (const m of ["throwHuge", "throwDeep"]) {
      const message = await call("x-mem", m).then(() => "answered", (e: Error) => e.message);
      figures[m] = { chars: message.length, head: message.slice(0, 80) };
      t.true(message !== "answered" && message.length < 16_384, `${m}: an error for the caller, cut (${message.length} characters)`);
    }
    t.deepEqual(crashesOf(h, "x-mem", 0), [], "x-mem never crashed");
    const t0 = Date.now();
    const ring = await call<{ depth: number; code: string; message: string }>("x-ring-a", "ring", 120_000);
    figures.ring = { ...ring, ms: Date.now() - t0 };
    t.truthy(ring.code, "the ring of calls ended with an error");
    await call("x-echo", "echo");
    await sleep(3000);
    // The module reads its count somewhere inside each call: the window between the two reads
    // is at most from the first call's start to the second's answer (2 s and the calls'
    // latency, which a busy machine lengthens). The limiter lets PUBLISH_RATE events a second
    // and bursts of twice that: a chain slowed by a busy machine (under the rate, the bucket
    // refills) may spend a full bucket inside the window. The window is long enough for the
    // bound to fail an unlimited chain, which ran at 1,700 events/s on a quiet machine.
    const w0 = Date.now();
    const heard1 = await call<number>("x-echo", "heard");
    await sleep(10_000);
    const heard2 = await call<number>("x-echo", "heard");
    const windowMs = Date.now() - w0;
    figures["x-echo"] = { heard1, heard2, windowMs };
    const most = Math.ceil((windowMs * PUBLISH_RATE) / 1000) + 2 * PUBLISH_RATE;
    t.true(heard2 - heard1 <= most, `the self-feeding handler heard ${heard2 - heard1} events in at most ${windowMs} ms (at most ${most}: ${PUBLISH_RATE} events/s and a burst of ${2 * PUBLISH_RATE})`);
    // The timers are kept in the isolate (MAX_PENDING_TIMERS, 100,000) and one host task runs
    // them: all 10,000 fire, none is refused, nothing about them in its log.
    const mark = h.mark();
    const timers = await call<{ fired: number; refused: string }>("x-timers", "timers", 90_000);
    figures["x-timers"] = { timers };
    t.deepEqual(timers, { fired: 10_000, refused: "" }, "10,000 timers in one turn: all fired, none refused");
    t.deepEqual(h.logsOf("x-timers", mark).map((r) => r.message), [], "nothing about them in its log");
  };

  try {
    await Promise.all([amp(), cpu(), others()]);
  } finally {
    await canary.stop();
  }
  t.log(figures);
  for (const n of NAMES) t.is(await callApi(h, n, "ping", {}, 30_000), "pong", `${n} answers after the round`);
  watch.assertCanary(t);
  await watch.finish(t, NAMES.length + 1);
  void MIB;
});
