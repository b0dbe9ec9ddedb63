// One file: every line the host writes passes here; what escapes, cuts and meters a module's
// words is read with what writes them.
//
// The host log. Lines are tagged with where they come from ("host", "chain", or a module's
// name). Pretty output for terminals, JSON lines for machines.
//
// Nothing a module says can lie or grow the log without bound:
// - everything from a module (its log messages and fields, its stdout and stderr, host
//   messages about it such as its denials) is escaped when written: newlines, control
//   characters, terminal escape sequences, bidirectional overrides and lone surrogates are
//   shown as visible escapes (\n, \x1b, \u202e), so a module cannot start a line of its
//   choosing or repaint the operator's terminal; the host tags the line with the module name;
// - messages and fields are cut at fixed sizes (MODULE_LOG_LIMITS), before they are escaped,
//   and fields are reduced to plain JSON data of bounded depth, width and size, so the JSON
//   log stays valid JSON whatever a module sends;
// - each module has a budget of log bytes per second (`log_bytes_per_second`, a token bucket
//   with a few seconds of burst); what is over it is dropped and counted, and one summary line
//   per interval says how much;
// - the host's own notes about a module (it was throttled, its request was denied, an event
//   could not be delivered to it, it was disconnected...) have a separate small budget per
//   module (HOST_NOTE_BYTES_PER_SECOND, HOST_NOTE_BURST_BYTES): a module flooding its own log
//   cannot hide them, and a flood of events that each cause a note cannot grow the log either
//   (what is over it is dropped, counted, and summarised once per interval).

import type { LogLevel } from "../protocol/messages.ts";

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const COLOURS: Record<LogLevel, string> = { debug: "\x1b[90m", info: "\x1b[36m", warn: "\x1b[33m", error: "\x1b[31m" };

let stderrGuarded = false;

/** The default log destination. A failing stderr (EPIPE: the reader went away) loses lines, never the host. */
function writeStderr(line: string): void {
  if (!stderrGuarded) {
    stderrGuarded = true;
    process.stderr.on("error", () => {});
  }
  process.stderr.write(line + "\n");
}

/**
 * Sources that are the host itself; every other source is a module. Every part of the host that
 * logs uses one of these (Logger.for takes only these): a source left out of this list was a
 * module's log, charged to the budget of a module of that name, and a module given that name
 * wrote lines tagged exactly like the host's (test/hooks.test.ts attacks both).
 */
const HOST_SOURCE_NAMES = ["host", "chain", "rpc", "dev", "hooks", "registry", "inspector"] as const;
export type HostSource = (typeof HOST_SOURCE_NAMES)[number];
const HOST_SOURCES: ReadonlySet<string> = new Set(HOST_SOURCE_NAMES);

/** Fixed bounds on what one module log record may carry. */
export const MODULE_LOG_LIMITS = Object.freeze({
  /** Characters of a message (after escaping) kept; the rest is cut with a note. */
  messageChars: 8192,
  /** Characters of the fields (roughly as JSON) kept; further entries are cut. */
  fieldsChars: 65536,
  /** Nesting of fields kept; deeper values are replaced by a note. */
  fieldsDepth: 8,
  /** Entries per object or array in the fields. */
  fieldsEntries: 1024,
  /** Characters of one string in the fields (after escaping). */
  fieldString: 8192,
  /** Characters of one field name. */
  fieldKey: 128,
});

/** Bytes of a log line besides the message (time, level, tag). */
const RECORD_OVERHEAD = 24;
/** Default bytes per second a module may add to the host log (`log_bytes_per_second`). */
const DEFAULT_LOG_BYTES_PER_SECOND = 32 * 1024;
/** Seconds of rate a module may log in one burst. */
const LOG_BURST_SECONDS = 4;
/** At most one "dropped" summary line per module per this interval. */
const LOG_SUMMARY_INTERVAL_MS = 2000;
/** Bytes per second of the host's notes about one module (not the module's own budget). */
export const HOST_NOTE_BYTES_PER_SECOND = 2048;
/** Burst of the host's notes about one module. */
export const HOST_NOTE_BURST_BYTES = 16 * 1024;

