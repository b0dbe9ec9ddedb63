// Gaps left by the round before (issue #8), each attacked here:
// - modules waiting for room in [host] module_bytes_mb are woken when bytes are let go, not
//   each on a timer of its own (256 modules waiting asked again 100 times a second each);
// - a start reads a large modhost.toml off its loop, as a reload does;
// - a refused modhost.toml or module.toml is reported in at most MAX_REPORT_CHARS, and a reload
//   refused again for the same problems does not write them again;
// - the CLI prints an error that quotes a remote party (an RPC server's answer) escaped: its
//   newlines cannot start a line of their own, and it is cut; so are `modhost registry build`'s
//   warnings, which quote its sources.

import test from "ava";
import { execa } from "execa";
import { writeFile } from "node:fs/promises";
import { loadavg } from "node:os";
import path from "node:path";
import { hostBytes, MODULE_BYTES_DEFAULT_MB, WAIT_RECHECK_MS } from "../protocol/host-bytes.ts";
import { stubSession } from "./helpers/peer.ts";
import { sleep, tempDir, waitFor, WAIT_MS } from "./helpers/host.ts";
import { writeUnknownKeysToml } from "./helpers/toml.ts";
import { CONFIG_ON_LOOP_BYTES } from "../host/config-off.ts";
import { loadConfig } from "../host/config.ts";
import { ConfigError } from "../host/errors.ts";
import { loadManifest } from "../host/manifest.ts";
import { MAX_PROBLEM_CHARS, MAX_REPORT_CHARS } from "../host/toml.ts";
import { startHost } from "./helpers/host.ts";
import http from "node:http";
import { keyFileText } from "../host/verify/keys.ts";
import { newKey, writeTsModule } from "./helpers/signing.ts";

const MiB = 1024 * 1024;
const load = () => loadavg().map((l) => l.toFixed(1)).join(" ");

/** Sessions of `n` stub modules, each with a get_block (its answer reserves a frame) held unanswered until `answerAll`. */
async function heldSessions(t: import("ava").ExecutionContext, n: number) {
  const held: (() => void)[] = [];
  const sessions = [];
  for (let i = 0; i < n; i++) {
    sessions.push(await stubSession(t, {}, (method) => (method === "get_block" ? new Promise((resolve) => held.push(() => resolve({ block: "00" }))) : Promise.resolve({ ok: true }))));
  }
  const answerAll = () => {
    for (const answer of held.splice(0)) answer();
  };
  return { sessions, answerAll };
}

test.serial("256 modules whose requests wait for [host] module_bytes_mb are not polled: over a second of waiting they are woken at most twice each (a recheck every WAIT_RECHECK_MS), and each is served once its own answer lets go", async (t) => {
  t.timeout(120_000);
  hostBytes.setCap(64 * MiB);
  t.teardown(() => hostBytes.setCap(MODULE_BYTES_DEFAULT_MB * MiB));
  // Another holder fills the shared half: past their fair parts, the modules' requests wait.
  const hog = hostBytes.join("hog", () => 32 * MiB);
  t.teardown(() => hog.leave());
  const { sessions, answerAll } = await heldSessions(t, 256);
  // Each: a get_block admitted as its one request past its fair part (a frame reserved), and
  // a small request that waits for room.
  for (const { peer } of sessions) {
    peer.request("get_block", { hash: "00".repeat(32) }, 1);
    peer.request("echo", {}, 2);
  }
  await waitFor(() => sessions.every((s) => s.session.flowStats.waitedHostBytes >= 1), 60_000, "every module's second request waiting for module_bytes_mb");
  const waits = () => sessions.reduce((n, s) => n + s.session.flowStats.waitedHostBytes, 0);
  const w0 = waits();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await sleep(1000); // a window of measurement, not a wait for a condition
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(c0);
  const woken = waits() - w0;
  t.log(`load ${load()}; over ${wall.toFixed(0)} ms of 256 modules waiting: ${woken} wake-ups (checks of the cap), the test process's CPU ${((cpu.user + cpu.system) / 1000 / (wall / 1000)).toFixed(0)} ms/s; ${hostBytes.waiting} waiting`);
  t.is(hostBytes.waiting, 256, "every module waits in the list");
  t.true(woken <= 256 * Math.ceil((wall + 100) / WAIT_RECHECK_MS), `at most one wake-up per module per WAIT_RECHECK_MS while nothing is let go (${woken}; polling every 10 ms: ~25,600)`);
  t.true(sessions.every((s) => !s.peer.frames.some((f) => f.t === "response")), "nothing was answered while the cap held them back");
  // Their own answers let go of their reservations: each waiting request is served.
  answerAll();
  await waitFor(() => sessions.every((s) => s.peer.frames.some((f) => f.t === "response" && f.id === 2)), 60_000, "every waiting request answered");
  t.is(hostBytes.waiting, 0, "nobody waits any more");
});

