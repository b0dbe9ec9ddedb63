// A JSON-RPC client for Bitcoin Core (bitcoind).
//
// Built on the host's paced HTTP client (chain/paced-http.ts) rather than a JSON-RPC package:
// Core's HTTP surface is small (POST a JSON-RPC 1.0 body with HTTP basic authentication), and
// owning the few lines lets us bound every answer and say precisely why a call failed, which is
// what an operator needs when the node's rpcwhitelist is too narrow or the node is down. Its
// answers are read as modules' http_request answers are: small reads paced, the reading's cost
// to the loop within RPC_CLIENT_CPU_MS_PER_S for all calls together, each call's whole answer
// within its timeout. Before (fetch), a node or anything in its place answering one byte per
// write cost the host's loop 310-390 ms of CPU a second for the call's whole 30 s.
//
// Failure kinds, each its own error:
//  - BackendUnavailableError: the node could not be reached (refused, reset, timed out,
//    starting up with RPC_IN_WARMUP). Callers retry later; modules see `backend_unavailable`.
//  - CoreRpcError: the node answered with a JSON-RPC error (code and message as Core sent them).
//  - CoreRpcRefused: the node refused the call itself: wrong credentials (401) or a method
//    outside the user's rpcwhitelist (403). Not retried; the message says what to change.

import { readFile } from "node:fs/promises";
import { BackendUnavailableError } from "../backend.ts";
import { JsonLimitError, parseJson } from "../json-off.ts";
import { CpuBudget, PacedHttpError, pacedHttpRequest, type PacedAnswer } from "../paced-http.ts";

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
  /** Core's RPC_OUT_OF_MEMORY; the facade's answer past FACADE_ANSWER_BYTES_HELD. */
  OUT_OF_MEMORY: -7,
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
/**
 * The loop's CPU a second that reading answers may take, all calls of one client together
 * (reads and HTTP parsing, not the JSON parse); past it the answers wait. A 4 MB block's answer
 * (8 MB of hex, ~130 reads of 64 KiB) costs a few ms.
 */
const RPC_CLIENT_CPU_MS_PER_S = 100;
/**
 * Values (chain/json-off.ts) one answer may hold: the largest modhost asks for is
 * getrawmempool's list of txids (300,000 in a full mempool, one value each), far below this.
 */
const RPC_CLIENT_MAX_VALUES = 4_000_000;
/** Nesting of arrays and objects in one answer: Core's own JSON reader's limit (MAX_JSON_DEPTH in univalue); its answers nest a few levels. */
const RPC_CLIENT_MAX_DEPTH = 512;

/** Characters of a node's error message kept (Core's are one line; what is past it is cut). */
const MAX_ERROR_MESSAGE_CHARS = 1024;

export class CoreRpc {
  private readonly timeoutMs: number;
  private readonly maxResponseBytes: number;
  private cookieHeader: string | null = null;
  private nextId = 1;
  private readonly budget = new CpuBudget(RPC_CLIENT_CPU_MS_PER_S);

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
    const id = this.nextId++;
    const body = JSON.stringify({ jsonrpc: "1.0", id, method, params });
    let res = await this.post(method, body, await this.authorization(false));
    if (res.status === 401 && "cookieFile" in this.opts.auth) {
      // bitcoind writes a new cookie at every start: read it again once.
      res = await this.post(method, body, await this.authorization(true));
    }
    if (res.status === 401) throw new CoreRpcRefused(method, 401, this.credentialsHint());
    if (res.status === 403) {
      throw new CoreRpcRefused(
        method,
        403,
        `the node refused RPC "${method}" for user "${this.user}": it is not in the user's rpcwhitelist; ` +
          "add it to the node's rpcwhitelist line (`modhost bitcoind-config` prints one with every method modhost uses)",
      );
    }
    // Parsed off the loop when large (chain/json-off.ts): an answer of up to 64 MiB was parsed
    // here in one stretch.
    let parsed: { result?: unknown; error?: { code?: unknown; message?: unknown } | null; id?: unknown } | null;
    try {
      parsed = (await parseJson(res.pieces, { lane: "bitcoind-client", maxValues: RPC_CLIENT_MAX_VALUES, valuesName: "RPC_CLIENT_MAX_VALUES", maxDepth: RPC_CLIENT_MAX_DEPTH, depthName: "RPC_CLIENT_MAX_DEPTH" })) as typeof parsed;
    } catch (err) {
      if (res.status === 503) throw new BackendUnavailableError(`the node at ${this.opts.url} is not ready (HTTP 503)`);
      if (err instanceof JsonLimitError) throw new CoreRpcError(method, RPC_CODES.MISC_ERROR, `the node's answer to ${method}: ${err.message}`);
      throw new CoreRpcError(method, RPC_CODES.MISC_ERROR, `the node answered ${method} with HTTP ${res.status} and a body that is not JSON`);
    }
    if (parsed === null || typeof parsed !== "object") {
      throw new CoreRpcError(method, RPC_CODES.MISC_ERROR, `the node answered ${method} with HTTP ${res.status} and JSON that is not a JSON-RPC answer`);
    }
    // The answer to this call, not another's (anything between modhost and the node mixing answers up).
    if (parsed.id !== id) {
      throw new CoreRpcError(method, RPC_CODES.MISC_ERROR, `the node answered ${method} (id ${id}) with the answer to id ${String(JSON.stringify(parsed.id) ?? "none").slice(0, 64)}`);
    }
    if (parsed.error) {
      const code = typeof parsed.error.code === "number" ? parsed.error.code : RPC_CODES.MISC_ERROR;
      // The node's words, said again to modules and in the log: cut, and never empty.
      const said = typeof parsed.error.message === "string" ? parsed.error.message : "";
      const message = said === "" ? `the node answered ${method} with error ${code} and no message` : said.length > MAX_ERROR_MESSAGE_CHARS ? `${said.slice(0, MAX_ERROR_MESSAGE_CHARS)}... (cut at ${MAX_ERROR_MESSAGE_CHARS} characters)` : said;
      if (code === RPC_CODES.IN_WARMUP) throw new BackendUnavailableError(`the node is starting up: ${message}`);
      if (code === RPC_CODES.METHOD_NOT_FOUND) {
        throw new CoreRpcRefused(method, 404, `the node does not know RPC "${method}" (${message}); modhost needs Bitcoin Core 25 or newer`);
      }
      throw new CoreRpcError(method, code, message);
    }
    if (res.status < 200 || res.status > 299) throw new CoreRpcError(method, RPC_CODES.MISC_ERROR, `the node answered ${method} with HTTP ${res.status}`);
    return parsed.result as T;
  }

  /** One exchange; the answer's body is bounded (maxResponseBytes) and read paced. */
  private async post(method: string, body: string, authorization: string): Promise<PacedAnswer> {
    try {
      return await pacedHttpRequest({
        url: new URL(this.opts.url),
        method: "POST",
        headers: { "content-type": "application/json", authorization },
        body,
        timeoutMs: this.timeoutMs,
        maxBodyBytes: this.maxResponseBytes,
        budget: this.budget,
      });
    } catch (err) {
      if (err instanceof PacedHttpError && err.kind === "too_large") {
        throw new CoreRpcError(method, RPC_CODES.MISC_ERROR, `the node's answer to ${method}: ${err.message}`);
      }
      const why = err instanceof PacedHttpError && err.kind === "timeout" ? `no answer within ${this.timeoutMs} ms` : (err as Error).message;
      throw new BackendUnavailableError(`the node at ${this.opts.url} is unreachable (${method}: ${why})`);
    }
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
