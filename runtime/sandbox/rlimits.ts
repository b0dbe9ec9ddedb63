// Resource limits through util-linux prlimit: it sets them on itself and execs the rest of
// the chain, so the sandbox tools and the module inherit them. Soft and hard limits are equal
// (the module cannot raise them; it has no CAP_SYS_RESOURCE), except CPU time: SIGXCPU at the
// soft limit lets a program notice, SIGKILL one second later ends it regardless.
//
// RLIMIT_NPROC is only enforced for a non-root real uid (the kernel exempts root and holders of
// CAP_SYS_ADMIN/CAP_SYS_RESOURCE), which is why the module runs under a uid of its own: the
// limit then counts that module's processes and threads and nothing else. When the host is not
// root there is no such uid (the module runs as the host's user), so the limit is left out:
// it would count the host's own processes too.

import type { SandboxLimits } from "./policy.ts";

const MB = 1024 * 1024;

export function prlimitArgs(limits: SandboxLimits, opts: { nproc: boolean }): string[] {
  const args: string[] = ["--core=0"];
  if (limits.address_space_mb > 0) args.push(`--as=${limits.address_space_mb * MB}`);
  if (limits.open_files > 0) args.push(`--nofile=${limits.open_files}`);
  if (limits.processes > 0 && opts.nproc) args.push(`--nproc=${limits.processes}`);
  if (limits.cpu_seconds > 0) args.push(`--cpu=${limits.cpu_seconds}:${limits.cpu_seconds + 1}`);
  if (limits.file_size_mb > 0) args.push(`--fsize=${limits.file_size_mb * MB}`);
  return args;
}
