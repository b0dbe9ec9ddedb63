// Outbound HTTP for modules: the engine behind http_request (permission network_access, family
// "network"). The request is made by the host process, never by the module, so the grant is
// enforced on every request whatever the runtime:
//
// - The URL is parsed once, by the WHATWG URL parser. Its hostname (lowercased, IDNA-encoded,
//   numeric IPv4 forms such as "2130706433", "0x7f.1" or "127.1" already turned into the
//   dotted quad) goes through canonicalHostPort, the same function that canonicalises grants.
//   The canonical "host:port" is the scope target the hub checks, and the canonical host is
//   exactly what is resolved and connected to: no other spelling of the host is ever used.
// - A host name is resolved ONCE (./dns.ts: the hosts file, then DNS through the host's own
//   stub resolver, never a thread of libuv's pool; the lookup is cancelled when the request ends,
//   at its deadline or otherwise); the socket connects to one of those addresses (by address,
//   so no second lookup can answer differently). A name must resolve to public addresses only:
//   a name that resolves to a loopback, private, link-local or other special-use address is
//   refused (permission_denied), because whoever controls the name's DNS could otherwise point
//   a grant for a public name at the node's RPC port or the local network (DNS rebinding).
//   IP literals are taken as written (the operator granted that address), and "localhost"
//   (and *.localhost) always means loopback only (RFC 6761). That policy is ./address-policy.ts.
// - Redirects are not followed: a 3xx comes back as it is, with its Location header. A module
//   that wants to follow it makes a second request, which is checked like the first.
// - No credentials in URLs, only http: and https:, no hop-by-hop or framing headers from the
//   module (the host sets Host, Content-Length and Connection itself), bounded bodies, one
//   deadline for the whole exchange, at most MAX_IN_FLIGHT requests per module at a time.
// - https: verified against Node's CA store (NODE_EXTRA_CA_CERTS adds to it), for the host
//   name in the URL (SNI); for an IP literal, against the certificate's IP addresses. A
//   server's request to renegotiate is refused (the connection fails). Key exchange is ECDHE on
//   X25519, P-256 or P-384 only (TLS_KEY_EXCHANGE): with finite-field DHE the server chooses the
//   group, and a 10,000-bit one made of any odd number cost the host's loop ~0.8-1.1 s of CPU
//   per handshake (OpenSSL's client checks its size, not its primality, and exponentiates by a
//   full-length key).

import { constants } from "node:crypto";
import http from "node:http";
import net from "node:net";
import tls from "node:tls";
import { PacedSocket } from "../chain/paced-socket.ts";
import { sliceAccount } from "../chain/slices.ts";
import { canonicalHostPort, GrantSyntaxError } from "./grants.ts";
import { addressesFor, type Resolver } from "./address-policy.ts";
import { systemResolver } from "./dns.ts";
import { CapabilityError } from "./types.ts";

export const HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"] as const;
type HttpMethod = (typeof HTTP_METHODS)[number];

/** Longest URL accepted, in characters. */
export const MAX_URL_CHARS = 8192;
/** Largest request body (1 MiB). */
export const MAX_REQUEST_BODY_BYTES = 1024 * 1024;
/** Largest response body (8 MiB); a longer one fails with quota_exceeded. */
export const MAX_RESPONSE_BODY_BYTES = 8 * 1024 * 1024;
export const DEFAULT_TIMEOUT_MS = 10_000;
export const MAX_TIMEOUT_MS = 60_000;
/** Requests of one module in flight at once; one more fails with unavailable. */
export const MAX_IN_FLIGHT = 16;
const MAX_REQUEST_HEADERS = 100;
/** Total size of the module's request headers (names and values). */
const MAX_REQUEST_HEADER_BYTES = 32 * 1024;
/** Status line and headers of an answer (trailers count too); a larger head fails with quota_exceeded. */
export const MAX_RESPONSE_HEADER_BYTES = 32 * 1024;
/** Header fields in an answer; more fail with quota_exceeded. */
export const MAX_RESPONSE_HEADERS = 200;
/** Informational (1xx) answers before the real one; more fail with unavailable. */
export const MAX_INFORMATIONAL_RESPONSES = 8;
/**
 * Pieces an answer's body may arrive in (each chunk of a chunked answer, or each read); more
 * fail with quota_exceeded. Each piece is a Buffer and an event on the host's loop: a server
 * sending its body one byte per chunk cost the host a Buffer per byte (8 M chunks: +1.4 GB of
 * heap and ~20 s of CPU for one request). 16,384 pieces is 512 bytes each for an 8 MiB body
 * (a chunk split between two reads is two pieces).
 */
