// DNS messages for http_request's stub resolver (capabilities/dns.ts): the query it sends and a
// reader of the answer that is bounded by construction.
//
// Why hand-written: an answer is whatever the name's DNS server sends, up to 64 KiB (4,000 A
// records fit in one datagram). c-ares (dns.promises.Resolver) and dns-packet both decode every
// record of an answer into objects before the caller sees any, so the work and memory per answer
// grew with what the server sent, not with what we keep: 4,000 address strings per answer,
// ~15 ms of CPU each, and a few hundred such answers at once ran a 32 MB heap out. No library
// reads lazily with a cap. This reader checks the header and the question, then examines at most
// MAX_RECORDS_EXAMINED answer records and keeps at most `max` addresses; it never looks at what
// lies past them. Names are decompressed with pointers only backwards, at most
// MAX_POINTER_JUMPS jumps, 63-byte labels and 255-byte names. An answer costs at most
// MAX_RECORDS_EXAMINED records of at most 255-byte names, whatever its size: microseconds.

/** Answer records examined at most per answer (addresses, CNAMEs and records skipped alike). */
export const MAX_RECORDS_EXAMINED = 128;
/** CNAMEs followed at most inside one answer (a chain longer than this, or a loop, is refused). */
export const MAX_CNAME_HOPS = 8;
/** Compression pointers followed at most while reading one name. */
export const MAX_POINTER_JUMPS = 16;
/** Longest name on the wire (RFC 1035 2.3.4), length bytes included. */
const MAX_NAME_BYTES = 255;
const MAX_LABEL_BYTES = 63;

export const TYPE_A = 1;
export const TYPE_AAAA = 28;
const TYPE_CNAME = 5;
const CLASS_IN = 1;

/** An answer that is not a well-formed DNS message (the resolver reports it as EBADRESP). */
export class DnsAnswerError extends Error {
  override name = "DnsAnswerError";
}

export interface Expected {
  id: number;
  /** The name asked, lowercased, without a final dot. */
  name: string;
  type: typeof TYPE_A | typeof TYPE_AAAA;
}

export type Answer =
  /** Not an answer to this query (another id or question): ignored, the query waits on. */
  | { kind: "other" }
  /** The answer did not fit (TC): ask again over TCP. */
  | { kind: "truncated" }
  /** rcode 0: the addresses of the name (after CNAMEs), at most `max`, in the answer's order. */
  | { kind: "answer"; addresses: string[] }
  /** Any other rcode (3 = NXDOMAIN, 2 = SERVFAIL, 5 = REFUSED, ...). */
  | { kind: "rcode"; rcode: number };

/** Lowercase text of a label, escaped so that a dot inside a label never equals a separator. */
function labelText(msg: Uint8Array, at: number, len: number): string {
  let s = "";
  for (let i = at; i < at + len; i++) {
    let c = msg[i]!;
    if (c >= 0x41 && c <= 0x5a) c += 0x20;
    s += c === 0x2e || c === 0x5c ? `\\${String.fromCharCode(c)}` : String.fromCharCode(c);
  }
  return s;
}

/** Reads the (possibly compressed) name at `offset`: its text and where the record goes on. */
function readName(msg: Uint8Array, offset: number): { name: string; next: number } {
  let at = offset;
  let next = -1;
  let jumps = 0;
  let wire = 1;
  const labels: string[] = [];
  for (;;) {
    if (at >= msg.length) throw new DnsAnswerError(`a name at offset ${offset} runs past the end of the answer`);
    const len = msg[at]!;
    if ((len & 0xc0) === 0xc0) {
      if (at + 1 >= msg.length) throw new DnsAnswerError(`a compression pointer at offset ${at} runs past the end of the answer`);
      const target = ((len & 0x3f) << 8) | msg[at + 1]!;
      if (target >= at) throw new DnsAnswerError(`a compression pointer at offset ${at} points forwards (to ${target}); only backwards pointers are read`);
      if (++jumps > MAX_POINTER_JUMPS) throw new DnsAnswerError(`a name at offset ${offset} follows more than ${MAX_POINTER_JUMPS} compression pointers (MAX_POINTER_JUMPS)`);
      if (next < 0) next = at + 2;
      at = target;
      continue;
    }
    if ((len & 0xc0) !== 0) throw new DnsAnswerError(`a label at offset ${at} has the unknown type bits ${len >> 6}`);
    if (len === 0) break;
    if (len > MAX_LABEL_BYTES) throw new DnsAnswerError(`a label at offset ${at} is ${len} bytes, more than ${MAX_LABEL_BYTES}`);
    wire += len + 1;
    if (wire > MAX_NAME_BYTES) throw new DnsAnswerError(`a name at offset ${offset} is longer than ${MAX_NAME_BYTES} bytes`);
    if (at + 1 + len > msg.length) throw new DnsAnswerError(`a label at offset ${at} runs past the end of the answer`);
    labels.push(labelText(msg, at + 1, len));
    at += 1 + len;
  }
  return { name: labels.join("."), next: next < 0 ? at + 1 : next };
}

