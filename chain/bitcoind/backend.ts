// One file: the queue of notices, the sync of blocks and mempool and the connection state share
// the known window and the tip, and are read together to see that no block is missed or
// announced twice.
//
// The Bitcoin Core backend: modules read a real node through bitcoind's JSON-RPC, and learn
// of blocks and mempool changes through its ZMQ `sequence` topic.
//
// Never a missed block, never a block twice. The backend remembers the hashes it announced
// for the last KNOWN_WINDOW heights. Whatever wakes it up (a ZMQ notice, a gap in ZMQ's
// sequence numbers, a reconnect, the safety-net poll), it does the same thing: ask the node
// for its best block, find the fork point by comparing the node's hash at each height with
// the one it announced, and emit what changed, in the embedded chain's order:
// BlockDisconnected for each block it announced above the fork point (tip first),
// MempoolTransactionRemoved ("block") then NewBlock for each new block (lowest first), and
// ChainReorg when anything was disconnected. Work is done one item at a time, in arrival
// order, from a bounded queue; a full queue is dropped and replaced by one resync.
//
// Connection loss. A call that cannot reach the node marks the backend unavailable
// (ChainBackendUnavailable, once), and every request fails with `backend_unavailable` until a
// reconnect loop with backoff reaches the node again, resyncs blocks and mempool, and emits
// ChainBackendRestored. Nothing throws out of the backend's own loops.
//
// What it needs from the node: the RPCs in REQUIRED_RPCS (no wallet, no `stop`; see
// `modhost bitcoind-config`), `txindex=1` to find confirmed transactions by txid (without it
// get_transaction sees only the mempool and blocks the caller names), and `zmqpubsequence`
// for prompt events (without it the backend polls).
//
// The reads (each ChainBackend read as the Core RPCs that answer it) are ./reads.ts, which
// this class extends; this file keeps the events, the connection state and submission.

import type { ChainBackend, ChainEventName, ChainEvents, ChainListener, Hex, SubmitBlockResult } from "../backend.ts";
import { BackendUnavailableError } from "../backend.ts";
import { CoreRpc, CoreRpcError, CoreRpcRefused, type CoreAuth } from "./rpc.ts";
import { parseSequenceBody, SequenceTracker, ZmqListener, type ZmqMessage } from "./zmq.ts";
import { btcToSats, chainName, checkedHeader, headerFromHex } from "./convert.ts";
import { CoreReads, type CoreHeader, type CoreMempoolEntry, type CorePeer } from "./reads.ts";
import { limitWarnings } from "./warnings.ts";
import { Slicer } from "../slices.ts";

const TXID = /^[0-9a-f]{64}$/;

/** Every RPC the backend calls: what a node's rpcwhitelist must allow for modhost. */
export const REQUIRED_RPCS = [
  "getblockchaininfo",
  "getbestblockhash",
  "getblockcount",
  "getblockhash",
  "getblockheader",
  "getblock",
  "getrawtransaction",
  "gettxout",
  "getrawmempool",
  "getmempoolentry",
  "getmempoolinfo",
  "estimatesmartfee",
  "getnetworkinfo",
  "getnettotals",
  "getnetworkhashps",
  "getpeerinfo",
  "getblocktemplate",
  "submitblock",
  "sendrawtransaction",
] as const;

export interface BitcoindBackendOptions {
  rpcUrl: string;
  auth: CoreAuth;
  /** ZMQ endpoint of the node's zmqpubsequence, e.g. tcp://127.0.0.1:28332; none: poll only. */
  zmqSequence?: string;
  /** Safety-net poll of the best block; default 1 s without ZMQ, 30 s with it. */
  pollIntervalMs?: number;
  /** Per RPC call; default 30 s. */
  rpcTimeoutMs?: number;
  /** Follow the mempool (MempoolTransactionAdded/Removed); default true. */
  trackMempool?: boolean;
  /** Most mempool transactions followed (a node's mempool can hold hundreds of thousands); default 100 000. */
  maxTrackedMempool?: number;
  /** Reconnect backoff bounds; defaults 500 ms and 30 s. */
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** Warnings (refused RPCs, dropped notices, lost ZMQ messages). */
  warn?: (message: string, fields?: Record<string, unknown>) => void;
}

