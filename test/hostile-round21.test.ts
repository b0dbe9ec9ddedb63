// Hostile probes of round 21 (issue #8), under the real host and sandbox, each next to the
// canary ("good", which stores every block):
//   cycles    a native module (test/fixtures/hostile-round21-probes/holder.ts) and a TypeScript
//             one that, at every start, take one of each thing the host holds for a module
//             (subscriptions, JSON-RPC methods and calls of them in flight, a module API, timers
//             at 0.001 s, hooks that never answer, staged storage transaction parts, module
//             calls in flight, a file, events published without pause, console output) are
//             reloaded, killed -9 and unloaded and loaded, cycle after cycle. A census of the host
//             (test/helpers/census.ts: every map, set and array reachable from it, host-bytes
//             accounts, descriptors, mounts, loop devices, cgroups, run-directory entries) must
//             not grow with the cycles. It found the next one: the module the holders call kept
//             their ended instances' calls (32 more at each cycle).
//   orphans   three native modules (test/fixtures/hostile-round21-probes/orphans.ts) and a
//             TypeScript one send 64 module calls each to a module whose method answers after
//             45 s and crash, again at every restart: the calls of their ended instances stayed
//             waiting at the callee until they timed out, and four such callers, under the
//             restart and quarantine defaults, filled its MAX_PENDING_INVOCATIONS (1,024) so
//             that every other call to it was refused. Now a calling instance's end gives up its
//             calls, and one caller has at most max_calls_per_caller waiting at another module.
// While they run: the canary stores every block within 5 s, RPC answers within 5 s, no turn of
// the host's loop takes 250 ms of its CPU, its heap, log and descriptors stay within bounds.
// The tests watch this process's loop, so they run one at a time.

import test from "ava";
import { fileURLToPath } from "node:url";
import { buildModulesDir, GOOD_GRANTS, sleep, startHost, tempDir, waitFor, type TestHost } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { watchHost } from "./helpers/host-watch.ts";
import { post } from "./helpers/rpc.ts";
import { callApi, inlineModule } from "./helpers/modules.ts";
import { census, grown, pendingOf } from "./helpers/census.ts";
import { DEFAULT_LIMITS } from "../host/config.ts";

/** The victim's max_calls_per_caller (the default). */
const MAX_CALLS_PER_CALLER = DEFAULT_LIMITS.max_calls_per_caller;

const HOLDER = fileURLToPath(new URL("./fixtures/hostile-round21-probes/holder.ts", import.meta.url));

const HOLDER_CAPS = ["subscribe_events", "publish_events", "register_rpc_endpoint", "register_module_api", "manage_timers", "register_hook", "read_storage", "write_storage", "write_filesystem", "call_module"];
const HOLDER_GRANTS = [...HOLDER_CAPS.filter((c) => c !== "register_hook" && c !== "call_module"), "register_hook=rpc_dispatch", "register_hook=tx_submit", "call_module=r21-sink"];

const SINK = inlineModule("r21-sink", ["register_module_api"], `
  let held = 0;
  await ctx.modules.registerApi({ hang: () => { held++; return new Promise(() => {}); }, held: () => held });
`);

// The TypeScript holder: what holder.ts takes, through ctx, and what only an isolate host has
// (its own timers, pending promises, console output).
const TS_HOLDER = inlineModule("r21-ts-holder", HOLDER_CAPS, `
  const me = ctx.module.name;
  const got: Record<string, number> = {};
  const errors: string[] = [];
  const each = async (what: string, n: number, f: (i: number) => Promise<unknown>) => {
    let ok = 0;
    for (let i = 0; i < n; i++) { try { await f(i); ok++; } catch (e: any) { errors.push(what + ": " + String(e?.message).slice(0, 200)); break; } }
    got[what] = ok;
  };
  const never = () => new Promise(() => {});
  await each("subscriptions", 64, (i) => ctx.events.subscribe([i === 0 ? me + ":e" : "r21-sink:e" + i], () => {}));
  await each("rpc methods", 16, (i) => ctx.rpc.register("m" + i, "d".repeat(1024), never));
  await each("api", 1, () => ctx.modules.registerApi({ hang: never }));
  await each("timers", 64, () => ctx.timers.every(0.001, () => {}));
  await each("hooks", 2, (i) => ctx.hooks.register(i === 0 ? "rpc_dispatch" : "tx_submit", never));
  await each("file", 1, () => ctx.fs.writeFile("held.bin", "h".repeat(4096)));
  await each("storage", 1, async () => { await ctx.storage.openTree("t"); await ctx.storage.put("t", "k", "v".repeat(100_000)); });
  for (let i = 0; i < 32; i++) void ctx.modules.call("r21-sink", "hang", {}, 60_000).catch(() => {});
  for (let i = 0; i < 200; i++) setInterval(() => {}, 0);
  const pending: Promise<unknown>[] = [];
  for (let i = 0; i < 10_000; i++) pending.push(new Promise(() => {}));
  ctx.log.info("holding", { ...got, errors });
  const payload = { blob: "x".repeat(16 * 1024) };
  void (async () => { for (;;) { try { await ctx.events.publish("e", payload); } catch { await new Promise((r) => setTimeout(r, 20)); } } })();
  setInterval(() => console.log("o".repeat(2000)), 5);
`);

