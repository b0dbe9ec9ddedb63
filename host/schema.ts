// The schema language of modhost's TOML files (modhost.toml, module.toml): valibot, with a few
// builders whose messages are the operator-facing ones (what is wrong, and the fix), and two
// schema kinds of our own for TOML tables:
//
// - `table(entries)`: like valibot's strictObject, but it reports EVERY unknown key (strictObject
//   stops at the first) with did-you-mean, accepts only real TOML tables (not arrays or dates),
//   and names a missing required key with its fix.
// - `namedTables(rule, value)`: a table of tables keyed by a name (module, publisher): a bad name
//   is reported and its value skipped; no key is silently dropped (valibot's record skips
//   "constructor" and "prototype").
//
// A valibot issue has one message; ours carry the fix after FIX_MARK and may name the key or the
// path with KEY/PATH placeholders, filled in when the issue is mapped to a located problem
// (`checkSchema`), since a leaf schema does not know where it is used.
//
// Descriptions, units and shown defaults live in the schemas (`doc`), so the operator guide's
// tables are generated from them (host/config-docs.ts).

import * as v from "valibot";
import { closest } from "../capabilities/catalogue.ts";
import { type Checker, formatPath, isTable, MAX_REPORTED_PROBLEMS, typeName, type TomlPath, unknownKey } from "./toml.ts";

/** Separates an issue's message from its fix. */
const FIX_MARK = "\u0000";
/** Replaced by the key the issue is about (the last named segment of its path). */
export const KEY = "\u0001key\u0001";
/** Replaced by the formatted path of the issue. */
export const PATH = "\u0001path\u0001";

/** An issue message with its fix. */
export function say(message: string, hint?: string): string {
  return hint === undefined ? message : `${message}${FIX_MARK}${hint}`;
}

export type Schema<TOutput = unknown> = v.GenericSchema<unknown, TOutput>;

// ---------------------------------------------------------------------------------------
// Leaves

export interface Range {
  min?: number;
  max?: number;
}

/** "from 1 to 10", "0 or more", "8 or more". */
function rangeText(rule: Range): string {
  const min = rule.min ?? 0;
  return rule.max !== undefined ? `from ${min} to ${rule.max}` : min === 0 ? "0 or more" : `${min} or more`;
}

export function str() {
  return v.string((i: v.StringIssue) => say(`expected a string, found ${typeName(i.input)}`, `quote the value: ${KEY} = "..."`));
}

export function bool() {
  return v.boolean((i: v.BooleanIssue) => say(`expected true or false, found ${typeName(i.input)}`, `write ${KEY} = true or ${KEY} = false, without quotes`));
}

/** A whole number within `rule` (min defaults to 0). */
export function int(rule: Range = {}) {
  const min = rule.min ?? 0;
  const max = rule.max ?? Number.MAX_SAFE_INTEGER;
  const range = rangeText(rule);
  const wrongType = (input: unknown) => {
    const hint = typeof input === "string" && /^\s*\d+\s*$/.test(input) ? `remove the quotes: ${KEY} = ${input.trim()}` : `write a whole number ${range}`;
    return say(`expected a whole number, found ${typeName(input)}`, hint);
  };
  return v.pipe(
    v.number((i) => wrongType(i.input)),
    v.rawCheck<number>(({ dataset, addIssue }) => {
      if (!dataset.typed) return;
      const n = dataset.value;
      if (!Number.isSafeInteger(n)) addIssue({ message: wrongType(n) });
      else if (n < min || n > max) addIssue({ message: say(`${n} is out of range`, `use a whole number ${range}`) });
    }),
    v.metadata({ range: rule }),
  );
}

/** One of `values`; `aliases`: words people write for one of them, suggested before the closest spelling. */
export function oneOf<const T extends string>(values: readonly T[], aliases: Readonly<Record<string, T>> = {}) {
  const list = values.map((x) => `"${x}"`).join(", ");
  return v.pipe(
    str(),
    v.rawTransform<string, T>(({ dataset, addIssue, NEVER }) => {
      const s = dataset.value;
      if ((values as readonly string[]).includes(s)) return s as T;
      const guess = (Object.hasOwn(aliases, s.toLowerCase()) ? aliases[s.toLowerCase()] : undefined) ?? (takeGuess() ? closest(s, values) : undefined);
      addIssue({ message: say(`"${s}" is not one of ${list}`, guess ? `did you mean "${guess}"?` : `use one of ${list}`) });
      return NEVER;
    }),
    v.metadata({ values }),
  );
}

/** A string element of an array (the fix speaks of the element, not of a key). */
function element() {
  return v.string((i: v.StringIssue) => say(`expected a string, found ${typeName(i.input)}`, "quote the element"));
}

