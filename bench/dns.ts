// http_request's DNS lookups and what an answer of 4,000 addresses (one 64 KiB datagram, which
// whoever controls a name's DNS can send) costs the host's thread.
//
// Result: 64 lookups (A and AAAA), 16 at once, through capabilities/dns.ts's stub resolver,
// each A answer 4,000 records: the CPU of this thread per batch. Baseline: the same batch with
// answers of one address, through the same resolver. Reference: the 4,000-address batch through
// c-ares (dns.promises.Resolver, what the host used before) on this thread, which decodes every
// record. The three take turns, ROUNDS times. The server is a child process, so this thread's
// CPU is the resolvers' alone.

import { spawn } from "node:child_process";
import { promises as ares } from "node:dns";
import { DnsResolver } from "../capabilities/dns.ts";
import { track, type Benchmark, type Row } from "./common.ts";
import { summarise } from "./stats.ts";

const ROUNDS = 10;
const LOOKUPS = 64;
const AT_ONCE = 16;

const SERVER = `
const dgram = require("node:dgram");
const record = (k) => Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 93, 184, k >> 8, k & 255]);
const many = Buffer.concat(Array.from({ length: 4000 }, (_, k) => record(k)));
const s = dgram.createSocket("udp4");
s.on("message", (msg, r) => {
  let i = 12; while (msg[i]) i += msg[i] + 1;
  const end = i + 5, a = msg.readUInt16BE(i + 1) === 1, big = msg[13] === 0x68;
  const n = !a ? 0 : big ? 4000 : 1;
  const head = Buffer.from([msg[0], msg[1], 0x81, 0x80, 0, 1, n >> 8, n & 255, 0, 0, 0, 0]);
  s.send(Buffer.concat([head, msg.subarray(12, end), n === 4000 ? many : n ? record(1) : Buffer.alloc(0)]), r.port, r.address);
});
s.bind(0, "127.0.0.1", () => console.log(s.address().port));
process.stdin.on("end", () => process.exit(0)).resume();
`;

/** This thread's CPU (ms) for LOOKUPS lookups of `prefix` names, AT_ONCE at a time. */
async function batch(resolve: (name: string) => Promise<unknown>, prefix: string, round: number): Promise<number> {
  const cpu0 = process.threadCpuUsage();
  await Promise.all(Array.from({ length: AT_ONCE }, async (_, w) => {
    for (let i = 0; i < LOOKUPS / AT_ONCE; i++) await resolve(`${prefix}-${round}-${w}-${i}.example`);
  }));
  const cpu = process.threadCpuUsage(cpu0);
  return (cpu.user + cpu.system) / 1000;
}

export const dnsBench: Benchmark = {
  name: "dns",
  title: `DNS: this thread's CPU for ${LOOKUPS} lookups (${AT_ONCE} at once) answered 4,000 addresses each`,
  async run(): Promise<Row[]> {
    const server = track(spawn(process.execPath, ["-e", SERVER], { stdio: ["pipe", "pipe", "inherit"] }));
    try {
      const port = await new Promise<string>((resolve) => server.stdout!.once("data", (d: Buffer) => resolve(d.toString().trim())));
      const stub = new DnsResolver({ servers: [`127.0.0.1:${port}`], hostsFile: "" });
      // One channel per lookup, as the host had it (one channel's socket holds ~3 such answers).
      const caresBoth = (name: string) => {
        const cares = new ares.Resolver({ timeout: 2000, tries: 3 });
        cares.setServers([`127.0.0.1:${port}`]);
        return Promise.all([cares.resolve4(name), cares.resolve6(name).catch(() => [])]);
      };
      await stub.resolve("huge-warm.example");
      await caresBoth("huge-warm.example");
      const s = { huge: [] as number[], small: [] as number[], cares: [] as number[] };
      for (let r = 0; r < ROUNDS; r++) {
        s.huge.push(await batch(stub.resolve, "huge", r));
        s.small.push(await batch(stub.resolve, "small", r));
        s.cares.push(await batch(caresBoth, "huge", r));
      }
      const small = `${LOOKUPS} lookups answered one address each, stub resolver (CPU per batch)`;
      return [
        { what: `${LOOKUPS} lookups answered 4,000 addresses each, stub resolver (CPU per batch)`, kind: "result", unit: "ms", stats: summarise(s.huge), vs: small },
        { what: `${LOOKUPS} lookups answered 4,000 addresses each, c-ares on this thread (CPU per batch)`, kind: "reference", unit: "ms", stats: summarise(s.cares), vs: small },
        { what: small, kind: "baseline", unit: "ms", stats: summarise(s.small) },
      ];
    } finally {
      server.stdin!.end();
      server.kill("SIGKILL");
    }
  },
};
