// Every code snippet of docs/module-guide.md is extracted and checked, so the guide cannot rot.
// A fenced block's info string says what it is (the first word is the language):
//
//   ```sh            commands: every `modhost SUBCOMMAND` names a subcommand `modhost help` lists
//   ```text          not code (a directory tree, an output)
//   ```toml manifest a module.toml: the host's manifest parser accepts it
//   ```ts module     a whole TypeScript module: it runs under a host (modhost/testing) with the
//                    capabilities of MODULE_CAPS, and logs the height of a block mined after it started
//   ```ts test       a test file with modhost/testing: it passes under `modhost test` in a module
//                    made by `modhost new my-module`
//   ```ts fragment   statements inside a module's start(ctx): type-checked against modhost/sdk,
//                    with `uses=a,b` naming the helpers it calls that the guide does not define
//   ```rust program  a whole Rust module; ```rust fragment: statements with `client: &Client` in
//                    scope; both compiled together against sdk/rust (cargo check, when cargo exists)
import test from "ava";
import { execa } from "execa";
import { spawnSync } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { ROOT, tempDir } from "./helpers/host.ts";
import { loadManifest } from "../host/manifest.ts";
import { scaffold } from "../host/scaffold.ts";
import { startHost } from "../testing/index.ts";

const GUIDE = path.join(ROOT, "docs/module-guide.md");
const CLI = path.join(ROOT, "bin/modhost.js");
const TSC = path.join(ROOT, "node_modules/.bin/tsc");
/** What a `ts module` snippet is granted (every TypeScript module snippet uses a subset). */
const MODULE_CAPS = ["read_blockchain", "read_chain_state", "subscribe_events=NewBlock", "read_storage", "write_storage", "register_rpc_endpoint"];
const KNOWN = new Set(["sh", "text", "toml manifest", "ts module", "ts test", "ts fragment", "rust program", "rust fragment"]);

interface Snippet {
  line: number;
  kind: string;
  attrs: Record<string, string>;
  code: string;
}

function snippets(md: string): Snippet[] {
  const out: Snippet[] = [];
  const lines = md.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```(.*)$/.exec(lines[i]!);
    if (!open) continue;
    const indent = open[1]!.length;
    const words = open[2]!.trim().split(/\s+/).filter(Boolean);
    const attrs: Record<string, string> = {};
    const kindWords: string[] = [];
    for (const w of words) {
      const eq = w.indexOf("=");
      if (eq > 0) attrs[w.slice(0, eq)] = w.slice(eq + 1);
      else kindWords.push(w);
    }
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length && !/^\s*```\s*$/.test(lines[j]!); j++) body.push(lines[j]!.slice(indent));
    out.push({ line: i + 1, kind: kindWords.join(" "), attrs, code: body.join("\n") + "\n" });
    i = j;
  }
  return out;
}

const all = snippets(await readFile(GUIDE, "utf8"));
const of = (kind: string) => all.filter((s) => s.kind === kind);
const where = (s: Snippet) => `docs/module-guide.md:${s.line}`;

test("every fenced block of the guide says what it is, so that a test checks it", (t) => {
  const untagged = all.filter((s) => !KNOWN.has(s.kind)).map((s) => `${where(s)}: \`\`\`${s.kind}`);
  t.deepEqual(untagged, [], `tag each block as one of: ${[...KNOWN].join(", ")} (see test/guide.test.ts)`);
  t.true(of("ts fragment").length > 10, "the guide's TypeScript fragments are found");
});

test("the guide's shell snippets name only subcommands modhost has", async (t) => {
  const help = (await execa(process.execPath, [CLI, "help"])).stdout;
  const used = of("sh").flatMap((s) => [...s.code.matchAll(/(?:^|\s)(?:npx )?modhost ([a-z][a-z-]*)/gm)].map((m) => ({ s, sub: m[1]! })));
  t.true(used.length > 0);
  for (const { s, sub } of used) t.true(new RegExp(`^\\s+modhost ${sub}\\b`, "m").test(help), `${where(s)}: modhost ${sub} is not in modhost help`);
});

test("the guide's manifests parse", async (t) => {
  const dir = await tempDir(t, "modhost-guide-");
  const manifests = of("toml manifest");
  t.true(manifests.length >= 2);
  for (const s of manifests) {
    const file = path.join(dir, `L${s.line}`, "module.toml");
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, s.code);
    await t.notThrowsAsync(loadManifest(file), where(s));
  }
});

