// Hostile probes of round 23 (issue #8): TypeScript modules, under the real host and sandbox,
// next to the canary ("good", which stores every block):
//   stopper   a module whose stop() never returns and, until the host ends its process, takes
//             one of everything the host keeps for a module (JSON-RPC and module API methods of
//             fresh names, subscriptions to fresh event types, timers at 0.001 s, a hook that
//             never answers, metrics), from its stop(), from an interval of 0 ms and a timer
//             that fire while it is being stopped (test/fixtures/hostile-round23-isolate/stopper.ts).
//             Reloaded cycle after cycle: what it took while stopping must end with its process.
//   oom       once running, puts 3,000 calls in flight without awaiting them (storage iterations
//             of ~0.9 MB, module calls to r23-slow that never answer, blocks, events, log lines)
//             and allocates small arrays without pause: isolated-vm's heap limit (memory_mb)
//             does not stop that, the isolate host must (runtime/isolate/worker.ts, its size
//             past ISOLATE_HOST_RSS_BASE_MB + 2 x memory_mb), naming memory_mb
//   startflood  its start() never returns while it asks for ~0.9 MB iterations without pause
//             (both: test/fixtures/hostile-round23-isolate/crasher.ts, three starts each)
//   answers   JSON-RPC methods answering the costliest legal values for the host to take in and
//             write out, and values that fight the copy (answers.ts), called 4 at a time by
//             clients that read the answers without keeping them (this process is the host:
//             parsing them here would be counted as turns of its loop)
// While they run: the canary stores every block within 5 s, RPC answers within 5 s, no turn of
// the host's loop takes 250 ms of its CPU, its heap, log and descriptors stay within bounds.
// The tests watch this process's loop, so they run one at a time.

