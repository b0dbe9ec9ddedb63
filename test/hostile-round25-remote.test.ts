// Hostile probes of round 25 (issue #8): remote parties at the JSON-RPC server and the registry.
//   held      16 JSON-RPC clients at once, each with a batch of 30 calls of a module's method
//             answering 1 MB and one call answered once all the others are: the answers the
//             batches hold, all together, are bounded (ANSWER_BYTES_HELD); before, each batch
//             held its 30 MB until its last call was in (max_response_bytes bounds one batch,
//             not all of them together): the host's heap grew by 524 MB.
//   written   round 24's two fixes without a test that failed before them: a batch's answers
//             written in the turn share (4 batches of 1,000 answers of ~5 KB written from one
//             turn: 908 ms of CPU in one turn without it) and BODY_BYTES_IN_PROGRESS (8 bodies of
//             600 KB: all 8 calls at the module at once without it, 3 with it).
//   fair      a client's single calls beside 8 connections each pipelining 16 batches of 1,000
//             module calls: the turn share was fair per call, not per connection (each batch
//             held 16 lanes' places and an answer's), so the single call waited 5-10 turns of
//             the host's loop at the median; the share now wakes a connection at a time: 1.
//   self      a module granted network_access to the host's own JSON-RPC port (found nothing):
//             the file API refuses every path to the cookie; 16 requests at a time without it
//             are refused 401 (each after the 250 ms pause) and its connections make room first
//             at the per-address cap, the canary on time; handed the cookie, a method calling
//             itself through the port stops at MAX_IN_FLIGHT nested requests (its 17th refused at
//             once) and unwinds in ~150 ms. With the default max_bytes (8 MiB reserved per
//             request against its max_unread_bytes, 32 MiB) only 4 are in flight at once, and
//             the nested calls wait for each other until call_timeout_ms: the module's own calls.
//   registry  modhost install from a registry whose pinned key signs what it likes: a chain of
//             4,000 modules each needing the next crashed the command with the stack's
//             RangeError (now refused at MAX_DEPENDENCY_DEPTH); an index gzip-encoded (512 MiB
//             of zeros in 0.5 MB) or with 2,000 content codings: refused within bounds (found
//             nothing). Probed once, not kept (bounds other tests hold): an index of 100 MB,
//             refused at MAX_INDEX_BYTES in 339 ms; an index.sig of 100,000 entries, refused
//             at its 1 MiB in 106 ms (4,000 at MAX_INDEX_SIGNATURES); file paths with "..",
//             absolute, with backslashes or NUL, refused by the index's schema.
//   serve     registry serve and a client pipelining 5,000 GETs of a blob without reading: each
//             answer opened its file at once (+5,002 descriptors, +667 MB); now at most
//             MAX_REGISTRY_PIPELINED in progress a connection, a file opened at its answer's turn.
//             The same bound for the inspector (5,000 pipelined GETs of /json/list on each of
//             8 connections: ~1,800 answered a connection, now closed past 4 x 16 in progress)
//             and the Core facade, whose cheap answers (401, getblockcount) hold nothing.

import test from "ava";
import { spawn } from "node:child_process";
import http from "node:http";
import { readdirSync } from "node:fs";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { defaultConfig, type HostConfig } from "../host/config.ts";
import { ModhostError } from "../host/errors.ts";
import { INDEX_FORMAT, MAX_INDEX_BYTES, signIndex } from "../host/registry/format.ts";
import { install } from "../host/registry/install.ts";
import { MAX_DEPENDENCY_DEPTH } from "../host/registry/resolve.ts";
import { MAX_REGISTRY_PIPELINED, serveRegistry } from "../host/registry/serve.ts";
import type { SecretKey } from "../host/verify/keys.ts";
import { newKey } from "./helpers/signing.ts";
import { CoreFacade } from "../chain/bitcoind/facade.ts";
import { rpcauthLine } from "../chain/bitcoind/rpcauth.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { InspectorServer } from "../host/inspector.ts";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { buildModulesDir, GOOD_GRANTS, sleep, startHost, tempDir, waitFor, type TestHost } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";
import { call, cookieAuth, freePort, PIPELINE_FLOODER } from "./helpers/rpc.ts";
import { pendingOf } from "./helpers/census.ts";
import { watchHost } from "./helpers/host-watch.ts";
import { MAX_IN_FLIGHT } from "../capabilities/http.ts";
import { watchTurns } from "./helpers/turns.ts";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;
const MB = 1024 * 1024;

/**
 * A child process opening `conns` connections to the host's RPC server at once, each POSTing
 * the body read from stdin once and reading its whole answer; then it prints, per connection,
 * the status, the answers' count, the results and the errors by data.code (and one message of
 * each code). A child, so that the host's loop and heap (this process's) do not carry the clients.
 */
