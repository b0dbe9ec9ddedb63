// One file: Core's HTTP face, its bounds, and the methods whose answers those bounds count piece
// by piece as they are made (FACADE_ANSWER_BYTES_HELD), read together.
//
// A Bitcoin Core-compatible face for any chain backend: the RPC methods and ZMQ topics that
// Core documents, served over the embedded chain.
//
// It stands in for bitcoind where bitcoind cannot run (these machines cannot install it):
// the Core backend's tests run against it, and `[chain] core_rpc_bind` serves the embedded
// chain to ordinary Bitcoin tools (bitcoin-cli -regtest -rpcport=...). It is written from
// Core's RPC help and doc/zmq.md, not from Core's code, and it is not a node: no wallet, no
// peers, no validation beyond the backend's own.
//
// RPC: HTTP POST, JSON-RPC 1.0 or 2.0, single or batch; HTTP basic authentication against
// users given as rpcauth lines (checked like Core) or a cookie; an optional rpcwhitelist per
// user answered with HTTP 403 like Core; errors with Core's codes (HTTP 500, 404 for an
// unknown method). ZMQ: topics hashblock, rawblock, hashtx, rawtx and sequence, each message
// [topic, body, 4-byte little-endian per-topic counter].

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Publisher } from "zeromq";
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";
import type { Block, BlockHeader, ChainBackend, ChainEventName, ChainEvents, Hex, PeerInfo, Transaction } from "../backend.ts";
import { bytesOfRaw, hexOfRaw } from "../backend.ts";
import { difficultyFromBits, workFromBits } from "../serialise.ts";
import { JsonLimitError, parseJson } from "../json-off.ts";
import { Slicer } from "../slices.ts";
import { AnswerBytes, type AnswerShare, ByteRoom, capConnections, TIMEOUT_CHECK_EVERY_MS } from "../http-caps.ts";
import { bitsToHex, coreChainName, satsToBtc, scriptAsm, scriptType } from "./convert.ts";
import { checkRpcauth } from "./rpcauth.ts";
import { RPC_CODES } from "./rpc.ts";

export interface CoreFacadeOptions {
  backend: ChainBackend;
  /** Host and port for RPC; port 0 picks one. Default 127.0.0.1:0. */
  rpcHost?: string;
  rpcPort?: number;
  /** `USER:SALT$HMAC` lines, as in bitcoin.conf's rpcauth=. */
  rpcauth?: string[];
  /** A cookie `__cookie__:SECRET` accepted too. */
  cookie?: string;
  /** user -> allowed methods (rpcwhitelist=); users not listed may call everything. */
  whitelist?: Record<string, string[]>;
  /** tcp://127.0.0.1:PORT to publish ZMQ notifications on; none: no ZMQ. */
  zmqEndpoint?: string;
  /** Mining for generatetoaddress / generateblock-style tests, when the backend can mine. */
  mine?: (count: number) => Promise<Hex[]>;
  /** The node's peers as getpeerinfo shows them (default: the backend's, none for the embedded chain); tests set some. */
  peers?: () => PeerInfo[];
  /** Largest request body; default 32 MiB (a block to submit is twice its size in hex). */
  maxBodyBytes?: number;
  /** Most calls in one JSON-RPC batch; default DEFAULT_MAX_BATCH. */
  maxBatch?: number;
}

/**
 * Calls in one batch. Core sets no number (only its 32 MB body limit), but 32 MB holds ~800,000
 * calls of getblockcount, whose answers (~130 MB of heap) took 1.7 s of one stretch of the loop;
 * tools that batch (indexers asking for transactions) send hundreds to a few thousand.
 */
const DEFAULT_MAX_BATCH = 10_000;

/**
 * Separators and openers (`,` `[` `{`) a request body may hold, counted before it is parsed:
 * JSON.parse's time is its token count, not its size (8 MB of a block's hex parse in a few ms,
 * 27 MB of tiny calls took ~0.5 s), so a body of more is refused unparsed: this many per call
 * of the largest batch (640,000 at the default).
 */
const TOKENS_PER_CALL = 64;

/**
 * Characters of an error answer's message; past it the message is cut, saying so. Error answers
 * are counted in FACADE_ANSWER_BYTES_HELD but never refused, on the ground that each is small:
 * an invalid hash was quoted whole (as Core does), and a 20 MB one made an answer of 20 MB
 * (118-128 ms of one turn to stringify).
 */
const FACADE_ERROR_CHARS = 1024;

/** Nesting of arrays and objects in a request body: Core's own limit (MAX_JSON_DEPTH in univalue). */
const FACADE_MAX_JSON_DEPTH = 512;

/** How many of the bytes `,` `[` `{` `body` holds, counting no further than past `limit`. */
function countStructural(body: Buffer, limit: number): number {
  let n = 0;
  for (const byte of [0x2c, 0x5b, 0x7b]) {
    for (let i = body.indexOf(byte); i !== -1; i = body.indexOf(byte, i + 1)) {
      if (++n > limit) return n;
    }
  }
  return n;
}

/**
 * A raw serialisation answered as Core's hex string (getblock at verbosity 0, getrawtransaction
 * not verbose): written to the HTTP response in slices (RAW_SLICE_BYTES of bytes at a time, a
 * turn of the loop between two), never as one hex string and one JSON.stringify of it: a 4 MB
 * block held the host's loop for tens of milliseconds that way.
 */
class RawHexAnswer {
  constructor(readonly raw: Uint8Array | Hex) {}
}

/** Bytes of a raw serialisation hex-encoded and written between two turns of the loop. */
const RAW_SLICE_BYTES = 256 * 1024;

