// One file: the isolate host's whole process life (channel, isolate, the ctx bridge, CPU and
// memory watchdogs, teardown), whose exit codes and teardown order are checked in one place.
//
// The isolate host: a child process that runs one TypeScript module in a V8 isolate.
//
// Isolates never run inside the host process. A V8 fatal out-of-memory, a hang inside the
// isolate library, or a module that spins forever takes down at most this process, which
// the host supervises like any other module process. The isolate host speaks the module
// protocol to the host over its private channel (fd 3), exactly as a native module does:
// every `ctx` call becomes a request that the host checks against the module's grants.
//
// Exit codes: 0 after a clean shutdown, 70 start-up failed, 71 the isolate hit its memory
// limit, 72 the module ran past its CPU-time limit, 73 the connection to the host was lost,
// 74 the isolate host itself failed after start-up.

import { readFileSync, writeSync } from "node:fs";
import net from "node:net";
import ivm from "isolated-vm";
import { ModuleClient } from "../../sdk/node/client.ts";
import { FrameChannel, MODULE_SIDE } from "../../protocol/channel.ts";
import { bundleUrl, splitSourceMap, StackMapper } from "./sourcemap.ts";
import { splitHexPaths, withRawHex } from "../../protocol/raw-hex.ts";
import type { AnswerEntry, CallEntry, EventEntry, InvocationKind, InvokeAnswer, InvokedEntry, InvokeEntry, IsolateRuntime, MethodShape } from "./in-isolate/contract.ts";
import type { LogLevel } from "../../protocol/messages.ts";
import { encodeBodyParts } from "../../protocol/codec.ts";
import { startSyncWatchdog } from "./sync-watchdog.ts";
import { EXIT, IDLE_OVER_MS, ISOLATE_HOST_RSS_BASE_MB } from "./exit-codes.ts";
import { InspectorRelay } from "./inspector-relay.ts";

/**
 * The isolate bootstrap (./in-isolate/main.ts), built into one script and written in as a
 * constant when this file is bundled (./bootstrap.ts; runtime.ts and scripts/build-dist.mjs).
 * Run unbundled (development only), it builds the bootstrap itself, as for the catalogue below.
 */
declare const __MODHOST_BOOTSTRAP__: string | undefined;
const bootstrapScript: string = typeof __MODHOST_BOOTSTRAP__ !== "undefined"
  ? __MODHOST_BOOTSTRAP__
  : (await ((await import(/* not bundled */ new URL("./bootstrap.ts", import.meta.url).href)) as typeof import("./bootstrap.ts")).buildBootstrap()).code;

// Not `import { parseArgs } from "node:util"`: esbuild's interop copies a CommonJS module's
// property descriptors onto the imported namespace, and reading those of node:util loads every
// lazy part of it (~34 builtins: streams, worker_threads, the diff and colour code), each
// compiled at every isolate host's boot without a startup snapshot (natives.ts).
const { parseArgs } = process.getBuiltinModule("node:util");

const { values: args } = parseArgs({
  options: {
    "module-id": { type: "string" },
    "module-version": { type: "string", default: "0.0.0" },
    "data-dir": { type: "string", default: "" },
    bundle: { type: "string" },
    "memory-mb": { type: "string", default: "128" },
    "cpu-time-ms": { type: "string", default: "1000" },
    "start-timeout-ms": { type: "string", default: "10000" },
    "handler-timeout-ms": { type: "string", default: "120000" },
    // Development only (modhost dev --inspect, [modules.limits.NAME] inspect): the V8 inspector
    // on the isolate, relayed to the host over the channel ("inspector" invocations).
    inspect: { type: "boolean", default: false },
    // A pre-booted isolate host (runtime/isolate/pool.ts): booted before its module is known,
    // it waits for the hand-over on its channel (the module, its bundle and its limits) and
    // only then does anything of a module's.
    pool: { type: "boolean", default: false },
    // Sync crossings (runtime.ts SYNC_CROSSINGS): module code runs on this process's main
    // thread, bounded by a watchdog thread (./sync-watchdog.ts). Not with the inspector.
    "sync-crossings": { type: "boolean", default: false },
  },
  strict: true,
});

/** What a pooled isolate host is given at hand-over, in place of the arguments above. */
interface Handover {
  module: string;
  version: string;
  bundle: string;
  memory_mb: number;
  cpu_time_ms: number;
  start_timeout_ms: number;
  handler_timeout_ms: number;
  inspect: boolean;
  /** Sync crossings for this module (runtime.ts syncCrossingsFor); the watchdog thread runs if the pool booted with them. */
  sync_crossings?: boolean;
}

/** The first (and only) message a pooled isolate host reads before its hello: the hand-over. */
async function awaitHandover(channel: FrameChannel): Promise<Handover> {
  return new Promise((resolve, reject) => {
    const done = (fn: () => void) => {
      channel.off("message", onMessage);
      channel.off("close", onClose);
      fn();
    };
    const onMessage = (body: unknown) => {
      const m = body as Partial<Handover> & { t?: unknown };
      const ok = m !== null && typeof m === "object" && m.t === "handover" && typeof m.module === "string" && typeof m.version === "string"
        && typeof m.bundle === "string" && typeof m.inspect === "boolean" && (m.sync_crossings === undefined || typeof m.sync_crossings === "boolean")
        && [m.memory_mb, m.cpu_time_ms, m.start_timeout_ms, m.handler_timeout_ms].every((n) => typeof n === "number" && Number.isFinite(n));
      done(() => (ok ? resolve(m as Handover) : reject(new Error("the first message of a pooled isolate host must be a valid hand-over"))));
    };
    // The host stopped (or dropped) this pool process before handing it a module: just end.
    const onClose = () => done(() => process.exit(EXIT.ok));
    channel.on("message", onMessage);
    channel.on("close", onClose);
  });
}

