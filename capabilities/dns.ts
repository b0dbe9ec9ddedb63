// How http_request resolves host names: the hosts file (read by the host), then DNS through a
// small stub resolver of our own, on the host's loop. No lookup takes a thread.
//
// getaddrinfo (dns.lookup) runs on a pool thread and cannot be cancelled: a name whose servers
// never answered held a thread for the resolver's whole timeout, so two modules asking such names
// held every lookup place and every other module's HTTP waited. c-ares (dns.promises.Resolver),
// which replaced it, decodes every record of an answer before anyone can cut it: an answer of
// 4,000 addresses (one 64 KiB datagram, whoever controls a name's DNS can send it) cost ~15 ms
// and 4,000 strings, so it ran in a thread of its own, and a few hundred such answers at once
// still ran that thread's heap out: every lookup of every module failed. Here a lookup is a UDP
// socket and a timer (a TCP connection for a truncated answer), and its answer is read by
// ./dns-message.ts, which examines at most MAX_RECORDS_EXAMINED records and keeps at most
// MAX_ADDRESSES addresses, whatever the answer holds: microseconds, so on the host's loop.
// At most MAX_LOOKUPS_IN_FLIGHT lookups run at once, all modules together.
//
// What differs from getaddrinfo (docs/security.md, "Names inside the network"):
// - The hosts file (/etc/hosts) is read by the host, not through nsswitch: its entries win over
//   DNS, as with "hosts: files dns". Other sources nsswitch may name (mdns, ldap, systemd-resolved's
//   own stub rules, myhostname) are not consulted.
// - DNS names are asked as written: no search domains from resolv.conf (a single-label name is
//   not completed with the machine's domain).
// - "localhost" and *.localhost that the hosts file does not name are loopback (RFC 6761),
//   without asking DNS.
// - The servers are resolv.conf's (as Node reads it), or `[host] dns_servers`; plain DNS over
//   UDP (512-byte queries, no EDNS), TCP for an answer marked truncated.

import dgram from "node:dgram";
import net from "node:net";
import { randomInt } from "node:crypto";
import { open, stat } from "node:fs/promises";
import { Resolver as AresResolver } from "node:dns";
import { performance } from "node:perf_hooks";
import { sliceAccount } from "../chain/slices.ts";
import type { Resolver } from "./address-policy.ts";
import { type Answer, DnsAnswerError, encodeName, encodeQuery, readAnswer, TYPE_A, TYPE_AAAA, type Expected } from "./dns-message.ts";
import { ReadPace } from "../chain/paced-socket.ts";
import { CapabilityError } from "./types.ts";

/**
 * Wait for one try of a query before the next: TRY_TIMEOUT_MS, doubled each round up to
 * MAX_TRY_TIMEOUT_MS, so a silent server is given up after ~14 s (2 + 4 + 8), unless the
 * request's deadline comes first (default 10 s). Each try has an id of its own and only its
 * answer counts (c-ares also took a late answer to an earlier try): a server slower than a try's
 * wait is heard at a later, longer try.
 */
const TRY_TIMEOUT_MS = 2000;
const MAX_TRY_TIMEOUT_MS = 8000;
/** Rounds over the servers; the request's own deadline (`timeout_ms`) cancels the lookup before if it comes first. */
const TRIES = 3;
/** Largest hosts file read (1 MiB); a larger one fails lookups, naming this limit. */
export const MAX_HOSTS_FILE_BYTES = 1024 * 1024;
/** Addresses of one name used (the first ones, A before AAAA): each is checked before any is connected to. */
export const MAX_ADDRESSES = 64;
/** DNS lookups in flight at once, all modules together (each holds a socket); one more is refused, naming this. */
export const MAX_LOOKUPS_IN_FLIGHT = 1024;
/**
 * Datagrams a lookup's socket takes that answer none of its queries (another id, sender or
 * question) before the lookup fails. Late answers to its own earlier tries count here: at most
 * 2 families x TRIES x 8 servers = 48.
 */