/** How many announced heights are remembered to find fork points. */
const KNOWN_WINDOW = 2016;
/**
 * Blocks one sync step reads and announces; the rest are the next step's, queued behind what
 * came meanwhile. Before, a step read every height from the fork to the node's best before it
 * announced any, holding every header: a node claiming a tip at height 2^31 (or a real node far
 * ahead) had it read without end and announce nothing.
 */
const MAX_BLOCKS_PER_SYNC = KNOWN_WINDOW;
/** Work items waiting; past it the queue is replaced by one resync. */
const MAX_QUEUE = 10_000;

type Work = { kind: "blocks" } | { kind: "peers" } | { kind: "mempool-resync" } | { kind: "tx-added"; txid: Hex } | { kind: "tx-removed"; txid: Hex };

export class BitcoindBackend extends CoreReads implements ChainBackend {
  readonly name = "bitcoind";
  private readonly rpc: CoreRpc;
  private readonly listeners = new Set<ChainListener>();
  private readonly known = new Map<number, Hex>();
  private tipHeight = -1;
  private tipHash: Hex = "";
  private readonly mempool = new Set<Hex>();
  /** Peers seen at the last getpeerinfo (PeerConnected / PeerDisconnected come from the difference). */
  private peers: Set<string> | null = null;
  private readonly queue: Work[] = [];
  private working = false;
  private closed = false;
  private unavailableSince: number | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private pollTimer: NodeJS.Timeout | null = null;
  private zmq: ZmqListener | null = null;
  private readonly zmqSeq = new SequenceTracker();
  private readonly warn: ReturnType<typeof limitWarnings>;
  private readonly trackMempool: boolean;
  private readonly maxTrackedMempool: number;
  /** Methods the node refused (rpcwhitelist), found at start. */
  refused: string[] = [];

  private constructor(private readonly opts: BitcoindBackendOptions) {
    super();
    this.rpc = new CoreRpc({ url: opts.rpcUrl, auth: opts.auth, ...(opts.rpcTimeoutMs !== undefined ? { timeoutMs: opts.rpcTimeoutMs } : {}) });
    this.warn = limitWarnings(opts.warn ?? (() => {}));
    this.trackMempool = opts.trackMempool ?? true;
    this.maxTrackedMempool = opts.maxTrackedMempool ?? 100_000;
  }

  /** Connects (the node must answer now), checks the whitelist, and starts following the node. */
  static async create(opts: BitcoindBackendOptions): Promise<BitcoindBackend> {
    const backend = new BitcoindBackend(opts);
    await backend.init();
    return backend;
  }

  private async init(): Promise<void> {
    const info = await this.rpc.call<{ chain: string; bestblockhash: Hex; blocks: number }>("getblockchaininfo");
    chainName(info.chain); // a chain modhost does not know is refused here, not later
    this.refused = await this.probeWhitelist();
    if (this.refused.length > 0) {
      this.warn(
        `the node's rpcwhitelist refuses ${this.refused.length} RPC(s) modhost uses: ${this.refused.join(", ")}; the capabilities that need them fail until they are allowed (modhost bitcoind-config prints a complete rpcwhitelist line)`,
        { refused: this.refused.join(",") },
      );
    }
    await this.adoptTip();
    if (this.trackMempool) await this.resyncMempool(false);
    if (this.opts.zmqSequence) {
      this.zmq = new ZmqListener({
        endpoint: this.opts.zmqSequence,
        topic: "sequence",
        onMessage: (msg) => this.onZmq(msg),
        onError: (err) => this.warn(`ZMQ ${this.opts.zmqSequence}: ${err.message}`),
      });
      this.zmq.start();
    }
    const poll = this.opts.pollIntervalMs ?? (this.opts.zmqSequence ? 30_000 : 1000);
    await this.syncPeers();
    this.pollTimer = setInterval(() => {
      this.enqueue({ kind: "blocks" });
      this.enqueue({ kind: "peers" });
      if (!this.opts.zmqSequence && this.trackMempool) this.enqueue({ kind: "mempool-resync" });
    }, poll);
    this.pollTimer.unref();
  }

