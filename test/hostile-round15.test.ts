// Hostile probes of round 15 (issue #8).
//
// 1. An HTTPS server behind a granted http_request that offers only finite-field DHE key
//    exchange (TLS 1.2) with a 10,000-bit group of its choosing: any odd number, as OpenSSL's
//    client checks its size, not its primality, and exponentiates by a full-length key. Before:
//    each handshake held the host's loop for ~0.8-1.1 s of CPU (a module keeping 16 requests in
//    flight: 16 s of stall a round). Now the host's TLS client offers only ECDHE on fixed groups
//    (TLS_KEY_EXCHANGE): the server finds nothing it accepts, the request fails at once naming it.
// 2. Under the real host, next to the canary ("good", which stores every block), all at once:
//    s-log    module code that never yields but logs in each turn (`for (;;) { log; await null }`).
//             Before: each line a task for the isolate host's thread, queued faster than it took
//             them: its CPU watchdog never ran (cpu_time_ms did not stop it), and the process
//             grew ~150 MB/s until the kernel killed it at memory_total_mb. Now a stretch of
//             module code sends at most MAX_LOG_LINES_PER_STRETCH lines, and the watchdog stops it.
//    s-call   the same with a host call in each turn (unawaited): before, it ran on for good
//             (15 s and more, ~300 MB); now at most MAX_CALLS_PER_STRETCH calls, then stopped.
//    s-alloc  an event handler that allocates past memory_mb after an await: before, the crash
//             reason was "Promise was abandoned"; now it names memory_mb.
//    s-errors errors the host formats: Error.prepareStackTrace looping or answering 32 MiB, an
//             error that is its own cause, a 32 MiB message, a thrown object whose message getter
//             loops (held: each an error at once or the module stopped by cpu_time_ms, named)
//    l-flood  a module flooding logs, storage, events, module calls and timers while it is
//             reloaded, unloaded and loaded (concurrently), then killed -9 (held)
//    l-stop   a module whose stop() floods logs, events and storage writes (held: unload ends
//             within stop_timeout_ms, nothing of it is heard after)
//    l-crash-a/b/c  three modules crash-looping at once (a spin, memory, a spin that logs): each is
//             quarantined, and `enable` brings each back (held)
// While they run: the canary stores every block within 5 s, RPC answers within 5 s, host heap
// and log stay bounded; afterwards each probe runs again.

import test from "ava";
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { httpExchange, parseHttpUrl, TLS_KEY_EXCHANGE } from "../capabilities/http.ts";
import { CapabilityError } from "../capabilities/types.ts";
import { buildModulesDir, sleep, startHost, tempDir, GOOD_GRANTS, type TestHost } from "./helpers/host.ts";
import { callApi, inlineModule, timerService } from "./helpers/modules.ts";
import { post } from "./helpers/rpc.ts";
import { watchHost } from "./helpers/host-watch.ts";
import { descendants } from "./helpers/procs.ts";

const MB = 1024 * 1024;

const TLS_DIR = fileURLToPath(new URL("./fixtures/tls/", import.meta.url));

// A TLS 1.2 server offering only DHE-RSA with a 10,000-bit "group" (a random odd number, g = 2),
// in a process of its own so that this process's CPU is the client's alone. Prints its port.
const DHE_SERVER = `
const tls = require("node:tls");
const fs = require("node:fs");
const crypto = require("node:crypto");
const len = (n) => { if (n < 128) return Buffer.from([n]); const o = []; while (n) { o.unshift(n & 255); n >>= 8; } return Buffer.from([0x80 | o.length, ...o]); };
const int = (b) => { if (b[0] & 0x80) b = Buffer.concat([Buffer.from([0]), b]); return Buffer.concat([Buffer.from([2]), len(b.length), b]); };
const p = crypto.randomBytes(1250); p[0] |= 0x80; p[p.length - 1] |= 1;
const body = Buffer.concat([int(p), int(Buffer.from([2]))]);
const der = Buffer.concat([Buffer.from([0x30]), len(body.length), body]);
const dhparam = "-----BEGIN DH PARAMETERS-----\\n" + der.toString("base64").match(/.{1,64}/g).join("\\n") + "\\n-----END DH PARAMETERS-----\\n";
const srv = tls.createServer({ key: fs.readFileSync(process.argv[1]), cert: fs.readFileSync(process.argv[2]), dhparam, ciphers: "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384", maxVersion: "TLSv1.2" }, (s) => {
  s.on("error", () => {});
  s.end("HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok");
});
srv.on("tlsClientError", () => {});
srv.listen(0, "127.0.0.1", () => console.log(srv.address().port));
process.stdin.on("end", () => process.exit(0)).resume();
`;

