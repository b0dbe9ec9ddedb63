// Module uids and single-use uids are unique machine-wide (runtime/sandbox/uid-claims.ts),
// across hosts and data directories: processes allocating at once from tables in different
// data directories, a table copied to another data directory, claims left stale by a data
// directory removed and by a process killed with -9 while it held single-use uids, a claims
// directory full of stale claims, and two real hosts at once where a module of one holds
// every process it may have under its uid while a module of the other, whose name hashes to
// the same uid, restarts. Needs root (for the hosts: bubblewrap, cgroups and cc, as
// test/kernel-limits.test.ts).

import test from "ava";
import { spawn } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { moduleUid } from "../runtime/sandbox/policy.ts";
import { UID_TABLE_FILE, UidTable } from "../runtime/sandbox/uids.ts";
import { SWEEP_AT, UidClaims } from "../runtime/sandbox/uid-claims.ts";
import { startHost, tempDir, GOOD_GRANTS, type TestHost } from "./helpers/host.ts";
import { compileHostile } from "./helpers/native.ts";
import { eventually, processesOf } from "./helpers/procs.ts";
import { canaryCarriesOn, uidOf, writeHog } from "./helpers/kernel-hog.ts";

const CHILD = fileURLToPath(new URL("./helpers/uid-claims-child.ts", import.meta.url));
// "evil-mm7zi" was found by brute force: its hashed uid is "good"'s.
const EVIL = "evil-mm7zi";

interface ChildOut {
  uids: Record<string, number>;
  single: number[];
}

/** Run test/helpers/uid-claims-child.ts; `hold`: resolves with its output and the process, still running. */
function child(claims: string, dataDir: string, names: string[], count: number, then: "exit" | "hold"): Promise<{ out: ChildOut; pid: number; exited: Promise<unknown> }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ["--import=tsx", CHILD, claims, dataDir, names.join(","), String(count), then], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    const exited = new Promise((r) => p.once("exit", r));
    p.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
      if (then === "hold" && stdout.includes("\n")) resolve({ out: JSON.parse(stdout) as ChildOut, pid: p.pid!, exited });
    });
    p.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    p.once("exit", (code) => {
      if (then === "exit" && code === 0) resolve({ out: JSON.parse(stdout) as ChildOut, pid: p.pid!, exited });
      else reject(new Error(`uid-claims-child exited ${code}: ${stderr}`));
    });
  });
}

async function claimFile(claims: string, uid: number): Promise<{ kind: string; table?: string; name?: string } | null> {
  return JSON.parse(await readFile(path.join(claims, String(uid)), "utf8").catch(() => "null")) as { kind: string; table?: string; name?: string } | null;
}

test("processes allocating at once from tables in different data directories never get one uid, module or single-use", async (t) => {
  const dir = await tempDir(t, "modhost-uids-");
  const claims = path.join(dir, "claims");
  const names = ["good", EVIL, "a", "b", "c"];
  const dataDirs = await Promise.all([0, 1, 2].map(async (i) => {
    const d = path.join(dir, `data${i}`);
    await mkdir(d);
    return d;
  }));
  const outs = (await Promise.all(dataDirs.map((d) => child(claims, d, names, 4, "exit")))).map((c) => c.out);
  const all = outs.flatMap((o) => [...Object.values(o.uids), ...o.single]);
  t.log(`uids: ${JSON.stringify(outs)}`);
  t.is(all.length, 3 * (names.length + 4));
  t.is(new Set(all).size, all.length, "no uid given twice");
  for (const [i, o] of outs.entries()) {
    for (const [name, uid] of Object.entries(o.uids)) {
      t.like(await claimFile(claims, uid), { kind: "module", name, table: path.join(dataDirs[i]!, UID_TABLE_FILE) }, `${name} of data${i} is claimed`);
    }
  }
});

