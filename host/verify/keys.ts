// secp256k1 keys and signatures for modules and registry indexes.
//
// A signer is identified by the x coordinate of its public key (32 bytes, "x-only" as in
// BIP340): a compressed key 02||x or 03||x and the x-only key x are the same signer (whoever
// can sign for one can sign for the other). Operators pin keys in either form; modhost keeps
// the x-only hex.
//
// Schemes, both over a 32-byte digest that the caller computed:
//   schnorr (default): BIP340, 64-byte signature, x-only (or compressed) key.
//   ecdsa:             64-byte compact r||s or DER, low S, compressed key (33 bytes), no
//                      further hashing of the digest.

import { chmod, readFile, stat, writeFile } from "node:fs/promises";
import { schnorr, secp256k1 } from "@noble/curves/secp256k1.js";
import { bytesToHex, hexToBytes } from "@noble/curves/utils.js";
import { parse, TomlError } from "smol-toml";
import { ModhostError } from "../errors.ts";

export type Scheme = "schnorr" | "ecdsa";

export interface SecretKey {
  /** Who holds it (written into signatures as `name`). */
  name: string;
  secret: Uint8Array;
  /** x-only hex. */
  publicKey: string;
  /** Compressed (33-byte) hex, for ECDSA. */
  compressed: string;
  file?: string;
}

const HEX_RE = /^[0-9a-fA-F]*$/;

/** The x-only hex of a public key written as 64 hex (x-only) or 66 hex (compressed); undefined when it is not a point on the curve. */
export function xOnlyKey(text: string): string | undefined {
  const hex = text.trim().toLowerCase();
  if (!HEX_RE.test(hex)) return undefined;
  try {
    if (hex.length === 64) {
      schnorr.utils.lift_x(BigInt(`0x${hex}`));
      return hex;
    }
    if (hex.length === 66 && /^0[23]/.test(hex)) {
      secp256k1.Point.fromHex(hex);
      return hex.slice(2);
    }
  } catch {
    return undefined;
  }
  return undefined;
}

/** "ab12cd34…ef" for messages: enough to recognise a key. */
export function shortKey(xonly: string): string {
  return xonly.length > 20 ? `${xonly.slice(0, 8)}…${xonly.slice(-4)}` : xonly;
}

export function generateSecretKey(): Uint8Array {
  return schnorr.utils.randomSecretKey();
}

export function secretKeyFromBytes(secret: Uint8Array, name: string, file?: string): SecretKey {
  if (secret.length !== 32) throw new ModhostError("bad_key", "a secret key is 32 bytes");
  let pub: Uint8Array;
  try {
    pub = schnorr.getPublicKey(secret);
  } catch {
    throw new ModhostError("bad_key", "not a valid secp256k1 secret key");
  }
  const out: SecretKey = { name, secret, publicKey: bytesToHex(pub), compressed: bytesToHex(secp256k1.getPublicKey(secret, true)) };
  if (file !== undefined) out.file = file;
  return out;
}

/** Sign a 32-byte digest. */
export function signDigest(digest: Uint8Array, key: SecretKey, scheme: Scheme = "schnorr", auxRand?: Uint8Array): string {
  if (digest.length !== 32) throw new Error("signDigest: a digest is 32 bytes");
  if (scheme === "schnorr") return bytesToHex(schnorr.sign(digest, key.secret, auxRand));
  return bytesToHex(secp256k1.sign(digest, key.secret, { prehash: false, lowS: true, format: "compact" }));
}

/**
 * Whether `signature` (hex) is a valid signature of `digest` by `key` (hex, as written in a
 * manifest: x-only or compressed). Never throws; malformed input is simply not valid.
 */
export function verifyDigest(digest: Uint8Array, signature: string, key: string, scheme: Scheme = "schnorr"): boolean {
  try {
    const sig = hexToBytes(signature.toLowerCase());
    const k = key.toLowerCase();
    if (scheme === "schnorr") {
      if (sig.length !== 64) return false;
      const x = k.length === 66 ? k.slice(2) : k;
      if (x.length !== 64) return false;
      return schnorr.verify(sig, digest, hexToBytes(x));
    }
    if (k.length !== 66) return false;
    const format = sig.length === 64 ? "compact" : "der";
    return secp256k1.verify(sig, digest, hexToBytes(k), { prehash: false, lowS: true, format });
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------
// Key files

const KEY_FILE_HEADER = `# modhost secret key. Keep it secret: whoever holds it can sign as you.
# Give operators the public key to pin in modhost.toml; never this file.
`;

export function keyFileText(key: SecretKey): string {
  return `${KEY_FILE_HEADER}name = ${JSON.stringify(key.name)}\nsecret_key = "${bytesToHex(key.secret)}"\npublic_key = "${key.publicKey}"\npublic_key_compressed = "${key.compressed}"\n`;
}

/** Write a new key file with mode 0600; refuses to overwrite one. */
export async function writeKeyFile(file: string, key: SecretKey, overwrite = false): Promise<void> {
  try {
    await writeFile(file, keyFileText(key), { mode: 0o600, flag: overwrite ? "w" : "wx" });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") {
      throw new ModhostError("exists", `${file} already exists; not overwriting a key`, "choose another --out file, or delete the old key if you really mean to replace it");
    }
    throw err;
  }
  await chmod(file, 0o600);
}

/** Read a key file written by `modhost keygen`. Warns (via `warn`) when others can read it. */
export async function readKeyFile(file: string, warn: (msg: string) => void = () => {}): Promise<SecretKey> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new ModhostError("not_found", `cannot read the key file ${file}: ${(err as Error).message}`, "create one with modhost keygen --out FILE");
  }
  const st = await stat(file);
  if ((st.mode & 0o077) !== 0) warn(`${file} is readable by other users (mode ${(st.mode & 0o777).toString(8)}): chmod 600 ${file}`);
  let data: Record<string, unknown>;
  try {
    data = parse(text) as Record<string, unknown>;
  } catch (err) {
    throw new ModhostError("bad_key", `${file} is not a modhost key file: ${err instanceof TomlError ? err.message.split("\n")[0] : (err as Error).message}`, "create one with modhost keygen --out FILE");
  }
  const secret = data["secret_key"];
  if (typeof secret !== "string" || !/^[0-9a-fA-F]{64}$/.test(secret)) {
    throw new ModhostError("bad_key", `${file} has no secret_key of 64 hex characters`, "create a key file with modhost keygen --out FILE");
  }
  const name = typeof data["name"] === "string" && data["name"] !== "" ? data["name"] : "maintainer";
  const key = secretKeyFromBytes(hexToBytes(secret.toLowerCase()), name, file);
  const declared = data["public_key"];
  if (typeof declared === "string" && xOnlyKey(declared) !== key.publicKey) {
    throw new ModhostError("bad_key", `${file}: public_key does not belong to secret_key`, "regenerate the file with modhost keygen");
  }
  return key;
}
