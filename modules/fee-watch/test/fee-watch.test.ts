// fee-watch with its dependency block-stats under a real host (modhost/testing): at each block
// it stores the fee estimates and what block-stats says the block paid, and blocks mined while
// it was stopped are recorded as missed.
import test from "ava";
import { fileURLToPath } from "node:url";
import { startHost } from "modhost/testing";

const MODULE = fileURLToPath(new URL("..", import.meta.url));
const BLOCK_STATS = fileURLToPath(new URL("../../block-stats", import.meta.url));

type Entry = { hash: string; estimates: Record<string, number> | null; paid_avg_fee_rate: number | null; mempool: number | null; missed?: boolean };
const key = (h: number) => String(h).padStart(10, "0");

test("fee-watch records estimates for the targets it is configured with at each block", async (t) => {
  const h = await startHost({ modules: [BLOCK_STATS, MODULE], config: { "fee-watch": { targets: [2, 12] } }, teardown: t.teardown.bind(t) });
  await h.waitForState("fee-watch", "running");
  await h.sendTransaction({ feeRate: 3 });
  const mark = h.mark();
  const height = await h.mine(1);
  await h.waitForLog(new RegExp(`^height ${height}: 2-block \\d+ sat/vB, 12-block \\d+ sat/vB; mempool 0 txs`), { module: "fee-watch", since: mark });
  const entry = await h.storage("fee-watch").get<Entry>("estimates", key(height));
  t.is(entry?.hash, await h.chain.getChainTip());
  t.deepEqual(Object.keys(entry?.estimates ?? {}).sort(), ["12", "2"]);
  t.is(entry?.mempool, 0, "the block took the transaction out of the mempool");
});

test("fee-watch marks blocks mined while it was unloaded as missed, without estimates", async (t) => {
  const h = await startHost({ modules: [BLOCK_STATS, MODULE], teardown: t.teardown.bind(t) });
  await h.waitForState("fee-watch", "running");
  const first = await h.mine(1);
  await h.waitForLog(new RegExp(`^height ${first}:`), { module: "fee-watch" });
  await h.host.manager.unload("fee-watch");
  const last = await h.mine(2);
  await h.host.manager.load("fee-watch");
  await h.waitForLog(new RegExp(`^blocks ${first + 1}\\.\\.${last} arrived while fee-watch was not watching`), { module: "fee-watch" });
  const rows = await h.storage("fee-watch").iterate<Entry>("estimates", { gt: key(first) });
  t.deepEqual(rows.map((r) => [r.key, r.value.missed, r.value.estimates]), [[key(first + 1), true, null], [key(last), true, null]]);
});

test("fee-watch ends as the active chain when a reorg replaces blocks it is filling in as missed", async (t) => {
  const h = await startHost({ modules: [BLOCK_STATS, MODULE], teardown: t.teardown.bind(t) });
  await h.waitForState("fee-watch", "running");
  const first = await h.mine(1);
  await h.waitForLog(new RegExp(`^height ${first}:`), { module: "fee-watch" });
  await h.host.manager.unload("fee-watch");
  await h.mine(200);
  // Loaded again, it fills in the 200 blocks one after another. The host holds its write of
  // height first + 100 until a reorg has replaced 150 blocks, 50 of them below that write: the
  // blocks it reads next build on blocks it never saw, and some it stored are gone.
  let reorged: Promise<unknown> | undefined;
  const loading = h.host.manager.load("fee-watch");
  loading.catch(() => undefined); // awaited below; a failed load must fail the test, not the process
  const store = await h.waitFor(() => h.host.manager.storeOf("fee-watch"), 20_000, "fee-watch's store to be open");
  const put = store.put.bind(store);
  store.put = async (tree, k, value) => {
    if (k === key(first + 100)) await (reorged ??= h.reorg(150));
    return put(tree, k, value);
  };
  await loading;
  t.truthy(reorged, `the reorg ran during the filling in (at height ${first + 100})`);
  await reorged;
  const tip = await h.height();
  const active: string[] = [];
  for (let height = first + 1; height <= tip; height++) active.push((await h.chain.getBlockByHeight(height))!.hash);
  const rows = await h.waitFor(async () => {
    const r = await h.storage("fee-watch").iterate<Entry>("estimates", { gt: key(first) });
    return r.map((x) => x.value.hash).join() === active.join() ? r : undefined;
  }, 20_000, `fee-watch's entries for heights ${first + 1}..${tip} to be the active chain`);
  t.deepEqual(rows.map((r) => Number(r.key)), active.map((_, i) => first + 1 + i), "each height once");
});
