// The runtime kinds, one object each, behind one interface (ModuleRuntime): how a module of
// that kind is verified and made into the spec of its sandboxed process, how that process is
// started (spawned, or a pre-booted isolate host adopted), what the "loaded" log line adds,
// and what a start that never said ready means. The supervisor (host/supervisor.ts) asks the
// module's runtime and never switches on the kind; a new runtime kind is one more object here.

import { access, writeFile } from "node:fs/promises";
import { constants as fsConstants } from "node:fs";
import path from "node:path";
import { sandboxModeFor, type HostConfig, type Limits } from "./config.ts";
import type { ModuleManifest } from "./manifest.ts";
import { ModhostError } from "./errors.ts";
import type { Logger, SourceLogger } from "./log.ts";
import type { Permission } from "../capabilities/catalogue.ts";
import type { GrantRule } from "../capabilities/grants.ts";
import { adoptModule, spawnModule, type HostSession, type SessionOptions } from "./session.ts";
import type { ModuleProcess, StartedChild } from "../runtime/process.ts";
import { nativeSpawnSpec, sandboxedNativeSpawnSpec } from "../runtime/native/runtime.ts";
import type { SandboxLevel } from "../runtime/sandbox/policy.ts";
import type { SandboxedSpawn, UidTable } from "../runtime/sandbox/index.ts";
import { poolProfile, sandboxedIsolateSpawnSpec } from "../runtime/isolate/runtime.ts";
import { IsolatePool, type PoolStats } from "../runtime/isolate/pool.ts";
import { EXIT_MEANINGS } from "../runtime/isolate/exit-codes.ts";
import { materialiseBinary, verifyForStart, type VerifiedModule } from "./verify/module.ts";

/** What a runtime reads of a module's record, and what it fills in (what runs, and how sandboxed). */
export interface RuntimeTarget {
  name: string;
  manifest: ModuleManifest;
  grants: Map<Permission, GrantRule>;
  limits: Limits;
  sha256?: string;
  /** The sandbox level actually applied to the module's process (native, or the isolate host). */
  sandbox?: SandboxLevel;
  /** The verified snapshot of what runs; a restart after a crash runs it again (host/verify/module.ts). */
  verified?: VerifiedModule;
}

/** What the runtimes share with the supervisor: the configuration as it is now, logs, the run directory, the uid table. */
export interface RuntimeEnv {
  config(): HostConfig;
  log: SourceLogger;
  logger: Logger;
  runDir(): Promise<string>;
  uids(): Promise<UidTable>;
  shuttingDown(): boolean;
}

/** A module's process, ready to start: the sandboxed spec, or an already booted child to adopt. */
interface Prepared extends SandboxedSpawn {
  pooled?: StartedChild;
}

export interface ModuleRuntime {
  /** Called as a start begins; what it returns is called once the start has ended, whatever its outcome. */
  beginStart(): () => void;
  /** Verify what runs and say how to start it, in the sandbox the operator asks for. */
  prepare(rec: RuntimeTarget, dataDir: string, config: Record<string, unknown>): Promise<Prepared>;
  /** Start the prepared process with its session: spawn it, or adopt the pre-booted one. */
  launch(prepared: Prepared, session: SessionOptions, logger: Logger): Promise<ModuleProcess<HostSession>>;
  /** Fields the "loaded" log line adds for this runtime. */
  describe(prepared: Prepared): Record<string, string>;
  /** Why a start that did not become ready within `timeoutMs` failed, and the fix. */
  notReady(timeoutMs: number): string;
  /** Release what the runtime holds (at host shutdown). */
  close(): Promise<void>;
}

/** Spawn the spec, or adopt the child a pool booted before. */
async function launch(prepared: Prepared, session: SessionOptions, logger: Logger): Promise<ModuleProcess<HostSession>> {
  return prepared.pooled ? adoptModule(prepared.pooled, session, logger) : spawnModule(prepared.spec, session, logger);
}

function noteSandbox(env: RuntimeEnv, rec: RuntimeTarget, sandboxed: SandboxedSpawn): void {
  rec.sandbox = sandboxed.level;
  for (const note of sandboxed.notes) env.log.warn(`${rec.name} sandbox: ${note}`);
}

/**
 * A native module: inside the sandbox (runtime/sandbox), at the level the machine allows and
 * the operator's [modules] sandbox (or native_sandbox) asks for. A binary that is not there
 * (not built yet) is a clear error.
 */
class NativeRuntime implements ModuleRuntime {
  constructor(private readonly env: RuntimeEnv) {}

  beginStart(): () => void {
    return () => undefined;
  }

  async prepare(rec: RuntimeTarget, dataDir: string, config: Record<string, unknown>): Promise<Prepared> {
    const { env } = this;
    const binary = nativeSpawnSpec(rec.manifest, dataDir, config).command;
    if (!rec.verified) {
      try {
        await access(binary, fsConstants.X_OK);
      } catch {
        throw new ModhostError("not_found", `${rec.name}: entry point ${binary} is missing or not executable`, "build it first: npm run setup builds the shipped native modules (or scripts/build-rust.sh)");
      }
    }
    // Verify (hash, signatures, compatibility) and execute a private copy of the hashed bytes.
    rec.verified = await verifyForStart(rec.manifest, env.config(), rec.verified, env.log);
    rec.sha256 = rec.verified.snapshot.hash.slice("sha256:".length);
    const copy = await materialiseBinary(rec.verified, await env.runDir());
    const { limits } = rec;
    const sandboxed = await sandboxedNativeSpawnSpec(rec.manifest, dataDir, config, {
      binary: copy,
      grants: rec.grants,
      limits: { address_space_mb: limits.address_space_mb, open_files: limits.open_files, processes: limits.processes, cpu_seconds: limits.cpu_seconds, file_size_mb: limits.file_size_mb },
      mode: sandboxModeFor(env.config(), "native"),
      uid: await (await env.uids()).uidFor(rec.name),
      cgroup: { memory_mb: limits.memory_total_mb, processes: limits.processes, cpu_weight: limits.cpu_weight, cpu_max_percent: limits.cpu_max_percent },
    });
    noteSandbox(env, rec, sandboxed);
    return sandboxed;
  }

