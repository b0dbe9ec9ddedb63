// A TypeScript module's storage transaction leaves its isolate as MessagePack made inside the
// isolate (runtime/isolate/in-isolate/pack.ts) and goes into the frame as it is; the host
// decodes it with every limit of the codec. Checked here: the bytes decode to what the isolate
// host's own encoder would have sent, the parts each fit one message and lose nothing, what the
// encoder does not handle goes the old way, and a module that corrupts the encoder gets its
// transaction refused by the host's decoder (nothing written, the module still running).

import test from "ava";
import { decodeBody, DEFAULT_BODY_LIMITS, encodeBody, encodeEnvelopeParts, MAX_VALUE_DEPTH } from "../protocol/codec.ts";
import { startHost } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";

// Written in when the bootstrap is built (runtime/isolate/bootstrap.ts); read when the encoder runs.
(globalThis as { __MODHOST_MAX_VALUE_DEPTH__?: number }).__MODHOST_MAX_VALUE_DEPTH__ = MAX_VALUE_DEPTH;
const { packOps, packParams } = await import("../runtime/isolate/in-isolate/pack.ts");

/** The request as the host receives it, decoded with the limits it applies to every module's frame. */
const received = (params: Uint8Array): { params: Record<string, unknown> } =>
  decodeBody(Buffer.concat(encodeEnvelopeParts({ t: "request", id: 7, method: "storage_transaction" }, "params", Buffer.from(params), DEFAULT_BODY_LIMITS)), DEFAULT_BODY_LIMITS) as { params: Record<string, unknown> };

/** What the isolate host's encoder sends for the same params, decoded the same way. */
const viaOldPath = (params: Record<string, unknown>) => (decodeBody(encodeBody({ t: "request", id: 7, method: "storage_transaction", params }), DEFAULT_BODY_LIMITS) as { params: unknown }).params;

test("the isolate's transaction encoder: the host decodes its bytes to what the isolate host's encoder sends, for every kind of plain value", (t) => {
  const ints = [0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1, -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1, -(2 ** 53 - 1)];
  const floats = [0.5, -1.25, 1e300, Number.MAX_SAFE_INTEGER * 4, Number.NaN, Number.POSITIVE_INFINITY, -0];
  const strings = ["", "a", "x".repeat(31), "x".repeat(32), "y".repeat(255), "y".repeat(256), "z".repeat(70_000), "héllo", "€uro", "😀 emoji", "ü".repeat(40)];
  const ops: unknown[] = [
    ...ints.map((v, i) => ({ op: "put", key: `int:${i}`, value: v })),
    ...floats.map((v, i) => ({ op: "put", key: `float:${i}`, value: v })),
    ...strings.map((v, i) => ({ op: "put", key: `str:${i}:${v.slice(0, 8)}`, value: v })),
    { op: "put", key: "bin", value: new Uint8Array([0, 1, 2, 255]) },
    { op: "put", key: "bin-large", value: new Uint8Array(70_000).fill(7) },
    { op: "put", key: "nested", value: { a: [1, [2, [3, { b: null, c: true, d: false }]]], e: { f: "g" }, skipped: undefined, holes: [1, undefined, 3] } },
    { op: "put", key: "wide", value: Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i])) },
    { op: "put", key: "long-array", value: Array.from({ length: 20_000 }, (_, i) => i % 3) },
    { op: "put", key: "null-proto", value: Object.assign(Object.create(null) as object, { x: 1 }) },
    { op: "put", key: "deep", value: JSON.parse("[".repeat(MAX_VALUE_DEPTH - 2) + "1" + "]".repeat(MAX_VALUE_DEPTH - 2)) as unknown },
    { op: "delete", key: "gone" },
  ];
  const packed = packOps("tree-ü", ops);
  if (!packed) return t.fail("the encoder gave up on plain data");
  t.is(packed.parts.length, 1, "one part: within one message's weight");
  t.deepEqual(received(packParams(packed, 0, undefined)).params, viaOldPath({ tree: "tree-ü", ops }));
});

test("the isolate's transaction encoder gives up, so that the old path names the problem, on what it does not write as the isolate host would", (t) => {
  const cyclic: Record<string, unknown> = { a: 1 };
  cyclic.self = cyclic;
  const cases: Record<string, unknown> = {
    "a lone surrogate": "\ud800x",
    "a lone low surrogate": "x\udc00",
    "a Date": new Date(0),
    "a Map": new Map([["a", 1]]),
    "a function": () => 1,
    "a bigint": 10n,
    "a class instance": new (class Point { x = 1; })(),
    "another typed array": new Uint16Array(2),
    "a value that contains itself": cyclic,
    "a value nested past the protocol's depth": JSON.parse("[".repeat(MAX_VALUE_DEPTH + 1) + "]".repeat(MAX_VALUE_DEPTH + 1)) as unknown,
    "a __proto__ key": JSON.parse('{"__proto__": 1}') as unknown,
    "one op over a part's weight (768 KiB of strings)": "s".repeat(800 * 1024),
  };
  for (const [what, value] of Object.entries(cases)) t.is(packOps("t", [{ op: "put", key: "k", value }]), undefined, what);
  t.is(packOps("t", Array.from({ length: 10_001 }, (_, i) => ({ op: "delete", key: `k${i}` }))), undefined, "more ops than a transaction may have (10000)");
  const mib = new Uint8Array(1024 * 1024);
  t.is(packOps("t", Array.from({ length: 40 }, (_, i) => ({ op: "put", key: `k${i}`, value: mib }))), undefined, "more than 32 MiB over all parts (what the host holds of a transaction in parts)");
  t.is(packOps("\ud800", [{ op: "delete", key: "k" }]), undefined, "a tree name that is not valid UTF-8");
  t.is(packOps(5, [{ op: "delete", key: "k" }]), undefined, "a tree name that is not a string");
  t.truthy(packOps("t", [{ op: "put", key: "k", value: 1 }]), "while a plain op is encoded");
});

