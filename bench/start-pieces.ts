// What a TypeScript module's start costs besides booting Node, piece by piece (the host-side
// steps ModuleManager.start takes before the isolate host runs): verification with the bundle
// (snapshot, hash, esbuild), the uid, the sandbox wrapper (sandboxSpawnSpec: checks, seccomp
// file, launcher), the module's cgroup, and the launcher chain itself (sh -> prlimit -> bwrap
// -> setpriv -> a trivial program, vs the program alone). Bounded: N rounds, interleaved.
// Run: node --no-node-snapshot --import tsx bench/start-pieces.ts [rounds]

import { spawn } from "node:child_process";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { loadManifest } from "../host/manifest.ts";
import { limitsFor } from "../host/config.ts";
import { verifyForStart } from "../host/verify/module.ts";
import { isolateHostCgroupLimits, sandboxedIsolateSpawnSpec } from "../runtime/isolate/runtime.ts";
import { createModuleCgroup, detectSandbox, sandboxSpawnSpec, UidTable } from "../runtime/sandbox/index.ts";
import { MODULES_DIR, benchConfig, makeTempDir, removeTempDir } from "./common.ts";
import { writeFile } from "node:fs/promises";

const ROUNDS = Number(process.argv[2] ?? 10);
const MODULE = "bench-trivial";
const dir = await makeTempDir("pieces");
const manifest = await loadManifest(path.join(MODULES_DIR, "trivial", "module.toml"));
const config = benchConfig(dir, MODULE);
const limits = limitsFor(config, MODULE);
const table = await UidTable.open(path.join(dir, "uids.json"));
const caps = await detectSandbox();
const log = { info() {}, warn() {}, error() {} } as never;
const t: Record<string, number[]> = { verify: [], uid: [], wrapper: [], cgroup: [], chainTrue: [], bareTrue: [] };
const run = (command: string, args: string[], env: Record<string, string>) => new Promise<void>((resolve) => {
  const c = spawn(command, args, { env, stdio: ["ignore", "ignore", "ignore", "pipe"] });
  c.on("exit", () => resolve());
});
try {
  for (let i = 0; i < ROUNDS + 1; i++) {
    let t0 = performance.now();
    const verified = await verifyForStart(manifest, config, undefined, log);
    const verify = performance.now() - t0;
    t0 = performance.now();
    const uid = await table.freshUid();
    const uidMs = performance.now() - t0;
    const bundle = path.join(dir, `b${i}.js`);
    await writeFile(bundle, verified.snapshot.bundle!.code, { mode: 0o600 });
    t0 = performance.now();
    const s = await sandboxedIsolateSpawnSpec(manifest, bundle, limits, { mode: "auto", uid });
    const wrapper = performance.now() - t0;
    t0 = performance.now();
    const cg = caps.cgroups && caps.cgroups.kind !== "none" ? await createModuleCgroup(caps.cgroups, MODULE, isolateHostCgroupLimits(limits)) : undefined;
    const cgroup = performance.now() - t0;
    await cg?.release();
    // The launcher chain around /bin/true, as around node.
    const chain = await sandboxSpawnSpec({ command: "/usr/bin/true", args: [], env: { PATH: "/usr/bin:/bin" }, cwd: "/" }, {
      dataDir: null, moduleDir: null, binary: "/usr/bin/true", readOnly: [], network: false,
      limits: { address_space_mb: 0, open_files: 128, processes: 64, cpu_seconds: 0, file_size_mb: 0 }, uid, gid: uid, mode: "auto",
    });
    t0 = performance.now();
    await run(chain.spec.command, chain.spec.args, chain.spec.env);
    const chainTrue = performance.now() - t0;
    t0 = performance.now();
    await run("/usr/bin/true", [], {});
    const bareTrue = performance.now() - t0;
    void s;
    if (i === 0) continue; // warm-up
    t.verify!.push(verify); t.uid!.push(uidMs); t.wrapper!.push(wrapper); t.cgroup!.push(cgroup); t.chainTrue!.push(chainTrue); t.bareTrue!.push(bareTrue);
  }
} finally {
  await removeTempDir(dir);
}
const med = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
console.log(`load ${os.loadavg().map((l) => l.toFixed(1)).join(" ")}, ${ROUNDS} rounds, medians:`);
for (const [k, v] of Object.entries(t)) console.log(`  ${k.padEnd(10)} ${med(v).toFixed(1)} ms`);
