// Hostile probes of round 22 (issue #8), under the real host and sandbox, next to the canary
// ("good", which stores every block):
//   flood     native modules (test/fixtures/hostile-round22-probes/flood.ts) that flood their
//             channel with small requests, 1 MiB of frames per write, as fast as the socket
//             takes them: one that never sends its ready (the host waits for it, and reads past
//             its waiting requests until start_timeout_ms), the same not reading what the host
//             sends, and one that is running. The host reads past waiting requests while it
//             waits for a module (its ready, an invocation's answer); what it reads then must
//             still be held to the module's share of the host's CPU.
// While they run: the canary stores every block within 5 s, RPC answers within 5 s, no turn of
// the host's loop takes 250 ms of its CPU, its heap, log and descriptors stay within bounds.
// The tests watch this process's loop, so they run one at a time.

import test from "ava";
import { fileURLToPath } from "node:url";
import http from "node:http";
import { buildModulesDir, GOOD_GRANTS, sleep, startHost, tempDir, waitFor, type TestHost } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";
import { cookieAuth, post } from "./helpers/rpc.ts";
import { MAX_PIPELINED_REQUESTS } from "../host/rpc/server.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { watchHost } from "./helpers/host-watch.ts";
import { pendingOf } from "./helpers/census.ts";
import { DEFAULT_LIMITS } from "../host/config.ts";

/** The module's max_rpc_calls (the default). */
const MAX_RPC_CALLS = DEFAULT_LIMITS.max_rpc_calls;

const FLOOD = fileURLToPath(new URL("./fixtures/hostile-round22-probes/flood.ts", import.meta.url));

test.serial("native modules flooding their channel with small requests (never ready and not reading, never ready and reading, running): each is held to its share of the host's CPU; the canary stores every block and RPC answers", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const probes = { "r22-unready-deaf": { ready: false, read: false }, "r22-unready": { ready: false, read: true }, "r22-running": { ready: true, read: true } };
  const modulesDir = await buildModulesDir(dir, ["good"]);
  for (const name of Object.keys(probes)) await writeNodeNative(modulesDir, name, FLOOD, []);
  const hostStarted = Date.now();
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS },
    moduleLimits: Object.fromEntries(Object.keys(probes).map((n) => [n, { start_timeout_ms: 30_000, restart: "never" }])),
    moduleConfigs: probes,
  });
  await h.waitForState("good", "running", 60_000);
  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(500, 4);
  const started = Date.now();
  while (Date.now() - started < 25_000) {
    await sleep(1000);
    watch.sample();
  }
  const share = DEFAULT_LIMITS.host_cpu_ms_per_s;
  for (const name of Object.keys(probes)) {
    const s = h.status(name);
    const session = h.manager.processOf(name)?.session;
    t.truthy(session, `${name} had a session`);
    if (!session) continue;
    const { cpuMs, peakUnread } = session.flowStats;
    // From its first words (it floods from then) to its end, or to now.
    const from = h.records.find((r) => r.source === name && r.message === "flooding")?.time ?? hostStarted;
    const ended = h.records.find((r) => r.source === "host" && r.message.startsWith(`failed to load ${name}:`))?.time ?? Date.now();
    const seconds = (ended - from) / 1000;
    t.log(`${name}: ${s?.state} ${s?.problem?.slice(0, 100) ?? ""}; host CPU ${cpuMs.toFixed(0)} ms in its ${seconds.toFixed(1)} s (share ${share} ms/s); ${session.stats.requests} requests, ${session.stats.errors} refused or denied; peak unread ${peakUnread} bytes (bound ${session.unreadBound})`);
    // Its share for as long as it sent, plus the bucket's burst (one share), with a quarter
    // more for the chunk read past each pause and answers encoded while reading waits.
    t.true(cpuMs <= share * (1.25 * seconds + 1), `${name}: ${cpuMs.toFixed(0)} ms of host CPU in ${seconds.toFixed(1)} s, within ${share} ms/s`);
    t.true(peakUnread <= session.unreadBound, `${name}: at most ${peakUnread} bytes waited for it, within its bound of ${session.unreadBound}`);
  }
  t.is(h.status("r22-running")?.state, "running", "the running flood is throttled, not ended");
  await canary.stop();
  watch.assertCanary(t);
  await watch.finish(t, 3);
});

