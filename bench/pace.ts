// Remote parties that send in tiny pieces: what one costs the host's loop (this thread's CPU,
// user + system, per second of the exchange), and what pacing their reads costs an ordinary one.
//
// Results: an http_request whose server writes its answer's body one byte per write (plain TCP,
// and TLS records of one byte), and a DNS lookup whose server answers over TCP a byte per write;
// each runs to its deadline (DRIBBLE_MS), ROUNDS times. The servers are child processes, so this
// thread's CPU is the host side's alone. Then an ordinary request to a local server (a small
// answer, and 1 MiB), its latency, LATENCY_ROUNDS times.

import http from "node:http";
import { readFileSync } from "node:fs";
import tls from "node:tls";
import { fileURLToPath } from "node:url";
import { DnsResolver } from "../capabilities/dns.ts";
import { httpExchange, parseHttpUrl } from "../capabilities/http.ts";
import { cpuPerSecond, portServer, type Benchmark, type Row } from "./common.ts";
import { summarise } from "./stats.ts";

const ROUNDS = 3;
const DRIBBLE_MS = 2000;
const LATENCY_ROUNDS = 200;
const FIXTURES = fileURLToPath(new URL("../test/fixtures/", import.meta.url));

const get = (url: string, timeoutMs: number) => httpExchange("bench-pace", { target: parseHttpUrl(url), method: "GET", headers: {}, body: undefined, timeoutMs });

export const paceBench: Benchmark = {
  name: "pace",
  title: "remote parties sending one byte per write: the host loop's CPU per second of the exchange; an ordinary request's latency",
  async run(): Promise<Row[]> {
    tls.setDefaultCACertificates([...tls.getCACertificates("default"), readFileSync(`${FIXTURES}tls/cert.pem`, "utf8")]);
    const s = { plain: [] as number[], tls: [] as number[], dns: [] as number[], small: [] as number[], big: [] as number[] };
    for (let r = 0; r < ROUNDS; r++) {
      for (const kind of ["plain", "tls"] as const) {
        const server = await portServer([`${FIXTURES}http-dribble/dribble-server.cjs`, "body", kind, `${FIXTURES}tls/key.pem`, `${FIXTURES}tls/cert.pem`]);
        s[kind].push(await cpuPerSecond(() => get(`${kind === "tls" ? "https" : "http"}://127.0.0.1:${server.port}/`, DRIBBLE_MS)));
        server.stop();
      }
      const dns = await portServer([`${FIXTURES}http-dribble/dns-dribble-server.cjs`]);
      const resolver = new DnsResolver({ servers: [`127.0.0.1:${dns.port}`], hostsFile: "" });
      s.dns.push(await cpuPerSecond(() => resolver.resolve(`dribble-${r}.example`, AbortSignal.timeout(DRIBBLE_MS))));
      dns.stop();
    }
    const big = Buffer.alloc(1 << 20, 120);
    const fast = http.createServer((req, res) => res.end(req.url === "/big" ? big : "hello"));
    await new Promise<void>((resolve) => fast.listen(0, "127.0.0.1", resolve));
    const port = (fast.address() as import("node:net").AddressInfo).port;
    try {
      for (let i = 0; i < LATENCY_ROUNDS; i++) {
        for (const [path, into] of [["/small", s.small], ["/big", s.big]] as const) {
          const t0 = performance.now();
          await get(`http://127.0.0.1:${port}${path}`, 5000);
          into.push(performance.now() - t0);
        }
      }
    } finally {
      fast.close();
    }
    return [
      { what: `http_request, body one byte per write, plain TCP: loop CPU (ms) per second, to its ${DRIBBLE_MS} ms deadline`, kind: "result", unit: "ms", stats: summarise(s.plain) },
      { what: `http_request, body one byte per TLS record: loop CPU (ms) per second, to its ${DRIBBLE_MS} ms deadline`, kind: "result", unit: "ms", stats: summarise(s.tls) },
      { what: `DNS answer over TCP one byte per write: loop CPU (ms) per second, to its ${DRIBBLE_MS} ms deadline`, kind: "result", unit: "ms", stats: summarise(s.dns) },
      { what: "http_request to a local server, 5-byte answer: latency", kind: "result", unit: "ms", stats: summarise(s.small) },
      { what: "http_request to a local server, 1 MiB answer: latency", kind: "result", unit: "ms", stats: summarise(s.big) },
    ];
  },
};
