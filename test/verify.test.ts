// Verified modules: the module hash, the canonical manifest and its test vector, signatures
// and trust, compatibility, `modhost keygen | sign | verify`, and the host verifying at load,
// reload and restart. Real files, real keys, real signatures, a real host.

import test from "ava";
import { execa } from "execa";
import { access, appendFile, mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { parse } from "smol-toml";
import { bytesToHex, hexToBytes } from "@noble/curves/utils.js";
import { defaultConfig, parseConfig } from "../host/config.ts";
import { ConfigError } from "../host/errors.ts";
import { loadManifest } from "../host/manifest.ts";
import { canonicalJson, manifestDigest, manifestMessage } from "../host/verify/canonical.ts";
import { hashFile, sourceListing, sourceTreeHash } from "../host/verify/hash.ts";
import { readKeyFile, secretKeyFromBytes, signDigest, verifyDigest, xOnlyKey } from "../host/verify/keys.ts";
import { snapshotModule, verifyModule } from "../host/verify/module.ts";
import { signModule, stripSections } from "../host/verify/sign.ts";
import { checkCompatibility } from "../host/verify/compat.ts";
import { HOST_VERSION } from "../host/version.ts";
import { PROTOCOL_VERSION } from "../protocol/messages.ts";
import { ROOT, startHost, tempDir, waitFor } from "./helpers/host.ts";
import { newKey, signWith, trust, writeTsModule } from "./helpers/signing.ts";

const BIN = path.join(ROOT, "bin", "modhost.js");
const modhost = (args: string[], cwd = ROOT) => execa(process.execPath, [BIN, ...args], { cwd, reject: false, all: true, timeout: 60_000, env: { NO_COLOR: "1" } });

async function verifyDir(dir: string, configure: (c: ReturnType<typeof defaultConfig>) => void) {
  const manifest = await loadManifest(path.join(dir, "module.toml"));
  const config = defaultConfig(path.dirname(dir));
  configure(config);
  return verifyModule(manifest, await snapshotModule(manifest), config);
}

// ---------------------------------------------------------------------------------------
// Hashing and the canonical form

test("the TypeScript module hash is sha256 over a sha256sum listing of exactly the bundled files", async (t) => {
  const dir = await writeTsModule(path.join(await tempDir(t), "m"), { name: "m" });
  await writeFile(path.join(dir, "unused.ts"), "export const x = 1;\n"); // not imported: not hashed
  const manifest = await loadManifest(path.join(dir, "module.toml"));
  const snap = await snapshotModule(manifest);
  t.deepEqual(snap.files.map((f) => f.path).sort(), ["index.ts", "lib.ts"]);
  const listing = ["index.ts", "lib.ts"].map((f) => f).sort();
  const lines = [];
  for (const f of listing) lines.push(hashFile(f, await readFile(path.join(dir, f))));
  t.is(sourceListing(lines), lines.map((l) => `${l.sha256}  ${l.path}\n`).join(""));
  t.is(snap.hash, sourceTreeHash(lines));
  // Reproducible with coreutils, as docs/signing.md says.
  const r = await execa("sh", ["-c", "sha256sum index.ts lib.ts | LC_ALL=C sort -k2 | sha256sum"], { cwd: dir });
  t.is(`sha256:${r.stdout.split(" ")[0]}`, snap.hash);
  // Changing the unused file changes nothing; changing an imported one changes the hash.
  await writeFile(path.join(dir, "unused.ts"), "export const x = 2;\n");
  t.is((await snapshotModule(manifest)).hash, snap.hash);
  await appendFile(path.join(dir, "lib.ts"), "// changed\n");
  t.not((await snapshotModule(manifest)).hash, snap.hash);
});

test("the bundle is built from the hashed snapshot (the bytes hashed are the bytes compiled)", async (t) => {
  const dir = await writeTsModule(path.join(await tempDir(t), "m"), { name: "m" });
  const manifest = await loadManifest(path.join(dir, "module.toml"));
  const snap = await snapshotModule(manifest);
  t.true(snap.bundle!.code.includes("m 1.0.0"));
  t.is(snap.files.find((f) => f.path === "lib.ts")!.sha256, hashFile("lib.ts", await readFile(path.join(dir, "lib.ts"))).sha256);
});

test("canonical JSON: sorted keys, no whitespace, [signatures] left out, dates refused", (t) => {
  t.is(canonicalJson({ b: 1, a: [true, null, "x\n"], c: { z: 1.5, y: -0 } }), '{"a":[true,null,"x\\n"],"b":1,"c":{"y":0,"z":1.5}}');
  const data = parse('name = "x"\n[signatures]\nthreshold = "1-of-1"\n[binary]\nhash = "h"\n') as Record<string, unknown>;
  t.is(new TextDecoder().decode(manifestMessage(data)), 'modhost-manifest-v1\n{"binary":{"hash":"h"},"name":"x"}');
  const withDate = parse('name = "x"\n[config_schema]\nwhen = { default = 1979-05-27 }\n') as Record<string, unknown>;
  t.throws(() => manifestMessage(withDate), { message: /config_schema\.when\.default is a TOML date\/time/ });
  t.throws(() => canonicalJson({ x: Number.NaN }), { message: /nan/i });
});

/** The fenced block after `<!-- vector: NAME -->` in docs/signing.md. */
function vectorBlock(doc: string, name: string): string {
  const at = doc.indexOf(`<!-- vector: ${name} -->`);
  if (at < 0) throw new Error(`no vector ${name} in docs/signing.md`);
  const m = /```[a-z]*\n([\s\S]*?)```/.exec(doc.slice(at));
  return m![1]!;
}

test("the test vector in docs/signing.md: hash, message, digest, both signatures, and the host accepts it", async (t) => {
  const doc = await readFile(path.join(ROOT, "docs", "signing.md"), "utf8");
  const values: Record<string, string> = Object.fromEntries(vectorBlock(doc, "values").trim().split("\n").map((l) => {
    const i = l.indexOf(":");
    return [l.slice(0, i).trim(), l.slice(i + 1).trim()];
  }));
  const value = (name: string): string => {
    const v = values[name];
    if (v === undefined) throw new Error(`docs/signing.md: no "${name}" in the vector`);
    return v;
  };
  const index = vectorBlock(doc, "index.ts");
  const toml = vectorBlock(doc, "module.toml");
  const file = hashFile("index.ts", new TextEncoder().encode(index));
  t.is(file.sha256, value("index.ts sha256"));
  t.is(sourceTreeHash([file]), value("module hash"));

  const data = parse(toml) as Record<string, unknown>;
  t.is(bytesToHex(manifestMessage(data)), value("message"));
  const digest = manifestDigest(data);
  t.is(bytesToHex(digest), value("digest"));
  const alice = secretKeyFromBytes(hexToBytes(value("alice secret key")), "alice");
  const bob = secretKeyFromBytes(hexToBytes(value("bob secret key")), "bob");
  t.is(alice.publicKey, value("alice public key"));
  t.is(bob.compressed, value("bob public key"));
  t.is(signDigest(digest, alice, "schnorr", new Uint8Array(32)), value("alice schnorr"));
  t.is(signDigest(digest, bob, "ecdsa"), value("bob ecdsa"));
  t.true(verifyDigest(digest, value("alice schnorr"), alice.publicKey, "schnorr"));
  t.true(verifyDigest(digest, value("bob ecdsa"), bob.compressed, "ecdsa"));

  // Written to disk and checked as the host checks it: compiled, hashed, 2-of-2.
  const dir = path.join(await tempDir(t), "example");
  await mkdir(dir);
  await writeFile(path.join(dir, "index.ts"), index);
  await writeFile(path.join(dir, "module.toml"), toml);
  const ok = await verifyDir(dir, (c) => trust(c, "example", [alice, bob], 2));
  t.true(ok.ok, ok.error?.message);
  t.is(ok.signatures.count, 2);
  t.regex(ok.summary, /^verified: sha256:cae833ffd8fa… signed by 2 of 2 required trusted keys \(alice, bob;/);
});

// ---------------------------------------------------------------------------------------
// Signatures and trust

test("signed by a trusted key: verified; the summary names the signer and the trust source", async (t) => {
  const alice = newKey("alice");
  const dir = await writeTsModule(path.join(await tempDir(t), "m"), { name: "m" });
  await signWith(dir, [alice]);
  const r = await verifyDir(dir, (c) => {
    c.trust.publishers["core"] = { keys: [alice.publicKey], threshold: 1 };
    c.trust.publisher = "core";
  });
  t.true(r.ok, r.error?.message);
  t.is(r.integrity, "ok");
  t.regex(r.summary, /signed by 1 of 1 required trusted keys \(alice; publisher "core"\)/);
});

test("a signature by an untrusted key does not count: refused, naming the signer, the trusted keys and the fix", async (t) => {
  const alice = newKey("alice");
  const mallory = newKey("mallory");
  const dir = await writeTsModule(path.join(await tempDir(t), "m"), { name: "m" });
  await signWith(dir, [mallory]);
  const r = await verifyDir(dir, (c) => trust(c, "m", [alice]));
  t.false(r.ok);
  t.regex(r.error!.message, /^signature check failed for m: 0 of 1 required signature from trusted keys; signed by: mallory \([0-9a-f]{8}…[0-9a-f]{4}: valid, not trusted\); trusted: \[modules\.trust\.m\] keys/);
  t.true(r.error!.message.includes(alice.publicKey.slice(0, 8)));
  t.regex(r.error!.hint, /signed by keys you do not trust/);
});

test("keys in the manifest are never trusted by themselves: a self-signed manifest is refused", async (t) => {
  const mallory = newKey("mallory");
  const dir = await writeTsModule(path.join(await tempDir(t), "m"), { name: "m" });
  await signWith(dir, [mallory]);
  // The manifest names mallory's key and carries a valid signature by it...
  const manifest = await loadManifest(path.join(dir, "module.toml"));
  t.is(xOnlyKey(manifest.signatures!.maintainers[0]!.key), mallory.publicKey);
  // ...and with no keys pinned (the default "require") that proves nothing.
  const r = await verifyDir(dir, () => {});
  t.false(r.ok);
  t.regex(r.error!.message, /no trusted keys are configured for it/);
  t.regex(r.error!.hint, /never copy them from the manifest without checking them/);
  // A publisher that does not list the key does not help either.
  const other = await verifyDir(dir, (c) => {
    c.trust.publishers["core"] = { keys: [newKey("x").publicKey], threshold: 1 };
    c.trust.publisher = "core";
  });
  t.false(other.ok);
  t.is(other.signatures.count, 0);
});

test("too few signatures: 1 of 2 required is refused; a second maintainer's signature completes it", async (t) => {
  const alice = newKey("alice");
  const bob = newKey("bob");
  const dir = await writeTsModule(path.join(await tempDir(t), "m"), { name: "m" });
  await signWith(dir, [alice]);
  const one = await verifyDir(dir, (c) => trust(c, "m", [alice, bob], 2));
  t.false(one.ok);
  t.regex(one.error!.message, /1 of 2 required signatures from trusted keys; signed by: alice \(.*valid, trusted\)/);
  t.regex(one.error!.hint, /ask more of the trusted maintainers to sign it/);
  await signWith(dir, [bob]);
  const two = await verifyDir(dir, (c) => trust(c, "m", [alice, bob], 2));
  t.true(two.ok, two.error?.message);
  t.is(two.signatures.count, 2);
});

test("a duplicate signer counts once (same key twice, and its x-only and compressed forms)", async (t) => {
  const alice = newKey("alice");
  const bob = newKey("bob");
  const dir = await writeTsModule(path.join(await tempDir(t), "m"), { name: "m" });
  await signWith(dir, [alice]);
  // Add alice's signature again under another name and with her compressed key.
  const file = path.join(dir, "module.toml");
  const text = await readFile(file, "utf8");
  const sig = /signature = "([0-9a-f]{128})"/.exec(text)![1]!;
  const dup = `  { name = "alice-again", key = "${alice.compressed}", signature = "${sig}" },\n  { name = "alice-third", key = "${alice.publicKey}", signature = "${sig}" },\n]`;
  await writeFile(file, text.replace(/\n\]\s*$/, `\n${dup}\n`));
  const manifest = await loadManifest(file);
  t.is(manifest.signatures!.maintainers.length, 3);
  const r = await verifyDir(dir, (c) => trust(c, "m", [alice, bob], 2));
  t.false(r.ok);
  t.is(r.signatures.count, 1);
  t.deepEqual(r.signatures.checks.map((c) => [c.valid, c.trusted, c.counted]), [[true, true, true], [true, true, false], [true, true, false]]);
  t.regex(r.error!.message, /1 of 2 required/);
  t.regex(r.error!.message, /same signer counted once/);
});

test("ECDSA signatures are accepted (compact and DER), over the same digest", async (t) => {
  const alice = newKey("alice");
  const bob = newKey("bob");
  const dir = await writeTsModule(path.join(await tempDir(t), "m"), { name: "m" });
  await signWith(dir, [alice], "ecdsa");
  await signWith(dir, [bob], "schnorr");
  const manifest = await loadManifest(path.join(dir, "module.toml"));
  t.is(manifest.signatures!.maintainers[0]!.scheme, "ecdsa");
  const r = await verifyDir(dir, (c) => trust(c, "m", [alice, bob], 2));
  t.true(r.ok, r.error?.message);
  // DER form of the same kind of signature verifies too; a Schnorr check of an ECDSA signature does not.
  const snap = await snapshotModule(manifest);
  const { secp256k1 } = await import("@noble/curves/secp256k1.js");
  const der = bytesToHex(secp256k1.sign(snap.digest, alice.secret, { prehash: false, format: "der" }));
  t.true(verifyDigest(snap.digest, der, alice.compressed, "ecdsa"));
  t.false(verifyDigest(snap.digest, manifest.signatures!.maintainers[0]!.signature, alice.publicKey, "schnorr"));
});

test("a tampered manifest (a capability added after signing) fails: the signature no longer verifies", async (t) => {
  const alice = newKey("alice");
  const dir = await writeTsModule(path.join(await tempDir(t), "m"), { name: "m", capabilities: ["read_chain_state"] });
  await signWith(dir, [alice]);
  const file = path.join(dir, "module.toml");
  await writeFile(file, (await readFile(file, "utf8")).replace('capabilities = ["read_chain_state"]', 'capabilities = ["read_chain_state", "network_access"]'));
  const r = await verifyDir(dir, (c) => trust(c, "m", [alice]));
  t.false(r.ok);
  t.is(r.integrity, "ok"); // the code is unchanged...
  t.regex(r.error!.message, /0 of 1 required signature from trusted keys; signed by: alice \(.*INVALID signature, trusted\)/);
  t.regex(r.error!.hint, /changed after alice signed it/);
});

test("tampered code fails the integrity check under every policy; unpinned code only runs with allow-unsigned, loudly", async (t) => {
  const alice = newKey("alice");
  const dir = await writeTsModule(path.join(await tempDir(t), "m"), { name: "m" });
  await signWith(dir, [alice]);
  await appendFile(path.join(dir, "lib.ts"), 'export const EVIL = "x";\n');
  for (const policy of ["require", "allow-unsigned"] as const) {
    const r = await verifyDir(dir, (c) => {
      trust(c, "m", [alice]);
      c.modules.trust["m"]!.signatures = policy;
    });
    t.false(r.ok, policy);
    t.is(r.integrity, "mismatch");
    t.regex(r.error!.message, /^integrity check failed for m: what would run is sha256:[0-9a-f]{64}, but module\.toml \[binary\] hash says sha256:[0-9a-f]{64} \(hashed: index\.ts, lib\.ts\)/);
    t.regex(r.error!.hint, /re-sign it \(modhost sign/);
  }
  // No [binary] hash at all: refused under "require", allowed with a warning under "allow-unsigned".
  const plain = await writeTsModule(path.join(await tempDir(t), "p"), { name: "p" });
  const req = await verifyDir(plain, (c) => trust(c, "p", [alice]));
  t.false(req.ok);
  t.regex(req.error!.message, /no \[binary\] hash, so no signature can cover its code/);
  const dev = await verifyDir(plain, (c) => (c.trust.signatures = "allow-unsigned"));
  t.true(dev.ok);
  t.is(dev.integrity, "unpinned");
  t.regex(dev.warnings[0]!, /^!!! p runs UNVERIFIED: no \[binary\] hash/);
  t.regex(dev.summary, /^UNVERIFIED \(signatures = "allow-unsigned"\)/);
});

test("compatibility: min/max node version, protocol version and the dependency on the host are checked", async (t) => {
  const major = Number(HOST_VERSION.split(".")[0]);
  const base = await tempDir(t);
  const cases: Array<[string, RegExp]> = [
    [`[compatibility]\nmin_node_version = "${major + 1}.0.0"`, /needs modhost >= \d+\.0\.0 \(\[compatibility\] min_node_version\), this is /],
    ['[compatibility]\nmax_node_version = "0.0.1"', /supports modhost up to 0\.0\.1/],
    [`[compatibility]\nmin_protocol_version = "${PROTOCOL_VERSION + 1}.0.0"`, new RegExp(`needs module protocol >= ${PROTOCOL_VERSION + 1}\\.0\\.0`)],
    [`[dependencies]\n"modhost" = ">=${major + 1}.0.0"`, /needs modhost >=\d+\.0\.0 \(\[dependencies\]\)/],
    [`[dependencies]\n"blvm-node" = "<0.0.1"`, /needs blvm-node <0\.0\.1/],
  ];
  for (const [i, [tables, re]] of cases.entries()) {
    const dir = await writeTsModule(path.join(base, `c${i}`), { name: `c${i}`, tables });
    const r = await verifyDir(dir, (c) => (c.trust.signatures = "allow-unsigned"));
    t.false(r.ok, tables);
    t.regex(r.error!.message, /^compatibility check failed for c\d: /);
    t.regex(r.error!.message, re);
  }
  const fine = await writeTsModule(path.join(base, "ok"), { name: "ok", tables: `[compatibility]\nmin_node_version = "0.0.1"\ntested_with = ["0.0.1"]` });
  const r = await verifyDir(fine, (c) => (c.trust.signatures = "allow-unsigned"));
  t.true(r.ok);
  t.true(r.warnings.some((w) => /not tested with modhost/.test(w)));
  t.deepEqual(checkCompatibility((await loadManifest(path.join(fine, "module.toml"))), "0.0.1").problems, []);
});

// ---------------------------------------------------------------------------------------
// Configuration

test("[trust], [modules.trust] and [registry] are parsed strictly, with file:line:column and the fix", (t) => {
  const key = newKey("k").publicKey;
  const good = `[trust]\nsignatures = "require"\npublisher = "core"\n\n[trust.publishers.core]\nkeys = ["${key}"]\nthreshold = 1\n\n[modules.trust.m]\nsignatures = "allow-unsigned"\n\n[registry]\nurl = "http://127.0.0.1:1/r"\nkeys = ["${key}"]\n`;
  const c = parseConfig(parse(good) as Record<string, unknown>, good, "/x/modhost.toml");
  t.deepEqual(c.trust, { signatures: "require", publisher: "core", publishers: { core: { keys: [key], threshold: 1 } } });
  t.deepEqual(c.modules.trust, { m: { signatures: "allow-unsigned" } });
  t.is(c.registry.url, "http://127.0.0.1:1/r/");
  t.is(c.registry.cache_dir, "/x/data/registry/blobs");

  const bad = [
    "[trust]",
    'signatures = "requre"',
    'publisher = "nobody"',
    "[trust.publishers.core]",
    'keys = ["abcd"]',
    "threshold = 3",
    "[modules.trust.m]",
    `publisher = "core"`,
    `keys = ["${key}", "02${key}"]`,
    "[registry]",
    'url = "ftp://x"',
  ].join("\n");
  const err = t.throws(() => parseConfig(parse(bad) as Record<string, unknown>, bad, "/x/modhost.toml"), { instanceOf: ConfigError }) as ConfigError;
  const text = err.message;
  t.regex(text, /modhost\.toml:2:\d+: trust\.signatures: "requre" is not one of "require", "allow-unsigned"\n\s+fix: did you mean "require"\?/);
  t.regex(text, /modhost\.toml:3:\d+: trust\.publisher: unknown publisher "nobody"/);
  t.regex(text, /modhost\.toml:5:\d+: trust\.publishers\.core\.keys\[0\]: "abcd" is not a secp256k1 public key/);
  t.regex(text, /modhost\.toml:9:\d+: modules\.trust\.m\.keys\[1\]: the same key is listed twice/);
  t.regex(text, /modules\.trust\.m\.keys: publisher and keys cannot both be set/);
  t.regex(text, /modhost\.toml:11:\d+: registry\.url: "ftp:\/\/x" is not an http\(s\) URL/);
  // A key that is hex of the right length but not on the curve.
  const offCurve = `[modules.trust.m]\nkeys = ["${"f".repeat(64)}"]\n`;
  t.throws(() => parseConfig(parse(offCurve) as Record<string, unknown>, offCurve, "/x/modhost.toml"), { message: /not a secp256k1 public key/ });
});

// ---------------------------------------------------------------------------------------
// The maintainer commands

test("modhost keygen, sign and verify: a 0600 key, [binary] hash and signature written, verify exit codes", async (t) => {
  const dir = await tempDir(t);
  const keyFile = path.join(dir, "alice.key");
  const kg = await modhost(["keygen", "--out", keyFile, "--name", "alice"]);
  t.is(kg.exitCode, 0, kg.all);
  t.is((await stat(keyFile)).mode & 0o777, 0o600);
  const key = await readKeyFile(keyFile);
  t.true(kg.stdout.includes(`public key:              ${key.publicKey}`));
  t.false(kg.stdout.includes(Buffer.from(key.secret).toString("hex")), "the secret is not printed");
  t.is((await modhost(["keygen", "--out", keyFile])).exitCode, 1, "never overwrites a key");

  const mod = await writeTsModule(path.join(dir, "m"), { name: "m", extra: "# a comment that survives signing" });
  const s = await modhost(["sign", mod, "--key", keyFile]);
  t.is(s.exitCode, 0, s.all);
  const text = await readFile(path.join(mod, "module.toml"), "utf8");
  t.true(text.includes("# a comment that survives signing"));
  const manifest = await loadManifest(path.join(mod, "module.toml"));
  t.is(manifest.binary!.hash, (await snapshotModule(manifest)).hash);
  t.is(manifest.signatures!.maintainers[0]!.name, "alice");

  const untrusted = await modhost(["verify", mod]);
  t.is(untrusted.exitCode, 1, untrusted.all);
  t.regex(untrusted.stdout, /matches \[binary\] hash/);
  t.regex(untrusted.stdout, /signature: {2}alice [0-9a-f]{64} \(schnorr\): valid, not trusted/);
  t.regex(untrusted.stdout, /result: {5}REFUSED: signature check failed for m: no trusted keys/);
  const trusted = await modhost(["verify", mod, "--trust-key", key.publicKey]);
  t.is(trusted.exitCode, 0, trusted.all);
  t.regex(trusted.stdout, /result: {5}OK: verified: /);

  // Edit the code: verify reports the mismatch; signing again fixes it.
  await appendFile(path.join(mod, "index.ts"), "// edit\n");
  const stale = await modhost(["verify", mod, "--trust-key", key.publicKey]);
  t.is(stale.exitCode, 1);
  t.regex(stale.stdout, /MISMATCH: \[binary\] hash says/);
  t.is((await modhost(["sign", mod, "--key", keyFile])).exitCode, 0);
  t.is((await modhost(["verify", mod, "--trust-key", key.publicKey])).exitCode, 0);
});

test("modhost sign keeps other maintainers' valid signatures, replaces its own, drops stale ones", async (t) => {
  const alice = newKey("alice");
  const bob = newKey("bob");
  const dir = await writeTsModule(path.join(await tempDir(t), "m"), { name: "m" });
  const first = await signModule(dir, alice);
  t.false(first.replaced);
  const second = await signModule(dir, bob);
  t.deepEqual(second.signatures.map((s) => s.name), ["alice", "bob"]);
  t.deepEqual(second.dropped, []);
  const again = await signModule(dir, alice);
  t.true(again.replaced);
  t.deepEqual(again.signatures.map((s) => s.name), ["bob", "alice"]);
  // The code changes: bob's signature covers the old hash and is dropped when alice re-signs.
  await appendFile(path.join(dir, "lib.ts"), "// new\n");
  const after = await signModule(dir, alice);
  t.deepEqual(after.dropped, ["bob"]);
  t.deepEqual(after.signatures.map((s) => s.name), ["alice"]);
  // Only one [binary] and one [signatures] section, at the end.
  const text = await readFile(path.join(dir, "module.toml"), "utf8");
  t.is(text.match(/^\[binary\]$/gm)?.length, 1);
  t.is(text.match(/^\[signatures\]$/gm)?.length, 1);
  t.is(stripSections("a = 1\n[binary]\nhash = 1\n# next\n[x]\nb = 2\n[signatures]\nq = 1\n"), "a = 1\n# next\n[x]\nb = 2\n");
});

test("signing again leaves one copy of the comment modhost sign writes above [binary] (each signing added one)", async (t) => {
  const alice = newKey("alice");
  const dir = await writeTsModule(path.join(await tempDir(t), "m"), { name: "m" });
  for (let i = 0; i < 3; i++) await signModule(dir, alice);
  const text = await readFile(path.join(dir, "module.toml"), "utf8");
  t.is(text.match(/^# Written by modhost sign/gm)?.length, 1, text);
  t.is(text.match(/^\[binary\]$/gm)?.length, 1);
});

test("signing a manifest that carries several copies of that comment (written by earlier versions) leaves one, and the rest of the file as it was", async (t) => {
  const alice = newKey("alice");
  const dir = await writeTsModule(path.join(await tempDir(t), "m"), { name: "m" });
  await signModule(dir, alice);
  const file = path.join(dir, "module.toml");
  const once = await readFile(file, "utf8");
  const comment = once.slice(once.indexOf("# Written by modhost sign"), once.indexOf("[binary]"));
  await writeFile(file, once.replace(comment, `${comment}\n${comment}\n\n${comment}`));
  t.is((await readFile(file, "utf8")).match(/^# Written by modhost sign/gm)?.length, 3);
  await signModule(dir, alice);
  const unsigned = (text: string) => text.replace(/signature = "[^"]*"/g, 'signature = "…"');
  t.is(unsigned(await readFile(file, "utf8")), unsigned(once));
});

// ---------------------------------------------------------------------------------------
// The host: load, reload, restart

test("the host loads a signed module under \"require\" and refuses an unsigned one with the reason; the others run", async (t) => {
  const alice = newKey("alice");
  const base = await tempDir(t);
  const signed = await writeTsModule(path.join(base, "src", "signed"), { name: "signed" });
  await signWith(signed, [alice]);
  const unsigned = await writeTsModule(path.join(base, "src", "unsigned"), { name: "unsigned" });
  const files = async (dir: string) => Object.fromEntries(await Promise.all((await readdir(dir)).map(async (f) => [f, await readFile(path.join(dir, f), "utf8")])));
  const inline = {
    signed: { toml: (await files(signed))["module.toml"]!, files: await files(signed) },
    unsigned: { toml: (await files(unsigned))["module.toml"]!, files: await files(unsigned) },
  };
  const h = await startHost(t, {
    inline,
    configure: (c) => {
      c.trust.signatures = "require";
      trust(c, "signed", [alice]);
      trust(c, "unsigned", [alice]);
    },
  });
  const ok = await h.waitForState("signed", "running");
  t.regex(ok.verification ?? "", /^verified: sha256:[0-9a-f]{12}… signed by 1 of 1 required trusted keys \(alice; \[modules\.trust\.signed\] keys\)$/);
  const refused = await h.waitForState("unsigned", "failed");
  t.regex(refused.problem ?? "", /signature check failed for unsigned: module\.toml has no \[binary\] hash/);
  t.regex(refused.problem ?? "", /fix: have it signed: modhost sign/);
  await h.waitForLog(/failed to load unsigned: signature check failed/, { source: "host" });
  const audit = await readFile(h.config.host.audit_log, "utf8");
  t.regex(audit, /"module":"unsigned","action":"refused"/);
  t.regex(audit, /"module":"signed","action":"load".*"verification":"verified: /);
});

test("reload re-verifies: tampered code is refused, the verified version keeps running; re-signed code reloads", async (t) => {
  const alice = newKey("alice");
  const h = await startHost(t, {
    noStart: true,
    configure: (c) => {
      c.trust.signatures = "require";
      trust(c, "watched", [alice]);
    },
  });
  const dir = await writeTsModule(path.join(h.config.modules.modules_dir, "watched"), { name: "watched", body: 'ctx.log.info("code A");' });
  await signWith(dir, [alice]);
  await h.host.start();
  await h.waitForLog(/^code A$/, { source: "watched" });
  const pid = h.mustStatus("watched").pid;

  // Tamper: the module's file changes on disk; reload must not run it.
  await writeFile(path.join(dir, "index.ts"), (await readFile(path.join(dir, "index.ts"), "utf8")).replace("code A", "code B"));
  const err = await t.throwsAsync(h.manager.reload("watched"));
  t.regex(err!.message, /^reload of watched refused: integrity check failed for watched: what would run is sha256:[0-9a-f]{64}, but module\.toml \[binary\] hash says/);
  t.regex(err!.message, /the running version keeps running$/);
  t.regex((err as { hint?: string }).hint ?? "", /re-sign it/);
  const still = h.mustStatus("watched");
  t.is(still.state, "running");
  t.is(still.pid, pid, "the same, verified process");
  t.false(h.logsOf("watched").some((r) => r.message === "code B"));

  // Signed again by the trusted maintainer: the reload goes through and runs the new code.
  await signWith(dir, [alice]);
  const mark = h.mark();
  await h.manager.reload("watched");
  await h.waitForLog(/^code B$/, { source: "watched", since: mark });

  // A load after an unload verifies too.
  await h.manager.unload("watched");
  await appendFile(path.join(dir, "lib.ts"), "// tampered\n");
  const loadErr = await t.throwsAsync(h.manager.load("watched"));
  t.regex(loadErr!.message, /watched failed to load: integrity check failed for watched/);
});

test("a restart after a crash runs the verified snapshot again and re-checks trust against the current config", async (t) => {
  const alice = newKey("alice");
  const h = await startHost(t, {
    noStart: true,
    grants: { crashy: ["subscribe_events=NewBlock"] },
    limits: { restart: "on-failure", max_restarts: 5 },
    configure: (c) => {
      c.trust.signatures = "require";
      trust(c, "crashy", [alice]);
    },
  });
  const dir = await writeTsModule(path.join(h.config.modules.modules_dir, "crashy"), {
    name: "crashy",
    capabilities: ["subscribe_events=NewBlock"],
    body: 'ctx.log.info("snapshot v1"); await ctx.events.subscribe("NewBlock", () => { for (;;) {} });',
  });
  await signWith(dir, [alice]);
  await h.host.start();
  await h.waitForLog(/^snapshot v1$/, { source: "crashy" });

  // The code on disk changes (unsigned); then the module crashes (CPU watchdog) and restarts.
  await writeFile(path.join(dir, "index.ts"), (await readFile(path.join(dir, "index.ts"), "utf8")).replace("snapshot v1", "disk v2"));
  let mark = h.mark();
  await h.mine(1);
  await h.waitForEvent("ModuleRestarted", (p) => p.module === "crashy");
  await h.waitForLog(/^snapshot v1$/, { source: "crashy", since: mark });
  t.false(h.logsOf("crashy").some((r) => r.message === "disk v2"), "the unverified code on disk never ran");
  t.regex(h.mustStatus("crashy").verification ?? "", /^verified: /);

  // The operator withdraws trust; the next restart is refused.
  h.config.modules.trust["crashy"] = { keys: [newKey("other").publicKey], threshold: 1, signatures: "require" };
  mark = h.mark();
  await h.mine(1);
  const s = await h.waitForState("crashy", "failed", 15_000);
  t.regex(s.problem ?? "", /signature check failed for crashy: 0 of 1 required signature from trusted keys/);
  t.false(h.logsOf("crashy", mark).some((r) => /snapshot v1|disk v2/.test(r.message)));
});

test("native modules: the verified binary is executed from a private copy; a tampered binary is refused at reload", async (t) => {
  const built = path.join(ROOT, "modules", "rust-example", "target", "release", "rust-example");
  try {
    await access(built);
  } catch {
    t.fail(`this test needs the Rust example module built (npm run setup, or scripts/build-rust.sh): ${built} is missing`);
    return;
  }
  const alice = newKey("alice");
  const h = await startHost(t, { noStart: true, configure: (c) => { c.trust.signatures = "require"; trust(c, "rust-example", [alice]); }, grants: { "rust-example": ["read_blockchain", "read_chain_state", "subscribe_events=NewBlock", "read_storage", "write_storage", "register_rpc_endpoint", "report_metrics"] } });
  const dir = path.join(h.config.modules.modules_dir, "rust-example");
  await mkdir(path.join(dir, "bin"), { recursive: true });
  await writeFile(path.join(dir, "bin", "rust-example"), await readFile(built), { mode: 0o755 });
  const toml = (await readFile(path.join(ROOT, "modules", "rust-example", "module.toml"), "utf8")).replace('entry_point = "target/release/rust-example"', 'entry_point = "bin/rust-example"');
  await writeFile(path.join(dir, "module.toml"), toml);
  await signWith(dir, [alice]);
  await h.host.start();
  const s = await h.waitForState("rust-example", "running", 20_000);
  t.regex(s.verification ?? "", /^verified: /);
  const manifest = await loadManifest(path.join(dir, "module.toml"));
  t.is(`sha256:${s.sha256}`, manifest.binary?.hash ?? "(none)");
  // The copy that runs: in the host's run directory, read-only, same bytes.
  const copies = await waitFor(async () => {
    const out: string[] = [];
    for (const d of await readdir(tmpdir())) {
      if (!d.startsWith("modhost-run-")) continue;
      const native = path.join(tmpdir(), d, "native");
      for (const sub of await readdir(native).catch(() => [] as string[])) if (sub.startsWith("rust-example-")) out.push(path.join(native, sub, "rust-example"));
    }
    return out.length ? out : undefined;
  });
  const mine = [];
  for (const c of copies) {
    const bytes = await readFile(c).catch(() => undefined);
    if (bytes && `sha256:${(await import("node:crypto")).createHash("sha256").update(bytes).digest("hex")}` === manifest.binary!.hash) mine.push(c);
  }
  t.true(mine.length >= 1, "a private copy with the verified hash exists");
  t.is((await stat(mine[0]!)).mode & 0o777, 0o555);

  // Replacing the module's binary on disk: the reload is refused, the verified copy keeps running.
  await appendFile(path.join(dir, "bin", "rust-example"), Buffer.from([0]));
  const err = await t.throwsAsync(h.manager.reload("rust-example"));
  t.regex(err!.message, /integrity check failed for rust-example: what would run is sha256:[0-9a-f]{64}, but module\.toml \[binary\] hash says .* \(hashed: bin\/rust-example\)/);
  t.is(h.mustStatus("rust-example").state, "running");
});

test("modhost check shows each module's verification and counts refusals as problems", async (t) => {
  const alice = newKey("alice");
  const dir = await tempDir(t);
  const mods = path.join(dir, "modules");
  await signWith(await writeTsModule(path.join(mods, "good-one"), { name: "good-one" }), [alice]);
  await writeTsModule(path.join(mods, "dev-one"), { name: "dev-one" });
  await signWith(await writeTsModule(path.join(mods, "bad-one"), { name: "bad-one" }), [newKey("mallory")]);
  await writeFile(path.join(dir, "modhost.toml"), [
    "[modules]", 'modules_dir = "modules"', "",
    "[trust]", 'signatures = "require"', 'publisher = "core"', "",
    "[trust.publishers.core]", `keys = ["${alice.publicKey}"]`, "",
    "[modules.trust.dev-one]", 'signatures = "allow-unsigned"', "",
  ].join("\n"));
  const r = await modhost(["check", "--config", path.join(dir, "modhost.toml")]);
  t.is(r.exitCode, 1, r.all);
  t.regex(r.stdout, /✓ good-one 1\.0\.0 \(isolate\)\n\s+verified: sha256:[0-9a-f]{12}… signed by 1 of 1 required trusted keys \(alice; publisher "core"\)/);
  t.regex(r.stdout, /✓ dev-one 1\.0\.0 \(isolate\)\n\s+UNVERIFIED \(signatures = "allow-unsigned"\): no \[binary\] hash/);
  t.regex(r.stdout, /✗ bad-one 1\.0\.0 \(isolate\)\n\s+signature check failed for bad-one: 0 of 1 required signature from trusted keys; signed by: mallory/);
  t.regex(r.stdout, /1 problem\(s\) found/);
});
