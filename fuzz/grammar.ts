// A structure-aware generator for the protocol-grammar fuzz target: it walks each method's
// valibot `params` schema (capabilities/*.ts, through capabilities/families.ts METHODS) and
// builds parameters that the schema accepts but that are as large as it lets them be (maximum
// lengths and counts, boundary numbers, deep and wide plain values, unicode), or that cross one
// of its limits by the least step (`past`: the answer must name that limit). Nothing is listed
// by hand per method: a new method, or a new limit on an old one, is covered as it is declared.
//
// What a body may hold at all (docs/protocol.md 3.1: 1 MiB of strings, 65,536 values, 4096
// distinct map keys, 64 levels of data) is the budget every generated value is cut to, so
// that what is sent reaches the method instead of the decoder's refusal.

import * as v from "valibot";
import { MAX_VALUE_DEPTH } from "../protocol/codec.ts";
import type { Rng } from "./driver.ts";

/**
 * How a request's parameters are picked. `state` is `mixed` with strings from a few names, so
 * that a sequence builds state (trees, keys, series, subscriptions) that later reads cover.
 */
export type Mode = "min" | "max" | "past" | "mixed" | "state";
export const MODES: readonly Mode[] = ["min", "max", "past", "mixed"];
const NAMES = ["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7"];

export interface Generated {
  params: Record<string, unknown>;
  /** For `past`: the limit crossed (the requirement, as the answer's message must name it). */
  crossed?: { path: string; limit: string };
}

/** What one body may still hold (a little under the protocol's limits: the envelope takes some). */
interface Budget {
  stringBytes: number;
  values: number;
  keys: number;
  /** Binary bytes (the frame is at most 16 MiB). */
  bytes: number;
}

const newBudget = (): Budget => ({ stringBytes: 1024 * 1024 - 4096, values: 65_536 - 512, keys: 4096 - 128, bytes: 15 * 1024 * 1024 });

interface Node {
  type: string;
  pipe?: Node[];
  kind?: string;
  requirement?: unknown;
  message?: unknown;
  entries?: Record<string, Node>;
  wrapped?: Node;
  item?: Node;
  options?: unknown[];
  key?: Node | string;
  value?: Node;
  literal?: unknown;
}

/** A schema's own constraints: its actions, through nested pipes and descriptions. */
interface Limits {
  base: Node;
  minLength?: number;
  maxLength?: number;
  minValue?: number;
  maxValue?: number;
  integer?: boolean;
  regex: RegExp[];
  /** Numbers named in check messages ("at most 4000000 bytes"): limits the schema checks in code. */
  checked: number[];
  /** The schema as a whole (pipe included), to test a candidate with. */
  whole: Node;
}

function limitsOf(schema: Node): Limits {
  const l: Limits = { base: schema, regex: [], checked: [], whole: schema };
  let s: Node | undefined = schema;
  const seen = new Set<Node>();
  while (s && !seen.has(s)) {
    seen.add(s);
    l.base = s;
    const pipe: Node[] = s.pipe ?? [];
    let next: Node | undefined;
    for (const a of pipe) {
      if (a.kind === "schema") {
        if (a !== s) next = a;
        continue;
      }
      const r = a.requirement;
      switch (a.type) {
        case "min_length": l.minLength = Math.max(l.minLength ?? 0, r as number); break;
        case "max_length": l.maxLength = Math.min(l.maxLength ?? Infinity, r as number); break;
        case "min_value": l.minValue = Math.max(l.minValue ?? -Infinity, r as number); break;
        case "max_value": l.maxValue = Math.min(l.maxValue ?? Infinity, r as number); break;
        case "integer": l.integer = true; break;
        case "regex": l.regex.push(r as RegExp); break;
        case "check": case "raw_check": {
          const m = typeof a.message === "string" ? a.message.match(/\d[\d_]*/g) : null;
          for (const n of m ?? []) l.checked.push(Number(n.replace(/_/g, "")));
          break;
        }
      }
    }
    s = next;
  }
  return l;
}

