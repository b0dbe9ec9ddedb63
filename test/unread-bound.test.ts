// max_unread_bytes is a bound by construction (issue #8): every admitted request reserves the
// most bytes its answer can take (capabilities/answer-bounds.ts) until it is answered, and a
// request whose reservation does not fit beside what already waits for the module waits itself.
// A hostile native module under the real host and sandbox pipelines 128 storage_iter requests
// with ~1 MB answers and does not read its socket. Before, each request was admitted while the
// module was under the limit and all the answers landed afterwards: 53-56 MB unread against
// 4 MiB. Here what waits for it (the session's peak counter) stays within the limit plus the
// frame headers, and once it reads again every answer comes, none refused.

import test from "ava";
import { fileURLToPath } from "node:url";
import { buildModulesDir, startHost, tempDir, type TestHost } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { inlineModule } from "./helpers/modules.ts";
import { answerBound, FRAME_SIZED_METHODS, SMALL_ANSWER_BYTES } from "../capabilities/answer-bounds.ts";
import { METHODS } from "../capabilities/families.ts";
import { DEFAULT_LIMITS } from "../host/config.ts";
import { DEFAULT_MAX_FRAME_BYTES } from "../protocol/frame.ts";
import { encodeEnvelope, HOST_BODY_LIMITS } from "../protocol/codec.ts";
import { MAX_FILE_BYTES, MAX_LIST_ENTRIES } from "../capabilities/fs-path.ts";
import { MEMPOOL_PAGE } from "../capabilities/mempool.ts";
import { MAX_RESPONSE_BODY_BYTES, MAX_RESPONSE_HEADER_BYTES, MAX_RESPONSE_HEADERS, MAX_URL_CHARS } from "../capabilities/http.ts";
import http from "node:http";
import type { AddressInfo } from "node:net";

const FIXTURE = fileURLToPath(new URL("./fixtures/unread-pipeline/main.ts", import.meta.url));
const MiB = 1024 * 1024;

async function writeNative(modulesDir: string, name: string, capabilities = ["read_storage", "write_storage"]): Promise<void> {
  await writeNodeNative(modulesDir, name, FIXTURE, capabilities);
}

test.serial("a native module pipelining 128 storage_iter requests of ~1 MB answers and not reading: what waits for it never passes max_unread_bytes (4 MiB) but by frame headers; its requests wait, and all are answered once it reads", async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, []);
  await writeNative(modulesDir, "deep");
  const limit = 4 * MiB;
  const h = await startHost(t, {
    dir,
    modules: [],
    grants: { deep: ["read_storage", "write_storage"] },
    // No health checks (invocations) and no events: what it is sent is its answers alone.
    moduleLimits: { deep: { max_unread_bytes: limit, health_interval_ms: 0, restart: "never" } },
    moduleConfigs: { deep: { requests: 128, pause_ms: 3000 } },
  });
  await h.waitForLog(/^sent 128 storage_iter requests, not reading$/, { source: "deep", timeoutMs: 30_000 });
  const session = h.manager.session("deep")!;
  let reservedPeak = 0;
  const sampler = setInterval(() => (reservedPeak = Math.max(reservedPeak, session.reservedBytes)), 5);
  t.teardown(() => clearInterval(sampler));
  const done = await h.waitForLog(/^read \d+ answers$/, { source: "deep", timeoutMs: 60_000 });
  clearInterval(sampler);
  const peak = session.flowStats.peakUnread;
  t.log(`peak unread ${(peak / MiB).toFixed(2)} MiB against ${limit / MiB} MiB; requests waited for max_unread_bytes ${session.flowStats.waitedUnread} times; reserved at most ${(reservedPeak / MiB).toFixed(2)} MiB`);
  // 4 bytes of frame header per answer on top of the reserved bodies (max_requests_in_flight answers at most).
  t.true(peak <= limit + 4 * DEFAULT_LIMITS.max_requests_in_flight, `at most ${peak} bytes waited for the module`);
  t.true(peak > limit / 2, "the answers did pile up to near the limit (the module really did not read)");
  t.true(session.flowStats.waitedUnread > 0, "requests waited for room under max_unread_bytes");
  t.true(session.unreadBound >= limit, "the stated bound is at least the limit");
  t.is(done.message, "read 128 answers");
  t.deepEqual(done.fields?.["errors"], {}, "no answer was refused (each fitted its reservation)");
  t.is(session.reservedBytes, 0, "every reservation was released");
});

