// `modhost dev` as a module author runs it (node bin/modhost.js dev ... in a child process):
// saves by rename (sed -i, editors' atomic save) and in-place writes are all reloaded, a save
// that does not compile keeps the running version, storage survives reloads, several modules
// are watched at once, and a Rust module is rebuilt before it is reloaded.

import test from "ava";
import type { ExecutionContext } from "ava";
import { cp, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import path from "node:path";
import { execa, execaSync } from "execa";
import { ROOT, tempDir, waitFor } from "./helpers/host.ts";

const BIN = path.join(ROOT, "bin", "modhost.js");
/** Each test does many reloads (and the Rust one a cargo build): more than ava's default inactivity timeout on a loaded machine. */
const TEST_TIMEOUT_MS = 15 * 60_000;

/** A modhost.toml for dev under `dir` (its own data directories, any free RPC port). */
async function devConfig(dir: string): Promise<string> {
  const config = path.join(dir, "modhost.toml");
  await writeFile(config, [
    "[chain]", "block_interval_seconds = 0", "",
    "[modules]", 'modules_dir = "modules"', 'data_dir = "data/modules"', "",
    "[modules.default_limits]", "stop_timeout_ms = 1000", "",
    "[storage]", 'dir = "data/storage"', "",
    "[rpc]", "port = 0", "",
  ].join("\n"));
  return config;
}

/** A module that counts its starts in its storage and logs the word in its source. */
function counter(name: string, word: string): string {
  return [
    "export default async function start(ctx: any): Promise<void> {",
    '  await ctx.storage.openTree("dev");',
    '  const n = Number((await ctx.storage.get("dev", "starts")) ?? 0) + 1;',
    '  await ctx.storage.put("dev", "starts", n);',
    `  ctx.log.info("${name} says ${word}, start " + n);`,
    "}",
    "",
  ].join("\n");
}

async function writeCounter(modules: string, name: string): Promise<string> {
  const dir = path.join(modules, name);
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, "module.toml"), `name = "${name}"\nversion = "0.1.0"\nentry_point = "index.ts"\ncapabilities = ["read_storage", "write_storage"]\n`);
  await writeFile(path.join(dir, "index.ts"), counter(name, "w0"));
  return dir;
}

/** Start `modhost dev target`; `out()` is everything it printed so far. */
function startDev(t: ExecutionContext, dir: string, config: string, target: string, env: Record<string, string> = {}) {
  const child = execa(process.execPath, [BIN, "dev", target, "--config", config, "--interval", "0"], { cwd: dir, reject: false, all: true, env: { NO_COLOR: "1", ...env } });
  t.teardown(() => { child.kill("SIGKILL"); });
  let out = "";
  child.all!.on("data", (d: Buffer) => (out += d.toString()));
  return { child, out: () => out };
}

