// The Bitcoin Core backend, against the project's Core-compatible facade.
//
// No bitcoind can be installed on these machines, so CoreFacade (chain/bitcoind/facade.ts)
// stands in for it: the embedded regtest chain served over the RPC methods and ZMQ topics
// that Core documents. These tests say what they check of the backend; that the facade
// matches Core byte for byte is checked only against Core's documentation here.

import test from "ava";
import { EmbeddedChain } from "../chain/embedded.ts";
import { bytesToHex } from "@noble/hashes/utils.js";
import { displayHex, encodeBlock, encodeHeader, grindNonce, internalBytes, merkleRoot, sha256d } from "../chain/serialise.ts";
import { CoreFacade } from "../chain/bitcoind/facade.ts";
import { hexOfRaw, type Block, type LightBlock } from "../chain/backend.ts";
import { BitcoindBackend, REQUIRED_RPCS } from "../chain/bitcoind/backend.ts";
import { CoreRpc, CoreRpcRefused } from "../chain/bitcoind/rpc.ts";
import { bitcoindConfig, checkRpcauth, rpcauthLine } from "../chain/bitcoind/rpcauth.ts";
import { parseNotification, parseSequenceBody, SequenceTracker } from "../chain/bitcoind/zmq.ts";
import { BackendUnavailableError, type ChainEventName, type ChainEvents, type Hex, type PeerInfo } from "../chain/backend.ts";
import { freePort } from "./helpers/rpc.ts";

const USER = "modhost";
const PASSWORD = "correct horse battery staple";

type Seen = { name: ChainEventName; payload: Record<string, unknown> };

async function world(opts: { whitelist?: string[]; zmq?: boolean; pollIntervalMs?: number; peers?: () => PeerInfo[] } = {}) {
  const chain = await EmbeddedChain.create({ matureBlocks: 110 });
  const rpcPort = await freePort();
  const zmqPort = await freePort();
  const facadeOptions = {
    backend: chain,
    rpcPort,
    rpcauth: [rpcauthLine(USER, PASSWORD)],
    ...(opts.whitelist ? { whitelist: { [USER]: opts.whitelist } } : {}),
    ...(opts.zmq === false ? {} : { zmqEndpoint: `tcp://127.0.0.1:${zmqPort}` }),
    mine: (n: number) => chain.mine(n),
    ...(opts.peers ? { peers: opts.peers } : {}),
  };
  let facade = new CoreFacade(facadeOptions);
  await facade.start();
  const warnings: string[] = [];
  const backend = await BitcoindBackend.create({
    rpcUrl: facade.rpcUrl,
    auth: { user: USER, password: PASSWORD },
    ...(opts.zmq === false ? {} : { zmqSequence: `tcp://127.0.0.1:${zmqPort}` }),
    pollIntervalMs: opts.pollIntervalMs ?? 60_000,
    reconnectMinMs: 50,
    reconnectMaxMs: 200,
    rpcTimeoutMs: 5000,
    warn: (m) => warnings.push(m),
  });
  const seen: Seen[] = [];
  backend.subscribe(<K extends ChainEventName>(name: K, payload: ChainEvents[K]) => seen.push({ name, payload: payload as Record<string, unknown> }));
  // ZMQ subscriptions take a moment to reach the publisher (the "slow joiner"): wait until a
  // notification arrives before the test starts counting.
  if (opts.zmq !== false) {
    for (let i = 0; i < 50 && !seen.some((e) => e.name === "NewBlock"); i++) {
      await chain.mine(1);
      await until(() => seen.some((e) => e.name === "NewBlock"), 300).catch(() => {});
    }
    // Every warm-up block announced (the last NewBlock is the tip): nothing of it is still on its way.
    const tip = await chain.getChainTip();
    await until(() => seen.filter((e) => e.name === "NewBlock").at(-1)?.payload["hash"] === tip);
    seen.length = 0;
    warnings.length = 0;
  }
  return {
    chain,
    backend,
    seen,
    warnings,
    get facade() {
      return facade;
    },
    async restartFacade() {
      facade = new CoreFacade(facadeOptions);
      await facade.start();
    },
    async close() {
      await backend.close();
      await facade.stop();
    },
  };
}

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out waiting for a condition");
    await new Promise((r) => setTimeout(r, 20));
  }
}

