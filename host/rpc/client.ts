// A JSON-RPC client for a running host, used by the modhost command line (`modhost list`,
// `modhost <module> <command>`, ...). It reads the cookie from the config's cookie_file (or
// uses the configured user and password) and explains plainly when no host is running.

import { readFile } from "node:fs/promises";
import http from "node:http";
import { isIP } from "node:net";
import type { HostConfig, RpcConfig } from "../config.ts";
import { ModhostError } from "../errors.ts";
import { ANSWER_ENVELOPE_BYTES } from "./answer-limit.ts";
import { basicHeader, portFileOf, readCookie, type Credentials } from "./auth.ts";

/** How long the connection may go without a byte either way before the command gives up. */
export const CLIENT_IDLE_TIMEOUT_MS = 60_000;
/**
 * How long one call may take in all, its answer read to the end, unless `--timeout` says
 * otherwise. The idle timeout alone let whoever listens at the RPC address hold a command for
 * ever by sending a byte every 50 s.
 */
export const DEFAULT_CALL_DEADLINE_MS = 300_000;

export interface ClientOptions {
  host: string;
  port: number;
  credentials: Credentials;
  /** Give up when the connection is silent this long; default CLIENT_IDLE_TIMEOUT_MS. */
  timeoutMs?: number;
  /** Give up when a call has not been answered in full within this; default DEFAULT_CALL_DEADLINE_MS. */
  deadlineMs?: number;
  /**
   * The largest answer taken: the `[rpc] max_response_bytes` of the config the command reads
   * (the host's answers are never larger) plus ANSWER_ENVELOPE_BYTES. Counted as the answer
   * arrives, before it is held whole or parsed.
   */
  maxResponseBytes: number;
}

/** An error answer from the server: its JSON-RPC code, message and data. */
class RpcCallError extends ModhostError {
  constructor(readonly rpcCode: number, message: string, readonly data?: unknown) {
    super("rpc_error", message, hintOf(data));
  }
}

function hintOf(data: unknown): string | undefined {
  const hint = (data as { hint?: unknown } | undefined)?.hint;
  return typeof hint === "string" ? hint : undefined;
}

/** Where a client connects for a server bound to `bind` (a wildcard means this machine). */
function connectAddress(bind: string): string {
  if (bind === "0.0.0.0") return "127.0.0.1";
  if (bind === "::" || bind === "[::]") return "::1";
  return bind;
}

export class RpcClient {
  private nextId = 1;

  constructor(private readonly opts: ClientOptions) {}

  get where(): string {
    return isIP(this.opts.host) === 6 ? `[${this.opts.host}]:${this.opts.port}` : `${this.opts.host}:${this.opts.port}`;
  }

  /** Call one method; resolves to its result, rejects with RpcCallError or a ModhostError. */
  async call(method: string, params?: unknown): Promise<unknown> {
    const id = this.nextId++;
    const body = JSON.stringify({ jsonrpc: "2.0", id, method, ...(params !== undefined ? { params } : {}) });
    const { status, text } = await this.post(body);
    if (status === 401) {
      throw new ModhostError("unauthorised", `the modhost at ${this.where} refused the credentials`, "the cookie file belongs to another host, or [rpc] user/password differ; check --config");
    }
    let answer: { result?: unknown; error?: { code: number; message: string; data?: unknown } };
    try {
      answer = JSON.parse(text);
    } catch {
      throw new ModhostError("rpc_error", `unexpected answer from ${this.where} (HTTP ${status}): ${text.slice(0, 200)}`);
    }
    if (answer.error) throw new RpcCallError(answer.error.code, answer.error.message, answer.error.data);
    return answer.result ?? null;
  }

