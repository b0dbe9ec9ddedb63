// The protocol fuzzers' long run: `npm run fuzz` (all targets) or
// `npm run fuzz -- session --iterations 200000 --seed 5`. Exits non-zero on any failure.
// The short run inside `npm test` is test/fuzz-protocol.test.ts.

import { formatReport, fuzz, type FuzzTarget } from "./driver.ts";
import { frameTarget } from "./protocol-frame.ts";
import { bodyTarget } from "./protocol-body.ts";
import { handshakeTarget } from "./protocol-handshake.ts";
import { sessionTarget } from "./protocol-session.ts";
import { chainParseTarget } from "./chain-parse.ts";
import { dnsAnswerTarget } from "./dns-answer.ts";
import { formatStats, grammarTarget } from "./protocol-grammar.ts";

const TARGETS: Record<string, { make: () => Promise<FuzzTarget>; iterations: number; hangMs: number; after?: (t: FuzzTarget) => string }> = {
  frame: { make: () => frameTarget(), iterations: 100_000, hangMs: 1000 },
  body: { make: () => bodyTarget(), iterations: 200_000, hangMs: 1000 },
  handshake: { make: () => handshakeTarget(), iterations: 10_000, hangMs: 5000 },
  session: { make: () => sessionTarget(), iterations: 1_000_000, hangMs: 15_000 },
  chain: { make: () => chainParseTarget(), iterations: 200_000, hangMs: 5000 },
  dns: { make: () => Promise.resolve(dnsAnswerTarget()), iterations: 1_000_000, hangMs: 100 },
  // Inputs are requests (bursts of 64 and state sequences of ~200 among them): see protocol-grammar.ts.
  grammar: { make: () => grammarTarget(), iterations: 20_000, hangMs: 200_000, after: (t) => formatStats((t as Awaited<ReturnType<typeof grammarTarget>>).stats()) },
};

const args = process.argv.slice(2);
const flag = (name: string): number | undefined => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : undefined;
};
const names = args.filter((a, i) => !a.startsWith("--") && !args[i - 1]?.startsWith("--"));
const chosen = names.length ? names : Object.keys(TARGETS);
let failed = false;
for (const name of chosen) {
  const spec = TARGETS[name];
  if (!spec) {
    console.error(`unknown fuzz target "${name}"; the targets are ${Object.keys(TARGETS).join(", ")}`);
    process.exit(2);
  }
  const iterations = flag("iterations") ?? spec.iterations;
  const target = await spec.make();
  console.log(`fuzzing ${target.name}: ${iterations} inputs, seed ${flag("seed") ?? 1}`);
  const report = await fuzz(target, {
    iterations,
    seed: flag("seed") ?? 1,
    hangMs: spec.hangMs,
    maxHeapGrowthMb: 64,
    timeLimitMs: (flag("minutes") ?? 0) * 60_000,
    progressEvery: Math.max(1, Math.floor(iterations / 10)),
    // The grammar target replays its worst turns itself (protocol-grammar.ts).
    replays: name === "grammar" ? 0 : 5,
    onProgress: (done, r) => console.log(`  ${done} inputs, ${r.failures.length} failures, heap ${Math.round(process.memoryUsage().heapUsed / 1048576)} MB`),
  });
  console.log(formatReport(report));
  if (spec.after) console.log(spec.after(target));
  if (report.failures.length) failed = true;
}
process.exit(failed ? 1 : 0);
