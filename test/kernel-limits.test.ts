// Kernel limits on a module as a whole, under the real host and the real sandbox: a hostile
// native module (test/fixtures/kernel-hog, running test/fixtures/hostile/hostile.c) hoards
// shared memory, runs many processes that each allocate, fork-bombs, and takes a name whose
// hashed uid is another module's. Each time the module is stopped or held at its cgroup's
// limits, and the host and a canary module (the "good" TypeScript fixture) carry on. Also: the
// isolate host of a TypeScript module runs in a cgroup of its own, removed when it stops.
// Needs root, bubblewrap, cgroups (v1 memory/pids/cpu or v2) and cc.

import test from "ava";
import type { ExecutionContext } from "ava";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { detectCgroups } from "../runtime/sandbox/cgroup.ts";
import { moduleUid } from "../runtime/sandbox/policy.ts";
import { UID_TABLE_FILE } from "../runtime/sandbox/uids.ts";
import { isolateHostCgroupLimits } from "../runtime/isolate/runtime.ts";
import { limitsFor } from "../host/config.ts";
import { startHost, tempDir, GOOD_GRANTS, type TestHost } from "./helpers/host.ts";
import { compileHostile } from "./helpers/native.ts";
import { eventually, processesOf } from "./helpers/procs.ts";
import { canaryCarriesOn, uidOf, writeHog } from "./helpers/kernel-hog.ts";

const MB = 1024 * 1024;

let binary: string;

test.before(async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "modhost-kernel-test-"));
  binary = path.join(dir, "hostile");
  await compileHostile(binary);
});

/** The host with the "good" canary and one hog; `attack` is the hog's configuration. */
async function hostWithHog(t: ExecutionContext, name: string, attack: string[], limits: Record<string, unknown>): Promise<TestHost> {
  const dir = await tempDir(t);
  await writeHog(dir, name, binary);
  return startHost(t, {
    dir,
    modules: ["good"],
    grants: { good: GOOD_GRANTS, [name]: [] },
    // Its attack binary runs from its data directory, which a data volume would mount noexec.
    moduleLimits: { [name]: { restart: "never", data_volume: "scan", ...limits } },
    moduleConfigs: { [name]: { attack } },
  });
}

test.before(async (t) => {
  const cg = await detectCgroups();
  if (cg.kind === "none") t.log(`no cgroups here: ${cg.problems.join("; ")}`);
});

test("memfd hoarding: the module is killed at memory_total_mb, told in the log; the host and the canary carry on", async (t) => {
  const h = await hostWithHog(t, "hoarder", ["memfd", "768"], { memory_total_mb: 192 });
  t.is(h.mustStatus("hoarder").sandbox, "full");
  const uid = await uidOf(h, "hoarder");
  const why = await h.waitForLog(/^hoarder: the kernel killed \d+ of its processes at its memory limit/, { source: "host", timeoutMs: 60_000 });
  t.log(why.message);
  t.regex(why.message, /memory_total_mb = 192; raise it in \[modules\.limits\.hoarder\]/);
  await h.waitForState("hoarder", ["crashed", "failed"], 20_000);
  // The crash reason says why, not only "killed by SIGKILL" (the kernel's OOM kill is a bare SIGKILL).
  const crashed = await h.waitFor(() => h.events.find((e) => e.type === "ModuleCrashed" && (e.payload as { module: string }).module === "hoarder"), 5000, "ModuleCrashed for hoarder");
  t.regex((crashed.payload as { error: string }).error, /the kernel killed \d+ of its processes at its memory limit/);
  t.true(await eventually(async () => (await processesOf(uid)) === 0, 5000), "nothing of it is left");
  await canaryCarriesOn(t, h);
});

test("many processes each allocating: held together under memory_total_mb, the rest killed; the host and the canary carry on", async (t) => {
  // 8 x 100 MB, each far below address_space_mb (RLIMIT_AS is per process), together 3 x
  // memory_total_mb. Each child is bigger than the module's Node process, so the OOM killer
  // picks children; should it pick the module itself, the host says so.
  const h = await hostWithHog(t, "spreader", ["children", "8", "100"], { memory_total_mb: 256 });
  const [report, why] = await Promise.race([
    h.waitForLog(/^kernel-hog report$/, { source: "spreader", timeoutMs: 60_000 }).then((r) => [r, undefined] as const),
    h.waitForLog(/^spreader: the kernel killed/, { source: "host", timeoutMs: 60_000 }).then((r) => [undefined, r] as const),
  ]);
  if (report) {
    const detail = String((report.fields as { results: Record<string, string> }).results.children ?? "");
    t.log(`report: ${detail}`);
    const d = Object.fromEntries(detail.replace(/^ok /, "").split(",").map((kv) => kv.split("=")).map(([k, v]) => [k, Number(v)]));
    t.is(d.started, 8);
    t.true(d.killed! >= 1, "the kernel killed some of them");
    t.true(d.held! * 100 < 256, `${d.held} x 100 MB held`);
    t.is(h.mustStatus("spreader").state, "running", "the module itself is held to its limit, not killed");
  } else {
    // The OOM killer chose the module's own process: the module is gone, which the host says.
    t.truthy(why, "the host says the kernel killed the module's processes");
  }
  await canaryCarriesOn(t, h);
});

