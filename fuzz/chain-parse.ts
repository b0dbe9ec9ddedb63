// Differential fuzzing of the chain's reader of submitted transactions and blocks
// (chain/parse.ts: what submit_transaction, submit_block, queue_received_block and the
// JSON-RPC submit methods hand the chain) against @scure/btc-signer's RawTx +
// describeTransaction, the decoder the chain uses for what it builds itself. On every input:
//  - parseTransaction throws nothing but ParseError;
//  - it accepts exactly what RawTx accepts, and then reads the same transaction;
//  - parseBlock over a header and the input as its transactions throws nothing but ParseError.
// Seeds: transactions of several shapes (legacy, segwit with empty and many witness items, a
// coinbase, many outputs), encoded by RawTx.

import { isDeepStrictEqual } from "node:util";
import { RawTx } from "@scure/btc-signer";
import { ParseError, parseBlock, parseTransaction } from "../chain/parse.ts";
import { decodeTransaction, describeTransaction, type RawTransaction } from "../chain/serialise.ts";
import type { FuzzTarget } from "./driver.ts";

const id = (b: number) => new Uint8Array(32).fill(b);
const script = (hex: string) => Uint8Array.from(Buffer.from(hex, "hex"));

const SHAPES: RawTransaction[] = [
  {
    version: 1, segwitFlag: false, lockTime: 500, witnesses: undefined,
    inputs: [{ txid: id(1), index: 0, finalScriptSig: Uint8Array.of(0x51, 0x52), sequence: 7 }, { txid: id(2), index: 300, finalScriptSig: new Uint8Array(0), sequence: 0xffffffff }],
    outputs: [{ amount: 5000n, script: script(`0014${"ab".repeat(20)}`) }, { amount: 0n, script: Uint8Array.of(0x6a, 1, 2) }],
  },
  {
    version: 2, segwitFlag: true, lockTime: 0,
    inputs: [{ txid: id(3), index: 1, finalScriptSig: new Uint8Array(0), sequence: 1 }, { txid: id(4), index: 2, finalScriptSig: new Uint8Array(0), sequence: 2 }],
    outputs: [{ amount: 1000n, script: script(`5120${"cd".repeat(32)}`) }],
    witnesses: [[], Array.from({ length: 5 }, (_, i) => new Uint8Array(i).fill(i))],
  },
  {
    version: 2, segwitFlag: true, lockTime: 0,
    inputs: [{ txid: new Uint8Array(32), index: 0xffffffff, finalScriptSig: Uint8Array.of(1, 0x65, 0), sequence: 0xffffffff }],
    outputs: [{ amount: 5_000_000_000n, script: Uint8Array.of(0x51) }],
    witnesses: [[new Uint8Array(32)]],
  },
  {
    version: -5, segwitFlag: false, lockTime: 0xffffffff, witnesses: undefined,
    inputs: [{ txid: id(9), index: 0, finalScriptSig: new Uint8Array(253).fill(1), sequence: 0 }],
    outputs: Array.from({ length: 20 }, (_, i) => ({ amount: BigInt(i), script: Uint8Array.of(0x51) })),
  },
];

/** What RawTx + describeTransaction make of `bytes`, or undefined when RawTx refuses them. */
function reference(bytes: Uint8Array): unknown {
  try {
    return describeTransaction(decodeTransaction(bytes));
  } catch {
    return undefined;
  }
}

export async function chainParseTarget(): Promise<FuzzTarget> {
  const header = new Uint8Array(80);
  return {
    name: "chain-parse",
    seeds: SHAPES.map((s) => RawTx.encode(s)),
    async run(input) {
      const expected = reference(input);
      let got: unknown;
      try {
        got = await parseTransaction(input);
      } catch (err) {
        if (!(err instanceof ParseError)) throw new Error(`parseTransaction threw ${(err as Error)?.name ?? typeof err}: ${(err as Error)?.message ?? String(err)}`);
        if (expected !== undefined) throw new Error(`parseTransaction refused what RawTx reads: ${err.message}`);
      }
      if (got !== undefined) {
        if (expected === undefined) throw new Error("parseTransaction read what RawTx refuses");
        if (!isDeepStrictEqual(got, expected)) throw new Error("parseTransaction and RawTx read different transactions");
      }
      // The same bytes as the transactions of a block (a count of 1, then of 2 with the input twice).
      for (const block of [Buffer.concat([header, Uint8Array.of(1), input]), Buffer.concat([header, Uint8Array.of(2), input, input])]) {
        try {
          await parseBlock(block, { maxWeight: 4_000_000 });
        } catch (err) {
          if (!(err instanceof ParseError)) throw new Error(`parseBlock threw ${(err as Error)?.name ?? typeof err}: ${(err as Error)?.message ?? String(err)}`);
        }
      }
    },
  };
}
