// Module communication through real isolate modules: call_module (real caller id, grants and
// scopes, unavailable callee, unknown method, timeout, failing handler, call loops), the
// module API registry, discovery, and publish_event in the module's own namespace.

import test from "ava";
import { buildModulesDir, sleep, startHost, tempDir, type TestHost } from "./helpers/host.ts";
import { REPORT, callApi, directory, hubError, inlineModule, type Outcome } from "./helpers/modules.ts";

/** b: the callee. whoami answers with who called it and what it was sent. */
const CALLEE = inlineModule("b", ["register_module_api", "call_module=a"], `
  await ctx.modules.registerApi({
    whoami: (params: any, meta: any) => ({ caller: meta.caller, params }),
    hang: () => new Promise(() => {}),
    boom: () => { throw new Error("b exploded on purpose"); },
    retire: async () => { await ctx.modules.unregisterApi(); return "retired"; },
    bounce: (p: any) => bounce(ctx, "a", p),
  });
`, BOUNCE());

/** a: the caller, granted call_module for b (and "ghost", which does not exist) only. */
const CALLER = inlineModule("a", ["register_module_api", "call_module=b,ghost", "discover_modules"], `
  await ctx.modules.registerApi({
    go: (p: any) => report(() => ctx.modules.call(p.target, p.method, p.params, p.timeout_ms)),
    discover: async () => ({ list: await ctx.modules.list(), b: await ctx.modules.info("b"), ghost: await ctx.modules.info("ghost"), bUp: await ctx.modules.isAvailable("b"), ghostUp: await ctx.modules.isAvailable("ghost") }),
    bounce: (p: any) => bounce(ctx, "b", p),
  });
`, REPORT + BOUNCE());

/** Both a and b bounce a call to the other, recording how deep it got and how it ended. */
function BOUNCE(): string {
  return `
const bounce = async (ctx: any, other: string, p: any) => {
  const hops = (p?.hops ?? 0) + 1;
  try {
    return await ctx.modules.call(other, "bounce", { hops });
  } catch (e: any) {
    return { hops, code: e.code, message: e.message };
  }
};
`;
}

/** c: d is outside its grant. */
const SCOPED = inlineModule("c", ["register_module_api", "call_module=b"], `
  await ctx.modules.registerApi({ go: (p: any) => report(() => ctx.modules.call(p.target, p.method, p.params)) });
`, REPORT);

async function host(t: import("ava").ExecutionContext, extra: Record<string, ReturnType<typeof inlineModule>> = {}): Promise<TestHost> {
  const h = await startHost(t, {
    inline: { a: CALLER, b: CALLEE, ...extra },
    grants: {
      a: ["register_module_api", "call_module=b,ghost", "discover_modules"],
      b: ["register_module_api", "call_module=a"],
      c: ["register_module_api", "call_module=b"],
      pub: ["publish_events", "register_module_api"],
      sub: ["subscribe_events", "register_module_api"],
    },
  });
  for (const name of ["a", "b", ...Object.keys(extra)]) t.is(h.mustStatus(name).state, "running", `${name} is running`);
  return h;
}

test("the callee sees the real caller, whatever the params say", async (t) => {
  const h = await host(t);
  const r = await callApi<Outcome>(h, "a", "go", { target: "b", method: "whoami", params: { caller: "forged", x: 1 } });
  t.true(r.ok, JSON.stringify(r));
  t.deepEqual(r.ok && r.value, { caller: "a", params: { caller: "forged", x: 1 } });
  // And from another caller, another id: the host fills it in per connection.
  t.deepEqual(await callApi(h, "b", "whoami", 7), { caller: "test-driver", params: 7 });
});

test("call_module needs the grant, and a scoped grant only reaches its modules", async (t) => {
  const h = await host(t, { c: SCOPED });
  // No call_module at all: refused by the hub, naming the capability.
  const denied = await hubError(h, "x", ["discover_modules"], "call_module", { target: "b", method: "whoami" });
  t.is(denied.code, "permission_denied");
  t.regex(denied.message, /call_module/);
  // call_module=b calling a: outside the scope, from a real module.
  const r = await callApi<Outcome>(h, "c", "go", { target: "a", method: "go", params: {} });
  t.false(r.ok);
  t.is(!r.ok && r.code, "permission_denied");
  t.regex(!r.ok ? r.message : "", /not granted for module "a"/);
  // The same module reaches b.
  const ok = await callApi<Outcome>(h, "c", "go", { target: "b", method: "whoami" });
  t.deepEqual(ok, { ok: true, value: { caller: "c", params: null } });
});

test("a callee that is not running: unavailable; one that does not exist: not_found", async (t) => {
  const h = await host(t);
  await h.manager.unload("b");
  const r = await callApi<Outcome>(h, "a", "go", { target: "b", method: "whoami" });
  t.is(!r.ok && r.code, "unavailable", JSON.stringify(r));
  t.regex(!r.ok ? r.message : "", /module "b" is not running/);
  const ghost = await callApi<Outcome>(h, "a", "go", { target: "ghost", method: "x" });
  t.is(!ghost.ok && ghost.code, "not_found", JSON.stringify(ghost));
});

