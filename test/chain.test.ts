import test from "ava";
import { secp256k1 } from "@noble/curves/secp256k1.js";
import { ripemd160 } from "@noble/hashes/legacy.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex, concatBytes, hexToBytes } from "@noble/hashes/utils.js";
import { RawTx, Script, ScriptNum, Transaction as SignerTransaction } from "@scure/btc-signer";
import type { Block, ChainEventName, Transaction } from "../chain/backend.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { decodeBlock, describeTransaction, type RawTransaction } from "../chain/serialise.ts";
import { hexOfRaw } from "../chain/backend.ts";

// Known regtest constants, spelled out independently of the implementation.
const GENESIS_HASH = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206";
const GENESIS_MERKLE_ROOT = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b";
const GENESIS_HEADER_HEX =
  "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4adae5494dffff7f2002000000";
const REGTEST_TARGET = 0x7fffffn << 232n;
const COIN = 100_000_000;

// ---- Independent helpers ----

const sha256d = (bytes: Uint8Array): Uint8Array => sha256(sha256(bytes));
const reversedHex = (bytes: Uint8Array): string => bytesToHex(Uint8Array.from(bytes).reverse());
const internal = (displayHex: string): Uint8Array => hexToBytes(displayHex).reverse();

function merkleRootOf(txids: string[]): string {
  let level = txids.map(internal);
  while (level.length > 1) {
    const next: Uint8Array[] = [];
    for (let i = 0; i < level.length; i += 2) {
      next.push(sha256d(concatBytes(level[i]!, level[i + 1] ?? level[i]!)));
    }
    level = next;
  }
  return reversedHex(level[0]!);
}

function u32le(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}

function u64le(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
  return b;
}

/** The BIP34 height at the start of a coinbase scriptSig. */
function coinbaseHeight(block: Block): number {
  const first = Script.decode(hexToBytes(block.transactions[0]!.inputs[0]!.script_sig))[0];
  if (typeof first === "number") return first; // OP_0..OP_16
  if (first instanceof Uint8Array) return Number(ScriptNum().decode(first));
  throw new Error(`unexpected coinbase script element ${String(first)}`);
}

/** Re-encode a decoded transaction with edits, for building conflicting or invalid spends. */
function reencode(hex: string, edit: (raw: RawTransaction) => void): string {
  const raw = RawTx.decode(hexToBytes(hex)) as RawTransaction;
  edit(raw);
  return bytesToHex(RawTx.encode(raw));
}

/** An unsigned transaction spending one outpoint (the chain does not check scripts). */
function spendHex(txid: string, vout: number, value: number): string {
  return bytesToHex(
    RawTx.encode({
      version: 2,
      segwitFlag: false,
      inputs: [{ txid: hexToBytes(txid), index: vout, finalScriptSig: new Uint8Array(), sequence: 0xffffffff }],
      outputs: [{ amount: BigInt(value), script: hexToBytes("0014" + "11".repeat(20)) }],
      witnesses: undefined,
      lockTime: 0,
    }),
  );
}

function recordEvents(chain: EmbeddedChain): Array<{ name: ChainEventName; payload: any }> {
  const events: Array<{ name: ChainEventName; payload: any }> = [];
  chain.subscribe((name, payload) => events.push({ name, payload }));
  return events;
}

// ---- Genesis and block structure ----

test("starts from the real regtest genesis block", async (t) => {
  const chain = await EmbeddedChain.create({ matureBlocks: 0 });
  t.is(await chain.getBlockHeight(), 0);
  t.is(await chain.getChainTip(), GENESIS_HASH);
  const genesis = (await chain.getBlockByHeight(0))!;
  t.is(genesis.hash, GENESIS_HASH);
  t.is(genesis.header.merkle_root, GENESIS_MERKLE_ROOT);
  t.is(genesis.header.hex, GENESIS_HEADER_HEX);
  t.is(reversedHex(sha256d(hexToBytes(genesis.header.hex))), GENESIS_HASH);
  t.is(genesis.transactions.length, 1);
  t.is(genesis.transactions[0]!.txid, GENESIS_MERKLE_ROOT);
  t.is(genesis.transactions[0]!.outputs[0]!.value, 50 * COIN);
  t.true(Buffer.from(genesis.transactions[0]!.inputs[0]!.script_sig, "hex").toString("latin1").includes("Chancellor on brink"));
  t.deepEqual(await chain.getBlock(GENESIS_HASH), genesis);
  // Like bitcoind, the genesis coinbase is not spendable.
  t.is(await chain.getUtxo({ txid: GENESIS_MERKLE_ROOT, vout: 0 }), null);
});

