// The seccomp filter of a sandboxed native module: a classic BPF program, generated here and
// handed to bubblewrap (`--seccomp FD`), which loads it just before it runs the module.
//
// Everything is allowed except a deny list of syscalls that a Bitcoin-node plugin has no use
// for and that are either privileged, kernel attack surface, or ways around the sandbox:
// ptrace and cross-process memory access, mounts and namespaces, kernel modules and keyrings,
// eBPF, io_uring (its SOCKET opcode would bypass the socket-family check below), the clock,
// reboot/swap/kexec. Denied calls fail with EPERM (SECCOMP_RET_ERRNO) so a program sees an
// ordinary error instead of dying. Two argument checks:
//   - socket(): AF_UNIX without network access; only AF_INET/AF_INET6 with it. No AF_PACKET,
//     AF_NETLINK, raw sockets of other families, etc. A module with network access shares the
//     host's network namespace, and with it every abstract Unix socket of the machine (names
//     starting with a NUL byte: no file, so no file permission and no mount namespace stands
//     between them and any process of that namespace): socket(AF_UNIX) would let it connect to
//     them all. socketpair() stays allowed (a program's pipes to its own children).
//   - clone(): no namespace flags (a new user namespace would hand the module a fresh set of
//     capabilities to attack the kernel with). clone3() passes its flags in memory, which BPF
//     cannot read, so it fails with ENOSYS and libc falls back to clone() (what Docker does).
// The architecture is checked first: x86_64 and aarch64 have their own syscall tables below;
// any other architecture (i386 via int 0x80 on x86_64, say) and the x32 ABI kill the process.
//
// Instruction format (linux/filter.h, struct sock_filter), little-endian, 8 bytes:
//   u16 code, u8 jt, u8 jf, u32 k.
// struct seccomp_data: u32 nr at 0, u32 arch at 4, u64 instruction_pointer at 8,
// u64 args[6] at 16 (the low 32 bits of args[i] at 16 + 8 i on little-endian machines).

export type SeccompArch = "x86_64" | "aarch64";

export const AUDIT_ARCH = { x86_64: 0xc000003e, aarch64: 0xc00000b7 } as const;

const LD_W_ABS = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JMP_JA = 0x05; // BPF_JMP | BPF_JA
const JMP_JEQ_K = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JMP_JGE_K = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JMP_JSET_K = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RET_K = 0x06; // BPF_RET | BPF_K

export const SECCOMP_RET_KILL_PROCESS = 0x80000000;
export const SECCOMP_RET_ERRNO = 0x00050000;
export const SECCOMP_RET_ALLOW = 0x7fff0000;
const EPERM = 1;
const ENOSYS = 38;

const AF_UNIX = 1;
const AF_INET = 2;
const AF_INET6 = 10;

/** CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET (not NEWTIME: it overlaps CSIGNAL in clone()). */
const CLONE_NS_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000;

/** The x32 ABI marks its syscall numbers with this bit (on the x86_64 audit arch). */
const X32_SYSCALL_BIT = 0x40000000;

/** Syscalls denied with EPERM, by name. Numbers per architecture below (checked against the kernel headers by the tests). */
export const DENIED_SYSCALLS = [
  "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
  "mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
  "unshare", "setns",
  "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
  "keyctl", "add_key", "request_key",
  "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
  "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "vhangup",
  "clock_settime", "settimeofday", "adjtimex", "clock_adjtime", "sethostname", "setdomainname",
  "name_to_handle_at", "open_by_handle_at", "fanotify_init", "lookup_dcookie",
] as const;

type DeniedSyscall = (typeof DENIED_SYSCALLS)[number];

interface SyscallTable {
  denied: Record<DeniedSyscall, number>;
  /** Syscalls that only exist on some architectures (x86_64 legacy I/O port access). */
  extraDenied: number[];
  socket: number;
  clone: number;
  clone3: number;
}

export const SYSCALLS: Record<SeccompArch, SyscallTable> = {
  x86_64: {
    denied: {
      ptrace: 101, process_vm_readv: 310, process_vm_writev: 311, kcmp: 312, pidfd_getfd: 438,
      mount: 165, umount2: 166, pivot_root: 155, chroot: 161, open_tree: 428, move_mount: 429, fsopen: 430, fsconfig: 431, fsmount: 432, fspick: 433, mount_setattr: 442,
      unshare: 272, setns: 308,
      bpf: 321, perf_event_open: 298, userfaultfd: 323, io_uring_setup: 425, io_uring_enter: 426, io_uring_register: 427,
      keyctl: 250, add_key: 248, request_key: 249,
      init_module: 175, finit_module: 313, delete_module: 176, kexec_load: 246, kexec_file_load: 320,
      reboot: 169, swapon: 167, swapoff: 168, acct: 163, quotactl: 179, syslog: 103, vhangup: 153,
      clock_settime: 227, settimeofday: 164, adjtimex: 159, clock_adjtime: 305, sethostname: 170, setdomainname: 171,
      name_to_handle_at: 303, open_by_handle_at: 304, fanotify_init: 300, lookup_dcookie: 212,
    },
    extraDenied: [172 /* iopl */, 173 /* ioperm */, 134 /* uselib */],
    socket: 41,
    clone: 56,
    clone3: 435,
  },
  aarch64: {
    denied: {
      ptrace: 117, process_vm_readv: 270, process_vm_writev: 271, kcmp: 272, pidfd_getfd: 438,
      mount: 40, umount2: 39, pivot_root: 41, chroot: 51, open_tree: 428, move_mount: 429, fsopen: 430, fsconfig: 431, fsmount: 432, fspick: 433, mount_setattr: 442,
      unshare: 97, setns: 268,
      bpf: 280, perf_event_open: 241, userfaultfd: 282, io_uring_setup: 425, io_uring_enter: 426, io_uring_register: 427,
      keyctl: 219, add_key: 217, request_key: 218,
      init_module: 105, finit_module: 273, delete_module: 106, kexec_load: 104, kexec_file_load: 294,
      reboot: 142, swapon: 224, swapoff: 225, acct: 89, quotactl: 60, syslog: 116, vhangup: 58,
      clock_settime: 112, settimeofday: 170, adjtimex: 171, clock_adjtime: 266, sethostname: 161, setdomainname: 162,
      name_to_handle_at: 264, open_by_handle_at: 265, fanotify_init: 262, lookup_dcookie: 18,
    },
    extraDenied: [],
    socket: 198,
    clone: 220,
    clone3: 435,
  },
};

