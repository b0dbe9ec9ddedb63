// block-stats: on every new block, compute its statistics from the block itself and store
// them under the block height; on a disconnect, remove them again. Storage keys are
// zero-padded heights so that iteration is in height order.
//
// Other modules read the statistics through its module API (fee-watch does), operators
// through its RPC method (`block-stats.summary`) and CLI command (`modhost block-stats last`),
// and it reports a blocks counter and a fee gauge as metrics.
import type { ModuleContext } from "modhost/sdk";
import { summarise, type BlockSummary } from "./summary.ts";

const TREE = "blocks";

export default async function start(ctx: ModuleContext): Promise<void> {
  const keep = Number(ctx.config.keep_blocks ?? 1000);
  await ctx.storage.openTree(TREE);

  const record = async (height: number): Promise<BlockSummary | null> => {
    const block = await ctx.chain.getBlockByHeight(height);
    if (!block) return null;
    const summary = summarise(block);
    await ctx.storage.transaction(TREE, [
      { op: "put", key: heightKey(height), value: summary },
      ...(height >= keep ? [{ op: "delete" as const, key: heightKey(height - keep) }] : []),
    ]);
    return summary;
  };

  // Catch up with the blocks mined before we started (bounded by keep_blocks).
  const tip = await ctx.chain.getBlockHeight();
  const stored = await ctx.storage.iterate(TREE, { reverse: true, limit: 1 });
  const from = Math.max(stored.length ? Number(stored[0]!.key) + 1 : 0, tip - keep + 1, 0);
  for (let h = from; h <= tip; h++) await record(h);
  ctx.log.info(`tracking blocks; ${tip - from + 1} caught up`, { tip });

  const latest = async (): Promise<BlockSummary | null> => {
    const [last] = await ctx.storage.iterate<BlockSummary>(TREE, { reverse: true, limit: 1 });
    return last?.value ?? null;
  };
  const recent = async (count: number): Promise<BlockSummary[]> => {
    const rows = await ctx.storage.iterate<BlockSummary>(TREE, { reverse: true, limit: Math.min(Math.max(1, count), 1000) });
    return rows.map((r) => r.value);
  };

  await ctx.modules.registerApi({
    latest: () => latest(),
    recent: (params) => recent(Number((params as { count?: number } | null)?.count ?? 10)),
  });
  await ctx.rpc.register("summary", "Statistics of the last `count` blocks (default 10), newest first", (params) => {
    const count = Array.isArray(params) ? Number(params[0] ?? 10) : Number((params as { count?: number } | null)?.count ?? 10);
    return recent(count);
  });
  await ctx.rpc.registerCli({ about: "Per-block statistics", commands: [{ name: "last", about: "Statistics of the newest block" }] }, {
    last: async () => {
      const s = await latest();
      return s ? `block ${s.height} ${s.hash}\n  ${s.tx_count} transactions, ${s.size} bytes, ${s.fees} sat fees, avg ${s.avg_fee_rate} sat/vB` : "no blocks recorded yet";
    },
  });

  await ctx.events.subscribe("NewBlock", async (ev) => {
    const s = await record(ev.payload.height);
    if (!s) return;
    ctx.log.info(`block ${s.height}: ${s.tx_count} txs, ${s.fees} sat fees, avg ${s.avg_fee_rate} sat/vB`);
    await ctx.metrics.report("blocks_recorded", 1, { kind: "counter" });
    await ctx.metrics.report("last_block_fees_sats", s.fees, { kind: "gauge" });
  });
  await ctx.events.subscribe("BlockDisconnected", async (ev) => {
    await ctx.storage.delete(TREE, heightKey(ev.payload.height));
    ctx.log.warn(`block ${ev.payload.height} disconnected; statistics removed`);
  });
  await ctx.events.subscribe("ChainReorg", async (ev) => {
    ctx.log.warn(`reorg at height ${ev.payload.fork_height}: ${ev.payload.disconnected.length} out, ${ev.payload.connected.length} in`);
  });
}

export function stop(): void {
  // Nothing to flush: every write is a committed storage transaction.
}

function heightKey(h: number): string {
  return String(h).padStart(10, "0");
}
