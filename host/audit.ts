// The audit log: an append-only file of JSON lines recording every denied request and every
// privileged action (modules loaded with their grants, unloaded, crashed; methods marked as
// auditable in their capability family). The file is opened with O_APPEND and never
// rewritten by the host; one line per record, so a crash can cost at most the last line.

import { mkdirSync, openSync, writeSync, closeSync } from "node:fs";
import path from "node:path";

export type AuditKind = "denied" | "action" | "lifecycle";

export interface AuditRecord {
  kind: AuditKind;
  module: string;
  /** What was attempted or done: a method name, or load/unload/crash/restart. */
  action: string;
  permission?: string;
  reason?: string;
  detail?: Record<string, unknown>;
}

export class AuditLog {
  private fd: number | undefined;
  /** Records written, for tests and metrics. */
  count = 0;

  constructor(readonly file: string) {}

  private open(): number {
    if (this.fd === undefined) {
      mkdirSync(path.dirname(this.file), { recursive: true, mode: 0o700 });
      this.fd = openSync(this.file, "a", 0o600);
    }
    return this.fd;
  }

  write(record: AuditRecord): void {
    const line = JSON.stringify({ time: new Date().toISOString(), ...record }) + "\n";
    // Synchronous and unbuffered: a record is on disk (in the page cache) before the request
    // it describes is answered.
    writeSync(this.open(), line);
    this.count++;
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
