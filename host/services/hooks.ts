// The hook registry (HostServices.hooks): which module hooks which point, in what order, and
// running a point's chain. The points, what a hook may modify and how its answer is checked
// are declared in capabilities/hooks.ts; this file is the host's side.
//
// Order. The chain at a point is a topological order of its registered hooks under these
// constraints: the operator's [hooks.POINT] order (each listed module before the next one
// listed), and each registration's `before` / `after` (as Core Lightning's hooks). Names of
// modules that have no hook at the point constrain nothing. Among hooks free to run, the
// operator's listed modules come first, in their order, then the others in registration order.
// A registration that would make a cycle is refused, naming the modules in it. (An operator
// order changed on reload that conflicts with registrations is logged, and the chain runs in
// the operator's order, then registration order, until the conflict is gone.)
//
// Running. Each hook is a `hook` invocation with the point's deadline. One hook at a time, so
// a slow hook delays only the call that reached the point, never the host's event loop (every
// invocation is asynchronous): the most one call can wait is hooks x deadline.

import {
  checkAnswer, HOOK_POINTS, HookAnswerError, HookRejection, MAX_HOOKS_PER_POINT, DEFAULT_MAX_PAYLOAD_BYTES, sizeAtLeast,
  type FailurePolicy, type HookPointName, type HookRegistration, type HookService, type HooksConfig,
} from "../../capabilities/hooks.ts";
import { CapabilityError, type HookCaller } from "../../capabilities/types.ts";
import { InvocationError, type HostSession } from "../session.ts";
import type { LogLevel } from "../../protocol/messages.ts";

interface Entry {
  module: string;
  before: readonly string[];
  after: readonly string[];
  /** Registration order (a re-registration keeps its place). */
  seq: number;
}

export interface HookRegistryOptions {
  /** The connection of a running module, or undefined. */
  session: (module: string) => HostSession | undefined;
  /** The operator's [hooks] section, read at each use (a config reload applies at once). */
  config?: () => HooksConfig | undefined;
  log?: (level: LogLevel, source: string, message: string, fields?: Record<string, unknown>) => void;
  /**
   * A line about the hook of `module` (it rejected, failed, modified), charged to the host's
   * budget for notes about that module: a hook answering every call badly, as fast as calls
   * come, fills only its own module's share, never the lines about other modules' hooks.
   */
  note?: (module: string, level: LogLevel, message: string, fields?: Record<string, unknown>) => void;
}

/** The effective settings of a point: the operator's overrides over the point's defaults. */
export interface HookSettings {
  order: readonly string[];
  failure: FailurePolicy;
  timeoutMs: number;
  maxPayloadBytes: number;
}

export class HookRegistry implements HookService {
  private readonly points = new Map<HookPointName, Map<string, Entry>>();
  private seq = 1;

  constructor(private readonly opts: HookRegistryOptions) {}

  settings(point: HookPointName): HookSettings {
    const own = this.opts.config?.()?.[point];
    const def = HOOK_POINTS[point];
    return {
      order: own?.order ?? [],
      failure: own?.failure ?? def.failure,
      timeoutMs: own?.timeout_ms ?? def.timeoutMs,
      maxPayloadBytes: own?.max_payload_bytes ?? DEFAULT_MAX_PAYLOAD_BYTES,
    };
  }

  register(module: string, point: HookPointName, reg: HookRegistration): string[] {
    const at = this.points.get(point) ?? new Map<string, Entry>();
    const previous = at.get(module);
    if (!previous && at.size >= MAX_HOOKS_PER_POINT) {
      throw new CapabilityError("quota_exceeded", `hook point ${point} already has ${MAX_HOOKS_PER_POINT} hooks, the most one point takes (modules: ${[...at.keys()].join(", ")})`);
    }
    const next = new Map(at);
    next.set(module, { module, before: reg.before ?? [], after: reg.after ?? [], seq: previous?.seq ?? this.seq++ });
    const order = this.orderOf(point, next, module);
    if ("cycle" in order) {
      throw new CapabilityError("invalid_params", `the hook of "${module}" at ${point} cannot be ordered: ${order.cycle}`);
    }
    this.points.set(point, next);
    return order.order;
  }

  unregister(module: string, point: HookPointName): boolean {
    return this.points.get(point)?.delete(module) ?? false;
  }

  active(point: HookPointName): boolean {
    return (this.points.get(point)?.size ?? 0) > 0;
  }

  /** The chain at `point` in the order it runs now. */
  chain(point: HookPointName): string[] {
    const entries = this.points.get(point);
    if (!entries || entries.size === 0) return [];
    const order = this.orderOf(point, entries);
    return "cycle" in order ? this.fallbackOrder(point, entries) : order.order;
  }

  /** Drop every hook of `module` (its process ended). */
  forget(module: string): void {
    for (const at of this.points.values()) at.delete(module);
  }

