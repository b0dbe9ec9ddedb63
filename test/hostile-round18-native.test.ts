// Hostile probes of round 18 (issue #8), under the real host and sandbox, each next to the
// canary ("good", which stores every block). Native modules attack what the host reads and
// keeps on their behalf:
//   r18-range   a module.toml whose dependency range is 30 KB of "0.x 0.x ..." (what fits under
//               MAX_MANIFEST_BYTES, 32 KiB): semver took 5.3 s to check such a range of 1 MB and
//               4.8 s to match a version against it, on the host's loop, at every discovery of the
//               modules (each start, load, unload and reload, twice for a command), when a manifest
//               could have 1 MiB. Now a range has at most MAX_RANGE_CHARS (256)
//               characters, counted before semver reads it; the manifest is refused naming it
//               (and a registry index's ranges are held to the same limit).
//   r18-entry   a module.toml whose entry_point is "../" repeated to 30 KB: Node's path.normalize
//               is superlinear in it (1.6 s at 100 KB, 97 s at 200 KB). Now at most MAX_ENTRY_POINT_CHARS
//               (1024), counted before the path is read.
//   r18-scope   the same as a read_filesystem path scope (300 KB took 182 s); now at most
//               MAX_PATH_SCOPE_CHARS (1024).
//   r18-churn   churns what the host keeps per module (test/fixtures/hostile-round18/main.ts):
//               subscriptions, JSON-RPC methods and module APIs of the longest names, timers,
//               storage trees, each added and removed thousands of times: nothing is left.
//   r18-wire    breaks the protocol's state machine on the raw frame client
//               (test/fixtures/hostile-round18/wire.ts): requests before ready, a second hello,
//               1,000 readys, answers to invocations never made and answers twice, requests with
//               ids at and past 2^53, negative and fractional, 64 in flight under one id: each
//               request is answered or refused, nothing else changes (a probe that found nothing).
// While they run: the canary stores every block within 5 s, RPC answers within 5 s, no turn of
// the host's loop takes 250 ms of its CPU, its heap, log and descriptors stay within bounds.
// The tests watch this process's loop, so they run one at a time.

import test from "ava";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadManifest, MAX_ENTRY_POINT_CHARS, MAX_RANGE_CHARS } from "../host/manifest.ts";
import { MAX_MANIFEST_BYTES, MAX_PROBLEM_CHARS } from "../host/toml.ts";
import type { ConfigError } from "../host/errors.ts";
import { MAX_PATH_SCOPE_CHARS } from "../capabilities/grants.ts";
import { parseIndex } from "../host/registry/format.ts";
import { buildModulesDir, startHost, tempDir, GOOD_GRANTS } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { watchHost } from "./helpers/host-watch.ts";
import { call } from "./helpers/rpc.ts";

const PROBE = fileURLToPath(new URL("./fixtures/hostile-round18/main.ts", import.meta.url));
const WIRE = fileURLToPath(new URL("./fixtures/hostile-round18/wire.ts", import.meta.url));

