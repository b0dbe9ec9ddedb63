// One file: it only speaks HTTP and JSON-RPC, and its limits (connections, bodies, batches,
// answers) are enforced along one request's path, read top to bottom here.
//
// The host's JSON-RPC 2.0 server over HTTP.
//
//   POST /         JSON-RPC 2.0: one request or a batch (an array). Notifications (no "id")
//                  run but get no answer. Every answer is HTTP 200 with a JSON-RPC body, except
//                  authentication failures (401), bodies over the size limit (413) and wrong
//                  HTTP methods or paths (405, 404).
//   GET /metrics   Prometheus text format (same authentication unless metrics_without_auth).
//
// Every request needs HTTP Basic authentication with the cookie or the configured user and
// password (host/rpc/auth.ts). What a method does is the dispatcher's business
// (host/rpc/admin.ts); this file only speaks HTTP and JSON-RPC.
//
// Bounded by construction (RpcLimits, the [rpc] keys of the same names): every connection
// counts against a total and a per-address cap (the total never more than a quarter of the
// process's RLIMIT_NOFILE, so storage, modules and logs keep their file descriptors); a
// connection over a cap gets 503 naming the cap and is closed. A connection that has not sent
// complete headers within header_timeout_ms (idle ones included), a request not complete within
// request_timeout_ms, and a keep-alive connection idle for idle_timeout_ms are closed; a
// connection has at most MAX_PIPELINED_REQUESTS requests in progress (more get 429). Headers
// are limited in size by the HTTP parser; a body is refused from its Content-Length and, when
// chunked, as soon as it grows past the limit, before it is buffered; a JSON-RPC body is
// scanned for nesting depth before it is parsed; batches and method names have a length limit.
// The calls of all clients (and the writing of batches' answers) share the loop's turns
// (TurnShare, a connection at a time), request bodies in progress are held to
// BODY_BYTES_IN_PROGRESS together, and the answers batches in progress hold to ANSWER_BYTES_HELD.
// Every refusal names its limit and the config key that raises it.

import { DEFAULT_MAX_RESPONSE_BYTES } from "./answer-limit.ts";
import { readFileSync } from "node:fs";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { AnswerBytes, type AnswerShare, ByteRoom } from "../../chain/http-caps.ts";
import { JsonLimitError, parseJson } from "../../chain/json-off.ts";
import type { RpcAuth } from "./auth.ts";
import { jsonBytesAtLeast, jsonChunks, JsonTooLargeError, smallJson } from "./json-writer.ts";
import type { SourceLogger } from "../log.ts";

export const RPC_ERRORS = {
  parse: -32700,
  invalidRequest: -32600,
  methodNotFound: -32601,
  invalidParams: -32602,
  internal: -32603,
  /** The module's handler failed; the message is the module's. */
  moduleError: -32000,
  /** The module did not answer within call_timeout_ms. */
  timeout: -32001,
  /** The module is not running (or disconnected during the call). */
  unavailable: -32003,
  /** A host action failed (no such module, wrong state, the load failed). */
  hostError: -32004,
  /** A hook refused the call (rpc_dispatch; capabilities/hooks.ts): data names the hook's module and its reason. */
  hookRejected: -32005,
  /** The answer's JSON is larger than [rpc] max_response_bytes. */
  responseTooLarge: -32006,
} as const;

export class RpcError extends Error {
  /** Declared, not defined: no property of an error is undefined (see host/errors.ts). */
  declare readonly data?: unknown;

  constructor(readonly code: number, message: string, data?: unknown) {
    super(message);
    this.name = "RpcError";
    if (data !== undefined) (this as { data?: unknown }).data = data;
  }
}

export type Dispatch = (method: string, params: unknown, client?: ClientWait) => Promise<unknown>;

/**
 * The client that waits for a call's answer (its HTTP request): whether it still waits, and a
 * way to hear when it goes away, so that what the call waits for (a module's method) can be
 * given up rather than kept until its deadline.
 */
export interface ClientWait {
  readonly isOpen: boolean;
  /** Calls `f` when the client goes away (at once if it has); returns what stops watching. */
  onEnd(f: () => void): () => void;
}

/**
 * A request's ClientWait: one listener on the response's close for all its calls (a batch's 1,000).
 *
 * A client that has closed its side (a FIN) may be waiting for its answer (it half-closed) or be
 * gone (it closed its socket): the two look the same until something is written to it. While such
 * a request's answer is not yet begun, it is sent `102 Processing` every HALF_CLOSED_PROBE_MS (an
 * interim answer every HTTP/1.1 client reads past); a client that is gone answers the first with
 * a reset, the next write fails and the connection closes, which gives up its calls. Before, a
 * batch of 1,000 calls of a method of 30 s whose client had gone ran 16 at a time for 31 minutes:
 * 16 such batches took all the module's max_rpc_calls (256) places, every other client's
 * call of it refused. HTTP/1.0 clients (no interim answers) are not probed: once such a client
 * has closed its side, its batch starts no module calls past its first MAX_PIPELINED_REQUESTS
 * (notRun), so a gone one holds at most that many, until they end.
 */
class RequestWait implements ClientWait {
  private open = true;
  private readonly watchers = new Set<() => void>();
  /**
   * An HTTP/1.0 client that has closed its side: it cannot be probed (no interim answers), so
   * it may be gone. Its batch starts no module calls past its first MAX_PIPELINED_REQUESTS
   * (each answered not run, naming why).
   */
  unprobedHalfClose = false;

  constructor(req: IncomingMessage, res: ServerResponse) {
    let probe: NodeJS.Timeout | undefined;
    res.once("close", () => {
      this.open = false;
      clearInterval(probe);
      for (const f of this.watchers) f();
      this.watchers.clear();
    });
    const socket = req.socket;
    if (req.httpVersionMajor !== 1 || req.httpVersionMinor < 1) {
      const ended = () => (this.unprobedHalfClose = true);
      if (socket.readableEnded) ended();
      else {
        socket.once("end", ended);
        res.once("close", () => socket.off("end", ended));
      }
      return;
    }
    const watch = () => {
      if (!this.open || probe !== undefined) return;
      probe = setInterval(() => {
        // Its answer begun (or another answer before it on the connection: not yet its turn).
        if (res.headersSent || res.socket === null || res.writableEnded) return;
        res.writeProcessing();
      }, HALF_CLOSED_PROBE_MS);
    };
    if (socket.readableEnded) watch();
    else {
      socket.once("end", watch);
      res.once("close", () => socket.off("end", watch));
    }
  }

  get isOpen(): boolean {
    return this.open;
  }

  onEnd(f: () => void): () => void {
    if (!this.open) {
      f();
      return () => {};
    }
    this.watchers.add(f);
    return () => void this.watchers.delete(f);
  }
}

/** The server's bounds; each is an [rpc] key of the same name (host/config.ts). */
export interface RpcLimits {
  /** Open connections at once, from everyone (also capped at a quarter of RLIMIT_NOFILE). */
  max_connections: number;
  /** Open connections at once from one remote address. */
  max_connections_per_address: number;
  /** A connection must send complete request headers within this (idle new connections included). */
  header_timeout_ms: number;
  /** A request (headers and body) must arrive completely within this. */
  request_timeout_ms: number;
  /** A keep-alive connection with no request for this long is closed. */
  idle_timeout_ms: number;
  /** Request line and headers together. */
  max_header_bytes: number;
  max_body_bytes: number;
  /** Requests in one JSON-RPC batch. */
  max_batch: number;
  /** Nesting of arrays and objects in a JSON-RPC body (a batch counts as one level). */
  max_json_depth: number;
  /** Characters in a method name. */
  max_method_length: number;
  /** Bytes of JSON in one answer (a batch's answers together); an answer past it is replaced by a -32006 error. */
  max_response_bytes: number;
  /**
   * Bytes of answers (and /metrics pages) written to connections and not yet taken by their
   * sockets, all connections together. Past it, the connections holding the oldest such answers
   * (clients that do not read) are closed and their answers let go, until the new one fits.
   */
  max_unsent_bytes: number;
}

