// Profiling aid for the round trip (not part of `npm run bench`): runs the real path of
// bench/roundtrip.ts (rt-client.ts over spawnModule, HostSession, ApiHub) with only sequential
// calls, CPU-pinned like the benchmark's "same CPU" case, the child under --cpu-prof into
// --dir. `--client wire` runs wire-client.ts instead (the raw client's loops on the protocol: what
// is left is the host's part). Run the host under --cpu-prof too:
//   node --no-node-snapshot --cpu-prof --cpu-prof-dir=DIR --import tsx bench/rt-profile.ts --dir DIR [--n 20000] [--client wire]
import { readFile } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { EventBus } from "../host/events/bus.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { ApiHub } from "../host/hub.ts";
import { parseDescriptor, resolveGrants } from "../capabilities/grants.ts";
import { spawnModule } from "../host/session.ts";
import { ROOT, captureLogger, waitForRecord } from "./common.ts";
import { BENCH_FLOW } from "./roundtrip.ts";
import { summarise } from "./stats.ts";

const { values } = parseArgs({ options: { dir: { type: "string" }, n: { type: "string" }, client: { type: "string" } } });
const client = values.client === "wire" ? "./fixtures/wire-client.ts" : "./fixtures/rt-client.ts";
const dir = values.dir ?? "/tmp";
const n = values.n ?? "20000";
const chain = await EmbeddedChain.create({ matureBlocks: 1 });
const { logger, records } = captureLogger();
const out = path.join(dir, "rt-profile.json");
const requested = [parseDescriptor("read_chain_state")];
const proc = await spawnModule({
  command: process.execPath,
  args: ["--cpu-prof", `--cpu-prof-dir=${dir}`, "--import", "tsx", fileURLToPath(new URL(client, import.meta.url)), "--module", "rt", "--out", out, "--warmup", "2000", "--n", n, "--total", "1000", "--window", "64", "--reps", "1"],
  env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
  cwd: ROOT,
}, {
  module: "rt", grants: resolveGrants(requested, requested, []).effective, hub: new ApiHub(), bus: new EventBus(), logger,
  call: { module: "rt", chain, store: undefined, config: {}, dataDir: dir }, flow: BENCH_FLOW,
}, logger);
await waitForRecord(records, (r) => r.source === "rt" && r.message === "roundtrip done", 300_000, proc.exited);
const s = JSON.parse(await readFile(out, "utf8")) as { latency_ms: number[] };
const st = summarise(s.latency_ms);
console.log(`sequential get_block_height: median ${(st.median * 1000).toFixed(1)} us, p90 ${(st.p90 * 1000).toFixed(1)} us, n ${st.n}`);
await proc.stop("done", { graceMs: 2000, termMs: 1000 });
await chain.close();