const CLIENTS = `
const net = require("node:net");
const [port, auth, conns] = process.argv.slice(1);
const body = require("node:fs").readFileSync(0);
const head = "POST / HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: " + auth + "\\r\\nContent-Type: application/json\\r\\nConnection: close\\r\\nContent-Length: " + body.length + "\\r\\n\\r\\n";
const out = [];
let left = Number(conns);
for (let i = 0; i < Number(conns); i++) {
  const s = net.connect(Number(port), "127.0.0.1");
  const parts = [];
  const started = Date.now();
  s.on("error", () => {});
  s.on("connect", () => s.write(Buffer.concat([Buffer.from(head), body])));
  s.on("data", (d) => parts.push(d));
  s.on("close", () => {
    const all = Buffer.concat(parts);
    const end = all.indexOf("\\r\\n\\r\\n");
    const r = { status: all.subarray(9, 12).toString(), ms: Date.now() - started, answers: 0, results: 0, errors: {}, messages: {} };
    let status = r.status;
    let rest = all.subarray(end + 4);
    // Interim answers (102 Processing) come before the real one.
    while (status === "102") {
      const next = rest.indexOf("\\r\\n\\r\\n");
      status = rest.subarray(9, 12).toString();
      rest = rest.subarray(next + 4);
    }
    r.status = status;
    try {
      const answers = JSON.parse(rest.toString());
      for (const a of Array.isArray(answers) ? answers : [answers]) {
        r.answers++;
        if (a.result !== undefined) r.results++;
        else {
          const code = a.error?.data?.code ?? String(a.error?.code);
          r.errors[code] = (r.errors[code] ?? 0) + 1;
          r.messages[code] ??= a.error?.message;
        }
      }
    } catch (e) { r.parse = String(e).slice(0, 200); }
    out.push(r);
    if (--left === 0) process.stdout.write(JSON.stringify(out));
  });
}
`;

interface ClientOutcome { status: string; ms: number; answers: number; results: number; errors: Record<string, number>; messages: Record<string, string>; parse?: string }

function clients(h: TestHost, auth: string, conns: number, body: string): Promise<ClientOutcome[]> {
  const a = h.host.rpcServer!.address!;
  const child = spawn(process.execPath, ["-e", CLIENTS, String(a.port), auth, String(conns)], { stdio: ["pipe", "pipe", "inherit"] });
  child.stdin.end(body);
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d));
  return new Promise((resolve) => child.on("exit", () => resolve(out === "" ? [] : JSON.parse(out))));
}

const HELD_CLIENTS = 16;
const BIGS = 30;
// A module whose method `big` answers 1 MB at once, and `last` answers once `big` has answered
// HELD_CLIENTS x BIGS times (so that every batch holds its answers until all are in).
const BIG_CAPS = ["register_rpc_endpoint"];
const BIG = inlineModule("r25-big", BIG_CAPS, `
  const mb = "x".repeat(1_000_000);
  let served = 0;
  const waiting = [];
  await ctx.rpc.register("big", "answers 1 MB at once", () => {
    if (++served >= ${HELD_CLIENTS * BIGS}) for (const w of waiting.splice(0)) w("last");
    return mb;
  });
  await ctx.rpc.register("last", "answers once big has answered every call", () => served >= ${HELD_CLIENTS * BIGS} ? "last" : new Promise((r) => waiting.push(r)));
  ctx.log.info("ready");
`);

/** ANSWER_BYTES_HELD (host/rpc/server.ts). */
const ANSWER_BYTES_HELD = 64 * MB;

test.serial(`${HELD_CLIENTS} JSON-RPC clients at once, each with a batch of ${BIGS} calls of a module method answering 1 MB and one call answered once every client's are: the answers held by the batches, all together, stay within ANSWER_BYTES_HELD (64 MiB) and the host's heap grows by less than 256 MB (held, being written, in transit); the answers past it are -32006 errors naming ANSWER_BYTES_HELD; every batch is answered whole (before: each batch held its 30 MB, ${HELD_CLIENTS * BIGS} MB in all)`, async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  await buildModulesDir(dir, [], { "r25-big": BIG });
  const h = await startHost(t, { dir, modules: [], grants: { "r25-big": BIG_CAPS }, configure: (c) => { c.modules.limits["r25-big"] = { memory_mb: 1024 }; } });
  await h.waitForLog(/^ready$/, { source: "r25-big", timeoutMs: 60_000 });
  const auth = await cookieAuth(h);
  const server = h.host.rpcServer! as unknown as { heldAnswerBytes?: number };
  const body = JSON.stringify([{ jsonrpc: "2.0", id: "last", method: "r25-big.last" }, ...Array.from({ length: BIGS }, (_, i) => ({ jsonrpc: "2.0", id: i, method: "r25-big.big" }))]);
  gc();
  const heap0 = process.memoryUsage().heapUsed;
  let heapPeak = 0;
  let heldPeak = 0;
  const sampler = setInterval(() => {
    heapPeak = Math.max(heapPeak, process.memoryUsage().heapUsed - heap0);
    heldPeak = Math.max(heldPeak, server.heldAnswerBytes ?? Number.NaN);
  }, 20);
  t.teardown(() => clearInterval(sampler));
  const out = await clients(h, auth, HELD_CLIENTS, body);
  clearInterval(sampler);
  const results = out.reduce((n, c) => n + c.results, 0);
  const errors: Record<string, number> = {};
  const messages: Record<string, string> = {};
  for (const c of out) for (const [code, n] of Object.entries(c.errors)) {
    errors[code] = (errors[code] ?? 0) + n;
    messages[code] ??= c.messages[code]!;
  }
  t.log(`${out.length} clients, statuses ${[...new Set(out.map((c) => c.status))].join(",")}, answered in ${Math.min(...out.map((c) => c.ms))}-${Math.max(...out.map((c) => c.ms))} ms; results ${results}, errors ${JSON.stringify(errors)}`);
  t.log(`the host's heap grew by at most ${(heapPeak / MB).toFixed(0)} MB; the answers held by batches, all together, at most ${(heldPeak / MB).toFixed(1)} MiB`);
  for (const [code, m] of Object.entries(messages)) t.log(`${code}: ${m}`);
  t.is(out.length, HELD_CLIENTS);
  t.true(out.every((c) => c.status === "200" && c.answers === BIGS + 1), "every batch answered whole");
  t.true(heldPeak <= ANSWER_BYTES_HELD, `held at most ANSWER_BYTES_HELD (${(heldPeak / MB).toFixed(1)} MiB)`);
  t.true(heapPeak < 256 * MB, `the heap grew by less than 256 MB (${(heapPeak / MB).toFixed(0)} MB)`);
  t.true((errors["answers_held"] ?? 0) > 0 && messages["answers_held"]!.includes("ANSWER_BYTES_HELD"), "the answers past it name ANSWER_BYTES_HELD");
  t.is(results + (errors["answers_held"] ?? 0), HELD_CLIENTS * (BIGS + 1), "each call answered, or refused naming the limit");
});

