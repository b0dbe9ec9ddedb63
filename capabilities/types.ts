// What a capability family is. Each family (chain.ts, storage.ts, ...) is one small file that
// declares its methods: wire name, name on the module's `ctx`, the permission that unlocks
// it, its parameters (a valibot schema), and the handler. The host's API hub serves every
// request from every runtime through these definitions, so there is one implementation per
// capability whatever the module is written in.

import type * as v from "valibot";
import type { ProviderRole } from "./event-types.ts";
import type { ChainBackend } from "../chain/backend.ts";
import type { ModuleStore } from "../storage/store.ts";
import type { HookPointName, Permission } from "./catalogue.ts";
import type { LogLevel } from "../protocol/messages.ts";
import type { DataUsage } from "./fs-usage.ts";

/** Per-module event subscription control, bound to the calling module's connection. */
interface EventControl {
  subscribe(types: string[]): string[];
  unsubscribe(types: string[]): string[];
  subscribed(): string[];
}

/** Public information about a module (discover_modules, get_module_info). */
export interface ModuleInfo {
  name: string;
  version: string;
  runtime: string;
  state: string;
  description: string | null;
  /** Methods of its module API, when it registered one. */
  api: string[];
}

export interface ModuleDirectory {
  list(): ModuleInfo[];
  info(name: string): ModuleInfo | null;
  /** Invoke `method` of `target`'s module API; the callee sees `caller` as the caller. */
  call(caller: string, target: string, method: string, params: unknown, timeoutMs?: number): Promise<unknown>;
  registerApi(module: string, methods: string[]): void;
  unregisterApi(module: string): void;
}

export interface Metric {
  name: string;
  kind: "counter" | "gauge" | "histogram";
  /**
   * Reported: counter/gauge one value, histogram one or more observations. Read back
   * (get/all): counter/gauge the value, histogram a bounded summary {count, sum, buckets:
   * [[upper bound, cumulative count], ...]} over fixed buckets.
   */
  value: number | number[] | { count: number; sum: number; buckets: Array<[number, number]> };
  labels: Record<string, string>;
  /** Milliseconds since the epoch, set by the host. */
  timestamp: number;
}

export interface CliSpec {
  name: string;
  about?: string;
  commands: Array<{ name: string; about?: string; args?: Array<{ name: string; required?: boolean; about?: string }> }>;
}

/**
 * Host-wide services behind the cross-module families (module calls, RPC, timers, metrics,
 * providers). Handlers always pass the calling module's name from the CallContext, so a module
 * can never act under another module's name. Optional members are absent in hosts built
 * without them (unit tests); the families answer "unavailable" then.
 */
export interface HostServices {
  /**
   * Publish on the bus; the events family checks the namespace first. With `from` (a module),
   * publishing is rate-limited per module and returns false when that module is over its rate.
   */
  publish(type: string, payload: unknown, from?: string, bytes?: number): boolean;
  modules?: ModuleDirectory;
  rpc?: {
    register(module: string, method: string, description: string): string;
    unregister(module: string, method: string): boolean;
    registerCli(module: string, spec: CliSpec): void;
  };
  timers?: {
    register(module: string, intervalMs: number): number;
    schedule(module: string, delayMs: number): number;
    cancel(module: string, id: number): boolean;
  };
  metrics?: {
    report(module: string, metric: Omit<Metric, "timestamp">): void;
    /** `maxBytes`: the caller's largest answer; a larger one is refused before it is built. */
    get(module: string, maxBytes?: number): Metric[];
    all(maxBytes?: number): Record<string, Metric[]>;
  };
  providers?: {
    register(module: string, kind: ProviderRole): void;
    /** `caller`: the module the call is made for. */
    call(kind: ProviderRole, method: string, params: Record<string, unknown>, caller?: string): Promise<unknown>;
    /** The module the operator designated for a role ([modules.providers]); it alone publishes the role's events. */
    designated(role: ProviderRole): string | undefined;
  };
  /**
   * How http_request resolves host names: all addresses of a name, in order; `signal` aborts
   * when the request ends. Absent: capabilities/dns.ts (the hosts file, then DNS). Tests
   * give a fixed table here.
   */
  resolve?(host: string, signal?: AbortSignal): Promise<Array<{ address: string; family: number }>>;
  /** A module is submitting the block with this hash (its NewBlock is then also BlockMined). */
  blockSubmitted?(hash: string, module: string): void;
  /** Each module's rate of blocks handed to the chain (capabilities/block-budget.ts); absent: the defaults. */
  blockBudget?: { take(module: string, bytes: number): { giveBack(): void; written(storedBytes: number): void } };
  /** Hook chains at the host's hook points (host/services/hooks.ts). */
  hooks?: HookService;
  /** Drop everything a module registered (it stopped or crashed): timers, API, RPC methods, providers. */
  forget?(module: string): void;
}

