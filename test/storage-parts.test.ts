// A storage transaction too big for one message of the module protocol (9,000 puts of an
// indexer's shape: ~126,000 MessagePack values and over 1 MiB of strings, past max_values and
// max_total_string_bytes) goes in parts of one id, which the host holds and writes at once
// with the last (docs/protocol.md section 6.2). The TypeScript SDK splits it by itself.

import test from "ava";
import { startHost } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";

const CAPS = ["read_storage", "write_storage"];
const WRITER = inlineModule("big-writer", CAPS, `
  await ctx.storage.openTree("idx");
  const ops = (bad: boolean) => {
    const out: any[] = [];
    for (let n = 0; n < 3000; n++) {
      const txid = n.toString(16).padStart(64, "0");
      out.push({ op: "put", key: "tx:" + txid, value: { height: 100, index: n, vsize: 141 } });
      out.push({ op: "put", key: "out:" + txid + ":0", value: { value: 5000, address: "bcrt1q" + txid.slice(0, 36) } });
      out.push({ op: "put", key: "blk:100:" + n, value: txid });
    }
    // The last op of the second transaction has a key over the store's limit (max key bytes).
    if (bad) out.push({ op: "put", key: "k".repeat(5000), value: 1 });
    return out;
  };
  const report: Record<string, unknown> = {};
  try { await ctx.storage.transaction("idx", ops(true)); report.bad = "ok"; } catch (e: any) { report.bad = e.code + ": " + e.message; }
  report.after_bad = (await ctx.storage.usage()).keys;
  await ctx.storage.transaction("idx", ops(false));
  const u = await ctx.storage.usage();
  report.keys = u.keys;
  report.first = await ctx.storage.get("idx", "tx:" + "0".repeat(64));
  report.last = await ctx.storage.get("idx", "blk:100:2999");
  ctx.log.info("wrote", report);
`);

test("a TypeScript module's storage transaction of 9,000 puts, over one message's limits, is written whole, and one failing op writes none of them", async (t) => {
  const h = await startHost(t, { inline: { "big-writer": WRITER }, grants: { "big-writer": CAPS } });
  const r = (await h.waitForLog(/^wrote$/, { source: "big-writer", timeoutMs: 60_000 })).fields as Record<string, any>;
  t.regex(r.bad, /^invalid_params: ops\[\d+\]: .*held from earlier parts are dropped too/, "the failing part names the op and drops the parts before it");
  t.is(r.after_bad, 0, "nothing of the failed transaction was written");
  t.is(r.keys, 9000);
  t.deepEqual(r.first, { height: 100, index: 0, vsize: 141 });
  t.is(r.last, (2999).toString(16).padStart(64, "0"));
});
