// Fuzz target: valid but extreme requests to every method a module can call, through the real
// session handler (./grammar-host.ts), each measured for what it costs the host's event loop.
//
// An input is a descriptor of 8 bytes: which method (or message kind), how its parameters are
// picked (./grammar.ts: min, max, past the limit, mixed), what sequence it is sent in, and a
// seed; the driver's byte mutations therefore pick other descriptors, and a failing input's
// hex replays it. Sequences: one request; the same request back to back up to
// max_requests_in_flight (64, all in flight at once); state building (200 requests of the
// method with different parameters, then every method of its family).
//
// Measured for each: the longest turn of the host's event loop from the first frame written to
// the last answer (a setImmediate ticker: every gap between two turns is time the loop did not
// turn, less what the module's end spent decoding), kept per method as its worst. Checked for
// each: every request answered exactly once, by its id; a request past a limit refused, naming
// the limit; nothing failed inside the host; a probe answered after log, ack and other
// messages that get no answer. Heap growth is the driver's (after full collections).

import * as v from "valibot";
import { METHODS, type IndexedMethod } from "../capabilities/families.ts";
import { encodeBody, EncodeError } from "../protocol/codec.ts";
import { Rng, type FuzzTarget } from "./driver.ts";
import { ParamsGenerator, MODES, type Mode } from "./grammar.ts";
import { grammarHost, threadCpuMs, type GrammarHost, type ModuleEnd } from "./grammar-host.ts";
import { frame, MODULE } from "./session-harness.ts";

const METHOD_LIST = [...METHODS.values()];
/** A body of its own: encodeBody's result may share msgpackr's buffer with the next encoding, and requests are encoded before they are sent. */
const encode = (value: unknown): Buffer => Buffer.from(encodeBody(value));
/** Module messages that get no answer: each is followed by a probe request. */
const MESSAGES = ["log", "ack", "invocation_result", "ready"] as const;
const ITEMS = [...METHOD_LIST.map((m) => m.name), ...MESSAGES.map((m) => `msg:${m}`)];
type Sequence = "one" | "burst" | "state";
const IN_FLIGHT = 64;
const STATE_REQUESTS = 200;
const BURST_BYTES = 96 * 1024 * 1024;
const EXCHANGE_MS = 150_000;
/** A request whose loop time is past this is replayed to confirm it (the least of 3 is reported). */
const CONFIRM_MS = 20;

/** An issue's place in the params as the generator names it: "params.a.b", "params.list[]". */
function issuePath(issue: v.BaseIssue<unknown>): string {
  return `params${(issue.path ?? []).map((p) => (typeof p.key === "number" ? "[]" : `.${String(p.key)}`)).join("")}`;
}

/** The longest turn of the loop seen: wall time, and CPU time of the loop's thread. */
interface Turn {
  wall: number;
  cpu: number;
}
const longest = (a: Turn, b: Turn): Turn => ({ wall: Math.max(a.wall, b.wall), cpu: Math.max(a.cpu, b.cpu) });

interface Descriptor {
  item: number;
  mode: Mode;
  sequence: Sequence;
  seed: number;
}

export function descriptor(input: Uint8Array): Descriptor {
  const b = (i: number) => input[i] ?? 0;
  const kind = b(3) % 16;
  return {
    item: ((b(0) << 8) | b(1)) % ITEMS.length,
    mode: MODES[b(2) % MODES.length]!,
    sequence: kind < 13 ? "one" : kind < 15 ? "burst" : "state",
    seed: ((b(4) << 24) | (b(5) << 16) | (b(6) << 8) | b(7)) >>> 0,
  };
}

export function encodeDescriptor(item: number, mode: Mode, sequence: Sequence, seed: number): Uint8Array {
  const kind = sequence === "one" ? 0 : sequence === "burst" ? 13 : 15;
  return new Uint8Array([item >> 8, item & 0xff, MODES.indexOf(mode), kind, seed >>> 24, (seed >>> 16) & 0xff, (seed >>> 8) & 0xff, seed & 0xff]);
}

export interface MethodStat {
  label: string;
  /** Inputs (one request, a burst, a state sequence) and the requests they sent. */
  inputs: number;
  requests: number;
  /** The longest turn of the loop: CPU time of its thread (the figure bounded and reported) and wall time. */
  worstCpuMs: number;
  worstWallMs: number;
  /** Sum over inputs of each one's longest turn (CPU), for the mean. */
  totalCpuMs: number;
  /** The input (hex) of the worst (CPU). */
  worst: string;
  /** The least of three replays of the worst (CPU), when it was past CONFIRM_MS. */
  confirmedMs?: number;
}