/**
 * A result whose JSON grows with the chain or the mempool (a block's transactions, the
 * mempool's txids or entries, a template's transactions), made in slices: each item is
 * stringified on its own (chain/slices.ts Slicer between them), and the pieces are written in
 * ~RAW_SLICE_BYTES writes a turn of the loop apart. Before, the whole answer was one object
 * and one JSON.stringify: getblock at verbosity 2 of a block of 16,000 transactions, or
 * getrawmempool of a large mempool, held the host's loop for its whole length.
 */
class JsonText {
  constructor(readonly pieces: string[]) {}
}

/**
 * Bytes of JSON (counted as characters; hex as two a byte) that the answers of requests in
 * progress may hold, all connections together, from the piece that makes them until their
 * response is written or its client gone. Each answer is counted as it is made (a JsonText piece
 * by piece, each piece PIECE_OVERHEAD_BYTES more for the string that holds it, a raw
 * serialisation at twice its size, any other result as its JSON), and an answer
 * that would pass this is refused with Core's RPC_OUT_OF_MEMORY (-7) naming it, the pieces made
 * for it dropped. One answer is always made whole when nothing else is held (a block's largest
 * description). Before, a batch of 150 calls of getblock at verbosity 2 of a block of 3,000
 * transactions held 263 MB of answers and +680 MB of the host's memory; the batch limit allows
 * 10,000 such calls, and 256 connections may each have 16 requests in progress.
 */
export const FACADE_ANSWER_BYTES_HELD = 64 * 1024 * 1024;

/**
 * Bytes of request bodies in progress (announced by Content-Length, or the body limit for a
 * chunked one until it is read; not yet answered), all connections together, bodies of at most
 * SMALL_BODY_BYTES not counted. A request that would pass it waits, its body unread, until
 * earlier requests are answered (or its 60 s request timeout). A body is held, then parsed (up
 * to two values per token counted), until its answer is written; each may be 32 MiB and 256
 * connections may each pipeline 16, so nothing but the client's upload bounded them together.
 * Two bodies of the largest size.
 */
export const FACADE_BODY_BYTES_IN_PROGRESS = 64 * 1024 * 1024;
const SMALL_BODY_BYTES = 4096;

/** What one piece of a JsonText costs beyond its characters: a string's header and its place in the array. */
const PIECE_OVERHEAD_BYTES = 24;

/** Take `n` bytes of an answer being made, or throw AnswersHeld (FACADE_ANSWER_BYTES_HELD, or its client gone). */
function take(account: AnswerShare, n: number): void {
  if (!account.take(n)) throw new AnswersHeld();
}

/** What an answer's envelope adds to its result and its id: `{"result":…,"error":null,"id":…}` and a separator. */
const ENVELOPE_BYTES = 32;

/** `{...head, [key]: items.map(each)}` as JsonText, each item stringified in its own slice. */
async function jsonWithList<T>(account: AnswerShare, head: Record<string, unknown>, key: string, items: readonly T[], each: (item: T) => unknown): Promise<JsonText> {
  const open = JSON.stringify(head);
  const pieces = [`${open.length > 2 ? `${open.slice(0, -1)},` : "{"}${JSON.stringify(key)}:[`];
  take(account, pieces[0]!.length + 2);
  await listPieces(account, items, each, pieces);
  pieces.push("]}");
  return new JsonText(pieces);
}

/** `items.map(each)` as a JSON array, each item stringified in its own slice. */
async function jsonList<T>(account: AnswerShare, items: readonly T[], each: (item: T) => unknown): Promise<JsonText> {
  const pieces = ["["];
  take(account, 2);
  await listPieces(account, items, each, pieces);
  pieces.push("]");
  return new JsonText(pieces);
}

async function listPieces<T>(account: AnswerShare, items: readonly T[], each: (item: T) => unknown, pieces: string[]): Promise<void> {
  const slicer = new Slicer();
  for (let i = 0; i < items.length; i++) {
    const piece = (i > 0 ? "," : "") + JSON.stringify(each(items[i]!));
    take(account, piece.length + PIECE_OVERHEAD_BYTES);
    pieces.push(piece);
    const pause = slicer.tick();
    if (pause) await pause;
  }
}

/**
 * Characters of JSON a call's `id` may take, counted before anything is stringified (a string
 * counts its length and quotes: its escapes may make it up to six times longer). Core echoes any
 * id; here a 16 MiB string id was echoed through one JSON.stringify on the host's loop (a turn of
 * 1.2 s, 1.8 s with control characters to escape, load 10-11). A call whose id is longer is
 * answered with an error naming this, and id null.
 */
export const MAX_ID_JSON_CHARS = 1024;

/**
 * Longest method name looked up (Core's longest is under 32 characters). A longer one is "Method
 * not found" without a lookup: hashing a 16 MiB name to look it up is work in proportion to what
 * the caller sent, on the host's loop.
 */
const MAX_METHOD_CHARS = 64;

/** Whether `value`'s JSON is more than `limit` characters, walking no further than past it. */
function jsonCharsOver(value: unknown, limit: number): boolean {
  let n = 0;
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === "string") n += v.length + 2;
    else if (v === null || typeof v !== "object") n += String(v).length;
    else if (Array.isArray(v)) {
      n += 2 + v.length;
      for (let i = 0; i < v.length && n <= limit; i++) stack.push(v[i]);
    } else {
      n += 2;
      for (const key in v) {
        n += key.length + 4;
        if (n > limit) return true;
        stack.push((v as Record<string, unknown>)[key]);
      }
    }
    if (n > limit) return true;
  }
  return false;
}

