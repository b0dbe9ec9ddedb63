// The embedded chain's own database: blocks with their undo data, the active chain by height,
// the transaction index, the UTXO set, the wallet's coins and the chain state, in one
// LevelDB (classic-level) in the host's data directory, or in memory (memory-level) for a
// chain that need not outlive its process (tests, benchmarks).
//
// Crash safety: every change of the active chain (one connected or one disconnected block)
// is ONE atomic batch across the sublevels, including the chain state record naming the new
// tip. A process killed at any point leaves the database at the state after the last
// complete batch: a consistent chain one block short at worst.
//
// Layout (sibling sublevels of the root, none nested; keys are UTF-8 strings, values
// MessagePack):
//   b  block hash -> BlockRecord (every block ever connected, as bitcoind's block index keeps
//      reorganised-away blocks; its raw bytes, fees, undo data, chain work)
//   h  height (10 digits, zero-padded) -> HeightEntry (the active chain)
//   t  txid -> TxLocation (confirmed transactions of the active chain)
//   u  "txid:vout" -> Utxo (the confirmed UTXO set)
//   w  "height:txid:vout" -> WalletCoin (UTXOs the wallet owns, oldest first)
//   s  "state" -> ChainState

import type { AbstractLevel, AbstractSublevel } from "abstract-level";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { ClassicLevel } from "classic-level";
import { MemoryLevel } from "memory-level";
import { Packr } from "msgpackr";
import type { Hex, Utxo } from "./backend.ts";
import { Slicer } from "./slices.ts";

export const STORE_VERSION = 1;

export interface BlockRecord {
  height: number;
  /** The serialised block. */
  raw: Uint8Array;
  /** Fee of each transaction, by position (0 for the coinbase). */
  fees: number[];
  /** For each transaction, the UTXOs it spent (restored on disconnect). */
  undo: Utxo[][];
  /** Total work of the chain up to this block, decimal. */
  work: string;
}

export interface HeightEntry {
  hash: Hex;
  time: number;
  /** Decimal chain work. */
  work: string;
}

export interface TxLocation {
  hash: Hex;
  index: number;
}

export interface WalletCoin {
  value: number;
  coinbase: boolean;
}

export interface ChainState {
  version: number;
  tip: Hex;
  height: number;
  extraNonce: number;
  rngCounter: number;
  nextRecipient: number;
  /** The wallet's main address: a database made with another seed is refused. */
  wallet: string;
  /**
   * What the database holds: keys and packed values of every record but this one, raised by
   * what a block's batch puts and lowered by what it deletes (spent outputs, a disconnected
   * block's index entries): what [chain] max_chain_mb bounds. Absent in a database made before
   * it: measured (ChainStore.measure) at its first open.
   */
  liveBytes?: number;
  /** The older count (sessions 14-15: every put, never lowered); read only to stand in while liveBytes is measured. */
  storedBytes?: number;
}

type Sub = "b" | "h" | "t" | "u" | "w" | "s";
/**
 * A change in a batch. A del names the record it deletes (`value`, as it was put) when that
 * record is in the database, so the count of what it holds is lowered by its bytes; a del of a
 * key the batch itself never finds there (an output created and spent in one block) has none.
 */
export type StoreOp = { type: "put"; sub: Sub; key: string; value: unknown } | { type: "del"; sub: Sub; key: string; value?: unknown };

/** What a batch puts (keys and packed values) and what its dels free, state record aside. */
export interface BatchBytes {
  written: number;
  freed: number;
}

const packr = new Packr({ useRecords: false, mapsAsObjects: true, variableMapSize: true });

type Db = AbstractLevel<string | Uint8Array | Buffer, string, Uint8Array>;
type SubDb = AbstractSublevel<Db, string | Uint8Array | Buffer, string, Uint8Array>;

export function heightKey(height: number): string {
  return String(height).padStart(10, "0");
}

export function walletKey(height: number, outpoint: string): string {
  return `${heightKey(height)}:${outpoint}`;
}

/** Chain databases this process has open (see ChainStore.open). */
const openInThisProcess = new Set<string>();

export class ChainStore {
  private readonly subs: Record<Sub, SubDb>;

  private constructor(private readonly db: Db, readonly location: string | null) {
    const sub = (name: Sub): SubDb => db.sublevel<string, Uint8Array>(name, { keyEncoding: "utf8", valueEncoding: "view" });
    this.subs = { b: sub("b"), h: sub("h"), t: sub("t"), u: sub("u"), w: sub("w"), s: sub("s") };
  }

  /** Open (creating) the database in `dir`, or an in-memory one without a directory. */
  static async open(dir?: string): Promise<ChainStore> {
    // Once per process: a second open, refused by LevelDB, would close its LOCK file's
    // descriptor and so drop the first one's lock (fcntl locks are the process's).
    const key = dir === undefined ? undefined : path.resolve(dir);
    if (key !== undefined && openInThisProcess.has(key)) throw new Error(`the chain database ${dir} is in use (already open in this process)`);
    if (key !== undefined) openInThisProcess.add(key);
    return ChainStore.openUnclaimed(dir).catch((err: unknown) => {
      if (key !== undefined) openInThisProcess.delete(key);
      throw err;
    });
  }

