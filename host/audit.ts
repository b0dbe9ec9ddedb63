// The audit log: an append-only file of JSON lines recording every denied request and every
// privileged action (modules loaded with their grants, unloaded, crashed; methods marked as
// auditable in their capability family). The file is opened with O_APPEND and never
// rewritten by the host; one line per record, so a crash can cost at most the last line.
//
// What a module causes (its denied requests, its audited actions) is bounded per module:
// its text is cut (MODULE_LOG_LIMITS) and its records are charged to a budget of
// `audit_bytes_per_second` (a token bucket with a few seconds of burst). Over the budget,
// records are not written one by one but counted by kind, method and permission, and one
// summary record per interval (kind "summary") says what was left out, so a module hammering
// a denied method adds a bounded number of bytes and the audit still says what it tried.
// Lifecycle records and the operator's own actions are always written.
//
// The file itself is bounded too: past `audit_max_mb` it is rotated (audit.log -> audit.log.1
// -> ... -> audit.log.<audit_keep>, the oldest removed), so the audit of a host that runs for
// months takes at most (audit_keep + 1) x audit_max_mb of disk, and no outside log rotation
// (which would need the host to reopen the file) is needed.

import { mkdirSync, openSync, writeSync, closeSync, fstatSync, renameSync, rmSync } from "node:fs";
import path from "node:path";
import { ByteBucket, plainData } from "./log.ts";

type AuditKind = "denied" | "action" | "lifecycle" | "summary";

export interface AuditRecord {
  kind: AuditKind;
  module: string;
  /** What was attempted or done: a method name, or load/unload/crash/restart. */
  action: string;
  permission?: string;
  reason?: string;
  detail?: Record<string, unknown>;
}

/** Default bytes per second of audit records a module may cause (`audit_bytes_per_second`). */
const DEFAULT_AUDIT_BYTES_PER_SECOND = 16 * 1024;
/** At most one summary record per module per this interval. */
const AUDIT_SUMMARY_INTERVAL_MS = 5000;
/** Distinct (kind, method, permission) counts kept in one summary; the rest are counted as "other". */
const SUMMARY_KEYS = 32;
/** Characters of a reason kept in a record a module caused. */
const REASON_CHARS = 2048;

export interface AuditOptions {
  /** A module's audit byte rate; read on every record, so a reload applies. */
  moduleBytesPerSecond?: (module: string) => number;
  /** Bytes the file may reach before it is rotated (`audit_max_mb`); default 64 MiB. */
  maxBytes?: number;
  /** Rotated files kept (`audit_keep`: audit.log.1 is the newest); default 4. */
  keep?: number;
}

/** Default size of the audit file before it is rotated (`audit_max_mb`). */
const DEFAULT_AUDIT_MAX_MB = 64;
/** Default rotated audit files kept (`audit_keep`). */
const DEFAULT_AUDIT_KEEP = 4;

interface Pending {
  records: number;
  bytes: number;
  since: number;
  counts: Map<string, number>;
  timer: NodeJS.Timeout;
}

export class AuditLog {
  private fd: number | undefined;
  /** Bytes in the current file (read at open, then counted). */
  private size = 0;
  private readonly buckets = new Map<string, ByteBucket>();
  private readonly pending = new Map<string, Pending>();
  /** Records written, for tests and metrics. */
  count = 0;
  /** Records of modules not written one by one (counted in summaries). */
  summarised = 0;
  /** Times the file was rotated. */
  rotations = 0;

  constructor(readonly file: string, private readonly opts: AuditOptions = {}) {}

  private open(): number {
    if (this.fd === undefined) {
      mkdirSync(path.dirname(this.file), { recursive: true, mode: 0o700 });
      this.fd = openSync(this.file, "a", 0o600);
      this.size = fstatSync(this.fd).size;
    }
    return this.fd;
  }

