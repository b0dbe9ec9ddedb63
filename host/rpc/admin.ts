// What the RPC server serves: the host's own admin methods (no dot in their names) and the
// modules' methods (`<module>.<method>`, routed to the module as an `rpc` invocation with a
// timeout). Also the host's metrics for /metrics.
//
// Admin methods take named parameters ({"module": "x"}) or the same in order (["x"]). Actions
// that change something (load, unload, reload, run_cli, stop) are recorded in the audit log
// as actions of "operator".

import type { ModuleManager, ModuleStatus } from "../manager.ts";
import type { ChainBackend } from "../../chain/backend.ts";
import { EmbeddedChain } from "../../chain/embedded.ts";
import type { AuditLog } from "../audit.ts";
import type { RpcRegistry } from "../services/rpc.ts";
import type { HOST_RPC_METHODS } from "../services/rpc.ts";
import type { MetricsStore } from "../services/metrics.ts";
import { renderPrometheus, type HostMetricFamily } from "../services/prometheus.ts";
import { InvocationError, JSON_RPC_CALLER, type InvokeFor } from "../session.ts";
import { ModhostError } from "../errors.ts";
import { closest } from "../../capabilities/catalogue.ts";
import { formatDescriptor } from "../../capabilities/grants.ts";
import { HookRejection } from "../../capabilities/hooks.ts";
import { CapabilityError } from "../../capabilities/types.ts";
import { HOST_VERSION } from "../version.ts";
import { RPC_ERRORS, RpcError, type ClientWait, type Dispatch, type RpcServer } from "./server.ts";

export interface AdminDeps {
  manager: ModuleManager;
  chain: ChainBackend;
  registry: RpcRegistry;
  metrics: MetricsStore;
  audit?: AuditLog;
  /** Milliseconds since the epoch when the host started. */
  startedAt: number;
  /** How long a module method or CLI command may take. */
  callTimeoutMs: number;
  /** How long a module has to answer a health probe from `health`. */
  healthTimeoutMs?: number;
  /** Stop the host (called after the answer to `stop` is on its way). */
  stop: (reason: string) => void;
  /** The server, for its own counters in /metrics. */
  server?: () => RpcServer | undefined;
  /** Most blocks one chain_mine mines and deepest chain_reorg ([chain] max_blocks_per_call; default 1000). */
  chainMaxBlocks?: number;
}

interface AdminMethod {
  description: string;
  /** Parameter names, for positional params; `?` marks optional ones. */
  params: string[];
  /** `client`: the JSON-RPC client waiting for the answer (a module's method, given up when it goes). */
  handler: (p: Record<string, unknown>, client?: ClientWait) => Promise<unknown>;
}

type HostMethodName = (typeof HOST_RPC_METHODS)[number];

/**
 * Guesses of a near name for an unknown method or command ("did you mean ...?"), all JSON-RPC
 * clients together, per second. Each costs up to CLOSEST_MAX_CELLS of edit distance (~5 ms over
 * a module's 256 methods of 64 characters): one batch of 1,000 unknown methods held the host's
 * loop 5.4 s in one turn. Past it an unknown name is answered without a guess.
 */
export const MAX_GUESSES_PER_SECOND = 4;
const guessBudgets = new WeakMap<AdminDeps, { second: number; used: number }>();

/** closest(name, candidates()) within MAX_GUESSES_PER_SECOND for this dispatcher, else undefined (no guess). */
function guess(deps: AdminDeps, name: string, candidates: () => string[]): string | undefined {
  const second = Math.floor(performance.now() / 1000);
  let b = guessBudgets.get(deps);
  if (b === undefined || b.second !== second) guessBudgets.set(deps, (b = { second, used: 0 }));
  if (b.used >= MAX_GUESSES_PER_SECOND) return undefined;
  b.used++;
  return closest(name, candidates());
}

export function createDispatcher(deps: AdminDeps): Dispatch {
  const admin = adminMethods(deps);
  return async (method, params, client) => {
    const def = Object.hasOwn(admin, method) ? admin[method as HostMethodName] : undefined;
    if (def) return def.handler(namedParams(method, def, params), client);
    if (method.includes(".")) return callModule(deps, method, params, client);
    const near = guess(deps, method, () => [...Object.keys(admin), ...deps.registry.list().map((m) => m.full)]);
    throw new RpcError(RPC_ERRORS.methodNotFound, `method not found: ${method}${near ? `; did you mean ${near}?` : ""} (rpc_methods lists them all)`);
  };
}