test("a table copied to another data directory gets new uids, claimed for the copy, and the original keeps its own", async (t) => {
  const dir = await tempDir(t, "modhost-uids-");
  const claims = path.join(dir, "claims");
  const [a, b] = [path.join(dir, "a"), path.join(dir, "b")];
  await mkdir(a);
  await mkdir(b);
  const original = await UidTable.open(path.join(a, UID_TABLE_FILE), { claimsDir: claims });
  const x = await original.uidFor("x");
  const y = await original.uidFor("y");
  await copyFile(path.join(a, UID_TABLE_FILE), path.join(b, UID_TABLE_FILE));
  const warnings: string[] = [];
  const copy = await UidTable.open(path.join(b, UID_TABLE_FILE), { claimsDir: claims, log: { warn: (m) => warnings.push(m) } });
  t.log(warnings.join("\n"));
  const [cx, cy] = [copy.get("x")!, copy.get("y")!];
  t.true(cx !== undefined && cy !== undefined, "the copy still lists both names");
  t.is(new Set([x, y, cx, cy]).size, 4, "four uids: the copy's are its own");
  t.true(warnings.some((w) => w.includes(`module x's uid ${x}`) && w.includes(`claimed by module x of ${path.join(a, UID_TABLE_FILE)}`) && w.includes(`gets uid ${cx}`)), "the reassignment is told, naming the claim's table");
  t.like(await claimFile(claims, cx), { kind: "module", name: "x", table: path.join(b, UID_TABLE_FILE) });
  const written = JSON.parse(await readFile(path.join(b, UID_TABLE_FILE), "utf8")) as { uids: Record<string, number> };
  t.deepEqual(written.uids, { x: cx, y: cy }, "the copy's file says so");
  // The original, opened again, keeps its uids and its claims.
  const again = await UidTable.open(path.join(a, UID_TABLE_FILE), { claimsDir: claims });
  t.deepEqual(again.entries().sort(), [["x", x], ["y", y]]);
  t.like(await claimFile(claims, x), { name: "x", table: path.join(a, UID_TABLE_FILE) });
});

test("a claim whose data directory was removed is taken over; one whose data directory is still there is not", async (t) => {
  const dir = await tempDir(t, "modhost-uids-");
  const claims = path.join(dir, "claims");
  const name = `solo-${process.pid}-${Date.now().toString(36)}`;
  const dirs = Object.fromEntries(await Promise.all(["gone", "kept", "later"].map(async (n) => [n, await mkdir(path.join(dir, n), { recursive: true }).then(() => path.join(dir, n))] as const)));
  // A process that gave `name` its uid and exited (its holder is dead: its table alone keeps the claim).
  const first = (await child(claims, dirs.gone!, [name], 0, "exit")).out.uids[name]!;
  const kept = await UidTable.open(path.join(dirs.kept!, UID_TABLE_FILE), { claimsDir: claims });
  t.not(await kept.uidFor(name), first, "its table still lists it: the claim is live");
  await rm(dirs.gone!, { recursive: true });
  const later = await UidTable.open(path.join(dirs.later!, UID_TABLE_FILE), { claimsDir: claims });
  const got = await later.uidFor(name);
  t.log(`hashed ${moduleUid(name)}, first ${first}, kept ${kept.get(name)}, later ${got}`);
  t.is(got, first, "the data directory removed, its claim is stale and taken over");
  t.like(await claimFile(claims, got), { kind: "module", name, table: path.join(dirs.later!, UID_TABLE_FILE) });
});

