import test from "ava";
import { mkdtemp, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { ConfigError, type ConfigProblem } from "../host/errors.ts";
import { loadManifest, parseManifest, parseThreshold } from "../host/manifest.ts";

const KEY_A = "02" + "a1".repeat(32);
const KEY_B = "b2".repeat(32); // x-only
const SIG = "c3".repeat(64);
const HASH = "sha256:" + "0f".repeat(32);

// The seeds' example manifest, with real-looking values in place of the "02abc..." placeholders.
const SEED_STYLE = `# Module Identity
name = "lightning-network"
version = "1.2.3"
entry_point = "lightning-network"
description = "Lightning Network implementation"
author = "Alice <alice@example.com>"

# Capabilities
capabilities = [
    "read_blockchain",
    "subscribe_events",
    "call_module=price-feed",
]

# Governance
[governance]
tier = "application"
maintainers = ["alice", "bob", "charlie"]
threshold = "2-of-3"
review_period_days = 14

# Signatures
[signatures]
maintainers = [
    { name = "alice", key = "${KEY_A}", signature = "${SIG}" },
    { name = "bob", key = "${KEY_B}", signature = "${SIG}", scheme = "schnorr" }
]
threshold = "2-of-3"

# Binary
[binary]
hash = "${HASH}"
size = 1234567
download_url = "https://registry.bitcoincommons.org/modules/lightning-network/1.2.3"

# Dependencies
[dependencies]
"bllvm-node" = ">=1.0.0"
"another-module" = ">=0.5.0,<2.0.0"

[optional_dependencies]
"blvm-mesh" = "^0.5.0"

# Compatibility
[compatibility]
min_consensus_version = "1.0.0"
min_protocol_version = "1.0.0"
min_node_version = "1.0.0"
tested_with = ["1.0.0", "1.1.0"]

[config_schema]
poll_interval = "Polling interval in seconds (default: 5)"
port = { type = "integer", default = 9735, description = "listen port" }
`;

async function writeModule(toml: string, sub = "mod"): Promise<string> {
  const dir = path.join(await mkdtemp(path.join(tmpdir(), "modhost-manifest-")), sub);
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, "module.toml");
  await writeFile(file, toml);
  return file;
}

async function problemsOf(toml: string): Promise<{ error: ConfigError; problems: ConfigProblem[]; file: string }> {
  const file = await writeModule(toml);
  try {
    await loadManifest(file);
  } catch (err) {
    if (err instanceof ConfigError) return { error: err, problems: err.problems, file };
    throw err;
  }
  throw new Error("expected a ConfigError");
}

const base = (extra = "") => `name = "block-logger"\nversion = "1.0.0"\nentry_point = "index.ts"\n${extra}`;

test("a seed-style manifest with governance, signatures, binary and compatibility parses", async (t) => {
  const file = await writeModule(SEED_STYLE);
  const m = await loadManifest(file);
  t.is(m.file, file);
  t.is(m.dir, path.dirname(file));
  t.is(m.name, "lightning-network");
  t.is(m.version, "1.2.3");
  t.is(m.runtime, "native");
  t.deepEqual(m.capabilities, [
    { permission: "read_blockchain", scope: "all" },
    { permission: "subscribe_events", scope: "all" },
    { permission: "call_module", scope: ["price-feed"] },
  ]);
  t.deepEqual({ ...m.dependencies }, { "bllvm-node": ">=1.0.0", "another-module": ">=0.5.0 <2.0.0" });
  t.deepEqual({ ...m.optional_dependencies }, { "blvm-mesh": "^0.5.0" });
  t.deepEqual(m.governance, { tier: "application", maintainers: ["alice", "bob", "charlie"], threshold: { m: 2, n: 3 }, review_period_days: 14 });
  t.is(m.signatures?.maintainers.length, 2);
  t.is(m.signatures?.maintainers[1]?.scheme, "schnorr");
  t.deepEqual(m.signatures?.threshold, { m: 2, n: 3 });
  t.deepEqual(m.binary, { hash: HASH, size: 1234567, download_url: "https://registry.bitcoincommons.org/modules/lightning-network/1.2.3" });
  t.deepEqual(m.compatibility, { min_consensus_version: "1.0.0", min_protocol_version: "1.0.0", min_node_version: "1.0.0", tested_with: ["1.0.0", "1.1.0"] });
  t.deepEqual(m.config_schema["poll_interval"], { type: "any", description: "Polling interval in seconds (default: 5)", required: false });
  t.deepEqual(m.config_schema["port"], { type: "integer", default: 9735, description: "listen port", required: false });
});

