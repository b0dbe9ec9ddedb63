// Whether another host is alive, asked of the kernel (storage/lock.ts), with real host
// processes killed with kill -9: a second host on the same data directories stops before any
// module's code runs (RPC server or not), a killed host leaves no lock behind, and run
// directories are judged by their lock, not by a pid, so a host in another PID namespace
// (where its pid is 1, alive here) is told apart from a dead one.

import test from "ava";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile, readdir, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { buildModulesDir, ROOT, tempDir, waitFor, type InlineModule } from "./helpers/host.ts";
import { tryLock } from "../storage/lock.ts";
import { ModuleStore } from "../storage/store.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { createRunDir, removeStaleRunDirs } from "../host/lifecycle.ts";

const MODHOST = path.join(ROOT, "bin", "modhost.js");
/** Generous: a host start on a loaded 2-core machine can take tens of seconds. */
const LONG = 120_000;

/** A module whose start() logs `<name> up`; unique names let a test find its run directory by the bundle in it. */
function canary(name: string): InlineModule {
  return {
    toml: `name = "${name}"\nversion = "1.0.0"\nentry_point = "index.ts"\ncapabilities = []\n`,
    files: { "index.ts": `import type { ModuleContext } from "modhost/sdk";\nexport default function start(ctx: ModuleContext): void { ctx.log.info("${name} up"); }\n` },
  };
}

/** A directory with one module and a modhost.toml; RPC off unless `rpc`. */
async function setup(t: Parameters<typeof tempDir>[0], module: string, rpc = false): Promise<{ dir: string; config: string }> {
  const dir = await tempDir(t, "modhost-locks-");
  await buildModulesDir(dir, [], { [module]: canary(module) });
  const config = path.join(dir, "modhost.toml");
  await writeFile(config, [
    "[chain]", "block_interval_seconds = 0", "",
    "[modules]", 'modules_dir = "modules"', 'data_dir = "data/modules"', "",
    "[modules.default_limits]", "stop_timeout_ms = 1000", "",
    "[storage]", 'dir = "data/storage"', "",
    "[rpc]", `enabled = ${rpc}`, "port = 0", "",
    "[trust]", 'signatures = "allow-unsigned"', "",
  ].join("\n"));
  return { dir, config };
}

interface HostProc {
  child: ChildProcess;
  /** The host's own pid (inside unshare, the child of the unshare process). */
  pid: () => number;
  output: () => string;
  exited: Promise<number | null>;
}

/** Whether this machine lets us start a process in new PID and mount namespaces, with its own /proc, as a container would (root, unshare). */
const canUnshare = spawnSync("unshare", ["--pid", "--fork", "--mount-proc", "true"], { stdio: "ignore" }).status === 0;

/**
 * Start `modhost run` as a process; in a PID namespace of its own when `ns` (and possible);
 * with its temporary directory `tmp` when given (run directories are made there).
 */
function runHost(t: Parameters<typeof tempDir>[0], dir: string, config: string, opts: { ns?: boolean; tmp?: string } = {}): HostProc {
  const ns = opts.ns === true;
  const args = [MODHOST, "run", "--config", config];
  const env = { ...process.env, NO_COLOR: "1", ...(opts.tmp ? { TMPDIR: opts.tmp } : {}) };
  const child = ns && canUnshare
    ? spawn("unshare", ["--pid", "--fork", "--mount-proc", "--kill-child", process.execPath, ...args], { cwd: dir, stdio: ["ignore", "pipe", "pipe"], env })
    : spawn(process.execPath, args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"], env });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const pid = (): number => {
    if (!(ns && canUnshare)) return child.pid!;
    // unshare --fork: the host is unshare's only child.
    const kids = spawnSync("cat", [`/proc/${child.pid}/task/${child.pid}/children`], { encoding: "utf8" }).stdout.trim().split(/\s+/).filter(Boolean);
    return Number(kids[0] ?? child.pid);
  };
  t.teardown(() => {
    try { process.kill(pid(), "SIGKILL"); } catch { /* gone */ }
    child.kill("SIGKILL");
  });
  return { child, pid, output: () => out, exited };
}

