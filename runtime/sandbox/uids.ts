// Module uids, allocated: a table in the host's data directory (module name -> uid) that gives
// every module name a uid of its own, never one already given to another name, and the same
// one on every start. A uid of its own is what makes RLIMIT_NPROC count one module's processes
// only, and makes one module's files not another's.
//
// The first uid tried for a new name is moduleUid(name) (a hash of the name, what earlier
// versions used, so existing data directories keep their owners); when that is taken, by
// another name in the table, by a process running on this machine, or by a live claim of
// another host, the next free one in the range. So a module that picks a name whose hash
// equals another module's gets a different uid (a colliding name is found by brute force in
// seconds: the hash alone was never enough).
//
// Machine-wide (a root host: `claims`): every uid the table gives is claimed in the machine's
// claims directory (uid-claims.ts) before it is used, so two hosts with two data directories
// never give one uid to two modules, whatever the names. The table carries a random id, so a
// copy of it in another data directory is not taken for the same table: opened, each entry is
// claimed, and an entry whose uid another live table claims (the original of a copy) gets a
// new uid, which its data directory is handed to at the module's next start (datadir.ts
// chowns a directory whose owner is not its module's uid). Without claims (a host that is not
// root: its modules all run under its own uid) the table is the data directory's only.
//
// Single-use uids (freshUid) are for pre-booted isolate hosts (runtime/isolate/pool.ts), which
// start before their module is known: each gets a uid of its own from a second range, right
// after the module range, handed out in order (machine-wide with claims: the claims
// directory's counter; the table's own without) and claimed until its process exits
// (releaseUid). A TypeScript module's uid owns no files (its isolate host has no writable
// directory and a private /tmp), so a new one per process costs nothing; and no name can ever
// be given one of them (names get uids from the first range only).

import { randomBytes } from "node:crypto";
import { open, readdir, rename, rm } from "node:fs/promises";
import path from "node:path";
import { moduleUid, MODULE_UID_BASE, MODULE_UID_RANGE } from "./policy.ts";
import { runningUids, UidClaims, type ModuleOwner } from "./uid-claims.ts";
import { fsyncPath } from "../../storage/durable.ts";

export const UID_TABLE_FILE = "module-uids.json";
/** The table is the host's own file; a bigger one is not one it wrote. */
const MAX_TABLE_BYTES = 4 * 1024 * 1024;

interface TableFile {
  version: 1;
  /** Random, made with the table: which table a claim names (uid-claims.ts); absent in tables from before claims. */
  id?: string;
  /** Documented for the operator who opens the file. */
  range: string;
  uids: Record<string, number>;
  /** The next single-use uid (freshUid); absent until the first is handed out. */
  single_use_next?: number;
}

/** The range of single-use uids: right after the module range, as large. */
export const SINGLE_USE_UID_BASE = MODULE_UID_BASE + MODULE_UID_RANGE;

function inRange(uid: unknown): uid is number {
  return Number.isInteger(uid) && (uid as number) >= MODULE_UID_BASE && (uid as number) < MODULE_UID_BASE + MODULE_UID_RANGE;
}

export interface UidTableOptions {
  /** The machine's uid claims directory ([host] uid_claims_dir); absent: this table alone decides. */
  claimsDir?: string;
  /** Where a reassigned entry or a sweep's trouble is told. */
  log?: { warn(message: string, fields?: Record<string, unknown>): void };
}

export class UidTable {
  private queue: Promise<unknown> = Promise.resolve();
  /** A table from before claims was given its id: written at the opening. */
  private idUnsaved = false;

  private constructor(
    readonly file: string,
    private readonly byName: Map<string, number>,
    private singleUseNext = SINGLE_USE_UID_BASE,
    private readonly id?: string,
    private readonly claims?: { claims: UidClaims; own: ModuleOwner },
  ) {}

  /**
   * Load the table at `file` (a missing file is an empty table). A damaged table is an error,
   * never silently replaced: uids own files. Its directory is one host's (host/host.ts holds a
   * lock on it), so a temporary file of save() found there was left by a host that died: removed.
   */
  static async open(file: string, opts: UidTableOptions = {}): Promise<UidTable> {
    const table = await UidTable.load(file, opts);
    if (table.claims) await table.claimEntries(opts);
    return table;
  }

