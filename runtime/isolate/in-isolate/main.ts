// One file: the calls out of the isolate (their batch, the unanswered ones, the crossing) and the
// runtime built on them close over the references and primordials saved before any module code
// runs, and are read together.
//
// The script that runs first in every module isolate (built into one script by
// runtime/isolate/bootstrap.ts: this file and what it imports, bundled by esbuild). It takes
// the two host references the isolate host planted (request, log), removes them from the
// global object, removes what policy forbids, and exposes one object, __modhost_runtime, that
// the isolate host reads (and then deletes) to build `ctx` and to start, stop and feed the
// module.
//
// It runs inside the isolate: no Node, no require, no timers of its own; only what
// ./contract.ts declares comes from outside (biome.json forbids Node's globals here).
//
// Nothing here is a security boundary: the host checks every request against the module's
// grants on the other side of the channel, so a module that tampered with this code would
// still reach only what it was granted. This code gives well-behaved modules a good API.

import type {
  AnswerEntry, CallEntry, CallFunction, DispatchedFunction, DoneFunction, EventEntry, InitLimits, InvocationKind, InvokeAnswer, InvokedEntry, InvokeEntry,
  IsolateRuntime, LogFunction, MethodShape, ModuleMeta, Progress,
} from "./contract.ts";
import type { LogLevel } from "../../../protocol/messages.ts";
import { AnswerError, byteSize, checkAnswer, checkParams, errorCode, errorMessage, isUint8Array, MAX_VALUES, ownBytes, put } from "./answer.ts";
import { packOps, packParams } from "./pack.ts";
import { splitOps } from "./parts.ts";
import { MAX_LOG_FIELDS_CHARS, plainFieldsSized, toText } from "./text.ts";
import { installTimers } from "./timers.ts";
import { countLogChars, droppedLinesText, MAX_CALLS_UNANSWERED, newStretch, takeCall, takeCallBytes, takeLogLine, tooManyCallBytesText, tooManyCallsText, tooManyUnansweredText } from "./stretch.ts";

type Fn = (...args: unknown[]) => unknown;
type Params = Record<string, unknown>;

/** What the module's bundle leaves in __modhost_exports (runtime/isolate/compile.ts). */
interface ModuleExports {
  default?: unknown;
  start?: unknown;
  stop?: unknown;
}

/** The isolate's global object as this script sees it. */
interface IsolateGlobal {
  __modhost_call?: CallFunction;
  __modhost_log?: LogFunction;
  __modhost_done?: DoneFunction;
  __modhost_dispatched?: DispatchedFunction;
  __modhost_runtime?: IsolateRuntime;
  __modhost_exports?: ModuleExports;
  console: unknown;
  setTimeout: unknown;
  setInterval: unknown;
  clearTimeout: unknown;
  clearInterval: unknown;
  WebAssembly?: unknown;
  SharedArrayBuffer?: unknown;
  Atomics?: unknown;
}

const global = globalThis as unknown as IsolateGlobal;
const callOut = global.__modhost_call!;
const logOut = global.__modhost_log!;
const doneOut = global.__modhost_done!;
const dispatchedOut = global.__modhost_dispatched!;
delete global.__modhost_call;
delete global.__modhost_log;
delete global.__modhost_done;
delete global.__modhost_dispatched;
// WebAssembly memory is allocated outside the heap limit; shared memory and Atomics.wait
// could block the isolate host's thread. Modules get neither.
for (const name of ["WebAssembly", "SharedArrayBuffer", "Atomics"] as const) delete global[name];
// Resizable ArrayBuffers (`new ArrayBuffer(n, { maxByteLength })`) are refused for the same
// reason: V8 reserves and commits their pages itself, not through the allocator that holds every
// other buffer of the isolate to memory_mb (isolated-vm counts none of it). A module keeping
// one of 8 MiB per call, yielding between calls, took its isolate host past its ceiling and on
// to the kernel's limit (memory_total_mb) with a memory_mb of 64. The constructor everyone
// reaches (the global, ArrayBuffer.prototype.constructor, and through it slice's species) is
// one that refuses the option, read once, and passes on only the length; the engine's own
// buffers (a typed array's) are never resizable.
const NativeArrayBuffer = ArrayBuffer;
const construct = Reflect.construct;
const defineProperty = Object.defineProperty;
const FixedArrayBuffer = new Proxy(NativeArrayBuffer, {
  // No prototype: a trap the module defined on Object.prototype would be one of this proxy's.
  __proto__: null,
  construct(target: ArrayBufferConstructor, args: unknown[], newTarget: object) {
    const options = args[1];
    if (options !== null && (typeof options === "object" || typeof options === "function") && (options as { maxByteLength?: unknown }).maxByteLength !== undefined) {
      throw new RangeError("resizable ArrayBuffers (maxByteLength) are not available to modules: their memory is outside the isolate's limit (memory_mb); make a new buffer of the size needed");
    }
    return construct(target, [args[0]], newTarget as NewableFunction);
  },
} as ProxyHandler<ArrayBufferConstructor>);
(global as unknown as { ArrayBuffer: unknown }).ArrayBuffer = FixedArrayBuffer;
defineProperty(NativeArrayBuffer.prototype, "constructor", { __proto__: null, value: FixedArrayBuffer, writable: true, enumerable: false, configurable: true } as PropertyDescriptor);

