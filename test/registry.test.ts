// The registry, end to end over real HTTP on 127.0.0.1 (the `modhost registry serve` code),
// with real keys, real signed modules and real files: install, update, remove, and every way
// a registry or the path to it can lie. After every refusal nothing is half-installed.

import test from "ava";
import type { ExecutionContext } from "ava";
import { execa } from "execa";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { defaultConfig, type HostConfig } from "../host/config.ts";
import { parseDescriptor } from "../capabilities/grants.ts";
import { loadManifest } from "../host/manifest.ts";
import { buildRegistry } from "../host/registry/build.ts";
import { fetchIndex } from "../host/registry/client.ts";
import { blobPath, parseIndex, signIndex } from "../host/registry/format.ts";
import { activatePending, install, remove, search, update } from "../host/registry/install.ts";
import { Progress } from "../host/registry/progress.ts";
import { parseSpec, resolve } from "../host/registry/resolve.ts";
import { MAX_REGISTRY_CONNECTIONS, serveRegistry, type RegistryServer } from "../host/registry/serve.ts";
import net from "node:net";
import { keyFileText, type SecretKey } from "../host/verify/keys.ts";
import { sha256Hex } from "../host/verify/hash.ts";
import { ROOT, startHost, tempDir } from "./helpers/host.ts";
import { newKey, signWith, writeTsModule, type TsModuleSpec } from "./helpers/signing.ts";

interface World {
  dir: string;
  src: string;
  reg: string;
  server: RegistryServer;
  requests: string[];
  alice: SecretKey;
  bob: SecretKey;
  registryKey: SecretKey;
  config: HostConfig;
  lines: string[];
  /** Sign with `signers` (default alice) and publish (registry build) the given module versions. */
  publish(specs: TsModuleSpec[], signers?: SecretKey[], extra?: Partial<Parameters<typeof buildRegistry>[0]>): Promise<void>;
  opts: { log: (l: string) => void; progress: { write: () => boolean }; notifyHost: boolean };
}

async function world(t: ExecutionContext, configure?: (c: HostConfig, w: Omit<World, "config" | "publish" | "opts" | "lines">) => void): Promise<World> {
  const dir = await tempDir(t, "modhost-registry-");
  const src = path.join(dir, "src");
  const reg = path.join(dir, "registry");
  await mkdir(reg, { recursive: true });
  const requests: string[] = [];
  const server = await serveRegistry(reg, { onRequest: (m, u, s) => requests.push(`${m} ${u} ${s}`) });
  t.teardown(() => server.close());
  const alice = newKey("alice");
  const bob = newKey("bob");
  const registryKey = newKey("registry");
  const node = path.join(dir, "node");
  await mkdir(path.join(node, "modules"), { recursive: true });
  const config = defaultConfig(node);
  config.modules.modules_dir = path.join(node, "modules");
  config.trust.signatures = "require";
  config.trust.publishers["core"] = { keys: [alice.publicKey, bob.publicKey], threshold: 1 };
  config.trust.publisher = "core";
  config.registry.url = server.url;
  config.registry.keys = [registryKey.publicKey];
  const base = { dir, src, reg, server, requests, alice, bob, registryKey };
  configure?.(config, base);
  const lines: string[] = [];
  const w: World = {
    ...base,
    config,
    lines,
    opts: { log: (l) => lines.push(l), progress: { write: () => true }, notifyHost: false },
    async publish(specs, signers = [alice], extra = {}) {
      const dirs = [];
      for (const s of specs) {
        const d = await writeTsModule(path.join(src, `${s.name}-${s.version ?? "1.0.0"}-${Math.random().toString(36).slice(2, 8)}`), s);
        if (signers.length) await signWith(d, signers);
        dirs.push(d);
      }
      await buildRegistry({ sources: dirs, out: reg, keys: [registryKey], ...extra });
    },
  };
  return w;
}

/** Every path under `dir` (to show nothing changed). */
/** Every path under `dir`, but the lock registry commands hold in modules_dir (host/registry/journal.ts). */
async function listing(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string, rel: string) => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      if (!rel && e.name === ".lock") continue;
      const r = rel ? `${rel}/${e.name}` : e.name;
      out.push(r);
      if (e.isDirectory()) await walk(path.join(d, e.name), r);
    }
  };
  await walk(dir, "");
  return out.sort();
}

