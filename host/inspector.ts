// The inspector for TypeScript modules (development only): Chrome DevTools or VS Code attach to
// a module's isolate over the Chrome DevTools Protocol.
//
// The isolate host runs in its sandbox without network; it is started with --inspect (the
// module's `inspect` limit, set by `modhost dev --inspect`) and relays CDP messages over its
// existing channel ("inspector" invocations, runtime/isolate/worker.ts). This side serves them
// on a loopback address only (127.0.0.1, localhost or [::1]; config.ts refuses anything else):
//  - GET /json/list (and /json) and /json/version, as Node's inspector does, so chrome://inspect
//    and VS Code's "attach" find the modules;
//  - a WebSocket per module at /<random id>: the id is not guessable, and requests whose Host
//    header is not a loopback name are refused (a web page cannot reach it by DNS rebinding).
// One debugger per module at a time. When the module stops or is reloaded its debugger is
// disconnected (the new version is a new isolate): reconnect.

import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer, type WebSocket } from "ws";
import { inspectAddressProblem, limitsFor, type HostConfig } from "./config.ts";
import type { HostSession } from "./session.ts";
import type { SourceLogger } from "./log.ts";
import { HOST_VERSION } from "./version.ts";
import { capConnections, TIMEOUT_CHECK_EVERY_MS, type ConnectionCap } from "../chain/http-caps.ts";

/** Largest message a debugger may send (ws maxPayload): CDP commands are small. */
const MAX_DEBUGGER_MESSAGE_BYTES = 1024 * 1024;
/** Largest message the isolate may send the debugger, put together from its pieces (a script's source, a heap snapshot chunk). */
const MAX_ISOLATE_MESSAGE_BYTES = 64 * 1024 * 1024;
/**
 * Connections to one inspector server at once: its debuggers (one per module) and their /json
 * polls. Past it a new one closes the oldest with no request in progress, or is answered 503
 * naming this limit. Before, the inspector took every connection offered, with Node's default
 * timeouts (a head within 60 s, checked every 30 s): a local client holding a few thousand idle
 * connections took the host's open files, and the host could no longer open any.
 */
export const MAX_INSPECTOR_CONNECTIONS = 64;

/**
 * Requests one connection may have in progress at once (HTTP/1.1 pipelining). Node's server
 * starts every request of a read at once: 8 connections each writing 5,000 pipelined GETs of
 * /json/list and reading nothing had ~1,800 answered a connection, a turn of the host's loop of
 * 103-191 ms of CPU (32-49 ms now). Past it a request is answered 429 naming this limit, and the
 * connection closed (chain/http-caps.ts).
 */
const MAX_INSPECTOR_PIPELINED = 16;

/** A request's head must arrive within this; an idle keep-alive connection is closed after 5 s. */
const INSPECTOR_HEADERS_TIMEOUT_MS = 10_000;
/** How long one poll for the isolate's messages waits in the isolate host. */
const POLL_WAIT_MS = 1000;
/** On top of the poll's wait: an isolate host that does not answer by then is not relaying. */
const INVOKE_SLACK_MS = 10_000;

interface Target {
  module: string;
  id: string;
  /** The debugger connected now, if any. */
  socket?: WebSocket;
}

export interface InspectorDeps {
  session(module: string): HostSession | undefined;
  log: SourceLogger;
}

