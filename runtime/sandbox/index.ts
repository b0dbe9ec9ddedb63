// The sandbox of module processes (native modules, and the isolate hosts that run TypeScript
// modules): turns a SpawnSpec into one that runs the same command inside the best sandbox this
// machine offers (see policy.ts for the levels).
//
//   full:     sh (fd setup) -> prlimit (rlimits) -> bwrap (namespaces, mounts, seccomp)
//             -> setpriv (module uid, no capabilities) -> module
//   degraded: sh -> prlimit -> setpriv -> unshare -> sh (private /tmp) -> setpriv -> module
//             (fallback.ts), or, on a non-root host, bwrap with a user namespace and no uid drop
//
// The module's environment is exactly spec.env (spawn's env; never --setenv, whose values
// would be readable by anyone in the host's process list), minus loader variables, which the
// root-run tools of the chain would also obey.

import { lstat } from "node:fs/promises";
import path from "node:path";
import type { SpawnSpec } from "../process.ts";
import { bwrapArgs, SYSTEM_DIRS } from "./bwrap.ts";
import { detectSandbox, type SandboxCapabilities } from "./detect.ts";
import { prepareDataDir } from "./datadir.ts";
import { fallbackArgs } from "./fallback.ts";
import { launcher, SECCOMP_FD, seccompFile } from "./launcher.ts";
import { createModuleCgroup, detectCgroups, type CgroupSupport, type ModuleCgroup } from "./cgroup.ts";
import { SandboxUnavailableError, type SandboxLevel, type SandboxMode, type SandboxPolicy } from "./policy.ts";
import { prlimitArgs } from "./rlimits.ts";

export { detectSandbox, type SandboxCapabilities } from "./detect.ts";
export { createModuleCgroup, moveProcesses, detectCgroups, type CgroupLimits, type CgroupSupport } from "./cgroup.ts";
export { UidTable, UID_TABLE_FILE } from "./uids.ts";
export { SYSTEM_DIRS } from "./bwrap.ts";
export {
  DEFAULT_SANDBOX_LIMITS, moduleUid, SandboxUnavailableError,
  type SandboxLevel, type SandboxLimits, type SandboxMode, type SandboxPolicy,
} from "./policy.ts";

export interface SandboxedSpawn {
  spec: SpawnSpec;
  level: SandboxLevel;
  /** What this sandbox does not do, or does differently; for the log. */
  notes: string[];
  /** The module's cgroup, when it got one. */
  cgroup?: ModuleCgroup;
  /** Call once the process has exited: kills what is left in its cgroup and removes it (no-op without one). */
  release(): Promise<void>;
}

const NO_RELEASE = async () => undefined;

export type Variant = "bwrap" | "bwrap-unprivileged" | "util-linux";

const NETWORK_NOTE = "network_access: the module shares the host's network namespace; host and port scopes are enforced "
  + "only for requests made through the host, not for the module's own sockets (including to services on the host's loopback); "
  + "it may not create Unix sockets (the namespace holds the machine's abstract ones)";

/** Which sandbox to build (exported for tests). */
export function chooseVariant(policy: Pick<SandboxPolicy, "mode">, caps: SandboxCapabilities): Variant {
  const mode = policy.mode ?? "auto";
  const bwrapUnprivileged = !caps.root && caps.best === "degraded" && caps.bwrapWorks;
  const why = caps.problems.join("; ") || "unknown reason";
  if (mode === "full" || (mode === "auto" && caps.best === "full")) {
    if (caps.best !== "full") throw new SandboxUnavailableError(`the full sandbox is not available: ${why}`);
    return "bwrap";
  }
  if (caps.fallback) return "util-linux";
  if (mode === "auto" && bwrapUnprivileged) return "bwrap-unprivileged";
  throw new SandboxUnavailableError(
    `no sandbox for native modules on this machine (${why}); install bubblewrap, or set `
    + `[modules] native_sandbox = "off" to run them unsandboxed`,
  );
}

function isInside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel === "" || (!rel.startsWith("..") && !path.isAbsolute(rel));
}

/** What the sandbox mounts read-only from the host: the module directory and the policy's extra paths. */
function boundReadOnly(policy: SandboxPolicy): string[] {
  return [...(policy.moduleDir ? [policy.moduleDir] : []), ...(policy.readOnly ?? [])];
}

/**
 * The module's uid must be able to reach and run its binary, and read the read-only paths (it
 * cannot use root's rights). Inside bubblewrap a path's ancestors up to the bind mount are
 * bubblewrap's own 0755 directories, so only the mounted tree counts; the util-linux sandbox
 * sees the host's tree, so every ancestor up to / must let the uid through.
 */
