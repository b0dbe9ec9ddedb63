// JSON-RPC: an HTTP client calling, through a real Host's RPC server (authentication, body
// limits, JSON parsing, dispatch),
//  - a TypeScript module's method (bench-rpc-echo.echo: host -> isolate host -> isolate ->
//    back),
//  - the same method in a native module (bench-rpc-echo-native.echo: host -> the module's
//    process, a Node ModuleClient bundled from bench/fixtures/rpc-echo-native.ts -> back), and
//  - a host method (chain_info),
// against a bare node:http server in the same process answering with the same bytes (the
// answers are captured from the host first). Goals: a module method within 2x the bare
// server's latency; host methods at least 0.8x its throughput.
//
// The client runs in this process with a keep-alive agent: one connection for the sequential
// latency, CONCURRENCY (and, for the module method, CONCURRENCY_HIGH) connections with one
// request each in flight for throughput. Rounds
// alternate baseline and result. The module runs with its fair-share limits raised
// (FAIR_SHARE_RAISED): what is measured is the path, not requests_per_second.

import http from "node:http";
import type { AddressInfo } from "node:net";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { Host } from "../host/host.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { benchConfigFor, captureLogger, dumpLog, FAIR_SHARE_RAISED, makeTempDir, removeTempDir, waitForRecord, type Benchmark, type Row } from "./common.ts";
import { copyModule, writeNativeModule } from "./modules.ts";
import { summarise } from "./stats.ts";

const MODULE = "bench-rpc-echo";
const ROUNDS = 3;
const SEQUENTIAL = 500;
const TOTAL = 2000;
const CONCURRENCY = 16;
/** A module method is also measured with more in flight: what arrives together crosses into its isolate together. */
const CONCURRENCY_HIGH = 64;
const MODULE_CALL = { jsonrpc: "2.0", id: 1, method: `${MODULE}.echo`, params: { a: 1, b: "two" } };
const NATIVE = "bench-rpc-echo-native";
const NATIVE_CALL = { ...MODULE_CALL, method: `${NATIVE}.echo` };
const HOST_CALL = { jsonrpc: "2.0", id: 1, method: "chain_info", params: [] };

interface Target {
  port: number;
  auth?: string;
}

