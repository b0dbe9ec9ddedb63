// One file: its body is one script string evaluated inside the isolate, which cannot import;
// splitting it would mean joining script pieces at run time.
//
// The script that runs first in every module isolate. It takes the two host references the
// isolate host planted (request, log), removes them from the global object, removes what
// policy forbids, and exposes one object, __modhost_runtime, that the isolate host reads
// (and then deletes) to build `ctx` and to start, stop and feed the module.
//
// Nothing here is a security boundary: the host checks every request against the module's
// grants on the other side of the channel, so a module that tampered with this code would
// still reach only what it was granted. This code gives well-behaved modules a good API.

import { MAX_VALUE_DEPTH } from "../../protocol/codec.ts";

export const BOOTSTRAP = String.raw`
(function (global) {
  "use strict";
  const callRef = global.__modhost_call;
  const logRef = global.__modhost_log;
  delete global.__modhost_call;
  delete global.__modhost_log;
  // WebAssembly memory is allocated outside the heap limit; shared memory and Atomics.wait
  // could block the isolate host's thread. Modules get neither.
  for (const name of ["WebAssembly", "SharedArrayBuffer", "Atomics"]) delete global[name];

  const freeze = (v) => {
    if (v && typeof v === "object" && !Object.isFrozen(v)) {
      Object.freeze(v);
      for (const k of Object.keys(v)) freeze(v[k]);
    }
    return v;
  };

  class ModhostError extends Error {
    constructor(code, message, method) {
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
  const calls = new Map();
  let nextCall = 1;
  let outbox = null;
  const send = (batch) => callRef.applyIgnored(undefined, [batch], { arguments: { copy: true } });
  const flush = () => {
    const batch = outbox;
    outbox = null;
    try {
      send(batch);
    } catch {
      // One call's arguments cannot be copied out (a function, say): send the others, and
      // fail only that one.
      for (const entry of batch) {
        try {
          send([entry]);
        } catch (err) {
          const c = calls.get(entry[0]);
          calls.delete(entry[0]);
          if (c) c.reject(new TypeError(entry[1] + ": arguments must be plain data (" + toText(err && err.message ? err.message : err) + ")"));
        }
      }
    }
  };
  const request = (method, params) => new Promise((resolve, reject) => {
    const id = nextCall++;
    calls.set(id, { method, resolve, reject });
    if (!outbox) {
      outbox = [];
      Promise.resolve().then(flush);
    }
    outbox.push([id, method, params]);
  });
  /** Answers from the isolate host: [id, true, value] or [id, false, code, message] each. */
  const settle = (answers) => {
    for (const a of answers) {
      const c = calls.get(a[0]);
      if (!c) continue;
      calls.delete(a[0]);
      if (a[1]) c.resolve(a[2]);
      else c.reject(new ModhostError(a[2], a[3], c.method));
    }
  };

  const toText = (a) => {
    if (typeof a === "string") return a;
    if (a instanceof Error) return a.stack || a.message;
    try { return JSON.stringify(a); } catch { return String(a); }
  };
  const plainFields = (f) => {
    if (!f || typeof f !== "object" || Array.isArray(f)) return undefined;
    try { return JSON.parse(JSON.stringify(f)); } catch { return undefined; }
  };
  const log = (level, message, fields) => {
    logRef.applyIgnored(undefined, [level, toText(message), plainFields(fields)], { arguments: { copy: true } });
  };
  const logger = freeze({
    debug: (m, f) => log("debug", m, f),
    info: (m, f) => log("info", m, f),
    warn: (m, f) => log("warn", m, f),
    error: (m, f) => log("error", m, f),
  });
  const consoleLine = (level) => (...args) => log(level, args.map(toText).join(" "));
  global.console = freeze({ log: consoleLine("info"), info: consoleLine("info"), debug: consoleLine("debug"), warn: consoleLine("warn"), error: consoleLine("error") });

  // Timer ids are the host's: a callback can be filed under its id only once schedule_task
  // (or register_timer) has answered, and the host may fire the timer before that answer is
  // through (a 0 ms task). Every registration in flight is kept here; an invocation for an id
  // not known yet waits for them before it is looked up again, so no callback is ever lost.
  const timerRegistrations = new Set();
  const registering = (p) => {
    const settled = p.then(() => {}, () => {});
    timerRegistrations.add(settled);
    settled.then(() => timerRegistrations.delete(settled));
    return p;
  };
  const timerEntry = async (id) => {
    const entry = callbacks.timer.get(id);
    if (entry || timerRegistrations.size === 0) return entry;
    // The registration that got this id was sent before the host could fire it: it is in
    // this snapshot, and later ones need not be waited for.
    await Promise.all([...timerRegistrations]);
    return callbacks.timer.get(id);
  };

  // What a handler answers crosses the channel as one message: it must be plain data and fit
  // in a frame. Checked here, before it is copied out of the isolate and encoded, so that a
  // huge or cyclic answer becomes an error for the caller instead of a failure of the isolate
  // host. Error messages are cut too.
  const MAX_ERROR_CHARS = 4096;
  // The protocol's one depth limit for a data value (protocol/codec.ts MAX_VALUE_DEPTH), the
  // same that storage applies: whatever a module may store, a handler may answer. The
  // envelope's own levels are allowed for by the receiver (ENVELOPE_DEPTH).
  const MAX_DEPTH = ${MAX_VALUE_DEPTH};
  let answerBytes = 16 * 1024 * 1024 - 4096;
  const cut = (text) => {
    text = String(text);
    return text.length <= MAX_ERROR_CHARS ? text : text.slice(0, MAX_ERROR_CHARS) + " ... [" + (text.length - MAX_ERROR_CHARS) + " more characters cut]";
  };
  const errorCode = (err) => (err && typeof err.code === "string" && err.code.length > 0 && err.code.length <= 64 ? err.code : "module_error");
  const errorMessage = (err) => cut(toText(err && err.message !== undefined ? err.message : err));
  class AnswerError extends Error {
    constructor(code, message) {
      super(message);
      this.code = code;
    }
  }
  /** UTF-8 length of s, or some length past room once it is sure to be past it. */
  const ASCII = /^[\x00-\x7f]*$/;
  const utf8Length = (s, room) => {
    if (s.length > room) return s.length;
    if (ASCII.test(s)) return s.length; // the usual case, at the regular expression engine's speed
    let n = 0;
    for (let i = 0; i < s.length && n <= room; i++) {
      const c = s.charCodeAt(i);
      n += c < 0x80 ? 1 : c < 0x800 ? 2 : c >= 0xd800 && c <= 0xdbff ? (i++, 4) : 3;
    }
    return n;
  };
  /**
   * Throws AnswerError (not_plain_data, result_too_large) unless value can be sent as an
   * answer. The first pass checks the shape and bounds the size from string lengths (a
   * character is 1 to 3 bytes of UTF-8); only when the bounds straddle the limit does a
   * second pass count the bytes of each string.
   */
  const checkAnswer = (value, what) => {
    let low = 0;
    let high = 0;
    let exact = false;
    const ancestors = new Set();
    const notPlain = (path, why) => new AnswerError("not_plain_data", what + " is not plain data: " + (path || "the value") + " is " + why +
      "; answer with null, booleans, numbers, strings, Uint8Array, arrays and plain objects only");
    const text = (s) => {
      if (exact) {
        const n = 5 + utf8Length(s, answerBytes - low);
        low += n;
        high += n;
      } else {
        low += 5 + s.length;
        high += 5 + 3 * s.length;
      }
    };
    const fixed = (n) => {
      low += n;
      high += n;
    };
    const walk = (v, path, depth) => {
      if (low > answerBytes) return;
      if (v === null || v === undefined || typeof v === "boolean") return fixed(1);
      if (typeof v === "number") return fixed(9);
      if (typeof v === "string") return text(v);
      if (typeof v === "bigint") throw notPlain(path, "a bigint (send it as a string or a number)");
      if (typeof v !== "object") throw notPlain(path, "a " + typeof v);
      if (v instanceof Uint8Array) return fixed(5 + v.byteLength);
      if (depth >= MAX_DEPTH) {
        throw new AnswerError("result_too_large", what + " is nested deeper than " + MAX_DEPTH + " levels at " + (path || "the value") +
          ": over the protocol limit max_depth of a data value (fixed; docs/protocol.md section 3); answer with a flatter value");
      }
      if (ancestors.has(v)) throw notPlain(path, "a cycle (it contains itself)");
      ancestors.add(v);
      if (Array.isArray(v)) {
        fixed(5);
        for (let i = 0; i < v.length && low <= answerBytes; i++) walk(v[i], exact ? "" : path + "[" + i + "]", depth + 1);
      } else {
        const proto = Object.getPrototypeOf(v);
        if (proto !== Object.prototype && proto !== null) throw notPlain(path, "a " + ((v.constructor && v.constructor.name) || "non-plain object"));
        fixed(5);
        for (const k of Object.keys(v)) {
          if (low > answerBytes) break;
          text(k);
          walk(v[k], exact ? "" : path ? path + "." + k : k, depth + 1);
        }
      }
      ancestors.delete(v);
    };
    walk(value, "", 0);
    if (low <= answerBytes && high > answerBytes) {
      exact = true;
      low = high = 0;
      walk(value, "", 0);
    }
    if (low > answerBytes) {
      throw new AnswerError("result_too_large", what + " is larger than " + answerBytes + " bytes, more than one message of the module protocol carries (its frame limit, max_frame_bytes " +
        (answerBytes + 4096) + ", is fixed); answer with less, for example a page of the data and a key to ask for the next");
    }
  };

  const handlers = new Map();
  const callbacks = { module_api: new Map(), rpc: new Map(), cli: new Map(), timer: new Map(), provider: new Map(), hook: new Map() };
  let currentConfig = null;
  let dispatching = null;
  let ctx = null;
  let moduleStop = null;

  // A paged answer (docs/protocol.md, "Paged answers"): ask for the next page until there is
  // none and join the pages, so the module gets the whole list. A page that names another
  // thing than the first (the block at a height changed between two pages) starts it again.
  async function allPages(m, params) {
    const { cursor, items, next, same } = m.pages;
    for (let attempt = 0; ; attempt++) {
      const first = await request(m.name, params);
      if (first === null || typeof first !== "object" || first[next] === null || first[next] === undefined) return first;
      const whole = first[items].slice();
      let at = first[next];
      let changed = false;
      while (at !== null && at !== undefined) {
        const page = await request(m.name, { ...params, [cursor]: at });
        if (page === null || page[same] !== first[same]) {
          changed = true;
          break;
        }
        for (const item of page[items]) whole.push(item);
        at = page[next];
      }
      if (!changed) return { ...first, [items]: whole, [next]: null };
      if (attempt >= 3) throw new Error(m.name + ": what it reads changed between its pages four times in a row; try again");
    }
  }

  // What one part of a transaction may weigh: under the protocol's per-message limits
  // (max_values 65,536; 1 MiB of strings; 4,096 distinct map keys), with room for the message
  // around it.
  const PART = { values: 48000, stringBytes: 768 * 1024, keys: 3500, bytes: 12 * 1024 * 1024 };
  let nextTransactionId = 1;
  function weighInto(v, w) {
    w.values++;
    if (typeof v === "string") {
      w.stringBytes += utf8Length(v, Infinity);
    } else if (v instanceof Uint8Array) {
      w.bytes += v.byteLength;
    } else if (Array.isArray(v)) {
      for (const x of v) weighInto(x, w);
    } else if (v !== null && typeof v === "object") {
      for (const k of Object.keys(v)) {
        w.values++;
        w.stringBytes += utf8Length(k, Infinity);
        // A key over 64 bytes counts at every appearance, a shorter one once (max_map_keys).
        if (k.length > 21 || !w.keySet.has(k)) {
          w.keySet.add(k);
          w.keys++;
        }
        weighInto(v[k], w);
      }
    }
  }
  /** The ops in parts that each fit one message; one part when they all do. */
  function splitOps(ops) {
    const parts = [];
    let part = [];
    let w = { values: 0, stringBytes: 0, keys: 0, bytes: 0, keySet: new Set() };
    for (const op of ops) {
      weighInto(op, w);
      const over = w.values > PART.values || w.stringBytes > PART.stringBytes || w.keys > PART.keys || w.bytes + w.stringBytes > PART.bytes;
      if (over && part.length > 0) {
        // This op starts the next part (alone it may still be too big: the host then says which limit).
        parts.push(part);
        part = [];
        w = { values: 0, stringBytes: 0, keys: 0, bytes: 0, keySet: new Set() };
        weighInto(op, w);
      }
      part.push(op);
    }
    parts.push(part);
    return parts;
  }

  function buildCtx(methods, config, meta) {
    const families = {};
    for (const m of methods) {
      const fam = (families[m.family] ||= {});
      fam[m.js] = (...args) => {
        const params = {};
        m.args.forEach((name, i) => {
          const a = args[i];
          if (a === undefined) return;
          if (name === "options" && a && typeof a === "object") Object.assign(params, a);
          else params[name] = a;
        });
        return m.pages ? allPages(m, params) : request(m.name, params);
      };
    }
    // Methods that take a function: the function stays in the isolate, registered under the
    // key the host will name when it invokes it (an event type, an API method, a timer id...).
    const special = {
      subscribe_events: (wire) => async (types, handler) => {
        const list = Array.isArray(types) ? types.slice() : [types];
        if (typeof handler !== "function") throw new TypeError("events.subscribe(types, handler): handler must be a function");
        for (const t of list) {
          if (!handlers.has(t)) handlers.set(t, []);
          handlers.get(t).push(handler);
        }
        try {
          await wire({ types: list });
        } catch (err) {
          for (const t of list) handlers.set(t, (handlers.get(t) || []).filter((h) => h !== handler));
          throw err;
        }
        return async () => {
          const gone = [];
          for (const t of list) {
            const left = (handlers.get(t) || []).filter((h) => h !== handler);
            handlers.set(t, left);
            if (left.length === 0) gone.push(t);
          }
          if (gone.length) await request("unsubscribe_events", { types: gone });
        };
      },
      register_module_api: (wire) => async (api) => {
        const names = Object.keys(api || {}).filter((k) => typeof api[k] === "function");
        if (names.length === 0) throw new TypeError("modules.registerApi(api): pass an object of functions");
        callbacks.module_api.clear();
        for (const n of names) callbacks.module_api.set(n, api[n]);
        return wire({ methods: names });
      },
      unregister_module_api: (wire) => async () => {
        callbacks.module_api.clear();
        return wire({});
      },
      register_rpc_endpoint: (wire) => async (method, description, handler) => {
        if (typeof handler !== "function") throw new TypeError("rpc.register(method, description, handler): handler must be a function");
        const result = await wire({ method, description: description || "" });
        callbacks.rpc.set(method, handler);
        return result;
      },
      unregister_rpc_endpoint: (wire) => async (method) => {
        callbacks.rpc.delete(method);
        return wire({ method });
      },
      register_cli_spec: (wire) => async (spec, commands) => {
        callbacks.cli.clear();
        for (const [name, fn] of Object.entries(commands || {})) if (typeof fn === "function") callbacks.cli.set(name, fn);
        return wire({ spec });
      },
      register_timer: (wire) => (intervalSeconds, fn) => {
        if (typeof fn !== "function") return Promise.reject(new TypeError("timers.every(seconds, fn): fn must be a function"));
        return registering(wire({ interval_seconds: intervalSeconds }).then((id) => {
          callbacks.timer.set(id, { fn, once: false });
          return id;
        }));
      },
      schedule_task: (wire) => (delaySeconds, fn) => {
        if (typeof fn !== "function") return Promise.reject(new TypeError("timers.after(seconds, fn): fn must be a function"));
        return registering(wire({ delay_seconds: delaySeconds }).then((id) => {
          callbacks.timer.set(id, { fn, once: true });
          return id;
        }));
      },
      cancel_timer: (wire) => async (id) => {
        callbacks.timer.delete(id);
        return wire({ timer_id: id });
      },
      // hooks.register(point, handler, {before, after}): the handler answers {result: "continue"},
      // {result: "modify", payload} or {result: "reject", reason}; returning nothing is continue.
      register_hook: (wire) => async (point, handler, options) => {
        if (typeof handler !== "function") throw new TypeError("hooks.register(point, handler, options): handler must be a function");
        const params = { point };
        if (options && typeof options === "object") {
          if (options.before !== undefined) params.before = options.before;
          if (options.after !== undefined) params.after = options.after;
        }
        const previous = callbacks.hook.get(point);
        callbacks.hook.set(point, handler);
        try {
          return await wire(params);
        } catch (err) {
          if (previous) callbacks.hook.set(point, previous);
          else callbacks.hook.delete(point);
          throw err;
        }
      },
      unregister_hook: (wire) => async (point) => {
        const result = await wire({ point });
        callbacks.hook.delete(point);
        return result;
      },
      // A transaction whose ops do not fit one message (the protocol's limits on values and
      // string bytes per message, docs/protocol.md section 3.1) goes in parts of one id; the
      // host holds them and writes all at once with the last (section 6.2).
      storage_transaction: (wire) => async (tree, ops) => {
        if (!Array.isArray(ops)) return wire({ tree, ops });
        const parts = splitOps(ops);
        if (parts.length === 1) return wire({ tree, ops });
        const id = nextTransactionId++;
        for (let i = 0; i < parts.length - 1; i++) await wire({ tree, ops: parts[i], part: { id, more: true } });
        return wire({ tree, ops: parts[parts.length - 1], part: { id, more: false } });
      },
      register_provider: (wire) => async (kind, impl) => {
        if (!impl || typeof impl !== "object") throw new TypeError("provide(kind, implementation): pass an object of functions");
        callbacks.provider.set(kind, impl);
        return wire({ kind });
      },
    };
    for (const m of methods) {
      const make = special[m.name];
      if (make) families[m.family][m.js] = make((params) => request(m.name, params));
    }
    if (families.events && families.events.subscribe) families.events.on = families.events.subscribe;
    // With manage_timers, the familiar timer functions work too, on top of host timers.
    if (families.timers && families.timers.every && families.timers.after && families.timers.cancel) {
      const t = families.timers;
      const later = (once) => (fn, ms, ...args) => {
        const box = { id: 0, cancelled: false };
        if (typeof fn !== "function") throw new TypeError((once ? "setTimeout" : "setInterval") + "(fn, ms): fn must be a function");
        (once ? t.after : t.every)(Math.max(0.001, (Number(ms) || 0) / 1000), () => fn(...args)).then((id) => {
          box.id = id;
          if (box.cancelled) t.cancel(id).catch(() => {});
        }, (err) => {
          // quota_exceeded and the like: there is no promise to reject, so say it in the log.
          log("error", (once ? "setTimeout" : "setInterval") + " could not schedule its callback: " + toText(err && err.message ? err.message : err));
        });
        return box;
      };
      const clear = (box) => {
        if (!box) return;
        box.cancelled = true;
        if (box.id) t.cancel(box.id).catch(() => {});
      };
      global.setTimeout = later(true);
      global.setInterval = later(false);
      global.clearTimeout = clear;
      global.clearInterval = clear;
    }
    currentConfig = freeze(config);
    ctx = { module: freeze({ ...meta }), log: logger };
    Object.defineProperty(ctx, "config", { enumerable: true, get: () => currentConfig });
    for (const [name, fam] of Object.entries(families)) {
      if (name === "config") continue; // ctx.config is the configuration itself
      ctx[name] = freeze(fam);
    }
    freeze(ctx);
  }

  async function invokeRaw(kind, params) {
    const fail = (message) => {
      const err = new Error(message);
      err.code = "unknown_method";
      throw err;
    };
    switch (kind) {
      case "module_api": {
        const fn = callbacks.module_api.get(params.method);
        if (!fn) fail("this module's API has no method " + params.method);
        return await fn(params.params, freeze({ caller: params.caller }));
      }
      case "rpc": {
        const fn = callbacks.rpc.get(params.method);
        if (!fn) fail("no handler for RPC method " + params.method);
        return await fn(params.params);
      }
      case "cli": {
        const fn = callbacks.cli.get(params.command);
        if (!fn) fail("no handler for command " + params.command);
        return await fn(params.args || []);
      }
      case "timer": {
        const entry = await timerEntry(params.id);
        // Cancelled (or from a previous process): nothing to run.
        if (!entry) return null;
        if (entry.once) callbacks.timer.delete(params.id);
        await entry.fn();
        return null;
      }
      case "provider": {
        const impl = callbacks.provider.get(params.kind);
        const fn = impl && impl[params.method];
        if (typeof fn !== "function") fail("this module does not provide " + params.kind + "." + params.method);
        return await fn(params.params || {});
      }
      case "hook": {
        const fn = callbacks.hook.get(params.point);
        if (!fn) fail("this module has no hook at " + params.point);
        const answer = await fn(freeze(params.payload), freeze({ point: params.point }));
        return answer === undefined || answer === null ? { result: "continue" } : answer;
      }
      case "config":
        currentConfig = freeze(params.config || {});
        return null;
      default:
        fail("unknown invocation kind " + kind);
    }
  }

  global.__modhost_runtime = {
    settle,
    init(methods, config, meta, limits) {
      if (limits && limits.maxFrameBytes > 65536) answerBytes = limits.maxFrameBytes - 4096;
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
      moduleStop = exp && typeof exp.stop === "function" ? exp.stop : null;
      await start(ctx);
    },
    async stop(reason) {
      if (moduleStop) await moduleStop(reason);
    },
    /**
     * An invocation from the host (module API call, RPC call, timer, CLI command, provider call,
     * new config). Answers {ok, value} or {ok: false, code, message}: only data crosses back.
     */
    async invoke(kind, params) {
      try {
        const value = await invokeRaw(kind, params);
        checkAnswer(value, "the answer of the " + kind + " handler");
        return { ok: true, value };
      } catch (err) {
        // The stack (cut) lets the isolate host say where in the module's files it was thrown.
        let stack;
        try {
          stack = err && typeof err.stack === "string" ? err.stack.slice(0, 16384) : undefined;
        } catch (_) {
          // a getter of the module's that throws: no position, then
        }
        return { ok: false, code: errorCode(err), message: errorMessage(err), stack };
      }
    },
    /**
     * A batch of events, [type, payload, seq, missed] each: every handler of each, in order.
     * progress() tells the isolate host which event is running and since when, and abandons
     * the batch when that event has run too long (the rest is then sent again, without it).
     */
    async dispatch(batchId, batch) {
      const state = { id: batchId, index: 0, startedAt: Date.now(), abandoned: false };
      dispatching = state;
      for (let i = 0; i < batch.length; i++) {
        if (state.abandoned) return;
        state.index = i;
        state.startedAt = Date.now();
        const [type, payload, seq, missed] = batch[i];
        const list = handlers.get(type) || [];
        if (list.length === 0) continue;
        const event = freeze({ type, payload, seq, missed: missed || 0 });
        for (const h of list) {
          try {
            await h(event);
          } catch (err) {
            log("error", "event handler for " + type + " failed: " + toText(err));
          }
          if (state.abandoned) return;
        }
      }
      if (dispatching === state) dispatching = null;
    },
    /** The running batch batchId: which event, for how long; abandoned if that is timeoutMs or more. */
    progress(batchId, timeoutMs) {
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
})(globalThis);
`;
