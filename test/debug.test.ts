// Debugging a TypeScript module: stack traces name the module's own files and lines (mapped
// through the bundle's source map), never the bundle or host paths; compile errors name
// file:line:column with a code frame; the inspector relays the Chrome DevTools Protocol to the
// module's isolate. Real host, real isolate hosts in their sandbox.

import test from "ava";
import { compileModule, CompileError } from "../runtime/isolate/compile.ts";
import { splitSourceMap, StackMapper, bundleUrl, MAX_FRAMES } from "../runtime/isolate/sourcemap.ts";
import { startHost, tempDir, writeModule } from "./helpers/host.ts";
import { callApi, inlineModule } from "./helpers/modules.ts";

/** A module whose error comes from a second file, so the map has to pick the right one. */
const THROWER = {
  toml: 'name = "thrower"\nversion = "0.1.0"\nentry_point = "index.ts"\ncapabilities = ["register_module_api"]\n',
  files: {
    "index.ts": [
      'import { explode } from "./lib/explode.ts";', // 1
      "", // 2
      "export default async function start(ctx: any): Promise<void> {", // 3
      "  await ctx.modules.registerApi({", // 4
      "    boom: async () => explode(\"from the api\"),", // 5
      "  });", // 6
      "  try {", // 7
      "    explode(\"in start\");", // 8
      "  } catch (err) {", // 9
      "    console.error(err);", // 10
      "  }", // 11
      "}", // 12
      "",
    ].join("\n"),
    "lib/explode.ts": [
      "interface Why { reason: string }", // 1
      "", // 2
      "export function explode(reason: string): never {", // 3
      "  const why: Why = { reason };", // 4
      // biome-ignore lint/suspicious/noTemplateCurlyInString: module source code, interpolated when the module runs.
      "  throw new Error(`exploded ${why.reason}`);", // 5
      "}", // 6
      "",
    ].join("\n"),
  },
};

