// The RPC method registry and the module CLI specs (HostServices.rpc).
//
// A module's methods are served under its own name: block-stats registering "summary" is
// served as "block-stats.summary". Host methods have no dot, so no module can shadow a host
// method or another module's method; a module may not register a name with a dot or a host
// method's name (invalid_params), to keep the two unambiguous for humans too. Calls reach the
// module as an `rpc` invocation {method, params} with the module's own (short) name; CLI
// commands as a `cli` invocation {command, args}. Everything a module registered is dropped
// when its process ends (`forget`).

import { CapabilityError, type CliSpec } from "../../capabilities/types.ts";
import type { HostSession } from "../session.ts";

/** Methods the host serves itself (host/rpc/admin.ts); a module may not use these names. */
export const HOST_RPC_METHODS = [
  "list", "info", "load", "unload", "reload", "health", "rpc_methods", "cli_specs", "run_cli", "stop", "help", "enable",
  "chain_info", "chain_mine", "chain_reorg", "chain_send",
] as const;

const RPC_METHOD_RE = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;
const CLI_COMMAND_RE = /^[a-z][a-z0-9_-]{0,63}$/;
const MAX_METHODS_PER_MODULE = 256;
const MAX_CLI_COMMANDS = 64;

export interface RpcMethodEntry {
  module: string;
  /** The module's own name for it. */
  method: string;
  /** The name clients call: `<module>.<method>`. */
  full: string;
  description: string;
}

export interface RpcRegistryOptions {
  /** The connection of a running module, or undefined. */
  session: (module: string) => HostSession | undefined;
}

export class RpcRegistry {
  private readonly methods = new Map<string, RpcMethodEntry>();
  /**
   * Methods per module, kept as they change: the quota check read methodsOf(), which sorts
   * every module's methods, on the host's loop at each registration (100 modules of 256
   * methods: 91 s to register them all at load 9, a single registration up to 587 ms).
   */
  private readonly counts = new Map<string, number>();
  private readonly specs = new Map<string, CliSpec>();

  constructor(private readonly opts: RpcRegistryOptions) {}

  register(module: string, method: string, description: string): string {
    if (typeof method !== "string" || method.includes(".")) {
      throw new CapabilityError("invalid_params", `RPC method "${String(method).slice(0, 80)}": give the name without a dot; the host serves it as "${module}.<name>", so it cannot name another module's method`);
    }
    if (!RPC_METHOD_RE.test(method)) {
      throw new CapabilityError("invalid_params", `RPC method "${method.slice(0, 80)}" is not a valid name: use 1 to 64 letters, digits, '_' and '-', starting with a letter`);
    }
    if ((HOST_RPC_METHODS as readonly string[]).includes(method)) {
      throw new CapabilityError("invalid_params", `RPC method "${method}" is the name of a host method; choose another name (host methods: ${HOST_RPC_METHODS.join(", ")})`);
    }
    if (typeof description !== "string" || description.length > 1024) {
      throw new CapabilityError("invalid_params", "RPC method description: a string of at most 1024 characters");
    }
    const full = `${module}.${method}`;
    const known = this.methods.has(full);
    if (!known && (this.counts.get(module) ?? 0) >= MAX_METHODS_PER_MODULE) {
      throw new CapabilityError("quota_exceeded", `a module may register at most ${MAX_METHODS_PER_MODULE} RPC methods`);
    }
    this.methods.set(full, { module, method, full, description });
    if (!known) this.counts.set(module, (this.counts.get(module) ?? 0) + 1);
    return full;
  }

  unregister(module: string, method: string): boolean {
    if (!this.methods.delete(`${module}.${method}`)) return false;
    const left = (this.counts.get(module) ?? 1) - 1;
    if (left > 0) this.counts.set(module, left);
    else this.counts.delete(module);
    return true;
  }

  registerCli(module: string, spec: CliSpec): void {
    const commands = spec.commands ?? [];
    if (commands.length > MAX_CLI_COMMANDS) throw new CapabilityError("invalid_params", `a CLI spec may have at most ${MAX_CLI_COMMANDS} commands`);
    const seen = new Set<string>();
    for (const c of commands) {
      if (!CLI_COMMAND_RE.test(c.name)) {
        throw new CapabilityError("invalid_params", `CLI command "${String(c.name).slice(0, 80)}" is not a valid name: use lowercase letters, digits, '_' and '-', starting with a letter`);
      }
      if (seen.has(c.name)) throw new CapabilityError("invalid_params", `CLI command "${c.name}" is listed twice`);
      seen.add(c.name);
    }
    this.specs.set(module, structuredClone({ ...spec, commands }));
  }

  forget(module: string): void {
    for (const [full, m] of this.methods) if (m.module === module) this.methods.delete(full);
    this.counts.delete(module);
    this.specs.delete(module);
  }

  /** Every routable module method, sorted. */
  list(): RpcMethodEntry[] {
    return [...this.methods.values()].sort((a, b) => (a.full < b.full ? -1 : a.full > b.full ? 1 : 0));
  }

  methodsOf(module: string): RpcMethodEntry[] {
    return this.list().filter((m) => m.module === module);
  }

  resolve(full: string): RpcMethodEntry | undefined {
    return this.methods.get(full);
  }

  cliSpec(module: string): CliSpec | undefined {
    return this.specs.get(module);
  }

  cliSpecs(): Record<string, CliSpec> {
    const out: Record<string, CliSpec> = {};
    for (const module of [...this.specs.keys()].sort()) out[module] = structuredClone(this.specs.get(module)!);
    return out;
  }

  session(module: string): HostSession | undefined {
    return this.opts.session(module);
  }
}

