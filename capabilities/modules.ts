// Module communication: call another module's API, expose your own, discover who is running.
//
// The caller of call_module is always the calling connection's module (the CallContext), so
// the callee learns who really called it; a module cannot call under another's name. A grant
// of call_module may be scoped to target modules ("call_module=price-feed"). Routing, call
// depth and timeouts are the module directory's job (host/services/modules.ts).
import * as v from "valibot";
import { CapabilityError, method, type CallContext, type Family, serviceOf } from "./types.ts";
import { deeperThan, MAX_VALUE_DEPTH } from "../protocol/codec.ts";
import { ModuleInfo, Plain, done, none } from "./schemas.ts";

/** Default and largest wait for another module's answer. */
const CALL_TIMEOUT_MS = 10_000;
const MAX_CALL_TIMEOUT_MS = 60_000;
/** Methods one module may expose. */
const MAX_API_METHODS = 256;

export const moduleName = v.pipe(
  v.string(),
  v.regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/, "expected a module name (letters, digits, '-' and '_')"),
);
const apiMethod = v.pipe(
  v.string(),
  v.regex(/^[A-Za-z_$][A-Za-z0-9_$.-]{0,63}$/, "expected an API method name (a letter or '_' first, then letters, digits, '_', '.', '-'; at most 64)"),
);

const directory = (c: CallContext) => serviceOf(c, "modules");

export const modules: Family = {
  name: "modules",
  summary: "Call other modules' APIs, expose one, and discover running modules.",
  methods: [
    method({
      name: "call_module", result: Plain, handWritten: { ts: "params and result generic", rust: "call_module and call_module_timeout (a Duration)" }, js: "call", permission: "call_module", args: ["target", "method", "params", "timeout_ms"],
      params: v.object({
        target: moduleName,
        method: apiMethod,
        params: v.optional(v.unknown()),
        timeout_ms: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(MAX_CALL_TIMEOUT_MS))),
      }),
      summary: `Call a method of another module's API; the callee sees this module as the caller. Waits up to timeout_ms (default ${CALL_TIMEOUT_MS}, at most ${MAX_CALL_TIMEOUT_MS}).`,
      targets: (p) => [p.target],
      handler: (c, p) => {
        // The frame leaves room for the request around params; a data value has at most 64 levels.
        if (deeperThan(p.params, MAX_VALUE_DEPTH)) {
          throw new CapabilityError("invalid_params", `params is nested deeper than ${MAX_VALUE_DEPTH} levels, the most a data value may have (a fixed protocol limit: docs/protocol.md section 3.1); send a flatter value`);
        }
        return directory(c).call(c.module, p.target, p.method, p.params ?? null, p.timeout_ms ?? CALL_TIMEOUT_MS);
      },
    }),
    method({
      name: "register_module_api", result: done, callback: "module_api", js: "registerApi", permission: "register_module_api", args: ["methods"],
      params: v.object({
        methods: v.pipe(v.array(apiMethod), v.minLength(1, "name at least one method"), v.maxLength(MAX_API_METHODS, `at most ${MAX_API_METHODS} methods`)),
      }),
      summary: "Expose these methods to modules granted call_module for this one (replaces an earlier API).",
      handler: async (c, p) => {
        directory(c).registerApi(c.module, [...new Set(p.methods)]);
        return true as const;
      },
    }),
    method({
      name: "unregister_module_api", result: done, js: "unregisterApi", permission: "register_module_api", args: [], params: none,
      summary: "Withdraw this module's API.",
      handler: async (c) => {
        directory(c).unregisterApi(c.module);
        return true as const;
      },
    }),
    method({
      name: "discover_modules", result: v.array(ModuleInfo), js: "list", permission: "discover_modules", args: [], params: none,
      summary: "Every loaded module: name, version, runtime, state, description, API methods.",
      handler: async (c) => directory(c).list(),
    }),
    method({
      name: "get_module_info", result: v.nullable(ModuleInfo), js: "info", permission: "discover_modules", args: ["module"], params: v.object({ module: moduleName }),
      summary: "Public information about one module, or null.",
      handler: async (c, p) => directory(c).info(p.module),
    }),
    method({
      name: "is_module_available", result: v.boolean(), js: "isAvailable", permission: "discover_modules", args: ["module"], params: v.object({ module: moduleName }),
      summary: "Whether a module is running now.",
      handler: async (c, p) => directory(c).info(p.module)?.state === "running",
    }),
  ],
};
