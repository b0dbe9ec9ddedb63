// Hostile probes of round 26 (issue #8): a hostile Bitcoin Core node, the remote party the Core
// backend ([chain] backend = "bitcoind") reads. The node is the project's Core facade behind a
// man in the middle (test/helpers/hostile-core.ts) that answers the calls a test chooses; the
// host is the real one, its modules served by a Core backend attached to that node.
//   blocks    getblock answered with a block of 15,000 transactions (0.9 MB, honest): it was
//             decoded on the host's loop in one stretch (RawTx and describeTransaction: 0.5-0.7 s
//             of one turn; a 4 MB block of small transactions, seconds); now read in slices by
//             the chain's own reader. getblock answered with another block than the one asked,
//             getrawtransaction with another transaction, getblockheader with another header:
//             handed to modules as the one asked for; now refused naming what came. getblock
//             answered with 16 MB of hex: decoded whole before it was found not to be a block;
//             now refused on its length (MAX_NODE_BLOCK_BYTES).

import test from "ava";
import { hexOfRaw, type Block } from "../chain/backend.ts";
import { MAX_NODE_BLOCK_BYTES } from "../chain/bitcoind/convert.ts";
import { bigBlock } from "./helpers/big-block.ts";
import { hostileCore, type HostileCore } from "./helpers/hostile-core.ts";
import { buildModulesDir, startHost, tempDir } from "./helpers/host.ts";
import { inlineModule, REPORT, type Outcome } from "./helpers/modules.ts";
import { call } from "./helpers/rpc.ts";
import { watchTurns } from "./helpers/turns.ts";

const READER_CAPS = ["register_rpc_endpoint", "read_blockchain"];
const READER = inlineModule("r26-reader", READER_CAPS, `
  await ctx.rpc.register("block", "reads a block by hash", (p: any) => report(async () => {
    const b = await ctx.chain.getBlock(p.hash);
    return b && { hash: b.hash, txs: b.transactions.length };
  }));
  await ctx.rpc.register("header", "reads a header by hash", (p: any) => report(async () => (await ctx.chain.getBlockHeader(p.hash))?.hash ?? null));
  await ctx.rpc.register("tx", "reads a transaction", (p: any) => report(async () => (await ctx.chain.getTransaction(p.txid))?.txid ?? null));
  ctx.log.info("ready");
`, REPORT);

/** A host whose chain is a Core backend attached to a hostile node over its own embedded chain, with the reader module. */
async function hostOnHostileCore(t: Parameters<typeof startHost>[0]) {
  const dir = await tempDir(t);
  await buildModulesDir(dir, [], { "r26-reader": READER });
  let core: HostileCore | undefined;
  t.teardown(() => core?.stop());
  const h = await startHost(t, {
    dir, modules: [], grants: { "r26-reader": READER_CAPS },
    // A module reading a block of 15,000 transactions through the Core backend reads it once per page of them.
    configure: (c) => { c.rpc.call_timeout_ms = 120_000; },
    backend: async (chain) => {
      core = await hostileCore(chain);
      return core.backend();
    },
  });
  await h.waitForState("r26-reader", "running");
  return { h, core: core! };
}

test.serial(`a Core node answering getblock with a block of 15,000 transactions: read in slices, no turn of the host's loop takes 150 ms of its CPU (before: decoded in one stretch, 0.5-0.7 s); another block, transaction or header than the one asked, or 16 MB of hex for a block, are each refused naming what came (MAX_NODE_BLOCK_BYTES for the hex); the module is served after`, async (t) => {
  t.timeout(180_000);
  const { h, core } = await hostOnHostileCore(t);
  const raw = await bigBlock(h.chain, { count: 15_000, witnessBytes: 0 });
  t.is((await h.chain.submitBlock(raw)).result, "accepted");
  const big = (await h.chain.getBlockByHeight(await h.chain.getBlockHeight()))! as Block;
  const other = (await h.chain.getBlockByHeight(5))! as Block;
  // Blocks the module has not read (the backend keeps the last block it read).
  const [six, seven] = [(await h.chain.getBlockByHeight(6))! as Block, (await h.chain.getBlockByHeight(7))! as Block];

  const turns = watchTurns();
  let took = performance.now();
  const read = (await call(h, "r26-reader.block", { hash: big.hash })) as Outcome;
  took = performance.now() - took;
  await new Promise((r) => setImmediate(r));
  const longest = turns.reset();
  await turns.stop();
  t.log(`block of ${raw.length} bytes, 15,001 transactions, through the Core backend in ${Math.round(took)} ms: longest turn ${longest.toFixed(1)} ms of CPU; getblock asked ${core.calls.get("getblock")} times`);
  t.deepEqual(read, { ok: true, value: { hash: big.hash, txs: 15_001 } });
  t.true(longest < 150, `longest turn ${longest} ms`);

  /** The module's call fails (backend_error) and the operator's log says why: `expected`. */
  const refused = async (what: string, method: string, params: unknown, expected: RegExp) => {
    const mark = h.mark();
    const outcome = (await call(h, method, params)) as Outcome;
    const said = h.records.slice(mark).map((r) => r.message).find((m) => expected.test(m));
    t.log(`${what}: the module got ${JSON.stringify(outcome)}; the log: ${said?.split("\n")[0]}`);
    t.like(outcome, { ok: false, code: "backend_error" });
    t.truthy(said, `${what}: no log record matches ${expected}`);
  };

  // Another block than the one asked.
  core.tamper = (method, params) => (method === "getblock" && params[0] === six.hash ? { result: hexOfRaw(other.hex) } : undefined);
  await refused("another block", "r26-reader.block", { hash: six.hash }, new RegExp(`getblock ${six.hash} with block ${other.hash}`));

  // Another header.
  core.tamper = (method, params) => (method === "getblockheader" && params[0] === big.hash && params[1] === false ? { result: other.header.hex } : undefined);
  await refused("another header", "r26-reader.header", { hash: big.hash }, new RegExp(`getblockheader ${big.hash} with header ${other.hash}`));

  // Another transaction.
  const [asked, given] = [big.transactions[1]!, big.transactions[2]!];
  core.tamper = (method, params) => (method === "getrawtransaction" && params[0] === asked.txid ? { result: hexOfRaw(given.hex) } : undefined);
  await refused("another transaction", "r26-reader.tx", { txid: asked.txid }, new RegExp(`getrawtransaction ${asked.txid} with transaction ${given.txid}`));

  // 16 MB of hex for a block.
  const huge = JSON.stringify({ result: "00".repeat(16_000_000), error: null, id: 1 });
  core.tamper = (method, params) => (method === "getblock" && params[0] === seven.hash ? { body: huge } : undefined);
  const started = performance.now();
  await refused("16 MB of hex for a block", "r26-reader.block", { hash: seven.hash }, new RegExp(`MAX_NODE_BLOCK_BYTES, ${MAX_NODE_BLOCK_BYTES}`));
  t.log(`16 MB of hex refused in ${Math.round(performance.now() - started)} ms`);

  core.tamper = null;
  for (const b of [six, seven]) t.deepEqual(await call(h, "r26-reader.block", { hash: b.hash }), { ok: true, value: { hash: b.hash, txs: b.transactions.length } });
});
