import test from "ava";
import type { ExecutionContext } from "ava";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ClassicLevel } from "classic-level";
import { ModuleStore, StorageError, DEFAULT_QUOTA } from "../storage/store.ts";
import type { BatchOp, IterPage, StorageQuota } from "../storage/store.ts";
import { encodeValue } from "../storage/codec.ts";
import { hostBytes } from "../protocol/host-bytes.ts";

async function tempDir(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "modhost-storage-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Opens a store in a fresh temp dir with tree "t" created; closed + removed on teardown. */
async function freshStore(t: ExecutionContext, quota?: Partial<StorageQuota>): Promise<{ store: ModuleStore; dir: string }> {
  const dir = await tempDir(t);
  const store = await ModuleStore.open(join(dir, "db"), quota, { label: "testmod" });
  t.teardown(() => store.close());
  await store.openTree("t");
  return { store, dir: join(dir, "db") };
}

async function rejectsCode(t: ExecutionContext, p: Promise<unknown>, code: StorageError["code"], message?: RegExp) {
  const err = await t.throwsAsync(p, { instanceOf: StorageError, ...(message ? { message } : {}) });
  t.is((err as StorageError | undefined)?.code, code);
}

const keyBytes = (k: string) => Buffer.byteLength(k, "utf8");

test("put/get/has/delete", async (t) => {
  const { store } = await freshStore(t);
  t.is(await store.get("t", "a"), undefined);
  t.false(await store.has("t", "a"));
  await store.put("t", "a", "hello");
  t.is(await store.get("t", "a"), "hello");
  t.true(await store.has("t", "a"));
  t.true(await store.delete("t", "a"));
  t.false(await store.delete("t", "a"));
  t.is(await store.get("t", "a"), undefined);
  t.false(await store.has("t", "a"));
});

test("plain values round-trip", async (t) => {
  const { store } = await freshStore(t);
  const values: unknown[] = [
    "",
    "ünïcødé ✓ 𝄞",
    0,
    -1,
    42,
    2 ** 53,
    -(2 ** 40),
    1.5,
    Number.MAX_VALUE,
    true,
    false,
    null,
    [],
    {},
    new Uint8Array([0, 1, 2, 255]),
    new Uint8Array(0),
    [1, "two", null, [3, [4]], { five: 5 }],
    { a: { b: { c: [1, 2, { d: new Uint8Array([9]) }] } }, "key with spaces": true, "": "empty key" },
  ];
  for (const [i, v] of values.entries()) await store.put("t", `k${i}`, v);
  for (const [i, v] of values.entries()) t.deepEqual(await store.get("t", `k${i}`), v, `value #${i}`);
  // Binary comes back as a plain Uint8Array, not a Node Buffer.
  t.is((await store.get("t", "k14"))?.constructor, Uint8Array);
  // A Buffer is accepted and reads back as Uint8Array.
  await store.put("t", "buf", Buffer.from("abc"));
  t.deepEqual(await store.get("t", "buf"), new Uint8Array([97, 98, 99]));
});

test("non-plain values are rejected with invalid_params", async (t) => {
  const { store } = await freshStore(t);
  const circular: Record<string, unknown> = {};
  circular.self = circular;
  const bad: Array<[unknown, RegExp]> = [
    [undefined, /undefined/],
    [{ a: undefined }, /value\.a is undefined/],
    [() => 1, /function/],
    [{ f: () => 1 }, /value\.f is a function/],
    [Symbol("s"), /symbol/],
    [10n, /bigint/],
    [new Date(), /Date/],
    [new Map(), /Map/],
    [new Uint16Array(2), /Uint16Array/],
    [circular, /circular/],
    [JSON.parse('{"__proto__": 1}'), /__proto__/],
  ];
  for (const [v, msg] of bad) await rejectsCode(t, store.put("t", "k", v), "invalid_params", msg);
  // Shared (non-circular) references are fine.
  const shared = { x: 1 };
  await store.put("t", "shared", [shared, shared]);
  t.deepEqual(await store.get("t", "shared"), [{ x: 1 }, { x: 1 }]);
  t.is((await store.usage()).keys, 1);
});

test("a value's check hashes none of its objects (65,000 empty maps: no Set call; hashing each fresh object cost 22-28 ms in one piece at load 16, 6.5 ms without); cycles through arrays and maps, short or long, are still refused by path", async (t) => {
  const value = Array.from({ length: 65_000 }, () => ({}));
  const add = Set.prototype.add;
  const has = Set.prototype.has;
  let calls = 0;
  Set.prototype.add = function (this: Set<unknown>, v: unknown) {
    calls++;
    return add.call(this, v);
  };
  Set.prototype.has = function (this: Set<unknown>, v: unknown) {
    calls++;
    return has.call(this, v);
  };
  let bytes: Uint8Array;
  try {
    bytes = encodeValue(value, 1024 * 1024);
  } finally {
    Set.prototype.add = add;
    Set.prototype.has = has;
  }
  t.is(calls, 0, "no Set.prototype.add or has while the value was checked");
  t.is(bytes.length, 3 + 65_000);
  const { store } = await freshStore(t);
  const a: Record<string, unknown> = { x: 1 };
  const b = [0, { c: a }];
  a.b = b;
  await rejectsCode(t, store.put("t", "k", { top: a }), "invalid_params", /value\.top\.b\[1\]\.c is a circular reference/);
  const ring: unknown[] = [];
  let at: unknown[] = ring;
  for (let i = 0; i < 40; i++) at = (at[0] = [1]) as unknown[];
  at[1] = ring;
  await rejectsCode(t, store.put("t", "k", ring), "invalid_params", /circular reference/);
  const empty = {};
  await store.put("t", "k", [empty, [empty, { e: empty }]]);
  t.deepEqual(await store.get("t", "k"), [{}, [{}, { e: {} }]]);
});

test("ordered iteration with range options", async (t) => {
  const { store } = await freshStore(t);
  const keys = ["b", "a", "ab", "abc", "b1", "c", "aa", "é", "z", "ac"];
  await store.batch(
    "t",
    keys.map((key) => ({ op: "put" as const, key, value: key.toUpperCase() })),
  );
  const ks = async (opts?: Parameters<ModuleStore["iterate"]>[1]) => (await store.iterate("t", opts)).map((e) => e.key);
  // UTF-8 byte order: "é" (0xC3 0xA9) sorts after "z".
  t.deepEqual(await ks(), ["a", "aa", "ab", "abc", "ac", "b", "b1", "c", "z", "é"]);
  t.deepEqual((await store.iterate("t", { limit: 1 }))[0], { key: "a", value: "A" });
  t.deepEqual(await ks({ gt: "ab" }), ["abc", "ac", "b", "b1", "c", "z", "é"]);
  t.deepEqual(await ks({ gte: "ab", lt: "b" }), ["ab", "abc", "ac"]);
  t.deepEqual(await ks({ gt: "ab", lte: "b" }), ["abc", "ac", "b"]);
  t.deepEqual(await ks({ prefix: "a" }), ["a", "aa", "ab", "abc", "ac"]);
  t.deepEqual(await ks({ prefix: "ab" }), ["ab", "abc"]);
  t.deepEqual(await ks({ prefix: "a", gt: "aa" }), ["ab", "abc", "ac"]);
  t.deepEqual(await ks({ prefix: "a", lt: "ac" }), ["a", "aa", "ab", "abc"]);
  t.deepEqual(await ks({ prefix: "a", gte: "b" }), []);
  t.deepEqual(await ks({ prefix: "é" }), ["é"]);
  t.deepEqual(await ks({ prefix: "nope" }), []);
  t.deepEqual(await ks({ reverse: true, limit: 3 }), ["é", "z", "c"]);
  t.deepEqual(await ks({ prefix: "a", reverse: true, limit: 2 }), ["ac", "abc"]);
  t.deepEqual(await ks({ limit: 0 }), []);
});

test("iteration limit defaults to 1000 and is capped at 10000", async (t) => {
  const { store } = await freshStore(t);
  const ops = Array.from({ length: 1500 }, (_, i) => ({ op: "put" as const, key: String(i).padStart(5, "0"), value: i }));
  await store.batch("t", ops);
  t.is((await store.iterate("t")).length, 1000);
  t.is((await store.iterate("t", { limit: 1500 })).length, 1500);
  await rejectsCode(t, store.iterate("t", { limit: 10_001 }), "invalid_params", /limit/);
  await rejectsCode(t, store.iterate("t", { limit: -1 }), "invalid_params", /limit/);
  await rejectsCode(t, store.iterate("t", { gt: "a", gte: "a" }), "invalid_params", /mutually exclusive/);
  await rejectsCode(t, store.iterate("t", { start: "a" } as never), "invalid_params", /unknown iterate option/);
});

test("trees are separate namespaces, also for similar names", async (t) => {
  const { store } = await freshStore(t);
  await store.openTree("a");
  await store.openTree("a.b");
  await store.openTree("a-");
  await store.put("a", "k", "in a");
  await store.put("a.b", "k", "in a.b");
  await store.put("a-", "k2", "in a-");
  t.is(await store.get("a", "k"), "in a");
  t.is(await store.get("a.b", "k"), "in a.b");
  t.deepEqual(await store.iterate("a"), [{ key: "k", value: "in a" }]);
  t.deepEqual(await store.iterate("a.b"), [{ key: "k", value: "in a.b" }]);
  t.deepEqual(await store.iterate("t"), []);
  t.deepEqual(await store.listTrees(), ["a", "a-", "a.b", "t"]);
  await store.delete("a", "k");
  t.is(await store.get("a.b", "k"), "in a.b");
});

test("two stores in two directories are isolated", async (t) => {
  const { store: s1 } = await freshStore(t);
  const { store: s2 } = await freshStore(t);
  await s1.put("t", "k", "one");
  t.is(await s2.get("t", "k"), undefined);
  t.deepEqual(await s2.iterate("t"), []);
  await s2.openTree("only2");
  await rejectsCode(t, s1.get("only2", "k"), "not_found");
  t.is((await s2.usage()).keys, 0);
});

test("a directory can only be opened once at a time: a second open in the same process is refused as such (test/host-locks.test.ts: the first keeps its lock)", async (t) => {
  const { dir } = await freshStore(t);
  await rejectsCode(t, ModuleStore.open(dir), "storage_error", /storage directory .* is already open in this process; close it first/);
});

test("batch applies ops in order", async (t) => {
  const { store } = await freshStore(t);
  await store.put("t", "x", 1);
  await store.batch("t", [
    { op: "put", key: "a", value: 1 },
    { op: "put", key: "a", value: 2 },
    { op: "delete", key: "x" },
    { op: "put", key: "b", value: 3 },
    { op: "delete", key: "b" },
    { op: "delete", key: "never-existed" },
  ]);
  t.deepEqual(await store.iterate("t"), [{ key: "a", value: 2 }]);
  const u = await store.usage();
  t.is(u.keys, 1);
  t.is(u.bytes, keyBytes("a") + 1); // msgpack positive fixint = 1 byte
  await store.batch("t", []); // no-op
  t.deepEqual(await store.usage(), u);
});

test("a batch writes each op under its own tree's prefix: the same keys in trees of similar names stay apart, overwrites and deletes count exactly, and all of it reads back after a reopen", async (t) => {
  const { store, dir } = await freshStore(t);
  await store.openTree("a");
  await store.openTree("a.b");
  const keys = Array.from({ length: 300 }, (_, i) => `k${i}`);
  await store.batch("a", keys.map((key, i) => ({ op: "put" as const, key, value: i })));
  await store.batch("a.b", keys.map((key) => ({ op: "put" as const, key, value: `b:${key}` })));
  // Overwrite half of "a" (and delete a third of it) in one batch: only "a" changes.
  await store.batch("a", [
    ...keys.slice(0, 150).map((key) => ({ op: "put" as const, key, value: -1 })),
    ...keys.filter((_, i) => i % 3 === 0).map((key) => ({ op: "delete" as const, key })),
  ]);
  const expectA = keys.flatMap((key, i) => (i % 3 === 0 ? [] : [{ key, value: i < 150 ? -1 : i }])).sort((x, y) => (x.key < y.key ? -1 : 1));
  const expectB = keys.map((key) => ({ key, value: `b:${key}` })).sort((x, y) => (x.key < y.key ? -1 : 1));
  t.deepEqual(await store.iterate("a"), expectA);
  t.deepEqual(await store.iterate("a.b"), expectB);
  t.is(await store.get("a.b", "k0"), "b:k0", "a delete in \"a\" left \"a.b\" alone");
  const size = (entries: Array<{ key: string; value: unknown }>, valueBytes: (v: unknown) => number) => entries.reduce((n, e) => n + keyBytes(e.key) + valueBytes(e.value), 0);
  // msgpack: -1 and 0..127 are one byte, 128..255 two (uint8), 256..299 three (uint16); "b:kN" is a fixstr (1 + length).
  const bytesA = size(expectA, (v) => ((v as number) >= 256 ? 3 : (v as number) >= 128 ? 2 : 1));
  const bytesB = size(expectB, (v) => 1 + (v as string).length);
  const usage = await store.usage();
  t.is(usage.keys, expectA.length + expectB.length);
  t.is(usage.bytes, bytesA + bytesB);
  await store.close();
  const reopened = await ModuleStore.open(dir);
  t.teardown(() => reopened.close());
  t.deepEqual(await reopened.iterate("a"), expectA);
  t.deepEqual(await reopened.iterate("a.b"), expectB);
  t.like(await reopened.usage(), { keys: usage.keys, bytes: usage.bytes });
});

test("a refused value names the exact path to what is refused, however deep (the path is put together only when refusing)", async (t) => {
  const { store } = await freshStore(t);
  const cases: Array<[unknown, string]> = [
    [{ a: [1, { b: [null, undefined] }] }, "value.a[1].b[1] is undefined; use null or omit the property"],
    [[[[() => 1]]], "value[0][0][0] is a function, which cannot be stored"],
    [{ x: { y: { z: new Date(0) } } }, "value.x.y.z is a Date; only plain objects, arrays, Uint8Array and primitives can be stored"],
  ];
  for (const [v, message] of cases) await rejectsCode(t, store.put("t", "k", v), "invalid_params", new RegExp(`^${message.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`));
  // A refused op of a batch is named by its index, then by its path.
  await rejectsCode(t, store.batch("t", [{ op: "put", key: "a", value: 1 }, { op: "put", key: "b", value: { deep: [undefined] } }]), "invalid_params", /^ops\[1\]: value\.deep\[0\] is undefined/);
  t.is((await store.usage()).keys, 0);
});

test("a batch that touches each key once counts exactly: new keys, overwrites that grow and shrink, deletes of present and of absent keys, keys of several UTF-8 bytes per character", async (t) => {
  const { store } = await freshStore(t);
  const keys = Array.from({ length: 400 }, (_, i) => (i % 3 === 0 ? `ké✓😀:${i}` : `key:${i}`));
  await store.batch("t", keys.slice(0, 300).map((key, i) => ({ op: "put" as const, key, value: "x".repeat(i % 50) })));
  // Every key at most once: 0-99 deleted, 100-199 longer, 200-249 shorter, 250-299 untouched, 300-349 new, 350-399 deleted while absent.
  await store.batch("t", keys.flatMap((key, i): BatchOp[] => {
    if (i < 100 || i >= 350) return [{ op: "delete", key }];
    if (i < 200) return [{ op: "put", key, value: "y".repeat(80) }];
    if (i < 250) return [{ op: "put", key, value: 7 }];
    if (i < 300) return [];
    return [{ op: "put", key, value: { n: i } }];
  }));
  const entries = await store.iterate("t", { limit: 10_000 });
  t.is(entries.length, 250);
  t.deepEqual(entries.map((e) => e.key), keys.slice(100, 350).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))), "every key reads back, in UTF-8 byte order");
  let bytes = 0;
  for (const e of entries) bytes += keyBytes(e.key) + encodeValue(e.value, 1 << 20).length;
  const usage = await store.usage();
  t.is(usage.keys, 250);
  t.is(usage.bytes, bytes);
});

