// A connection cap for the small HTTP servers (`modhost registry serve`, the inspector, the Core facade)
// that idle connections cannot fill. Node's own `maxConnections` drops every new connection
// without a word once the cap is reached, for as long as whoever holds the connections likes;
// and Node checks head and request timeouts only every 30 s unless told otherwise. The JSON-RPC
// server (host/rpc/server.ts) has its own, richer version of the same (per address, stats).

import type http from "node:http";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";

/** Connections past the cap being told why (503) before they are closed. */
const REFUSING_SLOTS = 16;

/** How often head and request timeouts are checked (Node's default is 30 s): pass as `connectionsCheckingInterval`. */
export const TIMEOUT_CHECK_EVERY_MS = 1000;

export interface ConnectionCap {
  /** A connection counted against the cap (not one being refused). */
  has(socket: Socket): boolean;
  /** Count a request in progress on `socket` until `release()` (or its close). */
  busy(socket: Socket): () => void;
  /**
   * A request arrived: whether to serve it. Not when its connection was refused at the cap
   * (closed), nor past the connection's `pipelined` limit: counted in progress until its answer
   * is closed, a request past it is answered 429 naming the limit without being served and the
   * connection closed after its answers; past 4 times it (a client that ignores the close), the
   * connection is closed at once.
   */
  request(req: IncomingMessage, res: ServerResponse): boolean;
}

/** The limit of requests in progress on one connection of a server (HTTP/1.1 pipelining), and its name. */
export interface PipelinedLimit {
  max: number;
  name: string;
}

/**
 * Hold `server` to `max` connections. A new connection past it closes the oldest one with no
 * request in progress (idle, or still sending its head) to make room; when every one is busy,
 * it is answered 503 with `refusal` (which names the limit) and closed. A server's handlers call
 * `busy` for each request (and upgrade) and ignore sockets `has` does not know.
 */
export function capConnections(server: http.Server, max: number, refusal: (open: number) => string, pipelined: PipelinedLimit): ConnectionCap {
  // Each counted connection, oldest first, with its requests in progress.
  const conns = new Map<Socket, { busy: number }>();
  server.maxConnections = max + REFUSING_SLOTS;
  server.on("connection", (socket: Socket) => {
    if (conns.size >= max) {
      const idle = [...conns].find(([, c]) => c.busy === 0)?.[0];
      if (idle !== undefined) {
        conns.delete(idle);
        idle.destroy();
      } else {
        const text = `${refusal(conns.size)}\n`;
        socket.end(`HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\nRetry-After: 1\r\n\r\n${text}`);
        setTimeout(() => socket.destroy(), 1000).unref();
        return;
      }
    }
    conns.set(socket, { busy: 0 });
    socket.once("close", () => conns.delete(socket));
  });
  const cap: ConnectionCap = {
    has: (socket) => conns.has(socket),
    request(req, res) {
      const socket = req.socket;
      if (!conns.has(socket)) {
        socket.destroy(); // refused at the cap
        return false;
      }
      res.once("close", cap.busy(socket));
      const inProgress = conns.get(socket)!.busy;
      if (inProgress > 4 * pipelined.max) {
        socket.destroy();
        return false;
      }
      if (inProgress > pipelined.max) {
        res.shouldKeepAlive = false;
        const text = `more than ${pipelined.max} requests in progress on this connection (${pipelined.name}, a fixed limit): this one was not served; read the answers before sending more\n`;
        res.writeHead(429, { "Content-Type": "text/plain; charset=utf-8", "Content-Length": Buffer.byteLength(text), Connection: "close" });
        res.end(req.method === "HEAD" ? undefined : text);
        return false;
      }
      return true;
    },
    busy(socket) {
      const c = conns.get(socket);
      if (c === undefined) return () => {};
      c.busy++;
      let released = false;
      return () => {
        if (released) return;
        released = true;
        c.busy--;
      };
    },
  };
  return cap;
}