/** Change index.json with `mutate` and sign it again with the registry's key (a registry that lies). */
async function resign(w: World, mutate: (index: ReturnType<typeof parseIndex>) => void, key = w.registryKey): Promise<void> {
  const file = path.join(w.reg, "index.json");
  const index = parseIndex(await readFile(file), file);
  mutate(index);
  index.version += 1;
  const bytes = Buffer.from(JSON.stringify(index, null, 2) + "\n");
  await writeFile(path.join(w.reg, "index.sig"), JSON.stringify(signIndex(bytes, [key])));
  await writeFile(file, bytes);
}

const ALPHA: TsModuleSpec = { name: "alpha", version: "1.0.0", description: "the alpha module" };
const BETA: TsModuleSpec = { name: "beta", version: "1.0.0", dependencies: { alpha: "^1.0.0", modhost: ">=0.1.0" } };

// ---------------------------------------------------------------------------------------

test("modhost search prints what a signed index says of a module (its description: terminal escapes, a bidi override, a line of 100,000 characters) escaped and cut, never raw", async (t) => {
  const w = await world(t);
  await w.publish([ALPHA]);
  const evil = "\r\x1b]52;c;ZXZpbA==\x07\x1b[2J\u009b31m\u202eforged\nbeta 9.9.9";
  await resign(w, (index) => {
    index.modules.alpha!.versions["1.0.0"]!.description = evil + "x".repeat(100_000);
  });
  const found = await search(w.config, undefined, w.opts);
  t.is(found.length, 1);
  t.log(w.lines.map((l) => l.slice(0, 200)).join("\n"));
  t.false(w.lines.some((l) => /[\x00-\x1f\x7f-\x9f\u202e]/.test(l)), "no printed line holds a raw control character or bidi override");
  t.true(w.lines.some((l) => l.includes("\\r\\x1b]52;c;ZXZpbA==\\x07\\x1b[2J\\x9b31m\\u202eforged\\nbeta 9.9.9")), "the description is shown, escaped");
  t.true(w.lines.every((l) => l.length < 2100), "each line is cut");
  t.true(w.lines.some((l) => /\.\.\. \(\d+ more characters\)$/.test(l)), "and says how much was cut");
});

test("modhost install and update show a signer's name (ESC, CR, OSC 52, C1 and bidi controls, a newline and 5,000 characters, from the module's signatures) escaped and cut, in what they print and in a refusal's message and hint", async (t) => {
  const evilName = "\r\x1b]52;c;ZXZpbA==\x07\x1b[2J\u009b31m\u202eforged\ninstalled omega 9.9.9" + "n".repeat(5000);
  const evil = newKey(evilName);
  const w = await world(t, (c) => {
    c.trust.publishers["core"]!.keys.push(evil.publicKey);
    c.modules.trust["gamma"] = { publisher: "core" };
  });
  const raw = /[\x00-\x1f\x7f-\x9f\u202e]/;
  const escaped = "\\r\\x1b]52;c;ZXZpbA==\\x07\\x1b[2J\\x9b31m\\u202eforged\\n";
  await w.publish([ALPHA], [evil]);
  const ok = await install(w.config, "alpha", w.opts);
  await w.publish([{ ...ALPHA, version: "1.1.0" }], [evil]);
  await update(w.config, "alpha", w.opts);
  t.log(w.lines.map((l) => l.slice(0, 300)).join("\n"));
  t.false(w.lines.some((l) => raw.test(l)), "no printed line holds a raw control character or bidi override");
  t.true(w.lines.some((l) => l.startsWith("installed alpha 1.0.0") && l.includes(escaped)), "install shows the signer's name, escaped");
  t.true(w.lines.some((l) => l.startsWith("updated alpha 1.0.0 -> 1.1.0") && l.includes(escaped)), "update shows it too");
  t.false(w.lines.some((l) => l.startsWith("installed omega")), "the name's newline starts no line of its own");
  t.true(w.lines.every((l) => !l.includes("n".repeat(100))), "the name is cut");
  t.regex(ok.installed[0]!.verification, /\.\.\. \(\d+ more characters\)/, "and says how much was cut");

  // Signed by the same name with an untrusted key: refused, the name escaped in the message and the hint.
  const mallory = newKey(evilName);
  await w.publish([{ name: "gamma", version: "1.0.0" }], [mallory]);
  const err = await t.throwsAsync(install(w.config, "gamma", w.opts));
  const hint = (err as { hint?: string }).hint ?? "";
  t.log(err!.message.slice(0, 300), "|", hint.slice(0, 300));
  t.false(raw.test(err!.message) || raw.test(hint), "the refusal holds no raw control character or bidi override");
  t.true(err!.message.includes(escaped) && hint.includes(escaped), "its message and hint name the signer, escaped");
});