// A module whose method `obj` answers an object of 400 numbers (~5 KB of JSON) at once, `gate`
// answers once `obj` has answered GATE_AFTER times, `later` answers after 3 s, and `most` tells
// how many calls of `later` ran at once at most.
const GATE_AFTER = 4 * 999;
const WIDE_CAPS = ["register_rpc_endpoint", "manage_timers"];
const WIDE = inlineModule("r25-wide", WIDE_CAPS, `
  const obj = {};
  for (let i = 0; i < 400; i++) obj["field" + i] = i * 1000;
  let served = 0;
  const waiting = [];
  await ctx.rpc.register("obj", "answers ~5 KB of JSON at once", () => {
    if (++served >= ${GATE_AFTER}) for (const w of waiting.splice(0)) w("open");
    return obj;
  });
  await ctx.rpc.register("gate", "answers once obj has answered ${GATE_AFTER} times", () => served >= ${GATE_AFTER} ? "open" : new Promise((r) => waiting.push(r)));
  let running = 0;
  let most = 0;
  await ctx.rpc.register("later", "answers after 3 s", async () => {
    most = Math.max(most, ++running);
    await new Promise((r) => setTimeout(r, 3_000));
    running--;
    return "later";
  });
  await ctx.rpc.register("most", "the most calls of later that ran at once", () => most);
  ctx.log.info("ready");
`);

test.serial(`4 JSON-RPC clients at once, each with a batch of 999 calls of a module method answering ~5 KB of JSON and one call answered once all 3996 are in (so the 4 batches' answers are written from the same turn): no turn of the host's loop takes 150 ms of its CPU (without round 24's answers in the turn share, a batch's 1,000 answers were stringified in one turn, the 4 batches' back to back: 908 ms)`, async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  await buildModulesDir(dir, [], { "r25-wide": WIDE });
  const h = await startHost(t, { dir, modules: [], grants: { "r25-wide": WIDE_CAPS }, configure: (c) => { c.modules.limits["r25-wide"] = { memory_mb: 512, host_cpu_ms_per_s: 1000 }; } });
  await h.waitForLog(/^ready$/, { source: "r25-wide", timeoutMs: 60_000 });
  const auth = await cookieAuth(h);
  const body = JSON.stringify([{ jsonrpc: "2.0", id: "gate", method: "r25-wide.gate" }, ...Array.from({ length: 999 }, (_, i) => ({ jsonrpc: "2.0", id: i, method: "r25-wide.obj" }))]);
  const turns = watchTurns();
  t.teardown(() => turns.stop());
  const out = await clients(h, auth, 4, body);
  const longest = turns.reset();
  await turns.stop();
  t.log(`${out.length} clients, statuses ${out.map((c) => c.status).join(",")}, answered in ${out.map((c) => c.ms).join(", ")} ms, results ${out.map((c) => c.results).join(",")}; the longest turn of the host's loop: ${longest.toFixed(1)} ms of CPU over ${turns.turns} turns`);
  t.true(out.length === 4 && out.every((c) => c.status === "200" && c.results === 1000), "every batch answered whole");
  // The share: BATCH_TURN_MS (5 ms) of answers a turn and one more (~0.05 ms), plus what else a
  // turn does (the module's answers read and decoded, within its host_cpu_ms_per_s; a young
  // collection): 38 ms seen at load 6. CPU time, which load does not stretch; 150 ms leaves
  // room for a collection of the old space, and is a sixth of the 908 ms the old code took.
  t.true(longest < 150, `no turn of 150 ms of CPU (${longest.toFixed(1)} ms)`);
});

