// A block too big for one message is answered a page of transactions at a time
// (capabilities/pages.ts, docs/protocol.md "Paged answers"), and the SDKs join the pages. A
// block of 1,500 wallet transactions is about 80,000 MessagePack values described field by
// field: over the protocol's max_values, so before pages no module could read it.

import test from "ava";
import { chain as chainFamily } from "../capabilities/chain.ts";
import { PAGE_BYTES } from "../capabilities/pages.ts";
import type { CallContext } from "../capabilities/types.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { HOST_BODY_LIMITS, encodeBody, encodeEnvelope } from "../protocol/codec.ts";
import { startHost } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";

const TXS = 1500;

/** Mine a block of about `size` wallet transactions on `chain`; its hash. */
async function bigBlock(chain: EmbeddedChain, size: number): Promise<string> {
  const pieces = size - 1;
  const splits = Math.ceil(pieces / 1000);
  await chain.mine(splits);
  for (let s = 0; s < splits; s++) await chain.createTransaction({ outputs: Math.min(1000, pieces - s * 1000), feeRate: 1 });
  await chain.mine(1, { includeMempool: true });
  for (let i = 0; i < pieces; i++) await chain.createTransaction({ feeRate: 1 });
  const [hash] = await chain.mine(1, { includeMempool: true });
  return hash!;
}

const handler = (name: string) => chainFamily.methods.find((m) => m.name === name)!.handler;

/** One chain with one big block, shared by the tests below that read it in-process (mining it takes a while). */
let shared: Promise<{ chain: EmbeddedChain; hash: string }> | undefined;
const bigChain = () =>
  (shared ??= (async () => {
    const chain = await EmbeddedChain.create({ matureBlocks: 101 });
    return { chain, hash: await bigBlock(chain, TXS) };
  })());
test.after.always(async () => {
  if (shared) await (await shared).chain.close();
});

test("get_block answers a big block in pages that each fit one message, and the pages join into the block", async (t) => {
  const { chain, hash } = await bigChain();
  const whole = (await chain.getBlock(hash))!;
  t.is(whole.transactions.length, TXS);
  // What the host sends is checked with HOST_BODY_LIMITS (the protocol's, without the cap on a body's total string bytes).
  t.throws(() => encodeBody({ t: "response", id: 1, result: whole }, HOST_BODY_LIMITS), { message: /max_values/ }, "the whole block does not fit one message");

  const call = { chain } as unknown as CallContext;
  for (const includeHex of [true, false]) {
    const get = (tx_offset: number) => handler("get_block")(call, { hash, include_hex: includeHex, tx_offset }) as Promise<Record<string, any>>;
    const txids: string[] = [];
    let pages = 0;
    for (let at: number | null = 0; at !== null; pages++) {
      const page: Record<string, any> = await get(at);
      const body = encodeBody({ t: "response", id: 1, result: page }, HOST_BODY_LIMITS); // throws past any protocol limit
      t.is(page.hash, hash);
      t.is(page.tx_count, TXS);
      t.true(page.transactions.length >= 1);
      if (at > 0) {
        t.false("hex" in page, "the block's raw hex comes with the first page only");
        t.true(body.length < PAGE_BYTES * 1.5, `page at ${at}: ${body.length} bytes`);
      } else {
        t.is("hex" in page, includeHex);
      }
      txids.push(...page.transactions.map((tx: { txid: string }) => tx.txid));
      t.true(page.next_tx_offset === null || page.next_tx_offset === at + page.transactions.length);
      at = page.next_tx_offset;
    }
    t.true(pages >= 3, `${pages} pages`);
    t.deepEqual(txids, whole.transactions.map((tx) => tx.txid), "every transaction once, in block order");
  }
  const past = (await handler("get_block")(call, { hash, tx_offset: TXS + 5 })) as Record<string, any>;
  t.deepEqual([past.transactions.length, past.next_tx_offset], [0, null], "an offset past the end: an empty last page");
  t.is(await handler("get_block")(call, { hash: "00".repeat(32), tx_offset: 0 }), null);
});

test("every page of a big block, full and light, is encoded once: a second reader's answer reuses the first's bytes", async (t) => {
  const { chain, hash } = await bigChain();
  const call = { chain } as unknown as CallContext;
  for (const includeHex of [true, false]) {
    let pages = 0;
    for (let at: number | null = 0; at !== null; pages++) {
      const page = (await handler("get_block")(call, { hash, include_hex: includeHex, tx_offset: at })) as Record<string, any>;
      const again = (await handler("get_block")(call, { hash, include_hex: includeHex, tx_offset: at })) as Record<string, any>;
      t.is(again, page, "the same page object for every reader");
      // encodeEnvelope answers [envelope head, the value's encoding]: the same Buffer when the encoding was kept.
      const first = encodeEnvelope({ t: "response", id: 1 }, "result", page, HOST_BODY_LIMITS);
      const second = encodeEnvelope({ t: "response", id: 2 }, "result", again, HOST_BODY_LIMITS);
      t.is(second[1], first[1], `page at ${at} (include_hex ${includeHex}) was encoded again`);
      at = page.next_tx_offset;
    }
    t.true(pages >= 3, `${pages} pages`);
  }
});

const READER = inlineModule("block-reader", ["read_blockchain", "read_chain_state"], `
  const hash = await ctx.chain.getChainTip();
  const height = await ctx.chain.getBlockHeight();
  const full = await ctx.chain.getBlock(hash);
  const light = await ctx.chain.getBlockByHeight(height, { include_hex: false });
  const from = await ctx.chain.getBlock(hash, { tx_offset: 1000 });
  ctx.log.info("read", {
    count: full.transactions.length, tx_count: full.tx_count, next: full.next_tx_offset, hex: full.hex.length,
    // A log line is cut at a length: every 100th txid, and how many distinct ones there are.
    sample: full.transactions.filter((_: unknown, i: number) => i % 100 === 0).map((tx: any) => tx.txid).join(","),
    distinct: new Set(full.transactions.map((tx: any) => tx.txid)).size,
    light_count: light.transactions.length, light_hex: "hex" in light, light_tx_hex: "hex" in light.transactions[0],
    from_count: from.transactions.length, from_first: from.transactions[0].txid,
  });
`);

test("a TypeScript module's ctx.chain.getBlock returns the whole big block, every page joined", async (t) => {
  const h = await startHost(t, { inline: { "block-reader": READER }, grants: { "block-reader": ["read_blockchain", "read_chain_state"] }, noStart: true });
  const hash = await bigBlock(h.chain, TXS);
  const whole = (await h.chain.getBlock(hash))!;
  await h.host.start();
  const r = (await h.waitForLog(/^read$/, { source: "block-reader", timeoutMs: 60_000 })).fields as Record<string, any>;
  t.is(r.count, TXS);
  t.is(r.tx_count, TXS);
  t.is(r.next, null);
  t.is(r.hex, whole.hex.length * 2, "the block's raw hex (made by the SDK from the binary of the first page)");
  t.is(r.distinct, TXS, "no transaction twice");
  t.is(r.sample, whole.transactions.filter((_, i) => i % 100 === 0).map((tx) => tx.txid).join(","), "in block order");
  t.deepEqual([r.light_count, r.light_hex, r.light_tx_hex], [TXS, false, false], "getBlockByHeight with include_hex: false, all pages");
  t.deepEqual([r.from_count, r.from_first], [TXS - 1000, whole.transactions[1000]!.txid], "a tx_offset of its own: from there to the end");
});