export const DEFAULT_RPC_LIMITS: Readonly<RpcLimits> = Object.freeze({
  max_connections: 64,
  max_connections_per_address: 32,
  header_timeout_ms: 10_000,
  request_timeout_ms: 30_000,
  idle_timeout_ms: 5_000,
  max_header_bytes: 16 * 1024,
  max_body_bytes: 1024 * 1024,
  max_batch: 1000,
  max_json_depth: 32,
  max_method_length: 256,
  max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
  max_unsent_bytes: 64 * 1024 * 1024,
});

/**
 * Answers of at most this many bytes are not counted against max_unsent_bytes: a socket takes
 * them at once (its kernel buffer), so what they can hold is bounded by the connection cap.
 */
const UNSENT_COUNTED_FROM = 64 * 1024;

/**
 * Requests one connection may have in progress at once (HTTP/1.1 pipelining: sent before the
 * answers to earlier ones were read). Node's server starts every pipelined request it has read
 * and stops reading only once answers wait to be written, so requests sent without reading were
 * all in progress together: 4 connections of 50,000 pipelined requests held +244 MB of host
 * memory and its loop up to 0.4-0.9 s. Past this a request is answered 429 at once, in order,
 * without being served, and the answers waiting soon stop the reading.
 */
export const MAX_PIPELINED_REQUESTS = 16;

/**
 * JSON-RPC calls (of batches and single requests, all clients together) start in one turn of
 * the loop for about this long. Before, a batch's calls all ran in one turn when none waited
 * for a module: 1,000 calls of unknown methods, each guessing a near name, held the loop 5.4 s;
 * and then each batch had a turn of its own of this long: 64 clients pipelining 16 batches of
 * 1,000 `list` calls ran 1,024 batches' turns back to back, and the canary's call waited 5 s.
 */
const BATCH_TURN_MS = 5;

/**
 * Calls of modules' methods (and run_cli, health) that JSON-RPC requests start in one turn of
 * the loop, all clients together; past it the next waits for a later turn. Each starts a
 * message to a module; a batch's 16 lanes each started one a turn, so 1,024 batches in
 * progress (64 connections of 16) could start 16,384 in one turn.
 */
export const MODULE_CALLS_PER_TURN = 64;

/**
 * The loop's turns as JSON-RPC calls take them: a call starts only while the turn's share is
 * left (BATCH_TURN_MS of calls started, at most MODULE_CALLS_PER_TURN of them calls of
 * modules); past it, calls wait, and the next turn wakes them one after the other, each as the
 * one before has started (a baton, not one wake-up per waiter). Waiting calls are woken a
 * connection at a time, in turn (round robin; in order within a connection): one connection's
 * 16 pipelined batches (16 lanes and their answers each) held 16 times the places of another's
 * single call, which waited behind all of them (8 such connections: a single call's p50 18.7 ms,
 * p90 49.4 ms, against 1.9 and 3.9 alone).
 */
class TurnShare {
  private open = false;
  private from = 0;
  private moduleCalls = 0;
  /** Waiting calls by connection, each connection's in order. */
  private readonly waiting = new Map<object, { wakes: Array<() => void>; head: number }>();
  /** Connections with waiting calls, the next to be woken first. */
  private readonly ring: object[] = [];
  private ringHead = 0;
  private draining = false;
  private readonly close = (): void => {
    this.open = false;
  };

  private over(): boolean {
    if (!this.open) {
      this.open = true;
      this.from = performance.now();
      this.moduleCalls = 0;
      setImmediate(this.close);
      return false;
    }
    return this.moduleCalls >= MODULE_CALLS_PER_TURN || performance.now() - this.from > BATCH_TURN_MS;
  }

  /**
   * Wait for this call's place in a turn (`conn`: the connection it came on); the caller starts
   * its call and then calls pass() exactly once (which lets the next waiting call start, or
   * leaves it to a later turn).
   */
  async take(ofModule: boolean, conn: object): Promise<void> {
    if (this.waiting.size === 0 && !this.over()) {
      if (ofModule) this.moduleCalls++;
      return;
    }
    await new Promise<void>((resolve) => {
      const queue = this.waiting.get(conn);
      if (queue === undefined) {
        this.waiting.set(conn, { wakes: [resolve], head: 0 });
        this.ring.push(conn);
      } else queue.wakes.push(resolve);
      this.later();
    });
    if (ofModule) this.moduleCalls++;
  }

  pass(): void {
    if (this.waiting.size === 0) return;
    if (this.over()) {
      this.later();
      return;
    }
    this.wake();
  }

  /** Wake the first waiting call of the next connection in the ring. */
  private wake(): void {
    const conn = this.ring[this.ringHead]!;
    this.ring[this.ringHead++] = undefined as unknown as object;
    const queue = this.waiting.get(conn)!;
    const next = queue.wakes[queue.head]!;
    queue.wakes[queue.head++] = undefined as unknown as () => void;
    if (queue.head === queue.wakes.length) this.waiting.delete(conn);
    else {
      if (queue.head > 1024 && queue.head * 2 > queue.wakes.length) {
        queue.wakes.splice(0, queue.head);
        queue.head = 0;
      }
      this.ring.push(conn);
    }
    if (this.ringHead === this.ring.length) {
      this.ring.length = 0;
      this.ringHead = 0;
    } else if (this.ringHead > 1024 && this.ringHead * 2 > this.ring.length) {
      this.ring.splice(0, this.ringHead);
      this.ringHead = 0;
    }
    next();
  }

  private later(): void {
    if (this.draining) return;
    this.draining = true;
    setImmediate(() => {
      this.draining = false;
      if (this.waiting.size === 0) return;
      // A new turn: its share starts now.
      this.open = false;
      this.over();
      this.wake();
    });
  }
}

/**
 * Bytes of JSON-RPC request bodies in progress (announced by Content-Length, or max_body_bytes
 * for a chunked body until it is read; not yet answered), all connections together. A request
 * that would pass it waits, its body unread, until answers make room (or request_timeout_ms).
 * Each body is held parsed, with its answers, until its answer is written (a batch's 1,000
 * calls): 64 connections pipelining 16 batches of 1,000 `list` calls (60 KB each) held +244 MB
 * of the host's heap once the loop read them all. Bodies of at most SMALL_BODY_BYTES are not
 * counted (a single call: at most 64 connections x 16 of them), so a client's single call does
 * not wait behind batches. 2 MiB is two bodies of the default max_body_bytes (the same flood:
 * +30-43 MB; at 4 MiB +69-77 MB).
 */
const BODY_BYTES_IN_PROGRESS = 2 * 1024 * 1024;
const SMALL_BODY_BYTES = 4096;

/**
 * Bytes of JSON (counted as each answer arrives, a lower bound: jsonBytesAtLeast) of the answers
 * that JSON-RPC batches in progress hold, all connections together (or [rpc] max_response_bytes
 * where an operator raised that past it, so that one batch can always reach it). A batch holds
 * its answers until its last call is in and its answer written; max_response_bytes bounds one
 * batch, and nothing bounded them together: 16 clients each sending a batch of 24 calls of a
 * module's method answering 1 MiB and one call that takes its time held them all. Past it an
 * answer arriving is replaced by a -32006 error with its id, naming this limit, and its data let
 * go. Bodies of at most SMALL_BODY_BYTES are not held to BODY_BYTES_IN_PROGRESS: a batch of 150
 * calls fits in one, and 64 connections may pipeline 16 each.
 */
