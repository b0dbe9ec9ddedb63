// Hostile probes of round 19 (issue #8): a native module's data directory as the file API sees
// it, and the command line as the module's outlet.
//   files   a native module shapes its data directory with plain system calls (names of 255
//           bytes, with a newline, terminal escapes or bytes that are not UTF-8; links to
//           /proc/self/environ, /proc/self/root, its own channel, its mount point, "..", a loop
//           of two links, a directory; a tree 60 deep; 100,000 files of 201-byte names in one
//           directory; a directory renamed back and forth with a link to /etc, and a file grown
//           and truncated, while the API reads through them) and asks the API about each. A
//           probe that found nothing: no link is followed (permission_denied), a name past 255
//           bytes or a path past 32 directories is refused before the disk, the listing stops
//           at MAX_LIST_ENTRIES, a read stops at MAX_FILE_BYTES, and what the host logs and
//           audits of the names is escaped.
//   call    `modhost call` prints a module's answer of ~1 MiB of terminal escapes (escaped) and
//           its largest binary answer (15 MiB, 30 MiB of hex): time and the command's memory.
//   answer  whoever listens at the RPC address answers `modhost call` without end: before, the
//           command gathered the whole answer in memory, then parsed it; now it refuses past
//           [rpc] max_response_bytes + ANSWER_ENVELOPE_BYTES, counted as it arrives.
// While they run: the canary stores every block within 5 s, RPC answers within 5 s, no turn of
// the host's loop takes 250 ms of its CPU, its heap, log and descriptors stay within bounds.

