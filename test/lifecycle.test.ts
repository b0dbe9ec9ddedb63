// The module lifecycle under faults, with real hosts, isolates and LevelDB: kill -9 at each
// step of load and reload, concurrent commands on one module, a load while a restart is
// pending, restarts whose start fails, quarantine (and `enable`) that survives a host restart,
// a hung start that must not hold up other modules, a host stall that must not get a healthy
// module killed, and a second host stopped before any module runs (test/host-locks.test.ts: run directories).

import test from "ava";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { GOOD_GRANTS, ROOT, sleep, startHost, type InlineModule, type TestHost } from "./helpers/host.ts";
import { call, RpcFailure } from "./helpers/rpc.ts";
import { KeyedQueue, LoopStallMeter, fairDeadline } from "../host/lifecycle.ts";
import { descendants } from "./helpers/procs.ts";

type Payload = Record<string, unknown>;

/** Waits are generous: on a loaded machine one module start can take tens of seconds. */
const LONG = 120_000;

/**
 * Counts its starts in its own storage; start number N throws when N is in `fail_on`, never
 * finishes when N is in `hang_on`. stop() never finishes when `hang_stop` is set.
 */
const FLAKY: InlineModule = {
  toml: `name = "flaky"\nversion = "0.1.0"\nentry_point = "index.ts"\ncapabilities = ["read_storage", "write_storage"]\n`,
  files: {
    "index.ts": `
import type { ModuleContext } from "modhost/sdk";
let context: ModuleContext | undefined;
export default async function start(ctx: ModuleContext): Promise<void> {
  context = ctx;
  await ctx.storage.openTree("t");
  const n = Number((await ctx.storage.get("t", "starts")) ?? 0) + 1;
  await ctx.storage.put("t", "starts", n);
  const cfg = ctx.config as { hang_on?: number[]; fail_on?: number[] };
  ctx.log.info("start " + n);
  if (cfg.fail_on?.includes(n)) throw new Error("start " + n + " fails on purpose");
  if (cfg.hang_on?.includes(n)) {
    ctx.log.info("hanging in start " + n);
    await new Promise(() => {});
  }
  ctx.log.info("running " + n);
}
export async function stop(reason: string): Promise<void> {
  context?.log.info("stopping: " + reason);
  if ((context?.config as { hang_stop?: boolean }).hang_stop) await new Promise(() => {});
}
`,
  },
};

const FLAKY_GRANTS = ["read_storage", "write_storage"];

/** A module that starts and does nothing else; `name` is its name. */
function quiet(name: string, deps: Record<string, string> = {}): InlineModule {
  const dependencies = Object.entries(deps).map(([d, r]) => `${d} = "${r}"`).join(", ");
  return {
    toml: `name = "${name}"\nversion = "1.0.0"\nentry_point = "index.ts"\ncapabilities = []\n${dependencies ? `dependencies = { ${dependencies} }\n` : ""}`,
    files: { "index.ts": `import type { ModuleContext } from "modhost/sdk";\nexport default function start(ctx: ModuleContext): void { ctx.log.info("${name} up"); }\n` },
  };
}

const HANGS_IN_START: InlineModule = {
  toml: `name = "hangs"\nversion = "0.1.0"\nentry_point = "index.ts"\ncapabilities = []\n`,
  files: { "index.ts": `export default function start(): Promise<void> { return new Promise(() => {}); }\n` },
};

function gone(pid: number | undefined): boolean {
  if (pid === undefined) return true;
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ESRCH";
  }
}

function eventsOf(h: TestHost, type: string, module: string) {
  return h.events.filter((e) => e.type === type && (e.payload as Payload).module === module);
}

function pidOf(h: TestHost, name: string): number {
  const pid = h.manager.processOf(name)?.pid;
  if (!pid) throw new Error(`${name} has no process`);
  return pid;
}

async function auditRecords(h: TestHost): Promise<Array<Record<string, any>>> {
  return (await readFile(h.config.host.audit_log, "utf8")).trim().split("\n").map((l) => JSON.parse(l));
}

