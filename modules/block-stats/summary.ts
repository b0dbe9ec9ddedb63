// Statistics of one block, computed from the block alone.
import type { LightBlock } from "modhost/sdk";

// A type alias (not an interface) so that it is assignable to the SDK's Plain.
export type BlockSummary = {
  height: number;
  hash: string;
  time: number;
  tx_count: number;
  size: number;
  weight: number;
  /** Sum of fees of the non-coinbase transactions, from the coinbase's claim. */
  fees: number;
  avg_fee_rate: number;
};

const subsidy = (height: number): number => Math.floor(50e8 / 2 ** Math.floor(height / 150));

export function summarise(block: LightBlock): BlockSummary {
  const coinbase = block.transactions[0];
  const claimed = coinbase ? coinbase.outputs.reduce((s, o) => s + o.value, 0) : 0;
  const fees = Math.max(0, claimed - subsidy(block.height));
  // Average fee rate (sat/vB) over the non-coinbase transactions.
  const spendWeight = block.transactions.slice(1).reduce((s, t) => s + t.vsize, 0);
  return {
    height: block.height,
    hash: block.hash,
    time: block.header.time,
    tx_count: block.transactions.length,
    size: block.size,
    weight: block.weight,
    fees,
    avg_fee_rate: spendWeight ? Math.round((fees / spendWeight) * 10) / 10 : 0,
  };
}