export interface HookRegistration {
  before?: string[];
  after?: string[];
}

/** The hook registry (host/services/hooks.ts) as capabilities see it (capabilities/hooks.ts). */
export interface HookService {
  /** Register `module`'s hook at `point` (replacing its earlier one there); returns the chain's order. */
  register(module: string, point: HookPointName, reg: HookRegistration): string[];
  unregister(module: string, point: HookPointName): boolean;
  /** Whether any hook is registered at `point` (callers skip building a payload when none is). */
  active(point: HookPointName): boolean;
  /**
   * Run the chain at `point` with `payload`; resolves with the payload the last hook left
   * (the same object when nothing modified it), or throws HookRejection.
   */
  run<T extends Record<string, unknown>>(point: HookPointName, payload: T, forWhom?: HookCaller): Promise<T>;
}

/**
 * Whom a hook chain runs for (a module's transaction or template request, JSON-RPC clients'
 * calls): each hook module has at most its max_calls_per_caller (max_rpc_calls for the JSON-RPC
 * clients) of that caller's hook calls waiting at once, and they are given up when `instance` ends.
 */
export interface HookCaller {
  caller: string;
  instance?: { readonly isOpen: boolean; onEnd(f: () => void): () => void };
}

/** Everything a handler may touch, already bound to the calling module. */
export interface CallContext {
  readonly module: string;
  readonly services: HostServices;
  readonly chain: ChainBackend;
  /** The module's own store; undefined unless it holds a storage permission. */
  readonly store: ModuleStore | undefined;
  readonly events: EventControl;
  readonly config: Readonly<Record<string, unknown>>;
  readonly dataDir: string;
  /** What the module's data directory holds, kept by the file API against max_data_bytes and max_data_files; undefined: no quota (tests). */
  readonly dataUsage?: DataUsage;
  log(level: LogLevel, message: string, fields?: Record<string, unknown>): void;
  /** Largest answer the caller can receive (its frame size): bigger answers are refused before they are built. */
  readonly maxAnswerBytes?: number;
  /**
   * The answer is sent with encodeEnvelope (a module's session: FrameChannel.sendEnvelope), which
   * takes a PreEncoded value (protocol/codec.ts): a handler may answer bytes already encoded.
   */
  readonly answersEncoded?: boolean;
  /**
   * Aborted when the module's instance ends (its session closes): work the host does for it that
   * outlives a request's answer (an HTTP exchange) is given up then. Undefined: never (tests).
   */
  readonly ended?: AbortSignal;
}

/**
 * The invocation kind through which the host later calls back what a module passed to a
 * method (a function in TypeScript; in Rust, the handler registered with the matching
 * `Client::on_*`).
 */
type CallbackKind = "event" | "module_api" | "rpc" | "cli" | "timer" | "provider" | "hook";

/** How the SDKs read every page of a paged answer (MethodDef.pages). */
export interface MethodPages {
  /** The parameter that names where a page starts. */
  readonly cursor: string;
  /** The answer's field holding the page's items. */
  readonly items: string;
  /** The answer's field holding the next page's cursor, null after the last. */
  readonly next: string;
  /**
   * An answer field that names what is paged (a block's hash): when a later page names
   * another (the block at a height changed in a reorganisation between two pages), the SDKs
   * start again from the first page.
   */
  readonly same: string;
}