// ---------------------------------------------------------------------------------------

test("kill -9 at each step of reload and load: every command ends cleanly, the store is never left locked, no ghost process", async (t) => {
  const h = await startHost(t, {
    inline: { flaky: FLAKY },
    grants: { flaky: FLAKY_GRANTS },
    moduleLimits: { flaky: { stop_timeout_ms: 30_000 } },
    // start 2: reload's new instance hangs; start 4: the restart after a crash hangs.
    moduleConfigs: { flaky: { hang_on: [2, 4], hang_stop: true } },
  });
  await h.waitForLog(/^running 1$/, { source: "flaky", timeoutMs: LONG });
  const pids: number[] = [pidOf(h, "flaky")];

  // 1. kill -9 while reload waits for stop() (which never finishes).
  const reload = h.manager.reload("flaky");
  reload.catch(() => undefined); // awaited below; must not count as unhandled if the test fails first
  await h.waitForLog(/^stopping: reload$/, { source: "flaky", timeoutMs: LONG });
  t.is(h.mustStatus("flaky").state, "stopping");
  process.kill(pids[0]!, "SIGKILL");
  // 2. ... then kill -9 the new instance while its start() hangs.
  await h.waitForLog(/^hanging in start 2$/, { source: "flaky", timeoutMs: LONG });
  t.is(h.mustStatus("flaky").state, "starting");
  pids.push(pidOf(h, "flaky"));
  process.kill(pids[1]!, "SIGKILL");
  const err = await t.throwsAsync(reload);
  t.regex(err!.message, /flaky failed to load: .*SIGKILL/);
  t.is(h.mustStatus("flaky").state, "failed");
  t.is(eventsOf(h, "ModuleCrashed", "flaky").length, 0, "a killed start is a failed load, not a crash");

  // 3. A load after the failure works: the failed instance's store was closed (no "lock held").
  const loaded = await h.manager.load("flaky");
  t.is(loaded.state, "running");
  await h.waitForLog(/^running 3$/, { source: "flaky", timeoutMs: LONG });
  pids.push(pidOf(h, "flaky"));

  // 4. kill -9 of the running module: a crash; the restart's start hangs and is killed too;
  //    the failed restart is retried per policy and the module comes back (start 5).
  process.kill(pids[2]!, "SIGKILL");
  await h.waitForLog(/^hanging in start 4$/, { source: "flaky", timeoutMs: LONG});
  pids.push(pidOf(h, "flaky"));
  process.kill(pids[3]!, "SIGKILL");
  await h.waitForLog(/^running 5$/, { source: "flaky", timeoutMs: LONG});
  await h.waitForState("flaky", "running", LONG);
  await h.waitForLog(/restart 2 of 3/, { source: "host", timeoutMs: LONG });
  t.truthy((await auditRecords(h)).find((r) => r.module === "flaky" && r.action === "restart_failed" && r.detail.will_restart === true));
  t.deepEqual(eventsOf(h, "ModuleRestarted", "flaky").map((e) => (e.payload as Payload).attempt), [2]);

  // Every earlier process is gone; only the current one runs.
  const current = pidOf(h, "flaky");
  t.false(pids.includes(current));
  for (const pid of pids) await h.waitFor(() => gone(pid), LONG, `pid ${pid} to be gone`);
  t.false(gone(current));

  // 5. unload while stop() hangs, with a kill -9 in the middle: stopped, nothing left running.
  const unload = h.manager.unload("flaky");
  await h.waitForLog(/^stopping: unloaded by the operator$/, { source: "flaky", timeoutMs: LONG });
  process.kill(current, "SIGKILL");
  await unload;
  t.is(h.mustStatus("flaky").state, "stopped");
  t.true(gone(current));
  t.is(h.mustStatus("flaky").pid, undefined);
});