export interface LogRecord {
  time: number;
  level: LogLevel;
  source: string;
  message: string;
  fields?: Record<string, unknown>;
  /** "module": the record carries a module's words (or host words about what a module did). */
  origin?: "module";
}

export type LogSink = (record: LogRecord) => void;

export interface LoggerOptions {
  level?: LogLevel;
  format?: "pretty" | "json";
  /** Where lines go; defaults to stderr. */
  write?: (line: string) => void;
  colour?: boolean;
  /** A module's log byte rate (bytes per second); read on every record, so a reload applies. */
  moduleBytesPerSecond?: (module: string) => number;
}

export class Logger {
  private readonly level: number;
  private readonly sinks = new Set<LogSink>();
  private readonly write: (line: string) => void;
  private readonly format: "pretty" | "json";
  private readonly colour: boolean;
  private readonly modules = new Map<string, ModuleLog>();
  /** A module's log byte rate; the host sets it from `[modules] ... log_bytes_per_second`. */
  moduleBytesPerSecond: (module: string) => number;

  constructor(opts: LoggerOptions = {}) {
    this.level = ORDER[opts.level ?? "info"];
    this.format = opts.format ?? "pretty";
    this.write = opts.write ?? writeStderr;
    this.colour = opts.colour ?? (opts.write === undefined && process.stderr.isTTY === true);
    this.moduleBytesPerSecond = opts.moduleBytesPerSecond ?? (() => DEFAULT_LOG_BYTES_PER_SECOND);
  }

  /** Also hand every record (at any level) to `sink`, e.g. a test collecting lines. */
  addSink(sink: LogSink): () => void {
    this.sinks.add(sink);
    return () => this.sinks.delete(sink);
  }

  /**
   * Log a line. A source that is not the host's own (HOST_SOURCES) is a module: the line is
   * escaped, cut and counted against that module's byte budget (see `module()`).
   */
  log(level: LogLevel, source: string, message: string, fields?: Record<string, unknown>): void {
    if (!HOST_SOURCES.has(source)) {
      this.module(source).log(level, message, fields);
      return;
    }
    const record: LogRecord = { time: Date.now(), level, source, message: String(message), ...(fields && Object.keys(fields).length ? { fields } : {}) };
    this.emit(record);
  }

  /** The log of one module: everything logged through it is escaped, cut and rate-limited. */
  module(name: string): ModuleLog {
    let m = this.modules.get(name);
    if (!m) this.modules.set(name, (m = new ModuleLog(this, name)));
    return m;
  }

  /**
   * A note of the host about `module` (it was throttled, denied, disconnected...), held to that
   * module's budget for host notes, not to its own log budget (see ModuleLog.note). `as` a host
   * source tags the line with it ([host], [hooks]: the module named in the text and fields); by
   * default it is tagged with the module.
   */
  note(module: string, level: LogLevel, message: string, fields?: Record<string, unknown>, as: "module" | HostSource = "module"): boolean {
    return this.module(module).note(level, message, fields, as);
  }

  /** Would a record at `level` be written (or seen by a sink)? */
  wants(level: LogLevel): boolean {
    return this.sinks.size > 0 || ORDER[level] >= this.level;
  }

  /** Format a record as it would be written. */
  formatLine(record: LogRecord): string {
    return this.format === "json" ? jsonLine(record) : this.pretty(record);
  }

  /** @internal Write a formatted record (already admitted) and hand it to the sinks. */
  emit(record: LogRecord, line?: string): void {
    for (const sink of this.sinks) sink(record);
    if (ORDER[record.level] < this.level) return;
    this.write(line ?? this.formatLine(record));
  }

  private pretty(r: LogRecord): string {
    const t = new Date(r.time).toISOString().slice(11, 23);
    const module = r.origin === "module";
    // Host text may span lines (a configuration error with its code frame); continuation
    // lines are indented, so no line can begin like a record. Module text has no raw newlines.
    const text = (s: string) => (module ? s : escapeText(s, Infinity, true).text.replace(/\n/g, "\n    "));
    const value = (v: unknown) => (typeof v === "string" ? text(v) : escapeText(safeJson(v), Infinity).text);
    const f = r.fields ? " " + Object.entries(r.fields).map(([k, v]) => `${module ? k : escapeText(k, Infinity).text}=${value(v)}`).join(" ") : "";
    const lvl = r.level.toUpperCase().padEnd(5);
    // A module whose name is one of the host's own sources is tagged so that it cannot pass for the host.
    const src = module && HOST_SOURCES.has(r.source) ? `[module:${r.source}]` : `[${r.source}]`;
    const message = text(r.message);
    if (!this.colour) return `${t} ${lvl} ${src} ${message}${f}`;
    return `\x1b[90m${t}\x1b[0m ${COLOURS[r.level]}${lvl}\x1b[0m \x1b[1m${src}\x1b[0m ${message}\x1b[90m${f}\x1b[0m`;
  }

