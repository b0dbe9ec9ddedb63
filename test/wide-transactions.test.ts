// A transaction too wide to describe in one message: a valid block whose coinbase pays 40,000
// empty outputs (~360 KB) is 280,000 MessagePack values described field by field, over the
// protocol's max_values (65,536), and a page of a block always holds one whole transaction, so
// before the reduced form no module could read such a block (nor get_transaction its coinbase).
// Every answer that carries one decoded transaction (get_block, get_block_by_height, both forms;
// get_transaction; get_mempool_transaction) now describes such a transaction in its reduced form
// (capabilities/tx-form.ts): its fields but `inputs` and `outputs`, which are empty, with
// truncated: true, input_count and output_count; its raw hex, one value, to decode it.
// Under the real host: a native module submits such blocks and reads them page by page, a
// TypeScript module and the canary read them through the SDK, the shipped Rust module through
// the Rust SDK (whose Transaction struct has no truncated field: empty inputs say it); before,
// each got result_too_large.

import test from "ava";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { RawTx } from "@scure/btc-signer";
import { chain as chainFamily } from "../capabilities/chain.ts";
import { mempool as mempoolFamily } from "../capabilities/mempool.ts";
import { TX_VALUES } from "../capabilities/tx-form.ts";
import type { CallContext } from "../capabilities/types.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { describeTransaction, decodeTransaction } from "../chain/serialise.ts";
import { HOST_BODY_LIMITS, encodeBody } from "../protocol/codec.ts";
import { coinbaseBlock } from "./helpers/big-block.ts";
import { canaryRound, mineWhenIdle } from "./helpers/canary.ts";
import { buildModulesDir, startHost, tempDir, GOOD_GRANTS, ROOT, waitFor } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";
import { watchTurns } from "./helpers/turns.ts";
import { writeNodeNative } from "./helpers/native.ts";

/** Outputs of the wide coinbase: 7 values each, 280,000 in all. */
const WIDE = 40_000;

const handler = (family: typeof chainFamily, name: string) => family.methods.find((m) => m.name === name)!.handler;

/** What the host would send: throws past any protocol limit (max_values among them). */
const sendable = (result: unknown) => encodeBody({ t: "response", id: 1, result }, HOST_BODY_LIMITS);

/** An embedded chain whose tip is a block of one coinbase paying WIDE empty outputs (and one small block under it). */
async function wideChain(): Promise<{ chain: EmbeddedChain; hash: string; height: number }> {
  const chain = await EmbeddedChain.create({ matureBlocks: 101 });
  await chain.mine(1);
  const scripts = Array.from({ length: WIDE }, () => new Uint8Array(0));
  const r = await chain.submitBlock(coinbaseBlock(await chain.getBlockTemplate(), scripts));
  if (r.result !== "accepted") throw new Error(`wide block ${r.result}: ${r.reason}`);
  return { chain, hash: await chain.getChainTip(), height: await chain.getBlockHeight() };
}

test("get_block and get_block_by_height answer a block whose coinbase has 40,000 outputs, in both forms, each page within max_values, the coinbase reduced with its counts", async (t) => {
  const { chain, hash, height } = await wideChain();
  t.teardown(() => chain.close());
  const call = { chain } as unknown as CallContext;
  for (const name of ["get_block", "get_block_by_height"]) {
    for (const include_hex of [true, false]) {
      const page = (await handler(chainFamily, name)(call, { hash, height, include_hex, tx_offset: 0 })) as Record<string, any>;
      t.notThrows(() => sendable(page), `${name} include_hex ${include_hex}: the answer fits one message`);
      t.is(page.hash, hash);
      t.is(page.tx_count, 1);
      t.is(page.next_tx_offset, null);
      const [tx] = page.transactions;
      t.like(tx, { truncated: true, input_count: 1, output_count: WIDE, inputs: [], outputs: [] }, `${name} include_hex ${include_hex}`);
      t.is(typeof tx.txid, "string");
      t.true(tx.weight > 4 * 360_000, "its size and weight are there");
      t.is("hex" in tx, include_hex, "the raw hex comes with include_hex, as for any transaction");
      if (include_hex) t.is(decodeTransaction(tx.hex).outputs.length, WIDE, "the raw hex holds every output");
    }
  }
});

