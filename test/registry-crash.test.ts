// Crash safety of install, update, remove and activate (host/registry/journal.ts): the command
// runs in a child process that kills itself with SIGKILL just before each journaled step in
// turn (no finally blocks, no cleanup: a real crash). Afterwards the next registry command (and,
// in one test, the next host start) recovers, and exactly one consistent version of the module
// is installed and passes the host's verification: never "not installed".

import test, { type ExecutionContext } from "ava";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdir, readFile, readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { defaultConfig, type HostConfig } from "../host/config.ts";
import { parseDescriptor } from "../capabilities/grants.ts";
import { buildRegistry } from "../host/registry/build.ts";
import { activatePending, install, installedModules, recover, remove, update } from "../host/registry/install.ts";
import { JOURNAL, leftByCommand, STAGING } from "../host/registry/journal.ts";
import { serveRegistry } from "../host/registry/serve.ts";
import { snapshotModule, verifyModule } from "../host/verify/module.ts";
import { ROOT, startHost, tempDir, waitFor } from "./helpers/host.ts";
import { newKey, signWith, writeTsModule, type TsModuleSpec } from "./helpers/signing.ts";

const CHILD = path.join(ROOT, "test/helpers/registry-crash-child.ts");

interface World {
  config: HostConfig;
  publish(specs: TsModuleSpec[]): Promise<void>;
  opts: { log: (l: string) => void; progress: { write: () => boolean }; notifyHost: boolean };
  lines: string[];
}

/** A signed registry on loopback and a client config; `config` may be given (a test host's). */
async function world(t: ExecutionContext, given?: HostConfig): Promise<World> {
  const dir = await tempDir(t, "modhost-crash-");
  const reg = path.join(dir, "registry");
  await mkdir(reg, { recursive: true });
  const server = await serveRegistry(reg, {});
  t.teardown(() => server.close());
  const alice = newKey("alice");
  const registryKey = newKey("registry");
  let config = given;
  if (!config) {
    const node = path.join(dir, "node");
    await mkdir(path.join(node, "modules"), { recursive: true });
    config = defaultConfig(node);
    config.modules.modules_dir = path.join(node, "modules");
  }
  config.trust.signatures = "require";
  config.trust.publishers["core"] = { keys: [alice.publicKey], threshold: 1 };
  config.trust.publisher = "core";
  config.registry.url = server.url;
  config.registry.keys = [registryKey.publicKey];
  config.registry.cache_dir = path.join(dir, "cache");
  config.registry.state_file = path.join(dir, "registry-state.json");
  const lines: string[] = [];
  let n = 0;
  return {
    config,
    lines,
    opts: { log: (l) => lines.push(l), progress: { write: () => true }, notifyHost: false },
    async publish(specs) {
      const dirs = [];
      for (const s of specs) {
        const d = await writeTsModule(path.join(dir, "src", `${s.name}-${s.version}-${n++}`), s);
        await signWith(d, [alice]);
        dirs.push(d);
      }
      await buildRegistry({ sources: dirs, out: reg, keys: [registryKey] });
    },
  };
}

/** Run `op SPEC` in a child that SIGKILLs itself before `step`; resolves with how it ended. */
async function crashAt(t: ExecutionContext, w: World, op: string, spec: string, step: string): Promise<string> {
  const child = await runChild(w, op, spec, step);
  return new Promise((resolve) => {
    let output = "";
    child.stdout?.on("data", (d) => (output += d));
    child.stderr?.on("data", (d) => (output += d));
    child.on("exit", (code, signal) => {
      if (signal !== "SIGKILL") t.log(`child ${op} ${spec} at ${step}: exit ${code}\n${output}`);
      resolve(signal ?? `exit ${code}`);
    });
  });
}

/** Start the crash child (test/helpers/registry-crash-child.ts) on `op SPEC`, stopping at `step`. */
async function runChild(w: World, op: string, spec: string, step: string): Promise<ChildProcess> {
  const file = path.join(path.dirname(w.config.modules.modules_dir), `config-${Math.random().toString(36).slice(2)}.json`);
  await writeFile(file, JSON.stringify(w.config));
  return spawn(process.execPath, ["--import=tsx", "--no-node-snapshot", CHILD, file, op, spec, step], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
}

/** Name -> version of what is installed; each installed module must pass the host's verification. */
async function installedVersions(t: ExecutionContext, config: HostConfig): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [name, m] of await installedModules(config)) {
    const report = verifyModule(m.manifest, await snapshotModule(m.manifest), config);
    t.true(report.ok, `${name} ${m.manifest.version} passes verification`);
    out[name] = m.manifest.version;
  }
  return out;
}

