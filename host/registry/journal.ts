// The write-ahead journal that makes install, update, activate and remove crash-safe.
//
// Every change a registry command makes to modules_dir is a short list of renames inside it
// (same file system: each one atomic), e.g. for an update:
//   1. modules/alpha            -> modules/.trash/alpha-XXXXXX/module   (the old version aside)
//   2. modules/.staging/alpha-Y -> modules/alpha                        (the verified new one)
// Before the first rename the whole plan (every rename, in order, and what to delete once it is
// done) is written to modules/.journal.json and fsynced, and so is the directory. Before each
// rename the journal is rewritten (and fsynced) with the number of renames already made, and
// each rename is made durable (its directories fsynced) before the next. Only then are the
// leftovers deleted and the journal removed.
//
// A registry command holds modules_dir for its whole run (lockModulesDir: a lock in
// modules_dir/.lock that the kernel releases when the command dies, in whatever PID namespace),
// and so does the host while it recovers at start: a journal found by whoever holds the lock
// was left by a command that died. (A pid written in the journal cannot tell: across PID
// namespaces and after PID reuse, a dead command's pid may be alive.) Staged modules that no
// journal names were left by a command killed while it downloaded and verified: removed too.
//
// Whoever finds a journal (the next registry command, or the host at start) finishes it: the
// plan was written only after everything in it had been downloaded and verified, so it ROLLS
// FORWARD: the renames the journal counts as made are done; the next one is redone unless it
// happened (its source gone, its target there); the rest are made. If a step cannot be
// completed (its source vanished, or its target appeared), the renames that were made are
// undone in reverse: ROLL BACK. Either way the module ends up installed in exactly one version,
// the old one or the new one, never neither.

import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, readdir, rename, rm, rmdir, stat } from "node:fs/promises";
import path from "node:path";
import { ModhostError } from "../errors.ts";
import { tryLock, type DirLock } from "../../storage/lock.ts";
import { fsyncPath } from "../../storage/durable.ts";

export const JOURNAL = ".journal.json";
/** Where a command assembles the modules it installs (stage.ts), inside modules_dir. */
export const STAGING = ".staging";
/** The lock a registry command (or the recovering host) holds in modules_dir. */
const LOCK = ".lock";

export interface Rename {
  from: string;
  to: string;
}

interface JournalPlan {
  version: 1;
  /** What the command was doing, for messages ("update alpha 1.0.0 -> 1.1.0"). */
  what: string;
  /** The process that wrote it (for people reading the file; liveness is the lock's). */
  pid: number;
  steps: Rename[];
  /** Renames made before the one about to be made when this was written. */
  done: number;
  /** Deleted once every step is done (or undone). */
  cleanup: string[];
}

/** Called before each step of `applyPlan` with its name: "journal", "rename 0", "rename 1", ..., "cleanup", "done". Tests crash the process here. */
export type CrashHook = (step: string) => void;

async function exists(p: string): Promise<boolean> {
  return stat(p).then(() => true, () => false);
}

/** Whether `name` (in modules_dir) is a journal's temporary file, or the journal or staging area: something recoverModulesDir clears. */
export function leftByCommand(name: string): boolean {
  return name === JOURNAL || name === STAGING || isJournalTemp(name);
}

function isJournalTemp(name: string): boolean {
  return name.startsWith(`${JOURNAL}.`) && name.endsWith(".tmp");
}

