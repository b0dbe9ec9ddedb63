// The host log and the audit log under hostile modules: a module cannot forge a host line
// (pretty or JSON, native or TypeScript), cannot grow the host's memory with an endless line,
// cannot grow the log or the audit file beyond its byte budgets, and its crash is reported as
// how its process ended. Plus the pieces: the line cutter, escaping, bounded fields, the
// audit summaries, and the last-resort handler in a real process.

import test, { type ExecutionContext } from "ava";
import { execFile } from "node:child_process";
import { readdir, readFile, rm, stat } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { LineCutter } from "../runtime/output.ts";
import { escapeText, HOST_NOTE_BURST_BYTES, HOST_NOTE_BYTES_PER_SECOND, Logger, moduleRecord, MODULE_LOG_LIMITS, type LogRecord } from "../host/log.ts";
import { AuditLog } from "../host/audit.ts";
import { buildModulesDir, ROOT, startHost, tempDir, type TestHost } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { inlineModule } from "./helpers/modules.ts";

const NOISY = fileURLToPath(new URL("./fixtures/noisy-native/main.ts", import.meta.url));
const FORGED = "12:00:00.000 ERROR [host] FORGED host line";

async function writeNoisy(modulesDir: string, name: string, capabilities: string[]): Promise<void> {
  await writeNodeNative(modulesDir, name, NOISY, capabilities);
}

/** A host with one noisy native module in `mode` (see test/fixtures/noisy-native/main.ts). */
async function noisyHost(t: ExecutionContext, config: Record<string, unknown>, limits: Record<string, unknown> = {}, grants = ["read_chain_state"]): Promise<TestHost> {
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir);
  await writeNoisy(modulesDir, "noisy", grants);
  return startHost(t, {
    dir,
    grants: { noisy: grants },
    moduleLimits: { noisy: { restart: "never", ...limits } },
    moduleConfigs: { noisy: config },
  });
}

/** The physical lines of what was written (a written "line" with a raw newline is two). */
function physicalLines(lines: string[]): string[] {
  return lines.flatMap((l) => l.split(/\r\n|\r|\n|\u2028|\u2029/));
}

const RECORD_START = /^\d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO |WARN |ERROR) \[[^\]]+\] /;

/** Nothing `module` said starts a line, hides a control character, or passes for the host; in pretty and JSON output. */
function assertCannotForge(t: ExecutionContext, h: TestHost, module: string): void {
  const lines = physicalLines(h.lines);
  for (const line of lines) {
    t.true(RECORD_START.test(line) || line.startsWith("    "), `a line that is not a record start: ${JSON.stringify(line.slice(0, 200))}`);
    t.false(/[\x00-\x08\x0b-\x1f\x7f\u202e\u2028\u2029]/.test(line), `a raw control character: ${JSON.stringify(line.slice(0, 200))}`);
    t.false(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(line), "a lone surrogate");
  }
  const forged = lines.filter((l) => l.includes("FORGED"));
  t.true(forged.length >= 3, `${forged.length} lines carry the forgery`);
  for (const line of forged) t.regex(line, new RegExp(`^\\d\\d:\\d\\d:\\d\\d\\.\\d{3} (INFO |WARN |ERROR) \\[${module}\\] `), line);
  t.false(lines.some((l) => l.startsWith(FORGED)));

  // The same records as JSON lines: one valid JSON object per line, tagged with the module.
  const json: string[] = [];
  const jsonLogger = new Logger({ level: "debug", format: "json", write: (l) => json.push(l) });
  for (const r of h.records) jsonLogger.emit(r);
  for (const line of json) {
    t.false(line.includes("\n"));
    const parsed = JSON.parse(line) as LogRecord;
    if (JSON.stringify(parsed).includes("FORGED")) {
      t.is(parsed.source, module);
      t.is(parsed.origin, "module");
    }
  }
}

// ---------------------------------------------------------------------------------------
// Forging host lines

