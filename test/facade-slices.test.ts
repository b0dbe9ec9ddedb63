// The Core facade's answers that carry a raw serialisation (getblock at verbosity 0,
// getrawtransaction not verbose) are written in slices of hex, a turn of the loop between two
// and waiting for the client to take them: before, a 4 MB block became one 8 MB hex string and
// one JSON.stringify of it on the host's loop. A client that reads the answer of a 4 MB block
// slowly does not hold anyone else up: another request is answered meanwhile, and the slow
// answer, once read, is the block's hex with Core's envelope and a correct content-length.

import test, { type ExecutionContext } from "ava";
import http from "node:http";
import { randomBytes } from "node:crypto";
import { CoreFacade, FACADE_ANSWER_BYTES_HELD, FACADE_BODY_BYTES_IN_PROGRESS, MAX_ID_JSON_CHARS } from "../chain/bitcoind/facade.ts";
import type { ChainBackend } from "../chain/backend.ts";
import { rpcauthLine } from "../chain/bitcoind/rpcauth.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { fillMempool } from "./helpers/big-block.ts";

const USER = "u";
const PASSWORD = "a long enough password";
const HASH = "11".repeat(32);
const TXID = "22".repeat(32);

function request(url: string, body: unknown): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: "POST", agent: false, auth: `${USER}:${PASSWORD}`, headers: { "content-type": "application/json" } }, resolve);
    req.on("error", reject);
    req.end(JSON.stringify(body));
  });
}