export interface MethodDef<S extends v.GenericSchema = v.GenericSchema, R extends v.GenericSchema = v.GenericSchema> {
  /** Wire name (snake_case, as in the seeds): "get_block". */
  readonly name: string;
  /** Name on the family object of `ctx`: ctx.chain.getBlock. */
  readonly js: string;
  /** Permission that unlocks it; null for methods every module has (its own config). */
  readonly permission: Permission | null;
  /** Positional argument order for the `ctx` form: ctx.chain.getBlock(hash). */
  readonly args: readonly string[];
  readonly params: S;
  /**
   * A hand check of the parameters for methods whose parameters grow with the call (a storage
   * transaction's ops): true only for parameters `params` accepts, which the hub then hands to
   * the handler as they are (unknown keys included: the handler reads only its own) without
   * the schema's parse; false leaves them to the schema, which words any error.
   */
  readonly accepts?: (params: Record<string, unknown>) => boolean;
  /**
   * Called when a request for this method is refused before its handler runs (a permission
   * denied, parameters invalid, a body that did not decode, no room to wait), with its
   * parameters as they came, or `undefined` when they could not be read (nor, perhaps, its
   * method: ApiHub.refusedBefore), for a method whose requests hold state from one to the next
   * (a storage transaction's parts) and must let go of it; what it returns is added to the
   * refusal's message.
   */
  readonly refused?: (call: CallContext, params: Record<string, unknown> | undefined) => string | undefined;
  /**
   * What a successful call answers (a valibot schema; named types in ./schemas.ts). The
   * handler's return type is checked against it, and both SDKs' typed methods and result
   * types are generated from it (`modhost docs --write`, host/sdkgen.ts).
   */
  readonly result: R;
  /** Set when the method takes a function (TypeScript) that the host invokes later as this kind. */
  readonly callback?: CallbackKind;
  /**
   * An SDK whose typed method for this one is written by hand (sdk/types/index.ts,
   * sdk/rust/src/requests.rs) instead of generated, and why (overloads, a form the wire has
   * not). Methods with a callback are always hand-written in TypeScript.
   */
  readonly handWritten?: { readonly ts?: string; readonly rust?: string };
  /**
   * Set when one answer is a page of a list that may not fit one message: the answer's `items`
   * list holds the page and `next` the `cursor` parameter to ask for the next page, null after
   * the last. The SDKs ask until then and join the pages, so a module sees the whole list
   * (docs/protocol.md, "Paged answers").
   */
  readonly pages?: MethodPages;
  /**
   * Set when the SDKs answer this method's typed form by reading every page of another paged
   * method and taking one of its fields (ctx.mempool.getTransactions() reads the pages of
   * get_mempool_txids): the method itself stays on the wire for modules that speak the protocol.
   */
  readonly via?: { readonly method: string; readonly field: string };
  readonly summary: string;
  /**
   * Record calls in the audit log (privileged actions), with their scope targets: true, every
   * successful call; "always", every call that reached the handler, failed ones with their
   * error code (for actions that may have an effect even when they fail, such as a network
   * request that sent its body and then timed out).
   */
  readonly audit?: boolean | "always";
  /** For scoped permissions: the canonical target of this call (path, host, module, event). */
  readonly targets?: (params: v.InferOutput<S>, call: CallContext) => string[] | Promise<string[]>;
  /**
   * The method's work. A handler that has its answer at once may return it as a value (not a
   * promise): the session then answers in the same pass (host/session.ts), with no promise
   * hop; storage_get's synchronous read does.
   */
  readonly handler: (call: CallContext, params: v.InferOutput<S>) => Promise<v.InferInput<R>> | v.InferInput<R>;
}

export interface Family {
  /** Property name on ctx: "chain", "storage". */
  readonly name: string;
  readonly summary: string;
  readonly methods: readonly MethodDef[];
  /** Named types (capabilities/schemas.ts named()) the SDKs export beyond those in params and results. */
  readonly types?: readonly v.GenericSchema[];
}

type ServiceName = Exclude<keyof HostServices, "publish" | "forget" | "resolve" | "blockSubmitted" | "blockBudget">;

const SERVICE_TEXT: Record<ServiceName, string> = {
  modules: "module calls are",
  rpc: "RPC is",
  timers: "timers are",
  metrics: "metrics are",
  providers: "provider modules are",
  hooks: "hooks are",
};

/** A host service a handler needs; "unavailable" in hosts built without it (unit tests). */
export function serviceOf<K extends ServiceName>(c: CallContext, name: K): NonNullable<HostServices[K]> {
  const service = c.services[name];
  if (!service) throw new CapabilityError("unavailable", `${SERVICE_TEXT[name]} not available in this host`);
  return service as NonNullable<HostServices[K]>;
}

/** Typed helper so each method's handler sees its own parameter type. */
export function method<S extends v.GenericSchema, R extends v.GenericSchema>(def: MethodDef<S, R>): MethodDef {
  return def as unknown as MethodDef;
}

/** An error a handler throws on purpose; its message reaches the module as is. */
export class CapabilityError extends Error {
  /**
   * A refusal under the method's permission that only the handler can decide (network_access:
   * a granted name resolving to a local address). The hub records it as a denial and names the
   * permission in the error's data, like a refusal of its own.
   */
  readonly denial: boolean;

  constructor(
    readonly code: "not_found" | "invalid_params" | "quota_exceeded" | "unavailable" | "backend_error" | "backend_unavailable" | "permission_denied" | "timeout" | "hook_rejected" | "result_too_large",
    message: string,
    options: { denial?: boolean } = {},
  ) {
    super(message);
    this.name = "CapabilityError";
    this.denial = options.denial === true && code === "permission_denied";
  }
}
