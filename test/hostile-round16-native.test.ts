// Hostile probes of round 16 (issue #8), under the real host and sandbox, in one run next to
// the canary ("good", which stores every block). Native modules attack what the host reads and
// owns on their behalf (test/fixtures/hostile-round16/main.ts, test/fixtures/hostile/hostile.c):
//   r16-daemon   double-forks a daemon (setsid, SIGTERM and SIGHUP ignored) that holds a file open
//                on its data volume, with its working directory there, and is reloaded: nothing
//                of it is left, its volume is unmounted and mounted again at once
//   r16-respawn  every process forks without end at its process limit, SIGTERM ignored; stopped
//   r16-threads  as many threads as it can get
//   r16-names    its data directory (scanned) full of names with newlines, terminal escapes and
//                invalid UTF-8, symbolic links in a loop and to / and /proc/1/root, a deep tree,
//                thousands of empty files, a sparse file of 1 TiB apparent size
//   r16-vnames   the same on a data volume
//   r16-stdio    invalid UTF-8, terminal escapes, NULs and 1 MiB lines on stdout and stderr
//   r16-fill     fills its data volume until the kernel refuses, exits, and starts again
//   r16-storage  storage at its limits, transactions racing storage_max_bytes, a full store reopened
//   r16-pub      events of the largest payload as fast as the host takes them, to r16-sub (keeps
//                up), r16-stuck (never acknowledges) and r16-deafsub (stops reading)
// While they run: the canary stores every block within 5 s, RPC answers within 5 s, no turn of
// the host's loop takes more than 250 ms of its CPU, its heap, log and open descriptors stay
// within stated bounds. After each module's unload no process of its uid, no mount and no
// cgroup of it is left.

import test from "ava";
import { readdirSync, readFileSync } from "node:fs";
import { chmod, mkdir } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { buildModulesDir, sleep, startHost, tempDir, GOOD_GRANTS } from "./helpers/host.ts";
import { compileHostile, writeNodeNative } from "./helpers/native.ts";
import { canaryRound } from "./helpers/canary.ts";
import { watchHost } from "./helpers/host-watch.ts";
import { eventually, processesOf } from "./helpers/procs.ts";
import { UID_TABLE_FILE, UidTable } from "../runtime/sandbox/uids.ts";
import { detectCgroups } from "../runtime/sandbox/cgroup.ts";

const PROBE = fileURLToPath(new URL("./fixtures/hostile-round16/main.ts", import.meta.url));
const MB = 1024 * 1024;
/** The module's cgroup directories (`NAME-N`) left under the host's, in every controller. */
const cgroupsOf = async (name: string) => {
  const { hostDirs } = await detectCgroups();
  return [...new Set(Object.values(hostDirs))].flatMap((d) => readdirSync(d!).filter((e) => new RegExp(`^${name}-\\d+$`).test(e)));
};
const mountedOn = (dir: string) => readFileSync("/proc/self/mountinfo", "utf8").split("\n").some((l) => l.split(" ")[4] === dir);

/** name -> [config, capabilities, limits] */
const PROBES: Record<string, [Record<string, unknown>, string[], Record<string, unknown>]> = {
  // 16 MiB: a quota that made an image too large to reserve the rest of, before 28d9f18.
  "r16-daemon": [{ mode: "daemon" }, [], { max_data_bytes: 16 * MB }],
  "r16-respawn": [{ mode: "exec", attack: ["respawn"] }, [], { processes: 32, data_volume: "scan" }],
  "r16-threads": [{ mode: "exec", attack: ["threads", "100000"] }, [], { processes: 256, data_volume: "scan" }],
  "r16-names": [{ mode: "names", depth: 40, files: 2000 }, [], { data_volume: "scan" }],
  "r16-vnames": [{ mode: "names", depth: 300, files: 2000 }, [], { max_data_bytes: 16 * MB }],
  "r16-stdio": [{ mode: "stdio", duration_ms: 4000 }, [], { data_volume: "scan" }],
  "r16-fill": [{ mode: "fill", exit: true }, [], { max_data_bytes: 8 * MB }],
  "r16-storage": [{ mode: "storage", racers: 12, racer_bytes: 200_000, exit: true }, ["read_storage", "write_storage"], { storage_max_bytes: MB, data_volume: "scan" }],
  // Events of the largest payload as fast as the host takes them, to a subscriber that keeps
  // up, one that never finishes handling (no ack) and one that stops reading.
  "r16-pub": [{ mode: "publish", duration_ms: 8000 }, ["publish_events"], { data_volume: "scan" }],
  "r16-sub": [{ mode: "sub", topic: "r16-pub:big" }, ["subscribe_events"], { data_volume: "scan" }],
  "r16-stuck": [{ mode: "stuck", topic: "r16-pub:big" }, ["subscribe_events"], { data_volume: "scan" }],
  "r16-deafsub": [{ mode: "deaf", topic: "r16-pub:big" }, ["subscribe_events"], { data_volume: "scan", max_unread_bytes: MB, restart: "never" }],
};