const MAX_STRAY_DATAGRAMS = 64;
/**
 * An answer over TCP read in pieces smaller than this is paced: TCP_SMALL_READS_PER_SECOND reads
 * a second after TCP_SMALL_READ_BURST (chain/paced-socket.ts). A server writing its 65,535-byte answer a
 * byte at a time cost the host's loop ~1 s of CPU per lookup (250-350 ms a second, load 6).
 */
const TCP_PACED_READ_BYTES = 4096;
const TCP_SMALL_READS_PER_SECOND = 50;
const TCP_SMALL_READ_BURST = 16;
/** How long a read of the hosts file is used before the file is looked at again. */
const HOSTS_RECHECK_MS = 1000;
/** How long resolv.conf's servers (as Node reads them) are used before they are read again. */
const SERVERS_RECHECK_MS = 5000;

export type Address = { address: string; family: number };

/** `text` (a hosts file) as name -> addresses, in the file's order; names lowercased. */
export function parseHosts(text: string): Map<string, Address[]> {
  const table = new Map<string, Address[]>();
  for (const raw of text.split("\n")) {
    const hash = raw.indexOf("#");
    const fields = (hash < 0 ? raw : raw.slice(0, hash)).trim().split(/\s+/);
    if (fields.length < 2) continue;
    const address = fields[0]!;
    const family = net.isIP(address.replace(/%.*$/s, ""));
    if (family === 0) continue;
    for (const name of fields.slice(1)) {
      const key = name.toLowerCase().replace(/\.$/, "");
      const list = table.get(key) ?? [];
      if (!list.some((a) => a.address === address)) list.push({ address, family });
      table.set(key, list);
    }
  }
  return table;
}

interface HostsRead {
  table: Map<string, Address[]>;
  /** Why the file cannot be used (too large): every lookup fails saying so. */
  problem: string | undefined;
  key: string;
  checked: number;
}

export interface DnsOptions {
  /** DNS servers ("IP" or "IP:port", "[IPv6]:port"); absent: resolv.conf's. */
  servers?: readonly string[];
  /** The hosts file ("" for none). */
  hostsFile?: string;
}

/** Resolves names as http_request does: the hosts file, then DNS, cancelled on `signal`. */
export class DnsResolver {
  readonly #servers: readonly DnsServer[] | undefined;
  #system: { servers: readonly DnsServer[]; checked: number } | undefined;
  readonly #hostsFile: string;
  #hosts: HostsRead | undefined;
  #reading: Promise<HostsRead> | undefined;

  constructor(opts: DnsOptions = {}) {
    const servers = (opts.servers ?? []).map((s) => {
      const parsed = parseServer(s);
      if (typeof parsed === "string") throw new Error(`DNS server "${s}": ${parsed}`);
      return parsed;
    });
    this.#servers = servers.length > 0 ? servers : undefined;
    this.#hostsFile = opts.hostsFile ?? "/etc/hosts";
  }

  readonly resolve: Resolver = async (host, signal) => {
    const name = host.toLowerCase().replace(/\.$/, "");
    const hosts = await this.#readHosts();
    if (hosts.problem !== undefined) throw new CapabilityError("unavailable", hosts.problem);
    const listed = hosts.table.get(name);
    if (listed !== undefined) return listed.slice(0, MAX_ADDRESSES);
    if (name === "localhost" || name.endsWith(".localhost")) return [{ address: "127.0.0.1", family: 4 }, { address: "::1", family: 6 }];
    return this.#query(name, signal);
  };

