// Pre-booted isolate hosts ([host] isolate_pool): a TypeScript module's start is mostly Node
// booting (--no-node-snapshot) and loading the isolate host script; a pool process has done
// that before its module is known, so a start, a restart or a `modhost dev` reload that takes
// one skips it.
//
// What makes a pool process exactly as confined as a freshly started isolate host:
//  - it is started by the same sandbox code (runtime/sandbox: bwrap, seccomp, rlimits, no
//    network, no data directory), with the read-only paths of a fresh one minus the bundle,
//    under a single-use uid (UidTable.freshUid) that no other process ever gets: a uid of its
//    own, as a fresh isolate host has, and never one another module ran under;
//  - it holds nothing of any module before hand-over: no name, no bundle, no module
//    environment, no module limits but the profile's (Node's heap size and the rlimits, which
//    must equal the module's for it to be taken: profileKey);
//  - at hand-over it is moved into its module's cgroup (made then, with the module's limits)
//    and sent the module's name, bundle and isolate limits on its channel (worker.ts reads
//    them before anything else); its hello must then name that module, which the host's
//    session checks against the module it serves on that channel (host/session.ts), so it
//    cannot claim another module's identity;
//  - it is used for one module once: never returned to the pool.
//
// Refill: after a take the pool boots a replacement, one at a time, only while no start is in
// progress (beginStart/endStart) and REFILL_DELAY_MS after the last one ended, so a refill
// does not compete with a start for the CPU (a boot already running is not stopped). It
// boots the profile of the latest start that wanted one. A pool process that dies while it
// waits is replaced; after MAX_BOOT_FAILURES deaths in a row without a take the pool stops
// refilling (logged), so a machine where pool processes cannot live does not boot them forever.

import { moduleScope, spawnChild, type OutputLog, type StartedChild } from "../process.ts";
import type { IsolateHostLimits, RuntimeManifest } from "../types.ts";
import { createModuleCgroup, detectCgroups, detectSandbox, moveProcesses, type SandboxedSpawn } from "../sandbox/index.ts";
import { handoverMessage, isolateHostCgroupLimits, pooledIsolateSpawnSpec, profileKey, type PoolProfile } from "./runtime.ts";

/** How long after the last start in progress has ended the refill begins. */
const REFILL_DELAY_MS = 500;

/** How long a start waits for a pool process that is still booting before it starts a fresh one. */
const READY_WAIT_MS = 10_000;

/** What `p` gives, or `fallback` once `ms` have passed (0 or less: at once). */
async function within<T>(p: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<T>((r) => (timer = setTimeout(() => r(fallback), Math.max(0, ms))))]);
  } finally {
    clearTimeout(timer);
  }
}

/** Whether `w` has booted, waiting for it until `deadline` (Date.now() ms). */
async function ready(w: Warm, deadline: number): Promise<boolean> {
  if (w.isReady) return !w.exited;
  return (await within(w.ready, deadline - Date.now(), false)) && !w.exited;
}

/** A pool process that has not booted after this long is stopped (and counts as a failed boot). */
const BOOT_TIMEOUT_MS = 60_000;

/** Deaths in a row of pool processes that were never taken, after which the pool stops refilling. */
const MAX_BOOT_FAILURES = 3;
/** The largest [host] isolate_pool (config.ts enforces it too). */
const MAX_POOL_SIZE = 16;

interface PoolLog {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

interface Warm {
  key: string;
  uid: number;
  started: StartedChild;
  sandboxed: SandboxedSpawn;
  bootedAt: number;
  exited: boolean;
  /** It said it has booted ("pool_ready"); resolves false if it exits first. */
  ready: Promise<boolean>;
  isReady: boolean;
  /** Handed to a module, or stopped by the pool: its exit is not the pool's concern. */
  done: boolean;
}

/** A pooled isolate host handed to a module: adopt its channel (StartedChild.adopt). */
export interface Taken {
  started: StartedChild;
  /** The sandbox it runs in: its level and notes as booted, its module's cgroup now. */
  sandboxed: SandboxedSpawn;
  /** Its single-use uid. */
  uid: number;
  /** How long it had waited in the pool, booted. */
  waitedMs: number;
}

export interface PoolStats {
  /** Starts that took a pool process. */
  taken: number;
  /** Starts that found none for their profile (started fresh). */
  missed: number;
  /** Pool processes started. */
  booted: number;
  /** Pool processes that died while they waited. */
  diedWaiting: number;
}

export interface IsolatePoolOptions {
  size: number;
  /** A uid no process has had or will have (UidTable.freshUid). */
  freshUid: () => Promise<number>;
  /** Its process has exited (taken or not): the uid's machine-wide claim is given back (UidTable.releaseUid). */
  releaseUid?: (uid: number) => Promise<void>;
  log: PoolLog;
  /** Where a pool process's stdout and stderr go until hand-over. */
  output: OutputLog;
}

export class IsolatePool {
  private readonly idle: Warm[] = [];
  private booting = false;
  /** The boot in progress and its profile's key: a start of that profile waits for it rather than boot another. */
  private boot_: { key: string; done: Promise<unknown>; spawned: Promise<void> } | undefined;
  private starts = 0;
  private wanted: PoolProfile | undefined;
  private failures = 0;
  private stopped = false;
  private closed = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private settleTimer: NodeJS.Timeout | undefined;
  readonly stats: PoolStats = { taken: 0, missed: 0, booted: 0, diedWaiting: 0 };

