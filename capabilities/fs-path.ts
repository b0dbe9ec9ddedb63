// One file: every system call the file API makes under a module's data directory is here (the
// audited surface), and the walk is read with the operations anchored to its result.
//
// Confined, race-free file access under one module's data directory.
//
// Paths from a module are parsed into components (no "..", no absolute paths, no NUL or
// control characters, no backslashes) and never handed to the kernel as one string. Instead
// every operation walks the components itself, openat-style: the data directory is opened with
// O_DIRECTORY|O_NOFOLLOW, and each next component is opened through "/proc/self/fd/<dirfd>/<name>"
// with O_NOFOLLOW. The kernel resolves /proc/self/fd/<dirfd> to the directory already open, so
// the only name it looks up is the one component, inside that directory, and a symbolic link
// there makes the open fail instead of being followed. Nothing is checked by path and then used
// by path, so swapping a component for a symlink between two calls gains nothing. The final
// operation (open, unlink, rmdir, mkdir, lstat, readdir) is anchored to the parent's fd the same
// way. This needs Linux with /proc mounted; elsewhere the family fails closed ("unavailable").

import { closeSync, constants as C, lstatSync, opendirSync, openSync, type Stats } from "node:fs";
import { lstat, mkdir, open, opendir, rmdir, stat, unlink } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { CapabilityError } from "./types.ts";
import { sliceAccount } from "../chain/slices.ts";
import { quoted } from "../protocol/messages.ts";
import { isOver, MAX_SCAN_DEPTH, overMessage, type DataQuota, type DataUsage, type Measured } from "./fs-usage.ts";

/** Largest file read_file returns and write_file writes (below the 16 MiB protocol frame). */
export const MAX_FILE_BYTES = 8 * 1024 * 1024;
/** Most entries list_directory returns. */
export const MAX_LIST_ENTRIES = 10_000;
/** Longest accepted path, in UTF-8 bytes. */
const MAX_PATH_BYTES = 1024;
/** Longest accepted path component, in UTF-8 bytes (NAME_MAX). */
const MAX_NAME_BYTES = 255;
/** Deepest accepted path, in components. */
const MAX_DEPTH = 32;

export interface ParsedPath {
  /** Canonical relative form: "a/b/c", or "." for the data directory itself. Used for grants. */
  readonly canonical: string;
  /** Components; empty for the data directory itself. */
  readonly parts: readonly string[];
}

/** A refused path, quoted in part (the checks below run before its length is known to be within MAX_PATH_BYTES). */
const bad = (raw: string, why: string): CapabilityError =>
  new CapabilityError("invalid_params", `path ${quoted(raw)} ${why}`);

/**
 * Parse a module-supplied path. The canonical form agrees with `canonicalRelativePath` from
 * grants.ts for every path accepted here, so scope checks see exactly the location that is used.
 */
export function parsePath(raw: string): ParsedPath {
  if (raw.includes("\0")) throw bad(raw, "contains a NUL byte");
  // Control characters are refused so names stay printable in logs and listings.
  if (/[\u0001-\u001f\u007f]/.test(raw)) throw bad(raw, "contains a control character");
  // A lone surrogate would be written as U+FFFD, so two different strings would name one file.
  if (/\p{Cs}/u.test(raw)) throw bad(raw, "is not well-formed Unicode (lone surrogate)");
  // Backslashes are ordinary name characters on Linux but separators in grant scopes; refusing
  // them keeps the name used and the name checked identical.
  if (raw.includes("\\")) throw bad(raw, "contains a backslash; use \"/\" to separate directories");
  if (raw.startsWith("/")) throw bad(raw, "is absolute; paths are relative to the module's data directory");
  if (Buffer.byteLength(raw, "utf8") > MAX_PATH_BYTES) throw bad(raw, `is longer than ${MAX_PATH_BYTES} bytes`);
  const parts: string[] = [];
  for (const part of raw.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") throw bad(raw, "contains \"..\"; paths may not leave the module's data directory");
    if (Buffer.byteLength(part, "utf8") > MAX_NAME_BYTES) throw bad(raw, `has a component longer than ${MAX_NAME_BYTES} bytes`);
    parts.push(part);
  }
  if (parts.length > MAX_DEPTH) throw bad(raw, `is deeper than ${MAX_DEPTH} directories`);
  return { canonical: parts.length === 0 ? "." : parts.join("/"), parts };
}

// ---------------------------------------------------------------------------------------
// Errors

