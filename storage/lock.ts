// A lock that the kernel releases when its holder dies, in whatever PID namespace the holder
// ran: a LevelDB database's LOCK file (fcntl F_SETLK on <dir>/LOCK). It answers "is whoever
// made this still alive?" where a pid written in a name or a file answers wrong: across PID
// namespaces (containers, a host restarted in another one) a live owner's pid may not exist
// here and a dead owner's may belong to someone else, and pids are reused.
//
// fcntl locks belong to the process, and closing ANY descriptor of the locked file drops
// them: a second open in this process of a database it holds (LevelDB opens LOCK, finds the
// name in its own table, closes the descriptor, fails) silently releases the first one's lock.
// So every database this process opens through here is kept in a table, and a second open of
// one is refused without touching the file (`claimDir`, used by ModuleStore.open too).

import path from "node:path";
import { ClassicLevel } from "classic-level";

/** Directories whose LevelDB lock this process holds (or is taking), by absolute path. */
const claimed = new Set<string>();

/**
 * Reserve `dir` for one open in this process; returns the release function, or undefined
 * when this process already has it open (a second open would drop the lock: see above).
 */
export function claimDir(dir: string): (() => void) | undefined {
  const key = path.resolve(dir);
  if (claimed.has(key)) return undefined;
  claimed.add(key);
  return () => claimed.delete(key);
}

/** A lock this process holds until `release()` (or until it dies: the kernel releases it then). */
export interface DirLock {
  readonly dir: string;
  release(): Promise<void>;
}

/**
 * What taking the lock in `dir` found: `locked` (ours now), `held` (by a live process, this
 * one included), `absent` (no lock there, and `create` was false).
 */
export type LockAttempt = { state: "locked"; lock: DirLock } | { state: "held" } | { state: "absent" };

/**
 * Take the lock in `dir` without waiting. `create`: make it when it is not there (the owner);
 * without it, a missing lock is `absent` (someone probing another process's directory).
 * Throws on other errors (permissions, I/O), with the directory named.
 */
export async function tryLock(dir: string, create: boolean): Promise<LockAttempt> {
  const unclaim = claimDir(dir);
  if (!unclaim) return { state: "held" };
  // Small buffers: the database holds nothing, it exists for its LOCK file.
  const db = new ClassicLevel(path.resolve(dir), { createIfMissing: create, cacheSize: 0, writeBufferSize: 4096, maxOpenFiles: 16 });
  try {
    await db.open();
  } catch (err) {
    unclaim();
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    if (cause?.code === "LEVEL_LOCKED") return { state: "held" };
    if (!create && /does not exist/.test(cause?.message ?? (err as Error).message)) return { state: "absent" };
    throw new Error(`cannot take the lock in ${dir}: ${cause?.message ?? (err as Error).message}`, { cause: err });
  }
  let released: Promise<void> | undefined;
  return {
    state: "locked",
    lock: {
      dir,
      release: () => (released ??= db.close().finally(unclaim)),
    },
  };
}
