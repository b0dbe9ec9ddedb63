// Chain data: blocks, headers, transactions, the UTXO set and the chain state, read from the
// chain backend. Read-only by construction: the backend interface has no way to change
// consensus state.
import * as v from "valibot";
import { pageOf } from "./pages.ts";
import { answerTxOrNull, answerTxs } from "./tx-form.ts";
import { method, type Family, type MethodPages } from "./types.ts";
import { Block, BlockHeader, ChainInfo, Hex, LightBlock, Transaction, Utxo, hash, height, none, u64, vout } from "./schemas.ts";

/** get_block's option: false for the lighter form without raw hex (default true). */
const include_hex = v.optional(v.boolean("include_hex must be true or false"));
/** Where the page of a block's transactions starts (default 0: the first, with the block's raw hex). */
const tx_offset = v.optional(v.pipe(v.number(), v.integer("tx_offset must be an integer"), v.minValue(0, "tx_offset must be 0 or more")));
/** A block's transactions come a page at a time (capabilities/pages.ts); the SDKs join them. */
const txPages: MethodPages = { cursor: "tx_offset", items: "transactions", next: "next_tx_offset", same: "hash" };

type Txs = Parameters<typeof answerTxs>[0];

/**
 * The page of `block` that starts at transaction `offset`, with tx_count and next_tx_offset;
 * a transaction too wide for one message in its reduced form (capabilities/tx-form.ts).
 */
function blockPage<B extends { transactions: Txs }>(block: B | null, offset: number | undefined): (B & { tx_count: number; next_tx_offset: number | null }) | null {
  if (block === null) return null;
  const whole = () => ({ ...block, transactions: answerTxs(block.transactions), tx_count: block.transactions.length, next_tx_offset: null });
  return pageOf(Object.isFrozen(block) ? frozenWhole(block, whole) : whole(), "transactions", offset ?? 0, "next_tx_offset", ["hex"]);
}

/** One answer object per frozen block, made on its first read, so that its pages are built (and encoded) once. */
const wholes = new WeakMap<object, object>();
function frozenWhole<B extends object, W extends object>(block: B, whole: () => W): W {
  let w = wholes.get(block) as W | undefined;
  if (!w) wholes.set(block, (w = Object.freeze(whole())));
  return w;
}

export const chain: Family = {
  name: "chain",
  summary: "Read blocks, transactions, UTXOs and chain state.",
  methods: [
    method({ name: "get_block", result: v.nullable(v.union([Block, LightBlock])), handWritten: { ts: "overloads: include_hex: false answers a LightBlock", rust: "one Block struct for both forms (get_block_with: the hex fields are then empty)" }, js: "getBlock", permission: "read_blockchain", args: ["hash", "options"], params: v.object({ hash, include_hex, tx_offset }), pages: txPages, summary: "Block by hash, or null; include_hex = false leaves out the raw hex of the block, header and transactions. One answer carries a page of the transactions (tx_offset, next_tx_offset); the SDKs read them all.", handler: async (c, p) => blockPage(await c.chain.getBlock(p.hash, { includeHex: p.include_hex ?? true }), p.tx_offset) }),
    method({ name: "get_block_header", result: v.nullable(BlockHeader), js: "getBlockHeader", permission: "read_blockchain", args: ["hash"], params: v.object({ hash }), summary: "Block header by hash, or null.", handler: (c, p) => c.chain.getBlockHeader(p.hash) }),
    method({ name: "get_block_by_height", result: v.nullable(v.union([Block, LightBlock])), handWritten: { ts: "overloads: include_hex: false answers a LightBlock", rust: "one Block struct for both forms (get_block_by_height_with: the hex fields are then empty)" }, js: "getBlockByHeight", permission: "read_blockchain", args: ["height", "options"], params: v.object({ height, include_hex, tx_offset }), pages: txPages, summary: "Block of the active chain at a height, or null; include_hex and pages as for get_block.", handler: async (c, p) => blockPage(await c.chain.getBlockByHeight(p.height, { includeHex: p.include_hex ?? true }), p.tx_offset) }),
    method({ name: "get_transaction", result: v.nullable(Transaction), js: "getTransaction", permission: "read_blockchain", args: ["txid"], params: v.object({ txid: hash }), summary: "Confirmed or mempool transaction by txid, or null.", handler: async (c, p) => answerTxOrNull(await c.chain.getTransaction(p.txid)) }),
    method({ name: "has_transaction", result: v.boolean(), js: "hasTransaction", permission: "read_blockchain", args: ["txid"], params: v.object({ txid: hash }), summary: "Whether a transaction is known.", handler: (c, p) => c.chain.hasTransaction(p.txid) }),
    method({ name: "get_chain_tip", result: Hex, js: "getChainTip", permission: "read_chain_state", args: [], params: none, summary: "Hash of the active chain's tip.", handler: (c) => c.chain.chainTipNow?.() ?? c.chain.getChainTip() }),
    method({ name: "get_block_height", result: u64, js: "getBlockHeight", permission: "read_chain_state", args: [], params: none, summary: "Height of the active chain's tip.", handler: (c) => c.chain.blockHeightNow?.() ?? c.chain.getBlockHeight() }),
    method({ name: "get_chain_info", result: ChainInfo, js: "getChainInfo", permission: "read_chain_state", args: [], params: none, summary: "Chain name, tip, height, difficulty, chain work.", handler: (c) => c.chain.getChainInfo() }),
    method({ name: "get_utxo", result: v.nullable(Utxo), js: "getUtxo", permission: "read_utxo", args: ["txid", "vout"], params: v.object({ txid: hash, vout }), summary: "Unspent output by outpoint, or null.", handler: (c, p) => c.chain.getUtxo({ txid: p.txid, vout: p.vout }) }),
  ],
};
