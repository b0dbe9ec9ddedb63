// One file: one connection's state machine (handshake, requests, events with flow control,
// invocations) shares one channel and its counters, checked in the order a frame arrives.
//
// The host's side of one module connection. It runs the handshake, serves the module's
// requests through the API hub (many in flight, answered in any order), delivers events from
// the bus with flow control, forwards the module's logs, and carries invocations (host ->
// module calls such as shutdown and health) with their own correlation ids.
//
// A request that fails gets an error response and the connection stays open. Only a framing
// error, or a module that breaks the handshake, closes it.

import { AsyncResource } from "node:async_hooks";
import { EventEmitter, setMaxListeners } from "node:events";
import { performance } from "node:perf_hooks";
import type { FrameChannel } from "../protocol/channel.ts";
import { EncodeError } from "../protocol/codec.ts";
import { FramingError } from "../protocol/frame.ts";
import {
  type MessageError, MIN_PROTOCOL_VERSION, parseModuleMessage, PROTOCOL_VERSION, wireError,
  type Hello, type InvocationKind, type ModuleMessage, type WireError,
} from "../protocol/messages.ts";
import { HubError, type ApiHub } from "./hub.ts";
import type { BusEvent, EventBus, Subscription } from "./events/bus.ts";
import { CapabilityError, type CallContext, type HostServices } from "../capabilities/types.ts";
import { describeGrants, type EffectiveGrants } from "../capabilities/grants.ts";
import type { Logger } from "./log.ts";
import { HOST_VERSION } from "./version.ts";
import { moduleScope, spawnModuleProcess, type ModuleProcess, type SpawnSpec, type StartedChild } from "../runtime/process.ts";
import { DEFAULT_LIMITS, type Limits } from "./config.ts";
import { sliceAccount } from "../chain/slices.ts";
import { hostTurn } from "../runtime/turn.ts";
import { hostBytes, type HeldAccount } from "../protocol/host-bytes.ts";
import { answerForVersion } from "./older-protocol.ts";
import { answerBound, RELAYED_ANSWERS, SMALL_ANSWER_BYTES, type AnswerBoundLimits } from "../capabilities/answer-bounds.ts";

/**
 * What one module may make the host do for it (its fair share). Requests beyond the first
 * three limits are not refused: they wait, and while one waits the host stops reading the
 * module's socket, so the kernel holds the rest and the module's own writes block. A flood
 * therefore shows up as the flooding module's own latency, never as another module's.
 */
export interface FlowLimits {
  /** Requests served at once (config: max_requests_in_flight). */
  maxInFlight: number;
  /** Requests admitted per second, with a burst of one second's worth (requests_per_second). */
  requestsPerSecond: number;
  /**
   * Host CPU time per second spent serving this module (host_cpu_ms_per_s): the synchronous
   * time of each request's dispatch (validation, the handler's synchronous part) and of
   * encoding its answer, measured with performance.now(). A leaky bucket: the debt drains at
   * this rate, and while it is above one second's worth no new request is admitted.
   */
  hostCpuMsPerS: number;
  /** Longest the host works on one request before answering `timeout` (request_timeout_ms). */
  requestTimeoutMs: number;
  /** Event types subscribed at once (max_subscriptions). */
  maxSubscriptions: number;
  /**
   * Bytes sent to the module and not read by it (max_unread_bytes). Each admitted request
   * reserves the most bytes its answer can take (capabilities/answer-bounds.ts) until it is
   * answered, and a request whose reservation does not fit waits: sent-and-unread plus reserved
   * stays within this. What waits for the module passes it by at most one answer, one
   * invocation and the reservations that land after it, and its event window (unreadBound).
   * Answers relayed from other modules neither wait nor hold back the module's other requests;
   * they are held to what the module has not read when they arrive, like invocations (answer()).
   */
  maxUnreadBytes: number;
  /**
   * Bytes of the module's requests being served (each its frame's body size: its params stay in
   * the host until it is answered), max_request_bytes_in_flight. A request larger than
   * SMALL_REQUEST_BYTES waits while it does not fit beside those being served (one is served
   * whatever its size when none is); smaller ones are counted but never wait, so what the host
   * holds stays within this + SMALL_REQUEST_BYTES × maxInFlight.
   */
  maxRequestBytes: number;
  /** The module's storage_iter_max_bytes: what bounds a storage_iter answer. */
  storageIterMaxBytes: number;
  /**
   * Invocations made for one other module (its module calls, its provider calls, the hooks its
   * transactions and templates run) waiting for this module's answers at once, counted by that
   * module's name (max_calls_per_caller); past it that module's next call to this one is refused
   * at once, so that one caller, whatever its max_requests_in_flight, leaves the others places
   * among MAX_PENDING_INVOCATIONS. Each is given up when the calling instance ends
   * (InvokeFor.instance). Before both, modules that sent their calls and crashed, at every
   * restart, filled the MAX_PENDING_INVOCATIONS of the module they called (four under the
   * restart and quarantine defaults: 20 instances of 64 calls each, long after they had ended)
   * and every other call to it, JSON-RPC, module or timer, was refused until theirs timed out
   * (up to 60 s).
   */
  maxCallsPerCaller: number;
  /**
   * JSON-RPC (and CLI) calls of this module's methods, and the rpc_dispatch hook calls made for
   * them, waiting for its answers at once, from all clients together (max_rpc_calls): past it the
   * next is refused at once, so that clients (a batch of 1,000 calls of a method that takes its
   * time, say) leave the module's other callers (modules, hooks, timers, health checks) places
   * among MAX_PENDING_INVOCATIONS. Before, two such batches took all 1,024 places for up to
   * call_timeout_ms, and the module's health checks were refused.
   */
  maxRpcCalls: number;
}

/** The session's limits from a module's configured limits. */
export function flowLimits(l: Limits): FlowLimits {
  return {
    maxInFlight: l.max_requests_in_flight,
    requestsPerSecond: l.requests_per_second,
    hostCpuMsPerS: l.host_cpu_ms_per_s,
    requestTimeoutMs: l.request_timeout_ms,
    maxSubscriptions: l.max_subscriptions,
    maxUnreadBytes: l.max_unread_bytes,
    maxRequestBytes: l.max_request_bytes_in_flight,
    storageIterMaxBytes: l.storage_iter_max_bytes,
    maxCallsPerCaller: l.max_calls_per_caller,
    maxRpcCalls: l.max_rpc_calls,
  };
}

const DEFAULT_FLOW: FlowLimits = Object.freeze(flowLimits(DEFAULT_LIMITS));

/** How long a module may stay over max_unread_bytes before it is disconnected. */
const UNREAD_GRACE_MS = 5000;

/**
 * Invocations (host -> module calls) waiting for the module's answer at once; past it a new one
 * is refused at once (each holds a promise, a timer and its caller; the callers, such as the
 * JSON-RPC server, have their own limits, but timers and events of many sources add up).
 */
const MAX_PENDING_INVOCATIONS = 1024;

/** A module held back by a limit is told to the operator at most this often per limit. */
const THROTTLE_LOG_MS = 10_000;

const LIMIT_TEXT = {
  in_flight: (f: FlowLimits) => `max_requests_in_flight (${f.maxInFlight} requests at once)`,
  rate: (f: FlowLimits) => `requests_per_second (${f.requestsPerSecond})`,
  cpu: (f: FlowLimits) => `host_cpu_ms_per_s (${f.hostCpuMsPerS} ms of host CPU time per second)`,
  congested: () => "the module to read what the host already sent",
  unread: (f: FlowLimits) => `max_unread_bytes (${f.maxUnreadBytes} bytes sent and not read, or reserved for the answers of its requests being served)`,
  request_bytes: (f: FlowLimits) => `max_request_bytes_in_flight (${f.maxRequestBytes} bytes of its requests being served)`,
  host_bytes: () => `[host] module_bytes_mb (${hostBytes.cap} bytes for all modules together: the host holds more than half of it and this module more than its fair part, ${hostBytes.cap / 2} / ${hostBytes.accounts} accounts)`,
} as const;

