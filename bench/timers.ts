// setTimeout in a TypeScript module vs a bare in-process isolated-vm isolate whose setTimeout
// is bridged to a host setTimeout per timer (the same run's baseline): a chain of 1,000
// setTimeout(0), each set by the callback before it, and 10,000 setTimeout(0) set in one turn,
// each timed from inside until its last callback ran. Module and bare runs interleaved, RUNS
// times, each the mean of REPS after a warm-up; median and spread over the runs. Both sides wait
// by host calls (getBlockHeight), not timers, so that a phase that never ends is given up on.
// The machine is shared: compare the ratios, not the absolute numbers.

import ivm from "isolated-vm";
import { ModuleManager } from "../host/manager.ts";
import { EventBus } from "../host/events/bus.ts";
import { createServices } from "../host/services/index.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { atCleanup, benchConfig, captureLogger, dumpLog, makeTempDir, removeTempDir, sleep, type Benchmark, type Row } from "./common.ts";
import { summarise } from "./stats.ts";

const MODULE = "bench-timers";
const RUNS = 5;
const REPS = 3;
const LINKS = 1000;
const MANY = 10_000;
const GIVE_UP_MS = 10_000;

type Figures = { chain_ms: number; chain_ran: number; many_ms: number; many_ran: number };

const B_CHAIN = `bare isolate, a host setTimeout per timer: chain of ${LINKS} setTimeout(0)`;
const B_MANY = `bare isolate, a host setTimeout per timer: ${MANY} setTimeout(0) in one turn`;

/** bench/fixtures/modules/timers/index.ts's phases, for the bare isolate (setTimeout and height are globals there). */
const BARE_SCRIPT = `
(async () => {
  const timed = async (set, want) => {
    let ran = 0;
    const t0 = Date.now();
    set(() => ran++);
    while (ran < want && Date.now() - t0 < ${GIVE_UP_MS}) await height();
    return [Date.now() - t0, ran];
  };
  const chain = (ran) => { let n = 0; const next = () => { ran(); if (++n < ${LINKS}) setTimeout(next, 0); }; setTimeout(next, 0); };
  const burst = (ran) => { for (let i = 0; i < ${MANY}; i++) setTimeout(ran, 0); };
  await timed(chain, ${LINKS});
  const out = { chain_ms: 0, chain_ran: 0, many_ms: 0, many_ran: 0 };
  for (let r = 0; r < ${REPS}; r++) {
    const [cm, cr] = await timed(chain, ${LINKS});
    const [mm, mr] = await timed(burst, ${MANY});
    out.chain_ms += cm / ${REPS}; out.chain_ran += cr / ${REPS}; out.many_ms += mm / ${REPS}; out.many_ran += mr / ${REPS};
  }
  return JSON.stringify(out);
})()`;

export const timersBench: Benchmark = {
  name: "timers",
  title: "setTimeout in a TypeScript module vs a bare isolate with a host setTimeout per timer",
  async run(): Promise<Row[]> {
    const dir = await makeTempDir("timers");
    const chain = await EmbeddedChain.create({ matureBlocks: 0 });
    const s: Figures[] = [];
    const b: Figures[] = [];
    try {
      for (let run = 0; run < RUNS; run++) {
        s.push(await moduleRun(`${dir}/run-${run}`, chain));
        b.push(await bareRun(chain));
      }
    } finally {
      await chain.close();
      await removeTempDir(dir);
    }
    const col = (xs: Figures[], k: keyof Figures) => xs.map((x) => x[k]);
    const note = (xs: Figures[], k: "chain" | "many", want: number) => {
      const st = summarise(col(xs, `${k}_ms`));
      const ran = col(xs, `${k}_ran`);
      return `median of ${xs.length} runs (each the mean of ${REPS}); min ${st.min.toFixed(1)}, max ${st.max.toFixed(1)}; callbacks run ${Math.min(...ran)}..${Math.max(...ran)} of ${want}${Math.min(...ran) < want ? ` (given up after ${GIVE_UP_MS} ms)` : ""}`;
    };
    return [
      { what: `TS module: chain of ${LINKS} setTimeout(0)`, kind: "result", unit: "ms", stats: summarise(col(s, "chain_ms")), vs: B_CHAIN, note: note(s, "chain", LINKS) },
      { what: B_CHAIN, kind: "baseline", unit: "ms", stats: summarise(col(b, "chain_ms")), note: note(b, "chain", LINKS) },
      { what: `TS module: ${MANY} setTimeout(0) in one turn, until the last ran`, kind: "result", unit: "ms", stats: summarise(col(s, "many_ms")), vs: B_MANY, note: note(s, "many", MANY) },
      { what: B_MANY, kind: "baseline", unit: "ms", stats: summarise(col(b, "many_ms")), note: note(b, "many", MANY) },
    ];
  },
};

async function moduleRun(dir: string, chain: EmbeddedChain): Promise<Figures> {
  const { logger, records } = captureLogger();
  const config = benchConfig(dir, MODULE, {
    allow: ["manage_timers", "read_chain_state"],
    limits: { start_timeout_ms: 300_000, cpu_time_ms: 5000, handler_timeout_ms: 300_000 },
    config: { links: LINKS, many: MANY, reps: REPS, give_up_ms: GIVE_UP_MS },
  });
  const bus = new EventBus();
  const manager = new ModuleManager({ config, chain, bus, logger });
  // The timer service (and the rest) as the host sets them: a bare manager has none.
  manager.services = createServices({ bus, manager, logger });
  const forget = atCleanup(() => manager.processOf(MODULE)?.kill());
  const report = () => records.find((r) => r.source === MODULE && r.message === "timers done");
  try {
    await manager.prepare();
    await manager.startAll();
    const until = Date.now() + 300_000;
    while (!report() && Date.now() < until && manager.status().find((x) => x.name === MODULE)?.state === "running") await sleep(50);
  } finally {
    await manager.shutdown();
    forget();
  }
  const done = report();
  if (!done?.fields) throw new Error(`${MODULE} did not report\n${dumpLog(records)}`);
  return done.fields as Figures;
}

async function bareRun(chain: EmbeddedChain): Promise<Figures> {
  const isolate = new ivm.Isolate({ memoryLimit: 128 });
  try {
    const context = await isolate.createContext();
    const g = context.global;
    await g.set("heightRef", new ivm.Reference(async () => chain.getBlockHeight()));
    await context.eval(`
      const callbacks = new Map();
      let nextId = 1;
      globalThis.__fire = (id) => { const f = callbacks.get(id); callbacks.delete(id); if (f) f(); };
      globalThis.height = () => heightRef.apply(undefined, [], { result: { promise: true, copy: true } });`);
    const fire = (await g.get("__fire", { reference: true })) as ivm.Reference<(id: number) => void>;
    await g.set("armRef", new ivm.Reference((id: number, ms: number) => {
      setTimeout(() => void fire.apply(undefined, [id]).catch(() => {}), ms);
    }));
    await context.eval(`globalThis.setTimeout = (fn, ms) => { const id = nextId++; callbacks.set(id, fn); armRef.applyIgnored(undefined, [id, ms]); return id; };`);
    return JSON.parse((await context.eval(BARE_SCRIPT, { promise: true })) as string) as Figures;
  } finally {
    isolate.dispose();
  }
}
