// The data directory quota of a module (max_data_bytes, max_data_files): its directory is
// measured before each start, and a module over its quota does not start; the file API keeps
// the count exact from there (capabilities/fs-usage.ts). A native module writes there directly,
// so while it runs its directory is measured again every DATA_SCAN_MS, and a module found over
// its quota is stopped with a crash reason that names the limit (the restart policy applies;
// a restart finds it over its quota and fails, until the directory is cleaned). Between two
// scans a native module may pass its quota by what it writes in DATA_SCAN_MS (each file at most
// file_size_mb, RLIMIT_FSIZE).

import { mkdir } from "node:fs/promises";
import path from "node:path";
import { DataUsage, type DataQuota } from "../capabilities/fs-usage.ts";
import { measureDataDir } from "../capabilities/fs-path.ts";
import type { Limits } from "./config.ts";
import { ModhostError } from "./errors.ts";
import type { SourceLogger } from "./log.ts";
import type { HostSession } from "./session.ts";
import type { ModuleProcess } from "../runtime/process.ts";

/** How often a running native module's data directory is measured. */
export const DATA_SCAN_MS = 10_000;

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
 * Measure a running native module's data directory every DATA_SCAN_MS (one scan at a time,
 * holding the file API's lock so that its count and the scan agree); over its quota, the module
 * is stopped. Ends with the process.
 */
export function watchDataDir(rec: Watched, proc: ModuleProcess<HostSession>, dataDir: string, usage: DataUsage, log: SourceLogger, every = DATA_SCAN_MS): void {
  let scanning = false;
  const timer = setInterval(() => {
    if (rec.process !== proc || rec.state !== "running" || proc.hasExited) {
      clearInterval(timer);
      return;
    }
    if (scanning) return;
    scanning = true;
    void usage.lock.run(async () => {
      const m = await measureDataDir(dataDir, usage.quota, rec.name);
      usage.reset(m);
      if (!m.over || rec.process !== proc || proc.hasExited) return;
      rec.killReason = `over its data quota: its data directory ${m.over}`;
      log.error(`${rec.name} is over its data quota, stopping it: its data directory ${m.over}`);
      proc.session.closeError ??= new Error(rec.killReason);
      proc.kill();
    }).catch((err: unknown) => log.warn(`could not measure ${rec.name}'s data directory (${(err as Error).message}); trying again in ${every / 1000} s`))
      .finally(() => (scanning = false));
  }, every);
  timer.unref();
  void proc.exited.then(() => clearInterval(timer));
}