const names = (seen: Seen[]) => seen.map((e) => e.name);

test.serial("reads through the Core backend equal the chain it stands in front of: blocks, headers, transactions, UTXOs, chain info", async (t) => {
  const w = await world({ zmq: false });
  t.teardown(() => w.close());
  const tip = await w.chain.getChainTip();
  t.is(await w.backend.getChainTip(), tip);
  t.is(await w.backend.getBlockHeight(), await w.chain.getBlockHeight());
  // The Core backend reads a block from Core's hex into its bytes (read in slices, as the embedded chain reads a submitted block): the same serialisation.
  const hexed = (b: Block | LightBlock | null) => (b && "hex" in b ? { ...b, hex: hexOfRaw(b.hex) } : b);
  t.true((await w.backend.getBlock(tip))!.hex instanceof Uint8Array);
  t.deepEqual(hexed(await w.backend.getBlock(tip)), hexed(await w.chain.getBlock(tip)));
  t.deepEqual(hexed(await w.backend.getBlockByHeight(5)), hexed(await w.chain.getBlockByHeight(5)));
  t.deepEqual(await w.backend.getBlockHeader(tip), await w.chain.getBlockHeader(tip));
  const block = (await w.chain.getBlockByHeight(3))!;
  const coinbase = block.transactions[0]!;
  t.deepEqual(await w.backend.getTransaction(coinbase.txid), coinbase);
  t.deepEqual(await w.backend.getUtxo({ txid: coinbase.txid, vout: 0 }), await w.chain.getUtxo({ txid: coinbase.txid, vout: 0 }));
  t.is(await w.backend.getBlock("00".repeat(32)), null, "an unknown block is null, not an error");
  t.is(await w.backend.getTransaction("11".repeat(32)), null);
  const [ours, theirs] = [await w.backend.getChainInfo(), await w.chain.getChainInfo()];
  t.deepEqual({ ...ours, difficulty: 0 }, { ...theirs, difficulty: 0 });
  t.true(Math.abs(ours.difficulty - theirs.difficulty) < 1e-12);

  const txid = await w.chain.createTransaction({ feeRate: 7 });
  t.deepEqual(await w.backend.getMempoolTransactions(), await w.chain.getMempoolTransactions());
  t.deepEqual(await w.backend.getMempoolEntry(txid), await w.chain.getMempoolEntry(txid));
  t.deepEqual(await w.backend.getMempoolInfo(), await w.chain.getMempoolInfo());
  const template = await w.backend.getBlockTemplate({ coinbaseScript: "51" });
  const expected = await w.chain.getBlockTemplate();
  t.is(template.previous_block_hash, expected.previous_block_hash);
  t.is(template.coinbase_value, expected.coinbase_value);
  t.deepEqual(template.transactions.map((x) => x.txid), [txid]);
  t.truthy(template.coinbase_tx?.hex);
});

