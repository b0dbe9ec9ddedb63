// Hooks with results, as Core Lightning's chained hooks, for both runtimes.
//
// A module granted `register_hook` (scoped by hook point: "register_hook=tx_submit") registers
// a hook at a point where the host is about to do something: accept a transaction a module
// submits, serve a block template, dispatch a JSON-RPC call to a module's method, load a
// module. When the host reaches the point it calls the registered hooks one after another, in
// the chain's order, each with a `hook` invocation {point, payload}; each answers
//   {result: "continue"}                 go on with the payload as it is,
//   {result: "modify", payload: {...}}   go on with this payload (only the fields the point
//                                        declares modifiable may differ; checked here),
//   {result: "reject", reason: "..."}    stop: the caller is refused with the reason, named
//                                        after the hook's module.
// The chain stops at the first reject. A hook that times out, throws, answers something else
// or whose module dies is a failure of that hook, and the point's failure policy decides:
// fail-open (logged, the chain goes on as if it had answered continue) or fail-closed (the
// caller is refused, naming the hook's module). The order, the policy, the deadline and the
// payload limit are the operator's to override ([hooks.POINT] in modhost.toml).
//
// A hook never holds consensus state: it sees a copy of what the host's own policy paths pass
// it, and can only delay (up to its deadline), refuse, or change what the point allows. The
// running of chains (order, deadlines, policies) is the hook registry's job
// (host/services/hooks.ts); this file declares the points and checks hook answers, so that
// both runtimes are checked by the same code.
import * as v from "valibot";
import { HOOK_POINT_NAMES, type HookPointName } from "./catalogue.ts";
import { CapabilityError, method, serviceOf, type CallContext, type Family, type HookRegistration, type HookService } from "./types.ts";
import { moduleName } from "./modules.ts";
import { hash, named } from "./schemas.ts";

export { HOOK_POINT_NAMES, type HookPointName, type HookRegistration, type HookService };

export type FailurePolicy = "open" | "closed";

/** Modules a registration may name in `before` or `after`. */
const MAX_ORDER_NAMES = 16;
/** Hooks at one point, all modules together; a further registration is refused (quota_exceeded). */
export const MAX_HOOKS_PER_POINT = 32;
/** Longest reason a reject may carry; a longer one is cut. */
const MAX_REASON_CHARS = 1024;
/** Default payload limit: holds a full block's hex (4 MB block, 8 MB of hex) and stays below a frame. */
export const DEFAULT_MAX_PAYLOAD_BYTES = 10 * 1024 * 1024;
/** Bounds of the operator's [hooks.POINT] keys. */
export const HOOK_TIMEOUT_RANGE = { min: 1, max: 60_000 } as const;
export const HOOK_PAYLOAD_RANGE = { min: 1024, max: 15 * 1024 * 1024 } as const;

/** The operator's overrides for one point ([hooks.POINT] in modhost.toml). */
interface HookPointConfig {
  /** Modules whose hooks run first, in this order; unlisted ones follow (before/after still apply). */
  order?: string[];
  failure?: FailurePolicy;
  timeout_ms?: number;
  max_payload_bytes?: number;
}

export type HooksConfig = Partial<Record<HookPointName, HookPointConfig>>;

export interface HookPoint {
  readonly name: HookPointName;
  /** What the host is about to do when it runs this point's hooks. */
  readonly description: string;
  /** The payload each hook receives (documentation and a check of what the host builds). */
  readonly payload: v.GenericSchema;
  /** Fields of the payload a `modify` may change, each with its schema; none: modify is refused. */
  readonly modifiable: Readonly<Record<string, v.GenericSchema>>;
  /** A check of a modified payload against the original (besides the field schemas); returns a problem or undefined. */
  readonly checkModified?: (original: Record<string, unknown>, next: Record<string, unknown>) => string | undefined;
  /** The modified payload the next hook and the host see, built from the original and the checked modify (default: the modify). */
  readonly rebuild?: (original: Record<string, unknown>, next: Record<string, unknown>) => Record<string, unknown>;
  /** How a modify is bounded beyond the field schemas, for the docs. */
  readonly modifyNote?: string;
  readonly timeoutMs: number;
  readonly failure: FailurePolicy;
  /** What the failure policy defaults to and why, for the docs. */
  readonly why: string;
}

