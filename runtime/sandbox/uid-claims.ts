// One file: a claim's steps (claim, judge its holder alive, release, sweep what is stale) are
// read together to see that each holds after a kill -9 at any of them.
//
// Machine-wide uid claims: what makes a module uid or a single-use uid one process group's
// only, across every host on the machine, whatever its data directory. A uid table
// (uids.ts) is one data directory's; two hosts with two data directories would otherwise
// give one uid to two modules, and a shared uid is a shared RLIMIT_NPROC (one module holding
// every process it may have stops the other from starting) and files of two modules owned by
// one uid.
//
// Why a directory of claims and not a daemon: nothing has to run for the claims to hold, a
// host killed with -9 at any step leaves a state the next one reads, and a claim is a file an
// operator can read. The directory is root's (0700; [host] uid_claims_dir, default
// /var/lib/modhost/uid-claims); only a root host claims (only root runs modules under uids of
// their own). Its layout:
//   <uid>            a claim: JSON naming its kind ("module": the uid of a name in a table;
//                    "single-use": an isolate host's, runtime/isolate/pool.ts), the claiming
//                    process (holder), and for a module the table (its file's canonical path
//                    and the random id stored in it: a table copied elsewhere has the id but
//                    not the path, a new table at the same path has the path but not the id)
//                    and the name. Written whole to a temporary file, then linked to its name:
//                    a claim is never seen half written.
//   .lock/           the directory's lock: every change (a claim made, taken over or removed,
//                    the counter) is made holding it, so no two changes interleave
//   .holders/<id>/   one per claiming process, locked by it for its whole life
//   .single-use-next the next single-use uid: handed out in order, machine-wide
//
// The locks are LevelDB LOCK files (storage/lock.ts: fcntl locks, released by the kernel when
// their holder dies, in whatever PID namespace it ran), so a holder killed with -9 is known to
// be dead and a lock it held is free. A holder is alive when its pid runs with the start time
// it recorded (same boot), or, failing that, when its .holders lock is held (another PID
// namespace); only the latter answers for sure that it is dead.
//
// A claim is live, and its uid no one else's, while:
//   - its holder is alive (a claim just made, not yet in its table; a single-use uid's host), or
//   - a module claim's table still lists that name with that uid, under that id, or
//   - a process runs under its uid (a module of a host killed with -9 still running).
// Anything else is stale: taken over by an allocation that wants its uid, or removed by a
// sweep. A stale claim stays stale (a holder never comes back, a table lists a uid only after
// claiming it), except when a data directory removed is restored from a backup: its table
// claims its entries again when it is opened, as a table written before claims existed does.
//
// Bounded: at most MAX_UID_CLAIMS claim files. A table opened when the directory holds more
// than SWEEP_AT starts a sweep (one at a time on the machine; it reads the claims without the
// lock and removes, holding it, those stale whose content has not changed since); past
// MAX_UID_CLAIMS a new claim first sweeps, then is refused naming MAX_UID_CLAIMS when the
// claims left are all live (remove data directories no longer used: their claims go stale).

import { randomBytes } from "node:crypto";
import { link, lstat, mkdir, open, readdir, readFile, realpath, rename, rm, stat, unlink, type FileHandle } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { tryLock, type DirLock } from "../../storage/lock.ts";
import { fsyncPath } from "../../storage/durable.ts";

/** Claim files the directory may hold: 64 bytes of directory entry and ~300 bytes of file each. */
const MAX_UID_CLAIMS = 65_536;
/** A table opened when the directory holds more claims (or holder directories) than this starts a sweep. */
export const SWEEP_AT = 2048;
/** How long a change waits for the directory's lock before it fails. */
const LOCK_WAIT_MS = 60_000;
/** A claim is a few hundred bytes; a bigger file is not one modhost wrote. */
const MAX_CLAIM_BYTES = 8192;
/** A table file read to judge another table's claim (uids.ts's own bound). */
const MAX_TABLE_BYTES = 4 * 1024 * 1024;

