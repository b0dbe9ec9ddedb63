// One file: the cgroup v1 and v2 forms of the same limits, side by side.
//
// Kernel limits on a module as a whole: a control group per module process tree (a native
// module, or a TypeScript module's isolate host), so that memory (shmem and memfd included),
// the number of tasks and CPU time are counted for all of the module's processes together.
// Rlimits are per process (RLIMIT_AS: 32 processes x 2 GB is 64 GB; memfd and tmpfs pages are not
// address space at all): they stay, as a backstop, and the cgroup is the real bound.
//
// Layout: the host's own cgroup (from /proc/self/cgroup, so a host run in a delegated or
// limited cgroup keeps its modules inside it) gets one directory per host process,
//   <own cgroup>/modhost-<pid namespace inode>-<host pid>-<host start time>/<module>-<n>
// one per start of a module (a restart never shares a cgroup with the dying processes of the
// previous run). With cgroup v1 that is done in each of the memory, pids and cpu hierarchies;
// with cgroup v2 in the one tree. For CPU, all of a host's modules together weigh as much as one
// busy process per core next to the host's own processes (the host directory's weight), so
// that a module with many busy processes or threads cannot crowd out the host; each module has
// its own weight among them (cpu_weight) and a ceiling (cpu_max_percent, default one core).
//
// Entering: the launcher's shell (launcher.ts), running as root, writes its own pid into the
// cgroup's cgroup.procs and only then execs the sandbox chain. Everything the module runs is a
// descendant of that process, so nothing of the module ever runs outside the cgroup; if the
// write fails, the shell exits and the module does not run. (Moving bubblewrap's child in after
// spawning would leave a window in which the module runs, and forks, unlimited.)
//
// Leaving: release() kills what is left in the cgroup (cgroup.kill on v2, the pids in
// cgroup.procs on v1) and removes it. A killed host leaves its directories behind: the next
// host (any host process of this machine and PID namespace) removes those of hosts that are no
// longer alive when it probes.

import { rmdirSync } from "node:fs";
import { access, mkdir, readdir, readFile, rmdir, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { pidAlive } from "../process.ts";

export type Controller = "memory" | "pids" | "cpu";
type CgroupKind = "v2" | "v1" | "none";

/** What the cgroup of one module enforces. 0 = no limit. */
export interface CgroupLimits {
  /** Memory of all the module's processes together: anonymous, page cache, tmpfs, shmem, memfd. */
  memory_mb: number;
  /** Tasks (processes and threads) of the module together (pids.max). */
  processes: number;
  /** Relative CPU weight among the host's modules, 1-10000 (cgroup v2 cpu.weight; 100 = normal). */
  cpu_weight: number;
  /** CPU ceiling in percent of one core (cpu.max / cfs_quota_us); 0 = none. */
  cpu_max_percent: number;
}

export interface CgroupSupport {
  kind: CgroupKind;
  /** Per controller, this host's directory (the parent of its module cgroups). v2: the same for all. */
  hostDirs: Partial<Record<Controller, string>>;
  /** The memory limit also bounds swap (v1 memory.memsw, v2 memory.swap.max). */
  swapLimited: boolean;
  /** Why cgroups (or one controller) are not used, for the log. */
  problems: string[];
  /** For `modhost check` and the startup log: "cgroup v1 memory+pids+cpu", "none". */
  description: string;
}

export interface ModuleCgroup {
  kind: "v1" | "v2";
  /** The module's cgroup directories (one per v1 hierarchy, one for v2). */
  dirs: string[];
  /** The cgroup.procs files the launcher writes its pid into, before it runs the sandbox. */
  procsFiles: string[];
  /** Kill whatever is left in the cgroup and remove it (idempotent; never throws). */
  release(): Promise<void>;
  /** Which of its limits the cgroup enforced so far, in words (null: none); call before release(). */
  exitReason(): Promise<string | null>;
  /** Current memory charged to it (bytes), null when not known. */
  memoryBytes(): Promise<number | null>;
}

const CONTROLLERS: readonly Controller[] = ["memory", "pids", "cpu"];
const REQUIRED: readonly Controller[] = ["memory", "pids"];
/**
 * A host's directory: `modhost-<pid namespace>-<pid>-<start time>`, the start time being the
 * host process's (ticks after boot, /proc/PID/stat): a pid is reused, a pid with its start time
 * is not (and cgroups do not outlive a boot). Directories of hosts before that carry no start time.
 */
const HOST_DIR_RE = /^modhost-(\d+)-(\d+)(?:-(\d+))?$/;

/** When process `pid` started, in clock ticks after boot (field 22 of /proc/PID/stat); null when there is none. */
export async function startTimeOf(pid: number, proc = "/proc"): Promise<string | null> {
  const text = await readText(path.join(proc, String(pid), "stat"));
  if (text === null) return null;
  // The command name (field 2) may hold spaces and parentheses: the fields after it start after the last ")".
  const after = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const ticks = after[22 - 3];
  return ticks !== undefined && /^\d+$/.test(ticks) ? ticks : null;
}

function hostDirName(input: ProbeInput): string {
  return `modhost-${input.pidNs}-${input.pid}-${input.startTime}`;
}

interface MountEntry { root: string; mountPoint: string; fsType: string; superOptions: string[] }

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** /proc/self/mountinfo: "id parent maj:min root mountpoint opts [tags] - fstype source superopts". */
function parseMountInfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const head = line.slice(0, sep).split(" ");
    const tail = line.slice(sep + 3).split(" ");
    if (head.length < 5 || tail.length < 3) continue;
    out.push({ root: unescapeMount(head[3]!), mountPoint: unescapeMount(head[4]!), fsType: tail[0]!, superOptions: tail[2]!.split(",") });
  }
  return out;
}

