// What sandboxing this machine supports, found once per process: which tools exist (looked up
// in the system directories only, never through PATH, since the host runs them as root) and
// whether they actually work here (a container may forbid namespaces; only a real run tells).

import { access, constants, readFile } from "node:fs/promises";
import { hostSeccompArch, type SeccompArch } from "./seccomp.ts";
import type { SandboxLevel } from "./policy.ts";
import { detectCgroups, type CgroupSupport } from "./cgroup.ts";
import { runTool } from "./tool-runner.ts";

export interface SandboxTools {
  bwrap: string | null;
  setpriv: string | null;
  prlimit: string | null;
  unshare: string | null;
  sh: string | null;
  bash: string | null;
  true: string | null;
  chown: string | null;
  mount: string | null;
}

export interface SandboxCapabilities {
  /** The host runs as root: it can give each module an unprivileged uid of its own. */
  root: boolean;
  /** Seccomp syscall table for this machine, null when unsupported. */
  arch: SeccompArch | null;
  /** The kernel has seccomp filters (the "Seccomp:" line of /proc/self/status). */
  seccomp: boolean;
  tools: SandboxTools;
  /** bubblewrap ran a probe with the namespaces a sandbox needs. */
  bwrapWorks: boolean;
  /** util-linux unshare ran a probe with the namespaces of the fallback. */
  unshareWorks: boolean;
  /** The best level available: full, degraded or none. */
  best: SandboxLevel;
  /** Can the util-linux fallback run (root + unshare + setpriv + prlimit)? */
  fallback: boolean;
  /** Why a level is missing, for the log. */
  problems: string[];
  /** Cgroups per module (cgroup.ts); unset only in hand-made capabilities (tests). Without them "full" becomes "degraded". */
  cgroups?: CgroupSupport;
}

const SYSTEM_DIRS = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"];

async function findTool(name: string): Promise<string | null> {
  for (const dir of SYSTEM_DIRS) {
    const file = `${dir}/${name}`;
    try {
      await access(file, constants.X_OK);
      return file;
    } catch {
      // try the next directory
    }
  }
  return null;
}

/** A probe, run by the tool runner (no fork of the host). */
async function run(command: string, args: string[]): Promise<{ ok: boolean; stderr: string }> {
  const r = await runTool({ file: command, args, timeoutMs: 5000 }).catch((err: Error) => ({ code: null, stderr: "", error: err.message, timedOut: false, signal: null }));
  const ok = r.code === 0 && !r.error && !r.timedOut;
  return { ok, stderr: r.stderr.trim() || (r.error ?? (r.timedOut ? "timed out after 5000 ms" : ok ? "" : `exited with ${r.signal ?? `code ${r.code}`}`)) };
}

async function probe(): Promise<SandboxCapabilities> {
  const names = ["bwrap", "setpriv", "prlimit", "unshare", "sh", "bash", "true", "chown", "mount"] as const;
  const found = await Promise.all(names.map(findTool));
  const tools = Object.fromEntries(names.map((n, i) => [n, found[i] ?? null])) as unknown as SandboxTools;
  const root = process.getuid?.() === 0;
  const arch = hostSeccompArch();
  const seccomp = /^Seccomp:/m.test(await readFile("/proc/self/status", "utf8").catch(() => ""));
  const problems: string[] = [];

  let bwrapWorks = false;
  if (!tools.bwrap) problems.push("bubblewrap is not installed (apt-get install bubblewrap)");
  else if (!tools.true) problems.push("no `true` binary to probe bubblewrap with");
  else {
    // The namespaces and the newer options (--perms, --size: bubblewrap 0.8) of a real
    // sandbox; as a non-root host bubblewrap needs a user namespace.
    const args = [...(root ? [] : ["--unshare-user", "--disable-userns"]), "--unshare-pid", "--unshare-net", "--unshare-ipc",
      "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--ro-bind", "/", "/", "--proc", "/proc",
      "--dev", "/dev", "--perms", "1777", "--size", "1048576", "--tmpfs", "/tmp", "--", tools.true];
    const r = await run(tools.bwrap, args);
    bwrapWorks = r.ok;
    if (!r.ok) problems.push(`bubblewrap does not work here: ${r.stderr}`);
  }

  let unshareWorks = false;
  if (!root) problems.push("the host is not root: it cannot run modules under a uid of their own");
  if (!tools.setpriv || !tools.prlimit || !tools.unshare || !tools.mount || !tools.sh) {
    problems.push("util-linux setpriv/prlimit/unshare/mount (or /bin/sh) missing");
  } else if (root && tools.true) {
    const r = await run(tools.unshare, ["--pid", "--fork", "--net", "--ipc", "--uts", "--mount", "--", tools.true]);
    unshareWorks = r.ok;
    if (!r.ok) problems.push(`unshare does not work here: ${r.stderr}`);
  }
  if (!arch) problems.push(`no seccomp syscall table for ${process.arch}`);
  if (!seccomp) problems.push("the kernel has no seccomp filters");
  if (!tools.chown) problems.push("no chown binary (needed to hand the data directory to the module's uid)");

  const utilLinux = Boolean(tools.setpriv && tools.prlimit && tools.sh);
  const full = root && bwrapWorks && utilLinux && Boolean(arch) && seccomp && Boolean(tools.chown);
  const fallback = root && unshareWorks && utilLinux && Boolean(tools.mount && tools.chown);
  // A non-root host with working bubblewrap still gets namespaces, seccomp and most rlimits.
  const bwrapNoDrop = !root && bwrapWorks && utilLinux && Boolean(arch) && seccomp;
  const best: SandboxLevel = full ? "full" : fallback || bwrapNoDrop ? "degraded" : "none";
  const cgroups = await detectCgroups();
  return { root, arch, seccomp, tools, bwrapWorks, unshareWorks, best, fallback, problems, cgroups };
}

let cached: Promise<SandboxCapabilities> | undefined;

/** What this machine supports (probed once; later calls share the answer). */
export function detectSandbox(): Promise<SandboxCapabilities> {
  cached ??= probe();
  return cached;
}
