// block-stats: computes the statistics of every block from the block itself and stores them
// under the block height, following the catch-up contract (docs/module-guide.md): its
// highest stored summary (height and hash) is its cursor. At start and on every chain event
// it unwinds summaries of blocks no longer on the active chain (their hash differs from the
// active block at that height: a reorg, while it ran or while it was stopped), then records
// every block from the cursor to the tip, each only if it builds on the one recorded before it
// (a reorg during the catch-up itself sends it back to unwinding). So nothing is missed across
// a restart or dropped events, nothing is recorded twice, and what it keeps is one chain. Storage keys are zero-padded heights so that
// iteration is in height order; only the last keep_blocks blocks are kept.
//
// Other modules read the statistics through its module API (fee-watch does), operators
// through its RPC method (`block-stats.summary`) and CLI command (`modhost block-stats last`),
// and it reports a blocks counter and a fee gauge as metrics.
import type { LightBlock, ModuleContext } from "modhost/sdk";
import { summarise, type BlockSummary } from "./summary.ts";

const TREE = "blocks";

export default async function start(ctx: ModuleContext): Promise<void> {
  const keep = Number(ctx.config.keep_blocks ?? 1000);
  await ctx.storage.openTree(TREE);

  const latest = async (): Promise<BlockSummary | null> => {
    const [last] = await ctx.storage.iterate<BlockSummary>(TREE, { reverse: true, limit: 1 });
    return last?.value ?? null;
  };
  const recent = async (count: number): Promise<BlockSummary[]> => {
    const rows = await ctx.storage.iterate<BlockSummary>(TREE, { reverse: true, limit: Math.min(Math.max(1, count), 1000) });
    return rows.map((r) => r.value);
  };

  const record = async (block: LightBlock): Promise<BlockSummary> => {
    const summary = summarise(block);
    const height = summary.height;
    await ctx.storage.transaction(TREE, [
      { op: "put", key: heightKey(height), value: summary },
      ...(height >= keep ? [{ op: "delete" as const, key: heightKey(height - keep) }] : []),
    ]);
    ctx.log.info(`block ${summary.height}: ${summary.tx_count} txs, ${summary.fees} sat fees, avg ${summary.avg_fee_rate} sat/vB`);
    await ctx.metrics.report("blocks_recorded", 1, { kind: "counter" });
    await ctx.metrics.report("last_block_fees_sats", summary.fees, { kind: "gauge" });
    return summary;
  };

  /**
   * The catch-up contract: unwind what left the active chain, then record cursor+1 .. tip, each
   * block only if it builds on the one recorded before it. The chain can change between two of
   * these reads (a reorg while we catch up): a block whose parent is not our cursor means the
   * cursor left the active chain after we checked it, so we unwind again from there.
   */
  const catchUp = async (): Promise<{ recorded: number; unwound: number }> => {
    let unwound = 0;
    let recorded = 0;
    for (;;) {
      let last = await latest();
      while (last) {
        const active = await ctx.chain.getBlockByHeight(last.height, { include_hex: false });
        if (active?.hash === last.hash) break;
        await ctx.storage.delete(TREE, heightKey(last.height));
        ctx.log.warn(`block ${last.height} ${last.hash} is no longer on the active chain; its statistics are removed`);
        unwound++;
        last = await latest();
      }
      const tip = await ctx.chain.getBlockHeight();
      // Bounded by keep_blocks: a module far behind records only the blocks it would keep.
      const from = Math.max(last ? last.height + 1 : 0, tip - keep + 1, 0);
      // The hash the next block must build on; unknown when we skip ahead of the cursor.
      let parent = last && from === last.height + 1 ? last.hash : null;
      let forked = false;
      for (let h = from; h <= tip; h++) {
        const block = await ctx.chain.getBlockByHeight(h, { include_hex: false });
        if (!block) break; // the chain got shorter meanwhile: the event that says so catches up again
        if (parent !== null && block.header.prev_hash !== parent) {
          forked = true;
          break;
        }
        parent = (await record(block)).hash;
        recorded++;
      }
      if (!forked) return { recorded, unwound };
    }
  };
  // One catch-up at a time: events arrive concurrently, and each catch-up goes to the tip.
  let queue: Promise<unknown> = Promise.resolve();
  const sync = (): Promise<{ recorded: number; unwound: number }> => {
    const run = queue.then(catchUp, catchUp);
    queue = run.catch(() => undefined);
    return run;
  };

  const first = await sync();
  ctx.log.info(`tracking blocks; ${first.recorded} caught up, ${first.unwound} unwound`, { tip: await ctx.chain.getBlockHeight() });

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

  // Every chain event is a reason to catch up; the catch-up finds what changed.
  await ctx.events.subscribe("NewBlock", async () => {
    await sync();
  });
  await ctx.events.subscribe("BlockDisconnected", async () => {
    await sync();
  });
  await ctx.events.subscribe("ChainReorg", async (ev) => {
    ctx.log.warn(`reorg at height ${ev.payload.fork_height}: ${ev.payload.disconnected.length} out, ${ev.payload.connected.length} in`);
    await sync();
  });
}

export function stop(): void {
  // Nothing to flush: every write is a committed storage transaction.
}

function heightKey(h: number): string {
  return String(h).padStart(10, "0");
}
