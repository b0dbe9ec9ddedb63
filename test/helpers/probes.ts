// The two probe modules of test/catalogue.test.ts: one isolate module, one native module
// (test/fixtures/native-probe/main.ts, bundled by ./native-probe.ts). Both read a list of calls
// from their configuration (`probe.calls`), make every call, and report each outcome in ONE log
// record (PROBE_LOG) whose fields are a ProbeReport. The test reads the reports from the
// harness's captured log records.
//
// This file is bundled into the native probe: it must stay free of runtime imports.

export type ProbeRuntime = "isolate" | "native";

/** The log message that carries a probe's report in its fields. */
export const PROBE_LOG = "catalogue probe results";

/**
 * A parameter value that stands for the result of an earlier call of the same probe
 * (cancel_timer cancels the timer register_timer made), or `otherwise` when there was none.
 */
export interface ResultRef {
  $result: string;
  otherwise: unknown;
}

/** One call: its wire form (the native probe) and its ctx form (the isolate probe). */
export interface ProbeCall {
  /** Wire name. */
  method: string;
  /** ctx.<family>.<js>(...args) */
  family: string;
  js: string;
  params: Record<string, unknown>;
  /** The positional arguments of the ctx form, derived from the method's `args`. */
  args: unknown[];
}

export interface ProbeResult {
  method: string;
  /** Isolate: whether ctx has the method at all. The native probe always sends the request. */
  present: boolean;
  ok?: boolean;
  code?: string;
  message?: string;
  /** permission_denied: the error's data.capability (native only; isolates never see it). */
  capability?: unknown;
  /** The answer as JSON, truncated (see summarise). */
  value?: string;
}

export interface ProbeReport {
  runtime: ProbeRuntime;
  results: ProbeResult[];
  /** Native: the methods the host listed in its welcome. Isolate: "<family>.<name>" of every function on ctx. */
  methods: string[];
}

/** Length at which a reported value is cut. */
export const VALUE_CHARS = 4000;

/** A result as JSON text, cut at VALUE_CHARS; functions and bytes are named, not shown. */
export function summarise(v: unknown): string {
  if (typeof v === "function") return "<function>";
  if (v instanceof Uint8Array) return `<bytes ${v.length}>`;
  let json: string | undefined;
  try {
    json = JSON.stringify(v);
  } catch {
    json = undefined;
  }
  if (json === undefined) return String(v);
  return json.length > VALUE_CHARS ? `${json.slice(0, VALUE_CHARS)}...` : json;
}

export function isResultRef(v: unknown): v is ResultRef {
  return typeof v === "object" && v !== null && !Array.isArray(v) && typeof (v as { $result?: unknown }).$result === "string";
}

/**
 * The isolate probe: index.ts of an isolate module. For a method ctx does not have, it
 * records `present: false`: in an isolate that is the refusal (the module has no way to send
 * the request; the host's side of the channel is not reachable from module code). Methods
 * that take a function get one, as a module would pass it.
 */
export const ISOLATE_PROBE_SOURCE = `
const VALUE_CHARS = ${VALUE_CHARS};
const summarise = (v: any): string => {
  if (typeof v === "function") return "<function>";
  if (v instanceof Uint8Array) return "<bytes " + v.length + ">";
  let json: string | undefined;
  try { json = JSON.stringify(v); } catch { json = undefined; }
  if (json === undefined) return String(v);
  return json.length > VALUE_CHARS ? json.slice(0, VALUE_CHARS) + "..." : json;
};
const isRef = (v: any) => typeof v === "object" && v !== null && !Array.isArray(v) && typeof v.$result === "string";

const PROVIDER = {
  getNodeUrl: () => "probe://isolate-probe/lightning",
  getInfo: () => ({ alias: "isolate-probe" }),
  getPaymentState: (p: any) => ({ provider: "isolate-probe", payment_id: p.payment_id, state: "settled" }),
};

/** The ctx forms that take a function (or an object of functions) besides the data. */
const SPECIAL: Record<string, (fn: any, args: any[], params: any) => Promise<unknown>> = {
  subscribe_events: (fn, a) => fn(a[0], () => {}),
  register_module_api: (fn, _a, p) => fn(Object.fromEntries((p.methods as string[]).map((n) => [n, (params: any, meta: any) => ({ pong: true, caller: meta.caller, params })]))),
  register_rpc_endpoint: (fn, a) => fn(a[0], a[1], () => "pong"),
  register_cli_spec: (fn, a) => fn(a[0], { probe: () => "ok" }),
  register_timer: (fn, a) => fn(a[0], () => {}),
  schedule_task: (fn, a) => fn(a[0], () => {}),
  register_provider: (fn, a) => fn(a[0], PROVIDER),
  register_hook: (fn, a) => fn(a[0], () => ({ result: "continue" }), a[2]),
};

export default async function start(ctx: any): Promise<void> {
  const calls: any[] = ctx.config.probe?.calls ?? [];
  const refs: Record<string, unknown> = {};
  const deref = (v: any) => (isRef(v) ? (v.$result in refs ? refs[v.$result] : v.otherwise) : v);
  const results: any[] = [];
  for (const c of calls) {
    if (c.family === "config") {
      // Every module has its configuration: ctx.config is the table itself, not a function.
      const present = typeof ctx.config === "object" && ctx.config !== null;
      results.push({ method: c.method, present, ok: present, value: summarise(ctx.config) });
      continue;
    }
    const fn = ctx[c.family]?.[c.js];
    if (typeof fn !== "function") {
      results.push({ method: c.method, present: false });
      continue;
    }
    const args = (c.args as unknown[]).map(deref);
    const params = Object.fromEntries(Object.entries(c.params as Record<string, unknown>).map(([k, v]) => [k, deref(v)]));
    try {
      const special = SPECIAL[c.method];
      const value = await (special ? special(fn, args, params) : fn(...args));
      refs[c.method] = value;
      results.push({ method: c.method, present: true, ok: true, value: summarise(value) });
    } catch (e: any) {
      results.push({ method: c.method, present: true, ok: false, code: String(e?.code ?? "thrown"), message: String(e?.message ?? e) });
    }
  }
  const methods: string[] = [];
  for (const [family, obj] of Object.entries(ctx)) {
    if (family === "log" || family === "module" || family === "config" || typeof obj !== "object" || obj === null) continue;
    for (const [name, v] of Object.entries(obj as Record<string, unknown>)) if (typeof v === "function") methods.push(family + "." + name);
  }
  ctx.log.info(${JSON.stringify(PROBE_LOG)}, { runtime: "isolate", results, methods: methods.sort() });
}
`;
