// The API hub: the one place where a module's request is checked and served, whatever the
// runtime. Order: the method must exist, its permission must be granted, the parameters must
// be valid, every scoped target must be inside the grant (deny wins), then the handler runs.
// Failures become protocol errors with a code and a message that says what to do; handler
// errors that are not deliberate are sanitised so no host internals leak to a module.

import { METHODS } from "../capabilities/families.ts";
import { checkGrant, type EffectiveGrants } from "../capabilities/grants.ts";
import { CapabilityError, type CallContext, type MethodDef } from "../capabilities/types.ts";
import { wireError, type WireError } from "../protocol/messages.ts";
import { closest } from "../capabilities/catalogue.ts";
import { parseBounded } from "../capabilities/parse-bounded.ts";

/** Names longer than this are not compared with the known ones: no method name comes close. */
const MAX_SUGGEST_LENGTH = 64;
const METHOD_NAMES = [...METHODS.keys()];

/**
 * The message for an unknown method. The name is the module's: its length is bounded before
 * it is compared with every known name (edit distance, quadratic in the lengths) or echoed.
 */
function unknownMethod(method: string): string {
  if (method.length > MAX_SUGGEST_LENGTH) {
    return `unknown method "${method.slice(0, 32)}..." (${method.length} characters; no method name is longer than ${MAX_SUGGEST_LENGTH})`;
  }
  const guess = closest(method, METHOD_NAMES);
  return `unknown method "${method}"${guess ? `; did you mean "${guess}"?` : ""}`;
}

export class HubError extends Error {
  constructor(readonly wire: WireError) {
    super(wire.message);
    this.name = "HubError";
  }
}

export interface Denial {
  module: string;
  method: string;
  permission: string;
  reason: string;
}

export interface Action {
  module: string;
  method: string;
  permission: string | null;
  /** The scope targets the call was checked against (a path, a host:port...), if any. */
  targets?: string[];
  /** For a failed call of an `audit: "always"` method: the error code it got. */
  error?: string;
}

export interface HubOptions {
  /** Called for every refused request (audit log). */
  onDenied?: (d: Denial) => void;
  /**
   * Called after every successful call of a method marked `audit` (and, for `audit: "always"`,
   * after a failed one too, with its error code), with the call's scope targets.
   */
  onAction?: (a: Action) => void;
  /** Called for handler errors that were sanitised, with the real error (host log). */
  onInternalError?: (module: string, method: string, err: unknown) => void;
}

/** What the audit log records of one call (a plain function: no closure made per call). */
function auditAction(module: string, method: string, permission: string | null, targets: string[], error?: string): Action {
  return { module, method, permission, ...(targets.length > 0 ? { targets } : {}), ...(error !== undefined ? { error } : {}) };
}

export class ApiHub {
  constructor(private readonly opts: HubOptions = {}) {}

  /** Every method a module with `grants` may call. */
  methodsFor(grants: EffectiveGrants): string[] {
    return [...METHODS.values()].filter((m) => m.permission === null || grants.has(m.permission)).map((m) => m.name).sort();
  }

  /**
   * Check and serve one request. Methods with scope targets or an audit record take the general
   * path (handleScoped); the others, most requests, get the handler's own promise with its
   * failures turned into protocol errors: no async frame of its own per call.
   */
  handle(call: CallContext, grants: EffectiveGrants, method: string, params: Record<string, unknown>): Promise<unknown> {
    const served = this.dispatch(call, grants, method, params);
    return served instanceof Promise ? served : Promise.resolve(served);
  }

  /**
   * A request refused before it reached the hub (its body did not decode, it was no valid
   * message, or it found no room to wait: host/session.ts): the `refused` hook of its method,
   * or, when its method could not be read, of every method that has one, is told, with its
   * params when they were read (`undefined`: they could not be); what they return is added to
   * the refusal's message. So every way a request can fail before its handler lets go of what
   * earlier requests hold for it, as a refusal by the hub itself does (a storage transaction's
   * held parts, docs/protocol.md 6.2).
   */
  refusedBefore(call: CallContext, method: string | undefined, params: Record<string, unknown> | undefined): string {
    if (method !== undefined) return METHODS.get(method)?.refused?.(call, params) ?? "";
    let also = "";
    for (const def of METHODS.values()) also += def.refused?.(call, undefined) ?? "";
    return also;
  }

