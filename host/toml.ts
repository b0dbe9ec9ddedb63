// Reading TOML files and reporting problems in them with file:line:column.
//
// smol-toml gives positions for syntax errors only. For schema errors (a wrong value at
// modules.grants.x.allow[1]) `locate` finds where that key or array element is written, by
// scanning the source with a small, tolerant TOML tokenizer (host/toml-locate.ts). `Checker`
// collects every schema problem of one file, located, and throws them together as one
// ConfigError; the schemas themselves are valibot (host/schema.ts maps their issues here).

import { ModuleFileError, readModuleFile } from "../runtime/module-file.ts";
import { parse, TomlError } from "smol-toml";
import { CLOSEST_MAX_CELLS, closest } from "../capabilities/catalogue.ts";
import { ConfigError, type ConfigProblem } from "./errors.ts";
import { locate, MAX_TOML_DEPTH, type TomlPath } from "./toml-locate.ts";

export { locate, MAX_TOML_DEPTH, type TomlPath };

// ---------------------------------------------------------------------------------------
// Reading

/** Largest modhost.toml read (the operator's own file): checked before reading. */
export const MAX_TOML_BYTES = 1024 * 1024;

/**
 * Largest module.toml read: checked before reading. A module's author writes it, and every
 * discovery of the modules (each start, load, unload and reload) parses it on the host's loop:
 * a TOML file costs ~0.1-0.5 ms per KiB to parse at load 4 (640 KiB of small tables: 170-990 ms;
 * 32 KiB: 1-5 ms). The shipped modules and templates have at most 4.2 KB; 16 maintainer
 * signatures (MAX_MAINTAINER_SIGNATURES) are ~2.5 KB.
 */
export const MAX_MANIFEST_BYTES = 32 * 1024;

/** What readToml reads: the operator's modhost.toml or a module's manifest. */
export interface TomlLimit {
  maxBytes: number;
  name: "MAX_TOML_BYTES" | "MAX_MANIFEST_BYTES";
  what: string;
}

const CONFIG_LIMIT: TomlLimit = { maxBytes: MAX_TOML_BYTES, name: "MAX_TOML_BYTES", what: "a modhost TOML file may have" };

/** The limit of a module.toml. */
export const MANIFEST_LIMIT: TomlLimit = { maxBytes: MAX_MANIFEST_BYTES, name: "MAX_MANIFEST_BYTES", what: "a module.toml may have" };

const TOML_HINT = "keep large data out of TOML files: a module can read it from its data directory";

export async function readToml(file: string, limit: TomlLimit = CONFIG_LIMIT): Promise<{ data: Record<string, unknown>; source: string }> {
  let source: string;
  try {
    // A regular file only, read at most to the limit (a FIFO module.toml hung the load, and a
    // file that grew after its size was checked was read whole).
    source = (await readModuleFile(file, { ...limit, fix: "" }, "the file")).bytes.toString("utf8");
  } catch (err) {
    if (!(err instanceof ModuleFileError)) throw new ConfigError([readProblem(file, err)]);
    if (err.code) throw new ConfigError([readProblem(file, err)]);
    throw new ConfigError([{ file, message: err.message, hint: err.reason === "too_large" ? TOML_HINT : "replace it with a regular file" }]);
  }
  let data: Record<string, unknown>;
  try {
    data = parse(source) as Record<string, unknown>;
  } catch (err) {
    if (!(err instanceof TomlError)) throw err;
    // smol-toml's message is "Invalid TOML document: <what>\n\n<code frame>".
    const what = (err.message.split("\n")[0] ?? err.message).replace(/^Invalid TOML document:\s*/, "");
    throw new ConfigError([{ file, line: err.line, column: err.column, excerpt: err.codeblock, ...explainSyntax(source, err.line, err.column, what) }]);
  }
  const deep = deeperThan(data, MAX_TOML_DEPTH);
  if (deep) {
    const shown = deep.slice(0, 6);
    const problem: ConfigProblem = {
      file, path: `${formatPath(shown)}...`,
      message: `tables and arrays nest more than ${MAX_TOML_DEPTH} deep (MAX_TOML_DEPTH)`,
      hint: "flatten the structure (dotted keys such as a.b.c = 1 nest one level per part)",
    };
    Object.assign(problem, locate(source, shown));
    throw new ConfigError([problem]);
  }
  return { data, source };
}

