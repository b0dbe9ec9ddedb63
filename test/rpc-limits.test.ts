// The RPC server's bounds (host/rpc/server.ts, [rpc] limits): connection caps (total, per
// address, under RLIMIT_NOFILE), header/request/idle timeouts, header and body size, JSON
// nesting depth, batch length and method name length. Each refusal must name its limit and the
// config key. The flood test attacks a real host: a few thousand idle connections from another
// process while the host runs with a small open-file limit.

import test, { type ExecutionContext } from "ava";
import { spawn } from "node:child_process";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { RpcAuth, basicHeader, COOKIE_USER } from "../host/rpc/auth.ts";
import {
  DEFAULT_RPC_LIMITS, effectiveConnectionCap, jsonDepth, MAX_PIPELINED_REQUESTS, MAX_RPC_ID_CHARS, MAX_REQUEST_BODY_PIECES, bodyPieces, openFileLimit, parseJsonRpcBody, RpcServer, sameText,
  type Dispatch, type RpcLimits,
} from "../host/rpc/server.ts";
import { parseConfig } from "../host/config.ts";
import { ConfigError } from "../host/errors.ts";
import { sleep, startHost, tempDir, waitFor, GOOD_GRANTS } from "./helpers/host.ts";
import { canaryRound } from "./helpers/canary.ts";
import { call, manifest, oneByteChunks } from "./helpers/rpc.ts";

const quiet = { debug() {}, info() {}, warn() {}, error() {} };

interface Served {
  server: RpcServer;
  port: number;
  auth: string;
}

/** An RpcServer on loopback with a stub dispatcher ("echo" answers its params, "hang" never answers until released). */
async function serve(t: ExecutionContext, limits: Partial<RpcLimits>, dispatch?: Dispatch, metricsText: () => string = () => ""): Promise<Served> {
  const dir = await tempDir(t);
  const auth = RpcAuth.create({ cookieFile: path.join(dir, ".cookie") });
  const server = new RpcServer({
    bind: "127.0.0.1", port: 0, auth, log: quiet, limits, metricsText, authFailDelayMs: 1,
    dispatch: dispatch ?? (async (method, params) => {
      if (method === "echo") return params;
      throw new Error(`no ${method}`);
    }),
  });
  const at = await server.start();
  t.teardown(() => server.stop());
  return { server, port: at.port, auth: basicHeader({ user: COOKIE_USER, password: auth.cookie }) };
}

/** Send raw bytes; the bytes that come back until the server closes (or `waitMs` passes). */
function raw(port: number, data: string | ((s: net.Socket) => void), waitMs = 5000): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    let text = "";
    const timer = setTimeout(() => { s.destroy(); resolve({ text, closed: false }); }, waitMs);
    s.on("connect", () => (typeof data === "string" ? s.write(data) : data(s)));
    s.on("data", (d) => (text += d.toString("latin1")));
    s.on("error", () => undefined);
    s.on("close", () => { clearTimeout(timer); resolve({ text, closed: true }); });
  });
}

function postText(auth: string, body: string, extra = ""): string {
  return `POST / HTTP/1.1\r\nHost: x\r\nAuthorization: ${auth}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;
}

async function rpcPost(s: Served, body: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`http://127.0.0.1:${s.port}/`, { method: "POST", headers: { Authorization: s.auth }, body: typeof body === "string" ? body : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : undefined };
}

test("open-file limit: read from /proc/self/limits; the connection cap stays within a quarter of it", (t) => {
  t.is(openFileLimit("Limit  Soft Limit  Hard Limit  Units\nMax open files            1024                 4096                 files\n"), 1024);
  t.is(openFileLimit("Max open files            unlimited            unlimited            files\n"), undefined);
  const own = openFileLimit();
  t.true(own === undefined || own > 0, "this process's limit is readable on Linux");
  t.is(effectiveConnectionCap(64, 1024), 64);
  t.is(effectiveConnectionCap(1000, 1024), 256);
  t.is(effectiveConnectionCap(64, 40), 10);
  t.is(effectiveConnectionCap(64, 8), 4);
  t.is(effectiveConnectionCap(64, undefined), 64);
});

test("config: [rpc] limit keys are read, checked (whole numbers from 1) and documented defaults apply", (t) => {
  const src = "[rpc]\nmax_connections = 10\nidle_timeout_ms = 250\nmax_json_depth = 5\n";
  const c = parseConfig({ rpc: { max_connections: 10, idle_timeout_ms: 250, max_json_depth: 5 } }, src, "/tmp/modhost.toml");
  t.is(c.rpc.max_connections, 10);
  t.is(c.rpc.idle_timeout_ms, 250);
  t.is(c.rpc.max_json_depth, 5);
  t.is(c.rpc.max_body_bytes, DEFAULT_RPC_LIMITS.max_body_bytes);
  const bad = t.throws(() => parseConfig({ rpc: { max_batch: 0, header_timeout_ms: 5000, request_timeout_ms: 1000 } }, "[rpc]\nmax_batch = 0\nheader_timeout_ms = 5000\nrequest_timeout_ms = 1000\n", "/tmp/modhost.toml"), { instanceOf: ConfigError });
  t.regex(bad.message, /rpc\.max_batch: 0 is out of range/);
  t.regex(bad.message, /header_timeout_ms \(5000\) is longer than request_timeout_ms \(1000\)/);
});

