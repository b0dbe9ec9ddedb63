// A module with `send_transactions` fills the embedded chain's mempool (issue #8: a granted
// capability used as a weapon). The embedded chain runs no scripts, so any mature coinbase can
// be spent: the probe (test/fixtures/hostile-mempool) fans one out into 48 outputs, and once a
// block confirms that, submits 47 transactions of ~3.9 MB of witness each (under the block
// weight), then one at ten times the fee rate. Before `[chain] max_mempool_mb` nothing bounded
// the mempool: each such transaction held ~12-16 MB of host memory (its bytes and the hex of its
// witness), 47 of them ~0.6 GB, and 48 more confirmed outputs per fan-out transaction without end.
// Under the real host and sandbox, next to the canary ("good", which stores every block): the
// mempool's estimated holding stays within the bound, the probe is refused with an error naming
// the limit, a higher fee rate is still taken in place of one lower (evicted). The canary's blocks after
// the one confirming the fan-out are mined empty, so the mempool fills whatever the pace;
// the canary stores every block within 5 s and the host answers RPC within 5 s.

import test from "ava";
import { fileURLToPath } from "node:url";
import v8 from "node:v8";
import vm from "node:vm";
import { buildModulesDir, startHost, tempDir, GOOD_GRANTS, waitFor } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { canaryRound } from "./helpers/canary.ts";
import { heldBytes } from "../chain/mempool.ts";
import type { Transaction } from "../chain/backend.ts";

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;

/** The host's memory after full collections (the test process is the host). */
async function settled(): Promise<NodeJS.MemoryUsage> {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 50));
  }
  return process.memoryUsage();
}

const PROBE = fileURLToPath(new URL("./fixtures/hostile-mempool/main.ts", import.meta.url));
const LIMIT_MB = 64;

test.serial("a module submitting 47 transactions of 3.9 MB of witness each: the mempool holds at most [chain] max_mempool_mb (refusals name it), a higher fee rate evicts a lower one, the canary keeps up", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  await writeNodeNative(modulesDir, "mempool-fill", PROBE, ["read_blockchain", "read_mempool", "send_transactions"]);
  const h = await startHost(t, {
    dir,
    modules: ["good"],
    grants: { good: GOOD_GRANTS, "mempool-fill": ["read_blockchain", "read_mempool", "send_transactions"] },
    configure: (c) => {
      c.chain.max_mempool_mb = LIMIT_MB;
    },
  });
  const evicted: string[] = [];
  h.chain.subscribe((type, payload) => {
    if (type === "MempoolTransactionRemoved" && (payload as { reason: string }).reason === "evicted") evicted.push((payload as { txid: string }).txid);
  });
  await h.waitForState("mempool-fill", "running", 60_000);
  const before = await settled();
  await h.waitForLog(/^fan-out submitted/, { source: "mempool-fill", timeoutMs: 60_000 });
  let late = 0;
  let unanswered = 0;
  let rounds = 0;
  let maxHeld = 0;
  let report: Record<string, unknown> | undefined;
  // Canary rounds (each mines a block: the first confirms the fan-out) until the probe reports.
  // The first round's block confirms the fan-out; later ones leave the mempool alone (empty
  // blocks), so that it fills whatever the machine's pace, and stays full.
  const empty = async () => {
    await h.chain.mine(1, { includeMempool: false });
    return h.chain.getBlockHeight();
  };
  await waitFor(async () => {
    const r = await canaryRound(h, rounds === 0 ? {} : { mine: empty });
    rounds++;
    if (!r.stored) late++;
    if (!r.answered) unanswered++;
    maxHeld = Math.max(maxHeld, h.chain.memoryCounts().mempoolBytes);
    report = h.records.find((x) => x.source === "mempool-fill" && x.message === "mempool probe report")?.fields as Record<string, unknown> | undefined;
    return report;
  }, 240_000, "the probe's report", () => h.tail(30));
  maxHeld = Math.max(maxHeld, h.chain.memoryCounts().mempoolBytes);
  const after = await settled();
  t.log(`host heap +${((after.heapUsed - before.heapUsed) / 1e6).toFixed(0)} MB, external +${((after.external - before.external) / 1e6).toFixed(0)} MB, rss +${((after.rss - before.rss) / 1e6).toFixed(0)} MB; ${evicted.length} evicted`);
  t.log(`report ${JSON.stringify(report)}; held at most ${maxHeld} bytes; mempool ${h.chain.memoryCounts().mempool} transactions; ${rounds} canary rounds`);
  const limit = LIMIT_MB * 1024 * 1024;
  t.true(maxHeld <= limit, `the mempool held ${maxHeld} bytes, over ${limit}`);
  // Nothing left the mempool but by eviction: 5 of 11.7 MB estimated fit in 64 MiB, the rest are refused.
  const each = heldBytes({ size: report!.size as number, inputs: [{}], outputs: [{}] } as unknown as Transaction);
  t.is(report!.accepted, Math.floor(limit / each));
  t.is(report!.refused, 47 - (report!.accepted as number));
  t.is(report!.code, "invalid_params");
  t.regex(String(report!.message), /mempool full.*\[chain\] max_mempool_mb.*pay a higher fee rate/);
  t.is(report!.higherFee, "taken");
  t.is(evicted.length, 1, "the higher fee rate took the place of one lower");
  t.true(h.chain.memoryCounts().mempoolBytes <= limit);
  t.is(late, 0, "the canary stored every block within 5 s");
  t.is(unanswered, 0, "the host answered RPC within 5 s");
});