import test from "ava";
import { readFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { buildModulesDir, GOOD_GRANTS, sleep, startHost, tempDir, waitFor, type TestHost } from "./helpers/host.ts";
import { descendants } from "./helpers/procs.ts";
import { ISOLATE_HOST_RSS_BASE_MB } from "../runtime/isolate/exit-codes.ts";
import { inlineModule, services } from "./helpers/modules.ts";
import { cookieAuth, post, rpcUrl } from "./helpers/rpc.ts";
import http from "node:http";
import { watchHost } from "./helpers/host-watch.ts";
import { census, grown, pendingOf } from "./helpers/census.ts";
import type { RpcRegistry } from "../host/services/rpc.ts";
import type { HookRegistry } from "../host/services/hooks.ts";
import type { TimerService } from "../host/services/timers.ts";
import { fixtureModules } from "./helpers/isolate-probes.ts";

const load = () => loadavg().map((l) => l.toFixed(1)).join(" ");

const fixtureModule = fixtureModules("hostile-round23-isolate", "round 23");

const STOPPER_CAPS = ["register_rpc_endpoint", "register_module_api", "subscribe_events", "manage_timers", "register_hook", "report_metrics"];
const STOPPER_GRANTS = [...STOPPER_CAPS.filter((c) => c !== "register_hook"), "register_hook=rpc_dispatch"];
const STOP_CYCLES = Number(process.env.R23_STOP_CYCLES ?? 12);

test.serial(`a TypeScript module whose stop() never returns and takes JSON-RPC and API methods, subscriptions, timers, a hook and metrics while it is stopped (from stop(), an interval of 0 ms and a timer firing then) is reloaded ${STOP_CYCLES} times: each new instance holds only its own method and answers at once (no hook of the old one in the way), and a census of the host does not grow, while the canary stores every block and RPC answers`, async (t) => {
  t.timeout(60_000 + STOP_CYCLES * 10_000);
  const dir = await tempDir(t);
  const name = "r23-stopper";
  const modulesDir = await buildModulesDir(dir, ["good"], { [name]: fixtureModule(name, "stopper.ts", STOPPER_CAPS) });
  void modulesDir;
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, [name]: STOPPER_GRANTS },
    moduleLimits: { [name]: { stop_timeout_ms: 1000, kill_timeout_ms: 1000 } },
  });
  await h.waitForState("good", "running", 60_000);
  await h.waitForState(name, "running", 60_000);
  const s = services(h);
  const rpc = s.rpc as RpcRegistry;
  const hooks = s.hooks as HookRegistry;
  const timers = s.timers as TimerService;
  const held = () => ({
    rpc: rpc.methodsOf(name).map((m) => m.full),
    hooks: hooks.chain("rpc_dispatch").filter((m) => m === name).length,
    timers: timers.stats(name),
  });
  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(500, 4);
  const cycle = async (i: number) => {
    const mark = h.mark();
    await h.manager.reload(name);
    // As the reload returns: only what the new instance registered (its `ping`, once it runs).
    const now = held();
    await h.waitForLog(/^stopper running$/, { source: name, since: mark });
    const after = held();
    const t0 = Date.now();
    const pong = await post(h, { jsonrpc: "2.0", id: i, method: `${name}.ping`, params: {} });
    const ms = Date.now() - t0;
    if (i === 0 || i === STOP_CYCLES - 1) t.log(`cycle ${i + 1}: as the reload returned ${JSON.stringify(now.rpc)}, hooks ${now.hooks}; running: ${JSON.stringify(after.rpc)}, hooks ${after.hooks}, ping answered in ${ms} ms (load ${load()})`);
    t.deepEqual(after.rpc, [`${name}.ping`], `cycle ${i + 1}: the new instance holds its own method only`);
    t.is(after.hooks, 0, `cycle ${i + 1}: no hook of an instance that was stopped`);
    t.is(pong.json?.result, "pong", `cycle ${i + 1}: ping answered (${JSON.stringify(pong.json).slice(0, 200)})`);
  };
  await cycle(0);
  const a = await census(h);
  for (let i = 1; i < STOP_CYCLES; i++) await cycle(i);
  const b = await census(h);
  const stops = h.records.filter((r) => r.source === "host" && r.message.startsWith(`${name} did not stop within`)).length;
  const took = h.records.filter((r) => r.source === name && r.message === "took while stopping");
  t.log(`${STOP_CYCLES} reloads; ${stops} ended by signal after stop_timeout_ms (the others by the isolate host's own deadline for stop()); what the first round of each stop got: ${[...new Set(took.map((r) => JSON.stringify(r.fields)))].join(" | ")}; grown: ${grown(a, b, 2).join("; ") || "nothing"}`);
  t.deepEqual(grown(a, b, 2), [], "the census did not grow");
  t.true(took.some((r) => r.fields?.rpc === "ok" && r.fields?.hook === "ok"), "a stopping instance did get methods and a hook registered (the probe reached the host)");
  await canary.stop();
  watch.assertCanary(t);
  await watch.finish(t, 1);
});

const MiB = 1024 * 1024;
const OOM_MEMORY_MB = 64;
const CRASHER_CAPS = ["read_storage", "write_storage", "register_rpc_endpoint", "read_blockchain", "read_chain_state", "call_module", "publish_events", "manage_timers"];
const CRASHER_GRANTS = [...CRASHER_CAPS.filter((c) => c !== "call_module"), "call_module=r23-slow"];
// A module whose API method `hang` never answers; `held` says how many it was given.
const SLOW = inlineModule("r23-slow", ["register_module_api"], `
  let held = 0;
  await ctx.modules.registerApi({ hang: () => { held++; return new Promise(() => {}); }, held: () => held });
`);

