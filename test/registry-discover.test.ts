// ModuleDiscovered: the host's look at its registry ([registry] discover_minutes), over real
// HTTP on 127.0.0.1 with a real signed index: modules not installed and newer versions are
// announced once each, an unsigned or unreachable registry announces nothing and is reported
// once, and the setting is refused without a registry.

import test from "ava";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { defaultConfig, loadConfig } from "../host/config.ts";
import { buildRegistry } from "../host/registry/build.ts";
import { RegistryDiscovery } from "../host/registry/discover.ts";
import { serveRegistry } from "../host/registry/serve.ts";
import type { HostEvents } from "../capabilities/event-types.ts";
import { startHost, tempDir } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";
import { newKey, signWith, writeTsModule } from "./helpers/signing.ts";

test("the registry's new modules and newer versions are announced once each; an unsigned index announces nothing", async (t) => {
  const dir = await tempDir(t, "modhost-discover-");
  const reg = path.join(dir, "registry");
  await mkdir(reg, { recursive: true });
  const server = await serveRegistry(reg);
  t.teardown(() => server.close());
  const alice = newKey("alice");
  const registryKey = newKey("registry");
  const publish = async (name: string, version: string) => {
    const d = await writeTsModule(path.join(dir, "src", `${name}-${version}`), { name, version });
    await signWith(d, [alice]);
    await buildRegistry({ sources: [d], out: reg, keys: [registryKey] });
  };
  await publish("price-feed", "1.0.0");
  await publish("price-feed", "1.2.0");
  await publish("price-feed", "2.0.0-rc.1"); // a pre-release is not announced
  await publish("fee-oracle", "0.3.0");
  await publish("block-stats", "0.1.0"); // installed in this version: nothing new

  const config = defaultConfig(dir);
  config.registry.url = server.url;
  config.registry.keys = [registryKey.publicKey];
  config.registry.discover_minutes = 60;
  const installed = new Map([["price-feed", "1.0.0"], ["block-stats", "0.1.0"]]);
  const told = new Map<string, string>();
  let saves = 0;
  const seen: HostEvents["ModuleDiscovered"][] = [];
  const warnings: string[] = [];
  const discovery = new RegistryDiscovery({
    config: () => config,
    installed: async () => installed,
    announced: async () => ({ all: () => [...told], set: (n, v) => void told.set(n, v), save: async () => void saves++ }),
    publish: (p) => seen.push(p),
    log: { info: () => {}, warn: (m) => warnings.push(m) },
  });

  await discovery.look();
  t.deepEqual(seen, [
    { module: "fee-oracle", version: "0.3.0", source: server.url },
    { module: "price-feed", version: "1.2.0", source: server.url },
  ]);
  t.is(saves, 1);

  // Looked at again: nothing new, nothing announced twice.
  await discovery.look();
  t.is(seen.length, 2);

  // A newer version is announced, once.
  await publish("price-feed", "1.3.0");
  await discovery.look();
  await discovery.look();
  t.deepEqual(seen.slice(2), [{ module: "price-feed", version: "1.3.0", source: server.url }]);

  // An index signed by a key the operator did not pin announces nothing; the problem is said once.
  config.registry.keys = [newKey("someone-else").publicKey];
  config.registry.state_file = path.join(dir, "other-state.json");
  await publish("brand-new", "1.0.0");
  await discovery.look();
  await discovery.look();
  t.is(seen.length, 3);
  t.is(warnings.length, 1, warnings.join("\n"));
  t.regex(warnings[0]!, /registry not checked for new modules/);
  t.is(warnings.filter((w) => /brand-new/.test(w)).length, 0);
  discovery.stop();
  // Stopped: a look announces nothing more.
  config.registry.keys = [registryKey.publicKey];
  await publish("after-stop", "1.0.0");
  await discovery.look();
  t.false(seen.some((e) => e.module === "after-stop"));
});

test("[registry] discover_minutes without a registry is refused with the fix", async (t) => {
  const dir = await tempDir(t, "modhost-discover-");
  const file = path.join(dir, "modhost.toml");
  await writeFile(file, "[registry]\ndiscover_minutes = 30\n");
  const err = await t.throwsAsync(loadConfig(file));
  t.regex(err!.message, /discover_minutes needs a registry/);
  t.regex(err!.message, /set \[registry\] url and keys/);
});

test("a running host with discover_minutes tells its modules what the registry offers", async (t) => {
  const dir = await tempDir(t, "modhost-discover-");
  const reg = path.join(dir, "registry");
  await mkdir(reg, { recursive: true });
  const server = await serveRegistry(reg);
  t.teardown(() => server.close());
  const registryKey = newKey("registry");
  const d = await writeTsModule(path.join(dir, "src", "price-feed"), { name: "price-feed", version: "1.4.0" });
  await signWith(d, [newKey("alice")]);
  await buildRegistry({ sources: [d], out: reg, keys: [registryKey] });
  const listener = inlineModule("listener", ["subscribe_events=ModuleDiscovered"], `
    await ctx.events.subscribe("ModuleDiscovered", (ev: any) => ctx.log.info("discovered", ev.payload));
  `);
  const h = await startHost(t, {
    inline: { listener }, grantRequested: true,
    configure: (c) => {
      c.registry.url = server.url;
      c.registry.keys = [registryKey.publicKey];
      c.registry.discover_minutes = 60;
    },
  });
  // The look runs in a worker thread, which compiles its sources with tsx when the host runs
  // from them (as here): 2.5-3.7 s at load 20 before it fetches anything.
  const seen = await h.waitForLog(/^discovered$/, { source: "listener", timeoutMs: 60_000 });
  t.deepEqual(seen.fields, { module: "price-feed", version: "1.4.0", source: server.url });
});
