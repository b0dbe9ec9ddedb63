// Faults of round 26 (issue #8): native modules (test/fixtures/hostile-round26-faults/actor.ts)
// killed with SIGKILL by the test in the middle of what they do, under the real host, next to
// the canary. After each series: a census of the host (test/helpers/census.ts) against one
// before, the host-wide byte accounts (protocol/host-bytes.ts) back to their level, every
// module loaded again, the canary on time.
//   calls     module calls between native modules: a caller killed with 16 calls in flight to a
//             callee that answers after 30 s; the callee killed while it owes 16 answers; the
//             caller reloaded while the callee answers its 16 calls after 50 to 1,000 ms (during
//             the old instance's stop, or once the new one runs); a cycle a -> b -> a with 16
//             calls in flight each way when one of the two is killed.
//   midway    a native module killed with a storage transaction in parts held (3 parts of 1 MiB),
//             half of a 12 MiB frame sent, 48 storage_get answers of 1 MiB it does not read, an
//             http_request whose answer a loopback server in the test dribbles; its next instance
//             looks for the earlier one's parts (a last part of the same id, four transactions in
//             parts of 7 MiB held at once).
//   loops     16 native modules crashing right after `ready` at once, quarantine_after 3; then
//             `enable` of each.
// Measured with 50 kills of each kind (R26_N=50; 2-4 min a test): nothing found. A killed
// caller's 16 calls given up each time (at most 448 ms after the kill in a run of 10 kills; the
// callee would have answered after 30 s), 800 of 800 calls to a killed callee answered
// unavailable, no answer (nor one to no request) reached a reloaded caller's new instance, no
// new instance saw anything of an earlier one's parts, the byte accounts back to 0 after every
// kill (1.9 MB held for 16 calls of 64 KiB, 3 MB of parts, 6 MB of a half frame, 1-2 MB of
// unread answers, 8.9 MB reserved for an http answer), every server connection closed, no
// census entry grown, 16 modules quarantined in 8-12 s and all running after `enable`, the
// canary never late (longest turn of the host's loop 26-49 ms of CPU). They stay as cheap
// regression tests at 5-8 kills of each kind (R26_N sets it). Checked to fail: without the
// caller's end giving up its calls (host/session.ts, InvokeFor.instance) the calls test fails
// (16 calls still wait 10 s after the caller's death); without a new instance dropping the
// staged parts of the last one (host/supervisor.ts, dropStaged) the midway test fails
// (16,228,459 bytes held after the kill). Left alone: a module's cgroup directories are removed
// once its process has exited, after `unload` returns (two more directories seen just after the
// last unload, none a second later): settled() waits for them.

import test, { type ExecutionContext } from "ava";
import { createServer, type Socket } from "node:net";
import { fileURLToPath } from "node:url";
import { hostBytes } from "../protocol/host-bytes.ts";
import { census, grown, pendingOf, type Census } from "./helpers/census.ts";
import { buildModulesDir, GOOD_GRANTS, sleep, startHost, tempDir, waitFor, type TestHost } from "./helpers/host.ts";
import { watchHost } from "./helpers/host-watch.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { call } from "./helpers/rpc.ts";

const ACTOR = fileURLToPath(new URL("./fixtures/hostile-round26-faults/actor.ts", import.meta.url));
/**
 * The census's default skips, the event bus's per-subscriber queues, the quarantine records'
 * failure lists (each kill is a failure, kept for quarantine_window_ms), the canary's record
 * (its requests come and go) and the test's own kept-alive JSON-RPC connections.
 */
const SKIP = [/(^|\.)chain\b/, /\.gate\b/, /\.subs\[\]\.(queue|unacked)$/, /lifecycleState\.modules\.[^.]+\.failures$/, /records\[good\]/, /rpcServer\.conns$/];
const LONG = 60_000;
/** Killed modules are not restarted by the policy: the test loads them again itself. */
const NO_RESTART = { restart: "never", quarantine_after: 0 } as const;

