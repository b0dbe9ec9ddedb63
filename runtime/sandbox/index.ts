// The sandbox of native module processes: turns a SpawnSpec into one that runs the same
// command inside the best sandbox this machine offers (see policy.ts for the levels).
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
import { bwrapArgs } from "./bwrap.ts";
import { detectSandbox, type SandboxCapabilities } from "./detect.ts";
import { prepareDataDir } from "./datadir.ts";
import { fallbackArgs } from "./fallback.ts";
import { launcher, SECCOMP_FD, seccompFile } from "./launcher.ts";
import { SandboxUnavailableError, type SandboxLevel, type SandboxPolicy } from "./policy.ts";
import { prlimitArgs } from "./rlimits.ts";

export { detectSandbox, type SandboxCapabilities, type SandboxTools } from "./detect.ts";
export {
  DEFAULT_SANDBOX_LIMITS, moduleUid, SandboxUnavailableError,
  type SandboxLevel, type SandboxLimits, type SandboxMode, type SandboxPolicy,
} from "./policy.ts";

export interface SandboxedSpawn {
  spec: SpawnSpec;
  level: SandboxLevel;
  /** What this sandbox does not do, or does differently; for the log. */
  notes: string[];
}

export type Variant = "bwrap" | "bwrap-unprivileged" | "util-linux";

const NETWORK_NOTE = "network_access: the module shares the host's network namespace; host and port scopes are enforced "
  + "only for requests made through the host, not for the module's own sockets (including to services on the host's loopback)";

/** Which sandbox to build (exported for tests). */
export function chooseVariant(policy: SandboxPolicy, caps: SandboxCapabilities): Variant {
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

/** The module's uid must be able to reach and run its binary (it cannot use root's rights). */
async function checkExecutable(policy: SandboxPolicy): Promise<void> {
  const chain: string[] = [];
  for (let p = policy.binary; isInside(p, policy.moduleDir); p = path.dirname(p)) {
    chain.push(p);
    if (p === policy.moduleDir) break;
  }
  for (const p of chain) {
    const st = await lstat(p);
    const ok = st.uid === policy.uid ? st.mode & 0o100 : st.gid === policy.gid ? st.mode & 0o010 : st.mode & 0o001;
    if (!ok) throw new Error(`${p} is not executable/searchable by the module's uid ${policy.uid} (chmod o+x, or o+rx for a script)`);
  }
}

function checkPolicy(spec: SpawnSpec, policy: SandboxPolicy): void {
  for (const [name, p] of [["dataDir", policy.dataDir], ["moduleDir", policy.moduleDir], ["binary", policy.binary], ["cwd", spec.cwd]] as const) {
    if (!path.isAbsolute(p) || path.normalize(p) !== p.replace(/(.)\/+$/, "$1")) throw new Error(`sandbox ${name} must be a normalised absolute path: ${p}`);
  }
  if (!isInside(policy.binary, policy.moduleDir)) throw new Error(`the binary ${policy.binary} is not inside the module directory ${policy.moduleDir}`);
  if (path.resolve(spec.command) !== policy.binary) throw new Error(`spec.command ${spec.command} is not the policy's binary ${policy.binary}`);
  if (!isInside(spec.cwd, policy.dataDir)) throw new Error(`the working directory ${spec.cwd} is not inside the data directory`);
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

/** Wrap `spec` in the sandbox that `policy` asks for. Throws SandboxUnavailableError when the
 * machine cannot provide it; prepares the data directory (owner, mode) as a side effect. */
export async function sandboxSpawnSpec(spec: SpawnSpec, policy: SandboxPolicy): Promise<SandboxedSpawn> {
  if ((policy.mode ?? "auto") === "off") {
    return { spec, level: "none", notes: ["native module sandbox disabled by the operator (native_sandbox = \"off\")"] };
  }
  checkPolicy(spec, policy);
  const caps = await detectSandbox();
  const variant = chooseVariant(policy, caps);
  const { tools } = caps;
  if (!tools.prlimit) throw new SandboxUnavailableError("prlimit is missing");
  const notes: string[] = [];
  const env = cleanEnv(spec.env, notes);
  if (caps.root) {
    await prepareDataDir(policy.dataDir, policy.uid, policy.gid, tools.chown!);
    await checkExecutable(policy);
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
  const { command, args } = await launcher(chain, tools, seccomp, env, notes);
  return { spec: { ...spec, command, args, env }, level, notes };
}