import test from "ava";
import { execa } from "execa";
import { readFile, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { MAX_FILE_BYTES, MAX_LIST_ENTRIES, measureDataDir } from "../capabilities/fs-path.ts";
import { ANSWER_ENVELOPE_BYTES, DEFAULT_MAX_RESPONSE_BYTES } from "../host/rpc/answer-limit.ts";
import { buildModulesDir, GOOD_GRANTS, startHost, tempDir } from "./helpers/host.ts";
import { watchHost } from "./helpers/host-watch.ts";
import { writeNodeNative } from "./helpers/native.ts";

const FILES = fileURLToPath(new URL("./fixtures/hostile-round19/files.ts", import.meta.url));
const BIN = fileURLToPath(new URL("../bin/modhost.js", import.meta.url));
const CAPS = ["read_filesystem", "write_filesystem", "manage_filesystem", "register_rpc_endpoint"];
const MB = 1024 * 1024;

/** Control characters a terminal acts on (C0 but the newline, DEL, C1) and bidi overrides. */
const RAW_CONTROL = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/;

/** Run the real CLI under /usr/bin/time: its exit code, output, wall time and peak RSS. */
async function cli(args: string[]): Promise<{ exitCode: number; stdout: string; stderr: string; ms: number; rssMb: number }> {
  const t0 = performance.now();
  const r = await execa("/usr/bin/time", ["-f", "maxrss=%M", process.execPath, BIN, ...args], { reject: false, timeout: 120_000, maxBuffer: 256 * MB, env: { NO_COLOR: "1" } });
  const rss = /maxrss=(\d+)/.exec(r.stderr);
  return { exitCode: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr.replace(/maxrss=\d+\s*$/, ""), ms: performance.now() - t0, rssMb: rss ? Number(rss[1]) / 1024 : -1 };
}

test.serial("a native module's data directory shaped with raw system calls (255-byte, newline, escape and non-UTF-8 names; links to /proc/self, its channel, its mount point, .., a loop; a tree 60 deep; 100,000 files in one directory; a directory swapped with a link to /etc and a file grown and truncated while read) never makes the file API follow a link, list or read past its limits, or put a raw control character in the host's log or audit, and the host's walk of it (data_volume = \"scan\", 100,000+ entries) takes no long turn of its loop, while the canary stores every block and RPC answers", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  await writeNodeNative(modulesDir, "r19-files", FILES, CAPS);
  const h = await startHost(t, {
    dir,
    modules: [],
    grants: { good: GOOD_GRANTS, "r19-files": CAPS },
    // "scan": the host walks the directory (at each start, on changes, every 10 s), not statfs.
    moduleLimits: { "r19-files": { max_data_files: 150_000, data_volume: "scan", restart: "never" } },
    moduleConfigs: { "r19-files": { files: 100_000 } },
  });
  await h.waitForState("good", "running", 60_000);
  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(500, 4);
  const report = (await h.waitForLog(/^probe report$/, { source: "r19-files", since: 0, timeoutMs: 240_000 })).fields as Record<string, any>;
  await canary.stop();
  t.log(JSON.stringify(report).slice(0, 6000));
  t.log(`uptime: ${(await readFile("/proc/loadavg", "utf8")).trim()}`);

  // Names: the 255-byte name is read; a newline or escape is no path the API takes; the
  // non-UTF-8 name is listed with U+FFFD and matches no file.
  t.is(report.names.long, "ok: 4 bytes");
  t.is(report.names.newline, "invalid_params");
  t.is(report.names.escapes, "invalid_params");
  t.regex(report.names.invalidAsListed, /^(not_found|invalid_params)$/);
  t.is(report.names.tooLong, "invalid_params", "a name past 255 bytes is refused before the disk");
  t.true((report.rootListing as string[]).some((e) => e.startsWith("file:\"bad-\ufffd")), "the non-UTF-8 name is listed with replacement characters");

  // Links: never followed, whatever they point at; a write through one lands nowhere.
  for (const [name, a] of Object.entries(report.links as Record<string, Record<string, string>>)) {
    t.regex(a.read!, /^(permission_denied|invalid_params)$/, `${name}: read ${a.read}`);
    t.regex(a.stat!, /^(permission_denied|invalid_params)$/, `${name}: stat ${a.stat}`);
    t.regex(a.list!, /^(permission_denied|invalid_params)$/, `${name}: list ${a.list}`);
    t.regex(a.through!, /^(permission_denied|invalid_params|not_found)$/, `${name}: read through it ${a.through}`);
    t.regex(a.write!, /^(permission_denied|invalid_params|not_found)$/, `${name}: write through it ${a.write}`);
  }
  t.true(report.linkTargetsKept, "no link was replaced");
  // Deep: the walk's bound (MAX_SCAN_DEPTH 64) holds the tree; the API's paths stop at 32.
  t.is(report.deep.list, "invalid_params", "a path of 60 directories is refused");
  t.is(report.deep.listAt30, "ok: 1 entries");
  // Many: the listing stops at MAX_LIST_ENTRIES.
  t.is(report.many.list, "quota_exceeded", `listing 100,000 files stops at ${MAX_LIST_ENTRIES}`);
  // Swap: a read through the swapped name gets the file inside, or is refused; never /etc's.
  const swapContents = report.swap.contents as string[];
  t.true(swapContents.every((c) => c === "swap inside"), `only the inside file was read: ${JSON.stringify(swapContents).slice(0, 200)}`);
  t.true(report.swap.renames > 0, "the renames ran during the reads");
  t.log(`swap: ${JSON.stringify(report.swap.codes)} over ${report.swap.renames} renames`);
  // Grow: a read is at most MAX_FILE_BYTES, or refused naming it.
  t.true(report.grow.largest <= MAX_FILE_BYTES, `largest read ${report.grow.largest} bytes`);
  t.true(Object.keys(report.grow.codes).every((c) => c === "ok" || c === "quota_exceeded"), JSON.stringify(report.grow.codes));
  // Nothing the module named reached the host's log or audit raw.
  t.false(h.lines.some((l) => RAW_CONTROL.test(l)), "no host log line holds a raw control character");
  const audit = await readFile(h.config.host.audit_log, "utf8").catch(() => "");
  t.false(RAW_CONTROL.test(audit), "no audit record holds a raw control character");
  t.regex(audit, /delete_file/, "the deletes were audited");
  t.true(audit.length < MB, `the audit log is ${audit.length} bytes`);
  t.is(h.mustStatus("r19-files").state, "running", `the module runs (within max_data_files): ${h.status("r19-files")?.problem ?? ""}`);
  // What a start measures: the whole directory, walked in slices (MAX_SCAN_DEPTH holds the 60-deep tree).
  const t0 = performance.now();
  const m = await measureDataDir(path.join(h.config.modules.data_dir, "r19-files"), { maxBytes: 0, maxEntries: 150_000 }, "r19-files");
  t.log(`a start's walk: ${m.entries} entries, ${m.bytes} bytes in ${(performance.now() - t0).toFixed(0)} ms, over: ${m.over ?? "no"}`);
  t.true(m.entries > 100_000 && m.over === undefined, "the walk counts every entry and is within the quota");
  const m2 = await measureDataDir(path.join(h.config.modules.data_dir, "r19-files"), { maxBytes: 0, maxEntries: 10_000 }, "r19-files");
  t.is(m2.entries, 10_001, "against max_data_files = 10,000 the walk stops at the first entry past it");
  t.regex(m2.over ?? "", /max_data_files = 10000/);
  watch.sample();
  watch.assertCanary(t);
  await watch.finish(t, 1);
});