test("an error a module logs has a stack naming its own .ts files and lines, not the bundle or host paths", async (t) => {
  const h = await startHost(t, { inline: { thrower: THROWER }, grants: { thrower: ["register_module_api"] } });
  const rec = await h.waitForLog(/exploded in start/, { source: "thrower" });
  t.regex(rec.message, /at explode \(lib\/explode\.ts:5:9\)/, rec.message);
  t.regex(rec.message, /at start \(index\.ts:8:5\)/, rec.message);
  t.notRegex(rec.message, /bundle\.js|modhost:\/\/|isolate-host|\/tmp\/|file:\/\//, rec.message);
});

test("an error thrown by a module's API method reaches the caller with the .ts position of the throw", async (t) => {
  const h = await startHost(t, { inline: { thrower: THROWER }, grants: { thrower: ["register_module_api"] } });
  await h.waitForLog(/exploded in start/, { source: "thrower" });
  const err = await t.throwsAsync(callApi(h, "thrower", "boom"));
  t.regex(err!.message, /exploded from the api \(at lib\/explode\.ts:5:9\)/);
  t.notRegex(err!.message, /bundle\.js|modhost:\/\//);
});

test("a module that throws in start fails with the .ts position in its problem", async (t) => {
  const h = await startHost(t, { inline: { starter: inlineModule("starter", [], '  throw new Error("no frobnicator");') }, grants: { starter: [] } });
  const s = await h.waitForState("starter", "failed");
  // inlineModule: line 1 is empty, line 2 the signature, line 3 the body.
  t.regex(s.problem ?? "", /no frobnicator \(at index\.ts:3:9\)/, s.problem);
  const logged = h.records.find((r) => r.source === "starter" && /start failed: Error: no frobnicator/.test(r.message));
  t.regex(logged?.message ?? "", /at start \(index\.ts:3:9\)/);
});

test("a compile error names file:line:column with a code frame", async (t) => {
  const dir = await tempDir(t);
  const mod = await writeModule(dir, "broken", { toml: "", files: { "index.ts": "export default async function start() {\n  let a b = 1;\n}\n" } });
  const err = await t.throwsAsync(compileModule(mod, "index.ts"), { instanceOf: CompileError });
  t.regex(err!.message, /broken\/index\.ts:2:9: Expected ";" but found "b"/);
  t.regex(err!.message, /\n {4}2 \| {3}let a b = 1;\n {6}\| {9}\^/, err!.message);
});

test("a forbidden import is a compile error with file:line:column and a code frame", async (t) => {
  const dir = await tempDir(t);
  const mod = await writeModule(dir, "forbidden", { toml: "", files: { "index.ts": '\nimport fs from "node:fs";\nexport default async function start() { fs; }\n' } });
  const err = await t.throwsAsync(compileModule(mod, "index.ts"), { instanceOf: CompileError });
  t.regex(err!.message, /forbidden\/index\.ts:2:16: "node:fs" is a Node\.js built-in/);
  t.regex(err!.message, /\n {4}2 \| import fs from "node:fs";\n/);
});

test("the bundle's source map names sources relative to the module directory, never host paths", async (t) => {
  const dir = await tempDir(t);
  const mod = await writeModule(dir, "thrower", THROWER);
  const compiled = await compileModule(mod, "index.ts");
  const { code, map } = splitSourceMap(compiled.code);
  t.truthy(map);
  t.deepEqual([...map!.sources].sort(), ["index.ts", "lib/explode.ts"]);
  t.false(compiled.code.includes(dir), "no host path in the bundle");
  t.false(code.includes("sourceMappingURL"));
  t.is(map!.sourcesContent?.[map!.sources.indexOf("lib/explode.ts")], THROWER.files["lib/explode.ts"]);
});

test("stack mapping is bounded: a huge stack is cut and frames past the limit are counted, not mapped", async (t) => {
  const dir = await tempDir(t);
  const mod = await writeModule(dir, "thrower", THROWER);
  const { map } = splitSourceMap((await compileModule(mod, "index.ts")).code);
  const url = bundleUrl("thrower");
  const mapper = new StackMapper(url, map);
  const frames = Array.from({ length: MAX_FRAMES + 20 }, () => `    at f (${url}:3:1)`);
  const out = mapper.mapStack(["Error: deep", ...frames, "    at run (file:///tmp/isolate-host.mjs:1:1)"].join("\n"));
  t.is(out.split("\n").filter((l) => l.startsWith("    at ")).length, MAX_FRAMES);
  t.regex(out, /\[20 more frame\(s\)\]/);
  t.notRegex(out, /isolate-host|file:\/\//);
  const huge = mapper.mapStack("x".repeat(1_000_000));
  t.true(huge.length < 20_000);
  t.regex(huge, /stack cut at 16384 characters/);
});

// ---------------------------------------------------------------------------------------
// The inspector

/** The module under the debugger: the interface and the import shift lines, so only the source map can say where line 9 went. */
const DEBUGGEE = {
  toml: 'name = "debuggee"\nversion = "0.1.0"\nentry_point = "index.ts"\ncapabilities = ["register_module_api"]\n',
  files: {
    "index.ts": [
      'import { twice } from "./twice.ts";', // 1
      "", // 2
      "interface Params {", // 3
      "  n: number;", // 4
      "}", // 5
      "", // 6
      "export default async function start(ctx: any): Promise<void> {", // 7
      "  await ctx.modules.registerApi({ hit: async (p: Params) => {", // 8
      "    const doubled = twice(p.n);", // 9  <- the breakpoint
      "    return { doubled };", // 10
      "  }, spin: async (p: Params) => {", // 11
      "    let sum = 0;", // 12
      "    for (let i = 0; i < p.n; i++) {", // 13
      "      debugger;", // 14
      "      sum += i;", // 15
      "    }", // 16
      "    return { sum };", // 17
      "  } });", // 18
      "}", // 19
      "",
    ].join("\n"),
    "twice.ts": "export function twice(n: number): number {\n  return n * 2;\n}\n",
  },
};
const BREAK_LINE = 9;

/** A CDP client over the WebSocket the host serves (Node's built-in WebSocket, as a debugger would connect). */
class Cdp {
  private nextId = 1;
  private readonly waiting = new Map<number, (r: { result?: any; error?: any }) => void>();
  readonly notifications: { method: string; params: any }[] = [];
  private listeners: (() => void)[] = [];

  private constructor(readonly ws: WebSocket) {
    ws.addEventListener("message", (ev) => {
      const msg = JSON.parse(String(ev.data));
      if (msg.id !== undefined) this.waiting.get(msg.id)?.(msg);
      else {
        this.notifications.push(msg);
        for (const l of this.listeners) l();
      }
    });
  }

  static connect(url: string): Promise<Cdp> {
    const ws = new WebSocket(url);
    return new Promise((resolve, reject) => {
      ws.addEventListener("open", () => resolve(new Cdp(ws)));
      ws.addEventListener("error", () => reject(new Error(`cannot connect to ${url}`)));
    });
  }

  /** A command's result; a debugger left without an answer for timeoutMs is a failure that says so. */
  send(method: string, params: Record<string, unknown> = {}, timeoutMs = 30_000): Promise<any> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`${method} (id ${id}) was not answered within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, (r) => {
        clearTimeout(timer);
        this.waiting.delete(id);
        if (r.error) reject(new Error(`${method}: ${JSON.stringify(r.error)}`));
        else resolve(r.result);
      });
      this.ws.send(JSON.stringify({ id, method, params }));
    });
  }

  /** The first notification (from `since`) that matches. */
  waitFor(method: string, match: (p: any) => boolean = () => true, since = 0, timeoutMs = 30_000): Promise<any> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const n = this.notifications.slice(since).find((m) => m.method === method && match(m.params));
        if (n) {
          this.listeners = this.listeners.filter((l) => l !== check);
          clearTimeout(timer);
          resolve(n.params);
        }
      };
      const timer = setTimeout(() => reject(new Error(`no ${method} within ${timeoutMs} ms; got ${this.notifications.map((m) => m.method).join(", ")}`)), timeoutMs);
      this.listeners.push(check);
      check();
    });
  }
}

test("a debugger sets a breakpoint at index.ts:LINE through the source map; the module stops there, shows its variables and resumes", async (t) => {
  t.timeout(120_000);
  const h = await startHost(t, { inline: { debuggee: DEBUGGEE }, grants: { debuggee: ["register_module_api"] }, limits: { inspect: "127.0.0.1:0" } });
  t.is(h.mustStatus("debuggee").state, "running");
  const server = h.host.inspectors[0]!;
  const [target] = server.urls();
  // Discovery as chrome://inspect and VS Code do it.
  const port = new URL(target!.ws).port;
  const list = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as { title: string; webSocketDebuggerUrl: string; devtoolsFrontendUrl: string }[];
  t.deepEqual(list.map((l) => l.title), ["debuggee"]);
  t.is(list[0]!.webSocketDebuggerUrl, target!.ws);
  t.regex(list[0]!.devtoolsFrontendUrl, /^devtools:\/\/devtools\/bundled\/js_app\.html\?.*ws=127\.0\.0\.1:\d+\//);
  t.truthy(h.records.find((r) => r.source === "inspector" && r.message.includes(target!.devtools)), "the devtools:// URL is printed");

  const cdp = await Cdp.connect(list[0]!.webSocketDebuggerUrl);
  t.teardown(() => cdp.ws.close());
  await cdp.send("Runtime.enable");
  await cdp.send("Debugger.enable");
  const parsed = await cdp.waitFor("Debugger.scriptParsed", (p) => p.url === bundleUrl("debuggee"));
  // The map comes with the script, as DevTools reads it: sources relative to the module.
  t.regex(parsed.sourceMapURL, /^data:application\/json;base64,/);
  const map = JSON.parse(Buffer.from(parsed.sourceMapURL.split(",")[1], "base64").toString()) as import("node:module").SourceMapPayload;
  t.deepEqual([...map.sources].sort(), ["index.ts", "twice.ts"]);
  const { scriptSource } = await cdp.send("Debugger.getScriptSource", { scriptId: parsed.scriptId });
  // index.ts:BREAK_LINE -> the bundle's line, the way a debugger front end does it.
  const { SourceMap } = await import("node:module");
  const sm = new SourceMap(map);
  const generated = (scriptSource as string).split("\n").findIndex((text, line) => {
    const col = text.search(/\S/);
    if (col < 0) return false;
    const e = sm.findEntry(line, col) as { originalSource?: string; originalLine?: number };
    return e.originalSource === "index.ts" && e.originalLine === BREAK_LINE - 1;
  });
  t.true(generated >= 0, "index.ts:9 is in the bundle's map");
  t.not(generated, BREAK_LINE - 1, "the bundle's line differs: the map did the work");
  const bp = await cdp.send("Debugger.setBreakpointByUrl", { url: parsed.url, lineNumber: generated });
  t.is(bp.locations.length, 1);

  const since = cdp.notifications.length;
  const call = callApi(h, "debuggee", "hit", { n: 21 }, 60_000);
  const paused = await cdp.waitFor("Debugger.paused", () => true, since);
  const top = paused.callFrames[0];
  const at = sm.findEntry(top.location.lineNumber, top.location.columnNumber) as { originalSource: string; originalLine: number };
  t.is(`${at.originalSource}:${at.originalLine + 1}`, `index.ts:${BREAK_LINE}`);
  const n = await cdp.send("Debugger.evaluateOnCallFrame", { callFrameId: top.callFrameId, expression: "p.n" });
  t.is(n.result.value, 21);
  await cdp.send("Debugger.resume");
  t.deepEqual(await call, { doubled: 42 });
});

test("a debugger is answered at every pause: 150 pauses in a row (a debugger statement in a loop), each evaluateOnCallFrame and resume answered within 5 s", async (t) => {
  t.timeout(120_000);
  const h = await startHost(t, { inline: { debuggee: DEBUGGEE }, grants: { debuggee: ["register_module_api"] }, limits: { inspect: "127.0.0.1:0" } });
  const [target] = h.host.inspectors[0]!.urls();
  const cdp = await Cdp.connect(target!.ws);
  t.teardown(() => cdp.ws.close());
  await cdp.send("Debugger.enable");
  const ROUNDS = 150;
  const call = callApi(h, "debuggee", "spin", { n: ROUNDS }, 100_000);
  const started = Date.now();
  let seen = 0;
  for (let i = 0; i < ROUNDS; i++) {
    const paused = await cdp.waitFor("Debugger.paused", () => true, seen);
    seen = cdp.notifications.length;
    const { result } = await cdp.send("Debugger.evaluateOnCallFrame", { callFrameId: paused.callFrames[0].callFrameId, expression: "i" }, 5_000);
    t.is(result.value, i);
    await cdp.send("Debugger.resume", {}, 5_000);
  }
  t.deepEqual(await call, { sum: (ROUNDS * (ROUNDS - 1)) / 2 });
  t.log(`${ROUNDS} pauses in ${Date.now() - started} ms`);
});

test("the inspector refuses a request whose Host is not a loopback name (DNS rebinding) and an unknown id", async (t) => {
  const h = await startHost(t, { inline: { debuggee: DEBUGGEE }, grants: { debuggee: ["register_module_api"] }, limits: { inspect: "127.0.0.1:0" } });
  const [target] = h.host.inspectors[0]!.urls();
  const port = Number(new URL(target!.ws).port);
  const { request } = await import("node:http");
  const get = (p: string, host: string) => new Promise<number>((resolve, reject) => {
    request({ host: "127.0.0.1", port, path: p, headers: { host } }, (res) => {
      res.resume();
      resolve(res.statusCode!);
    }).on("error", reject).end();
  });
  t.is(await get("/json/list", "evil.example:80"), 403);
  t.is(await get("/json/list", `localhost:${port}`), 200);
  await t.throwsAsync(Cdp.connect(`ws://127.0.0.1:${port}/not-the-id`));
});

test("the inspector is off unless asked for: an isolate host started without it does not answer inspector invocations", async (t) => {
  const h = await startHost(t, { inline: { debuggee: DEBUGGEE }, grants: { debuggee: ["register_module_api"] } });
  t.deepEqual(h.host.inspectors, []);
  const session = h.manager.session("debuggee")!;
  const err = await t.throwsAsync(session.invoke("inspector", { messages: ['{"id":1,"method":"Runtime.evaluate","params":{"expression":"1+1"}}'], wait_ms: 0 }, 10_000));
  t.regex(err!.message, /inspector|unknown/i);
});

test("an inspect address that is not loopback is refused by the configuration", async (t) => {
  const { inspectAddressProblem } = await import("../host/config.ts");
  t.regex(inspectAddressProblem("0.0.0.0:9229") ?? "", /not a loopback address/);
  t.regex(inspectAddressProblem("192.168.1.5:9229") ?? "", /not a loopback address/);
  t.is(inspectAddressProblem("127.0.0.1:9229"), undefined);
  t.is(inspectAddressProblem(""), undefined);
});