const LINK_MSG = "symbolic links are not followed";

interface ErrnoLike {
  code?: unknown;
}

/** Turn an fs error into a CapabilityError naming the module's relative path; unknown errors pass through (sanitised by the hub). */
function mapError(err: unknown, where: string): unknown {
  if (err instanceof CapabilityError) return err;
  const code = (err as ErrnoLike | null)?.code;
  const at = JSON.stringify(where);
  switch (code) {
    case "ENOENT": return new CapabilityError("not_found", `${at}: no such file or directory`);
    case "ELOOP":
    case "EXDEV": return new CapabilityError("permission_denied", `${at} is a symbolic link; ${LINK_MSG}`);
    case "EACCES":
    case "EPERM": return new CapabilityError("permission_denied", `${at}: the host has no access to it`);
    case "EISDIR": return new CapabilityError("invalid_params", `${at} is a directory`);
    case "ENOTDIR": return new CapabilityError("invalid_params", `${at}: a path component is not a directory`);
    case "ENOTEMPTY": return new CapabilityError("invalid_params", `${at} is a directory that is not empty`);
    case "EEXIST": return new CapabilityError("invalid_params", `${at} already exists`);
    case "ENAMETOOLONG": return new CapabilityError("invalid_params", `${at} is too long`);
    case "ENXIO":
    case "ETXTBSY": return new CapabilityError("invalid_params", `${at} is not a regular file`);
    case "ENOSPC":
    case "EDQUOT":
    case "EFBIG": return new CapabilityError("quota_exceeded", `${at}: no space left for the module's data`);
    case "EMFILE":
    case "ENFILE": return new CapabilityError("unavailable", "the host is out of file descriptors; try again later");
    default: return err;
  }
}

/** A refusal of the quota (DataUsage.charge's answer) as the module's error. */
function refuseOver(why: string | undefined): void {
  if (why !== undefined) throw new CapabilityError("quota_exceeded", why);
}

const fdPath = (fd: number, name?: string): string => (name === undefined ? `/proc/self/fd/${fd}` : `/proc/self/fd/${fd}/${name}`);

const DIR_FLAGS = C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW;

let procChecked: Promise<boolean> | undefined;

/** /proc/self/fd must resolve to our own open directories, or nothing here is safe. */
function procAvailable(): Promise<boolean> {
  procChecked ??= (async () => {
    if (process.platform !== "linux" || C.O_NOFOLLOW === undefined || C.O_DIRECTORY === undefined) return false;
    let fh: FileHandle | undefined;
    try {
      fh = await open("/", DIR_FLAGS);
      const [viaProc, direct] = await Promise.all([lstat(`${fdPath(fh.fd)}/.`), lstat("/")]);
      return viaProc.ino === direct.ino && viaProc.dev === direct.dev;
    } catch {
      return false;
    } finally {
      await fh?.close();
    }
  })();
  const result = procChecked;
  // Only success is remembered: a failure (say, out of fds) is checked again next time.
  void result.then((ok) => { if (!ok && procChecked === result) procChecked = undefined; });
  return result;
}

/** Open the data directory itself: it must be a real directory, not a symlink to one. */
async function openRoot(dataDir: string): Promise<FileHandle> {
  if (!(await procAvailable())) {
    throw new CapabilityError("unavailable", "file access needs Linux with /proc mounted; it is not available on this host");
  }
  try {
    return await open(path.resolve(dataDir), DIR_FLAGS);
  } catch (err) {
    const code = (err as ErrnoLike | null)?.code;
    if (code === "ENOENT") throw new CapabilityError("unavailable", "the module's data directory does not exist");
    if (code === "ELOOP" || code === "ENOTDIR") {
      throw new CapabilityError("permission_denied", `the module's data directory is a symbolic link or not a directory; ${LINK_MSG}`);
    }
    throw err;
  }
}

/** Explain a failed directory open: ENOTDIR from O_DIRECTORY|O_NOFOLLOW also means "symlink". */
async function dirOpenError(err: unknown, parentFd: number, name: string, where: string): Promise<unknown> {
  const code = (err as ErrnoLike | null)?.code;
  if (code === "ENOTDIR" || code === "ELOOP") {
    // For the message only; the decision was already made by the kernel.
    const st = await lstat(fdPath(parentFd, name)).catch(() => null);
    if (st?.isSymbolicLink()) return new CapabilityError("permission_denied", `${JSON.stringify(where)} is a symbolic link; ${LINK_MSG}`);
    if (st && !st.isDirectory()) return new CapabilityError("invalid_params", `${JSON.stringify(where)} is not a directory`);
    // It was a symlink or a file when the kernel looked and has been replaced since.
    return new CapabilityError("permission_denied", `${JSON.stringify(where)} was replaced while being opened; ${LINK_MSG}`);
  }
  return mapError(err, where);
}

