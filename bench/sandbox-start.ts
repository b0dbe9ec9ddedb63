// Sandbox start: what the sandbox adds to starting a process, and a native module, next to the
// same start without it, in the same run.
//
// Process level: spawn -> exit of `true` (the binary the sandbox detection found, /usr/bin/true
// on a merged-/usr system), bare and under sandboxSpawnSpec at the best level this machine
// offers and, where it exists, the degraded one (runtime/sandbox/index.ts: full = sh -> prlimit
// -> bwrap (namespaces, mounts, seccomp) -> setpriv -> program; degraded = the util-linux chain,
// or bubblewrap without a uid drop on a non-root host). The spawned chain is printed in the
// notes as it was built. Building the spec (sandboxSpawnSpec: policy checks, the seccomp
// program file, the launcher's scan of inherited fds) is timed on its own, as a piece.
//
// Module level: a minimal native module (bench/fixtures/native-ready.ts, bundled into one
// script: connect, hello -> welcome, ready), from spawn() to `ready`:
//   - baseline: nativeSpawnSpec + spawnModuleProcess, no sandbox;
//   - the same spec through sandboxedNativeSpawnSpec at each level, then spawnModuleProcess;
//   - the real path, for context: a fresh ModuleManager's prepare() + startAll() -> running
//     (discovery, verification, the private copy of the binary, the sandbox "auto" picks).
// If modules/rust-example has been built (scripts/build-rust.sh), its binary, which starts
// without a Node boot (4 requests before ready), bare and at the best level, as references.
//
// Runs of each kind take turns, so drift in machine load hits all of them; one warm-up run of
// each is left out.

import { spawn } from "node:child_process";
import { access, chmod, mkdir } from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { ModuleManager } from "../host/manager.ts";
import { volumesReleased } from "../runtime/sandbox/volume.ts";
import { EventBus } from "../host/events/bus.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { ApiHub } from "../host/hub.ts";
import { loadManifest, type ModuleManifest } from "../host/manifest.ts";
import { resolveGrants, type EffectiveGrants } from "../capabilities/grants.ts";
import { ModuleStore } from "../storage/store.ts";
import { nativeSpawnSpec, sandboxedNativeSpawnSpec } from "../runtime/native/runtime.ts";
import type { ModuleProcess, SpawnSpec } from "../runtime/process.ts";
import { spawnModule, type HostSession } from "../host/session.ts";
import { DEFAULT_SANDBOX_LIMITS, detectSandbox, moduleUid, sandboxSpawnSpec, type SandboxCapabilities, type SandboxMode } from "../runtime/sandbox/index.ts";
import { ROOT, atCleanup, benchConfigFor, captureLogger, dumpLog, makeTempDir, removeTempDir, track, type Benchmark, type Row } from "./common.ts";
import { writeNativeModule } from "./modules.ts";
import { summarise } from "./stats.ts";

const MODULE = "bench-native-ready";
const PROCESS_RUNS = 30;
const MODULE_RUNS = 15;
const RUST_DIR = path.join(ROOT, "modules", "rust-example");

/** A sandbox level to measure: its label and the mode that gives it on this machine. */
interface Level {
  label: string;
  mode: SandboxMode;
}

/** The best level, and the degraded one when the best is full and the fallback exists. */
function levelsOf(caps: SandboxCapabilities): Level[] {
  if (caps.best === "full") return [{ label: "full", mode: "full" }, ...(caps.fallback ? [{ label: "degraded", mode: "degraded" as const }] : [])];
  if (caps.best === "degraded") return [{ label: "degraded", mode: "auto" }];
  return [];
}

/** A native module to start, with what its calls need. */
interface Subject {
  manifest: ModuleManifest;
  grants: EffectiveGrants;
  store: ModuleStore | undefined;
  dataRoot: string;
}

interface Start {
  spec: number;
  hello: number;
  ready: number;
  level: string;
}

