// The address policy of http_request: which addresses a granted host name may reach. A name
// resolves ONCE; every address it resolves to must be public (not loopback, private,
// link-local or another special-use range, judged through IPv4-mapped, NAT64 and 6to4 forms
// too), or the request is refused as a grant denial: whoever controls a granted name's DNS
// could otherwise point it at the node's RPC port or the local network (DNS rebinding). IP
// literals are taken as written (the operator granted that address), and "localhost" (and
// *.localhost) always means loopback only (RFC 6761). No I/O here: the resolver is passed in
// (./http.ts passes the system's), so the policy is tested with any answers a DNS server
// could give.

import { isIP } from "node:net";
import { CapabilityError } from "./types.ts";

/** What the policy needs of a parsed URL (./http.ts HttpTarget). */
export interface AddressTarget {
  /** Canonical host: "api.example.com", "127.0.0.1", "[::1]". */
  readonly host: string;
  readonly port: number;
  /** The IP address when the host is an IP literal (without brackets). */
  readonly ip: string | undefined;
}

/** [kind, prefix words (16-bit, IPv6 form), prefix length in bits]. */
type Range = readonly [string, readonly number[], number];

/** IPv4 ranges that are not the public internet, as IPv4-mapped IPv6 prefixes. */
const V4_SPECIAL: readonly [string, string, number][] = [
  ["unspecified", "0.0.0.0", 8],
  ["private", "10.0.0.0", 8],
  ["shared (carrier-grade NAT)", "100.64.0.0", 10],
  ["loopback", "127.0.0.0", 8],
  ["link-local", "169.254.0.0", 16],
  ["private", "172.16.0.0", 12],
  ["IETF protocol assignment", "192.0.0.0", 24],
  ["documentation", "192.0.2.0", 24],
  ["private", "192.168.0.0", 16],
  ["benchmarking", "198.18.0.0", 15],
  ["documentation", "198.51.100.0", 24],
  ["documentation", "203.0.113.0", 24],
  ["multicast", "224.0.0.0", 4],
  ["reserved", "240.0.0.0", 4],
];

const V6_SPECIAL: readonly Range[] = [
  ["unspecified", [0, 0, 0, 0, 0, 0, 0, 0], 128],
  ["loopback", [0, 0, 0, 0, 0, 0, 0, 1], 128],
  ["IPv4-compatible (deprecated)", [0, 0, 0, 0, 0, 0], 96],
  ["discard-only", [0x100, 0, 0, 0], 64],
  ["documentation", [0x2001, 0xdb8], 32],
  ["unique local", [0xfc00], 7],
  ["link-local", [0xfe80], 10],
  ["site-local (deprecated)", [0xfec0], 10],
  ["multicast", [0xff00], 8],
];

function v4Words(addr: string): number[] {
  const o = addr.split(".").map(Number) as [number, number, number, number];
  return [(o[0] << 8) | o[1], (o[2] << 8) | o[3]];
}

/** The eight 16-bit words of an IPv6 address (isIP(addr) === 6; a zone id is ignored). */
function v6Words(addr: string): number[] {
  let s = addr.replace(/%.*$/s, "").toLowerCase();
  const dotted = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (dotted) {
    const [hi, lo] = v4Words(dotted[2]!) as [number, number];
    s = `${dotted[1]}${hi.toString(16)}:${lo.toString(16)}`;
  }
  const gap = s.indexOf("::");
  const head = (gap === -1 ? s : s.slice(0, gap)).split(":").filter((x) => x !== "");
  const tail = gap === -1 ? [] : s.slice(gap + 2).split(":").filter((x) => x !== "");
  const fill = gap === -1 ? [] : Array<string>(8 - head.length - tail.length).fill("0");
  return [...head, ...fill, ...tail].map((x) => parseInt(x, 16));
}

function inPrefix(words: readonly number[], prefix: readonly number[], bits: number): boolean {
  for (let i = 0; i * 16 < bits; i++) {
    const take = Math.min(16, bits - i * 16);
    const mask = (0xffff << (16 - take)) & 0xffff;
    if (((words[i] ?? 0) & mask) !== ((prefix[i] ?? 0) & mask)) return false;
  }
  return true;
}

function v4Kind(words: readonly number[]): string | undefined {
  for (const [kind, base, bits] of V4_SPECIAL) if (inPrefix(words, v4Words(base), bits)) return kind;
  return words[0] === 0xffff && words[1] === 0xffff ? "broadcast" : undefined;
}

/**
 * Why an address is not on the public internet ("loopback", "private", ...), or undefined for a
 * public address. IPv6 forms that carry an IPv4 address (mapped ::ffff:a.b.c.d, NAT64
 * 64:ff9b::/96, 6to4 2002::/16) are judged by that IPv4 address.
 */
export function specialAddressKind(addr: string): string | undefined {
  const family = isIP(addr.replace(/%.*$/s, ""));
  if (family === 4) return v4Kind(v4Words(addr));
  if (family !== 6) return "not an IP address";
  const w = v6Words(addr);
  if (inPrefix(w, [0, 0, 0, 0, 0, 0xffff], 96)) return v4Kind(w.slice(6));
  if (inPrefix(w, [0x64, 0xff9b, 0, 0, 0, 0], 96)) return v4Kind(w.slice(6));
  if (inPrefix(w, [0x2002], 16)) return v4Kind(w.slice(1, 3));
  for (const [kind, prefix, bits] of V6_SPECIAL) if (inPrefix(w, prefix, bits)) return kind;
  return undefined;
}

/** Resolves a host name to its addresses (all of them, in the resolver's order); gives up when `signal` aborts (the request ended). */
export type Resolver = (host: string, signal?: AbortSignal) => Promise<Array<{ address: string; family: number }>>;

const isLocalhost = (host: string) => host === "localhost" || host.endsWith(".localhost");

/**
 * The addresses to try for `t`, from ONE resolution (none for an IP literal). Throws
 * CapabilityError: unavailable when the name does not resolve, permission_denied (a grant
 * denial) when it resolves to an address that is not public.
 */
export async function addressesFor(t: AddressTarget, resolve: Resolver, signal?: AbortSignal): Promise<string[]> {
  if (t.ip !== undefined) return [t.ip];
  let found: Array<{ address: string }>;
  try {
    found = await resolve(t.host, signal);
  } catch (err) {
    if (err instanceof CapabilityError) throw err;
    const code = (err as { code?: unknown })?.code;
    throw new CapabilityError("unavailable", `cannot resolve "${t.host}"${typeof code === "string" ? ` (${code})` : ""}`);
  }
  const addresses = [...new Set(found.map((a) => a.address))];
  if (addresses.length === 0) throw new CapabilityError("unavailable", `"${t.host}" has no addresses`);
  if (isLocalhost(t.host)) {
    const loopback = addresses.filter((a) => specialAddressKind(a) === "loopback");
    if (loopback.length === 0) throw new CapabilityError("unavailable", `"${t.host}" does not resolve to a loopback address`);
    return loopback;
  }
  for (const a of addresses) {
    const kind = specialAddressKind(a);
    if (kind === undefined) continue;
    const literal = isIP(a) === 6 ? `[${a}]` : a;
    throw new CapabilityError(
      "permission_denied",
      `"network_access" does not reach ${kind} addresses through a host name: "${t.host}" resolves to ${a}. A granted name must resolve ` +
        `to public addresses only (otherwise whoever controls its DNS could point it at local services); to reach ${a}, the operator ` +
        `can grant the address itself ("network_access=${literal}:${t.port}") and the module use it in the URL`,
      { denial: true },
    );
  }
  return addresses;
}
