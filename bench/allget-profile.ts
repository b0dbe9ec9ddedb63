// Profiling aid for the TS Promise.all of 1000 storage gets (not part of `npm run bench`):
// runs bench/fixtures/modules/isolate-paths (its sequential phases cut short) under a
// ModuleManager and prints per round of Promise.all: the module's wall time (its own clock), and
// the CPU time of the host process and of the module's process tree (every thread, /proc
// schedstat) over the timed rounds. CPU time is what a loaded machine inflates least. Raw
// classic-level's Promise.all of 1000 gets (wall and this process's CPU) is measured between runs.
//   node --no-node-snapshot --import tsx bench/allget-profile.ts [--runs 3]
// To profile, run the host under --cpu-prof (--cpu-prof-dir=DIR) and, for the isolate host, add
// "--cpu-prof", "--cpu-prof-dir=DIR" to its arguments in runtime/isolate/runtime.ts by hand and
// set ALLGET_UNSANDBOXED=1 (--cpu-prof needs a writable directory, which the sandbox does not give).
import path from "node:path";
import os from "node:os";
import { parseArgs } from "node:util";
import { performance } from "node:perf_hooks";
import { ClassicLevel } from "classic-level";
import { EmbeddedChain } from "../chain/embedded.ts";
import { decodeValue, encodeKey, encodeValue } from "../storage/codec.ts";
import { makeTempDir, processTree, removeTempDir, treeCpuMs } from "./common.ts";
import { summarise } from "./stats.ts";
import { ISOLATE_PATHS_MODULE, runIsolatePathsModule } from "./isolate-paths-module.ts";

const { values } = parseArgs({ options: { runs: { type: "string" } } });
const RUNS = Number(values.runs ?? 3);
const ROUNDS = 30;
const N = 10;
const BATCH = 1000;
const MODULE = ISOLATE_PATHS_MODULE;
const VALUE = { height: 812345, hash: "00000000000000000002a7c4c1e48d76", ok: true };

const hostCpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/**
 * One module run of `rounds` rounds: the module's own wall time per round, and the CPU per round
 * of the host process and of the module's process tree, from the first get of the first timed
 * round to the first get of the last (rounds - 1 whole rounds), taken where the host dispatches them.
 */
async function moduleRun(dir: string, chain: EmbeddedChain, rounds: number): Promise<{ allMs: number; hostMs: number; moduleMs: number }> {
  // The module's gets: 300 warm-up, N sequential, one warm-up round, then the timed rounds.
  const first = 300 + N + BATCH + 1;
  const last = first + (rounds - 1) * BATCH;
  let gets = 0;
  let pids: number[] | undefined;
  const marks: Array<{ host: number; module: number }> = [];
  const fields = await runIsolatePathsModule(dir, chain, {
    config: { n: N, rounds, batch: BATCH },
    unsandboxed: Boolean(process.env.ALLGET_UNSANDBOXED),
    onRequest: (method, manager) => {
      if (method === "storage_get" && (++gets === first || gets === last)) {
        pids ??= processTree(manager.processOf(MODULE)?.pid);
        marks.push({ host: hostCpuMs(), module: treeCpuMs(pids) });
      }
    },
  });
  if (marks.length !== 2) throw new Error(`${MODULE} reported with ${marks.length} marks taken, not 2`);
  return { allMs: (fields as { all_ms: number }).all_ms, hostMs: (marks[1]!.host - marks[0]!.host) / (rounds - 1), moduleMs: (marks[1]!.module - marks[0]!.module) / (rounds - 1) };
}

const dir = await makeTempDir("allget");
const chain = await EmbeddedChain.create({ matureBlocks: 0 });
const raw = new ClassicLevel<Uint8Array, Uint8Array>(path.join(dir, "raw"), { keyEncoding: "view", valueEncoding: "view" });
await raw.open();
const key = encodeKey("k", 1024);
await raw.put(key, encodeValue(VALUE, 1 << 20));
const wall: number[] = [];
const hostCpu: number[] = [];
const moduleCpu: number[] = [];
const base: number[] = [];
const baseCpu: number[] = [];
try {
  for (let run = 0; run < RUNS; run++) {
    const m = await moduleRun(path.join(dir, `m${run}`), chain, ROUNDS);
    wall.push(m.allMs);
    hostCpu.push(m.hostMs);
    moduleCpu.push(m.moduleMs);
    const round = () => Promise.all(Array.from({ length: BATCH }, async () => decodeValue((await raw.get(key))!)));
    await round();
    const c0 = hostCpuMs();
    const t0 = performance.now();
    for (let r = 0; r < ROUNDS; r++) await round();
    base.push((performance.now() - t0) / ROUNDS);
    baseCpu.push((hostCpuMs() - c0) / ROUNDS);
  }
} finally {
  await raw.close();
  await chain.close();
  await removeTempDir(dir);
}
const f = (xs: number[]) => `${xs.map((x) => x.toFixed(1)).join(" ")} (median ${summarise(xs).median.toFixed(1)})`;
const m = summarise(wall).median;
const b = summarise(base).median;
console.log(`Promise.all of ${BATCH} gets, per round, ms: module wall ${f(wall)}; raw classic-level wall ${f(base)}; cost ${(m / b).toFixed(2)}x`);
console.log(`  CPU per round, ms: host ${f(hostCpu)}; module tree ${f(moduleCpu)}; raw classic-level (this process, all threads) ${f(baseCpu)}; load ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}`);
