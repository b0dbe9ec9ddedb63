// `modhost dev`: reload a module when its files change.
//
// Every directory of every module is watched on its own (fs.watch without `recursive`): a watch
// on a directory follows the directory's inode, so a save by rename (sed -i, an editor's atomic
// save: write a temporary file, rename it over the old one) is seen like an in-place write, and
// every later save too. Node's recursive watch on Linux watches the files' inodes and loses a
// file once it has been replaced by a rename. New subdirectories are watched as they appear.
//
// Changes are debounced per module (DEBOUNCE_MS after the last event), then the module is
// reloaded: its code, manifest and grants are read again, and a version that does not compile
// or verify is refused while the running one keeps running (ModuleManager.reload). A Rust
// module (a Cargo.toml next to module.toml) is rebuilt first (cargo build --release, as
// scripts/build-rust.sh); a failed build keeps the running version too. A change that arrives
// during a reload queues one more reload after it.

import { spawn } from "node:child_process";
import { existsSync, opendirSync, readdirSync, statSync, watch, type Dir, type FSWatcher } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Host } from "./host.ts";

/** Quiet time after the last change before a reload: an editor's save is several events. */
const DEBOUNCE_MS = 75;
/** At most this many directories are watched (an inotify watch each): a module tree that has more is watched partly, and the log says so. */
const MAX_WATCHED_DIRS = 2000;
/** Entries of one directory looked at for subdirectories to watch. */
const MAX_SCANNED_ENTRIES = 10_000;
/** A cargo build longer than this is stopped (a hung build must not block later reloads). */
const CARGO_TIMEOUT_MS = 10 * 60_000;
/** Build output kept from a failed cargo build in the log (its last lines). */
const CARGO_OUTPUT_CHARS = 4000;

/** Names that are never edits: hidden files, editors' backup and swap files, build output. */
function ignored(name: string): boolean {
  return name.startsWith(".") || name.endsWith("~") || name.endsWith(".swp") || name.endsWith(".swx") || name === "4913" || name === "target" || name === "node_modules";
}

interface Watched {
  module: string;
  watcher: FSWatcher;
}

export interface DevReloadStats {
  /** Reloads that finished with the module running the new version. */
  reloads: number;
  /** Reloads refused or failed (the reason was logged). */
  failures: number;
}

export class DevReloader {
  private readonly dirs = new Map<string, Watched>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  /** Modules being reloaded now, and whether another change came in meanwhile. */
  private readonly busy = new Map<string, boolean>();
  private readonly log;
  private warnedLimit = false;
  private closed = false;
  readonly stats: DevReloadStats = { reloads: 0, failures: 0 };

  constructor(private readonly host: Host) {
    this.log = host.logger.for("dev");
  }

  /** Watch every module the host knows. */
  start(): void {
    for (const s of this.host.manager.status()) {
      const dir = this.host.manager.manifestOf(s.name)?.dir;
      if (dir) this.watchTree(s.name, dir);
    }
    void this.host.stopped.then(() => this.close());
    this.log.info(`watching ${this.dirs.size} director${this.dirs.size === 1 ? "y" : "ies"} of ${this.host.manager.status().length} module(s) for changes (saves by rename included)`);
  }

  close(): void {
    this.closed = true;
    for (const w of this.dirs.values()) w.watcher.close();
    this.dirs.clear();
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }

  /** Watch `dir` and the directories under it (not hidden ones, not target/ or node_modules/). */
  private watchTree(module: string, dir: string): void {
    if (this.closed || this.dirs.has(dir)) return;
    if (this.dirs.size >= MAX_WATCHED_DIRS) {
      if (!this.warnedLimit) this.log.warn(`not watching ${dir} and what is under it: already watching ${MAX_WATCHED_DIRS} directories (MAX_WATCHED_DIRS); changes there are not seen`);
      this.warnedLimit = true;
      return;
    }
    let watcher: FSWatcher;
    try {
      watcher = watch(dir, (_event, file) => this.changed(module, dir, file ? String(file) : undefined));
    } catch (err) {
      this.log.warn(`cannot watch ${dir} for changes: ${(err as Error).message}`);
      return;
    }
    // The directory was removed or renamed: forget it (its parent's watch sees that as a change).
    watcher.on("error", () => this.unwatch(dir));
    this.dirs.set(dir, { module, watcher });
    // Only subdirectories matter, told by the entry's type (no stat, symlinks not followed),
    // and at most MAX_SCANNED_ENTRIES of a directory: a module directory of 100,000 files cost
    // a stall of 1.1-1.3 s here (a stat each, load 12).
    let handle: Dir;
    try {
      handle = opendirSync(dir, { bufferSize: 256 });
    } catch {
      return;
    }
    const subdirs: string[] = [];
    try {
      for (let i = 0, d = handle.readSync(); d !== null; d = handle.readSync()) {
        if (++i > MAX_SCANNED_ENTRIES) {
          this.log.warn(`not watching what is under ${dir} past its first ${MAX_SCANNED_ENTRIES} entries (MAX_SCANNED_ENTRIES): keep the module directory small`);
          break;
        }
        if (d.isDirectory() && !ignored(d.name)) subdirs.push(path.join(dir, d.name));
      }
    } catch {
      // Removed while read: its parent's watch sees that.
    } finally {
      handle.closeSync();
    }
    for (const sub of subdirs) this.watchTree(module, sub);
  }

