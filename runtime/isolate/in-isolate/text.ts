// Text helpers of the bootstrap (runs inside the isolate: no Node, no imports at run time).

// Taken before any module code runs (a module shares the isolate and could replace them).
const stringify = JSON.stringify;
const parse = JSON.parse;
const isArray = Array.isArray;

/**
 * Characters of JSON one value may become for a log message or an error's text, and for a log
 * line's fields. JSON text is made of every reference: one 1 MiB string named by 1,000
 * elements of an array (or returned by the toJSON of one object named 1,000 times) was a
 * gigabyte of JSON built from a megabyte, for one log line. The count is kept as the JSON is
 * made (a replacer sees each value after its toJSON), and the work stops past it.
 */
const MAX_TEXT_JSON_CHARS = 1024 * 1024;
export const MAX_LOG_FIELDS_CHARS = 256 * 1024;
const TOO_LARGE = { tooLarge: true };

/** JSON.stringify(a), or TOO_LARGE once more than maxChars (counted from keys and strings) would be made. */
const boundedJson = (a: unknown, maxChars: number): string | undefined | typeof TOO_LARGE => {
  let chars = 0;
  const count = (key: string, value: unknown): unknown => {
    chars += key.length + 8;
    if (typeof value === "string") chars += value.length;
    if (chars > maxChars) throw TOO_LARGE;
    return value;
  };
  try {
    return stringify(a, count);
  } catch (err) {
    if (err === TOO_LARGE) return TOO_LARGE;
    throw err;
  }
};

/** What toText says of a value whose every way to text throws (getters, toJSON, Symbol.toPrimitive, proxy traps). */
export const UNSHOWABLE = "(a value that cannot be shown as text: its getters, toJSON or conversion threw)";

/**
 * Anything as log text: strings as they are, errors with their stack, the rest as JSON. Never
 * throws: a module's value may have a `stack` getter, `toJSON` or `Symbol.toPrimitive` that
 * throws, or be a proxy whose every trap does (the caller, logging or answering an error,
 * must not fail because of it).
 */
export const toText = (a: unknown): string => {
  try {
    if (typeof a === "string") return a;
    if (a instanceof Error) {
      const text = a.stack || a.message;
      return typeof text === "string" ? text : String(text);
    }
    const json = boundedJson(a, MAX_TEXT_JSON_CHARS);
    if (json === TOO_LARGE) return "(a value of more than " + MAX_TEXT_JSON_CHARS + " characters as JSON, not shown: MAX_TEXT_JSON_CHARS)";
    if (json !== undefined) return json as string;
  } catch {
    // one of its ways to text threw: try the plainest
  }
  try {
    // Not String() of an array: it joins every element, holes included, so a sparse array
    // 4,294,967,295 long (whose JSON is refused at once: "Invalid string length") held the
    // isolate until cpu_time_ms stopped it, for a log line.
    if (isArray(a)) return "(an array of " + a.length + " elements that cannot be shown as text)";
    return String(a);
  } catch {
    return UNSHOWABLE;
  }
};

/**
 * A log line's fields as plain data (a JSON round trip), or undefined when they are not an
 * object or cannot be; and the length of their JSON (0 when none, -1 when they were more than
 * MAX_LOG_FIELDS_CHARS: dropped, and the work stopped there).
 */
export const plainFieldsSized = (f: unknown): [Record<string, unknown> | undefined, number] => {
  if (!f || typeof f !== "object" || isArray(f)) return [undefined, 0];
  try {
    const json = boundedJson(f, MAX_LOG_FIELDS_CHARS);
    if (json === TOO_LARGE) return [undefined, -1];
    if (typeof json !== "string") return [undefined, 0];
    return [parse(json) as Record<string, unknown>, json.length];
  } catch {
    return [undefined, 0];
  }
};

const ASCII = /^[\x00-\x7f]*$/;

/** UTF-8 length of s, or some length past room once it is sure to be past it. */
export const utf8Length = (s: string, room: number): number => {
  if (s.length > room) return s.length;
  if (ASCII.test(s)) return s.length; // the usual case, at the regular expression engine's speed
  let n = 0;
  for (let i = 0; i < s.length && n <= room; i++) {
    const c = s.charCodeAt(i);
    n += c < 0x80 ? 1 : c < 0x800 ? 2 : c >= 0xd800 && c <= 0xdbff ? (i++, 4) : 3;
  }
  return n;
};
