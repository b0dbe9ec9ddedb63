// Hostile TypeScript code under sync crossings (runtime/isolate/runtime.ts syncCrossings():
// module code runs on the isolate host's main thread, bounded by the watchdog thread of
// runtime/isolate/sync-watchdog.ts), under the real host and sandbox next to the canary
// ("good", which stores every block). One module, told over JSON-RPC which attack to run:
//   microtasks   an endless chain of microtasks after a host call's answer (`for (;;) await null`)
//   answer       a synchronous loop in a host call's answer continuation
//   rpc          a synchronous loop in a JSON-RPC handler
//   event        a synchronous loop in a NewBlock handler
//   timer        a synchronous loop in a setTimeout callback (a host timer)
//   memory       memory growth inside a microtask chain after an answer
// Each must end the module with the right reason (cpu_time_ms or memory_mb, named in the crash
// reason) within a bound, while the host answers RPC and the canary stores every block, and the
// module must come back (restart) and answer again.

import test from "ava";
import { buildModulesDir, sleep, startHost, tempDir, GOOD_GRANTS } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";
import { call } from "./helpers/rpc.ts";
import { canaryRound } from "./helpers/canary.ts";

// Read by the host at each isolate host it spawns: every one of this file is in sync crossings.
process.env.MODHOST_ISOLATE_SYNC = "1";

// cpu_time_ms leaves the memory attack room to reach memory_mb first on a loaded machine (at
// 300 ms, one run at load ~20 was stopped for CPU while it grew); health_timeout_ms keeps the
// module in sync crossings (runtime.ts syncCrossingsFor: at least twice the longest crossing).
const CPU_TIME_MS = 1000;
const MEMORY_MB = 32;
const HEALTH_TIMEOUT_MS = 10_000;
const GRANTS = ["read_chain_state", "subscribe_events", "register_rpc_endpoint", "manage_timers"];

const ATTACK = inlineModule("s-attack", GRANTS, `
  let armed = "";
  const spin = () => { for (;;) {} };
  ctx.events.on("NewBlock", () => { if (armed === "event") spin(); });
  await ctx.rpc.register("ping", "answers pong", () => "pong");
  await ctx.rpc.register("go", "runs the attack it is named", (p: any) => {
    const kind = String(p.kind);
    armed = kind;
    if (kind === "rpc") spin();
    if (kind === "answer") void ctx.chain.getBlockHeight().then(spin);
    if (kind === "microtasks") void (async () => { await ctx.chain.getBlockHeight(); for (;;) await null; })();
    if (kind === "timer") setTimeout(spin, 20);
    if (kind === "memory") void (async () => {
      await ctx.chain.getBlockHeight();
      const keep: number[][] = [];
      for (;;) { keep.push(new Array(1 << 20).fill(keep.length)); await null; }
    })();
    return "armed " + kind;
  });
`);

const ATTACKS: Array<{ kind: string; reason: RegExp }> = [
  { kind: "microtasks", reason: /cpu_time_ms/ },
  { kind: "answer", reason: /cpu_time_ms/ },
  { kind: "rpc", reason: /cpu_time_ms/ },
  { kind: "event", reason: /cpu_time_ms/ },
  { kind: "timer", reason: /cpu_time_ms/ },
  { kind: "memory", reason: /memory limit of 32 MB \(memory_mb\)/ },
];
/**
 * From the attack's start to the crash record: cpu_time_ms of CPU plus the watchdog's sampling
 * (2 x 100 ms + a 10 ms tick), on a loaded 2-core machine where the main thread may get a
 * fraction of a core: generous.
 */
const CRASH_WITHIN_MS = 20_000;

test("under sync crossings, module code that spins (a microtask chain, an answer's continuation, a JSON-RPC handler, an event handler, a timer) is ended for cpu_time_ms and one that grows memory in a microtask for memory_mb, each within the bound; RPC answers and the canary stores every block meanwhile; the module restarts and answers after each", async (t) => {
  t.timeout(400_000);
  const dir = await tempDir(t);
  await buildModulesDir(dir, ["good"], { "s-attack": ATTACK });
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, "s-attack": GRANTS },
    // restart_window_ms 1: each restart waits the first backoff step (250 ms), not a growing one.
    moduleLimits: { "s-attack": { cpu_time_ms: CPU_TIME_MS, memory_mb: MEMORY_MB, health_timeout_ms: HEALTH_TIMEOUT_MS, max_restarts: 50, restart_window_ms: 1, quarantine_after: 0 } },
  });
  await h.waitForState("good", "running", 30_000);
  await h.waitForState("s-attack", "running", 30_000);
  t.is(await call(h, "s-attack.ping"), "pong");
  // The host's health command gives each module 2 s to answer: on a loaded machine a module just
  // restarted may miss that, so ask until it answers (at most 30 s).
  const crossings = async (): Promise<unknown> => {
    for (const until = Date.now() + 30_000; ;) {
      const form = ((await call(h, "health")).modules as any[]).find((m) => m.name === "s-attack")?.health?.crossings;
      if (form !== undefined || Date.now() > until) return form;
      await sleep(500);
    }
  };
  t.is(await crossings(), "sync", "the module runs in sync crossings (its isolate host says so in its health answer)");

  for (const { kind, reason } of ATTACKS) {
    const mark = h.mark();
    const t0 = Date.now();
    // The rpc attack never answers: its caller gets an error once the module is gone.
    const going = call(h, "s-attack.go", { kind }).then((v) => String(v), (e: Error) => `error: ${e.message}`);
    if (kind === "event") await going; // armed: the canary's block sets it off
    const round = canaryRound(h);
    const crash = await h.waitForLog(/^s-attack crashed: /, { source: "host", since: mark, timeoutMs: CRASH_WITHIN_MS + 10_000 });
    const tookMs = crash.time - t0;
    t.log(`${kind}: ${crash.message} (${tookMs} ms after the attack began)`);
    t.regex(crash.message, reason, `${kind}: the crash reason names the limit`);
    t.true(tookMs <= CRASH_WITHIN_MS, `${kind}: ended within ${CRASH_WITHIN_MS} ms (${tookMs} ms)`);
    const { stored, answered } = await round;
    t.true(stored, `${kind}: the canary stored its block within 5 s`);
    t.true(answered, `${kind}: the host answered RPC within 5 s`);
    if (kind === "rpc") t.regex(await going, /^error: /, "the spinning JSON-RPC call got an error, not a hang");
    // Back: restarted, and answering.
    await h.waitForLog(/^loaded s-attack /, { source: "host", since: mark, timeoutMs: 60_000 });
    await h.waitForState("s-attack", "running", 60_000);
    t.is(await call(h, "s-attack.ping"), "pong", `${kind}: the module answers after its restart`);
    t.is(await crossings(), "sync", `${kind}: the restarted module runs in sync crossings too`);
  }
});
