// A fake DNS server on a loopback UDP port for tests of http_request's name resolution
// (capabilities/dns.ts). What it answers depends on the name's first label:
//   never-*    no answer, ever (a server that does not answer)
//   slow-*     an A record 10.0.0.1 after `slowMs`
//   garbage-*  bytes that are not a DNS message (the right id, then nonsense)
//   huge-*     4,000 A records in one 64 KiB datagram (public addresses: never connect to them)
//   hugeheld-* 4,000 A records of private addresses (refused before any connect) and no answer
//              to AAAA questions, so that a lookup holds its A answer until the AAAA one gives up
//   flood-*    4,000 A records of private addresses (10.1.x.y) and an empty AAAA answer, at once
//   private-*  an A record 10.0.0.1 (a private address: the host refuses it before connecting)
//   public-*   an A record 93.184.0.1 (public: for resolver tests only, never connect to it)
//   tc-*       over UDP an empty answer marked truncated (TC); over TCP (the same port) three A
//              records 93.184.1.1-3 (public); over TCP, AAAA questions get an empty answer
//   tcslow-*   truncated over UDP; over TCP the answer's first byte only, then nothing
//   anything else: NXDOMAIN
// With `rcode`, every question is answered with that rcode and no records (2 = SERVFAIL, 5 = REFUSED).
// AAAA questions get an empty answer (NOERROR, no records) except for never-*, hugeheld-* and garbage-*.

import dgram from "node:dgram";
import net from "node:net";
import { performance } from "node:perf_hooks";
import type { ExecutionContext } from "ava";

export interface DnsQuery {
  name: string;
  /** 1 = A, 28 = AAAA. */
  type: number;
  /** performance.now() when it arrived. */
  at: number;
  /** Asked over TCP. */
  tcp: boolean;
}

export interface FakeDns {
  /** "127.0.0.1:PORT", as `[host] dns_servers` takes it. */
  readonly server: string;
  readonly queries: DnsQuery[];
  /** Queries for names starting with `prefix`. */
  count(prefix: string): number;
}

function question(msg: Buffer): { name: string; type: number; end: number } | undefined {
  const labels: string[] = [];
  let i = 12;
  while (i < msg.length && msg[i] !== 0) {
    const len = msg[i]!;
    if (len > 63 || i + 1 + len > msg.length) return undefined;
    labels.push(msg.subarray(i + 1, i + 1 + len).toString("latin1"));
    i += 1 + len;
  }
  if (i + 5 > msg.length) return undefined;
  return { name: labels.join(".").toLowerCase(), type: msg.readUInt16BE(i + 1), end: i + 5 };
}

function answer(query: Buffer, end: number, rcode: number, addresses: Array<[number, number, number, number]>, flags = 0x81): Buffer {
  const head = Buffer.from([query[0]!, query[1]!, flags, 0x80 | rcode, 0, 1, addresses.length >> 8, addresses.length & 255, 0, 0, 0, 0]);
  const records = addresses.map((a) => Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ...a]));
  return Buffer.concat([head, query.subarray(12, end), ...records]);
}

/** 4,000 A records of 10.1.x.y, each naming the question (a pointer to offset 12). */
const HUGE_PRIVATE_RECORDS = Buffer.concat(Array.from({ length: 4000 }, (_, k) => Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 1, k >> 8, k & 255])));

