// What sending transactions' raw bytes as bin instead of hex strings buys the host (issue #8,
// docs/protocol.md 6.3). Not part of `npm run bench`: run it alone,
//   node_modules/.bin/node --import=tsx --no-node-snapshot bench/tx-hex.ts [transactions]
// An embedded chain mines one block of N wallet transactions (default 3000). For the pages of
// its transactions (capabilities/pages.ts, as get_block answers them) and for N
// get_mempool_transaction answers (the same transactions, before mining), the host's work is
// timed (process CPU time) in the same run both ways: "hex", the form before (each transaction's hex made from
// its bytes, as the parser did, then the page built and encoded), and "bin", the form now (the
// page built from the bytes and encoded). Fresh, unfrozen objects each round, so the codec's
// cache of frozen encodings never answers; medians of ROUNDS rounds, alternating.
//
// Run of 2026-12-05 12:35 (2-core machine at load 8-10, process CPU time):
//   block of 3001 small transactions (179 KiB), its 8 pages: hex 10.9 ms, 1629 KiB | bin 9.5 ms, 1450 KiB
//   3000 get_mempool_transaction answers:                   hex 10.3 ms, 1511 KiB | bin 10.1 ms, 1333 KiB
//   block of 1001 transactions of ~3 KB (2995 KiB):          hex 39.1 ms, 13 pages, 15224 KiB | bin 31.7 ms, 11 pages, 12228 KiB
// Small transactions gain little (their pages are bound by values, not bytes: the decoded
// fields, txids and scripts as hex, dominate); a heavy block's pages cost ~20% less CPU and
// bytes and come in fewer pages. Earlier run at the same load: 12.3 vs 13.2 ms and 13.3 vs
// 11.0 ms for the first two lines: within noise for small transactions.

import { performance } from "node:perf_hooks";
import { EmbeddedChain } from "../chain/embedded.ts";
import { hexOfRaw, type Transaction } from "../chain/backend.ts";
import { pageOf } from "../capabilities/pages.ts";
import { encodeEnvelope, HOST_BODY_LIMITS } from "../protocol/codec.ts";
import { bigBlock, fillMempool } from "../test/helpers/big-block.ts";

const N = Number(process.argv[2] ?? 3000);
const ROUNDS = 15;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
/** CPU time of this process in ms (user + system): steadier than wall time on a loaded machine. */
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

const chain = await EmbeddedChain.create();
const t0 = performance.now();
// One input, one output each (test/helpers/big-block.ts): a block of small transactions.
const txids = await fillMempool(chain, N);
console.log(`${N} transactions made in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
const mempool = await Promise.all(txids.map((id) => chain.getMempoolTransaction(id)));
const [hash] = await chain.mine(1);
let block = (await chain.getBlock(hash!))!;
console.log(`block: ${block.transactions.length} transactions, ${block.size} bytes`);

const unfrozen = (tx: Transaction, hex: boolean): Transaction => ({ ...tx, hex: hex ? hexOfRaw(tx.hex) : tx.hex });

/** Every page of the block's transactions, built and encoded; returns [ms, pages, bytes]. */
function blockPages(hex: boolean): [number, number, number] {
  const start = cpuMs();
  const whole = { ...block, transactions: block.transactions.map((tx) => unfrozen(tx, hex)), tx_count: block.transactions.length, next_tx_offset: null as number | null };
  let offset: number | null = 0;
  let pages = 0;
  let bytes = 0;
  while (offset !== null) {
    const page = pageOf(whole, "transactions", offset, "next_tx_offset", ["hex"]) as unknown as { next_tx_offset: number | null };
    for (const b of encodeEnvelope({ t: "response", id: 1 }, "result", page, HOST_BODY_LIMITS)) bytes += b.length;
    pages++;
    offset = page.next_tx_offset;
  }
  return [cpuMs() - start, pages, bytes];
}

/** N get_mempool_transaction answers, built and encoded; returns [ms, bytes]. */
function mempoolAnswers(hex: boolean): [number, number] {
  const start = cpuMs();
  let bytes = 0;
  for (const tx of mempool) {
    for (const b of encodeEnvelope({ t: "response", id: 1 }, "result", unfrozen(tx!, hex), HOST_BODY_LIMITS)) bytes += b.length;
  }
  return [cpuMs() - start, bytes];
}

const runs = { blockHex: [] as number[], blockBin: [] as number[], memHex: [] as number[], memBin: [] as number[] };
let shape = { hexPages: 0, binPages: 0, hexBytes: 0, binBytes: 0, memHexBytes: 0, memBinBytes: 0 };
for (let r = 0; r < ROUNDS; r++) {
  const [bh, hp, hb] = blockPages(true);
  const [bb, bp, bbytes] = blockPages(false);
  const [mh, mhb] = mempoolAnswers(true);
  const [mb, mbb] = mempoolAnswers(false);
  runs.blockHex.push(bh);
  runs.blockBin.push(bb);
  runs.memHex.push(mh);
  runs.memBin.push(mb);
  shape = { hexPages: hp, binPages: bp, hexBytes: hb, binBytes: bbytes, memHexBytes: mhb, memBinBytes: mbb };
}
const kb = (n: number) => `${(n / 1024).toFixed(0)} KiB`;
const report = (what: string) => console.log(`${what} | hex: ${median(runs.blockHex).toFixed(1)} ms, ${shape.hexPages} pages, ${kb(shape.hexBytes)} | bin: ${median(runs.blockBin).toFixed(1)} ms, ${shape.binPages} pages, ${kb(shape.binBytes)}`);
report(`block of ${block.transactions.length} small transactions (${kb(block.size)}): its transaction pages`);
console.log(`${N} get_mempool_transaction answers | hex: ${median(runs.memHex).toFixed(1)} ms, ${kb(shape.memHexBytes)} | bin: ${median(runs.memBin).toFixed(1)} ms, ${kb(shape.memBinBytes)}`);
// A heavy block: 1000 transactions of ~3 KB (witness data), ~3 MB.
const heavy = await EmbeddedChain.create();
const submitted = await heavy.submitBlock(await bigBlock(heavy, { count: 1000, witnessBytes: 3000 }));
if (submitted.result !== "accepted") throw new Error(`heavy block ${submitted.result}`);
block = (await heavy.getBlock(await heavy.getChainTip()))!;
runs.blockHex.length = 0;
runs.blockBin.length = 0;
for (let r = 0; r < ROUNDS; r++) {
  const [bh, hp, hb] = blockPages(true);
  const [bb, bp, bbytes] = blockPages(false);
  runs.blockHex.push(bh);
  runs.blockBin.push(bb);
  shape = { ...shape, hexPages: hp, binPages: bp, hexBytes: hb, binBytes: bbytes };
}
report(`block of ${block.transactions.length} transactions of ~3 KB (${kb(block.size)}): its transaction pages`);
await (chain as unknown as { close?: () => Promise<void> }).close?.();