  /** ZMQ notifications read so far (at most ZMQ_NOTICES_PER_SECOND a second). */
  get zmqReceived(): number {
    return this.zmq?.received ?? 0;
  }

  /** Call each required RPC in a way that has no effect; collect the ones refused with HTTP 403. */
  private async probeWhitelist(): Promise<string[]> {
    const refused: string[] = [];
    for (const method of REQUIRED_RPCS) {
      try {
        // With no parameters, methods that need some answer with their help text (an error)
        // without doing anything; the rest are reads. Only a 403 means "not allowed".
        await this.rpc.call(method, method === "getblocktemplate" ? [{ rules: ["segwit"] }] : []);
      } catch (err) {
        if (err instanceof CoreRpcRefused && err.status === 403) refused.push(method);
        else if (err instanceof CoreRpcRefused && err.status === 404) refused.push(`${method} (unknown to this node)`);
      }
    }
    return refused;
  }

  /** Take the node's current tip as already announced (modules catch up from their own state). */
  private async adoptTip(): Promise<void> {
    const best = await this.rpc.call<Hex>("getbestblockhash");
    const header = await this.header(best);
    this.known.clear();
    this.tipHash = header.hash;
    this.tipHeight = header.height;
    this.known.set(header.height, header.hash);
    // Remember a few heights below the tip so that a shallow reorg right after start is seen
    // as a reorg: the fork point must be among the known hashes.
    let h: CoreHeader = header;
    for (let i = 0; i < 12 && h.previousblockhash; i++) {
      h = await this.header(h.previousblockhash);
      this.known.set(h.height, h.hash);
    }
  }

  // ---- The work queue: notices, polls and resyncs, one at a time in arrival order ----

  private onZmq(msg: ZmqMessage): void {
    const lost = this.zmqSeq.observe(msg.sequence);
    if (lost > 0) {
      this.warn(`lost ${lost} ZMQ notification(s) from ${this.opts.zmqSequence}; resyncing by RPC`, { lost });
      this.enqueue({ kind: "blocks" });
      if (this.trackMempool) this.enqueue({ kind: "mempool-resync" });
    }
    let notice: ReturnType<typeof parseSequenceBody>;
    try {
      notice = parseSequenceBody(msg.body);
    } catch (err) {
      this.warn(`ignored a malformed ZMQ sequence notification: ${(err as Error).message}`);
      return;
    }
    if (notice.label === "C" || notice.label === "D") this.enqueue({ kind: "blocks" });
    else if (this.trackMempool) this.enqueue(notice.label === "A" ? { kind: "tx-added", txid: notice.hash } : { kind: "tx-removed", txid: notice.hash });
  }

  private enqueue(work: Work): void {
    if (this.closed) return;
    // Consecutive syncs of the same kind do the same work: one is enough. Not the one in
    // progress (the queue's first while draining): it may have read the node before this notice.
    const last = this.working && this.queue.length === 1 ? undefined : this.queue.at(-1);
    if ((work.kind === "blocks" || work.kind === "peers" || work.kind === "mempool-resync") && last?.kind === work.kind) return;
    if (this.queue.length >= MAX_QUEUE) {
      this.warn(`more than ${MAX_QUEUE} chain notices waiting; replacing them with one resync`);
      // Not the one in progress: drain takes it off the queue's front once it is done.
      this.queue.length = this.working ? 1 : 0;
      this.queue.push({ kind: "blocks" });
      if (this.trackMempool) this.queue.push({ kind: "mempool-resync" });
      return;
    }
    this.queue.push(work);
    if (!this.working && this.unavailableSince === null) void this.drain();
  }

