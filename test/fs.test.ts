import test from "ava";
import type { ExecutionContext } from "ava";
import { spawn, execFileSync } from "node:child_process";
import { existsSync, linkSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ApiHub, HubError } from "../host/hub.ts";
import { canonicalRelativePath, parseDescriptor, resolveGrants, type EffectiveGrants } from "../capabilities/grants.ts";
import type { CallContext } from "../capabilities/types.ts";
import type { ChainBackend } from "../chain/backend.ts";
import { MAX_FILE_BYTES, MAX_LIST_ENTRIES, parsePath } from "../capabilities/fs-path.ts";

const ALL = ["read_filesystem", "write_filesystem", "manage_filesystem"];

function grantsOf(allow: string[], deny: string[] = []): EffectiveGrants {
  const requested = ALL.map((p) => parseDescriptor(p));
  return resolveGrants(requested, allow.map((d) => parseDescriptor(d)), deny.map((d) => parseDescriptor(d))).effective;
}

function callFor(module: string, dataDir: string): CallContext {
  return {
    module,
    dataDir,
    chain: undefined as unknown as ChainBackend,
    store: undefined,
    config: {},
    services: { publish: () => true },
    events: { subscribe: () => [], unsubscribe: () => [], subscribed: () => [] },
    log: () => {},
  };
}

interface World {
  base: string;
  /** The data directory of module "mod-a". */
  data: string;
  /** A directory outside every data dir, with secret.txt = "OUTSIDE". */
  outside: string;
  secret: string;
  audits: string[];
  /** Call as mod-a with `grants` (default: all three permissions). */
  req(method: string, params: Record<string, unknown>, grants?: EffectiveGrants): Promise<unknown>;
  reqAs(module: string, dataDir: string, method: string, params: Record<string, unknown>): Promise<unknown>;
}

async function world(t: ExecutionContext): Promise<World> {
  const base = await mkdtemp(join(tmpdir(), "modhost-fs-"));
  t.teardown(() => rm(base, { recursive: true, force: true }));
  const data = join(base, "data", "mod-a");
  const outside = join(base, "outside");
  mkdirSync(data, { recursive: true });
  mkdirSync(outside);
  const secret = join(outside, "secret.txt");
  writeFileSync(secret, "OUTSIDE");
  const audits: string[] = [];
  const hub = new ApiHub({ onAction: (a) => audits.push(a.method) });
  const all = grantsOf(ALL);
  return {
    base, data, outside, secret, audits,
    req: (method, params, grants = all) => hub.handle(callFor("mod-a", data), grants, method, params),
    reqAs: (module, dir, method, params) => hub.handle(callFor(module, dir), all, method, params),
  };
}

/** Asserts the call fails with `code` (and message matching `message`); returns the message. */
async function fails(t: ExecutionContext, p: Promise<unknown>, code: string, message?: RegExp): Promise<string> {
  const err = await t.throwsAsync(p, { instanceOf: HubError });
  t.is(err?.wire.code as string | undefined, code, err?.message);
  if (message) t.regex(err?.message ?? "", message);
  return err?.message ?? "";
}

const text = (f: string): string => readFileSync(f, "utf8");

// ---------------------------------------------------------------------------------------
// Round trips

