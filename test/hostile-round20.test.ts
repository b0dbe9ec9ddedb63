// Hostile probes of round 20 (issue #8), under the real host and sandbox, each next to the
// canary ("good", which stores every block):
//   config    a module's [config_schema] of 250 settings of 120 characters each (what fits in
//             MAX_MANIFEST_BYTES), against an operator's [modules.module_configs] table of 2,000
//             keys it does not declare. Each unknown key's "did you mean" guess compared it with
//             every setting, up to CLOSEST_MAX_CELLS of edit distance, shown or not: 7.5 s of the
//             host's CPU in one turn at each start of the module (every restart of a crash loop),
//             164 ms for the 50 shown. Now the guesses of one file share CLOSEST_MAX_CELLS and
//             none is made past the MAX_REPORTED_PROBLEMS shown.
//   manifest  a module.toml of 4,500 unknown keys in one setting, 1,500 settings with an unknown
//             key each, 1,000 mistyped setting types: the list of problems was copied whole at
//             each one and each made its guess (60-190 ms of the loop at every discovery); now
//             the list grows in place and only the shown ones guess.
//   stray     the operator's entries naming modules not installed (enabled_modules, grants, ...)
//             were each compared with every installed name at the host's start: 300 against 256
//             modules of 64-character names took 1.3 s of the loop; the guesses now share
//             CLOSEST_MAX_CELLS.
//   timers    a native module (test/fixtures/hostile-round20-probes/timers.ts) and a TypeScript
//             one keep their timer quota busy (intervals at 0.001 s, chains of 0 s tasks, a storm
//             of schedule/cancel pairs, 1,000 isolate intervals of 0 ms) while publishing the
//             longest events as fast as allowed, and are reloaded, killed -9 and unloaded: no
//             timer reaches the next instance or outlives the unload (a probe that found nothing).
//   enable    a crash-looping native module, quarantined, gets enable storms (16 calls at once, a
//             JSON-RPC batch of 200) and enable, load and reload while it waits for a restart:
//             each is answered, it never runs twice (a probe that found nothing).
// While they run: the canary stores every block within 5 s, RPC answers within 5 s, no turn of
// the host's loop takes 250 ms of its CPU, its heap, log and descriptors stay within bounds.
// The tests watch this process's loop, so they run one at a time.

import test from "ava";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { MAX_MANIFEST_BYTES, MAX_PROBLEM_CHARS, MAX_REPORT_CHARS, MAX_REPORTED_PROBLEMS } from "../host/toml.ts";
import { buildModulesDir, GOOD_GRANTS, sleep, startHost, tempDir, waitFor } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { watchHost } from "./helpers/host-watch.ts";
import { call, post } from "./helpers/rpc.ts";
import { readdirSync, readFileSync } from "node:fs";
import { inlineModule, timerService } from "./helpers/modules.ts";
import { MAX_TIMERS_PER_MODULE } from "../host/services/timers.ts";
import { strayModuleWarnings, type HostConfig } from "../host/config.ts";

const IDLE = fileURLToPath(new URL("./fixtures/hostile-round20-probes/idle.ts", import.meta.url));
const TIMERS = fileURLToPath(new URL("./fixtures/hostile-round20-probes/timers.ts", import.meta.url));
const CRASHER = fileURLToPath(new URL("./fixtures/crash-after-ready/main.ts", import.meta.url));

/**
 * The processes of native module `name`: those started with `--module-id NAME` (its program's
 * arguments), not counting the sandbox's own bwrap process, which carries the same arguments.
 */
function processesOf(name: string): number[] {
  const pids: number[] = [];
  const needle = `\0--module-id\0${name}\0`;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "latin1");
      if (cmdline.includes(needle) && !cmdline.split("\0")[0]!.endsWith("bwrap")) pids.push(Number(entry));
    } catch {
      // ended meanwhile
    }
  }
  return pids;
}

const cpuMs = () => {
  const u = process.threadCpuUsage();
  return (u.user + u.system) / 1000;
};
const keys = (n: number, len: number, suffix = "") => Array.from({ length: n }, (_, i) => `k${String(i).padStart(len - 1, "0")}${suffix}`);