test("a native module cannot forge a host line through its log messages, fields, stdout or stderr", async (t) => {
  const h = await noisyHost(t, { mode: "forge" });
  await h.waitForLog(/^forge done$/, { source: "noisy", timeoutMs: 30_000 });
  await h.waitFor(() => h.logsOf("noisy").some((r) => r.fields?.stream === "stderr"), 10_000, "the stderr line");
  assertCannotForge(t, h, "noisy");
  const records = h.logsOf("noisy");
  const first = records.find((r) => r.message.startsWith("innocent"))!;
  t.is(first.message, `innocent\\n${FORGED}`);
  t.is(first.fields?.note, `a\\r\\n${FORGED}`);
  t.is(first.fields?.esc, "\\x1b[2J\\x1b[31mred");
  t.truthy(Object.keys(first.fields ?? {}).find((k) => k === `key\\n${FORGED}`));
  t.true(JSON.stringify(first.fields).includes("[cut: nested too deep]"));
  // (A lone surrogate cannot cross the wire: the decoder refuses a frame that is not valid
  // UTF-8, protocol.test.ts; escapeText's test covers lone surrogates in the host's own text.)
  t.truthy(records.find((r) => r.message === "bidi \\u202egnp.exe and no lone surrogate"));
  t.truthy(records.find((r) => r.message === "\\x1b]0;title\\x07bell" && r.fields?.stream === "stdout"));
  t.truthy(records.find((r) => r.message === `err\\u2028${FORGED} via stderr` && r.fields?.stream === "stderr"));
});

