// Hostile probes of what a module can make the host hold or do without sending a request
// (issue #8 items 1 and 6): native modules that flood refused frames without ever reading
// their answers, the smallest frames that are not requests (log lines, acks), or empty lines
// on stdout and stderr; publishers of 60 KiB events to subscribers, native and TypeScript,
// that never take them; text written for the operator's terminal (and a 900 KiB goodbye). Each runs
// under the real host and sandbox next to the canary ("good", which stores every block): the
// canary stores every block mined during the attack within 5 s, the host answers an RPC call
// within 5 s, the host's heap stays within a stated bound, and every probe restarts.

import test, { type ExecutionContext } from "ava";
import { readFile, writeFile } from "node:fs/promises";
import { execa } from "execa";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { buildModulesDir, sleep, startHost, tempDir, GOOD_GRANTS, type TestHost } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { inlineModule } from "./helpers/modules.ts";
import { call, cookieAuth, post } from "./helpers/rpc.ts";
import net from "node:net";
import { DEFAULT_LIMITS } from "../host/config.ts";
import { EventBus, type BusEvent } from "../host/events/bus.ts";
import { FrameDecoder } from "../protocol/frame.ts";
import { FRAME_DEADLINE_MS } from "../protocol/channel.ts";
import { fillMempool } from "./helpers/big-block.ts";
import { canaryRound } from "./helpers/canary.ts";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

// A full garbage collection before each heap sample: what is measured is what the host
// retains, not the garbage a flood churns through between collections.
setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

const PROBE = fileURLToPath(new URL("./fixtures/hostile-probes/main.ts", import.meta.url));
const BIN = fileURLToPath(new URL("../bin/modhost.js", import.meta.url));
const MB = 1024 * 1024;
const FRAME_MEMORY = fileURLToPath(new URL("./fixtures/frame-memory/main.ts", import.meta.url));

async function writeNative(modulesDir: string, name: string, caps: string[]): Promise<void> {
  await writeNodeNative(modulesDir, name, PROBE, caps);
}

/**
 * While the probes attack: `blocks` blocks, each stored by the canary within 5 s, and an RPC
 * call answered within 5 s after each. Returns the largest growth of what the host retains
 * (heap after a full collection, and Buffers) seen meanwhile.
 */
async function underAttack(t: ExecutionContext, h: TestHost, blocks: number): Promise<number> {
  const held = () => {
    gc();
    const m = process.memoryUsage();
    return m.heapUsed + m.external; // external: Buffers, such as answers queued on a socket
  };
  const heap0 = held();
  let peak = 0;
  let late = 0;
  let unanswered = 0;
  for (let i = 0; i < blocks; i++) {
    const { stored, answered } = await canaryRound(h);
    if (!stored) late++;
    if (!answered) unanswered++;
    peak = Math.max(peak, held() - heap0);
    await sleep(1000);
  }
  t.is(late, 0, "the canary stored every block within 5 s");
  t.is(unanswered, 0, "the host answered every RPC call within 5 s");
  t.log(`host heap and buffers grew at most ${(peak / MB).toFixed(0)} MB during the attack`);
  return peak;
}

async function restartsAll(t: ExecutionContext, h: TestHost, names: string[]): Promise<void> {
  for (const name of names) {
    await h.manager.reload(name);
    await h.waitForState(name, "running", 30_000);
  }
  t.pass();
}

