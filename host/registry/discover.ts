// ModuleDiscovered: a running host looks at its registry every [registry] discover_minutes and
// announces the modules the registry offers that are not installed, and newer versions of those
// that are. The index is fetched and verified exactly as `modhost install` does (signed by the
// pinned keys, not expired, never older than one already seen); a registry that is down or
// refused is logged (once per distinct reason), never fatal. Each module version is announced
// once: what was announced is kept in the lifecycle state file across restarts. Off by
// default: the host contacts no registry unless the operator asks for it.

import semver from "semver";
import type { HostConfig } from "../config.ts";
import type { HostEvents } from "../../capabilities/event-types.ts";
import { fetchIndex } from "./client.ts";
import { availableVersions } from "./resolve.ts";

export interface DiscoveryDeps {
  config: () => HostConfig;
  /** What modules_dir holds: name -> version. */
  installed: () => Promise<ReadonlyMap<string, string>>;
  /** The versions announced before (name -> version), and a way to record new ones. */
  announced: () => Promise<{ get(name: string): string | undefined; set(name: string, version: string): void; save(): Promise<void> }>;
  publish: (payload: HostEvents["ModuleDiscovered"]) => void;
  log: { info(message: string): void; warn(message: string): void };
}

/** At most this many modules are announced per look (a registry offering thousands floods nobody). */
const MAX_DISCOVERED_PER_LOOK = 100;

export class RegistryDiscovery {
  private timer: NodeJS.Timeout | undefined;
  private lastProblem = "";
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly deps: DiscoveryDeps) {}

  /** Look now, then every discover_minutes (no-op when 0 or no registry is configured). */
  start(): void {
    const { url, discover_minutes } = this.deps.config().registry;
    if (!url || discover_minutes <= 0) return;
    const tick = async () => {
      await this.look().catch((err: Error) => this.deps.log.warn(`registry not checked for new modules: ${err.message}`));
      if (this.stopped) return;
      this.timer = setTimeout(() => void tick(), this.deps.config().registry.discover_minutes * 60_000);
      this.timer.unref();
    };
    void tick();
  }

  /** No more looks; one in progress (a fetch can take up to a minute) announces nothing more. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** One look at the registry: announce what is new. Returns the modules announced. */
  look(): Promise<void> {
    this.running ??= this.lookOnce().finally(() => (this.running = undefined));
    return this.running;
  }

  private async lookOnce(): Promise<void> {
    const config = this.deps.config();
    let verified: Awaited<ReturnType<typeof fetchIndex>>;
    try {
      verified = await fetchIndex(config);
    } catch (err) {
      const problem = (err as Error).message;
      if (problem !== this.lastProblem) this.deps.log.warn(`registry not checked for new modules: ${problem}`);
      this.lastProblem = problem;
      return;
    }
    this.lastProblem = "";
    if (this.stopped) return;
    const installed = await this.deps.installed();
    const announced = await this.deps.announced();
    let count = 0;
    for (const name of Object.keys(verified.index.modules).sort()) {
      const stable = availableVersions(verified.index, name).filter((v) => semver.prerelease(v) === null);
      const latest = stable.at(-1);
      if (!latest) continue;
      const have = installed.get(name);
      if (have !== undefined && !semver.gt(latest, have)) continue;
      const told = announced.get(name);
      if (told !== undefined && !semver.gt(latest, told)) continue;
      if (count >= MAX_DISCOVERED_PER_LOOK) {
        this.deps.log.warn(`the registry offers more than ${MAX_DISCOVERED_PER_LOOK} new modules; the rest are announced at the next look`);
        break;
      }
      announced.set(name, latest);
      this.deps.log.info(`the registry offers ${name} ${latest}${have ? ` (installed: ${have}; modhost update ${name})` : ` (modhost install ${name})`}`);
      this.deps.publish({ module: name, version: latest, source: verified.url });
      count++;
    }
    if (count > 0) await announced.save();
  }
}
