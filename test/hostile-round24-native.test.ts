// Hostile probes of round 24 (issue #8): native modules.
//   held volume  LOOP_FREE_WAIT_MS (runtime/sandbox/volume.ts): a native module whose grandchild,
//             double-forked into a session of its own, holds a file on its data volume
//             (test/fixtures/hostile-round16/main.ts, mode "daemon"), while a process outside
//             its sandbox (an operator's shell left in the directory, or another instance's
//             process) keeps the volume's file system busy: its unload, then a load while the
//             loop device is still held, then a load once it is free. Before: nothing was said
//             at the unload, and the load was refused after 20.1 s naming only /dev/loopN.
//   prototype requests named after Object.prototype's members (constructor, toString, ...),
//             then a pipeline of large answers left unread
//             (test/fixtures/hostile-round24-native/prototype-methods.ts). Before: each made its
//             reservation NaN, and with it the session's and the host's byte accounts.
//   answers   its JSON-RPC invocations answered twice, with another call's id, late, with
//             errors coded after Object.prototype's members, and for ids never used
//             (test/fixtures/hostile-round24-native/answers.ts): a probe that found nothing.
//   arrays    parameters that are wrong at each of 65,000 elements, cheap to send and, before,
//             costly to check (test/fixtures/hostile-round24-native/invalid-arrays.ts).
//   signals   SIGSTOP to its own process group, SIGKILL to -1 and signals to its namespace's
//             pid 1, job-control signals (test/fixtures/hostile-round24-native/signals.ts): a
//             probe that found nothing.

import test from "ava";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { buildModulesDir, GOOD_GRANTS, sleep, startHost, tempDir, waitFor } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { watchHost } from "./helpers/host-watch.ts";
import { pendingOf } from "./helpers/census.ts";
import { watchTurns } from "./helpers/turns.ts";
import { post } from "./helpers/rpc.ts";
import { eventually, processesOf } from "./helpers/procs.ts";
import { UID_TABLE_FILE, UidTable } from "../runtime/sandbox/uids.ts";
import { HostBytes, hostBytes } from "../protocol/host-bytes.ts";
import { LOOP_FREE_WAIT_MS, loopDevicesOf, VOLUMES_DIR } from "../runtime/sandbox/volume.ts";

const PROTO = fileURLToPath(new URL("./fixtures/hostile-round24-native/prototype-methods.ts", import.meta.url));
const SIGNALS = fileURLToPath(new URL("./fixtures/hostile-round24-native/signals.ts", import.meta.url));
const ANSWERS = fileURLToPath(new URL("./fixtures/hostile-round24-native/answers.ts", import.meta.url));
const ARRAYS = fileURLToPath(new URL("./fixtures/hostile-round24-native/invalid-arrays.ts", import.meta.url));
const R16 = fileURLToPath(new URL("./fixtures/hostile-round16/main.ts", import.meta.url));
const MB = 1024 * 1024;
const mountedOn = (dir: string) => readFileSync("/proc/self/mountinfo", "utf8").split("\n").some((l) => l.split(" ")[4] === dir);

