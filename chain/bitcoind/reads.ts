// The Bitcoin Core backend's reads (./backend.ts): each ChainBackend read as the Core RPCs that
// answer it, converted to modhost's plain data (./convert.ts). Stateless: the events, the
// tip it announced and the connection state stay in backend.ts, whose `call` every read goes
// through (a lost node marks the backend unavailable there).

import type { Block, BlockHeader, BlockTemplate, ChainInfo, Hex, MempoolEntry, MempoolInfo, MempoolPage, NetworkStats, OutPoint, PeerInfo, Transaction, Utxo } from "../backend.ts";
import { CoreRpcError, RPC_CODES } from "./rpc.ts";
import { bitsFromHex, blockFromHex, chainWorkFromHex, btcPerKvbToSatPerVb, btcToSats, chainName, headerFromHex, templateFromCore, transactionFromHex, type CoreBlockTemplate } from "./convert.ts";
import { coinbaseTransaction } from "../blocks.ts";
import { addressOf, describeTransaction, sha256d } from "../serialise.ts";
import { concatBytes, hexToBytes } from "@noble/hashes/utils.js";
import { merkleRootOf } from "../parse.ts";
import { Slicer } from "../slices.ts";
import { ANSWERS, checked, checkedPeers, checkedTxids } from "./answers.ts";
import { MAX_BLOCK_WEIGHT } from "../validation.ts";

/** Transactions in a template: a block's weight limit over the smallest transaction's weight (60 bytes, 240). */
const MAX_TEMPLATE_TRANSACTIONS = Math.floor(MAX_BLOCK_WEIGHT / 240);

export interface CoreHeader {
  hash: Hex;
  height: number;
  confirmations: number;
  time: number;
  nTx: number;
  previousblockhash?: Hex;
}

export interface CorePeer {
  addr: string;
  transport_protocol_type?: string;
  network?: string;
  services: string;
  version: number;
  conntime: number;
}

export interface CoreMempoolEntry {
  vsize: number;
  time: number;
  fees: { base: number };
}

export abstract class CoreReads {
  /** One Core RPC; the backend's own marks the node unavailable when it cannot be reached. */
  protected abstract call<T>(method: string, params?: unknown[]): Promise<T>;

  /** null for Core's "not found" answers; everything else propagates. */
  protected async orNull<T>(p: Promise<T>): Promise<T | null> {
    try {
      return await p;
    } catch (err) {
      if (err instanceof CoreRpcError && (err.code === RPC_CODES.INVALID_ADDRESS_OR_KEY || err.code === RPC_CODES.INVALID_PARAMETER)) return null;
      throw err;
    }
  }

  /**
   * The last block read, by hash. A module reads a block's transactions a page at a time, each
   * page a getBlock: without it each page fetched and read the whole block again (a block of
   * 15,000 transactions, 39 times for one module's read of it).
   */
  private lastBlock: { hash: Hex; block: Promise<Block | null> } | null = null;

  async getBlock(hash: Hex): Promise<Block | null> {
    return this.blockByHash(hash);
  }

  /** A block by hash, read once for the calls that ask for it together or one after another; `height` when the caller knows it. */
  private blockByHash(hash: Hex, height?: number): Promise<Block | null> {
    if (this.lastBlock?.hash === hash) return this.lastBlock.block;
    const block = (async () => {
      if (height === undefined) {
        const header = await this.orNull(this.call<CoreHeader>("getblockheader", [hash, true]));
        if (!header) return null;
        height = header.height;
      }
      const hex = await this.orNull(this.call<Hex>("getblock", [hash, 0]));
      return hex === null ? null : blockFromHex(hex, height, hash);
    })();
    const entry = { hash, block };
    this.lastBlock = entry;
    // Only a block is kept: a block not found (yet) or a failure is asked again.
    const forget = () => {
      if (this.lastBlock === entry) this.lastBlock = null;
    };
    block.then((b) => b === null && forget(), forget);
    return block;
  }

  async getBlockHeader(hash: Hex): Promise<BlockHeader | null> {
    const header = await this.orNull(this.call<CoreHeader>("getblockheader", [hash, true]));
    if (!header) return null;
    const hex = await this.call<Hex>("getblockheader", [hash, false]);
    return headerFromHex(hex, header.height, hash);
  }

  async getBlockByHeight(height: number): Promise<Block | null> {
    const hash = await this.orNull(this.call<Hex>("getblockhash", [height]));
    return hash === null ? null : this.blockByHash(hash, height);
  }

  async getTransaction(txid: Hex): Promise<Transaction | null> {
    const hex = await this.orNull(this.call<Hex>("getrawtransaction", [txid, false]));
    return hex === null ? null : transactionFromHex(hex, txid);
  }

  async hasTransaction(txid: Hex): Promise<boolean> {
    return (await this.orNull(this.call<Hex>("getrawtransaction", [txid, false]))) !== null;
  }

  async getChainTip(): Promise<Hex> {
    return checked("getbestblockhash", ANSWERS.getbestblockhash, await this.call("getbestblockhash"));
  }

  async getBlockHeight(): Promise<number> {
    return checked("getblockcount", ANSWERS.getblockcount, await this.call("getblockcount"));
  }

  async getUtxo(outpoint: OutPoint): Promise<Utxo | null> {
    const out = checked("gettxout", ANSWERS.gettxout, await this.orNull(this.call("gettxout", [outpoint.txid, outpoint.vout, false])));
    if (!out) return null;
    const height = (await this.getBlockHeight()) - out.confirmations + 1;
    return {
      txid: outpoint.txid,
      vout: outpoint.vout,
      value: btcToSats(out.value),
      script_pubkey: out.scriptPubKey.hex,
      address: addressOf(hexToBytes(out.scriptPubKey.hex)),
      height,
      coinbase: out.coinbase,
    };
  }

