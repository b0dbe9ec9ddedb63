// Invocations into a TypeScript module cross into its isolate in batches (runtime/isolate/
// worker.ts, INVOKE_BATCHED): those that arrive together are started together, in order, in
// one crossing. Each keeps what it had alone: its own handler_timeout_ms, its own error, a CPU
// watchdog that sees about one handler's stretch at a time, and health checks answered from
// the isolate host's own thread however many invocations wait. Real host, real isolate host.

import test from "ava";
import { startHost, type TestHost } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";

const MODULE = "inv";

// turn: how many handlers have started in this turn of the isolate (reset by a microtask once
// the turn's synchronous work is done) and the order in which they started.
// spin: runs `ms` milliseconds synchronously. stuck: never answers. fail: throws with a code.
// unplain: answers with a function (not plain data).
const BODY = `
  let turn = 0;
  let started = 0;
  await ctx.rpc.register("turn", "", (p: any) => {
    if (turn === 0) Promise.resolve().then(() => { turn = 0; });
    turn++;
    started++;
    return { tag: p.tag, turn, started };
  });
  await ctx.rpc.register("spin", "", (p: any) => {
    const end = Date.now() + p.ms;
    while (Date.now() < end);
    return { tag: p.tag };
  });
  await ctx.rpc.register("stuck", "", () => new Promise(() => {}));
  await ctx.rpc.register("fail", "", (p: any) => { throw Object.assign(new Error("failed on purpose " + p.tag), { code: "E_" + p.tag }); });
  await ctx.rpc.register("unplain", "", () => ({ f: () => 1 }));
  ctx.log.info("serving");`;

async function startModule(t: Parameters<typeof startHost>[0], limits: Record<string, unknown> = {}): Promise<TestHost> {
  const h = await startHost(t, {
    inline: { [MODULE]: inlineModule(MODULE, ["register_rpc_endpoint"], BODY) },
    grants: { [MODULE]: ["register_rpc_endpoint"] },
    moduleLimits: { [MODULE]: { restart: "never", ...limits } },
  });
  await h.waitForLog(/^serving$/, { source: MODULE, timeoutMs: 120_000 });
  return h;
}

const sessionOf = (h: TestHost) => h.manager.processOf(MODULE)!.session;

type Outcome = { ok: true; value: Record<string, unknown>; at: number } | { ok: false; code: string; message: string; at: number };

/** Send `calls` in one go (the host writes the frames of one turn together) and collect each outcome with when it came. */
function sendTogether(h: TestHost, calls: { method: string; params?: Record<string, unknown> }[], timeoutMs = 60_000): Promise<Outcome>[] {
  const session = sessionOf(h);
  const t0 = Date.now();
  return calls.map(({ method, params }) =>
    session.invoke("rpc", { method, params: params ?? {} }, timeoutMs).then(
      (value): Outcome => ({ ok: true, value: value as Record<string, unknown>, at: Date.now() - t0 }),
      (err: { wire?: { code: string; message: string } }): Outcome => ({ ok: false, code: String(err.wire?.code), message: String(err.wire?.message ?? err), at: Date.now() - t0 }),
    ));
}

test("invocations that arrive together are started in one crossing, in the order they were sent", async (t) => {
  const h = await startModule(t);
  const outcomes = await Promise.all(sendTogether(h, Array.from({ length: 32 }, (_, i) => ({ method: "turn", params: { tag: i } }))));
  const values = outcomes.map((o) => (o.ok ? o.value : t.fail(`${o.code}: ${o.message}`)) as { tag: number; turn: number; started: number });
  t.deepEqual(values.map((v) => v.tag), values.map((_, i) => i), "each answer is its own invocation's");
  const firstStarted = values[0]?.started ?? 0;
  t.deepEqual(values.map((v) => v.started), values.map((_, i) => firstStarted + i), "started in the order sent");
  // Crossing one at a time, every handler starts in a turn of its own (turn 1 each). The 32
  // frames leave the host in one write; even if the kernel split the read, some share a turn.
  const most = Math.max(...values.map((v) => v.turn));
  t.log(`at most ${most} of 32 handlers started in one turn of the isolate`);
  t.true(most > 1, "several handlers started in the same turn: they crossed together");
});