  private async drain(): Promise<void> {
    this.working = true;
    try {
      while (this.queue.length > 0 && !this.closed && this.unavailableSince === null) {
        const work = this.queue[0]!;
        try {
          await this.perform(work);
          this.queue.shift();
        } catch (err) {
          if (err instanceof BackendUnavailableError) {
            this.markUnavailable(err.message);
            return;
          }
          this.queue.shift();
          this.warn(`chain sync step ${work.kind} failed: ${(err as Error).message}`);
        }
      }
    } finally {
      this.working = false;
    }
  }

  private async perform(work: Work): Promise<void> {
    switch (work.kind) {
      case "blocks":
        return this.syncBlocks();
      case "mempool-resync":
        return this.resyncMempool(true);
      case "peers":
        return this.syncPeers();
      case "tx-added":
        return this.txAdded(work.txid);
      case "tx-removed":
        if (this.mempool.delete(work.txid)) this.emit("MempoolTransactionRemoved", { txid: work.txid, reason: "other" });
        return;
    }
  }

  /** Bring the announced chain to the node's best chain, emitting what changed. */
  private async syncBlocks(): Promise<void> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const best = await this.rpc.call<Hex>("getbestblockhash");
      if (best === this.tipHash) return;
      const bestHeader = await this.header(best);
      // The fork point: the highest height at or below both tips where the node's hash is the one we announced.
      let fork = Math.min(bestHeader.height, this.tipHeight);
      const lowest = Math.min(...this.known.keys());
      while (fork >= lowest) {
        const ours = this.known.get(fork);
        if (ours !== undefined && ours === (await this.rpc.call<Hex>("getblockhash", [fork]))) break;
        fork--;
      }
      if (fork < lowest) {
        this.warn(`the node reorganised deeper than the ${KNOWN_WINDOW} blocks modhost remembers; announcing from height ${lowest}`);
        fork = lowest - 1;
      }
      // The new branch, lowest first, checked link by link against a reorg happening meanwhile,
      // MAX_BLOCKS_PER_SYNC of it in this step.
      const connected: CoreHeader[] = [];
      let prev = fork >= lowest ? this.known.get(fork) : undefined;
      let consistent = true;
      const last = Math.min(bestHeader.height, fork + MAX_BLOCKS_PER_SYNC);
      for (let h = fork + 1; h <= last; h++) {
        const header = await this.header(await this.rpc.call<Hex>("getblockhash", [h]), h);
        if (prev !== undefined && header.previousblockhash !== prev) {
          consistent = false;
          break;
        }
        connected.push(header);
        prev = header.hash;
      }
      // The node moved on: look again.
      if (!consistent || (last === bestHeader.height && connected.at(-1)?.hash !== bestHeader.hash)) continue;

