// __NAME__: stores the height and hash of every block of the active chain and serves the last
// one as the RPC method `__NAME__.last`.
//
// It follows the catch-up contract of the module guide ("Catching up"): its highest stored
// block is its cursor. At start and on every NewBlock it first forgets stored blocks that left
// the active chain (a reorg), then stores every block from the cursor to the tip, each only if
// it builds on the one stored before it (a reorg during the catch-up sends it back to
// forgetting), so blocks mined while it was stopped, or whose events were dropped, are stored
// too, each once, and what it stores is one chain.
import type { ModuleContext } from "modhost/sdk";

const TREE = "blocks";

/** What it stores per block (a type alias, so that it is plain data for storage and RPC). */
export type Stored = { height: number; hash: string; txs: number };

/** Zero-padded, so that the tree's key order is height order. */
const key = (height: number): string => String(height).padStart(10, "0");

export default async function start(ctx: ModuleContext): Promise<void> {
  await ctx.storage.openTree(TREE);

  const last = async (): Promise<Stored | null> => {
    const [row] = await ctx.storage.iterate<Stored>(TREE, { reverse: true, limit: 1 });
    return row?.value ?? null;
  };

  const catchUp = async (): Promise<void> => {
    for (;;) {
      let cursor = await last();
      // Unwind: a stored block whose hash is no longer the active chain's at its height.
      while (cursor && (await ctx.chain.getBlockByHeight(cursor.height, { include_hex: false }))?.hash !== cursor.hash) {
        await ctx.storage.delete(TREE, key(cursor.height));
        ctx.log.warn(`block ${cursor.height} left the active chain: forgotten`);
        cursor = await last();
      }
      const tip = await ctx.chain.getBlockHeight();
      // Each block must build on the one stored before it: if not, a reorg replaced the cursor
      // while we were catching up, and we unwind again.
      let parent = cursor?.hash ?? null;
      let forked = false;
      // A first start (no cursor) begins at the tip.
      for (let height = cursor ? cursor.height + 1 : tip; height <= tip; height++) {
        const block = await ctx.chain.getBlockByHeight(height, { include_hex: false });
        if (!block) break;
        if (parent !== null && block.header.prev_hash !== parent) {
          forked = true;
          break;
        }
        await ctx.storage.put(TREE, key(height), { height, hash: block.hash, txs: block.transactions.length } satisfies Stored);
        ctx.log.info(`block ${height} stored: ${block.transactions.length} txs, hash ${block.hash}`);
        parent = block.hash;
      }
      if (!forked) return;
    }
  };

  // One catch-up at a time: events arrive concurrently, and each catch-up goes to the tip.
  let queue: Promise<void> = Promise.resolve();
  const sync = (): Promise<void> => (queue = queue.then(catchUp).catch((err: Error) => ctx.log.error(`catch-up failed: ${err.message}`)));

  await sync();
  await ctx.rpc.register("last", "The last block __NAME__ stored: {height, hash, txs}, or null", () => last());
  await ctx.events.subscribe("NewBlock", () => sync());
}