export const sandboxStart: Benchmark = {
  name: "sandbox-start",
  title: "Sandbox start: /usr/bin/true and a minimal native module, sandboxed vs bare",
  async run(): Promise<Row[]> {
    const caps = await detectSandbox();
    const levels = levelsOf(caps);
    const chain = await EmbeddedChain.create({ matureBlocks: 0 });
    const tmp = await makeTempDir("sbx");
    // The degraded (util-linux) sandbox shows the module the host's tree: its uid must be able
    // to pass through the temp directory to reach its script and data directory.
    await chmod(tmp, 0o711);
    let rustStore: ModuleStore | undefined;
    try {
      const rows: Row[] = [];
      const notes: string[] = [];
      if (levels.length === 0) notes.push(`no sandbox on this machine (${caps.problems.join("; ")}): only the bare runs`);

      // ---- process level -------------------------------------------------------------------
      const trueBin = caps.tools.true ?? "/usr/bin/true";
      const bare: SpawnSpec = { command: trueBin, args: [], env: { PATH: "/usr/bin:/bin" }, cwd: "/" };
      const policy = (mode: SandboxMode) => {
        const uid = moduleUid("bench-true");
        return { dataDir: null, moduleDir: null, binary: trueBin, network: false, limits: { ...DEFAULT_SANDBOX_LIMITS }, uid, gid: uid, mode };
      };
      const proc = { bare: [] as number[], run: levels.map(() => [] as number[]), spec: levels.map(() => [] as number[]) };
      const chains: string[] = levels.map(() => "");
      for (let i = -1; i < PROCESS_RUNS; i++) {
        const b = await spawnToExit(bare);
        if (i >= 0) proc.bare.push(b);
        for (const [j, level] of levels.entries()) {
          const t0 = performance.now();
          const s = await sandboxSpawnSpec(bare, policy(level.mode));
          const t1 = performance.now();
          const run = await spawnToExit(s.spec);
          if (i < 0) {
            chains[j] = `level "${s.level}", chain ${chainOf(s.spec, caps, trueBin)}`;
            continue;
          }
          proc.spec[j]!.push(t1 - t0);
          proc.run[j]!.push(run);
        }
      }
      const bTrue = `${trueBin} bare: spawn -> exit`;
      for (const [j, level] of levels.entries()) {
        rows.push(
          { what: `${trueBin}, ${level.label} sandbox: spawn -> exit`, kind: "result", unit: "ms", stats: summarise(proc.run[j]!), vs: bTrue, note: chains[j] },
          { what: `  building the spec: sandboxSpawnSpec() [${level.label}]`, kind: "piece", unit: "ms", stats: summarise(proc.spec[j]!) },
        );
      }
      rows.push({ what: bTrue, kind: "baseline", unit: "ms", stats: summarise(proc.bare) });

      // ---- module level --------------------------------------------------------------------
      const modulesDir = path.join(tmp, "modules");
      const dir = await writeNativeModule(modulesDir, MODULE, "native-ready.ts");
      const node: Subject = { manifest: await loadManifest(path.join(dir, "module.toml")), grants: new Map(), store: undefined, dataRoot: path.join(tmp, "data") };
      const rust = await rustSubject(tmp);
      rustStore = rust?.store;
      if (!rust) notes.push(`${path.relative(ROOT, RUST_DIR)} is not built: no Rust references (scripts/build-rust.sh builds it)`);
      const mod = { bare: [] as number[], bareHello: [] as number[], run: levels.map(() => [] as number[]), hello: levels.map(() => [] as number[]), spec: levels.map(() => [] as number[]) };
      const manager: number[] = [];
      const rustRuns = { bare: [] as number[], best: [] as number[] };
      let managerLevel = "";
      let rustFailed = false;
      const best = levels[0];
      for (let i = -1; i < MODULE_RUNS; i++) {
        const b = await moduleStart(chain, node, "bare");
        const sandboxed: Start[] = [];
        for (const level of levels) sandboxed.push(await moduleStart(chain, node, level.mode));
        const m = await managerStart(chain, modulesDir);
        let rb: Start | undefined;
        let rs: Start | undefined;
        if (rust && !rustFailed) {
          try {
            rb = await moduleStart(chain, rust, "bare");
            rs = best && (await moduleStart(chain, rust, best.mode));
          } catch (err) {
            // A reference only: rust-example asks for host services (metrics) that a bare
            // session does not have, depending on its version. Say so and go on without it.
            rustFailed = true;
            notes.push(`no Rust references: rust-example did not start outside the manager (${(err as Error).message.split("\n")[0]})`);
          }
        }
        if (i < 0) continue;
        mod.bare.push(b.hello + b.ready);
        mod.bareHello.push(b.hello);
        for (const [j, s] of sandboxed.entries()) {
          mod.run[j]!.push(s.hello + s.ready);
          mod.hello[j]!.push(s.hello);
          mod.spec[j]!.push(s.spec);
        }
        manager.push(m.ms);
        managerLevel = m.level;
        if (rb) rustRuns.bare.push(rb.hello + rb.ready);
        if (rs) rustRuns.best.push(rs.hello + rs.ready);
      }
      const bMod = "native module bare: nativeSpawnSpec, spawn -> ready";
      for (const [j, level] of levels.entries()) {
        rows.push(
          { what: `native module, ${level.label} sandbox: spawn -> ready`, kind: "result", unit: "ms", stats: summarise(mod.run[j]!), vs: bMod },
          { what: `  spawn -> hello [${level.label}]`, kind: "piece", unit: "ms", stats: summarise(mod.hello[j]!) },
          { what: `  building the spec: sandboxedNativeSpawnSpec() [${level.label}]`, kind: "piece", unit: "ms", stats: summarise(mod.spec[j]!) },
        );
      }
      rows.push(
        { what: `native module via ModuleManager: prepare()+startAll() -> running`, kind: "result", unit: "ms", stats: summarise(manager), vs: bMod, note: `sandbox "${managerLevel}" (mode auto); includes discovery, verification, the binary's private copy, the spec` },
        { what: bMod, kind: "baseline", unit: "ms", stats: summarise(mod.bare) },
        { what: "  spawn -> hello [bare]", kind: "piece", unit: "ms", stats: summarise(mod.bareHello) },
      );
      if (rust && best && !rustFailed) {
        const bRust = "rust-example bare: spawn -> ready";
        rows.push(
          { what: `rust-example, ${best.label} sandbox: spawn -> ready`, kind: "reference", unit: "ms", stats: summarise(rustRuns.best), vs: bRust },
          { what: bRust, kind: "reference", unit: "ms", stats: summarise(rustRuns.bare) },
        );
      }
      if (notes.length > 0) rows[0]!.note = [rows[0]!.note, ...notes].filter(Boolean).join("; ");
      return rows;
    } finally {
      await rustStore?.close();
      await chain.close();
      await removeTempDir(tmp);
    }
  },
};

