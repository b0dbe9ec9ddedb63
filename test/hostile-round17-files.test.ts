// Hostile probes of issue #8: what the host reads from a module's own files. A module's files
// are its author's to shape; the host reads them when it discovers a module (module.toml),
// verifies and bundles it (every source esbuild loads, the package.json files esbuild's resolver
// reads itself, the bundle cache's listing), and reads a native module's binary whole.
//
// 1. Special files and links, under the real host beside the canary ("good"): a FIFO as a
//    source, as package.json, as module.toml and as a native binary; a device node (mknod
//    /dev/zero's numbers) as a source and a binary; symlinks to /dev/zero, /proc/self/environ and
//    /proc/self/exe; a symlink loop; a 4 GiB sparse source and a 200 MiB sparse binary; three
//    sources of 0.9 MiB. Before: a FIFO read blocked one of libuv's four pool threads forever
//    (the host's start never finished, and the process could not exit: Node joins the pool at
//    exit); a FIFO package.json hung esbuild's build forever; a symlinked binary was read from
//    wherever it pointed and a sparse one read whole into the host's memory. Now each such
//    module fails its load with an error naming the file's kind or the limit, the others run.
// 2. Sources nested a million deep overflow esbuild's parser stack, a fatal error of its
//    service process. Before: every later build of every module failed ("The service is no
//    longer running") until the host restarted. Now that module fails naming the bundler's
//    crash, and the next module's build starts a new service.
// 3. Signature floods: an index.sig of 4,700 signatures (what the 1 MiB it may have holds) from
//    a registry the running host looks at (discovery), and a module.toml carrying 3,000
//    maintainer signatures (now 100: a manifest is at most MAX_MANIFEST_BYTES, 32 KiB). Before: each was verified on the host's loop (22 s for the index's
//    at load 12, at every look; the manifest's at every load). Now both are refused by count
//    before any is verified (MAX_INDEX_SIGNATURES, MAX_MAINTAINER_SIGNATURES).
// 4. A registry index that declares a module version expanding hugely (a file of 200 GiB, 100
//    files of 100 MiB, 5,000 files): before, install downloaded to the declared sizes, then read
//    each file whole into memory. Now the index is refused before any download, naming
//    MAX_BINARY_BYTES, MAX_PACKAGE_BYTES or MAX_PACKAGE_FILES.
// 5. A module.toml of 50,000 capabilities (unknown ones: each got a did-you-mean and a located
//    error, 4.6 s of the host's loop at every discovery) or 100 dependencies: refused by count
//    before any is checked (MAX_MANIFEST_CAPABILITIES, MAX_MANIFEST_DEPENDENCIES); a file's
//    problems are located at most MAX_REPORTED_PROBLEMS times, the rest counted.
// 6. modhost dev's watcher over a module directory of 100,000 files: before, it stat'ed every
//    entry on the host's loop to find subdirectories (1.1-1.3 s in one piece, load 12); now it
//    reads entry types, at most MAX_SCANNED_ENTRIES per directory.
// The tests that watch the host run one at a time (the watch measures this whole process's
// loop, which the unit tests' own work would load). Each watches the host (helpers/host-watch.ts): the canary stores every block within 5 s,
// RPC answers within 5 s, the longest turn of the host's loop, its heap, descriptors and log.

import test from "ava";
import { execFileSync } from "node:child_process";
import { mkdir, symlink, truncate, writeFile } from "node:fs/promises";
import path from "node:path";
import { MAX_SOURCE_BYTES, MAX_SOURCE_FILES } from "../runtime/isolate/compile.ts";
import { MAX_SOURCE_FILE_BYTES } from "../runtime/isolate/hashing.ts";
import { MAX_BINARY_BYTES } from "../host/verify/module.ts";
import { loadManifest, MAX_MAINTAINER_SIGNATURES, MAX_MANIFEST_CAPABILITIES, MAX_MANIFEST_DEPENDENCIES } from "../host/manifest.ts";
import { MAX_MANIFEST_BYTES, MAX_REPORTED_PROBLEMS } from "../host/toml.ts";
import type { ConfigError } from "../host/errors.ts";
import { INDEX_FILE, MAX_INDEX_SIGNATURES, MAX_PACKAGE_BYTES, MAX_PACKAGE_FILES, parseIndex, SIGNATURE_FILE } from "../host/registry/format.ts";
import { serveRegistry } from "../host/registry/serve.ts";
import { randomBytes } from "node:crypto";
import { newKey } from "./helpers/signing.ts";
import { sleep, startHost, tempDir, writeModule, GOOD_GRANTS, type TestHost } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";
import { watchHost } from "./helpers/host-watch.ts";
import { DevReloader } from "../host/dev.ts";