class RpcFailure extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

type Handler = (params: unknown[], account: AnswerShare) => Promise<unknown>;

/** An answer refused because the answers held would pass FACADE_ANSWER_BYTES_HELD. */
class AnswersHeld extends Error {}
type Answer = { result: unknown; error: { code: number; message: string } | null; id: unknown };

/**
 * Connections to the facade at once. A new one past it closes the oldest with no request in
 * progress, or is answered 503 naming this limit when all are busy. Before, Node dropped every
 * new connection without a word while a client held 256 idle ones, each for 30-40 s (the 10 s
 * head timeout was checked every 30 s): bitcoin-cli and the node's other tools were locked out.
 */
export const MAX_FACADE_CONNECTIONS = 256;

/**
 * Requests one connection may have in progress at once (HTTP/1.1 pipelining), as the RPC
 * server's MAX_PIPELINED_REQUESTS: Node's server starts every request of a read at once, and
 * one whose answer waits (a body still arriving, a read of the chain) is held until it is
 * written. Past it a request is answered 429 naming this limit, and the connection closed
 * (chain/http-caps.ts). Answers given at once (a 401, getblockcount) never count up to it.
 */
const MAX_FACADE_PIPELINED = 16;

export class CoreFacade {
  private server: Server | null = null;
  private publisher: Publisher | null = null;
  private readonly counters = new Map<string, number>();
  private mempoolSequence = 0n;
  private publishChain: Promise<void> = Promise.resolve();
  private unsubscribe: (() => void) | null = null;
  private readonly methods: Record<string, Handler>;
  /** chain work and median time past per block hash (computed once). */
  private readonly stats = new Map<Hex, { work: bigint; times: number[] }>();
  rpcUrl = "";
  /** Requests whose client went away before its body's end. */
  clientsGone = 0;
  /** Request bodies in progress (FACADE_BODY_BYTES_IN_PROGRESS). */
  readonly bodies = new ByteRoom(FACADE_BODY_BYTES_IN_PROGRESS);
  /** The answers of requests in progress (FACADE_ANSWER_BYTES_HELD). */
  private readonly answers = new AnswerBytes(FACADE_ANSWER_BYTES_HELD);
  /** Bytes the answers of requests in progress hold (FACADE_ANSWER_BYTES_HELD). */
  get answerBytesHeld(): number {
    return this.answers.held;
  }
  /** Answers refused for FACADE_ANSWER_BYTES_HELD. */
  get answersRefused(): number {
    return this.answers.refused;
  }

  constructor(private readonly opts: CoreFacadeOptions) {
    this.methods = this.buildMethods();
  }

