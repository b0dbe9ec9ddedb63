// Fuzz target: what modhost reads of a Bitcoin Core node it is attached to ([chain] backend =
// "bitcoind"), a remote party. A server on loopback answers two requests per input and closes:
// first with the mutated bytes as the whole HTTP response, then with them as the body of a
// well-formed one (so that most inputs reach the JSON and the JSON-RPC envelope); the Core RPC client (chain/bitcoind/rpc.ts: the paced HTTP
// reader, the JSON parse off the loop, the JSON-RPC envelope) must resolve with a result or
// reject with one of its documented errors (each with a message) within its deadline, and hold
// no more of an answer than its maxResponseBytes.

import net from "node:net";
import { BackendUnavailableError } from "../chain/backend.ts";
import { CoreRpc, CoreRpcError, CoreRpcRefused } from "../chain/bitcoind/rpc.ts";
import type { EdgesTarget } from "./edges-driver.ts";

let server: net.Server | undefined;
let answers: Uint8Array[] = [];
let rpc: CoreRpc;
const MAX_ANSWER_BYTES = 1024 * 1024;

const http = (body: string, status = "200 OK") => `HTTP/1.1 ${status}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
/** The genesis block of regtest, as `getblock HASH 0` answers it. */
const GENESIS = "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4adae5494dffff7f20020000000101000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d04ffff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e206272696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2052a01000000434104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000";

const target: EdgesTarget = {
  dictionary: ["\r\n", "\r\n\r\n", "HTTP/1.1 ", "200 OK", "500 Internal Server Error", "401 Unauthorized", "503 Service Unavailable", "Content-Length: ", "Transfer-Encoding: chunked", "0\r\n\r\n", "ffffffff\r\n", '"result":', '"error":', '{"code":-28,"message":"Loading"}', '{"code":-32601,"message":"x"}', "null", "[[[[[[[[", "1e999999", "\"\\u0000\"", ","],
  maxInputBytes: 128 * 1024,
  seeds() {
    return [
      http(`{"result":"${GENESIS}","error":null,"id":1}`),
      http('{"result":{"chain":"regtest","blocks":0,"headers":0,"bestblockhash":"0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206","verificationprogress":1,"initialblockdownload":false},"error":null,"id":1}'),
      http('{"result":{"version":536870912,"previousblockhash":"0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206","transactions":[],"coinbasevalue":5000000000,"target":"7fffff0000000000000000000000000000000000000000000000000000000000","curtime":1700000000,"bits":"207fffff","height":1,"default_witness_commitment":"6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9"},"error":null,"id":1}'),
      http('{"result":null,"error":{"code":-28,"message":"Loading block index..."},"id":1}', "500 Internal Server Error"),
      http('{"result":null,"error":{"code":-5,"message":"Block not found"},"id":1}', "500 Internal Server Error"),
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"result\":12,\"er\r\nf\r\nror\":null,\"id\":1}\r\n0\r\n\r\n",
      "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"jsonrpc\"\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.0 200 OK\r\n\r\n{\"result\":[\"a\",\"b\"],\"error\":null,\"id\":1}",
    ].map((s) => Buffer.from(s));
  },
  async setup() {
    server = net.createServer((s) => {
      s.on("error", () => undefined);
      s.once("data", () => s.end(answers.shift() ?? Buffer.alloc(0)));
    });
    await new Promise<void>((r) => server!.listen(0, "127.0.0.1", r));
    const port = (server.address() as net.AddressInfo).port;
    rpc = new CoreRpc({ url: `http://127.0.0.1:${port}/`, auth: { user: "fuzz", password: "fuzz" }, timeoutMs: 3000, maxResponseBytes: MAX_ANSWER_BYTES });
  },
  async teardown() {
    await new Promise((r) => server?.close(r));
  },
  async run(input) {
    // The body of a seed's whole response, mutated: after its head when it has one.
    const head = Buffer.from(input).indexOf("\r\n\r\n");
    const body = head >= 0 ? input.subarray(head + 4) : input;
    answers = [input, Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`), body])];
    for (let i = 0; i < 2; i++) {
      try {
        const result = await rpc.call("getblock", ["00", 0]);
        const size = JSON.stringify(result ?? null).length;
        if (size > MAX_ANSWER_BYTES) throw new Error(`a result of ${size} characters of JSON from an answer bounded to ${MAX_ANSWER_BYTES} bytes`);
      } catch (err) {
        if (err instanceof CoreRpcError || err instanceof CoreRpcRefused || err instanceof BackendUnavailableError) {
          if (!err.message) throw new Error(`${err.name} without a message`);
          continue;
        }
        throw err;
      }
    }
  },
};
export default target;
