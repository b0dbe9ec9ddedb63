// The data directory hand-over (runtime/sandbox/datadir.ts): a directory the host has just made
// (its own, empty) is handed to the module's uid in-process; anything else (files in it, another
// owner) goes through `chown -R`, which walks the tree without following symlinks. Either way the
// result is the whole tree owned by the module's uid and the directory mode 0700. Root only.

import test from "ava";
import { chmod, lstat, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { prepareDataDir } from "../runtime/sandbox/datadir.ts";

const root = process.getuid?.() === 0;
const rootTest = root ? test : test.skip;
const CHOWN = "/bin/chown";
const UID = 61_234;

async function base(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "modhost-datadir-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

rootTest("a fresh, empty data directory of the host's is handed to the module's uid, mode 0700", async (t) => {
  const dir = path.join(await base(t), "data");
  await mkdir(dir, { mode: 0o755 });
  await chmod(dir, 0o700);
  await prepareDataDir(dir, UID, UID, CHOWN);
  const st = await lstat(dir);
  t.is(st.uid, UID);
  t.is(st.gid, UID);
  t.is(st.mode & 0o777, 0o700);
});

rootTest("a data directory with files in it is handed over whole (chown -R), without following a symlink out", async (t) => {
  const outside = path.join(await base(t), "host-file");
  await writeFile(outside, "host's");
  const dir = path.join(path.dirname(outside), "data");
  await mkdir(path.join(dir, "sub"), { recursive: true, mode: 0o700 });
  await writeFile(path.join(dir, "sub", "f"), "x");
  await symlink(outside, path.join(dir, "link"));
  await prepareDataDir(dir, UID, UID, CHOWN);
  t.is((await lstat(dir)).uid, UID);
  t.is((await lstat(path.join(dir, "sub"))).uid, UID);
  t.is((await lstat(path.join(dir, "sub", "f"))).uid, UID);
  t.is((await lstat(path.join(dir, "link"))).uid, UID, "the link itself");
  t.is((await lstat(outside)).uid, 0, "not what it points to");
});

rootTest("an empty data directory of another uid (the module's uid changed) is handed to the new one", async (t) => {
  const dir = path.join(await base(t), "data");
  await mkdir(dir, { mode: 0o700 });
  await prepareDataDir(dir, UID + 1, UID + 1, CHOWN);
  await prepareDataDir(dir, UID, UID, CHOWN);
  const st = await lstat(dir);
  t.is(st.uid, UID);
  t.is(st.mode & 0o777, 0o700);
});

rootTest("a data directory that is not a directory is refused", async (t) => {
  const file = path.join(await base(t), "data");
  await writeFile(file, "");
  await t.throwsAsync(prepareDataDir(file, UID, UID, CHOWN), { message: /is not a directory/ });
});
