// `modhost new` (host/scaffold.ts, templates/) and `modhost test` (host/test-command.ts), run
// as an author runs them: the CLI in a directory outside the checkout. A new TypeScript module
// type-checks with its own tsconfig.json, runs under `modhost dev` and stores a mined block, and
// its generated test passes; a new Rust module builds offline with its build.sh and its
// generated test passes against the built binary.
import test from "ava";
import { execa } from "execa";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, realpath, writeFile } from "node:fs/promises";
import path from "node:path";
import { ROOT, tempDir, waitFor } from "./helpers/host.ts";
import { loadManifest } from "../host/manifest.ts";

const CLI = path.join(ROOT, "bin/modhost.js");
const TSC = path.join(ROOT, "node_modules/.bin/tsc");
const hasCargo = spawnSync("cargo", ["--version"]).status === 0;

const modhost = (args: string[], cwd: string, opts: { timeout?: number } = {}) =>
  execa(process.execPath, [CLI, ...args], { cwd, reject: false, all: true, timeout: opts.timeout ?? 120_000 });

test("modhost new refuses a bad name, an unknown --lang and a directory with files in it, saying what to do", async (t) => {
  const dir = await tempDir(t, "modhost-new-");
  const bad = await modhost(["new", "../evil"], dir);
  t.is(bad.exitCode, 1);
  t.regex(bad.all, /"\.\.\/evil" cannot be a module name: a name is 1 to 64 letters, digits, '-' and '_'/);
  const lang = await modhost(["new", "x", "--lang", "go"], dir);
  t.is(lang.exitCode, 1);
  t.regex(lang.all, /--lang must be one of ts, rust, not "go"/);
  await writeFile(path.join(dir, "keep.txt"), "mine");
  const busy = await modhost(["new", "x", "--dir", "."], dir);
  t.is(busy.exitCode, 1);
  t.regex(busy.all, /already exists and is not empty; modhost new never overwrites files/);
  t.is(await readFile(path.join(dir, "keep.txt"), "utf8"), "mine");
  const none = await modhost(["new"], dir);
  t.is(none.exitCode, 2);
  t.regex(none.all, /modhost new needs NAME/);
});

test("modhost new writes a TypeScript module that type-checks and whose generated test passes under modhost test", async (t) => {
  t.timeout(600_000);
  const parent = await tempDir(t, "modhost-new-");
  const made = await modhost(["new", "hello"], parent);
  t.is(made.exitCode, 0, made.all);
  const dir = path.join(parent, "hello");
  for (const f of ["module.toml", "index.ts", "test/module.test.ts", "tsconfig.json", "README.md", "package.json", ".gitignore"]) t.true(existsSync(path.join(dir, f)), f);
  t.is(await realpath(path.join(dir, "node_modules/modhost")), await realpath(ROOT));
  const manifest = await loadManifest(path.join(dir, "module.toml"));
  t.is(manifest.name, "hello");
  t.deepEqual(manifest.capabilities.map((c) => c.permission).sort(), ["read_blockchain", "read_chain_state", "read_storage", "register_rpc_endpoint", "subscribe_events", "write_storage"]);
  t.regex(await readFile(path.join(dir, "module.toml"), "utf8"), /entry_point = "index.ts" +# /, "fields carry comments");

  const tsc = await execa(TSC, ["-p", dir], { reject: false, all: true, timeout: 300_000 });
  t.is(tsc.exitCode, 0, `tsc -p ${dir}:\n${tsc.all}`);

  const run = await modhost(["test"], dir, { timeout: 300_000 });
  t.is(run.exitCode, 0, run.all);
  t.regex(run.all, /✔ stores each mined block and serves the last over RPC/);
  t.regex(run.all, /ℹ pass 1\n/);
});

test("a new TypeScript module stores a block mined by `modhost dev` run in its directory", async (t) => {
  t.timeout(300_000);
  const parent = await tempDir(t, "modhost-new-");
  t.is((await modhost(["new", "devmod"], parent)).exitCode, 0);
  const dir = path.join(parent, "devmod");
  // Its own data directories and any free port (tests run in parallel); everything else is
  // what `npx modhost dev` does with no options.
  const config = path.join(parent, "dev.toml");
  await writeFile(config, "[rpc]\nport = 0\n");
  const dev = execa(process.execPath, [CLI, "dev", "--config", config, "--interval", "1"], { cwd: dir, reject: false, all: true, buffer: true });
  let out = "";
  dev.all?.on("data", (d: Buffer) => (out += d.toString()));
  t.teardown(async () => {
    dev.kill("SIGINT");
    await dev;
  });
  const stored = () => [...out.matchAll(/\[devmod\] block (\d+) stored: (\d+) txs/g)].map((m) => Number(m[1]));
  await waitFor(() => stored().length >= 2, 240_000, "devmod to store the tip and a mined block", () => out.slice(-3000));
  const heights = stored();
  // The dev host mines from its own start on (every second here), so the tip the module finds
  // at its start is 101 or a little higher.
  t.true(heights[0]! >= 101, `at start it stores the tip (a first start has no cursor): ${heights[0]}`);
  t.is(heights[1], heights[0]! + 1, "then the next block the dev host mined");
});

(hasCargo ? test : test.skip)("modhost new --lang rust writes a crate that builds offline with its build.sh and whose generated test passes (needs cargo)", async (t) => {
  t.timeout(1_200_000);
  const parent = await tempDir(t, "modhost-new-");
  t.is((await modhost(["new", "rusty", "--lang", "rust"], parent)).exitCode, 0);
  const dir = path.join(parent, "rusty");
  for (const f of ["Cargo.toml", "src/main.rs", "module.toml", "build.sh", ".cargo-offline/config.toml", "test/module.test.ts", "tsconfig.json", "README.md"]) t.true(existsSync(path.join(dir, f)), f);
  t.regex(await readFile(path.join(dir, "Cargo.toml"), "utf8"), /modhost-sdk = \{ path = "node_modules\/modhost\/sdk\/rust" \}/);

  // `modhost test` builds first (./build.sh), then runs the node:test file against the binary.
  const run = await modhost(["test"], dir, { timeout: 1_100_000 });
  t.is(run.exitCode, 0, run.all);
  t.regex(run.all, /build: target\/release\/rusty/);
  t.true(existsSync(path.join(dir, "target/release/rusty")));
  t.regex(run.all, /✔ stores each mined block and serves the last over RPC/);
  t.regex(run.all, /ℹ pass 1\n/);
});