test("JSON-RPC body: depth measured before parsing (strings ignored), batch length, never throws", async (t) => {
  const enc = (s: string) => Buffer.from(s);
  t.is(jsonDepth(enc('{"a":[1,{"b":"[[[[{{{{"}]}'), 100), 3);
  t.is(jsonDepth(enc('"\\"[[["'), 100), 0, "escaped quotes do not end a string");
  const deep = "[".repeat(1_000_000) + "]".repeat(1_000_000);
  const r = await parseJsonRpcBody(enc(deep), { max_json_depth: 32, max_batch: 10 });
  t.false(r.ok);
  if (!r.ok) {
    t.is(r.code, -32600);
    t.regex(r.message, /more than 32 deep \(\[rpc\] max_json_depth\)/);
  }
  const batch = await parseJsonRpcBody(enc(JSON.stringify(Array(11).fill({ method: "x" }))), { max_json_depth: 32, max_batch: 10 });
  t.false(batch.ok);
  if (!batch.ok) t.regex(batch.message, /at most 10 requests, this one has 11 \(\[rpc\] max_batch\)/);
  const garbage = await parseJsonRpcBody(enc("\xff\xfe{"), { max_json_depth: 32, max_batch: 10 });
  t.false(garbage.ok);
  if (!garbage.ok) t.is(garbage.code, -32700);
});

test("refusals name the limit and its [rpc] key: body (Content-Length and chunked), depth, batch, method length, headers", async (t) => {
  const s = await serve(t, { max_body_bytes: 1000, max_json_depth: 4, max_batch: 3, max_method_length: 16, max_header_bytes: 2048 });

  const declared = await raw(s.port, `POST / HTTP/1.1\r\nHost: x\r\nAuthorization: ${s.auth}\r\nContent-Length: 100000000\r\n\r\n{`);
  t.regex(declared.text, /^HTTP\/1\.1 413 /);
  t.regex(declared.text, /request body larger than 1000 bytes \(\[rpc\] max_body_bytes\)/);
  t.true(declared.closed, "the connection is closed after a 413");

  // Chunked: no Content-Length; refused once past the limit although the client keeps sending.
  const chunked = await raw(s.port, (sock) => {
    sock.write(`POST / HTTP/1.1\r\nHost: x\r\nAuthorization: ${s.auth}\r\nTransfer-Encoding: chunked\r\n\r\n`);
    const chunk = "x".repeat(600);
    let sent = 0;
    const timer = setInterval(() => {
      if (sock.destroyed || sent++ > 50) return clearInterval(timer);
      sock.write(`${chunk.length.toString(16)}\r\n${chunk}\r\n`);
    }, 5);
  });
  t.regex(chunked.text, /^HTTP\/1\.1 413 /);
  t.regex(chunked.text, /\[rpc\] max_body_bytes/);

  const depth = await rpcPost(s, '{"jsonrpc":"2.0","id":1,"method":"echo","params":[[[[[1]]]]]}');
  t.is(depth.json.error.code, -32600);
  t.regex(depth.json.error.message, /more than 4 deep \(\[rpc\] max_json_depth\)/);

  const batch = await rpcPost(s, Array(4).fill({ jsonrpc: "2.0", id: 1, method: "echo" }));
  t.regex(batch.json.error.message, /at most 3 requests, this one has 4 \(\[rpc\] max_batch\)/);

  const name = await rpcPost(s, { jsonrpc: "2.0", id: 7, method: "m".repeat(17) });
  t.is(name.json.id, 7);
  t.regex(name.json.error.message, /17 characters long, more than 16 \(\[rpc\] max_method_length\)/);

  const headers = await raw(s.port, `POST / HTTP/1.1\r\nHost: x\r\nX-Pad: ${"p".repeat(4000)}\r\n\r\n`);
  t.regex(headers.text, /^HTTP\/1\.1 431 /);
  t.regex(headers.text, /larger than 2048 bytes \(\[rpc\] max_header_bytes\)/);

  const ok = await rpcPost(s, { jsonrpc: "2.0", id: 1, method: "echo", params: [[1]] });
  t.deepEqual(ok.json, { jsonrpc: "2.0", id: 1, result: [[1]] }, "requests within every limit are served");
});

test("a string id longer than MAX_RPC_ID_CHARS (a 900 KiB one) is not echoed: the request is answered with an error naming the limit and id null, alone and in a batch; an id of exactly the limit is echoed", async (t) => {
  const s = await serve(t, {});
  const long = "x".repeat(900 * 1024);
  const alone = await rpcPost(s, { jsonrpc: "2.0", id: long, method: "echo", params: [1] });
  t.is(alone.json.id, null);
  t.is(alone.json.error.code, -32600);
  t.regex(alone.json.error.message, new RegExp(`the id is ${long.length} characters long, more than ${MAX_RPC_ID_CHARS} \\(MAX_RPC_ID_CHARS\\); send a shorter id`));
  const edge = "i".repeat(MAX_RPC_ID_CHARS);
  const batch = await rpcPost(s, [{ jsonrpc: "2.0", id: long, method: "echo", params: [1] }, { jsonrpc: "2.0", id: edge, method: "echo", params: [2] }]);
  t.is(batch.json.length, 2);
  t.deepEqual(batch.json[0], { jsonrpc: "2.0", id: null, error: alone.json.error });
  t.deepEqual(batch.json[1], { jsonrpc: "2.0", id: edge, result: [2] }, "an id of MAX_RPC_ID_CHARS is echoed");
});

test("sameText (the kept header's compare) says equal only for the same text: differences anywhere, in length, or of a prefix are unequal", (t) => {
  const kept = "Basic X19jb29raWVfXzphYmNkZWY=";
  t.true(sameText(kept, `${kept}`));
  t.true(sameText("", ""));
  t.false(sameText(kept, `x${kept.slice(1)}`), "first character");
  t.false(sameText(kept, `${kept.slice(0, -1)}x`), "last character");
  t.false(sameText(kept, kept.slice(0, -1)), "a prefix");
  t.false(sameText(kept, `${kept}=`), "one character more");
  t.false(sameText(kept, ""), "empty");
  t.false(sameText("", kept), "kept empty");
  t.false(sameText("Basic \u00e9", "Basic \u00e8"), "beyond ASCII");
  t.false(sameText("ab", "a\u0000"), "a NUL where the kept text has a character");
});

