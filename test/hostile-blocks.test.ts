// Modules with `submit_block` grow the embedded chain as fast as regtest's trivial proof of
// work lets them (issue #8: a granted capability used as a weapon). Before this, nothing
// bounded it: each accepted block stayed on disk for good, a 900 KB one writing ~2.7 MB (its
// bytes, and its script again as hex in the UTXO set). Under the real host and sandbox, next to
// the canary ("good", which stores every block), two probes (test/fixtures/hostile-blocks):
//   block-flood submits small blocks back to back: past submit_blocks_per_minute (20 here)
//     each is refused, naming the limit;
//   block-fill (its own rates raised) submits 900 KB blocks until the chain refuses them as
//     chain-full: what the chain wrote stays within [chain] max_chain_mb (16 here) plus one
//     block's writes.
// The canary stores every block mined meanwhile within 5 s, the host answers RPC within 5 s,
// and the host's memory after collections grows by less than the bound allows.

import test from "ava";
import { fileURLToPath } from "node:url";
import v8 from "node:v8";
import vm from "node:vm";
import { buildModulesDir, startHost, tempDir, GOOD_GRANTS, waitFor } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { canaryRound, mineWhenIdle } from "./helpers/canary.ts";

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;

/** The host's memory after full collections (the test process is the host), array buffers aside (scratch space that comes and goes). */
async function settled(): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 50));
  }
  const m = process.memoryUsage();
  return m.heapUsed + m.external - m.arrayBuffers;
}

const PROBE = fileURLToPath(new URL("./fixtures/hostile-blocks/main.ts", import.meta.url));
const CAPS = ["read_blockchain", "submit_block"];
const CHAIN_MB = 16;
const FLOOD_PER_MINUTE = 20;

interface Report { accepted: number; quota: number; full: number; other: number; elapsedMs: number; quotaMessage: string | null; fullReason: string | null; otherReason: string | null }

test.serial("modules submitting blocks back to back: refused past submit_blocks_per_minute, and past [chain] max_chain_mb as chain-full, the chain's writes within the bound; the canary keeps up", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  await writeNodeNative(modulesDir, "block-flood", PROBE, CAPS);
  await writeNodeNative(modulesDir, "block-fill", PROBE, CAPS);
  const h = await startHost(t, {
    dir,
    modules: ["good"],
    grants: { good: GOOD_GRANTS, "block-flood": CAPS, "block-fill": CAPS },
    configure: (c) => {
      c.chain.max_chain_mb = CHAIN_MB;
      c.chain.block_cache_mb = 32;
      c.modules.limits["block-flood"] = { submit_blocks_per_minute: FLOOD_PER_MINUTE };
      c.modules.limits["block-fill"] = { submit_blocks_per_minute: 10_000, submit_block_mb_per_minute: 10_000 };
    },
  });
  const before = await settled();
  await h.waitForState("block-flood", "running", 60_000);
  await h.waitForState("block-fill", "running", 60_000);
  let late = 0;
  let unanswered = 0;
  let rounds = 0;
  const reports = new Map<string, Report>();
  // The probes' blocks move the tip too (and the canary must store each of them). The canary mines
  // one only when none came for 15 s (mineWhenIdle): mined every second, its blocks beat every
  // 900 KB block the fill probe was still building or the host still reading at load 20+ (16 of 19
  // not-on-tip in 132 s in a fresh-clone CI), and the fill never reached the chain's cap.
  await waitFor(async () => {
    const r = await canaryRound(h, { mine: () => mineWhenIdle(h) });
    rounds++;
    if (!r.stored) late++;
    if (!r.answered) unanswered++;
    for (const name of ["block-flood", "block-fill"]) {
      const fields = h.records.find((x) => x.source === name && x.message === "blocks probe report")?.fields;
      if (fields) reports.set(name, fields as unknown as Report);
    }
    return reports.size === 2;
  }, 240_000, "both probes' reports", () => h.tail(30));
  const after = await settled();
  const flood = reports.get("block-flood")!;
  const fillReport = reports.get("block-fill")!;
  const counts = h.chain.memoryCounts();
  t.log(`flood ${JSON.stringify(flood)}`);
  t.log(`fill ${JSON.stringify({ ...fillReport, fullReason: fillReport.fullReason?.slice(0, 120) })}`);
  t.log(`chain wrote ${(counts.storedBytes / 1e6).toFixed(1)} MB for its blocks; host heap and external +${((after - before) / 1e6).toFixed(1)} MB; ${rounds} canary rounds`);

  // The flood: a burst of one minute's worth, then one every 3 s, the rest refused.
  t.true(flood.quota > 0, "blocks past the rate were refused");
  t.regex(flood.quotaMessage ?? "", /submit_blocks_per_minute = 20.*try again in \d+ ms.*\[modules\.limits\.block-flood\]/);
  t.true(flood.accepted <= FLOOD_PER_MINUTE + Math.ceil((flood.elapsedMs / 60_000) * FLOOD_PER_MINUTE) + 1, `${flood.accepted} accepted in ${flood.elapsedMs} ms`);
  // The fill: refused as chain-full, the chain's writes within the cap and one block's writes (~2.7 MB).
  t.is(fillReport.full, 3);
  t.regex(fillReport.fullReason ?? "", /^chain-full: .*\[chain\] max_chain_mb/);
  t.true(fillReport.accepted >= 3, `${fillReport.accepted} large blocks accepted before the cap`);
  t.true(counts.storedBytes <= CHAIN_MB * 1e6 + 3e6, `the chain wrote ${counts.storedBytes} bytes`);
  // The chain lives in memory here (the test host's): its whole database is in the heap, within the cap.
  t.true(after - before < (CHAIN_MB + 32 + 48) * 1e6, `the host's memory grew by ${after - before} bytes`);
  t.is(late, 0, "the canary stored every block within 5 s");
  t.is(unanswered, 0, "the host answered RPC within 5 s");
});