  /** audit.log -> audit.log.1 -> ... -> audit.log.<keep>; the oldest is removed. A few renames. */
  private rotate(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    const keep = Math.max(1, this.opts.keep ?? DEFAULT_AUDIT_KEEP);
    rmSync(`${this.file}.${keep}`, { force: true });
    for (let i = keep - 1; i >= 1; i--) {
      try {
        renameSync(`${this.file}.${i}`, `${this.file}.${i + 1}`);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      }
    }
    try {
      renameSync(this.file, `${this.file}.1`);
    } catch (err) {
      // Removed from outside while open: the new file below starts the log again.
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    this.rotations++;
  }

  private rate(module: string): number {
    return this.opts.moduleBytesPerSecond?.(module) ?? DEFAULT_AUDIT_BYTES_PER_SECOND;
  }

  write(record: AuditRecord): void {
    if (!causedByModule(record)) {
      this.append(record);
      return;
    }
    const bounded = boundRecord(record);
    const line = JSON.stringify({ time: new Date().toISOString(), ...bounded }) + "\n";
    let bucket = this.buckets.get(record.module);
    if (!bucket) this.buckets.set(record.module, (bucket = new ByteBucket(() => this.rate(record.module))));
    if (bucket.take(Buffer.byteLength(line))) {
      this.appendLine(line);
      return;
    }
    this.summarise(record, Buffer.byteLength(line));
  }

  private append(record: AuditRecord): void {
    this.appendLine(JSON.stringify({ time: new Date().toISOString(), ...record }) + "\n");
  }

  private appendLine(line: string): void {
    const bytes = Buffer.byteLength(line);
    const max = this.opts.maxBytes ?? DEFAULT_AUDIT_MAX_MB * 1024 * 1024;
    this.open();
    if (this.size > 0 && this.size + bytes > max) {
      let rotated = false;
      try {
        this.rotate();
        rotated = true;
      } catch {
        // Not rotatable (permissions on the directory, say): the record is still written, to
        // the file as it is, and the next record tries again. An audit record is never dropped.
      }
      this.open();
      if (rotated) this.writeRaw(JSON.stringify({ time: new Date().toISOString(), kind: "lifecycle", module: "host", action: "audit_rotated", reason: `the file reached audit_max_mb (${max} bytes): earlier records are in ${path.basename(this.file)}.1 (rotation ${this.rotations} of this host)` }) + "\n");
    }
    this.writeRaw(line);
  }

  private writeRaw(line: string): void {
    // Synchronous and unbuffered: a record is on disk (in the page cache) before the request
    // it describes is answered.
    this.size += writeSync(this.open(), line);
    this.count++;
  }

  private summarise(record: AuditRecord, bytes: number): void {
    let p = this.pending.get(record.module);
    if (!p) {
      const timer = setTimeout(() => this.flush(record.module), AUDIT_SUMMARY_INTERVAL_MS);
      timer.unref();
      this.pending.set(record.module, (p = { records: 0, bytes: 0, since: Date.now(), counts: new Map(), timer }));
    }
    p.records++;
    p.bytes += bytes;
    this.summarised++;
    let key = `${record.kind} ${record.action.slice(0, 64)}${record.permission ? ` ${record.permission.slice(0, 64)}` : ""}`;
    if (!p.counts.has(key) && p.counts.size >= SUMMARY_KEYS) key = "other";
    p.counts.set(key, (p.counts.get(key) ?? 0) + 1);
  }

  /** Write the summary of what a module caused that was not written one by one. */
  private flush(module: string): void {
    const p = this.pending.get(module);
    if (!p) return;
    clearTimeout(p.timer);
    this.pending.delete(module);
    const rate = this.rate(module);
    this.append({
      kind: "summary", module, action: "rate_limited",
      reason: `${p.records} records (${p.bytes} bytes) this module caused were counted, not written one by one: over its audit rate limit of ${rate} bytes/s (raise audit_bytes_per_second in [modules.limits.${module}])`,
      detail: { records: p.records, bytes: p.bytes, from: new Date(p.since).toISOString(), counts: Object.fromEntries(p.counts) },
    });
  }

  close(): void {
    // Nothing is lost at a stop: pending summaries are written first.
    for (const module of [...this.pending.keys()]) this.flush(module);
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

/**
 * Denials and audited actions are caused by a module and bounded per module; lifecycle
 * records (the host's decisions) and the operator's actions over RPC are always written.
 */
function causedByModule(r: AuditRecord): boolean {
  if (r.kind !== "denied" && r.kind !== "action") return false;
  return !(r.module === "operator" && r.detail?.via === "rpc");
}

/** A module's record with its text cut and its detail made plain and bounded. */
function boundRecord(r: AuditRecord): AuditRecord {
  const out: AuditRecord = { kind: r.kind, module: r.module, action: r.action.slice(0, 256) };
  if (r.permission !== undefined) out.permission = r.permission.slice(0, 256);
  if (r.reason !== undefined) out.reason = r.reason.length > REASON_CHARS ? `${r.reason.slice(0, REASON_CHARS)} [cut: ${r.reason.length - REASON_CHARS} more characters, over the limit of ${REASON_CHARS}]` : r.reason;
  if (r.detail !== undefined) {
    const d = plainData(r.detail);
    out.detail = (d.value && typeof d.value === "object" ? d.value : { value: d.value }) as Record<string, unknown>;
    if (d.cut) out.detail.detail_cut = true;
  }
  return out;
}