async function checkAccess(policy: SandboxPolicy, wholePath: boolean): Promise<void> {
  const allowed = (st: { uid: number; gid: number; mode: number }, bits: number) => {
    const shift = st.uid === policy.uid ? 6 : st.gid === policy.gid ? 3 : 0;
    return ((st.mode >> shift) & bits) === bits;
  };
  const check = async (target: string, root: string, bits: number, hint: string) => {
    for (let p = target, first = true; ; p = path.dirname(p), first = false) {
      const st = await lstat(p);
      const need = first ? (st.isDirectory() ? bits | 1 : bits) : 1;
      if (!allowed(st, need)) {
        throw new Error(first && bits === 1
          ? `${p} is not executable by the module's uid ${policy.uid} (${hint})`
          : `${p} is not ${first ? "readable" : "executable/searchable"} by the module's uid ${policy.uid} (${first ? hint : "chmod o+x"})`);
      }
      if (p === root || p === "/") break;
    }
  };
  const bound = boundReadOnly(policy);
  const rootOf = (p: string) => (wholePath ? "/" : bound.find((b) => isInside(p, b)) ?? p);
  await check(policy.binary, rootOf(policy.binary), 1, "chmod o+x, or o+rx for a script");
  for (const p of policy.readOnly ?? []) await check(p, rootOf(p), 4, "chmod o+r, or give the file to the module's gid");
}

function checkPolicy(spec: SpawnSpec, policy: SandboxPolicy): void {
  const paths: Array<[string, string | null]> = [
    ["dataDir", policy.dataDir], ["moduleDir", policy.moduleDir], ["binary", policy.binary], ["cwd", spec.cwd],
    ...(policy.readOnly ?? []).map((p): [string, string] => ["readOnly", p]),
  ];
  for (const [name, p] of paths) {
    if (p === null) continue;
    if (!path.isAbsolute(p) || path.normalize(p) !== p.replace(/(.)\/+$/, "$1")) throw new Error(`sandbox ${name} must be a normalised absolute path: ${p}`);
  }
  if (![...boundReadOnly(policy), ...SYSTEM_DIRS].some((d) => isInside(policy.binary, d))) {
    throw new Error(`the binary ${policy.binary} is not inside the module directory ${policy.moduleDir ?? "(none)"}, a read-only path or a system directory`);
  }
  if (path.resolve(spec.command) !== policy.binary) throw new Error(`spec.command ${spec.command} is not the policy's binary ${policy.binary}`);
  if (policy.dataDir ? !isInside(spec.cwd, policy.dataDir) : spec.cwd !== "/") {
    throw new Error(`the working directory ${spec.cwd} is not inside the data directory${policy.dataDir ? "" : " (there is none: it must be /)"}`);
  }
  if (!Number.isInteger(policy.uid) || !Number.isInteger(policy.gid) || policy.uid <= 0 || policy.gid <= 0) {
    throw new Error(`the sandbox needs a non-root uid/gid, got ${policy.uid}:${policy.gid}`);
  }
}

function cleanEnv(env: Record<string, string>, notes: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (k.startsWith("LD_")) notes.push(`environment variable ${k} dropped`);
    else out[k] = v;
  }
  return out;
}

/**
 * The level `mode` gives a process on a machine with `caps`, or "refused" when it would not
 * start (for the startup log and `modhost check`). allowNone as in SandboxPolicy.
 */
export function plannedLevel(mode: SandboxMode, caps: SandboxCapabilities, allowNone = false): SandboxLevel | "refused" {
  if (mode === "off") return "none";
  try {
    if (chooseVariant({ mode }, caps) !== "bwrap") return "degraded";
    if (!cgroupsMissing(caps)) return "full";
    return mode === "full" ? "refused" : "degraded";
  } catch {
    return allowNone && mode === "auto" ? "none" : "refused";
  }
}

/** No cgroups on a machine that was probed for them (caps.cgroups unset: not probed, as in unit tests). */
function cgroupsMissing(caps: SandboxCapabilities): boolean {
  return caps.cgroups !== undefined && caps.cgroups.kind === "none";
}

/** `modhost check` and the startup log: which kernel limits per module this machine gives. */
export function describeKernelLimits(cgroups: CgroupSupport | undefined): string {
  if (!cgroups) return "kernel limits per module: not probed";
  if (cgroups.kind === "none") {
    return `kernel limits per module: none, rlimits per process only (${cgroups.problems.join("; ")})`;
  }
  const partial = cgroups.problems.length > 0 ? ` (${cgroups.problems.join("; ")})` : "";
  return `kernel limits per module: ${cgroups.description}${cgroups.swapLimited ? "" : ", swap not limited"}${partial}`;
}

/**
 * The startup log's and `modhost check`'s line: the level native modules and isolate hosts get
 * on this machine under the configured modes. `full`: both get the full sandbox.
 */
