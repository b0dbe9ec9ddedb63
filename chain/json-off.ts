// JSON from parties the host does not control, parsed without holding the host's loop (#8).
//
// JSON.parse is one uninterruptible stretch whose time is the text's size and token count: a
// body of 32 MB (the Core-compatible face's limit) cost 0.64-0.99 s of one turn at load 14-17,
// a bitcoind answer of up to 64 MiB was parsed whole on the loop. Here a text of at most
// JSON_ON_LOOP_BYTES is parsed on the loop (about 1 ms for its worst shapes: `npm run bench --
// jsonoff`); a larger one is copied to its lane's worker thread (JsonLane: one per reader), kept warm for the next, JSON_SEND_BYTES
// a turn (one parse at a time, the rest queued up to JSON_QUEUE), measured for depth when the
// caller asks, parsed there under its own heap (JSON_WORKER_HEAP_MB) and a deadline
// (JSON_PARSE_DEADLINE_MS), past either of which the worker is ended and replaced and the
// parse fails naming the limit.
//
// Handing the value back is bounded too: the worker counts its values first (`maxValues`,
// named by the caller), then sends it in pieces of at most JSON_VALUES_PER_PIECE values (a
// string counts one value per 16 characters), one message per turn of the loop (the next is
// sent when this thread asks for it); a container too large for one piece arrives empty and
// is filled by the pieces after it, and a string too long for one piece arrives in slices
// (transferred bytes, not copied) joined into a rope. Structured cloning 8 MB of hex in one
// message cost this thread 22-32 ms (load 4-8); a piece costs a few ms.

import { Worker } from "node:worker_threads";

/** Texts of at most this many bytes are parsed on the loop. */
export const JSON_ON_LOOP_BYTES = 64 * 1024;
/** Values (and 16-character runs of strings) in one piece handed back from the worker. */
const JSON_VALUES_PER_PIECE = 8192;
/** The worker's old-generation heap: a 64 MiB text of tiny values parses into ~200 MB. */
const JSON_WORKER_HEAP_MB = 384;
/** One parse in the worker: from the first bytes sent to its first answer. */
const JSON_PARSE_DEADLINE_MS = 20_000;
/** Bytes of the text copied to the worker in one turn of the loop. */
const JSON_SEND_BYTES = 1024 * 1024;
/** Parses waiting for the worker; more are refused. */
export const JSON_QUEUE = 64;

/** The text is not JSON (the parser's message). */
export class JsonSyntaxError extends Error {
  override name = "JsonSyntaxError";
}

/** A limit of the parse was passed; the message names it. */
export class JsonLimitError extends Error {
  override name = "JsonLimitError";
}

/**
 * Who parses: each lane has its own worker and queue, so that one party's texts (an
 * authenticated RPC client's 16 MiB bodies, say) never wait ahead of, or fill the queue
 * against, another's (the bitcoind client's answers, which the chain backend lives on).
 */
type JsonLane = "rpc-server" | "core-face" | "bitcoind-client" | "fuzz";

export interface JsonLimits {
  /** Whose worker and queue parse a text past JSON_ON_LOOP_BYTES (see JsonLane). */
  lane: JsonLane;
  /** Values the result may hold (each array, object, string, number, boolean and null; keys not counted). */
  maxValues: number;
  /** How the caller's limit is named in an error, e.g. "TOKENS_PER_CALL × the batch limit". */
  valuesName: string;
  /**
   * Deepest nesting of arrays and objects, measured on the bytes before the parse. Required of
   * every reader: a value handed back takes a piece (a turn of the loop) per level nested past
   * JSON_VALUES_PER_PIECE values, so a text of 100,000 nested arrays (200 KB, from a node's
   * answer or a facade client's body) held its lane's worker for minutes, every later text of
   * that lane waiting behind it.
   */
  maxDepth: number;
  /** How the depth limit is named in an error. */
  depthName: string;
  /** Values per piece handed back (default JSON_VALUES_PER_PIECE); the fuzz target sets a few, to split everything. */
  valuesPerPiece?: number;
}

