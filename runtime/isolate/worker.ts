// The isolate host: a child process that runs one TypeScript module in a V8 isolate.
//
// Isolates never run inside the host process. A V8 fatal out-of-memory, a hang inside the
// isolate library, or a module that spins forever takes down at most this process, which
// the host supervises like any other module process. The isolate host speaks the module
// protocol to the host over its private channel (fd 3), exactly as a native module does:
// every `ctx` call becomes a request that the host checks against the module's grants.
//
// Exit codes: 0 after a clean shutdown, 70 start-up failed, 71 the isolate hit its memory
// limit, 72 the module ran past its CPU-time limit, 73 the connection to the host was lost.

import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import ivm from "isolated-vm";
import { ModuleClient } from "../../sdk/node/client.ts";
import { METHODS } from "../../capabilities/families.ts";
import { BOOTSTRAP } from "./bootstrap.ts";
import type { LogLevel } from "../../host/ipc/messages.ts";

export const EXIT = { ok: 0, startFailed: 70, memory: 71, cpu: 72, disconnected: 73 } as const;

const { values: args } = parseArgs({
  options: {
    "module-id": { type: "string" },
    "module-version": { type: "string", default: "0.0.0" },
    "data-dir": { type: "string", default: "" },
    bundle: { type: "string" },
    "memory-mb": { type: "string", default: "128" },
    "cpu-time-ms": { type: "string", default: "1000" },
    "start-timeout-ms": { type: "string", default: "10000" },
  },
  strict: true,
});

const moduleId = args["module-id"]!;
const memoryMb = Math.max(8, Number(args["memory-mb"]));
const cpuTimeMs = Math.max(10, Number(args["cpu-time-ms"]));
const startTimeoutMs = Number(args["start-timeout-ms"]);

const client = await ModuleClient.connect({ module: moduleId, version: args["module-version"]!, sdk: "modhost-isolate" });
let exiting = false;
client.onClose(() => {
  if (!exiting) process.exit(EXIT.disconnected);
});

/** Tell the host why, schedule the exit, and return an Exit to throw where unwinding helps. */
function die(code: number, message: string): Exit {
  if (exiting) return new Exit(code, message);
  exiting = true;
  try {
    client.log("error", message);
    client.goodbye({ code: "module_error", message });
  } catch {
    // the channel may already be gone
  }
  setTimeout(() => process.exit(code), 50);
  return new Exit(code, message);
}

class Exit extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

const isolate = new ivm.Isolate({ memoryLimit: memoryMb });
const context = await isolate.createContext();
const jail = context.global;
await jail.set("globalThis", jail.derefInto());

// The two ways out of the isolate. Both are handed to the bootstrap, which hides them.
await jail.set("__modhost_call", new ivm.Reference(async (method: string, params: Record<string, unknown>) => {
  try {
    return { ok: true, value: await client.request(method, params ?? {}) };
  } catch (err) {
    const e = err as { code?: string; message?: string };
    // Only a code and a message cross back: no host stack, no host objects.
    return { ok: false, code: e.code ?? "internal", message: e.message ?? "request failed" };
  }
}));
await jail.set("__modhost_log", new ivm.Reference((level: LogLevel, message: string, fields?: Record<string, unknown>) => {
  if (!exiting) client.log(level, message, fields);
}));

await context.eval(BOOTSTRAP, { timeout: 1000 });
const runtime = (await jail.get("__modhost_runtime", { reference: true })) as ivm.Reference<Record<string, unknown>>;
await jail.delete("__modhost_runtime");
const fn = async (name: string) => (await runtime.get(name, { reference: true })) as ivm.Reference<(...a: unknown[]) => unknown>;
const rt = { init: await fn("init"), start: await fn("start"), stop: await fn("stop"), dispatch: await fn("dispatch"), invoke: await fn("invoke") };

// Watchdog: the isolate runs on its own thread, so this process stays responsive while module
// code runs. If the isolate has been busy for longer than the CPU-time limit without a break
// (an endless loop, also one in a promise continuation that `timeout` cannot see), dispose it.
let busySince: number | undefined;
let lastCpu = isolate.cpuTime;
const SAMPLE_MS = Math.min(100, Math.max(10, Math.floor(cpuTimeMs / 4)));
setInterval(() => {
  if (isolate.isDisposed) return;
  const cpu = isolate.cpuTime;
  const usedMs = Number(cpu - lastCpu) / 1e6;
  lastCpu = cpu;
  if (usedMs >= SAMPLE_MS * 0.8) {
    busySince ??= Date.now() - usedMs;
    if (Date.now() - busySince > cpuTimeMs) {
      isolate.dispose();
      die(EXIT.cpu, `module ran for more than ${cpuTimeMs} ms without yielding (cpu_time_ms limit); its isolate was stopped`);
    }
  } else {
    busySince = undefined;
  }
}, SAMPLE_MS).unref();

