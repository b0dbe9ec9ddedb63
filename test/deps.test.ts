import test from "ava";
import { planLoad, type LoadPlan } from "../host/deps.ts";
import { normaliseRange, type ModuleManifest } from "../host/manifest.ts";

function mod(name: string, version = "1.0.0", dependencies: Record<string, string> = {}, optional: Record<string, string> = {}, dir = `/mods/${name}`): ModuleManifest {
  const norm = (r: Record<string, string>) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, normaliseRange(v) ?? v]));
  return {
    file: `${dir}/module.toml`,
    dir,
    name,
    version,
    entry_point: "index.ts",
    runtime: "isolate",
    capabilities: [],
    dependencies: norm(dependencies),
    optional_dependencies: norm(optional),
    config_schema: {},
  };
}

const names = (plan: LoadPlan) => plan.order.map((m) => m.name);
const reason = (plan: LoadPlan, name: string) => plan.skipped.find((s) => s.name === name)?.reason;

/** Does `app` (needing dep at `range`) load when dep is at `version`? */
function loads(range: string, version: string): boolean {
  const plan = planLoad([mod("app", "1.0.0", { dep: range }), mod("dep", version)], "0.1.0");
  return names(plan).includes("app");
}

test(">= and <=", (t) => {
  t.true(loads(">=1.0.0", "1.0.0"));
  t.true(loads(">=1.0.0", "3.2.1"));
  t.false(loads(">=1.0.0", "0.9.9"));
  t.true(loads("<=2.0.0", "2.0.0"));
  t.false(loads("<=2.0.0", "2.0.1"));
});

test("= is an exact match", (t) => {
  t.true(loads("=1.2.3", "1.2.3"));
  t.false(loads("=1.2.3", "1.2.4"));
});

test("^ and ~ are actually satisfied (the BLVM node never satisfies them)", (t) => {
  t.true(loads("^1.0.0", "1.0.0"));
  t.true(loads("^1.0.0", "1.9.3"));
  t.false(loads("^1.0.0", "2.0.0"));
  t.false(loads("^1.0.0", "0.9.0"));
  t.true(loads("~1.2.0", "1.2.0"));
  t.true(loads("~1.2.0", "1.2.9"));
  t.false(loads("~1.2.0", "1.3.0"));
});

test("combined ranges, with spaces or BLVM's commas", (t) => {
  t.true(loads(">=1.0.0 <2.0.0", "1.5.0"));
  t.false(loads(">=1.0.0 <2.0.0", "2.0.0"));
  t.true(loads(">=1.0.0,<2.0.0", "1.5.0"));
  t.false(loads(">=1.0.0,<2.0.0", "2.0.0"));
  t.false(loads(">=1.0.0,<2.0.0", "0.5.0"));
});

test("a missing dependency skips the module and, transitively, its dependents", (t) => {
  const plan = planLoad([mod("a", "1.0.0", { b: ">=1.0.0" }), mod("b", "1.0.0", { "price-feed": "^2.0.0" }), mod("c")], "0.1.0");
  t.deepEqual(names(plan), ["c"]);
  t.is(reason(plan, "b"), "needs price-feed ^2.0.0, which is not installed");
  t.is(reason(plan, "a"), "depends on b, which was not loaded: needs price-feed ^2.0.0, which is not installed");
});

test("a wrong version names the dependency, the range and what was found", (t) => {
  const plan = planLoad([mod("app", "1.0.0", { "price-feed": "^2.0.0" }), mod("price-feed", "1.4.0")], "0.1.0");
  t.deepEqual(names(plan), ["price-feed"]);
  t.is(reason(plan, "app"), "needs price-feed ^2.0.0, found 1.4.0");
});

test("dependencies load first; ties are broken by name", (t) => {
  const plan = planLoad([mod("zeta"), mod("app", "1.0.0", { lib: ">=1.0.0", zeta: "*" }), mod("lib"), mod("alpha")], "0.1.0");
  t.deepEqual(names(plan), ["alpha", "lib", "zeta", "app"]);
  t.deepEqual(plan.skipped, []);
  // The input order does not matter.
  const reversed = planLoad([mod("alpha"), mod("lib"), mod("app", "1.0.0", { lib: ">=1.0.0", zeta: "*" }), mod("zeta")], "0.1.0");
  t.deepEqual(names(reversed), names(plan));
});