test.serial("native modules flooding refused frames they never read, the tiniest frames that are not requests, and empty lines on stdout and stderr: refusals wait for the module's share, small frames and output lines are charged to host_cpu_ms_per_s, host memory stays flat, the canary keeps up", async (t) => {
  t.timeout(180_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  await writeNative(modulesDir, "p-refuse", ["read_chain_state"]);
  await writeNative(modulesDir, "p-tiny", ["read_chain_state"]);
  await writeNative(modulesDir, "p-lines", ["read_chain_state"]);
  const h = await startHost(t, {
    dir,
    modules: [],
    grants: { good: GOOD_GRANTS, "p-refuse": ["read_chain_state"], "p-tiny": ["read_chain_state"], "p-lines": ["read_chain_state"] },
    // Their shares of the host's CPU are small, so that being held to them is certain here.
    moduleLimits: { "p-tiny": { host_cpu_ms_per_s: 20 }, "p-lines": { host_cpu_ms_per_s: 20 } },
    moduleConfigs: { "p-refuse": { mode: "refuse", duration_ms: 12_000 }, "p-tiny": { mode: "tiny", duration_ms: 12_000 }, "p-lines": { mode: "newlines", duration_ms: 12_000 } },
  });
  await h.waitForState("good", "running", 30_000);
  let unread = 0;
  const sampler = setInterval(() => (unread = Math.max(unread, h.manager.session("p-refuse")?.unreadBytes ?? 0)), 50);
  t.teardown(() => clearInterval(sampler));
  const peak = await underAttack(t, h, 8);
  clearInterval(sampler);
  t.log(`p-refuse: at most ${(unread / MB).toFixed(1)} MB of answers waited for it to read them`);
  t.true(peak < 64 * MB, `host heap grew ${(peak / MB).toFixed(0)} MB`);
  const refuse = h.manager.session("p-refuse")!;
  t.true(refuse.stats.errors > 1000, `the host refused its frames (${refuse.stats.errors})`);
  t.true(refuse.flowStats.waitedCongested > 0, "its refusals waited for it to read what the host had sent");
  // Before the fix: 179 MB of refusals waited on its socket, and it was never disconnected.
  t.true(unread <= DEFAULT_LIMITS.max_unread_bytes, `what waited for it to read stayed within max_unread_bytes (at most ${unread} bytes)`);
  const tiny = h.manager.session("p-tiny")!;
  t.true(tiny.flowStats.inputMs > 0, "the handling of its small frames was charged");
  t.true(tiny.flowStats.waitedCpu > 0, "and past host_cpu_ms_per_s its socket was not read");
  // A million empty lines a second on stdout took the host's loop (RPC answers 1-1.6 s late).
  const lines = h.manager.session("p-lines")!;
  t.true(lines.flowStats.outputMs > 0, "the reading of its stdout and stderr was charged");
  t.truthy(h.records.find((r) => r.source === "host" && /^p-lines: throttled: its stdout and stderr are read only as fast as host_cpu_ms_per_s \(20 ms/.test(r.message)), "past its share they were not read for a while, and the operator was told");
  await restartsAll(t, h, ["p-refuse", "p-tiny", "p-lines"]);
});

test.serial("a native module flooding stdout from its first instruction, before its hello and ready: only its output is held to its share, its socket is still read, so it starts within start_timeout_ms and its requests are answered during the flood", async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  await writeNative(modulesDir, "early-lines", ["read_chain_state"]);
  const h = await startHost(t, {
    dir,
    modules: [],
    grants: { good: GOOD_GRANTS, "early-lines": ["read_chain_state"] },
    // A small share, so that its output is certainly over it; a start-up that must not wait for it.
    moduleLimits: { "early-lines": { host_cpu_ms_per_s: 20, start_timeout_ms: 8000, restart: "never" } },
    moduleConfigs: { "early-lines": { mode: "newlines" } },
  });
  // Before the fix its output's debt held its socket too: its ready could wait past start_timeout_ms.
  await h.waitForState("early-lines", "running", 30_000);
  t.is(h.status("early-lines")!.state, "running", "it started (its ready was read within start_timeout_ms)");
  const done = await h.waitForLog(/^probe early answered=\d+ of \d+$/, { source: "early-lines", timeoutMs: 60_000 });
  const [, answered, asked] = /answered=(\d+) of (\d+)/.exec(done.message)!.map(Number);
  t.true(asked! > 10, `it asked ${asked} times during its flood`);
  t.is(answered, asked, "every request it made during its flood was answered (within a generous 10 s)");
  const s = h.manager.session("early-lines")!;
  t.true(s.flowStats.outputPaused > 0, `its output was paused for its share (${s.flowStats.outputPaused} times)`);
  t.truthy(h.records.find((r) => r.source === "host" && /^early-lines: throttled: its stdout and stderr are read only as fast as host_cpu_ms_per_s \(20 ms.*its socket is still read/.test(r.message)), "the operator was told its output was held, and that its socket was not");
});

test.serial("JSON-RPC calls of a native module's method that never reads its socket: past max_unread_bytes a call is answered at once with an error naming the limit, what waits for the module stays within it, and the module is disconnected saying why", async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  await writeNative(modulesDir, "deaf", ["register_rpc_endpoint"]);
  const h = await startHost(t, {
    dir,
    modules: [],
    grants: { good: GOOD_GRANTS, deaf: ["register_rpc_endpoint"] },
    moduleLimits: { deaf: { max_unread_bytes: MB, restart: "never" } },
    moduleConfigs: { deaf: { mode: "deaf", duration_ms: 60_000 } },
    configure: (c) => void (c.rpc.call_timeout_ms = 3000),
  });
  await h.waitForState("deaf", "running", 30_000);
  await h.waitForLog(/^probe deaf registered$/, { source: "deaf", timeoutMs: 30_000 });
  const session = h.manager.session("deaf")!;
  let unread = 0;
  const sampler = setInterval(() => (unread = Math.max(unread, session.unreadBytes)), 20);
  t.teardown(() => clearInterval(sampler));
  const pad = "q".repeat(200 * 1024);
  const errors: string[] = [];
  let id = 1;
  // Rounds of 16 calls at once, 200 KiB of params each: 16 MB offered to a module reading none.
  for (let round = 0; round < 5 && session.isOpen; round++) {
    const answers = await Promise.all(Array.from({ length: 16 }, () => post(h, { jsonrpc: "2.0", id: id++, method: "deaf.m", params: { pad } })));
    for (const a of answers) errors.push(String(a.json?.error?.message ?? `no error: ${a.text.slice(0, 200)}`));
    unread = Math.max(unread, session.unreadBytes);
    t.true((await call(h, "list").then(() => true, () => false)), "the host answered an RPC call of its own meanwhile");
  }
  clearInterval(sampler);
  const refused = errors.filter((m) => /max_unread_bytes/.test(m));
  t.log(`${errors.length} calls: ${refused.length} refused naming max_unread_bytes; at most ${(unread / MB).toFixed(2)} MB waited for the module`);
  t.true(refused.length > 0, `some calls were refused naming max_unread_bytes (first error: ${errors[0]})`);
  t.true(session.flowStats.invocationsRefused >= refused.length);
  // The limit, plus the one invocation that crossed it (and the coalescing buffer).
  t.true(unread <= MB + 200 * 1024 + 64 * 1024, `what waited for the module stayed within max_unread_bytes and one frame (${unread} bytes)`);
  await h.waitForLog(/disconnected: .* unread, over its limit of 1048576 \(max_unread_bytes\)/, { source: "deaf", timeoutMs: 30_000 });
  t.pass();
});

test.serial("60 KiB events published as fast as allowed to subscribers that never take them (native and TypeScript, publishers of both runtimes): each queue stays within event_queue_bytes, drops are counted, host memory stays bounded, the canary keeps up", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const pad = "p".repeat(60 * 1024);
  const modulesDir = await buildModulesDir(dir, ["good"], {
    "ts-pub": inlineModule("ts-pub", ["publish_events"], `
      void (async () => { for (let n = 0; ; n++) await ctx.events.publish("big", { pad: ${JSON.stringify(pad)}, n }).catch(() => new Promise((r) => setTimeout(r, 5))); })();
    `),
    "ts-sink": inlineModule("ts-sink", ["subscribe_events"], `
      // Its handler never finishes: every later event waits in the host's queue for it.
      await ctx.events.subscribe(["ts-pub:big", "n-pub:big"], () => new Promise(() => {}));
    `),
  });
  await writeNative(modulesDir, "n-pub", ["publish_events"]);
  await writeNative(modulesDir, "n-sink", ["subscribe_events"]);
  await writeNative(modulesDir, "n-sink2", ["subscribe_events"]);
  const h = await startHost(t, {
    dir,
    modules: [],
    grants: {
      good: GOOD_GRANTS, "ts-pub": ["publish_events"], "n-pub": ["publish_events"],
      "ts-sink": ["subscribe_events"], "n-sink": ["subscribe_events"], "n-sink2": ["subscribe_events"],
    },
    moduleConfigs: {
      "n-pub": { mode: "publish", duration_ms: 150_000 },
      "n-sink": { mode: "sink", publisher: "ts-pub", duration_ms: 150_000 },
      "n-sink2": { mode: "sink", publisher: "n-pub", duration_ms: 150_000 },
    },
  });
  await h.waitForState("good", "running", 30_000);
  for (const m of ["ts-pub", "ts-sink", "n-pub", "n-sink", "n-sink2"]) await h.waitForState(m, "running", 30_000);
  const peak = await underAttack(t, h, 8);
  // Without event_queue_bytes each of the three queues held 1024 payloads of 60 KiB (60 MB, and
  // their encodings): +200 MB of heap in 8 s with one such pair.
  t.true(peak < 96 * MB, `host heap grew ${(peak / MB).toFixed(0)} MB`);
  // On a loaded machine the publishers may need longer than the canary's rounds to fill a
  // queue: wait (generously) until each has overflowed, so that the bound below was reached.
  for (const sink of ["ts-sink", "n-sink", "n-sink2"]) await h.waitFor(() => h.manager.session(sink)!.eventStats.dropped > 0, 120_000, `${sink}'s queue to overflow`);
  for (const sink of ["ts-sink", "n-sink", "n-sink2"]) {
    const s = h.manager.session(sink)!.eventStats;
    t.log(`${sink}: ${s.pending} events (${(s.pendingBytes / MB).toFixed(1)} MB) queued, ${s.dropped} dropped, ${s.delivered} delivered`);
    t.true(s.pendingBytes <= DEFAULT_LIMITS.event_queue_bytes, `${sink}'s queue holds ${s.pendingBytes} bytes, within event_queue_bytes`);
    t.true(s.pending < DEFAULT_LIMITS.event_queue, `${sink}'s queue was held by its bytes, not by event_queue`);
  }
  await restartsAll(t, h, ["ts-pub", "ts-sink", "n-pub", "n-sink", "n-sink2"]);
});