test.serial("a native module's volume held past LOOP_FREE_WAIT_MS by a process outside its sandbox, its own double-forked daemon holding a file there: the unload returns, a load is refused after the wait naming LOOP_FREE_WAIT_MS and the process that holds it, the host answers and the canary keeps up meanwhile, and the module loads with its files once the holder is gone", async (t) => {
  t.timeout(180_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  await writeNodeNative(modulesDir, "r24-held", R16);
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, "r24-held": [] },
    moduleConfigs: { "r24-held": { mode: "daemon" } },
    moduleLimits: { "r24-held": { max_data_bytes: 16 * MB, data_volume: "volume" } },
  });
  await h.waitForState("good", "running", 60_000);
  await h.waitForState("r24-held", "running", 60_000);
  t.is(h.status("r24-held")?.data?.mode, "volume", "r24-held has a data volume");
  const report = (await h.waitForLog(/^probe report$/, { source: "r24-held", timeoutMs: 60_000 })).fields as Record<string, unknown>;
  t.regex(String(report.held), /^daemon \d+/, "its daemon holds a file open on the volume");
  const dataDir = path.join(h.config.modules.data_dir, "r24-held");
  const image = path.join(await import("node:fs/promises").then((f) => f.realpath(h.config.modules.data_dir)), VOLUMES_DIR, "r24-held.ext4");

  // The holder: a process outside the sandbox with its working directory and a file open on the volume.
  const holder = spawn("sh", ["-c", "exec 3<held; exec sleep 600"], { cwd: dataDir, stdio: "ignore" });
  t.teardown(() => { if (holder.exitCode === null) holder.kill("SIGKILL"); });
  await sleep(300);
  t.is(holder.exitCode, null, "the holder runs");

  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(1000, 3);
  const unloadMark = h.mark();
  const unloadAt = Date.now();
  await h.manager.unload("r24-held");
  const unloadMs = Date.now() - unloadAt;
  // Its release follows the exit: busy, tried again for a second, then detached lazily.
  const detached = await eventually(async () => !mountedOn(dataDir), 30_000);
  const held = await loopDevicesOf(image);
  t.log(`unload returned in ${unloadMs} ms; volume ${detached ? "detached" : "still mounted"} ${Date.now() - unloadAt} ms after the unload began; loop devices still holding the image: ${held.join(", ") || "none"}`);
  t.true(detached, "the volume is no longer mounted on its directory (detached lazily)");
  t.true(held.length > 0, "the holder keeps the loop device");
  // The operator is told at the unload, not only at the next load.
  const said = await h.waitForLog(/its data volume: unmounted \(detached lazily\), but/, { since: unloadMark, timeoutMs: 30_000 }).catch(() => undefined);
  t.log(`at the unload the host said: ${said?.message ?? "nothing"}`);
  t.true(said?.message.includes(`${holder.pid} (sleep)`) ?? false, "the host names the process that still holds the volume after the unload");

  const loadMark = h.mark();
  const loadAt = Date.now();
  const refused = await h.manager.load("r24-held").then(() => undefined, (e: Error & { code?: string; fix?: string }) => e);
  const loadMs = Date.now() - loadAt;
  t.log(`load refused after ${loadMs} ms: ${refused?.message}; fix: ${refused?.fix}`);
  t.truthy(refused, "the load is refused while the volume is held");
  t.regex(refused?.message ?? "", /LOOP_FREE_WAIT_MS/, "the refusal names the bound");
  t.true(refused?.message.includes(`${holder.pid}`), `the refusal names the process that holds the volume (${holder.pid})`);
  // The load waits for the last instance's release (its unmount's own wait of 5 s for the loop
  // device, already under way), then LOOP_FREE_WAIT_MS, then looks for the holders: at least the
  // wait, at most both waits and generous slack for a loaded machine.
  t.true(loadMs >= LOOP_FREE_WAIT_MS - 100, `refused after the wait (${loadMs} ms)`);
  t.true(loadMs <= LOOP_FREE_WAIT_MS + 5000 + 15_000, `refused within LOOP_FREE_WAIT_MS + 5 s + 15 s of slack (${loadMs} ms)`);
  await canary.stop();
  watch.assertCanary(t);
  t.log(`canary: ${JSON.stringify(watch.tally)}`);

  holder.kill("SIGKILL");
  t.true(await eventually(async () => (await loopDevicesOf(image)).length === 0, 30_000), "the loop device goes once the holder is gone");
  await h.manager.load("r24-held");
  await h.waitForState("r24-held", "running", 60_000);
  const again = (await h.waitForLog(/^probe report$/, { source: "r24-held", since: loadMark, timeoutMs: 60_000 })).fields as Record<string, unknown>;
  t.regex(String(again.held), /^daemon \d+/, "loaded again, with its volume");
  t.true(mountedOn(dataDir), "mounted again");
  await watch.finish(t, 1);
});