  launch = launch;

  describe(): Record<string, string> {
    return {};
  }

  notReady(timeoutMs: number): string {
    return `did not call ready() within ${timeoutMs} ms: a native module must send \`ready\` after its registrations (client.ready() in the Rust SDK), see docs/module-guide.md#native-modules-rust-or-any-language; if it needs longer, raise start_timeout_ms in [modules.limits.NAME]`;
  }

  async close(): Promise<void> {}
}

/**
 * A TypeScript module: compiled from the verified snapshot and run in an isolate host, in the
 * sandbox as for a native module; a pre-booted isolate host from the pool ([host] isolate_pool,
 * runtime/isolate/pool.ts) when it has one of the module's profile.
 */
class IsolateRuntime implements ModuleRuntime {
  /** Made at the first TypeScript start. */
  private pool: IsolatePool | undefined;

  constructor(private readonly env: RuntimeEnv) {}

  /** No pool process is booted while a TypeScript module starts: the refill waits for the end. */
  beginStart(): () => void {
    const pool = this.isolatePool();
    pool?.beginStart();
    return () => pool?.endStart();
  }

  async prepare(rec: RuntimeTarget): Promise<Prepared> {
    const { env } = this;
    // Verify (hash, signatures, compatibility); the bundle is built from the hashed snapshot.
    rec.verified = await verifyForStart(rec.manifest, env.config(), rec.verified, env.log);
    const compiled = rec.verified.snapshot.bundle!;
    rec.sha256 = compiled.sha256;
    // A pre-booted isolate host of the same profile, when the pool has one: handed the bundle
    // on its channel, moved into the module's cgroup (runtime/isolate/pool.ts).
    const mode = sandboxModeFor(env.config(), "isolate");
    const taken = await this.isolatePool()?.take(poolProfile(rec.limits, mode), rec.manifest, compiled.code, rec.limits);
    if (taken) {
      noteSandbox(env, rec, taken.sandboxed);
      return { ...taken.sandboxed, pooled: taken.started };
    }
    const bundle = path.join(await env.runDir(), `${rec.name}-${compiled.sha256.slice(0, 16)}.js`);
    await writeFile(bundle, compiled.code, { mode: 0o600 });
    const sandboxed = await sandboxedIsolateSpawnSpec(rec.manifest, bundle, rec.limits, { mode, uid: await (await env.uids()).uidFor(rec.name), cgroup: true });
    noteSandbox(env, rec, sandboxed);
    return sandboxed;
  }

  async launch(prepared: Prepared, session: SessionOptions, logger: Logger): Promise<ModuleProcess<HostSession>> {
    const proc = await launch(prepared, session, logger);
    proc.exitMeanings = EXIT_MEANINGS;
    return proc;
  }

  describe(prepared: Prepared): Record<string, string> {
    return { isolate_pool: prepared.pooled ? "warm" : "cold" };
  }

  notReady(timeoutMs: number): string {
    return `its start() did not finish within ${timeoutMs} ms: the host waits for start() (and what it awaits) before the module counts as running, see docs/module-guide.md#typescript-modules; if it needs longer, raise start_timeout_ms in [modules.limits.NAME]`;
  }

  /** The isolate pool, made on first use; undefined when [host] isolate_pool is 0. */
  private isolatePool(): IsolatePool | undefined {
    const { env } = this;
    const size = env.config().host.isolate_pool;
    // A changed isolate_pool (the config was reloaded) takes effect from the next start.
    if (this.pool && this.pool.size !== size) {
      void this.pool.close();
      this.pool = undefined;
    }
    if (size === 0 || env.shuttingDown()) return undefined;
    this.pool ??= new IsolatePool({
      size,
      freshUid: async () => (await env.uids()).freshUid(),
      releaseUid: async (uid) => (await env.uids()).releaseUid(uid),
      log: env.log,
      output: env.logger.module("isolate-pool"),
    });
    return this.pool;
  }

  /** What the isolate pool did so far (tests, bench); undefined without one. */
  poolStats(): (PoolStats & { waiting: number[] }) | undefined {
    return this.pool ? { ...this.pool.stats, waiting: this.pool.waiting() } : undefined;
  }

  async close(): Promise<void> {
    await this.pool?.close();
  }
}

/** One runtime object per kind a manifest may name. */
export function makeRuntimes(env: RuntimeEnv): { runtimes: Record<ModuleManifest["runtime"], ModuleRuntime>; poolStats: () => ReturnType<IsolateRuntime["poolStats"]> } {
  const isolate = new IsolateRuntime(env);
  return { runtimes: { isolate, native: new NativeRuntime(env) }, poolStats: () => isolate.poolStats() };
}
