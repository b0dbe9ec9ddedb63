// Runs one registry look (host/registry/look-worker.ts) in a worker thread: the index's download,
// signature check, parse and validation never run on the host's loop. The worker's heap is
// bounded (LOOK_HEAP_MB: an 8 MiB index parses into ~100 MB of objects) and the look has a
// deadline (LOOK_TIMEOUT_MS, past the client's own 60 s per file); either ends the worker, and the
// look fails naming it. RegistryDiscovery runs one look at a time.

import { Worker } from "node:worker_threads";
import type { LookInput, LookResult } from "./look-worker.ts";

/** The worker's old-generation heap (MB). */
const LOOK_HEAP_MB = 256;
/** The whole look: both downloads (60 s each at most) and the checks. */
const LOOK_TIMEOUT_MS = 150_000;

/** Defined (true) by scripts/build-dist.mjs in dist/, which ships the worker as dist/registry-look.mjs. */
declare const __MODHOST_DIST__: boolean | undefined;

function workerSpec(): { url: URL; execArgv: string[] | undefined } {
  if (typeof __MODHOST_DIST__ !== "undefined" && __MODHOST_DIST__) {
    return { url: new URL("./registry-look.mjs", import.meta.url), execArgv: undefined };
  }
  // From the sources: the worker compiles them with tsx, as the host does (bin/modhost.js
  // registers it in-process, which a worker does not inherit).
  const tsx = import.meta.resolve("tsx");
  return { url: new URL("./look-worker.ts", import.meta.url), execArgv: [`--import=${tsx}`] };
}

export function lookInWorker(input: LookInput, opts: { timeoutMs?: number; heapMb?: number } = {}): Promise<LookResult> {
  const timeoutMs = opts.timeoutMs ?? LOOK_TIMEOUT_MS;
  const heapMb = opts.heapMb ?? LOOK_HEAP_MB;
  const { url, execArgv } = workerSpec();
  return new Promise((resolve) => {
    let done = false;
    const worker = new Worker(url, {
      workerData: { modhostRegistryLook: input },
      execArgv,
      resourceLimits: { maxOldGenerationSizeMb: heapMb, maxYoungGenerationSizeMb: 16, stackSizeMb: 4 },
      stdout: false,
      stderr: false,
    });
    const end = (result: LookResult) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      void worker.terminate();
      resolve(result);
    };
    const timer = setTimeout(() => {
      end({ ok: false, message: `the look at the registry did not end within ${timeoutMs} ms (LOOK_TIMEOUT_MS); it was stopped` });
    }, timeoutMs);
    worker.once("message", (m: LookResult) => end(m));
    worker.once("error", (err: Error) => {
      const heap = (err as { code?: string }).code === "ERR_WORKER_OUT_OF_MEMORY";
      end({ ok: false, message: heap ? `reading the registry index took more than the ${heapMb} MB of heap a look may use (LOOK_HEAP_MB); the index is broken or hostile` : `the look at the registry failed: ${err.message}` });
    });
    worker.once("exit", (code) => end({ ok: false, message: `the look at the registry ended (exit ${code}) without an answer` }));
  });
}
