// What a TypeScript module's handlers answer, and how long they take, can never take its
// isolate host down: answers too large for a frame, cyclic or not plain data, errors with
// huge messages, and handlers that never finish each become an error for the caller, and
// the module keeps serving (no crash, no restart). Real hosts, real isolate hosts.

import test from "ava";
import { startHost } from "./helpers/host.ts";
import { callApi, inlineModule } from "./helpers/modules.ts";
import { call, RpcFailure } from "./helpers/rpc.ts";
import { HubError } from "../host/hub.ts";

const CAPS = ["register_module_api", "register_rpc_endpoint", "subscribe_events", "read_storage", "write_storage"];
const HOSTILE = inlineModule("answers", CAPS, `
  const big = () => "x".repeat(20 * 1024 * 1024);
  const cyclic = () => { const a: any = { name: "a" }; a.self = a; return a; };
  let events = 0;
  await ctx.events.subscribe(["NewBlock"], async () => {
    events++;
    if (events === 1) await new Promise(() => {}); // the first event's handler never finishes
  });
  await ctx.modules.registerApi({
    big: () => big(),
    // Within max_values (an array longer than that is refused for its length: test/hostile-round14.test.ts), past the frame.
    manySmall: () => { const pad = "y".repeat(300); return Array.from({ length: 60_000 }, (_, i) => "item " + i + pad); },
    nearlyBig: () => "z".repeat(8 * 1024 * 1024), // half the frame, but 8 MiB of string: max_total_string_bytes
    stringMib: () => "z".repeat(1024 * 1024 - 64), // within max_total_string_bytes: fine
    binaryHalf: () => new Uint8Array(8 * 1024 * 1024).fill(7), // half the frame as binary: fine
    cyclic: () => cyclic(),
    deep: () => { let v: any = 1; for (let i = 0; i < 200; i++) v = [v]; return v; },
    fn: () => ({ ok: true, run: () => 1 }),
    date: () => ({ at: new Date(0) }),
    map: () => new Map([["a", 1]]),
    hugeError: () => { throw new Error("e".repeat(20 * 1024 * 1024)); },
    hang: () => new Promise(() => {}),
    events: () => events,
    ok: () => "still here",
  });
  await ctx.rpc.register("big", "too large", () => big());
  await ctx.rpc.register("cyclic", "a cycle", () => cyclic());
`);

async function apiError(h: Parameters<typeof callApi>[0], method: string): Promise<HubError> {
  const err = await callApi(h, "answers", method, {}, 20_000).then(() => undefined, (e: unknown) => e);
  if (!(err instanceof HubError)) throw new Error(`${method}: expected an error, got ${String(err)}`);
  return err;
}

