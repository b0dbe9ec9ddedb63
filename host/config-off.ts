// Reads modhost.toml in a worker thread (host/config-worker.ts) for a reload of the running
// host: the file is the operator's, up to MAX_TOML_BYTES, and its worst shapes took seconds of
// parsing and checking, which at a reload ran on the host's loop. The worker has its own heap
// (CONFIG_HEAP_MB) and a deadline (CONFIG_READ_TIMEOUT_MS); a refusal is the same ConfigError,
// with file, line and column, that the host's start gives.

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
