// http_request (ctx.network.fetch, permission network_access scoped by host): real HTTP servers
// on 127.0.0.1 started by the test, requests through the host's API hub (as in fs.test.ts) and
// from a real isolate module through the harness. The scope target is the canonical host:port
// of the URL; what is checked is what is connected to; deny wins; redirects are not followed;
// host names must resolve to public addresses (a fixed resolver table stands in for DNS); the
// answer, the time and the requests in flight are bounded; the audit log records each access.

import test from "ava";
import type { ExecutionContext } from "ava";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { readFile } from "node:fs/promises";
import { ApiHub, HubError, type Action, type Denial } from "../host/hub.ts";
import { parseDescriptor, resolveGrants, type EffectiveGrants } from "../capabilities/grants.ts";
import type { CallContext, HostServices } from "../capabilities/types.ts";
import type { ChainBackend } from "../chain/backend.ts";
import {
  MAX_IN_FLIGHT, MAX_REQUEST_BODY_BYTES, MAX_RESPONSE_BODY_BYTES, parseHttpUrl, requestsInFlight,
} from "../capabilities/http.ts";
import { addressesFor, specialAddressKind } from "../capabilities/address-policy.ts";
import { startHost, waitFor } from "./helpers/host.ts";
import { REPORT, callApi, inlineModule, type Outcome } from "./helpers/modules.ts";

// ---------------------------------------------------------------------------------------
// A test server

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

interface Server {
  port: number;
  seen: Seen[];
  /** Requests the server saw for `path` (with query). */
  count(path: string): number;
}

const BYTES = Uint8Array.from({ length: 256 }, (_, i) => i);

async function server(t: ExecutionContext): Promise<Server> {
  const seen: Seen[] = [];
  const srv = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      const url = new URL(req.url ?? "/", "http://x");
      const status = /^\/status\/(\d{3})$/.exec(url.pathname);
      if (url.pathname === "/echo") {
        res.setHeader("X-Reply", "Yes");
        res.setHeader("Set-Cookie", ["a=1", "b=2"]);
        res.setHeader("Content-Type", "application/json");
        res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body: body.toString("base64") }));
      } else if (status) {
        res.statusCode = Number(status[1]);
        res.end(`status ${status[1]}`);
      } else if (url.pathname === "/bytes") {
        res.setHeader("Content-Type", "application/octet-stream");
        res.end(BYTES);
      } else if (url.pathname === "/redirect") {
        res.statusCode = 302;
        res.setHeader("Location", url.searchParams.get("to") ?? "/");
        res.end("moved");
      } else if (url.pathname === "/big" || url.pathname === "/exact") {
        // Streamed (chunked, no Content-Length): the limit is enforced while reading.
        let left = MAX_RESPONSE_BODY_BYTES + (url.pathname === "/big" ? 1 : 0);
        const block = Buffer.alloc(64 * 1024, 0x61);
        const write = () => {
          while (left > 0) {
            const n = Math.min(left, block.length);
            left -= n;
            if (!res.write(block.subarray(0, n))) { res.once("drain", write); return; }
          }
          res.end();
        };
        res.on("error", () => {});
        write();
      } else if (url.pathname === "/big-declared") {
        res.setHeader("Content-Length", String(MAX_RESPONSE_BODY_BYTES + 1));
        res.on("error", () => {});
        if (req.method === "HEAD") res.end();
        else res.write("a");
      } else if (url.pathname === "/slow") {
        // Never answers; the connection is closed at teardown.
      } else {
        res.statusCode = 404;
        res.end();
      }
    });
  });
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", () => resolve()));
  t.teardown(() => {
    srv.closeAllConnections();
    srv.close();
  });
  return {
    port: (srv.address() as AddressInfo).port,
    seen,
    count: (path) => seen.filter((s) => s.url === path).length,
  };
}

// ---------------------------------------------------------------------------------------
// The hub, as a module with given grants

function grantsOf(allow: string[], deny: string[] = []): EffectiveGrants {
  const requested = [parseDescriptor("network_access")];
  return resolveGrants(requested, allow.map((d) => parseDescriptor(d)), deny.map((d) => parseDescriptor(d))).effective;
}

interface World {
  /** The module this world's requests come from (its own in-flight budget). */
  module: string;
  audits: Action[];
  denials: Denial[];
  /** Host names the resolver was asked for. */
  lookups: string[];
  /** As `module`, or as another module. */
  req(grants: EffectiveGrants, params: Record<string, unknown>, as?: string): Promise<Answer>;
}

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: Uint8Array;
  url: string;
}