/**
 * A module's own reason for leaving (goodbye) is cut at this many characters: it becomes the
 * crash reason in the host's log lines, the audit record, ModuleCrashed and `modhost list`,
 * none of which is charged to the module's log budget, and a crash loop repeats it. The
 * message of an invocation's error answer is cut the same way: it is passed on to whoever
 * asked (a JSON-RPC client, `modhost health` for every module at once, a calling module).
 */
const MAX_GOODBYE_CHARS = 4096;

function cutReason(message: string): string {
  return message.length <= MAX_GOODBYE_CHARS ? message : `${message.slice(0, MAX_GOODBYE_CHARS)}... (${message.length - MAX_GOODBYE_CHARS} more characters cut)`;
}

/**
 * An event as sent: a module event's payload is at most 64 KiB (capabilities/events.ts, as the
 * codec estimates it), the host's carry hashes, heights and counts (a ChainReorg ~70 bytes per
 * block of the reorganisation, at most max_blocks_per_call of the embedded chain).
 */
const EVENT_BYTES_BOUND = 128 * 1024;

type Limit = "in_flight" | "rate" | "cpu" | "congested" | "unread" | "request_bytes" | "host_bytes";

/** Safety net: requests decoded from chunks already read while the module waits (one socket read holds a few thousand at most). */
const MAX_BACKLOG = 8192;

/** A request body up to this size never waits for max_request_bytes_in_flight (FlowLimits.maxRequestBytes). */
const SMALL_REQUEST_BYTES = 64 * 1024;

interface WaitingRequest {
  id: number;
  method: string;
  params: Record<string, unknown>;
  /**
   * A refusal to send instead of serving (a message that could not be accepted): it waits for
   * the module's share like a request, so that a flood of refused frames from a module that
   * never reads its answers cannot pile them up in the host.
   */
  refusal?: WireError;
  /** The most bytes its answer can take (capabilities/answer-bounds.ts), reserved while it is served. */
  reserve: number;
  /** Its frame's body size: held in the host (its params) until it is answered. */
  bytes: number;
  /**
   * Its answer is another module's (RELAYED_ANSWERS): reserved, but it does not wait for room
   * (a call chain A -> B -> A would wait for its own reservation); its answer is sent only while
   * what the module has not read is within max_unread_bytes, else it is refused.
   */
  relayed?: boolean;
}

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
  /** Bytes of event payloads queued for the module before the oldest are dropped (event_queue_bytes). */
  eventQueueBytes?: number;
  handshakeTimeoutMs?: number;
  /** Requests a module may have in flight before further ones wait (overrides flow.maxInFlight). */
  maxInFlight?: number;
  /** Fair-share limits (DEFAULT_FLOW for what is not given). */
  flow?: Partial<FlowLimits>;
  /** Events to replay to a module that subscribes to `type` (ModuleLoaded for loaded modules). */
  replay?: (type: string) => Array<{ type: string; payload: unknown }>;
}

export class InvocationError extends Error {
  constructor(readonly wire: WireError) {
    super(wire.message);
    this.name = "InvocationError";
  }
}

/** A request being served: what its deadline (request_timeout_ms) needs. */
interface Serving {
  id: number;
  method: string;
  /** performance.now() past which it is answered `timeout`. */
  deadline: number;
  timedOut: boolean;
}

interface PendingInvocation {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  /** The module it is made on behalf of (counted in `byCaller`). */
  caller?: string;
  /** Stops watching the calling instance's end (InvokeFor.instance). */
  detach?: () => void;
}

/** Whom an invocation is made for: a module (by name), and the instance of it that waits. */
export interface InvokeFor {
  /** A module's name, or JSON_RPC_CALLER for the JSON-RPC clients together. */
  caller: string;
  /**
   * What waits for the answer (the calling module's session, a JSON-RPC client's request):
   * once it ends nobody waits any more, and the invocation is given up (as if it had timed
   * out) instead of waiting for its deadline.
   */
  instance?: CallerEnd;
}

/** Whoever waits for an invocation's answer: whether it still does, and a way to hear when it stops. */
interface CallerEnd {
  readonly isOpen: boolean;
  /** Calls `f` when it ends (at once if it has); returns what stops watching. */
  onEnd(f: () => void): () => void;
}

/**
 * The caller name of the JSON-RPC and CLI calls of a module's methods (InvokeFor): not a valid
 * module name (MODULE_NAME_RE has no parentheses). Before, it was "json-rpc", which a module may
 * be named: such a module's calls to another were counted with the JSON-RPC clients' and held
 * to max_rpc_calls, so that it could fill the clients' places at any module it calls.
 */
export const JSON_RPC_CALLER = "(json-rpc)";

export class HostSession extends EventEmitter<{ ready: []; closed: [error?: Error] }> {
  readonly handshake: Promise<Hello>;
  readonly ready: Promise<void>;
  private resolveHello!: (h: Hello) => void;
  private rejectHello!: (e: Error) => void;
  private resolveReady!: () => void;
  private rejectReady!: (e: Error) => void;
  private state: "handshake" | "open" | "closed" = "handshake";
  /** The protocol version negotiated at hello (host/older-protocol.ts: what an older one gets). */
  private protocol = PROTOCOL_VERSION;
  private readonly pending = new Map<number, PendingInvocation>();
  /** Its `ready` has come: until then the host waits for it, and reads past waiting requests (pauseReading). */
  private readyHeard = false;
  /** Pending invocations by whom they are made for (max_calls_per_caller, max_rpc_calls). */
  private readonly byCaller = new Map<string, number>();
  /** What is told when this session ends (onEnd). */
  private readonly endWatchers = new Set<() => void>();
  private nextInvocation = 1;
  private inFlight = 0;
  private readonly subscription: Subscription;
  private readonly call: CallContext;
  /** Aborted when this session closes (CallContext.ended). */
  private readonly ended = new AbortController();
  private readonly handshakeTimer: NodeJS.Timeout;
  closeError: Error | undefined;
  private refusedByHost = false;
  /** Requests served and refused, for health and metrics. */
  readonly stats = { requests: 0, errors: 0, denied: 0 };
  /** Times a request had to wait, by the limit that held it; host CPU time spent serving, in ms. */
  readonly flowStats = { waitedInFlight: 0, waitedRate: 0, waitedCpu: 0, waitedCongested: 0, timedOut: 0, cpuMs: 0, decodeMs: 0, inputMs: 0, slicedMs: 0, outputMs: 0, timerMs: 0, outputPaused: 0, invocationsRefused: 0, answersParked: 0, peakInFlight: 0, waitedUnread: 0, peakUnread: 0, relayedRefused: 0, waitedRequestBytes: 0, peakRequestBytes: 0, waitedHostBytes: 0 };
  private readonly flow: FlowLimits;
  private readonly backlog: WaitingRequest[] = [];
  /** Bytes reserved for the answers of the requests being served (see FlowLimits.maxUnreadBytes). */
  private reserved = 0;
  /**
   * The part of `reserved` for answers relayed from other modules (RELAYED_ANSWERS). Not counted
   * in [host] module_bytes_mb: such an answer is the callee's, held to its limits and counted
   * here once it is sent (unsent bytes). Counted, a call chain waited on its own links'
   * reservations (a frame each): four loops of eight calls across runtimes timed out at 10 s
   * instead of being refused at the depth bound in 0.6 s (test/hostile-round15-native.test.ts).
   */
  private reservedRelayed = 0;
  /** Body bytes of the requests being served (FlowLimits.maxRequestBytes). */
  private heldRequestBytes = 0;
  private readingPaused = false;
  /** How long the host has not read this module's socket, over its life (ms; the pause under way not included), and since when it has not. */
  private pausedTotalMs = 0;
  private pausedAt = 0;
  /**
   * Why the socket is not read: "backlog" while only its own requests wait for their share
   * (lifted while the host waits for its answers: see pauseReading), "budget" for the host's
   * turn or the module's CPU share (a wait of a known, short time).
   */
  private pausedFor: "backlog" | "budget" | undefined;
  /** Frame bytes of the requests in the backlog (bounded while the host reads past them for answers). */
  private backlogBytes = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  /** What bounds its answers (capabilities/answer-bounds.ts), made once. */
  private readonly answerLimits: AnswerBoundLimits;
  /** Requests being served, oldest first, and the one timer of their deadlines (watchDeadline). */
  private readonly serving = new Set<Serving>();
  private deadlineTimer: NodeJS.Timeout | undefined;
  private unreadTimer: NodeJS.Timeout | undefined;
  private waitingDrain = false;
  private tokens: number;
  private cpuDebt = 0;
  /** Host CPU time owed for reading its stdout and stderr (its own bucket, see chargeOutput). */
  private outputDebt = 0;
  private outputRefill = performance.now();
  private lastRefill = performance.now();
  /** Host CPU time charged while the current chunk of input is handled (see the "chunk" handler). */
  private chargedInChunk = 0;
  /** When each limit was last reported in the log (at most once per THROTTLE_LOG_MS each). */
  private readonly throttleLogged = new Map<string, number>();
  /**
   * Its account in the host's cap over all modules ([host] module_bytes_mb, protocol/host-bytes.ts):
   * what it holds is its requests' params, the reservations of their answers (not of answers
   * relayed from other modules: reservedRelayed), what was sent and
   * not read, its queued events, and the frame it is sending (counted, not held back: it is read
   * before anything says what it is; max_frame_bytes bounds it).
   */
  private readonly held: HeldAccount;
  /** A request admitted past its fair part of module_bytes_mb is being served (one at a time). */
  private oneServed = false;
  /** blockedBy() just admitted a request as that one: serve() takes it. */
  private admittedAsOne = false;

