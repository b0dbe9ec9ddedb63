// The tool runner: one small long-lived `node` process that runs the host's system tools (the
// data volume's mount, umount, losetup, tune2fs, mkfs.ext4, e2fsck, resize2fs and cp; the data
// directory's chown; the sandbox probes' bwrap and unshare) on the host's behalf, so that the
// host's event loop never forks its own large process for them (9-35 ms of the loop per spawn
// on a 2-core machine, several per module start). The runner forks its own small process.
//
// What it may run: a fixed list (RUNNER_TOOLS), by absolute path in the system directories
// (SYSTEM_DIRS), checked in the runner itself; anything else is refused there. It runs as the
// host's user (root, like the tools did when the host ran them), with the environment the call
// names (nothing inherited), reachable only through its IPC channel, which only the host holds:
// modules never see it, and it gives them nothing they did not have. Each tool runs under
// `setpriv --pdeathsig KILL` (util-linux), so a runner killed mid-call takes its tools with it.
//
// Bounds: stdout and stderr are each kept up to OUTPUT_LIMIT bytes (the rest drained and
// counted, never stored); each call has a timeout (SIGTERM, then SIGKILL 5 s later) and the host
// a deadline past it. Lifecycle: started by the host at boot (before its heap grows: the fork is
// cheapest then), or at the first call; when it dies, every call in flight fails saying so, and
// the next call starts a new one. It exits when its IPC channel closes (the host stopped, or was
// killed with -9: the kernel closes the channel), killing the tools it still runs, so it leaves
// neither zombie nor orphan. Idle, it keeps no host alive (its handles are unreferenced).

import { execFile, spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { CLOSE_INHERITED_FDS } from "./inherited-fds.ts";

/** The tools the runner may run (basenames); each only from SYSTEM_DIRS. */
const RUNNER_TOOLS = ["mount", "umount", "losetup", "tune2fs", "mkfs.ext4", "e2fsck", "resize2fs", "cp", "chown", "bwrap", "unshare"] as const;
const SYSTEM_DIRS = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];
/** Bytes of stdout and of stderr kept per call (each); the rest is drained and counted. */
export const OUTPUT_LIMIT = 64 * 1024;
/** How long the host waits past a call's own timeout before it gives up on the runner (and replaces it). */
const DEADLINE_SLACK_MS = 15_000;

export interface ToolCall {
  /** Absolute path of one of RUNNER_TOOLS in a system directory. */
  file: string;
  args: string[];
  /** The tool's whole environment (nothing is inherited). */
  env?: Record<string, string>;
  timeoutMs?: number;
}

export interface ToolResult {
  /** Exit code, or null when a signal ended it. */
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  /** Bytes of output past OUTPUT_LIMIT that were dropped (stdout + stderr). */
  dropped: number;
  timedOut: boolean;
  /** Set when the tool could not be started (or was refused): why. */
  error?: string;
}

