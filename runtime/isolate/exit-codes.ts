// The isolate host's exit codes (worker.ts exits with them), and what each means to the host.
//
// The isolate host says why it stops in a goodbye on its channel. That goodbye can be lost: it
// waits behind what the module queued before it (thousands of calls the host takes at
// requests_per_second), and the process exits at its fallback deadline. The crash reason then
// still names the limit, from the code.

/**
 * The isolate host ends itself, naming memory_mb, once the process holds more than this + 2 x
 * memory_mb (MB) while its isolate has not yielded (worker.ts: code that allocates small
 * objects without pause goes on past isolated-vm's heap limit), or for IDLE_OVER_MS after a
 * collection of its own garbage while the isolate is idle (memory the isolate holds outside its
 * heap: Intl objects). Below the kernel's floor for an isolate host's cgroup (runtime.ts
 * ISOLATE_HOST_MIN: 192 + 2 x memory_mb).
 */
export const ISOLATE_HOST_RSS_BASE_MB = 160;
/** How long an idle isolate host may stay over ISOLATE_HOST_RSS_BASE_MB + 2 x memory_mb after collecting its garbage (worker.ts). */
export const IDLE_OVER_MS = 500;

export const EXIT = { ok: 0, startFailed: 70, memory: 71, cpu: 72, disconnected: 73, internal: 74 } as const;

/** What an exit code of the isolate host means, for a crash reason with no goodbye heard. */
export const EXIT_MEANINGS: Readonly<Record<number, string>> = {
  [EXIT.startFailed]: "the isolate host's code for a failed start",
  [EXIT.memory]: "the isolate host's code for a module stopped at its memory limit, memory_mb",
  [EXIT.cpu]: "the isolate host's code for a module stopped by its CPU watchdog, cpu_time_ms",
  [EXIT.disconnected]: "the isolate host's code for its channel to the host closing",
  [EXIT.internal]: "the isolate host's code for a failure of its own",
};
