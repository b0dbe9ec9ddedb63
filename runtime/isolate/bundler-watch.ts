// The size of esbuild's service process while modules are bundled. A module's sources are
// bounded (compile.ts MAX_SOURCE_BYTES), but what esbuild makes of them is not: it computes
// TypeScript enum members that are constant expressions of other members and inlines their
// values where they are used, so `A1 = A0 + A0, A2 = A1 + A1, ...` doubles a string at each
// line (a source of 24 such lines, ~600 bytes, asked the bundler for 500 MB; of 30, 32 GB:
// the machine's memory, in a process of the host's), and 1,000 uses of a 300 KB member made a
// bundle of 300 MB that the host then decoded on its loop. While a build runs, the service's
// resident size is sampled; past MAX_BUNDLER_RSS_MB its process is killed, which fails every
// build in flight with esbuild's "The service was stopped" (compile.ts starts a new one and
// runs each such build once more: the module whose sources do it does it again, and its load
// fails naming the limit).

import { readFile } from "node:fs/promises";

/** The resident size esbuild's service may reach while it bundles modules (a 2 MiB source builds in ~60 MB). */
export const MAX_BUNDLER_RSS_MB = 512;
/** How often the service's size is sampled while a build runs. */
const SAMPLE_MS = 20;

let active = 0;
let sampler: NodeJS.Timeout | undefined;
let sampling = false;
/** How many times the service was killed for its size (compile.ts compares it around a build). */
let overruns = 0;
let lastOverrunMb = 0;

/** Counts a build in flight (the sampler runs while there is one); call the result when it ends. */
export function watchBuild(): () => void {
  active++;
  sampler ??= setInterval(() => void sample(), SAMPLE_MS);
  let ended = false;
  return () => {
    if (ended) return;
    ended = true;
    if (--active === 0 && sampler) {
      clearInterval(sampler);
      sampler = undefined;
    }
  };
}

/** The times the service was killed for its size so far, and the size it had the last time. */
export function bundlerOverruns(): { count: number; lastMb: number } {
  return { count: overruns, lastMb: lastOverrunMb };
}

/**
 * esbuild processes that are children of this one: those the main thread started (Linux:
 * /proc/self/task/<pid>/children; esbuild's JavaScript API spawns its service from the thread
 * that builds, the host's main thread). Three small reads a sample.
 */
async function esbuildChildren(): Promise<number[]> {
  const pids: number[] = [];
  const kids = await readFile(`/proc/self/task/${process.pid}/children`, "utf8").catch(() => "");
  for (const k of kids.split(" ")) {
    if (!k.trim()) continue;
    const comm = await readFile(`/proc/${k}/comm`, "utf8").catch(() => "");
    if (comm.trim() === "esbuild") pids.push(Number(k));
  }
  return pids;
}

async function sample(): Promise<void> {
  if (sampling) return;
  sampling = true;
  try {
    for (const pid of await esbuildChildren()) {
      const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
      const mb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
      if (mb <= MAX_BUNDLER_RSS_MB) continue;
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        continue;
      }
      overruns++;
      lastOverrunMb = Math.ceil(mb);
    }
  } finally {
    sampling = false;
  }
}
