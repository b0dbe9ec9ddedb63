// The DNS answer reader of http_request's stub resolver (capabilities/dns-message.ts), on
// hand-built answers: what it keeps, what it refuses, and that it never reads past what it keeps
// (the bytes after the kept records may be anything). The resolver around it is
// test/dns.test.ts; the fuzz target is fuzz/dns-answer.ts (test/fuzz-dns.test.ts).

import test from "ava";
import { DnsAnswerError, encodeName, encodeQuery, MAX_CNAME_HOPS, MAX_POINTER_JUMPS, MAX_RECORDS_EXAMINED, readAnswer, TYPE_A, TYPE_AAAA } from "../capabilities/dns-message.ts";

const ID = 0x1234;
const A = (a: number, b: number, c: number, d: number) => Buffer.from([a, b, c, d]);
const u16 = (n: number) => Buffer.from([n >> 8, n & 255]);
/** The question's name, compressed (a pointer to offset 12). */
const Q = Buffer.from([0xc0, 12]);

function rr(owner: Buffer, type: number, data: Buffer, cls = 1): Buffer {
  return Buffer.concat([owner, u16(type), u16(cls), Buffer.from([0, 0, 0, 60]), u16(data.length), data]);
}

function message(records: Buffer[], o: { id?: number; flags?: number; qname?: string; qtype?: number; ancount?: number; qdcount?: number } = {}): Buffer {
  const head = Buffer.concat([u16(o.id ?? ID), u16(o.flags ?? 0x8180), u16(o.qdcount ?? 1), u16(o.ancount ?? records.length), u16(0), u16(0)]);
  return Buffer.concat([head, encodeName(o.qname ?? "a.example"), u16(o.qtype ?? TYPE_A), u16(1), ...records]);
}

const expectA = { id: ID, name: "a.example", type: TYPE_A } as const;

test("A records named by a compression pointer to the question are read, in order", (t) => {
  const got = readAnswer(message([rr(Q, 1, A(93, 184, 0, 1)), rr(Q, 1, A(93, 184, 0, 2))]), expectA, 64);
  t.deepEqual(got, { kind: "answer", addresses: ["93.184.0.1", "93.184.0.2"] });
});

test("an answer of 4,000 records gives the first `max` addresses and never reads the records after them (garbage there changes nothing)", (t) => {
  const kept = Array.from({ length: 64 }, (_, k) => rr(Q, 1, A(10, 1, 0, k)));
  const msg = Buffer.concat([message(kept, { ancount: 4000 }), Buffer.alloc(3936 * 16, 0xff)]);
  const got = readAnswer(msg, expectA, 64);
  t.is(got.kind, "answer");
  t.deepEqual(got.kind === "answer" && got.addresses, kept.map((_, k) => `10.1.0.${k}`));
});

test("records of other types and classes are skipped, at most MAX_RECORDS_EXAMINED in all: an address after them is read, none within the cap is refused naming it", (t) => {
  const txt = (n: number) => Array.from({ length: n }, () => rr(Q, 16, Buffer.from("\x03abc", "latin1")));
  const chaos = rr(Q, 1, A(6, 6, 6, 6), 3);
  const within = readAnswer(message([...txt(MAX_RECORDS_EXAMINED - 2), chaos, rr(Q, 1, A(93, 184, 0, 9))]), expectA, 64);
  t.deepEqual(within, { kind: "answer", addresses: ["93.184.0.9"] });
  const past = message([...txt(MAX_RECORDS_EXAMINED), rr(Q, 1, A(93, 184, 0, 9))]);
  t.throws(() => readAnswer(past, expectA, 64), { instanceOf: DnsAnswerError, message: /first 128 records .*MAX_RECORDS_EXAMINED/ });
  // Addresses found before the cap are kept when the cap comes.
  const some = message([rr(Q, 1, A(93, 184, 0, 1)), ...txt(MAX_RECORDS_EXAMINED + 5)]);
  t.deepEqual(readAnswer(some, expectA, 64), { kind: "answer", addresses: ["93.184.0.1"] });
});

