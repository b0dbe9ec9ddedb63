// The module directory (HostServices.modules): who is loaded, which module API each one
// exposes, and calls from one module into another.
//
// A call reaches the callee as a `module_api` invocation {caller, method, params, depth}. The
// caller is the calling connection's module, filled in by the capability from the CallContext,
// never by the module, so the callee learns who really called it.
//
// Call loops (A calls B, whose handler calls A, ...) are bounded by a call depth the host
// tracks itself: while a module is handling calls, a call it makes counts as nested inside
// the deepest of them. A module cannot lower its depth by leaving anything out of its request.
// (A call a module makes from a timer while it also handles a call counts as nested too: the
// bound errs on the side of refusing.) A call nested more than MAX_CALL_DEPTH deep that goes
// back to a module already in its chain (a loop) is refused with quota_exceeded, naming the
// chain; one to a module not in it, only past twice MAX_CALL_DEPTH. Refusing every call past
// MAX_CALL_DEPTH let two modules that call each other and a victim V keep V handling a call 8
// deep, so that each call V made for anything else was refused (38 of 40 to a third module).
// Past MAX_CALL_DEPTH a chain only grows by modules not yet in it, so it still ends.

import { wireError, type ErrorCode } from "../../protocol/messages.ts";
import { InvocationError, type HostSession } from "../session.ts";
import { HubError } from "../hub.ts";
import type { ModuleDirectory, ModuleInfo } from "../../capabilities/types.ts";

const MAX_CALL_DEPTH = 8;

/** A known module, as the manager reports it. */
export interface KnownModule {
  name: string;
  version: string;
  runtime: string;
  state: string;
  description: string | null;
}

/**
 * The chains of module calls in progress, for the depth bound. Shared by module calls and
 * provider calls, so that a loop through both is bounded as well.
 */
export class CallChains {
  /** module -> token -> the chain of modules that led to a call it is handling. */
  private readonly active = new Map<string, Map<number, string[]>>();
  private next = 1;

  /** The chain a new call from `caller` extends: the longest chain `caller` is handling, plus itself. */
  chainFrom(caller: string): string[] {
    let longest: string[] = [];
    for (const chain of this.active.get(caller)?.values() ?? []) if (chain.length > longest.length) longest = chain;
    return longest.length > 0 ? longest : [caller];
  }

  /** `target` handles a call reached through `chain` (ending with target); returns the release. */
  enter(target: string, chain: string[]): () => void {
    const token = this.next++;
    let calls = this.active.get(target);
    if (!calls) this.active.set(target, (calls = new Map()));
    calls.set(token, chain);
    return () => {
      const now = this.active.get(target);
      now?.delete(token);
      if (now?.size === 0) this.active.delete(target);
    };
  }

  forget(module: string): void {
    this.active.delete(module);
  }

  /** Calls `module` is handling now (for tests). */
  depthOf(module: string): number {
    return this.active.get(module)?.size ?? 0;
  }
}

export interface ModuleDirectoryOptions {
  /** The connection of a running module, or undefined. */
  session: (module: string) => HostSession | undefined;
  /**
   * The connection of a module's current process, in any state (a caller's calls are served
   * from its start): its end gives up the calls it made (default: `session`).
   */
  instance?: (module: string) => HostSession | undefined;
  /** Every module the manager knows that was loaded (not skipped). */
  modules: () => KnownModule[];
  chains?: CallChains;
  maxDepth?: number;
}

/** Error codes a callee may answer with that reach the caller as they are. */
const PASSED_THROUGH: readonly ErrorCode[] = ["invalid_params", "not_found", "unknown_method", "timeout", "unavailable", "quota_exceeded"];

export class ModuleApiDirectory implements ModuleDirectory {
  private readonly apis = new Map<string, Set<string>>();
  readonly chains: CallChains;
  private readonly maxDepth: number;

  constructor(private readonly opts: ModuleDirectoryOptions) {
    this.chains = opts.chains ?? new CallChains();
    this.maxDepth = opts.maxDepth ?? MAX_CALL_DEPTH;
  }

  list(): ModuleInfo[] {
    return this.opts.modules().map((m) => this.describe(m));
  }

  info(name: string): ModuleInfo | null {
    const m = this.opts.modules().find((x) => x.name === name);
    return m ? this.describe(m) : null;
  }

  private describe(m: KnownModule): ModuleInfo {
    return { name: m.name, version: m.version, runtime: m.runtime, state: m.state, description: m.description, api: [...(this.apis.get(m.name) ?? [])].sort() };
  }

  registerApi(module: string, methods: string[]): void {
    this.apis.set(module, new Set(methods));
  }

  unregisterApi(module: string): void {
    this.apis.delete(module);
  }

  async call(caller: string, target: string, method: string, params: unknown, timeoutMs = 10_000): Promise<unknown> {
    const session = this.opts.session(target);
    if (!session) {
      const known = this.opts.modules().find((m) => m.name === target);
      if (!known) throw fail("not_found", `no module named "${target}" is loaded`);
      // Its state may still read "running" for the moment between its process's connection
      // ending and the supervisor hearing of it (a crash, a restart).
      throw fail("unavailable", known.state === "running"
        ? `module "${target}" has no connection to the host right now (its process ended or is being replaced); try again when it runs`
        : `module "${target}" is not running (it is ${known.state}); try again when it is`);
    }
    const api = this.apis.get(target);
    if (!api?.has(method)) {
      throw fail("unknown_method", api && api.size > 0
        ? `module "${target}" has no API method "${method}"; its API: ${[...api].sort().join(", ")}`
        : `module "${target}" has not registered a module API`);
    }
    const chain = [...this.chains.chainFrom(caller), target];
    const depth = chain.length - 1;
    const loops = chain.indexOf(target) < depth;
    if ((depth > this.maxDepth && loops) || depth > 2 * this.maxDepth) {
      throw fail("quota_exceeded", loops
        ? `call from "${caller}" to "${target}" refused: module calls may nest at most ${this.maxDepth} deep (${chain.join(" -> ")}); is there a call loop?`
        : `call from "${caller}" to "${target}" refused: module calls may nest at most ${2 * this.maxDepth} deep (${chain.join(" -> ")}), ${this.maxDepth} when they go back to a module already in the chain`);
    }
    const release = this.chains.enter(target, chain);
    try {
      return await session.invoke("module_api", { caller, method, params: params ?? null, depth }, timeoutMs, { caller, instance: (this.opts.instance ?? this.opts.session)(caller) });
    } catch (err) {
      throw calleeError(err, `${target}.${method}`, timeoutMs);
    } finally {
      release();
    }
  }

  /** Drop what `module` registered (its process ended). */
  forget(module: string): void {
    this.apis.delete(module);
    this.chains.forget(module);
  }
}

function fail(code: ErrorCode, message: string): HubError {
  return new HubError(wireError(code, message));
}

/** The caller's view of a failed invocation of `what` ("module.method"). */
export function calleeError(err: unknown, what: string, timeoutMs: number): HubError {
  if (!(err instanceof InvocationError)) return fail("internal", `${what} failed inside the host`);
  const { code, message } = err.wire;
  if (code === "timeout" && /did not answer within/.test(message)) return fail("timeout", `${what} did not answer within ${timeoutMs} ms`);
  if (code === "unavailable" && /disconnected|not connected/.test(message)) return fail("unavailable", `${what}: the module stopped before answering`);
  if (PASSED_THROUGH.includes(code)) return fail(code, `${what}: ${message}`);
  return fail("module_error", `${what} failed: ${code === "module_error" ? "" : `[${code}] `}${message}`);
}