const channelFd = Number(process.env.MODHOST_FD ?? 3);
// Started first: its thread boots (a Node environment, ~70-250 ms here) while this one does.
const watchdog = args["sync-crossings"] ? startSyncWatchdog(channelFd) : undefined;
const socket = new net.Socket({ fd: channelFd, readable: true, writable: true });
// Frames leave at the end of the loop's phase, not of each callback (flushAt "loop"): isolated-vm
// hands this thread every call that finished on the isolate's thread in one wake-up, but runs
// each in a callback of its own, with Node's tick queue drained between them, so the answers of
// 16 invocations that finished together left in 16 writes (strace). Nothing here sends from a
// setImmediate callback, so no frame waits a loop for it.
const channel = new FrameChannel(socket, { ...MODULE_SIDE, flushAt: "loop" });
// A pooled isolate host builds its isolate, its context and the bootstrap before it is handed
// a module (prepareIsolate: nothing of any module is in them; its profile fixes memory_mb), so a
// pooled start skips them. It then says it has booted (the pool hands over only booted
// processes: its launcher has entered the pool's cgroup by then, so all of it moves to the
// module's).
const pooled = args.pool ? await prepareIsolate(Math.max(8, Number(args["memory-mb"])), false) : undefined;
// With sync crossings, the watchdog thread is part of being booted: a pooled start must not wait for it.
if (args.pool) {
  await watchdog?.ready;
  channel.send({ t: "pool_ready" });
}
const handover: Handover = args.pool
  ? await awaitHandover(channel)
  : {
      module: args["module-id"]!,
      version: args["module-version"]!,
      bundle: readFileSync(args.bundle!, "utf8"), // before anything else runs here: nothing to wait for
      memory_mb: Number(args["memory-mb"]),
      cpu_time_ms: Number(args["cpu-time-ms"]),
      start_timeout_ms: Number(args["start-timeout-ms"]),
      handler_timeout_ms: Number(args["handler-timeout-ms"]),
      inspect: args.inspect === true,
      sync_crossings: args["sync-crossings"] === true,
    };

const moduleId = handover.module;
const inspect = handover.inspect;
/** While a debugger holds the module at a breakpoint, time stands still for it: no CPU or handler limit then (development only). */
const PAUSABLE_MS = 24 * 3600_000;
const memoryMb = Math.max(8, handover.memory_mb);
/** This process's size (bytes) past which it ends itself naming memory_mb: checked between tasks below, and by the sync watchdog during a crossing. */
const rssCeiling = (ISOLATE_HOST_RSS_BASE_MB + 2 * memoryMb) * 1024 * 1024;
const cpuTimeMs = inspect ? PAUSABLE_MS : Math.max(10, handover.cpu_time_ms);
const startTimeoutMs = inspect ? PAUSABLE_MS : handover.start_timeout_ms;
const handlerTimeoutMs = inspect ? PAUSABLE_MS : Math.max(1, handover.handler_timeout_ms);
/** One slice of a batch of invocations (INVOKE_BATCHED below), and of due timer callbacks in the isolate (in-isolate/timers.ts). */
const INVOKE_SLICE_MS = Math.max(1, Math.min(5, Math.floor(cpuTimeMs / 20)));
/** Module code runs in synchronous crossings on this thread, bounded by the watchdog thread; the inspector keeps the asynchronous form. */
const syncCrossings = watchdog !== undefined && !inspect && handover.sync_crossings === true;
if (watchdog && !syncCrossings) watchdog.stop();

const client = await ModuleClient.connect({ module: moduleId, version: handover.version, sdk: "modhost-isolate", socket, channel });
let exiting = false;
client.onClose(() => {
  if (!exiting) process.exit(EXIT.disconnected);
});
// Anything that escapes below (setting up the isolate, a bug here) is reported to the host
// with a goodbye naming it, instead of a bare exit the host can only call "connection closed".
let running = false;
const fatal = (err: unknown) => {
  // The stack goes to stderr, which the host logs; the reason goes in the goodbye.
  console.error((err as Error)?.stack ?? String(err));
  const message = (err as Error)?.message ?? String(err);
  die(running ? EXIT.internal : EXIT.startFailed, running ? `isolate host failed: ${message}` : `failed to start: ${message}`);
};
process.on("uncaughtException", fatal);
process.on("unhandledRejection", fatal);

/** The host keeps this much of a log message; sending more only costs bandwidth. */
const MAX_LOG_CHARS = 8192;
/**
 * Text of the module's (an error's message or stack) that this process sends in its own lines
 * and goodbye, cut as logOut cuts the module's lines: the host decodes a module's frames with
 * max_total_string_bytes (1 MiB), so a start that failed with an error of a 1 MiB message lost
 * its goodbye and its log line, and the host could only say "exited with code 70".
 */
const clip = (text: string) => (text.length > MAX_LOG_CHARS ? text.slice(0, MAX_LOG_CHARS) : text);

/** Tell the host why, schedule the exit, and return an Exit to throw where unwinding helps. */
function die(code: number, why: string): Exit {
  const message = clip(why);
  if (exiting) return new Exit(code, message);
  exiting = true;
  // What the module sent before this (its last log lines: a failed start's stack) goes out
  // first; calls it queued before are held to MAX_UNSENT_CALL_BYTES below, so the goodbye waits
  // behind at most that, and callOut sends nothing more from now on.
  try {
    client.log("error", message);
    client.goodbye({ code: "module_error", message });
  } catch {
    // the channel may already be gone
  }
  // Not process.exit() right away: a disposed isolate is torn down on an isolated-vm pool
  // thread (for a large heap this takes a while), and process.exit() disposes Node's platform
  // under it; the pool thread then calls into the freed platform (UnregisterIsolate) and the
  // process dies with SIGSEGV. isolated-vm keeps the event loop alive until the teardown is
  // done, and the goodbye closes the channel, so the loop drains and the process exits with
  // this code. The timer is a fallback should something else hold the loop.
  // An isolate still running (a start-up failure while it spins) would hold the loop too.
  try {
    if (!isolate.isDisposed) isolate.dispose();
  } catch {
    // not created yet, or already gone
  }
  process.exitCode = code;
  setTimeout(() => process.exit(code), 10_000).unref();
  return new Exit(code, message);
}

class Exit extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

/**
 * The module's isolate, its context and the bootstrap, with the two ways out of the isolate
 * (both handed to the bootstrap, which hides them). Nothing here is any module's: a pooled
 * isolate host runs this before its hand-over (with its profile's memory_mb); the ways out
 * only reach the module's channel once it has one (callOut, logOut).
 */
