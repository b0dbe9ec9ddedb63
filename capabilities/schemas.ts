// Schemas shared by several families: parameters, and the named result types every method's
// `result` is built from. Both SDKs are generated from these (host/sdkgen.ts): a named schema
// becomes an interface in sdk/types/generated.ts and is referred to by its name in the Rust
// SDK (sdk/rust/src/types.rs, which a test checks field by field). Integers say their range
// (`u64`, `u32`, `i64` below) because the Rust SDK's field types follow from it.
import * as v from "valibot";

const NAMES = new WeakMap<object, string>();
const RUST_BY_HAND = new WeakMap<object, string>();

/**
 * Gives a schema a type name in the SDKs (`Block`, `ChainInfo`); returns the same schema. The
 * Rust SDK's struct is generated too unless `rust` says why it is written by hand in
 * sdk/rust/src/types.rs (picklists always are: enums with documented variants).
 */
export function named<S extends v.GenericSchema>(name: string, schema: S, options: { rust?: string } = {}): S {
  NAMES.set(schema, name);
  if (options.rust) RUST_BY_HAND.set(schema, options.rust);
  return schema;
}

/** The SDK type name of a schema given one with named(). */
export function nameOf(schema: object): string | undefined {
  return NAMES.get(schema);
}

/** Why a named type's Rust form is written by hand, when it is. */
export function rustByHand(schema: object): string | undefined {
  return RUST_BY_HAND.get(schema);
}

/**
 * A field that a lighter form of its type leaves out (include_hex: false): the Rust SDK's one
 * struct for both forms reads it as empty when absent.
 */
const omittedWhenLight = <S extends v.GenericSchema>(schema: S) => v.pipe(schema, v.metadata({ omittedWhenLight: true }));
/**
 * A field the generated Rust SDK leaves out (serde skips fields a struct does not name): the
 * shipped native modules pin the hashes of their signed binaries, built from sdk/rust, and any
 * change to its structs changes those binaries. Each such field says what Rust reads instead.
 */
const notInRust = <S extends v.GenericSchema>(schema: S) => v.pipe(schema, v.metadata({ notInRust: true }));

/** A field's or type's description in the SDKs (a doc comment there). */
export const doc = <S extends v.GenericSchema>(text: string, schema: S) => v.pipe(schema, v.description(text));

export const hash = named("Hex", v.pipe(v.string(), v.regex(/^[0-9a-fA-F]{64}$/, "expected a 64-character hex hash"), v.toLowerCase()));
export const height = v.pipe(v.number(), v.integer("expected an integer height"), v.minValue(0));
export const vout = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(0xffffffff));
export const none = v.object({});

// ---- result types ----

/** Lowercase hex: hashes and txids in display (RPC) byte order, raw serialisations. */
export const Hex = named("Hex", v.string());
/** An integer >= 0 (Rust u64), an integer (i64), a float (f64). */
export const u64 = v.pipe(v.number(), v.integer(), v.minValue(0));
const i64 = v.pipe(v.number(), v.integer());
export const f64 = v.number();
/** The answer of a method that succeeded and has nothing to say (Rust: `()`). */
export const done = v.literal(true);

/**
 * A raw serialisation (a block, a transaction): hex in the SDKs, MessagePack bin on the wire.
 * The host sends the bytes it holds and the SDKs make the hex (docs/protocol.md 6.3): an
 * 8 MB hex string of a 4 MB block costs the host's loop 50-300 ms to encode, its 4 MB of
 * binary a copy. A backend that holds only the hex (Bitcoin Core answers in JSON) sends that
 * string, which the SDKs take as it is. The SDKs find these fields from the catalogue
 * (binHexPaths, MethodDef.binHex).
 */
const RawHex = named("Hex", v.pipe(
  v.custom<Uint8Array | string>((x) => x instanceof Uint8Array || typeof x === "string", "expected the raw bytes (binary) or their hex"),
  v.metadata({ binOnWire: true }),
  // What the SDKs give (the output type, which the SDK types are checked against): hex.
  v.transform((x): string => (typeof x === "string" ? x : Buffer.from(x.buffer, x.byteOffset, x.byteLength).toString("hex"))),
));

