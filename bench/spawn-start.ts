// What forking module processes costs the host's loop: the spawner (runtime/sandbox/spawner.ts)
// against the host forking them itself (spawnModulesDirectly, as before the spawner), in the
// same run, interleaved. Not part of `npm run bench` (it measures the loop, not a path's speed;
// it needs the sandbox of the machine): run it alone,
//   node_modules/.bin/node --import=tsx --no-node-snapshot bench/spawn-start.ts [cycles] [storm seconds]
// The bench process is made host-sized first (256 MiB touched, ~500k live objects: a fork
// copies the page tables of all of it), then:
// 1. start/stop cycles: a native module (the Node fixture native-ready) and a TypeScript module
//    (trivial, no isolate pool: each start forks a fresh isolate host) loaded and unloaded by a
//    real ModuleManager, modes alternating cycle by cycle; the loop's lateness (a 1 ms interval,
//    charged to the mode running then: p50/p99/max), the host's CPU per module start
//    (process.cpuUsage over the load), and the start's wall time.
// 2. a restart storm: 8 native modules (Node) that exit 50 ms after each start's ready, restart = "always",
//    for `storm seconds` per mode, modes alternating twice; the loop's lateness and the latency
//    of an HTTP request to a bare node:http server on the host's loop (what an RPC call waits
//    for), one every 20 ms.

import { chmod } from "node:fs/promises";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { ModuleManager } from "../host/manager.ts";
import { EventBus } from "../host/events/bus.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { spawnModulesDirectly } from "../runtime/process.ts";
import { holdSpawner, stopSpawner } from "../runtime/sandbox/spawner.ts";
import { benchConfigFor, captureLogger, dumpLog, loopLateness, makeTempDir, removeTempDir, sleep } from "./common.ts";
import { copyModule, writeNativeModule } from "./modules.ts";

const cycles = Number(process.argv[2] ?? 20);
const stormSeconds = Number(process.argv[3] ?? 8);
const MiB = 1024 * 1024;
const load = () => os.loadavg().map((l) => l.toFixed(2)).join(" ");
type Mode = "spawner" | "host";
const MODES: Mode[] = ["spawner", "host"];
const label = (m: Mode) => (m === "spawner" ? "spawner" : "forked by the host (before)");

// Lateness of a 1 ms interval, charged to the mode running then.
const lateness = loopLateness(MODES);
const delays = lateness.delays;
function run(mode: Mode): void {
  spawnModulesDirectly(mode === "host");
  lateness.charge(mode);
}
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * p))] ?? NaN;
};
const f = (x: number) => x.toFixed(1);
const loopLine = (xs: number[]) => `loop lateness p50 ${f(pct(xs, 0.5))} ms, p99 ${f(pct(xs, 0.99))} ms, max ${f(Math.max(...xs))} ms (${xs.length} samples)`;

