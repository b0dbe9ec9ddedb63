// The config schema (host/config.ts, host/schema.ts): what it adds over valibot's own object
// and record schemas, that rules across keys still run beside the schema's problems, and that
// the operator guide's key tables are generated from it.

import test from "ava";
import { readFile } from "node:fs/promises";
import { parse } from "smol-toml";
import * as v from "valibot";
import { committedConfigTables, configTables, keyTable, spliceConfigTables } from "../host/config-docs.ts";
import { DEFAULT_LIMITS, DEFAULT_LIMITS_SCHEMA, grantsFor, parseConfig } from "../host/config.ts";
import { ConfigError, type ConfigProblem } from "../host/errors.ts";
import { doc, int, str, table } from "../host/schema.ts";

function problemsOf(toml: string): ConfigProblem[] {
  try {
    parseConfig(parse(toml) as Record<string, unknown>, toml, "/x/modhost.toml");
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

test("the operator guide's key tables are the config schema's (regenerate with: node bin/modhost.js docs --write)", async (t) => {
  const guide = await readFile(new URL("../docs/operator-guide.md", import.meta.url), "utf8");
  const committed = committedConfigTables(guide);
  const generated = configTables();
  t.deepEqual(Object.keys(generated), ["host", "chain", "modules", "hooks", "limits", "rpc", "registry"]);
  for (const [name, text] of Object.entries(generated)) t.is(committed[name], text, name);
  t.is(spliceConfigTables(guide), guide);
});

test("a key's row comes from its schema: description, default, shown default, label; a key without a description is refused", (t) => {
  const schema = table({
    port: v.optional(doc(int({ min: 1 }), "the port"), 8080),
    name: v.optional(doc(str(), "who", { shown: "none", label: "`name`, `alias`" })),
    alias: v.optional(doc(str(), "", { hidden: true })),
  });
  t.is(keyTable(schema), "| Key | Default | Meaning |\n|---|---|---|\n| `port` | `8080` | the port |\n| `name`, `alias` | none | who |");
  t.throws(() => keyTable(table({ bare: v.optional(int()) })), { message: /config key bare has no description/ });
});

test("every limit of DEFAULT_LIMITS is a key of [modules.default_limits], with its default", (t) => {
  t.deepEqual(Object.keys(DEFAULT_LIMITS_SCHEMA.entries), Object.keys(DEFAULT_LIMITS));
  t.deepEqual(v.parse(DEFAULT_LIMITS_SCHEMA, {}), { ...DEFAULT_LIMITS });
  t.true(configTables()["limits"]!.includes("| `memory_mb` | `128` |"));
});

test("every unknown key of one table is reported, each with did-you-mean (valibot's strictObject stops at the first)", (t) => {
  const problems = problemsOf('[host]\nlog_levle = "info"\nlog_fromat = "json"\naudit_lgo = "a"\n');
  t.deepEqual(
    problems.map((p) => [p.line, p.path, p.message, p.hint]),
    [
      [2, "host.log_levle", 'unknown key "log_levle"', 'did you mean "log_level"?'],
      [3, "host.log_fromat", 'unknown key "log_fromat"', 'did you mean "log_format"?'],
      [4, "host.audit_lgo", 'unknown key "audit_lgo"', 'did you mean "audit_log"?'],
    ],
  );
});

test('a module named "constructor" keeps its grants and its limits are checked (valibot\'s record drops such keys)', (t) => {
  const toml = '[modules.grants.constructor]\nallow = ["read_blockchain"]\n';
  const config = parseConfig(parse(toml) as Record<string, unknown>, toml, "/x/modhost.toml");
  t.deepEqual(grantsFor(config, "constructor").allow, [{ permission: "read_blockchain", scope: "all" }]);
  const problems = problemsOf("[modules.limits.constructor]\nmemory_mb = 4\n");
  t.deepEqual(problems.map((p) => [p.path, p.message]), [["modules.limits.constructor.memory_mb", "4 is out of range"]]);
});

test("arrays and dates are not tables", (t) => {
  const problems = problemsOf("host = [1]\n[modules.module_configs]\nx = 1979-05-27\n");
  t.deepEqual(
    problems.map((p) => [p.path, p.message, p.hint]),
    [
      ["host", "expected a table, found an array", "write it as a [host] section or an inline table { ... }"],
      ["modules.module_configs.x", "expected a table, found a date", "write it as a [modules.module_configs.x] section or an inline table { ... }"],
    ],
  );
});

test("rules across keys are reported together with the schema's problems of the same table", (t) => {
  const problems = problemsOf('[rpc]\nbind = "0.0.0.0"\nport = "80"\nuser = "admin"\n');
  t.deepEqual(
    problems.map((p) => [p.line, p.path, p.message]),
    [
      [2, "rpc.bind", '"0.0.0.0" is not a loopback address: the RPC server would be reachable from other machines'],
      [3, "rpc.port", "expected a whole number, found a string"],
      [4, "rpc.user", "user and password go together"],
    ],
  );
  t.is(problems[1]!.hint, "remove the quotes: port = 80");
});

test("a trust threshold is checked against the valid keys listed, beside the bad key's own problem", (t) => {
  const key = "f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9";
  const problems = problemsOf(`[modules.trust.m]\nkeys = ["${key}", "zz"]\nthreshold = 2\n`);
  t.deepEqual(
    problems.map((p) => [p.path, p.message]),
    [
      ["modules.trust.m.keys[1]", '"zz" is not a secp256k1 public key'],
      ["modules.trust.m.threshold", "threshold 2 is more than the 1 key(s) listed"],
    ],
  );
});