/** /proc/self/cgroup: controller (or "" for v2) -> path. */
function parseProcCgroup(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    if (m[2] === "") out.set("", m[3]!);
    for (const c of m[2]!.split(",")) if (c) out.set(c, m[3]!);
  }
  return out;
}

/** The directory of cgroup `cgPath` under a mount whose root is `root`; null if outside it. */
function dirOf(mount: MountEntry, cgPath: string): string | null {
  const rel = path.posix.relative(mount.root, cgPath);
  if (rel.startsWith("..") || path.posix.isAbsolute(rel)) return null;
  return path.join(mount.mountPoint, rel);
}

async function readText(file: string): Promise<string | null> {
  return readFile(file, "utf8").catch(() => null);
}


async function pidsIn(dir: string): Promise<number[]> {
  const text = await readText(path.join(dir, "cgroup.procs"));
  return (text ?? "").split("\n").filter((l) => /^\d+$/.test(l)).map(Number);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Kill every process in `dir` and remove it. v1 has no atomic kill: the pids are read and sent
 * SIGKILL until the cgroup is empty. A pid read from cgroup.procs still belongs to that (perhaps
 * dying) process: a pid is only reused after its process is reaped, and a reaped process has
 * already left the list. A fork between reading and killing is caught by the next round.
 */
async function removeCgroup(dir: string, kind: "v1" | "v2"): Promise<boolean> {
  for (let round = 0; round < 100; round++) {
    try {
      await rmdir(dir);
      return true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return true;
      if (code !== "EBUSY" && code !== "ENOTEMPTY") return false;
    }
    // Children first (a host directory of a dead host).
    for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      if (e.isDirectory()) await removeCgroup(path.join(dir, e.name), kind);
    }
    if (kind === "v2" && (await writeFile(path.join(dir, "cgroup.kill"), "1").then(() => true, () => false))) {
      // killed atomically, pids and all
    } else {
      for (const pid of await pidsIn(dir)) {
        try { process.kill(pid, "SIGKILL"); } catch { /* gone already */ }
      }
    }
    await sleep(round < 10 ? 10 : 50);
  }
  return false;
}

/**
 * Host directories of hosts that are gone, removed with what they hold: in the same PID
 * namespace, a directory whose pid is not alive, or is alive with another start time than the
 * one in its name (the pid was reused: by any process, or by a host, whose directory has its
 * own start time). A directory without a start time (an older host's), or whose pid's start
 * time cannot be read, is judged by its pid alone: it stays while the pid lives.
 */
