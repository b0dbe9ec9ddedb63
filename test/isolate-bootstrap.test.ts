// The isolate bootstrap is TypeScript (runtime/isolate/in-isolate/) built into one script
// (runtime/isolate/bootstrap.ts): the built script stands alone in a bare isolate (no imports,
// no Node), keeps its contract with the isolate host (runtime/isolate/in-isolate/contract.ts),
// and carries the protocol's value depth written in at build time. Its behaviour under the real
// host is tested by test/isolate*.test.ts.

import test from "ava";
import ivm from "isolated-vm";
import { buildBootstrap } from "../runtime/isolate/bootstrap.ts";
import { MAX_VALUE_DEPTH } from "../protocol/codec.ts";
import type { AnswerEntry, CallEntry } from "../runtime/isolate/in-isolate/contract.ts";

test("the built bootstrap runs alone in a bare isolate: it hides the host functions, batches one turn's calls into one crossing, and fails only a call that cannot be copied out", async (t) => {
  const built = await buildBootstrap();
  t.true(built.inputs.includes("runtime/isolate/in-isolate/main.ts"), built.inputs.join(", "));
  t.notRegex(built.code, /\brequire\(|\bimport\b|__MODHOST_MAX_VALUE_DEPTH__|__MODHOST_MAX_FRAME_DEPTH__|__MODHOST_MAX_VALUES__/, "one script with nothing left to resolve");

  const isolate = new ivm.Isolate({ memoryLimit: 32 });
  t.teardown(() => isolate.dispose());
  const context = await isolate.createContext();
  const jail = context.global;
  await jail.set("globalThis", jail.derefInto());
  const batches: CallEntry[][] = [];
  // As the isolate host plants them (runtime/isolate/worker.ts).
  await jail.set("__modhost_call", new ivm.Callback((batch: CallEntry[]) => void batches.push(batch), { ignored: true }));
  await jail.set("__modhost_log", new ivm.Callback(() => {}, { ignored: true }));
  await jail.set("__modhost_done", new ivm.Callback(() => {}, { ignored: true }));
  await jail.set("__modhost_dispatched", new ivm.Callback(() => {}, { ignored: true }));
  await context.eval(built.code, { timeout: 1000 });

  const gone = await context.eval(`["__modhost_call", "__modhost_log", "__modhost_done", "__modhost_dispatched", "WebAssembly", "SharedArrayBuffer", "Atomics"].filter((n) => n in globalThis).join()`);
  t.is(gone, "", "the host references and what policy forbids are gone");
  const runtime = (await jail.get("__modhost_runtime", { reference: true })) as ivm.Reference<Record<string, unknown>>;
  for (const name of ["settle", "init", "start", "stop", "invoke", "invokeMany", "invokeStarted", "dispatch", "dispatchStart", "progress"]) {
    t.is(await context.eval(`typeof __modhost_runtime.${name}`), "function", name);
  }

  const methods = [
    { name: "get_block_height", js: "getBlockHeight", family: "chain", args: [] },
    { name: "storage_get", js: "get", family: "storage", args: ["tree", "key"] },
    { name: "register_rpc_endpoint", js: "register", family: "rpc", args: ["method", "description", "handler"] },
  ];
  const init = (await runtime.get("init", { reference: true })) as ivm.Reference<(...a: unknown[]) => void>;
  await init.apply(undefined, [methods, {}, { name: "m", version: "1.0.0", id: 1, grants: [] }, { maxFrameBytes: 1 << 20 }], { arguments: { copy: true } });
  await context.eval(`globalThis.__modhost_exports = { default: async (ctx) => {
    globalThis.ctx = ctx;
    const deep = (n) => (n === 0 ? 1 : [deep(n - 1)]);
    globalThis.answers = await Promise.all([ctx.chain.getBlockHeight(), ctx.chain.getBlockHeight(), ctx.rpc.register("deep", "", () => deep(${MAX_VALUE_DEPTH + 1}))]);
  } }`);
  const start = (await runtime.get("start", { reference: true })) as ivm.Reference<() => Promise<void>>;
  const started = start.apply(undefined, [], { result: { promise: true } });
  for (let i = 0; i < 200 && batches.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  t.is(batches.length, 1, "the calls of one turn leave in one crossing");
  const batch = batches[0]!;
  t.deepEqual(batch.map(([, method, params]) => [method, params]), [["get_block_height", {}], ["get_block_height", {}], ["register_rpc_endpoint", { method: "deep", description: "" }]]);
  const settle = (await runtime.get("settle", { reference: true })) as ivm.Reference<(a: AnswerEntry[]) => void>;
  const answers: AnswerEntry[] = [[batch[0]![0], true, 7], [batch[1]![0], true, 8], [batch[2]![0], true, null]];
  await settle.apply(undefined, [answers], { arguments: { copy: true } });
  await started;
  t.deepEqual(await context.eval("globalThis.answers", { copy: true }), [7, 8, null]);

  // The depth limit is the protocol's, written in when the bootstrap was built.
  const invoke = (await runtime.get("invoke", { reference: true })) as ivm.Reference<(...a: unknown[]) => Promise<unknown>>;
  const call = async (method: string) =>
    (await invoke.apply(undefined, ["rpc", { method, params: {} }], { arguments: { copy: true }, result: { promise: true, copy: true } })) as { ok: boolean; code?: string; message?: string };
  t.like(await call("none"), { ok: false, code: "unknown_method" });

  // A call whose arguments cannot be copied out fails alone; the others of its turn still leave.
  // (Params that are not plain data are refused before, by the check; a Uint8Array over a
  // detached buffer passes it, 0 bytes long, and only the copy refuses it.)
  batches.length = 0;
  await context.eval(`const detached = new Uint8Array(8); detached.buffer.transfer();
    globalThis.mixed = Promise.allSettled([ctx.chain.getBlockHeight(), ctx.storage.get("t", detached), ctx.storage.get("t", "k")])
    .then((r) => r.map((x) => x.status === "fulfilled" ? x.value : x.reason.name + ": " + x.reason.message))`);
  for (let i = 0; i < 200 && batches.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
  t.deepEqual(batches.map((b) => b.map(([, method]) => method)), [["get_block_height"], ["storage_get"]], "the others go one by one");
  await settle.apply(undefined, [[[batches[0]![0]![0], true, 9], [batches[1]![0]![0], true, "v"]]], { arguments: { copy: true } });
  const mixed = (await context.eval("globalThis.mixed", { promise: true, copy: true })) as unknown[];
  t.is(mixed[0], 9);
  t.regex(String(mixed[1]), /^TypeError: storage_get: arguments must be plain data \(.*could not be cloned/);
  t.is(mixed[2], "v");

  const deep = await call("deep");
  t.is(deep.code, "result_too_large");
  t.regex(deep.message ?? "", new RegExp(`nested deeper than ${MAX_VALUE_DEPTH} levels`));
});