test("authentication is checked once per connection: the header that passed is not hashed again there; any other header on it (or on another connection) is checked in full, and a refused one is not remembered", async (t) => {
  const dir = await tempDir(t);
  const auth = RpcAuth.create({ cookieFile: path.join(dir, ".cookie") });
  let checks = 0;
  const check = auth.check.bind(auth);
  auth.check = (header) => {
    checks++;
    return check(header);
  };
  // A long idle timeout: the connection must stay open between requests on a loaded machine.
  const server = new RpcServer({ bind: "127.0.0.1", port: 0, auth, log: quiet, metricsText: () => "", authFailDelayMs: 1, limits: { idle_timeout_ms: 120_000 }, dispatch: async (_m, params) => params });
  const { port } = await server.start();
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(async () => {
    agent.destroy();
    await server.stop();
  });
  const good = basicHeader({ user: COOKIE_USER, password: auth.cookie });
  // The right cookie with one character changed: same length, same user.
  const bad = basicHeader({ user: COOKIE_USER, password: `${auth.cookie.slice(0, -1)}${auth.cookie.endsWith("0") ? "1" : "0"}` });
  const sockets = new Set<unknown>();
  const post = (authorization: string | undefined) => new Promise<number>((resolve, reject) => {
    const body = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "echo", params: [1] });
    const req = http.request({ host: "127.0.0.1", port, method: "POST", path: "/", agent, headers: { "Content-Length": body.length, ...(authorization === undefined ? {} : { Authorization: authorization }) } }, (res) => {
      sockets.add(res.socket);
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", reject);
    req.end(body);
  });

  t.is(await post(good), 200);
  t.is(await post(good), 200);
  t.is(await post(good), 200);
  t.is(sockets.size, 1, "the three requests share one keep-alive connection");
  t.is(checks, 1, "the header that passed on this connection is not checked again on it");

  t.is(await post(bad), 401, "a different header on an authenticated connection is refused");
  t.is(await post(undefined), 401, "no header on an authenticated connection is refused");
  t.is(checks, 3, "each other header is checked in full");
  t.is(await post(good), 200);
  t.is(checks, 4, "after a refusal, the good header is checked in full again (nothing kept)");
  t.is(sockets.size, 1, "all on the same connection");

  // A new connection starts with nothing kept.
  agent.destroy();
  const fresh = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => fresh.destroy());
  const status = await new Promise<number>((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, method: "POST", path: "/", agent: fresh, headers: { Authorization: bad } }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", reject);
    req.end("{}");
  });
  t.is(status, 401);
  t.is(checks, 5);
});

test("timeouts: a silent connection and slow headers get 408 naming the keys; an idle keep-alive connection is closed", async (t) => {
  const s = await serve(t, { header_timeout_ms: 300, request_timeout_ms: 600, idle_timeout_ms: 300 });

  const silent = await raw(s.port, () => undefined, 8000);
  t.true(silent.closed, "a connection that sends nothing is closed");
  t.regex(silent.text, /^HTTP\/1\.1 408 /);
  t.regex(silent.text, /\[rpc\] header_timeout_ms/);
  t.regex(silent.text, /\[rpc\] request_timeout_ms/);

  const slowloris = await raw(s.port, (sock) => {
    sock.write("POST / HTTP/1.1\r\nHost: x\r\n");
    const timer = setInterval(() => (sock.destroyed ? clearInterval(timer) : sock.write("X-A: b\r\n")), 50);
  }, 8000);
  t.true(slowloris.closed);
  t.regex(slowloris.text, /^HTTP\/1\.1 408 /);

  // One answered request, then silence: the server closes the keep-alive connection.
  const idle = await raw(s.port, postText(s.auth, '{"jsonrpc":"2.0","id":1,"method":"echo","params":[1]}'), 8000);
  t.true(idle.closed, "the keep-alive connection is closed when idle");
  t.regex(idle.text, /^HTTP\/1\.1 200 /);
  t.regex(idle.text, /"result":\[1\]/);
  t.is(s.server.stats.timeouts >= 2, true);
});

test("clients that go away while sending a body (100 in a row) are counted, not logged: the host log does not grow with them", async (t) => {
  const errors: string[] = [];
  const dir = await tempDir(t);
  const auth = RpcAuth.create({ cookieFile: path.join(dir, ".cookie") });
  const server = new RpcServer({
    bind: "127.0.0.1", port: 0, auth, log: { ...quiet, error: (m: string) => void errors.push(m) }, limits: {}, metricsText: () => "", authFailDelayMs: 1,
    dispatch: async (_method, params) => params,
  });
  const at = await server.start();
  t.teardown(() => server.stop());
  const header = basicHeader({ user: COOKIE_USER, password: auth.cookie });
  for (let i = 0; i < 100; i++) {
    await new Promise<void>((resolve) => {
      const sock = net.connect(at.port, "127.0.0.1", () => {
        sock.write(`POST / HTTP/1.1\r\nHost: x\r\nAuthorization: ${header}\r\nContent-Length: 1000\r\n\r\n{"jsonrpc":`, () => setImmediate(() => sock.destroy()));
      });
      sock.on("error", () => undefined);
      sock.on("close", () => resolve());
    });
  }
  await waitFor(() => server.connections === 0 && server.stats.requests >= 100, 20_000, "the server to see all 100 requests and their ends");
  await waitFor(() => (server.stats.clientsGone || 0) + errors.length >= 100, 20_000, "each abandoned body to be handled");
  t.deepEqual(errors.slice(0, 2), [], "nothing logged as an error");
  t.is(server.stats.clientsGone, 100);
  // The server still serves.
  t.is((await rpcPost({ server, port: at.port, auth: header }, { jsonrpc: "2.0", id: 1, method: "echo", params: [1] })).json.result[0], 1);
});