/** An array of strings; `item` checks (and may transform) each string, reported at its index. */
export function strings<TItem = string>(item?: v.PipeItem<string, TItem, v.BaseIssue<unknown>>) {
  const each = (item ? v.pipe(element(), item) : element()) as v.GenericSchema<unknown, TItem>;
  return v.array(each, (i: v.ArrayIssue) => say(`expected an array of strings, found ${typeName(i.input)}`, `write ${KEY} = ["...", "..."]`));
}

/** A string checked by `problem` (a message and fix, or undefined when fine). */
export function checked(problem: (s: string) => { message: string; hint?: string } | undefined) {
  return v.pipe(
    str(),
    v.rawCheck<string>(({ dataset, addIssue }) => {
      if (!dataset.typed) return;
      const p = problem(dataset.value);
      if (p) addIssue({ message: say(p.message, p.hint) });
    }),
  );
}

// ---------------------------------------------------------------------------------------
// Documentation metadata

export interface DocInfo {
  /** What the key means, for the operator guide. */
  description?: string;
  /** The default as the guide shows it, when the value itself does not say it well ("64 MiB", "none"). */
  shown?: string;
  /** The key column of the guide's row, when one row describes several keys ("`user`, `password`"). */
  label?: string;
  /** Left out of the guide's table (described in another row, or in a section of its own). */
  hidden?: boolean;
}

/** `schema` with its description (and how the guide shows its default). */
export function doc<S extends Schema>(schema: S, description: string, more: Omit<DocInfo, "description"> = {}) {
  return v.pipe(schema, v.description(description), v.metadata({ doc: more }));
}

