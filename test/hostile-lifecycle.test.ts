// Hostile modules attacking the lifecycle around them (issue #8): load, unload and reload
// commands (concurrent ones too) while native modules flood log lines, requests and output;
// a dozen modules crash-looping at once (exit right after their hello or their ready); modules
// that exit during their shutdown invocation or ignore it. Under the real host and sandbox,
// next to the canary ("good", which stores every block): the canary stores every block mined
// meanwhile within 5 s, the host answers an RPC call within 5 s (the longest loop delay is
// logged, not asserted), and afterwards the modules run with one process each, or are given up
// on, with nothing left behind (processes, data-volume mounts). These probes held on the code
// they were written against; they stay as regression tests of the lifecycle under attack.

import test from "ava";
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { buildModulesDir, sleep, startHost, tempDir, GOOD_GRANTS, type TestHost } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { canaryRound } from "./helpers/canary.ts";
import { alive, descendants } from "./helpers/procs.ts";

const PROBE = fileURLToPath(new URL("./fixtures/hostile-lifecycle/main.ts", import.meta.url));
const LONG = 120_000;

function readCmd(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch {
    return "";
  }
}

/** Mounts at or under `dir` (this process's mount namespace). */
async function mountsUnder(dir: string): Promise<number> {
  const text = await readFile("/proc/self/mountinfo", "utf8");
  const root = path.resolve(dir);
  return text.split("\n").filter((l) => {
    const at = l.split(" ")[4];
    return at !== undefined && (at === root || at.startsWith(`${root}/`));
  }).length;
}

interface Attack {
  late: number;
  unanswered: number;
  rounds: number;
}

/** Canary rounds until `done` settles (at least one); counts late blocks and unanswered calls. */
async function canaryDuring(h: TestHost, done: Promise<unknown>): Promise<Attack> {
  let over = false;
  void done.finally(() => (over = true));
  const a: Attack = { late: 0, unanswered: 0, rounds: 0 };
  do {
    const r = await canaryRound(h);
    a.rounds++;
    if (!r.stored) a.late++;
    if (!r.answered) a.unanswered++;
    await sleep(500);
  } while (!over);
  return a;
}

test.serial("load, unload and reload (concurrent ones too) of native modules flooding logs, requests and output: each command ends, each module ends up running in one process, the canary keeps up, nothing is left behind", async (t) => {
  t.timeout(400_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  const names = ["flood-a", "flood-b", "flood-c"];
  for (const n of names) await writeNodeNative(modulesDir, n, PROBE, ["read_chain_state"]);
  const h = await startHost(t, {
    dir,
    modules: [],
    grants: { good: GOOD_GRANTS, ...Object.fromEntries(names.map((n) => [n, ["read_chain_state"]])) },
    moduleConfigs: Object.fromEntries(names.map((n) => [n, { mode: "flood" }])),
  });
  for (const n of names) await h.waitForState(n, "running", LONG);
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  const m = h.manager;
  const commands = async () => {
    const failures: string[] = [];
    const run = (what: string, p: Promise<unknown>) => p.catch((err: Error) => failures.push(`${what}: ${err.message}`));
    for (let round = 0; round < 3; round++) {
      await Promise.all(names.map((n) => Promise.all([
        run(`reload ${n}`, m.reload(n)),
        run(`reload ${n} again`, m.reload(n)),
        run(`unload ${n}`, m.unload(n)).then(() => run(`load ${n}`, m.load(n))),
      ])));
      // Whatever order they ran in, the last is a load or a reload: each ends up running.
      for (const n of names) if (h.status(n)?.state !== "running") await run(`load ${n} at the end`, m.load(n));
    }
    return failures;
  };
  const work = commands();
  const attack = await canaryDuring(h, work);
  const failures = await work;
  loop.disable();
  t.log(`canary rounds ${attack.rounds}, late ${attack.late}, unanswered ${attack.unanswered}, loop delay max ${(loop.max / 1e6).toFixed(0)} ms, p99 ${(loop.percentile(99) / 1e6).toFixed(0)} ms; command failures: ${failures.join("; ") || "none"}`);
  t.is(attack.late, 0, "the canary stored every block within 5 s");
  t.is(attack.unanswered, 0, "the host answered every RPC call within 5 s");
  for (const n of names) {
    const s = await h.waitForState(n, "running", LONG);
    const procs = [s.pid!, ...(await descendants(s.pid!))];
    t.true(procs.length >= 1, `${n} runs`);
  }
  // One process per module: no instance left over by a command that lost a race.
  const ours = new Set<number>();
  for (const n of names) {
    const pid = h.status(n)!.pid!;
    ours.add(pid);
    for (const d of await descendants(pid)) ours.add(d);
  }
  const orphans: string[] = [];
  for (const pid of await descendants(process.pid)) {
    const cmd = (await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "")).replaceAll("\0", " ");
    if (/flood-[abc]/.test(cmd) && !ours.has(pid)) orphans.push(`${pid}: ${cmd.slice(0, 200)}`);
  }
  t.deepEqual(orphans, [], "no process of a flooder besides the running instances and their children");
  const dataDir = h.config.modules.data_dir;
  await t.notThrowsAsync(h.waitFor(async () => (await mountsUnder(dataDir)) === names.length, 30_000, "one data volume mounted per running native module"));
  await h.stop();
  await t.notThrowsAsync(h.waitFor(async () => (await mountsUnder(dataDir)) === 0, 30_000, "no volume mounted after stop"));
});

