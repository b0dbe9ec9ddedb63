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
// While they run: the canary stores every block within 5 s, RPC answers within 5 s, no turn of
// the host's loop takes 250 ms of its CPU, its heap, log and descriptors stay within bounds.
// The tests watch this process's loop, so they run one at a time.

import test from "ava";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { MAX_MANIFEST_BYTES, MAX_REPORTED_PROBLEMS } from "../host/toml.ts";
import { buildModulesDir, GOOD_GRANTS, startHost, tempDir } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { watchHost } from "./helpers/host-watch.ts";
import { call } from "./helpers/rpc.ts";

const IDLE = fileURLToPath(new URL("./fixtures/hostile-round20-probes/idle.ts", import.meta.url));

const cpuMs = () => {
  const u = process.threadCpuUsage();
  return (u.user + u.system) / 1000;
};
const keys = (n: number, len: number, suffix = "") => Array.from({ length: n }, (_, i) => `k${String(i).padStart(len - 1, "0")}${suffix}`);

test.serial("a module whose [config_schema] has 250 settings of 120 characters, configured by the operator with 2,000 keys it does not declare, is refused at each load in well under 250 ms of the host's CPU, the first MAX_REPORTED_PROBLEMS named and the rest counted, while the canary stores every block and RPC answers (before: 7.5 s of CPU in one turn, a guess of CLOSEST_MAX_CELLS per key, shown or not)", async (t) => {
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
    t.regex(message, new RegExp(`${2_000 - MAX_REPORTED_PROBLEMS} more problem\\(s\\) not shown \\(MAX_REPORTED_PROBLEMS\\)`), "the rest are counted, naming the limit");
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