test.serial("a module whose [config_schema] has 250 settings of 120 characters, configured by the operator with 2,000 keys it does not declare, is refused at each load with no turn of the host's loop over 250 ms of CPU, the first problems named (within MAX_REPORT_CHARS) and the rest counted, while the canary stores every block and RPC answers (before: 7.5-8 s of CPU in one turn, a guess of CLOSEST_MAX_CELLS per key, shown or not)", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  const settings = keys(250, 120);
  const schema = `[config_schema]\n${settings.map((k) => `${k} = "d"`).join("\n")}\n`;
  const modDir = await writeNodeNative(modulesDir, "r20-config", IDLE, [], schema);
  const toml = `name = "r20-config"\nversion = "0.1.0"\nentry_point = "main.mjs"\nruntime = "native"\ncapabilities = []\n${schema}`;
  t.true(Buffer.byteLength(toml) <= MAX_MANIFEST_BYTES, "the manifest is within MAX_MANIFEST_BYTES");
  await writeFile(path.join(modDir, "module.toml"), toml);
  const typos = Object.fromEntries(keys(2_000, 120, "y").map((k) => [k, 1]));
  const h = await startHost(t, { dir, modules: [], grants: { good: GOOD_GRANTS, "r20-config": [] }, moduleConfigs: { "r20-config": typos } });
  await h.waitForState("good", "running", 60_000);
  t.log(`r20-config at start: ${h.status("r20-config")?.state}`);

  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(500, 4);
  for (let i = 0; i < 3; i++) {
    const cpu0 = cpuMs();
    const err = await t.throwsAsync(h.manager.load("r20-config"));
    const cpu = cpuMs() - cpu0;
    const message = err?.message ?? "";
    const listed = await call(h, "list");
    t.log(`load ${i + 1}: refused, ${cpu.toFixed(0)} ms of this process's CPU for the load, ${message.length} characters; list answered with ${(listed as unknown[]).length} modules`);
    t.regex(message, /unknown key "k0+y"/, "the first unknown key is named");
    // Each problem lists known keys of 120 characters: MAX_REPORT_CHARS ends the report before
    // MAX_REPORTED_PROBLEMS do.
    const more = /(\d+) more problem\(s\) not shown \((MAX_REPORTED_PROBLEMS|MAX_REPORT_CHARS)/.exec(message);
    const shown = (message.match(/: unknown key "/g) ?? []).length;
    t.true(more !== null && Number(more[1]) + shown === 2_000, `the rest are counted, naming the limit (${more?.[0]}, ${shown} shown)`);
    t.true(message.length <= MAX_REPORT_CHARS + 3 * MAX_PROBLEM_CHARS + 4096, `the report is ${message.length} characters`);
    watch.sample();
  }
  await canary.stop();
  watch.assertCanary(t);
  await watch.finish(t, 1);
});

test.serial("module.toml files of 4,500 unknown keys in one setting, 1,500 settings with an unknown key each and 1,000 mistyped setting types are refused at the host's start and at each load with the first MAX_REPORTED_PROBLEMS named and the rest counted, with no turn of the host's loop over 250 ms of CPU while the canary stores every block and RPC answers (before: the list of problems copied whole at each one, and a guess for each)", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  const b36 = (i: number) => i.toString(36);
  const shapes: Record<string, { body: string; problems: number }> = {
    "r20-wide": { body: `[config_schema.k]\n${Array.from({ length: 4_500 }, (_, i) => `q${b36(i)}=1`).join("\n")}\n`, problems: 4_500 },
    "r20-fields": { body: `[config_schema]\n${Array.from({ length: 1_500 }, (_, i) => `k${b36(i)}={q=1}`).join("\n")}\n`, problems: 1_500 },
    "r20-types": { body: `[config_schema]\n${Array.from({ length: 1_000 }, (_, i) => `k${b36(i)}={type="strinx"}`).join("\n")}\n`, problems: 1_000 },
  };
  for (const [name, shape] of Object.entries(shapes)) {
    const modDir = await writeNodeNative(modulesDir, name, IDLE);
    const toml = `name = "${name}"\nversion = "0.1.0"\nentry_point = "main.mjs"\nruntime = "native"\ncapabilities = []\n${shape.body}`;
    t.true(Buffer.byteLength(toml) <= MAX_MANIFEST_BYTES, `${name}'s manifest (${Buffer.byteLength(toml)} bytes) is within MAX_MANIFEST_BYTES`);
    await writeFile(path.join(modDir, "module.toml"), toml);
  }
  const names = Object.keys(shapes);
  const h = await startHost(t, { dir, modules: [], grants: { good: GOOD_GRANTS, ...Object.fromEntries(names.map((n) => [n, []])) } });
  await h.waitForState("good", "running", 60_000);
  for (const name of names) {
    const problem = h.status(name)?.problem ?? "";
    t.log(`${name} at start: ${h.status(name)?.state}: ${problem.length} characters: ${problem.slice(0, 160)}`);
    t.regex(problem, new RegExp(`${shapes[name]!.problems - MAX_REPORTED_PROBLEMS} more problem\\(s\\) not shown \\(MAX_REPORTED_PROBLEMS\\)`), `${name}: the problems past the limit are counted`);
  }

  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(500, 4);
  for (const name of names) {
    const cpu0 = cpuMs();
    const err = await t.throwsAsync(h.manager.load(name));
    const listed = await call(h, "list");
    t.log(`load ${name}: refused with ${cpu0 === 0 ? 0 : (cpuMs() - cpu0).toFixed(0)} ms of this process's CPU, ${err?.message.length} characters; list answered with ${(listed as unknown[]).length} modules`);
    t.regex(err?.message ?? "", /MAX_REPORTED_PROBLEMS/, "the answer counts the problems not shown");
    watch.sample();
  }
  await canary.stop();
  watch.assertCanary(t);
  await watch.finish(t, 1);
});

const TIMER_CAPS = ["manage_timers", "publish_events", "subscribe_events"];

// The TypeScript side of the timers probe: the timers capability (ctx.timers) and the isolate's
// own timers at once, with the longest events published as fast as allowed.
const TS_TIMERS = inlineModule("r20-ts-timers", TIMER_CAPS, `
  const name = "e" + "v".repeat(63);
  let ticks = 0, runs = 0, published = 0, refused = 0, own = 0;
  for (let i = 0; i < 100; i++) await ctx.timers.every(0.001, () => { ticks++; });
  const chain = async () => { runs++; await ctx.timers.after(0, chain).catch(() => { refused++; }); };
  for (let i = 0; i < 100; i++) await ctx.timers.after(0, chain);
  for (let i = 0; i < 1000; i++) setInterval(() => { own++; }, 0);
  await ctx.events.subscribe(ctx.module.name + ":" + name, () => {});
  const payload = { blob: "x".repeat(60 * 1024) };
  const publish = async () => { for (;;) { try { await ctx.events.publish(name, payload); published++; } catch { refused++; await new Promise((r) => setTimeout(r, 5)); } } };
  for (let i = 0; i < 4; i++) void publish();
  setInterval(() => ctx.log.info("probe status", { ticks, runs, published, refused, own }), 1000);
`);

test.serial("a native and a TypeScript module that keep their timer quota busy (intervals at 0.001 s, chains of 0 s tasks, a storm of schedule/cancel pairs, 1,000 isolate intervals of 0 ms) while publishing the longest events as fast as allowed are reloaded, killed -9 and unloaded: no timer outlives its process (none reaches the next instance, none is left after the unload, the host stops waking for them), the timer quota holds, while the canary stores every block, RPC answers and the host's heap and log stay bounded", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  await writeNodeNative(modulesDir, "r20-timers", TIMERS, TIMER_CAPS);
  const h = await startHost(t, {
    dir, modules: [], inline: { "r20-ts-timers": TS_TIMERS },
    grants: { good: GOOD_GRANTS, "r20-timers": TIMER_CAPS, "r20-ts-timers": TIMER_CAPS },
    moduleConfigs: { "r20-timers": { intervals: 128, tasks: 100, at_once: 16, publish: true } },
    moduleLimits: { "r20-timers": { data_volume: "scan" } },
  });
  await h.waitForState("good", "running", 60_000);
  const timers = timerService(h);
  const status = async (name: string, since: number) => (await h.waitForLog(/^probe status$/, { source: name, since, timeoutMs: 60_000 })).fields as Record<string, any>;
  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(500, 4);
  let peak = 0;
  const peakTimer = setInterval(() => {
    peak = Math.max(peak, timers.stats("r20-timers").active, timers.stats("r20-ts-timers").active);
  }, 20);
  t.teardown(() => clearInterval(peakTimer));

  for (const name of ["r20-timers", "r20-ts-timers"]) {
    await h.waitForState(name, "running", 60_000);
    let first = await status(name, 0);
    t.log(`${name} running: ${JSON.stringify(first)}; host timers ${JSON.stringify(timers.stats(name))}`);
    for (const step of ["reload", "kill -9", "reload"]) {
      const before = timers.stats(name);
      if (step === "reload") {
        await h.manager.reload(name);
      } else {
        const pid = h.status(name)?.pid;
        t.truthy(pid, `${name} has a process`);
        process.kill(pid!, "SIGKILL");
        await waitFor(() => h.status(name)?.state !== "running" || h.status(name)?.pid !== pid, 30_000, `${name} to be seen ended`);
        await h.waitForState(name, "running", 60_000);
      }
      const mark = h.mark();
      const s = await status(name, mark);
      const again = await status(name, h.mark());
      t.log(`after ${step}: ${name} ${JSON.stringify(again)}; host timers before ${JSON.stringify(before)}, now ${JSON.stringify(timers.stats(name))}`);
      if (name === "r20-timers") {
        t.is(again.stray, 0, `after ${step}: no timer of an earlier instance reached the new one`);
        t.true(again.ticks > s.ticks || again.taskRuns > s.taskRuns, `after ${step}: its own timers fire`);
      } else {
        t.true(again.ticks > 0 && again.runs > 0 && again.own > 0, `after ${step}: its timers fire`);
      }
      const listed = await call(h, "list");
      t.true(Array.isArray(listed), "RPC answers");
      watch.sample();
      first = again;
    }
    await h.manager.unload(name);
    t.is(timers.stats(name).active, 0, `${name}: no timer is left after the unload`);
    const wakeups = timers.stats(name).wakeups;
    await sleep(500);
    t.is(timers.stats(name).wakeups, wakeups, `${name}: the host does not wake for its timers after the unload`);
  }
  clearInterval(peakTimer);
  t.log(`most timers one module held at once: ${peak}; timers left in the host: ${timers.size}`);
  t.true(peak <= MAX_TIMERS_PER_MODULE, `the quota held (${peak})`);
  await canary.stop();
  watch.assertCanary(t);
  await watch.finish(t, 2);
});

