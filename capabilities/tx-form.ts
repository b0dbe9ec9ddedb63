// The form of a transaction in an answer. A transaction's description grows with its inputs,
// outputs and witness items, and consensus lets one transaction be wide: a coinbase paying
// 40,000 empty outputs (~360 KB, a valid block) is 280,000 MessagePack values described field
// by field, over the protocol's max_values (65,536). A page of a block holds one whole
// transaction at least (capabilities/pages.ts), so such a block could not be read at all, and
// get_transaction could not answer its coinbase. A transaction whose description would pass
// TX_VALUES is therefore answered in its reduced form: every field but `inputs` and `outputs`,
// which are empty, with `truncated: true`, `input_count` and `output_count`; its raw hex (one
// value, when the answer carries hex) is there to decode. docs/protocol.md, "Wide transactions".

/**
 * Values a transaction's description may take in an answer: max_values (65,536) less 4,096
 * for the answer around it (a block page's header and fields, the envelope). At 7 values an
 * output, a transaction of up to ~8,700 outputs is described whole, as before.
 */
export const TX_VALUES = 61_440;

/** What this module reads of a transaction: the arrays whose length makes it wide. */
interface TxShape {
  inputs: readonly { witness?: readonly unknown[] }[];
  outputs: readonly unknown[];
}

/**
 * Values of a transaction's description as the codec counts them (containers, map keys and
 * elements): 13 per input plus one per witness item, 7 per output, and at most 64 for its own
 * fields. One pass over its inputs, no string is read.
 */
function txValues(tx: TxShape): number {
  let values = 64 + 13 * tx.inputs.length + 7 * tx.outputs.length;
  for (const input of tx.inputs) values += input.witness?.length ?? 0;
  return values;
}

/** Reduced forms of frozen transactions (the chain's are shared): made once, kept while the transaction is. */
const reduced = new WeakMap<object, object>();

/** `tx` as an answer carries it: itself, or its reduced form when its description would pass TX_VALUES. */
function answerTx<T extends TxShape>(tx: T): T {
  if (txValues(tx) <= TX_VALUES) return tx;
  const kept = reduced.get(tx);
  if (kept) return kept as T;
  const form = { ...tx, inputs: [], outputs: [], truncated: true, input_count: tx.inputs.length, output_count: tx.outputs.length };
  if (!Object.isFrozen(tx)) return form;
  // Frozen as the chain's transaction is, so that the codec encodes it once (protocol/codec.ts).
  Object.freeze(form.inputs);
  Object.freeze(form.outputs);
  reduced.set(tx, Object.freeze(form));
  return form;
}

/** `txs` as an answer carries them: the same list when none is reduced. */
export function answerTxs<T extends TxShape>(txs: readonly T[]): readonly T[] {
  let out: T[] | undefined;
  for (let i = 0; i < txs.length; i++) {
    const tx = txs[i]!;
    const form = answerTx(tx);
    if (form !== tx) (out ??= txs.slice())[i] = form;
  }
  if (!out) return txs;
  return Object.isFrozen(txs) ? Object.freeze(out) : out;
}

/** A nullable answer of one transaction. */
export const answerTxOrNull = <T extends TxShape>(tx: T | null): T | null => (tx === null ? null : answerTx(tx));