/** How soon after a module's death the calls made for it are given up (they would be answered after 30 s). */
const GIVEN_UP_MS = 10_000;
const CALL_CAPS = ["call_module", "register_module_api", "register_rpc_endpoint"];

function pidOf(h: TestHost, name: string): number {
  const pid = h.manager.processOf(name)?.pid;
  if (!pid) throw new Error(`${name} has no process`);
  return pid;
}

/** SIGKILL `name`'s process; wait until the host has seen it end. */
async function kill(h: TestHost, name: string): Promise<void> {
  const pid = pidOf(h, name);
  try {
    process.kill(pid, "SIGKILL");
  } catch (err) {
    throw new Error(`${name} (${pid}, ${h.status(name)?.state}, ${h.status(name)?.problem}) cannot be killed: ${(err as Error).message}`);
  }
  await waitFor(() => h.status(name)?.state !== "running", LONG, `${name} seen dead`);
}

/** Load `name` again and wait for its "up" line; returns its fields. */
async function up(h: TestHost, name: string): Promise<Record<string, unknown>> {
  const mark = h.mark();
  await h.manager.load(name);
  return (await h.waitForLog(/^up$/, { source: name, since: mark, timeoutMs: LONG })).fields as Record<string, unknown>;
}

async function armed(h: TestHost, name: string, since: number): Promise<void> {
  await h.waitForLog(/^armed$/, { source: name, since, timeoutMs: LONG });
}

/**
 * After a series: the host-wide byte accounts back to `bytes0` (the canary's own requests come
 * and go: waited for, not sampled once), and a census of the host that did not grow since
 * `before`. The heap is logged, not compared: it is checked over the whole test by finish().
 */
async function settled(t: ExecutionContext, h: TestHost, what: string, before: Census, bytes0: number): Promise<void> {
  const back = await waitFor(() => hostBytes.total() === bytes0, 10_000, "").then(() => true, () => false);
  // A module's cgroup directories go once its process has exited, after unload returns.
  let after = await census(h, 7, SKIP);
  for (let i = 0; i < 10 && after["system.cgroupDirs"]! > before["system.cgroupDirs"]!; i++) {
    await sleep(1000);
    after = await census(h, 7, SKIP);
  }
  const g = grown(before, after).filter((x) => !x.startsWith("process.heapMB"));
  t.log(`${what}: host bytes ${bytes0} -> ${hostBytes.total()} (${hostBytes.accounts} accounts); heap ${before["process.heapMB"]} -> ${after["process.heapMB"]} MB; census grown: ${g.join("; ") || "nothing"}`);
  t.deepEqual(g, [], `${what}: nothing in the host grew`);
  t.true(back, `${what}: the host-wide byte accounts are back to their level (${hostBytes.total()} bytes, ${bytes0} before)`);
}

