// Fuzz target: JSON-RPC request bodies to the Core facade ([chain] core_rpc_bind: Bitcoin
// Core's RPC served over the embedded chain, chain/bitcoind/facade.ts), through the real server
// on loopback over a chain with a few blocks and mempool transactions, on disk as `modhost run`
// keeps it (its reads go through the thread pool; the client half-closes after each request). Every answer must be
// Core's: HTTP 200, 404 or 500 with a JSON-RPC 1.0 body ({result, error, id}; error null or
// {code: number, message: string}; a batch an array of them), or 413 for a body over a limit;
// never an exception escaping the server (an unhandled rejection fails the worker).

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { CoreFacade } from "../chain/bitcoind/facade.ts";
import { rpcauthLine } from "../chain/bitcoind/rpcauth.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import type { EdgesTarget } from "./edges-driver.ts";
import { postRaw } from "./edges-seeds.ts";

let facade: CoreFacade | undefined;
let chainDir: string | undefined;
let facadeChain: EmbeddedChain | undefined;
let port = 0;
const AUTH = `Basic ${Buffer.from("fuzz:a long enough password").toString("base64")}`;
const STATUS = new Set([200, 404, 500, 413]);

function checkAnswer(a: unknown): void {
  const o = a as { result?: unknown; error?: { code?: unknown; message?: unknown } | null; id?: unknown };
  if (typeof o !== "object" || o === null || !("result" in o) || !("error" in o) || !("id" in o)) throw new Error(`not a JSON-RPC 1.0 answer: ${JSON.stringify(a)?.slice(0, 200)}`);
  if (o.error !== null && (typeof o.error?.code !== "number" || typeof o.error.message !== "string")) throw new Error(`bad error object: ${JSON.stringify(o.error)}`);
}

const target: EdgesTarget = {
  dictionary: ['"method"', '"params"', '"id"', '"getblockcount"', '"getblockhash"', '"getblock"', '"getblockheader"', '"getrawtransaction"', '"getrawmempool"', '"getblocktemplate"', '"submitblock"', '"sendrawtransaction"', '"getmempoolentry"', "true", "0", "2", '"rules"', '"segwit"', "[", "]", "{", "}", ",", "null", '"__proto__"', "1e400", "-1"],
  async seeds() {
    const chain = await EmbeddedChain.create();
    const [hash] = await chain.mine(1);
    return [
      Buffer.from('{"method":"getblockcount","params":[],"id":1}'),
      Buffer.from(`{"jsonrpc":"2.0","method":"getblock","params":["${hash}",2],"id":"a"}`),
      Buffer.from(`[{"method":"getblockhash","params":[0],"id":1},{"method":"getblockheader","params":["${hash}",true],"id":2},{"method":"getrawmempool","params":[true],"id":3}]`),
      Buffer.from('{"method":"getblocktemplate","params":[{"rules":["segwit"]}],"id":null}'),
      Buffer.from('{"method":"submitblock","params":["00"],"id":4}'),
      Buffer.from('{"method":"getrawtransaction","params":["00",true],"id":5}'),
    ];
  },
  async setup() {
    chainDir = await mkdtemp(path.join(tmpdir(), "modhost-fuzz-facade-"));
    const chain = (facadeChain = await EmbeddedChain.create({ dataDir: chainDir }));
    await chain.mine(3);
    facade = new CoreFacade({ backend: chain, rpcauth: [rpcauthLine("fuzz", "a long enough password")], maxBodyBytes: 256 * 1024, maxBatch: 100, mine: (n) => chain.mine(Math.min(n, 2)) });
    await facade.start();
    port = Number(new URL(facade.rpcUrl).port);
  },
  async teardown() {
    await facade?.stop();
    await facadeChain?.close();
    if (chainDir) await rm(chainDir, { recursive: true, force: true });
  },
  async run(input) {
    const r = await postRaw(port, AUTH, input);
    if (!STATUS.has(r.status)) throw new Error(`HTTP ${r.status}: ${r.text.slice(0, 200)}`);
    if (r.status === 413 && r.text === "") return;
    const body = JSON.parse(r.text) as unknown;
    if (Array.isArray(body)) body.forEach(checkAnswer);
    else checkAnswer(body);
  },
};
export default target;