test.serial(`a native module whose module.toml names a dependency range of 30 KB ("0.x 0.x ...") is refused naming MAX_RANGE_CHARS before semver reads the range, one whose entry_point and one whose read_filesystem scope is "../" repeated to 30 KB naming MAX_ENTRY_POINT_CHARS and MAX_PATH_SCOPE_CHARS before the path is normalised, at the host's start and at each load asked for, with no turn of the host's loop over 250 ms of CPU while the canary stores every block and RPC answers (before, with manifests of up to 1 MiB: 5 s of the loop to check a range of 1 MB and 5 s to match it, and seconds to normalise a path of 100 KB, at every discovery)`, async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  const modDir = await writeNodeNative(modulesDir, "r18-range", PROBE);
  const range = Array.from({ length: 7_500 }, () => "0.x").join(" ");
  const toml = `name = "r18-range"\nversion = "0.1.0"\nentry_point = "main.mjs"\nruntime = "native"\ncapabilities = []\n[dependencies]\ngood = "${range}"\n`;
  t.true(Buffer.byteLength(toml) <= MAX_MANIFEST_BYTES, "the manifest is within MAX_MANIFEST_BYTES");
  await writeFile(path.join(modDir, "module.toml"), toml);
  // An entry point of "../" repeated to 30 KB (path.normalize took 1.6 s at 100 KB and 97 s at 200 KB).
  const entryDir = await writeNodeNative(modulesDir, "r18-entry", PROBE);
  const entry = "../".repeat(10_000);
  await writeFile(path.join(entryDir, "module.toml"), `name = "r18-entry"\nversion = "0.1.0"\nentry_point = "${entry}"\nruntime = "native"\ncapabilities = []\n`);
  // A path scope of "../" repeated to 30 KB: the same normalisation (300 KB took 182 s).
  const scopeDir = await writeNodeNative(modulesDir, "r18-scope", PROBE);
  await writeFile(path.join(scopeDir, "module.toml"), `name = "r18-scope"\nversion = "0.1.0"\nentry_point = "main.mjs"\nruntime = "native"\ncapabilities = ["read_filesystem=${entry}x"]\n`);
  const h = await startHost(t, { dir, modules: [], grants: { good: GOOD_GRANTS, "r18-range": [], "r18-entry": [], "r18-scope": [] }, moduleConfigs: { "r18-range": { rounds: 0, tree_rounds: 0, at_once: 1 } } });
  await h.waitForState("good", "running", 60_000);
  const entryProblem = h.status("r18-entry")?.problem ?? "";
  t.log(`r18-entry at start: ${h.status("r18-entry")?.state}: ${entryProblem.slice(0, 300)}`);
  t.regex(entryProblem, new RegExp(`an entry_point of ${entry.length} characters, more than the ${MAX_ENTRY_POINT_CHARS} it may have \\(MAX_ENTRY_POINT_CHARS\\)`), "the manifest with the long entry point is refused naming the limit");
  t.true(entryProblem.length < 2000, `the problem does not repeat the entry point (${entryProblem.length} characters)`);
  const scopeProblem = h.status("r18-scope")?.problem ?? "";
  t.log(`r18-scope at start: ${h.status("r18-scope")?.state}: ${scopeProblem.slice(0, 300)}`);
  t.regex(scopeProblem, new RegExp(`a path scope of ${entry.length + 1} characters, more than the ${MAX_PATH_SCOPE_CHARS} it may have \\(MAX_PATH_SCOPE_CHARS\\)`), "the manifest with the long path scope is refused naming the limit");
  t.true(scopeProblem.length < 2000, `the problem does not repeat the path scope (${scopeProblem.length} characters)`);
  const problem = h.status("r18-range")?.problem ?? "";
  t.log(`r18-range at start: ${h.status("r18-range")?.state}: ${problem.slice(0, 300)}`);
  t.regex(problem, new RegExp(`${range.length} characters, more than the ${MAX_RANGE_CHARS} a range may have \\(MAX_RANGE_CHARS\\)`), "the manifest is refused naming the limit");
  t.true(problem.length < 2000, `the problem does not repeat the range (${problem.length} characters)`);

  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(500, 4);
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    const err = await t.throwsAsync(h.manager.load(["r18-range", "r18-entry", "r18-scope"][i]!));
    const listed = await call(h, "list");
    t.log(`load ${i + 1}: refused in ${(performance.now() - t0).toFixed(0)} ms: ${err?.message.slice(0, 160)}; list answered with ${(listed as unknown[]).length} modules`);
    watch.sample();
  }
  await canary.stop();
  t.regex(h.status("r18-range")?.problem ?? "", /MAX_RANGE_CHARS/, "its status still names the limit");
  watch.assertCanary(t);
  await watch.finish(t, 1);
});

test("a module.toml whose version, [binary] hash, config field type and signature threshold are each 7 KB (four fit in MAX_MANIFEST_BYTES) is refused with each problem cut at MAX_PROBLEM_CHARS, naming it (before: each quoted its value whole)", async (t) => {
  const dir = await tempDir(t);
  const big = "x".repeat(7_000);
  const file = path.join(dir, "module.toml");
  await writeFile(file, `name = "m"\nversion = "${big}"\nentry_point = "a.ts"\ncapabilities = []\n[binary]\nhash = "sha256:${big}"\n[config_schema]\nx = { type = "${big}" }\n[signatures]\nthreshold = "${big}"\n`);
  const err = (await t.throwsAsync(loadManifest(file))) as ConfigError;
  const problems = err.problems ?? [];
  t.log(problems.map((p) => `${p.path}: ${p.message.length} characters`).join("; "));
  t.true(problems.length >= 4, `${problems.length} problems`);
  for (const p of problems) {
    t.true(p.message.length <= MAX_PROBLEM_CHARS + 80, `${p.path}: ${p.message.length} characters`);
    t.regex(p.message, /\.\.\. \(\d+ characters, cut at MAX_PROBLEM_CHARS\)$/, `${p.path} names the cut`);
  }
});

test("a registry index whose module version names a dependency range longer than MAX_RANGE_CHARS is refused when it is read, naming the limit; one of MAX_RANGE_CHARS is taken", (t) => {
  const h64 = "ab".repeat(32);
  const index = (range: string) => Buffer.from(JSON.stringify({
    format: "modhost-registry-index-v1", version: 1, generated: "2026-01-01T00:00:00Z", expires: "2030-01-01T00:00:00Z",
    modules: { m: { versions: { "1.0.0": {
      runtime: "native", hash: `sha256:${h64}`, manifest: { sha256: h64, size: 100 },
      files: [{ path: "main", size: 1, sha256: h64 }], capabilities: [], dependencies: { good: range }, signers: [], published: "2026-01-01T00:00:00Z",
    } } } },
  }));
  const long = Array.from({ length: 250_000 }, () => "0.x").join(" ");
  const err = t.throws(() => parseIndex(index(long), "test"));
  t.regex(err?.message ?? "", new RegExp(`longer than the ${MAX_RANGE_CHARS} characters a range may have \\(MAX_RANGE_CHARS\\)`));
  t.is(Object.keys(parseIndex(index("0.x ".repeat(MAX_RANGE_CHARS / 4).trim()), "test").modules).length, 1);
});