function namedParams(method: string, def: AdminMethod, params: unknown): Record<string, unknown> {
  const names = def.params.map((p) => p.replace(/\?$/, ""));
  let out: Record<string, unknown>;
  if (params === undefined || params === null) out = {};
  else if (Array.isArray(params)) {
    if (params.length > names.length) throw new RpcError(RPC_ERRORS.invalidParams, `${method} takes at most ${names.length} parameter(s): ${names.join(", ") || "none"}`);
    out = Object.fromEntries(params.map((v, i) => [names[i]!, v]));
  } else out = params as Record<string, unknown>;
  for (const key of Object.keys(out)) {
    if (!names.includes(key)) throw new RpcError(RPC_ERRORS.invalidParams, `${method} has no parameter "${key}" (it takes: ${names.join(", ") || "none"})`);
  }
  for (const p of def.params) {
    if (!p.endsWith("?") && out[p] === undefined) throw new RpcError(RPC_ERRORS.invalidParams, `${method} needs the parameter "${p}"`);
  }
  return out;
}

function str(p: Record<string, unknown>, key: string): string {
  const v = p[key];
  if (typeof v !== "string" || v === "") throw new RpcError(RPC_ERRORS.invalidParams, `"${key}" must be a non-empty string`);
  return v;
}

/** A ModhostError from the manager becomes an RPC error with its code and hint. */
function hostError(err: unknown): never {
  if (err instanceof RpcError) throw err;
  if (err instanceof ModhostError) {
    throw new RpcError(RPC_ERRORS.hostError, err.message, { code: err.code, ...(err.hint ? { hint: err.hint } : {}) });
  }
  throw err;
}

