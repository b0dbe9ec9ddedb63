// What a handler answers crosses the channel as one message: it must be plain data and fit
// in a frame. Checked here, before it is copied out of the isolate and encoded, so that a
// huge or cyclic answer becomes an error for the caller instead of a failure of the isolate
// host. Error messages are cut too.

import { toText, UNSHOWABLE, utf8Length } from "./text.ts";

/**
 * The protocol's one depth limit for a data value (protocol/codec.ts MAX_VALUE_DEPTH), the
 * same that storage applies: whatever a module may store, a handler may answer. The
 * envelope's own levels are allowed for by the receiver (ENVELOPE_DEPTH). Written in when the
 * bootstrap is built (runtime/isolate/bootstrap.ts).
 */
declare const __MODHOST_MAX_VALUE_DEPTH__: number;
const MAX_DEPTH = __MODHOST_MAX_VALUE_DEPTH__;
/**
 * The frame's max_depth (protocol/codec.ts DEFAULT_BODY_LIMITS; written in too): containers on
 * the path to the deepest value of a body, its own map included. A call's params sit one level
 * below the request's map, so they may have one container fewer; the data values inside them
 * (a stored value, a payload) are held to MAX_DEPTH by the host, which names the field.
 */
declare const __MODHOST_MAX_FRAME_DEPTH__: number;
const MAX_FRAME_DEPTH = __MODHOST_MAX_FRAME_DEPTH__;
const MAX_PARAMS_DEPTH = MAX_FRAME_DEPTH - 1;
/** The protocol's max_values (protocol/codec.ts DEFAULT_BODY_LIMITS; written in when the bootstrap is built): values in one message. */
declare const __MODHOST_MAX_VALUES__: number;
export const MAX_VALUES = __MODHOST_MAX_VALUES__;
/** The protocol's max_total_string_bytes of what a module sends (protocol/codec.ts DEFAULT_BODY_LIMITS; written in too). */
declare const __MODHOST_MAX_TOTAL_STRING_BYTES__: number;
const MAX_TOTAL_STRING_BYTES = __MODHOST_MAX_TOTAL_STRING_BYTES__;
// What the checks below use, taken before any module code runs: a module that replaced
// Object.keys, Array.isArray or Object.getPrototypeOf (it shares the isolate) would otherwise
// see its values waved through and copied out whole.
const keysOf = Object.keys;
const isArray = Array.isArray;
const protoOf = Object.getPrototypeOf;
const OBJECT_PROTO = Object.prototype;
const apply = Reflect.apply;
const typedArrayProto = Object.getPrototypeOf(Uint8Array.prototype) as object;
const byteLengthOf = Object.getOwnPropertyDescriptor(typedArrayProto, "byteLength")!.get!;
/** A Uint8Array's size in bytes, by its internal slot (no getter of the module's). */
export const byteSize = (v: Uint8Array): number => apply(byteLengthOf, v, []) as number;
const typedArrayTag = Object.getOwnPropertyDescriptor(typedArrayProto, Symbol.toStringTag)!.get!;
/** Whether v is a Uint8Array, by its internal slots (instanceof asks Uint8Array[Symbol.hasInstance], which a module can define). */
export const isUint8Array = (v: unknown): v is Uint8Array => typeof v === "object" && v !== null && apply(typedArrayTag, v, []) === "Uint8Array";
const byteOffsetOf = Object.getOwnPropertyDescriptor(typedArrayProto, "byteOffset")!.get!;
const bufferOf = Object.getOwnPropertyDescriptor(typedArrayProto, "buffer")!.get!;
const arrayBufferLength = Object.getOwnPropertyDescriptor(ArrayBuffer.prototype, "byteLength")!.get!;
const setBytes = (typedArrayProto as { set: (a: ArrayLike<number>) => void }).set;
const U8 = Uint8Array;
/**
 * The bytes of a Uint8Array in a buffer of their own. A copy out of the isolate takes a view's
 * whole buffer (the structured clone copies what it is a view of): one byte over a buffer of
 * 96 MiB, handed to the host 50 times, cost its isolate host 50 copies of 96 MiB (6.7 s, its size
 * +250 MB, near its ceiling), counted as 1 byte each. A view that is its buffer is taken as it
 * is; any other (an offset, a shorter length, a shared or resizable buffer) is copied here, in
 * the isolate, at the cost of its own length.
 */
