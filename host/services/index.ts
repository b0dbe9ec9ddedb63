// The host services behind the cross-module capability families. Each service is one file in
// this directory; this one assembles them for a host.

import type { HostServices } from "../../capabilities/types.ts";
import type { EventBus } from "../events/bus.ts";
import type { ModuleManager } from "../manager.ts";

export interface ServiceDeps {
  bus: EventBus;
  manager: ModuleManager;
}

export function createServices(deps: ServiceDeps): HostServices {
  const services: HostServices = {
    publish: (type, payload) => deps.bus.publish(type, payload),
    forget: (module) => {
      for (const forget of forgetters) forget(module);
    },
  };
  const forgetters: Array<(module: string) => void> = [];
  return services;
}
