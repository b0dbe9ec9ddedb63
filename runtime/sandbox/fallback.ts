// The degraded sandbox, from util-linux alone (no bubblewrap): new PID, network, IPC, UTS, mount
// and cgroup namespaces made by unshare (as root, so no user namespace), private tmpfs over /tmp,
// /var/tmp and /dev/shm, then setpriv drops to the module's uid with no capabilities and
// no_new_privs. Not provided: a read-only, minimal view of the file system (the module sees the
// host's whole tree with the rights of its uid: world-readable files are readable, and
// world-writable places other than the three above are writable) and the seccomp filter (no
// util-linux tool loads one before 2.40): unprivileged syscalls such as keyctl, io_uring and
// unshare(CLONE_NEWUSER) stay available.
//
// Process chain: setpriv --pdeathsig KILL (so unshare dies with the host) -> unshare --fork
// --kill-child (its child dies with it) -> sh (as root in the new mount namespace: the tmpfs
// mounts) -> setpriv (drop; re-arms the parent-death signal, which a uid change clears) -> module.
// The module is PID 1 of its namespace: when it exits, the kernel kills whatever it forked.

import path from "node:path";
import type { SpawnSpec } from "../process.ts";
import type { SandboxPolicy } from "./policy.ts";
import type { SandboxTools } from "./detect.ts";
import { setprivDropArgs, TMP_SIZE_MB } from "./bwrap.ts";
import { unsetShellVars } from "./launcher.ts";

const PRIVATE_TMP = ["/tmp", "/var/tmp", "/dev/shm"];

function isInside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel === "" || (!rel.startsWith("..") && !path.isAbsolute(rel));
}

/** The command after prlimit: setpriv ... unshare ... sh ... setpriv ... module. */
export function fallbackArgs(spec: SpawnSpec, policy: SandboxPolicy, tools: SandboxTools, notes: string[]): string[] {
  const { setpriv, unshare, sh, mount } = tools;
  if (!setpriv || !unshare || !sh || !mount) throw new Error("util-linux setpriv/unshare/mount or /bin/sh missing");
  // A tmpfs over a directory holding the module's own files or data would hide them.
  const tmpDirs = PRIVATE_TMP.filter((d) => {
    const own = [policy.dataDir, policy.moduleDir, ...(policy.readOnly ?? []), spec.cwd].filter((p): p is string => p !== null);
    const hides = own.some((p) => isInside(p, d));
    if (hides) notes.push(`${d} is shared with the host (the module's files are inside it)`);
    return !hides;
  });
  // Fixed directory names from the list above: safe to put in the script.
  const script = [
    ...tmpDirs.map((d) => `if [ -d ${d} ]; then ${mount} -t tmpfs -o nosuid,nodev,size=${TMP_SIZE_MB}m,mode=1777 modhost-tmp ${d} || exit 121; fi`),
    `${unsetShellVars(spec.env)}exec "$@"`,
  ].join("\n");
  return [
    setpriv, "--pdeathsig=KILL", "--",
    unshare, "--pid", "--fork", "--kill-child", "--mount-proc", "--mount", "--propagation=private",
    "--ipc", "--uts", "--cgroup", ...(policy.network ? [] : ["--net"]), "--",
    sh, "-c", script, "modhost-sandbox",
    setpriv, ...setprivDropArgs(policy), "--pdeathsig=KILL", "--",
    spec.command, ...spec.args,
  ];
}
