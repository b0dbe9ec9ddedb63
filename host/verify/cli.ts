// The maintainer commands:
//
//   modhost keygen [--out FILE] [--name NAME]          a secret key file (0600); prints the public key
//   modhost sign MODULE_DIR --key FILE [--scheme S]    set [binary] hash and add this key's signature
//   modhost verify MODULE_DIR [--config FILE] [--trust-key HEX ... --threshold N]
//                                                      what `modhost run` would decide, and why

import { existsSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { bytesToHex } from "@noble/curves/utils.js";
import { defaultConfig, loadConfig, type HostConfig } from "../config.ts";
import { ModhostError } from "../errors.ts";
import { loadManifest } from "../manifest.ts";
import { generateSecretKey, readKeyFile, secretKeyFromBytes, shortKey, writeKeyFile, xOnlyKey, type Scheme } from "./keys.ts";
import { checkModule } from "./module.ts";
import { signModule } from "./sign.ts";
import { describeRoot } from "./trust.ts";

export const VERIFY_HELP = `Signing modules (docs/signing.md):
  modhost keygen [--out FILE] [--name NAME]
                                  make a secret key file (mode 0600) and print its public key
  modhost sign DIR --key FILE [--scheme schnorr|ecdsa]
                                  set [binary] hash in DIR/module.toml and add this key's signature
  modhost verify DIR [--config FILE] [--trust-key HEX ...] [--threshold N]
                                  check a module's hash, signatures and compatibility as the host would`;

export async function configFrom(file: string | undefined): Promise<HostConfig> {
  if (file) return loadConfig(file);
  if (existsSync("modhost.toml")) return loadConfig("modhost.toml");
  return defaultConfig(process.cwd());
}

export async function keygenCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { out: { type: "string", short: "o" }, name: { type: "string" } }, strict: true });
  const out = path.resolve(values.out ?? "modhost-key.toml");
  const key = secretKeyFromBytes(generateSecretKey(), values.name ?? "maintainer", out);
  await writeKeyFile(out, key);
  console.log([
    `wrote a new secret key for "${key.name}" to ${out} (mode 0600): keep it secret, and back it up`,
    `public key:              ${key.publicKey}`,
    `public key (compressed): ${key.compressed}`,
    "",
    "sign a module with it:  modhost sign MODULE_DIR --key " + path.relative(process.cwd(), out),
    "operators who trust you pin the public key in modhost.toml, e.g.:",
    "  [modules.trust.MODULE]",
    `  keys = ["${key.publicKey}"]`,
  ].join("\n"));
  return 0;
}

export async function signCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { key: { type: "string", short: "k" }, scheme: { type: "string", default: "schnorr" } },
    allowPositionals: true,
    strict: true,
  });
  const dir = positionals[0];
  if (!dir || !values.key) throw new ModhostError("usage", "usage: modhost sign MODULE_DIR --key FILE [--scheme schnorr|ecdsa]");
  if (values.scheme !== "schnorr" && values.scheme !== "ecdsa") throw new ModhostError("usage", `--scheme must be schnorr or ecdsa, not "${values.scheme}"`);
  const key = await readKeyFile(values.key, (w) => console.error(`warning: ${w}`));
  const r = await signModule(dir, key, { scheme: values.scheme as Scheme });
  const lines = [
    `${r.replaced ? "replaced" : "added"} the signature of ${key.name} (${key.publicKey}) in ${r.file}`,
    `[binary] hash = "${r.snapshot.hash}" (${r.snapshot.size} bytes: ${r.snapshot.files.map((f) => f.path).join(", ")})`,
    `signed digest: ${bytesToHex(r.digest)}`,
    `signatures now: ${r.signatures.map((s) => `${s.name} (${shortKey(xOnlyKey(s.key) ?? s.key)})`).join(", ")}`,
  ];
  if (r.dropped.length > 0) lines.push(`dropped (they signed a different manifest or code; ask them to sign again): ${r.dropped.join(", ")}`);
  console.log(lines.join("\n"));
  return 0;
}

export async function verifyCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      config: { type: "string", short: "c" },
      "trust-key": { type: "string", multiple: true },
      threshold: { type: "string" },
    },
    allowPositionals: true,
    strict: true,
  });
  const dir = positionals[0];
  if (!dir) throw new ModhostError("usage", "usage: modhost verify MODULE_DIR [--config FILE] [--trust-key HEX ...] [--threshold N]");
  const config = await configFrom(values.config);
  const manifest = await loadManifest(path.join(dir, "module.toml"));
  if (values["trust-key"]?.length) {
    const keys = values["trust-key"].map((k) => {
      const x = xOnlyKey(k);
      if (!x) throw new ModhostError("usage", `--trust-key ${k} is not a secp256k1 public key`);
      return x;
    });
    const threshold = values.threshold ? Number(values.threshold) : 1;
    if (!Number.isInteger(threshold) || threshold < 1 || threshold > keys.length) throw new ModhostError("usage", `--threshold must be from 1 to ${keys.length}`);
    config.modules.trust[manifest.name] = { ...config.modules.trust[manifest.name], keys: [...new Set(keys)], threshold };
    delete config.modules.trust[manifest.name]!.publisher;
  }
  const { report, snapshot, problem } = await checkModule(manifest, config);
  const out = [`module:     ${manifest.name} ${manifest.version} (${manifest.runtime}) in ${manifest.dir}`, `config:     ${config.file ?? "(defaults: no modhost.toml)"}`];
  if (snapshot) {
    const pinned = manifest.binary?.hash;
    out.push(`hash:       ${snapshot.hash} ${pinned === undefined ? "(not pinned: no [binary] hash)" : pinned === snapshot.hash ? "(matches [binary] hash)" : `(MISMATCH: [binary] hash says ${pinned})`}`);
    out.push(`files:      ${snapshot.files.map((f) => `${f.path} (${f.size} bytes, ${f.sha256.slice(0, 12)}…)`).join(", ")}`);
    out.push(`digest:     ${bytesToHex(snapshot.digest)} (canonical manifest, docs/signing.md)`);
  }
  if (report) {
    out.push(`policy:     signatures = "${report.policy}"`, `trusted:    ${describeRoot(report.root)}`);
    const checks = report.signatures.checks;
    if (checks.length === 0) out.push("signatures: none");
    for (const c of checks) {
      const what = [c.valid ? "valid" : "INVALID", c.trusted ? "trusted" : "not trusted"];
      if (c.counted) what.push("counted");
      else if (c.valid && c.trusted) what.push("same signer: not counted again");
      out.push(`signature:  ${c.name} ${c.signer ?? c.key} (${c.scheme}): ${what.join(", ")}`);
    }
    out.push(`count:      ${report.signatures.count} of ${report.signatures.threshold} required from trusted keys`);
    for (const w of report.warnings) out.push(`warning:    ${w}`);
    out.push(report.ok ? `result:     OK: ${report.summary}` : `result:     REFUSED: ${problem ?? ""}`);
  } else {
    out.push(`result:     REFUSED: ${problem ?? ""}`);
  }
  console.log(out.join("\n"));
  return report?.ok ? 0 : 1;
}
