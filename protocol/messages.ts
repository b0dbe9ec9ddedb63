// The message kinds of the module protocol (docs/protocol.md is the normative description).
// One definition serves both ends: the host, the isolate hosts and the TypeScript client.

import { deeperThan, MAX_VALUE_DEPTH } from "./codec.ts";

/** 2: raw serialisations are bin (docs/protocol.md section 9; host/older-protocol.ts serves 1). */
export const PROTOCOL_VERSION = 2;
/** Oldest protocol version this host still speaks. */
export const MIN_PROTOCOL_VERSION = 1;

export type LogLevel = "debug" | "info" | "warn" | "error";

export type ErrorCode =
  | "permission_denied"
  | "invalid_params"
  | "unknown_method"
  | "not_found"
  | "quota_exceeded"
  | "backend_error"
  | "backend_unavailable"
  | "timeout"
  | "unavailable"
  | "invalid_message"
  | "protocol_error"
  | "module_error"
  | "result_too_large"
  | "not_plain_data"
  | "hook_rejected"
  | "internal";

/** Longest method name a request may carry (no method comes close); longer is refused before any lookup. */
const MAX_METHOD_NAME_LENGTH = 128;
/** Longest error message the host sends; longer ones (echoing a huge input, say) are cut. */
const MAX_ERROR_MESSAGE_LENGTH = 4096;

export interface WireError {
  code: ErrorCode;
  message: string;
  data?: unknown;
}

/** Module -> host, first message. */
export interface Hello {
  t: "hello";
  /** Lowest and highest protocol versions the module speaks. */
  protocol: [number, number];
  module: string;
  version: string;
  /** Free-form name of the SDK or runtime, for logs ("modhost-rust/0.1.0"). */
  sdk?: string;
}

/** Host -> module, answer to a good hello. */
export interface Welcome {
  t: "welcome";
  protocol: number;
  host: string;
  module_id: string;
  /** Effective grants as descriptors ("read_blockchain", "call_module=price-feed"). */
  grants: string[];
  /** Every request method the module may call with these grants. */
  methods: string[];
  config: Record<string, unknown>;
  data_dir: string;
  /** How many events may be in flight before the host waits for an ack. */
  event_window: number;
  max_frame_bytes: number;
}

interface Request {
  t: "request";
  id: number;
  method: string;
  params: Record<string, unknown>;
}

interface Response {
  t: "response";
  id: number;
  result?: unknown;
  error?: WireError;
}

export interface EventMessage {
  t: "event";
  /** Per-subscriber sequence number, starting at 1, contiguous but for `missed`. */
  seq: number;
  type: string;
  payload: unknown;
  /** Milliseconds since the epoch, when the event was published. */
  time: number;
  /** Events dropped for this subscriber since the previous delivered event. */
  missed?: number;
}

/** Module -> host: every event up to and including `seq` has been handled. */
interface Ack {
  t: "ack";
  seq: number;
}

interface Log {
  t: "log";
  level: LogLevel;
  message: string;
  fields?: Record<string, unknown>;
}

export type InvocationKind = "shutdown" | "health" | "cli" | "rpc" | "module_api" | "timer" | "config" | "provider" | "hook" | "inspector";

/** Host -> module. */
interface Invocation {
  t: "invocation";
  id: number;
  kind: InvocationKind;
  params: Record<string, unknown>;
}

interface InvocationResult {
  t: "invocation_result";
  id: number;
  result?: unknown;
  error?: WireError;
}

/** Module -> host: start-up finished; the module is running. */
interface Ready {
  t: "ready";
}

/** Either side, last message before closing on purpose. */
interface Goodbye {
  t: "goodbye";
  error?: WireError;
}

export type HostMessage = Welcome | Response | EventMessage | Invocation | Goodbye;
export type ModuleMessage = Hello | Request | Ack | Log | InvocationResult | Ready | Goodbye;

const LEVELS = new Set<LogLevel>(["debug", "info", "warn", "error"]);

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
const isId = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v > 0;

export class MessageError extends Error {
  constructor(
    message: string,
    /** The correlation id of the offending message, when one could be read. */
    readonly id: number,
    /** Its kind, when it is a known one (an invocation_result's id is not a request id). */
    kind?: string,
  ) {
    super(message);
    this.name = "MessageError";
    if (kind !== undefined) (this as { kind?: string }).kind = kind;
  }

  /** Declared, not defined: no property of an error is undefined (test reporters refuse it). */
  declare readonly kind?: string;
}

function checkError(v: unknown, id: number, kind?: string): void {
  if (v !== undefined && !(isRecord(v) && typeof v.code === "string" && typeof v.message === "string")) {
    throw new MessageError("error must be a map with string code and message", id, kind);
  }
}