test.serial("a block mined on the Core backend's template (with its coinbase) is accepted by the node and announced once; a duplicate and garbage are not", async (t) => {
  const w = await world();
  t.teardown(() => w.close());
  await w.chain.createTransaction({ feeRate: 5 });
  const tpl = await w.backend.getBlockTemplate({ coinbaseScript: "51" });
  const all = [tpl.coinbase_tx!, ...tpl.transactions];
  const header = encodeHeader({
    version: tpl.version,
    prev_hash: tpl.previous_block_hash,
    merkle_root: displayHex(merkleRoot(all.map((tx) => internalBytes(tx.txid)))),
    time: tpl.cur_time,
    bits: tpl.bits,
    nonce: 0,
  });
  grindNonce(header, BigInt(`0x${tpl.target}`));
  const hex = bytesToHex(encodeBlock(header, all.map((tx) => tx.hex)));
  const hash = displayHex(sha256d(header));
  t.deepEqual(await w.backend.submitBlock(hex), { result: "accepted", hash });
  t.is(await w.chain.getChainTip(), hash, "the node connected it");
  t.is((await w.backend.submitBlock(hex)).result, "duplicate");
  t.like(await w.backend.submitBlock("00"), { result: "rejected" });
  await until(() => w.seen.some((e) => e.name === "NewBlock"));
  await new Promise((r) => setTimeout(r, 200));
  t.deepEqual(w.seen.filter((e) => e.name === "NewBlock").map((e) => e.payload["hash"]), [hash]);
});

test.serial("ZMQ: blocks and mempool changes arrive as the embedded chain's events, in order, each once", async (t) => {
  const w = await world();
  t.teardown(() => w.close());
  const mined = await w.chain.mine(3);
  await until(() => w.seen.filter((e) => e.name === "NewBlock").length === 3);
  t.deepEqual(w.seen.filter((e) => e.name === "NewBlock").map((e) => e.payload["hash"]), mined);
  const heights = w.seen.filter((e) => e.name === "NewBlock").map((e) => e.payload["height"] as number);
  t.deepEqual(heights, [heights[0]!, heights[0]! + 1, heights[0]! + 2]);

  w.seen.length = 0;
  const txid = await w.chain.createTransaction({ feeRate: 9 });
  await until(() => w.seen.some((e) => e.name === "MempoolTransactionAdded"));
  const added = w.seen.find((e) => e.name === "MempoolTransactionAdded")!.payload;
  const entry = (await w.chain.getMempoolEntry(txid))!;
  t.deepEqual(added, { txid, fee: entry.fee, vsize: entry.vsize, fee_rate: entry.fee / entry.vsize });
  const [blockHash] = await w.chain.mine(1);
  await until(() => w.seen.some((e) => e.name === "NewBlock"));
  t.deepEqual(names(w.seen), ["MempoolTransactionAdded", "MempoolTransactionRemoved", "NewBlock"]);
  t.deepEqual(w.seen[1]!.payload, { txid, reason: "block" });
  t.is(w.seen[2]!.payload["hash"], blockHash);
});

test.serial("the Core backend's queue of notices while a sync step runs: a notice of the same kind waits for its own step (that step may have read the node before it), and a full queue is replaced by one resync behind the step in progress, not in its place", async (t) => {
  const w = await world({ zmq: false });
  t.teardown(() => w.close());
  // The queue as drain sees it: its first item is the step in progress while `working`.
  type Work = { kind: string; txid?: string };
  const inner = w.backend as unknown as { queue: Work[]; working: boolean; enqueue(work: Work): void };
  const inProgress: Work = { kind: "blocks" };
  inner.working = true;
  inner.queue.length = 0;
  inner.queue.push(inProgress);
  t.teardown(() => {
    inner.queue.length = 0;
    inner.working = false;
  });
  inner.enqueue({ kind: "blocks" });
  t.is(inner.queue.length, 2, "a blocks notice during a blocks step is queued (before: taken as that step's duplicate and dropped, the new block left to the next poll)");
  inner.enqueue({ kind: "blocks" });
  t.is(inner.queue.length, 2, "one waiting blocks step is enough for any number of notices");
  // Fill the queue to its bound, then one more: the step in progress stays first, the resync after it.
  for (let i = 0; inner.queue.length < 10_000; i++) inner.queue.push({ kind: "tx-added", txid: i.toString(16).padStart(64, "0") });
  inner.enqueue({ kind: "tx-added", txid: "f".repeat(64) });
  t.is(inner.queue[0], inProgress, "the step in progress is still the queue's first, which drain takes off when it is done (before: the new resync was, and drain took it off instead)");
  t.deepEqual(inner.queue.slice(1).map((w) => w.kind), ["blocks", "mempool-resync"]);
  t.true(w.warnings.some((m) => m.includes("chain notices waiting")), "the replacement is said");
});

