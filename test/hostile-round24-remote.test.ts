// Hostile probes of round 24 (issue #8): remote parties at the host's network faces.
//   share     64 JSON-RPC clients (a child process) each pipelining 16 batches of 1,000 calls of
//             a host method (list) or a module's method that answers at once, for 8 s, while
//             the canary runs: the loop's turns, the host's heap, the canary.

import test from "ava";
import { spawn } from "node:child_process";
import { buildModulesDir, GOOD_GRANTS, startHost, tempDir, type TestHost } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";
import { cookieAuth } from "./helpers/rpc.ts";
import { watchHost } from "./helpers/host-watch.ts";

/**
 * A child process keeping `conns` raw connections to the host's RPC server, each with `pipelined`
 * POSTs of `body` in progress (a new one sent as each answer arrives), for `ms`; then it prints
 * the answers' statuses counted. A child, so that the host's loop (this process's) does not
 * run the clients' work too.
 */
const FLOODER = `
const net = require("node:net");
const [port, auth, conns, pipelined, ms] = process.argv.slice(1);
const body = require("node:fs").readFileSync(0, "utf8");
const request = Buffer.from("POST / HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: " + auth + "\\r\\nContent-Type: application/json\\r\\nContent-Length: " + Buffer.byteLength(body) + "\\r\\n\\r\\n" + body);
const statuses = {};
let running = true;
const sockets = [];
for (let i = 0; i < Number(conns); i++) {
  const s = net.connect(Number(port), "127.0.0.1");
  sockets.push(s);
  let buf = Buffer.alloc(0);
  s.on("error", () => {});
  s.on("connect", () => { for (let j = 0; j < Number(pipelined); j++) s.write(request); });
  s.on("data", (d) => {
    buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
    for (;;) {
      const end = buf.indexOf("\\r\\n\\r\\n");
      if (end < 0) return;
      const head = buf.subarray(0, end).toString("latin1");
      const length = Number(/content-length: (\\d+)/i.exec(head)?.[1] ?? 0);
      if (buf.length < end + 4 + length) return;
      buf = buf.subarray(end + 4 + length);
      const status = head.slice(9, 12);
      if (status === "102") continue;
      statuses[status] = (statuses[status] ?? 0) + 1;
      if (running) s.write(request);
    }
  });
}
setTimeout(() => {
  running = false;
  for (const s of sockets) s.destroy();
  process.stdout.write(JSON.stringify(statuses));
}, Number(ms));
`;

function flood(h: TestHost, auth: string, conns: number, pipelined: number, body: string, ms: number): Promise<Record<string, number>> {
  const a = h.host.rpcServer!.address!;
  const child = spawn(process.execPath, ["-e", FLOODER, String(a.port), auth, String(conns), String(pipelined), String(ms)], { stdio: ["pipe", "pipe", "inherit"] });
  child.stdin.end(body);
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d));
  return new Promise((resolve) => child.on("exit", () => resolve(out === "" ? {} : JSON.parse(out))));
}

const PING_CAPS = ["register_rpc_endpoint"];
const PING = inlineModule("r24-ping", PING_CAPS, `
  await ctx.rpc.register("ping", "answers at once", () => "pong");
  ctx.log.info("ready");
`);

for (const [what, method] of [["host method list", "list"], ["module method r24-ping.ping", "r24-ping.ping"]] as const) {
  test.serial(`64 JSON-RPC clients each pipelining 16 batches of 1000 ${what} calls: no turn of the host's loop takes 250 ms of its CPU, its heap grows under 96 MB and the canary is served (before: 1,024 batches each took a turn of BATCH_TURN_MS of its own, back to back)`, async (t) => {
    t.timeout(120_000);
    const dir = await tempDir(t);
    await buildModulesDir(dir, ["good"], { "r24-ping": PING });
    const h = await startHost(t, { dir, modules: [], grants: { good: GOOD_GRANTS, "r24-ping": PING_CAPS }, configure: (c) => { c.rpc.max_connections = 80; c.rpc.max_connections_per_address = 80; } });
    await h.waitForLog(/^ready$/, { source: "r24-ping", timeoutMs: 60_000 });
    await h.waitForState("good", "running", 60_000);
    const auth = await cookieAuth(h);
    const body = JSON.stringify(Array.from({ length: 1000 }, (_, i) => ({ jsonrpc: "2.0", id: i, method, params: [] })));
    const watch = watchHost(t, h);
    const canary = watch.canaryLoop(500, 4);
    const statuses = await flood(h, auth, 64, 16, body, 8000);
    await canary.stop();
    t.log(`answers by status: ${JSON.stringify(statuses)}`);
    await watch.finish(t, 64);
    watch.assertCanary(t);
  });
}
