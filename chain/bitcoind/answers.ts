// The shapes of the Core answers the backend's reads hand on (./reads.ts), checked before any
// is used: a node, or anything in its place, may answer any JSON. Before, each answer was taken
// as the type it was asked for: a getblockcount of 10,000 digits reached modules as Infinity (null in JSON), a
// getrawmempool of objects as "txids", a getmempoolentry of vsize 0 as a fee rate of Infinity.
// A refused answer fails the read with NodeAnswerError (modules see backend_error) naming the
// RPC, where in its answer and what was wrong.
//
// Lists that grow with the node's state (the mempool's txids, its peers) are checked in slices
// of the loop (chain/slices.ts), and the peers counted first (MAX_NODE_PEERS).

import * as v from "valibot";
import { Slicer } from "../slices.ts";
import { MAX_NODE_HEIGHT, NodeAnswerError } from "./convert.ts";

/** Peers a node may list: Core's -maxconnections is 125 by default; past this a list is refused before it is read. */
export const MAX_NODE_PEERS = 4096;

const hash = v.pipe(v.string(), v.regex(/^[0-9a-f]{64}$/, "not a hash of 64 hex digits"));
const height = v.pipe(v.number(), v.safeInteger(), v.minValue(0), v.maxValue(MAX_NODE_HEIGHT));
const count = v.pipe(v.number(), v.safeInteger(), v.minValue(0));
const real = v.pipe(v.number(), v.finite(), v.minValue(0));
/** Bitcoin amounts in BTC: at most the 21 million there can be. */
const btc = v.pipe(v.number(), v.finite(), v.minValue(0), v.maxValue(21_000_000));
const text = (max: number) => v.pipe(v.string(), v.maxLength(max));
const hex = (maxChars: number) => v.pipe(v.string(), v.maxLength(maxChars), v.regex(/^([0-9a-f]{2})*$/, "not hex"));

export const ANSWERS = {
  getbestblockhash: hash,
  getblockcount: height,
  /** Of an output: its script is at most 10,000 bytes (MAX_SCRIPT_SIZE). */
  gettxout: v.nullable(v.object({ confirmations: count, value: btc, scriptPubKey: v.object({ hex: hex(20_000) }), coinbase: v.boolean() })),
  getblockchaininfo: v.object({
    chain: text(32),
    bestblockhash: hash,
    blocks: height,
    difficulty: real,
    chainwork: v.unknown(), // checked where it is converted (chainWorkFromHex)
    mediantime: count,
    initialblockdownload: v.boolean(),
    bits: v.optional(v.pipe(v.string(), v.regex(/^[0-9a-f]{8}$/, "not 8 hex digits"))),
  }),
  headerBits: v.object({ bits: v.pipe(v.string(), v.regex(/^[0-9a-f]{8}$/, "not 8 hex digits")) }),
  getmempoolentry: v.object({ vsize: v.pipe(count, v.minValue(1)), time: count, fees: v.object({ base: btc }) }),
  getmempoolinfo: v.object({ size: count, bytes: count, total_fee: btc }),
  // Its `errors` are not read: not checked either (a list of any length would be walked on the loop).
  estimatesmartfee: v.object({ feerate: v.optional(real) }),
  getnetworkinfo: v.object({ connections: count }),
  getnettotals: v.object({ totalbytessent: count, totalbytesrecv: count }),
  getnetworkhashps: real,
  peer: v.object({
    addr: text(256),
    transport_protocol_type: v.optional(text(32)),
    network: v.optional(text(32)),
    services: v.pipe(v.string(), v.regex(/^[0-9a-f]{1,16}$/, "not 1 to 16 hex digits")),
    version: count,
    conntime: count,
  }),
} as const;

/** `value` as the node's answer to `method`, checked against `schema`; NodeAnswerError naming the first problem. */
export function checked<S extends v.GenericSchema>(method: string, schema: S, value: unknown): v.InferOutput<S> {
  const r = v.safeParse(schema, value, { abortEarly: true });
  if (r.success) return r.output;
  const issue = r.issues[0];
  const at = issue.path?.map((p) => String(p.key)).join(".") ?? "";
  throw new NodeAnswerError(`the node answered ${method} with ${at ? `${at.slice(0, 64)}: ` : ""}${issue.message.slice(0, 200)}`);
}

/** getrawmempool's list of txids, checked in slices of the loop (300,000 in a full mempool). */
export async function checkedTxids(value: unknown): Promise<string[]> {
  if (!Array.isArray(value)) throw new NodeAnswerError("the node answered getrawmempool with something that is not a list");
  const slicer = new Slicer();
  const isHash = /^[0-9a-f]{64}$/;
  for (let i = 0; i < value.length; i++) {
    const txid = value[i];
    if (typeof txid !== "string" || !isHash.test(txid)) throw new NodeAnswerError(`the node answered getrawmempool with ${i}: not a txid of 64 hex digits`);
    const pause = slicer.tick();
    if (pause) await pause;
  }
  return value as string[];
}

/** getpeerinfo's list, counted (MAX_NODE_PEERS) before each peer is checked. */
export function checkedPeers(value: unknown): Array<v.InferOutput<typeof ANSWERS.peer>> {
  if (!Array.isArray(value)) throw new NodeAnswerError("the node answered getpeerinfo with something that is not a list");
  if (value.length > MAX_NODE_PEERS) throw new NodeAnswerError(`the node answered getpeerinfo with ${value.length} peers, more than ${MAX_NODE_PEERS} (MAX_NODE_PEERS, a fixed limit)`);
  return value.map((p, i) => checked(`getpeerinfo (peer ${i})`, ANSWERS.peer, p));
}
