// Module processes: spawn a child with a private, already-connected channel on fd 3 (a Unix
// socketpair that nothing else can connect to), wrap the channel in a host session, drain
// stdout and stderr into the host log (read as bytes, cut into lines of at most
// OUTPUT_LINE_BYTES, escaped, tagged and held to the module's log byte budget, so a chatty
// module never blocks on a full pipe and never grows the host's memory or log), and stop it
// gracefully: a shutdown invocation, then SIGTERM, then SIGKILL, each after its timeout. Both
// runtimes use this: the isolate host is a module process whose module happens to run in an
// isolate.
//
// Everything done for a module (its channel, its output, the requests it makes) runs in that
// module's async context (`moduleScope`), so that an error escaping to the process-wide
// last-resort handler can be attributed to the module whose input caused it.

import { AsyncLocalStorage, AsyncResource } from "node:async_hooks";
import { spawn } from "node:child_process";
import type { Socket } from "node:net";
import { constants as osConstants } from "node:os";
import { FrameChannel, HOST_SIDE } from "../protocol/channel.ts";
import type { LogLevel } from "../protocol/messages.ts";
import { LineCutter, OUTPUT_LINE_BYTES } from "./output.ts";
import { hostTurn } from "./turn.ts";
import { spawnViaSpawner } from "./sandbox/spawner.ts";

/** The module on whose behalf the current code runs (see the header). */
export const moduleScope = new AsyncLocalStorage<string>();

/** A context with no store set (taken as this file loads, outside any module's work): what moduleContext builds on. */
const NO_CONTEXT = AsyncLocalStorage.snapshot();

/**
 * The async context of `module`'s input, made once: only its moduleScope set. Entering it
 * (`runInAsyncScope`) swaps the current context for this one and back, where
 * `moduleScope.run(module, fn)` built two new contexts per call, one to enter and one to
 * restore (Node 24 copies the context's map each time: ~0.4 µs a call at load 3, paid on each
 * read of a module's socket).
 */
export function moduleContext(module: string): AsyncResource {
  return NO_CONTEXT(() => moduleScope.run(module, () => new AsyncResource("modhost.module", { requireManualDestroy: true })));
}

export interface SpawnSpec {
  command: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  maxFrameBytes?: number;
  /** No sandbox ties the process to the spawner (sandbox "off"): the spawner does (runtime/sandbox/spawner.ts). */
  tieToSpawner?: boolean;
}

/**
 * A module's process as the host sees it: started by the spawner (runtime/sandbox/spawner.ts
 * SpawnedProcess), or by the host itself (benches' baseline: a ChildProcess).
 */
export interface ChildHandle {
  readonly pid?: number | undefined;
  readonly exitCode: number | null;
  readonly signalCode: NodeJS.Signals | null;
  kill(signal?: NodeJS.Signals): boolean;
  once(event: "exit", listener: (code: number | null, signal: NodeJS.Signals | null) => void): unknown;
  /** Why it is reported as ended without an exit of its own (its spawner died). */
  readonly lost?: string;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface StopTimeouts {
  /** How long the module has to answer the shutdown invocation and exit. */
  graceMs: number;
  /** How long after SIGTERM before SIGKILL. */
  termMs: number;
}

/**
 * What a module process needs of the session the host runs on its channel (host/session.ts
 * HostSession is the one): to know when it closes and why, to close it, and to ask the module
 * to shut down.
 */
export interface ChannelSession {
  once(event: "closed", listener: (err?: Error) => void): unknown;
  closeError: Error | undefined;
  close(err?: Error): void;
  readonly isOpen: boolean;
  invoke(kind: "shutdown", params: Record<string, unknown>, timeoutMs: number): Promise<unknown>;
  /**
   * Charge the host's time spent reading the module's stdout and stderr (cutting lines, the
   * log budget's checks) to its share; returns how long to stop reading them (0: go on).
   */
  chargeOutput?(ms: number): number;
}

/** Where a module's stdout and stderr lines go (the host's log for that module). */
export interface OutputLog {
  log(level: LogLevel, message: unknown, fields?: unknown, extra?: Record<string, unknown>): unknown;
}

export class ModuleProcess<S extends ChannelSession = ChannelSession> {
  readonly session: S;
  readonly exited: Promise<ExitInfo>;
  private exitInfo: ExitInfo | undefined;
  private stopping = false;
  /** The module's channel failed at the socket level (ECONNRESET, EPIPE): not a reason to report. */
  channelError: Error | undefined;
  /** The module closed its channel but did not exit, and was killed for it. */
  private killedForClosedChannel = false;
  /** Set by the output reader when the module's stderr shows it ran out of memory. */
  outOfMemory: string | undefined;
  /** What the runtime's own exit codes mean (the isolate host's: runtime/isolate/exit-codes.ts), said when no goodbye was heard. */
  exitMeanings: Readonly<Record<number, string>> | undefined;