export const ownBytes = (v: Uint8Array): Uint8Array => {
  const length = apply(byteLengthOf, v, []) as number;
  try {
    if ((apply(byteOffsetOf, v, []) as number) === 0 && (apply(arrayBufferLength, apply(bufferOf, v, []), []) as number) === length) return v;
  } catch {
    // Not an ArrayBuffer (a SharedArrayBuffer's byteLength is another getter): copied.
  }
  const copy = new U8(length);
  apply(setBytes, copy, [v]);
  return copy;
};
const defineProp = Object.defineProperty;
const setProto = Object.setPrototypeOf;
/** An own data property, whatever setters or accessors module code left on the prototypes. */
export const put = (o: object, k: string | number, value: unknown) =>
  defineProp(o, k, { __proto__: null, value, writable: true, enumerable: true, configurable: true } as PropertyDescriptor);
const MAX_ERROR_CHARS = 4096;

const cut = (value: string): string => {
  const text = value;
  return text.length <= MAX_ERROR_CHARS ? text : text.slice(0, MAX_ERROR_CHARS) + " ... [" + (text.length - MAX_ERROR_CHARS) + " more characters cut]";
};

type Thrown = { code?: unknown; message?: unknown } | null | undefined;

/** The wire code of what a handler threw: its own `code` when a short string, else module_error (also when reading it throws). */
export const errorCode = (err: unknown): string => {
  try {
    const code = err ? (err as Thrown)?.code : undefined;
    return typeof code === "string" && code.length > 0 && code.length <= 64 ? code : "module_error";
  } catch {
    return "module_error";
  }
};

/** The message of what a handler threw, cut; never throws (a getter or proxy trap of the thrown value may). */
export const errorMessage = (err: unknown): string => {
  let message: unknown;
  try {
    message = err && (err as Thrown)?.message !== undefined ? (err as Thrown)?.message : err;
  } catch {
    return UNSHOWABLE;
  }
  return cut(toText(message));
};

