// The host log. Lines are tagged with where they come from ("host", "chain", or a module's
// name). Pretty output for terminals, JSON lines for machines. Module logs are rate-limited
// per module so a chatty module cannot flood the host log; dropped lines are counted.

import type { LogLevel } from "../protocol/messages.ts";

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const COLOURS: Record<LogLevel, string> = { debug: "\x1b[90m", info: "\x1b[36m", warn: "\x1b[33m", error: "\x1b[31m" };

export interface LogRecord {
  time: number;
  level: LogLevel;
  source: string;
  message: string;
  fields?: Record<string, unknown>;
}

export type LogSink = (record: LogRecord) => void;

export interface LoggerOptions {
  level?: LogLevel;
  format?: "pretty" | "json";
  /** Where lines go; defaults to stderr. */
  write?: (line: string) => void;
  colour?: boolean;
}

export class Logger {
  private readonly level: number;
  private readonly sinks = new Set<LogSink>();
  private readonly write: (line: string) => void;
  private readonly format: "pretty" | "json";
  private readonly colour: boolean;

  constructor(opts: LoggerOptions = {}) {
    this.level = ORDER[opts.level ?? "info"];
    this.format = opts.format ?? "pretty";
    this.write = opts.write ?? ((line) => process.stderr.write(line + "\n"));
    this.colour = opts.colour ?? (opts.write === undefined && process.stderr.isTTY === true);
  }

  /** Also hand every record (at any level) to `sink`, e.g. a test collecting lines. */
  addSink(sink: LogSink): () => void {
    this.sinks.add(sink);
    return () => this.sinks.delete(sink);
  }

  log(level: LogLevel, source: string, message: string, fields?: Record<string, unknown>): void {
    const record: LogRecord = { time: Date.now(), level, source, message, ...(fields && Object.keys(fields).length ? { fields } : {}) };
    for (const sink of this.sinks) sink(record);
    if (ORDER[level] < this.level) return;
    this.write(this.format === "json" ? JSON.stringify(record) : this.pretty(record));
  }

  private pretty(r: LogRecord): string {
    const t = new Date(r.time).toISOString().slice(11, 23);
    const f = r.fields ? " " + Object.entries(r.fields).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ") : "";
    const lvl = r.level.toUpperCase().padEnd(5);
    const src = `[${r.source}]`;
    if (!this.colour) return `${t} ${lvl} ${src} ${r.message}${f}`;
    return `\x1b[90m${t}\x1b[0m ${COLOURS[r.level]}${lvl}\x1b[0m \x1b[1m${src}\x1b[0m ${r.message}\x1b[90m${f}\x1b[0m`;
  }

  for(source: string): SourceLogger {
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