test.serial("connecting a block whose coinbase has 40,000 outputs and disconnecting it yield output by output: no turn of the loop takes 60 ms of its CPU (69-139 ms in one stretch before)", async (t) => {
  // On disk, as the host's chain is (memory-level's synchronous batch would measure itself).
  const dir = await tempDir(t, "wide-connect");
  const chain = await EmbeddedChain.create({ matureBlocks: 101, dataDir: dir });
  t.teardown(() => chain.close());
  await chain.mine(1);
  const block = coinbaseBlock(await chain.getBlockTemplate(), Array.from({ length: WIDE }, () => new Uint8Array(0)));
  const watch = watchTurns();
  const r = await chain.submitBlock(block);
  const connecting = watch.reset();
  // Disconnecting it (an operator's reorg) restores what it spent and removes its outputs.
  const reorg = await chain.reorg(1, { newBlocks: 1 });
  await watch.stop();
  const longest = watch.longest;
  t.is(r.result, "accepted", r.reason);
  t.is(reorg.disconnected.length, 1);
  t.log(`longest turn ${connecting.toFixed(1)} ms of CPU while the wide block was checked and connected, ${longest.toFixed(1)} ms while it was disconnected`);
  // Checking and connecting ran each transaction's outputs in one stretch: 69-139 ms of CPU
  // (21-35 ms after); disconnecting ran the whole block in one stretch: 47-73 ms (12-32 after,
  // so its bound does not always catch the old code; the connecting one does). What is left is the
  // parse of the one transaction and garbage collection.
  t.true(connecting < 60, `longest turn ${connecting.toFixed(1)} ms of CPU connecting`);
  t.true(longest < 60, `longest turn ${longest.toFixed(1)} ms of CPU disconnecting`);
});

test("get_transaction answers the 40,000-output coinbase in its reduced form, within max_values, with its raw hex", async (t) => {
  const { chain, hash } = await wideChain();
  t.teardown(() => chain.close());
  const block = (await chain.getBlock(hash))!;
  const txid = block.transactions[0]!.txid;
  const tx = (await handler(chainFamily, "get_transaction")({ chain } as unknown as CallContext, { txid })) as Record<string, any>;
  t.notThrows(() => sendable(tx));
  t.like(tx, { txid, truncated: true, input_count: 1, output_count: WIDE, inputs: [], outputs: [] });
  t.is(decodeTransaction(tx.hex).outputs.length, WIDE);
});

test("get_mempool_transaction answers a transaction of 10,000 outputs (70,000 values) in its reduced form, within max_values", async (t) => {
  const raw = RawTx.decode(RawTx.encode({
    version: 2, segwitFlag: false, lockTime: 0,
    inputs: [{ txid: new Uint8Array(32).fill(1), index: 0, finalScriptSig: new Uint8Array(0), sequence: 0xffffffff }],
    outputs: Array.from({ length: 10_000 }, () => ({ amount: 0n, script: new Uint8Array([0x51]) })),
  } as never)) as never;
  const wide = Object.freeze(describeTransaction(raw));
  const c = { chain: { getMempoolTransaction: async () => wide } } as unknown as CallContext;
  const tx = (await handler(mempoolFamily, "get_mempool_transaction")(c, { txid: wide.txid })) as Record<string, any>;
  t.notThrows(() => sendable(tx));
  t.like(tx, { txid: wide.txid, truncated: true, input_count: 1, output_count: 10_000, inputs: [], outputs: [] });
});