/**
 * Give a file or directory the host just created the owner of the directory it is in. Native
 * modules run as their own uid and own their data directory; what the host creates there on
 * their behalf (as root) must be theirs too, or they could not change it.
 */
async function adopt(fh: FileHandle, parentFd: number): Promise<void> {
  if (process.getuid?.() !== 0) return;
  const [st, parent] = await Promise.all([fh.stat(), stat(fdPath(parentFd))]);
  if (st.uid !== parent.uid || st.gid !== parent.gid) await fh.chown(parent.uid, parent.gid);
}

/** Open directory `parts` (all of them) below the data directory, one component at a time. */
async function openDirChain(dataDir: string, parts: readonly string[], create = false, usage?: DataUsage): Promise<FileHandle> {
  let cur = await openRoot(dataDir);
  try {
    for (let i = 0; i < parts.length; i++) {
      const name = parts[i]!;
      const where = parts.slice(0, i + 1).join("/");
      let next: FileHandle;
      try {
        next = await open(fdPath(cur.fd, name), DIR_FLAGS);
      } catch (err) {
        if (!create || (err as ErrnoLike | null)?.code !== "ENOENT") throw await dirOpenError(err, cur.fd, name, where);
        refuseOver(usage?.charge(0, 1, `creating the directory ${JSON.stringify(where)}`));
        try {
          await mkdir(fdPath(cur.fd, name), 0o700);
        } catch (mkErr) {
          usage?.adjust(0, -1);
          if ((mkErr as ErrnoLike | null)?.code !== "EEXIST") throw mapError(mkErr, where);
        }
        try {
          next = await open(fdPath(cur.fd, name), DIR_FLAGS);
        } catch (err2) {
          throw await dirOpenError(err2, cur.fd, name, where);
        }
        await adopt(next, cur.fd);
      }
      await cur.close();
      cur = next;
    }
    return cur;
  } catch (err) {
    await cur.close().catch(() => {});
    throw err;
  }
}

/** Run `fn` with the open parent directory of a non-root path and the final component's name. */
async function withParent<T>(dataDir: string, p: ParsedPath, fn: (parentFd: number, name: string) => Promise<T>): Promise<T> {
  const name = p.parts.at(-1);
  if (name === undefined) throw new CapabilityError("invalid_params", "the path names the data directory itself, not a file");
  const parent = await openDirChain(dataDir, p.parts.slice(0, -1));
  try {
    return await fn(parent.fd, name);
  } catch (err) {
    throw mapError(err, p.canonical);
  } finally {
    await parent.close();
  }
}

// ---------------------------------------------------------------------------------------
// Operations

// O_NONBLOCK: opening a FIFO a native module left behind must not hang a host thread.
const READ_FLAGS = C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK | C.O_NOCTTY;
const WRITE_FLAGS = C.O_WRONLY | C.O_NOFOLLOW | C.O_NONBLOCK | C.O_NOCTTY;

async function checkRegular(fh: FileHandle, where: string, verb: string): Promise<number> {
  const st = await fh.stat();
  if (st.isDirectory()) throw new CapabilityError("invalid_params", `${JSON.stringify(where)} is a directory`);
  if (!st.isFile()) throw new CapabilityError("invalid_params", `${JSON.stringify(where)} is not a regular file`);
  // A hard link may name a file outside the data directory; path logic cannot see that, so
  // files with more than one name are not read or written through this API.
  if (st.nlink > 1) {
    throw new CapabilityError("permission_denied", `${JSON.stringify(where)} has other hard links; files with several names are not ${verb}`);
  }
  return st.size;
}

