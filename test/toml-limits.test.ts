// Bounds of TOML reading (host/toml.ts), shared by modhost.toml and module.toml: file size is
// checked before the file is read (MAX_TOML_BYTES for modhost.toml, MAX_MANIFEST_BYTES for a
// module.toml), nesting depth (dotted keys included) after parsing, with an
// iterative walk; both are ConfigErrors naming the limit. A 100 000-part dotted key used to take
// minutes in the error locator (quadratic); it is now refused in linear time.

import test from "ava";
import { execa } from "execa";
import { readdir, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadConfig } from "../host/config.ts";
import { ConfigError } from "../host/errors.ts";
import { loadManifest } from "../host/manifest.ts";
import { deeperThan, locate, MAX_MANIFEST_BYTES, MAX_TOML_BYTES, MAX_TOML_DEPTH } from "../host/toml.ts";
import { tempDir } from "./helpers/host.ts";
import { writeUnknownKeysToml } from "./helpers/toml.ts";

test("a TOML file over MAX_TOML_BYTES is refused before it is read, naming the limit", async (t) => {
  const file = path.join(await tempDir(t), "modhost.toml");
  await writeFile(file, `# ${"x".repeat(MAX_TOML_BYTES)}\n`);
  const err = await t.throwsAsync(loadConfig(file), { instanceOf: ConfigError });
  t.regex(err!.message, /more than the 1048576 a modhost TOML file may have \(MAX_TOML_BYTES\)/);
});

test("a module.toml over MAX_MANIFEST_BYTES (32 KiB) is refused before it is parsed, naming the limit, while one at the limit is read; every shipped module's and template's manifest is under a quarter of it", async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, "module.toml");
  const head = `name = "m"\nversion = "0.1.0"\nentry_point = "index.ts"\ncapabilities = []\n`;
  await writeFile(file, `${head}# ${"x".repeat(MAX_MANIFEST_BYTES - head.length - 3)}\n`);
  const atLimit = await loadManifest(file);
  t.is(atLimit.name, "m", "a manifest of exactly MAX_MANIFEST_BYTES is read");
  await writeFile(file, `${head}# ${"x".repeat(MAX_MANIFEST_BYTES - head.length - 2)}\n`);
  const err = await t.throwsAsync(loadManifest(file), { instanceOf: ConfigError });
  t.regex(err!.message, new RegExp(`more than the ${MAX_MANIFEST_BYTES} a module.toml may have \\(MAX_MANIFEST_BYTES\\)`));
  const shipped = [
    ...(await readdir("modules")).map((m) => path.join("modules", m, "module.toml")),
    ...(await readdir("templates")).map((m) => path.join("templates", m, "module.toml")),
  ];
  let largest = 0;
  for (const f of shipped) {
    const size = await stat(f).then((s) => s.size, () => 0);
    largest = Math.max(largest, size);
  }
  t.true(largest > 0, "the shipped manifests were found");
  t.true(largest < MAX_MANIFEST_BYTES / 4, `the largest shipped manifest is ${largest} bytes`);
  t.log(`the largest of ${shipped.length} shipped manifests is ${largest} bytes`);
});

test("nesting deeper than MAX_TOML_DEPTH (dotted keys, headers, arrays) is a located ConfigError; the limit itself is fine", async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, "module.toml");
  // A 100 000-part dotted key (200 KB) fits only modhost.toml's MAX_TOML_BYTES, not a manifest.
  const config = path.join(dir, "modhost.toml");
  const cases: Array<[string, (f: string) => Promise<unknown>, string]> = [
    [config, loadConfig, `[host]\n${"a.".repeat(100_000)}a = 1\n`],
    [file, loadManifest, `name = "x"\nversion = "1.0.0"\nentry_point = "index.ts"\n[config]\n${"a.".repeat(10_000)}a = 1\n`],
    [file, loadManifest, `[${"b.".repeat(MAX_TOML_DEPTH)}b]\n`],
    [file, loadManifest, `c = ${"[".repeat(MAX_TOML_DEPTH + 1)}1${"]".repeat(MAX_TOML_DEPTH + 1)}\n`],
  ];
  for (const [where, load, text] of cases) {
    await writeFile(where, text);
    const err = await t.throwsAsync(load(where), { instanceOf: ConfigError });
    t.regex(err!.message, /tables and arrays nest more than 64 deep \(MAX_TOML_DEPTH\)/);
    t.true((err as ConfigError).problems[0]!.line !== undefined, "located");
  }
  t.is(deeperThan({ a: { b: [1, { c: 2 }] } }, 3), undefined);
  t.deepEqual(deeperThan({ a: { b: [1, { c: { d: 1 } }] } }, 3), ["a", "b", 1, "c"]);
  let chain: Record<string, unknown> = {};
  const root = chain;
  for (let i = 0; i < 200_000; i++) chain = (chain["k"] = {}) as Record<string, unknown>;
  t.is(deeperThan(root, MAX_TOML_DEPTH)!.length, MAX_TOML_DEPTH + 1, "a 200 000-deep object is walked without recursion");
  t.deepEqual(locate("a.b.c = 1\n", ["a", "b", "c"]), { line: 1, column: 5 });
});

test("a modhost.toml at MAX_TOML_BYTES of unknown keys (71,000 in [host]) is refused with its problems located and counted, in time linear in them (before: every problem copied the list of those before it, over 10 minutes of the loop at load 20)", async (t) => {
  t.timeout(150_000);
  const dir = await tempDir(t);
  const file = path.join(dir, "modhost.toml");
  const keys = await writeUnknownKeysToml(file);
  // In a process of its own: the old code held its loop for minutes, past any test timeout.
  const script = path.join(dir, "load.mts");
  const config = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "host", "config.ts");
  await writeFile(script, `import { loadConfig } from ${JSON.stringify(config)};
const t0 = performance.now();
try { await loadConfig(${JSON.stringify(file)}); console.log("loaded"); } catch (e) { console.log(String(e.message).split("\\n").slice(0, 3).join(" | ")); console.log(String(e.message).split("\\n").filter((l) => l.includes("MAX_REPORTED_PROBLEMS")).join("")); }
console.log(\`ms=\${(performance.now() - t0).toFixed(0)}\`);
`);
  const r = await execa(process.execPath, ["--import", "tsx", script], { reject: false, timeout: 120_000 });
  t.log(`${keys} keys, exit ${r.exitCode}${r.timedOut ? " (killed after 120 s)" : ""}: ${r.stdout.slice(0, 300)} ... ${r.stdout.split("\n").at(-1)} ${r.stderr.slice(0, 600)}`);
  t.false(r.timedOut, "the check ended");
  t.regex(r.stdout, /modhost\.toml:2:1: host\.k0: unknown key "k0"/);
  t.regex(r.stdout, /\d+ more problem\(s\) not shown \(MAX_REPORTED_PROBLEMS\)/);
});