test("a load during a pending restart replaces the restart: one instance, tracked, and unload stops it", async (t) => {
  const h = await startHost(t, { inline: { flaky: FLAKY }, grants: { flaky: FLAKY_GRANTS } });
  await h.waitForLog(/^running 1$/, { source: "flaky", timeoutMs: LONG });
  const first = pidOf(h, "flaky");
  // The moment the restart is scheduled (synchronously, in the exit handler), ask for a load.
  let load: Promise<unknown> | undefined;
  h.host.logger.addSink((r) => {
    if (!load && r.source === "host" && /^restarting flaky in \d+ ms/.test(r.message)) load = h.manager.load("flaky");
  });
  process.kill(first, "SIGKILL");
  await h.waitFor(() => load, LONG, "the load to be issued");
  const status = (await load) as { state: string; pid: number };
  t.is(status.state, "running");
  // Longer than the restart's backoff (250 ms): the cancelled restart must not start a ghost.
  await sleep(1500);
  t.is(h.mustStatus("flaky").pid, status.pid);
  t.deepEqual(eventsOf(h, "ModuleRestarted", "flaky"), [], "the restart was replaced by the load");
  t.is(h.logsOf("flaky").filter((r) => /^start \d+$/.test(r.message)).length, 2, "exactly two starts: the boot and the load");
  await h.manager.unload("flaky");
  t.is(h.mustStatus("flaky").state, "stopped");
  t.true(gone(status.pid));
  await sleep(500);
  t.is(h.logsOf("flaky").filter((r) => /^start \d+$/.test(r.message)).length, 2, "nothing started afterwards");
});

test("concurrent reloads of one module run one after another; a reload of another module is not held up", async (t) => {
  const h = await startHost(t, { modules: ["good"], inline: { flaky: FLAKY }, grants: { good: GOOD_GRANTS, flaky: FLAKY_GRANTS } });
  const before = pidOf(h, "flaky");
  const results = await Promise.allSettled([h.manager.reload("flaky"), h.manager.reload("flaky"), h.manager.reload("flaky"), h.manager.reload("good")]);
  for (const r of results) t.is(r.status, "fulfilled", r.status === "rejected" ? String(r.reason) : "");
  t.is(h.mustStatus("flaky").state, "running");
  t.is(h.mustStatus("good").state, "running");
  await h.waitForLog(/^running 4$/, { source: "flaky", timeoutMs: LONG });
  t.is(eventsOf(h, "ModuleLoaded", "flaky").length, 4);
  t.is(eventsOf(h, "ModuleUnloaded", "flaky").length, 3);
  t.true(gone(before));
  t.falsy(h.records.find((r) => /storage is not open|storage is closed|lock/i.test(r.message)), "no storage errors");
  // Storage still works in the current instance (its start read and wrote it: running 4).
  const height = await h.mine(1);
  await h.waitForLog(new RegExp(`^stored block ${height}$`), { source: "good", timeoutMs: LONG });
});

