// The most bytes one answer of each method can take on the wire, known before the method runs.
//
// The host's session reserves this much of the module's max_unread_bytes when it admits a
// request (host/session.ts), and releases it once the answer is sent: what waits for the module
// (sent and unread, plus what admitted requests may still add) then never passes the limit by
// more than one answer (see docs/security.md, "Unread answers"). An answer that turns out larger
// than its reservation is not sent (result_too_large): the table is then wrong, and the error
// says so rather than letting the bound slip.
//
// Three kinds of method:
// - small: the answer is a flag, a count, a hash, a short record (SMALL_ANSWER_BYTES);
// - bounded by a limit of their own: storage_get (a stored value is at most the storage
//   quota's max_value_bytes), storage_iter (storage_iter_max_bytes, or less: the caller's
//   frame), read_file (MAX_FILE_BYTES; a utf8 answer is the same bytes, invalid UTF-8 being
//   refused), list_directory (MAX_LIST_ENTRIES names of at most 255 bytes, each byte at most
//   3 on the wire once decoded), the mempool's txids (a page of MEMPOOL_PAGE), http_request
//   (its own max_bytes, or MAX_RESPONSE_BODY_BYTES; three times as utf8): with the default
//   limits 32 MiB of max_unread_bytes then holds 3 reservations of read_file at once, 4 of
//   list_directory, 55 of the txid pages, 3 HTTP requests of bytes (110 with max_bytes = 64 KiB),
//   not 2 frames;
// - a block's page by hash (get_block) when the chain knows the block's size
//   without reading it (blockPageBound): what its page can take from that size, its largest
//   transaction and the page limits, never more than a frame;
// - up to a frame: answers that carry a block the chain does not hold in memory, a transaction,
//   another module's answer or an operator-sized list. They are bounded only by
//   max_frame_bytes, which the channel enforces on every frame (protocol/channel.ts), so their
//   reservation is the frame.

import { DEFAULT_QUOTA } from "../storage/store.ts";
import { MAX_FILE_BYTES, MAX_LIST_ENTRIES } from "./fs-path.ts";
import { MEMPOOL_PAGE } from "./mempool.ts";
import { MAX_RESPONSE_BODY_BYTES, MAX_RESPONSE_HEADER_BYTES, MAX_URL_CHARS } from "./http.ts";
import { PAGE_BYTES, PAGE_VALUES } from "./pages.ts";

/** The answer of a method not listed below: a flag, a count, a hash, a short record, an error. */
export const SMALL_ANSWER_BYTES = 64 * 1024;

/**
 * Methods whose answer may be as large as a frame (max_frame_bytes): blocks and transactions
 * (a page item can be one whole transaction of up to a block's size, and the first page of a
 * block carries its raw bytes), other modules' answers, operator-sized lists
 * (config, metrics, peers, modules).
 */
const FRAME_SIZED = new Set([
  "get_block", "get_block_by_height", "get_transaction",
  "get_mempool_transaction",
  "get_block_template",
  "get_network_peers",
  "call_module", "discover_modules", "get_module_info",
  "get_lightning_node_url", "get_lightning_info", "get_payment_state",
  "get_module_metrics", "get_all_metrics",
  "get_config",
]);

/**
 * Answers bounded by a fixed limit of their method, not by the frame: the most bytes of
 * strings and binary they carry, plus SMALL_ANSWER_BYTES for the rest (headers, field names).
 */
const LIMITED: Readonly<Record<string, number>> = {
  read_file: MAX_FILE_BYTES,
  // An entry: {name, type}; a name of at most 255 bytes on disk (NAME_MAX), each byte at most 3
  // once decoded (an invalid byte becomes U+FFFD), its headers, the keys and the longest type.
  list_directory: MAX_LIST_ENTRIES * (3 * 255 + 32),
  // Txids of 64 hex characters, with their string headers.
  get_mempool_txids: MEMPOOL_PAGE * 66,
  get_mempool_transactions: MEMPOOL_PAGE * 66,
};

/**
 * http_request's answer: {status, headers, body, url}. The body is at most the request's
 * max_bytes (default and at most MAX_RESPONSE_BODY_BYTES; ./http.ts refuses a longer one), three
 * times that as utf8 (each undecodable byte becomes U+FFFD, 3 bytes); the headers are at most
 * MAX_RESPONSE_HEADER_BYTES of head read as latin1 (at most 2 bytes a character in UTF-8, a
 * repeated name joined with ", " shorter than its own line), 3 times for the string headers'
 * margin; the url is the request's, at most MAX_URL_CHARS characters normalised (percent-escaped:
 * at most 9 bytes a character; punycode fewer).
 */
function httpBound(params: Readonly<Record<string, unknown>>): number {
  const m = params["max_bytes"];
  const body = typeof m === "number" && Number.isInteger(m) && m >= 0 && m <= MAX_RESPONSE_BODY_BYTES ? m : MAX_RESPONSE_BODY_BYTES;
  return (params["encoding"] === "utf8" ? 3 : 1) * body + 3 * MAX_RESPONSE_HEADER_BYTES + 9 * MAX_URL_CHARS + SMALL_ANSWER_BYTES;
}

/** What one stored entry adds on the wire beyond its key's and value's bytes (map, headers). */
const ITER_ENTRY_WIRE_OVERHEAD = 32;
/** storage_iter's default `limit` (capabilities/storage.ts). */
const ITER_DEFAULT_LIMIT = 1000;

