// ResourceLimitWarning: the host tells the operator (log) and subscribed modules (event) when a
// module nears one of its limits, from the host's own measurements, before the limit bites.
//
// Every RESOURCE_SAMPLE_MS the supervisor (host/supervisor-health.ts) samples each running
// module: memory of its cgroup (memory_total_mb), requests in flight (max_requests_in_flight),
// requests and host CPU time per second over the interval (requests_per_second, host_cpu_ms_per_s), bytes sent to it and
// not read (max_unread_bytes) and bytes per second it added or tried to add to the host log
// (log_bytes_per_second). A resource at WARN_FRACTION of its limit or more is warned about,
// at most once per RESOURCE_WARNING_INTERVAL_MS per module and resource, so a module that sits
// at its limit costs one log line and one event per resource per interval, whatever it does.
//
// The watch itself does a fixed amount of work per module per sample (a few counters and one
// read of a cgroup file): nothing proportional to what a module sends.

import type { Limits } from "./config.ts";

/** How often running modules are sampled. */
export const RESOURCE_SAMPLE_MS = 2000;
/** A resource is warned about at this fraction of its limit. */
export const WARN_FRACTION = 0.8;
/** At most one warning per module and resource in this interval. */
export const RESOURCE_WARNING_INTERVAL_MS = 60_000;

const MB = 1024 * 1024;

/** Counters of one module at one moment (totals since it started, or current values). */
export interface ResourceSample {
  /** performance.now() when taken. */
  at: number;
  /** Bytes charged to its cgroup now; null without a cgroup. */
  memoryBytes: number | null;
  /** Its requests being served now. */
  inFlight: number;
  /** Requests received, total. */
  requests: number;
  /** Host CPU time charged to it (ms), total. */
  cpuMs: number;
  /** Bytes sent to it and not yet read by it, now. */
  unreadBytes: number;
  /** Bytes it added to the host log or had dropped there, total. */
  logBytes: number;
}

/** The payload of a ResourceLimitWarning (capabilities/event-types.ts). */
export interface ResourceWarning {
  module: string;
  /** The limit's config key in [modules.limits.NAME]. */
  resource: string;
  /** What was measured, in the limit's unit. */
  used: number;
  limit: number;
}

type LimitKey = "memory_total_mb" | "max_requests_in_flight" | "requests_per_second" | "host_cpu_ms_per_s" | "max_unread_bytes" | "log_bytes_per_second";

/** One module's watch: feed it samples, it returns the warnings due now. */
export class ResourceWatch {
  private last: ResourceSample | undefined;
  /** When each resource was last warned about (Date.now()). */
  private readonly warned = new Map<string, number>();

  constructor(
    readonly module: string,
    private readonly limits: Pick<Limits, LimitKey>,
    private readonly now: () => number = Date.now,
  ) {}

  sample(s: ResourceSample): ResourceWarning[] {
    const prev = this.last;
    this.last = s;
    const used: Array<[LimitKey, number]> = [
      ["max_requests_in_flight", s.inFlight],
      ["max_unread_bytes", s.unreadBytes],
    ];
    if (s.memoryBytes !== null) used.push(["memory_total_mb", Math.round(s.memoryBytes / MB)]);
    const seconds = prev ? (s.at - prev.at) / 1000 : 0;
    if (prev && seconds > 0.1) {
      used.push(["requests_per_second", Math.round((s.requests - prev.requests) / seconds)]);
      used.push(["host_cpu_ms_per_s", Math.round((s.cpuMs - prev.cpuMs) / seconds)]);
      used.push(["log_bytes_per_second", Math.round((s.logBytes - prev.logBytes) / seconds)]);
    }
    const out: ResourceWarning[] = [];
    const now = this.now();
    for (const [resource, value] of used) {
      const limit = this.limits[resource];
      if (!(limit > 0) || value < limit * WARN_FRACTION) continue;
      if (now - (this.warned.get(resource) ?? -Infinity) < RESOURCE_WARNING_INTERVAL_MS) continue;
      this.warned.set(resource, now);
      out.push({ module: this.module, resource, used: value, limit });
    }
    return out;
  }
}

/** The operator's words for a warning: what, how near, and which key raises it. */
export function describeWarning(w: ResourceWarning): string {
  const pct = Math.round((w.used / w.limit) * 100);
  return `${w.module} is near its limit ${w.resource}: ${w.used} of ${w.limit} (${pct}%); past it ${CONSEQUENCE[w.resource as LimitKey] ?? "it is held back"}. If that is its normal load, raise ${w.resource} in [modules.limits.${w.module}]`;
}

const CONSEQUENCE: Record<LimitKey, string> = {
  memory_total_mb: "the kernel kills its processes",
  max_requests_in_flight: "its further requests wait",
  requests_per_second: "its further requests wait",
  host_cpu_ms_per_s: "its requests wait and its socket is not read",
  max_unread_bytes: "it is disconnected",
  log_bytes_per_second: "its log lines are dropped",
};
