// How http_request resolves host names: the hosts file (read by the host), then DNS through
// c-ares in a thread of its own. No lookup takes a thread of libuv's pool.
//
// getaddrinfo (dns.lookup) runs on a pool thread and cannot be cancelled: a name whose servers
// never answer held a thread for the resolver's whole timeout, so two modules asking such names
// held every lookup place and every other module's HTTP waited. c-ares (dns.promises.Resolver)
// sends UDP (TCP for a truncated answer) from a loop instead: a lookup is a socket and a
// timer, any number of them wait at no cost to anyone else, and each is cancelled when its
// request ends (its deadline, or any other end). c-ares parses answers in C and refuses a
// malformed one (EBADRESP); an answer is at most 64 KiB, but parsing one of 4,000 addresses
// takes ~20 ms, so c-ares runs in a thread of its own (DnsThread), not on the host's loop.
//
// What differs from getaddrinfo (docs/security.md, "Names inside the network"):
// - The hosts file (/etc/hosts) is read by the host, not through nsswitch: its entries win over
//   DNS, as with "hosts: files dns". Other sources nsswitch may name (mdns, ldap, systemd-resolved's
//   own stub rules, myhostname) are not consulted.
// - DNS names are asked as written: no search domains from resolv.conf (a single-label name is
//   not completed with the machine's domain).
// - "localhost" and *.localhost that the hosts file does not name are loopback (RFC 6761),
//   without asking DNS.
// - The servers are resolv.conf's, or `[host] dns_servers`.

import net from "node:net";
import { open, stat } from "node:fs/promises";
import { promises as dns } from "node:dns";
import { Worker } from "node:worker_threads";
import type { Resolver } from "./address-policy.ts";
import { CapabilityError } from "./types.ts";

/**
 * Wait for one try of a query before the next (c-ares lengthens it each round, up to
 * MAX_TRY_TIMEOUT_MS; an answer to an earlier try still counts): a silent server is given up
 * after ~14 s, unless the request's deadline comes first (default 10 s).
 */
const TRY_TIMEOUT_MS = 2000;
const MAX_TRY_TIMEOUT_MS = 8000;
/** Tries per server; the request's own deadline (`timeout_ms`) cancels the lookup before if it comes first. */
const TRIES = 3;
/** Largest hosts file read (1 MiB); a larger one fails lookups, naming this limit. */
export const MAX_HOSTS_FILE_BYTES = 1024 * 1024;
/** Addresses of one name used (the first ones, A before AAAA): each is checked before any is connected to. */
export const MAX_ADDRESSES = 64;
/** How long a read of the hosts file is used before the file is looked at again. */
const HOSTS_RECHECK_MS = 1000;

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

/** Resolves names as http_request does: the hosts file, then DNS through c-ares, cancelled on `signal`. */
export class DnsResolver {
  readonly #servers: readonly string[] | undefined;
  readonly #hostsFile: string;
  #hosts: HostsRead | undefined;
  #reading: Promise<HostsRead> | undefined;

