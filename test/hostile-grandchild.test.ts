// A native module that leaves a grandchild holding its channel (fd 3) and exits (issue #8): the
// grandchild, detached in its own session, writes log frames on the channel every 200 ms, as if
// it were the module. Checks, under the real host and sandbox: the module's exit is seen as a
// crash at once (the host does not wait for the channel to close), nothing the grandchild
// writes reaches the host's log, the module restarts (each instance leaving another), the
// canary stores every block within 5 s and RPC answers within 5 s.

import { fileURLToPath } from "node:url";
import test from "ava";
import { buildModulesDir, sleep, startHost, tempDir, GOOD_GRANTS } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { canaryRound } from "./helpers/canary.ts";

const PROBE = fileURLToPath(new URL("./fixtures/hostile-grandchild/main.ts", import.meta.url));

test("a native module exiting while a detached grandchild keeps its channel open and writes on it: the exit is a crash at once, the grandchild is never heard, the module restarts, the canary gets every block, RPC answers", async (t) => {
  t.timeout(180_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  await writeNodeNative(modulesDir, "grandchild", PROBE);
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, grandchild: [] },
    moduleLimits: { grandchild: { max_restarts: 3, restart_window_ms: 600_000, quarantine_after: 0 } },
  });
  await h.waitForState("good", "running", 30_000);
  await h.waitForLog(/^started a grandchild holding the channel/, { source: "grandchild", timeoutMs: 30_000 });
  const crashes = () => h.records.filter((r) => r.source === "host" && /^grandchild crashed: /.test(r.message));
  await h.waitFor(() => crashes().length >= 2, 60_000, "grandchild to crash twice");
  t.log(crashes().map((r) => r.message.slice(0, 200)).join("\n"));
  let late = 0;
  let unanswered = 0;
  for (let i = 0; i < 4; i++) {
    const { stored, answered } = await canaryRound(h);
    if (!stored) late++;
    if (!answered) unanswered++;
    await sleep(500);
  }
  t.is(late, 0, "the canary stored every block within 5 s");
  t.is(unanswered, 0, "the host answered every RPC call within 5 s");
  t.is(h.records.filter((r) => /grandchild still here/.test(r.message)).length, 0, "nothing the grandchild wrote reached the host");
  t.true((h.status("grandchild")?.restarts ?? 0) >= 1, "the module was restarted after its exit");
});