function adminMethods(deps: AdminDeps): Record<HostMethodName, AdminMethod> {
  const { manager, registry } = deps;
  const audit = (action: string, target: string | undefined, ok: boolean, reason?: string, detail?: Record<string, unknown>) => {
    deps.audit?.write({
      kind: "action", module: "operator", action,
      ...(reason ? { reason } : {}),
      detail: { via: "rpc", ok, ...(target ? { target } : {}), ...detail },
    });
  };
  const statusOf = (name: string): ModuleStatus => {
    const s = manager.status().find((x) => x.name === name);
    if (!s) throw new RpcError(RPC_ERRORS.hostError, `no module named ${name}`, { code: "not_found" });
    return s;
  };
  const lifecycle = (action: "load" | "unload" | "reload" | "enable") => async (p: Record<string, unknown>) => {
    const name = str(p, "module");
    try {
      if (action === "unload") {
        await manager.unload(name);
      } else {
        await (action === "load" ? manager.load(name) : action === "reload" ? manager.reload(name) : manager.enable(name));
      }
      audit(action, name, true);
      return statusOf(name);
    } catch (err) {
      audit(action, name, false, (err as Error).message);
      return hostError(err);
    }
  };
  const methodList = () => ({
    host: Object.entries(admin).map(([method, d]) => ({ method, params: d.params, description: d.description })),
    modules: registry.list().map((m) => ({ method: m.full, module: m.module, description: m.description })),
  });

  const admin: Record<HostMethodName, AdminMethod> = {
    list: {
      description: "Every module with its state, version, runtime, grants, pid and restarts.",
      params: [],
      handler: async () => manager.status(),
    },
    info: {
      description: "One module: its status, manifest, sandbox, RPC methods, CLI commands, counters and metrics.",
      params: ["module"],
      handler: async (p) => {
        const name = str(p, "module");
        const status = statusOf(name);
        const manifest = manager.manifestOf(name);
        const proc = manager.processOf(name);
        // status.sandbox is the confinement actually applied to the module.
        return {
          ...status,
          ...(manifest ? {
            manifest: {
              description: manifest.description ?? null,
              author: manifest.author ?? null,
              dir: manifest.dir,
              entry_point: manifest.entry_point,
              requested: manifest.capabilities.map((d) => formatDescriptor(d.permission, d.scope)),
              dependencies: manifest.dependencies,
            },
          } : {}),
          rpc_methods: registry.methodsOf(name).map((m) => ({ method: m.full, description: m.description })),
          cli: registry.cliSpec(name) ?? null,
          ...(proc ? { session: { ...proc.session.stats, events: proc.session.eventStats } } : {}),
          metrics: deps.metrics.get(name),
        };
      },
    },
    load: { description: "Load a module from disk (manifest, code and grants are read again).", params: ["module"], handler: lifecycle("load") },
    unload: { description: "Stop a module (gracefully, then forced); the others keep running.", params: ["module"], handler: lifecycle("unload") },
    reload: { description: "Stop a module and load it again from disk.", params: ["module"], handler: lifecycle("reload") },
    enable: { description: "Lift a module's quarantine (forget its failures) and load it again from disk.", params: ["module"], handler: lifecycle("enable") },
    health: {
      description: "The host's uptime and chain height, and each module's state and answer to a health probe.",
      params: [],
      handler: async () => {
        const info = await deps.chain.getChainInfo();
        const timeout = deps.healthTimeoutMs ?? Math.min(2000, deps.callTimeoutMs);
        const modules = await Promise.all(manager.status().map(async (s) => {
          const base = { name: s.name, state: s.state, restarts: s.restarts, ...(s.problem ? { problem: s.problem } : {}) };
          const session = s.state === "running" ? manager.session(s.name) : undefined;
          if (!session) return { ...base, health: null };
          try {
            return { ...base, health: await session.invoke("health", {}, timeout) };
          } catch (err) {
            const code = err instanceof InvocationError ? err.wire.code : "internal";
            // A module that does not handle health answers unknown_method; it is up all the same.
            if (code === "unknown_method") return { ...base, health: { status: "ok" } };
            return { ...base, health: { status: code === "timeout" ? "unresponsive" : "error", error: (err as Error).message } };
          }
        }));
        const bad = modules.some((m) => m.state === "crashed" || m.state === "failed" || m.state === "quarantined" || (m.health !== null && (m.health as { status?: unknown }).status !== "ok"));
        return {
          status: bad ? "degraded" : "ok",
          version: HOST_VERSION,
          uptime_seconds: Math.round((Date.now() - deps.startedAt) / 1000),
          chain: { backend: deps.chain.name, chain: info.chain, height: info.height, tip: info.tip_hash },
          modules,
        };
      },
    },
    rpc_methods: { description: "Every method this server routes: the host's and the modules'.", params: [], handler: async () => methodList() },
    help: { description: "Same as rpc_methods.", params: [], handler: async () => methodList() },
    cli_specs: { description: "The CLI commands of every module that registered some, by module.", params: [], handler: async () => registry.cliSpecs() },
    run_cli: {
      description: "Run a module's CLI command: {module, command, args: [strings]}.",
      params: ["module", "command", "args?"],
      handler: async (p, client) => {
        const name = str(p, "module");
        const command = str(p, "command");
        const args = p["args"] ?? [];
        if (!Array.isArray(args) || !args.every((a) => typeof a === "string")) throw new RpcError(RPC_ERRORS.invalidParams, '"args" must be a list of strings');
        const spec = registry.cliSpec(name);
        if (!spec) {
          const known = manager.status().some((s) => s.name === name);
          throw new RpcError(known ? RPC_ERRORS.methodNotFound : RPC_ERRORS.hostError, known ? `module ${name} has no CLI commands${manager.session(name) ? "" : " (it is not running)"}` : `no module named ${name}`, { code: known ? "no_cli" : "not_found" });
        }
        const cmd = spec.commands.find((c) => c.name === command);
        if (!cmd) {
          const near = guess(deps, command, () => spec.commands.map((c) => c.name));
          throw new RpcError(RPC_ERRORS.methodNotFound, `${name} has no command "${command}"${near ? `; did you mean "${near}"?` : ""} (commands: ${spec.commands.map((c) => c.name).join(", ") || "none"})`, { code: "no_command" });
        }
        const required = (cmd.args ?? []).filter((a) => a.required);
        if (args.length < required.length) {
          throw new RpcError(RPC_ERRORS.invalidParams, `${name} ${command} needs ${required.map((a) => `<${a.name}>`).join(" ")}`, { code: "usage", usage: usageOf(name, cmd) });
        }
        try {
          const result = await invoke(deps, name, "cli", { command, args }, client);
          audit("run_cli", name, true, undefined, { command });
          return result;
        } catch (err) {
          audit("run_cli", name, false, (err as Error).message, { command });
          throw err;
        }
      },
    },
    ...chainMethods(deps, audit),
    stop: {
      description: "Stop the host gracefully (modules in reverse dependency order).",
      params: [],
      handler: async () => {
        audit("stop", undefined, true);
        setTimeout(() => deps.stop("stop requested over RPC"), 20).unref();
        return { stopping: true };
      },
    },
  };
  return admin;
}

