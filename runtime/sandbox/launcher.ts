// The first process of a sandboxed module: a shell one-liner that sets up file descriptors and
// execs the sandbox chain (same PID, so the host's ChildProcess is the chain).
//
//  - Enters the module's cgroup first (its pid into cgroup.procs), see cgroup.ts.
//  - fd 4 <- the seccomp program (bubblewrap's --seccomp 4). A file in a private directory,
//    opened by the shell, so spawnModuleProcess needs no extra stdio slot.
//  - Closes the file descriptors the host inherited from whoever started it without
//    close-on-exec. Node passes those on to every child, and a directory fd inside the
//    sandbox would be a way out of its mount tree (fchdir + ".."). Node's own fds are all
//    close-on-exec; the child's 0-3 are replaced by spawn anyway.

import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { lstat, mkdir, readdir, rename, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { seccompProgram } from "./seccomp.ts";
import type { SandboxTools } from "./detect.ts";

export const SECCOMP_FD = 4;
const O_CLOEXEC = 0o2000000;

/**
 * The host's file descriptors (4 and up) that a child would inherit. Read at every spawn (an
 * fd may have been opened since); each fdinfo is read synchronously: a host with many modules
 * holds a few fds per module, and three thread-pool round trips per fd per spawn made the
 * start of N modules cost O(N^2) hand-overs (~4.5 ms per spawn at 10 modules in a profile).
 */
async function inheritableFds(): Promise<number[]> {
  const fds: number[] = [];
  for (const name of await readdir("/proc/self/fd").catch(() => [] as string[])) {
    const fd = Number(name);
    if (!Number.isInteger(fd) || fd < 4) continue;
    let info = "";
    try {
      info = readFileSync(`/proc/self/fdinfo/${fd}`, "utf8");
    } catch {
      // closed meanwhile
    }
    const flags = /^flags:\s*([0-7]+)/m.exec(info)?.[1];
    if (flags !== undefined && (parseInt(flags, 8) & O_CLOEXEC) === 0) fds.push(fd);
  }
  return fds;
}

/** seccompProgram's output and its hash, by network setting (0: none, 1: network). */
const programs: Array<{ program: Uint8Array; hash: string } | undefined> = [];

/**
 * The seccomp program for this network setting, as a file named by its hash in a directory
 * only this uid can use: <tmpdir>/modhost-sandbox-<uid>, mode 0700. The name is predictable,
 * so an existing directory is only used when it is a real directory owned by us with no group
 * or other access (anyone else could otherwise plant a permissive program there).
 */
export async function seccompFile(network: boolean): Promise<string> {
  // The program depends on the network setting only: built once per process for each.
  let built = programs[network ? 1 : 0];
  if (!built) {
    const p = seccompProgram({ network });
    built = programs[network ? 1 : 0] = { program: p, hash: createHash("sha256").update(p).digest("hex").slice(0, 16) };
  }
  const { program } = built;
  const dir = path.join(os.tmpdir(), `modhost-sandbox-${process.getuid?.() ?? "user"}`);
  await mkdir(dir, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== "EEXIST") throw err;
  });
  const st = await lstat(dir);
  if (!st.isDirectory() || st.uid !== process.getuid?.() || (st.mode & 0o077) !== 0) {
    throw new Error(`${dir} is not a private directory of this user: refusing to keep the seccomp program there`);
  }
  const file = path.join(dir, `seccomp-${network ? "net" : "nonet"}-${built.hash}.bpf`);
  if (!(await stat(file).then((f) => f.size === program.length, () => false))) {
    // Write and rename: a concurrent reader never sees half a program.
    const tmp = `${file}.${randomBytes(6).toString("hex")}`;
    await writeFile(tmp, program, { mode: 0o600 });
    await rename(tmp, file);
  }
  return file;
}

/** A shell exports variables of its own; remove them unless the module's environment has them.
 * (bash re-adds SHLVL on exec: bwrap unsets it again. PWD is left: bwrap sets it to the working
 * directory, as a login shell would.) */
export function unsetShellVars(env: Record<string, string>): string {
  const names = ["SHLVL", "OLDPWD", "_"].filter((n) => !(n in env));
  return names.length > 0 ? `unset ${names.join(" ")}; ` : "";
}

/** A path as one single-quoted shell word. */
function shellQuote(s: string): string {
  return `'${s.replace(/'/g, "'\\''")}'`;
}

/**
 * The shell's first step when the module has a cgroup (cgroup.ts): write its own pid into each
 * cgroup.procs file, or exit 125 without running anything. Everything the module runs descends
 * from this shell, so nothing of it ever runs outside the cgroup.
 */
function enterCgroupScript(procsFiles: string[]): string {
  if (procsFiles.length === 0) return "";
  const writes = procsFiles.map((f) => `echo $$ >${shellQuote(f)}`).join(" && ");
  return `{ ${writes}; } 2>/dev/null || { echo "modhost sandbox: cannot enter the module's cgroup" >&2; exit 125; }; `;
}

/** command/args that run `chain` with fd 4 = seccompPath (if given) and leaked fds closed,
 * after entering the cgroup whose cgroup.procs files are given. */
export async function launcher(
  chain: string[],
  tools: SandboxTools,
  seccompPath: string | undefined,
  env: Record<string, string>,
  notes: string[],
  cgroupProcs: string[] = [],
): Promise<{ command: string; args: string[] }> {
  const leaked = (await inheritableFds()).filter((fd) => !(seccompPath && fd === SECCOMP_FD));
  // dash (Debian's sh) only knows single-digit fds in redirections; bash knows any.
  const shell = (leaked.some((fd) => fd > 9) && tools.bash) || tools.sh || tools.bash;
  if (!shell) throw new Error("no /bin/sh");
  const closable = shell === tools.bash ? leaked : leaked.filter((fd) => fd <= 9);
  const unclosed = leaked.filter((fd) => !closable.includes(fd));
  if (unclosed.length > 0) notes.push(`inherited file descriptors ${unclosed.join(", ")} reach the sandbox (no bash to close them)`);
  const redirections = [
    ...(seccompPath ? [`${SECCOMP_FD}<"$0"`] : []),
    ...closable.map((fd) => `${fd}>&-`),
  ];
  return { command: shell, args: ["-c", `${enterCgroupScript(cgroupProcs)}${unsetShellVars(env)}exec "$@" ${redirections.join(" ")}`, seccompPath ?? "modhost-sandbox", ...chain] };
}