test.serial("enable storms on a crash-looping native module: 16 `enable` calls at once (half [rpc] max_connections_per_address) and a JSON-RPC batch of 200 while it is quarantined, and enables while it waits for a restart, are each answered (the running status or a refusal naming the state), the module never runs in two processes and ends with none left after its unload, while the canary stores every block, RPC answers and the host's heap, log and audit stay bounded", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  await writeNodeNative(modulesDir, "r20-crash", CRASHER);
  const h = await startHost(t, {
    dir, modules: [], grants: { good: GOOD_GRANTS, "r20-crash": [] },
    moduleLimits: { "r20-crash": { max_restarts: 50, quarantine_after: 2, restart_window_ms: 600_000, data_volume: "scan" } },
  });
  await h.waitForState("good", "running", 60_000);
  const entry = "r20-crash";
  t.true(processesOf(entry).length <= 1, "its processes are found by their arguments");
  let most = 0;
  const counting = setInterval(() => {
    most = Math.max(most, processesOf(entry).length);
  }, 50);
  t.teardown(() => clearInterval(counting));
  const auditBytes = () => {
    try {
      return readFileSync(h.config.host.audit_log, "latin1").length;
    } catch {
      return 0;
    }
  };
  const audit0 = auditBytes();
  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(500, 4);
  const answers: Record<string, number> = {};
  const tally = (what: string) => {
    answers[what] = (answers[what] ?? 0) + 1;
  };
  for (let round = 0; round < 2; round++) {
    await h.waitForState("r20-crash", "quarantined", 120_000);
    const single = Array.from({ length: 16 }, () => call(h, "enable", { module: "r20-crash" }).then((s) => tally(`ok:${s?.state}`), (err: Error) => tally(`refused:${err.message.slice(0, 60)}`)));
    const batch = post(h, Array.from({ length: 200 }, (_, i) => ({ jsonrpc: "2.0", id: i + 1, method: "enable", params: { module: "r20-crash" } }))).then((r) => {
      for (const a of r.json as Array<{ result?: { state?: string }; error?: { message: string } }>) {
        if (a.error) tally(`refused:${a.error.message.slice(0, 60)}`);
        else tally(`ok:${a.result?.state}`);
      }
      return (r.json as unknown[]).length;
    });
    const [, batchAnswers] = await Promise.all([Promise.all(single), batch]);
    t.is(batchAnswers, 200, "the batch has an answer for each enable");
    // While it crashes and waits for its restart: enable, load and reload at once.
    await waitFor(() => ["crashed", "starting", "stopped"].includes(h.status("r20-crash")?.state ?? "") || h.status("r20-crash")?.state === "quarantined", 60_000, "r20-crash to crash again");
    const during = await Promise.allSettled([call(h, "enable", { module: "r20-crash" }), call(h, "load", { module: "r20-crash" }), call(h, "reload", { module: "r20-crash" })]);
    t.log(`round ${round + 1}: state ${h.status("r20-crash")?.state}; during the restart: ${during.map((d) => (d.status === "fulfilled" ? `ok:${d.value?.state}` : `refused:${String(d.reason?.message).slice(0, 80)}`)).join(" | ")}`);
    watch.sample();
  }
  t.log(`answers: ${JSON.stringify(answers)}`);
  const total = Object.values(answers).reduce((a, b) => a + b, 0);
  t.is(total, 2 * 216, "every enable is answered");
  t.true(Object.keys(answers).some((k) => k.startsWith("ok:")), "an enable lifted the quarantine");
  await h.waitForState("r20-crash", ["quarantined", "crashed", "running", "failed", "stopped"], 60_000);
  await h.manager.unload("r20-crash").catch(() => undefined);
  await waitFor(() => processesOf(entry).length === 0, 30_000, "no process of r20-crash left");
  clearInterval(counting);
  const audit = auditBytes() - audit0;
  t.log(`most processes of r20-crash at once: ${most}; audit +${(audit / 1024).toFixed(0)} KiB`);
  t.is(most, 1, `it ran, and never in two processes at once (${most} at most)`);
  t.true(audit < 1024 * 1024, `the audit grew ${audit} bytes`);
  await canary.stop();
  watch.assertCanary(t);
  await watch.finish(t, 1);
});

test("an operator's configuration naming 300 modules not installed, next to 256 installed modules of 64-character names, gets its 300 warnings as the host starts in under 250 ms of CPU, the guesses sharing CLOSEST_MAX_CELLS (before: 1.3 s, a guess against every installed name for each)", (t) => {
  const names = Array.from({ length: 256 }, (_, i) => `m${String(i).padStart(63, "0")}`);
  const stray = Array.from({ length: 300 }, (_, i) => `m${String(i).padStart(62, "0")}x`);
  const config = { file: "modhost.toml", modules: { modules_dir: "/modules", enabled_modules: stray, disabled_modules: [], grants: {}, module_configs: {}, limits: {}, trust: {} } } as unknown as HostConfig;
  const cpu0 = cpuMs();
  const warnings = strayModuleWarnings(config, names);
  const cpu = cpuMs() - cpu0;
  t.log(`${warnings.length} warnings in ${cpu.toFixed(1)} ms of CPU, ${warnings.filter((w) => w.includes("did you mean")).length} with a guess`);
  t.is(warnings.length, 300, "each entry is warned about");
  t.regex(warnings[0]!, /did you mean "m0+"\?/, "the first has its guess");
  t.true(cpu < 250, `${cpu.toFixed(1)} ms of CPU`);
});