/** The description and doc metadata of a schema (looking through optional and pipes). */
export function docOf(schema: Schema): DocInfo & { default?: unknown; optional: boolean } {
  let s = schema as Schema & { pipe?: readonly unknown[]; wrapped?: Schema; default?: unknown; type: string };
  const out: DocInfo & { default?: unknown; optional: boolean } = { optional: false };
  if (s.type === "optional" || s.type === "nullable" || s.type === "nullish") {
    out.optional = true;
    if (s.default !== undefined) out.default = typeof s.default === "function" ? (s.default as () => unknown)() : s.default;
    s = s.wrapped as typeof s;
  }
  for (const action of s.pipe ?? []) {
    const a = action as { type: string; description?: string; metadata?: { doc?: DocInfo } };
    if (a.type === "description") out.description = a.description;
    if (a.type === "metadata" && a.metadata?.doc) Object.assign(out, a.metadata.doc);
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Tables

type Entries = Record<string, Schema>;

/** The output of a table schema: optional entries without a default may be absent. */
type TableOutput<E extends Entries> = v.InferOutput<v.ObjectSchema<E, undefined>>;

export interface TableSchema<E extends Entries> extends v.BaseSchema<unknown, TableOutput<E>, v.BaseIssue<unknown>> {
  readonly type: "toml_table";
  readonly entries: E;
  /** Fixes for missing required keys, by key. */
  readonly missing: Readonly<Record<string, string>>;
}

function issue(context: { kind: "schema"; type: string; expects: string }, input: unknown, message: string, key?: string | number, parent?: unknown): v.BaseIssue<unknown> {
  const path = key === undefined ? undefined : [{ type: "object", origin: "value", input: parent, key, value: input } as unknown as v.IssuePathItem];
  const out = { kind: context.kind, type: context.type, input, expected: context.expects, received: typeName(input), message } as v.BaseIssue<unknown>;
  if (path) (out as { path?: v.IssuePathItem[] }).path = path;
  return out;
}

function wrongTable(input: unknown): string {
  return say(`expected a table, found ${typeName(input)}`, `write it as a [${PATH}] section or an inline table { ... }`);
}

/**
 * Whether a schema's value is kept in its table's output even when it has problems: a table's
 * partial value holds only its fields that are valid on their own, which is what rules across
 * keys (rawChecks after a table) may read. Other values with problems are left out.
 */
function keepsPartial(schema: Schema): boolean {
  const s = schema as { type: string; wrapped?: Schema };
  const inner = (s.type === "optional" || s.type === "nullish" || s.type === "exact_optional") && s.wrapped ? (s.wrapped as { type: string }) : s;
  return inner.type === "toml_table" || inner.type === "toml_named_tables";
}

function isOptional(schema: Schema): boolean {
  const t = (schema as { type: string }).type;
  return t === "optional" || t === "nullish" || t === "exact_optional";
}

/**
 * Append to a dataset's issues in place. Each append used to copy the list (`[...issues, new]`):
 * a table of 100,000 unknown keys (a 1 MiB modhost.toml) made 5 billion copies, minutes of the
 * host's loop at a config reload (256 KiB: 45 s at load 20).
 */
function addIssues(d: { issues?: v.BaseIssue<unknown>[] }, issue: v.BaseIssue<unknown>): void {
  (d.issues ??= []).push(issue);
}

function addChildIssues(dataset: v.UnknownDataset | v.OutputDataset<unknown, v.BaseIssue<unknown>>, child: v.OutputDataset<unknown, v.BaseIssue<unknown>>, key: string, input: unknown, value: unknown): void {
  if (!child.issues) return;
  const item = { type: "object", origin: "value", input, key, value } as unknown as v.IssuePathItem;
  for (const i of child.issues) {
    const p = (i as { path?: v.IssuePathItem[] }).path;
    (i as { path?: v.IssuePathItem[] }).path = p ? [item, ...p] : [item];
  }
  const d = dataset as { issues?: v.BaseIssue<unknown>[] };
  const issues = (d.issues ??= []);
  for (const i of child.issues) issues.push(i);
}

/**
 * The guesses ("did you mean": an edit distance against each known word) one check may still
 * make. Issues are made, and listed, in the order of the value's traversal, and the Checker
 * shows the first MAX_REPORTED_PROBLEMS: a guess past that many is never shown. A module.toml of
 * 1,500 settings each with an unknown key, or 1,000 mistyped types, made one each (45-55 ms of
 * the host's loop at every discovery of the modules). checkSchema sets it; valid() makes none.
 */
let guessesLeft = Number.POSITIVE_INFINITY;

function takeGuess(): boolean {
  if (guessesLeft <= 0) return false;
  guessesLeft--;
  return true;
}

/**
 * A TOML table with these keys and no others. `missing`: the fix for each required key when it
 * is absent (default: add KEY = "...").
 */
export function table<const E extends Entries>(entries: E, missing: Readonly<Record<string, string>> = {}, notTableHint?: string): TableSchema<E> {
  const known = Object.keys(entries);
  const self = {
    kind: "schema" as const,
    type: "toml_table",
    reference: table,
    expects: "table",
    async: false,
    entries,
    missing,
    message: undefined,
    "~run"(dataset: v.UnknownDataset, config: v.Config<v.BaseIssue<unknown>>) {
      const input = dataset.value;
      const d = dataset as unknown as { typed: boolean; value: unknown; issues?: v.BaseIssue<unknown>[] };
      if (!isTable(input)) {
        d.typed = false;
        addIssues(d, issue(self, input, notTableHint === undefined ? wrongTable(input) : say(`expected a table, found ${typeName(input)}`, notTableHint)));
        return dataset;
      }
      const out: Record<string, unknown> = {};
      let typed = true;
      // Unknown keys first: they are most often typos of a key below.
      for (const key of Object.keys(input)) {
        if (Object.hasOwn(entries, key)) continue;
        const p = takeGuess() ? unknownKey(key, known) : { message: `unknown key "${key}"`, hint: undefined };
        addIssues(d, issue(self, input[key], say(p.message, p.hint), key, input));
        typed = false;
      }
      for (const [key, schema] of Object.entries(entries)) {
        const present = Object.hasOwn(input, key) && input[key] !== undefined;
        if (!present && !isOptional(schema)) {
          addIssues(d, issue(self, undefined, say(`missing required key "${key}"`, missing[key] ?? `add ${key} = "..."`), key, input));
          typed = false;
          continue;
        }
        if (!present && (schema as { default?: unknown }).default === undefined) continue;
        const child = schema["~run"]({ value: present ? input[key] : undefined }, config);
        addChildIssues(dataset, child, key, input, input[key]);
        if (!child.typed) typed = false;
        if (child.typed || keepsPartial(schema)) out[key] = child.value;
      }
      d.typed = typed && !d.issues?.length;
      d.value = out;
      return dataset;
    },
  };
  Object.defineProperty(self, "~standard", { value: { version: 1, vendor: "valibot", validate: (value: unknown) => self["~run"]({ value } as v.UnknownDataset, {}) } });
  return self as unknown as TableSchema<E>;
}

export interface NamedTablesSchema<T> extends v.BaseSchema<unknown, Record<string, T>, v.BaseIssue<unknown>> {
  readonly type: "toml_named_tables";
  readonly value: Schema<T>;
}

/**
 * A table of values keyed by names that `nameProblem` checks ([modules.limits.NAME], ...): a bad
 * name is reported (its value is not checked); each value is checked with `value`.
 */
export function namedTables<T>(nameProblem: (name: string) => { message: string; hint?: string } | undefined, value: Schema<T>): NamedTablesSchema<T> {
  const self = {
    kind: "schema" as const,
    type: "toml_named_tables",
    reference: namedTables,
    expects: "table",
    async: false,
    value,
    message: undefined,
    "~run"(dataset: v.UnknownDataset, config: v.Config<v.BaseIssue<unknown>>) {
      const input = dataset.value;
      const d = dataset as unknown as { typed: boolean; value: unknown; issues?: v.BaseIssue<unknown>[] };
      if (!isTable(input)) {
        d.typed = false;
        addIssues(d, issue(self, input, wrongTable(input)));
        return dataset;
      }
      const out: Record<string, T> = {};
      let typed = true;
      for (const name of Object.keys(input)) {
        const bad = nameProblem(name);
        if (bad) {
          addIssues(d, issue(self, input[name], say(bad.message, bad.hint), name, input));
          typed = false;
          continue;
        }
        const child = value["~run"]({ value: input[name] }, config);
        addChildIssues(dataset, child, name, input, input[name]);
        if (!child.typed) typed = false;
        if (child.typed || keepsPartial(value)) out[name] = child.value as T;
      }
      d.typed = typed && !d.issues?.length;
      d.value = out;
      return dataset;
    },
  };
  Object.defineProperty(self, "~standard", { value: { version: 1, vendor: "valibot", validate: (val: unknown) => self["~run"]({ value: val } as v.UnknownDataset, {}) } });
  return self as unknown as NamedTablesSchema<T>;
}

/**
 * `a` for values that `isA` picks, `b` for the rest (a value written in a short or a long form:
 * `key = "text"` or `key = { ... }`); unlike valibot's union, the problems are those of the form
 * the value is written in.
 */
export function either<A, B>(isA: (value: unknown) => boolean, a: Schema<A>, b: Schema<B>): Schema<A | B> {
  const self = {
    ...v.unknown(),
    type: "toml_either",
    reference: either,
    "~run"(dataset: v.UnknownDataset, config: v.Config<v.BaseIssue<unknown>>) {
      return (isA(dataset.value) ? a : b)["~run"](dataset, config);
    },
  };
  return self as unknown as Schema<A | B>;
}

/** An issue path to `keys` (for rules across the keys of a table, reported at one of them). */
export function pathTo(...keys: (string | number)[]): [v.IssuePathItem, ...v.IssuePathItem[]] {
  return keys.map((key) => ({ type: "object", origin: "value", input: {}, key, value: undefined }) as unknown as v.IssuePathItem) as [v.IssuePathItem, ...v.IssuePathItem[]];
}

// ---------------------------------------------------------------------------------------
// From issues to located problems

/** The TOML path of an issue (object keys and array indices), below `at`. */
function issuePath(issue: v.BaseIssue<unknown>, at: TomlPath = []): (string | number)[] {
  const out: (string | number)[] = [...at];
  for (const item of issue.path ?? []) out.push(item.key as string | number);
  return out;
}

/**
 * Checks `value` (found at `at` in the file the Checker reads) against `schema`, every problem
 * at once, and reports each issue at its line and column through the Checker. Returns the
 * output, or undefined when there was any problem.
 */
export function checkSchema<S extends Schema>(c: Checker, schema: S, value: unknown, at: TomlPath = []): v.InferOutput<S> | undefined {
  const before = guessesLeft;
  guessesLeft = MAX_REPORTED_PROBLEMS;
  let result: ReturnType<typeof v.safeParse<S>>;
  try {
    result = v.safeParse(schema, value, { abortEarly: false, abortPipeEarly: false });
  } finally {
    guessesLeft = before;
  }
  if (result.success) return result.output as v.InferOutput<S>;
  for (const i of result.issues) {
    // Past what the Checker shows, an issue is only counted: its path and text are not made.
    if (c.full) {
      c.skip();
      continue;
    }
    const where = issuePath(i, at);
    const key = [...where].reverse().find((s): s is string => typeof s === "string") ?? "";
    const fill = (text: string) => text.replaceAll(KEY, key).replaceAll(PATH, formatPath(where));
    const [message, hint] = i.message.split(FIX_MARK, 2) as [string, string | undefined];
    c.report(where, fill(message), hint === undefined ? undefined : fill(hint));
  }
  return undefined;
}

/** Whether `value` passes `schema` (for cross-field checks that read only fields that are valid on their own). */
export function valid(schema: Schema, value: unknown): boolean {
  const before = guessesLeft;
  guessesLeft = 0;
  try {
    return v.safeParse(schema, value).success;
  } finally {
    guessesLeft = before;
  }
}
