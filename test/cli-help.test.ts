// The command line as an operator meets it: every subcommand's --help (from the table in
// host/cli-table.ts) without side effects, did-you-mean, --json, the bitcoin-cli connection
// options against a host on a non-default port and cookie, and the error messages that used
// to point the wrong way. Each runs `node bin/modhost.js ...` in a child process.

import test, { type ExecutionContext } from "ava";
import { cp, mkdir, readFile, readdir, writeFile, chmod } from "node:fs/promises";
import { existsSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { COMMANDS, cliReference, didYouMean, MAX_SUGGEST_LENGTH } from "../host/cli-table.ts";
import { GOOD_GRANTS, ROOT, startHost, tempDir, waitFor, writeModule } from "./helpers/host.ts";
import { bundleNodeModule } from "../sdk/node/bundle.ts";

const BIN = path.join(ROOT, "bin", "modhost.js");

function modhost(args: string[], cwd = ROOT) {
  return execa(process.execPath, [BIN, ...args], { cwd, reject: false, all: true, timeout: 180_000, env: { NO_COLOR: "1" } });
}

/** Run `jobs` with at most `n` at once (the machine has 2 cores, shared). */
async function pool<T>(items: T[], n: number, job: (item: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all(Array.from({ length: n }, async () => {
    for (let item = queue.shift(); item !== undefined; item = queue.shift()) await job(item);
  }));
}

test("every subcommand of the table answers --help and -h with its own usage, exit 0, and writes nothing", async (t) => {
  t.timeout(300_000);
  const cwd = await tempDir(t, "modhost-help-");
  // Words that would be taken for arguments if --help were ignored (info --help must not look for a module "--help").
  await pool([...COMMANDS], 3, async (c) => {
    const flag = c.name.length % 2 === 0 ? "--help" : "-h";
    const r = await modhost([...c.name.split(" "), flag], cwd);
    t.is(r.exitCode, 0, `${c.name} ${flag}: ${r.all}`);
    t.true(r.stdout.startsWith(`Usage: modhost ${c.name}`), `${c.name}: ${r.stdout.slice(0, 200)}`);
    t.true(r.stdout.includes(c.summary), c.name);
    for (const o of c.options) t.true(r.stdout.includes(`--${o.name}`), `${c.name} --help names --${o.name}`);
    t.is(r.stderr, "", c.name);
  });
  // keygen --help wrote no key, docs --help no file, registry serve --help serves nothing.
  t.deepEqual(await readdir(cwd), []);
  // modhost help COMMAND is the same text.
  const a = await modhost(["help", "chain", "mine"], cwd);
  const b = await modhost(["chain", "mine", "--help"], cwd);
  t.is(a.exitCode, 0);
  t.is(a.stdout, b.stdout);
});

test("the global usage lists every command of the table, and the operator guide's CLI reference is the table's", async (t) => {
  t.timeout(300_000);
  const r = await modhost(["--help"]);
  t.is(r.exitCode, 0);
  for (const c of COMMANDS) t.true(r.stdout.includes(`modhost ${c.name}`), c.name);
  const guide = await readFile(path.join(ROOT, "docs", "operator-guide.md"), "utf8");
  const block = /<!-- cli-reference:start -->\n([\s\S]*?)\n<!-- cli-reference:end -->/.exec(guide)?.[1];
  t.is(block, cliReference(), "regenerate with: node bin/modhost.js docs --write");
});

test("modhost stop --help and unload --help leave a running host and its module alone", async (t) => {
  t.timeout(300_000);
  const h = await startHost(t, { modules: ["good"], grants: { good: GOOD_GRANTS } });
  const port = h.host.rpcServer!.address!.port;
  const conn = ["--rpcport", String(port), "--datadir", path.join(h.dir, "data")];
  const stop = await modhost(["stop", "--help", ...conn]);
  t.is(stop.exitCode, 0, stop.all);
  t.regex(stop.stdout, /^Usage: modhost stop/);
  const unload = await modhost(["unload", "good", "-h", ...conn]);
  t.is(unload.exitCode, 0, unload.all);
  t.is((h.host as unknown as { stopping?: unknown }).stopping, undefined, "the host was not asked to stop");
  const list = await modhost(["list", ...conn]);
  t.is(list.exitCode, 0, list.all);
  t.is(h.manager.status().find((s) => s.name === "good")?.state, "running");
});

test("a mistyped command, subcommand or option gets did-you-mean; an over-long word is not compared and is cut in the message", async (t) => {
  t.timeout(300_000);
  const cwd = await tempDir(t, "modhost-typo-");
  const cmd = await modhost(["chian", "info"], cwd);
  t.is(cmd.exitCode, 2, cmd.all);
  t.regex(cmd.stderr, /unknown command "chian"; did you mean "modhost chain"\?/);
  const sub = await modhost(["chain", "mien"], cwd);
  t.is(sub.exitCode, 2);
  t.regex(sub.stderr, /unknown chain command "mien"; did you mean "modhost chain mine"\?/);
  const opt = await modhost(["list", "--jsno"], cwd);
  t.is(opt.exitCode, 2);
  t.regex(opt.stderr, /modhost list: unknown option --jsno; did you mean --json\?/);
  const port = await modhost(["list", "--rpc-port", "1"], cwd);
  t.regex(port.stderr, /did you mean --rpcport\?/);
  const missing = await modhost(["info"], cwd);
  t.is(missing.exitCode, 2);
  t.regex(missing.stderr, /modhost info needs MODULE/);
  const long = "x".repeat(100_000);
  const r = await modhost([`--${long}`.slice(0, 100_000)], cwd);
  t.is(r.exitCode, 2);
  t.true(r.stderr.length < 2000, "the word is cut in the message");
  t.notRegex(r.stderr, /did you mean/);
  // The bound itself: a word just over it is never compared, one under it is.
  t.is(didYouMean("l".repeat(MAX_SUGGEST_LENGTH + 1), ["list"]), undefined);
  t.is(didYouMean("lsit", ["list", "info"]), "list");
  t.is(didYouMean("frobnicate", ["list", "info", "load"]), undefined);
});

test("connection options reach a host on a non-default port and cookie; --json answers parse", async (t) => {
  t.timeout(300_000);
  const h = await startHost(t, { modules: ["good"], grants: { good: GOOD_GRANTS } });
  const port = h.host.rpcServer!.address!.port;
  const cookie = h.config.rpc.cookie_file;
  t.not(port, 8339);
  // From a directory with no modhost.toml: only the options say where the host is.
  const cwd = await tempDir(t, "modhost-conn-");
  const byDatadir = await modhost(["list", "--datadir", path.dirname(cookie), "--rpcport", String(port)], cwd);
  t.is(byDatadir.exitCode, 0, byDatadir.all);
  t.regex(byDatadir.stdout, /^good\s+0\.1\.0\s+isolate\s+\S+\s+running/m);
  const list = await modhost(["list", "--json", "--rpcconnect", `127.0.0.1:${port}`, "--rpccookiefile", cookie], cwd);
  t.is(list.exitCode, 0, list.all);
  const modules = JSON.parse(list.stdout) as Array<{ name: string; state: string; grants: string[] }>;
  t.deepEqual(modules.map((m) => [m.name, m.state]), [["good", "running"]]);
  const info = await modhost(["info", "good", "--json", "--rpcport", String(port), "--rpccookiefile", cookie], cwd);
  t.is(info.exitCode, 0, info.all);
  const i = JSON.parse(info.stdout) as { name: string; manifest: { entry_point: string }; rpc_methods: unknown[] };
  t.is(i.name, "good");
  t.is(i.manifest.entry_point, "index.ts");
  const human = await modhost(["info", "good", "--rpcport", String(port), "--rpccookiefile", cookie], cwd);
  t.regex(human.stdout, /^good 0\.1\.0 \(isolate\): running/);
  t.regex(human.stdout, /granted: {6}read_blockchain/);
  const call = await modhost(["call", "list", "--rpcport", String(port), "--datadir", path.dirname(cookie)], cwd);
  t.is(call.exitCode, 0, call.all);
  t.is((JSON.parse(call.stdout) as unknown[]).length, 1);
  // The wrong port: told no host is there, naming where it looked.
  const wrong = await modhost(["list", "--rpcport", "1", "--rpccookiefile", cookie], cwd);
  t.is(wrong.exitCode, 1);
  t.regex(wrong.stderr, /no modhost is running at 127\.0\.0\.1:1 /);
  const bad = await modhost(["list", "--rpcport", "99999"], cwd);
  t.is(bad.exitCode, 2);
  t.regex(bad.stderr, /--rpcport must be a port number from 1 to 65535, got "99999"/);
});

test("modhost check --json: stable keys, the problems and the warnings", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t, "modhost-checkjson-");
  await cp(path.join(ROOT, "test", "fixtures", "modules", "good"), path.join(dir, "modules", "good"), { recursive: true });
  await writeFile(path.join(dir, "modhost.toml"), [
    "[modules]", 'modules_dir = "modules"', 'enabled_modules = ["good", "godo"]', "",
    "[modules.grants.good]", `allow = ${JSON.stringify(GOOD_GRANTS)}`, "",
    "[modules.module_configs.nobody]", "x = 1", "",
    "[trust]", 'signatures = "allow-unsigned"', "",
  ].join("\n"));
  const r = await modhost(["check", "--json", "--config", path.join(dir, "modhost.toml")], dir);
  t.is(r.exitCode, 1, r.all);
  const c = JSON.parse(r.stdout) as { load_order: string[]; modules: Array<{ name: string; ok: boolean; problem: string | null }>; problems: Array<{ key: string }>; warnings: string[] };
  t.deepEqual(c.load_order, ["good"]);
  t.true(c.modules.find((m) => m.name === "good")!.ok);
  t.deepEqual(c.problems.map((p) => p.key), ["godo"]);
  t.true(c.warnings.some((w) => /enabled_modules .* names module "godo", which is not in .*; did you mean "good"\?/.test(w)), c.warnings.join("\n"));
  t.true(c.warnings.some((w) => /\[modules\.module_configs\.nobody\] .* names module "nobody"/.test(w)), c.warnings.join("\n"));
});