const txTemplateEntry = v.object({ txid: hash, wtxid: hash, hex: v.string(), fee: v.number(), weight: v.number() });

export const HOOK_POINTS: Readonly<Record<HookPointName, HookPoint>> = {
  tx_submit: {
    name: "tx_submit",
    description: "A module's submit_transaction, after its parameters were checked and before the transaction goes to the chain's mempool.",
    payload: v.object({ txid: hash, hex: v.string(), module: v.string() }),
    modifiable: {},
    timeoutMs: 2000,
    failure: "open",
    why: "the mempool's own checks still run on every transaction; a policy hook that is down should not stop submissions",
  },
  block_template: {
    name: "block_template",
    description: "get_block_template: the template the chain built, before it is served to the asking module.",
    payload: v.object({
      module: v.string(), height: v.number(), previous_block_hash: hash,
      transactions: v.array(txTemplateEntry), coinbase_value: v.number(),
    }),
    // Only the txids of what is kept are read: an entry may leave out its hex (a module's
    // answer holds at most 1 MiB of strings, max_total_string_bytes, less than a large
    // template's hex).
    modifiable: { transactions: v.pipe(v.array(v.object({ txid: hash })), v.maxLength(100_000)) },
    checkModified: (original, next) => {
      // Only leaving transactions out, in their order: a hook cannot add or reorder what the
      // chain selected, so the template stays one the chain would accept.
      const before = (original.transactions as Array<{ txid: string }>).map((t) => t.txid);
      const after = (next.transactions as Array<{ txid: string }>).map((t) => t.txid);
      let i = 0;
      for (const txid of after) {
        while (i < before.length && before[i] !== txid) i++;
        if (i === before.length) return `transactions may only leave out entries of the template, in their order; ${txid} is not one of them or is out of order`;
        i++;
      }
      return undefined;
    },
    // The kept entries as the chain built them (a hook's answer may carry only their txids).
    rebuild: (original, next) => {
      const kept = new Set((next.transactions as Array<{ txid: string }>).map((t) => t.txid));
      return { ...next, transactions: (original.transactions as Array<{ txid: string }>).filter((t) => kept.has(t.txid)) };
    },
    modifyNote: "only by leaving entries out, in their order (each kept entry needs only its `txid`); the host rebuilds coinbase value, witness commitment and coinbase transaction around the rest (and leaves out a kept transaction that spends a left-out one)",
    timeoutMs: 1000,
    failure: "open",
    why: "mining must go on when a template filter is down; the unfiltered template is still one the chain accepts",
  },
  rpc_dispatch: {
    name: "rpc_dispatch",
    description: "A JSON-RPC call of a module's method (`<module>.<method>`) on the host's RPC server, before it is dispatched to that module.",
    payload: v.object({ module: v.string(), method: v.string(), params: v.unknown() }),
    modifiable: { params: v.unknown() },
    timeoutMs: 2000,
    failure: "closed",
    why: "an RPC hook is usually an access check; when it cannot answer, the call is refused rather than let through unchecked",
  },
  module_load: {
    name: "module_load",
    description: "A module about to be started (load, restart, reload), after its manifest and grants were resolved and before its process is spawned.",
    payload: v.object({ module: v.string(), version: v.string(), runtime: v.string(), grants: v.array(v.string()), restart: v.boolean() }),
    modifiable: {},
    timeoutMs: 5000,
    failure: "closed",
    why: "a load hook is a vetting step; a module it could not vet is not started (the hook module's own restarts are not vetted by itself: its hooks end with its process)",
  },
};