async function cleanStale(parent: string, kind: "v1" | "v2", input: ProbeInput): Promise<string[]> {
  const removed: string[] = [];
  for (const e of await readdir(parent, { withFileTypes: true }).catch(() => [])) {
    const m = HOST_DIR_RE.exec(e.name);
    if (!e.isDirectory() || !m || m[1] !== input.pidNs || e.name === hostDirName(input)) continue;
    const pid = Number(m[2]);
    const started = m[3];
    if (started === undefined && (pid === input.pid || pid === process.pid)) continue;
    if (pidAlive(pid)) {
      // Alive: stale only when the pid's start time is known and not the one in the name.
      const now = started === undefined ? null : await startTimeOf(pid, input.proc);
      if (now === null || now === started) continue;
    }
    if (await removeCgroup(path.join(parent, e.name), kind)) removed.push(path.join(parent, e.name));
  }
  return removed;
}

/** The host's modules together weigh as much as one busy process per core (see the top of the file). */
function hostCpus(): number {
  return Math.max(1, os.availableParallelism());
}

async function pidNamespace(): Promise<string> {
  const { readlink } = await import("node:fs/promises");
  const link = await readlink("/proc/self/ns/pid").catch(() => "");
  return /\[(\d+)\]/.exec(link)?.[1] ?? "0";
}

export interface ProbeInput {
  root: boolean;
  mountInfo: string;
  procCgroup: string;
  pid: number;
  pidNs: string;
  /** The host process's start time (startTimeOf(pid)): its directory's name carries it. */
  startTime: string;
  /** Where /proc is (tests): the start times of other pids are read there. */
  proc?: string;
}

async function writable(dir: string): Promise<string | null> {
  try {
    await mkdir(dir);
    return null;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === "EEXIST") return null;
    return `${e.code ?? e.message}`;
  }
}

async function hasFile(file: string): Promise<boolean> {
  return access(file).then(() => true, () => false);
}

/**
 * cgroup v2: the module cgroups need the controllers enabled in the host directory's parent
 * (the host's own cgroup), and v2 lets a cgroup with processes enable controllers for its
 * children only at the root. A host alone in its cgroup (systemd Delegate=yes) moves itself
 * into a leaf `modhost-host` first; a host sharing its cgroup with other processes cannot.
 */