test("a host with no modules, or a grant naming a module that does not exist, warns when it runs; exit 0 after a clean stop", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t, "modhost-stray-");
  await mkdir(path.join(dir, "modules"));
  const config = path.join(dir, "modhost.toml");
  await writeFile(config, ["[chain]", "block_interval_seconds = 0", "", "[modules]", 'modules_dir = "modules"', "", "[modules.grants.block-stat]", 'allow = ["read_chain_state"]', "", "[rpc]", "port = 0", ""].join("\n"));
  const child = execa(process.execPath, [BIN, "run", "--config", config], { cwd: dir, reject: false, all: true, env: { NO_COLOR: "1" } });
  t.teardown(() => { child.kill("SIGKILL"); });
  let out = "";
  child.all!.on("data", (d: Buffer) => (out += d.toString()));
  await waitFor(() => /ready in \d+ ms/.test(out), 180_000, "the host to be ready", () => out);
  t.regex(out, /WARN .*there are no modules in .*modules \(\[modules\] modules_dir in .*modhost\.toml\): the host runs with none/);
  // [rpc] port = 0: the CLI finds the port the host wrote beside its cookie.
  const listed = await modhost(["list", "--config", config], dir);
  t.is(listed.exitCode, 0, listed.all);
  t.regex(listed.stdout, /no modules/i, listed.stdout);
  child.kill("SIGTERM");
  t.is((await child).exitCode, 0, out);
  const after = await modhost(["list", "--config", config], dir);
  t.is(after.exitCode, 1, after.all);
  t.regex(after.stderr, /no modhost is running at 127\.0\.0\.1, \[rpc\] port = 0 \(no port file at .*\.cookie\.port\)/);

  // With a module installed, the misnamed grant is the warning, with the name it most likely meant.
  await cp(path.join(ROOT, "test", "fixtures", "modules", "good"), path.join(dir, "modules", "block-stats"), { recursive: true });
  await writeFile(path.join(dir, "modules", "block-stats", "module.toml"), (await readFile(path.join(dir, "modules", "block-stats", "module.toml"), "utf8")).replace(/name = "good"/, 'name = "block-stats"'));
  const check = await modhost(["check", "--config", config], dir);
  t.regex(check.stdout, /! warning: \[modules\.grants\.block-stat\] in .* names module "block-stat", which is not in .*; did you mean "block-stats"\?/);
});

