// Hostile probes of round 15 (issue #8), under the real host and sandbox, all in one run next
// to the canary ("good", which stores every block). Native modules attack the channel itself,
// below the protocol's messages (test/fixtures/hostile-round15/main.ts):
//   r15-scm      a child of the module inherits fd 3 and writes 2,000 request frames on it, each
//                carrying a descriptor (SCM_RIGHTS): the host keeps none (its open descriptors
//                are counted) and serves the frames as any others
//   r15-split    every frame written one byte per write, its header included
//   r15-tiny     20,000 small requests in one write, then 20,000 bodies that are no message
//   r15-nonreq   frames that are not requests (acks, answers to invocations never made, logs,
//                readys, unknown types), 20,000 of each kind per write
//   r15-overmax  a length one byte over max_frame_bytes, then valid frames: the channel is
//                closed naming the limit
//   r15-shutwr   shutdown(SHUT_WR) after a request, the process staying: killed, restarted
//   r15-deaf     stops reading while JSON-RPC calls of its method and NewBlock events come:
//                disconnected naming max_unread_bytes, restarted
//   r15-connect  connects to every Unix socket it can see (/proc/net/unix, abstract names too:
//                without network access it sees none)
//   r15-abstract (network_access, test/fixtures/hostile/hostile.c) connects to an abstract Unix
//                socket the test holds in the host's network namespace: before, it connected
// and module calls across both runtimes, and names by the thousand (r15-caller, TypeScript):
// calls whose callee (native, r15-callee) answers after the caller gave up, answers twice,
// exits mid-call, or is reloaded mid-call; a chain r15-t1 (TS) -> r15-n1 (native) -> r15-t2
// (TS) -> r15-n2 (native) -> r15-t1 ... that loops until the depth bound refuses it; 10,000
// calls to modules that do not exist; 20,000 distinct event names published, 5,000
// subscribed and unsubscribed; 20,000 metric names and label values (released when the module
// stops); 2,000 JSON-RPC methods registered and unregistered.
// While they run: the canary stores every block within 5 s, RPC answers within 5 s, no turn of
// the host's loop takes more than 250 ms of its CPU, its heap, log and open descriptors stay
// within stated bounds. Every probe restarts. (A frame promised and never finished is
// test/hostile-probes.test.ts's; it takes the 30 s frame deadline.)

import test from "ava";
import { chmod, mkdir } from "node:fs/promises";
import { createServer } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { buildModulesDir, sleep, startHost, tempDir, GOOD_GRANTS } from "./helpers/host.ts";
import { compileHostile, writeNodeNative } from "./helpers/native.ts";
import { inlineModule } from "./helpers/modules.ts";
import { post } from "./helpers/rpc.ts";
import { watchHost } from "./helpers/host-watch.ts";

const PROBE = fileURLToPath(new URL("./fixtures/hostile-round15/main.ts", import.meta.url));
// r15-abstract: the kernel-hog module (test/kernel-limits.test.ts) running hostile.c's "abstract" attack.
const KERNEL_HOG = fileURLToPath(new URL("./fixtures/kernel-hog/main.ts", import.meta.url));
const MB = 1024 * 1024;