test("unknown API method (with the list), failing handler, timeout, unregistered API", async (t) => {
  const h = await host(t);
  const unknown = await callApi<Outcome>(h, "a", "go", { target: "b", method: "nope" });
  t.is(!unknown.ok && unknown.code, "unknown_method");
  t.regex(!unknown.ok ? unknown.message : "", /no API method "nope"; its API: boom, bounce, hang, retire, whoami/);

  const boom = await callApi<Outcome>(h, "a", "go", { target: "b", method: "boom" });
  t.is(!boom.ok && boom.code, "module_error");
  t.regex(!boom.ok ? boom.message : "", /b exploded on purpose/);

  const started = Date.now();
  const hang = await callApi<Outcome>(h, "a", "go", { target: "b", method: "hang", timeout_ms: 300 });
  t.is(!hang.ok && hang.code, "timeout", JSON.stringify(hang));
  t.true(Date.now() - started < 5000);
  t.is(h.mustStatus("b").state, "running", "the hung call does not take b down");

  t.deepEqual(await callApi(h, "b", "retire"), "retired");
  const gone = await callApi<Outcome>(h, "a", "go", { target: "b", method: "whoami" });
  t.is(!gone.ok && gone.code, "unknown_method");
  t.regex(!gone.ok ? gone.message : "", /has not registered a module API/);
});

test("A -> B -> A -> ... loops stop at the call depth limit", async (t) => {
  const h = await host(t);
  // The test calls a (depth 1), a calls b (2), ... the call at depth 9 is refused.
  let r = (await callApi<Record<string, unknown>>(h, "a", "bounce", { hops: 0 }, 30_000));
  t.is(r.hops, 8, JSON.stringify(r));
  t.is(r.code, "quota_exceeded");
  t.regex(String(r.message), /nest at most 8 deep \(test-driver -> a -> b -> a -> b -> a -> b -> a -> b -> a\)/);
  // Nothing is left behind: the next call starts from depth 1 again.
  t.is(directory(h).chains.depthOf("a") + directory(h).chains.depthOf("b"), 0);
  r = await callApi<Record<string, unknown>>(h, "a", "bounce", { hops: 0 }, 30_000);
  t.is(r.hops, 8);
  t.is(h.mustStatus("a").state, "running");
  t.is(h.mustStatus("b").state, "running");
});

test("discover_modules, get_module_info, is_module_available", async (t) => {
  const h = await host(t);
  const d = await callApi<Record<string, any>>(h, "a", "discover");
  const names = (d.list as Array<{ name: string }>).map((m) => m.name).sort();
  t.deepEqual(names, ["a", "b"]);
  t.deepEqual(d.b, { name: "b", version: "0.1.0", runtime: "isolate", state: "running", description: "test module b", api: ["boom", "bounce", "hang", "retire", "whoami"] });
  t.is(d.ghost, null);
  t.true(d.bUp);
  t.false(d.ghostUp);
  await h.manager.unload("b");
  const after = await callApi<Record<string, any>>(h, "a", "discover");
  t.is(after.b.state, "stopped");
  t.deepEqual(after.b.api, [], "its API died with it");
  t.false(after.bUp);
});

const PUB = inlineModule("pub", ["publish_events", "register_module_api"], `
  await ctx.modules.registerApi({ publish: (p: any) => report(() => ctx.events.publish(p.name, p.payload)) });
`, REPORT);
const SUB = inlineModule("sub", ["subscribe_events", "register_module_api"], `
  const seen: unknown[] = [];
  await ctx.events.subscribe("pub:summary", (ev: any) => { seen.push({ type: ev.type, payload: ev.payload }); });
  await ctx.modules.registerApi({ seen: () => seen });
`);

test("publish_event: published in the module's own namespace and received by a subscriber", async (t) => {
  const h = await host(t, { pub: PUB, sub: SUB });
  const r = await callApi<Outcome>(h, "pub", "publish", { name: "summary", payload: { blocks: 3, ok: true } });
  t.deepEqual(r, { ok: true, value: "pub:summary" });
  await h.waitFor(async () => ((await callApi<unknown[]>(h, "sub", "seen")).length > 0), 5000, "sub to see the event");
  t.deepEqual(await callApi(h, "sub", "seen"), [{ type: "pub:summary", payload: { blocks: 3, ok: true } }]);
});