// ---------------------------------------------------------------------------------------
// Chain controls (embedded regtest chain only): for operators and module authors to make
// blocks, reorganisations and mempool traffic on demand.

type ChainMethodName = "chain_info" | "chain_mine" | "chain_reorg" | "chain_send";
type Audit = (action: string, target: string | undefined, ok: boolean, reason?: string, detail?: Record<string, unknown>) => void;

function chainMethods(deps: AdminDeps, audit: Audit): Record<ChainMethodName, AdminMethod> {
  const max = deps.chainMaxBlocks ?? 1000;
  const embedded = (method: string): EmbeddedChain => {
    if (deps.chain instanceof EmbeddedChain) return deps.chain;
    throw new RpcError(RPC_ERRORS.hostError, `${method} needs the embedded regtest chain; this host runs the ${deps.chain.name} backend`, { code: "unsupported" });
  };
  const count = (p: Record<string, unknown>, key: string, fallback: number | undefined, upTo: number, raise: string): number => {
    const v = p[key] ?? fallback;
    if (typeof v !== "number" || !Number.isInteger(v) || v < 1) throw new RpcError(RPC_ERRORS.invalidParams, `"${key}" must be a whole number from 1, got ${JSON.stringify(v)}`);
    if (v > upTo) throw new RpcError(RPC_ERRORS.invalidParams, `"${key}" ${v} is above the limit of ${upTo}${raise}`, { code: "limit" });
    return v;
  };
  /** Run a chain action, recording it in the audit log; chain errors become invalid_params with their reason. */
  const act = async <T>(action: string, detail: Record<string, unknown>, run: () => Promise<T>): Promise<T> => {
    try {
      const result = await run();
      audit(action, undefined, true, undefined, detail);
      return result;
    } catch (err) {
      audit(action, undefined, false, (err as Error).message, detail);
      if (err instanceof RpcError) throw err;
      throw new RpcError(RPC_ERRORS.invalidParams, `${action}: ${(err as Error).message}`);
    }
  };
  return {
    chain_info: {
      description: "The chain: backend, tip, height, chain work, mempool, and (embedded) its data directory, wallet address, what it holds in memory, and what its database holds against [chain] max_chain_mb (stored_bytes, max_stored_bytes).",
      params: [],
      handler: async () => {
        const info = await deps.chain.getChainInfo();
        const mempool = await deps.chain.getMempoolInfo();
        const chain = deps.chain instanceof EmbeddedChain ? deps.chain : undefined;
        const counts = chain?.memoryCounts();
        return {
          backend: deps.chain.name, ...info, mempool,
          ...(counts ? { data_dir: chain!.dataDir, wallet_address: chain!.walletAddress, memory: counts, stored_bytes: counts.storedBytes, max_stored_bytes: counts.maxStoredBytes, max_blocks_per_call: max } : {}),
        };
      },
    },
    chain_mine: {
      description: "Mine `count` blocks (default 1) on the tip, filled from the mempool; returns their hashes and the new height.",
      params: ["count?"],
      handler: async (p) => {
        const chain = embedded("chain_mine");
        const n = count(p, "count", 1, max, " blocks per call ([chain] max_blocks_per_call raises it)");
        return act("chain_mine", { count: n }, async () => {
          const hashes = await chain.mine(n);
          return { hashes, height: await chain.getBlockHeight() };
        });
      },
    },
    chain_reorg: {
      description: "Disconnect the top `depth` blocks and mine depth + 1 replacements: BlockDisconnected (tip first), then NewBlock for each replacement, then ChainReorg.",
      params: ["depth"],
      handler: async (p) => {
        const chain = embedded("chain_reorg");
        const height = await chain.getBlockHeight();
        const depth = count(p, "depth", undefined, Math.min(max, height), height <= max ? ` (the chain height: genesis stays)` : ` ([chain] max_blocks_per_call raises it)`);
        return act("chain_reorg", { depth }, async () => {
          const { disconnected, connected } = await chain.reorg(depth);
          return { fork_height: height - depth, disconnected, connected, height: await chain.getBlockHeight() };
        });
      },
    },
    chain_send: {
      description: "Pay `amount` sats from the embedded wallet to a regtest `address` (into the mempool; mine to confirm); optional `fee_rate` in sat/vB.",
      params: ["address", "amount", "fee_rate?"],
      handler: async (p) => {
        const chain = embedded("chain_send");
        const address = str(p, "address");
        if (address.length > 128) throw new RpcError(RPC_ERRORS.invalidParams, `"address" is ${address.length} characters; regtest addresses have at most 128`);
        const amount = p["amount"];
        if (typeof amount !== "number" || !Number.isSafeInteger(amount) || amount <= 0) {
          throw new RpcError(RPC_ERRORS.invalidParams, `"amount" must be a whole number of sats, got ${JSON.stringify(amount)}`);
        }
        const feeRate = p["fee_rate"];
        if (feeRate !== undefined && (typeof feeRate !== "number" || !(feeRate > 0) || feeRate > 10_000)) {
          throw new RpcError(RPC_ERRORS.invalidParams, `"fee_rate" must be a number of sat/vB above 0 and at most 10000, got ${JSON.stringify(feeRate)}`);
        }
        return act("chain_send", { address, amount }, () => chain.send(address, amount, feeRate === undefined ? {} : { feeRate: feeRate as number }));
      },
    },
  };
}