// Before: the body's pieces were kept as Buffers (four connections of ~155,000 one-byte chunks:
// +828 MB of heap, loop delays up to 609 ms), and the bodies of unauthorised requests were read
// and dropped without a bound until request_timeout_ms (an event per byte for 30 s): neither
// connection below was closed, and the first was not answered.
test("a chunked body one byte per chunk is refused past MAX_REQUEST_BODY_PIECES (413 naming it), and an unauthorised one is not read past it (401): both connections are closed, not read to the end", async (t) => {
  t.timeout(120_000);
  const s = await serve(t, { request_timeout_ms: 120_000, header_timeout_ms: 60_000 });
  const chunks = 100_000; // 100 KB of body: within max_body_bytes, far past the pieces
  const [authorised, unauthorised] = await Promise.all([
    oneByteChunks(s.port, s.auth, chunks, 60_000),
    oneByteChunks(s.port, undefined, chunks, 60_000),
  ]);
  t.true(authorised.closed, "the server closed the connection of the authorised client");
  t.regex(authorised.text, /^HTTP\/1\.1 413 /);
  t.regex(authorised.text, new RegExp(`more than ${MAX_REQUEST_BODY_PIECES} pieces .*MAX_REQUEST_BODY_PIECES`));
  t.regex(authorised.text, /Connection: close/i);
  t.true(unauthorised.closed, "the server closed the connection of the unauthorised client");
  t.regex(unauthorised.text, /^HTTP\/1\.1 401 /);
  t.is(s.server.stats.tooLarge, 1);
  // The server still serves, on a new connection.
  t.is((await rpcPost(s, { jsonrpc: "2.0", id: 1, method: "echo", params: [1] })).json.result[0], 1);
  // A raised max_body_bytes allows a piece per 256 bytes (a large body over a slow link).
  t.is(bodyPieces(DEFAULT_RPC_LIMITS.max_body_bytes), MAX_REQUEST_BODY_PIECES);
  t.is(bodyPieces(32 * 1024 * 1024), 131_072);
});

test("connection caps: idle connections make room for a new client; when all are busy, 503 names the cap (total and per address)", async (t) => {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  const s = await serve(t, { max_connections: 4, max_connections_per_address: 3 }, async (method, params) => {
    if (method === "hang") { await released; return "late"; }
    return params;
  });
  t.teardown(() => release());

  // Three idle connections from 127.0.0.1 (its cap), then a client with a request: served, and
  // the oldest idle one closed to make room.
  const idle = await Promise.all([0, 1, 2].map(() => openIdle(s.port)));
  await waitFor(() => s.server.connections === 3, 5000, "three connections counted");
  const served = await rpcPost(s, { jsonrpc: "2.0", id: 1, method: "echo", params: ["hi"] });
  t.deepEqual(served.json.result, ["hi"]);
  await waitFor(() => idle[0]!.closed, 5000, "the oldest idle connection is closed");
  t.false(idle[2]!.closed);
  for (const c of idle) c.socket.destroy();
  await waitFor(() => s.server.connections === 0, 5000, "connections closed");

  // Three busy connections from 127.0.0.1: a fourth is refused by the per-address cap.
  const before = s.server.stats.requests;
  const busy = [0, 1, 2].map(() => raw(s.port, postText(s.auth, '{"jsonrpc":"2.0","id":1,"method":"hang"}'), 20_000));
  await waitFor(() => s.server.connections === 3, 5000, "three busy connections");
  // Busy once their requests are being served (a connection whose request is not parsed yet is idle).
  await waitFor(() => s.server.stats.requests >= before + 3, 5000, "three requests in progress");
  const perAddress = await raw(s.port, postText(s.auth, '{"jsonrpc":"2.0","id":2,"method":"echo"}'));
  t.regex(perAddress.text, /^HTTP\/1\.1 503 /);
  t.regex(perAddress.text, /\[rpc\] max_connections_per_address = 3/);

  // From another loopback address the per-address cap has room, but the total (4) is reached
  // with one more busy connection.
  const other = rawFrom("127.0.0.2", s.port, postText(s.auth, '{"jsonrpc":"2.0","id":1,"method":"hang"}'));
  await waitFor(() => s.server.connections === 4, 5000, "four busy connections");
  await waitFor(() => s.server.stats.requests >= before + 4, 5000, "four requests in progress");
  const total = await rawFrom("127.0.0.3", s.port, postText(s.auth, '{"jsonrpc":"2.0","id":3,"method":"echo"}'));
  t.regex(total.text, /^HTTP\/1\.1 503 /);
  t.regex(total.text, /\[rpc\] max_connections = 4/);
  t.true(s.server.stats.peakConnections <= 4, `never more than 4 served at once (peak ${s.server.stats.peakConnections})`);

  release();
  for (const r of [...(await Promise.all(busy)), await other]) t.regex(r.text, /"result":"late"/);
});

function openIdle(port: number): Promise<{ socket: net.Socket; closed: boolean }> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    const c = { socket, closed: false };
    socket.on("error", () => undefined);
    socket.on("close", () => (c.closed = true));
    socket.on("connect", () => resolve(c));
  });
}

function rawFrom(localAddress: string, port: number, data: string): Promise<{ text: string }> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: "127.0.0.1", localAddress });
    let text = "";
    s.on("connect", () => s.write(data));
    s.on("data", (d) => (text += d.toString("latin1")));
    s.on("error", () => undefined);
    s.on("close", () => resolve({ text }));
    setTimeout(() => s.destroy(), 20_000).unref();
  });
}

