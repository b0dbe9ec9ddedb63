// Hostile probes of round 19 (issue #8): what the host computes and prints for what a module
// directory says about itself, its manifest and its dependencies.
//   dependencies  every start, load, unload and reload plans the modules together on the host's
//                 loop. Before, the plan searched for a cycle from every module and sorted each
//                 module's dependencies again at every step: 256 modules of 64 dependencies each
//                 took 2-3.5 s of the loop in one turn (1,024: 18-41 s), a chain of N modules
//                 failing at its end gave each a reason of N nested clauses, and each version
//                 check of a `||` range of 256 characters cost semver up to 60 µs, all in one
//                 turn. Now modules_dir holds at most MAX_MODULES entries (counted before any
//                 manifest is read), the version checks run ahead in slices (checkRanges), the
//                 plan is linear in the dependencies (strongly connected components for cycles,
//                 one breadth-first pass for dependents) and its reasons are bounded
//                 (MAX_CYCLE_NAMES, the first cause only).
//   broken        a load of a module whose manifest is broken answered "no module named X" while
//                 its status named the problem; now the answer names it (file, line, column, fix).
//   names         a module directory's name (a module's name in `modhost list` when its manifest
//                 is broken) and the manifest excerpts in its problem reached the operator's
//                 terminal raw in `modhost list`, `health`, `info` and `check`; now escaped.
//   listing     a TypeScript module lists 5,000 files of 207-character names sharing a prefix, 4
//               at a time: the sort and the loop over the entries ran outside the request's first
//               turn, uncharged (~590 ms of the host's CPU a second against a share of 250); now
//               both are charged to its host_cpu_ms_per_s.
// While they run: the canary stores every block within 5 s, RPC answers within 5 s, no turn of
// the host's loop takes 250 ms of its CPU, its heap, log and descriptors stay within bounds.

import test from "ava";
import { execFile } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { checkRanges, MAX_CYCLE_NAMES, planLoad } from "../host/deps.ts";
import { discoverModules, MAX_MODULES } from "../host/manager-plan.ts";
import { loadManifest, MAX_MANIFEST_RANGE_CHARS, MAX_RANGE_CHARS, type ModuleManifest } from "../host/manifest.ts";
import type { ConfigError } from "../host/errors.ts";
import { buildModulesDir, GOOD_GRANTS, ROOT, startHost, tempDir } from "./helpers/host.ts";
import { watchHost } from "./helpers/host-watch.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { call } from "./helpers/rpc.ts";

const IDLE = fileURLToPath(new URL("./fixtures/hostile-round19/idle.ts", import.meta.url));
const run = promisify(execFile);

/** Control characters a terminal acts on: none may reach the operator's screen raw. */
const RAW_CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/;

/** A `||` chain of prerelease ranges, each satisfied by 0.1.0, as long as fits in 256 characters. */
function longRange(seed: number): string {
  const parts = [">=0.1.0"];
  for (let i = 0; ; i++) {
    const next = `${parts.join(" || ")} || ^0.${seed % 50}.${i}-rc.${seed}.${i}`;
    if (next.length > 256) return parts.join(" || ");
    parts.push(`^0.${seed % 50}.${i}-rc.${seed}.${i}`);
  }
}

const pad = (i: number) => `r19-${String(i).padStart(3, "0")}`;

function manifest(name: string, dependencies: Record<string, string>, optional: Record<string, string> = {}): ModuleManifest {
  return { name, version: "0.1.0", dependencies, optional_dependencies: optional, file: `/modules/${name}/module.toml` } as unknown as ModuleManifest;
}

/** This thread's CPU time of `f`, in ms (not the process's: its other threads collect garbage and run workers). */
function cpuMs(f: () => void): number {
  const t0 = process.threadCpuUsage();
  f();
  const d = process.threadCpuUsage(t0);
  return (d.user + d.system) / 1000;
}

