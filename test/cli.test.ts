// The command line, run as an operator runs it: `node bin/modhost.js ...` in a child process.

import test from "ava";
import type { ExecutionContext } from "ava";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { execa, type ResultPromise } from "execa";
import { buildModulesDir, GOOD_GRANTS, ROOT, tempDir, waitFor } from "./helpers/host.ts";
import { ModuleStore } from "../storage/store.ts";

const BIN = path.join(ROOT, "bin", "modhost.js");

function modhost(args: string[], cwd = ROOT) {
  return execa(process.execPath, [BIN, ...args], { cwd, reject: false, all: true, timeout: 60_000, env: { NO_COLOR: "1" } });
}

const toml = (list: string[]) => `[${list.map((s) => JSON.stringify(s)).join(", ")}]`;

/** A temp dir with a modules dir (fixtures copied in) and a modhost.toml; returns the config path. */
async function setup(t: ExecutionContext, fixtures: string[], grants: Record<string, string[]>, extra = ""): Promise<{ dir: string; config: string }> {
  const dir = await tempDir(t, "modhost-cli-");
  await buildModulesDir(dir, fixtures);
  const config = path.join(dir, "modhost.toml");
  const lines = [
    "[chain]",
    "block_interval_seconds = 0",
    "",
    "[modules]",
    'modules_dir = "modules"',
    'data_dir = "data/modules"',
    "",
    "[modules.default_limits]",
    "stop_timeout_ms = 1000",
    // The product's 10 s is what a module's start can take at load 20 (the harness's own is 60 s).
    "start_timeout_ms = 60000",
    "",
    "[storage]",
    'dir = "data/storage"',
    "",
    "[rpc]",
    "port = 0",
    "",
    // The fixtures are not signed: run them as a developer would (docs/signing.md).
    "[trust]",
    'signatures = "allow-unsigned"',
    "",
    ...Object.entries(grants).flatMap(([name, allow]) => [`[modules.grants.${name}]`, `allow = ${toml(allow)}`, ""]),
    extra,
  ];
  await writeFile(config, lines.join("\n"));
  return { dir, config };
}

test("modhost version prints the package version", async (t) => {
  const pkg = JSON.parse(await readFile(path.join(ROOT, "package.json"), "utf8")) as { version: string };
  const r = await modhost(["version"]);
  t.is(r.exitCode, 0);
  t.is(r.stdout.trim(), pkg.version);
});

test("an unknown command exits 2 with the usage", async (t) => {
  const r = await modhost(["frobnicate"]);
  t.is(r.exitCode, 2);
  t.regex(r.stderr, /unknown command "frobnicate"/);
  t.regex(r.stderr, /Usage:/);
});

test("modhost check on a good setup: exit 0, the load order and the granted capabilities", async (t) => {
  const { config } = await setup(t, ["good", "watcher"], { good: GOOD_GRANTS, watcher: ["subscribe_events=ModuleLoaded,ModuleCrashed,ModuleRestarted"] });
  const r = await modhost(["check", "--config", config]);
  t.is(r.exitCode, 0, r.all);
  t.regex(r.stdout, /^load order: good -> watcher$/m);
  t.regex(r.stdout, /^✓ good 0\.1\.0 \(isolate\)$/m);
  t.regex(r.stdout, /^ {4}granted: read_blockchain, read_chain_state, read_storage, subscribe_events, write_storage$/m);
  t.regex(r.stdout, /^✓ watcher 0\.1\.0 \(isolate\)$/m);
  t.regex(r.stdout, /^ {4}granted: subscribe_events=ModuleCrashed,ModuleLoaded,ModuleRestarted$/m);
  t.regex(r.stdout, /no problems found/);
  t.notRegex(r.stdout, /✗/);
});