async function probeV2(mounts: MountEntry[], cgroups: Map<string, string>, input: ProbeInput, problems: string[]): Promise<CgroupSupport | null> {
  const mount = mounts.find((m) => m.fsType === "cgroup2");
  const own = cgroups.get("");
  if (!mount || own === undefined) return null;
  const ownDir = dirOf(mount, own);
  if (!ownDir) return null;
  const available = ((await readText(path.join(ownDir, "cgroup.controllers"))) ?? "").trim().split(/\s+/);
  const missing = REQUIRED.filter((c) => !available.includes(c));
  if (missing.length > 0) {
    problems.push(`cgroup v2 at ${ownDir} has no ${missing.join("/")} controller`);
    return null;
  }
  const use = CONTROLLERS.filter((c) => available.includes(c));
  const enabled = ((await readText(path.join(ownDir, "cgroup.subtree_control"))) ?? "").trim().split(/\s+/);
  const enable = async () => writeFile(path.join(ownDir, "cgroup.subtree_control"), use.filter((c) => !enabled.includes(c)).map((c) => `+${c}`).join(" "));
  if (use.some((c) => !enabled.includes(c))) {
    try {
      await enable();
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const procs = await pidsIn(ownDir);
      if (e.code === "EBUSY" && procs.length === 1 && procs[0] === input.pid && own !== "/") {
        try {
          const leaf = path.join(ownDir, "modhost-host");
          await mkdir(leaf).catch((er: NodeJS.ErrnoException) => { if (er.code !== "EEXIST") throw er; });
          await writeFile(path.join(leaf, "cgroup.procs"), String(input.pid));
          await enable();
        } catch (err2) {
          problems.push(`cgroup v2: cannot enable ${use.join(", ")} for ${ownDir}: ${(err2 as Error).message}`);
          return null;
        }
      } else {
        problems.push(`cgroup v2: cannot enable ${use.join(", ")} for ${ownDir} (${e.code ?? e.message}`
          + `${e.code === "EBUSY" ? ": other processes share the host's cgroup; start modhost in a cgroup of its own, e.g. a systemd service with Delegate=yes" : ""})`);
        return null;
      }
    }
  }
  const hostDir = path.join(ownDir, hostDirName(input));
  const why = await writable(hostDir);
  if (why) {
    problems.push(`cgroup v2: cannot create ${hostDir} (${why})`);
    return null;
  }
  await cleanStale(ownDir, "v2", input);
  const hostDirs = Object.fromEntries(use.map((c) => [c, hostDir])) as Partial<Record<Controller, string>>;
  if (use.includes("cpu")) await writeFile(path.join(hostDir, "cpu.weight"), String(Math.min(10_000, 100 * hostCpus()))).catch(() => undefined);
  // v2 enables controllers level by level: the module cgroups below the host directory need them too.
  try {
    await writeFile(path.join(hostDir, "cgroup.subtree_control"), use.map((c) => `+${c}`).join(" "));
  } catch (err) {
    problems.push(`cgroup v2: cannot enable ${use.join(", ")} in ${hostDir}: ${(err as Error).message}`);
    await rmdir(hostDir).catch(() => undefined);
    return null;
  }
  const swapLimited = await hasFile(path.join(hostDir, "memory.swap.max"));
  if (!use.includes("cpu")) problems.push("cgroup v2: no cpu controller (no CPU weight or ceiling per module)");
  return { kind: "v2", hostDirs, swapLimited, problems, description: `cgroup v2 ${use.join("+")}` };
}

async function probeV1(mounts: MountEntry[], cgroups: Map<string, string>, input: ProbeInput, problems: string[]): Promise<CgroupSupport | null> {
  const hostDirs: Partial<Record<Controller, string>> = {};
  for (const c of CONTROLLERS) {
    const mount = mounts.find((m) => m.fsType === "cgroup" && m.superOptions.includes(c));
    const own = cgroups.get(c);
    if (!mount || own === undefined) {
      problems.push(`no cgroup v1 ${c} hierarchy`);
      continue;
    }
    const ownDir = dirOf(mount, own);
    if (!ownDir) {
      problems.push(`cgroup v1 ${c}: the host's cgroup ${own} is outside the mount at ${mount.mountPoint}`);
      continue;
    }
    const hostDir = path.join(ownDir, hostDirName(input));
    const why = await writable(hostDir);
    if (why) {
      problems.push(`cgroup v1 ${c}: cannot create ${hostDir} (${why}${why === "EROFS" ? ": mounted read-only" : ""})`);
      continue;
    }
    await cleanStale(ownDir, "v1", input);
    if (c === "cpu") await writeFile(path.join(hostDir, "cpu.shares"), String(1024 * hostCpus())).catch(() => undefined);
    hostDirs[c] = hostDir;
  }
  const missing = REQUIRED.filter((c) => !hostDirs[c]);
  if (missing.length > 0) {
    for (const dir of Object.values(hostDirs)) await rmdir(dir).catch(() => undefined);
    return null;
  }
  const use = CONTROLLERS.filter((c) => hostDirs[c]);
  const swapLimited = await hasFile(path.join(hostDirs.memory!, "memory.memsw.limit_in_bytes"));
  return { kind: "v1", hostDirs, swapLimited, problems, description: `cgroup v1 ${use.join("+")}` };
}