/** One piece of a value from the worker (see WORKER_SOURCE). */
type Piece =
  | { kind: "syntax"; message: string }
  | { kind: "limit"; message: string }
  | { kind: "fill"; id: number; items: unknown[]; keys?: string[]; holes: Hole[]; last: boolean }
  | { kind: "text"; id: number; bytes: Uint8Array; latin1: boolean; last: boolean };
/** An item of a fill that is a container or a long string, filled by later pieces. */
interface Hole {
  at: number;
  id: number;
  /** "a" an array, "o" an object, "s" a string. */
  is: "a" | "o" | "s";
}

interface Job {
  pieces: readonly Uint8Array[];
  bytes: number;
  limits: JsonLimits;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

/**
 * The worker: parses, counts, then hands back pieces on demand. The value is sent as the one
 * item of an array (id 0), so that every value, the root too, arrives the same way: items of a
 * container's fill, each small enough to be cloned whole or else a hole that later pieces fill.
 * A long string comes in slices of at most 16 × the piece's values characters, as latin1 bytes
 * where it can or UTF-16 (lone surrogates kept), and is joined here into a rope, which costs
 * no copy until it is read. Plain JavaScript in a string, so that the same code runs from the
 * sources and from dist/ with nothing compiled for it.
 */
const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const cost = (v) => typeof v === "string" ? 1 + (v.length >> 4) : 1;
let pieces = null;
let text = null;
let at = 0;
${jsonDepth.toString()}
const depthOf = jsonDepth;
parentPort.on("message", (m) => {
  if (m.next) { const p = pieces.next(); if (!p.done) parentPort.postMessage(p.value[0], p.value[1]); return; }
  if (m.begin !== undefined) { pieces = null; text = Buffer.allocUnsafeSlow(m.begin); at = 0; return; }
  if (m.chunks) { for (const c of m.chunks) { text.set(c, at); at += c.byteLength; } return; }
  const PER = m.per;
  const bytes = text.subarray(0, at);
  text = null;
  if (m.maxDepth !== undefined && depthOf(bytes, m.maxDepth) > m.maxDepth) {
    parentPort.postMessage({ kind: "limit", message: "the JSON nests arrays and objects more than " + m.maxDepth + " deep (" + m.depthName + ")" });
    return;
  }
  // Every "[", "{" and "," outside strings adds at least one value: more than maxValues of them
  // are refused before the parse (30 million 0s took the worker past its deadline).
  let tokens = 0;
  for (let i = 0, inString = false; i < bytes.length && tokens <= m.maxValues; i++) {
    const b = bytes[i];
    if (inString) { if (b === 0x5c) i++; else if (b === 0x22) inString = false; }
    else if (b === 0x22) inString = true;
    else if (b === 0x2c || b === 0x5b || b === 0x7b) tokens++;
  }
  if (tokens > m.maxValues) {
    parentPort.postMessage({ kind: "limit", message: "the JSON holds more than " + m.maxValues + " values (" + m.valuesName + ")" });
    return;
  }
  let value;
  try { value = JSON.parse(bytes.toString("utf8")); }
  catch (e) { parentPort.postMessage({ kind: "syntax", message: String(e && e.message) }); return; }
  // Sizes of every container (post-order, no recursion), values counted against maxValues.
  const size = new Map();
  let values = 0;
  const stack = [value, false];
  while (stack.length > 0) {
    const done = stack.pop(); const v = stack.pop();
    if (v === null || typeof v !== "object") { values++; continue; }
    if (done) {
      let s = 1;
      if (Array.isArray(v)) for (const x of v) s += x !== null && typeof x === "object" ? size.get(x) : cost(x);
      else for (const k in v) { const x = v[k]; s += cost(k) + (x !== null && typeof x === "object" ? size.get(x) : cost(x)); }
      size.set(v, s);
      continue;
    }
    if (++values > m.maxValues) break;
    stack.push(v, true);
    if (Array.isArray(v)) for (let i = v.length - 1; i >= 0; i--) stack.push(v[i], false);
    else for (const k in v) stack.push(v[k], false);
  }
  if (values > m.maxValues || stack.length > 0) {
    parentPort.postMessage({ kind: "limit", message: "the JSON holds more than " + m.maxValues + " values (" + m.valuesName + ")" });
    return;
  }
  for (const k of longKeys(value)) {
    parentPort.postMessage({ kind: "limit", message: "the JSON holds an object key of more than " + (PER * 16) + " characters (JSON_VALUES_PER_PIECE)" });
    return;
  }
  const sizeOf = (v) => v !== null && typeof v === "object" ? size.get(v) : cost(v);
  function* longKeys(v) {
    for (const [c] of size) if (!Array.isArray(c)) for (const k in c) if (cost(k) > PER) yield k;
  }
  function* emit() {
    const todo = [[0, [value]]];
    let nextId = 1;
    while (todo.length > 0) {
      const [id, c] = todo.shift();
      if (typeof c === "string") {
        const step = PER * 16;
        for (let at = 0; at < c.length; at += step) {
          const slice = c.slice(at, at + step);
          const latin1 = !/[^\\x00-\\xff]/.test(slice);
          // Its own ArrayBuffer (a small Buffer shares the pool's, which cannot be transferred).
          const b = Buffer.from(new ArrayBuffer(latin1 ? slice.length : slice.length * 2));
          b.write(slice, 0, latin1 ? "latin1" : "utf16le");
          yield [{ kind: "text", id, bytes: b, latin1, last: at + step >= c.length }, [b.buffer]];
        }
        continue;
      }
      const array = Array.isArray(c);
      const keys = array ? null : Object.keys(c);
      const n = array ? c.length : keys.length;
      let items = [], ks = [], holes = [], used = 0;
      for (let i = 0; i < n; i++) {
        const k = array ? null : keys[i];
        const x = array ? c[i] : c[k];
        const kc = array ? 0 : cost(k);
        let xc = sizeOf(x);
        const big = xc > PER;
        if (big) xc = 1;
        if (used + kc + xc > PER && items.length > 0) {
          const p = { kind: "fill", id, items, holes, last: false };
          if (!array) p.keys = ks;
          yield [p, []];
          items = []; ks = []; holes = []; used = 0;
        }
        if (big) {
          const nid = nextId++;
          holes.push({ at: items.length, id: nid, is: typeof x === "string" ? "s" : Array.isArray(x) ? "a" : "o" });
          todo.push([nid, x]);
          items.push(null);
        } else items.push(x);
        if (!array) ks.push(k);
        used += kc + xc;
      }
      const p = { kind: "fill", id, items, holes, last: true };
      if (!array) p.keys = ks;
      yield [p, []];
    }
  }
  pieces = emit();
  const first = pieces.next();
  parentPort.postMessage(first.value[0], first.value[1]);
});
`;

/** Where a long string goes once its last slice is in. */
interface OpenText {
  into: Record<string, unknown> | unknown[];
  key: string | number;
  text: string;
}

/** The worker kept warm and its queue: one parse at a time. */
class JsonWorker {
  private worker: Worker | null = null;
  private readonly queue: Job[] = [];
  private current: Job | null = null;
  private onFailure: ((why: string) => void) | null = null;

  submit(job: Job): void {
    if (this.queue.length >= JSON_QUEUE) {
      job.reject(new JsonLimitError(`${JSON_QUEUE} JSON texts are already waiting to be parsed (JSON_QUEUE); try again later`));
      return;
    }
    this.queue.push(job);
    if (!this.current) this.startNext();
  }

  private startNext(): void {
    const job = this.queue.shift();
    this.current = job ?? null;
    if (!job) {
      this.worker?.unref();
      return;
    }
    const worker = this.ensure();
    worker.ref();
    const holder: unknown[] = [];
    const containers = new Map<number, Record<string, unknown> | unknown[]>([[0, holder]]);
    const texts = new Map<number, OpenText>();
    let open = 1;
    const end = (err: Error | null, value?: unknown) => {
      clearTimeout(timer);
      worker.off("message", onMessage);
      if (this.current !== job) return;
      if (err) job.reject(err);
      else job.resolve(value);
      this.startNext();
    };
    const timer = setTimeout(() => {
      this.retire(worker);
      end(new JsonLimitError(`parsing a JSON text of ${job.bytes} bytes did not end within ${JSON_PARSE_DEADLINE_MS} ms (JSON_PARSE_DEADLINE_MS)`));
    }, JSON_PARSE_DEADLINE_MS);
    const onMessage = (p: Piece) => {
      // The deadline is the worker's: its first answer ends it. Handing the value back takes a
      // turn a piece, as many as the value's size (bounded by maxValues) and the loop's pace.
      clearTimeout(timer);
      if (p.kind === "syntax") return end(new JsonSyntaxError(p.message));
      if (p.kind === "limit") return end(new JsonLimitError(p.message));
      if (p.kind === "text") {
        const t = texts.get(p.id)!;
        const bytes = Buffer.from(p.bytes.buffer, p.bytes.byteOffset, p.bytes.byteLength);
        // A rope: the slices are joined without a copy until the string is read.
        t.text += bytes.toString(p.latin1 ? "latin1" : "utf16le");
        if (p.last) {
          texts.delete(p.id);
          if (Array.isArray(t.into)) t.into[t.key as number] = t.text;
          else setOwn(t.into, t.key as string, t.text);
          open--;
        }
      } else {
        const target = containers.get(p.id)!;
        const items = p.items;
        const base = Array.isArray(target) ? target.length : 0;
        for (const h of p.holes) {
          const key = p.keys ? p.keys[h.at]! : base + h.at;
          if (h.is === "s") {
            texts.set(h.id, { into: target, key, text: "" });
            items[h.at] = "";
          } else {
            const c: Record<string, unknown> | unknown[] = h.is === "a" ? [] : {};
            containers.set(h.id, c);
            items[h.at] = c;
          }
          open++;
        }
        if (Array.isArray(target)) {
          for (const x of items) target.push(x);
        } else {
          const keys = p.keys ?? [];
          for (let i = 0; i < keys.length; i++) setOwn(target, keys[i]!, items[i]);
        }
        if (p.last) {
          containers.delete(p.id);
          open--;
        }
      }
      if (open === 0) return end(null, holder[0]);
      // The next piece in a later turn of the loop: one piece's clone per turn.
      setImmediate(() => {
        if (this.current === job) worker.postMessage({ next: true });
      });
    };
    worker.on("message", onMessage);
    this.onFailure = (why) => end(new JsonLimitError(why));
    // The text is copied to the worker JSON_SEND_BYTES a turn (a copy of 32 MB at once, or a
    // Buffer.concat of its pieces, cost this thread tens of ms), then parsed there.
    const l = job.limits;
    worker.postMessage({ begin: job.bytes });
    const send = (piece: number, offset: number) => {
      if (this.current !== job) return;
      // Copied into a buffer of its own, which is transferred: a view posted as it is would
      // clone its whole ArrayBuffer (a 60 MB text, once per MiB sent).
      while (piece < job.pieces.length && job.pieces[piece]!.byteLength === offset) {
        piece++;
        offset = 0;
      }
      let size = 0;
      for (let i = piece, o = offset; i < job.pieces.length && size < JSON_SEND_BYTES; i++, o = 0) size += Math.min(job.pieces[i]!.byteLength - o, JSON_SEND_BYTES - size);
      const group = new Uint8Array(size);
      let filled = 0;
      while (filled < size) {
        const p = job.pieces[piece]!;
        const take = Math.min(p.byteLength - offset, size - filled);
        group.set(p.subarray(offset, offset + take), filled);
        filled += take;
        offset += take;
        if (offset === p.byteLength) {
          piece++;
          offset = 0;
        }
      }
      worker.postMessage({ chunks: [group] }, [group.buffer]);
      if (piece < job.pieces.length) setImmediate(() => send(piece, offset));
      else worker.postMessage({ end: true, maxValues: l.maxValues, valuesName: l.valuesName, per: l.valuesPerPiece ?? JSON_VALUES_PER_PIECE, maxDepth: l.maxDepth, depthName: l.depthName });
    };
    send(0, 0);
  }

  private ensure(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      resourceLimits: { maxOldGenerationSizeMb: JSON_WORKER_HEAP_MB, maxYoungGenerationSizeMb: 32, stackSizeMb: 4 },
      stdout: false,
      stderr: false,
    });
    worker.on("error", (err: Error) => {
      const heap = (err as { code?: string }).code === "ERR_WORKER_OUT_OF_MEMORY";
      this.retire(worker);
      this.onFailure?.(heap ? `parsing the JSON text took more than the ${JSON_WORKER_HEAP_MB} MB of heap its worker may use (JSON_WORKER_HEAP_MB)` : `the JSON worker failed: ${String(err)}`);
    });
    worker.on("exit", () => {
      if (this.worker !== worker) return;
      this.worker = null;
      this.onFailure?.("the JSON worker ended before its answer");
    });
    this.worker = worker;
    return worker;
  }

  /** End a worker that failed or overran; the next parse starts another. */
  private retire(worker: Worker): void {
    if (this.worker === worker) this.worker = null;
    void worker.terminate();
  }
}

/** `key` set as an own property, "__proto__" included (an assignment would set the prototype). */
function setOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  if (key === "__proto__") Object.defineProperty(target, key, { value, writable: true, enumerable: true, configurable: true });
  else target[key] = value;
}

/** Values in `value`, counting no further than just past `max`. */
function countValues(value: unknown, max: number): number {
  let n = 0;
  const stack = [value];
  while (stack.length > 0 && n <= max) {
    const v = stack.pop();
    n++;
    if (v === null || typeof v !== "object") continue;
    if (Array.isArray(v)) for (const x of v) stack.push(x);
    else for (const k in v) stack.push((v as Record<string, unknown>)[k]);
  }
  return n;
}

/**
 * Deepest nesting of `[` and `{` outside strings in UTF-8 JSON, counting stops just past `max`.
 * (Also the worker's: it is put into WORKER_SOURCE as text, so it must stay self-contained.)
 */
export function jsonDepth(raw: Uint8Array, max: number): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < raw.length; i++) {
    const b = raw[i];
    if (inString) {
      if (b === 0x5c) i++; // backslash: skip the escaped byte
      else if (b === 0x22) inString = false;
      continue;
    }
    if (b === 0x22) inString = true;
    else if (b === 0x5b || b === 0x7b) {
      depth++;
      if (depth > deepest) {
        deepest = depth;
        if (deepest > max) return deepest;
      }
    } else if (b === 0x5d || b === 0x7d) depth--;
  }
  return deepest;
}

/** The worker of each lane, made when its first large text arrives. */
const workers = new Map<JsonLane, JsonWorker>();

/**
 * Parse UTF-8 JSON given whole or in pieces (they are copied, never changed). Rejects with
 * JsonSyntaxError for what is not JSON and JsonLimitError, naming the limit, for anything over
 * one.
 */
export function parseJson(text: Uint8Array | readonly Uint8Array[], limits: JsonLimits): Promise<unknown> {
  const pieces = text instanceof Uint8Array ? [text] : text;
  let bytes = 0;
  for (const p of pieces) bytes += p.byteLength;
  if (bytes <= JSON_ON_LOOP_BYTES) {
    const whole = pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces, bytes);
    if (limits.maxDepth !== undefined && jsonDepth(whole, limits.maxDepth) > limits.maxDepth) {
      return Promise.reject(new JsonLimitError(`the JSON nests arrays and objects more than ${limits.maxDepth} deep (${limits.depthName})`));
    }
    let value: unknown;
    try {
      value = JSON.parse(Buffer.from(whole.buffer, whole.byteOffset, whole.byteLength).toString("utf8"));
    } catch (err) {
      return Promise.reject(new JsonSyntaxError((err as Error).message));
    }
    if (countValues(value, limits.maxValues) > limits.maxValues) {
      return Promise.reject(new JsonLimitError(`the JSON holds more than ${limits.maxValues} values (${limits.valuesName})`));
    }
    return Promise.resolve(value);
  }
  let worker = workers.get(limits.lane);
  if (!worker) workers.set(limits.lane, (worker = new JsonWorker()));
  return new Promise((resolve, reject) => worker.submit({ pieces, bytes, limits, resolve, reject }));
}
