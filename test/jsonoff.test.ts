// JSON from parties the host does not control, parsed off its loop (#8, chain/json-off.ts): the
// worst body or answer each JSON reader can be sent, against the host's loop (this process:
// the longest turn in CPU time, helpers/turns.ts, and a canary timer's CPU between two of its
// ticks), the answer still right, and each limit named when passed. Every sender and server
// of the attack runs in its own process, so that making and writing the JSON costs this loop
// nothing. Before: the Core face parsed a 31 MiB body on the loop (one turn of 240 ms of CPU
// and more), the bitcoind client a 60 MB answer, the host's RPC server a body of
// max_body_bytes.

import test, { type ExecutionContext } from "ava";
import { execFile } from "node:child_process";
import os from "node:os";
import path from "node:path";
import { mkdtemp, rm } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { CoreFacade } from "../chain/bitcoind/facade.ts";
import { CoreRpc, CoreRpcError } from "../chain/bitcoind/rpc.ts";
import { rpcauthLine } from "../chain/bitcoind/rpcauth.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { JSON_ON_LOOP_BYTES, JSON_QUEUE, JsonLimitError, JsonSyntaxError, parseJson } from "../chain/json-off.ts";
import { basicHeader, COOKIE_USER, RpcAuth } from "../host/rpc/auth.ts";
import { RPC_ERRORS, RpcError, RpcServer } from "../host/rpc/server.ts";
import { spawnPortServer } from "./helpers/procs.ts";
import { threadCpuMs, watchTurns } from "./helpers/turns.ts";

const FIXTURES = fileURLToPath(new URL("./fixtures/json-off/", import.meta.url));
const run = promisify(execFile);
const MB = 1024 * 1024;
/**
 * The bound on one turn of the loop, and on the canary timer's CPU between two ticks, while a
 * worst input is read and parsed (ms of this thread's CPU). Parsed on the loop before, these
 * inputs cost one turn of 466 ms (the Core face) and 818 ms (the RPC server), and the bitcoind
 * client's ended the process out of heap (load 11-15). Now the longest turns are 25-145 ms at
 * load 13-26, most of it garbage collection of what the value itself holds (600,000 strings,
 * 8 million values, 60 MB of string), which no parser spares the loop; the canary's CPU between
 * two ticks spans several turns at such loads.
 */
const TURN_BOUND_MS = 200;

/** A timer every 10 ms: the most CPU of this thread between two of its ticks. */
function canary(): { stop(): { worst: number; ticks: number } } {
  let last = threadCpuMs();
  let worst = 0;
  let ticks = 0;
  const timer = setInterval(() => {
    const now = threadCpuMs();
    worst = Math.max(worst, now - last);
    last = now;
    ticks++;
  }, 10);
  return {
    stop() {
      clearInterval(timer);
      return { worst, ticks };
    },
  };
}

/** Runs `attack` under the turn watcher and the canary; asserts both bounds and logs them. */
async function onTheLoop<T>(t: ExecutionContext, what: string, attack: () => Promise<T>): Promise<T> {
  const turns = watchTurns();
  const timer = canary();
  const t0 = performance.now();
  try {
    return await attack();
  } finally {
    const { worst, ticks } = timer.stop();
    const longest = turns.reset();
    await turns.stop();
    t.log(`${what}: ${(performance.now() - t0).toFixed(0)} ms, longest turn ${longest.toFixed(1)} ms of CPU, canary ${ticks} ticks, at most ${worst.toFixed(1)} ms of CPU between two; load ${os.loadavg()[0]!.toFixed(1)}`);
    t.true(longest < TURN_BOUND_MS, `${what}: the longest turn of the loop took ${longest.toFixed(1)} ms of CPU`);
    t.true(worst < TURN_BOUND_MS, `${what}: the canary saw ${worst.toFixed(1)} ms of CPU between two ticks`);
  }
}

/** Posts a body made by fixtures/json-off/post.cjs in its own process: "STATUS ANSWER". */
async function post(url: string, authorization: string, shape: string, bytes: number, method: string): Promise<{ status: number; answer: string }> {
  const { stdout } = await run(process.execPath, [path.join(FIXTURES, "post.cjs"), url, authorization, shape, String(bytes), method], { maxBuffer: 64 * MB });
  const line = stdout.trim();
  const space = line.indexOf(" ");
  return { status: Number(line.slice(0, space)), answer: line.slice(space + 1) };
}