test.serial("a native module whose requests name Object.prototype's methods (constructor, toString, __proto__, hasOwnProperty, valueOf, __defineGetter__), then pipelines 64 storage_iter requests of ~1 MB answers without reading: each name is refused as unknown, its reservations stay numbers and return to 0, what waits for it stays within max_unread_bytes, the host's total of held bytes stays a number, and every request is answered once it reads", async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, []);
  await writeNodeNative(modulesDir, "r24-proto", PROTO, ["read_storage", "write_storage"]);
  const limit = 4 * MB;
  const h = await startHost(t, {
    dir, modules: [],
    grants: { "r24-proto": ["read_storage", "write_storage"] },
    moduleLimits: { "r24-proto": { max_unread_bytes: limit, health_interval_ms: 0, restart: "never", data_volume: "scan" } },
    moduleConfigs: { "r24-proto": { requests: 64, pause_ms: 3000 } },
  });
  const named = await h.waitForLog(/^named: /, { source: "r24-proto", timeoutMs: 60_000 });
  t.log(named.message);
  const session = h.manager.session("r24-proto")!;
  t.log(`after the named requests: reserved ${session.reservedBytes} bytes; host total held ${hostBytes.total()}`);
  t.is(named.message, `named: ${["constructor", "toString", "__proto__", "hasOwnProperty", "valueOf", "__defineGetter__"].map((m) => `${m}: unknown_method`).join(", ")}`, "each is refused as an unknown method");
  t.true(Number.isFinite(hostBytes.total()), `the host's total of held bytes is a number (${hostBytes.total()})`);
  await h.waitForLog(/^sent 64 storage_iter requests, not reading$/, { source: "r24-proto", timeoutMs: 30_000 });
  const done = await h.waitForLog(/^read \d+ answers$/, { source: "r24-proto", timeoutMs: 60_000 }).catch(() => undefined);
  const peak = session.flowStats.peakUnread;
  t.log(`peak unread ${(peak / MB).toFixed(2)} MiB against ${limit / MB} MiB; waited for max_unread_bytes ${session.flowStats.waitedUnread} times; ${done?.message ?? "not every answer came"} ${JSON.stringify(done?.fields ?? {})}; reserved after: ${session.reservedBytes}`);
  t.is(done?.message, "read 64 answers", "every request is answered once it reads");
  t.true(peak <= limit + 4 * 64, `at most ${peak} bytes waited for the module`);
  t.true(session.flowStats.waitedUnread > 0, "its requests waited for room under max_unread_bytes");
  t.is(session.reservedBytes, 0, "every reservation was released");
});

test.serial("HostBytes: an account whose measure is not a number of bytes (NaN, negative) is admitted nothing itself and counts 0 in the total, so another holder past its fair part is still admitted into the shared half", (t) => {
  const pool = new HostBytes();
  pool.setCap(64 * MB);
  const own = { broken: Number.NaN, other: 0 };
  const broken = pool.join("broken", () => own.broken);
  const other = pool.join("other", () => own.other);
  t.is(broken.admits(1024), false, "the broken account is admitted nothing");
  t.is(pool.total(performance.now() + 10), 0, "it counts 0 in the total");
  own.other = other.fairPart();
  t.is(other.admits(MB), "shared", "another holder past its fair part is admitted into the shared half");
  t.is(other.admits(Number.NaN), false, "a request of NaN bytes is not admitted");
  own.broken = -5;
  t.is(broken.admits(1024), false, "nor is a negative account");
  t.true(Number.isFinite(pool.total(performance.now() + 20)), "the total stays a number");
  broken.leave();
  other.leave();
});

