// Fuzz target: the whole host session. Each input is one frame body, sent (framed) to a real
// HostSession after the handshake, served by the real ApiHub with a real chain, event bus and
// LevelDB store. Checked every `batch` inputs, after the host has caught up:
// - every request is answered exactly once, with its own id, however malformed the rest of it
//   (the count of responses is predicted with the protocol's own decoder and validator);
// - a probe request is answered (the host is alive) and nothing the host sends is undecodable;
// - nothing failed inside the host (no "internal" error: a handler crash is a bug).
// A module goodbye ends the connection; the target then connects again.

import { CodecError, decodeBody, encodeBody } from "../protocol/codec.ts";
import { parseModuleMessage } from "../protocol/messages.ts";
import { protocolVectorFrames, type FuzzTarget } from "./driver.ts";
import { connect, frame, MODULE, shared, type Connection, type Shared } from "./session-harness.ts";

const PROBE_BASE = 2 ** 40;
const NIL = new Uint8Array([0xc0]);

export async function sessionTarget(opts: { batch?: number; settleMs?: number; shared?: Shared } = {}): Promise<FuzzTarget> {
  const own = opts.shared === undefined;
  const env = opts.shared ?? (await shared());
  const batch = opts.batch ?? 256;
  const settleMs = opts.settleMs ?? 5000;
  await env.store.openTree("a");
  const req = (id: number, method: string, params: Record<string, unknown> = {}) => encodeBody({ t: "request", id, method, params });
  const seeds: Uint8Array[] = [
    req(1, "get_block_height"), req(2, "get_chain_info"), req(3, "get_chain_tip"), req(4, "get_config"),
    req(5, "storage_open_tree", { tree: "b" }), req(6, "storage_insert", { tree: "a", key: "k", value: { n: [1, 2.5, "x", null, true], b: new Uint8Array([1, 2]) } }),
    req(7, "storage_get", { tree: "a", key: "k" }), req(8, "storage_iter", { tree: "a", limit: 5 }),
    req(9, "storage_transaction", { tree: "a", ops: [{ op: "put", key: "x", value: 1 }, { op: "delete", key: "k" }] }),
    req(10, "storage_usage"), req(11, "subscribe_events", { types: ["NewBlock", `${MODULE}:tick`] }),
    req(12, "publish_event", { name: "tick", payload: { i: 1 } }), req(13, "storage_list_trees"), req(14, "no_such_method"),
    encodeBody({ t: "log", level: "info", message: "hello", fields: { a: 1 } }), encodeBody({ t: "ack", seq: 1 }),
    ...(await protocolVectorFrames()).map((f) => f.subarray(4)).filter((b) => b.length > 0),
  ];
  let conn: Connection | undefined;
  let expected = 0;
  const expectedIds = new Map<number, number>();
  let probes = 0;
  let sinceCheck = 0;

  async function open(): Promise<Connection> {
    const c = connect(env);
    c.peer.write(frame(encodeBody({ t: "hello", protocol: [1, 1], module: MODULE, version: "1.0.0", sdk: "fuzz" })));
    await c.session.handshake;
    expected = 0;
    expectedIds.clear();
    return c;
  }

  /** How many responses this body must get, and for which request id. */
  function predict(body: Uint8Array): { responses: number; id?: number; closes?: boolean } {
    let value: unknown;
    try {
      value = decodeBody(body);
    } catch (err) {
      if (err instanceof CodecError) return { responses: 1 };
      throw err;
    }
    try {
      const msg = parseModuleMessage(value);
      if (msg.t === "request") return { responses: 1, id: msg.id };
      if (msg.t === "hello") return { responses: 1 };
      if (msg.t === "goodbye") return { responses: 0, closes: true };
      return { responses: 0 };
    } catch {
      return { responses: 1 };
    }
  }

  async function settle(): Promise<void> {
    const c = conn!;
    const probeId = PROBE_BASE + ++probes;
    c.peer.write(frame(req(probeId, "get_block_height")));
    expected++;
    expectedIds.set(probeId, 1);
    const deadline = performance.now() + settleMs;
    const responses = () => c.received.reduce((n, f) => n + (f.t === "response" ? 1 : 0), 0);
    let got = responses();
    while (got < expected && !c.closed) {
      if (performance.now() > deadline) throw new Error(`${expected - got} of ${expected} responses missing after ${settleMs} ms`);
      await new Promise((r) => setTimeout(r, got === 0 ? 0 : 1));
      got = responses();
    }
    if (c.closed) throw new Error(`the session closed unexpectedly: ${c.session.closeError?.message ?? "no reason"}`);
    if (got !== expected) throw new Error(`${got} responses for ${expected} messages that each need exactly one`);
    if (c.junk > 0) throw new Error(`the host sent ${c.junk} frames that do not decode`);
    for (const f of c.received) {
      if (f.t !== "response") continue;
      const id = f.id as number;
      const left = expectedIds.get(id);
      if (left !== undefined) left > 1 ? expectedIds.set(id, left - 1) : expectedIds.delete(id);
    }
    if (expectedIds.size > 0) throw new Error(`requests not answered by their id: ${[...expectedIds.keys()].slice(0, 5).join(", ")}`);
    const probe = c.received.find((f) => f.t === "response" && f.id === probeId);
    if (probe?.result !== 101) throw new Error(`the probe got ${JSON.stringify(probe)}`);
    if (env.errors.length > 0) throw new Error(`failed inside the host: ${env.errors[0]!.message}`);
    // Acknowledge delivered events so the window keeps moving, then start the next batch clean.
    const lastSeq = c.received.reduce((m, f) => (f.t === "event" ? Math.max(m, f.seq as number) : m), 0);
    if (lastSeq > 0) c.peer.write(frame(encodeBody({ t: "ack", seq: lastSeq })));
    c.received.length = 0;
    expected = 0;
    expectedIds.clear();
  }

  return {
    name: "protocol-session",
    seeds,
    framesOf: () => 1,
    async run(input) {
      // A zero-length frame is a framing error (the frame target's business): send a nil instead.
      if (input.length === 0) input = NIL;
      conn ??= await open();
      const p = predict(input);
      conn.peer.write(frame(input));
      expected += p.responses;
      if (p.id !== undefined) expectedIds.set(p.id, (expectedIds.get(p.id) ?? 0) + 1);
      if (p.closes) {
        // The module said goodbye: what was in flight may go unanswered. Connect again.
        await conn.session.ready.catch(() => {});
        conn.close();
        conn = undefined;
        sinceCheck = 0;
        return;
      }
      if (++sinceCheck >= batch) {
        sinceCheck = 0;
        try {
          await settle();
        } catch (err) {
          // Report it, and start the next batch on a fresh connection.
          conn.close();
          conn = undefined;
          throw err;
        }
      }
    },
    async close() {
      if (conn && !conn.closed) await settle();
      conn?.close();
      if (own) await env.close();
    },
  };
}