  private static async load(file: string, opts: UidTableOptions): Promise<UidTable> {
    const claimed = async (id: string | undefined): Promise<[string | undefined, { claims: UidClaims; own: ModuleOwner } | undefined]> => {
      if (opts.claimsDir === undefined) return [id, undefined];
      const tableId = id ?? randomBytes(8).toString("hex");
      return [tableId, { claims: await UidClaims.open(opts.claimsDir), own: { table: await UidClaims.tablePath(file), id: tableId } }];
    };
    const prefix = `.${path.basename(file)}.`;
    for (const name of await readdir(path.dirname(file)).catch(() => [] as string[])) {
      if (name.startsWith(prefix) && /^[0-9a-f]{12}$/.test(name.slice(prefix.length))) await rm(path.join(path.dirname(file), name), { force: true });
    }
    let text: string;
    try {
      const fh = await open(file, "r");
      try {
        const { size } = await fh.stat();
        if (size > MAX_TABLE_BYTES) throw new Error(`the module uid table ${file} is ${size} bytes, more than ${MAX_TABLE_BYTES}: it is not one modhost wrote; restore it from a backup`);
        text = await fh.readFile("utf8");
      } finally {
        await fh.close();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return new UidTable(file, new Map(), SINGLE_USE_UID_BASE, ...(await claimed(undefined)));
      throw err;
    }
    const damaged = (why: string) => new Error(`the module uid table ${file} is damaged (${why}): restore it from a backup, or fix the entry by hand (each module name needs its own uid in ${MODULE_UID_BASE}..${MODULE_UID_BASE + MODULE_UID_RANGE - 1})`);
    let data: Partial<TableFile>;
    try {
      data = JSON.parse(text) as Partial<TableFile>;
    } catch (err) {
      throw damaged((err as Error).message);
    }
    if (data?.version !== 1 || typeof data.uids !== "object" || data.uids === null || Array.isArray(data.uids)) throw damaged("not a version 1 table");
    const byName = new Map<string, number>();
    const seen = new Map<number, string>();
    for (const [name, uid] of Object.entries(data.uids)) {
      if (!inRange(uid)) throw damaged(`${name}: ${String(uid)} is not a module uid`);
      const other = seen.get(uid);
      if (other !== undefined) throw damaged(`${name} and ${other} share uid ${uid}`);
      seen.set(uid, name);
      byName.set(name, uid);
    }
    const next = data.single_use_next ?? SINGLE_USE_UID_BASE;
    if (!Number.isInteger(next) || next < SINGLE_USE_UID_BASE || next > SINGLE_USE_UID_BASE + MODULE_UID_RANGE) {
      throw damaged(`single_use_next: ${String(next)} is not in ${SINGLE_USE_UID_BASE}..${SINGLE_USE_UID_BASE + MODULE_UID_RANGE}`);
    }
    if (data.id !== undefined && (typeof data.id !== "string" || !/^[0-9a-f]{16}$/.test(data.id))) throw damaged(`id: ${JSON.stringify(data.id)} is not 16 hex digits`);
    const table = new UidTable(file, byName, next, ...(await claimed(data.id)));
    table.idUnsaved = data.id === undefined && table.id !== undefined;
    return table;
  }

  /**
   * Claim every entry machine-wide (uid-claims.ts), and give an entry whose uid another live
   * table claims a new one (told in the log); the table is written when it changed (an id
   * added, an entry moved). A claims directory past SWEEP_AT claims or holders is swept in the background.
   */
  private async claimEntries(opts: UidTableOptions): Promise<void> {
    const { claims, own } = this.claims!;
    let changed = this.idUnsaved;
    for (const { name, uid, holder } of await claims.ensure(own, [...this.byName])) {
      this.byName.delete(name);
      const fresh = await this.claimNew(name);
      this.byName.set(name, fresh);
      changed = true;
      opts.log?.warn(`module ${name}'s uid ${uid} (${this.file}) is claimed by ${holder?.kind === "module" ? `module ${holder.name} of ${holder.table}` : holder ? "a pre-booted isolate host's process" : "another host"}: it gets uid ${fresh}; its data directory is handed to that uid at its next start`, { module: name, old_uid: uid, uid: fresh });
    }
    if (changed) await this.save();
    if (await claims.sweepDue()) {
      void claims.sweep().catch((err: Error) => opts.log?.warn(`could not sweep the uid claims in ${claims.dir}: ${err.message}`));
    }
  }

  /** A new uid for `name`, claimed machine-wide (not yet in the table). */
  private async claimNew(name: string): Promise<number> {
    const { claims, own } = this.claims!;
    const taken = new Set(this.byName.values());
    const first = moduleUid(name) - MODULE_UID_BASE;
    function* candidates() {
      for (let i = 0; i < MODULE_UID_RANGE; i++) yield MODULE_UID_BASE + ((first + i) % MODULE_UID_RANGE);
    }
    const uid = await claims.claimModule(own, name, candidates(), (u) => taken.has(u), (n, u) => this.byName.get(n) === u);
    if (uid === undefined) throw new Error(`no free module uid left in ${MODULE_UID_BASE}..${MODULE_UID_BASE + MODULE_UID_RANGE - 1}`);
    return uid;
  }

  /**
   * A uid never handed out before by this table (names included), for one process only (see
   * the top of this file). The table records the next one before this one is returned, so a
   * crash never hands the same uid out twice. A uid some process runs under now is skipped.
   */
  freshUid(): Promise<number> {
    const next = this.queue.then(async () => {
      if (this.claims) return this.claims.claims.claimSingleUse(SINGLE_USE_UID_BASE, MODULE_UID_RANGE, this.singleUseNext);
      const running = await runningUids();
      let uid = this.singleUseNext;
      while (uid < SINGLE_USE_UID_BASE + MODULE_UID_RANGE && running.has(uid)) uid++;
      if (uid >= SINGLE_USE_UID_BASE + MODULE_UID_RANGE) {
        throw new Error(`no single-use uid left in ${SINGLE_USE_UID_BASE}..${SINGLE_USE_UID_BASE + MODULE_UID_RANGE - 1} (${this.file}): set [host] isolate_pool = 0, or start with a new data directory`);
      }
      const before = this.singleUseNext;
      this.singleUseNext = uid + 1;
      try {
        await this.save();
      } catch (err) {
        this.singleUseNext = before;
        throw new Error(`cannot record a single-use uid in ${this.file}: ${(err as Error).message}`);
      }
      return uid;
    });
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** A single-use uid's process has exited: its claim is given back (nothing to do without claims). */
  releaseUid(uid: number): Promise<void> {
    return this.claims ? this.claims.claims.release(uid) : Promise.resolve();
  }

  /** The uid already given to `name`, if any. */
  get(name: string): number | undefined {
    return this.byName.get(name);
  }

  /** All entries (name -> uid). */
  entries(): Array<[string, number]> {
    return [...this.byName];
  }

  /** The uid of `name`: its entry, or a new uid that no other name has (written to disk before it is returned). */
  uidFor(name: string): Promise<number> {
    const next = this.queue.then(() => this.allocate(name));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async allocate(name: string): Promise<number> {
    const known = this.byName.get(name);
    if (known !== undefined) return known;
    const uid = this.claims ? await this.claimNew(name) : await this.firstFree(name);
    this.byName.set(name, uid);
    try {
      await this.save();
    } catch (err) {
      // A claim stays this process's until it exits; then no table lists it: stale.
      this.byName.delete(name);
      throw new Error(`cannot record the uid of module ${name} in ${this.file}: ${(err as Error).message}`);
    }
    return uid;
  }

  /** Without a claims directory (a host that is not root): the first uid from the name's hash that no name in the table has and no running process uses. */
  private async firstFree(name: string): Promise<number> {
    const taken = new Set(this.byName.values());
    const running = await runningUids();
    const first = moduleUid(name) - MODULE_UID_BASE;
    for (let i = 0; i < MODULE_UID_RANGE; i++) {
      const uid = MODULE_UID_BASE + ((first + i) % MODULE_UID_RANGE);
      if (!taken.has(uid) && !running.has(uid)) return uid;
    }
    throw new Error(`no free module uid left in ${MODULE_UID_BASE}..${MODULE_UID_BASE + MODULE_UID_RANGE - 1}`);
  }

  /** Write the whole table to a new file, flush it, and rename it over the old one: never half a table. */
  private async save(): Promise<void> {
    const data: TableFile = {
      version: 1,
      ...(this.id !== undefined ? { id: this.id } : {}),
      range: `${MODULE_UID_BASE}..${MODULE_UID_BASE + MODULE_UID_RANGE - 1}`,
      uids: Object.fromEntries([...this.byName].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
      ...(this.singleUseNext !== SINGLE_USE_UID_BASE ? { single_use_next: this.singleUseNext } : {}),
    };
    const tmp = path.join(path.dirname(this.file), `.${path.basename(this.file)}.${randomBytes(6).toString("hex")}`);
    const fh = await open(tmp, "wx", 0o600);
    try {
      await fh.writeFile(`${JSON.stringify(data, null, 2)}\n`);
      await fh.sync();
    } catch (err) {
      await fh.close();
      await rm(tmp, { force: true });
      throw err;
    }
    await fh.close();
    await rename(tmp, this.file);
    // A uid handed out must stay handed out after a power cut too (or two modules could share it).
    await fsyncPath(path.dirname(this.file));
  }
}