test.serial("four native modules each announcing a 16 MiB frame, sending all but its last 64 KiB and then a byte a second (slowloris on their own sockets): each channel is closed within the frame deadline (30 s) naming it, the canary keeps up, RPC answers, they restart", async (t) => {
  t.timeout(240_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  const DRIPS = ["drip-1", "drip-2", "drip-3", "drip-4"];
  for (const d of DRIPS) await writeNative(modulesDir, d, ["read_chain_state"]);
  const h = await startHost(t, {
    dir,
    modules: [],
    grants: { good: GOOD_GRANTS, ...Object.fromEntries(DRIPS.map((d) => [d, ["read_chain_state"]])) },
    moduleLimits: Object.fromEntries(DRIPS.map((d) => [d, { quarantine_after: 0, max_restarts: 10 }])),
    moduleConfigs: Object.fromEntries(DRIPS.map((d) => [d, { mode: "drip", duration_ms: 120_000 }])),
  });
  await h.waitForState("good", "running", 30_000);
  for (const d of DRIPS) await h.waitForState(d, "running", 30_000);
  const started = Date.now();
  // Before the deadline each held its ~16 MiB of frame in the host for as long as it liked.
  await underAttack(t, h, 6);
  for (const d of DRIPS) {
    const crash = await h.waitForLog(new RegExp(`^${d} crashed: .*still incomplete .*within ${FRAME_DEADLINE_MS} ms of its first bytes`), { source: "host", timeoutMs: FRAME_DEADLINE_MS + 60_000 });
    t.log(`${d}: ${crash.message.slice(0, 300)} (${((crash.time - started) / 1000).toFixed(1)} s after it started)`);
  }
  for (const d of DRIPS) await h.waitFor(() => (h.status(d)?.restarts ?? 0) >= 1 && h.status(d)?.state === "running", 30_000, `${d} to restart`);
  await underAttack(t, h, 2);
});

test.serial("a native module asking for a big block at every tx_offset, full and light: the host keeps only the pages that start where the SDKs read them, so its heap stays flat (+366 MB before, +18 MB after), the canary keeps up, RPC answers, it restarts", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  await writeNative(modulesDir, "p-offsets", ["read_blockchain", "read_chain_state"]);
  const h = await startHost(t, {
    dir, modules: [], noStart: true,
    grants: { good: GOOD_GRANTS, "p-offsets": ["read_blockchain", "read_chain_state"] },
    moduleConfigs: { "p-offsets": { mode: "offsets", duration_ms: 240_000 } },
  });
  // The tip the probe finds: a block of 1,001 transactions (a few pages each way).
  await fillMempool(h.chain, 1000);
  await h.chain.mine(1, { includeMempool: true });
  gc();
  const m0 = process.memoryUsage();
  await h.host.start();
  await h.waitForState("good", "running", 30_000);
  // The canary's rounds mine blocks: not before the probe has read the tip (the big block).
  await h.waitForLog(/^probe offsets tip read$/, { source: "p-offsets", timeoutMs: 60_000 });
  await underAttack(t, h, 6);
  const done = await h.waitForLog(/^probe offsets asked=\d+ answered=\d+$/, { source: "p-offsets", timeoutMs: 240_000 });
  const [asked, answered] = done.message.match(/\d+/g)!.map(Number);
  gc();
  const m1 = process.memoryUsage();
  const held = m1.heapUsed + m1.external - m0.heapUsed - m0.external;
  t.log(`${asked} pages asked, ${answered} answered; host heap and buffers +${(held / MB).toFixed(0)} MB`);
  t.is(asked, 2 * 1001, "every offset of the block was asked, full and light");
  t.is(answered, asked);
  // Kept by offset (before): 2,002 pages of ~60-300 KB each, with their encodings, for as long as the block is cached.
  t.true(held < 48 * MB, `host heap and buffers grew ${(held / MB).toFixed(0)} MB`);
  await restartsAll(t, h, ["p-offsets"]);
});

