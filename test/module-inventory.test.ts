// What the host announces about modules_dir and the configuration, seen by a real module under
// the real host: ModuleInstalled / ModuleUpdated / ModuleRemoved when a running host is asked to
// load, reload or unload (as `modhost install`, `update` and `remove` ask it) and, for changes
// made while no host ran, at the next start; ConfigLoaded once at subscription with the
// module's own configuration as config_json, and never another module's.

import test from "ava";
import { readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { startHost, writeModule } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";

const watcher = inlineModule("watcher", ["subscribe_events=ModuleInstalled,ModuleUpdated,ModuleRemoved,ConfigLoaded"], `
  for (const type of ["ModuleInstalled", "ModuleUpdated", "ModuleRemoved", "ConfigLoaded"]) {
    await ctx.events.subscribe(type, (ev: any) => ctx.log.info("event " + type, ev.payload));
  }
`);
const other = (version: string) => ({ ...inlineModule("other", [], `ctx.log.info("up");`), toml: inlineModule("other", [], "").toml.replace(`version = "0.1.0"`, `version = "${version}"`) });

test("modules installed, updated and removed are announced to a running host's modules, and changes made while it was down at its next start", async (t) => {
  const h = await startHost(t, { inline: { watcher }, grantRequested: true, moduleConfigs: { watcher: { secret_word: "mine" } } });
  await h.waitForState("watcher", "running");
  const modulesDir = h.config.modules.modules_dir;

  // The first start has nothing to compare with: it announces nothing.
  t.is(h.logsOf("watcher").filter((r) => r.message === "event ModuleInstalled").length, 0);

  await writeModule(modulesDir, "other", other("1.0.0"));
  await h.host.manager.load("other");
  const installed = await h.waitForLog(/^event ModuleInstalled$/, { source: "watcher" });
  t.deepEqual(installed.fields, { module: "other", version: "1.0.0" });

  await writeFile(path.join(modulesDir, "other", "module.toml"), other("1.1.0").toml);
  await h.host.manager.reload("other");
  const updated = await h.waitForLog(/^event ModuleUpdated$/, { source: "watcher" });
  t.deepEqual(updated.fields, { module: "other", old_version: "1.0.0", new_version: "1.1.0" });

  // An unload without a change in modules_dir is not a removal.
  const mark = h.mark();
  await h.host.manager.unload("other");
  await h.host.manager.load("other");
  await h.waitForState("other", "running");
  await new Promise((r) => setTimeout(r, 300));
  t.is(h.logsOf("watcher", mark).filter((r) => /^event Module(Removed|Installed|Updated)$/.test(r.message)).length, 0);

  await rm(path.join(modulesDir, "other"), { recursive: true });
  await h.host.manager.unload("other");
  const removed = await h.waitForLog(/^event ModuleRemoved$/, { source: "watcher" });
  t.deepEqual(removed.fields, { module: "other", version: "1.1.0" });

  // The inventory outlives the host: a module added while no host runs is announced at start.
  await h.stop();
  await writeModule(modulesDir, "other", other("2.0.0"));
  const again = await startHost(t, { dir: h.dir, inline: { watcher }, grantRequested: true });
  const late = await again.waitForLog(/^event ModuleInstalled$/, { source: "watcher" });
  t.deepEqual(late.fields, { module: "other", version: "2.0.0" });
  const state = JSON.parse(await readFile(path.join(again.config.modules.data_dir, ".modhost-lifecycle.json"), "utf8")) as { installed: Record<string, string> };
  t.deepEqual(state.installed, { other: "2.0.0", watcher: "0.1.0" });
});

test("ConfigLoaded reaches a module when it subscribes and at each reload, with its own configuration as config_json and no one else's", async (t) => {
  const spy = inlineModule("spy", ["subscribe_events=ConfigLoaded"], `
    await ctx.events.subscribe("ConfigLoaded", (ev: any) => ctx.log.info("config loaded", ev.payload));
  `);
  const h = await startHost(t, {
    inline: { watcher, spy }, grantRequested: true, noStart: true,
    moduleConfigs: { watcher: { secret_word: "mine" }, spy: { colour: "blue" } },
  });
  const file = path.join(h.dir, "modhost.toml");
  const grants = `[modules.grants.watcher]\nallow = ["subscribe_events=ModuleInstalled,ModuleUpdated,ModuleRemoved,ConfigLoaded"]\n\n[modules.grants.spy]\nallow = ["subscribe_events=ConfigLoaded"]\n\n`;
  const toml = (colour: string) => `${grants}[modules.module_configs.watcher]\nsecret_word = "mine"\n\n[modules.module_configs.spy]\ncolour = "${colour}"\n`;
  await writeFile(file, toml("blue"));
  h.config.file = file;
  await h.host.start();

  const first = await h.waitForLog(/^config loaded$/, { source: "spy" });
  const f = first.fields as { changed_sections: string[]; config_json: string };
  t.deepEqual(JSON.parse(f.config_json), { colour: "blue" });
  t.true(f.changed_sections.includes("modules"), JSON.stringify(f.changed_sections));
  const w = await h.waitForLog(/^event ConfigLoaded$/, { source: "watcher" });
  t.deepEqual(JSON.parse((w.fields as { config_json: string }).config_json), { secret_word: "mine" });

  await h.host.reloadConfig(); // align the harness's config with the file
  const mark = h.mark();
  await writeFile(file, toml("green"));
  await h.host.reloadConfig();
  const next = await h.waitFor(() => h.logsOf("spy", mark).find((r) => r.message === "config loaded" && JSON.parse((r.fields as { config_json: string }).config_json).colour === "green"), 10_000, "spy's ConfigLoaded with the new colour");
  t.deepEqual((next.fields as { changed_sections: string[] }).changed_sections, ["modules.module_configs.spy"]);
  // The watcher hears of the reload too, with its own configuration, not the spy's.
  const wNext = await h.waitFor(() => h.logsOf("watcher", mark).find((r) => r.message === "event ConfigLoaded"), 10_000, "watcher's ConfigLoaded");
  t.deepEqual(JSON.parse((wNext.fields as { config_json: string }).config_json), { secret_word: "mine" });
  t.false(JSON.stringify(h.logsOf("watcher")).includes("green"));
});