/** The path to a value nested more than `max` tables/arrays deep, or undefined. Iterative: no recursion on hostile depth. */
export function deeperThan(root: unknown, max: number): (string | number)[] | undefined {
  const stack: Array<{ value: unknown; path: (string | number)[] }> = [{ value: root, path: [] }];
  while (stack.length > 0) {
    const { value, path } = stack.pop()!;
    if (value === null || typeof value !== "object" || value instanceof Date) continue;
    if (path.length > max) return path;
    const entries: [string | number, unknown][] = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
    for (const [k, v] of entries) if (v !== null && typeof v === "object") stack.push({ value: v, path: [...path, k] });
  }
  return undefined;
}

function readProblem(file: string, err: unknown): ConfigProblem {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return { file, message: "file not found", hint: "check the path, or create the file (see docs/operator-guide.md)" };
  if (code === "EISDIR") return { file, message: "is a directory, not a file", hint: "name the TOML file itself" };
  if (code === "EACCES" || code === "EPERM") return { file, message: "permission denied", hint: "make the file readable by the user running modhost" };
  return { file, message: `cannot read file: ${(err as Error).message}` };
}

/** Bare words that are TOML values (booleans, infinities, not-a-number). */
const TOML_WORDS = new Set(["true", "false", "inf", "nan", "+inf", "-inf", "+nan", "-nan"]);

/**
 * The message and fix for a TOML syntax error at `line`:`column` (1-based), from what the
 * parser said and the source around it: an unclosed array or inline table is named where it
 * opened, a bare word where a value belongs is told to be quoted.
 */
function explainSyntax(source: string, line: number, column: number, what: string): { message: string; hint: string } {
  const lines = source.split("\n");
  const text = lines[line - 1] ?? "";
  const open = unclosedBefore(lines, line, column);
  if (open && open.line < line) {
    const kind = open.char === "[" ? "array" : "inline table";
    return {
      message: `TOML syntax error: the ${kind} opened at line ${open.line}, column ${open.column} is not closed (${what})`,
      hint: `close it with "${open.char === "[" ? "]" : "}"}" after its last element (line ${open.line}: ${lines[open.line - 1]!.trim().slice(0, 60)})`,
    };
  }
  // key = word: a string without its quotes (log_level = info).
  const bare = /^\s*((?:[A-Za-z0-9_-]+|"[^"]*")(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"))*)\s*=\s*([A-Za-z_][A-Za-z0-9_.:/+-]*)\s*(?:#.*)?$/.exec(text);
  if (bare && !TOML_WORDS.has(bare[2]!)) {
    return {
      message: `TOML syntax error: ${bare[2]} is a bare word, not a TOML value (${what})`,
      hint: `quote it: ${bare[1]} = "${bare[2]}"`,
    };
  }
  return { message: `TOML syntax error: ${what}`, hint: syntaxHint(what) };
}

/**
 * The innermost array or inline table still open at `line`:`column`, found by a scan that
 * skips strings, comments and table headers; undefined when every one opened was closed.
 * Bounded by the file (readToml caps it at MAX_TOML_BYTES).
 */
function unclosedBefore(lines: string[], line: number, column: number): { line: number; column: number; char: string } | undefined {
  const stack: Array<{ line: number; column: number; char: string }> = [];
  for (let l = 0; l < line && l < lines.length; l++) {
    const text = lines[l]!;
    const end = l === line - 1 ? column - 1 : text.length;
    let afterEquals = false;
    for (let i = 0; i < end; i++) {
      const ch = text[i]!;
      if (ch === "#") break;
      if (ch === '"' || ch === "'") {
        // A string on this line (multi-line strings are rare in config; an unclosed one is another error).
        const triple = text.startsWith(ch.repeat(3), i);
        const close = text.indexOf(triple ? ch.repeat(3) : ch, i + (triple ? 3 : 1));
        if (close < 0) break;
        i = close + (triple ? 2 : 0);
        continue;
      }
      if (ch === "=") afterEquals = true;
      if (ch === "[" || ch === "{") {
        // A table header ([x] or [[x]]) starts a line outside any value.
        if (ch === "[" && stack.length === 0 && !afterEquals) break;
        stack.push({ line: l + 1, column: i + 1, char: ch });
      } else if (ch === "]" || ch === "}") {
        stack.pop();
      }
    }
  }
  return stack[stack.length - 1];
}