test("creates 101 mature blocks and reports regtest chain info", async (t) => {
  const chain = await EmbeddedChain.create();

  const info = await chain.getChainInfo();
  t.is(info.chain, "regtest");
  t.is(info.height, 101);
  t.is(info.tip_hash, await chain.getChainTip());
  t.is(info.bits, 0x207fffff);
  t.true(Math.abs(info.difficulty - 4.656542373906925e-10) < 1e-20);
  t.is(info.chain_work, "204"); // 2 per block, 102 blocks, like bitcoind's 0xcc
  t.true(info.is_synced);
  t.true(chain.walletAddress.startsWith("bcrt1q"));
  t.deepEqual(await chain.getPeers(), []);
  const stats = await chain.getNetworkStats();
  t.is(stats.peer_count, 0);
  t.true(stats.hash_rate >= 0);
});

test("every block has valid proof of work, links, merkle root, times and round-trips", async (t) => {
  let clock = 1_700_000_000;
  // A clock that mostly stands still, so block times are driven by the median-time-past rule.
  const chain = await EmbeddedChain.create({ matureBlocks: 105, now: () => (clock += 0.1) });
  // Five transactions in the last block: merkle levels of odd length (5, then 3).
  for (let i = 0; i < 4; i++) await chain.createTransaction({ feeRate: 5 + i });
  await chain.mine(1);

  const height = await chain.getBlockHeight();
  const times: number[] = [];
  let prev = GENESIS_HASH;
  times.push((await chain.getBlockByHeight(0))!.header.time);
  for (let h = 1; h <= height; h++) {
    const block = (await chain.getBlockByHeight(h))!;
    const headerBytes = hexToBytes(block.header.hex);
    t.is(headerBytes.length, 80);
    const hash = sha256d(headerBytes);
    t.is(reversedHex(hash), block.hash);
    t.true(BigInt("0x" + reversedHex(hash)) <= REGTEST_TARGET, `pow at ${h}`);
    t.is(block.header.prev_hash, prev);
    t.is(block.header.bits, 0x207fffff);
    t.is(coinbaseHeight(block), h);
    t.is(block.header.merkle_root, merkleRootOf(block.transactions.map((tx) => tx.txid)));

    const mtp = times.slice(-11).sort((a, b) => a - b)[Math.floor(Math.min(11, times.length) / 2)]!;
    t.true(block.header.time > mtp, `time above median time past at ${h}`);
    times.push(block.header.time);

    // Serialised block: header + count + transactions, decodable and re-hashable.
    t.true(block.hex instanceof Uint8Array, "the embedded chain holds a block's raw bytes, never its hex");
    const decoded = decodeBlock(block.hex as Uint8Array);
    t.is(decoded.header.hash, block.hash);
    t.is(decoded.transactions.length, block.transactions.length);
    t.is(block.size, block.hex.length);
    decoded.transactions.forEach((raw, i) => {
      const tx = block.transactions[i]!;
      t.deepEqual(describeTransaction(raw), tx);
      // btc-signer computes the txid on its own.
      t.is(SignerTransaction.fromRaw(hexToBytes(hexOfRaw(tx.hex)), { allowUnknownOutputs: true, allowUnknownInputs: true }).id, tx.txid);
    });
    prev = block.hash;
  }
});

