// A real HostSession with a real ApiHub, EventBus, EmbeddedChain and LevelDB store, on one
// end of an in-process stream pair; the fuzz targets write bytes to the other end and read
// what the host sends back. No module process, no socket: only the host's own code runs.

import { duplexPair, type Duplex } from "node:stream";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { FrameChannel, HOST_SIDE } from "../protocol/channel.ts";
import { FrameDecoder } from "../protocol/frame.ts";
import { decodeBody } from "../protocol/codec.ts";
import { HostSession } from "../host/session.ts";
import { ApiHub } from "../host/hub.ts";
import { EventBus } from "../host/events/bus.ts";
import { Logger, type LogRecord } from "../host/log.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { parseDescriptor, resolveGrants } from "../capabilities/grants.ts";
import { ModuleStore } from "../storage/store.ts";

export const MODULE = "fuzzed";
const GRANTS = ["read_chain_state", "read_storage", "write_storage", "manage_storage", "subscribe_events", "publish_events"];

export interface Shared {
  chain: EmbeddedChain;
  bus: EventBus;
  hub: ApiHub;
  store: ModuleStore;
  logger: Logger;
  /** Host log records at level error (a request that failed inside the host is a bug). */
  errors: LogRecord[];
  close(): Promise<void>;
}

export async function shared(): Promise<Shared> {
  const chain = await EmbeddedChain.create();
  const bus = new EventBus();
  const unsubscribe = chain.subscribe((name, payload) => bus.publish(name, payload));
  const errors: LogRecord[] = [];
  const logger = new Logger({ level: "debug", write: () => {} });
  logger.addSink((r) => {
    if (r.level === "error" && r.source === "host") errors.push(r);
  });
  const hub = new ApiHub({ onInternalError: (_module, method, err) => logger.log("error", "host", `internal error in ${method}: ${(err as Error)?.stack ?? String(err)}`) });
  const dir = await mkdtemp(path.join(tmpdir(), "modhost-fuzz-"));
  const store = await ModuleStore.open(path.join(dir, MODULE), { maxBytes: 8 * 1024 * 1024 }, { label: MODULE });
  return {
    chain, bus, hub, store, logger, errors,
    async close() {
      unsubscribe();
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface Connection {
  session: HostSession;
  /** The module's end. */
  peer: Duplex;
  /** Every frame the host sent, decoded. */
  received: Array<Record<string, unknown>>;
  /** Frames the host sent that do not decode: always a bug. */
  junk: number;
  closed: boolean;
  close(): void;
}

export function connect(s: Shared, opts: { handshakeTimeoutMs?: number } = {}): Connection {
  const [hostEnd, peer] = duplexPair();
  const { effective } = resolveGrants(GRANTS.map((d) => parseDescriptor(d)), GRANTS.map((d) => parseDescriptor(d)), []);
  const channel = new FrameChannel(hostEnd, HOST_SIDE);
  const session = new HostSession(channel, {
    module: MODULE,
    grants: effective,
    hub: s.hub,
    bus: s.bus,
    logger: s.logger,
    call: { module: MODULE, chain: s.chain, store: s.store, config: { answer: 42 }, dataDir: `/data/${MODULE}` },
    handshakeTimeoutMs: opts.handshakeTimeoutMs ?? 60_000,
  });
  const conn: Connection = {
    session, peer, received: [], junk: 0, closed: false,
    close() {
      session.close();
      peer.destroy();
    },
  };
  const decoder = new FrameDecoder();
  peer.on("data", (chunk: Buffer) => {
    for (const body of decoder.push(chunk)) {
      try {
        conn.received.push(decodeBody(body) as Record<string, unknown>);
      } catch {
        conn.junk++;
      }
    }
  });
  peer.on("error", () => {});
  session.on("closed", () => (conn.closed = true));
  return conn;
}

export function frame(body: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(4 + body.length);
  out.writeUInt32BE(body.length, 0);
  out.set(body, 4);
  return out;
}

/** Resolves after the host has had `turns` turns of the event loop. */
export async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}
