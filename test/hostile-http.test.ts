// A hostile HTTP server behind a granted http_request (the module's own API server, say): its
// answer's body arrives one byte per chunk. Node's parser makes each chunk a Buffer and an event
// on the host's loop, so before MAX_RESPONSE_BODY_PIECES one request whose 8 MiB body came in
// 8 M chunks held +1.4 GB of host heap and took ~20 s of host CPU (1.9 s loop delays). Now the
// answer fails with quota_exceeded naming the limit once 16,384 pieces have arrived, and a
// body of 8 MiB in chunks of 1 KiB still arrives whole. Under the real host, a
// TypeScript module keeps 16 such requests in flight while the canary stores every block.
// An HTTPS server that asks for a TLS renegotiation again and again, each a key exchange and a
// certificate check on the host's loop: refused at the first, the request fails at once.

import test, { type ExecutionContext } from "ava";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import net from "node:net";
import tls from "node:tls";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { httpExchange, MAX_RESPONSE_BODY_BYTES, MAX_RESPONSE_BODY_PIECES, parseHttpUrl } from "../capabilities/http.ts";
import { CapabilityError } from "../capabilities/types.ts";
import { buildModulesDir, sleep, startHost, tempDir, GOOD_GRANTS } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";
import { canaryRound } from "./helpers/canary.ts";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;
const MB = 1024 * 1024;

/** A server answering every request with a chunked body of `chunks` chunks of `size` bytes, written with backpressure. */
async function chunky(t: ExecutionContext, chunks: number, size: number): Promise<number> {
  const piece = Buffer.from(`${size.toString(16)}\r\n${"x".repeat(size)}\r\n`);
  const block = Buffer.concat(Array(Math.max(1, Math.floor(65_536 / piece.length))).fill(piece));
  const per = block.length / piece.length;
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    sockets.add(s);
    s.on("error", () => undefined);
    s.once("data", async () => {
      s.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
      for (let sent = 0; sent < chunks && !s.destroyed; sent += per) {
        const n = Math.min(per, chunks - sent);
        if (!s.write(n === per ? block : block.subarray(0, n * piece.length))) await new Promise((r) => s.once("drain", r));
      }
      if (!s.destroyed) s.end("0\r\n\r\n");
    });
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    srv.close();
  });
  return (srv.address() as net.AddressInfo).port;
}

const get = (port: number) => httpExchange(`test-${port}`, { target: parseHttpUrl(`http://127.0.0.1:${port}/x`), method: "GET", headers: {}, body: undefined, timeoutMs: 30_000 });

test("an answer whose body comes one byte per chunk fails with quota_exceeded naming MAX_RESPONSE_BODY_PIECES, without holding a Buffer per byte", async (t) => {
  const port = await chunky(t, 4_000_000, 1);
  gc();
  const heap0 = process.memoryUsage().heapUsed;
  let peak = 0;
  const sample = setInterval(() => (peak = Math.max(peak, process.memoryUsage().heapUsed - heap0)), 20);
  const err = await t.throwsAsync(get(port));
  clearInterval(sample);
  t.true(err instanceof CapabilityError);
  t.is((err as CapabilityError).code as string, "quota_exceeded");
  t.regex(err!.message, new RegExp(`more than ${MAX_RESPONSE_BODY_PIECES} pieces .*MAX_RESPONSE_BODY_PIECES`));
  t.log(`heap grew at most ${(peak / MB).toFixed(1)} MB`);
  t.true(peak < 64 * MB, `host heap grew ${(peak / MB).toFixed(0)} MB (4 M pieces held: ~700 MB)`);
});

test("an 8 MiB body in chunks of 1 KiB (8,192 chunks, a piece more for each chunk split between two reads) arrives whole", async (t) => {
  const size = 1024;
  const port = await chunky(t, MAX_RESPONSE_BODY_BYTES / size, size);
  const answer = await get(port);
  t.is(answer.status, 200);
  t.is(answer.body.length, MAX_RESPONSE_BODY_BYTES);
  t.true(answer.body.every((b) => b === 0x78));
});

test.serial("under the real host: a TypeScript module keeping 16 one-byte-chunk answers in flight gets quota_exceeded for each; the canary stores every block, RPC answers, host heap stays bounded", async (t) => {
  t.timeout(240_000);
  const port = await chunky(t, 4_000_000, 1);
  const dir = await tempDir(t);
  await buildModulesDir(dir, ["good"], {
    "t-fetch": inlineModule("t-fetch", [`network_access=127.0.0.1:${port}`], `
      const codes: Record<string, number> = {};
      let done = 0;
      const worker = async () => {
        for (let i = 0; i < 4; i++) {
          const r = await ctx.network.fetch("http://127.0.0.1:${port}/x", { timeout_ms: 30000 }).then(() => "ok", (e: any) => e.code + (/MAX_RESPONSE_BODY_PIECES/.test(e.message) ? ":pieces" : ""));
          codes[r] = (codes[r] ?? 0) + 1;
        }
        if (++done === 16) ctx.log.info("fetch report", codes);
      };
      for (let i = 0; i < 16; i++) void worker();
    `),
  });
  const h = await startHost(t, { dir, modules: [], grants: { good: GOOD_GRANTS, "t-fetch": [`network_access=127.0.0.1:${port}`] } });
  await h.waitForState("good", "running", 30_000);
  gc();
  const heap0 = process.memoryUsage().heapUsed;
  let peak = 0;
  let late = 0;
  let unanswered = 0;
  for (let i = 0; i < 5; i++) {
    const { stored, answered } = await canaryRound(h);
    if (!stored) late++;
    if (!answered) unanswered++;
    gc();
    peak = Math.max(peak, process.memoryUsage().heapUsed - heap0);
    await sleep(1000);
  }
  t.is(late, 0, "the canary stored every block within 5 s");
  t.is(unanswered, 0, "the host answered every RPC call within 5 s");
  const report = (await h.waitForLog(/^fetch report$/, { source: "t-fetch", timeoutMs: 120_000 })).fields as Record<string, number>;
  t.log("t-fetch outcomes", report, `host heap grew at most ${(peak / MB).toFixed(0)} MB`);
  t.is(report["quota_exceeded:pieces"], 64, "each of the 64 requests failed naming MAX_RESPONSE_BODY_PIECES");
  t.true(peak < 96 * MB, `host heap grew ${(peak / MB).toFixed(0)} MB`);
  await h.manager.reload("t-fetch");
  await h.waitForState("t-fetch", "running", 30_000);
});