  for(source: HostSource): SourceLogger {
    return {
      debug: (m, f) => this.log("debug", source, m, f),
      info: (m, f) => this.log("info", source, m, f),
      warn: (m, f) => this.log("warn", source, m, f),
      error: (m, f) => this.log("error", source, m, f),
    };
  }
}

export interface SourceLogger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

/**
 * One module's view of the host log: its byte budget and its dropped counts. Everything logged
 * here is escaped and cut (whatever its source name), tagged with the module's name and
 * `origin: "module"`, and charged to the budget; over the budget it is dropped and counted, and
 * a summary line (at most one per LOG_SUMMARY_INTERVAL_MS) says how much was dropped.
 */
export class ModuleLog {
  /** The module's own words (and what the host says it did): its `log_bytes_per_second`. */
  private readonly own: LogBudget;
  /** The host's notes about this module: their own small budget, so the module's flood cannot hide them. */
  private readonly notes: LogBudget;
  private summaryTimer: NodeJS.Timeout | undefined;
  private windowStart = 0;
  /** Totals since the host started, for tests and metrics. */
  readonly totals: BudgetTotals;
  /** Totals of the host's notes about this module. */
  readonly noteTotals: BudgetTotals;

  constructor(private readonly logger: Logger, readonly name: string) {
    this.own = new LogBudget(logger, new ByteBucket(() => logger.moduleBytesPerSecond(name)), () => this.armSummary());
    this.notes = new LogBudget(logger, new ByteBucket(() => HOST_NOTE_BYTES_PER_SECOND, 0, HOST_NOTE_BURST_BYTES), () => this.armSummary());
    this.totals = this.own.totals;
    this.noteTotals = this.notes.totals;
  }

  /**
   * A note of the host about this module. Its text may quote the module (a denial's reason), so
   * it is escaped and cut like the module's words; it is charged to the budget for host notes
   * (HOST_NOTE_BYTES_PER_SECOND, bursts of HOST_NOTE_BURST_BYTES), never to the module's own.
   */
  note(level: LogLevel, message: string, fields?: Record<string, unknown>, as: "module" | HostSource = "module"): boolean {
    if (!this.logger.wants(level)) return false;
    return this.notes.write(Math.min(message.length, MODULE_LOG_LIMITS.messageChars) + RECORD_OVERHEAD, () => {
      const m = moduleRecord(level, this.name, message, fields);
      return as === "module" ? m : { time: m.time, level, source: as, message: m.message, fields: { ...m.fields, module: this.name } };
    });
  }

  private armSummary(): void {
    if (this.summaryTimer) return;
    this.windowStart = Date.now();
    this.summaryTimer = setTimeout(() => this.summarise(), LOG_SUMMARY_INTERVAL_MS);
    this.summaryTimer.unref();
  }

  /** Log what the module said (or what the host says it did); returns whether it was written. */
  log(level: LogLevel, message: unknown, fields?: unknown, extra?: Record<string, unknown>): boolean {
    if (!this.logger.wants(level)) return false;
    const least = (typeof message === "string" ? Math.min(message.length, MODULE_LOG_LIMITS.messageChars) : 0) + RECORD_OVERHEAD;
    return this.own.write(least, () => moduleRecord(level, this.name, message, fields, extra));
  }

