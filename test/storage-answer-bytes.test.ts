// A storage_get whose stored value is already the answer's bytes is sent as they are
// (PreEncoded: protocol/codec.ts), neither decoded nor encoded again. Storage writes integers
// past 32 bits as int64, as the wire does; values written before hold them as float64 and are
// decoded and encoded as before, so a typed reader (a Rust u64) still gets an int64.

import path from "node:path";
import test from "ava";
import { ClassicLevel } from "classic-level";
import { Packr } from "msgpackr";
import { decodeBody, DEFAULT_BODY_LIMITS, encodeEnvelope, HOST_BODY_LIMITS, PreEncoded, sentAsIs, type BodyLimits } from "../protocol/codec.ts";
import { decodeValue, encodeValue } from "../storage/codec.ts";
import { ModuleStore } from "../storage/store.ts";
import { startHost, tempDir, testConfig } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";

/** The encoder storage used before integers past 32 bits were written as int64. */
const before = new Packr({ useRecords: false, variableMapSize: true });

/** Every kind of stored value, by name. */
const KINDS: Record<string, unknown> = {
  int2p31: 2 ** 31,
  int2p32: 2 ** 32,
  maxSafe: 2 ** 53 - 1,
  minSafe: -(2 ** 53 - 1),
  negBelow32: -(2 ** 31) - 1,
  neg: -5,
  small: 7,
  unsafeInt: 2 ** 60,
  float: 1.5,
  negFloat: -2.25,
  negZero: -0,
  string: "héllo wörld",
  empty: "",
  binary: new Uint8Array([0, 1, 2, 250, 255]),
  nested: { a: { b: [1, 2 ** 40, { c: "x", d: new Uint8Array([9]) }], e: null, f: true }, "7": -(2 ** 35), g: [] },
  list: [2 ** 33, -1.25, "s", false, null, { h: 2 ** 32 + 1 }],
};

/** What a module reads back: -0 as 0 (MessagePack has no negative-zero integer). */
const readBack = (v: unknown): unknown => (Object.is(v, -0) ? 0 : v);

const HEAD = { t: "response", id: 12 };
/** JSON with binary as {bin: [...]}, so that an array read back for binary does not pass. */
const json = (v: unknown): string =>
  // The holder's own field (this[k]): a Buffer's toJSON has already run on x.
  JSON.stringify(v, function (this: Record<string, unknown>, k: string, x: unknown) {
    const own = this[k];
    return own instanceof Uint8Array ? { bin: [...own] } : x;
  });
const hex = (parts: Buffer[]): string => Buffer.concat(parts).toString("hex");
/** A float64 holding `n`, and an int64 holding it, as MessagePack writes them. */
const float64Of = (n: number): string => { const b = Buffer.alloc(9); b[0] = 0xcb; b.writeDoubleBE(n, 1); return b.toString("hex"); };
const int64Of = (n: number): string => { const b = Buffer.alloc(9); b[0] = 0xd3; b.writeBigInt64BE(BigInt(n), 1); return b.toString("hex"); };

test("every value kind, stored by the current encoder or by the one before, is answered with the bytes decoding and encoding it gives, integers past 32 bits as int64", (t) => {
  const tight: BodyLimits = { maxValues: 40, maxMapKeys: 20, maxDepth: 4, maxStringBytes: 8, maxBinaryBytes: 4, maxTotalStringBytes: 8192 + 40 };
  for (const [name, value] of Object.entries(KINDS)) {
    const stored = { now: Buffer.from(encodeValue(value, 1 << 20)), before: before.pack(value) };
    // The two encoders differ only in integers past 32 bits, and a stored value is as long either way (quota).
    t.is(stored.now.length, stored.before.length, name);
    for (const [which, bytes] of Object.entries(stored)) {
      t.deepEqual(decodeValue(bytes), value instanceof Uint8Array ? value : readBack(value), `${name} (${which}) decodes to what was written`);
      for (const limits of [HOST_BODY_LIMITS, DEFAULT_BODY_LIMITS, tight]) {
        const run = (v: unknown): string => { try { return hex(encodeEnvelope(HEAD, "result", v, limits)); } catch (err) { return String(err); } };
        const asIs = run(new PreEncoded(bytes, decodeValue as (b: Buffer) => unknown));
        t.is(asIs, run(decodeValue(bytes)), `${name} (${which}, maxValues ${limits.maxValues}): the same answer (or refusal) as decoding and encoding it`);
        if (asIs.startsWith("EncodeError")) continue;
        t.is(json(decodeBody(Buffer.from(asIs, "hex"), HOST_BODY_LIMITS)), json({ ...HEAD, result: readBack(value) }), `${name} (${which}) reads back`);
      }
    }
    // Sent as stored: every value written now (under the host's limits); one written before only without integers past 32 bits.
    t.true(sentAsIs(stored.now, HOST_BODY_LIMITS), `${name} written now is sent as stored`);
    if (!stored.now.equals(stored.before)) t.false(sentAsIs(stored.before, HOST_BODY_LIMITS), `${name} written before is re-encoded`);
  }
  // The bytes: 2^40 as int64 whichever encoder stored it, never as float64.
  for (const bytes of [before.pack({ x: 2 ** 40 }), Buffer.from(encodeValue({ x: 2 ** 40 }, 1024))]) {
    const answer = hex(encodeEnvelope(HEAD, "result", new PreEncoded(bytes, decodeValue as (b: Buffer) => unknown), HOST_BODY_LIMITS));
    t.true(answer.includes(int64Of(2 ** 40)), "int64");
    t.false(answer.includes(float64Of(2 ** 40)), "no float64");
  }
});