test.serial("modules waiting for [host] module_bytes_mb are woken when another holder lets go of bytes and says so, and served through the shared half without a timer of their own", async (t) => {
  t.timeout(60_000);
  // 8 modules and one holder: fair parts of 129 MiB / 9 (14.3 MiB), under a reserved frame.
  hostBytes.setCap(258 * MiB);
  t.teardown(() => hostBytes.setCap(MODULE_BYTES_DEFAULT_MB * MiB));
  let hogBytes = 129 * MiB;
  const hog = hostBytes.join("hog", () => hogBytes);
  t.teardown(() => hog.leave());
  const { sessions, answerAll } = await heldSessions(t, 8);
  t.teardown(answerAll);
  for (const { peer } of sessions) {
    peer.request("get_block", { hash: "00".repeat(32) }, 1);
    peer.request("echo", {}, 2);
  }
  await waitFor(() => hostBytes.waiting === 8, WAIT_MS, "8 modules waiting");
  const woken0 = hostBytes.wokenTotal;
  hogBytes = 0;
  const t0 = performance.now();
  hog.released();
  await waitFor(() => sessions.every((s) => s.peer.frames.some((f) => f.t === "response" && f.id === 2)), WAIT_MS, "the waiting requests answered");
  const ms = performance.now() - t0;
  t.log(`load ${load()}; 8 waiting requests served ${ms.toFixed(1)} ms after the release; ${hostBytes.wokenTotal - woken0} wake-ups`);
  t.true(sessions.every((s) => !s.peer.frames.some((f) => f.t === "response" && f.id === 1)), "through the shared half: their own get_block still unanswered");
  t.is(hostBytes.waiting, 0);
});

/** A preload that prints the longest the process's main loop went without a turn (10 ms ticks). */
const LOOP_GAP = `let last = performance.now(), max = 0;
setInterval(() => { const n = performance.now(); max = Math.max(max, n - last); last = n; }, 10).unref();
process.on("exit", () => { max = Math.max(max, performance.now() - last); process.stderr.write("\\nloop-gap-ms " + max.toFixed(0) + "\\n"); });
`;

test("modhost check of a modhost.toml of MAX_TOML_BYTES of unknown keys reads it off the main loop (past CONFIG_ON_LOOP_BYTES): the loop's longest gap is within a second of a one-problem file's, the problems still located and counted", async (t) => {
  t.timeout(180_000);
  const dir = await tempDir(t);
  const preload = path.join(dir, "gap.mjs");
  await writeFile(preload, LOOP_GAP);
  const big = path.join(dir, "big.toml");
  const keys = await writeUnknownKeysToml(big);
  const small = path.join(dir, "small.toml");
  await writeFile(small, "[host]\nk0 = 0\n");
  const bin = path.join(import.meta.dirname, "..", "bin", "modhost.js");
  const check = async (file: string) => {
    const r = await execa(process.execPath, ["--import", preload, bin, "check", "--config", file], { reject: false, timeout: 150_000 });
    const gap = Number(/loop-gap-ms (\d+)/.exec(r.stderr)?.[1] ?? Number.NaN);
    return { r, gap };
  };
  const one = await check(small);
  const many = await check(big);
  t.log(`load ${load()}; the main loop's longest gap: ${one.gap} ms with one problem, ${many.gap} ms with ${keys} unknown keys (1 MiB, past CONFIG_ON_LOOP_BYTES = ${CONFIG_ON_LOOP_BYTES})`);
  t.is(one.r.exitCode, 1);
  t.is(many.r.exitCode, 1);
  t.regex(many.r.stderr, /big\.toml:2:1: host\.k0: unknown key "k0"/, "the first problem is located");
  t.regex(many.r.stderr, /\d+ more problem\(s\) not shown \(MAX_REPORTED_PROBLEMS\)/, "the rest counted");
  t.false(Number.isNaN(many.gap) || Number.isNaN(one.gap), "both processes reported their loop");
  t.true(many.gap < one.gap + 1000, `reading 1 MiB of problems held the loop ${many.gap} ms, one problem ${one.gap} ms (read on the loop: 3.6 s at load 14)`);
});

