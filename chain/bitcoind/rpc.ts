// A JSON-RPC client for Bitcoin Core (bitcoind).
//
// Built on Node's fetch (undici: keep-alive connection pooling, timeouts through AbortSignal)
// rather than a JSON-RPC package: Core's HTTP surface is small (POST a JSON-RPC 1.0 body with
// HTTP basic authentication), and owning the few lines lets us bound every answer and say
// precisely why a call failed, which is what an operator needs when the node's rpcwhitelist
// is too narrow or the node is down.
//
// Failure kinds, each its own error:
//  - BackendUnavailableError: the node could not be reached (refused, reset, timed out,
//    starting up with RPC_IN_WARMUP). Callers retry later; modules see `backend_unavailable`.
//  - CoreRpcError: the node answered with a JSON-RPC error (code and message as Core sent them).
//  - CoreRpcRefused: the node refused the call itself: wrong credentials (401) or a method
//    outside the user's rpcwhitelist (403). Not retried; the message says what to change.

import { readFile } from "node:fs/promises";
import { BackendUnavailableError } from "../backend.ts";

export type CoreAuth = { cookieFile: string } | { user: string; password: string };

export interface CoreRpcOptions {
  /** e.g. http://127.0.0.1:8332/ */
  url: string;
  auth: CoreAuth;
  /** Per call; default 30 s. */
  timeoutMs?: number;
  /** Largest answer body read; default 64 MiB (a 4 MB block is 8 MB of hex). */
  maxResponseBytes?: number;
}

/** Core's JSON-RPC error codes that this backend acts on (src/rpc/protocol.h). */
export const RPC_CODES = {
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  MISC_ERROR: -1,
  INVALID_ADDRESS_OR_KEY: -5,
  INVALID_PARAMETER: -8,
  IN_WARMUP: -28,
  VERIFY_ERROR: -25,
  VERIFY_REJECTED: -26,
  VERIFY_ALREADY_IN_CHAIN: -27,
  CLIENT_NOT_CONNECTED: -9,
  CLIENT_IN_INITIAL_DOWNLOAD: -10,
} as const;

export class CoreRpcError extends Error {
  constructor(
    readonly method: string,
    readonly code: number,
    message: string,
  ) {
    super(message);
    this.name = "CoreRpcError";
  }
}

export class CoreRpcRefused extends Error {
  constructor(
    readonly method: string,
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "CoreRpcRefused";
  }
}

const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_RESPONSE = 64 * 1024 * 1024;

export class CoreRpc {
  private readonly timeoutMs: number;
  private readonly maxResponseBytes: number;
  private cookieHeader: string | null = null;
  private nextId = 1;

