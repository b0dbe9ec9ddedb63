// Compatibility of a module with this host, from its manifest:
//   [compatibility] min_node_version / max_node_version   against the modhost version
//   [compatibility] min_protocol_version                   against the module protocol (PROTOCOL_VERSION as "N.0.0")
//   [dependencies] "modhost" / "blvm-node" / "bllvm-node"  a semver range against the modhost version
// min_consensus_version is accepted and not checked (modhost validates no consensus rules: the
// chain backend does), and tested_with only produces a note when this version is not listed.

import semver from "semver";
import { NODE_DEPENDENCY_NAMES, type ModuleManifest } from "../manifest.ts";
import { PROTOCOL_VERSION } from "../../protocol/messages.ts";
import { HOST_VERSION } from "../version.ts";
import { satisfies } from "../deps.ts";

export interface CompatResult {
  problems: string[];
  notes: string[];
}

export function checkCompatibility(m: ModuleManifest, hostVersion = HOST_VERSION, protocolVersion = PROTOCOL_VERSION): CompatResult {
  const problems: string[] = [];
  const notes: string[] = [];
  const c = m.compatibility;
  if (c?.min_node_version && semver.lt(hostVersion, c.min_node_version)) {
    problems.push(`needs modhost >= ${c.min_node_version} ([compatibility] min_node_version), this is ${hostVersion}`);
  }
  if (c?.max_node_version && semver.gt(hostVersion, c.max_node_version)) {
    problems.push(`supports modhost up to ${c.max_node_version} ([compatibility] max_node_version), this is ${hostVersion}`);
  }
  const protocol = `${protocolVersion}.0.0`;
  if (c?.min_protocol_version && semver.lt(protocol, c.min_protocol_version)) {
    problems.push(`needs module protocol >= ${c.min_protocol_version} ([compatibility] min_protocol_version), this host speaks ${protocol}`);
  }
  if (c && c.tested_with.length > 0 && !c.tested_with.includes(hostVersion)) {
    notes.push(`not tested with modhost ${hostVersion} (tested_with: ${c.tested_with.join(", ")})`);
  }
  for (const [dep, range] of Object.entries(m.dependencies)) {
    if (NODE_DEPENDENCY_NAMES.includes(dep) && !satisfies(hostVersion, range)) {
      problems.push(`needs ${dep} ${range} ([dependencies]), this is modhost ${hostVersion}`);
    }
  }
  return { problems, notes };
}