const USER = "jsonoff";
const PASSWORD = "a long enough password";
const AUTH = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString("base64")}`;

test.serial("the Core face: a 31 MiB body of one string, and one of 600,000 short strings, cost the loop no turn of 200 ms of CPU and the canary timer keeps its pace; getblockcount is still answered with the height", async (t) => {
  t.timeout(180_000);
  const chain = await EmbeddedChain.create();
  await chain.mine(3);
  const facade = new CoreFacade({ backend: chain, rpcauth: [rpcauthLine(USER, PASSWORD)] });
  await facade.start();
  t.teardown(() => facade.stop());
  for (const [shape, bytes] of [["string", 31 * MB], ["strings", 31 * MB]] as const) {
    const r = await onTheLoop(t, `Core face, ${shape} of ${bytes} bytes`, () => post(facade.rpcUrl, AUTH, shape, bytes, "getblockcount"));
    t.is(r.status, 200, r.answer.slice(0, 200));
    t.deepEqual(JSON.parse(r.answer), { result: await chain.getBlockHeight(), error: null, id: 1 });
  }
});

test.serial("the bitcoind client: a 60 MB answer of one string costs the loop no turn of 200 ms of CPU and is read whole; 20 MB of txids are read as 300,000-odd strings; 60 MB of 0s is refused naming RPC_CLIENT_MAX_VALUES, the canary keeping its pace throughout", async (t) => {
  t.timeout(300_000);
  const ask = async (shape: string, bytes: number) => {
    const port = await spawnPortServer(t, "answer server", path.join(FIXTURES, "answer-server.cjs"), [shape, String(bytes)]);
    const rpc = new CoreRpc({ url: `http://127.0.0.1:${port}/`, auth: { user: "u", password: "p" }, timeoutMs: 120_000 });
    return rpc.call<unknown>("getrawmempool");
  };
  const one = await onTheLoop(t, "bitcoind client, one string of 60 MB", () => ask("string", 60_000_000));
  t.is(typeof one, "string");
  t.is((one as string).length, 60_000_000 - '{"result":,"error":null,"id":1}'.length - 2);
  t.is((one as string).slice(0, 4), "aaaa");
  const ids = (await onTheLoop(t, "bitcoind client, 20 MB of txids", () => ask("txids", 20_000_000))) as string[];
  t.is(ids.length, Math.floor((20_000_000 - 31) / 67));
  t.is(ids[ids.length - 1], (ids.length - 1).toString(16).padStart(64, "0"));
  const err = await onTheLoop(t, "bitcoind client, 60 MB of 0s", () => t.throwsAsync(ask("zeros", 60_000_000)));
  t.true(err instanceof CoreRpcError, String(err));
  t.regex(err!.message, /more than 4000000 values \(RPC_CLIENT_MAX_VALUES\)/);
  t.log(`60 MB of 0s refused: ${err!.message}`);
});

