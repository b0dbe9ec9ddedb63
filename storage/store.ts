// One file: the layout, the usage counters and every operation that changes them must agree
// exactly (quota accounting inside one atomic batch), so they stay side by side.
/**
 * Per-module key/value storage on LevelDB (classic-level).
 *
 * Isolation is by construction: the host gives every module its own directory
 * and a ModuleStore only ever opens that one database.
 *
 * Layout inside the database — all SIBLING sublevels of the root (a nested
 * sublevel's data would show up in its parent's iterator):
 *   !t:<tree>!<key>     user data of tree <tree>: UTF-8 key -> msgpack value
 *   !meta!version       schema version (1)
 *   !meta!tree:<tree>   tree registry entry + its usage counters {bytes, keys}
 *   !meta!drop:<tree>   tree dropped logically, data not yet physically cleared
 *
 * Usage = key bytes + encoded value bytes summed over live entries (meta
 * overhead is not charged). Every write computes its exact delta from the old
 * values' sizes, checks quotas, and then writes data + counters in ONE root batch,
 * so counters can never drift from the data, even across crashes. Writes are
 * serialised per store by a mutex so concurrent deltas are computed correctly.
 */
import { mkdir } from "node:fs/promises";
import { ClassicLevel } from "classic-level";
import { claimDir } from "./lock.ts";
import { StorageError, asStorageError } from "./errors.ts";
import { Mutex } from "./mutex.ts";
import { threadPool, type PoolShare } from "./pool.ts";
import { quoted } from "../protocol/messages.ts";
import { hostBytes, type HeldAccount } from "../protocol/host-bytes.ts";
import { Slicer, sliceAccount } from "../chain/slices.ts";
import { PreEncoded } from "../protocol/codec.ts";
import { checkKey, compareBytes, decodeKey, decodeValue, encodeKey, encodeValue, prefixUpperBound } from "./codec.ts";

export { StorageError } from "./errors.ts";

export interface StorageQuota {
  /** Total key bytes + encoded value bytes across all trees. */
  maxBytes: number;
  /** Total number of keys across all trees. */
  maxKeys: number;
  maxTrees: number;
  /** Max msgpack-encoded size of a single value. */
  maxValueBytes: number;
  /** Max UTF-8 size of a single key. */
  maxKeyBytes: number;
}

const MiB = 1024 * 1024;
export const DEFAULT_QUOTA: StorageQuota = {
  maxBytes: 64 * MiB,
  maxKeys: 1_000_000,
  maxTrees: 64,
  maxValueBytes: 1 * MiB,
  maxKeyBytes: 1024,
};

/**
 * Config key (under `[modules.limits.<name>]`) that raises each quota. The key and value sizes
 * are fixed limits, not quotas: their errors (./codec.ts) say how to stay within them.
 */
const QUOTA_CONFIG_KEY: Record<"maxBytes" | "maxKeys" | "maxTrees", string> = {
  maxBytes: "storage_max_bytes",
  maxKeys: "storage_max_keys",
  maxTrees: "storage_max_trees",
};

/** Plain data msgpack can encode: string, number, boolean, null, arrays, plain objects, Uint8Array. */
export type StorageValue = unknown;
export type BatchOp = { op: "put"; key: string; value: StorageValue } | { op: "delete"; key: string };
export interface IterOptions {
  gt?: string;
  gte?: string;
  lt?: string;
  lte?: string;
  /** Only keys starting with this string (combined with the range options). */
  prefix?: string;
  reverse?: boolean;
  /** Default 1000, max 10000. */
  limit?: number;
  /**
   * Page through a range: the answer is `{entries, cursor}` instead of an array, and it stops
   * at the byte limit (storage_iter_max_bytes) as well as at `limit`. `cursor` is null when
   * the range is done; otherwise pass it back (with the same other options) for the next page.
   */
  paged?: boolean;
  /** From a previous paged answer: go on after the last entry it returned. */
  cursor?: string;
}
export interface IterPage {
  entries: Array<{ key: string; value: StorageValue }>;
  /** Null when the range is exhausted; else pass it back as `cursor`. */
  cursor: string | null;
}
export interface Usage {
  bytes: number;
  keys: number;
  trees: number;
  quota: StorageQuota;
}
export interface OpenOptions {
  /** Module name, used in error messages (e.g. which config section raises a quota). */
  label?: string;
  /** Bytes (keys + values) one iterate call reads at most (storage_iter_max_bytes). */
  iterMaxBytes?: number;
  /**
   * LevelDB operations of this store running at once (storage_io_concurrency); the rest wait
   * in this store's own FIFO. Each of them then waits for the host's share of libuv's thread
   * pool (`pool`, ./pool.ts), which admits the modules' jobs fairly.
   */
  ioConcurrency?: number;
  /** The share of libuv's thread pool this store's jobs go through (the process's own by default). */
  pool?: PoolShare;
  /** How long a transaction in parts is held without a part (STAGED_IDLE_MS; shorter in tests). */
  stagedIdleMs?: number;
}

const MAX_BATCH_OPS = 10_000;
/**
 * Transactions sent in parts (a transaction whose ops do not fit one message of the module
 * protocol, docs/protocol.md section 6.2): at most this many open at once per module, holding
 * at most MAX_STAGED_BYTES of encoded keys and values together; a part's transaction is
 * forgotten when no part came for STAGED_IDLE_MS.
 */
const MAX_STAGED = 4;
const MAX_STAGED_BYTES = 32 * 1024 * 1024;
const STAGED_IDLE_MS = 60_000;
/**
 * Transactions in parts dropped before their last part came (an error in a part, a part refused
 * before the store, no part for STAGED_IDLE_MS) are remembered, at most this many per module,
 * each for DROPPED_KEEP_IDLES × STAGED_IDLE_MS (10 minutes) or until a last part (`more:
 * false`) of its id comes: their later
 * parts are refused, not taken for a new transaction. Before, the last part of a transaction
 * whose earlier parts were dropped wrote its own ops alone (a module sending its parts without
 * waiting for each answer: parts 1 and 3 of 3, part 2 refused, wrote part 3's ops).
 */