test("event queue bytes: past queueBytes the oldest queued events are dropped and counted in the next one's missed; the newest is always kept", (t) => {
  const bus = new EventBus();
  const got: BusEvent[] = [];
  const sub = bus.subscribe("m", (ev) => got.push({ ...ev }), { window: 1, queueLimit: 1000, queueBytes: 100_000 });
  sub.types.add("a:big");
  for (let n = 0; n < 10; n++) bus.publish("a:big", { n }, 30_000);
  // One sent (the window), one more at the first drop to say so at once (missed: 1), and the
  // queue keeps what fits in 100,000 bytes: three of 30,000; the other five were dropped.
  t.deepEqual(got.map((e) => [(e.payload as { n: number }).n, e.missed ?? 0]), [[0, 0], [2, 1]]);
  t.is(sub.pending, 3);
  t.is(sub.pendingBytes, 90_000);
  t.is(sub.droppedTotal, 5);
  bus.publish("a:big", { n: 10 }, 200_000); // larger than the whole limit: kept alone
  t.is(sub.pending, 1);
  t.is(sub.pendingBytes, 200_000);
  sub.ack(got.at(-1)!.seq);
  t.deepEqual(got.at(-1)!.payload, { n: 10 });
  t.is(got.at(-1)!.missed, 7, "the next event says how many were dropped since the last one sent");
  t.is(sub.pendingBytes, 0);
});

