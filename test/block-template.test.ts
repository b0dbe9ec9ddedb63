// The shipped mining provider (modules/block-template, the real binary built by
// scripts/build-rust.sh) under the real host on the embedded chain. A miner speaks Bitcoin
// Core's JSON-RPC to the module's loopback port: it gets a template with getblocktemplate,
// builds the block (coinbase, template transactions, merkle root, nonce ground at regtest's
// target) and submits it with submitblock; the chain's tip becomes that block. A subscriber
// module hears BlockTemplateUpdated for new blocks and mempool changes. Malformed and invalid
// blocks get Core's answers and change nothing, and a hostile client is refused at each limit
// before it costs work.

import test, { type ExecutionContext } from "ava";
import { execa } from "execa";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { cp, mkdir, readFile, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { startHost, tempDir, ROOT, type TestHost } from "./helpers/host.ts";
import { callApi, inlineModule } from "./helpers/modules.ts";
import { buildBlock } from "./helpers/blocks.ts";
import { fillMempool } from "./helpers/big-block.ts";
import { templateFromCore, type CoreBlockTemplate } from "../chain/bitcoind/convert.ts";
import { blockSubsidy } from "../chain/blocks.ts";
import { loadManifest } from "../host/manifest.ts";
import { hexOfRaw } from "../chain/backend.ts";

const MODULE_DIR = path.join(ROOT, "modules/block-template");
const BINARY = path.join(MODULE_DIR, "target/release/block-template");
const GRANTS = [
  "read_blockchain",
  "submit_block",
  "subscribe_events=NewBlock,BlockDisconnected,ChainReorg,MempoolTransactionAdded,MempoolTransactionRemoved",
  "publish_events",
  "register_module_api",
  "read_storage",
  "write_storage",
  "network_access=127.0.0.1",
];

/** The modhost maintainers' public key (publisher "modhost" in modhost.toml). */
const MAINTAINERS_KEY = "49cb7b321810fb787f8d1e928725ed9d2cc535786ebfb5b4f5e735552c764697";

interface Update { previous_block_hash: string; height: number; transaction_count: number; coinbase_value: number; reason: string }

// A module that records every BlockTemplateUpdated it receives and serves the list.
const WATCH_CAPS = ["subscribe_events=BlockTemplateUpdated", "register_module_api"];
const WATCH = inlineModule("template-watch", WATCH_CAPS, `
  const seen: unknown[] = [];
  await ctx.events.subscribe("BlockTemplateUpdated", async (ev: any) => { seen.push(ev.payload); });
  await ctx.modules.registerApi({ seen: () => seen });
`);

async function start(t: ExecutionContext, config: Record<string, unknown> = {}): Promise<{ h: TestHost; url: string; port: number; bus: Update[] }> {
  t.true(existsSync(BINARY), `${BINARY} is missing: build it with scripts/build-rust.sh (npm run setup does)`);
  const h = await startHost(t, {
    inline: { "template-watch": WATCH },
    grants: { "block-template": GRANTS, "template-watch": WATCH_CAPS },
    moduleConfigs: { "block-template": { listen: "127.0.0.1:0", min_update_interval_ms: 200, ...config } },
    configure: (c) => {
      c.modules.providers = { ...c.modules.providers, mining: "block-template" };
    },
    noStart: true,
  });
  // The shipped module as it is: its manifest and the built binary.
  const dest = path.join(h.config.modules.modules_dir, "block-template");
  await mkdir(path.join(dest, "target/release"), { recursive: true });
  await cp(path.join(MODULE_DIR, "module.toml"), path.join(dest, "module.toml"));
  await cp(BINARY, path.join(dest, "target/release/block-template"));
  // What the bus carries from the start on (the subscriber module may subscribe after the
  // provider's first announcement: modules start side by side).
  const bus: Update[] = [];
  const recorder = h.host.bus.subscribe("test-templates", (ev: { type: string; payload: unknown }) => bus.push(ev.payload as Update), { queueLimit: 10_000 });
  recorder.types.add("BlockTemplateUpdated");
  await h.host.start();
  await h.waitForState("block-template", "running", 30_000);
  const line = await h.waitForLog(/serving getblocktemplate and submitblock .* on http:\/\/127\.0\.0\.1:(\d+)\//, { source: "block-template", timeoutMs: 20_000 });
  const port = Number(/127\.0\.0\.1:(\d+)/.exec(line.message)![1]);
  return { h, url: `http://127.0.0.1:${port}/`, port, bus };
}

async function rpc(url: string, method: string, params: unknown[], version: "1.0" | "2.0" = "1.0") {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "text/plain" }, body: JSON.stringify({ jsonrpc: version, id: "miner", method, params }) });
  return { status: res.status, body: (await res.json()) as { result?: any; error?: { code: number; message: string } | null; id: unknown } };
}