// storage_get is answered in the pass that admits it (a synchronous read: host/session.ts
// serve), its reservation released at once: what bounds the module is then the answers it has
// not read, each admitted only while its reservation fits beside them.
test.serial("a native module pipelining 128 storage_get of a ~1 MB value (answered at once) and not reading: what waits for it never passes max_unread_bytes (4 MiB) but by frame headers, and all are answered once it reads", async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, []);
  await writeNative(modulesDir, "getter");
  const limit = 4 * MiB;
  const h = await startHost(t, {
    dir,
    modules: [],
    grants: { getter: ["read_storage", "write_storage"] },
    moduleLimits: { getter: { max_unread_bytes: limit, health_interval_ms: 0, restart: "never" } },
    moduleConfigs: { getter: { requests: 128, pause_ms: 3000, get: true } },
  });
  await h.waitForLog(/^sent 128 storage_get requests, not reading$/, { source: "getter", timeoutMs: 30_000 });
  const session = h.manager.session("getter")!;
  const done = await h.waitForLog(/^read \d+ answers$/, { source: "getter", timeoutMs: 60_000 });
  const peak = session.flowStats.peakUnread;
  const waited = session.flowStats.waitedUnread + session.flowStats.waitedCongested;
  t.log(`peak unread ${(peak / MiB).toFixed(2)} MiB against ${limit / MiB} MiB; requests waited for max_unread_bytes ${session.flowStats.waitedUnread} times, for the socket to drain ${session.flowStats.waitedCongested} times`);
  t.true(peak <= limit + 4 * DEFAULT_LIMITS.max_requests_in_flight, `at most ${peak} bytes waited for the module`);
  // At least most of one ~1 MB answer waited (the kernel's socket buffer takes ~200 KB of it):
  // the module really did not read. How far past that it piles up depends on whether the
  // socket's own backpressure (congested) or max_unread_bytes holds the next request first.
  t.true(peak > limit / 8, `the answers did pile up (${peak} bytes): the module really did not read`);
  t.true(waited > 0, "requests waited for room (max_unread_bytes or the socket draining) while it did not read");
  t.is(done.message, "read 128 answers");
  t.deepEqual(done.fields?.["errors"], {}, "no answer was refused");
  t.is(session.reservedBytes, 0, "every reservation was released");
});

