// Reads modhost.toml in a worker thread (host/config-worker.ts) for a reload of the running
// host, and at a start when it is larger than CONFIG_ON_LOOP_BYTES: the file is the operator's, up to MAX_TOML_BYTES, and its worst shapes took seconds of
// parsing and checking, which at a reload ran on the host's loop. The worker has its own heap
// (CONFIG_HEAP_MB) and a deadline (CONFIG_READ_TIMEOUT_MS); a refusal is the same ConfigError,
// with file, line and column, that the host's start gives.

import { stat } from "node:fs/promises";
import { Worker } from "node:worker_threads";
import type { HostConfig } from "./config.ts";
import type { ConfigReadResult } from "./config-worker.ts";
import { ConfigError } from "./errors.ts";

/** The worker's old-generation heap (MB): a 1 MiB file of small tables parses into ~100 MB. */
const CONFIG_HEAP_MB = 256;
/** The whole read, parse and check. */
const CONFIG_READ_TIMEOUT_MS = 120_000;

/** Defined (true) by scripts/build-dist.mjs in dist/, which ships the worker as dist/config-read.mjs. */
declare const __MODHOST_DIST__: boolean | undefined;

function workerSpec(): { url: URL; execArgv: string[] | undefined } {
  if (typeof __MODHOST_DIST__ !== "undefined" && __MODHOST_DIST__) return { url: new URL("./config-read.mjs", import.meta.url), execArgv: undefined };
  // From the sources: the worker compiles them with tsx, as the host does.
  return { url: new URL("./config-worker.ts", import.meta.url), execArgv: [`--import=${import.meta.resolve("tsx")}`] };
}

/**
 * At a start (`modhost run`, `check`, `dev --config`), a file of at most this many bytes is read
 * on the loop, nothing else running yet: a worker costs its start and a second load of the
 * configuration code (`modhost check` of the shipped modhost.toml took 2.5-3.0 s read on the
 * loop, 3.3-5.4 s through the worker, load 11). The worst such file found, 32 KiB of unknown keys,
 * took 228 ms cold and 51-79 ms after (load 13); a module.toml (MAX_MANIFEST_BYTES, the same
 * size) is read on the loop too.
 * Larger files are read as a reload reads them (loadConfigOffLoop): a modhost.toml of
 * MAX_TOML_BYTES of unknown keys held the start's loop 3.6 s (load 14).
 */
export const CONFIG_ON_LOOP_BYTES = 32 * 1024;

/** The configuration in `file`, for a command that starts: see CONFIG_ON_LOOP_BYTES. */
export async function loadConfigAtStart(file: string): Promise<HostConfig> {
  const size = await stat(file).then((s) => s.size, () => 0);
  if (size > CONFIG_ON_LOOP_BYTES) return loadConfigOffLoop(file);
  const { loadConfig } = await import("./config.ts");
  return loadConfig(file);
}

/** loadConfig(file), in a worker thread. */
export function loadConfigOffLoop(file: string): Promise<HostConfig> {
  const { url, execArgv } = workerSpec();
  return new Promise((resolve, reject) => {
    let done = false;
    const worker = new Worker(url, {
      workerData: { modhostConfigFile: file },
      execArgv,
      resourceLimits: { maxOldGenerationSizeMb: CONFIG_HEAP_MB, maxYoungGenerationSizeMb: 16, stackSizeMb: 4 },
      stdout: false,
      stderr: false,
    });
    const end = (outcome: () => void) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      void worker.terminate();
      outcome();
    };
    const fail = (message: string) => end(() => reject(new ConfigError([{ file, message }])));
    const timer = setTimeout(() => fail(`reading the configuration did not end within ${CONFIG_READ_TIMEOUT_MS} ms (CONFIG_READ_TIMEOUT_MS)`), CONFIG_READ_TIMEOUT_MS);
    worker.once("message", (m: ConfigReadResult) => {
      if (m.ok) end(() => resolve(m.config));
      else if ("problems" in m) end(() => reject(new ConfigError(m.problems)));
      else fail(`reading the configuration failed: ${m.message}`);
    });
    worker.once("error", (err: Error) => fail((err as { code?: string }).code === "ERR_WORKER_OUT_OF_MEMORY" ? `reading the configuration took more than the ${CONFIG_HEAP_MB} MB of heap it may use (CONFIG_HEAP_MB)` : `reading the configuration failed: ${err.message}`));
    worker.once("exit", (code) => fail(`reading the configuration ended (exit ${code}) without an answer`));
  });
}
