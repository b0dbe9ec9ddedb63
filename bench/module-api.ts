// Module API calls between two TypeScript modules (bench-api-client -> host -> bench-api-server's
// isolate -> back), sequential and 64 in flight, next to the same module's host calls
// (ctx.chain.getBlockHeight: one crossing to the host, no second isolate) in the same rounds.
// What the second module costs is the difference: its isolate host, the crossing into its
// isolate (invocations batched: runtime/isolate/worker.ts INVOKE_BATCHED) and the answer back.
// The client times itself with Date.now() (means per call within a round); rounds alternate.

import path from "node:path";
import { Host } from "../host/host.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { benchConfigFor, captureLogger, dumpLog, FAIR_SHARE_RAISED, makeTempDir, removeTempDir, waitForRecord, type Benchmark, type Row } from "./common.ts";
import { copyModule } from "./modules.ts";
import { summarise } from "./stats.ts";

const SERVER = "bench-api-server";
const CLIENT = "bench-api-client";
const ROUNDS = 5;
const SEQ = 300;
const BATCHES = 20;
const IN_FLIGHT = 64;

export const moduleApi: Benchmark = {
  name: "module-api",
  title: "module API calls between two TS modules vs the caller's own host calls",
  async run(): Promise<Row[]> {
    const tmp = await makeTempDir("api");
    const chain = await EmbeddedChain.create({ matureBlocks: 1 });
    const modulesDir = path.join(tmp, "modules");
    await copyModule("api-server", modulesDir, SERVER);
    await copyModule("api-client", modulesDir, CLIENT);
    const limits = { ...FAIR_SHARE_RAISED, start_timeout_ms: 120_000 };
    const config = benchConfigFor(path.join(tmp, "host"), {
      [SERVER]: { allow: ["register_module_api"], limits },
      [CLIENT]: { allow: [`call_module=${SERVER}`, "read_chain_state"], limits, config: { rounds: ROUNDS, seq: SEQ, batches: BATCHES, inFlight: IN_FLIGHT } },
    }, modulesDir);
    const { logger, records } = captureLogger();
    const host = new Host({ config, logger, chain });
    try {
      await host.start();
      const line = await waitForRecord(records, (r) => r.source === CLIENT && r.message.startsWith("RESULT "), 600_000);
      const r = JSON.parse(line.message.slice("RESULT ".length)) as { apiSeq: number[]; hostSeq: number[]; apiRate: number[]; hostRate: number[] };
      const bSeq = "the client's ctx.chain.getBlockHeight(), sequential (per call)";
      const bRate = `the client's ctx.chain.getBlockHeight(), ${IN_FLIGHT} in flight`;
      return [
        { what: `ctx.modules.call(${SERVER}, echo), sequential (per call)`, kind: "result", unit: "ms", stats: summarise(r.apiSeq), vs: bSeq },
        { what: bSeq, kind: "baseline", unit: "ms", stats: summarise(r.hostSeq) },
        { what: `ctx.modules.call(${SERVER}, echo), ${IN_FLIGHT} in flight`, kind: "result", unit: "ops/s", stats: summarise(r.apiRate), vs: bRate },
        { what: bRate, kind: "baseline", unit: "ops/s", stats: summarise(r.hostRate), note: `${ROUNDS} rounds of ${SEQ} sequential calls and ${BATCHES} x Promise.all of ${IN_FLIGHT}, alternating; means per round` },
      ];
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${dumpLog(records)}`);
    } finally {
      await host.stop("benchmark done").catch(() => {});
      await chain.close();
      await removeTempDir(tmp);
    }
  },
};
