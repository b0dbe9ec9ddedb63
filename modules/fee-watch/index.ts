// fee-watch: at every block, record the fee estimates for the configured confirmation targets
// and the mempool size next to what block-stats (a dependency) says about the block; warn
// when the mempool gets busy.
//
// It follows the catch-up contract (docs/module-guide.md): each entry stores the block hash,
// and its highest entry is its cursor. On a new block (and at start) it first unwinds entries
// of blocks no longer on the active chain, then fills the heights between its cursor and the
// block, each entry only if its block builds on the entry before (a reorg meanwhile sends it
// back to unwinding), so what it keeps is one chain. Estimates are a property of the moment: for blocks mined while it was stopped (or
// whose events it missed) it records an entry marked `missed` without estimates, so its
// record has no silent gaps and never invents figures.
import type { ModuleContext } from "modhost/sdk";

const TREE = "estimates";

type Entry = {
  hash: string;
  estimates: Record<string, number> | null;
  paid_avg_fee_rate: number | null;
  mempool: number | null;
  time: number;
  missed?: boolean;
};

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

  const cursor = async (): Promise<{ height: number; hash: string } | null> => {
    const [last] = await ctx.storage.iterate<Entry>(TREE, { reverse: true, limit: 1 });
    return last ? { height: Number(last.key), hash: last.value.hash } : null;
  };

  /** Remove entries of blocks that left the active chain; returns the cursor that remains. */
  const unwind = async (): Promise<{ height: number; hash: string } | null> => {
    let last = await cursor();
    while (last && (await ctx.chain.getBlockByHeight(last.height, { include_hex: false }))?.hash !== last.hash) {
      await ctx.storage.delete(TREE, key(last.height));
      ctx.log.warn(`block ${last.height} left the active chain; its entry is removed`);
      last = await cursor();
    }
    return last;
  };

  /**
   * Entries without estimates for the blocks after `cursor` up to height `to` (blocks we did not
   * see arrive), each only if it builds on the entry before it. Returns the hash of the last
   * entry, or null when the chain changed meanwhile: a reorg replaced the cursor, or the chain
   * is now shorter than `to` (the caller unwinds again, or gives up a stale event).
   */
  const markMissed = async (cursor: { height: number; hash: string }, to: number): Promise<string | null> => {
    let parent = cursor.hash;
    for (let h = cursor.height + 1; h <= to; h++) {
      const block = await ctx.chain.getBlockByHeight(h, { include_hex: false });
      if (!block || block.header.prev_hash !== parent) return null;
      await ctx.storage.put(TREE, key(h), { hash: block.hash, estimates: null, paid_avg_fee_rate: null, mempool: null, time: block.header.time, missed: true } satisfies Entry);
      parent = block.hash;
    }
    if (to > cursor.height) ctx.log.warn(`blocks ${cursor.height + 1}..${to} arrived while fee-watch was not watching; recorded without estimates`);
    return parent;
  };

  const onBlock = async (height: number, hash: string, time: number): Promise<void> => {
    for (;;) {
      const last = await unwind();
      if (last && last.height >= height) return; // already recorded (a replayed or late event)
      const parent = last ? await markMissed(last, height - 1) : null;
      if (last && parent === null) {
        // The chain changed while we filled the gap: unwind again, unless the event's block
        // is gone (a reorg to a shorter chain), whose own events say what came instead.
        if ((await ctx.chain.getBlockHeight()) < height) return;
        continue;
      }
      // The event's block must still be on the active chain, on top of what we recorded: if a
      // reorg replaced it, the reorg's own NewBlock events record its replacements.
      const block = await ctx.chain.getBlockByHeight(height, { include_hex: false });
      if (block?.hash !== hash) return;
      if (parent !== null && block.header.prev_hash !== parent) continue;
      const estimates: Record<string, number> = {};
      for (const t of targets) estimates[t] = await ctx.mempool.estimateFee(t);
      const size = await ctx.mempool.getSize();
      // What the block actually paid, from block-stats' API (it may lag a block behind, or be
      // restarting: then we record the estimates alone).
      const paid = await ctx.modules.call<{ height: number; avg_fee_rate: number } | null>("block-stats", "latest").catch(() => null);
      const paidRate = paid && paid.height === height ? paid.avg_fee_rate : null;
      await ctx.storage.put(TREE, key(height), { hash, estimates, paid_avg_fee_rate: paidRate, mempool: size.transaction_count, time } satisfies Entry);
      warned = size.transaction_count > busy;
      const paidText = paidRate === null ? "" : `; the block paid avg ${paidRate} sat/vB`;
      ctx.log.info(`height ${height}: ${targets.map((t) => `${t}-block ${estimates[t]} sat/vB`).join(", ")}; mempool ${size.transaction_count} txs${paidText}`);
      return;
    }
  };

  // One block at a time, in arrival order.
  let queue: Promise<unknown> = Promise.resolve();
  const serial = (fn: () => Promise<void>): Promise<void> => {
    const run = queue.then(fn, fn);
    queue = run.catch(() => undefined);
    return run;
  };

  // Catch up with blocks mined while we were stopped (without estimates: they are past).
  await serial(async () => {
    for (;;) {
      const last = await unwind();
      if (!last || (await markMissed(last, await ctx.chain.getBlockHeight())) !== null) return;
    }
  });

  await ctx.events.subscribe("NewBlock", (ev) => serial(() => onBlock(ev.payload.height, ev.payload.hash, ev.payload.time)));

  await ctx.events.subscribe("ModuleLoaded", (ev) => {
    if (ev.payload.module === "block-stats") ctx.log.info(`block-stats ${ev.payload.version} is running`);
  });
}

function key(height: number): string {
  return String(height).padStart(10, "0");
}
