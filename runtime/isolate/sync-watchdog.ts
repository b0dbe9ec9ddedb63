// The CPU watchdog of synchronous crossings (worker.ts, sync crossings on): module code runs on
// the isolate host's main thread (isolated-vm applySync), so nothing on that thread can stop
// it. This watchdog is a thread of its own (a Node worker thread) that reads a heartbeat in a
// SharedArrayBuffer, which the main thread sets before each crossing and clears after it, the
// isolate's microtask checkpoint included (isolated-vm runs it inside applySync).
//
// Every sampleMs the watchdog looks at the heartbeat. A crossing it sees for the first time is
// noted with the main thread's CPU time then (/proc/<pid>/task/<pid>/stat, 10 ms ticks; wall
// time where /proc cannot be read); a crossing still running at a later look with more than
// limitMs of CPU time since is an overrun: the watchdog writes the module's last words (an
// error log line and a goodbye naming cpu_time_ms, encoded beforehand by the main thread) to
// the channel if no frame of the main thread's is half written there, writes the same reason
// to stderr, and ends the process with SIGKILL. The isolate host holds one module only, so this
// is what stopping the isolate does in the asynchronous form. Bound: a stretch is ended after
// between limitMs and limitMs + 2 x sampleMs + 10 ms of the main thread's CPU time.
//
// It also watches the process's size during a crossing, which the main thread cannot do then
// (worker.ts checks it between its own tasks, against ISOLATE_HOST_RSS_BASE_MB + 2 x
// memory_mb): module code that allocates small objects without pause goes on past isolated-vm's
// heap limit, and a crossing of cpu_time_ms (1000) grew an isolate host with a memory_mb of 64
// to 478 MB, ended naming cpu_time_ms, and with a cpu_time_ms of 4000 to 539 MB, ended by the
// kernel at memory_total_mb. Past rssCeiling at any look during a crossing, the watchdog ends
// the process as for an overrun, with last words naming memory_mb. Bound: the ceiling plus what
// the module allocates in one sampleMs.
//
// Costs: one Atomics.add and two Atomics.store per crossing on the main thread, no syscall;
// the watchdog thread wakes every sampleMs (reads /proc only during a crossing).

import type { MessagePort as NodeMessagePort } from "node:worker_threads";

const STATE = 0; // 0 idle, 1 in a crossing (channel clean), 2 in a crossing (a frame half written)
const SEQ = 1;
const STOP = 2;

/** What the watchdog needs once the module is known (a pooled isolate host starts it before). */
interface WatchdogArming {
  limitMs: number;
  sampleMs: number;
  /** Frames (each with its length header) the watchdog writes to the channel on an overrun. */
  lastWords: Uint8Array;
  /** The line written to stderr on an overrun. */
  line: string;
  /** The process's size (bytes) past which a crossing is ended as over memory_mb. */
  rssCeiling: number;
  /** As lastWords and line, for a crossing ended past rssCeiling. */
  memoryLastWords: Uint8Array;
  memoryLine: string;
}

export interface SyncWatchdog {
  /** Resolves once the watchdog thread runs: no module code may run before. */
  readonly ready: Promise<void>;
  /** Arm it for the module (limits and last words); it watches nothing before. */
  arm(arming: WatchdogArming): void;
  /** Around every synchronous crossing: `halfWritten` when the channel has a frame partly written. */
  enter(halfWritten: boolean): void;
  leave(): void;
  /** The watchdog thread ends at its next look. */
  stop(): void;
}

// The watchdog thread's code (CommonJS, evaluated by the Worker): no import of this project's,
// nothing that waits on the main thread.
const WATCHDOG_SOURCE = `
"use strict";
const { workerData, receiveMessageOnPort } = require("node:worker_threads");
const fs = require("node:fs");
const { hb, port, pid, fd } = workerData;
const nap = new Int32Array(new SharedArrayBuffer(4));
const stat = "/proc/" + pid + "/task/" + pid + "/stat";
const cpuMs = () => {
  try {
    const s = fs.readFileSync(stat, "latin1");
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) * 10;
  } catch {
    return NaN;
  }
};
port.postMessage("up");
let arming = null;
let seen = -1;
let cpuAt = 0;
let wallAt = 0;
for (;;) {
  Atomics.wait(nap, 0, 0, arming ? arming.sampleMs : 50);
  if (Atomics.load(hb, ${STOP}) === 1) break;
  for (let m = receiveMessageOnPort(port); m; m = receiveMessageOnPort(port)) arming = m.message;
  if (!arming) continue;
  const state = Atomics.load(hb, ${STATE});
  if (state === 0) {
    seen = -1;
    continue;
  }
  if (process.memoryUsage.rss() > arming.rssCeiling) {
    end(state, arming.memoryLastWords, arming.memoryLine);
    break;
  }
  const seq = Atomics.load(hb, ${SEQ});
  if (seq !== seen) {
    seen = seq;
    cpuAt = cpuMs();
    wallAt = Date.now();
    continue;
  }
  let used = cpuMs() - cpuAt;
  if (Number.isNaN(used)) used = Date.now() - wallAt;
  if (used <= arming.limitMs) continue;
  end(state, arming.lastWords, arming.line);
  break;
}
function end(state, lastWords, line) {
  if (state === 1) {
    try { fs.writeSync(fd, lastWords); } catch {}
  }
  try { fs.writeSync(2, line + "\\n"); } catch {}
  process.kill(pid, "SIGKILL");
}
`;

/** Start the watchdog thread (unreferenced: it never keeps the process alive). `fd`: the channel's. */
export function startSyncWatchdog(fd: number): SyncWatchdog {
  const { Worker, MessageChannel } = process.getBuiltinModule("node:worker_threads");
  const hb = new Int32Array(new SharedArrayBuffer(4 * 4));
  const { port1, port2 } = new MessageChannel();
  const worker = new Worker(WATCHDOG_SOURCE, {
    eval: true,
    workerData: { hb, port: port2, pid: process.pid, fd },
    transferList: [port2 as unknown as NodeMessagePort],
    // It holds a few numbers; Node's own start-up needs more than 4 MB of old space (it ran out).
    resourceLimits: { maxOldGenerationSizeMb: 32, maxYoungGenerationSizeMb: 4, stackSizeMb: 1 },
    stdout: true,
    stderr: false,
  });
  worker.unref();
  const ready = new Promise<void>((resolve) => port1.once("message", () => {
    port1.unref();
    resolve();
  }));
  // A watchdog that failed to start or died leaves crossings unwatched: end the process (the
  // host restarts the module per its policy) rather than run module code without a bound.
  worker.on("error", (err) => {
    process.stderr.write(`isolate host: the CPU watchdog thread failed (${(err as Error)?.message ?? String(err)}); ending\n`);
    process.kill(process.pid, "SIGKILL");
  });
  return {
    ready,
    arm(arming) {
      port1.postMessage(arming);
    },
    enter(halfWritten) {
      Atomics.add(hb, SEQ, 1);
      Atomics.store(hb, STATE, halfWritten ? 2 : 1);
    },
    leave() {
      Atomics.store(hb, STATE, 0);
    },
    stop() {
      Atomics.store(hb, STOP, 1);
    },
  };
}