/** Opens N connections to 127.0.0.1:PORT (200 at a time) and holds them; reports on stdout; "release" on stdin closes them. */
const FLOODER = `
const net = require("node:net");
const [port, total] = [Number(process.argv[1]), Number(process.argv[2])];
const sockets = [];
let settled = 0, connected = 0, closed = 0, releasing = false;
const report = (what) => process.stdout.write(JSON.stringify({ what, settled, connected, closed }) + "\\n");
function one() {
  return new Promise((done) => {
    const s = net.connect(port, "127.0.0.1");
    sockets.push(s);
    let counted = false;
    const settle = () => { if (!counted) { counted = true; settled++; done(); } };
    s.resume(); // read what the server says (a 408), so its close is seen
    s.on("connect", () => { connected++; settle(); });
    s.on("error", settle);
    s.on("close", () => { if (!releasing) closed++; settle(); });
  });
}
(async () => {
  for (let i = 0; i < total; i += 200) await Promise.all(Array.from({ length: Math.min(200, total - i) }, one));
  report("opened");
  setInterval(() => report("tick"), 200);
})();
process.stdin.on("data", () => { releasing = true; for (const s of sockets) s.destroy(); process.exit(0); });
`;

const STORE = {
  toml: manifest("store", ["register_rpc_endpoint", "write_storage", "read_storage"]),
  files: {
    "index.ts": `
export default async function start(ctx: any) {
  await ctx.storage.openTree("t");
  await ctx.rpc.register("put", "Write a value and read it back", async (p: any) => {
    await ctx.storage.put("t", p.key, p.value);
    return await ctx.storage.get("t", p.key);
  });
  ctx.log.info("store ready");
}
`,
  },
};

test.serial("idle-connection flood (3000 sockets from another process, host at RLIMIT_NOFILE 1024): RPC answers a new client, a module's storage write works, the idle ones are closed after the timeout", async (t) => {
  t.timeout(180_000, "3000 connections on a loaded machine");
  // The host in this process gets a small open-file limit, as on a default Linux install; the
  // flooder is another process with its own.
  const lowered = await new Promise<number>((resolve) => spawn("prlimit", ["--pid", String(process.pid), "--nofile=1024:"], { stdio: "ignore" }).on("exit", (code) => resolve(code ?? 1)));
  t.is(lowered, 0, "prlimit lowered this process's open-file limit");
  t.is(openFileLimit(), 1024);

  const h = await startHost(t, {
    inline: { store: STORE },
    grants: { store: ["register_rpc_endpoint", "write_storage", "read_storage"] },
    configure: (c) => {
      c.rpc.header_timeout_ms = 1500;
      c.rpc.request_timeout_ms = 3000;
      c.rpc.idle_timeout_ms = 1500;
    },
  });
  await h.waitForLog(/^store ready$/, { source: "store" });
  const server = h.host.rpcServer!;
  t.is(server.connectionCap, 64, "64 (the default) is within a quarter of 1024");

  const flooder = spawn(process.execPath, ["-e", FLOODER, String(server.address!.port), "3000"], { stdio: ["pipe", "pipe", "inherit"] });
  t.teardown(() => { flooder.kill("SIGKILL"); });
  let last: { what: string; settled: number; connected: number; closed: number } | undefined;
  let buffered = "";
  flooder.stdout.on("data", (d: Buffer) => {
    buffered += d.toString();
    const lines = buffered.split("\n");
    buffered = lines.pop()!;
    for (const l of lines) last = JSON.parse(l);
  });
  await waitFor(() => last && last.settled === 3000, 60_000, "3000 connection attempts settled");

  // While 3000 idle sockets are held open against it, the host still serves a new client and
  // the module's storage.
  const started = Date.now();
  t.deepEqual(await call(h, "store.put", { key: "k", value: { n: 42 } }), { n: 42 });
  t.true(server.connections <= server.connectionCap, `${server.connections} connections served, cap ${server.connectionCap}`);
  t.true(server.stats.peakConnections <= server.connectionCap, `peak ${server.stats.peakConnections} within the cap`);

  // The idle ones are closed by the server once the header timeout has passed.
  await waitFor(() => last && last.closed === 3000, 30_000, "every flood connection closed by the server", () => JSON.stringify({ last, served: server.connections, stats: server.stats }));
  t.is(last?.closed, 3000, `all 3000 closed ${Date.now() - started} ms after the flood settled`);
  flooder.stdin.write("release\n");
  await waitFor(() => server.connections <= 1, 10_000, "no flood connection left on the server");
  t.deepEqual(await call(h, "store.put", { key: "k2", value: "after" }), "after");
});

// ---- answers: JSON written in slices, at most max_response_bytes ----

test("json writer: plain data comes out as JSON.stringify writes it, long strings and surrogate pairs included; binary as hex", async (t) => {
  const { jsonChunks } = await import("../host/rpc/json-writer.ts");
  const text = async (v: unknown) => Buffer.concat(await jsonChunks(v, 1 << 30)).toString("utf8");
  const long = "x\"\\\n\u0001é😀".repeat(30_000); // 240,000 UTF-16 units: several pieces, pairs at many offsets
  const values: unknown[] = [
    null, true, 0, -1.5, Number.NaN, "", "a\"b", long, [], {}, [1, [2, [3]], { a: [] }],
    { a: 1, b: undefined, c: () => 1, d: [undefined, () => 1], e: { toJSON: () => "j" }, f: new Date(0) },
    Array.from({ length: 5000 }, (_, i) => ({ [`k${i}`]: i, s: `v${i}` })),
  ];
  for (const v of values) t.is(await text(v), JSON.stringify(v));
  // Small answers take JSON.stringify itself; padded past 512 values the same ones take the walk.
  const padding = Array.from({ length: 600 }, () => 0);
  for (const v of values) t.is(await text([v, padding]), JSON.stringify([v, padding]));
  const odd = "a".repeat(64 * 1024 - 1) + "😀" + "b"; // a pair exactly across the piece boundary
  t.is(await text(odd), JSON.stringify(odd));
  t.is(JSON.parse(await text(odd)), odd);
  t.is(await text({ bytes: Buffer.from([0, 1, 0xab]), u8: new Uint8Array([255]) }), '{"bytes":"0001ab","u8":"ff"}');
  t.is(await text({ n: 12345678901234567890n }), '{"n":12345678901234567890}');
});