test("coinbase carries the BIP34 height and a BIP141 witness commitment", async (t) => {
  const chain = await EmbeddedChain.create({ matureBlocks: 105 });
  await chain.createTransaction({ feeRate: 3 });
  await chain.createTransaction({ feeRate: 4 });
  const [hash] = await chain.mine(1);
  const block = (await chain.getBlock(hash!))!;
  t.is(block.height, 106);
  t.is(coinbaseHeight(block), 106);
  t.is(coinbaseHeight((await chain.getBlockByHeight(16))!), 16);
  t.is(coinbaseHeight((await chain.getBlockByHeight(17))!), 17);

  const coinbase = block.transactions[0]!;
  t.true(coinbase.inputs[0]!.coinbase);
  t.deepEqual(coinbase.inputs[0]!.witness, ["00".repeat(32)]);
  const commitmentOutput = coinbase.outputs.find((o) => o.script_pubkey.startsWith("6a24aa21a9ed"))!;
  t.truthy(commitmentOutput);
  // Witness merkle root over [0 (coinbase), wtxids...], committed with the reserved value.
  const witnessRoot = merkleRootOf(["00".repeat(32), ...block.transactions.slice(1).map((tx) => tx.wtxid)]);
  const commitment = bytesToHex(sha256d(concatBytes(internal(witnessRoot), new Uint8Array(32))));
  t.is(commitmentOutput.script_pubkey, "6a24aa21a9ed" + commitment);
  t.is(block.weight, block.transactions.reduce((sum, tx) => sum + tx.weight, 0) + 4 * 81);
});

// ---- Mempool and mining ----

test("mining takes mempool transactions by fee rate and pays their fees to the coinbase", async (t) => {
  const chain = await EmbeddedChain.create({ matureBlocks: 105 });
  const low = await chain.createTransaction({ feeRate: 2 });
  const high = await chain.createTransaction({ feeRate: 30, outputs: 3 });
  const mid = await chain.createTransaction({ feeRate: 10 });
  const fees = await Promise.all([low, high, mid].map(async (txid) => (await chain.getMempoolEntry(txid))!.fee));
  const info = await chain.getMempoolInfo();
  t.is(info.transaction_count, 3);
  t.is(info.total_fee_sats, fees[0]! + fees[1]! + fees[2]!);

  const events = recordEvents(chain);
  const [hash] = await chain.mine();
  const block = (await chain.getBlock(hash!))!;
  t.deepEqual(
    block.transactions.slice(1).map((tx) => tx.txid),
    [high, mid, low],
  );
  t.is(block.transactions[0]!.outputs[0]!.value, 50 * COIN + fees[0]! + fees[1]! + fees[2]!);
  t.deepEqual(await chain.getMempoolTransactions(), []);
  t.false(await chain.isInMempool(high));
  t.true(await chain.hasTransaction(high));
  t.is(await chain.getMempoolTransaction(high), null);
  t.is((await chain.getTransaction(high))!.txid, high);
  t.deepEqual(
    events.map((e) => [e.name, e.payload.txid ?? e.payload.hash, e.payload.reason]),
    [
      ["MempoolTransactionRemoved", high, "block"],
      ["MempoolTransactionRemoved", mid, "block"],
      ["MempoolTransactionRemoved", low, "block"],
      ["NewBlock", hash, undefined],
    ],
  );
  t.deepEqual(events[3]!.payload, { hash, height: 106, time: block.header.time, tx_count: 4 });
});

test("mine can leave the mempool alone", async (t) => {
  const chain = await EmbeddedChain.create({ matureBlocks: 102 });
  const txid = await chain.createTransaction();
  const [hash] = await chain.mine(1, { includeMempool: false });
  t.is((await chain.getBlock(hash!))!.transactions.length, 1);
  t.true(await chain.isInMempool(txid));
});

