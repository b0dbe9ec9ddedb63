// Profiling aid for the JSON-RPC path to a TS module's method (not part of `npm run bench`): a
// real Host with bench-rpc-echo and a bare node:http server answering the same bytes (as in
// bench/jsonrpc.ts), ROUNDS alternating rounds of N sequential calls over one keep-alive
// connection each. Per round: the latency median and the CPU per call of this process (client
// and server; its main thread apart from its other threads) and, for the host, of the isolate
// host's process tree (/proc): CPU time is steadier than wall time on a loaded machine. Run it
// under --cpu-prof to profile the host; RPC_PROFILE_SANDBOX_OFF=1 runs the module unsandboxed
// (perf -p on the isolate host, or --cpu-prof added to its arguments in
// runtime/isolate/runtime.ts, need that):
// --native serves the method from a native module instead (bench/fixtures/rpc-echo-native.ts):
// host -> the module's process -> back, no isolate host.
//   node --no-node-snapshot [--cpu-prof --cpu-prof-dir=DIR] --import tsx bench/rpc-profile.ts [--n 3000] [--rounds 3] [--native]
import http from "node:http";
import type { AddressInfo } from "node:net";
import { readFile, readdir } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import { performance } from "node:perf_hooks";
import { Host } from "../host/host.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { benchConfigFor, captureLogger, FAIR_SHARE_RAISED, makeTempDir, removeTempDir, waitForRecord } from "./common.ts";
import { copyModule, writeNativeModule } from "./modules.ts";
import { summarise } from "./stats.ts";

const { values } = parseArgs({ options: { n: { type: "string", default: "3000" }, rounds: { type: "string", default: "3" }, native: { type: "boolean", default: false } } });
const N = Number(values.n);
const ROUNDS = Number(values.rounds);
const MODULE = values.native ? "bench-rpc-echo-native" : "bench-rpc-echo";
const CALL = JSON.stringify({ jsonrpc: "2.0", id: 1, method: `${MODULE}.echo`, params: { a: 1, b: "two" } });
const TICK_US = 1e6 / 100; // USER_HZ

/** CPU time (utime + stime, microseconds) of this process's main thread and of its other threads (V8's GC helpers, libuv's pool). */
async function ownThreadsUs(): Promise<{ main: number; others: number }> {
  const out = { main: 0, others: 0 };
  for (const t of await readdir("/proc/self/task").catch(() => [] as string[])) {
    const stat = await readFile(`/proc/self/task/${t}/stat`, "utf8").catch(() => "");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const us = (Number(f[11]) + Number(f[12])) * TICK_US || 0;
    if (Number(t) === process.pid) out.main += us;
    else out.others += us;
  }
  return out;
}

/** utime and stime of every process under `pid` (itself included), in microseconds. */
async function treeCpuUs(pid: number): Promise<{ user: number; sys: number }> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const total = { user: Number(f[11]) * TICK_US || 0, sys: Number(f[12]) * TICK_US || 0 };
  const tasks = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  for (const t of tasks) {
    const kids = (await readFile(`/proc/${pid}/task/${t}/children`, "utf8").catch(() => "")).trim();
    for (const k of kids ? kids.split(" ") : []) {
      const c = await treeCpuUs(Number(k));
      total.user += c.user;
      total.sys += c.sys;
    }
  }
  return total;
}