test("write, read, list, stat, delete round-trip; new files are created", async (t) => {
  const w = await world(t);
  t.true(await w.req("write_file", { path: "hello.txt", data: "héllo ✓" }) as boolean);
  t.is(text(join(w.data, "hello.txt")), "héllo ✓");
  t.is(await w.req("read_file", { path: "hello.txt", encoding: "utf8" }), "héllo ✓");
  const bytes = await w.req("read_file", { path: "hello.txt" });
  t.is((bytes as Uint8Array).constructor, Uint8Array);
  t.deepEqual(bytes, new Uint8Array(Buffer.from("héllo ✓")));
  t.is(statSync(join(w.data, "hello.txt")).mode & 0o777, 0o600);

  // Replacing truncates.
  await w.req("write_file", { path: "hello.txt", data: "x" });
  t.is(text(join(w.data, "hello.txt")), "x");
  await w.req("write_file", { path: "hello.txt", data: "yz", append: true });
  t.is(await w.req("read_file", { path: "hello.txt", encoding: "utf8" }), "xyz");

  await w.req("create_directory", { path: "a/b/c" });
  t.true(statSync(join(w.data, "a/b/c")).isDirectory());
  await w.req("create_directory", { path: "a/b/c" }); // exists: fine
  await w.req("write_file", { path: "a/b/c/d.bin", data: new Uint8Array([1, 2, 3]) });
  symlinkSync("/etc/passwd", join(w.data, "link"));
  t.deepEqual(await w.req("list_directory", { path: "" }), [
    { name: "a", type: "directory" },
    { name: "hello.txt", type: "file" },
    { name: "link", type: "symlink" },
  ]);
  t.deepEqual(await w.req("list_directory", { path: "./a//b/c/" }), [{ name: "d.bin", type: "file" }]);

  const st = await w.req("get_file_metadata", { path: "./a/b//c/d.bin" }) as Record<string, unknown>;
  t.like(st, { path: "a/b/c/d.bin", size: 3, is_file: true, is_directory: false });
  t.true(typeof st.modified === "number" && Math.abs((st.modified as number) - Date.now()) < 60_000);
  t.true(st.created === null || typeof st.created === "number");
  t.like(await w.req("get_file_metadata", { path: "a" }), { path: "a", is_file: false, is_directory: true });
  t.like(await w.req("get_file_metadata", { path: "." }), { path: ".", is_directory: true });

  await w.req("delete_file", { path: "a/b/c/d.bin" });
  t.false(existsSync(join(w.data, "a/b/c/d.bin")));
  await w.req("delete_file", { path: "a/b/c" }); // empty directory
  t.false(existsSync(join(w.data, "a/b/c")));
  await fails(t, w.req("delete_file", { path: "a" }), "invalid_params", /not empty/);
  await fails(t, w.req("delete_file", { path: "a/b/c" }), "not_found");
  await fails(t, w.req("delete_file", { path: "." }), "invalid_params", /data directory itself/);
  await fails(t, w.req("read_file", { path: "nope" }), "not_found", /"nope": no such file/);
  await fails(t, w.req("read_file", { path: "a" }), "invalid_params", /is a directory/);
  await fails(t, w.req("write_file", { path: "a", data: "x" }), "invalid_params", /is a directory/);
  await fails(t, w.req("list_directory", { path: "hello.txt" }), "invalid_params", /not a directory/);
  await fails(t, w.req("read_file", { path: "hello.txt/x" }), "invalid_params", /not a directory/);
  await fails(t, w.req("create_directory", { path: "hello.txt" }), "invalid_params", /not a directory/);
  t.deepEqual(w.audits, ["delete_file", "delete_file"]);
});

test("binary data round-trips exactly; utf8 reads refuse invalid UTF-8", async (t) => {
  const w = await world(t);
  const all = new Uint8Array(256 * 64).map((_, i) => i % 256);
  await w.req("write_file", { path: "bin", data: all });
  t.deepEqual(new Uint8Array(readFileSync(join(w.data, "bin"))), all);
  t.deepEqual(await w.req("read_file", { path: "bin" }), all);
  t.deepEqual(await w.req("read_file", { path: "bin", encoding: "binary" }), all);
  await fails(t, w.req("read_file", { path: "bin", encoding: "utf8" }), "invalid_params", /not valid UTF-8/);
  // A Node Buffer (what the wire decoder produces) is accepted too; empty files work.
  await w.req("write_file", { path: "buf", data: Buffer.from([0, 255]) });
  t.deepEqual(await w.req("read_file", { path: "buf" }), new Uint8Array([0, 255]));
  await w.req("write_file", { path: "empty", data: "" });
  t.deepEqual(await w.req("read_file", { path: "empty" }), new Uint8Array(0));
  await fails(t, w.req("write_file", { path: "x", data: 42 }), "invalid_params");
  await fails(t, w.req("read_file", { path: "bin", encoding: "latin1" }), "invalid_params");
});