test("in a batch, one stuck handler is given up on after handler_timeout_ms while the others are answered at once", async (t) => {
  const handlerTimeoutMs = 5000;
  const h = await startModule(t, { handler_timeout_ms: handlerTimeoutMs });
  const calls = [
    { method: "turn", params: { tag: 0 } },
    { method: "stuck" },
    ...Array.from({ length: 8 }, (_, i) => ({ method: "turn", params: { tag: i + 1 } })),
  ];
  const pending = sendTogether(h, calls);
  let stuckSettled = false;
  void pending[1]!.then(() => (stuckSettled = true));
  const others = await Promise.all(pending.filter((_, i) => i !== 1));
  t.false(stuckSettled, "the others were answered while the stuck one was still waiting");
  for (const o of others) t.true(o.ok, o.ok ? "" : `${o.code}: ${o.message}`);
  t.deepEqual(others.map((o) => (o.ok ? o.value.tag : -1)), [0, 1, 2, 3, 4, 5, 6, 7, 8]);
  const stuck = await pending[1]!;
  t.false(stuck.ok);
  if (!stuck.ok) {
    t.is(stuck.code, "timeout");
    t.regex(stuck.message, new RegExp(`took longer than ${handlerTimeoutMs} ms \\(handler_timeout_ms\\)`));
    t.true(stuck.at >= handlerTimeoutMs - 50, `given up on after ${stuck.at} ms, not before its deadline`);
  }
  // The module goes on: a new batch is answered.
  const again = await Promise.all(sendTogether(h, [{ method: "turn", params: { tag: 99 } }]));
  t.true(again[0]!.ok);
});

test("in a batch, each invocation gets its own error: a throw, an answer that is not plain data and an unknown method fail alone", async (t) => {
  const h = await startModule(t);
  const outcomes = await Promise.all(sendTogether(h, [
    { method: "turn", params: { tag: "a" } },
    { method: "fail", params: { tag: "one" } },
    { method: "unplain" },
    { method: "nope" },
    { method: "fail", params: { tag: "two" } },
    { method: "turn", params: { tag: "b" } },
  ]));
  const [a, one, unplain, nope, two, b] = outcomes;
  t.true(a!.ok && a!.value.tag === "a");
  t.true(b!.ok && b!.value.tag === "b");
  t.like(one, { ok: false, code: "E_one" });
  t.regex(one!.ok ? "" : one!.message, /failed on purpose one/);
  t.like(two, { ok: false, code: "E_two" });
  t.regex(two!.ok ? "" : two!.message, /failed on purpose two/);
  t.false(unplain!.ok, "an answer with a function fails");
  t.like(nope, { ok: false, code: "unknown_method" });
  t.is(h.mustStatus(MODULE).state, "running");
});

test("a batch whose handlers together run far past cpu_time_ms, each well under it, is not stopped by the CPU watchdog", async (t) => {
  // 60 handlers of 25 ms each: 1.5 s of module code arriving in one read. Crossing as one
  // stretch, the watchdog (cpu_time_ms 1000) would stop the module; started a slice at a time,
  // each stretch is about one handler.
  const h = await startModule(t, { cpu_time_ms: 1000, handler_timeout_ms: 120_000 });
  const outcomes = await Promise.all(sendTogether(h, Array.from({ length: 60 }, (_, i) => ({ method: "spin", params: { tag: i, ms: 25 } })), 120_000));
  t.deepEqual(outcomes.map((o) => (o.ok ? o.value.tag : `${o.code}: ${o.message}`)), outcomes.map((_, i) => i), "every handler answered");
  t.is(h.mustStatus(MODULE).state, "running", "the module was not stopped");
});

test("a module flooded with invocations whose handlers keep its isolate busy still answers health checks from its isolate host", async (t) => {
  const h = await startModule(t, { cpu_time_ms: 1000, handler_timeout_ms: 120_000 });
  const session = sessionOf(h);
  // 100 handlers of 30 ms: about 3 s of isolate work queued (more on a loaded machine).
  const flood = sendTogether(h, Array.from({ length: 100 }, (_, i) => ({ method: "spin", params: { tag: i, ms: 30 } })), 120_000);
  let done = 0;
  for (const p of flood) void p.then(() => done++);
  const healthMs: number[] = [];
  const waitingAt: number[] = [];
  while (done < flood.length && healthMs.length < 10) {
    const t0 = Date.now();
    const health = (await session.invoke("health", {}, 10_000)) as Record<string, unknown>;
    healthMs.push(Date.now() - t0);
    waitingAt.push(flood.length - done);
    t.is(health.status, "ok");
  }
  t.log(`health answered in ${healthMs.join(", ")} ms with ${waitingAt.join(", ")} invocations still waiting`);
  t.true(waitingAt.length > 0 && waitingAt[0]! > 0, "the first health check was answered while flooded invocations still waited, not after them");
  const outcomes = await Promise.all(flood);
  t.true(outcomes.every((o) => o.ok), "every flooded invocation answered");
});