/** DNS for the hub tests: names -> addresses. Anything else does not resolve. */
const DNS: Record<string, string[]> = {
  "localhost": ["127.0.0.1"],
  "both.localhost": ["::1", "127.0.0.1"],
  "rebind.example": ["127.0.0.1"],
  "intranet.example": ["192.168.1.10"],
  "mixed.example": ["93.184.215.14", "10.0.0.7"],
  "mapped.example": ["::ffff:127.0.0.1"],
  "elsewhere.localhost": ["93.184.215.14"],
};

let worlds = 0;

function world(): World {
  const module = `mod-${++worlds}`;
  const audits: Action[] = [];
  const denials: Denial[] = [];
  const lookups: string[] = [];
  const hub = new ApiHub({ onAction: (a) => audits.push(a), onDenied: (d) => denials.push(d) });
  const services: HostServices = {
    publish: () => true,
    resolve: async (host) => {
      lookups.push(host);
      const found = DNS[host];
      if (!found) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: "ENOTFOUND" });
      return found.map((address) => ({ address, family: address.includes(":") ? 6 : 4 }));
    },
  };
  const call = (module: string): CallContext => ({
    module,
    dataDir: "",
    chain: undefined as unknown as ChainBackend,
    store: undefined,
    config: {},
    services,
    events: { subscribe: () => [], unsubscribe: () => [], subscribed: () => [] },
    log: () => {},
  });
  return {
    module, audits, denials, lookups,
    req: (grants, params, as = module) => hub.handle(call(as), grants, "http_request", params) as Promise<Answer>,
  };
}

/** Asserts the call fails with `code` (and a message matching `message`); returns the error. */
async function fails(t: ExecutionContext, p: Promise<unknown>, code: string, message?: RegExp): Promise<HubError | undefined> {
  const err = await t.throwsAsync(p, { instanceOf: HubError });
  t.is(err?.wire.code as string | undefined, code, err?.message);
  if (message) t.regex(err?.message ?? "", message);
  return err;
}

const text = (b: Uint8Array) => Buffer.from(b).toString("utf8");
const echoed = (a: Answer) => JSON.parse(text(a.body)) as { method: string; url: string; headers: Record<string, string>; body: string };

// ---------------------------------------------------------------------------------------
// Requests and answers

test("GET: status, lowercased headers, the body as bytes, the URL that answered; the host sets Host", async (t) => {
  const s = await server(t);
  const w = world();
  const r = await w.req(grantsOf(["network_access"]), { url: `http://127.0.0.1:${s.port}/echo?q=1#fragment` });
  t.is(r.status, 200);
  t.true(r.body instanceof Uint8Array);
  t.is(r.url, `http://127.0.0.1:${s.port}/echo?q=1`, "the fragment is not part of the request");
  t.is(r.headers["x-reply"], "Yes");
  t.is(r.headers["content-type"], "application/json");
  t.is(r.headers["set-cookie"], "a=1, b=2", "repeated headers are joined");
  t.deepEqual(Object.keys(r.headers).filter((k) => k !== k.toLowerCase()), []);
  const e = echoed(r);
  t.is(e.method, "GET");
  t.is(e.url, "/echo?q=1");
  t.is(e.headers.host, `127.0.0.1:${s.port}`);
  t.is(e.headers.connection, "close");
  t.is(e.headers["content-length"], undefined);
  // encoding "utf8": the body as a string (isolates have no TextDecoder); invalid bytes become U+FFFD.
  const asText = await w.req(grantsOf(["network_access"]), { url: `http://127.0.0.1:${s.port}/echo`, encoding: "utf8" });
  t.is(typeof asText.body, "string");
  t.is((JSON.parse(asText.body as unknown as string) as { url: string }).url, "/echo");
  const binary = await w.req(grantsOf(["network_access"]), { url: `http://127.0.0.1:${s.port}/bytes`, encoding: "utf8" });
  t.is([...(binary.body as unknown as string)].length, 256);
  t.true((binary.body as unknown as string).includes("\uFFFD"));
  await fails(t, w.req(grantsOf(["network_access"]), { url: `http://127.0.0.1:${s.port}/echo`, encoding: "latin1" }), "invalid_params", /encoding must be/);
});