/** Write `text` as a modhost.toml in a new temp dir and run `modhost check` on it. */
async function checkConfig(t: ExecutionContext, text: string) {
  const dir = await tempDir(t, "modhost-err-");
  await mkdir(path.join(dir, "modules"));
  const file = path.join(dir, "modhost.toml");
  await writeFile(file, text);
  return { file, r: await modhost(["check", "--config", file], dir) };
}

test("log_level = info: told to quote the word, not to put keys on their own lines", async (t) => {
  t.timeout(300_000);
  const { file, r } = await checkConfig(t, '[host]\nlog_level = info\n');
  t.is(r.exitCode, 1);
  t.true(r.stderr.includes(`${path.basename(file)}:2:`), r.stderr);
  t.regex(r.stderr, /info is a bare word, not a TOML value/);
  t.regex(r.stderr, /fix: quote it: log_level = "info"/);
  t.notRegex(r.stderr, /own line/);
});

test("an unclosed array is named where it opened", async (t) => {
  t.timeout(300_000);
  const { r } = await checkConfig(t, '[modules]\nenabled_modules = ["a",\n  "b"\nmodules_dir = "modules"\n');
  t.is(r.exitCode, 1);
  t.regex(r.stderr, /the array opened at line 2, column 19 is not closed/);
  t.regex(r.stderr, /fix: close it with "\]" after its last element \(line 2: enabled_modules = \["a",\)/);
  t.notRegex(r.stderr, /quote strings/);
});

test("wrong-way grants and schemas: a URL as a network scope, a mistyped event type, type = \"int\"", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t, "modhost-err-");
  await writeModule(path.join(dir, "modules"), "m", {
    toml: 'name = "m"\nversion = "0.1.0"\nentry_point = "index.ts"\ncapabilities = ["read_chain_state"]\n\n[config_schema.depth]\ntype = "int"\n',
    files: { "index.ts": "export default function start() {}\n" },
  });
  const file = path.join(dir, "modhost.toml");
  await writeFile(file, ['[modules]', 'modules_dir = "modules"', "", "[modules.grants.m]", 'allow = ["network_access=https://api.example.com:8443/v1/prices", "subscribe_events=NewBlok"]', ""].join("\n"));
  const r = await modhost(["check", "--config", file], dir);
  t.is(r.exitCode, 1);
  t.regex(r.stderr, /"https:\/\/api\.example\.com:8443\/v1\/prices" is a URL; a network scope is host:port/);
  t.regex(r.stderr, /fix: write "api\.example\.com:8443"/);
  t.regex(r.stderr, /"NewBlok" is not an event type of this host/);
  t.regex(r.stderr, /fix: did you mean "NewBlock"\?/);
  t.notRegex(r.stderr, /allow = \[.*NewBlok/, "the typo is never offered back as a fix");
  // The schema, once the grants parse.
  await writeFile(file, ['[modules]', 'modules_dir = "modules"', "", "[modules.grants.m]", 'allow = ["read_chain_state"]', "", "[trust]", 'signatures = "allow-unsigned"', ""].join("\n"));
  const schema = await modhost(["check", "--config", file], dir);
  t.is(schema.exitCode, 1);
  t.regex(schema.stdout, /config_schema\.depth\.type: "int" is not one of/);
  t.regex(schema.stdout, /fix: did you mean "integer"\?/);
});