test("limits: file size for write, append and read; listing length", async (t) => {
  const w = await world(t);
  await fails(t, w.req("write_file", { path: "big", data: new Uint8Array(MAX_FILE_BYTES + 1) }), "invalid_params", /limited to 8388608 bytes/);
  t.false(existsSync(join(w.data, "big")));
  await w.req("write_file", { path: "max", data: new Uint8Array(MAX_FILE_BYTES) });
  t.is((await w.req("read_file", { path: "max" }) as Uint8Array).length, MAX_FILE_BYTES);
  await fails(t, w.req("write_file", { path: "max", data: "z", append: true }), "quota_exceeded");
  t.is(statSync(join(w.data, "max")).size, MAX_FILE_BYTES);
  writeFileSync(join(w.data, "huge"), new Uint8Array(MAX_FILE_BYTES + 1)); // e.g. by a native module
  await fails(t, w.req("read_file", { path: "huge" }), "quota_exceeded", /larger than/);

  mkdirSync(join(w.data, "many"));
  for (let i = 0; i < MAX_LIST_ENTRIES; i += 500) {
    await Promise.all(Array.from({ length: 500 }, (_, k) => writeFile(join(w.data, "many", `f${i + k}`), "")));
  }
  t.is((await w.req("list_directory", { path: "many" }) as unknown[]).length, MAX_LIST_ENTRIES);
  writeFileSync(join(w.data, "many", "one-more"), "");
  await fails(t, w.req("list_directory", { path: "many" }), "quota_exceeded", /more than 10000 entries/);
});

test("a FIFO or other special file is refused without hanging", async (t) => {
  const w = await world(t);
  execFileSync("mkfifo", [join(w.data, "pipe")]);
  await fails(t, w.req("read_file", { path: "pipe" }), "invalid_params", /not a regular file/);
  await fails(t, w.req("write_file", { path: "pipe", data: "x" }), "invalid_params", /not a regular file/);
  t.like(await w.req("list_directory", { path: "." }), [{ name: "pipe", type: "other" }]);
});

// ---------------------------------------------------------------------------------------
// Permissions and scopes

test("each permission gates exactly its methods", async (t) => {
  const w = await world(t);
  writeFileSync(join(w.data, "f"), "data");
  writeFileSync(join(w.data, "g"), "doomed");
  const calls: Array<[string, Record<string, unknown>, string]> = [
    ["read_file", { path: "f" }, "read_filesystem"],
    ["list_directory", { path: "." }, "read_filesystem"],
    ["get_file_metadata", { path: "f" }, "read_filesystem"],
    ["write_file", { path: "f", data: "new" }, "write_filesystem"],
    ["create_directory", { path: "d" }, "manage_filesystem"],
    ["delete_file", { path: "g" }, "manage_filesystem"],
  ];
  for (const [method, params, permission] of calls) {
    const without = grantsOf(ALL.filter((p) => p !== permission));
    const msg = await fails(t, w.req(method, params, without), "permission_denied");
    t.true(msg.includes(`"${permission}"`), `${method}: ${msg}`);
    // ... and the permission alone is enough.
    await t.notThrowsAsync(w.req(method, params, grantsOf([permission])), method);
  }
  t.is(text(join(w.data, "f")), "new");
  t.true(statSync(join(w.data, "d")).isDirectory());
  t.false(existsSync(join(w.data, "g")));
});