const ANSWER_BYTES_HELD = 64 * 1024 * 1024;
/** Host methods that wait for modules' answers: a batch runs them side by side, not one at a time. */
const WAITS_FOR_MODULES: ReadonlySet<string> = new Set(["run_cli", "health"]);

/** How often a request whose client has half-closed its connection is probed (102 Processing). */
export const HALF_CLOSED_PROBE_MS = 1000;

/**
 * Pieces a request body may arrive in (each chunk of a chunked body, or each read); past it the
 * request is answered 413 naming this limit and the connection closed. Each piece is an event
 * on the host's loop and, kept, a Buffer: four connections sending chunked bodies one byte per
 * chunk (~155,000 chunks each) held +828 MB of host heap and delayed its loop up to 609 ms.
 * 4,096 pieces is 256 bytes each for a body of the default max_body_bytes (1 MiB); a chunk split
 * between two reads is two pieces.
 */
export const MAX_REQUEST_BODY_PIECES = 4096;

/**
 * A connection whose bytes have not made a whole request (head, or head and body) within this
 * long is read in windows: once every SLOW_READ_EVERY_MS, for one turn of the loop (a read or
 * two: what the kernel gathered meanwhile), until a request is complete. A client writing one
 * byte at a time made the host read one byte per read, as fast as it wrote: one unauthenticated
 * client cost ~350 ms of the loop's CPU a second (load 5-6), whatever the header and body limits.
 * Node's server reads the socket in its parser, without an event per read, so the reads cannot
 * be counted; they are windowed instead.
 */
const SLOW_REQUEST_GRACE_MS = 20;
const SLOW_READ_EVERY_MS = 20;

/**
 * The pieces a body of at most `maxBodyBytes` may come in: MAX_REQUEST_BODY_PIECES, or one per
 * 256 bytes of the limit where an operator raised max_body_bytes past 1 MiB (a large body sent
 * with Content-Length over a slow link may arrive in reads of one TCP segment, ~1,448 bytes).
 */
export function bodyPieces(maxBodyBytes: number): number {
  return Math.max(MAX_REQUEST_BODY_PIECES, Math.ceil(maxBodyBytes / 256));
}

/** The process's soft RLIMIT_NOFILE (from /proc/self/limits), or undefined where it cannot be read. */
export function openFileLimit(limitsText?: string): number | undefined {
  let text = limitsText;
  if (text === undefined) {
    try {
      text = readFileSync("/proc/self/limits", "utf8");
    } catch {
      return undefined;
    }
  }
  const m = /^Max open files\s+(\d+|unlimited)\s/m.exec(text);
  if (!m) return undefined;
  return m[1] === "unlimited" ? undefined : Number(m[1]);
}

/**
 * The connection cap actually used: max_connections, but at most a quarter of the open-file
 * limit (at least 4), so that a full RPC server still leaves three quarters of the process's
 * file descriptors to storage, module channels and logs.
 */
export function effectiveConnectionCap(maxConnections: number, nofile: number | undefined): number {
  if (nofile === undefined) return maxConnections;
  return Math.max(1, Math.min(maxConnections, Math.max(4, Math.floor(nofile / 4))));
}

/** Sockets being refused (503 sent, waiting for the peer to read it) beyond the cap; past this, new connections are dropped unanswered. */
const REFUSING_SLOTS = 16;

export interface RpcServerOptions {
  bind: string;
  port: number;
  auth: RpcAuth;
  dispatch: Dispatch;
  /** The /metrics page, whole or in pieces written one after the other. */
  metricsText: () => string | Buffer[] | Promise<string | Buffer[]>;
  metricsWithoutAuth?: boolean;
  /** Over DEFAULT_RPC_LIMITS. */
  limits?: Partial<RpcLimits>;
  /** Pause before answering a failed authentication (slows guessing); default 250 ms. */
  authFailDelayMs?: number;
  log: SourceLogger;
}

/** A served connection: its address, its requests in progress, the Authorization header that passed on it. */
interface Conn {
  address: string;
  busy: number;
  /** Bytes read from it when its last request's head was complete. */
  requestBytes: number;
  /** Since when bytes read from it have not made a whole request (0: they have). */
  slowSince: number;
  /** Paused by the window of slow reading (not by Node's server). */
  windowed: boolean;
  /** The exact header text that passed RpcAuth.check on this connection (per-connection cache). */
  authorized: string | undefined;
  /** Requests in progress on it that failed authentication (waiting out the delay before their 401). */
  denied: number;
}

interface JsonRpcResponse {
  jsonrpc: "2.0";
  id: unknown;
  result?: unknown;
  error?: { code: number; message: string; data?: unknown };
}

export class RpcServer {
  private readonly server: http.Server;
  private addr: { host: string; port: number } | undefined;
  readonly limits: Readonly<RpcLimits>;
  /** The total connection cap in force: max_connections, lowered to fit RLIMIT_NOFILE. */
  readonly connectionCap: number;
  /** Served connections, oldest first, with their requests in progress. */
  private readonly conns = new Map<Socket, Conn>();
  /** The timer of slow reading (SLOW_READ_EVERY_MS), while connections are open. */
  private slowTimer: NodeJS.Timeout | undefined;
  private readonly perAddress = new Map<string, number>();
  private readonly refused = new WeakSet<Socket>();
  readonly stats = {
    requests: 0, calls: 0, errors: 0, unauthorised: 0,
    /** Connections answered 503 at a cap; idle ones closed to make room; timeouts (408); too large (413, 431). */
    connectionsRefused: 0, connectionsEvicted: 0, timeouts: 0, tooLarge: 0,
    /** Requests whose client went away while sending the body (not logged: nothing of the host's failed). */
    clientsGone: 0,
    /** Most connections open at once. */
    peakConnections: 0,
    /** Connections closed because their unread answers were the oldest past max_unsent_bytes. */
    slowReadersClosed: 0,
    /** Requests answered 429 because their connection had MAX_PIPELINED_REQUESTS in progress. */
    pipelinedRefused: 0,
    /** Requests whose body waited, unread, because it would take the bodies in progress past BODY_BYTES_IN_PROGRESS. */
    bodiesWaited: 0,
    /** Answers of batches' calls replaced by a -32006 error because those held had reached ANSWER_BYTES_HELD. */
    answersNotHeld: 0,
  };
  /**
   * Bytes of JSON (at least) of the answers held by batches in progress, all connections
   * together: ANSWER_BYTES_HELD, or max_response_bytes where that is more (one batch may always
   * reach it).
   */
  private readonly answersHeld: AnswerBytes;
  /** Bytes of request bodies in progress (read or announced, not yet answered), all connections together (BODY_BYTES_IN_PROGRESS). */
  private readonly bodies = new ByteRoom(BODY_BYTES_IN_PROGRESS);
  /** The loop's turns as JSON-RPC calls take them, all clients together. */
  private readonly share = new TurnShare();
  /** Answers over UNSENT_COUNTED_FROM written and not yet taken by their sockets, oldest first: their bytes. */
  private readonly unsent = new Map<ServerResponse, { bytes: number; page: object | undefined }>();
  private unsentBytes = 0;
  /** /metrics pages (their pieces, shared by the scrapes that came while one was rendered) -> responses writing them. */
  private readonly pages = new Map<object, number>();

  /** Bytes of JSON (at least) of the answers held by batches in progress, all connections together. */
  get heldAnswerBytes(): number {
    return this.answersHeld.held;
  }

  /** Bytes of answers written and not yet taken by their sockets (counted from UNSENT_COUNTED_FROM). */
  get unsentAnswerBytes(): number {
    return this.unsentBytes;
  }