test("runtime is inferred from the entry point and can be overridden", async (t) => {
  t.is((await loadManifest(await writeModule(base()))).runtime, "isolate");
  const js = base().replace("index.ts", "dist/main.mjs");
  t.is((await loadManifest(await writeModule(js))).runtime, "isolate");
  const bin = base().replace("index.ts", "bin/block-logger");
  t.is((await loadManifest(await writeModule(bin))).runtime, "native");
  const forced = (await loadManifest(await writeModule(base('runtime = "native"\n'))));
  t.is(forced.runtime, "native");
  t.is(forced.entry_point, "index.ts");
  const { problems } = await problemsOf(base('runtime = "wasm"\n'));
  t.is(problems[0]?.path, "runtime");
});

test("a bad module name is reported with the rule", async (t) => {
  const { problems } = await problemsOf(base().replace('"block-logger"', '"block logger!"'));
  t.is(problems.length, 1);
  t.is(problems[0]?.path, "name");
  t.is(problems[0]?.line, 1);
  t.regex(problems[0]?.message ?? "", /not a valid module name/);
  t.regex(problems[0]?.hint ?? "", /letters, digits/);
});

test("versions must be strict semver", async (t) => {
  for (const [bad, fix] of [["1.0", "1.0.0"], ["v1.0.0", "1.0.0"]] as const) {
    const { problems } = await problemsOf(base().replace('"1.0.0"', `"${bad}"`));
    t.is(problems.length, 1, bad);
    t.is(problems[0]?.path, "version");
    t.is(problems[0]?.line, 2);
    t.is(problems[0]?.column, 1);
    t.true(problems[0]?.hint?.includes(`"${fix}"`), bad);
  }
  const ok = await loadManifest(await writeModule(base().replace('"1.0.0"', '"1.0.0-rc.1+build.5"')));
  t.is(ok.version, "1.0.0-rc.1+build.5");
});

test("an unknown capability names the closest one, at its line and column", async (t) => {
  const toml = base(`capabilities = [
    "read_chain_state",
    "read_blockchian",
]
`);
  const { error, problems, file } = await problemsOf(toml);
  t.is(problems.length, 1);
  const p = problems[0]!;
  t.is(p.path, "capabilities[1]");
  t.is(p.line, 6);
  t.is(p.column, 5);
  t.regex(p.message, /unknown capability "read_blockchian"/);
  t.regex(p.hint ?? "", /did you mean "read_blockchain"/);
  t.true(error.message.includes(`module.toml:6:5: capabilities[1]: unknown capability "read_blockchian"`));
  t.true(error.message.includes('fix: did you mean "read_blockchain"?'));
  t.is(p.file, file);
});

test("PascalCase BLVM permission names are accepted", async (t) => {
  const m = await loadManifest(await writeModule(base('capabilities = ["ReadUTXO", "SubscribeEvents"]\n')));
  t.deepEqual(
    m.capabilities.map((d) => d.permission),
    ["read_utxo", "subscribe_events"],
  );
});

test("malformed TOML reports file:line:column with a code frame", async (t) => {
  const { error, problems, file } = await problemsOf('name = "x"\nauthor = Alice\n');
  t.is(problems.length, 1);
  t.is(problems[0]?.line, 2);
  t.is(problems[0]?.column, 10);
  t.regex(problems[0]?.message ?? "", /TOML syntax error: Alice is a bare word, not a TOML value \(invalid value\)/);
  t.regex(problems[0]?.hint ?? "", /quote it: author = "Alice"/);
  // Files outside the working directory are shown as given (absolute here).
  t.true(error.message.startsWith(`${file}:2:10: TOML syntax error`));
  t.true(error.message.includes("author = Alice"), "the code frame is part of the message");
});

test("a missing file is a ConfigError with a hint", async (t) => {
  const err = await t.throwsAsync(loadManifest(path.join(tmpdir(), "does-not-exist-modhost", "module.toml")), { instanceOf: ConfigError });
  t.regex(err!.message, /file not found/);
  t.truthy(err!.problems[0]?.hint);
});

test("unknown keys are errors with did-you-mean, and all problems are reported together", async (t) => {
  const { problems } = await problemsOf('name = "block-logger"\nversion = "1.0.0"\nentrypoint = "index.ts"\n');
  const unknown = problems.find((p) => p.path === "entrypoint");
  t.truthy(unknown);
  t.regex(unknown!.message, /unknown key "entrypoint"/);
  t.regex(unknown!.hint ?? "", /did you mean "entry_point"/);
  t.is(unknown!.line, 3);
  // entry_point itself is then missing: reported in the same error.
  t.truthy(problems.find((p) => p.path === "entry_point" && /missing required key/.test(p.message)));
  t.is(problems.length, 2);
});

test("unknown keys inside sections are errors too", async (t) => {
  const { problems } = await problemsOf(base('[governance]\nmaintainer = ["alice"]\n'));
  t.is(problems[0]?.path, "governance.maintainer");
  t.regex(problems[0]?.hint ?? "", /"maintainers"/);
  t.is(problems[0]?.line, 5);
});