test.serial("native modules that play signal and process-group tricks in their sandbox (SIGSTOP to their whole process group, SIGKILL to every process they may signal and SIGSTOP to their namespace's pid 1, SIGTSTP/SIGTTIN/SIGTTOU with default actions): the host stays up and answers, the stopped one is killed as unresponsive and restarted, each unload ends within stop_timeout_ms plus the kill's grace and slack, no process of theirs is left, and each loads again", async (t) => {
  t.timeout(180_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  const modes = { "r24-stopgroup": "stop-group", "r24-killall": "kill-all", "r24-tstp": "tstp" } as const;
  for (const name of Object.keys(modes)) await writeNodeNative(modulesDir, name, SIGNALS);
  const stopMs = 2000;
  const healthMs = 1000;
  const healthTimeoutMs = 2000;
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, ...Object.fromEntries(Object.keys(modes).map((n) => [n, []])) },
    moduleConfigs: Object.fromEntries(Object.entries(modes).map(([n, mode]) => [n, { mode }])),
    moduleLimits: Object.fromEntries(Object.keys(modes).map((n) => [n, { data_volume: "scan", stop_timeout_ms: stopMs, health_interval_ms: healthMs, health_timeout_ms: healthTimeoutMs }])),
  });
  await h.waitForState("good", "running", 60_000);
  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(1000, 3);
  const uids = await UidTable.open(path.join(h.config.modules.data_dir, UID_TABLE_FILE));
  for (const name of Object.keys(modes)) {
    const said = await h.waitForLog(/^signals: /, { source: name, timeoutMs: 60_000 });
    t.log(`${name}: ${said.message} ${JSON.stringify(said.fields)}`);
  }
  // The stopped module answers no health check: killed within health_interval_ms +
  // health_timeout_ms (+ 15 s of slack for a loaded machine), then restarted per its policy.
  const stoppedAt = Date.now();
  const killed = await h.waitForLog(/^r24-stopgroup is unresponsive/, { source: "host", timeoutMs: healthMs + healthTimeoutMs + 15_000 }).catch(() => undefined);
  t.log(`r24-stopgroup: ${killed ? `"${killed.message}" ${Date.now() - stoppedAt} ms after it stopped` : "never said unresponsive"}`);
  t.truthy(killed, "the module that stopped its process group is killed as unresponsive");
  const restartMark = h.mark();
  await h.waitFor(() => (h.status("r24-stopgroup")?.restarts ?? 0) >= 1, 30_000, "r24-stopgroup to be restarted");
  // Restarted, it stops itself again: the unload below meets a stopped process group.
  await h.waitForLog(/^signals: /, { source: "r24-stopgroup", since: restartMark, timeoutMs: 60_000 });
  await sleep(500);
  for (const name of Object.keys(modes)) t.log(`${name}: ${h.status(name)?.state}, restarts ${h.status(name)?.restarts}`);
  for (const name of ["r24-killall", "r24-tstp"]) t.is(h.status(name)?.restarts, 0, `${name} runs on, its tricks refused or without effect`);
  for (const name of Object.keys(modes)) {
    const uid = uids.get(name) ?? Number.NaN;
    const at = Date.now();
    await h.manager.unload(name);
    const unloadMs = Date.now() - at;
    const gone = await eventually(async () => (await processesOf(uid)) === 0, 30_000);
    t.log(`${name}: unloaded in ${unloadMs} ms; its processes ${gone ? "gone" : "still there"} ${Date.now() - at} ms after`);
    // The stop: stop_timeout_ms for the shutdown, then SIGTERM and SIGKILL (each given a few
    // seconds), on a loaded machine: 20 s of slack.
    t.true(unloadMs <= stopMs + 20_000, `${name} unloaded within stop_timeout_ms + 20 s (${unloadMs} ms)`);
    t.true(gone, `no process of ${name} is left`);
    const mark = h.mark();
    await h.manager.load(name);
    await h.waitForState(name, "running", 60_000);
    await h.waitForLog(/^signals: /, { source: name, since: mark, timeoutMs: 60_000 });
  }
  await canary.stop();
  watch.assertCanary(t);
  await watch.finish(t, 3);
});

