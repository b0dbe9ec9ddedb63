// Where a key of a TOML file is written: `locate` finds the line and column of a key path
// (or array element) in the source, for schema errors that smol-toml cannot place (it gives
// positions for syntax errors only). A small, tolerant tokenizer of already parsed TOML; it
// never throws, and a path it cannot find falls back to the nearest enclosing key.

export type TomlPath = readonly (string | number)[];

export interface Position {
  line: number;
  column: number;
}

/** Deepest nesting of tables and arrays (dotted keys count: a.b.c = 1 is 3 deep); readToml refuses deeper files (host/toml.ts). */
export const MAX_TOML_DEPTH = 64;

let cache: { source: string; spots: Map<string, Position> } | undefined;

/**
 * Line and column of the key at `path` (or of the array element, for a numeric last
 * segment) in `source`. Falls back to the nearest enclosing key or table header that can be
 * found; undefined when not even the first segment is written anywhere. Never throws.
 */
export function locate(source: string, path: TomlPath): Position | undefined {
  try {
    if (cache?.source !== source) cache = { source, spots: new Scanner(source).scan() };
    for (let n = path.length; n > 0; n--) {
      const hit = cache.spots.get(JSON.stringify(path.slice(0, n)));
      if (hit) return hit;
    }
  } catch {
    // A locator bug must never hide the real error; the caller reports without a position.
  }
  return undefined;
}

interface KeyPart {
  name: string;
  at: number;
}

/**
 * Records the position of every key path (table headers, dotted keys, inline-table keys)
 * and every array element. It assumes the source already parsed; on anything unexpected it
 * skips ahead rather than failing, and every loop makes progress.
 */
class Scanner {
  private i = 0;
  private readonly lineStarts: number[] = [0];
  private readonly spots = new Map<string, Position>();
  /** Arrays of tables ([[x]]) seen so far -> index of their current element. */
  private readonly arrayTables = new Map<string, number>();

  constructor(private readonly s: string) {
    for (let k = 0; k < s.length; k++) if (s[k] === "\n") this.lineStarts.push(k + 1);
    if (s.startsWith("\uFEFF")) this.i = 1;
  }

  scan(): Map<string, Position> {
    let table: (string | number)[] = [];
    while (this.i < this.s.length) {
      const start = this.i;
      this.skipBlank(true);
      if (this.i >= this.s.length) break;
      if (this.s[this.i] === "[") table = this.header();
      else this.keyValue(table);
      this.skipToNextLine();
      if (this.i === start) this.i++;
    }
    return this.spots;
  }

  /** `[a.b."c-d"]` or `[[x.y]]`: returns the path of the table that follows. */
  private header(): (string | number)[] {
    const isArray = this.s[this.i + 1] === "[";
    this.i += isArray ? 2 : 1;
    const keys = this.key();
    const out: (string | number)[] = [];
    keys.forEach((k, j) => {
      out.push(k.name);
      const last = j === keys.length - 1;
      this.record(out, k.at, last && !isArray);
      if (out.length > MAX_TOML_DEPTH + 1) return;
      if (last && isArray) {
        const id = JSON.stringify(out);
        const index = (this.arrayTables.get(id) ?? -1) + 1;
        this.arrayTables.set(id, index);
        out.push(index);
        this.record(out, k.at, true);
      } else {
        // [fruits.variety] after [[fruits]] means the variety of the latest fruit.
        const index = this.arrayTables.get(JSON.stringify(out));
        if (index !== undefined) out.push(index);
      }
    });
    return out;
  }

  /** `a.b."c" = value`, at top level or inside an inline table. */
  private keyValue(table: readonly (string | number)[]): void {
    const keys = this.key();
    if (keys.length === 0) return;
    const path = [...table];
    keys.forEach((k, j) => {
      path.push(k.name);
      this.record(path, k.at, j === keys.length - 1);
    });
    this.skipBlank(false);
    if (this.s[this.i] !== "=") return;
    this.i++;
    this.skipBlank(false);
    this.value(path);
  }

