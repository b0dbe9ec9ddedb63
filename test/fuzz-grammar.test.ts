// The protocol-grammar fuzz target (fuzz/protocol-grammar.ts), a short fixed run: every method
// of the catalogue and every message kind a module sends, with parameters built from the
// method's own schema (fuzz/grammar.ts), through the real session handler. The long run and
// the figures are in fuzz/README.md (`npm run fuzz -- grammar`).

import test from "ava";
import * as v from "valibot";
import { METHODS } from "../capabilities/families.ts";
import { formatReport, fuzz, Rng } from "../fuzz/driver.ts";
import { ParamsGenerator, type Mode } from "../fuzz/grammar.ts";
import { descriptor, formatStats, grammarTarget } from "../fuzz/protocol-grammar.ts";
import { grammarHost, type GrammarHost } from "../fuzz/grammar-host.ts";

/** A generous bound for one turn of the host's loop (CPU time of its thread) on a loaded machine; the long run's figures are far below. */
const TURN_BOUND_MS = 250;

test("grammar: for every method of the catalogue the generator builds parameters its own schema accepts, so every handler is reached", (t) => {
  const unreached: string[] = [];
  for (const m of METHODS.values()) {
    let valid = 0;
    for (const mode of ["min", "max", "mixed"] as Mode[]) {
      for (let seed = 1; seed <= 4; seed++) {
        const { params } = new ParamsGenerator(new Rng(seed)).params(m.params, mode);
        if (m.accepts?.(params) === true || v.safeParse(m.params, params).success) valid++;
      }
    }
    if (valid === 0) unreached.push(m.name);
  }
  t.deepEqual(unreached, []);
  t.true(METHODS.size > 50, `${METHODS.size} methods`);
});

test("grammar: past a schema's maxLength or maxValue the generator crosses it by one, and the schema refuses it", (t) => {
  const crossed = new Set<string>();
  for (const m of METHODS.values()) {
    for (let seed = 1; seed <= 8; seed++) {
      const g = new ParamsGenerator(new Rng(seed)).params(m.params, "past");
      if (!g.crossed || g.crossed.limit === "") continue;
      const r = v.safeParse(m.params, g.params);
      if (r.success) continue; // cut back under the body's budget: still valid
      crossed.add(m.name);
    }
  }
  // storage_iter's limit, get_fee_estimate's target, report_metric's histogram length, timers' seconds...
  for (const name of ["storage_iter", "get_fee_estimate", "report_metric", "register_timer", "get_block_by_height"]) t.true(crossed.has(name), name);
});

test.serial("fuzz protocol-grammar: every method with min, max, past-the-limit and mixed parameters, and 64 at once; answered once by id, refusals name the limit, no loop turn past the bound", async (t) => {
  t.timeout(240_000, "fuzzing on a loaded machine");
  // Bursts of large requests cut to 8 MiB in all (the long run sends up to 96 MiB, 3x max_request_bytes_in_flight).
  const target = await grammarTarget({ burstBytes: 8 * 1024 * 1024 });
  // The seeds: each method and message kind in each mode, then each method 64 at once.
  const iterations = target.seeds.length;
  const r = await fuzz(target, { iterations, seed: 20261206, hangMs: 200_000, maxHeapGrowthMb: 64 });
  const stats = target.stats();
  t.log(`${r.iterations} inputs in ${(r.elapsedMs / 1000).toFixed(1)} s`);
  t.log(formatStats(stats, 12));
  t.is(r.failures.length, 0, formatReport(r));
  t.is(r.iterations, iterations);
  const labels = new Set(stats.map((s) => s.label));
  for (const m of METHODS.keys()) {
    t.true(labels.has(m), `${m} sent alone`);
    t.true(labels.has(`${m} x64`), `${m} sent 64 at once`);
  }
  for (const kind of ["log", "ack", "invocation_result", "ready"]) t.true(labels.has(`msg:${kind}`), kind);
  const over = stats.filter((s) => s.worstCpuMs > TURN_BOUND_MS).map((s) => `${s.label}: ${s.worstCpuMs.toFixed(1)} ms (${s.worst})`);
  t.deepEqual(over, [], `turns of the host's loop past ${TURN_BOUND_MS} ms of CPU`);
  t.true(target.sent() >= iterations, `${target.sent()} requests`);
});

/** The real host, with what its module's end hears changed by `change` (a host that answers wrongly). */
async function lyingHost(change: (msg: Record<string, unknown>, deliver: (m: Record<string, unknown>) => void) => void): Promise<GrammarHost> {
  const real = await grammarHost();
  return {
    ...real,
    connect() {
      const end = real.connect();
      let inner: ((m: Record<string, unknown>) => void) | undefined;
      Object.defineProperty(end, "onResponse", {
        get: () => inner,
        set: (fn?: (m: Record<string, unknown>) => void) => (inner = fn && ((m) => change(m, fn))),
      });
      return end;
    },
  };
}

test.serial("the grammar target fails a host that answers a request twice, or refuses a request past a limit without naming the limit", async (t) => {
  t.timeout(120_000);
  const twice = await lyingHost((m, deliver) => (deliver(m), deliver(m)));
  const a = await grammarTarget({ host: twice });
  await t.throwsAsync(async () => a.run(a.seeds[0]!), { message: /answered twice/ });
  await a.close?.();
  await twice.close();

  const vague = await lyingHost((m, deliver) => {
    const error = m.error as { message?: string } | undefined;
    deliver(error ? { ...m, error: { ...error, message: "invalid parameters" } } : m);
  });
  const b = await grammarTarget({ host: vague });
  const failures: string[] = [];
  for (const input of b.seeds.filter((s) => descriptor(s).mode === "past")) {
    try {
      await b.run(input);
    } catch (err) {
      failures.push((err as Error).message);
    }
  }
  await b.close?.();
  await vague.close();
  t.true(failures.some((f) => /past the limit \d+ got "invalid parameters", not a refusal naming the limit/.test(f)), failures.slice(0, 3).join("\n"));
});