test.serial(`8 JSON-RPC clients at once, each with a batch whose body is 600 KB (a call of a 3 s method and whitespace): at most 3 of the calls run at the module at once, the bodies in progress held to BODY_BYTES_IN_PROGRESS (2 MiB), the others unread until answers make room, and every batch is answered (without round 24's bound, all 8 bodies were read and their calls started at once: 8)`, async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  await buildModulesDir(dir, [], { "r25-wide": WIDE });
  const h = await startHost(t, { dir, modules: [], grants: { "r25-wide": WIDE_CAPS } });
  await h.waitForLog(/^ready$/, { source: "r25-wide", timeoutMs: 60_000 });
  const auth = await cookieAuth(h);
  const body = `[${JSON.stringify({ jsonrpc: "2.0", id: 1, method: "r25-wide.later" })}${" ".repeat(600_000)}]`;
  const out = await clients(h, auth, 8, body);
  const peak = (await call(h, "r25-wide.most")) as number;
  const waited = h.host.rpcServer!.stats.bodiesWaited;
  t.log(`${out.length} clients answered in ${out.map((c) => c.ms).sort((a, b) => a - b).join(", ")} ms; at most ${peak} calls ran at the module at once; bodies that waited for room: ${waited}`);
  t.true(out.length === 8 && out.every((c) => c.status === "200" && c.results === 1), "every batch answered");
  t.true(peak >= 1 && peak <= 3, `at most floor(2 MiB / 600 KB) = 3 calls at the module at once (${peak})`);
});


/** A child process making `count` single calls of `body`, one after the other (5 ms apart) on one connection; prints when each was sent and answered (ms since the epoch). */
const PINGER = `
const net = require("node:net");
const [port, auth, count] = process.argv.slice(1);
const body = require("node:fs").readFileSync(0);
const request = Buffer.concat([Buffer.from("POST / HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: " + auth + "\\r\\nContent-Type: application/json\\r\\nContent-Length: " + body.length + "\\r\\n\\r\\n"), body]);
const times = [];
const s = net.connect(Number(port), "127.0.0.1");
let buf = Buffer.alloc(0);
let sent = 0;
const now = () => performance.timeOrigin + performance.now();
const send = () => { sent = now(); s.write(request); };
s.on("connect", send);
s.on("data", (d) => {
  buf = Buffer.concat([buf, d]);
  const end = buf.indexOf("\\r\\n\\r\\n");
  if (end < 0) return;
  const length = Number(/content-length: (\\d+)/i.exec(buf.subarray(0, end).toString("latin1"))?.[1] ?? 0);
  if (buf.length < end + 4 + length) return;
  buf = buf.subarray(end + 4 + length);
  times.push([sent, now()]);
  if (times.length < Number(count)) setTimeout(send, 5);
  else { process.stdout.write(JSON.stringify(times)); s.destroy(); }
});
`;

function child(script: string, args: unknown[], stdin: string): { out: Promise<string>; started: Promise<void> } {
  const c = spawn(process.execPath, ["-e", script, ...args.map(String)], { stdio: ["pipe", "pipe", "inherit"] });
  c.stdin.end(stdin);
  let out = "";
  let onStart: () => void;
  const started = new Promise<void>((r) => (onStart = r));
  c.stdout.on("data", (d: Buffer) => {
    out += d;
    if (out.startsWith("started\n")) {
      out = out.slice(8);
      onStart();
    }
  });
  return { out: new Promise((resolve) => c.on("exit", () => resolve(out))), started };
}

const PING_CAPS = ["register_rpc_endpoint"];
const PING = inlineModule("r25-ping", PING_CAPS, `
  await ctx.rpc.register("ping", "answers at once", () => "pong");
  ctx.log.info("ready");
`);

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

const FLOOD_CONNS = 8;

