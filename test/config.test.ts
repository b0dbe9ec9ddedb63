import test from "ava";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { ConfigError, formatProblem, type ConfigProblem } from "../host/errors.ts";
import { DEFAULT_LIMITS, defaultConfig, grantsFor, limitsFor, loadConfig, missingGrantPolicy, parseConfig } from "../host/config.ts";
import { locate } from "../host/toml.ts";

async function writeConfig(toml: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "modhost-config-"));
  const file = path.join(dir, "modhost.toml");
  await writeFile(file, toml);
  return file;
}

async function problemsOf(toml: string): Promise<ConfigProblem[]> {
  const err = await loadConfig(await writeConfig(toml)).then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof ConfigError)) throw new Error(`expected a ConfigError, got ${String(err)}`);
  return err.problems;
}

const FULL = `[host]
log_level = "debug"
log_format = "json"

[chain]
backend = "embedded"
block_interval_seconds = 10
transactions_per_block = 0
mature_blocks = 100
data_dir = "chaindata"
block_cache = 8
utxo_cache = 500
max_blocks_per_call = 50

[modules]
enabled = true
modules_dir = "mods"
data_dir = "/var/lib/modhost/modules"
enabled_modules = ["block-logger", "price-feed"]
disabled_modules = ["legacy"]
on_missing_grant = "reduce"

[modules.module_configs.block-logger]
interval = 5
targets = ["a", "b"]

[modules.default_limits]
memory_mb = 64
restart = "always"

[modules.limits.price-feed]
memory_mb = 256
cpu_time_ms = 50

[modules.grants.block-logger]
allow = ["read_blockchain", "subscribe_events=NewBlock,ChainReorg", "write_filesystem=reports"]
deny = ["network_access"]
on_missing_grant = "refuse"

[modules.grants."price-feed"]
allow = ["network_access=api.example.com:443", "call_module=block-logger"]

[storage]
dir = "state"
`;

test("defaults", (t) => {
  const c = defaultConfig("/srv/node");
  t.is(c.file, null);
  t.is(c.dir, "/srv/node");
  t.deepEqual(c.host, { log_level: "info", log_format: "pretty", audit_log: "/srv/node/data/audit.log", audit_max_mb: 64, audit_keep: 4, health_event_seconds: 60, disk_space_low_mb: 1024, isolate_pool: 1, uid_claims_dir: "/var/lib/modhost/uid-claims", pool_jobs: 0, dns_servers: [], module_bytes_mb: 1024, turn_budget_ms: 5 });
  t.deepEqual(c.chain, {
    backend: "embedded", block_interval_seconds: 0, transactions_per_block: 3, mature_blocks: 101,
    data_dir: "/srv/node/data/chain", block_cache: 64, block_cache_mb: 128, utxo_cache: 20_000, utxo_cache_mb: 64, max_mempool_mb: 300, max_chain_mb: 4096, max_blocks_per_call: 1000,
    rpc_url: "http://127.0.0.1:8332/", rpc_cookie_file: null, rpc_user: null, rpc_password: null, zmq_sequence: null, poll_interval_ms: 0, core_rpc_bind: null, core_zmq_bind: null,
  });
  t.is(c.modules.enabled, true);
  t.is(c.modules.modules_dir, "/srv/node/modules");
  t.is(c.modules.data_dir, "/srv/node/data/modules");
  t.is(c.storage.dir, "/srv/node/data/storage");
  t.is(c.modules.on_missing_grant, "refuse");
  t.deepEqual(c.modules.default_limits, DEFAULT_LIMITS);
  t.is(DEFAULT_LIMITS.memory_mb, 128);
  t.is(DEFAULT_LIMITS.storage_max_bytes, 64 * 1024 * 1024);
  t.is(DEFAULT_LIMITS.restart, "on-failure");
  t.is(DEFAULT_LIMITS.event_queue, 1024);
});

test("an empty file gives the defaults, relative to the file's directory", async (t) => {
  const file = await writeConfig("");
  const c = await loadConfig(file);
  t.is(c.file, file);
  t.is(c.source, "");
  t.deepEqual({ ...c, file: null, source: null }, defaultConfig(path.dirname(file)));
});