test("a TypeScript module cannot forge a host line through ctx.log, its fields or console", async (t) => {
  const body = [
    `ctx.log.error(${JSON.stringify(`innocent\n${FORGED}`)}, { note: ${JSON.stringify(`a\r\n${FORGED}`)}, esc: "\\x1b[2J" });`,
    `console.log(${JSON.stringify(`out\n${FORGED} via console`)});`,
    `ctx.log.warn(${JSON.stringify(`bidi \u202e and \x1b[31m ${FORGED}`)});`,
    `ctx.log.info("forge done");`,
  ].join("\n");
  const h = await startHost(t, { inline: { forger: inlineModule("forger", ["read_chain_state"], body) }, grants: { forger: ["read_chain_state"] } });
  await h.waitForLog(/^forge done$/, { source: "forger", timeoutMs: 30_000 });
  assertCannotForge(t, h, "forger");
  t.truthy(h.logsOf("forger").find((r) => r.message === `innocent\\n${FORGED}` && r.fields?.note === `a\\r\\n${FORGED}`));
});

test("a module named like a host source is tagged as a module in the pretty log", (t) => {
  const lines: string[] = [];
  const logger = new Logger({ format: "pretty", write: (l) => lines.push(l) });
  logger.module("host").log("error", "I am the host");
  logger.log("info", "host", "the real host");
  t.regex(lines[0]!, /^\d\d:\d\d:\d\d\.\d{3} ERROR \[module:host\] I am the host$/);
  t.regex(lines[1]!, /^\d\d:\d\d:\d\d\.\d{3} INFO {2}\[host\] the real host$/);
});

test("the host's own multi-line messages continue on indented lines", (t) => {
  const lines: string[] = [];
  const logger = new Logger({ format: "pretty", write: (l) => lines.push(l) });
  logger.log("error", "host", `configuration not reloaded:\n${FORGED}\x1b[2J`);
  const physical = physicalLines(lines);
  t.is(physical.length, 2);
  t.is(physical[1], `    ${FORGED}\\x1b[2J`);
});

// ---------------------------------------------------------------------------------------
// Escaping and bounded fields

test("escapeText shows control characters, terminal escapes, bidi controls and lone surrogates, and cuts without splitting an escape", (t) => {
  t.is(escapeText("a\nb\r\tc\x00\x1b[1m\x7f\x9b", Infinity).text, "a\\nb\\r\\tc\\x00\\x1b[1m\\x7f\\x9b");
  t.is(escapeText("\u202e\u2066\u2028\u200f", Infinity).text, "\\u202e\\u2066\\u2028\\u200f");
  t.is(escapeText("\ud83d\ude00 ok \ud800 \udc00", Infinity).text, "\ud83d\ude00 ok \\ud800 \\udc00");
  t.deepEqual(escapeText("ab\ncd", 4), { text: "ab\\n", cut: 2 });
  t.deepEqual(escapeText("ab\ncd", 3), { text: "ab", cut: 3 });
  t.deepEqual(escapeText("x".repeat(10_000), 100), { text: "x".repeat(100), cut: 9900 });
});

test("module fields become bounded plain JSON: depth, width, string size, huge and odd values", (t) => {
  let deep: Record<string, unknown> = { end: true };
  for (let i = 0; i < 60; i++) deep = { d: deep };
  const wide: Record<string, unknown> = {};
  for (let i = 0; i < 10_000; i++) wide[`k${i}`] = i;
  const r = moduleRecord("info", "m", "msg", {
    deep, wide, long: "z".repeat(1_000_000), big: 2n ** 200n, nan: NaN, inf: -Infinity, bin: new Uint8Array(5),
    arr: Array.from({ length: 1000 }, (_, i) => i), __proto__x: 1, lone: "\ud800",
  });
  const json = JSON.stringify(r);
  t.notThrows(() => JSON.parse(json));
  t.true(json.length < MODULE_LOG_LIMITS.fieldsChars * 2 + 1000, `${json.length} characters`);
  t.regex(String(r.fields?.fields_cut), /^over the limits for log fields \(65536 characters, 8 levels, 1024 entries per level, 8192 characters per string\)/);
  t.is(r.fields?.nan, "NaN");
  t.is(r.fields?.bin, "<5 bytes>");
  t.regex(String(r.fields?.big), /^\d+$/);
  t.true(JSON.stringify(r.fields?.deep).includes("[cut: nested too deep]"));
  // A field named __proto__ (decoded from MessagePack as an own key) stays a plain field.
  const proto = moduleRecord("info", "m", "msg", JSON.parse('{"__proto__": {"polluted": 1}}'));
  t.is((proto.fields as Record<string, unknown>).polluted, undefined);
  t.deepEqual(Object.getOwnPropertyDescriptor(proto.fields, "__proto__")?.value, { polluted: 1 });
  const cut = moduleRecord("info", "m", "m".repeat(100_000));
  t.true(cut.message.length <= MODULE_LOG_LIMITS.messageChars);
  t.regex(cut.message, /^m+ \[cut: 91888 more characters, over the limit of 8192\]$/);
});

// ---------------------------------------------------------------------------------------
// stdout and stderr

test("the line cutter hands on a 600 MiB line cut at the limit without building it, then the next line", (t) => {
  const lines: Array<[string, boolean]> = [];
  const cutter = new LineCutter((line, cut) => lines.push([line.toString(), cut]), 16);
  const mib = Buffer.alloc(1024 * 1024, "y");
  for (let i = 0; i < 600; i++) cutter.push(mib);
  cutter.push(Buffer.from("\nshort\r\nsplit "));
  cutter.push(Buffer.from("line\nexactly-16-bytes\n0123456789abcdefg\nlast"));
  cutter.end();
  t.deepEqual(lines, [
    ["y".repeat(16), true],
    ["short", false],
    ["split line", false],
    ["exactly-16-bytes", false],
    ["0123456789abcdef", true],
    ["last", false],
  ]);
});

test("a native module writing 600 MiB to stdout without a newline gets one cut line; the host and the module carry on", async (t) => {
  const h = await noisyHost(t, { mode: "bigline", mib: 600 });
  const after = await h.waitForLog(/^after the big line$/, { source: "noisy", timeoutMs: 120_000 });
  t.is(after.fields?.stream, "stdout");
  const big = h.logsOf("noisy").filter((r) => r.message.startsWith("yyyy"));
  t.is(big.length, 1);
  t.is(big[0]!.message, "y".repeat(4096));
  t.regex(String(big[0]!.fields?.cut), /longer than 4096 bytes/);
  t.is(h.mustStatus("noisy").state, "running");
});

// ---------------------------------------------------------------------------------------
// Byte budgets

test("a module flooding logs, stdout, stderr and denied calls adds a bounded number of bytes to the log and the audit", async (t) => {
  const logRate = 8192;
  const auditRate = 4096;
  const started = Date.now();
  const h = await noisyHost(t, { mode: "flood", seconds: 3 }, { log_bytes_per_second: logRate, audit_bytes_per_second: auditRate });
  await h.waitForLog(/^flood over$/, { source: "noisy", timeoutMs: 60_000 });
  const denied = h.manager.processOf("noisy")!.session.stats.denied;
  await h.stop();
  const seconds = (Date.now() - started) / 1000;

  // The log: what the module's own lines cost (the host's notes about it, its denials, have
  // their own budget, checked below).
  const notes = noteLines(h, "noisy");
  const moduleLines = h.lines.filter((l) => / \[noisy\] /.test(l) && !notes.includes(l));
  const logBytes = moduleLines.reduce((n, l) => n + Buffer.byteLength(l) + 1, 0);
  const totals = h.host.logger.module("noisy").totals;
  const summaries = h.logsOf("noisy").filter((r) => /log records \(\d+ bytes or more\) dropped in [\d.]+ s: over this module's log rate limit of 8192 bytes\/s \(raise log_bytes_per_second/.test(r.message));
  // Burst (4 s of rate, at least 64 KiB) + rate x time + one largest line (a full budget admits
  // one line larger than itself) + at most one summary (< 400 bytes) per 2 s.
  const largest = Math.max(...moduleLines.map((l) => Buffer.byteLength(l) + 1));
  const logBound = Math.max(4 * logRate, 65536) + logRate * seconds + largest + (seconds / 2 + 1) * 400;
  t.true(logBytes <= logBound, `${logBytes} log bytes in ${seconds.toFixed(1)} s, bound ${Math.round(logBound)}`);
  t.true(summaries.length >= 1, "a summary of what was dropped");
  t.true(totals.droppedBytes > 2 * logBytes, `offered ${totals.droppedBytes + totals.writtenBytes} bytes, wrote ${totals.writtenBytes}`);
  t.log(`log: offered ${totals.writtenBytes + totals.droppedBytes} bytes, wrote ${logBytes} bytes in ${moduleLines.length} lines over ${seconds.toFixed(1)} s (bound ${Math.round(logBound)})`);
  // The host's notes about it (one per denial, thousands of them): their own bounded budget.
  const noteBytes = notes.reduce((n, l) => n + Buffer.byteLength(l) + 1, 0);
  const noteBound = HOST_NOTE_BURST_BYTES + HOST_NOTE_BYTES_PER_SECOND * seconds + Math.max(...notes.map((l) => Buffer.byteLength(l) + 1)) + (seconds / 2 + 1) * 400;
  t.true(noteBytes <= noteBound, `${noteBytes} bytes of host notes in ${seconds.toFixed(1)} s, bound ${Math.round(noteBound)}`);
  t.true(notes.some((l) => / \[host\] \d+ host notes about noisy \(/.test(l)), "a summary of the host notes dropped");
  t.log(`host notes: wrote ${notes.length} lines, ${noteBytes} bytes (bound ${Math.round(noteBound)})`);

  // The audit: denials written one by one within the budget, the rest counted in summaries.
  const auditText = await readFile(h.config.host.audit_log, "utf8");
  const auditLines = auditText.trim().split("\n");
  const records = auditLines.map((l) => JSON.parse(l) as { kind: string; module: string; detail?: { records?: number; counts?: Record<string, number> } });
  const mine = auditLines.filter((_, i) => records[i]!.module === "noisy" && records[i]!.kind !== "lifecycle");
  const auditBytes = mine.reduce((n, l) => n + Buffer.byteLength(l) + 1, 0);
  const auditBound = Math.max(4 * auditRate, 65536) + auditRate * seconds + Math.max(...mine.map((l) => Buffer.byteLength(l) + 1)) + (seconds / 5 + 2) * 1000;
  t.true(auditBytes <= auditBound, `${auditBytes} audit bytes in ${seconds.toFixed(1)} s, bound ${Math.round(auditBound)}`);
  const one = records.filter((r) => r.module === "noisy" && r.kind === "denied").length;
  const summary = records.filter((r) => r.module === "noisy" && r.kind === "summary");
  t.true(summary.length >= 1, "an audit summary");
  const counted = summary.reduce((n, r) => n + (r.detail?.counts?.["denied storage_insert write_storage"] ?? 0), 0);
  t.is(one + counted, denied, "every denial is in the audit: written or counted");
  t.true(counted > 0, `${counted} of ${denied} denials counted in summaries`);
  t.log(`audit: ${denied} denials, ${one} written one by one, ${counted} counted in ${summary.length} summaries; ${auditBytes} bytes (bound ${Math.round(auditBound)})`);
});

/** The host's notes about `module` among the written lines: tagged with it (throttled, denied, disconnected) or [host] lines naming it. */
function noteLines(h: TestHost, module: string): string[] {
  return h.lines.filter((l) => new RegExp(` \\[${module}\\] (throttled|denied|disconnected): `).test(l) || new RegExp(` \\[host\\] .*(module=${module}\\b|host notes about ${module} )`).test(l));
}

test("the host's notes about a module have their own budget: written while the module's own log budget is spent, and a flood of them is dropped, counted and summarised", (t) => {
  const lines: string[] = [];
  const logger = new Logger({ write: (l) => lines.push(l), moduleBytesPerSecond: () => 1024 });
  const m = logger.module("m");
  for (let i = 0; i < 100; i++) m.log("info", "x".repeat(8000));
  t.true(m.totals.dropped > 80, `the module's own budget is spent (${m.totals.dropped} of 100 dropped)`);
  t.false(m.log("info", "z".repeat(4000)), "its own next line is dropped");
  t.true(logger.note("m", "warn", "denied: storage_insert needs write_storage"), "the host's note is written all the same");
  t.regex(lines.at(-1)!, / \[m\] denied: storage_insert needs write_storage$/);
  t.true(logger.note("m", "info", "m: throttled: its output", { limit: "cpu" }, "host"));
  t.regex(lines.at(-1)!, / \[host\] m: throttled: its output limit=cpu module=m$/);

  // A flood of notes (each event it causes makes one) is held to the notes' own budget.
  const before = lines.length;
  const started = Date.now();
  for (let i = 0; i < 20_000; i++) logger.note("m", "warn", `event #${i} not delivered to m: ${"y".repeat(100)}`, undefined, "host");
  const seconds = (Date.now() - started) / 1000;
  const bytes = lines.slice(before).reduce((n, l) => n + Buffer.byteLength(l) + 1, 0);
  const bound = HOST_NOTE_BURST_BYTES + HOST_NOTE_BYTES_PER_SECOND * seconds + 400;
  t.true(bytes <= bound, `${bytes} bytes of notes written, bound ${Math.round(bound)}`);
  t.true(m.noteTotals.dropped > 19_000, `${m.noteTotals.dropped} of 20 000 notes dropped`);
  m.summarise();
  t.regex(lines.at(-2)!, new RegExp(`\\[host\\] \\d+ host notes about m \\(\\d+ bytes or more\\) dropped in [\\d.]+ s: over the host's budget for notes about one module \\(${HOST_NOTE_BYTES_PER_SECOND} bytes/s`));
});

test("a native module that floods its own log past its budget while being throttled and denied cannot hide the host's throttled and denied notes about it", async (t) => {
  t.timeout(120_000);
  const seconds = 14;
  const h = await noisyHost(t, { mode: "hide", seconds }, { log_bytes_per_second: 1024, requests_per_second: 20 });
  const started = Date.now();
  const log = h.host.logger.module("noisy");
  // Its own budget is spent (a 64 KiB burst, then 1 KiB/s, against lines every 2 ms)...
  await h.waitFor(() => log.totals.dropped >= 2000, 60_000, "the module's own lines to be dropped");
  const since = h.mark();
  const droppedAt = log.totals.dropped;
  // ...and from then on the host's notes about it are still written: a denial, and (the next
  // one, at most once per 10 s) the throttled note.
  await h.waitForLog(/^denied: .*storage_insert/, { source: "noisy", since, timeoutMs: 60_000 });
  await h.waitForLog(/^throttled: its requests wait for .*requests_per_second \(20\)/, { source: "noisy", since, timeoutMs: 60_000 });
  t.true(log.totals.dropped > droppedAt, "the module was still flooding its log meanwhile");
  await h.waitForLog(/^hide over$|^\d+ log records/, { source: "noisy", since, timeoutMs: 60_000 });
  await h.stop();
  const elapsed = (Date.now() - started) / 1000;
  // The notes stay within their own budget: burst + rate x time + one largest + summaries.
  const notes = noteLines(h, "noisy");
  const noteBytes = notes.reduce((n, l) => n + Buffer.byteLength(l) + 1, 0);
  const bound = HOST_NOTE_BURST_BYTES + HOST_NOTE_BYTES_PER_SECOND * elapsed + Math.max(...notes.map((l) => Buffer.byteLength(l) + 1)) + (elapsed / 2 + 1) * 400;
  t.true(noteBytes <= bound, `${noteBytes} bytes of host notes in ${elapsed.toFixed(1)} s, bound ${Math.round(bound)}`);
  t.log(`module lines dropped ${log.totals.dropped}, written ${log.totals.written}; host notes written ${log.noteTotals.written} (${noteBytes} bytes), dropped ${log.noteTotals.dropped}`);
});

test("audit summaries: over the budget, records are counted by kind, method and permission and summarised at close", async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, "audit.log");
  const audit = new AuditLog(file, { moduleBytesPerSecond: () => 1024 });
  for (let i = 0; i < 2000; i++) audit.write({ kind: "denied", module: "m", action: "storage_insert", permission: "write_storage", reason: "r".repeat(100_000) });
  audit.write({ kind: "lifecycle", module: "m", action: "crash", reason: "always written" });
  audit.write({ kind: "action", module: "operator", action: "unload", detail: { via: "rpc", ok: true } });
  audit.close();
  const records = (await readFile(file, "utf8")).trim().split("\n").map((l) => JSON.parse(l) as Record<string, any>);
  const written = records.filter((r) => r.kind === "denied");
  t.true(written.length > 0 && written.length < 100, `${written.length} written one by one`);
  t.true(written.every((r) => r.reason.length < 2120 && r.reason.endsWith("more characters, over the limit of 2048]")), "reasons are cut");
  const summary = records.find((r) => r.kind === "summary")!;
  t.is(summary.detail.counts["denied storage_insert write_storage"] + written.length, 2000);
  t.regex(summary.reason, /over its audit rate limit of 1024 bytes\/s \(raise audit_bytes_per_second/);
  t.truthy(records.find((r) => r.kind === "lifecycle" && r.reason === "always written"));
  t.truthy(records.find((r) => r.module === "operator" && r.action === "unload"));
});

test("the audit file is rotated at audit_max_mb and keeps audit_keep old files: its disk use is bounded, the newest records stay", async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, "audit.log");
  const max = 64 * 1024;
  // An operator's actions are always written, whatever a module's budget: 5000 of ~200 bytes
  // are ~1 MB, sixteen times the size limit.
  const audit = new AuditLog(file, { maxBytes: max, keep: 2 });
  for (let i = 0; i < 5000; i++) audit.write({ kind: "action", module: "operator", action: "reload", reason: `record ${i} ${"x".repeat(150)}`, detail: { via: "rpc" } });
  audit.close();
  const names = (await readdir(dir)).sort();
  t.deepEqual(names, ["audit.log", "audit.log.1", "audit.log.2"], "the file and two rotated ones, the oldest removed");
  for (const name of names) {
    const size = (await stat(path.join(dir, name))).size;
    t.true(size <= max, `${name}: ${size} bytes, limit ${max}`);
  }
  const current = (await readFile(file, "utf8")).trim().split("\n").map((l) => JSON.parse(l) as Record<string, any>);
  t.is(current[0]!.action, "audit_rotated", "a new file says it follows a rotation");
  t.regex(current[0]!.reason, /earlier records are in audit\.log\.1/);
  t.regex(current.at(-1)!.reason, /^record 4999 /, "the newest record is in the current file");
  const previous = (await readFile(`${file}.1`, "utf8")).trim().split("\n").map((l) => JSON.parse(l) as Record<string, any>);
  const n = (r: Record<string, any>) => Number(/^record (\d+)/.exec(r.reason)?.[1]);
  t.is(n(previous.at(-1)!) + 1, n(current[1]!), "no record is lost between the two newest files");
  t.true(audit.rotations > 10, `${audit.rotations} rotations`);
  // A host started again appends to the file it finds, counting its size.
  const again = new AuditLog(file, { maxBytes: max, keep: 2 });
  again.write({ kind: "lifecycle", module: "m", action: "load" });
  t.true((await stat(file)).size <= max);
  // Removed from outside while open: the next rotation starts a new file; writing never throws.
  await rm(file);
  for (let i = 0; i < 1000; i++) again.write({ kind: "action", module: "operator", action: "reload", reason: `after ${i} ${"y".repeat(150)}`, detail: { via: "rpc" } });
  again.close();
  const fresh = (await readFile(file, "utf8")).trim().split("\n").map((l) => JSON.parse(l) as Record<string, any>);
  t.is(fresh[0]!.action, "audit_rotated");
  t.regex(fresh.at(-1)!.reason, /^after 999 /);
});

