// block-stats under a real host (modhost/testing): it records every block's statistics in its
// storage, serves them over RPC and its module API, counts them in a metric, and unwinds and
// re-records blocks replaced by a reorg.
import test from "ava";
import { fileURLToPath } from "node:url";
import { startHost } from "modhost/testing";

const MODULE = fileURLToPath(new URL("..", import.meta.url));

type Summary = { height: number; hash: string; tx_count: number; fees: number };

test("block-stats records each mined block with its fees and serves it by RPC and module API", async (t) => {
  const h = await startHost({ modules: [MODULE], teardown: t.teardown.bind(t) });
  await h.waitForLog(/tracking blocks; 102 caught up/, { module: "block-stats" });

  const txid = await h.sendTransaction({ feeRate: 5 });
  const height = await h.mine(1);
  await h.waitForLog(new RegExp(`^block ${height}: 2 txs`), { module: "block-stats" });

  const stored = await h.storage("block-stats").get<Summary>("blocks", String(height).padStart(10, "0"));
  t.is(stored?.height, height);
  t.is(stored?.hash, await h.chain.getChainTip());
  t.is(stored?.tx_count, 2, `the coinbase and ${txid}`);
  t.true((stored?.fees ?? 0) > 0, "the transaction paid a fee");

  const viaRpc: Summary[] = await h.rpc("block-stats.summary", { count: 2 });
  t.deepEqual(viaRpc.map((s) => s.height), [height, height - 1]);
  const latest: Summary = await h.callModule("block-stats", "latest");
  t.deepEqual(latest, stored);
  t.is(h.metric("block-stats", "blocks_recorded"), height + 1, "blocks 0 to the tip at start, then the mined one");
});

test("block-stats replaces the statistics of blocks a reorg took away", async (t) => {
  const h = await startHost({ modules: [MODULE], teardown: t.teardown.bind(t) });
  await h.waitForLog(/tracking blocks/, { module: "block-stats" });
  const height = await h.mine(2);
  await h.waitForLog(new RegExp(`^block ${height}:`), { module: "block-stats" });
  const before = await h.storage("block-stats").get<Summary>("blocks", String(height).padStart(10, "0"));

  const { connected } = await h.reorg(1);
  // Depending on when its catch-up runs, the module unwinds the old block (and says so) or finds
  // the new chain before it stored it; either way its storage must end as the active chain.
  const key = String(height).padStart(10, "0");
  const rows = await h.waitFor(async () => {
    const r = await h.storage("block-stats").iterate<Summary>("blocks", { gte: key });
    return r.map((x) => x.value.hash).join() === connected.join() ? r : undefined;
  }, 10_000, "the replacement blocks in block-stats' storage");
  t.deepEqual(rows.map((r) => r.value.hash), connected, "the replacement blocks, each once");
  t.false(rows.some((r) => r.value.hash === before!.hash), "the replaced block's statistics are gone");
});

test("block-stats ends as the active chain when a reorg replaces blocks its running catch-up already recorded", async (t) => {
  const h = await startHost({ modules: [MODULE], teardown: t.teardown.bind(t) });
  await h.waitForLog(/tracking blocks/, { module: "block-stats" });
  const base = await h.height();
  // 40 blocks at once: one catch-up records them one after another. Halfway through it, a reorg
  // replaces 30 blocks, 10 of them below what that catch-up has recorded: the blocks it reads
  // next build on blocks it never saw, and the ones it recorded are gone from the chain.
  // The host holds the write of height base + 20 until the reorg is done.
  const store = h.host.manager.storeOf("block-stats")!;
  const batch = store.batch.bind(store);
  let reorged: Promise<unknown> | undefined;
  store.batch = async (tree, ops, part) => {
    if (ops[0]?.key === String(base + 20).padStart(10, "0")) await (reorged ??= h.reorg(30));
    return batch(tree, ops, part);
  };
  await h.mine(40);
  await h.waitFor(() => reorged, 20_000, `block-stats' write of height ${base + 20}`);
  await reorged;
  const tip = await h.height();
  const active: string[] = [];
  for (let height = base + 1; height <= tip; height++) active.push((await h.chain.getBlockByHeight(height))!.hash);
  const from = String(base + 1).padStart(10, "0");
  const rows = await h.waitFor(async () => {
    const r = await h.storage("block-stats").iterate<Summary>("blocks", { gte: from });
    return r.map((x) => x.value.hash).join() === active.join() ? r : undefined;
  }, 20_000, `block-stats' storage for heights ${base + 1}..${tip} to be the active chain`);
  t.deepEqual(rows.map((r) => r.value.height), active.map((_, i) => base + 1 + i), "each height once");
});