/** JSON-RPC calls of the holder's methods that never answer: in flight when it goes. */
function callsInFlight(h: TestHost, name: string, n: number): void {
  for (let i = 0; i < n; i++) void post(h, { jsonrpc: "2.0", id: i, method: `${name}.m${i % 16}`, params: {} }).catch(() => {});
}

const CYCLES = Number(process.env.R21_CYCLES ?? 3);

test.serial(`a native and a TypeScript module that hold one of everything the host keeps for a module (subscriptions, JSON-RPC methods with calls in flight, hooks that never answer, timers at 0.001 s, staged storage parts, module calls in flight, published events) are reloaded, killed -9, unloaded and loaded ${2 * CYCLES} times each: every cycle ends with the module holding again, and a census of the host (its maps, sets and arrays, host-bytes accounts, descriptors, mounts, loop devices, cgroups, run-directory entries) does not grow, while the canary stores every block and RPC answers`, async (t) => {
  t.timeout(300_000 + CYCLES * 20_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"], { "r21-sink": SINK, "r21-ts-holder": TS_HOLDER });
  await writeNodeNative(modulesDir, "r21-holder", HOLDER, HOLDER_CAPS);
  const holderLimits = { quarantine_after: 0, max_restarts: 100_000, handler_timeout_ms: 60_000 };
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, "r21-sink": ["register_module_api"], "r21-holder": HOLDER_GRANTS, "r21-ts-holder": HOLDER_GRANTS },
    moduleLimits: { "r21-holder": holderLimits, "r21-ts-holder": holderLimits },
  });
  for (const m of ["good", "r21-sink", "r21-holder", "r21-ts-holder"]) await h.waitForState(m, "running", 60_000);
  const holding = async (name: string, since: number) => (await h.waitForLog(/^holding$/, { source: name, since, timeoutMs: 60_000 })).fields as Record<string, unknown>;
  const steps = ["reload", "kill -9", "unload and load"] as const;
  const cycle = async (name: string, step: (typeof steps)[number]) => {
    const mark = h.mark();
    callsInFlight(h, name, 8);
    if (step === "reload") await h.manager.reload(name);
    else if (step === "kill -9") {
      const pid = h.status(name)?.pid;
      if (pid) process.kill(pid, "SIGKILL");
      await waitFor(() => h.status(name)?.pid !== pid, 30_000, `${name} to be seen ended`);
    } else {
      await h.manager.unload(name);
      // Seen once in ~33 native unload-and-loads at load ~20 (an open question, not a bound this
      // probe checks): the load found the volume's loop device of the instance just unloaded
      // still held past its wait (5 s then, LOOP_FREE_WAIT_MS 15 s now). Said in the log, and
      // loaded again once it is free.
      const refused = await h.manager.load(name).then(() => undefined, (e: Error) => e);
      if (refused) {
        if (!/still held by/.test(refused.message)) throw refused;
        t.log(`${name}: load right after its unload refused (its volume's loop device still held): ${refused.message.slice(0, 200)}`);
        let again: Error | undefined = refused;
        for (let tries = 0; again && tries < 12; tries++) {
          await sleep(5000);
          again = await h.manager.load(name).then(() => undefined, (e: Error) => e);
        }
        if (again) throw again;
      }
    }
    await h.waitForState(name, "running", 60_000);
    return holding(name, mark);
  };
  // Warm up: one of each step for each, so that the first census has seen every path once.
  for (const name of ["r21-holder", "r21-ts-holder"]) for (const step of steps) t.log(`${name} after ${step}: ${JSON.stringify(await cycle(name, step))}`);
  // Censuses after the warm-up (a), after CYCLES cycles of each (b) and after as many more (c):
  // what grows with the cycles grows from b to c as it did from a to b; what is bounded does not.
  const a = await census(h);
  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(500, 4);
  const started = Date.now();
  const run = async () => {
    for (let i = 0; i < CYCLES; i++) {
      for (const name of ["r21-holder", "r21-ts-holder"]) {
        const got = await cycle(name, steps[i % steps.length]!);
        t.deepEqual(got.errors, [], `${name} took everything again after cycle ${i + 1}`);
        if (i === CYCLES - 1) t.log(`${name} after cycle ${i + 1}: ${JSON.stringify(got)}`);
      }
      watch.sample();
    }
  };
  await run();
  const b = await census(h);
  await run();
  const c = await census(h);
  t.log(`${2 * CYCLES} cycles of each in ${((Date.now() - started) / 1000).toFixed(0)} s; census of ${Object.keys(c).length} entries`);
  if (process.env.R21_CENSUS_KEYS) t.log(`census keys: ${Object.keys(c).join(" ")}`);
  t.log(`grown over the first ${CYCLES} cycles: ${grown(a, b).join("; ") || "nothing"}`);
  // Not compared: failure and restart times, kept for their windows (restart_window_ms,
  // quarantine_window_ms); what the cycled modules' current instances hold (their sessions,
  // within their limits); events on their way to a subscriber (event_queue, event_window); the
  // RPC server's connections, this test's own calls (callsInFlight: 8 a cycle, each on a
  // connection its client keeps alive until [rpc] idle_timeout_ms; max_connections bounds them).
  const own = [/\.(restartTimes|failures)$/, /records\[r21-(ts-)?holder\]\.process\./, /\.subs\[\]\.(queue|unacked)$/, /^host\.rpcServer\.conns$/];
  const later = grown(b, c, CYCLES);
  const growing = later.filter((k) => !own.some((re) => re.test(k.split(":")[0]!)));
  t.log(`grown over the next ${CYCLES}: ${later.join("; ") || "nothing"}`);
  t.deepEqual(growing, [], "nothing the host keeps grows with the cycles");
  for (const k of ["hostBytes.accounts", "process.fds", "system.mountsUnderDir", "system.loopsUnderDir", "system.cgroupDirs", "system.runDirEntries"]) {
    t.true((c[k] ?? 0) <= (a[k] ?? 0) + 2, `${k}: ${a[k]} after the warm-up, ${c[k]} after ${2 * CYCLES} cycles`);
  }
  await canary.stop();
  watch.assertCanary(t);
  await watch.finish(t, 3);
});

