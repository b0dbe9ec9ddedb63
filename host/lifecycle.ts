// Pieces of module supervision that do not depend on a module: a per-key command queue, a
// meter of the host's own event-loop stalls with deadlines that do not blame a module for
// them, the persisted quarantine and failure history, and the clean-up of run directories
// left behind by hosts that died.

import { chmod, mkdir, mkdtemp, readFile, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { tryLock } from "../storage/lock.ts";
import { ModhostError } from "./errors.ts";

/**
 * Runs tasks one after another per key; tasks of different keys do not wait for each other.
 * A failing task does not stop the ones queued after it.
 */
export class KeyedQueue {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const next = prev.then(task, task);
    const tail = next.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }

  /** Resolves when every task queued so far for `key` has finished. */
  idle(key: string): Promise<unknown> {
    return this.tails.get(key) ?? Promise.resolve();
  }
}

/**
 * Measures how long the host's own event loop was unable to run (a synchronous stretch of
 * work, a stop of the whole process): a timer that should fire every `period` ms and adds up
 * how late it was. A deadline is then extended by the stall that happened during it.
 */
export class LoopStallMeter {
  private total = 0;
  private last = performance.now();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly period = 100, private readonly tolerance = 20) {
    this.timer = setInterval(() => this.sample(), period);
    this.timer.unref();
  }

  /** Total stall so far, in ms, counting a stall still in progress. */
  now(): number {
    this.sample();
    return this.total;
  }

  private sample(): void {
    const t = performance.now();
    const late = t - this.last - this.period;
    if (late > this.tolerance) this.total += late;
    // Called early (by now()): the interval is not late, and the next one measures from here.
    if (late > this.tolerance || t - this.last >= this.period) this.last = t;
  }

  close(): void {
    clearInterval(this.timer);
  }
}

/** Let everything that has arrived on sockets be read before judging (a poll phase runs before setImmediate callbacks). */
function yieldToIo(): Promise<void> {
  return new Promise((resolve) => setImmediate(() => setImmediate(resolve)));
}

/**
 * A fair deadline of `ms`: resolves to true when `done()` turned true, false when `ms` of the
 * host's *own* running time passed without it. When the timer fires, what has arrived is read
 * first (yield to I/O) and the deadline is extended by the time the host's loop was stalled,
 * so a module is never blamed for the host's stall. `cancelled()` ends the wait early (true).
 */
export async function fairDeadline(ms: number, meter: LoopStallMeter, done: () => boolean, wake?: Promise<unknown>): Promise<boolean> {
  const startStall = meter.now();
  const start = performance.now();
  let allowed = ms;
  // Bounded: each round either ends or waits for a stall that really happened.
  for (let round = 0; round < 1000; round++) {
    const wait = Math.max(0, start + allowed - performance.now());
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([new Promise<void>((r) => (timer = setTimeout(r, wait))), ...(wake ? [wake] : [])]);
    clearTimeout(timer);
    if (done()) return true;
    await yieldToIo();
    if (done()) return true;
    const stalled = meter.now() - startStall;
    const due = ms + stalled;
    if (performance.now() - start < due - 1) {
      allowed = due;
      continue;
    }
    return false;
  }
  return done();
}

// ---------------------------------------------------------------------------------------
// Quarantine and failure history, in <data_dir>/.modhost-lifecycle.json

export interface ModuleHistory {
  /** Failures (crashes, failed starts), ms since the epoch, newest last. */
  failures: number[];
  quarantined?: { since: number; reason: string; failures: number };
}

const STATE_FILE = ".modhost-lifecycle.json";
/** At most this many failure times are kept per module. */
const MAX_KEPT_FAILURES = 64;

/** The lifecycle state that outlives the host process: which modules are quarantined, and their recent failures. */
export class LifecycleState {
  private modules: Record<string, ModuleHistory> = Object.create(null) as Record<string, ModuleHistory>;
  /** The modules (name → version) found in modules_dir when the host last looked; undefined before the first look. */
  private installed: Record<string, string> | undefined;
  /** The newest version of each module announced as ModuleDiscovered (host/registry/discover.ts). */
  private discovered: Record<string, string> = Object.create(null) as Record<string, string>;
  private writing: Promise<void> = Promise.resolve();

  private constructor(readonly file: string) {}