  /** Write the summary of what was dropped (if anything) now. */
  summarise(): void {
    clearTimeout(this.summaryTimer);
    this.summaryTimer = undefined;
    const seconds = ((Date.now() - this.windowStart) / 1000).toFixed(1);
    const notes = this.notes.takeDropped();
    if (notes.records > 0) {
      // Not charged either; at most one per interval, so the notes' budget is bounded with it.
      this.logger.emit({
        time: Date.now(), level: "warn", source: "host",
        message: `${notes.records} host notes about ${this.name} (${notes.bytes} bytes or more) dropped in ${seconds} s: over the host's budget for notes about one module (${HOST_NOTE_BYTES_PER_SECOND} bytes/s, bursts of ${HOST_NOTE_BURST_BYTES}); the module keeps causing them (see its requests, events and limits)`,
        fields: { module: this.name, dropped_notes: notes.records, dropped_bytes: notes.bytes },
      });
    }
    const { records, bytes } = this.own.takeDropped();
    if (records === 0) return;
    const rate = this.logger.moduleBytesPerSecond(this.name);
    const record: LogRecord = {
      time: Date.now(), level: "warn", source: this.name, origin: "module",
      message: `${records} log records (${bytes} bytes or more) dropped in ${seconds} s: over this module's log rate limit of ${rate} bytes/s (raise log_bytes_per_second in [modules.limits.${this.name}])`,
      fields: { dropped_records: records, dropped_bytes: bytes, limit_bytes_per_second: rate },
    };
    // Not charged to the budget (it would be dropped itself); at most one per interval.
    this.logger.emit(record);
  }
}

interface BudgetTotals {
  written: number;
  writtenBytes: number;
  dropped: number;
  droppedBytes: number;
}

/**
 * One stream of log records held to a byte budget: a module's own words, or the host's notes
 * about it. A record is checked for its least size before it is built (no work proportional
 * to a record out of budget), then charged for its line; what is dropped is counted for the
 * owner's summary line.
 */
class LogBudget {
  readonly totals: BudgetTotals = { written: 0, writtenBytes: 0, dropped: 0, droppedBytes: 0 };
  /** Dropped since the last summary. */
  private dropped = { records: 0, bytes: 0 };

  constructor(private readonly logger: Logger, private readonly bucket: ByteBucket, private readonly onDrop: () => void) {}

  /** Writes the record `make()` builds when the budget has room for it (at least `least` bytes); whether it was written. */
  write(least: number, make: () => LogRecord): boolean {
    // Out of budget for even the message alone: drop before doing any work proportional to the record.
    if (!this.bucket.canTake(least)) return this.drop(least);
    const record = make();
    const line = this.logger.formatLine(record);
    const bytes = Buffer.byteLength(line) + 1;
    if (!this.bucket.take(bytes)) return this.drop(bytes);
    this.totals.written++;
    this.totals.writtenBytes += bytes;
    this.logger.emit(record, line);
    return true;
  }

  /** What was dropped since the last call. */
  takeDropped(): { records: number; bytes: number } {
    const d = this.dropped;
    this.dropped = { records: 0, bytes: 0 };
    return d;
  }

  private drop(bytes: number): false {
    this.dropped.records++;
    this.dropped.bytes += bytes;
    this.totals.dropped++;
    this.totals.droppedBytes += bytes;
    this.onDrop();
    return false;
  }
}

/** Smallest burst of a byte budget, whatever the rate. */
const MIN_BURST_BYTES = 64 * 1024;

/**
 * Token bucket of bytes: `rate()` per second, bursts up to LOG_BURST_SECONDS of it (at least
 * MIN_BURST_BYTES). A full bucket admits one item larger than itself, going into debt, so that
 * no bounded record is refused for ever; over any time T what passes is at most
 * burst + rate x T + one largest item.
 */
export class ByteBucket {
  private tokens: number;
  private last = Date.now();

  constructor(private readonly rate: () => number, private readonly burstSeconds = LOG_BURST_SECONDS, private readonly minBurst = MIN_BURST_BYTES) {
    this.tokens = this.burst();
  }

  private burst(): number {
    return Math.max(this.rate() * this.burstSeconds, this.minBurst);
  }

  private refill(): void {
    const now = Date.now();
    this.tokens = Math.min(this.burst(), this.tokens + ((now - this.last) / 1000) * this.rate());
    this.last = now;
  }

  /** Would `take(n)` succeed now? */
  canTake(n: number): boolean {
    this.refill();
    return this.tokens >= n || this.tokens >= this.burst();
  }

  take(n: number): boolean {
    this.refill();
    if (this.tokens < n && this.tokens < this.burst()) return false;
    this.tokens -= n;
    return true;
  }
}