test.serial(`a client's single calls of a host method (list), one after the other, beside ${FLOOD_CONNS} connections each pipelining 16 batches of 1000 calls of a module method: the median call is answered within 3 turns of the host's loop (the share wakes waiting calls a connection at a time; before, one call at a time in the order they came, and the single call waited behind the batches' 16 lanes and answers each: 5-10 turns)`, async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  await buildModulesDir(dir, [], { "r25-ping": PING });
  const h = await startHost(t, { dir, modules: [], grants: { "r25-ping": PING_CAPS }, configure: (c) => { c.modules.limits["r25-ping"] = { host_cpu_ms_per_s: 1000 }; } });
  await h.waitForLog(/^ready$/, { source: "r25-ping", timeoutMs: 60_000 });
  const auth = await cookieAuth(h);
  const port = h.host.rpcServer!.address!.port;
  const single = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "list" });
  const batch = JSON.stringify(Array.from({ length: 1000 }, (_, i) => ({ jsonrpc: "2.0", id: i, method: "r25-ping.ping" })));
  // Each turn of the host's loop (this process's), when it began: a call's wait is measured in
  // the turns that passed between its sending and its answer, which the machine's load does not
  // stretch as it stretches the milliseconds.
  const ticks: number[] = [];
  let ticking = true;
  const ticker = (async () => {
    while (ticking) {
      ticks.push(performance.timeOrigin + performance.now());
      await new Promise((r) => setImmediate(r));
    }
  })();
  t.teardown(async () => {
    ticking = false;
    await ticker;
  });
  const turnsBetween = (from: number, to: number) => {
    let lo = 0;
    let hi = ticks.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (ticks[mid]! < from) lo = mid + 1;
      else hi = mid;
    }
    let n = 0;
    for (let i = lo; i < ticks.length && ticks[i]! < to; i++) n++;
    return n;
  };
  const measure = async () => {
    const times = JSON.parse(await child(PINGER, [port, auth, 100], single).out) as Array<[number, number]>;
    return { ms: times.map(([a, b]) => b - a).sort((a, b) => a - b), turns: times.map(([a, b]) => turnsBetween(a, b)).sort((a, b) => a - b) };
  };
  const alone = await measure();
  // The flood's clients are a child process: not this loop's work.
  const flood = child(PIPELINE_FLOODER, [port, auth, FLOOD_CONNS, 16, 10_000], batch);
  await flood.started;
  await sleep(1000);
  const beside = await measure();
  const statuses = JSON.parse(await flood.out) as Record<string, number>;
  const batches = { answered: Object.values(statuses).reduce((a, b) => a + b, 0) };
  ticking = false;
  await ticker;
  const f = (s: number[]) => `p50 ${quantile(s, 0.5).toFixed(1)}, p90 ${quantile(s, 0.9).toFixed(1)}, max ${s.at(-1)!.toFixed(1)}`;
  t.log(`the single calls alone: ${f(alone.ms)} ms; beside the batches: ${f(beside.ms)} ms, ${f(beside.turns)} turns of the host's loop; batches answered: ${batches.answered}`);
  t.true(batches.answered > 0, "the batches were served");
  // A call waits for at most one call of each other connection with calls waiting, which one
  // turn's share (64 module calls, 5 ms) holds: the turn its request is read in, or the next;
  // its answer (one small JSON, not in the share) is written in the turn it starts in.
  t.true(quantile(beside.turns, 0.5) <= 3, `the median call answered within 3 turns (${quantile(beside.turns, 0.5)})`);
});

test.serial("a module granted network_access to the host's own JSON-RPC port: it cannot read the cookie through the file API; 16 requests at a time without it for 4 s are all refused 401 while the canary is served; handed the cookie (an operator's mistake), a method calling itself through the port stops at MAX_IN_FLIGHT (16) nested requests and answers", async (t) => {
  t.timeout(120_000);
  const port = await freePort();
  const grants = [`network_access=127.0.0.1:${port}`, "read_filesystem", "register_rpc_endpoint"];
  const dir = await tempDir(t);
  const wrong = `Basic ${Buffer.from(`__cookie__:${"0".repeat(64)}`).toString("base64")}`;
  const SELF = inlineModule("r25-self", grants, `
    const url = "http://127.0.0.1:${port}/";
    await ctx.rpc.register("cookie", "tries to read the host's cookie", async () => {
      const out = {};
      for (const p of ["../../.cookie", "../../../data/.cookie", "${dir}/data/.cookie", "/proc/self/cwd/.cookie", "/proc/self/root${dir}/data/.cookie", "..%2f..%2f.cookie", "..\\..\\.cookie"]) {
        out[p] = await ctx.fs.readFile(p, "utf8").then((s) => "read " + s.length, (e) => e.code);
      }
      return out;
    });
    await ctx.rpc.register("flood", "16 requests at a time without the cookie, for ms", async (p) => {
      const statuses = {};
      const until = Date.now() + p.ms;
      const worker = async (i) => {
        while (Date.now() < until) {
          const auth = i % 2 === 0 ? { authorization: "${wrong}" } : {};
          const r = await ctx.network.fetch(url, { method: "POST", headers: { "content-type": "application/json", ...auth }, body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "list" }), timeout_ms: 10000, max_bytes: 65536 }).then((a) => String(a.status), (e) => e.code);
          statuses[r] = (statuses[r] ?? 0) + 1;
        }
      };
      await Promise.all(Array.from({ length: 16 }, (_, i) => worker(i)));
      return statuses;
    });
    await ctx.rpc.register("recurse", "calls itself through the JSON-RPC port with the authorization it is given", async (p) => {
      const r = await ctx.network.fetch(url, { method: "POST", headers: { "content-type": "application/json", authorization: p.auth }, body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "r25-self.recurse", params: { auth: p.auth, depth: p.depth + 1 } }), timeout_ms: 60000, max_bytes: 65536 }).then(
        (a) => { const answer = JSON.parse(String.fromCharCode(...a.body)); return answer.result ?? { depth: p.depth + 1, error: answer.error?.message }; },
        (e) => ({ depth: p.depth, error: e.code + ": " + e.message }),
      );
      return r;
    });
    ctx.log.info("ready");
  `);
  await buildModulesDir(dir, ["good"], { "r25-self": SELF });
  const h = await startHost(t, { dir, modules: [], grants: { good: GOOD_GRANTS, "r25-self": grants }, configure: (c) => { c.rpc.port = port; } });
  await h.waitForLog(/^ready$/, { source: "r25-self", timeoutMs: 60_000 });
  await h.waitForState("good", "running", 60_000);
  const cookie = (await call(h, "r25-self.cookie")) as Record<string, string>;
  t.log(`the module's reads of the cookie: ${JSON.stringify(cookie)}`);
  t.true(Object.values(cookie).every((v) => !v.startsWith("read")), "no path reads the cookie");
  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(500, 4);
  const statuses = (await call(h, "r25-self.flood", { ms: 4000 })) as Record<string, number>;
  await canary.stop();
  t.log(`the module's requests without the cookie: ${JSON.stringify(statuses)}; refused for credentials: ${h.host.rpcServer!.stats.unauthorised}`);
  await watch.finish(t, 16);
  watch.assertCanary(t);
  t.deepEqual(Object.keys(statuses), ["401"], "every request refused 401");
  const auth = await cookieAuth(h);
  const started = Date.now();
  const nested = (await call(h, "r25-self.recurse", { auth, depth: 0 })) as { depth: number; error?: string };
  t.log(`handed the cookie, the method called itself ${nested.depth} deep in ${Date.now() - started} ms: ${nested.error}`);
  t.is(nested.depth, MAX_IN_FLIGHT, "it stops at MAX_IN_FLIGHT nested requests");
  t.regex(nested.error ?? "", /^unavailable: /);
  t.is(pendingOf(h, "r25-self"), 0, "no call of it left waiting");
});

