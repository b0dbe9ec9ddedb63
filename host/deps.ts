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

/**
 * Dependency cycles are shown with at most this many names (the rest counted): a cycle through
 * hundreds of modules would otherwise be spelled out in full in the reason of each of them.
 */
export const MAX_CYCLE_NAMES = 16;

/** Whether `version` satisfies `range`: `satisfies`, or the answers `checkRanges` computed ahead. */
export type RangeCheck = (version: string, range: string) => boolean;

/**
 * Every version check `planLoad` will make for these manifests, computed ahead in slices of about
 * CHECK_SLICE_MS of the loop each, and remembered for the next plans. A `||` chain of
 * MAX_RANGE_CHARS costs semver 0.15-1.7 ms to match (more under load): in one turn, the plan of
 * 256 modules with 64 such dependencies each took 15 s of the loop. Each manifest has at most
 * MAX_MANIFEST_RANGE_CHARS of ranges, so a modules_dir of MAX_MODULES makes at most ~2,000 such
 * checks. The plan itself is then linear in the modules and their dependencies.
 */
export async function checkRanges(manifests: readonly ModuleManifest[], hostVersion: string): Promise<RangeCheck> {
  const versions = new Map(manifests.map((m) => [m.name, m.version]));
  const mine = new Map<string, boolean>();
  let sliceStart = performance.now();
  for (const m of manifests) {
    for (const [dep, range] of [...Object.entries(m.dependencies), ...Object.entries(m.optional_dependencies ?? {})]) {
      const version = NODE_DEPENDENCY_NAMES.includes(dep) ? hostVersion : versions.get(dep);
      if (version === undefined) continue;
      const key = `${version}\0${range}`;
      const known = answers.get(key);
      if (known !== undefined) {
        mine.set(key, known);
        continue;
      }
      const answer = satisfies(version, range);
      mine.set(key, answer);
      if (answers.size >= MAX_REMEMBERED_CHECKS) answers.clear();
      answers.set(key, answer);
      if (performance.now() - sliceStart > CHECK_SLICE_MS) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        sliceStart = performance.now();
      }
    }
  }
  return (version, range) => mine.get(`${version}\0${range}`) ?? satisfies(version, range);
}

/** How long `checkRanges` runs before it lets the loop turn. */
const CHECK_SLICE_MS = 4;

/**
 * Answers kept from one plan to the next (every command plans the running modules again): all
 * of MAX_MODULES modules' checks, 128 each, fit; past it they are forgotten and made again.
 */
const MAX_REMEMBERED_CHECKS = 32_768;
const answers = new Map<string, boolean>();