  /** A dotted key; each part with the offset where it is written. */
  private key(): KeyPart[] {
    const parts: KeyPart[] = [];
    for (;;) {
      this.skipBlank(false);
      const at = this.i;
      const c = this.s[this.i];
      let name: string;
      if (c === '"') name = this.basicString();
      else if (c === "'") name = this.literalString();
      else {
        const m = /^[^\s=.[\]"'#,{}]+/.exec(this.s.slice(this.i, this.i + 1024));
        if (!m) break;
        name = m[0];
        this.i += name.length;
      }
      parts.push({ name, at });
      this.skipBlank(false);
      if (this.s[this.i] !== ".") break;
      this.i++;
    }
    return parts;
  }

  private value(path: (string | number)[]): void {
    const s = this.s;
    if (s.startsWith('"""', this.i) || s.startsWith("'''", this.i)) this.multilineString();
    else if (s[this.i] === '"') this.basicString();
    else if (s[this.i] === "'") this.literalString();
    else if (s[this.i] === "[") this.array(path);
    else if (s[this.i] === "{") this.inlineTable(path);
    else while (this.i < s.length && !",]}#\r\n".includes(s[this.i]!)) this.i++;
  }

  private array(path: (string | number)[]): void {
    this.i++;
    for (let index = 0; this.i < this.s.length; index++) {
      const start = this.i;
      this.skipBlank(true);
      if (this.s[this.i] === "]") break;
      this.record([...path, index], this.i, true);
      this.value([...path, index]);
      this.skipBlank(true);
      if (this.s[this.i] === ",") this.i++;
      else if (this.s[this.i] !== "]" && this.i === start) return;
    }
    if (this.s[this.i] === "]") this.i++;
  }

  private inlineTable(path: (string | number)[]): void {
    this.i++;
    while (this.i < this.s.length) {
      const start = this.i;
      this.skipBlank(true); // TOML 1.1 allows newlines and comments inside inline tables
      if (this.s[this.i] === "}") break;
      this.keyValue(path);
      this.skipBlank(true);
      if (this.s[this.i] === ",") this.i++;
      else if (this.s[this.i] !== "}" && this.i === start) return;
    }
    if (this.s[this.i] === "}") this.i++;
  }

  /** "..." with escapes; returns the decoded text. */
  private basicString(): string {
    let out = "";
    this.i++;
    while (this.i < this.s.length) {
      const c = this.s[this.i]!;
      if (c === '"' || c === "\n") {
        if (c === '"') this.i++;
        break;
      }
      if (c === "\\") {
        out += this.escape();
        continue;
      }
      out += c;
      this.i++;
    }
    return out;
  }

  private escape(): string {
    const e = this.s[this.i + 1] ?? "";
    const simple: Record<string, string> = { b: "\b", t: "\t", n: "\n", f: "\f", r: "\r", e: "\x1b", '"': '"', "\\": "\\" };
    const hexLen = e === "x" ? 2 : e === "u" ? 4 : e === "U" ? 8 : 0;
    if (hexLen > 0) {
      const hex = this.s.slice(this.i + 2, this.i + 2 + hexLen);
      this.i += 2 + hexLen;
      const cp = Number.parseInt(hex, 16);
      return Number.isInteger(cp) && cp <= 0x10ffff ? String.fromCodePoint(cp) : "";
    }
    this.i += 2;
    return simple[e] ?? e;
  }

  private literalString(): string {
    const start = ++this.i;
    while (this.i < this.s.length && this.s[this.i] !== "'" && this.s[this.i] !== "\n") this.i++;
    const text = this.s.slice(start, this.i);
    if (this.s[this.i] === "'") this.i++;
    return text;
  }

  private multilineString(): void {
    const quote = this.s.slice(this.i, this.i + 3);
    this.i += 3;
    while (this.i < this.s.length) {
      if (quote === '"""' && this.s[this.i] === "\\") {
        this.i += 2;
        continue;
      }
      if (this.s.startsWith(quote, this.i)) {
        this.i += 3;
        // Up to two quotes may directly precede the closing delimiter: """a"""""
        for (let extra = 0; extra < 2 && this.s[this.i] === quote[0]; extra++) this.i++;
        return;
      }
      this.i++;
    }
  }

  /** Skip spaces and tabs; with `lines`, also newlines and comments. */
  private skipBlank(lines: boolean): void {
    const s = this.s;
    while (this.i < s.length) {
      const c = s[this.i];
      if (c === " " || c === "\t") this.i++;
      else if (lines && (c === "\n" || c === "\r")) this.i++;
      else if (lines && c === "#") this.skipComment();
      else break;
    }
  }

  private skipComment(): void {
    while (this.i < this.s.length && this.s[this.i] !== "\n") this.i++;
  }

  /** After a statement: skip the rest of the line (trailing blanks, a comment, anything left). */
  private skipToNextLine(): void {
    while (this.i < this.s.length && this.s[this.i] !== "\n") this.i++;
  }

  private record(path: readonly (string | number)[], offset: number, force: boolean): void {
    // Deeper paths are refused by readToml; not recording them keeps a long dotted key linear.
    if (path.length > MAX_TOML_DEPTH + 1) return;
    const id = JSON.stringify(path);
    if (force || !this.spots.has(id)) this.spots.set(id, this.position(offset));
  }

  private position(offset: number): Position {
    let lo = 0;
    let hi = this.lineStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.lineStarts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return { line: lo + 1, column: offset - this.lineStarts[lo]! + 1 };
  }
}
