// Errors modhost reports to operators and module authors.
//
// The standard: a config or manifest error names the file, line, column and the fix. A
// ConfigError carries every problem found in one file (not just the first), so one run of
// `modhost check` shows everything that needs fixing.

import path from "node:path";

export class ModhostError extends Error {
  readonly code: string;
  // Declared, not defined: an error has no property whose value is undefined (test reporters
  // that serialise a failed test's error, YAML in TAP, refuse undefined and crash).
  declare readonly hint?: string;

  constructor(code: string, message: string, hint?: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    if (hint !== undefined) this.hint = hint;
  }
}

export interface ConfigProblem {
  file: string;
  /** 1-based; absent when the problem has no place in the source (e.g. a missing key at the top). */
  line?: number;
  column?: number;
  /** Dotted path of the offending key, e.g. "modules.grants.block-logger.allow[1]". */
  path?: string;
  message: string;
  /** How to fix it ("did you mean ...?"). */
  hint?: string;
  /** A code frame around the spot (TOML syntax errors carry smol-toml's). */
  excerpt?: string;
}

export class ConfigError extends ModhostError {
  readonly problems: ConfigProblem[];

  constructor(problems: ConfigProblem[]) {
    const list = problems.length > 0 ? problems : [{ file: "<unknown>", message: "invalid configuration" }];
    // With a single problem its hint is the error's hint; with several each problem carries its own.
    super("config_error", list.map((p) => formatProblem(p)).join("\n"), list.length === 1 ? list[0]!.hint : undefined);
    this.problems = list;
  }
}

/**
 * One problem as text (`line`: how each of its lines is shown; the CLI escapes them):
 *   modhost.toml:14:9: modules.grants.block-logger.allow[1]: unknown capability "read_blockchian"
 *     fix: did you mean "read_blockchain"?
 */
export function formatProblem(p: ConfigProblem, line: (text: string) => string = (text) => text): string {
  let where = displayPath(p.file);
  if (p.line !== undefined) where += `:${p.line}`;
  if (p.line !== undefined && p.column !== undefined) where += `:${p.column}`;
  let text = line(`${where}: ${p.path ? `${p.path}: ` : ""}${p.message}`);
  if (p.excerpt) text += "\n" + indent(p.excerpt.replace(/\n+$/, "").split("\n").map(line).join("\n"));
  if (p.hint) text += `\n  fix: ${line(p.hint)}`;
  return text;
}

/** Files under the working directory are shown relative to it, everything else as given. */
function displayPath(file: string): string {
  if (!path.isAbsolute(file)) return file;
  const rel = path.relative(process.cwd(), file);
  return rel !== "" && !rel.startsWith("..") && !path.isAbsolute(rel) ? rel : file;
}

function indent(text: string): string {
  return text
    .split("\n")
    .map((l) => (l === "" ? l : "  " + l))
    .join("\n");
}