  async #query(name: string, signal: AbortSignal | undefined): Promise<Address[]> {
    if (signal?.aborted) throw Object.assign(new Error(`lookup of "${name}" cancelled`), { code: "ECANCELLED" });
    let encoded: Buffer;
    try {
      encoded = encodeName(name);
    } catch (err) {
      throw Object.assign(new Error((err as Error).message), { code: "EBADNAME" });
    }
    if (lookupsInFlight >= MAX_LOOKUPS_IN_FLIGHT) {
      throw new CapabilityError("unavailable", `cannot resolve "${name}": ${lookupsInFlight} DNS lookups are in flight, the most the host runs at once (MAX_LOOKUPS_IN_FLIGHT); try again when some have ended`);
    }
    const lookup = new Lookup(name, encoded, this.#serverList());
    const cancel = () => lookup.end();
    signal?.addEventListener("abort", cancel, { once: true });
    lookupsInFlight++;
    try {
      const [v4, v6] = await Promise.all([lookup.family(TYPE_A), lookup.family(TYPE_AAAA)]);
      if (lookup.ended) throw lookup.ended;
      const found: Address[] = [];
      if ("addresses" in v4) for (const address of v4.addresses) found.push({ address, family: 4 });
      if ("addresses" in v6) for (const address of v6.addresses) found.push({ address, family: 6 });
      if (found.length > 0) return found.slice(0, MAX_ADDRESSES);
      // Neither family: the more telling error (a name with no AAAA says ENODATA for it).
      const codes = [v4, v6].map((a) => ("code" in a ? a.code : "ENODATA"));
      const code = codes.find((c) => c !== "ENODATA") ?? "ENODATA";
      throw Object.assign(new Error(`lookup of "${name}" failed: ${code}`), { code });
    } finally {
      lookupsInFlight--;
      signal?.removeEventListener("abort", cancel);
      lookup.end();
    }
  }

  /** The servers asked: `[host] dns_servers`, or resolv.conf's as Node reads it (127.0.0.1 if none, as c-ares). */
  #serverList(): readonly DnsServer[] {
    if (this.#servers) return this.#servers;
    const now = performance.now();
    if (this.#system === undefined || now - this.#system.checked > SERVERS_RECHECK_MS) {
      const listed = new AresResolver().getServers().map(parseServer).filter((s): s is DnsServer => typeof s !== "string");
      this.#system = { servers: listed.length > 0 ? listed : [{ address: "127.0.0.1", port: 53, family: 4 }], checked: now };
    }
    return this.#system.servers;
  }

  /** The hosts file's table, read again when it changed (looked at most once a second). */
  async #readHosts(): Promise<HostsRead> {
    const now = performance.now();
    if (this.#hosts !== undefined && now - this.#hosts.checked < HOSTS_RECHECK_MS) return this.#hosts;
    this.#reading ??= this.#loadHosts(now).finally(() => (this.#reading = undefined));
    this.#hosts = await this.#reading;
    return this.#hosts;
  }