export const MAX_RESPONSE_BODY_PIECES = 16_384;
/**
 * Bytes an answer may take on the wire, whatever the parser makes of them: before its status
 * (informational answers and the head), MAX_RESPONSE_HEAD_WIRE_BYTES; in all, that plus the
 * body's bound (the request's max_bytes) plus MAX_RESPONSE_FRAMING_BYTES for chunk-size lines
 * and trailers. Past either, the exchange fails with quota_exceeded naming it. Bytes the parser
 * takes without counting them toward any limit (a chunk size written with endless leading
 * zeros, a header value of endless spaces) cost the host's loop ~0.5 s of CPU a second until the
 * request's timeout (up to MAX_TIMEOUT_MS, MAX_IN_FLIGHT requests at once).
 */
export const MAX_RESPONSE_HEAD_WIRE_BYTES = (MAX_INFORMATIONAL_RESPONSES + 1) * MAX_RESPONSE_HEADER_BYTES;
export const MAX_RESPONSE_FRAMING_BYTES = 1024 * 1024;
/**
 * Reads of an answer from its socket, head and body (each a Buffer and an event on the host's
 * loop, and with TLS each record may be one): MAX_RESPONSE_BODY_PIECES, and one per 64 bytes
 * of MAX_RESPONSE_HEADER_BYTES for the head.
 */
const MAX_RESPONSE_READS = MAX_RESPONSE_BODY_PIECES + MAX_RESPONSE_HEADER_BYTES / 64;
/**
 * What the host's TLS client offers for key exchange: ECDHE on these groups (TLS 1.2 and 1.3),
 * each a fixed, small cost. Never finite-field DHE, whose group the server picks: any odd
 * number up to 10,000 bits, each handshake then ~1 s of the host's CPU.
 */
export const TLS_KEY_EXCHANGE = { groups: "X25519:P-256:P-384", ciphers: `${tls.DEFAULT_CIPHERS}:!kDHE` } as const;

/** A parsed, checked URL: what the hub checks and what the engine connects to. */
export interface HttpTarget {
  /** The URL as parsed (fragment removed): the `url` of the answer. */
  readonly href: string;
  readonly tls: boolean;
  /** Canonical host: "api.example.com", "127.0.0.1", "[::1]". */
  readonly host: string;
  readonly port: number;
  /** Canonical "host:port": the scope target of network_access. */
  readonly target: string;
  /** The IP address when the host is an IP literal (without brackets). */
  readonly ip: string | undefined;
  /** Path and query, as sent on the request line. */
  readonly path: string;
  /** The Host header: the host, with the port unless it is the scheme's default. */
  readonly hostHeader: string;
}

function invalid(message: string): CapabilityError {
  return new CapabilityError("invalid_params", message);
}

