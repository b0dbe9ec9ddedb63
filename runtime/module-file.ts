// Reading a file a module's author controls (its sources, its binary, its manifest): a regular
// file only, at most a given size, hashed as it is read.
//
// A plain readFile trusted the path to name a regular file of a sane size. A FIFO blocked the
// read forever in one of libuv's four pool threads (the module never loaded, every later file
// and LevelDB job of the host queued behind fewer threads, and the host could not exit: Node
// joins the pool's threads at exit); a symlink to /dev/zero grew the host's memory until
// readFile gave up at 2 GiB; a 1.9 GiB sparse file was read whole into the host's memory.
// Here the path is stat'ed first (a device is never opened: opening some has effects of its
// own), opened non-blocking (a FIFO opens at once) without becoming a controlling terminal,
// checked again on the open descriptor, and read in steps of at most READ_STEP_BYTES up to the
// limit + 1 byte: a file that grows while it is read, or one whose size the kernel does not
// report (/proc), is refused at the limit, never read past it. The SHA-256 is taken one step
// at a time, so hashing a large file never holds the host's loop for long.

import { createHash } from "node:crypto";
import { constants, type Stats } from "node:fs";
import { open, stat, type FileHandle } from "node:fs/promises";

/** Bytes read (and hashed) per step: ~2-3 ms of SHA-256 on the host's loop. */
const READ_STEP_BYTES = 1024 * 1024;

export interface FileLimit {
  /** Largest size accepted, in bytes. */
  maxBytes: number;
  /** The constant's name, for the error. */
  name: string;
  /** What the author or operator can do about a file over it. */
  fix: string;
  /** The limit in words ("allowed" unless given). */
  what?: string;
}

export class ModuleFileError extends Error {
  /** "not_regular": a FIFO, socket, device or directory; "too_large": past the limit; "unreadable": the system refused. */
  readonly reason: "not_regular" | "too_large" | "unreadable";
  /** The system's error code (ENOENT, EACCES, ...) when "unreadable"; "EISDIR" for a directory. */
  readonly code: string | undefined;
  constructor(reason: ModuleFileError["reason"], message: string, code?: string) {
    super(message);
    this.name = "ModuleFileError";
    this.reason = reason;
    this.code = code;
  }
}

/** What kind of file `st` is, in words. */
function fileKind(st: Stats): string {
  if (st.isFile()) return "a regular file";
  if (st.isDirectory()) return "a directory";
  if (st.isFIFO()) return "a FIFO (named pipe)";
  if (st.isSocket()) return "a socket";
  if (st.isCharacterDevice()) return "a character device";
  if (st.isBlockDevice()) return "a block device";
  if (st.isSymbolicLink()) return "a symbolic link";
  return "not a regular file";
}

function notRegular(file: string, st: Stats): ModuleFileError {
  return new ModuleFileError("not_regular", `${file} is ${fileKind(st)}, not a regular file; a module's files must be regular files (a FIFO or device would block or never end when read)`, st.isDirectory() ? "EISDIR" : undefined);
}

function tooLarge(file: string, size: string, limit: FileLimit): ModuleFileError {
  return new ModuleFileError("too_large", `${file} is ${size} bytes, more than the ${limit.maxBytes} ${limit.what ?? "allowed"} (${limit.name})${limit.fix ? `; ${limit.fix}` : ""}`);
}

/** Refuse `file` unless it is a regular file within `limit` (following symlinks). Returns its size. */
export async function checkModuleFile(file: string, limit: FileLimit, shown = file): Promise<number> {
  let st: Stats;
  try {
    st = await stat(file);
  } catch (err) {
    throw unreadable(shown, err);
  }
  if (!st.isFile()) throw notRegular(shown, st);
  if (st.size > limit.maxBytes) throw tooLarge(shown, String(st.size), limit);
  return st.size;
}

function unreadable(shown: string, err: unknown): ModuleFileError {
  const code = (err as NodeJS.ErrnoException).code;
  return new ModuleFileError("unreadable", `${shown} cannot be read (${code ?? (err as Error).message})`, code);
}

/**
 * The bytes of the regular file `file` and their SHA-256 (hex); ModuleFileError when it is not
 * one, is past `limit` or cannot be read. Errors name the file as `shown`.
 */
export async function readModuleFile(file: string, limit: FileLimit, shown = file): Promise<{ bytes: Buffer; sha256: string }> {
  await checkModuleFile(file, limit, shown);
  let fh: FileHandle;
  try {
    fh = await open(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (err) {
    throw unreadable(shown, err);
  }
  try {
    // Again on what was opened: the path may have been swapped since the stat.
    const st = await fh.stat();
    if (!st.isFile()) throw notRegular(shown, st);
    if (st.size > limit.maxBytes) throw tooLarge(shown, String(st.size), limit);
    const hash = createHash("sha256");
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      // The size it reports + 1 (to see the end), at least 4 KiB (/proc reports 0), one step at most.
      const want = Math.min(READ_STEP_BYTES, limit.maxBytes + 1 - total, Math.max(st.size + 1 - total, 4096));
      const buf = Buffer.allocUnsafe(want);
      let bytesRead: number;
      try {
        ({ bytesRead } = await fh.read(buf, 0, want, null));
      } catch (err) {
        throw unreadable(shown, err);
      }
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > limit.maxBytes) throw tooLarge(shown, `more than ${limit.maxBytes}`, limit);
      const part = bytesRead === want ? buf : buf.subarray(0, bytesRead);
      hash.update(part);
      chunks.push(part);
    }
    return { bytes: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total), sha256: hash.digest("hex") };
  } finally {
    await fh.close();
  }
}
