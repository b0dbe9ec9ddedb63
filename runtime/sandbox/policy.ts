// What the sandbox of one module process is asked to enforce (a native module, or the isolate
// host of a TypeScript module), and the levels it can deliver.

/**
 * "full": bubblewrap (namespaces, read-only system view, private /tmp) + seccomp + rlimits +
 *   a real unprivileged uid with no capabilities.
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
  /** The unprivileged host uid/gid the module runs as (see moduleUid). */
  uid: number;
  gid: number;
  /** Default "auto". */
  mode?: SandboxMode;
  /**
   * When "auto" finds no sandbox on this machine, run unsandboxed (level "none", with a note)
   * instead of refusing. For isolate hosts, whose isolate still confines the module; never
   * for native modules, which have no other confinement.
   */
  allowNone?: boolean;
}

/**
 * Module uids: one per module, derived from its name, in a range no distribution or subuid
 * allocation uses. A uid of its own means RLIMIT_NPROC counts only this module's processes
 * and another module's files are not its files. Two names can collide (1 in 16 M per pair);
 * they would then share the process limit, nothing else (neither sees the other's directory).
 */
export const MODULE_UID_BASE = 1_900_000_000;
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
