// One run of the bench-isolate-paths module (bench/fixtures/modules) under a real
// ModuleManager, for the profiling aids beside isolate-paths.ts (allget-profile.ts,
// seq-profile.ts): the module's config, limits that let its phases run unthrottled, every
// request the hub dispatches shown to `onRequest` first (where they take their marks), and the
// fields of its "isolate-paths done" report.
import type { EmbeddedChain } from "../chain/embedded.ts";
import { EventBus } from "../host/events/bus.ts";
import { ModuleManager } from "../host/manager.ts";
import { benchConfig, captureLogger, dumpLog, FAIR_SHARE_RAISED } from "./common.ts";

export const ISOLATE_PATHS_MODULE = "bench-isolate-paths";

export interface IsolatePathsRun {
  /** The module's config (n, rounds, batch). */
  config: Record<string, unknown>;
  /** Run it with the sandbox off (perf and strace need that). */
  unsandboxed: boolean;
  onRequest: (method: string, manager: ModuleManager) => void;
}

export async function runIsolatePathsModule(dir: string, chain: EmbeddedChain, run: IsolatePathsRun): Promise<Record<string, unknown>> {
  const { logger, records } = captureLogger();
  const config = benchConfig(dir, ISOLATE_PATHS_MODULE, { allow: ["read_storage", "write_storage", "read_chain_state"], limits: { ...FAIR_SHARE_RAISED, start_timeout_ms: 300_000, cpu_time_ms: 5000, handler_timeout_ms: 300_000 }, config: run.config });
  if (run.unsandboxed) config.modules.sandbox = "off";
  const manager = new ModuleManager({ config, chain, bus: new EventBus(), logger });
  const dispatch = manager.hub.dispatch.bind(manager.hub);
  manager.hub.dispatch = (call, grants, method, params) => {
    run.onRequest(method, manager);
    return dispatch(call, grants, method, params);
  };
  try {
    await manager.prepare();
    await manager.startAll();
  } finally {
    await manager.shutdown();
  }
  const done = records.find((r) => r.source === ISOLATE_PATHS_MODULE && r.message === "isolate-paths done");
  if (!done?.fields) throw new Error(`${ISOLATE_PATHS_MODULE} did not report\n${dumpLog(records)}`);
  return done.fields as Record<string, unknown>;
}