const freeze = <T>(v: T): T => {
  if (v && typeof v === "object" && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const k of Object.keys(v)) freeze((v as Record<string, unknown>)[k]);
  }
  return v;
};

class ModhostError extends Error {
  declare code: string;
  declare method: string;
  constructor(code: string, message: string, method: string) {
    super(message);
    this.name = "ModhostError";
    this.code = code;
    this.method = method;
  }
}

// Host calls are batched: every call made in one turn of the module's code (say the 1000
// gets of a Promise.all) leaves the isolate in one crossing, at the end of the turn (a
// microtask), and the isolate host sends them on in one write. Answers come back the same
// way, in batches, through settle().
const calls = new Map<number, { method: string; resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
// The table's methods as they were before module code ran: the bound on unanswered calls reads
// its size, which a module could otherwise redefine (Map.prototype.size is configurable) to
// make without end calls that each cost the isolate host until answered.
const apply = Reflect.apply;
const promiseThen = Promise.prototype.then;
const mapSize = Object.getOwnPropertyDescriptor(Map.prototype, "size")!.get!;
const { get: mapGet, set: mapSet, delete: mapDelete } = Map.prototype;
type Call = { method: string; resolve: (v: unknown) => void; reject: (e: unknown) => void };
const callsSize = () => apply(mapSize, calls, []) as number;
const callOf = (id: number) => apply(mapGet, calls, [id]) as Call | undefined;
const dropCall = (id: number) => apply(mapDelete, calls, [id]) as boolean;
let nextCall = 1;
let outbox: CallEntry[] | null = null;
const send = (batch: CallEntry[]) => callOut(batch);
/**
 * Sends a batch out of the isolate in one crossing. If the batch cannot be copied out, each
 * entry goes alone, and `refused` is told of each one that cannot (and why): the others leave.
 */
function sendBatch<E>(out: (batch: E[]) => void, batch: E[], refused: (entry: E, why: string) => void): void {
  try {
    out(batch);
  } catch {
    for (const entry of batch) {
      try {
        out([entry]);
      } catch (err) {
        refused(entry, toText(err && (err as Error).message ? (err as Error).message : err));
      }
    }
  }
}
const flush = () => {
  const batch = outbox!;
  outbox = null;
  // One call's arguments cannot be copied out (a function, say): only that one fails.
  sendBatch(send, batch, (entry, why) => {
    const c = callOf(entry[0]);
    dropCall(entry[0]);
    if (c) c.reject(new TypeError(entry[1] + ": arguments must be plain data (" + why + ")"));
  });
};
const request = (method: string, params: Params | Uint8Array): Promise<unknown> =>
  new Promise((resolve, reject) => {
    if (callsSize() >= MAX_CALLS_UNANSWERED) {
      reject(new ModhostError("quota_exceeded", tooManyUnansweredText(), method));
      return;
    }
    // Checked before anything is copied out (the copy is made of every reference, outside
    // memory_mb); what is sent is the checked copy, which module code cannot change.
    let sent = params;
    const sized = { bytes: 0 };
    if (isUint8Array(params)) sized.bytes = byteSize(params);
    else {
      try {
        sent = checkParams(params, method, answerBytes, sized) as Params;
      } catch (err) {
        // A limit (AnswerError, with its code), or a getter or proxy trap of the params that threw.
        const code = err instanceof AnswerError ? err.code : "not_plain_data";
        reject(new ModhostError(code, code === "not_plain_data" && !(err instanceof AnswerError) ? method + ": the params could not be read: " + errorMessage(err) : (err as Error).message, method));
        return;
      }
    }
    if (!takeCall()) {
      reject(new ModhostError("quota_exceeded", tooManyCallsText(), method));
      return;
    }
    if (!takeCallBytes(sized.bytes)) {
      reject(new ModhostError("quota_exceeded", tooManyCallBytesText(sized.bytes), method));
      return;
    }
    // A view's bytes in a buffer of their own: a copy out of the isolate takes its whole buffer.
    if (isUint8Array(sent)) sent = ownBytes(sent);
    const id = nextCall++;
    apply(mapSet, calls, [id, { method, resolve, reject }]);
    if (!outbox) {
      outbox = [];
      Promise.resolve().then(flush);
    }
    // Not push(): a module that replaced Array.prototype.push would be handed the entry, to
    // change what was checked before it crosses.
    put(outbox, outbox.length, [id, method, sent]);
  });
/** Answers from the isolate host: [id, true, value] or [id, false, code, message] each. */
const settle = (answers: AnswerEntry[]) => {
  for (const a of answers) {
    const c = callOf(a[0]);
    if (!c) continue;
    dropCall(a[0]);
    if (a[1]) c.resolve(a[2]);
    else c.reject(new ModhostError(a[2], a[3], c.method));
  }
};

/** The isolate host keeps this much of a message (its MAX_LOG_CHARS, after mapping stack positions, which may lengthen it): no more crosses. */
const LOG_CHARS_OUT = 2 * 8192;
/**
 * A line's text from its parts (a message, or a console call's arguments joined by spaces), cut
 * at LOG_CHARS_OUT, and the characters made to get it. Parts past the cut are not converted, and
 * no part is joined whole: console.log of 100 objects of 1 MB of JSON each made 100 MB of text
 * for a line of 16 KiB (the module ended for memory_mb), four strings of 64 Mi characters were
 * joined into one of 256 Mi, and lines past the stretch's budget were converted before being
 * dropped (1,000 lines of a 1 MB object: stopped for cpu_time_ms, 19 lines heard).
 */
const lineText = (parts: readonly unknown[]): [string, number] => {
  let text = "";
  let made = 0;
  // The host cuts a line at half of LOG_CHARS_OUT anyway: parts past it are left unsaid.
  for (let i = 0; i < parts.length && text.length < LOG_CHARS_OUT; i++) {
    const part = parts[i];
    const partText = toText(part);
    // A string is taken as it is; anything else was made into text (JSON, a stack) here.
    if (typeof part !== "string") made += partText.length;
    if (i > 0) text += " ";
    const room = LOG_CHARS_OUT - text.length;
    text += partText.length > room ? partText.slice(0, room) : partText;
  }
  return [text, made + text.length];
};
const log = (level: LogLevel, parts: readonly unknown[], fields?: unknown) => {
  // Taken before any conversion: a line the stretch has no room for costs nothing more.
  if (!takeLogLine()) return;
  let [text, made] = lineText(parts);
  const [plain, size] = plainFieldsSized(fields);
  if (size < 0) text += " [fields dropped: more than " + MAX_LOG_FIELDS_CHARS + " characters as JSON (MAX_LOG_FIELDS_CHARS)]";
  // What was made counts toward the stretch's MAX_LOG_CHARS_PER_STRETCH, not only what is sent.
  countLogChars(made + (size < 0 ? MAX_LOG_FIELDS_CHARS : size));
  logOut(level, text, plain);
};
const logger = freeze({
  debug: (m: unknown, f?: unknown) => log("debug", [m], f),
  info: (m: unknown, f?: unknown) => log("info", [m], f),
  warn: (m: unknown, f?: unknown) => log("warn", [m], f),
  error: (m: unknown, f?: unknown) => log("error", [m], f),
});
const consoleLine =
  (level: LogLevel) =>
  (...args: unknown[]) =>
    log(level, args);
global.console = freeze({ log: consoleLine("info"), info: consoleLine("info"), debug: consoleLine("debug"), warn: consoleLine("warn"), error: consoleLine("error") });

const handlers = new Map<string, Fn[]>();
const callbacks = {
  module_api: new Map<string, Fn>(),
  rpc: new Map<string, Fn>(),
  cli: new Map<string, Fn>(),
  timer: new Map<number, { fn: Fn; once: boolean }>(),
  provider: new Map<string, Record<string, unknown>>(),
  hook: new Map<string, Fn>(),
};
let currentConfig: unknown = null;
let dispatching: { id: number; index: number; startedAt: number; abandoned: boolean } | null = null;
let ctx: Record<string, unknown> | null = null;
let moduleStop: Fn | null = null;
let answerBytes = 16 * 1024 * 1024 - 4096;
/** How long one slice of due timer callbacks may run (the isolate host's invocation slice). */
let timerSliceMs = 5;

// Timer ids are the host's: a callback can be filed under its id only once schedule_task
// (or register_timer) has answered, and the host may fire the timer before that answer is
// through (a 0 ms task). Every registration in flight is kept here; an invocation for an id
// not known yet waits for them before it is looked up again, so no callback is ever lost.
const timerRegistrations = new Set<Promise<void>>();
const registering = <T>(p: Promise<T>): Promise<T> => {
  const settled = p.then(
    () => {},
    () => {},
  );
  timerRegistrations.add(settled);
  settled.then(() => timerRegistrations.delete(settled));
  return p;
};
const timerEntry = async (id: number) => {
  const entry = callbacks.timer.get(id);
  if (entry || timerRegistrations.size === 0) return entry;
  // The registration that got this id was sent before the host could fire it: it is in
  // this snapshot, and later ones need not be waited for.
  await Promise.all([...timerRegistrations]);
  return callbacks.timer.get(id);
};

type Page = Record<string, unknown>;

// A paged answer (docs/protocol.md, "Paged answers"): ask for the next page until there is
// none and join the pages, so the module gets the whole list. A page that names another
// thing than the first (the block at a height changed between two pages) starts it again.
async function allPages(m: MethodShape & { pages: NonNullable<MethodShape["pages"]> }, params: Params): Promise<unknown> {
  const { cursor, items, next, same } = m.pages;
  for (let attempt = 0; ; attempt++) {
    const first = (await request(m.name, params)) as Page | null;
    if (first === null || typeof first !== "object" || first[next] === null || first[next] === undefined) return first;
    const whole = (first[items] as unknown[]).slice();
    let at: unknown = first[next];
    let changed = false;
    while (at !== null && at !== undefined) {
      const page = (await request(m.name, { ...params, [cursor]: at })) as Page | null;
      if (page === null || page[same] !== first[same]) {
        changed = true;
        break;
      }
      for (const item of page[items] as unknown[]) whole.push(item);
      at = page[next];
    }
    if (!changed) return { ...first, [items]: whole, [next]: null };
    if (attempt >= 3) throw new Error(m.name + ": what it reads changed between its pages four times in a row; try again");
  }
}

// Raw serialisations (a block, a transaction) come as binary on the wire and are given to the
// module as hex (docs/protocol.md 6.3): the isolate host process makes the hex before the
// answer enters the isolate (runtime/isolate/worker.ts, protocol/raw-hex.ts).

let nextTransactionId = 1;

type Wire = (params: Params) => Promise<unknown>;
const asFunctions = (v: unknown) => v as Record<string, unknown>;

// Methods that take a function: the function stays in the isolate, registered under the
// key the host will name when it invokes it (an event type, an API method, a timer id...).
// Made by buildCtx (once), not when the bootstrap is evaluated: every start evaluates it.
/** register_timer and schedule_task: the callback is kept under the id the host gives the timer. */
const timerMethod = (js: string, key: "interval_seconds" | "delay_seconds", once: boolean) => (wire: Wire): Fn => (seconds, fn) => {
  if (typeof fn !== "function") return Promise.reject(new TypeError(`${js}(seconds, fn): fn must be a function`));
  return registering(
    wire({ [key]: seconds }).then((id) => {
      callbacks.timer.set(id as number, { fn: fn as Fn, once });
      return id;
    }),
  );
};

const specialMethods = (): Record<string, (wire: Wire) => Fn> => ({
  subscribe_events: (wire) => async (types, handler) => {
    // Its length before slice() and the loop below: a sparse array 4,294,967,295 long was
    // copied and walked hole by hole until cpu_time_ms stopped the isolate.
    if (Array.isArray(types) && types.length > MAX_VALUES) {
      throw new ModhostError("result_too_large", "events.subscribe: " + types.length + " event types, more than the protocol's max_values (" + MAX_VALUES + ") values one message can carry; subscribe to fewer", "subscribe_events");
    }
    const list = (Array.isArray(types) ? types.slice() : [types]) as string[];
    if (typeof handler !== "function") throw new TypeError("events.subscribe(types, handler): handler must be a function");
    for (const t of list) {
      if (!handlers.has(t)) handlers.set(t, []);
      handlers.get(t)!.push(handler as Fn);
    }
    // A type without handlers is dropped from the map: one kept as an empty list for every type
    // ever subscribed to grew the map without end under subscribe/unsubscribe churn.
    const drop = (t: string) => {
      const left = (handlers.get(t) || []).filter((h) => h !== handler);
      if (left.length > 0) handlers.set(t, left);
      else handlers.delete(t);
      return left.length;
    };
    try {
      await wire({ types: list });
    } catch (err) {
      for (const t of list) drop(t);
      throw err;
    }
    return async () => {
      const gone: string[] = [];
      for (const t of list) if (drop(t) === 0) gone.push(t);
      if (gone.length) await request("unsubscribe_events", { types: gone });
    };
  },
  // The host no longer delivers these types: their handlers go too. Kept, they ran again beside
  // a later subscription's handler (and piled up, one per subscribe and unsubscribe).
  unsubscribe_events: (wire) => async (types) => {
    const result = await wire({ types });
    if (Array.isArray(types)) for (const t of types) handlers.delete(t as string);
    return result;
  },
  register_module_api: (wire) => async (api) => {
    const fns = asFunctions(api);
    const names = Object.keys(fns || {}).filter((k) => typeof fns[k] === "function");
    if (names.length === 0) throw new TypeError("modules.registerApi(api): pass an object of functions");
    callbacks.module_api.clear();
    for (const n of names) callbacks.module_api.set(n, fns[n] as Fn);
    return wire({ methods: names });
  },
  unregister_module_api: (wire) => async () => {
    callbacks.module_api.clear();
    return wire({});
  },
  register_rpc_endpoint: (wire) => async (method, description, handler) => {
    if (typeof handler !== "function") throw new TypeError("rpc.register(method, description, handler): handler must be a function");
    const result = await wire({ method, description: description || "" });
    callbacks.rpc.set(method as string, handler as Fn);
    return result;
  },
  unregister_rpc_endpoint: (wire) => async (method) => {
    callbacks.rpc.delete(method as string);
    return wire({ method });
  },
  register_cli_spec: (wire) => async (spec, commands) => {
    callbacks.cli.clear();
    for (const [name, fn] of Object.entries(asFunctions(commands || {}))) if (typeof fn === "function") callbacks.cli.set(name, fn as Fn);
    return wire({ spec });
  },
  register_timer: timerMethod("timers.every", "interval_seconds", false),
  schedule_task: timerMethod("timers.after", "delay_seconds", true),
  cancel_timer: (wire) => async (id) => {
    callbacks.timer.delete(id as number);
    return wire({ timer_id: id });
  },
  // hooks.register(point, handler, {before, after}): the handler answers {result: "continue"},
  // {result: "modify", payload} or {result: "reject", reason}; returning nothing is continue.
  register_hook: (wire) => async (point, handler, options) => {
    if (typeof handler !== "function") throw new TypeError("hooks.register(point, handler, options): handler must be a function");
    const params: Params = { point };
    if (options && typeof options === "object") {
      const o = options as { before?: unknown; after?: unknown };
      if (o.before !== undefined) params.before = o.before;
      if (o.after !== undefined) params.after = o.after;
    }
    const previous = callbacks.hook.get(point as string);
    callbacks.hook.set(point as string, handler as Fn);
    try {
      return await wire(params);
    } catch (err) {
      if (previous) callbacks.hook.set(point as string, previous);
      else callbacks.hook.delete(point as string);
      throw err;
    }
  },
  unregister_hook: (wire) => async (point) => {
    const result = await wire({ point });
    callbacks.hook.delete(point as string);
    return result;
  },
  // A transaction whose ops do not fit one message (the protocol's limits on values and
  // string bytes per message, docs/protocol.md section 3.1) goes in parts of one id; the
  // host holds them and writes all at once with the last (section 6.2).
  // Plain ops leave as MessagePack made here (./pack.ts), split the same way; what that
  // encoder gives up on goes as objects, encoded by the isolate host.
  // A later part that fails here, before the host has it (not plain data, past a message's
  // limits), would leave the earlier parts held there for 60 s, each transaction one of the 4 a
  // module may have open: after four such, every transaction in parts was refused for a minute.
  // So the transaction is given up: a last part the host refuses for its parameters drops it
  // (docs/protocol.md 6.2).
  storage_transaction: (wire) => async (tree, ops) => {
    if (!Array.isArray(ops)) return wire({ tree, ops });
    const packed = packOps(tree, ops);
    const abandon = (id: number) => wire({ tree, ops: [{ op: "abandon", key: "" }], part: { id, more: false } }).catch(() => undefined);
    if (packed) {
      const n = packed.parts.length;
      const id = n > 1 ? nextTransactionId++ : 0;
      let answer: unknown;
      for (let i = 0; i < n; i++) {
        try {
          answer = await request("storage_transaction", packParams(packed, i, n > 1 ? { id, more: i < n - 1 } : undefined));
        } catch (err) {
          if (i > 0) await abandon(id);
          throw err;
        }
      }
      return answer;
    }
    const parts = splitOps(ops);
    if (parts.length === 1) return wire({ tree, ops });
    const id = nextTransactionId++;
    for (let i = 0; i < parts.length; i++) {
      const last = i === parts.length - 1;
      try {
        const answer = await wire({ tree, ops: parts[i], part: { id, more: !last } });
        if (last) return answer;
      } catch (err) {
        if (i > 0) await abandon(id);
        throw err;
      }
    }
  },
  register_provider: (wire) => async (kind, impl) => {
    if (!impl || typeof impl !== "object") throw new TypeError("provide(kind, implementation): pass an object of functions");
    callbacks.provider.set(kind as string, impl as Record<string, unknown>);
    return wire({ kind });
  },
});

/** With manage_timers, the familiar timer functions work too: kept in the isolate (./timers.ts), run by one host task. */
function installTimerGlobals(t: Record<string, Fn>): void {
  installTimers(global, {
    after: (seconds, fn) => t.after!(seconds, fn) as Promise<unknown>,
    cancel: (id) => t.cancel!(id) as Promise<unknown>,
    log: (level, message) => log(level, [message]),
    sliceMs: () => timerSliceMs,
  });
}

function buildCtx(methods: MethodShape[], config: unknown, meta: ModuleMeta): void {
  const families: Record<string, Record<string, Fn>> = {};
  const byName = new Map(methods.map((m) => [m.name, m]));
  for (const m of methods) {
    const fam = (families[m.family] ||= {});
    fam[m.js] = (...args: unknown[]) => {
      const params: Params = {};
      m.args.forEach((name, i) => {
        const a = args[i];
        if (a === undefined) return;
        if (name === "options" && a && typeof a === "object") Object.assign(params, a);
        else params[name] = a;
      });
      const via = m.sdk?.via && byName.get(m.sdk.via.method);
      if (via?.pages) return allPages(via as Parameters<typeof allPages>[0], params).then((page) => (page as Page)[m.sdk!.via!.field]);
      const answer = m.pages ? allPages(m as Parameters<typeof allPages>[0], params) : request(m.name, params);
      return answer;
    };
  }
  const special = specialMethods();
  for (const m of methods) {
    const make = special[m.name];
    if (make) families[m.family]![m.js] = make((params) => request(m.name, params));
  }
  if (families.events?.subscribe) families.events.on = families.events.subscribe;
  if (families.timers?.every && families.timers.after && families.timers.cancel) installTimerGlobals(families.timers);
  currentConfig = freeze(config);
  const built: Record<string, unknown> = { module: freeze({ ...meta }), log: logger };
  Object.defineProperty(built, "config", { enumerable: true, get: () => currentConfig });
  for (const [name, fam] of Object.entries(families)) {
    if (name === "config") continue; // ctx.config is the configuration itself
    built[name] = freeze(fam);
  }
  ctx = freeze(built);
}

const unknownMethod = (message: string): never => {
  throw Object.assign(new Error(message), { code: "unknown_method" });
};

type AtOnce = "module_api" | "rpc" | "cli" | "provider" | "hook";
/**
 * The handler of a module API call, an RPC call, a CLI command, a provider call or a hook,
 * called now: what it returned (a promise if it is async). Throws what it threw, or
 * unknown_method.
 */
function callHandler(kind: AtOnce, params: Params): unknown {
  switch (kind) {
    case "module_api": {
      const fn = callbacks.module_api.get(params.method as string);
      if (!fn) unknownMethod("this module's API has no method " + params.method);
      return fn!(params.params, freeze({ caller: params.caller }));
    }
    case "rpc": {
      const fn = callbacks.rpc.get(params.method as string);
      if (!fn) unknownMethod("no handler for RPC method " + params.method);
      return fn!(params.params);
    }
    case "cli": {
      const fn = callbacks.cli.get(params.command as string);
      if (!fn) unknownMethod("no handler for command " + params.command);
      return fn!(params.args || []);
    }
    case "provider": {
      const impl = callbacks.provider.get(params.kind as string);
      const fn = impl?.[params.method as string];
      if (typeof fn !== "function") unknownMethod("this module does not provide " + params.kind + "." + params.method);
      return (fn as Fn)(params.params || {});
    }
    case "hook": {
      const fn = callbacks.hook.get(params.point as string);
      if (!fn) unknownMethod("this module has no hook at " + params.point);
      return fn!(freeze(params.payload), freeze({ point: params.point }));
    }
  }
}
/** What a handler's value answers: a hook that answers nothing goes on. */
const answerOf = (kind: InvocationKind, value: unknown): unknown =>
  kind === "hook" && (value === undefined || value === null) ? { result: "continue" } : value;
const answersAtOnce = (kind: InvocationKind): kind is AtOnce => kind === "module_api" || kind === "rpc" || kind === "cli" || kind === "provider" || kind === "hook";

async function invokeRaw(kind: InvocationKind, params: Params): Promise<unknown> {
  switch (kind) {
    case "module_api":
    case "rpc":
    case "cli":
    case "provider":
    case "hook":
      return answerOf(kind, await callHandler(kind, params));
    case "timer": {
      const id = params.id as number;
      const entry = await timerEntry(id);
      // Cancelled (or from a previous process): nothing to run.
      if (!entry) return null;
      if (entry.once) callbacks.timer.delete(id);
      await entry.fn();
      return null;
    }
    case "config":
      currentConfig = freeze(params.config || {});
      return null;
    default:
      return unknownMethod("unknown invocation kind " + kind);
  }
}

// Invocations come in batches too (every invocation of one read: worker.ts), all started in
// order in one crossing. Each answer leaves as soon as its handler is done, not with its
// batch: the answers ready in one turn leave together (a microtask), so a slow handler holds
// back no other's answer, and the isolate host keeps a deadline per invocation.
let doneBox: InvokedEntry[] | null = null;
let invokeStarted = 0;
const flushDone = () => {
  const batch = doneBox!;
  doneBox = null;
  // One answer cannot be copied out (checkAnswer lets through what the copy refuses): that one
  // becomes its caller's error.
  sendBatch(doneOut, batch, (entry, why) => {
    doneOut([[entry[0], { ok: false, code: "not_plain_data", message: "the answer could not be copied out of the isolate (" + why + "); answer with plain data", stack: undefined }]]);
  });
};
const invoked = (id: number, answer: InvokeAnswer) => {
  if (!doneBox) {
    doneBox = [];
    Promise.resolve().then(flushDone);
  }
  put(doneBox, doneBox.length, [id, answer]);
};

/**
 * Bytes of answers (as checkAnswer sizes them) the handlers started in one invokeMany() crossing
 * may have answered at once before it starts no more (the rest go in the next crossing).
 * Handlers that answer at once had their answers checked and copied out after the batch, in
 * the same crossing, outside its slice: 32 module calls of one read to a method answering
 * 60,000 empty objects (a handler of one line, ~40 ms of check and copy each) ran past
 * cpu_time_ms in one crossing, and its callers could crash the module again at every restart
 * until it was given up on; 32 answers of 12 MiB were copied out together (384 MiB, outside
 * memory_mb). Now each is checked as its handler returns, inside the slice (INVOKE_SLICE_MS),
 * and a crossing stops starting handlers past these bytes.
 */
const MAX_ANSWER_BYTES_PER_BATCH = 16 * 1024 * 1024;

/** The answer of a handler that returned `value`, checked (throws AnswerError). */
function answered(kind: InvocationKind, value: unknown, sized?: { bytes: number }): InvokeAnswer {
  // No prototype: an async function's result is looked up for a `then`, and a module that
  // defined Object.prototype.then would be handed the answer's resolution, to forge it.
  return { __proto__: null, ok: true, value: checkAnswer(value, "the answer of the " + kind + " handler", answerBytes, sized) } as InvokeAnswer;
}
function failedAnswer(err: unknown): InvokeAnswer {
  // The stack (cut) lets the isolate host say where in the module's files it was thrown.
  let stack: string | undefined;
  try {
    const s = err ? (err as Error).stack : undefined;
    stack = typeof s === "string" ? s.slice(0, 16384) : undefined;
  } catch (_) {
    // a getter of the module's that throws: no position, then
  }
  return { __proto__: null, ok: false, code: errorCode(err), message: errorMessage(err), stack } as InvokeAnswer;
}
/**
 * A module API call, RPC call, CLI command, provider call or hook started now: its answer,
 * checked, if its handler answered at once (with its size), or the promise of its answer if the
 * handler returned a promise or another thenable (awaited as before).
 */
function invokeAtOnce(kind: AtOnce, params: Params): { answer?: InvokeAnswer; bytes: number; later?: Promise<InvokeAnswer> } {
  const sized = { bytes: 0 };
  try {
    const value = callHandler(kind, params);
    if (value !== null && (typeof value === "object" || typeof value === "function") && typeof (value as { then?: unknown }).then === "function") {
      return { bytes: 0, later: (async () => {
        try {
          return answered(kind, answerOf(kind, await value));
        } catch (err) {
          return failedAnswer(err);
        }
      })() };
    }
    return { answer: answered(kind, answerOf(kind, value), sized), bytes: sized.bytes };
  } catch (err) {
    return { answer: failedAnswer(err), bytes: 0 };
  }
}

const runtime: IsolateRuntime = {
  settle,
  init(methods: MethodShape[], config: unknown, meta: ModuleMeta, limits: InitLimits | undefined) {
    if (limits && limits.maxFrameBytes > 65536) answerBytes = limits.maxFrameBytes - 4096;
    if (limits?.timerSliceMs && limits.timerSliceMs > 0) timerSliceMs = limits.timerSliceMs;
    buildCtx(methods, config, meta);
  },
  async start() {
    const exp = global.__modhost_exports;
    // The bundle declares it with var (not deletable); clear it instead.
    global.__modhost_exports = undefined;
    const start = exp && (typeof exp.default === "function" ? exp.default : exp.start);
    if (typeof start !== "function") {
      throw new Error("the module does not export a start function: write 'export default async function start(ctx) { ... }'");
    }
    moduleStop = exp && typeof exp.stop === "function" ? (exp.stop as Fn) : null;
    await start(ctx);
  },
  async stop(reason: string) {
    if (moduleStop) await moduleStop(reason);
  },
  /**
   * An invocation from the host (module API call, RPC call, timer, CLI command, provider call,
   * new config). Answers {ok, value} or {ok: false, code, message}: only data crosses back.
   */
  async invoke(kind: InvocationKind, params: Params): Promise<InvokeAnswer> {
    try {
      return answered(kind, await invokeRaw(kind, params));
    } catch (err) {
      return failedAnswer(err);
    }
  },
  /**
   * Start the invocations of a batch in order; each answer leaves through __modhost_done.
   * Starts no more once sliceMs have gone by (at least one is started): the CPU watchdog sees
   * one stretch of module code per crossing, which must stay about one handler's, as when each
   * invocation crossed alone. Answers how many it started; the isolate host sends the rest again.
   */
  invokeMany(batch: InvokeEntry[], sliceMs: number) {
    const t0 = Date.now();
    let started = 0;
    let bytes = 0;
    invokeStarted = 0;
    for (const [id, kind, params] of batch) {
      if (started > 0 && (Date.now() - t0 >= sliceMs || bytes >= MAX_ANSWER_BYTES_PER_BATCH)) break;
      started++;
      invokeStarted = started;
      // A handler that answers at once has its answer checked here, inside the slice (not in a
      // microtask after the batch: see MAX_ANSWER_BYTES_PER_BATCH).
      const now = answersAtOnce(kind) ? invokeAtOnce(kind, params) : undefined;
      if (now?.answer) {
        bytes += now.bytes;
        invoked(id, now.answer);
        continue;
      }
      // Promise.prototype.then as it was: a module's own would be handed the answer to change.
      apply(promiseThen, now ? now.later! : runtime.invoke(kind, params), [(answer: InvokeAnswer) => invoked(id, answer)]);
    }
    return started;
  },
  /** How many of the last invokeMany() batch were started (its answer is lost when the module left a rejection unhandled in that task). */
  invokeStarted() {
    return invokeStarted;
  },
  /**
   * A batch of events, [type, payload, seq, missed] each: every handler of each, in order.
   * progress() tells the isolate host which event is running and since when, and abandons
   * the batch when that event has run too long (the rest is then sent again, without it).
   */
  async dispatch(batchId: number, batch: EventEntry[]) {
    const state = { id: batchId, index: 0, startedAt: Date.now(), abandoned: false };
    dispatching = state;
    for (let i = 0; i < batch.length; i++) {
      if (state.abandoned) return;
      state.index = i;
      state.startedAt = Date.now();
      const [type, payload, seq, missed] = batch[i]!;
      const list = handlers.get(type) || [];
      if (list.length === 0) continue;
      const event = freeze({ type, payload, seq, missed: missed || 0 });
      for (const h of list) {
        try {
          await h(event);
        } catch (err) {
          log("error", ["event handler for " + type + " failed:", err]);
        }
        if (state.abandoned) return;
      }
    }
    if (dispatching === state) dispatching = null;
  },
  /**
   * dispatch() for a synchronous crossing (the isolate host's sync crossings), which cannot
   * wait for a promise: the batch is started here and its end told through __modhost_dispatched.
   */
  dispatchStart(batchId: number, batch: EventEntry[]) {
    void runtime.dispatch(batchId, batch).then(() => dispatchedOut(batchId));
  },
  /** The running batch batchId: which event, for how long; abandoned if that is timeoutMs or more. */
  progress(batchId: number, timeoutMs: number): Progress | null {
    const state = dispatching;
    if (!state || state.id !== batchId) return null;
    const elapsed = Date.now() - state.startedAt;
    if (elapsed >= timeoutMs) {
      state.abandoned = true;
      dispatching = null;
    }
    return { index: state.index, elapsed, abandoned: state.abandoned };
  },
};
// What the isolate host calls: each call is the start of a stretch (./stretch.ts). The
// functions above call each other unwrapped (invokeMany -> invoke is one stretch).
const entry = <A extends unknown[], R>(f: (...args: A) => R) => (...args: A): R => {
  const dropped = newStretch();
  if (dropped > 0) log("warn", [droppedLinesText(dropped)]);
  return f(...args);
};
global.__modhost_runtime = {
  settle: entry(runtime.settle),
  init: entry(runtime.init),
  start: entry(runtime.start),
  stop: entry(runtime.stop),
  invoke: entry(runtime.invoke),
  invokeMany: entry(runtime.invokeMany),
  invokeStarted: runtime.invokeStarted,
  dispatch: entry(runtime.dispatch),
  dispatchStart: entry(runtime.dispatchStart),
  progress: runtime.progress,
};