function usageOf(module: string, cmd: { name: string; args?: Array<{ name: string; required?: boolean }> }): string {
  return [module, cmd.name, ...(cmd.args ?? []).map((a) => (a.required ? `<${a.name}>` : `[${a.name}]`))].join(" ");
}

async function callModule(deps: AdminDeps, full: string, params: unknown, client?: ClientWait): Promise<unknown> {
  const entry = deps.registry.resolve(full);
  if (!entry) {
    const module = full.slice(0, full.indexOf("."));
    const status = deps.manager.status().find((s) => s.name === module);
    if (status && status.state !== "running") {
      throw new RpcError(RPC_ERRORS.unavailable, `module ${module} is not running (${status.state}); its methods return when it runs again`, { code: "unavailable" });
    }
    const near = guess(deps, full, () => deps.registry.list().map((m) => m.full));
    throw new RpcError(RPC_ERRORS.methodNotFound, `method not found: ${full}${near ? `; did you mean ${near}?` : ""} (rpc_methods lists them all)`);
  }
  let callParams: unknown = params ?? {};
  // The rpc_dispatch hooks see the call first (capabilities/hooks.ts); only when there are any.
  const hooks = deps.manager.services?.hooks;
  if (hooks?.active("rpc_dispatch")) {
    try {
      callParams = (await hooks.run("rpc_dispatch", { module: entry.module, method: entry.method, params: callParams }, rpcCaller(client))).params;
    } catch (err) {
      if (err instanceof HookRejection) {
        throw new RpcError(RPC_ERRORS.hookRejected, err.message, { code: "hook_rejected", point: err.point, hook_module: err.hookModule, reason: err.reason });
      }
      if (err instanceof CapabilityError) throw new RpcError(RPC_ERRORS.hostError, err.message, { code: err.code });
      throw err;
    }
  }
  return invoke(deps, entry.module, "rpc", { method: entry.method, params: callParams ?? {} }, client);
}

/**
 * Whom a module's method call (and the rpc_dispatch hooks' calls before it) is made for: the
 * JSON-RPC clients together, the module's max_rpc_calls waiting at it at once, each given up when
 * its client goes.
 */
function rpcCaller(client: ClientWait | undefined): InvokeFor {
  return { caller: JSON_RPC_CALLER, ...(client ? { instance: client } : {}) };
}

/** Invoke a running module and translate its failures into RPC errors. */
async function invoke(deps: AdminDeps, module: string, kind: "rpc" | "cli", params: Record<string, unknown>, client?: ClientWait): Promise<unknown> {
  const session = deps.registry.session(module);
  if (!session) throw new RpcError(RPC_ERRORS.unavailable, `module ${module} is not running`, { code: "unavailable" });
  try {
    return await session.invoke(kind, params, deps.callTimeoutMs, rpcCaller(client));
  } catch (err) {
    if (!(err instanceof InvocationError)) throw err;
    const { code, message } = err.wire;
    switch (code) {
      case "timeout":
        throw new RpcError(RPC_ERRORS.timeout, `module ${module} did not answer within ${deps.callTimeoutMs} ms ([rpc] call_timeout_ms)`, { code });
      case "unavailable":
        throw new RpcError(RPC_ERRORS.unavailable, message, { code });
      case "unknown_method":
        throw new RpcError(RPC_ERRORS.methodNotFound, message, { code });
      case "invalid_params":
        throw new RpcError(RPC_ERRORS.invalidParams, message, { code });
      default:
        throw new RpcError(RPC_ERRORS.moduleError, message, { code, module });
    }
  }
}

