// The signature of a delivery: HMAC-SHA256 over the exact bytes of the body, keyed with the
// webhook's secret (UTF-8), sent as `X-Modhost-Signature: sha256=<lowercase hex>`.
//
// The isolate has no WebCrypto and no TextEncoder, so the hash comes from @noble/hashes (the
// project's own dependency, vendored unchanged into ./vendor/noble-hashes: a module may bundle
// only its own files; test/governance-webhook.test.ts checks the copy is byte-identical to the
// installed package) and UTF-8 is encoded here.
import { hmac } from "./vendor/noble-hashes/hmac.js";
import { sha256 } from "./vendor/noble-hashes/sha2.js";

/** UTF-8 bytes of a string, as TextEncoder gives them (a lone surrogate becomes U+FFFD). */
export function utf8(s: string): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      } else c = 0xfffd;
    } else if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return Uint8Array.from(out);
}

function hex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/** The value of X-Modhost-Signature for `body` under `secret`. */
export function signature(secret: string, body: Uint8Array): string {
  return `sha256=${hex(hmac(sha256, utf8(secret), body))}`;
}

/** A short, stable name for a URL (storage keys of its lane): 16 hex digits of its SHA-256. */
export function laneId(url: string): string {
  return hex(sha256(utf8(url))).slice(0, 16);
}
