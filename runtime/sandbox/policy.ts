// What the sandbox of one module process is asked to enforce (a native module, or the isolate
// host of a TypeScript module), and the levels it can deliver.

import type { CgroupLimits } from "./cgroup.ts";

/**
 * "full": bubblewrap (namespaces, read-only system view, private /tmp) + seccomp + rlimits +
 *   a real unprivileged uid with no capabilities + a cgroup of its own (memory, tasks, CPU).
 * "degraded": something less (util-linux fallback, or bubblewrap without a uid drop when the
 *   host is not root); the notes of the result say what is missing.
 * "none": not sandboxed at all (only when the operator opted out).
 */
export type SandboxLevel = "full" | "degraded" | "none";

/**
 * How to choose: "auto" = the best available, refusing when that is "none"; "full" = refuse
 * unless full; "degraded" = use the util-linux fallback even where bubblewrap exists (tests,
 * debugging); "off" = no sandbox, the operator's explicit opt-out.
 */
export type SandboxMode = "auto" | "full" | "degraded" | "off";

/** Resource limits (setrlimit) of a module's processes. 0 = no limit. */
export interface SandboxLimits {
  /** RLIMIT_AS: virtual address space per process. */
  address_space_mb: number;
  /** RLIMIT_NOFILE. */
  open_files: number;
  /** RLIMIT_NPROC: processes and threads of the module's uid, all together. */
  processes: number;
  /** RLIMIT_CPU: CPU seconds per process over its whole life (SIGXCPU, then SIGKILL a second later). */
  cpu_seconds: number;
  /** RLIMIT_FSIZE: largest file the module may write. */
  file_size_mb: number;
}

export const DEFAULT_SANDBOX_LIMITS: Readonly<SandboxLimits> = Object.freeze({
  address_space_mb: 2048,
  open_files: 1024,
  processes: 128,
  cpu_seconds: 0,
  file_size_mb: 1024,
});

/**
 * The cgroup limits of a module (cgroup.ts) unless the operator says otherwise: half a GB for
 * all its processes together, the normal CPU weight, and at most one core, so that on a
 * two-core machine no module can take the whole CPU from the host and the others.
 * (`processes`, the pids.max, is DEFAULT_SANDBOX_LIMITS.processes.)
 */
export const DEFAULT_CGROUP_LIMITS: Readonly<CgroupLimits> = Object.freeze({
  memory_mb: 512,
  processes: 128,
  cpu_weight: 100,
  cpu_max_percent: 100,
});

export interface SandboxPolicy {
  /**
   * The module's data directory: the only writable place (made owned by uid/gid). null: no
   * writable directory at all (isolate hosts: the host serves a TypeScript module's files);
   * the working directory is then "/".
   */
  dataDir: string | null;
  /** The module's directory, mounted read-only; null: none. */
  moduleDir: string | null;
  /** The program to run (absolute): inside moduleDir, inside a readOnly path, or a system one (/usr/bin/node). */
  binary: string;
  /**
   * More files or directories the process needs, mounted read-only at the same paths (isolate
   * hosts: the worker script, the packages it loads, the module's compiled bundle). Each must
   * exist and be readable by uid/gid.
   */
  readOnly?: string[];
  /** Share the host's network (the module holds network_access). */
  network: boolean;
  limits: SandboxLimits;
  /** The unprivileged host uid/gid the module runs as (UidTable in uids.ts allocates them). */
  uid: number;
  gid: number;
  /** Default "auto". */
  mode?: SandboxMode;
  /**
   * A cgroup for the process tree (cgroup.ts): memory of all its processes together, tasks,
   * CPU weight and ceiling; `name` names its directory (the module's name). Without it, no
   * cgroup (tests and benchmarks of the sandbox alone). The host always asks for one; the
   * level is "full" only when it got one.
   */
  cgroup?: { name: string; limits: CgroupLimits };
  /**
   * When "auto" finds no sandbox on this machine, run unsandboxed (level "none", with a note)
   * instead of refusing. For isolate hosts, whose isolate still confines the module; never
   * for native modules, which have no other confinement.
   */
  allowNone?: boolean;
}

/**
 * Module uids come from this range, which no distribution or subuid allocation uses, and are
 * allocated by UidTable (uids.ts): one per module name, never shared. moduleUid(name) is only
 * the first uid the table tries for a new name (a 24-bit hash: names colliding on purpose are
 * easy to find, which is why the table, not the hash, decides).
 */
export const MODULE_UID_BASE = 1_900_000_000;
/** Where root hosts claim their uids machine-wide (uid-claims.ts; [host] uid_claims_dir). */
export const DEFAULT_UID_CLAIMS_DIR = "/var/lib/modhost/uid-claims";
export const MODULE_UID_RANGE = 1 << 24;

export function moduleUid(name: string): number {
  // FNV-1a, 32 bits.
  let h = 0x811c9dc5;
  for (const byte of Buffer.from(name, "utf8")) h = Math.imul(h ^ byte, 0x01000193) >>> 0;
  return MODULE_UID_BASE + (h % MODULE_UID_RANGE);
}

export class SandboxUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SandboxUnavailableError";
  }
}