  async start(): Promise<void> {
    if (this.opts.zmqEndpoint) {
      this.publisher = new Publisher({ linger: 0 });
      await this.publisher.bind(this.opts.zmqEndpoint);
      this.unsubscribe = this.opts.backend.subscribe((name, payload) => this.onEvent(name, payload));
    }
    const server = createServer({
      headersTimeout: 10_000,
      requestTimeout: 60_000,
      keepAliveTimeout: 5_000,
      connectionsCheckingInterval: TIMEOUT_CHECK_EVERY_MS,
    }, (req, res) => {
      if (cap.request(req, res)) void this.serve(req, res);
    });
    const cap = capConnections(server, MAX_FACADE_CONNECTIONS, (open) => `connection refused: the Core facade has ${open} connections open, all with a request in progress, its limit (MAX_FACADE_CONNECTIONS, a fixed limit); retry in a moment`, { max: MAX_FACADE_PIPELINED, name: "MAX_FACADE_PIPELINED" });
    // A client that half-closes once its request is sent (shutdown(SHUT_WR): `nc -N`, some
    // scripts) still gets its answer: by default Node ends such a connection at once, and an
    // answer that takes a read from the on-disk chain (the thread pool) was lost, the connection
    // closed with nothing (a fuzz run of 300 bodies: 4 getblock calls unanswered). The
    // connection still ends once its answers are written, and the timeouts above still hold.
    (server as Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.opts.rpcPort ?? 0, this.opts.rpcHost ?? "127.0.0.1", () => resolve());
    });
    this.server = server;
    const addr = server.address() as AddressInfo;
    this.rpcUrl = `http://${addr.address}:${addr.port}/`;
  }

  /** The endpoint the ZMQ publisher is bound to (with its real port). */
  get zmqEndpoint(): string | undefined {
    return this.publisher?.lastEndpoint ?? undefined;
  }

  async stop(): Promise<void> {
    this.unsubscribe?.();
    await this.publishChain;
    this.publisher?.close();
    this.publisher = null;
    const server = this.server;
    this.server = null;
    if (server) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  }

  // ---- HTTP ----

  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const reply = (status: number, body?: unknown) => {
      const text = body === undefined ? "" : JSON.stringify(body) + "\n";
      res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
      res.end(text);
    };
    // Answers whose result is a raw serialisation are written in pieces (see RawHexAnswer).
    const replyAnswers = (status: number, answers: Answer[], batch: boolean) => {
      // A batch's answers are always stringified one at a time in slices: 10,000 answers each
      // echoing an id of 1,000 escaped characters are 31 MB of JSON, one stretch of seconds.
      if (!batch && !answers.some((a) => a.result instanceof RawHexAnswer || a.result instanceof JsonText)) return reply(status, answers[0]);
      return this.writeSliced(res, status, answers, batch);
    };
    if (req.method !== "POST") return reply(405);
    const user = this.authenticate(req.headers.authorization);
    if (user === null) {
      res.writeHead(401, { "www-authenticate": 'Basic realm="jsonrpc"' });
      return void res.end();
    }
    const limit = this.opts.maxBodyBytes ?? 32 * 1024 * 1024;
    const maxTokens = TOKENS_PER_CALL * (this.opts.maxBatch ?? DEFAULT_MAX_BATCH);
    // Bodies of requests in progress, all connections together, before anything is read.
    const declared = Number(req.headers["content-length"]);
    let held = Number.isFinite(declared) ? (declared <= SMALL_BODY_BYTES ? 0 : Math.min(declared, limit)) : limit;
    if (held > 0) {
      if (!(await this.bodies.take(held, res))) return;
      res.once("close", () => this.bodies.release(held));
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let tokens = 0;
    try {
      for await (const chunk of req as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > limit) return reply(413);
        // Counted as it arrives: a body of too many values is refused before it is all held.
        tokens += countStructural(chunk, maxTokens - tokens);
        if (tokens > maxTokens) {
          return reply(413, { result: null, error: { code: RPC_CODES.INVALID_REQUEST, message: `the request holds more than ${maxTokens} JSON values (',' '[' '{'), the most one request may hold; send smaller batches` }, id: null });
        }
        chunks.push(chunk);
      }
    } catch {
      // The client went away before its body's end ("aborted"): nothing to answer. Before, the
      // rejection escaped serve(): an unhandled rejection each, and 10 within a minute made the
      // host's last resort stop the host (host/last-resort.ts).
      this.clientsGone++;
      return;
    }
    if (size < held) {
      this.bodies.release(held - size);
      held = size;
    }
    // Parsed off the loop when large (chain/json-off.ts): 32 MB of one string cost 0.64-0.99 s
    // of one turn at load 14-17 parsed here. Its values are at most two per token counted.
    let request: unknown;
    try {
      request = await parseJson(chunks, { lane: "core-face", maxValues: 2 * maxTokens + 1, valuesName: "TOKENS_PER_CALL × the batch limit", maxDepth: FACADE_MAX_JSON_DEPTH, depthName: "FACADE_MAX_JSON_DEPTH" });
    } catch (err) {
      if (err instanceof JsonLimitError) return reply(413, { result: null, error: { code: RPC_CODES.INVALID_REQUEST, message: `${err.message}; send smaller requests` }, id: null });
      return reply(500, { result: null, error: { code: -32700, message: "Parse error" }, id: null });
    }
    const allowed = this.opts.whitelist && Object.hasOwn(this.opts.whitelist, user) ? new Set(this.opts.whitelist[user]) : null;
    const account = this.openAccount(res);
    const calls = Array.isArray(request) ? request : [request];
    const maxBatch = this.opts.maxBatch ?? DEFAULT_MAX_BATCH;
    if (calls.length > maxBatch) {
      return reply(413, { result: null, error: { code: RPC_CODES.INVALID_REQUEST, message: `a batch of ${calls.length} calls is over the limit of ${maxBatch}; send smaller batches` }, id: null });
    }
    // Core checks the whitelist before running anything, batch included, and answers 403.
    if (allowed && calls.some((c) => !allowed.has(String((c as { method?: unknown })?.method)))) return reply(403);
    // A batch is served in slices (chain/slices.ts): its calls one after another, with a turn of
    // the loop for everyone else every few milliseconds.
    const answers = [];
    const slicer = new Slicer();
    for (const call of calls) {
      // Its client gone: no answer of the rest would be read.
      if (account.ended) return;
      answers.push(await this.dispatch(call, account));
      const pause = slicer.tick();
      if (pause) await pause;
    }
    if (Array.isArray(request)) return replyAnswers(200, answers, true);
    const only = answers[0]!;
    const code = (only.error as { code?: number } | null)?.code;
    // Core's HTTP statuses: 404 for an unknown method, 400 for an invalid request, else 500.
    return replyAnswers(only.error === null ? 200 : code === RPC_CODES.METHOD_NOT_FOUND ? 404 : code === RPC_CODES.INVALID_REQUEST ? 400 : 500, answers, false);
  }

  /**
   * Write `answers` (a batch's, or one) as JSON, each RawHexAnswer as its hex string made and
   * written RAW_SLICE_BYTES at a time, a turn of the loop between two slices, waiting for the
   * socket to drain: the length is known in advance (two characters a byte), so the response
   * keeps its content-length, and at most one slice of hex exists at a time.
   */
  private async writeSliced(res: ServerResponse, status: number, answers: Answer[], batch: boolean): Promise<void> {
    const pieces: Array<string | Uint8Array> = [];
    let length = 0;
    // Each piece is measured as it is made (in the slices below), not in one pass at the end.
    const push = (...more: Array<string | Uint8Array>) => {
      for (const p of more) {
        pieces.push(p);
        length += typeof p === "string" ? Buffer.byteLength(p) : p.byteLength * 2;
      }
    };
    if (batch) push("[");
    const slicer = new Slicer();
    for (let i = 0; i < answers.length; i++) {
      const a = answers[i]!;
      if (i > 0) push(",");
      if (a.result instanceof JsonText) push('{"result":', ...a.result.pieces, `,"error":null,"id":${JSON.stringify(a.id) ?? "null"}}`);
      else if (a.result instanceof RawHexAnswer) push('{"result":"', a.result.raw, `","error":null,"id":${JSON.stringify(a.id) ?? "null"}}`);
      else push(JSON.stringify(a));
      const pause = slicer.tick();
      if (pause) await pause;
    }
    push(batch ? "]\n" : "\n");
    res.writeHead(status, { "content-type": "application/json", "content-length": length });
    const drained = () => new Promise<void>((resolve) => {
      const done = () => {
        res.off("drain", done);
        res.off("close", done);
        resolve();
      };
      res.once("drain", done);
      res.once("close", done);
    });
    // Strings are written ~RAW_SLICE_BYTES at a time (the many small pieces of a JsonText), a
    // turn of the loop (or the client's drain) between two writes.
    let pending: string[] = [];
    let pendingBytes = 0;
    const writePending = async () => {
      if (pending.length === 0) return;
      const ok = res.write(pending.length === 1 ? pending[0]! : pending.join(""));
      pending = [];
      pendingBytes = 0;
      if (!ok) await drained();
      else await new Promise<void>((resolve) => setImmediate(resolve));
    };
    for (const p of pieces) {
      if (res.destroyed) return;
      if (typeof p === "string") {
        pending.push(p);
        pendingBytes += p.length;
        if (pendingBytes >= RAW_SLICE_BYTES) await writePending();
        continue;
      }
      await writePending();
      for (let at = 0; at < p.byteLength; at += RAW_SLICE_BYTES) {
        if (res.destroyed) return;
        const slice = p.subarray(at, Math.min(p.byteLength, at + RAW_SLICE_BYTES));
        const ok = res.write(Buffer.from(slice.buffer, slice.byteOffset, slice.byteLength).toString("hex"));
        if (!ok) await drained();
        else await new Promise<void>((resolve) => setImmediate(resolve));
      }
    }
    if (res.destroyed) return;
    res.end(pending.join(""));
  }

  private authenticate(header: string | undefined): string | null {
    if (!header?.startsWith("Basic ")) return null;
    const decoded = Buffer.from(header.slice(6), "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon < 0) return null;
    const user = decoded.slice(0, colon);
    const password = decoded.slice(colon + 1);
    if (this.opts.cookie && decoded === this.opts.cookie) return user;
    for (const line of this.opts.rpcauth ?? []) if (checkRpcauth(line, user, password)) return user;
    return null;
  }

  /** The answers of the request `res` answers, counted in FACADE_ANSWER_BYTES_HELD until it is written or its client gone. */
  private openAccount(res: ServerResponse): AnswerShare {
    const account = this.answers.share();
    res.once("close", () => account.end());
    return account;
  }

  private async dispatch(call: unknown, account: AnswerShare): Promise<Answer> {
    const c = (call ?? {}) as { method?: unknown; params?: unknown; id?: unknown };
    // An error answer is counted (its message and echoed id) but never refused: each is small,
    // and a batch's are at most its calls (maxBatch).
    const failed = (code: number, whole: string, id: unknown): Answer => {
      // Small by construction, whatever a message quotes (a parameter, a backend's words).
      const message = whole.length > FACADE_ERROR_CHARS ? `${whole.slice(0, FACADE_ERROR_CHARS)}... (cut at FACADE_ERROR_CHARS, ${FACADE_ERROR_CHARS} characters)` : whole;
      account.force(ENVELOPE_BYTES + message.length + (JSON.stringify(id)?.length ?? 4));
      return { result: null, error: { code, message }, id };
    };
    if (c.id !== undefined && jsonCharsOver(c.id, MAX_ID_JSON_CHARS)) {
      return failed(RPC_CODES.INVALID_REQUEST, `the call's id is more than ${MAX_ID_JSON_CHARS} characters of JSON (MAX_ID_JSON_CHARS); send a shorter id`, null);
    }
    const id = c.id ?? null;
    const method = typeof c.method === "string" && c.method.length <= MAX_METHOD_CHARS ? c.method : "";
    const handler = Object.hasOwn(this.methods, method) ? this.methods[method] : undefined;
    if (!handler) return failed(RPC_CODES.METHOD_NOT_FOUND, "Method not found", id);
    const params = Array.isArray(c.params) ? c.params : [];
    account.startAnswer();
    try {
      let result = (await handler(params, account)) ?? null;
      // Any other result counted as its JSON (a verbose transaction's grows with its outputs),
      // with the envelope and the id it echoes. A large one is kept as that JSON (JsonText), so
      // it is not stringified a second time to be written.
      let size: number;
      if (result instanceof JsonText) size = 0;
      else if (result instanceof RawHexAnswer) size = typeof result.raw === "string" ? result.raw.length : 2 * result.raw.length;
      else {
        const text = JSON.stringify(result) ?? "null";
        size = text.length;
        if (size > SMALL_BODY_BYTES) result = new JsonText([text]);
      }
      take(account, size + ENVELOPE_BYTES + (JSON.stringify(id)?.length ?? 4));
      return { result, error: null, id };
    } catch (err) {
      if (err instanceof AnswersHeld) {
        // What was made for this answer is dropped with it.
        if (account.ended) return failed(RPC_CODES.MISC_ERROR, "the client went away", id);
        account.dropAnswer();
        return failed(RPC_CODES.OUT_OF_MEMORY, `the answers of requests in progress, all clients together, would hold more than ${FACADE_ANSWER_BYTES_HELD} bytes of JSON (FACADE_ANSWER_BYTES_HELD, a fixed limit); this answer was not made: ask for fewer large answers per batch, or retry once earlier answers are read`, id);
      }
      if (err instanceof RpcFailure) return failed(err.code, err.message, id);
      return failed(RPC_CODES.MISC_ERROR, (err as Error).message, id);
    }
  }

  // ---- Methods, in Core's formats ----

  private buildMethods(): Record<string, Handler> {
    const b = this.opts.backend;
    const hashParam = (p: unknown[], i: number, name: string): Hex => {
      const v = p[i];
      if (typeof v !== "string" || !/^[0-9a-f]{64}$/i.test(v)) {
        // Core quotes the whole parameter; a client's 20 MB one made an answer of 20 MB, stringified in one turn.
        const quoted = String(v).slice(0, 64);
        throw new RpcFailure(RPC_CODES.INVALID_PARAMETER, `${name} must be of length 64 (not ${typeof v === "string" ? v.length : 0}, for '${quoted}${String(v).length > 64 ? "..." : ""}')`);
      }
      return v.toLowerCase();
    };
    const block = async (hash: Hex): Promise<Block> => {
      const found = await b.getBlock(hash);
      if (!found) throw new RpcFailure(RPC_CODES.INVALID_ADDRESS_OR_KEY, "Block not found");
      return found;
    };
    return {
      getbestblockhash: async () => b.getChainTip(),
      getblockcount: async () => b.getBlockHeight(),
      getblockhash: async (p) => {
        const height = Number(p[0]);
        const found = await b.getBlockByHeight(height);
        if (!found) throw new RpcFailure(RPC_CODES.INVALID_PARAMETER, "Block height out of range");
        return found.hash;
      },
      getblockchaininfo: async () => {
        const info = await b.getChainInfo();
        return {
          chain: coreChainName(info.chain),
          blocks: info.height,
          headers: info.height,
          bestblockhash: info.tip_hash,
          bits: bitsToHex(info.bits),
          target: (await b.getBlockTemplate()).target,
          difficulty: info.difficulty,
          time: (await b.getBlockHeader(info.tip_hash))?.time ?? 0,
          mediantime: info.median_time,
          verificationprogress: 1,
          initialblockdownload: !info.is_synced,
          chainwork: BigInt(info.chain_work).toString(16).padStart(64, "0"),
          size_on_disk: 0,
          pruned: false,
          warnings: [],
        };
      },
      getblockheader: async (p) => {
        const header = await b.getBlockHeader(hashParam(p, 0, "blockhash"));
        if (!header) throw new RpcFailure(RPC_CODES.INVALID_ADDRESS_OR_KEY, "Block not found");
        if (p[1] === false) return header.hex;
        const full = await block(header.hash);
        return this.headerJson(header, full.transactions.length);
      },
      getblock: async (p, account) => {
        const found = await block(hashParam(p, 0, "blockhash"));
        const verbosity = p[1] === undefined ? 1 : p[1] === true ? 1 : p[1] === false ? 0 : Number(p[1]);
        if (verbosity === 0) return new RawHexAnswer(found.hex);
        const json: Record<string, unknown> = {
          ...(await this.headerJson(found.header, found.transactions.length)),
          strippedsize: (found.weight - found.size) / 2,
          size: found.size,
          weight: found.weight,
        };
        // The transactions, one piece each, in slices (JsonText).
        return verbosity === 1 ? jsonWithList(account, json, "tx", found.transactions, (tx) => tx.txid) : jsonWithList(account, json, "tx", found.transactions, (tx) => this.txJson(tx));
      },
      getrawtransaction: async (p) => {
        const txid = hashParam(p, 0, "txid");
        const tx = await b.getTransaction(txid);
        if (!tx) throw new RpcFailure(RPC_CODES.INVALID_ADDRESS_OR_KEY, "No such mempool or blockchain transaction. Use gettransaction for wallet transactions.");
        const verbose = p[1] === true || (typeof p[1] === "number" && p[1] > 0);
        return verbose ? this.txJson(tx) : new RawHexAnswer(tx.hex);
      },
      gettxout: async (p) => {
        const txid = hashParam(p, 0, "txid");
        const utxo = await b.getUtxo({ txid, vout: Number(p[1]) });
        if (!utxo) return null;
        const height = await b.getBlockHeight();
        return {
          bestblock: await b.getChainTip(),
          confirmations: height - utxo.height + 1,
          value: satsToBtc(utxo.value),
          scriptPubKey: this.scriptJson(hexToBytes(utxo.script_pubkey), utxo.address),
          coinbase: utxo.coinbase,
        };
      },
      getrawmempool: async (p, account) => {
        const txids = await b.getMempoolTransactions();
        if (p[0] !== true) return jsonList(account, txids, (txid) => txid);
        // One entry per transaction, made and stringified in slices (100,000 of them held the
        // loop for seconds), written as JsonText pieces (~300 bytes per entry).
        const pieces = ["{"];
        const slicer = new Slicer();
        for (const txid of txids) {
          const entry = await b.getMempoolEntry(txid);
          if (entry) {
            const piece = `${pieces.length > 1 ? "," : ""}${JSON.stringify(txid)}:${JSON.stringify(this.entryJson(entry.vsize, entry.fee, entry.time))}`;
            take(account, piece.length + PIECE_OVERHEAD_BYTES);
            pieces.push(piece);
          }
          const pause = slicer.tick();
          if (pause) await pause;
        }
        pieces.push("}");
        return new JsonText(pieces);
      },
      getmempoolentry: async (p) => {
        const entry = await b.getMempoolEntry(hashParam(p, 0, "txid"));
        if (!entry) throw new RpcFailure(RPC_CODES.INVALID_ADDRESS_OR_KEY, "Transaction not in mempool");
        return this.entryJson(entry.vsize, entry.fee, entry.time);
      },
      getmempoolinfo: async () => {
        const info = await b.getMempoolInfo();
        return { loaded: true, size: info.transaction_count, bytes: info.size_bytes, usage: info.size_bytes, total_fee: satsToBtc(info.total_fee_sats), maxmempool: 300_000_000, mempoolminfee: 0.00001, minrelaytxfee: 0.00001 };
      },
      estimatesmartfee: async (p) => {
        const target = Number(p[0] ?? 6);
        const satPerVb = await b.estimateFee(target);
        return { feerate: (satPerVb * 1000) / 100_000_000, blocks: target };
      },
      getnetworkinfo: async () => {
        const stats = await b.getNetworkStats();
        return { version: 290000, subversion: "/modhost-facade/", protocolversion: 70016, connections: stats.peer_count, networkactive: true, relayfee: 0.00001, warnings: [] };
      },
      getnettotals: async () => {
        const stats = await b.getNetworkStats();
        return { totalbytesrecv: stats.bytes_received, totalbytessent: stats.bytes_sent, timemillis: Date.now() };
      },
      getnetworkhashps: async () => (await b.getNetworkStats()).hash_rate,
      getconnectioncount: async () => (await b.getNetworkStats()).peer_count,
      getpeerinfo: async () =>
        (this.opts.peers ? this.opts.peers() : await b.getPeers()).map((peer, id) => ({ id, addr: peer.addr, services: peer.services.toString(16).padStart(16, "0"), version: peer.version, conntime: peer.connected_since, transport_protocol_type: peer.transport_type })),
      getblocktemplate: async (p, account) => {
        const req = (p[0] ?? {}) as { rules?: unknown };
        if (!Array.isArray(req.rules) || !req.rules.includes("segwit")) throw new RpcFailure(RPC_CODES.INVALID_PARAMETER, 'getblocktemplate must be called with the segwit rule set (call with {"rules": ["segwit"]})');
        const t = await b.getBlockTemplate();
        // The template's transactions (a block's worth of the mempool) last, one piece each, in slices (JsonText).
        const { transactions: _txs, ...head } = {
          capabilities: ["proposal"],
          version: t.version,
          rules: ["csv", "!segwit", "taproot"],
          vbavailable: {},
          vbrequired: 0,
          previousblockhash: t.previous_block_hash,
          transactions: null,
          coinbaseaux: {},
          coinbasevalue: t.coinbase_value,
          longpollid: `${t.previous_block_hash}${t.transactions.length}`,
          target: t.target,
          mintime: t.min_time,
          mutable: ["time", "transactions", "prevblock"],
          noncerange: "00000000ffffffff",
          sigoplimit: 80_000,
          sizelimit: 4_000_000,
          weightlimit: 4_000_000,
          curtime: t.cur_time,
          bits: bitsToHex(t.bits),
          height: t.height,
          default_witness_commitment: t.default_witness_commitment,
        };
        return jsonWithList(account, head, "transactions", t.transactions, (tx) => ({ data: hexOfRaw(tx.hex), txid: tx.txid, hash: tx.wtxid, depends: [], fee: tx.fee, sigops: 0, weight: tx.weight }));
      },
      submitblock: async (p) => {
        if (typeof p[0] !== "string") throw new RpcFailure(RPC_CODES.INVALID_PARAMETER, "hexdata must be a hex string");
        const r = await b.submitBlock(p[0]);
        if (r.result === "accepted") return null;
        if (r.result === "duplicate") return "duplicate";
        return (r.reason ?? "rejected").split(":")[0];
      },
      sendrawtransaction: async (p) => {
        if (typeof p[0] !== "string") throw new RpcFailure(RPC_CODES.INVALID_PARAMETER, "hexstring must be a hex string");
        try {
          return await b.submitTransaction(p[0]);
        } catch (err) {
          throw new RpcFailure(RPC_CODES.VERIFY_REJECTED, (err as Error).message);
        }
      },
      generate: async (p) => this.generate(Number(p[0] ?? 1)),
      generatetoaddress: async (p) => this.generate(Number(p[0] ?? 1)),
      uptime: async () => Math.floor(process.uptime()),
      help: async () => Object.keys(this.methods).sort().join("\n"),
    };
  }

  private async generate(count: number): Promise<Hex[]> {
    if (!this.opts.mine) throw new RpcFailure(RPC_CODES.METHOD_NOT_FOUND, "this chain cannot mine on request");
    if (!Number.isInteger(count) || count < 1 || count > 1000) throw new RpcFailure(RPC_CODES.INVALID_PARAMETER, "nblocks must be 1 to 1000");
    return this.opts.mine(count);
  }

  private async blockStats(hash: Hex): Promise<{ work: bigint; times: number[] }> {
    const cached = this.stats.get(hash);
    if (cached) return cached;
    // Walk down to a block whose figures are known (or genesis), then up again.
    const path: BlockHeader[] = [];
    let cur = await this.opts.backend.getBlockHeader(hash);
    while (cur && !this.stats.has(cur.hash)) {
      path.push(cur);
      if (cur.height === 0) break;
      cur = await this.opts.backend.getBlockHeader(cur.prev_hash);
    }
    let parent = cur && this.stats.has(cur.hash) ? this.stats.get(cur.hash)! : { work: 0n, times: [] as number[] };
    for (const h of path.reverse()) {
      parent = { work: parent.work + workFromBits(h.bits), times: [...parent.times, h.time].slice(-11) };
      this.stats.set(h.hash, parent);
    }
    return this.stats.get(hash) ?? parent;
  }

  private async headerJson(h: BlockHeader, nTx: number): Promise<Record<string, unknown>> {
    const b = this.opts.backend;
    const tipHeight = await b.getBlockHeight();
    const onChain = (await b.getBlockByHeight(h.height))?.hash === h.hash;
    const next = onChain ? await b.getBlockByHeight(h.height + 1) : null;
    const stats = await this.blockStats(h.hash);
    const sorted = [...stats.times].sort((a, c) => a - c);
    return {
      hash: h.hash,
      confirmations: onChain ? tipHeight - h.height + 1 : -1,
      height: h.height,
      version: h.version,
      versionHex: (h.version >>> 0).toString(16).padStart(8, "0"),
      merkleroot: h.merkle_root,
      time: h.time,
      mediantime: sorted[Math.floor(sorted.length / 2)] ?? h.time,
      nonce: h.nonce,
      bits: bitsToHex(h.bits),
      difficulty: difficultyFromBits(h.bits),
      chainwork: stats.work.toString(16).padStart(64, "0"),
      nTx,
      ...(h.height > 0 ? { previousblockhash: h.prev_hash } : {}),
      ...(next ? { nextblockhash: next.hash } : {}),
    };
  }

  private scriptJson(script: Uint8Array, address: string | null): Record<string, unknown> {
    return { asm: scriptAsm(script), hex: bytesToHex(script), type: scriptType(script), ...(address ? { address } : {}) };
  }

  private txJson(tx: Transaction): Record<string, unknown> {
    return {
      txid: tx.txid,
      hash: tx.wtxid,
      version: tx.version,
      size: tx.size,
      vsize: tx.vsize,
      weight: tx.weight,
      locktime: tx.locktime,
      vin: tx.inputs.map((input) =>
        input.coinbase
          ? { coinbase: input.script_sig, ...(input.witness.length ? { txinwitness: input.witness } : {}), sequence: input.sequence }
          : {
              txid: input.txid,
              vout: input.vout,
              scriptSig: { asm: scriptAsm(hexToBytes(input.script_sig)), hex: input.script_sig },
              ...(input.witness.length ? { txinwitness: input.witness } : {}),
              sequence: input.sequence,
            },
      ),
      vout: tx.outputs.map((out, n) => ({ value: satsToBtc(out.value), n, scriptPubKey: this.scriptJson(hexToBytes(out.script_pubkey), out.address) })),
      hex: hexOfRaw(tx.hex),
    };
  }

  private entryJson(vsize: number, fee: number, time: number): Record<string, unknown> {
    const btc = satsToBtc(fee);
    return { vsize, weight: vsize * 4, time, height: 0, descendantcount: 1, descendantsize: vsize, ancestorcount: 1, ancestorsize: vsize, fees: { base: btc, modified: btc, ancestor: btc, descendant: btc }, depends: [], spentby: [], "bip125-replaceable": false, unbroadcast: false };
  }

  // ---- ZMQ ----

  private onEvent<K extends ChainEventName>(name: K, payload: ChainEvents[K]): void {
    // Publish in event order even though some bodies (raw blocks) are read asynchronously.
    this.publishChain = this.publishChain.then(() => this.publishEvent(name, payload)).catch(() => {});
  }

  private async publishEvent<K extends ChainEventName>(name: K, payload: ChainEvents[K]): Promise<void> {
    const p = payload as Record<string, unknown>;
    switch (name) {
      case "NewBlock": {
        const hash = p["hash"] as Hex;
        const found = await this.opts.backend.getBlock(hash);
        await this.send("hashblock", Buffer.from(hash, "hex"));
        if (found) await this.send("rawblock", Buffer.from(bytesOfRaw(found.hex)));
        for (const tx of found?.transactions ?? []) {
          await this.send("hashtx", Buffer.from(tx.txid, "hex"));
          await this.send("rawtx", Buffer.from(bytesOfRaw(tx.hex)));
        }
        await this.send("sequence", Buffer.concat([Buffer.from(hash, "hex"), Buffer.from("C")]));
        return;
      }
      case "BlockDisconnected":
        return this.send("sequence", Buffer.concat([Buffer.from(p["hash"] as Hex, "hex"), Buffer.from("D")]));
      case "MempoolTransactionAdded": {
        const txid = p["txid"] as Hex;
        const tx = await this.opts.backend.getMempoolTransaction(txid);
        await this.send("hashtx", Buffer.from(txid, "hex"));
        if (tx) await this.send("rawtx", Buffer.from(bytesOfRaw(tx.hex)));
        return this.send("sequence", this.mempoolNotice(txid, "A"));
      }
      case "MempoolTransactionRemoved":
        // Core does not publish removals by a block (the block's C notice implies them).
        if (p["reason"] === "block") return;
        return this.send("sequence", this.mempoolNotice(p["txid"] as Hex, "R"));
      default:
        return;
    }
  }

  private mempoolNotice(txid: Hex, label: "A" | "R"): Buffer {
    const seq = Buffer.alloc(8);
    seq.writeBigUInt64LE(++this.mempoolSequence);
    return Buffer.concat([Buffer.from(txid, "hex"), Buffer.from(label), seq]);
  }

  /** One notification: [topic, body, 4-byte little-endian per-topic counter]. */
  private async send(topic: string, body: Buffer): Promise<void> {
    if (!this.publisher) return;
    const n = this.counters.get(topic) ?? 0;
    this.counters.set(topic, (n + 1) % 0x1_0000_0000);
    const seq = Buffer.alloc(4);
    seq.writeUInt32LE(n);
    await this.publisher.send([topic, body, seq]);
  }

  /** For tests of gap detection: skip `n` numbers of a topic's counter, as if messages were lost. */
  skipSequence(topic: string, n: number): void {
    this.counters.set(topic, ((this.counters.get(topic) ?? 0) + n) % 0x1_0000_0000);
  }
}