test("a process killed with -9 while it holds single-use uids: a sweep removes their claims and its holder lock, and keeps its module's claim, which its table lists", async (t) => {
  const dir = await tempDir(t, "modhost-uids-");
  const claims = path.join(dir, "claims");
  const data = path.join(dir, "data");
  await mkdir(data);
  // Its single-use uids from far into the range: the first ones may be those of other hosts' processes (another claims directory), which keep a claim live.
  await mkdir(claims, { recursive: true, mode: 0o700 });
  await writeFile(path.join(claims, ".single-use-next"), `${1_916_777_216 + 8_000_000 + Math.floor(Math.random() * 1_000_000)}\n`);
  const held = await child(claims, data, ["m"], 3, "hold");
  t.log(`held: ${JSON.stringify(held.out)}`);
  for (const uid of held.out.single) t.like(await claimFile(claims, uid), { kind: "single-use" }, `single-use ${uid} is claimed`);
  const holdersBefore = await readdir(path.join(claims, ".holders"));
  process.kill(held.pid, "SIGKILL");
  await held.exited;
  const sweeper = await UidClaims.open(claims);
  const removed = await sweeper.sweep();
  t.true(removed >= 3, `removed ${removed}`);
  for (const uid of held.out.single) t.is(await claimFile(claims, uid), null, `single-use ${uid} is free again`);
  t.like(await claimFile(claims, held.out.uids.m!), { kind: "module", name: "m" }, "the module's claim stays: its table lists it");
  const holdersAfter = await readdir(path.join(claims, ".holders"));
  t.true(holdersBefore.length > holdersAfter.filter((h) => holdersBefore.includes(h)).length, "the dead process's holder lock is removed");
});

test(`a claims directory with more than SWEEP_AT stale claims is swept when a table is opened`, async (t) => {
  const dir = await tempDir(t, "modhost-uids-");
  const claims = path.join(dir, "claims");
  await mkdir(claims, { recursive: true, mode: 0o700 });
  // Claims of a holder that never lived here (no pid, no lock), for uids no process runs under.
  const dead = { id: "0123456789abcdef", pid: 0, start: 0, boot: "gone" };
  const n = SWEEP_AT + 100;
  for (let i = 0; i < n; i++) {
    const uid = 1_916_777_216 + 10_000_000 + i;
    await writeFile(path.join(claims, String(uid)), JSON.stringify({ v: 1, kind: "single-use", uid, holder: dead }));
  }
  await mkdir(path.join(dir, "data"));
  await UidTable.open(path.join(dir, "data", UID_TABLE_FILE), { claimsDir: claims });
  const left = async () => (await readdir(claims)).filter((f) => /^\d+$/.test(f)).length;
  t.true(await eventually(async () => (await left()) === 0, 60_000), `${await left()} of ${n} stale claims left`);
});

test("more than SWEEP_AT holder directories of processes gone are swept when a table is opened; one being made (no lock yet, fresh) is kept", async (t) => {
  const dir = await tempDir(t, "modhost-uids-");
  const claims = path.join(dir, "claims");
  await mkdir(path.join(claims, ".holders"), { recursive: true, mode: 0o700 });
  const old = new Date(Date.now() - 5 * 60_000);
  const n = SWEEP_AT + 50;
  for (let i = 0; i < n; i++) {
    const d = path.join(claims, ".holders", (0x1000000000000000n + BigInt(i)).toString(16));
    await mkdir(d);
    await utimes(d, old, old);
  }
  await mkdir(path.join(claims, ".holders", "fedcba9876543210"));
  await mkdir(path.join(dir, "data"));
  await UidTable.open(path.join(dir, "data", UID_TABLE_FILE), { claimsDir: claims });
  const left = async () => (await readdir(path.join(claims, ".holders"))).length;
  // This process's own holder and the fresh one stay.
  t.true(await eventually(async () => (await left()) === 2, 60_000), `${await left()} of ${n + 2} holder directories left`);
  t.true((await readdir(path.join(claims, ".holders"))).includes("fedcba9876543210"), "the fresh one is kept");
});

// ---- two real hosts at once ----

let binary: string;

test.before(async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "modhost-uids-cc-"));
  binary = path.join(dir, "hostile");
  await compileHostile(binary);
});

