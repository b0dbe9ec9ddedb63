// The sum of per-module limits (issue #8): almost every bound on what the host holds for a
// module is per module (max_unread_bytes, max_request_bytes_in_flight, staged transaction
// parts, event_queue_bytes), and a host runs up to MAX_MODULES of them. Here several hostile
// native modules, each within its own limits, each hold their most at once, under the real
// host next to the canary ("good", which stores every block): three that ask for answers of
// ~1 MB and never read them (up to max_unread_bytes, 32 MiB, each), three that keep
// call_module requests of 2 MiB params in flight to a module that never answers (up to
// max_request_bytes_in_flight, 32 MiB, each), and three that stage transactions in parts and
// never finish them (up to 32 MiB each). Without a cap over their sum the host held ~288 MiB
// for them; [host] module_bytes_mb (64 here) bounds it: what they hold is measured in the
// host's heap and buffers, the canary stores every block within 5 s and RPC answers within 5 s.
// The cap is the host process's: the tests here run one at a time.

import test from "ava";
import { fileURLToPath } from "node:url";
import { loadavg } from "node:os";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { buildModulesDir, startHost, tempDir, GOOD_GRANTS, sleep } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { canaryRound } from "./helpers/canary.ts";
import { HostBytes } from "../protocol/host-bytes.ts";
import { EventBus } from "../host/events/bus.ts";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;
const MiB = 1024 * 1024;
const UNREAD = fileURLToPath(new URL("./fixtures/unread-pipeline/main.ts", import.meta.url));
const RELAY = fileURLToPath(new URL("./fixtures/hostile-relay/main.ts", import.meta.url));
const STAGED = fileURLToPath(new URL("./fixtures/hostile-round20/staged.ts", import.meta.url));
const CPU = fileURLToPath(new URL("./fixtures/hostile-round20/cpu.ts", import.meta.url));
/** What the host's JavaScript holds: its heap and the buffers outside it (frames, socket buffers). */
const held = () => {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
};
const load = () => loadavg().map((l) => l.toFixed(1)).join(" ");

test.serial("nine native modules each holding their most of unread answers, requests in flight and staged transaction parts: the host holds them within [host] module_bytes_mb (64 MiB: heap and buffers grow under 150 MiB, 288 MiB of per-module maxima), the canary stores every block, RPC answers", async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  const storage = ["read_storage", "write_storage"];
  const grants: Record<string, string[]> = { good: GOOD_GRANTS, sink: ["register_module_api"] };
  const moduleConfigs: Record<string, Record<string, unknown>> = {};
  const moduleLimits: Record<string, Record<string, unknown>> = {};
  await writeNodeNative(modulesDir, "sink", RELAY, ["register_module_api"]);
  for (let i = 1; i <= 3; i++) {
    await writeNodeNative(modulesDir, `unread${i}`, UNREAD, storage);
    grants[`unread${i}`] = storage;
    moduleConfigs[`unread${i}`] = { get: true, requests: 64, pause_ms: 600_000 };
    // No health checks: a module that does not read would miss them and be restarted.
    moduleLimits[`unread${i}`] = { health_interval_ms: 0 };
    await writeNodeNative(modulesDir, `relay${i}`, RELAY, ["call_module"]);
    grants[`relay${i}`] = ["call_module"];
    moduleConfigs[`relay${i}`] = { target: "sink", in_flight: 32, param_bytes: 2 * MiB };
    await writeNodeNative(modulesDir, `staged${i}`, STAGED, storage);
    grants[`staged${i}`] = storage;
    moduleConfigs[`staged${i}`] = { transactions: 4, parts: 8, values: 1 };
  }
  gc();
  const base = held();
  const h = await startHost(t, {
    dir, modules: [], grants, moduleConfigs, moduleLimits,
    configure: (c) => {
      (c.host as Record<string, unknown>).module_bytes_mb = 64;
    },
  });
  const probes = Object.keys(grants).filter((n) => n !== "good");
  for (const name of ["good", ...probes]) await h.waitForState(name, "running", 60_000);
  for (let i = 1; i <= 3; i++) {
    // It stopped reading: its requests wait (for the answers it has not read, or for the cap).
    await h.waitForLog(/^throttled: its requests wait for /, { source: `unread${i}`, timeoutMs: 60_000 });
    await h.waitForLog(/^flooding$/, { source: `relay${i}`, timeoutMs: 60_000 });
    await h.waitForLog(/^staged report$/, { source: `staged${i}`, timeoutMs: 60_000 });
  }

  let peak = 0;
  const sample = () => {
    gc();
    peak = Math.max(peak, held() - base);
  };
  const sampler = setInterval(sample, 250);
  t.teardown(() => clearInterval(sampler));
  let late = 0;
  let unanswered = 0;
  const rounds = 6;
  for (let i = 0; i < rounds; i++) {
    const r = await canaryRound(h);
    if (!r.stored) late++;
    if (!r.answered) unanswered++;
    sample();
    await sleep(500);
  }
  clearInterval(sampler);
  sample();

  const session = (name: string) => h.manager.session(name);
  const unread = [1, 2, 3].map((i) => session(`unread${i}`)?.unreadBytes ?? 0);
  const relayHeld = [1, 2, 3].map((i) => session(`relay${i}`)?.flowStats.peakRequestBytes ?? 0);
  const staged = [1, 2, 3].map((i) => h.lines.find((l) => l.includes(`[staged${i}] staged report`)) ?? "");
  t.log(`load ${load()}; heap + buffers grew at most ${(peak / MiB).toFixed(0)} MiB; unread now ${unread.map((b) => (b / MiB).toFixed(1)).join(", ")} MiB; relays' peak request bytes ${relayHeld.map((b) => (b / MiB).toFixed(1)).join(", ")} MiB`);
  for (const line of staged) t.log(line.slice(0, 400));
  t.is(late, 0, `the canary stored every block within 5 s (${late} of ${rounds} late)`);
  t.is(unanswered, 0, `the host answered every RPC call within 5 s (${unanswered} of ${rounds} not)`);
  t.true(peak < 150 * MiB, `the host's heap and buffers grew ${(peak / MiB).toFixed(0)} MiB for nine modules whose own limits allow 288 MiB ([host] module_bytes_mb = 64)`);
  t.true(h.lines.some((l) => /throttled: its requests wait for \[host\] module_bytes_mb/.test(l)), "the operator is told that the host-wide cap holds a module back");
  t.true(staged.some((l) => l.includes("quota_exceeded") && l.includes("[host] module_bytes_mb")), "a staged part past a module's fair part is refused naming [host] module_bytes_mb");
});