test("entry_point may not leave the module directory", async (t) => {
  for (const bad of ["../evil.ts", "/usr/bin/evil", "lib/../../evil.ts"]) {
    const { problems } = await problemsOf(base().replace('"index.ts"', JSON.stringify(bad)));
    t.is(problems[0]?.path, "entry_point", bad);
    t.regex(problems[0]?.message ?? "", /leaves the module directory|absolute/, bad);
  }
  const ok = await loadManifest(await writeModule(base().replace('"index.ts"', '"./src/../dist/index.js"')));
  t.is(ok.entry_point, "dist/index.js");
});

test("thresholds must be M-of-N with M <= N and N = number of maintainers", async (t) => {
  t.deepEqual(parseThreshold("2-of-3"), { m: 2, n: 3 });
  t.is(parseThreshold("3-of-2"), undefined);
  t.is(parseThreshold("0-of-2"), undefined);
  t.is(parseThreshold("two-of-three"), undefined);

  const bad = await problemsOf(base('[governance]\nmaintainers = ["a", "b", "c"]\nthreshold = "3-of-2"\n'));
  t.is(bad.problems[0]?.path, "governance.threshold");
  t.is(bad.problems[0]?.line, 6);
  t.regex(bad.problems[0]?.hint ?? "", /M-of-N/);

  const mismatch = await problemsOf(base('[governance]\nmaintainers = ["a", "b"]\nthreshold = "2-of-3"\n'));
  t.regex(mismatch.problems[0]?.message ?? "", /does not match the 2 maintainers/);
});

test("signatures and binary are checked for shape", async (t) => {
  const { problems } = await problemsOf(
    base(`[signatures]
maintainers = [{ name = "alice", key = "02abc...", signature = "..." }]
[binary]
hash = "sha256:ABC"
download_url = "ftp://example.com/x"
size = -1
`),
  );
  const paths = problems.map((p) => p.path).sort();
  t.deepEqual(paths, ["binary.download_url", "binary.hash", "binary.size", "signatures.maintainers[0].key", "signatures.maintainers[0].signature"]);
  const key = problems.find((p) => p.path === "signatures.maintainers[0].key")!;
  t.is(key.line, 5); // inside the inline table on line 5
  t.true(key.column! > 20);
});

test("dependency ranges: comma form normalised, bad ranges and self-dependency reported", async (t) => {
  const { problems } = await problemsOf(
    base(`[dependencies]
price-feed = ">=1.0.0,<2.0.0"
block-logger = "^1.0.0"
other = "not a range"
"bad name!" = "1.0.0"
`),
  );
  t.deepEqual(problems.map((p) => p.path).sort(), ['dependencies."bad name!"', "dependencies.block-logger", "dependencies.other"]);
  const m = await loadManifest(await writeModule(base('[dependencies]\nprice-feed = ">=1.0.0, <2.0.0"\n')));
  t.is(m.dependencies["price-feed"], ">=1.0.0 <2.0.0");
});

test("config_schema accepts descriptions and typed fields, rejects a default of the wrong type", async (t) => {
  const { problems } = await problemsOf(base('[config_schema]\nport = { type = "integer", default = "x" }\nmode = { type = "strng" }\n'));
  t.deepEqual(problems.map((p) => p.path).sort(), ["config_schema.mode.type", "config_schema.port.default"]);
  t.regex(problems.find((p) => p.path === "config_schema.mode.type")!.hint ?? "", /"string"/);
});

test("parseManifest works on already parsed data and reports the given file", (t) => {
  const source = 'name = "x"\nversion = "1.0.0"\nentry_point = "a.ts"\n';
  const m = parseManifest({ name: "x", version: "1.0.0", entry_point: "a.ts" }, source, "/tmp/x/module.toml");
  t.is(m.dir, "/tmp/x");
  const err = t.throws(() => parseManifest({ name: "x" }, 'name = "x"\n', "/tmp/x/module.toml"), { instanceOf: ConfigError });
  t.is(err!.problems.length, 2);
  t.true(err!.problems.every((p) => p.file === "/tmp/x/module.toml"));
});

test("the seeds' own manifests load unchanged: module development (dependencies, optional dependencies, config schema) and Mining OS (get_block_template)", async (t) => {
  const fixtures = new URL("./fixtures/seed-manifests/", import.meta.url).pathname;
  const dev = await loadManifest(path.join(fixtures, "module-development", "module.toml"));
  t.like(dev, { name: "my-module", version: "1.0.0", entry_point: "my-module", dependencies: { "blvm-lightning": ">=1.0.0" }, optional_dependencies: { "blvm-mesh": ">=0.5.0" } });
  t.deepEqual(dev.capabilities.map((c) => c.permission), ["read_blockchain", "subscribe_events"]);
  const mining = await loadManifest(path.join(fixtures, "miningos", "module.toml"));
  t.is(mining.name, "blvm-miningos");
  // The node checks read_blockchain for a block template; the alias becomes that permission.
  t.deepEqual(mining.capabilities.map((c) => c.permission), ["read_blockchain", "subscribe_events", "publish_events", "call_module", "read_blockchain", "submit_block"]);
});
