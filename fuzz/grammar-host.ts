// What the protocol-grammar target runs against: the host's own session handler as the host
// builds it for a module (host/supervisor.ts), with every capability granted and the host's
// services behind the cross-module families (timers, metrics, RPC, module calls, hooks,
// providers), a real embedded chain, event bus, LevelDB store and data directory. The module's
// end is an in-process stream: it answers every invocation the host sends (timers, module API,
// RPC, hooks) and keeps what else the host sends for the target to check.

import { duplexPair, type Duplex } from "node:stream";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { FrameChannel, HOST_SIDE } from "../protocol/channel.ts";
import { FrameDecoder } from "../protocol/frame.ts";
import { decodeBody, encodeBody } from "../protocol/codec.ts";
import { HostSession } from "../host/session.ts";
import { ApiHub } from "../host/hub.ts";
import { EventBus } from "../host/events/bus.ts";
import { Logger, type LogRecord } from "../host/log.ts";
import { createServices } from "../host/services/index.ts";
import type { ModuleManager } from "../host/manager.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { PERMISSION_NAMES } from "../capabilities/catalogue.ts";
import { parseDescriptor, resolveGrants } from "../capabilities/grants.ts";
import { DataUsage } from "../capabilities/fs-usage.ts";
import type { HostServices } from "../capabilities/types.ts";
import { ModuleStore } from "../storage/store.ts";
import { frame, MODULE } from "./session-harness.ts";

export interface GrammarHost {
  chain: EmbeddedChain;
  /** Host log records at level error from the host itself (a request that failed inside the host). */
  errors: LogRecord[];
  /** Bytes the host log and the audit (denials, audited actions) were handed. */
  logBytes(): number;
  connect(): ModuleEnd;
  close(): Promise<void>;
}

export interface ModuleEnd {
  session: HostSession;
  peer: Duplex;
  /** Called with every response the host sends. */
  onResponse?: (msg: Record<string, unknown>) => void;
  /** Milliseconds (wall, and CPU of this thread) the module's end spent on what it received since the last call: not the host's time. */
  takeOwn(): { wall: number; cpu: number };
  /**
   * Set while a frame is written in parts: the module's end then holds its answers to
   * invocations (a timer fires at any time) until the frame is whole, as a module's socket
   * writer would, instead of cutting into it; `flush` sends what it held.
   */
  midFrame: boolean;
  flush(): void;
  /** The last event sequence number received (for acks). */
  lastSeq: number;
  /** Frames the host sent that do not decode. */
  junk: number;
  closed: boolean;
  close(): void;
}

/** CPU time of this thread (the event loop's), in milliseconds: what a turn cost, whatever else the machine runs. */
export function threadCpuMs(): number {
  const u = process.threadCpuUsage();
  return (u.user + u.system) / 1000;
}

export async function grammarHost(): Promise<GrammarHost> {
  const chain = await EmbeddedChain.create();
  const bus = new EventBus();
  const unsubscribe = chain.subscribe((name, payload) => bus.publish(name, payload));
  const errors: LogRecord[] = [];
  let logBytes = 0;
  const logger = new Logger({ level: "debug", write: (line: string) => void (logBytes += line.length) });
  logger.addSink((r) => {
    if (r.level === "error" && r.source === "host") errors.push(r);
  });
  const hub = new ApiHub({
    onInternalError: (_module, method, err) => logger.log("error", "host", `internal error in ${method}: ${(err as Error)?.stack ?? String(err)}`),
    onDenied: (d) => void (logBytes += JSON.stringify(d).length),
    onAction: (a) => void (logBytes += JSON.stringify(a).length),
  });
  const dir = await mkdtemp(path.join(tmpdir(), "modhost-grammar-"));
  const dataDir = path.join(dir, "data");
  const { mkdir } = await import("node:fs/promises");
  await mkdir(dataDir);
  const store = await ModuleStore.open(path.join(dir, "store"), {}, { label: MODULE });
  let current: ModuleEnd | undefined;
  // The manager as the services see it: one module, this one, running.
  const manager = {
    session: (name: string) => (name === MODULE && current && !current.closed ? current.session : undefined),
    status: () => [{ name: MODULE, version: "1.0.0", runtime: "native", state: "running" }],
    manifestOf: () => undefined,
    processOf: (name: string) => (name === MODULE && current ? { session: current.session } : undefined),
  } as unknown as ModuleManager;
  const services: HostServices = {
    ...createServices({ bus, manager, logger }),
    // http_request never leaves the machine: every name is the loopback, which the address policy refuses.
    resolve: async () => [{ address: "127.0.0.1", family: 4 }],
  };
  const grants = PERMISSION_NAMES.map((p) => parseDescriptor(p));
  const { effective } = resolveGrants(grants, grants, []);
  const usage = new DataUsage(MODULE, { maxBytes: 256 * 1024 * 1024, maxEntries: 10_000 }, 0, 0);

  return {
    chain, errors,
    logBytes: () => logBytes,
    connect() {
      const [hostEnd, peer] = duplexPair();
      const channel = new FrameChannel(hostEnd, HOST_SIDE);
      const session = new HostSession(channel, {
        module: MODULE, grants: effective, hub, bus, logger,
        call: { module: MODULE, chain, store, config: { answer: 42 }, dataDir, dataUsage: usage, services },
        // Rates high enough not to hold the fuzzer back: what is measured is each request's cost.
        flow: { requestsPerSecond: 1_000_000, hostCpuMsPerS: 1000 },
        handshakeTimeoutMs: 60_000,
      });
      let ownWall = 0;
      let ownCpu = 0;
      const held: Buffer[] = [];
      const end: ModuleEnd = {
        session, peer, lastSeq: 0, junk: 0, closed: false, midFrame: false,
        flush() {
          if (!end.midFrame) for (const h of held.splice(0)) peer.write(h);
        },
        takeOwn() {
          const own = { wall: ownWall, cpu: ownCpu };
          ownWall = 0;
          ownCpu = 0;
          return own;
        },
        close() {
          session.close();
          peer.destroy();
        },
      };
      const decoder = new FrameDecoder();
      peer.on("data", (chunk: Buffer) => {
        const t0 = performance.now();
        const c0 = threadCpuMs();
        for (const body of decoder.push(chunk)) {
          let msg: Record<string, unknown>;
          try {
            msg = decodeBody(body) as Record<string, unknown>;
          } catch {
            end.junk++;
            continue;
          }
          if (msg.t === "response") end.onResponse?.(msg);
          else if (msg.t === "event") end.lastSeq = Math.max(end.lastSeq, msg.seq as number);
          else if (msg.t === "invocation") {
            const answer = frame(encodeBody({ t: "invocation_result", id: msg.id, result: msg.kind === "health" ? { healthy: true } : null }));
            if (end.midFrame) held.push(answer);
            else peer.write(answer);
          }
        }
        ownWall += performance.now() - t0;
        ownCpu += threadCpuMs() - c0;
      });
      peer.on("error", () => {});
      session.on("closed", () => (end.closed = true));
      current = end;
      return end;
    },
    async close() {
      current?.close();
      services.forget?.(MODULE);
      unsubscribe();
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
