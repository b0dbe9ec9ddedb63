// A module's data directory quota: the bytes of its regular files (their sizes) and the number
// of its entries (files, directories, symbolic links, anything else), against max_data_bytes and
// max_data_files in [modules.limits.NAME].
//
// DataUsage is the count the file API keeps exact: measured once when the module starts, then
// charged before every write, append and mkdir (a change that would pass a limit is refused
// with quota_exceeded and nothing is written) and credited by deletes. The API's changes run one
// at a time per module (its lock), so two of them never both pass a check the sum would fail.
//
// measureDataDir (fs-path.ts, with the rest of the module's file I/O) walks the directory;
// overMessage says in the operator's words why a measurement is over the quota.

import { Mutex } from "../storage/mutex.ts";

/** The quota; 0 bytes = no byte limit. */
export interface DataQuota {
  /** max_data_bytes: sum of the sizes of its regular files (0 = none). */
  readonly maxBytes: number;
  /** max_data_files: entries below the data directory (files, directories, links, others). */
  readonly maxEntries: number;
}

/** Deepest directory the walk enters; a deeper tree is over the quota. */
export const MAX_SCAN_DEPTH = 64;

/** Whether a measurement is over the quota (or the walk gave up: too deep). */
export const isOver = (q: DataQuota, m: Measured): boolean => m.over !== undefined || m.entries > q.maxEntries || (q.maxBytes > 0 && m.bytes > q.maxBytes);

export interface Measured {
  bytes: number;
  entries: number;
  /** Why the directory is over its quota (the walk stopped there); undefined when within it. */
  over?: string;
}

const fix = (module: string, key: string): string => `delete what it no longer needs, or raise ${key} in [modules.limits.${module}]`;

/** What a measurement says of a directory over its quota, for the operator. */
export function overMessage(q: DataQuota, m: Measured, module: string): string | undefined {
  if (!isOver(q, m)) return undefined;
  if (m.over === "depth") return `is nested deeper than ${MAX_SCAN_DEPTH} directories, which the host cannot measure; flatten it`;
  if (m.over === "unreadable") return "holds a file or directory the host cannot read (its permissions were changed), so it cannot be measured; give the host read access back (chmod u+rwx on its directories) or delete it";
  if (m.entries > q.maxEntries) return `holds more than max_data_files = ${q.maxEntries} entries; ${fix(module, "max_data_files")}`;
  if (q.maxBytes > 0 && m.bytes > q.maxBytes) return `holds at least ${m.bytes} bytes, over max_data_bytes = ${q.maxBytes}; ${fix(module, "max_data_bytes")}`;
  return undefined;
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
    /**
     * A fresh measurement before each change, where one is cheap and the module also writes
     * without the API (a data volume: statfs, O(1)); without it the count is the API's own.
     */
    private readonly measure?: () => Promise<Measured>,
  ) {}

  /**
   * Run one of the API's changes: one at a time, and, where the module also writes directly,
   * against a count measured just before (not the last second's), so that the API, which
   * writes as root past the kernel's reserve, passes the quota by at most its own change.
   */
  run<T>(change: () => Promise<T>): Promise<T> {
    return this.lock.run(async () => {
      if (this.measure) this.reset(await this.measure());
      return change();
    });
  }

  get bytes(): number { return this.bytesNow; }
  get entries(): number { return this.entriesNow; }

  /**
   * Charge `bytes` and `entries` for `what` (e.g. "writing 10 bytes to \"a\""); when that would
   * pass a limit, change nothing and answer why (the caller refuses with quota_exceeded).
   */
  charge(bytes: number, entries: number, what: string): string | undefined {
    const q = this.quota;
    if (entries > 0 && this.entriesNow + entries > q.maxEntries) {
      return `${what} would make ${this.entriesNow + entries} entries in the module's data directory, over max_data_files = ${q.maxEntries} (it holds ${this.entriesNow}); ${fix(this.module, "max_data_files")}`;
    }
    if (bytes > 0 && q.maxBytes > 0 && this.bytesNow + bytes > q.maxBytes) {
      return `${what} would make ${this.bytesNow + bytes} bytes in the module's data directory, over max_data_bytes = ${q.maxBytes} (it holds ${this.bytesNow}); ${fix(this.module, "max_data_bytes")}`;
    }
    this.adjust(bytes, entries);
    return undefined;
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