test("batch with an invalid op writes nothing", async (t) => {
  const { store } = await freshStore(t);
  await store.put("t", "keep", "old");
  const before = await store.usage();
  await rejectsCode(
    t,
    store.batch("t", [
      { op: "put", key: "keep", value: "new" },
      { op: "put", key: "n1", value: 1 },
      { op: "put", key: "n2", value: () => 1 },
    ]),
    "invalid_params",
    /ops\[2\]/,
  );
  await rejectsCode(t, store.batch("t", [{ op: "put", key: "n1", value: 1 }, { op: "frob", key: "x" } as never]), "invalid_params", /ops\[1\]/);
  await rejectsCode(t, store.batch("t", [{ op: "delete", key: 7 as never }]), "invalid_params", /key must be a string/);
  await rejectsCode(t, store.batch("t", "nope" as never), "invalid_params");
  t.is(await store.get("t", "keep"), "old");
  t.deepEqual(await store.iterate("t"), [{ key: "keep", value: "old" }]);
  t.deepEqual(await store.usage(), before);
});

test("batch over the op limit is rejected", async (t) => {
  const { store } = await freshStore(t);
  const ops = Array.from({ length: 10_001 }, (_, i) => ({ op: "delete" as const, key: `k${i}` }));
  await rejectsCode(t, store.batch("t", ops), "invalid_params", /10000/);
});

