// Provider modules (HostServices.providers). The host runs no Lightning node, keeps no payment
// state and runs no pool: a module answers for a provider role ("lightning", "payment",
// "mining", "governance"). A module becomes a provider only when the operator says so
// ([modules.providers] ROLE = "NAME"): registering first wins nothing. The designated module
// registers with register_provider; the lightning family's methods are then answered by it
// through `provider` invocations {kind, method, params}, and it alone may publish the role's
// events as the real types (capabilities/event-types.ts). With no provider running, calls
// fail with a clear `unavailable` error rather than a silent null. A registration dies with
// the provider's process (`forget`), and modules hear of it (ProviderUnavailable).

import { CapabilityError } from "../../capabilities/types.ts";
import type { ProviderRole } from "../../capabilities/event-types.ts";
import type { HostSession } from "../session.ts";
import { calleeError } from "./modules.ts";

export type { ProviderRole };

const PROVIDER_TIMEOUT_MS = 10_000;

const LABEL: Record<ProviderRole, string> = { lightning: "Lightning", payment: "payment", mining: "mining", governance: "governance" };

export interface ProviderRegistryOptions {
  /** The connection of a running module, or undefined. */
  session: (module: string) => HostSession | undefined;
  /** The connection of a module's current process in any state: its end gives up its calls (default: `session`). */
  instance?: (module: string) => HostSession | undefined;
  /** The operator's designations ([modules.providers]). */
  designated?: Partial<Record<ProviderRole, string>>;
  /** Development hosts (modhost dev): with no designation, the first module to register gets the role. */
  firstComeWhenUndesignated?: boolean;
  /** Publish ProviderAvailable / ProviderUnavailable. */
  publish?: (type: "ProviderAvailable" | "ProviderUnavailable", payload: Record<string, unknown>) => void;
  timeoutMs?: number;
}

export class ProviderRegistry {
  private readonly providers = new Map<ProviderRole, string>();

  constructor(private readonly opts: ProviderRegistryOptions) {}

  /** The module the operator designated for `role` (in a development host, the one that registered). */
  designated(role: ProviderRole): string | undefined {
    return this.opts.designated?.[role] ?? (this.opts.firstComeWhenUndesignated ? this.providers.get(role) : undefined);
  }

  register(module: string, kind: ProviderRole): void {
    const chosen = this.opts.designated?.[kind];
    if (chosen === undefined && !this.opts.firstComeWhenUndesignated) {
      throw new CapabilityError("permission_denied", `no module is designated as the ${LABEL[kind]} provider; the operator chooses it: [modules.providers] ${kind} = "${module}" in modhost.toml`);
    }
    if (chosen !== undefined && chosen !== module) {
      throw new CapabilityError("permission_denied", `the operator designated "${chosen}" as the ${LABEL[kind]} provider ([modules.providers] ${kind} = "${chosen}"), not "${module}"`);
    }
    const current = this.providers.get(kind);
    if (current !== undefined && current !== module) {
      throw new CapabilityError("unavailable", `module "${current}" is already the ${LABEL[kind]} provider; there is one provider per kind (unload "${current}" first)`);
    }
    this.providers.set(kind, module);
    if (current !== module) this.opts.publish?.("ProviderAvailable", { role: kind, module });
  }

  /** The module providing `kind`, if one registered. */
  providerOf(kind: ProviderRole): string | undefined {
    return this.providers.get(kind);
  }

  /** `caller`: the module the call is made for (held to the provider's max_calls_per_caller; given up when its instance ends). */
  async call(kind: ProviderRole, method: string, params: Record<string, unknown>, caller?: string): Promise<unknown> {
    const provider = this.providers.get(kind);
    const session = provider === undefined ? undefined : this.opts.session(provider);
    if (provider === undefined || !session) {
      const chosen = this.opts.designated?.[kind];
      throw new CapabilityError("unavailable", provider !== undefined
        ? `the ${LABEL[kind]} provider module "${provider}" is not running now`
        : chosen !== undefined
          ? `the ${LABEL[kind]} provider "${chosen}" has not registered (is it running? it must call register_provider with kind "${kind}")`
          : `no ${LABEL[kind]} provider module is running; the operator designates one with [modules.providers] ${kind} = "NAME", and that module calls register_provider (kind "${kind}")`);
    }
    const timeoutMs = this.opts.timeoutMs ?? PROVIDER_TIMEOUT_MS;
    try {
      return await session.invoke("provider", { kind, method, params }, timeoutMs, caller === undefined ? undefined : { caller, instance: (this.opts.instance ?? this.opts.session)(caller) });
    } catch (err) {
      throw calleeError(err, `the ${LABEL[kind]} provider "${provider}" (${method})`, timeoutMs);
    }
  }

  /** Drop the registrations of `module` (its process ended), telling modules that depend on the role. */
  forget(module: string, reason = "the provider module stopped"): void {
    for (const [kind, m] of this.providers) {
      if (m !== module) continue;
      this.providers.delete(kind);
      this.opts.publish?.("ProviderUnavailable", { role: kind, module, reason });
    }
  }
}
