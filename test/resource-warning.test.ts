// ResourceLimitWarning: the host warns (a log line naming the limit's key, and the event) when
// a module nears one of its limits, measured by the host itself, at most once per resource per
// interval. First the watch against chosen samples, then a module under the real host.

import test from "ava";
import { describeWarning, RESOURCE_WARNING_INTERVAL_MS, ResourceWatch, WARN_FRACTION, type ResourceSample } from "../host/resource-watch.ts";
import { DEFAULT_LIMITS } from "../host/config.ts";
import { EVENT_TYPES } from "../capabilities/event-types.ts";
import { startHost } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";

const MB = 1024 * 1024;
const idle: ResourceSample = { at: 0, memoryBytes: 10 * MB, inFlight: 0, requests: 0, cpuMs: 0, unreadBytes: 0, logBytes: 0 };

test("the watch warns at 80% of a limit and not below, in the limit's unit, naming its key", (t) => {
  const limits = { ...DEFAULT_LIMITS, memory_total_mb: 100, max_requests_in_flight: 10, requests_per_second: 100, host_cpu_ms_per_s: 100, max_unread_bytes: 1000, log_bytes_per_second: 1000 };
  const w = new ResourceWatch("m", limits, () => 0);
  t.deepEqual(w.sample(idle), [], "nothing near a limit");
  // Two seconds later: 79% of each rate limit (nothing) ...
  t.deepEqual(w.sample({ at: 2000, memoryBytes: 79 * MB, inFlight: 7, requests: 158, cpuMs: 158, unreadBytes: 799, logBytes: 1580 }), []);
  // ... and then at or past 80% of every limit.
  const got = w.sample({ at: 4000, memoryBytes: 95 * MB, inFlight: 8, requests: 158 + 180, cpuMs: 158 + 400, unreadBytes: 800, logBytes: 1580 + 5000 });
  t.deepEqual(
    Object.fromEntries(got.map((x) => [x.resource, [x.used, x.limit]])),
    { max_requests_in_flight: [8, 10], max_unread_bytes: [800, 1000], memory_total_mb: [95, 100], requests_per_second: [90, 100], host_cpu_ms_per_s: [200, 100], log_bytes_per_second: [2500, 1000] },
  );
  t.true(got.every((x) => x.module === "m"));
  t.is(WARN_FRACTION, 0.8);
  t.regex(describeWarning(got.find((x) => x.resource === "memory_total_mb")!), /m is near its limit memory_total_mb: 95 of 100 \(95%\); past it the kernel kills its processes\. .*raise memory_total_mb in \[modules\.limits\.m\]/);
});

test("the watch warns about each resource at most once per interval, however long the module stays near it", (t) => {
  let now = 0;
  const w = new ResourceWatch("m", { ...DEFAULT_LIMITS, max_unread_bytes: 1000 }, () => now);
  const near = { ...idle, unreadBytes: 999, memoryBytes: null };
  t.is(w.sample(near).length, 1);
  let more = 0;
  for (let i = 1; i < 100; i++) {
    now = i * 500; // 49.5 s of samples, every one near the limit
    more += w.sample({ ...near, at: now }).length;
  }
  t.is(more, 0, "no second warning within the interval");
  now = RESOURCE_WARNING_INTERVAL_MS;
  t.is(w.sample({ ...near, at: now }).length, 1, "one again after the interval");
  t.deepEqual(new ResourceWatch("n", { ...DEFAULT_LIMITS, memory_total_mb: 0 }).sample({ ...idle, memoryBytes: 10_000 * MB }), [], "a limit of 0 (none) is never warned about");
});

test("ResourceLimitWarning is produced by the host (the catalogue says so)", (t) => {
  t.is(EVENT_TYPES.ResourceLimitWarning.producer, "host");
});

test("a module logging past 80% of log_bytes_per_second under the real host gets one ResourceLimitWarning naming the key, and one log line", async (t) => {
  const body = `
    void (async () => {
      for (;;) {
        for (let i = 0; i < 20; i++) ctx.log.info("chatter " + "x".repeat(400));
        await ctx.chain.getBlockHeight();
      }
    })();`;
  const h = await startHost(t, {
    inline: { chatty: inlineModule("chatty", ["read_chain_state"], body) },
    grants: { chatty: ["read_chain_state"] },
    moduleLimits: { chatty: { log_bytes_per_second: 8192 } },
    noStart: true,
  });
  const warnings: Array<Record<string, unknown>> = [];
  const sub = h.host.bus.subscribe("test-warnings", (ev) => warnings.push(ev.payload as Record<string, unknown>), { queueLimit: 1000 });
  sub.types.add("ResourceLimitWarning");
  await h.host.start();
  await h.waitFor(() => warnings.find((w) => w.module === "chatty" && w.resource === "log_bytes_per_second"), 20_000, "a ResourceLimitWarning for log_bytes_per_second");
  const w = warnings.find((x) => x.resource === "log_bytes_per_second")!;
  t.is(w.limit, 8192);
  t.true((w.used as number) >= 8192 * 0.8, `used ${w.used}`);
  const line = await h.waitForLog(/chatty is near its limit log_bytes_per_second: \d+ of 8192 .*raise log_bytes_per_second in \[modules\.limits\.chatty\]/, { source: "host" });
  t.is(line.level, "warn");
  // It keeps logging: still one warning for this resource (the next is due a minute later).
  await new Promise((r) => setTimeout(r, 4500));
  t.is(warnings.filter((x) => x.module === "chatty" && x.resource === "log_bytes_per_second").length, 1);
});
