// [host] turn_budget_ms: the operator's budget per turn of the host's loop (runtime/turn.ts)
// is parsed with bounds, named in the error when out of them, and is what the host's one
// TurnBudget (the gate of every module channel) uses once a Host is made from the config.

import test from "ava";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { ConfigError } from "../host/errors.ts";
import { loadConfig } from "../host/config.ts";
import { Host } from "../host/host.ts";
import { hostTurn, TURN_BUDGET_MS, TurnBudget } from "../runtime/turn.ts";

async function configFile(toml: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "modhost-turn-config-"));
  const file = path.join(dir, "modhost.toml");
  await writeFile(file, toml);
  return file;
}

test.serial("[host] turn_budget_ms is the budget of the host's turn gate", async (t) => {
  const before = hostTurn.budgetMs;
  t.teardown(() => void (hostTurn.budgetMs = before));
  const config = await loadConfig(await configFile("[host]\nturn_budget_ms = 17\n"));
  t.is(config.host.turn_budget_ms, 17);
  new Host({ config });
  t.is(hostTurn.budgetMs, 17);
});

test.serial("turn_budget_ms defaults to TURN_BUDGET_MS", async (t) => {
  const before = hostTurn.budgetMs;
  t.teardown(() => void (hostTurn.budgetMs = before));
  hostTurn.budgetMs = 99;
  const config = await loadConfig(await configFile(""));
  t.is(config.host.turn_budget_ms, TURN_BUDGET_MS);
  new Host({ config });
  t.is(hostTurn.budgetMs, TURN_BUDGET_MS);
});

for (const bad of ["0", "1001", "2.5", '"5"']) {
  test(`turn_budget_ms = ${bad} is refused, naming the key and its range`, async (t) => {
    const err = await loadConfig(await configFile(`[host]\nturn_budget_ms = ${bad}\n`)).then(() => undefined, (e: unknown) => e);
    t.true(err instanceof ConfigError);
    const text = (err as Error).message;
    t.regex(text, /turn_budget_ms/);
    if (bad !== '"5"') t.regex(text, /1000|1\b/);
  });
}

test("a budget set with setBudget parks work past it; out of range is refused", (t) => {
  const gate = new TurnBudget();
  gate.setBudget(1);
  t.false(gate.overBudget());
  const end = performance.now() + 3;
  while (performance.now() < end);
  t.true(gate.overBudget(), "3 ms of work in one turn is over a 1 ms budget");
  const err = t.throws(() => gate.setBudget(0), { instanceOf: RangeError });
  t.regex(err.message, /turn_budget_ms/);
});
