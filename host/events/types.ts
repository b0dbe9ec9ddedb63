// The event catalogue: every event type the bus carries, with its payload and who may
// publish it. Node events come only from the host; a module publishes only in its own
// namespace ("<module>:<name>"), so no module can forge a node event or another module's.

import type { ChainEvents } from "../../chain/backend.ts";

export interface HostEvents extends ChainEvents {
  ModuleLoaded: { module: string; version: string; runtime: string };
  ModuleUnloaded: { module: string; version: string; reason: string };
  ModuleCrashed: { module: string; error: string; exit_code: number | null; signal: string | null; will_restart: boolean; quarantined: boolean };
  ModuleRestarted: { module: string; attempt: number };
  ConfigLoaded: { changed_sections: string[] };
  NodeStartupCompleted: { modules: string[] };
  NodeShutdown: { reason: string; timeout_seconds: number };
  NodeShutdownCompleted: { duration_ms: number };
}

export type HostEventName = keyof HostEvents;

export interface EventTypeInfo {
  readonly category: "chain" | "mempool" | "module" | "config" | "node";
  readonly description: string;
}

export const EVENT_TYPES: Record<HostEventName, EventTypeInfo> = {
  NewBlock: { category: "chain", description: "A block was connected to the active chain." },
  BlockDisconnected: { category: "chain", description: "A block was disconnected from the active chain (reorganisation)." },
  ChainReorg: { category: "chain", description: "The active chain switched to another branch; sent after the disconnects and connects." },
  MempoolTransactionAdded: { category: "mempool", description: "A transaction entered the mempool." },
  MempoolTransactionRemoved: { category: "mempool", description: "A transaction left the mempool (mined, conflicted, evicted)." },
  ModuleLoaded: { category: "module", description: "A module finished starting. Replayed to new subscribers for modules already loaded." },
  ModuleUnloaded: { category: "module", description: "A module was stopped and unloaded." },
  ModuleCrashed: { category: "module", description: "A module's process died or its isolate was disposed; `quarantined` when it will not start again until the operator runs `modhost enable`." },
  ModuleRestarted: { category: "module", description: "A crashed module was started again by its restart policy." },
  ConfigLoaded: { category: "config", description: "The operator's configuration was (re)loaded." },
  NodeStartupCompleted: { category: "node", description: "The host finished loading its modules." },
  NodeShutdown: { category: "node", description: "The host is shutting down; modules have timeout_seconds to finish." },
  NodeShutdownCompleted: { category: "node", description: "The host finished shutting down." },
};

export const HOST_EVENT_NAMES = Object.keys(EVENT_TYPES) as HostEventName[];

export function isHostEvent(name: string): name is HostEventName {
  return Object.hasOwn(EVENT_TYPES, name);
}

/** Module-published events are named "<module>:<name>". */
export const MODULE_EVENT = /^([A-Za-z0-9][A-Za-z0-9_-]{0,63}):([A-Za-z][A-Za-z0-9_.-]{0,63})$/;