test.serial("a dozen native modules crash-looping at once (exit right after hello or right after ready): the canary keeps up, RPC is answered, each ends failed or quarantined with no process and no mount left", async (t) => {
  t.timeout(400_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  const names = [...Array.from({ length: 6 }, (_, i) => `exit-hello-${i}`), ...Array.from({ length: 6 }, (_, i) => `exit-ready-${i}`)];
  for (const n of names) await writeNodeNative(modulesDir, n, PROBE, ["read_chain_state"]);
  const loop = monitorEventLoopDelay({ resolution: 10 });
  const h = await startHost(t, {
    dir,
    modules: [],
    grants: { good: GOOD_GRANTS, ...Object.fromEntries(names.map((n) => [n, ["read_chain_state"]])) },
    moduleConfigs: Object.fromEntries(names.map((n) => [n, { mode: n.startsWith("exit-ready") ? "exit-ready" : "exit-hello" }])),
  });
  loop.enable();
  await h.waitForState("good", "running", LONG);
  const settled = h.waitFor(() => names.every((n) => ["failed", "quarantined"].includes(h.status(n)?.state ?? "")), 300_000, () => `every looper to give up: ${names.map((n) => `${n}=${h.status(n)?.state}`).join(" ")}`);
  const attack = await canaryDuring(h, settled);
  await settled;
  loop.disable();
  t.log(`canary rounds ${attack.rounds}, late ${attack.late}, unanswered ${attack.unanswered}, loop delay max ${(loop.max / 1e6).toFixed(0)} ms, p99 ${(loop.percentile(99) / 1e6).toFixed(0)} ms; states ${names.map((n) => h.status(n)?.state).join(",")}`);
  t.is(attack.late, 0, "the canary stored every block within 5 s");
  t.is(attack.unanswered, 0, "the host answered every RPC call within 5 s");
  const dataDir = h.config.modules.data_dir;
  await t.notThrowsAsync(h.waitFor(async () => (await mountsUnder(dataDir)) === 0, 30_000, "no volume of a looper left mounted"));
  for (const n of names) {
    const pid = h.manager.processOf(n)?.pid;
    t.true(pid === undefined || !alive(pid), `${n} has no live process`);
  }
  t.deepEqual((await descendants(process.pid)).filter((p) => names.some((n) => readCmd(p).includes(n))), [], "no process of a looper left");
});

test.serial("native modules that exit during their shutdown invocation (after 4 MiB on stdout without a newline) or ignore it and SIGTERM: unload and reload end, no process of theirs is left, each loads again", async (t) => {
  t.timeout(400_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  const names = ["exit-stop", "deaf-stop"];
  for (const n of names) await writeNodeNative(modulesDir, n, PROBE, ["read_chain_state"]);
  const h = await startHost(t, {
    dir,
    modules: [],
    grants: { good: GOOD_GRANTS, ...Object.fromEntries(names.map((n) => [n, ["read_chain_state"]])) },
    moduleConfigs: Object.fromEntries(names.map((n) => [n, { mode: n }])),
    moduleLimits: Object.fromEntries(names.map((n) => [n, { stop_timeout_ms: 2000, kill_timeout_ms: 2000 }])),
  });
  for (const n of names) await h.waitForState(n, "running", LONG);
  const pids: number[] = [];
  for (let round = 0; round < 2; round++) {
    for (const n of names) {
      pids.push(h.status(n)!.pid!);
      await h.manager.reload(n);
      t.is((await h.waitForState(n, "running", LONG)).state, "running", `${n} runs again after reload ${round + 1}`);
    }
  }
  for (const n of names) {
    pids.push(h.status(n)!.pid!);
    await h.manager.unload(n);
    t.is(h.mustStatus(n).state, "stopped");
  }
  for (const pid of pids) await t.notThrowsAsync(h.waitFor(() => !alive(pid), LONG, `pid ${pid} to be gone`));
  t.deepEqual((await descendants(process.pid)).filter((p) => names.some((n) => readCmd(p).includes(n))), [], "no process of theirs is left");
  await t.notThrowsAsync(h.waitFor(async () => (await mountsUnder(h.config.modules.data_dir)) === 0, 30_000, "no volume of theirs left mounted"));
  for (const n of names) t.is((await h.manager.load(n)).state, "running", `${n} loads again`);
  const { stored, answered } = await canaryRound(h);
  t.true(stored && answered, "the canary stored a block and RPC answered");
});