const relay = (name: string, next: string) => inlineModule(name, ["call_module", "register_module_api"], `
  await ctx.modules.registerApi({ relay: (p: any) => ctx.modules.call("${next}", "relay", { hops: (p?.hops ?? 0) + 1 }, 60_000) });
`);
const CALLER_CAPS = ["manage_timers", "call_module", "publish_events", "subscribe_events", "report_metrics", "register_rpc_endpoint"];
const CALLER = inlineModule("r15-caller", CALLER_CAPS, `
  void (async () => {
    const out: Record<string, unknown> = {};
    // Each step: its calls in batches (of 200 unless said); the codes they settled with, a few messages, the time.
    const settle = async (name: string, calls: Array<() => Promise<unknown>>, batch = 200) => {
      const codes: Record<string, number> = {};
      const messages = new Set<string>();
      const t0 = Date.now();
      for (let i = 0; i < calls.length; i += batch) {
        await Promise.all(calls.slice(i, i + batch).map((c) => c().then(() => "ok", (e: any) => { messages.add(String(e?.message).slice(0, 300)); return String(e?.code); }).then((c) => { codes[c] = (codes[c] ?? 0) + 1; })));
      }
      out[name] = { ms: Date.now() - t0, codes, messages: [...messages].slice(0, 2) };
    };
    // Wait for every callee's API (a method it lacks is then "has no API method").
    for (let i = 0; i < 600; i++) {
      const up = await Promise.all(["r15-callee", "r15-t1", "r15-n1", "r15-t2", "r15-n2"].map((m) => ctx.modules.call(m, "none", {}).then(() => false, (e: any) => /has no API method/.test(String(e?.message)))));
      if (up.every(Boolean)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await settle("late", Array.from({ length: 20 }, () => () => ctx.modules.call("r15-callee", "late", {}, 200)));
    await settle("twice", Array.from({ length: 50 }, () => () => ctx.modules.call("r15-callee", "twice", {})));
    await settle("chain", Array.from({ length: 4 }, () => () => ctx.modules.call("r15-t1", "relay", { hops: 0 }, 60_000)));
    await settle("crash", [() => ctx.modules.call("r15-callee", "crash", {}, 30_000)]);
    // The callee restarts after its crash; then the test reloads it while this call waits.
    for (let i = 0; i < 600 && !(await ctx.modules.call("r15-callee", "none", {}).then(() => false, (e: any) => /has no API method/.test(String(e?.message)))); i++) await new Promise((r) => setTimeout(r, 100));
    ctx.log.info("waiting for the reload");
    await settle("reloaded", [() => ctx.modules.call("r15-callee", "late", { ms: 25_000 }, 30_000)]);
    await settle("ghosts", Array.from({ length: 10_000 }, (_, i) => () => ctx.modules.call("ghost-" + i, "m", {})));
    await settle("publish", Array.from({ length: 20_000 }, (_, i) => () => ctx.events.publish("e" + i, { i })));
    await settle("subscribe", Array.from({ length: 100 }, (_, i) => async () => {
      const off = await ctx.events.subscribe(Array.from({ length: 50 }, (_, k) => "r15-nobody:e" + (i * 50 + k)) as any, () => {});
      await off();
    }), 1);
    await settle("metrics", Array.from({ length: 20_000 }, (_, i) => () => ctx.metrics.report("n" + i, i, { labels: { v: "x" + i } })));
    await settle("rpc", Array.from({ length: 2000 }, (_, i) => async () => {
      await ctx.rpc.register("m" + i, "probe", () => i);
      await ctx.rpc.unregister("m" + i);
    }));
    ctx.log.info("caller report", out);
  })().catch((e) => ctx.log.error("caller failed: " + e));
`);

/** Native probes: name -> [mode, capabilities, extra config]. */
const NATIVE: Record<string, [string, string[], Record<string, unknown>?]> = {
  "r15-scm": ["scm", ["read_chain_state"], { scm_frames: 2000 }],
  "r15-split": ["split", ["read_chain_state"]],
  "r15-tiny": ["tiny", ["read_chain_state"], { tiny_frames: 20_000, duration_ms: 6000 }],
  "r15-nonreq": ["nonreq", ["read_chain_state"], { tiny_frames: 20_000, duration_ms: 6000 }],
  "r15-overmax": ["overmax", ["read_chain_state"]],
  "r15-shutwr": ["shutwr", ["read_chain_state"]],
  "r15-deaf": ["deaf", ["read_chain_state", "subscribe_events", "register_rpc_endpoint"]],
  "r15-connect": ["connect", ["read_chain_state"]],
  "r15-callee": ["callee", ["register_module_api"], { duration_ms: 60_000, late_ms: 1500 }],
  "r15-n1": ["callee", ["call_module", "register_module_api"], { duration_ms: 60_000, next: "r15-t2" }],
  "r15-n2": ["callee", ["call_module", "register_module_api"], { duration_ms: 60_000, next: "r15-t1" }],
};
const INLINE = { "r15-caller": CALLER, "r15-t1": relay("r15-t1", "r15-n1"), "r15-t2": relay("r15-t2", "r15-n2") };
const GRANTS: Record<string, string[]> = {
  good: GOOD_GRANTS,
  ...Object.fromEntries(Object.entries(NATIVE).map(([n, [, caps]]) => [n, caps])),
  "r15-n1": ["call_module=r15-t2", "register_module_api"],
  "r15-n2": ["call_module=r15-t1", "register_module_api"],
  "r15-caller": CALLER_CAPS,
  "r15-t1": ["call_module=r15-n1", "register_module_api"],
  "r15-t2": ["call_module=r15-n2", "register_module_api"],
};

