// A host session on one end of a real Unix-domain socket and a raw protocol peer on the
// other, for protocol tests: the peer writes whatever bytes a test likes and records every
// frame the host sends back, decoded.

import type { ExecutionContext } from "ava";
import net from "node:net";
import path from "node:path";
import { FrameChannel, HOST_SIDE } from "../../protocol/channel.ts";
import { encodeFrame, FrameDecoder } from "../../protocol/frame.ts";
import { decodeBody, encodeBody, type BodyLimits } from "../../protocol/codec.ts";
import { HostSession, type SessionOptions } from "../../host/session.ts";
import { ApiHub } from "../../host/hub.ts";
import { EventBus } from "../../host/events/bus.ts";
import { Logger, type LogRecord } from "../../host/log.ts";
import { EmbeddedChain } from "../../chain/embedded.ts";
import { parseDescriptor, resolveGrants, type EffectiveGrants } from "../../capabilities/grants.ts";
import { ModuleStore } from "../../storage/store.ts";
import { tempDir, WAIT_MS, waitFor } from "./host.ts";

export type Frame = Record<string, unknown> & { t: string };

/** The module end of the socket, speaking raw frames. */
export class RawPeer {
  readonly frames: Frame[] = [];
  /** Bodies that did not decode (should never happen: the host sends valid frames). */
  readonly junk: Buffer[] = [];
  readonly closed: Promise<void>;
  private readonly decoder = new FrameDecoder();
  private nextId = 1;
  isClosed = false;
  /** Called with each frame as it arrives (a module answering invocations, say). */
  onFrame: ((f: Frame) => void) | undefined;

  constructor(readonly socket: net.Socket) {
    socket.on("data", (chunk: Buffer) => {
      for (const body of this.decoder.push(chunk)) {
        try {
          const f = decodeBody(body) as Frame;
          this.frames.push(f);
          this.onFrame?.(f);
        } catch {
          this.junk.push(Buffer.from(body));
        }
      }
    });
    this.closed = new Promise((resolve) => socket.once("close", () => {
      this.isClosed = true;
      resolve();
    }));
    socket.on("error", () => {});
  }

  send(message: unknown): void {
    this.socket.write(encodeFrame(encodeBody(message)));
  }

  sendHex(hex: string): void {
    this.socket.write(Buffer.from(hex, "hex"));
  }

  hello(module: string, protocol: [number, number] = [1, 1]): void {
    this.send({ t: "hello", protocol, module, version: "1.0.0", sdk: "raw-peer" });
  }

  /** Send a request; returns its id. */
  request(method: string, params: Record<string, unknown> = {}, id = this.nextId++): number {
    this.send({ t: "request", id, method, params });
    return id;
  }

  /** The first frame (from index `since`) matching `match`. */
  async next(match: (f: Frame) => boolean, timeoutMs = WAIT_MS, since = 0): Promise<Frame> {
    return waitFor(() => this.frames.slice(since).find(match), timeoutMs, "a matching frame", () => JSON.stringify(this.frames.slice(-10)));
  }

  response(id: number, timeoutMs = WAIT_MS): Promise<Frame> {
    return this.next((f) => f.t === "response" && f.id === id, timeoutMs);
  }

  /** Send a request and wait for its response. */
  async call(method: string, params: Record<string, unknown> = {}): Promise<Frame> {
    return this.response(this.request(method, params));
  }

  framesOf(t: string): Frame[] {
    return this.frames.filter((f) => f.t === t);
  }
}

export interface SessionSetup {
  module?: string;
  /** The protocol range the peer's hello states (default [1, 1]). */
  protocol?: [number, number];
  /** Granted descriptors. */
  grants?: string[];
  /** Open a real LevelDB store for the module. */
  store?: boolean;
  storeDir?: string;
  /** Default: one chain at height 101 shared by every test of the file (it must not be mined). */
  chain?: EmbeddedChain;
  /** A chain of its own at height 101, for tests that mine. */
  freshChain?: boolean;
  /** Default: a bus of its own, fed by the chain. */
  bus?: EventBus;
  config?: Record<string, unknown>;
  session?: Partial<Omit<SessionOptions, "module" | "grants" | "hub" | "bus" | "logger" | "call">>;
  /** Do the handshake (hello, wait for welcome) before returning. */
  handshake?: boolean;
  /** The host channel's maximum frame size. */
  maxFrameBytes?: number;
  /** The host channel's body limits (default: the protocol's). */
  limits?: BodyLimits;
}