test("a compression loop (backward pointers that come round again) is refused at MAX_POINTER_JUMPS; a pointer forwards or to itself is refused at once", (t) => {
  // At offset 27 (after the header and question): label "x", then a pointer back to 27.
  const base = message([]);
  const loopAt = base.length;
  const loop = Buffer.concat([Buffer.from([1, 0x78, 0xc0 | (loopAt >> 8), loopAt & 255]), u16(1), u16(1), Buffer.from([0, 0, 0, 60]), u16(4), A(1, 2, 3, 4)]);
  const msg = Buffer.concat([base, loop]);
  msg.writeUInt16BE(1, 6);
  t.throws(() => readAnswer(msg, expectA, 64), { instanceOf: DnsAnswerError, message: new RegExp(`more than ${MAX_POINTER_JUMPS} compression pointers`) });
  const self = Buffer.concat([base, Buffer.from([0xc0 | (loopAt >> 8), loopAt & 255]), u16(1), u16(1), Buffer.from([0, 0, 0, 60]), u16(4), A(1, 2, 3, 4)]);
  self.writeUInt16BE(1, 6);
  t.throws(() => readAnswer(self, expectA, 64), { instanceOf: DnsAnswerError, message: /points forwards/ });
  t.throws(() => readAnswer(message([rr(Buffer.from([0xc0, 200]), 1, A(1, 2, 3, 4))]), expectA, 64), { instanceOf: DnsAnswerError, message: /points forwards \(to 200\)/ });
});

test("names past 255 bytes, labels with reserved type bits and names running off the end are refused", (t) => {
  const long = Buffer.concat([...Array.from({ length: 5 }, () => Buffer.concat([Buffer.from([63]), Buffer.alloc(63, 0x61)])), Buffer.from([0])]);
  t.throws(() => readAnswer(message([rr(long, 1, A(1, 2, 3, 4))]), expectA, 64), { instanceOf: DnsAnswerError, message: /longer than 255 bytes/ });
  t.throws(() => readAnswer(message([rr(Buffer.from([0x41, 0]), 1, A(1, 2, 3, 4))]), expectA, 64), { instanceOf: DnsAnswerError, message: /unknown type bits 1/ });
  t.throws(() => readAnswer(message([Buffer.from([5, 0x61, 0x62])]), expectA, 64), { instanceOf: DnsAnswerError, message: /runs past the end/ });
});

test("truncated records are refused: a header cut short, a record's fixed part or its data past the end, an address of the wrong size", (t) => {
  t.throws(() => readAnswer(Buffer.from([0x12, 0x34, 0x81]), expectA, 64), { instanceOf: DnsAnswerError, message: /shorter than a DNS header/ });
  const full = message([rr(Q, 1, A(93, 184, 0, 1))]);
  t.throws(() => readAnswer(full.subarray(0, full.length - 8), expectA, 64), { instanceOf: DnsAnswerError, message: /record 0 runs past the end/ });
  t.throws(() => readAnswer(full.subarray(0, full.length - 2), expectA, 64), { instanceOf: DnsAnswerError, message: /data \(4 bytes\) runs past the end/ });
  t.throws(() => readAnswer(message([rr(Q, 1, Buffer.alloc(16))]), expectA, 64), { instanceOf: DnsAnswerError, message: /address of 16 bytes \(4 expected\)/ });
  t.throws(() => readAnswer(message([], { qdcount: 0 }), expectA, 64), { instanceOf: DnsAnswerError, message: /0 questions/ });
});

test("an answer with another id, not marked as a response, or echoing another name, type or class is not this query's (other); the name is matched case-insensitively", (t) => {
  const records = [rr(Q, 1, A(93, 184, 0, 1))];
  t.deepEqual(readAnswer(message(records, { id: ID + 1 }), expectA, 64), { kind: "other" });
  t.deepEqual(readAnswer(message(records, { flags: 0x0180 }), expectA, 64), { kind: "other" });
  t.deepEqual(readAnswer(message(records, { qname: "b.example" }), expectA, 64), { kind: "other" });
  t.deepEqual(readAnswer(message(records, { qname: "a.example.evil" }), expectA, 64), { kind: "other" });
  t.deepEqual(readAnswer(message(records, { qtype: TYPE_AAAA }), expectA, 64), { kind: "other" });
  const caps = message(records);
  caps[13] = 0x41; // "A.example"
  t.deepEqual(readAnswer(caps, expectA, 64), { kind: "answer", addresses: ["93.184.0.1"] });
  // A label holding a dot is not two labels.
  t.deepEqual(readAnswer(message(records, { qname: "a.example" }), { ...expectA, name: "a\\.example" }, 64), { kind: "other" });
});