export async function readFileAt(dataDir: string, p: ParsedPath): Promise<Uint8Array> {
  return withParent(dataDir, p, async (parentFd, name) => {
    const fh = await open(fdPath(parentFd, name), READ_FLAGS);
    try {
      const size = await checkRegular(fh, p.canonical, "read");
      if (size > MAX_FILE_BYTES) throw tooBig(p.canonical);
      // Read to EOF (the file may change meanwhile) but never past the limit.
      // One byte more than the size, so reaching EOF needs no copy when the file did not grow.
      let buf = new Uint8Array(Math.min(Math.max(size + 1, 4096), MAX_FILE_BYTES + 1));
      let len = 0;
      for (;;) {
        if (len === buf.length) {
          if (len > MAX_FILE_BYTES) throw tooBig(p.canonical);
          const grown = new Uint8Array(Math.min(buf.length * 2, MAX_FILE_BYTES + 1));
          grown.set(buf);
          buf = grown;
        }
        const { bytesRead } = await fh.read(buf, len, buf.length - len, len);
        if (bytesRead === 0) break;
        len += bytesRead;
      }
      if (len > MAX_FILE_BYTES) throw tooBig(p.canonical);
      return buf.slice(0, len);
    } finally {
      await fh.close();
    }
  });
}

const tooBig = (where: string): CapabilityError =>
  new CapabilityError("quota_exceeded", `${JSON.stringify(where)} is larger than ${MAX_FILE_BYTES} bytes, the most read_file returns`);

export async function writeFileAt(dataDir: string, p: ParsedPath, data: Uint8Array, append: boolean, usage?: DataUsage): Promise<number> {
  if (data.byteLength > MAX_FILE_BYTES) {
    throw new CapabilityError("invalid_params", `data is ${data.byteLength} bytes; files are limited to ${MAX_FILE_BYTES} bytes`);
  }
  const write = (): Promise<number> => withParent(dataDir, p, async (parentFd, name) => {
    // No O_TRUNC: the file is checked (regular, one name) before anything in it changes.
    const flags = WRITE_FLAGS | (append ? C.O_APPEND : 0);
    const { fh, created } = await openForWrite(parentFd, name, flags, data.byteLength, usage, p.canonical);
    // What the quota was charged for: the file's size once this write is done.
    let expected: number | undefined;
    try {
      const size = await checkRegular(fh, p.canonical, "written");
      await adopt(fh, parentFd);
      if (append && size + data.byteLength > MAX_FILE_BYTES) {
        throw new CapabilityError("quota_exceeded", `appending ${data.byteLength} bytes would make ${JSON.stringify(p.canonical)} larger than ${MAX_FILE_BYTES} bytes`);
      }
      const after = append ? size + data.byteLength : data.byteLength;
      // A new file was charged when it was created; an existing one is charged what it grows by.
      if (usage && !created) refuseOver(usage.charge(after - size, 0, `${append ? "appending" : "writing"} ${data.byteLength} bytes to ${JSON.stringify(p.canonical)}`));
      expected = usage ? after : undefined;
      let off = 0;
      while (off < data.byteLength) {
        const { bytesWritten } = await fh.write(data, off, data.byteLength - off, append ? null : off);
        off += bytesWritten;
      }
      // Overwrite, then cut to length: truncating to zero first makes ext4 flush on close,
      // which costs milliseconds per write. Either way a replacing write is not atomic.
      if (!append && data.byteLength < size) await fh.truncate(data.byteLength);
      return after;
    } catch (err) {
      // A write that failed part-way (ENOSPC, EFBIG) leaves what it left: count that.
      if (usage) {
        const now = await fh.stat().then((st) => st.size, () => undefined);
        if (now !== undefined) usage.adjust(now - (expected ?? (created ? data.byteLength : now)), 0);
      }
      throw err;
    } finally {
      await fh.close();
    }
  });
  return usage ? usage.run(write) : write();
}

/**
 * Open a file to write. Without a quota, O_CREAT as usual. With one, a file that does not exist
 * is charged an entry and `bytes` before it is created (O_EXCL, so `created` is true only when
 * this call made it): over the quota, nothing is created.
 */
async function openForWrite(parentFd: number, name: string, flags: number, bytes: number, usage: DataUsage | undefined, where: string): Promise<{ fh: FileHandle; created: boolean }> {
  const at = fdPath(parentFd, name);
  if (!usage) return { fh: await open(at, flags | C.O_CREAT, 0o600), created: false };
  for (let attempt = 0; ; attempt++) {
    try {
      return { fh: await open(at, flags), created: false };
    } catch (err) {
      if ((err as ErrnoLike | null)?.code !== "ENOENT" || attempt >= 2) throw err;
    }
    refuseOver(usage.charge(bytes, 1, `creating ${JSON.stringify(where)} with ${bytes} bytes`));
    try {
      return { fh: await open(at, flags | C.O_CREAT | C.O_EXCL, 0o600), created: true };
    } catch (err) {
      usage.adjust(-bytes, -1);
      // Created meanwhile (a native module writes there too): open the one that exists.
      if ((err as ErrnoLike | null)?.code !== "EEXIST") throw err;
    }
  }
}

