// The host's own HTTP client for servers it asks itself (the bitcoind JSON-RPC client,
// chain/bitcoind/rpc.ts), read through the same pacing as modules' http_request answers
// (./paced-socket.ts): small reads are held to SMALL_READS_PER_SECOND after SMALL_READ_BURST,
// and the time each read and its parsing cost the loop is charged to the client's own CPU
// budget (`cpuMsPerSecond`), past which its socket is not read. The whole answer has a deadline
// (`timeoutMs`), its head HOST_CLIENT_HEAD_BYTES and its body `maxBodyBytes`, each counted on
// the wire before the parser sees it. Before, these clients used fetch (undici), which read as
// fast as a server dribbled: 310-390 ms of the loop's CPU a second against a server writing one
// byte at a time, for as long as the answer's timeout (30 s for the bitcoind client).
//
// One connection per exchange (no keep-alive): what a connection costs is small next to the
// answers these clients read, and a connection never carries one exchange's pacing into another.

import http from "node:http";
import net from "node:net";
import { performance } from "node:perf_hooks";
import { PacedSocket } from "./paced-socket.ts";

/** Bytes of an answer's status line and headers, on the wire. */
const HOST_CLIENT_HEAD_BYTES = 64 * 1024;
/**
 * Pieces an answer's body may come in (reads, or chunks of a chunked answer): each is a Buffer
 * held until the answer is whole. 64 MiB in reads of 1 KiB; pacing keeps a server sending
 * one-byte chunks far below it within a deadline of 30 s.
 */
const HOST_CLIENT_BODY_PIECES = 65_536;

export interface PacedRequest {
  url: URL;
  method: "GET" | "POST";
  headers: Record<string, string>;
  body?: string;
  /** The whole exchange: connecting, sending, the whole answer. */
  timeoutMs: number;
  /** Largest body read. */
  maxBodyBytes: number;
  /** What reading and parsing may cost the loop a second (the client's budget). */
  budget: CpuBudget;
}

export interface PacedAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** The body as read, piece by piece. */
  pieces: readonly Buffer[];
  /** The body in one Buffer, made at the first read (a copy: tens of ms for 64 MiB). */
  readonly body: Buffer;
}

/** Why an exchange failed: the server unreachable or gone, too slow, or an answer too large. */
export class PacedHttpError extends Error {
  constructor(readonly kind: "unreachable" | "timeout" | "too_large", message: string) {
    super(message);
    this.name = "PacedHttpError";
  }
}

/**
 * A budget of the loop's CPU a second, shared by the exchanges of one client: `charge` takes
 * what a read cost and answers how long to wait before reading again (0: now). Up to one
 * second's worth may be spent at once.
 */
export class CpuBudget {
  #tokens: number;
  #refilled = performance.now();

  constructor(readonly msPerSecond: number) {
    this.#tokens = msPerSecond;
  }

  readonly charge = (ms: number): number => {
    const now = performance.now();
    this.#tokens = Math.min(this.msPerSecond, this.#tokens + ((now - this.#refilled) * this.msPerSecond) / 1000);
    this.#refilled = now;
    this.#tokens -= ms;
    return this.#tokens < 0 ? (-this.#tokens * 1000) / this.msPerSecond : 0;
  };
}

export function pacedHttpRequest(req: PacedRequest): Promise<PacedAnswer> {
  if (req.url.protocol !== "http:") return Promise.reject(new PacedHttpError("unreachable", `only http: URLs are supported, not ${req.url.protocol}`));
  const where = `${req.url.hostname}:${req.url.port || 80}`;
  return new Promise<PacedAnswer>((resolve, reject) => {
    let done = false;
    const finish = (err: Error | undefined, answer?: PacedAnswer) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(answer!);
    };
    const timer = setTimeout(() => finish(new PacedHttpError("timeout", `no complete answer from ${where} within ${req.timeoutMs} ms`)), req.timeoutMs);
    // A high-water mark of one byte: paused, the socket stops reading the kernel at once.
    const host = req.url.hostname.replace(/^\[(.*)\]$/, "$1");
    const socket = net.connect({ host, port: Number(req.url.port || 80), noDelay: true, readableHighWaterMark: 1 } as net.NetConnectOpts);
    socket.once("error", (err) => finish(new PacedHttpError("unreachable", (err as NodeJS.ErrnoException).code ?? err.message)));
    let wire = 0;
    let headDone = false;
    const maxWire = HOST_CLIENT_HEAD_BYTES + req.maxBodyBytes + 1024 * 1024;
    const count = (chunk: Buffer): boolean => {
      if (done) return false;
      wire += chunk.length;
      let over: PacedHttpError | undefined;
      if (!headDone && wire > HOST_CLIENT_HEAD_BYTES) over = new PacedHttpError("too_large", `${where} sent more than ${HOST_CLIENT_HEAD_BYTES} bytes before its answer's headers were complete (HOST_CLIENT_HEAD_BYTES)`);
      else if (wire > maxWire) over = new PacedHttpError("too_large", `the answer from ${where} took more than ${maxWire} bytes on the wire (its body's limit, ${req.maxBodyBytes}, plus its head and chunk framing)`);
      // Not while the parser is being handed this read: on nextTick.
      if (over) process.nextTick(finish, over);
      return over === undefined;
    };
    const connected = new PacedSocket(socket, count, req.budget.charge, undefined);
    const headers: Record<string, string> = { ...req.headers, Host: req.url.host, Connection: "close" };
    if (req.body !== undefined) headers["Content-Length"] = String(Buffer.byteLength(req.body));
    const request = http.request({
      createConnection: () => connected,
      method: req.method,
      path: `${req.url.pathname}${req.url.search}`,
      headers,
      setHost: false,
      maxHeaderSize: HOST_CLIENT_HEAD_BYTES,
    });
    request.on("error", (err) => finish(new PacedHttpError("unreachable", (err as NodeJS.ErrnoException).code ?? err.message)));
    request.on("response", (res) => {
      headDone = true;
      const declared = Number(res.headers["content-length"]);
      if (Number.isFinite(declared) && declared > req.maxBodyBytes) {
        finish(new PacedHttpError("too_large", `the answer from ${where} is ${declared} bytes, over the limit of ${req.maxBodyBytes}`));
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (chunk: Buffer) => {
        if (done) return;
        connected.bodyPieces++;
        size += chunk.length;
        if (size > req.maxBodyBytes) finish(new PacedHttpError("too_large", `the answer from ${where} exceeds the limit of ${req.maxBodyBytes} bytes`));
        else if (chunks.length >= HOST_CLIENT_BODY_PIECES) finish(new PacedHttpError("too_large", `the answer from ${where} came in more than ${HOST_CLIENT_BODY_PIECES} pieces (HOST_CLIENT_BODY_PIECES); its server must send it in larger ones`));
        else chunks.push(chunk);
      });
      res.on("error", (err) => finish(new PacedHttpError("unreachable", `the connection broke while reading the answer: ${err.message}`)));
      res.on("close", () => { if (!res.complete) finish(new PacedHttpError("unreachable", `${where} closed the connection before the whole answer arrived`)); });
      res.on("end", () => {
        let body: Buffer | undefined;
        finish(undefined, {
          status: res.statusCode ?? 0,
          headers: res.headers,
          pieces: chunks,
          get body() {
            body ??= Buffer.concat(chunks, size);
            return body;
          },
        });
      });
    });
    request.end(req.body);
  });
}