test("a crash-looping module is quarantined (log, audit, list, ModuleCrashed); the quarantine survives a host restart; enable brings it back", async (t) => {
  const limits = { quarantine_after: 3, max_restarts: 10 };
  const h = await startHost(t, { modules: ["good"], inline: { flaky: FLAKY }, grants: { good: GOOD_GRANTS, flaky: FLAKY_GRANTS }, moduleLimits: { flaky: limits } });
  for (let i = 1; i <= 3; i++) {
    await h.waitForLog(new RegExp(`^running ${i}$`), { source: "flaky", timeoutMs: LONG });
    await h.waitForState("flaky", "running", LONG);
    process.kill(pidOf(h, "flaky"), "SIGKILL");
    await h.waitFor(() => eventsOf(h, "ModuleCrashed", "flaky").length === i, LONG, `crash ${i}`);
  }
  const s = await h.waitForState("flaky", "quarantined", LONG);
  t.regex(s.problem ?? "", /after 3 failures.*modhost enable flaky/);
  const crashes = eventsOf(h, "ModuleCrashed", "flaky").map((e) => e.payload as Payload);
  t.like(crashes[2], { will_restart: false, quarantined: true });
  t.like(crashes[0], { will_restart: true, quarantined: false });
  await h.waitForLog(/^flaky quarantined: /, { source: "host", timeoutMs: LONG });
  t.truthy((await auditRecords(h)).find((r) => r.module === "flaky" && r.action === "quarantine"));
  // Listed as quarantined over RPC; a load is refused, naming the way out.
  const list = (await call(h, "list")) as Array<{ name: string; state: string; problem?: string }>;
  t.is(list.find((m) => m.name === "flaky")?.state, "quarantined");
  const refused = await t.throwsAsync(call(h, "load", { module: "flaky" }));
  t.true(refused instanceof RpcFailure);
  t.regex(refused!.message, /quarantined/);
  await sleep(800);
  t.is(h.logsOf("flaky").filter((r) => /^start \d+$/.test(r.message)).length, 3, "not started again");
  t.is(h.mustStatus("good").state, "running");
  await h.stop();

  // A new host on the same data directory: flaky stays down, everything else boots.
  const h2 = await startHost(t, { dir: h.dir, modules: ["good"], inline: { flaky: FLAKY }, grants: { good: GOOD_GRANTS, flaky: FLAKY_GRANTS }, moduleLimits: { flaky: limits } });
  t.is(h2.mustStatus("flaky").state, "quarantined");
  t.is(h2.manager.processOf("flaky"), undefined);
  t.is(h2.mustStatus("good").state, "running");
  t.deepEqual((await h2.waitForEvent("NodeStartupCompleted")).payload, { modules: ["good"] });
  await h2.waitForLog(/^not loading flaky: quarantined since /, { source: "host", timeoutMs: LONG });

  // The operator lifts it: it loads, its failures are forgotten.
  const enabled = await call(h2, "enable", { module: "flaky" });
  t.is(enabled.state, "running");
  await h2.waitForLog(/^running 4$/, { source: "flaky", timeoutMs: LONG });
  t.truthy((await auditRecords(h2)).find((r) => r.module === "flaky" && r.action === "enable"));
  const again = await t.throwsAsync(call(h2, "enable", { module: "flaky" }));
  t.regex(again!.message, /not quarantined \(it is running\)/);
  const state = JSON.parse(await readFile(path.join(h2.config.modules.data_dir, ".modhost-lifecycle.json"), "utf8"));
  t.deepEqual(state.modules.flaky, { failures: [] });
});

test("CLI: modhost list shows a quarantined module with the way out; modhost enable lifts it", async (t) => {
  const h = await startHost(t, { inline: { flaky: FLAKY }, grants: { flaky: FLAKY_GRANTS }, moduleLimits: { flaky: { quarantine_after: 1 } } });
  await h.waitForLog(/^running 1$/, { source: "flaky", timeoutMs: LONG });
  process.kill(pidOf(h, "flaky"), "SIGKILL");
  await h.waitForState("flaky", "quarantined", LONG);
  // A config file that points the CLI at this host's port and cookie.
  const file = path.join(h.dir, "cli.toml");
  await writeFile(file, `[rpc]\nport = ${h.host.rpcServer!.address!.port}\ncookie_file = ${JSON.stringify(h.config.rpc.cookie_file)}\n`);
  const modhost = (...args: string[]) => promisify(execFile)(process.execPath, [path.join(ROOT, "bin/modhost.js"), ...args, "--config", file], { cwd: ROOT, timeout: LONG });
  const list = await modhost("list");
  t.regex(list.stdout, /^flaky\s+0\.1\.0\s+isolate\s+\S+\s+quarantined\s+-\s+\d+\s+\d+(\.\d+)? \S+\/\d+(\.\d+)? \S+\s+\d+\/\d+$/m);
  t.regex(list.stdout, /^ {4}quarantined since .* after 1 failures .*modhost enable flaky$/m);
  const enabled = await modhost("enable", "flaky");
  t.regex(enabled.stdout, /^enabled and loaded flaky 0\.1\.0 \(running, pid \d+\)$/m);
  t.is(h.mustStatus("flaky").state, "running");
  const operator = (await auditRecords(h)).filter((r) => r.module === "operator" && r.action === "enable");
  t.like(operator[0], { detail: { target: "flaky", ok: true } });
});