// ---------------------------------------------------------------------------------------
// Answers

/** A hook's answer, checked. */
export type HookAnswer = { result: "continue" } | { result: "modify"; payload: Record<string, unknown> } | { result: "reject"; reason: string };

const answerSchema = v.variant("result", [
  v.object({ result: v.literal("continue") }),
  v.object({ result: v.literal("modify"), payload: v.record(v.string(), v.unknown()) }),
  v.object({ result: v.literal("reject"), reason: v.pipe(v.string(), v.minLength(1, "a reject needs a reason")) }),
]);

/** A hook answer that cannot be used; the point's failure policy applies. */
export class HookAnswerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "HookAnswerError";
  }
}

/**
 * A lower bound of `value`'s MessagePack size, counted until it passes `max` (so the work is
 * bounded by the limit, not by the value). Returns the bound (> max when over).
 */
export function sizeAtLeast(value: unknown, max: number): number {
  let size = 0;
  const stack: unknown[] = [value];
  while (stack.length > 0 && size <= max) {
    const x = stack.pop();
    if (typeof x === "string") size += 1 + x.length;
    else if (x === null || typeof x !== "object") size += 1;
    else if (x instanceof Uint8Array) size += 2 + x.byteLength;
    else if (Array.isArray(x)) {
      size += 1;
      for (let i = 0; i < x.length && size + i <= max; i++) stack.push(x[i]);
    } else {
      size += 1;
      for (const k in x) {
        if (!Object.hasOwn(x, k)) continue;
        size += 1 + k.length;
        stack.push((x as Record<string, unknown>)[k]);
        if (size > max) break;
      }
    }
  }
  return size;
}