test("modhost check on a broken setup: non-zero, and every problem with file:line:column and the fix", async (t) => {
  const { dir, config } = await setup(
    t,
    ["good", "bad-toml", "bad-semver", "unknown-cap", "cycle-a", "cycle-b", "needs-missing", "wants-mempool", "import-fs"],
    { good: GOOD_GRANTS, "wants-mempool": ["read_chain_state", "subscribe_events=NewBlock"] },
  );
  const r = await modhost(["check", "--config", config]);
  t.is(r.exitCode, 1, r.all);
  const out = r.stdout;
  const mods = path.join(dir, "modules");
  // Only what would start: modules with any problem (grants, compile errors) are left out.
  t.regex(out, /^load order: good$/m);
  t.regex(out, /^✓ good 0\.1\.0 \(isolate\)$/m);
  // Malformed TOML: where, what, the spot, the fix.
  t.true(out.includes(`${mods}/bad-toml/module.toml:3:`), out);
  t.regex(out, /TOML syntax error/);
  // Not semver.
  t.true(out.includes(`${mods}/bad-semver/module.toml:2:1: version: "1.0" is not a semantic version`), out);
  t.regex(out, /fix: write it as MAJOR\.MINOR\.PATCH: "1\.0\.0"/);
  // An unknown capability.
  t.true(out.includes(`${mods}/unknown-cap/module.toml:4:`), out);
  t.regex(out, /unknown capability "read_blockchian"\n\s+fix: did you mean "read_blockchain"\?/);
  // Cycle and missing dependency.
  t.regex(out, /✗ cycle-a 0\.1\.0 \(isolate\)\n\s+dependency cycle: cycle-a -> cycle-b -> cycle-a/);
  t.regex(out, /✗ cycle-b 0\.1\.0 \(isolate\)\n\s+dependency cycle: cycle-a -> cycle-b -> cycle-a/);
  t.regex(out, /✗ needs-missing 0\.1\.0 \(isolate\)\n\s+needs price-feed \^2\.0\.0, which is not installed/);
  // Ungranted capabilities, with the lines to add.
  t.regex(out, /✗ wants-mempool 0\.1\.0 \(isolate\)/);
  t.regex(out, /missing: read_mempool, subscribe_events=MempoolTransactionAdded/);
  t.true(out.includes("[modules.grants.wants-mempool]"));
  t.true(out.includes('allow = ["read_chain_state", "subscribe_events=NewBlock", "read_mempool", "subscribe_events=MempoolTransactionAdded"]'));
  // A module that does not compile, with the import and the fix.
  t.regex(out, /✗ import-fs 0\.1\.0 \(isolate\)\n\s+does not compile:/);
  t.true(out.includes(`${mods}/import-fs/index.ts:1:16: "node:fs" is a Node.js built-in`), out);
  t.regex(out, /use the capabilities on ctx instead/);
  t.regex(out, /^8 problem\(s\) found$/m);
});

test("modhost run with a malformed modhost.toml exits 1 naming file:line:column and the fix", async (t) => {
  const dir = await tempDir(t, "modhost-cli-");
  const config = path.join(dir, "modhost.toml");
  await writeFile(config, '[modules]\nenabled = true\nmodules_dir = "modules\n');
  const r = await modhost(["run", "--config", config]);
  t.is(r.exitCode, 1, r.all);
  t.regex(r.stderr, /configuration error/);
  t.true(r.stderr.includes(`${config}:3:`), r.stderr);
  t.regex(r.stderr, /TOML syntax error/);
  t.regex(r.stderr, /fix: /);
});

test("modhost run with a misspelt key exits 1 with its location and a suggestion", async (t) => {
  const dir = await tempDir(t, "modhost-cli-");
  const config = path.join(dir, "modhost.toml");
  await writeFile(config, '[modules]\nmodules_dri = "modules"\n\n[modules.grants.good]\nallow = ["read_blockchian"]\n');
  const r = await modhost(["run", "--config", config]);
  t.is(r.exitCode, 1, r.all);
  t.true(r.stderr.includes(`${config}:2:1:`), r.stderr);
  t.regex(r.stderr, /modules_dri/);
  t.regex(r.stderr, /did you mean "modules_dir"/);
  t.true(r.stderr.includes(`${config}:5:`), "every problem is reported, not only the first");
  t.regex(r.stderr, /did you mean "read_blockchain"/);
});

