// The switch of sync crossings (runtime/isolate/runtime.ts syncCrossings, syncCrossingsFor): a
// module runs in them only with the switch on, without the inspector, and when its
// health_timeout_ms is at least twice the longest a crossing can hold the isolate host's main
// thread (cpu_time_ms + 2 sampling periods + a 10 ms tick), so the host's health check never
// takes a legitimate long stretch for an unresponsive module.

import test from "ava";
import { longestCrossingMs, syncCrossings, syncCrossingsFor } from "../runtime/isolate/runtime.ts";

const BASE = { memory_mb: 128, cpu_time_ms: 1000, start_timeout_ms: 10_000, handler_timeout_ms: 120_000, health_timeout_ms: 5000, address_space_mb: 0, open_files: 0, processes: 0, cpu_seconds: 0, file_size_mb: 0, memory_total_mb: 0 };

function withSwitch<T>(value: string | undefined, fn: () => T): T {
  const before = process.env.MODHOST_ISOLATE_SYNC;
  if (value === undefined) delete process.env.MODHOST_ISOLATE_SYNC;
  else process.env.MODHOST_ISOLATE_SYNC = value;
  try {
    return fn();
  } finally {
    if (before === undefined) delete process.env.MODHOST_ISOLATE_SYNC;
    else process.env.MODHOST_ISOLATE_SYNC = before;
  }
}

test("MODHOST_ISOLATE_SYNC turns sync crossings on (1) and off (0) for every module", (t) => {
  t.true(withSwitch("1", () => syncCrossings()));
  t.false(withSwitch("0", () => syncCrossings()));
  t.true(withSwitch("1", () => syncCrossingsFor(BASE)), "the default limits (cpu_time_ms 1000, health_timeout_ms 5000) qualify");
  t.false(withSwitch("0", () => syncCrossingsFor(BASE)));
});

test("with the switch on, a module keeps the asynchronous form when its health_timeout_ms is under twice its longest crossing, or with the inspector", (t) => {
  t.is(longestCrossingMs(1000), 1210, "cpu_time_ms 1000: sampled every 100 ms, so 1000 + 200 + 10");
  t.is(longestCrossingMs(40), 40 + 2 * 10 + 10, "cpu_time_ms 40: sampled every 10 ms");
  withSwitch("1", () => {
    t.true(syncCrossingsFor({ ...BASE, cpu_time_ms: 1000, health_timeout_ms: 2420 }), "exactly twice the longest crossing");
    t.false(syncCrossingsFor({ ...BASE, cpu_time_ms: 1000, health_timeout_ms: 2419 }), "just under twice");
    t.false(syncCrossingsFor({ ...BASE, cpu_time_ms: 4000, health_timeout_ms: 5000 }), "a long cpu_time_ms with the default health_timeout_ms");
    t.false(syncCrossingsFor({ ...BASE, inspect: "127.0.0.1:9229" }), "the inspector needs the isolate's own thread");
  });
});
