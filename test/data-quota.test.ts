// The data directory quota's accounting (capabilities/fs-usage.ts): the file API's count stays
// equal to a fresh measurement after writes, appends, overwrites, deletes and mkdirs, and a
// change that would pass max_data_bytes or max_data_files is refused with quota_exceeded,
// naming the limit, and writes nothing. And the walk: links are not followed, it stops at the
// limit, a too-deep tree is over the quota.

import test from "ava";
import type { ExecutionContext } from "ava";
import { execFile } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, symlinkSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ApiHub, HubError } from "../host/hub.ts";
import { parseDescriptor, resolveGrants } from "../capabilities/grants.ts";
import type { CallContext } from "../capabilities/types.ts";
import type { ChainBackend } from "../chain/backend.ts";
import { DataUsage, MAX_SCAN_DEPTH, type DataQuota } from "../capabilities/fs-usage.ts";
import { measureDataDir } from "../capabilities/fs-path.ts";

const ALL = ["read_filesystem", "write_filesystem", "manage_filesystem"];
const grants = resolveGrants(ALL.map((p) => parseDescriptor(p)), ALL.map((p) => parseDescriptor(p)), []).effective;
const NO_QUOTA: DataQuota = { maxBytes: 0, maxEntries: 1e6 };

interface World {
  data: string;
  usage: DataUsage;
  req(method: string, params: Record<string, unknown>): Promise<unknown>;
  /** The count kept by the API equals a fresh walk of the directory. */
  agrees(): Promise<void>;
}

async function world(t: ExecutionContext, quota: DataQuota, seed?: (dir: string) => void): Promise<World> {
  const base = await mkdtemp(join(tmpdir(), "modhost-quota-"));
  t.teardown(() => rm(base, { recursive: true, force: true }));
  const data = join(base, "mod-q");
  mkdirSync(data);
  seed?.(data);
  const m = await measureDataDir(data, NO_QUOTA, "mod-q");
  const usage = new DataUsage("mod-q", quota, m.bytes, m.entries);
  const hub = new ApiHub({});
  const call = {
    module: "mod-q", dataDir: data, dataUsage: usage, chain: undefined as unknown as ChainBackend, store: undefined, config: {},
    services: { publish: () => true }, events: { subscribe: () => [], unsubscribe: () => [], subscribed: () => [] }, log: () => {},
  } satisfies CallContext;
  return {
    data, usage,
    req: (method, params) => hub.handle(call, grants, method, params),
    agrees: async () => {
      const fresh = await measureDataDir(data, NO_QUOTA, "mod-q");
      t.deepEqual({ bytes: usage.bytes, entries: usage.entries }, { bytes: fresh.bytes, entries: fresh.entries }, "the API's count equals a walk of the directory");
    },
  };
}

async function refused(t: ExecutionContext, p: Promise<unknown>, limit: RegExp): Promise<void> {
  const err = await t.throwsAsync(p, { instanceOf: HubError });
  t.is(err?.wire.code as string | undefined, "quota_exceeded", err?.message);
  t.regex(err?.message ?? "", limit);
  t.regex(err?.message ?? "", /raise max_data_(bytes|files) in \[modules\.limits\.mod-q\]/);
}