test("rcodes are returned as such, a truncated answer (TC) as truncated, and records of another owner are not addresses of the name", (t) => {
  t.deepEqual(readAnswer(message([], { flags: 0x8183 }), expectA, 64), { kind: "rcode", rcode: 3 });
  t.deepEqual(readAnswer(message([], { flags: 0x8182 }), expectA, 64), { kind: "rcode", rcode: 2 });
  t.deepEqual(readAnswer(message([], { flags: 0x8185 }), expectA, 64), { kind: "rcode", rcode: 5 });
  t.deepEqual(readAnswer(message([], { flags: 0x8380 }), expectA, 64), { kind: "truncated" });
  t.deepEqual(readAnswer(message([rr(encodeName("other.example"), 1, A(6, 6, 6, 6))]), expectA, 64), { kind: "answer", addresses: [] });
  t.throws(() => readAnswer(message([], { flags: 0x9180 }), expectA, 64), { instanceOf: DnsAnswerError, message: /opcode 2/ });
});

test("a CNAME chain is followed to the final name's addresses; a record for a name off the chain is skipped; AAAA addresses are written compressed", (t) => {
  const b = encodeName("b.example");
  const c = encodeName("c.example");
  const msg = message([rr(Q, 5, b), rr(b, 5, c), rr(encodeName("d.example"), 1, A(6, 6, 6, 6)), rr(c, 1, A(93, 184, 0, 3)), rr(Q, 1, A(93, 184, 0, 4))]);
  // The question's own A after the chain moved on is not read (the chain names c.example now).
  t.deepEqual(readAnswer(msg, expectA, 64), { kind: "answer", addresses: ["93.184.0.3"] });
  const v6 = Buffer.from("20010db8000000000000000000000001", "hex");
  const six = message([rr(Q, 28, v6), rr(Q, 28, Buffer.from("20010db8000100000000000100000000", "hex"))], { qtype: TYPE_AAAA });
  t.deepEqual(readAnswer(six, { ...expectA, type: TYPE_AAAA }, 64), { kind: "answer", addresses: ["2001:db8::1", "2001:db8:1::1:0:0"] });
});

test("a CNAME loop and a chain longer than MAX_CNAME_HOPS are refused", (t) => {
  const b = encodeName("b.example");
  t.throws(() => readAnswer(message([rr(Q, 5, b), rr(b, 5, encodeName("a.example"))]), expectA, 64), { instanceOf: DnsAnswerError, message: /CNAME loop .*"a\.example"/ });
  const names = Array.from({ length: MAX_CNAME_HOPS + 2 }, (_, i) => encodeName(`n${i}.example`));
  const chain = [rr(Q, 5, names[0]!), ...names.slice(1).map((n, i) => rr(names[i]!, 5, n))];
  t.throws(() => readAnswer(message(chain), expectA, 64), { instanceOf: DnsAnswerError, message: /MAX_CNAME_HOPS/ });
  const ok = [rr(Q, 5, names[0]!), ...names.slice(1, MAX_CNAME_HOPS).map((n, i) => rr(names[i]!, 5, n)), rr(names[MAX_CNAME_HOPS - 1]!, 1, A(93, 184, 0, 8))];
  t.deepEqual(readAnswer(message(ok), expectA, 64), { kind: "answer", addresses: ["93.184.0.8"] });
});

test("encodeName refuses names DNS cannot carry (empty or 64-byte labels, backslashes, past 255 bytes) and encodeQuery asks one question with recursion desired", (t) => {
  for (const bad of ["a..example", `${"a".repeat(64)}.example`, "a\\b.example", Array.from({ length: 5 }, () => "a".repeat(60)).join("."), "sp ace.example"]) {
    t.throws(() => encodeName(bad), { instanceOf: DnsAnswerError }, bad);
  }
  const q = encodeQuery(0xbeef, encodeName("a.example"), TYPE_AAAA);
  t.is(q.toString("hex"), "beef010000010000000000000161076578616d706c6500001c0001");
});