  async run<T extends Record<string, unknown>>(point: HookPointName, payload: T, forWhom?: HookCaller): Promise<T> {
    const entries = this.points.get(point);
    if (!entries || entries.size === 0) return payload;
    const s = this.settings(point);
    const key = `[hooks.${point}]`;
    // Measured before anything is sent: work bounded by the limit, not by the payload.
    if (sizeAtLeast(payload, s.maxPayloadBytes) > s.maxPayloadBytes) {
      throw new CapabilityError("quota_exceeded", `refused at hook point ${point}: its payload is over ${s.maxPayloadBytes} bytes, more than the hooks there take (${key} max_payload_bytes in modhost.toml raises it)`);
    }
    let order: string[];
    const computed = this.orderOf(point, entries);
    if ("cycle" in computed) {
      this.log("error", `hook order at ${point}: ${computed.cycle}; running in the operator's order, then registration order`);
      order = this.fallbackOrder(point, entries);
    } else order = computed.order;

    let current: Record<string, unknown> = payload;
    for (const module of order) {
      if (!this.points.get(point)?.has(module)) continue; // unregistered while the chain ran
      let failure: string;
      const session = this.opts.session(module);
      if (!session) failure = "its module is not running";
      else {
        try {
          const raw = await session.invoke("hook", { point, payload: current }, s.timeoutMs, forWhom);
          const answer = checkAnswer(HOOK_POINTS[point], current, raw, s.maxPayloadBytes, key);
          if (answer.result === "reject") {
            this.note(module, "info", `${point}: the hook of ${module} rejected: ${answer.reason}`, { point, hook: module });
            throw new HookRejection(point, module, answer.reason, false);
          }
          if (answer.result === "modify") {
            current = answer.payload;
            this.note(module, "debug", `${point}: the hook of ${module} modified the payload`, { point, hook: module });
          }
          continue;
        } catch (err) {
          if (err instanceof HookRejection) throw err;
          failure = describeFailure(err, s.timeoutMs, key);
        }
      }
      if (s.failure === "closed") {
        this.note(module, "error", `${point}: the hook of ${module} failed (${failure}); fail-closed: refused`, { point, hook: module });
        throw new HookRejection(point, module, failure, true);
      }
      this.note(module, "warn", `${point}: the hook of ${module} failed (${failure}); fail-open: going on as if it answered continue`, { point, hook: module });
    }
    return current as T;
  }

  private log(level: LogLevel, message: string, fields?: Record<string, unknown>): void {
    this.opts.log?.(level, "hooks", message, fields);
  }

  private note(module: string, level: LogLevel, message: string, fields?: Record<string, unknown>): void {
    if (this.opts.note) this.opts.note(module, level, message, fields);
    else this.log(level, message, fields);
  }

  /** Topological order under the operator's order and the registrations' before/after, or the cycle. */
  private orderOf(point: HookPointName, entries: ReadonlyMap<string, Entry>, start?: string): { order: string[] } | { cycle: string } {
    const operator = this.settings(point).order.filter((m) => entries.has(m));
    const rank = (m: string) => {
      const i = operator.indexOf(m);
      return i === -1 ? operator.length + entries.get(m)!.seq : i - operator.length - 1_000_000;
    };
    const edges = new Map<string, Set<string>>([...entries.keys()].map((m) => [m, new Set<string>()]));
    const because = new Map<string, string>();
    const edge = (from: string, to: string, why: string) => {
      if (!entries.has(from) || !entries.has(to) || from === to) return;
      edges.get(from)!.add(to);
      because.set(`${from}>${to}`, why);
    };
    for (let i = 0; i + 1 < operator.length; i++) edge(operator[i]!, operator[i + 1]!, `[hooks.${point}] order`);
    for (const e of entries.values()) {
      for (const b of e.before) edge(e.module, b, `"${e.module}" asked to run before "${b}"`);
      for (const a of e.after) edge(a, e.module, `"${e.module}" asked to run after "${a}"`);
    }
    const indegree = new Map([...entries.keys()].map((m) => [m, 0]));
    for (const tos of edges.values()) for (const to of tos) indegree.set(to, indegree.get(to)! + 1);
    const order: string[] = [];
    const ready = [...indegree].filter(([, n]) => n === 0).map(([m]) => m);
    while (ready.length > 0) {
      ready.sort((a, b) => rank(a) - rank(b));
      const m = ready.shift()!;
      order.push(m);
      for (const to of edges.get(m)!) {
        indegree.set(to, indegree.get(to)! - 1);
        if (indegree.get(to) === 0) ready.push(to);
      }
    }
    if (order.length === entries.size) return { order };
    // Name one cycle: walk from a module left over along edges between left-over modules.
    const left = new Set([...entries.keys()].filter((m) => !order.includes(m)));
    const path: string[] = [];
    let at = start !== undefined && left.has(start) ? start : [...left][0]!;
    while (!path.includes(at)) {
      path.push(at);
      at = [...edges.get(at)!].find((to) => left.has(to))!;
    }
    const cycle = [...path.slice(path.indexOf(at)), at];
    const reasons = cycle.slice(0, -1).map((m, i) => because.get(`${m}>${cycle[i + 1]}`)).filter((x): x is string => x !== undefined);
    return { cycle: `the order has a cycle: ${cycle.map((m) => `"${m}"`).join(" -> ")} (${[...new Set(reasons)].join("; ")}); drop one of these constraints` };
  }

  private fallbackOrder(point: HookPointName, entries: ReadonlyMap<string, Entry>): string[] {
    const operator = this.settings(point).order;
    return [...entries.values()].sort((a, b) => {
      const ia = operator.indexOf(a.module);
      const ib = operator.indexOf(b.module);
      if (ia !== ib) return ia === -1 ? 1 : ib === -1 ? -1 : ia - ib;
      return a.seq - b.seq;
    }).map((e) => e.module);
  }
}

function describeFailure(err: unknown, timeoutMs: number, key: string): string {
  if (err instanceof HookAnswerError) return err.message;
  if (err instanceof InvocationError) {
    const { code, message } = err.wire;
    if (code === "timeout" && /did not answer within/.test(message)) return `it did not answer within ${timeoutMs} ms (${key} timeout_ms)`;
    if (code === "unavailable" && /disconnected|not connected/.test(message)) return "its module stopped before answering";
    return `it failed: [${code}] ${message.slice(0, 512)}`;
  }
  return `it failed inside the host: ${(err as Error)?.message ?? String(err)}`;
}