// Answers relayed from another module (call_module) do not wait for room (a call chain A -> B
// -> A would wait for its own reservation). Before, each was sent whatever the caller had not
// read: 64 in flight put 64 answers (up to a frame each) in host memory. Now each is held to
// what the caller has not read when it arrives, like an invocation.
test.serial("a native module with 48 call_module requests in flight to a module answering ~1 MB each, not reading: the relayed answers stop at max_unread_bytes (4 MiB) plus one answer, the rest refused with quota_exceeded", async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const callee = inlineModule("big-answers", ["register_module_api"], `
    const answer = "a".repeat(1_000_000);
    await ctx.modules.registerApi({ big: () => answer });
    ctx.log.info("api up");
  `);
  const modulesDir = await buildModulesDir(dir, []);
  await writeNative(modulesDir, "caller", ["call_module"]);
  const limit = 4 * MiB;
  const requests = 48;
  const h = await startHost(t, {
    dir,
    modules: [],
    inline: { "big-answers": callee },
    grants: { caller: ["call_module=big-answers"], "big-answers": ["register_module_api"] },
    moduleLimits: { caller: { max_unread_bytes: limit, health_interval_ms: 0, restart: "never" } },
    moduleConfigs: { caller: { requests, pause_ms: 4000, call: { target: "big-answers", method: "big" } } },
  });
  await h.waitForLog(/^sent 48 call_module requests, not reading$/, { source: "caller", timeoutMs: 30_000 });
  const session = h.manager.session("caller")!;
  const done = await h.waitForLog(/^read \d+ answers$/, { source: "caller", timeoutMs: 60_000 });
  const peak = session.flowStats.peakUnread;
  t.log(`peak unread ${(peak / MiB).toFixed(2)} MiB against ${limit / MiB} MiB; relayed answers refused ${session.flowStats.relayedRefused}; errors ${JSON.stringify(done.fields?.["errors"])}`);
  // One relayed answer may be sent while what waits is just under the limit (+ a frame's header per answer).
  t.true(peak <= limit + 1_100_000 + 4 * requests, `at most ${peak} bytes waited for the module`);
  t.true(peak > limit / 2, "the answers did pile up to near the limit (the module really did not read)");
  t.is(done.message, `read ${requests} answers`, "every request was answered, with the answer or an error");
  const errors = done.fields?.["errors"] as Record<string, number>;
  t.true((errors["quota_exceeded"] ?? 0) > 0 && session.flowStats.relayedRefused === errors["quota_exceeded"], "the answers past the limit were refused with quota_exceeded");
});

test("answers bounded by their method's own limit reserve that bound, not a frame, and the largest such answers fit it: an 8 MiB file (bytes and utf8), 10 000 entries of 255 undecodable bytes, a page of 8192 txids", (t) => {
  const l = { frameBytes: DEFAULT_MAX_FRAME_BYTES, storageIterMaxBytes: MiB };
  const body = (result: unknown) => encodeEnvelope({ t: "response", id: 4_294_967_295 }, "result", result, HOST_BODY_LIMITS).reduce((n, b) => n + b.length, 0);
  const largest: Record<string, unknown[]> = {
    read_file: [new Uint8Array(MAX_FILE_BYTES), "\u00e9".repeat(MAX_FILE_BYTES / 2), "\u20ac".repeat(Math.floor(MAX_FILE_BYTES / 3))],
    list_directory: [Array.from({ length: MAX_LIST_ENTRIES }, (_, i) => ({ name: "\ufffd".repeat(255 - String(i).length) + i, type: i % 2 ? "directory" : "symlink" }))],
    get_mempool_txids: [{ txids: Array.from({ length: MEMPOOL_PAGE }, (_, i) => i.toString(16).padStart(64, "f")), next_after: Number.MAX_SAFE_INTEGER, count: Number.MAX_SAFE_INTEGER, order: "position" }],
    get_mempool_transactions: [Array.from({ length: MEMPOOL_PAGE }, (_, i) => i.toString(16).padStart(64, "f"))],
  };
  for (const [method, answers] of Object.entries(largest)) {
    const bound = answerBound(method, {}, l);
    // Before, each was reserved a whole frame: with 32 MiB of max_unread_bytes, 2 at a time.
    t.true(bound < DEFAULT_MAX_FRAME_BYTES * 0.6, `${method}: reserves ${bound} bytes, not a frame`);
    for (const answer of answers) {
      const size = body(answer);
      t.true(size <= bound, `${method}: the largest answer encodes to ${size} bytes, within its reservation of ${bound}`);
    }
    t.log(`${method}: reserves ${(bound / MiB).toFixed(2)} MiB (${Math.floor(DEFAULT_LIMITS.max_unread_bytes / bound)} at once under the default max_unread_bytes); largest answer ${(Math.max(...answers.map(body)) / MiB).toFixed(2)} MiB`);
  }
});