test("two hosts with different data directories: a module whose name hashes to another host's module's uid gets its own, even while that one is stopped; the victim restarts while the attacker holds every process it may have", async (t) => {
  const claims = path.join(await tempDir(t, "modhost-uids-"), "claims");
  const configure = (c: TestHost["config"]) => {
    c.host.uid_claims_dir = claims;
  };
  // Found by brute force (2 s): no other test uses them, so nothing else runs under their hashed uid.
  const [evil, victim] = ["uid-evil-wanm", "uid-victim"];
  t.is(moduleUid(evil), moduleUid(victim), "the names collide under the hash");
  const [dirA, dirB] = [await tempDir(t), await tempDir(t)];
  await writeHog(dirA, evil, binary);
  await writeHog(dirB, victim, binary);
  const hostA = () => startHost(t, {
    dir: dirA, modules: ["good"], grants: { good: GOOD_GRANTS, [evil]: [] }, configure,
    moduleLimits: { [evil]: { restart: "never", data_volume: "scan", processes: 64 } },
    moduleConfigs: { [evil]: { attack: ["holdprocs", "100000"] } },
  });
  const holds = async (h: TestHost): Promise<number> => {
    const report = await h.waitForLog(/^kernel-hog report$/, { source: evil, timeoutMs: 60_000 });
    const got = String((report.fields as { results: Record<string, string> }).results.holdprocs);
    t.regex(got, /^EAGAIN \d+$/, `its report: ${JSON.stringify(report.fields)}`);
    return Number(/^EAGAIN (\d+)$/.exec(got)?.[1] ?? NaN);
  };
  // Host A gives the attacker its uid, then stops: nothing runs under that uid any more.
  const a1 = await hostA();
  const evilUid = await uidOf(a1, evil);
  t.true((await holds(a1)) >= 1, "it held processes");
  await a1.stop();
  t.true(await eventually(async () => (await processesOf(evilUid)) === 0, 30_000), `no process of uid ${evilUid} left`);

  // Host B, its own data directory: the victim (and "good" again) while the attacker is stopped.
  const b = await startHost(t, {
    dir: dirB, modules: ["good"], grants: { good: GOOD_GRANTS, [victim]: [] }, configure,
    moduleLimits: { [victim]: { data_volume: "scan", processes: 64 } },
    moduleConfigs: { [victim]: { attack: ["holdprocs", "4"] } },
  });
  await b.waitForLog(/^kernel-hog report$/, { source: victim, timeoutMs: 60_000 });
  const victimUid = await uidOf(b, victim);
  const goods = [await uidOf(a1, "good"), await uidOf(b, "good")];
  t.log(`${evil} ${evilUid}, ${victim} ${victimUid} (both hash to ${moduleUid(evil)}); good: A ${goods[0]}, B ${goods[1]}`);
  t.not(victimUid, evilUid, "the victim's uid is not the stopped attacker's");
  t.not(goods[0], goods[1], "one name in two data directories: two uids");

  // Host A again, at once with B: the attacker takes every process it may have, under its own uid.
  const a2 = await hostA();
  t.is(await uidOf(a2, evil), evilUid, "the attacker keeps its uid across its host's restart");
  const held = await holds(a2);
  t.true(held >= 1 && (await processesOf(evilUid)) >= held, `it holds its ${held} processes`);
  // The victim crashes and restarts: node needs threads under its uid, which the attacker
  // would have taken had they shared one.
  const since = b.events.length;
  const mark = b.mark();
  process.kill(b.mustStatus(victim).pid!, "SIGKILL");
  await b.waitForEvent("ModuleRestarted", (p) => p.module === victim, { timeoutMs: 30_000, since });
  const again = await b.waitForLog(/^kernel-hog report$/, { source: victim, since: mark, timeoutMs: 60_000 });
  t.regex(String((again.fields as { results: Record<string, string> }).results.holdprocs), / 4$/, `the victim started again and got its 4 processes: ${JSON.stringify(again.fields)}`);
  await canaryCarriesOn(t, b);
  await canaryCarriesOn(t, a2);
});