test.serial("a reorg reaches modules as BlockDisconnected (tip first), NewBlock (lowest first), then ChainReorg, like the embedded chain", async (t) => {
  const w = await world();
  t.teardown(() => w.close());
  const height = await w.chain.getBlockHeight();
  const direct: Seen[] = [];
  const off = w.chain.subscribe((name, payload) => {
    if (name === "BlockDisconnected" || name === "NewBlock" || name === "ChainReorg") direct.push({ name, payload: payload as Record<string, unknown> });
  });
  const { disconnected, connected } = await w.chain.reorg(2);
  off();
  await until(() => w.seen.some((e) => e.name === "ChainReorg"));
  const chainEvents = w.seen.filter((e) => ["BlockDisconnected", "NewBlock", "ChainReorg"].includes(e.name));
  t.deepEqual(names(chainEvents), ["BlockDisconnected", "BlockDisconnected", "NewBlock", "NewBlock", "NewBlock", "ChainReorg"]);
  t.deepEqual(names(chainEvents), names(direct), "the same sequence as the embedded chain emits");
  t.deepEqual(chainEvents.slice(0, 2).map((e) => e.payload), [{ hash: disconnected[0], height }, { hash: disconnected[1], height: height - 1 }]);
  t.deepEqual(chainEvents.slice(2, 5).map((e) => e.payload["hash"]), connected);
  t.like(chainEvents[5]!.payload, { old_tip: disconnected[0], new_tip: connected.at(-1), fork_height: height - 2, disconnected, connected });
});

test.serial("lost ZMQ notifications (a gap in the sequence numbers) are noticed and resynced by RPC: no block missed, none twice", async (t) => {
  const w = await world();
  t.teardown(() => w.close());
  const start = await w.chain.getBlockHeight();
  // Blocks mined while the publisher "loses" messages: the backend sees only the numbers jump.
  w.facade.skipSequence("sequence", 5);
  await w.chain.mine(4);
  await until(() => w.seen.filter((e) => e.name === "NewBlock").length >= 4);
  await new Promise((r) => setTimeout(r, 300));
  const heights = w.seen.filter((e) => e.name === "NewBlock").map((e) => e.payload["height"]);
  t.deepEqual(heights, [start + 1, start + 2, start + 3, start + 4]);
  t.true(w.warnings.some((m) => /lost 5 ZMQ notification/.test(m)), w.warnings.join("\n"));
});

test.serial("without ZMQ the backend polls and still announces every block once", async (t) => {
  const w = await world({ zmq: false, pollIntervalMs: 100 });
  t.teardown(() => w.close());
  const start = await w.chain.getBlockHeight();
  await w.chain.mine(2);
  await until(() => w.seen.filter((e) => e.name === "NewBlock").length >= 2);
  await w.chain.mine(1);
  await until(() => w.seen.filter((e) => e.name === "NewBlock").length >= 3);
  t.deepEqual(w.seen.filter((e) => e.name === "NewBlock").map((e) => e.payload["height"]), [start + 1, start + 2, start + 3]);
});