/** Strings the schema's code reads (URLs, paths): a value it can accept, to build on. */
const FIELD_HINTS: Record<string, (n: number, rng: Rng) => string> = {
  url: (n) => `http://fuzz.invalid:8080/${"a".repeat(Math.max(0, n - 26))}`,
  path: (n, rng) => Array.from({ length: Math.max(1, Math.floor(n / 8)) }, () => rng.pick(["dir", "a.txt", "ü-ñ", "x_y", "sub"])).join("/").slice(0, Math.max(1, n)),
};

const ALPHABETS = ["0123456789abcdef", "abcdefghijklmnopqrstuvwxyz", "abc_XYZ-019.", "ABCDEF0123456789"];
/** Characters a host must carry as they are: multi-byte, control, bidirectional, NUL. */
const ODD = ["é", "ü", "€", "中", "𝄞", "😀", "\u0000", "\u001b[31m", "\n", "\u202e", "\ufeff", "\"", "\\", "%00", "../"];

function utf8Bytes(s: string): number {
  return Buffer.byteLength(s, "utf8");
}

export class ParamsGenerator {
  private budget = newBudget();
  private crossed?: { path: string; limit: string };
  private mode: Mode = "mixed";

  constructor(private readonly rng: Rng) {
    // xorshift's first outputs from a small seed are alike: skip them.
    for (let i = 0; i < 8; i++) rng.next();
  }

  /** Parameters for `schema` (a method's params object) in `mode`. */
  params(schema: v.GenericSchema, mode: Mode): Generated {
    this.budget = newBudget();
    this.crossed = undefined;
    this.mode = mode;
    const value = this.gen(schema as unknown as Node, "params", 1, "");
    const params = value !== null && typeof value === "object" && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
    return { params, ...(this.crossed ? { crossed: this.crossed } : {}) };
  }

  /** Whether this node may be the one whose limit `past` crosses (the first eligible one, by chance). */
  private cross(path: string, limit: number | string): boolean {
    if (this.mode !== "past" || this.crossed || this.rng.below(3) === 0) return false;
    this.crossed = { path, limit: String(limit) };
    return true;
  }

  private size(max: number | undefined, min = 0, unbounded = 4096): number {
    const top = max === undefined || !Number.isFinite(max) ? unbounded : max;
    switch (this.mode) {
      case "min": return min;
      case "max": case "past": return top;
      default: return this.rng.pick([min, min, min + 1, Math.min(top, min + 8), Math.floor((min + top) / 2), top]);
    }
  }

  private gen(schema: Node, path: string, depth: number, field: string): unknown {
    const l = limitsOf(schema);
    const s = l.base;
    this.budget.values--;
    switch (s.type) {
      case "optional": case "nullable": case "nullish": {
        if (this.mode === "min" || (this.mode === "mixed" && this.rng.below(3) === 0)) return s.type === "nullable" ? null : undefined;
        return this.gen(s.wrapped!, path, depth, field);
      }
      case "object": {
        const out: Record<string, unknown> = {};
        for (const [k, e] of Object.entries(s.entries ?? {})) {
          this.budget.keys--;
          this.budget.stringBytes -= k.length;
          const val = this.gen(e, `${path}.${k}`, depth + 1, k);
          if (val !== undefined) out[k] = val;
        }
        return out;
      }
      case "array": {
        const max = l.maxLength;
        let n = this.size(max, l.minLength ?? 0, 4096);
        if (max !== undefined && this.cross(path, max)) n = max + 1;
        const out: unknown[] = [];
        for (let i = 0; i < n && this.budget.values > 64 && this.budget.stringBytes > 0; i++) out.push(this.gen(s.item!, `${path}[]`, depth + 1, field));
        return out;
      }
      case "record": {
        const n = this.size(undefined, 0, Math.min(this.budget.keys, 1024));
        const out: Record<string, unknown> = {};
        const keySchema = s.key as Node;
        for (let i = 0; i < n && this.budget.keys > 8 && this.budget.values > 64 && this.budget.stringBytes > 2048; i++) {
          const k = `${this.gen(keySchema, `${path}{key}`, depth + 1, "key")}${i}`;
          this.budget.keys--;
          this.budget.stringBytes -= utf8Bytes(k);
          out[k] = this.gen(s.value!, `${path}{${i}}`, depth + 1, field);
        }
        return out;
      }
      case "string": return this.string(l, path, field);
      case "number": return this.number(l, path);
      case "boolean": return this.rng.below(2) === 0;
      case "literal": return s.literal;
      case "picklist": {
        if (this.cross(path, "")) return "no_such_option";
        return this.rng.pick(s.options as string[]);
      }
      case "union": case "variant": {
        const options = s.options as Node[];
        return this.gen(this.rng.pick(options), path, depth, field);
      }
      case "custom": return this.custom(l, path);
      case "unknown": case "any": return this.plain(MAX_VALUE_DEPTH - depth - 2);
      default: return null;
    }
  }