  constructor(private readonly opts: RpcServerOptions) {
    const limits = { ...DEFAULT_RPC_LIMITS, ...opts.limits };
    this.limits = limits;
    this.answersHeld = new AnswerBytes(Math.max(ANSWER_BYTES_HELD, limits.max_response_bytes));
    const nofile = openFileLimit();
    this.connectionCap = effectiveConnectionCap(limits.max_connections, nofile);
    if (this.connectionCap < limits.max_connections) {
      opts.log.warn(`[rpc] max_connections = ${limits.max_connections} is more than a quarter of this process's open-file limit (${nofile}): at most ${this.connectionCap} RPC connections are served (raise the limit with ulimit -n to allow more)`);
    }
    this.server = http.createServer({
      maxHeaderSize: limits.max_header_bytes,
      headersTimeout: limits.header_timeout_ms,
      requestTimeout: limits.request_timeout_ms,
      keepAliveTimeout: limits.idle_timeout_ms,
      // How often header and request timeouts are checked (Node's default is 30 s).
      connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(limits.header_timeout_ms / 4))),
      requireHostHeader: false,
    }, (req, res) => {
      if (this.refused.has(req.socket)) {
        discardBody(req, res, limits.max_body_bytes);
        return;
      }
      const conn = this.conns.get(req.socket);
      if (conn && conn.busy >= MAX_PIPELINED_REQUESTS) {
        this.stats.pipelinedRefused++;
        discardBody(req, res, limits.max_body_bytes);
        sendText(res, 429, `more than ${MAX_PIPELINED_REQUESTS} requests in progress on this connection (MAX_PIPELINED_REQUESTS, a fixed limit): this one was not served; read the answers before sending more, send a JSON-RPC batch, or open another connection\n`);
        return;
      }
      if (conn) {
        conn.busy++;
        res.once("close", () => conn.busy--);
        this.requestHead(req.socket, conn);
        // Its body's bytes, read after the head, are a whole request too.
        req.once("end", () => this.requestHead(req.socket, conn));
      }
      this.handle(req, res, conn).catch((err) => {
        opts.log.error(`RPC request failed: ${(err as Error)?.stack ?? String(err)}`);
        if (!res.headersSent) sendJson(res, 500, errorResponse(null, RPC_ERRORS.internal, "internal error"));
        else res.destroy();
      });
    });
    // Past the cap plus a few sockets being told why, Node drops new connections at once.
    this.server.maxConnections = this.connectionCap + REFUSING_SLOTS;
    // A client that half-closes once its request is sent (shutdown(SHUT_WR): `nc -N`, some
    // scripts) still gets its answer: by default Node ends such a connection at once, and the
    // answer of anything asynchronous (a module's method: 0 of 20 answered) was lost. The
    // connection still ends once its answers are written; the timeouts and caps above still hold.
    (this.server as http.Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
    this.server.on("connection", (socket: Socket) => this.admit(socket));
    // `Expect: 100-continue`: a body announced over max_body_bytes is refused (413) without
    // asking the client to send it (Node's default says 100 Continue to every such request).
    this.server.on("checkContinue", (req: IncomingMessage, res: ServerResponse) => {
      const declared = Number(req.headers["content-length"]);
      if (!(Number.isFinite(declared) && declared > limits.max_body_bytes)) res.writeContinue();
      this.server.emit("request", req, res);
    });
    this.server.on("clientError", (err: NodeJS.ErrnoException, socket: Socket) => this.clientError(err, socket));
  }

  /** Open connections now (served, not counting ones being refused). */
  get connections(): number {
    return this.conns.size;
  }

  /**
   * Count a new connection against the caps. At a cap, the oldest connection from the same
   * scope whose requests in progress are all being refused for their credentials, else the
   * oldest with no request in progress (idle, or still sending headers), is closed to make room
   * (evictIdle), so neither idle connections nor a client without the cookie can lock out a
   * client that has something to ask; when every connection in that scope is busy with
   * authorised requests, the new one gets 503 naming the cap and is closed.
   */
  private admit(socket: Socket): void {
    const address = socket.remoteAddress ?? "?";
    const { max_connections_per_address: perAddress, max_connections: maxConnections } = this.limits;
    let why: string | undefined;
    if ((this.perAddress.get(address) ?? 0) >= perAddress && !this.evictIdle(address)) {
      why = `${address} has ${this.perAddress.get(address)} connections open to the RPC server, all busy, the limit per address ([rpc] max_connections_per_address = ${perAddress}); wait for answers or raise the limit`;
    } else if (this.conns.size >= this.connectionCap && !this.evictIdle(undefined)) {
      why = `the RPC server has ${this.conns.size} connections open, all busy, its limit ([rpc] max_connections = ${maxConnections}${this.connectionCap < maxConnections ? `, lowered to ${this.connectionCap} by the open-file limit` : ""}); wait for answers or raise the limit`;
    }
    if (why !== undefined) {
      this.stats.connectionsRefused++;
      this.refused.add(socket);
      const text = `connection refused: ${why}\n`;
      socket.end(`HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\nRetry-After: 1\r\n\r\n${text}`);
      setTimeout(() => socket.destroy(), 1000).unref();
      return;
    }
    const conn: Conn = { address, busy: 0, authorized: undefined, denied: 0, requestBytes: 0, slowSince: 0, windowed: false };
    this.conns.set(socket, conn);
    // Not unref'd: a paused socket does not hold the loop, and its peer's close is seen only
    // when it is read again (as an open connection held the loop before).
    this.slowTimer ??= setInterval(this.readSlowly, SLOW_READ_EVERY_MS);
    this.perAddress.set(address, (this.perAddress.get(address) ?? 0) + 1);
    if (this.conns.size > this.stats.peakConnections) this.stats.peakConnections = this.conns.size;
    socket.once("close", () => {
      if (!this.conns.delete(socket)) return;
      const left = (this.perAddress.get(address) ?? 1) - 1;
      if (left <= 0) this.perAddress.delete(address);
      else this.perAddress.set(address, left);
    });
  }

  /** A request's head (or its body) is complete: its connection is read freely again. */
  private requestHead(socket: Socket, conn: Conn): void {
    conn.requestBytes = socket.bytesRead;
    conn.slowSince = 0;
    if (conn.windowed) {
      conn.windowed = false;
      socket.resume();
    }
  }

  /**
   * Every SLOW_READ_EVERY_MS: a connection whose bytes have not made a request within
   * SLOW_REQUEST_GRACE_MS is paused, and one paused so is read for one turn of the loop.
   * (Node's server stops reading a socket it parses when the socket is paused.)
   */
  private readonly readSlowly = (): void => {
    if (this.conns.size === 0) {
      clearInterval(this.slowTimer);
      this.slowTimer = undefined;
      return;
    }
    const now = performance.now();
    const opened: Socket[] = [];
    for (const [socket, conn] of this.conns) {
      if (socket.destroyed) continue;
      if (conn.windowed) {
        socket.resume();
        opened.push(socket);
        continue;
      }
      if (socket.bytesRead <= conn.requestBytes || socket.isPaused()) continue;
      if (conn.slowSince === 0) conn.slowSince = now;
      else if (now - conn.slowSince >= SLOW_REQUEST_GRACE_MS) {
        conn.windowed = true;
        socket.pause();
      }
    }
    if (opened.length > 0) {
      setImmediate(() => {
        for (const socket of opened) {
          const conn = this.conns.get(socket);
          if (conn?.windowed && !socket.destroyed) socket.pause();
        }
      });
    }
  };

  /**
   * Make room (from `address`, or any): close the oldest connection whose every request in
   * progress is being refused for its credentials, else the oldest with no request in progress;
   * whether there was one. A client without the cookie holding its connections busy with
   * requests that are only waiting out the delay before their 401 must not lock out one that
   * has it (32 such clients from 127.0.0.1 kept the canary's calls unanswered for 5 s in 6 of 7
   * rounds at load 5: every place of max_connections_per_address busy).
   */
  private evictIdle(address: string | undefined): boolean {
    for (const refusedOnly of [true, false]) {
      for (const [socket, c] of this.conns) {
        if (address !== undefined && c.address !== address) continue;
        if (refusedOnly ? c.busy === 0 || c.denied < c.busy : c.busy > 0) continue;
        this.evict(socket, c);
        return true;
      }
    }
    return false;
  }

  private evict(socket: Socket, c: Conn): void {
    this.stats.connectionsEvicted++;
    // Counted out now: the close event may come a moment later.
    this.conns.delete(socket);
    const left = (this.perAddress.get(c.address) ?? 1) - 1;
    if (left <= 0) this.perAddress.delete(c.address);
    else this.perAddress.set(c.address, left);
    socket.destroy();
  }

  /** Malformed, oversized or too slow requests, answered in words that name the limit. */
  private clientError(err: NodeJS.ErrnoException, socket: Socket): void {
    if (this.refused.has(socket) || !socket.writable || socket.destroyed) {
      socket.destroy();
      return;
    }
    const l = this.limits;
    let status: string;
    let text: string;
    if (err.code === "ERR_HTTP_REQUEST_TIMEOUT") {
      this.stats.timeouts++;
      status = "408 Request Timeout";
      text = `request timeout: complete headers must arrive within ${l.header_timeout_ms} ms of the connection or of the previous answer ([rpc] header_timeout_ms) and the whole request within ${l.request_timeout_ms} ms ([rpc] request_timeout_ms)`;
    } else if (err.code === "HPE_HEADER_OVERFLOW") {
      this.stats.tooLarge++;
      status = "431 Request Header Fields Too Large";
      text = `the request line and headers are larger than ${l.max_header_bytes} bytes ([rpc] max_header_bytes)`;
    } else if (err.code === "ECONNRESET" || err.code === "EPIPE") {
      socket.destroy();
      return;
    } else {
      status = "400 Bad Request";
      text = `malformed HTTP request (${err.code ?? err.message}); POST a JSON-RPC 2.0 body to /`;
    }
    text += "\n";
    socket.end(`HTTP/1.1 ${status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`);
    setTimeout(() => socket.destroy(), 1000).unref();
  }

  /** Listen; rejects when the address cannot be used (in use, not local). */
  start(): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.server.once("error", onError);
      this.server.listen(this.opts.port, this.opts.bind, () => {
        this.server.off("error", onError);
        this.server.on("error", (err) => this.opts.log.error(`RPC server: ${err.message}`));
        const a = this.server.address() as AddressInfo;
        this.addr = { host: a.address, port: a.port };
        resolve(this.addr);
      });
    });
  }

  /** Where it listens (after start). */
  get address(): { host: string; port: number } | undefined {
    return this.addr;
  }

  async stop(): Promise<void> {
    if (!this.server.listening) return;
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeIdleConnections();
      // Give answers being written a moment, then cut what is left.
      setTimeout(() => this.server.closeAllConnections(), 500).unref();
    });
    clearInterval(this.slowTimer);
    this.slowTimer = undefined;
  }

  /**
   * Whether the request carries valid credentials. The first request of a connection is checked
   * by RpcAuth (one SHA-256 digest of what was sent, compared in constant time with digests made
   * at start). The header that passed is kept for that connection only: a later request on it
   * whose header is the same text is let through without parsing and hashing again (5-10 us a
   * request at load 8, the compare ~0.1 us). That compare is constant-time as well
   * (sameText), so even where one connection carries several clients' requests (a pooling
   * proxy in front), a client whose header differs from the kept one learns nothing from how
   * long the answer took: neither where the texts differ nor whether their lengths do. Any other
   * header goes through the full check; one that fails it clears what was kept.
   */
  private authorised(header: string | undefined, conn: Conn | undefined): boolean {
    if (header !== undefined && conn?.authorized !== undefined && sameText(conn.authorized, header)) return true;
    const ok = this.opts.auth.check(header);
    if (conn) conn.authorized = ok ? header : undefined;
    return ok;
  }

  private async handle(req: IncomingMessage, res: ServerResponse, conn: Conn | undefined): Promise<void> {
    this.stats.requests++;
    // Nearly every request is a POST to "/": no URL object for it.
    const pathname = req.url === "/" ? "/" : new URL(req.url ?? "/", "http://localhost").pathname;
    const isMetrics = pathname === "/metrics";
    if (!isMetrics && pathname !== "/") {
      discardBody(req, res, this.limits.max_body_bytes);
      sendText(res, 404, "not found: POST JSON-RPC to / or GET /metrics\n");
      return;
    }
    if (!(isMetrics && this.opts.metricsWithoutAuth) && !this.authorised(req.headers.authorization, conn)) {
      this.stats.unauthorised++;
      if (conn) {
        conn.denied++;
        res.once("close", () => conn.denied--);
      }
      discardBody(req, res, this.limits.max_body_bytes);
      await sleep(this.opts.authFailDelayMs ?? 250);
      res.setHeader("WWW-Authenticate", 'Basic realm="modhost"');
      sendText(res, 401, "unauthorised: use the cookie in the host's cookie_file (user __cookie__) or the [rpc] user and password\n");
      return;
    }
    if (isMetrics) {
      discardBody(req, res, this.limits.max_body_bytes);
      if (req.method !== "GET" && req.method !== "HEAD") {
        res.setHeader("Allow", "GET, HEAD");
        sendText(res, 405, "use GET\n");
        return;
      }
      await this.sendMetrics(res, req.method === "HEAD");
      return;
    }
    if (req.method !== "POST") {
      discardBody(req, res, this.limits.max_body_bytes);
      res.setHeader("Allow", "POST");
      sendText(res, 405, "use POST with a JSON-RPC 2.0 body\n");
      return;
    }
    const limit = this.limits.max_body_bytes;
    // Bodies of requests in progress, all connections together: what Content-Length announces,
    // or max_body_bytes for a chunked body until it is read, before anything is read.
    const declared = Number(req.headers["content-length"]);
    let held = Number.isFinite(declared) ? (declared > SMALL_BODY_BYTES && declared <= limit ? declared : 0) : limit;
    if (held > 0) {
      const room = this.bodies.take(held, res);
      if (room !== true) this.stats.bodiesWaited++;
      if (!(await room)) return;
      res.once("close", () => this.bodies.release(held));
    }
    const raw = await readBody(req, res, limit);
    if (raw === null) {
      // The client went away mid-body: counted, not logged (one error line with a stack each
      // let a client that aborts in a loop grow the host log without bound).
      this.stats.clientsGone++;
      return;
    }
    if (typeof raw === "string") {
      this.stats.tooLarge++;
      const why = raw === "bytes"
        ? `request body larger than ${limit} bytes ([rpc] max_body_bytes)`
        : `request body sent in more than ${bodyPieces(limit)} pieces (chunks of a chunked body, or reads) (MAX_REQUEST_BODY_PIECES, ${MAX_REQUEST_BODY_PIECES}, or one per 256 bytes of [rpc] max_body_bytes when that is more); send it with Content-Length, or in larger chunks`;
      sendJson(res, 413, errorResponse(null, RPC_ERRORS.invalidRequest, why), true);
      return;
    }
    if (raw.length < held) {
      this.bodies.release(held - raw.length);
      held = raw.length;
    }
    const parsed = await parseJsonRpcBody(raw, this.limits);
    if (!parsed.ok) {
      sendJson(res, 200, errorResponse(null, parsed.code, parsed.message));
      return;
    }
    const body = parsed.body;
    if (Array.isArray(body)) {
      // Answers are counted as they arrive: one that cannot fit in what is left of
      // max_response_bytes becomes a -32006 error at once and its data is dropped, so a batch of
      // max_batch module calls never holds max_batch large answers until the last is in.
      // `held`: what this batch's answers add to ANSWER_BYTES_HELD (all batches together),
      // let go once its answer has been handed to its connection (max_unsent_bytes from then).
      const budget = { left: this.limits.max_response_bytes - 2, held: this.answersHeld.share() };
      const client = new RequestWait(req, res);
      // MAX_PIPELINED_REQUESTS of its calls at a time, as a connection's requests: a batch of
      // max_batch calls of a module's method that takes its time neither takes all the places
      // the module has for calls (its max_rpc_calls) nor has most of them refused.
      const answered: (JsonRpcResponse | undefined)[] = new Array(body.length);
      let next = 0;
      // Every call starts in the loop's turn share (TurnShare: BATCH_TURN_MS and
      // MODULE_CALLS_PER_TURN for all clients together), so calls answered at once (an unknown
      // method, an error, a host method) give the loop back, and no number of batches in
      // progress starts more than that in one turn.
      // Calls of host methods (no module to wait for: their work is all on the loop, an answer
      // that grows with what every module holds) run one at a time, each in its own place in
      // the share, so the lanes do not start 16 of them in one turn. Those that wait for modules
      // (a module's method, run_cli, health) run in the lanes side by side.
      let hostCalls: Promise<unknown> = Promise.resolve();
      const hostCall = (call: unknown): Promise<JsonRpcResponse | undefined> => {
        const run = hostCalls.then(() => this.started(call, client, false, req.socket));
        hostCalls = run.catch(() => {});
        return run;
      };
      let moduleCalls = 0;
      const lane = async () => {
        while (next < body.length) {
          const i = next++;
          const call = body[i] as { method?: unknown } | null;
          const module = ofModule(call);
          // An HTTP/1.0 client that closed its side gets its batch's first lanes' worth of
          // module calls (a short batch whole), none after.
          if (module && client.unprobedHalfClose && moduleCalls >= MAX_PIPELINED_REQUESTS) answered[i] = notRun(call);
          else {
            if (module) moduleCalls++;
            answered[i] = this.withinBatch(await (module ? this.started(call, client, true, req.socket) : hostCall(call)), budget);
          }
        }
      };
      try {
        await Promise.all(Array.from({ length: Math.min(MAX_PIPELINED_REQUESTS, body.length) }, lane));
        const answers = answered.filter((a): a is JsonRpcResponse => a !== undefined);
        if (answers.length === 0) sendEmpty(res);
        else await this.sendAnswers(res, answers, true, req.socket);
      } finally {
        budget.held.end();
      }
      return;
    }
    const answer = await this.started(body, new RequestWait(req, res), ofModule(body as { method?: unknown } | null), req.socket);
    if (answer === undefined) sendEmpty(res);
    else await this.sendAnswers(res, [answer], false, req.socket);
  }

  /**
   * Writes answers as JSON without holding the loop for long (host/rpc/json-writer.ts: a
   * module's answer may be 16 MiB). The body is at most max_response_bytes: an answer that
   * does not fit in what is left is replaced by a -32006 error with its id, which names the
   * limit. The text is built before the head is sent (Content-Length, as every other answer).
   */
  private async sendAnswers(res: ServerResponse, answers: JsonRpcResponse[], batch: boolean, conn: object): Promise<void> {
    const limit = this.limits.max_response_bytes;
    if (!batch && answers.length === 1) {
      let small: { text: string; bytes: number } | undefined;
      try {
        small = smallJson(answers[0], limit);
      } catch (err) {
        if (!(err instanceof JsonTooLargeError)) throw err;
      }
      if (small !== undefined) {
        if (res.destroyed) return;
        // A string body: node:http sends it with the head in one write.
        res.writeHead(200, { "Content-Type": "application/json", "Content-Length": small.bytes });
        res.end(small.text);
        return;
      }
    }
    const parts: Buffer[] = [];
    let size = batch ? 2 : 0;
    for (const a of answers) {
      // Room for the comma and a -32006 error that may replace a later answer is not reserved:
      // an error answer is small, and the limit is a bound on the work, not an exact size.
      let chunks: Buffer[];
      // Each answer is written in its place in the loop's turn share (TurnShare), as calls are
      // started: a small answer is one synchronous JSON.stringify, and a batch's 1,000 of them
      // were written in one turn, several batches' back to back (64 clients of batches of 1,000
      // `list` calls: turns of 115-200 ms of CPU, most of it here).
      await this.share.take(false, conn);
      let written: Promise<Buffer[]>;
      try {
        written = jsonChunks(a, limit - size);
      } finally {
        this.share.pass();
      }
      try {
        chunks = await written;
      } catch (err) {
        if (!(err instanceof JsonTooLargeError)) throw err;
        this.stats.errors++;
        const why = batch && size > 2
          ? `the answers of this batch come to more than ${limit} bytes of JSON, the limit ([rpc] max_response_bytes); this answer did not fit: ask for less at a time, send fewer requests per batch, or raise the limit`
          : `the answer is more than ${limit} bytes of JSON, the limit ([rpc] max_response_bytes); ask for less at a time, or raise the limit`;
        chunks = [Buffer.from(JSON.stringify(errorResponse(a.id, RPC_ERRORS.responseTooLarge, why, { code: "response_too_large", limit })))];
      }
      if (batch && parts.length > 0) parts.push(COMMA);
      for (const c of chunks) {
        parts.push(c);
        size += c.length;
      }
    }
    if (batch) {
      parts.unshift(OPEN_BRACKET);
      parts.push(CLOSE_BRACKET);
    }
    const length = parts.reduce((n, p) => n + p.length, 0);
    if (res.destroyed) return;
    res.writeHead(200, { "Content-Type": "application/json", "Content-Length": length });
    this.hold(res, length);
    if (parts.length === 1) {
      res.end(parts[0]); // one write with the head
      return;
    }
    // Small pieces (a batch's answers and commas) in writes of about WRITE_BYTES: 2,000 writes
    // of a batch's answer were one writev of 2,000 buffers (~300 ms of CPU over a flood's run).
    for (const p of mergeSmall(parts)) res.write(p);
    res.end();
  }

  /**
   * Count an answer of `bytes` about to be written to `res` against [rpc] max_unsent_bytes, until
   * its socket has taken it (finish) or is gone (close). Past the limit, the connections whose
   * answers have waited longest are closed first: a client that does not read its answers holds
   * them in the host's memory (30 such clients of a module's 14 MiB answer held 523 MB), so it
   * is the one to let go. The new answer is always written: at most max_unsent_bytes, or this
   * one answer, is held, besides small answers (UNSENT_COUNTED_FROM each, per connection).
   * A /metrics page written in Buffer pieces (`page`) is one object however many scrapes write
   * it (each socket holds a reference to a piece, not a copy): it is counted once.
   */
  private hold(res: ServerResponse, bytes: number, page?: object): void {
    if (bytes <= UNSENT_COUNTED_FROM) return;
    const adds = () => (page !== undefined && this.pages.has(page) ? 0 : bytes);
    for (const other of this.unsent.keys()) {
      if (this.unsentBytes + adds() <= this.limits.max_unsent_bytes) break;
      this.release(other);
      this.stats.slowReadersClosed++;
      other.destroy();
    }
    this.unsentBytes += adds();
    this.unsent.set(res, { bytes, page });
    if (page !== undefined) this.pages.set(page, (this.pages.get(page) ?? 0) + 1);
    const release = () => this.release(res);
    res.once("finish", release);
    res.once("close", release);
  }

  private release(res: ServerResponse): void {
    const held = this.unsent.get(res);
    if (held === undefined) return;
    this.unsent.delete(res);
    if (held.page !== undefined) {
      const writers = (this.pages.get(held.page) ?? 1) - 1;
      if (writers > 0) {
        this.pages.set(held.page, writers);
        return;
      }
      this.pages.delete(held.page);
    }
    this.unsentBytes -= held.bytes;
  }

  /** The /metrics page being rendered, shared by the scrapes that come meanwhile. */
  private metricsRendering: Promise<string | Buffer[]> | undefined;

  /**
   * GET /metrics: the page (rendered once for all the scrapes that arrive while it is being
   * rendered: a page can be several MiB per module), written a piece at a time, each after the
   * socket took the one before, so that no single write encodes the whole page on the loop.
   */
  private async sendMetrics(res: ServerResponse, headOnly: boolean): Promise<void> {
    const rendering = (this.metricsRendering ??= Promise.resolve(this.opts.metricsText()).finally(() => (this.metricsRendering = undefined)));
    const body = await rendering;
    const pieces = typeof body === "string" ? [body] : body;
    let length = 0;
    for (const p of pieces) length += Buffer.byteLength(p);
    if (res.destroyed) return;
    res.writeHead(200, { "Content-Type": "text/plain; version=0.0.4; charset=utf-8", "Content-Length": length });
    if (!headOnly) this.hold(res, length, typeof body === "string" ? undefined : body);
    if (headOnly || pieces.length === 1) {
      res.end(headOnly ? undefined : pieces[0]);
      return;
    }
    for (const p of pieces) {
      if (res.destroyed) return;
      if (!res.write(p)) await drainedOrClosed(res);
    }
    res.end();
  }

  /**
   * A batch's answer as it arrives, against what is left of the batch's max_response_bytes
   * (jsonBytesAtLeast: a lower bound of its JSON). Over it: a -32006 error with its id, and the
   * answer's data is let go now. Which answers fit depends on the order they arrive in;
   * sendAnswers checks the exact sizes again in the batch's order.
   */
  private withinBatch(a: JsonRpcResponse | undefined, budget: { left: number; held: AnswerShare }): JsonRpcResponse | undefined {
    if (a === undefined) return a;
    const need = jsonBytesAtLeast(a, budget.left);
    if (need <= budget.left) {
      if (budget.held.take(need)) {
        budget.left -= need + 1; // and a comma
        return a;
      }
      this.stats.errors++;
      this.stats.answersNotHeld++;
      budget.left -= 300;
      return errorResponse(a.id, RPC_ERRORS.responseTooLarge, `the answers held by JSON-RPC batches in progress, all clients together, would come to more than ${this.answersHeld.cap} bytes of JSON (ANSWER_BYTES_HELD, a fixed limit, or [rpc] max_response_bytes where that is more); this answer was not kept: send fewer calls of large answers per batch, call them one at a time, or retry later`, { code: "answers_held", limit: this.answersHeld.cap });
    }
    this.stats.errors++;
    const limit = this.limits.max_response_bytes;
    const error = errorResponse(a.id, RPC_ERRORS.responseTooLarge, `the answers of this batch come to more than ${limit} bytes of JSON, the limit ([rpc] max_response_bytes); this answer did not fit: ask for less at a time, send fewer requests per batch, or raise the limit`, { code: "response_too_large", limit });
    budget.left -= 300;
    return error;
  }


  /** One JSON-RPC request, started in its place in the loop's turn share (TurnShare). */
  private async started(item: unknown, client: ClientWait, moduleCall: boolean, conn: object): Promise<JsonRpcResponse | undefined> {
    await this.share.take(moduleCall, conn);
    let answer: Promise<JsonRpcResponse | undefined>;
    try {
      answer = this.one(item, client);
    } finally {
      this.share.pass();
    }
    return answer;
  }

  /** One JSON-RPC request; undefined for a notification. */
  private async one(item: unknown, client: ClientWait): Promise<JsonRpcResponse | undefined> {
    if (!item || typeof item !== "object" || Array.isArray(item)) {
      this.stats.errors++;
      return errorResponse(null, RPC_ERRORS.invalidRequest, "a request must be a JSON object");
    }
    const r = item as Record<string, unknown>;
    const hasId = Object.hasOwn(r, "id");
    const id = hasId ? r["id"] : null;
    const validId = id === null || typeof id === "string" || (typeof id === "number" && Number.isFinite(id));
    if (!validId) {
      this.stats.errors++;
      return errorResponse(null, RPC_ERRORS.invalidRequest, "id must be a string, a number or null");
    }
    if (typeof id === "string" && id.length > MAX_RPC_ID_CHARS) {
      this.stats.errors++;
      return errorResponse(null, RPC_ERRORS.invalidRequest, `the id is ${id.length} characters long, more than ${MAX_RPC_ID_CHARS} (MAX_RPC_ID_CHARS); send a shorter id`);
    }
    // bitcoind's 1.0-style requests have no "jsonrpc"; accept them, but a wrong version is an error.
    if (r["jsonrpc"] !== undefined && r["jsonrpc"] !== "2.0") {
      this.stats.errors++;
      return errorResponse(id, RPC_ERRORS.invalidRequest, 'jsonrpc must be "2.0"');
    }
    const method = r["method"];
    if (typeof method !== "string" || method === "") {
      this.stats.errors++;
      return errorResponse(id, RPC_ERRORS.invalidRequest, "method must be a non-empty string");
    }
    if (method.length > this.limits.max_method_length) {
      this.stats.errors++;
      return errorResponse(id, RPC_ERRORS.invalidRequest, `the method name is ${method.length} characters long, more than ${this.limits.max_method_length} ([rpc] max_method_length)`);
    }
    const params = r["params"];
    if (params !== undefined && params !== null && typeof params !== "object") {
      this.stats.errors++;
      return errorResponse(id, RPC_ERRORS.invalidRequest, "params must be an object or an array");
    }
    this.stats.calls++;
    try {
      const result = await this.opts.dispatch(method, params ?? undefined, client);
      return hasId ? { jsonrpc: "2.0", id, result: result ?? null } : undefined;
    } catch (err) {
      this.stats.errors++;
      if (!(err instanceof RpcError)) this.opts.log.error(`RPC ${method} failed: ${(err as Error)?.stack ?? String(err)}`);
      if (!hasId) return undefined;
      const e = err instanceof RpcError ? err : new RpcError(RPC_ERRORS.internal, "internal error; the host log has the details");
      return errorResponse(id, e.code, e.message, e.data);
    }
  }
}