  async #loadHosts(now: number): Promise<HostsRead> {
    if (this.#hostsFile === "") return { table: new Map(), problem: undefined, key: "", checked: now };
    const s = await stat(this.#hostsFile).catch(() => undefined);
    if (s === undefined) return { table: new Map(), problem: undefined, key: "", checked: now };
    const key = `${s.ino}:${s.size}:${s.mtimeMs}`;
    if (this.#hosts?.key === key) return { ...this.#hosts, checked: now };
    if (s.size > MAX_HOSTS_FILE_BYTES) {
      const problem = `the hosts file ${this.#hostsFile} is ${s.size} bytes, more than the ${MAX_HOSTS_FILE_BYTES} (MAX_HOSTS_FILE_BYTES) the host reads for http_request; make it smaller`;
      return { table: new Map(), problem, key, checked: now };
    }
    // Read through a handle, at most the limit whatever the file grew to since stat.
    const fh = await open(this.#hostsFile, "r");
    try {
      const buf = Buffer.alloc(Math.min(MAX_HOSTS_FILE_BYTES, s.size + 4096));
      const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
      return { table: parseHosts(buf.toString("utf8", 0, bytesRead)), problem: undefined, key, checked: now };
    } finally {
      await fh.close();
    }
  }
}

/** A DNS server as `[host] dns_servers` and resolv.conf give it, parsed. */
interface DnsServer {
  /** Canonical text (IPv6 compressed, lowercase), as a datagram's sender is reported. */
  address: string;
  port: number;
  family: 4 | 6;
}

/** `server` ("IP", "IP:port", "[IPv6]" or "[IPv6]:port") parsed, or what is wrong with it. */
function parseServer(server: string): DnsServer | string {
  let host = server;
  let port = "53";
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(server);
  const withPort = /^([^:]+):(\d+)$/.exec(server);
  if (bracketed) [host, port] = [bracketed[1]!, bracketed[2] ?? "53"];
  else if (withPort) [host, port] = [withPort[1]!, withPort[2]!];
  const family = net.isIP(host);
  if (family === 0) return `"${host}" is not an IP address`;
  if (bracketed && family !== 6) return `"${host}" in brackets is not an IPv6 address`;
  const n = Number(port);
  if (!Number.isInteger(n) || n < 1 || n > 65535) return `port ${port} is not 1-65535`;
  const address = family === 6 ? new URL(`http://[${host.replace(/%.*$/s, "")}]/`).hostname.slice(1, -1) : host;
  return { address, port: n, family: family as 4 | 6 };
}

/** What a query of one family ended with: its addresses, or an error code as c-ares named them. */
type FamilyAnswer = { addresses: string[] } | { code: string };

/** Codes of the rcodes (RFC 1035 4.1.1), as c-ares and Node name them; NXDOMAIN is final, the others try the next server. */
const RCODES: Record<number, string> = { 1: "EFORMERR", 2: "ESERVFAIL", 3: "ENOTFOUND", 4: "ENOTIMP", 5: "EREFUSED" };

/**
 * One lookup of a name: its A and AAAA queries, over one UDP socket per address family of the
 * servers (a fresh socket, so a port the system picks at random, that no other lookup shares),
 * and a TCP connection for an answer that did not fit. end() stops it: every query still waiting
 * ends with ECANCELLED, the sockets close and no query is sent after.
 */
class Lookup {
  readonly #sockets = new Map<4 | 6, dgram.Socket>();
  /** Query id -> what handles a datagram carrying it. */
  readonly #waiting = new Map<number, (msg: Buffer, from: dgram.RemoteInfo) => void>();
  /** Each query still waiting, to end it. */
  readonly #pending = new Set<(r: FamilyAnswer) => void>();
  readonly #tcp = new Set<net.Socket>();
  #stray = 0;
  #ended: Error | undefined;

  constructor(
    readonly name: string,
    readonly encoded: Buffer,
    readonly servers: readonly DnsServer[],
  ) {}

  get ended(): Error | undefined {
    return this.#ended;
  }

  /** Ends the lookup with `why` (default: cancelled); idempotent. */
  end(why: Error = Object.assign(new Error(`lookup of "${this.name}" cancelled`), { code: "ECANCELLED" })): void {
    if (this.#ended) return;
    this.#ended = why;
    for (const done of [...this.#pending]) done({ code: "ECANCELLED" });
    for (const s of this.#sockets.values()) s.close();
    for (const s of this.#tcp) s.destroy();
    this.#sockets.clear();
    this.#waiting.clear();
  }

  /** The addresses of `type`: the servers in order, TRIES rounds, each try waiting longer. */
  async family(type: typeof TYPE_A | typeof TYPE_AAAA): Promise<FamilyAnswer> {
    let last: FamilyAnswer = { code: "ETIMEOUT" };
    for (let round = 0; round < TRIES; round++) {
      const waitMs = Math.min(TRY_TIMEOUT_MS * 2 ** round, MAX_TRY_TIMEOUT_MS);
      for (const server of this.servers) {
        if (this.#ended) return { code: "ECANCELLED" };
        last = await this.#try(server, type, waitMs);
        if ("addresses" in last || last.code === "ENOTFOUND" || last.code === "ENODATA" || last.code === "ECANCELLED") return last;
      }
    }
    return last;
  }

  #freshId(): number {
    for (;;) {
      const id = randomInt(65536);
      if (!this.#waiting.has(id)) return id;
    }
  }

  #socket(family: 4 | 6): dgram.Socket {
    let socket = this.#sockets.get(family);
    if (socket) return socket;
    socket = dgram.createSocket(family === 4 ? "udp4" : "udp6");
    socket.on("message", (msg, from) => {
      // Only the first two bytes are looked at before a query claims the datagram.
      const handle = msg.length >= 2 ? this.#waiting.get(msg.readUInt16BE(0)) : undefined;
      if (handle) handle(msg, from);
      else this.#strayOne();
    });
    socket.on("error", (err) => this.end(Object.assign(new Error(`DNS socket failed: ${err.message}`), { code: (err as NodeJS.ErrnoException).code ?? "ECONNREFUSED" })));
    socket.unref();
    this.#sockets.set(family, socket);
    return socket;
  }

  /** A datagram that answers no query of this lookup: a few are ignored, more end the lookup. */
  #strayOne(): void {
    if (++this.#stray <= MAX_STRAY_DATAGRAMS) return;
    this.end(new CapabilityError("unavailable", `cannot resolve "${this.name}": more than ${MAX_STRAY_DATAGRAMS} datagrams that answer none of its queries came to its socket (MAX_STRAY_DATAGRAMS); something other than its DNS servers is sending to it`));
  }

  /** One query to `server` over UDP (TCP if the answer was truncated), waiting `waitMs` at most. */
  #try(server: DnsServer, type: typeof TYPE_A | typeof TYPE_AAAA, waitMs: number): Promise<FamilyAnswer> {
    const id = this.#freshId();
    return new Promise<FamilyAnswer>((resolve) => {
      const done = (r: FamilyAnswer) => {
        clearTimeout(timer);
        this.#waiting.delete(id);
        this.#pending.delete(done);
        resolve(r);
      };
      const timer = setTimeout(() => done({ code: "ETIMEOUT" }), waitMs).unref();
      this.#pending.add(done);
      this.#waiting.set(id, (msg, from) => {
        // An answer counts only from the server asked.
        if (from.address !== server.address || from.port !== server.port) return this.#strayOne();
        const a = read(msg, { id, name: this.name, type });
        if (!("kind" in a)) return done(a);
        if (a.kind === "other") return this.#strayOne();
        // Too large for a datagram: the same question to the same server over TCP, with a wait of its own as long.
        this.#waiting.delete(id);
        this.#pending.delete(done);
        clearTimeout(timer);
        void this.#overTcp(server, type, waitMs).then(resolve);
      });
      this.#socket(server.family).send(encodeQuery(id, this.encoded, type), server.port, server.address, (err) => {
        if (err) done({ code: (err as NodeJS.ErrnoException).code ?? "ECONNREFUSED" });
      });
    });
  }

  /** The query over TCP: a 2-byte length before each message, so an answer is at most 65,535 bytes by construction. */
  #overTcp(server: DnsServer, type: typeof TYPE_A | typeof TYPE_AAAA, waitMs: number): Promise<FamilyAnswer> {
    if (this.#ended) return Promise.resolve({ code: "ECANCELLED" });
    const account = sliceAccount.getStore();
    const id = this.#freshId();
    const query = encodeQuery(id, this.encoded, type);
    return new Promise<FamilyAnswer>((resolve) => {
      // A high-water mark of one byte: paused, it stops reading the kernel at once (ReadPace).
      const options = { host: server.address, port: server.port, readableHighWaterMark: 1 };
      const socket = net.connect(options);
      socket.unref();
      const pace = new ReadPace(TCP_SMALL_READS_PER_SECOND, TCP_SMALL_READ_BURST);
      let paused: NodeJS.Timeout | undefined;
      this.#tcp.add(socket);
      // The length, then one buffer of that length (at most 65,535 bytes): nothing else is held.
      const head = Buffer.alloc(2);
      let headGot = 0;
      let body: Buffer | undefined;
      let bodyGot = 0;
      const done = (r: FamilyAnswer) => {
        clearTimeout(timer);
        clearTimeout(paused);
        this.#pending.delete(done);
        this.#tcp.delete(socket);
        socket.destroy();
        resolve(r);
      };
      const timer = setTimeout(() => done({ code: "ETIMEOUT" }), waitMs).unref();
      this.#pending.add(done);
      socket.on("connect", () => socket.write(Buffer.concat([Buffer.from([query.length >> 8, query.length & 255]), query])));
      const take = (chunk: Buffer): boolean => {
        let i = 0;
        while (headGot < 2 && i < chunk.length) head[headGot++] = chunk[i++]!;
        if (headGot < 2) return false;
        body ??= Buffer.alloc(head.readUInt16BE(0));
        bodyGot += chunk.copy(body, bodyGot, i);
        if (bodyGot < body.length) return false;
        const a = read(body, { id, name: this.name, type });
        done("kind" in a ? { code: "EBADRESP" } : a);
        return true;
      };
      socket.on("data", (chunk: Buffer) => {
        const t0 = performance.now();
        if (take(chunk)) return;
        // An answer in small reads (a server writing a byte at a time: up to 65,537 reads) is
        // read TCP_SMALL_READS_PER_SECOND times a second after the first TCP_SMALL_READ_BURST;
        // the time is charged to the module whose request looks the name up (host_cpu_ms_per_s).
        if (chunk.length < TCP_PACED_READ_BYTES) pace.spend(1, t0);
        const now = performance.now();
        const wait = Math.max(account?.(now - t0) ?? 0, pace.waitMs(now));
        if (wait <= 0 || paused !== undefined) return;
        socket.pause();
        paused = setTimeout(() => {
          paused = undefined;
          socket.resume();
        }, Math.min(Math.ceil(wait), 1000)).unref();
      });
      socket.on("error", (err: NodeJS.ErrnoException) => done({ code: err.code ?? "ECONNREFUSED" }));
      socket.on("close", () => done({ code: "EBADRESP" }));
    });
  }
}

/** readAnswer's result for one query: a malformed answer is EBADRESP, an rcode its code. */
function read(msg: Buffer, expect: Expected): FamilyAnswer | { kind: "other" } | { kind: "truncated" } {
  let a: Answer;
  try {
    a = readAnswer(msg, expect, MAX_ADDRESSES);
  } catch (err) {
    if (err instanceof DnsAnswerError) return { code: "EBADRESP" };
    throw err;
  }
  if (a.kind === "answer") return a.addresses.length > 0 ? { addresses: a.addresses } : { code: "ENODATA" };
  if (a.kind === "rcode") return { code: RCODES[a.rcode] ?? "EBADRESP" };
  return a;
}

let lookupsInFlight = 0;

/** DNS lookups in flight now, all resolvers together (at most MAX_LOOKUPS_IN_FLIGHT). */
export const dnsLookupsInFlight = (): number => lookupsInFlight;

let current = new DnsResolver();

/** Use these DNS settings for http_request from now on (the host, from `[host] dns_servers`). */
export function configureDns(opts: DnsOptions): void {
  current = new DnsResolver(opts);
}

/** The resolver http_request uses unless a test gives its own (HostServices.resolve). */
export const systemResolver: Resolver = (host, signal) => current.resolve(host, signal);

/** What is wrong with a DNS server address as `[host] dns_servers` takes it (undefined: nothing). */
export function dnsServerProblem(server: string): string | undefined {
  const parsed = parseServer(server);
  return typeof parsed === "string" ? parsed : undefined;
}
