// What bounds the embedded chain's growth when modules hand it blocks (issue #8): regtest proof
// of work is trivial, so a module allowed submit_block can make full blocks as fast as it
// likes. Per module, capabilities/block-budget.ts bounds blocks and written bytes per minute;
// for the whole chain, [chain] max_chain_mb bounds what it writes for its blocks; in memory,
// [chain] utxo_cache_mb bounds the cached UTXOs' scripts. Under the real host:
// test/hostile-blocks.test.ts. The chain tests run alone (serial): one measures the heap.

import test from "ava";
import v8 from "node:v8";
import vm from "node:vm";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { BlockBudget } from "../capabilities/block-budget.ts";
import { CapabilityError } from "../capabilities/types.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { ChainStore } from "../chain/store.ts";
import { coinbaseBlock } from "./helpers/big-block.ts";

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;

/** A script of `n` bytes that is not OP_RETURN (so its output joins the UTXO set). */
const script = (n: number, fill = 0x51) => new Uint8Array(n).fill(fill);

test("BlockBudget: past submit_blocks_per_minute a block is refused before it is read, naming the limit and when to try again; it refills with time", (t) => {
  let now = 1_000_000;
  const budget = new BlockBudget(() => ({ blocksPerMinute: 5, mbPerMinute: 100 }), () => now);
  for (let i = 0; i < 5; i++) budget.take("miner", 300);
  const err = t.throws(() => budget.take("miner", 300), { instanceOf: CapabilityError });
  t.is(err.code, "quota_exceeded");
  t.regex(err.message, /submit_blocks_per_minute = 5.*try again in 12000 ms.*\[modules\.limits\.miner\]/);
  // Another module has its own budget.
  t.notThrows(() => budget.take("other", 300));
  now += 12_000;
  t.notThrows(() => budget.take("miner", 300));
  t.throws(() => budget.take("miner", 300), { message: /submit_blocks_per_minute/ });
});

test("BlockBudget: past submit_block_mb_per_minute a block is refused; a block not accepted gives its share back; what the chain wrote beyond a block's size is owed", (t) => {
  let now = 1_000_000;
  const budget = new BlockBudget(() => ({ blocksPerMinute: 1000, mbPerMinute: 8 }), () => now);
  budget.take("miner", 4_000_000);
  const second = budget.take("miner", 4_000_000);
  t.throws(() => budget.take("miner", 1_000_000), { instanceOf: CapabilityError, message: /submit_block_mb_per_minute = 8.*1000000-byte block was not read; try again in 7500 ms/ });
  second.giveBack();
  const third = budget.take("miner", 1_000_000);
  // The chain wrote 25 MB for that 1 MB block (small outputs): 24 MB more are owed, so the
  // module waits for 3 minutes of its rate before the next 1 MB block.
  third.written(25_000_000);
  const owed = t.throws(() => budget.take("miner", 1_000_000), { message: /submit_block_mb_per_minute/ });
  const wait = Number(/try again in (\d+) ms/.exec(owed.message)?.[1]);
  // 8 - 4 - 1 - 24 = -21 MB: 22 MB to a 1 MB block, at 8 MB a minute.
  t.is(wait, 165_000);
  now += wait;
  t.notThrows(() => budget.take("miner", 1_000_000));
  // The smallest burst is one maximal block, whatever the rate.
  const slow = new BlockBudget(() => ({ blocksPerMinute: 10, mbPerMinute: 1 }), () => now);
  t.notThrows(() => slow.take("miner", 4_000_000));
});

