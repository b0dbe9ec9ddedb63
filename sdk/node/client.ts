// The TypeScript client for module processes that run outside an isolate: Node-based native
// modules, the isolate hosts, and the tests. It speaks the module protocol over the private
// channel the host hands to every module process (an already-connected socket on fd 3).
//
//   const client = await ModuleClient.connect({ module: "my-module", version: "1.0.0" });
//   const height = await client.request("get_block_height");
//   client.onEvent(async (ev) => { ... });            // sequential; acknowledged after the handler
//   client.onInvocation("shutdown", async () => { ... });
//   await client.subscribe(["NewBlock"]);
//   client.ready();

import net from "node:net";
import type { Duplex } from "node:stream";
import { FrameChannel, MODULE_SIDE } from "../../protocol/channel.ts";
import { EncodeError } from "../../protocol/codec.ts";
import {
  MessageError, parseHostMessage, PROTOCOL_VERSION,
  type EventMessage, type HostMessage, type InvocationKind, type LogLevel, type Welcome, type WireError,
} from "../../protocol/messages.ts";

export class RequestError extends Error {
  readonly code: WireError["code"];
  readonly data: unknown;
  constructor(readonly method: string, wire: WireError) {
    super(wire.message);
    this.name = "RequestError";
    this.code = wire.code;
    this.data = wire.data;
  }
}

export interface ConnectOptions {
  module: string;
  version: string;
  sdk?: string;
  /** An already-connected socket; defaults to fd 3 (or $MODHOST_FD). */
  socket?: Duplex;
  /** A channel already reading `socket` (the isolate host of a pooled process read its hand-over on it first). */
  channel?: FrameChannel;
  handshakeTimeoutMs?: number;
}

export type EventHandler = (event: EventMessage) => void | Promise<void>;
/** Gets every event queued so far (at most MAX_EVENT_BATCH), in order; one ack follows for all. */
export type EventBatchHandler = (events: EventMessage[]) => void | Promise<void>;

/** Most events handed to an EventBatchHandler at once. */
const MAX_EVENT_BATCH = 256;
/** Longest error message sent back for a failed invocation; the rest is cut (and said so). */
const MAX_ERROR_MESSAGE_CHARS = 4096;

/** The answer to invocation `id` whose handler threw or rejected with `err`. */
function failed(id: number, err: unknown): object {
  const e = err as { code?: unknown; message?: unknown };
  return { t: "invocation_result", id, error: { code: typeof e?.code === "string" ? e.code : "module_error", message: cutText(String(e?.message ?? err)) } };
}

/** `text`, cut to `max` characters with a note saying how much went. */
function cutText(text: string, max = MAX_ERROR_MESSAGE_CHARS): string {
  return text.length <= max ? text : `${text.slice(0, max)} ... [${text.length - max} more characters cut]`;
}
export type InvocationHandler = (params: Record<string, unknown>) => unknown | Promise<unknown>;

/**
 * Gets the answer to a request sent with requestEach: the caller's `tag` back, and the error
 * (RequestError from the host, the channel's EncodeError when it could not be sent) or the result.
 */
export type AnswerSink = (tag: number, error: Error | undefined, value: unknown) => void;

/** A request waiting for its answer: handed to `sink` (requestEach), or settling request()'s promise. */
interface Pending {
  method: string;
  tag: number;
  sink: AnswerSink | undefined;
  resolve: ((value: unknown) => void) | undefined;
  reject: ((error: Error) => void) | undefined;
}

/** Settle a pending request with its answer. */
function settle(p: Pending, error: Error | undefined, value: unknown): void {
  if (p.sink) p.sink(p.tag, error, value);
  else if (error) p.reject!(error);
  else p.resolve!(value);
}

