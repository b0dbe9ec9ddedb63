// Choosing what to install: NAME[@RANGE] and, recursively, its dependencies, against the
// registry index and the modules already installed.
//
// For each module the highest version in the index that satisfies every range asked of it is
// chosen (stable versions before pre-releases, as semver does); a module already installed is
// used when its version satisfies the range and is never changed by an install (that is what
// `modhost update` is for). Dependencies on the host ("modhost", "blvm-node", "bllvm-node") are
// checked against this modhost's version. Optional dependencies are not installed. The result
// is in dependency order (dependencies first). Anything that cannot be satisfied is an error
// that names the chain of requirements and the versions available.

import semver from "semver";
import { ModhostError } from "../errors.ts";
import { NODE_DEPENDENCY_NAMES, normaliseRange, MODULE_NAME_RE, MODULE_NAME_HINT } from "../manifest.ts";
import { HOST_VERSION } from "../version.ts";
import type { RegistryIndex, VersionEntry } from "./format.ts";

export interface Request {
  name: string;
  range: string;
  /** "you" or the module that needs it, for messages. */
  by: string;
}

export interface PlannedInstall {
  name: string;
  version: string;
  entry: VersionEntry;
  by: string;
}

/** "name", "name@^1.2", "name@>=1.0.0 <2" -> name and a semver range ("*" when absent). */
export function parseSpec(spec: string): { name: string; range: string } {
  const at = spec.indexOf("@");
  const name = at === -1 ? spec : spec.slice(0, at);
  const rawRange = at === -1 ? "*" : spec.slice(at + 1);
  if (!MODULE_NAME_RE.test(name)) throw new ModhostError("usage", `"${name}" is not a module name`, MODULE_NAME_HINT);
  const range = normaliseRange(rawRange);
  if (range === undefined) throw new ModhostError("usage", `"${rawRange}" is not a version range`, 'write NAME@RANGE, e.g. block-stats@^0.2.0 or block-stats@0.2.1');
  return { name, range };
}

/**
 * Modules in one chain of dependencies (a module, one it needs, one that one needs, ...). The
 * index is signed, but a registry that is hostile (or whose key was stolen) signs what it
 * likes: a chain of 4,000 modules (what ~1 MiB of the 8 MiB an index may have holds) made
 * `modhost install` fail with the stack's RangeError, and one of 1,000 cost 196 ms building the
 * chain's text at every step. Past it the install is refused naming this limit.
 */
export const MAX_DEPENDENCY_DEPTH = 64;

export function availableVersions(index: RegistryIndex, name: string): string[] {
  const m = Object.hasOwn(index.modules, name) ? index.modules[name] : undefined;
  return m ? semver.sort(Object.keys(m.versions)) : [];
}

function bestVersion(index: RegistryIndex, name: string, range: string): string | undefined {
  return semver.maxSatisfying(availableVersions(index, name), range) ?? undefined;
}

/**
 * The modules to install for `requests`, dependencies first. `installed`: name -> version of
 * what is in modules_dir (and stays).
 */
export function resolve(index: RegistryIndex, requests: Request[], installed: ReadonlyMap<string, string>, hostVersion = HOST_VERSION): PlannedInstall[] {
  const chosen = new Map<string, PlannedInstall>();
  const order: PlannedInstall[] = [];
  const visiting = new Set<string>();

  const visit = (req: Request, chain: string[]): void => {
    // Built only for an error: on every visit it made a chain of N modules cost O(N²).
    const via = () => [...chain, `${req.name} ${req.range}`].join(" -> ");
    if (chain.length >= MAX_DEPENDENCY_DEPTH) {
      throw new ModhostError("dependency", `cannot install: ${chain[0]} -> ... (${chain.length} modules) -> ${req.name} ${req.range}: the chain of dependencies is deeper than ${MAX_DEPENDENCY_DEPTH} modules (MAX_DEPENDENCY_DEPTH, a fixed limit)`, "the registry's index describes a chain of dependencies no module needs; tell the registry operator");
    }
    if (NODE_DEPENDENCY_NAMES.includes(req.name)) {
      if (!semver.satisfies(hostVersion, req.range, { includePrerelease: true })) {
        throw new ModhostError("dependency", `cannot install: ${via()}: needs ${req.name} ${req.range}, but this is modhost ${hostVersion}`, `use a version that supports modhost ${hostVersion} (modhost search ${chain[0]?.split(" ")[0] ?? req.name}), or upgrade modhost`);
      }
      return;
    }
    const have = installed.get(req.name);
    if (have !== undefined) {
      if (semver.satisfies(have, req.range, { includePrerelease: true })) return;
      throw new ModhostError("dependency", `cannot install: ${via()}: ${req.name} ${have} is installed, which does not satisfy ${req.range}`, `update it first if a newer version fits (modhost update ${req.name}@${req.range}), then try again`);
    }
    if (visiting.has(req.name)) throw new ModhostError("dependency", `cannot install: dependency cycle: ${via()}`);
    const prior = chosen.get(req.name);
    if (prior) {
      if (semver.satisfies(prior.version, req.range, { includePrerelease: true })) return;
      throw new ModhostError("dependency", `cannot install: ${via()}: conflicting requirements for ${req.name}: ${prior.version} was chosen for ${prior.by}, which does not satisfy ${req.range}`, "no single version satisfies both; install versions whose dependencies agree");
    }
    const versions = availableVersions(index, req.name);
    if (versions.length === 0) {
      throw new ModhostError("dependency", `cannot install: ${via()}: ${req.name} is not in the registry`, chain.length ? `the registry does not offer a dependency of ${chain[0]}; tell the maintainers` : "check the name: modhost search");
    }
    const version = bestVersion(index, req.name, req.range);
    if (!version) {
      throw new ModhostError("dependency", `cannot install: ${via()}: no version of ${req.name} satisfies ${req.range}; the registry has ${versions.join(", ")}`, chain.length ? `the registry has no version of ${req.name} that ${req.by} accepts` : `ask for one of the versions listed, e.g. modhost install ${req.name}@${versions.at(-1)}`);
    }
    const entry = index.modules[req.name]!.versions[version]!;
    visiting.add(req.name);
    const planned: PlannedInstall = { name: req.name, version, entry, by: req.by };
    chosen.set(req.name, planned);
    for (const [dep, range] of Object.entries(entry.dependencies).sort(([a], [b]) => (a < b ? -1 : 1))) {
      visit({ name: dep, range, by: `${req.name} ${version}` }, [...chain, `${req.name} ${version}`]);
    }
    visiting.delete(req.name);
    order.push(planned);
  };

  for (const r of requests) visit(r, []);
  return order;
}