test.serial("a native module that answers its JSON-RPC invocations wrongly (twice, first with another call's id, 3 s late, with errors coded constructor, __proto__ or toString, each followed by an answer to an id never used, health checks answered twice): every one of 24 concurrent calls (under max_connections_per_address) gets one answer the module gave with its id, nothing is left waiting, the module runs on and the canary keeps up", async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  await writeNodeNative(modulesDir, "r24-answers", ANSWERS, ["register_rpc_endpoint"]);
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, "r24-answers": ["register_rpc_endpoint"] },
    moduleLimits: { "r24-answers": { data_volume: "scan", health_interval_ms: 500 } },
  });
  await h.waitForState("good", "running", 60_000);
  await h.waitForLog(/^serving$/, { source: "r24-answers", timeoutMs: 60_000 });
  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(1000, 3);
  const CALLS = 24;
  const at = Date.now();
  const answers = await Promise.all(Array.from({ length: CALLS }, (_, n) => post(h, { jsonrpc: "2.0", id: n, method: "r24-answers.echo", params: { n } })));
  const tookMs = Date.now() - at;
  const wrong: string[] = [];
  let swapped = 0;
  for (const [n, a] of answers.entries()) {
    const body = a.json as { id?: number; result?: { n?: number; again?: boolean; swapped?: boolean }; error?: { message?: string; data?: unknown } };
    if (a.status !== 200 || body.id !== n) wrong.push(`${n}: HTTP ${a.status} ${a.text.slice(0, 200)}`);
    else if (n % 4 === 3) { if (!body.error || !String(body.error.message).includes(`refused ${n}`)) wrong.push(`${n}: ${a.text.slice(0, 200)}`); }
    // A late call (n % 4 == 2) may get the answer the module sent with its id for another call
    // (n + 7, the next n % 4 == 1 after it): the module's word for its own call, which the host
    // cannot tell from a right one. Never a second answer, never another module's.
    else if (n % 4 === 2 && body.result?.swapped) { if (body.result.n !== undefined && body.result.n % 4 !== 1) wrong.push(`${n}: ${a.text.slice(0, 200)}`); else swapped++; }
    else if (body.result?.n !== n || body.result.again || body.result.swapped) wrong.push(`${n}: ${a.text.slice(0, 200)}`);
  }
  t.log(`${CALLS} calls answered in ${tookMs} ms; ${swapped} late calls got the answer the module sent with their id for another; wrong: ${wrong.length}; an error answer: ${answers[3]?.text.slice(0, 300)}`);
  t.deepEqual(wrong, [], "each call gets one answer the module gave with its id: its own, its error, or (a late one) the swapped one");
  // Nothing left waiting: the calls' invocations are all settled. A health check (every 500 ms
  // here) may be in flight at any one reading, so the count must reach 0, not be 0 at one
  // instant: at load 10 one reading 2 s after the calls found a health check on its way.
  await sleep(2000);
  await waitFor(() => pendingOf(h, "r24-answers") === 0, 10_000, "no invocation left waiting").catch(() => {});
  t.is(pendingOf(h, "r24-answers"), 0, "no invocation is left waiting");
  t.is(h.status("r24-answers")?.state, "running");
  t.is(h.status("r24-answers")?.restarts, 0, "the module runs on: wrong answers are its own loss");
  await canary.stop();
  watch.assertCanary(t);
  await watch.finish(t, 1);
});

test.serial("a native module whose requests carry arrays of 65,000 values of the wrong type (subscribe_events types of numbers, a report_metric value of strings, 4,000 labels of numbers), 4 rounds: each is refused invalid_params naming the first problems and how many more, and no turn of the host's loop takes over 60 ms of CPU for it", async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, []);
  await writeNodeNative(modulesDir, "r24-arrays", ARRAYS, ["subscribe_events", "report_metrics"]);
  const turns = watchTurns();
  t.teardown(() => turns.stop());
  const h = await startHost(t, {
    dir, modules: [],
    grants: { "r24-arrays": ["subscribe_events", "report_metrics"] },
    moduleLimits: { "r24-arrays": { data_volume: "scan" } },
    moduleConfigs: { "r24-arrays": { rounds: 4 } },
  });
  await h.waitForState("r24-arrays", "running", 60_000);
  turns.reset();
  const said = await h.waitForLog(/^invalid arrays$/, { source: "r24-arrays", timeoutMs: 60_000 });
  const longest = turns.reset();
  const seen = (said.fields?.["seen"] ?? []) as string[];
  for (const s of seen) t.log(s);
  t.log(`longest turn of the host's loop while they were checked: ${longest.toFixed(0)} ms of CPU`);
  t.is(seen.length, 3);
  for (const s of seen) t.regex(s, /: invalid_params \(/, "refused invalid_params");
  t.regex(seen[0] ?? "", /the first problem only: the parameters hold more than 1000 values, FULL_CHECK_MAX_VALUES/, "a large value's refusal says it names the first problem only");
  // The check of one request stops at its first problem when the value is large: a few ms of
  // CPU; 60 ms leaves room for the frame's decoding (charged and sliced elsewhere) and a loaded machine.
  t.true(longest < 60, `no turn over 60 ms of CPU (${longest.toFixed(0)} ms)`);
});