export function describeSandboxes(modes: { native: SandboxMode; isolate: SandboxMode }, caps: SandboxCapabilities): { text: string; full: boolean } {
  const part = (what: string, mode: SandboxMode, allowNone: boolean) => {
    const level = plannedLevel(mode, caps, allowNone);
    const shown = level === "refused" ? "unavailable (they will not start)" : level;
    return { level, text: `${what} ${shown}${mode !== "auto" ? ` (configured "${mode}")` : ""}` };
  };
  const native = part("native modules", modes.native, false);
  const isolate = part("TypeScript isolate hosts", modes.isolate, true);
  const full = native.level === "full" && isolate.level === "full";
  const why = !full && caps.problems.length > 0 ? `; ${caps.problems.join("; ")}` : "";
  const kernel = caps.cgroups ? `; ${describeKernelLimits(caps.cgroups)}` : "";
  return { text: `module sandbox: ${native.text}, ${isolate.text}${why}${kernel}`, full: full && !cgroupsMissing(caps) };
}

/** Wrap `spec` in the sandbox that `policy` asks for. Throws SandboxUnavailableError when the
 * machine cannot provide it; prepares the data directory (owner, mode) as a side effect. */
export async function sandboxSpawnSpec(spec: SpawnSpec, policy: SandboxPolicy): Promise<SandboxedSpawn> {
  const mode = policy.mode ?? "auto";
  if (mode === "off") {
    // Nothing else ties it to the spawner (no bwrap --die-with-parent, no cgroup): the spawner does.
    return { spec: { ...spec, tieToSpawner: true }, level: "none", notes: ["not sandboxed: the operator turned the sandbox off (mode \"off\")"], release: NO_RELEASE };
  }
  checkPolicy(spec, policy);
  const caps = await detectSandbox();
  let variant: Variant;
  try {
    variant = chooseVariant(policy, caps);
  } catch (err) {
    if (!(err instanceof SandboxUnavailableError) || !policy.allowNone || mode !== "auto") throw err;
    return { spec, level: "none", notes: [`not sandboxed: this machine offers no sandbox (${caps.problems.join("; ") || "unknown reason"})`], release: NO_RELEASE };
  }
  const { tools } = caps;
  if (!tools.prlimit) throw new SandboxUnavailableError("prlimit is missing");
  const notes: string[] = [];
  const env = cleanEnv(spec.env, notes);
  if (caps.root) {
    if (policy.dataDir) await prepareDataDir(policy.dataDir, policy.uid, policy.gid, tools.chown!);
    await checkAccess(policy, variant === "util-linux");
  }
  if (policy.network) notes.push(NETWORK_NOTE);

  const chain = [tools.prlimit, ...prlimitArgs(policy.limits, { nproc: caps.root }), "--"];
  let seccomp: string | undefined;
  let level: SandboxLevel;
  if (variant === "util-linux") {
    level = "degraded";
    notes.push(
      "degraded sandbox (util-linux, no bubblewrap): the module sees the host's file system with its uid's rights, "
      + "and there is no seccomp filter (keyctl, io_uring, user namespaces stay available)",
    );
    chain.push(...fallbackArgs(spec, policy, tools, notes));
  } else {
    level = variant === "bwrap" ? "full" : "degraded";
    if (variant === "bwrap-unprivileged") {
      notes.push("the host is not root: the module runs under the host's uid in a user namespace, and the processes limit is not applied");
    }
    seccomp = await seccompFile(policy.network);
    chain.push(tools.bwrap!, ...(await bwrapArgs(spec, policy, { tools, dropUid: variant === "bwrap", seccompFd: SECCOMP_FD })));
  }
  let cgroup: ModuleCgroup | undefined;
  if (policy.cgroup) {
    const support = caps.cgroups ?? (await detectCgroups());
    let problem: string;
    if (support.kind === "none") {
      problem = support.problems.join("; ");
    } else {
      try {
        cgroup = await createModuleCgroup(support, policy.cgroup.name, policy.cgroup.limits);
        problem = "";
      } catch (err) {
        problem = (err as Error).message;
      }
    }
    if (!cgroup) {
      if (mode === "full") throw new SandboxUnavailableError(`the full sandbox is not available: no cgroup for the module (${problem})`);
      level = "degraded";
      notes.push(`no cgroup (${problem}): memory, processes and CPU are limited per process only (rlimits), not for the module as a whole`);
    }
  }
  try {
    const { command, args } = await launcher(chain, tools, seccomp, env, notes, cgroup?.procsFiles);
    return { spec: { ...spec, command, args, env }, level, notes, ...(cgroup ? { cgroup } : {}), release: cgroup ? cgroup.release : NO_RELEASE };
  } catch (err) {
    await cgroup?.release();
    throw err;
  }
}
