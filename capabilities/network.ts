// The network family. Network information from the chain backend (read_network: statistics and
// the peer list; nothing there opens a connection or changes the node's peers), and outbound
// HTTP made by the host for the module (network_access, scoped by host): the canonical
// "host:port" of the URL is the scope target, so "network_access=api.example.com" allows every
// port of that host, "network_access=api.example.com:443" only 443, and a scoped deny wins.
// How the URL, the name resolution and the exchange are handled: ./http.ts.
import * as v from "valibot";
import { method, type Family } from "./types.ts";
import { Bytes, HttpResponse, NetworkStats, PeerInfo, none } from "./schemas.ts";
import {
  DEFAULT_TIMEOUT_MS, HTTP_METHODS, MAX_IN_FLIGHT, MAX_REQUEST_BODY_BYTES, MAX_RESPONSE_BODY_BYTES, MAX_TIMEOUT_MS,
  headerProblems, httpExchange, parseHttpUrl, type HttpTarget,
} from "./http.ts";
import { SMALL_READ_BURST, SMALL_READS_PER_SECOND } from "../chain/paced-socket.ts";
import { systemResolver } from "./dns.ts";
import { CapabilityError } from "./types.ts";

const url = v.pipe(
  v.string("url must be a string"),
  v.rawTransform(({ dataset, addIssue, NEVER }): HttpTarget => {
    try {
      return parseHttpUrl(dataset.value);
    } catch (err) {
      if (!(err instanceof CapabilityError)) throw err;
      addIssue({ message: err.message });
      return NEVER;
    }
  }),
);

const headers = v.pipe(
  v.record(v.string(), v.string("header values must be strings")),
  v.rawCheck(({ dataset, addIssue }) => {
    if (dataset.typed) for (const message of headerProblems(dataset.value)) addIssue({ message });
  }),
);

const httpParams = v.pipe(
  v.object({
    url,
    method: v.optional(v.pipe(v.string(), v.toUpperCase(), v.picklist(HTTP_METHODS, `method must be one of ${HTTP_METHODS.join(", ")}`))),
    headers: v.optional(headers),
    body: v.optional(v.union([v.string(), Bytes], "body must be a string or a Uint8Array")),
    encoding: v.optional(v.picklist(["utf8", "binary"], 'encoding must be "utf8" or "binary"')),
    max_bytes: v.optional(v.pipe(
      v.number(),
      v.integer("max_bytes must be an integer"),
      v.minValue(0, "max_bytes must be at least 0"),
      v.maxValue(MAX_RESPONSE_BODY_BYTES, `max_bytes must be at most ${MAX_RESPONSE_BODY_BYTES} (MAX_RESPONSE_BODY_BYTES)`),
    )),
    timeout_ms: v.optional(v.pipe(
      v.number(),
      v.integer("timeout_ms must be an integer"),
      v.minValue(1, "timeout_ms must be at least 1"),
      v.maxValue(MAX_TIMEOUT_MS, `timeout_ms must be at most ${MAX_TIMEOUT_MS}`),
    )),
  }),
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed || dataset.value.body === undefined) return;
    const m = dataset.value.method ?? "GET";
    if (m === "GET" || m === "HEAD") addIssue({ message: `a ${m} request has no body` });
    const b = dataset.value.body;
    if ((typeof b === "string" ? Buffer.byteLength(b, "utf8") : b.byteLength) > MAX_REQUEST_BODY_BYTES) {
      addIssue({ message: `body must be at most ${MAX_REQUEST_BODY_BYTES} bytes` });
    }
  }),
);

export const network: Family = {
  name: "network",
  summary: "Network statistics and peers; HTTP requests to granted hosts, made by the host.",
  methods: [
    method({ name: "get_network_stats", result: NetworkStats, js: "getStats", permission: "read_network", args: [], params: none, summary: "Peer count, hash rate, bytes sent and received.", handler: (c) => c.chain.getNetworkStats() }),
    method({ name: "get_network_peers", result: v.array(PeerInfo), js: "getPeers", permission: "read_network", args: [], params: none, summary: "Connected peers: address, transport, services, version, since.", handler: (c) => c.chain.getPeers() }),
    method({
      name: "http_request", result: HttpResponse, handWritten: { ts: "overloads: encoding \"utf8\" answers a string body", rust: "takes an HttpRequest built with its own methods" }, js: "fetch", permission: "network_access", args: ["url", "options"], params: httpParams,
      summary:
        `An HTTP(S) request to a granted host (the scope target is the URL's canonical \`host:port\`), made by the host; ` +
        `options: \`method\` (${HTTP_METHODS.join(", ")}; default GET), \`headers\` (not Host, Connection, Content-Length, Transfer-Encoding, Proxy-* ...), ` +
        `\`body\` (string or bytes, at most ${MAX_REQUEST_BODY_BYTES / 1024 / 1024} MiB), \`timeout_ms\` (default ${DEFAULT_TIMEOUT_MS}, at most ${MAX_TIMEOUT_MS}), ` +
        `\`encoding\` ("utf8": the answer's body as a string), \`max_bytes\` (the longest body taken, default and at most ${MAX_RESPONSE_BODY_BYTES / 1024 / 1024} MiB; a longer one fails with quota_exceeded; ` +
        `the answer holds that much of the module's max_unread_bytes while it is served, three times that for utf8, so smaller bounds let more requests run at once). ` +
        `Returns { status, headers (lowercased), body (bytes, at most ${MAX_RESPONSE_BODY_BYTES / 1024 / 1024} MiB), url }. ` +
        `Redirects are not followed; a host name must resolve to public addresses; at most ${MAX_IN_FLIGHT} requests in flight per module. An answer that comes in small pieces is read at most ${SMALL_READS_PER_SECOND} times a second after its first ${SMALL_READ_BURST} reads; reading and parsing answers counts toward the module's host_cpu_ms_per_s, and while it is over, its answers wait.`,
      audit: "always",
      targets: (p) => [p.url.target],
      handler: async (c, p) => {
        const body = p.body === undefined ? undefined : typeof p.body === "string" ? new TextEncoder().encode(p.body) : p.body;
        const request = { target: p.url, method: p.method ?? "GET", headers: p.headers ?? {}, body, timeoutMs: p.timeout_ms ?? DEFAULT_TIMEOUT_MS, maxBodyBytes: p.max_bytes ?? MAX_RESPONSE_BODY_BYTES };
        // Names are resolved by ./dns.ts (the hosts file, then its own DNS stub resolver), never on a
        // thread of libuv's pool, and a lookup is cancelled when its request ends.
        const resolve = c.services.resolve?.bind(c.services) ?? systemResolver;
        const answer = await httpExchange(c.module, request, resolve, c.ended);
        // Isolates have no TextDecoder: "utf8" decodes here (invalid sequences become U+FFFD, as fetch's text() does).
        return p.encoding === "utf8" ? { ...answer, body: new TextDecoder("utf-8").decode(answer.body) } : answer;
      },
    }),
  ],
};
