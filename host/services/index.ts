// The host services behind the cross-module capability families. Each service is one file in
// this directory; this one assembles them for a host.

import type { HostServices } from "../../capabilities/types.ts";
import type { EventBus } from "../events/bus.ts";
import type { ModuleManager } from "../manager.ts";
import { RpcRegistry } from "./rpc.ts";
import { MetricsStore } from "./metrics.ts";
import { ModuleApiDirectory } from "./modules.ts";
import { TimerService } from "./timers.ts";
import { ProviderRegistry, type ProviderRole } from "./providers.ts";
import { HookRegistry } from "./hooks.ts";
import type { HooksConfig } from "../../capabilities/hooks.ts";
import { RateLimiter, type Logger } from "../log.ts";
import { PUBLISH_RATE } from "../../capabilities/events.ts";
import type { LogLevel } from "../../protocol/messages.ts";
import { BlockBudget, type BlockRate } from "../../capabilities/block-budget.ts";

export interface ServiceDeps {
  bus: EventBus;
  manager: ModuleManager;
  /** RPC methods and CLI specs (host/services/rpc.ts); pass one to serve it (the host does). */
  rpc?: RpcRegistry;
  /** Module metrics (host/services/metrics.ts); pass one to read it (the host does). */
  metrics?: MetricsStore;
  /** Where timer failures are logged (tagged with the module); optional. */
  logger?: Logger;
  /** The operator's provider designations ([modules.providers]). */
  providers?: Partial<Record<ProviderRole, string>>;
  /** Development host: an undesignated role goes to the first module that registers. */
  grantAll?: boolean;
  /** The operator's [hooks] section, read at each use (reloads apply at once). */
  hooks?: () => HooksConfig | undefined;
  /** Each module's rate of blocks handed to the chain ([modules.limits.NAME]); absent: the defaults. */
  blockRate?: (module: string) => BlockRate;
}

/** Lines about a module's hook: the host's notes about that module, tagged [hooks]. */
const hookNotes = (logger: Logger) => (module: string, level: LogLevel, message: string, fields?: Record<string, unknown>) => {
  logger.note(module, level, message, fields, "hooks");
};

export function createServices(deps: ServiceDeps): HostServices {
  // A module flooding the bus would cost every subscriber: each module may publish at most
  // PUBLISH_RATE events per second (bursts of twice that).
  const publishers = new Map<string, RateLimiter>();
  const services: HostServices = {
    publish: (type, payload, from, bytes) => {
      if (from !== undefined) {
        let limiter = publishers.get(from);
        if (!limiter) publishers.set(from, (limiter = new RateLimiter(PUBLISH_RATE, PUBLISH_RATE * 2)));
        if (!limiter.take()) return false;
      }
      deps.bus.publish(type, payload, bytes);
      return true;
    },
    forget: (module) => {
      for (const forget of forgetters) forget(module);
    },
    // Kept across a module's restarts (not forgotten): a crash must not refill its budget.
    blockBudget: new BlockBudget(deps.blockRate),
  };
  const forgetters: Array<(module: string) => void> = [(module) => publishers.delete(module)];
  const rpc = deps.rpc ?? new RpcRegistry({ session: (module) => deps.manager.session(module) });
  services.rpc = rpc;
  forgetters.push((module) => rpc.forget(module));
  const metrics = deps.metrics ?? new MetricsStore();
  services.metrics = metrics;
  forgetters.push((module) => metrics.forget(module));

  const session = (module: string) => deps.manager.session(module);
  // A calling module's current process, from its start on (it may call before it is running).
  const instance = (module: string) => {
    const s = deps.manager.processOf(module)?.session;
    return s?.isOpen ? s : undefined;
  };
  const modules = new ModuleApiDirectory({
    session,
    instance,
    modules: () => deps.manager.status().filter((s) => s.state !== "skipped").map((s) => ({
      name: s.name, version: s.version ?? "", runtime: s.runtime ?? "", state: s.state,
      description: deps.manager.manifestOf(s.name)?.description ?? null,
    })),
  });
  services.modules = modules;
  forgetters.push((module) => modules.forget(module));
  const timers = new TimerService({ session, ...(deps.logger ? { log: deps.logger.log.bind(deps.logger) } : {}) });
  services.timers = timers;
  forgetters.push((module) => timers.forget(module));
  const providers = new ProviderRegistry({
    session,
    instance,
    ...(deps.providers ? { designated: deps.providers } : {}),
    firstComeWhenUndesignated: deps.grantAll === true,
    publish: (type, payload) => deps.bus.publish(type, payload),
  });
  services.providers = providers;
  forgetters.push((module) => providers.forget(module));
  const hooks = new HookRegistry({
    // A module's hooks count from their registration, while it is still starting too (its
    // handlers are in place before it registers), until its process ends (forget).
    session: (module) => {
      const s = deps.manager.processOf(module)?.session;
      return s?.isOpen ? s : undefined;
    },
    ...(deps.hooks ? { config: deps.hooks } : {}),
    ...(deps.logger ? { log: deps.logger.log.bind(deps.logger), note: hookNotes(deps.logger) } : {}),
  });
  services.hooks = hooks;
  forgetters.push((module) => hooks.forget(module));
  return services;
}
