// The data directory quota of a module (max_data_bytes, max_data_files): its directory is
// measured before each start, and a module over its quota does not start; the file API keeps
// the count exact from there (capabilities/fs-usage.ts). A native module writes there directly,
// so while it runs its directory is measured again, and a module found over its quota is
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

import { type FSWatcher, watch } from "node:fs";
import { mkdir } from "node:fs/promises";
import { performance } from "node:perf_hooks";
import path from "node:path";
import { DataUsage, type DataQuota } from "../capabilities/fs-usage.ts";
import { measureDataDir } from "../capabilities/fs-path.ts";
import type { Limits } from "./config.ts";
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

/** Create the module's data directory if needed and measure it: over its quota, the start fails (quota_exceeded). */
export async function openDataDir(root: string, name: string, limits: Limits): Promise<{ dataDir: string; usage: DataUsage }> {
  const dataDir = path.join(root, name);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const quota = quotaOf(limits);
  const m = await measureDataDir(dataDir, quota, name);
  if (m.over) throw new ModhostError("quota_exceeded", `its data directory ${dataDir} ${m.over}; the module does not start while it is over its quota`);
  return { dataDir, usage: new DataUsage(name, quota, m.bytes, m.entries) };
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