// The CPU share is per module too (host_cpu_ms_per_s, 250 ms a second): eight modules at it
// may ask the host's one loop for two seconds a second. What holds the sum is the budget per
// turn of the loop shared by every module (runtime/turn.ts): past it, each module's next piece
// waits for a later turn, round-robin, so a quiet module's work waits for one piece of each.
test.serial("eight native modules asking without pause for costly legal requests, each within its host_cpu_ms_per_s share (storage_iter of ~1 MB, get_all_metrics of 800 full histograms): the canary stores every block within 5 s and RPC answers within 5 s", async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  const grants: Record<string, string[]> = { good: GOOD_GRANTS };
  const moduleConfigs: Record<string, Record<string, unknown>> = {};
  const names: string[] = [];
  for (let i = 1; i <= 8; i++) {
    const name = `cpu${i}`;
    const metrics = i % 2 === 0;
    const caps = metrics ? ["report_metrics", "read_metrics"] : ["read_storage", "write_storage"];
    await writeNodeNative(modulesDir, name, CPU, caps);
    grants[name] = caps;
    moduleConfigs[name] = metrics ? { metrics: true, in_flight: 16 } : { entries: 1000, in_flight: 16 };
    names.push(name);
  }
  const h = await startHost(t, { dir, modules: [], grants, moduleConfigs });
  for (const name of ["good", ...names]) await h.waitForState(name, "running", 60_000);
  for (const name of names) await h.waitForLog(/^busy$/, { source: name, timeoutMs: 60_000 });
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  t.teardown(() => delay.disable());
  const cpu0 = process.cpuUsage();
  const wall0 = performance.now();
  const answers0 = names.map((n) => h.manager.session(n)?.stats.requests ?? 0);
  let late = 0;
  let unanswered = 0;
  const rounds = 6;
  for (let i = 0; i < rounds; i++) {
    const r = await canaryRound(h);
    if (!r.stored) late++;
    if (!r.answered) unanswered++;
    await sleep(500);
  }
  delay.disable();
  const cpu = process.cpuUsage(cpu0);
  const wall = performance.now() - wall0;
  const served = names.map((n, i) => (h.manager.session(n)?.stats.requests ?? 0) - answers0[i]!);
  const waitedCpu = names.map((n) => h.manager.session(n)?.flowStats.waitedCpu ?? 0);
  t.log(`load ${load()}; host CPU ${(((cpu.user + cpu.system) / 1000 / wall) * 100).toFixed(0)}% of a core over ${(wall / 1000).toFixed(1)} s; longest loop delay ${(delay.max / 1e6).toFixed(0)} ms (p99 ${(delay.percentile(99) / 1e6).toFixed(0)} ms); requests served per module ${served.join(", ")}; waits for host_cpu_ms_per_s ${waitedCpu.join(", ")}`);
  t.is(late, 0, `the canary stored every block within 5 s (${late} of ${rounds} late)`);
  t.is(unanswered, 0, `the host answered every RPC call within 5 s (${unanswered} of ${rounds} not)`);
  t.true(served.every((n) => n > 0), "every busy module was served meanwhile");
});