/** Remove a file or symlink (the link itself), or an empty directory. */
export async function deleteAt(dataDir: string, p: ParsedPath, usage?: DataUsage): Promise<void> {
  if (p.parts.length === 0) throw new CapabilityError("invalid_params", "the data directory itself cannot be deleted");
  const remove = (): Promise<void> => withParent(dataDir, p, async (parentFd, name) => {
    // What it held, for the quota (read before it goes; the API's changes run one at a time).
    const st = usage ? await lstat(fdPath(parentFd, name)) : undefined;
    try {
      await unlink(fdPath(parentFd, name)); // never follows: removes a symlink, not its target
    } catch (err) {
      const code = (err as ErrnoLike | null)?.code;
      if (code !== "EISDIR") throw err;
      await rmdir(fdPath(parentFd, name)); // ENOTDIR if it was swapped for a symlink meanwhile
    }
    usage?.adjust(st?.isFile() ? -st.size : 0, -1);
  });
  return usage ? usage.run(remove) : remove();
}

/** mkdir -p, one anchored component at a time; each directory it creates is charged an entry. */
export async function mkdirAt(dataDir: string, p: ParsedPath, usage?: DataUsage): Promise<void> {
  const make = async (): Promise<void> => {
    const fh = await openDirChain(dataDir, p.parts, true, usage);
    await fh.close();
  };
  return usage ? usage.run(make) : make();
}

export type EntryType = "file" | "directory" | "symlink" | "other";

export async function listAt(dataDir: string, p: ParsedPath): Promise<Array<{ name: string; type: EntryType }>> {
  const fh = await openDirChain(dataDir, p.parts);
  try {
    // The fd stays open while the directory is read, so /proc/self/fd/<fd> is that directory.
    const dir = await opendir(fdPath(fh.fd), { bufferSize: 256 });
    const out: Array<{ name: string; type: EntryType }> = [];
    // The listing's work on the host's loop after the request's first turn (its entries, and
    // their sort: names of 200 characters sharing a prefix make each comparison read them all,
    // ~13 ms for 5,000) is charged to the module's host_cpu_ms_per_s (chain/slices.ts); before,
    // a module listing such a directory 4 at a time took ~590 ms of the host's CPU a second
    // against its share of 250.
    const charge = sliceAccount.getStore();
    let spent = 0;
    // for-await closes the Dir when the loop ends, normally or by a throw.
    for await (const e of dir) {
      const t0 = performance.now();
      if (out.length >= MAX_LIST_ENTRIES) {
        throw new CapabilityError("quota_exceeded", `${JSON.stringify(p.canonical)} has more than ${MAX_LIST_ENTRIES} entries, the most list_directory returns`);
      }
      const type: EntryType = e.isSymbolicLink() ? "symlink" : e.isDirectory() ? "directory" : e.isFile() ? "file" : "other";
      out.push({ name: e.name, type });
      spent += performance.now() - t0;
    }
    const t0 = performance.now();
    out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    charge?.(spent + performance.now() - t0);
    return out;
  } catch (err) {
    throw mapError(err, p.canonical);
  } finally {
    await fh.close();
  }
}

export interface FileMetadata {
  path: string;
  size: number;
  is_file: boolean;
  is_directory: boolean;
  /** Milliseconds since the epoch. */
  modified: number;
  /** Milliseconds since the epoch; null when the filesystem does not record it. */
  created: number | null;
}

export async function statAt(dataDir: string, p: ParsedPath): Promise<FileMetadata> {
  let st: Stats;
  if (p.parts.length === 0) {
    const root = await openRoot(dataDir);
    try {
      st = await root.stat();
    } finally {
      await root.close();
    }
  } else {
    // lstat does not follow the final component; the parent is reached through its fd.
    st = await withParent(dataDir, p, (parentFd, name) => lstat(fdPath(parentFd, name)));
    if (st.isSymbolicLink()) throw new CapabilityError("permission_denied", `${JSON.stringify(p.canonical)} is a symbolic link; ${LINK_MSG}`);
  }
  return {
    path: p.canonical,
    size: st.size,
    is_file: st.isFile(),
    is_directory: st.isDirectory(),
    modified: Math.floor(st.mtimeMs),
    created: st.birthtimeMs > 0 ? Math.floor(st.birthtimeMs) : null,
  };
}