/**
 * Characters of a request's string id. An id is echoed in its answer, and in every error that
 * replaces it (a -32006 answer is one JSON.stringify, counted as ~300 bytes against a batch's
 * max_response_bytes): an id as long as max_body_bytes allowed was echoed whole. Past this the
 * request is answered with an error naming it, and id null.
 */
export const MAX_RPC_ID_CHARS = 1024;

/**
 * Values (arrays, objects, strings, numbers, booleans, nulls) one request body may hold. The
 * default max_body_bytes holds at most ~500,000; past this a raised one is refused, not handed
 * to the host's heap: 8 million 0s (16 MiB) cost the loop a turn of 88-270 ms even parsed off
 * it, most of it the collector moving and marking the array.
 */
const RPC_BODY_MAX_VALUES = 1_000_000;

/**
 * The answer to a batch's module call not started because its HTTP/1.0 client had closed its
 * side of the connection: such a client cannot be probed (HALF_CLOSED_PROBE_MS is HTTP/1.1
 * only), and one that had gone kept a batch of 1,000 calls of a 30 s method running 16 at a
 * time for 31 minutes. Undefined for a notification.
 */
function notRun(call: unknown): JsonRpcResponse | undefined {
  const r = (call ?? {}) as Record<string, unknown>;
  if (typeof r !== "object" || !Object.hasOwn(r, "id")) return undefined;
  const id = r["id"];
  const validId = id === null || (typeof id === "string" && id.length <= MAX_RPC_ID_CHARS) || (typeof id === "number" && Number.isFinite(id));
  return errorResponse(validId ? id : null, RPC_ERRORS.unavailable, "not run: this HTTP/1.0 client closed its side of the connection before the call started, and an HTTP/1.0 client cannot be asked whether it still waits (HALF_CLOSED_PROBE_MS probes HTTP/1.1 clients only); use HTTP/1.1, or keep the connection open until the answer", { code: "client_half_closed" });
}