  private string(l: Limits, path: string, field: string): string {
    const min = l.minLength ?? 0;
    const hint = FIELD_HINTS[field];
    if (l.regex.length > 0) return this.regexString(l, path);
    if (this.mode === "state" && !hint) return this.rng.pick(NAMES);
    let n = this.size(l.maxLength, min, this.rng.pick([64, 1024, 4096, 65_536, 1024 * 1024]));
    if (l.maxLength !== undefined && this.cross(path, l.maxLength)) n = l.maxLength + 1;
    n = Math.max(0, Math.min(n, this.budget.stringBytes));
    const s = hint ? hint(n, this.rng) : this.text(n);
    this.budget.stringBytes -= utf8Bytes(s);
    return s;
  }

  /** `n` characters (at most ~n UTF-8 bytes): mostly ASCII, with odd characters, by mode. */
  private text(n: number): string {
    if (n <= 0) return "";
    if (this.mode === "min" || this.rng.below(2) === 0) return "k".repeat(n);
    const odd = this.rng.pick(ODD);
    const chunk = `${odd}x`;
    const reps = Math.max(1, Math.floor(n / utf8Bytes(chunk)));
    return chunk.repeat(reps).slice(0, n);
  }

  /** The longest (max, past) or shortest (min) string of one alphabet that every regex of `l` accepts. */
  private regexString(l: Limits, path: string): string {
    const lengths = [1024, 256, 130, 128, 127, 66, 65, 64, 63, 32, 2, 1, 0];
    if (this.mode === "min" || (this.mode === "mixed" && this.rng.below(2) === 0)) lengths.reverse();
    const ok = (s: string) => l.regex.every((r) => r.test(s)) && (l.maxLength === undefined || s.length <= l.maxLength) && s.length >= (l.minLength ?? 0);
    for (const n of lengths) {
      for (const alphabet of ALPHABETS) {
        let s = "";
        for (let i = 0; i < n; i++) s += alphabet[(i * 7 + this.rng.below(alphabet.length)) % alphabet.length];
        if (ok(s)) {
          if (l.maxLength !== undefined && l.maxLength > s.length && this.mode !== "min") {
            // A maxLength larger than the lengths tried (hex of a block): fill it, if the regex allows.
            const long = s.slice(0, 2).repeat(Math.floor(Math.min(l.maxLength, this.budget.stringBytes) / 2));
            if (long.length > s.length && ok(long)) s = long;
          }
          if (l.maxLength !== undefined && s.length === l.maxLength && this.cross(path, l.maxLength)) s += s.slice(0, 2);
          this.budget.stringBytes -= s.length;
          return s;
        }
      }
    }
    return "";
  }

