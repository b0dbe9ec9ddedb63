// What modules put on the operator's GET /metrics page (issue #8), under the real host and
// sandbox, next to the canary ("good", which stores every block): four TypeScript modules each
// holding every metric series it may (1000 histograms, their names and labels at the module's
// 256 Ki characters) under one family name. Each histogram is 28 lines with its labels, so the
// page is ~6.6 MiB per module. Before, the page was built in one piece on the host's loop: here
// the longest loop stall while scraped was 5.4 s (p99 2.4 s) at load ~15, 1.1 s (p99 0.26 s)
// after at load ~23; with ten such modules the family's lines, spread into one call, passed
// the stack's limit and every scrape failed (test/metrics.test.ts checks both in-process).
// While the page is scraped (three scrapes at once, six times), the canary stores every block
// within 5 s and the host answers RPC within 5 s; every scrape gets the whole page; every
// module restarts.

import test from "ava";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { buildModulesDir, startHost, tempDir, GOOD_GRANTS } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";
import { execa } from "execa";
import { cookieAuth, rpcUrl } from "./helpers/rpc.ts";
import { canaryRound } from "./helpers/canary.ts";

const REPORTERS = ["m-0", "m-1", "m-2", "m-3"];
/**
 * A scrape in a process of its own (reading and searching ~26 MiB here would hold the loop
 * this test shares with the host): its status and how many histograms of the reporters it got.
 */
const SCRAPER = `
  const res = await fetch(process.argv[1], { headers: { Authorization: process.argv[2] } });
  const text = await res.text();
  console.log(res.status, text.match(/^h_count\\{module="m-\\d",a="x{200}\\d{6}"\\} 3$/gm)?.length ?? 0);
`;
const reporter = (name: string) => inlineModule(name, ["report_metrics"], `
  void (async () => {
    // ~250 characters of name and labels a series: the module's MAX_SERIES_TEXT_CHARS over 1000.
    for (let i = 0; i < 1000; i += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, k) => ctx.metrics.report("h", [1, 2, 3], { kind: "histogram", labels: { a: "x".repeat(200) + String(i + k).padStart(6, "0") } })));
    }
    ctx.log.info("reported");
  })().catch((e) => ctx.log.error("report failed: " + e));
`);

test("four modules each holding 1000 histograms with the longest labels, under one family name: every GET /metrics gets the whole page, the canary gets every block, RPC answers, every module restarts", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  await buildModulesDir(dir, ["good"], Object.fromEntries(REPORTERS.map((n) => [n, reporter(n)])));
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, ...Object.fromEntries(REPORTERS.map((n) => [n, ["report_metrics"]])) },
  });
  await h.waitForState("good", "running", 30_000);
  for (const n of REPORTERS) await h.waitForLog(/^reported$/, { source: n, timeoutMs: 120_000 });

  const auth = await cookieAuth(h);
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  let late = 0;
  let unanswered = 0;
  const statuses: number[] = [];
  const counts: number[] = [];
  for (let i = 0; i < 6; i++) {
    const scrapes = Array.from({ length: 3 }, () => execa(process.execPath, ["--input-type=module", "-e", SCRAPER, rpcUrl(h, "/metrics"), auth]));
    const { stored, answered } = await canaryRound(h);
    if (!stored) late++;
    if (!answered) unanswered++;
    for (const scrape of await Promise.all(scrapes)) {
      const [status, count] = scrape.stdout.trim().split(" ").map(Number);
      statuses.push(status!);
      counts.push(count!);
    }
  }
  delay.disable();
  t.log(`longest host loop stall while scraped: ${(delay.max / 1e6).toFixed(0)} ms (p99 ${(delay.percentile(99) / 1e6).toFixed(0)} ms)`);
  t.is(late, 0, "the canary stored every block within 5 s");
  t.is(unanswered, 0, "the host answered every RPC call within 5 s");
  t.deepEqual(statuses, Array(18).fill(200), "every scrape was answered 200");
  t.deepEqual(counts, Array(18).fill(4000), "every scrape got every module's 1000 histograms");

  for (const n of REPORTERS) {
    await h.manager.reload(n);
    await h.waitForState(n, "running", 30_000);
  }
  const mark = h.mark();
  const height = await h.mine(1);
  await h.waitForLog(new RegExp(`^stored block ${height}$`), { source: "good", since: mark, timeoutMs: 10_000 });
  t.pass();
});