const tmp = await makeTempDir("rpcprof");
const chain = await EmbeddedChain.create({ matureBlocks: 1 });
const modulesDir = path.join(tmp, "modules");
if (values.native) await writeNativeModule(modulesDir, MODULE, "rpc-echo-native.ts", ["register_rpc_endpoint"]);
else await copyModule("rpc-echo", modulesDir, MODULE);
const config = benchConfigFor(path.join(tmp, "host"), { [MODULE]: { allow: ["register_rpc_endpoint"], limits: { ...FAIR_SHARE_RAISED, start_timeout_ms: 120_000 } } }, modulesDir);
config.rpc.port = 0;
if (process.env.RPC_PROFILE_SANDBOX_OFF) config.modules.sandbox = "off"; // to profile the isolate host (--cpu-prof needs a writable directory)
config.rpc.cookie_file = path.join(tmp, "cookie");
const { logger, records } = captureLogger();
const host = new Host({ config, logger, chain });
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
let bare: http.Server | undefined;
try {
  await host.start();
  await waitForRecord(records, (r) => r.source === MODULE && r.message === "serving", 120_000);
  const port = host.rpcServer!.address!.port;
  const auth = `Basic ${Buffer.from((await readFile(config.rpc.cookie_file, "utf8")).trim()).toString("base64")}`;
  const post = (to: number) => new Promise<string>((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port: to, method: "POST", path: "/", agent, headers: { "Content-Type": "application/json", "Content-Length": CALL.length, Authorization: auth } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => (res.statusCode === 200 ? resolve(Buffer.concat(chunks).toString("utf8")) : reject(new Error(`HTTP ${res.statusCode}`))));
    });
    req.on("error", reject);
    req.end(CALL);
  });
  const answer = await post(port);
  if (!answer.includes('"echoed"')) throw new Error(`unexpected answer: ${answer}`);
  bare = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      JSON.parse(Buffer.concat(chunks).toString("utf8"));
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(answer);
    });
  });
  await new Promise<void>((resolve) => bare!.listen(0, "127.0.0.1", resolve));
  const barePort = (bare.address() as AddressInfo).port;
  const round = async (to: number) => {
    const lat: number[] = [];
    const selfBefore = process.cpuUsage();
    const threadsBefore = await ownThreadsUs();
    const treeBefore = await treeCpuUs(process.pid);
    for (let i = 0; i < N; i++) {
      const t0 = performance.now();
      await post(to);
      lat.push(performance.now() - t0);
    }
    const self = process.cpuUsage(selfBefore);
    const threads = await ownThreadsUs();
    const selfUs = self.user + self.system;
    const tree = await treeCpuUs(process.pid);
    const user = tree.user - treeBefore.user - self.user;
    const sys = tree.sys - treeBefore.sys - self.system;
    const main = (threads.main - threadsBefore.main) / N;
    const others = (threads.others - threadsBefore.others) / N;
    return { median: summarise(lat).median * 1000, self: selfUs / N, selfSys: self.system / N, main, others, children: (user + sys) / N, childrenSys: sys / N };
  };
  for (let i = 0; i < 300; i++) await post(port);
  for (let i = 0; i < 300; i++) await post(barePort);
  for (let r = 0; r < ROUNDS; r++) {
    const b = await round(barePort);
    const m = await round(port);
    console.log(`round ${r + 1}, n ${N}: bare node:http ${b.median.toFixed(1)} us, CPU/call ${b.self.toFixed(1)} us (sys ${b.selfSys.toFixed(1)}) | module method ${m.median.toFixed(1)} us (${(m.median / b.median).toFixed(2)}x), CPU/call client+host ${m.self.toFixed(1)} us (sys ${m.selfSys.toFixed(1)}), isolate host ${m.children.toFixed(1)} us (sys ${m.childrenSys.toFixed(1)})`);
    // The client runs on this main thread in both: the difference is what the host's main thread
    // does beyond the bare server per call (ticks of 10 ms: use thousands of calls per round).
    console.log(`  main thread CPU/call: bare ${b.main.toFixed(1)} us, module method ${m.main.toFixed(1)} us (host beyond the bare server: ${(m.main - b.main).toFixed(1)} us); other threads (GC, pool): bare ${b.others.toFixed(1)} us, module method ${m.others.toFixed(1)} us`);
  }
} finally {
  agent.destroy();
  bare?.close();
  await host.stop("profile done").catch(() => {});
  await chain.close();
  await removeTempDir(tmp);
}
