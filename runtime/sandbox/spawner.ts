// The spawner: one small long-lived `node` process that starts the module processes (native
// modules and isolate hosts, pooled or not) for the host, so that the host's event loop never
// forks its own large process for them (9-35 ms of the loop per spawn on a 2-core machine, paid
// again at every restart). A sibling of the tool runner (tool-runner.ts), built the same way,
// not the runner itself: the runner runs a fixed list of system tools, the spawner runs the
// command the host built (the sandbox launcher, or the module itself when the sandbox is off);
// and a spawner that dies takes module processes with it, which the host must report and
// restart, while a runner that dies only fails a tool call.
//
// What it does, per call from the host (its IPC channel, which only the host holds): spawn the
// command with the environment and working directory the call names (nothing inherited), in
// its own process group, with stdin closed and stdout, stderr and fd 3 (the module's channel)
// as socketpairs, exactly as the host's own spawn did; reads none of them (stopped before the
// first read), reports the pid at once and passes the three sockets to the host as handles
// (SCM_RIGHTS), closing its own copies; reports the exit (code, signal) when it happens; kills
// on the host's request, and only a child it has not reaped (Node's kill does nothing after the
// exit). The sandbox is built by the command itself (launcher.ts: cgroup, prlimit, bwrap,
// seccomp, setpriv), so it is exactly what it was when the host spawned it.
//
// What a module can reach of it: nothing. Its IPC channel is fd 3 of the spawner, which every
// module's own channel replaces in the child; it closes, at start, every descriptor it
// inherited without close-on-exec, so a module inherits nothing of it. It runs as the host's
// user, in its own session (a Ctrl-C at the terminal reaches the host, which stops modules in
// order, not the spawner).
//
// Lifecycle: held by the host (holdSpawner, started at boot while the heap is small), or
// started at the first spawn. When the host goes (stopped, or killed with -9: the kernel closes
// the channel), it kills the process group of every child it still has and exits, so a host
// killed -9 leaves no module process behind. When the spawner dies, every call in flight fails
// naming it, and each process it started is reported as ended ("its spawner ended ...": the
// supervisor restarts it per its policy); those processes die with it in every sandbox mode:
// each runs under setpriv --pdeathsig KILL (and bwrap's --die-with-parent where bwrap runs
// it), and is killed with its cgroup (released at its exit). The next spawn starts a new
// spawner.