async function writeJournal(dir: string, plan: JournalPlan): Promise<void> {
  const file = path.join(dir, JOURNAL);
  const tmp = `${file}.${randomBytes(4).toString("hex")}.tmp`;
  const fh = await open(tmp, "wx", 0o600);
  try {
    await fh.writeFile(JSON.stringify(plan, null, 2) + "\n");
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  await fsyncPath(dir);
}

async function removeJournal(dir: string): Promise<void> {
  await rm(path.join(dir, JOURNAL), { force: true });
  await fsyncPath(dir);
}

/** One rename, idempotent: "done" when it had already happened. Throws when it can be neither done nor found done. */
async function redo(step: Rename): Promise<"renamed" | "done"> {
  const [src, dst] = await Promise.all([exists(step.from), exists(step.to)]);
  if (!src && dst) return "done";
  if (src && !dst) {
    await mkdir(path.dirname(step.to), { recursive: true });
    await rename(step.from, step.to);
    await fsyncPath(path.dirname(step.to));
    if (path.dirname(step.from) !== path.dirname(step.to)) await fsyncPath(path.dirname(step.from));
    return "renamed";
  }
  throw new ModhostError("journal", src ? `cannot move ${step.from} to ${step.to}: the target exists` : `cannot move ${step.from} to ${step.to}: neither exists`);
}

/** Undo the first `upTo` + 1 renames in reverse order, as far as they were made. */
async function undo(steps: Rename[], upTo: number): Promise<void> {
  for (const step of steps.slice(0, upTo + 1).reverse()) {
    if ((await exists(step.to)) && !(await exists(step.from))) {
      await mkdir(path.dirname(step.from), { recursive: true });
      await rename(step.to, step.from);
      await fsyncPath(path.dirname(step.from));
    }
  }
}

/** Delete the plan's leftovers, and their parent directories (.trash, ...) when that leaves them empty. */
async function cleanup(dir: string, plan: JournalPlan): Promise<void> {
  for (const p of plan.cleanup) {
    await rm(p, { recursive: true, force: true });
    if (path.dirname(p) !== dir) await rmdir(path.dirname(p)).catch(() => undefined);
  }
}

/**
 * Make the renames of `plan` in modules_dir `dir`, journaled. On an error (not a crash) the
 * renames made so far are undone before it is thrown.
 */
export async function applyPlan(dir: string, what: string, steps: Rename[], leftovers: string[], crash?: CrashHook): Promise<void> {
  const plan: JournalPlan = { version: 1, what, pid: process.pid, steps, done: 0, cleanup: leftovers };
  crash?.("journal");
  await writeJournal(dir, plan);
  let i = 0;
  try {
    for (; i < steps.length; i++) {
      if (i > 0) await writeJournal(dir, { ...plan, done: i });
      crash?.(`rename ${i}`);
      await redo(steps[i]!);
    }
  } catch (err) {
    await undo(steps, i);
    await cleanup(dir, plan);
    await removeJournal(dir);
    throw err;
  }
  crash?.("cleanup");
  await cleanup(dir, plan);
  crash?.("done");
  await removeJournal(dir);
}


/**
 * Hold modules_dir `dir` for one command; throws `busy` when a live process holds it. Released
 * by `release()`, or by the kernel when this process dies.
 */
export async function lockModulesDir(dir: string): Promise<DirLock> {
  const lockDir = path.join(dir, LOCK);
  await mkdir(dir, { recursive: true });
  const got = await tryLock(lockDir, true);
  if (got.state === "locked") return got.lock;
  throw new ModhostError("busy", `another modhost command is changing ${dir} (it holds ${lockDir})`, "wait for it to finish, then try again");
}

/**
 * Finish what an interrupted registry command left in modules_dir `dir` (see the top of this
 * file): its journal, and its staged modules. The caller holds the lock (lockModulesDir).
 * Returns a sentence saying what was done, or undefined when there was nothing to do.
 */
export async function recoverModulesDir(dir: string): Promise<string | undefined> {
  const journal = await recoverJournal(dir);
  // A journal being written when its command died (writeJournal's temporary file).
  for (const name of await readdir(dir).catch(() => [] as string[])) if (isJournalTemp(name)) await rm(path.join(dir, name), { force: true });
  const staged = await readdir(path.join(dir, STAGING)).catch(() => [] as string[]);
  for (const name of staged) await rm(path.join(dir, STAGING, name), { recursive: true, force: true });
  await rmdir(path.join(dir, STAGING)).catch(() => undefined);
  const removed = staged.length > 0 ? `removed ${staged.length} staged module director${staged.length === 1 ? "y" : "ies"} of an interrupted command` : undefined;
  return journal && removed ? `${journal}; ${removed}` : (journal ?? removed);
}

async function recoverJournal(dir: string): Promise<string | undefined> {
  const file = path.join(dir, JOURNAL);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  let plan: JournalPlan;
  try {
    plan = parsePlan(JSON.parse(text), dir);
  } catch (err) {
    throw new ModhostError("journal", `${file} is damaged (${(err as Error).message}); modules_dir may hold a half-finished install or update`, `look at ${dir} (.staging, .trash, .pending hold the versions involved), put the module you want in place by hand, then delete ${file}`);
  }
  let outcome: string;
  let i = plan.done;
  try {
    for (; i < plan.steps.length; i++) await redo(plan.steps[i]!);
    outcome = `finished an interrupted ${plan.what}`;
  } catch (err) {
    await undo(plan.steps, i);
    outcome = `rolled back an interrupted ${plan.what} (${(err as Error).message})`;
  }
  await cleanup(dir, plan);
  await removeJournal(dir);
  return outcome;
}

/** A journal read back: every path must be inside modules_dir (a damaged or planted journal moves nothing elsewhere). */
function parsePlan(data: unknown, dir: string): JournalPlan {
  const inside = (p: unknown): string => {
    if (typeof p !== "string" || !path.isAbsolute(p)) throw new Error("a path is not absolute");
    const rel = path.relative(dir, p);
    if (rel === "" || rel.startsWith("..") || path.isAbsolute(rel)) throw new Error(`${p} is not inside ${dir}`);
    return p;
  };
  const d = data as Partial<JournalPlan> | null;
  if (d?.version !== 1 || typeof d.what !== "string" || typeof d.pid !== "number" || !Array.isArray(d.steps) || !Array.isArray(d.cleanup)
    || typeof d.done !== "number" || !Number.isInteger(d.done) || d.done < 0 || d.done > d.steps.length) {
    throw new Error("not a version 1 journal");
  }
  return {
    version: 1,
    what: d.what,
    pid: d.pid,
    done: d.done,
    steps: d.steps.map((s: Rename) => ({ from: inside(s?.from), to: inside(s?.to) })),
    cleanup: d.cleanup.map(inside),
  };
}