// The runner's program (CommonJS, run with `node -e`: no file to find from a bundle, nothing
// to compile). Kept short so it can be read whole.
const PROGRAM = `"use strict";
const { spawn } = require("node:child_process");
const fs = require("node:fs");
// Descriptors inherited without close-on-exec (besides stdio and this channel, fd 3) would
// reach every tool: closed now.
${CLOSE_INHERITED_FDS}
// Each tool under setpriv --pdeathsig KILL: a runner that dies (even by SIGKILL) takes its tools with it.
const setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].find((f) => { try { fs.accessSync(f, fs.constants.X_OK); return true; } catch { return false; } });
const allowed = new Set(${JSON.stringify(SYSTEM_DIRS.flatMap((d) => RUNNER_TOOLS.map((t) => `${d}/${t}`)))});
const LIMIT = ${OUTPUT_LIMIT};
const running = new Set();
const send = (m) => { if (process.connected) process.send(m); };
process.on("disconnect", () => { for (const c of running) c.kill("SIGKILL"); process.exit(0); });
process.on("message", (m) => {
  const { id, file, args, env, timeoutMs } = m;
  if (!allowed.has(file) || !Array.isArray(args) || !args.every((a) => typeof a === "string")) {
    send({ id, code: null, signal: null, stdout: "", stderr: "", dropped: 0, timedOut: false, error: "the tool runner runs only its fixed list of system tools, not " + JSON.stringify(file) });
    return;
  }
  let child;
  const argv = setpriv ? ["--pdeathsig", "KILL", "--", file, ...args] : args;
  try { child = spawn(setpriv || file, argv, { env: env || {}, stdio: ["ignore", "pipe", "pipe"] }); }
  catch (err) { send({ id, code: null, signal: null, stdout: "", stderr: "", dropped: 0, timedOut: false, error: String(err && err.message || err) }); return; }
  running.add(child);
  const out = { stdout: [], stderr: [] }, kept = { stdout: 0, stderr: 0 };
  let dropped = 0, timedOut = false, spawnError, done = false, killer;
  for (const k of ["stdout", "stderr"]) child[k].on("data", (b) => {
    const room = LIMIT - kept[k];
    if (room > 0) { out[k].push(room >= b.length ? b : b.subarray(0, room)); kept[k] += Math.min(room, b.length); }
    dropped += Math.max(0, b.length - Math.max(0, room));
  });
  const timer = timeoutMs > 0 ? setTimeout(() => { timedOut = true; child.kill("SIGTERM"); killer = setTimeout(() => child.kill("SIGKILL"), 5000); }, timeoutMs) : undefined;
  child.on("error", (err) => { spawnError = err; });
  child.on("close", (code, signal) => {
    if (done) return;
    done = true; running.delete(child); clearTimeout(timer); clearTimeout(killer);
    send({ id, code, signal, stdout: Buffer.concat(out.stdout).toString(), stderr: Buffer.concat(out.stderr).toString(), dropped, timedOut, error: spawnError && spawnError.message });
  });
});
`;

interface Pending {
  what: string;
  resolve(r: ToolResult): void;
  reject(e: Error): void;
  deadline: NodeJS.Timeout;
}

class Runner {
  readonly child: ChildProcess;
  readonly pending = new Map<number, Pending>();
  readonly exited: Promise<void>;
  private nextId = 1;

  constructor() {
    this.child = spawn(process.execPath, ["--max-old-space-size=64", "-e", PROGRAM], { stdio: ["ignore", "ignore", "inherit", "ipc"], env: {} });
    this.child.unref();
    this.idle();
    this.child.on("message", (m: ToolResult & { id: number }) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.settle(m.id);
      const { id: _, ...result } = m;
      p.resolve(result);
    });
    this.exited = new Promise((resolve) => {
      this.child.on("exit", (code, signal) => {
        if (runner === this) runner = undefined;
        const how = signal ? `signal ${signal}` : `code ${code}`;
        for (const [id, p] of [...this.pending]) {
          this.settle(id);
          p.reject(new Error(`the tool runner (pid ${this.child.pid}) ended (${how}) while running ${p.what}: this call failed; the next one starts a new runner`));
        }
        resolve();
      });
      // A spawn that fails (no pid) ends with "error" only.
      this.child.on("error", () => { if (this.child.pid === undefined) this.child.emit("exit", null, null); });
    });
  }

  call(c: ToolCall): Promise<ToolResult> {
    const id = this.nextId++;
    const what = `${path.basename(c.file)} ${c.args.join(" ")}`.slice(0, 300);
    return new Promise<ToolResult>((resolve, reject) => {
      const wait = (c.timeoutMs ?? 60_000) + DEADLINE_SLACK_MS;
      const deadline = setTimeout(() => {
        // The runner is stuck, not the tool (the runner times tools out itself): replace it.
        reject(new Error(`the tool runner did not answer within ${wait} ms for ${what}: it is replaced; try again`));
        this.settle(id);
        this.child.kill("SIGKILL");
      }, wait);
      this.pending.set(id, { what, resolve, reject, deadline });
      this.busy();
      this.child.send({ id, file: c.file, args: c.args, env: c.env ?? {}, timeoutMs: c.timeoutMs ?? 60_000 }, (err) => {
        if (!err || !this.pending.has(id)) return;
        this.settle(id);
        reject(new Error(`could not hand ${what} to the tool runner: ${err.message}`));
      });
    });
  }

  private settle(id: number): void {
    const p = this.pending.get(id);
    if (!p) return;
    clearTimeout(p.deadline);
    this.pending.delete(id);
    if (this.pending.size === 0) this.idle();
  }

  private busy(): void {
    this.channel()?.ref();
  }

  private idle(): void {
    this.channel()?.unref();
  }

  private channel(): { ref(): void; unref(): void } | undefined {
    return (this.child as unknown as { channel?: { ref(): void; unref(): void } }).channel ?? undefined;
  }
}

