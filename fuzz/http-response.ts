// Fuzz target: the answer parser of http_request (capabilities/http.ts). A server on loopback
// sends the mutated bytes as the answer and closes; httpExchange must resolve with an answer
// or reject with a CapabilityError, within its deadline.

import net from "node:net";
import { httpExchange, MAX_RESPONSE_BODY_BYTES, parseHttpUrl, type HttpTarget } from "../capabilities/http.ts";
import { CapabilityError } from "../capabilities/types.ts";
import type { EdgesTarget } from "./edges-driver.ts";

let server: net.Server | undefined;
let answer: Uint8Array = new Uint8Array();
let url: HttpTarget;

const target: EdgesTarget = {
  dictionary: ["\r\n", "\r\n\r\n", "HTTP/1.1 ", "HTTP/1.0 ", "200 OK", "100 Continue\r\n\r\n", "Content-Length: ", "Transfer-Encoding: chunked", "0\r\n\r\n", "ffffffff\r\n", "Connection: upgrade", "Upgrade: h2c", ": ", "\n"],
  maxInputBytes: 128 * 1024,
  seeds() {
    return [
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n",
      "HTTP/1.1 302 Found\r\nLocation: http://example.com/\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
      "HTTP/1.0 200 OK\r\n\r\nbody until close",
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    ].map((s) => Buffer.from(s));
  },
  async setup() {
    server = net.createServer((s) => {
      s.on("error", () => undefined);
      s.once("data", () => s.end(answer));
    });
    await new Promise<void>((r) => server!.listen(0, "127.0.0.1", r));
    url = parseHttpUrl(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}/fuzz`);
  },
  async teardown() {
    await new Promise((r) => server?.close(r));
  },
  async run(input) {
    answer = input;
    try {
      const r = await httpExchange("fuzz", { target: url, method: "GET", headers: {}, body: undefined, timeoutMs: 2000 });
      if (r.body.length > MAX_RESPONSE_BODY_BYTES) throw new Error(`a body of ${r.body.length} bytes was accepted`);
      if (!Number.isInteger(r.status)) throw new Error(`status ${r.status}`);
    } catch (err) {
      if (!(err instanceof CapabilityError)) throw err;
    }
  },
};
export default target;
