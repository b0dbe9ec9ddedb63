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
  if (state === 1) {
    try { fs.writeSync(fd, arming.lastWords); } catch {}
  }
  try { fs.writeSync(2, arming.line + "\\n"); } catch {}
  process.kill(pid, "SIGKILL");
  break;
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