test("scoped grants: read_filesystem=reports covers reports/ only; a scoped deny wins", async (t) => {
  const w = await world(t);
  mkdirSync(join(w.data, "reports/secret"), { recursive: true });
  mkdirSync(join(w.data, "other"));
  mkdirSync(join(w.data, "reportsX"));
  for (const f of ["reports/x", "reports/secret/k", "other/x", "reportsX/y"]) writeFileSync(join(w.data, f), f);

  const scoped = grantsOf(["read_filesystem=reports"]);
  t.is(await w.req("read_file", { path: "reports/x", encoding: "utf8" }, scoped), "reports/x");
  t.is(await w.req("read_file", { path: "./reports//x", encoding: "utf8" }, scoped), "reports/x");
  t.truthy(await w.req("list_directory", { path: "reports" }, scoped));
  await fails(t, w.req("read_file", { path: "other/x" }, scoped), "permission_denied", /not granted for path "other\/x"/);
  await fails(t, w.req("read_file", { path: "reportsX/y" }, scoped), "permission_denied");
  await fails(t, w.req("list_directory", { path: "." }, scoped), "permission_denied");
  await fails(t, w.req("read_file", { path: "reports/../other/x" }, scoped), "invalid_params");
  await fails(t, w.req("write_file", { path: "reports/x", data: "w" }, scoped), "permission_denied", /write_filesystem/);

  const denied = grantsOf(["read_filesystem=reports"], ["read_filesystem=reports/secret"]);
  t.is(await w.req("read_file", { path: "reports/x", encoding: "utf8" }, denied), "reports/x");
  await fails(t, w.req("read_file", { path: "reports/secret/k" }, denied), "permission_denied", /denied for path "reports\/secret\/k"/);
  await fails(t, w.req("read_file", { path: "reports//secret/./k" }, denied), "permission_denied", /denied/);
  await fails(t, w.req("list_directory", { path: "reports/secret" }, denied), "permission_denied", /denied/);
  // A symlink inside the data directory cannot alias its way around the deny either.
  symlinkSync("reports/secret", join(w.data, "alias"));
  await fails(t, w.req("read_file", { path: "alias/k" }, grantsOf(["read_filesystem"], ["read_filesystem=reports/secret"])), "permission_denied", /symbolic link/);

  const allButSecret = grantsOf(ALL, ["write_filesystem=reports/secret"]);
  await fails(t, w.req("write_file", { path: "reports/secret/k", data: "w" }, allButSecret), "permission_denied", /denied/);
  t.is(text(join(w.data, "reports/secret/k")), "reports/secret/k");
  await w.req("write_file", { path: "reports/x", data: "w" }, allButSecret);
  t.is(text(join(w.data, "reports/x")), "w");
});

test("a 1 MiB path refused for its characters is quoted by 64 of them and its length, not escaped whole", (t) => {
  // Its NUL, control character, surrogate, backslash and absolute checks come before the length
  // check: each quoted the whole path (JSON.stringify: ~6 MiB for 1 MiB of NULs) on the host's loop.
  for (const raw of ["\u0000".repeat(1 << 20), "a\u0001".repeat(1 << 19), "\\".repeat(1 << 20), `/${"a".repeat(1 << 20)}`, "\uD800".repeat(1 << 20)]) {
    const err = t.throws(() => parsePath(raw), { message: /^path ".{1,400}"\.\.\. \(\d+ characters\) / });
    t.true(err!.message.length < 600, `${err!.message.length} characters`);
  }
});

test("the canonical path checked against grants is the grant syntax's canonical form", (t) => {
  for (const raw of ["", ".", "a", "a/b", "./a//b/", "a/./b/.", "reports/secret/k", "dir/~x", "é/ü"]) {
    t.is(parsePath(raw).canonical, canonicalRelativePath(raw), raw);
  }
});

// ---------------------------------------------------------------------------------------
// Hostile paths