// ---------------------------------------------------------------------------------------
// Crash reasons

test("a module that exits with unread data on its channel is reported by its exit code, not a socket error", async (t) => {
  const h = await noisyHost(t, { mode: "exit", code: 3 });
  const crashed = await h.waitForEvent("ModuleCrashed", (p) => p.module === "noisy", { timeoutMs: 30_000 });
  const error = String((crashed.payload as { error: string }).error);
  t.is(error, "exited with code 3");
  const line = await h.waitForLog(/^noisy crashed: /, { source: "host" });
  t.is(line.message, "noisy crashed: exited with code 3");
});

test('a clean exit under restart = "always": restarts back off 250, 500 ms, then it gives up; what it wrote just before exiting is in the log', async (t) => {
  const h = await noisyHost(t, { mode: "quit" }, { restart: "always", max_restarts: 2, restart_window_ms: 60_000 });
  const s = await h.waitForState("noisy", "failed", 30_000);
  t.regex(s.problem ?? "", /exited with code 0/);
  t.regex(s.problem ?? "", /gave up after 2 restarts within 60000 ms/);
  const host = h.logsOf("host").map((r) => r.message);
  const restarts = host.filter((m) => m.startsWith("restarting noisy"));
  t.deepEqual(restarts, ["restarting noisy in 250 ms (restart 1 of 2)", "restarting noisy in 500 ms (restart 2 of 2)"]);
  const crashes = h.events.filter((e) => e.type === "ModuleCrashed" && (e.payload as { module: string }).module === "noisy");
  t.is(crashes.length, 3, "three instances, each ended by its own clean exit");
  for (const c of crashes) t.regex(String((c.payload as { error: string }).error), /exited with code 0/);
  // The backoff is a lower bound on the time between a crash and the next start.
  const starts = h.records.filter((r) => r.source === "host" && /^loaded noisy /.test(r.message)).map((r) => r.time);
  const crashTimes = crashes.map((c) => c.time);
  t.is(starts.length, 3);
  t.true(starts[1]! - crashTimes[0]! >= 250, `restart 1 after ${starts[1]! - crashTimes[0]!} ms`);
  t.true(starts[2]! - crashTimes[1]! >= 500, `restart 2 after ${starts[2]! - crashTimes[1]!} ms`);
  // Every instance's last words reached the log (its stdout and stderr were read to the end).
  // Under "on-failure" (the default) a clean exit is not a failure: test below.
  const words = h.logsOf("noisy").map((r) => r.message).filter((m) => /^last words on (stdout|stderr) \d+$/.test(m));
  t.is(words.length, 6, words.join("\n"));
});