test.serial("module calls between native modules with 16 in flight (held before this round, kept cheap): a caller killed, a callee killed, a caller reloaded while answered, a cycle a -> b -> a with one killed: calls given up within 10 s of the death, every call to a dead callee answered unavailable, no answer reaches a new instance, census and byte accounts back, canary on time", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  await writeNodeNative(modulesDir, "a", ACTOR, CALL_CAPS);
  await writeNodeNative(modulesDir, "b", ACTOR, CALL_CAPS);
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, a: CALL_CAPS, b: CALL_CAPS },
    moduleConfigs: { a: { mode: "caller" }, b: { mode: "caller" } },
    moduleLimits: { a: NO_RESTART, b: NO_RESTART },
  });
  await h.waitForState("good", "running", LONG);
  await h.waitForState("a", "running", LONG);
  await h.waitForState("b", "running", LONG);
  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(1000, 3);
  const N = Number(process.env.R26_N ?? 8);
  const fire = (from: string, to: string, method: string, ms: number, bytes = 64 * 1024, extra: Record<string, unknown> = {}) =>
    call(h, `${from}.fire`, { target: to, method, n: 16, ms, bytes, ...extra });
  // Warm-up: one of each, so that the first census has seen every path.
  await fire("a", "b", "ping", 0);
  await sleep(300);
  const c0 = await census(h, 7, SKIP);
  const b0 = hostBytes.total();

  // 1. The caller killed with 16 calls in flight.
  let t0 = Date.now();
  let peak = 0;
  let slowest = 0;
  for (let i = 0; i < N; i++) {
    await fire("a", "b", "slow", 30_000);
    await waitFor(() => pendingOf(h, "b") === 16, LONG, "16 calls waiting at b");
    peak = Math.max(peak, hostBytes.total());
    const tk = performance.now();
    await kill(h, "a");
    // Given up when the caller's end is seen, not when b answers (30 s later): 10 s is the
    // end's detection (immediate) with generous room for a loaded machine.
    await waitFor(() => pendingOf(h, "b") === 0, GIVEN_UP_MS, () => `b's calls given up within ${GIVEN_UP_MS} ms of a's death (${pendingOf(h, "b")} still wait)`);
    slowest = Math.max(slowest, performance.now() - tk);
    await up(h, "a");
  }
  t.log(`caller killed ${N} times in ${Date.now() - t0} ms; host bytes at most ${peak} with its calls in flight; its calls given up at most ${slowest.toFixed(0)} ms after the kill`);
  t.true(peak > 16 * 64 * 1024, "the host held the calls' params while they were in flight");
  await settled(t, h, "caller killed", c0, b0);

  // 2. The callee killed while it owes 16 answers.
  t0 = Date.now();
  const owed: Record<string, number> = {};
  for (let i = 0; i < N; i++) {
    await fire("a", "b", "slow", 30_000);
    await waitFor(() => pendingOf(h, "b") === 16, LONG, "16 calls waiting at b");
    await kill(h, "b");
    const got = await waitFor(async () => {
      const r = (await call(h, "a.answers")) as Record<string, number>;
      return Object.values(r).reduce((x, y) => x + y, 0) >= 16 * (i + 1) ? r : undefined;
    }, LONG, "a's 16 answers");
    Object.assign(owed, got);
    await up(h, "b");
  }
  t.log(`callee killed ${N} times in ${Date.now() - t0} ms; a's answers: ${JSON.stringify(owed)}`);
  t.deepEqual(owed, { unavailable: 16 * N }, "every call to the killed callee was answered unavailable");
  await settled(t, h, "callee killed", c0, b0);

  // 3. The caller reloaded while its calls are answered.
  t0 = Date.now();
  let strays = 0;
  // b answers after 50 to 1,000 ms: during the old instance's stop, or once the new one runs.
  for (let i = 0; i < N; i++) {
    const ms = 50 + ((i * 97) % 950);
    const t1 = Date.now();
    await fire("a", "b", "slow", ms);
    if (ms > 500) await waitFor(() => pendingOf(h, "b") === 16, LONG, "16 calls waiting at b");
    await h.manager.reload("a");
    await sleep(Math.max(0, ms - (Date.now() - t1)) + 200);
    const r = (await call(h, "a.answers")) as Record<string, number>;
    strays += Object.values(r).reduce((x, y) => x + y, 0);
  }
  t.log(`caller reloaded ${N} times in ${Date.now() - t0} ms; answers (or answers to no request) seen by new instances: ${strays}`);
  t.is(strays, 0, "no answer reached a new instance");
  await settled(t, h, "caller reloaded", c0, b0);

  // 4. A cycle a -> b -> a, one of the two killed.
  t0 = Date.now();
  // Calls a makes while it handles b's count as nested in them (host/services/modules.ts), so
  // some of the 16 are refused past the depth bound (quota_exceeded): counted, not a fault.
  const settledCount = async () => Object.values((await call(h, "a.answers")) as Record<string, number>).reduce((x, y) => x + y, 0);
  let refused = 0;
  for (let i = 0; i < N; i++) {
    const s0 = await settledCount();
    await fire("a", "b", "bounce", 30_000, 4096, { to: "a" });
    const inFlight = await waitFor(async () => {
      const done = (await settledCount()) - s0;
      return pendingOf(h, "b") + done === 16 && pendingOf(h, "a") > 0 ? 16 - done : undefined;
    }, LONG, () => `16 calls settled or in flight each way (${pendingOf(h, "a")}, ${pendingOf(h, "b")})`);
    refused += 16 - inFlight;
    const victim = i % 2 === 0 ? "a" : "b";
    await kill(h, victim);
    await waitFor(() => pendingOf(h, "a") <= 0 && pendingOf(h, "b") <= 0, GIVEN_UP_MS, () => `calls given up within ${GIVEN_UP_MS} ms of ${victim}'s death (${pendingOf(h, "a")}, ${pendingOf(h, "b")} still wait)`);
    await up(h, victim);
  }
  t.log(`cycle, one killed ${N} times in ${Date.now() - t0} ms; calls refused past the depth bound: ${refused} of ${16 * N}`);
  await settled(t, h, "cycle", c0, b0);
  await canary.stop();
  watch.assertCanary(t);
  await watch.finish(t, 2);
});

