// Pre-booted isolate hosts ([host] isolate_pool, runtime/isolate/pool.ts): a start after the
// pool has filled takes a warm process (the "loaded" log line says isolate_pool=warm), the pool
// refills after a take, a pool process that dies while it waits is replaced, isolate_pool = 0
// starts every module fresh, and a pooled isolate host is confined as a fresh one is: its own
// single-use uid (never the uid of the module's name, never another pool process's), no
// capabilities, no_new_privs, seccomp, the same rlimits, the module's cgroup. A pooled process
// handed one module cannot speak for another: the host's session for a module refuses a hello
// that names any other. Needs root and bubblewrap for the confinement checks, as
// test/isolate-sandbox.test.ts does.

import test, { type ExecutionContext } from "ava";
import { existsSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { IsolatePool } from "../runtime/isolate/pool.ts";
import { isolateHostScript, poolProfile, pooledIsolateSandbox } from "../runtime/isolate/runtime.ts";
import { sandboxSpawnSpec } from "../runtime/sandbox/index.ts";
import { spawn } from "node:child_process";
import type { Socket } from "node:net";
import { PAYLOAD } from "./helpers/isolate-payload.ts";
import { detectSandbox, UID_TABLE_FILE, UidTable } from "../runtime/sandbox/index.ts";
import { SINGLE_USE_UID_BASE } from "../runtime/sandbox/uids.ts";
import { MODULE_UID_BASE, MODULE_UID_RANGE } from "../runtime/sandbox/policy.ts";
import { adoptModule } from "../host/session.ts";
import { moduleScope } from "../runtime/process.ts";
import { DEFAULT_LIMITS } from "../host/config.ts";
import { GOOD_GRANTS, startHost, tempDir, type TestHost, type TestHostOptions } from "./helpers/host.ts";
import { field, goodAs, sandboxedNode } from "./helpers/sandboxed.ts";
import type { LogRecord } from "../host/log.ts";

const caps = await detectSandbox();
const confined = caps.best === "full" && caps.root;


/** What the kernel says about a module's isolate host: uid, capabilities, no_new_privs, seccomp, rlimits, cgroups. */
async function confinement(pid: number) {
  const node = await sandboxedNode(pid);
  const status = await readFile(`/proc/${node}/status`, "utf8");
  return {
    uid: Number(field(status, "Uid")!.split(/\s+/)[0]),
    capEff: field(status, "CapEff"),
    capBnd: field(status, "CapBnd"),
    noNewPrivs: field(status, "NoNewPrivs"),
    seccomp: field(status, "Seccomp"),
    limits: await readFile(`/proc/${node}/limits`, "utf8"),
    cgroup: await readFile(`/proc/${node}/cgroup`, "utf8"),
    cmdline: (await readFile(`/proc/${node}/cmdline`, "utf8")).split("\0"),
    environ: (await readFile(`/proc/${node}/environ`, "utf8")).split("\0").filter(Boolean),
  };
}

/** A test host with the product's pool (test hosts have none: see testing/index.ts testHostConfig). */
function poolHost(t: ExecutionContext, opts: TestHostOptions): Promise<TestHost> {
  return startHost(t, {
    ...opts,
    configure: (c) => {
      c.host.isolate_pool = 1;
      opts.configure?.(c);
    },
  });
}

function loadedLines(h: TestHost, name: string, since = 0): LogRecord[] {
  return h.records.slice(since).filter((r) => r.source === "host" && r.message.startsWith(`loaded ${name} `));
}

/** The pool has `n` processes waiting. */
async function poolWaiting(h: TestHost, n = 1): Promise<number[]> {
  return h.waitFor(() => {
    const w = h.manager.poolStats()?.waiting ?? [];
    return w.length >= n ? w : undefined;
  }, 60_000, `${n} pooled isolate host(s) waiting`);
}

test("a reload takes a pre-booted isolate host (isolate_pool=warm in the log), the module works in it, and the pool refills", async (t) => {
  const h = await poolHost(t, { inline: { "pool-a": await goodAs("pool-a") }, grants: { "pool-a": GOOD_GRANTS } });
  await h.waitForState("pool-a", "running", 60_000);
  t.is(loadedLines(h, "pool-a")[0]?.fields?.isolate_pool, "cold", "the first start finds the pool empty");
  const [waiting] = await poolWaiting(h);
  const mark = h.mark();
  await h.manager.reload("pool-a");
  t.is(h.mustStatus("pool-a").state, "running");
  t.is(loadedLines(h, "pool-a", mark)[0]?.fields?.isolate_pool, "warm");
  t.is(h.mustStatus("pool-a").pid, waiting, "the module runs in the process that waited in the pool");
  // It works: the fixture answers on new blocks as before.
  const blocks = h.mark();
  await h.mine(1);
  await h.waitForLog(/block/i, { source: "pool-a", since: blocks, timeoutMs: 20_000 });
  const [next] = await poolWaiting(h);
  t.not(next, waiting, "a new pool process replaced the one taken");
  t.is(h.manager.poolStats()?.taken, 1);
});

test("isolate_pool = 0: no pool process is booted and every start is cold", async (t) => {
  const h = await poolHost(t, { inline: { "pool-off": await goodAs("pool-off") }, grants: { "pool-off": GOOD_GRANTS }, configure: (c) => (c.host.isolate_pool = 0) });
  await h.waitForState("pool-off", "running", 60_000);
  await h.manager.reload("pool-off");
  t.deepEqual(loadedLines(h, "pool-off").map((r) => r.fields?.isolate_pool), ["cold", "cold"]);
  t.is(h.manager.poolStats(), undefined, "no pool was made");
});

test("a pool process that dies while it waits is replaced", async (t) => {
  const h = await poolHost(t, { inline: { "pool-d": await goodAs("pool-d") }, grants: { "pool-d": GOOD_GRANTS } });
  await h.waitForState("pool-d", "running", 60_000);
  const [first] = await poolWaiting(h);
  process.kill(first!, "SIGKILL");
  const [second] = await h.waitFor(() => {
    const w = h.manager.poolStats()?.waiting ?? [];
    return w.length === 1 && w[0] !== first ? w : undefined;
  }, 60_000, "a replacement pool process");
  t.not(second, first);
  t.is(h.manager.poolStats()?.diedWaiting, 1);
  await h.waitForLog(/pooled isolate host \(uid \d+\) exited while it waited .*starting a replacement/, { source: "host" });
  // And the replacement serves the next start.
  const mark = h.mark();
  await h.manager.reload("pool-d");
  t.is(loadedLines(h, "pool-d", mark)[0]?.fields?.isolate_pool, "warm");
});

(confined ? test : test.skip)("a pooled isolate host is confined as a fresh one: a single-use uid of its own, no capabilities, no_new_privs, seccomp, the same rlimits, the module's cgroup, nothing of its module before hand-over", async (t) => {
  const h = await poolHost(t, {
    inline: { "pool-c1": await goodAs("pool-c1"), "pool-c2": await goodAs("pool-c2") },
    grants: { "pool-c1": GOOD_GRANTS, "pool-c2": GOOD_GRANTS },
  });
  await h.waitForState("pool-c1", "running", 60_000);
  await h.waitForState("pool-c2", "running", 60_000);
  const fresh = await confinement(h.mustStatus("pool-c1").pid!);
  const table = await UidTable.open(path.join(h.config.modules.data_dir, UID_TABLE_FILE));
  t.is(fresh.uid, table.get("pool-c1") ?? -1, "a fresh start runs under the uid of the module's name");

  // A waiting pool process: sandboxed already, and nothing of any module in it.
  const [waiting] = await poolWaiting(h);
  const idle = await confinement(waiting!);
  t.true(idle.cmdline.includes("--pool"));
  t.false(idle.cmdline.some((a) => a.includes("pool-c")), "no module name in its arguments");
  t.false(idle.cmdline.includes("--bundle"), "no bundle bound or named");
  t.false(idle.environ.some((e) => /^MODULE_|^DATA_DIR=/.test(e)), `no module environment: ${idle.environ.join(" ")}`);
  t.regex(idle.cgroup, /isolate-pool-\d+/, "it waits in a cgroup of its own");
  // Its pool cgroup's directories (v1: /sys/fs/cgroup/<controller>/<path>), removed once it is handed over.
  const poolDirs = idle.cgroup.split("\n").flatMap((line) => {
    const m = /^\d+:([^:]*):(\/.*isolate-pool-\d+)$/.exec(line);
    return m ? [path.join("/sys/fs/cgroup", m[1] || "", m[2]!)] : [];
  }).filter((d) => existsSync(d));
  t.true(poolDirs.length > 0, `the pool cgroup's directories are found: ${idle.cgroup}`);

  await h.manager.reload("pool-c1");
  const warm1 = await confinement(h.mustStatus("pool-c1").pid!);
  for (let i = 0; i < 100 && poolDirs.some((d) => existsSync(d)); i++) await new Promise((r) => setTimeout(r, 50));
  t.deepEqual(poolDirs.filter((d) => existsSync(d)), [], "the emptied pool cgroup is removed after the hand-over");
  await poolWaiting(h);
  await h.manager.reload("pool-c2");
  const warm2 = await confinement(h.mustStatus("pool-c2").pid!);
  t.is(loadedLines(h, "pool-c2").at(-1)?.fields?.isolate_pool, "warm");

  for (const [what, c] of [["pool-c1 pooled", warm1], ["pool-c2 pooled", warm2]] as const) {
    t.true(c.uid >= SINGLE_USE_UID_BASE && c.uid < SINGLE_USE_UID_BASE + MODULE_UID_RANGE, `${what}: a single-use uid (${c.uid})`);
    t.false(c.uid >= MODULE_UID_BASE && c.uid < MODULE_UID_BASE + MODULE_UID_RANGE, `${what}: never a module name's uid`);
    t.is(c.capEff, fresh.capEff, `${what}: effective capabilities as fresh`);
    t.is(c.capEff, "0000000000000000");
    t.is(c.capBnd, fresh.capBnd);
    t.is(c.noNewPrivs, "1");
    t.is(c.seccomp, fresh.seccomp);
    t.is(c.seccomp, "2", `${what}: a seccomp filter`);
    t.is(c.limits, fresh.limits, `${what}: the rlimits of a fresh isolate host`);
    t.notRegex(c.cgroup, /isolate-pool/, `${what}: no longer in the pool's cgroup`);
  }
  t.regex(warm1.cgroup, /pool-c1-\d+/, "moved into its module's cgroup");
  t.regex(warm2.cgroup, /pool-c2-\d+/);
  t.not(warm1.uid, warm2.uid, "each pooled process has a uid of its own");
  t.not(warm1.uid, fresh.uid, "not the uid it had when started fresh");
  const again = await UidTable.open(path.join(h.config.modules.data_dir, UID_TABLE_FILE));
  t.false(again.entries().some(([, uid]) => uid === warm1.uid || uid === warm2.uid), "no module name was ever given a pool uid");
});

test("a start that finds the pool's refill of its profile still on its way waits for it READY_WAIT_MS in all, then starts fresh (before: until the refill had booted, up to its own deadline of 60 s; a refill stuck before its spawn held the start for good)", async (t) => {
  const log = { info: () => {}, warn: () => {}, error: () => {} };
  let giveUp!: (err: Error) => void;
  // The refill never gets its uid: it stays before its spawn until the test ends.
  const stuck = new Promise<number>((_, reject) => (giveUp = reject));
  const pool = new IsolatePool({ size: 1, freshUid: () => stuck, log, output: { log: () => {} } });
  t.teardown(async () => {
    giveUp(new Error("test over"));
    await pool.close();
  });
  const limits = { ...DEFAULT_LIMITS };
  const profile = poolProfile(limits, "off");
  pool.fill(profile);
  const started = Date.now();
  const taken = await pool.take(profile, { name: "pool-w", version: "1.0.0", dir: "/nonexistent", entry_point: "index.ts", runtime: "isolate" } as never, "", limits);
  const waited = Date.now() - started;
  t.is(taken, undefined, "no pool process: the start goes on fresh");
  t.is(pool.stats.missed, 1);
  t.true(waited >= 9_000 && waited < 20_000, `waited ${waited} ms for the refill (READY_WAIT_MS is 10 s)`);
});

test("a pooled isolate host handed one module cannot speak for another: the host's session for a module refuses a hello naming any other, and its input is attributed to the module that adopted it", async (t) => {
  const h = await poolHost(t, { inline: { "pool-i": await goodAs("pool-i") }, grants: { "pool-i": GOOD_GRANTS }, configure: (c) => (c.host.isolate_pool = 0) });
  await h.waitForState("pool-i", "running", 60_000);
  const dir = await tempDir(t, "modhost-pool-");
  const table = await UidTable.open(path.join(dir, UID_TABLE_FILE));
  const log = h.host.logger.for("host");
  const pool = new IsolatePool({ size: 1, freshUid: () => table.freshUid(), log, output: h.host.logger.module("isolate-pool") });
  t.teardown(() => pool.close());
  const limits = { ...DEFAULT_LIMITS, ...h.config.modules.default_limits };
  const profile = poolProfile(limits, h.config.modules.sandbox);
  // Set off from some other module's scope (as a refill after its exit would be).
  moduleScope.run("other", () => pool.fill(profile));
  await h.waitFor(() => pool.waiting().length === 1, 60_000, "the pool process");
  // The pool process is handed "mallory" (as if it claimed that identity) on the channel the
  // host serves as "pool-i": the session must refuse it.
  const bundle = "export default async function start() {}";
  const taken = await pool.take(profile, { name: "mallory", version: "1.0.0", dir, entry_point: "index.ts", runtime: "isolate" } as never, bundle, limits);
  t.truthy(taken, "a pool process was taken");
  const proc = adoptModule(taken!.started, {
    module: "pool-i",
    grants: { effective: new Map(), missing: [] } as never,
    hub: h.manager.hub,
    bus: h.host.bus,
    logger: h.host.logger,
    call: { module: "pool-i", chain: h.chain, store: undefined, config: {}, dataDir: dir },
  }, h.host.logger);
  t.teardown(() => proc.kill());
  const scopes: (string | undefined)[] = [];
  taken!.started.channel.on("message", () => scopes.push(moduleScope.getStore()));
  const err = await proc.session.ready.then(() => undefined, (e: Error) => e);
  t.regex(String(err?.message ?? proc.session.closeError?.message), /this channel belongs to module "pool-i", not "mallory"/);
  t.false(proc.session.isOpen);
  t.deepEqual(scopes, ["pool-i"], "what it sent is handled in the scope of the module that adopted it (the last-resort handler's attribution), not the one that set off its boot");
  await taken!.sandboxed.release();
});


(confined ? test : test.skip)("an escaped pooled isolate host (a payload under the pool's policy) finds no other module's bundle, cannot see or signal the pool process waiting next to it, and has a uid of its own", async (t) => {
  const h = await poolHost(t, { inline: { "pool-x": await goodAs("pool-x") }, grants: { "pool-x": GOOD_GRANTS } });
  await h.waitForState("pool-x", "running", 60_000);
  const [waiting] = await poolWaiting(h);
  const neighbour = await confinement(waiting!);
  const neighbourNode = await sandboxedNode(waiting!);
  // The running module's bundle, in the host's run directory (where a fresh start binds it from).
  const bundle = (await readFile(`/proc/${await sandboxedNode(h.mustStatus("pool-x").pid!)}/cmdline`, "utf8")).split("\0").find((a) => a.endsWith(".js") && a.includes("pool-x"));
  t.truthy(bundle, "the fresh start's bundle path");
  const table = await UidTable.open(path.join(h.config.modules.data_dir, UID_TABLE_FILE));
  const uid = await table.freshUid();
  const limits = { ...DEFAULT_LIMITS, ...h.config.modules.default_limits };
  const { spec, policy } = await pooledIsolateSandbox(poolProfile(limits, "full"), uid);
  const script = spec.args.indexOf(await isolateHostScript());
  const input = {
    read: [bundle!, h.config.modules.modules_dir, path.join(h.config.modules.data_dir, UID_TABLE_FILE), "/etc/shadow"],
    write: ["/usr/pwned", "/tmp/pool-pwned"],
    list: [],
    hostPid: neighbourNode,
    port: 1,
    ivm: (await import("node:module")).createRequire(import.meta.url).resolve("isolated-vm"),
    msgpackr: (await import("node:module")).createRequire(import.meta.url).resolve("msgpackr"),
  };
  const sandboxed = await sandboxSpawnSpec(
    { ...spec, args: [...spec.args.slice(0, script), PAYLOAD, "probe", JSON.stringify(input)] },
    { ...policy, readOnly: [...(policy.readOnly ?? []), PAYLOAD] },
  );
  t.teardown(() => sandboxed.release());
  t.is(sandboxed.level, "full");
  const child = spawn(sandboxed.spec.command, sandboxed.spec.args, { cwd: sandboxed.spec.cwd, env: sandboxed.spec.env, stdio: ["ignore", "pipe", "pipe", "pipe"], detached: true });
  (child.stdio[3] as Socket).on("error", () => undefined);
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  await new Promise((resolve) => child.on("close", resolve));
  clearTimeout(timer);
  const line = stdout.split("\n").find((l) => l.startsWith("RESULT "));
  if (!line) throw new Error(`no result: ${stdout}\n${stderr}`);
  const result = JSON.parse(line.slice(7)) as Record<string, any>;
  t.is(result.uid, uid);
  t.not(result.uid, neighbour.uid, "not the uid of the pool process next to it");
  t.is(result.status.CapEff, "0000000000000000");
  t.is(result.status.Seccomp, "2");
  t.is(result.kill, "ESRCH", "the pool process waiting next to it is in another PID namespace");
  t.deepEqual(result.pids, [1, 2], "bubblewrap's init and itself, nothing else");
  for (const p of input.read) t.is(result.read[p], "ENOENT", p);
  t.is(result.write["/usr/pwned"], "EROFS");
  t.is(result.write["/tmp/pool-pwned"], "ok", "a private tmpfs");
  t.is(result.connect, "EPERM", "no network");
  // The neighbour is unharmed and still serves the next start.
  const mark = h.mark();
  await h.manager.reload("pool-x");
  t.is(loadedLines(h, "pool-x", mark)[0]?.fields?.isolate_pool, "warm");
  t.is(h.mustStatus("pool-x").pid, waiting);
});

test("single-use uids: never handed out twice, also after the table is reopened, never a name's, and names never get one", async (t) => {
  const dir = await tempDir(t, "modhost-uids-");
  const file = path.join(dir, UID_TABLE_FILE);
  const table = await UidTable.open(file);
  const named = await table.uidFor("alpha");
  const first = await Promise.all([table.freshUid(), table.freshUid(), table.freshUid()]);
  t.is(new Set(first).size, 3, "three concurrent calls, three uids");
  const again = await UidTable.open(file);
  const later = [await again.freshUid(), await again.freshUid()];
  const all = [...first, ...later];
  t.is(new Set(all).size, 5, `never the same uid twice across a reopen: ${all.join(", ")}`);
  for (const uid of all) {
    t.true(uid >= SINGLE_USE_UID_BASE && uid < SINGLE_USE_UID_BASE + MODULE_UID_RANGE, String(uid));
    t.false(uid >= MODULE_UID_BASE && uid < MODULE_UID_BASE + MODULE_UID_RANGE);
  }
  t.false(all.includes(named));
  t.is(await again.uidFor("alpha"), named, "names keep their uids");
  const beta = await again.uidFor("beta");
  t.true(beta >= MODULE_UID_BASE && beta < MODULE_UID_BASE + MODULE_UID_RANGE, "a new name gets a uid from the module range");
  const saved = JSON.parse(await readFile(file, "utf8")) as { single_use_next?: number };
  t.is(saved.single_use_next, Math.max(...all) + 1, "the next single-use uid is on disk");
});

test("the host's stop waits for a pool boot in progress: nothing of the pool outlives it (no process, no uid table write after the stop)", async (t) => {
  const h = await poolHost(t, { inline: { "pool-s": await goodAs("pool-s") }, grants: { "pool-s": GOOD_GRANTS } });
  await h.waitForState("pool-s", "running", 60_000);
  // The refill starts right after the start: stop while it is on its way.
  await h.stop();
  const table = path.join(h.config.modules.data_dir, UID_TABLE_FILE);
  const before = await readFile(table, "utf8").catch(() => "");
  const stats = h.manager.poolStats();
  t.truthy(stats, "the pool existed");
  t.deepEqual(stats!.waiting, [], "no pool process left waiting");
  await new Promise((r) => setTimeout(r, 500));
  t.is(await readFile(table, "utf8").catch(() => ""), before, "the uid table is not written after the stop");
  t.deepEqual((await readdir(h.config.modules.data_dir)).filter((f) => f.startsWith(`.${UID_TABLE_FILE}.`)), [], "no temporary table file left");
});

// A pool process builds its isolate, context and bootstrap before hand-over (worker.ts
// prepareIsolate), with the memory_mb of its profile (runtime.ts poolProfile: the key includes
// it). A module handed that process must still be held to its own memory_mb: here 16 MB, and
// the module holds 48 MiB at once, which an isolate built with the default 128 MB would allow.
test("a pooled isolate host's isolate, built before hand-over, holds its module to the module's own memory_mb (16 MB; the module holds 48 MiB)", async (t) => {
  const toml = 'name = "pool-mem"\nversion = "0.1.0"\nentry_point = "index.ts"\ncapabilities = ["subscribe_events=NewBlock"]\n';
  const index = `import type { ModuleContext } from "modhost/sdk";
export default async function start(ctx: ModuleContext): Promise<void> {
  await ctx.events.subscribe("NewBlock", () => {
    const keep: number[][] = [];
    for (let i = 0; i < 48; i++) keep.push(new Array(1 << 17).fill(i)); // 1 MiB each
    ctx.log.info("held 48 MiB", { arrays: keep.length });
  });
}
`;
  const h = await poolHost(t, {
    inline: { "pool-mem": { toml, files: { "index.ts": index } } },
    grants: { "pool-mem": ["subscribe_events=NewBlock"] },
    moduleLimits: { "pool-mem": { memory_mb: 16, restart: "never", cpu_time_ms: 5000 } },
  });
  await h.waitForState("pool-mem", "running", 60_000);
  const [waiting] = await poolWaiting(h);
  const mark = h.mark();
  await h.manager.reload("pool-mem");
  t.is(loadedLines(h, "pool-mem", mark)[0]?.fields?.isolate_pool, "warm", "the module was handed the pool process");
  t.is(h.mustStatus("pool-mem").pid, waiting);
  await h.mine(1);
  const crash = await h.waitForEvent("ModuleCrashed", (p) => p.module === "pool-mem", { timeoutMs: 30_000 });
  const p = crash.payload as Record<string, unknown>;
  t.regex(String(p.error), /exceeded its memory limit of 16 MB \(memory_mb\)/);
  t.is(p.exit_code, 71, "the memory exit code");
  t.false(h.records.slice(mark).some((r) => r.source === "pool-mem" && r.message === "held 48 MiB"), "the module never held more than its memory_mb");
});