test("hostile paths are refused with invalid_params before touching the disk", async (t) => {
  const w = await world(t);
  mkdirSync(join(w.data, "a"));
  const hostile = [
    "../x", "..", "a/../../x", "a/..", "a/../a", "/etc/passwd", "/proc/self/environ", "//etc/passwd",
    "a\0b", "x\0", "..\\x", "a\\b", "a\nb", "a\u0007", "\uD800", "x/".repeat(40) + "y",
    "a".repeat(256), "b/".repeat(600),
    "../mod-b/x", "../../outside/secret.txt",
  ];
  for (const p of hostile) {
    for (const [method, extra] of [["read_file", {}], ["write_file", { data: "PWNED" }], ["list_directory", {}], ["get_file_metadata", {}], ["create_directory", {}], ["delete_file", {}]] as const) {
      const msg = await fails(t, w.req(method, { path: p, ...extra }), "invalid_params");
      t.false(msg.includes(w.base), `message leaks the host path: ${msg}`);
    }
  }
  t.is(text(w.secret), "OUTSIDE");
  t.deepEqual(readdirSync(w.outside), ["secret.txt"]);
  t.deepEqual(readdirSync(join(w.base, "data")), ["mod-a"]);
});

test("proc/self/... relative is an ordinary name inside the data directory", async (t) => {
  const w = await world(t);
  await fails(t, w.req("read_file", { path: "proc/self/environ" }), "not_found");
  await w.req("create_directory", { path: "proc/self" });
  await w.req("write_file", { path: "proc/self/environ", data: "mine" });
  t.is(text(join(w.data, "proc/self/environ")), "mine");
  t.is(await w.req("read_file", { path: "proc/self/environ", encoding: "utf8" }), "mine");
  // A top-level "~" name is a name too, not a home directory.
  await w.req("write_file", { path: "~root", data: "tilde" });
  t.is(text(join(w.data, "~root")), "tilde");
});

test("a symlink to a file outside is never followed: read, write, stat refused; delete removes the link", async (t) => {
  const w = await world(t);
  symlinkSync("/etc/passwd", join(w.data, "passwd"));
  const msg = await fails(t, w.req("read_file", { path: "passwd" }), "permission_denied", /symbolic link/);
  t.notRegex(msg, /root:/);
  await fails(t, w.req("get_file_metadata", { path: "passwd" }), "permission_denied", /symbolic link/);

  symlinkSync(w.secret, join(w.data, "secret"));
  await fails(t, w.req("read_file", { path: "secret", encoding: "utf8" }), "permission_denied", /symbolic links are not followed/);
  await fails(t, w.req("write_file", { path: "secret", data: "PWNED" }), "permission_denied", /symbolic link/);
  await fails(t, w.req("write_file", { path: "secret", data: "PWNED", append: true }), "permission_denied", /symbolic link/);
  t.is(text(w.secret), "OUTSIDE");

  // A dangling link: O_CREAT through it would create the target.
  const target = join(w.outside, "created-through-link");
  symlinkSync(target, join(w.data, "dangling"));
  await fails(t, w.req("write_file", { path: "dangling", data: "PWNED" }), "permission_denied", /symbolic link/);
  t.false(existsSync(target));
  await fails(t, w.req("create_directory", { path: "dangling" }), "permission_denied", /symbolic link/);
  t.false(existsSync(target));

  await w.req("delete_file", { path: "secret" });
  t.false(existsSync(join(w.data, "secret")));
  t.is(text(w.secret), "OUTSIDE");
});

test("a symlinked directory component is never followed", async (t) => {
  const w = await world(t);
  symlinkSync(w.outside, join(w.data, "dir"));
  mkdirSync(join(w.data, "real"));
  symlinkSync(w.outside, join(w.data, "real", "deeper"));
  for (const base of ["dir", "real/deeper"]) {
    await fails(t, w.req("read_file", { path: `${base}/secret.txt` }), "permission_denied", new RegExp(`"${base}" is a symbolic link`));
    await fails(t, w.req("write_file", { path: `${base}/secret.txt`, data: "PWNED" }), "permission_denied", /symbolic link/);
    await fails(t, w.req("write_file", { path: `${base}/new.txt`, data: "PWNED" }), "permission_denied", /symbolic link/);
    await fails(t, w.req("list_directory", { path: base }), "permission_denied", /symbolic link/);
    await fails(t, w.req("list_directory", { path: `${base}/` }), "permission_denied", /symbolic link/);
    await fails(t, w.req("create_directory", { path: `${base}/sub` }), "permission_denied", /symbolic link/);
    await fails(t, w.req("get_file_metadata", { path: `${base}/secret.txt` }), "permission_denied", /symbolic link/);
    await fails(t, w.req("delete_file", { path: `${base}/secret.txt` }), "permission_denied", /symbolic link/);
  }
  t.is(text(w.secret), "OUTSIDE");
  t.deepEqual(readdirSync(w.outside), ["secret.txt"]);
});

