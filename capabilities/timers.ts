// Timers: periodic timers and one-shot tasks, kept by the host and delivered to the module as
// `timer` invocations ({id}). They belong to the module that registered them and die with its
// process. The limits (minimum interval, timers per module, no overlapping runs) are the
// timer service's (host/services/timers.ts).
import * as v from "valibot";
import { method, type CallContext, type Family, serviceOf } from "./types.ts";
import { u64 } from "./schemas.ts";

/** The longest interval or delay, in seconds (about 23 days; Node timers stop at 2^31 ms). */
const MAX_TIMER_SECONDS = 2_000_000;

const seconds = (what: string, min: "positive" | "non-negative") => v.pipe(
  v.number(`${what} must be a number of seconds`),
  v.check((n) => Number.isFinite(n) && (min === "positive" ? n > 0 : n >= 0), `${what} must be ${min === "positive" ? "greater than 0" : "0 or more"}`),
  v.maxValue(MAX_TIMER_SECONDS, `${what} must be at most ${MAX_TIMER_SECONDS} seconds`),
);

const service = (c: CallContext) => serviceOf(c, "timers");

export const timers: Family = {
  name: "timers",
  summary: "Periodic timers and one-shot tasks, delivered into the module.",
  methods: [
    method({
      name: "register_timer", result: u64, callback: "timer", js: "every", permission: "manage_timers", args: ["interval_seconds"],
      params: v.object({ interval_seconds: seconds("interval_seconds", "positive") }),
      summary: "Run a callback every interval_seconds (at least 0.05; shorter intervals are raised to it). A tick is skipped while the previous run is still going. Returns the timer id.",
      handler: async (c, p) => service(c).register(c.module, Math.round(p.interval_seconds * 1000)),
    }),
    method({
      name: "schedule_task", result: u64, callback: "timer", js: "after", permission: "manage_timers", args: ["delay_seconds"],
      params: v.object({ delay_seconds: seconds("delay_seconds", "non-negative") }),
      summary: "Run a callback once, after delay_seconds. Returns the task id (cancel it with cancel_timer).",
      handler: async (c, p) => service(c).schedule(c.module, Math.round(p.delay_seconds * 1000)),
    }),
    method({
      name: "cancel_timer", result: v.boolean(), js: "cancel", permission: "manage_timers", args: ["timer_id"],
      params: v.object({ timer_id: v.pipe(v.number(), v.integer(), v.minValue(1)) }),
      summary: "Stop a timer or a pending task of this module; false if there was none.",
      handler: async (c, p) => service(c).cancel(c.module, p.timer_id),
    }),
  ],
};