const headerFields = {
  hash: Hex, height: u64, version: i64, prev_hash: Hex, merkle_root: Hex, time: u64, bits: u64, nonce: u64,
};
const LightBlockHeader = named("LightBlockHeader", v.object(headerFields), { rust: "the Rust SDK reads both forms into BlockHeader" });
export const BlockHeader = named("BlockHeader", v.object({ ...headerFields, hex: doc("Hex of the 80 serialised header bytes (empty in the Rust SDK when include_hex is false).", omittedWhenLight(Hex)) }));

const TxInput = named("TxInput", v.object({
  txid: Hex, vout: u64, script_sig: Hex, sequence: u64, witness: v.array(Hex),
  coinbase: doc("True for the single input of a coinbase transaction.", v.boolean()),
}));
const TxOutput = named("TxOutput", v.object({
  value: u64, script_pubkey: Hex,
  address: doc("The regtest address of the output script, when it has one.", v.nullable(v.string())),
}));
const txFields = {
  txid: Hex, wtxid: Hex, version: i64, locktime: u64,
  // Empty when `truncated` (documented there: a doc here would change the Rust SDK, see notInRust).
  inputs: v.array(TxInput), outputs: v.array(TxOutput),
  size: u64, vsize: u64, weight: u64,
  truncated: doc(
    "Present, and true, when the transaction is too wide to describe in one message (its description would pass 61,440 MessagePack values: 13 per input, one per witness item, 7 per output; about 8,700 outputs): `inputs` and `outputs` are then empty, `input_count` and `output_count` say how many it has, and its raw `hex` (get_transaction, or a block read with include_hex) holds them all (docs/protocol.md, \"Wide transactions\"). Absent otherwise. Not in the Rust SDK's struct: there, empty `inputs` say it (a transaction has one input at least).",
    notInRust(v.optional(v.boolean())),
  ),
  input_count: doc("With `truncated`: how many inputs the transaction has.", notInRust(v.optional(u64))),
  output_count: doc("With `truncated`: how many outputs the transaction has.", notInRust(v.optional(u64))),
};
const LightTransaction = named("LightTransaction", v.object(txFields), { rust: "the Rust SDK reads both forms into Transaction" });
export const Transaction = named("Transaction", v.object({ ...txFields, hex: doc("Full serialisation, witness included (binary on the wire, hex in the SDKs).", omittedWhenLight(RawHex)) }));

const blockFields = {
  hash: Hex, height: u64, size: u64, weight: u64,
  tx_count: doc("Transactions in the block: the length of `transactions` once every page is read.", u64),
  next_tx_offset: doc(
    "On the wire, one answer carries a page of `transactions` (docs/protocol.md, \"Paged answers\"): the `tx_offset` to ask for next, or null after the last page. The SDKs read every page, so a block they return has all its transactions and null here.",
    v.nullable(u64),
  ),
};
export const Block = named("Block", v.object({
  header: BlockHeader, ...blockFields, transactions: v.array(Transaction), hex: doc("Full block serialisation (binary on the wire, hex in the SDKs).", omittedWhenLight(RawHex)),
}));
export const LightBlock = doc(
  "A block without the raw hex of the block, its header and its transactions (include_hex: false).",
  named("LightBlock", v.object({ header: LightBlockHeader, ...blockFields, transactions: v.array(LightTransaction) }), { rust: "the Rust SDK reads both forms into Block" }),
);

export const Utxo = named("Utxo", v.object({
  txid: Hex, vout: u64, value: u64, script_pubkey: Hex, address: v.nullable(v.string()), height: u64, coinbase: v.boolean(),
}));
export const ChainInfo = named("ChainInfo", v.object({
  chain: v.picklist(["regtest", "testnet", "signet", "main"]),
  tip_hash: Hex, height: u64, bits: u64, difficulty: f64,
  chain_work: doc("Total work of the active chain, as a decimal string (it exceeds 2^53).", v.string()),
  median_time: u64, is_synced: v.boolean(),
}));