  constructor(private readonly opts: IsolatePoolOptions) {
    if (!Number.isInteger(opts.size) || opts.size < 0 || opts.size > MAX_POOL_SIZE) {
      throw new Error(`isolate_pool must be an integer from 0 to ${MAX_POOL_SIZE}, got ${opts.size}`);
    }
  }

  get size(): number {
    return this.opts.size;
  }

  /** The pids of the pool processes booted and waiting now (their sandbox launchers). */
  waiting(): number[] {
    return this.idle.filter((w) => !w.exited && w.isReady).map((w) => w.started.child.pid!).filter((p) => p !== undefined);
  }

  /** A start begins: nothing is booted until every start in progress has ended. */
  beginStart(): void {
    this.starts++;
  }

  endStart(): void {
    this.starts = Math.max(0, this.starts - 1);
    if (this.starts > 0 || this.closed) return;
    // Not at once: the next dependency level of a boot, or a restart, usually follows within
    // moments, and should not find a refill taking the CPU.
    clearTimeout(this.settleTimer);
    this.settleTimer = setTimeout(() => {
      this.settleTimer = undefined;
      this.schedule();
    }, REFILL_DELAY_MS);
    this.settleTimer.unref();
  }

  /** Boot pool processes of `profile` (unless a start has asked for another since), in the background. */
  fill(profile: PoolProfile): void {
    this.wanted ??= profile;
    this.schedule();
  }

  /**
   * A pool process of `profile` handed to `manifest`'s module: moved into its cgroup (made here
   * with the limits a fresh isolate host's gets, isolateHostCgroupLimits) and sent its hand-over. undefined when the pool has none of that
   * profile (or handing one over failed, logged): start a fresh isolate host then.
   */
  async take(profile: PoolProfile, manifest: RuntimeManifest, bundleCode: string, limits: IsolateHostLimits): Promise<Taken | undefined> {
    if (this.opts.size === 0 || this.closed) return undefined;
    this.wanted = profile;
    const key = profileKey(profile);
    const match = () => this.idle.find((w) => w.key === key && !w.exited && w.isReady) ?? this.idle.find((w) => w.key === key && !w.exited);
    // A refill of this profile on its way (being spawned, or still booting): it is further
    // along than a fresh start would be, so the start waits for it, READY_WAIT_MS in all (its
    // spawn, then its boot; a boot's own deadline, BOOT_TIMEOUT_MS, is far longer).
    const deadline = Date.now() + READY_WAIT_MS;
    const boot = this.boot_;
    if (!match() && boot?.key === key) await within(boot.spawned, READY_WAIT_MS, undefined);
    const w = match();
    if (!w || !(await ready(w, deadline))) {
      this.stats.missed++;
      return undefined;
    }
    if (!this.idle.includes(w)) return this.take(profile, manifest, bundleCode, limits); // another start took it meanwhile
    this.idle.splice(this.idle.indexOf(w), 1);
    w.done = true;
    let moduleCgroup: SandboxedSpawn["cgroup"];
    try {
      if (w.sandboxed.cgroup) {
        const support = (await detectSandbox()).cgroups ?? (await detectCgroups());
        moduleCgroup = await createModuleCgroup(support, manifest.name, isolateHostCgroupLimits(limits));
        await moveProcesses(w.sandboxed.cgroup, moduleCgroup);
      }
      if (w.exited) throw new Error("it exited during the hand-over");
      w.started.channel.send(handoverMessage(manifest, bundleCode, limits));
      // Its pool cgroup is empty now: removed after the hand-over is on its way, not before.
      if (moduleCgroup) void w.sandboxed.release().catch((err: Error) => this.opts.log.warn(`could not remove a pool cgroup after a hand-over: ${err.message}`));
    } catch (err) {
      this.opts.log.warn(`could not hand a pooled isolate host to ${manifest.name} (${(err as Error).message}): starting a fresh one`);
      w.started.child.kill("SIGKILL");
      await moduleCgroup?.release();
      await w.sandboxed.release();
      this.stats.missed++;
      return undefined;
    }
    this.stats.taken++;
    this.failures = 0;
    const sandboxed: SandboxedSpawn = {
      ...w.sandboxed,
      ...(moduleCgroup ? { cgroup: moduleCgroup, release: moduleCgroup.release } : {}),
    };
    return { started: w.started, sandboxed, uid: w.uid, waitedMs: Date.now() - w.bootedAt };
  }

