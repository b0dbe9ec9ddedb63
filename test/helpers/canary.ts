// The check the hostile tests make while an attack runs: a block is mined, the canary module
// ("good", test/fixtures/modules/good) must store it within 5 s, and the host's RPC server must
// answer `list` within 5 s. One round; the tests count the rounds that failed.

import { sleep, type TestHost } from "./host.ts";
import { call } from "./rpc.ts";

export interface CanaryRound {
  /** h.mark() before the block was mined: the round's log records start there. */
  mark: number;
  height: number;
  /** The canary stored the block within 5 s. */
  stored: boolean;
  /** The RPC server answered `list` within 5 s (true when not asked). */
  answered: boolean;
}

/** `mine`: how the round's block is mined (default h.mine(1): filled from the mempool); the new height. */
export async function canaryRound(h: TestHost, opts: { rpc?: boolean; mine?: () => Promise<number> } = {}): Promise<CanaryRound> {
  const mark = h.mark();
  const height = await (opts.mine ?? (() => h.mine(1)))();
  const stored = await h.waitForLog(new RegExp(`^stored block ${height}$`), { source: "good", since: mark, timeoutMs: 5000 }).then(() => true, () => false);
  const answered = opts.rpc === false || (await Promise.race([call(h, "list").then(() => true, () => false), sleep(5000).then(() => false)]));
  return { mark, height, stored, answered };
}

/**
 * For canaryRound's `mine` while a probe submits blocks of its own: the next block the chain
 * takes, the canary mining one only when none came for `quietMs`. Mined on a fixed beat, the
 * canary's blocks beat every large block a probe was still building or the host still reading at
 * load 20+ (not-on-tip), and the probe never got its blocks in.
 */
export async function mineWhenIdle(h: TestHost, quietMs = 15_000): Promise<number> {
  const before = await h.chain.getBlockHeight();
  const until = Date.now() + quietMs;
  while (Date.now() < until) {
    await sleep(250);
    const now = await h.chain.getBlockHeight();
    if (now !== before) return now;
  }
  return h.mine(1);
}