/** The programs a spawn spec chains through, by name ("sh -> prlimit -> bwrap -> setpriv -> true"). */
function chainOf(spec: SpawnSpec, caps: SandboxCapabilities, binary: string): string {
  const tools = new Set([...Object.values(caps.tools).filter((t): t is string => t !== null), binary]);
  return [spec.command, ...spec.args].filter((a) => tools.has(a)).map((a) => path.basename(a)).join(" -> ");
}

/** Spawn `spec` with nothing on stdin/stdout; the time until it has exited (status 0 required). */
function spawnToExit(spec: SpawnSpec): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = track(spawn(spec.command, spec.args, { cwd: spec.cwd, env: spec.env, stdio: ["ignore", "ignore", "pipe"] }));
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    child.once("error", reject);
    child.once("exit", (code, signal) => {
      const t1 = performance.now();
      if (code === 0) resolve(t1 - t0);
      else reject(new Error(`${spec.command} ${spec.args.slice(0, 3).join(" ")} ... failed (${signal ?? `code ${code}`}): ${stderr.slice(0, 500)}`));
    });
  });
}

/** Start `m` outside the manager, bare or in the sandbox `mode`; timed: building the spec, spawn -> hello, hello -> ready. */
async function moduleStart(chain: EmbeddedChain, m: Subject, mode: SandboxMode | "bare"): Promise<Start> {
  const { logger, records } = captureLogger();
  const name = m.manifest.name;
  const dataDir = path.join(m.dataRoot, name);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  let proc: ModuleProcess<HostSession> | undefined;
  try {
    const t0 = performance.now();
    let spec = nativeSpawnSpec(m.manifest, dataDir, {});
    let level = "none";
    if (mode !== "bare") {
      const s = await sandboxedNativeSpawnSpec(m.manifest, dataDir, {}, { grants: m.grants, limits: { ...DEFAULT_SANDBOX_LIMITS }, mode });
      spec = s.spec;
      level = s.level;
    }
    const t1 = performance.now();
    proc = await spawnModule(spec, {
      module: name,
      grants: m.grants,
      hub: new ApiHub(),
      bus: new EventBus(),
      logger,
      call: { module: name, chain, store: m.store, config: {}, dataDir },
      handshakeTimeoutMs: 20_000,
    }, logger);
    track(proc.child);
    const died = proc.exited.then((info) => {
      throw new Error(`${name} (${mode}) exited during start-up (${info.signal ?? `code ${info.code}`})\n${dumpLog(records)}`);
    });
    died.catch(() => {});
    await Promise.race([proc.session.handshake, died]);
    const t2 = performance.now();
    await Promise.race([proc.session.ready, died]);
    const t3 = performance.now();
    return { spec: t1 - t0, hello: t2 - t1, ready: t3 - t2, level };
  } catch (err) {
    // Say which module and which sandbox mode failed, with what it logged.
    throw new Error(`${name} (${mode}): ${(err as Error).message}\n${dumpLog(records)}`);
  } finally {
    await proc?.stop("benchmark done", { graceMs: 2000, termMs: 1000 });
  }
}

