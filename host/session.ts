// The host's side of one module connection. It runs the handshake, serves the module's
// requests through the API hub (many in flight, answered in any order), delivers events from
// the bus with flow control, forwards the module's logs, and carries invocations (host ->
// module calls such as shutdown and health) with their own correlation ids.
//
// A request that fails gets an error response and the connection stays open. Only a framing
// error, or a module that breaks the handshake, closes it.

import { EventEmitter } from "node:events";
import type { FrameChannel } from "../protocol/channel.ts";
import { EncodeError } from "../protocol/codec.ts";
import {
  MessageError, MIN_PROTOCOL_VERSION, parseModuleMessage, PROTOCOL_VERSION, wireError,
  type Hello, type InvocationKind, type ModuleMessage, type WireError,
} from "../protocol/messages.ts";
import { HubError, type ApiHub } from "./hub.ts";
import type { EventBus, Subscription } from "./events/bus.ts";
import type { CallContext, HostServices } from "../capabilities/types.ts";
import { describeGrants, type EffectiveGrants } from "../capabilities/grants.ts";
import type { Logger } from "./log.ts";
import { HOST_VERSION } from "./version.ts";
import { spawnModuleProcess, type ModuleProcess, type SpawnSpec } from "../runtime/process.ts";

export interface SessionOptions {
  module: string;
  grants: EffectiveGrants;
  hub: ApiHub;
  bus: EventBus;
  logger: Logger;
  /** Context bound to this module; the session adds events and log (and services if absent). */
  call: Omit<CallContext, "events" | "log" | "services"> & { services?: HostServices };
  eventWindow?: number;
  eventQueue?: number;
  handshakeTimeoutMs?: number;
  /** Requests a module may have in flight before further ones are refused. */
  maxInFlight?: number;
  /** Events to replay to a module that subscribes to `type` (ModuleLoaded for loaded modules). */
  replay?: (type: string) => Array<{ type: string; payload: unknown }>;
}

export class InvocationError extends Error {
  constructor(readonly wire: WireError) {
    super(wire.message);
    this.name = "InvocationError";
  }
}

interface PendingInvocation {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class HostSession extends EventEmitter<{ ready: []; closed: [error?: Error] }> {
  readonly handshake: Promise<Hello>;
  readonly ready: Promise<void>;
  private resolveHello!: (h: Hello) => void;
  private rejectHello!: (e: Error) => void;
  private resolveReady!: () => void;
  private rejectReady!: (e: Error) => void;
  private state: "handshake" | "open" | "closed" = "handshake";
  private readonly pending = new Map<number, PendingInvocation>();
  private nextInvocation = 1;
  private inFlight = 0;
  private readonly subscription: Subscription;
  private readonly call: CallContext;
  private readonly handshakeTimer: NodeJS.Timeout;
  closeError: Error | undefined;
  /** Requests served and refused, for health and metrics. */
  readonly stats = { requests: 0, errors: 0, denied: 0 };

  constructor(private readonly channel: FrameChannel, private readonly opts: SessionOptions) {
    super();
    this.handshake = new Promise((res, rej) => ((this.resolveHello = res), (this.rejectHello = rej)));
    this.ready = new Promise((res, rej) => ((this.resolveReady = res), (this.rejectReady = rej)));
    // Nobody may be waiting on these yet; a rejection is still reported through `closed`.
    this.handshake.catch(() => {});
    this.ready.catch(() => {});

    this.subscription = opts.bus.subscribe(
      opts.module,
      (ev) => this.deliver(ev),
      { window: opts.eventWindow ?? 64, queueLimit: opts.eventQueue ?? 1024 },
    );
    this.call = {
      ...opts.call,
      services: opts.call.services ?? { publish: (type, payload) => (opts.bus.publish(type, payload), true) },
      events: {
        subscribe: (types) => this.subscribe(types),
        unsubscribe: (types) => {
          for (const t of types) this.subscription.types.delete(t);
          return [...this.subscription.types];
        },
        subscribed: () => [...this.subscription.types],
      },
      log: (level, message, fields) => opts.logger.module(opts.module).log(level, message, fields),
    };

    this.handshakeTimer = setTimeout(
      () => this.fail(wireError("protocol_error", `no hello within ${opts.handshakeTimeoutMs ?? 10000} ms`)),
      opts.handshakeTimeoutMs ?? 10000,
    );
    this.handshakeTimer.unref();
    channel.on("message", (body) => this.onMessage(body));
    channel.on("bad_body", (err, envelope) => this.refused(err.message, envelope.id ?? 0, envelope.t));
    channel.on("close", (err) => this.onClose(err));
  }

  get module(): string {
    return this.opts.module;
  }