test("the operator guide's block-stats examples work: modhost block-stats last, call block-stats.summary '{\"count\":2}'", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t, "modhost-guide-");
  await cp(path.join(ROOT, "modules", "block-stats"), path.join(dir, "modules", "block-stats"), { recursive: true, filter: (src) => !src.includes(`${path.sep}target`) });
  const manifest = await readFile(path.join(dir, "modules", "block-stats", "module.toml"), "utf8");
  const caps = JSON.parse(/capabilities = (\[[\s\S]*?\])/.exec(manifest)![1]!.replace(/,\s*\]/, "]")) as string[];
  // Its start() catches up on the whole chain: give it time on a loaded machine.
  const h = await startHost(t, { dir, grants: { "block-stats": caps }, moduleLimits: { "block-stats": { start_timeout_ms: 180_000 } } });
  await waitFor(() => h.manager.status().find((s) => s.name === "block-stats")?.state === "running", 90_000, "block-stats to run");
  const conn = ["--rpcport", String(h.host.rpcServer!.address!.port), "--rpccookiefile", h.config.rpc.cookie_file];
  const mined = await modhost(["chain", "mine", "3", ...conn]);
  t.is(mined.exitCode, 0, mined.all);
  const height = (JSON.parse((await modhost(["chain", "info", "--json", ...conn])).stdout) as { height: number }).height;
  await waitFor(async () => (await modhost(["block-stats", "last", ...conn])).stdout.includes(`block ${height} `), 90_000, "block-stats to record the tip");
  const last = await modhost(["block-stats", "last", ...conn]);
  t.is(last.exitCode, 0, last.all);
  t.regex(last.stdout, new RegExp(`^block ${height} [0-9a-f]{64}`));
  const summary = await modhost(["call", "block-stats.summary", '{"count":2}', ...conn]);
  t.is(summary.exitCode, 0, summary.all);
  const rows = JSON.parse(summary.stdout) as Array<{ height: number }>;
  t.deepEqual(rows.map((r) => r.height), [height, height - 1]);
  // Every command the guide shows for block-stats is one the module has.
  const guide = await readFile(path.join(ROOT, "docs", "operator-guide.md"), "utf8");
  for (const [, sub] of guide.matchAll(/^modhost block-stats (\w+)/gm)) {
    const r = await modhost(["block-stats", sub!, ...conn]);
    t.is(r.exitCode, 0, `modhost block-stats ${sub}: ${r.all}`);
  }
  t.true(guide.includes(`call block-stats.summary '{"count": 10}'`));
});