// A module whose JSON-RPC method `slow` answers after 30 s and `ping` at once.
const SLOW_CAPS = ["register_rpc_endpoint", "manage_timers"];
const SLOW = inlineModule("r22-slow", SLOW_CAPS, `
  await ctx.rpc.register("slow", "answers after 30 s", () => new Promise((r) => setTimeout(() => r("late"), 30_000)));
  await ctx.rpc.register("ping", "answers at once", () => "pong");
`);

/**
 * POST `body` on a connection of its own; `abort()` resets it before the answer (a client that
 * went away: a FIN alone is a half-close, after which the server still answers).
 */
function postAbortable(h: TestHost, auth: string, body: unknown): { answer: Promise<any>; abort: () => void } {
  const a = h.host.rpcServer!.address!;
  const req = http.request({ host: a.host, port: a.port, method: "POST", path: "/", agent: false, headers: { "Content-Type": "application/json", Authorization: auth } });
  const answer = new Promise<any>((resolve, reject) => {
    req.on("response", (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (text += d));
      res.on("end", () => resolve(JSON.parse(text)));
    });
    req.on("error", reject);
  });
  answer.catch(() => {});
  req.end(JSON.stringify(body));
  return { answer, abort: () => (req.socket ? req.socket.resetAndDestroy() : req.destroy()) };
}

test.serial(`JSON-RPC clients calling a module's method that takes 30 s: a batch of 1000 runs ${MAX_PIPELINED_REQUESTS} at a time, calls from all clients together wait at most max_rpc_calls at the module (the rest refused naming it), and a client that goes away (its connection reset) gives up its calls; the module still answers its other callers (before: one batch took 1000 of its 1,024 places, kept after the client had gone)`, async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  await buildModulesDir(dir, ["good"], { "r22-slow": SLOW });
  const h = await startHost(t, { dir, modules: [], grants: { good: GOOD_GRANTS, "r22-slow": SLOW_CAPS }, moduleLimits: { "r22-slow": { handler_timeout_ms: 60_000 } }, configure: (c) => (c.rpc.call_timeout_ms = 60_000) });
  await h.waitForState("r22-slow", "running", 60_000);
  const auth = await cookieAuth(h);
  const call = (method: string, id: number) => ({ jsonrpc: "2.0", id, method: `r22-slow.${method}`, params: {} });

  // One batch of 1000: MAX_PIPELINED_REQUESTS of its calls at the module at a time.
  const batch = postAbortable(h, auth, Array.from({ length: 1000 }, (_, i) => call("slow", i)));
  await waitFor(() => pendingOf(h, "r22-slow") >= MAX_PIPELINED_REQUESTS, 30_000, "the batch's calls to reach the module");
  await sleep(500);
  const atOnce = pendingOf(h, "r22-slow");
  t.log(`a batch of 1000: ${atOnce} calls waiting at the module`);
  t.is(atOnce, MAX_PIPELINED_REQUESTS, "the batch's calls wait at the module a lane's worth at a time");
  t.deepEqual((await post(h, call("ping", 1))).json.result, "pong", "another client is answered meanwhile");
  batch.abort();
  await waitFor(() => pendingOf(h, "r22-slow") === 0, 10_000, () => `the batch's calls to be given up (${pendingOf(h, "r22-slow")} waiting)`);
  t.pass("the batch's calls were given up when its client went away");

  // 20 batches of 16 on 20 connections: 320 calls at once, max_rpc_calls wait.
  const many = Array.from({ length: 20 }, (_, b) => postAbortable(h, auth, Array.from({ length: MAX_PIPELINED_REQUESTS }, (_, i) => call("slow", b * 100 + i))));
  await waitFor(() => pendingOf(h, "r22-slow") >= MAX_RPC_CALLS, 30_000, () => `${MAX_RPC_CALLS} calls to wait at the module (${pendingOf(h, "r22-slow")})`);
  await sleep(500);
  t.is(pendingOf(h, "r22-slow"), MAX_RPC_CALLS, "no more than max_rpc_calls wait");
  // A module's own caller (the host's health check of it) still has places.
  const health = await post(h, { jsonrpc: "2.0", id: 2, method: "health", params: [] });
  const mine = (health.json.result.modules as Array<{ name: string; health: unknown }>).find((m) => m.name === "r22-slow");
  t.is((mine?.health as { status?: string } | undefined)?.status, "ok", `its health check is answered meanwhile: ${JSON.stringify(mine)}`);
  for (const m of many) m.abort();
  await waitFor(() => pendingOf(h, "r22-slow") === 0, 10_000, () => `the calls to be given up (${pendingOf(h, "r22-slow")} waiting)`);
  // The refused ones were answered at once, naming the limit: a connection of 16 whose answer came.
  const refusedBatch = postAbortable(h, auth, Array.from({ length: MAX_PIPELINED_REQUESTS }, (_, i) => call("slow", i)));
  const fill = Array.from({ length: MAX_RPC_CALLS / MAX_PIPELINED_REQUESTS }, (_, b) => postAbortable(h, auth, Array.from({ length: MAX_PIPELINED_REQUESTS }, (_, i) => call("slow", b * 100 + i))));
  t.teardown(() => { refusedBatch.abort(); for (const f of fill) f.abort(); });
  await waitFor(() => pendingOf(h, "r22-slow") >= MAX_RPC_CALLS, 30_000, "the places to fill again");
  const late = await post(h, [call("slow", 9)]);
  t.regex(JSON.stringify(late.json), /max_rpc_calls/, "a call past the limit is refused at once, naming it");
  t.is(h.status("r22-slow")?.state, "running");
});