/** Build the record of a module's words: message and fields escaped, cut and made plain. */
export function moduleRecord(level: LogLevel, module: string, message: unknown, fields?: unknown, extra?: Record<string, unknown>): LogRecord {
  const raw = typeof message === "string" ? message : String(message);
  let m = escapeText(raw, MODULE_LOG_LIMITS.messageChars);
  // A cut message and its note fit in messageChars together.
  if (m.cut > 0) m = escapeText(raw, MODULE_LOG_LIMITS.messageChars - 80);
  const text = m.cut > 0 ? `${m.text} [cut: ${m.cut} more characters, over the limit of ${MODULE_LOG_LIMITS.messageChars}]` : m.text;
  const out: Record<string, unknown> = {};
  let fieldsCut = false;
  if (fields !== undefined && fields !== null) {
    const budget = { left: MODULE_LOG_LIMITS.fieldsChars, cut: false };
    const plain = plainValue(fields, 0, budget);
    if (plain && typeof plain === "object" && !Array.isArray(plain)) for (const [k, x] of Object.entries(plain)) setOwn(out, k, x);
    else out.fields = plain;
    fieldsCut = budget.cut;
  }
  if (extra) Object.assign(out, extra);
  if (fieldsCut) out.fields_cut = FIELDS_CUT_NOTE;
  return { time: Date.now(), level, source: module, message: text, ...(Object.keys(out).length ? { fields: out } : {}), origin: "module" };
}

const FIELDS_CUT_NOTE = `over the limits for log fields (${MODULE_LOG_LIMITS.fieldsChars} characters, ${MODULE_LOG_LIMITS.fieldsDepth} levels, ${MODULE_LOG_LIMITS.fieldsEntries} entries per level, ${MODULE_LOG_LIMITS.fieldString} characters per string): the rest is cut`;

/** Any value as plain JSON data within MODULE_LOG_LIMITS (see plainValue); `cut` says whether something was left out. */
export function plainData(v: unknown): { value: unknown; cut: boolean } {
  const budget = { left: MODULE_LOG_LIMITS.fieldsChars, cut: false };
  const value = plainValue(v, 0, budget);
  return { value, cut: budget.cut };
}

/**
 * Turn any value into plain JSON data (null, booleans, finite numbers, escaped strings, arrays,
 * objects) within the depth, width and size limits; what does not fit is replaced by a note and
 * `budget.cut` is set. Work is bounded by the limits, not by the size of the value.
 */
function plainValue(v: unknown, depth: number, budget: { left: number; cut: boolean }): unknown {
  const L = MODULE_LOG_LIMITS;
  if (v === null || v === undefined || typeof v === "boolean") {
    budget.left -= 5;
    return v ?? null;
  }
  if (typeof v === "number") {
    budget.left -= 24;
    return Number.isFinite(v) ? v : String(v);
  }
  if (typeof v === "bigint") {
    const s = escapeText(v.toString(), 64);
    budget.left -= s.text.length + 2;
    if (s.cut) budget.cut = true;
    return s.text;
  }
  if (typeof v === "string") {
    const s = escapeText(v, Math.max(0, Math.min(L.fieldString, budget.left)));
    budget.left -= s.text.length + 2;
    if (s.cut) budget.cut = true;
    return s.cut ? `${s.text}[cut: ${s.cut} more characters]` : s.text;
  }
  if (v instanceof Uint8Array) {
    budget.left -= 24;
    return `<${v.byteLength} bytes>`;
  }
  if (typeof v !== "object") {
    budget.left -= 16;
    return `<${typeof v}>`;
  }
  if (depth >= L.fieldsDepth) {
    budget.cut = true;
    budget.left -= 16;
    return "[cut: nested too deep]";
  }
  if (Array.isArray(v)) {
    const out: unknown[] = [];
    const n = v.length;
    for (let i = 0; i < n; i++) {
      if (i >= L.fieldsEntries || budget.left <= 0) {
        budget.cut = true;
        out.push(`[cut: ${n - i} more items]`);
        break;
      }
      out.push(plainValue(v[i], depth + 1, budget));
    }
    return out;
  }
  const out: Record<string, unknown> = {};
  let i = 0;
  // for..in with an early break: no work proportional to a huge object's key count.
  for (const key in v) {
    if (!Object.hasOwn(v, key)) continue;
    if (i >= L.fieldsEntries || budget.left <= 0) {
      budget.cut = true;
      out["[cut]"] = "more entries not shown";
      break;
    }
    const k = escapeText(key, L.fieldKey).text;
    budget.left -= k.length + 4;
    setOwn(out, k, plainValue((v as Record<string, unknown>)[key], depth + 1, budget));
    i++;
  }
  return out;
}

