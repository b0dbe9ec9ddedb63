// Work a request leaves for later turns of the loop (chain/slices.ts: a submitted block read,
// checked and connected in slices) is charged to the requesting module's host CPU share
// (host_cpu_ms_per_s), not only the request's synchronous part: a module submitting heavy
// blocks back to back is held to its share like any other. A real HostSession and ApiHub on an
// in-process stream pair, a real embedded chain.

import test, { type ExecutionContext } from "ava";
import { duplexPair } from "node:stream";
import { FrameChannel, HOST_SIDE } from "../protocol/channel.ts";
import { FrameDecoder } from "../protocol/frame.ts";
import { decodeBody, encodeBody } from "../protocol/codec.ts";
import { HostSession } from "../host/session.ts";
import { ApiHub } from "../host/hub.ts";
import { EventBus } from "../host/events/bus.ts";
import { Logger } from "../host/log.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { Slicer, sliceAccount } from "../chain/slices.ts";
import { moduleContext, moduleScope } from "../runtime/process.ts";
import { parseDescriptor, resolveGrants } from "../capabilities/grants.ts";
import { bigBlock } from "./helpers/big-block.ts";
import { tempDir } from "./helpers/host.ts";
import { ModuleStore } from "../storage/store.ts";
import { join } from "node:path";

/**
 * A real HostSession for `module` with `grants`, its module end an in-process stream: `send`
 * writes a frame from the module (the hello is sent), `answers` waits (up to 120 s) for the
 * responses to `ids` and returns them in that order (undefined for one not answered).
 */
function sessionPair(t: ExecutionContext, module: string, grants: string[], call: { chain: EmbeddedChain; store: ModuleStore | undefined }) {
  const { effective } = resolveGrants(grants.map((d) => parseDescriptor(d)), grants.map((d) => parseDescriptor(d)), []);
  const [hostEnd, peer] = duplexPair();
  const session = new HostSession(new FrameChannel(hostEnd, HOST_SIDE), {
    module, grants: effective, hub: new ApiHub(), bus: new EventBus(), logger: new Logger({ level: "error", write: () => {} }),
    call: { module, ...call, config: {}, dataDir: `/data/${module}` },
    handshakeTimeoutMs: 60_000,
  });
  t.teardown(() => {
    session.close();
    peer.destroy();
  });
  const received: Array<Record<string, unknown>> = [];
  const decoder = new FrameDecoder();
  peer.on("data", (chunk: Buffer) => {
    for (const body of decoder.push(chunk)) received.push(decodeBody(body) as Record<string, unknown>);
  });
  const send = (msg: Record<string, unknown>) => {
    const body = encodeBody(msg);
    const frame = Buffer.alloc(4 + body.length);
    frame.writeUInt32BE(body.length, 0);
    frame.set(body, 4);
    peer.write(frame);
  };
  send({ t: "hello", protocol: [1, 1], module, version: "1.0.0", sdk: "test" });
  const response = (id: number) => received.find((m) => m.t === "response" && m.id === id);
  const answers = async (ids: number[]) => {
    const deadline = Date.now() + 120_000;
    while (ids.some((id) => !response(id)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    return ids.map(response);
  };
  return { session, send, answers };
}

test("a submitted block's sliced work is charged to the submitting module's host CPU share", async (t) => {
  const chain = await EmbeddedChain.create({ matureBlocks: 1 });
  t.teardown(() => chain.close());
  const bytes = await bigBlock(chain, { count: 5_000, witnessBytes: 0 });
  const { session, send, answers } = sessionPair(t, "submitter", ["submit_block"], { chain, store: undefined });
  send({ t: "request", id: 1, method: "submit_block", params: { hex: bytes } });
  const [answer] = await answers([1]);
  t.truthy(answer, "submit_block answered");
  t.is((answer as { error?: unknown }).error, undefined, JSON.stringify(answer).slice(0, 300));
  t.true(session.flowStats.slicedMs > 0, `sliced work charged: ${session.flowStats.slicedMs} ms`);
  t.true(session.flowStats.cpuMs >= session.flowStats.slicedMs, "and counted in the module's host CPU time");
});

test("a storage transaction's sliced work on the host's loop is charged to the writing module's host CPU share", async (t) => {
  const store = await ModuleStore.open(join(await tempDir(t), "db"));
  t.teardown(() => store.close());
  await store.openTree("t");
  const { session, send, answers } = sessionPair(t, "writer", ["write_storage"], { chain: undefined as never, store });
  // 5,000 puts of 100-byte keys, twice (fresh keys, then the same keys overwritten): far more
  // than one slice of work each, on any machine (and within a message's 1 MiB of strings).
  const ops = Array.from({ length: 5_000 }, (_, i) => ({ op: "put", key: `${String(i).padStart(8, "0")}${"k".repeat(92)}`, value: { i, b: new Uint8Array(40).fill(i) } }));
  for (const id of [1, 2]) send({ t: "request", id, method: "storage_transaction", params: { tree: "t", ops } });
  for (const [i, answer] of (await answers([1, 2])).entries()) {
    t.truthy(answer, `storage_transaction ${i + 1} answered`);
    t.is((answer as { error?: unknown }).error, undefined, JSON.stringify(answer).slice(0, 300));
  }
  t.is((await store.usage()).keys, 5_000, "both transactions written");
  t.log(`slices charged: ${session.flowStats.slicedMs.toFixed(1)} ms of ${session.flowStats.cpuMs.toFixed(1)} ms of host CPU charged in all; the store gave the loop ${store.lastBatchPauses} turns in the last transaction`);
  t.true(store.lastBatchPauses > 0, "the transaction was cut into slices");
  t.true(session.flowStats.slicedMs > 0, `sliced work charged: ${session.flowStats.slicedMs} ms`);
  t.true(session.flowStats.cpuMs >= session.flowStats.slicedMs, "and counted in the module's host CPU time");
});

test("sliced work outside any module's request (the host's own) is charged to no one", async (t) => {
  const charged: number[] = [];
  const inside = new Slicer(0);
  await sliceAccount.run((ms) => charged.push(ms), async () => {
    await inside.pause();
    await inside.pause();
  });
  t.is(charged.length, 2, "each slice that ended with a turn, inside a request");
  await new Slicer(0).pause();
  t.is(charged.length, 2, "nothing charged from outside");
});

test("moduleContext: code run in a module's context sees that module's moduleScope and no store of the code that made it or enters it (a slice account there does not reach the module's input)", (t) => {
  const foreign = (): number => 0;
  // Made inside another module's scope and a request's account, as a module started by work done for another could be.
  const context = moduleScope.run("other", () => sliceAccount.run(foreign, () => moduleContext("m")));
  const seen = sliceAccount.run(foreign, () => context.runInAsyncScope(() => ({ module: moduleScope.getStore(), account: sliceAccount.getStore() })));
  t.deepEqual(seen, { module: "m", account: undefined });
  // Left as it was entered.
  t.is(moduleScope.getStore(), undefined);
  t.is(sliceAccount.run(foreign, () => (context.runInAsyncScope(() => undefined), sliceAccount.getStore())), foreign);
});