/** A limit or shape the check refused: its wire code and message. */
export class AnswerError extends Error {
  declare code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

/**
 * Throws AnswerError (not_plain_data, result_too_large) unless value can be sent as an
 * answer of at most answerBytes. The first pass checks the shape and bounds the size from
 * string lengths (a character is 1 to 3 bytes of UTF-8); only when the bounds straddle the
 * limit does a second pass count the bytes of each string.
 *
 * Answers the value's copy as it was checked: plain objects and arrays made here, its strings
 * and Uint8Arrays shared. That copy, not the module's value, is what leaves the isolate: the
 * module's value is read once (its getters run once), and nothing the module does after the
 * check (a getter answering otherwise the second time, the value changed before the turn's
 * crossing) reaches what is sent.
 */
export const checkAnswer = (value: unknown, what: string, answerBytes: number, sized?: { bytes: number }): unknown => checkValue(value, what, answerBytes, false, sized);

/**
 * checkAnswer for the params of a host call, before they are copied out of the isolate (the
 * copy is made of every reference: one 1 MiB string named by 2,000 calls of one turn, or by
 * 2,000 elements of one array, was 2 GB copied into the isolate host, outside memory_mb).
 * Also holds their strings to max_total_string_bytes (the host refuses more) counted from
 * their lengths, and lets 64-bit bigints through (the encoder takes those). Answers the
 * params' checked copy, which is what is sent; `sized.bytes` is set to their size (at least).
 */
export const checkParams = (value: unknown, method: string, frameBytes: number, sized?: { bytes: number }): unknown => checkValue(value, method + ": the params", frameBytes, true, sized);

const checkValue = (value: unknown, what: string, answerBytes: number, params: boolean, sized?: { bytes: number }): unknown => {
  let strings = 0;
  let low = 0;
  let high = 0;
  let exact = false;
  // The objects above the one being walked (at most MAX_PARAMS_DEPTH), for cycles; no prototype.
  const ancestors: object[] = [];
  setProto(ancestors, null);
  const fix = params ? "send " : "answer with ";
  const notPlain = (path: string, why: string) =>
    new AnswerError(
      "not_plain_data",
      what + " is not plain data: " + (path || "the value") + " is " + why + "; " + fix + "null, booleans, numbers, strings, Uint8Array, arrays and plain objects only",
    );
  const text = (s: string) => {
    if (params && !exact && (strings += s.length) > MAX_TOTAL_STRING_BYTES) throw tooManyStrings();
    if (exact) {
      const n = 5 + utf8Length(s, answerBytes - low);
      low += n;
      high += n;
    } else {
      low += 5 + s.length;
      high += 5 + 3 * s.length;
    }
  };
  const fixed = (n: number) => {
    low += n;
    high += n;
  };
  const tooManyStrings = () =>
    new AnswerError(
      "result_too_large",
      what + " hold more than " + MAX_TOTAL_STRING_BYTES + " bytes of strings, every reference to a string counted (send large data, such as a block, a file or an HTTP body, as a Uint8Array: strings cost the receiver far more): over the protocol limit max_total_string_bytes = " +
        MAX_TOTAL_STRING_BYTES + " (docs/protocol.md, section 3); send less at a time",
    );
  // Values visited (the message around the answer takes a few more: the encoder counts exactly).
  let values = 0;
  const tooMany = (path: string, count: number) =>
    new AnswerError(
      "result_too_large",
      what + " has more than " + MAX_VALUES + " values" + (count > 0 ? " (" + (path || "the value") + " is an array of " + count + " elements)" : "") +
        ": over the protocol limit max_values of one message (fixed; docs/protocol.md section 3); " + fix + "less, for example a page of the data and a key to ask for the next",
    );
  const walk = (v: unknown, path: string, depth: number): unknown => {
    if (low > answerBytes) return undefined;
    if (++values > MAX_VALUES) throw tooMany("", 0);
    if (v === null || v === undefined || typeof v === "boolean") {
      fixed(1);
      return v;
    }
    if (typeof v === "number") {
      fixed(9);
      return v;
    }
    if (typeof v === "string") {
      text(v);
      return v;
    }
    if (typeof v === "bigint") {
      if (!params || v < -(2n ** 63n) || v >= 2n ** 64n) throw notPlain(path, "a bigint" + (params ? " outside the 64-bit integer range" : "") + " (send it as a string or a number)");
      fixed(9);
      return v;
    }
    if (typeof v !== "object") throw notPlain(path, "a " + typeof v);
    if (isUint8Array(v)) {
      fixed(5 + (apply(byteLengthOf, v, []) as number));
      // Copied only within the limit: past it the check fails, and nothing is sent.
      return exact || low > answerBytes ? v : ownBytes(v);
    }
    if (params && depth >= MAX_PARAMS_DEPTH) {
      throw new AnswerError(
        "result_too_large",
        what + " is nested too deeply: over the protocol limit max_depth = " + MAX_FRAME_DEPTH +
          " of a frame (containers on the path to its deepest value, the request's own included; fixed; docs/protocol.md section 3); send a flatter value (too deep at " +
          (path || "the value") + ")",
      );
    }
    if (!params && depth >= MAX_DEPTH) {
      throw new AnswerError(
        "result_too_large",
        what + " is nested deeper than " + MAX_DEPTH + " levels at " + (path || "the value") +
          ": over the protocol limit max_depth of a data value (fixed; docs/protocol.md section 3); " + fix + "a flatter value",
      );
    }
    for (let i = 0; i < depth; i++) if (ancestors[i] === v) throw notPlain(path, "a cycle (it contains itself)");
    ancestors[depth] = v;
    let copy: object;
    if (isArray(v)) {
      // Before any element: a sparse array 4,294,967,295 long (a few bytes of memory) was walked
      // hole by hole up to the answer's bytes, 16 M steps, and cost its module its isolate (cpu_time_ms).
      if (values + v.length > MAX_VALUES) throw tooMany(path, v.length);
      fixed(5);
      const n = v.length;
      const list: unknown[] = [];
      // No prototype: nothing a module set on Array.prototype is reached by these writes (the
      // copy is only ever sent; the other side gets an ordinary array).
      setProto(list, null);
      for (let i = 0; i < n && low <= answerBytes; i++) list[i] = walk(v[i], exact ? "" : path + "[" + i + "]", depth + 1);
      copy = list;
    } else {
      const proto: unknown = protoOf(v);
      if (proto !== OBJECT_PROTO && proto !== null) {
        const ctor = (v as { constructor?: { name?: unknown } }).constructor;
        throw notPlain(path, "a " + (ctor?.name || "non-plain object"));
      }
      fixed(5);
      const record = v as Record<string, unknown>;
      const keys = keysOf(record);
      const fields: Record<string, unknown> = { __proto__: null } as unknown as Record<string, unknown>;
      for (let i = 0; i < keys.length && low <= answerBytes; i++) {
        const k = keys[i]!;
        text(k);
        fields[k] = walk(record[k], exact ? "" : path ? path + "." + k : k, depth + 1);
      }
      copy = fields;
    }
    ancestors[depth] = null as unknown as object;
    return copy;
  };
  const copy = walk(value, "", 0);
  if (low <= answerBytes && high > answerBytes) {
    // The copy, now: plain data, no getter or proxy of the module's left to run.
    exact = true;
    low = high = 0;
    values = 0;
    walk(copy, "", 0);
  }
  if (low > answerBytes) {
    throw new AnswerError(
      "result_too_large",
      what + " is larger than " + answerBytes + " bytes, more than one message of the module protocol carries (its frame limit, max_frame_bytes " +
        (answerBytes + 4096) + ", is fixed); " + fix + "less, for example a page of the data and a key to ask for the next",
    );
  }
  // At least what its copy out of the isolate takes (a character of a string is 1 to 3 bytes).
  if (sized) sized.bytes = low;
  return copy;
};