export interface SeccompOptions {
  /** Allow AF_INET and AF_INET6 sockets, and no AF_UNIX ones (the module has network access). */
  network: boolean;
}

/** A tiny assembler: jumps name labels; offsets are resolved (and range-checked) at the end. */
class Program {
  private readonly insns: Array<{ code: number; jt: number | string; jf: number | string; k: number | string }> = [];
  private readonly labels = new Map<string, number>();

  label(name: string): this {
    this.labels.set(name, this.insns.length);
    return this;
  }
  load(offset: number): this {
    return this.push(LD_W_ABS, 0, 0, offset);
  }
  jeq(k: number, jt: number | string, jf: number | string): this {
    return this.push(JMP_JEQ_K, jt, jf, k);
  }
  jge(k: number, jt: number | string, jf: number | string): this {
    return this.push(JMP_JGE_K, jt, jf, k);
  }
  jset(k: number, jt: number | string, jf: number | string): this {
    return this.push(JMP_JSET_K, jt, jf, k);
  }
  ja(target: string): this {
    return this.push(JMP_JA, 0, 0, target);
  }
  ret(k: number): this {
    return this.push(RET_K, 0, 0, k);
  }

  private push(code: number, jt: number | string, jf: number | string, k: number | string): this {
    this.insns.push({ code, jt, jf, k });
    return this;
  }

  /** Relative offset from the instruction after `at` to a label (or a literal skip count). */
  private offset(at: number, target: number | string, max: number): number {
    if (typeof target === "number") return target;
    const dest = this.labels.get(target);
    if (dest === undefined) throw new Error(`seccomp: unknown label ${target}`);
    const rel = dest - at - 1;
    if (rel < 0 || rel > max) throw new Error(`seccomp: jump to ${target} out of range (${rel})`);
    return rel;
  }

  assemble(): Buffer {
    if (this.insns.length > 4096) throw new Error("seccomp: program too long (BPF_MAXINSNS is 4096)");
    const out = Buffer.alloc(this.insns.length * 8);
    this.insns.forEach((insn, i) => {
      const ja = insn.code === JMP_JA;
      out.writeUInt16LE(insn.code, i * 8);
      out.writeUInt8(ja ? 0 : this.offset(i, insn.jt, 255), i * 8 + 2);
      out.writeUInt8(ja ? 0 : this.offset(i, insn.jf, 255), i * 8 + 3);
      out.writeUInt32LE(ja ? this.offset(i, insn.k, 0xffffffff) : (insn.k as number) >>> 0, i * 8 + 4);
    });
    return out;
  }
}

const NR = 0;
const ARCH = 4;
const ARG0_LO = 16;

/** The raw BPF program (sock_filter array) for `bwrap --seccomp FD`. */
export function seccompProgram(opts: SeccompOptions): Buffer {
  // Not AF_UNIX with network access: the host's network namespace holds the machine's abstract Unix sockets.
  const families = opts.network ? [AF_INET, AF_INET6] : [AF_UNIX];
  const p = new Program();
  p.load(ARCH);
  p.jeq(AUDIT_ARCH.x86_64, 0, 1).ja("x86_64");
  p.jeq(AUDIT_ARCH.aarch64, 0, 1).ja("aarch64");
  p.ret(SECCOMP_RET_KILL_PROCESS);
  for (const arch of ["x86_64", "aarch64"] as const) {
    const t = SYSCALLS[arch];
    p.label(arch).load(NR);
    if (arch === "x86_64") p.jge(X32_SYSCALL_BIT, 0, 1).ret(SECCOMP_RET_KILL_PROCESS);
    for (const nr of [...Object.values(t.denied), ...t.extraDenied]) p.jeq(nr, 0, 1).ret(SECCOMP_RET_ERRNO | EPERM);
    p.jeq(t.clone3, 0, 1).ret(SECCOMP_RET_ERRNO | ENOSYS);
    p.jeq(t.clone, 0, `${arch}-socket`);
    p.load(ARG0_LO).jset(CLONE_NS_FLAGS, `${arch}-eperm`, `${arch}-allow`);
    p.label(`${arch}-socket`).jeq(t.socket, 0, `${arch}-allow`);
    p.load(ARG0_LO);
    for (const family of families) p.jeq(family, `${arch}-allow`, 0);
    p.label(`${arch}-eperm`).ret(SECCOMP_RET_ERRNO | EPERM);
    p.label(`${arch}-allow`).ret(SECCOMP_RET_ALLOW);
  }
  return p.assemble();
}

/** The seccomp arch of this machine, or null when we have no syscall table for it. */
export function hostSeccompArch(): SeccompArch | null {
  return process.arch === "x64" ? "x86_64" : process.arch === "arm64" ? "aarch64" : null;
}