test("9,000 indexer-shaped puts: parts that each decode within one message's limits, in order, with every op once", (t) => {
  const ops: unknown[] = [];
  for (let n = 0; n < 3000; n++) {
    const txid = n.toString(16).padStart(64, "0");
    ops.push({ op: "put", key: `tx:${txid}`, value: { height: 100, index: n, vsize: 141 } });
    ops.push({ op: "put", key: `out:${txid}:0`, value: { value: 5000, address: `bcrt1q${txid.slice(0, 36)}` } });
    ops.push({ op: "put", key: `blk:100:${n}`, value: txid });
  }
  const packed = packOps("idx", ops);
  if (!packed) return t.fail("the encoder gave up");
  t.true(packed.parts.length >= 2, `over one message's limits: ${packed.parts.length} parts`);
  const all: unknown[] = [];
  for (let i = 0; i < packed.parts.length; i++) {
    const more = i < packed.parts.length - 1;
    // decodeBody throws past any limit (max_values, max_total_string_bytes, max_map_keys...).
    const { params } = received(packParams(packed, i, { id: 3, more }));
    t.deepEqual(params.part, { id: 3, more }, `part ${i}`);
    t.is(params.tree, "idx");
    all.push(...(params.ops as unknown[]));
  }
  t.deepEqual(all, ops, "every op, once, in order");
});

const CAPS = ["read_storage", "write_storage"];
const VALUES = inlineModule("pack-values", CAPS, `
  await ctx.storage.openTree("v");
  const values: Record<string, unknown> = {
    big: 2 ** 40, neg: -(2 ** 35), small: -5, float: 1.5, text: "héllo 😀", bin: new Uint8Array([1, 2, 3]),
    nested: { a: [1, { b: [null, true] }], skipped: undefined }, long: "x".repeat(300),
  };
  await ctx.storage.transaction("v", Object.entries(values).map(([key, value]) => ({ op: "put", key, value })));
  const back: Record<string, unknown> = {};
  for (const key of Object.keys(values)) {
    const v = await ctx.storage.get("v", key);
    back[key] = v instanceof Uint8Array ? "bin:" + Array.from(v).join(",") : v;
  }
  let dated: string;
  try { await ctx.storage.transaction("v", [{ op: "put", key: "d", value: new Date(0) }]); dated = "written"; } catch (e: any) { dated = e.code; }
  ctx.log.info("BACK", { back, dated, has_d: await ctx.storage.has("v", "d") });
`);

test("through the real host: a transaction's values read back as written, and a value the encoder gives up on is refused by the old path as before", async (t) => {
  const h = await startHost(t, { inline: { "pack-values": VALUES }, grants: { "pack-values": CAPS } });
  const f = (await h.waitForLog(/^BACK$/, { source: "pack-values", timeoutMs: 60_000 })).fields as Record<string, unknown>;
  t.deepEqual(f.back, { big: 2 ** 40, neg: -(2 ** 35), small: -5, float: 1.5, text: "héllo 😀", bin: "bin:1,2,3", nested: { a: [1, { b: [null, true] }] }, long: "x".repeat(300) });
  t.is(f.dated, "not_plain_data", "a Date: the isolate host's encoder refuses it, as before");
  t.is(f.has_d, false);
});

// The module breaks a builtin the encoder uses (DataView's setUint16 writes the length of an
// array of 16 or more items): the bytes that leave the isolate announce 0 ops and carry 20.
const CORRUPT = inlineModule("pack-corrupt", CAPS, `
  await ctx.storage.openTree("c");
  const ops = Array.from({ length: 20 }, (_, i) => ({ op: "put", key: "k" + i, value: i }));
  const setUint16 = DataView.prototype.setUint16;
  DataView.prototype.setUint16 = function () {};
  let corrupted: string;
  try { await ctx.storage.transaction("c", ops); corrupted = "written"; } catch (e: any) { corrupted = e.code + ": " + e.message; }
  DataView.prototype.setUint16 = setUint16;
  const keysAfterCorrupt = (await ctx.storage.usage()).keys;
  await ctx.storage.transaction("c", ops);
  ctx.log.info("CORRUPT", { corrupted, keysAfterCorrupt, keysAfter: (await ctx.storage.usage()).keys });
`);

test("attack: a module that corrupts the in-isolate encoder gets its transaction refused by the host's decoder; nothing is written and the module runs on", async (t) => {
  const h = await startHost(t, { inline: { "pack-corrupt": CORRUPT }, grants: { "pack-corrupt": CAPS } });
  const f = (await h.waitForLog(/^CORRUPT$/, { source: "pack-corrupt", timeoutMs: 60_000 })).fields as Record<string, unknown>;
  t.regex(String(f.corrupted), /^invalid_message: /, "the host refused the frame");
  t.is(f.keysAfterCorrupt, 0, "nothing of it was written");
  t.is(f.keysAfter, 20, "the module's next transaction is written");
  t.is(h.mustStatus("pack-corrupt").state, "running");
});