  constructor(opts: DnsOptions = {}) {
    this.#servers = opts.servers && opts.servers.length > 0 ? [...opts.servers] : undefined;
    this.#hostsFile = opts.hostsFile ?? "/etc/hosts";
    if (this.#servers) new dns.Resolver().setServers(this.#servers);
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
    const { id, answer } = dnsThread.ask({ name, servers: this.#servers, tryTimeoutMs: TRY_TIMEOUT_MS, tries: TRIES, maxTryTimeoutMs: MAX_TRY_TIMEOUT_MS, max: MAX_ADDRESSES });
    const cancel = () => dnsThread.cancel(id);
    signal?.addEventListener("abort", cancel, { once: true });
    try {
      const { v4, v6 } = await answer;
      const found: Address[] = [];
      for (const address of v4.addresses ?? []) found.push({ address, family: 4 });
      for (const address of v6.addresses ?? []) found.push({ address, family: 6 });
      if (found.length > 0) return found.slice(0, MAX_ADDRESSES);
      // Neither family: the more telling error (a name with no AAAA says ENODATA for it).
      const code = [v4.code, v6.code].find((c) => c !== undefined && c !== "ENODATA") ?? v4.code ?? "ENODATA";
      throw Object.assign(new Error(`lookup of "${name}" failed: ${code}`), { code });
    } finally {
      signal?.removeEventListener("abort", cancel);
    }
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

interface Question {
  name: string;
  servers: readonly string[] | undefined;
  tryTimeoutMs: number;
  tries: number;
  maxTryTimeoutMs: number;
  /** Addresses of a family sent back at most (the rest are dropped in the thread). */
  max: number;
}
type FamilyAnswer = { addresses?: string[]; code?: string };
type Answer = { v4: FamilyAnswer; v6: FamilyAnswer };

// The thread's code: c-ares queries, one channel per lookup (cancel() ends only its own). Plain
// JavaScript, evaluated, so it needs no build step of its own.
const THREAD_CODE = `
const { parentPort } = require("node:worker_threads");
const { promises: dns } = require("node:dns");
const channels = new Map();
const family = (r) => r.status === "fulfilled" ? { addresses: r.value } : { code: String(r.reason && r.reason.code || "EFAIL") };
parentPort.on("message", async (m) => {
  if (m.cancel !== undefined) return channels.get(m.cancel)?.cancel();
  const q = m.question;
  const channel = new dns.Resolver({ timeout: q.tryTimeoutMs, tries: q.tries, maxTimeout: q.maxTryTimeoutMs });
  try {
    if (q.servers) channel.setServers(q.servers);
    channels.set(m.id, channel);
    // Each family cut to q.max as it arrives: kept whole until the other family answered, a
    // few hundred lookups of 4,000 addresses each held the thread past its heap limit.
    const cut = (a) => a.slice(0, q.max);
    const [v4, v6] = await Promise.allSettled([channel.resolve4(q.name).then(cut), channel.resolve6(q.name).then(cut)]);
    parentPort.postMessage({ id: m.id, answer: { v4: family(v4), v6: family(v6) } });
  } catch (err) {
    parentPort.postMessage({ id: m.id, answer: { v4: { code: "EFAIL" }, v6: { code: "EFAIL" } } });
  } finally {
    channels.delete(m.id);
  }
});
`;

/** Heap of the DNS thread: what it holds is a few lookups' answers (64 KiB each at most). */
const THREAD_HEAP_MB = 32;

/**
 * The thread c-ares runs in. c-ares parses an answer on the loop of the thread that asked, and
 * one answer of 4,000 addresses (a 64 KiB datagram, whoever controls the name's DNS can send
 * it) cost ~20 ms of that loop: on the host's loop, 16 such lookups in flight per module
 * would stall everyone. Here it costs the lookups only; the host's loop gets at most
 * MAX_ADDRESSES strings per family. Started at the first lookup, unref'd; if it dies, its
 * lookups fail (unavailable) and the next lookup starts another.
 */
class DnsThread {
  #worker: Worker | undefined;
  #nextId = 1;
  readonly #waiting = new Map<number, { resolve: (a: Answer) => void; reject: (e: Error) => void }>();

  ask(question: Question): { id: number; answer: Promise<Answer> } {
    const id = this.#nextId++;
    const answer = new Promise<Answer>((resolve, reject) => this.#waiting.set(id, { resolve, reject }));
    this.#thread().postMessage({ id, question });
    return { id, answer };
  }

  /** Ends lookup `id` now: its answer rejects with ECANCELLED and its queries stop. */
  cancel(id: number): void {
    const w = this.#waiting.get(id);
    if (!w) return;
    this.#waiting.delete(id);
    this.#worker?.postMessage({ cancel: id });
    w.reject(Object.assign(new Error("lookup cancelled"), { code: "ECANCELLED" }));
  }

  #thread(): Worker {
    if (this.#worker) return this.#worker;
    const worker = new Worker(THREAD_CODE, { eval: true, execArgv: [], resourceLimits: { maxOldGenerationSizeMb: THREAD_HEAP_MB } });
    worker.on("message", (m: { id: number; answer: Answer }) => {
      const w = this.#waiting.get(m.id);
      this.#waiting.delete(m.id);
      w?.resolve(m.answer);
    });
    const gone = (why: string) => {
      if (this.#worker !== worker) return;
      this.#worker = undefined;
      for (const w of this.#waiting.values()) w.reject(Object.assign(new Error(`the DNS thread ended (${why})`), { code: "EDNSTHREAD" }));
      this.#waiting.clear();
    };
    worker.on("error", (err) => gone(err.message));
    worker.on("exit", (code) => gone(`exit ${code}`));
    // After the listeners: attaching a "message" listener refs the worker again.
    worker.unref();
    this.#worker = worker;
    return worker;
  }
}

const dnsThread = new DnsThread();

let current = new DnsResolver();

/** Use these DNS settings for http_request from now on (the host, from `[host] dns_servers`). */
export function configureDns(opts: DnsOptions): void {
  current = new DnsResolver(opts);
}

/** The resolver http_request uses unless a test gives its own (HostServices.resolve). */
export const systemResolver: Resolver = (host, signal) => current.resolve(host, signal);

/** What is wrong with a DNS server address as `[host] dns_servers` takes it (undefined: nothing). */
export function dnsServerProblem(server: string): string | undefined {
  try {
    new dns.Resolver().setServers([server]);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}