export class InspectorServer {
  private readonly server: Server;
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: MAX_DEBUGGER_MESSAGE_BYTES });
  private readonly targets = new Map<string, Target>();
  private readonly cap: ConnectionCap;
  private port = 0;

  constructor(private readonly host: string, private readonly wantedPort: number, modules: string[], private readonly deps: InspectorDeps) {
    for (const module of modules) this.targets.set(module, { module, id: randomUUID() });
    this.server = createServer({
      headersTimeout: INSPECTOR_HEADERS_TIMEOUT_MS,
      requestTimeout: 30_000,
      keepAliveTimeout: 5_000,
      connectionsCheckingInterval: TIMEOUT_CHECK_EVERY_MS,
    }, (req, res) => {
      if (this.cap.request(req, res)) this.http(req, res);
    });
    this.cap = capConnections(this.server, MAX_INSPECTOR_CONNECTIONS, (open) => `connection refused: the modhost inspector has ${open} connections open, all busy, its limit (MAX_INSPECTOR_CONNECTIONS, a fixed limit); close a debugger or retry in a moment`, { max: MAX_INSPECTOR_PIPELINED, name: "MAX_INSPECTOR_PIPELINED" });
    this.server.on("upgrade", (req, socket, head) => this.upgrade(req, socket, head));
  }

  async listen(): Promise<number> {
    const bindHost = this.host === "[::1]" ? "::1" : this.host;
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.wantedPort, bindHost, () => resolve());
    });
    this.port = (this.server.address() as { port: number }).port;
    return this.port;
  }

  /** Per module: the DevTools URL to open and the WebSocket URL. */
  urls(): { module: string; devtools: string; ws: string }[] {
    return [...this.targets.values()].map((t) => {
      const where = `${this.host}:${this.port}/${t.id}`;
      return { module: t.module, devtools: `devtools://devtools/bundled/js_app.html?experiments=true&v8only=true&ws=${where}`, ws: `ws://${where}` };
    });
  }

  async close(): Promise<void> {
    for (const t of this.targets.values()) t.socket?.close(1001, "modhost is stopping");
    this.wss.close();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** A loopback Host header (or none): anything else is a browser page reached by DNS rebinding. */
  private hostAllowed(req: IncomingMessage): boolean {
    const h = req.headers.host;
    if (h === undefined) return true;
    return /^(127\.0\.0\.1|localhost|\[::1\])(:\d+)?$/i.test(h);
  }

  private http(req: IncomingMessage, res: ServerResponse): void {
    if (!this.hostAllowed(req)) {
      res.writeHead(403, { "content-type": "text/plain" }).end("the modhost inspector answers only requests to a loopback address (Host: 127.0.0.1, localhost or [::1])\n");
      return;
    }
    const url = (req.url ?? "/").split("?")[0];
    let body: unknown;
    if (url === "/json" || url === "/json/list") {
      body = this.urls().map((u) => ({
        description: `modhost module ${u.module}`,
        devtoolsFrontendUrl: u.devtools,
        id: this.targets.get(u.module)!.id,
        title: u.module,
        type: "node",
        url: `modhost://${encodeURIComponent(u.module)}/bundle.js`,
        webSocketDebuggerUrl: u.ws,
      }));
    } else if (url === "/json/version") {
      body = { Browser: `modhost/${HOST_VERSION}`, "Protocol-Version": "1.3" };
    } else {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found: the modhost inspector serves /json/list, /json/version and a WebSocket per module (see /json/list)\n");
      return;
    }
    res.writeHead(200, { "content-type": "application/json; charset=utf-8" }).end(JSON.stringify(body));
  }

  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (!this.cap.has(req.socket)) return void socket.destroy(); // refused at the cap
    // An attached debugger is never closed to make room: its connection is busy until it closes.
    const release = this.cap.busy(req.socket);
    socket.once("close", release);
    const refuse = (status: string, why: string): undefined => {
      socket.end(`HTTP/1.1 ${status}\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n${why}\n`);
    };
    if (!this.hostAllowed(req)) return void refuse("403 Forbidden", "only requests to a loopback address are answered");
    const id = (req.url ?? "").slice(1);
    const target = [...this.targets.values()].find((t) => t.id === id);
    if (!target) return void refuse("404 Not Found", "no module with this id: see /json/list");
    if (target.socket) return void refuse("409 Conflict", `a debugger is already attached to ${target.module}; close it first`);
    const session = this.deps.session(target.module);
    if (!session) return void refuse("503 Service Unavailable", `${target.module} is not running`);
    this.wss.handleUpgrade(req, socket, head, (ws) => this.relay(target, session, ws));
  }

  /** Relay between the debugger and the module's isolate host until either goes away. */
  private relay(target: Target, session: HostSession, ws: WebSocket): void {
    target.socket = ws;
    const log = this.deps.log;
    log.info(`debugger attached to ${target.module}`);
    let open = true;
    let partial = "";
    const end = (code: number, why: string) => {
      if (!open) return;
      open = false;
      if (target.socket === ws) target.socket = undefined;
      if (ws.readyState === ws.OPEN) ws.close(code, why.slice(0, 120));
      if (session.isOpen) session.invoke("inspector", { close: true }, INVOKE_SLACK_MS).catch(() => {});
      log.info(`debugger detached from ${target.module}: ${why}`);
    };
    const exchange = async (messages: string[], waitMs: number): Promise<void> => {
      if (!open) return;
      if (this.deps.session(target.module) !== session || !session.isOpen) return end(1011, `${target.module} stopped or was reloaded: reconnect to debug the new version`);
      let answer: { messages?: unknown };
      try {
        answer = (await session.invoke("inspector", { messages, wait_ms: waitMs }, waitMs + INVOKE_SLACK_MS)) as { messages?: unknown };
      } catch (err) {
        return end(1011, `the isolate host of ${target.module} did not relay: ${(err as Error).message}`);
      }
      if (!open) return;
      for (const piece of Array.isArray(answer.messages) ? answer.messages : []) {
        const [text, last] = piece as [unknown, unknown];
        partial += String(text);
        if (partial.length > MAX_ISOLATE_MESSAGE_BYTES) return end(1009, `a message from ${target.module}'s isolate is larger than ${MAX_ISOLATE_MESSAGE_BYTES} bytes (MAX_ISOLATE_MESSAGE_BYTES)`);
        if (last === true) {
          ws.send(partial);
          partial = "";
        }
      }
    };
    ws.on("message", (data) => void exchange([String(data)], 0));
    ws.on("close", () => end(1000, "the debugger closed the connection"));
    ws.on("error", (err) => end(1011, err.message));
    void (async () => {
      while (open) await exchange([], POLL_WAIT_MS);
    })();
  }
}