test("json writer: stops as soon as the text passes the limit, and gives the loop back between slices of a large answer", async (t) => {
  const { jsonChunks, JsonTooLargeError } = await import("../host/rpc/json-writer.ts");
  const err = await t.throwsAsync(jsonChunks({ s: "y".repeat(1 << 20) }, 100_000), { instanceOf: JsonTooLargeError });
  t.regex(err!.message, /more than 100000 bytes of JSON/);
  t.is(Buffer.concat(await jsonChunks("z".repeat(99_998), 100_000)).length, 100_000, "exactly at the limit is fine");
  let yields = 0;
  const slow = async () => {
    yields++;
    await new Promise((r) => setImmediate(r));
  };
  // 16 MiB of binary (32 MiB of hex) cannot be written in one 2 ms slice on any machine.
  const chunks = await jsonChunks({ b: Buffer.alloc(16 << 20, 7) }, 64 << 20, slow);
  t.is(Buffer.concat(chunks).length, (32 << 20) + 8);
  t.true(yields > 0, "the loop was given back at least once");
});

test("a batch of 200 calls answered in the same turns, modules' methods and host methods mixed, has exactly 200 answers, each id once, in the batch's order", async (t) => {
  // Modules' methods are answered together, all waiting lanes' in one turn (as a module's
  // answers read in one chunk are); host methods at once.
  const waiting: Array<() => void> = [];
  const tick = setInterval(() => {
    for (const answer of waiting.splice(0)) answer();
  }, 1);
  t.teardown(() => clearInterval(tick));
  const s = await serve(t, {}, async (method, params) => {
    if (method.includes(".")) await new Promise<void>((r) => waiting.push(r));
    return params;
  });
  const calls = Array.from({ length: 200 }, (_, i) => ({ jsonrpc: "2.0", id: i, method: i % 3 === 0 ? "echo" : "m.echo", params: [i] }));
  for (let round = 0; round < 5; round++) {
    const batch = await rpcPost(s, calls);
    // Before: lanes looked at the next call before an await and took it after, so that a batch
    // of 1,000 was answered with 1,008, the extra ones "invalid request" with id null.
    t.is(batch.json.length, 200, `round ${round}: one answer per call`);
    t.deepEqual(batch.json.map((a: { id: number }) => a.id), calls.map((c) => c.id), "each id once, in order");
    t.true(batch.json.every((a: { id: number; result: number[] }) => a.result?.[0] === a.id), "each answer is its call's");
  }
});

test("an answer larger than max_response_bytes is a -32006 error naming the limit, with its id; in a batch, the answers that fit are kept", async (t) => {
  const s = await serve(t, { max_response_bytes: 10_000 });
  const big = await rpcPost(s, { jsonrpc: "2.0", id: 7, method: "echo", params: { s: "b".repeat(20_000) } });
  t.is(big.status, 200);
  t.is(big.json.id, 7);
  t.is(big.json.error.code, -32006);
  t.regex(big.json.error.message, /more than 10000 bytes of JSON, the limit \(\[rpc\] max_response_bytes\); ask for less/);
  t.deepEqual(big.json.error.data, { code: "response_too_large", limit: 10_000 });
  const batch = await rpcPost(s, [
    { jsonrpc: "2.0", id: 1, method: "echo", params: { s: "a".repeat(6000) } },
    { jsonrpc: "2.0", id: 2, method: "echo", params: { s: "a".repeat(6000) } },
    { jsonrpc: "2.0", id: 3, method: "echo", params: { s: "small" } },
  ]);
  t.is(batch.json.length, 3);
  t.is(batch.json[0].result.s.length, 6000);
  t.is(batch.json[1].error.code, -32006);
  t.regex(batch.json[1].error.message, /answers of this batch come to more than 10000 bytes/);
  t.deepEqual(batch.json[2].result, { s: "small" });
  const ok = await rpcPost(s, { jsonrpc: "2.0", id: 8, method: "echo", params: { s: "c".repeat(100) } });
  t.is(ok.json.result.s.length, 100, "answers under the limit are untouched");
});

test("a batch's answers are counted as they arrive: one past max_response_bytes becomes a -32006 error and its data is let go before the rest of the batch is in", async (t) => {
  const v8 = await import("node:v8");
  const vm = await import("node:vm");
  v8.setFlagsFromString("--expose-gc");
  const gc = vm.runInNewContext("gc") as () => void;
  const made: WeakRef<object>[] = [];
  let release: () => void = () => undefined;
  const hang = new Promise<void>((r) => (release = r));
  let answered = 0;
  const s = await serve(t, { max_response_bytes: 100_000 }, async (method) => {
    if (method === "big") {
      // A module answering big: 60,000 characters of JSON each.
      const result = { s: "b".repeat(60_000) };
      made.push(new WeakRef(result));
      answered++;
      return result;
    }
    if (method === "hang") return hang.then(() => "late");
    throw new Error(`no ${method}`);
  });
  const pending = rpcPost(s, [
    { jsonrpc: "2.0", id: 1, method: "big" },
    { jsonrpc: "2.0", id: 2, method: "big" },
    { jsonrpc: "2.0", id: 3, method: "big" },
    { jsonrpc: "2.0", id: 4, method: "hang" },
  ]);
  await waitFor(() => answered === 3, 10_000);
  // The batch still waits for "hang": only the answer that fit may still be held.
  for (let i = 0; i < 5; i++) {
    await new Promise((r) => setImmediate(r));
    gc();
  }
  t.is(made.filter((w) => w.deref() !== undefined).length, 1, "two of the three answers were dropped on arrival");
  release();
  const batch = await pending;
  t.is(batch.json.length, 4);
  const kept = batch.json.filter((a: { result?: unknown }) => a.result !== undefined && a.result !== "late");
  t.is(kept.length, 1);
  t.is(kept[0].result.s.length, 60_000);
  const refused = batch.json.filter((a: { error?: { code: number } }) => a.error?.code === -32006);
  t.is(refused.length, 2);
  t.regex(refused[0].error.message, /answers of this batch come to more than 100000 bytes of JSON, the limit \(\[rpc\] max_response_bytes\)/);
  t.is(batch.json.find((a: { id: number }) => a.id === 4).result, "late");
});