export const MempoolEntry = named("MempoolEntry", v.object({
  txid: Hex, fee: u64, vsize: u64, fee_rate: doc("Fee rate in sat/vB.", f64), time: u64,
}));
export const MempoolInfo = named("MempoolInfo", v.object({ transaction_count: u64, size_bytes: u64, total_fee_sats: u64 }));
export const MempoolTxids = named("MempoolTxids", v.object({
  txids: doc("A page of txids (the SDKs join every page).", v.array(Hex)),
  next_after: doc("Pass it as `after` for the next page; null after the last.", v.nullable(u64)),
  count: doc("Transactions in the mempool when the page was read.", u64),
  order: doc('What the pages follow: "accepted" (the embedded chain: order of acceptance, each transaction exactly once), "position" (Bitcoin Core: position in its list).', v.string()),
}));

export const NetworkStats = named("NetworkStats", v.object({
  peer_count: u64, hash_rate: doc("Estimated network hash rate (hashes per second).", f64), bytes_sent: u64, bytes_received: u64,
}));
export const PeerInfo = named("PeerInfo", v.object({
  addr: v.string(), transport_type: v.string(),
  services: doc("Service bits the peer advertises.", u64),
  version: doc("Its protocol version.", u64),
  connected_since: doc("Seconds since the epoch.", u64),
}));

const TemplateTransaction = named("TemplateTransaction", v.object({ txid: Hex, wtxid: Hex, hex: doc("Binary on the wire, hex in the SDKs.", RawHex), fee: u64, weight: u64 }));
const CoinbaseTx = named("CoinbaseTx", v.object({ txid: Hex, hex: doc("Binary on the wire, hex in the SDKs.", RawHex) }));
export const BlockTemplate = named("BlockTemplate", v.object({
  version: i64, previous_block_hash: Hex, height: u64, bits: u64,
  target: doc("The proof-of-work target for `bits`, as 64 hex characters.", Hex),
  cur_time: doc("Suggested header time; min_time is the earliest the chain accepts (median time past + 1).", u64),
  min_time: u64,
  transactions: doc("Mempool transactions for the block, in a valid order, with their fees.", v.array(TemplateTransaction)),
  coinbase_value: doc("Subsidy plus the fees of `transactions`: the most the coinbase may pay out.", u64),
  default_witness_commitment: doc("The BIP141 witness commitment output script (uses a 32-byte zero witness reserved value).", Hex),
  coinbase_tx: doc("With a coinbase script: a complete coinbase (BIP34 height, commitment) paying coinbase_value to it.", v.optional(CoinbaseTx)),
  template_id: doc("Names this template; its later pages are asked by `page` (next_page).", v.string()),
  tx_count: doc("Transactions in the whole template: the length of `transactions` once every page is read.", u64),
  next_page: doc(
    "On the wire, one answer carries a page of `transactions` (docs/protocol.md, \"Paged answers\"): the `page` to ask for next, or null after the last page. The SDKs read every page, so a template they return has all its transactions and null here.",
    v.nullable(v.string()),
  ),
}));
export const SubmitBlockResult = named("SubmitBlockResult", v.object({
  result: named("SubmitBlockStatus", v.picklist(["accepted", "duplicate", "rejected"])),
  reason: doc("Why a block was rejected (a bitcoind-style reason code and an explanation).", v.optional(v.string())),
  hash: doc("The block hash, when the block could be decoded.", v.optional(Hex)),
}));

const StorageQuota = named("StorageQuota", v.object({ max_bytes: u64, max_keys: u64, max_trees: u64, max_value_bytes: u64, max_key_bytes: u64 }), {
  rust: "also reads the camelCase keys older hosts sent",
});
export const StorageUsage = named("StorageUsage", v.object({ bytes: u64, keys: u64, trees: u64, quota: StorageQuota }), {
  rust: "quota is an Option there, for older hosts",
});
/** Raw bytes (MessagePack binary on the wire; Uint8Array in TypeScript). */
export const Bytes = named("Bytes", v.custom<Uint8Array>((x) => x instanceof Uint8Array, "expected bytes (a Uint8Array)"));
/** A stored value: any plain data. */
export const Plain = v.unknown();
export const Entry = named("Entry", v.object({ key: v.string(), value: Plain }), { rust: "generic in its value type" });
export const IterPage = named("IterPage", v.object({
  entries: v.array(Entry),
  cursor: doc("Pass it back (with the same other options) for the next page; null at the end of the range.", v.nullable(v.string())),
}), { rust: "generic in its value type" });