const GiB = 1024 * 1024 * 1024;

function nativeToml(name: string, entry: string): string {
  return `name = "${name}"\nversion = "0.1.0"\nentry_point = "${entry}"\nruntime = "native"\ncapabilities = []\n`;
}

/** A TypeScript module whose index.ts imports `./lib.ts` (written by the caller, any kind). */
function importer(name: string, spec = "./lib.ts"): ReturnType<typeof inlineModule> {
  const m = inlineModule(name, [], "void x;", `import { x } from ${JSON.stringify(spec)};`);
  return m;
}

/** Resolves with the value, or "pending" after `ms`. */
function within<T>(p: Promise<T>, ms: number): Promise<T | "pending"> {
  return Promise.race([p, sleep(ms).then(() => "pending" as const)]);
}

async function failed(h: TestHost, name: string): Promise<string> {
  const s = await h.waitFor(() => {
    const st = h.status(name);
    return st && st.state !== "running" && st.state !== "starting" && st.problem ? st : undefined;
  }, 20_000, () => `${name} to fail (now ${h.status(name)?.state}: ${h.status(name)?.problem})`);
  return `${s.state}: ${s.problem}`;
}

test.serial("FIFOs, device nodes, symlinks out of the directory or looping, and sparse files as a module's sources, package.json, module.toml or native binary fail that module's load naming the file's kind or the limit, while the host starts, the canary stores every block and a module added later loads", async (t) => {
  t.timeout(240_000);
  const h = await startHost(t, {
    modules: ["good"],
    grants: { good: GOOD_GRANTS },
    noStart: true,
    inline: {
      "f-src": importer("f-src"),
      "f-pkg": inlineModule("f-pkg", [], "void 0;"),
      "f-toml": inlineModule("f-toml", [], "void 0;"),
      "dev-src": importer("dev-src"),
      "zero-link": importer("zero-link"),
      "proc-entry": inlineModule("proc-entry", [], "void 0;"),
      "loop-src": importer("loop-src", "./lib"),
      "sparse-src": importer("sparse-src"),
      "sum-src": inlineModule("sum-src", [], "void [a, b, c];", `import { a } from "./a.ts"; import { b } from "./b.ts"; import { c } from "./c.ts";`),
      "n-fifo": { toml: nativeToml("n-fifo", "main"), files: {} },
      "n-dev": { toml: nativeToml("n-dev", "main"), files: {} },
      "n-zero": { toml: nativeToml("n-zero", "main"), files: {} },
      "n-exe": { toml: nativeToml("n-exe", "main"), files: {} },
      "n-sparse": { toml: nativeToml("n-sparse", "main"), files: {} },
    },
  });
  const dir = (name: string) => path.join(h.config.modules.modules_dir, name);
  execFileSync("mkfifo", [path.join(dir("f-src"), "lib.ts"), path.join(dir("f-pkg"), "package.json"), path.join(dir("n-fifo"), "main")]);
  execFileSync("rm", [path.join(dir("f-toml"), "module.toml")]);
  execFileSync("mkfifo", [path.join(dir("f-toml"), "module.toml")]);
  execFileSync("mknod", [path.join(dir("dev-src"), "lib.ts"), "c", "1", "5"]);
  execFileSync("mknod", [path.join(dir("n-dev"), "main"), "c", "1", "5"]);
  await symlink("/dev/zero", path.join(dir("zero-link"), "lib.ts"));
  // The native ones executable: the host checks that before it reads the binary.
  execFileSync("chmod", ["0755", path.join(dir("n-fifo"), "main"), path.join(dir("n-dev"), "main")]);
  // A device node outside the directory, /dev/zero's numbers, executable.
  const zero = path.join(h.dir, "zero");
  execFileSync("mknod", ["-m", "0755", zero, "c", "1", "5"]);
  await symlink(zero, path.join(dir("n-zero"), "main"));
  await symlink("/proc/self/exe", path.join(dir("n-exe"), "main"));
  execFileSync("rm", [path.join(dir("proc-entry"), "index.ts")]);
  await symlink("/proc/self/environ", path.join(dir("proc-entry"), "index.ts"));
  await symlink("lib", path.join(dir("loop-src"), "lib.ts"));
  await symlink("lib.ts", path.join(dir("loop-src"), "lib"));
  await writeFile(path.join(dir("sparse-src"), "lib.ts"), "export const x = 1;\n");
  await truncate(path.join(dir("sparse-src"), "lib.ts"), 4 * GiB);
  await writeFile(path.join(dir("n-sparse"), "main"), "#!/bin/sh\n", { mode: 0o755 });
  await truncate(path.join(dir("n-sparse"), "main"), 200 * 1024 * 1024);
  const filler = (v: string) => `export const ${v} = 1;\n// ${"x".repeat(Math.floor(MAX_SOURCE_BYTES / 2.2))}\n`;
  for (const v of ["a", "b", "c"]) await writeFile(path.join(dir("sum-src"), `${v}.ts`), filler(v));

  const watch = watchHost(t, h);
  const t0 = Date.now();
  const started = await within(h.host.start().then(() => "started"), 60_000);
  t.log(`host start: ${started} after ${Date.now() - t0} ms`);
  t.is(started, "started", "the host's start finished (a FIFO read hung it before)");

  const expect: Record<string, RegExp> = {
    "f-src": /lib\.ts is a FIFO \(named pipe\), not a regular file/,
    "f-pkg": /package\.json is a FIFO \(named pipe\), not a regular file/,
    "f-toml": /is a FIFO \(named pipe\), not a regular file/,
    "dev-src": /lib\.ts is a character device, not a regular file/,
    "zero-link": /"\.\/lib\.ts" \(imported by index\.ts\) is outside the module directory/,
    "proc-entry": /environ is outside the module directory/,
    "loop-src": /Could not resolve "\.\/lib"|too many levels of symbolic links/,
    "sparse-src": new RegExp(`lib\\.ts is ${4 * GiB} bytes, more than the ${MAX_SOURCE_FILE_BYTES} allowed \\(MAX_SOURCE_FILE_BYTES\\)`),
    "sum-src": new RegExp(`pass ${MAX_SOURCE_BYTES} bytes together \\(MAX_SOURCE_BYTES\\)`),
    "n-fifo": /main is a FIFO \(named pipe\), not a regular file/,
    "n-dev": /main is a character device, not a regular file/,
    "n-zero": new RegExp(`is a symbolic link to ${zero}, outside the module directory`),
    "n-exe": /is a symbolic link to \/\S+, outside the module directory/,
    "n-sparse": new RegExp(`main is ${200 * 1024 * 1024} bytes, more than the ${MAX_BINARY_BYTES} allowed \\(MAX_BINARY_BYTES\\)`),
  };
  for (const [name, re] of Object.entries(expect)) {
    const got = await failed(h, name).catch((err: Error) => err.message);
    t.regex(got, re, `${name}: ${got.slice(0, 300)}`);
  }
  t.is(h.mustStatus("good").state, "running");

  for (let i = 0; i < 3; i++) {
    await watch.round();
    watch.sample();
  }
  // A module added now loads: nothing the hostile ones did holds the pool's threads or the bundler.
  await writeModule(h.config.modules.modules_dir, "late", inlineModule("late", [], `ctx.log.info("late started");`));
  const late = await within(h.manager.load("late"), 30_000);
  t.not(late, "pending", "a module added after the attacks loaded within 30 s");
  if (late !== "pending") t.is(late.state, "running");
  watch.assertCanary(t);
  await watch.finish(t, Object.keys(expect).length);
  const stopped = await within(h.stop().then(() => "stopped"), 30_000);
  t.is(stopped, "stopped", "the host stopped");
});

