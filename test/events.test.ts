// The event bus seen from modules: flooding is bounded, hot reconfiguration re-delivers a
// module's configuration and publishes ConfigLoaded, withdrawn grants apply at once, and
// NodeShutdown's timeout is honoured.

import test from "ava";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { startHost } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";
import { PUBLISH_RATE } from "../capabilities/events.ts";

test("a module flooding the bus is throttled; subscribers and the host keep working", async (t) => {
  // The flood starts on the first block, once the listener is surely subscribed.
  const flooder = inlineModule("flooder", ["publish_events", "subscribe_events"], `
    let started = false;
    await ctx.events.subscribe("NewBlock", async () => {
      if (started) return;
      started = true;
      let ok = 0, throttled = 0, other = "";
      // 256 publishes in flight at a time, to go faster than the rate refills (one at a time, a
      // slow machine published about as fast as the rate and was never throttled; 32 at a time,
      // one at load ~27 was not either).
      const floodStart = Date.now();
      for (let i = 0; i < 20000; i += 256) {
        await Promise.all(Array.from({ length: Math.min(256, 20000 - i) }, (_, k) => ctx.events.publish("tick", { i: i + k }).then(
          () => { ok++; },
          (e: any) => { if (e.code === "quota_exceeded") throttled++; else other = e.code; },
        )));
      }
      ctx.log.info("flood done", { ok, throttled, other, ms: Date.now() - floodStart });
    });
  `);
  const listener = inlineModule("listener", ["subscribe_events", "read_chain_state"], `
    let got = 0, missed = 0;
    await ctx.events.subscribe("flooder:tick", (ev: any) => { got++; missed += ev.missed; });
    await ctx.events.subscribe("NewBlock", async (ev: any) => {
      missed += ev.missed; // drops just before this block are announced on it
      ctx.log.info("block seen", { height: ev.payload.height, got, missed, tip: await ctx.chain.getBlockHeight() });
    });
  `);
  // The flooder's host-wide share (requests_per_second, host_cpu_ms_per_s: test/fairshare.test.ts)
  // is opened up here, so that what this test sees is the publish rate alone.
  const h = await startHost(t, {
    inline: { listener, flooder }, grantRequested: true, limits: { event_queue: 64 },
    moduleLimits: { flooder: { requests_per_second: 100_000, host_cpu_ms_per_s: 1000 } },
  });
  await h.waitForState("listener", "running");
  await h.waitForState("flooder", "running");
  await h.mine(1);
  const done = await h.waitForLog(/^flood done$/, { source: "flooder", timeoutMs: 60_000 });
  const { ok, throttled, other, ms } = done.fields as { ok: number; throttled: number; other: string; ms: number };
  t.is(other, "", "no error other than quota_exceeded");
  t.is(ok + throttled, 20000, "every publish was answered");
  // A burst of twice the rate plus what refilled while the flood ran (its own clock spans the
  // host's): 20,000 in ~1-3 s on a quiet machine, throttled to ~4,000-5,000. A machine so loaded
  // that the module could not publish faster than that is not throttled, and keeps the bound.
  const bound = 2 * PUBLISH_RATE + (PUBLISH_RATE * ms) / 1000 + 2;
  t.log(throttled > 0 ? `throttled: ${ok} published, ${throttled} refused in ${ms} ms (bound ${bound.toFixed(0)})` : `not throttled: the module published its ${ok} in ${ms} ms (bound ${bound.toFixed(0)})`);
  t.true(ok <= bound, `published ${ok} in ${ms} ms: at most a burst of ${2 * PUBLISH_RATE} and ${PUBLISH_RATE} a second`);
  if (bound < 20000) t.true(throttled > 0, "publishing faster than the rate was throttled");
  t.true(ok >= PUBLISH_RATE, `at least a full burst got through (${ok})`);
  // The listener still reacts to node events, and nothing it was owed was dropped silently.
  const mark = h.mark();
  const height = await h.mine(1);
  const seen = await h.waitForLog(/^block seen$/, { source: "listener", since: mark, timeoutMs: 20_000 });
  const f = seen.fields as { height: number; got: number; missed: number; tip: number };
  t.is(f.height, height);
  // Its queue is first in, first out: by the time the block after the flood reaches it, every
  // tick was either delivered or counted as missed.
  t.is(f.got + f.missed, ok, "every published tick was delivered or counted as missed");
  t.true(f.got > 0);
});