async function prepareIsolate(memoryLimitMb: number, withInspector: boolean) {
  const isolate = new ivm.Isolate({ memoryLimit: memoryLimitMb, inspector: withInspector });
  const context = await isolate.createContext({ inspector: withInspector });
  const jail = context.global;
  await jail.set("globalThis", jail.derefInto());
  // Callbacks, not References: in the isolate a Callback is a plain function that copies its
  // arguments out itself; Reference.applyIgnored parses an options object and builds a transfer
  // for each argument first. Measured in a bare isolate, 50,000 one-call batches three times (load
  // ~19): the isolate's CPU per crossing 10.9-13.5 us with applyIgnored, 3.5 us with the Callback
  // (one run 13.7), the whole process's 7.1-10.0 against 3.3-6.5 us.
  await jail.set("__modhost_call", new ivm.Callback(callOut, { ignored: true }));
  await jail.set("__modhost_log", new ivm.Callback(logOut, { ignored: true }));
  await jail.set("__modhost_done", new ivm.Callback(invokedOut, { ignored: true }));
  await jail.set("__modhost_dispatched", new ivm.Callback(dispatchedOut, { ignored: true }));
  await context.eval(bootstrapScript, { timeout: 1000 });
  const runtime = (await jail.get("__modhost_runtime", { reference: true })) as ivm.Reference<IsolateRuntime>;
  await jail.delete("__modhost_runtime");
  /** One function of the bootstrap's runtime object, typed by the contract both sides import (in-isolate/contract.ts). */
  const fn = async <K extends keyof IsolateRuntime>(name: K) => (await runtime.get(name, { reference: true })) as ivm.Reference<IsolateRuntime[K]>;
  const rt = { init: await fn("init"), start: await fn("start"), stop: await fn("stop"), dispatch: await fn("dispatch"), dispatchStart: await fn("dispatchStart"), progress: await fn("progress"), invokeMany: await fn("invokeMany"), invokeStarted: await fn("invokeStarted"), settle: await fn("settle") };
  return { memoryLimitMb, withInspector, isolate, context, rt, probeScript: await isolate.compileScript("0") };
}

// The pooled isolate was built for its profile's memory_mb and without the inspector: a module
// that wants either otherwise gets a fresh one (the profile key includes memory_mb, so this is
// only the inspector in practice).
let prepared = pooled;
if (prepared && (prepared.memoryLimitMb !== memoryMb || prepared.withInspector !== inspect)) {
  prepared.isolate.dispose();
  prepared = undefined;
}
const { isolate, context, rt, probeScript } = prepared ?? (await prepareIsolate(memoryMb, inspect));
const settleRef = rt.settle;

/** What the CPU watchdogs say when they stop a stretch of module code (the host shows it as the reason). */
/** How often the watchdogs look (runtime.ts watchdogSampleMs, which the host uses for the longest crossing). */
const SAMPLE_MS = Math.min(100, Math.max(5, Math.floor(cpuTimeMs / 4)));
const CPU_OVERRUN = `module ran for more than ${cpuTimeMs} ms without yielding (cpu_time_ms limit); its isolate was stopped`;
/** An error log line and a goodbye naming `why`, as frames (with their length headers) to write to the channel's fd at once. */
function lastWords(why: string): Uint8Array {
  const frame = (message: unknown) => {
    const parts = encodeBodyParts(message);
    const header = Buffer.alloc(4);
    header.writeUInt32BE(parts.reduce((n, p) => n + p.length, 0), 0);
    return [header, ...parts];
  };
  return new Uint8Array(Buffer.concat([
    ...frame({ t: "log", level: "error", message: why }),
    ...frame({ t: "goodbye", error: { code: "module_error", message: why } }),
  ]));
}
if (syncCrossings) {
  // Armed before any module code runs: its last words are encoded now (the watchdog thread
  // cannot encode, and the main thread is busy when they are needed).
  await watchdog!.ready;
  // Past its size during a crossing (this thread cannot look then): see the size check below.
  const MEMORY_OVERRUN = `module exceeded its memory limit of ${memoryMb} MB (memory_mb): its isolate went on allocating past it in one stretch of module code, and this process grew over ISOLATE_HOST_RSS_BASE_MB + 2 x memory_mb (${rssCeiling / 1048576} MB); its isolate was stopped`;
  watchdog!.arm({
    limitMs: cpuTimeMs,
    sampleMs: SAMPLE_MS,
    lastWords: lastWords(CPU_OVERRUN),
    line: `isolate host: ${CPU_OVERRUN}`,
    rssCeiling,
    memoryLastWords: lastWords(MEMORY_OVERRUN),
    memoryLine: `isolate host: ${MEMORY_OVERRUN}`,
  });
}
/**
 * One synchronous crossing (sync crossings on): `fn` runs module code on this thread, the
 * isolate's microtask checkpoint included, while the watchdog thread watches the heartbeat.
 * Ignored callbacks the module made (its calls, answers, logs) run here right after, on this
 * thread, before applySync returns.
 */
function crossSync<T>(fn: () => T): T {
  // A frame partly written (the socket's buffer was full): the watchdog must not write into it.
  watchdog!.enter(socket.writableLength > 0);
  try {
    return fn();
  } finally {
    watchdog!.leave();
    if (!heap || Date.now() - heap.at > 1000) refreshHeapSync();
  }
}
/** A synchronous crossing failed: the isolate died (exit with why), or the module left a rejection unhandled (reported). */
function syncFailure(err: unknown): void {
  const { code, message } = explain(err);
  if (code !== 0) die(code, message);
  else unhandledRejection(err);
}
function refreshHeapSync(): void {
  if (isolate.isDisposed || exiting) return;
  try {
    const stats = isolate.getHeapStatisticsSync();
    heap = { used: stats.used_heap_size + stats.externally_allocated_size, at: Date.now() };
  } catch {
    // disposed meanwhile
  }
}

