// Hostile probes of round 25 (issue #8): TypeScript modules, under the real host, next to the
// canary ("good", which stores every block):
//   the build step  a module's sources are bounded (compile.ts MAX_SOURCE_BYTES), what esbuild
//             makes of them was not. esbuild computes TypeScript enum members that are constant
//             expressions of other members and inlines enum values where they are used:
//               doubling  `A1 = A0 + A0, A2 = A1 + A1, ...`, 22 lines (~600 bytes): a string of
//                         64 MiB, its bundle 134 MB; 30 lines would ask for 32 GB
//               inliner   a 300 KB enum string used 150 times: a bundle of 45 MB, from 300 KB
//               imports   20,000 imports of distinct bare names (`import "x0";`, 330 KB): each
//                         one a callback of the build's plugins on the host's loop and an error
//                         esbuild keeps (1 MB of them, 59,000: 89 s to fail, 21.5 s of the host's CPU)
//             Now esbuild's service is ended past MAX_BUNDLER_RSS_MB (runtime/isolate/
//             bundler-watch.ts), a bundle past MAX_BUNDLE_BYTES is refused before the host
//             decodes it, and sources that may import more than MAX_IMPORTS times are refused
//             before esbuild parses them (compile.ts); each load fails naming the limit and a
//             module loaded after them runs.
//   views     Uint8Array views of 1 byte over a buffer of 96 MiB (test/fixtures/hostile-round25-
//             isolate/views.ts), handed to ctx.events.publish 50 times and answered by an RPC
//             method: each was counted as 1 byte, and each copy out of the isolate took the whole
//             buffer (6.7 s for the 50 calls, against 31 ms; the isolate host +250 MB, near its
//             ceiling at memory_mb 128). Now a view that is not its whole buffer is copied to one
//             of its own in the isolate before it leaves (in-isolate/answer.ts ownBytes).
//   churn     takes and gives back everything the host keeps for a module, round after round
//             (timers in the isolate and the host's, subscriptions, JSON-RPC methods of fresh
//             names, its module API, host calls abandoned) and throws from a handler
//             (test/fixtures/hostile-round25-isolate/churn.ts): the host's census and the
//             isolate host's size must not grow from one batch of rounds to the next. Found:
//             ctx.events.unsubscribe left the isolate's handlers of those types in place, so a
//             handler ran again beside a later subscription's (and they piled up), and every
//             type subscribed to was kept in the isolate as an empty list after its last handler
//             went (in-isolate/main.ts subscribe_events, unsubscribe_events).
// While they run: the canary stores every block within 5 s, RPC answers within 5 s, no turn of
// the host's loop takes 250 ms of its CPU, its heap, log and descriptors stay within bounds.