const MAX_DROPPED = 64;
const DROPPED_KEEP_IDLES = 10;
const DEFAULT_ITER_LIMIT = 1000;
const MAX_ITER_LIMIT = 10_000;
const DEFAULT_ITER_MAX_BYTES = 1024 * 1024;
const DEFAULT_IO_CONCURRENCY = 2;
/** Per-entry framing of an iterate answer beyond key and value bytes ({key, value} map, headers). */
const ENTRY_OVERHEAD = 24;
/** Bytes LevelDB reads per step of an iteration (one thread-pool job each). */
const ITER_STEP_BYTES = 64 * 1024;
const ITER_STEP_ENTRIES = 256;
const SCHEMA_VERSION = 1;
/**
 * A transaction's synchronous work on the host's loop (checking and encoding its ops, reading
 * the old sizes of its keys for the quota, building its LevelDB batch) is done in slices of
 * about this long, the loop getting a turn between them: a maximal transaction (10 000 ops,
 * 1 KiB keys, 16 MiB of values) took 130-400 ms of the loop in one piece. Atomicity is kept:
 * the slices run under the store's write lock and the batch is written by one LevelDB write.
 */
const SLICE_MS = 2;
const TREE_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
const ITER_OPTION_KEYS = new Set(["gt", "gte", "lt", "lte", "prefix", "reverse", "limit", "paged", "cursor"]);
/** Range bounds are not stored, so they get a generous length cap instead of maxKeyBytes. */
const MAX_BOUND_BYTES = 64 * 1024;
/** A cursor is a key in base64url. */
const MAX_CURSOR_CHARS = Math.ceil((MAX_BOUND_BYTES * 4) / 3) + 4;

type Bytes = Uint8Array;
/** `b` as a Buffer (a view, no copy). */
const asBuffer = (b: Bytes): Buffer => (Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength));
type RootDb = ClassicLevel<Bytes, Bytes>;
type TreeDb = ReturnType<RootDb["sublevel"]>;
type MetaDb = ReturnType<RootDb["sublevel"]>;
interface Counters {
  bytes: number;
  keys: number;
}
interface TreeState extends Counters {
  db: TreeDb;
  /** The sublevel's prefix as bytes (made at the first point read): keys in their stored form (getNow). */
  prefix?: Buffer;
}
/** A batch op validated and encoded: its key and the key's UTF-8 length, and its value (undefined for a delete). */
interface Prepared {
  key: string;
  kLen: number;
  v: Bytes | undefined;
}
/** The held parts of a transaction sent in parts. */
interface Staged {
  tree: string;
  ops: Prepared[];
  bytes: number;
  touched: number;
}
/** One entry of a root batch; `sublevel` makes it atomic across sublevels. */
type RootOp =
  | { type: "put"; sublevel: TreeDb | MetaDb; key: unknown; value: unknown }
  | { type: "del"; sublevel: TreeDb | MetaDb; key: unknown }
  // A key already stored-form (the tree's prefix, then the key: storedKeys), for the root itself.
  | { type: "put"; key: Bytes; value: Bytes }
  | { type: "del"; key: Bytes };

/**
 * The keys of `prepared` as LevelDB stores them in the tree whose sublevel prefix is `prefix`
 * (the prefix's bytes, then the key's UTF-8), written into one buffer. A batch op or getMany key
 * naming its sublevel has abstract-level copy that key into a Uint8Array of its own, an
 * ArrayBuffer each: measured in-process, 3000 puts of an indexer's shape spent ~19 ms of CPU
 * there, more than encoding every key and value (~13 ms). The keys are written here straight
 * from their strings, not encoded one by one first (a Uint8Array and an ArrayBuffer per key,
 * for the garbage collector). What `prepared` may hold is bounded before this (MAX_BATCH_OPS
 * ops, keys of at most maxKeyBytes), and so is this buffer.
 */
async function storedKeys(prefix: string, prepared: readonly Prepared[], slicer: Slicer): Promise<Bytes[]> {
  const pre = Buffer.from(prefix, "utf8");
  let total = 0;
  for (const p of prepared) total += pre.length + p.kLen;
  const slab = Buffer.allocUnsafeSlow(total);
  const out: Bytes[] = new Array(prepared.length);
  let at = 0;
  for (let i = 0; i < prepared.length; i++) {
    const wait = slicer.tick();
    if (wait) await wait;
    const p = prepared[i]!;
    pre.copy(slab, at);
    const written = slab.write(p.key, at + pre.length, p.kLen, "utf8");
    if (written !== p.kLen) throw new StorageError("storage_error", `key of ${p.kLen} bytes encoded to ${written}`);
    out[i] = new Uint8Array(slab.buffer, at, pre.length + p.kLen);
    at += pre.length + p.kLen;
  }
  return out;
}

export class ModuleStore {
  readonly #db: RootDb;
  readonly #meta: MetaDb;
  readonly #quota: StorageQuota;
  readonly #label: string | undefined;
  readonly #trees = new Map<string, TreeState>();
  /** Trees dropped logically whose data could not be cleared yet (retried on openTree / next open). */
  readonly #pendingDrops = new Set<string>();
  readonly #writeLock = new Mutex();
  readonly #io: Semaphore;
  readonly #pool: PoolShare;
  readonly #iterMaxBytes: number;
  /** STAGED_IDLE_MS, or the store's own (OpenOptions.stagedIdleMs). */
  readonly #idleMs: number;
  /**
   * Armed while parts are held, for when the oldest would pass #idleMs: it forgets them then.
   * Before, they were forgotten only at the module's next storage_transaction, so a module
   * that staged its parts and sent no other transaction held them (up to MAX_STAGED_BYTES, and
   * its account in [host] module_bytes_mb) for the life of its instance.
   */
  #idleTimer: NodeJS.Timeout | undefined;
  readonly #inflight = new Set<Promise<void>>();
  /** Earlier parts of transactions sent in parts, by the module's id for each (see batch). */
  readonly #staged = new Map<number, Staged>();
  /** Transactions in parts dropped before their last part: why, and when (MAX_DROPPED). */
  readonly #dropped = new Map<number, { why: string; at: number }>();
  /**
   * Its account in the host's cap over all modules ([host] module_bytes_mb,
   * protocol/host-bytes.ts) while it holds staged parts: joined at the first, left at the last.
   */
  #held: HeldAccount | undefined;
  #closing: Promise<void> | undefined;

  /** Gives up this process's claim on the directory (storage/lock.ts), once closed. */
  #unclaim: () => void = () => undefined;

