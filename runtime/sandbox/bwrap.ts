// The full sandbox: bubblewrap builds a fresh mount tree and namespaces, loads the seccomp
// filter, and runs the module through setpriv, which drops it to its own unprivileged uid.
//
// Why bubblewrap runs as root and setpriv drops the uid *inside* (instead of dropping to the
// module's uid first and letting bubblewrap use an unprivileged user namespace): bubblewrap
// resolves bind sources with the caller's rights, so an unprivileged bubblewrap cannot bind a
// data directory under a root-only ancestor (the manager creates data/modules as 0700; hosts
// run from /root). And bubblewrap as root with --unshare-user would map the sandbox uid to
// host uid 0: RLIMIT_NPROC would not count it, and every root-owned 0600 file it can see would
// be its own. So: root bubblewrap without a user namespace, then a real uid of its own (NPROC
// enforced, no capabilities, no_new_privs), and the seccomp filter blocks creating user
// namespaces inside. A host that is not root gets bubblewrap's user namespace and no uid drop.

import { lstat, readlink } from "node:fs/promises";
import path from "node:path";
import type { SpawnSpec } from "../process.ts";
import type { SandboxPolicy } from "./policy.ts";
import type { SandboxTools } from "./detect.ts";

/** /etc entries every module gets: the dynamic linker's cache and the time zone. Not /etc as a
 * whole: it holds shadow, ssh host keys, TLS private keys and other services' credentials. */
const ETC_BASE = ["ld.so.cache", "localtime", "alternatives"];
/** And with network access: name resolution and the CA certificates (not ssl/private). */
const ETC_NETWORK = [
  "resolv.conf", "hosts", "nsswitch.conf", "gai.conf", "host.conf", "services", "protocols",
  "ssl/certs", "ssl/openssl.cnf", "ca-certificates", "ca-certificates.conf", "pki/tls/certs", "pki/ca-trust",
];
/** Top-level system directories: bound read-only, or recreated as the symlinks they are (merged /usr). */
export const SYSTEM_DIRS = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];
/** Size of the private /tmp (tmpfs is memory: without a cap one module could fill RAM). */
export const TMP_SIZE_MB = 64;

/** The system directories' arguments, looked up once per process (the host's own /usr layout does not change under it). */
let systemDirs: Promise<string[]> | undefined;

function systemDirArgs(): Promise<string[]> {
  systemDirs ??= lookUpSystemDirs().catch((err) => {
    systemDirs = undefined;
    throw err;
  });
  return systemDirs;
}

async function lookUpSystemDirs(): Promise<string[]> {
  const args: string[] = [];
  for (const dir of SYSTEM_DIRS) {
    const st = await lstat(dir).catch(() => undefined);
    if (!st) continue;
    if (st.isSymbolicLink()) args.push("--symlink", await readlink(dir), dir);
    else if (st.isDirectory()) args.push("--ro-bind", dir, dir);
  }
  return args;
}

/** The ancestors of `paths` that the sandbox's root does not already have, outermost first. */
function parentDirs(paths: string[]): string[] {
  const readOnly = [...SYSTEM_DIRS, "/proc", "/dev"];
  const existing = ["/etc", "/tmp"];
  const dirs = new Set<string>();
  for (const p of paths) {
    const chain: string[] = [];
    for (let d = path.dirname(p); d !== "/"; d = path.dirname(d)) chain.unshift(d);
    for (const d of chain) {
      if (existing.includes(d) || readOnly.some((m) => d === m || d.startsWith(m + "/"))) continue;
      dirs.add(d);
    }
  }
  return [...dirs];
}

export interface BwrapOptions {
  tools: SandboxTools;
  /** Drop to policy.uid/gid with setpriv (the host is root). */
  dropUid: boolean;
  /** The fd bubblewrap reads the seccomp program from. */
  seccompFd: number;
}