interface Holder {
  id: string;
  pid: number;
  /** The process's start time (clock ticks since boot, /proc/PID/stat field 22). */
  start: number;
  boot: string;
}

export interface ModuleOwner {
  /** The table file's canonical path. */
  table: string;
  /** The random id stored in the table. */
  id: string;
}

interface Claim {
  v: 1;
  kind: "module" | "single-use";
  uid: number;
  holder: Holder;
  table?: string;
  table_id?: string;
  name?: string;
}

/** What a claim found: `claimed` (ours now, or already), `live` (someone else's). */
type ClaimResult = { state: "claimed" } | { state: "live"; claim?: Claim };

async function bootId(): Promise<string> {
  return (await readFile("/proc/sys/kernel/random/boot_id", "utf8").catch(() => "")).trim();
}

async function startTime(pid: number): Promise<number | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => undefined);
  if (stat === undefined) return undefined;
  // The command name (field 2) may hold spaces and parentheses: count from its last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[19]);
}

/**
 * Real uids of the processes running now (what uids.ts skips too), read at most once a second
 * in this process (a burst of claims reads /proc once). The files are read 64 at a time: one
 * after another, 270 processes took 465 ms at load 24 (each read waits for a thread of the pool).
 */
export async function runningUids(): Promise<Set<number>> {
  if (runningCache && Date.now() - runningCache.at <= 1000) return runningCache.uids;
  const uids = new Set<number>();
  const pids = (await readdir("/proc").catch(() => [] as string[])).filter((p) => /^\d+$/.test(p));
  for (let i = 0; i < pids.length; i += 64) {
    await Promise.all(pids.slice(i, i + 64).map(async (pid) => {
      const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
      const m = /^Uid:\s+(\d+)/m.exec(status);
      if (m) uids.add(Number(m[1]));
    }));
  }
  runningCache = { at: Date.now(), uids };
  return uids;
}
let runningCache: { at: number; uids: Set<number> } | undefined;

