// Text helpers of the bootstrap (runs inside the isolate: no Node, no imports at run time).

/** Anything as log text: strings as they are, errors with their stack, the rest as JSON. */
export const toText = (a: unknown): string => {
  if (typeof a === "string") return a;
  if (a instanceof Error) return a.stack || a.message;
  try {
    return JSON.stringify(a);
  } catch {
    return String(a);
  }
};

/** A log line's fields as plain data (a JSON round trip), or undefined when they are not an object or cannot be. */
export const plainFields = (f: unknown): Record<string, unknown> | undefined => {
  if (!f || typeof f !== "object" || Array.isArray(f)) return undefined;
  try {
    return JSON.parse(JSON.stringify(f)) as Record<string, unknown>;
  } catch {
    return undefined;
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