/** Probe (and prepare: this host's directories, stale ones removed) with explicit inputs (tests). */
export async function probeCgroupsWith(input: ProbeInput): Promise<CgroupSupport> {
  const problems: string[] = [];
  if (!input.root) {
    return { kind: "none", hostDirs: {}, swapLimited: false, problems: ["the host is not root: no cgroup per module (memory and processes are limited per process only)"], description: "none" };
  }
  const mounts = parseMountInfo(input.mountInfo);
  const cgroups = parseProcCgroup(input.procCgroup);
  // Why v2 was not used matters only when v1 is not used either.
  const v2Problems: string[] = [];
  const found = (await probeV2(mounts, cgroups, input, v2Problems)) ?? (await probeV1(mounts, cgroups, input, problems));
  if (!found || found.kind === "v2") problems.unshift(...v2Problems);
  if (found) {
    const dirs = [...new Set(Object.values(found.hostDirs))];
    // The directories of a host that exits normally go with it (its modules' cgroups are gone by then).
    process.once("exit", () => {
      for (const d of dirs) {
        try { rmdirSync(d); } catch { /* busy or gone: the next host cleans it */ }
      }
    });
    return found;
  }
  return { kind: "none", hostDirs: {}, swapLimited: false, problems: problems.length > 0 ? problems : ["no cgroup file system mounted"], description: "none" };
}

let cached: Promise<CgroupSupport> | undefined;

/** This machine's cgroups, probed once per process (and the stale directories of dead hosts removed). */
export function detectCgroups(): Promise<CgroupSupport> {
  cached ??= (async () => probeCgroupsWith({
    root: process.getuid?.() === 0,
    mountInfo: (await readText("/proc/self/mountinfo")) ?? "",
    procCgroup: (await readText("/proc/self/cgroup")) ?? "",
    pid: process.pid,
    pidNs: await pidNamespace(),
    startTime: (await startTimeOf(process.pid)) ?? "0",
  }))();
  return cached;
}

/** What to write where, for one module's limits. */
export function limitFiles(kind: "v1" | "v2", limits: CgroupLimits, swapLimited: boolean): Array<[Controller, string, string]> {
  const MB = 1024 * 1024;
  const out: Array<[Controller, string, string]> = [];
  const weight = Math.min(10_000, Math.max(1, limits.cpu_weight || 100));
  const quota = limits.cpu_max_percent > 0 ? String(limits.cpu_max_percent * 1000) : null; // of a 100 ms period
  if (kind === "v1") {
    if (limits.memory_mb > 0) {
      out.push(["memory", "memory.limit_in_bytes", String(limits.memory_mb * MB)]);
      if (swapLimited) out.push(["memory", "memory.memsw.limit_in_bytes", String(limits.memory_mb * MB)]);
    }
    if (limits.processes > 0) out.push(["pids", "pids.max", String(limits.processes)]);
    out.push(["cpu", "cpu.shares", String(Math.max(2, Math.round((weight * 1024) / 100)))]);
    if (quota) out.push(["cpu", "cpu.cfs_period_us", "100000"], ["cpu", "cpu.cfs_quota_us", quota]);
  } else {
    if (limits.memory_mb > 0) {
      out.push(["memory", "memory.max", String(limits.memory_mb * MB)]);
      if (swapLimited) out.push(["memory", "memory.swap.max", "0"]);
    }
    if (limits.processes > 0) out.push(["pids", "pids.max", String(limits.processes)]);
    out.push(["cpu", "cpu.weight", String(weight)]);
    if (quota) out.push(["cpu", "cpu.max", `${quota} 100000`]);
  }
  return out;
}

let sequence = 0;

/**
 * Make the cgroup of one module start: a directory per controller with its limits written.
 * Throws (with what failed) when the kernel refuses; nothing is left behind then.
 */
