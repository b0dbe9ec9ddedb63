// get_block by hash reserves what its page can take when the chain knows the block's size
// without reading it (capabilities/answer-bounds.ts, ChainBackend.knownBlockSize), not a whole
// frame. The bound is from above by construction; here the blocks whose described form blows
// up most per serialised byte are encoded page by page, in both forms, against it: a coinbase
// of 8,000 outputs with empty scripts (9 bytes each; one transaction must fit one message's 65,536 values), 2,500 one-input transactions, a
// transaction of 30,000 one-byte witness items, one of 3.9 MB of witness, a coinbase alone.
// An answer larger than its reservation would not be sent (result_too_large): the test would
// show it before a module does.

import test from "ava";
import { hexToBytes } from "@noble/hashes/utils.js";
import { chain as chainFamily } from "../capabilities/chain.ts";
import { answerBound, SMALL_ANSWER_BYTES } from "../capabilities/answer-bounds.ts";
import type { CallContext } from "../capabilities/types.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { HOST_BODY_LIMITS, encodeEnvelope } from "../protocol/codec.ts";
import { DEFAULT_MAX_FRAME_BYTES } from "../protocol/frame.ts";
import { bigBlock, coinbaseBlock } from "./helpers/big-block.ts";
import { PAYOUT } from "./helpers/blocks.ts";
import { startHost } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";

const getBlock = chainFamily.methods.find((m) => m.name === "get_block")!.handler;
const MiB = 1024 * 1024;

/** The answer's body on the wire, as the session sends it. */
const body = (result: unknown) => encodeEnvelope({ t: "response", id: 4_294_967_295 }, "result", result, HOST_BODY_LIMITS).reduce((n, b) => n + b.length, 0);

/** Every page of block `hash`, both forms: each encodes within its reservation; the largest reservation and the largest page. */
async function checkPages(t: import("ava").ExecutionContext, chain: EmbeddedChain, hash: string, what: string): Promise<[number, number]> {
  const call = { chain } as unknown as CallContext;
  const limits = { frameBytes: 64 * MiB, storageIterMaxBytes: MiB, blockSize: (ref: { hash: string }) => chain.knownBlockSize(ref.hash) };
  let largest = 0;
  let largestPage = 0;
  for (const include_hex of [true, false]) {
    for (let at: number | null = 0; at !== null; ) {
      const params = { hash, include_hex, tx_offset: at };
      const bound = answerBound("get_block", params, limits);
      const page = (await getBlock(call, params)) as { next_tx_offset: number | null; transactions: unknown[] };
      const size = body(page);
      t.true(size <= bound, `${what}, include_hex ${include_hex}, page at ${at}: ${size} bytes over its reservation of ${bound}`);
      largest = Math.max(largest, bound);
      largestPage = Math.max(largestPage, size);
      at = page.next_tx_offset;
    }
  }
  return [largest, largestPage];
}

test.serial("get_block's reservation from the block's known size holds every page of the blocks that blow up most when described, in both forms", async (t) => {
  t.timeout(300_000);
  const chain = await EmbeddedChain.create();
  t.teardown(() => chain.close());
  const cases: Array<[string, () => Promise<Uint8Array>]> = [
    ["a coinbase alone", async () => coinbaseBlock(await chain.getBlockTemplate(), [hexToBytes(PAYOUT)])],
    ["8,000 outputs of empty scripts", async () => coinbaseBlock(await chain.getBlockTemplate(), Array.from({ length: 8_000 }, () => new Uint8Array(0)))],
    ["2,500 one-input transactions", () => bigBlock(chain, { count: 2500, witnessBytes: 0 })],
    ["30,000 one-byte witness items", () => bigBlock(chain, { count: 1, witnessBytes: 30_000, witnessItems: 30_000 })],
    ["3.9 MB of witness", () => bigBlock(chain, { count: 1, witnessBytes: 3_900_000 })],
  ];
  for (const [what, make] of cases) {
    const r = await chain.submitBlock(await make());
    t.is(r.result, "accepted", `${what}: ${r.reason}`);
    const known = chain.knownBlockSize(r.hash!);
    t.truthy(known, "the tip's size is known");
    const [largest, page] = await checkPages(t, chain, r.hash!, what);
    t.log(`${what}: ${known!.size} bytes, pages of at most ${(page / MiB).toFixed(2)} MiB, reserved at most ${(largest / MiB).toFixed(2)} MiB (a frame: ${DEFAULT_MAX_FRAME_BYTES / MiB} MiB)`);
  }
});

test("get_block reserves from the known size only: a small block far less than a frame, a block the chain does not hold in memory and get_block_by_height a frame, never more than a frame", async (t) => {
  const chain = await EmbeddedChain.create({ blockCache: 1 });
  t.teardown(() => chain.close());
  const limits = { frameBytes: DEFAULT_MAX_FRAME_BYTES, storageIterMaxBytes: MiB, blockSize: (ref: { hash: string }) => chain.knownBlockSize(ref.hash) };
  const tip = await chain.getChainTip();
  const small = answerBound("get_block", { hash: tip }, limits);
  t.true(small < SMALL_ANSWER_BYTES + 64 * 1024, `a one-transaction block reserves ${small} bytes`);
  t.true(answerBound("get_block", { hash: tip, include_hex: false }, limits) <= small);
  // Block 1 is neither the tip, cached, nor among the last 120 active blocks' summaries once 200 more are mined.
  const first = (await chain.getBlockByHeight(1))!.hash;
  await chain.mine(200);
  t.is(chain.knownBlockSize(first), undefined);
  t.is(answerBound("get_block", { hash: first }, limits), DEFAULT_MAX_FRAME_BYTES);
  t.is(answerBound("get_block", { hash: "zz".repeat(32) }, limits), DEFAULT_MAX_FRAME_BYTES);
  t.is(answerBound("get_block", { hash: 7 }, limits), DEFAULT_MAX_FRAME_BYTES);
  t.is(answerBound("get_block_by_height", { height: 5 }, limits), DEFAULT_MAX_FRAME_BYTES, "the block at a height can change before the answer");
  t.is(answerBound("get_block", { hash: tip }, { ...limits, frameBytes: 32 * 1024 }), 32 * 1024, "never more than a frame");
});

const PIPELINER = inlineModule("block-pipeliner", ["read_blockchain", "read_chain_state"], `
  const hash = await ctx.chain.getChainTip();
  const blocks = await Promise.all(Array.from({ length: 24 }, () => ctx.chain.getBlock(hash)));
  ctx.log.info("read", { same: blocks.filter((b) => b !== null && b.hash === hash).length });
`);

test.serial("under the real host, a TypeScript module's 24 get_block of the tip (one small block) at once never wait for max_unread_bytes (each reserved a 16 MiB frame before: 2 at a time against 32 MiB)", async (t) => {
  t.timeout(120_000);
  const h = await startHost(t, { inline: { "block-pipeliner": PIPELINER }, grants: { "block-pipeliner": ["read_blockchain", "read_chain_state"] } });
  const done = await h.waitForLog(/^read$/, { source: "block-pipeliner", timeoutMs: 60_000 });
  const stats = h.manager.session("block-pipeliner")!.flowStats;
  t.log(`peak in flight ${stats.peakInFlight}; waited for max_unread_bytes ${stats.waitedUnread} times`);
  t.is(done.fields?.["same"], 24);
  t.is(stats.waitedUnread, 0, "no get_block waited for room in max_unread_bytes");
});