test("batch exceeding the byte quota writes nothing", async (t) => {
  const { store } = await freshStore(t, { maxBytes: 100 });
  await store.put("t", "a", "x".repeat(20));
  const before = await store.usage();
  const err = await t.throwsAsync(
    store.batch("t", [
      { op: "put", key: "b", value: "y".repeat(40) },
      { op: "put", key: "c", value: "z".repeat(40) },
    ]),
    { instanceOf: StorageError },
  );
  t.is((err as StorageError).code, "quota_exceeded");
  t.regex(err!.message, /maxBytes/);
  t.regex(err!.message, /\[modules\.limits\.testmod\] storage_max_bytes/);
  t.regex(err!.message, new RegExp(`${before.bytes} of 100 bytes`));
  t.deepEqual(await store.iterate("t"), [{ key: "a", value: "x".repeat(20) }]);
  t.deepEqual(await store.usage(), before);
  // Net effect is what counts: deleting in the same batch makes room.
  await store.batch("t", [
    { op: "delete", key: "a" },
    { op: "put", key: "b", value: "y".repeat(40) },
    { op: "put", key: "c", value: "z".repeat(40) },
  ]);
  t.is((await store.usage()).keys, 2);
});

test("byte quota is exact and rejections leave data unchanged", async (t) => {
  // 1 key byte + msgpack fixstr of 10 chars (1 + 10) = 12 bytes per entry.
  const { store } = await freshStore(t, { maxBytes: 24 });
  await store.put("t", "a", "0123456789");
  t.is((await store.usage()).bytes, 12);
  await store.put("t", "b", "0123456789");
  t.is((await store.usage()).bytes, 24); // exactly at the limit is allowed
  await rejectsCode(t, store.put("t", "c", ""), "quota_exceeded", /storage_max_bytes/);
  await rejectsCode(t, store.put("t", "a", "01234567890"), "quota_exceeded", /maxBytes/);
  t.is(await store.get("t", "a"), "0123456789");
  t.false(await store.has("t", "c"));
  // Same-size overwrite and shrinking are fine at the limit.
  await store.put("t", "a", "abcdefghij");
  await store.put("t", "a", "short");
  t.is((await store.usage()).bytes, 24 - 5);
});