/**
 * Start an inspector server for each loopback address the modules' `inspect` limits name
 * (development only). Returns them, to close when the host stops.
 */
export async function startInspectors(config: HostConfig, modules: { name: string; runtime?: string | null }[], deps: InspectorDeps): Promise<InspectorServer[]> {
  const byAddress = new Map<string, string[]>();
  for (const m of modules) {
    const inspect = limitsFor(config, m.name).inspect;
    if (!inspect) continue;
    if (m.runtime === "native") {
      deps.log.warn(`${m.name}: inspect is set, but it is a native module: the inspector is for TypeScript modules (debug a native one with its own tools, e.g. gdb on its process)`);
      continue;
    }
    const problem = inspectAddressProblem(inspect);
    if (problem) {
      deps.log.error(`${m.name}: ${problem}; no inspector for it`);
      continue;
    }
    byAddress.set(inspect, [...(byAddress.get(inspect) ?? []), m.name]);
  }
  const servers: InspectorServer[] = [];
  for (const [address, names] of byAddress) {
    const i = address.lastIndexOf(":");
    const server = new InspectorServer(address.slice(0, i), Number(address.slice(i + 1)), names, deps);
    try {
      await server.listen();
    } catch (err) {
      deps.log.error(`cannot serve the inspector on ${address}: ${(err as Error).message}; pick another port (--inspect=PORT, or [modules.limits.NAME] inspect)`);
      continue;
    }
    servers.push(server);
    deps.log.warn(`INSPECTOR ON (development only: whoever connects can run any code in these modules): ${names.join(", ")}`);
    for (const u of server.urls()) deps.log.info(`inspector for ${u.module}: open ${u.devtools} in Chrome (or attach VS Code to ${u.ws})`);
  }
  return servers;
}