export interface GrammarTarget extends FuzzTarget {
  /** Per label (method, "method x64", "method (state)", "msg:log"): requests sent and the worst loop time. */
  stats(): MethodStat[];
  /** Requests (and messages) sent so far. */
  sent(): number;
}

interface Outgoing {
  body: Uint8Array;
  id?: number;
  /** The answer must be an error naming this limit. */
  limit?: string;
  /** Schema-valid: the answer must not be a failure inside the host. */
  valid: boolean;
}

export async function grammarTarget(opts: { host?: GrammarHost; burstBytes?: number } = {}): Promise<GrammarTarget> {
  const burstBytes = opts.burstBytes ?? BURST_BYTES;
  const host = opts.host ?? (await grammarHost());
  const stats = new Map<string, MethodStat>();
  let nextId = 1;
  let sent = 0;
  let end: ModuleEnd | undefined;

  async function open(): Promise<ModuleEnd> {
    const e = host.connect();
    e.peer.write(frame(encode({ t: "hello", protocol: [1, 2], module: MODULE, version: "1.0.0", sdk: "grammar-fuzz" })));
    await e.session.handshake;
    e.peer.write(frame(encode({ t: "ready" })));
    return e;
  }

  function request(m: IndexedMethod, gen: ParamsGenerator, mode: Mode): { out: Outgoing; params: Record<string, unknown> } {
    for (let attempt = 0; ; attempt++) {
      const g = gen.params(m.params, attempt === 0 ? mode : "mixed");
      const parsed = m.accepts?.(g.params) === true ? undefined : v.safeParse(m.params, g.params);
      const valid = parsed === undefined || parsed.success;
      // The answer must name the limit crossed when that is the only problem the schema finds
      // (a URL the schema's code finds too long as well is refused for that first).
      const only = g.crossed !== undefined && parsed !== undefined && !parsed.success && parsed.issues.every((i) => issuePath(i).startsWith(g.crossed!.path));
      const id = nextId++;
      try {
        const body = encode({ t: "request", id, method: m.name, params: g.params });
        return { out: { body, id, valid, ...(only ? { limit: g.crossed!.limit } : {}) }, params: g.params };
      } catch (err) {
        // Over what one body may hold (the generator's budget is an estimate): pick again.
        if (!(err instanceof EncodeError) || attempt > 8) throw err;
      }
    }
  }

  function message(kind: (typeof MESSAGES)[number], gen: ParamsGenerator, mode: Mode, r: Rng): Uint8Array {
    switch (kind) {
      case "log": {
        const g = gen.params(v.object({ message: v.string(), fields: v.optional(v.record(v.string(), v.unknown())) }), mode);
        return encode({ t: "log", level: r.pick(["debug", "info", "warn", "error"]), message: g.params.message ?? "", ...(g.params.fields ? { fields: g.params.fields } : {}) });
      }
      case "ack": return encode({ t: "ack", seq: mode === "max" ? Number.MAX_SAFE_INTEGER : mode === "min" ? 0 : end?.lastSeq ?? 0 });
      case "invocation_result": {
        const g = gen.params(v.object({ id: v.number(), result: v.unknown() }), mode);
        return encode({ t: "invocation_result", id: g.params.id, result: g.params.result });
      }
      case "ready": return encode({ t: "ready" });
    }
  }

  /**
   * Send `out` at once and wait for every answer; returns the longest turn of the loop
   * meanwhile, in wall time and in CPU time of the loop's thread (which a busy machine does
   * not stretch: the figure the bounds and the report use).
   */
  async function exchange(e: ModuleEnd, out: Outgoing[], probe: boolean): Promise<Turn> {
    const waiting = new Map<number, Outgoing>();
    const problems: string[] = [];
    for (const o of out) if (o.id !== undefined) waiting.set(o.id, o);
    let probeId: number | undefined;
    if (probe) {
      probeId = nextId++;
      waiting.set(probeId, { body: encode({ t: "request", id: probeId, method: "get_block_height", params: {} }), id: probeId, valid: true });
    }
    const answered = new Set<number>();
    e.onResponse = (msg) => {
      const id = msg.id as number;
      const o = waiting.get(id);
      if (!o) {
        // A message that gets no answer when it is fine is refused with an answer to no request (id 0).
        if (id === 0 && probe && msg.error) return;
        problems.push(answered.has(id) ? `request ${id} answered twice` : `an answer for no request in flight (id ${id})`);
        return;
      }
      waiting.delete(id);
      answered.add(id);
      const error = msg.error as { code?: string; message?: string } | undefined;
      if (o.limit !== undefined && (!error || !String(error.message).includes(o.limit))) {
        problems.push(`a request past the limit ${o.limit} got ${error ? `"${String(error.message).slice(0, 300)}"` : "an answer"}, not a refusal naming the limit`);
      }
      if (o.valid && error?.code === "backend_error" && /failed inside the host/.test(String(error.message))) problems.push(`a valid request failed inside the host: ${error.message}`);
    };
    // Generous: a hook or module call can wait for its deadline (a module's own block_template
    // hook made each of its 64 templates wait the hook's 1 s, 64 s in all, until the host read
    // its answers past its waiting requests: test/answers-first.test.ts).
    const deadline = performance.now() + EXCHANGE_MS;
    const bodies = out.map((o) => o.body);
    if (probeId !== undefined) bodies.push(waiting.get(probeId)!.body);
    // As a socket delivers them: chunks of at most 64 KiB, one per turn of the loop.
    const chunks = socketChunks(bodies);
    e.takeOwn();
    let last = performance.now();
    let lastCpu = threadCpuMs();
    const worst = { wall: 0, cpu: 0 };
    sent += out.length;
    for (;;) {
      // Cutting the chunk is the module's work, not the host's: not counted.
      const t0 = performance.now();
      const c0 = threadCpuMs();
      const chunk = chunks.next();
      const ownWall = performance.now() - t0;
      const ownCpu = threadCpuMs() - c0;
      if (!chunk.done) {
        e.midFrame = true;
        e.peer.write(chunk.value.bytes);
        e.midFrame = !chunk.value.whole;
        e.flush(); // what the module's end held meanwhile, once the frame is whole
      } else if (waiting.size === 0 || e.closed) break;
      await new Promise((r) => setImmediate(r));
      const now = performance.now();
      const cpu = threadCpuMs();
      const own = e.takeOwn();
      worst.wall = Math.max(worst.wall, now - last - ownWall - own.wall);
      worst.cpu = Math.max(worst.cpu, cpu - lastCpu - ownCpu - own.cpu);
      last = now;
      lastCpu = cpu;
      if (now > deadline) throw new Error(`${waiting.size} of ${out.length} requests unanswered after ${EXCHANGE_MS / 1000} s`);
    }
    e.onResponse = undefined;
    if (e.closed) throw new Error(`the host closed the session: ${e.session.closeError?.message ?? "no reason given"}`);
    if (e.junk > 0) throw new Error(`the host sent ${e.junk} frames that do not decode`);
    if (host.errors.length > 0) throw new Error(`failed inside the host: ${host.errors[0]!.message.slice(0, 2000)}`);
    if (problems.length > 0) throw new Error(problems.slice(0, 3).join("; "));
    // Events delivered so far are handled: the window moves on (not measured).
    e.flush();
    if (e.lastSeq > 0) e.peer.write(frame(encode({ t: "ack", seq: e.lastSeq })));
    return worst;
  }

  function record(label: string, turn: Turn, input: Uint8Array, requests: number): void {
    let s = stats.get(label);
    if (!s) stats.set(label, (s = { label, inputs: 0, requests: 0, worstCpuMs: 0, worstWallMs: 0, totalCpuMs: 0, worst: "" }));
    s.inputs++;
    s.requests += requests;
    s.totalCpuMs += turn.cpu;
    s.worstWallMs = Math.max(s.worstWallMs, turn.wall);
    if (turn.cpu > s.worstCpuMs) {
      s.worstCpuMs = turn.cpu;
      s.worst = Buffer.from(input).toString("hex");
    }
  }

  /** Run one descriptor; returns its label and longest turn. */
  async function play(input: Uint8Array): Promise<{ label: string; turn: Turn; requests: number }> {
    const d = descriptor(input);
    end ??= await open();
    const e = end;
    const gen = new ParamsGenerator(new Rng(d.seed || 1));
    const name = ITEMS[d.item]!;
    if (name.startsWith("msg:")) {
      const body = message(name.slice(4) as (typeof MESSAGES)[number], gen, d.mode, new Rng(d.seed || 1));
      return { label: name, turn: await exchange(e, [{ body, valid: true }], true), requests: 1 };
    }
    const m = METHODS.get(name)!;
    switch (d.sequence) {
      case "one":
        return { label: name, turn: await exchange(e, [request(m, gen, d.mode).out], false), requests: 1 };
      case "burst": {
        const { out: one, params } = request(m, gen, d.mode);
        // Up to max_requests_in_flight, and by default up to 3x max_request_bytes_in_flight (32 MiB) of requests: past it they wait.
        const count = Math.max(2, Math.min(IN_FLIGHT, Math.floor(burstBytes / one.body.length)));
        const out = [one, ...Array.from({ length: count - 1 }, () => {
          const id = nextId++;
          return { ...one, id, body: encode({ t: "request", id, method: m.name, params }) };
        })];
        return { label: `${name} x${IN_FLIGHT}`, turn: await exchange(e, out, false), requests: count };
      }
      case "state": {
        let worst: Turn = { wall: 0, cpu: 0 };
        for (let done = 0; done < STATE_REQUESTS; done += IN_FLIGHT) {
          const n = Math.min(IN_FLIGHT, STATE_REQUESTS - done);
          worst = longest(worst, await exchange(e, Array.from({ length: n }, () => request(m, gen, "state").out), false));
        }
        // Then every method of its family, over all that was built.
        const family = METHOD_LIST.filter((x) => x.family === m.family);
        worst = longest(worst, await exchange(e, family.map((x) => request(x, gen, "state").out), false));
        return { label: `${name} (state)`, turn: worst, requests: STATE_REQUESTS + family.length };
      }
    }
  }

  const seeds: Uint8Array[] = [];
  for (let item = 0; item < ITEMS.length; item++) for (const mode of MODES) seeds.push(encodeDescriptor(item, mode, "one", item * 4 + MODES.indexOf(mode) + 1));
  for (let item = 0; item < METHOD_LIST.length; item++) seeds.push(encodeDescriptor(item, "max", "burst", item + 1));

  return {
    name: "protocol-grammar",
    seeds,
    framesOf: (input) => {
      const d = descriptor(input);
      return ITEMS[d.item]!.startsWith("msg:") ? 2 : d.sequence === "one" ? 1 : d.sequence === "burst" ? IN_FLIGHT : STATE_REQUESTS;
    },
    async run(input) {
      try {
        const r = await play(input);
        record(r.label, r.turn, input, r.requests);
      } catch (err) {
        end?.close();
        end = undefined;
        throw err;
      }
    },
    stats: () => [...stats.values()].sort((a, b) => b.worstCpuMs - a.worstCpuMs),
    sent: () => sent,
    async close() {
      // Confirm what was slow: the least of three replays (a loaded machine or a collection can make one slow by chance).
      for (const s of stats.values()) {
        if (s.worstCpuMs <= CONFIRM_MS) continue;
        let least = Infinity;
        for (let i = 0; i < 3; i++) least = Math.min(least, (await play(Buffer.from(s.worst, "hex"))).turn.cpu);
        s.confirmedMs = least;
      }
      end?.close();
      if (!opts.host) await host.close();
    },
  };
}

