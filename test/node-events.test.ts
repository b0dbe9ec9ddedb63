// Events the host derives from what it watches (host/node-events.ts), with the real embedded
// chain and the real bus: NewTransaction, FeeRateChanged, BlockMined, HealthCheck, DiskSpaceLow.

import test from "ava";
import { tmpdir } from "node:os";
import { bytesToHex } from "@noble/hashes/utils.js";
import { EmbeddedChain } from "../chain/embedded.ts";
import { EventBus } from "../host/events/bus.ts";
import { NodeEvents } from "../host/node-events.ts";
import { displayHex, encodeBlock, encodeHeader, grindNonce, internalBytes, merkleRoot, sha256d } from "../chain/serialise.ts";

async function world(opts: { diskSpaceLowMb?: number } = {}) {
  const chain = await EmbeddedChain.create({ matureBlocks: 110 });
  const bus = new EventBus();
  const seen: Array<{ type: string; payload: Record<string, unknown> }> = [];
  const sub = bus.subscribe("test", (ev) => seen.push({ type: ev.type, payload: ev.payload as Record<string, unknown> }));
  for (const type of ["NewTransaction", "FeeRateChanged", "BlockMined", "HealthCheck", "DiskSpaceLow", "MiningDifficultyChanged"]) sub.types.add(type);
  const events = new NodeEvents({
    chain,
    bus,
    modules: () => [{ name: "a", state: "running" }, { name: "b", state: "failed" }],
    dataDir: tmpdir(),
    healthEventSeconds: 0,
    diskSpaceLowMb: opts.diskSpaceLowMb ?? 0,
    warn: (m) => {
      throw new Error(m);
    },
  });
  chain.subscribe((name, payload) => events.onChainEvent(name, payload));
  return { chain, events, seen };
}

const settle = () => new Promise((r) => setTimeout(r, 100));

test("a transaction entering the mempool is also NewTransaction (the seeds' name), with the same payload", async (t) => {
  const w = await world();
  const txid = await w.chain.createTransaction({ feeRate: 3 });
  const entry = (await w.chain.getMempoolEntry(txid))!;
  t.deepEqual(w.seen.filter((e) => e.type === "NewTransaction").map((e) => e.payload), [{ txid, fee: entry.fee, vsize: entry.vsize, fee_rate: entry.fee / entry.vsize }]);
});

test("FeeRateChanged after a block changes the next-block estimate; none when it stays", async (t) => {
  const w = await world();
  await w.chain.mine(1);
  await settle();
  const before = await w.chain.estimateFee(1);
  for (let i = 0; i < 3; i++) await w.chain.createTransaction({ feeRate: 40 + i });
  await w.chain.mine(1);
  await settle();
  const after = await w.chain.estimateFee(1);
  const changes = w.seen.filter((e) => e.type === "FeeRateChanged").map((e) => e.payload);
  if (after === before) t.deepEqual(changes, []);
  else t.deepEqual(changes, [{ target_blocks: 1, old_fee_rate: before, new_fee_rate: after }]);
  t.not(after, before, "the block of 40+ sat/vB transactions moved the estimate (otherwise this test checks nothing)");
});

test("a block a module submitted is BlockMined, naming the module; a block the chain mined itself is not", async (t) => {
  const w = await world();
  await w.chain.mine(1);
  const tpl = await w.chain.getBlockTemplate({ coinbaseScript: "51" });
  const all = [tpl.coinbase_tx!, ...tpl.transactions];
  const header = encodeHeader({ version: tpl.version, prev_hash: tpl.previous_block_hash, merkle_root: displayHex(merkleRoot(all.map((tx) => internalBytes(tx.txid)))), time: tpl.cur_time, bits: tpl.bits, nonce: 0 });
  grindNonce(header, BigInt(`0x${tpl.target}`));
  const hash = displayHex(sha256d(header));
  w.events.blockSubmitted(hash, "miner-module");
  t.is((await w.chain.submitBlock(bytesToHex(encodeBlock(header, all.map((tx) => tx.hex))))).result, "accepted");
  t.deepEqual(w.seen.filter((e) => e.type === "BlockMined").map((e) => e.payload), [{ hash, height: tpl.height, submitted_by: "miner-module" }]);
});

test("HealthCheck lists every module's state and the chain height", async (t) => {
  const w = await world();
  await w.events.tick(true);
  t.deepEqual(w.seen.filter((e) => e.type === "HealthCheck").map((e) => e.payload), [
    { modules: [{ module: "a", state: "running", healthy: true }, { module: "b", state: "failed", healthy: false }], chain_height: await w.chain.getBlockHeight() },
  ]);
});

test("DiskSpaceLow once when free space is under the threshold, not again at every check", async (t) => {
  // A threshold no disk meets: 1 PiB.
  const w = await world({ diskSpaceLowMb: 1024 * 1024 * 1024 });
  await w.events.tick(false);
  await w.events.tick(false);
  const low = w.seen.filter((e) => e.type === "DiskSpaceLow");
  t.is(low.length, 1);
  t.like(low[0]!.payload, { path: tmpdir(), threshold_bytes: 1024 ** 5 });
  t.true((low[0]!.payload["free_bytes"] as number) < (low[0]!.payload["total_bytes"] as number));
});
