// What one stretch of module code may send out of the isolate (runs inside the isolate).
//
// A stretch runs from the isolate host's entry into the isolate (an answer, an event, an
// invocation, start) until the module's code yields (its microtasks done). Each log line and
// each batch of host calls leaves the isolate as a task for the isolate host's thread. Code
// that never yields but logs or calls in each turn (`for (;;) { ctx.log.info("x"); await null; }`)
// queued them faster than that thread could take them: it never got to its CPU watchdog (the
// module ran for good, past cpu_time_ms), and its process grew by ~150 MB a second until the
// kernel killed it at memory_total_mb. Past these bounds a stretch's lines are dropped (counted,
// and said at the next stretch) and its calls refused, before any copy: the code then spins
// in the isolate alone, and the watchdog stops it.

/** Log lines one stretch may send; the rest are dropped and counted. */
const MAX_LOG_LINES_PER_STRETCH = 4096;
/** Characters of log messages and fields (as JSON) one stretch may send. */
const MAX_LOG_CHARS_PER_STRETCH = 4 * 1024 * 1024;
/** Host calls one stretch may make; past it each fails with quota_exceeded. */
const MAX_CALLS_PER_STRETCH = 65_536;
/**
 * Bytes of params (at least their size as encoded) the host calls of one stretch may copy out
 * of the isolate; past it each fails with quota_exceeded, before its copy. Each call's params
 * are held to a frame (and 1 MiB of strings) but the calls of a stretch were not: 16,000
 * unawaited ctx.events.publish calls naming one string of 1 MB (1 MB of the isolate's heap)
 * were copied into the isolate host in one crossing, which grew past 480 MB in ~0.3 s and was
 * ended by the kernel at memory_total_mb (with sync crossings the copies wait for the crossing
 * to end). The first call of a stretch leaves whatever its size (up to a frame).
 */
const MAX_CALL_BYTES_PER_STRETCH = 16 * 1024 * 1024;
/**
 * Host calls the module may have unanswered at once, whatever the stretches. Each costs the
 * isolate host ~2 KB until answered (its copy out, its frame, its answer's copy back in, which
 * waits for the isolate): 60,000 queued calls took that process to ~190-310 MB, and its goodbye
 * waited behind them. Past it a call fails at once, before it leaves the isolate.
 */
export const MAX_CALLS_UNANSWERED = 16_384;

let lines = 0;
let chars = 0;
let calls = 0;
let callBytes = 0;
let dropped = 0;

/** A new stretch begins (the isolate host entered the isolate): the lines dropped in the last one, to be said. */
export function newStretch(): number {
  const n = dropped;
  lines = 0;
  chars = 0;
  calls = 0;
  callBytes = 0;
  dropped = 0;
  return n;
}

/** Whether one more log line may leave in this stretch (false: it is dropped and counted). */
export function takeLogLine(): boolean {
  if (lines >= MAX_LOG_LINES_PER_STRETCH || chars >= MAX_LOG_CHARS_PER_STRETCH) {
    dropped++;
    return false;
  }
  lines++;
  return true;
}

/** Count the characters of a line that leaves. */
export function countLogChars(n: number): void {
  chars += n;
}

/** Whether one more host call may leave in this stretch. */
export function takeCall(): boolean {
  return ++calls <= MAX_CALLS_PER_STRETCH;
}

/** Whether a host call whose params take `bytes` may leave in this stretch (the first always may). */
export function takeCallBytes(bytes: number): boolean {
  if (callBytes > 0 && callBytes + bytes > MAX_CALL_BYTES_PER_STRETCH) return false;
  callBytes += bytes;
  return true;
}

export const droppedLinesText = (n: number): string =>
  `${n} log lines dropped: one stretch of module code (from one entry into the isolate until it yields) may send at most ${MAX_LOG_LINES_PER_STRETCH} lines and ${MAX_LOG_CHARS_PER_STRETCH} characters (MAX_LOG_LINES_PER_STRETCH, MAX_LOG_CHARS_PER_STRETCH)`;

export const tooManyUnansweredText = (): string =>
  `${MAX_CALLS_UNANSWERED} host calls are unanswered, the most an isolate module may have at once (MAX_CALLS_UNANSWERED); await some of them before making more`;

export const tooManyCallsText = (): string =>
  `more than ${MAX_CALLS_PER_STRETCH} host calls in one stretch of module code without yielding (MAX_CALLS_PER_STRETCH); await some of them before making more`;

export const tooManyCallBytesText = (bytes: number): string =>
  `this call's params (${bytes} bytes) would take the host calls of one stretch of module code without yielding past ${MAX_CALL_BYTES_PER_STRETCH} bytes of params (MAX_CALL_BYTES_PER_STRETCH, fixed); await some of them before making more`;