test("publish_event cannot forge a node event or another module's event", async (t) => {
  const h = await host(t, { pub: PUB, sub: SUB });
  // Watch the bus itself for every type a forgery could produce.
  const spied: string[] = [];
  const spy = h.host.bus.subscribe("spy", (ev) => spied.push(ev.type), { queueLimit: 1000, window: Infinity });
  for (const type of ["NewBlock", "ModuleLoaded", "other:x", "sub:summary", "pub:summary", "pub:NewBlock", "pub:ModuleLoaded", "pub:big"]) spy.types.add(type);
  for (const name of ["NewBlock", "ModuleLoaded", "other:x", "sub:summary", "pub:summary", ":x", "", "a b", "x".repeat(65)]) {
    const r = await callApi<Outcome>(h, "pub", "publish", { name, payload: {} });
    t.is(!r.ok && r.code, "invalid_params", `${JSON.stringify(name)}: ${JSON.stringify(r)}`);
  }
  const nodeEvent = await callApi<Outcome>(h, "pub", "publish", { name: "NewBlock" });
  t.regex(!nodeEvent.ok ? nodeEvent.message : "", /node event/);
  const foreign = await callApi<Outcome>(h, "pub", "publish", { name: "other:x" });
  t.regex(!foreign.ok ? foreign.message : "", /own namespace/);
  // Too large a payload.
  const big = await callApi<Outcome>(h, "pub", "publish", { name: "big", payload: "x".repeat(70_000) });
  t.is(!big.ok && big.code, "invalid_params");
  await sleep(100);
  t.deepEqual(spied, [], "nothing reached the bus");
  t.deepEqual(await callApi(h, "sub", "seen"), []);
  // The spy does see a legitimate publication.
  t.deepEqual(await callApi(h, "pub", "publish", { name: "summary", payload: 1 }), { ok: true, value: "pub:summary" });
  await h.waitFor(() => spied.length > 0, 5000, "the spy to see pub:summary");
  t.deepEqual(spied, ["pub:summary"]);
  // Without the grant: refused by the hub.
  const denied = await hubError(h, "sub", ["subscribe_events"], "publish_event", { name: "x", payload: 1 });
  t.is(denied.code, "permission_denied");
});

test("hostile: two modules calling each other and a victim keep it handling calls 8 deep (x -> y -> x ... -> v); a call the victim makes to a module outside that chain is still served", async (t) => {
  t.timeout(240_000);
  const dir = await tempDir(t);
  const deep = (self: string, other: string) => inlineModule(self, ["register_module_api", "call_module"], `
    await ctx.modules.registerApi({ deep: async (p: any) => (p.n >= 7 ? ctx.modules.call("v", "work", {}) : ctx.modules.call("${other}", "deep", { n: p.n + 1 })) });
    ${self === "x" ? `const loop = async () => { for (;;) await ctx.modules.call("y", "deep", { n: 1 }).catch(() => 0); }; for (let i = 0; i < 8; i++) void loop();` : ""}
  `);
  await buildModulesDir(dir, [], {
    x: deep("x", "y"), y: deep("y", "x"),
    z: inlineModule("z", ["register_module_api"], `await ctx.modules.registerApi({ ping: () => "pong" });`),
    v: inlineModule("v", ["register_module_api", "call_module", "manage_timers"], `
      await ctx.modules.registerApi({
        // Each call from x/y waits a little: v is nearly always handling one, 8 deep.
        work: async () => { await new Promise((r) => setTimeout(r, 300)); return 1; },
        // Its own business: 20 calls to z, the outcomes counted.
        probe: async () => {
          const out: Record<string, number> = {};
          for (let i = 0; i < 20; i++) { const r = await ctx.modules.call("z", "ping", {}).then(() => "ok", (e: any) => e.code + ": " + e.message); out[r] = (out[r] ?? 0) + 1; }
          return out;
        },
      });
    `),
  });
  const h = await startHost(t, {
    dir, modules: [],
    grants: { x: ["register_module_api", "call_module=y,v"], y: ["register_module_api", "call_module=x,v"], z: ["register_module_api"], v: ["register_module_api", "call_module=z", "manage_timers"] },
  });
  for (const m of ["x", "y", "z", "v"]) await h.waitForState(m, "running", 60_000);
  await h.waitFor(() => directory(h).chains.depthOf("v") > 0, 60_000, "v to handle x's and y's calls");
  const out = await callApi<Record<string, number>>(h, "v", "probe", {}, 60_000);
  t.deepEqual(out, { ok: 20 }, "every call v made to z was served");
});

test("a call to a module whose state still reads running but which has no connection says so, not \"not running (it is running)\"", async (t) => {
  const { ModuleApiDirectory } = await import("../host/services/modules.ts");
  const known = (state: string) => [{ name: "b", version: "0.1.0", runtime: "isolate", state, description: "" }] as never;
  const call = (state: string) => new ModuleApiDirectory({ session: () => undefined, modules: () => known(state) }).call("a", "b", "whoami", {}).then(() => "answered", (e: Error & { wire?: { code: string } }) => `${e.wire?.code}: ${e.message}`);
  const running = await call("running");
  t.regex(running, /^unavailable: module "b" has no connection to the host right now \(its process ended or is being replaced\)/);
  t.notRegex(running, /not running/);
  t.is(await call("failed"), 'unavailable: module "b" is not running (it is failed); try again when it is');
});