test("native probes of what the host reads and owns for a module (a double-forked daemon holding its data volume, forking without end at its process limit, threads to the limit, hostile names, links and deep trees in its data directory and volume, its volume's block device, garbage on stdout/stderr, a volume filled to the last block, storage at its limits and racing its quota, events of the largest payload to a subscriber that keeps up, one that never acknowledges and one that stops reading): the canary keeps up, RPC answers, no loop turn over 250 ms of CPU, no process, mount or cgroup of a stopped module is left, and each starts again", async (t) => {
  t.timeout(600_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  for (const [name, [config, caps]] of Object.entries(PROBES)) {
    await writeNodeNative(modulesDir, name, PROBE, caps);
    if (config.mode !== "exec") continue;
    // Its attack binary runs from its data directory, which a data volume would mount noexec.
    const dataDir = path.join(dir, "data", "modules", name);
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    await compileHostile(path.join(dataDir, "hostile"));
    await chmod(path.join(dataDir, "hostile"), 0o755);
  }
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, ...Object.fromEntries(Object.entries(PROBES).map(([n, [, caps]]) => [n, caps])) },
    moduleConfigs: Object.fromEntries(Object.entries(PROBES).map(([n, [c]]) => [n, c])),
    moduleLimits: Object.fromEntries(Object.entries(PROBES).map(([n, [, , l]]) => [n, l])),
  });
  await h.waitForState("good", "running", 60_000);
  for (const n of ["r16-daemon", "r16-vnames", "r16-fill"]) t.is(h.status(n)?.data?.mode, "volume", `${n} has a data volume`);
  const watch = watchHost(t, h);
  for (let i = 0; i < 6; i++) {
    await watch.round();
    watch.sample();
    await sleep(1000);
  }
  watch.assertCanary(t);
  const reports = new Map<string, Record<string, any>>();
  const report = async (source: string, since?: number) => (await h.waitForLog(/^probe report$/, { source, since, timeoutMs: 120_000 })).fields as Record<string, any>;
  for (const n of Object.keys(PROBES)) reports.set(n, await report(n));
  for (const [n, r] of reports) t.log(n, JSON.stringify(r).slice(0, 600));
  const uids = await UidTable.open(path.join(h.config.modules.data_dir, UID_TABLE_FILE));
  const uidOf = (n: string) => uids.get(n) ?? NaN;
  const dataOf = (n: string) => path.join(h.config.modules.data_dir, n);

  // A daemon in a session of its own, holding a file on the volume: gone with its module, the
  // volume unmounted and mounted again at once.
  t.regex(String(reports.get("r16-daemon")!.held), /^daemon \d+/, "the daemon holds a file open on its data volume");
  const beforeReload = Date.now();
  await h.manager.unload("r16-daemon");
  t.true(await eventually(async () => (await processesOf(uidOf("r16-daemon"))) === 0, 30_000), "no process of r16-daemon is left, its daemon included");
  const unmounted = await eventually(async () => !mountedOn(dataOf("r16-daemon")), 20_000);
  t.log(`r16-daemon: processes gone and volume ${unmounted ? "unmounted" : "still mounted"} ${Date.now() - beforeReload} ms after its unload began`);
  t.true(unmounted, "its volume is unmounted");
  const mark = h.mark();
  await h.manager.load("r16-daemon");
  await h.waitForState("r16-daemon", "running", 60_000);
  t.log(`r16-daemon unloaded and loaded again in ${Date.now() - beforeReload} ms`);
  t.regex(String((await report("r16-daemon", mark)).held), /^daemon \d+/, "the new instance has its volume, the old daemon's file in it");

  // Forking without end at its process limit, SIGTERM ignored: every process is killed.
  t.is(reports.get("r16-respawn")!.results?.respawn, "ok forking");
  t.true((await processesOf(uidOf("r16-respawn"))) > 1, "it forks");
  const t0 = Date.now();
  await h.manager.unload("r16-respawn");
  t.true(await eventually(async () => (await processesOf(uidOf("r16-respawn"))) === 0, 30_000), "no process of r16-respawn is left");
  t.log(`r16-respawn unloaded, every process gone, in ${Date.now() - t0} ms`);
  t.regex(String(reports.get("r16-threads")!.results?.threads), /^EAGAIN \d+$/, "threads are refused at the process limit");

  // Hostile names and links: counted, never followed; the module runs on.
  for (const n of ["r16-names", "r16-vnames"]) {
    t.deepEqual(Object.entries(reports.get(n)!.done).filter(([k, v]) => v !== "ok" && k !== "sparse"), [], `${n} made every hostile name`);
    t.is(h.status(n)?.state, "running", `${n} runs`);
    t.deepEqual(Object.entries(reports.get(n)!.devices).filter(([, v]) => v !== "ENOENT"), [], `${n} finds no block device to write (its volume's loop device included)`);
  }
  t.true(await eventually(async () => (h.status("r16-names")?.data?.files ?? 0) > 2000, 30_000), "the scan counted its files and links, following none");
  // Garbage on stdout and stderr: escaped, cut, and held to the log rate.
  t.false(h.lines.some((l) => /[\x00\x1b\x07]/.test(l)), "no NUL, escape or bell reaches the host's log unescaped");
  // A volume filled to its last block: the module starts again on it.
  t.is(reports.get("r16-fill")!.bytesStop, "ENOSPC");
  t.true(reports.get("r16-fill")!.bytes <= 8 * MB, `it wrote ${reports.get("r16-fill")!.bytes} bytes`);
  await h.waitFor(() => h.lines.some((l) => /\[r16-fill\] probe report .*again=true/.test(l)), 60_000, "r16-fill to start again on its full volume");
  // Storage: each refused transaction names its limit; racing transactions stay within the quota; the store reopens.
  const st = reports.get("r16-storage")!;
  for (const k of ["bad0", "bad1", "bad2", "bad3"]) t.log(k, JSON.stringify(st[k]));
  t.regex(st.bad0.message, /max_key_bytes|1024/, "a transaction whose first op's key is too long names that limit");
  t.regex(st.bad1.message, /max_value_bytes|1048576/, "one whose first op's value is too large names that limit");
  t.regex(st.bad2.message, /^ops\[1\]: key is at least 1025 bytes/, "an empty key is allowed: the next op's long key is named, by its place");
  t.regex(st.bad3.message, /ops\.3\.op/, "an unknown operation is named by its place");
  t.is(st.absentDeletes.ok, true, "10,000 deletes of absent keys in one transaction");
  t.deepEqual([st.inverted.ok, st.empty.ok, st.prefixOutside.ok], [0, 0, 0], "inverted and empty ranges hold nothing");
  t.is(st.ffScan.ok, 100);
  t.true(st.race.ok >= 1 && st.race.quota_exceeded >= 1, `racing transactions: ${JSON.stringify(st.race)}`);
  t.true(st.usage.bytes <= MB, `the store holds ${st.usage.bytes} bytes of its 1 MiB quota`);
  const again = (await h.waitForLog(/^probe report$/, { source: "r16-storage", since: h.records.indexOf(h.records.find((r) => r.source === "r16-storage" && /^probe report$/.test(r.message))!) + 1, timeoutMs: 60_000 })).fields as Record<string, any>;
  t.deepEqual(again.again, st.usage, "the store reopens as it was left");

  // Fan-out: the publisher is held to what its subscribers take; the one that stopped reading is disconnected.
  const pub = reports.get("r16-pub")!;
  t.log("r16-pub", JSON.stringify(pub));
  t.true(pub.published > 0 && pub.codes.ok > 0, "the publisher published");
  const deafCrash = await h.waitFor(() => h.events.find((e) => e.type === "ModuleCrashed" && (e.payload as { module: string }).module === "r16-deafsub"), 60_000, "r16-deafsub to be disconnected");
  t.regex((deafCrash.payload as { error: string }).error, /max_unread_bytes/, "the subscriber that stopped reading was disconnected naming max_unread_bytes");
  for (const n of ["r16-sub", "r16-stuck"]) t.is(h.status(n)?.state, "running", `${n} runs`);

  await watch.finish(t, Object.keys(PROBES).length);

  t.true((await cgroupsOf("r16-names")).length > 0, "a running module's cgroups are found where the check below looks");
  for (const n of Object.keys(PROBES)) {
    await h.manager.unload(n).catch(() => undefined);
    t.true(await eventually(async () => (await processesOf(uidOf(n))) === 0, 30_000), `no process of ${n} is left after its unload`);
    t.true(await eventually(async () => !mountedOn(dataOf(n)), 20_000), `${n}'s volume is unmounted`);
    t.true(await eventually(async () => (await cgroupsOf(n)).length === 0, 20_000), `${n}'s cgroups are removed`);
  }
  await canaryRound(h).then((r) => t.true(r.stored, "the canary stores the next block"));
});