test.serial("text a module controls cannot drive the operator's terminal or forge a row in `modhost list`, `info` and `health` (a native module's goodbye, a TypeScript module's start error, manifest description and RPC description); a 900 KiB goodbye reason is cut", async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const evil = "\\r\\u001b[2J\\u001b]52;c;ZXZpbA==\\u0007good  running\\n\\u202eforged";
  const modulesDir = await buildModulesDir(dir, ["good"], {
    "ts-term": {
      ...inlineModule("ts-term", ["register_rpc_endpoint"], `
        await ctx.rpc.register("m", ${JSON.stringify(JSON.parse(`"${evil}"`))}, () => 1);
      `),
    },
    "ts-term-start": inlineModule("ts-term-start", [], `throw new Error(${JSON.stringify(JSON.parse(`"${evil}"`))});`),
  });
  // The manifest's description, with the same escapes (TOML \\u escapes).
  const toml = path.join(modulesDir, "ts-term", "module.toml");
  await writeFile(toml, (await readFile(toml, "utf8")).replace(/^description = .*$/m, `description = "${evil}"`));
  await writeNative(modulesDir, "n-term", ["read_chain_state"]);
  const h = await startHost(t, {
    dir,
    modules: [],
    grants: { good: GOOD_GRANTS, "ts-term": ["register_rpc_endpoint"], "ts-term-start": [], "n-term": ["read_chain_state"] },
    moduleLimits: { "n-term": { restart: "never" }, "ts-term-start": { restart: "never" } },
    moduleConfigs: { "n-term": { mode: "goodbye" } },
  });
  await h.waitForState("ts-term", "running", 30_000);
  await h.waitForState("n-term", ["crashed", "failed"], 30_000);
  await h.waitForState("ts-term-start", ["crashed", "failed"], 30_000);
  const port = h.host.rpcServer!.address!.port;
  const conn = ["--rpcport", String(port), "--rpccookiefile", h.config.rpc.cookie_file];
  const outputs: Record<string, string> = {};
  for (const args of [["list"], ["health"], ["info", "n-term"], ["info", "ts-term"], ["info", "ts-term-start"], ["methods"], ["info", "ts-term", "--json"]]) {
    const r = await execa(process.execPath, [BIN, ...args, ...conn], { reject: false, all: true, timeout: 60_000, env: { NO_COLOR: "1" } });
    // (health exits 1 while a module is down: degraded)
    t.is(r.exitCode, args[0] === "health" ? 1 : 0, `modhost ${args.join(" ")}: ${r.all}`);
    outputs[args.join(" ")] = r.stdout;
  }
  for (const [command, out] of Object.entries(outputs)) {
    t.false(/[\x00-\x09\x0b-\x1f\x7f\u202e]/.test(out), `modhost ${command} printed no control character, escape or bidi override`);
  }
  // What the modules said is still there, shown visibly.
  t.regex(outputs.list!, /n-term[\s\S]*bye\\r\\x1b\[2J\\x1b\]52;c;ZXZpbA==\\x07good/);
  t.regex(outputs["info ts-term-start"]!, /\\x1b\[2J/);
  t.regex(outputs["info ts-term"]!, /\\r\\x1b\[2J[\s\S]*m +\\r\\x1b\[2J/, "the description and the RPC method's description");
  t.regex(outputs.methods!, /ts-term\.m +\\r\\x1b/);
  t.regex(outputs["info ts-term --json"]!, /\\u202e/, "JSON keeps its escapes for bidi controls");
  // Its 900 KiB reason is cut where the host repeats it: status, log lines, audit, ModuleCrashed.
  t.true((h.status("n-term")!.problem ?? "").length < 8192, "the crash reason is cut");
  t.regex(h.status("n-term")!.problem ?? "", /more characters cut/);
  t.true(h.lines.filter((l) => l.includes("n-term")).every((l) => l.length < 16_384), "no host log line carries the whole reason");
  const audit = (await readFile(h.config.host.audit_log, "utf8")).split("\n").filter((l) => l.includes("n-term"));
  t.true(audit.length > 0 && audit.every((l) => l.length < 16_384), "nor any audit record");
  // Each forged row stays indented under its own module: no line but the real ones starts a row.
  const rows = outputs.list!.split("\n").filter((l) => /^\S/.test(l)).map((l) => l.split(/\s+/)[0]);
  t.deepEqual(rows.sort(), ["MODULE", "good", "n-term", "ts-term", "ts-term-start"].sort());
});

test("a frame trickled in one byte per read is held as merged parts, not one Buffer per byte: 500,000 bytes of a 16 MiB frame cost the host a few MB, not ~60", (t) => {
  const decoder = new FrameDecoder();
  const head = Buffer.alloc(4);
  head.writeUInt32BE(16 * 1024 * 1024);
  t.deepEqual(decoder.push(head), []);
  gc();
  const before = process.memoryUsage();
  for (let i = 0; i < 500_000; i++) decoder.push(Buffer.from([0xc0]));
  gc();
  const after = process.memoryUsage();
  const grew = after.heapUsed + after.external - before.heapUsed - before.external;
  t.is(decoder.buffered, 500_004);
  // One Buffer per read (before the fix): ~60 MB here, ~2 GB for the whole frame, per module.
  t.true(grew < 16 * MB, `holding 500,000 one-byte reads grew the heap and buffers by ${(grew / MB).toFixed(1)} MB`);
});

test("a 16 MiB frame arriving in 64 KiB reads costs the host at most three times what has arrived plus 2 MiB at every MiB of it (its buffer is allocated at half, not at the first read), and comes out whole", async (t) => {
  // Gathering a large frame into a buffer of its announced size from its first 64 KiB (as once
  // tried) let a module make the host hold 16 MiB for 64 KiB sent; joining it at the last read
  // copied all 16 MiB in one piece. Measured in a process of its own (test/fixtures/frame-memory).
  const r = await execa(process.execPath, ["--expose-gc", "--import=tsx", FRAME_MEMORY], { reject: false, all: true, timeout: 120_000 });
  t.is(r.exitCode, 0, r.all);
  const lines = r.stdout.trim().split("\n").map((l) => JSON.parse(l) as { arrived?: number; grew?: number; whole?: boolean });
  t.deepEqual(lines.at(-1), { whole: true }, "the frame came out whole");
  const points = lines.filter((l) => l.arrived !== undefined) as { arrived: number; grew: number }[];
  t.true(points.length >= 15, `${points.length} measurements`);
  const worst = points.reduce((w, p) => (p.grew - 3 * p.arrived > w.grew - 3 * w.arrived ? p : w));
  const said = `${(worst.grew / MB).toFixed(1)} MB held with ${(worst.arrived / MB).toFixed(1)} MB arrived`;
  t.true(worst.grew <= 3 * worst.arrived + 2 * MB, said);
  t.log(`worst against three times what arrived: ${said}`);
});

test.serial("JSON-RPC clients that never read a module's 14 MiB answers (24 of them, 28 MiB of JSON each): the host holds at most [rpc] max_unsent_bytes of answers (retained buffers +688 MB before), closing the connections whose answers waited longest; a client that reads gets the whole answer, the canary gets every block, RPC answers, the module restarts", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const ANSWER = 14 * MB;
  await buildModulesDir(dir, ["good"], {
    "rpc-big": inlineModule("rpc-big", ["register_rpc_endpoint"], `
      const answer = new Uint8Array(${ANSWER}).fill(7);
      let served = 0;
      await ctx.rpc.register("big", "a 14 MiB answer", () => { served++; ctx.log.info("served", { served }); return answer; });
    `),
  });
  const h = await startHost(t, {
    dir, modules: [], grants: { good: GOOD_GRANTS, "rpc-big": ["register_rpc_endpoint"] },
    // Every call is answered however loaded the machine (the test waits for all of them).
    configure: (c) => { c.rpc.call_timeout_ms = 120_000; },
    // Its copies of the answer are its own memory, not what is tested here.
    moduleLimits: { "rpc-big": { log_bytes_per_second: 1024 * 1024, memory_total_mb: 2048 } },
  });
  await h.waitForState("good", "running", 60_000);
  await h.waitForState("rpc-big", "running", 60_000);
  const server = h.host.rpcServer!;
  const cap = server.limits.max_unsent_bytes;
  const at = server.address!;
  const authorization = await cookieAuth(h);
  const body = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "rpc-big.big", params: {} });
  gc();
  const buffers0 = process.memoryUsage().arrayBuffers;

  const clients = 24;
  const served = () => Math.max(0, ...h.logsOf("rpc-big").map((r) => Number((r.fields as { served?: number })?.served ?? 0)));
  const sockets: net.Socket[] = [];
  t.teardown(() => { for (const s of sockets) s.destroy(); });
  for (let i = 0; i < clients; i++) {
    const s = net.connect(at.port, at.host);
    s.on("error", () => {});
    await new Promise((resolve) => s.once("connect", resolve));
    s.write(`POST / HTTP/1.1\r\nHost: x\r\nAuthorization: ${authorization}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    s.pause(); // and never read
    sockets.push(s);
    // One call at a time: 24 copies of the answer at once would pass the module's own memory limit.
    await h.waitFor(() => served() > i, 120_000, `call ${i + 1} to be served by rpc-big`);
  }
  await h.waitFor(() => served() >= clients, 180_000, "every call to be served by rpc-big");
  // Give the last answers time to be written (each is built in slices of ~2 ms on the loop).
  await h.waitFor(() => server.stats.slowReadersClosed >= clients - Math.ceil(cap / (2 * ANSWER)) - 1, 60_000, () => `connections closed past max_unsent_bytes (${server.stats.slowReadersClosed})`).catch(() => undefined);
  gc();
  const held = process.memoryUsage().arrayBuffers - buffers0;
  t.log(`${clients} unread answers: retained buffers +${(held / MB).toFixed(0)} MB (max_unsent_bytes ${cap / MB} MiB), ${server.stats.slowReadersClosed} connections closed`);
  // What is retained: at most max_unsent_bytes of answers and one more (28 MiB), the module's
  // answer being decoded and the channel's buffers (72-145 MB measured): far below 24 x 28 MiB.
  t.true(held < cap + 192 * MB, `retained buffers grew ${(held / MB).toFixed(0)} MB`);
  t.true(server.stats.slowReadersClosed > 0, "the connections with the oldest unread answers were closed");

  // Meanwhile: a client that reads gets the whole answer; the canary and RPC keep up.
  const whole = await post(h, { jsonrpc: "2.0", id: 2, method: "rpc-big.big", params: {} });
  t.is((whole.json?.result as string | undefined)?.length, ANSWER * 2, `a reading client got the whole answer (hex): ${whole.status} ${whole.text.slice(0, 300)}`);
  const mark = h.mark();
  const height = await h.mine(1);
  await h.waitForLog(new RegExp(`^stored block ${height}$`), { source: "good", since: mark, timeoutMs: 5000 });
  t.true(await Promise.race([call(h, "list").then(() => true, () => false), sleep(5000).then(() => false)]), "the host answered RPC within 5 s");
  for (const s of sockets) s.destroy();
  await h.manager.reload("rpc-big");
  await h.waitForState("rpc-big", "running", 60_000);
});