test("key quota rejects with quota_exceeded", async (t) => {
  const { store } = await freshStore(t, { maxKeys: 3 });
  await store.batch("t", [
    { op: "put", key: "a", value: 1 },
    { op: "put", key: "b", value: 2 },
    { op: "put", key: "c", value: 3 },
  ]);
  const err = await t.throwsAsync(store.put("t", "d", 4), { instanceOf: StorageError });
  t.is((err as StorageError).code, "quota_exceeded");
  t.regex(err!.message, /maxKeys.*3 of 3 keys.*storage_max_keys/);
  await store.put("t", "a", 100); // overwrite does not add a key
  t.is(await store.get("t", "a"), 100);
  await store.openTree("other");
  await rejectsCode(t, store.put("other", "x", 1), "quota_exceeded"); // the quota is per store, not per tree
  t.true(await store.delete("t", "b"));
  await store.put("other", "x", 1);
  t.is((await store.usage()).keys, 3);
});

test("overwrite counts the delta, delete frees quota", async (t) => {
  const { store } = await freshStore(t);
  await store.put("t", "key", "aaaa"); // 3 + 5
  t.like(await store.usage(), { bytes: 8, keys: 1 });
  await store.put("t", "key", "aaaaaaaa"); // 3 + 9
  t.like(await store.usage(), { bytes: 12, keys: 1 });
  await store.put("t", "key", "a"); // 3 + 2
  t.like(await store.usage(), { bytes: 5, keys: 1 });
  await store.put("t", "k2", new Uint8Array(100)); // 2 + (2 + 100)
  t.like(await store.usage(), { bytes: 5 + 104, keys: 2 });
  await store.delete("t", "key");
  t.like(await store.usage(), { bytes: 104, keys: 1 });
  await store.delete("t", "k2");
  t.like(await store.usage(), { bytes: 0, keys: 0 });
});

test("dropTree deletes the data and frees its usage", async (t) => {
  const { store, dir } = await freshStore(t);
  await store.put("t", "keep", 1);
  await store.openTree("gone");
  await store.batch("gone", Array.from({ length: 500 }, (_, i) => ({ op: "put" as const, key: `k${i}`, value: i })));
  const full = await store.usage();
  t.is(full.keys, 501);
  t.is(full.trees, 2);
  await store.dropTree("gone");
  t.like(await store.usage(), { keys: 1, bytes: keyBytes("keep") + 1, trees: 1 });
  t.deepEqual(await store.listTrees(), ["t"]);
  await rejectsCode(t, store.get("gone", "k1"), "not_found");
  await rejectsCode(t, store.dropTree("gone"), "not_found");
  // Re-creating the tree starts empty, also after a reopen.
  await store.openTree("gone");
  t.deepEqual(await store.iterate("gone"), []);
  await store.close();
  const again = await ModuleStore.open(dir);
  t.teardown(() => again.close());
  t.deepEqual(await again.iterate("gone"), []);
  t.like(await again.usage(), { keys: 1, trees: 2 });
});

test("maxTrees is enforced", async (t) => {
  const { store } = await freshStore(t, { maxTrees: 2 });
  await store.openTree("two");
  await store.openTree("two"); // existing: no-op
  await rejectsCode(t, store.openTree("three"), "quota_exceeded", /maxTrees.*storage_max_trees/);
  await store.dropTree("two");
  await store.openTree("three");
  t.deepEqual(await store.listTrees(), ["t", "three"]);
});

test("usage and trees persist across close/reopen", async (t) => {
  const { store, dir } = await freshStore(t, { maxBytes: 10_000 });
  await store.openTree("second");
  await store.put("t", "a", { nested: [1, 2, 3] });
  await store.put("second", "b", "x".repeat(100));
  await store.put("second", "c", 1);
  await store.delete("second", "c");
  const before = await store.usage();
  await store.close();
  await store.close(); // idempotent
  await rejectsCode(t, store.get("t", "a"), "storage_error", /closed/);
  await rejectsCode(t, store.put("t", "a", 1), "storage_error", /closed/);

  const reopened = await ModuleStore.open(dir, { maxBytes: 10_000 });
  t.teardown(() => reopened.close());
  t.deepEqual(await reopened.usage(), before);
  t.deepEqual(await reopened.listTrees(), ["second", "t"]);
  t.deepEqual(await reopened.get("t", "a"), { nested: [1, 2, 3] });
  t.is(await reopened.get("second", "b"), "x".repeat(100));
});

test("a lowered quota still allows shrinking", async (t) => {
  const { store, dir } = await freshStore(t);
  await store.put("t", "a", "x".repeat(100));
  await store.put("t", "b", "x".repeat(100));
  await store.close();
  const small = await ModuleStore.open(dir, { maxBytes: 50, maxKeys: 1 });
  t.teardown(() => small.close());
  await rejectsCode(t, small.put("t", "c", 1), "quota_exceeded");
  await small.put("t", "a", "x"); // shrinks: allowed although still over quota
  t.true(await small.delete("t", "b"));
  t.like(await small.usage(), { bytes: 3, keys: 1 });
});

