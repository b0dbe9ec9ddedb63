// What the hostile rounds' isolate probes share: a module made of a round's fixture, the
// crossing mode for one test, and the size of a module's isolate host (its node process).

import type { ExecutionContext } from "ava";
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { descendants } from "./procs.ts";
import { sleep, type InlineModule, type TestHost } from "./host.ts";

/** Modules whose index.ts is a fixture of `test/fixtures/<dir>/` (a round's directory). */
export function fixtureModules(dir: string, round: string): (name: string, file: string, capabilities: string[]) => InlineModule {
  return (name, file, capabilities) => ({
    toml: [`name = "${name}"`, `version = "0.1.0"`, `entry_point = "index.ts"`, `description = "${round} probe ${name}"`, `capabilities = [${capabilities.map((c) => JSON.stringify(c)).join(", ")}]`, ""].join("\n"),
    files: { "index.ts": readFileSync(new URL(`../fixtures/${dir}/${file}`, import.meta.url), "utf8") },
  });
}

/** Sync crossings (read by the host at each isolate host it spawns) for the rest of one test. */
export function crossings(t: ExecutionContext, sync: boolean): void {
  const before = process.env.MODHOST_ISOLATE_SYNC;
  process.env.MODHOST_ISOLATE_SYNC = sync ? "1" : "0";
  t.teardown(() => {
    if (before === undefined) delete process.env.MODHOST_ISOLATE_SYNC;
    else process.env.MODHOST_ISOLATE_SYNC = before;
  });
}

/** The pid of a module's isolate host (its node process, below the sandbox's), if it has one. */
async function isolateHostPid(h: TestHost, name: string): Promise<number | undefined> {
  const pid = h.manager.processOf(name)?.pid;
  if (!pid) return undefined;
  for (const d of [pid, ...(await descendants(pid))]) {
    if (/MainThread|node/.test(await readFile(`/proc/${d}/comm`, "utf8").catch(() => ""))) return d;
  }
  return undefined;
}

async function rssOf(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) * 1024;
}

/** The resident size (VmRSS, bytes) of a module's isolate host now, 0 when it has none. */
export async function isolateHostRss(h: TestHost, name: string): Promise<number> {
  const pid = await isolateHostPid(h, name);
  return pid ? rssOf(pid) : 0;
}

/** The largest size (VmRSS) of a module's isolate host, sampled every 50 ms until stop(); a new process of it is followed. */
export function sampleSize(h: TestHost, name: string): { stop(): Promise<number> } {
  let peak = 0;
  let sampling = true;
  let sampled: { pid: number; node?: number } | undefined;
  const loop = (async () => {
    while (sampling) {
      const pid = h.manager.processOf(name)?.pid;
      if (pid && sampled?.pid !== pid) sampled = { pid };
      if (sampled && !sampled.node) sampled.node = await isolateHostPid(h, name);
      if (sampled?.node) peak = Math.max(peak, await rssOf(sampled.node));
      await sleep(50);
    }
  })();
  return {
    async stop() {
      sampling = false;
      await loop;
      return peak;
    },
  };
}
