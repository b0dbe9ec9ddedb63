// setTimeout and setInterval of a TypeScript module (with manage_timers), under the real host:
// the timers are kept in the module's isolate, in deadline then insertion order, and run by one
// host task at a time (runtime/isolate/in-isolate/timers.ts). 10,000 in one turn all fire with
// no host refusal or log line; a module may have at most MAX_PENDING_TIMERS; 100,000 due at once
// run in slices, the module not stopped by cpu_time_ms and the canary missing no block.

import test from "ava";
import { startHost, GOOD_GRANTS } from "./helpers/host.ts";
import { callApi, inlineModule, timerService } from "./helpers/modules.ts";
import { watchHost } from "./helpers/host-watch.ts";
import { MAX_PENDING_TIMERS } from "../runtime/isolate/in-isolate/timers.ts";

const CAPS = ["manage_timers", "register_module_api", "read_storage", "write_storage"];

/** A module whose API methods each run a timer scenario and answer what happened. */
const GLOBALS = inlineModule("globals", CAPS, `
  await ctx.storage.openTree("t");
  const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));
  let counted = 0;
  await ctx.modules.registerApi({
    // 10,000 setTimeout(0) in one turn; while they wait and run, storage requests are answered.
    many: async () => {
      const order: number[] = [];
      let done!: () => void;
      const all = new Promise<void>((r) => (done = r));
      for (let i = 0; i < 10_000; i++) setTimeout(() => { order.push(i); if (order.length === 10_000) done(); }, 0);
      let answered = 0;
      const requests = (async () => { for (let i = 0; i < 20; i++) { await ctx.storage.put("t", "k" + i, i); if ((await ctx.storage.get("t", "k" + i)) === i) answered++; } })();
      await Promise.all([all, requests]);
      return { fired: order.length, inOrder: order.every((v, i) => v === i), answered };
    },
    // Deadlines 40, 0, 20, 0, 40, 20 ms set in one turn (labels say delay/index).
    mixed: async () => {
      const ran: string[] = [];
      const delays = [40, 0, 20, 0, 40, 20, 0];
      await new Promise<void>((r) => {
        delays.forEach((d, i) => setTimeout(() => { ran.push(d + "/" + i); if (ran.length === delays.length) r(); }, d));
      });
      return ran;
    },
    // A 20 ms interval: the time of each tick; cleared from its own 8th callback.
    interval: async () => {
      const ticks: number[] = [];
      const start = Date.now();
      const handle = setInterval(() => { ticks.push(Date.now()); if (ticks.length === 8) clearInterval(handle); }, 20);
      while (ticks.length < 8) await wait(5);
      await wait(150);
      return { start, ticks };
    },
    // Clearing: a timer due in the same slice cleared by the one before it (by its handle, and
    // one by its number); clearInterval on a timeout; clearing after it ran; extra arguments and
    // this; ref/unref/hasRef; refresh of a timeout that ran sets it again.
    clearing: async () => {
      const ran: string[] = [];
      let self: unknown = null;
      let b: any, c: any;
      const a = setTimeout(function (this: unknown, x: number, y: string) { ran.push("a:" + x + y); self = this; clearTimeout(b); clearTimeout(+c); }, 0, 1, "z");
      b = setTimeout(() => ran.push("b"), 0);
      c = setTimeout(() => ran.push("c"), 0);
      const d = setTimeout(() => ran.push("d"), 0);
      const e = setTimeout(() => ran.push("e"), 0);
      clearInterval(e);
      await wait(30);
      clearTimeout(d); // after it ran: nothing happens
      const unref = d.unref().hasRef();
      const ref = d.ref().hasRef();
      let refreshed = 0;
      const r = setTimeout(() => { refreshed++; }, 0);
      await wait(30);
      r.refresh();
      await wait(30);
      return { ran, thisIsHandle: self === a, unref, ref, refreshed, primitive: typeof +a };
    },
    // A chain of 1,000 setTimeout(0), each set by the one before: how long it took.
    chain: async () => {
      const t0 = Date.now();
      await new Promise<void>((r) => { let n = 0; const next = () => (++n === 1000 ? r() : setTimeout(next, 0)); setTimeout(next, 0); });
      return Date.now() - t0;
    },
    // n timers due together 15 s from now (time to set them all on a loaded machine), set 1,000
    // a turn (setting them is not what cpu_time_ms is asked to allow here: 10,000 a turn passed
    // its 200 ms at load 8), then one more;
    // answers before they run. Each callback works ~5 us.
    fill: async (p: { n: number }) => {
      counted = 0;
      const due = Date.now() + 15_000;
      for (let i = 0; i < p.n; i++) {
        if (i % 1_000 === 0) await ctx.storage.get("t", "none");
        setTimeout(() => { counted++; let x = 0; for (let k = 0; k < 2000; k++) x += k; return x; }, due - Date.now());
      }
      try { setTimeout(() => {}, 0); return { refused: "" }; } catch (e: any) { return { refused: e.name + ": " + e.message }; }
    },
    count: () => counted,
  });
`);