/**
 * Bytes that the requests in progress of a server hold (their bodies), all connections together,
 * held to `cap`: a request whose bytes fit (or that finds nothing held) takes them at once; the
 * others wait in order, their bodies unread (their sockets' buffers fill and their clients wait),
 * until the ones before them let theirs go. Used by the JSON-RPC server (BODY_BYTES_IN_PROGRESS)
 * and the Core facade (FACADE_BODY_BYTES_IN_PROGRESS).
 */
export class ByteRoom {
  /** Bytes taken and not let go. */
  held = 0;
  /** Requests that had to wait. */
  waited = 0;
  private readonly waiters: Array<{ bytes: number; grant: () => void }> = [];

  constructor(private readonly cap: number) {}

  /** Take `bytes` for the request `res` answers: true at once or once they fit; false when its connection closed first. */
  take(bytes: number, res: ServerResponse): Promise<boolean> | boolean {
    if (this.waiters.length === 0 && (this.held === 0 || this.held + bytes <= this.cap)) {
      this.held += bytes;
      return true;
    }
    this.waited++;
    return new Promise<boolean>((resolve) => {
      const waiter = { bytes, grant: () => resolve(true) };
      this.waiters.push(waiter);
      res.once("close", () => {
        const i = this.waiters.indexOf(waiter);
        if (i < 0) return;
        this.waiters.splice(i, 1);
        resolve(false);
        this.release(0);
      });
    });
  }

  /** Let go of `bytes`, and grant the waiting requests that now fit, in order. */
  release(bytes: number): void {
    this.held -= bytes;
    while (this.waiters.length > 0) {
      const first = this.waiters[0]!;
      if (this.held > 0 && this.held + first.bytes > this.cap) break;
      this.waiters.shift();
      this.held += first.bytes;
      first.grant();
    }
  }
}

/**
 * Bytes that the answers of a server's requests in progress hold, all connections together, held
 * to `cap` (the JSON-RPC server's ANSWER_BYTES_HELD, the Core facade's FACADE_ANSWER_BYTES_HELD).
 * Each request has a share (`share()`): it takes bytes as its answers are made, an answer that
 * would pass the cap is refused (the server answers an error for it instead), and the share gives
 * everything back when it ends (its answer written, or its client gone). After its end nothing
 * more is counted: a batch that goes on making answers for a client that left cannot hold bytes
 * for good. It refuses rather than waits: two batches each holding answers while waiting for
 * room would wait for each other.
 */
export class AnswerBytes {
  /** Bytes taken by shares not ended. */
  held = 0;
  /** Answers refused: they would have passed the cap. */
  refused = 0;

  constructor(readonly cap: number) {}

  share(): AnswerShare {
    return new AnswerShare(this);
  }
}

/** One request's part of an AnswerBytes. */
export class AnswerShare {
  /** Bytes this request holds. */
  bytes = 0;
  /** Its response closed: nothing more is counted. */
  ended = false;
  /** What it held when the answer being made started (`startAnswer`). */
  private mark = 0;

  constructor(private readonly pool: AnswerBytes) {}

  /** The answer being made starts here: `dropAnswer` gives back what it took since. */
  startAnswer(): void {
    this.mark = this.bytes;
  }

  /**
   * Take `n` more bytes: false (counted as refused) if that passes the cap, unless the answer
   * being made is alone (nothing held before it, by this request or any other: it is made
   * whole), or if the share has ended.
   */
  take(n: number): boolean {
    if (this.ended) return false;
    const alone = this.mark === 0 && this.pool.held === this.bytes;
    if (!alone && this.pool.held + n > this.pool.cap) {
      this.pool.refused++;
      return false;
    }
    this.force(n);
    return true;
  }

  /** Take `n` more whatever is held (small answers that must be made: errors). */
  force(n: number): void {
    if (this.ended) return;
    this.bytes += n;
    this.pool.held += n;
  }

  /** Give back what the answer being made took (it was refused, and its pieces dropped). */
  dropAnswer(): void {
    this.pool.held -= this.bytes - this.mark;
    this.bytes = this.mark;
  }

  /** Give back everything; count nothing more. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.pool.held -= this.bytes;
    this.bytes = 0;
  }
}