test("createTransaction spends a real wallet UTXO with a BIP143 signature and an exact fee", async (t) => {
  const chain = await EmbeddedChain.create();
  const events = recordEvents(chain);
  const txid = await chain.createTransaction({ feeRate: 7, outputs: 2 });
  const tx = (await chain.getMempoolTransaction(txid))!;
  t.is(tx.inputs.length, 1);
  t.is(tx.outputs.length, 3);
  const input = tx.inputs[0]!;
  const spent = (await chain.getUtxo({ txid: input.txid, vout: input.vout }))!;
  t.truthy(spent);
  t.true(spent.coinbase);
  t.is(spent.address, chain.walletAddress);

  const entry = (await chain.getMempoolEntry(txid))!;
  const outputs = tx.outputs.reduce((sum, o) => sum + o.value, 0);
  t.is(entry.fee, spent.value - outputs);
  t.is(entry.fee, 7 * tx.vsize);
  t.is(entry.fee_rate, 7);
  t.true(tx.outputs.every((o) => o.address?.startsWith("bcrt1q")));
  t.deepEqual(events, [
    { name: "MempoolTransactionAdded", payload: { txid, fee: entry.fee, vsize: tx.vsize, fee_rate: 7 } },
  ]);

  // Verify the P2WPKH signature against a BIP143 sighash computed here.
  const [der, pubkey] = input.witness.map((w) => hexToBytes(w)) as [Uint8Array, Uint8Array];
  const pkh = ripemd160(sha256(pubkey));
  t.is(spent.script_pubkey, "0014" + bytesToHex(pkh));
  t.is(der[der.length - 1], 1); // SIGHASH_ALL
  const preimage = concatBytes(
    u32le(tx.version),
    sha256d(concatBytes(internal(input.txid), u32le(input.vout))),
    sha256d(u32le(input.sequence)),
    internal(input.txid),
    u32le(input.vout),
    hexToBytes("1976a914" + bytesToHex(pkh) + "88ac"),
    u64le(spent.value),
    u32le(input.sequence),
    sha256d(concatBytes(...tx.outputs.map((o) => concatBytes(u64le(o.value), new Uint8Array([o.script_pubkey.length / 2]), hexToBytes(o.script_pubkey))))),
    u32le(tx.locktime),
    u32le(1),
  );
  t.true(secp256k1.verify(der.subarray(0, -1), sha256d(preimage), pubkey, { prehash: false, format: "der" }));

  await chain.mine();
  t.is(await chain.getUtxo({ txid: input.txid, vout: input.vout }), null);
  const created = (await chain.getUtxo({ txid, vout: 0 }))!;
  t.is(created.value, tx.outputs[0]!.value);
  t.is(created.height, 102);
  t.false(created.coinbase);
});

test("createTransaction refuses when no mature wallet UTXO is free", async (t) => {
  const chain = await EmbeddedChain.create(); // coinbases of heights 1 and 2 are spendable at 102
  await chain.createTransaction();
  await chain.createTransaction();
  await t.throwsAsync(chain.createTransaction(), { message: /no mature, unspent wallet UTXO/ });
  await chain.mine();
  // The confirmed change and payments, and the next matured coinbase, are spendable now.
  const txid = await chain.createTransaction();
  t.true((await chain.getMempoolTransactions()).includes(txid));
});

test("the same seed gives the same wallet, another seed another", async (t) => {
  const a = await EmbeddedChain.create({ matureBlocks: 1 });
  const b = await EmbeddedChain.create({ matureBlocks: 1 });
  const c = await EmbeddedChain.create({ matureBlocks: 1, seed: new Uint8Array([1, 2, 3]) });
  t.is(a.walletAddress, b.walletAddress);
  t.not(a.walletAddress, c.walletAddress);
});

test("fee estimates follow the mempool", async (t) => {
  const chain = await EmbeddedChain.create({ matureBlocks: 110 });
  t.is(await chain.estimateFee(1), 1);
  for (let i = 0; i < 3; i++) await chain.createTransaction({ feeRate: 2 });
  const low = await chain.estimateFee(1);
  t.true(low >= 1);
  t.is(low, 2);
  for (let i = 0; i < 4; i++) await chain.createTransaction({ feeRate: 40 });
  const high = await chain.estimateFee(1);
  t.true(high > low);
  t.true((await chain.estimateFee(6)) <= high);
  await t.throwsAsync(chain.estimateFee(0), { instanceOf: RangeError });
});

// ---- submitTransaction ----