import test from "ava";
import { readFileSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { MAX_BUNDLE_BYTES, MAX_IMPORTS } from "../runtime/isolate/compile.ts";
import { MAX_BUNDLER_RSS_MB } from "../runtime/isolate/bundler-watch.ts";
import { buildModulesDir, GOOD_GRANTS, sleep, startHost, tempDir, writeModule, type TestHost } from "./helpers/host.ts";
import { descendants } from "./helpers/procs.ts";
import { post } from "./helpers/rpc.ts";
import { inlineModule } from "./helpers/modules.ts";
import { watchHost } from "./helpers/host-watch.ts";
import { census, grown } from "./helpers/census.ts";

const load = () => loadavg().map((l) => l.toFixed(1)).join(" ");

/** The largest resident size (VmRSS, MB) of the processes `pids()` names, sampled every 20 ms until stop(). */
function peakRss(pids: () => Promise<number[]>): { stop(): Promise<number> } {
  let peak = 0;
  let sampling = true;
  const loop = (async () => {
    while (sampling) {
      for (const pid of await pids()) {
        const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
        peak = Math.max(peak, Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024);
      }
      await sleep(20);
    }
  })();
  return {
    async stop() {
      sampling = false;
      await loop;
      return peak;
    },
  };
}

/** The largest resident size (MB) of an esbuild child of this process (the host's bundler), sampled every 20 ms until stop(). */
function bundlerPeak(): { stop(): Promise<number> } {
  return peakRss(async () => {
    const found: number[] = [];
    for (const task of await readdir("/proc/self/task").catch(() => [] as string[])) {
      for (const pid of (await readFile(`/proc/self/task/${task}/children`, "utf8").catch(() => "")).split(" ").filter((p) => p.trim())) {
        if ((await readFile(`/proc/${pid}/comm`, "utf8").catch(() => "")).trim() === "esbuild") found.push(Number(pid));
      }
    }
    return found;
  });
}

/** An enum whose member n is member n-1 twice: 16 x 2^lines bytes once esbuild has folded it. */
function doublingSource(lines: number): string {
  const members = ['A0 = "xxxxxxxxxxxxxxxx"'];
  for (let i = 1; i <= lines; i++) members.push(`A${i} = A${i - 1} + A${i - 1}`);
  return `enum E {\n  ${members.join(",\n  ")},\n}\nexport const last = E.A${lines};`;
}

test.serial(`TypeScript sources that esbuild folds into a string of 64 MiB (enum members doubling one another, ~600 bytes), inlines into a bundle of 45 MB (a 300 KB enum string used 150 times) or that import 20,000 distinct bare names fail their load naming MAX_BUNDLER_RSS_MB, MAX_BUNDLE_BYTES and MAX_IMPORTS (the last within 5 s), the bundler stays within 2 x MAX_BUNDLER_RSS_MB + 256 MB, a module loaded after them runs, the canary stores every block and RPC answers`, async (t) => {
  t.timeout(240_000);
  const h = await startHost(t, { modules: ["good"], grants: { good: GOOD_GRANTS } });
  const watch = watchHost(t, h);
  await watch.round();
  const modulesDir = h.config.modules.modules_dir;
  await writeModule(modulesDir, "r25-doubling", inlineModule("r25-doubling", [], "void last;", doublingSource(22)));
  const inliner = inlineModule("r25-inliner", [], "void uses;", `import { E } from "./e.ts";\nexport const uses = [${"E.A,".repeat(150)}];`);
  inliner.files["e.ts"] = `export enum E { A = "${"x".repeat(300_000)}" }\n`;
  await writeModule(modulesDir, "r25-inliner", inliner);
  const imports = Array.from({ length: 20_000 }, (_, i) => `import "x${i}";`).join("\n");
  await writeModule(modulesDir, "r25-imports", inlineModule("r25-imports", [], "", imports));
  const peak = bundlerPeak();
  const canary = watch.canaryLoop(500, 2);

  const t0 = Date.now();
  const doubling = await t.throwsAsync(h.manager.load("r25-doubling"));
  const doublingMs = Date.now() - t0;
  t.regex(doubling!.message, new RegExp(`passed ${MAX_BUNDLER_RSS_MB} MB \\(MAX_BUNDLER_RSS_MB`), doubling!.message.slice(0, 300));
  const t1 = Date.now();
  const inlined = await t.throwsAsync(h.manager.load("r25-inliner"));
  const inlinerMs = Date.now() - t1;
  t.regex(inlined!.message, /more than the \d+ allowed \(MAX_BUNDLE_BYTES\)/, inlined!.message.slice(0, 300));
  const t2 = Date.now();
  const imported = await t.throwsAsync(h.manager.load("r25-imports"));
  const importsMs = Date.now() - t2;
  t.regex(imported!.message, new RegExp(`more than ${MAX_IMPORTS} times \\(MAX_IMPORTS`), imported!.message.slice(0, 300));
  // Refused after reading the file (330 KB), before esbuild parses it: tens of ms; 5 s leaves room for a loaded machine.
  t.true(importsMs < 5000, `the imports' load failed after ${importsMs} ms`);
  const peakMb = await peak.stop();
  await canary.stop();

  // The watch samples every 20 ms; in one period (more when the host's loop is late, on a loaded
  // machine) esbuild can at most finish the doubling it is copying: twice the limit, and room.
  t.true(peakMb <= 2 * MAX_BUNDLER_RSS_MB + 256, `the bundler's largest size was ${peakMb.toFixed(0)} MB`);
  await writeModule(modulesDir, "r25-after", inlineModule("r25-after", [], `ctx.log.info("after started");`));
  const after = await h.manager.load("r25-after");
  t.is(after.state, "running");
  t.log(`doubling refused in ${doublingMs} ms, inliner in ${inlinerMs} ms (MAX_BUNDLE_BYTES ${MAX_BUNDLE_BYTES}), imports in ${importsMs} ms; the bundler's largest size ${peakMb.toFixed(0)} MB (MAX_BUNDLER_RSS_MB ${MAX_BUNDLER_RSS_MB}); load ${load()}`);
  await watch.round();
  watch.assertCanary(t);
  await watch.finish(t, 3);
});

/** The largest size (VmRSS, MB) of a module's isolate host (its node process), sampled every 20 ms until stop(). */
function isolateHostPeak(h: TestHost, name: string): { stop(): Promise<number> } {
  let node: number | undefined;
  return peakRss(async () => {
    const pid = h.manager.processOf(name)?.pid;
    if (pid && !node) {
      for (const d of [pid, ...(await descendants(pid))]) {
        if (/MainThread|node/.test(await readFile(`/proc/${d}/comm`, "utf8").catch(() => ""))) node = d;
      }
    }
    return node ? [node] : [];
  });
}

const VIEW_CAPS = ["register_rpc_endpoint", "publish_events"];
const BUFFER_MB = 96;

test.serial(`Uint8Array views of 1 byte over a buffer of ${BUFFER_MB} MiB, published 50 times one after the other and answered by an RPC method, leave the isolate as 1 byte each: the isolate host grows by less than half the buffer (any copy of it would pass that), the module keeps running, the canary stores every block and RPC answers`, async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const name = "r25-views";
  const toml = [`name = "${name}"`, `version = "0.1.0"`, `entry_point = "index.ts"`, `description = "round 25 probe ${name}"`, `capabilities = ${JSON.stringify(VIEW_CAPS)}`, ""].join("\n");
  await buildModulesDir(dir, ["good"], { [name]: { toml, files: { "index.ts": readFileSync(new URL("./fixtures/hostile-round25-isolate/views.ts", import.meta.url), "utf8") } } });
  const h = await startHost(t, { dir, modules: [], grants: { good: GOOD_GRANTS, [name]: VIEW_CAPS }, moduleLimits: { [name]: { memory_mb: 128, max_restarts: 0 } } });
  await h.waitForState("good", "running", 60_000);
  await h.waitForLog(/^ready$/, { source: name, timeoutMs: 60_000 });
  const watch = watchHost(t, h);
  await watch.round();
  // The same 50 calls over a buffer of 1 MiB first: the isolate host's size with such calls.
  let size = isolateHostPeak(h, name);
  const small = await post(h, { jsonrpc: "2.0", id: 1, method: `${name}.send`, params: { mb: 1, calls: 50 } });
  const baseMb = await size.stop();
  t.is((small.json.result as { sent: number } | undefined)?.sent, 50, JSON.stringify(small.json));
  const canary = watch.canaryLoop(500, 2);
  size = isolateHostPeak(h, name);
  const big = await post(h, { jsonrpc: "2.0", id: 2, method: `${name}.send`, params: { mb: BUFFER_MB, calls: 50 } });
  const sendMb = await size.stop();
  size = isolateHostPeak(h, name);
  const t0 = Date.now();
  const answer = await post(h, { jsonrpc: "2.0", id: 3, method: `${name}.answer`, params: { mb: BUFFER_MB } });
  const answerMs = Date.now() - t0;
  const answerMb = await size.stop();
  await canary.stop();
  t.is((big.json.result as { sent: number } | undefined)?.sent, 50, JSON.stringify(big.json).slice(0, 300));
  t.deepEqual(answer.json.result, { b: "00" }, JSON.stringify(answer.json).slice(0, 300));
  t.true(sendMb - baseMb < BUFFER_MB / 2, `publishing: the isolate host's largest size ${sendMb.toFixed(0)} MB, against ${baseMb.toFixed(0)} MB with a buffer of 1 MiB`);
  t.true(answerMb - baseMb < BUFFER_MB / 2, `answering: the isolate host's largest size ${answerMb.toFixed(0)} MB, against ${baseMb.toFixed(0)} MB`);
  t.is(h.status(name)?.state, "running");
  t.log(`50 calls with a view over ${BUFFER_MB} MiB in ${(big.json.result as { ms?: number } | undefined)?.ms} ms (over 1 MiB: ${(small.json.result as { ms?: number } | undefined)?.ms} ms), the answer in ${answerMs} ms; the isolate host's largest size ${sendMb.toFixed(0)} / ${answerMb.toFixed(0)} MB against ${baseMb.toFixed(0)} MB; load ${load()}`);
  watch.assertCanary(t);
  await watch.finish(t, 1);
});