test("json writer: jsonBytesAtLeast never counts more than the JSON text holds, and stops past its bound", async (t) => {
  const { jsonBytesAtLeast } = await import("../host/rpc/json-writer.ts");
  const values: unknown[] = [null, true, 0, 123456, -1.5, "", "é😀\"\\\n", [], {}, [1, [2, [3]], { a: [] }], { a: 1, b: "x", c: [null, false] },
    Array.from({ length: 500 }, (_, i) => ({ [`k${i}`]: i, s: `v${i}` })), { d: new Date(0) }];
  for (const v of values) t.true(jsonBytesAtLeast(v, 1 << 30) <= Buffer.byteLength(JSON.stringify(v)), JSON.stringify(v).slice(0, 40));
  t.true(jsonBytesAtLeast({ b: new Uint8Array(10) }, 1 << 30) <= '{"b":"00000000000000000000"}'.length);
  t.true(jsonBytesAtLeast(new Array(100_000).fill("xx"), 1000) > 1000);
  t.true(jsonBytesAtLeast(Array.from({ length: 1000 }, () => "x".repeat(1000)), 5000) < 10_000, "stopped soon after the bound");
});

// Serial: it writes 8 answers of 16 MiB, and the connection-cap test above counts on a prompt loop.
test.serial("clients that never read their answers (JSON-RPC and /metrics, 16 MiB each): past max_unsent_bytes the connections whose answers waited longest are closed, so the server holds at most the limit; a client that reads gets its whole answer", async (t) => {
  const MB = 1024 * 1024;
  const big = "x".repeat(16 * MB);
  const cap = 32 * MB;
  const s = await serve(t, { max_unsent_bytes: cap }, async () => big, () => big);
  const sockets: net.Socket[] = [];
  t.teardown(() => { for (const c of sockets) c.destroy(); });
  const requests = [
    ...Array.from({ length: 4 }, () => postText(s.auth, JSON.stringify({ jsonrpc: "2.0", id: 1, method: "big" }))),
    ...Array.from({ length: 4 }, () => `GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: ${s.auth}\r\n\r\n`),
  ];
  for (const [i, request] of requests.entries()) {
    const c = net.connect(s.port, "127.0.0.1");
    c.on("error", () => undefined);
    await new Promise((resolve) => c.once("connect", resolve));
    c.write(request);
    c.pause(); // never read
    sockets.push(c);
    // Each answer is written (counted) before the next request is sent: the oldest is known.
    await waitFor(() => s.server.stats.requests > i && s.server.unsentAnswerBytes > 0, 30_000, `answer ${i + 1} to be written`);
    t.true(s.server.unsentAnswerBytes <= cap, `held ${s.server.unsentAnswerBytes} bytes after answer ${i + 1}`);
  }
  // 8 answers of 16 MiB against 32 MiB: at most 2 held (a socket's kernel buffer takes some of each).
  await waitFor(() => s.server.connections <= 2, 30_000, () => `the server to close the connections with the oldest unread answers (${s.server.connections} open)`);
  t.true(s.server.stats.slowReadersClosed >= 6);
  // The client sees the close once it reads: the oldest got less than its answer.
  const got = await Promise.all(sockets.map((c) => new Promise<number>((resolve) => {
    let n = 0;
    c.on("data", (d: Buffer) => { n += d.length; });
    c.once("close", () => resolve(n));
    setTimeout(() => resolve(n), 10_000).unref();
    c.resume();
  })));
  t.true(got.filter((n) => n < big.length).length >= 6, `at least six were cut short: ${got.join(", ")}`);
  const whole = await rpcPost(s, { jsonrpc: "2.0", id: 2, method: "big" });
  t.is(whole.json?.result?.length, big.length, "a reading client gets its whole answer");
});