  private constructor(db: RootDb, quota: StorageQuota, label: string | undefined, options: OpenOptions = {}) {
    this.#db = db;
    this.#io = new Semaphore(options.ioConcurrency ?? DEFAULT_IO_CONCURRENCY);
    this.#pool = options.pool ?? threadPool;
    this.#iterMaxBytes = options.iterMaxBytes ?? DEFAULT_ITER_MAX_BYTES;
    this.#idleMs = options.stagedIdleMs ?? STAGED_IDLE_MS;
    this.#meta = db.sublevel<string, unknown>("meta", { keyEncoding: "utf8", valueEncoding: "json" }) as MetaDb;
    this.#quota = quota;
    this.#label = label;
  }

  /** Opens (creating if needed) the store in `dir`. Only one process may open a directory at a time. */
  static async open(dir: string, quota?: Partial<StorageQuota>, options: OpenOptions = {}): Promise<ModuleStore> {
    const q = resolveQuota(quota);
    await mkdir(dir, { recursive: true });
    // A second open in this process would drop the first one's lock (storage/lock.ts).
    const unclaim = claimDir(dir);
    if (!unclaim) throw new StorageError("storage_error", `storage directory ${dir} is already open in this process; close it first`);
    const db: RootDb = new ClassicLevel<Bytes, Bytes>(dir, { keyEncoding: "view", valueEncoding: "view" });
    try {
      await db.open();
    } catch (err) {
      unclaim();
      const locked = (err as { cause?: { code?: string } }).cause?.code === "LEVEL_LOCKED";
      throw new StorageError(
        "storage_error",
        locked
          ? `storage directory ${dir} is in use by another process (LevelDB lock held)`
          : `cannot open storage in ${dir}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    for (const k of ["iterMaxBytes", "ioConcurrency"] as const) {
      const v = options[k];
      if (v !== undefined && (!Number.isSafeInteger(v) || v < 1)) {
        throw new StorageError("invalid_params", `${k} must be a positive integer, got ${String(v)}`);
      }
    }
    const store = new ModuleStore(db, q, options.label, options);
    store.#unclaim = unclaim;
    try {
      await store.#load();
    } catch (err) {
      await db.close().catch(() => {});
      unclaim();
      throw asStorageError(err);
    }
    return store;
  }

  /** Reads the tree registry and counters; finishes drops interrupted by a crash. */
  async #load(): Promise<void> {
    const entries = await this.#job(() => this.#meta.iterator().all());
    let version: unknown;
    for (const [k, v] of entries as Array<[string, unknown]>) {
      if (k === "version") version = v;
      else if (k.startsWith("tree:")) {
        const name = k.slice(5);
        const c = v as Counters;
        this.#trees.set(name, { db: this.#treeDb(name), bytes: c.bytes, keys: c.keys });
      } else if (k.startsWith("drop:")) this.#pendingDrops.add(k.slice(5));
    }
    if (version === undefined) await this.#job(() => this.#meta.put("version", SCHEMA_VERSION));
    else if (version !== SCHEMA_VERSION) {
      throw new StorageError("storage_error", `unsupported storage schema version ${String(version)}`);
    }
    for (const name of this.#pendingDrops) await this.#purge(name);
  }

  #treeDb(name: string): TreeDb {
    // "t:" keeps tree sublevels apart from "meta"; tree-name bytes are all > '"',
    // so no tree's key range can overlap another's (e.g. "a" vs "a.b").
    return this.#db.sublevel<Bytes, Bytes>(`t:${name}`, { keyEncoding: "view", valueEncoding: "view" }) as TreeDb;
  }

  // ---- trees --------------------------------------------------------------

  /** Creates the tree if absent (counts against maxTrees); no-op if it exists. */
  openTree(name: string): Promise<void> {
    return this.#write(async () => {
      checkTreeName(name);
      if (this.#trees.has(name)) return;
      if (this.#pendingDrops.has(name)) await this.#purge(name, true);
      if (this.#trees.size >= this.#quota.maxTrees) {
        throw this.#quotaError("maxTrees", `cannot create tree "${name}": ${this.#trees.size} of ${this.#quota.maxTrees} trees exist`);
      }
      await this.#job(() => this.#meta.put(`tree:${name}`, { bytes: 0, keys: 0 }));
      this.#trees.set(name, { db: this.#treeDb(name), bytes: 0, keys: 0 });
    });
  }

  listTrees(): Promise<string[]> {
    return this.#read(async () => [...this.#trees.keys()].sort());
  }