test("a valid install over HTTP: dependencies first, every file verified, cached, nothing left in staging", async (t) => {
  const w = await world(t);
  await w.publish([ALPHA, BETA]);
  const found = await search(w.config, "alpha", w.opts);
  t.deepEqual(found.map((r) => [r.name, r.latest]), [["alpha", "1.0.0"]]);

  const r = await install(w.config, "beta", w.opts);
  t.deepEqual(r.installed.map((i) => `${i.name}@${i.version}`), ["alpha@1.0.0", "beta@1.0.0"]);
  for (const i of r.installed) t.regex(i.verification, /^verified: sha256:[0-9a-f]{12}… signed by 1 of 1 required trusted keys \(alice; publisher "core"\)$/);
  t.deepEqual(await listing(w.config.modules.modules_dir), [
    "alpha", "alpha/index.ts", "alpha/lib.ts", "alpha/module.toml",
    "beta", "beta/index.ts", "beta/lib.ts", "beta/module.toml",
  ]);
  const manifest = await loadManifest(path.join(w.config.modules.modules_dir, "beta", "module.toml"));
  t.is(manifest.version, "1.0.0");
  t.true(w.lines.some((l) => l === "installing alpha 1.0.0, beta 1.0.0 from " + w.server.url + " (index version 1)"));
  t.true(w.lines.some((l) => /^no host is running|^installed beta 1\.0\.0/.test(l)));
  // Downloads went through the server, and the blobs are in the content-addressed cache.
  t.true(w.requests.some((q) => /^GET \/blobs\/sha256\/[0-9a-f]{64} 200$/.test(q)));
  const cached = await readdir(w.config.registry.cache_dir);
  t.is(cached.length, 5); // index.ts is the same file in both modules: one blob
  for (const c of cached) t.is(sha256Hex(await readFile(path.join(w.config.registry.cache_dir, c))), c);

  // Removing and installing again is served from the cache (only the index is fetched).
  await remove(w.config, "beta", w.opts);
  const before = w.requests.length;
  await install(w.config, "beta", w.opts);
  t.false(w.requests.slice(before).some((q) => q.includes("/blobs/")));
  await t.throwsAsync(install(w.config, "beta", w.opts), { message: `beta 1.0.0 is already installed (${path.join(w.config.modules.modules_dir, "beta")})` });
});

test("a tampered blob is refused with what failed and what to do; nothing is installed or cached", async (t) => {
  const w = await world(t);
  await w.publish([ALPHA]);
  const index = parseIndex(await readFile(path.join(w.reg, "index.json")), "x");
  const lib = index.modules["alpha"]!.versions["1.0.0"]!.files.find((f) => f.path === "lib.ts")!;
  const blob = path.join(w.reg, ...blobPath(lib.sha256).split("/"));
  await writeFile(blob, (await readFile(blob, "utf8")).replace("alpha", "evil!"));
  const before = await listing(w.config.modules.modules_dir);
  const err = await t.throwsAsync(install(w.config, "alpha", w.opts));
  t.regex(err!.message, new RegExp(`^download check failed for alpha 1\\.0\\.0 lib\\.ts: the registry index says ${lib.size} bytes with sha256 ${lib.sha256}, but ${w.server.url.replace(/[.]/g, "\\.")}blobs/sha256/${lib.sha256} served ${lib.size} bytes with sha256 [0-9a-f]{64}`));
  t.regex((err as { hint?: string }).hint ?? "", /tampered or corrupted content; nothing was installed/);
  t.deepEqual(await listing(w.config.modules.modules_dir), before);
  t.false((await readdir(w.config.registry.cache_dir)).includes(lib.sha256));
});