async function readSmall(file: string, max: number): Promise<string | undefined> {
  let fh: FileHandle;
  try {
    fh = await open(file, "r");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  try {
    const { size } = await fh.stat();
    if (size > max) return undefined;
    return await fh.readFile("utf8");
  } finally {
    await fh.close();
  }
}

function parseClaim(text: string | undefined): Claim | undefined {
  if (text === undefined) return undefined;
  try {
    const c = JSON.parse(text) as Claim;
    return c?.v === 1 && typeof c.holder?.id === "string" ? c : undefined;
  } catch {
    return undefined;
  }
}

const isClaimName = (name: string) => /^\d{1,10}$/.test(name);

/** The claims directory of this machine (one object per directory per process: its holder lock and its queue are the process's). */
export class UidClaims {
  private static readonly opened = new Map<string, Promise<UidClaims>>();
  /** Changes made by this process, one at a time (the lock is the process's, storage/lock.ts). */
  private queue: Promise<unknown> = Promise.resolve();
  private sweeping: Promise<number> | undefined;
  private counted = 0;
  private made = 0;
  private changes = 0;

  private constructor(readonly dir: string, private readonly holder: Holder, private readonly holderLock: DirLock) {}

  /** The claims in `dir` (made 0700 when missing), as this process's holder. */
  static open(dir: string): Promise<UidClaims> {
    const key = path.resolve(dir);
    let got = UidClaims.opened.get(key);
    if (!got) {
      got = UidClaims.create(key);
      UidClaims.opened.set(key, got);
      got.catch(() => UidClaims.opened.delete(key));
    }
    return got;
  }

  private static async create(dir: string): Promise<UidClaims> {
    try {
      await mkdir(path.join(dir, ".holders"), { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new Error(`cannot make the uid claims directory ${dir} (${(err as Error).message}): make it (root's, mode 0700) or set [host] uid_claims_dir to a writable place every host on this machine uses`);
    }
    const st = await lstat(dir);
    if (!st.isDirectory() || st.uid !== process.getuid?.() || (st.mode & 0o077) !== 0) {
      throw new Error(`the uid claims directory ${dir} must be a directory of this host's user (uid ${process.getuid?.()}) with mode 0700: it is ${st.isDirectory() ? `owned by uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)}` : "not a directory"}; fix it with chown/chmod or set [host] uid_claims_dir`);
    }
    const id = randomBytes(8).toString("hex");
    const got = await tryLock(path.join(dir, ".holders", id), true);
    if (got.state !== "locked") throw new Error(`cannot take this process's holder lock in ${dir}`);
    const holder: Holder = { id, pid: process.pid, start: (await startTime(process.pid)) ?? 0, boot: await bootId() };
    return new UidClaims(dir, holder, got.lock);
  }

  /**
   * Whether a sweep is due: more than SWEEP_AT claims, or more than SWEEP_AT holder
   * directories (each host run leaves one when it exits, a LevelDB directory of a few KB).
   */
  async sweepDue(): Promise<boolean> {
    return (await this.count()) > SWEEP_AT || (await readdir(path.join(this.dir, ".holders"))).length > SWEEP_AT;
  }

  /** How many claim files the directory holds (a readdir: ~5 ms for 10,000). */
  async count(): Promise<number> {
    const n = (await readdir(this.dir)).filter(isClaimName).length;
    this.counted = n;
    this.made = 0;
    return n;
  }

  /** Run `fn` holding the directory's lock (and this process's turn). */
  private locked<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(async () => {
      const lockDir = path.join(this.dir, ".lock");
      const deadline = Date.now() + LOCK_WAIT_MS;
      let wait = 2;
      for (;;) {
        const got = await tryLock(lockDir, true);
        if (got.state === "locked") {
          try {
            await this.removeTemporaries();
            return await fn();
          } finally {
            await got.lock.release();
          }
        }
        if (Date.now() > deadline) throw new Error(`the uid claims directory ${this.dir} stayed locked for ${LOCK_WAIT_MS} ms by another host (${lockDir})`);
        await sleep(wait + Math.random() * wait);
        wait = Math.min(wait * 2, 50);
      }
    });
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** A temporary claim found holding the lock was left by a holder that died before linking it. */
  private async removeTemporaries(): Promise<void> {
    if (this.changes++ % 64 !== 0) return; // checked at this process's first change and every 64th
    for (const name of await readdir(this.dir)) if (name.startsWith(".tmp-")) await rm(path.join(this.dir, name), { force: true });
  }

  private file(uid: number): string {
    return path.join(this.dir, String(uid));
  }

  async read(uid: number): Promise<Claim | undefined> {
    return parseClaim(await readSmall(this.file(uid), MAX_CLAIM_BYTES));
  }

  /** Write `claim` as a new file (holding the lock); false when the uid is claimed already. */
  private async write(claim: Claim): Promise<boolean> {
    const tmp = path.join(this.dir, `.tmp-${randomBytes(6).toString("hex")}`);
    const fh = await open(tmp, "wx", 0o600);
    try {
      await fh.writeFile(`${JSON.stringify(claim)}\n`);
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await link(tmp, this.file(claim.uid));
      this.made++;
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
      throw err;
    } finally {
      await unlink(tmp);
    }
  }

  /** Whether holder `h` is alive; asked once per holder per judgment (`cache` holds the answer being found: judgments run 64 at a time). */
  private holderAlive(h: Holder, cache: Map<string, Promise<boolean>>): Promise<boolean> {
    if (h.id === this.holder.id) return Promise.resolve(true);
    let known = cache.get(h.id);
    if (!known) {
      known = this.probeHolder(h);
      cache.set(h.id, known);
    }
    return known;
  }

  private async probeHolder(h: Holder): Promise<boolean> {
    if (h.boot === this.holder.boot && (await startTime(h.pid)) === h.start) return true;
    if (!/^[0-9a-f]{16}$/.test(h.id)) return false;
    // Not in this PID namespace, or dead: its lock says which.
    const dir = path.join(this.dir, ".holders", h.id);
    const got = await tryLock(dir, false);
    if (got.state === "locked") {
      await got.lock.release();
      await rm(dir, { recursive: true, force: true });
    }
    return got.state === "held";
  }

  /** Whether the table `claim` names lists its name with its uid, under its id (and the table is not `own`'s: that one is asked in memory). */
  private async tableLists(claim: Claim, cache: Map<string, Promise<Record<string, unknown> | null>>): Promise<boolean> {
    if (claim.kind !== "module" || typeof claim.table !== "string" || typeof claim.name !== "string") return false;
    const key = `${claim.table}\0${claim.table_id}`;
    let read = cache.get(key);
    if (!read) {
      read = readTableUids(claim.table, claim.table_id);
      cache.set(key, read);
    }
    const uids = await read;
    return uids !== null && Object.hasOwn(uids, claim.name) && uids[claim.name] === claim.uid;
  }

  /** Whether `claim` (not `own`'s) is live: see the top of this file. */
  private async live(claim: Claim, ctx: JudgeContext): Promise<boolean> {
    if ((await ctx.running()).has(claim.uid)) return true;
    if (await this.holderAlive(claim.holder, ctx.holders)) return true;
    return this.tableLists(claim, ctx.tables);
  }

  /** Whether `claim` is `own`'s: the same table file (by path, or by inode: one directory reached by two paths) and id. */
  private async ownedBy(claim: Claim, own: ModuleOwner): Promise<boolean> {
    if (claim.kind !== "module" || claim.table_id !== own.id) return false;
    if (claim.table === own.table) return true;
    const [a, b] = await Promise.all([stat(claim.table ?? "").catch(() => undefined), stat(own.table).catch(() => undefined)]);
    return !!a && !!b && a.dev === b.dev && a.ino === b.ino;
  }

  /** Refuse a new claim past MAX_UID_CLAIMS (after a sweep). */
  private async bound(ctx: JudgeContext): Promise<void> {
    if (this.counted + this.made < MAX_UID_CLAIMS) return;
    if ((await this.count()) < MAX_UID_CLAIMS) return;
    await this.sweepHolding(ctx);
    const n = await this.count();
    if (n >= MAX_UID_CLAIMS) {
      throw new Error(`the uid claims directory ${this.dir} holds ${n} live claims, MAX_UID_CLAIMS (${MAX_UID_CLAIMS}): remove the data directories no longer used (their module-uids.json): their claims are then stale and taken over`);
    }
  }

  /**
   * Claim `uid` for `name` of the table `own` (holding the lock: one call of claimModule's or
   * ensure's): made when free, taken over when stale, kept when already own's (`live` when
   * another live claim holds it).
   */
  private async claimOne(uid: number, own: ModuleOwner, name: string, listed: (name: string, uid: number) => boolean, ctx: JudgeContext): Promise<ClaimResult> {
    const claim: Claim = { v: 1, kind: "module", uid, holder: this.holder, table: own.table, table_id: own.id, name };
    for (let attempt = 0; attempt < 3; attempt++) {
      const found = await this.read(uid);
      if (!found) {
        await this.bound(ctx);
        if (await this.write(claim)) return { state: "claimed" };
        // A file there that is not a claim (claims are linked whole, never half written): not modhost's.
        await unlink(this.file(uid)).catch(() => undefined);
        continue;
      }
      if (await this.ownedBy(found, own)) {
        // Ours: for this name, or for a name the table no longer lists with this uid (taken over).
        if (found.name === name) return { state: "claimed" };
        if (listed(found.name ?? "", uid)) return { state: "live", claim: found };
      } else if (await this.live(found, ctx)) {
        return { state: "live", claim: found };
      }
      await unlink(this.file(uid)).catch(() => undefined);
      this.made--;
    }
    return { state: "live", claim: await this.read(uid) };
  }

  /**
   * A new module uid for `name` of table `own`: the first of `candidates` that is neither
   * `skip`ped nor claimed live (a stale claim is taken over). Returns the uid claimed.
   */
  claimModule(own: ModuleOwner, name: string, candidates: Iterable<number>, skip: (uid: number) => boolean, listed: (name: string, uid: number) => boolean): Promise<number | undefined> {
    return this.locked(async () => {
      const ctx = JudgeContext.now();
      for (const uid of candidates) {
        if (skip(uid) || (await ctx.running()).has(uid)) continue;
        if ((await this.claimOne(uid, own, name, listed, ctx)).state === "claimed") return uid;
      }
      return undefined;
    });
  }

  /**
   * Claim the entries of table `own` (at its opening: a table written before claims existed,
   * restored from a backup, or moved). Returns the entries another live claim holds: those
   * names need new uids.
   */
  async ensure(own: ModuleOwner, entries: Array<[string, number]>): Promise<Array<{ name: string; uid: number; holder?: Claim }>> {
    // The usual case, every entry claimed by this table already: one read each, no lock.
    const ours = (c: Claim | undefined, name: string) => c?.name === name && c.table === own.table && c.table_id === own.id;
    const todo: Array<[string, number]> = [];
    for (const [name, uid] of entries) if (!ours(await this.read(uid), name)) todo.push([name, uid]);
    if (todo.length === 0) return [];
    return this.locked(async () => {
      const ctx = JudgeContext.now();
      const table = new Map(entries);
      const conflicts: Array<{ name: string; uid: number; holder?: Claim }> = [];
      for (const [name, uid] of todo) {
        const got = await this.claimOne(uid, own, name, (n, u) => table.get(n) === u, ctx);
        if (got.state === "live") conflicts.push({ name, uid, holder: got.claim });
      }
      return conflicts;
    });
  }

  /**
   * A single-use uid: the next in order machine-wide (.single-use-next) that no process runs
   * under and no live claim holds, in [base, base + range) (wrapping round to base at its end:
   * by then the first were released long ago). `atLeast`: a table's own counter from before
   * claims existed (its uids are not handed out again).
   */
  claimSingleUse(base: number, range: number, atLeast: number): Promise<number> {
    return this.locked(async () => {
      const ctx = JudgeContext.now();
      const counterFile = path.join(this.dir, ".single-use-next");
      const stored = Number((await readSmall(counterFile, 64))?.trim());
      let uid = Math.max(Number.isInteger(stored) && stored >= base && stored < base + range ? stored : base, atLeast < base + range ? atLeast : base);
      const running = await ctx.running();
      for (let tried = 0; tried < MAX_UID_CLAIMS + running.size + 1; tried++, uid = uid + 1 >= base + range ? base : uid + 1) {
        if (running.has(uid)) continue;
        const found = await this.read(uid);
        if (found && (await this.live(found, ctx))) continue;
        if (found) {
          await unlink(this.file(uid)).catch(() => undefined);
          this.made--;
        }
        await this.bound(ctx);
        if (!(await this.write({ v: 1, kind: "single-use", uid, holder: this.holder }))) continue;
        const next = uid + 1 >= base + range ? base : uid + 1;
        const tmp = `${counterFile}.tmp`;
        const fh = await open(tmp, "w", 0o600);
        try {
          await fh.writeFile(`${next}\n`);
          await fh.sync();
        } finally {
          await fh.close();
        }
        await rename(tmp, counterFile);
        await fsyncPath(this.dir);
        return uid;
      }
      throw new Error(`no single-use uid left in ${base}..${base + range - 1} (${this.dir}): set [host] isolate_pool = 0`);
    });
  }

  /** Give back a single-use uid of this process (its process has exited). */
  release(uid: number): Promise<void> {
    return this.locked(async () => {
      const found = await this.read(uid);
      if (found?.kind === "single-use" && found.holder.id === this.holder.id) {
        await unlink(this.file(uid)).catch(() => undefined);
        this.made--;
      }
    });
  }

  /**
   * Remove the stale claims and the holder directories of dead processes; one sweep at a time
   * in this process (another process's sweep at once costs reads, and changes nothing twice:
   * each removal checks the claim is still the one judged stale). Returns how many were removed.
   */
  sweep(): Promise<number> {
    this.sweeping ??= (async () => {
      try {
        return await this.sweepHolding(JudgeContext.now(false));
      } finally {
        this.sweeping = undefined;
      }
    })();
    return this.sweeping;
  }

  private async sweepHolding(ctx: JudgeContext): Promise<number> {
    const stale: Array<{ uid: number; text: string }> = [];
    const names = (await readdir(this.dir)).filter(isClaimName);
    // 64 at a time: one after another, 10,000 took 20 s at load 19 (each read waits for a thread of the pool).
    for (let i = 0; i < names.length; i += 64) {
      await Promise.all(names.slice(i, i + 64).map(async (name) => {
        const text = await readSmall(path.join(this.dir, name), MAX_CLAIM_BYTES);
        const claim = parseClaim(text);
        if (text !== undefined && claim && claim.uid === Number(name) && !(await this.live(claim, ctx))) stale.push({ uid: claim.uid, text });
      }));
    }
    let removed = 0;
    for (let i = 0; i < stale.length; i += 256) {
      // Removed holding the lock only if unchanged: a claim taken over since is another claim.
      const batch = stale.slice(i, i + 256);
      const remove = async () => {
        for (let k = 0; k < batch.length; k += 64) {
          await Promise.all(batch.slice(k, k + 64).map(async ({ uid, text }) => {
            if ((await readSmall(this.file(uid), MAX_CLAIM_BYTES)) !== text) return;
            await unlink(this.file(uid)).catch(() => undefined);
            removed++;
          }));
        }
      };
      // Called from bound() the lock is held already; from sweep() it is taken per batch.
      await (ctx.holding ? remove() : this.locked(remove));
    }
    // Holders of processes gone (every host run leaves one when it exits): removed. One with
    // no lock in it yet is a process's being made, unless it is a minute old.
    const holders = await readdir(path.join(this.dir, ".holders"));
    for (let i = 0; i < holders.length; i += 16) {
      await Promise.all(holders.slice(i, i + 16).map(async (id) => {
        if (id === this.holder.id || (await ctx.holders.get(id))) return;
        const dir = path.join(this.dir, ".holders", id);
        // Its age before the probe: LevelDB's open makes a LOCK file in it even when it finds no database.
        const age = Date.now() - ((await stat(dir).catch(() => undefined))?.mtimeMs ?? Date.now());
        const got = await tryLock(dir, false).catch(() => ({ state: "held" as const }));
        if (got.state === "locked") await got.lock.release();
        const old = got.state === "absent" && age > 60_000;
        if (got.state === "locked" || old) await rm(dir, { recursive: true, force: true });
      }));
    }
    await this.count();
    return removed;
  }

  /** Drop this process's holder lock (its claims are then judged by their tables and processes). */
  async close(): Promise<void> {
    UidClaims.opened.delete(this.dir);
    await this.holderLock.release();
    await rm(path.join(this.dir, ".holders", this.holder.id), { recursive: true, force: true });
  }

  /** The canonical path of a table file (its directory resolved: it may not exist yet). */
  static async tablePath(file: string): Promise<string> {
    return path.join(await realpath(path.dirname(file)), path.basename(file));
  }
}

/** The uids a table file lists, when it has id `id` (null: no such table, or another one). */
async function readTableUids(file: string, id: string | undefined): Promise<Record<string, unknown> | null> {
  try {
    const data = JSON.parse((await readSmall(file, MAX_TABLE_BYTES)) ?? "null") as { id?: unknown; uids?: Record<string, unknown> } | null;
    return data && data.id === id && typeof data.uids === "object" && data.uids !== null ? data.uids : null;
  } catch {
    return null; // not a table: lists nothing
  }
}

/** What judging claims reads once per change: the running uids, holders and tables found so far. */
class JudgeContext {
  readonly holders = new Map<string, Promise<boolean>>();
  readonly tables = new Map<string, Promise<Record<string, unknown> | null>>();
  private uids: Promise<Set<number>> | undefined;
  private constructor(readonly holding: boolean) {}
  static now(holding = true): JudgeContext {
    return new JudgeContext(holding);
  }
  /** The running uids, read when first asked (opening a table whose claims are all its own never reads /proc). */
  running(): Promise<Set<number>> {
    this.uids ??= runningUids();
    return this.uids;
  }
}