test("config changes reach the module live; ConfigLoaded lists the sections", async (t) => {
  const mod = inlineModule("tuned", ["subscribe_events"], `
    ctx.log.info("level at start", { level: ctx.config.level });
    await ctx.events.subscribe("ConfigLoaded", (ev: any) => {
      ctx.log.info("config now", { level: ctx.config.level, changed: ev.payload.changed_sections });
    });
  `);
  const h = await startHost(t, { inline: { tuned: mod }, grantRequested: true, moduleConfigs: { tuned: { level: 1 } }, noStart: true });
  const file = path.join(h.dir, "modhost.toml");
  const toml = (level: number) => `[modules.grants.tuned]\nallow = ["subscribe_events"]\n\n[modules.module_configs.tuned]\nlevel = ${level}\n`;
  await writeFile(file, toml(1));
  h.config.file = file;
  await h.host.start();
  const first = await h.waitForLog(/^level at start$/, { source: "tuned" });
  t.is((first.fields as { level: number }).level, 1);

  // The harness config differs from the file in paths and limits; reload once to align.
  await h.host.reloadConfig();
  const mark = h.mark();
  await writeFile(file, toml(7));
  const changed = await h.host.reloadConfig();
  t.deepEqual(changed.filter((c) => c.startsWith("modules.module_configs")), ["modules.module_configs.tuned"]);
  const now = await h.waitFor(() => h.logsOf("tuned", mark).find((r) => r.message === "config now" && (r.fields as { changed: string[] }).changed.includes("modules.module_configs.tuned")), 10_000, "the module to see the new config");
  t.is((now.fields as { level: number }).level, 7);
  t.true((now.fields as { changed: string[] }).changed.includes("modules.module_configs.tuned"));
});

test("overlapping reloads run one at a time; each caller hears the change, the module gets it once", async (t) => {
  const mod = inlineModule("tuned2", [], `ctx.log.info("up");`);
  const h = await startHost(t, { inline: { tuned2: mod }, moduleConfigs: { tuned2: { level: 1 } }, noStart: true });
  const file = path.join(h.dir, "modhost.toml");
  const toml = (level: number) => `[modules.module_configs.tuned2]\nlevel = ${level}\n`;
  await writeFile(file, toml(1));
  h.config.file = file;
  await h.host.start();
  await h.host.reloadConfig();
  const mark = h.mark();
  await writeFile(file, toml(9));
  // The file watcher, SIGHUP and an operator's call can all land at once.
  const [a, b, c] = await Promise.all([h.host.reloadConfig(), h.host.reloadConfig(), h.host.reloadConfig()]);
  for (const changed of [a, b, c]) t.true(changed.includes("modules.module_configs.tuned2"), JSON.stringify(changed));
  await new Promise((r) => setTimeout(r, 500)); // the watcher's own (debounced) reload, too
  const updates = h.logsOf("host", mark).filter((r) => r.message === "tuned2: configuration updated");
  t.is(updates.length, 1, "the module was given the new configuration once");
});

test("a broken config file on reload is reported and the running configuration kept", async (t) => {
  const mod = inlineModule("steady", [], `ctx.log.info("up");`);
  const h = await startHost(t, { inline: { steady: mod }, noStart: true });
  const file = path.join(h.dir, "modhost.toml");
  await writeFile(file, "");
  h.config.file = file;
  await h.host.start();
  await writeFile(file, "[modules\nbroken = ");
  const changed = await h.host.reloadConfig();
  t.deepEqual(changed, []);
  await h.waitForLog(/configuration not reloaded, keeping the running one/, { source: "host" });
  t.is(h.mustStatus("steady").state, "running");
});