test("a native module that never calls ready() is told what was expected", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t, "modhost-noready-");
  const modDir = await writeModule(path.join(dir, "modules"), "no-ready", {
    toml: 'name = "no-ready"\nversion = "0.1.0"\nentry_point = "main.mjs"\nruntime = "native"\ncapabilities = []\n',
    files: {},
  });
  await writeFile(path.join(modDir, "main.mjs"), await bundleNodeModule(path.join(ROOT, "test", "fixtures", "no-ready-native", "main.ts")), { mode: 0o755 });
  await chmod(modDir, 0o755);
  const h = await startHost(t, { dir, moduleLimits: { "no-ready": { start_timeout_ms: 2000, restart: "never" } } });
  await waitFor(() => ["failed", "crashed", "quarantined"].includes(h.manager.status().find((s) => s.name === "no-ready")?.state ?? ""), 30_000, "the start to fail");
  const problem = h.manager.status().find((s) => s.name === "no-ready")!.problem ?? "";
  t.regex(problem, /did not call ready\(\) within 2000 ms: a native module must send `ready` after its registrations/);
  t.regex(problem, /docs\/module-guide\.md#native-modules-rust-or-any-language/);
  const guide = await readFile(path.join(ROOT, "docs", "module-guide.md"), "utf8");
  t.regex(guide, /^## Native modules \(Rust, or any language\)$/m, "the anchor the message names exists");
});