test("a start that keeps failing after a crash is retried per policy, then given up on; an important module then stops the host", async (t) => {
  const h = await startHost(t, {
    inline: { flaky: FLAKY },
    grants: { flaky: FLAKY_GRANTS },
    moduleLimits: { flaky: { max_restarts: 2, quarantine_after: 0, important: true } },
    moduleConfigs: { flaky: { fail_on: [2, 3, 4] } },
  });
  await h.waitForLog(/^running 1$/, { source: "flaky", timeoutMs: LONG });
  process.kill(pidOf(h, "flaky"), "SIGKILL");
  const s = await h.waitForState("flaky", "failed", LONG);
  t.regex(s.problem ?? "", /start failed: .*start 3 fails on purpose.*gave up after 2 restarts/);
  t.is(h.logsOf("flaky").filter((r) => /^start \d+$/.test(r.message)).length, 3, "the boot and two restarts");
  await h.waitForLog(/flaky is marked important and is not coming back: stopping the host/, { source: "host", timeoutMs: LONG });
  await h.host.stopped;
  t.is(h.host.exitCode, 1);
});

test("a module whose start() hangs does not delay the others, even those after it in load order; unload cancels the hung start", async (t) => {
  const h = await startHost(t, {
    inline: { hangs: HANGS_IN_START, "quick-a": quiet("quick-a"), "quick-b": quiet("quick-b"), "after-a": quiet("after-a", { "quick-a": "^1.0.0" }) },
    // Far longer than the test: the others must not wait for it, and unload must not either.
    moduleLimits: { hangs: { start_timeout_ms: 600_000 } },
    configure: (c) => (c.modules.start_concurrency = 2),
    noStart: true,
  });
  const starting = h.host.start();
  await h.waitFor(() => h.host.manager, LONG, "the manager");
  // Both quick modules and the one depending on quick-a run while hangs is still starting.
  for (const name of ["quick-a", "quick-b", "after-a"]) await h.waitForState(name, "running", LONG);
  t.is(h.mustStatus("hangs").state, "starting");
  t.deepEqual(h.manager.levels(), [["hangs", "quick-a", "quick-b"], ["after-a"]]);
  // The operator gives up on it: the start is cancelled, its process ended, start-up completes.
  const pid = h.manager.processOf("hangs")?.pid;
  await h.manager.unload("hangs");
  await starting;
  const s = h.mustStatus("hangs");
  t.is(s.state, "stopped");
  t.regex(s.problem ?? "", /start cancelled: unloaded by the operator/);
  await h.waitFor(() => gone(pid), LONG, "the hung process to be gone");
  // The event bus delivers in its own turns (under load, after start() has returned): wait for it.
  const completed = await h.waitForEvent("NodeStartupCompleted");
  t.deepEqual([...(completed.payload as { modules: string[] }).modules].sort(), ["after-a", "quick-a", "quick-b"]);
  t.falsy(h.records.find((r) => r.message.startsWith("failed to load hangs")), "a cancelled start is not a failure");
});

test("a host stopped while a module's start hangs stops at once, without waiting for start_timeout_ms", async (t) => {
  const h = await startHost(t, { inline: { hangs: HANGS_IN_START }, moduleLimits: { hangs: { start_timeout_ms: 600_000 } }, noStart: true });
  const starting = h.host.start();
  await h.waitFor(() => h.host.manager && h.status("hangs")?.state === "starting" && h.manager.processOf("hangs"), LONG, "hangs to be starting");
  await h.stop();
  await starting;
  t.is(h.mustStatus("hangs").state, "stopped");
  t.regex(h.mustStatus("hangs").problem ?? "", /start cancelled: host shutdown/);
});

