// A transaction's raw serialisation is MessagePack bin on the wire from protocol 2 on, like a
// block's (docs/protocol.md 6.3): get_transaction (mempool and confirmed), get_mempool_transaction,
// the transactions of a block's pages and of a block template. A module that speaks only
// version 1 gets the same bytes as hex strings (host/older-protocol.ts, from the catalogue's
// RawHex paths), and the chain keeps its bytes whatever a version-1 session was sent.

import test from "ava";
import { EmbeddedChain } from "../chain/embedded.ts";
import { openSession } from "./helpers/peer.ts";

const GRANTS = ["read_blockchain", "read_chain_state", "read_mempool"];
const hexOf = (b: unknown) => Buffer.from(b as Uint8Array).toString("hex");

test("transactions' raw bytes are bin in protocol 2 and the same bytes as hex in protocol 1: get_transaction, get_mempool_transaction, block pages, block templates", async (t) => {
  const chain = await EmbeddedChain.create();
  const v2 = await openSession(t, { chain, grants: GRANTS, protocol: [1, 2] });
  const v1 = await openSession(t, { chain, grants: GRANTS, protocol: [1, 1] });
  const both = async (method: string, params: Record<string, unknown>) => [(await v2.peer.call(method, params)).result, (await v1.peer.call(method, params)).result] as [Record<string, unknown>, Record<string, unknown>];

  const txid = await chain.createTransaction();
  for (const method of ["get_transaction", "get_mempool_transaction"]) {
    const [bin, hex] = await both(method, { txid });
    t.true(bin.hex instanceof Uint8Array, `${method}: bin in protocol 2`);
    t.is(typeof hex.hex, "string", `${method}: hex in protocol 1`);
    t.is(hexOf(bin.hex), hex.hex as string);
    t.is(bin.txid, txid);
  }

  const [tplBin, tplHex] = await both("get_block_template", {});
  const binTxs = tplBin.transactions as Array<{ txid: string; hex: unknown }>;
  const hexTxs = tplHex.transactions as Array<{ txid: string; hex: unknown }>;
  t.true(binTxs.some((x) => x.txid === txid), "the template holds the transaction");
  for (const [i, x] of binTxs.entries()) {
    t.true(x.hex instanceof Uint8Array, "template transaction: bin");
    t.is(hexTxs[i]!.hex, hexOf(x.hex), "template transaction: hex in protocol 1");
  }

  const [hash] = await chain.mine(1);
  const [blockBin, blockHex] = await both("get_block", { hash });
  const txsBin = blockBin.transactions as Array<{ txid: string; hex: unknown }>;
  const txsHex = blockHex.transactions as Array<{ txid: string; hex: unknown }>;
  t.is(txsBin.length, 2, "coinbase and the transaction");
  for (const [i, x] of txsBin.entries()) {
    t.true(x.hex instanceof Uint8Array, `block transaction ${i}: bin`);
    t.is(txsHex[i]!.hex, hexOf(x.hex), `block transaction ${i}: hex in protocol 1`);
  }
  const [confirmed, confirmedHex] = await both("get_transaction", { txid });
  t.true(confirmed.hex instanceof Uint8Array && confirmedHex.hex === hexOf(confirmed.hex), "a confirmed transaction too");
  // What the chain keeps is still the bytes.
  t.true((await chain.getTransaction(txid))!.hex instanceof Uint8Array);
});