test("every method the answer bounds name a whole frame for is in the catalogue", (t) => {
  for (const name of FRAME_SIZED_METHODS) t.true(METHODS.has(name), `${name} is a method`);
});

test("answer bounds: small answers, storage_get by the value quota, storage_iter by storage_iter_max_bytes and its limit, blocks by the frame", (t) => {
  const l = { frameBytes: DEFAULT_MAX_FRAME_BYTES, storageIterMaxBytes: MiB };
  t.is(answerBound("get_chain_tip", {}, l), SMALL_ANSWER_BYTES);
  t.is(answerBound("no_such_method", {}, l), SMALL_ANSWER_BYTES);
  t.true(answerBound("storage_get", {}, l) > MiB && answerBound("storage_get", {}, l) < 2 * MiB);
  const few = answerBound("storage_iter", { limit: 10 }, l);
  const many = answerBound("storage_iter", { limit: 10_000 }, l);
  t.true(few > MiB && few < many && many < 2 * MiB, `${few} < ${many}`);
  t.true(answerBound("storage_iter", {}, { ...l, storageIterMaxBytes: 8 * MiB }) > 8 * MiB);
  t.is(answerBound("get_block", { hash: "00" }, l), DEFAULT_MAX_FRAME_BYTES);
  t.is(answerBound("storage_iter", {}, { frameBytes: MiB, storageIterMaxBytes: 8 * MiB }), MiB, "never more than a frame");
});

test("http_request reserves its own max_bytes (or 8 MiB), three times as utf8, not a frame; the largest answers of each form fit their reservation: a body of max_bytes undecodable bytes as utf8, 32 KiB of latin1 head in 200 fields, the longest URL percent-escaped", (t) => {
  const l = { frameBytes: DEFAULT_MAX_FRAME_BYTES, storageIterMaxBytes: MiB };
  const body = (result: unknown) => encodeEnvelope({ t: "response", id: 4_294_967_295 }, "result", result, HOST_BODY_LIMITS).reduce((n, b) => n + b.length, 0);
  // Names and values of 0xff characters (2 bytes each in UTF-8) filling the head, within MAX_RESPONSE_HEADERS fields.
  const per = Math.floor(MAX_RESPONSE_HEADER_BYTES / (MAX_RESPONSE_HEADERS - 1) / 2) - 4;
  const headers = Object.fromEntries(Array.from({ length: MAX_RESPONSE_HEADERS - 1 }, (_, i) => [`${i}`.padEnd(per, "\u00ff"), "\u00ff".repeat(per)]));
  // The longest URL, every character escaped as %XX%XX%XX.
  const url = `http://${"a".repeat(32)}/${"%EF%BF%BD".repeat(MAX_URL_CHARS)}`;
  const answer = (b: Uint8Array | string) => ({ status: 599, headers, body: b, url });
  for (const [params, largest] of [
    [{}, new Uint8Array(MAX_RESPONSE_BODY_BYTES)],
    [{ encoding: "binary", max_bytes: 64 * 1024 }, new Uint8Array(64 * 1024)],
    [{ encoding: "utf8", max_bytes: 64 * 1024 }, "\ufffd".repeat(64 * 1024)],
    [{ encoding: "utf8", max_bytes: 2 * MiB }, "\ufffd".repeat(2 * MiB)],
    [{ max_bytes: 0 }, new Uint8Array(0)],
  ] as const) {
    const bound = answerBound("http_request", params, l);
    const size = body(answer(largest));
    t.true(size <= bound, `${JSON.stringify(params)}: the largest answer encodes to ${size} bytes, within its reservation of ${bound}`);
    t.true(bound < DEFAULT_MAX_FRAME_BYTES * 0.6, `${JSON.stringify(params)}: reserves ${bound} bytes, not a frame`);
    t.log(`${JSON.stringify(params)}: reserves ${(bound / MiB).toFixed(2)} MiB (${Math.floor(DEFAULT_LIMITS.max_unread_bytes / bound)} at once under the default max_unread_bytes); largest answer ${(size / MiB).toFixed(2)} MiB`);
  }
  t.is(answerBound("http_request", { encoding: "utf8" }, l), DEFAULT_MAX_FRAME_BYTES, "8 MiB as utf8 may be 24 MiB: the frame bounds it");
  t.is(answerBound("http_request", { max_bytes: "1" }, l), answerBound("http_request", {}, l), "a max_bytes the method refuses reserves the default");
  t.is(answerBound("http_request", { max_bytes: MAX_RESPONSE_BODY_BYTES * 4 }, l), answerBound("http_request", {}, l), "never more than the capability's limit");
});