/** Dotted text of an address record's data (4 or 16 bytes at `at`). */
function addressText(msg: Uint8Array, at: number, type: number): string {
  if (type === TYPE_A) return `${msg[at]}.${msg[at + 1]}.${msg[at + 2]}.${msg[at + 3]}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((msg[at + i]! << 8) | msg[at + i + 1]!).toString(16));
  // Compressed as net/URL write it, so that the address policy and connect see the usual form.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== "0") { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  if (best < 0) return groups.join(":");
  return `${groups.slice(0, best).join(":")}::${groups.slice(best + bestLen).join(":")}`;
}

/** Wire form of `name` (lowercase ASCII host name, no final dot). Throws DnsAnswerError for a name DNS cannot carry. */
export function encodeName(name: string): Buffer {
  const labels = name.split(".");
  const parts: Buffer[] = [];
  let total = 1;
  for (const label of labels) {
    if (label.length === 0 || label.length > MAX_LABEL_BYTES || !/^[\x21-\x5b\x5d-\x7e]+$/.test(label)) {
      throw new DnsAnswerError(`"${name}" cannot be asked of DNS: each label must be 1-${MAX_LABEL_BYTES} printable ASCII characters, no backslash`);
    }
    total += label.length + 1;
    parts.push(Buffer.from([label.length]), Buffer.from(label, "latin1"));
  }
  if (total > MAX_NAME_BYTES) throw new DnsAnswerError(`"${name}" cannot be asked of DNS: longer than ${MAX_NAME_BYTES} bytes`);
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}

/** A standard query (RD set, no EDNS) for `type` records of the name `encoded` (encodeName's). */
export function encodeQuery(id: number, encoded: Buffer, type: number): Buffer {
  const head = Buffer.from([id >> 8, id & 255, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
  return Buffer.concat([head, encoded, Buffer.from([type >> 8, type & 255, 0, CLASS_IN])]);
}

const u16 = (msg: Uint8Array, at: number) => (msg[at]! << 8) | msg[at + 1]!;

/**
 * Reads the answer `msg` to the query `expect`, keeping at most `max` addresses. Returns
 * `other` for a message that is not the answer to it (another id, not a response, another
 * question); throws DnsAnswerError for one that is malformed where it was read. Examines at most
 * MAX_RECORDS_EXAMINED answer records and never reads past the last one it keeps.
 */
export function readAnswer(msg: Uint8Array, expect: Expected, max: number): Answer {
  if (msg.length < 12) throw new DnsAnswerError(`an answer of ${msg.length} bytes is shorter than a DNS header (12)`);
  if (u16(msg, 0) !== expect.id || (msg[2]! & 0x80) === 0) return { kind: "other" };
  if ((msg[2]! & 0x78) !== 0) throw new DnsAnswerError(`an answer with opcode ${(msg[2]! >> 3) & 15} to a standard query`);
  const qdcount = u16(msg, 4);
  if (qdcount !== 1) throw new DnsAnswerError(`an answer with ${qdcount} questions (the query had 1)`);
  const question = readName(msg, 12);
  if (question.next + 4 > msg.length) throw new DnsAnswerError("the answer's question runs past its end");
  if (question.name !== expect.name || u16(msg, question.next) !== expect.type || u16(msg, question.next + 2) !== CLASS_IN) return { kind: "other" };
  const rcode = msg[3]! & 0x0f;
  if (rcode !== 0) return { kind: "rcode", rcode };
  if ((msg[2]! & 0x02) !== 0) return { kind: "truncated" };

  const ancount = u16(msg, 6);
  const addresses: string[] = [];
  const size = expect.type === TYPE_A ? 4 : 16;
  // The names of the chain so far: the question, then each CNAME's target in turn.
  let owner = expect.name;
  const chain = new Set([owner]);
  let at = question.next + 4;
  for (let r = 0; r < ancount && addresses.length < max; r++) {
    if (r >= MAX_RECORDS_EXAMINED) {
      if (addresses.length > 0) break;
      throw new DnsAnswerError(`no address among the first ${MAX_RECORDS_EXAMINED} records of an answer of ${ancount} (MAX_RECORDS_EXAMINED)`);
    }
    const rec = readName(msg, at);
    if (rec.next + 10 > msg.length) throw new DnsAnswerError(`answer record ${r} runs past the end of the answer`);
    const type = u16(msg, rec.next);
    const cls = u16(msg, rec.next + 2);
    const rdlength = u16(msg, rec.next + 8);
    const rdata = rec.next + 10;
    if (rdata + rdlength > msg.length) throw new DnsAnswerError(`answer record ${r}'s data (${rdlength} bytes) runs past the end of the answer`);
    at = rdata + rdlength;
    if (cls !== CLASS_IN || rec.name !== owner) continue;
    if (type === expect.type) {
      if (rdlength !== size) throw new DnsAnswerError(`answer record ${r} is an address of ${rdlength} bytes (${size} expected)`);
      addresses.push(addressText(msg, rdata, type));
    } else if (type === TYPE_CNAME) {
      const target = readName(msg, rdata);
      if (target.next > rdata + rdlength) throw new DnsAnswerError(`answer record ${r}'s CNAME runs past its data`);
      if (chain.has(target.name)) throw new DnsAnswerError(`a CNAME loop in the answer (back to "${target.name}")`);
      if (chain.size > MAX_CNAME_HOPS) throw new DnsAnswerError(`more than ${MAX_CNAME_HOPS} CNAMEs in a row in the answer (MAX_CNAME_HOPS)`);
      chain.add(target.name);
      owner = target.name;
    }
  }
  return { kind: "answer", addresses };
}