/** What another process gets when it opens the LevelDB database in `dir`: "opened", or the error code (LEVEL_LOCKED). */
function otherProcessOpens(dir: string): string {
  const probe = spawnSync(process.execPath, ["--input-type=module", "-e", `
import { ClassicLevel } from "classic-level";
const db = new ClassicLevel(${JSON.stringify(dir)}, { createIfMissing: false });
try { await db.open(); console.log("opened"); await db.close(); } catch (e) { console.log(e.cause?.code ?? e.message); }
`], { cwd: ROOT, encoding: "utf8" });
  return probe.stdout.trim() || probe.stderr;
}

/** A process: its pid and start time (so that a reused pid is not taken for it). */
interface Proc {
  pid: number;
  start: string;
}

/** State and start time of `pid` from /proc/PID/stat, or undefined when it is gone. */
async function procStat(pid: number): Promise<{ state: string; start: string } | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  if (!stat) return undefined;
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // After the command: state is field 3 of stat, starttime field 22.
  return { state: fields[0]!, start: fields[19]! };
}

/** Every descendant of `pid`, read from /proc. */
async function descendants(pid: number): Promise<Proc[]> {
  const out: Proc[] = [];
  const walk = async (p: number) => {
    for (const task of await readdir(`/proc/${p}/task`).catch(() => [] as string[])) {
      const kids = (await readFile(`/proc/${p}/task/${task}/children`, "utf8").catch(() => "")).trim().split(/\s+/).filter(Boolean).map(Number);
      for (const k of kids) {
        const st = await procStat(k);
        if (st) out.push({ pid: k, start: st.start });
        await walk(k);
      }
    }
  };
  await walk(pid);
  return out;
}

/** Those of `procs` still running (the same process, not a zombie), with their command lines. */
async function alive(procs: Proc[]): Promise<string[]> {
  const out: string[] = [];
  for (const p of procs) {
    const st = await procStat(p.pid);
    if (!st || st.start !== p.start || st.state === "Z") continue;
    const cmd = await readFile(`/proc/${p.pid}/cmdline`, "utf8").catch(() => "");
    out.push(`${p.pid}: ${cmd.replaceAll("\0", " ").slice(0, 160)}`);
  }
  return out;
}

/** The run directory in `tmp` holding the bundle of module `name`. */
async function runDirOf(tmp: string, name: string): Promise<string | undefined> {
  for (const entry of await readdir(tmp)) {
    if (!entry.startsWith("modhost-run-")) continue;
    const files = await readdir(path.join(tmp, entry)).catch(() => [] as string[]);
    if (files.some((f) => f.startsWith(`${name}-`) && f.endsWith(".js"))) return path.join(tmp, entry);
  }
  return undefined;
}

test.serial("a second host on the same data directories, RPC server off, stops before any module's code runs; after kill -9 of the first, the next host starts (no lock left behind) and removes its half-saved state files", async (t) => {
  t.timeout(4 * LONG);
  const name = `canary${process.pid}a`;
  const { dir, config } = await setup(t, name);
  const first = runHost(t, dir, config);
  await waitFor(() => /ready in \d+ ms/.test(first.output()) && first.output().includes(`${name} up`), LONG, "the first host to be ready", first.output);

  const second = runHost(t, dir, config);
  // It must end by itself; were it to start its modules, `ready in` would come instead.
  await waitFor(() => second.child.exitCode !== null || /ready in \d+ ms/.test(second.output()), LONG, "the second host to end", second.output);
  t.is(await second.exited, 1, second.output());
  t.regex(second.output(), /another modhost is running on \S+data\/storage \(it holds \S+\.modhost-host\.lock\)/);
  t.false(second.output().includes(`${name} up`), "the second host ran none of the module's code");
  t.true(first.child.exitCode === null, "the first host still runs");

  process.kill(first.pid(), "SIGKILL");
  await first.exited;
  // As if it was killed while saving the quarantine state (its temporary file, named by pid).
  const halfSaved = path.join(dir, "data", "modules", ".modhost-lifecycle.json.4242.tmp");
  await writeFile(halfSaved, "{");
  // ... or while saving the module uid table (its temporary file, named at random).
  const halfUids = path.join(dir, "data", "modules", ".module-uids.json.0123456789ab");
  await writeFile(halfUids, "{");
  const third = runHost(t, dir, config);
  await waitFor(() => /ready in \d+ ms/.test(third.output()) && third.output().includes(`${name} up`), LONG, "the host after the kill to be ready", third.output);
  t.false(existsSync(halfSaved), "the dead host's half-saved state file was removed");
  t.false(existsSync(halfUids), "the dead host's half-saved uid table was removed");
  third.child.kill("SIGTERM");
  t.is(await third.exited, 0, third.output());
});