const CHUNK_BYTES = 64 * 1024;

/** The frames of `bodies` cut and joined into chunks of at most 64 KiB, as a socket reads them; `whole`: the chunk ends where a frame does. */
function* socketChunks(bodies: Uint8Array[]): globalThis.Generator<{ bytes: Buffer; whole: boolean }> {
  let parts: Buffer[] = [];
  let size = 0;
  for (const body of bodies) {
    const f = frame(body);
    for (let at = 0; at < f.length;) {
      const n = Math.min(CHUNK_BYTES - size, f.length - at);
      parts.push(f.subarray(at, at + n));
      size += n;
      at += n;
      if (size === CHUNK_BYTES) {
        yield { bytes: Buffer.concat(parts), whole: at === f.length };
        parts = [];
        size = 0;
      }
    }
  }
  if (size > 0) yield { bytes: Buffer.concat(parts), whole: true };
}

export function formatStats(stats: MethodStat[], top = stats.length): string {
  const ms = (x: number) => x.toFixed(1).padStart(8);
  return [
    "the longest turn of the host's loop per input: CPU time of the loop's thread (wall time beside it); replayed: the least of 3 replays of the worst",
    `${"label".padEnd(32)} ${"inputs".padStart(7)} ${"requests".padStart(9)} ${"worst ms".padStart(8)} ${"mean ms".padStart(8)} ${"replayed".padStart(8)} ${"wall ms".padStart(8)}  worst input`,
    ...stats.slice(0, top).map((s) => `${s.label.padEnd(32)} ${String(s.inputs).padStart(7)} ${String(s.requests).padStart(9)} ${ms(s.worstCpuMs)} ${ms(s.totalCpuMs / Math.max(1, s.inputs))} ${s.confirmedMs === undefined ? "       -" : ms(s.confirmedMs)} ${ms(s.worstWallMs)}  ${s.worst}`),
  ].join("\n");
}
