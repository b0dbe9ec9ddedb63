// The answer side of http_request (capabilities/http.ts): a hostile server on 127.0.0.1 sends
// crafted bytes; every bound of the response parser (head size, header count, informational
// answers, body size, time, malformed answers) fails with a CapabilityError that names it.

import test, { type ExecutionContext } from "ava";
import net from "node:net";
import {
  httpExchange, MAX_INFORMATIONAL_RESPONSES, MAX_RESPONSE_BODY_BYTES, MAX_RESPONSE_HEADER_BYTES, MAX_RESPONSE_HEADERS, parseHttpUrl,
} from "../capabilities/http.ts";
import { CapabilityError } from "../capabilities/types.ts";

/** A server that answers every request with `answer` (bytes, or a function writing to the socket). */
async function hostile(t: ExecutionContext, answer: string | Buffer | ((s: net.Socket) => void)): Promise<number> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    sockets.add(s);
    s.on("error", () => undefined);
    s.once("data", () => (typeof answer === "function" ? answer(s) : s.end(answer)));
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    srv.close();
  });
  return (srv.address() as net.AddressInfo).port;
}

function get(port: number, timeoutMs = 5000) {
  return httpExchange(`test-${port}`, { target: parseHttpUrl(`http://127.0.0.1:${port}/x`), method: "GET", headers: {}, body: undefined, timeoutMs });
}

async function refused(t: ExecutionContext, p: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  const err = await t.throwsAsync(p);
  t.true(err instanceof CapabilityError, `a CapabilityError, not ${String(err)}`);
  t.is((err as CapabilityError).code as string, code);
  t.regex(err!.message, message);
}

const head = (lines: string[], body = "") => `HTTP/1.1 200 OK\r\n${lines.map((l) => `${l}\r\n`).join("")}Content-Length: ${body.length}\r\n\r\n${body}`;

test("an answer head over MAX_RESPONSE_HEADER_BYTES fails with quota_exceeded naming the limit", async (t) => {
  const port = await hostile(t, head([`X-Big: ${"a".repeat(MAX_RESPONSE_HEADER_BYTES)}`]));
  await refused(t, get(port), "quota_exceeded", /headers larger than 32 KiB \(MAX_RESPONSE_HEADER_BYTES\)/);
  const ok = await get(await hostile(t, head([`X-Big: ${"a".repeat(MAX_RESPONSE_HEADER_BYTES - 200)}`], "fine")));
  t.is(Buffer.from(ok.body).toString(), "fine", "a head just under the limit is read");
});

test("more than MAX_RESPONSE_HEADERS header fields fail with quota_exceeded; exactly that many are fine", async (t) => {
  const fields = (n: number) => Array.from({ length: n }, (_, i) => `X-H${i}: ${i}`);
  // Content-Length is one more field.
  await refused(t, get(await hostile(t, head(fields(MAX_RESPONSE_HEADERS)))), "quota_exceeded", /more than 200 header fields \(MAX_RESPONSE_HEADERS\)/);
  const ok = await get(await hostile(t, head(fields(MAX_RESPONSE_HEADERS - 1))));
  t.is(Object.keys(ok.headers).length, MAX_RESPONSE_HEADERS);
});

test("endless informational (1xx) answers fail after MAX_INFORMATIONAL_RESPONSES; a few are skipped", async (t) => {
  const info = (n: number) => "HTTP/1.1 102 Processing\r\n\r\n".repeat(n);
  await refused(t, get(await hostile(t, info(MAX_INFORMATIONAL_RESPONSES + 1) + head([], "late"))), "unavailable", /more than 8 informational \(1xx\) answers \(MAX_INFORMATIONAL_RESPONSES\)/);
  const ok = await get(await hostile(t, info(2) + head([], "after two")));
  t.is(ok.status, 200);
  t.is(Buffer.from(ok.body).toString(), "after two");
});

test("malformed answers fail with unavailable naming the parser's complaint; a body over the limit with quota_exceeded", async (t) => {
  await refused(t, get(await hostile(t, "NOT HTTP AT ALL\r\n\r\n")), "unavailable", /sent a malformed HTTP answer \(HPE_/);
  await refused(t, get(await hostile(t, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello")), "unavailable", /malformed HTTP answer|closed the connection/);
  await refused(t, get(await hostile(t, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")), "unavailable", /malformed HTTP answer \(HPE_/);
  await refused(t, get(await hostile(t, `HTTP/1.1 200 OK\r\nContent-Length: ${MAX_RESPONSE_BODY_BYTES + 1}\r\n\r\n`)), "quota_exceeded", /larger than 8 MiB \(MAX_RESPONSE_BODY_BYTES\)/);
});

test("an answer that trickles in slower than the deadline fails with timeout", async (t) => {
  const port = await hostile(t, (s) => {
    s.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    const timer = setInterval(() => (s.destroyed ? clearInterval(timer) : s.write("1\r\nx\r\n")), 20);
  });
  await refused(t, get(port, 400), "timeout", /no complete answer from 127\.0\.0\.1:\d+ within 400 ms/);
});

test("a body longer than the request's max_bytes fails with quota_exceeded naming max_bytes, whether declared or arriving chunked; a body of exactly max_bytes is read", async (t) => {
  const limited = (port: number, maxBodyBytes: number) =>
    httpExchange(`test-${port}`, { target: parseHttpUrl(`http://127.0.0.1:${port}/x`), method: "GET", headers: {}, body: undefined, timeoutMs: 5000, maxBodyBytes });
  await refused(t, limited(await hostile(t, head([], "x".repeat(101))), 100), "quota_exceeded", /a body larger than the request's max_bytes = 100; raise max_bytes \(at most 8388608\)/);
  const chunked = `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${"32\r\n" + "y".repeat(50) + "\r\n"}${"33\r\n" + "z".repeat(51) + "\r\n"}0\r\n\r\n`;
  await refused(t, limited(await hostile(t, chunked), 100), "quota_exceeded", /max_bytes = 100/);
  const ok = await limited(await hostile(t, head([], "x".repeat(100))), 100);
  t.is(ok.body.length, 100, "exactly max_bytes is fine");
  const bodiless = await limited(await hostile(t, "HTTP/1.1 204 No Content\r\n\r\n"), 0);
  t.is(bodiless.status, 204, "max_bytes = 0 takes an answer without a body");
});