test("submitTransaction rejects double spends, overspends and duplicates", async (t) => {
  const chain = await EmbeddedChain.create();
  const txid = await chain.createTransaction({ feeRate: 5 });
  const tx = (await chain.getTransaction(txid))!;
  const input = `${tx.inputs[0]!.txid}:${tx.inputs[0]!.vout}`;

  // Same input, different outputs: a conflicting spend.
  const conflicting = reencode(hexOfRaw(tx.hex), (raw) => {
    raw.outputs[0]!.amount -= 1000n;
  });
  await t.throwsAsync(chain.submitTransaction(conflicting), { message: new RegExp(`${input} conflicts with mempool transaction ${txid}`) });
  await t.throwsAsync(chain.submitTransaction(tx.hex), { message: /already in the mempool/ });
  await t.throwsAsync(chain.submitTransaction("00ff"), { message: /decode failed/ });

  // An unspent, mature coinbase, but paying out more than it holds.
  const coinbase = (await chain.getBlockByHeight(2))!.transactions[0]!;
  await t.throwsAsync(chain.submitTransaction(spendHex(coinbase.txid, 0, 51 * COIN)), { message: /exceed inputs/ });
  const ok = await chain.submitTransaction(spendHex(coinbase.txid, 0, 50 * COIN - 5000));
  t.is((await chain.getMempoolEntry(ok))!.fee, 5000);

  await chain.mine();
  await t.throwsAsync(chain.submitTransaction(conflicting), { message: /does not spend an unspent confirmed output/ });
  await t.throwsAsync(chain.submitTransaction(tx.hex), { message: /already confirmed/ });
  t.is((await chain.getMempoolInfo()).transaction_count, 0);
});

test("submitTransaction enforces coinbase maturity", async (t) => {
  const chain = await EmbeddedChain.create(); // tip 101; the next block is 102
  const fresh = (await chain.getBlockByHeight(3))!.transactions[0]!; // 102 - 3 = 99 confirmations short
  await t.throwsAsync(chain.submitTransaction(spendHex(fresh.txid, 0, COIN)), { message: /immature until height 103/ });
  await chain.mine(1, { includeMempool: false });
  t.truthy(await chain.submitTransaction(spendHex(fresh.txid, 0, COIN)));
});

// ---- Reorganisations ----

test("reorg disconnects, returns transactions to the mempool and emits events in order", async (t) => {
  const chain = await EmbeddedChain.create();
  const survivor = await chain.createTransaction({ feeRate: 3 }); // spends the height-1 coinbase
  const dropped = await chain.createTransaction({ feeRate: 4 }); // spends the height-2 coinbase
  const oldTip = (await chain.mine())[0]!;
  const h102 = oldTip;
  const h101 = (await chain.getBlockByHeight(101))!.hash;
  const survivorTx = (await chain.getTransaction(survivor))!;
  const spent = { txid: survivorTx.inputs[0]!.txid, vout: survivorTx.inputs[0]!.vout };
  t.is(await chain.getUtxo(spent), null);

  const events = recordEvents(chain);
  const result = await chain.reorg(2);
  t.deepEqual(result.disconnected, [h102, h101]);
  t.is(result.connected.length, 3);
  t.is(await chain.getBlockHeight(), 103);
  t.is(await chain.getChainTip(), result.connected[2]!);
  t.not(await chain.getChainTip(), oldTip);

  // Order: disconnects (tip first), mempool re-adds, new blocks, then the reorg summary.
  t.deepEqual(
    events.map((e) => e.name),
    ["BlockDisconnected", "BlockDisconnected", "MempoolTransactionAdded", "NewBlock", "NewBlock", "NewBlock", "ChainReorg"],
  );
  t.deepEqual(events[0]!.payload, { hash: h102, height: 102 });
  t.deepEqual(events[1]!.payload, { hash: h101, height: 101 });
  t.is(events[2]!.payload.txid, survivor);
  t.deepEqual(
    events.slice(3, 6).map((e) => [e.payload.hash, e.payload.height]),
    [
      [result.connected[0], 101],
      [result.connected[1], 102],
      [result.connected[2], 103],
    ],
  );
  t.deepEqual(events[6]!.payload, {
    old_tip: oldTip,
    new_tip: result.connected[2],
    fork_height: 100,
    disconnected: [h102, h101],
    connected: result.connected,
  });

  // The old blocks are off the active chain (still retrievable by hash, like bitcoind).
  t.not((await chain.getBlockByHeight(101))!.hash, h101);
  t.not((await chain.getBlockByHeight(102))!.hash, h102);
  t.is((await chain.getBlock(h102))!.height, 102);

  // The height-1 coinbase spend is valid again at height 101 and back in the mempool, not mined.
  t.true(await chain.isInMempool(survivor));
  t.deepEqual(await chain.getTransaction(survivor), survivorTx);
  t.truthy(await chain.getUtxo(spent));
  t.is(await chain.getUtxo({ txid: survivor, vout: 0 }), null);
  // The height-2 coinbase would be immature at height 101: that spend is gone.
  t.false(await chain.hasTransaction(dropped));
  t.is(await chain.getTransaction(dropped), null);

  await chain.mine();
  t.false(await chain.isInMempool(survivor));
});