test("handler answers that cannot be sent become errors for the caller, never a crash of the isolate host", async (t) => {
  const h = await startHost(t, { inline: { answers: HOSTILE }, grants: { answers: CAPS }, limits: { handler_timeout_ms: 1500 }, moduleLimits: { answers: { cpu_time_ms: 2000 } } });
  t.is(h.mustStatus("answers").state, "running");

  const big = await apiError(h, "big");
  t.regex(big.message, /answer of the module_api handler is larger than \d+ bytes.*max_frame_bytes/);
  t.regex(big.message, /\[result_too_large\]/);
  const many = await apiError(h, "manySmall");
  t.regex(many.message, /larger than \d+ bytes/);
  const nearly = await apiError(h, "nearlyBig");
  t.regex(nearly.message, /\[result_too_large\] .*8388\d+ bytes of strings .*as binary.*over the protocol limit max_total_string_bytes = 1048576/);
  t.is((await callApi<string>(h, "answers", "stringMib", {}, 20_000)).length, 1024 * 1024 - 64, "1 MiB of string still goes through");
  t.is((await callApi<Uint8Array>(h, "answers", "binaryHalf", {}, 20_000)).byteLength, 8 * 1024 * 1024, "half a frame of binary still goes through");

  t.regex((await apiError(h, "cyclic")).message, /\[not_plain_data\] .*not plain data: self is a cycle \(it contains itself\)/);
  t.regex((await apiError(h, "deep")).message, /\[result_too_large\] .* is nested deeper than 64 levels at .*: over the protocol limit max_depth/);
  t.regex((await apiError(h, "fn")).message, /not plain data: run is a function/);
  t.regex((await apiError(h, "date")).message, /not plain data: at is a Date/);
  t.regex((await apiError(h, "map")).message, /not plain data: the value is a Map/);

  const huge = await apiError(h, "hugeError");
  t.true(huge.message.length < 10_000, `error message of ${huge.message.length} characters`);
  // Cut in the isolate (" ... [N more characters cut]"); on the way to the caller the host's
  // own cut of error messages may apply too ("... (N characters, cut)"): either says so.
  t.regex(huge.message, /more characters cut\]|characters, cut\)$/);

  const hang = await apiError(h, "hang");
  t.regex(hang.message, /took longer than 1500 ms \(handler_timeout_ms\) and was given up on/);

  // Over JSON-RPC too.
  const rpcBig = await call(h, "answers.big").then(() => undefined, (e: unknown) => e);
  t.true(rpcBig instanceof RpcFailure);
  t.regex((rpcBig as Error).message, /larger than \d+ bytes/);
  const rpcCyclic = await call(h, "answers.cyclic").then(() => undefined, (e: unknown) => e);
  t.regex((rpcCyclic as Error).message, /not plain data/);

  t.is(await callApi<string>(h, "answers", "ok"), "still here");
  const s = h.mustStatus("answers");
  t.is(s.state, "running");
  t.is(s.restarts, 0);
  t.deepEqual(h.events.filter((e) => e.type === "ModuleCrashed"), [], "no crash");
});

test("an event handler that never finishes is given up on after handler_timeout_ms; later events still arrive", async (t) => {
  const h = await startHost(t, { inline: { answers: HOSTILE }, grants: { answers: CAPS }, limits: { handler_timeout_ms: 500 } });
  const since = h.mark();
  await h.mine(1);
  await h.waitForLog(/event NewBlock \(seq \d+\) did not finish within 500 ms \(handler_timeout_ms\); it is given up on and the next events are delivered/, { source: "answers", since });
  await h.mine(2);
  await h.waitFor(async () => (await callApi<number>(h, "answers", "events")) >= 3, 10_000, "the later events to be handled");
  t.is(h.mustStatus("answers").state, "running");
  t.is(h.mustStatus("answers").restarts, 0);
});

test("slow event handlers within handler_timeout_ms each are not given up on, however long the batch takes, and keep their order", async (t) => {
  const caps = ["subscribe_events", "manage_timers", "register_module_api", "read_chain_state"];
  const h = await startHost(t, {
    inline: {
      slow: inlineModule("slow", caps, `
        const seen: number[] = [];
        await ctx.events.subscribe(["NewBlock"], async (ev: any) => {
          await new Promise((r) => setTimeout(r, 150));
          seen.push(ev.payload.height);
        });
        await ctx.modules.registerApi({ seen: () => seen });
      `),
    },
    grants: { slow: caps },
    // Each handler takes ~150 ms; 30 of them take 4.5 s or more, longer than the deadline.
    limits: { handler_timeout_ms: 3000 },
  });
  const since = h.mark();
  const first = (await h.mine(30)) - 29;
  await h.waitFor(async () => (await callApi<number[]>(h, "slow", "seen")).length >= 30, 60_000, "all 30 events to be handled");
  t.deepEqual(await callApi<number[]>(h, "slow", "seen"), Array.from({ length: 30 }, (_, i) => first + i));
  t.falsy(h.records.slice(since).find((r) => r.source === "slow" && /did not finish/.test(r.message)), "none given up on");
});
