// Watching a running instance: the health probe (an unresponsive module is killed, and its
// exit is then a crash for the supervisor's restart policy) and the resource watch
// (ResourceLimitWarning when a module nears a limit). Both end with the process.

import type { Limits } from "./config.ts";
import type { HostEvents } from "../capabilities/event-types.ts";
import type { Logger, SourceLogger } from "./log.ts";
import { InvocationError, type HostSession } from "./session.ts";
import { fairDeadline, type LoopStallMeter } from "./lifecycle.ts";
import type { ModuleProcess } from "../runtime/process.ts";
import { describeWarning, RESOURCE_SAMPLE_MS, ResourceWatch } from "./resource-watch.ts";

/** What the watches read of a module's record, and what they set (the probe timer, why the host killed it). */
interface Watched {
  name: string;
  limits: Limits;
  state: string;
  process?: ModuleProcess<HostSession>;
  healthTimer?: NodeJS.Timeout;
  killReason?: string;
}

export interface WatchEnv {
  log: SourceLogger;
  logger: Logger;
  /** The host's own loop stalls, so that deadlines never blame a module for them. */
  meter(): LoopStallMeter;
  /** Publish a ResourceLimitWarning. */
  warn(w: HostEvents["ResourceLimitWarning"]): void;
}

/** The session's own timer for a health probe: only a backstop, the supervisor judges with a fair deadline. */
const HEALTH_INVOKE_BACKSTOP_MS = 0x7fffffff;

/** End the health probe of the current instance. */
export function stopHealth(rec: Watched): void {
  if (rec.healthTimer) clearInterval(rec.healthTimer);
  rec.healthTimer = undefined;
}

/**
 * Ask the module regularly whether it is healthy. A module that does not answer within
 * health_timeout_ms is unresponsive (a hung process, a wedged event loop): it is killed,
 * which the exit handler reports as a crash and the restart policy handles. The deadline is
 * fair: what has arrived is read before judging, and time the host's own loop was stalled
 * does not count against the module. One probe at a time.
 */
export function watchHealth(rec: Watched, proc: ModuleProcess<HostSession>, env: WatchEnv): void {
  const every = rec.limits.health_interval_ms;
  stopHealth(rec);
  if (every <= 0) return;
  let probing = false;
  const timer = setInterval(() => {
    if (rec.process !== proc || rec.state !== "running" || proc.hasExited) {
      clearInterval(timer);
      return;
    }
    if (probing) return;
    probing = true;
    void probeHealth(rec, proc, env).finally(() => (probing = false));
  }, every);
  timer.unref();
  rec.healthTimer = timer;
  void proc.exited.then(() => clearInterval(timer));
}

/**
 * Samples what the module uses of its limits every RESOURCE_SAMPLE_MS and publishes a
 * ResourceLimitWarning (and logs it) when one nears its limit, rate-limited per resource
 * (host/resource-watch.ts). Ends with the process.
 */
export function watchResources(rec: Watched, proc: ModuleProcess<HostSession>, cgroup: { memoryBytes(): Promise<number | null> } | undefined, env: WatchEnv): void {
  const watch = new ResourceWatch(rec.name, rec.limits);
  const moduleLog = env.logger.module(rec.name);
  let sampling = false;
  const timer = setInterval(() => {
    if (rec.process !== proc || rec.state !== "running" || proc.hasExited) {
      clearInterval(timer);
      return;
    }
    if (sampling) return;
    sampling = true;
    void (async () => {
      const memoryBytes = cgroup && rec.limits.memory_total_mb > 0 ? await cgroup.memoryBytes().catch(() => null) : null;
      const session = proc.session;
      const warnings = watch.sample({
        at: performance.now(), memoryBytes, inFlight: session.inFlightRequests, requests: session.stats.requests,
        cpuMs: session.flowStats.cpuMs, unreadBytes: session.unreadBytes, logBytes: moduleLog.totals.writtenBytes + moduleLog.totals.droppedBytes,
      });
      for (const w of warnings) {
        env.log.warn(describeWarning(w), { module: w.module, resource: w.resource, used: w.used, limit: w.limit });
        env.warn(w);
      }
    })().catch(() => {}).finally(() => (sampling = false));
  }, RESOURCE_SAMPLE_MS);
  timer.unref();
  void proc.exited.then(() => clearInterval(timer));
}

async function probeHealth(rec: Watched, proc: ModuleProcess<HostSession>, env: WatchEnv): Promise<void> {
  const timeout = rec.limits.health_timeout_ms;
  let answered = false;
  const answer = proc.session.invoke("health", {}, HEALTH_INVOKE_BACKSTOP_MS).then(
    () => { answered = true; },
    // Any answer, even an error, shows the module is alive; a closed channel is its exit's business.
    (err: unknown) => { if (!(err instanceof InvocationError && err.wire.code === "timeout")) answered = true; },
  );
  const inTime = await fairDeadline(timeout, env.meter(), () => answered, answer);
  if (inTime || rec.process !== proc || rec.state !== "running" || proc.hasExited) return;
  env.log.error(`${rec.name} is unresponsive (no answer to a health check within ${timeout} ms of the host's own running time); killing it`);
  rec.killReason = `unresponsive: no answer to a health check within ${timeout} ms (health_timeout_ms)`;
  proc.session.closeError ??= new Error(rec.killReason);
  proc.kill();
}