test.serial("round 19 under the real host: 64 native modules that each depend on all the others through distinct prerelease ranges are refused as a cycle at start and at each load, with bounded reasons; one with 64 `||` ranges of MAX_RANGE_CHARS is refused naming MAX_MANIFEST_RANGE_CHARS; a load or reload of a module whose manifest is broken answers its file, line, column and fix (before: \"no module named\"); a directory named with ESC, BEL and a newline and a manifest excerpt holding ESC reach `modhost list`, `load` and `health` escaped; the canary stores every block and no turn of the loop takes 250 ms", async (t) => {
  t.timeout(240_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  const N = 64;
  for (let i = 0; i < N; i++) {
    const deps = Array.from({ length: N }, (_, j) => j).filter((j) => j !== i).map((j) => `"${pad(j)}" = ">=0.0.${i}-rc.${j}"`);
    await writeNodeNative(modulesDir, pad(i), IDLE, [], `[dependencies]\n${deps.join("\n")}\n`);
  }
  // 64 dependencies through `||` chains of prereleases of MAX_RANGE_CHARS each.
  const ranges = Array.from({ length: 64 }, (_, j) => `"${pad(j)}" = "${longRange(j)}"`);
  await writeNodeNative(modulesDir, "r19-ranges", IDLE, [], `[dependencies]\n${ranges.join("\n")}\n`);
  // A manifest broken at line 3, column 9.
  await mkdir(path.join(modulesDir, "r19-broken"));
  await writeFile(path.join(modulesDir, "r19-broken", "module.toml"), `name = "r19-broken"\nversion = "0.1.0"\nruntime = = "native"\n`);
  // A directory whose name and whose manifest's broken line hold terminal escapes.
  const evil = "r19-\x1b]0;owned\x07\x1b[2J\nfake-row";
  await mkdir(path.join(modulesDir, evil));
  await writeFile(path.join(modulesDir, evil, "module.toml"), `name = "x\x1b[31mred"\nversion = "0.1.0"\n`);

  const h = await startHost(t, { dir, modules: [], grants: { good: GOOD_GRANTS } });
  await h.waitForState("good", "running", 60_000);
  for (let i = 0; i < N; i++) {
    const s = h.mustStatus(pad(i));
    t.is(s.state, "skipped");
    t.regex(s.problem ?? "", /^dependency cycle: r19-\d{3} -> .* -> r19-\d{3}$/, `${pad(i)} is refused as a cycle`);
    t.true((s.problem ?? "").length <= 40 + MAX_CYCLE_NAMES * 10, `${pad(i)}: a reason of ${(s.problem ?? "").length} characters`);
  }
  t.log(`${pad(0)}: ${h.mustStatus(pad(0)).problem}`);
  const rangesProblem = h.mustStatus("r19-ranges").problem ?? "";
  t.log(`r19-ranges: ${rangesProblem.slice(0, 300)}`);
  t.regex(rangesProblem, new RegExp(`version ranges of \\d+ characters in all, more than the ${MAX_MANIFEST_RANGE_CHARS} a manifest may have \\(MAX_MANIFEST_RANGE_CHARS\\)`), "64 ranges of MAX_RANGE_CHARS are refused before semver reads them");

  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(500, 4);
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    const err = await t.throwsAsync(h.manager.load(pad(i * 21)));
    // Planned against the running modules, none of which it may depend on.
    t.is((err as { code?: string } | undefined)?.code, "dependency");
    t.log(`load of ${pad(i * 21)} refused in ${(performance.now() - t0).toFixed(0)} ms: ${err?.message.slice(0, 120)}`);
    watch.sample();
  }
  const broken = await t.throwsAsync(h.manager.load("r19-broken"));
  t.log(`load of r19-broken: ${broken?.message}`);
  t.regex(broken?.message ?? "", /r19-broken has an invalid manifest:\n.*r19-broken\/module\.toml:3:\d+: /, "the answer names the file, line and column");
  t.regex(broken?.message ?? "", /fix: /, "and the fix");
  t.is((broken as { code?: string } | undefined)?.code, "invalid_manifest");
  const reload = await t.throwsAsync(h.manager.reload("r19-broken"));
  t.log(`reload of r19-broken: ${reload?.message.split("\n")[0]}`);
  t.regex(reload?.message ?? "", /r19-broken is not loaded: invalid manifest:\n.*r19-broken\/module\.toml:3:\d+: /, "a reload names it too (before: \"no module named\")");

  // The operator's terminal: modhost list, load and health against this host.
  const file = path.join(h.dir, "cli.toml");
  await writeFile(file, `[rpc]\nport = ${h.host.rpcServer!.address!.port}\ncookie_file = ${JSON.stringify(h.config.rpc.cookie_file)}\n`);
  const modhost = (...args: string[]) => run(process.execPath, [path.join(ROOT, "bin/modhost.js"), ...args, "--config", file], { cwd: ROOT, timeout: 60_000, maxBuffer: 16 << 20 }).catch((err: { stdout: string; stderr: string }) => err);
  const list = await modhost("list");
  const health = await modhost("health");
  const load = await modhost("load", "r19-broken");
  for (const [what, out] of [["list", list.stdout], ["health", health.stdout], ["load (stderr)", load.stderr]] as const) {
    t.false(RAW_CONTROL.test(out), `modhost ${what} prints no raw control character`);
  }
  t.regex(list.stdout, /^r19-\\x1b\]0;owned\\x07\\x1b\[2J\\nfake-row\s+-/m, "the directory's name is listed on one row, escaped");
  t.regex(list.stdout, /\\x1b\[31mred/, "the manifest's excerpt in its problem is escaped");
  t.regex(load.stderr, /r19-broken\/module\.toml:3:\d+/, "modhost load names the broken line");
  t.log(`modhost load r19-broken: ${load.stderr.trim().split("\n").slice(0, 4).join(" | ")}`);
  const listed = (await call(h, "list")) as unknown[];
  t.true(listed.length >= N + 3, `list answered with ${listed.length} modules`);
  watch.sample();
  await canary.stop();
  watch.assertCanary(t);
  await watch.finish(t, 1);
});

test.serial("the plan of MAX_MODULES modules each with 64 hard dependencies in one cycle, or 64 optional ones, or a chain failing at its end, takes at most 250 ms of the loop once checkRanges has run (it yields every few ms), with reasons of bounded length (before: 2-3.5 s in one turn, and a chain's reasons of MAX_MODULES nested clauses)", async (t) => {
  // Distinct ranges (no answer reused), as long as MAX_MANIFEST_RANGE_CHARS lets 64 of them be.
  const range = (i: number, k: number) => `>=0.0.${i}-rc.${k} <1.0.0`;
  const ring = Array.from({ length: MAX_MODULES }, (_, i) => manifest(pad(i), Object.fromEntries(Array.from({ length: 64 }, (_, k) => [pad((i + k + 1) % MAX_MODULES), range(i, k)]))));
  const dag = Array.from({ length: MAX_MODULES }, (_, i) => manifest(pad(i), Object.fromEntries(Array.from({ length: 64 }, (_, k) => i + k + 1).filter((j) => j < MAX_MODULES).map((j) => [pad(j), range(i, j)]))));
  const optional = Array.from({ length: MAX_MODULES }, (_, i) => manifest(pad(i), {}, Object.fromEntries(Array.from({ length: 64 }, (_, k) => [pad((i + k + 1) % MAX_MODULES), range(i, k + 100)]))));
  const chain = Array.from({ length: MAX_MODULES }, (_, i) => manifest(pad(i), i + 1 < MAX_MODULES ? { [pad(i + 1)]: ">=0.1.0" } : { absent: ">=1.0.0" }));
  for (const [what, manifests] of [["ring", ring], ["dag", dag], ["optional", optional], ["chain", chain]] as const) {
    t.true(Object.values(manifests[0]!.dependencies).join("").length <= MAX_MANIFEST_RANGE_CHARS);
    // The checks ahead: they let the loop turn every few ms (a single check can take longer under load).
    // Measured in this thread's CPU time: at load the thread also waits for a core, which is not the loop's work.
    const cpuNow = () => {
      const u = process.threadCpuUsage();
      return (u.user + u.system) / 1000;
    };
    let longest = 0;
    let last = cpuNow();
    let ticking = true;
    const tick = () => {
      const now = cpuNow();
      longest = Math.max(longest, now - last);
      last = now;
      if (ticking) setImmediate(tick);
    };
    setImmediate(tick);
    const check = await checkRanges(manifests, "0.1.0");
    ticking = false;
    let plan: ReturnType<typeof planLoad> | undefined;
    const ms = cpuMs(() => (plan = planLoad(manifests, "0.1.0", check)));
    const longestReason = Math.max(0, ...plan!.skipped.map((s) => s.reason.length));
    t.log(`${what}: checks ahead with turns of at most ${longest.toFixed(1)} ms of CPU; plan ${ms.toFixed(0)} ms of CPU: ${plan!.order.length} to load, ${plan!.skipped.length} skipped, ${plan!.notes.length} notes, longest reason ${longestReason} characters`);
    t.true(ms < 250, `${what}: the plan took ${ms.toFixed(0)} ms of CPU`);
    t.true(longest < 100, `${what}: the checks ahead let the loop turn (longest ${longest.toFixed(1)} ms of CPU)`);
    t.true(longestReason < 600, `${what}: the longest reason has ${longestReason} characters`);
    t.true(plan!.notes.length <= MAX_MODULES, `${what}: ${plan!.notes.length} notes, at most one per module`);
  }
  // What each plan decided, so a fast wrong answer fails too.
  t.is(planLoad(ring, "0.1.0").skipped.length, MAX_MODULES, "the ring is one cycle");
  t.is(planLoad(dag, "0.1.0").order[0]?.name, pad(MAX_MODULES - 1), "the DAG loads its last module first");
  t.is(planLoad(optional, "0.1.0").order.length, MAX_MODULES, "optional dependencies stop nothing");
  const chainPlan = planLoad(chain, "0.1.0");
  t.is(chainPlan.skipped.length, MAX_MODULES);
  t.is(chainPlan.skipped[0]?.reason, `depends on ${pad(1)}, which was not loaded because of ${pad(MAX_MODULES - 1)}: needs absent >=1.0.0, which is not installed`);
});

test("a module.toml whose version ranges pass MAX_MANIFEST_RANGE_CHARS in all (9 `||` chains of prereleases of ~250 characters) is refused naming it before semver reads them; 8 are read", async (t) => {
  const dir = await tempDir(t);
  const write = async (n: number) => {
    const file = path.join(dir, `m${n}.toml`);
    const deps = Array.from({ length: n }, (_, j) => `"d${j}" = "${longRange(j)}"`).join("\n");
    await writeFile(file, `name = "m"\nversion = "0.1.0"\nentry_point = "main.mjs"\nruntime = "native"\ncapabilities = []\n[dependencies]\n${deps}\n`);
    return file;
  };
  t.true(longRange(0).length <= MAX_RANGE_CHARS && longRange(0).length * 8 <= MAX_MANIFEST_RANGE_CHARS && longRange(0).length * 9 > MAX_MANIFEST_RANGE_CHARS, `ranges of ${longRange(0).length} characters`);
  const m = await loadManifest(await write(8));
  t.is(Object.keys(m.dependencies).length, 8);
  const err = (await t.throwsAsync(loadManifest(await write(9)))) as ConfigError;
  t.regex(err.message, /MAX_MANIFEST_RANGE_CHARS/);
  t.regex(err.problems?.[0]?.message ?? "", new RegExp(`more than the ${MAX_MANIFEST_RANGE_CHARS} a manifest may have`));
});

test("a modules_dir of MAX_MODULES + 1 entries is refused naming MAX_MODULES before any manifest is read; one of MAX_MODULES is read", async (t) => {
  const dir = await tempDir(t);
  for (let i = 0; i < MAX_MODULES; i++) await mkdir(path.join(dir, pad(i)));
  await writeFile(path.join(dir, pad(0), "module.toml"), `name = "${pad(0)}"\nversion = "0.1.0"\nentry_point = "main.ts"\ncapabilities = []\n`);
  const found = await discoverModules(dir);
  t.is(found.manifests.length + found.broken.length, 1, "MAX_MODULES entries are read");
  await writeFile(path.join(dir, "one-more"), "");
  const err = await t.throwsAsync(discoverModules(dir));
  t.regex(err?.message ?? "", new RegExp(`more than the ${MAX_MODULES} entries it may hold \\(MAX_MODULES\\)`));
  t.regex((err as { hint?: string } | undefined)?.hint ?? "", /keep at most/);
});

test("modhost check, and check --json, print a module directory named with ESC, BEL, CSI (U+009B) and a newline, and its manifest's excerpt holding ESC, escaped (before: raw on the operator's terminal; --json left U+009B raw)", async (t) => {
  const dir = await tempDir(t);
  const modulesDir = path.join(dir, "modules");
  const evil = "r19-\x1b]0;owned\x07\x1b[2J\nfake-row\u009b2J";
  await mkdir(path.join(modulesDir, evil), { recursive: true });
  await writeFile(path.join(modulesDir, evil, "module.toml"), `name = "x\x1b[31mred"\nversion = "0.1.0"\n`);
  const file = path.join(dir, "modhost.toml");
  await writeFile(file, `[modules]\nmodules_dir = ${JSON.stringify(modulesDir)}\ndata_dir = ${JSON.stringify(path.join(dir, "data"))}\n[storage]\ndir = ${JSON.stringify(path.join(dir, "storage"))}\n`);
  const out = await run(process.execPath, [path.join(ROOT, "bin/modhost.js"), "check", "--config", file], { cwd: ROOT, timeout: 60_000 }).catch((err: { stdout: string; stderr: string }) => err);
  t.log(out.stdout.split("\n").filter((l) => /r19|red/.test(l)).join("\n"));
  t.false(RAW_CONTROL.test(out.stdout), "no raw control character");
  t.regex(out.stdout, /✗ r19-\\x1b\]0;owned\\x07\\x1b\[2J\\nfake-row\\x9b2J/, "the name on one line, escaped");
  t.regex(out.stdout, /\\x1b\[31mred/, "the excerpt escaped");
  const json = await run(process.execPath, [path.join(ROOT, "bin/modhost.js"), "check", "--json", "--config", file], { cwd: ROOT, timeout: 60_000 }).catch((err: { stdout: string; stderr: string }) => err);
  t.false(RAW_CONTROL.test(json.stdout), "no raw control character in --json either");
  const parsed = JSON.parse(json.stdout) as { modules: Array<{ name: string }> };
  t.true(parsed.modules.some((m) => m.name === evil), "--json still carries the name exactly (as JSON escapes)");
});

/** A TypeScript module that fills its data directory with 5,000 files of long names holding bidi and C1 characters, then lists it as fast as its share lets it. */
const LISTER = {
  toml: `name = "r19-lister"\nversion = "0.1.0"\nentry_point = "index.ts"\ncapabilities = ["read_filesystem", "write_filesystem"]\n`,
  files: {
    "index.ts": `export default async function start(ctx: any) {
  void (async () => {
    const t0 = Date.now();
    const names: string[] = [];
    for (let i = 0; i < 5_000; i++) names.push("f".repeat(200) + String(i).padStart(5, "0") + "\\u202e\\u009b");
    let next = 0;
    let made = 0;
    const codes: Record<string, number> = {};
    const worker = async () => {
      for (let i = next++; i < names.length; i = next++) {
        try {
          await ctx.fs.writeFile(names[i], "");
          made++;
        } catch (e: any) {
          codes[e.code] = (codes[e.code] ?? 0) + 1;
        }
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    ctx.log.info("made " + made + " files in " + (Date.now() - t0) + " ms " + JSON.stringify(codes));
    const t1 = Date.now();
    let listed = 0;
    let entries = 0;
    const lister = async () => {
      while (Date.now() - t1 < 8_000) {
        try {
          const list = await ctx.fs.listDirectory(".");
          entries = list.length;
          if (!list.every((e: any, i: number) => i === 0 || list[i - 1].name < e.name) || !list.every((e: any) => e.name.endsWith("\\u202e\\u009b"))) codes.unsorted_or_renamed = (codes.unsorted_or_renamed ?? 0) + 1;
          listed++;
        } catch (e: any) {
          codes[e.code] = (codes[e.code] ?? 0) + 1;
        }
      }
    };
    await Promise.all(Array.from({ length: 4 }, lister));
    ctx.log.info("listed " + listed + " times, " + entries + " entries each, in " + (Date.now() - t1) + " ms " + JSON.stringify(codes));
  })();
}
`,
  },
};

test.serial("a TypeScript module that fills its data directory with 5,000 files of 207-character names holding U+202E and U+009B, then lists it 4 at a time for 8 s, gets every listing whole and sorted while the canary stores every block, RPC answers and the host's heap, log and descriptors stay bounded and the host thread's CPU for the listings stays near the module's host_cpu_ms_per_s (before: the sort of names sharing a 200-character prefix and the reading of the entries were not charged, ~590 ms a second against 250)", async (t) => {
  t.timeout(180_000);
  const h = await startHost(t, { modules: ["good"], inline: { "r19-lister": LISTER }, grants: { good: GOOD_GRANTS }, grantRequested: true });
  await h.waitForState("good", "running", 60_000);
  // No ticker on the loop (turns: false): this thread's CPU time is then the host's work alone.
  const watch = watchHost(t, h, { turns: false });
  const canary = watch.canaryLoop(500, 4);
  const made = await h.waitForLog(/^made \d+ files/, { source: "r19-lister", timeoutMs: 120_000 });
  t.log(made.message);
  const c0 = process.threadCpuUsage();
  const w0 = performance.now();
  const listed = await h.waitForLog(/^listed \d+ times/, { source: "r19-lister", timeoutMs: 60_000 });
  const c = process.threadCpuUsage(c0);
  const cpuPerS = (c.user + c.system) / 1000 / ((performance.now() - w0) / 1000);
  t.log(`${listed.message}; the host's thread used ${cpuPerS.toFixed(0)} ms of CPU a second meanwhile (load ${(await import("node:os")).loadavg()[0]!.toFixed(1)})`);
  // The same thread with the module idle: the canary and the watch's ticker.
  const b0 = process.threadCpuUsage();
  const bw0 = performance.now();
  await new Promise((r) => setTimeout(r, 3_000));
  const b = process.threadCpuUsage(b0);
  const idlePerS = (b.user + b.system) / 1000 / ((performance.now() - bw0) / 1000);
  t.log(`idle afterwards: ${idlePerS.toFixed(0)} ms of CPU a second`);
  const m = /^listed (\d+) times, (\d+) entries each/.exec(listed.message)!;
  t.true(Number(m[1]) > 0, "it listed");
  t.is(Number(m[2]), Number(/^made (\d+)/.exec(made.message)![1]), "every listing whole");
  t.is(Number(/^made (\d+)/.exec(made.message)![1]), 5_000, "every file made");
  // Its share is host_cpu_ms_per_s (250); what is not charged (Node reading the entries) comes on
  // top. Before the listing's loop work and sort were charged: ~590 ms a second above idle.
  t.true(cpuPerS - idlePerS < 460, `the listings took ${(cpuPerS - idlePerS).toFixed(0)} ms of the host's CPU a second above idle`);
  t.false(/unsorted_or_renamed|"[a-z_]+":/.test(listed.message), "every listing sorted, every name as written, no listing refused");
  await canary.stop();
  watch.assertCanary(t);
  await watch.finish(t, 1);
});