const ORPHANS = fileURLToPath(new URL("./fixtures/hostile-round21-probes/orphans.ts", import.meta.url));

// A module whose API method `slow` answers after 45 s (a long poll); `ping` answers at once.
const VICTIM_CAPS = ["register_module_api", "register_rpc_endpoint", "manage_timers"];
const VICTIM = inlineModule("r21-victim", VICTIM_CAPS, `
  let slow = 0;
  await ctx.modules.registerApi({
    slow: async () => { slow++; await new Promise((r) => setTimeout(r, 45_000)); return "late"; },
    ping: () => "pong",
    count: () => slow,
  });
  await ctx.rpc.register("ping", "answers at once", () => "pong");
`);

const AFTER_VICTIM = `[dependencies]\nr21-victim = ">=0.1.0"\n`;

// The TypeScript caller: the same calls, then, at the second block after its start, a loop
// that never yields (stopped by cpu_time_ms: a crash). It reports at the first block: a ctx call
// of its own would wait behind the answers its calls reserve (max_unread_bytes).
const TS_ORPHANS = inlineModule("r21-ts-orphans", ["call_module", "subscribe_events"], `
  let refused = 0, first = "", blocks = 0;
  await ctx.events.subscribe(["NewBlock"], () => {
    if (blocks++ === 0) ctx.log.info("orphaning", { sent: 64, refused, first });
    else for (;;) {}
  });
  for (let i = 0; i < 64; i++) void ctx.modules.call("r21-victim", "slow", {}, 60_000).catch((e: any) => { refused++; if (first === "") first = String(e?.message).slice(0, 400); });
`);
TS_ORPHANS.toml += AFTER_VICTIM;

