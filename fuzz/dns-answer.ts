// Fuzzing of http_request's DNS answer reader (capabilities/dns-message.ts: readAnswer, what
// reads whatever a name's DNS server sends). On every input, asked as the answer to an A and to
// an AAAA query whose id is the input's own (so that mutations reach past the header):
//  - readAnswer throws nothing but DnsAnswerError;
//  - it keeps at most `max` addresses, each a valid IP address of the family asked;
//  - its work is bounded: the driver's hang bound per input, and the count of records examined
//    is capped by construction (MAX_RECORDS_EXAMINED), whatever ancount says.
// Seeds: answers of several shapes (many A records, a CNAME chain, AAAA, a name in full,
// truncated, NXDOMAIN), as a server would send them.

import net from "node:net";
import { type Answer, DnsAnswerError, encodeName, readAnswer, TYPE_A, TYPE_AAAA } from "../capabilities/dns-message.ts";
import type { FuzzTarget } from "./driver.ts";

const MAX = 64;
const u16 = (n: number) => Buffer.from([n >> 8, n & 255]);
const Q = Buffer.from([0xc0, 12]);
const rr = (owner: Buffer, type: number, data: Buffer) => Buffer.concat([owner, u16(type), u16(1), Buffer.from([0, 0, 0, 60]), u16(data.length), data]);
const message = (flags: number, qtype: number, records: Buffer[], ancount = records.length) =>
  Buffer.concat([u16(0x1234), u16(flags), u16(1), u16(ancount), u16(0), u16(0), encodeName("a.example"), u16(qtype), u16(1), ...records]);

const SEEDS: Buffer[] = [
  message(0x8180, TYPE_A, Array.from({ length: 80 }, (_, k) => rr(Q, TYPE_A, Buffer.from([93, 184, 0, k])))),
  message(0x8180, TYPE_A, [rr(Q, 5, encodeName("b.example")), rr(encodeName("b.example"), 5, Buffer.from([1, 0x63, 0xc0, 14])), rr(Buffer.from([1, 0x63, 0xc0, 14]), TYPE_A, Buffer.from([93, 184, 0, 1]))]),
  message(0x8180, TYPE_AAAA, [rr(Q, TYPE_AAAA, Buffer.from("20010db8000000000000000000000001", "hex")), rr(encodeName("a.example"), TYPE_AAAA, Buffer.alloc(16))]),
  message(0x8180, TYPE_A, [rr(Q, 16, Buffer.from("\x05hello", "latin1")), rr(Q, TYPE_A, Buffer.from([10, 0, 0, 1]))], 300),
  message(0x8380, TYPE_A, []),
  message(0x8183, TYPE_A, []),
];

export function dnsAnswerTarget(): FuzzTarget {
  return {
    name: "dns-answer",
    seeds: SEEDS,
    run(input) {
      if (input.length < 2) return;
      const id = (input[0]! << 8) | input[1]!;
      for (const type of [TYPE_A, TYPE_AAAA] as const) {
        let answer: Answer;
        try {
          answer = readAnswer(input, { id, name: "a.example", type }, MAX);
        } catch (err) {
          if (err instanceof DnsAnswerError) continue;
          throw err;
        }
        if (answer.kind !== "answer") continue;
        if (answer.addresses.length > MAX) throw new Error(`${answer.addresses.length} addresses kept, more than ${MAX}`);
        const family = type === TYPE_A ? 4 : 6;
        for (const a of answer.addresses) if (net.isIP(a) !== family) throw new Error(`"${a}" is not an IPv${family} address`);
      }
    },
  };
}