test("a full config parses, with paths resolved against the config directory", async (t) => {
  const file = await writeConfig(FULL);
  const dir = path.dirname(file);
  const c = await loadConfig(file);
  t.is(c.host.log_level, "debug");
  t.is(c.host.log_format, "json");
  t.deepEqual(c.chain, {
    backend: "embedded", block_interval_seconds: 10, transactions_per_block: 0, mature_blocks: 100,
    data_dir: path.join(dir, "chaindata"), block_cache: 8, block_cache_mb: 128, utxo_cache: 500, utxo_cache_mb: 64, max_mempool_mb: 300, max_chain_mb: 4096, max_blocks_per_call: 50,
    rpc_url: "http://127.0.0.1:8332/", rpc_cookie_file: null, rpc_user: null, rpc_password: null, zmq_sequence: null, poll_interval_ms: 0, core_rpc_bind: null, core_zmq_bind: null,
  });
  t.is(c.modules.modules_dir, path.join(dir, "mods"));
  t.is(c.modules.data_dir, "/var/lib/modhost/modules");
  t.is(c.storage.dir, path.join(dir, "state"));
  t.deepEqual(c.modules.enabled_modules, ["block-logger", "price-feed"]);
  t.deepEqual(c.modules.disabled_modules, ["legacy"]);
  t.is(c.modules.on_missing_grant, "reduce");
  t.deepEqual({ ...c.modules.module_configs["block-logger"] }, { interval: 5, targets: ["a", "b"] });
  t.deepEqual(c.modules.default_limits, { ...DEFAULT_LIMITS, memory_mb: 64, restart: "always" });
  t.deepEqual(c.modules.limits["price-feed"], { memory_mb: 256, cpu_time_ms: 50 });
});

test("grant descriptors are parsed, including scoped ones", async (t) => {
  const c = await loadConfig(await writeConfig(FULL));
  const bl = grantsFor(c, "block-logger");
  t.deepEqual(bl.allow, [
    { permission: "read_blockchain", scope: "all" },
    { permission: "subscribe_events", scope: ["ChainReorg", "NewBlock"] },
    { permission: "write_filesystem", scope: ["reports"] },
  ]);
  t.deepEqual(bl.deny, [{ permission: "network_access", scope: "all" }]);
  t.deepEqual(grantsFor(c, "price-feed").allow, [
    { permission: "network_access", scope: ["api.example.com:443"] },
    { permission: "call_module", scope: ["block-logger"] },
  ]);
});

test("limitsFor, grantsFor and missingGrantPolicy merge correctly", async (t) => {
  const c = await loadConfig(await writeConfig(FULL));
  // default_limits over DEFAULT_LIMITS, then the module's own limits.
  t.deepEqual(limitsFor(c, "price-feed"), { ...DEFAULT_LIMITS, memory_mb: 256, cpu_time_ms: 50, restart: "always" });
  t.deepEqual(limitsFor(c, "block-logger"), { ...DEFAULT_LIMITS, memory_mb: 64, restart: "always" });
  t.deepEqual(grantsFor(c, "unknown-module"), { allow: [], deny: [] });
  t.deepEqual(grantsFor(c, "constructor"), { allow: [], deny: [] }, "no prototype lookups");
  t.is(missingGrantPolicy(c, "block-logger"), "refuse", "per-module policy wins");
  t.is(missingGrantPolicy(c, "price-feed"), "reduce", "falls back to the global policy");
  t.is(missingGrantPolicy(defaultConfig("/"), "x"), "refuse");
});

test("a bad grant is reported at its array element with the hint", async (t) => {
  const toml = `[modules.grants.block-logger]
allow = [
  "read_blockchain",
  "read_blockchian",
]
`;
  const file = await writeConfig(toml);
  const err = await t.throwsAsync(loadConfig(file), { instanceOf: ConfigError });
  t.is(err!.problems.length, 1);
  const p = err!.problems[0]!;
  t.is(p.path, "modules.grants.block-logger.allow[1]");
  t.is(p.line, 4);
  t.is(p.column, 3);
  t.regex(p.hint ?? "", /did you mean "read_blockchain"/);
  t.true(err!.message.includes(`${file}:4:3: modules.grants.block-logger.allow[1]: unknown capability "read_blockchian"`));
});

test("scope errors from the grant grammar keep their hint", async (t) => {
  const problems = await problemsOf('[modules.grants.x]\ndeny = ["read_blockchain", "read_blockchain=foo"]\n');
  t.is(problems[0]?.path, "modules.grants.x.deny[1]");
  t.is(problems[0]?.line, 2);
  t.is(problems[0]?.column, 28);
  t.regex(problems[0]?.message ?? "", /cannot be scoped/);
  t.regex(problems[0]?.hint ?? "", /write "read_blockchain" without "=\.\.\."/);
});