  async getChainInfo(): Promise<ChainInfo> {
    const info = checked("getblockchaininfo", ANSWERS.getblockchaininfo, await this.call("getblockchaininfo"));
    const bits = info.bits ?? checked("getblockheader", ANSWERS.headerBits, await this.call("getblockheader", [info.bestblockhash, true])).bits;
    return {
      chain: chainName(info.chain),
      tip_hash: info.bestblockhash,
      height: info.blocks,
      bits: bitsFromHex(bits),
      difficulty: info.difficulty,
      chain_work: chainWorkFromHex(info.chainwork),
      median_time: info.mediantime,
      is_synced: !info.initialblockdownload,
    };
  }

  async getMempoolTransactions(): Promise<Hex[]> {
    return checkedTxids(await this.call("getrawmempool", [false]));
  }

  /** Core has no paged mempool listing: each page reads the whole list and answers a slice of it, by position. */
  async getMempoolPage(after: number, limit: number): Promise<MempoolPage> {
    const txids = await this.getMempoolTransactions();
    const end = Math.min(txids.length, after + limit);
    return { txids: txids.slice(after, end), next_after: end < txids.length ? end : null, count: txids.length, order: "position" };
  }

  async getMempoolTransaction(txid: Hex): Promise<Transaction | null> {
    if (!(await this.isInMempool(txid))) return null;
    return this.getTransaction(txid);
  }

  async getMempoolEntry(txid: Hex): Promise<MempoolEntry | null> {
    const answer = await this.orNull(this.call("getmempoolentry", [txid]));
    if (answer === null) return null;
    const entry = checked("getmempoolentry", ANSWERS.getmempoolentry, answer);
    const fee = btcToSats(entry.fees.base);
    return { txid, fee, vsize: entry.vsize, fee_rate: fee / entry.vsize, time: entry.time };
  }

  async getMempoolInfo(): Promise<MempoolInfo> {
    const info = checked("getmempoolinfo", ANSWERS.getmempoolinfo, await this.call("getmempoolinfo"));
    return { transaction_count: info.size, size_bytes: info.bytes, total_fee_sats: btcToSats(info.total_fee) };
  }

  async isInMempool(txid: Hex): Promise<boolean> {
    return (await this.orNull(this.call<CoreMempoolEntry>("getmempoolentry", [txid]))) !== null;
  }

  async estimateFee(targetBlocks: number): Promise<number> {
    const est = checked("estimatesmartfee", ANSWERS.estimatesmartfee, await this.call("estimatesmartfee", [Math.max(1, Math.min(1008, Math.floor(targetBlocks)))]));
    // Core has no estimate until it has seen enough blocks: fall back to the minimum relay fee rate.
    return est.feerate === undefined ? 1 : Math.max(1, btcPerKvbToSatPerVb(est.feerate));
  }

  async getNetworkStats(): Promise<NetworkStats> {
    const [net, totals, hashps] = await Promise.all([
      this.call("getnetworkinfo").then((a) => checked("getnetworkinfo", ANSWERS.getnetworkinfo, a)),
      this.call("getnettotals").then((a) => checked("getnettotals", ANSWERS.getnettotals, a)),
      this.call("getnetworkhashps").then((a) => checked("getnetworkhashps", ANSWERS.getnetworkhashps, a)),
    ]);
    return { peer_count: net.connections, hash_rate: hashps, bytes_sent: totals.totalbytessent, bytes_received: totals.totalbytesrecv };
  }

  async getPeers(): Promise<PeerInfo[]> {
    const peers = checkedPeers(await this.call("getpeerinfo"));
    return peers.map((p) => ({
      addr: p.addr,
      transport_type: p.transport_protocol_type ?? p.network ?? "unknown",
      services: Number.parseInt(p.services, 16) || 0,
      version: p.version,
      connected_since: p.conntime,
    }));
  }

  // ---- mining ----

  async getBlockTemplate(opts: { coinbaseScript?: Hex } = {}): Promise<BlockTemplate> {
    const t = await this.call<CoreBlockTemplate>("getblocktemplate", [{ rules: ["segwit"] }]);
    // Checked before any work on them: a block holds at most MAX_TEMPLATE_TRANSACTIONS.
    const count = Array.isArray(t?.transactions) ? t.transactions.length : -1;
    if (count < 0 || count > MAX_TEMPLATE_TRANSACTIONS) {
      throw new CoreRpcError("getblocktemplate", RPC_CODES.MISC_ERROR, `the node's template holds ${count < 0 ? "no list of" : count} transactions, not 0 to ${MAX_TEMPLATE_TRANSACTIONS} (MAX_TEMPLATE_TRANSACTIONS, as many as a block can hold)`);
    }
    const template = templateFromCore(t);
    if (opts.coinbaseScript !== undefined) {
      const wtxids = t.transactions.map((tx) => tx.hash);
      // The BIP141 commitment's merkle root in slices, as the embedded chain makes it: for a
      // node's 200,000 wtxids it took 1.35 s of one turn.
      const commitment = sha256d(concatBytes(await merkleRootOf(["00".repeat(32), ...wtxids], new Slicer()), new Uint8Array(32)));
      const coinbase = describeTransaction(coinbaseTransaction(t.height, Math.floor(Math.random() * 0xffffffff), t.coinbasevalue, hexToBytes(opts.coinbaseScript), wtxids, commitment));
      template.coinbase_tx = { txid: coinbase.txid, hex: coinbase.hex };
    }
    return template;
  }

}