  constructor(readonly child: ChildHandle, session: S) {
    this.session = session;
    const sessionClosed = new Promise<void>((resolve) => session.once("closed", () => resolve()));
    session.once("closed", (err) => {
      // A socket error says only that the other end went away; how the process ended is the
      // reason (the exit code or signal, below), so the error is kept aside, not reported.
      if (err && isSocketError(err)) {
        this.channelError = err;
        if (session.closeError === err) session.closeError = undefined;
      }
      // A module that closes its channel but keeps running can do nothing more: end it.
      if (!this.exitInfo && !this.stopping) {
        const timer = setTimeout(() => {
          if (this.exitInfo || this.stopping) return;
          this.killedForClosedChannel = true;
          child.kill("SIGKILL");
        }, CLOSED_CHANNEL_GRACE_MS);
        timer.unref();
      }
    });
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, signal) => {
        const info = { code, signal };
        this.exitInfo = info;
        // `exited` resolves once the channel has been read to its end, so that a goodbye the
        // module wrote just before exiting (why it stopped) is in session.closeError by then.
        // Closing the channel at the exit instead would throw away what is still unread, and
        // the host could only report "connection closed". A descendant that inherited the
        // socket could keep it open, so this waits only so long.
        const timer = setTimeout(() => session.close(), DRAIN_AFTER_EXIT_MS);
        timer.unref();
        void sessionClosed.then(() => {
          clearTimeout(timer);
          resolve(info);
        });
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get hasExited(): boolean {
    return this.exitInfo !== undefined;
  }

  /**
   * Why the process ended, in words: the reason the channel closed when there was one (a
   * goodbye, a protocol violation, a health timeout), then how the process ended (exit code,
   * signal, out of memory where known, closed its channel). Never a socket error's text.
   */
  endReason(info: ExitInfo): string {
    let how = describeExit(info.code, info.signal);
    if (this.child.lost) {
      how = this.child.lost;
    } else if (this.killedForClosedChannel) {
      how = this.session.closeError
        ? `did not exit within ${CLOSED_CHANNEL_GRACE_MS} ms after its channel was closed: killed by SIGKILL`
        : `closed its channel and did not exit within ${CLOSED_CHANNEL_GRACE_MS} ms: killed by SIGKILL`;
    } else if (this.outOfMemory) {
      how = `${how}: out of memory (its stderr reported ${this.outOfMemory})`;
    }
    const why = this.session.closeError?.message;
    if (why && !why.includes(how)) return `${why} (${how})`;
    const meaning = info.code === null ? undefined : this.exitMeanings?.[info.code];
    if (!why && meaning && how === describeExit(info.code, info.signal)) return `${how} (${meaning}; its goodbye saying why did not reach the host)`;
    return why ?? how;
  }

  /** Graceful stop; resolves with how the process ended and which step ended it. */
  async stop(reason: string, t: StopTimeouts): Promise<ExitInfo & { via: "shutdown" | "SIGTERM" | "SIGKILL" | "already" }> {
    if (this.exitInfo) return { ...this.exitInfo, via: "already" };
    this.stopping = true;
    const waitExit = (ms: number) => Promise.race([this.exited, sleep(ms).then(() => undefined)]);
    if (this.session.isOpen) {
      const deadline = Date.now() + t.graceMs;
      // A hard deadline: the session extends an invocation's deadline while the host is not
      // reading the module's socket (its requests wait for their share), up to
      // request_timeout_ms; a module being stopped gets its stop_timeout_ms and no more.
      await Promise.race([this.session.invoke("shutdown", { reason, timeout_ms: t.graceMs }, t.graceMs).catch(() => undefined), sleep(t.graceMs)]);
      const info = await waitExit(Math.max(0, deadline - Date.now()) + 50);
      if (info) return { ...info, via: "shutdown" };
    }
    this.child.kill("SIGTERM");
    const afterTerm = await waitExit(t.termMs);
    if (afterTerm) return { ...afterTerm, via: "SIGTERM" };
    this.child.kill("SIGKILL");
    return { ...(await this.exited), via: "SIGKILL" };
  }

  kill(): void {
    if (!this.exitInfo) this.child.kill("SIGKILL");
  }
}

/** The longest one pause of a module's stdout/stderr for its share of the host's time. */
const OUTPUT_PAUSE_MAX_MS = 1000;

/** How long after the process exits its channel may still deliver what it wrote. */
const DRAIN_AFTER_EXIT_MS = 1000;
/** How long a module that closed its channel may take to exit before it is killed. */
const CLOSED_CHANNEL_GRACE_MS = 2000;

/** An error of the socket itself (ECONNRESET, EPIPE, ...), as opposed to a reason the host or the module gave. */
function isSocketError(err: Error): boolean {
  const e = err as NodeJS.ErrnoException;
  return typeof e.code === "string" && typeof e.syscall === "string" && !e.syscall.startsWith("spawn");
}

/**
 * How a process ended, in words. Inside the sandbox a module runs under a shell and a launcher,
 * so a module killed by a signal shows up as exit code 128 + N: name the signal then.
 */
function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  if (signal) return `killed by ${signal}`;
  if (code !== null && code > 128 && code < 128 + 65) {
    const name = Object.entries(osConstants.signals).find(([, n]) => n === code - 128)?.[0];
    if (name) return `killed by ${name} (exit code ${code})${name === "SIGXCPU" ? ": it used up its cpu_seconds limit" : ""}`;
  }
  return `exited with code ${code}`;
}

/** What a process's stderr says when it ran out of memory (Node, V8, Rust, C++). */
const OOM_PATTERNS: Array<[RegExp, string]> = [
  [/JavaScript heap out of memory|Reached heap limit/, "a full V8 heap"],
  // The isolate host ending itself past its size for memory_mb (isolate/worker.ts, exit-codes.ts ISOLATE_HOST_RSS_BASE_MB).
  [/^isolate host: .*its memory limit of \d+ MB \(memory_mb\)/, "its isolate past memory_mb"],
  [/memory allocation of \d+ bytes failed/, "a failed allocation"],
  [/std::bad_alloc/, "a failed allocation"],
];

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

/**
 * Start a module process with its private channel on fd 3. `session` builds what serves the
 * channel (the host's HostSession); `output` receives its stdout and stderr lines, cut and
 * escaped by the logger.
 */
export function spawnModuleProcess<S extends ChannelSession>(spec: SpawnSpec, module: string, session: (channel: FrameChannel) => S, output: OutputLog): Promise<ModuleProcess<S>> {
  // In the module's async context: the child's pipes and channel, and so every callback on
  // the module's input, carry the module's name (moduleScope).
  return moduleScope.run(module, async () => (await spawnChild(spec, output)).adopt(session, output));
}

/**
 * A module process started before it is handed its session (the isolate host pool,
 * runtime/isolate/pool.ts): its channel is open, its output goes to `output` until adopt().
 */
export interface StartedChild {
  readonly child: ChildHandle;
  readonly channel: FrameChannel;
  /** Wrap the channel in the module's session; from now on its output goes to `output`. */
  adopt<S extends ChannelSession>(session: (channel: FrameChannel) => S, output: OutputLog): ModuleProcess<S>;
}

let direct = false;

/**
 * Benches only, for a baseline in the same run: spawn module processes from this process (a
 * fork of it on its loop, as the host did before the spawner) instead of through the spawner.
 */
export function spawnModulesDirectly(on: boolean): void {
  direct = on;
}

/** The process and its three sockets, started by the spawner (or directly: spawnModulesDirectly). */
async function start(spec: SpawnSpec): Promise<{ child: ChildHandle; stdout: Socket; stderr: Socket; socket: Socket }> {
  const req = { command: spec.command, args: spec.args, env: spec.env, cwd: spec.cwd, tie: spec.tieToSpawner === true };
  if (!direct) {
    const s = await spawnViaSpawner(req);
    return { child: s.child, stdout: s.stdout, stderr: s.stderr, socket: s.channel };
  }
  const child = spawn(spec.command, spec.args, {
    cwd: spec.cwd,
    env: spec.env,
    stdio: ["ignore", "pipe", "pipe", "pipe"],
    // Its own process group, as the spawner starts it.
    detached: true,
  });
  const spawnError = new Promise<Error>((resolve) => child.on("error", resolve));
  if (child.pid === undefined) throw new Error(`could not start process: ${(await spawnError).message}`);
  return { child, stdout: child.stdout as Socket, stderr: child.stderr as Socket, socket: child.stdio[3] as Socket };
}

/**
 * Start a process with its channel on fd 3 and its output drained (see spawnModuleProcess); its
 * session comes later. The spawner (runtime/sandbox/spawner.ts) forks it, not the host: it
 * passes the sockets back and reports the exit. Rejects when the process could not be started.
 */
export async function spawnChild(spec: SpawnSpec, output: OutputLog): Promise<StartedChild> {
  const startedFor = moduleScope.getStore();
  const { child, stdout, stderr, socket } = await start(spec);
  // The module whose input this is (moduleScope): the one it was started for, or the one that
  // adopted it. The sockets came from the spawner's channel, so their events are re-entered in
  // the module's scope here (as are the channel's own: see adopt).
  let scope = startedFor;
  let context = scope !== undefined ? moduleContext(scope) : undefined;
  // Entered unless already in it (the channel's events, emitted inside its socket's).
  const inContext = <A extends unknown[], R>(fn: (this: unknown, ...args: A) => R, self: unknown, ...args: A): R =>
    context === undefined || moduleScope.getStore() === scope ? fn.apply(self, args) : context.runInAsyncScope(fn, self, ...args);
  // Its input shares the host's budget per turn of the loop with every other module's (turn.ts).
  const channel = new FrameChannel(socket, { maxFrameBytes: spec.maxFrameBytes, ...HOST_SIDE, gate: hostTurn });
  for (const s of [stdout, stderr, socket, channel] as Array<{ emit: (...args: unknown[]) => boolean }>) {
    const emit = s.emit;
    s.emit = (...args: unknown[]) => inContext(emit, s, ...args);
  }
  let log = output;
  const inScope = (fn: () => void) => inContext(fn, undefined);
  let proc: ModuleProcess<ChannelSession> | undefined;
  let oom: string | undefined;
  for (const [stream, level, name] of [[stdout, "info", "stdout"], [stderr, "warn", "stderr"]] as const) {
    const cutter = new LineCutter((line, cut) => {
      const text = line.toString("utf8");
      if (name === "stderr" && !oom) {
        oom = OOM_PATTERNS.find(([re]) => re.test(text))?.[1];
        if (proc && oom) proc.outOfMemory = oom;
      }
      log.log(level, text, undefined, cut ? { stream: name, cut: `line longer than ${OUTPUT_LINE_BYTES} bytes: the rest was discarded` } : { stream: name });
    });
    // A flood of short lines costs the host per line (a million empty lines a second took its
    // loop): the time is charged to the module's share, and past it the pipe is not read for a
    // while (the module's writes block: its own loss).
    let resumeTimer: NodeJS.Timeout | undefined;
    // Past the host's budget for this turn (turn.ts), chunks read wait for a later turn, in order.
    let parked: Buffer[] | undefined;
    const unpark = () => {
      const chunks = parked ?? [];
      parked = undefined;
      for (const c of chunks) handle(c);
      if (!resumeTimer && !parked) stream.resume();
    };
    stream.on("data", (chunk: Buffer) => inScope(() => {
      if (parked) {
        parked.push(chunk);
        stream.pause();
      } else if (hostTurn.overBudget()) {
        parked = [chunk];
        stream.pause();
        hostTurn.park(unpark);
      } else {
        handle(chunk);
      }
    }));
    const handle = (chunk: Buffer) => {
      const t0 = performance.now();
      cutter.push(chunk);
      const wait = proc?.session.chargeOutput?.(performance.now() - t0) ?? 0;
      if (wait > 0 && !resumeTimer) {
        stream.pause();
        resumeTimer = setTimeout(() => {
          resumeTimer = undefined;
          if (!parked) stream.resume();
        }, Math.min(wait, OUTPUT_PAUSE_MAX_MS));
        resumeTimer.unref();
      }
    };
    stream.on("end", () => inScope(() => {
      const chunks = parked ?? [];
      parked = undefined;
      for (const c of chunks) handle(c);
      cutter.end();
    }));
    // A read error on a pipe ends the output, nothing else.
    stream.on("error", () => cutter.end());
  }
  return {
    child,
    channel,
    adopt<S extends ChannelSession>(session: (channel: FrameChannel) => S, out: OutputLog): ModuleProcess<S> {
      log = out;
      const adopter = moduleScope.getStore();
      if (adopter !== undefined && adopter !== scope) {
        scope = adopter;
        context = moduleContext(adopter);
      }
      const hostSession = session(channel);
      const adopted = new ModuleProcess(child, hostSession);
      proc = adopted;
      if (oom) adopted.outOfMemory = oom;
      return adopted;
    },
  };
}

/** Whether a process with this pid exists (EPERM: it exists but belongs to someone else). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