const FileType = named("FileType", v.picklist(["file", "directory", "symlink", "other"]));
export const DirEntry = named("DirEntry", v.object({ name: v.string(), type: FileType }));
export const FileMetadata = named("FileMetadata", v.object({
  path: doc('The canonical path, relative to the data directory ("" for the directory itself).', v.string()),
  size: u64, is_file: v.boolean(), is_directory: v.boolean(),
  modified: doc("Milliseconds since the epoch.", i64),
  created: doc("Milliseconds since the epoch; null when the filesystem does not record it.", v.nullable(i64)),
}));

export const ModuleInfo = named("ModuleInfo", v.object({
  name: v.string(), version: v.string(),
  runtime: doc('"native" or "isolate".', v.string()),
  state: doc('"running", "starting", "stopped", "crashed", "failed", "quarantined", ...', v.string()),
  description: v.nullable(v.string()),
  api: doc("Methods of its module API, when it registered one.", v.array(v.string())),
}));

const MetricKind = named("MetricKind", v.picklist(["counter", "gauge", "histogram"]));
/** A histogram as get_module_metrics and get_all_metrics answer it. */
const HistogramSummary = doc(
  "A histogram read back: observations counted in fixed buckets.",
  named("HistogramSummary", v.object({
    count: u64, sum: f64,
    buckets: doc("[upper bound, cumulative count] pairs, in increasing bound order.", v.array(v.tuple([f64, u64]))),
  })),
);
export const Metric = named("Metric", v.object({
  name: v.string(), kind: MetricKind,
  value: doc(
    "Counter and gauge: the value; histogram: a bounded summary {count, sum, buckets: [[upper bound, cumulative count], ...]} over fixed buckets.",
    v.union([f64, v.array(f64), HistogramSummary]),
  ),
  labels: v.record(v.string(), v.string()),
  timestamp: doc("Milliseconds since the epoch, set by the host.", u64),
}), { rust: "its value is the MetricValue enum, which numbers and slices convert into" });

export const HttpResponse = named("HttpResponse", v.object({
  status: v.pipe(v.number(), v.integer(), v.minValue(100), v.maxValue(999)),
  headers: doc('Names lowercased; a header received several times is joined with ", ".', v.record(v.string(), v.string())),
  body: doc('At most 8 MiB; a string with encoding "utf8".', v.union([Bytes, v.string()])),
  url: doc("The URL that answered: the one requested, normalised (redirects are not followed).", v.string()),
}), { rust: "its body is always bytes there (read_text and json decode it)" });

type SchemaNode = Record<string, unknown> & { type: string };

/**
 * Where a result schema has RawHex fields, as paths the SDKs follow to turn binary into hex:
 * field names, and "*" for every item of a list ("transactions.*.hex"). Both forms of a union
 * (a Block or a LightBlock) are followed; a path that is absent in an answer is skipped.
 */
export function binHexPaths(schema: v.GenericSchema): string[] {
  const out = new Set<string>();
  const seen = new Set<object>();
  const binOnWire = (x: SchemaNode): boolean => {
    const pipe = x["pipe"] as SchemaNode[] | undefined;
    if (!pipe) return false;
    return pipe.some((a, i) => (i === 0 && a !== x && a["kind"] === "schema" ? binOnWire(a) : a["type"] === "metadata" && (a["metadata"] as Record<string, unknown>)["binOnWire"] === true));
  };
  const walk = (x: SchemaNode, path: string[]): void => {
    if (binOnWire(x)) {
      out.add(path.join("."));
      return;
    }
    if (seen.has(x) && path.length > 8) return;
    seen.add(x);
    if (x["wrapped"]) walk(x["wrapped"] as SchemaNode, path);
    if (x.type === "array") walk(x["item"] as SchemaNode, [...path, "*"]);
    if (Array.isArray(x["options"])) for (const o of x["options"] as unknown[]) if (o && typeof o === "object" && "kind" in o) walk(o as unknown as SchemaNode, path);
    if (x["entries"]) for (const [k, e] of Object.entries(x["entries"] as Record<string, SchemaNode>)) walk(e, [...path, k]);
  };
  walk(schema as unknown as SchemaNode, []);
  return [...out];
}