async function seen(h: TestHost, match: (u: Update) => boolean, what: string): Promise<Update[]> {
  return h.waitFor(async () => {
    const list = await callApi<Update[]>(h, "template-watch", "seen");
    return list.some(match) ? list : undefined;
  }, 20_000, what);
}

/** Send raw bytes, then read the whole answer (the server closes the connection). */
function raw(port: number, bytes: string, opts: { keepOpen?: boolean } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1");
    let got = "";
    s.on("data", (d) => (got += d.toString()));
    s.on("end", () => resolve(got));
    s.on("close", () => resolve(got));
    // A server that closes with bytes of ours unread resets the connection: keep what came.
    s.on("error", (e) => (got ? resolve(got) : reject(e)));
    s.write(bytes);
    if (!opts.keepOpen) s.end();
  });
}

test("a miner mines a block through getblocktemplate and submitblock; a subscriber hears BlockTemplateUpdated", async (t) => {
  const { h, url, bus } = await start(t);
  const tip = await h.chain.getChainTip();
  const height = await h.chain.getBlockHeight();
  // At start it announces the template it finds (the catch-up contract: no cursor yet).
  await h.waitFor(() => bus.find((u) => u.reason === "new_block" && u.previous_block_hash === tip && u.height === height + 1), 20_000, "the first announcement");
  await h.waitForState("template-watch", "running", 30_000);

  // Mempool traffic: two wallet transactions (the embedded mempool holds no chains of
  // unconfirmed transactions, so `depends` is empty here; src/rpc.rs tests it with a child).
  const first = await h.chain.createTransaction({ feeRate: 5 });
  const second = await h.chain.createTransaction({ feeRate: 3 });
  const fees = [(await h.chain.getMempoolEntry(first))!.fee, (await h.chain.getMempoolEntry(second))!.fee];
  await seen(h, (u) => u.reason === "mempool" && u.transaction_count === 2 && u.previous_block_hash === tip, "a mempool announcement with both transactions");

  const gbt = await rpc(url, "getblocktemplate", [{ rules: ["segwit"] }]);
  t.is(gbt.status, 200);
  t.is(gbt.body.error, null);
  t.is(gbt.body.id, "miner");
  const core = gbt.body.result as CoreBlockTemplate;
  t.is(core.previousblockhash, tip);
  t.is(core.height, height + 1);
  t.is(core.bits, "207fffff");
  t.is(core.target, "7fffff" + "0".repeat(58));
  t.true(core.mintime <= core.curtime);
  const expected = [first, second];
  t.deepEqual(core.transactions.map((x) => x.txid).sort(), [...expected].sort());
  for (const x of core.transactions) {
    const tx = (await h.chain.getMempoolTransaction(x.txid))!;
    t.is(x.hash, tx.wtxid);
    t.is(x.data, hexOfRaw(tx.hex));
    t.is(x.fee, fees[expected.indexOf(x.txid)]!);
    t.deepEqual(x.depends, []);
  }
  t.is(core.coinbasevalue, blockSubsidy(height + 1) + fees[0]! + fees[1]!);
  t.regex(core.default_witness_commitment!, /^6a24aa21a9ed[0-9a-f]{64}$/);
  t.deepEqual(core.rules, ["csv", "!segwit", "taproot"]);
  t.is(core.weightlimit, 4_000_000);

  // The miner's own coinbase (paying the template's coinbasevalue), the template's
  // transactions, the merkle root and a nonce under the target.
  const block = buildBlock(templateFromCore(core));
  const submitted = await rpc(url, "submitblock", [block.hex]);
  t.deepEqual(submitted, { status: 200, body: { result: null, error: null, id: "miner" } }, "Core's answer to an accepted block: null");
  t.is(await h.chain.getChainTip(), block.hash);
  t.is(await h.chain.getBlockHeight(), height + 1);
  t.deepEqual((await h.chain.getBlockByHeight(height + 1))!.transactions.slice(1).map((x) => x.txid), core.transactions.map((x) => x.txid));
  t.deepEqual(await h.chain.getMempoolTransactions(), [], "both transactions were confirmed");
  await seen(h, (u) => u.reason === "new_block" && u.previous_block_hash === block.hash && u.height === height + 2 && u.transaction_count === 0, "the announcement of the template on the new block");

  t.deepEqual((await rpc(url, "submitblock", [block.hex])).body.result, "duplicate", "the same block again: Core's \"duplicate\"");
  t.is(await h.chain.getBlockHeight(), height + 1);
});