/** Parse and check a URL; throws CapabilityError("invalid_params") saying what is wrong. */
export function parseHttpUrl(raw: string): HttpTarget {
  if (raw.length > MAX_URL_CHARS) throw invalid(`the URL is longer than ${MAX_URL_CHARS} characters`);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw invalid(`${JSON.stringify(raw.slice(0, 200))} is not an absolute URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw invalid(`${url.protocol} URLs are not supported; use http: or https:`);
  }
  if (url.username !== "" || url.password !== "") {
    throw invalid("URLs with credentials (user:password@host) are refused; send credentials in a header such as Authorization");
  }
  const isTls = url.protocol === "https:";
  const defaultPort = isTls ? 443 : 80;
  const port = url.port === "" ? defaultPort : Number(url.port);
  let target: string;
  try {
    target = canonicalHostPort(`${url.hostname}:${port}`);
  } catch (err) {
    if (err instanceof GrantSyntaxError) throw invalid(`the URL's host: ${err.message}${err.hint ? `; ${err.hint}` : ""}`);
    throw err;
  }
  const host = target.slice(0, target.lastIndexOf(":"));
  const bare = host.startsWith("[") ? host.slice(1, -1) : host;
  const ip = net.isIP(bare) !== 0 ? bare : undefined;
  return {
    href: url.href.replace(/#.*$/s, ""),
    tls: isTls,
    host,
    port,
    target,
    ip,
    path: `${url.pathname}${url.search}`,
    hostHeader: port === defaultPort ? host : `${host}:${port}`,
  };
}

// ---------------------------------------------------------------------------------------
// Request headers

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** What HTTP (and Node) allow in a header value: tab, visible ASCII, space, obs-text. */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
/** Set by the host, or connection-level: a module may not send them. */
const HOST_HEADERS = new Set(["host", "connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer", "upgrade", "expect", "http2-settings"]);

/** What is wrong with the module's request headers (empty when nothing). */
export function headerProblems(headers: Readonly<Record<string, string>>): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  let bytes = 0;
  const entries = Object.entries(headers);
  if (entries.length > MAX_REQUEST_HEADERS) problems.push(`at most ${MAX_REQUEST_HEADERS} headers`);
  for (const [name, value] of entries) {
    const lower = name.toLowerCase();
    bytes += name.length + value.length;
    if (!TOKEN.test(name)) problems.push(`${JSON.stringify(name.slice(0, 100))} is not a header name`);
    else if (HOST_HEADERS.has(lower) || lower.startsWith("proxy-")) problems.push(`header "${name}" may not be set by a module (the host sets Host, Content-Length and Connection itself)`);
    else if (seen.has(lower)) problems.push(`header "${name}" is given twice (names are case-insensitive)`);
    if (/[\0\r\n]/.test(value)) problems.push(`the value of header "${name}" contains CR, LF or NUL`);
    else if (!FIELD_VALUE.test(value)) problems.push(`the value of header "${name}" has control characters or characters above U+00FF (encode it, e.g. percent-encoding)`);
    seen.add(lower);
  }
  if (bytes > MAX_REQUEST_HEADER_BYTES) problems.push(`headers are larger than ${MAX_REQUEST_HEADER_BYTES} bytes in total`);
  return problems;
}

// ---------------------------------------------------------------------------------------
// The exchange

export interface HttpRequest {
  target: HttpTarget;
  method: HttpMethod;
  headers: Readonly<Record<string, string>>;
  body: Uint8Array | undefined;
  timeoutMs: number;
  /**
   * The longest body the module takes (its `max_bytes`; at most and by default
   * MAX_RESPONSE_BODY_BYTES): a longer one fails with quota_exceeded. Its answer's reservation of
   * max_unread_bytes is computed from it (./answer-bounds.ts).
   */
  maxBodyBytes?: number;
}

export interface HttpResponse {
  status: number;
  /** Lowercased names; a header received several times is joined with ", ". */
  headers: Record<string, string>;
  body: Uint8Array;
  /** The URL that answered (redirects are not followed, so the one requested). */
  url: string;
}

const inFlight = new Map<string, number>();

/** Requests of `module` in flight now (tests). */
export function requestsInFlight(module: string): number {
  return inFlight.get(module) ?? 0;
}

function failure(t: HttpTarget, what: string, err: unknown): CapabilityError {
  const e = err as { code?: unknown; message?: unknown };
  const why = typeof e?.code === "string" ? e.code : typeof e?.message === "string" ? e.message : "failed";
  return new CapabilityError("unavailable", `${what} ${t.target}: ${why}`);
}

/**
 * Make one request for `module`. Throws CapabilityError with a code the module can act on.
 * `ended` (the module instance's end) gives it up: before, a module that crashed or was reloaded
 * with MAX_IN_FLIGHT requests under way to a server that did not answer left them running to
 * their timeout (up to MAX_TIMEOUT_MS), their connections open, and its next instance refused
 * every request until then.
 */