/** A registry directory whose index.json (signed by `key`) offers `modules` (name -> versions -> entry). */
async function hostileRegistry(dir: string, key: SecretKey, modules: Record<string, unknown>): Promise<number> {
  const now = Date.now();
  const index = { format: INDEX_FORMAT, version: 1, generated: new Date(now).toISOString(), expires: new Date(now + 86_400_000).toISOString(), modules };
  const bytes = Buffer.from(JSON.stringify(index));
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, "index.json"), bytes);
  await writeFile(path.join(dir, "index.sig"), JSON.stringify(signIndex(bytes, [key])));
  return bytes.length;
}

function registryClient(dir: string, url: string, key: SecretKey): { config: HostConfig; opts: Parameters<typeof install>[2] } {
  const config = defaultConfig(path.join(dir, "node"));
  config.modules.modules_dir = path.join(dir, "node", "modules");
  config.registry.url = url;
  config.registry.keys = [key.publicKey];
  return { config, opts: { log: () => {}, progress: { write: () => true }, notifyHost: false } };
}

const CHAIN = 4000;

test.serial(`modhost install from a registry (its key pinned) whose signed index offers a chain of ${CHAIN} modules, each needing the next: refused at once naming MAX_DEPENDENCY_DEPTH (${MAX_DEPENDENCY_DEPTH}), nothing installed (before: the command failed with the stack's RangeError; a chain of 1,000 cost 196 ms building its text at every step)`, async (t) => {
  t.timeout(60_000);
  const dir = await tempDir(t, "modhost-reg-r25-");
  const key = newKey("registry");
  const entry = (deps: Record<string, string>) => ({ runtime: "isolate", hash: `sha256:${"0".repeat(64)}`, manifest: { sha256: "0".repeat(64), size: 1 }, files: [], capabilities: [], dependencies: deps, signers: [], published: new Date().toISOString() });
  const modules: Record<string, unknown> = {};
  for (let i = 0; i < CHAIN; i++) modules[`m${i}`] = { versions: { "1.0.0": entry(i + 1 < CHAIN ? { [`m${i + 1}`]: "^1.0.0" } : {}) } };
  const bytes = await hostileRegistry(path.join(dir, "registry"), key, modules);
  const server = await serveRegistry(path.join(dir, "registry"));
  t.teardown(() => server.close());
  const { config, opts } = registryClient(dir, server.url, key);
  const started = performance.now();
  const err = await install(config, "m0", opts).then(() => undefined, (e: Error) => e);
  const ms = performance.now() - started;
  t.log(`an index of ${bytes} bytes; the install ${err === undefined ? "succeeded" : `failed in ${ms.toFixed(0)} ms: ${err.name}: ${err.message.slice(0, 240)}`}`);
  t.true(err instanceof ModhostError, "a ModhostError, not the stack's RangeError");
  t.regex(err?.message ?? "", /MAX_DEPENDENCY_DEPTH/);
  t.deepEqual((await readdir(config.modules.modules_dir).catch(() => [])).filter((n) => !n.startsWith(".")), [], "nothing installed");
});

