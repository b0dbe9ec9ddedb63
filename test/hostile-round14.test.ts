// Hostile probes of round 14 (issue #8), under the real host and sandbox, all in one run next
// to the canary ("good", which stores every block):
//   r-sparse   a TypeScript module passing a sparse array 4,294,967,295 long (`a[2 ** 32 - 2] = 1`,
//              a few bytes of memory) to ctx: a storage value, an event payload, log fields,
//              metric labels, and as the answer of its module API and JSON-RPC method. Before:
//              the encoder walked it and copied it whole at its first hole, holding the isolate
//              host's thread for minutes, outside its CPU watchdog (every call of the module
//              timed out, nothing said why); its answer was walked hole by hole in the isolate
//              until cpu_time_ms stopped it (the module crashed). Now each is an error naming
//              max_values, at once, and the module keeps running.
//   r-odd      answers that fight the copy in other ways (a handler recursing until its stack
//              ends, A -> A calls of itself, an object with Symbol.toPrimitive and valueOf, a
//              DataView, a view of a detached buffer): each an error for the caller, or data
//   r-caller   calls each of those answers through call_module
//   HTTP       JSON-RPC clients sending chunked bodies one byte per chunk, with and without
//              credentials, and an `Expect: 100-continue` over max_body_bytes (before: each
//              byte a Buffer kept, +828 MB for four such bodies, and unauthorised bodies read
//              without a bound for request_timeout_ms)
// While they run: the canary stores every block within 5 s, RPC answers within 5 s, and the
// host's heap stays within a stated bound. Every probe restarts.

import test from "ava";
import net from "node:net";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { MAX_REQUEST_BODY_PIECES } from "../host/rpc/server.ts";
import { buildModulesDir, startHost, tempDir, GOOD_GRANTS, type TestHost } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";
import { cookieAuth, oneByteChunks, post } from "./helpers/rpc.ts";
import { canaryRound } from "./helpers/canary.ts";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;
const MB = 1024 * 1024;

const SPARSE = `const sparse = () => { const a: unknown[] = []; a[2 ** 32 - 2] = 1; return a; };`;

const MODULES = {
  "r-sparse": inlineModule("r-sparse", ["read_storage", "write_storage", "publish_events", "subscribe_events", "report_metrics", "register_module_api", "register_rpc_endpoint"], `
    ${SPARSE}
    await ctx.modules.registerApi({ sparse: () => sparse(), throwSparse: () => { throw sparse(); } });
    await ctx.rpc.register("sparse", "answers a sparse array", () => sparse());
    await ctx.storage.openTree("t");
    void (async () => {
      const tries: Record<string, () => unknown> = {
        put: () => ctx.storage.put("t", "k", sparse()),
        putNested: () => ctx.storage.put("t", "k", { deep: [[sparse()]] }),
        publish: () => ctx.events.publish("x", { a: sparse() }),
        metricLabels: () => ctx.metrics.report("m", 1, { labels: sparse() as any }),
        subscribe: () => ctx.events.subscribe(sparse(), () => {}),
      };
      const outcomes: Record<string, string> = {};
      for (const [k, f] of Object.entries(tries)) {
        const t0 = Date.now();
        try { await f(); outcomes[k] = "ok"; } catch (e: any) { outcomes[k] = String(e?.code) + ": " + String(e?.message).slice(0, 300); }
        outcomes[k + "Ms"] = String(Date.now() - t0);
      }
      const t0 = Date.now();
      ctx.log.info("sparse fields", { a: sparse() });
      ctx.log.info(sparse() as any);
      outcomes.logMs = String(Date.now() - t0);
      ctx.log.info("sparse report", outcomes);
    })();
  `),
  "r-odd": inlineModule("r-odd", ["register_module_api", "call_module"], `
    await ctx.modules.registerApi({
      deep: () => { const rec = (n: number): number => rec(n + 1) + 1; return rec(0); },
      self: (p: any) => ctx.modules.call("r-odd", "self", { n: (p?.n ?? 0) + 1 }),
      primitive: () => ({ [Symbol.toPrimitive]() { for (;;) {} }, valueOf() { for (;;) {} }, toJSON() { for (;;) {} } }),
      dataview: () => new DataView(new ArrayBuffer(64)),
      detached: () => { const b = new ArrayBuffer(16); const v = new Uint8Array(b); (b as any).transfer(); return v; },
    });
  `),
  "r-caller": inlineModule("r-caller", ["call_module", "manage_timers"], `
    void (async () => {
      for (let i = 0; i < 600; i++) {
        // Both start with it: wait until each answers (anything but unavailable or not_found).
        const up = await Promise.all([["r-sparse", "sparse"], ["r-odd", "dataview"]].map(([m, f]) => ctx.modules.call(m, f, {}).then(() => true, (e: any) => !["unavailable", "not_found"].includes(e.code))));
        if (up.every(Boolean)) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const outcomes: Record<string, string> = {};
      for (const [target, method] of [["r-sparse", "sparse"], ["r-sparse", "throwSparse"], ["r-odd", "deep"], ["r-odd", "self"], ["r-odd", "primitive"], ["r-odd", "dataview"], ["r-odd", "detached"]]) {
        const t0 = Date.now();
        outcomes[method] = await ctx.modules.call(target, method, {}, 30000).then((v: any) => "ok " + (v instanceof Uint8Array ? "bytes " + v.byteLength : JSON.stringify(v)), (e: any) => String(e.code) + ": " + String(e.message).slice(0, 300));
        outcomes[method + "Ms"] = String(Date.now() - t0);
      }
      ctx.log.info("caller report", outcomes);
    })();
  `),
};