/** The real path: a fresh manager, prepare() + startAll(); then a graceful shutdown. */
async function managerStart(chain: EmbeddedChain, modulesDir: string): Promise<{ ms: number; level: string }> {
  const dir = await makeTempDir("sbx-mgr");
  await chmod(dir, 0o711);
  const { logger, records } = captureLogger();
  const config = benchConfigFor(dir, { [MODULE]: {} }, modulesDir);
  const manager = new ModuleManager({ config, chain, bus: new EventBus(), logger });
  // A process the manager starts is only reachable through it (and runs in its own group).
  const forget = atCleanup(() => manager.processOf(MODULE)?.kill());
  try {
    const t0 = performance.now();
    await manager.prepare();
    await manager.startAll();
    const t1 = performance.now();
    const status = manager.status().find((s) => s.name === MODULE);
    if (status?.state !== "running") throw new Error(`${MODULE} did not start: ${status?.problem ?? "no status"}\n${dumpLog(records)}`);
    return { ms: t1 - t0, level: status.sandbox ?? "(not reported)" };
  } finally {
    await manager.shutdown().catch(() => {});
    // Its data volume is unmounted after its process is gone, as the host's stop waits for
    // (host/host.ts): removing the directory before that fails with EBUSY.
    await volumesReleased(config.modules.data_dir).catch(() => {});
    forget();
    await removeTempDir(dir);
  }
}

/** modules/rust-example, if its binary has been built: granted what it requests, with a store of its own. */
async function rustSubject(tmp: string): Promise<Subject | undefined> {
  let manifest: ModuleManifest;
  try {
    manifest = await loadManifest(path.join(RUST_DIR, "module.toml"));
    await access(path.resolve(manifest.dir, manifest.entry_point));
  } catch {
    return undefined;
  }
  const grants = resolveGrants(manifest.capabilities, manifest.capabilities, []).effective;
  const store = await ModuleStore.open(path.join(tmp, "rust-store"), undefined, { label: manifest.name });
  return { manifest, grants, store, dataRoot: path.join(tmp, "data") };
}