test("a template of 2,000 transactions, several pages on the wire, reaches the miner whole through the Rust SDK, and its block is accepted", async (t) => {
  const { h, url } = await start(t);
  await fillMempool(h.chain, 2_000);
  const gbt = await rpc(url, "getblocktemplate", [{ rules: ["segwit"] }]);
  t.is(gbt.body.error, null);
  const core = gbt.body.result as CoreBlockTemplate;
  // One page holds ~1,480 of these (16,384 values): the SDK read every page and joined them.
  t.is(core.transactions.length, 2_000, "every page joined");
  const block = buildBlock(templateFromCore(core));
  t.deepEqual((await rpc(url, "submitblock", [block.hex])).body, { result: null, error: null, id: "miner" }, "the whole template mines an accepted block");
  t.is(await h.chain.getChainTip(), block.hash);
  t.is((await h.chain.getMempoolInfo()).transaction_count, 0, "the block took the whole mempool");
});

test("malformed and invalid submitblock calls get Core's answers and change nothing", async (t) => {
  const { h, url } = await start(t);
  await h.chain.createTransaction({ feeRate: 5 });
  const tip = await h.chain.getChainTip();
  const height = await h.chain.getBlockHeight();
  const mempool = await h.chain.getMempoolTransactions();
  const tpl = templateFromCore((await rpc(url, "getblocktemplate", [{ rules: ["segwit"] }])).body.result);

  const decodeFailed = { code: -22, message: "Block decode failed" };
  t.deepEqual(await rpc(url, "submitblock", ["zz"]), { status: 500, body: { result: null, error: decodeFailed, id: "miner" } });
  t.deepEqual((await rpc(url, "submitblock", ["00".repeat(100)])).body.error, decodeFailed, "100 zero bytes: a header and no transactions");
  t.deepEqual((await rpc(url, "submitblock", [42])).body.error?.code, -3, "hexdata that is not a string: a type error");
  // Decodable blocks the chain rejects: Core's reason strings as the result.
  t.deepEqual((await rpc(url, "submitblock", [buildBlock(tpl, { badPow: true }).hex])).body, { result: "high-hash", error: null, id: "miner" });
  t.deepEqual((await rpc(url, "submitblock", [buildBlock(tpl, { merkleRoot: "11".repeat(32) }).hex])).body.result, "bad-txnmrklroot");
  t.deepEqual((await rpc(url, "submitblock", [buildBlock(tpl, { prev: "22".repeat(32) }).hex])).body.result, "prev-blk-not-found");

  // getblocktemplate without the segwit rule, in JSON-RPC 2.0: HTTP 200 with Core's error.
  const noRules = await rpc(url, "getblocktemplate", [{}], "2.0");
  t.is(noRules.status, 200);
  t.is(noRules.body.error?.code, -8);
  t.regex(noRules.body.error!.message, /segwit rule set/);
  t.is((await rpc(url, "getbalance", [])).body.error?.code, -32601);

  t.is(await h.chain.getChainTip(), tip, "the tip did not move");
  t.is(await h.chain.getBlockHeight(), height);
  t.deepEqual(await h.chain.getMempoolTransactions(), mempool, "the mempool is as it was");
  // Its log says why each decodable block was rejected.
  await h.waitForLog(/block-template: block [0-9a-f]{64} rejected: high-hash: /, { source: "block-template" });
});

