// The data directory quota of a module (max_data_bytes, max_data_files): its directory is
// measured before each start, and a module over its quota does not start; the file API keeps
// the count exact from there (capabilities/fs-usage.ts). A native module writes there directly:
// where it gets a data volume (runtime/sandbox/volume.ts, data_volume), the kernel holds it to
// max_data_bytes and (within the rounding of its inode tables, checked here each second from the
// file system's counts) max_data_files, and nothing below applies. Without one (scan mode),
// while it runs its directory is measured again, and a module found over its quota is
// stopped with a crash reason that names the limit (the restart policy applies; a restart finds
// it over its quota and fails, until the directory is cleaned).
//
// When it is measured: the kernel tells the host of a change in the directory itself (inotify,
// one watch per module, closed at its first event so that a module writing without pause costs
// the host one event per scan, not one per write), and that change is measured as soon as the
// last scan allows; the whole tree is also measured periodically. Both wait for the last scan's
// cost: a scan for a change comes CHANGE_COST_FACTOR x the last scan's time after it (at least
// WATCH_MIN_GAP_MS), so scans take at most ~5% of the loop for a module that writes all the
// time; the periodic scan comes PERIODIC_COST_FACTOR x the last scan's time after it (from
// MIN_SCAN_MS to DATA_SCAN_MS: ~1% for a quiet module). Between two scans a native module may
// pass its quota by what it writes in that time: for a change at the top of its directory until
// the next scan (0.25 s, or 20 x the last scan's time, after the last one: 1.6 s at 10,000
// files; at most 2 s, however loaded the machine); for a change only deeper down, until the
// periodic scan (1 to 10 s). Each file is at
// most file_size_mb (RLIMIT_FSIZE).

import { existsSync, type FSWatcher, watch } from "node:fs";
import { mkdir } from "node:fs/promises";
import { performance } from "node:perf_hooks";
import path from "node:path";
import { DataUsage, type DataQuota } from "../capabilities/fs-usage.ts";
import { measureDataDir } from "../capabilities/fs-path.ts";
import { sandboxModeFor, type Limits, type HostConfig } from "./config.ts";
import { mountVolume, VOLUMES_DIR, volumeTools, volumeUsage, type MountedVolume } from "../runtime/sandbox/volume.ts";
import { ModhostError } from "./errors.ts";
import type { SourceLogger } from "./log.ts";
import type { HostSession } from "./session.ts";
import type { ModuleProcess } from "../runtime/process.ts";

/** The longest time between two periodic scans of a running native module's data directory. */
export const DATA_SCAN_MS = 10_000;
/** The shortest time between two periodic scans (a small directory, cheap to scan). */
const MIN_SCAN_MS = 1_000;
/** The shortest time from the end of a scan to a scan triggered by a change the watch saw. */
const WATCH_MIN_GAP_MS = 250;
/**
 * The longest: the scan's wall time, which the gap follows, grows with the machine's load, not
 * only with the directory (a scan reads at most max_data_files entries: ~80 ms of CPU at 10,000).
 */
const WATCH_MAX_GAP_MS = 2_000;
/** A scan for a change the watch saw comes at least this many times the last scan's (wall) time after it. */
const CHANGE_COST_FACTOR = 20;
/** The periodic scan comes at least this many times the last scan's (wall) time after it. */
const PERIODIC_COST_FACTOR = 100;

const quotaOf = (limits: Pick<Limits, "max_data_bytes" | "max_data_files">): DataQuota => ({ maxBytes: limits.max_data_bytes, maxEntries: limits.max_data_files });

export interface OpenedDataDir {
  dataDir: string;
  usage: DataUsage;
  /** "volume": the kernel holds it to its quota (runtime/sandbox/volume.ts); "scan": the host measures it. */
  mode: "volume" | "scan";
  /** Unmount its volume (once; nothing in scan mode): after its process is gone. */
  release(): Promise<void>;
}

/**
 * A data directory's usage against its quota, as `modhost list` and /metrics show it: bytes and
 * files (entries: files, directories, links) now, and the quota's max_data_bytes (0: none) and
 * max_data_files. A volume's figures are the file system's counts, read each second while its
 * module runs (bytes in blocks of 4 KiB, its directories included); a scanned directory's are
 * the last scan's, plus what the file API changed since (exact for TypeScript modules).
 */
export interface DataStatus {
  mode: "volume" | "scan";
  bytes: number;
  files: number;
  max_bytes: number;
  max_files: number;
}

export const dataStatus = (d: OpenedDataDir): DataStatus => ({
  mode: d.mode, bytes: d.usage.bytes, files: d.usage.entries, max_bytes: d.usage.quota.maxBytes, max_files: d.usage.quota.maxEntries,
});