test("a hard link to an outside file is neither read nor written", async (t) => {
  const w = await world(t);
  linkSync(w.secret, join(w.data, "hard"));
  await fails(t, w.req("read_file", { path: "hard" }), "permission_denied", /hard links/);
  await fails(t, w.req("write_file", { path: "hard", data: "PWNED" }), "permission_denied", /hard links/);
  await fails(t, w.req("write_file", { path: "hard", data: "PWNED", append: true }), "permission_denied", /hard links/);
  t.is(text(w.secret), "OUTSIDE");
  // Deleting removes only this name.
  await w.req("delete_file", { path: "hard" });
  t.is(text(w.secret), "OUTSIDE");
});

test("a data directory that is a symlink is refused for every method", async (t) => {
  const w = await world(t);
  const linked = join(w.base, "data", "mod-b");
  symlinkSync(w.outside, linked);
  const hub = new ApiHub();
  const all = grantsOf(ALL);
  for (const [method, params] of [
    ["read_file", { path: "secret.txt" }], ["write_file", { path: "secret.txt", data: "PWNED" }], ["write_file", { path: "new", data: "PWNED" }],
    ["list_directory", { path: "." }], ["get_file_metadata", { path: "." }], ["create_directory", { path: "d" }], ["delete_file", { path: "secret.txt" }],
  ] as const) {
    await fails(t, hub.handle(callFor("mod-b", linked), all, method, params), "permission_denied", /data directory is a symbolic link/);
  }
  t.is(text(w.secret), "OUTSIDE");
  t.deepEqual(readdirSync(w.outside), ["secret.txt"]);
  // A missing data directory is "unavailable", not created on the fly somewhere.
  await fails(t, hub.handle(callFor("mod-c", join(w.base, "data", "mod-c")), all, "read_file", { path: "x" }), "unavailable");
});

test("two modules' data directories are separate", async (t) => {
  const w = await world(t);
  const dataB = join(w.base, "data", "mod-b");
  mkdirSync(dataB);
  await w.req("write_file", { path: "x", data: "from a" });
  await w.reqAs("mod-b", dataB, "write_file", { path: "y", data: "from b" });
  await fails(t, w.reqAs("mod-b", dataB, "read_file", { path: "x" }), "not_found");
  await fails(t, w.reqAs("mod-b", dataB, "read_file", { path: "../mod-a/x" }), "invalid_params");
  t.deepEqual(await w.reqAs("mod-b", dataB, "list_directory", { path: "" }), [{ name: "y", type: "file" }]);
  t.deepEqual(await w.req("list_directory", { path: "" }), [{ name: "x", type: "file" }]);
  t.is(text(join(w.data, "x")), "from a");
  t.is(text(join(dataB, "y")), "from b");
});

// ---------------------------------------------------------------------------------------
// Races: a native module swapping path components for symlinks while the host works

