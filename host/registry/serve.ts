// `modhost registry serve DIR`: serve a registry directory over HTTP on 127.0.0.1, for testing
// and local use. It is a plain static file server (GET and HEAD, no directory listings, no
// path outside DIR): a registry needs nothing more, so any web server or object store can
// serve the same directory in production (behind TLS).

import { createReadStream } from "node:fs";
import { realpath, stat } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";

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

/** Connections served at once; past it Node drops new ones at once (a client holding idle connections). */
export const MAX_REGISTRY_CONNECTIONS = 256;

export async function serveRegistry(dir: string, opts: ServeOptions = {}): Promise<RegistryServer> {
  const root = await realpath(path.resolve(dir));
  // A request's head within 10 s, the whole request within 30 s, an idle connection 5 s.
  const server = http.createServer({ headersTimeout: 10_000, requestTimeout: 30_000, keepAliveTimeout: 5_000 }, (req, res) => {
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
      createReadStream(real).on("error", () => res.destroy()).pipe(res);
    })().catch(() => {
      if (!res.headersSent) done(500, "internal error\n");
      else res.destroy();
    });
  });
  server.maxConnections = MAX_REGISTRY_CONNECTIONS;
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