// Calls come in batches (all the calls of one turn of module code, bootstrap.ts) and go to the
// host in one write; their answers are gathered and handed back in batches too (settle), one
// crossing for all the answers that arrived together.
let answers: AnswerEntry[] = [];
const deliverAnswers = () => {
  const batch = answers;
  answers = [];
  if (exiting || isolate.isDisposed) return;
  if (syncCrossings) {
    try {
      crossSync(() => settleRef.applySync(undefined, [batch], { arguments: { copy: true } }));
    } catch (err) {
      syncFailure(err);
    }
    return;
  }
  // The asynchronous form: the continuations run on the isolate's thread, and this thread (with
  // the probe watchdog on it) stays free. apply, not applyIgnored: the module's continuations run in this task, and a promise they
  // reject with no handler is what the task fails with (isolated-vm checks after each task);
  // applyIgnored dropped it unseen. It is reported in the module's log (unhandledRejection).
  try {
    settleRef.apply(undefined, [batch], { arguments: { copy: true } }).catch(unhandledRejection);
  } catch (err) {
    if (!isolate.isDisposed) fatal(err);
  }
};
const answer = (entry: AnswerEntry) => {
  // A microtask: it runs after the answers of every frame that came in the same read.
  if (answers.length === 0) queueMicrotask(deliverAnswers);
  answers.push(entry);
};
// Each call's answer comes back through one function, tagged with the call's id (requestEach:
// no promise and no closure per call); the channel sends the batch's frames in one write.
const onAnswer = (id: number, err: Error | undefined, value: unknown) => {
  const hex = hexCalls.get(id);
  if (hex) hexCalls.delete(id);
  // Only a code and a message cross back: no host stack, no host objects.
  if (err) answer([id, false, (err as { code?: string }).code ?? "internal", err.message || "request failed"]);
  else answer([id, true, hex ? withRawHex(value, hex) : value]);
};
/**
 * Unhandled promise rejections of the module. isolated-vm fails the task that ran module code
 * with the first promise it left rejected and unhandled (the others of that task are not
 * seen). They are reported in the module's log, at most REJECTION_REPORTS_PER_S a second, the
 * rest counted and said in one line a second: a module rejecting in a loop sends the host a
 * bounded number of lines, each cut (logOut) and then held to its log budget by the host.
 */
const REJECTION_REPORTS_PER_S = 10;
/** What of a rejection's stack is read (mapped to the module's files, then cut by logOut). */
const REJECTION_TEXT_CHARS = 16 * 1024;
const rejections = { windowStart: 0, reported: 0, suppressed: 0, timer: undefined as NodeJS.Timeout | undefined };
function unhandledRejection(err: unknown): void {
  if (exiting || isolate.isDisposed || explain(err).code !== 0) return;
  const now = Date.now();
  if (now - rejections.windowStart >= 1000) {
    rejections.windowStart = now;
    rejections.reported = 0;
  }
  if (rejections.reported >= REJECTION_REPORTS_PER_S) {
    rejections.suppressed++;
    rejections.timer ??= setTimeout(() => {
      rejections.timer = undefined;
      const n = rejections.suppressed;
      rejections.suppressed = 0;
      if (n > 0) logOut("error", `${n} more unhandled promise rejections not shown (at most ${REJECTION_REPORTS_PER_S} a second are reported)`);
    }, 1000).unref();
    return;
  }
  rejections.reported++;
  logOut("error", `unhandled promise rejection: ${rejectionText(err)}`);
}
/** The rejection value as text: an error's stack (or message), a string, or what a copied value says. */
function rejectionText(err: unknown): string {
  try {
    const e = err as { stack?: unknown; message?: unknown } | null | undefined;
    // What isolated-vm makes of a thrown value that is not an Error (its stack is this process's).
    if (typeof e?.message === "string" && e.message.startsWith("An object was thrown from supplied code within isolated-vm")) return "a rejected value that is not an Error";
    const text = typeof e?.stack === "string" && e.stack !== "" ? e.stack
      : typeof e?.message === "string" ? e.message
      : String(err);
    return text.slice(0, REJECTION_TEXT_CHARS);
  } catch {
    return "(a value that cannot be shown as text)";
  }
}

// Raw serialisations come as bin and the module is given hex (protocol/raw-hex.ts): made here
// with Buffer's native hex (a 1000-transaction block's ~3 MB: a few ms), not byte by byte in
// the isolate (~20-40 ms). The calls whose answers carry them, by id.
const hexCalls = new Map<number, readonly (readonly string[])[]>();
let hexPaths: Map<string, readonly (readonly string[])[]> | undefined;
// What the module's calls may hold here in bytes (the bootstrap bounds their count:
// in-isolate/stretch.ts MAX_CALLS_UNANSWERED): calls the host has not taken yet (it reads a
// module's socket at requests_per_second once its requests wait) stay in this process. Past the
// bound a call is refused at once (quota_exceeded, naming it), before it is encoded; one call is
// sent whatever its size (up to max_frame_bytes) when less is waiting.
/** Bytes sent (calls and any other frames) but not yet taken by the host's end of the socket. */
const MAX_UNSENT_CALL_BYTES = 8 * 1024 * 1024;
const unsentRefusal = () => Object.assign(
  new Error(`the host has not yet taken ${client.unsentBytes} bytes of this module's calls, past MAX_UNSENT_CALL_BYTES (${MAX_UNSENT_CALL_BYTES}): it is behind (requests_per_second, host_cpu_ms_per_s); await some calls before making more`),
  { code: "quota_exceeded" },
);
function callOut(batch: CallEntry[]): void {
  hexPaths ??= new Map(catalogue.flatMap((m) => {
    const paths = splitHexPaths(m.sdk?.hex);
    return paths ? [[m.name, paths] as const] : [];
  }));
  // The module is being stopped (die): its goodbye has gone out, nothing follows it.
  if (exiting) return;
  for (const [id, method, params] of batch) {
    if (client.unsentBytes >= MAX_UNSENT_CALL_BYTES) {
      onAnswer(id, unsentRefusal(), undefined);
      continue;
    }
    // Params the bootstrap encoded itself (a storage transaction: in-isolate/pack.ts) go into
    // the frame as they are; the host decodes them with every limit, as any module's.
    if (params instanceof Uint8Array) {
      client.requestEachEncoded(method, Buffer.from(params.buffer, params.byteOffset, params.byteLength), id, onAnswer);
      continue;
    }
    const hex = hexPaths.get(method);
    if (hex) hexCalls.set(id, hex);
    client.requestEach(method, params ?? {}, id, onAnswer);
  }
}
function logOut(level: LogLevel, message: string, fields?: Record<string, unknown>): void {
  if (exiting) return;
  let text = String(message);
  if (text.includes(scriptUrl)) text = stacks.mapStack(text);
  text = text.slice(0, MAX_LOG_CHARS);
  try {
    client.log(level, text, fields);
  } catch {
    // Fields too large for a frame: the line still gets through, and says what happened.
    client.log(level, `${text} [fields dropped: too large for one message]`);
  }
}