/** What native modules' data directories get on this machine, for the startup log and `modhost check`. */
export async function describeDataVolumes(root: string): Promise<{ volumes: boolean; text: string }> {
  const why = await volumeTools();
  return typeof why === "string"
    ? { volumes: false, text: `data directories: no volumes on this machine (${why}): native modules' directories are measured by scans, which a module may overshoot between two` }
    : { volumes: true, text: `data directories: each native module gets a loop-mounted ext4 volume sized to max_data_bytes (${path.join(root, VOLUMES_DIR)}); the kernel refuses writes past it (data_volume = "auto")` };
}

/** Why a module gets no volume (null: it gets one, if the machine can). */
function noVolume(config: HostConfig, limits: Limits, runtime: string): string | null {
  if (limits.data_volume === "scan") return 'data_volume = "scan"';
  if (runtime !== "native") return "a TypeScript module writes through the file API, which counts exactly";
  if (limits.max_data_bytes === 0) return "max_data_bytes = 0 (no quota)";
  if (sandboxModeFor(config, "native") === "off") return 'the sandbox is off (mode "off")';
  return null;
}

/**
 * Open the module's data directory: mount its volume where it gets one, else create the
 * directory; then measure it. Over its quota, the start fails (quota_exceeded).
 */
export async function openDataDir(config: HostConfig, name: string, limits: Limits, runtime: string, log: SourceLogger): Promise<OpenedDataDir> {
  const root = config.modules.data_dir;
  const dataDir = path.join(root, name);
  const quota = quotaOf(limits);
  const skip = noVolume(config, limits, runtime);
  const unavailable = skip === null ? await volumeTools() : null;
  if (skip === null && typeof unavailable !== "string") {
    let volume: MountedVolume | undefined;
    try {
      volume = await mountVolume(root, name, quota);
    } catch (err) {
      // A module that has a volume keeps it: its data is there, not in the directory beneath.
      const has = existsSync(path.join(root, VOLUMES_DIR, `${name}.ext4`));
      if (limits.data_volume === "volume" || has) {
        const fix = has
          ? `its data is in ${path.join(root, VOLUMES_DIR, `${name}.ext4`)}, so it does not fall back to scans: fix the cause and start it again (the operator guide says how to inspect or move a volume)`
          : `fix that, or set data_volume = "auto" in [modules.limits.${name}] to fall back to scans`;
        throw new ModhostError("volume_unavailable", `its data volume cannot be mounted: ${(err as Error).message}`, fix);
      }
      log.warn(`${name}: its data volume cannot be mounted (${(err as Error).message}); its data directory is measured by scans instead`);
    }
    if (volume) {
      if (volume.notes.length > 0) log.info(`${name}: data volume ${volume.image}: ${volume.notes.join("; ")}`);
      const m = await volumeUsage(dataDir);
      const over = overOf(m, quota, name);
      if (over) {
        await volume.release();
        throw new ModhostError("quota_exceeded", `its data directory ${dataDir} ${over}; the module does not start while it is over its quota`);
      }
      return { dataDir, usage: new DataUsage(name, quota, m.bytes, m.entries, () => volumeUsage(dataDir)), mode: "volume", release: () => volume.release() };
    }
  } else if (limits.data_volume === "volume") {
    throw new ModhostError("volume_unavailable", `it gets no data volume: ${skip ?? (unavailable as string)}`, `set data_volume = "auto" in [modules.limits.${name}] to accept scans`);
  } else if (typeof unavailable === "string" && runtime === "native") {
    log.info(`${name}: no data volume (${unavailable}): its data directory is measured by scans, which it may overshoot between two (docs/security.md)`);
  }
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const m = await measureDataDir(dataDir, quota, name);
  if (m.over) throw new ModhostError("quota_exceeded", `its data directory ${dataDir} ${m.over}; the module does not start while it is over its quota`);
  return { dataDir, usage: new DataUsage(name, quota, m.bytes, m.entries), mode: "scan", release: async () => {} };
}

/** A volume's usage against the quota (its blocks, its inodes), or undefined. */
function overOf(m: { bytes: number; entries: number }, q: DataQuota, name: string): string | undefined {
  const fix = (key: string) => `delete what it no longer needs (its volume can be mounted while it is unloaded: docs/operator-guide.md), or raise ${key} in [modules.limits.${name}]`;
  if (m.entries > q.maxEntries) return `holds ${m.entries} entries, over max_data_files = ${q.maxEntries}; ${fix("max_data_files")}`;
  if (q.maxBytes > 0 && m.bytes > Math.floor(q.maxBytes / 4096) * 4096) return `holds ${m.bytes} bytes in blocks of 4 KiB, over max_data_bytes = ${q.maxBytes}; ${fix("max_data_bytes")}`;
  return undefined;
}

/** How often a running module's volume is read (statfs: O(1), a few microseconds). */
const VOLUME_CHECK_MS = 1_000;

