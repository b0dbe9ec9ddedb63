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
/** The protocol's max_values (protocol/codec.ts DEFAULT_BODY_LIMITS; written in when the bootstrap is built): values in one message. */
declare const __MODHOST_MAX_VALUES__: number;
export const MAX_VALUES = __MODHOST_MAX_VALUES__;
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

class AnswerError extends Error {
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
 */
export const checkAnswer = (value: unknown, what: string, answerBytes: number): void => {
  let low = 0;
  let high = 0;
  let exact = false;
  const ancestors = new Set<object>();
  const notPlain = (path: string, why: string) =>
    new AnswerError(
      "not_plain_data",
      what + " is not plain data: " + (path || "the value") + " is " + why + "; answer with null, booleans, numbers, strings, Uint8Array, arrays and plain objects only",
    );
  const text = (s: string) => {
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
  // Values visited (the message around the answer takes a few more: the encoder counts exactly).
  let values = 0;
  const tooMany = (path: string, count: number) =>
    new AnswerError(
      "result_too_large",
      what + " has more than " + MAX_VALUES + " values" + (count > 0 ? " (" + (path || "the value") + " is an array of " + count + " elements)" : "") +
        ": over the protocol limit max_values of one message (fixed; docs/protocol.md section 3); answer with less, for example a page of the data and a key to ask for the next",
    );
  const walk = (v: unknown, path: string, depth: number): void => {
    if (low > answerBytes) return;
    if (++values > MAX_VALUES) throw tooMany("", 0);
    if (v === null || v === undefined || typeof v === "boolean") {
      fixed(1);
      return;
    }
    if (typeof v === "number") {
      fixed(9);
      return;
    }
    if (typeof v === "string") {
      text(v);
      return;
    }
    if (typeof v === "bigint") throw notPlain(path, "a bigint (send it as a string or a number)");
    if (typeof v !== "object") throw notPlain(path, "a " + typeof v);
    if (v instanceof Uint8Array) {
      fixed(5 + v.byteLength);
      return;
    }
    if (depth >= MAX_DEPTH) {
      throw new AnswerError(
        "result_too_large",
        what + " is nested deeper than " + MAX_DEPTH + " levels at " + (path || "the value") +
          ": over the protocol limit max_depth of a data value (fixed; docs/protocol.md section 3); answer with a flatter value",
      );
    }
    if (ancestors.has(v)) throw notPlain(path, "a cycle (it contains itself)");
    ancestors.add(v);
    if (Array.isArray(v)) {
      // Before any element: a sparse array 4,294,967,295 long (a few bytes of memory) was walked
      // hole by hole up to the answer's bytes, 16 M steps, and cost its module its isolate (cpu_time_ms).
      if (values + v.length > MAX_VALUES) throw tooMany(path, v.length);
      fixed(5);
      for (let i = 0; i < v.length && low <= answerBytes; i++) walk(v[i], exact ? "" : path + "[" + i + "]", depth + 1);
    } else {
      const proto: unknown = Object.getPrototypeOf(v);
      if (proto !== Object.prototype && proto !== null) {
        const ctor = (v as { constructor?: { name?: unknown } }).constructor;
        throw notPlain(path, "a " + (ctor?.name || "non-plain object"));
      }
      fixed(5);
      const record = v as Record<string, unknown>;
      for (const k of Object.keys(record)) {
        if (low > answerBytes) break;
        text(k);
        walk(record[k], exact ? "" : path ? path + "." + k : k, depth + 1);
      }
    }
    ancestors.delete(v);
  };
  walk(value, "", 0);
  if (low <= answerBytes && high > answerBytes) {
    exact = true;
    low = high = 0;
    values = 0;
    walk(value, "", 0);
  }
  if (low > answerBytes) {
    throw new AnswerError(
      "result_too_large",
      what + " is larger than " + answerBytes + " bytes, more than one message of the module protocol carries (its frame limit, max_frame_bytes " +
        (answerBytes + 4096) + ", is fixed); answer with less, for example a page of the data and a key to ask for the next",
    );
  }
};