export async function httpExchange(module: string, req: HttpRequest, resolve: Resolver = systemResolver, ended?: AbortSignal): Promise<HttpResponse> {
  if (ended?.aborted) throw new CapabilityError("unavailable", `module ${module}'s instance has ended`);
  const running = inFlight.get(module) ?? 0;
  if (running >= MAX_IN_FLIGHT) {
    throw new CapabilityError("unavailable", `at most ${MAX_IN_FLIGHT} HTTP requests of a module may be in flight at once; wait for one to finish`);
  }
  inFlight.set(module, running + 1);
  try {
    return await exchange(req, resolve, ended);
  } finally {
    const left = (inFlight.get(module) ?? 1) - 1;
    if (left === 0) inFlight.delete(module);
    else inFlight.set(module, left);
  }
}

function exchange(req: HttpRequest, resolve: Resolver, instanceEnded: AbortSignal | undefined): Promise<HttpResponse> {
  const t = req.target;
  // The module's account of host CPU (host_cpu_ms_per_s): what reading and parsing its answer
  // costs the host's loop is charged to it, in the turns where it is spent.
  const account = sliceAccount.getStore();
  const maxBody = Math.min(req.maxBodyBytes ?? MAX_RESPONSE_BODY_BYTES, MAX_RESPONSE_BODY_BYTES);
  return new Promise<HttpResponse>((resolvePromise, rejectPromise) => {
    let done = false;
    const sockets = new Set<net.Socket>();
    // Aborted when the exchange ends, however: a lookup still under way is cancelled (capabilities/dns.ts).
    const ended = new AbortController();
    const finish = (err: Error | undefined, value?: HttpResponse) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      ended.abort();
      for (const s of sockets) s.destroy();
      if (err) rejectPromise(err);
      else resolvePromise(value!);
    };
    const timer = setTimeout(() => {
      finish(new CapabilityError("timeout", `no complete answer from ${t.target} within ${req.timeoutMs} ms`));
    }, req.timeoutMs);
    const gone = () => finish(new CapabilityError("unavailable", `the module's instance ended before ${t.target} answered`));
    instanceEnded?.addEventListener("abort", gone, { once: true });
    ended.signal.addEventListener("abort", () => instanceEnded?.removeEventListener("abort", gone), { once: true });

    const connect = (address: string): Promise<net.Socket> => new Promise((ok, fail) => {
      // By address: net.connect does no lookup for an IP, so this is the address checked.
      // A high-water mark of one byte: a paused socket stops reading the kernel at once
      // (PacedSocket), instead of reading 64 KiB more into its buffer, a read per byte.
      // (Node passes a socket's options to its stream; the typings do not list this one.)
      const options = { host: address, port: t.port, noDelay: true, readableHighWaterMark: 1 };
      const s = net.connect(options);
      sockets.add(s);
      s.once("connect", () => ok(s));
      s.once("error", (err) => { s.destroy(); fail(err); });
      s.once("close", () => fail(new Error("closed")));
    });

    const secure = (raw: net.Socket, address: string): Promise<net.Socket> => new Promise((ok, fail) => {
      const options = {
        socket: raw,
        // SNI and certificate checks for the name in the URL; an IP literal is checked
        // against the certificate's IP addresses (SNI may not carry an address).
        ...(t.ip === undefined ? { servername: t.host } : { host: address }),
        ALPNProtocols: ["http/1.1"],
        // No renegotiation (TLS 1.2; 1.3 has none): OpenSSL's client otherwise does every one a
        // server asks for, each a key exchange and a certificate check on the host's loop, and a
        // server asking again at once made the host do ~2,000 a second for the whole request.
        secureOptions: constants.SSL_OP_NO_RENEGOTIATION,
        ecdhCurve: TLS_KEY_EXCHANGE.groups,
        ciphers: TLS_KEY_EXCHANGE.ciphers,
        // As for the socket under it: paused, it stops reading at once (tls.connect's highWaterMark).
        highWaterMark: 1,
      };
      const s = tls.connect(options);
      sockets.add(s);
      s.once("secureConnect", () => ok(s));
      s.once("error", (err) => { s.destroy(); fail(err); });
      s.once("close", () => fail(new Error("closed")));
    });

    const run = async () => {
      const addresses = await addressesFor(t, resolve, ended.signal);
      // The addresses of the one resolution, in order, until one accepts the connection.
      let socket: net.Socket | undefined;
      let address = "";
      let lastError: unknown;
      for (const a of addresses) {
        if (done) return;
        try {
          socket = await connect(a);
          address = a;
          break;
        } catch (err) {
          lastError = err;
        }
      }
      if (done) return;
      if (!socket) throw failure(t, "cannot connect to", lastError);
      const tcp = socket;
      if (t.tls) {
        try {
          socket = await secure(socket, address);
        } catch (err) {
          throw tlsFailure(t, err);
        }
      }
      if (done) return;

      const headers: Record<string, string> = { ...req.headers, Host: t.hostHeader };
      const body = req.body;
      if (body !== undefined || req.method === "POST" || req.method === "PUT" || req.method === "PATCH") {
        headers["Content-Length"] = String(body?.byteLength ?? 0);
      }
      // Every byte the server sends, counted before the parser sees it (PacedSocket, chain/paced-socket.ts,
      // counts each read first): the wire bounds above, and the pieces bound for every read.
      let wire = 0;
      let reads = 0;
      let headDone = false;
      const maxWire = MAX_RESPONSE_HEAD_WIRE_BYTES + maxBody + MAX_RESPONSE_FRAMING_BYTES;
      let over: CapabilityError | undefined;
      const count = (chunk: Buffer): boolean => {
        if (done || over) return false;
        wire += chunk.length;
        if (!headDone && wire > MAX_RESPONSE_HEAD_WIRE_BYTES) {
          over = new CapabilityError("quota_exceeded", `${t.target} sent more than ${MAX_RESPONSE_HEAD_WIRE_BYTES} bytes before its answer's status and headers were complete (MAX_RESPONSE_HEAD_WIRE_BYTES, a fixed limit)`);
        } else if (wire > maxWire) {
          over = new CapabilityError("quota_exceeded", `the answer from ${t.target} took more than ${maxWire} bytes on the wire: its body's bound (${maxBody}) plus ${MAX_RESPONSE_HEAD_WIRE_BYTES} for its head and ${MAX_RESPONSE_FRAMING_BYTES} for chunk framing and trailers (MAX_RESPONSE_FRAMING_BYTES, a fixed limit)`);
        } else if (++reads > MAX_RESPONSE_READS) {
          over = new CapabilityError("quota_exceeded", `the answer from ${t.target} came in more than ${MAX_RESPONSE_READS} reads (MAX_RESPONSE_READS, a fixed limit); its server must send it in larger pieces`);
        }
        // Not while this read is being handed out (over TLS, Node's HTTP client asserted its
        // parser was still on the socket, and a destroyed one killed the process): on nextTick.
        if (over) process.nextTick(finish, over);
        return over === undefined;
      };
      const connected = new PacedSocket(socket, count, account, t.tls ? () => tcp.bytesRead : undefined);
      const request = http.request({
        createConnection: () => connected,
        method: req.method,
        path: t.path,
        headers,
        setHost: false,
        maxHeaderSize: MAX_RESPONSE_HEADER_BYTES,
      });
      // One over the limit, so that an answer with too many is seen (Node drops the rest).
      request.maxHeadersCount = MAX_RESPONSE_HEADERS + 1;
      let informational = 0;
      request.on("information", () => {
        if (++informational > MAX_INFORMATIONAL_RESPONSES) {
          finish(new CapabilityError("unavailable", `${t.target} sent more than ${MAX_INFORMATIONAL_RESPONSES} informational (1xx) answers (MAX_INFORMATIONAL_RESPONSES) before a real one`));
        }
      });
      request.on("error", (err) => finish(answerError(t, err) ?? failure(t, "request to", err)));
      request.on("upgrade", () => finish(new CapabilityError("unavailable", `${t.target} switched protocols; only plain HTTP answers are supported`)));
      request.on("response", (res) => {
        headDone = true;
        // A HEAD answer (and a 204 or 304) declares a length but carries no body.
        if (res.rawHeaders.length / 2 > MAX_RESPONSE_HEADERS) {
          finish(new CapabilityError("quota_exceeded", `the answer from ${t.target} has more than ${MAX_RESPONSE_HEADERS} header fields (MAX_RESPONSE_HEADERS)`));
          return;
        }
        const bodiless = req.method === "HEAD" || res.statusCode === 204 || res.statusCode === 304;
        const declared = Number(res.headers["content-length"]);
        if (!bodiless && Number.isFinite(declared) && declared > maxBody) {
          finish(tooLarge(t, maxBody));
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (chunk: Buffer) => {
          // The rest of a read already parsed still arrives after a finish: drop it.
          if (done) return;
          connected.bodyPieces++;
          size += chunk.length;
          if (size > maxBody) finish(tooLarge(t, maxBody));
          else if (chunks.length >= MAX_RESPONSE_BODY_PIECES) {
            finish(new CapabilityError("quota_exceeded", `the answer from ${t.target} came in more than ${MAX_RESPONSE_BODY_PIECES} pieces (chunks of a chunked answer, or reads) (MAX_RESPONSE_BODY_PIECES, a fixed limit); its server must send the body in larger chunks`));
          } else chunks.push(chunk);
        });
        res.on("error", (err) => finish(answerError(t, err) ?? failure(t, "answer from", err)));
        res.on("close", () => { if (!res.complete) finish(new CapabilityError("unavailable", `${t.target} closed the connection before the whole answer arrived`)); });
        res.on("end", () => {
          const bytes = new Uint8Array(size);
          let at = 0;
          for (const c of chunks) { bytes.set(c, at); at += c.length; }
          finish(undefined, { status: res.statusCode ?? 0, headers: responseHeaders(res.rawHeaders), body: bytes, url: t.href });
        });
      });
      request.end(body === undefined ? undefined : Buffer.from(body.buffer, body.byteOffset, body.byteLength));
    };
    run().catch((err: unknown) => finish(err instanceof Error ? err : new Error(String(err))));
  });
}