test("POST, PUT, PATCH and DELETE with string and byte bodies and module headers; method names in any case", async (t) => {
  const s = await server(t);
  const w = world();
  const g = grantsOf(["network_access"]);
  const base = `http://127.0.0.1:${s.port}`;
  const post = echoed(await w.req(g, { url: `${base}/echo`, method: "post", body: "héllo", headers: { "Content-Type": "text/plain", "X-Api-Key": "k" } }));
  t.is(post.method, "POST");
  t.is(Buffer.from(post.body, "base64").toString("utf8"), "héllo");
  t.is(post.headers["content-length"], "6", "UTF-8 bytes");
  t.is(post.headers["content-type"], "text/plain");
  t.is(post.headers["x-api-key"], "k");
  const put = echoed(await w.req(g, { url: `${base}/echo`, method: "PUT", body: BYTES }));
  t.is(put.method, "PUT");
  t.deepEqual([...Buffer.from(put.body, "base64")], [...BYTES], "binary request body");
  const patch = echoed(await w.req(g, { url: `${base}/echo`, method: "PATCH" }));
  t.is(patch.headers["content-length"], "0");
  const del = echoed(await w.req(g, { url: `${base}/echo`, method: "DELETE" }));
  t.is(del.method, "DELETE");
  const head = await w.req(g, { url: `${base}/echo`, method: "HEAD" });
  t.is(head.status, 200);
  t.is(head.body.length, 0);
});

test("status codes are answers, not errors; binary answers arrive intact", async (t) => {
  const s = await server(t);
  const w = world();
  const g = grantsOf(["network_access"]);
  for (const code of [201, 204, 400, 404, 418, 500, 503]) {
    const r = await w.req(g, { url: `http://127.0.0.1:${s.port}/status/${code}` });
    t.is(r.status, code);
    t.is(text(r.body), code === 204 ? "" : `status ${code}`);
  }
  const b = await w.req(g, { url: `http://127.0.0.1:${s.port}/bytes` });
  t.deepEqual([...b.body], [...BYTES]);
  t.is(b.headers["content-length"], "256");
});

// ---------------------------------------------------------------------------------------
// Scopes

test("network_access=127.0.0.1:<port> allows that port only; the refusal names network_access and host:port", async (t) => {
  const s = await server(t);
  const other = await server(t);
  const w = world();
  const g = grantsOf([`network_access=127.0.0.1:${s.port}`]);
  t.is((await w.req(g, { url: `http://127.0.0.1:${s.port}/echo` })).status, 200);
  const err = await fails(t, w.req(g, { url: `http://127.0.0.1:${other.port}/echo` }), "permission_denied");
  t.regex(err?.message ?? "", new RegExp(`"network_access" is not granted for host "127\\.0\\.0\\.1:${other.port}"`));
  t.deepEqual(err?.wire.data, { capability: "network_access" });
  t.is(other.seen.length, 0, "nothing was sent to the other port");
  t.is(w.denials.length, 1);
  t.is(w.denials[0]?.permission, "network_access");
  // The default port is part of the target: http://127.0.0.1/ is 127.0.0.1:80.
  await fails(t, w.req(g, { url: "http://127.0.0.1/" }), "permission_denied", /host "127\.0\.0\.1:80"/);
  await fails(t, w.req(g, { url: "https://127.0.0.1/" }), "permission_denied", /host "127\.0\.0\.1:443"/);
});

test("a host-only grant allows every port of that host; an unscoped grant allows any host", async (t) => {
  const s = await server(t);
  const other = await server(t);
  const w = world();
  for (const grant of ["network_access=127.0.0.1", "network_access"]) {
    const g = grantsOf([grant]);
    t.is((await w.req(g, { url: `http://127.0.0.1:${s.port}/echo` })).status, 200, grant);
    t.is((await w.req(g, { url: `http://127.0.0.1:${other.port}/echo` })).status, 200, grant);
  }
  // An unscoped grant reaches "localhost" too; the host-only grant for 127.0.0.1 does not.
  t.is((await w.req(grantsOf(["network_access"]), { url: `http://localhost:${s.port}/echo` })).status, 200);
  await fails(t, w.req(grantsOf(["network_access=127.0.0.1"]), { url: `http://localhost:${s.port}/echo` }), "permission_denied", /host "localhost:\d+"/);
});