  private number(l: Limits, path: string): number {
    const min = l.minValue ?? (l.integer ? Number.MIN_SAFE_INTEGER : -Number.MAX_VALUE);
    const max = l.maxValue ?? (l.integer ? Number.MAX_SAFE_INTEGER : Number.MAX_VALUE);
    if (l.maxValue !== undefined && this.cross(path, l.maxValue)) return l.maxValue + 1;
    if (l.minValue !== undefined && this.cross(path, l.minValue)) return l.minValue - 1;
    switch (this.mode) {
      case "min": return min;
      case "max": case "past": return max;
      default: {
        const picks = [min, max, 0, 1, -1, 0.5, 2 ** 31, 2 ** 32 + 1, 1e-300, -0].filter((x) => x >= min && x <= max && (!l.integer || Number.isInteger(x)));
        return picks.length ? this.rng.pick(picks) : min;
      }
    }
  }

  /** Binary or hex, as large as the schema's check allows (or one byte more, past it). */
  private custom(l: Limits, path: string): unknown {
    const cap = l.checked.length ? Math.max(...l.checked) : 1024 * 1024;
    let n = this.size(cap, 0, cap);
    if (l.checked.length && this.cross(path, cap)) n = cap + 1;
    n = Math.max(0, Math.min(n, this.budget.bytes));
    this.budget.bytes -= n;
    const bytes = new Uint8Array(n);
    for (let i = 0; i < Math.min(n, 256); i++) bytes[i] = this.rng.below(256);
    const candidate = this.rng.below(4) === 0 && n * 2 <= this.budget.stringBytes ? Buffer.from(bytes).toString("hex") : bytes;
    if (v.safeParse(l.whole as unknown as v.GenericSchema, candidate).success || this.crossed?.path === path) {
      if (typeof candidate === "string") this.budget.stringBytes -= candidate.length;
      return candidate;
    }
    return bytes;
  }

  /**
   * Plain data (a storage value, an event payload, a module call's params): deep, wide, long
   * or binary, within the body's budget and `depthLeft` levels.
   */
  private plain(depthLeft: number): unknown {
    const b = this.budget;
    const low = b.stringBytes < 16_384 || b.values < 2048 || b.keys < 64;
    const kind = this.mode === "min" || low ? "empty" : this.rng.pick(["deep", "wide", "map", "string", "binary", "small", "mixed"] as const);
    switch (kind) {
      case "empty": return this.rng.pick([null, "", 0, [], {}]);
      case "deep": {
        let x: unknown = this.rng.pick([1, "é", null]);
        for (let i = 0; i < Math.max(0, depthLeft - 1); i++) x = i % 2 ? [x] : { d: x };
        b.values -= depthLeft;
        return x;
      }
      case "wide": {
        const n = Math.max(0, b.values - 256);
        b.values -= n;
        return Array.from({ length: n }, (_, i) => i % 3 === 0 ? i : i % 3 === 1 ? -i * 1.5 : null);
      }
      case "map": {
        const n = Math.max(0, b.keys - 16);
        b.keys -= n;
        b.values -= 2 * n;
        b.stringBytes -= 6 * n;
        const out: Record<string, number> = {};
        for (let i = 0; i < n; i++) out[`k${i}`] = i;
        return out;
      }
      case "string": {
        const s = this.text(Math.max(0, b.stringBytes - 1024));
        b.stringBytes -= utf8Bytes(s);
        return s;
      }
      case "binary": {
        const n = Math.min(b.bytes, this.rng.pick([1024 * 1024, 1024 * 1024 + 1, 4 * 1024 * 1024, 65_536]));
        b.bytes -= n;
        return new Uint8Array(Math.max(0, n));
      }
      case "small": return { a: 1, b: "x", c: [true, null, 2.5], d: new Uint8Array(3) };
      default:
        b.values -= 64 * 5;
        b.stringBytes -= 64 * 36;
        return { list: Array.from({ length: 64 }, (_, i) => ({ i, s: "é".repeat(16) })), deep: this.plain(Math.min(depthLeft - 1, 8)) };
    }
  }
}
