// get_block_template carries at most what one answer may (16,384 values, 1 MiB of transaction
// hex, as a page: capabilities/pages.ts). A mempool of 2,000 small transactions gives a
// template over that; the answer keeps the highest-fee-rate prefix and is rebuilt around it,
// and a block mined from it is accepted.

import test from "ava";
import { mining } from "../capabilities/mining.ts";
import type { CallContext } from "../capabilities/types.ts";
import type { BlockTemplate } from "../chain/backend.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { blockSubsidy } from "../chain/blocks.ts";
import { HOST_BODY_LIMITS, encodeBody } from "../protocol/codec.ts";
import { fillMempool } from "./helpers/big-block.ts";
import { PAYOUT, buildBlock } from "./helpers/blocks.ts";

const handler = (name: string) => mining.methods.find((m) => m.name === name)!.handler;

test("a template of 2,000 mempool transactions is cut to what one answer carries, rebuilt around the kept ones, and mines an accepted block", async (t) => {
  const chain = await EmbeddedChain.create({ matureBlocks: 1 });
  t.teardown(() => chain.close());
  await fillMempool(chain, 2_000);
  const whole = await chain.getBlockTemplate();
  t.is(whole.transactions.length, 2_000);
  t.throws(() => encodeBody({ t: "response", id: 1, result: whole }, { ...HOST_BODY_LIMITS, maxValues: 16_384 }), { message: /max_values/ }, "the whole template is more than a page");

  const call = { chain, services: {} } as unknown as CallContext;
  const tpl = (await handler("get_block_template")(call, { coinbase_script: PAYOUT })) as BlockTemplate;
  encodeBody({ t: "response", id: 1, result: tpl }, { ...HOST_BODY_LIMITS, maxValues: 16_384 });
  const kept = tpl.transactions.length;
  t.true(kept > 1_000 && kept < 2_000, `${kept} transactions kept`);
  t.deepEqual(tpl.transactions.map((x) => x.txid), whole.transactions.slice(0, kept).map((x) => x.txid), "the prefix, highest fee rate first");
  t.is(tpl.coinbase_value, blockSubsidy(tpl.height) + tpl.transactions.reduce((sum, x) => sum + x.fee, 0), "the coinbase value follows the kept transactions");
  t.not(tpl.default_witness_commitment, whole.default_witness_commitment);
  const block = buildBlock(tpl);
  const result = await chain.submitBlock(block.hex);
  t.is(result.result, "accepted", result.reason);
  t.is((await chain.getMempoolInfo()).transaction_count, 2_000 - kept);
});