test('a clean exit under restart = "on-failure" is reported and not restarted', async (t) => {
  const h = await noisyHost(t, { mode: "quit" }, { restart: "on-failure", max_restarts: 2 });
  const s = await h.waitForState("noisy", "crashed", 30_000);
  t.regex(s.problem ?? "", /exited with code 0/);
  const crash = await h.waitForEvent("ModuleCrashed", (p) => p.module === "noisy");
  t.is((crash.payload as { will_restart: boolean }).will_restart, false);
  await new Promise((r) => setTimeout(r, 600)); // past the first backoff: no restart came
  t.is(h.mustStatus("noisy").state, "crashed");
  t.is(h.logsOf("host").filter((r) => r.message.startsWith("restarting noisy")).length, 0);
});

test("a module that closes its channel and keeps running is ended, and the reason says so", async (t) => {
  const h = await noisyHost(t, { mode: "close" });
  const crashed = await h.waitForEvent("ModuleCrashed", (p) => p.module === "noisy", { timeoutMs: 30_000 });
  t.regex(String((crashed.payload as { error: string }).error), /^closed its channel and did not exit within 2000 ms: killed by SIGKILL$/);
});

test("a module that runs out of memory is reported as such", async (t) => {
  const h = await noisyHost(t, { mode: "oom" }, { address_space_mb: 0 });
  const crashed = await h.waitForEvent("ModuleCrashed", (p) => p.module === "noisy", { timeoutMs: 60_000 });
  t.regex(String((crashed.payload as { error: string }).error), /^killed by SIGABRT( \(exit code 134\))?: out of memory \(its stderr reported a full V8 heap\)$/);
});

// ---------------------------------------------------------------------------------------
// The last resort

test("the last-resort handler logs an escaped error, ends the module it came from, and keeps the process alive", async (t) => {
  const script = fileURLToPath(new URL("./fixtures/last-resort/main.ts", import.meta.url));
  const { stdout } = await promisify(execFile)(path.join(ROOT, "node_modules/.bin/node"), ["--import=tsx", script], { cwd: ROOT, timeout: 30_000 });
  const out = stdout.trim().split("\n");
  t.true(out.includes("contained evil"), stdout);
  t.true(out.includes("alive after the errors"), stdout);
  const logs = out.filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as LogRecord);
  t.truthy(logs.find((r) => /^uncaught exception while serving module evil .*boom from evil's input/s.test(r.message)));
  t.truthy(logs.find((r) => /^unhandled rejection while serving module evil .*rejected for evil/s.test(r.message)));
  t.truthy(logs.find((r) => /^uncaught exception \(a host bug; the host carries on\): .*unattributed/s.test(r.message)));
  t.true(out.includes("gave up: 10 unexpected errors within 60 s"), stdout);
});