test("a download that breaks off midway is a registry error naming the URL and the bytes received; no partial file is left", async (t) => {
  // A registry whose blob answers stop halfway (the connection is reset after half the declared
  // body): the body's failure must come out as the registry error, not as the fetch layer's own.
  const w = await world(t);
  await w.publish([ALPHA]);
  const { createServer } = await import("node:http");
  const broken = createServer(async (req, res) => {
    const upstream = await fetch(new URL(req.url ?? "/", w.server.url));
    const body = Buffer.from(await upstream.arrayBuffer());
    if (!req.url?.startsWith("/blobs/")) {
      res.writeHead(upstream.status, { "content-length": body.length }).end(body);
      return;
    }
    res.writeHead(200, { "content-length": body.length });
    res.write(body.subarray(0, Math.floor(body.length / 2)), () => setTimeout(() => res.destroy(), 20));
  });
  await new Promise<void>((r) => broken.listen(0, "127.0.0.1", r));
  t.teardown(() => broken.close());
  w.config.registry.url = `http://127.0.0.1:${(broken.address() as { port: number }).port}/`;
  const before = await listing(w.config.modules.modules_dir);
  const err = await t.throwsAsync(install(w.config, "alpha", w.opts));
  t.is((err as { code?: string }).code, "registry_unreachable");
  t.regex(err!.message, /^the download of http:\/\/127\.0\.0\.1:\d+\/blobs\/sha256\/[0-9a-f]{64} broke after \d+ bytes: /);
  t.regex((err as { hint?: string }).hint ?? "", /registry is up/);
  t.deepEqual(await listing(w.config.modules.modules_dir), before);
  t.deepEqual((await readdir(w.config.registry.cache_dir)).filter((f) => f.endsWith(".part")), []);
});

test("a tampered manifest in a re-signed index is refused: the registry's signature does not replace the maintainers'", async (t) => {
  const w = await world(t);
  await w.publish([{ ...ALPHA, capabilities: ["read_chain_state"] }]);
  // The registry (or whoever holds its key) swaps in a manifest that asks for more.
  const file = path.join(w.reg, "index.json");
  const index = parseIndex(await readFile(file), file);
  const entry = index.modules["alpha"]!.versions["1.0.0"]!;
  const original = await readFile(path.join(w.reg, ...blobPath(entry.manifest.sha256).split("/")), "utf8");
  const evil = Buffer.from(original.replace('capabilities = ["read_chain_state"]', 'capabilities = ["read_chain_state", "network_access"]'));
  const hex = sha256Hex(evil);
  await writeFile(path.join(w.reg, ...blobPath(hex).split("/")), evil);
  await resign(w, (i) => {
    const e = i.modules["alpha"]!.versions["1.0.0"]!;
    e.manifest = { sha256: hex, size: evil.byteLength };
    e.capabilities.push("network_access");
  });
  const before = await listing(w.config.modules.modules_dir);
  const err = await t.throwsAsync(install(w.config, "alpha", w.opts));
  t.regex(err!.message, /^alpha 1\.0\.0 from the registry: signature check failed for alpha: 0 of 1 required signature from trusted keys; signed by: alice \([0-9a-f]{8}…[0-9a-f]{4}: INVALID signature, trusted\)/);
  t.regex((err as { hint?: string }).hint ?? "", /changed after alice signed it/);
  t.deepEqual(await listing(w.config.modules.modules_dir), before);
});

test("a module signed by an untrusted key is refused; so is one with too few trusted signatures", async (t) => {
  const w = await world(t, (c) => {
    c.modules.trust["gamma"] = { publisher: "core" };
  });
  const mallory = newKey("mallory");
  await w.publish([{ name: "gamma", version: "1.0.0" }], [mallory]);
  let err = await t.throwsAsync(install(w.config, "gamma", w.opts));
  t.regex(err!.message, /signature check failed for gamma: 0 of 1 required signature from trusted keys; signed by: mallory \(.*: valid, not trusted\); trusted: publisher "core": /);
  t.regex((err as { hint?: string }).hint ?? "", /signed by keys you do not trust/);

  // Two of the publisher's keys required, only alice signed.
  w.config.trust.publishers["core"]!.threshold = 2;
  await w.publish([{ name: "delta", version: "1.0.0" }], [w.alice]);
  err = await t.throwsAsync(install(w.config, "delta", w.opts));
  t.regex(err!.message, /signature check failed for delta: 1 of 2 required signatures from trusted keys; signed by: alice \(.*valid, trusted\)/);
  t.deepEqual(await listing(w.config.modules.modules_dir), []);
  // Both maintainers sign: it goes through.
  await w.publish([{ name: "delta", version: "1.0.1" }], [w.alice, w.bob]);
  const ok = await install(w.config, "delta", w.opts);
  t.regex(ok.installed[0]!.verification, /signed by 2 of 2 required trusted keys \(alice, bob; publisher "core"\)/);
});