// Runs in a separate process so the swaps really interleave with the host's file operations.
// Each rename is atomic; the sequences alternate "sw" between a real directory and a symlink to
// the outside directory, and "g" between a real file and a symlink to the outside secret.
const SWAPPER = String.raw`
const fs = require("fs");
const [data, outside] = process.argv.slice(1);
const j = (n) => data + "/" + n;
fs.mkdirSync(j("sw")); fs.writeFileSync(j("sw/f"), "inside");
fs.symlinkSync(outside, j("swlink"));
fs.writeFileSync(j("g"), "inside");
fs.symlinkSync(outside + "/secret.txt", j("glink"));
let n = 0;
const step = (from, to) => { try { fs.renameSync(j(from), j(to)); } catch {} };
process.stdout.write("ready\n");
for (;;) {
  step("sw", "swhold"); step("swlink", "sw"); step("sw", "swlink"); step("swhold", "sw");
  step("g", "ghold"); step("glink", "g"); step("g", "glink"); step("ghold", "g");
  if (++n % 1000 === 0) process.stdout.write(n + "\n");
}
`;

async function startSwapper(t: ExecutionContext, data: string, outside: string): Promise<void> {
  const child = spawn(process.execPath, ["-e", SWAPPER, data, outside], { stdio: ["ignore", "pipe", "inherit"] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  t.teardown(async () => {
    child.kill("SIGKILL");
    await exited;
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout.once("data", () => resolve());
    child.once("exit", (code) => reject(new Error(`swapper exited with ${code}`)));
  });
}

test.serial("symlinks swapped in concurrently never let a read escape", async (t) => {
  const w = await world(t);
  await startSwapper(t, w.data, w.outside);
  const seen = new Map<string, number>();
  const count = (k: string) => seen.set(k, (seen.get(k) ?? 0) + 1);
  const readOne = async (p: string): Promise<void> => {
    try {
      const got = await w.req("read_file", { path: p, encoding: "utf8" });
      t.is(got, "inside", `read ${p} returned outside content`);
      count(`${p}:ok`);
    } catch (err) {
      t.true(err instanceof HubError, String(err));
      const e = err as HubError;
      t.true(["not_found", "permission_denied", "invalid_params"].includes(e.wire.code), e.message);
      t.notRegex(e.message, /OUTSIDE/);
      count(`${p}:${e.wire.code}`);
    }
  };
  const peek = async (method: string, p: string): Promise<void> => {
    try {
      const got = JSON.stringify(await w.req(method, { path: p }));
      t.false(got.includes("secret.txt") || got.includes('"size":7'), `${method} ${p} escaped: ${got}`);
    } catch (err) {
      t.true(err instanceof HubError, String(err));
    }
  };
  for (let i = 0; i < 1500; i++) {
    await Promise.all([
      readOne("sw/f"), readOne("g"), readOne("sw/f"), readOne("g"),
      peek("list_directory", "sw"), peek("get_file_metadata", "sw/secret.txt"), peek("get_file_metadata", "g"),
    ]);
  }
  t.log(Object.fromEntries(seen));
  // The race was real: both outcomes happened for both paths.
  for (const p of ["sw/f", "g"]) {
    t.true((seen.get(`${p}:ok`) ?? 0) > 0, `${p} never read`);
    t.true((seen.get(`${p}:permission_denied`) ?? 0) > 0, `${p} never met a symlink`);
  }
});

test.serial("symlinks swapped in concurrently never let a write or mkdir land outside", async (t) => {
  const w = await world(t);
  await startSwapper(t, w.data, w.outside);
  let wrote = 0;
  let refused = 0;
  for (let i = 0; i < 1000; i++) {
    // Several at once, so the host's thread pool works on them while the swapper renames.
    const results = await Promise.allSettled([
      w.req("write_file", { path: "sw/w", data: `PWNED ${i}` }),
      w.req("write_file", { path: "sw/w", data: `PWNED ${i}` }),
      w.req("write_file", { path: "sw/w2", data: `PWNED ${i}`, append: true }),
      w.req("write_file", { path: `sw/w${i % 5}`, data: `PWNED ${i}` }),
      w.req("write_file", { path: "g", data: `PWNED ${i}` }),
      w.req("write_file", { path: "g", data: "+", append: true }),
      w.req("create_directory", { path: "sw/newdir" }),
      w.req("create_directory", { path: `sw/d${i % 7}/e` }),
      w.req("delete_file", { path: "sw/secret.txt" }),
      w.req("delete_file", { path: `sw/d${(i + 3) % 7}/e` }),
    ]);
    for (const r of results) {
      if (r.status === "fulfilled") wrote++;
      else {
        t.true(r.reason instanceof HubError, String(r.reason));
        refused++;
      }
    }
    if (i % 250 === 0) t.deepEqual(readdirSync(w.outside), ["secret.txt"]);
  }
  t.log({ wrote, refused });
  t.true(wrote > 0 && refused > 0, "the race did not happen");
  t.is(text(w.secret), "OUTSIDE");
  t.deepEqual(readdirSync(w.outside), ["secret.txt"]);
});

// ---------------------------------------------------------------------------------------
// From a real TypeScript module: ctx.fs, positional arguments, options, binary across the isolate

test("a TypeScript module uses ctx.fs in its own data directory", async (t) => {
  const { startHost } = await import("./helpers/host.ts");
  const caps = ["read_filesystem", "write_filesystem", "manage_filesystem"];
  const h = await startHost(t, {
    inline: {
      filer: {
        toml: `name = "filer"\nversion = "0.1.0"\nentry_point = "index.ts"\ncapabilities = ${JSON.stringify(caps)}\n`,
        files: {
          "index.ts": `
export default async function start(ctx: any) {
  const out: Record<string, unknown> = {};
  await ctx.fs.createDirectory("notes/2026");
  await ctx.fs.writeFile("notes/2026/a.txt", "hello");
  await ctx.fs.writeFile("notes/2026/a.txt", " world", { append: true });
  out.text = await ctx.fs.readFile("notes/2026/a.txt", "utf8");
  await ctx.fs.writeFile("bin", new Uint8Array([0, 1, 254, 255]));
  const bytes = await ctx.fs.readFile("bin");
  out.binary = bytes instanceof Uint8Array ? Array.from(bytes) : String(bytes);
  out.list = await ctx.fs.listDirectory(".");
  out.size = (await ctx.fs.stat("notes/2026/a.txt")).size;
  for (const p of ["../escape", "/etc/passwd"]) {
    try { await ctx.fs.readFile(p); out[p] = "read!"; } catch (e: any) { out[p] = e.code; }
  }
  await ctx.fs.deleteFile("bin");
  ctx.log.info("fs-done", { out: JSON.stringify(out) });
}
`,
        },
      },
    },
    grants: { filer: caps },
  });
  const rec = await h.waitForLog(/^fs-done$/, { source: "filer" });
  const out = JSON.parse(String(rec.fields?.out)) as Record<string, unknown>;
  t.deepEqual(out, {
    text: "hello world",
    binary: [0, 1, 254, 255],
    list: [{ name: "bin", type: "file" }, { name: "notes", type: "directory" }],
    size: 11,
    "../escape": "invalid_params",
    "/etc/passwd": "invalid_params",
  });
  const dataDir = join(h.config.modules.data_dir, "filer");
  t.is(readFileSync(join(dataDir, "notes/2026/a.txt"), "utf8"), "hello world");
  t.false(existsSync(join(dataDir, "bin")));
});

// Only meaningful when the host runs as root (native modules then run as their own uid); CI runs as root.
const asRoot = process.getuid?.() === 0 ? test : test.skip;

asRoot("what the host creates in a module's data directory belongs to the directory's owner (needs root)", async (t) => {
  const w = await world(t);
  const uid = 1_900_012_345;
  execFileSync("chown", [`${uid}:${uid}`, w.data]);
  await w.req("write_file", { path: "made-by-host.txt", data: "x" });
  await w.req("create_directory", { path: "sub/deeper" });
  await w.req("write_file", { path: "sub/deeper/f.txt", data: "y" });
  for (const rel of ["made-by-host.txt", "sub", "sub/deeper", "sub/deeper/f.txt"]) {
    const st = statSync(join(w.data, rel));
    t.is(st.uid, uid, rel);
    t.is(st.gid, uid, rel);
  }
});