  private post(body: string): Promise<{ status: number; text: string }> {
    const { host, port, credentials } = this.opts;
    const idleMs = this.opts.timeoutMs ?? CLIENT_IDLE_TIMEOUT_MS;
    const deadlineMs = this.opts.deadlineMs ?? DEFAULT_CALL_DEADLINE_MS;
    let deadline: NodeJS.Timeout | undefined;
    return new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = http.request({
        host, port, method: "POST", path: "/",
        headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body), Authorization: basicHeader(credentials) },
        timeout: idleMs,
      }, (res) => {
        // Whoever listens at the address answers: a host never sends more than its
        // max_response_bytes, so more than that (declared, or as it arrives) is refused before
        // it is held. Before, an answer of any size was gathered whole, then parsed.
        const limit = this.opts.maxResponseBytes + ANSWER_ENVELOPE_BYTES;
        const tooLarge = (n: number) => new ModhostError("rpc_error", `the answer from ${this.where} is ${n} bytes or more, larger than the ${limit} bytes a modhost answer may be ([rpc] max_response_bytes = ${this.opts.maxResponseBytes} plus ANSWER_ENVELOPE_BYTES); nothing of it was printed`, "check that --rpcconnect/--rpcport name a modhost, or raise [rpc] max_response_bytes in the configuration this command reads to the host's");
        const declared = Number(res.headers["content-length"]);
        if (Number.isFinite(declared) && declared > limit) {
          req.destroy(tooLarge(declared));
          return;
        }
        const chunks: Buffer[] = [];
        let received = 0;
        res.on("data", (c: Buffer) => {
          received += c.length;
          if (received > limit) {
            chunks.length = 0;
            req.destroy(tooLarge(received));
            return;
          }
          chunks.push(c);
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", reject);
      });
      req.on("timeout", () => req.destroy(new ModhostError("timeout", `the modhost at ${this.where} sent nothing for ${idleMs / 1000} s (CLIENT_IDLE_TIMEOUT_MS)`, "check that the host is running and not stalled (modhost health)")));
      // The whole call, however the answer trickles in.
      deadline = setTimeout(() => req.destroy(new ModhostError("timeout", `the modhost at ${this.where} did not answer in full within ${deadlineMs / 1000} s (--timeout SECONDS, default ${DEFAULT_CALL_DEADLINE_MS / 1000})`, "check --rpcconnect/--rpcport, or give a slow call more time with --timeout SECONDS")), deadlineMs);
      req.on("error", (err: NodeJS.ErrnoException) => {
        if (err instanceof ModhostError) reject(err);
        else if (err.code === "ECONNREFUSED" || err.code === "ENOENT" || err.code === "EADDRNOTAVAIL") reject(notRunning(this.where, "could not connect"));
        else reject(new ModhostError("rpc_error", `cannot reach the modhost at ${this.where}: ${err.message}`));
      });
      req.end(body);
    }).finally(() => clearTimeout(deadline));
  }
}

function notRunning(where: string, why: string): ModhostError {
  return new ModhostError("not_running", `no modhost is running at ${where} (${why}); start one with modhost run`);
}

/** The port a host configured with `[rpc] port = 0` wrote beside its cookie. */
async function listeningPort(cookieFile: string, host: string): Promise<number> {
  const file = portFileOf(cookieFile);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") throw notRunning(`${host}, [rpc] port = 0`, `no port file at ${file}`);
    throw new ModhostError("unauthorised", `cannot read ${file}: ${(err as Error).message}`, "run modhost as the user that runs the host");
  }
  const port = Number(text.trim());
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ModhostError("rpc_error", `${file} does not hold a port number`, "restart the host: it writes the file again");
  return port;
}

/** A client for the host that `config` describes (its [rpc] bind, port and cookie_file). */
export async function clientFor(config: { file?: string | null | undefined; rpc: Pick<RpcConfig, "enabled" | "bind" | "port" | "cookie_file" | "user" | "password" | "max_response_bytes"> } | HostConfig, deadlineMs?: number): Promise<RpcClient> {
  const rpc = config.rpc;
  const host = connectAddress(rpc.bind);
  if (!rpc.enabled) throw new ModhostError("rpc_disabled", `the RPC server is disabled in ${config.file ?? "the configuration"} ([rpc] enabled = false)`, "set [rpc] enabled = true and restart the host");
  // `port = 0`: the host listens on a port of the system's choosing and writes it beside its cookie.
  const port = rpc.port === 0 ? await listeningPort(rpc.cookie_file, host) : rpc.port;
  const where = isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
  let credentials: Credentials;
  try {
    credentials = await readCookie(rpc.cookie_file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // Without a readable cookie the configured user and password still work.
    if (rpc.user !== undefined && rpc.password !== undefined) credentials = { user: rpc.user, password: rpc.password };
    else if (code === "ENOENT") throw notRunning(where, `no cookie file at ${rpc.cookie_file}`);
    else if (code === "EACCES") throw new ModhostError("unauthorised", `cannot read the cookie file ${rpc.cookie_file}: permission denied`, "run modhost as the user that runs the host");
    else throw err;
  }
  return new RpcClient({ host, port, credentials, maxResponseBytes: rpc.max_response_bytes, ...(deadlineMs !== undefined ? { deadlineMs } : {}) });
}
