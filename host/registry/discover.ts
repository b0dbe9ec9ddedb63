// ModuleDiscovered: a running host looks at its registry every [registry] discover_minutes and
// announces the modules the registry offers that are not installed, and newer versions of those
// that are. The index is fetched and verified exactly as `modhost install` does (signed by the
// pinned keys, not expired, never older than one already seen); a registry that is down or
// refused is logged (once per distinct reason), never fatal. Each module version is announced
// once: what was announced is kept in the lifecycle state file across restarts. Off by
// default: the host contacts no registry unless the operator asks for it. Each look runs in a
// worker thread (host/registry/look.ts): an index of MAX_INDEX_BYTES costs the host's loop nothing.

import type { HostConfig } from "../config.ts";
import type { HostEvents } from "../../capabilities/event-types.ts";
import { lookInWorker } from "./look.ts";
import { MAX_DISCOVERED_PER_LOOK } from "./look-worker.ts";

export interface DiscoveryDeps {
  config: () => HostConfig;
  /** What modules_dir holds: name -> version. */
  installed: () => Promise<ReadonlyMap<string, string>>;
  /** The versions announced before (name -> version), and a way to record new ones. */
  announced: () => Promise<{ all(): Array<[string, string]>; set(name: string, version: string): void; save(): Promise<void> }>;
  publish: (payload: HostEvents["ModuleDiscovered"]) => void;
  log: { info(message: string): void; warn(message: string): void };
}

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
    const installed = await this.deps.installed();
    const announced = await this.deps.announced();
    // Off the host's loop (host/registry/look.ts): the download, the signatures, the index's
    // parse and validation, and the comparison of its versions with what is installed.
    const result = await lookInWorker({
      settings: { file: config.file, registry: config.registry },
      installed: [...installed],
      announced: announced.all(),
    });
    if (!result.ok) {
      if (result.message !== this.lastProblem) this.deps.log.warn(`registry not checked for new modules: ${result.message}`);
      this.lastProblem = result.message;
      return;
    }
    this.lastProblem = "";
    if (this.stopped) return;
    for (const offer of result.offers) {
      announced.set(offer.module, offer.version);
      this.deps.log.info(`the registry offers ${offer.module} ${offer.version}${offer.installed ? ` (installed: ${offer.installed}; modhost update ${offer.module})` : ` (modhost install ${offer.module})`}`);
      this.deps.publish({ module: offer.module, version: offer.version, source: result.url });
    }
    if (result.more) this.deps.log.warn(`the registry offers more than ${MAX_DISCOVERED_PER_LOOK} new modules; the rest are announced at the next look`);
    if (result.offers.length > 0) await announced.save();
  }
}