test.serial("the host's RPC server with max_body_bytes raised to 16 MiB: a body of 8 million 0s is refused naming RPC_BODY_MAX_VALUES and one of 900,000 is answered (method not found), neither costing the loop a turn of 200 ms of CPU, the canary keeping its pace", async (t) => {
  t.timeout(180_000);
  const dir = await mkdtemp(path.join(os.tmpdir(), "modhost-jsonoff-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const auth = RpcAuth.create({ cookieFile: path.join(dir, ".cookie") });
  const server = new RpcServer({
    bind: "127.0.0.1", port: 0, auth, metricsText: () => "",
    limits: { max_body_bytes: 16 * MB },
    log: { debug() {}, info() {}, warn() {}, error() {} },
    dispatch: async (method) => {
      throw new RpcError(RPC_ERRORS.methodNotFound, `no method ${method}`);
    },
  });
  const port = (await server.start()).port;
  t.teardown(() => server.stop());
  const authorization = basicHeader({ user: COOKIE_USER, password: auth.cookie });
  const big = await onTheLoop(t, "RPC server, 8 million 0s", () => post(`http://127.0.0.1:${port}/`, authorization, "zeros", 16 * MB, "nothing"));
  t.is(big.status, 200, big.answer.slice(0, 200));
  const refused = JSON.parse(big.answer) as { error?: { code: number; message: string } };
  t.is(refused.error?.code, RPC_ERRORS.invalidRequest, big.answer.slice(0, 200));
  t.regex(refused.error!.message, /more than 1000000 values \(RPC_BODY_MAX_VALUES/);
  const r = await onTheLoop(t, "RPC server, 900,000 0s", () => post(`http://127.0.0.1:${port}/`, authorization, "zeros", 1_800_100, "nothing"));
  t.is(r.status, 200, r.answer.slice(0, 200));
  const answer = JSON.parse(r.answer) as { id: number; error?: { code: number } };
  t.is(answer.id, 1);
  t.is(answer.error?.code, RPC_ERRORS.methodNotFound, r.answer.slice(0, 200));
});

test("parseJson hands back what JSON.parse makes, through its worker and in pieces: own __proto__ keys (no prototype set), key order, lone surrogates, long strings, nested large containers", async (t) => {
  const texts = [
    `{"__proto__":{"polluted":1},"2":1,"1":[${Array(30_000).fill('{"__proto__":[1]}').join(",")}],"s":"${"y".repeat(300_000)}\\ud800é€${"z".repeat(200_000)}"}`,
    JSON.stringify([[Array(50_000).fill(1), Array(50_000).fill("x")], { k: Array(40_000).fill({ a: "b" }) }, "é".repeat(400_000)]),
    `"${"q".repeat(JSON_ON_LOOP_BYTES * 8)}"`,
  ];
  for (const text of texts) {
    t.true(text.length > JSON_ON_LOOP_BYTES);
    for (const valuesPerPiece of [undefined, 3]) {
      const value = await parseJson(Buffer.from(text), { lane: "fuzz", maxValues: 10_000_000, valuesName: "test", valuesPerPiece, maxDepth: 1e9, depthName: "test" });
      t.deepEqual(value, JSON.parse(text));
      t.is(JSON.stringify(value), JSON.stringify(JSON.parse(text)));
    }
  }
  t.is(({} as { polluted?: number }).polluted, undefined, "no prototype was polluted");
});

test("parseJson leaves the caller's pieces as they were: pieces that are slices of one ArrayBuffer holding other bytes too (as a socket's reads are) keep their buffer, length and bytes after a parse in the worker", async (t) => {
  const text = JSON.stringify({ a: "x".repeat(JSON_ON_LOOP_BYTES * 3), b: Array(20_000).fill(7) });
  const body = Buffer.from(text);
  // One slab: 16 bytes of the caller's own before, the text in three pieces, 16 bytes after.
  const slab = new Uint8Array(body.length + 32);
  slab.fill(0xa5, 0, 16);
  slab.set(body, 16);
  slab.fill(0x5a, 16 + body.length);
  const cut1 = 16 + Math.floor(body.length / 3);
  const cut2 = 16 + Math.floor((2 * body.length) / 3);
  const pieces = [slab.subarray(16, cut1), slab.subarray(cut1, cut2), slab.subarray(cut2, 16 + body.length)];
  const before = Buffer.from(slab);
  const value = await parseJson(pieces, { lane: "fuzz", maxValues: 1_000_000, valuesName: "test", maxDepth: 1e9, depthName: "test" });
  t.deepEqual(value, JSON.parse(text));
  t.is(slab.buffer.byteLength, body.length + 32, "the slab's buffer is not detached (transferred away)");
  t.deepEqual(pieces.map((p) => p.byteLength), [cut1 - 16, cut2 - cut1, 16 + body.length - cut2]);
  t.true(Buffer.from(slab).equals(before), "every byte of the slab, the caller's own included, is as it was");
});

test("parseJson refuses, naming the limit: more values than the caller allows (on the loop and in the worker), and what is not JSON", async (t) => {
  const big = Buffer.from(JSON.stringify(Array(100_000).fill(0)));
  const e1 = await t.throwsAsync(parseJson(big, { lane: "fuzz", maxValues: 50_000, valuesName: "SOME_LIMIT", maxDepth: 1e9, depthName: "test" }));
  t.true(e1 instanceof JsonLimitError);
  t.regex(e1!.message, /more than 50000 values \(SOME_LIMIT\)/);
  const e2 = await t.throwsAsync(parseJson(Buffer.from("[1,2,3]"), { lane: "fuzz", maxValues: 2, valuesName: "SOME_LIMIT", maxDepth: 1e9, depthName: "test" }));
  t.true(e2 instanceof JsonLimitError);
  t.regex(e2!.message, /more than 2 values \(SOME_LIMIT\)/);
  const e3 = await t.throwsAsync(parseJson(Buffer.from(`[${"1,".repeat(100_000)}`), { lane: "fuzz", maxValues: 1e9, valuesName: "x", maxDepth: 1e9, depthName: "test" }));
  t.true(e3 instanceof JsonSyntaxError, String(e3));
});

test("parseJson's lanes have a worker and a queue each: an RPC client that fills its lane's JSON_QUEUE neither refuses nor delays the bitcoind client's large answers", async (t) => {
  // Each text is past JSON_ON_LOOP_BYTES, so each goes to its lane's worker; the first of the
  // RPC server's lane is being parsed, JSON_QUEUE wait behind it, and one more is refused.
  const body = Buffer.from(JSON.stringify(Array(40_000).fill("xyz")));
  t.true(body.length > JSON_ON_LOOP_BYTES);
  const flood = Array.from({ length: JSON_QUEUE + 2 }, () => parseJson(body, { lane: "rpc-server", maxValues: 1e6, valuesName: "test", maxDepth: 1e9, depthName: "test" }).then(() => "parsed", (err: Error) => err.message));
  const answer = Buffer.from(JSON.stringify({ result: Array(20_000).fill("ab".repeat(16)), error: null, id: 1 }));
  const parsed = (await parseJson(answer, { lane: "bitcoind-client", maxValues: 1e6, valuesName: "test", maxDepth: 1e9, depthName: "test" })) as { result: string[] };
  t.is(parsed.result.length, 20_000);
  // When the client's answer was ready, the RPC lane's flood was not yet through (its own
  // queue) and its last text was refused by that lane's bound, not the client's.
  const outcomes = await Promise.all(flood);
  t.is(outcomes.filter((o) => o === "parsed").length, JSON_QUEUE + 1);
  t.regex(outcomes.at(-1)!, /already waiting to be parsed \(JSON_QUEUE\)/);
});
