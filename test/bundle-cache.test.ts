// The bundle cache (runtime/isolate/bundle-cache.ts): a module compiled again from the same
// sources under the same directory listing reuses its bundle; any change that could change the
// bundle (a source's bytes, a new file that changes how an import resolves, a resolver file)
// compiles again; an entry whose bundle no longer matches its SHA-256 is never used.

import test from "ava";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { compileModule } from "../runtime/isolate/compile.ts";
import { BundleCache, MAX_TREE_ENTRIES } from "../runtime/isolate/bundle-cache.ts";
import { sha256Hex } from "../runtime/isolate/hashing.ts";

async function moduleDir(t: { teardown(fn: () => Promise<void>): void }, files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "modhost-bundle-cache-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  for (const [name, text] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(dir, name)), { recursive: true });
    await writeFile(path.join(dir, name), text);
  }
  return dir;
}

const INDEX = 'import { word } from "./lib";\nexport default async function start(): Promise<void> { console.log(word); }\n';

test("a second compile of unchanged sources is a cache hit with the same bundle and freshly read sources", async (t) => {
  const dir = await moduleDir(t, { "index.ts": INDEX, "lib.ts": 'export const word = "first";\n', "module.toml": "name = \"a\"\n" });
  const cache = new BundleCache();
  const a = await compileModule(dir, "index.ts", { cache });
  const b = await compileModule(dir, "index.ts", { cache });
  t.deepEqual(cache.stats, { hits: 1, misses: 1, corrupt: 0, uncacheable: 0 });
  t.is(b.code, a.code);
  t.is(b.sha256, a.sha256);
  t.deepEqual(b.files, a.files);
  t.deepEqual(b.sources, a.sources);
  t.not(b.sources, a.sources, "the hit's sources are a fresh read, not the cached objects");
  t.true(b.code.includes('"first"'));
});

test("a changed source compiles again, and the bundle has the new text", async (t) => {
  const dir = await moduleDir(t, { "index.ts": INDEX, "lib.ts": 'export const word = "first";\n' });
  const cache = new BundleCache();
  const a = await compileModule(dir, "index.ts", { cache });
  await writeFile(path.join(dir, "lib.ts"), 'export const word = "second";\n');
  const b = await compileModule(dir, "index.ts", { cache });
  t.is(cache.stats.hits, 0);
  t.not(b.sha256, a.sha256);
  t.true(b.code.includes('"second"'));
  t.false(b.code.includes('"first"'));
  t.not(b.sources.find((s) => s.path === "lib.ts")!.sha256, a.sources.find((s) => s.path === "lib.ts")!.sha256);
});

test("a new file that changes how an import resolves compiles again, though no bundled file changed", async (t) => {
  // "./lib" resolves to lib.js; a lib.ts added next to it wins (esbuild tries .ts before .js).
  const dir = await moduleDir(t, { "index.ts": INDEX, "lib.js": 'export const word = "from-js";\n' });
  const cache = new BundleCache();
  const a = await compileModule(dir, "index.ts", { cache });
  t.true(a.code.includes('"from-js"'));
  await writeFile(path.join(dir, "lib.ts"), 'export const word = "from-ts";\n');
  const b = await compileModule(dir, "index.ts", { cache });
  t.is(cache.stats.hits, 0);
  t.true(b.code.includes('"from-ts"'));
  t.deepEqual(b.sources.map((s) => s.path).sort(), ["index.ts", "lib.ts"]);
});

test("a changed package.json (read by esbuild's resolver, not bundled) compiles again", async (t) => {
  const dir = await moduleDir(t, {
    "index.ts": 'import { word } from "./lib";\nexport default async function start(): Promise<void> { console.log(word); }\n',
    "lib/package.json": '{"main": "a.js"}\n',
    "lib/a.js": 'export const word = "a";\n',
    "lib/index.js": 'export const word = "index";\n',
  });
  const cache = new BundleCache();
  await compileModule(dir, "index.ts", { cache });
  await writeFile(path.join(dir, "lib/package.json"), '{"main": "index.js"} \n');
  await compileModule(dir, "index.ts", { cache });
  t.is(cache.stats.hits, 0);
  t.is(cache.stats.misses, 2);
});