/** A failed handshake; one refused for its key exchange says what the host offers. */
function tlsFailure(t: HttpTarget, err: unknown): CapabilityError {
  const e = failure(t, "TLS with", err);
  const code = (err as { code?: unknown })?.code;
  if (typeof code !== "string" || !/HANDSHAKE_FAILURE|NO_SHARED|NO_SUITABLE/.test(code)) return e;
  return new CapabilityError("unavailable", `${e.message} (the host's TLS client offers only ECDHE key exchange on ${TLS_KEY_EXCHANGE.groups} (TLS_KEY_EXCHANGE), never finite-field DHE, whose cost the server would choose; the server must offer one of those)`);
}

function tooLarge(t: HttpTarget, maxBody: number): CapabilityError {
  if (maxBody < MAX_RESPONSE_BODY_BYTES) {
    return new CapabilityError("quota_exceeded", `the answer from ${t.target} has a body larger than the request's max_bytes = ${maxBody}; raise max_bytes (at most ${MAX_RESPONSE_BODY_BYTES})`);
  }
  return new CapabilityError("quota_exceeded", `the answer from ${t.target} is larger than ${MAX_RESPONSE_BODY_BYTES / 1024 / 1024} MiB (MAX_RESPONSE_BODY_BYTES)`);
}

/** An HTTP parser error in the answer, in words (undefined: not a parser error). */
function answerError(t: HttpTarget, err: unknown): CapabilityError | undefined {
  const code = (err as { code?: unknown })?.code;
  if (typeof code !== "string" || !code.startsWith("HPE_")) return undefined;
  if (code === "HPE_HEADER_OVERFLOW") {
    return new CapabilityError("quota_exceeded", `the answer from ${t.target} has a status line and headers larger than ${MAX_RESPONSE_HEADER_BYTES / 1024} KiB (MAX_RESPONSE_HEADER_BYTES)`);
  }
  const reason = (err as { reason?: unknown }).reason;
  return new CapabilityError("unavailable", `${t.target} sent a malformed HTTP answer (${code}${typeof reason === "string" ? `: ${reason}` : ""})`);
}

function responseHeaders(raw: readonly string[]): Record<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    const value = raw[i + 1]!;
    const before = out.get(name);
    out.set(name, before === undefined ? value : `${before}, ${value}`);
  }
  return Object.fromEntries(out);
}