test("a fork bomb stops at the processes limit; the host and the canary carry on", async (t) => {
  const h = await hostWithHog(t, "bomber", ["forkbomb", "100000"], { processes: 48 });
  const report = await h.waitForLog(/^kernel-hog report$/, { source: "bomber", timeoutMs: 60_000 });
  const result = String((report.fields as { results: Record<string, string> }).results.forkbomb);
  t.log(`fork bomb with processes = 48: ${result}`);
  const [outcome, count] = result.split(" ");
  t.is(outcome, "EAGAIN");
  t.true(Number(count) < 48, `${count} children`);
  t.is(h.mustStatus("bomber").state, "running", "the module itself is held, not killed");
  await canaryCarriesOn(t, h);
});

test("a module whose name hashes to another module's uid gets a uid of its own: the victim still restarts while it holds every process it may have", async (t) => {
  // "evil-mm7zi" was found by brute force (about 15 s): its hashed uid is "good"'s.
  const evil = "evil-mm7zi";
  t.is(moduleUid(evil), moduleUid("good"), "the names collide under the hash");
  const h = await hostWithHog(t, evil, ["holdprocs", "100000"], { processes: 64 });
  const report = await h.waitForLog(/^kernel-hog report$/, { source: evil, timeoutMs: 60_000 });
  t.log(`${evil} holds: ${JSON.stringify((report.fields as { results: unknown }).results)}`);
  t.regex(String((report.fields as { results: Record<string, string> }).results.holdprocs), /^EAGAIN \d+$/, `its report: ${JSON.stringify(report.fields)}`);
  const [evilUid, goodUid] = [await uidOf(h, evil), await uidOf(h, "good")];
  t.not(evilUid, goodUid, "two names, two uids");
  // It holds as many as the kernel let it have, all under its own uid (50 on a quiet machine).
  // The uid is its own machine-wide: the hosts of test files running at once claim theirs in
  // the same claims directory (runtime/sandbox/uid-claims.ts); before, another host's "good"
  // could run under it, and RLIMIT_NPROC counted its processes too. What matters here is that
  // the victim restarts while the attacker holds every process it may have.
  const held = Number(/^EAGAIN (\d+)$/.exec(String((report.fields as { results: Record<string, string> }).results.holdprocs))?.[1] ?? NaN);
  t.true(held >= 1 && (await processesOf(evilUid)) >= held, `it holds its ${held} processes`);

  // The victim crashes and restarts: it needs ~13 threads under its uid, which the attacker
  // would have taken had they shared one.
  const goodPid = h.mustStatus("good").pid!;
  const since = h.events.length;
  process.kill(goodPid, "SIGKILL");
  await h.waitForEvent("ModuleRestarted", (p) => p.module === "good", { timeoutMs: 30_000, since });
  await h.waitForState("good", "running", 30_000);
  await canaryCarriesOn(t, h);

  // Stable across restarts of the host: the table in the data directory.
  const table = JSON.parse(await readFile(path.join(h.config.modules.data_dir, UID_TABLE_FILE), "utf8")) as { uids: Record<string, number> };
  t.deepEqual(table.uids, { [evil]: evilUid, good: goodUid });
});

test("a TypeScript module's isolate host runs in a cgroup of its own with the isolate's limits; it is removed when the module stops", async (t) => {
  const cg = await detectCgroups();
  if (cg.kind === "none") return t.fail(`no cgroups: ${cg.problems.join("; ")}`);
  const h = await startHost(t, { modules: ["good"], grants: { good: GOOD_GRANTS }, moduleLimits: { good: { memory_total_mb: 300, cpu_max_percent: 50 } } });
  t.regex(h.lines.join("\n"), /kernel limits per module: cgroup v[12] memory\+pids\+cpu/);
  const pid = h.mustStatus("good").pid!;
  const memoryLine = (await readFile(`/proc/${pid}/cgroup`, "utf8")).split("\n").find((l) => cg.kind === "v1" ? /:memory:/.test(l) : l.startsWith("0::"))!;
  const cgPath = memoryLine.split(":")[2]!;
  t.regex(cgPath, /\/modhost-\d+-\d+-\d+\/good-\d+$/);
  const dir = path.join(path.dirname(cg.hostDirs.memory!), path.basename(path.dirname(cgPath)), path.basename(cgPath));
  const want = isolateHostCgroupLimits(limitsFor(h.config, "good"));
  t.is(want.memory_mb, Math.max(300, 192 + 2 * 64), "memory_total_mb, or what Node and V8 need with memory_mb 64");
  t.is(Number(await readFile(path.join(dir, cg.kind === "v1" ? "memory.limit_in_bytes" : "memory.max"), "utf8")), want.memory_mb * MB);
  const used = Number(await readFile(path.join(dir, cg.kind === "v1" ? "memory.usage_in_bytes" : "memory.current"), "utf8"));
  t.log(`isolate host of "good": ${(used / MB).toFixed(0)} MB charged to its cgroup (limit ${want.memory_mb} MB)`);
  t.true(used > 0 && used < want.memory_mb * MB);
  await h.manager.unload("good");
  t.true(await eventually(async () => !existsSync(dir), 5000), `${dir} removed after the module stopped`);
});

test.after.always(async () => {
  if (binary) await rm(path.dirname(binary), { recursive: true, force: true });
});