test("a transaction whose description stays within TX_VALUES is described whole, with no truncated flag or counts", async (t) => {
  // 13 values per input (no witness) and 7 per output: the widest whole description under the limit.
  const outputs = Math.floor((TX_VALUES - 13 - 64) / 7);
  const raw = RawTx.decode(RawTx.encode({
    version: 2, segwitFlag: false, lockTime: 0,
    inputs: [{ txid: new Uint8Array(32).fill(1), index: 0, finalScriptSig: new Uint8Array(0), sequence: 0xffffffff }],
    outputs: Array.from({ length: outputs }, () => ({ amount: 0n, script: new Uint8Array([0x51]) })),
  } as never)) as never;
  const whole = Object.freeze(describeTransaction(raw));
  const c = { chain: { getTransaction: async () => whole } } as unknown as CallContext;
  const tx = (await handler(chainFamily, "get_transaction")(c, { txid: whole.txid })) as Record<string, any>;
  t.notThrows(() => sendable(tx));
  t.is(tx.outputs.length, outputs);
  t.false("truncated" in tx);
  t.false("output_count" in tx);
});

const PROBE = fileURLToPath(new URL("./fixtures/wide-tx/main.ts", import.meta.url));
const PROBE_CAPS = ["read_blockchain", "read_chain_state", "submit_block"];

/** A TypeScript module reading every new block whole (every page), in both forms, and its coinbase by txid. */
const READER = inlineModule("wide-reader", ["read_blockchain", "subscribe_events"], `
  await ctx.events.subscribe("NewBlock", async (ev: any) => {
    try {
      const full = await ctx.chain.getBlock(ev.payload.hash);
      const light = await ctx.chain.getBlock(ev.payload.hash, { include_hex: false });
      const [cb] = full.transactions;
      const tx = await ctx.chain.getTransaction(cb.txid);
      ctx.log.info("wide reader read", {
        height: ev.payload.height, txs: full.transactions.length, light_txs: light.transactions.length,
        truncated: cb.truncated ?? false, output_count: cb.output_count ?? null, outputs: cb.outputs.length, hex: cb.hex.length,
        light_truncated: light.transactions[0].truncated ?? false, light_hex: "hex" in light.transactions[0],
        tx_truncated: tx.truncated ?? false, tx_output_count: tx.output_count ?? null, tx_hex: tx.hex.length,
      });
    } catch (e) {
      ctx.log.info("wide reader failed", { height: ev.payload.height, message: String((e as Error).message).slice(0, 300) });
    }
  });
`);