test("reorg can mine the returned transactions straight away", async (t) => {
  const chain = await EmbeddedChain.create({ matureBlocks: 105 });
  const txid = await chain.createTransaction();
  await chain.mine();
  const { connected } = await chain.reorg(1, { newBlocks: 1, includeMempool: true });
  const block = (await chain.getBlock(connected[0]!))!;
  t.deepEqual(
    block.transactions.map((tx: Transaction) => tx.txid).slice(1),
    [txid],
  );
  t.false(await chain.isInMempool(txid));
});

test("reorg evicts mempool transactions that spend disconnected outputs", async (t) => {
  const chain = await EmbeddedChain.create({ matureBlocks: 105 });
  await chain.createTransaction();
  const [hash] = await chain.mine();
  // Spend the confirmed change of that block's transaction from the mempool.
  const change = (await chain.getBlock(hash!))!.transactions[1]!;
  const child = await chain.submitTransaction(spendHex(change.txid, 1, change.outputs[1]!.value - 1000));
  const events = recordEvents(chain);
  await chain.reorg(1, { newBlocks: 1 });
  t.false(await chain.isInMempool(child));
  t.deepEqual(
    events.find((e) => e.name === "MempoolTransactionRemoved")!.payload,
    { txid: child, reason: "reorg" },
  );
  t.true(await chain.isInMempool(change.txid));
});

test("reorg depth must be within the chain", async (t) => {
  const chain = await EmbeddedChain.create({ matureBlocks: 5 });
  await t.throwsAsync(chain.reorg(0), { instanceOf: RangeError });
  await t.throwsAsync(chain.reorg(6), { instanceOf: RangeError, message: /from 1 to the chain height 5/ });
  await t.throwsAsync(chain.reorg(1.5), { instanceOf: RangeError });
  t.is(await chain.getBlockHeight(), 5);
  const { connected } = await chain.reorg(5, { newBlocks: 5 }); // down to genesis is allowed
  t.is(connected.length, 5);
  t.is((await chain.getBlockByHeight(0))!.hash, GENESIS_HASH);
});

// ---- Subsidy, events, data hygiene ----

test("the subsidy halves at height 150", async (t) => {
  const chain = await EmbeddedChain.create({ matureBlocks: 149 });
  await chain.mine(2);
  t.is((await chain.getBlockByHeight(149))!.transactions[0]!.outputs[0]!.value, 50 * COIN);
  t.is((await chain.getBlockByHeight(150))!.transactions[0]!.outputs[0]!.value, 25 * COIN);
  t.is((await chain.getBlockByHeight(151))!.transactions[0]!.outputs[0]!.value, 25 * COIN);
});

test("a throwing listener does not break the chain; unsubscribe and close stop delivery", async (t) => {
  const chain = await EmbeddedChain.create({ matureBlocks: 1 });
  chain.subscribe(() => {
    throw new Error("listener bug");
  });
  const seen: string[] = [];
  const unsubscribe = chain.subscribe((name) => seen.push(name));
  await chain.mine();
  t.deepEqual(seen, ["NewBlock"]);
  unsubscribe();
  await chain.mine();
  t.is(seen.length, 1);
  chain.subscribe((name) => seen.push(name));
  await chain.close();
  await t.throwsAsync(chain.mine(), { message: /the chain is closed/ });
  t.is(seen.length, 1);
  t.is(await chain.getBlockHeight(), 3);
});

test("returned blocks are shared and frozen: a reader cannot change them for the next", async (t) => {
  const chain = await EmbeddedChain.create({ matureBlocks: 1 });
  const block = (await chain.getBlockByHeight(1))!;
  t.throws(() => {
    block.transactions[0]!.outputs[0]!.value = 1;
  }, { instanceOf: TypeError });
  t.throws(() => {
    block.header.time = 0;
  }, { instanceOf: TypeError });
  const again = (await chain.getBlockByHeight(1))!;
  t.is(again, block);
  t.is(again.transactions[0]!.outputs[0]!.value, 50 * COIN);
  t.false(JSON.stringify(again).includes("Uint8Array"));
});