/** Headers only, announcing a body over max_body_bytes and asking whether to send it: what comes back before the server closes. */
function expectContinue(port: number, auth: string): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    let text = "";
    const timer = setTimeout(() => { s.destroy(); resolve(text); }, 20_000);
    s.on("connect", () => s.write(`POST / HTTP/1.1\r\nHost: x\r\nAuthorization: ${auth}\r\nContent-Type: application/json\r\nContent-Length: ${1 << 30}\r\nExpect: 100-continue\r\n\r\n`));
    s.on("data", (d) => (text += d.toString("latin1")));
    s.on("error", () => undefined);
    s.on("close", () => { clearTimeout(timer); resolve(text); });
  });
}

function rpcPort(h: TestHost): number {
  return h.host.rpcServer!.address!.port;
}

test("round 14: sparse arrays 2^32-1 long passed to every ctx API and answered, answers that fight the copy, JSON-RPC bodies one byte per chunk (with and without credentials), Expect: 100-continue: each an error at once for its sender only; the canary gets every block, RPC answers, host heap stays bounded, every probe restarts", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  await buildModulesDir(dir, ["good"], MODULES);
  const grants = Object.fromEntries(Object.entries(MODULES).map(([n, m]) => [n, JSON.parse(m.toml.match(/capabilities = (.*)/)![1]!) as string[]]));
  const h = await startHost(t, {
    dir, modules: [],
    grants: { ...grants, good: GOOD_GRANTS, "r-caller": ["call_module=r-sparse", "call_module=r-odd", "manage_timers"], "r-odd": ["register_module_api", "call_module=r-odd"] },
  });
  await h.waitForState("good", "running", 30_000);
  for (const m of Object.keys(MODULES)) await h.waitForState(m, "running", 30_000);
  const auth = await cookieAuth(h);
  gc();
  const heap0 = process.memoryUsage().heapUsed;
  let peak = 0;
  let late = 0;
  let unanswered = 0;
  const http: string[] = [];
  for (let i = 0; i < 4; i++) {
    // Four connections sending bodies one byte per chunk (two with the cookie, two without),
    // while a block is mined and RPC is asked.
    const floods = Promise.all([auth, auth, undefined, undefined].map((a) => oneByteChunks(rpcPort(h), a, 200_000, 60_000)));
    const { stored, answered } = await canaryRound(h);
    if (!stored) late++;
    if (!answered) unanswered++;
    const ends = await floods;
    http.push(...ends.map((e) => `${e.closed ? "closed" : "open"} ${e.text.split("\r\n")[0]}${/MAX_REQUEST_BODY_PIECES/.test(e.text) ? " (names MAX_REQUEST_BODY_PIECES)" : ""}`));
    gc();
    peak = Math.max(peak, process.memoryUsage().heapUsed - heap0);
  }
  t.is(late, 0, "the canary stored every block within 5 s");
  t.is(unanswered, 0, "the host answered every RPC call within 5 s");
  t.log(`one-byte-chunk bodies: ${[...new Set(http)].join("; ")}; host heap +${(peak / MB).toFixed(0)} MB at most`);
  t.true(http.every((a) => a.startsWith("closed")), "every such connection was closed by the host");
  t.is(http.filter((a) => a === `closed HTTP/1.1 413 Payload Too Large (names MAX_REQUEST_BODY_PIECES)`).length, 8, `the authorised ones got 413 naming MAX_REQUEST_BODY_PIECES (${MAX_REQUEST_BODY_PIECES})`);
  t.is(http.filter((a) => a === "closed HTTP/1.1 401 Unauthorized").length, 8, "the others got 401");
  // Before: +200 MB per authorised connection (a Buffer per byte).
  t.true(peak < 96 * MB, `host heap grew ${(peak / MB).toFixed(0)} MB`);

  const continued = await expectContinue(rpcPort(h), auth);
  t.regex(continued, /^HTTP\/1\.1 413 /, "a body announced over max_body_bytes is refused from its headers, 100-continue or not");
  t.notRegex(continued, /100 Continue/, "the client is not asked for the body");

  const rpc = await post(h, { jsonrpc: "2.0", id: 1, method: "r-sparse.sparse", params: {} });
  t.regex(rpc.json?.error?.message ?? "", /more than 65536 values \(the value is an array of 4294967295 elements\): over the protocol limit max_values/, "the JSON-RPC client is told the answer breaks max_values");

  const report = async (source: string, message: string) => (await h.waitForLog(new RegExp(`^${message}$`), { source, timeoutMs: 120_000 })).fields as Record<string, string>;
  const sparse = await report("r-sparse", "sparse report");
  t.log("r-sparse", sparse);
  for (const k of ["put", "putNested", "publish", "metricLabels", "subscribe"]) t.regex(sparse[k] ?? "", /^result_too_large: .*max_values/, `${k}: refused, naming max_values`);
  t.truthy(h.logsOf("r-sparse").find((r) => r.message === "sparse fields"), "the log line with a sparse field got through (its fields replaced)");
  t.truthy(h.logsOf("r-sparse").find((r) => r.message === "(an array of 4294967295 elements that cannot be shown as text)"), "a sparse array logged as the message is described, not joined");
  const caller = await report("r-caller", "caller report");
  t.log("r-caller", caller);
  t.regex(caller.sparse ?? "", /^module_error: .*\[result_too_large\] .*max_values/, "a sparse answer is result_too_large naming max_values for the caller");
  t.regex(caller.throwSparse ?? "", /^module_error: .*an array of 4294967295 elements that cannot be shown as text/, "a sparse array thrown is described to the caller");
  for (const m of ["deep", "self", "primitive", "dataview"]) t.notRegex(caller[m] ?? "", /^ok|^timeout/, `${m}: an error for the caller, not a hang`);
  for (const m of Object.keys(MODULES)) t.is(h.status(m)?.restarts, 0, `${m} never crashed`);

  for (const m of Object.keys(MODULES)) {
    await h.manager.reload(m);
    await h.waitForState(m, "running", 30_000);
  }
  const mark = h.mark();
  const height = await h.mine(1);
  await h.waitForLog(new RegExp(`^stored block ${height}$`), { source: "good", since: mark, timeoutMs: 10_000 });
});