  /** New effective grants (the operator changed them); checked from the next request on. */
  setGrants(grants: EffectiveGrants): void {
    this.opts.grants = grants;
  }

  get grants(): EffectiveGrants {
    return this.opts.grants;
  }

  /** New configuration: served by get_config from now on and pushed with a config invocation. */
  async setConfig(config: Record<string, unknown>, timeoutMs: number): Promise<void> {
    (this.call as { config: Readonly<Record<string, unknown>> }).config = config;
    await this.invoke("config", { config }, timeoutMs);
  }

  /** Events that could not be encoded for this module, counted into the next one's `missed`. */
  private undeliverable = 0;

  private deliver(ev: { seq: number; type: string; payload: unknown; time: number; missed?: number }): void {
    const missed = (ev.missed ?? 0) + this.undeliverable;
    try {
      this.channel.send({ t: "event", seq: ev.seq, type: ev.type, payload: ev.payload, time: ev.time, ...(missed ? { missed } : {}) });
      this.undeliverable = 0;
    } catch (err) {
      // A payload over this module's body limits (or not plain data) must not break delivery to
      // the other subscribers, which a throw here would: skip it, and count it as missed.
      if (!(err instanceof EncodeError)) throw err;
      this.undeliverable = missed + 1;
      this.opts.logger.log("warn", "host", `event ${ev.type} #${ev.seq} not delivered to ${this.opts.module}: ${err.message}`);
    }
  }

  private subscribe(types: string[]): string[] {
    for (const t of types) {
      if (this.subscription.types.has(t)) continue;
      this.subscription.types.add(t);
      for (const ev of this.opts.replay?.(t) ?? []) this.subscription.offer(ev.type, ev.payload, Date.now());
    }
    return [...this.subscription.types];
  }

  private onMessage(body: unknown): void {
    // After a refusal (or any close) nothing more is read: frames already on the wire behind a
    // bad first message must not be served while the goodbye is flushed.
    if (this.state === "closed") return;
    let msg: ModuleMessage;
    try {
      msg = parseModuleMessage(body);
    } catch (err) {
      const e = err as MessageError;
      this.refused(e.message, e.id ?? 0, e.kind);
      return;
    }
    if (this.state === "handshake") {
      if (msg.t !== "hello") {
        this.fail(wireError("protocol_error", `expected hello as the first message, got ${msg.t}`));
        return;
      }
      this.onHello(msg);
      return;
    }
    switch (msg.t) {
      case "request":
        void this.serve(msg.id, msg.method, msg.params);
        break;
      case "ack":
        this.subscription.ack(msg.seq);
        break;
      case "log":
        this.onLog(msg.level, msg.message, msg.fields);
        break;
      case "invocation_result": {
        const p = this.pending.get(msg.id);
        if (!p) return; // late answer to an invocation that already timed out
        this.pending.delete(msg.id);
        clearTimeout(p.timer);
        if (msg.error) p.reject(new InvocationError(msg.error));
        else p.resolve(msg.result ?? null);
        break;
      }
      case "ready":
        this.resolveReady();
        this.emit("ready");
        break;
      case "goodbye":
        this.close(msg.error ? new Error(`module said goodbye: ${msg.error.message}`) : undefined);
        break;
      case "hello":
        this.replyError(0, wireError("protocol_error", "hello was already received"));
        break;
    }
  }

  /**
   * A message that could not be accepted. Every request is answered with its own id (read
   * from the envelope even when the rest was refused) so that the module's call settles; a
   * refused invocation_result fails the invocation waiting for it at once.
   */
  private refused(reason: string, id: number, kind: string | undefined): void {
    if (this.state === "closed") return;
    if (kind === "invocation_result") {
      const p = this.pending.get(id);
      if (p) {
        this.pending.delete(id);
        clearTimeout(p.timer);
        p.reject(new InvocationError(wireError("invalid_message", `the module's invocation_result was refused: ${reason}`)));
      }
      id = 0; // not a request id: the module still hears why, as a response to no request
    }
    this.replyError(id, wireError("invalid_message", reason));
  }