  /** Read the state in `dataDir`, which this host holds (host/host.ts lockDataDirs): a temporary file there is a dead host's, removed. */
  static async open(dataDir: string, warn: (message: string) => void): Promise<LifecycleState> {
    const state = new LifecycleState(path.join(dataDir, STATE_FILE));
    for (const name of await readdir(dataDir).catch(() => [] as string[])) {
      if (name.startsWith(`${STATE_FILE}.`) && name.endsWith(".tmp")) await rm(path.join(dataDir, name), { force: true });
    }
    let text: string;
    try {
      text = await readFile(state.file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") warn(`cannot read ${state.file}: ${(err as Error).message}; starting without quarantine history`);
      return state;
    }
    try {
      const parsed = JSON.parse(text) as { modules?: Record<string, ModuleHistory>; installed?: Record<string, unknown>; discovered?: Record<string, unknown> };
      const discovered = parsed.discovered && typeof parsed.discovered === "object" ? parsed.discovered : {};
      for (const [name, version] of Object.entries(discovered)) if (typeof version === "string") state.discovered[name] = version;
      if (parsed.installed && typeof parsed.installed === "object") {
        state.installed = Object.create(null) as Record<string, string>;
        for (const [name, version] of Object.entries(parsed.installed)) if (typeof version === "string") state.installed[name] = version;
      }
      for (const [name, h] of Object.entries(parsed.modules ?? {})) {
        if (!h || !Array.isArray(h.failures)) continue;
        state.modules[name] = {
          failures: h.failures.filter((t) => typeof t === "number").slice(-MAX_KEPT_FAILURES),
          ...(h.quarantined && typeof h.quarantined.reason === "string" ? { quarantined: h.quarantined } : {}),
        };
      }
    } catch (err) {
      warn(`${state.file} is not valid JSON (${(err as Error).message}); starting without quarantine history (delete the file to silence this)`);
    }
    return state;
  }

  /** The history of `name`, without creating one (names from commands are not trusted to be modules). */
  peek(name: string): ModuleHistory | undefined {
    return Object.hasOwn(this.modules, name) ? this.modules[name] : undefined;
  }

  get(name: string): ModuleHistory {
    return (this.modules[name] ??= { failures: [] });
  }

  /** Record a failure; returns how many failures fall within `windowMs` (this one included). */
  addFailure(name: string, at: number, windowMs: number): number {
    const h = this.get(name);
    h.failures = [...h.failures.filter((t) => at - t < windowMs), at].slice(-MAX_KEPT_FAILURES);
    return h.failures.length;
  }

  quarantine(name: string, reason: string, failures: number): void {
    this.get(name).quarantined = { since: Date.now(), reason, failures };
  }

  /** Lift the quarantine and forget the failures (the operator says the module is fixed). */
  release(name: string): void {
    if (this.peek(name)) this.modules[name] = { failures: [] };
  }

  /**
   * Record what modules_dir holds now and return how it differs from the last record: modules
   * installed, updated (another version) and removed. The very first record returns nothing:
   * the host has nothing to compare with.
   */
  takeInventory(now: ReadonlyMap<string, string>): { installed: Array<{ module: string; version: string }>; updated: Array<{ module: string; old_version: string; new_version: string }>; removed: Array<{ module: string; version: string }> } {
    const before = this.installed;
    const out = { installed: [] as Array<{ module: string; version: string }>, updated: [] as Array<{ module: string; old_version: string; new_version: string }>, removed: [] as Array<{ module: string; version: string }> };
    this.installed = Object.create(null) as Record<string, string>;
    for (const [name, version] of now) this.installed[name] = version;
    if (!before) return out;
    for (const [module, version] of now) {
      if (!Object.hasOwn(before, module)) out.installed.push({ module, version });
      else if (before[module] !== version) out.updated.push({ module, old_version: before[module]!, new_version: version });
    }
    for (const [module, version] of Object.entries(before)) if (!now.has(module)) out.removed.push({ module, version });
    return out;
  }

  /** Every module announced, with its version. */
  announcedVersions(): Array<[string, string]> {
    return Object.entries(this.discovered);
  }

  announce(name: string, version: string): void {
    this.discovered[name] = version;
  }

  /** Write the state (atomically: a temporary file renamed over the old one); writes are serialised. */
  save(): Promise<void> {
    const body = JSON.stringify({ version: 1, modules: this.modules, ...(this.installed ? { installed: this.installed } : {}), discovered: this.discovered }, null, 2) + "\n";
    this.writing = this.writing.then(async () => {
      await mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 });
      const tmp = `${this.file}.${process.pid}.tmp`;
      await writeFile(tmp, body, { mode: 0o600 });
      await rename(tmp, this.file);
    });
    return this.writing;
  }
}

// ---------------------------------------------------------------------------------------
// Run directories: <tmpdir>/modhost-run-XXXXXX, each holding its host's lock (storage/lock.ts)
// in host.lock/ for the host's lifetime. Whether the host that made one is alive is asked of
// the kernel (can the lock be taken?), never of a pid: across PID namespaces and after PID
// reuse a pid says nothing about the process that wrote it.