let runner: Runner | undefined;
const runs = new Map<string, number>();

/** Start the runner now (the host at boot, while its heap is small); later calls reuse it. */
export function startToolRunner(): void {
  runner ??= new Runner();
}

let holders = 0;

/**
 * A host's hold on the runner, started now if none runs (the host at boot, while its heap is
 * small). The hosts of one process (tests, `modhost/testing`) share the runner: it is stopped
 * when the last of them lets go (the function returned), not by the first host that stops.
 */
export function holdToolRunner(): () => Promise<void> {
  holders++;
  startToolRunner();
  let released = false;
  return async () => {
    if (released) return;
    released = true;
    if (--holders === 0) await stopToolRunner();
  };
}

/** Stop the runner now, whoever holds it (tests); a later call starts a new one. */
export async function stopToolRunner(): Promise<void> {
  const r = runner;
  if (!r) return;
  runner = undefined;
  r.child.ref(); // its exit is awaited
  if (r.child.connected) r.child.disconnect();
  await r.exited;
}

/** The runner's pid, if one runs (tests). */
export function toolRunnerPid(): number | undefined {
  return runner?.child.pid;
}

/** How many times each tool was run through the runner since this process started (benches, tests). */
export function toolRuns(): Record<string, number> {
  return Object.fromEntries(runs);
}

let inline = false;

/**
 * Benches only (bench/data-volume.ts), for a baseline in the same run: run tools as the host
 * did before the runner, with execFile from this process (a fork of it on its loop).
 */
export function runToolsInline(on: boolean): void {
  inline = on;
}

function runInline(c: ToolCall): Promise<ToolResult> {
  return new Promise((resolve) => {
    execFile(c.file, c.args, { env: c.env ?? {}, timeout: c.timeoutMs ?? 60_000, maxBuffer: OUTPUT_LIMIT }, (err, stdout, stderr) => {
      const e = err as (Error & { code?: number | string; signal?: string; killed?: boolean }) | null;
      resolve({ code: typeof e?.code === "number" ? e.code : e ? null : 0, signal: e?.signal ?? null, stdout: String(stdout), stderr: String(stderr), dropped: 0, timedOut: Boolean(e?.killed), ...(typeof e?.code === "string" ? { error: e.message } : {}) });
    });
  });
}

/** Run a tool in the runner; resolves with how it ended (a non-zero exit is a result, not an error). */
export function runTool(c: ToolCall): Promise<ToolResult> {
  const name = path.basename(c.file);
  runs.set(name, (runs.get(name) ?? 0) + 1);
  if (inline) return runInline(c);
  startToolRunner();
  return runner!.call(c);
}

/** A result that is not one of `okCodes`, as an error naming the tool, its arguments and what it said. */
export function toolFailure(c: ToolCall, r: ToolResult, okCodes: readonly number[] = [0]): Error | null {
  if (!r.error && !r.timedOut && r.code !== null && okCodes.includes(r.code)) return null;
  const why = r.error ?? (r.timedOut ? `timed out after ${c.timeoutMs ?? 60_000} ms` : r.stderr.trim() || (r.signal ? `ended by ${r.signal}` : `exited with code ${r.code}`));
  return new Error(`${path.basename(c.file)} ${c.args.join(" ")}: ${why}`);
}