/** Starts the server; it closes at the test's end. */
export async function fakeDns(t: ExecutionContext, slowMs = 300, opts: { rcode?: number } = {}): Promise<FakeDns> {
  let socket = dgram.createSocket("udp4");
  const queries: DnsQuery[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const onMessage = (msg: Buffer, peer: dgram.RemoteInfo) => {
    const q = question(msg);
    if (!q) return;
    queries.push({ name: q.name, type: q.type, at: performance.now(), tcp: false });
    const send = (out: Buffer) => socket.send(out, peer.port, peer.address, () => undefined);
    const kind = q.name.split("-")[0];
    if (opts.rcode !== undefined) return send(answer(msg, q.end, opts.rcode, []));
    if (kind === "tc" || kind === "tcslow") return send(answer(msg, q.end, 0, [], 0x83));
    if (kind === "never") return;
    if (kind === "hugeheld" && q.type !== 1) return;
    if (kind === "garbage") return send(Buffer.concat([msg.subarray(0, 2), Buffer.from("\x81\x80\xff\xff\xff\xffnot a DNS answer at all", "latin1")]));
    if (q.type !== 1) return send(answer(msg, q.end, kind === "private" || kind === "public" || kind === "huge" || kind === "slow" || kind === "flood" ? 0 : 3, []));
    if (kind === "huge") return send(answer(msg, q.end, 0, Array.from({ length: 4000 }, (_, k) => [93, 184, k >> 8, k & 255] as [number, number, number, number])));
    if (kind === "hugeheld" || kind === "flood") {
      // Hundreds of these at once: the records are made once, so that the server keeps up.
      const head = Buffer.from([msg[0]!, msg[1]!, 0x81, 0x80, 0, 1, 4000 >> 8, 4000 & 255, 0, 0, 0, 0]);
      return send(Buffer.concat([head, msg.subarray(12, q.end), HUGE_PRIVATE_RECORDS]));
    }
    if (kind === "private") return send(answer(msg, q.end, 0, [[10, 0, 0, 1]]));
    if (kind === "public") return send(answer(msg, q.end, 0, [[93, 184, 0, 1]]));
    if (kind === "slow") {
      const timer = setTimeout(() => (timers.delete(timer), send(answer(msg, q.end, 0, [[10, 0, 0, 1]]))), slowMs);
      timers.add(timer);
      return;
    }
    send(answer(msg, q.end, 3, []));
  };
  // The TCP side, on the UDP side's port: a 2-byte length before each message.
  const tcp = net.createServer((conn) => {
    conn.on("error", () => undefined);
    let buf = Buffer.alloc(0);
    conn.on("data", (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
      const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
      const q = question(msg);
      if (!q) return void conn.destroy();
      queries.push({ name: q.name, type: q.type, at: performance.now(), tcp: true });
      const kind = q.name.split("-")[0];
      const out = kind === "tc" && q.type === 1 ? answer(msg, q.end, 0, [[93, 184, 1, 1], [93, 184, 1, 2], [93, 184, 1, 3]]) : answer(msg, q.end, 0, []);
      const framed = Buffer.concat([Buffer.from([out.length >> 8, out.length & 255]), out]);
      if (kind === "tcslow") conn.write(framed.subarray(0, 1));
      else conn.end(framed);
    });
  });
  // A free port for both: the UDP port first, then TCP on it (another tries again if that is taken).
  for (let attempt = 0; ; attempt++) {
    socket.on("message", onMessage);
    await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
    const ok = await new Promise<boolean>((resolve) => {
      tcp.once("error", () => resolve(false));
      tcp.listen(socket.address().port, "127.0.0.1", () => resolve(true));
    });
    if (ok) {
      // Room for the bursts of queries of hundreds of lookups at once (the kernel caps it at
      // net.core.rmem_max): the default (~200 KiB) drops most of them while this loop is busy.
      try {
        socket.setRecvBufferSize(4 * 1024 * 1024);
      } catch {
        // Kept at the default: some queries are lost and asked again, as the tests allow.
      }
      break;
    }
    if (attempt >= 20) throw new Error("no port free for both UDP and TCP after 20 tries");
    await new Promise<void>((resolve) => socket.close(() => resolve()));
    socket = dgram.createSocket("udp4");
  }
  t.teardown(() => {
    for (const timer of timers) clearTimeout(timer);
    socket.close();
    tcp.close();
  });
  return {
    server: `127.0.0.1:${socket.address().port}`,
    queries,
    count: (prefix) => queries.filter((q) => q.name.startsWith(prefix)).length,
  };
}