test.serial("[chain] max_chain_mb: past it a submitted block is rejected as chain-full naming the setting, mined blocks carry no mempool transactions, and the count survives a restart", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "modhost-growth-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const max = 4_000_000;
  let chain = await EmbeddedChain.create({ dataDir: dir, maxStoredBytes: max });
  const start = chain.memoryCounts().storedBytes;
  t.true(start > 50_000 && start < 500_000, `101 mined blocks wrote ${start} bytes`);
  let accepted = 0;
  let largest = 0;
  let last = chain.memoryCounts().storedBytes;
  for (;;) {
    const block = coinbaseBlock(await chain.getBlockTemplate(), [script(300_000, 0x51 + (accepted % 8))]);
    const r = await chain.submitBlock(block);
    if (r.result !== "accepted") {
      t.is(r.result, "rejected");
      t.regex(r.reason ?? "", /^chain-full: .*\[chain\] max_chain_mb/);
      break;
    }
    accepted++;
    const now = chain.memoryCounts().storedBytes;
    t.is(r.storedBytes, now - last);
    largest = Math.max(largest, now - last);
    last = now;
    t.true(accepted < 100, "the cap stops the blocks");
  }
  let stored = chain.memoryCounts().storedBytes;
  // A 300 KB script is kept in the block and as hex in the UTXO set: ~900 KB written a block.
  t.true(largest > 900_000, `a block wrote ${largest} bytes`);
  t.true(stored <= max, `${stored} bytes held against ${max}: a block that would pass it is refused before it is written`);
  t.true(accepted >= 3, `${accepted} blocks accepted`);
  // Mined blocks fill the rest; at the cap the chain goes on, with blocks of their coinbase alone.
  while (chain.memoryCounts().storedBytes < max) await chain.mine(20, { includeMempool: false });
  stored = chain.memoryCounts().storedBytes;
  t.true(stored < max + 30_000);
  await chain.createTransaction();
  const height = await chain.getBlockHeight();
  const [hash] = await chain.mine(1);
  t.is((await chain.getBlock(hash!))!.transactions.length, 1);
  t.is(await chain.getBlockHeight(), height + 1);
  t.is((await chain.getMempoolInfo()).transaction_count, 1);
  const counted = chain.memoryCounts().storedBytes;
  await chain.close();
  chain = await EmbeddedChain.create({ dataDir: dir, maxStoredBytes: max });
  t.teardown(() => chain.close());
  t.is(chain.memoryCounts().storedBytes, counted, "the count is in the chain state");
  const again = await chain.submitBlock(coinbaseBlock(await chain.getBlockTemplate(), [script(1000)]));
  t.regex(again.reason ?? "", /^chain-full/);
});

test.serial("[chain] utxo_cache_mb: 24 outputs of 900 KB scripts (1.8 MB of hex each) leave at most the budget in the UTXO cache, and each is still read back", async (t) => {
  const budget = 4 * 1024 * 1024;
  // On disk: a chain in memory (memory-level) holds its whole database in the heap.
  const dir = await mkdtemp(path.join(tmpdir(), "modhost-growth-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const chain = await EmbeddedChain.create({ dataDir: dir, utxoCacheBytes: budget, blockCacheBytes: 1024 * 1024 });
  t.teardown(() => chain.close());
  // Hex strings this large are external strings (Node makes them outside V8's heap): both
  // count. Array buffers (LevelDB's and the encoders' scratch space) come and go by ~10 MB.
  const held = async () => {
    for (let i = 0; i < 3; i++) {
      gc();
      await new Promise((r) => setTimeout(r, 50));
    }
    const m = process.memoryUsage();
    return m.heapUsed + m.external - m.arrayBuffers;
  };
  const before = await held();
  const outputs: Array<{ txid: string }> = [];
  for (let i = 0; i < 24; i++) {
    const block = coinbaseBlock(await chain.getBlockTemplate(), [script(900_000, 0x51 + i)]);
    const r = await chain.submitBlock(block);
    t.is(r.result, "accepted", r.reason);
    outputs.push({ txid: (await chain.getBlock(r.hash!))!.transactions[0]!.txid });
  }
  const grown = (await held()) - before;
  t.log(`heap and external +${(grown / 1e6).toFixed(1)} MB, utxo cache ${chain.memoryCounts().utxoBytes} bytes estimated`);
  t.true(chain.memoryCounts().utxoBytes <= budget);
  // 24 × 1.8 MB of hex: measured without the budget +36 MB, with it -0.1 to +2.6 MB.
  t.true(grown < 18_000_000, `the heap grew by ${grown} bytes`);
  for (const o of outputs) t.is((await chain.getUtxo({ txid: o.txid, vout: 0 }))?.script_pubkey.length, 1_800_000);
});

/** What the chain's database holds by a walk of it (ChainStore.measure), the truth its count must match. */
const walk = (chain: EmbeddedChain) => (chain as unknown as { store: ChainStore }).store.measure();
const held = (chain: EmbeddedChain) => chain.memoryCounts().storedBytes;

async function growthDir(t: import("ava").ExecutionContext): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "modhost-growth-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test.serial("[chain] max_chain_mb counts what the database holds: spends and a reorg lower it, and after each step, and after a reopen, it equals a walk of the database", async (t) => {
  t.timeout(120_000);
  const dir = await growthDir(t);
  let chain = await EmbeddedChain.create({ dataDir: dir });
  t.is(held(chain), await walk(chain), "101 mined blocks");
  await chain.mine(20); // coinbases to spend
  // Spends: wallet transactions of several outputs, mined, then spent again.
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 5; i++) await chain.createTransaction({ outputs: 4 });
    await chain.mine(1);
    t.is(held(chain), await walk(chain), `round ${round}: blocks that spend outputs`);
  }
  const before = held(chain);
  await chain.reorg(3, { newBlocks: 0 });
  const after = held(chain);
  t.true(after < before, `a reorg of 3 blocks lowers the count: ${before} -> ${after}`);
  t.is(after, await walk(chain), "after the reorg");
  await chain.mine(2, { includeMempool: true });
  t.is(held(chain), await walk(chain), "after the replacement blocks");
  const counted = held(chain);
  await chain.close();
  chain = await EmbeddedChain.create({ dataDir: dir });
  t.teardown(() => chain.close());
  t.is(held(chain), counted, "the same count after a reopen");
  t.is(held(chain), await walk(chain));
});