function syntaxHint(what: string): string {
  if (what.includes("invalid value")) return 'quote strings ("text"); bare words are not TOML values';
  if (what.includes("redefine")) return "remove the duplicate: each key and table may be defined only once";
  if (what.includes("end-of-line")) return "put each `key = value` on its own line";
  // An unclosed string runs into the newline, which smol-toml reports as a control character.
  if (what.includes("unfinished string") || what.includes("control characters are not allowed in strings")) {
    return "close the string with the same quote it starts with, on the same line";
  }
  if (what.includes("unfinished array") || what.includes("comma or end")) return 'separate elements with "," and close with "]" or "}"';
  if (what.includes("unfinished table")) return 'close the table header with "]"';
  return "fix the TOML syntax at this spot (see https://toml.io)";
}

// ---------------------------------------------------------------------------------------
// Checking the shape of parsed TOML

/** "modules.grants.block-logger.allow[1]"; keys that are not bare TOML keys are quoted. */
export function formatPath(path: TomlPath): string {
  let out = "";
  for (const seg of path) {
    if (typeof seg === "number") out += `[${seg}]`;
    else {
      const key = /^[A-Za-z0-9_-]+$/.test(seg) ? seg : JSON.stringify(seg);
      out += out === "" ? key : `.${key}`;
    }
  }
  return out;
}

/** A TOML table (smol-toml gives objects without prototype; dates are Date objects). */
export function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && Object.prototype.toString.call(value) === "[object Object]";
}

/** The TOML type of a value, for messages. */
export function typeName(value: unknown): string {
  if (typeof value === "string") return "a string";
  if (typeof value === "boolean") return "a boolean";
  if (typeof value === "number") return Number.isInteger(value) ? "an integer" : "a float";
  if (typeof value === "bigint") return "an integer";
  if (Array.isArray(value)) return "an array";
  if (value instanceof Date) return "a date";
  if (isTable(value)) return "a table";
  return typeof value;
}

/**
 * Collects located problems of one file and throws them together. The schemas of the files
 * (host/schema.ts) report through it; so do rules across keys that run after a schema.
 */
/**
 * Problems of one file reported at most; the rest are counted. Each is located in the source by
 * a linear scan: 50,000 bad capabilities in a 640 KB module.toml took 4.6 s of the host's loop.
 */
export const MAX_REPORTED_PROBLEMS = 50;

/**
 * The characters of a problem's message (and of its fix) kept: many quote the value they
 * refuse, and a module.toml's version, [binary] hash, config type or threshold of 300 KB was
 * quoted whole, into the host's log and every status and check that shows the problem.
 */
export const MAX_PROBLEM_CHARS = 2048;

/**
 * The characters of one file's report (its problems' paths, messages, excerpts and fixes
 * together) shown; the problems past it are counted in the last line, like those past
 * MAX_REPORTED_PROBLEMS. Fifty problems of MAX_PROBLEM_CHARS each, message and fix, were
 * ~113 KB of text at every refused load, in the host's log and every status that shows them.
 */
export const MAX_REPORT_CHARS = 32 * 1024;

function cutProblem(text: string): string {
  return text.length <= MAX_PROBLEM_CHARS ? text : `${text.slice(0, MAX_PROBLEM_CHARS)}... (${text.length} characters, cut at MAX_PROBLEM_CHARS)`;
}

