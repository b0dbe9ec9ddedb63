// Stale cgroup directories of hosts that are gone (runtime/sandbox/cgroup.ts, issue #8). A host
// directory was judged by its pid alone: after the pid was reused by any process, a dead host's
// directory stayed for as long as that process lived. It now carries the host's start time
// (ticks after boot, /proc/PID/stat), which a reused pid does not have. In a fake cgroup2 tree
// with a fake /proc for the start times (pidAlive still asks the real kernel, so the "reused"
// pid is a live child of the test).

import test from "ava";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { probeCgroupsWith, startTimeOf } from "../runtime/sandbox/cgroup.ts";

test("startTimeOf reads field 22 of /proc/PID/stat, past a command name with spaces and parentheses; null for a pid that is gone", async (t) => {
  const proc = await mkdtemp(path.join(os.tmpdir(), "modhost-proc-"));
  t.teardown(() => rm(proc, { recursive: true, force: true }));
  await mkdir(path.join(proc, "77"));
  // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime ...
  await writeFile(path.join(proc, "77", "stat"), "77 (a (b) c) S 1 77 77 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 123456 1000 200 ...\n");
  t.is(await startTimeOf(77, proc), "123456");
  t.is(await startTimeOf(78, proc), null);
  const own = await startTimeOf(process.pid);
  t.regex(own ?? "", /^\d+$/, "this process's own, from the real /proc");
  const fields = (await readFile(`/proc/${process.pid}/stat`, "utf8")).split(") ")[1]!.split(" ");
  t.is(own, fields[19] ?? null);
});

test("a host directory whose pid was reused (alive, another start time) is removed; a live host's (same start time), an older host's without a start time whose pid lives, and another PID namespace's stay", async (t) => {
  const root = await mkdtemp(path.join(os.tmpdir(), "modhost-cgroup2-"));
  const proc = await mkdtemp(path.join(os.tmpdir(), "modhost-proc-"));
  t.teardown(() => Promise.all([rm(root, { recursive: true, force: true }), rm(proc, { recursive: true, force: true })]));
  await writeFile(path.join(root, "cgroup.controllers"), "cpu memory pids\n");
  await writeFile(path.join(root, "cgroup.subtree_control"), "");
  // A live process standing for "whoever has the pid now": its start time in the fake /proc is 500.
  const child = spawn("sleep", ["60"], { stdio: "ignore" });
  t.teardown(() => child.kill("SIGKILL"));
  await new Promise((resolve) => child.once("spawn", resolve));
  const live = child.pid!;
  await mkdir(path.join(proc, String(live)));
  await writeFile(path.join(proc, String(live), "stat"), `${live} (sleep) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 500 1000 200\n`);
  const dead = await new Promise<number>((resolve) => { const p = spawn("/bin/true"); p.on("exit", () => resolve(p.pid!)); });

  const reused = path.join(root, `modhost-1-${live}-499`);
  const running = path.join(root, `modhost-1-${live}-500`);
  const older = path.join(root, `modhost-1-${live}`);
  const gone = path.join(root, `modhost-1-${dead}-12`);
  const otherNs = path.join(root, `modhost-2-${dead}-12`);
  for (const d of [reused, running, older, gone, otherNs]) await mkdir(d);

  const support = await probeCgroupsWith({
    root: true, pid: 4242, pidNs: "1", startTime: "77", proc,
    mountInfo: `30 20 0:26 / ${root} rw,nosuid - cgroup2 cgroup2 rw\n`,
    procCgroup: "0::/\n",
  });
  t.is(support.kind, "v2", support.problems.join("; "));
  t.false(existsSync(reused), "a dead host's directory whose pid another process now has is removed");
  t.deepEqual(support.hostDirs.memory, path.join(root, "modhost-1-4242-77"), "its own directory carries its start time");
  t.false(existsSync(gone), "a dead host's directory is removed");
  t.true(existsSync(running), "a live host's directory stays");
  t.true(existsSync(older), "an older host's directory (no start time) whose pid lives stays");
  t.true(existsSync(otherNs), "another PID namespace's stays (its pids mean nothing here)");
});