test("accounting: write, append, overwrite (grow and shrink), mkdir -p and delete keep the count equal to a walk", async (t) => {
  const w = await world(t, { maxBytes: 1e6, maxEntries: 100 }, (d) => writeFileSync(join(d, "seed"), "12345"));
  t.deepEqual([w.usage.bytes, w.usage.entries], [5, 1], "measured at the start");
  await w.req("write_file", { path: "a.txt", data: "x".repeat(100) });
  t.deepEqual([w.usage.bytes, w.usage.entries], [105, 2]);
  await w.req("write_file", { path: "a.txt", data: "y".repeat(50), append: true });
  t.deepEqual([w.usage.bytes, w.usage.entries], [155, 2]);
  await w.req("write_file", { path: "a.txt", data: "z".repeat(10) }); // shrink
  t.deepEqual([w.usage.bytes, w.usage.entries], [15, 2]);
  await w.req("write_file", { path: "a.txt", data: "z".repeat(300) }); // grow
  t.deepEqual([w.usage.bytes, w.usage.entries], [305, 2]);
  await w.req("create_directory", { path: "p/q/r" });
  t.deepEqual([w.usage.bytes, w.usage.entries], [305, 5]);
  await w.req("create_directory", { path: "p/q/r" }); // exists: nothing new
  t.deepEqual([w.usage.bytes, w.usage.entries], [305, 5]);
  await w.req("write_file", { path: "p/q/r/b.bin", data: new Uint8Array(7) });
  await w.agrees();
  await w.req("delete_file", { path: "p/q/r/b.bin" });
  await w.req("delete_file", { path: "p/q/r" });
  await w.req("delete_file", { path: "a.txt" });
  t.deepEqual([w.usage.bytes, w.usage.entries], [5, 3]);
  await w.agrees();
});

test("max_data_bytes: a write, an append or an overwrite that would pass it is refused with quota_exceeded naming it, and nothing is written", async (t) => {
  const w = await world(t, { maxBytes: 1000, maxEntries: 100 });
  await w.req("write_file", { path: "a", data: "a".repeat(600) });
  await refused(t, w.req("write_file", { path: "b", data: "b".repeat(401) }), /over max_data_bytes = 1000 \(it holds 600\)/);
  t.false(existsSync(join(w.data, "b")), "the new file was not created");
  await refused(t, w.req("write_file", { path: "a", data: "c".repeat(401), append: true }), /max_data_bytes = 1000/);
  await refused(t, w.req("write_file", { path: "a", data: "d".repeat(1001) }), /max_data_bytes = 1000/);
  t.is((await w.req("read_file", { path: "a", encoding: "utf8" })) as string, "a".repeat(600), "the file is unchanged");
  // Up to the limit exactly is fine; a replacing write is charged only what it adds.
  await w.req("write_file", { path: "b", data: "b".repeat(400) });
  await w.req("write_file", { path: "a", data: "e".repeat(600) });
  t.is(w.usage.bytes, 1000);
  await w.agrees();
});

test("max_data_files: a file or directory past it is refused with quota_exceeded naming it, and nothing is created", async (t) => {
  const w = await world(t, { maxBytes: 0, maxEntries: 3 });
  await w.req("write_file", { path: "1", data: "" });
  await w.req("create_directory", { path: "d" });
  await refused(t, w.req("create_directory", { path: "d/e/f" }), /over max_data_files = 3 \(it holds 3\)/);
  t.deepEqual(readdirSync(join(w.data, "d")), ["e"], "d/e was created (the third entry), d/e/f was not");
  await refused(t, w.req("write_file", { path: "2", data: "x" }), /max_data_files = 3/);
  t.false(existsSync(join(w.data, "2")));
  // Overwriting an existing file needs no new entry; deleting one makes room.
  await w.req("write_file", { path: "1", data: "again" });
  await w.req("delete_file", { path: "1" });
  await w.req("write_file", { path: "2", data: "x" });
  await w.agrees();
});

test("concurrent writes cannot together pass max_data_bytes: of 20 writes of 100 bytes at once under a 1000-byte quota, 10 succeed", async (t) => {
  const w = await world(t, { maxBytes: 1000, maxEntries: 100 });
  const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => w.req("write_file", { path: `f${i}`, data: "x".repeat(100) })));
  t.is(results.filter((r) => r.status === "fulfilled").length, 10);
  t.is(readdirSync(w.data).length, 10);
  await w.agrees();
});

test("racing deletes, shrinking writes and appends on one file cannot make the count drift below what the directory holds", async (t) => {
  const w = await world(t, { maxBytes: 1e6, maxEntries: 100 }, (d) => writeFileSync(join(d, "keep"), "k".repeat(5000)));
  for (let i = 0; i < 30; i++) {
    await w.req("write_file", { path: "a", data: "a".repeat(4000) });
    await Promise.allSettled([
      w.req("delete_file", { path: "a" }),
      w.req("write_file", { path: "a", data: "" }),
      w.req("write_file", { path: "a", data: "b".repeat(100), append: true }),
    ]);
  }
  await w.agrees();
});

