// What the isolate host (runtime/isolate/worker.ts) and the bootstrap inside the isolate
// (./main.ts) hand each other: the two host references planted on the isolate's global object,
// and the object the bootstrap leaves there for the isolate host. Types only: both sides
// import them, and nothing of this file ends up in either script.

import type { LogLevel } from "../../../protocol/messages.ts";

/**
 * One host call leaving the isolate: [call id, wire method, named parameters], the parameters
 * either as data or already encoded as a MessagePack map (a storage transaction's: ./pack.ts),
 * which the isolate host puts in the frame as they are and the host decodes with every limit.
 */
export type CallEntry = [id: number, method: string, params: Record<string, unknown> | Uint8Array];

/** One answer coming back: [id, true, value] or [id, false, code, message]. */
export type AnswerEntry = [id: number, ok: true, value: unknown] | [id: number, ok: false, code: string, message: string];

/** One event of a batch: [type, payload, seq, missed]. */
export type EventEntry = [type: string, payload: unknown, seq: number, missed: number];

/** The invocation kinds the isolate host passes to invoke() (its onInvocation handlers). */
export type InvocationKind = "module_api" | "rpc" | "cli" | "timer" | "provider" | "config" | "hook";

/** A paged method's field names (docs/protocol.md, "Paged answers"). */
interface PageShape {
  cursor: string;
  items: string;
  next: string;
  same: string;
}

/** One catalogue method as the isolate needs it (capabilities/families.ts has the whole). */
export interface MethodShape {
  name: string;
  js: string;
  family: string;
  args: readonly string[];
  pages?: PageShape;
  /** capabilities/families.ts SdkShape: binary fields to give as hex, a method read through another's pages. */
  sdk?: { hex?: readonly string[]; via?: { method: string; field: string } };
}

/** What `ctx.module` says. */
export interface ModuleMeta {
  name: string;
  version: string;
  id: unknown;
  grants: unknown;
}

export interface InitLimits {
  maxFrameBytes: number;
  /** How long one slice of due timer callbacks may run, in ms (the invocation slice). */
  timerSliceMs?: number;
}

/** invoke()'s answer: only data crosses back. */
export type InvokeAnswer = { ok: true; value: unknown } | { ok: false; code: string; message: string; stack: string | undefined };

/** One invocation of a batch handed to invokeMany(): [invocation id, kind, params]. */
export type InvokeEntry = [id: number, kind: InvocationKind, params: Record<string, unknown>];

/** One invocation's answer leaving through __modhost_done: [invocation id, answer]. */
export type InvokedEntry = [id: number, answer: InvokeAnswer];

/** progress()'s answer for the running batch. */
export interface Progress {
  index: number;
  elapsed: number;
  abandoned: boolean;
}

/** The object the bootstrap leaves at globalThis.__modhost_runtime (the isolate host takes and deletes it). */
export interface IsolateRuntime {
  settle(answers: AnswerEntry[]): void;
  init(methods: MethodShape[], config: unknown, meta: ModuleMeta, limits: InitLimits | undefined): void;
  start(): Promise<void>;
  stop(reason: string): Promise<void>;
  invoke(kind: InvocationKind, params: Record<string, unknown>): Promise<InvokeAnswer>;
  /** Start the invocations of a batch in order, for up to sliceMs; each answer leaves through __modhost_done when ready. How many it started. */
  invokeMany(batch: InvokeEntry[], sliceMs: number): number;
  /** How many of the last invokeMany() batch were started. */
  invokeStarted(): number;
  dispatch(batchId: number, batch: EventEntry[]): Promise<void>;
  /** dispatch() started from a synchronous crossing: its end is told through __modhost_dispatched(batchId). */
  dispatchStart(batchId: number, batch: EventEntry[]): void;
  progress(batchId: number, timeoutMs: number): Progress | null;
}

/**
 * The two ways out of the isolate are isolated-vm Callbacks made with `{ ignored: true }`: in
 * the isolate they are plain functions that copy their arguments out at once (throwing when
 * something cannot be copied) and return before the isolate host has run them.
 */
/** __modhost_call: a batch of calls made in one turn of module code. */
export type CallFunction = (batch: CallEntry[]) => void;
/** __modhost_done: the answers of the invocations that finished in one turn of module code. */
export type DoneFunction = (answers: InvokedEntry[]) => void;
/** __modhost_dispatched: the event batch batchId (dispatchStart) is done. */
export type DispatchedFunction = (batchId: number) => void;
/** __modhost_log: one log line (fields are plain data or absent). */
export type LogFunction = (level: LogLevel, message: string, fields: Record<string, unknown> | undefined) => void;
