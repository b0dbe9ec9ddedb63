// The chain's own reader of submitted transactions and blocks (chain/parse.ts) against
// @scure/btc-signer's RawTx + describeTransaction, and what it refuses; and that a heavy
// submitted block is checked and connected in slices, giving the event loop turns.
import test from "ava";
import { RawTx } from "@scure/btc-signer";
import { EmbeddedChain } from "../chain/embedded.ts";
import { ParseError, parseBlock, parseTransaction } from "../chain/parse.ts";
import { type RawTransaction, decodeTransaction, describeTransaction } from "../chain/serialise.ts";
import { bigBlock } from "./helpers/big-block.ts";

const txid = (b: number) => new Uint8Array(32).fill(b);
const shapes: Record<string, RawTransaction> = {
  "legacy, two inputs, three outputs": {
    version: 1, segwitFlag: false, lockTime: 500, witnesses: undefined,
    inputs: [{ txid: txid(1), index: 0, finalScriptSig: Uint8Array.of(0x51, 0x52), sequence: 7 }, { txid: txid(2), index: 300, finalScriptSig: new Uint8Array(0), sequence: 0xffffffff }],
    outputs: [{ amount: 5000n, script: Uint8Array.from(Buffer.from("0014" + "ab".repeat(20), "hex")) }, { amount: 0n, script: Uint8Array.of(0x6a, 1, 2) }, { amount: 1n, script: new Uint8Array(300).fill(0x51) }],
  },
  "segwit with empty and many-item witnesses": {
    version: 2, segwitFlag: true, lockTime: 0,
    inputs: [{ txid: txid(3), index: 1, finalScriptSig: new Uint8Array(0), sequence: 1 }, { txid: txid(4), index: 2, finalScriptSig: new Uint8Array(0), sequence: 2 }],
    outputs: [{ amount: 1000n, script: Uint8Array.from(Buffer.from("5120" + "cd".repeat(32), "hex")) }],
    witnesses: [[], Array.from({ length: 300 }, (_, i) => new Uint8Array(i % 7).fill(i))],
  },
  "a coinbase": {
    version: 2, segwitFlag: true, lockTime: 0,
    inputs: [{ txid: new Uint8Array(32), index: 0xffffffff, finalScriptSig: Uint8Array.of(1, 0x65, 0), sequence: 0xffffffff }],
    outputs: [{ amount: 5_000_000_000n, script: Uint8Array.of(0x51) }],
    witnesses: [[new Uint8Array(32)]],
  },
  "negative version, 300 outputs": {
    version: -5, segwitFlag: false, lockTime: 0xffffffff, witnesses: undefined,
    inputs: [{ txid: txid(9), index: 0, finalScriptSig: new Uint8Array(253).fill(1), sequence: 0 }],
    outputs: Array.from({ length: 300 }, (_, i) => ({ amount: BigInt(i), script: Uint8Array.of(0x51) })),
  },
};

for (const [name, raw] of Object.entries(shapes)) {
  test(`parseTransaction reads ${name} exactly as RawTx + describeTransaction`, async (t) => {
    const bytes = RawTx.encode(raw);
    const expected = describeTransaction(decodeTransaction(bytes));
    const got = await parseTransaction(bytes);
    t.deepEqual(got, expected);
    t.true(Object.isFrozen(got) && Object.isFrozen(got.inputs[0]) && Object.isFrozen(got.outputs));
  });
}

test("parseTransaction refuses truncated bytes, trailing bytes and a non-canonical CompactSize, as RawTx does", async (t) => {
  const bytes = RawTx.encode(shapes["legacy, two inputs, three outputs"]!);
  await t.throwsAsync(parseTransaction(bytes.subarray(0, bytes.length - 1)), { instanceOf: ParseError, message: /locktime at byte \d+ runs past the end/ });
  await t.throwsAsync(parseTransaction(Uint8Array.from([...bytes, 0])), { instanceOf: ParseError, message: /1 bytes after the transaction/ });
  // Input count 2 written as 0xfd 0x02 0x00.
  const noncanonical = Uint8Array.from([...bytes.subarray(0, 4), 0xfd, 2, 0, ...bytes.subarray(5)]);
  t.throws(() => decodeTransaction(noncanonical));
  await t.throwsAsync(parseTransaction(noncanonical), { instanceOf: ParseError, message: /input count: non-canonical CompactSize/ });
});

test("parseBlock stops at the weight limit and refuses a transaction count the bytes cannot hold", async (t) => {
  const tx = RawTx.encode(shapes["negative version, 300 outputs"]!);
  const block = Uint8Array.from([...new Uint8Array(80), 3, ...tx, ...tx, ...tx]);
  const once = (await parseBlock(block, { maxWeight: 10_000_000 })).transactions;
  t.is(once.length, 3);
  await t.throwsAsync(parseBlock(block, { maxWeight: once[0]!.weight * 2 }), { instanceOf: ParseError, message: /bad-blk-weight: the block's weight passes \d+ at transaction 1/ });
  await t.throwsAsync(parseBlock(Uint8Array.from([...new Uint8Array(80), 0xfd, 0xff, 0xff, 1, 2, 3]), { maxWeight: 4_000_000 }), { instanceOf: ParseError, message: /claims 65535 transactions in 3 bytes/ });
});

test("a block of 40,000 transactions with no inputs or outputs (zeros after its header) is read in slices: the loop turns meanwhile", async (t) => {
  // Each such transaction is 10 bytes and ticked nowhere (no input, output or witness item):
  // the whole block was read in one stretch of the host's loop (fuzz/protocol-grammar.ts).
  const { Slicer } = await import("../chain/slices.ts");
  const bytes = new Uint8Array(80 + 3 + 400_000);
  bytes.set([0xfd, 0x40, 0x9c], 80); // CompactSize 40,000
  const slicer = new Slicer();
  const block = await parseBlock(bytes, { maxWeight: 4_000_000 }, slicer);
  t.is(block.transactions.length, 40_000);
  t.true(slicer.yields > 0, `${slicer.yields} turns given`);
});

test("a 15,000-transaction block is checked and connected in slices: the event loop turns many times meanwhile, and the block is whole", async (t) => {
  const chain = await EmbeddedChain.create({ matureBlocks: 1 });
  t.teardown(() => chain.close());
  const bytes = await bigBlock(chain, { count: 15_000, witnessBytes: 0 });
  let turns = 0;
  let counting = true;
  const count = () => {
    turns++;
    if (counting) setImmediate(count);
  };
  setImmediate(count);
  const result = await chain.submitBlock(bytes);
  counting = false;
  t.is(result.result, "accepted", result.reason);
  // One LevelDB read and one write are the only turns an unsliced check and connect gives.
  t.true(turns >= 5, `only ${turns} turns of the loop while the block was checked and connected`);
  const block = await chain.getBlock(result.hash!);
  t.is(block?.transactions.length, 15_001);
  t.true(block?.hex instanceof Uint8Array && Buffer.from(block.hex).equals(Buffer.from(bytes)), "the block's raw bytes as they came (no hex made)");
  const spent = block!.transactions[1]!.inputs[0]!;
  t.is(await chain.getUtxo({ txid: spent.txid, vout: spent.vout }), null);
});