export function planLoad(manifests: ModuleManifest[], hostVersion: string, check: RangeCheck = satisfies): LoadPlan {
  const skipped = new Map<ModuleManifest, string>();
  const notes: LoadPlan["notes"] = [];
  const byName = uniqueByName(manifests, skipped);
  // Each module's hard dependencies, sorted once: every step below is linear in the modules and
  // their dependencies (before, the cycle search sorted them again at every step of a search
  // per module: 256 modules of 64 dependencies each took 2-3.5 s of the host's loop).
  const hard = new Map([...byName.values()].map((m) => [m, sortedEntries(m.dependencies).map(([d]) => d)]));

  checkDirect(byName, hostVersion, skipped, check);
  skipDependents(byName, hard, skipped);
  skipCycles(byName, hard, skipped);
  skipDependents(byName, hard, skipped);

  const loadable = [...byName.values()].filter((m) => !skipped.has(m));
  const edges = dependencyEdges(loadable, notes, check);
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
  for (const m of manifests) {
    const group = groups.get(m.name);
    if (group) group.push(m);
    else groups.set(m.name, [m]);
  }
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
function checkDirect(byName: Map<string, ModuleManifest>, hostVersion: string, skipped: Map<ModuleManifest, string>, check: RangeCheck): void {
  for (const m of byName.values()) {
    if (skipped.has(m)) continue;
    for (const [dep, range] of sortedEntries(m.dependencies)) {
      const found = byName.get(dep);
      if (found && skipped.has(found)) continue; // reported as "depends on X, which was not loaded" later
      const problem = NODE_DEPENDENCY_NAMES.includes(dep) ? checkHost(dep, range, hostVersion, check) : checkModule(dep, range, found, check);
      if (problem) {
        skipped.set(m, problem);
        break;
      }
    }
  }
}

function checkHost(dep: string, range: string, hostVersion: string, check: RangeCheck): string | undefined {
  return check(hostVersion, range) ? undefined : `needs ${dep} ${range}, found ${hostVersion}`;
}

function checkModule(dep: string, range: string, found: ModuleManifest | undefined, check: RangeCheck): string | undefined {
  if (!found) return `needs ${dep} ${range}, which is not installed`;
  return check(found.version, range) ? undefined : `needs ${dep} ${range}, found ${found.version}`;
}

/**
 * A module whose hard dependency is skipped is skipped too, and so on: one breadth-first pass
 * over the dependents. Each is blamed on its smallest-named dependency skipped before it, and
 * its reason carries the first cause only ("depends on c, which was not loaded because of a:
 * ..."), so a chain of N modules does not make reasons of N nested clauses (N^2 text).
 */
function skipDependents(byName: Map<string, ModuleManifest>, hard: Map<ModuleManifest, string[]>, skipped: Map<ModuleManifest, string>): void {
  const dependents = new Map<string, ModuleManifest[]>();
  for (const m of byName.values()) {
    if (skipped.has(m)) continue;
    for (const d of hard.get(m)!) {
      const list = dependents.get(d);
      if (list) list.push(m);
      else dependents.set(d, [m]);
    }
  }
  // Which module's own problem each skipped module goes back to.
  const cause = new Map<ModuleManifest, ModuleManifest>();
  let layer = [...skipped.keys()].filter((m) => byName.get(m.name) === m);
  for (const m of layer) cause.set(m, m);
  while (layer.length > 0) {
    const reached = new Set<ModuleManifest>();
    for (const m of layer) for (const d of dependents.get(m.name) ?? []) if (!skipped.has(d)) reached.add(d);
    const next = [...reached].sort((a, b) => compare(a.name, b.name));
    for (const m of next) {
      const dep = hard.get(m)!.find((d) => {
        const target = byName.get(d);
        return target !== undefined && skipped.has(target) && cause.has(target);
      })!;
      const target = byName.get(dep)!;
      const root = cause.get(target)!;
      const why = skipped.get(root)!;
      skipped.set(m, root === target ? `depends on ${dep}, which was not loaded: ${why}` : `depends on ${dep}, which was not loaded because of ${root.name}: ${why}`);
      cause.set(m, root);
    }
    layer = next;
  }
}

/**
 * Every module on a cycle of hard dependencies is skipped, with a cycle through it
 * ("dependency cycle: a -> b -> c -> a", rotated to start at the smallest name, at most
 * MAX_CYCLE_NAMES names shown). The cycles are the strongly connected components (Tarjan's
 * algorithm); the cycle shown for a module goes from it to its component's smallest name and
 * back, along shortest paths inside the component: two searches per component, not one per module.
 */
function skipCycles(byName: Map<string, ModuleManifest>, hard: Map<ModuleManifest, string[]>, skipped: Map<ModuleManifest, string>): void {
  const live = [...byName.values()].filter((m) => !skipped.has(m)).sort((a, b) => compare(a.name, b.name));
  const deps = new Map(live.map((m) => [m.name, hard.get(m)!.filter((d) => {
    const target = byName.get(d);
    return target !== undefined && !skipped.has(target);
  })]));
  const found = new Map<ModuleManifest, string>();
  for (const component of stronglyConnected(live.map((m) => m.name), (n) => deps.get(n)!)) {
    if (component.length === 1 && !deps.get(component[0]!)!.includes(component[0]!)) continue;
    const inside = new Set(component);
    const root = [...component].sort(compare)[0]!;
    const forward = (n: string) => deps.get(n)!.filter((d) => inside.has(d));
    const reverseOf = new Map<string, string[]>(component.map((n) => [n, []]));
    for (const n of [...component].sort(compare)) for (const d of forward(n)) reverseOf.get(d)!.push(n);
    const fromRoot = searchTree(root, forward); // n -> its predecessor on a shortest path root -> n
    const toRoot = searchTree(root, (n) => reverseOf.get(n)!); // n -> its successor on a shortest path n -> root
    for (const name of component) {
      let cycle: string[];
      if (name === root) {
        // The shortest way back to the root from any of its own dependencies.
        const back = forward(root).map((d) => ({ d, path: walk(d, toRoot, root) })).sort((a, b) => a.path.length - b.path.length || compare(a.d, b.d))[0]!;
        cycle = [root, ...back.path];
      } else {
        const there = walk(name, toRoot, root); // name ... root
        const back = walk(name, fromRoot, root).reverse(); // root ... name
        cycle = [...there, ...back.slice(1)];
      }
      found.set(byName.get(name)!, `dependency cycle: ${showCycle(rotate(cycle))}`);
    }
  }
  for (const [m, reason] of found) skipped.set(m, reason);
}

/** Breadth-first search from `start`: each node reached -> the node it was reached from. */
function searchTree(start: string, next: (n: string) => string[]): Map<string, string> {
  const parent = new Map<string, string>([[start, start]]);
  const queue = [start];
  for (let head = 0; head < queue.length; head++) {
    for (const n of next(queue[head]!)) {
      if (parent.has(n)) continue;
      parent.set(n, queue[head]!);
      queue.push(n);
    }
  }
  return parent;
}

/** from, tree(from), tree(tree(from)), ... up to `end`. */
function walk(from: string, tree: Map<string, string>, end: string): string[] {
  const path = [from];
  while (path[path.length - 1] !== end) path.push(tree.get(path[path.length - 1]!)!);
  return path;
}

/** Tarjan's strongly connected components, iteratively (no recursion as deep as the graph). */
function stronglyConnected(nodes: string[], next: (n: string) => string[]): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const out: string[][] = [];
  let counter = 0;
  for (const start of nodes) {
    if (index.has(start)) continue;
    const frames: Array<{ n: string; i: number }> = [{ n: start, i: 0 }];
    index.set(start, counter);
    low.set(start, counter++);
    stack.push(start);
    onStack.add(start);
    while (frames.length > 0) {
      const f = frames[frames.length - 1]!;
      const succ = next(f.n);
      if (f.i < succ.length) {
        const w = succ[f.i++]!;
        if (!index.has(w)) {
          index.set(w, counter);
          low.set(w, counter++);
          stack.push(w);
          onStack.add(w);
          frames.push({ n: w, i: 0 });
        } else if (onStack.has(w)) {
          low.set(f.n, Math.min(low.get(f.n)!, index.get(w)!));
        }
        continue;
      }
      frames.pop();
      const parent = frames[frames.length - 1];
      if (parent) low.set(parent.n, Math.min(low.get(parent.n)!, low.get(f.n)!));
      if (low.get(f.n) === index.get(f.n)) {
        const component: string[] = [];
        let w: string;
        do {
          w = stack.pop()!;
          onStack.delete(w);
          component.push(w);
        } while (w !== f.n);
        out.push(component);
      }
    }
  }
  return out;
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

/** a -> b -> c -> a, at most MAX_CYCLE_NAMES names shown (the first ones, then how many more, then the way back). */
function showCycle(cycle: string[]): string {
  if (cycle.length <= MAX_CYCLE_NAMES) return cycle.join(" -> ");
  const more = cycle.length - MAX_CYCLE_NAMES;
  return [...cycle.slice(0, MAX_CYCLE_NAMES - 1), `... (${more} more, MAX_CYCLE_NAMES)`, cycle[cycle.length - 1]].join(" -> ");
}

/**
 * dependent -> the modules it must load after: its hard dependencies, plus optional ones that
 * are loadable and of a satisfying version. Optional dependencies that are on a cycle with their
 * dependent (in the graph of every such edge; hard ones have no cycles here) are left out of the
 * ordering, one note per dependent naming them, rather than stopping anything. (Before, each
 * optional edge was added if no path led back, one search of the whole graph per edge: 256
 * modules with 64 optional dependencies each in one cycle took 0.6 s and 2,080 notes.)
 */
function dependencyEdges(loadable: ModuleManifest[], notes: LoadPlan["notes"], check: RangeCheck): Map<string, Set<string>> {
  const present = new Map(loadable.map((m) => [m.name, m]));
  const edges = new Map(loadable.map((m) => [m.name, new Set(Object.keys(m.dependencies).filter((d) => present.has(d)))]));
  const optional = new Map<string, string[]>();
  for (const m of [...loadable].sort((a, b) => compare(a.name, b.name))) {
    const usable: string[] = [];
    for (const [dep, range] of sortedEntries(m.optional_dependencies)) {
      if (NODE_DEPENDENCY_NAMES.includes(dep)) continue; // the host is always there; nothing to order
      const target = present.get(dep);
      if (!target) continue;
      if (!check(target.version, range)) notes.push({ name: m.name, note: `optional dependency ${dep} ${range} ignored: found ${target.version}` });
      else usable.push(dep);
    }
    optional.set(m.name, usable);
  }
  const all = new Map([...present.keys()].map((n) => [n, [...edges.get(n)!, ...optional.get(n)!]]));
  const componentOf = new Map<string, number>();
  stronglyConnected([...present.keys()].sort(compare), (n) => all.get(n)!).forEach((c, i) => {
    for (const n of c) componentOf.set(n, i);
  });
  for (const [name, deps] of optional) {
    const onCycle = deps.filter((d) => componentOf.get(d) === componentOf.get(name));
    for (const d of deps) if (!onCycle.includes(d)) edges.get(name)!.add(d);
    if (onCycle.length > 0) notes.push({ name, note: `optional ${onCycle.length === 1 ? "dependency" : "dependencies"} ${onCycle.join(", ")} not used for ordering: on a dependency cycle with ${name}` });
  }
  return edges;
}

/** Kahn's algorithm with a sorted ready set: among the modules free to load, the smallest name first. */
function topologicalOrder(loadable: ModuleManifest[], edges: Map<string, Set<string>>): ModuleManifest[] {
  const byName = new Map(loadable.map((m) => [m.name, m]));
  const waiting = new Map([...edges].map(([name, deps]) => [name, deps.size]));
  const dependents = new Map<string, string[]>();
  for (const [name, deps] of edges) {
    for (const d of deps) {
      const list = dependents.get(d);
      if (list) list.push(name);
      else dependents.set(d, [name]);
    }
  }

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

function sortedEntries(record: Record<string, string>): [string, string][] {
  return Object.entries(record).sort(([a], [b]) => compare(a, b));
}
