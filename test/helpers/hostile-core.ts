// A Bitcoin Core node that lies: the project's Core facade (chain/bitcoind/facade.ts) over an
// embedded chain, behind a man in the middle that answers the calls a test chooses as it likes
// and passes the others through. What the Core backend attached to it reads is what a
// compromised or buggy node, or anything on a non-local link, could send.

import http from "node:http";
import type { AddressInfo } from "node:net";
import { BitcoindBackend } from "../../chain/bitcoind/backend.ts";
import { CoreFacade } from "../../chain/bitcoind/facade.ts";
import { rpcauthLine } from "../../chain/bitcoind/rpcauth.ts";
import type { EmbeddedChain } from "../../chain/embedded.ts";
import { freePort } from "./rpc.ts";

const USER = "modhost";
const PASSWORD = "hostile";

/**
 * What the man in the middle answers a call: a JSON-RPC result, the JSON text of one (`json`),
 * a body of its own (sent as it is, whatever id it carries), "hold" (never answered), or
 * undefined to pass the call through.
 */
export type Tamper = (method: string, params: unknown[]) => { result: unknown } | { json: string } | { body: string | Buffer } | "hold" | undefined;

export interface HostileCore {
  /** The man in the middle's URL (what the backend is given). */
  readonly url: string;
  /** The facade's own URL, and the Authorization header its user sends. */
  readonly facadeUrl: string;
  readonly authorization: string;
  /** Connections open to the man in the middle now. */
  readonly connections: () => number;
  /** Calls seen, by method. */
  readonly calls: Map<string, number>;
  /** The current tamper; null passes everything through. */
  tamper: Tamper | null;
  /** A Core backend attached to the man in the middle (the host's, when given as startHost's `backend`). */
  backend(opts?: { zmqSequence?: string; pollIntervalMs?: number; warn?: (m: string) => void }): Promise<BitcoindBackend>;
  stop(): Promise<void>;
}

export async function hostileCore(chain: EmbeddedChain): Promise<HostileCore> {
  const facade = new CoreFacade({ backend: chain, rpcPort: await freePort(), rpcauth: [rpcauthLine(USER, PASSWORD)] });
  await facade.start();
  const calls = new Map<string, number>();
  const target = new URL(facade.rpcUrl);
  const server = http.createServer((req, res) => {
    const pieces: Buffer[] = [];
    req.on("data", (d: Buffer) => pieces.push(d));
    req.on("end", () => {
      const body = Buffer.concat(pieces);
      let asked: { id?: unknown; method?: string; params?: unknown[] } = {};
      try {
        asked = JSON.parse(body.toString("utf8"));
      } catch {
        // passed through as it is
      }
      const method = typeof asked.method === "string" ? asked.method : "";
      calls.set(method, (calls.get(method) ?? 0) + 1);
      const answer = core.tamper?.(method, Array.isArray(asked.params) ? asked.params : []);
      if (answer === "hold") return; // never answered
      if (answer !== undefined) {
        const id = JSON.stringify(asked.id ?? null);
        const text = "body" in answer ? answer.body : "json" in answer ? `{"result":${answer.json},"error":null,"id":${id}}` : JSON.stringify({ result: answer.result, error: null, id: asked.id });
        res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
        res.end(text);
        return;
      }
      const forward = http.request({ host: target.hostname, port: target.port, path: "/", method: "POST", headers: { ...req.headers, host: target.host } }, (answer) => {
        res.writeHead(answer.statusCode ?? 500, answer.headers);
        answer.pipe(res);
      });
      forward.on("error", () => res.destroy());
      forward.end(body);
    });
  });
  let open = 0;
  server.on("connection", (socket) => {
    open++;
    socket.once("close", () => open--);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  const backends: BitcoindBackend[] = [];
  const core: HostileCore = {
    url,
    connections: () => open,
    facadeUrl: facade.rpcUrl,
    authorization: `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString("base64")}`,
    calls,
    tamper: null,
    async backend(opts = {}) {
      const b = await BitcoindBackend.create({ rpcUrl: url, auth: { user: USER, password: PASSWORD }, pollIntervalMs: 60_000, rpcTimeoutMs: 10_000, ...opts });
      backends.push(b);
      return b;
    },
    async stop() {
      for (const b of backends) await b.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await facade.stop();
    },
  };
  return core;
}
