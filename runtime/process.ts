// Module processes: spawn a child with a private, already-connected channel on fd 3 (a Unix
// socketpair that nothing else can connect to), wrap the channel in a host session, drain
// stdout and stderr into the host log (tagged and rate-limited, so a chatty module never
// blocks on a full pipe), and stop it gracefully: a shutdown invocation, then SIGTERM, then
// SIGKILL, each after its timeout. Both runtimes use this: the isolate host is a module
// process whose module happens to run in an isolate.

import { spawn, type ChildProcess } from "node:child_process";
import type { Socket } from "node:net";
import { createInterface } from "node:readline";
import { FrameChannel } from "../protocol/channel.ts";
import { HostSession, type SessionOptions } from "../host/session.ts";
import { RateLimiter, type Logger } from "../host/log.ts";

export interface SpawnSpec {
  command: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  maxFrameBytes?: number;
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

export class ModuleProcess {
  readonly session: HostSession;
  readonly exited: Promise<ExitInfo>;
  private exitInfo: ExitInfo | undefined;

  constructor(readonly child: ChildProcess, session: HostSession) {
    this.session = session;
    const sessionClosed = new Promise<void>((resolve) => session.once("closed", () => resolve()));
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

  /** Graceful stop; resolves with how the process ended and which step ended it. */
  async stop(reason: string, t: StopTimeouts): Promise<ExitInfo & { via: "shutdown" | "SIGTERM" | "SIGKILL" | "already" }> {
    if (this.exitInfo) return { ...this.exitInfo, via: "already" };
    const waitExit = (ms: number) => Promise.race([this.exited, sleep(ms).then(() => undefined)]);
    if (this.session.isOpen) {
      const deadline = Date.now() + t.graceMs;
      await this.session.invoke("shutdown", { reason, timeout_ms: t.graceMs }, t.graceMs).catch(() => undefined);
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

/** How long after the process exits its channel may still deliver what it wrote. */
const DRAIN_AFTER_EXIT_MS = 1000;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

export function spawnModuleProcess(spec: SpawnSpec, session: Omit<SessionOptions, never>, logger: Logger): ModuleProcess {
  const child = spawn(spec.command, spec.args, {
    cwd: spec.cwd,
    env: spec.env,
    stdio: ["ignore", "pipe", "pipe", "pipe"],
    // Its own process group: a Ctrl-C at the terminal reaches the host, which then stops
    // modules in order, instead of killing every module at once.
    detached: true,
  });
  const socket = child.stdio[3] as Socket;
  const channel = new FrameChannel(socket, spec.maxFrameBytes);
  const hostSession = new HostSession(channel, session);
  const limiter = new RateLimiter(100, 200);
  for (const [stream, level] of [[child.stdout, "info"], [child.stderr, "warn"]] as const) {
    if (!stream) continue;
    const lines = createInterface({ input: stream, crlfDelay: Infinity });
    lines.on("line", (line) => {
      if (!limiter.take()) return;
      if (limiter.dropped > 0) {
        logger.log("warn", session.module, `${limiter.dropped} output lines dropped (rate limit)`);
        limiter.dropped = 0;
      }
      logger.log(level, session.module, line.slice(0, 4096), { stream: stream === child.stdout ? "stdout" : "stderr" });
    });
  }
  child.on("error", (err) => {
    logger.log("error", session.module, `could not start process: ${err.message}`);
    hostSession.close(err);
  });
  return new ModuleProcess(child, hostSession);
}