test("shutdown stops dependants before what they depend on, and a hung stop() does not hold up its level", async (t) => {
  const h = await startHost(t, {
    modules: ["stop-hangs"],
    inline: { base: quiet("base"), user: quiet("user", { base: "^1.0.0" }) },
    moduleLimits: { "stop-hangs": { stop_timeout_ms: 4000, cpu_time_ms: 10_000 } },
  });
  await h.stop();
  // From the host's log, written as each unload ends: the bus's ModuleUnloaded events are
  // delivered in the bus's own turns, and the last of a shutdown may not have reached the test's
  // recorder when the host's stop returns.
  const unloaded = h.logsOf("host").flatMap((r) => /^unloaded (\S+)$/.exec(r.message)?.[1] ?? []);
  t.deepEqual(unloaded, ["user", "base", "stop-hangs"], "user (level 1) first; base unloaded while stop-hangs still waits");
  for (const name of ["user", "base", "stop-hangs"]) t.is(h.mustStatus(name).state, "stopped");
});

test("a host stall longer than health_timeout_ms does not get a healthy module killed", async (t) => {
  const h = await startHost(t, {
    inline: { flaky: FLAKY },
    grants: { flaky: FLAKY_GRANTS },
    moduleLimits: { flaky: { health_interval_ms: 200, health_timeout_ms: 300 } },
  });
  await h.waitForLog(/^running 1$/, { source: "flaky", timeoutMs: LONG });
  const proc = h.manager.processOf("flaky")!;
  const session = proc.session;
  // Block the host's loop right after each health probe is sent: the module answers at once,
  // but the host cannot read the answer until the stall is over.
  // The first stall starts before the probe's deadline is armed, the others while it runs.
  const original = session.invoke.bind(session);
  let stalls = 0;
  const stall = () => {
    stalls++;
    const until = Date.now() + 1200;
    while (Date.now() < until) { /* the host is busy */ }
  };
  session.invoke = (...args: Parameters<typeof original>) => {
    const p = original(...args);
    if (args[0] === "health" && stalls < 3) {
      if (stalls === 0) stall();
      else setTimeout(stall, 20);
    }
    return p;
  };
  await h.waitFor(() => stalls === 3, LONG, "three stalls");
  await sleep(1000);
  t.is(eventsOf(h, "ModuleCrashed", "flaky").length, 0, h.tail());
  t.false(proc.hasExited);
  t.is(h.mustStatus("flaky").state, "running");
  t.falsy(h.records.find((r) => /unresponsive/.test(r.message)));
});

test("an unresponsive module is still killed by the fair health check", async (t) => {
  // SIGSTOP freezes the isolate host: no answer will ever come.
  const h = await startHost(t, {
    inline: { flaky: FLAKY },
    grants: { flaky: FLAKY_GRANTS },
    moduleLimits: { flaky: { health_interval_ms: 200, health_timeout_ms: 300, restart: "never" } },
  });
  await h.waitForLog(/^running 1$/, { source: "flaky", timeoutMs: LONG });
  const proc = h.manager.processOf("flaky")!;
  // The sandbox puts the isolate host in a session of its own: stop every descendant.
  const frozen = [proc.pid!, ...(await descendants(proc.pid!))];
  for (const pid of frozen) process.kill(pid, "SIGSTOP");
  t.teardown(() => {
    for (const pid of frozen) {
      try { process.kill(pid, "SIGKILL"); } catch { /* gone */ }
    }
  });
  const crash = await h.waitForEvent("ModuleCrashed", (p) => p.module === "flaky", { timeoutMs: LONG });
  t.regex(String((crash.payload as Payload).error), /unresponsive: no answer to a health check within 300 ms \(health_timeout_ms\)/);
});