function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    return a instanceof Uint8Array && b instanceof Uint8Array && a.length === b.length && a.every((x, i) => x === b[i]);
  }
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => Object.hasOwn(b, k) && sameValue((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/**
 * Check a hook's raw answer at `point` against the payload it was given. A modify's payload
 * is measured first (at most `maxBytes`), then each field: a field the point does not declare
 * modifiable must be unchanged (or left out), a modifiable one must fit its schema. Throws
 * HookAnswerError saying what is wrong.
 */
export function checkAnswer(point: HookPoint, current: Record<string, unknown>, raw: unknown, maxBytes: number, configKey: string): HookAnswer {
  if (raw !== null && typeof raw === "object" && !Array.isArray(raw) && (raw as { result?: unknown }).result === "modify") {
    const size = sizeAtLeast((raw as { payload?: unknown }).payload, maxBytes);
    if (size > maxBytes) throw new HookAnswerError(`its modified payload is over ${maxBytes} bytes (${configKey} max_payload_bytes)`);
  }
  // The first problem only is said: the parse stops there (an answer of 65,000 bad entries made as many issues).
  const parsed = v.safeParse(answerSchema, raw, { abortEarly: true });
  if (!parsed.success) {
    throw new HookAnswerError(`it answered ${describeRaw(raw)}, not {result: "continue"}, {result: "modify", payload} or {result: "reject", reason}: ${v.summarize(parsed.issues).split("\n")[0]}`);
  }
  const answer = parsed.output;
  if (answer.result === "reject") return { result: "reject", reason: answer.reason.length > MAX_REASON_CHARS ? `${answer.reason.slice(0, MAX_REASON_CHARS)}... (cut)` : answer.reason };
  if (answer.result === "continue") return answer;
  const modifiable = Object.keys(point.modifiable);
  const next: Record<string, unknown> = { ...current };
  for (const [key, value] of Object.entries(answer.payload)) {
    const schema = Object.hasOwn(point.modifiable, key) ? point.modifiable[key] : undefined;
    if (!schema) {
      if (Object.hasOwn(current, key) && sameValue(current[key], value)) continue;
      throw new HookAnswerError(`its modify changed "${key.slice(0, 64)}", which ${point.name} hooks may not change (${modifiable.length ? `modifiable: ${modifiable.join(", ")}` : "nothing is modifiable at this point"})`);
    }
    const field = v.safeParse(schema, value, { abortEarly: true });
    if (!field.success) throw new HookAnswerError(`its modified "${key}" is not valid: ${v.summarize(field.issues).split("\n")[0]}`);
    next[key] = field.output;
  }
  const problem = point.checkModified?.(current, next);
  if (problem) throw new HookAnswerError(`its modify is refused: ${problem}`);
  return { result: "modify", payload: point.rebuild ? point.rebuild(current, next) : next };
}

function describeRaw(raw: unknown): string {
  if (raw === null || raw === undefined) return String(raw);
  if (typeof raw !== "object") return `a ${typeof raw}`;
  if (Array.isArray(raw)) return "an array";
  const r = (raw as { result?: unknown }).result;
  return typeof r === "string" ? `result "${r.slice(0, 32)}"` : "a map without a result";
}

// ---------------------------------------------------------------------------------------
// The service and the family

/** Thrown by HookService.run when a hook rejected, or failed at a fail-closed point. */
export class HookRejection extends CapabilityError {
  constructor(
    readonly point: HookPointName,
    /** The hook's module. */
    readonly hookModule: string,
    readonly reason: string,
    /** A failure under fail-closed, rather than a reject. */
    readonly failed: boolean,
  ) {
    super("hook_rejected", failed
      ? `refused at hook point ${point}: the hook of module "${hookModule}" failed (${reason}) and ${point} is fail-closed`
      : `refused at hook point ${point} by the hook of module "${hookModule}": ${reason}`);
    this.name = "HookRejection";
  }
}

const hooksOf = (c: CallContext) => serviceOf(c, "hooks");
const pointName = named("HookPoint", v.picklist(HOOK_POINT_NAMES, `expected a hook point: ${HOOK_POINT_NAMES.join(", ")}`));
/** The answer of register_hook: the chain's order at the point now. */
const HookRegistered = named("HookRegistered", v.object({ point: pointName, order: v.array(v.string()) }));
const names = v.optional(v.pipe(v.array(moduleName), v.maxLength(MAX_ORDER_NAMES, `at most ${MAX_ORDER_NAMES} module names`)));

export const hooks: Family = {
  name: "hooks",
  summary: "Hooks with results at the host's hook points (docs/module-guide.md, Hooks).",
  methods: [
    method({
      name: "register_hook", result: HookRegistered, callback: "hook", handWritten: { rust: "before and after as slices, left out when empty" }, js: "register", permission: "register_hook", args: ["point", "handler", "options"],
      params: v.object({ point: pointName, before: names, after: names }),
      summary: `Run this module's hook at \`point\` (one per point; registering again replaces it, order included); \`before\`/\`after\` name modules whose hooks this one must precede or follow. Returns the chain's order. A cycle is refused (invalid_params, naming the modules); at most ${MAX_HOOKS_PER_POINT} hooks per point. Calls arrive as \`hook\` invocations {point, payload}.`,
      targets: (p) => [p.point],
      audit: true,
      handler: async (c, p) => {
        if (p.before?.includes(c.module) || p.after?.includes(c.module)) throw new CapabilityError("invalid_params", "a hook cannot be ordered before or after its own module");
        const order = hooksOf(c).register(c.module, p.point, { ...(p.before ? { before: p.before } : {}), ...(p.after ? { after: p.after } : {}) });
        return { point: p.point, order };
      },
    }),
    method({
      name: "unregister_hook", result: v.boolean(), js: "unregister", permission: "register_hook", args: ["point"],
      params: v.object({ point: pointName }),
      summary: "Remove this module's hook at `point`; true if it had one.",
      targets: (p) => [p.point],
      handler: async (c, p) => hooksOf(c).unregister(c.module, p.point),
    }),
  ],
};