// ---------------------------------------------------------------------------------------
// Measuring a data directory (the quota, fs-usage.ts)
//
// measureDataDir walks a directory the way fs-path.ts resolves paths: every directory is opened
// through its parent's fd with O_NOFOLLOW, so a symbolic link is counted as an entry and never
// followed, and a directory swapped for a link mid-walk is skipped, not entered. The walk is
// bounded: it stops as soon as the count passes a limit (a directory with more entries than
// max_data_files is over it whatever the rest holds), and does not go deeper than
// MAX_SCAN_DEPTH directories (a deeper tree is over the quota: it cannot be measured with a
// bounded number of open fds); what it cannot read (a module running as the host's uid can
// chmod 000 a directory) is over the quota too, never counted as empty. Its system calls are
// synchronous (a readdir batch of 256 entries, an lstat per file: microseconds each on a local
// disk; one fs/promises call per file cost ~5 times the CPU, see bench/data-scan.ts), in slices
// of at most SLICE_MS on the loop.

/** The walk's longest stretch on the host's loop before it yields (its calls are synchronous). */
const SLICE_MS = 2;

/**
 * Measure `dir` without following symbolic links, stopping once over `q` (then `over` says why,
 * in the operator's words for `module`). A missing directory holds nothing.
 */
export async function measureDataDir(dir: string, q: DataQuota, module: string): Promise<Measured> {
  const m: Measured = { bytes: 0, entries: 0 };
  let root: number;
  try {
    root = openSync(path.resolve(dir), DIR_FLAGS);
  } catch (err) {
    const code = (err as ErrnoLike | null)?.code;
    if (code === "ENOENT") return m;
    if (code === "EMFILE" || code === "ENFILE") throw err; // the host's trouble: measured next time
    // Made unreadable (chmod 000 by a module running as the host's uid): over, not empty.
    m.over = "unreadable";
    m.over = overMessage(q, m, module);
    return m;
  }
  const slice = { start: performance.now() };
  try {
    await walk(root, 1, q, m, slice);
  } finally {
    closeSync(root);
  }
  const why = overMessage(q, m, module);
  if (why !== undefined) m.over = why;
  return m;
}

/** Let the loop run when this turn has taken SLICE_MS. */
async function yieldIfDue(slice: { start: number }): Promise<void> {
  if (performance.now() - slice.start < SLICE_MS) return;
  await new Promise((r) => setImmediate(r));
  slice.start = performance.now();
}

/** Vanished, or swapped for a link or a file, since it was listed: it holds nothing now. */
const GONE = new Set(["ENOENT", "ENOTDIR", "ELOOP"]);

async function walk(fd: number, depth: number, q: DataQuota, m: Measured, slice: { start: number }): Promise<void> {
  const subdirs: string[] = [];
  const dir = opendirSync(fdPath(fd), { bufferSize: 256 });
  try {
    for (let e = dir.readSync(); e !== null; e = dir.readSync()) {
      m.entries++;
      // A filesystem without d_type lists entries of no type: lstat tells what they are.
      const known = e.isDirectory() || e.isSymbolicLink() || e.isFIFO() || e.isSocket() || e.isCharacterDevice() || e.isBlockDevice();
      if (e.isFile() || !known) {
        let st: Stats | undefined;
        try {
          st = lstatSync(fdPath(fd, e.name));
        } catch (err) {
          if (GONE.has((err as ErrnoLike).code as string)) continue;
          // What the host cannot look at, it cannot count: over the quota, not free.
          m.over = "unreadable";
          return;
        }
        if (st.isFile()) m.bytes += st.size;
        else if (st.isDirectory()) subdirs.push(e.name);
      } else if (e.isDirectory()) {
        subdirs.push(e.name);
      }
      if (isOver(q, m)) return;
      await yieldIfDue(slice);
    }
  } finally {
    dir.closeSync();
  }
  for (const name of subdirs) {
    if (depth >= MAX_SCAN_DEPTH) {
      m.over = "depth";
      return;
    }
    let sub: number;
    try {
      sub = openSync(fdPath(fd, name), DIR_FLAGS);
    } catch (err) {
      if (GONE.has((err as ErrnoLike).code as string)) continue; // removed, or swapped for a link or a file: not entered
      m.over = "unreadable";
      return;
    }
    try {
      await walk(sub, depth + 1, q, m, slice);
    } finally {
      closeSync(sub);
    }
    if (isOver(q, m)) return;
  }
}
