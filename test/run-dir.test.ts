// The supervisor's run directory (sockets, policy files, the host's lock) is made at the first
// start of a module. A failure to make it (the temporary directory missing or full) fails that
// start, and is not kept: the next start tries again.

import test from "ava";
import { mkdir, readdir } from "node:fs/promises";
import path from "node:path";
import { GOOD_GRANTS, startHost, tempDir } from "./helpers/host.ts";

test.serial("a run directory that could not be made fails the start that needed it, and the next start makes it", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t, "modhost-rundir-");
  const tmp = path.join(dir, "tmp-not-yet");
  const before = process.env["TMPDIR"];
  // This file's worker is its own process: TMPDIR changes nothing outside it.
  process.env["TMPDIR"] = tmp;
  t.teardown(() => {
    if (before === undefined) delete process.env["TMPDIR"];
    else process.env["TMPDIR"] = before;
  });
  const h = await startHost(t, { dir, modules: ["good"], grants: { good: GOOD_GRANTS } });
  const failed = h.mustStatus("good");
  t.is(failed.state, "failed");
  t.regex(failed.problem ?? "", /cannot make the host.s run directory in .*tmp-not-yet: ENOENT/);
  await mkdir(tmp);
  const loaded = await h.manager.load("good");
  t.is(loaded.state, "running");
  t.deepEqual((await readdir(tmp)).filter((n) => n.startsWith("modhost-run-")).length, 1);
});