console.log(`spawn-start bench: ${cycles} start/stop cycles per mode, storm ${stormSeconds} s x 2 per mode; load ${load()}`);
holdSpawner(); // as the host does at boot, before its heap grows
const tmp = await makeTempDir("spawn");
await chmod(tmp, 0o711);
const chain = await EmbeddedChain.create({ matureBlocks: 1 });
const rss = Buffer.alloc(256 * MiB, 1);
const heap: unknown[] = [];
for (let i = 0; i < 500_000; i++) heap.push({ i, s: `entry ${i}`, a: [i] });
try {
  const modulesDir = path.join(tmp, "modules");
  await writeNativeModule(modulesDir, "nat", "native-ready.ts");
  await copyModule("trivial", modulesDir, "ts");
  const STORM = Array.from({ length: 8 }, (_, i) => `crash${i}`);
  for (const name of STORM) await writeNativeModule(modulesDir, name, "native-crash.ts");
  await chmod(modulesDir, 0o755);
  const limits = { start_timeout_ms: 120_000, data_volume: "scan" as const };
  const stormLimits = { ...limits, restart: "always" as const, max_restarts: 1_000_000, restart_window_ms: 1000, quarantine_after: 0 };
  const config = benchConfigFor(tmp, { nat: { limits }, ts: { limits }, ...Object.fromEntries(STORM.map((n) => [n, { limits: stormLimits }])) }, modulesDir);
  config.host.isolate_pool = 0;
  config.modules.enabled_modules = ["nat", "ts"];
  const { logger, records } = captureLogger();
  const manager = new ModuleManager({ config, chain, bus: new EventBus(), logger });
  await manager.prepare();
  await manager.startAll();

  // 1. start/stop cycles.
  const wall: Record<Mode, Record<string, number[]>> = { spawner: { nat: [], ts: [] }, host: { nat: [], ts: [] } };
  const cpu: Record<Mode, Record<string, number[]>> = { spawner: { nat: [], ts: [] }, host: { nat: [], ts: [] } };
  for (const mode of MODES) for (const name of ["nat", "ts"]) {
    // unmeasured: warm each path
    spawnModulesDirectly(mode === "host");
    await manager.unload(name);
    await manager.load(name);
  }
  for (let i = 0; i < cycles; i++) {
    for (const mode of i % 2 === 0 ? MODES : [...MODES].reverse()) {
      run(mode);
      for (const name of ["nat", "ts"]) {
        await manager.unload(name);
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        const s = await manager.load(name);
        wall[mode][name]!.push(performance.now() - t0);
        const c = process.cpuUsage(c0);
        cpu[mode][name]!.push((c.user + c.system) / 1000);
        if (s.state !== "running") throw new Error(`${name} did not start: ${s.problem}\n${dumpLog(records)}`);
      }
      lateness.charge(undefined);
    }
  }
  console.log(`1. start/stop cycles (heap ${(process.memoryUsage().heapUsed / MiB).toFixed(0)} MiB, rss ${(process.memoryUsage().rss / MiB).toFixed(0)} MiB), load ${load()}:`);
  for (const mode of MODES) {
    console.log(`  ${label(mode)}: ${loopLine(delays[mode])}`);
    for (const name of ["nat", "ts"]) {
      console.log(`    ${name === "nat" ? "native" : "TypeScript"} start: host CPU median ${f(pct(cpu[mode][name]!, 0.5))} ms (p90 ${f(pct(cpu[mode][name]!, 0.9))}), wall median ${f(pct(wall[mode][name]!, 0.5))} ms`);
    }
  }
  await manager.unload("nat");
  await manager.unload("ts");

  // 2. a restart storm.
  delays.spawner = [];
  delays.host = [];
  const server = http.createServer((_req, res) => res.end("{}"));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const latency: Record<Mode, number[]> = { spawner: [], host: [] };
  const starts: Record<Mode, number> = { spawner: 0, host: 0 };
  for (let round = 0; round < 2; round++) {
    for (const mode of round % 2 === 0 ? MODES : [...MODES].reverse()) {
      run(mode);
      const before = records.filter((r) => /^restarting crash\d/.test(r.message)).length;
      for (const name of STORM) void manager.load(name).catch(() => undefined);
      const end = Date.now() + stormSeconds * 1000;
      while (Date.now() < end) {
        const t0 = performance.now();
        await new Promise<void>((resolve, reject) => http.get({ port, host: "127.0.0.1", agent, path: "/" }, (res) => { res.resume(); res.on("end", resolve); }).on("error", reject));
        if (lateness.charged() === mode) latency[mode].push(performance.now() - t0);
        await sleep(20);
      }
      lateness.charge(undefined);
      for (const name of STORM) await manager.unload(name).catch(() => undefined);
      starts[mode] += records.filter((r) => /^restarting crash\d/.test(r.message)).length - before;
    }
  }
  server.close();
  agent.destroy();
  console.log(`2. restart storm: 8 native modules exiting after each start, restart = "always", ${2 * stormSeconds} s per mode, load ${load()}:`);
  for (const mode of MODES) {
    const l = latency[mode];
    console.log(`  ${label(mode)}: ${starts[mode]} starts; ${loopLine(delays[mode])}; HTTP request p50 ${f(pct(l, 0.5))} ms, p99 ${f(pct(l, 0.99))} ms, max ${f(Math.max(...l))} ms (${l.length})`);
  }
  await manager.shutdown();
} finally {
  lateness.stop();
  spawnModulesDirectly(false);
  heap.length = 0;
  rss.fill(0, 0, 1);
  await chain.close();
  await stopSpawner();
  await removeTempDir(tmp);
}
