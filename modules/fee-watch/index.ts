// fee-watch: at every block, record the fee estimates for the configured confirmation targets
// and the mempool size next to what block-stats (a dependency) says about the block; warn
// when the mempool gets busy.
import type { ModuleContext } from "modhost/sdk";

const TREE = "estimates";

export default async function start(ctx: ModuleContext): Promise<void> {
  const targets = (Array.isArray(ctx.config.targets) ? ctx.config.targets : [1, 6, 24]).map(Number);
  const busy = Number(ctx.config.busy_mempool ?? 50);
  await ctx.storage.openTree(TREE);

  let warned = false;
  await ctx.events.subscribe("MempoolTransactionAdded", async () => {
    const { transaction_count } = await ctx.mempool.getSize();
    if (transaction_count > busy && !warned) {
      warned = true;
      ctx.log.warn(`mempool is busy: ${transaction_count} transactions`);
    }
  });

  await ctx.events.subscribe("NewBlock", async (ev) => {
    const estimates: Record<string, number> = {};
    for (const t of targets) estimates[t] = await ctx.mempool.estimateFee(t);
    const size = await ctx.mempool.getSize();
    // What the block actually paid, from block-stats' API (it may lag a block behind, or be
    // restarting: then we record the estimates alone).
    const paid = await ctx.modules.call<{ height: number; avg_fee_rate: number } | null>("block-stats", "latest").catch(() => null);
    const paidRate = paid && paid.height === ev.payload.height ? paid.avg_fee_rate : null;
    await ctx.storage.put(TREE, String(ev.payload.height).padStart(10, "0"), { estimates, paid_avg_fee_rate: paidRate, mempool: size.transaction_count, time: ev.payload.time });
    warned = size.transaction_count > busy;
    const paidText = paidRate === null ? "" : `; the block paid avg ${paidRate} sat/vB`;
    ctx.log.info(`height ${ev.payload.height}: ${targets.map((t) => `${t}-block ${estimates[t]} sat/vB`).join(", ")}; mempool ${size.transaction_count} txs${paidText}`);
  });

  await ctx.events.subscribe("ModuleLoaded", (ev) => {
    if (ev.payload.module === "block-stats") ctx.log.info(`block-stats ${ev.payload.version} is running`);
  });
}