  /** Stop every waiting pool process (the host is stopping). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    clearTimeout(this.settleTimer);
    const all = this.idle.splice(0);
    for (const w of all) {
      w.done = true;
      w.started.child.kill("SIGKILL");
    }
    await Promise.all(all.map((w) => w.sandboxed.release()));
    // A boot in progress writes the uid table and makes a cgroup: the host's stop waits for it
    // (it sees `closed` and undoes what it made), so nothing of the pool outlives the stop.
    await this.boot_?.done.catch(() => undefined);
  }

  private schedule(): void {
    if (this.closed || this.stopped || this.booting || this.starts > 0 || this.opts.size === 0 || !this.wanted || this.retryTimer || this.settleTimer) return;
    const key = profileKey(this.wanted);
    const live = this.idle.filter((w) => !w.exited);
    if (live.filter((w) => w.key === key).length >= this.opts.size) return;
    // Full of another profile: the oldest of those makes room for the one starts want now.
    if (live.length >= this.opts.size) {
      const old = live.find((w) => w.key !== key)!;
      this.idle.splice(this.idle.indexOf(old), 1);
      old.done = true;
      old.started.child.kill("SIGKILL");
      void old.sandboxed.release();
    }
    this.booting = true;
    const profile = this.wanted;
    let spawnedNow!: () => void;
    const spawned = new Promise<void>((r) => (spawnedNow = r));
    const done = this.boot(profile, spawnedNow);
    void done.finally(spawnedNow).catch(() => undefined);
    this.boot_ = { key, done, spawned };
    void done.finally(() => {
      if (this.boot_?.done === done) this.boot_ = undefined;
    }).then(
      () => {
        this.booting = false;
        this.schedule();
      },
      (err: Error) => {
        this.booting = false;
        this.bootFailed(`could not start a pooled isolate host: ${err.message}`);
      },
    );
  }

  /** Boots one pool process of `profile`; `spawned` once it is in `idle` (a take can find it). */
  private async boot(profile: PoolProfile, spawned: () => void): Promise<void> {
    const uid = await this.opts.freshUid();
    const releaseUid = () => void this.opts.releaseUid?.(uid).catch((err: Error) => this.opts.log.warn(`could not give back the claim of single-use uid ${uid}: ${err.message}`));
    let sandboxed: SandboxedSpawn;
    try {
      sandboxed = await pooledIsolateSpawnSpec(profile, uid);
    } catch (err) {
      releaseUid();
      throw err;
    }
    if (this.closed) {
      await sandboxed.release();
      releaseUid();
      return;
    }
    // Outside any module's scope (a refill may be set off by some module's exit): adopted, it
    // runs in its own module's (runtime/process.ts).
    let started: StartedChild;
    try {
      started = await moduleScope.exit(() => spawnChild(sandboxed.spec, this.opts.output));
    } catch (err) {
      await sandboxed.release();
      releaseUid();
      throw err;
    }
    // Its uid is its until it exits, in the pool or handed to a module.
    started.child.once("exit", releaseUid);
    if (this.closed) {
      started.child.kill("SIGKILL");
      await sandboxed.release();
      return;
    }
    let readyNow!: (ok: boolean) => void;
    const w: Warm = { key: profileKey(profile), uid, started, sandboxed, bootedAt: Date.now(), exited: false, done: false, isReady: false, ready: new Promise((r) => (readyNow = r)) };
    this.stats.booted++;
    this.idle.push(w);
    spawned();
    // Until hand-over it sends one message, "pool_ready"; anything else means it is broken.
    const onMessage = (body: unknown) => {
      if (w.done) return;
      if (!w.isReady && (body as { t?: unknown })?.t === "pool_ready") {
        w.isReady = true;
        w.bootedAt = Date.now();
        readyNow(true);
        return;
      }
      started.child.kill("SIGKILL");
    };
    started.channel.on("message", onMessage);
    started.child.once("exit", (code, signal) => {
      w.exited = true;
      readyNow(false);
      if (w.done) return;
      const i = this.idle.indexOf(w);
      if (i >= 0) this.idle.splice(i, 1);
      void sandboxed.release();
      this.stats.diedWaiting++;
      this.bootFailed(`a pooled isolate host (uid ${uid}) exited while it waited (${signal ? `killed by ${signal}` : `exit code ${code}`})`);
    });
    // One boot at a time: the next waits until this one has booted (or is given up on).
    let timer: NodeJS.Timeout | undefined;
    const booted = await Promise.race([w.ready, new Promise<boolean>((r) => (timer = setTimeout(() => r(false), BOOT_TIMEOUT_MS)))]);
    clearTimeout(timer);
    if (!booted && !w.exited) {
      this.opts.log.warn(`a pooled isolate host (uid ${uid}) did not boot within ${BOOT_TIMEOUT_MS} ms: stopping it`);
      started.child.kill("SIGKILL");
    }
  }

  private bootFailed(message: string): void {
    if (this.closed) return;
    this.failures++;
    if (this.failures >= MAX_BOOT_FAILURES) {
      this.stopped = true;
      this.opts.log.error(`${message}; ${this.failures} in a row: the isolate pool stops refilling, TypeScript modules start without it (see the log above for why; restart the host to try again, or set [host] isolate_pool = 0)`);
      return;
    }
    this.opts.log.warn(`${message}: starting a replacement`);
    // A short pause, longer each time, so a failing boot does not spin.
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.schedule();
    }, 200 * 2 ** (this.failures - 1));
    this.retryTimer.unref();
  }
}