test("deny wins: a scoped deny refuses its host or port even under a wider grant", async (t) => {
  const s = await server(t);
  const other = await server(t);
  const w = world();
  const g = grantsOf(["network_access"], [`network_access=127.0.0.1:${other.port}`]);
  t.is((await w.req(g, { url: `http://127.0.0.1:${s.port}/echo` })).status, 200);
  await fails(t, w.req(g, { url: `http://127.0.0.1:${other.port}/echo` }), "permission_denied", new RegExp(`"network_access" is denied for host "127\\.0\\.0\\.1:${other.port}"`));
  const hostDenied = grantsOf([`network_access=127.0.0.1:${s.port}`, "network_access=localhost"], ["network_access=127.0.0.1"]);
  await fails(t, w.req(hostDenied, { url: `http://127.0.0.1:${s.port}/echo` }), "permission_denied", /is denied for host/);
  t.is((await w.req(hostDenied, { url: `http://localhost:${s.port}/echo` })).status, 200, "another name of the same machine is another grant");
  // The numeric spellings of the denied address are denied too (they are that address).
  await fails(t, w.req(g, { url: `http://2130706433:${other.port}/echo` }), "permission_denied", /is denied for host "127\.0\.0\.1:/);
  t.is(other.seen.length, 0);
});

test("without network_access the hub refuses, naming the permission", async (t) => {
  const s = await server(t);
  const w = world();
  const none = resolveGrants([parseDescriptor("read_network")], [parseDescriptor("read_network")], []).effective;
  const err = await fails(t, w.req(none, { url: `http://127.0.0.1:${s.port}/echo` }), "permission_denied", /http_request requires the "network_access" capability/);
  t.deepEqual(err?.wire.data, { capability: "network_access" });
  t.is(s.seen.length, 0);
});

test("numeric host forms are mapped to the dotted quad, which is what is checked and connected to", async (t) => {
  const s = await server(t);
  const w = world();
  const ip = grantsOf([`network_access=127.0.0.1:${s.port}`]);
  const name = grantsOf([`network_access=localhost:${s.port}`]);
  for (const host of ["2130706433", "0x7f.0.0.1", "127.1", "0177.0.0.1", "0x7f000001", "127%2E0.0.1"]) {
    const url = `http://${host}:${s.port}/echo`;
    t.is(parseHttpUrl(url).target, `127.0.0.1:${s.port}`, host);
    const r = await w.req(ip, { url });
    t.is(r.status, 200, host);
    t.is(r.url, `http://127.0.0.1:${s.port}/echo`, `${host}: the answer names the address used`);
    t.is(echoed(r).headers.host, `127.0.0.1:${s.port}`, `${host}: the Host header is the canonical host`);
    await fails(t, w.req(name, { url }), "permission_denied", new RegExp(`host "127\\.0\\.0\\.1:${s.port}"`));
  }
  // A grant for localhost does not let 127.0.0.1 through, nor the reverse.
  t.is((await w.req(name, { url: `http://LOCALHOST.:${s.port}/echo` })).status, 200, "names are lowercased, the root dot dropped");
  await fails(t, w.req(name, { url: `http://127.0.0.1:${s.port}/echo` }), "permission_denied");
  await fails(t, w.req(ip, { url: `http://localhost:${s.port}/echo` }), "permission_denied", new RegExp(`host "localhost:${s.port}"`));
  // IPv6 spellings of the address are other hosts.
  await fails(t, w.req(ip, { url: `http://[::ffff:127.0.0.1]:${s.port}/echo` }), "permission_denied", /host "\[::ffff:7f00:1\]:/);
  await fails(t, w.req(ip, { url: `http://[::1]:${s.port}/echo` }), "permission_denied", /host "\[::1\]:/);
});

test("URLs: credentials, other schemes, relative and malformed URLs are refused before anything is sent", async (t) => {
  const s = await server(t);
  const w = world();
  const g = grantsOf(["network_access"]);
  const p = s.port;
  await fails(t, w.req(g, { url: `http://user:secret@127.0.0.1:${p}/echo` }), "invalid_params", /credentials/);
  await fails(t, w.req(g, { url: `http://user@127.0.0.1:${p}/echo` }), "invalid_params", /credentials/);
  for (const url of ["file:///etc/passwd", `ftp://127.0.0.1:${p}/`, "data:text/plain,hi", "javascript:alert(1)", `ws://127.0.0.1:${p}/`, "gopher://127.0.0.1/"]) {
    await fails(t, w.req(g, { url }), "invalid_params", /use http: or https:/);
  }
  for (const url of ["/echo", "127.0.0.1/echo", "http://", "http://[::1/", "http://a_b.example/", "http://foo.0x10/"]) {
    await fails(t, w.req(g, { url }), "invalid_params");
  }
  await fails(t, w.req(g, { url: `http://127.0.0.1:${p}/${"a".repeat(9000)}` }), "invalid_params", /longer than/);
  await fails(t, w.req(g, { url: 42 }), "invalid_params");
  t.is(s.seen.length, 0);
});

test("headers, methods, bodies and timeouts the host refuses", async (t) => {
  const s = await server(t);
  const w = world();
  const g = grantsOf(["network_access"]);
  const url = `http://127.0.0.1:${s.port}/echo`;
  for (const name of ["Host", "connection", "Keep-Alive", "Transfer-Encoding", "Content-Length", "TE", "Trailer", "Upgrade", "Expect", "Proxy-Authorization", "proxy-connection"]) {
    await fails(t, w.req(g, { url, headers: { [name]: "x" } }), "invalid_params", /may not be set by a module/);
  }
  await fails(t, w.req(g, { url, headers: { "X-A": "1\r\nX-Injected: 1" } }), "invalid_params", /CR, LF or NUL/);
  await fails(t, w.req(g, { url, headers: { "X-A": "bell\u0007" } }), "invalid_params", /control characters/);
  await fails(t, w.req(g, { url, headers: { "X-A": "snow ☃" } }), "invalid_params", /above U\+00FF/);
  await fails(t, w.req(g, { url, headers: { "Bad Name": "1" } }), "invalid_params", /not a header name/);
  await fails(t, w.req(g, { url, headers: { "X-A": "1", "x-a": "2" } }), "invalid_params", /given twice/);
  await fails(t, w.req(g, { url, headers: { "X-A": 1 } }), "invalid_params");
  for (const method of ["CONNECT", "TRACE", "OPTIONS", "get "]) await fails(t, w.req(g, { url, method }), "invalid_params", /method must be one of/);
  await fails(t, w.req(g, { url, body: "x" }), "invalid_params", /a GET request has no body/);
  await fails(t, w.req(g, { url, method: "HEAD", body: "x" }), "invalid_params", /a HEAD request has no body/);
  await fails(t, w.req(g, { url, method: "POST", body: new Uint8Array(MAX_REQUEST_BODY_BYTES + 1) }), "invalid_params", /at most 1048576 bytes/);
  await fails(t, w.req(g, { url, method: "POST", body: 12 }), "invalid_params");
  for (const timeout_ms of [0, 60_001, 1.5, -1]) await fails(t, w.req(g, { url, timeout_ms }), "invalid_params", /timeout_ms/);
  t.is(s.seen.length, 0);
  t.is(echoed(await w.req(g, { url, headers: { "X-Tab": "a\tb" } })).headers["x-tab"], "a\tb");
  // At the limit is fine.
  const r = await w.req(g, { url, method: "POST", body: new Uint8Array(MAX_REQUEST_BODY_BYTES) });
  t.is(echoed(r).headers["content-length"], String(MAX_REQUEST_BODY_BYTES));
});

// ---------------------------------------------------------------------------------------
// Redirects, limits, time

test("redirects are not followed: the 3xx comes back with its Location, nothing is fetched from there", async (t) => {
  const s = await server(t);
  const elsewhere = await server(t);
  const w = world();
  const g = grantsOf([`network_access=127.0.0.1:${s.port}`]);
  const to = `http://127.0.0.1:${elsewhere.port}/echo`;
  const r = await w.req(g, { url: `http://127.0.0.1:${s.port}/redirect?to=${encodeURIComponent(to)}` });
  t.is(r.status, 302);
  t.is(r.headers.location, to);
  t.is(text(r.body), "moved");
  t.is(elsewhere.seen.length, 0, "the ungranted target was not contacted");
  // Following it by hand is a new request, checked like any other.
  await fails(t, w.req(g, { url: r.headers.location! }), "permission_denied");
  // Same host: still not followed.
  const same = await w.req(g, { url: `http://127.0.0.1:${s.port}/redirect?to=/echo` });
  t.is(same.status, 302);
  t.is(s.count("/echo"), 0);
});

test("an answer over 8 MiB fails with quota_exceeded, streamed or declared; 8 MiB exactly is fine", async (t) => {
  t.timeout(30_000);
  const s = await server(t);
  const w = world();
  const g = grantsOf(["network_access"]);
  await fails(t, w.req(g, { url: `http://127.0.0.1:${s.port}/big` }), "quota_exceeded", /larger than 8 MiB/);
  await fails(t, w.req(g, { url: `http://127.0.0.1:${s.port}/big-declared` }), "quota_exceeded", /larger than 8 MiB/);
  const head = await w.req(g, { url: `http://127.0.0.1:${s.port}/big-declared`, method: "HEAD" });
  t.is(head.headers["content-length"], String(MAX_RESPONSE_BODY_BYTES + 1), "HEAD: the declared length of a body that is not sent");
  t.is(head.body.length, 0);
  const exact = await w.req(g, { url: `http://127.0.0.1:${s.port}/exact` });
  t.is(exact.body.length, MAX_RESPONSE_BODY_BYTES);
});

test("no answer within timeout_ms fails with timeout", async (t) => {
  const s = await server(t);
  const w = world();
  const started = Date.now();
  await fails(t, w.req(grantsOf(["network_access"]), { url: `http://127.0.0.1:${s.port}/slow`, timeout_ms: 300 }), "timeout", /within 300 ms/);
  const took = Date.now() - started;
  t.true(took >= 290 && took < 5000, `took ${took} ms`);
  t.is(requestsInFlight(w.module), 0);
});

test("connection failures are unavailable: nothing listening, TLS to a plain HTTP server", async (t) => {
  const s = await server(t);
  const w = world();
  const g = grantsOf(["network_access"]);
  // A port nothing listens on: take one from a server and close it.
  const probe = http.createServer();
  await new Promise<void>((r) => probe.listen(0, "127.0.0.1", () => r()));
  const free = (probe.address() as AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  await fails(t, w.req(g, { url: `http://127.0.0.1:${free}/` }), "unavailable", new RegExp(`cannot connect to 127\\.0\\.0\\.1:${free}: ECONNREFUSED`));
  await fails(t, w.req(g, { url: `https://127.0.0.1:${s.port}/echo` }), "unavailable", /TLS with 127\.0\.0\.1:\d+/);
});

test(`at most ${MAX_IN_FLIGHT} requests of one module in flight; then unavailable; other modules are not affected`, async (t) => {
  t.timeout(20_000);
  const s = await server(t);
  const w = world();
  const g = grantsOf(["network_access"]);
  const slow = Array.from({ length: MAX_IN_FLIGHT }, () => w.req(g, { url: `http://127.0.0.1:${s.port}/slow`, timeout_ms: 1500 }).catch((e: HubError) => e.wire.code));
  await waitFor(() => requestsInFlight(w.module) === MAX_IN_FLIGHT, 5000, `${MAX_IN_FLIGHT} requests in flight`);
  await fails(t, w.req(g, { url: `http://127.0.0.1:${s.port}/echo` }), "unavailable", new RegExp(`at most ${MAX_IN_FLIGHT} HTTP requests`));
  t.is((await w.req(g, { url: `http://127.0.0.1:${s.port}/echo` }, "another-module")).status, 200, "another module has its own budget");
  t.deepEqual(await Promise.all(slow), Array<string>(MAX_IN_FLIGHT).fill("timeout"));
  t.is(requestsInFlight(w.module), 0);
  t.is((await w.req(g, { url: `http://127.0.0.1:${s.port}/echo` })).status, 200, "the budget is back");
});

// ---------------------------------------------------------------------------------------
// Names and addresses

test("a granted name that resolves to a loopback or private address is refused; the name is resolved once", async (t) => {
  const s = await server(t);
  const w = world();
  const g = grantsOf(["network_access"]);
  for (const [name, kind] of [["rebind.example", "loopback"], ["intranet.example", "private"], ["mixed.example", "private"], ["mapped.example", "loopback"]] as const) {
    const err = await fails(t, w.req(g, { url: `http://${name}:${s.port}/echo` }), "permission_denied", new RegExp(`does not reach ${kind} addresses through a host name: "${name.replace(".", "\\.")}" resolves to`));
    t.deepEqual(err?.wire.data, { capability: "network_access" }, name);
  }
  t.deepEqual(w.denials.map((d) => [d.method, d.permission]), Array(4).fill(["http_request", "network_access"]), "recorded as denials");
  t.deepEqual(w.audits, [], "no access happened");
  t.is(s.seen.length, 0);
  // localhost (and *.localhost) is loopback by definition: allowed, and resolved ONCE even when
  // the first address (::1 here, where nothing listens) fails and the next one is used.
  w.lookups.length = 0;
  const r = await w.req(g, { url: `http://both.localhost:${s.port}/echo` });
  t.is(r.status, 200);
  t.is(echoed(r).headers.host, `both.localhost:${s.port}`);
  t.deepEqual(w.lookups, ["both.localhost"], "one lookup");
  await fails(t, w.req(g, { url: `http://elsewhere.localhost:${s.port}/echo` }), "unavailable", /does not resolve to a loopback address/);
  await fails(t, w.req(g, { url: `http://nowhere.example:${s.port}/echo` }), "unavailable", /cannot resolve "nowhere\.example" \(ENOTFOUND\)/);
  // An IP literal is what the operator granted: no lookup at all.
  w.lookups.length = 0;
  t.is((await w.req(g, { url: `http://127.0.0.1:${s.port}/echo` })).status, 200);
  t.deepEqual(w.lookups, []);
});

test("address classes: public addresses pass, special-use ones are named", async (t) => {
  const cases: Record<string, string | undefined> = {
    "93.184.215.14": undefined, "8.8.8.8": undefined, "2606:4700::1111": undefined, "2a00:1450:4001:82a::200e": undefined,
    "127.0.0.1": "loopback", "127.255.1.2": "loopback", "::1": "loopback", "0.0.0.0": "unspecified", "::": "unspecified",
    "10.1.2.3": "private", "172.16.0.1": "private", "172.31.255.255": "private", "172.32.0.1": undefined, "192.168.0.1": "private",
    "169.254.169.254": "link-local", "fe80::1": "link-local", "fe80::1%eth0": "link-local", "100.64.0.1": "shared (carrier-grade NAT)",
    "fd00::1": "unique local", "fc00::1": "unique local", "224.0.0.1": "multicast", "ff02::1": "multicast", "255.255.255.255": "reserved",
    "::ffff:127.0.0.1": "loopback", "::ffff:7f00:1": "loopback", "::ffff:10.0.0.1": "private", "::ffff:8.8.8.8": undefined,
    "64:ff9b::7f00:1": "loopback", "64:ff9b::808:808": undefined, "2002:7f00:1::": "loopback", "2002:808:808::": undefined,
    "::7f00:1": "IPv4-compatible (deprecated)", "2001:db8::1": "documentation", "192.0.2.1": "documentation", "198.18.0.1": "benchmarking",
  };
  for (const [addr, kind] of Object.entries(cases)) t.is(specialAddressKind(addr), kind, addr);
  // addressesFor with a resolver: one call, every address checked.
  const target = parseHttpUrl("https://api.example.com/");
  t.deepEqual(await addressesFor(target, async () => [{ address: "93.184.215.14", family: 4 }, { address: "2606:4700::1111", family: 6 }]), ["93.184.215.14", "2606:4700::1111"]);
  await t.throwsAsync(addressesFor(target, async () => [{ address: "93.184.215.14", family: 4 }, { address: "169.254.169.254", family: 4 }]), { message: /link-local/ });
});

// ---------------------------------------------------------------------------------------
// Audit

test("every request that reached the network is audited with its host:port, failed ones with their error", async (t) => {
  const s = await server(t);
  const w = world();
  const g = grantsOf([`network_access=127.0.0.1:${s.port}`]);
  await w.req(g, { url: `http://127.0.0.1:${s.port}/echo` });
  await fails(t, w.req(g, { url: `http://127.0.0.1:${s.port}/slow`, timeout_ms: 100 }), "timeout");
  await fails(t, w.req(g, { url: `http://127.0.0.1:${s.port + 1}/` }), "permission_denied");
  await fails(t, w.req(g, { url: "ftp://127.0.0.1/" }), "invalid_params");
  t.deepEqual(w.audits, [
    { module: w.module, method: "http_request", permission: "network_access", targets: [`127.0.0.1:${s.port}`] },
    { module: w.module, method: "http_request", permission: "network_access", targets: [`127.0.0.1:${s.port}`], error: "timeout" },
  ]);
  t.is(w.denials.length, 1);
});

// ---------------------------------------------------------------------------------------
// From a real isolate module

const FETCHER_CAPS = (port: number) => [`network_access=127.0.0.1:${port}`, "register_module_api"];

const FETCHER = (port: number) => inlineModule("fetcher", FETCHER_CAPS(port), `
  await ctx.modules.registerApi({
    fetch: (p: any) => report(async () => {
      const options = p.bytes ? { ...p.options, body: new Uint8Array(p.bytes) } : p.options;
      const r = await ctx.network.fetch(p.url, options);
      return { status: r.status, headers: r.headers, bytes: r.body instanceof Uint8Array, body: Array.from(r.body), url: r.url };
    }),
    json: async (p: any) => {
      const r = await ctx.network.fetch(p.url, { encoding: "utf8" });
      return { type: typeof r.body, parsed: JSON.parse(r.body) };
    },
    shape: () => ({ network: Object.keys(ctx.network).sort() }),
  });
`, REPORT);

const LOOKER = inlineModule("looker", ["register_module_api"], `
  await ctx.modules.registerApi({ shape: () => ({ network: typeof ctx.network, fetch: typeof ctx.network?.fetch }) });
`);

interface ModuleAnswer {
  status: number;
  headers: Record<string, string>;
  bytes: boolean;
  body: number[];
  url: string;
}

test("from an isolate module: ctx.network.fetch works for the granted port, is refused elsewhere, and is absent without the grant; audited", async (t) => {
  const s = await server(t);
  const other = await server(t);
  const h = await startHost(t, {
    inline: { fetcher: FETCHER(s.port), looker: LOOKER },
    grants: { fetcher: FETCHER_CAPS(s.port), looker: ["register_module_api"] },
  });
  t.is(h.mustStatus("fetcher").state, "running");
  t.is(h.mustStatus("looker").state, "running");
  // (No undefined values in module API params: such a call is never answered, a separate issue.)
  const fetch = (url: string, options?: Record<string, unknown>, bytes?: number[]) =>
    callApi<Outcome>(h, "fetcher", "fetch", { url, ...(options ? { options } : {}), ...(bytes ? { bytes } : {}) });
  const ok = (o: Outcome): ModuleAnswer => {
    if (!o.ok) throw new Error(`${o.code}: ${o.message}`);
    return o.value as ModuleAnswer;
  };
  const base = `http://127.0.0.1:${s.port}`;

  t.deepEqual(await callApi(h, "fetcher", "shape"), { network: ["fetch"] }, "only the granted method");
  t.deepEqual(await callApi(h, "looker", "shape"), { network: "undefined", fetch: "undefined" }, "no network family without the grant");

  const get = ok(await fetch(`${base}/bytes`));
  t.is(get.status, 200);
  t.true(get.bytes, "the body is a Uint8Array in the isolate");
  t.deepEqual(get.body, [...BYTES]);
  t.is(get.url, `${base}/bytes`);

  const post = ok(await fetch(`${base}/echo`, { method: "POST", headers: { "X-From": "isolate" } }, [0, 1, 254, 255]));
  const e = JSON.parse(Buffer.from(post.body).toString("utf8")) as { method: string; headers: Record<string, string>; body: string };
  t.is(e.method, "POST");
  t.is(e.headers["x-from"], "isolate");
  t.deepEqual([...Buffer.from(e.body, "base64")], [0, 1, 254, 255]);
  t.is(post.headers["set-cookie"], "a=1, b=2");

  t.is(ok(await fetch(`http://2130706433:${s.port}/status/404`)).status, 404, "numeric form mapped to the granted address");

  const json = await callApi<{ type: string; parsed: { method: string; url: string } }>(h, "fetcher", "json", { url: `${base}/echo?x=1` });
  t.is(json.type, "string");
  t.deepEqual([json.parsed.method, json.parsed.url], ["GET", "/echo?x=1"]);

  const redirect = ok(await fetch(`${base}/redirect?to=${encodeURIComponent(`http://127.0.0.1:${other.port}/echo`)}`));
  t.is(redirect.status, 302);
  t.is(other.seen.length, 0);

  const refused = await fetch(`http://127.0.0.1:${other.port}/echo`);
  t.false(refused.ok);
  if (!refused.ok) {
    t.is(refused.code, "permission_denied");
    t.regex(refused.message, new RegExp(`"network_access" is not granted for host "127\\.0\\.0\\.1:${other.port}"`));
  }
  const localhost = await fetch(`http://localhost:${s.port}/echo`);
  t.is(localhost.ok ? "ok" : localhost.code, "permission_denied", "a grant for 127.0.0.1 is not a grant for localhost");
  const userinfo = await fetch(`http://u:p@127.0.0.1:${s.port}/echo`);
  t.is(userinfo.ok ? "ok" : userinfo.code, "invalid_params");
  const file = await fetch("file:///etc/passwd");
  t.is(file.ok ? "ok" : file.code, "invalid_params");
  const slow = await fetch(`${base}/slow`, { timeout_ms: 200 });
  t.is(slow.ok ? "ok" : slow.code, "timeout");
  const big = await fetch(`${base}/big-declared`);
  t.is(big.ok ? "ok" : big.code, "quota_exceeded");
  t.is(other.seen.length, 0, "nothing ever reached the ungranted port");

  // The audit log: every access with its host:port, the refusals as denials.
  const audit = (await readFile(h.config.host.audit_log, "utf8")).trim().split("\n").map((l) => JSON.parse(l) as Record<string, any>);
  const mine = audit.filter((r) => r.module === "fetcher" && r.action === "http_request");
  const actions = mine.filter((r) => r.kind === "action");
  t.true(actions.length >= 7, `${actions.length} action records`);
  t.true(actions.every((r) => r.permission === "network_access" && JSON.stringify(r.detail.targets) === JSON.stringify([`127.0.0.1:${s.port}`])));
  t.deepEqual(actions.filter((r) => r.detail.error).map((r) => r.detail.error).sort(), ["quota_exceeded", "timeout"]);
  const denied = mine.filter((r) => r.kind === "denied");
  t.is(denied.length, 2);
  t.true(denied.some((r) => String(r.reason).includes(`127.0.0.1:${other.port}`)));
  t.true(denied.some((r) => String(r.reason).includes(`localhost:${s.port}`)));
});