  constructor(private readonly channel: FrameChannel, private readonly opts: SessionOptions) {
    super();
    this.flow = { ...DEFAULT_FLOW, ...opts.flow, ...(opts.maxInFlight !== undefined ? { maxInFlight: opts.maxInFlight } : {}) };
    this.tokens = this.flow.requestsPerSecond;
    const chain = opts.call.chain as SessionOptions["call"]["chain"] | undefined; // a session without a chain (tests' stubs) reserves frames
    this.answerLimits = { frameBytes: channel.maxFrameBytes, storageIterMaxBytes: this.flow.storageIterMaxBytes, ...(chain?.knownBlockSize ? { blockSize: (ref) => chain.knownBlockSize?.(ref.hash) } : {}) };
    this.handshake = new Promise((res, rej) => ((this.resolveHello = res), (this.rejectHello = rej)));
    this.ready = new Promise((res, rej) => ((this.resolveReady = res), (this.rejectReady = rej)));
    // Nobody may be waiting on these yet; a rejection is still reported through `closed`.
    this.handshake.catch(() => {});
    this.ready.catch(() => {});

    this.subscription = opts.bus.subscribe(
      opts.module,
      (ev) => this.deliver(ev),
      { window: opts.eventWindow ?? DEFAULT_LIMITS.event_window, queueLimit: opts.eventQueue ?? DEFAULT_LIMITS.event_queue, queueBytes: opts.eventQueueBytes ?? DEFAULT_LIMITS.event_queue_bytes, admits: (bytes) => this.held.admits(bytes) !== false },
    );
    this.held = hostBytes.join(opts.module, () => this.reserved - this.reservedRelayed + this.heldRequestBytes + this.channel.unsentBytes + this.subscription.pendingBytes + this.channel.arrivingBytes);
    this.call = {
      ...opts.call,
      services: opts.call.services ?? { publish: (type, payload, _from, bytes) => (opts.bus.publish(type, payload, bytes), true) },
      events: {
        subscribe: (types) => this.subscribe(types),
        unsubscribe: (types) => {
          for (const t of types) this.subscription.types.delete(t);
          return [...this.subscription.types];
        },
        subscribed: () => [...this.subscription.types],
      },
      log: (level, message, fields) => opts.logger.module(opts.module).log(level, message, fields),
      maxAnswerBytes: channel.maxFrameBytes,
      answersEncoded: true,
      ended: this.ended.signal,
    };
    // One listener per HTTP exchange under way (MAX_IN_FLIGHT), and room for others: no warning.
    setMaxListeners(256, this.ended.signal);

    this.handshakeTimer = setTimeout(
      () => this.fail(wireError("protocol_error", `no hello within ${opts.handshakeTimeoutMs ?? 10000} ms`)),
      opts.handshakeTimeoutMs ?? 10000,
    );
    this.handshakeTimer.unref();
    // Decoding a large body is host CPU spent for this module like serving its request: it is
    // charged to host_cpu_ms_per_s, and reading stops while the module is over it, so a flood
    // of the heaviest frames the protocol accepts waits instead of holding the host's loop.
    channel.on("message", (body, decodeMs, bodyBytes) => {
      this.onMessage(body, bodyBytes);
      this.chargeDecode(decodeMs);
    });
    channel.on("bad_body", (err, envelope, decodeMs) => {
      // A request's params that did not decode: what earlier requests hold for it is let go of
      // (a storage transaction's parts, by the part id read from its bytes), as the hub does.
      let also = "";
      if (envelope.t === undefined || envelope.t === "request") {
        also = this.refusedBefore(envelope.method, envelope.part === undefined ? undefined : envelope.part === null ? {} : { part: { id: envelope.part } });
      }
      this.refused(err.message + also, envelope.id ?? 0, envelope.t);
      this.chargeDecode(decodeMs);
    });
    // Everything else a chunk of its input cost the loop (small frames: logs, acks, refusals,
    // each too cheap to time alone) is charged too, once: the chunk's time less what was
    // charged while it was handled. A flood of tiny frames then waits like a flood of requests.
    channel.on("chunk", (ms) => {
      // A frame received: what it held while it arrived is no longer held (or is now a request's).
      const arriving = this.channel.arrivingBytes;
      if (arriving < this.lastArriving) this.held.released();
      this.lastArriving = arriving;
      const rest = ms - this.chargedInChunk;
      this.chargedInChunk = 0;
      if (rest <= 0 || this.state === "closed") return;
      this.charge(rest);
      this.flowStats.inputMs += rest;
      this.pump();
    });
    channel.on("close", (err) => this.onClose(err));
    // What the kernel took from its socket is no longer held for it.
    channel.writeWatch = { wanted: () => hostBytes.waiting > 0, written: this.held.released };
  }

  /** channel.arrivingBytes at the last chunk read (a fall is announced to hostBytes). */
  private lastArriving = 0;

  get module(): string {
    return this.opts.module;
  }

  /** Its requests being served now (limit: max_requests_in_flight). */
  get inFlightRequests(): number {
    return this.inFlight;
  }

  /** Bytes sent to the module and not yet read by it (limit: max_unread_bytes). */
  get unreadBytes(): number {
    return this.channel.unsentBytes;
  }

  /** Bytes reserved for the answers of its requests being served (each its method's answer bound). */
  get reservedBytes(): number {
    return this.reserved;
  }

  /**
   * The most `unreadBytes` can reach. Answers: unread plus reserved stays within max_unread_bytes
   * (or one answer admitted when nothing else was waiting or reserved: at most a frame), plus 4
   * bytes of frame header per request in flight. Invocations are sent while unread is within the
   * limit, so they add at most one frame beyond it, and the answers reserved before may land
   * after them (at most max_unread_bytes, or a frame). Events: the window (event_window + 1
   * events of EVENT_BYTES_BOUND). docs/security.md states it; test/unread-bound asserts it.
   */
  get unreadBound(): number {
    const frame = this.channel.maxFrameBytes + 4;
    const window = (this.opts.eventWindow ?? DEFAULT_LIMITS.event_window) + 1;
    // Reservations count answers' bodies: each frame's 4-byte header comes on top.
    const answers = Math.max(this.flow.maxUnreadBytes, frame) + 4 * this.flow.maxInFlight;
    return this.flow.maxUnreadBytes + frame + answers + window * EVENT_BYTES_BOUND;
  }