export class Checker {
  readonly problems: ConfigProblem[] = [];
  private unreported = 0;
  /** Characters of the problems reported (MAX_REPORT_CHARS). */
  private reportedChars = 0;
  /**
   * The edit-distance cells all of this file's "did you mean" guesses share (knownKeys): the
   * known keys of a module's [config_schema] are the module's, and 250 keys of 120 characters
   * made each key of the operator's that it does not declare cost CLOSEST_MAX_CELLS, shown or
   * not (2,000 of them: 7.5 s of the host's CPU in one turn at each start of the module; the 50
   * shown, 164 ms).
   */
  private readonly guessCells = { cells: CLOSEST_MAX_CELLS };

  constructor(
    readonly file: string,
    readonly source: string,
  ) {}

  report(path: TomlPath, message: string, hint?: string): void {
    if (this.full) {
      this.unreported++;
      return;
    }
    const at = locate(this.source, path);
    const problem: ConfigProblem = { file: this.file, message: cutProblem(message) };
    if (at) Object.assign(problem, at);
    // A key's name is the file's: a path can quote one of any length.
    if (path.length > 0) problem.path = cutProblem(formatPath(path));
    if (hint !== undefined) problem.hint = cutProblem(hint);
    this.problems.push(problem);
    this.reportedChars += problem.message.length + (problem.hint?.length ?? 0) + (problem.path?.length ?? 0) + (problem.excerpt?.length ?? 0);
  }

  /** Whether MAX_REPORTED_PROBLEMS, or MAX_REPORT_CHARS of them, are reported: any more is only counted (skip). */
  get full(): boolean {
    return this.problems.length >= MAX_REPORTED_PROBLEMS || this.reportedChars >= MAX_REPORT_CHARS;
  }

  /** Counts a problem past MAX_REPORTED_PROBLEMS without making its text. */
  skip(): void {
    this.unreported++;
  }

  /** Throws one ConfigError with every problem found so far, in source order (unplaced ones last). */
  throwIfProblems(): void {
    if (this.problems.length === 0) return;
    const line = (p: ConfigProblem) => p.line ?? Number.MAX_SAFE_INTEGER;
    const sorted = [...this.problems].sort((a, b) => line(a) - line(b) || (a.column ?? 0) - (b.column ?? 0));
    if (this.unreported > 0) {
      const limit = this.problems.length >= MAX_REPORTED_PROBLEMS ? "MAX_REPORTED_PROBLEMS" : `MAX_REPORT_CHARS: ${MAX_REPORT_CHARS} characters of problems shown`;
      sorted.push({ file: this.file, message: `${this.unreported} more problem(s) not shown (${limit})`, hint: "fix the ones above first" });
    }
    throw new ConfigError(sorted);
  }

  /** Reports every key of `table` not in `known`, with the closest known key. */
  knownKeys(table: Record<string, unknown>, path: TomlPath, known: readonly string[]): void {
    const declared = new Set(known);
    for (const key of Object.keys(table)) {
      if (declared.has(key)) continue;
      // Past what is shown, no guess ("did you mean": an edit distance against every known key).
      if (this.full) {
        this.skip();
        continue;
      }
      const p = unknownKey(key, known, this.guessCells);
      this.report([...path, key], p.message, p.hint);
    }
  }
}

/** The known keys a problem lists when it has no guess (the rest are counted). */
const KNOWN_KEYS_LISTED = 16;

/** The problem of a key not in `known`: its name, and the closest known key (or all of them). */
export function unknownKey(key: string, known: readonly string[], budget?: { cells: number }): { message: string; hint: string } {
  const guess = closest(key, known, budget);
  if (guess) return { message: `unknown key "${key}"`, hint: `did you mean "${guess}"?` };
  // A module's [config_schema] may declare hundreds of long keys: name the first few.
  const listed = known.length <= KNOWN_KEYS_LISTED ? known.join(", ") : `${known.slice(0, KNOWN_KEYS_LISTED).join(", ")} and ${known.length - KNOWN_KEYS_LISTED} more`;
  return { message: `unknown key "${key}"`, hint: `known keys here: ${listed}` };
}