test("a changed symlink target compiles again", async (t) => {
  const dir = await moduleDir(t, { "index.ts": INDEX, "one.ts": 'export const word = "one";\n', "two.ts": 'export const word = "two";\n' });
  await symlink("one.ts", path.join(dir, "lib.ts"));
  const cache = new BundleCache();
  const a = await compileModule(dir, "index.ts", { cache });
  t.true(a.code.includes('"one"'));
  await rm(path.join(dir, "lib.ts"));
  await symlink("two.ts", path.join(dir, "lib.ts"));
  const b = await compileModule(dir, "index.ts", { cache });
  t.is(cache.stats.hits, 0);
  t.true(b.code.includes('"two"'));
});

test("a tampered cache entry is not used: the module is compiled again and the entry replaced", async (t) => {
  const dir = await moduleDir(t, { "index.ts": INDEX, "lib.ts": 'export const word = "genuine";\n' });
  const cache = new BundleCache();
  const a = await compileModule(dir, "index.ts", { cache });
  const [entry] = cache.all();
  entry!.code = entry!.code.replace('"genuine"', '"planted"');
  const b = await compileModule(dir, "index.ts", { cache });
  t.is(cache.stats.corrupt, 1);
  t.is(cache.stats.hits, 0);
  t.is(b.code, a.code);
  t.false(b.code.includes("planted"));
  t.is(sha256Hex(b.code), b.sha256);
  // The replacement is sound: the next compile is a hit with the genuine bundle.
  const c = await compileModule(dir, "index.ts", { cache });
  t.is(cache.stats.hits, 1);
  t.is(c.code, a.code);
  t.deepEqual(cache.all().map((e) => e.code.includes("planted")), [false]);
});

test("copies of a module in other directories (another module.toml) share one entry and one bundle", async (t) => {
  const files = { "index.ts": INDEX, "lib.ts": 'export const word = "shared";\n' };
  const one = await moduleDir(t, { ...files, "module.toml": 'name = "one"\n' });
  const two = await moduleDir(t, { ...files, "module.toml": 'name = "two-with-a-longer-name"\n' });
  const cache = new BundleCache();
  const a = await compileModule(one, "index.ts", { cache });
  const b = await compileModule(two, "index.ts", { cache });
  t.is(cache.stats.hits, 1);
  t.is(b.code, a.code);
  t.is(cache.count(), 1);
  t.false(a.code.includes(one), "no absolute path in the bundle");
});

test(`a directory of more than ${MAX_TREE_ENTRIES} entries is not cached (compiled every time)`, async (t) => {
  const files: Record<string, string> = { "index.ts": INDEX, "lib.ts": 'export const word = "big";\n' };
  for (let i = 0; i <= MAX_TREE_ENTRIES; i++) files[`data/${i}.txt`] = "";
  const dir = await moduleDir(t, files);
  const cache = new BundleCache();
  await compileModule(dir, "index.ts", { cache });
  await compileModule(dir, "index.ts", { cache });
  t.is(cache.stats.uncacheable, 2);
  t.is(cache.count(), 0);
});

test("cache: null compiles every time", async (t) => {
  const dir = await moduleDir(t, { "index.ts": INDEX, "lib.ts": 'export const word = "x";\n' });
  const a = await compileModule(dir, "index.ts", { cache: null });
  const b = await compileModule(dir, "index.ts", { cache: null });
  t.is(a.code, b.code);
  t.not(a.sources, b.sources);
});

test("two compiles of copies at the same time (both miss) keep one entry", async (t) => {
  const files = { "index.ts": INDEX, "lib.ts": 'export const word = "twins";\n' };
  const one = await moduleDir(t, { ...files, "module.toml": 'name = "one"\n' });
  const two = await moduleDir(t, { ...files, "module.toml": 'name = "two"\n' });
  const cache = new BundleCache();
  const [a, b] = await Promise.all([compileModule(one, "index.ts", { cache }), compileModule(two, "index.ts", { cache })]);
  t.is(a.code, b.code);
  t.is(cache.stats.misses, 2);
  t.is(cache.count(), 1);
});