test.serial("TypeScript modules that die with thousands of calls in flight (3,000 calls not awaited, then past memory_mb) and whose start() never returns while it asks without pause for ~0.9 MB iterations, three starts each: each is stopped naming its limit and restarts, the module they called holds none of their calls afterwards, and once they behave they answer; the canary stores every block and RPC answers", async (t) => {
  t.timeout(180_000);
  const dir = await tempDir(t);
  const probes = { "r23-oom": { mode: "oom", attacks: 3, calls: 600 }, "r23-startflood": { mode: "startflood", attacks: 3 } };
  await buildModulesDir(dir, ["good"], {
    "r23-slow": SLOW,
    ...Object.fromEntries(Object.keys(probes).map((n) => [n, fixtureModule(n, "crasher.ts", CRASHER_CAPS)])),
  });
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, "r23-slow": ["register_module_api"], ...Object.fromEntries(Object.keys(probes).map((n) => [n, CRASHER_GRANTS])) },
    moduleLimits: {
      "r23-slow": { handler_timeout_ms: 60_000 },
      ...Object.fromEntries(Object.keys(probes).map((n) => [n, { max_restarts: 10, quarantine_after: 10, start_timeout_ms: 4000, memory_mb: OOM_MEMORY_MB }])),
    },
    moduleConfigs: probes,
  });
  await h.waitForState("good", "running", 60_000);
  await h.waitForState("r23-slow", "running", 60_000);
  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(500, 4);
  // The oom probe's isolate host, sampled for its size (VmRSS) every 100 ms.
  let rssPeak = 0;
  let sampled: { pid: number; node?: number } | undefined;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const pid = h.manager.processOf("r23-oom")?.pid;
      if (pid && sampled?.pid !== pid) sampled = { pid };
      if (sampled && !sampled.node) {
        for (const d of await descendants(sampled.pid)) {
          const comm = await readFile(`/proc/${d}/comm`, "utf8").catch(() => "");
          if (/MainThread|node/.test(comm)) sampled.node = d;
        }
      }
      if (sampled?.node) {
        const status = await readFile(`/proc/${sampled.node}/status`, "utf8").catch(() => "");
        const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
        rssPeak = Math.max(rssPeak, kb * 1024);
      }
      await sleep(100);
    }
  })();
  const cpu0 = process.cpuUsage();
  const wall0 = Date.now();
  let peak = 0;
  const peakTimer = setInterval(() => (peak = Math.max(peak, pendingOf(h, "r23-slow"))), 20);
  t.teardown(() => clearInterval(peakTimer));
  for (const name of Object.keys(probes)) {
    await h.waitForLog(/^behaving$/, { source: name, timeoutMs: 120_000 });
    await h.waitForState(name, "running", 30_000);
    const pong = await post(h, { jsonrpc: "2.0", id: 1, method: `${name}.ping`, params: {} });
    t.is(pong.json?.result, "pong", `${name} answers once it behaves`);
    const attacks = h.records.filter((r) => r.source === name && r.message === "attacking").length;
    const ends = h.records.filter((r) => r.source === "host" && r.message.startsWith(`${name} crashed`) || (r.source === "host" && r.message.includes(name) && /start failed|failed to load/.test(r.message)));
    t.log(`${name}: ${attacks} attacks; how its instances ended: ${[...new Set(ends.map((r) => r.message.replace(/\d+ ms/g, "N ms").slice(0, 220)))].join(" | ")} (load ${load()})`);
    t.is(attacks, 3, `${name} attacked at three starts`);
    if (name === "r23-oom") {
      t.true(ends.every((r) => /memory_mb|cpu_time_ms/.test(r.message)), `${name}: every instance was ended naming its own memory_mb or cpu_time_ms, none by the kernel at memory_total_mb`);
    } else {
      t.true(ends.some((r) => /start_timeout_ms/.test(r.message)), `${name}: an instance was ended naming start_timeout_ms`);
    }
  }
  sampling = false;
  await sampler;
  const ceiling = (ISOLATE_HOST_RSS_BASE_MB + 2 * OOM_MEMORY_MB) * MiB;
  t.log(`r23-oom's isolate host held at most ${(rssPeak / MiB).toFixed(0)} MB (memory_mb ${OOM_MEMORY_MB}; it ends itself past ISOLATE_HOST_RSS_BASE_MB + 2 x memory_mb = ${ceiling / MiB} MB)`);
  t.true(rssPeak > 0, "its isolate host was sampled");
  // A sample's growth past the ceiling, and the sampler's own period, at most.
  t.true(rssPeak <= ceiling + 96 * MiB, `r23-oom's isolate host held ${(rssPeak / MiB).toFixed(0)} MB, within ${ceiling / MiB} MB and a sample's growth`);
  const cpu = process.cpuUsage(cpu0);
  t.log(`this process (host, canary, watch) used ${((cpu.user + cpu.system) / 1000 / ((Date.now() - wall0) / 1000)).toFixed(0)} ms of CPU a second while they attacked (load ${load()})`);
  await waitFor(() => pendingOf(h, "r23-slow") === 0, 30_000, "r23-slow to hold none of the dead callers' calls").catch(() => {});
  t.log(`r23-slow: at most ${peak} calls waiting at once (MAX_CALLS_PER_CALLER per caller), ${pendingOf(h, "r23-slow")} after`);
  t.is(pendingOf(h, "r23-slow"), 0, "the module they called holds none of their calls");
  await canary.stop();
  watch.assertCanary(t);
  await watch.finish(t, 2);
});