// The bundle carries its source map (compile.ts): stack traces the module produces are mapped
// back to its own files before they leave this process (logs, start failures, invocation errors).
const code = handover.bundle;
const bundle = splitSourceMap(code);
const scriptUrl = bundleUrl(moduleId);
const stacks = new StackMapper(scriptUrl, bundle.map);
/** A message with the module's position appended, from the error's stack: "boom (at index.ts:3:9)". */
const located = (message: string, stack: unknown) => {
  const at = typeof stack === "string" ? stacks.topFrame(stack) : undefined;
  return at && !message.includes(at) ? `${message} (at ${at})` : message;
};

// Watchdog: the isolate runs on its own thread, so this process stays responsive while module
// code runs. cpu_time_ms limits one run of module code without a break, including an endless
// loop in a promise continuation, which the `timeout` option of isolated-vm cannot see.
//
// "Without a break" is measured with a probe: a trivial task queued to the isolate, which runs
// only once the isolate has finished what it is doing (the task it runs and every microtask
// after it). While a probe waits, the isolate has not yielded; if it has used more than
// cpu_time_ms of CPU time since the probe was queued, it is disposed. A module that works hard
// but yields (awaits a host call every few milliseconds) answers every probe and is never
// stopped; a spinning module is stopped however loaded the machine is. The measure is
// isolated-vm's cpuTime, which its documentation warns "may vary drastically if there is
// contention for the CPU": on a heavily loaded machine a short stretch can read as hundreds of
// ms, so keep cpu_time_ms well above a module's real longest stretch (the default is 1000).
//
// CALL_WITHOUT_TIMEOUT: the calls that carry the module's everyday work, event batches
// (dispatch) and invocations (RPC, module API, timers...), are made without isolated-vm's
// `timeout` option: this watchdog alone bounds them, as it already bounds every continuation.
// A `timeout` arms a timer on isolated-vm's timer thread for each call, one more thread to
// wake per call; measured over 3000 sequential JSON-RPC calls of a module method (two
// interleaved pairs, load 12-15), the isolate host's CPU per call went from 417 / 310 us to
// 307 / 257 us and the latency median from 1023 / 611 us to 583 / 526 us. A handler that spins
// is still stopped after cpu_time_ms (test/isolate.test.ts: an event handler, an RPC handler).
// One-off calls (loading the module, start, stop) keep their `timeout`.
let probe: { sentAt: number; cpu: bigint } | undefined;
/** Heap statistics, refreshed whenever the isolate is idle (health must not wait for a busy isolate). */
let heap: { used: number; at: number } | undefined;
// With sync crossings on, module code runs on the isolate's thread only while it starts (the
// start task and its microtasks; later continuations come through settle on this thread): this
// watchdog covers that, and stops once the module runs (probeTimer below).
const probeTimer = setInterval(() => {
  if (isolate.isDisposed || exiting) return;
  if (syncCrossings && running) {
    clearInterval(probeTimer);
    probe = undefined;
    return;
  }
  if (probe) {
    const usedMs = Number(isolate.cpuTime - probe.cpu) / 1e6;
    if (usedMs > cpuTimeMs) {
      isolate.dispose();
      die(EXIT.cpu, CPU_OVERRUN);
    }
    return;
  }
  const sent = { sentAt: Date.now(), cpu: isolate.cpuTime };
  probe = sent;
  probeScript.run(context).then(
    async () => {
      if (probe === sent) probe = undefined;
      if (!heap || Date.now() - heap.at > 1000) {
        const stats = await isolate.getHeapStatistics().catch(() => undefined);
        if (stats) heap = { used: stats.used_heap_size + stats.externally_allocated_size, at: Date.now() };
      }
    },
    () => {
      if (probe === sent) probe = undefined;
    },
  );
}, SAMPLE_MS).unref();