  /** Records the most bytes ever waiting for the module (flowStats.peakUnread). */
  private notePeak(): void {
    const unread = this.channel.unsentBytes;
    if (unread > this.flowStats.peakUnread) this.flowStats.peakUnread = unread;
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

  private deliver(ev: BusEvent): void {
    const missed = (ev.missed ?? 0) + this.undeliverable;
    try {
      // The payload's encoding is shared by every subscriber of the publish (ev.shared).
      this.sendChecked(undefined, { t: "event", seq: ev.seq, type: ev.type, time: ev.time, ...(missed ? { missed } : {}) }, ev.payload ?? null, "payload", ev.shared);
      this.undeliverable = 0;
    } catch (err) {
      // A payload over this module's body limits (or not plain data) must not break delivery to
      // the other subscribers, which a throw here would: skip it, and count it as missed.
      if (!(err instanceof EncodeError)) throw err;
      this.undeliverable = missed + 1;
      // One note per undeliverable event: held to the host's budget for notes about this module.
      this.opts.logger.note(this.opts.module, "warn", `event ${ev.type} #${ev.seq} not delivered to ${this.opts.module}: ${err.message}`, undefined, "host");
    }
  }

  private subscribe(types: string[]): string[] {
    const added = new Set(types.filter((t) => !this.subscription.types.has(t)));
    const max = this.flow.maxSubscriptions;
    if (this.subscription.types.size + added.size > max) {
      throw new CapabilityError("quota_exceeded", `subscribing to ${added.size} more event types would make ${this.subscription.types.size + added.size}, over this module's limit of ${max}; unsubscribe from types it no longer needs, or the operator raises max_subscriptions in [modules.limits.${this.opts.module}]`);
    }
    for (const t of types) {
      if (this.subscription.types.has(t)) continue;
      this.subscription.types.add(t);
      for (const ev of this.opts.replay?.(t) ?? []) this.subscription.offer(ev.type, ev.payload, Date.now());
    }
    return [...this.subscription.types];
  }

  private onMessage(body: unknown, bodyBytes: number): void {
    // After a refusal (or any close) nothing more is read: frames already on the wire behind a
    // bad first message must not be served while the goodbye is flushed.
    if (this.state === "closed") return;
    let msg: ModuleMessage;
    try {
      msg = parseModuleMessage(body);
    } catch (err) {
      const e = err as MessageError;
      let also = "";
      const m = body as { t?: unknown; method?: unknown; params?: unknown } | null;
      if (typeof m === "object" && m !== null && (m.t === "request" || m.t === undefined)) {
        const params = typeof m.params === "object" && m.params !== null && !Array.isArray(m.params) ? (m.params as Record<string, unknown>) : undefined;
        also = this.refusedBefore(typeof m.method === "string" ? m.method : undefined, params);
      }
      this.refused(e.message + also, e.id ?? 0, e.kind);
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
        this.admit({ id: msg.id, method: msg.method, params: msg.params, reserve: answerBound(msg.method, msg.params, this.answerLimits), bytes: bodyBytes, relayed: RELAYED_ANSWERS.has(msg.method) });
        break;
      case "ack":
        this.subscription.ack(msg.seq);
        break;
      case "log":
        this.onLog(msg.level, msg.message, msg.fields);
        break;
      case "invocation_result": {
        const p = this.pending.get(msg.id);
        // A late answer to an invocation that already timed out, a duplicate or one to no
        // invocation: dropped. Its reading was charged to host_cpu_ms_per_s like any message.
        if (!p) return;
        this.settled(msg.id, p);
        if (msg.error) p.reject(new InvocationError(msg.error.message.length > MAX_GOODBYE_CHARS ? { ...msg.error, message: cutReason(msg.error.message) } : msg.error));
        else p.resolve(msg.result ?? null);
        break;
      }
      case "ready":
        this.readyHeard = true;
        this.resolveReady();
        this.emit("ready");
        if (!this.awaitsModule() && this.backlog.length > 0) this.pauseReading("backlog");
        break;
      case "goodbye":
        this.close(msg.error ? new Error(`module said goodbye: ${cutReason(msg.error.message)}`) : undefined);
        break;
      case "hello":
        this.admit({ id: 0, method: "hello", params: {}, refusal: wireError("protocol_error", "hello was already received"), reserve: SMALL_ANSWER_BYTES, bytes: 0 });
        break;
    }
  }

  /** ApiHub.refusedBefore for a request of this module refused before the hub (what to add to the refusal). */
  private refusedBefore(method: string | undefined, params: Record<string, unknown> | undefined): string {
    try {
      return this.opts.hub.refusedBefore(this.call, method, params);
    } catch {
      return "";
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
        this.settled(id, p);
        p.reject(new InvocationError(wireError("invalid_message", `the module's invocation_result was refused: ${reason}`)));
      }
      id = 0; // not a request id: the module still hears why, as a response to no request
    }
    // Through the module's share like a request (see WaitingRequest.refusal).
    this.admit({ id, method: kind ?? "message", params: {}, refusal: wireError("invalid_message", reason), reserve: SMALL_ANSWER_BYTES, bytes: 0 });
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
    this.protocol = version;
    this.channel.send({
      t: "welcome",
      protocol: version,
      host: `modhost/${HOST_VERSION}`,
      module_id: this.opts.module,
      grants: describeGrants(this.opts.grants),
      methods: this.opts.hub.methodsFor(this.opts.grants),
      config: this.opts.call.config,
      data_dir: this.opts.call.dataDir,
      event_window: this.opts.eventWindow ?? DEFAULT_LIMITS.event_window,
      max_frame_bytes: this.channel.maxFrameBytes,
    });
    this.resolveHello(hello);
  }

  private onLog(level: "debug" | "info" | "warn" | "error", message: string, fields?: Record<string, unknown>): void {
    // Escaped, cut and held to the module's log byte budget (host/log.ts ModuleLog).
    this.opts.logger.module(this.opts.module).log(level, message, fields);
  }

  // ---- flow control -----------------------------------------------------------------

  /** Serve a request now if the module's share allows it, else queue it and stop reading. */
  private admit(req: WaitingRequest): void {
    // Past the host's budget for this turn (runtime/turn.ts) it waits like one over the
    // module's share: one chunk read can hold hundreds of requests, each served at once before.
    if (this.backlog.length === 0 && !this.pumpParked) {
      const now = performance.now(); // one clock reading for the share's buckets and the turn's budget
      if (this.blockedBy(req.relayed ? 0 : req.reserve, req.bytes, now) === undefined && !hostTurn.overBudget(now)) {
        this.take();
        this.start(req);
        return;
      }
    }
    if (this.backlog.length >= MAX_BACKLOG) {
      this.refuseWaiting(req, wireError("unavailable", `more than ${MAX_BACKLOG} requests waiting (MAX_BACKLOG); wait for answers before sending more`));
      return;
    }
    // Read while the host waits for its answers (pauseReading): what waits is held to
    // max_request_bytes_in_flight, past it refused, not kept.
    if (this.backlog.length > 0 && !this.readingPaused && this.backlogBytes + req.bytes > this.flow.maxRequestBytes) {
      this.refuseWaiting(req, wireError("unavailable", `${this.backlog.length} requests of ${this.backlogBytes} bytes wait for this module's share, and this one of ${req.bytes} bytes would pass ${LIMIT_TEXT.request_bytes(this.flow)} of them; the host reads its socket past them only for its ready and its answers to the ${this.pending.size} invocations it waits for: wait for answers before sending more, or the operator raises max_request_bytes_in_flight in [modules.limits.${this.opts.module}]`));
      return;
    }
    this.backlog.push(req);
    this.backlogBytes += req.bytes;
    this.pauseReading("backlog");
    this.pump();
  }

  /**
   * Refuse a request that found no room to wait (MAX_BACKLOG, max_request_bytes_in_flight).
   * Refusals are answers too: once the module's socket takes no more (it does not read them),
   * reading stops until it does, so what the rest of one chunk held is all that is refused.
   * Before, a module that never read took 764,000 refusals, 106 MB waiting for it, in the 5 s
   * before max_unread_bytes disconnected it.
   */
  private refuseWaiting(req: WaitingRequest, error: WireError): void {
    this.stats.requests++;
    this.stats.errors++;
    // Refused before the hub: what earlier requests hold for it is let go of (a transaction's parts).
    const also = req.refusal ? "" : this.refusedBefore(req.method, req.params);
    this.replyError(req.id, also ? { ...error, message: error.message + also } : error);
    if (!this.channel.congested || this.waitingDrain) return;
    this.pauseReading();
    this.waitingDrain = true;
    void this.channel.drained().then(() => {
      this.waitingDrain = false;
      this.pump();
    });
  }