/** What an interrupted command may leave in modules_dir: its journal (or a half-written one), modules set aside, modules it staged. */
async function leftovers(config: HostConfig): Promise<string[]> {
  const names = await readdir(config.modules.modules_dir);
  return names.filter((n) => leftByCommand(n) || n === ".trash");
}

const ALPHA: TsModuleSpec = { name: "alpha", version: "1.0.0" };
const BETA: TsModuleSpec = { name: "beta", version: "1.0.0", dependencies: { alpha: "^1.0.0" } };

test("install killed at every step: afterwards either nothing or both modules are installed, complete and verified", async (t) => {
  t.timeout(300_000, "many child processes on a loaded machine");
  const w = await world(t);
  await w.publish([ALPHA, BETA]);
  for (const step of ["journal", "rename 0", "rename 1", "cleanup", "done"]) {
    t.is(await crashAt(t, w, "install", "beta", step), "SIGKILL", `the child was killed before "${step}"`);
    await recover(w.config, w.opts);
    const got = await installedVersions(t, w.config);
    // Before the journal is written nothing has moved; from then on the install is finished.
    t.deepEqual(got, step === "journal" ? {} : { alpha: "1.0.0", beta: "1.0.0" }, `after a crash before "${step}"`);
    t.deepEqual(await leftovers(w.config), [], `no journal or trash left after a crash before "${step}"`);
    if (step !== "journal") {
      await remove(w.config, "beta", w.opts);
      await remove(w.config, "alpha", w.opts);
    }
  }
});

test("update killed at every step (the old version aside, the new one not yet in place, ...): exactly one version is installed afterwards", async (t) => {
  t.timeout(300_000, "many child processes on a loaded machine");
  const w = await world(t);
  await w.publish([ALPHA]);
  await install(w.config, "alpha@1.0.0", w.opts);
  await w.publish([{ ...ALPHA, version: "1.1.0" }]);
  for (const step of ["journal", "rename 0", "rename 1", "cleanup", "done"]) {
    t.is(await crashAt(t, w, "update", "alpha", step), "SIGKILL", `the child was killed before "${step}"`);
    if (step === "rename 1") {
      // The state that used to lose the module: old version aside, new one staged.
      t.deepEqual(await installedVersions(t, w.config), {}, "between the renames nothing is at modules/alpha");
    }
    // The next registry command (here an update) recovers first, then sees the module.
    const next = await update(w.config, "alpha", w.opts);
    t.is(next.length, 1);
    t.deepEqual(await installedVersions(t, w.config), { alpha: "1.1.0" }, `after a crash before "${step}" and the next update`);
    t.deepEqual(next[0]!.status, step === "journal" ? "updated" : "up-to-date", "rolled forward unless nothing had been recorded");
    t.deepEqual(await leftovers(w.config), []);
    await remove(w.config, "alpha", w.opts);
    await install(w.config, "alpha@1.0.0", w.opts);
  }
});

test("remove and activate killed at every step: the module is removed or kept, activated or not, never lost", async (t) => {
  t.timeout(300_000, "many child processes on a loaded machine");
  const w = await world(t);
  await w.publish([ALPHA]);
  for (const step of ["journal", "rename 0", "cleanup", "done"]) {
    await install(w.config, "alpha", w.opts);
    t.is(await crashAt(t, w, "remove", "alpha", step), "SIGKILL");
    await recover(w.config, w.opts);
    t.deepEqual(await installedVersions(t, w.config), step === "journal" ? { alpha: "1.0.0" } : {}, `remove, crash before "${step}"`);
    t.deepEqual(await leftovers(w.config), []);
    if (step === "journal") await remove(w.config, "alpha", w.opts);
  }

  // An update that waits for a grant, then its activation killed at every step.
  await install(w.config, "alpha", w.opts);
  await w.publish([{ ...ALPHA, version: "1.2.0", capabilities: ["read_chain_state"] }]);
  for (const step of ["journal", "rename 0", "rename 1", "cleanup", "done"]) {
    delete w.config.modules.grants["alpha"];
    t.is((await update(w.config, "alpha", w.opts))[0]!.status, "pending");
    w.config.modules.grants["alpha"] = { allow: [parseDescriptor("read_chain_state")], deny: [] };
    t.is(await crashAt(t, w, "activate", "alpha", step), "SIGKILL");
    await recover(w.config, w.opts);
    t.deepEqual(await installedVersions(t, w.config), { alpha: step === "journal" ? "1.0.0" : "1.2.0" }, `activate, crash before "${step}"`);
    t.deepEqual(await leftovers(w.config), []);
    if (step === "journal") await activatePending(w.config, "alpha", w.opts);
    await remove(w.config, "alpha", w.opts);
    await install(w.config, "alpha@1.0.0", w.opts);
  }
});