/**
 * A local server that holds every request until `want` are open at once (or none came for
 * `idleMs`), then answers each with a few bytes: the most it saw at once is how many of the
 * module's requests the host served together.
 */
async function gatheringServer(t: import("ava").ExecutionContext, want: number, idleMs: number): Promise<{ port: number; peak: () => number; served: () => number }> {
  const held: http.ServerResponse[] = [];
  let peak = 0;
  let served = 0;
  let idle: NodeJS.Timeout | undefined;
  const release = () => {
    clearTimeout(idle);
    for (const res of held.splice(0)) { served++; res.end("ok"); }
  };
  const srv = http.createServer((req, res) => {
    req.resume();
    held.push(res);
    peak = Math.max(peak, held.length);
    clearTimeout(idle);
    if (held.length >= want) release();
    else idle = setTimeout(release, idleMs);
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  t.teardown(() => { clearTimeout(idle); srv.closeAllConnections(); srv.close(); });
  return { port: (srv.address() as AddressInfo).port, peak: () => peak, served: () => served };
}

async function fetchers(t: import("ava").ExecutionContext, port: number, options: string): Promise<TestHost> {
  const dir = await tempDir(t);
  const grant = `network_access=127.0.0.1:${port}`;
  await buildModulesDir(dir, [], {
    fetcher: inlineModule("fetcher", [grant], `
      const codes: Record<string, number> = {};
      await Promise.all(Array.from({ length: 8 }, () => ctx.network.fetch("http://127.0.0.1:${port}/x", ${options}).then(() => (codes.ok = (codes.ok ?? 0) + 1), (e: any) => (codes[e.code] = (codes[e.code] ?? 0) + 1))));
      ctx.log.info("fetched", codes);
    `),
  });
  return startHost(t, { dir, modules: [], grants: { fetcher: [grant] }, moduleLimits: { fetcher: { health_interval_ms: 0 } } });
}

test.serial("under the real host, a TypeScript module's 8 http_requests with max_bytes = 64 KiB are served at once under the default max_unread_bytes (each reserved a whole frame before: 2 at a time); without max_bytes at most 3 (8.2 MiB each), every one answered", async (t) => {
  t.timeout(240_000);
  const small = await gatheringServer(t, 8, 5000);
  const h1 = await fetchers(t, small.port, `{ max_bytes: 65536, timeout_ms: 60000 }`);
  const r1 = await h1.waitForLog(/^fetched$/, { source: "fetcher", timeoutMs: 120_000 });
  t.log(`max_bytes = 64 KiB: at most ${small.peak()} requests at the server at once; ${JSON.stringify(r1.fields)}`);
  t.deepEqual(r1.fields, { ok: 8 });
  t.is(small.peak(), 8, "all 8 at the server at once");
  await h1.stop();

  const large = await gatheringServer(t, 8, 3000);
  const h2 = await fetchers(t, large.port, `{ timeout_ms: 60000 }`);
  const r2 = await h2.waitForLog(/^fetched$/, { source: "fetcher", timeoutMs: 120_000 });
  t.log(`no max_bytes: at most ${large.peak()} requests at the server at once; ${JSON.stringify(r2.fields)}`);
  t.deepEqual(r2.fields, { ok: 8 });
  t.true(large.peak() >= 2 && large.peak() <= 3, `${large.peak()} at once: as many as 8.2 MiB reservations fit in 32 MiB`);
});

test.serial("under the real host, a native module whose start-up leaves an http_request waiting for max_unread_bytes (3 of 8.2 MiB each at a server that holds them 10 s, a 4th), then sends its ready, is running at once: its ready is read past the waiting request (before: unread until start_timeout_ms failed the start)", async (t) => {
  t.timeout(180_000);
  const srv = await gatheringServer(t, 100, 10_000);
  const dir = await tempDir(t);
  const grant = `network_access=127.0.0.1:${srv.port}`;
  const modulesDir = await buildModulesDir(dir, []);
  await writeNodeNative(modulesDir, "starter", fileURLToPath(new URL("./fixtures/ready-behind/main.ts", import.meta.url)), ["network_access"]);
  const started = Date.now();
  const h = await startHost(t, {
    dir, modules: [],
    grants: { starter: [grant] },
    moduleLimits: { starter: { health_interval_ms: 0, start_timeout_ms: 6_000, restart: "never" } },
    moduleConfigs: { starter: { url: `http://127.0.0.1:${srv.port}/x` } },
  });
  const status = h.mustStatus("starter");
  t.is(status.state, "running", `${status.problem ?? ""}`);
  t.log(`running after ${Date.now() - started} ms; ${srv.peak()} requests at the server`);
  const fetched = await h.waitForLog(/^fetched$/, { source: "starter", timeoutMs: 120_000 });
  t.deepEqual(fetched.fields, { ok: 4 }, "every request answered once the server let go");
});

test.serial("under the real host, a TypeScript module's module calls in flight (three to a method answering after 20 s, a frame reserved each) do not hold back its other requests: its storage writes are answered meanwhile", async (t) => {
  t.timeout(180_000);
  const dir = await tempDir(t);
  await buildModulesDir(dir, [], {
    "slow-callee": inlineModule("slow-callee", ["register_module_api", "manage_timers"], `
      await ctx.modules.registerApi({ up: () => true, slow: () => new Promise((r) => setTimeout(() => r("late"), 20_000)) });
    `),
    "busy-caller": inlineModule("busy-caller", ["call_module", "write_storage", "read_storage", "manage_timers"], `
      void (async () => {
        // Once the callee runs (the two start side by side).
        for (;;) {
          try { await ctx.modules.call("slow-callee", "up", {}, 5_000); break; } catch { await new Promise((r) => setTimeout(r, 100)); }
        }
        const calls = Array.from({ length: 3 }, () => ctx.modules.call("slow-callee", "slow", {}, 60_000));
        const t0 = Date.now();
        await ctx.storage.openTree("t");
        for (let i = 0; i < 10; i++) await ctx.storage.put("t", "k" + i, "v");
        ctx.log.info("stored", { ms: Date.now() - t0 });
        ctx.log.info("called", { answers: await Promise.all(calls) });
      })();
    `),
  });
  const h = await startHost(t, {
    dir, modules: [],
    grants: { "slow-callee": ["register_module_api", "manage_timers"], "busy-caller": ["call_module=slow-callee", "write_storage", "read_storage", "manage_timers"] },
    moduleLimits: { "busy-caller": { health_interval_ms: 0 } },
  });
  const stored = await h.waitForLog(/^stored$/, { source: "busy-caller", timeoutMs: 60_000 });
  const ms = stored.fields?.["ms"] as number;
  t.log(`10 writes answered in ${ms} ms with 3 module calls in flight`);
  t.true(ms < 15_000, `the writes did not wait for the calls' answers (20 s): ${ms} ms`);
  const called = await h.waitForLog(/^called$/, { source: "busy-caller", timeoutMs: 60_000 });
  t.deepEqual(called.fields, { answers: ["late", "late", "late"] });
});