test("an HTTPS server offering only finite-field DHE with a 10,000-bit group of its choosing: the host's TLS client does no such key exchange (TLS_KEY_EXCHANGE); each request fails at once naming it, with a few ms of the host's CPU", async (t) => {
  t.timeout(120_000);
  const server = spawn(process.execPath, ["-e", DHE_SERVER, `${TLS_DIR}rsa-key.pem`, `${TLS_DIR}rsa-cert.pem`], { stdio: ["pipe", "pipe", "inherit"] });
  t.teardown(() => server.kill("SIGKILL"));
  const port = await new Promise<number>((resolve, reject) => {
    let text = "";
    server.stdout.on("data", (d: Buffer) => {
      text += d.toString();
      if (text.includes("\n")) resolve(Number(text.split("\n")[0]));
    });
    server.once("exit", (code) => reject(new Error(`the DHE server exited (${code})`)));
  });
  const delay = monitorEventLoopDelay({ resolution: 5 });
  delay.enable();
  const cpu0 = process.threadCpuUsage();
  const outcomes: string[] = [];
  for (let i = 0; i < 3; i++) {
    const err = await t.throwsAsync(httpExchange(`dhe-${port}`, { target: parseHttpUrl(`https://127.0.0.1:${port}/x`), method: "GET", headers: {}, body: undefined, timeoutMs: 30_000 }));
    t.true(err instanceof CapabilityError);
    outcomes.push(`${(err as CapabilityError).code}: ${err!.message}`);
  }
  const cpu = process.threadCpuUsage(cpu0);
  delay.disable();
  const cpuMs = (cpu.user + cpu.system) / 1000;
  t.log(outcomes[0], `; 3 requests: ${cpuMs.toFixed(0)} ms of this thread's CPU, longest loop delay ${(delay.max / 1e6).toFixed(0)} ms`);
  for (const o of outcomes) {
    t.regex(o, /^unavailable: TLS with 127\.0\.0\.1:\d+: .*offers only ECDHE key exchange .*TLS_KEY_EXCHANGE/, "refused at the handshake, naming what the host offers");
    t.true(o.includes(TLS_KEY_EXCHANGE.groups), "the message names the groups it offers");
  }
  // Before: 0.8-1.1 s of CPU per handshake (2.4-3.3 s for the three). CPU time, which load does
  // not stretch; the bound leaves room for TLS setup and a GC.
  t.true(cpuMs < 400, `the three handshakes cost ${cpuMs.toFixed(0)} ms of the host thread's CPU`);
});

/** Runs the module's probe on its first start only (counted in its storage): later starts run calmly and answer `ping`. */
const FIRST_RUN = `
  await ctx.storage.openTree("t");
  const runs = ((await ctx.storage.get("t", "runs")) as number | null) ?? 0;
  await ctx.storage.put("t", "runs", runs + 1);
  await ctx.modules.registerApi({ ping: () => runs });
`;
const PROBE_CAPS = ["read_storage", "write_storage", "register_module_api", "manage_timers", "subscribe_events"];
const SPIN = ["s-log", "s-call"];
const ERRORS = ["prepLoop", "prepHuge", "cyclicCause", "hugeMessage", "loopMessage"];
const CRASHERS = ["l-crash-a", "l-crash-b", "l-crash-c"];
const FLOOD_CAPS = ["register_module_api", "publish_events", "subscribe_events", "read_storage", "write_storage", "manage_timers", "report_metrics"];

