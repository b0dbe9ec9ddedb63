// get_block_template answers a page of the template's transactions at a time (16,384 values,
// 1 MiB of strings: capabilities/pages.ts), named by template_id, later pages asked by
// `page` (next_page); the host keeps a template of several pages for its later pages (at
// most TEMPLATES_KEPT per module, each TEMPLATE_KEPT_MS). A mempool of 2,000 small
// transactions gives a template of several pages: joined, it is the whole template, and a
// block mined from it is accepted.

import test from "ava";
import { TEMPLATES_KEPT, mining } from "../capabilities/mining.ts";
import type { CallContext } from "../capabilities/types.ts";
import type { BlockTemplate } from "../chain/backend.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { HOST_BODY_LIMITS, encodeBody } from "../protocol/codec.ts";
import { fillMempool } from "./helpers/big-block.ts";
import { PAYOUT, buildBlock } from "./helpers/blocks.ts";
import { startHost } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";

const handler = (name: string) => mining.methods.find((m) => m.name === name)!.handler;
type Page = BlockTemplate & { template_id: string; tx_count: number; next_page: string | null };

test("a template of 2,000 mempool transactions comes in pages that each fit one message, joins into the whole template, and mines an accepted block", async (t) => {
  const chain = await EmbeddedChain.create({ matureBlocks: 1 });
  t.teardown(() => chain.close());
  await fillMempool(chain, 2_000);
  const whole = await chain.getBlockTemplate();
  t.is(whole.transactions.length, 2_000);
  const onePage = { ...HOST_BODY_LIMITS, maxValues: 16_384 };
  t.throws(() => encodeBody({ t: "response", id: 1, result: whole }, onePage), { message: /max_values/ }, "the whole template is more than a page");

  const call = { module: "miner", chain, services: {} } as unknown as CallContext;
  const get = (p: Record<string, unknown>) => handler("get_block_template")(call, p) as Promise<Page>;
  const first = await get({ coinbase_script: PAYOUT });
  const txs = [...first.transactions];
  t.is(first.tx_count, 2_000);
  t.truthy(first.next_page, "more pages to come");
  let pages = 1;
  for (let at = first.next_page; at !== null; pages++) {
    const page = await get({ page: at });
    encodeBody({ t: "response", id: 1, result: page }, onePage); // throws past a page's bounds
    t.is(page.template_id, first.template_id);
    txs.push(...page.transactions);
    at = page.next_page;
  }
  encodeBody({ t: "response", id: 1, result: first }, onePage);
  t.true(pages >= 2, `${pages} pages`);
  t.deepEqual(txs.map((x) => x.txid), whole.transactions.map((x) => x.txid), "every transaction once, highest fee rate first");
  t.is(first.coinbase_value, whole.coinbase_value, "the coinbase value of the whole template");
  t.is(first.default_witness_commitment, whole.default_witness_commitment);
  const block = buildBlock({ ...first, transactions: txs });
  const result = await chain.submitBlock(block.hex);
  t.is(result.result, "accepted", result.reason);
  t.is((await chain.getMempoolInfo()).transaction_count, 0, "the block took the whole mempool");
});

test("later template pages: only the module's own, at most TEMPLATES_KEPT kept, and a bad page is refused by name", async (t) => {
  const chain = await EmbeddedChain.create({ matureBlocks: 1 });
  t.teardown(() => chain.close());
  await fillMempool(chain, 2_000);
  const as = (module: string) => (p: Record<string, unknown>) => handler("get_block_template")({ module, chain, services: {} } as unknown as CallContext, p) as Promise<Page>;
  const first = await as("keeper")({});
  t.truthy(first.next_page);
  await t.throwsAsync(as("other")({ page: first.next_page }), { message: /block template .* is no longer kept \(the host keeps at most 4 templates per module, each for 60 s; fixed\): ask for a new template, without page/ }, "another module cannot read it");
  t.is((await as("keeper")({ page: first.next_page })).template_id, first.template_id);
  for (let i = 0; i < TEMPLATES_KEPT; i++) await as("keeper")({});
  await t.throwsAsync(as("keeper")({ page: first.next_page }), { message: /no longer kept/ }, `the oldest is dropped when a ${TEMPLATES_KEPT + 1}th is made`);
  await t.throwsAsync(as("keeper")({ page: "nonsense" }), { message: /page "nonsense" is not a next_page of get_block_template/ });
});

const MINER = inlineModule("template-reader", ["read_blockchain"], `
  const tpl = await ctx.mining.getBlockTemplate({ coinbase_script: "51" });
  ctx.log.info("template", {
    count: tpl.transactions.length, tx_count: tpl.tx_count, next: tpl.next_page,
    hex_is_text: tpl.transactions.every((x: any) => typeof x.hex === "string" && /^[0-9a-f]+$/.test(x.hex)),
    coinbase_hex: typeof tpl.coinbase_tx.hex === "string",
    sample: tpl.transactions.filter((_: unknown, i: number) => i % 100 === 0).map((x: any) => x.txid).join(","),
  });
`);

test("a TypeScript module's ctx.mining.getBlockTemplate() returns the whole template of 2,000 transactions, every page joined, with hex made from binary", async (t) => {
  const h = await startHost(t, { inline: { "template-reader": MINER }, grants: { "template-reader": ["read_blockchain"] }, noStart: true });
  await fillMempool(h.chain, 2_000);
  const whole = await h.chain.getBlockTemplate();
  await h.host.start();
  const r = (await h.waitForLog(/^template$/, { source: "template-reader", timeoutMs: 60_000 })).fields as Record<string, any>;
  t.deepEqual([r.count, r.tx_count, r.next, r.hex_is_text, r.coinbase_hex], [2_000, 2_000, null, true, true]);
  t.is(r.sample, whole.transactions.filter((_, i) => i % 100 === 0).map((x) => x.txid).join(","), "in the template's order");
});