  /** What keeps the next request waiting, with how long to wait when that is known. */
  private blockedBy(reserve = 0, bytes = 0, now?: number): { limit: Limit; waitMs?: number } | undefined {
    if (this.inFlight >= this.flow.maxInFlight) return { limit: "in_flight" };
    // Its params stay in the host until it is answered: a large request waits until it fits
    // beside those being served (a module's 64 call_module requests of 15 MiB to a module that
    // never answers held ~1 GB of the host for a minute).
    if (bytes > SMALL_REQUEST_BYTES && this.heldRequestBytes > 0 && this.heldRequestBytes + bytes > this.flow.maxRequestBytes) return { limit: "request_bytes" };
    if (this.channel.congested) return { limit: "congested" };
    // Its answer must fit beside what waits for the module and what is reserved already; when
    // nothing is, it is served whatever its bound (one answer larger than the limit: a frame).
    // Not beside relayed answers' reservations: those answers are held to what the module has
    // not read when they arrive (answer()), which bounds them without them holding back its
    // other requests. Counted, two slow module calls (a frame each, 32 MiB) kept every other
    // request of the module waiting until they answered.
    if (reserve > 0) {
      const committed = this.channel.unsentBytes + this.reserved - this.reservedRelayed;
      if (committed > 0 && committed + reserve > this.flow.maxUnreadBytes) return { limit: "unread" };
    }
    // And beside what every module makes the host hold: past its fair part of [host]
    // module_bytes_mb, while the host holds more than half of it, it waits.
    this.admittedAsOne = false;
    if (reserve + bytes > 0) {
      const ground = this.held.admits(reserve + bytes, !this.oneServed);
      if (ground === false) return { limit: "host_bytes" };
      this.held.unwait();
      this.admittedAsOne = ground === "one";
    }
    const cpu = this.overCpu(now);
    if (cpu) return cpu;
    if (this.tokens < 1) return { limit: "rate", waitMs: Math.ceil(((1 - this.tokens) / this.flow.requestsPerSecond) * 1000) };
    return undefined;
  }

  /** How long the module is over its share of the host's CPU, as of `now`; undefined: it is not. */
  private overCpu(now?: number): { limit: Limit; waitMs: number } | undefined {
    this.refill(now);
    if (this.cpuDebt <= this.flow.hostCpuMsPerS) return undefined;
    return { limit: "cpu", waitMs: Math.ceil(((this.cpuDebt - this.flow.hostCpuMsPerS) / this.flow.hostCpuMsPerS) * 1000) };
  }

  /** Tokens and CPU debt as of now (both leaky buckets drain with time). */
  private refill(now = performance.now()): void {
    const elapsed = (now - this.lastRefill) / 1000;
    this.lastRefill = now;
    this.tokens = Math.min(this.flow.requestsPerSecond, this.tokens + elapsed * this.flow.requestsPerSecond);
    this.cpuDebt = Math.max(0, this.cpuDebt - elapsed * this.flow.hostCpuMsPerS);
  }

  private take(): void {
    this.tokens -= 1;
  }

  /** Serve an admitted request, or send an admitted refusal. */
  private start(req: WaitingRequest): void {
    if (req.refusal) {
      this.stats.requests++;
      this.stats.errors++;
      this.replyError(req.id, req.refusal);
      return;
    }
    void this.serve(req.id, req.method, req.params, req.reserve, req.relayed === true, req.bytes);
  }

  /** Serve waiting requests while the share allows; read the socket again once none wait. */
  private pump(): void {
    if (this.state === "closed" || this.pumpParked) return;
    while (this.backlog.length > 0) {
      const next = this.backlog[0]!;
      const now = performance.now(); // one clock reading for the share's buckets and the turn's budget
      const blocked = this.blockedBy(next.relayed ? 0 : next.reserve, next.bytes, now);
      if (blocked) {
        // Reading past its waiting requests (while the host waits for its ready or an answer)
        // is held to its share of the host's CPU too: decoding them, and refusing those past
        // MAX_BACKLOG, is work done for it. Before, a module that never sent its ready and
        // flooded small requests took 18.8 s of the host's CPU in 30 s (4.7 million refused).
        const cpu = blocked.limit === "cpu" ? blocked : this.overCpu(now);
        if (cpu) {
          this.pauseReading();
          this.waitFor(cpu);
          return;
        }
        // Past a wait for the host's budget, what holds the socket now is its own requests.
        if (this.pausedFor === "budget" && !this.waitingDrain) this.pausedFor = "backlog";
        if (this.pausedFor === "backlog" && this.awaitsModule()) this.resumeReading();
        this.waitFor(blocked);
        return;
      }
      // The host's budget for this turn of its loop, shared by all modules (runtime/turn.ts):
      // past it, what waits is served in a later turn, after the other modules' parked work.
      if (hostTurn.overBudget(now)) {
        this.pumpParked = true;
        this.pauseReading();
        hostTurn.park(this.resumePump);
        return;
      }
      this.take();
      const req = this.backlog.shift()!;
      this.backlogBytes -= req.bytes;
      this.start(req);
    }
    // Nothing waits, but decoding what it sent may have put the module over its CPU share.
    const blocked = this.blockedBy();
    if (blocked?.limit === "cpu" || (blocked && this.cpuDebt > this.flow.hostCpuMsPerS)) {
      this.pauseReading();
      this.waitFor({ limit: "cpu", waitMs: Math.ceil(((this.cpuDebt - this.flow.hostCpuMsPerS) / this.flow.hostCpuMsPerS) * 1000) });
      return;
    }
    // Refusals it has not taken yet (refuseWaiting): read again once its socket drains.
    if (this.waitingDrain) return;
    this.resumeReading();
  }

  private pumpParked = false;
  private readonly wakeForHostBytes = (): void => {
    this.pump();
  };
  private readonly resumePump = (): void => {
    this.pumpParked = false;
    this.pump();
  };