test("native probes of the channel (descriptors passed with SCM_RIGHTS by a child on fd 3, frames one byte per write, 20,000 frames per write, a length over max_frame_bytes, shutdown(SHUT_WR), a module that stops reading, connecting to every Unix socket in sight) and module calls across runtimes (answered late, twice, never, reloaded mid-call, a loop at the depth bound, 10,000 absent targets) with thousands of event, metric and method names: the canary keeps up, RPC answers, no loop turn over 250 ms of CPU, the host keeps no descriptor, names are refused at their limits and released, every probe restarts", async (t) => {
  t.timeout(600_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"], INLINE);
  for (const [name, [, caps]] of Object.entries(NATIVE)) await writeNodeNative(modulesDir, name, PROBE, caps);
  // An abstract Unix socket of the host's network namespace, which r15-abstract (network_access) tries.
  const abstractName = `modhost-r15-${process.pid}-${Date.now()}`;
  let abstractAccepted = 0;
  const abstractServer = createServer((c) => {
    abstractAccepted++;
    c.destroy();
  });
  await new Promise<void>((resolve, reject) => abstractServer.once("error", reject).listen(`\0${abstractName}`, () => resolve()));
  t.teardown(() => abstractServer.close());
  await writeNodeNative(modulesDir, "r15-abstract", KERNEL_HOG, ["network_access"]);
  const abstractData = path.join(dir, "data", "modules", "r15-abstract");
  await mkdir(abstractData, { recursive: true, mode: 0o700 });
  await compileHostile(path.join(abstractData, "hostile"));
  await chmod(path.join(abstractData, "hostile"), 0o755);
  const h = await startHost(t, {
    dir, modules: [],
    grants: { ...GRANTS, "r15-abstract": ["network_access"] },
    moduleConfigs: {
      ...Object.fromEntries(Object.entries(NATIVE).map(([n, [mode, , extra]]) => [n, { mode, duration_ms: 10_000, ...extra }])),
      "r15-abstract": { attack: ["abstract", abstractName] },
    },
    moduleLimits: {
      // The deaf probe goes over it with a few padded calls (1 MiB is the least allowed).
      "r15-deaf": { max_unread_bytes: MB },
      // Its attack binary runs from its data directory, which a data volume would mount noexec.
      "r15-abstract": { data_volume: "scan" },
    },
  });
  await h.waitForState("good", "running", 60_000);
  const watch = watchHost(t, h);
  const reloadWait = h.waitForLog(/^waiting for the reload$/, { source: "r15-caller", timeoutMs: 240_000 }).then(async () => {
    await sleep(500);
    await h.manager.reload("r15-callee");
  });
  const deafCalls: string[] = [];
  for (let i = 0; i < 8; i++) {
    await watch.round();
    // 200 KB a call that r15-deaf never reads (with NewBlock events) takes it past 1 MiB.
    const m = await post(h, { jsonrpc: "2.0", id: 1, method: "r15-deaf.m", params: { pad: "p".repeat(200_000) } }).catch((e: Error) => ({ text: e.message }));
    deafCalls.push(m.text.slice(0, 200));
    watch.sample();
    await sleep(1000);
  }
  watch.assertCanary(t);

  const report = async (source: string) => {
    const r = await h.waitForLog(/^probe report/, { source, timeoutMs: 120_000 });
    return (Object.keys(r.fields ?? {}).length > 1 ? r.fields : JSON.parse(r.message.replace(/^probe report /, ""))) as Record<string, any>;
  };
  const crashOf = (name: string) => h.events.find((e) => e.type === "ModuleCrashed" && (e.payload as { module: string }).module === name)?.payload as { error: string; will_restart: boolean } | undefined;

  const scm = await report("r15-scm");
  t.log("r15-scm", JSON.stringify(scm));
  t.regex(String(scm.written), /^2000 written, 2000 done, errors \{\}$/, "the child wrote 2,000 frames, each with a descriptor attached");
  t.is(scm.answered, 2000, "the host served every frame that carried a descriptor, as any other");
  t.is(scm.afterAnswered, 1, "and the module's channel goes on");
  const split = await report("r15-split");
  t.is(split.answered, 200, "200 requests written one byte per write were all answered");
  const tiny = await report("r15-tiny");
  t.log("r15-tiny", JSON.stringify(tiny));
  t.true(tiny.rounds >= 1 && tiny.answered === tiny.sent, "every request of 20,000 in one write was answered");
  const nonreq = await report("r15-nonreq");
  t.log("r15-nonreq", JSON.stringify(nonreq));
  t.true(nonreq.rounds >= 1, "a request after 100,000 frames that are not requests was answered");
  // These three are killed by the host: what they say on the way may be cut off, so the host's word is checked.
  await h.waitFor(() => crashOf("r15-overmax") && crashOf("r15-shutwr") && crashOf("r15-deaf"), 120_000, "r15-overmax, r15-shutwr and r15-deaf to be ended by the host");
  t.regex(crashOf("r15-overmax")!.error, /frame of 16777217 bytes exceeds the maximum of 16777216/, "a length over max_frame_bytes closed the channel, naming the limit");
  t.regex(crashOf("r15-shutwr")!.error, /closed its channel and did not exit/, "a half-closed channel is a closed one");
  t.log("JSON-RPC calls of r15-deaf.m:", [...new Set(deafCalls.map((c) => c.replace(/\d+/g, "N")))].join(" | "));
  t.regex(crashOf("r15-deaf")?.error ?? "", /unread, over its limit of 1048576 \(max_unread_bytes\)/, "the module that stopped reading was disconnected naming max_unread_bytes");
  const abstract = (await h.waitForLog(/^kernel-hog report$/, { source: "r15-abstract", timeoutMs: 120_000 })).fields as { results: Record<string, string> };
  t.is(abstract.results.abstract, "EPERM socket", "a native module with network_access cannot create a Unix socket (before: \"ok connect\")");
  t.is(abstractAccepted, 0, "the host's abstract Unix socket was never reached");
  const connect = await report("r15-connect");
  t.log("r15-connect", JSON.stringify(connect));
  t.is(connect.connected, 0, "no Unix socket of the host or another module was reachable");

  await reloadWait;
  const caller = (await h.waitForLog(/^caller report$/, { source: "r15-caller", timeoutMs: 240_000 })).fields as Record<string, { ms: number; codes: Record<string, number>; messages: string[] }>;
  for (const [k, v] of Object.entries(caller)) t.log(`r15-caller ${k}: ${v.ms} ms ${JSON.stringify(v.codes)} ${v.messages[0] ?? ""}`);
  t.deepEqual(caller.late!.codes, { timeout: 20 }, "calls answered after the caller gave up time out at the caller's 200 ms");
  t.true(caller.late!.ms < 10_000);
  t.deepEqual(caller.twice!.codes, { ok: 50 }, "a callee answering twice: each call settles once");
  t.deepEqual(caller.chain!.codes, { quota_exceeded: 4 }, "a call loop across both runtimes is refused at the depth bound");
  t.regex(caller.chain!.messages[0] ?? "", /nest at most 8 deep/);
  t.deepEqual(caller.crash!.codes, { unavailable: 1 }, "a callee exiting mid-call: the caller is told it stopped");
  t.true(caller.crash!.ms < 10_000, `at once, not at its 30 s deadline (${caller.crash!.ms} ms)`);
  t.deepEqual(caller.reloaded!.codes, { unavailable: 1 }, "a callee reloaded mid-call: the caller is told it stopped");
  t.true(caller.reloaded!.ms < 24_000, `before the callee's old instance would have answered, at 25 s (${caller.reloaded!.ms} ms)`);
  t.deepEqual(caller.ghosts!.codes, { not_found: 10_000 }, "calls to 10,000 modules that do not exist are refused");
  t.is((caller.publish!.codes.ok ?? 0) + (caller.publish!.codes.quota_exceeded ?? 0), 20_000, "20,000 event names published: each taken or refused at the publish rate");
  t.deepEqual(caller.subscribe!.codes, { ok: 100 }, "5,000 event names subscribed and unsubscribed, 50 at a time");
  t.deepEqual(caller.metrics!.codes, { ok: 1000, quota_exceeded: 19_000 }, "metric series are refused past 1000 per module");
  t.deepEqual(caller.rpc!.codes, { ok: 2000 }, "2,000 RPC methods registered and unregistered");
  t.is(h.host.metrics.seriesCount("r15-caller"), 1000);
  await h.manager.unload("r15-caller");
  t.is(h.host.metrics.seriesCount("r15-caller"), 0, "a stopped module's metric series are released");

  // 2,000 descriptors were passed: kept, they would show in the descriptor count.
  await watch.finish(t, Object.keys(NATIVE).length + 1);

  const restarted = [...Object.keys(NATIVE), ...Object.keys(INLINE)];
  await Promise.all(restarted.map((n) => (n === "r15-caller" ? h.manager.load(n) : h.manager.reload(n))));
  for (const n of restarted) await h.waitForState(n, "running", 60_000);
  for (const n of ["r15-overmax", "r15-shutwr", "r15-deaf"]) t.true((h.status(n)?.restarts ?? 0) >= 1 || crashOf(n)?.will_restart === true, `${n} was restarted after the host closed its channel`);
  const mark = h.mark();
  const height = await h.mine(1);
  await h.waitForLog(new RegExp(`^stored block ${height}$`), { source: "good", since: mark, timeoutMs: 10_000 });
});