/** Validate a decoded body sent by a module. Throws MessageError naming what is wrong. */
export function parseModuleMessage(v: unknown): ModuleMessage {
  if (!isRecord(v) || typeof v.t !== "string") throw new MessageError("a message is a map with a string field t", 0);
  const id = isId(v.id) ? v.id : 0;
  switch (v.t) {
    case "hello":
      if (!Array.isArray(v.protocol) || v.protocol.length !== 2 || !v.protocol.every((n) => Number.isInteger(n) && n >= 0)) {
        throw new MessageError("hello.protocol must be [min, max]", 0);
      }
      if (typeof v.module !== "string" || typeof v.version !== "string") throw new MessageError("hello needs string module and version", 0);
      return v as unknown as Hello;
    case "request":
      if (!isId(v.id)) throw new MessageError("request.id must be a positive integer", 0);
      if (typeof v.method !== "string") throw new MessageError("request.method must be a string", id);
      if (v.method.length > MAX_METHOD_NAME_LENGTH) {
        throw new MessageError(`request.method is ${v.method.length} characters long; method names are at most ${MAX_METHOD_NAME_LENGTH} (docs/protocol.md, section 6)`, id);
      }
      if (v.params === undefined || v.params === null) v.params = {};
      if (!isRecord(v.params)) throw new MessageError("request.params must be a map", id);
      return v as unknown as Request;
    case "ack":
      if (!isId(v.seq)) throw new MessageError("ack.seq must be a positive integer", 0);
      return v as unknown as Ack;
    case "log":
      if (typeof v.level !== "string" || !LEVELS.has(v.level as LogLevel)) throw new MessageError("log.level must be debug, info, warn or error", 0);
      if (typeof v.message !== "string") throw new MessageError("log.message must be a string", 0);
      if (v.fields !== undefined && !isRecord(v.fields)) throw new MessageError("log.fields must be a map", 0);
      return v as unknown as Log;
    case "invocation_result":
      if (!isId(v.id)) throw new MessageError("invocation_result.id must be a positive integer", 0);
      checkError(v.error, id, "invocation_result");
      // The frame allows max_depth (72) for the message around a data value; the result itself,
      // as every data value, has at most 64 (what storage keeps and both runtimes answer).
      if (deeperThan(v.result, MAX_VALUE_DEPTH)) {
        throw new MessageError(`invocation_result.result is nested deeper than ${MAX_VALUE_DEPTH} levels, the most a data value may have (max_depth of a data value, a fixed protocol limit: docs/protocol.md section 3.1); answer with a flatter value`, id, "invocation_result");
      }
      if (isRecord(v.error) && deeperThan(v.error.data, MAX_VALUE_DEPTH)) {
        throw new MessageError(`invocation_result.error.data is nested deeper than ${MAX_VALUE_DEPTH} levels, the most a data value may have (a fixed protocol limit: docs/protocol.md section 3.1); send flatter data`, id, "invocation_result");
      }
      return v as unknown as InvocationResult;
    case "ready":
      return v as unknown as Ready;
    case "goodbye":
      checkError(v.error, 0);
      return v as unknown as Goodbye;
    default:
      throw new MessageError(`unknown message kind "${String(v.t).slice(0, 64)}"`, id);
  }
}

/** Validate a decoded body sent by the host (used by module-side clients). */
export function parseHostMessage(v: unknown): HostMessage {
  if (!isRecord(v) || typeof v.t !== "string") throw new MessageError("a message is a map with a string field t", 0);
  const id = isId(v.id) ? v.id : 0;
  switch (v.t) {
    case "welcome":
      if (typeof v.protocol !== "number" || typeof v.module_id !== "string" || !Array.isArray(v.methods)) {
        throw new MessageError("malformed welcome", 0);
      }
      return v as unknown as Welcome;
    case "response":
      if (typeof v.id !== "number") throw new MessageError("response.id must be a number", 0);
      checkError(v.error, id);
      return v as unknown as Response;
    case "event":
      if (!isId(v.seq) || typeof v.type !== "string") throw new MessageError("event needs seq and type", 0);
      return v as unknown as EventMessage;
    case "invocation":
      if (!isId(v.id) || typeof v.kind !== "string") throw new MessageError("invocation needs id and kind", 0);
      if (v.params === undefined || v.params === null) v.params = {};
      if (!isRecord(v.params)) throw new MessageError("invocation.params must be a map", id);
      return v as unknown as Invocation;
    case "goodbye":
      checkError(v.error, 0);
      return v as unknown as Goodbye;
    default:
      throw new MessageError(`unknown message kind "${String(v.t).slice(0, 64)}"`, id);
  }
}

/** How much of a module's string an error message quotes (MAX_QUOTED_CHARS). */
const MAX_QUOTED_CHARS = 64;

/**
 * A string a module sent, quoted for an error message: its first MAX_QUOTED_CHARS characters
 * and its length. Quoting all of it (JSON.stringify escapes every character) cost the host's
 * loop in proportion to it: 50-70 ms for a 1 MiB tree name of control characters, before
 * wireError cut the message to 4096 characters.
 */
export function quoted(value: unknown, max = MAX_QUOTED_CHARS): string {
  if (typeof value !== "string") return value === null || typeof value !== "object" ? String(value) : Array.isArray(value) ? "an array" : "a map";
  return value.length <= max ? JSON.stringify(value) : `${JSON.stringify(value.slice(0, max))}... (${value.length} characters)`;
}

export function wireError(code: ErrorCode, message: string, data?: unknown): WireError {
  if (message.length > MAX_ERROR_MESSAGE_LENGTH) message = `${message.slice(0, MAX_ERROR_MESSAGE_LENGTH - 40)}... (${message.length} characters, cut)`;
  return data === undefined ? { code, message } : { code, message, data };
}