test.serial("`modhost call` prints a module's ~1 MiB answer of terminal escapes escaped and its largest binary answer (15 MiB, as 30 MiB of hex) within the command's bounds, while the canary stores every block and RPC answers", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  await writeNodeNative(modulesDir, "r19-files", FILES, CAPS);
  const h = await startHost(t, { dir, modules: [], grants: { good: GOOD_GRANTS, "r19-files": CAPS }, moduleConfigs: { "r19-files": { files: 10 } } });
  await h.waitForLog(/^probe report$/, { source: "r19-files", since: 0, timeoutMs: 120_000 });
  const conn = ["--rpcport", String(h.host.rpcServer!.address!.port), "--rpccookiefile", h.config.rpc.cookie_file];
  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(500, 2);
  const s = await cli(["call", "r19-files.big_string", ...conn]);
  const b = await cli(["call", "r19-files.big_binary", ...conn]);
  await canary.stop();
  const load = (await readFile("/proc/loadavg", "utf8")).trim();
  t.log(`big_string: exit ${s.exitCode}, ${s.stdout.length} characters in ${s.ms.toFixed(0)} ms, peak RSS ${s.rssMb.toFixed(0)} MB; big_binary: exit ${b.exitCode}, ${b.stdout.length} characters in ${b.ms.toFixed(0)} ms, peak RSS ${b.rssMb.toFixed(0)} MB (load ${load})`);
  t.is(s.exitCode, 0, s.stderr.slice(0, 500));
  t.is(b.exitCode, 0, b.stderr.slice(0, 500));
  t.false(RAW_CONTROL.test(s.stdout), "the escapes are printed escaped");
  t.regex(s.stdout, /\\x1b\]52;c;ZXZpbA==\\x07\\x1b\[2J\\r\\u202e\\x9b31m\\x7f/, "and are all still there, visibly");
  t.true(s.stdout.length > 900 * 1024, "the whole answer is printed");
  // Printed to a pipe: before, the command exited as soon as it had written, cutting the output at the pipe's buffer (146,176 of its 31,457,280 characters).
  t.is(b.stdout.length, 15 * MB * 2, "the binary answer is printed whole, as hex");
  t.false(RAW_CONTROL.test(b.stdout));
  // The command holds its answer a few times over (the text, its parse, its printed form).
  t.true(b.rssMb < 512, `modhost call's peak RSS for the 15 MiB answer: ${b.rssMb.toFixed(0)} MB`);
  watch.assertCanary(t);
  await watch.finish(t, 1);
});

test("`modhost call` answered without end by whatever listens at the RPC address (an endless chunked body, or a declared 1 GiB) refuses past [rpc] max_response_bytes + ANSWER_ENVELOPE_BYTES, counted as it arrives, naming the key (before: it gathered the whole answer in memory)", async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const cookie = path.join(dir, ".cookie");
  await writeFile(cookie, "__cookie__:secret");
  let sent = 0;
  let declare = false;
  const chunk = Buffer.alloc(MB, 0x30);
  const server = http.createServer((req, res) => {
    req.resume();
    if (declare) {
      res.writeHead(200, { "Content-Type": "application/json", "Content-Length": String(1024 * MB) });
      res.write("[");
      return;
    }
    res.writeHead(200, { "Content-Type": "application/json" });
    res.write("[");
    const more = () => {
      while (!res.destroyed) {
        if (sent >= 2048 * MB) return res.end("]");
        sent += chunk.length;
        if (!res.write(chunk)) break;
      }
      if (!res.destroyed) res.once("drain", more);
    };
    more();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.teardown(() => server.close());
  const conn = ["--rpcport", String((server.address() as AddressInfo).port), "--rpccookiefile", cookie];
  const limit = DEFAULT_MAX_RESPONSE_BYTES + ANSWER_ENVELOPE_BYTES;

  const endless = await cli(["call", "anything", ...conn]);
  t.log(`endless body: exit ${endless.exitCode} after ${endless.ms.toFixed(0)} ms, ${(sent / MB).toFixed(0)} MiB sent, peak RSS ${endless.rssMb.toFixed(0)} MB: ${endless.stderr.slice(0, 400)}`);
  t.not(endless.exitCode, 0);
  t.regex(endless.stderr, new RegExp(`larger than the ${limit} bytes a modhost answer may be \\(\\[rpc\\] max_response_bytes = ${DEFAULT_MAX_RESPONSE_BYTES} plus ANSWER_ENVELOPE_BYTES\\)`));
  t.true(sent < 1024 * MB, `the command stopped reading (${(sent / MB).toFixed(0)} MiB sent)`);
  t.true(endless.rssMb < 256, `its peak RSS ${endless.rssMb.toFixed(0)} MB`);

  declare = true;
  const declared = await cli(["call", "anything", ...conn]);
  t.log(`declared 1 GiB: exit ${declared.exitCode} after ${declared.ms.toFixed(0)} ms: ${declared.stderr.slice(0, 400)}`);
  t.not(declared.exitCode, 0);
  t.regex(declared.stderr, new RegExp(`is ${1024 * MB} bytes or more, larger than the ${limit} bytes`), "refused at its declared length, before any of it is read");
});
