// The chain controls (admin RPC chain_* and `modhost chain ...`) and the catch-up contract
// end to end: a real modhost process with the shipped modules (block-stats, fee-watch,
// rust-example) is started, mines, is stopped and started again on the same data directory,
// and the modules record every height exactly once across the restart. A reorg made over
// the admin RPC reaches a module as BlockDisconnected ... NewBlock ... ChainReorg.

import test from "ava";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { ROOT, startHost, tempDir, waitFor } from "./helpers/host.ts";
import { call, freePort, manifest, RpcFailure } from "./helpers/rpc.ts";

const run = promisify(execFile);
const MODHOST = path.join(ROOT, "bin/modhost.js");
const RUST_BINARY = path.join(ROOT, "modules/rust-example/target/release/rust-example");

async function modhost(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [MODHOST, ...args], { cwd: ROOT, timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === "number" ? e.code : -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

interface Record_ {
  source: string;
  level: string;
  message: string;
}

/** A `modhost run` process with JSON logs collected as records. */
class HostProcess {
  readonly records: Record_[] = [];
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcess;
  private text = "";

  constructor(config: string, cwd: string) {
    this.child = spawn(process.execPath, [MODHOST, "run", "--config", config], { cwd, stdio: ["ignore", "pipe", "pipe"] });
    const take = (d: Buffer) => {
      this.text += d.toString();
      const lines = this.text.split("\n");
      this.text = lines.pop() ?? "";
      for (const line of lines) {
        try {
          this.records.push(JSON.parse(line) as Record_);
        } catch {
          this.records.push({ source: "raw", level: "info", message: line });
        }
      }
    };
    this.child.stdout!.on("data", take);
    this.child.stderr!.on("data", take);
    this.exited = new Promise((resolve) => this.child.once("exit", (code) => resolve(code)));
  }

  kill(): void {
    this.child.kill("SIGKILL");
  }

  tail(): string {
    return this.records.slice(-40).map((r) => `[${r.source}] ${r.message}`).join("\n");
  }

  has(source: string, re: RegExp): boolean {
    return this.records.some((r) => r.source === source && re.test(r.message));
  }
}

async function writeConfig(dir: string, port: number): Promise<string> {
  const file = path.join(dir, "modhost.toml");
  const grants = (name: string, caps: string[]) => [`[modules.grants.${name}]`, `allow = ${JSON.stringify(caps)}`, ""];
  await writeFile(file, [
    "[host]", 'log_level = "info"', 'log_format = "json"', "",
    "[chain]", "mature_blocks = 101", 'data_dir = "data/chain"', "max_blocks_per_call = 20", "",
    "[modules]", `modules_dir = ${JSON.stringify(path.join(ROOT, "modules"))}`, 'data_dir = "data/modules"', "",
    "[modules.default_limits]", "health_interval_ms = 0", "stop_timeout_ms = 3000", "start_timeout_ms = 30000", "",
    ...grants("block-stats", ["read_blockchain", "read_chain_state", "subscribe_events=NewBlock,BlockDisconnected,ChainReorg", "read_storage", "write_storage", "register_module_api", "register_rpc_endpoint", "report_metrics"]),
    ...grants("fee-watch", ["read_mempool", "read_blockchain", "read_chain_state", "subscribe_events", "read_storage", "write_storage", "call_module=block-stats"]),
    ...grants("rust-example", ["read_blockchain", "read_chain_state", "subscribe_events=NewBlock", "read_storage", "write_storage", "register_rpc_endpoint", "report_metrics"]),
    "[modules.module_configs.block-stats]", "keep_blocks = 10", "", // a short first catch-up: 92..101
    "[storage]", 'dir = "data/storage"', "",
    "[rpc]", `port = ${port}`, 'cookie_file = "run/.cookie"', "",
    "[trust]", 'signatures = "allow-unsigned"', "",
  ].join("\n"));
  return file;
}

/** Heights a module logged as recorded, from log lines matching `re` (group 1 = height). */
function heights(records: Record_[], source: string, re: RegExp): number[] {
  return records.filter((r) => r.source === source).flatMap((r) => {
    const m = re.exec(r.message);
    return m ? [Number(m[1])] : [];
  });
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

test("modhost chain info/mine/send across a host restart: the chain continues and the shipped modules record every height once", async (t) => {
  t.timeout(300_000); // two host starts with three sandboxed modules, on a loaded machine
  t.true(existsSync(RUST_BINARY), `${RUST_BINARY} is missing: build it with scripts/build-rust.sh`);
  const dir = await tempDir(t);
  const config = await writeConfig(dir, await freePort());
  const cookie = path.join(dir, "run", ".cookie");
  const ready = (h: HostProcess) =>
    waitFor(() => existsSync(cookie) && h.has("host", /^ready in/) && h.has("rust-example", /caught up/) && h.has("block-stats", /tracking blocks/), 120_000, "the host and its modules", () => h.tail());

  // First run: a new chain (101 blocks), then 3 mined blocks, one with a payment.
  const first = new HostProcess(config, dir);
  t.teardown(() => first.kill());
  await ready(first);
  const info0 = await modhost(["chain", "info", "--json", "--config", config]);
  t.is(info0.code, 0, info0.stderr);
  const start = JSON.parse(info0.stdout) as { height: number; tip_hash: string; data_dir: string; wallet_address: string };
  t.is(start.height, 101);
  t.is(start.data_dir, path.join(dir, "data/chain"));

  const mined = await modhost(["chain", "mine", "2", "--config", config]);
  t.is(mined.code, 0, mined.stderr);
  t.regex(mined.stdout, /^mined 2 blocks; height 103, tip [0-9a-f]{64}$/m);
  const sent = await modhost(["chain", "send", "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "250000", "--config", config]);
  t.is(sent.code, 0, sent.stderr);
  const txid = /in ([0-9a-f]{64}) \(fee (\d+) sats\)/.exec(sent.stdout);
  t.truthy(txid, sent.stdout);
  t.is((await modhost(["chain", "mine", "--config", config])).code, 0);

  // Limits and mistakes are refused with what to do.
  const tooMany = await modhost(["chain", "mine", "21", "--config", config]);
  t.is(tooMany.code, 1);
  t.regex(tooMany.stderr, /above the limit of 20 blocks per call \(\[chain\] max_blocks_per_call raises it\)/);
  const badAddress = await modhost(["chain", "send", "not-an-address", "1000", "--config", config]);
  t.is(badAddress.code, 1);
  t.regex(badAddress.stderr, /is not a regtest address/);
  const usage = await modhost(["chain", "reorg", "--config", config]);
  // A usage error (checked against the table in host/cli-table.ts before the host is asked): exit 2.
  t.is(usage.code, 2);
  t.regex(usage.stderr, /modhost chain reorg needs DEPTH/);
  t.regex(usage.stderr, /usage: modhost chain reorg DEPTH/);

  await waitFor(() => first.has("block-stats", /^block 104:/) && first.has("rust-example", /block 104 has/) && first.has("fee-watch", /^height 104:/), 90_000, "the modules to see block 104", () => first.tail());
  const before = JSON.parse((await modhost(["chain", "info", "--json", "--config", config])).stdout) as { height: number; tip_hash: string };
  t.is(before.height, 104);
  t.is((await modhost(["stop", "--config", config])).code, 0);
  t.is(await first.exited, 0, first.tail());

  // Second run on the same data directory: the same chain, carried on.
  const second = new HostProcess(config, dir);
  t.teardown(() => second.kill());
  await ready(second);
  const after = JSON.parse((await modhost(["chain", "info", "--json", "--config", config])).stdout) as { height: number; tip_hash: string };
  t.deepEqual({ height: after.height, tip: after.tip_hash }, { height: before.height, tip: before.tip_hash });
  t.true(second.has("rust-example", /caught up: 0 blocks recorded, 0 unwound/), "nothing to catch up: no block was mined while it was stopped");
  t.is((await modhost(["chain", "mine", "3", "--config", config])).code, 0);
  await waitFor(() => second.has("block-stats", /^block 107:/) && second.has("rust-example", /block 107 has/) && second.has("fee-watch", /^height 107:/), 90_000, "the modules to see block 107", () => second.tail());

  // Every height once, across both runs, without gaps.
  const all = [...first.records, ...second.records];
  t.deepEqual(heights(all, "block-stats", /^block (\d+): /), range(92, 107), "block-stats: its keep_blocks before the first tip, then to 107, once each");
  t.deepEqual(heights(all, "rust-example", /^rust-example: block (\d+) has/), range(101, 107), "rust-example: from its first tip, once each");
  t.deepEqual(heights(all, "fee-watch", /^height (\d+): /), range(102, 107), "fee-watch: every block mined while it ran");
  t.false(all.some((r) => r.source === "fee-watch" && /while fee-watch was not watching/.test(r.message)));

  // Sensible figures: the block with the payment paid its fee; the others are coinbase-only.
  const summary = (await modhost(["call", "block-stats.summary", '{"count": 6}', "--config", config]));
  t.is(summary.code, 0, summary.stderr);
  const rows = JSON.parse(summary.stdout) as Array<{ height: number; hash: string; tx_count: number; fees: number }>;
  t.deepEqual(rows.map((r) => r.height), [107, 106, 105, 104, 103, 102]);
  t.deepEqual(rows.map((r) => r.tx_count), [1, 1, 1, 2, 1, 1]);
  t.is(rows[3]!.fees, Number(txid![2]));
  t.is(rows[0]!.hash, JSON.parse((await modhost(["chain", "info", "--json", "--config", config])).stdout).tip_hash);
  const last = JSON.parse((await modhost(["call", "rust-example.last", "--config", config])).stdout) as { height: number; hash: string };
  t.deepEqual(last, { height: 107, hash: rows[0]!.hash });

  t.is((await modhost(["stop", "--config", config])).code, 0);
  t.is(await second.exited, 0, second.tail());
});

test("a reorg over the admin RPC reaches a module as BlockDisconnected (tip first), NewBlock for each replacement, then ChainReorg", async (t) => {
  const RECORDER = {
    toml: manifest("recorder", ["subscribe_events=NewBlock,BlockDisconnected,ChainReorg"]),
    files: {
      "index.ts": `
export default async function start(ctx: any) {
  for (const type of ["NewBlock", "BlockDisconnected", "ChainReorg"]) {
    await ctx.events.subscribe(type, (ev: any) => ctx.log.info("event " + ev.type + " " + (ev.payload.height ?? ev.payload.fork_height) + " " + (ev.payload.hash ?? ev.payload.new_tip)));
  }
  ctx.log.info("recording");
}
`,
    },
  };
  t.timeout(120_000);
  const h = await startHost(t, { inline: { recorder: RECORDER }, grants: { recorder: ["subscribe_events=NewBlock,BlockDisconnected,ChainReorg"] } });
  await h.waitForLog(/^recording$/, { source: "recorder" });
  const mark = h.mark();
  const result = await call(h, "chain_reorg", { depth: 2 });
  t.is(result.fork_height, 99);
  t.is(result.height, 102);
  await h.waitForLog(/^event ChainReorg /, { source: "recorder", since: mark, timeoutMs: 20_000 });
  const seen = h.logsOf("recorder", mark).map((r) => r.message).filter((m) => m.startsWith("event "));
  t.deepEqual(seen, [
    `event BlockDisconnected 101 ${result.disconnected[0]}`,
    `event BlockDisconnected 100 ${result.disconnected[1]}`,
    `event NewBlock 100 ${result.connected[0]}`,
    `event NewBlock 101 ${result.connected[1]}`,
    `event NewBlock 102 ${result.connected[2]}`,
    `event ChainReorg 99 ${result.connected[2]}`,
  ]);
  // Bounded: deeper than the chain (or than [chain] max_blocks_per_call) is refused with the reason.
  const err = await t.throwsAsync(call(h, "chain_reorg", { depth: 500 }));
  t.true(err instanceof RpcFailure);
  t.regex(err!.message, /"depth" 500 is above the limit of 102 \(the chain height: genesis stays\)/);
  const mined = await call(h, "chain_mine", [2]);
  t.is(mined.height, 104);
  t.is(mined.hashes.length, 2);
});