test("a start that waits says for what: status and `modhost list` show what a starting module's start waits for (here a native module's ready)", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t, "modhost-waiting-");
  const h = await startHost(t, { dir, moduleLimits: { "slow-ready": { start_timeout_ms: 120_000, restart: "never" } } });
  // Written once the host runs, and loaded without waiting for the start to end.
  const modDir = await writeModule(path.join(dir, "modules"), "slow-ready", {
    toml: 'name = "slow-ready"\nversion = "0.1.0"\nentry_point = "main.mjs"\nruntime = "native"\ncapabilities = []\n',
    files: {},
  });
  await writeFile(path.join(modDir, "main.mjs"), await bundleNodeModule(path.join(ROOT, "test", "fixtures", "no-ready-native", "main.ts")), { mode: 0o755 });
  await chmod(modDir, 0o755);
  const loading = h.manager.load("slow-ready").catch((e: Error) => e);
  const status = await waitFor(() => h.manager.status().find((s) => s.name === "slow-ready" && s.waiting_for === "its ready"), 60_000, () => `the start to wait for its ready: ${JSON.stringify(h.manager.status().find((s) => s.name === "slow-ready"))}`);
  t.is(status.state, "starting");
  const port = h.host.rpcServer!.address!.port;
  const list = await modhost(["list", "--rpcport", String(port), "--rpccookiefile", h.config.rpc.cookie_file], dir);
  t.is(list.exitCode, 0, list.all);
  t.regex(list.all ?? "", /^slow-ready .* starting .*\n {4}starting: waiting for its ready$/m, "under its row");
  await h.manager.unload("slow-ready");
  await loading;
  t.is(h.manager.status().find((s) => s.name === "slow-ready")?.waiting_for, undefined, "stopped: waits for nothing");
});