test.serial("sources nested a million deep crash esbuild's service: that module fails naming the bundler's crash, and modules loaded after it still build (before, every later build failed until the host restarted)", async (t) => {
  t.timeout(240_000);
  const h = await startHost(t, { modules: ["good"], grants: { good: GOOD_GRANTS } });
  const watch = watchHost(t, h);
  await watch.round();
  const modulesDir = h.config.modules.modules_dir;
  // A million unary operators: one byte a level, within MAX_SOURCE_FILE_BYTES.
  await writeModule(modulesDir, "deep", inlineModule("deep", [], "void y;", `const y = ${"!".repeat(1_000_000)}1;`));
  const err = await t.throwsAsync(h.manager.load("deep"));
  // Its stack grows until Go's limit (1 GB) ends the service, or, first, until the host ends it
  // at MAX_BUNDLER_RSS_MB (runtime/isolate/bundler-watch.ts): either is named.
  t.regex(err!.message, /the bundler stopped twice while building this module \(esbuild's service crashed|passed \d+ MB \(MAX_BUNDLER_RSS_MB.*sources nested hundreds of thousands deep/);
  t.log(err!.message.slice(0, 200));
  watch.sample();
  for (const name of ["after-1", "after-2"]) {
    await writeModule(modulesDir, name, inlineModule(name, [], `ctx.log.info("${name} started");`));
    const s = await within(h.manager.load(name).catch((e: Error) => e), 60_000);
    t.true(!(s instanceof Error) && s !== "pending" && s.state === "running", `${name} loaded after the crash: ${s instanceof Error ? s.message : s === "pending" ? s : s.state}`);
  }
  await watch.round();
  watch.assertCanary(t);
  await watch.finish(t, 1);
});

test("a bundle is built from at most MAX_SOURCE_FILES files: one more is refused naming the limit before esbuild parses it", async (t) => {
  t.timeout(120_000);
  const h = await startHost(t, { modules: ["good"], grants: { good: GOOD_GRANTS } });
  const modulesDir = h.config.modules.modules_dir;
  const mod = inlineModule("many-files", [], "void n;", `import { n } from "./f/0.ts";`);
  const dir = await writeModule(modulesDir, "many-files", mod);
  await mkdir(path.join(dir, "f"));
  // A chain: each file imports the next, MAX_SOURCE_FILES of them beside index.ts.
  for (let i = 0; i < MAX_SOURCE_FILES; i++) {
    const next = i + 1 < MAX_SOURCE_FILES ? `import { n as m } from "./${i + 1}.ts"; export const n = m + 1;` : "export const n = 0;";
    await writeFile(path.join(dir, "f", `${i}.ts`), `${next}\n`);
  }
  const err = await t.throwsAsync(h.manager.load("many-files"));
  t.regex(err!.message, new RegExp(`more than ${MAX_SOURCE_FILES} files \\(MAX_SOURCE_FILES\\)`));
  t.is(h.mustStatus("good").state, "running");
});

/** `n` signature entries of well-formed keys and signatures that verify under no key. */
function junkSignatures(n: number): Array<{ key: string; signature: string }> {
  return Array.from({ length: n }, () => ({ key: randomBytes(32).toString("hex"), signature: randomBytes(64).toString("hex") }));
}

test.serial("an index.sig of 4,700 signatures from the registry the running host looks at is refused by count (MAX_INDEX_SIGNATURES) before any is verified, and a module.toml carrying 100 maintainer signatures (what its 32 KiB hold) fails its load naming MAX_MAINTAINER_SIGNATURES; the host's loop never stalls and the canary stores every block", async (t) => {
  t.timeout(240_000);
  const regDir = await tempDir(t, "modhost-registry-");
  const sigs = { format: "modhost-registry-signature-v1", index_sha256: "0".repeat(64), signatures: junkSignatures(4700) };
  const sigText = JSON.stringify(sigs);
  t.true(sigText.length <= 1024 * 1024, `index.sig is ${sigText.length} bytes, within the 1 MiB it may have`);
  await writeFile(path.join(regDir, SIGNATURE_FILE), sigText);
  await writeFile(path.join(regDir, INDEX_FILE), JSON.stringify({ format: "modhost-registry-index-v1", version: 1, modules: {} }));
  const server = await serveRegistry(regDir);
  t.teardown(() => server.close());
  const registryKey = newKey("registry");
  const h = await startHost(t, {
    modules: ["good"],
    grants: { good: GOOD_GRANTS },
    noStart: true,
    configure: (c) => {
      c.registry.url = server.url;
      c.registry.keys = [registryKey.publicKey];
      c.registry.discover_minutes = 1;
    },
  });
  const watch = watchHost(t, h);
  await h.host.start();
  const warned = await h.waitForLog(/registry not checked for new modules/, { timeoutMs: 60_000 });
  t.regex(warned.message, new RegExp(`carries 4700 signatures, more than the ${MAX_INDEX_SIGNATURES} allowed \\(MAX_INDEX_SIGNATURES\\)`));
  t.true(warned.message.length < 2000, `the warning is ${warned.message.length} characters`);
  await watch.round();
  watch.sample();

  const maintainers = junkSignatures(100).map((s, i) => `[[signatures.maintainers]]\nname = "m${i}"\nkey = "${s.key}"\nsignature = "${s.signature}"\n`).join("");
  const mod = inlineModule("many-sigs", [], "void 0;");
  mod.toml += `\n${maintainers}`;
  t.true(mod.toml.length <= MAX_MANIFEST_BYTES, `module.toml is ${mod.toml.length} bytes, within MAX_MANIFEST_BYTES`);
  await writeModule(h.config.modules.modules_dir, "many-sigs", mod);
  const loadErr = await t.throwsAsync(h.manager.load("many-sigs"));
  t.regex(loadErr!.message, /many-sigs has an invalid manifest:\n.*MAX_MAINTAINER_SIGNATURES/, "its manifest is refused when it is read, and the load's answer says why");
  const bad = await t.throwsAsync(loadManifest(path.join(h.config.modules.modules_dir, "many-sigs", "module.toml")));
  const problem = (bad as ConfigError).problems?.map((p) => p.message).join("\n") ?? bad!.message;
  t.regex(problem, new RegExp(`100 signatures, more than the ${MAX_MAINTAINER_SIGNATURES} a manifest may carry \\(MAX_MAINTAINER_SIGNATURES\\)`));
  await watch.round();
  watch.assertCanary(t);
  await watch.finish(t, 1);
});

test("a registry index declaring a module version that expands hugely (one file of 200 GiB, 100 files of 100 MiB, 5,000 files) is refused when it is read, before any download, naming MAX_BINARY_BYTES, MAX_PACKAGE_BYTES or MAX_PACKAGE_FILES", (t) => {
  const h64 = "ab".repeat(32);
  const index = (files: Array<{ path: string; size: number }>) => Buffer.from(JSON.stringify({
    format: "modhost-registry-index-v1", version: 1, generated: "2026-01-01T00:00:00Z", expires: "2030-01-01T00:00:00Z",
    modules: { big: { versions: { "1.0.0": {
      runtime: "native", hash: `sha256:${h64}`, manifest: { sha256: h64, size: 100 },
      files: files.map((f) => ({ ...f, sha256: h64 })), capabilities: [], dependencies: {}, signers: [], published: "2026-01-01T00:00:00Z",
    } } } },
  }));
  const cases: Array<[string, Array<{ path: string; size: number }>, RegExp]> = [
    ["one file of 200 GiB", [{ path: "main", size: 200 * GiB }], new RegExp(`larger than the ${MAX_BINARY_BYTES} bytes a module's file may have \\(MAX_BINARY_BYTES\\)`)],
    ["100 files of 100 MiB", Array.from({ length: 100 }, (_, i) => ({ path: `f${i}`, size: 100 * 1024 * 1024 })), new RegExp(`more than the ${MAX_PACKAGE_BYTES} bytes a module version may have together \\(MAX_PACKAGE_BYTES\\)`)],
    ["5,000 files", Array.from({ length: 5000 }, (_, i) => ({ path: `f${i}`, size: 1 })), new RegExp(`more than the ${MAX_PACKAGE_FILES} files a module version may have \\(MAX_PACKAGE_FILES\\)`)],
  ];
  for (const [what, files, re] of cases) {
    const err = t.throws(() => parseIndex(index(files), "test"), undefined, what);
    t.regex(err?.message ?? "", re, what);
  }
  // Within every bound, the same index is taken.
  t.is(Object.keys(parseIndex(index([{ path: "main", size: 1024 }]), "test").modules).length, 1);
});

test("a module.toml of 2,500 capabilities or 100 dependencies is refused by count before any is checked (MAX_MANIFEST_CAPABILITIES, MAX_MANIFEST_DEPENDENCIES), and one of 300 unknown keys reports MAX_REPORTED_PROBLEMS of them located and counts the rest", async (t) => {
  const dir = await tempDir(t);
  const head = `name = "m"\nversion = "0.1.0"\nentry_point = "index.ts"\n`;
  const problemsOf = async (toml: string) => {
    const file = path.join(dir, "module.toml");
    await writeFile(file, toml);
    const t0 = performance.now();
    const err = await t.throwsAsync(loadManifest(file));
    return { problems: (err as ConfigError).problems ?? [], ms: performance.now() - t0 };
  };
  const caps = await problemsOf(`${head}capabilities = [${Array.from({ length: 2_500 }, (_, i) => `"nope${i}"`).join(",")}]\n`);
  t.is(caps.problems.length, 1);
  t.regex(caps.problems[0]!.message, new RegExp(`2500 entries, more than the ${MAX_MANIFEST_CAPABILITIES} a manifest may have \\(MAX_MANIFEST_CAPABILITIES\\)`));
  const deps = await problemsOf(`${head}capabilities = []\n[dependencies]\n${Array.from({ length: 100 }, (_, i) => `d${i} = ">=1.0.0"`).join("\n")}\n`);
  t.is(deps.problems.length, 1);
  t.regex(deps.problems[0]!.message, new RegExp(`100 entries, more than the ${MAX_MANIFEST_DEPENDENCIES} a manifest may have \\(MAX_MANIFEST_DEPENDENCIES\\)`));
  const keys = await problemsOf(`${head}capabilities = []\n${Array.from({ length: 300 }, (_, i) => `k${i} = 1`).join("\n")}\n`);
  t.is(keys.problems.length, MAX_REPORTED_PROBLEMS + 1);
  t.regex(keys.problems.at(-1)!.message, new RegExp(`${300 - MAX_REPORTED_PROBLEMS} more problem\\(s\\) not shown \\(MAX_REPORTED_PROBLEMS\\)`));
  t.log(`2,500 capabilities refused in ${caps.ms.toFixed(0)} ms, 100 dependencies in ${deps.ms.toFixed(0)} ms, 300 unknown keys in ${keys.ms.toFixed(0)} ms`);
});

test.serial("modhost dev's watcher over a module directory of 100,000 files looks at most MAX_SCANNED_ENTRIES of them, by type, without a long turn of the host's loop (before: a stat of each, 1.1-1.3 s in one piece)", async (t) => {
  t.timeout(240_000);
  const h = await startHost(t, { modules: ["good"], grants: { good: GOOD_GRANTS }, inline: { wide: inlineModule("wide", [], "void 0;") } });
  const wide = path.join(h.config.modules.modules_dir, "wide");
  execFileSync("sh", ["-c", `cd '${wide}' && seq 100000 | sed 's/^/f/' | xargs touch && mkdir sub`]);
  const watch = watchHost(t, h);
  const mark = h.mark();
  const dev = new DevReloader(h.host);
  t.teardown(() => dev.close());
  dev.start();
  watch.sample();
  await h.waitForLog(/past its first 10000 entries \(MAX_SCANNED_ENTRIES\)/, { since: mark, source: "dev" });
  await watch.round();
  watch.assertCanary(t);
  await watch.finish(t, 1);
});
