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