export interface AnswerBoundLimits {
  /** The largest frame the channel sends (max_frame_bytes). */
  frameBytes: number;
  /** The module's storage_iter_max_bytes. */
  storageIterMaxBytes: number;
  /** A block's serialised size and its largest transaction's, when the chain knows them without I/O (ChainBackend.knownBlockSize). */
  blockSize?: (ref: { hash: string }) => KnownBlockSize | undefined;
}

interface KnownBlockSize {
  /** The serialised block, bytes. */
  size: number;
  /** Its largest transaction, serialised bytes. */
  largestTx: number;
}

/**
 * What a block's transactions weigh on the wire, described (capabilities/schemas.ts Block), per
 * serialised byte, from above: the smallest parts blow up most. An output of 9 bytes (value,
 * empty script) becomes a map of value, script_pubkey, address and their keys (~40 bytes); an
 * input of 41 bytes its txid as 64 characters, vout, script_sig, sequence, witness and keys
 * (~130); a transaction of 60 bytes its txid, wtxid, sizes and keys (~250). With include_hex
 * every part's hex comes on top (2 bytes a byte). test/block-answer-bound.test.ts encodes pages
 * of blocks made of only such parts against this.
 */
const DESCRIBED_PER_BYTE = 8;
/** Header bytes of one MessagePack value (a number, a string's or map's header), at most. */
const VALUE_HEADER_BYTES = 9;

/**
 * The most bytes a page of a block's answer can take when the block's size is known: the
 * whole block described, or a page's limits (PAGE_BYTES of strings and PAGE_VALUES values, plus
 * the one item that may pass them: the largest transaction), whichever is less; the first page
 * with include_hex carries the block's raw hex besides.
 */
function blockPageBound(known: KnownBlockSize, params: Readonly<Record<string, unknown>>): number {
  const hex = params["include_hex"] !== false;
  const first = params["tx_offset"] === undefined || params["tx_offset"] === 0;
  const perByte = DESCRIBED_PER_BYTE + (hex ? 2 : 0) + VALUE_HEADER_BYTES;
  const whole = perByte * known.size;
  const page = PAGE_BYTES + VALUE_HEADER_BYTES * PAGE_VALUES + perByte * known.largestTx;
  return Math.min(whole, page) + (hex && first ? 2 * known.size : 0) + SMALL_ANSWER_BYTES;
}

/**
 * The most bytes the body of an answer of `method` called with `params` can take (its frame's
 * 4-byte header comes on top: two frame-sized reservations then fit the default limit).
 */
export function answerBound(method: string, params: Readonly<Record<string, unknown>>, l: AnswerBoundLimits): number {
  // Whatever the method and params (a module's), the reservation is a number: a NaN here once
  // made the session's reservations and the host's total of held bytes NaN for good, which no
  // comparison refuses (a request named "constructor" read Object.prototype's through LIMITED).
  const bound = boundOf(method, params, l);
  return Number.isFinite(bound) && bound >= 0 ? bound : l.frameBytes;
}

function boundOf(method: string, params: Readonly<Record<string, unknown>>, l: AnswerBoundLimits): number {
  // By hash only: a hash names one block for good, while the block at a height can be
  // replaced by a larger one (a reorganisation) between admission and answer.
  if (l.blockSize && method === "get_block" && typeof params["hash"] === "string") {
    const known = l.blockSize({ hash: params["hash"] });
    if (known) return Math.min(l.frameBytes, blockPageBound(known, params));
  }
  if (FRAME_SIZED.has(method)) return l.frameBytes;
  const limited = Object.hasOwn(LIMITED, method) ? LIMITED[method] : undefined;
  if (limited !== undefined) return Math.min(l.frameBytes, limited + SMALL_ANSWER_BYTES);
  if (method === "http_request") return Math.min(l.frameBytes, httpBound(params));
  if (method === "storage_get") return Math.min(l.frameBytes, DEFAULT_QUOTA.maxValueBytes + SMALL_ANSWER_BYTES);
  if (method === "storage_iter") {
    // The store reads at most min(storage_iter_max_bytes, 0.9 × frame) of keys and values
    // (capabilities/storage.ts), each entry counted with 24 bytes of overhead; on the wire an
    // entry adds at most ITER_ENTRY_WIRE_OVERHEAD, and a value re-encoded may differ a little.
    const limit = typeof params["limit"] === "number" && params["limit"] > 0 ? Math.min(params["limit"], 10_000) : ITER_DEFAULT_LIMIT;
    const read = Math.min(l.storageIterMaxBytes, Math.floor(l.frameBytes * 0.9));
    return Math.min(l.frameBytes, Math.ceil(read * 1.1) + limit * ITER_ENTRY_WIRE_OVERHEAD + SMALL_ANSWER_BYTES);
  }
  return SMALL_ANSWER_BYTES;
}

/**
 * Methods whose answer is another module's (a module call, a provider's answer): their
 * reservation counts against the module's other requests, but they never wait for room
 * themselves. A call chain (A calls B, whose handler calls A, ...) would otherwise deadlock:
 * A's nested call waiting for the reservation of the very call it is part of.
 */
export const RELAYED_ANSWERS: ReadonlySet<string> = new Set(["call_module", "get_lightning_node_url", "get_lightning_info", "get_payment_state"]);

/** The methods reserved a whole frame (tests check that each exists in the catalogue). */
export const FRAME_SIZED_METHODS: ReadonlySet<string> = FRAME_SIZED;