test("measureDataDir does not follow symbolic links, stops once past max_data_files, and calls a tree deeper than MAX_SCAN_DEPTH over its quota", async (t) => {
  const base = await mkdtemp(join(tmpdir(), "modhost-quota-"));
  t.teardown(() => rm(base, { recursive: true, force: true }));
  const big = join(base, "big");
  mkdirSync(big);
  for (let i = 0; i < 50; i++) writeFileSync(join(big, `f${i}`), "0123456789");
  const dir = join(base, "m");
  mkdirSync(dir);
  writeFileSync(join(dir, "own"), "abc");
  symlinkSync(big, join(dir, "link"));
  const m = await measureDataDir(dir, { maxBytes: 100, maxEntries: 10 }, "m");
  t.deepEqual(m, { bytes: 3, entries: 2 }, "the link is one entry, its target not walked");
  const over = await measureDataDir(big, { maxBytes: 0, maxEntries: 10 }, "m");
  t.is(over.entries, 11, "the walk stopped at the first entry past the limit");
  t.regex(over.over ?? "", /more than max_data_files = 10 entries; .*raise max_data_files in \[modules\.limits\.m\]/);
  const bytes = await measureDataDir(big, { maxBytes: 95, maxEntries: 1000 }, "m");
  t.regex(bytes.over ?? "", /over max_data_bytes = 95/);
  let deep = join(base, "deep");
  for (let i = 0; i <= MAX_SCAN_DEPTH; i++) deep = join(deep, "d");
  mkdirSync(deep, { recursive: true });
  t.regex((await measureDataDir(join(base, "deep"), { maxBytes: 0, maxEntries: 1000 }, "m")).over ?? "", /deeper than 64 directories/);
});

test("a directory the host cannot read (a subdirectory, or the data directory itself, chmod 000 by a module running as the host's own uid) is over the quota, not free", async (t) => {
  if (process.getuid?.() !== 0) return t.pass("needs root to run the walk as another uid");
  // The walk runs as uid 65534 (a host not running as root), the directory is that uid's.
  const base = await mkdtemp(join(tmpdir(), "modhost-quota-"));
  t.teardown(() => rm(base, { recursive: true, force: true }));
  const dir = join(base, "m");
  mkdirSync(join(dir, "hidden"), { recursive: true });
  for (let i = 0; i < 50; i++) writeFileSync(join(dir, "hidden", `f${i}`), "x".repeat(1000));
  for (const p of [base, dir, join(dir, "hidden")]) chownSync(p, 65534, 65534);
  chmodSync(base, 0o755);
  chmodSync(join(dir, "hidden"), 0);
  const script = `import { measureDataDir } from ${JSON.stringify(fileURLToPath(new URL("../capabilities/fs-path.ts", import.meta.url)))};
console.log(JSON.stringify(await measureDataDir(${JSON.stringify(dir)}, { maxBytes: 10000, maxEntries: 100 }, "m")));`;
  const out = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, ["--import=tsx", "--input-type=module", "-e", script], { uid: 65534, gid: 65534, cwd: fileURLToPath(new URL("..", import.meta.url)) }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}: ${stderr}`)) : resolve(stdout)));
  });
  const m = JSON.parse(out) as { bytes: number; over?: string };
  t.regex(m.over ?? "", /holds a file or directory the host cannot read .* cannot be measured/, `50 KB hidden behind chmod 000 against a 10000-byte quota: ${out}`);
  // The data directory itself made unreadable.
  chmodSync(dir, 0);
  const root = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, ["--import=tsx", "--input-type=module", "-e", script], { uid: 65534, gid: 65534, cwd: fileURLToPath(new URL("..", import.meta.url)) }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}: ${stderr}`)) : resolve(stdout)));
  });
  t.regex((JSON.parse(root) as { over?: string }).over ?? "", /cannot be measured/, `the data directory itself behind chmod 000: ${root}`);
});
