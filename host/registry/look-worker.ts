// One look at the registry for RegistryDiscovery, in a worker thread (host/registry/look.ts runs
// it): fetching index.json and index.sig, checking the signatures, parsing and validating the
// index (up to MAX_INDEX_BYTES, 8 MiB: 1.2-2.2 s of CPU on the host's loop at load 13-19) and
// finding what to announce all happen here, so none of it runs on the host's loop. What comes
// back is at most MAX_DISCOVERED_PER_LOOK announcements.

import semver from "semver";
import { parentPort, workerData } from "node:worker_threads";
import { fetchIndex, type RegistrySettings } from "./client.ts";
import { availableVersions } from "./resolve.ts";

/** At most this many modules are announced per look (a registry offering thousands floods nobody). */
export const MAX_DISCOVERED_PER_LOOK = 100;

export interface LookInput {
  settings: RegistrySettings;
  /** What modules_dir holds: name -> version. */
  installed: Array<[string, string]>;
  /** What was announced before: name -> version. */
  announced: Array<[string, string]>;
}

export interface LookOffer {
  module: string;
  version: string;
  installed: string | undefined;
}

export type LookResult =
  | { ok: true; url: string; offers: LookOffer[]; more: boolean }
  | { ok: false; message: string };

/** What to announce of a verified index: new modules and newer stable versions, in name order. */
export async function look(input: LookInput): Promise<LookResult> {
  let verified: Awaited<ReturnType<typeof fetchIndex>>;
  try {
    verified = await fetchIndex(input.settings);
  } catch (err) {
    return { ok: false, message: (err as Error).message };
  }
  const installed = new Map(input.installed);
  const announced = new Map(input.announced);
  const offers: LookOffer[] = [];
  for (const name of Object.keys(verified.index.modules).sort()) {
    const stable = availableVersions(verified.index, name).filter((v) => semver.prerelease(v) === null);
    const latest = stable.at(-1);
    if (!latest) continue;
    const have = installed.get(name);
    if (have !== undefined && !semver.gt(latest, have)) continue;
    const told = announced.get(name);
    if (told !== undefined && !semver.gt(latest, told)) continue;
    if (offers.length >= MAX_DISCOVERED_PER_LOOK) return { ok: true, url: verified.url, offers, more: true };
    offers.push({ module: name, version: latest, installed: have });
  }
  return { ok: true, url: verified.url, offers, more: false };
}

if (parentPort && workerData?.modhostRegistryLook) {
  const port = parentPort;
  look(workerData.modhostRegistryLook as LookInput).then(
    (result) => port.postMessage(result),
    (err: unknown) => port.postMessage({ ok: false, message: err instanceof Error ? err.message : String(err) } satisfies LookResult),
  );
}