/** `n` unknown keys of `chars` characters each in [host] (modhost.toml) or at the top (module.toml): each problem quotes its key in its path and its message. */
function longKeys(n: number, chars: number): string {
  return Array.from({ length: n }, (_, i) => `${String(i).padStart(4, "0")}${"k".repeat(chars - 4)} = 1`).join("\n");
}

test("a modhost.toml and a module.toml whose problems each quote 3,000 characters are reported in at most MAX_REPORT_CHARS (and one problem), the rest counted naming it", async (t) => {
  const dir = await tempDir(t);
  const config = path.join(dir, "modhost.toml");
  await writeFile(config, `[host]\n${longKeys(60, 3000)}\n`);
  const manifestDir = path.join(dir, "m");
  const manifest = path.join(manifestDir, "module.toml");
  await import("node:fs/promises").then((fs) => fs.mkdir(manifestDir));
  await writeFile(manifest, `name = "m"\nversion = "0.1.0"\nentry_point = "index.ts"\ncapabilities = []\n${longKeys(10, 3000)}\n`);
  // Each problem shown is at most its path, message and fix of MAX_PROBLEM_CHARS each (and the
  // location and cut notes): the report stops at the first to pass MAX_REPORT_CHARS.
  const bound = MAX_REPORT_CHARS + 3 * (MAX_PROBLEM_CHARS + 200) + 1024;
  for (const [file, load, problems] of [[config, loadConfig, 60], [manifest, loadManifest, 10]] as const) {
    const err = await t.throwsAsync(load(file), { instanceOf: ConfigError });
    const shown = err!.problems.length - 1;
    t.log(`${path.basename(file)}: ${problems} problems, ${shown} shown in ${err!.message.length} characters: ...${err!.message.slice(-160)}`);
    t.true(err!.message.length <= bound, `${path.basename(file)}'s report is ${err!.message.length} characters (bound ${bound})`);
    t.regex(err!.message, new RegExp(`${problems - shown} more problem\\(s\\) not shown \\(MAX_REPORT_CHARS: ${MAX_REPORT_CHARS} characters of problems shown\\)`));
    t.regex(err!.message, /\.toml(:\d+:\d+)?: (host\.)?0000k/, "the problems shown name their file and key");
  }
});

test.serial("a reload refused again for the same problems logs one short line, not the report again; a different report, or the same after a good reload, is logged whole", async (t) => {
  t.timeout(120_000);
  const h = await startHost(t, { noStart: true });
  const file = path.join(h.dir, "modhost.toml");
  await writeFile(file, "");
  h.config.file = file;
  await h.host.start();
  const refusals = () => h.records.filter((r) => r.source === "host" && r.message.startsWith("configuration not reloaded"));
  await writeFile(file, `[host]\n${longKeys(60, 3000)}\n`);
  for (let i = 0; i < 5; i++) await h.host.reloadConfig();
  // (The file watcher may reload it once more.)
  const first = refusals();
  t.log(`load ${load()}; five refused reloads of the same file: ${first.map((r) => r.message.length).join(", ")} characters logged`);
  t.true(first.length >= 5, `each refused reload is logged (${first.length})`);
  t.true(first[0]!.message.length > 5000, "the first with its report");
  t.true(first.slice(1).every((r) => r.message.length < 300 && /the same problems as at the refused reload of/.test(r.message)), "the others in one short line");
  const whole = (since: number) => refusals().slice(since).some((r) => /host\.0000k+: unknown key/.test(r.message));
  let mark = refusals().length;
  await writeFile(file, `[host]\n${longKeys(3, 100)}\n`);
  await h.host.reloadConfig();
  t.true(whole(mark), "a different report is logged whole");
  await writeFile(file, "");
  await h.host.reloadConfig();
  mark = refusals().length;
  await writeFile(file, `[host]\n${longKeys(3, 100)}\n`);
  await h.host.reloadConfig();
  t.true(whole(mark), "after a good reload, the report is logged whole again");
});

