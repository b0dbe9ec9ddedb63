// What the kernel-limit and uid tests share: the kernel-hog module (test/fixtures/kernel-hog,
// running hostile.c from its data directory), a module's recorded uid, and the canary's check.

import type { ExecutionContext } from "ava";
import { chmod, copyFile, mkdir } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { UID_TABLE_FILE, UidTable } from "../../runtime/sandbox/uids.ts";
import type { TestHost } from "./host.ts";
import { writeNodeNative } from "./native.ts";

const MAIN = fileURLToPath(new URL("../fixtures/kernel-hog/main.ts", import.meta.url));

/** A kernel-hog module named `name` in `dir`'s modules directory, `binary` (hostile.c, compiled) in its data directory. */
export async function writeHog(dir: string, name: string, binary: string): Promise<void> {
  await writeNodeNative(path.join(dir, "modules"), name, MAIN);
  const dataDir = path.join(dir, "data", "modules", name);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  await copyFile(binary, path.join(dataDir, "hostile"));
  await chmod(path.join(dataDir, "hostile"), 0o755);
}

/** The uid the host's table records for `name`. */
export async function uidOf(h: TestHost, name: string): Promise<number> {
  const uid = (await UidTable.open(path.join(h.config.modules.data_dir, UID_TABLE_FILE))).get(name);
  if (uid === undefined) throw new Error(`no uid recorded for ${name}`);
  return uid;
}

/** The canary stores the next block, and the host still answers. */
export async function canaryCarriesOn(t: ExecutionContext, h: TestHost): Promise<void> {
  const mark = h.mark();
  const height = await h.mine(1);
  await h.waitForLog(new RegExp(`stored block ${height}`), { source: "good", since: mark, timeoutMs: 20_000 });
  t.is(h.mustStatus("good").state, "running", "the canary runs");
}
