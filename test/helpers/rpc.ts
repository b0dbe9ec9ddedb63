// Talking to a test host's RPC server over real HTTP: the address it listens on, its cookie,
// raw POSTs (for auth and protocol tests) and plain calls.

import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import net from "node:net";
import type { TestHost } from "./host.ts";

export interface HttpAnswer {
  status: number;
  headers: Headers;
  text: string;
  /** The parsed body, when it is JSON. */
  json: any;
}

export function rpcUrl(h: TestHost, path = "/"): string {
  const a = h.host.rpcServer?.address;
  if (!a) throw new Error("the host has no RPC server running");
  return `http://${a.host}:${a.port}${path}`;
}

export function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
}

/** The Authorization header made from the host's cookie file. */
export async function cookieAuth(h: TestHost): Promise<string> {
  const text = await readFile(h.config.rpc.cookie_file, "utf8");
  const i = text.indexOf(":");
  return basic(text.slice(0, i), text.slice(i + 1));
}

/** POST a body (an object is JSON-encoded) with the cookie, or with `auth` (null: none). */
export async function post(h: TestHost, body: unknown, auth?: string | null): Promise<HttpAnswer> {
  const authorization = auth === undefined ? await cookieAuth(h) : auth;
  const res = await fetch(rpcUrl(h), {
    method: "POST",
    headers: { "Content-Type": "application/json", ...(authorization ? { Authorization: authorization } : {}) },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return answer(res);
}

export async function get(h: TestHost, path: string, auth?: string | null): Promise<HttpAnswer> {
  const authorization = auth === undefined ? await cookieAuth(h) : auth;
  const res = await fetch(rpcUrl(h, path), { headers: authorization ? { Authorization: authorization } : {} });
  return answer(res);
}

async function answer(res: Response): Promise<HttpAnswer> {
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

export class RpcFailure extends Error {
  constructor(readonly code: number, message: string, readonly data?: unknown) {
    super(message);
  }
}

/** Call one method with the cookie; the result, or throws RpcFailure with the error. */
export async function call(h: TestHost, method: string, params?: unknown): Promise<any> {
  const r = await post(h, { jsonrpc: "2.0", id: 1, method, ...(params !== undefined ? { params } : {}) });
  if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${r.text}`);
  if (r.json.error) throw new RpcFailure(r.json.error.code, r.json.error.message, r.json.error.data);
  return r.json.result;
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
/**
 * A loopback port free now, for a server a test starts later (a host process given it in its
 * config). Taken below the kernel's ephemeral range: a port from that range (what listen(0)
 * gives) may be taken meanwhile as the local end of any outgoing connection, and the suite's
 * floods open thousands of them (CI once saw a host's RPC port taken so between the pick and
 * its start). Random, so that tests running at once rarely try the same one; checked by
 * binding it.
 */
export async function freePort(): Promise<number> {
  const [low] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);
  const top = Math.min((low ?? 32768) - 1, 32767);
  for (let tries = 0; tries < 64 && top > 11_000; tries++) {
    const port = 10_000 + Math.floor(Math.random() * (top - 10_000));
    if (await canBind(port)) return port;
  }
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((r) => server.close(r));
  return port;
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/** An inline module's manifest. */
export function manifest(name: string, capabilities: string[]): string {
  return `name = "${name}"\nversion = "0.1.0"\nentry_point = "index.ts"\ncapabilities = ${JSON.stringify(capabilities)}\n`;
}

/**
 * Send a chunked POST whose body comes one byte per chunk (`chunks` of them, never finished),
 * in 60 KB writes; what the server answered and whether it closed the connection (within `waitMs`).
 */
export function oneByteChunks(port: number, auth: string | undefined, chunks: number, waitMs: number): Promise<{ text: string; closed: boolean; sent: number }> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    let text = "";
    let sent = 0;
    const timer = setTimeout(() => { s.destroy(); resolve({ text, closed: false, sent }); }, waitMs);
    const piece = Buffer.from("1\r\n \r\n".repeat(10_000));
    const pump = () => {
      while (sent < chunks && !s.destroyed) {
        sent += 10_000;
        if (!s.write(piece)) return void s.once("drain", pump);
      }
    };
    s.on("connect", () => {
      s.write(`POST / HTTP/1.1\r\nHost: x\r\n${auth ? `Authorization: ${auth}\r\n` : ""}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`);
      pump();
    });
    s.on("data", (d) => (text += d.toString("latin1")));
    s.on("error", () => undefined);
    s.on("close", () => { clearTimeout(timer); resolve({ text, closed: true, sent }); });
  });
}

/**
 * POST `body` on a raw connection as HTTP/`version`, then close the writing side (FIN): what
 * the server says until it closes (`said`), and the socket, to close later.
 */
export function postHalfClosed(h: TestHost, auth: string, body: unknown, version: "1.0" | "1.1" = "1.1"): { socket: net.Socket; said: () => string; closed: Promise<void> } {
  const a = h.host.rpcServer!.address!;
  const text = JSON.stringify(body);
  const socket = net.connect(a.port, a.host);
  let said = "";
  socket.setEncoding("utf8");
  socket.on("data", (d) => (said += d));
  socket.on("error", () => {});
  const closed = new Promise<void>((r) => socket.once("close", () => r()));
  const host = version === "1.1" ? "Host: x\r\n" : "";
  socket.end(`POST / HTTP/${version}\r\n${host}Authorization: ${auth}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`);
  return { socket, said: () => said, closed };
}

/**
 * A child process's script (node -e) that pipelines requests at a JSON-RPC server:
 * `port auth conns pipelined ms`, the body on stdin. Each of `conns` connections writes
 * `pipelined` POSTs of the body (or, with auth "-", the body as raw bytes: a request of the
 * test's own making), and one more for each answer read (102 Processing not counted), until `ms`
 * have passed. Prints "started" once it runs, then its answers' HTTP statuses as JSON
 * ({"200": n, ...}). A process of its own: its work is not the host's loop's.
 */
export const PIPELINE_FLOODER = `
const net = require("node:net");
const [port, auth, conns, pipelined, ms] = process.argv.slice(1);
const body = require("node:fs").readFileSync(0);
const request = auth === "-" ? body : Buffer.concat([Buffer.from("POST / HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: " + auth + "\\r\\nContent-Type: application/json\\r\\nContent-Length: " + body.length + "\\r\\n\\r\\n", "latin1"), body]);
const statuses = {};
let running = true;
const sockets = [];
for (let i = 0; i < Number(conns); i++) {
  const s = net.connect(Number(port), "127.0.0.1");
  sockets.push(s);
  let buf = Buffer.alloc(0);
  s.on("error", () => {});
  s.on("connect", () => { for (let j = 0; j < Number(pipelined); j++) s.write(request); });
  s.on("data", (d) => {
    buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
    for (;;) {
      const end = buf.indexOf("\\r\\n\\r\\n");
      if (end < 0) return;
      const head = buf.subarray(0, end).toString("latin1");
      const length = Number(/content-length: (\\d+)/i.exec(head)?.[1] ?? 0);
      if (buf.length < end + 4 + length) return;
      buf = buf.subarray(end + 4 + length);
      const status = head.slice(9, 12);
      if (status === "102") continue;
      statuses[status] = (statuses[status] ?? 0) + 1;
      if (running) s.write(request);
    }
  });
}
process.stdout.write("started\\n");
setTimeout(() => {
  running = false;
  for (const s of sockets) s.destroy();
  process.stdout.write(JSON.stringify(statuses));
}, Number(ms));
`;