  private unwatch(dir: string): void {
    for (const [d, w] of this.dirs) {
      if (d === dir || d.startsWith(dir + path.sep)) {
        w.watcher.close();
        this.dirs.delete(d);
      }
    }
  }

  private changed(module: string, dir: string, file: string | undefined): void {
    if (this.closed) return;
    if (file !== undefined) {
      if (ignored(file)) return;
      const full = path.join(dir, file);
      // A new directory is watched; a removed one forgotten.
      if (isDirectory(full)) this.watchTree(module, full);
      else if (this.dirs.has(full) && !existsSync(full)) this.unwatch(full);
    }
    clearTimeout(this.timers.get(module));
    this.timers.set(module, setTimeout(() => {
      this.timers.delete(module);
      void this.reload(module, file === undefined ? dir : path.join(dir, file));
    }, DEBOUNCE_MS));
  }

  private async reload(module: string, what: string, firstSeen = Date.now() - DEBOUNCE_MS): Promise<void> {
    if (this.busy.has(module)) {
      this.busy.set(module, true); // once more when this one is done
      return;
    }
    this.busy.set(module, false);
    try {
      const manifest = this.host.manager.manifestOf(module);
      const rel = manifest ? path.relative(manifest.dir, what) || "." : what;
      this.log.info(`${rel} changed: reloading ${module}`);
      if (manifest && existsSync(path.join(manifest.dir, "Cargo.toml"))) {
        const built = await cargoBuild(manifest.dir);
        if (!built.ok) {
          this.stats.failures++;
          this.log.error(`reload of ${module} refused: cargo build failed; the running version keeps running\n${built.output}`);
          return;
        }
        this.log.info(`rebuilt ${module} in ${built.ms} ms`);
      }
      await this.host.manager.reload(module);
      this.stats.reloads++;
      this.log.info(`reloaded ${module} (${Date.now() - firstSeen} ms after the change was seen)`);
    } catch (err) {
      this.stats.failures++;
      this.log.error(`reload of ${module} failed: ${(err as Error).message}`);
    } finally {
      const again = this.busy.get(module);
      this.busy.delete(module);
      if (again && !this.closed) void this.reload(module, "(changes during the reload)");
    }
  }
}

function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const DEBIAN_REGISTRY = "/usr/share/cargo/registry";

/**
 * The environment cargo builds with, chosen as scripts/build-rust.sh does: Debian's packaged
 * crates offline (CARGO_HOME=.ci/cargo-debian) when MODHOST_CARGO_OFFLINE=1, or when it is
 * unset, that configuration exists and Debian's crates are installed; cargo as configured
 * otherwise.
 */
function cargoEnv(): NodeJS.ProcessEnv {
  const mode = process.env.MODHOST_CARGO_OFFLINE;
  const debianHome = path.join(ROOT, ".ci", "cargo-debian");
  const debian = existsSync(path.join(debianHome, "config.toml")) && existsSync(DEBIAN_REGISTRY);
  const offline = mode === "1" || (mode === undefined && debian && !hasDownloadedCrates());
  return offline && existsSync(path.join(debianHome, "config.toml")) ? { ...process.env, CARGO_HOME: debianHome } : process.env;
}

function hasDownloadedCrates(): boolean {
  const home = process.env.CARGO_HOME ?? path.join(process.env.HOME ?? "/root", ".cargo");
  const cache = path.join(home, "registry", "cache");
  try {
    return readdirSync(cache).some((d) => readdirSync(path.join(cache, d)).some((f) => f.endsWith(".crate")));
  } catch {
    return false;
  }
}

/** cargo build --release of the crate in `dir` (entry_point is its release binary). */
function cargoBuild(dir: string): Promise<{ ok: boolean; ms: number; output: string }> {
  const started = Date.now();
  return new Promise((resolve) => {
    let output = "";
    const child = spawn("cargo", ["build", "--release", "--quiet", "--manifest-path", path.join(dir, "Cargo.toml")], { env: cargoEnv(), stdio: ["ignore", "pipe", "pipe"] });
    const keep = (d: Buffer) => {
      output = (output + d.toString()).slice(-CARGO_OUTPUT_CHARS);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    const timer = setTimeout(() => {
      output += `\n(cargo build stopped after ${CARGO_TIMEOUT_MS} ms)`;
      child.kill("SIGKILL");
    }, CARGO_TIMEOUT_MS);
    child.on("error", (err) => {
      clearTimeout(timer);
      resolve({ ok: false, ms: Date.now() - started, output: `cannot run cargo: ${err.message} (install Rust with rustup to rebuild native modules)` });
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ ok: code === 0, ms: Date.now() - started, output: output.trim() });
    });
  });
}

/** Printed when `modhost dev` starts: what this mode gives away, so nobody mistakes it for a deployment. */
export function devBanner(opts: { inspect?: string }): string {
  const lines = [
    "================================================================================",
    " modhost dev: DEVELOPMENT ONLY, never for production",
    "  - every capability a module requests is granted; unsigned modules run",
    "  - the embedded regtest chain; modules reload when their files change",
    ...(opts.inspect ? [`  - the inspector is on (${opts.inspect}, loopback only): whoever connects can run code in the module`] : []),
    "================================================================================",
  ];
  return lines.join("\n");
}