test("modhost/sdk and modhost/testing types are importable outside the checkout: exports' types condition and the built declarations", async (t) => {
  t.timeout(600_000);
  const tmp = await tempDir(t, "modhost-sdk-");
  const pkg = JSON.parse(await readFile(path.join(ROOT, "package.json"), "utf8")) as { files: string[]; exports: Record<string, Record<string, string>> };
  const types = pkg.exports["./sdk"]!.types!;
  t.regex(types, /\.d\.ts$/);
  // The declarations, built as prepack builds them, into a copy of what `npm pack` ships.
  const into = path.join(tmp, "node_modules", "modhost");
  await mkdir(into, { recursive: true });
  for (const entry of [...pkg.files.filter((f) => f !== "types" && f !== "modules"), "package.json"]) {
    if (existsSync(path.join(ROOT, entry))) await cp(path.join(ROOT, entry), path.join(into, entry), { recursive: true, filter: (src) => !/node_modules|target/.test(src) });
  }
  // The dependencies a consumer's npm install brings.
  for (const dep of ["valibot", "typescript"]) await cp(path.join(ROOT, "node_modules", dep), path.join(tmp, "node_modules", dep), { recursive: true });
  // npm run build:types (prepack), into the copy.
  await execa(process.execPath, [path.join(ROOT, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.types.json", "--outDir", path.join(into, "types")], { cwd: ROOT, timeout: 240_000 });
  t.true(existsSync(path.join(into, types)), `${types} was built`);
  await writeFile(path.join(tmp, "package.json"), '{"type":"module"}');
  await writeFile(path.join(tmp, "tsconfig.json"), JSON.stringify({ compilerOptions: { target: "es2022", module: "nodenext", moduleResolution: "nodenext", strict: true, noEmit: true, skipLibCheck: false, types: [] }, include: ["index.ts"] }));
  // biome-ignore lint/suspicious/noTemplateCurlyInString: module source code, interpolated when the module runs.
  const good = 'import type { ModuleContext } from "modhost/sdk";\nexport default async function start(ctx: ModuleContext): Promise<void> {\n  ctx.log.info(`height ${await ctx.chain.getBlockHeight()}`);\n}\n';
  await writeFile(path.join(tmp, "index.ts"), good);
  const tsc = (cwd: string) => execa(process.execPath, [path.join(tmp, "node_modules", "typescript", "bin", "tsc"), "-p", "."], { cwd, reject: false, all: true, timeout: 240_000 });
  const ok = await tsc(tmp);
  t.is(ok.exitCode, 0, ok.all);
  // And the types are real: a misuse is an error, not an any.
  await writeFile(path.join(tmp, "index.ts"), good.replace("getBlockHeight()", "getBlockHieght()"));
  const wrong = await tsc(tmp);
  t.is(wrong.exitCode, 2, wrong.all);
  t.regex(wrong.all, /getBlockHieght/);
  t.notRegex(wrong.all, /TS2307/);

  // modhost/testing: its declarations, not modhost's sources, are what an author's tsc reads.
  t.is(pkg.exports["./testing"]!.types, "./types/testing/index.d.ts");
  t.true(existsSync(path.join(into, "types", "testing", "index.d.ts")), "types/testing/index.d.ts was built");
  for (const dep of ["@types/node", "ava"]) await cp(path.join(ROOT, "node_modules", dep), path.join(tmp, "node_modules", dep), { recursive: true });
  await writeFile(path.join(tmp, "tsconfig.json"), JSON.stringify({ compilerOptions: { target: "es2022", module: "nodenext", moduleResolution: "nodenext", strict: true, noEmit: true, skipLibCheck: true, types: ["node"], listFiles: true }, include: ["index.ts"] }));
  const harnessTest = 'import { startHost } from "modhost/testing";\nconst h = await startHost({ modules: ["."] });\nconst height: number = await h.mine(1);\nconsole.log(height, h.storage("x").get("t", "k"));\nawait h.stop();\n';
  await writeFile(path.join(tmp, "index.ts"), harnessTest);
  const harnessOk = await tsc(tmp);
  t.is(harnessOk.exitCode, 0, harnessOk.all.split("\n").filter((l) => /error/.test(l)).join("\n"));
  const read = harnessOk.all.split("\n").filter((l) => l.includes("node_modules/modhost/"));
  t.true(read.some((l) => l.endsWith("node_modules/modhost/types/testing/index.d.ts")), read.join("\n"));
  t.deepEqual(read.filter((l) => !l.endsWith(".d.ts")), [], "no source file of modhost is type-checked");
  await writeFile(path.join(tmp, "index.ts"), harnessTest.replace("h.mine(1)", 'h.mine("one")'));
  const harnessWrong = await tsc(tmp);
  t.is(harnessWrong.exitCode, 2);
  t.regex(harnessWrong.all, /index\.ts\(3,\d+\): error TS2345/);
});

test("modhost dev prints the exact command that reaches it, and that command works", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t, "modhost-devreach-");
  await cp(path.join(ROOT, "test", "fixtures", "modules", "good"), path.join(dir, "modules", "good"), { recursive: true });
  const config = path.join(dir, "modhost.toml");
  await writeFile(config, ["[modules]", 'modules_dir = "modules"', "", "[modules.default_limits]", "stop_timeout_ms = 1000", "", "[rpc]", "port = 0", ""].join("\n"));
  const child = execa(process.execPath, [BIN, "dev", path.join(dir, "modules", "good"), "--config", config, "--interval", "0"], { cwd: dir, reject: false, all: true, env: { NO_COLOR: "1" } });
  t.teardown(() => { child.kill("SIGKILL"); });
  let out = "";
  child.all!.on("data", (d: Buffer) => (out += d.toString()));
  await waitFor(() => /reach this host with: modhost list (.*?) {2}\(/.test(out), 120_000, "the dev host to say how to reach it", () => out);
  const options = /reach this host with: modhost list (.*?) {2}\(/.exec(out)![1]!.split(" ");
  t.true(options.includes("--rpcport"), options.join(" "));
  const elsewhere = await tempDir(t, "modhost-devreach-cwd-");
  const list = await modhost(["list", ...options], elsewhere);
  t.is(list.exitCode, 0, list.all);
  t.regex(list.stdout, /^good\s/m);
  child.kill("SIGINT");
  t.is((await child).exitCode, 0, out);
});

test("the connection defaults used without a modhost.toml are defaultConfig's [rpc] (address, cookie, max_response_bytes) and modules_dir", async (t) => {
  const { connectionDefaults } = await import("../host/rpc/commands.ts");
  const { defaultConfig } = await import("../host/config.ts");
  const d = defaultConfig("/srv/node");
  const c = connectionDefaults("/srv/node");
  t.deepEqual(c.rpc, { enabled: d.rpc.enabled, bind: d.rpc.bind, port: d.rpc.port, cookie_file: d.rpc.cookie_file, max_response_bytes: d.rpc.max_response_bytes });
  t.is(c.modules.modules_dir, d.modules.modules_dir);
  t.is(d.rpc.user, undefined);
});