export class ModuleClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private eventHandler: EventBatchHandler | undefined;
  private readonly eventQueue: EventMessage[] = [];
  private draining = false;
  private readonly invocationHandlers = new Map<string, InvocationHandler>();
  private closeListeners: Array<(err?: Error) => void> = [];
  /** Error responses that could not be matched to a request (id 0). */
  readonly unmatchedErrors: WireError[] = [];

  private constructor(readonly channel: FrameChannel, readonly welcome: Welcome) {
    channel.on("message", (body) => this.onMessage(body));
    channel.on("close", (err) => {
      for (const p of this.pending.values()) settle(p, new RequestError(p.method, { code: "unavailable", message: `connection closed${err ? `: ${err.message}` : ""}` }), undefined);
      this.pending.clear();
      for (const l of this.closeListeners) l(err);
    });
  }

  static async connect(opts: ConnectOptions): Promise<ModuleClient> {
    const socket = opts.socket ?? new net.Socket({ fd: Number(process.env.MODHOST_FD ?? 3), readable: true, writable: true });
    const channel = opts.channel ?? new FrameChannel(socket, MODULE_SIDE);
    const welcome = await new Promise<Welcome>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no welcome from the host")), opts.handshakeTimeoutMs ?? 10000);
      const done = (fn: () => void) => {
        clearTimeout(timer);
        channel.off("message", onMessage);
        channel.off("close", onClose);
        fn();
      };
      const onMessage = (body: unknown) => {
        let msg: HostMessage;
        try {
          msg = parseHostMessage(body);
        } catch (err) {
          done(() => reject(err));
          return;
        }
        if (msg.t === "welcome") done(() => resolve(msg));
        else if (msg.t === "goodbye") done(() => reject(new Error(`host refused the handshake: ${msg.error?.message ?? "no reason given"}`)));
      };
      const onClose = (err?: Error) => done(() => reject(err ?? new Error("connection closed during the handshake")));
      channel.on("message", onMessage);
      channel.on("close", onClose);
      channel.send({ t: "hello", protocol: [1, PROTOCOL_VERSION], module: opts.module, version: opts.version, sdk: opts.sdk ?? "modhost-node" });
    });
    return new ModuleClient(channel, welcome);
  }

  /** Call a host method. Rejects with RequestError (code + message) when it fails. */
  request(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    // A closed channel drops what is sent, and no answer would ever come.
    if (this.channel.isClosed) return Promise.reject(new RequestError(method, { code: "unavailable", message: "connection closed" }));
    // The promise's own resolve and reject wait in `pending`: no answer closure per request.
    return new Promise((resolve, reject) => this.send(method, params, { method, tag: 0, sink: undefined, resolve, reject }));
  }

  /**
   * Call a host method, with the answer handed to `sink` (with `tag`) instead of a promise:
   * for a caller that sends many requests at once and routes every answer through one
   * function (the isolate host, for the calls of one turn of its module), no promise and no
   * closure per request. The requests of one turn of the event loop leave in one write (the
   * channel coalesces them) and each is still checked, limited and answered on its own.
   * A request that cannot be sent (larger than a frame, not plain data: the channel's
   * EncodeError) or sent on a closed connection is answered at once, with that error.
   */
  requestEach(method: string, params: Record<string, unknown>, tag: number, sink: AnswerSink): void {
    this.send(method, params, { method, tag, sink, resolve: undefined, reject: undefined });
  }

  /**
   * requestEach with params already encoded as a MessagePack map (the isolate host's storage
   * transactions, encoded inside the isolate): put in the frame as they are. The host decodes
   * them with every limit of the protocol and refuses a frame that breaks one (invalid_message).
   */
  requestEachEncoded(method: string, params: Buffer, tag: number, sink: AnswerSink): void {
    this.send(method, params, { method, tag, sink, resolve: undefined, reject: undefined });
  }

  /** Bytes sent on the channel and not yet handed to the kernel. */
  get unsentBytes(): number {
    return this.channel.unsentBytes;
  }

  private send(method: string, params: Record<string, unknown> | Buffer, p: Pending): void {
    if (this.channel.isClosed) {
      settle(p, new RequestError(method, { code: "unavailable", message: "connection closed" }), undefined);
      return;
    }
    const id = this.nextId++;
    this.pending.set(id, p);
    try {
      if (params instanceof Buffer) this.channel.sendEncoded({ t: "request", id, method }, "params", params);
      else this.channel.send({ t: "request", id, method, params });
    } catch (err) {
      this.pending.delete(id);
      settle(p, err as Error, undefined);
    }
  }

  subscribe(types: string[]): Promise<unknown> {
    return this.request("subscribe_events", { types });
  }

  /** The host keeps the first 8,192 characters of a message: only those are sent (more than 1 MiB would be refused, max_total_string_bytes). */
  log(level: LogLevel, message: string, fields?: Record<string, unknown>): void {
    this.channel.send({ t: "log", level, message: message.length > 8192 ? message.slice(0, 8192) : message, ...(fields ? { fields } : {}) });
  }

  /** Tell the host start-up is complete. */
  ready(): void {
    this.channel.send({ t: "ready" });
  }

  /** Events are handed to `handler` one at a time, in order, and acknowledged after it returns. */
  onEvent(handler: EventHandler): void {
    this.eventHandler = async (events) => {
      for (const ev of events) {
        try {
          await handler(ev);
        } catch (err) {
          this.log("error", cutText(`event handler failed for ${ev.type}: ${(err as Error)?.message ?? String(err)}`));
        }
        // Acknowledged one by one: a slow handler frees the host's window as it goes.
        if (!this.channel.isClosed) this.channel.send({ t: "ack", seq: ev.seq });
      }
    };
    void this.drainEvents();
  }

  /**
   * Events are handed to `handler` in batches: every event that has arrived (up to
   * MAX_EVENT_BATCH) at once, in order, one batch at a time, and acknowledged together (one
   * cumulative ack) after it returns. Cheaper than onEvent when the handler crosses into
   * something costly per call (an isolate).
   */
  onEvents(handler: EventBatchHandler): void {
    this.eventHandler = async (events) => {
      try {
        await handler(events);
      } catch (err) {
        this.log("error", cutText(`event handler failed for a batch of ${events.length} events: ${(err as Error)?.message ?? String(err)}`));
      }
      if (!this.channel.isClosed) this.channel.send({ t: "ack", seq: events[events.length - 1]!.seq });
    };
    void this.drainEvents();
  }

  onInvocation(kind: InvocationKind, handler: InvocationHandler): void {
    this.invocationHandlers.set(kind, handler);
  }

  onClose(listener: (err?: Error) => void): void {
    this.closeListeners.push(listener);
  }

  close(): void {
    this.channel.close();
  }

  /** Say goodbye (optionally with an error) and close once it is flushed. */
  goodbye(error?: WireError): void {
    this.channel.closeAfter({ t: "goodbye", ...(error ? { error } : {}) });
  }

  private onMessage(body: unknown): void {
    let msg: HostMessage;
    try {
      msg = parseHostMessage(body);
    } catch (err) {
      if (err instanceof MessageError) this.log("warn", `ignored a malformed message from the host: ${err.message}`);
      return;
    }
    switch (msg.t) {
      case "response": {
        const p = this.pending.get(msg.id);
        if (!p) {
          if (msg.error) this.unmatchedErrors.push(msg.error);
          return;
        }
        this.pending.delete(msg.id);
        settle(p, msg.error ? new RequestError(p.method, msg.error) : undefined, msg.error ? undefined : (msg.result ?? null));
        break;
      }
      case "event":
        this.eventQueue.push(msg);
        void this.drainEvents();
        break;
      case "invocation":
        this.answer(msg.id, msg.kind, msg.params);
        break;
      case "goodbye":
        this.channel.close(msg.error ? new Error(msg.error.message) : undefined);
        break;
      case "welcome":
        break;
    }
  }

  private async drainEvents(): Promise<void> {
    if (this.draining || !this.eventHandler) return;
    this.draining = true;
    try {
      while (this.eventQueue.length > 0 && this.eventHandler) {
        const batch = this.eventQueue.splice(0, MAX_EVENT_BATCH);
        await this.eventHandler(batch);
      }
    } finally {
      this.draining = false;
    }
  }

  /**
   * Run the handler of an invocation and send its answer: at once when the handler returns a
   * value, when its promise settles otherwise (a handler that returns a value no longer waits a
   * microtask turn, and no promise is made for it).
   */
  private answer(id: number, kind: string, params: Record<string, unknown>): void {
    const handler = this.invocationHandlers.get(kind);
    if (!handler) {
      this.reply(id, kind, kind === "health"
        ? { t: "invocation_result", id, result: { status: "ok" } }
        : { t: "invocation_result", id, error: { code: "unknown_method", message: `this module does not handle ${kind} invocations` } });
      return;
    }
    let out: unknown;
    let later: Promise<unknown> | undefined;
    try {
      out = handler(params);
      // What `await` did: any thenable, adopted through a promise (a `then` getter that throws included).
      if (out !== null && (typeof out === "object" || typeof out === "function") && typeof (out as { then?: unknown }).then === "function") later = Promise.resolve(out);
    } catch (err) {
      this.reply(id, kind, failed(id, err));
      return;
    }
    if (later) {
      later.then(
        (value) => this.reply(id, kind, { t: "invocation_result", id, result: value ?? null }),
        (err: unknown) => this.reply(id, kind, failed(id, err)),
      );
      return;
    }
    this.reply(id, kind, { t: "invocation_result", id, result: out ?? null });
  }

  /** Send the answer to invocation `id`, or the error saying why it cannot be sent. */
  private reply(id: number, kind: string, reply: object): void {
    if (this.channel.isClosed) return;
    try {
      this.channel.send(reply);
    } catch (err) {
      // An answer that cannot be sent (larger than a frame, a value the codec cannot write, a
      // cycle) is the caller's error, not the end of this process.
      // The channel and the codec say which (EncodeError's code); anything else is not plain data.
      const tooLarge = err instanceof EncodeError ? err.code === "result_too_large" : false;
      this.channel.send({
        t: "invocation_result", id,
        error: tooLarge
          ? { code: "result_too_large", message: cutText(`the answer to this ${kind} invocation could not be sent: ${(err as Error).message}; answer with less`) }
          : { code: "not_plain_data", message: cutText(`the answer to this ${kind} invocation could not be encoded (${(err as Error)?.message ?? String(err)}); answer with plain data (no cycles, functions or class instances)`) },
      });
    }
  }
}