test.serial("three native modules and a TypeScript one that each send 64 module calls to a long-polling module and crash, again at every restart (the product's restart and quarantine defaults), leave none of them waiting there once they end, and a live caller allowed 128 requests in flight has at most MAX_CALLS_PER_CALLER waiting, the rest refused naming it: the module they call still answers other modules and JSON-RPC (before: the dead instances' calls filled its MAX_PENDING_INVOCATIONS, 1,024, for up to 60 s and every other call to it was refused), while the canary stores every block and RPC answers", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const natives = ["r21-orphans-0", "r21-orphans-1", "r21-orphans-2"];
  const callers = [...natives, "r21-ts-orphans"];
  const greedy = "r21-greedy";
  const modulesDir = await buildModulesDir(dir, ["good"], { "r21-victim": VICTIM, "r21-ts-orphans": TS_ORPHANS });
  for (const name of [...natives, greedy]) await writeNodeNative(modulesDir, name, ORPHANS, ["call_module"], AFTER_VICTIM);
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, "r21-victim": VICTIM_CAPS, ...Object.fromEntries([...natives, greedy].map((c) => [c, ["call_module=r21-victim"]])), "r21-ts-orphans": ["call_module=r21-victim", "subscribe_events"] },
    // The product's restart and quarantine defaults for the callers (the test harness lowers max_restarts).
    moduleLimits: { "r21-victim": { handler_timeout_ms: 60_000 }, ...Object.fromEntries(callers.map((c) => [c, { max_restarts: 5, quarantine_after: 5, restart_window_ms: 60_000 }])), [greedy]: { max_requests_in_flight: 128 } },
    moduleConfigs: {
      ...Object.fromEntries(natives.map((c) => [c, { target: "r21-victim", method: "slow", calls: 64, linger_ms: 300 }])),
      // Sends 100 calls and stays (it reports after 2 s, and ends at the host's stop).
      [greedy]: { target: "r21-victim", method: "slow", calls: 100, linger_ms: 2_000, stay: true },
    },
  });
  await h.waitForState("good", "running", 60_000);
  await h.waitForState("r21-victim", "running", 60_000);
  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(500, 4);
  const started = Date.now();
  let peak = 0;
  const peakTimer = setInterval(() => (peak = Math.max(peak, pendingOf(h, "r21-victim"))), 20);
  t.teardown(() => clearInterval(peakTimer));
  // Until every caller has given up (failed or quarantined), or 40 s: the calls of the first
  // instances are still waiting at the victim then (45 s each).
  await waitFor(() => callers.every((c) => ["failed", "quarantined"].includes(h.status(c)?.state ?? "")), 40_000, "the callers to stop restarting").catch(() => {});
  const states = callers.map((c) => `${c}: ${h.status(c)?.state}`).join(", ");
  const reports = h.records.filter((r) => callers.includes(r.source) && /^orphaning$/.test(r.message));
  const crashes = reports.length;
  for (const c of callers) {
    const mine = reports.filter((r) => r.source === c);
    t.log(`${c}: calls refused per instance ${mine.map((r) => r.fields?.refused).join(", ")}; first refusal: ${String(mine.find((r) => r.fields?.first)?.fields?.first ?? "none")}`);
  }
  const greedyReport = (await h.waitForLog(/^orphaning$/, { source: greedy, timeoutMs: 30_000 })).fields as { refused: number; first: string };
  t.log(`${greedy} (128 requests in flight): ${greedyReport.refused} of 100 calls refused; first refusal: ${greedyReport.first}`);
  // The callers' calls are given up as each instance ends: what waits at the victim is the greedy one's.
  const waiting = pendingOf(h, "r21-victim");
  const slow = await callApi<number>(h, "r21-victim", "count").catch((e: Error) => `refused: ${e.message}`);
  const ping = await callApi<string>(h, "r21-victim", "ping").catch((e: Error) => `refused: ${e.message}`);
  const rpc = await post(h, { jsonrpc: "2.0", id: 1, method: "r21-victim.ping", params: {} });
  t.log(`after ${((Date.now() - started) / 1000).toFixed(0)} s: ${states}; ${crashes} instances sent their calls; the victim has ${waiting} invocations waiting (at most ${peak}), took ${slow} slow calls; ping from another caller: ${ping}; JSON-RPC: ${rpc.text.slice(0, 300)}`);
  clearInterval(peakTimer);
  t.true(crashes > 4, `the callers crashed and restarted (${crashes} instances)`);
  t.is(greedyReport.refused, 100 - MAX_CALLS_PER_CALLER, "a live caller's calls past max_calls_per_caller are refused");
  t.regex(greedyReport.first, /max_calls_per_caller/, "the refusal names max_calls_per_caller");
  t.true(waiting <= MAX_CALLS_PER_CALLER + 4, `once the crashing callers are gone none of their calls waits at the victim (${waiting} waiting: the greedy caller's)`);
  t.is(ping, "pong", "another module's call reaches the victim");
  t.is(rpc.json?.result, "pong", "a JSON-RPC call of the victim's method is answered");
  t.true(peak <= (callers.length + 1) * MAX_CALLS_PER_CALLER + 8, `the victim never had more than max_calls_per_caller (${MAX_CALLS_PER_CALLER}) calls of each caller waiting (${peak} at most)`);
  await canary.stop();
  watch.assertCanary(t);
  await watch.finish(t, callers.length + 1);
});