test.serial("modhost install from a registry that answers its index gzip-encoded, 512 MiB of zeros in 0.5 MB, and with 2,000 content codings: each refused, the bomb at MAX_INDEX_BYTES of what it expands to, each within 5 s and 256 MB of the command's memory (probed: found nothing)", async (t) => {
  t.timeout(60_000);
  const dir = await tempDir(t, "modhost-reg-r25-");
  const key = newKey("registry");
  const bomb = gzipSync(Buffer.alloc(512 * MB), { level: 9 });
  const server = http.createServer((req, res) => {
    if (req.url?.endsWith("/chain/index.json")) {
      res.writeHead(200, { "Content-Encoding": Array(2000).fill("gzip").join(", ") });
      res.end("x");
      return;
    }
    res.writeHead(200, { "Content-Encoding": "gzip", "Content-Length": bomb.length });
    res.end(bomb);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.teardown(() => { server.closeAllConnections(); server.close(); });
  const port = (server.address() as { port: number }).port;
  for (const [what, url] of [["the bomb", `http://127.0.0.1:${port}/bomb/`], ["2,000 codings", `http://127.0.0.1:${port}/chain/`]] as const) {
    const { config, opts } = registryClient(dir, url, key);
    gc();
    const rss0 = process.memoryUsage().rss;
    let rssPeak = 0;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss - rss0)), 10);
    const started = performance.now();
    const err = await install(config, "m0", opts).then(() => undefined, (e: Error) => e);
    const ms = performance.now() - started;
    clearInterval(sampler);
    t.log(`${what}${what === "the bomb" ? ` (${bomb.length} bytes on the wire)` : ""}: failed in ${ms.toFixed(0)} ms, RSS +${(rssPeak / MB).toFixed(0)} MB at most: ${err?.message.slice(0, 200)}`);
    t.true(err instanceof ModhostError, `${what}: refused as a registry error`);
    if (what === "the bomb") t.regex(err?.message ?? "", new RegExp(`larger than ${MAX_INDEX_BYTES} bytes`));
    t.true(ms < 5000, `${what}: within 5 s (${ms.toFixed(0)} ms)`);
    t.true(rssPeak < 256 * MB, `${what}: RSS +${(rssPeak / MB).toFixed(0)} MB`);
  }
});

test.serial(`registry serve: one connection writing 5,000 pipelined GETs of a 4 MiB blob and reading nothing: the server opens at most a few files and its memory grows under 64 MB (before: 5,000 files open, +655 MB of buffers); a client pipelining MAX_REGISTRY_PIPELINED (${MAX_REGISTRY_PIPELINED}) GETs of it gets every one, and one more is answered 429 naming the limit`, async (t) => {
  t.timeout(60_000);
  const dir = await tempDir(t, "modhost-reg-r25-");
  await writeFile(path.join(dir, "index.json"), "{}");
  await mkdir(path.join(dir, "blobs"));
  await writeFile(path.join(dir, "blobs", "big"), Buffer.alloc(4 * MB, 7));
  const server = await serveRegistry(dir);
  t.teardown(() => server.close());
  const get = "GET /blobs/big HTTP/1.1\r\nHost: x\r\n\r\n";
  const fds = () => readdirSync("/proc/self/fd").length;
  gc();
  const fd0 = fds();
  const mem0 = process.memoryUsage();
  const grown = () => {
    const m = process.memoryUsage();
    return m.heapUsed - mem0.heapUsed + m.external - mem0.external;
  };
  const hostile = net.connect(server.port, "127.0.0.1");
  hostile.on("error", () => {});
  hostile.pause();
  t.teardown(() => hostile.destroy());
  await new Promise((r) => hostile.once("connect", r));
  hostile.write(get.repeat(5000));
  let fdPeak = 0;
  let memPeak = 0;
  for (let i = 0; i < 20; i++) {
    await sleep(100);
    fdPeak = Math.max(fdPeak, fds() - fd0);
    memPeak = Math.max(memPeak, grown());
  }
  hostile.destroy();
  t.log(`5,000 pipelined GETs unread: descriptors +${fdPeak} at most, heap and buffers +${(memPeak / MB).toFixed(0)} MB at most`);
  t.true(fdPeak <= 4, `at most 4 more descriptors (${fdPeak})`);
  t.true(memPeak < 64 * MB, `under 64 MB more (${(memPeak / MB).toFixed(0)} MB)`);
  for (const n of [MAX_REGISTRY_PIPELINED, MAX_REGISTRY_PIPELINED + 1]) {
    const honest = net.connect(server.port, "127.0.0.1");
    t.teardown(() => honest.destroy());
    await new Promise((r) => honest.once("connect", r));
    let bytes = 0;
    let head = "";
    honest.on("data", (d: Buffer) => {
      bytes += d.length;
      // What follows the 16 answers: a 429's head and text.
      if (bytes > MAX_REGISTRY_PIPELINED * 4 * MB) head += d.toString("latin1");
    });
    honest.write(get.repeat(n));
    await waitFor(() => bytes >= MAX_REGISTRY_PIPELINED * 4 * MB && (n === MAX_REGISTRY_PIPELINED || head.includes("\r\n\r\n") && head.includes("\n", head.indexOf("\r\n\r\n") + 4)), 30_000, () => `the answers (${bytes} bytes)`);
    t.log(`${n} pipelined GETs read: ${bytes} bytes${head === "" ? "" : `, then ${JSON.stringify(head.slice(head.indexOf("HTTP/1.1"), head.indexOf("HTTP/1.1") + 300))}`}`);
    if (n > MAX_REGISTRY_PIPELINED) {
      t.regex(head, /HTTP\/1\.1 429 /);
      t.true(head.includes("MAX_REGISTRY_PIPELINED"), "the 429 names MAX_REGISTRY_PIPELINED");
    }
    honest.destroy();
  }
});