/**
 * POST a JSON-RPC body and read the answer without keeping it: its status, first 4 KiB and size.
 * This process is the host: parsing 24 MB of JSON here would be a turn of the host's loop.
 */
function postDiscarding(h: TestHost, auth: string, body: unknown): Promise<{ status: number; head: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    const req = http.request(rpcUrl(h), { method: "POST", headers: { "Content-Type": "application/json", Authorization: auth } }, (res) => {
      let head = "";
      let bytes = 0;
      res.on("data", (chunk: Buffer) => {
        if (head.length < 4096) head += chunk.subarray(0, 4096 - head.length).toString("latin1");
        bytes += chunk.length;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, head, bytes }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(JSON.stringify(body));
  });
}

const ANSWER_SHAPES = ["strings", "keys", "maps", "deep", "f64", "u8", "sparse", "proxy", "getters", "tojson"];

test.serial("a TypeScript module answering JSON-RPC with the costliest legal values for the host to take in and pass on (60,000 strings of 200 characters, 4,000 keys, 60,000 empty objects, arrays 60 deep, 12 MiB of bytes, a Float64Array, a sparse array 2^32-1 long, proxies, getters, toJSON), called by 4 clients at a time for 15 s: each call gets the value or an error, the canary stores every block, RPC answers, no turn of the host's loop takes 250 ms of CPU, host heap and log stay bounded, the module answers afterwards", async (t) => {
  t.timeout(180_000);
  const dir = await tempDir(t);
  await buildModulesDir(dir, ["good"], {
    "r23-answers": fixtureModule("r23-answers", "answers.ts", ["register_module_api", "register_rpc_endpoint"]),
  });
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, "r23-answers": ["register_module_api", "register_rpc_endpoint"] },
    moduleLimits: { "r23-answers": { memory_mb: 256 } },
  });
  await h.waitForState("good", "running", 60_000);
  await h.waitForLog(/^answering$/, { source: "r23-answers", timeoutMs: 60_000 });
  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(500, 4);
  const auth = await cookieAuth(h);
  const rpcOutcomes: Record<string, Record<string, number>> = {};
  let rpcBytes = 0;
  const until = Date.now() + 15_000;
  let n = 0;
  const client = async () => {
    while (Date.now() < until) {
      const m = ANSWER_SHAPES[n++ % ANSWER_SHAPES.length]!;
      const r = await postDiscarding(h, auth, { jsonrpc: "2.0", id: n, method: `r23-answers.${m}`, params: {} }).then((a) => {
        rpcBytes += a.bytes;
        const code = /"error":\{"code":(-?\d+)/.exec(a.head)?.[1];
        return code ? `error ${code}` : a.head.includes('"result":') ? "ok" : `http ${a.status}`;
      }, (e: Error) => `failed ${e.message.slice(0, 60)}`);
      (rpcOutcomes[m] ??= {})[r] = (rpcOutcomes[m][r] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: 4 }, client));
  await canary.stop();
  watch.assertCanary(t);
  await watch.finish(t, 1);
  t.log(`JSON-RPC calls: ${JSON.stringify(rpcOutcomes)}, ${(rpcBytes / MiB).toFixed(0)} MB of answers (load ${load()})`);
  for (const m of ANSWER_SHAPES) t.true(Object.keys(rpcOutcomes[m] ?? {}).length > 0 && Object.keys(rpcOutcomes[m] ?? {}).every((o) => o === "ok" || o.startsWith("error ")), `${m}: every call answered, with the value or an error (${JSON.stringify(rpcOutcomes[m])})`);
  for (const name of ["r23-answers"]) {
    t.is(h.status(name)?.state, "running", `${name} still runs`);
    const pong = await post(h, { jsonrpc: "2.0", id: 1, method: `${name}.ping`, params: {} });
    t.is(pong.json?.result, "pong", `${name} answers afterwards`);
  }
});
