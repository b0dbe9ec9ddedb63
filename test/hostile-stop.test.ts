// Native modules that leave their channel in states the host must get out of (issue #8), under
// the real host and sandbox, next to the canary ("good", which stores every block):
//   sigstop    subscribed to every block, 64 requests sent, then stopped itself (SIGSTOP)
//   halfclose  subscribed, then shut its socket down for writing (the host reads end-of-file)
//              while it keeps reading and running
//   trickle    valid log frames one byte a millisecond, for ever
// The first two must be ended by the host (health check, channel's end), started again, and in
// the end quarantined for failing at every start, with every process they had gone; the
// trickler's frames are valid and it runs on; the canary stores every block within 5 s and RPC answers within 5 s.

import test from "ava";
import { fileURLToPath } from "node:url";
import { buildModulesDir, sleep, startHost, tempDir, GOOD_GRANTS, waitFor } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { canaryRound } from "./helpers/canary.ts";
import { alive } from "./helpers/procs.ts";

const PROBE = fileURLToPath(new URL("./fixtures/hostile-stop/main.ts", import.meta.url));
const CAPS = ["subscribe_events", "read_chain_state"];

test.serial("a native module that stops itself (SIGSTOP) with requests in flight, one that half-closes its socket, one that trickles frames a byte at a time: the first two are ended, restarted and finally quarantined with no process left, the trickler runs on, the canary keeps up", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  const modes = ["sigstop", "halfclose", "trickle"];
  for (const m of modes) await writeNodeNative(modulesDir, `s-${m}`, PROBE, CAPS);
  const quick = { health_interval_ms: 1000, health_timeout_ms: 3000, restart: "always" as const, max_restarts: 50 };
  // The trickler answers health checks through its trickle (~30 ms an answer, far more on a loaded machine): generous.
  const patient = { ...quick, health_timeout_ms: 30_000 };
  const h = await startHost(t, {
    dir,
    modules: ["good"],
    grants: { good: GOOD_GRANTS, ...Object.fromEntries(modes.map((m) => [`s-${m}`, CAPS])) },
    moduleLimits: Object.fromEntries(modes.map((m) => [`s-${m}`, m === "trickle" ? patient : quick])),
    moduleConfigs: Object.fromEntries(modes.map((m) => [`s-${m}`, { mode: m }])),
  });
  const firstPid: Record<string, number> = {};
  for (const m of modes) {
    await h.waitForLog(new RegExp(`^probe ${m} up`), { source: `s-${m}`, timeoutMs: 60_000 });
    // The first two may already be on their way out (no pid then): their pids are gathered as they come.
    const pid = h.status(`s-${m}`)?.pid;
    if (pid !== undefined) firstPid[m] = pid;
  }
  let late = 0;
  let unanswered = 0;
  const restarted = new Set<string>();
  const seen: Record<string, Set<number>> = { sigstop: new Set(), halfclose: new Set() };
  for (const m of ["sigstop", "halfclose"]) if (firstPid[m] !== undefined) seen[m]!.add(firstPid[m]!);
  await waitFor(async () => {
    const r = await canaryRound(h);
    if (!r.stored) late++;
    if (!r.answered) unanswered++;
    for (const m of ["sigstop", "halfclose"]) {
      const st = h.status(`s-${m}`);
      if (st?.pid !== undefined) seen[m]!.add(st.pid);
      if ((st?.restarts ?? 0) >= 1) restarted.add(m);
    }
    return restarted.size === 2;
  }, 120_000, () => `sigstop and halfclose restarted: ${h.records.filter((r) => r.source === "host" && /s-halfclose/.test(r.message)).map((r) => r.message.slice(0, 200)).join("\n")}; restarted (${[...restarted].join(", ")})`, () => h.tail(40));
  // The trickler runs on (its frames are valid): it is not ended, and it costs the canary nothing.
  for (let i = 0; i < 4; i++) {
    const r = await canaryRound(h);
    if (!r.stored) late++;
    if (!r.answered) unanswered++;
    await sleep(250);
  }
  // Each attacks again at every start, so it ends quarantined (quarantine_after) or restarting:
  // every process it had is gone, and the host still runs the others.
  for (const m of ["sigstop", "halfclose"]) {
    await h.waitForState(`s-${m}`, "quarantined", 120_000);
    // Every process it was started in, as the host's "loaded" lines name them.
    for (const r of h.records) if (r.source === "host" && r.message.startsWith(`loaded s-${m} `) && typeof r.fields?.pid === "number") seen[m]!.add(r.fields.pid);
    t.true(seen[m]!.size >= 2, `s-${m} was started at least twice (${[...seen[m]!].join(", ")})`);
    for (const pid of seen[m]!) await waitFor(() => !alive(pid), 30_000, `s-${m}'s process ${pid} to be gone`);
  }
  t.is(h.status("s-trickle")!.state, "running");
  t.is(h.status("s-trickle")!.restarts, 0, "the trickler was never ended");
  const trickled = h.records.filter((r) => r.source === "s-trickle" && r.message === "trickled").length;
  t.log(Object.fromEntries(modes.map((m) => [m, { restarts: h.status(`s-${m}`)?.restarts, state: h.status(`s-${m}`)?.state, problem: h.status(`s-${m}`)?.problem }])), `trickled ${trickled}`);
  t.is(late, 0, "the canary stored every block within 5 s");
  t.is(unanswered, 0, "the host answered RPC within 5 s");
});