/** Whether a request calls a module (or waits for modules' answers: run_cli, health). */
function ofModule(call: { method?: unknown } | null): boolean {
  return typeof call?.method === "string" && (call.method.includes(".") || WAITS_FOR_MODULES.has(call.method));
}

export type ParsedBody = { ok: true; body: unknown } | { ok: false; code: number; message: string };

/**
 * A JSON-RPC body, checked before and after JSON.parse: the nesting depth is measured on the
 * bytes first (JSON.parse of deep nesting would cost stack and time), then the batch length.
 * Never rejects.
 */
export async function parseJsonRpcBody(raw: Uint8Array, limits: Pick<RpcLimits, "max_json_depth" | "max_batch">): Promise<ParsedBody> {
  // Measured, then parsed, off the loop past JSON_ON_LOOP_BYTES (chain/json-off.ts): the depth
  // scan and JSON.parse of 16 MiB of tiny values (max_body_bytes raised) took one stretch of
  // 250 ms or more on the loop, and 8 million values are a 64 MB array on the host's heap.
  let body: unknown;
  try {
    body = await parseJson(raw, { lane: "rpc-server", maxValues: RPC_BODY_MAX_VALUES, valuesName: "RPC_BODY_MAX_VALUES; send smaller batches or parameters", maxDepth: limits.max_json_depth, depthName: "[rpc] max_json_depth" });
  } catch (err) {
    if (err instanceof JsonLimitError) {
      const message = err.message.replace("the JSON nests", "the JSON body nests");
      return { ok: false, code: RPC_ERRORS.invalidRequest, message };
    }
    return { ok: false, code: RPC_ERRORS.parse, message: `parse error: ${(err as Error).message}` };
  }
  if (Array.isArray(body)) {
    if (body.length === 0) return { ok: false, code: RPC_ERRORS.invalidRequest, message: "empty batch" };
    if (body.length > limits.max_batch) {
      return { ok: false, code: RPC_ERRORS.invalidRequest, message: `a batch may hold at most ${limits.max_batch} requests, this one has ${body.length} ([rpc] max_batch)` };
    }
  }
  return { ok: true, body };
}