export interface SessionPair {
  session: HostSession;
  peer: RawPeer;
  /** The host's socket (the session's end). */
  hostSocket: net.Socket;
  channel: FrameChannel;
  chain: EmbeddedChain;
  bus: EventBus;
  hub: ApiHub;
  store: ModuleStore | undefined;
  records: LogRecord[];
  grants: EffectiveGrants;
  welcome?: Frame;
}

/** A listening Unix socket in a temp dir; each call returns a connected (host, module) pair. */
export async function socketPair(t: ExecutionContext): Promise<{ host: net.Socket; module: net.Socket }> {
  const dir = await tempDir(t, "modhost-sock-");
  const file = path.join(dir, "s.sock");
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(file, resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once("connection", resolve));
  const module = net.connect(file);
  await new Promise<void>((resolve, reject) => module.once("connect", resolve).once("error", reject));
  const host = await accepted;
  server.close();
  t.teardown(() => {
    host.destroy();
    module.destroy();
  });
  return { host, module };
}

let shared: Promise<EmbeddedChain> | undefined;
/** Creating a chain mines 101 blocks; tests that only read share one. */
function sharedChain(): Promise<EmbeddedChain> {
  shared ??= EmbeddedChain.create();
  return shared;
}

export async function openSession(t: ExecutionContext, setup: SessionSetup = {}): Promise<SessionPair> {
  const module = setup.module ?? "example";
  const { host, module: modSocket } = await socketPair(t);
  const chain = setup.chain ?? (setup.freshChain ? await EmbeddedChain.create() : await sharedChain());
  const bus = setup.bus ?? new EventBus();
  if (!setup.bus) {
    const unsubscribe = chain.subscribe((name, payload) => bus.publish(name, payload));
    t.teardown(unsubscribe);
  }
  const records: LogRecord[] = [];
  const logger = new Logger({ level: "debug", write: () => {} });
  logger.addSink((r) => records.push(r));
  const hub = new ApiHub({ onDenied: (d) => logger.log("warn", d.module, `denied: ${d.reason}`) });
  const descriptors = (setup.grants ?? []).map((d) => parseDescriptor(d));
  const { effective } = resolveGrants(descriptors, descriptors, []);
  let store: ModuleStore | undefined;
  if (setup.store) {
    const dir = setup.storeDir ?? path.join(await tempDir(t, "modhost-store-"), module);
    store = await ModuleStore.open(dir, {}, { label: module });
    t.teardown(() => store!.close());
  }
  const channel = new FrameChannel(host, { maxFrameBytes: setup.maxFrameBytes, ...(setup.limits ? { limits: setup.limits } : HOST_SIDE) });
  const session = new HostSession(channel, {
    module,
    grants: effective,
    hub,
    bus,
    logger,
    call: { module, chain, store, config: setup.config ?? { answer: 42 }, dataDir: `/data/${module}` },
    ...setup.session,
  });
  t.teardown(() => session.close());
  const peer = new RawPeer(modSocket);
  const pair: SessionPair = { session, peer, hostSocket: host, channel, chain, bus, hub, store, records, grants: effective };
  if (setup.handshake ?? true) {
    peer.hello(module, setup.protocol);
    pair.welcome = await peer.next((f) => f.t === "welcome");
  }
  return pair;
}

/** A session whose hub answers every request with `work(method)` (sync part, then async; the session calls the hub's dispatch()). */
export async function stubSession(t: ExecutionContext, flow: Record<string, number>, work: (method: string, params: Record<string, unknown>) => Promise<unknown>) {
  const { host, module } = await socketPair(t);
  const records: LogRecord[] = [];
  const logger = new Logger({ level: "debug", write: () => {} });
  logger.addSink((r) => records.push(r));
  const hub = { dispatch: (_c: unknown, _g: unknown, method: string, params: Record<string, unknown>) => work(method, params), methodsFor: () => [] } as unknown as ApiHub;
  const channel = new FrameChannel(host);
  const session = new HostSession(channel, {
    module: "greedy", grants: new Map() as never, hub, bus: new EventBus(), logger,
    call: { module: "greedy", chain: undefined as never, store: undefined, config: {}, dataDir: "/d" },
    flow,
  });
  t.teardown(() => session.close());
  const peer = new RawPeer(module);
  peer.hello("greedy");
  await peer.next((f) => f.t === "welcome");
  // Started, as a module is once its registrations are done: the host no longer waits for its
  // ready, so its socket is read only as its share allows (host/session.ts pauseReading).
  peer.send({ t: "ready" });
  await session.ready;
  return { session, peer, records, channel };
}
