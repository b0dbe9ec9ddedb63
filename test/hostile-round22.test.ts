// Hostile probes of round 22 (issue #8), under the real host and sandbox, next to the canary
// ("good", which stores every block):
//   flood     native modules (test/fixtures/hostile-round22-probes/flood.ts) that flood their
//             channel with small requests, 1 MiB of frames per write, as fast as the socket
//             takes them: one that never sends its ready (the host waits for it, and reads past
//             its waiting requests until start_timeout_ms), the same not reading what the host
//             sends, and one that is running. The host reads past waiting requests while it
//             waits for a module (its ready, an invocation's answer); what it reads then must
//             still be held to the module's share of the host's CPU.
// While they run: the canary stores every block within 5 s, RPC answers within 5 s, no turn of
// the host's loop takes 250 ms of its CPU, its heap, log and descriptors stay within bounds.
// The tests watch this process's loop, so they run one at a time.

import test from "ava";
import { fileURLToPath } from "node:url";
import { buildModulesDir, GOOD_GRANTS, sleep, startHost, tempDir } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { watchHost } from "./helpers/host-watch.ts";
import { DEFAULT_LIMITS } from "../host/config.ts";

const FLOOD = fileURLToPath(new URL("./fixtures/hostile-round22-probes/flood.ts", import.meta.url));

test.serial("native modules flooding their channel with small requests (never ready and not reading, never ready and reading, running): each is held to its share of the host's CPU; the canary stores every block and RPC answers", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const probes = { "r22-unready-deaf": { ready: false, read: false }, "r22-unready": { ready: false, read: true }, "r22-running": { ready: true, read: true } };
  const modulesDir = await buildModulesDir(dir, ["good"]);
  for (const name of Object.keys(probes)) await writeNodeNative(modulesDir, name, FLOOD, []);
  const hostStarted = Date.now();
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS },
    moduleLimits: Object.fromEntries(Object.keys(probes).map((n) => [n, { start_timeout_ms: 30_000, restart: "never" }])),
    moduleConfigs: probes,
  });
  await h.waitForState("good", "running", 60_000);
  const watch = watchHost(t, h);
  const canary = watch.canaryLoop(500, 4);
  const started = Date.now();
  while (Date.now() - started < 25_000) {
    await sleep(1000);
    watch.sample();
  }
  const share = DEFAULT_LIMITS.host_cpu_ms_per_s;
  for (const name of Object.keys(probes)) {
    const s = h.status(name);
    const session = h.manager.processOf(name)?.session;
    t.truthy(session, `${name} had a session`);
    if (!session) continue;
    const { cpuMs, peakUnread } = session.flowStats;
    // From its first words (it floods from then) to its end, or to now.
    const from = h.records.find((r) => r.source === name && r.message === "flooding")?.time ?? hostStarted;
    const ended = h.records.find((r) => r.source === "host" && r.message.startsWith(`failed to load ${name}:`))?.time ?? Date.now();
    const seconds = (ended - from) / 1000;
    t.log(`${name}: ${s?.state} ${s?.problem?.slice(0, 100) ?? ""}; host CPU ${cpuMs.toFixed(0)} ms in its ${seconds.toFixed(1)} s (share ${share} ms/s); ${session.stats.requests} requests, ${session.stats.errors} refused or denied; peak unread ${peakUnread} bytes (bound ${session.unreadBound})`);
    // Its share for as long as it sent, plus the bucket's burst (one share), with a quarter
    // more for the chunk read past each pause and answers encoded while reading waits.
    t.true(cpuMs <= share * (1.25 * seconds + 1), `${name}: ${cpuMs.toFixed(0)} ms of host CPU in ${seconds.toFixed(1)} s, within ${share} ms/s`);
    t.true(peakUnread <= session.unreadBound, `${name}: at most ${peakUnread} bytes waited for it, within its bound of ${session.unreadBound}`);
  }
  t.is(h.status("r22-running")?.state, "running", "the running flood is throttled, not ended");
  await canary.stop();
  watch.assertCanary(t);
  await watch.finish(t, 3);
});
