// What a module's requests hold in the host while they are served (issue #8), under the real
// host and sandbox, next to the canary ("good", which stores every block). A native module
// ("relay") keeps 64 call_module requests in flight, each with 15 MiB of binary params and the
// longest timeout (60 s), to a module ("sink") that reads every call and never answers. Each
// request's params stay in the host until the callee answers; before, max_requests_in_flight
// (64) was the only bound, and the host held ~1 GB for a minute (RSS +1,083 MB after 16 s, and
// still growing). Now max_request_bytes_in_flight (32 MiB) bounds them: a large request waits
// (its socket is not read) while it does not fit beside those being served. While the attack
// runs, the canary stores every block within 5 s, the host answers RPC within 5 s, its RSS
// stays within 400 MB of where it was, and both probes restart.

import test from "ava";
import { fileURLToPath } from "node:url";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { buildModulesDir, sleep, startHost, tempDir, GOOD_GRANTS } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { canaryRound } from "./helpers/canary.ts";

const PROBE = fileURLToPath(new URL("./fixtures/hostile-relay/main.ts", import.meta.url));
const MB = 1024 * 1024;

test("a native module keeping 64 call_module requests of 15 MiB params in flight to a module that never answers: the host holds at most max_request_bytes_in_flight of them (RSS within 400 MB), the canary gets every block, RPC answers, both probes restart", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  await writeNodeNative(modulesDir, "relay", PROBE, ["call_module"]);
  await writeNodeNative(modulesDir, "sink", PROBE, ["register_module_api"]);
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, relay: ["call_module"], sink: ["register_module_api"] },
    moduleConfigs: { relay: { target: "sink", in_flight: 64, param_bytes: 15 * MB } },
  });
  for (const name of ["good", "sink", "relay"]) await h.waitForState(name, "running", 60_000);
  await h.waitForLog(/^flooding$/, { source: "relay", timeoutMs: 60_000 });

  const rss0 = process.memoryUsage().rss;
  let peak = 0;
  const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss - rss0); }, 50);
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  let late = 0;
  let unanswered = 0;
  // ~15-30 s of attack: 64 calls of 15 MiB were in flight within a few seconds before.
  for (let i = 0; i < 8; i++) {
    const { stored, answered } = await canaryRound(h);
    if (!stored) late++;
    if (!answered) unanswered++;
    await sleep(1500);
  }
  clearInterval(sampler);
  delay.disable();
  t.log(`host RSS at most +${(peak / MB).toFixed(0)} MB; longest loop stall ${(delay.max / 1e6).toFixed(0)} ms (p99 ${(delay.percentile(99) / 1e6).toFixed(0)} ms)`);
  t.is(late, 0, "the canary stored every block within 5 s");
  t.is(unanswered, 0, "the host answered every RPC call within 5 s");
  t.true(peak < 400 * MB, `host RSS grew ${(peak / MB).toFixed(0)} MB while 64 calls of 15 MiB were asked for (max_request_bytes_in_flight is 32 MiB)`);
  t.true(h.lines.some((l) => l.includes("[relay] throttled: its requests wait for max_request_bytes_in_flight")), "the operator is told which limit holds the module back");

  const restart = h.mark();
  for (const name of ["relay", "sink"]) {
    await h.manager.reload(name);
    await h.waitForState(name, "running", 60_000);
  }
  await h.waitForLog(/^flooding$/, { source: "relay", since: restart, timeoutMs: 60_000 });
});