/**
 * While a native module with a volume runs: its usage is read from the file system's counts
 * (for metrics and the file API), and a module over max_data_files (which the kernel's inode
 * count may pass by the rounding of its inode tables) is stopped. Its bytes the kernel holds.
 * Nothing walks the directory: a statfs a second, whatever it holds.
 */
export function watchVolume(rec: Watched, proc: ModuleProcess<HostSession>, dataDir: string, usage: DataUsage, log: SourceLogger): void {
  const timer = setInterval(() => {
    if (rec.process !== proc || proc.hasExited) return clearInterval(timer);
    void volumeUsage(dataDir).then((m) => {
      usage.reset(m);
      // Entries only: its bytes the kernel holds (what the file API writes for it, as root, the API's own count does).
      const over = overOf({ bytes: 0, entries: m.entries }, usage.quota, rec.name);
      if (!over || rec.process !== proc || proc.hasExited) return;
      rec.killReason = `over its data quota: its data directory ${over}`;
      log.error(`${rec.name} is over its data quota, stopping it: its data directory ${over}`);
      proc.session.closeError ??= new Error(rec.killReason);
      proc.kill();
    }, () => undefined);
  }, VOLUME_CHECK_MS);
  timer.unref();
  void proc.exited.then(() => clearInterval(timer));
}

interface Watched {
  name: string;
  state: string;
  process?: ModuleProcess<HostSession>;
  killReason?: string;
}

/**
 * Measure a running native module's data directory while it runs (one scan at a time, holding
 * the file API's lock so that its count and the scan agree): when the watch on the directory
 * sees a change, and periodically (see the top of this file). Over its quota, the module is
 * stopped. Ends with the process.
 */
export function watchDataDir(rec: Watched, proc: ModuleProcess<HostSession>, dataDir: string, usage: DataUsage, log: SourceLogger, every = DATA_SCAN_MS): void {
  let timer: NodeJS.Timeout | undefined;
  let due = Infinity;
  let watcher: FSWatcher | undefined;
  let scanning = false;
  let changed = false;
  let stopped = false;
  let lastScanMs = 0;
  let lastEnd = performance.now();
  const gone = () => rec.process !== proc || rec.state !== "running" || proc.hasExited;
  const stop = () => {
    stopped = true;
    clearTimeout(timer);
    watcher?.close();
    watcher = undefined;
  };
  /** Scan in `delay` ms, unless a scan is already due sooner. */
  const schedule = (delay: number) => {
    const at = performance.now() + delay;
    if (timer && at >= due) return;
    clearTimeout(timer);
    due = at;
    timer = setTimeout(scan, Math.max(0, delay));
    timer.unref();
  };
  const changeGap = () => Math.max(0, lastEnd + Math.min(WATCH_MAX_GAP_MS, Math.max(WATCH_MIN_GAP_MS, CHANGE_COST_FACTOR * lastScanMs)) - performance.now());
  /** Watch the directory until its first change (then closed: one event per scan at most). */
  const arm = () => {
    if (stopped || watcher) return;
    try {
      watcher = watch(dataDir, { persistent: false }, () => {
        watcher?.close();
        watcher = undefined;
        if (scanning) changed = true;
        else schedule(changeGap());
      });
      watcher.on("error", () => {
        watcher?.close();
        watcher = undefined;
      });
    } catch {
      // No watch (the directory is gone, or no inotify watches are left): the periodic scans remain.
      watcher = undefined;
    }
  };
  const scan = () => {
    timer = undefined;
    due = Infinity;
    if (stopped) return;
    if (gone()) return stop();
    if (scanning) return; // the running scan schedules the next one
    scanning = true;
    changed = false;
    const start = performance.now();
    void usage.lock.run(async () => {
      const m = await measureDataDir(dataDir, usage.quota, rec.name);
      usage.reset(m);
      if (!m.over || rec.process !== proc || proc.hasExited) return;
      rec.killReason = `over its data quota: its data directory ${m.over}`;
      log.error(`${rec.name} is over its data quota, stopping it: its data directory ${m.over}`);
      proc.session.closeError ??= new Error(rec.killReason);
      proc.kill();
    }).catch((err: unknown) => log.warn(`could not measure ${rec.name}'s data directory (${(err as Error).message}); trying again at the next scan (at most ${every / 1000} s)`))
      .finally(() => {
        scanning = false;
        lastEnd = performance.now();
        lastScanMs = lastEnd - start;
        if (stopped || gone()) return stop();
        arm();
        schedule(changed ? changeGap() : Math.min(every, Math.max(MIN_SCAN_MS, PERIODIC_COST_FACTOR * lastScanMs)));
      });
  };
  arm();
  schedule(Math.min(every, MIN_SCAN_MS));
  void proc.exited.then(stop);
}