test.serial("a native module that adds and removes, thousands of times each, a subscription to a fresh event type, a JSON-RPC method of the longest name with a 1 KiB description, a module API of 256 of the longest names, a timer and a storage tree with a value in it is answered every time and leaves nothing behind (no method, API, timer, tree or byte of storage), while the canary stores every block, RPC answers, no turn of the host's loop takes 250 ms of CPU and the host's heap grows less than 32 MB (before: +89 MB for 10,000 trees)", async (t) => {
  t.timeout(600_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  const caps = ["subscribe_events", "register_rpc_endpoint", "register_module_api", "manage_timers", "read_storage", "write_storage", "manage_storage"];
  await writeNodeNative(modulesDir, "r18-churn", PROBE, caps);
  const rounds = 30_000;
  const treeRounds = 10_000;
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, "r18-churn": caps },
    moduleConfigs: { "r18-churn": { rounds, tree_rounds: treeRounds, at_once: 32 } },
    moduleLimits: { "r18-churn": { requests_per_second: 20_000, data_volume: "scan" } },
  });
  await h.waitForState("good", "running", 60_000);
  const watch = watchHost(t, h);
  const mark = h.mark();
  const canary = watch.canaryLoop(500, 4);
  const report = (await h.waitForLog(/^probe report$/, { source: "r18-churn", since: 0, timeoutMs: 480_000 })).fields as Record<string, any>;
  await canary.stop();
  t.log(JSON.stringify(report));
  t.log(`canary rounds during the churn: ${watch.tally.rounds}; log records since the watch began: ${h.records.length - mark}`);
  t.deepEqual(report.subscribe.codes, { ok: rounds }, "every subscription added and removed");
  t.deepEqual(report.rpc.codes, { ok: rounds }, "every JSON-RPC method registered and unregistered");
  t.deepEqual(report.api.codes, { ok: rounds / 100 }, "every module API registered and withdrawn");
  t.deepEqual(report.timers.codes, { ok: rounds }, "every timer armed and cancelled");
  t.deepEqual(report.trees.codes, { ok: treeRounds }, "every tree created, written and dropped");
  t.deepEqual(report.left.trees, [], "no tree is left");
  t.is(report.left.usage.bytes, 0, "no byte of storage is left");
  const methods = (await call(h, "rpc_methods")) as { modules: Array<{ module: string }> };
  t.deepEqual(methods.modules.filter((m) => m.module === "r18-churn"), [], "no JSON-RPC method of it is left");
  const info = (await call(h, "info", { module: "r18-churn" })) as Record<string, any>;
  t.log(`info: ${JSON.stringify(info).slice(0, 400)}`);
  t.is(h.status("r18-churn")?.state, "running", "it runs");
  watch.sample();
  // Before: each tree created and dropped kept its sublevels attached to the store's root, ~9 KB
  // of the host's heap each until the module stopped (10,000: +89 MB).
  t.true(watch.tally.heapMb < 32, `the host's heap grew ${watch.tally.heapMb.toFixed(1)} MB at most during the churn`);
  watch.assertCanary(t);
  await watch.finish(t, 1);
});

test.serial("a native module that breaks the protocol's state machine (requests before ready, a second hello, 1,000 readys, answers to invocations never made with ids 0, -1, 2^53 and 1.5, every health check answered twice, requests with ids 2^53 - 1, 2^53, -1, 0 and 1.5, 64 requests in flight under one id) has every request answered or refused, stays connected and healthy, while the canary stores every block and RPC answers", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  await writeNodeNative(modulesDir, "r18-wire", WIRE, ["read_chain_state"]);
  const h = await startHost(t, { dir, modules: [], grants: { good: GOOD_GRANTS, "r18-wire": ["read_chain_state"] }, moduleLimits: { "r18-wire": { data_volume: "scan", health_interval_ms: 500 } } });
  await h.waitForState("good", "running", 60_000);
  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(500, 4);
  const report = (await h.waitForLog(/^probe report$/, { source: "r18-wire", since: 0, timeoutMs: 120_000 })).fields as Record<string, any>;
  await canary.stop();
  t.log(JSON.stringify(report));
  t.true(report.beforeReady.ok, "a request before ready is served");
  t.true(report.afterFlood.ok, "after a second hello, 1,000 readys and answers to no invocation, requests are served");
  t.true(report.afterAll.ok, "and after the odd ids");
  t.is(report.sameId.answered, 64, "64 requests under one id are each answered");
  t.is(report.oddIds.length, 5, "each request with an odd id is answered or refused");
  t.true(report.healthAnswers >= 3, `health checks answered twice each: ${report.healthAnswers}`);
  t.deepEqual(report.stray, [], "nothing but answers and invocations reaches it");
  t.is(h.status("r18-wire")?.state, "running", "it stays connected");
  t.is(h.status("r18-wire")?.restarts, 0, "it was never restarted");
  watch.assertCanary(t);
  await watch.finish(t, 1);
});
