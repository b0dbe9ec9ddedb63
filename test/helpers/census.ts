// A census of what a host holds, for leak checks after many cycles of a module: every Map, Set
// and array reachable from the Host object (its manager, services, bus, sessions, hub: found by
// walking its properties, so a new map is counted without being named here), the shared
// host-bytes accounts, this process's descriptors, the mounts, loop devices, cgroup directories
// and run-directory entries it made, and the host heap after full collections. `grown` lists
// what is larger in a later census than in an earlier one.

import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { hostBytes } from "../../protocol/host-bytes.ts";
import type { TestHost } from "./host.ts";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

export type Census = Record<string, number>;

/**
 * Sizes of the Maps, Sets and arrays reachable from `root` (at most `depth` properties away),
 * by path, leaving out the paths that match one of `skip`.
 */
function collections(root: object, depth: number, skip: readonly RegExp[]): Census {
  const out: Census = {};
  const seen = new Set<object>();
  const visit = (v: unknown, where: string, left: number) => {
    if (v === null || typeof v !== "object" || seen.has(v) || skip.some((p) => p.test(where))) return;
    seen.add(v);
    if (v instanceof Map || v instanceof Set) out[where] = v.size;
    else if (Array.isArray(v)) out[where] = v.length;
    if (left === 0 || ArrayBuffer.isView(v) || v instanceof ArrayBuffer) return;
    if (v instanceof Map) {
      // A small map keyed by names (per-module records) is counted by name; any other by one path.
      const named = v.size <= 64;
      for (const [k, x] of v) visit(x, `${where}[${named && typeof k === "string" ? k : "*"}]`, left - 1);
      return;
    }
    if (v instanceof Set || Array.isArray(v)) {
      for (const x of v) visit(x, `${where}[]`, left - 1);
      return;
    }
    for (const key of Object.keys(v)) {
      let x: unknown;
      try {
        x = (v as Record<string, unknown>)[key];
      } catch {
        continue;
      }
      visit(x, `${where}.${key}`, left - 1);
    }
  };
  visit(root, "host", depth);
  return out;
}

function count(f: () => number): number {
  try {
    return f();
  } catch {
    return -1;
  }
}

/** Cgroup directories under this process's own (modhost-<ns>-<pid>-<start>) in each v1 controller. */
function cgroupDirs(): number {
  let n = 0;
  for (const controller of ["memory", "pids", "cpu", "cpuacct"]) {
    const base = path.join("/sys/fs/cgroup", controller);
    let names: string[];
    try {
      names = readdirSync(base).filter((d) => d.startsWith("modhost-") && d.split("-")[2] === String(process.pid));
    } catch {
      continue;
    }
    for (const d of names) {
      const walk = (dir: string) => {
        for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) n++, walk(path.join(dir, e.name));
      };
      walk(path.join(base, d));
    }
  }
  return n;
}

/** Loop devices backed by a file under `dir`. */
function loopsUnder(dir: string): number {
  let n = 0;
  for (const dev of readdirSync("/sys/block").filter((d) => d.startsWith("loop"))) {
    try {
      if (readFileSync(`/sys/block/${dev}/loop/backing_file`, "utf8").startsWith(dir)) n++;
    } catch {
      // not bound
    }
  }
  return n;
}

/**
 * The census of `h`. Left out by default: the chain, wherever it is reached from (it grows with
 * every block the canary mines) and the host-turn gates' queues (arrays compacted past 1,024 spent places, runtime/turn.ts).
 */
export async function census(h: TestHost, depth = 7, skip: readonly RegExp[] = [/(^|\.)chain\b/, /\.gate\b/]): Promise<Census> {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 30));
  }
  const runDir = (await ((h.manager as unknown as { supervisor: { runDir?: Promise<{ dir: string }> } }).supervisor.runDir?.catch(() => undefined)))?.dir;
  return {
    ...collections(h.host, depth, skip),
    "hostBytes.accounts": hostBytes.accounts,
    "process.fds": count(() => readdirSync("/proc/self/fd").length),
    "process.heapMB": Math.round(process.memoryUsage().heapUsed / 1024 / 1024),
    "system.mountsUnderDir": count(() => readFileSync("/proc/self/mountinfo", "utf8").split("\n").filter((l) => l.split(" ")[4]?.startsWith(h.dir)).length),
    "system.loopsUnderDir": count(() => loopsUnder(h.dir)),
    "system.cgroupDirs": count(cgroupDirs),
    "system.runDirEntries": runDir ? count(() => readdirSync(runDir).length) : -1,
  };
}

/**
 * What is larger in `after` than in `before` by more than `slack` (and a quarter of what it was),
 * as "path: before -> after".
 */
export function grown(before: Census, after: Census, slack = 0): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(after)) {
    const b = before[k] ?? 0;
    if (v > b + Math.max(slack, Math.floor(b / 4))) out.push(`${k}: ${b} -> ${v}`);
  }
  return out;
}

/** How many invocations the host's session of module `name` waits answers for (-1: no process). */
export function pendingOf(h: TestHost, name: string): number {
  const rec = (h.manager as unknown as { records: Map<string, { process?: { session: { pending: Map<number, unknown> } } }> }).records.get(name);
  return rec?.process?.session.pending.size ?? -1;
}