test.serial("losing the node: requests fail with backend_unavailable, modules are told, and after it returns the missed blocks come before ChainBackendRestored", async (t) => {
  const w = await world();
  t.teardown(() => w.close());
  const start = await w.chain.getBlockHeight();
  await w.facade.stop();
  const err = await t.throwsAsync(w.backend.getBlockHeight());
  t.true(err instanceof BackendUnavailableError, String(err));
  t.regex(err!.message, /unreachable/);
  await until(() => w.seen.some((e) => e.name === "ChainBackendUnavailable"));
  await t.throwsAsync(w.backend.getChainTip(), { instanceOf: BackendUnavailableError });
  // The node moves on while modhost cannot see it.
  await w.chain.mine(2);
  await w.restartFacade();
  await until(() => w.seen.some((e) => e.name === "ChainBackendRestored"));
  const after = w.seen.slice(w.seen.findIndex((e) => e.name === "ChainBackendUnavailable"));
  t.deepEqual(names(after).filter((n) => n !== "MempoolTransactionAdded" && n !== "MempoolTransactionRemoved"), ["ChainBackendUnavailable", "NewBlock", "NewBlock", "ChainBackendRestored"]);
  t.deepEqual(after.filter((e) => e.name === "NewBlock").map((e) => e.payload["height"]), [start + 1, start + 2]);
  t.like(after.at(-1)!.payload, { backend: "bitcoind", height: start + 2, tip_hash: await w.chain.getChainTip() });
  t.is(await w.backend.getBlockHeight(), start + 2, "requests work again");
});

test.serial("a node whose rpcwhitelist is too narrow: modhost says which RPCs are refused, at start and on each call", async (t) => {
  const allowed = REQUIRED_RPCS.filter((m) => m !== "getmempoolinfo" && m !== "getpeerinfo");
  const w = await world({ whitelist: [...allowed], zmq: false });
  t.teardown(() => w.close());
  t.deepEqual(w.backend.refused, ["getmempoolinfo", "getpeerinfo"]);
  t.true(w.warnings.some((m) => m.includes("getmempoolinfo, getpeerinfo") && m.includes("bitcoind-config")));
  const err = await t.throwsAsync(w.backend.getMempoolInfo());
  t.true(err instanceof CoreRpcRefused);
  t.regex(err!.message, /refused RPC "getmempoolinfo" for user "modhost".*rpcwhitelist/);
  t.is(await w.backend.getBlockHeight(), await w.chain.getBlockHeight(), "allowed RPCs still work");
});

test.serial("a whitelist of exactly REQUIRED_RPCS is enough for every ChainBackend read", async (t) => {
  const w = await world({ whitelist: [...REQUIRED_RPCS], zmq: false });
  t.teardown(() => w.close());
  t.deepEqual(w.backend.refused, []);
  const tip = await w.backend.getChainTip();
  await w.backend.getBlock(tip);
  await w.backend.getBlockHeader(tip);
  await w.backend.getChainInfo();
  await w.backend.getMempoolInfo();
  await w.backend.getMempoolTransactions();
  await w.backend.estimateFee(6);
  await w.backend.getNetworkStats();
  await w.backend.getPeers();
  await w.backend.getBlockTemplate();
  t.pass("no call was refused (a refusal throws)");
});

test("bitcoind-config prints an rpcauth line that authenticates the printed password, and a whitelist of exactly what modhost calls", (t) => {
  const cfg = bitcoindConfig({ user: "modhost", password: "pw-123" });
  const rpcauth = cfg.bitcoinConf.find((l) => l.startsWith("rpcauth="))!.slice("rpcauth=".length);
  t.true(checkRpcauth(rpcauth, "modhost", "pw-123"));
  t.false(checkRpcauth(rpcauth, "modhost", "pw-124"));
  t.false(checkRpcauth(rpcauth, "other", "pw-123"));
  const whitelist = cfg.bitcoinConf.find((l) => l.startsWith("rpcwhitelist="))!;
  t.is(whitelist, `rpcwhitelist=modhost:${REQUIRED_RPCS.join(",")}`);
  t.false(/wallet|stop|addnode|setban/.test(whitelist), "no wallet, stop or peer management");
  t.true(cfg.modhostToml.includes('backend = "bitcoind"'));
  // Core's share/rpcauth/rpcauth.py: HMAC-SHA256 keyed by the hex salt text over the password.
  // (The expected HMAC was computed independently with Python's hmac module.)
  t.is(rpcauthLine("u", "p", "00112233445566778899aabbccddeeff"), "u:00112233445566778899aabbccddeeff$884ecb97abacecf9128e8fcad7a5ca1d3c89c4bf5fe51ac93beb1893c30c7fdf");
});

