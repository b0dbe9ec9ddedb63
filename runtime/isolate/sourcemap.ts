// Stack traces of a TypeScript module in the author's terms: the bundle (compile.ts) carries an
// inline source map, and positions in the bundle ("modhost://NAME/bundle.js:LINE:COL") are mapped
// back to the module's own files ("index.ts:12:5", paths relative to the module directory).
// Frames of anything else (the bootstrap, the isolate host, isolated-vm) are dropped: they mean
// nothing to the author and would show host paths.
//
// Work per trace is bounded whatever the module throws: at most MAX_STACK_CHARS of the text are
// looked at and at most MAX_FRAMES frames mapped (a binary search each, Node's SourceMap).

import { SourceMap, type SourceMapPayload } from "node:module";

/** Text after this many characters is cut before mapping (a module controls its error messages). */
const MAX_STACK_CHARS = 16 * 1024;
/** Frames after this many are left out (V8 records 10 by default; a module may raise Error.stackTraceLimit). */
export const MAX_FRAMES = 50;

const INLINE_MAP = /\n\/\/# sourceMappingURL=data:application\/json;base64,([A-Za-z0-9+/=]+)\s*$/;

/** The URL the bundle runs under in the isolate: a valid URI, so DevTools resolves the map's sources next to it. */
export function bundleUrl(module: string): string {
  return `modhost://${encodeURIComponent(module)}/bundle.js`;
}

/** The bundle without its inline source map comment, and the map (undefined if it has none). */
export function splitSourceMap(code: string): { code: string; map?: SourceMapPayload } {
  const m = INLINE_MAP.exec(code);
  if (!m) return { code };
  try {
    return { code: code.slice(0, m.index + 1), map: JSON.parse(Buffer.from(m[1]!, "base64").toString("utf8")) as SourceMapPayload };
  } catch {
    return { code };
  }
}

export class StackMapper {
  /** Parsed on the first stack to map: a module that never throws pays nothing at start. */
  private parsed: SourceMap | undefined;
  private readonly frame: RegExp;

  constructor(readonly url: string, private readonly payload: SourceMapPayload | undefined) {
    const escaped = url.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    this.frame = new RegExp(`${escaped}:(\\d+):(\\d+)`, "g");
  }

  /** "index.ts:12:5" for a 1-based position in the bundle; undefined when it maps to nothing. */
  position(line: number, column: number): string | undefined {
    if (!this.payload) return undefined;
    this.parsed ??= new SourceMap(this.payload);
    const e = this.parsed.findEntry(line - 1, column - 1) as { originalSource?: string; originalLine?: number; originalColumn?: number };
    if (!e || e.originalSource === undefined || e.originalLine === undefined) return undefined;
    return `${relativeSource(e.originalSource, this.url)}:${e.originalLine + 1}:${(e.originalColumn ?? 0) + 1}`;
  }

  /**
   * A stack (or any text holding one) in the module's terms: the module's frames mapped, every
   * other frame line dropped, the message lines kept as they are.
   */
  mapStack(text: string): string {
    let input = text;
    let cut = "";
    if (input.length > MAX_STACK_CHARS) {
      input = input.slice(0, MAX_STACK_CHARS);
      cut = "\n    [stack cut at " + MAX_STACK_CHARS + " characters]";
    }
    const out: string[] = [];
    let frames = 0;
    for (const line of input.split("\n")) {
      if (!/^\s+at /.test(line)) {
        out.push(this.mapPositions(line));
        continue;
      }
      if (!line.includes(this.url)) continue;
      if (++frames > MAX_FRAMES) continue;
      out.push(this.mapPositions(line));
    }
    if (frames > MAX_FRAMES) out.push(`    [${frames - MAX_FRAMES} more frame(s)]`);
    return out.join("\n") + cut;
  }

  /** The first of the module's own positions in a stack ("index.ts:12:5"), if any. */
  topFrame(stack: string): string | undefined {
    this.frame.lastIndex = 0;
    const m = this.frame.exec(stack.slice(0, MAX_STACK_CHARS));
    return m ? this.position(Number(m[1]), Number(m[2])) : undefined;
  }

  /** Bundle positions in one line replaced (at most MAX_FRAMES of them). */
  private mapPositions(line: string): string {
    if (!line.includes(this.url)) return line;
    let n = 0;
    return line.replace(this.frame, (whole, l: string, c: string) => (++n > MAX_FRAMES ? whole : (this.position(Number(l), Number(c)) ?? "<module bundle>")));
  }
}

/** A source of the map as the author knows it: relative to the module directory. */
function relativeSource(source: string, url: string): string {
  const base = url.slice(0, url.lastIndexOf("/") + 1);
  let s = source.startsWith(base) ? source.slice(base.length) : source;
  while (s.startsWith("./")) s = s.slice(2);
  return s;
}