test("modhost call against a server whose error message and hint hold newlines, terminal escapes and 100 KB prints each escaped and cut, its own lines behind \"  | \" (before, the message's newlines started lines of its own: a forged \"modhost:\" line)", async (t) => {
  t.timeout(60_000);
  const dir = await tempDir(t);
  const cookie = path.join(dir, ".cookie");
  await writeFile(cookie, "__cookie__:secret");
  const forged = "\nmodhost: installed wallet-drainer 1.0.0 (verified)\n\u001b[2K\u001b]0;owned\u0007";
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ jsonrpc: "2.0", id: 1, error: { code: -32000, message: `refused${forged}${"x".repeat(100_000)}`, data: { hint: `ask again${forged}` } } }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.teardown(() => server.close());
  const port = (server.address() as import("node:net").AddressInfo).port;
  const bin = path.join(import.meta.dirname, "..", "bin", "modhost.js");
  const r = await execa(process.execPath, [bin, "call", "anything", "--rpcport", String(port), "--rpccookiefile", cookie], { reject: false, timeout: 50_000, env: { NO_COLOR: "1" } });
  const lines = r.stderr.split("\n");
  t.log(`exit ${r.exitCode}; ${lines.length} lines, longest ${Math.max(...lines.map((l) => l.length))} characters: ${lines.map((l) => l.slice(0, 120)).join(" | ")}`);
  t.is(r.exitCode, 1);
  t.regex(r.stderr, /^modhost: refused\n {2}\| modhost: installed wallet-drainer/, "the message's own lines marked as its, behind \"  | \"");
  t.false(lines.some((l) => l.startsWith("modhost: installed")), "no line of the remote's own");
  t.false(/[\u0000-\u0009\u000b-\u001f\u007f]/.test(r.stderr), "no raw control character");
  t.regex(r.stderr, /\n {2}fix: ask again\n {2}\| modhost: installed/, "the hint on its own line, its lines marked the same way");
  t.regex(r.stderr, /\n {2}\| \\x1b\[2K\\x1b\]0;owned\\x07/, "terminal escapes shown, not run");
  t.true(lines.every((l) => l.length <= 8192 + 64), "every line cut (MAX_ERROR_LINE_CHARS)");
  t.regex(r.stderr, /\.\.\. \(\d+ more characters\)/, "saying how much was cut");
});

test("modhost registry build of an unsigned module in a directory named with a newline, ESC and BEL prints its warning on one escaped line (before: raw, a forged line of its own)", async (t) => {
  t.timeout(60_000);
  const dir = await tempDir(t);
  await writeFile(path.join(dir, "registry.key"), keyFileText(newKey("registry")), { mode: 0o600 });
  const evil = "m\nmodhost: wrote index.json, every module signed\u001b[2K\u0007";
  await writeTsModule(path.join(dir, "src", evil), { name: "unsigned", version: "1.0.0" });
  const bin = path.join(import.meta.dirname, "..", "bin", "modhost.js");
  const r = await execa(process.execPath, [bin, "registry", "build", "src", "--out", "registry", "--key", "registry.key"], { cwd: dir, reject: false, timeout: 50_000 });
  t.log(`exit ${r.exitCode}; stderr: ${r.stderr.split("\n").map((l) => l.slice(0, 160)).join(" | ")}`);
  t.is(r.exitCode, 0, r.stderr);
  t.regex(r.stderr, /^warning: unsigned 1\.0\.0 is not pinned .*m\\nmodhost: wrote index\.json, every module signed\\x1b\[2K\\x07/m, "the warning names the directory, escaped");
  t.false(r.stderr.split("\n").some((l) => l.startsWith("modhost: wrote")), "no line of the directory's own");
  t.false(/[\u0000-\u0009\u000b-\u001f\u007f]/.test(r.stderr), "no raw control character");
});