export { jsonDepth } from "../../chain/json-off.ts";

const COMMA = Buffer.from(",");
const OPEN_BRACKET = Buffer.from("[");
const CLOSE_BRACKET = Buffer.from("]");

/**
 * Whether `sent` is the text `kept`, in time that depends on `kept`'s length only (one pass over
 * it, no early exit; a length that differs is folded into the result, not branched on). `kept`
 * is a header that passed authentication (at most max_header_bytes).
 */
export function sameText(kept: string, sent: string): boolean {
  let diff = kept.length ^ sent.length;
  for (let i = 0; i < kept.length; i++) diff |= kept.charCodeAt(i) ^ (sent.charCodeAt(i) | 0);
  return diff === 0;
}

function errorResponse(id: unknown, code: number, message: string, data?: unknown): JsonRpcResponse {
  return { jsonrpc: "2.0", id, error: { code, message, ...(data !== undefined ? { data } : {}) } };
}

function sendJson(res: ServerResponse, status: number, body: unknown, close = false): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text), ...(close ? { Connection: "close" } : {}) });
  res.end(text);
}

/** Pieces of an answer are merged into buffers of about this many bytes before being written. */
const WRITE_BYTES = 64 * 1024;

/** `parts` with consecutive pieces merged into buffers of at most WRITE_BYTES (a larger piece kept as it is). */
function mergeSmall(parts: Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  let group: Buffer[] = [];
  let bytes = 0;
  const close = () => {
    if (group.length > 0) out.push(group.length === 1 ? group[0]! : Buffer.concat(group, bytes));
    group = [];
    bytes = 0;
  };
  for (const p of parts) {
    if (bytes + p.length > WRITE_BYTES) close();
    group.push(p);
    bytes += p.length;
  }
  close();
  return out;
}