  /**
   * handle(), but a handler that answered at once (a value: storage_get's synchronous read) has
   * its value returned as it is, not in a promise; anything else (refusals and failures among
   * them) is a promise. The session answers a value in the same pass, with no promise hop
   * (host/session.ts serve). A value is never a Promise: answers are plain data.
   */
  dispatch(call: CallContext, grants: EffectiveGrants, method: string, params: Record<string, unknown>): unknown {
    const def = METHODS.get(method);
    let input: unknown;
    try {
      input = this.admit(call, grants, method, def, params);
    } catch (err) {
      return Promise.reject(err);
    }
    const d = def!;
    if (d.targets || d.audit) return this.handleScoped(call, grants, method, d, input);
    let result: unknown;
    try {
      result = d.handler(call, input);
    } catch (err) {
      return Promise.reject(this.failed(call.module, method, d, err, [], true));
    }
    // A value (plain data: never a function, so never a thenable) is the answer as it is.
    if (typeof (result as { then?: unknown } | null)?.then !== "function") return result;
    // Promise.resolve: the handler's own promise as it is (or a thenable made one).
    return Promise.resolve(result).then(undefined, (err: unknown) => {
      throw this.failed(call.module, method, d, err, [], true);
    });
  }

  /** The method exists, its permission is granted, its parameters are valid: the handler's input. */
  private admit(call: CallContext, grants: EffectiveGrants, method: string, def: MethodDef | undefined, params: Record<string, unknown>): unknown {
    if (!def) throw new HubError(wireError("unknown_method", unknownMethod(method)));
    if (def.permission !== null) {
      const decision = checkGrant(grants, def.permission);
      if (!decision.ok) {
        const also = def.refused?.(call, params) ?? "";
        this.deny(call.module, method, def.permission, `${method} requires the "${def.permission}" capability, which this module was not granted; the operator can grant it in [modules.grants.${call.module}]${also}`);
      }
    }
    if (def.accepts?.(params) === true) return params;
    const parsed = parseBounded(def.params, params);
    if (!parsed.success) {
      const also = def.refused?.(call, params) ?? "";
      throw new HubError(wireError("invalid_params", `${method}: ${parsed.message.replace(/\n/g, "; ")}${also}`));
    }
    return parsed.output;
  }

  /** Methods with scope targets (each checked against the grant) or an audit record. */
  private async handleScoped(call: CallContext, grants: EffectiveGrants, method: string, def: MethodDef, input: unknown): Promise<unknown> {
    let targets: string[] = [];
    let reached = false;
    try {
      if (def.targets && def.permission !== null) {
        targets = await def.targets(input, call);
        for (const target of targets) {
          const decision = checkGrant(grants, def.permission, target);
          if (!decision.ok) this.deny(call.module, method, def.permission, `${method}: ${decision.reason}`);
        }
      }
      reached = true;
      const result = await def.handler(call, input);
      if (def.audit) this.opts.onAction?.(auditAction(call.module, method, def.permission, targets));
      return result;
    } catch (err) {
      throw this.failed(call.module, method, def, err, targets, reached);
    }
  }

  /**
   * What a failed call answers: a capability's refusal is a denial (audited as one); anything
   * else a protocol error, recorded for an `audit: "always"` method whose handler was reached.
   */
  private failed(module: string, method: string, def: MethodDef, err: unknown, targets: string[], reached: boolean): HubError {
    if (err instanceof CapabilityError && err.denial && def.permission !== null) return this.denial(module, method, def.permission, `${method}: ${err.message}`);
    const hubError = this.toHubError(module, method, err);
    if (reached && def.audit === "always") this.opts.onAction?.(auditAction(module, method, def.permission, targets, hubError.wire.code));
    return hubError;
  }

  private deny(module: string, method: string, permission: string, reason: string): never {
    throw this.denial(module, method, permission, reason);
  }

  private denial(module: string, method: string, permission: string, reason: string): HubError {
    this.opts.onDenied?.({ module, method, permission, reason });
    return new HubError(wireError("permission_denied", reason, { capability: permission }));
  }

  private toHubError(module: string, method: string, err: unknown): HubError {
    if (err instanceof HubError) return err;
    if (err instanceof CapabilityError) return new HubError(wireError(err.code, err.message));
    // The chain backend lost its node: the module may retry later (ChainBackendRestored says when).
    if (err instanceof Error && err.name === "BackendUnavailableError") {
      return new HubError(wireError("backend_unavailable", `${method}: the chain backend cannot reach its node now; retry after the ChainBackendRestored event`));
    }
    // Storage errors carry their own code and a message written for the module.
    const code = (err as { code?: unknown })?.code;
    if (err instanceof Error && err.name === "StorageError" && typeof code === "string") {
      const known = ["quota_exceeded", "invalid_params", "not_found"] as const;
      return new HubError(wireError((known as readonly string[]).includes(code) ? (code as (typeof known)[number]) : "backend_error", err.message));
    }
    this.opts.onInternalError?.(module, method, err);
    return new HubError(wireError("backend_error", `${method} failed inside the host; the operator's log has the details`));
  }
}