const MODULES = {
  "s-log": inlineModule("s-log", PROBE_CAPS, `${FIRST_RUN}
    if (runs === 0) setTimeout(async () => { for (let i = 0; ; i++) { ctx.log.info("spin " + i); await null; } }, 200);
  `),
  "s-call": inlineModule("s-call", PROBE_CAPS, `${FIRST_RUN}
    if (runs === 0) setTimeout(async () => { for (;;) { void ctx.storage.get("t", "runs").catch(() => undefined); await null; } }, 200);
  `),
  "s-alloc": inlineModule("s-alloc", PROBE_CAPS, `${FIRST_RUN}
    if (runs === 0) await ctx.events.subscribe("NewBlock", async () => {
      await ctx.storage.get("t", "runs");
      const keep: unknown[] = [];
      for (;;) keep.push(new Array(1e7).fill(keep.length + 0.5));
    });
  `),
  "s-errors": inlineModule("s-errors", ["register_rpc_endpoint"], `
    const E: any = Error;
    const methods: Record<string, () => unknown> = {
      prepLoop: () => { E.prepareStackTrace = () => { for (;;) {} }; throw new Error("prep loop"); },
      prepHuge: () => { E.prepareStackTrace = () => "p".repeat(32 << 20); E.stackTraceLimit = Infinity; throw new Error("prep huge"); },
      cyclicCause: () => { E.prepareStackTrace = undefined; const e: any = new Error("cyclic"); e.cause = e; throw e; },
      hugeMessage: () => { E.prepareStackTrace = undefined; throw new Error("m".repeat(32 << 20)); },
      loopMessage: () => { throw { get message() { for (;;) {} }, get code() { for (;;) {} } }; },
    };
    for (const [k, f] of Object.entries(methods)) await ctx.rpc.register(k, "probe " + k, f);
    await ctx.rpc.register("ping", "answers", () => 1);
  `),
  "l-sink": inlineModule("l-sink", ["register_module_api", "subscribe_events", "manage_timers"], `
    await ctx.modules.registerApi({ echo: (p: unknown) => p, slow: () => new Promise((r) => setTimeout(r, 3000)) });
    await ctx.events.subscribe(["l-flood:x"], () => new Promise(() => {}));
  `),
  "l-flood": inlineModule("l-flood", [...FLOOD_CAPS, "call_module"], `
    await ctx.storage.openTree("t");
    let n = 0;
    await ctx.modules.registerApi({ ping: () => n });
    await ctx.timers.every(10, () => { n++; });
    for (let i = 0; i < 20; i++) setInterval(() => {}, 1);
    const loop = async (f: () => Promise<unknown>) => { for (;;) await f().catch(() => undefined); };
    for (let i = 0; i < 4; i++) {
      void loop(() => ctx.storage.put("t", "k" + (n % 100), "v".repeat(1000)));
      void loop(() => ctx.events.publish("x", { n }));
      void loop(() => ctx.modules.call("l-sink", "echo", { n }));
      void loop(() => ctx.modules.call("l-sink", "slow", {}));
      void loop(async () => { ctx.log.info("flood " + n); await ctx.metrics.report("m", n); });
    }
  `),
  "l-stop": inlineModule("l-stop", ["publish_events", "read_storage", "write_storage", "register_module_api"], `
    await ctx.storage.openTree("t");
    (globalThis as any).ctx = ctx;
    await ctx.modules.registerApi({ ping: () => 1 });
  `, `
  export async function stop(): Promise<void> {
    const ctx = (globalThis as any).ctx;
    for (let i = 0; ; i++) { ctx.log.info("stopping " + i); void ctx.events.publish("x", { i }).catch(() => {}); await ctx.storage.put("t", "k", i); }
  }
  `),
  ...Object.fromEntries(CRASHERS.map((name, i) => [name, inlineModule(name, PROBE_CAPS, `${FIRST_RUN}
    if (runs < 2) ${[
      `setTimeout(() => { for (;;) {} }, 50);`,
      `setTimeout(() => { const k: unknown[] = []; for (;;) k.push(new Array(2e6).fill(0.5)); }, 50);`,
      `setTimeout(async () => { for (;;) { ctx.log.info("spin"); await null; } }, 50);`,
    ][i]}
  `)])),
};

/** Isolate host processes under this test process (each runs under bwrap: the node child of it). */
async function isolateHosts(): Promise<number> {
  let n = 0;
  for (const pid of await descendants(process.pid)) {
    const cmd = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    if (cmd.startsWith(process.execPath) && cmd.includes("isolate-")) n++;
  }
  return n;
}

const crashOf = (h: TestHost, name: string) => h.records.find((r) => r.source === "host" && r.message.startsWith(`${name} crashed: `))?.message;