  private onHello(hello: Hello): void {
    clearTimeout(this.handshakeTimer);
    if (hello.module !== this.opts.module) {
      // The channel is private to one module: a module cannot claim to be another.
      this.fail(wireError("protocol_error", `this channel belongs to module "${this.opts.module}", not "${hello.module}"`));
      return;
    }
    const [min, max] = hello.protocol;
    const version = Math.min(max, PROTOCOL_VERSION);
    if (version < Math.max(min, MIN_PROTOCOL_VERSION)) {
      this.fail(wireError("protocol_error", `no common protocol version: module speaks ${min}..${max}, host speaks ${MIN_PROTOCOL_VERSION}..${PROTOCOL_VERSION}`));
      return;
    }
    this.state = "open";
    this.channel.send({
      t: "welcome",
      protocol: version,
      host: `modhost/${HOST_VERSION}`,
      module_id: this.opts.module,
      grants: describeGrants(this.opts.grants),
      methods: this.opts.hub.methodsFor(this.opts.grants),
      config: this.opts.call.config,
      data_dir: this.opts.call.dataDir,
      event_window: this.opts.eventWindow ?? 64,
      max_frame_bytes: this.channel.maxFrameBytes,
    });
    this.resolveHello(hello);
  }

  private onLog(level: "debug" | "info" | "warn" | "error", message: string, fields?: Record<string, unknown>): void {
    // Escaped, cut and held to the module's log byte budget (host/log.ts ModuleLog).
    this.opts.logger.module(this.opts.module).log(level, message, fields);
  }

  private async serve(id: number, method: string, params: Record<string, unknown>): Promise<void> {
    this.stats.requests++;
    const max = this.opts.maxInFlight ?? 1024;
    if (this.inFlight >= max) {
      this.stats.errors++;
      this.replyError(id, wireError("unavailable", `more than ${max} requests in flight; wait for answers before sending more`));
      return;
    }
    this.inFlight++;
    try {
      const result = await this.opts.hub.handle(this.call, this.opts.grants, method, params);
      this.channel.send({ t: "response", id, result: result ?? null });
    } catch (err) {
      this.stats.errors++;
      let wire: WireError;
      if (err instanceof HubError) {
        wire = err.wire;
      } else if (err instanceof EncodeError) {
        // The answer cannot be sent (too large for a frame or the protocol limits, a wide
        // storage_iter, say; or not plain data): say so, and how to get it, not "internal error".
        wire = wireError(err.code, `${method}: the result cannot be sent: ${err.message}${err.code === "result_too_large" ? "; ask for less at a time, e.g. with a smaller limit" : ""}`);
      } else {
        this.opts.logger.log("error", "host", `serving ${method} for ${this.opts.module} failed: ${(err as Error)?.stack ?? String(err)}`);
        wire = wireError("internal", "internal error");
      }
      if (wire.code === "permission_denied") this.stats.denied++;
      this.replyError(id, wire);
    } finally {
      this.inFlight--;
    }
  }

  private replyError(id: number, error: WireError): void {
    try {
      this.channel.send({ t: "response", id, error });
    } catch {
      // A result too large for a frame, or a closed channel: nothing more to say.
    }
  }

  /** Call into the module; rejects with InvocationError on an error result or a timeout. */
  invoke(kind: InvocationKind, params: Record<string, unknown>, timeoutMs: number): Promise<unknown> {
    if (this.state !== "open") return Promise.reject(new InvocationError(wireError("unavailable", `module ${this.opts.module} is not connected`)));
    const id = this.nextInvocation++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new InvocationError(wireError("timeout", `${kind} invocation of ${this.opts.module} did not answer within ${timeoutMs} ms`)));
      }, timeoutMs);
      timer.unref();
      this.pending.set(id, { resolve, reject, timer });
      this.channel.send({ t: "invocation", id, kind, params });
    });
  }

  /** Refuse the module: tell it why, then close. */
  private fail(error: WireError): void {
    this.channel.closeAfter({ t: "goodbye", error });
    this.onClose(new Error(error.message));
  }

  close(error?: Error): void {
    this.channel.close(error);
    this.onClose(error);
  }

  private onClose(error?: Error): void {
    if (this.state === "closed") return;
    this.state = "closed";
    this.closeError = error;
    clearTimeout(this.handshakeTimer);
    this.subscription.close();
    const reason = error ?? new Error("connection closed");
    this.rejectHello(reason);
    this.rejectReady(reason);
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new InvocationError(wireError("unavailable", `module ${this.opts.module} disconnected`)));
    }
    this.pending.clear();
    this.emit("closed", error);
  }

  get isOpen(): boolean {
    return this.state === "open";
  }

  get eventStats(): { pending: number; inFlight: number; dropped: number; delivered: number } {
    const s = this.subscription;
    return { pending: s.pending, inFlight: s.inFlight, dropped: s.droppedTotal, delivered: s.deliveredTotal };
  }
}

/** Start a module process served by a HostSession (runtime/process.ts does the process side). */
export function spawnModule(spec: SpawnSpec, options: SessionOptions, logger: Logger): ModuleProcess<HostSession> {
  return spawnModuleProcess(spec, options.module, (channel) => new HostSession(channel, options), logger.module(options.module));
}