test("a hostile client is refused at each limit, named with its config key, and the server keeps serving", async (t) => {
  t.timeout(180_000); // a host start and an 8 s request timeout on a loaded machine
  // request_timeout_ms well above the time this test needs between connecting the idle
  // connections and the next one, even on a loaded machine (they must still hold their places).
  const { url, port } = await start(t, { max_connections: 2, request_timeout_ms: 8000, max_request_bytes: 100_000 });
  // A body announced over max_request_bytes is refused from the head, before any of it is sent.
  const big = await raw(port, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 900000000\r\n\r\n", { keepOpen: true });
  t.regex(big, /^HTTP\/1\.1 413 /);
  t.regex(big, /max_request_bytes = 100000 in \[modules\.module_configs\.block-template\]/);
  // A head over the fixed 16 KiB.
  const head = await raw(port, `POST / HTTP/1.1\r\nX-Pad: ${"a".repeat(20_000)}\r\n\r\n`, { keepOpen: true });
  t.regex(head, /^HTTP\/1\.1 431 /);
  // Chunked bodies and other methods.
  t.regex(await raw(port, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", { keepOpen: true }), /^HTTP\/1\.1 411 /);
  t.regex(await raw(port, "GET / HTTP/1.1\r\n\r\n", { keepOpen: true }), /^HTTP\/1\.1 405 /);
  // A request that never completes is answered when request_timeout_ms has passed.
  const slow = await raw(port, "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n{", { keepOpen: true });
  t.regex(slow, /^HTTP\/1\.1 408 [\s\S]*request_timeout_ms/);

  // Two idle connections hold both places; a third is answered 503 at once. A refusal above
  // keeps its place for a moment after its answer (so that the answer is not lost to a reset):
  // the two are opened again until both are held (neither answered nor closed by the server).
  let idle: net.Socket[] = [];
  t.teardown(() => { for (const s of idle) s.destroy(); });
  for (let attempt = 0; ; attempt++) {
    idle = [net.connect(port, "127.0.0.1"), net.connect(port, "127.0.0.1")];
    const answered = [false, false];
    for (const [i, s] of idle.entries()) {
      s.on("data", () => { answered[i] = true; });
      s.on("close", () => { answered[i] = true; });
      s.on("error", () => undefined);
    }
    await Promise.all(idle.map((s) => new Promise((r) => s.once("connect", r))));
    await new Promise((r) => setTimeout(r, 500));
    if (!answered.includes(true)) break;
    for (const s of idle) s.destroy();
    if (attempt >= 20) throw new Error("two idle connections were never both held by the server");
    await new Promise((r) => setTimeout(r, 250));
  }
  const refused = await raw(port, "", { keepOpen: true });
  t.regex(refused, /^HTTP\/1\.1 503 [\s\S]*max_connections = 2/);
  // Once they are timed out, the server serves again.
  for (const s of idle) s.destroy();
  const ok = await (async () => {
    for (let i = 0; i < 100; i++) {
      const r = await rpc(url, "getblocktemplate", [{ rules: ["segwit"] }]).catch(() => undefined);
      if (r?.status === 200) return r;
      await new Promise((res) => setTimeout(res, 100));
    }
    return undefined;
  })();
  t.is(ok?.body.error, null, "a well-formed request is served after the refusals");
});

test("the built binary is the one module.toml's [binary] hash names, and the maintainers' signature verifies", async (t) => {
  t.true(existsSync(BINARY), `${BINARY} is missing: build it with scripts/build-rust.sh (npm run setup does)`);
  const manifest = await loadManifest(path.join(MODULE_DIR, "module.toml"));
  const built = `sha256:${createHash("sha256").update(await readFile(BINARY)).digest("hex")}`;
  t.is(
    built,
    manifest.binary?.hash ?? "(no [binary] hash)",
    "the binary built here differs from the signed hash: build with scripts/build-rust.sh (its flags make the build reproducible); " +
      "if the source changed, a maintainer signs again: node bin/modhost.js sign modules/block-template --key <the modhost maintainers' key file>",
  );
  // Under a configuration of its own that trusts only that key (not modhost.toml, which the
  // operator may change).
  const dir = await tempDir(t);
  const config = path.join(dir, "modhost.toml");
  await writeFile(config, "[trust]\nsignatures = \"require\"\n");
  const r = await execa(process.execPath, [path.join(ROOT, "bin/modhost.js"), "verify", MODULE_DIR, "--config", config, "--trust-key", MAINTAINERS_KEY], { cwd: dir, reject: false, all: true, timeout: 60_000, env: { NO_COLOR: "1" } });
  t.is(r.exitCode, 0, r.all);
  t.regex(r.all ?? "", /OK: verified/);
});