test.serial(`the inspector and the Core facade: 8 connections each writing 5,000 pipelined requests (the facade's without credentials) and reading nothing: no turn of the host's loop takes 250 ms of its CPU; the inspector serves at most 4 x MAX_INSPECTOR_PIPELINED (16) of them a connection before closing it (before: every one, ~1,800 a connection by the time the client read), and a client pipelining 17 gets 16 answers and a 429 naming MAX_INSPECTOR_PIPELINED; the facade answers each 401 at once, holding nothing (probed)`, async (t) => {
  t.timeout(60_000);
  const chain = await EmbeddedChain.create();
  const facade = new CoreFacade({ backend: chain, rpcauth: [rpcauthLine("u", "a long enough password")] });
  await facade.start();
  t.teardown(() => facade.stop());
  const log = { info: () => {}, warn: () => {}, error: () => {}, debug: () => {} } as unknown as ConstructorParameters<typeof InspectorServer>[3]["log"];
  const inspector = new InspectorServer("127.0.0.1", 0, ["m"], { session: () => undefined, log });
  const inspectorPort = await inspector.listen();
  t.teardown(() => inspector.close());
  const body = JSON.stringify({ jsonrpc: "1.0", id: 1, method: "getblockcount", params: [] });
  const auth = `Authorization: Basic ${Buffer.from("u:a long enough password").toString("base64")}\r\n`;
  const post = (credentials: string) => `POST / HTTP/1.1\r\nHost: x\r\n${credentials}Content-Length: ${body.length}\r\n\r\n${body}`;
  const cases = [
    ["the inspector", inspectorPort, "GET /json/list HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "GET /json/list HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "MAX_INSPECTOR_PIPELINED"],
    ["the facade", Number(new URL(facade.rpcUrl).port), post(""), post(auth), "MAX_FACADE_PIPELINED"],
  ] as const;
  const statuses = (said: string) => [...said.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1]!);
  for (const [what, port, flood, honest, limit] of cases) {
    const turns = watchTurns();
    const sockets: Array<{ socket: net.Socket; said: string }> = [];
    for (let i = 0; i < 8; i++) {
      const c = { socket: net.connect(port, "127.0.0.1"), said: "" };
      c.socket.on("error", () => {});
      c.socket.on("data", (d: Buffer) => {
        if (c.said.length < 1_000_000) c.said += d.toString("latin1");
      });
      c.socket.pause();
      sockets.push(c);
      t.teardown(() => c.socket.destroy());
      await new Promise((r) => c.socket.once("connect", r));
      c.socket.write(flood.repeat(5000));
    }
    await sleep(2000);
    // Then read what was answered.
    for (const c of sockets) c.socket.resume();
    await sleep(1000);
    const longest = turns.reset();
    await turns.stop();
    const served = sockets.map((c) => statuses(c.said).filter((s) => s !== "429").length);
    const one = { socket: net.connect(port, "127.0.0.1"), said: "" };
    t.teardown(() => one.socket.destroy());
    one.socket.on("data", (d: Buffer) => (one.said += d.toString("latin1")));
    one.socket.on("error", () => {});
    await new Promise((r) => one.socket.once("connect", r));
    one.socket.write(honest.repeat(17));
    await waitFor(() => statuses(one.said).length >= 17 && (what === "the facade" || one.said.includes(limit)), 10_000, () => `the 17 answers (${statuses(one.said).length})`).catch(() => {});
    const counted: Record<string, number> = {};
    for (const st of statuses(one.said)) counted[st] = (counted[st] ?? 0) + 1;
    t.log(`${what}: the flood's connections were answered ${served.join(",")} requests each (not 429); longest turn of the loop ${longest.toFixed(0)} ms of CPU; 17 pipelined and read: ${JSON.stringify(counted)}`);
    // Node parses a read's requests (~64 KiB) in one go: the turns this costs are Node's (the
    // facade's 95-103 ms before the limit too); 250 ms is what every hostile test holds the loop to.
    t.true(longest < 250, `no turn of 250 ms of CPU (${longest.toFixed(0)} ms)`);
    if (what === "the facade") {
      // Its 401s and getblockcount are answered at once: none stays in progress to count.
      t.true(statuses(one.said).filter((st) => st === "200").length >= 16, "the honest client's calls answered");
      continue;
    }
    t.true(served.every((n) => n <= 64), `at most 4 x 16 served a connection (${served.join(",")})`);
    t.is(counted["200"], 16, "16 answered");
    t.is(counted["429"], 1, "the 17th refused");
    t.true(one.said.includes(limit), `the 429 names ${limit}`);
  }
});