export async function createModuleCgroup(support: CgroupSupport, name: string, limits: CgroupLimits): Promise<ModuleCgroup> {
  if (support.kind === "none") throw new Error("no cgroups on this machine");
  const kind = support.kind;
  const leaf = `${name.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 64)}-${++sequence}`;
  const byController = new Map<Controller, string>();
  for (const c of CONTROLLERS) {
    const hostDir = support.hostDirs[c];
    if (hostDir) byController.set(c, path.join(hostDir, leaf));
  }
  const dirs = [...new Set(byController.values())];
  let released: Promise<void> | undefined;
  // The controllers' directories are independent: made, filled and removed side by side (a
  // start waits for these, ~20 file operations one after another before). Within a controller
  // the limits are written in order (v1 memsw must not be below the memory limit).
  const release = () => {
    released ??= Promise.all(dirs.map((d) => removeCgroup(d, kind))).then(() => undefined);
    return released;
  };
  try {
    await settleAll(dirs.map((d) => mkdir(d, { recursive: true })));
    const files = limitFiles(kind, limits, support.swapLimited);
    await settleAll(CONTROLLERS.map(async (c) => {
      const dir = byController.get(c);
      if (!dir) return;
      for (const [, file, value] of files.filter(([fc]) => fc === c)) {
        try {
          await writeFile(path.join(dir, file), value);
        } catch (err) {
          throw new Error(`cannot set ${file} = ${value} in ${dir}: ${(err as Error).message}`);
        }
      }
    }));
  } catch (err) {
    await release();
    throw err;
  }
  const memDir = byController.get("memory")!;
  const pidsDir = byController.get("pids")!;
  const counter = async (file: string, key: string) => {
    const text = await readText(file);
    const m = text && new RegExp(`^${key}\\s+(\\d+)`, "m").exec(text);
    return m ? Number(m[1]) : 0;
  };
  const exitReason = async () => {
    const reasons: string[] = [];
    const oomKills = await counter(path.join(memDir, kind === "v1" ? "memory.oom_control" : "memory.events"), "oom_kill");
    if (oomKills > 0) {
      reasons.push(`the kernel killed ${oomKills} of its processes at its memory limit for all its processes together `
        + `(memory_total_mb = ${limits.memory_mb}; raise it in [modules.limits.${name}] if the module needs more)`);
    }
    const forks = await counter(path.join(pidsDir, "pids.events"), "max");
    if (forks > 0) {
      reasons.push(`${forks} of its attempts to start a process or thread were refused at its limit of ${limits.processes} `
        + `(processes; raise it in [modules.limits.${name}] if the module needs more)`);
    }
    return reasons.length > 0 ? reasons.join("; ") : null;
  };
  const memoryBytes = async () => {
    const text = await readText(path.join(memDir, kind === "v1" ? "memory.usage_in_bytes" : "memory.current"));
    return text === null ? null : Number(text.trim());
  };
  return { kind, dirs, procsFiles: dirs.map((d) => path.join(d, "cgroup.procs")), release, exitReason, memoryBytes };
}

/**
 * Move every process of `from` into `to` (a pre-booted isolate host handed to its module,
 * runtime/isolate/pool.ts): its pids, read from `from`'s cgroup.procs, are written into each
 * of `to`'s. The memory already charged moves with them where cgroup v1 can
 * (memory.move_charge_at_immigrate); cgroup v2 keeps it with `from` until it is released. Throws
 * when a process could not be moved: the caller must not use the processes then. The caller
 * releases `from` (empty now) afterwards.
 */
export async function moveProcesses(from: ModuleCgroup, to: ModuleCgroup): Promise<number> {
  if (to.kind === "v1") {
    const mem = to.dirs.find((d) => d.includes("/memory/"));
    if (mem) await writeFile(path.join(mem, "memory.move_charge_at_immigrate"), "3").catch(() => undefined);
  }
  const pids = new Set<string>();
  for (const file of from.procsFiles) {
    for (const pid of ((await readText(file)) ?? "").split("\n")) if (/^\d+$/.test(pid.trim())) pids.add(pid.trim());
  }
  // One process at a time, into every controller's group side by side.
  for (const pid of pids) {
    await settleAll(to.procsFiles.map(async (file) => {
      try {
        await writeFile(file, pid);
      } catch (err) {
        // A process that has just exited is nothing to move.
        if ((err as NodeJS.ErrnoException).code === "ESRCH") return;
        throw new Error(`cannot move process ${pid} into ${path.dirname(file)}: ${(err as Error).message}`);
      }
    }));
  }
  return pids.size;
}

/** Wait for all of `work`; then throw the first failure, if any (nothing is left running behind a throw). */
async function settleAll(work: Array<Promise<unknown>>): Promise<void> {
  const failed = (await Promise.allSettled(work)).find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) throw failed.reason;
}
