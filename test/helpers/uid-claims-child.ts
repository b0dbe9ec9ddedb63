// A process that allocates uids as a host does (runtime/sandbox/uids.ts with the machine's
// claims, uid-claims.ts): opens the table in DATA_DIR, gives each name a uid and takes COUNT
// single-use uids, prints {"uids": {name: uid}, "single": [uid...]} on one line, then exits,
// or with "hold" waits (for a test to kill it with -9 while it holds them). Used by
// test/uid-claims.test.ts.
//   node --import=tsx uid-claims-child.ts CLAIMS_DIR DATA_DIR NAMES(comma-separated) COUNT exit|hold
// (Run with --import=tsx.)

import path from "node:path";
import { UID_TABLE_FILE, UidTable } from "../../runtime/sandbox/uids.ts";

const [claimsDir, dataDir, names, count, then] = process.argv.slice(2) as [string, string, string, string, string];
const table = await UidTable.open(path.join(dataDir, UID_TABLE_FILE), { claimsDir });
// All at once, as a host's starts and its pool's boots may ask.
const list = names === "" ? [] : names.split(",");
const [uids, single] = await Promise.all([
  Promise.all(list.map(async (n) => [n, await table.uidFor(n)] as const)),
  Promise.all(Array.from({ length: Number(count) }, () => table.freshUid())),
]);
process.stdout.write(`${JSON.stringify({ uids: Object.fromEntries(uids), single })}\n`);
if (then === "hold") setInterval(() => undefined, 60_000);