test("unknown keys are reported with did-you-mean at their line", async (t) => {
  const problems = await problemsOf('[modules]\nmodule_dir = "m"\n\n[modules.grants.a]\nalow = ["read_blockchain"]\n\n[modulez]\n');
  const byPath = new Map(problems.map((p) => [p.path, p]));
  t.regex(byPath.get("modules.module_dir")?.hint ?? "", /did you mean "modules_dir"/);
  t.is(byPath.get("modules.module_dir")?.line, 2);
  t.regex(byPath.get("modules.grants.a.alow")?.hint ?? "", /did you mean "allow"/);
  t.is(byPath.get("modules.grants.a.alow")?.line, 5);
  t.regex(byPath.get("modulez")?.hint ?? "", /did you mean "modules"/);
  t.is(byPath.get("modulez")?.line, 7);
  t.is(problems.length, 3);
});

test("multiple problems are reported together, in source order", async (t) => {
  const toml = `[host]
log_level = "verbose"

[chain]
block_interval_seconds = -5
mature_blocks = "101"

[modules]
enabled = "yes"
enabled_modules = ["ok", "not ok"]

[modules.default_limits]
memory_mb = 4
restart = "sometimes"

[modules.limits."bad name"]
memory_mb = 64
`;
  const problems = await problemsOf(toml);
  t.deepEqual(
    problems.map((p) => `${p.line}:${p.path}`),
    [
      "2:host.log_level",
      "5:chain.block_interval_seconds",
      "6:chain.mature_blocks",
      "9:modules.enabled",
      "10:modules.enabled_modules[1]",
      "13:modules.default_limits.memory_mb",
      "14:modules.default_limits.restart",
      '16:modules.limits."bad name"',
    ],
  );
  t.regex(problems.find((p) => p.path === "chain.mature_blocks")?.hint ?? "", /remove the quotes: mature_blocks = 101/);
  t.regex(problems.find((p) => p.path === "modules.default_limits.memory_mb")?.hint ?? "", /8 or more/);
});

test("wrong section types and module names are reported", async (t) => {
  const problems = await problemsOf('modules = 5\nstorage = { dir = "" }\n');
  t.deepEqual(problems.map((p) => p.path), ["modules", "storage.dir"]);
  t.regex(problems[0]!.message, /expected a table, found an integer/);
});

test("a module both enabled and disabled is an error", async (t) => {
  const problems = await problemsOf('[modules]\nenabled_modules = ["a"]\ndisabled_modules = ["b", "a"]\n');
  t.is(problems.length, 1);
  t.is(problems[0]?.path, "modules.disabled_modules[1]");
});

test("parseConfig reports the file it was given", (t) => {
  const err = t.throws(() => parseConfig({ hots: {} }, "[hots]\n", "/etc/modhost.toml"), { instanceOf: ConfigError });
  t.is(err!.problems[0]?.file, "/etc/modhost.toml");
  t.is(err!.problems[0]?.line, 1);
  t.regex(err!.problems[0]?.hint ?? "", /"host"/);
});

test("formatProblem puts file, line, column, path, message and fix together", (t) => {
  const text = formatProblem({
    file: "modhost.toml",
    line: 14,
    column: 9,
    path: "modules.grants.block-logger.allow[1]",
    message: 'unknown capability "read_blockchian"',
    hint: 'did you mean "read_blockchain"?',
  });
  t.is(text, 'modhost.toml:14:9: modules.grants.block-logger.allow[1]: unknown capability "read_blockchian"\n  fix: did you mean "read_blockchain"?');
  t.is(formatProblem({ file: "m.toml", message: "file not found" }), "m.toml: file not found");
});

// ---------------------------------------------------------------------------------------
// The locator

const SRC = `# a comment
name = "x"
a.b."c-d" = 1
arr = [
  "one", # trailing comment, "not a string"
  "two",
  { k = "v", n.m = [1, 2] },
]
t = { x = 1, "y z" = [ 'a', "b" ] }
s = """
fake = "key" [not.a.table]
"""

[modules.grants."block-logger"]
allow = ["read_blockchain", "read_blockchian"]

[[fruits]]
name = "apple"
[fruits.variety]
kind = "red"
[[fruits]]
name = "banana"
`;

test("locate finds plain keys and dotted keys with quoted parts", (t) => {
  t.deepEqual(locate(SRC, ["name"]), { line: 2, column: 1 });
  t.deepEqual(locate(SRC, ["a", "b", "c-d"]), { line: 3, column: 5 });
  t.deepEqual(locate(SRC, ["a", "b"]), { line: 3, column: 3 });
});

test("locate finds array elements across lines, skipping comments", (t) => {
  t.deepEqual(locate(SRC, ["arr", 0]), { line: 5, column: 3 });
  t.deepEqual(locate(SRC, ["arr", 1]), { line: 6, column: 3 });
  t.deepEqual(locate(SRC, ["arr", 2, "n", "m", 1]), { line: 7, column: 24 });
});