// An HTTPS server (TLS 1.2, the fixture certificate for 127.0.0.1) that asks each client to
// renegotiate as soon as the last renegotiation is done, and never answers the request. In a
// process of its own, so that this process's CPU is the host's alone; it prints its port, then
// "renegotiations N" every 200 ms.
const RENEGOTIATING_SERVER = `
const tls = require("node:tls");
const fs = require("node:fs");
let done = 0;
const srv = tls.createServer({ key: fs.readFileSync(process.argv[1]), cert: fs.readFileSync(process.argv[2]), maxVersion: "TLSv1.2" }, (s) => {
  s.on("error", () => {});
  const again = () => { if (!s.destroyed) s.renegotiate({}, (err) => { if (!err) { done++; setImmediate(again); } }); };
  again();
});
srv.on("tlsClientError", () => {});
srv.listen(0, "127.0.0.1", () => console.log(srv.address().port));
setInterval(() => console.log("renegotiations " + done), 200);
process.stdin.on("end", () => process.exit(0)).resume();
`;

test.serial("under the real host: an HTTPS server asking for TLS renegotiation over and over gets none; the module's requests fail at once with unavailable, the host's CPU is not spent on handshakes, the canary stores every block", async (t) => {
  t.timeout(240_000);
  const tlsDir = fileURLToPath(new URL("./fixtures/tls/", import.meta.url));
  // The host's TLS client trusts the fixture certificate (this process only).
  tls.setDefaultCACertificates([...tls.getCACertificates("default"), readFileSync(`${tlsDir}cert.pem`, "utf8")]);
  const server = spawn(process.execPath, ["-e", RENEGOTIATING_SERVER, `${tlsDir}key.pem`, `${tlsDir}cert.pem`], { stdio: ["pipe", "pipe", "inherit"] });
  t.teardown(() => server.kill("SIGKILL"));
  let renegotiations = 0;
  const port = await new Promise<number>((resolve) => {
    let first = true;
    let text = "";
    server.stdout.on("data", (d: Buffer) => {
      text += d.toString();
      const lines = text.split("\n");
      text = lines.pop()!;
      for (const line of lines) {
        if (first) (first = false, resolve(Number(line)));
        else renegotiations = Number(/^renegotiations (\d+)$/.exec(line)?.[1] ?? renegotiations);
      }
    });
  });
  const grant = `network_access=127.0.0.1:${port}`;
  const dir = await tempDir(t);
  await buildModulesDir(dir, ["good"], {
    "t-tls": inlineModule("t-tls", [grant], `
      const codes: Record<string, number> = {};
      const started = Date.now();
      let done = 0;
      const worker = async () => {
        for (let i = 0; i < 4; i++) {
          const r = await ctx.network.fetch("https://127.0.0.1:${port}/x", { timeout_ms: 8000 }).then(() => "ok", (e: any) => e.code);
          codes[r] = (codes[r] ?? 0) + 1;
        }
        if (++done === 2) ctx.log.info("tls report", { codes, ms: Date.now() - started });
      };
      for (let i = 0; i < 2; i++) void worker();
    `),
  });
  const cpu0 = process.threadCpuUsage();
  const wall0 = performance.now();
  const h = await startHost(t, { dir, modules: [], grants: { good: GOOD_GRANTS, "t-tls": [grant] } });
  await h.waitForState("good", "running", 60_000);
  let late = 0;
  for (let i = 0; i < 3; i++) {
    const { stored, answered } = await canaryRound(h);
    if (!stored) late++;
    if (!answered) late++;
  }
  const report = (await h.waitForLog(/^tls report$/, { source: "t-tls", timeoutMs: 120_000 })).fields as { codes: Record<string, number>; ms: number };
  const cpu = process.threadCpuUsage(cpu0);
  const cpuMs = (cpu.user + cpu.system) / 1000;
  const wallMs = performance.now() - wall0;
  await sleep(500); // the server's last count
  t.log("t-tls outcomes", report, `server's renegotiations ${renegotiations}; host thread CPU ${cpuMs.toFixed(0)} ms in ${wallMs.toFixed(0)} ms (host start included)`);
  t.is(renegotiations, 0, "the host's TLS client did not renegotiate once");
  t.deepEqual(report.codes, { unavailable: 8 }, "each of the 8 requests failed with unavailable (the renegotiation refused), none waited for its deadline");
  t.true(report.ms < 8000, `the 8 requests, 4 after each other, took ${report.ms} ms in all, less than one deadline`);
  t.is(late, 0, "the canary stored every block within 5 s and RPC answered within 5 s");
});