  private static async openUnclaimed(dir?: string): Promise<ChainStore> {
    const db = (dir === undefined
      ? new MemoryLevel<string, Uint8Array>({ keyEncoding: "utf8", valueEncoding: "view" })
      : new ClassicLevel<string, Uint8Array>(dir, { keyEncoding: "utf8", valueEncoding: "view" })) as unknown as Db;
    try {
      if (dir !== undefined) await mkdir(dir, { recursive: true });
      await db.open();
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause;
      if (cause?.code === "LEVEL_LOCKED" || (err as { code?: string }).code === "LEVEL_LOCKED") {
        throw new Error(`the chain database ${dir} is in use (is another modhost running with this data directory?)`);
      }
      throw new Error(`cannot open the chain database ${dir}: ${(err as Error).message}`);
    }
    return new ChainStore(db, dir ?? null);
  }

  private async read<T>(sub: Sub, key: string): Promise<T | undefined> {
    const bytes = await this.subs[sub].get(key);
    return bytes === undefined ? undefined : (packr.unpack(bytes) as T);
  }

  readState(): Promise<ChainState | undefined> {
    return this.read<ChainState>("s", "state");
  }

  block(hash: Hex): Promise<BlockRecord | undefined> {
    return this.read<BlockRecord>("b", hash);
  }

  async hasBlock(hash: Hex): Promise<boolean> {
    return (await this.subs.b.get(hash)) !== undefined;
  }

  atHeight(height: number): Promise<HeightEntry | undefined> {
    return this.read<HeightEntry>("h", heightKey(height));
  }

  /** Active-chain entries from `from` to `to` (inclusive), in height order. */
  async heightRange(from: number, to: number): Promise<Array<HeightEntry & { height: number }>> {
    const out: Array<HeightEntry & { height: number }> = [];
    for await (const [key, value] of this.subs.h.iterator({ gte: heightKey(from), lte: heightKey(to) })) {
      out.push({ ...(packr.unpack(value as Uint8Array) as HeightEntry), height: Number(key) });
    }
    return out;
  }

  tx(txid: Hex): Promise<TxLocation | undefined> {
    return this.read<TxLocation>("t", txid);
  }

  utxo(outpoint: string): Promise<Utxo | undefined> {
    return this.read<Utxo>("u", outpoint);
  }

  /** The wallet's coins, oldest first: [outpoint, height, coin]. */
  async *walletCoins(): AsyncGenerator<{ outpoint: string; height: number; coin: WalletCoin }> {
    for await (const [key, value] of this.subs.w.iterator()) {
      const k = key as string;
      yield { outpoint: k.slice(11), height: Number(k.slice(0, 10)), coin: packr.unpack(value as Uint8Array) as WalletCoin };
    }
  }

  /**
   * Apply `ops` as one atomic batch. The batch is built an op at a time in slices (a block of
   * 15,000 transactions is ~45,000 ops, ~100 ms of encoding in one piece) and written at once.
   * The chain state ops (sub "s") go in last: `counted` is told first the bytes every other op
   * puts and frees, so the state record can carry the count it is part of; a throw from it
   * drops the batch, nothing written (a block that would pass max_chain_mb).
   */
  async write(ops: StoreOp[], slicer = new Slicer(), counted?: (bytes: BatchBytes) => void): Promise<void> {
    const batch = this.db.batch();
    const bytes: BatchBytes = { written: 0, freed: 0 };
    try {
      for (const op of ops) {
        if (op.sub === "s") continue;
        if (op.type === "put") {
          const value = packr.pack(op.value);
          bytes.written += op.key.length + value.length;
          batch.put(op.key, value, { sublevel: this.subs[op.sub] } as never);
        } else {
          if (op.value !== undefined) bytes.freed += op.key.length + packr.pack(op.value).length;
          batch.del(op.key, { sublevel: this.subs[op.sub] } as never);
        }
        await slicer.tick();
      }
      counted?.(bytes);
      for (const op of ops) {
        if (op.sub !== "s") continue;
        if (op.type === "put") batch.put(op.key, packr.pack(op.value), { sublevel: this.subs[op.sub] } as never);
        else batch.del(op.key, { sublevel: this.subs[op.sub] } as never);
      }
    } catch (err) {
      await batch.close();
      throw err;
    }
    await batch.write();
  }

  /**
   * What the database holds, counted as write() counts it (keys and values of every record but
   * the state), by walking it: for a database made before the state carried the count. In
   * slices (`slicer`), never in one piece on the loop; each sublevel read from a snapshot taken
   * when this is called (all at once), so what is written meanwhile is for the caller to add.
   */
  async measure(slicer = new Slicer()): Promise<number> {
    const subs: Sub[] = ["b", "h", "t", "u", "w"];
    const iterators = subs.map((sub) => this.subs[sub].iterator({ keyEncoding: "utf8", valueEncoding: "view" }));
    let bytes = 0;
    try {
      for (const it of iterators) {
        for (;;) {
          const entries = await it.nextv(1000);
          if (entries.length === 0) break;
          for (const [key, value] of entries) {
            bytes += (key as string).length + (value as Uint8Array).length;
            const pause = slicer.tick();
            if (pause) await pause;
          }
        }
      }
    } finally {
      await Promise.all(iterators.map((it) => it.close()));
    }
    return bytes;
  }

  async close(): Promise<void> {
    if (this.db.status === "open") await this.db.close();
    if (this.location !== null) openInThisProcess.delete(path.resolve(this.location));
  }
}