/** bwrap's arguments, ending with the command it runs. */
export async function bwrapArgs(spec: SpawnSpec, policy: SandboxPolicy, opts: BwrapOptions): Promise<string[]> {
  const { tools } = opts;
  const args: string[] = [
    // New PID namespace (it sees only its own processes: no kill/ptrace of the host's), IPC
    // (no System V / POSIX IPC with the host), UTS (its own hostname), cgroup (its own view).
    "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
    "--hostname", "modhost-sandbox",
    // Without network access: an empty network namespace (loopback down, nothing to reach; also
    // separates abstract Unix sockets). With it: the host's network namespace.
    ...(policy.network ? [] : ["--unshare-net"]),
    // Killed (SIGKILL) when the host dies, so no module outlives its host.
    "--die-with-parent",
    // setsid: no controlling terminal to push input into (TIOCSTI).
    "--new-session",
  ];
  if (opts.dropUid) {
    // Only what setpriv needs to switch to the module's uid (and DAC_READ_SEARCH for bwrap's
    // --chdir into the data directory, which belongs to that uid with mode 0700). The uid
    // switch then clears them all; setpriv also empties the bounding set.
    args.push("--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP", "--cap-add", "CAP_DAC_READ_SEARCH");
  } else {
    // Non-root host: an unprivileged user namespace, no capabilities, no nested user namespaces.
    args.push("--unshare-user", "--disable-userns", "--cap-drop", "ALL");
  }
  // The file system: a fresh tmpfs root holding only what is bound below. Bind mounts made by
  // bubblewrap are nosuid and, with --ro-bind, read-only.
  args.push(...(await systemDirArgs()));
  // Directories bubblewrap creates on the way to a mount point are 0700 root: unusable by
  // the module's uid. So every directory it needs to pass is created first, 0755.
  args.push("--perms", "0755", "--dir", "/etc");
  const etc: string[] = [];
  for (const entry of policy.network ? [...ETC_BASE, ...ETC_NETWORK] : ETC_BASE) {
    if (await lstat(`/etc/${entry}`).then(() => true, () => false)) etc.push(`/etc/${entry}`);
  }
  for (const dir of parentDirs(etc)) args.push("--perms", "0755", "--dir", dir);
  for (const entry of etc) args.push("--ro-bind-try", entry, entry);
  const size = String(TMP_SIZE_MB * 1024 * 1024);
  args.push(
    "--proc", "/proc", // a procfs of its own PID namespace
    "--dev", "/dev", // null, zero, full, random, urandom, tty and a private devpts; no disks
    "--perms", "1777", "--size", size, "--tmpfs", "/dev/shm", // POSIX shared memory, private
    "--perms", "1777", "--size", size, "--tmpfs", "/tmp", // a private /tmp, not the host's
  );
  const readOnly = [...(policy.moduleDir ? [policy.moduleDir] : []), ...(policy.readOnly ?? [])];
  for (const dir of parentDirs([...readOnly, ...(policy.dataDir ? [policy.dataDir] : [])])) args.push("--perms", "0755", "--dir", dir);
  // The module's own files (and whatever else the policy lists), read-only, and its data
  // directory, the one writable place. Same paths as on the host, so the command, --data-dir and
  // DATA_DIR need no translation. The data directory is bound last: it may lie inside the module
  // directory.
  for (const p of readOnly) args.push("--ro-bind", p, p);
  if (policy.dataDir) args.push("--bind", policy.dataDir, policy.dataDir);
  args.push(
    "--chdir", spec.cwd,
    // The launcher's shell may have added SHLVL (bash does on exec).
    ...("SHLVL" in spec.env ? [] : ["--unsetenv", "SHLVL"]),
    "--seccomp", String(opts.seccompFd),
    "--",
  );
  if (opts.dropUid) {
    if (!tools.setpriv) throw new Error("setpriv is missing");
    args.push(tools.setpriv, ...setprivDropArgs(policy), "--");
  }
  args.push(spec.command, ...spec.args);
  return args;
}

/** setpriv: become the module's uid/gid with no groups, no capabilities at all (the bounding set
 * too, so nothing can be regained by exec) and no_new_privs (setuid binaries do nothing). */
export function setprivDropArgs(policy: SandboxPolicy): string[] {
  return [
    `--reuid=${policy.uid}`, `--regid=${policy.gid}`, "--clear-groups",
    "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
  ];
}
