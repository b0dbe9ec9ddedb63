// Hostile probes of round 18 (issue #8), under the real host and sandbox, each next to the
// canary ("good", which stores every block). Native modules attack what the host reads and
// keeps on their behalf:
//   r18-churn   churns what the host keeps per module (test/fixtures/hostile-round18/main.ts):
//               subscriptions, JSON-RPC methods and module APIs of the longest names, timers,
//               storage trees, each added and removed thousands of times: nothing is left.
// While they run: the canary stores every block within 5 s, RPC answers within 5 s, no turn of
// the host's loop takes 250 ms of its CPU, its heap, log and descriptors stay within bounds.
// The tests watch this process's loop, so they run one at a time.

import test from "ava";
import { fileURLToPath } from "node:url";
import { buildModulesDir, startHost, tempDir, GOOD_GRANTS } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { watchHost } from "./helpers/host-watch.ts";
import { call } from "./helpers/rpc.ts";

const PROBE = fileURLToPath(new URL("./fixtures/hostile-round18/main.ts", import.meta.url));

test.serial("a native module that adds and removes, thousands of times each, a subscription to a fresh event type, a JSON-RPC method of the longest name with a 1 KiB description, a module API of 256 of the longest names, a timer and a storage tree with a value in it is answered every time and leaves nothing behind (no method, API, timer, tree or byte of storage), while the canary stores every block, RPC answers, no turn of the host's loop takes 250 ms of CPU and the host's heap grows less than 32 MB (before: +89 MB for 10,000 trees)", async (t) => {
  t.timeout(600_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  const caps = ["subscribe_events", "register_rpc_endpoint", "register_module_api", "manage_timers", "read_storage", "write_storage", "manage_storage"];
  await writeNodeNative(modulesDir, "r18-churn", PROBE, caps);
  const rounds = 30_000;
  const treeRounds = 10_000;
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, "r18-churn": caps },
    moduleConfigs: { "r18-churn": { rounds, tree_rounds: treeRounds, at_once: 32 } },
    moduleLimits: { "r18-churn": { requests_per_second: 20_000, data_volume: "scan" } },
  });
  await h.waitForState("good", "running", 60_000);
  const watch = watchHost(t, h);
  const mark = h.mark();
  const canary = watch.canaryLoop(500, 4);
  const report = (await h.waitForLog(/^probe report$/, { source: "r18-churn", since: 0, timeoutMs: 480_000 })).fields as Record<string, any>;
  await canary.stop();
  t.log(JSON.stringify(report));
  t.log(`canary rounds during the churn: ${watch.tally.rounds}; log records since the watch began: ${h.records.length - mark}`);
  t.deepEqual(report.subscribe.codes, { ok: rounds }, "every subscription added and removed");
  t.deepEqual(report.rpc.codes, { ok: rounds }, "every JSON-RPC method registered and unregistered");
  t.deepEqual(report.api.codes, { ok: rounds / 100 }, "every module API registered and withdrawn");
  t.deepEqual(report.timers.codes, { ok: rounds }, "every timer armed and cancelled");
  t.deepEqual(report.trees.codes, { ok: treeRounds }, "every tree created, written and dropped");
  t.deepEqual(report.left.trees, [], "no tree is left");
  t.is(report.left.usage.bytes, 0, "no byte of storage is left");
  const methods = (await call(h, "rpc_methods")) as { modules: Array<{ module: string }> };
  t.deepEqual(methods.modules.filter((m) => m.module === "r18-churn"), [], "no JSON-RPC method of it is left");
  const info = (await call(h, "info", { module: "r18-churn" })) as Record<string, any>;
  t.log(`info: ${JSON.stringify(info).slice(0, 400)}`);
  t.is(h.status("r18-churn")?.state, "running", "it runs");
  watch.sample();
  // Before: each tree created and dropped kept its sublevels attached to the store's root, ~9 KB
  // of the host's heap each until the module stopped (10,000: +89 MB).
  t.true(watch.tally.heapMb < 32, `the host's heap grew ${watch.tally.heapMb.toFixed(1)} MB at most during the churn`);
  watch.assertCanary(t);
  await watch.finish(t, 1);
});