test.serial("run directories: a host killed with kill -9 in another PID namespace has its directory removed at the next start, though its pid there (1) is alive here; a live one's is kept", async (t) => {
  t.timeout(6 * LONG);
  if (!canUnshare) t.log("no new PID namespace on this machine (unshare --pid needs root): the hosts run in this one");
  const [a, b, c] = ["a", "b", "c"].map((s) => `rd${process.pid}${s}`) as [string, string, string];
  const [da, db, dc] = await Promise.all([setup(t, a), setup(t, b), setup(t, c)]);
  // The hosts' own temporary directory: what they remove is theirs to judge, nobody else's.
  const tmp = await tempDir(t, "modhost-tmp-");
  const killed = runHost(t, da.dir, da.config, { ns: true, tmp });
  const live = runHost(t, db.dir, db.config, { ns: true, tmp });
  await waitFor(() => killed.output().includes(`${a} up`) && live.output().includes(`${b} up`), LONG, "both hosts to run their module", () => killed.output() + live.output());
  const killedDir = await waitFor(() => runDirOf(tmp, a), LONG, "the killed host's run directory");
  const liveDir = await waitFor(() => runDirOf(tmp, b), LONG, "the live host's run directory");

  const family = await descendants(killed.pid());
  t.true(family.length > 0, "the host has module processes (its sandboxes, an isolate host)");
  process.kill(killed.pid(), "SIGKILL");
  await killed.exited;
  t.true(existsSync(killedDir), "kill -9 leaves the run directory behind");
  // No ghost: every process the killed host had started ends with it.
  let ghosts: string[] = [];
  await waitFor(async () => (ghosts = await alive(family)).length === 0, LONG, () => `the killed host's processes to end: ${ghosts.join("; ")}`);

  const next = runHost(t, dc.dir, dc.config, { tmp });
  await waitFor(() => next.output().includes(`${c} up`), LONG, "the next host to run its module", next.output);
  t.false(existsSync(killedDir), `the killed host's run directory ${killedDir} was removed`);
  t.true(existsSync(liveDir), `the live host's run directory ${liveDir} is kept`);
  t.true(live.output().includes(`${b} up`) && live.child.exitCode === null, "the live host still runs");

  // A clean stop removes the host's own run directory.
  for (const h of [next, live]) {
    process.kill(h.pid(), "SIGTERM");
    await h.exited;
  }
  t.false(existsSync(liveDir), "a stopped host removes its own run directory");
});

test("storage lock: a second open in this process is refused without touching the file, so the first keeps its lock against other processes", async (t) => {
  const dir = path.join(await tempDir(t), "lock");
  const first = await tryLock(dir, true);
  t.is(first.state, "locked");
  t.is((await tryLock(dir, true)).state, "held", "this process holds it");
  // Another process cannot take it: the refused second open did not drop the lock.
  t.is(otherProcessOpens(dir), "LEVEL_LOCKED");
  if (first.state === "locked") await first.lock.release();
  t.is((await tryLock(dir, false)).state, "locked", "free again once released");
});