test("wrong credentials are refused with a hint; an unreachable node is backend_unavailable", async (t) => {
  const chain = await EmbeddedChain.create({ matureBlocks: 1 });
  const facade = new CoreFacade({ backend: chain, rpcauth: [rpcauthLine(USER, PASSWORD)] });
  await facade.start();
  t.teardown(() => facade.stop());
  const bad = new CoreRpc({ url: facade.rpcUrl, auth: { user: USER, password: "nope" } });
  const err = await t.throwsAsync(bad.call("getblockcount"));
  t.true(err instanceof CoreRpcRefused);
  t.regex(err!.message, /refused user "modhost" \(HTTP 401\).*rpc_user and rpc_password/);
  const port = await freePort();
  const gone = new CoreRpc({ url: `http://127.0.0.1:${port}/`, auth: { user: USER, password: PASSWORD }, timeoutMs: 2000 });
  await t.throwsAsync(gone.call("getblockcount"), { instanceOf: BackendUnavailableError, message: /unreachable/ });
  const good = new CoreRpc({ url: facade.rpcUrl, auth: { user: USER, password: PASSWORD } });
  t.is(await good.call<number>("getblockcount"), 1);
});

test("ZMQ frames: three parts with a little-endian counter; sequence bodies with C/D/A/R labels; gaps counted across wrap-around", (t) => {
  const hash = "ab".repeat(32);
  const seq = Buffer.alloc(4);
  seq.writeUInt32LE(258);
  const msg = parseNotification([Buffer.from("sequence"), Buffer.concat([Buffer.from(hash, "hex"), Buffer.from("C")]), seq]);
  t.is(msg.sequence, 258);
  t.deepEqual(parseSequenceBody(msg.body), { hash, label: "C" });
  const mp = Buffer.alloc(8);
  mp.writeBigUInt64LE(7n);
  t.deepEqual(parseSequenceBody(Buffer.concat([Buffer.from(hash, "hex"), Buffer.from("A"), mp])), { hash, label: "A", mempoolSequence: 7n });
  t.throws(() => parseSequenceBody(Buffer.concat([Buffer.from(hash, "hex"), Buffer.from("A")])), { message: /41 bytes/ });
  t.throws(() => parseSequenceBody(Buffer.concat([Buffer.from(hash, "hex"), Buffer.from("X")])), { message: /unknown sequence label/ });
  t.throws(() => parseNotification([Buffer.from("sequence"), Buffer.alloc(33)]), { message: /3 parts/ });
  const tracker = new SequenceTracker();
  t.is(tracker.observe(0xfffffffe), 0);
  t.is(tracker.observe(0xffffffff), 0);
  t.is(tracker.observe(0), 0, "wraps");
  t.is(tracker.observe(3), 2);
});