test("locate finds keys inside inline tables", (t) => {
  t.deepEqual(locate(SRC, ["t", "x"]), { line: 9, column: 7 });
  t.deepEqual(locate(SRC, ["t", "y z", 1]), { line: 9, column: 29 });
});

test("locate follows table headers with quoted names and arrays of tables", (t) => {
  t.deepEqual(locate(SRC, ["modules", "grants", "block-logger"]), { line: 14, column: 17 });
  t.deepEqual(locate(SRC, ["modules", "grants", "block-logger", "allow", 1]), { line: 15, column: 29 });
  t.deepEqual(locate(SRC, ["fruits", 0, "variety", "kind"]), { line: 20, column: 1 });
  t.deepEqual(locate(SRC, ["fruits", 1, "name"]), { line: 22, column: 1 });
});

test("locate ignores look-alikes inside strings and falls back to the enclosing key", (t) => {
  t.is(locate(SRC, ["fake"]), undefined);
  t.is(locate(SRC, ["not"]), undefined);
  // deny is not written: the enclosing table header is the best spot.
  t.deepEqual(locate(SRC, ["modules", "grants", "block-logger", "deny"]), { line: 14, column: 17 });
  t.deepEqual(locate(SRC, ["arr", 7]), { line: 4, column: 1 });
  t.is(locate(SRC, []), undefined);
});

test("locate never throws, even on broken input", (t) => {
  for (const src of ["[unclosed", 'a = "unterminated', "a = [1, 2", "= = =", "{]}", "a = {b = [}", '"""', "\uFEFFx = 1"]) {
    t.notThrows(() => locate(src, ["a", 0, "b"]), src);
  }
  t.deepEqual(locate("\uFEFFx = 1", ["x"]), { line: 1, column: 2 });
});

test("[chain] backend = \"bitcoind\": credentials required and paired, URLs and endpoints checked, each at its line with the fix", async (t) => {
  const none = await problemsOf('[chain]\nbackend = "bitcoind"\n');
  t.is(none.length, 1);
  t.is(none[0]!.path, "chain.backend");
  t.regex(none[0]!.hint ?? "", /rpc_cookie_file.*rpc_user \+ rpc_password.*bitcoind-config/);
  const half = await problemsOf('[chain]\nbackend = "bitcoind"\nrpc_user = "modhost"\n');
  t.true(half.some((p) => p.path === "chain.rpc_user" && p.line === 3 && /go together/.test(p.message)), JSON.stringify(half));
  const bad = await problemsOf('[chain]\nbackend = "bitcoind"\nrpc_cookie_file = "/x/.cookie"\nrpc_url = "127.0.0.1:8332"\nzmq_sequence = "127.0.0.1:28332"\ncore_rpc_bind = "0.0.0.0:18443"\n');
  const byPath = new Map(bad.map((p) => [p.path, p]));
  t.is(byPath.get("chain.rpc_url")?.line, 4);
  t.regex(byPath.get("chain.rpc_url")?.hint ?? "", /http:\/\/127\.0\.0\.1:8332\//);
  t.is(byPath.get("chain.zmq_sequence")?.line, 5);
  t.regex(byPath.get("chain.zmq_sequence")?.hint ?? "", /tcp:\/\/HOST:PORT/);
  t.regex(byPath.get("chain.core_rpc_bind")?.message ?? "", /not a loopback address/);
  const good = await loadConfig(await writeConfig('[chain]\nbackend = "bitcoind"\nrpc_url = "http://10.0.0.5:8332/"\nrpc_user = "modhost"\nrpc_password = "pw"\nzmq_sequence = "tcp://10.0.0.5:28332"\n'));
  t.like(good.chain, { backend: "bitcoind", rpc_url: "http://10.0.0.5:8332/", rpc_user: "modhost", rpc_password: "pw", zmq_sequence: "tcp://10.0.0.5:28332" });
});

test("[host] isolate_pool: 0 to 16, anything else is named with its range", async (t) => {
  t.is(parseConfig({ host: { isolate_pool: 0 } }, "[host]\nisolate_pool = 0\n", "/etc/modhost.toml").host.isolate_pool, 0);
  t.is(parseConfig({ host: { isolate_pool: 4 } }, "[host]\nisolate_pool = 4\n", "/etc/modhost.toml").host.isolate_pool, 4);
  const problems = await problemsOf("[host]\nisolate_pool = 17\n");
  t.is(problems[0]?.path, "host.isolate_pool");
  t.regex(`${problems[0]?.message} ${problems[0]?.hint ?? ""}`, /16/, "the allowed range is named");
});