test("a second host on the same config stops at the data directories' host lock, one on other directories at the taken RPC port, both before any module starts", async (t) => {
  const h = await startHost(t, { inline: { flaky: FLAKY }, grants: { flaky: FLAKY_GRANTS } });
  await h.waitForLog(/^running 1$/, { source: "flaky", timeoutMs: LONG });
  const port = h.host.rpcServer!.address!.port;
  const h2 = await startHost(t, {
    dir: h.dir, inline: { flaky: FLAKY }, grants: { flaky: FLAKY_GRANTS }, noStart: true,
    configure: (c) => (c.rpc.port = port),
  });
  const err = await t.throwsAsync(h2.host.start());
  t.regex(err!.message, /another modhost is running on .*data\/storage \(it holds .*\.modhost-host\.lock\)/);
  t.deepEqual(h2.logsOf("flaky"), [], "the second host ran none of the module's code");
  t.falsy(h2.records.find((r) => /^loaded /.test(r.message)));
  // On directories of its own but the same port: it stops at the port, again before any module.
  const h3 = await startHost(t, { inline: { flaky: FLAKY }, grants: { flaky: FLAKY_GRANTS }, noStart: true, configure: (c) => (c.rpc.port = port) });
  const portErr = await t.throwsAsync(h3.host.start());
  t.regex(portErr!.message, /the RPC server cannot start: .* is in use/);
  t.deepEqual(h3.logsOf("flaky"), [], "the host on the taken port ran none of the module's code");
  // The first host and its module are untouched.
  t.is(h.mustStatus("flaky").state, "running");
});

test("KeyedQueue: one key's tasks run in order, a failure does not block the next, other keys run meanwhile", async (t) => {
  const q = new KeyedQueue();
  const order: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const a1 = q.run("a", async () => { await gate; order.push("a1"); });
  const a2 = q.run("a", async () => { order.push("a2"); throw new Error("a2 fails"); });
  const a3 = q.run("a", async () => { order.push("a3"); return 3; });
  const b1 = q.run("b", async () => { order.push("b1"); });
  await b1;
  t.deepEqual(order, ["b1"], "b ran while a was blocked");
  release();
  await a1;
  await t.throwsAsync(a2, { message: "a2 fails" });
  t.is(await a3, 3);
  t.deepEqual(order, ["b1", "a1", "a2", "a3"]);
});

test("fairDeadline: a stall of the host's own loop extends the deadline; without a stall it expires", async (t) => {
  const meter = new LoopStallMeter(50, 10);
  t.teardown(() => meter.close());
  // No stall, never done: expires.
  t.false(await fairDeadline(100, meter, () => false));
  // The host stalls for 600 ms right after the wait began; the "answer" is ready 50 ms after the stall.
  let done = false;
  const wait = fairDeadline(200, meter, () => done);
  setTimeout(() => {
    const until = Date.now() + 600;
    while (Date.now() < until) { /* stall */ }
    setTimeout(() => (done = true), 50);
  }, 10);
  t.true(await wait, "the deadline was extended by the stall");
});

test("config: start_concurrency and the quarantine limits are read and checked", async (t) => {
  const { parseConfig } = await import("../host/config.ts");
  const { ConfigError } = await import("../host/errors.ts");
  const toml = "[modules]\nstart_concurrency = 3\n[modules.default_limits]\nquarantine_after = 2\n[modules.limits.x]\nquarantine_window_ms = 1000\n";
  const c = parseConfig({ modules: { start_concurrency: 3, default_limits: { quarantine_after: 2 }, limits: { x: { quarantine_window_ms: 1000 } } } }, toml, "/tmp/modhost.toml");
  t.is(c.modules.start_concurrency, 3);
  t.is(c.modules.default_limits.quarantine_after, 2);
  t.is(c.modules.limits["x"]?.quarantine_window_ms, 1000);
  const bad = "[modules]\nstart_concurrency = -1\n[modules.default_limits]\nquarantine_window_ms = 0\n";
  const err = t.throws(() => parseConfig({ modules: { start_concurrency: -1, default_limits: { quarantine_window_ms: 0 } } }, bad, "/tmp/modhost.toml"), { instanceOf: ConfigError });
  t.regex(err!.message, /start_concurrency/);
  t.regex(err!.message, /quarantine_window_ms/);
});