import { spawn, type ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import type { Socket } from "node:net";
import { CLOSE_INHERITED_FDS } from "./inherited-fds.ts";

/** Bounds of one spawn call (the host builds them; the spawner refuses anything past them). */
export const SPAWN_LIMITS = { args: 4096, bytes: 1024 * 1024 } as const;
/** How long a spawn may take in the spawner before the host gives up on it (and replaces it). */
const SPAWN_DEADLINE_MS = 60_000;

export interface SpawnRequest {
  command: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  /** Tie the process to the spawner (setpriv --pdeathsig KILL and a parent check): for a process no sandbox ties to it. */
  tie?: boolean;
}

// The spawner's program (CommonJS, run with `node -e`), short enough to read whole.
const PROGRAM = `"use strict";
const { spawn } = require("node:child_process");
const fs = require("node:fs");
// Descriptors inherited without close-on-exec (besides stdio and this channel, fd 3) would
// reach every module: closed now.
${CLOSE_INHERITED_FDS}const LIMITS = ${JSON.stringify(SPAWN_LIMITS)};
// A call with tie: true (a process no sandbox ties to this spawner: sandbox "off") runs under
// setpriv --pdeathsig KILL (util-linux), then a shell that goes on only while its parent is
// still this spawner (one that died before setpriv's prctl would not signal it), each exec'ing
// the next (same pid): a spawner that dies, even by SIGKILL, takes it along. Before, a module
// run with the sandbox "off" outlived a spawner killed -9. Sandboxed processes have bwrap's
// --die-with-parent or the fallback's own setpriv, and their cgroup, killed when the host
// learns that the spawner ended: the two execs (~9 ms a start at load 4 here) are not paid twice.
const setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].find((f) => { try { fs.accessSync(f, fs.constants.X_OK); return true; } catch { return false; } });
const WITH_PARENT = setpriv ? [setpriv, "--pdeathsig", "KILL", "--", "/bin/sh", "-c", '[ "$PPID" = "$0" ] || exit 97; exec "$@"', String(process.pid)] : [];
const kids = new Map();
const send = (m, h) => { if (process.connected) process.send(m, h); };
const live = (c) => c.exitCode === null && c.signalCode === null;
process.on("disconnect", () => {
  for (const c of kids.values()) if (live(c)) { try { process.kill(-c.pid, "SIGKILL"); } catch {} c.kill("SIGKILL"); }
  process.exit(0);
});
const str = (s) => typeof s === "string" && s.length <= LIMITS.bytes && !s.includes("\\0");
function valid(m) {
  if (!Number.isInteger(m.id) || !str(m.command) || !str(m.cwd) || !Array.isArray(m.args) || m.args.length > LIMITS.args) return false;
  if (!m.env || typeof m.env !== "object") return false;
  let bytes = m.command.length + m.cwd.length;
  for (const a of m.args) { if (!str(a)) return false; bytes += a.length; }
  for (const [k, v] of Object.entries(m.env)) { if (!str(k) || !str(v)) return false; bytes += k.length + v.length; }
  return bytes <= LIMITS.bytes;
}
process.on("message", (m) => {
  if (!m || typeof m !== "object") return;
  if (m.t === "kill") { const c = kids.get(m.id); if (c && live(c)) c.kill(m.signal); return; }
  if (m.t !== "spawn") return;
  if (!valid(m)) { send({ t: "failed", id: m.id, error: "the spawner refused a malformed call (over " + LIMITS.args + " arguments or " + LIMITS.bytes + " bytes, or not strings)" }); return; }
  let c;
  const tied = setpriv !== undefined && m.tie === true;
  // A command that cannot start is said as Node says it, not as setpriv's exit.
  if (tied && m.command.startsWith("/")) {
    try { fs.accessSync(m.command, fs.constants.X_OK); }
    catch (err) { send({ t: "failed", id: m.id, error: "spawn " + m.command + " " + (err && err.code || "EACCES") }); return; }
  }
  const [file, argv] = tied ? [setpriv, [...WITH_PARENT.slice(1), m.command, ...m.args]] : [m.command, m.args];
  try { c = spawn(file, argv, { cwd: m.cwd, env: m.env, stdio: ["ignore", "pipe", "pipe", "pipe"], detached: true }); }
  catch (err) { send({ t: "failed", id: m.id, error: String(err && err.message || err) }); return; }
  const socks = [c.stdio[1], c.stdio[2], c.stdio[3]];
  // Not one byte is read here: what the module writes is the host's to read.
  for (const s of socks) { if (s && s._handle) s._handle.readStop(); if (s) s.pause(); }
  // A spawn that failed (no pid) says why; a failed kill later (the process already gone) says nothing.
  c.on("error", (err) => { if (c.pid === undefined) send({ t: "failed", id: m.id, error: err.message }); });
  if (c.pid === undefined) return;
  kids.set(m.id, c);
  send({ t: "pid", id: m.id, pid: c.pid });
  ["stdout", "stderr", "channel"].forEach((k, i) => send({ t: "fd", id: m.id, k }, socks[i]));
  c.on("exit", (code, signal) => { kids.delete(m.id); send({ t: "exit", id: m.id, code, signal }); });
});
`;

/**
 * A process the spawner started: what the host's code uses of a ChildProcess (pid, kill, the
 * "exit" event). `lost` says why it is reported as ended when its spawner died.
 */
class SpawnedProcess extends EventEmitter {
  pid: number | undefined;
  exitCode: number | null = null;
  signalCode: NodeJS.Signals | null = null;
  lost: string | undefined;
  private ended = false;

  constructor(private readonly owner: Spawner, readonly id: number) {
    super();
  }

  /** Ask the spawner to signal it; false once it has ended (never a pid it has reaped). */
  kill(signal: NodeJS.Signals = "SIGTERM"): boolean {
    if (this.ended) return false;
    return this.owner.kill(this.id, signal);
  }

  /** Called by the spawner's client: it ended (or its spawner did). */
  end(code: number | null, signal: NodeJS.Signals | null, lost?: string): void {
    if (this.ended) return;
    this.ended = true;
    this.exitCode = code;
    this.signalCode = signal;
    this.lost = lost;
    this.emit("exit", code, signal);
  }
}

/** A started process and its three sockets (stdout, stderr, the channel on fd 3). */
export interface Spawned {
  child: SpawnedProcess;
  stdout: Socket;
  stderr: Socket;
  channel: Socket;
}

interface Pending {
  what: string;
  proc: SpawnedProcess;
  socks: Partial<Record<"stdout" | "stderr" | "channel", Socket>>;
  resolve(s: Spawned): void;
  reject(e: Error): void;
  deadline: NodeJS.Timeout;
}

class Spawner {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  private readonly pending = new Map<number, Pending>();
  private readonly live = new Map<number, SpawnedProcess>();
  private nextId = 1;

  constructor() {
    this.child = spawn(process.execPath, ["--max-old-space-size=64", "-e", PROGRAM], { stdio: ["ignore", "ignore", "inherit", "ipc"], env: {}, detached: true });
    this.child.unref();
    this.refresh();
    this.child.on("message", (m: { t: string; id: number; k?: string; pid?: number; code?: number | null; signal?: NodeJS.Signals | null; error?: string }, handle?: Socket) => this.onMessage(m, handle));
    this.exited = new Promise((resolve) => {
      this.child.on("exit", (code, signal) => {
        if (spawner === this) spawner = undefined;
        const how = signal ? `killed by ${signal}` : `exited with code ${code}`;
        const pid = this.child.pid;
        for (const [id, p] of [...this.pending]) {
          this.settle(id);
          for (const s of Object.values(p.socks)) s.destroy();
          p.reject(new Error(`the spawner (pid ${pid}) ${how} while starting ${p.what}: try again (the next start starts a new spawner)`));
        }
        for (const proc of [...this.live.values()]) {
          this.live.delete(proc.id);
          proc.end(null, null, `its spawner (pid ${pid}) ${how}, so the process was stopped with it`);
        }
        this.refresh();
        resolve();
      });
      this.child.on("error", () => { if (this.child.pid === undefined) this.child.emit("exit", null, null); });
    });
  }

  spawn(req: SpawnRequest): Promise<Spawned> {
    const id = this.nextId++;
    const what = `${req.command} ${req.args.join(" ")}`.slice(0, 200);
    const proc = new SpawnedProcess(this, id);
    return new Promise<Spawned>((resolve, reject) => {
      // Checked after the loop's next poll: a host whose own loop was held past the deadline
      // reads the spawner's answers (already waiting) before it judges the spawner stuck.
      const deadline = setTimeout(() => setImmediate(() => {
        if (!this.pending.has(id)) return;
        reject(new Error(`the spawner did not start ${what} within ${SPAWN_DEADLINE_MS} ms: it is replaced (its processes are reported as ended); try again`));
        this.settle(id);
        this.child.kill("SIGKILL");
      }), SPAWN_DEADLINE_MS);
      this.pending.set(id, { what, proc, socks: {}, resolve, reject, deadline });
      this.refresh();
      this.child.send({ t: "spawn", id, command: req.command, args: req.args, env: req.env, cwd: req.cwd, tie: req.tie === true }, (err) => {
        if (!err || !this.pending.has(id)) return;
        this.settle(id);
        reject(new Error(`could not hand ${what} to the spawner: ${err.message}`));
      });
    });
  }

  kill(id: number, signal: NodeJS.Signals): boolean {
    if (!this.live.has(id) || !this.child.connected) return false;
    this.child.send({ t: "kill", id, signal });
    return true;
  }

  private onMessage(m: { t: string; id: number; k?: string; pid?: number; code?: number | null; signal?: NodeJS.Signals | null; error?: string }, handle?: Socket): void {
    const p = this.pending.get(m.id);
    if (m.t === "pid" && p) {
      p.proc.pid = m.pid;
      this.live.set(m.id, p.proc);
    } else if (m.t === "fd" && p && handle && (m.k === "stdout" || m.k === "stderr" || m.k === "channel")) {
      p.socks[m.k] = handle;
      const { stdout, stderr, channel } = p.socks;
      if (stdout && stderr && channel) {
        this.settle(m.id);
        p.resolve({ child: p.proc, stdout, stderr, channel });
      }
    } else if (m.t === "failed" && p) {
      this.settle(m.id);
      p.reject(new Error(`could not start process: ${m.error}`));
    } else if (m.t === "exit") {
      const proc = this.live.get(m.id);
      this.live.delete(m.id);
      if (p) {
        // Ended before its sockets arrived (cannot happen: messages keep their order); said anyway.
        this.settle(m.id);
        p.reject(new Error(`the process ended before the spawner passed its sockets (${m.signal ? `killed by ${m.signal}` : `exit code ${m.code}`})`));
      }
      proc?.end(m.code ?? null, m.signal ?? null);
      this.refresh();
    }
  }

  private settle(id: number): void {
    const p = this.pending.get(id);
    if (!p) return;
    clearTimeout(p.deadline);
    this.pending.delete(id);
    this.refresh();
  }

  /** The channel keeps the host alive only while a spawn is in flight or a process it started runs. */
  private refresh(): void {
    const ch = (this.child as unknown as { channel?: { ref(): void; unref(): void } }).channel;
    if (this.pending.size > 0 || this.live.size > 0) ch?.ref();
    else ch?.unref();
  }
}

let spawner: Spawner | undefined;
let holders = 0;

/** Start a process through the spawner (started now if none runs). */
export function spawnViaSpawner(req: SpawnRequest): Promise<Spawned> {
  spawner ??= new Spawner();
  return spawner.spawn(req);
}

/**
 * A host's hold on the spawner, started now if none runs (at boot, while the heap is small).
 * The hosts of one process share it; it stops when the last lets go (the function returned).
 */
export function holdSpawner(): () => Promise<void> {
  holders++;
  spawner ??= new Spawner();
  let released = false;
  return async () => {
    if (released) return;
    released = true;
    if (--holders === 0) await stopSpawner();
  };
}

/** Stop the spawner now (it kills what it still runs); a later spawn starts a new one. */
export async function stopSpawner(): Promise<void> {
  const s = spawner;
  if (!s) return;
  spawner = undefined;
  s.child.ref();
  if (s.child.connected) s.child.disconnect();
  await s.exited;
}

/** The spawner's pid, if one runs (tests). */
export function spawnerPid(): number | undefined {
  return spawner?.child.pid;
}