test("withdrawn grants apply from the next request; a module they refuse is unloaded", async (t) => {
  const mod = inlineModule("reader", ["read_chain_state", "subscribe_events"], `
    await ctx.events.subscribe("NewBlock", async () => {
      try { ctx.log.info("height", { h: await ctx.chain.getBlockHeight() }); }
      catch (e: any) { ctx.log.info("refused", { code: e.code }); }
    });
  `);
  const h = await startHost(t, { inline: { reader: mod }, noStart: true, onMissingGrant: "reduce" });
  const file = path.join(h.dir, "modhost.toml");
  const both = `[modules]\non_missing_grant = "reduce"\n\n[modules.grants.reader]\nallow = ["read_chain_state", "subscribe_events"]\n`;
  await writeFile(file, both);
  h.config.file = file;
  h.config.modules.grants.reader = { allow: [{ permission: "read_chain_state", scope: "all" }, { permission: "subscribe_events", scope: "all" }], deny: [] };
  await h.host.start();
  await h.host.reloadConfig();
  let mark = h.mark();
  await h.mine(1);
  await h.waitForLog(/^height$/, { source: "reader", since: mark });

  // Withdraw read_chain_state: with "reduce" the module stays, and its next call is refused.
  await writeFile(file, both.replace(`"read_chain_state", `, ""));
  await h.host.reloadConfig();
  mark = h.mark();
  await h.mine(1);
  const refused = await h.waitForLog(/^refused$/, { source: "reader", since: mark });
  t.is((refused.fields as { code: string }).code, "permission_denied");

  // With "refuse", a module missing a grant it requests is unloaded.
  await writeFile(file, both.replace(`"read_chain_state", `, "").replace(`on_missing_grant = "reduce"`, `on_missing_grant = "refuse"`));
  await h.host.reloadConfig();
  const s = await h.waitForState("reader", ["stopped", "skipped"]);
  t.regex(s.problem ?? "", /read_chain_state/);
});

test("NodeShutdown is delivered and its timeout honoured before modules are stopped", async (t) => {
  const mod = inlineModule("careful", ["subscribe_events", "read_storage", "write_storage"], `
    await ctx.storage.openTree("t");
    await ctx.events.subscribe("NodeShutdown", async (ev: any) => {
      // 21 storage writes, within the advertised timeout (stop_timeout_ms 10 s: 2 s left a
      // loaded machine, where each write is a round trip through a busy host, little room).
      for (let i = 0; i < 20; i++) await ctx.storage.put("t", "step", i);
      await ctx.storage.put("t", "timeout", ev.payload.timeout_seconds);
      ctx.log.info("shutdown handled", { timeout: ev.payload.timeout_seconds });
    });
  `);
  const h = await startHost(t, { inline: { careful: mod }, grantRequested: true, limits: { stop_timeout_ms: 10_000 } });
  await h.waitForState("careful", "running");
  await h.stop();
  const handled = h.records.find((r) => r.source === "careful" && r.message === "shutdown handled");
  t.truthy(handled, "the module handled NodeShutdown before it was stopped");
  t.is((handled!.fields as { timeout: number }).timeout, 10);
  const iShutdown = h.records.findIndex((r) => r.source === "careful" && r.message === "shutdown handled");
  const iUnload = h.records.findIndex((r) => r.source === "host" && /^unloaded careful/.test(r.message));
  t.true(iShutdown >= 0 && iUnload > iShutdown, "handled before it was unloaded");
});

test("an important module that fails for good stops the host with a non-zero exit code", async (t) => {
  const doomed = inlineModule("doomed", ["subscribe_events"], `
    await ctx.events.subscribe("NewBlock", () => { for (;;) {} });
  `);
  const bystander = inlineModule("bystander", [], `ctx.log.info("up");`);
  const h = await startHost(t, {
    inline: { doomed, bystander },
    grantRequested: true,
    moduleLimits: { doomed: { important: true, restart: "never" } },
  });
  await h.waitForState("doomed", "running");
  t.is(h.host.exitCode, 0);
  await h.mine(1);
  await h.waitForEvent("ModuleCrashed", (p) => p.module === "doomed", { timeoutMs: 20_000 });
  await Promise.race([h.host.stopped, new Promise((_, reject) => setTimeout(() => reject(new Error("the host did not stop")), 20_000))]);
  t.is(h.host.exitCode, 1);
  t.truthy(h.records.find((r) => r.source === "host" && /doomed is marked important and is not coming back/.test(r.message)));
  t.truthy(h.records.find((r) => r.source === "host" && /^unloaded bystander/.test(r.message)), "the other modules were stopped in order");
});