test("a host started after an update was killed between its renames finishes the update and runs the new version", async (t) => {
  t.timeout(300_000, "many child processes on a loaded machine");
  const h = await startHost(t, { noStart: true, grants: { alpha: [] } });
  const w = await world(t, h.config);
  await w.publish([ALPHA]);
  await install(w.config, "alpha", w.opts);
  await w.publish([{ ...ALPHA, version: "1.1.0" }]);
  t.is(await crashAt(t, w, "update", "alpha", "rename 1"), "SIGKILL");
  await h.host.start();
  await h.waitForLog(/^finished an interrupted update of alpha 1\.0\.0 -> 1\.1\.0 in /, { source: "host" });
  await h.waitForLog(/^started alpha 1\.1\.0$/, { source: "alpha" });
  t.is(h.mustStatus("alpha").state, "running");
  t.deepEqual(await leftovers(w.config), []);
});

test("a journal whose writer's pid is alive again (PID reuse, a PID namespace) is still recovered: whether its writer lives is the lock's to say", async (t) => {
  t.timeout(300_000, "child processes on a loaded machine");
  const w = await world(t);
  await w.publish([ALPHA]);
  await install(w.config, "alpha@1.0.0", w.opts);
  await w.publish([{ ...ALPHA, version: "1.1.0" }]);
  t.is(await crashAt(t, w, "update", "alpha", "rename 1"), "SIGKILL");
  // The dead command's pid now names a live process (here: pid 1).
  const file = path.join(w.config.modules.modules_dir, JOURNAL);
  await writeFile(file, JSON.stringify({ ...JSON.parse(await readFile(file, "utf8")), pid: 1 }));
  const next = await update(w.config, "alpha", w.opts);
  t.is(next[0]!.status, "up-to-date", "the interrupted update was finished, not refused as busy");
  t.deepEqual(await installedVersions(t, w.config), { alpha: "1.1.0" });
  t.deepEqual(await leftovers(w.config), []);
});

test("a live command holds modules_dir, before its journal exists too: a second command is refused as busy; after kill -9 of it, the next host start removes what it staged (and a half-written journal) and runs the installed version", async (t) => {
  t.timeout(300_000, "child processes and a host on a loaded machine");
  const h = await startHost(t, { noStart: true, grants: { alpha: [] } });
  const w = await world(t, h.config);
  await w.publish([ALPHA]);
  await install(w.config, "alpha", w.opts);
  await w.publish([{ ...ALPHA, version: "1.1.0" }]);
  // Paused with the new version downloaded, verified and staged, no journal written yet.
  const child = await runChild(w, "update", "alpha", "pause:journal");
  t.teardown(() => { child.kill("SIGKILL"); });
  let out = "";
  child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise((resolve) => child.once("exit", resolve));
  await waitFor(() => out.includes("paused") || child.exitCode !== null, 240_000, "the update to pause before its journal", () => out);
  t.true(out.includes("paused"), out);

  const busy = await t.throwsAsync(remove(w.config, "alpha", w.opts));
  t.regex(busy!.message, /another modhost command is changing \S+ \(it holds \S+\.lock\)/);
  t.deepEqual(await installedVersions(t, w.config), { alpha: "1.0.0" }, "the refused remove removed nothing");

  child.kill("SIGKILL");
  await exited;
  t.deepEqual(await leftovers(w.config), [STAGING], "the killed update left its staged module");
  // And a journal killed while being written (writeJournal's temporary file).
  await writeFile(path.join(w.config.modules.modules_dir, `${JOURNAL}.0badf00d.tmp`), "{");
  await h.host.start();
  await h.waitForLog(/^removed 1 staged module directory of an interrupted command in /, { source: "host" });
  await h.waitForLog(/^started alpha 1\.0\.0$/, { source: "alpha" });
  t.deepEqual(await leftovers(w.config), []);
});