test("modhost check shows the provider designations, and a designation naming no module is a problem", async (t) => {
  const { config } = await setup(t, ["good"], { good: GOOD_GRANTS }, '[modules.providers]\npayment = "good"\ngovernance = "nobody"\n');
  const r = await modhost(["check", "--config", config]);
  t.is(r.exitCode, 1, r.all);
  t.regex(r.stdout, /^providers: payment = good, governance = nobody$/m);
  t.regex(r.stdout, /^✗ \[modules.providers\] governance = "nobody", but there is no module "nobody" in /m);
  t.regex(r.stdout, /1 problem\(s\) found/);
});

test("modhost check with a missing config file says so", async (t) => {
  const dir = await tempDir(t, "modhost-cli-");
  const r = await modhost(["check", "--config", path.join(dir, "nope.toml")]);
  t.is(r.exitCode, 1);
  t.regex(r.stderr, /nope\.toml: file not found/);
});

test("modhost run starts the modules and stops them gracefully on SIGTERM", async (t) => {
  // A new modhost process (its Node boot, its TypeScript loaded) and its module's start: over
  // 30 s at load ~37. The waits are for that, not for speed.
  t.timeout(300_000);
  const { dir, config } = await setup(t, ["good"], { good: GOOD_GRANTS });
  const child: ResultPromise = execa(process.execPath, [BIN, "run", "--config", config], { cwd: dir, reject: false, all: true, env: { NO_COLOR: "1" } });
  t.teardown(() => {
    child.kill("SIGKILL");
  });
  let output = "";
  child.all?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  await waitFor(() => /ready in \d+ ms running=good/.test(output), 120_000, "the host to be ready", () => output);
  child.kill("SIGTERM");
  const r = await child;
  t.is(r.exitCode, 0, output);
  t.regex(output, /shutting down \(SIGTERM\)/);
  t.regex(output, /unloaded good/);
  t.regex(output, /stopped in \d+ ms/);
  // The module's stop() ran and its write is on disk.
  const store = await ModuleStore.open(path.join(dir, "data", "storage", "good"));
  t.teardown(() => store.close());
  t.is(await store.get("blocks", "stopped"), "host shutdown");
});

test("modhost dev reloads a module when its files change; a change that does not compile is refused with the error and the running version keeps running", async (t) => {
  t.timeout(300_000);
  const { dir, config } = await setup(t, [], {});
  const mod = path.join(dir, "modules", "draft");
  const { mkdir } = await import("node:fs/promises");
  await mkdir(mod, { recursive: true });
  await writeFile(path.join(mod, "module.toml"), 'name = "draft"\nversion = "0.1.0"\nentry_point = "index.ts"\ncapabilities = ["read_chain_state"]\n');
  const source = (word: string) => `export default async function start(ctx: any) { ctx.log.info("draft says ${word} at " + await ctx.chain.getBlockHeight()); }\n`;
  await writeFile(path.join(mod, "index.ts"), source("first"));
  const child = execa(process.execPath, [BIN, "dev", mod, "--config", config, "--interval", "0"], { cwd: dir, reject: false, all: true, env: { NO_COLOR: "1" } });
  t.teardown(() => { child.kill("SIGKILL"); });
  let out = "";
  child.all!.on("data", (d: Buffer) => (out += d.toString()));
  await waitFor(() => /draft says first at 101/.test(out) && /\[dev\] watching .* for changes/.test(out), 120_000, "the module to start and the watch", () => out);
  await writeFile(path.join(mod, "index.ts"), source("second"));
  await waitFor(() => /draft says second at 101/.test(out) && /reloaded draft/.test(out), 120_000, "the module to reload", () => out);
  await writeFile(path.join(mod, "index.ts"), `import fs from "node:fs";\nexport const read = fs.readFileSync;\n${source("third")}`);
  await waitFor(() => /reload of draft failed: .*node:fs/.test(out), 120_000, "the failed reload to be reported", () => out);
  t.false(/draft says third/.test(out));
  // Refused before the running version was stopped: only the reload to "second" unloaded it.
  t.is(out.match(/unloaded draft/g)?.length ?? 0, 1, out);
  child.kill("SIGINT");
  const r = await child;
  t.is(r.exitCode, 0, out);
});