test("the guide's TypeScript fragments type-check against modhost/sdk", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t, "modhost-guide-");
  // A directory like a module made by `modhost new`: modhost/sdk resolves through node_modules/modhost.
  const { dir: mod } = await scaffold({ name: "guide-fragments", dir: path.join(dir, "m") });
  const files: Record<string, Snippet> = {};
  for (const s of of("ts fragment")) {
    const uses = (s.attrs.uses ?? "").split(",").filter(Boolean);
    const file = `fragment-L${s.line}.ts`;
    files[file] = s;
    await writeFile(path.join(mod, file), [
      'import type { ModuleContext } from "modhost/sdk";',
      ...uses.map((u) => `declare const ${u}: any;`),
      "export async function fragment(ctx: ModuleContext): Promise<void> {",
      s.code,
      "}",
    ].join("\n"));
  }
  for (const s of of("ts module")) {
    files[`module-L${s.line}.ts`] = s;
    await writeFile(path.join(mod, `module-L${s.line}.ts`), s.code);
  }
  await writeFile(path.join(mod, "tsconfig.json"), JSON.stringify({
    extends: "./tsconfig.base.json",
    include: Object.keys(files),
  }));
  await writeFile(path.join(mod, "tsconfig.base.json"), await readFile(path.join(ROOT, "templates/ts/tsconfig.json"), "utf8"));
  const r = await execa(TSC, ["-p", mod], { reject: false, all: true, timeout: 280_000 });
  // Errors name the guide's line: fragment-L123.ts(4,7) is the snippet that starts at line 123.
  const report = r.all.replace(/\S*(fragment|module)-L(\d+)\.ts\((\d+),\d+\)/g, (_m, kind: string, l: string, n: string) => {
    // A fragment's file starts with the import, its `uses` declarations and the function line.
    const skip = kind === "fragment" ? 2 + (files[`fragment-L${l}.ts`]!.attrs.uses ?? "").split(",").filter(Boolean).length : 0;
    return `docs/module-guide.md:${Number(l) + Number(n) - skip}`;
  });
  t.is(r.exitCode, 0, report);
});

test("the guide's whole TypeScript modules run under a host and follow a mined block", async (t) => {
  t.timeout(300_000);
  const modules = of("ts module");
  t.true(modules.length >= 1);
  for (const s of modules) {
    const dir = path.join(await tempDir(t, "modhost-guide-"), "guide-module");
    await mkdir(dir);
    await writeFile(path.join(dir, "module.toml"), `name = "guide-module"\nversion = "0.1.0"\nentry_point = "index.ts"\ncapabilities = ${JSON.stringify(MODULE_CAPS)}\n`);
    await writeFile(path.join(dir, "index.ts"), s.code);
    const h = await startHost({ modules: [dir], teardown: t.teardown.bind(t) });
    const status = await h.waitForState("guide-module", ["running", "failed"], 60_000);
    t.is(status.state, "running", `${where(s)}: ${status.problem ?? ""}`);
    const height = await h.mine(1);
    await h.waitForLog(new RegExp(`\\b${height}\\b`), { module: "guide-module", timeoutMs: 60_000 });
    t.deepEqual(h.logs("guide-module").filter((r) => r.level === "error").map((r) => r.message), [], where(s));
  }
});

test("the guide's harness tests pass under modhost test in a module made by modhost new", async (t) => {
  t.timeout(600_000);
  const tests = of("ts test");
  t.true(tests.length >= 1);
  const { dir } = await scaffold({ name: "my-module", dir: path.join(await tempDir(t, "modhost-guide-"), "my-module") });
  const files = tests.map((s) => `test/guide-L${s.line}.test.ts`);
  for (const [i, s] of tests.entries()) await writeFile(path.join(dir, files[i]!), s.code);
  const r = await execa(process.execPath, [CLI, "test", ...files], { cwd: dir, reject: false, all: true, timeout: 580_000 });
  t.is(r.exitCode, 0, r.all);
  t.regex(r.all, /ℹ fail 0\n/);
  t.notRegex(r.all, /ℹ pass 0\n/);
});

const hasCargo = spawnSync("cargo", ["--version"]).status === 0;
(hasCargo ? test : test.skip)("the guide's Rust snippets compile against sdk/rust (needs cargo)", async (t) => {
  t.timeout(1_200_000);
  const { dir } = await scaffold({ name: "guide-rust", lang: "rust", dir: path.join(await tempDir(t, "modhost-guide-"), "guide-rust") });
  const programs = of("rust program");
  const fragments = of("rust fragment");
  t.is(programs.length, 1, "one whole program (src/main.rs)");
  const main = [
    programs[0]!.code,
    "#[allow(dead_code, unused_imports, unused_variables)]",
    "mod fragments {",
    "    use modhost_sdk::*;",
    ...fragments.map((s, i) => `    pub fn f${i}(client: &Client) -> Result<(), Error> {\n${s.code}\n        Ok(())\n    }`),
    "}",
  ].join("\n");
  await writeFile(path.join(dir, "src/main.rs"), main);
  // build.sh's crate source choice (Debian's crates offline when crates.io is not used), with cargo check.
  const script = (await readFile(path.join(dir, "build.sh"), "utf8")).replace("cargo build --release --quiet", "cargo check --quiet");
  await writeFile(path.join(dir, "check.sh"), script);
  // A check only: its build cache may outlive the test (later runs check in seconds).
  const env = { CARGO_TARGET_DIR: path.join(tmpdir(), "modhost-guide-cargo-check") };
  const r = await execa("bash", ["check.sh"], { cwd: dir, env, reject: false, all: true, timeout: 1_100_000 });
  const report = r.all.replace(/src\/main\.rs:(\d+)/g, (m) => `${m} (the program is ${where(programs[0]!)}; fragments follow it in order: ${fragments.map(where).join(", ")})`);
  t.is(r.exitCode, 0, report);
});
