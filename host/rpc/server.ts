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

import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { RpcAuth } from "./auth.ts";
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
} as const;

export class RpcError extends Error {
  constructor(readonly code: number, message: string, readonly data?: unknown) {
    super(message);
    this.name = "RpcError";
  }
}

export type Dispatch = (method: string, params: unknown) => Promise<unknown>;

export interface RpcServerOptions {
  bind: string;
  port: number;
  auth: RpcAuth;
  dispatch: Dispatch;
  /** The /metrics page. */
  metricsText: () => string | Promise<string>;
  metricsWithoutAuth?: boolean;
  /** Largest accepted request body; default 1 MiB. */
  maxBodyBytes?: number;
  /** Most requests in one batch; default 1000. */
  maxBatch?: number;
  /** Pause before answering a failed authentication (slows guessing); default 250 ms. */
  authFailDelayMs?: number;
  log: SourceLogger;
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
  readonly stats = { requests: 0, calls: 0, errors: 0, unauthorised: 0 };

  constructor(private readonly opts: RpcServerOptions) {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err) => {
        opts.log.error(`RPC request failed: ${(err as Error)?.stack ?? String(err)}`);
        if (!res.headersSent) sendJson(res, 500, errorResponse(null, RPC_ERRORS.internal, "internal error"));
        else res.destroy();
      });
    });
    this.server.requestTimeout = 30_000;
    this.server.headersTimeout = 10_000;
    this.server.keepAliveTimeout = 5_000;
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
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.stats.requests++;
    const url = new URL(req.url ?? "/", "http://localhost");
    const isMetrics = url.pathname === "/metrics";
    if (!isMetrics && url.pathname !== "/") {
      sendText(res, 404, "not found: POST JSON-RPC to / or GET /metrics\n");
      return;
    }
    if (!(isMetrics && this.opts.metricsWithoutAuth) && !this.opts.auth.check(req.headers.authorization)) {
      this.stats.unauthorised++;
      req.resume();
      await sleep(this.opts.authFailDelayMs ?? 250);
      res.setHeader("WWW-Authenticate", 'Basic realm="modhost"');
      sendText(res, 401, "unauthorised: use the cookie in the host's cookie_file (user __cookie__) or the [rpc] user and password\n");
      return;
    }
    if (isMetrics) {
      if (req.method !== "GET" && req.method !== "HEAD") {
        res.setHeader("Allow", "GET, HEAD");
        sendText(res, 405, "use GET\n");
        return;
      }
      req.resume();
      const body = await this.opts.metricsText();
      res.writeHead(200, { "Content-Type": "text/plain; version=0.0.4; charset=utf-8", "Content-Length": Buffer.byteLength(body) });
      res.end(req.method === "HEAD" ? undefined : body);
      return;
    }
    if (req.method !== "POST") {
      res.setHeader("Allow", "POST");
      sendText(res, 405, "use POST with a JSON-RPC 2.0 body\n");
      return;
    }
    const limit = this.opts.maxBodyBytes ?? 1024 * 1024;
    const raw = await readBody(req, limit);
    if (raw === undefined) {
      sendJson(res, 413, errorResponse(null, RPC_ERRORS.invalidRequest, `request body larger than ${limit} bytes`), true);
      return;
    }
    let body: unknown;
    try {
      body = JSON.parse(raw.toString("utf8"));
    } catch (err) {
      sendJson(res, 200, errorResponse(null, RPC_ERRORS.parse, `parse error: ${(err as Error).message}`));
      return;
    }
    if (Array.isArray(body)) {
      const max = this.opts.maxBatch ?? 1000;
      if (body.length === 0) {
        sendJson(res, 200, errorResponse(null, RPC_ERRORS.invalidRequest, "empty batch"));
        return;
      }
      if (body.length > max) {
        sendJson(res, 200, errorResponse(null, RPC_ERRORS.invalidRequest, `a batch may hold at most ${max} requests`));
        return;
      }
      const answers = (await Promise.all(body.map((item) => this.one(item)))).filter((a): a is JsonRpcResponse => a !== undefined);
      if (answers.length === 0) sendEmpty(res);
      else sendJson(res, 200, answers);
      return;
    }
    const answer = await this.one(body);
    if (answer === undefined) sendEmpty(res);
    else sendJson(res, 200, answer);
  }

  /** One JSON-RPC request; undefined for a notification. */
  private async one(item: unknown): Promise<JsonRpcResponse | undefined> {
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
    const params = r["params"];
    if (params !== undefined && params !== null && typeof params !== "object") {
      this.stats.errors++;
      return errorResponse(id, RPC_ERRORS.invalidRequest, "params must be an object or an array");
    }
    this.stats.calls++;
    try {
      const result = await this.opts.dispatch(method, params ?? undefined);
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

function errorResponse(id: unknown, code: number, message: string, data?: unknown): JsonRpcResponse {
  return { jsonrpc: "2.0", id, error: { code, message, ...(data !== undefined ? { data } : {}) } };
}

function sendJson(res: ServerResponse, status: number, body: unknown, close = false): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text), ...(close ? { Connection: "close" } : {}) });
  res.end(text);
}

function sendText(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { "Content-Type": "text/plain; charset=utf-8", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

function sendEmpty(res: ServerResponse): void {
  res.writeHead(204);
  res.end();
}

/** The body, or undefined when it exceeds `limit` bytes (the rest is not read). */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > limit) {
    req.resume();
    return Promise.resolve(undefined);
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on("data", (chunk: Buffer) => {
      if (over) return;
      size += chunk.length;
      if (size > limit) {
        over = true;
        chunks.length = 0;
        resolve(undefined);
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => {
      if (!over) resolve(Buffer.concat(chunks));
    });
    req.on("error", reject);
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