      const oldTip = this.tipHash;
      const disconnected: Hex[] = [];
      for (let h = this.tipHeight; h > fork; h--) {
        const hash = this.known.get(h);
        if (hash === undefined) continue;
        this.known.delete(h);
        disconnected.push(hash);
        this.tipHeight = h - 1;
        this.tipHash = this.known.get(h - 1) ?? "";
        this.emit("BlockDisconnected", { hash, height: h });
      }
      for (const header of connected) {
        if (this.trackMempool && this.mempool.size > 0) {
          const block = await this.rpc.call<{ tx: Hex[] }>("getblock", [header.hash, 1]);
          const slicer = new Slicer();
          for (const txid of Array.isArray(block?.tx) ? block.tx : []) {
            if (this.mempool.delete(txid)) this.emit("MempoolTransactionRemoved", { txid, reason: "block" });
            const pause = slicer.tick();
            if (pause) await pause;
          }
        }
        this.known.set(header.height, header.hash);
        this.known.delete(header.height - KNOWN_WINDOW);
        this.tipHeight = header.height;
        this.tipHash = header.hash;
        this.emit("NewBlock", { hash: header.hash, height: header.height, time: header.time, tx_count: header.nTx });
      }
      if (disconnected.length > 0) {
        this.emit("ChainReorg", { old_tip: oldTip, new_tip: this.tipHash, fork_height: fork, disconnected, connected: connected.map((h) => h.hash) });
      }
      // The rest of the way, as the next step (drain, or reconnect after its own sync, runs it).
      if (last < bestHeader.height) this.queue.push({ kind: "blocks" });
      return;
    }
    this.warn("the node's chain kept changing during five sync attempts; trying again at the next notice");
  }

  private async txAdded(txid: Hex): Promise<void> {
    if (this.mempool.has(txid)) return;
    if (this.mempool.size >= this.maxTrackedMempool) return;
    let entry: CoreMempoolEntry;
    try {
      entry = await this.rpc.call<CoreMempoolEntry>("getmempoolentry", [txid]);
    } catch (err) {
      if (err instanceof CoreRpcError) return; // already gone (mined or replaced) before we asked
      throw err;
    }
    this.mempool.add(txid);
    const fee = btcToSats(entry.fees.base);
    this.emit("MempoolTransactionAdded", { txid, fee, vsize: entry.vsize, fee_rate: fee / entry.vsize });
  }

  /** Announce peers that came and went since the last look (the first look only records them). */
  private async syncPeers(): Promise<void> {
    let list: CorePeer[];
    try {
      list = await this.rpc.call<CorePeer[]>("getpeerinfo");
    } catch (err) {
      if (err instanceof CoreRpcRefused) return; // not whitelisted: said at start
      throw err;
    }
    const now = new Map(list.slice(0, 10_000).map((p) => [p.addr, p]));
    const before = this.peers;
    this.peers = new Set(now.keys());
    if (before === null) return;
    for (const addr of before) if (!now.has(addr)) this.emit("PeerDisconnected", { addr });
    for (const [addr, p] of now) {
      if (!before.has(addr)) this.emit("PeerConnected", { addr, transport_type: p.transport_protocol_type ?? p.network ?? "unknown", services: Number.parseInt(p.services, 16) || 0, version: p.version });
    }
  }

  /** Compare the followed set with the node's mempool; with `announce`, emit the differences. */
  private async resyncMempool(announce: boolean): Promise<void> {
    const entries = await this.rpc.call<Record<Hex, CoreMempoolEntry>>("getrawmempool", [true]);
    // In slices: a mempool of 100,000 transactions compared and announced in one stretch held
    // the host's loop 209-288 ms (an honest node's after a reconnect, or any node's answer).
    const slicer = new Slicer();
    for (const txid of [...this.mempool]) {
      const pause = slicer.tick();
      if (pause) await pause;
      if (Object.hasOwn(entries, txid)) continue;
      this.mempool.delete(txid);
      if (announce) this.emit("MempoolTransactionRemoved", { txid, reason: "other" });
    }
    let skipped = 0;
    let malformed = 0;
    for (const txid in entries) {
      const pause = slicer.tick();
      if (pause) await pause;
      if (!Object.hasOwn(entries, txid) || this.mempool.has(txid)) continue;
      const entry = entries[txid];
      if (!TXID.test(txid) || typeof entry?.fees?.base !== "number" || typeof entry.vsize !== "number" || !(entry.vsize > 0)) {
        malformed++;
        continue;
      }
      if (this.mempool.size >= this.maxTrackedMempool) {
        skipped++;
        continue;
      }
      this.mempool.add(txid);
      const fee = btcToSats(entry.fees.base);
      if (announce) this.emit("MempoolTransactionAdded", { txid, fee, vsize: entry.vsize, fee_rate: fee / entry.vsize });
    }
    if (skipped > 0) this.warn(`the node's mempool has more transactions than the ${this.maxTrackedMempool} modhost follows; ${skipped} are not announced`);
    if (malformed > 0) this.warn(`the node's getrawmempool answer held ${malformed} entries that are not a txid and an entry with a fee and a size; they are not announced`);
  }


  // ---- Availability ----

  private markUnavailable(reason: string): void {
    if (this.closed || this.unavailableSince !== null) return;
    this.unavailableSince = Date.now();
    this.emit("ChainBackendUnavailable", { backend: this.name, reason });
    this.warn(`lost the node: ${reason}; reconnecting`);
    this.scheduleReconnect(this.opts.reconnectMinMs ?? 500);
  }

  private scheduleReconnect(delay: number): void {
    if (this.closed) return;
    this.reconnectTimer = setTimeout(() => void this.reconnect(delay), delay);
    this.reconnectTimer.unref();
  }

  private async reconnect(delay: number): Promise<void> {
    try {
      await this.rpc.call("getbestblockhash");
    } catch {
      this.scheduleReconnect(Math.min(delay * 2, this.opts.reconnectMaxMs ?? 30_000));
      return;
    }
    const since = this.unavailableSince ?? Date.now();
    this.unavailableSince = null;
    this.zmqSeq.reset();
    this.queue.length = 0;
    try {
      await this.syncBlocks();
      if (this.trackMempool) await this.resyncMempool(true);
    } catch (err) {
      if (err instanceof BackendUnavailableError) {
        this.unavailableSince = since;
        this.scheduleReconnect(Math.min(delay * 2, this.opts.reconnectMaxMs ?? 30_000));
        return;
      }
      this.warn(`resync after reconnecting failed: ${(err as Error).message}`);
    }
    this.emit("ChainBackendRestored", { backend: this.name, unavailable_ms: Date.now() - since, height: this.tipHeight, tip_hash: this.tipHash });
    if (this.queue.length > 0) void this.drain();
  }

  /** Every read goes through here: a lost node marks the backend unavailable. */
  protected override async call<T>(method: string, params: unknown[] = []): Promise<T> {
    if (this.unavailableSince !== null) throw new BackendUnavailableError(`the node at ${this.rpc.url} is unreachable; reconnecting`);
    try {
      return await this.rpc.call<T>(method, params);
    } catch (err) {
      if (err instanceof BackendUnavailableError) this.markUnavailable(err.message);
      throw err;
    }
  }

  /** A header by hash, checked (its hash, its height: `height` when the caller asked for one). */
  private async header(hash: Hex, height?: number): Promise<CoreHeader> {
    return checkedHeader(await this.rpc.call<CoreHeader>("getblockheader", [hash, true]), hash, height);
  }

  private emit<K extends ChainEventName>(name: K, payload: ChainEvents[K]): void {
    for (const listener of this.listeners) {
      try {
        listener(name, payload);
      } catch (err) {
        this.warn(`a chain listener threw on ${name}: ${(err as Error).message}`);
      }
    }
  }

  // ---- ChainBackend: submission ----

  async submitBlock(block: Hex | Uint8Array): Promise<SubmitBlockResult> {
    const hex = typeof block === "string" ? block : Buffer.from(block.buffer, block.byteOffset, block.byteLength).toString("hex");
    let hash: Hex | undefined;
    try {
      hash = headerFromHex(hex.slice(0, 160), 0).hash;
    } catch {
      return { result: "rejected", reason: "bad-block-decode: the block could not be decoded" };
    }
    const answer = await this.call<string | null>("submitblock", [hex]);
    if (answer === null) {
      this.enqueue({ kind: "blocks" });
      return { result: "accepted", hash };
    }
    if (answer === "duplicate" || answer === "duplicate-inconclusive") return { result: "duplicate", hash };
    return { result: "rejected", reason: answer, hash };
  }

  async submitTransaction(tx: Hex | Uint8Array): Promise<Hex> {
    const hex = typeof tx === "string" ? tx : Buffer.from(tx.buffer, tx.byteOffset, tx.byteLength).toString("hex");
    try {
      return await this.call<Hex>("sendrawtransaction", [hex]);
    } catch (err) {
      if (err instanceof CoreRpcError) throw new Error(err.message);
      throw err;
    }
  }

  subscribe(listener: ChainListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.zmq?.close();
    this.queue.length = 0;
    this.warn.close();
  }
}