/** out[key] = value as an own property, even for "__proto__" (no prototype games through field names). */
function setOwn(out: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
}

// C0 and C1 control characters, DEL, line and paragraph separators, bidirectional controls
// (marks, embeddings, overrides, isolates), and unpaired surrogates.
const UNSAFE = /[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
const UNSAFE_ONE = new RegExp(UNSAFE.source);
const NAMED: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

function escapeChar(c: string): string {
  const named = NAMED[c];
  if (named) return named;
  const code = c.charCodeAt(0);
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
}

/** What JSON.stringify leaves unescaped in strings that a terminal still acts on (DEL, C1 controls, bidi controls, line separators). */
const JSON_UNSAFE = /[\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/g;

/** JSON for the operator's terminal: JSON.stringify, then \u escapes for what it leaves raw that a terminal acts on. */
export function terminalJson(value: unknown, indent?: number): string {
  return JSON.stringify(value, null, indent).replace(JSON_UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/**
 * Make text safe to print on one line: control characters, terminal escapes, bidirectional
 * controls and unpaired surrogates become visible escapes. At most `maxChars` characters come
 * out (an escape is not split); `cut` counts the input characters left out. With `keepNewlines`,
 * "\n" stays (the host's own multi-line messages).
 */
export function escapeText(s: string, maxChars: number, keepNewlines = false): { text: string; cut: number } {
  // Look at no more input than can come out (an escape only makes text longer).
  const slice = s.length > maxChars ? s.slice(0, maxChars) : s;
  let escaped = slice.replace(UNSAFE, (c) => (keepNewlines && c === "\n" ? c : escapeChar(c)));
  let used = slice.length;
  if (escaped.length > maxChars) {
    // Cut back to maxChars output characters without splitting an escape or a surrogate pair.
    let out = "";
    used = 0;
    for (const c of slice) {
      const e = UNSAFE_ONE.test(c) && !(keepNewlines && c === "\n") ? escapeChar(c) : c;
      if (out.length + e.length > maxChars) break;
      out += e;
      used += c.length;
    }
    escaped = out;
  }
  return { text: escaped, cut: s.length - used };
}

/**
 * One line for the operator's terminal: every control character escaped, newlines too (text
 * from outside must not start a line of its own), cut at `maxChars` saying how much was cut.
 */
export function terminalLine(text: string, maxChars: number): string {
  const shown = escapeText(text, maxChars);
  return shown.cut > 0 ? `${shown.text}... (${shown.cut} more characters)` : shown.text;
}

/** JSON.stringify that cannot throw: BigInt as a string, cycles and other failures as a note. */
function safeJson(v: unknown): string {
  try {
    return JSON.stringify(v, (_k, x: unknown) => (typeof x === "bigint" ? x.toString() : x)) ?? "null";
  } catch (err) {
    return JSON.stringify(`<not serialisable: ${(err as Error).message}>`);
  }
}

function jsonLine(r: LogRecord): string {
  try {
    return JSON.stringify(r, (_k, x: unknown) => (typeof x === "bigint" ? x.toString() : x));
  } catch (err) {
    // Host fields that cannot be serialised (a cycle): keep the line, say why the fields are missing.
    const { fields: _f, ...rest } = r;
    return JSON.stringify({ ...rest, fields_error: `fields not serialisable: ${(err as Error).message}` });
  }
}

/** Token bucket: `rate` lines per second, bursts up to `burst`. */
export class RateLimiter {
  private tokens: number;
  private last = Date.now();
  dropped = 0;

  constructor(private readonly rate = 200, private readonly burst = 400) {
    this.tokens = burst;
  }

  take(): boolean {
    const now = Date.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    this.dropped++;
    return false;
  }
}
