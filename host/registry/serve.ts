// `modhost registry serve DIR`: serve a registry directory over HTTP on 127.0.0.1, for testing
// and local use. It is a plain static file server (GET and HEAD, no directory listings, no
// path outside DIR): a registry needs nothing more, so any web server or object store can
// serve the same directory in production (behind TLS).

import { createReadStream } from "node:fs";
import { realpath, stat } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { capConnections, TIMEOUT_CHECK_EVERY_MS } from "../../chain/http-caps.ts";

export interface RegistryServer {
  url: string;
  port: number;
  server: http.Server;
  close(): Promise<void>;
}

export interface ServeOptions {
  port?: number;
  host?: string;
  /** Called for every request (the CLI logs them). */
  onRequest?: (method: string, url: string, status: number) => void;
}

function contentType(file: string): string {
  if (file.endsWith(".json") || file.endsWith(".sig")) return "application/json";
  return "application/octet-stream";
}

/**
 * Connections served at once. A new one past it closes the oldest connection with no request in
 * progress (idle, or still sending its head) to make room; when all are busy it is answered 503
 * naming this limit. Before, Node dropped every new connection without a word while a client
 * held 256 idle ones (for up to 40 s each: Node checked the head's timeout every 30 s).
 */
export const MAX_REGISTRY_CONNECTIONS = 256;

/**
 * A connection on which nothing moves either way for this long is closed: a client that stops
 * reading a file it asked for (within twice this: Node lets a write it saw move at the first
 * check go on for one more period). Before, it held its connection (one of MAX_REGISTRY_CONNECTIONS,
 * busy, so never closed to make room) and the file's open stream for as long as it liked.
 */
export const REGISTRY_STALL_TIMEOUT_MS = 10_000;

/** A request's head must arrive within this of its connection (or of the previous answer). */
export const REGISTRY_HEADERS_TIMEOUT_MS = 10_000;

/**
 * Requests one connection may have in progress at once (HTTP/1.1 pipelining: sent before the
 * answers to earlier ones were read). Node's server starts every pipelined request of a read
 * at once: one connection writing 5,000 GETs of a 4 MiB blob and reading nothing made the
 * server open the file 5,000 times (+5,001 descriptors, +655 MB of buffers, its loop held
 * 667 ms). Past it a request is answered 429 naming this limit, without touching the disk, and
 * the connection is closed after its answers; past 4 times it, it is closed at once
 * (chain/http-caps.ts). A file is opened only once its answer's turn on the connection has come.
 */
export const MAX_REGISTRY_PIPELINED = 16;

export async function serveRegistry(dir: string, opts: ServeOptions = {}): Promise<RegistryServer> {
  const root = await realpath(path.resolve(dir));
  // A request's head within 10 s, the whole request within 30 s, an idle connection 5 s.
  const server = http.createServer({
    headersTimeout: REGISTRY_HEADERS_TIMEOUT_MS,
    requestTimeout: 30_000,
    keepAliveTimeout: 5_000,
    connectionsCheckingInterval: TIMEOUT_CHECK_EVERY_MS,
  }, (req, res) => {
    if (!cap.request(req, res)) {
      if (res.statusCode === 429) opts.onRequest?.(req.method ?? "?", req.url ?? "", 429);
      return;
    }
    const done = (status: number, text?: string) => {
      opts.onRequest?.(req.method ?? "?", req.url ?? "", status);
      if (text !== undefined) {
        res.writeHead(status, { "Content-Type": "text/plain; charset=utf-8", "Content-Length": Buffer.byteLength(text) });
        res.end(req.method === "HEAD" ? undefined : text);
      }
    };
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("Allow", "GET, HEAD");
      return done(405, "method not allowed\n");
    }
    void (async () => {
      let rel: string;
      try {
        rel = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
      } catch {
        return done(400, "bad path\n");
      }
      const parts = rel.split("/").filter((p) => p !== "");
      if (parts.some((p) => p === ".." || p === "." || p.includes("\0") || p.includes("\\")) || parts.length === 0) return done(404, "not found\n");
      const file = path.join(root, ...parts);
      let real: string;
      try {
        real = await realpath(file);
      } catch {
        return done(404, "not found\n");
      }
      if (!real.startsWith(root + path.sep)) return done(404, "not found\n");
      const st = await stat(real).catch(() => undefined);
      if (!st?.isFile()) return done(404, "not found\n");
      res.writeHead(200, {
        "Content-Type": contentType(real),
        "Content-Length": st.size,
        // The index changes; blobs never do (they are named by their hash).
        "Cache-Control": parts[0] === "blobs" ? "public, max-age=31536000, immutable" : "no-cache",
      });
      done(200);
      if (req.method === "HEAD") return void res.end();
      // Opened once this answer is the connection's current one (a pipelined answer waits for
      // those before it without a socket): one open file per connection, not one per request.
      const send = () => void (res.destroyed || createReadStream(real).on("error", () => res.destroy()).pipe(res));
      if (res.socket !== null) send();
      else res.once("socket", send);
    })().catch(() => {
      if (!res.headersSent) done(500, "internal error\n");
      else res.destroy();
    });
  });
  // No listener for "timeout": Node destroys the socket.
  server.setTimeout(REGISTRY_STALL_TIMEOUT_MS);
  const cap = capConnections(server, MAX_REGISTRY_CONNECTIONS, (open) => `connection refused: the registry server has ${open} connections open, all with a request in progress, its limit (MAX_REGISTRY_CONNECTIONS, a fixed limit); retry in a moment`, { max: MAX_REGISTRY_PIPELINED, name: "MAX_REGISTRY_PIPELINED" });
  // A client that half-closes once its request is sent (shutdown(SHUT_WR): `nc -N`, some
  // scripts) still gets the file: by default Node ends such a connection at once, before an
  // answer that comes after a stat.
  (server as http.Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  const host = opts.host ?? "127.0.0.1";
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}/`,
    port,
    server,
    close: () => new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}