// memory_mb is isolated-vm's heap limit, and isolated-vm enforces it by disposing the isolate
// once V8 says the heap is near it. Code that allocates small objects without pause
// (`for (;;) a.push(new Array(1000).fill(s))`) is not stopped so: V8 collects again and again
// and the heap goes on past the limit; with a 64 MB memory_mb this process grew to 470 MB in
// 3 s, and to 1.8 GB in 20 s without a cgroup, while the CPU watchdog's disposal did not take
// either (it waits for the collections). Only the kernel ended it, at memory_total_mb (or at
// address_space_mb where there is no cgroup), naming a limit the module never came near.
// So this process watches its own size: past ISOLATE_HOST_RSS_BASE_MB + 2 x memory_mb while
// the isolate has not yielded (a probe waits), it says so naming memory_mb and ends itself at
// once (SIGKILL: an orderly end waits for the isolate's teardown, which waits for the same
// collections); ending for another reason and still over a sample later, the same. Below the kernel's floor for an isolate host (runtime.ts
// ISOLATE_HOST_MIN: 192 + 2 x memory_mb), above what an isolate host with a full heap holds.
// With sync crossings this thread runs the module's code, and cannot look while it does: the
// watchdog thread ends a crossing past the same size (sync-watchdog.ts, armed above).
//
// An idle isolate is within its heap, but not everything it holds is in its heap: ICU's objects
// behind Intl (an Intl.DateTimeFormat with a time zone: ~100 bytes of heap, ~12 KB of malloc)
// are outside it, and isolated-vm counts none of that. A module keeping 1,000 of them per call
// and yielding between calls was never seen busy over the ceiling, and went on to the kernel's
// limit (memory_total_mb). So over the ceiling while idle too: this process's own garbage
// (copies of answers and calls on their way) is collected first (runtime.ts runs it with
// --expose-gc); still over IDLE_OVER_MS later, the isolate holds it, and it ends the same way.
const collectGarbage = (globalThis as { gc?: () => void }).gc;
let overSince = 0;
let idleOverSince = 0;
setInterval(() => {
  const rss = process.memoryUsage.rss();
  if (rss <= rssCeiling) {
    idleOverSince = 0;
    return;
  }
  if (!exiting) {
    // One isolated-vm disposed at its limit may still be allocating: the disposal waits for the
    // collections too.
    const idle = !probe && !isolate.isDisposed;
    if (idle && idleOverSince === 0) {
      idleOverSince = Date.now();
      collectGarbage?.();
      return;
    }
    if (idle && Date.now() - idleOverSince < IDLE_OVER_MS) return;
    const why = idle
      ? `module exceeded its memory limit of ${memoryMb} MB (memory_mb): its isolate held memory outside its heap (Intl objects, which isolated-vm does not count), and this process held ${Math.round(rss / 1048576)} MB while the module was idle, over ISOLATE_HOST_RSS_BASE_MB + 2 x memory_mb (${Math.round(rssCeiling / 1048576)} MB) for ${IDLE_OVER_MS} ms (IDLE_OVER_MS) after a collection; its isolate was stopped`
      : `module exceeded its memory limit of ${memoryMb} MB (memory_mb): its isolate went on allocating past it and this process held ${Math.round(rss / 1048576)} MB, over ISOLATE_HOST_RSS_BASE_MB + 2 x memory_mb (${Math.round(rssCeiling / 1048576)} MB); its isolate was stopped`;
    // Ended here and now, as the sync watchdog ends a crossing: not through die(), whose orderly
    // end waits for the isolate's teardown, which waits for the same collections that grow this
    // process (under a load of 4.6 it went from 323 to 396 MB in the 236 ms before the check
    // below ended it). The last words go straight to the channel unless a frame of this thread's
    // is half written there, and to stderr, which the host reads for the crash reason.
    exiting = true;
    if (socket.writableLength === 0) {
      try {
        writeSync(channelFd, lastWords(why));
      } catch {
        // the channel is full or gone: stderr says it
      }
    }
    try {
      writeSync(2, `isolate host: ${why}\n`);
    } catch {
      // stderr gone
    }
    process.kill(process.pid, "SIGKILL");
    return;
  }
  // Ending already, and still over: the teardown waits for the isolate; waiting grows it.
  if (overSince === 0) overSince = Date.now();
  else if (Date.now() - overSince >= SAMPLE_MS) {
    try {
      writeSync(2, `isolate host: still over ${Math.round(rssCeiling / 1048576)} MB (ISOLATE_HOST_RSS_BASE_MB + 2 x memory_mb, its memory limit of ${memoryMb} MB (memory_mb)) while ending: ended at once\n`);
    } catch {
      // stderr gone
    }
    process.kill(process.pid, "SIGKILL");
  }
}, SAMPLE_MS).unref();

/**
 * What a failure of a call into the isolate means: the isolate's death (a code to exit with and
 * why) or the module's own error (code 0). Only isolated-vm's own state decides the first, never
 * the error's text: a module throws what it likes, and `throw new Error("Script execution timed
 * out.")` from start() (in 0 ms) was reported as a run past cpu_time_ms, "... memory limit" as
 * one past memory_mb, and such a rejection left unhandled by a handler ended the module with
 * that reason, unreported. `wallAtStart`: the isolate's wall time when a call made with
 * isolated-vm's `timeout` (cpuTimeMs) began; a "timed out" is isolated-vm's only from such a call
 * and if the isolate ran for at least half of it since (its timer counts the time it runs).
 */
function explain(err: unknown, wallAtStart?: bigint): { code: number; message: string } {
  const message = (err as Error)?.message ?? String(err);
  if (isolate.isDisposed) {
    // isolated-vm disposes an isolate of its own accord only at its memory limit (it is disposed
    // by the time its error is seen); the host's own disposals (the CPU watchdog, die) set
    // `exiting` before any failure can be seen. The first failure seen is not always the one
    // that names the limit: a call waiting on a promise of the module's (an event handler past
    // an await that allocated until the limit) fails with "Promise was abandoned".
    if (/memory limit/i.test(message) || !exiting) return { code: EXIT.memory, message: `module exceeded its memory limit of ${memoryMb} MB (memory_mb); its isolate was stopped` };
    return { code: EXIT.cpu, message: `module isolate was stopped: ${message}` };
  }
  if (wallAtStart !== undefined && /timed out/i.test(message) && Number(isolate.wallTime - wallAtStart) / 1e6 >= cpuTimeMs / 2) {
    return { code: EXIT.cpu, message: `module ran for more than ${cpuTimeMs} ms without yielding (cpu_time_ms limit)` };
  }
  return { code: 0, message };
}

/** A call into the module whose answer was lost to an unhandled rejection in the same task (already reported). */
class LostToRejection extends Error {
  readonly code = "module_error";
}

/**
 * Run `work`; if it failed because the isolate died, exit with the matching code. `settles`:
 * the bootstrap function called never rejects (dispatch, invoke: they answer failures as data),
 * so a failure that is not the isolate's death is an unhandled rejection of the module's, which
 * isolated-vm throws in place of the call's answer: it is reported as one (unhandledRejection)
 * and the call ends with LostToRejection.
 */
async function guarded<T>(what: string, work: () => Promise<T>, settles = false): Promise<T> {
  // The calls made with isolated-vm's `timeout` (loading, start, stop); those that settle are
  // made without one (their progress checks have their own, below).
  const wallAtStart = settles || isolate.isDisposed ? undefined : isolate.wallTime;
  try {
    return await work();
  } catch (err) {
    if (err instanceof Exit) throw err;
    const { code, message } = explain(err, wallAtStart);
    if (code !== 0) throw die(code, message);
    if (settles && !(err instanceof LostToRejection) && (err as { code?: unknown })?.code !== "timeout") {
      unhandledRejection(err);
      throw new LostToRejection(`${what}: the module left a promise rejected with no handler while this ran, and isolated-vm ends the call with it: its answer is lost (the rejection is in the module's log)`);
    }
    const stack = (err as { stack?: unknown }).stack;
    if (typeof stack === "string" && stack.includes(scriptUrl)) client.log("error", clip(`${what} failed: ${stacks.mapStack(stack)}`));
    const wire = (err as { code?: unknown }).code;
    throw Object.assign(new Error(`${what}: ${located(message, stack)}`), typeof wire === "string" ? { code: wire } : {});
  }
}