// A module whose rpc_dispatch hook never answers (the operator gives it 60 s, fail-open).
const STUCK_HOOK_CAPS = ["register_hook"];
const STUCK_HOOK = inlineModule("r22-stuck-hook", STUCK_HOOK_CAPS, `
  await ctx.hooks.register("rpc_dispatch", () => new Promise(() => {}));
`);

test.serial("JSON-RPC clients' 320 calls at once through an rpc_dispatch hook that never answers: at most max_rpc_calls of the hook's calls wait at the hook module, the others fail at once naming the limit (fail-open: the call goes on), its health check is answered, and they are given up once the clients go (before: all 320 waited there for the hook's 60 s)", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  await buildModulesDir(dir, [], { "r22-slow": SLOW, "r22-stuck-hook": STUCK_HOOK });
  const h = await startHost(t, {
    dir, modules: [],
    grants: { "r22-slow": SLOW_CAPS, "r22-stuck-hook": ["register_hook=rpc_dispatch"] },
    configure: (c) => {
      c.rpc.call_timeout_ms = 60_000;
      c.hooks = { rpc_dispatch: { timeout_ms: 60_000, failure: "open" } };
    },
  });
  await h.waitForState("r22-stuck-hook", "running", 60_000);
  await h.waitForState("r22-slow", "running", 60_000);
  const auth = await cookieAuth(h);
  const call = (method: string, id: number) => ({ jsonrpc: "2.0", id, method: `r22-slow.${method}`, params: {} });
  const many = Array.from({ length: 20 }, (_, b) => postAbortable(h, auth, Array.from({ length: MAX_PIPELINED_REQUESTS }, (_, i) => call("ping", b * 100 + i))));
  t.teardown(() => { for (const m of many) m.abort(); });
  await waitFor(() => pendingOf(h, "r22-stuck-hook") >= MAX_RPC_CALLS, 30_000, () => `the hook's calls to fill (${pendingOf(h, "r22-stuck-hook")})`);
  await sleep(500);
  t.is(pendingOf(h, "r22-stuck-hook"), MAX_RPC_CALLS, "no more than max_rpc_calls of the hook's calls wait");
  const failed = h.records.filter((r) => r.source === "hooks" && /max_rpc_calls/.test(r.message));
  t.true(failed.length > 0, "the hook calls past the limit failed naming it");
  t.log(failed[0]?.message.slice(0, 300));
  const health = await post(h, { jsonrpc: "2.0", id: 2, method: "health", params: [] });
  const hook = (health.json.result.modules as Array<{ name: string; health: unknown }>).find((m) => m.name === "r22-stuck-hook");
  t.is((hook?.health as { status?: string } | undefined)?.status, "ok", `the hook module's health check is answered meanwhile: ${JSON.stringify(hook)}`);
  for (const m of many) m.abort();
  await waitFor(() => pendingOf(h, "r22-stuck-hook") === 0, 10_000, () => `the hook's calls to be given up (${pendingOf(h, "r22-stuck-hook")} waiting)`);
  t.pass("given up once their clients went");
});