/** An atomic save, as sed -i and most editors do it: write a temporary file, rename it over the old one. */
async function saveByRename(file: string, content: string): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp${process.pid}`);
  await writeFile(tmp, content);
  await rename(tmp, file);
}

const count = (text: string, re: RegExp) => text.split("\n").filter((l) => re.test(l)).length;

test("ten saves by rename are all reloaded, storage survives each reload, and a save that does not compile keeps the running version", async (t) => {
  t.timeout(TEST_TIMEOUT_MS);
  const dir = await tempDir(t, "modhost-dev-");
  const modules = path.join(dir, "modules");
  const mod = await writeCounter(modules, "draft");
  const config = await devConfig(dir);
  const dev = startDev(t, dir, config, mod);
  await waitFor(() => /draft says w0, start 1\b/.test(dev.out()) && /\[dev\] watching .* for changes/.test(dev.out()), 180_000, "the module to start and the watch", dev.out);
  t.regex(dev.out(), /DEVELOPMENT ONLY/);

  const took: number[] = [];
  for (let i = 1; i <= 10; i++) {
    const started = Date.now();
    await saveByRename(path.join(mod, "index.ts"), counter("draft", `w${i}`));
    await waitFor(() => new RegExp(`draft says w${i}, start ${i + 1}\\b`).test(dev.out()), 60_000, `save ${i} to be reloaded`, dev.out);
    took.push(Date.now() - started);
  }
  // The new version logs before the reload is reported done: wait for the tenth report.
  await waitFor(() => count(dev.out(), /\[dev\] reloaded draft\b/) >= 10, 60_000, "ten reloads reported", dev.out);
  t.is(count(dev.out(), /\[dev\] reloaded draft\b/), 10);
  const sorted = [...took].sort((a, b) => a - b);
  t.log(`save by rename -> new version running: median ${sorted[5]} ms (min ${sorted[0]}, max ${sorted[9]}) over 10 saves`);

  // A save that does not compile: refused, the running version keeps running.
  await saveByRename(path.join(mod, "index.ts"), "export default async function start() {\n  let a b = 1;\n}\n");
  await waitFor(() => /reload of draft failed: [\s\S]*keeps running/.test(dev.out()), 60_000, "the refused reload", dev.out);
  t.regex(dev.out(), /index\.ts:2:\d+: .*\n\s+\d+ \|/, "the compile error names file:line:col with a code frame");
  // An in-place write (the same inode) fixes it, and the storage counter goes on from 11.
  await writeFile(path.join(mod, "index.ts"), counter("draft", "fixed"));
  await waitFor(() => /draft says fixed, start 12\b/.test(dev.out()), 60_000, "the fixed version", dev.out);
  await waitFor(() => count(dev.out(), /\[dev\] reloaded draft\b/) >= 11, 60_000, "the eleventh reload reported", dev.out);
  t.is(count(dev.out(), /\[dev\] reloaded draft\b/), 11);
  dev.child.kill("SIGINT");
  t.is((await dev.child).exitCode, 0, dev.out());
});

test("several modules are watched at once, including files in a new subdirectory", async (t) => {
  t.timeout(TEST_TIMEOUT_MS);
  const dir = await tempDir(t, "modhost-dev-");
  const modules = path.join(dir, "modules");
  const a = await writeCounter(modules, "alpha");
  const b = await writeCounter(modules, "beta");
  const config = await devConfig(dir);
  const dev = startDev(t, dir, config, modules);
  await waitFor(() => /alpha says w0/.test(dev.out()) && /beta says w0/.test(dev.out()) && /\[dev\] watching/.test(dev.out()), 180_000, "both modules", dev.out);
  await saveByRename(path.join(b, "index.ts"), counter("beta", "w1"));
  await waitFor(() => /beta says w1, start 2\b/.test(dev.out()), 60_000, "beta reloaded", dev.out);
  t.false(/alpha says w0, start 2/.test(dev.out()), "alpha was not reloaded for beta's change");
  // A file in a subdirectory created after the start.
  await mkdir(path.join(a, "lib"));
  await writeFile(path.join(a, "lib", "word.ts"), 'export const WORD = "sub1";\n');
  await waitFor(() => /reloaded alpha/.test(dev.out()), 60_000, "alpha reloaded for the new directory", dev.out);
  // biome-ignore lint/suspicious/noTemplateCurlyInString: module source code, interpolated when the module runs.
  await writeFile(path.join(a, "index.ts"), `import { WORD } from "./lib/word.ts";\n${counter("alpha", "${WORD}").replace('"alpha says ${WORD}', '"alpha says " + WORD + "')}`);
  await waitFor(() => /alpha says sub1/.test(dev.out()), 60_000, "alpha importing lib/word.ts", dev.out);
  await saveByRename(path.join(a, "lib", "word.ts"), 'export const WORD = "sub2";\n');
  await waitFor(() => /alpha says sub2/.test(dev.out()), 60_000, "a save by rename in the new subdirectory", dev.out);
  t.pass();
});

test("modhost dev --inspect prints a devtools URL per module; a debugger evaluates in the module, and after a reload reconnects to the new version", async (t) => {
  t.timeout(TEST_TIMEOUT_MS);
  const dir = await tempDir(t, "modhost-dev-");
  const mod = await writeCounter(path.join(dir, "modules"), "draft");
  await writeFile(path.join(mod, "index.ts"), `${counter("draft", "w0")}export const VERSION = "first";\n(globalThis as any).probe = () => "first";\n`);
  const config = await devConfig(dir);
  const child = execa(process.execPath, [BIN, "dev", mod, "--config", config, "--interval", "0", "--inspect=0"], { cwd: dir, reject: false, all: true, env: { NO_COLOR: "1" } });
  t.teardown(() => { child.kill("SIGKILL"); });
  let out = "";
  child.all!.on("data", (d: Buffer) => (out += d.toString()));
  await waitFor(() => /\[dev\] watching/.test(out) && /inspector for draft: open devtools:\/\//.test(out), 180_000, "the inspector URL", () => out);
  t.regex(out, /the inspector is on \(127\.0\.0\.1:0, loopback only\)/);
  const ws = /attach VS Code to (ws:\/\/127\.0\.0\.1:\d+\/[0-9a-f-]+)/.exec(out)![1]!;
  const evaluate = async (expression: string) => {
    const sock = new WebSocket(ws);
    await new Promise((resolve, reject) => {
      sock.addEventListener("open", resolve);
      sock.addEventListener("error", () => reject(new Error(`cannot connect to ${ws}`)));
    });
    // The module's context, as Runtime.enable announces it (the console's context picker).
    const context = new Promise<number>((resolve) => sock.addEventListener("message", (ev) => {
      const msg = JSON.parse(String(ev.data));
      if (msg.method === "Runtime.executionContextCreated") resolve(msg.params.context.id);
    }));
    const answer = new Promise<any>((resolve) => sock.addEventListener("message", (ev) => {
      const msg = JSON.parse(String(ev.data));
      if (msg.id === 2) resolve(msg);
    }));
    sock.send(JSON.stringify({ id: 1, method: "Runtime.enable" }));
    sock.send(JSON.stringify({ id: 2, method: "Runtime.evaluate", params: { expression, contextId: await context } }));
    const result = (await answer).result ?? (await answer);
    const closed = new Promise((resolve) => sock.addEventListener("close", resolve));
    return { result, sock, closed };
  };
  const first = await evaluate("probe()");
  t.is(first.result.result?.value, "first", JSON.stringify(first.result));
  // A reload ends the session (the old isolate is gone); the same URL reaches the new version.
  await saveByRename(path.join(mod, "index.ts"), `${counter("draft", "w1")}(globalThis as any).probe = () => "second";\n`);
  await first.closed;
  await waitFor(() => /\[dev\] reloaded draft\b/.test(out), 60_000, "the reload", () => out);
  const second = await evaluate("probe()");
  t.is(second.result.result?.value, "second", JSON.stringify(second.result));
  second.sock.close();
  child.kill("SIGINT");
  t.is((await child).exitCode, 0, out);
});

const RUST_EXAMPLE = path.join(ROOT, "modules", "rust-example");
const haveCargo = existsSync(path.join(RUST_EXAMPLE, "target", "release", "rust-example")) && execaSync("cargo", ["--version"], { reject: false }).exitCode === 0;

(haveCargo ? test : test.skip)("a Rust module is rebuilt with cargo on save, then reloaded; a build error keeps the running version (needs cargo and the built rust-example)", async (t) => {
  t.timeout(TEST_TIMEOUT_MS);
  const dir = await tempDir(t, "modhost-dev-");
  const modules = path.join(dir, "modules");
  const mod = path.join(modules, "rust-example");
  // Build output copied with its timestamps, and the SDK dependency pointed at the repository's
  // sdk/rust (the same package as in the repository's build): only the module's own crate is
  // compiled again, not the SDK and its dependencies.
  await cp(RUST_EXAMPLE, mod, { recursive: true, preserveTimestamps: true, filter: (src) => !src.includes(`${path.sep}incremental`) });
  const manifest = path.join(mod, "Cargo.toml");
  const cargoToml = await readFile(manifest, "utf8");
  t.true(cargoToml.includes('path = "../../sdk/rust"'));
  await writeFile(manifest, cargoToml.replace('path = "../../sdk/rust"', `path = ${JSON.stringify(path.join(ROOT, "sdk", "rust"))}`));
  const config = await devConfig(dir);
  // An unoptimised build: the test is about rebuilding on save, not about the binary.
  const dev = startDev(t, dir, config, mod, { CARGO_PROFILE_RELEASE_OPT_LEVEL: "0", CARGO_PROFILE_RELEASE_CODEGEN_UNITS: "16" });
  await waitFor(() => /rust-example: caught up/.test(dev.out()) && /\[dev\] watching/.test(dev.out()), 120_000, "rust-example to start", dev.out);
  const main = path.join(mod, "src", "main.rs");
  const source = await readFile(main, "utf8");
  t.true(source.includes("rust-example: caught up"));
  await saveByRename(main, source.replace("rust-example: caught up", "rust-example rebuilt: caught up"));
  await waitFor(() => /rust-example rebuilt: caught up/.test(dev.out()), 600_000, "the rebuilt module", dev.out);
  t.regex(dev.out(), /rebuilt rust-example in \d+ ms/);
  t.log(/rebuilt rust-example in \d+ ms/.exec(dev.out())![0]);
  await saveByRename(main, `${source}\nfn broken( {\n`);
  await waitFor(() => /reload of rust-example refused: cargo build failed; the running version keeps running/.test(dev.out()), 600_000, "the refused rebuild", dev.out);
  t.is(count(dev.out(), /\[dev\] reloaded rust-example\b/), 1);
});
