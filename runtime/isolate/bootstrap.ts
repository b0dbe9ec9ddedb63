// The script that runs first in every module isolate. It takes the two host references the
// isolate host planted (request, log), removes them from the global object, removes what
// policy forbids, and exposes one object, __modhost_runtime, that the isolate host reads
// (and then deletes) to build `ctx` and to start, stop and feed the module.
//
// Nothing here is a security boundary: the host checks every request against the module's
// grants on the other side of the channel, so a module that tampered with this code would
// still reach only what it was granted. This code gives well-behaved modules a good API.

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

  const request = async (method, params) => {
    const r = await callRef.apply(undefined, [method, params], { arguments: { copy: true }, result: { promise: true, copy: true } });
    if (r.ok) return r.value;
    throw new ModhostError(r.code, r.message, method);
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

  const handlers = new Map();
  let ctx = null;
  let moduleStop = null;

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
        return request(m.name, params);
      };
    }
    if (families.events && families.events.subscribe) {
      const wireSubscribe = families.events.subscribe;
      const wireUnsubscribe = families.events.unsubscribe;
      families.events.subscribe = async (types, handler) => {
        const list = Array.isArray(types) ? types.slice() : [types];
        if (typeof handler !== "function") throw new TypeError("events.subscribe(types, handler): handler must be a function");
        for (const t of list) {
          if (!handlers.has(t)) handlers.set(t, []);
          handlers.get(t).push(handler);
        }
        try {
          await wireSubscribe(list);
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
          if (gone.length) await wireUnsubscribe(gone);
        };
      };
      families.events.on = families.events.subscribe;
    }
    ctx = { module: freeze({ ...meta }), config: freeze(config), log: logger };
    for (const [name, fam] of Object.entries(families)) {
      if (name === "config") continue; // ctx.config is the configuration itself
      ctx[name] = freeze(fam);
    }
    freeze(ctx);
  }

  global.__modhost_runtime = {
    init(methods, config, meta) {
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
    async dispatch(type, payload, seq, missed) {
      const list = handlers.get(type) || [];
      const event = freeze({ type, payload, seq, missed: missed || 0 });
      for (const h of list) {
        try {
          await h(event);
        } catch (err) {
          log("error", "event handler for " + type + " failed: " + toText(err));
        }
      }
    },
  };
})(globalThis);
`;
