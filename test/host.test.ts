// Host-level behaviour with broken and hostile module directories: every bad module is
// reported with a clear problem (and the fix), the good ones run, and the host keeps going.
// Real isolates, real LevelDB.

import test from "ava";
import { GOOD_GRANTS, startHost, type TestHost } from "./helpers/host.ts";

const BROKEN = ["bad-toml", "bad-semver", "unknown-cap", "cycle-a", "cycle-b", "needs-missing", "wants-mempool"];
/** What wants-mempool is granted in these tests: less than it requests. */
const WANTS_GRANTED = ["read_chain_state", "subscribe_events=NewBlock"];

async function goodStillWorks(t: import("ava").ExecutionContext, h: TestHost): Promise<void> {
  const height = await h.mine(1);
  await h.waitForLog(new RegExp(`^stored block ${height}$`), { source: "good" });
  t.is(h.mustStatus("good").state, "running");
}

test("a modules dir full of broken modules: each is reported with its problem and fix, the good one runs", async (t) => {
  const h = await startHost(t, { modules: ["good", ...BROKEN], grants: { good: GOOD_GRANTS, "wants-mempool": WANTS_GRANTED } });

  const problem = (name: string) => {
    const s = h.mustStatus(name);
    t.is(s.state, "skipped", `${name} should be skipped`);
    return s.problem ?? "";
  };

  // Malformed TOML: file, line and column, the spot, and a fix.
  const toml = problem("bad-toml");
  t.regex(toml, /bad-toml\/module\.toml:3:\d+: TOML syntax error/);
  t.regex(toml, /version = "0\.1\.0/, "shows the offending line");
  t.regex(toml, /fix: /);

  // A version that is not semver.
  const semver = problem("bad-semver");
  t.regex(semver, /bad-semver\/module\.toml:2:\d+: version: "1\.0" is not a semantic version/);
  t.regex(semver, /fix: .*"1\.0\.0"/);

  // A misspelt capability, located, with the likely meaning.
  const cap = problem("unknown-cap");
  t.regex(cap, /unknown-cap\/module\.toml:4:\d+: capabilities\[1\]: unknown capability "read_blockchian"/);
  t.regex(cap, /did you mean "read_blockchain"/);

  // A dependency cycle: both members, with the cycle spelled out.
  t.is(problem("cycle-a"), "dependency cycle: cycle-a -> cycle-b -> cycle-a");
  t.is(problem("cycle-b"), "dependency cycle: cycle-a -> cycle-b -> cycle-a");

  // A missing dependency.
  t.is(problem("needs-missing"), "needs price-feed ^2.0.0, which is not installed");

  // Ungranted capabilities: the exact lines that would grant them.
  const grants = problem("wants-mempool");
  t.regex(grants, /requests capabilities the operator has not granted: read_mempool, subscribe_events=MempoolTransactionAdded/);
  t.true(grants.includes("[modules.grants.wants-mempool]"), grants);
  t.true(grants.includes('allow = ["read_chain_state", "subscribe_events=NewBlock", "read_mempool", "subscribe_events=MempoolTransactionAdded"]'), grants);
  t.true(grants.includes('on_missing_grant = "reduce"'), grants);

  // Each problem is in the host log, too.
  for (const name of BROKEN) {
    t.truthy(h.records.find((r) => r.source === "host" && r.level === "error" && r.message.startsWith(`not loading ${name}:`)), `log line for ${name}`);
  }
  // None of them got a process.
  for (const name of BROKEN) t.is(h.manager.processOf(name), undefined, `${name} has no process`);

  // Startup completed with exactly the good module, which works.
  const started = await h.waitForEvent("NodeStartupCompleted");
  t.deepEqual(started.payload, { modules: ["good"] });
  await goodStillWorks(t, h);
});

test("the grant lines from the refusal message are the fix: with them the module loads", async (t) => {
  const first = await startHost(t, { modules: ["wants-mempool"], grants: { "wants-mempool": WANTS_GRANTED } });
  const problem = first.mustStatus("wants-mempool").problem ?? "";
  const line = problem.split("\n").map((l) => l.trim()).find((l) => l.startsWith("allow = "));
  t.truthy(line, problem);
  const allow = JSON.parse(line!.slice("allow = ".length)) as string[];
  await first.stop();

  const second = await startHost(t, { modules: ["wants-mempool"], grants: { "wants-mempool": allow } });
  t.is(second.mustStatus("wants-mempool").state, "running");
  t.deepEqual(second.mustStatus("wants-mempool").missing, []);
  const report = JSON.parse((await second.waitForLog(/^WANTS /, { source: "wants-mempool" })).message.slice(6)) as Record<string, string>;
  t.is(report["typeof ctx.mempool"], "object");
  t.is(report.MempoolTransactionAdded, "subscribed");
});

test('on_missing_grant = "reduce": loads without the capability, and the call is denied naming it', async (t) => {
  const h = await startHost(t, {
    modules: ["good", "wants-mempool"],
    grants: { good: GOOD_GRANTS, "wants-mempool": { allow: WANTS_GRANTED, on_missing_grant: "reduce" } },
  });
  const s = h.mustStatus("wants-mempool");
  t.is(s.state, "running");
  t.deepEqual([...s.missing].sort(), ["read_mempool", "subscribe_events=MempoolTransactionAdded"]);
  t.deepEqual(s.grants, ["read_chain_state", "subscribe_events=NewBlock"]);
  await h.waitForLog(/wants-mempool loads without: .*read_mempool.*on_missing_grant = "reduce"/, { source: "host" });

  const report = JSON.parse((await h.waitForLog(/^WANTS /, { source: "wants-mempool" })).message.slice(6)) as Record<string, string>;
  // No mempool family at all: the module sees only what it holds.
  t.is(report["typeof ctx.mempool"], "undefined");
  t.is(report.grants, "read_chain_state,subscribe_events=NewBlock");
  t.is(report.height, "101");
  t.is(report.NewBlock, "subscribed");
  // The part of the scoped grant it did not get is refused by the host, naming the capability and the target.
  t.regex(report.MempoolTransactionAdded ?? "", /^permission_denied: .*"subscribe_events".*MempoolTransactionAdded/);
  // ... and the refusal is in the host log, attributed to the module.
  await h.waitForLog(/denied: .*subscribe_events.*MempoolTransactionAdded/, { source: "wants-mempool" });
  await goodStillWorks(t, h);
});

test("an empty modules dir starts a host with no modules; an enabled_modules entry that does not exist is reported", async (t) => {
  const h = await startHost(t, { configure: (c) => (c.modules.enabled_modules = ["ghost"]) });
  const ghost = h.mustStatus("ghost");
  t.is(ghost.state, "skipped");
  t.regex(ghost.problem ?? "", /listed in enabled_modules but not found/);
  t.deepEqual((await h.waitForEvent("NodeStartupCompleted")).payload, { modules: [] });
  // The chain still works without modules.
  t.is(await h.mine(2), 103);
});

// The order across dependency levels is checked in test/lifecycle.test.ts; these two are of one
// level and stop concurrently.
test("graceful shutdown: NodeShutdown, every module unloaded, NodeShutdownCompleted", async (t) => {
  const h = await startHost(t, { modules: ["good", "watcher"], grants: { good: GOOD_GRANTS, watcher: ["subscribe_events=ModuleLoaded,ModuleCrashed,ModuleRestarted"] } });
  t.deepEqual([...h.manager.order], ["good", "watcher"]);
  await h.stop();
  // The bus delivers in its own turns: the last events of a shutdown may reach the test's
  // recorder after the host's stop returns. NodeShutdownCompleted is published last.
  await h.waitForEvent("NodeShutdownCompleted");
  const types = h.events.map((e) => e.type);
  const unloaded = h.events.filter((e) => e.type === "ModuleUnloaded").map((e) => (e.payload as { module: string }).module);
  t.deepEqual([...unloaded].sort(), ["good", "watcher"]);
  t.true(types.indexOf("NodeShutdown") < types.indexOf("ModuleUnloaded"));
  t.is(types.at(-1), "NodeShutdownCompleted");
  t.is(h.mustStatus("good").state, "stopped");
  t.is(h.mustStatus("watcher").state, "stopped");
  // The reason reached the module's stop().
  await h.waitForLog(/^good stopping: host shutdown$/, { source: "good" });
});
