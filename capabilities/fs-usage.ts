// A module's data directory quota: the bytes of its regular files (their sizes) and the number
// of its entries (files, directories, symbolic links, anything else), against max_data_bytes and
// max_data_files in [modules.limits.NAME].
//
// DataUsage is the count the file API keeps exact: measured once when the module starts, then
// charged before every write, append and mkdir (a change that would pass a limit is refused
// with quota_exceeded and nothing is written) and credited by deletes. The API's changes run one
// at a time per module (its lock), so two of them never both pass a check the sum would fail.
//
// measureDataDir walks a directory the way fs-path.ts resolves paths: every directory is opened
// through its parent's fd with O_NOFOLLOW, so a symbolic link is counted as an entry and never
// followed, and a directory swapped for a link mid-walk is skipped, not entered. The walk is
// bounded: it stops as soon as the count passes a limit (a directory with more entries than
// max_data_files is over it whatever the rest holds), and does not go deeper than
// MAX_SCAN_DEPTH directories (a deeper tree is over the quota: it cannot be measured with a
// bounded number of open fds). Each step is one readdir batch or one lstat, run on libuv's
// threads; the host's loop only adds numbers.

import { lstat, open, opendir } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import path from "node:path";
import { Mutex } from "../storage/mutex.ts";
import { CapabilityError } from "./types.ts";
import { DIR_FLAGS, fdPath } from "./fs-path.ts";

/** The quota; 0 bytes = no byte limit. */
export interface DataQuota {
  /** max_data_bytes: sum of the sizes of its regular files (0 = none). */
  readonly maxBytes: number;
  /** max_data_files: entries below the data directory (files, directories, links, others). */
  readonly maxEntries: number;
}

/** Deepest directory the walk enters; a deeper tree is over the quota. */
export const MAX_SCAN_DEPTH = 64;

export interface Measured {
  bytes: number;
  entries: number;
  /** Why the directory is over its quota (the walk stopped there); undefined when within it. */
  over?: string;
}

const fix = (module: string, key: string): string => `delete what it no longer needs, or raise ${key} in [modules.limits.${module}]`;

/** What a measurement says of a directory over its quota, for the operator. */
function overMessage(q: DataQuota, m: Measured, module: string): string | undefined {
  if (m.over === "depth") return `is nested deeper than ${MAX_SCAN_DEPTH} directories, which the host cannot measure; flatten it`;
  if (m.entries > q.maxEntries) return `holds more than max_data_files = ${q.maxEntries} entries; ${fix(module, "max_data_files")}`;
  if (q.maxBytes > 0 && m.bytes > q.maxBytes) return `holds at least ${m.bytes} bytes, over max_data_bytes = ${q.maxBytes}; ${fix(module, "max_data_bytes")}`;
  return undefined;
}

interface Errno { code?: unknown }

/**
 * Measure `dir` without following symbolic links, stopping once over `q` (then `over` says why,
 * in the operator's words for `module`). A missing directory holds nothing.
 */
export async function measureDataDir(dir: string, q: DataQuota, module: string): Promise<Measured> {
  const m: Measured = { bytes: 0, entries: 0 };
  let root: FileHandle;
  try {
    root = await open(path.resolve(dir), DIR_FLAGS);
  } catch (err) {
    if ((err as Errno).code === "ENOENT") return m;
    throw err;
  }
  try {
    await walk(root, 1, q, m);
  } finally {
    await root.close();
  }
  if (m.over !== undefined || m.entries > q.maxEntries || (q.maxBytes > 0 && m.bytes > q.maxBytes)) m.over = overMessage(q, m, module);
  return m;
}

const isOver = (q: DataQuota, m: Measured): boolean => m.over !== undefined || m.entries > q.maxEntries || (q.maxBytes > 0 && m.bytes > q.maxBytes);

async function walk(dir: FileHandle, depth: number, q: DataQuota, m: Measured): Promise<void> {
  const subdirs: string[] = [];
  // for-await closes the Dir when the loop ends, normally or by return.
  for await (const e of await opendir(fdPath(dir.fd), { bufferSize: 256 })) {
    m.entries++;
    if (e.isFile()) {
      // Gone or replaced since readdir: it holds nothing now.
      const st = await lstat(fdPath(dir.fd, e.name)).catch(() => null);
      if (st?.isFile()) m.bytes += st.size;
    } else if (e.isDirectory()) {
      subdirs.push(e.name);
    }
    if (isOver(q, m)) return;
  }
  for (const name of subdirs) {
    if (depth >= MAX_SCAN_DEPTH) {
      m.over = "depth";
      return;
    }
    let sub: FileHandle;
    try {
      sub = await open(fdPath(dir.fd, name), DIR_FLAGS);
    } catch {
      continue; // removed, or swapped for a link or a file: not entered
    }
    try {
      await walk(sub, depth + 1, q, m);
    } finally {
      await sub.close();
    }
    if (isOver(q, m)) return;
  }
}

/** The exact usage of one module's data directory, kept by the file API (see the top of this file). */
export class DataUsage {
  /** The API's changes (and a rescan) run one at a time. */
  readonly lock = new Mutex();

  constructor(
    readonly module: string,
    readonly quota: DataQuota,
    private bytesNow: number,
    private entriesNow: number,
  ) {}

  get bytes(): number { return this.bytesNow; }
  get entries(): number { return this.entriesNow; }

  /**
   * Charge `bytes` and `entries` for `what` (e.g. "writing 10 bytes to \"a\""), or refuse with
   * quota_exceeded, changing nothing, when that would pass a limit.
   */
  charge(bytes: number, entries: number, what: string): void {
    const q = this.quota;
    if (entries > 0 && this.entriesNow + entries > q.maxEntries) {
      throw new CapabilityError("quota_exceeded", `${what} would make ${this.entriesNow + entries} entries in the module's data directory, over max_data_files = ${q.maxEntries} (it holds ${this.entriesNow}); ${fix(this.module, "max_data_files")}`);
    }
    if (bytes > 0 && q.maxBytes > 0 && this.bytesNow + bytes > q.maxBytes) {
      throw new CapabilityError("quota_exceeded", `${what} would make ${this.bytesNow + bytes} bytes in the module's data directory, over max_data_bytes = ${q.maxBytes} (it holds ${this.bytesNow}); ${fix(this.module, "max_data_bytes")}`);
    }
    this.adjust(bytes, entries);
  }

  /** Record a change already made (a delete, or what a failed write really left). */
  adjust(bytes: number, entries: number): void {
    this.bytesNow = Math.max(0, this.bytesNow + bytes);
    this.entriesNow = Math.max(0, this.entriesNow + entries);
  }

  /** Replace the count by a new measurement (a native module writes without the API). */
  reset(m: Measured): void {
    this.bytesNow = m.bytes;
    this.entriesNow = m.entries;
  }
}
