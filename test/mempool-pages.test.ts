// get_mempool_txids answers the mempool's txids a page at a time (docs/protocol.md 6.1): a
// mempool of more than 65,536 txids was more than one answer may carry (max_values), so
// get_mempool_transactions could not answer it at all. Pages follow the order of acceptance
// (a keyset cursor, no state kept by the host): a transaction in the mempool through the whole
// reading comes exactly once however the mempool changes between pages.

import test from "ava";
import { MEMPOOL_PAGE, mempool as mempoolFamily } from "../capabilities/mempool.ts";
import type { CallContext } from "../capabilities/types.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { HOST_BODY_LIMITS, encodeBody } from "../protocol/codec.ts";
import { fillMempool } from "./helpers/big-block.ts";
import { startHost } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";

const TXIDS = 66_000;
const handler = (name: string) => mempoolFamily.methods.find((m) => m.name === name)!.handler;
type Page = { txids: string[]; next_after: number | null; count: number; order: string };

test("get_mempool_txids pages a mempool of 66,000 transactions; each transaction present throughout comes once, whatever changes between pages", async (t) => {
  const chain = await EmbeddedChain.create({ matureBlocks: 1 });
  t.teardown(() => chain.close());
  const txids = await fillMempool(chain, TXIDS);
  t.is(txids.length, TXIDS);
  const call = { chain } as unknown as CallContext;
  const page = (after: number) => handler("get_mempool_txids")(call, { after }) as Promise<Page>;

  await t.throwsAsync(handler("get_mempool_transactions")(call, {}) as Promise<unknown>, { message: new RegExp(`the mempool holds ${TXIDS} transactions, more than one answer of get_mempool_transactions carries \\(${MEMPOOL_PAGE}\\): use get_mempool_txids`) });

  // Read the first page, then change the mempool: a block confirms the oldest ~16,000
  // (those of page one, which was read, and of the pages after it, which were not), and a new
  // transaction comes in.
  const seen: string[] = [];
  let p = await page(0);
  encodeBody({ t: "response", id: 1, result: p }, HOST_BODY_LIMITS); // throws past any protocol limit
  t.is(p.txids.length, MEMPOOL_PAGE);
  t.deepEqual([p.count, p.order], [TXIDS, "accepted"]);
  seen.push(...p.txids);
  await chain.mine(1, { includeMempool: true });
  const present = new Set(await chain.getMempoolTransactions());
  t.true(present.size > MEMPOOL_PAGE && present.size < TXIDS - MEMPOOL_PAGE, `${present.size} left after the block`);
  const added = await chain.createTransaction();
  let pages = 1;
  for (let at = p.next_after; at !== null; pages++) {
    p = await page(at);
    encodeBody({ t: "response", id: 1, result: p }, HOST_BODY_LIMITS);
    t.true(p.txids.length >= 1 && p.txids.length <= MEMPOOL_PAGE);
    seen.push(...p.txids);
    at = p.next_after;
  }
  const expected = [...txids.slice(0, MEMPOOL_PAGE), ...txids.slice(MEMPOOL_PAGE).filter((txid) => present.has(txid)), added];
  t.deepEqual(seen, expected, "page one as read; then every transaction still there, once, in order of acceptance; the new one last");
  t.true(pages >= 1 + Math.ceil((present.size + 1) / MEMPOOL_PAGE), `${pages} pages`);
  const past = await page(Number.MAX_SAFE_INTEGER);
  t.deepEqual([past.txids, past.next_after], [[], null], "a cursor past the end: an empty last page");
});

const READER = inlineModule("mempool-reader", ["read_mempool"], `
  const all = await ctx.mempool.getTxids();
  const list = await ctx.mempool.getTransactions();
  ctx.log.info("read", {
    count: all.txids.length, reported: all.count, next: all.next_after, order: all.order,
    distinct: new Set(all.txids).size,
    // A log line is cut at a length: every 1000th txid.
    sample: all.txids.filter((_: unknown, i: number) => i % 1000 === 0).join(","),
    list_count: list.length, list_same: list.join(",") === all.txids.join(","),
  });
`);

test("a TypeScript module's ctx.mempool.getTxids() and getTransactions() return every txid of a 66,000-transaction mempool, every page joined", async (t) => {
  const h = await startHost(t, { inline: { "mempool-reader": READER }, grants: { "mempool-reader": ["read_mempool"] }, noStart: true });
  const txids = await fillMempool(h.chain, TXIDS);
  await h.host.start();
  const r = (await h.waitForLog(/^read$/, { source: "mempool-reader", timeoutMs: 60_000 })).fields as Record<string, any>;
  t.deepEqual([r.count, r.reported, r.next, r.order, r.distinct], [TXIDS, TXIDS, null, "accepted", TXIDS]);
  t.is(r.sample, txids.filter((_, i) => i % 1000 === 0).join(","), "in the order of acceptance");
  t.deepEqual([r.list_count, r.list_same], [TXIDS, true], "ctx.mempool.getTransactions() past 8,192 txids: read through get_mempool_txids's pages, the same list");
});