const CHURN_CAPS = ["register_rpc_endpoint", "publish_events", "subscribe_events", "manage_timers", "register_module_api"];
const CHURN_ROUNDS = 1000;

test.serial(`a TypeScript module that takes and gives back timers, subscriptions, JSON-RPC methods and its API ${CHURN_ROUNDS} times a batch, abandons host calls and throws from a handler: from the second batch to the fourth the host's census (events in delivery aside) does not grow and its isolate host grows by less than 32 MB; after ctx.events.unsubscribe, a later subscription's event reaches only the later handler; the canary stores every block and RPC answers`, async (t) => {
  t.timeout(240_000);
  const dir = await tempDir(t);
  const name = "r25-churn";
  const toml = [`name = "${name}"`, `version = "0.1.0"`, `entry_point = "index.ts"`, `description = "round 25 probe ${name}"`, `capabilities = ${JSON.stringify(CHURN_CAPS)}`, ""].join("\n");
  await buildModulesDir(dir, ["good"], { [name]: { toml, files: { "index.ts": readFileSync(new URL("./fixtures/hostile-round25-isolate/churn.ts", import.meta.url), "utf8") } } });
  const h = await startHost(t, { dir, modules: [], grants: { good: GOOD_GRANTS, [name]: CHURN_CAPS }, moduleLimits: { [name]: { max_restarts: 0, request_timeout_ms: 120_000, handler_timeout_ms: 120_000 } } });
  await h.waitForState("good", "running", 60_000);
  await h.waitForLog(/^ready$/, { source: name, timeoutMs: 60_000 });
  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(500, 2);
  const resubscribed = await post(h, { jsonrpc: "2.0", id: 1, method: `${name}.resubscribe`, params: {} });
  t.deepEqual(resubscribed.json.result, { first: 0, second: 1 }, JSON.stringify(resubscribed.json));
  let before: Awaited<ReturnType<typeof census>> | undefined;
  let sizeBefore = 0;
  const figures: string[] = [];
  for (let batch = 1; batch <= 4; batch++) {
    const r = await post(h, { jsonrpc: "2.0", id: 2, method: `${name}.churn`, params: { n: CHURN_ROUNDS } });
    t.is((r.json.result as { rounds?: number } | undefined)?.rounds, CHURN_ROUNDS, JSON.stringify(r.json).slice(0, 300));
    for (let i = 0; i < 200; i++) {
      const thrown = await post(h, { jsonrpc: "2.0", id: 3, method: `${name}.throws`, params: {} });
      if (!thrown.json.error) t.fail(`throws answered ${JSON.stringify(thrown.json).slice(0, 200)}`);
    }
    const size = isolateHostPeak(h, name);
    await sleep(100);
    const sizeMb = await size.stop();
    const now = await census(h);
    figures.push(`batch ${batch}: ${(r.json.result as { ms?: number }).ms} ms, isolate host ${sizeMb.toFixed(0)} MB, host heap ${now["process.heapMB"]} MB`);
    if (batch === 2) {
      before = now;
      sizeBefore = sizeMb;
    }
    if (batch === 4) {
      // Left out: events in delivery to a subscriber when the census is taken (the canary's
      // blocks; bounded by event_queue) and the heap (watch.finish bounds it).
      const transient = /\.(queue|unacked)$|heapMB$/;
      t.deepEqual(grown(before!, now, 2).filter((g) => !transient.test(g.split(":")[0]!)), [], "what the host holds grew from the second batch to the fourth");
      t.true(sizeMb - sizeBefore < 32, `the isolate host ${sizeBefore.toFixed(0)} -> ${sizeMb.toFixed(0)} MB`);
    }
  }
  await canary.stop();
  t.is(h.status(name)?.state, "running");
  t.log(`${figures.join("; ")}; load ${load()}`);
  watch.assertCanary(t);
  await watch.finish(t, 1);
});