test.serial("the facade answers like Core: verbosity levels of getblock, getrawtransaction, 404 for unknown methods, 403 for a method outside the whitelist", async (t) => {
  const chain = await EmbeddedChain.create({ matureBlocks: 3 });
  const facade = new CoreFacade({ backend: chain, rpcauth: [rpcauthLine(USER, PASSWORD)], whitelist: { [USER]: ["getblock", "getbestblockhash", "getrawtransaction", "nosuchmethod"] } });
  await facade.start();
  t.teardown(() => facade.stop());
  const post = async (body: unknown) => {
    const res = await fetch(facade.rpcUrl, { method: "POST", headers: { authorization: `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString("base64")}` }, body: JSON.stringify(body) });
    return { status: res.status, body: res.status === 403 ? null : ((await res.json()) as { result: unknown; error: { code: number } | null }) };
  };
  const tip = (await post({ method: "getbestblockhash", id: 1 })).body!.result as Hex;
  const v0 = await post({ method: "getblock", params: [tip, 0], id: 2 });
  t.is(v0.body!.result, hexOfRaw((await chain.getBlock(tip))!.hex));
  const v1 = (await post({ method: "getblock", params: [tip, 1], id: 3 })).body!.result as Record<string, unknown>;
  t.like(v1, { hash: tip, height: 3, confirmations: 1, nTx: 1, bits: "207fffff" });
  t.true(Array.isArray(v1["tx"]) && typeof (v1["tx"] as unknown[])[0] === "string");
  t.is(v1["chainwork"], "0000000000000000000000000000000000000000000000000000000000000008", "4 blocks at regtest work 2 each");
  const v2 = (await post({ method: "getblock", params: [tip, 2], id: 4 })).body!.result as { tx: Array<Record<string, unknown>> };
  t.like(v2.tx[0], { txid: (v1["tx"] as string[])[0] });
  t.true("vin" in v2.tx[0]! && "coinbase" in (v2.tx[0]!["vin"] as Array<Record<string, unknown>>)[0]!);
  t.is((await post({ method: "nosuchmethod", id: 5 })).status, 404);
  t.is((await post({ method: "getblockcount", id: 6 })).status, 403);
  t.is((await post({ method: "getblock", params: ["00".repeat(32), 1], id: 7 })).body!.error!.code, -5);
});

test.serial("modhost run with [chain] backend = \"bitcoind\": a TypeScript module on the Core backend receives the node's blocks and reads them", async (t) => {
  const { execa } = await import("execa");
  const { writeFile } = await import("node:fs/promises");
  const path = await import("node:path");
  const { buildModulesDir, GOOD_GRANTS, ROOT, tempDir, waitFor } = await import("./helpers/host.ts");
  const chain = await EmbeddedChain.create({ matureBlocks: 101 });
  const zmqPort = await freePort();
  const facade = new CoreFacade({ backend: chain, rpcauth: [rpcauthLine(USER, PASSWORD)], whitelist: { [USER]: [...REQUIRED_RPCS] }, zmqEndpoint: `tcp://127.0.0.1:${zmqPort}` });
  await facade.start();
  t.teardown(() => facade.stop());
  const dir = await tempDir(t, "modhost-bitcoind-");
  await buildModulesDir(dir, ["good"]);
  const config = path.join(dir, "modhost.toml");
  await writeFile(config, [
    "[chain]",
    'backend = "bitcoind"',
    `rpc_url = "${facade.rpcUrl}"`,
    `rpc_user = "${USER}"`,
    `rpc_password = "${PASSWORD}"`,
    `zmq_sequence = "tcp://127.0.0.1:${zmqPort}"`,
    "[modules]",
    'modules_dir = "modules"',
    'data_dir = "data/modules"',
    "[storage]",
    'dir = "data/storage"',
    "[rpc]",
    "port = 0",
    "[trust]",
    'signatures = "allow-unsigned"',
    "[modules.grants.good]",
    `allow = ${JSON.stringify(GOOD_GRANTS)}`,
  ].join("\n"));
  const child = execa(process.execPath, [path.join(ROOT, "bin", "modhost.js"), "run", "--config", config], { cwd: dir, reject: false, all: true, env: { NO_COLOR: "1" } });
  t.teardown(() => void child.kill("SIGKILL"));
  let output = "";
  child.all?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  await waitFor(() => /ready in \d+ ms running=good/.test(output), 60_000, "the host to be ready", () => output);
  t.regex(output, /bitcoind backend ready/);
  // Blocks the node mines reach the module (ZMQ may need a moment to join: keep mining until one lands).
  for (let i = 0; i < 40 && !/stored block \d+/.test(output); i++) {
    await chain.mine(1);
    await new Promise((r) => setTimeout(r, 250));
  }
  await waitFor(() => /stored block \d+/.test(output), 20_000, "the module to store a block", () => output);
  const height = await chain.getBlockHeight();
  await chain.mine(1);
  await waitFor(() => output.includes(`stored block ${height + 1}`), 20_000, "the next block", () => output);
  child.kill("SIGTERM");
  const r = await child;
  t.is(r.exitCode, 0, output);
  // What the module read through the backend (getBlockByHeight) is the node's block.
  const { ModuleStore } = await import("../storage/store.ts");
  const store = await ModuleStore.open(path.join(dir, "data", "storage", "good"));
  t.teardown(() => store.close());
  t.is(await store.get("blocks", String(height + 1).padStart(10, "0")), (await chain.getBlockByHeight(height + 1))!.hash);
});

