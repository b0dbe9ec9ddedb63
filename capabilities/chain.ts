// Chain data: blocks, headers, transactions, the UTXO set and the chain state, read from the
// chain backend. Read-only by construction: the backend interface has no way to change
// consensus state.
import * as v from "valibot";
import { method, type Family } from "./types.ts";
import { hash, height, none, vout } from "./schemas.ts";

export const chain: Family = {
  name: "chain",
  summary: "Read blocks, transactions, UTXOs and chain state.",
  methods: [
    method({ name: "get_block", js: "getBlock", permission: "read_blockchain", args: ["hash"], params: v.object({ hash }), summary: "Block by hash, or null.", handler: (c, p) => c.chain.getBlock(p.hash) }),
    method({ name: "get_block_header", js: "getBlockHeader", permission: "read_blockchain", args: ["hash"], params: v.object({ hash }), summary: "Block header by hash, or null.", handler: (c, p) => c.chain.getBlockHeader(p.hash) }),
    method({ name: "get_block_by_height", js: "getBlockByHeight", permission: "read_blockchain", args: ["height"], params: v.object({ height }), summary: "Block of the active chain at a height, or null.", handler: (c, p) => c.chain.getBlockByHeight(p.height) }),
    method({ name: "get_transaction", js: "getTransaction", permission: "read_blockchain", args: ["txid"], params: v.object({ txid: hash }), summary: "Confirmed or mempool transaction by txid, or null.", handler: (c, p) => c.chain.getTransaction(p.txid) }),
    method({ name: "has_transaction", js: "hasTransaction", permission: "read_blockchain", args: ["txid"], params: v.object({ txid: hash }), summary: "Whether a transaction is known.", handler: (c, p) => c.chain.hasTransaction(p.txid) }),
    method({ name: "get_chain_tip", js: "getChainTip", permission: "read_chain_state", args: [], params: none, summary: "Hash of the active chain's tip.", handler: (c) => c.chain.getChainTip() }),
    method({ name: "get_block_height", js: "getBlockHeight", permission: "read_chain_state", args: [], params: none, summary: "Height of the active chain's tip.", handler: (c) => c.chain.getBlockHeight() }),
    method({ name: "get_chain_info", js: "getChainInfo", permission: "read_chain_state", args: [], params: none, summary: "Chain name, tip, height, difficulty, chain work.", handler: (c) => c.chain.getChainInfo() }),
    method({ name: "get_utxo", js: "getUtxo", permission: "read_utxo", args: ["txid", "vout"], params: v.object({ txid: hash, vout }), summary: "Unspent output by outpoint, or null.", handler: (c, p) => c.chain.getUtxo({ txid: p.txid, vout: p.vout }) }),
  ],
};