// ---------------------------------------------------------------------------------------
// /metrics

async function hostMetricFamilies(deps: AdminDeps): Promise<HostMetricFamily[]> {
  const statuses = deps.manager.status();
  const per = (f: (name: string) => number | undefined) =>
    statuses.flatMap((s) => {
      const v = f(s.name);
      return v === undefined ? [] : [{ labels: { module: s.name }, value: v }];
    });
  const session = (name: string) => deps.manager.processOf(name)?.session;
  let height = NaN;
  try {
    height = await deps.chain.getBlockHeight();
  } catch {
    // reported as NaN
  }
  const server = deps.server?.();
  const families: HostMetricFamily[] = [
    { name: "modhost_up", help: "1 while the host runs.", type: "gauge", samples: [{ value: 1 }] },
    { name: "modhost_uptime_seconds", help: "Seconds since the host started.", type: "gauge", samples: [{ value: Math.round((Date.now() - deps.startedAt) / 1000) }] },
    { name: "modhost_chain_height", help: "Height of the chain tip.", type: "gauge", samples: [{ value: height }] },
    { name: "modhost_module_up", help: "1 when the module is running, else 0.", type: "gauge", samples: per((n) => (statuses.find((s) => s.name === n)?.state === "running" ? 1 : 0)) },
    { name: "modhost_module_restarts", help: "Restarts of the module within its restart window.", type: "gauge", samples: per((n) => statuses.find((s) => s.name === n)?.restarts) },
    { name: "modhost_module_requests_total", help: "Requests the module's current process sent to the host.", type: "counter", samples: per((n) => session(n)?.stats.requests) },
    { name: "modhost_module_request_errors_total", help: "Requests of the module's current process that failed.", type: "counter", samples: per((n) => session(n)?.stats.errors) },
    { name: "modhost_module_requests_denied_total", help: "Requests of the module's current process refused for lack of a permission.", type: "counter", samples: per((n) => session(n)?.stats.denied) },
    { name: "modhost_module_events_delivered_total", help: "Events delivered to the module's current process.", type: "counter", samples: per((n) => session(n)?.eventStats.delivered) },
    { name: "modhost_module_events_dropped_total", help: "Events dropped for the module's current process (its queue was full).", type: "counter", samples: per((n) => session(n)?.eventStats.dropped) },
    { name: "modhost_module_events_pending", help: "Events queued for the module, not yet sent.", type: "gauge", samples: per((n) => session(n)?.eventStats.pending) },
    { name: "modhost_module_metric_series", help: "Metric series the module reported.", type: "gauge", samples: per((n) => deps.metrics.seriesCount(n)) },
    { name: "modhost_module_data_bytes", help: "Bytes in the module's data directory, as last measured (a volume's blocks of 4 KiB, read each second while it runs).", type: "gauge", samples: per((n) => statuses.find((s) => s.name === n)?.data?.bytes) },
    { name: "modhost_module_data_max_bytes", help: "The module's max_data_bytes (0: no quota).", type: "gauge", samples: per((n) => statuses.find((s) => s.name === n)?.data?.max_bytes) },
    { name: "modhost_module_data_files", help: "Files, directories and links in the module's data directory, as last measured.", type: "gauge", samples: per((n) => statuses.find((s) => s.name === n)?.data?.files) },
    { name: "modhost_module_data_max_files", help: "The module's max_data_files.", type: "gauge", samples: per((n) => statuses.find((s) => s.name === n)?.data?.max_files) },
  ];
  if (server) {
    families.push(
      { name: "modhost_rpc_http_requests_total", help: "HTTP requests to the RPC server.", type: "counter", samples: [{ value: server.stats.requests }] },
      { name: "modhost_rpc_calls_total", help: "JSON-RPC calls served.", type: "counter", samples: [{ value: server.stats.calls }] },
      { name: "modhost_rpc_errors_total", help: "JSON-RPC calls that failed.", type: "counter", samples: [{ value: server.stats.errors }] },
      { name: "modhost_rpc_unauthorised_total", help: "HTTP requests refused for missing or wrong credentials.", type: "counter", samples: [{ value: server.stats.unauthorised }] },
    );
  }
  return families;
}

export async function metricsPage(deps: AdminDeps): Promise<Buffer[]> {
  return renderPrometheus(await hostMetricFamilies(deps), deps.metrics);
}