/** Resolves when `res` can take more, or is closed. */
function drainedOrClosed(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.on("drain", done);
    res.on("close", done);
  });
}

function sendText(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { "Content-Type": "text/plain; charset=utf-8", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

function sendEmpty(res: ServerResponse): void {
  res.writeHead(204);
  res.end();
}

/** Why a request body was not read whole: over max_body_bytes, or in more than MAX_REQUEST_BODY_PIECES pieces. */
type BodyRefusal = "bytes" | "pieces";

/**
 * The body; "bytes" when it is over `limit` (refused from Content-Length before anything is
 * read, or as soon as a chunked body grows past it); "pieces" when it came in more than
 * bodyPieces(limit) pieces; null when the client went away before its end. Each piece is
 * copied into one buffer as it comes (grown by doubling, never past `limit`), so what the body
 * holds is its bytes, not a Buffer per piece. On a refusal the rest is not read (stopBody).
 */
function readBody(req: IncomingMessage, res: ServerResponse, limit: number): Promise<Buffer | BodyRefusal | null> {
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > limit) {
    stopBody(req, res);
    return Promise.resolve("bytes");
  }
  const maxPieces = bodyPieces(limit);
  return new Promise((resolve) => {
    let buf = Buffer.allocUnsafe(Number.isFinite(declared) && declared > 0 ? declared : Math.min(limit, 16 * 1024));
    let size = 0;
    let pieces = 0;
    let done = false;
    const refuse = (why: BodyRefusal) => {
      done = true;
      stopBody(req, res);
      resolve(why);
    };
    req.on("data", (chunk: Buffer) => {
      if (done) return;
      if (size + chunk.length > limit) return refuse("bytes");
      if (++pieces > maxPieces) return refuse("pieces");
      if (size + chunk.length > buf.length) {
        const grown = Buffer.allocUnsafe(Math.min(limit, Math.max(buf.length * 2, size + chunk.length)));
        buf.copy(grown, 0, 0, size);
        buf = grown;
      }
      chunk.copy(buf, size);
      size += chunk.length;
    });
    req.on("end", () => {
      if (!done) resolve(buf.subarray(0, size));
    });
    req.on("error", () => resolve(null));
  });
}

/**
 * Read and drop a body the server will not use (an unauthorised request, a wrong path or
 * method, a request refused for pipelining, a GET with a body): at most max_body_bytes in at most
 * bodyPieces(limit) pieces, then the rest is not read and the connection is closed. Before,
 * such bodies were read without a bound until request_timeout_ms: one unauthenticated client
 * sending a chunked body one byte per chunk kept the loop busy with an event per byte.
 */
function discardBody(req: IncomingMessage, res: ServerResponse, limit: number): void {
  const maxPieces = bodyPieces(limit);
  let size = 0;
  let pieces = 0;
  const onData = (chunk: Buffer) => {
    size += chunk.length;
    if (size > limit || ++pieces > maxPieces) {
      req.off("data", onData);
      stopBody(req, res);
    }
  };
  req.on("data", onData);
}

/** Read no more of this request's body: its socket is not read again, and closes once the answer is written (at once if it was). */
function stopBody(req: IncomingMessage, res: ServerResponse): void {
  // The socket itself: pausing only the request would let the parser push pieces into it until
  // its buffer passed the high-water mark (64 KiB: 65,536 one-byte pieces).
  req.socket.pause();
  req.pause();
  if (!res.headersSent) res.shouldKeepAlive = false;
  else if (res.writableFinished) req.socket.destroy();
  else res.once("finish", () => req.socket.destroy());
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