function explain(err: unknown): { code: number; message: string } {
  const message = (err as Error)?.message ?? String(err);
  if (isolate.isDisposed || /memory limit/i.test(message)) {
    if (/memory limit/i.test(message)) return { code: EXIT.memory, message: `module exceeded its memory limit of ${memoryMb} MB (memory_mb); its isolate was stopped` };
    return { code: EXIT.cpu, message: `module isolate was stopped: ${message}` };
  }
  if (/timed out/i.test(message)) return { code: EXIT.cpu, message: `module ran for more than ${cpuTimeMs} ms without yielding (cpu_time_ms limit)` };
  return { code: 0, message };
}

/** Run `work`; if it failed because the isolate died, exit with the matching code. */
async function guarded<T>(what: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    if (err instanceof Exit) throw err;
    const { code, message } = explain(err);
    if (code !== 0) throw die(code, message);
    throw new Error(`${what}: ${message}`);
  }
}

const methods = client.welcome.methods.flatMap((name) => {
  const m = METHODS.get(name);
  return m ? [{ name: m.name, js: m.js, family: m.family, args: [...m.args] }] : [];
});
const meta = { name: moduleId, version: args["module-version"], id: client.welcome.module_id, grants: client.welcome.grants };

try {
  await rt.init.apply(undefined, [methods, client.welcome.config, meta], { arguments: { copy: true }, timeout: 1000 });
  const code = await readFile(args.bundle!, "utf8");
  const script = await isolate.compileScript(code, { filename: `module:${moduleId}` });
  await guarded("loading the module", () => script.run(context, { timeout: cpuTimeMs }));
  await guarded("start", () => withTimeout(
    rt.start.apply(undefined, [], { timeout: cpuTimeMs, result: { promise: true } }) as Promise<unknown>,
    startTimeoutMs,
    `start() did not finish within ${startTimeoutMs} ms (start_timeout_ms)`,
  ));
} catch (err) {
  if (!(err instanceof Exit)) die(EXIT.startFailed, `failed to start: ${(err as Error).message}`);
  await new Promise(() => {}); // wait for the exit scheduled by die()
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error(message)), ms)))]).finally(() => clearTimeout(timer));
}

client.onEvent(async (ev) => {
  if (exiting) return;
  try {
    await guarded(`event ${ev.type}`, () => rt.dispatch.apply(undefined, [ev.type, ev.payload, ev.seq, ev.missed ?? 0], {
      arguments: { copy: true }, timeout: cpuTimeMs, result: { promise: true },
    }) as Promise<unknown>);
  } catch (err) {
    if (!(err instanceof Exit)) client.log("error", (err as Error).message);
  }
});

client.onInvocation("shutdown", async (params) => {
  const timeoutMs = Number(params.timeout_ms ?? 5000);
  try {
    await guarded("stop", () => withTimeout(
      rt.stop.apply(undefined, [String(params.reason ?? "shutdown")], { arguments: { copy: true }, timeout: cpuTimeMs, result: { promise: true } }) as Promise<unknown>,
      timeoutMs,
      `stop() did not finish within ${timeoutMs} ms`,
    ));
  } finally {
    exiting = true;
    setTimeout(() => process.exit(EXIT.ok), 20).unref();
  }
  return { stopped: true };
});

// Calls into the module: its API, its RPC methods, timers, CLI commands, provider calls and
// configuration updates all go through the bootstrap's invoke(), which answers with data only.
for (const kind of ["module_api", "rpc", "cli", "timer", "provider", "config"] as const) {
  client.onInvocation(kind, async (params) => {
    const answer = (await guarded(`${kind} invocation`, () => rt.invoke.apply(undefined, [kind, params], {
      arguments: { copy: true }, timeout: cpuTimeMs, result: { promise: true, copy: true },
    }) as Promise<unknown>)) as { ok: boolean; value?: unknown; code?: string; message?: string };
    if (answer.ok) return answer.value;
    throw Object.assign(new Error(answer.message ?? "failed"), { code: answer.code ?? "module_error" });
  });
}

client.onInvocation("health", () => {
  const heap = isolate.isDisposed ? null : isolate.getHeapStatisticsSync();
  return {
    status: isolate.isDisposed ? "disposed" : "ok",
    heap_used_bytes: heap ? heap.used_heap_size + heap.externally_allocated_size : 0,
    heap_limit_bytes: memoryMb * 1024 * 1024,
    cpu_time_ms: isolate.isDisposed ? 0 : Number(isolate.cpuTime / 1000000n),
  };
});

client.ready();