  /**
   * Drops a tree and frees its usage. The registry entry, the counters and a
   * "drop" marker are committed in one atomic batch (from then on the tree is
   * gone); its data range is then cleared, and the marker removed. If the
   * process dies in between, the clear is finished on the next open.
   */
  dropTree(name: string): Promise<void> {
    return this.#write(async () => {
      checkTreeName(name);
      const dropped = this.#tree(name);
      await this.#job(() => this.#meta.batch([
        { type: "del", key: `tree:${name}` },
        { type: "put", key: `drop:${name}`, value: true },
      ]));
      this.#trees.delete(name);
      // A sublevel stays attached to the root until it is closed: left open, each tree
      // created and dropped kept ~9 KB of the host's heap until the module stopped (10,000
      // of them: +89 MB). Closing it also ends iterators still open on the dropped tree.
      await dropped.db.close().catch(() => {});
      this.#pendingDrops.add(name);
      await this.#purge(name);
    });
  }

  /** Physically clears a dropped tree's data. Failures keep it pending unless `mustSucceed`. */
  async #purge(name: string, mustSucceed = false): Promise<void> {
    const db = this.#treeDb(name);
    try {
      await this.#job(() => db.clear());
      await this.#job(() => this.#meta.del(`drop:${name}`));
      this.#pendingDrops.delete(name);
    } catch (err) {
      if (mustSucceed) throw asStorageError(err);
    } finally {
      await db.close().catch(() => {});
    }
  }

  // ---- reads --------------------------------------------------------------

  // Point reads are synchronous (classic-level getSync): one LevelDB lookup of a value capped
  // at maxValueBytes, done on the event loop inside the request's dispatch, where the session
  // measures it and charges it to the module's host_cpu_ms_per_s. It never waits behind other
  // modules' jobs in libuv's thread pool (measured here: 12 us a get in-process, against 56 us
  // for the asynchronous get; over the module channel 43 us against 125 us a storage_get).

  get(tree: string, key: string): Promise<StorageValue | undefined> {
    try {
      const value = this.getNow(tree, key);
      return value instanceof Promise ? value : Promise.resolve(value);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * get(), with the value itself (not a promise) when the tree is open: the read is then
   * synchronous, and so is a failure (thrown). A promise otherwise (a tree not opened yet).
   * A stored value is plain data, never a Promise.
   */
  getNow(tree: string, key: string): StorageValue | Promise<StorageValue>;
  /**
   * With `encoded`, a value read at once is its stored bytes (PreEncoded), for a caller that
   * sends it with encodeEnvelope: a stored value is, in most cases, the answer's bytes as they
   * are (storage/codec.ts), and neither decoded nor encoded again.
   */
  getNow(tree: string, key: string, encoded: true): StorageValue | PreEncoded | Promise<StorageValue>;
  getNow(tree: string, key: string, encoded = false): StorageValue | PreEncoded | Promise<StorageValue> {
    // An open tree is read synchronously, here: nothing is left in flight for close() to wait
    // for, so the tracking (#track: four promises and three closures a call) is not needed.
    // (Only trees whose names were checked are in #trees; any other name takes the path below.)
    // The key is written in its stored form (the tree's prefix, then its UTF-8) and read from
    // the root: through the sublevel, getSync encoded the key, copied it behind the prefix and
    // went through the root's option path, ~1 µs of a ~2 µs read (classic-level 3, load 6).
    const open = this.#closing === undefined ? this.#trees.get(tree) : undefined;
    if (open !== undefined && open.db.status === "open") {
      try {
        const kLen = checkKey(key, this.#quota.maxKeyBytes);
        const pre = (open.prefix ??= Buffer.from(open.db.prefix, "utf8"));
        const stored = Buffer.allocUnsafe(pre.length + kLen);
        pre.copy(stored, 0);
        stored.write(key as string, pre.length, kLen, "utf8");
        const raw = this.#db.getSync(stored) as Bytes | undefined;
        return raw === undefined ? undefined : encoded ? new PreEncoded(asBuffer(raw), decodeValue) : decodeValue(raw);
      } catch (err) {
        throw asStorageError(err);
      }
    }
    return this.#read(async () => {
      const t = this.#tree(tree);
      const raw = await this.#pointRead(t, encodeKey(key, this.#quota.maxKeyBytes));
      return raw === undefined ? undefined : decodeValue(raw);
    });
  }

  has(tree: string, key: string): Promise<boolean> {
    return this.#read(async () => {
      const t = this.#tree(tree);
      return (await this.#pointRead(t, encodeKey(key, this.#quota.maxKeyBytes))) !== undefined;
    });
  }

  /** getSync once the tree's sublevel is open (a sublevel finishes opening after its first use); until then the asynchronous get. */
  #pointRead(t: TreeState, k: Bytes): Bytes | undefined | Promise<Bytes | undefined> {
    if (t.db.status === "open") return t.db.getSync(k) as Bytes | undefined;
    return this.#job(async () => (await t.db.get(k)) as Bytes | undefined);
  }

  /**
   * Entries in UTF-8 byte order of their keys (reverse if asked), LevelDB range semantics.
   * Reads at most `limit` entries and storage_iter_max_bytes (or `maxBytes`, if smaller: the
   * caller's largest answer) of keys and values. Without `paged` the answer is the array, and a
   * range that does not fit in the byte limit is refused (ask for `paged`, or a smaller limit);
   * with `paged` it is an IterPage whose cursor continues the range.
   */
  iterate(tree: string, opts: IterOptions & { paged: true }, maxBytes?: number): Promise<IterPage>;
  iterate(tree: string, opts?: IterOptions, maxBytes?: number): Promise<Array<{ key: string; value: StorageValue }>>;
  iterate(tree: string, opts: IterOptions = {}, maxBytes?: number): Promise<Array<{ key: string; value: StorageValue }> | IterPage> {
    return this.#read(async () => {
      const t = this.#tree(tree);
      const range = iterRange(opts);
      const budget = Math.min(this.#iterMaxBytes, maxBytes ?? Infinity);
      const limit = range.limit as number;
      const raw: Array<[Bytes, Bytes]> = [];
      let bytes = 0;
      let full = false;
      // Step by step, each step one small thread-pool job holding one of this store's I/O
      // slots, so that other work (this module's and others') gets the pool in between.
      const it = t.db.iterator({ ...range, highWaterMarkBytes: ITER_STEP_BYTES } as Record<string, unknown>);
      try {
        outer: while (raw.length < limit) {
          const step = (await this.#job(() => it.nextv(Math.min(ITER_STEP_ENTRIES, limit - raw.length)))) as Array<[Bytes, Bytes]>;
          if (step.length === 0) break;
          for (const entry of step) {
            const size = entry[0].length + entry[1].length + ENTRY_OVERHEAD;
            if (bytes + size > budget) {
              full = true;
              break outer;
            }
            bytes += size;
            raw.push(entry);
          }
        }
      } finally {
        await this.#job(() => it.close());
      }
      const entries = raw.map(([k, v]) => ({ key: decodeKey(k), value: decodeValue(v) }));
      if (opts.paged === true) {
        const last = raw[raw.length - 1];
        const more = full || raw.length === limit;
        if (full && raw.length === 0) {
          throw new StorageError("invalid_params", `the next entry alone is larger than ${budget} bytes, the most one answer may carry; the operator raises storage_iter_max_bytes in [modules.limits.${this.#label ?? "<name>"}]`);
        }
        return { entries, cursor: more && last ? Buffer.from(last[0]).toString("base64url") : null };
      }
      if (full) {
        throw new StorageError("invalid_params", `iterate: the entries in range exceed ${budget} bytes, the most one answer may carry (storage_iter_max_bytes, or the message size); pass paged: true and follow the cursor, or ask for a smaller limit (${raw.length} entries fit)`);
      }
      return entries;
    });
  }

  usage(): Promise<Usage> {
    return this.#read(async () => ({ ...this.#totals(), trees: this.#trees.size, quota: { ...this.#quota } }));
  }

  // ---- writes -------------------------------------------------------------

  put(tree: string, key: string, value: StorageValue): Promise<void> {
    return this.batch(tree, [{ op: "put", key, value }]);
  }

  /** Resolves true if the key existed. */
  delete(tree: string, key: string): Promise<boolean> {
    return this.#write(async () => {
      const t = this.#tree(tree);
      const k = encodeKey(key, this.#quota.maxKeyBytes);
      const old = (await this.#job(() => t.db.get(k))) as Bytes | undefined;
      if (old === undefined) return false;
      const next = { bytes: t.bytes - k.length - old.length, keys: t.keys - 1 };
      await this.#commit(tree, t, [{ type: "del", sublevel: t.db, key: k }], next);
      return true;
    });
  }

  /**
   * Applies `ops` in order, atomically: all are validated and the quota is
   * checked against the batch's net effect before anything is written.
   *
   * A transaction too big for one message comes in parts: `part` names it (an id the module
   * picks) and whether more parts follow. A part with `more` is validated, encoded and held,
   * and nothing is written; the part without `more` applies every held op of its id and its
   * own, in order, atomically. Any error drops the whole transaction (its held parts too).
   */
  batch(tree: string, ops: BatchOp[], part?: { id: number; more: boolean }): Promise<void> {
    // Taken here, in the request's own call: the write lock may run the work from another's turn.
    const account = sliceAccount.getStore();
    // A drop asked for after this part must wait for it (dropPart).
    this.#drops = this.#dropsDone = undefined;
    return this.#write(async () => {
      const slicer = new Slicer(SLICE_MS, { account });
      this.#lastSlicer = slicer;
      this.#expireStaged();
      const held = part ? this.#staged.get(part.id) : undefined;
      const gone = part && !held ? this.#dropped.get(part.id) : undefined;
      if (gone) {
        // A later part of a transaction dropped before: refused, so that nothing of it is
        // written (its last part ends the refusal: the id is free again after it).
        if (!part!.more) this.#dropped.delete(part!.id);
        throw new StorageError("invalid_params", `transaction ${part!.id} was dropped ${Math.round((Date.now() - gone.at) / 1000)} s ago before its last part came (${gone.why}): this part is refused and nothing of the transaction is written; send the whole transaction again (its parts under an id not in use)${part!.more ? `; its parts are refused until its last part (more: false) or for ${(DROPPED_KEEP_IDLES * this.#idleMs) / 1000} s` : ""}`);
      }
      let prepared: Prepared[];
      try {
        if (held && held.tree !== tree) {
          throw new StorageError("invalid_params", `part of transaction ${part?.id} names tree "${tree}", but its first part named "${held.tree}"`);
        }
        if (part && (held?.ops.length ?? 0) + (Array.isArray(ops) ? ops.length : 0) > MAX_BATCH_OPS) {
          throw new StorageError("invalid_params", `transaction ${part.id} has more than the maximum of ${MAX_BATCH_OPS} ops over its parts`);
        }
        this.#tree(tree);
        prepared = await this.#prepareOps(ops, slicer);
        if (part?.more) {
          this.#hold(part.id, tree, prepared, held);
          return;
        }
      } catch (err) {
        if (part) this.#unstage(part.id, part.more ? `a part was refused: ${String((err as Error)?.message ?? err).slice(0, 200)}` : undefined);
        if (held && err instanceof StorageError) throw new StorageError(err.code, `${err.message} (the transaction's ${held.ops.length} ops held from earlier parts are dropped too)`);
        throw err;
      }
      if (part) this.#unstage(part.id);
      if (held) prepared = held.ops.concat(prepared);
      const t = this.#tree(tree);
      if (prepared.length === 0) return;

      // Read and written at the root, with the tree's prefix put on here (storedKeys).
      const stored = await storedKeys(t.db.prefix, prepared, slicer);
      const { bytes: dBytes, keys: dKeys } = await this.#delta(prepared, stored, slicer);
      this.#checkQuota(dBytes, dKeys);
      await this.#commitSliced(tree, t, prepared, stored, { bytes: t.bytes + dBytes, keys: t.keys + dKeys }, slicer);
    });
  }

  /** The slicer of the last batch (for tests: how many turns its work gave the loop). */
  #lastSlicer: Slicer | undefined;
  get lastBatchPauses(): number {
    return this.#lastSlicer?.yields ?? 0;
  }

  /**
   * #commit for a batch: its ops and the tree's new counters go into one chained LevelDB batch,
   * filled op by op in slices (the native batch copies each key and value as it is added), and
   * written at once: all or nothing, like the array batch.
   */
  async #commitSliced(tree: string, t: TreeState, prepared: readonly Prepared[], stored: readonly Bytes[], next: Counters, slicer: Slicer): Promise<void> {
    const batch = this.#db.batch();
    try {
      for (let i = 0; i < prepared.length; i++) {
        const wait = slicer.tick();
        if (wait) await wait;
        const v = prepared[i]!.v;
        if (v === undefined) batch.del(stored[i]!);
        else batch.put(stored[i]!, v);
      }
      // classic-level's typing doesn't model a sublevel op in a root batch; cast.
      (batch as unknown as { put(k: string, v: unknown, o: { sublevel: MetaDb }): void }).put(`tree:${tree}`, next, { sublevel: this.#meta });
      await this.#job(() => batch.write());
    } catch (err) {
      await batch.close().catch(() => {});
      throw err;
    }
    t.bytes = next.bytes;
    t.keys = next.keys;
  }

  /**
   * The net change in bytes and keys of applying `prepared` (at `stored`, its keys as stored),
   * from the old sizes of the keys it touches (#oldSize). Exact: a key written twice
   * in one batch counts once, with its last value. The common batch touches every key once:
   * found with one Set insertion per op, it is then replayed without a map (measured in-process,
   * 9000 puts of an indexer's shape: the two maps keyed by string and an object per key cost
   * 10-20 ms of the loop per batch); a batch that repeats a key takes the map's way.
   */
  async #delta(prepared: readonly Prepared[], stored: readonly Bytes[], slicer: Slicer): Promise<Counters> {
    const n = prepared.length;
    const seen = new Set<string>();
    for (let i = 0; i < n; i++) {
      const wait = slicer.tick();
      if (wait) await wait;
      seen.add(prepared[i]!.key);
    }
    let dBytes = 0;
    let dKeys = 0;
    if (seen.size === n) {
      for (let i = 0; i < n; i++) {
        // The clock at every read (~50 ns, a read a microsecond or more): one that goes to the disk
        // ends its slice at once.
        const wait = slicer.due();
        if (wait) await wait;
        const p = prepared[i]!;
        const old = this.#oldSize(stored[i]!);
        if (old !== undefined) {
          dBytes -= p.kLen + old;
          dKeys--;
        }
        if (p.v !== undefined) {
          dBytes += p.kLen + p.v.length;
          dKeys++;
        }
      }
      return { bytes: dBytes, keys: dKeys };
    }
    // Current size (key + value bytes) of every distinct key touched, or undefined if absent.
    const size = new Map<string, number | undefined>();
    for (let i = 0; i < n; i++) {
      const wait = slicer.due();
      if (wait) await wait;
      const p = prepared[i]!;
      if (size.has(p.key)) continue;
      const old = this.#oldSize(stored[i]!);
      size.set(p.key, old === undefined ? undefined : p.kLen + old);
    }
    // Replay the ops on the sizes to get the batch's net delta.
    for (let i = 0; i < n; i++) {
      const wait = slicer.tick();
      if (wait) await wait;
      const p = prepared[i]!;
      const before = size.get(p.key);
      const after = p.v === undefined ? undefined : p.kLen + p.v.length;
      dBytes += (after ?? 0) - (before ?? 0);
      dKeys += (after === undefined ? 0 : 1) - (before === undefined ? 0 : 1);
      size.set(p.key, after);
    }
    return { bytes: dBytes, keys: dKeys };
  }

  /**
   * The size of the value stored at `key` (its stored form), or undefined if absent: read
   * synchronously, on the loop, in the caller's slices (a point read, as getNow's). Through
   * getMany, 256 keys a thread-pool job, a 3000-key transaction cost ~20% more CPU in all
   * (copying every key in and every value out, a job and a wake-up per 256 keys) and held
   * every old value it read until the last read was done: up to the module's storage quota of
   * values at once, where each is dropped now as soon as its length is taken
   * (docs/performance-log.md, "a storage transaction's quota reads as point reads").
   */
  #oldSize(key: Bytes): number | undefined {
    const old = this.#db.getSync(key) as Bytes | undefined;
    return old === undefined ? undefined : old.length;
  }

  /** Holds a part of a transaction sent in parts, within MAX_STAGED and MAX_STAGED_BYTES. */
  #hold(id: number, tree: string, prepared: Prepared[], held: Staged | undefined): void {
    if (!held && this.#staged.size >= MAX_STAGED) {
      throw new StorageError("quota_exceeded", `more than ${MAX_STAGED} transactions sent in parts are open at once; finish one (its last part has more: false) before starting another`);
    }
    let bytes = 0;
    for (const p of prepared) bytes += p.kLen + (p.v?.length ?? 0);
    const staged = this.#stagedBytes();
    const total = staged + bytes;
    if (total > MAX_STAGED_BYTES) {
      throw new StorageError("quota_exceeded", `transactions sent in parts would hold ${total} bytes of keys and values, more than the ${MAX_STAGED_BYTES} the host holds for a module; write less in one transaction`);
    }
    // And beside what all modules make the host hold ([host] module_bytes_mb): past its fair
    // part, while the host holds more than half of the cap, the part is refused.
    this.#held ??= hostBytes.join(this.#label ?? "storage", () => this.#stagedBytes());
    if (this.#held.admits(bytes, staged === 0) === false) {
      if (this.#staged.size === 0) this.#leaveHeld();
      throw new StorageError("quota_exceeded", `a part of ${bytes} bytes would pass this module's fair part of [host] module_bytes_mb (${hostBytes.cap} bytes for all modules together, ${this.#held?.fairPart() ?? 0} now its own, ${staged} of them staged): the host holds more than half of it; send the transaction again later or in one piece, or the operator raises [host] module_bytes_mb`);
    }
    if (held) {
      for (const p of prepared) held.ops.push(p);
      held.bytes += bytes;
      held.touched = Date.now();
    } else {
      this.#staged.set(id, { tree, ops: prepared, bytes, touched: Date.now() });
    }
    this.#armIdle();
  }

  /** Arms #idleTimer for when the oldest held transaction passes #idleMs (if not armed). */
  #armIdle(): void {
    if (this.#idleTimer || this.#staged.size === 0 || this.#closing) return;
    let oldest = Number.POSITIVE_INFINITY;
    for (const s of this.#staged.values()) oldest = Math.min(oldest, s.touched);
    this.#idleTimer = setTimeout(() => {
      this.#idleTimer = undefined;
      // In turn with the writes: a part being held now is not forgotten under it.
      this.#write(async () => {
        this.#expireStaged();
        this.#armIdle();
      }).catch(() => {});
    }, Math.max(0, oldest + this.#idleMs - Date.now()) + 1);
    this.#idleTimer.unref();
  }

  /** Forgets transactions sent in parts whose next part has not come for STAGED_IDLE_MS. */
  #expireStaged(): void {
    const now = Date.now();
    let forgot = false;
    for (const [id, s] of this.#staged) {
      if (now - s.touched <= this.#idleMs) continue;
      forgot = this.#staged.delete(id) || forgot;
      this.#remember(id, `no part came for ${this.#idleMs / 1000} s`, s.touched + this.#idleMs);
    }
    for (const [id, d] of this.#dropped) if (now - d.at > DROPPED_KEEP_IDLES * this.#idleMs) this.#dropped.delete(id);
    if (this.#staged.size === 0) this.#leaveHeld();
    else if (forgot) this.#held?.released();
  }

  /** Bytes of keys and values its transactions sent in parts hold (at most MAX_STAGED of them). */
  #stagedBytes(): number {
    let total = 0;
    for (const s of this.#staged.values()) total += s.bytes;
    return total;
  }

  /** Forgets transaction `id`'s held parts; with `why`, its later parts are refused (MAX_DROPPED). */
  #unstage(id: number, why?: string): void {
    const forgot = this.#staged.delete(id);
    if (why !== undefined) this.#remember(id, why);
    else this.#dropped.delete(id);
    if (this.#staged.size === 0) this.#leaveHeld();
    else if (forgot) this.#held?.released();
  }

  #remember(id: number, why: string, now = Date.now()): void {
    this.#dropped.delete(id);
    this.#dropped.set(id, { why, at: now });
    if (this.#dropped.size > MAX_DROPPED) this.#dropped.delete(this.#dropped.keys().next().value!);
  }

  #leaveHeld(): void {
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    this.#held?.leave();
    this.#held = undefined;
  }

  /**
   * Forgets every transaction sent in parts: a new instance of the module starts (its ids
   * would meet the held parts of the one before).
   */
  dropStaged(): void {
    this.#staged.clear();
    this.#dropped.clear();
    this.#leaveHeld();
  }

  /**
   * Forgets the held parts of transaction `id`: a part of it was refused before it reached
   * batch() (`why`: its parameters, checked by the caller; a body that did not decode; no room
   * to wait), and an error in any part drops the whole transaction (docs/protocol.md 6.2); its
   * later parts are refused unless the refused one was its last (`more` false). With no `id`
   * (the refused part's could not be read), every transaction in parts is dropped. Taken in
   * turn with the writes, so a part of the same id still being held by an earlier request is
   * held first and then forgotten.
   */
  dropPart(id: number | undefined, more: boolean | undefined, why: string): Promise<void> {
    // Drops asked for one after another, with no transaction part queued between them, wait as
    // one task of the write lock: a flood of refused parts queues one task, not one each.
    if (this.#drops && this.#dropsDone) {
      this.#drops.push({ id, more, why });
      return this.#dropsDone;
    }
    const drops = (this.#drops = [{ id, more, why }]);
    return (this.#dropsDone = this.#write(async () => {
      if (this.#drops === drops) this.#drops = this.#dropsDone = undefined;
      for (const d of drops) {
        if (d.id !== undefined) this.#unstage(d.id, d.more === false ? undefined : d.why);
        else for (const held of [...this.#staged.keys()]) this.#unstage(held, d.why);
      }
    }));
  }
  /** The drops queued as one write-lock task, while no transaction part is queued after it (dropPart). */
  #drops: Array<{ id: number | undefined; more: boolean | undefined; why: string }> | undefined;
  #dropsDone: Promise<void> | undefined;

  /** Validates and encodes batch ops; errors name the offending op index. */
  async #prepareOps(ops: unknown, slicer: Slicer): Promise<Prepared[]> {
    if (!Array.isArray(ops)) throw new StorageError("invalid_params", "ops must be an array");
    if (ops.length > MAX_BATCH_OPS) {
      throw new StorageError("invalid_params", `batch has ${ops.length} ops, more than the maximum of ${MAX_BATCH_OPS}`);
    }
    const out: Prepared[] = new Array(ops.length);
    for (let i = 0; i < ops.length; i++) {
      // One op's work is bounded (a key of maxKeyBytes, a value of maxValueBytes): checked per op.
      const wait = slicer.due();
      if (wait) await wait;
      out[i] = this.#prepareOp(ops[i], i, ops.length);
    }
    return out;
  }

  /** Validates and encodes op `i` of `count`; errors name its index. */
  #prepareOp(op: unknown, i: number, count: number): Prepared {
    try {
      if (op === null || typeof op !== "object") throw new StorageError("invalid_params", "op must be an object");
      const { op: kind, key, value } = op as { op?: unknown; key?: unknown; value?: unknown };
      if (kind !== "put" && kind !== "delete") {
        throw new StorageError("invalid_params", `op must be "put" or "delete", got ${quoted(kind)}`);
      }
      const kLen = checkKey(key, this.#quota.maxKeyBytes);
      const v = kind === "put" ? encodeValue(value, this.#quota.maxValueBytes) : undefined;
      return { key: key as string, kLen, v };
    } catch (err) {
      if (err instanceof StorageError && count > 1) {
        throw new StorageError(err.code, `ops[${i}]: ${err.message}`);
      }
      throw err;
    }
  }

  /** Writes data ops plus the tree's new counters in one atomic root batch, then updates memory. */
  async #commit(tree: string, t: TreeState, ops: RootOp[], next: Counters): Promise<void> {
    ops.push({ type: "put", sublevel: this.#meta, key: `tree:${tree}`, value: next });
    // classic-level's BatchOperation typing doesn't model mixed-sublevel batches; cast.
    await this.#job(() => this.#db.batch(ops as never));
    t.bytes = next.bytes;
    t.keys = next.keys;
  }

  // ---- quota --------------------------------------------------------------

  #totals(): Counters {
    let bytes = 0;
    let keys = 0;
    for (const t of this.#trees.values()) {
      bytes += t.bytes;
      keys += t.keys;
    }
    return { bytes, keys };
  }

  /** Only growth is checked, so a store over a (lowered) quota can still shrink. */
  #checkQuota(dBytes: number, dKeys: number): void {
    const { bytes, keys } = this.#totals();
    const q = this.#quota;
    if (dBytes > 0 && bytes + dBytes > q.maxBytes) {
      throw this.#quotaError("maxBytes", `write needs ${dBytes} more bytes; ${bytes} of ${q.maxBytes} bytes used`);
    }
    if (dKeys > 0 && keys + dKeys > q.maxKeys) {
      throw this.#quotaError("maxKeys", `write adds ${dKeys} keys; ${keys} of ${q.maxKeys} keys used`);
    }
  }

  #quotaError(limit: keyof typeof QUOTA_CONFIG_KEY, detail: string): StorageError {
    const who = this.#label === undefined ? "" : ` for module "${this.#label}"`;
    const section = `[modules.limits.${this.#label ?? "<name>"}]`;
    return new StorageError(
      "quota_exceeded",
      `storage quota ${limit} exceeded${who}: ${detail}; raise it with ${section} ${QUOTA_CONFIG_KEY[limit]}`,
    );
  }

  // ---- lifecycle ----------------------------------------------------------

  /** Waits for operations already started, then closes. Idempotent; later calls reject. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await Promise.all([...this.#inflight]);
      try {
        await this.#db.close();
      } finally {
        this.#staged.clear();
        this.#leaveHeld();
        this.#unclaim();
      }
    })();
    return this.#closing;
  }

  #tree(name: string): TreeState {
    checkTreeName(name);
    const t = this.#trees.get(name);
    if (t === undefined) {
      throw new StorageError("not_found", `tree "${name}" does not exist; call openTree("${name}") first`);
    }
    return t;
  }

  #read<T>(fn: () => Promise<T>): Promise<T> {
    return this.#track(fn);
  }

  #write<T>(fn: () => Promise<T>): Promise<T> {
    return this.#track(() => this.#writeLock.run(fn));
  }

  /**
   * One LevelDB job (one trip through libuv's thread pool): it waits in this store's FIFO
   * (storage_io_concurrency at once), then for the host's share of the pool (./pool.ts), which
   * admits the modules' jobs fairly. Writes take it per job, under their write lock, not for
   * their whole work: a write's slices on the loop hold no slot of the pool.
   */
  #job<T>(fn: () => Promise<T>): Promise<T> {
    return this.#io.run(() => this.#pool.run(this.#label ?? this, fn));
  }

  /** Rejects once closing; tracks in-flight ops so close() can wait for them; wraps foreign errors. */
  #track<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#closing !== undefined) {
      return Promise.reject(new StorageError("storage_error", "storage is closed"));
    }
    const p = (async () => {
      try {
        return await fn();
      } catch (err) {
        throw asStorageError(err);
      }
    })();
    const settled = p.then(
      () => undefined,
      () => undefined,
    );
    this.#inflight.add(settled);
    void settled.then(() => this.#inflight.delete(settled));
    return p;
  }
}