/** A loopback HTTP server that reads a request and dribbles a chunked answer (a chunk every 100 ms), never ending it. */
async function dribbler(t: ExecutionContext) {
  const open = new Set<Socket>();
  let accepted = 0;
  const server = createServer((s) => {
    accepted++;
    open.add(s);
    s.on("error", () => {});
    s.on("close", () => open.delete(s));
    let head = "";
    let timer: NodeJS.Timeout | undefined;
    s.on("data", (d) => {
      if (timer) return;
      head += d.toString("latin1");
      if (!head.includes("\r\n\r\n")) return;
      s.write("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
      timer = setInterval(() => s.write(`400\r\n${"z".repeat(1024)}\r\n`), 100);
      s.on("close", () => clearInterval(timer));
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.teardown(() => {
    for (const s of open) s.destroy();
    server.close();
  });
  return { port: (server.address() as { port: number }).port, open, accepted: () => accepted };
}

test.serial("native modules killed mid-operation (held before this round, kept cheap): a transaction in parts held, half a frame sent, answers unread, an http_request answer dribbled: the byte accounts back to their level after each kill, no server connection left, a new instance sees nothing of the old one's parts and has all its room for parts, census back, canary on time", async (t) => {
  t.timeout(300_000);
  const N = Number(process.env.R26_N ?? 5);
  const dir = await tempDir(t);
  const srv = await dribbler(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  const STORAGE = ["read_storage", "write_storage", "manage_storage"];
  const HTTP = [`network_access=127.0.0.1:${srv.port}`];
  await writeNodeNative(modulesDir, "parts", ACTOR, STORAGE);
  await writeNodeNative(modulesDir, "frame", ACTOR, STORAGE);
  await writeNodeNative(modulesDir, "unread", ACTOR, STORAGE);
  await writeNodeNative(modulesDir, "http", ACTOR, ["network_access"]);
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, parts: STORAGE, frame: STORAGE, unread: STORAGE, http: HTTP },
    moduleConfigs: { parts: { mode: "parts" }, frame: { mode: "frame" }, unread: { mode: "unread" }, http: { mode: "http", url: `http://127.0.0.1:${srv.port}/` } },
    moduleLimits: { parts: NO_RESTART, frame: NO_RESTART, unread: NO_RESTART, http: NO_RESTART },
  });
  await h.waitForState("good", "running", LONG);
  for (const m of ["parts", "frame", "unread", "http"]) await h.waitForState(m, "running", LONG);
  const MODES = ["parts", "frame", "unread", "http"];
  for (const m of MODES) await h.manager.unload(m);
  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(1000, 3);
  // Each loaded, armed, killed and loaded again once, then unloaded: the first census has seen every path.
  for (const m of MODES) {
    const mark = h.mark();
    await up(h, m);
    await armed(h, m, mark);
    await kill(h, m);
    await up(h, m);
    await h.manager.unload(m);
  }
  const b0 = 0;
  await waitFor(() => hostBytes.total() === b0, 10_000, () => `the host-wide byte accounts back at ${b0} (${hostBytes.total()})`);
  const c0 = await census(h, 7, SKIP);
  for (const m of MODES) {
    const t0 = Date.now();
    let peak = 0;
    let notBack = 0;
    let socketsLeft = 0;
    const seen: Record<string, number> = {};
    let mark = h.mark();
    await up(h, m);
    for (let i = 0; i < N; i++) {
      await armed(h, m, mark);
      // unread: its first answers sent and not read, its other requests not read by the host.
      await sleep(m === "frame" || m === "unread" ? 300 : 20);
      peak = Math.max(peak, hostBytes.total());
      await kill(h, m);
      if (!(await waitFor(() => hostBytes.total() === b0, 10_000, "").then(() => true, () => false))) notBack++;
      if (m === "http" && !(await waitFor(() => srv.open.size === 0, 10_000, "").then(() => true, () => false))) socketsLeft++;
      mark = h.mark();
      const f = await up(h, m);
      const key = JSON.stringify({ keys: f.keys, last: f.last, after: f.after, open: f.open });
      seen[key] = (seen[key] ?? 0) + 1;
    }
    await h.manager.unload(m);
    t.log(`${m}: killed ${N} times in ${Date.now() - t0} ms; host bytes at most ${peak} while armed, not back to ${b0} within 10 s after ${notBack} kills; server sockets left open after ${socketsLeft} kills (${srv.accepted()} accepted); new instances found: ${JSON.stringify(seen)}`);
    t.true(peak > 0, `${m}: the host held bytes for it while it was armed (${peak})`);
    t.is(notBack, 0, `${m}: the host-wide byte accounts were back to their level after every kill`);
    t.is(socketsLeft, 0, `${m}: no connection to the server outlived its module`);
    if (m === "parts") {
      // Nothing of the killed instance's parts written, its id free for a transaction of the
      // new one (its last part writes its own op alone), and all of the module's 32 MiB of
      // held parts free again: four transactions of 7 MiB held at once.
      t.deepEqual(seen, { [JSON.stringify({ keys: [], last: "ok", after: ["new"], open: ["ok", "ok", "ok", "ok"] })]: N }, "parts: no new instance saw anything of an earlier one's parts");
    }
  }
  await settled(t, h, "midway", c0, b0);
  await canary.stop();
  watch.assertCanary(t);
  await watch.finish(t, 4);
});

test.serial("16 native modules crashing right after ready at once with quarantine_after 3 (held before this round, kept cheap): all quarantined, each runs after enable, census and byte accounts back once unloaded, canary on time", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  const names = Array.from({ length: 16 }, (_, i) => `crash${i}`);
  const STORAGE = ["read_storage", "write_storage"];
  for (const n of names) await writeNodeNative(modulesDir, n, ACTOR, STORAGE);
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, ...Object.fromEntries(names.map((n) => [n, STORAGE])) },
    moduleConfigs: Object.fromEntries(names.map((n) => [n, { mode: "crash", crashes: 3 }])),
    moduleLimits: Object.fromEntries(names.map((n) => [n, { quarantine_after: 3 }])),
    noStart: true,
  });
  const watch = watchHost(t, h);
  const t0 = Date.now();
  await h.host.start();
  const canary = watch.canaryLoop(1000, 3);
  await h.waitForState("good", "running", LONG);
  for (const n of names) await h.waitForState(n, "quarantined", LONG);
  t.log(`16 modules quarantined ${Date.now() - t0} ms after the start`);
  await waitFor(() => hostBytes.total() === 0, 10_000, "").catch(() => undefined);
  const c0 = await census(h, 7, SKIP);
  await Promise.all(names.map((n) => h.manager.enable(n)));
  for (const n of names) await h.waitForState(n, "running", LONG);
  const starts = names.map((n) => h.logsOf(n).filter((r) => r.message === "up").length);
  t.log(`enabled: every one running; starts: ${starts.join(",")}`);
  for (const n of names) await h.manager.unload(n);
  await settled(t, h, "crash loops", c0, 0);
  await canary.stop();
  watch.assertCanary(t);
  await watch.finish(t, 16);
});