// The catalogue's shape (name, js name, family, argument names) comes written into this script
// by runtime.ts (isolateHostScript): importing capabilities/families.ts here would load every
// capability's implementation and, through them, node:http, node:tls and undici, which took
// ~40% of this process's start (Node builds an ES module facade of node:http by reading all of
// its lazy getters). Run unbundled (no table written in), it falls back to the catalogue.
declare const __MODHOST_METHODS__: MethodShape[] | undefined;
const catalogue: MethodShape[] = typeof __MODHOST_METHODS__ !== "undefined"
  ? __MODHOST_METHODS__
  : [...((await import(/* not bundled */ new URL("../../capabilities/families.ts", import.meta.url).href)) as typeof import("../../capabilities/families.ts")).METHODS.values()];
const shapes = new Map(catalogue.map((m) => [m.name, m]));
const methods = client.welcome.methods.flatMap((name) => {
  const m = shapes.get(name);
  return m ? [{ name: m.name, js: m.js, family: m.family, args: [...m.args], ...(m.pages ? { pages: { ...m.pages } } : {}), ...(m.sdk ? { sdk: m.sdk } : {}) }] : [];
});
const meta = { name: moduleId, version: handover.version, id: client.welcome.module_id, grants: client.welcome.grants };

try {
  await rt.init.apply(undefined, [methods, client.welcome.config, meta, { maxFrameBytes: client.welcome.max_frame_bytes, timerSliceMs: INVOKE_SLICE_MS }], { arguments: { copy: true }, timeout: 1000 });
  // With the inspector on, the bundle keeps its inline source map: the debugger shows the
  // module's .ts files and sets breakpoints in them.
  const script = await isolate.compileScript(inspect ? code : bundle.code, { filename: scriptUrl });
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
  return Promise.race([p, new Promise<never>((_, rej) => (timer = setTimeout(() => rej(Object.assign(new Error(message), { code: "timeout" })), ms)))]).finally(() => clearTimeout(timer));
}

// Events reach the isolate in batches: every event queued so far in one crossing (the
// bootstrap runs the handlers one after another, as before), acknowledged with one ack.
// Each event's handlers have handler_timeout_ms: when the timer runs out, the isolate is asked
// how long the current event has been running (one crossing per check, none per event); an
// event past its deadline is given up on (logged) and the rest of the batch is sent again, so
// one stuck handler cannot stall the module's event stream, and slow handlers keep their order.
let batchSeq = 0;
client.onEvents(async (events) => {
  let rest = events;
  while (rest.length > 0 && !exiting) {
    const id = ++batchSeq;
    const what = rest.length === 1 ? `event ${rest[0]!.type}` : `${rest.length} events (${[...new Set(rest.map((e) => e.type))].join(", ")})`;
    const batch = rest.map((ev): EventEntry => [ev.type, ev.payload, ev.seq, ev.missed ?? 0]);
    try {
      // No isolated-vm `timeout` here or on invoke (below): the watchdog stops a handler that
      // spins, synchronously or in a continuation (see CALL_WITHOUT_TIMEOUT).
      const run = syncCrossings ? dispatchSync(id, batch) : rt.dispatch.apply(undefined, [id, batch], { arguments: { copy: true }, result: { promise: true } }) as Promise<unknown>;
      const stuck = await guarded(what, () => untilDoneOrStuck(run, id), true);
      if (stuck === null) return;
      client.log("error", `the handlers of event ${rest[stuck]!.type} (seq ${rest[stuck]!.seq}) did not finish within ${handlerTimeoutMs} ms (handler_timeout_ms); it is given up on and the next events are delivered`);
      rest = rest.slice(stuck + 1);
    } catch (err) {
      // A lost batch was reported with its rejection (held to a rate there); its handlers go on.
      if (!(err instanceof Exit) && !(err instanceof LostToRejection)) client.log("error", clip((err as Error).message));
      return;
    }
  }
});

/** Event batches started in a synchronous crossing, by id: each resolves when __modhost_dispatched says it is done. */
const dispatched = new Map<number, () => void>();
function dispatchedOut(batchId: number): void {
  const done = dispatched.get(batchId);
  dispatched.delete(batchId);
  done?.();
}
/** dispatch() in a synchronous crossing; fails as the asynchronous call would (the isolate died, a rejection left unhandled). */
function dispatchSync(id: number, batch: EventEntry[]): Promise<unknown> {
  const done = new Promise<void>((resolve) => dispatched.set(id, resolve));
  try {
    crossSync(() => rt.dispatchStart.applySync(undefined, [id, batch], { arguments: { copy: true } }));
  } catch (err) {
    dispatched.delete(id);
    return Promise.reject(err);
  }
  return done;
}

/** null once `run` is done; the index of the event given up on if one ran past handler_timeout_ms. */
async function untilDoneOrStuck(run: Promise<unknown>, id: number): Promise<number | null> {
  let done = false;
  const finished = run.then(() => {
    done = true;
  });
  finished.catch(() => {}); // given up on, it may still fail later: nobody is waiting then
  let wait = handlerTimeoutMs;
  for (;;) {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([finished, new Promise((resolve) => (timer = setTimeout(resolve, wait)))]);
    } finally {
      // Also when the isolate died: a pending timer would keep this process from exiting.
      clearTimeout(timer);
    }
    if (done) return null;
    // Its own `timeout`: a "timed out" is isolated-vm's only if the isolate ran through this call.
    const wallAtStart = isolate.isDisposed ? undefined : isolate.wallTime;
    const p = (await rt.progress.apply(undefined, [id, handlerTimeoutMs], { arguments: { copy: true }, timeout: cpuTimeMs, result: { copy: true } }).catch((err: unknown) => {
      const { code, message } = explain(err, wallAtStart);
      throw code !== 0 ? die(code, message) : err;
    })) as { index: number; elapsed: number; abandoned: boolean } | null;
    if (p === null) {
      await finished;
      return null;
    }
    if (p.abandoned) return p.index;
    wait = Math.max(1, handlerTimeoutMs - p.elapsed);
  }
}

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
    watchdog?.stop();
    setTimeout(() => process.exit(EXIT.ok), 20).unref();
  }
  return { stopped: true };
});