test("module storage: opening a store this process has open is refused, and the first open keeps its lock against other processes", async (t) => {
  const dir = path.join(await tempDir(t), "store");
  const store = await ModuleStore.open(dir);
  t.teardown(() => store.close());
  const err = await t.throwsAsync(ModuleStore.open(dir));
  t.regex(err!.message, /storage directory .* is already open in this process; close it first/);
  t.is(otherProcessOpens(dir), "LEVEL_LOCKED");
  await store.close();
  const again = await ModuleStore.open(dir);
  await again.close();
});

test("run directories: removed when their lock is free or they have none and are over a minute old; kept when held (here or elsewhere), fresh, or named after a pid", async (t) => {
  const tmp = await tempDir(t, "modhost-tmp-");
  // A holder in another process, then killed with kill -9.
  const holder = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", `
import { createRunDir } from "./host/lifecycle.ts";
const r = await createRunDir(${JSON.stringify(tmp)});
console.log(r.dir);
setInterval(() => {}, 1000);
`], { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] });
  t.teardown(() => { holder.kill("SIGKILL"); });
  let out = "";
  holder.stdout.on("data", (d: Buffer) => (out += d.toString()));
  const dead = await waitFor(() => out.match(/^(\S+)\n/)?.[1], LONG, "the holder's run directory");
  t.deepEqual(await removeStaleRunDirs(tmp), [], "nothing is removed while the holder lives");
  holder.kill("SIGKILL");
  await new Promise((resolve) => holder.once("exit", resolve));
  const mine = await createRunDir(tmp);
  t.teardown(() => mine.remove());
  const fresh = path.join(tmp, "modhost-run-Fresh1");
  const old = path.join(tmp, "modhost-run-Old123");
  const pidNamed = path.join(tmp, "modhost-run-999999999-Ab12Cd");
  for (const d of [fresh, old, pidNamed]) await mkdir(d);
  const twoMinutesAgo = new Date(Date.now() - 120_000);
  await utimes(old, twoMinutesAgo, twoMinutesAgo);
  t.deepEqual((await removeStaleRunDirs(tmp)).sort(), [dead, old].sort());
  for (const kept of [mine.dir, fresh, pidNamed]) t.true(existsSync(kept), `${kept} is kept`);
  await mine.remove();
  t.false(existsSync(mine.dir), "remove() takes the host's own directory away");
});

test("run directories: a host's remove() while other hosts clean up never fails and leaves nothing; an aside left by a killed remove goes once its lock is free and a minute has passed", async (t) => {
  const tmp = await tempDir(t, "modhost-tmp-");
  // Other hosts' clean-ups, over and over, while run directories are made and removed: a
  // clean-up that takes a just-released lock writes LevelDB's files into it, and an rm under
  // way failed with ENOTEMPTY.
  let cleaning = true;
  const cleaners = Array.from({ length: 3 }, async () => {
    while (cleaning) await removeStaleRunDirs(tmp);
  });
  try {
    for (let round = 0; round < 15; round++) {
      const dirs = await Promise.all(Array.from({ length: 4 }, () => createRunDir(tmp)));
      await Promise.all(dirs.map((d) => d.remove()));
    }
  } finally {
    cleaning = false;
    await Promise.all(cleaners);
  }
  t.deepEqual(await readdir(tmp), [], "every run directory is gone");

  // A remove() killed between its rename and its rm: kept while fresh, removed when old.
  const aside = path.join(tmp, "modhost-run-Aside1.removing");
  await mkdir(aside);
  t.deepEqual(await removeStaleRunDirs(tmp), [], "a fresh aside may be its live host's");
  // ctime cannot be set back: the clean-up is asked as if two minutes had passed.
  t.deepEqual(await removeStaleRunDirs(tmp, undefined, Date.now() + 120_000), [aside]);
});

test("chain database: a second open in this process is refused, and the first keeps its lock against other processes", async (t) => {
  const dir = path.join(await tempDir(t), "chain");
  const first = await EmbeddedChain.create({ dataDir: dir, matureBlocks: 1 });
  t.teardown(() => first.close());
  await t.throwsAsync(EmbeddedChain.create({ dataDir: dir }), { message: /the chain database .* is in use \(already open in this process\)/ });
  t.is(otherProcessOpens(dir), "LEVEL_LOCKED");
});
