// http_request's DNS answer reader (capabilities/dns-message.ts) fuzzed (fuzz/dns-answer.ts): a
// short fixed run, the same seed every time, so a failure here replays; the long run is
// `npm run fuzz -- dns`.

import test from "ava";
import { formatReport, fuzz } from "../fuzz/driver.ts";
import { dnsAnswerTarget } from "../fuzz/dns-answer.ts";

test("fuzz dns-answer: 20,000 mutated DNS answers read as an A and an AAAA answer: only DnsAnswerError escapes, at most 64 valid addresses kept, each input within 1 s", async (t) => {
  const r = await fuzz(dnsAnswerTarget(), { iterations: 20_000, seed: 20261206, hangMs: 1000, maxHeapGrowthMb: 48 });
  t.is(r.failures.length, 0, formatReport(r));
  t.is(r.iterations, 20_000);
  t.log(`slowest input ${r.slowestMs.toFixed(2)} ms, ${(r.elapsedMs / 1000).toFixed(1)} s in all`);
});