export const jsonrpc: Benchmark = {
  name: "jsonrpc",
  title: "JSON-RPC over HTTP: a TS and a native module's method and a host method vs bare node:http with the same answer",
  async run(): Promise<Row[]> {
    const tmp = await makeTempDir("rpc");
    const chain = await EmbeddedChain.create({ matureBlocks: 1 });
    const modulesDir = path.join(tmp, "modules");
    await copyModule("rpc-echo", modulesDir, MODULE);
    await writeNativeModule(modulesDir, NATIVE, "rpc-echo-native.ts", ["register_rpc_endpoint"]);
    const grant = { allow: ["register_rpc_endpoint"], limits: { ...FAIR_SHARE_RAISED, start_timeout_ms: 120_000 } };
    const config = benchConfigFor(path.join(tmp, "host"), { [MODULE]: grant, [NATIVE]: grant }, modulesDir);
    config.rpc.port = 0;
    config.rpc.cookie_file = path.join(tmp, "cookie");
    // The client's keep-alive agents hold 1 + CONCURRENCY + CONCURRENCY_HIGH connections, all
    // from 127.0.0.1: over the defaults (64, 32 per address), as an operator would raise them
    // for one local client that keeps that many open.
    config.rpc.max_connections = 128;
    config.rpc.max_connections_per_address = 128;
    const { logger, records } = captureLogger();
    const host = new Host({ config, logger, chain });
    const agentOne = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const agentMany = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    const agentHigh = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY_HIGH });
    let bare: http.Server | undefined;
    try {
      await host.start();
      await waitForRecord(records, (r) => r.source === MODULE && r.message === "serving", 120_000);
      await waitForRecord(records, (r) => r.source === NATIVE && r.message === "serving", 120_000);
      const address = host.rpcServer?.address;
      if (!address) throw new Error(`the RPC server did not start\n${dumpLog(records)}`);
      const cookie = await readFile(config.rpc.cookie_file, "utf8");
      const real: Target = { port: address.port, auth: `Basic ${Buffer.from(cookie.trim()).toString("base64")}` };

      // The bare server answers each call with the bytes the host answered it with.
      const moduleAnswer = await post(agentOne, real, MODULE_CALL);
      const hostAnswer = await post(agentOne, real, HOST_CALL);
      const nativeAnswer = await post(agentOne, real, NATIVE_CALL);
      if (!moduleAnswer.includes('"echoed"')) throw new Error(`unexpected answer from ${MODULE_CALL.method}: ${moduleAnswer}`);
      // One bare answer stands for both module methods: they must answer the same bytes.
      if (nativeAnswer !== moduleAnswer) throw new Error(`${NATIVE_CALL.method} answered ${nativeAnswer}, not ${moduleAnswer}`);
      if (!hostAnswer.includes('"result"')) throw new Error(`unexpected answer from chain_info: ${hostAnswer}`);
      bare = http.createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on("data", (c: Buffer) => chunks.push(c));
        req.on("end", () => {
          const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { method: string };
          res.writeHead(200, { "Content-Type": "application/json" });
          res.end(body.method === "chain_info" ? hostAnswer : moduleAnswer);
        });
      });
      await new Promise<void>((resolve) => bare!.listen(0, "127.0.0.1", resolve));
      const base: Target = { port: (bare.address() as AddressInfo).port };

      const s = { modLat: [] as number[], hostLat: [] as number[], bareLat: [] as number[], modRate: [] as number[], hostRate: [] as number[], bareRate: [] as number[], modHigh: [] as number[], bareHigh: [] as number[], natLat: [] as number[], natRate: [] as number[] };
      // Warm-up of every path.
      await sequential(agentOne, base, MODULE_CALL, 100);
      await sequential(agentOne, real, MODULE_CALL, 100);
      await sequential(agentOne, real, NATIVE_CALL, 100);
      await sequential(agentOne, real, HOST_CALL, 100);
      for (let r = 0; r < ROUNDS; r++) {
        s.bareLat.push(...(await sequential(agentOne, base, MODULE_CALL, SEQUENTIAL)));
        s.modLat.push(...(await sequential(agentOne, real, MODULE_CALL, SEQUENTIAL)));
        s.natLat.push(...(await sequential(agentOne, real, NATIVE_CALL, SEQUENTIAL)));
        s.hostLat.push(...(await sequential(agentOne, real, HOST_CALL, SEQUENTIAL)));
        s.bareRate.push(await throughput(agentMany, base, HOST_CALL));
        s.modRate.push(await throughput(agentMany, real, MODULE_CALL));
        s.natRate.push(await throughput(agentMany, real, NATIVE_CALL));
        s.hostRate.push(await throughput(agentMany, real, HOST_CALL));
        s.bareHigh.push(await throughput(agentHigh, base, MODULE_CALL, CONCURRENCY_HIGH));
        s.modHigh.push(await throughput(agentHigh, real, MODULE_CALL, CONCURRENCY_HIGH));
      }
      const bLat = "bare node:http, same answer: latency";
      const bRate = `bare node:http, same answer: ${CONCURRENCY} in flight`;
      const bHigh = `bare node:http, same answer: ${CONCURRENCY_HIGH} in flight`;
      return [
        { what: `module method ${MODULE_CALL.method}: latency`, kind: "result", unit: "ms", stats: summarise(s.modLat), vs: bLat, note: "goal <= 2x" },
        { what: `native module method ${NATIVE_CALL.method}: latency`, kind: "result", unit: "ms", stats: summarise(s.natLat), vs: bLat, note: "goal <= 2x" },
        { what: `host method chain_info: latency`, kind: "result", unit: "ms", stats: summarise(s.hostLat), vs: bLat },
        { what: bLat, kind: "baseline", unit: "ms", stats: summarise(s.bareLat) },
        { what: `module method: ${CONCURRENCY} in flight`, kind: "result", unit: "ops/s", stats: summarise(s.modRate), vs: bRate },
        { what: `native module method: ${CONCURRENCY} in flight`, kind: "result", unit: "ops/s", stats: summarise(s.natRate), vs: bRate },
        { what: `host method chain_info: ${CONCURRENCY} in flight`, kind: "result", unit: "ops/s", stats: summarise(s.hostRate), vs: bRate, note: "goal >= 0.8x the bare server's throughput (cost <= 1.25x)" },
        { what: bRate, kind: "baseline", unit: "ops/s", stats: summarise(s.bareRate), note: `${ROUNDS} rounds x ${TOTAL} requests; client, host and bare server share this process; keep-alive connections` },
        { what: `module method: ${CONCURRENCY_HIGH} in flight`, kind: "result", unit: "ops/s", stats: summarise(s.modHigh), vs: bHigh },
        { what: bHigh, kind: "baseline", unit: "ops/s", stats: summarise(s.bareHigh) },
      ];
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${dumpLog(records)}`);
    } finally {
      agentOne.destroy();
      agentMany.destroy();
      agentHigh.destroy();
      bare?.close();
      await host.stop("benchmark done").catch(() => {});
      await chain.close();
      await removeTempDir(tmp);
    }
  },
};

function post(agent: http.Agent, target: Target, body: unknown): Promise<string> {
  const data = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: "127.0.0.1", port: target.port, method: "POST", path: "/", agent,
      headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(data), ...(target.auth ? { Authorization: target.auth } : {}) },
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        if (res.statusCode !== 200) reject(new Error(`HTTP ${res.statusCode}: ${text.slice(0, 300)}`));
        else resolve(text);
      });
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(data);
  });
}

async function sequential(agent: http.Agent, target: Target, body: unknown, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await post(agent, target, body);
    out.push(performance.now() - t0);
  }
  return out;
}

/** TOTAL calls, `concurrency` in flight at any time; calls per second. */
async function throughput(agent: http.Agent, target: Target, body: unknown, concurrency = CONCURRENCY): Promise<number> {
  let started = 0;
  const t0 = performance.now();
  const lane = async () => {
    while (started < TOTAL) {
      started++;
      await post(agent, target, body);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  return TOTAL / ((performance.now() - t0) / 1000);
}