test("concurrent writes keep exact counters", async (t) => {
  const { store, dir } = await freshStore(t);
  // 200 concurrent puts, half of them to the same 10 keys (overwrites).
  await Promise.all(
    Array.from({ length: 200 }, (_, i) => store.put("t", i % 2 === 0 ? `k${i}` : `same${i % 10}`, "v".repeat(i % 7))),
  );
  const entries = await store.iterate("t", { limit: 10_000 });
  const expectedBytes = entries.reduce((n, e) => n + keyBytes(e.key) + 1 + (e.value as string).length, 0);
  t.is(entries.length, 100 + 5);
  t.like(await store.usage(), { keys: entries.length, bytes: expectedBytes });
  // Concurrent deletes + puts on the same keys.
  await Promise.all(entries.flatMap((e) => [store.delete("t", e.key), store.put("t", e.key, 1), store.delete("t", e.key)]));
  t.like(await store.usage(), { keys: 0, bytes: 0 });
  // Concurrent quota pressure: exactly as many succeed as fit.
  await store.close();
  const q = await ModuleStore.open(dir, { maxKeys: 50 });
  t.teardown(() => q.close());
  const results = await Promise.allSettled(Array.from({ length: 200 }, (_, i) => q.put("t", `n${i}`, i)));
  t.is(results.filter((r) => r.status === "fulfilled").length, 50);
  t.is((await q.usage()).keys, 50);
  t.is((await q.iterate("t", { limit: 10_000 })).length, 50);
});

test("close waits for in-flight writes", async (t) => {
  const { store, dir } = await freshStore(t);
  const writes = Array.from({ length: 50 }, (_, i) => store.put("t", `k${i}`, i));
  await store.close();
  await Promise.all(writes);
  const reopened = await ModuleStore.open(dir);
  t.teardown(() => reopened.close());
  t.is((await reopened.usage()).keys, 50);
});

test("operations on an unopened tree fail with not_found", async (t) => {
  const { store } = await freshStore(t);
  const msg = /does not exist; call openTree\("nope"\) first/;
  await rejectsCode(t, store.get("nope", "k"), "not_found", msg);
  await rejectsCode(t, store.has("nope", "k"), "not_found", msg);
  await rejectsCode(t, store.iterate("nope"), "not_found", msg);
  await rejectsCode(t, store.put("nope", "k", 1), "not_found", msg);
  await rejectsCode(t, store.delete("nope", "k"), "not_found", msg);
  await rejectsCode(t, store.batch("nope", [{ op: "put", key: "k", value: 1 }]), "not_found", msg);
  await rejectsCode(t, store.dropTree("nope"), "not_found", msg);
  t.deepEqual(await store.listTrees(), ["t"]);
});