  constructor(private readonly opts: CoreRpcOptions) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.maxResponseBytes = opts.maxResponseBytes ?? DEFAULT_MAX_RESPONSE;
  }

  get url(): string {
    return this.opts.url;
  }

  get user(): string {
    return "user" in this.opts.auth ? this.opts.auth.user : "__cookie__";
  }

  /** Call one method; resolves to its `result`. */
  async call<T = unknown>(method: string, params: unknown[] = []): Promise<T> {
    const body = JSON.stringify({ jsonrpc: "1.0", id: this.nextId++, method, params });
    let res = await this.post(method, body, await this.authorization(false));
    if (res.status === 401 && "cookieFile" in this.opts.auth) {
      // bitcoind writes a new cookie at every start: read it again once.
      await res.body?.cancel();
      res = await this.post(method, body, await this.authorization(true));
    }
    if (res.status === 401) {
      await res.body?.cancel();
      throw new CoreRpcRefused(method, 401, this.credentialsHint());
    }
    if (res.status === 403) {
      await res.body?.cancel();
      throw new CoreRpcRefused(
        method,
        403,
        `the node refused RPC "${method}" for user "${this.user}": it is not in the user's rpcwhitelist; ` +
          "add it to the node's rpcwhitelist line (`modhost bitcoind-config` prints one with every method modhost uses)",
      );
    }
    const text = await this.readBody(method, res);
    let parsed: { result?: unknown; error?: { code?: unknown; message?: unknown } | null };
    try {
      parsed = JSON.parse(text) as typeof parsed;
    } catch {
      if (res.status === 503) throw new BackendUnavailableError(`the node at ${this.opts.url} is not ready (HTTP 503)`);
      throw new CoreRpcError(method, RPC_CODES.MISC_ERROR, `the node answered ${method} with HTTP ${res.status} and a body that is not JSON`);
    }
    if (parsed.error) {
      const code = typeof parsed.error.code === "number" ? parsed.error.code : RPC_CODES.MISC_ERROR;
      const message = typeof parsed.error.message === "string" ? parsed.error.message : "unknown error";
      if (code === RPC_CODES.IN_WARMUP) throw new BackendUnavailableError(`the node is starting up: ${message}`);
      if (code === RPC_CODES.METHOD_NOT_FOUND) {
        throw new CoreRpcRefused(method, 404, `the node does not know RPC "${method}" (${message}); modhost needs Bitcoin Core 25 or newer`);
      }
      throw new CoreRpcError(method, code, message);
    }
    if (!res.ok) throw new CoreRpcError(method, RPC_CODES.MISC_ERROR, `the node answered ${method} with HTTP ${res.status}`);
    return parsed.result as T;
  }

  private async post(method: string, body: string, authorization: string): Promise<Response> {
    try {
      return await fetch(this.opts.url, {
        method: "POST",
        headers: { "content-type": "application/json", authorization },
        body,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const why = (err as Error).name === "TimeoutError" ? `no answer within ${this.timeoutMs} ms` : (cause?.code ?? cause?.message ?? (err as Error).message);
      throw new BackendUnavailableError(`the node at ${this.opts.url} is unreachable (${method}: ${why})`);
    }
  }

  /** The answer's text, refusing bodies over maxResponseBytes before holding them. */
  private async readBody(method: string, res: Response): Promise<string> {
    const declared = Number(res.headers.get("content-length") ?? NaN);
    if (declared > this.maxResponseBytes) {
      await res.body?.cancel();
      throw new CoreRpcError(method, RPC_CODES.MISC_ERROR, `the node's answer to ${method} is ${declared} bytes, over the limit of ${this.maxResponseBytes}`);
    }
    if (!res.body) return "";
    const chunks: Uint8Array[] = [];
    let size = 0;
    try {
      for await (const chunk of res.body) {
        size += chunk.length;
        if (size > this.maxResponseBytes) {
          await res.body.cancel().catch(() => {});
          throw new CoreRpcError(method, RPC_CODES.MISC_ERROR, `the node's answer to ${method} exceeds the limit of ${this.maxResponseBytes} bytes`);
        }
        chunks.push(chunk);
      }
    } catch (err) {
      if (err instanceof CoreRpcError) throw err;
      throw new BackendUnavailableError(`the connection to ${this.opts.url} broke while reading ${method}: ${(err as Error).message}`);
    }
    return Buffer.concat(chunks, size).toString("utf8");
  }

  private async authorization(reload: boolean): Promise<string> {
    const auth = this.opts.auth;
    if ("user" in auth) return basic(`${auth.user}:${auth.password}`);
    if (this.cookieHeader && !reload) return this.cookieHeader;
    let cookie: string;
    try {
      cookie = (await readFile(auth.cookieFile, "utf8")).trim();
    } catch (err) {
      throw new BackendUnavailableError(`cannot read the node's cookie file ${auth.cookieFile} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); is bitcoind running, and may modhost read its data directory?`);
    }
    this.cookieHeader = basic(cookie);
    return this.cookieHeader;
  }

  private credentialsHint(): string {
    return "cookieFile" in this.opts.auth
      ? `the node refused the cookie in ${this.opts.auth.cookieFile} (HTTP 401); point [chain] rpc_cookie_file at the running node's .cookie`
      : `the node refused user "${this.user}" (HTTP 401); check [chain] rpc_user and rpc_password against the node's rpcauth line`;
  }
}

function basic(credentials: string): string {
  return `Basic ${Buffer.from(credentials, "utf8").toString("base64")}`;
}
