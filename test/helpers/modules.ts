// Helpers for tests of the cross-module families (module calls, timers, providers, mining):
// inline TypeScript modules in one line, calls into a module's API from the test, and calls
// through the real API hub as a given module with given grants.

import { type InlineModule, type TestHost, WAIT_MS } from "./host.ts";
import { parseDescriptor, resolveGrants } from "../../capabilities/grants.ts";
import type { CallContext, HostServices } from "../../capabilities/types.ts";
import { HubError } from "../../host/hub.ts";
import type { ModuleApiDirectory } from "../../host/services/modules.ts";
import type { TimerService } from "../../host/services/timers.ts";
import type { ProviderRegistry } from "../../host/services/providers.ts";

/** An inline isolate module: `body` is the body of `start(ctx)`. */
export function inlineModule(name: string, capabilities: string[], body: string, extra = ""): InlineModule {
  return {
    toml: [
      `name = "${name}"`,
      `version = "0.1.0"`,
      `entry_point = "index.ts"`,
      `description = "test module ${name}"`,
      `capabilities = [${capabilities.map((c) => JSON.stringify(c)).join(", ")}]`,
      "",
    ].join("\n"),
    files: {
      "index.ts": `${extra}\nexport default async function start(ctx: any): Promise<void> {\n${body}\n}\n`,
    },
  };
}

/**
 * Module-side code for an API method that makes a call and reports the outcome as data
 * (so a test sees the error code the module got): {ok, value} or {ok: false, code, message}.
 */
export const REPORT = `
const report = async (work: () => Promise<unknown>) => {
  try {
    return { ok: true, value: await work() };
  } catch (e: any) {
    return { ok: false, code: e.code, message: e.message };
  }
};
`;

export type Outcome = { ok: true; value: unknown } | { ok: false; code: string; message: string };

export function services(h: TestHost): HostServices {
  const s = h.manager.services;
  if (!s) throw new Error("the host has no services");
  return s;
}

export function directory(h: TestHost): ModuleApiDirectory {
  return services(h).modules as ModuleApiDirectory;
}

export function timerService(h: TestHost): TimerService {
  return services(h).timers as TimerService;
}

export function providerRegistry(h: TestHost): ProviderRegistry {
  return services(h).providers as ProviderRegistry;
}

/** Call `method` of `target`'s module API from the test (caller "test-driver"). */
export function callApi<T = unknown>(h: TestHost, target: string, method: string, params: unknown = {}, timeoutMs = WAIT_MS): Promise<T> {
  return directory(h).call("test-driver", target, method, params, timeoutMs) as Promise<T>;
}

/** Serve one request through the host's real API hub as `module` holding `grants`. */
export async function hubCall(h: TestHost, module: string, grants: string[], method: string, params: Record<string, unknown>): Promise<unknown> {
  const descriptors = grants.map((g) => parseDescriptor(g));
  const { effective } = resolveGrants(descriptors, descriptors, []);
  const call: CallContext = {
    module,
    services: services(h),
    chain: h.chain,
    store: undefined,
    events: { subscribe: () => [], unsubscribe: () => [], subscribed: () => [] },
    config: {},
    dataDir: "",
    log: () => {},
  };
  return h.manager.hub.handle(call, effective, method, params);
}

/** The wire error of a failed hubCall. */
export async function hubError(h: TestHost, module: string, grants: string[], method: string, params: Record<string, unknown>): Promise<{ code: string; message: string }> {
  try {
    await hubCall(h, module, grants, method, params);
  } catch (err) {
    if (err instanceof HubError) return { code: err.wire.code, message: err.wire.message };
    throw err;
  }
  throw new Error(`${method} as ${module} succeeded; expected an error`);
}