test("a present optional dependency orders the load; an absent one is ignored", (t) => {
  // Without the optional dependency "a" would come first by name.
  const present = planLoad([mod("a", "1.0.0", {}, { z: ">=1.0.0" }), mod("z")], "0.1.0");
  t.deepEqual(names(present), ["z", "a"]);
  const absent = planLoad([mod("a", "1.0.0", {}, { z: ">=1.0.0" })], "0.1.0");
  t.deepEqual(names(absent), ["a"]);
  t.deepEqual(absent.skipped, []);
});

test("an optional dependency of the wrong version is ignored and noted", (t) => {
  const plan = planLoad([mod("a", "1.0.0", {}, { z: "^2.0.0" }), mod("z", "1.0.0")], "0.1.0");
  t.deepEqual(names(plan), ["a", "z"], "no ordering constraint from it");
  t.deepEqual(plan.skipped, []);
  t.is(plan.notes[0]?.name, "a");
  t.regex(plan.notes[0]?.note ?? "", /z \^2\.0\.0 ignored: found 1\.0\.0/);
});

test("an optional dependency that would close a cycle does not stop anything", (t) => {
  const plan = planLoad([mod("a", "1.0.0", { b: "*" }), mod("b", "1.0.0", {}, { a: "*" })], "0.1.0");
  t.deepEqual(names(plan), ["b", "a"]);
  t.deepEqual(plan.skipped, []);
  t.is(plan.notes.length, 1);
});

test("a cycle skips every module on it with the full path, unrelated modules load", (t) => {
  const plan = planLoad(
    [mod("b", "1.0.0", { c: "*" }), mod("c", "1.0.0", { a: "*" }), mod("a", "1.0.0", { b: "*" }), mod("d", "1.0.0", { a: "*" }), mod("solo"), mod("user", "1.0.0", { solo: "*" })],
    "0.1.0",
  );
  t.deepEqual(names(plan), ["solo", "user"]);
  for (const n of ["a", "b", "c"]) t.is(reason(plan, n), "dependency cycle: a -> b -> c -> a");
  t.is(reason(plan, "d"), "depends on a, which was not loaded: dependency cycle: a -> b -> c -> a");
});

test("two modules with the same name are both skipped, naming both files", (t) => {
  const plan = planLoad([mod("dup", "1.0.0", {}, {}, "/x/dup"), mod("dup", "2.0.0", {}, {}, "/y/dup"), mod("user", "1.0.0", { dup: "*" }), mod("ok")], "0.1.0");
  t.deepEqual(names(plan), ["ok"]);
  const dups = plan.skipped.filter((s) => s.name === "dup");
  t.is(dups.length, 2);
  for (const d of dups) t.is(d.reason, 'duplicate module name "dup" in /x/dup/module.toml and /y/dup/module.toml');
  t.regex(reason(plan, "user") ?? "", /^depends on dup, which was not loaded: duplicate module name/);
});

test("node dependencies are checked against the host version", (t) => {
  const mods = [mod("new-host", "1.0.0", { modhost: ">=0.2.0" }), mod("old-host", "1.0.0", { modhost: ">=0.1.0" }), mod("blvm", "1.0.0", { "bllvm-node": ">=1.0.0" })];
  const plan = planLoad(mods, "0.1.0");
  t.deepEqual(names(plan), ["old-host"]);
  t.is(reason(plan, "new-host"), "needs modhost >=0.2.0, found 0.1.0");
  t.is(reason(plan, "blvm"), "needs bllvm-node >=1.0.0, found 0.1.0");
  t.deepEqual(names(planLoad(mods, "1.0.0")), ["blvm", "new-host", "old-host"]);
});

test("the plan is deterministic and skipped entries are sorted by name", (t) => {
  const mods = [mod("m3", "1.0.0", { x: "*" }), mod("m1", "1.0.0", { y: "*" }), mod("m2")];
  const plan = planLoad(mods, "0.1.0");
  t.deepEqual(plan.skipped.map((s) => s.name), ["m1", "m3"]);
  t.deepEqual(planLoad([...mods].reverse(), "0.1.0"), plan);
});
