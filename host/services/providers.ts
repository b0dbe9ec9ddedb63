// Provider modules (HostServices.providers). The host runs no Lightning node and keeps no
// payment state: a module registers itself as the provider of "lightning" or "payment", and
// the lightning family's methods are answered by it through `provider` invocations
// {kind, method, params}. One provider per kind; with none running, a call fails with a clear
// `unavailable` error rather than a silent null. A provider registration dies with the
// provider's process (`forget`).

import { CapabilityError } from "../../capabilities/types.ts";
import type { HostSession } from "../session.ts";
import { calleeError } from "./modules.ts";

export type ProviderKind = "lightning" | "payment";

export const PROVIDER_TIMEOUT_MS = 10_000;

const LABEL: Record<ProviderKind, string> = { lightning: "Lightning", payment: "payment" };

export interface ProviderRegistryOptions {
  /** The connection of a running module, or undefined. */
  session: (module: string) => HostSession | undefined;
  timeoutMs?: number;
}

export class ProviderRegistry {
  private readonly providers = new Map<ProviderKind, string>();

  constructor(private readonly opts: ProviderRegistryOptions) {}

  register(module: string, kind: ProviderKind): void {
    const current = this.providers.get(kind);
    if (current !== undefined && current !== module) {
      throw new CapabilityError("unavailable", `module "${current}" is already the ${LABEL[kind]} provider; there is one provider per kind (unload "${current}" first)`);
    }
    this.providers.set(kind, module);
  }

  /** The module providing `kind`, if one registered. */
  providerOf(kind: ProviderKind): string | undefined {
    return this.providers.get(kind);
  }

  async call(kind: ProviderKind, method: string, params: Record<string, unknown>): Promise<unknown> {
    const provider = this.providers.get(kind);
    const session = provider === undefined ? undefined : this.opts.session(provider);
    if (provider === undefined || !session) {
      throw new CapabilityError("unavailable", provider === undefined
        ? `no ${LABEL[kind]} provider module is running; load one that calls register_provider (kind "${kind}")`
        : `the ${LABEL[kind]} provider module "${provider}" is not running now`);
    }
    const timeoutMs = this.opts.timeoutMs ?? PROVIDER_TIMEOUT_MS;
    try {
      return await session.invoke("provider", { kind, method, params }, timeoutMs);
    } catch (err) {
      throw calleeError(err, `the ${LABEL[kind]} provider "${provider}" (${method})`, timeoutMs);
    }
  }

  /** Drop the registrations of `module` (its process ended). */
  forget(module: string): void {
    for (const [kind, m] of this.providers) if (m === module) this.providers.delete(kind);
  }
}