const RUN_DIR_PREFIX = "modhost-run-";
const RUN_DIR_LOCK = "host.lock";
/** A run directory without its lock is being made (the lock is taken right after mkdtemp) unless it is older than this. */
const UNLOCKED_GRACE_MS = 60_000;

/** A run directory made by this process, locked until `release()` or this process's death. */
export interface RunDir {
  readonly dir: string;
  /** Rename the directory aside, give up the lock, then remove it (removeRunDir). */
  remove(): Promise<void>;
}

/** Make this process's run directory (mode 0711: sandboxed modules, under their own uids, pass through but do not list). */
export async function createRunDir(tmp = os.tmpdir()): Promise<RunDir> {
  for (let attempt = 0; ; attempt++) {
    const dir = await mkdtemp(path.join(tmp, RUN_DIR_PREFIX)).catch((err: NodeJS.ErrnoException) => {
      throw new ModhostError("run_dir", `cannot make the host's run directory in ${tmp}: ${err.code ?? err.message}`, "the temporary directory (TMPDIR) must exist and be writable by the host");
    });
    await chmod(dir, 0o711);
    const got = await tryLock(path.join(dir, RUN_DIR_LOCK), true).catch((err: Error) => err);
    if (!(got instanceof Error) && got.state === "locked") {
      const lock = got.lock;
      return { dir, remove: () => removeRunDir(dir, lock) };
    }
    // Another host's clean-up took the fresh lock first (it then sees no database and leaves
    // the directory): start again with a new one.
    await rm(dir, { recursive: true, force: true });
    if (attempt >= 2) throw new Error(`cannot lock a run directory in ${tmp}: ${got instanceof Error ? got.message : `the lock was ${got.state}`}`);
  }
}

const LOCKED = /^modhost-run-[A-Za-z0-9]{6}$/;
/** A run directory its host was removing (renamed first: see removeRunDir). */
const REMOVING = /^modhost-run-[A-Za-z0-9]{6}\.removing$/;

/**
 * Remove this host's run directory. Renamed out of the clean-up's sight first, while the lock
 * is still held: once released, another host's clean-up may take the lock (LevelDB writes its
 * files into host.lock/) while this host's rm is under way, and the rm failed with ENOTEMPTY.
 * A host killed between the rename and the rm leaves `<dir>.removing`, which a later clean-up
 * removes once its lock is free and it is older than a minute.
 */
async function removeRunDir(dir: string, lock: { release(): Promise<void> }): Promise<void> {
  const aside = `${dir}.removing`;
  const target = await rename(dir, aside).then(() => aside, () => dir);
  await lock.release();
  await rm(target, { recursive: true, force: true });
}

/**
 * Remove the run directories of hosts that are gone; returns what was removed. A directory is
 * gone when its lock can be taken (its holder died: the kernel released it), or it has no lock
 * and is older than a minute (its host died between making it and locking it). Directories
 * named after a pid (modhost-run-<pid>-XXXXXX, made before run directories were locked) are
 * left alone: a pid cannot tell whether their host lives (a host in a PID namespace of its
 * own sees no other host's pid and would remove every live one's).
 */
export async function removeStaleRunDirs(tmp = os.tmpdir(), own?: string, now = Date.now()): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(tmp);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const full = path.join(tmp, name);
    if (full === own) continue;
    const removing = REMOVING.test(name);
    if (!(LOCKED.test(name) || removing) || !(await ownerGone(full, now, removing))) continue;
    await rm(full, { recursive: true, force: true }).then(() => removed.push(full), () => undefined);
  }
  return removed;
}

/** Whether the host that made run directory `dir` is gone (see removeStaleRunDirs); anything unclear keeps it. */
async function ownerGone(dir: string, now: number, removing: boolean): Promise<boolean> {
  // Being removed by its live host right now (the lock just released): not this clean-up's.
  // (ctime: the rename set it; mtime is when the directory's content last changed.)
  if (removing && now - (await stat(dir).then((s) => s.ctimeMs, () => now)) <= UNLOCKED_GRACE_MS) return false;
  const lockDir = path.join(dir, RUN_DIR_LOCK);
  // Not even the lock's directory: probe nothing (LevelDB would make it, and renew the age).
  const hasLock = await stat(lockDir).then(() => true, () => false);
  const got = hasLock ? await tryLock(lockDir, false).catch(() => undefined) : { state: "absent" as const };
  if (got?.state === "locked") {
    await got.lock.release();
    return true;
  }
  if (got?.state !== "absent") return false;
  const made = await stat(dir).then((s) => s.mtimeMs, () => now);
  return now - made > UNLOCKED_GRACE_MS;
}