test("10,000 setTimeout(0) in one turn all fire, in the order they were set, with no host refusal and no module log line, and the module's requests are answered meanwhile", async (t) => {
  const h = await startHost(t, { inline: { globals: GLOBALS }, grants: { globals: CAPS } });
  const mark = h.mark();
  const before = timerService(h).stats("globals");
  const r = await callApi<{ fired: number; inOrder: boolean; answered: number }>(h, "globals", "many", {}, 60_000);
  const after = timerService(h).stats("globals");
  t.log(`host tasks fired for 10,000 timers: ${after.fired - before.fired}`);
  t.is(r.fired, 10_000, "every callback ran");
  t.true(r.inOrder, "in the order they were set");
  t.is(r.answered, 20, "its storage requests were answered while the timers waited and ran");
  t.deepEqual(h.logsOf("globals", mark).map((l) => l.message), [], "no line in the module's log (no refusal)");
  t.true(after.fired - before.fired < 1000, `one host task per slice, not one per timer (${after.fired - before.fired})`);
  t.is(after.active, 0, "no host task left once they have all run");
});

test("timers of mixed deadlines fire in deadline order, then in the order they were set", async (t) => {
  const h = await startHost(t, { inline: { globals: GLOBALS }, grants: { globals: CAPS } });
  const ran = await callApi<string[]>(h, "globals", "mixed");
  t.deepEqual(ran, ["0/1", "0/3", "0/6", "20/2", "20/5", "40/0", "40/4"]);
});

test("setInterval holds its period from the time each tick was due (never early, no burst), and clearInterval from its own callback stops it", async (t) => {
  const h = await startHost(t, { inline: { globals: GLOBALS }, grants: { globals: CAPS } });
  const { start, ticks } = await callApi<{ start: number; ticks: number[] }>(h, "globals", "interval");
  t.log(`ticks at ${ticks.map((v) => v - start).join(" ")} ms from setInterval`);
  t.is(ticks.length, 8, "no tick after clearInterval from the 8th callback (150 ms later)");
  // Tick k is due k * 20 ms after setInterval (each one period after the last was due, not after
  // it ran: a late tick makes the gap to the next one shorter): none comes before its time, and
  // ticks a late one passed are skipped, not run in a burst.
  for (let k = 1; k <= ticks.length; k++) t.true(ticks[k - 1]! - start >= k * 20 - 1, `tick ${k} at ${ticks[k - 1]! - start} ms, not before ${k * 20} ms`);
  t.true(ticks.length <= Math.floor((ticks[ticks.length - 1]! - start) / 20) + 1, "no more ticks than periods");
});

test("clearTimeout of a timer due in the same slice, by its handle or its number, keeps it from running; clearInterval clears a timeout; clearing after it ran does nothing; extra arguments, this, ref/unref/hasRef and refresh work as in Node", async (t) => {
  const h = await startHost(t, { inline: { globals: GLOBALS }, grants: { globals: CAPS } });
  const r = await callApi<Record<string, unknown>>(h, "globals", "clearing");
  t.deepEqual(r.ran, ["a:1z", "d"], "b and c, due in the same slice as a, were cleared by a; e by clearInterval");
  t.true(r.thisIsHandle, "this is the timer's handle");
  t.false(r.unref);
  t.true(r.ref);
  t.is(r.refreshed, 2, "refresh() of a timeout that ran sets it again");
  t.is(r.primitive, "number", "a handle converts to a number");
});

test("a chain of 1,000 nested setTimeout(0) runs in a few host tasks, not one per link, and ends", async (t) => {
  const h = await startHost(t, { inline: { globals: GLOBALS }, grants: { globals: CAPS } });
  const before = timerService(h).stats("globals").fired;
  const ms = await callApi<number>(h, "globals", "chain", {}, 60_000);
  const tasks = timerService(h).stats("globals").fired - before;
  t.log(`1,000 links in ${ms} ms, ${tasks} host tasks`);
  // The links are run in the isolate's slices (5 host tasks at load ~29, 315 ms): one host task
  // per link would be 1,000 round trips. The time is a liveness bound only: 1,622 ms at load ~31
  // failed the second this test used to allow.
  t.true(tasks < 100, `1,000 links took ${tasks} host tasks`);
  t.true(ms < 30_000, `1,000 links took ${ms} ms`);
});

test("MAX_PENDING_TIMERS waiting timers: one more is refused with a RangeError naming it; the 100,000 due at once run in slices, the module not stopped by its cpu_time_ms (200 ms), the canary missing no block", async (t) => {
  t.timeout(240_000);
  const h = await startHost(t, {
    modules: ["good"],
    inline: { globals: GLOBALS },
    grants: { globals: CAPS, good: GOOD_GRANTS },
    moduleLimits: { globals: { cpu_time_ms: 200 } },
  });
  const watch = watchHost(t, h);
  const pid = h.mustStatus("globals").pid;
  const mark = h.mark();
  const loop = watch.canaryLoop(200, 3);
  const fill = await callApi<{ refused: string }>(h, "globals", "fill", { n: MAX_PENDING_TIMERS }, 60_000);
  t.regex(fill.refused, /^RangeError: .*MAX_PENDING_TIMERS, 100000/, "the one past the limit is refused, naming it");
  const t0 = Date.now();
  await h.waitFor(async () => (await callApi<number>(h, "globals", "count", {}, 30_000)) === MAX_PENDING_TIMERS, 120_000, "all 100,000 callbacks to run");
  t.log(`100,000 callbacks due at once all run ${Date.now() - t0} ms after the call answered (due ~15 s after it began); host tasks fired: ${timerService(h).stats("globals").fired}`);
  await loop.stop();
  t.is(h.mustStatus("globals").pid, pid, "the module was not restarted");
  t.deepEqual(h.logsOf("globals", mark).map((l) => l.message), [], "nothing in its log: no cpu_time_ms stop, no refusal");
  watch.assertCanary(t);
  await watch.finish(t, 1);
});