// Calls into the module: its API, its RPC methods, timers, CLI commands, provider calls and
// configuration updates all go through the bootstrap's invoke(), which answers with data only.
//
// INVOKE_BATCHED: the invocations of one read cross into the isolate together: queued as they
// are decoded and handed over in one invokeMany() call (a microtask, after the read's last
// frame), which starts them in order; those that arrive while a batch is crossing make the
// next batch. Each answer comes back on its own as soon as its handler is done (__modhost_done,
// the answers of one turn together), so each invocation keeps its own handler_timeout_ms here,
// its own error, and its own answer frame. invokeMany() starts handlers for at most
// INVOKE_SLICE_MS and sends back how many it started, the rest going in the next crossing: the
// CPU watchdog still sees about one handler's stretch per crossing, not a whole batch's.
// shutdown and health are not queued (above, below). What waits here is bounded by the host:
// it keeps at most MAX_PENDING_INVOCATIONS (host/session.ts) unanswered.
const invocations = new Map<number, { resolve: (answer: InvokeAnswer) => void; reject: (err: unknown) => void; timer: NodeJS.Timeout }>();
let invocationSeq = 0;
let invokeQueue: InvokeEntry[] = [];
let crossing = false;
async function deliverInvocations(): Promise<void> {
  crossing = true;
  try {
    while (invokeQueue.length > 0 && !exiting && !isolate.isDisposed) {
      // Those given up on (handler_timeout_ms) while they waited here are not started.
      const batch = invokeQueue.filter(([id]) => invocations.has(id));
      invokeQueue = [];
      if (batch.length === 0) continue;
      let started: number;
      try {
        // apply, as settle: the handlers' synchronous parts run in this task, and a promise they
        // leave rejected with no handler is what the task fails with. Their answers are not lost
        // with it (they leave through __modhost_done): it is reported, and they go on.
        started = syncCrossings
          ? crossSync(() => rt.invokeMany.applySync(undefined, [batch, INVOKE_SLICE_MS], { arguments: { copy: true }, result: { copy: true } })) as number
          : (await rt.invokeMany.apply(undefined, [batch, INVOKE_SLICE_MS], { arguments: { copy: true }, result: { copy: true } })) as number;
      } catch (err) {
        try {
          if (explain(err).code !== 0) throw err;
          unhandledRejection(err);
          started = syncCrossings
            ? rt.invokeStarted.applySync(undefined, [], { result: { copy: true } }) as number
            : (await rt.invokeStarted.apply(undefined, [], { result: { copy: true } })) as number;
        } catch (fatalErr) {
          // The isolate is gone: each waiting invocation fails with why (guarded exits with its code).
          for (const [id] of batch) {
            const waiting = invocations.get(id);
            if (!waiting) continue;
            invocations.delete(id);
            clearTimeout(waiting.timer);
            waiting.reject(fatalErr);
          }
          return;
        }
      }
      if (started < batch.length) {
        invokeQueue = [...batch.slice(started), ...invokeQueue];
        // Synchronous crossings hold this thread: let health, shutdown and answers in between slices.
        if (syncCrossings) await new Promise((resolve) => setImmediate(resolve));
      }
    }
  } finally {
    crossing = false;
  }
}
function invokedOut(answers: InvokedEntry[]): void {
  for (const [id, answer] of answers) {
    const waiting = invocations.get(id);
    if (!waiting) continue; // given up on (handler_timeout_ms): its caller has been answered
    invocations.delete(id);
    clearTimeout(waiting.timer);
    waiting.resolve(answer);
  }
}
/** One invocation, queued for the next batch; fails with code "timeout" after handler_timeout_ms. */
function invoke(kind: InvocationKind, params: Record<string, unknown>): Promise<InvokeAnswer> {
  return new Promise((resolve, reject) => {
    const id = ++invocationSeq;
    const timer = setTimeout(() => {
      invocations.delete(id);
      reject(Object.assign(new Error(`the module's ${kind} handler took longer than ${handlerTimeoutMs} ms (handler_timeout_ms) and was given up on`), { code: "timeout" }));
    }, handlerTimeoutMs);
    // Nothing to wait for once the isolate is gone (a handler stopped by the watchdog while
    // others wait): die() lets the loop drain, and a deadline must not hold it.
    timer.unref();
    invocations.set(id, { resolve, reject, timer });
    invokeQueue.push([id, kind, params]);
    if (!crossing && invokeQueue.length === 1) queueMicrotask(() => void deliverInvocations());
  });
}
for (const kind of ["module_api", "rpc", "cli", "timer", "provider", "config", "hook"] as const) {
  client.onInvocation(kind, async (params) => {
    const answer = await guarded(`${kind} invocation`, () => invoke(kind, params));
    if (answer.ok) return answer.value;
    throw Object.assign(new Error(located(answer.message ?? "failed", answer.stack)), { code: answer.code ?? "module_error" });
  });
}

client.onInvocation("health", () => {
  // Answered from this thread alone: a module that is busy right now (or spinning until the
  // watchdog stops it) must not delay the answer. busy_ms says how long it has been busy.
  const disposed = isolate.isDisposed;
  return {
    status: disposed ? "disposed" : "ok",
    heap_used_bytes: heap?.used ?? 0,
    heap_limit_bytes: memoryMb * 1024 * 1024,
    cpu_time_ms: disposed ? 0 : Number(isolate.cpuTime / 1000000n),
    busy_ms: probe && !disposed ? Date.now() - probe.sentAt : 0,
    // Where module code runs: "sync" on this thread (sync crossings), "async" on the isolate's.
    crossings: syncCrossings ? "sync" : "async",
  };
});

if (inspect) serveInspector();

/** The inspector relay (development only; ./inspector-relay.ts). */
function serveInspector(): void {
  const relay = new InspectorRelay({
    open: () => isolate.createInspectorSession(),
    budget: Math.max(4096, client.welcome.max_frame_bytes - 64 * 1024),
    warn: (message) => client.log("warn", message),
  });
  client.onInvocation("inspector", (params) => relay.invoke(params));
}

client.ready();
running = true;