test("invalid tree names and keys are rejected", async (t) => {
  const { store } = await freshStore(t, { maxKeyBytes: 8, maxValueBytes: 16 });
  for (const name of ["", "a/b", "a!b", "with space", "ü", "x".repeat(65), 5 as never]) {
    await rejectsCode(t, store.openTree(name), "invalid_params", /invalid tree name/);
    await rejectsCode(t, store.get(name, "k"), "invalid_params", /invalid tree name/);
  }
  await store.openTree("x".repeat(64));
  await store.openTree("A-z_0.9");
  await rejectsCode(t, store.put("t", 5 as never, 1), "invalid_params", /key must be a string/);
  await rejectsCode(t, store.get("t", null as never), "invalid_params", /key must be a string/);
  await rejectsCode(t, store.put("t", "123456789", 1), "invalid_params", /9 bytes.*limit of 8 bytes \(a fixed limit of storage keys: use a shorter key/);
  await rejectsCode(t, store.put("t", "ééééé", 1), "invalid_params", /10 bytes/); // 5 chars, 10 UTF-8 bytes
  await rejectsCode(t, store.put("t", "a\uD800", 1), "invalid_params", /surrogate/);
  await store.put("t", "12345678", 1); // exactly maxKeyBytes
  await store.put("t", "😀", 1); // well-formed surrogate pair
  await rejectsCode(t, store.put("t", "v", "x".repeat(16)), "invalid_params", /17 bytes.*\(a fixed limit of storage values: split the value/);
  await store.put("t", "v", "x".repeat(15));
  t.is((await store.usage()).keys, 3);
});

test("a 1 MiB tree name of control characters is refused with a message that quotes 64 of its characters and its length, not all of it escaped", async (t) => {
  // JSON.stringify of all of it took 50-70 ms of the host's loop per request (fuzz/protocol-grammar.ts).
  const { store } = await freshStore(t);
  const name = "\u0000x".repeat(512 * 1024);
  for (const p of [store.openTree(name), store.get(name, "k"), store.delete(name, "k"), store.dropTree(name)]) {
    const err = await t.throwsAsync(p, { instanceOf: StorageError, message: /invalid tree name "(\\u0000x){32}"\.\.\. \(1048576 characters\): use 1-64 characters/ });
    t.true(err!.message.length < 600, `${err!.message.length} characters`);
  }
});

test("an oversized value is refused after work bounded by the limit, not by the value: the walk stops just past the value limit", async (t) => {
  const { store } = await freshStore(t, { maxValueBytes: 1024 });
  await store.openTree("t");
  // A million small items, and a million-character string nested inside: each is refused as
  // soon as the running lower bound passes 1024 bytes, not after walking or encoding it all.
  const wide = Array.from({ length: 1_000_000 }, (_, i) => i % 100);
  const err = await t.throwsAsync(store.put("t", "k", wide), { instanceOf: StorageError });
  const bound = Number(/at least (\d+) bytes/.exec(err!.message)?.[1]);
  t.true(bound > 1024 && bound < 1100, `stopped at ${bound} bytes, not ~1 MB`);
  t.regex(err!.message, /over the limit of 1024 bytes \(a fixed limit of storage values/);
  const deep = { a: [1, 2, { b: "x".repeat(1_000_000) }] };
  const err2 = await t.throwsAsync(store.put("t", "k", deep), { instanceOf: StorageError });
  t.regex(err2!.message, /at least 100\d{4} bytes/, "a long string counts its length at once");
  // A key far over the key limit is refused by its length, before it is scanned.
  await rejectsCode(t, store.put("t", "k".repeat(5_000_000), 1), "invalid_params", /at least 5000000 bytes.*a fixed limit of storage keys/);
  t.is((await store.usage()).keys, 0);
});

test("paged iteration: byte-limited pages, a cursor that resumes after the last key (both directions), and the unpaged form refused when the range is wider than the byte limit", async (t) => {
  const dir = await tempDir(t);
  const store = await ModuleStore.open(dir, {}, { label: "pager", iterMaxBytes: 4096 });
  t.teardown(() => store.close());
  await store.openTree("t");
  await store.batch("t", Array.from({ length: 50 }, (_, i) => ({ op: "put" as const, key: `k${String(i).padStart(2, "0")}`, value: "v".repeat(500) })));
  const walk = async (reverse: boolean) => {
    const keys: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page: IterPage = await store.iterate("t", { paged: true, reverse, gte: "k05", ...(cursor ? { cursor } : {}) });
      t.true(page.entries.length <= 8, "a page holds what fits in 4096 bytes");
      keys.push(...page.entries.map((e) => e.key));
      cursor = page.cursor;
      pages++;
    } while (cursor && pages < 50);
    return keys;
  };
  const forward = Array.from({ length: 45 }, (_, i) => `k${String(i + 5).padStart(2, "0")}`);
  t.deepEqual(await walk(false), forward);
  t.deepEqual(await walk(true), [...forward].reverse());
  await rejectsCode(t, store.iterate("t"), "invalid_params", /exceed 4096 bytes.*paged: true/);
  t.is((await store.iterate("t", { limit: 3 })).length, 3, "a range that fits is answered as before, as an array");
  await rejectsCode(t, store.iterate("t", { cursor: "abc" }), "invalid_params", /only for paged iteration/);
  await rejectsCode(t, store.iterate("t", { paged: true, cursor: "not base64url!" }), "invalid_params", /cursor is not one this host returned/);
});

test("invalid quota options are rejected", async (t) => {
  const dir = await tempDir(t);
  await rejectsCode(t, ModuleStore.open(dir, { maxBytes: -1 }), "invalid_params", /maxBytes/);
  await rejectsCode(t, ModuleStore.open(dir, { maxKeys: 1.5 }), "invalid_params", /maxKeys/);
  await rejectsCode(t, ModuleStore.open(dir, { bogus: 1 } as never), "invalid_params", /bogus/);
  const store = await ModuleStore.open(dir, {});
  t.teardown(() => store.close());
  t.deepEqual((await store.usage()).quota, DEFAULT_QUOTA);
});

test("empty string is a valid key", async (t) => {
  const { store } = await freshStore(t);
  await store.put("t", "", "empty");
  await store.put("t", "a", "a");
  t.is(await store.get("t", ""), "empty");
  t.deepEqual((await store.iterate("t")).map((e) => e.key), ["", "a"]);
  t.deepEqual((await store.iterate("t", { prefix: "" })).map((e) => e.key), ["", "a"]);
  t.like(await store.usage(), { keys: 2, bytes: 6 + 1 + 2 });
});

test("a drop interrupted by a crash is finished on the next open", async (t) => {
  const { store, dir } = await freshStore(t);
  await store.put("t", "k", 1);
  await store.close();
  // Simulate the state between dropTree's registry batch and its data clear:
  // tree "x" unregistered with a pending-drop marker but its data still present.
  const raw = new ClassicLevel<string, string>(dir, { keyEncoding: "utf8", valueEncoding: "utf8" });
  await raw.batch([
    { type: "put", key: "!meta!drop:x", value: "true" },
    { type: "put", key: "!t:x!left", value: "\xa3old" },
  ]);
  await raw.close();
  const reopened = await ModuleStore.open(dir);
  t.teardown(() => reopened.close());
  t.deepEqual(await reopened.listTrees(), ["t"]);
  await reopened.openTree("x");
  t.deepEqual(await reopened.iterate("x"), []);
  t.like(await reopened.usage(), { keys: 1, trees: 2 });
});

// ---- transactions sent in parts (docs/protocol.md section 6.2) ----

test("a transaction in parts writes nothing until its last part, then every part at once, in order", async (t) => {
  const { store } = await freshStore(t);
  await store.put("t", "a", "old");
  await store.batch("t", [{ op: "put", key: "a", value: 1 }, { op: "put", key: "b", value: 1 }], { id: 7, more: true });
  await store.batch("t", [{ op: "delete", key: "b" }, { op: "put", key: "c", value: 3 }], { id: 7, more: true });
  t.is(await store.get("t", "a"), "old", "held parts are not written");
  t.false(await store.has("t", "c"));
  const before = await store.usage();
  await store.batch("t", [{ op: "put", key: "a", value: 2 }], { id: 7, more: false });
  t.deepEqual([await store.get("t", "a"), await store.has("t", "b"), await store.get("t", "c")], [2, false, 3], "applied in order over all parts");
  t.is((await store.usage()).keys, before.keys + 1, "the quota counts the net effect (c added)");
  // The id is forgotten after its last part: a new part of id 7 starts a new transaction.
  await store.batch("t", [{ op: "put", key: "d", value: 4 }], { id: 7, more: false });
  t.is(await store.get("t", "d"), 4);
});

test("an error in any part of a transaction in parts drops the whole transaction, and says so", async (t) => {
  const { store } = await freshStore(t, { maxKeyBytes: 8 });
  await store.batch("t", [{ op: "put", key: "a", value: 1 }], { id: 1, more: true });
  await rejectsCode(t, store.batch("t", [{ op: "put", key: "much-too-long", value: 1 }], { id: 1, more: true }), "invalid_params", /held from earlier parts are dropped too/);
  // Its last part (sent without waiting for the answer above, say) is refused too: written, it
  // would have written its own ops alone, without the transaction's earlier ones.
  await rejectsCode(t, store.batch("t", [{ op: "put", key: "z", value: 1 }], { id: 1, more: false }), "invalid_params", /transaction 1 was dropped .* before its last part came .*nothing of the transaction is written/);
  t.false(await store.has("t", "a"), "the part before the error was dropped with it");
  t.false(await store.has("t", "z"), "the last part of a dropped transaction is not written alone");
  // After that last part the id is free again.
  await store.batch("t", [{ op: "put", key: "y", value: 1 }], { id: 1, more: true });
  await store.batch("t", [{ op: "put", key: "z", value: 1 }], { id: 1, more: false });
  t.deepEqual([await store.has("t", "y"), await store.has("t", "z")], [true, true]);
  await store.openTree("u");
  await store.batch("t", [{ op: "put", key: "a", value: 1 }], { id: 2, more: true });
  await rejectsCode(t, store.batch("u", [{ op: "put", key: "b", value: 1 }], { id: 2, more: false }), "invalid_params", /names tree "u", but its first part named "t"/);
  t.false(await store.has("t", "a"));
});

test("a transaction in parts forgotten after STAGED_IDLE_MS (60 s without a part): its later parts are refused, not written without the earlier ones, until its last part", async (t) => {
  const { store } = await freshStore(t);
  const realNow = Date.now;
  t.teardown(() => {
    Date.now = realNow;
  });
  await store.batch("t", [{ op: "put", key: "a", value: 1 }], { id: 9, more: true });
  const later = realNow() + 61_000;
  Date.now = () => later;
  await rejectsCode(t, store.batch("t", [{ op: "put", key: "b", value: 1 }], { id: 9, more: true }), "invalid_params", /transaction 9 was dropped 1 s ago before its last part came \(no part came for 60 s\)/);
  await rejectsCode(t, store.batch("t", [{ op: "put", key: "c", value: 1 }], { id: 9, more: false }), "invalid_params", /transaction 9 was dropped/);
  t.deepEqual([await store.has("t", "a"), await store.has("t", "b"), await store.has("t", "c")], [false, false, false], "nothing of it is written");
  await store.batch("t", [{ op: "put", key: "d", value: 1 }], { id: 9, more: false });
  t.true(await store.has("t", "d"), "after its last part the id is free again");
});

// Serial: it reads the host-wide accounts (hostBytes), which the other tests' stores join.
test.serial("a transaction in parts whose module sends no other transaction is forgotten once it has had no part for the store's idle time (stagedIdleMs, STAGED_IDLE_MS in the host): its bytes and its account in [host] module_bytes_mb are let go of", async (t) => {
  const dir = await tempDir(t);
  const store = await ModuleStore.open(join(dir, "db"), undefined, { label: "idle", stagedIdleMs: 300 });
  t.teardown(() => store.close());
  await store.openTree("t");
  const accounts = hostBytes.accounts;
  // total(NaN): never the figure cached for the same millisecond.
  const total = hostBytes.total(Number.NaN);
  await store.batch("t", [{ op: "put", key: "a", value: new Uint8Array(1000 * 1000) }], { id: 1, more: true });
  t.is(hostBytes.accounts, accounts + 1, "held: an account of its own");
  t.true(hostBytes.total(Number.NaN) - total >= 1000 * 1000, "its bytes counted");
  // The idle time, the timer's 1 ms and generous slack for a loaded machine.
  await new Promise((r) => setTimeout(r, 300 + 1 + 1200));
  t.is(hostBytes.accounts, accounts, "its account is gone without another transaction");
  t.is(hostBytes.total(Number.NaN), total, "its bytes are no longer counted");
  await rejectsCode(t, store.batch("t", [{ op: "put", key: "b", value: 1 }], { id: 1, more: false }), "invalid_params", /transaction 1 was dropped .*no part came for 0.3 s/);
  t.false(await store.has("t", "a"));
});

test("drops of transactions in parts asked for one after another wait as one task of the write lock, and keep their order with the parts between them", async (t) => {
  const { store } = await freshStore(t);
  const puts = (n: number) => Array.from({ length: n }, (_, i) => ({ op: "put" as const, key: `k${i}`, value: i }));
  // A transaction holds the write lock while 10,000 refused parts of as many ids are dropped.
  const big = store.batch("t", puts(10_000));
  const drops = Array.from({ length: 10_000 }, (_, i) => store.dropPart(1000 + i, true, "refused"));
  t.is(new Set(drops).size, 1, "one queued task for all of them");
  await Promise.all([big, ...drops]);
  // Order: a part queued between two drops of its id sees the first, not the second.
  await store.batch("t", [{ op: "put", key: "a", value: 1 }], { id: 5, more: true });
  const first = store.dropPart(5, true, "a part was refused");
  const between = store.batch("t", [{ op: "put", key: "b", value: 1 }], { id: 5, more: true });
  const last = store.dropPart(5, false, "its last part was refused");
  t.not(first, last, "the drop after the part is a task of its own");
  await rejectsCode(t, between, "invalid_params", /transaction 5 was dropped/);
  await Promise.all([first, last]);
  await store.batch("t", [{ op: "put", key: "c", value: 1 }], { id: 5, more: false });
  t.deepEqual([await store.has("t", "a"), await store.has("t", "b"), await store.has("t", "c")], [false, false, true], "after its last part the id is free again");
});

test("transactions in parts are bounded: 10000 ops over all parts, 4 open at once, and dropped for a new instance", async (t) => {
  const { store } = await freshStore(t);
  const puts = (n: number, from = 0) => Array.from({ length: n }, (_, i) => ({ op: "put" as const, key: `k${from + i}`, value: i }));
  await store.batch("t", puts(6000), { id: 1, more: true });
  await rejectsCode(t, store.batch("t", puts(4001, 6000), { id: 1, more: false }), "invalid_params", /more than the maximum of 10000 ops over its parts/);
  t.false(await store.has("t", "k0"));
  for (const id of [1, 2, 3, 4]) await store.batch("t", puts(1, id), { id, more: true });
  await rejectsCode(t, store.batch("t", puts(1), { id: 5, more: true }), "quota_exceeded", /more than 4 transactions sent in parts are open at once/);
  store.dropStaged();
  await store.batch("t", puts(1, 100), { id: 1, more: false });
  t.deepEqual([await store.has("t", "k1"), await store.has("t", "k100")], [false, true], "what the last instance held is gone");
});

/** 10 000 puts (the most one transaction may hold) with 1 KiB keys, distinct, and ~500-byte values. */
const maximalOps = (tag: string, value: string): BatchOp[] =>
  Array.from({ length: 10_000 }, (_, i) => ({ op: "put", key: `${tag}${String(i).padStart(6, "0")}`.padEnd(1024, "k"), value }));

test("a maximal transaction (10 000 puts of 1 KiB keys, then the same keys overwritten, then with a repeated key) is checked, encoded, counted and batched in slices with turns of the loop between them", async (t) => {
  const { store } = await freshStore(t, { maxBytes: 1 << 30 });
  await store.openTree("t");
  // Before, its synchronous work ran in one piece between two LevelDB calls (measured here:
  // 35-85 ms of the loop's CPU); now it is cut into slices of ~2 ms with a turn between them.
  // Even on a fast machine the work takes well over 10 slices (10 MiB of keys to check, copy,
  // hash and read back in 40 reads).
  const slices: Record<string, number> = {};
  await store.batch("t", maximalOps("a", "v".repeat(500)));
  slices.fresh = store.lastBatchPauses;
  await store.batch("t", maximalOps("a", "w".repeat(500)));
  slices.overwrite = store.lastBatchPauses;
  const repeated = maximalOps("b", "x".repeat(500));
  repeated[9_999] = { op: "put", key: repeated[0]!.key, value: "last" };
  await store.batch("t", repeated);
  slices.repeated = store.lastBatchPauses;
  t.log(`turns given to the loop during the transaction: ${JSON.stringify(slices)}`);
  for (const [what, n] of Object.entries(slices)) t.true(n >= 10, `${what}: ${n} turns`);
  t.is(await store.get("t", maximalOps("a", "")[5_000]!.key), "w".repeat(500));
  t.is(await store.get("t", repeated[0]!.key), "last");
  const usage = await store.usage();
  t.is(usage.keys, 10_000 + 9_999, "exact key count across the sliced batches");
});

test("a transaction cut into slices stays atomic: reads in the turns between its slices see none of it, and a quota refusal after the slices writes nothing", async (t) => {
  const { store } = await freshStore(t, { maxBytes: 1 << 30 });
  await store.openTree("t");
  const ops = maximalOps("c", "v".repeat(500));
  // Each turn reads its first and its last key together: both absent or both written.
  const seen: Array<[unknown, unknown]> = [];
  let done = false;
  const probe = () => {
    if (done) return;
    void Promise.all([store.get("t", ops[0]!.key), store.get("t", ops[9_999]!.key)]).then((pair) => seen.push(pair));
    setImmediate(probe);
  };
  setImmediate(probe);
  await store.batch("t", ops);
  done = true;
  const before = seen.filter(([a, b]) => a === undefined && b === undefined).length;
  // Torn: the first op's key written, the last one's not (what a write in slices would show).
  // The other way round is a race of the probe's two reads, not of the write: they are two
  // gets, and the second may wait for an I/O slot (storage_io_concurrency) until the write is
  // done (seen 2 times in ~14 runs of the whole file at load 10-20).
  const torn = seen.filter(([a, b]) => a !== undefined && b === undefined);
  t.true(before >= 20, `${before} turns read during the transaction saw none of it`);
  t.deepEqual(torn, [], "no turn saw part of the transaction");
  t.is(await store.get("t", ops[9_999]!.key), "v".repeat(500));

  // Over the byte quota: refused after every slice was done, with nothing written.
  const { store: small } = await freshStore(t, { maxBytes: 5 * 1024 * 1024 });
  await small.openTree("t");
  await rejectsCode(t, small.batch("t", maximalOps("d", "v".repeat(500))), "quota_exceeded");
  t.is((await small.usage()).keys, 0);
  t.is(await small.get("t", maximalOps("d", "")[0]!.key), undefined);
});

test("a transaction whose quota reads span several slices counts exactly: random puts, overwrites and deletes of keys of different lengths, over 512 distinct keys, with keys repeated across those slices or each key once, match a fresh count after every transaction; a refusal late in it (a bad op, the quota) writes nothing, and the counters found on disk after a reopen are the exact ones", async (t) => {
  const dir = await tempDir(t);
  const store = await ModuleStore.open(join(dir, "db"), { maxBytes: 400_000 }, { label: "testmod" });
  await store.openTree("t");
  // A 32-bit LCG read from its high bits: the low bits of one cycle quickly (computed in floats
  // past 2^53 and read from the low bits, as this test once did, its ops touched 76-83 keys,
  // all read in one getMany, as the quota's reads then were).
  let seed = 7;
  const rnd = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0), (seed >>> 8) % n);
  // Keys of 2 to ~60 bytes, so that an old size read for another key than its own would change the count.
  const keyOf = (i: number) => `k${i}${"-".repeat(i % 57)}`;
  const fresh = async () => {
    let bytes = 0;
    for (const { key, value } of await store.iterate("t", { limit: 10_000 })) bytes += keyBytes(key) + encodeValue(value, DEFAULT_QUOTA.maxValueBytes).length;
    return { bytes, keys: (await store.iterate("t", { limit: 10_000 })).length };
  };
  for (let round = 0; round < 6; round++) {
    // 1000-1600 ops over 1200 keys: more than 512 distinct keys (three reads of 256 keys or
    // more). In even rounds many keys come back in later slices of the same transaction; odd
    // rounds keep each key's last op only (every key once: the way without a map).
    const drawn: BatchOp[] = Array.from({ length: 1000 + rnd(600) }, () => {
      const key = keyOf(rnd(1200));
      return rnd(4) === 0 ? { op: "delete", key } : { op: "put", key, value: "v".repeat(rnd(120)) };
    });
    const ops = round % 2 === 0 ? drawn : [...new Map(drawn.map((op) => [op.key, op])).values()];
    const distinct = new Set(ops.map((op) => op.key)).size;
    t.true(distinct > 2 * 256, `round ${round}: ${distinct} distinct keys`);
    await store.batch("t", ops);
    const { bytes, keys } = await store.usage();
    t.deepEqual({ bytes, keys }, await fresh(), `round ${round}`);
  }
  const before = await store.usage();
  const data = await store.iterate("t", { limit: 10_000 });
  const grow = Array.from({ length: 900 }, (_, i) => ({ op: "put" as const, key: `g${i}`, value: "x".repeat(500) }));
  await rejectsCode(t, store.batch("t", grow), "quota_exceeded", /maxBytes/);
  await rejectsCode(t, store.batch("t", [...grow.slice(0, 800), { op: "put", key: "bad", value: () => 1 } as never]), "invalid_params", /ops\[800\]/);
  t.deepEqual(await store.iterate("t", { limit: 10_000 }), data, "nothing of either was written");
  t.deepEqual(await store.usage(), before);
  await store.close();
  const reopened = await ModuleStore.open(join(dir, "db"), { maxBytes: 400_000 }, { label: "testmod" });
  t.teardown(() => reopened.close());
  const { bytes, keys } = await reopened.usage();
  t.deepEqual({ bytes, keys }, { bytes: before.bytes, keys: before.keys }, "the counters on disk are the exact ones");
});