test("pipelining: one connection's 40 requests sent without reading serve at most MAX_PIPELINED_REQUESTS at once; the rest are answered 429 in order, naming the limit", async (t) => {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  let started = 0;
  const s = await serve(t, {}, async (method, params) => {
    if (method === "hang") {
      started++;
      await released;
      return "late";
    }
    return params;
  });
  t.teardown(() => release());
  const n = 40;
  const client = net.connect(s.port, "127.0.0.1");
  t.teardown(() => client.destroy());
  let text = "";
  client.on("data", (d: Buffer) => (text += d.toString("latin1")));
  client.on("error", () => undefined);
  client.on("connect", () => client.write(postText(s.auth, '{"jsonrpc":"2.0","id":1,"method":"hang"}').repeat(n)));
  // Before: all 40 were in progress at once (every pipelined request Node has read is started).
  await waitFor(() => s.server.stats.pipelinedRefused === n - MAX_PIPELINED_REQUESTS, 30_000, () => `the requests past the limit to be refused (${s.server.stats.pipelinedRefused}, ${started} started)`);
  t.is(started, MAX_PIPELINED_REQUESTS, "only MAX_PIPELINED_REQUESTS reached the dispatcher");
  release();
  const statuses = () => [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
  await waitFor(() => statuses().length === n, 10_000, () => `all ${n} answers (${statuses().join(",")}) ${text.slice(0, 600)}`);
  // The answers come in request order: the served ones, then the refused ones.
  t.deepEqual(statuses(), [...Array(MAX_PIPELINED_REQUESTS).fill(200), ...Array(n - MAX_PIPELINED_REQUESTS).fill(429)]);
  t.regex(text, /more than 16 requests in progress on this connection \(MAX_PIPELINED_REQUESTS, a fixed limit\)/);
});

// A local process without the cookie: 4 connections, each 50,000 requests pipelined in one go,
// never reading. In a process of its own, so that this process's loop is the host's alone.
const PIPELINER = `
const net = require("node:net");
const [port, connections, requests] = process.argv.slice(1).map(Number);
const body = '{"jsonrpc":"2.0","id":1,"method":"getblockcount"}';
const one = "POST / HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: Basic eDp5\\r\\nContent-Type: application/json\\r\\nContent-Length: " + body.length + "\\r\\n\\r\\n" + body;
const blob = one.repeat(requests / 10);
for (let c = 0; c < connections; c++) {
  const s = net.connect(port, "127.0.0.1");
  s.on("error", () => {});
  s.pause();
  s.on("connect", () => { for (let k = 0; k < 10; k++) s.write(blob); });
}
setInterval(() => {}, 1000);
`;

test.serial("under the real host: a client without the cookie pipelining 4 x 50,000 requests without reading gets at most MAX_PIPELINED_REQUESTS of them in progress per connection; another client is answered, the canary stores every block", async (t) => {
  t.timeout(180_000);
  const h = await startHost(t, { modules: ["good"], grants: { good: GOOD_GRANTS } });
  await h.waitForState("good", "running", 60_000);
  const server = h.host.rpcServer!;
  const port = server.address!.port;
  const connections = 4;
  const before = server.stats.unauthorised;
  const started = performance.now();
  const child = spawn(process.execPath, ["-e", PIPELINER, String(port), String(connections), "50000"], { stdio: ["ignore", "inherit", "inherit"] });
  t.teardown(() => child.kill("SIGKILL"));
  await waitFor(() => server.stats.pipelinedRefused > 1000, 60_000, () => `pipelined requests refused (${server.stats.pipelinedRefused})`);
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  let late = 0;
  const latencies: number[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await canaryRound(h);
    if (!r.stored || !r.answered) late++;
    const t0 = performance.now();
    await call(h, "list");
    latencies.push(Math.round(performance.now() - t0));
    await sleep(500);
  }
  loop.disable();
  const elapsed = performance.now() - started;
  const served = server.stats.unauthorised - before;
  t.log(`served ${served} unauthenticated requests, refused ${server.stats.pipelinedRefused} in ${(elapsed / 1000).toFixed(1)} s; another client's calls ${latencies.join(", ")} ms; loop delay max ${(loop.max / 1e6).toFixed(0)} ms, p99 ${(loop.percentile(99) / 1e6).toFixed(0)} ms`);
  // Each request served waits 250 ms (the delay after a failed authentication) before it ends, so
  // at most MAX_PIPELINED_REQUESTS per connection every 250 ms. Before: 46,035 in ~10 s.
  t.true(served <= connections * MAX_PIPELINED_REQUESTS * (elapsed / 250 + 1), `${served} served`);
  t.is(late, 0, "the canary stored every block within 5 s and the host answered RPC within 5 s");
});

for (const withIdle of [false, true]) {
  test(`at max_connections_per_address, connections whose every request is waiting out the delay before its 401 are closed for a new client with the cookie${withIdle ? ", before an idle connection with the cookie" : ""}: it is served (before: ${withIdle ? "the idle client with the cookie lost its connection instead" : "every place was busy and it was told 503"})`, async (t) => {
    const dir = await tempDir(t);
    const auth = RpcAuth.create({ cookieFile: path.join(dir, ".cookie") });
    const server = new RpcServer({
      bind: "127.0.0.1", port: 0, auth, log: quiet, metricsText: () => "", authFailDelayMs: 3000,
      limits: { max_connections_per_address: 4, idle_timeout_ms: 120_000 }, dispatch: async (_m, params) => params,
    });
    const { port } = await server.start();
    t.teardown(() => server.stop());
    const good = basicHeader({ user: COOKIE_USER, password: auth.cookie });
    const body = '{"jsonrpc":"2.0","id":1,"method":"echo","params":[7]}';
    const request = (authorization?: string) => `POST / HTTP/1.1\r\nHost: x\r\n${authorization ? `Authorization: ${authorization}\r\n` : ""}Content-Length: ${body.length}\r\n\r\n${body}`;
    // A client with the cookie whose keep-alive connection is idle after its answer.
    const idle = withIdle ? net.connect(port, "127.0.0.1") : undefined;
    let idleSaid = "";
    if (idle) {
      idle.on("data", (d) => (idleSaid += d.toString("latin1")));
      idle.on("error", () => undefined);
      t.teardown(() => idle.destroy());
      idle.write(request(good));
      await waitFor(() => idleSaid.includes('"result":[7]'), 5000, "the first client's answer");
    }
    // Clients without it, each request held 3 s before its 401: every other place is busy.
    const denied = Array.from({ length: withIdle ? 3 : 4 }, () => {
      const s = net.connect(port, "127.0.0.1");
      const c = { closed: false };
      s.on("error", () => undefined);
      s.on("close", () => (c.closed = true));
      s.write(request());
      t.teardown(() => s.destroy());
      return c;
    });
    await waitFor(() => server.stats.unauthorised >= denied.length, 5000, "the requests to be refused their credentials");
    const answer = await raw(port, request(good), 1500);
    t.log(`the new client with the cookie was told: ${answer.text.slice(0, 100).replace(/\r\n/g, " | ")}`);
    t.regex(answer.text, /^HTTP\/1\.1 200 OK[\s\S]*"result":\[7\]/, "the new client with the cookie is served");
    t.is(server.stats.connectionsRefused, 0, "no connection was told 503");
    t.is(denied.filter((c) => c.closed).length, 1, "one connection whose request was being refused was closed to make room");
    if (idle) {
      idleSaid = "";
      idle.write(request(good));
      await sleep(1000);
      t.regex(idleSaid, /"result":\[7\]/, "the idle client with the cookie kept its connection and is served again on it");
    }
  });
}
