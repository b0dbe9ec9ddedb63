// Hostile probes of session 15 (issue #8).
//
// An HTTPS server behind a granted http_request that offers only finite-field DHE key exchange
// (TLS 1.2) with a 10,000-bit group of its choosing: any odd number, as OpenSSL's client checks
// its size, not its primality, and exponentiates by a full-length key. Before: each handshake
// held the host's loop for ~0.8-1.1 s of CPU (a module keeping 16 requests in flight: 16 s of
// stall a round). Now the host's TLS client offers only ECDHE on fixed groups
// (TLS_KEY_EXCHANGE): the server finds nothing it accepts, the request fails at once naming it.

import test from "ava";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { httpExchange, parseHttpUrl } from "../capabilities/http.ts";
import { CapabilityError } from "../capabilities/types.ts";

const TLS_DIR = fileURLToPath(new URL("./fixtures/tls/", import.meta.url));

// A TLS 1.2 server offering only DHE-RSA with a 10,000-bit "group" (a random odd number, g = 2),
// in a process of its own so that this process's CPU is the client's alone. Prints its port.
const DHE_SERVER = `
const tls = require("node:tls");
const fs = require("node:fs");
const crypto = require("node:crypto");
const len = (n) => { if (n < 128) return Buffer.from([n]); const o = []; while (n) { o.unshift(n & 255); n >>= 8; } return Buffer.from([0x80 | o.length, ...o]); };
const int = (b) => { if (b[0] & 0x80) b = Buffer.concat([Buffer.from([0]), b]); return Buffer.concat([Buffer.from([2]), len(b.length), b]); };
const p = crypto.randomBytes(1250); p[0] |= 0x80; p[p.length - 1] |= 1;
const body = Buffer.concat([int(p), int(Buffer.from([2]))]);
const der = Buffer.concat([Buffer.from([0x30]), len(body.length), body]);
const dhparam = "-----BEGIN DH PARAMETERS-----\\n" + der.toString("base64").match(/.{1,64}/g).join("\\n") + "\\n-----END DH PARAMETERS-----\\n";
const srv = tls.createServer({ key: fs.readFileSync(process.argv[1]), cert: fs.readFileSync(process.argv[2]), dhparam, ciphers: "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384", maxVersion: "TLSv1.2" }, (s) => {
  s.on("error", () => {});
  s.end("HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok");
});
srv.on("tlsClientError", () => {});
srv.listen(0, "127.0.0.1", () => console.log(srv.address().port));
process.stdin.on("end", () => process.exit(0)).resume();
`;

test("an HTTPS server offering only finite-field DHE with a 10,000-bit group of its choosing: the host's TLS client does no such key exchange (TLS_KEY_EXCHANGE); each request fails at once naming it, with a few ms of the host's CPU", async (t) => {
  t.timeout(120_000);
  const server = spawn(process.execPath, ["-e", DHE_SERVER, `${TLS_DIR}rsa-key.pem`, `${TLS_DIR}rsa-cert.pem`], { stdio: ["pipe", "pipe", "inherit"] });
  t.teardown(() => server.kill("SIGKILL"));
  const port = await new Promise<number>((resolve, reject) => {
    let text = "";
    server.stdout.on("data", (d: Buffer) => {
      text += d.toString();
      if (text.includes("\n")) resolve(Number(text.split("\n")[0]));
    });
    server.once("exit", (code) => reject(new Error(`the DHE server exited (${code})`)));
  });
  const delay = monitorEventLoopDelay({ resolution: 5 });
  delay.enable();
  const cpu0 = process.threadCpuUsage();
  const outcomes: string[] = [];
  for (let i = 0; i < 3; i++) {
    const err = await t.throwsAsync(httpExchange(`dhe-${port}`, { target: parseHttpUrl(`https://127.0.0.1:${port}/x`), method: "GET", headers: {}, body: undefined, timeoutMs: 30_000 }));
    t.true(err instanceof CapabilityError);
    outcomes.push(`${(err as CapabilityError).code}: ${err!.message}`);
  }
  const cpu = process.threadCpuUsage(cpu0);
  delay.disable();
  const cpuMs = (cpu.user + cpu.system) / 1000;
  t.log(outcomes[0], `; 3 requests: ${cpuMs.toFixed(0)} ms of this thread's CPU, longest loop delay ${(delay.max / 1e6).toFixed(0)} ms`);
  for (const o of outcomes) t.regex(o, /^unavailable: TLS with 127\.0\.0\.1:\d+: .*offers only ECDHE key exchange .*TLS_KEY_EXCHANGE/, "refused at the handshake, naming what the host offers");
  // Before: 0.8-1.1 s of CPU per handshake (2.4-3.3 s for the three). CPU time, which load does
  // not stretch; the bound leaves room for TLS setup and a GC.
  t.true(cpuMs < 400, `the three handshakes cost ${cpuMs.toFixed(0)} ms of the host thread's CPU`);
});
