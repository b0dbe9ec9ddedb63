// Debugging a TypeScript module: stack traces name the module's own files and lines (mapped
// through the bundle's source map), never the bundle or host paths; compile errors name
// file:line:column with a code frame; the inspector relays the Chrome DevTools Protocol to the
// module's isolate. Real host, real isolate hosts in their sandbox.

import test from "ava";
import { compileModule, CompileError } from "../runtime/isolate/compile.ts";
import { splitSourceMap, StackMapper, bundleUrl, MAX_FRAMES } from "../runtime/isolate/sourcemap.ts";
import { startHost, tempDir, writeModule } from "./helpers/host.ts";
import { callApi, inlineModule } from "./helpers/modules.ts";

/** A module whose error comes from a second file, so the map has to pick the right one. */
const THROWER = {
  toml: 'name = "thrower"\nversion = "0.1.0"\nentry_point = "index.ts"\ncapabilities = ["register_module_api"]\n',
  files: {
    "index.ts": [
      'import { explode } from "./lib/explode.ts";', // 1
      "", // 2
      "export default async function start(ctx: any): Promise<void> {", // 3
      "  await ctx.modules.registerApi({", // 4
      "    boom: async () => explode(\"from the api\"),", // 5
      "  });", // 6
      "  try {", // 7
      "    explode(\"in start\");", // 8
      "  } catch (err) {", // 9
      "    console.error(err);", // 10
      "  }", // 11
      "}", // 12
      "",
    ].join("\n"),
    "lib/explode.ts": [
      "interface Why { reason: string }", // 1
      "", // 2
      "export function explode(reason: string): never {", // 3
      "  const why: Why = { reason };", // 4
      "  throw new Error(`exploded ${why.reason}`);", // 5
      "}", // 6
      "",
    ].join("\n"),
  },
};

test("an error a module logs has a stack naming its own .ts files and lines, not the bundle or host paths", async (t) => {
  const h = await startHost(t, { inline: { thrower: THROWER }, grants: { thrower: ["register_module_api"] } });
  const rec = await h.waitForLog(/exploded in start/, { source: "thrower" });
  t.regex(rec.message, /at explode \(lib\/explode\.ts:5:9\)/, rec.message);
  t.regex(rec.message, /at start \(index\.ts:8:5\)/, rec.message);
  t.notRegex(rec.message, /bundle\.js|modhost:\/\/|isolate-host|\/tmp\/|file:\/\//, rec.message);
});

test("an error thrown by a module's API method reaches the caller with the .ts position of the throw", async (t) => {
  const h = await startHost(t, { inline: { thrower: THROWER }, grants: { thrower: ["register_module_api"] } });
  await h.waitForLog(/exploded in start/, { source: "thrower" });
  const err = await t.throwsAsync(callApi(h, "thrower", "boom"));
  t.regex(err!.message, /exploded from the api \(at lib\/explode\.ts:5:9\)/);
  t.notRegex(err!.message, /bundle\.js|modhost:\/\//);
});

test("a module that throws in start fails with the .ts position in its problem", async (t) => {
  const h = await startHost(t, { inline: { starter: inlineModule("starter", [], '  throw new Error("no frobnicator");') }, grants: { starter: [] } });
  const s = await h.waitForState("starter", "failed");
  // inlineModule: line 1 is empty, line 2 the signature, line 3 the body.
  t.regex(s.problem ?? "", /no frobnicator \(at index\.ts:3:9\)/, s.problem);
  const logged = h.records.find((r) => r.source === "starter" && /start failed: Error: no frobnicator/.test(r.message));
  t.regex(logged?.message ?? "", /at start \(index\.ts:3:9\)/);
});

test("a compile error names file:line:column with a code frame", async (t) => {
  const dir = await tempDir(t);
  const mod = await writeModule(dir, "broken", { toml: "", files: { "index.ts": "export default async function start() {\n  let a b = 1;\n}\n" } });
  const err = await t.throwsAsync(compileModule(mod, "index.ts"), { instanceOf: CompileError });
  t.regex(err!.message, /broken\/index\.ts:2:9: Expected ";" but found "b"/);
  t.regex(err!.message, /\n {4}2 \| {3}let a b = 1;\n {6}\| {9}\^/, err!.message);
});

test("a forbidden import is a compile error with file:line:column and a code frame", async (t) => {
  const dir = await tempDir(t);
  const mod = await writeModule(dir, "forbidden", { toml: "", files: { "index.ts": '\nimport fs from "node:fs";\nexport default async function start() { fs; }\n' } });
  const err = await t.throwsAsync(compileModule(mod, "index.ts"), { instanceOf: CompileError });
  t.regex(err!.message, /forbidden\/index\.ts:2:16: "node:fs" is a Node\.js built-in/);
  t.regex(err!.message, /\n {4}2 \| import fs from "node:fs";\n/);
});

test("the bundle's source map names sources relative to the module directory, never host paths", async (t) => {
  const dir = await tempDir(t);
  const mod = await writeModule(dir, "thrower", THROWER);
  const compiled = await compileModule(mod, "index.ts");
  const { code, map } = splitSourceMap(compiled.code);
  t.truthy(map);
  t.deepEqual([...map!.sources].sort(), ["index.ts", "lib/explode.ts"]);
  t.false(compiled.code.includes(dir), "no host path in the bundle");
  t.false(code.includes("sourceMappingURL"));
  t.is(map!.sourcesContent?.[map!.sources.indexOf("lib/explode.ts")], THROWER.files["lib/explode.ts"]);
});

test("stack mapping is bounded: a huge stack is cut and frames past the limit are counted, not mapped", async (t) => {
  const dir = await tempDir(t);
  const mod = await writeModule(dir, "thrower", THROWER);
  const { map } = splitSourceMap((await compileModule(mod, "index.ts")).code);
  const url = bundleUrl("thrower");
  const mapper = new StackMapper(url, map);
  const frames = Array.from({ length: MAX_FRAMES + 20 }, () => `    at f (${url}:3:1)`);
  const out = mapper.mapStack(["Error: deep", ...frames, "    at run (file:///tmp/isolate-host.mjs:1:1)"].join("\n"));
  t.is(out.split("\n").filter((l) => l.startsWith("    at ")).length, MAX_FRAMES);
  t.regex(out, /\[20 more frame\(s\)\]/);
  t.notRegex(out, /isolate-host|file:\/\//);
  const huge = mapper.mapStack("x".repeat(1_000_000));
  t.true(huge.length < 20_000);
  t.regex(huge, /stack cut at 16384 characters/);
});
