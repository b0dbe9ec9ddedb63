// Fuzz target: JSON-RPC request bodies, through parseJsonRpcBody (never rejects, depth checked
// before parsing), through the worker path of chain/json-off.ts (the body padded past
// JSON_ON_LOOP_BYTES with whitespace, pieces of 3 values so that every container is split: the
// value handed back in pieces must be JSON.parse's,
// own "__proto__" keys and key order included, or both must refuse it) and through the real
// RpcServer on loopback (every answer a well-formed JSON-RPC response or 204/413, never a 500
// or an error in the server's log).

import os from "node:os";
import path from "node:path";
import { mkdtemp, rm } from "node:fs/promises";
import { isDeepStrictEqual } from "node:util";
import { JSON_ON_LOOP_BYTES, JsonLimitError, JsonSyntaxError, parseJson } from "../chain/json-off.ts";
import { basicHeader, COOKIE_USER, RpcAuth } from "../host/rpc/auth.ts";
import { DEFAULT_RPC_LIMITS, parseJsonRpcBody, RPC_ERRORS, RpcError, RpcServer } from "../host/rpc/server.ts";
import type { EdgesTarget } from "./edges-driver.ts";
import { codeBlocks, postRaw } from "./edges-seeds.ts";

let server: RpcServer | undefined;
let port = 0;
let auth = "";
let dir = "";
const errors: string[] = [];
const CODES = new Set<number>(Object.values(RPC_ERRORS));

function checkResponse(r: unknown): void {
  const o = r as { jsonrpc?: unknown; result?: unknown; error?: { code?: unknown; message?: unknown } };
  if (o?.jsonrpc !== "2.0") throw new Error(`not a JSON-RPC 2.0 response: ${JSON.stringify(r)}`);
  if (o.error !== undefined && (!CODES.has(o.error.code as number) || typeof o.error.message !== "string")) throw new Error(`bad error object: ${JSON.stringify(o.error)}`);
}

/** parseJson through its worker (the input padded past JSON_ON_LOOP_BYTES) agrees with JSON.parse. */
async function sameAsJsonParse(input: Uint8Array): Promise<void> {
  let expected: unknown;
  let bad = false;
  try {
    expected = JSON.parse(Buffer.from(input).toString("utf8"));
  } catch {
    bad = true;
  }
  const padded = Buffer.concat([Buffer.from(input), Buffer.alloc(JSON_ON_LOOP_BYTES + 1 - Math.min(input.byteLength, JSON_ON_LOOP_BYTES), 0x20)]);
  const got = await parseJson(padded, { lane: "fuzz", maxValues: Number.MAX_SAFE_INTEGER, valuesName: "none", valuesPerPiece: 3, maxDepth: Number.MAX_SAFE_INTEGER, depthName: "none" }).then(
    (v) => ({ ok: true as const, v }),
    (err: Error) => {
      // A key longer than 16 × the piece's values is refused by name, not split.
      if (err instanceof JsonLimitError && /object key of more than 48 characters/.test(err.message)) return { ok: "key" as const };
      if (!(err instanceof JsonSyntaxError)) throw err;
      return { ok: false as const };
    },
  );
  if (got.ok === "key") return;
  if (bad !== !got.ok) throw new Error(`JSON.parse ${bad ? "refused" : "accepted"} it, the worker ${got.ok ? "accepted" : "refused"} it`);
  if (got.ok && (!isDeepStrictEqual(got.v, expected) || JSON.stringify(got.v) !== JSON.stringify(expected))) throw new Error("the worker's value differs from JSON.parse's");
}

const target: EdgesTarget = {
  dictionary: ['"jsonrpc"', '"2.0"', '"id"', '"method"', '"params"', '"echo"', '"__proto__"', "[", "]", "{", "}", ",", ":", "\\u0000", '"\\ud800"', "1e400", "-0"],
  async seeds() {
    const docs = (await codeBlocks("docs/operator-guide.md", "sh")).flatMap((b) => [...Buffer.from(b).toString().matchAll(/-d '(\{[^']*\})'/g)].map((m) => Buffer.from(m[1]!)));
    return [
      ...docs,
      Buffer.from('{"jsonrpc":"2.0","id":1,"method":"echo","params":{"a":[1,2,{"b":null}]}}'),
      Buffer.from('[{"jsonrpc":"2.0","id":"x","method":"echo","params":[1]},{"jsonrpc":"2.0","method":"note"},{"id":null,"method":"fail"}]'),
      Buffer.from('{"id":1,"method":"echo","params":[]}'),
    ];
  },
  async setup() {
    dir = await mkdtemp(path.join(os.tmpdir(), "modhost-fuzz-rpc-"));
    const a = RpcAuth.create({ cookieFile: path.join(dir, ".cookie") });
    auth = basicHeader({ user: COOKIE_USER, password: a.cookie });
    server = new RpcServer({
      bind: "127.0.0.1", port: 0, auth: a, metricsText: () => "",
      limits: { max_body_bytes: 64 * 1024 },
      log: { debug() {}, info() {}, warn() {}, error: (m: string) => errors.push(m) },
      dispatch: async (method, params) => {
        if (method === "echo") return params;
        if (method === "fail") throw new RpcError(RPC_ERRORS.moduleError, "failed as asked");
        throw new RpcError(RPC_ERRORS.methodNotFound, `no method ${method.slice(0, 50)}`);
      },
    });
    port = (await server.start()).port;
  },
  async teardown() {
    await server?.stop();
    await rm(dir, { recursive: true, force: true });
  },
  async run(input) {
    const parsed = await parseJsonRpcBody(Buffer.from(input), DEFAULT_RPC_LIMITS); // must not reject
    if (!parsed.ok && !CODES.has(parsed.code)) throw new Error(`unknown code ${parsed.code}`);
    await sameAsJsonParse(input);
    const r = await postRaw(port, auth, input);
    if (errors.length) throw new Error(`the server logged an error: ${errors.splice(0).join("; ")}`);
    if (r.status === 204) return;
    if (r.status !== 200 && r.status !== 413) throw new Error(`HTTP ${r.status}: ${r.text.slice(0, 200)}`);
    const body = JSON.parse(r.text) as unknown;
    if (Array.isArray(body)) body.forEach(checkResponse);
    else checkResponse(body);
  },
};
export default target;