test.serial("peers that come and go on the node become PeerConnected and PeerDisconnected", async (t) => {
  const peer = (addr: string): PeerInfo => ({ addr, transport_type: "v2", services: 0x409, version: 70016, connected_since: 1_700_000_000 });
  let peers = [peer("10.0.0.1:8333"), peer("10.0.0.2:8333")];
  const w = await world({ zmq: false, pollIntervalMs: 100, peers: () => peers });
  t.teardown(() => w.close());
  peers = [peer("10.0.0.2:8333"), peer("10.0.0.3:8333")];
  await until(() => w.seen.some((e) => e.name === "PeerConnected") && w.seen.some((e) => e.name === "PeerDisconnected"));
  t.deepEqual(w.seen.filter((e) => e.name === "PeerConnected").map((e) => e.payload), [{ addr: "10.0.0.3:8333", transport_type: "v2", services: 0x409, version: 70016 }]);
  t.deepEqual(w.seen.filter((e) => e.name === "PeerDisconnected").map((e) => e.payload), [{ addr: "10.0.0.1:8333" }], "the peers present at start are not announced");
});

test("[chain] core_rpc_bind serves the embedded chain over Core's RPC, with a cookie that bitcoin-cli -rpccookiefile reads", async (t) => {
  const { mkdtemp, readFile, rm } = await import("node:fs/promises");
  const { tmpdir } = await import("node:os");
  const path = await import("node:path");
  const { defaultConfig } = await import("../host/config.ts");
  const { createChain } = await import("../host/chain.ts");
  const { Logger } = await import("../host/log.ts");
  const dir = await mkdtemp(path.join(tmpdir(), "modhost-core-rpc-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const config = defaultConfig(dir);
  config.chain.core_rpc_bind = "127.0.0.1:0";
  const lines: string[] = [];
  const configured = await createChain(config, new Logger({ level: "info", write: (l) => lines.push(l) }).for("chain"));
  t.teardown(async () => {
    await configured.facade?.stop();
    await configured.backend.close();
  });
  t.truthy(configured.facade, "a facade when core_rpc_bind is set");
  const cookie = (await readFile(path.join(path.dirname(config.rpc.cookie_file), "core-rpc.cookie"), "utf8")).trim();
  t.regex(cookie, /^__cookie__:[0-9a-f]{64}$/);
  const res = await fetch(configured.facade!.rpcUrl, {
    method: "POST",
    headers: { authorization: `Basic ${Buffer.from(cookie).toString("base64")}` },
    body: JSON.stringify({ jsonrpc: "1.0", id: 1, method: "getblockcount", params: [] }),
  });
  t.is(res.status, 200);
  t.is(((await res.json()) as { result: number }).result, await configured.backend.getBlockHeight());
  const denied = await fetch(configured.facade!.rpcUrl, { method: "POST", body: "{}" });
  t.is(denied.status, 401, "no cookie, no answer");
  t.true(lines.some((l) => l.includes("served over Bitcoin Core's RPC")));
});
