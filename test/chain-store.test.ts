// The embedded chain's persistence and memory bounds: a chain reopened from its directory
// continues where it stopped; a process killed with SIGKILL mid-run leaves a chain that opens
// consistent; only a bounded number of blocks and UTXOs stay in memory; the light block view.
import test from "ava";
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { utf8ToBytes } from "@noble/hashes/utils.js";
import { EmbeddedChain } from "../chain/embedded.ts";
import type { Block } from "../chain/backend.ts";

const here = path.dirname(fileURLToPath(import.meta.url));

async function tempDir(t: { teardown: (f: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "modhost-chain-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Walk the active chain down from the tip: heights, links and the transaction index agree. */
async function assertConsistent(t: import("ava").ExecutionContext, chain: EmbeddedChain, depth: number): Promise<void> {
  const height = await chain.getBlockHeight();
  let block = (await chain.getBlockByHeight(height))!;
  t.is(block.hash, await chain.getChainTip());
  for (let h = height; h > Math.max(0, height - depth); h--) {
    const parent = (await chain.getBlockByHeight(h - 1))!;
    t.is(block.header.prev_hash, parent.hash, `block ${h} links to block ${h - 1}`);
    for (const tx of block.transactions) t.true(await chain.hasTransaction(tx.txid), `tx ${tx.txid} of block ${h} is indexed`);
    block = parent;
  }
  // The tip's outputs are unspent (OP_RETURN ones are not outputs of the UTXO set).
  const tip = (await chain.getBlockByHeight(height))!;
  for (const tx of tip.transactions) {
    for (const [vout, out] of tx.outputs.entries()) {
      if (!out.script_pubkey.startsWith("6a")) t.truthy(await chain.getUtxo({ txid: tx.txid, vout }), `output ${tx.txid}:${vout} of the tip is unspent`);
    }
  }
}

test("a chain reopened from its directory continues: same tip, blocks, UTXOs, wallet", async (t) => {
  const dir = await tempDir(t);
  const first = await EmbeddedChain.create({ dataDir: dir, matureBlocks: 105 });
  const txid = await first.createTransaction({ feeRate: 4 });
  const [confirmedIn] = await first.mine(1);
  await first.createTransaction({ feeRate: 6 });
  await first.mine(2);
  const before = await first.getChainInfo();
  const block10 = (await first.getBlockByHeight(10))!;
  const tx = (await first.getTransaction(txid))!;
  await first.close();

  const second = await EmbeddedChain.create({ dataDir: dir, matureBlocks: 5 }); // matureBlocks only applies to a new chain
  const after = await second.getChainInfo();
  t.deepEqual(after, before);
  t.is((await second.getBlockByHeight(10))!.hash, block10.hash);
  t.deepEqual(await second.getTransaction(txid), tx);
  t.true((await second.getBlock(confirmedIn!))!.transactions.some((x) => x.txid === txid));
  t.truthy(await second.getUtxo({ txid, vout: 0 }));
  t.deepEqual(await second.getMempoolTransactions(), [], "the mempool is not persisted");

  // It carries on: new blocks build on the old tip, and the wallet still spends.
  await second.createTransaction();
  const [next] = await second.mine(1);
  const nextBlock = (await second.getBlock(next!))!;
  t.is(nextBlock.height, before.height + 1);
  t.is(nextBlock.header.prev_hash, before.tip_hash);
  t.is(nextBlock.transactions.length, 2);
  await assertConsistent(t, second, 10);
  await second.close();
});

test("a chain database is refused while it is open, and with another wallet seed", async (t) => {
  const dir = await tempDir(t);
  const first = await EmbeddedChain.create({ dataDir: dir, matureBlocks: 1 });
  await t.throwsAsync(EmbeddedChain.create({ dataDir: dir }), { message: /is in use/ });
  await first.close();
  await t.throwsAsync(EmbeddedChain.create({ dataDir: dir, seed: utf8ToBytes("another seed") }), { message: /belongs to another wallet seed/ });
  const again = await EmbeddedChain.create({ dataDir: dir });
  t.is(await again.getBlockHeight(), 1);
  await again.close();
});

test("a process killed with SIGKILL while mining leaves a consistent chain that continues", async (t) => {
  const dir = await tempDir(t);
  const child = spawn(process.execPath, ["--import=tsx", path.join(here, "fixtures/chain/miner.ts"), dir], { stdio: ["ignore", "pipe", "inherit"] });
  const heights: number[] = [];
  await new Promise<void>((resolve, reject) => {
    let buffered = "";
    child.stdout.on("data", (chunk: Buffer) => {
      buffered += chunk.toString();
      const lines = buffered.split("\n");
      buffered = lines.pop() ?? "";
      heights.push(...lines.map(Number));
      // Kill it in the middle of its work, some blocks after creation.
      if (heights.length >= 15 && child.exitCode === null) child.kill("SIGKILL");
    });
    child.on("exit", () => resolve());
    child.on("error", reject);
  });
  t.true(heights.length >= 15, `the miner printed ${heights.length} heights`);
  const lastPrinted = heights[heights.length - 1]!;

  const chain = await EmbeddedChain.create({ dataDir: dir });
  const height = await chain.getBlockHeight();
  // Every printed block was committed; at most the blocks after the last print are extra.
  t.true(height >= lastPrinted, `reopened at ${height}, last printed ${lastPrinted}`);
  await assertConsistent(t, chain, 30);
  for (let i = 0; i < 3; i++) await chain.createTransaction();
  const [hash] = await chain.mine(1);
  t.is((await chain.getBlock(hash!))!.transactions.length, 4);
  await chain.close();
});

test("blocks of heavy witness data are cached within [chain] block_cache_mb, not only block_cache: 12 blocks of one 3.9 MB-witness transaction each (~23 MB estimated each) against 64 MiB, all still read back whole", async (t) => {
  const { mempoolTransactions } = await import("./helpers/big-block.ts");
  const { RawTx } = await import("@scure/btc-signer");
  const budget = 64 * 1024 * 1024;
  const chain = await EmbeddedChain.create({ blockCacheBytes: budget, mempoolBytes: 1 << 30 });
  const base = await mempoolTransactions(chain, 12);
  const hashes: string[] = [];
  for (let i = 0; i < 12; i++) {
    await chain.submitTransaction(RawTx.encode({ ...RawTx.decode(base[i]!), segwitFlag: true, witnesses: [[new Uint8Array(3_900_000).fill(i)]] }));
    hashes.push(...(await chain.mine(1)));
    const counts = chain.memoryCounts();
    t.true(counts.blockBytes <= budget, `${counts.blockBytes} bytes of blocks cached after ${i + 1}, over ${budget}`);
  }
  const counts = chain.memoryCounts();
  t.log(counts);
  // Before the budget every one of them stayed (block_cache is 64): 12 x ~23 MB estimated.
  t.true(counts.blocks < 12, `${counts.blocks} heavy blocks cached`);
  for (const [i, hash] of hashes.entries()) {
    const block = await chain.getBlock(hash);
    t.is(block!.transactions[1]!.inputs[0]!.witness[0]!.length, 2 * 3_900_000, `block ${i} read back whole`);
  }
  t.true(chain.memoryCounts().blockBytes <= budget);
  await chain.close();
});

test("only a bounded number of blocks and UTXOs stay in memory; older blocks are read from disk", async (t) => {
  const dir = await tempDir(t);
  const chain = await EmbeddedChain.create({ dataDir: dir, matureBlocks: 101, blockCache: 8, utxoCache: 50 });
  const early: Block[] = [];
  for (let h = 1; h <= 5; h++) early.push((await chain.getBlockByHeight(h))!);
  for (let i = 0; i < 150; i++) {
    await chain.createTransaction({ outputs: 2 });
    await chain.mine(1);
  }
  const counts = chain.memoryCounts();
  t.log(counts);
  t.true(counts.blocks <= 8, `${counts.blocks} blocks cached`);
  t.true(counts.utxos <= 50, `${counts.utxos} UTXOs cached`);
  t.true(counts.headers <= 120, `${counts.headers} header summaries`);
  t.is(await chain.getBlockHeight(), 251);
  // Blocks beyond the window still come back whole, from the database.
  for (const block of early) t.deepEqual(await chain.getBlockByHeight(block.height), block);
  t.true(chain.memoryCounts().blocks <= 8);
  // A reorg deeper than the block cache reads its undo data from disk.
  const { disconnected, connected } = await chain.reorg(12);
  t.is(disconnected.length, 12);
  t.is(connected.length, 13);
  await assertConsistent(t, chain, 40);
  await chain.close();
});

test("get_block without hex: a frozen light view, made once per block", async (t) => {
  const chain = await EmbeddedChain.create({ matureBlocks: 105 });
  await chain.createTransaction();
  const [hash] = await chain.mine(1);
  const full = (await chain.getBlock(hash!))!;
  const light = (await chain.getBlock(hash!, { includeHex: false }))!;
  t.false("hex" in light);
  t.false("hex" in light.header);
  t.true(light.transactions.every((tx) => !("hex" in tx)));
  t.deepEqual(light.transactions.map((tx) => tx.txid), full.transactions.map((tx) => tx.txid));
  t.is(light.header.merkle_root, full.header.merkle_root);
  t.true(Object.isFrozen(light) && Object.isFrozen(light.transactions[1]));
  t.is(await chain.getBlock(hash!, { includeHex: false }), light);
  t.is(await chain.getBlockByHeight(full.height, { includeHex: false }), light);
  t.true(JSON.stringify(light).length < JSON.stringify(full).length / 1.5);
});
