// What machine-wide uid claims cost (runtime/sandbox/uid-claims.ts): a new module name's uid
// and a single-use uid, each claimed holding the claims directory's lock, with a directory
// of 10,000 stale claims (their holder never lived here: no pid, no lock) and with an empty
// one; the baseline is the same table without claims (uids.ts as before: its own file only).
// Also: a sweep of the 10,000 stale claims, once (it runs in the background of a host start
// when the directory holds more than SWEEP_AT).
//
// Runs of 2026-12-06 (2-core machine shared with other sessions), medians of 30:
//   load 13: a new name's uid 29-34 ms with claims (10,000 stale or none), 2.1 ms the table
//   alone; a single-use uid 35-38 ms, 2.3 ms alone; the sweep of 10,000 stale claims 4.3 s.
//   load 18-25: 41-49 ms and 42-47 ms with claims, 31-33 ms alone; the sweep 7.3 s.
// Most of a claim is the directory's lock (a LevelDB open and close: ~37 ms at load 24) and
// the fsyncs; stale claims present cost nothing until one is the uid wanted.

import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { makeTempDir, removeTempDir, type Benchmark, type Row } from "./common.ts";
import { summarise } from "./stats.ts";
import { UidTable, UID_TABLE_FILE } from "../runtime/sandbox/uids.ts";
import { UidClaims } from "../runtime/sandbox/uid-claims.ts";

const STALE = 10_000;
const ROUNDS = 30;

async function staleClaims(dir: string, n: number): Promise<void> {
  const dead = { id: "0123456789abcdef", pid: 0, start: 0, boot: "gone" };
  for (let i = 0; i < n; i += 500) {
    await Promise.all(Array.from({ length: Math.min(500, n - i) }, (_, k) => {
      // Spread over both ranges, as hosts leave them: module claims of removed data directories, single-use ones of killed hosts.
      const uid = (i + k) % 2 ? 1_900_000_000 + (((i + k) * 1_677) % (1 << 24)) : 1_916_777_216 + i + k;
      const claim = (i + k) % 2
        ? { v: 1, kind: "module", uid, holder: dead, table: `/nonexistent/${i + k}/module-uids.json`, table_id: "0123456789abcdef", name: `m${i + k}` }
        : { v: 1, kind: "single-use", uid, holder: dead };
      return writeFile(path.join(dir, String(uid)), JSON.stringify(claim));
    }));
  }
}

async function measure(root: string, claimsDir: string | undefined, what: string, kind: Row["kind"], vs?: string, prepare?: () => Promise<void>): Promise<Row[]> {
  const data = path.join(root, `data-${what.replace(/\W+/g, "-")}`);
  await mkdir(data);
  const table = await UidTable.open(path.join(data, UID_TABLE_FILE), { claimsDir });
  // Made after the opening: an opening finding them would sweep them in the background.
  await prepare?.();
  const names: number[] = [];
  const single: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    let t0 = performance.now();
    await table.uidFor(`bench-${process.pid}-${r}-${Math.random().toString(36).slice(2, 8)}`);
    names.push(performance.now() - t0);
    t0 = performance.now();
    await table.freshUid();
    single.push(performance.now() - t0);
  }
  return [
    { what: `new module name's uid, ${what}`, kind, unit: "ms", stats: summarise(names), ...(vs ? { vs: `new module name's uid, ${vs}` } : {}) },
    { what: `single-use uid, ${what}`, kind, unit: "ms", stats: summarise(single), ...(vs ? { vs: `single-use uid, ${vs}` } : {}) },
  ];
}

export const uidsBench: Benchmark = {
  name: "uids",
  title: `uid allocation with machine-wide claims (${STALE.toLocaleString("en")} stale claims present), ${ROUNDS} rounds`,
  async run() {
    const root = await makeTempDir("uids");
    try {
      const rows: Row[] = [];
      rows.push(...(await measure(root, undefined, "table only (before)", "baseline")));
      rows.push(...(await measure(root, path.join(root, "claims-empty"), "claims, empty directory", "result", "table only (before)")));
      const full = path.join(root, "claims-stale");
      rows.push(...(await measure(root, full, `claims, ${STALE} stale`, "result", "table only (before)", () => staleClaims(full, STALE))));
      const t0 = performance.now();
      const removed = await (await UidClaims.open(full)).sweep();
      rows.push({ what: `sweep of ${STALE} stale claims (once)`, kind: "piece", unit: "ms", stats: summarise([performance.now() - t0]), note: `${removed} removed` });
      return rows;
    } finally {
      await removeTempDir(root);
    }
  },
};