test.serial("round 15 under the real host: code that never yields but logs or calls in each turn is stopped by cpu_time_ms (named); a handler allocating past memory_mb after an await is named so; error formatting tricks; modules flooding while reloaded, unloaded, killed -9, or in stop(); three crash-loopers quarantined at once and enabled: the canary gets every block, RPC answers, host heap and log stay bounded, every probe runs again", async (t) => {
  t.timeout(480_000);
  const dir = await tempDir(t);
  await buildModulesDir(dir, ["good"], MODULES);
  const grants = Object.fromEntries(Object.entries(MODULES).map(([n, m]) => [n, JSON.parse(m.toml.match(/capabilities = (.*)/)![1]!) as string[]]));
  const again = { max_restarts: 50, quarantine_after: 0 };
  const h = await startHost(t, {
    dir, modules: [],
    grants: { ...grants, good: GOOD_GRANTS, "l-flood": [...FLOOD_CAPS, "call_module=l-sink"] },
    moduleLimits: {
      ...Object.fromEntries([...SPIN, "s-errors"].map((n) => [n, again])),
      // Allocating 80 MB can take a while of isolated-vm's CPU time on a loaded machine: the
      // memory limit, not the CPU watchdog, must be what stops it.
      "s-alloc": { ...again, cpu_time_ms: 10_000 },
      ...Object.fromEntries(CRASHERS.map((n) => [n, { max_restarts: 50, quarantine_after: 2, restart_window_ms: 600_000 }])),
    },
  });
  for (const m of ["good", "s-log", "s-call", "s-alloc", "s-errors", "l-sink", "l-flood", "l-stop"]) await h.waitForState(m, "running", 60_000);
  const phase0 = Date.now();
  // Loads, reloads and unloads compile and start modules on the host's loop: its turns are not
  // what this round bounds (no ticker of the watch's).
  const watch = watchHost(t, h, { turns: false });
  const round = () => watch.round();

  // The spinning probes, the allocating handler (its block comes with the first round), the
  // crash-loopers and the error tricks (through JSON-RPC), while blocks are mined.
  const errors: Record<string, string> = {};
  const calls = (async () => {
    for (const m of ERRORS) {
      const t0 = Date.now();
      errors[m] = await Promise.race([post(h, { jsonrpc: "2.0", id: 1, method: `s-errors.${m}`, params: {} }).then((a) => (a.json?.error ? `error: ${String(a.json.error.message)}` : "result")), sleep(60_000).then(() => "no answer")]);
      errors[m + "Ms"] = String(Date.now() - t0);
      // Stopped by its watchdog (prepLoop, loopMessage): the next probe waits for it to be back.
      await h.waitFor(async () => (await post(h, { jsonrpc: "2.0", id: 1, method: "s-errors.ping", params: {} })).json?.result === 1, 60_000, "s-errors to answer again");
    }
  })();
  const crashed = h.waitFor(() => [...SPIN, "s-alloc"].every((n) => crashOf(h, n)), 120_000, () => `every spinner to crash: ${[...SPIN, "s-alloc"].map((n) => `${n}=${crashOf(h, n) ?? "no crash"}`).join("; ")}`);
  const quarantined = h.waitFor(() => CRASHERS.every((n) => h.status(n)?.state === "quarantined"), 180_000, () => `every crash-looper quarantined: ${CRASHERS.map((n) => `${n}=${h.status(n)?.state}`).join(" ")}`);
  let over = false;
  const attack = Promise.all([calls, crashed, quarantined]).finally(() => (over = true));
  do {
    await round();
    await sleep(300);
  } while (!over || watch.tally.rounds < 4);
  await attack;
  const phase1 = Date.now();

  for (const n of SPIN) t.regex(crashOf(h, n) ?? "", /cpu_time_ms/, `${n}: stopped by its CPU watchdog, which the crash reason names`);
  t.regex(crashOf(h, "s-alloc") ?? "", /memory_mb/, "s-alloc: the crash reason names memory_mb");
  t.log("crash reasons", Object.fromEntries([...SPIN, "s-alloc"].map((n) => [n, crashOf(h, n)])));
  t.log("JSON-RPC errors", Object.fromEntries(Object.entries(errors).map(([k, v]) => [k, v.slice(0, 160) + (v.length > 160 ? ` ... (${v.length} chars)` : "")])));
  for (const m of ERRORS) {
    t.regex(errors[m] ?? "", /^error: /, `${m}: an error for the JSON-RPC client`);
    t.true((errors[m] ?? "").length < 16_384, `${m}: its error is cut (${errors[m]?.length} chars)`);
  }
  for (const n of [...SPIN, "s-alloc"]) {
    await h.waitForState(n, "running", 60_000);
    t.is(await callApi(h, n, "ping", {}, 30_000), 1, `${n} runs again (its second start)`);
  }

  const steps: Record<string, number> = {};
  let stepAt = Date.now();
  const step = (name: string) => {
    steps[name] = Date.now() - stepAt;
    stepAt = Date.now();
  };
  step("spinners back");
  // Three crash-loopers quarantined at once; enable brings each back (their third start is calm).
  for (const n of CRASHERS) {
    t.is(h.status(n)?.state, "quarantined", `${n} quarantined`);
    await h.manager.enable(n);
    await h.waitForState(n, "running", 60_000);
    t.is(await callApi(h, n, "ping", {}, 30_000), 2, `${n} runs again after enable`);
  }

  step("enabled");
  // The flooder reloaded, reloaded again and unloaded-then-loaded at once, twice; the sink
  // reloaded under it; then killed -9. The stop() flooder unloaded.
  const failures: string[] = [];
  const run = (what: string, p: Promise<unknown>) => p.catch((err: Error) => failures.push(`${what}: ${err.message}`));
  const m = h.manager;
  const commands = (async () => {
    for (let i = 0; i < 2; i++) {
      await Promise.all([run("reload", m.reload("l-flood")), run("reload again", m.reload("l-flood")), run("unload", m.unload("l-flood")).then(() => run("load", m.load("l-flood")))]);
      await run("reload sink", m.reload("l-sink"));
      if (h.status("l-flood")?.state !== "running") await run("load at the end", m.load("l-flood"));
      step(`commands ${i}`);
    }
    const pid = (await h.waitForState("l-flood", "running", 60_000)).pid!;
    const before = h.status("l-flood")!.restarts;
    process.kill(pid, "SIGKILL");
    await h.waitFor(() => h.status("l-flood")?.state === "running" && h.status("l-flood")!.restarts > before, 60_000, "l-flood to restart after kill -9");
    step("kill -9");
    const t0 = Date.now();
    await run("unload l-stop", m.unload("l-stop"));
    return Date.now() - t0;
  })();
  over = false;
  void commands.finally(() => (over = true));
  do {
    await round();
    await sleep(300);
  } while (!over);
  const unloadMs = await commands;
  t.deepEqual(failures, [], "every command ended");
  t.true(unloadMs < 10_000, `unloading the module whose stop() floods took ${unloadMs} ms`);
  const afterStop = h.mark();
  await sleep(1000);
  t.is(h.logsOf("l-stop", afterStop).length, 0, "nothing of l-stop is heard after its unload");
  await m.load("l-stop");
  await h.waitForState("l-stop", "running", 60_000);
  t.is(await callApi(h, "l-stop", "ping", {}, 30_000), 1, "l-stop runs again");
  t.true(Number(await callApi(h, "l-flood", "ping", {}, 30_000)) >= 0, "l-flood answers");
  // Its 20 intervals and one ctx.timers.every: nothing of the instances before.
  await h.waitFor(() => timerService(h).stats("l-flood").active <= 21, 30_000, () => `l-flood's timers to be its own instance's (${timerService(h).stats("l-flood").active})`);
  const running = Object.keys({ good: 1, ...MODULES }).filter((n) => h.status(n)?.state === "running").length;
  await t.notThrowsAsync(h.waitFor(async () => (await isolateHosts()) === running, 30_000, `one isolate host per running module (${running})`), "no isolate host left behind");

  const logChars = h.records.reduce((a, r) => a + r.message.length, 0);
  const longest = Math.max(...h.records.map((r) => r.message.length));
  t.log(`probes ${((phase1 - phase0) / 1000).toFixed(0)} s, lifecycle ${((Date.now() - phase1) / 1000).toFixed(0)} s`, steps);
  t.log(`host log ${h.records.length} records, ${(logChars / MB).toFixed(1)} MB, longest ${longest} chars; unload of l-stop ${unloadMs} ms`);
  watch.assertCanary(t);
  t.true(longest < 16_384, `the longest log line is ${longest} characters`);
  await watch.finish(t, Object.keys(MODULES).length + 1);
});