  private waitFor(blocked: { limit: Limit; waitMs?: number }): void {
    if (this.retryTimer || this.waitingDrain) return;
    if (blocked.limit === "in_flight") this.flowStats.waitedInFlight++;
    else if (blocked.limit === "rate") this.flowStats.waitedRate++;
    else if (blocked.limit === "cpu") this.flowStats.waitedCpu++;
    else if (blocked.limit === "unread") this.flowStats.waitedUnread++;
    else if (blocked.limit === "request_bytes") this.flowStats.waitedRequestBytes++;
    else if (blocked.limit === "host_bytes") this.flowStats.waitedHostBytes++;
    else this.flowStats.waitedCongested++;
    const now = Date.now();
    if (blocked.limit !== "in_flight" && now - (this.throttleLogged.get(blocked.limit) ?? -Infinity) >= THROTTLE_LOG_MS) {
      this.throttleLogged.set(blocked.limit, now);
      this.opts.logger.note(this.opts.module, "info", `throttled: its requests wait for ${LIMIT_TEXT[blocked.limit](this.flow)}; the operator can raise it${blocked.limit === "host_bytes" ? "" : ` in [modules.limits.${this.opts.module}]`}`, { limit: blocked.limit });
    }
    if (blocked.limit === "in_flight" || blocked.limit === "request_bytes") return; // an answer calls pump()
    // Room in [host] module_bytes_mb: woken when some module lets go of bytes (its own answers
    // call pump() too), in its turn among the waiting modules (protocol/host-bytes.ts).
    if (blocked.limit === "host_bytes") {
      this.held.wait(this.wakeForHostBytes);
      return;
    }
    // Held by reservations: an answer releases one and calls pump(). Held by bytes the module
    // has not read: when the socket drains (or, below the socket's mark, in a moment).
    if (blocked.limit === "unread" && this.reserved > this.reservedRelayed) return;
    if (blocked.limit === "congested" || (blocked.limit === "unread" && this.channel.congested)) {
      this.waitingDrain = true;
      void this.channel.drained().then(() => {
        this.waitingDrain = false;
        this.pump();
      });
      return;
    }
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.pump();
    }, Math.max(1, blocked.waitMs ?? 1));
  }

  /**
   * Stop reading the module's socket. Not for its waiting requests ("backlog") while the host
   * waits for its answers to invocations: those answers must not wait behind its own requests
   * (a module's get_block_template served through its own block_template hook, A calling B while
   * B calls A, a JSON-RPC method it serves): each waited for the invocation's deadline, 64
   * templates ~64 s. Nor while the host waits for its `ready`: a start() that left requests
   * waiting (for answers of calls that never come, say) had its ready unread until
   * start_timeout_ms failed it. Requests read meanwhile wait in the backlog within MAX_BACKLOG
   * and max_request_bytes_in_flight (admit); invocations are at most MAX_PENDING_INVOCATIONS.
   */
  private pauseReading(why: "backlog" | "budget" = "budget"): void {
    if (why === "backlog" && this.awaitsModule()) return;
    if (why === "budget") this.pausedFor = "budget";
    if (this.readingPaused) return;
    this.pausedFor = why;
    this.readingPaused = true;
    this.pausedAt = performance.now();
    this.channel.pauseReading();
  }

  /** How long the host has not read this module's socket, over its life, the pause under way included (ms). */
  private pausedMs(): number {
    return this.pausedTotalMs + (this.readingPaused ? performance.now() - this.pausedAt : 0);
  }

  private resumeReading(): void {
    if (!this.readingPaused) return;
    this.readingPaused = false;
    this.pausedTotalMs += performance.now() - this.pausedAt;
    this.pausedFor = undefined;
    this.channel.resumeReading();
  }

  /**
   * Charges the host's time spent on the module's stdout and stderr (runtime/process.ts);
   * returns how long its output should not be read (0: go on).
   *
   * Output has its own bucket, of the same size (host_cpu_ms_per_s), separate from the one its
   * socket is held to: a module flooding its output has only its output paused (its writes to
   * stdout block, its own loss), and the host goes on reading its socket, so its `ready`, its
   * requests and its invocation results are heard whatever its output costs. Before, the two
   * shared one debt, and a module flooding stdout during start-up could have its socket left
   * unread until start_timeout_ms passed.
   */
  chargeOutput(ms: number): number {
    if (ms <= 0 || this.state === "closed") return 0;
    this.flowStats.cpuMs += ms;
    this.flowStats.outputMs += ms;
    const now = performance.now();
    this.outputDebt = Math.max(0, this.outputDebt - ((now - this.outputRefill) / 1000) * this.flow.hostCpuMsPerS) + ms;
    this.outputRefill = now;
    if (this.outputDebt <= this.flow.hostCpuMsPerS) return 0;
    this.flowStats.outputPaused++;
    const wall = Date.now();
    if (wall - (this.throttleLogged.get("output") ?? -Infinity) >= THROTTLE_LOG_MS) {
      this.throttleLogged.set("output", wall);
      // The host's line (once per THROTTLE_LOG_MS), held to the budget for host notes: the
      // module's own log budget is what its output has just used up.
      this.opts.logger.note(this.opts.module, "info", `${this.opts.module}: throttled: its stdout and stderr are read only as fast as ${LIMIT_TEXT.cpu(this.flow)} allows (its socket is still read); the operator can raise it in [modules.limits.${this.opts.module}]`, { limit: "cpu" }, "host");
    }
    return Math.ceil(((this.outputDebt - this.flow.hostCpuMsPerS) / this.flow.hostCpuMsPerS) * 1000);
  }

  /** Charges the decoding of a message; past host_cpu_ms_per_s the socket is not read until the debt drains. */
  private chargeDecode(ms: number): void {
    if (ms <= 0 || this.state === "closed") return;
    this.charge(ms);
    this.flowStats.decodeMs += ms;
    this.pump();
  }

  /** A slice of work one of this module's requests started, or the reading of its HTTP answer (chain/slices.ts sliceAccount). */
  private readonly chargeSlice = (ms: number): number => {
    if (this.state === "closed") return 0;
    this.charge(ms);
    this.flowStats.slicedMs += ms;
    // How long it is over its share: work that can wait for it (an HTTP answer's reading) does.
    this.refill();
    return this.cpuDebt > this.flow.hostCpuMsPerS ? Math.ceil(((this.cpuDebt - this.flow.hostCpuMsPerS) / this.flow.hostCpuMsPerS) * 1000) : 0;
  };

  /** Host CPU time spent for this module (ms), drained at host_cpu_ms_per_s. */
  private charge(ms: number): void {
    if (this.channel.handlingInput) this.chargedInChunk += ms;
    this.cpuDebt += ms;
    this.flowStats.cpuMs += ms;
  }

  /**
   * Send. A module that leaves more than max_unread_bytes unread is disconnected unless it
   * reads its way back under the limit within UNREAD_GRACE_MS: a module that reads slowly
   * (answers it asked for, all at once) is not cut off, one that does not read is. Meanwhile
   * no new request of it is served (the channel is congested).
   */
  private sendChecked(message: unknown, head?: Record<string, unknown>, result?: unknown, key = "result", shared?: object, reserved?: number): void {
    // A response goes as head + result, so that a large frozen result (a block) is encoded once;
    // an event as head + payload, its encoding shared by the subscribers of one publish.
    if (head) this.channel.sendEnvelope(head, key, result, shared, reserved);
    else this.channel.send(message);
    this.checkUnread();
  }

  /** Starts the max_unread_bytes grace period when what waits for the module is over it. */
  private checkUnread(): void {
    this.notePeak();
    if (this.unreadTimer || this.state === "closed" || this.channel.unsentBytes <= this.flow.maxUnreadBytes) return;
    this.unreadTimer = setTimeout(() => {
      this.unreadTimer = undefined;
      const queued = this.channel.unsentBytes;
      if (this.state === "closed" || queued <= this.flow.maxUnreadBytes) return;
      const text = `${queued} bytes of answers and events sent to module ${this.opts.module} are unread, over its limit of ${this.flow.maxUnreadBytes} (max_unread_bytes) for ${UNREAD_GRACE_MS} ms; read what the host sends, or the operator raises max_unread_bytes in [modules.limits.${this.opts.module}]`;
      this.opts.logger.note(this.opts.module, "warn", `disconnected: ${text}`);
      this.fail(wireError("quota_exceeded", text));
    }, UNREAD_GRACE_MS);
    this.unreadTimer.unref();
  }

  /**
   * The context its requests are served in: the one it was made in (the module's: moduleScope),
   * with this session's account of sliced work (chain/slices.ts). Made once and swapped in per
   * request: `sliceAccount.run` built two new contexts per request (~0.4 µs each at load 3).
   */
  private readonly requestContext = sliceAccount.run(this.chargeSlice, () => new AsyncResource("modhost.request", { requireManualDestroy: true }));

  /** The hub's dispatch of one request of this module (made once: no closure per request). */
  private readonly dispatch = (method: string, params: Record<string, unknown>): unknown =>
    this.opts.hub.dispatch(this.call, this.opts.grants, method, params);

  private serve(id: number, method: string, params: Record<string, unknown>, reserve: number, relayed: boolean, bytes: number): void {
    const one = this.admittedAsOne;
    this.admittedAsOne = false;
    if (one) this.oneServed = true;
    this.stats.requests++;
    this.inFlight++;
    this.reserved += reserve;
    if (relayed) this.reservedRelayed += reserve;
    this.heldRequestBytes += bytes;
    if (this.heldRequestBytes > this.flowStats.peakRequestBytes) this.flowStats.peakRequestBytes = this.heldRequestBytes;
    if (this.inFlight > this.flowStats.peakInFlight) this.flowStats.peakInFlight = this.inFlight;
    const t0 = performance.now();
    const req: Serving = { id, method, deadline: t0 + this.flow.requestTimeoutMs, timedOut: false };
    // Work the request leaves for later turns of the loop, in slices, is charged too.
    const served = this.requestContext.runInAsyncScope(this.dispatch, null, method, params);
    const t1 = performance.now();
    this.charge(t1 - t0);
    if (served instanceof Promise || hostTurn.overBudget(t1)) {
      void this.serveLater(req, served, reserve, relayed, bytes, one);
      return;
    }
    // Answered at once (storage_get's synchronous read): the answer is sent, and its reservation
    // released, in this pass, before the next request is admitted. Held until a later microtask,
    // the reservations of one read's requests piled up: 30 storage_get (1 MiB each) filled the
    // default max_unread_bytes, so a Promise.all of 1000 gets was served 30 at a time, each 30
    // in a write and a crossing into the isolate of their own. No pump() here: the caller (pump's
    // loop, or admit with nothing waiting) goes on.
    try {
      this.answer(req, served, reserve, relayed, t1);
    } catch (err) {
      this.failed(req, err);
    } finally {
      this.inFlight--;
      this.reserved -= reserve;
      if (relayed) this.reservedRelayed -= reserve;
      this.heldRequestBytes -= bytes;
      if (one) this.oneServed = false;
      this.held.released();
    }
  }

  /** serve() of a request whose answer is a promise (or is to be encoded in a later turn). */
  private async serveLater(req: Serving, pending: unknown, reserve: number, relayed: boolean, bytes: number, one: boolean): Promise<void> {
    // The deadline answers the module; the slot stays taken until the host's work really ends,
    // so work that cannot be cancelled still counts against max_requests_in_flight.
    this.watchDeadline(req);
    try {
      const result = await pending;
      if (req.timedOut || this.state === "closed") return;
      // Encoding the answer is work on the host's loop like any other: past this turn's budget
      // (runtime/turn.ts) it is done in a later turn, in its place among the parked work. (The
      // answers of many requests settled together, a storage batch's, would otherwise all be
      // encoded in one drain of the microtask queue.)
      if (hostTurn.overBudget()) {
        this.flowStats.answersParked++;
        await new Promise<void>((resolve, reject) => hostTurn.park(() => {
          try {
            this.answer(req, result, reserve, relayed);
            resolve();
          } catch (err) {
            reject(err);
          }
        }));
      } else {
        this.answer(req, result, reserve, relayed);
      }
    } catch (err) {
      if (req.timedOut) return;
      this.failed(req, err);
    } finally {
      this.serving.delete(req);
      this.inFlight--;
      this.reserved -= reserve;
      if (relayed) this.reservedRelayed -= reserve;
      this.heldRequestBytes -= bytes;
      if (one) this.oneServed = false;
      this.held.released();
      if (this.backlog.length > 0 && !this.retryTimer) this.pump();
    }
  }

  /** The error answer of a request that failed (or whose answer cannot be sent). */
  private failed(req: Serving, err: unknown): void {
    this.stats.errors++;
    let wire: WireError;
    if (err instanceof HubError) {
      wire = err.wire;
    } else if (err instanceof EncodeError) {
      // The answer cannot be sent (too large for a frame or the protocol limits, a wide
      // storage_iter, say; or not plain data): say so, and how to get it, not "internal error".
      wire = wireError(err.code, `${req.method}: the result cannot be sent: ${err.message}${err.code === "result_too_large" ? "; ask for less at a time, e.g. with a smaller limit" : ""}`);
    } else {
      this.opts.logger.log("error", "host", `serving ${req.method} for ${this.opts.module} failed: ${(err as Error)?.stack ?? String(err)}`);
      wire = wireError("internal", "internal error");
    }
    if (wire.code === "permission_denied") this.stats.denied++;
    this.replyError(req.id, wire);
  }

  /** Sends a request's answer, its encoding charged to the module; throws what serve() turns into an error answer. */
  private answer(req: Serving, result: unknown, reserve: number, relayed: boolean, t1 = performance.now()): void {
    if (req.timedOut || this.state === "closed") return;
    try {
      // Relayed answers did not wait for room: like invocations, they are held to what the
      // module has not read (not to its reservations), so that max_requests_in_flight of
      // them cannot each land a frame past the limit (unreadBound counts one).
      const unread = this.channel.unsentBytes;
      if (relayed && unread > this.flow.maxUnreadBytes) {
        this.flowStats.relayedRefused++;
        throw new HubError(wireError("quota_exceeded", `${req.method}: module ${this.opts.module} has not read ${unread} bytes the host sent it, over its limit of ${this.flow.maxUnreadBytes} (max_unread_bytes): the answer was dropped; read what the host sends before calling again, or the operator raises max_unread_bytes in [modules.limits.${this.opts.module}]`));
      }
      this.sendChecked(undefined, { t: "response", id: req.id }, answerForVersion(this.protocol, req.method, result ?? null), "result", undefined, reserve);
    } finally {
      this.charge(performance.now() - t1);
    }
  }

  /**
   * request_timeout_ms: one timer for all the requests being served, not one each. Every request
   * of a session has the same timeout, so deadlines come in the order requests start (the order
   * of `serving`): the timer waits for the oldest, and when it fires, answers every request past
   * its deadline and waits for the next one.
   */
  private watchDeadline(req: Serving): void {
    this.serving.add(req);
    if (this.deadlineTimer === undefined) this.armDeadline(this.flow.requestTimeoutMs);
  }

  private armDeadline(ms: number): void {
    this.deadlineTimer = setTimeout(this.sweepDeadlines, ms);
    this.deadlineTimer.unref();
  }

  private readonly sweepDeadlines = (): void => {
    this.deadlineTimer = undefined;
    if (this.state === "closed") return;
    const now = performance.now();
    for (const req of this.serving) {
      if (req.deadline > now) {
        this.armDeadline(Math.max(1, Math.ceil(req.deadline - now)));
        return;
      }
      this.serving.delete(req);
      req.timedOut = true;
      this.stats.errors++;
      this.flowStats.timedOut++;
      this.replyError(req.id, wireError("timeout", `${req.method}: the host did not finish within ${this.flow.requestTimeoutMs} ms (request_timeout_ms); try again, ask for less, or the operator raises request_timeout_ms in [modules.limits.${this.opts.module}]`));
    }
  };

  private replyError(id: number, error: WireError): void {
    try {
      this.channel.send({ t: "response", id, error });
    } catch {
      // A result too large for a frame, or a closed channel: nothing more to say.
    }
    this.checkUnread();
  }

  /**
   * Call into the module; rejects with InvocationError on an error result or a timeout.
   * `forWhom`: the module it is made for (a module call, a provider call), or the JSON-RPC
   * clients; held to max_calls_per_caller (max_rpc_calls for the clients) waiting here at once, and given up
   * when what waits for it ends (the calling instance, the client's request).
   */
  invoke(kind: InvocationKind, params: Record<string, unknown>, timeoutMs: number, forWhom?: InvokeFor): Promise<unknown> {
    const caller = forWhom?.caller;
    if (forWhom?.instance && !forWhom.instance.isOpen) return Promise.reject(new InvocationError(wireError("unavailable", `the ${kind} invocation of ${this.opts.module} was not sent: its caller ${caller} has ended`)));
    if (this.state !== "open") return Promise.reject(new InvocationError(wireError("unavailable", `module ${this.opts.module} is not connected`)));
    // What the host starts (JSON-RPC and CLI calls of its methods, module_api, providers,
    // hooks, timers, config, health) is held to what the module reads like its answers: past
    // max_unread_bytes, or with MAX_PENDING_INVOCATIONS unanswered, the caller is told at once
    // instead of the call waiting in host memory. A shutdown is always sent (it is small, and
    // the stop goes on to SIGTERM anyway).
    if (kind !== "shutdown") {
      // Against what it has not read only, not the reservations of its requests being served:
      // a module with two blocks on their way is busy, not slow to read, and its JSON-RPC
      // methods, hooks, API, health checks and timers must still reach it (a refused timer is
      // a task lost; a call chain A -> B -> A must reach A while A's call waits for B). What
      // this lets through is in unreadBound: the reservations may land after the invocation.
      const unread = this.channel.unsentBytes;
      if (unread > this.flow.maxUnreadBytes) {
        this.flowStats.invocationsRefused++;
        return Promise.reject(new InvocationError(wireError("quota_exceeded", `module ${this.opts.module} has not read ${unread} bytes the host sent it, over its limit of ${this.flow.maxUnreadBytes} (max_unread_bytes): the ${kind} invocation was not sent; try again later, or the operator raises max_unread_bytes in [modules.limits.${this.opts.module}]`)));
      }
      if (this.pending.size >= MAX_PENDING_INVOCATIONS) {
        this.flowStats.invocationsRefused++;
        return Promise.reject(new InvocationError(wireError("quota_exceeded", `module ${this.opts.module} has ${this.pending.size} invocations unanswered, the most the host keeps waiting at once (MAX_PENDING_INVOCATIONS, a fixed limit): the ${kind} invocation was not sent; try again when it has answered`)));
      }
      const mine = caller === undefined ? 0 : (this.byCaller.get(caller) ?? 0);
      const clients = caller === JSON_RPC_CALLER;
      const [max, key] = clients ? [this.flow.maxRpcCalls, "max_rpc_calls"] : [this.flow.maxCallsPerCaller, "max_calls_per_caller"];
      if (caller !== undefined && mine >= max) {
        this.flowStats.invocationsRefused++;
        const who = clients ? "JSON-RPC clients have" : `module ${caller} has`;
        return Promise.reject(new InvocationError(wireError("quota_exceeded", `${who} ${mine} calls waiting for an answer from module ${this.opts.module}, the most ${clients ? "all clients together" : "one caller"} may have waiting at it (${key}, ${max}): the ${kind} invocation was not sent; try again when one has ended, or the operator raises ${key} in [modules.limits.${this.opts.module}]`)));
      }
    }
    const id = this.nextInvocation++;
    return new Promise((resolve, reject) => {
      // While the host itself is not reading this module's socket (its requests wait for their
      // share), its answer cannot be heard: the time it was not read while the call waited does
      // not count against it, up to request_timeout_ms more in all. (It was a whole timeoutMs
      // more, again and again, whenever reading happened to be paused at the deadline: a
      // module over host_cpu_ms_per_s, read part of the time, had calls of a 4 s timeout end
      // after 8 s, and of 60 s after 120 s.)
      const pausedBefore = this.pausedMs();
      let extended = 0;
      const expire = () => {
        const owed = Math.min(this.pausedMs() - pausedBefore, this.flow.requestTimeoutMs) - extended;
        if (owed >= 1) {
          extended += owed;
          const p = this.pending.get(id);
          if (p) (p.timer = setTimeout(expire, owed)).unref();
          return;
        }
        this.settled(id);
        reject(new InvocationError(wireError("timeout", `${kind} invocation of ${this.opts.module} did not answer within ${timeoutMs} ms${extended > 0 ? ` (and ${Math.round(extended)} ms more, while the host did not read its socket)` : ""}`)));
      };
      const timer = setTimeout(expire, timeoutMs);
      timer.unref();
      // Given up when the instance that waits for it ends: a crash or reload of the caller
      // leaves nothing waiting here in its name (the module's late answer is dropped, as after
      // a timeout).
      const detach = forWhom?.instance?.onEnd(() => {
        const p = this.pending.get(id);
        if (!p) return;
        this.settled(id, p);
        reject(new InvocationError(wireError("unavailable", `the ${kind} invocation of ${this.opts.module} was given up: its caller ${caller} ended`)));
      });
      this.pending.set(id, { resolve, reject, timer, ...(caller === undefined ? {} : { caller }), ...(detach ? { detach } : {}) });
      if (caller !== undefined) this.byCaller.set(caller, (this.byCaller.get(caller) ?? 0) + 1);
      // Its answer is read past its own waiting requests (pauseReading).
      if (this.pausedFor === "backlog") this.resumeReading();
      // A timer's run is the module's own work (it asked for it, at up to 20 a second for each
      // of 256 timers): its sending is charged to host_cpu_ms_per_s, as its answer's reading is.
      const t0 = kind === "timer" ? performance.now() : 0;
      try {
        this.channel.send({ t: "invocation", id, kind, params });
        if (t0) {
          const ms = performance.now() - t0;
          this.flowStats.timerMs += ms;
          this.charge(ms);
        }
      } catch (err) {
        // Params the module protocol cannot carry (a "__proto__" key or too deep from a JSON-RPC
        // client, more than a frame): the caller's error, said at once, not an internal error
        // and a pending invocation left to time out.
        clearTimeout(timer);
        this.settled(id);
        if (!(err instanceof EncodeError)) throw err;
        reject(new InvocationError(wireError("invalid_params", `the ${kind} invocation cannot be sent to module ${this.opts.module}: ${err.message}`)));
      }
      // Counted like an answer: a module that reads none of them is disconnected after the grace.
      this.checkUnread();
    });
  }

  /**
   * Whether the host ended this channel for the module's fault: it refused the module (a
   * handshake, max_unread_bytes) or could not read its frames. A process that then exits with
   * code 0 did not exit cleanly: the restart policy's `on-failure` restarts it.
   */
  get endedForFault(): boolean {
    return this.refusedByHost || this.closeError instanceof FramingError;
  }

  /** Refuse the module: tell it why, then close. */
  private fail(error: WireError): void {
    this.refusedByHost = true;
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
    clearTimeout(this.retryTimer);
    clearTimeout(this.unreadTimer);
    clearTimeout(this.deadlineTimer);
    this.serving.clear();
    this.backlog.length = 0;
    this.backlogBytes = 0;
    this.subscription.close();
    this.held.leave();
    this.ended.abort();
    const reason = error ?? new Error("connection closed");
    this.rejectHello(reason);
    this.rejectReady(reason);
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.detach?.();
      p.reject(new InvocationError(wireError("unavailable", `module ${this.opts.module} disconnected`)));
    }
    this.pending.clear();
    this.byCaller.clear();
    const watchers = [...this.endWatchers];
    this.endWatchers.clear();
    for (const w of watchers) w();
    this.emit("closed", error);
  }

  /** An invocation no longer awaited: with none left, its waiting requests stop the reading again. */
  private settled(id: number, p = this.pending.get(id)): void {
    this.pending.delete(id);
    if (p) {
      clearTimeout(p.timer);
      p.detach?.();
      if (p.caller !== undefined) {
        const left = (this.byCaller.get(p.caller) ?? 1) - 1;
        if (left <= 0) this.byCaller.delete(p.caller);
        else this.byCaller.set(p.caller, left);
      }
    }
    if (!this.awaitsModule() && this.backlog.length > 0 && this.state !== "closed") this.pauseReading("backlog");
  }

  /** The host waits for the module: its ready (start-up), or answers to invocations. */
  private awaitsModule(): boolean {
    return this.pending.size > 0 || !this.readyHeard;
  }

  /** Calls `f` when this session ends (at once if it has); returns what stops watching. */
  onEnd(f: () => void): () => void {
    if (this.state === "closed") {
      f();
      return () => {};
    }
    this.endWatchers.add(f);
    return () => this.endWatchers.delete(f);
  }

  get isOpen(): boolean {
    return this.state === "open";
  }

  get eventStats(): { pending: number; pendingBytes: number; inFlight: number; dropped: number; delivered: number } {
    const s = this.subscription;
    return { pending: s.pending, pendingBytes: s.pendingBytes, inFlight: s.inFlight, dropped: s.droppedTotal, delivered: s.deliveredTotal };
  }
}

/** Start a module process served by a HostSession (runtime/process.ts does the process side). */
export function spawnModule(spec: SpawnSpec, options: SessionOptions, logger: Logger): Promise<ModuleProcess<HostSession>> {
  return spawnModuleProcess(spec, options.module, (channel) => new HostSession(channel, options), logger.module(options.module));
}

/** spawnModule for a process already started (a pooled isolate host, runtime/isolate/pool.ts): the module's session on its channel from now on. */
export function adoptModule(started: StartedChild, options: SessionOptions, logger: Logger): ModuleProcess<HostSession> {
  return moduleScope.run(options.module, () => started.adopt((channel) => new HostSession(channel, options), logger.module(options.module)));
}