test.serial("HostBytes: a holder within its fair part (cap / 2 / holders) is admitted while others fill the shared half; past it, only while all hold under half the cap; one request past it at a time for a holder within it", (t) => {
  const pool = new HostBytes();
  pool.setCap(64 * MiB);
  const own = { hog: 0, quiet: 0, third: 0 };
  const hog = pool.join("hog", () => own.hog);
  const quiet = pool.join("quiet", () => own.quiet);
  const third = pool.join("third", () => own.third);
  const fair = (64 * MiB) / 2 / 3;
  t.is(hog.fairPart(), Math.floor(fair));
  // The hog takes what the shared half allows, then waits.
  let admitted = 0;
  while (hog.admits(MiB) !== false) {
    own.hog += MiB;
    admitted++;
    if (admitted > 100) break;
  }
  t.is(own.hog, 32 * MiB, "the hog holds the shared half and no more");
  t.is(hog.admits(MiB, true), false, "a holder past its fair part has no request past it");
  // Another within its fair part is admitted whatever the hog holds.
  t.is(quiet.admits(fair - 1), "fair");
  own.quiet = Math.floor(fair) - 1;
  t.is(quiet.admits(16 * MiB), false, "past its fair part, with the shared half full, it waits");
  t.is(quiet.admits(16 * MiB, true), "one", "but may have one request past it at a time");
  own.quiet = 0;
  t.is(third.admits(16 * MiB, true), "one");
  // The hog lets go: the shared half admits again.
  own.hog = 12 * MiB;
  t.is(pool.total(performance.now() + 10), 12 * MiB, "a fresh reading of the total");
  t.is(hog.admits(MiB), "shared");
  hog.leave();
  t.is(pool.accounts, 2);
  t.is(quiet.fairPart(), 16 * MiB, "fewer holders, larger fair parts");
  quiet.leave();
  third.leave();
});

test.serial("HostBytes: a holder that stops waiting (what it waited for fits, found by its own look) leaves the waiting list at once, and is not woken for it", async (t) => {
  const pool = new HostBytes();
  pool.setCap(64 * MiB);
  const a = pool.join("a", () => 0);
  const b = pool.join("b", () => 0);
  let wokenA = 0;
  let wokenB = 0;
  a.wait(() => wokenA++);
  b.wait(() => wokenB++);
  t.is(pool.waiting, 2);
  a.unwait();
  t.is(pool.waiting, 1, "before: it stayed in the list until a pass woke it for nothing");
  pool.released();
  await new Promise((r) => setImmediate(r));
  t.is(wokenA, 0, "the holder that stopped waiting is not woken");
  t.is(wokenB, 1, "the other waiter is");
  t.is(pool.waiting, 0);
  a.leave();
  b.leave();
});

test.serial("a subscriber past its fair part of [host] module_bytes_mb does not queue more: the oldest are dropped for the new ones and counted as missed", (t) => {
  const bus = new EventBus();
  let admit = true;
  const sub = bus.subscribe("slow", () => {}, { window: 0, queueLimit: 1024, queueBytes: 8 * MiB, admits: () => admit });
  sub.types.add("x:e");
  for (let i = 0; i < 10; i++) bus.publish("x:e", { i }, 64 * 1024);
  t.is(sub.pendingBytes, 10 * 64 * 1024, "within the cap, the queue grows to its own limits");
  admit = false;
  for (let i = 0; i < 100; i++) bus.publish("x:e", { i }, 64 * 1024);
  // (The first drop sends one event at once to say so: window 0 here.)
  t.true(sub.pendingBytes <= 10 * 64 * 1024, `past its fair part, the queue holds no more than it held (${sub.pendingBytes} bytes)`);
  t.true(sub.droppedTotal >= 99, `the rest were dropped and counted (${sub.droppedTotal})`);
});