test("stored bytes that are not the wire's form or not plain data are not sent as they are: float32, float64 of an integer, uint64, int64 of a 32-bit integer, extensions, non-string keys, __proto__ keys, trailing or missing bytes", (t) => {
  const cases: Record<string, string> = {
    float32: "ca3fc00000",
    float64OfInteger: float64Of(2 ** 40),
    float64OfNegZero: float64Of(-0),
    uint64: "cf0000010000000000",
    int64Of32Bit: int64Of(5),
    ext: "d40100",
    intKey: "810102",
    proto: "81a95f5f70726f746f5f5f01",
    trailing: "0101",
    truncatedMap: "82a16101",
    deep: "91".repeat(80) + "01",
  };
  for (const [name, h] of Object.entries(cases)) t.false(sentAsIs(Buffer.from(h, "hex"), HOST_BODY_LIMITS), name);
  t.true(sentAsIs(Buffer.from(int64Of(2 ** 40), "hex"), HOST_BODY_LIMITS), "int64 past 32 bits is the wire's form");
  t.true(sentAsIs(Buffer.from(float64Of(1.5), "hex"), HOST_BODY_LIMITS), "a float64 of a fraction is");
});

test("a TypeScript module reads back every value kind through storage_get, written by it or by the encoder before (float64 integers), identically", async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const storeDir = path.join(testConfig(dir, path.join(dir, "modules")).storage.dir, "reader");
  // Values written before: put (so that the quota counts them), then their bytes replaced by the former encoder's, as long.
  const store = await ModuleStore.open(storeDir);
  await store.openTree("vals");
  for (const [name, value] of Object.entries(KINDS)) await store.put("vals", `old-${name}`, value);
  await store.close();
  const raw = new ClassicLevel<string, Uint8Array>(storeDir, { keyEncoding: "utf8", valueEncoding: "view" });
  const tree = raw.sublevel<string, Uint8Array>("t:vals", { keyEncoding: "utf8", valueEncoding: "view" });
  let replaced = 0;
  for (const [name, value] of Object.entries(KINDS)) {
    const old = before.pack(value);
    const now = await tree.get(`old-${name}`);
    t.is(now?.length, old.length, `old-${name} is stored`);
    if (!Buffer.from(now!).equals(old)) replaced++;
    await tree.put(`old-${name}`, old);
  }
  await raw.close();
  t.true(replaced >= 6, "values with integers past 32 bits now hold float64s");

  const reader = inlineModule("reader", ["read_storage", "write_storage"], `
    const json = (v) => JSON.stringify(v, (_k, x) => (x instanceof Uint8Array ? { bin: [...x] } : x));
    const revive = (v) => JSON.parse(v, (_k, x) => (x !== null && typeof x === "object" && Array.isArray(x.bin) ? new Uint8Array(x.bin) : x));
    const kinds = revive(${JSON.stringify(json(KINDS))});
    await ctx.storage.openTree("vals");
    for (const [name, v] of Object.entries(kinds)) await ctx.storage.put("vals", "new-" + name, v);
    const got = {};
    for (const which of ["new", "old"]) for (const name of Object.keys(kinds)) got[which + "-" + name] = json(await ctx.storage.get("vals", which + "-" + name));
    ctx.log.info("read", { got: JSON.stringify(got) });
  `);
  const h = await startHost(t, { dir, modules: [], inline: { reader }, grants: { reader: ["read_storage", "write_storage"] } });
  const rec = await h.waitForLog(/^read$/, { source: "reader", timeoutMs: 90_000 });
  const got = JSON.parse((rec.fields as { got: string }).got) as Record<string, string>;
  for (const [name, v] of Object.entries(KINDS)) {
    const want = json(readBack(v));
    t.is(got[`new-${name}`], want, `new-${name}`);
    t.is(got[`old-${name}`], want, `old-${name}`);
  }
});