test.serial("[chain] max_chain_mb: a chain made before the count had one is measured at open, in slices, blocks connected meanwhile included; it then equals a walk of the database and is kept", async (t) => {
  t.timeout(120_000);
  const dir = await growthDir(t);
  let chain = await EmbeddedChain.create({ dataDir: dir });
  await chain.mine(6); // coinbases to spend
  for (let i = 0; i < 5; i++) await chain.createTransaction({ outputs: 3 });
  await chain.mine(1);
  const truth = await walk(chain);
  await chain.close();
  // The chain state as an older modhost wrote it: no liveBytes, its own count of every put.
  const store = await ChainStore.open(dir);
  const state = (await store.readState())!;
  delete state.liveBytes;
  state.storedBytes = 123;
  await store.write([{ type: "put", sub: "s", key: "state", value: state }]);
  await store.close();
  chain = await EmbeddedChain.create({ dataDir: dir });
  t.teardown(() => chain.close());
  t.truthy(chain.measuring, "measured after the open, not during it");
  t.is(held(chain), 123, "the older count stands in meanwhile");
  await chain.mine(1);
  await chain.measuring;
  t.is(held(chain), await walk(chain), "the walk plus the block connected meanwhile");
  t.true(held(chain) > truth);
  await chain.mine(1);
  const counted = held(chain);
  await chain.close();
  chain = await EmbeddedChain.create({ dataDir: dir });
  t.falsy(chain.measuring, "kept in the chain state: not measured again");
  t.is(held(chain), counted);
});

test.serial("[chain] max_chain_mb: a submitted block whose writes would pass it (though its size would not) is rejected as chain-full naming the setting before it is written; the chain is unchanged", async (t) => {
  t.timeout(120_000);
  const dir = await growthDir(t);
  let chain = await EmbeddedChain.create({ dataDir: dir });
  const start = held(chain);
  await chain.close();
  // A 300 KB script: ~300 KB of block, ~900 KB written (the block, the UTXO's script as hex).
  const max = start + 500_000;
  chain = await EmbeddedChain.create({ dataDir: dir, maxStoredBytes: max });
  t.teardown(() => chain.close());
  const tip = await chain.getChainTip();
  const block = coinbaseBlock(await chain.getBlockTemplate(), [script(300_000)]);
  const r = await chain.submitBlock(block);
  t.is(r.result, "rejected");
  t.regex(r.reason ?? "", /^chain-full: .*would add \d+\.\d MB, would pass its limit of \d+\.\d MB \(\[chain\] max_chain_mb\)/);
  t.is(await chain.getChainTip(), tip, "the tip is unchanged");
  t.is(held(chain), start, "the count is unchanged");
  t.is(await walk(chain), start, "nothing was written");
  // A block that fits is taken.
  const small = await chain.submitBlock(coinbaseBlock(await chain.getBlockTemplate(), [script(1_000)]));
  t.is(small.result, "accepted");
  t.true(held(chain) <= max);
});