async function readAll(res: http.IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** The largest piece the server hands to a response at once (write or end), while the test runs. */
function spyWrites(t: ExecutionContext): { largest: number } {
  const seen = { largest: 0 };
  const proto = http.ServerResponse.prototype as unknown as Record<"write" | "end", (...a: unknown[]) => unknown>;
  const { write, end } = proto;
  const size = (c: unknown) => (typeof c === "string" ? c.length : c instanceof Uint8Array ? c.byteLength : 0);
  proto.write = function (this: unknown, ...a: unknown[]) {
    seen.largest = Math.max(seen.largest, size(a[0]));
    return write.apply(this, a);
  };
  proto.end = function (this: unknown, ...a: unknown[]) {
    seen.largest = Math.max(seen.largest, size(a[0]));
    return end.apply(this, a);
  };
  t.teardown(() => Object.assign(proto, { write, end }));
  return seen;
}

test.serial("getblock verbosity 0 of a 4 MB block and getrawtransaction of a 1 MB transaction are written in slices: another request is answered while a client has not read them, and they read back as the hex", async (t) => {
  const raw = randomBytes(4_000_000);
  const txRaw = randomBytes(1_000_000);
  // A backend with one big block and one big transaction, and a tip.
  const backend = {
    getBlock: async (h: string) => (h === HASH ? { hash: HASH, hex: raw, transactions: [], header: {} } : null),
    getTransaction: async (id: string) => (id === TXID ? { txid: TXID, hex: txRaw } : null),
    getChainTip: async () => HASH,
    subscribe: () => () => {},
  } as unknown as ChainBackend;
  const facade = new CoreFacade({ backend, rpcauth: [rpcauthLine(USER, PASSWORD)] });
  await facade.start();
  t.teardown(() => facade.stop());
  const spy = spyWrites(t);

  for (const [method, params, bytes] of [["getblock", [HASH, 0], raw], ["getrawtransaction", [TXID, false], txRaw]] as const) {
    const slow = await request(facade.rpcUrl, { method, params, id: 7 });
    slow.pause(); // the client takes nothing more for now: the server's writes wait for it
    const length = Number(slow.headers["content-length"]);
    const quick = await request(facade.rpcUrl, { method: "getbestblockhash", params: [], id: 8 });
    const answer = JSON.parse((await readAll(quick)).toString()) as { result: string; id: number };
    t.deepEqual(answer, { result: HASH, error: null, id: 8 }, `answered while the ${method} answer waited`);
    slow.resume();
    const text = (await readAll(slow)).toString();
    t.is(Buffer.byteLength(text), length, "content-length is the body's length");
    const body = JSON.parse(text) as { result: string; error: null; id: number };
    t.is(body.id, 7);
    t.is(body.error, null);
    t.true(body.result === bytes.toString("hex"), `${method}: the result is the raw bytes' hex`);
    t.true(spy.largest <= 512 * 1024, `no piece of more than 512 KiB was written at once (largest ${spy.largest})`);
  }

  // In a batch too, beside an ordinary answer.
  const batch = JSON.parse((await readAll(await request(facade.rpcUrl, [{ method: "getbestblockhash", params: [], id: 1 }, { method: "getrawtransaction", params: [TXID], id: 2 }]))).toString()) as Array<{ result: string; id: number }>;
  t.is(batch.length, 2);
  t.is(batch[0]!.result, HASH);
  t.true(batch[1]!.result === txRaw.toString("hex") && batch[1]!.id === 2);
});

test.serial("answers that grow with the mempool or a block (getrawmempool both forms, getblocktemplate, getblock at verbosity 1 and 2) of 3000 transactions are made and written in pieces of at most ~256 KiB, and read back whole", async (t) => {
  const chain = await EmbeddedChain.create();
  const txids = await fillMempool(chain, 3000);
  const facade = new CoreFacade({ backend: chain, rpcauth: [rpcauthLine(USER, PASSWORD)] });
  await facade.start();
  t.teardown(() => facade.stop());
  const spy = spyWrites(t);
  const ask = async (method: string, params: unknown[]) => {
    spy.largest = 0;
    const res = await request(facade.rpcUrl, { method, params, id: 1 });
    const text = (await readAll(res)).toString();
    t.is(Buffer.byteLength(text), Number(res.headers["content-length"]), `${method}: content-length`);
    t.true(spy.largest <= 512 * 1024, `${method}: no piece over 512 KiB written at once (largest ${spy.largest})`);
    const body = JSON.parse(text) as { result: unknown; error: null; id: number };
    t.is(body.error, null);
    return body.result;
  };
  t.deepEqual(new Set(await ask("getrawmempool", []) as string[]), new Set(txids));
  const verbose = (await ask("getrawmempool", [true])) as Record<string, { vsize: number }>;
  t.is(Object.keys(verbose).length, 3000);
  t.true(txids.every((id) => verbose[id]!.vsize > 0));
  const tpl = (await ask("getblocktemplate", [{ rules: ["segwit"] }])) as { transactions: Array<{ txid: string; data: string }>; height: number };
  t.is(tpl.transactions.length, 3000);
  t.is(tpl.height, (await chain.getBlockHeight()) + 1);
  const [hash] = await chain.mine(1);
  const v1 = (await ask("getblock", [hash, 1])) as { tx: string[]; hash: string };
  t.is(v1.hash, hash!);
  t.is(v1.tx.length, 3001);
  const v2 = (await ask("getblock", [hash, 2])) as { tx: Array<{ txid: string; hex: string }> };
  t.deepEqual(v2.tx.map((x) => x.txid), v1.tx);
  const block = (await chain.getBlock(hash!))!;
  t.is(v2.tx[5]!.hex, Buffer.from(block.transactions[5]!.hex as Uint8Array).toString("hex"));
});

test.serial("a batch is held to maxBatch calls and a body to 64 JSON values per call of it, both refused (413, naming the limit) before anything runs; a batch of the default 10,000 is answered whole in slices that give the loop turns", async (t) => {
  const chain = await EmbeddedChain.create();
  const facade = new CoreFacade({ backend: chain, rpcauth: [rpcauthLine(USER, PASSWORD)], maxBatch: 200 });
  await facade.start();
  t.teardown(() => facade.stop());
  const calls = (n: number) => Array.from({ length: n }, (_, i) => ({ method: "getblockcount", params: [], id: i }));
  const over = await request(facade.rpcUrl, calls(201));
  t.is(over.statusCode, 413);
  t.regex((JSON.parse((await readAll(over)).toString()) as { error: { message: string } }).error.message, /batch of 201 calls is over the limit of 200/);
  // 32 MB of tiny values was parsed whole before (~0.5 s of the loop for 27 MB); now counted as it comes.
  const values = await request(facade.rpcUrl, [{ method: "getblockcount", params: new Array(700_000).fill(0), id: 1 }]);
  t.is(values.statusCode, 413);
  t.regex((JSON.parse((await readAll(values)).toString()) as { error: { message: string } }).error.message, /more than 12800 JSON values/);
  // At the limit: answered whole, and it gave the loop turns (a timer set before it fires during it).
  let ticks = 0;
  const timer = setInterval(() => ticks++, 0);
  const atLimit = new CoreFacade({ backend: chain, rpcauth: [rpcauthLine(USER, PASSWORD)] });
  await atLimit.start();
  t.teardown(() => atLimit.stop());
  const res = await request(atLimit.rpcUrl, calls(10_000));
  const answers = JSON.parse((await readAll(res)).toString()) as Array<{ result: number; id: number }>;
  clearInterval(timer);
  t.is(res.statusCode, 200);
  t.is(answers.length, 10_000);
  const height = await chain.getBlockHeight();
  t.true(answers.every((a, i) => a.id === i && a.result === height));
  t.true(ticks > 1, `the loop turned during the batch (${ticks} timer ticks)`);
});

test.serial("a call's id of more than MAX_ID_JSON_CHARS of JSON (a 16 MiB string, a wide array) is not echoed: answered -32600 naming the limit, id null (HTTP 400 alone, in place in a batch); a batch of 10,000 answers echoing ids of 1,000 escaped characters (31 MB) is written in slices; a method name of 16 MB is 'Method not found' without a lookup", async (t) => {
  const backend = { getChainTip: async () => HASH, subscribe: () => () => {} } as unknown as ChainBackend;
  const facade = new CoreFacade({ backend, rpcauth: [rpcauthLine(USER, PASSWORD)] });
  await facade.start();
  t.teardown(() => facade.stop());
  const refusal = { result: null, error: { code: -32600, message: `the call's id is more than ${MAX_ID_JSON_CHARS} characters of JSON (MAX_ID_JSON_CHARS); send a shorter id` }, id: null };

  const huge = await request(facade.rpcUrl, { method: "getbestblockhash", params: [], id: "x".repeat(16 * 1024 * 1024) });
  t.is(huge.statusCode, 400);
  t.deepEqual(JSON.parse((await readAll(huge)).toString()), refusal);

  const longName = await request(facade.rpcUrl, { method: "getbestblockhash".repeat(1_000_000), params: [], id: 1 });
  t.is(longName.statusCode, 404);
  t.deepEqual(JSON.parse((await readAll(longName)).toString()), { result: null, error: { code: -32601, message: "Method not found" }, id: 1 }, "a 16 MB method name is not found, as Core answers any unknown name");

  const edge = "e".repeat(MAX_ID_JSON_CHARS - 2); // its JSON, with the quotes: exactly the limit
  const wide = Array.from({ length: 2000 }, () => 0);
  const batch = await request(facade.rpcUrl, [
    { method: "getbestblockhash", params: [], id: wide },
    { method: "getbestblockhash", params: [], id: edge },
    { method: "getbestblockhash", params: [], id: { nested: ["x".repeat(MAX_ID_JSON_CHARS)] } },
  ]);
  t.is(batch.statusCode, 200);
  t.deepEqual(JSON.parse((await readAll(batch)).toString()), [refusal, { result: HASH, error: null, id: edge }, refusal]);

  // Each answer echoes its id (500 control characters: ~3,000 bytes of JSON): 31 MB in all.
  const spy = spyWrites(t);
  const calls = Array.from({ length: 10_000 }, (_, i) => ({ method: "getbestblockhash", params: [], id: "\u0001".repeat(500) + i }));
  const many = await request(facade.rpcUrl, calls);
  const text = (await readAll(many)).toString();
  t.is(Buffer.byteLength(text), Number(many.headers["content-length"]), "content-length is the body's length");
  const answers = JSON.parse(text) as Array<{ result: string; id: string }>;
  t.is(answers.length, 10_000);
  t.true(answers.every((a, i) => a.result === HASH && a.id === calls[i]!.id), "every answer echoes its own id");
  t.log(`${text.length} bytes of answers; the largest write ${spy.largest} bytes`);
  t.true(spy.largest <= 512 * 1024, `no write of more than 512 KiB (largest: ${spy.largest})`);
});

/** A facade over an embedded chain whose tip is a block of 3,000 transactions (getblock at verbosity 2: ~1.7 MiB of JSON). */
async function facadeOfBigBlock(t: ExecutionContext): Promise<{ facade: CoreFacade; hash: string }> {
  const chain = await EmbeddedChain.create();
  await fillMempool(chain, 3000);
  const [hash] = await chain.mine(1);
  const facade = new CoreFacade({ backend: chain, rpcauth: [rpcauthLine(USER, PASSWORD)] });
  await facade.start();
  t.teardown(() => facade.stop());
  return { facade, hash: hash! };
}

test.serial("the answers of requests in progress are held to FACADE_ANSWER_BYTES_HELD for all clients together: two clients' batches of 60 getblock at verbosity 2 of a block of 3000 transactions (~1.8 MB of JSON each) get whole answers up to it and Core's -7 naming it past it; once read, nothing is held and a lone call is answered whole", async (t) => {
  const { facade, hash } = await facadeOfBigBlock(t);
  let heldPeak = 0;
  const sampler = setInterval(() => (heldPeak = Math.max(heldPeak, facade.answerBytesHeld)), 5);
  t.teardown(() => clearInterval(sampler));
  const batch = Array.from({ length: 60 }, (_, i) => ({ method: "getblock", params: [hash, 2], id: i }));
  const bodies = await Promise.all([0, 1].map(async () => {
    const res = await request(facade.rpcUrl, batch);
    return { status: res.statusCode, text: (await readAll(res)).toString() };
  }));
  clearInterval(sampler);
  type Reply = { result: { tx: unknown[] } | null; error: { code: number; message: string } | null; id: number };
  const replies = bodies.map((b) => JSON.parse(b.text) as Reply[]);
  const whole = replies.flat().filter((r) => r.error === null);
  const refused = replies.flat().filter((r) => r.error !== null);
  const oneAnswer = Buffer.byteLength(JSON.stringify(whole[0]));
  t.log(`answers of ~${(oneAnswer / 1048576).toFixed(2)} MiB: ${whole.length} whole, ${refused.length} refused; at most ${(heldPeak / 1048576).toFixed(1)} MiB held (FACADE_ANSWER_BYTES_HELD ${FACADE_ANSWER_BYTES_HELD / 1048576} MiB); bodies of ${bodies.map((b) => (b.text.length / 1048576).toFixed(1)).join(" and ")} MiB`);
  t.deepEqual(bodies.map((b) => b.status), [200, 200]);
  t.true(whole.every((r) => r.result!.tx.length === 3001), "every answer given is whole");
  t.true(replies.every((r) => r.length === 60 && r.every((a, i) => a.id === i)), "every call answered, in order");
  t.true(refused.length > 0, "past the limit, answers are refused");
  t.true(refused.every((r) => r.error!.code === -7 && r.error!.message.includes("FACADE_ANSWER_BYTES_HELD")), `refused with Core's RPC_OUT_OF_MEMORY naming the limit (${refused[0]?.error?.message.slice(0, 120)})`);
  // Before: 120 answers, ~215 MB of JSON held until written. A batch holds its answers until it
  // is written, so each batch's are within the limit (one batch may finish and let go of its
  // answers before the other has made all of its own: together they may give more).
  for (const [i, r] of replies.entries()) {
    const given = r.filter((a) => a.error === null).length;
    t.true(given * oneAnswer <= FACADE_ANSWER_BYTES_HELD + oneAnswer, `client ${i + 1}'s answers given (${given} of ${oneAnswer} bytes) are within the limit and one answer`);
  }
  // Error answers are counted and never refused: 120 of them are ~60 KB.
  t.true(heldPeak <= FACADE_ANSWER_BYTES_HELD + 1024 * 1024, `at most ${heldPeak} bytes counted as held`);
  t.is(facade.answerBytesHeld, 0, "nothing is held once the answers are written");
  const lone = await request(facade.rpcUrl, { method: "getblock", params: [hash, 2], id: 1 });
  t.is((JSON.parse((await readAll(lone)).toString()) as Reply).result!.tx.length, 3001, "a call alone is answered whole");
});

test.serial("request bodies in progress are held to FACADE_BODY_BYTES_IN_PROGRESS for all clients together: of four clients each sending a body of 30 MB, two are read at once and the others wait unread; each is answered once there is room", async (t) => {
  const chain = await EmbeddedChain.create();
  const facade = new CoreFacade({ backend: chain, rpcauth: [rpcauthLine(USER, PASSWORD)] });
  await facade.start();
  t.teardown(() => facade.stop());
  const SIZE = 30 * 1024 * 1024;
  const call = Buffer.from(JSON.stringify([{ method: "getblockcount", params: [], id: 1 }]));
  const body = Buffer.concat([call, Buffer.alloc(SIZE - call.length, " ")]);
  const FIRST = 1024 * 1024;
  const clients = [0, 1, 2, 3].map(() => {
    const req = http.request(facade.rpcUrl, { method: "POST", agent: false, auth: `${USER}:${PASSWORD}`, headers: { "content-type": "application/json", "content-length": SIZE } });
    const answered = new Promise<{ status: number | undefined; text: string }>((resolve, reject) => {
      req.on("response", async (res) => resolve({ status: res.statusCode, text: (await readAll(res)).toString() }));
      req.on("error", reject);
    });
    req.write(body.subarray(0, FIRST));
    return { req, answered };
  });
  // Every client has sent its head and the first MiB of its body.
  const deadline = Date.now() + 10_000;
  while (facade.bodies.held + facade.bodies.waited * SIZE < 4 * SIZE && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const heldThen = facade.bodies.held;
  const waitedThen = facade.bodies.waited;
  t.log(`with four bodies of ${SIZE} bytes under way: ${heldThen} bytes counted in progress (FACADE_BODY_BYTES_IN_PROGRESS ${FACADE_BODY_BYTES_IN_PROGRESS}), ${waitedThen} requests waiting`);
  t.is(heldThen, 2 * SIZE, "two bodies are in progress");
  t.is(waitedThen, 2, "the two others wait (before: all four read at once)");
  for (const c of clients) c.req.end(body.subarray(FIRST));
  const answers = await Promise.all(clients.map((c) => c.answered));
  t.deepEqual(answers.map((a) => a.status), [200, 200, 200, 200]);
  const height = await chain.getBlockHeight();
  t.true(answers.every((a) => (JSON.parse(a.text) as Array<{ result: number }>)[0]!.result === height), "each is answered");
  await new Promise((r) => setTimeout(r, 50));
  t.is(facade.bodies.held, 0, "nothing counted once all are answered");
});

test.serial("a client that resets its connection while its batch's answers are made lets go of what they held: FACADE_ANSWER_BYTES_HELD comes back to nothing, and another client's batch gets the whole room", async (t) => {
  const { facade, hash } = await facadeOfBigBlock(t);
  const batch = Array.from({ length: 60 }, (_, i) => ({ method: "getblock", params: [hash, 2], id: i }));
  const gone = http.request(facade.rpcUrl, { method: "POST", agent: false, auth: `${USER}:${PASSWORD}`, headers: { "content-type": "application/json" } });
  gone.on("error", () => {});
  gone.end(JSON.stringify(batch));
  // Gone once some answers are made, long before the batch is.
  const deadline = Date.now() + 10_000;
  while (facade.answerBytesHeld < 8 * 1024 * 1024 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  const heldThen = facade.answerBytesHeld;
  // A reset: the server learns of it at once (a FIN it would learn of only when it writes: it
  // keeps half-closed connections for their answers).
  gone.socket!.resetAndDestroy();
  const until = Date.now() + 10_000;
  while (facade.answerBytesHeld !== 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 500));
  t.log(`${heldThen} bytes held when the client went away; ${facade.answerBytesHeld} after`);
  t.true(heldThen >= 8 * 1024 * 1024, "answers were being made when it went away");
  t.is(facade.answerBytesHeld, 0, "nothing is held for a client that is gone (before: what its batch made after it went was never let go, 66 MB for good)");
  const res = await request(facade.rpcUrl, batch);
  const answers = JSON.parse((await readAll(res)).toString()) as Array<{ error: unknown }>;
  const whole = answers.filter((a) => a.error === null).length;
  t.log(`another client's batch: ${whole} answers whole`);
  // 36 answers of ~1.75 MiB as counted fill the room; with what the gone client made held for
  // good (before: its batch went on to the limit), not one.
  t.true(whole >= 30, `the limit's room is whole again (${whole} answers of ~1.7 MiB)`);
});