test.serial("under the real host, a native module submits blocks whose coinbase has 40,000 outputs; it, a TypeScript module and the canary read each whole in both forms, the coinbase reduced, and the canary keeps up", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"], { "wide-reader": READER });
  await writeNodeNative(modulesDir, "wide-tx", PROBE, PROBE_CAPS);
  const h = await startHost(t, {
    dir,
    modules: ["good"],
    inline: { "wide-reader": READER },
    grants: { good: GOOD_GRANTS, "wide-reader": ["read_blockchain", "subscribe_events"], "wide-tx": PROBE_CAPS },
    // Each wide block writes ~25 times its 360 KB (40,000 UTXOs): room for three, at once.
    configure: (c) => {
      c.modules.limits["wide-tx"] = { submit_blocks_per_minute: 100, submit_block_mb_per_minute: 1000 };
    },
  });
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  let late = 0;
  let unanswered = 0;
  let report: Record<string, any> | undefined;
  await waitFor(async () => {
    // The canary mines only when no block came for 15 s: on a beat of two seconds, its blocks
    // moved the tip under the probe's 40,000-output blocks at load ~18 (2 of 3 accepted in 26
    // attempts over 167 s, in a fresh-clone CI). The probe's own blocks are the canary's then.
    const r = await canaryRound(h, { mine: () => mineWhenIdle(h) });
    if (!r.stored) late++;
    if (!r.answered) unanswered++;
    report = h.records.find((x) => x.source === "wide-tx" && x.message === "wide probe report")?.fields as Record<string, any> | undefined;
    return report !== undefined;
  }, 240_000, "the wide probe's report", () => h.tail(30));
  const heights = String(report!.heights).split(",").filter(Boolean).map(Number);
  t.log(`wide blocks: ${heights.length} accepted in ${report!.attempts} attempts, ${report!.elapsedMs} ms`);
  t.is(heights.length, 3, `three wide blocks accepted (last refusal: ${report!.lastReason})`);
  for (const height of heights) {
    const probe = h.records.find((x) => x.source === "wide-tx" && x.message === "wide probe read" && x.fields?.height === height)?.fields as Record<string, any>;
    t.true(probe?.ok, `the native module read block ${height}: ${JSON.stringify(probe)}`);
    for (const form of ["full", "light"]) {
      t.like(JSON.parse(probe[form]), { pages: 1, txs: 1, truncated: true, input_count: 1, output_count: WIDE, outputs: 0 }, `native, ${form}`);
    }
    t.true(JSON.parse(probe.full).hex > 360_000, "the raw coinbase (binary on the wire) with include_hex");
    t.is(JSON.parse(probe.light).hex, null, "no raw hex without include_hex");
    t.like(JSON.parse(probe.tx), { truncated: true, output_count: WIDE, outputs: 0 }, "native, get_transaction");
    const tsRecord = () => h.records.find((r) => r.source === "wide-reader" && /^wide reader (read|failed)$/.test(r.message) && r.fields?.height === height);
    await waitFor(() => tsRecord() !== undefined, 30_000, `the TypeScript module's read of block ${height}`, () => h.tail(30));
    const ts = tsRecord()!.fields as Record<string, any>;
    t.like(ts, { txs: 1, light_txs: 1, truncated: true, output_count: WIDE, outputs: 0, light_truncated: true, light_hex: false, tx_truncated: true, tx_output_count: WIDE }, `the TypeScript module read block ${height}`);
    t.true(ts.hex > 720_000 && ts.tx_hex === ts.hex, "the raw coinbase as hex in the SDK");
    await h.waitForLog(new RegExp(`^stored block ${height}$`), { source: "good", timeoutMs: 30_000 });
  }
  loop.disable();
  t.log(`canary rounds late ${late}, unanswered ${unanswered}; host event loop delay max ${(loop.max / 1e6).toFixed(0)} ms, p99 ${(loop.percentile(99) / 1e6).toFixed(0)} ms`);
  t.is(late, 0, "the canary stored every block it mined within 5 s");
  t.is(unanswered, 0, "the host answered RPC within 5 s");
});

const RUST_EXAMPLE = path.join(ROOT, "modules/rust-example/target/release/rust-example");

test.serial("under the real host, the shipped Rust module (the Rust SDK's Transaction, which has no truncated field) reads a block whose coinbase has 40,000 outputs", async (t) => {
  t.timeout(180_000);
  t.true(existsSync(RUST_EXAMPLE), `${RUST_EXAMPLE} is missing: build it with scripts/build-rust.sh (npm run setup does)`);
  const h = await startHost(t, {
    grants: { "rust-example": ["read_blockchain", "read_chain_state", "subscribe_events=NewBlock", "read_storage", "write_storage", "register_rpc_endpoint", "report_metrics"] },
    configure: (config) => {
      config.modules.modules_dir = path.join(ROOT, "modules");
      config.modules.enabled_modules = ["rust-example"];
    },
  });
  await h.waitForLog(/rust-example: caught up: 1 blocks recorded, 0 unwound/, { source: "rust-example", timeoutMs: 60_000 });
  const mark = h.mark();
  const r = await h.chain.submitBlock(coinbaseBlock(await h.chain.getBlockTemplate(), Array.from({ length: WIDE }, () => new Uint8Array(0))));
  t.is(r.result, "accepted", r.reason);
  const height = await h.chain.getBlockHeight();
  // Before the reduced form: get_block_by_height answered result_too_large and the module stopped following blocks.
  const read = await h.waitForLog(new RegExp(`^rust-example: block ${height} has \\d+ txs$`), { source: "rust-example", since: mark, timeoutMs: 60_000 });
  t.is(read.message, `rust-example: block ${height} has 1 txs`);
});
