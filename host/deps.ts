// Dependency resolution: which modules can load, and in which order.
//
// "a -> b" below means "a depends on b", so b loads before a. Load order is a deterministic
// topological order (Kahn's algorithm, ties broken by module name). Unload in the reverse
// order (`plan.order.slice().reverse()`), so a module stops before what it depends on.
//
// Ranges were normalised by manifest parsing (BLVM's ">=1.0.0,<2.0.0" -> ">=1.0.0 <2.0.0").
// Versions are compared with includePrerelease, so a host or module at "1.1.0-rc.1"
// satisfies ">=1.0.0".

import semver from "semver";
import { NODE_DEPENDENCY_NAMES, type ModuleManifest } from "./manifest.ts";

export interface LoadPlan {
  /** Modules to load, in load order. */
  order: ModuleManifest[];
  /** Modules that will not load, sorted by name, each with the reason. */
  skipped: { name: string; reason: string }[];
  /** Things worth logging that do not stop a module (unusable optional dependencies). */
  notes: { name: string; note: string }[];
}

const RANGE_OPTIONS = { includePrerelease: true };

export function satisfies(version: string, range: string): boolean {
  try {
    return semver.satisfies(version, range, RANGE_OPTIONS);
  } catch {
    return false;
  }
}

export function planLoad(manifests: ModuleManifest[], hostVersion: string): LoadPlan {
  const skipped = new Map<ModuleManifest, string>();
  const notes: LoadPlan["notes"] = [];
  const byName = uniqueByName(manifests, skipped);

  checkDirect(byName, hostVersion, skipped);
  skipDependents(byName, skipped);
  skipCycles(byName, skipped);
  skipDependents(byName, skipped);

  const loadable = [...byName.values()].filter((m) => !skipped.has(m));
  const edges = dependencyEdges(loadable, notes);
  const order = topologicalOrder(loadable, edges);

  return {
    order,
    skipped: [...skipped].map(([m, reason]) => ({ name: m.name, reason })).sort((a, b) => compare(a.name, b.name) || compare(a.reason, b.reason)),
    notes: notes.sort((a, b) => compare(a.name, b.name) || compare(a.note, b.note)),
  };
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Name -> manifest. Every manifest whose name is taken more than once is skipped. */
function uniqueByName(manifests: ModuleManifest[], skipped: Map<ModuleManifest, string>): Map<string, ModuleManifest> {
  const groups = new Map<string, ModuleManifest[]>();
  for (const m of manifests) groups.set(m.name, [...(groups.get(m.name) ?? []), m]);
  const byName = new Map<string, ModuleManifest>();
  for (const [name, group] of groups) {
    // Keep one entry in the map so dependents see it (as not loaded), not as missing.
    byName.set(name, group[0]!);
    if (group.length === 1) continue;
    const files = group.map((m) => m.file).sort().join(" and ");
    for (const m of group) skipped.set(m, `duplicate module name "${name}" in ${files}`);
  }
  return byName;
}

/** Host version requirements and presence/version of each hard dependency. */
function checkDirect(byName: Map<string, ModuleManifest>, hostVersion: string, skipped: Map<ModuleManifest, string>): void {
  for (const m of byName.values()) {
    if (skipped.has(m)) continue;
    for (const [dep, range] of sortedEntries(m.dependencies)) {
      const found = byName.get(dep);
      if (found && skipped.has(found)) continue; // reported as "depends on X, which was not loaded" later
      const problem = NODE_DEPENDENCY_NAMES.includes(dep) ? checkHost(dep, range, hostVersion) : checkModule(dep, range, found);
      if (problem) {
        skipped.set(m, problem);
        break;
      }
    }
  }
}

function checkHost(dep: string, range: string, hostVersion: string): string | undefined {
  return satisfies(hostVersion, range) ? undefined : `needs ${dep} ${range}, found ${hostVersion}`;
}

function checkModule(dep: string, range: string, found: ModuleManifest | undefined): string | undefined {
  if (!found) return `needs ${dep} ${range}, which is not installed`;
  return satisfies(found.version, range) ? undefined : `needs ${dep} ${range}, found ${found.version}`;
}

/** Until nothing changes: a module whose hard dependency is skipped is skipped too. */
function skipDependents(byName: Map<string, ModuleManifest>, skipped: Map<ModuleManifest, string>): void {
  for (let changed = true; changed; ) {
    changed = false;
    for (const m of sortedModules(byName)) {
      if (skipped.has(m)) continue;
      for (const [dep] of sortedEntries(m.dependencies)) {
        const target = byName.get(dep);
        const reason = target && skipped.get(target);
        if (reason) {
          skipped.set(m, `depends on ${dep}, which was not loaded: ${reason}`);
          changed = true;
          break;
        }
      }
    }
  }
}

/**
 * Every module on a cycle of hard dependencies is skipped, with a cycle through it
 * ("dependency cycle: a -> b -> c -> a", rotated to start at the smallest name).
 */
function skipCycles(byName: Map<string, ModuleManifest>, skipped: Map<ModuleManifest, string>): void {
  const live = (name: string) => {
    const m = byName.get(name);
    return m !== undefined && !skipped.has(m);
  };
  const deps = (name: string) => sortedEntries(byName.get(name)!.dependencies).map(([d]) => d).filter(live);
  const found = new Map<ModuleManifest, string>();
  for (const m of sortedModules(byName)) {
    if (!live(m.name)) continue;
    const cycle = shortestCycle(m.name, deps);
    if (cycle) found.set(m, `dependency cycle: ${rotate(cycle).join(" -> ")}`);
  }
  for (const [m, reason] of found) skipped.set(m, reason);
}

/** Breadth-first search for the shortest path start -> ... -> start; undefined when none. */
function shortestCycle(start: string, deps: (name: string) => string[]): string[] | undefined {
  const parent = new Map<string, string>();
  const queue = [start];
  for (let head = 0; head < queue.length; head++) {
    const at = queue[head]!;
    for (const next of deps(at)) {
      if (next === start) {
        const path = [at];
        while (path[0] !== start) path.unshift(parent.get(path[0]!)!);
        return [...path, start];
      }
      if (!parent.has(next)) {
        parent.set(next, at);
        queue.push(next);
      }
    }
  }
  return undefined;
}

/** [b, c, a, b] -> [a, b, c, a]: the same cycle, starting at its smallest name. */
function rotate(cycle: string[]): string[] {
  const ring = cycle.slice(0, -1);
  let min = 0;
  ring.forEach((n, i) => {
    if (n < ring[min]!) min = i;
  });
  const out = [...ring.slice(min), ...ring.slice(0, min)];
  return [...out, out[0]!];
}

/**
 * dependent -> the modules it must load after: its hard dependencies, plus optional ones that
 * are loadable and of a satisfying version. An optional dependency that would close a cycle
 * is left out of the ordering (and noted) rather than stopping anything.
 */
function dependencyEdges(loadable: ModuleManifest[], notes: LoadPlan["notes"]): Map<string, Set<string>> {
  const present = new Map(loadable.map((m) => [m.name, m]));
  const edges = new Map(loadable.map((m) => [m.name, new Set(Object.keys(m.dependencies).filter((d) => present.has(d)))]));
  for (const m of [...loadable].sort((a, b) => compare(a.name, b.name))) {
    for (const [dep, range] of sortedEntries(m.optional_dependencies)) {
      if (NODE_DEPENDENCY_NAMES.includes(dep)) continue; // the host is always there; nothing to order
      const target = present.get(dep);
      if (!target) continue;
      if (!satisfies(target.version, range)) {
        notes.push({ name: m.name, note: `optional dependency ${dep} ${range} ignored: found ${target.version}` });
      } else if (reaches(edges, dep, m.name)) {
        notes.push({ name: m.name, note: `optional dependency ${dep} not used for ordering: ${dep} depends on ${m.name}` });
      } else {
        edges.get(m.name)!.add(dep);
      }
    }
  }
  return edges;
}

/** Is `to` reachable from `from` following dependency edges? */
function reaches(edges: Map<string, Set<string>>, from: string, to: string): boolean {
  const seen = new Set<string>();
  const stack = [from];
  while (stack.length > 0) {
    const at = stack.pop()!;
    if (at === to) return true;
    if (seen.has(at)) continue;
    seen.add(at);
    stack.push(...(edges.get(at) ?? []));
  }
  return false;
}

/** Kahn's algorithm with a sorted ready set: among the modules free to load, the smallest name first. */
function topologicalOrder(loadable: ModuleManifest[], edges: Map<string, Set<string>>): ModuleManifest[] {
  const byName = new Map(loadable.map((m) => [m.name, m]));
  const waiting = new Map([...edges].map(([name, deps]) => [name, deps.size]));
  const dependents = new Map<string, string[]>();
  for (const [name, deps] of edges) for (const d of deps) dependents.set(d, [...(dependents.get(d) ?? []), name]);

  const ready = [...waiting].filter(([, n]) => n === 0).map(([name]) => name);
  const order: ModuleManifest[] = [];
  while (ready.length > 0) {
    ready.sort(compare);
    const name = ready.shift()!;
    order.push(byName.get(name)!);
    for (const d of dependents.get(name) ?? []) {
      const left = waiting.get(d)! - 1;
      waiting.set(d, left);
      if (left === 0) ready.push(d);
    }
  }
  // Cycles were removed before, so every module is ordered; anything left would be a bug.
  if (order.length !== loadable.length) throw new Error("internal error: dependency graph still has a cycle");
  return order;
}

function sortedModules(byName: Map<string, ModuleManifest>): ModuleManifest[] {
  return [...byName.values()].sort((a, b) => compare(a.name, b.name));
}

function sortedEntries(record: Record<string, string>): [string, string][] {
  return Object.entries(record).sort(([a], [b]) => compare(a, b));
}