// ---- helpers ----------------------------------------------------------------

function resolveQuota(partial: Partial<StorageQuota> | undefined): StorageQuota {
  const q = { ...DEFAULT_QUOTA };
  for (const [k, v] of Object.entries(partial ?? {})) {
    if (v === undefined) continue;
    if (!(k in DEFAULT_QUOTA)) throw new StorageError("invalid_params", `unknown quota field "${k}"`);
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new StorageError("invalid_params", `quota ${k} must be a non-negative integer, got ${String(v)}`);
    }
    q[k as keyof StorageQuota] = v;
  }
  return q;
}

function checkTreeName(name: unknown): void {
  if (typeof name !== "string" || !TREE_NAME.test(name)) {
    throw new StorageError(
      "invalid_params",
      `invalid tree name ${quoted(name)}: use 1-64 characters of A-Z a-z 0-9 _ . -`,
    );
  }
}

interface Bound {
  bytes: Bytes;
  inclusive: boolean;
}

/** Turns IterOptions into classic-level iterator options on key bytes. */
function iterRange(opts: IterOptions): Record<string, unknown> {
  if (opts === null || typeof opts !== "object") throw new StorageError("invalid_params", "options must be an object");
  for (const k of Object.keys(opts)) {
    if (!ITER_OPTION_KEYS.has(k)) throw new StorageError("invalid_params", `unknown iterate option "${k}"`);
  }
  if (opts.gt !== undefined && opts.gte !== undefined) throw new StorageError("invalid_params", "gt and gte are mutually exclusive");
  if (opts.lt !== undefined && opts.lte !== undefined) throw new StorageError("invalid_params", "lt and lte are mutually exclusive");
  const limit = opts.limit ?? DEFAULT_ITER_LIMIT;
  if (!Number.isInteger(limit) || limit < 0 || limit > MAX_ITER_LIMIT) {
    throw new StorageError("invalid_params", `limit must be an integer from 0 to ${MAX_ITER_LIMIT}, got ${String(opts.limit)}`);
  }
  if (opts.reverse !== undefined && typeof opts.reverse !== "boolean") {
    throw new StorageError("invalid_params", "reverse must be a boolean");
  }
  const bound = (name: "gt" | "gte" | "lt" | "lte" | "prefix"): Bytes | undefined =>
    opts[name] === undefined ? undefined : encodeKey(opts[name], MAX_BOUND_BYTES, name);

  let lower: Bound | undefined;
  let upper: Bound | undefined;
  const gt = bound("gt");
  const gte = bound("gte");
  const lt = bound("lt");
  const lte = bound("lte");
  if (gt) lower = { bytes: gt, inclusive: false };
  if (gte) lower = { bytes: gte, inclusive: true };
  if (lt) upper = { bytes: lt, inclusive: false };
  if (lte) upper = { bytes: lte, inclusive: true };
  const prefix = bound("prefix");
  if (prefix && prefix.length > 0) {
    lower = tighter(lower, { bytes: prefix, inclusive: true }, 1);
    const end = prefixUpperBound(prefix);
    if (end) upper = tighter(upper, { bytes: end, inclusive: false }, -1);
  }
  if (opts.paged !== undefined && typeof opts.paged !== "boolean") throw new StorageError("invalid_params", "paged must be a boolean");
  if (opts.cursor !== undefined) {
    if (opts.paged !== true) throw new StorageError("invalid_params", "cursor is only for paged iteration: pass paged: true with it");
    if (typeof opts.cursor !== "string" || opts.cursor.length > MAX_CURSOR_CHARS || !/^[A-Za-z0-9_-]*$/.test(opts.cursor)) {
      throw new StorageError("invalid_params", "cursor is not one this host returned: pass back the cursor of the previous page unchanged");
    }
    // The cursor is the last key returned: the next page starts strictly after it.
    const last = new Uint8Array(Buffer.from(opts.cursor, "base64url"));
    if (opts.reverse) upper = tighter(upper, { bytes: last, inclusive: false }, -1);
    else lower = tighter(lower, { bytes: last, inclusive: false }, 1);
  }

  const range: Record<string, unknown> = { limit, reverse: opts.reverse ?? false };
  if (lower) range[lower.inclusive ? "gte" : "gt"] = lower.bytes;
  if (upper) range[upper.inclusive ? "lte" : "lt"] = upper.bytes;
  return range;
}

/** The more restrictive of two bounds; dir = 1 for lower bounds (larger wins), -1 for upper. */
function tighter(a: Bound | undefined, b: Bound, dir: 1 | -1): Bound {
  if (a === undefined) return b;
  const c = compareBytes(a.bytes, b.bytes) * dir;
  if (c !== 0) return c > 0 ? a : b;
  return a.inclusive ? b : a; // same key: exclusive is tighter
}

/** At most `n` tasks at once; the others wait in FIFO order. */
class Semaphore {
  #free: number;
  readonly #waiting: Array<() => void> = [];

  constructor(n: number) {
    this.#free = n;
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#free > 0) this.#free--;
    else await new Promise<void>((resolve) => this.#waiting.push(resolve));
    try {
      return await fn();
    } finally {
      const next = this.#waiting.shift();
      if (next) next();
      else this.#free++;
    }
  }
}
