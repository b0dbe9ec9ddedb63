// Built JavaScript for production (scripts/build-dist.mjs -> dist/): the built host runs a
// TypeScript module end to end (with the prebuilt isolate host), and bin/modhost.js takes
// dist/ only while it was built from exactly the sources in the checkout, by this Node.

import test from "ava";
import { mkdir, readFile, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { execa, type ResultPromise } from "execa";
import { buildModulesDir, GOOD_GRANTS, ROOT, tempDir, waitFor } from "./helpers/host.ts";
// @ts-expect-error plain JavaScript without types
import { distIsFresh } from "../bin/dist-fresh.js";

const fresh = distIsFresh as (root: string, node?: string) => boolean;

test("dist/ counts as fresh only for the same sources (size and mtime), checkout and Node", async (t) => {
  const root = await tempDir(t, "modhost-dist-");
  t.false(fresh(root), "not built");
  await mkdir(path.join(root, "dist"));
  await mkdir(path.join(root, "host"));
  const src = path.join(root, "host", "a.ts");
  await writeFile(src, "export const a = 1;\n");
  const when = new Date("2026-01-02T03:04:05Z");
  await utimes(src, when, when);
  const build = { root, node: process.version, sources: { "host/a.ts": [20, when.getTime()] } };
  await writeFile(path.join(root, "dist", "build.json"), JSON.stringify(build));
  t.true(fresh(root));
  t.false(fresh(root, "v0.0.1"), "another Node");
  await writeFile(path.join(root, "dist", "build.json"), JSON.stringify({ ...build, root: "/elsewhere" }));
  t.false(fresh(root), "built in another checkout (the isolate host names packages by absolute path)");
  await writeFile(path.join(root, "dist", "build.json"), JSON.stringify(build));
  const later = new Date(when.getTime() + 1000);
  await utimes(src, later, later);
  t.false(fresh(root), "a source touched since the build");
  await utimes(src, when, when);
  await writeFile(src, "export const a = 22;\n");
  await utimes(src, when, when);
  t.false(fresh(root), "a source of another size");
  await writeFile(path.join(root, "dist", "build.json"), JSON.stringify({ ...build, sources: { ...build.sources, "host/gone.ts": [1, 1] } }));
  t.false(fresh(root), "a source that is gone");
  await writeFile(path.join(root, "dist", "build.json"), "{not json");
  t.false(fresh(root), "a damaged build.json");
});

test("the built host (dist/modhost.mjs) runs a TypeScript module through the prebuilt isolate host", async (t) => {
  // A build, a new host process and its module's start: the waits are for a loaded machine.
  t.timeout(300_000);
  const build = await execa(process.execPath, [path.join(ROOT, "scripts", "build-dist.mjs")], { cwd: ROOT, reject: false, all: true });
  t.is(build.exitCode, 0, build.all);
  const manifest = JSON.parse(await readFile(path.join(ROOT, "dist", "build.json"), "utf8")) as { sources: Record<string, unknown> };
  t.truthy(manifest.sources["host/cli.ts"]);
  t.truthy(manifest.sources["runtime/isolate/worker.ts"]);
  t.true(fresh(ROOT), "fresh right after the build");

  const dir = await tempDir(t, "modhost-dist-");
  await buildModulesDir(dir, ["good"]);
  const config = path.join(dir, "modhost.toml");
  await writeFile(config, [
    "[chain]", "block_interval_seconds = 0", "",
    "[modules]", 'modules_dir = "modules"', 'data_dir = "data/modules"', "",
    "[storage]", 'dir = "data/storage"', "", "[rpc]", "port = 0", "",
    "[trust]", 'signatures = "allow-unsigned"', "", // the fixtures are not signed
    // RLIMIT_NPROC counts the threads of the module's uid machine-wide, and other hosts in
    // this test run have a "good" too (as in test/helpers/host.ts TEST_LIMITS).
    // start_timeout_ms: the product's 10 s is what a module's start can take at load 20.
    "[modules.default_limits]", "processes = 4096", "start_timeout_ms = 60000", "",
    "[modules.grants.good]", `allow = [${GOOD_GRANTS.map((g) => JSON.stringify(g)).join(", ")}]`, "",
  ].join("\n"));
  const child: ResultPromise = execa(process.execPath, ["--no-node-snapshot", path.join(ROOT, "dist", "modhost.mjs"), "run", "--config", config], { cwd: dir, reject: false, all: true, env: { NO_COLOR: "1" } });
  t.teardown(() => {
    child.kill("SIGKILL");
  });
  let output = "";
  child.all?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  await waitFor(() => /ready in \d+ ms running=good/.test(output), 120_000, "the built host to be ready", () => output);
  child.kill("SIGTERM");
  const r = await child;
  t.is(r.exitCode, 0, output);
  t.regex(output, /loaded good 0\.1\.0 runtime=isolate/);
  t.regex(output, /unloaded good/);
});