test("the index must be signed by the pinned registry key, over its exact bytes", async (t) => {
  const w = await world(t);
  await w.publish([ALPHA]);
  // Signed by another key.
  await resign(w, () => {}, newKey("impostor"));
  let err = await t.throwsAsync(fetchIndex(w.config));
  t.regex(err!.message, /is not signed by the registry's keys: 0 of 1 required valid signatures from \[registry\] keys; signed by: [0-9a-f]{8}…[0-9a-f]{4} \(valid, not trusted\)/);
  // index.json edited after signing.
  await resign(w, () => {});
  const file = path.join(w.reg, "index.json");
  await writeFile(file, (await readFile(file, "utf8")).replace('"the alpha module"', '"the alpha module (edited)"'));
  err = await t.throwsAsync(install(w.config, "alpha", w.opts));
  t.regex(err!.message, /INVALID, trusted/);
  t.regex((err as { hint?: string }).hint ?? "", /index\.json was changed after it was signed/);
  t.deepEqual(await listing(w.config.modules.modules_dir), []);
});

test("an expired index is refused as stale", async (t) => {
  const w = await world(t);
  await w.publish([ALPHA], undefined, { expiresAt: new Date(Date.now() - 60_000) });
  const err = await t.throwsAsync(install(w.config, "alpha", w.opts));
  t.regex(err!.message, /^the registry index from http:\/\/127\.0\.0\.1:\d+\/ \(version 1\) expired at \S+; now is \S+: refusing a stale index$/);
  t.regex((err as { hint?: string }).hint ?? "", /has not been re-signed in time/);
  t.deepEqual(await listing(w.config.modules.modules_dir), []);
  // Re-signing with a new expiry makes it usable again.
  await w.publish([], undefined, { expiresDays: 1 });
  t.is((await install(w.config, "alpha", w.opts)).installed.length, 1);
});

test("an older index replayed after a newer one was seen is refused (rollback), and so is a changed index under the same version", async (t) => {
  const w = await world(t);
  await w.publish([ALPHA]);
  const old = { index: await readFile(path.join(w.reg, "index.json")), sig: await readFile(path.join(w.reg, "index.sig")) };
  await w.publish([{ ...ALPHA, version: "1.0.1" }]);
  t.is((await fetchIndex(w.config)).index.version, 2);
  // The server (or someone in between) now serves the old, validly signed index again.
  await writeFile(path.join(w.reg, "index.json"), old.index);
  await writeFile(path.join(w.reg, "index.sig"), old.sig);
  const err = await t.throwsAsync(install(w.config, "alpha", w.opts));
  t.regex(err!.message, /served index version 1, but version 2 was already seen .*: refusing a rollback to an older index, which could hide updates/);
  t.regex((err as { hint?: string }).hint ?? "", /replaying an old index/);
  t.deepEqual(await listing(w.config.modules.modules_dir), []);
  const state = JSON.parse(await readFile(w.config.registry.state_file, "utf8")) as { registries: Record<string, { version: number }> };
  t.is(state.registries[w.server.url]!.version, 2);

  // Same version number, different content.
  await w.publish([{ ...ALPHA, version: "1.0.2" }], undefined, { version: 3 });
  await fetchIndex(w.config);
  const index = parseIndex(await readFile(path.join(w.reg, "index.json")), "x");
  index.generated = new Date().toISOString();
  const bytes = Buffer.from(JSON.stringify(index));
  await writeFile(path.join(w.reg, "index.sig"), JSON.stringify(signIndex(bytes, [w.registryKey])));
  await writeFile(path.join(w.reg, "index.json"), bytes);
  await t.throwsAsync(fetchIndex(w.config), { message: /served a different index under the same version 3/ });
});

test("a dependency that cannot be satisfied is refused with the chain of requirements; nothing is installed", async (t) => {
  const w = await world(t);
  await w.publish([ALPHA, { name: "needy", version: "1.0.0", dependencies: { alpha: "^2.0.0" } }, { name: "future", version: "1.0.0", dependencies: { modhost: ">=99.0.0" } }]);
  let err = await t.throwsAsync(install(w.config, "needy", w.opts));
  t.is(err!.message, "cannot install: needy 1.0.0 -> alpha ^2.0.0: no version of alpha satisfies ^2.0.0; the registry has 1.0.0");
  err = await t.throwsAsync(install(w.config, "future", w.opts));
  t.regex(err!.message, /^cannot install: future 1\.0\.0 -> modhost >=99\.0\.0: needs modhost >=99\.0\.0, but this is modhost \d+\.\d+\.\d+/);
  err = await t.throwsAsync(install(w.config, "alpha@^3", w.opts));
  t.regex(err!.message, /no version of alpha satisfies \^3; the registry has 1\.0\.0/);
  await t.throwsAsync(install(w.config, "nosuch", w.opts), { message: /nosuch is not in the registry/ });
  t.deepEqual(await listing(w.config.modules.modules_dir), []);
  // An installed dependency that does not fit is not silently replaced.
  await install(w.config, "alpha", w.opts);
  await w.publish([{ name: "alpha", version: "2.0.0" }, { name: "needy2", version: "1.0.0", dependencies: { alpha: "^2.0.0" } }]);
  err = await t.throwsAsync(install(w.config, "needy2", w.opts));
  t.regex(err!.message, /alpha 1\.0\.0 is installed, which does not satisfy \^2\.0\.0/);
  t.regex((err as { hint?: string }).hint ?? "", /modhost update alpha@\^2\.0\.0/);
});

test("resolution picks the highest version satisfying every range", (t) => {
  const entry = (deps: Record<string, string> = {}) => ({ runtime: "isolate" as const, hash: `sha256:${"0".repeat(64)}`, manifest: { sha256: "0".repeat(64), size: 1 }, files: [], capabilities: [], dependencies: deps, signers: [], published: "" });
  const index = {
    format: "modhost-registry-index-v1" as const, version: 1, generated: "", expires: "",
    modules: {
      a: { versions: { "1.0.0": entry(), "1.4.0": entry(), "2.0.0": entry(), "2.1.0-rc.1": entry() } },
      b: { versions: { "0.3.0": entry({ a: ">=1.2.0 <2.0.0" }) } },
    },
  };
  t.deepEqual(resolve(index, [{ ...parseSpec("b"), by: "you" }], new Map()).map((p) => `${p.name}@${p.version}`), ["a@1.4.0", "b@0.3.0"]);
  t.deepEqual(resolve(index, [{ ...parseSpec("a"), by: "you" }], new Map()).map((p) => p.version), ["2.0.0"]);
  t.deepEqual(resolve(index, [{ ...parseSpec("b"), by: "you" }], new Map([["a", "1.2.5"]])).map((p) => p.name), ["b"]);
  t.throws(() => parseSpec("b@not a range"), { message: /is not a version range/ });
});

test("an update that asks for new capabilities waits for the operator's grant; valid updates reload the running host", async (t) => {
  const h = await startHost(t, { noStart: true, grants: { alpha: [] } });
  const w = await world(t);
  // The client uses the host's own configuration, with the world's trust and registry.
  const config = h.config;
  config.trust = w.config.trust;
  config.registry = w.config.registry;
  await w.publish([ALPHA]);
  await install(config, "alpha", w.opts);
  await h.host.start();
  await h.waitForLog(/^started alpha 1\.0\.0$/, { source: "alpha" });
  t.regex(h.mustStatus("alpha").verification ?? "", /^verified: /);
  const client = { ...config, rpc: { ...config.rpc, port: h.host.rpcServer!.address!.port } };
  const opts = { ...w.opts, notifyHost: true };

  // 1.1.0, same capabilities: installed and the running host reloads it.
  await w.publish([{ ...ALPHA, version: "1.1.0" }]);
  let mark = h.mark();
  const up = await update(client, "alpha", opts);
  t.deepEqual(up, [{ name: "alpha", from: "1.0.0", to: "1.1.0", status: "updated" }]);
  await h.waitForLog(/^started alpha 1\.1\.0$/, { source: "alpha", since: mark });
  t.true(w.lines.includes("the running host reloaded alpha"));

  // 1.2.0 asks for read_chain_state, which is not granted: verified, kept pending, not activated.
  await w.publish([{ ...ALPHA, version: "1.2.0", capabilities: ["read_chain_state"] }]);
  w.lines.length = 0;
  mark = h.mark();
  const pending = await update(client, undefined, opts);
  t.deepEqual(pending, [{ name: "alpha", from: "1.1.0", to: "1.2.0", status: "pending" }]);
  const text = w.lines.join("\n");
  t.regex(text, /alpha 1\.2\.0 is verified \(verified: .*\) but NOT activated: it requests capabilities you have not granted\./);
  t.regex(text, /\n {4}\+ read_chain_state {2}\(new; NOT granted\)/);
  t.regex(text, /\[modules\.grants\.alpha\]\n {4}allow = \["read_chain_state"\]/);
  t.regex(text, /then activate it: modhost update --activate alpha/);
  t.is((await loadManifest(path.join(config.modules.modules_dir, "alpha", "module.toml"))).version, "1.1.0");
  t.is((await loadManifest(path.join(config.modules.modules_dir, ".pending", "alpha", "module.toml"))).version, "1.2.0");
  t.is(h.mustStatus("alpha").state, "running");
  t.false(h.logsOf("alpha", mark).some((r) => /1\.2\.0/.test(r.message)));

  // Activating before the grant is refused, with the same diff.
  const refused = await t.throwsAsync(activatePending(client, "alpha", opts));
  t.regex(refused!.message, /still requests capabilities you have not granted: read_chain_state; not activated/);
  // The operator grants it; activation verifies again and the host reloads the new version.
  config.modules.grants["alpha"] = { allow: [parseDescriptor("read_chain_state")], deny: [] };
  mark = h.mark();
  const done = await activatePending(client, "alpha", opts);
  t.is(done.to, "1.2.0");
  await h.waitForLog(/^started alpha 1\.2\.0$/, { source: "alpha", since: mark });
  t.deepEqual((await listing(config.modules.modules_dir)).filter((p) => !p.includes("/")), ["alpha"]);
  t.deepEqual((await update(client, "alpha", opts))[0]!.status, "up-to-date");
});

test("an update that would break a module depending on the old version is refused; remove refuses while others depend", async (t) => {
  const w = await world(t);
  await w.publish([ALPHA, BETA]);
  await install(w.config, "beta", w.opts);
  await w.publish([{ ...ALPHA, version: "2.0.0" }]);
  const err = await t.throwsAsync(update(w.config, "alpha", w.opts));
  t.regex(err!.message, /cannot update alpha to 2\.0\.0: beta 1\.0\.0 needs alpha \^1\.0\.0/);
  t.is((await loadManifest(path.join(w.config.modules.modules_dir, "alpha", "module.toml"))).version, "1.0.0");

  const rm = await t.throwsAsync(remove(w.config, "alpha", w.opts));
  t.regex(rm!.message, /cannot remove alpha: beta 1\.0\.0 depends on it \(\^1\.0\.0\)/);
  await remove(w.config, "beta", w.opts);
  await remove(w.config, "alpha", w.opts);
  t.deepEqual(await listing(w.config.modules.modules_dir), []);
  await t.throwsAsync(remove(w.config, "alpha", w.opts), { message: /alpha is not installed/ });
});

test("a published version cannot change, and the index version only goes up", async (t) => {
  const w = await world(t);
  await w.publish([ALPHA]);
  const err = await t.throwsAsync(w.publish([{ ...ALPHA, description: "different" }]));
  t.regex(err!.message, /alpha 1\.0\.0 is already published in .* with other content/);
  await t.throwsAsync(w.publish([], undefined, { version: 1 }), { message: /the index version must go up/ });
});

test("the progress bar is drawn on a terminal and not elsewhere", (t) => {
  const writes: string[] = [];
  const p = new Progress(2048, { isTTY: true, columns: 120, write: (s: string) => writes.push(s) });
  p.setLabel("alpha 1.0.0");
  p.add(1024);
  p.add(1024);
  p.finish();
  t.regex(writes.join(""), /\r\[#{24}\] 100% 2\.0 KiB\/2\.0 KiB alpha 1\.0\.0/);
  t.true(writes.at(-1)!.endsWith("\n"));
  const none: string[] = [];
  const q = new Progress(10, { isTTY: false, write: (s: string) => none.push(s) });
  q.add(10);
  q.finish();
  t.deepEqual(none, []);
});

test("CLI: modhost registry build and serve, then modhost install, search and a refused install, as an operator runs them", async (t) => {
  const dir = await tempDir(t, "modhost-registry-cli-");
  const bin = path.join(ROOT, "bin", "modhost.js");
  const run = (args: string[]) => execa(process.execPath, [bin, ...args], { cwd: dir, reject: false, all: true, timeout: 60_000 });
  const alice = newKey("alice");
  const registryKey = newKey("registry");
  await writeFile(path.join(dir, "alice.key"), keyFileText(alice), { mode: 0o600 });
  await writeFile(path.join(dir, "registry.key"), keyFileText(registryKey), { mode: 0o600 });
  const good = await writeTsModule(path.join(dir, "src", "alpha"), ALPHA);
  t.is((await run(["sign", good, "--key", "alice.key"])).exitCode, 0);
  await writeTsModule(path.join(dir, "src", "unsigned"), { name: "unsigned", version: "1.0.0" });
  const built = await run(["registry", "build", "src", "--out", "registry", "--key", "registry.key", "--expires-days", "2"]);
  t.is(built.exitCode, 0, built.all);
  t.regex(built.stdout, /wrote .*index\.json version 1/);
  t.regex(built.stderr, /unsigned 1\.0\.0 is not pinned/);

  const server = execa(process.execPath, [bin, "registry", "serve", "registry", "--port", "0", "--quiet"], { cwd: dir, reject: false });
  t.teardown(() => void server.kill());
  const url = await new Promise<string>((resolve, reject) => {
    server.stdout!.on("data", (d: Buffer) => {
      const m = /at (http:\/\/127\.0\.0\.1:\d+\/)/.exec(d.toString());
      if (m) resolve(m[1]!);
    });
    void server.then((r) => reject(new Error(`registry serve exited: ${r.stderr}`)));
  });
  await mkdir(path.join(dir, "node", "modules"), { recursive: true });
  await writeFile(path.join(dir, "node", "modhost.toml"), [
    "[modules]", 'modules_dir = "modules"', "",
    "[rpc]", 'cookie_file = "no-host/.cookie"', "",
    "[trust.publishers.core]", `keys = ["${alice.publicKey}"]`, "",
    "[trust]", 'publisher = "core"', "",
    "[registry]", `url = "${url}"`, `keys = ["${registryKey.compressed}"]`, "",
  ].join("\n"));
  const cfg = ["--config", path.join(dir, "node", "modhost.toml")];
  const s = await run(["search", ...cfg]);
  t.is(s.exitCode, 0, s.all);
  t.regex(s.stdout, /^alpha 1\.0\.0\n {4}the alpha module/m);
  const ok = await run(["install", "alpha", ...cfg]);
  t.is(ok.exitCode, 0, ok.all);
  t.regex(ok.stdout, /installed alpha 1\.0\.0 in .*: verified: /);
  t.regex(ok.stdout, /no host is running: alpha loads at the next start/);
  const bad = await run(["install", "unsigned", ...cfg]);
  t.is(bad.exitCode, 1, bad.all);
  t.regex(bad.stderr, /^modhost: unsigned 1\.0\.0 from the registry: signature check failed for unsigned: module\.toml has no \[binary\] hash/);
  t.regex(bad.stderr, /\n {2}fix: have it signed: modhost sign/);
  t.deepEqual((await readdir(path.join(dir, "node", "modules"))).filter((n) => n !== ".lock").sort(), ["alpha"]);
  const check = await run(["check", ...cfg]);
  t.regex(check.stdout, /✓ alpha 1\.0\.0 \(isolate\)\n\s+verified: /);
});

test("an install removes what an interrupted install left in the staging area, however recent: no live command holds modules_dir", async (t) => {
  const { mkdir: mk, readdir: rd } = await import("node:fs/promises");
  const w = await world(t);
  const stale = path.join(w.config.modules.modules_dir, ".staging", "left-behind-abc123");
  await mk(stale, { recursive: true });
  await w.publish([ALPHA, BETA]);
  await install(w.config, "beta", w.opts);
  t.false((await rd(path.join(w.config.modules.modules_dir, ".staging")).catch(() => [] as string[])).includes("left-behind-abc123"));
});

test("registry serve answers a client that half-closes once its request is sent (shutdown(SHUT_WR)), and Node drops connections past MAX_REGISTRY_CONNECTIONS and the 16 being told why", async (t) => {
  const dir = await tempDir(t, "modhost-reg-half-");
  await writeFile(path.join(dir, "index.json"), "{\"x\":1}");
  const server = await serveRegistry(dir);
  t.teardown(() => server.close());
  const answer = await new Promise<string>((resolve, reject) => {
    const sock = net.connect(server.port, "127.0.0.1", () => {
      sock.end("GET /index.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    });
    let got = "";
    sock.setEncoding("utf8");
    sock.on("data", (d) => (got += d));
    sock.on("close", () => resolve(got));
    sock.on("error", reject);
  });
  t.regex(answer, /^HTTP\/1\.1 200 OK\r\n/, answer.slice(0, 200));
  t.true(answer.endsWith("{\"x\":1}"), "the whole file");
  t.is(server.server.maxConnections, MAX_REGISTRY_CONNECTIONS + 16);
});
