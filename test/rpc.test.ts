// The RPC server: authentication (cookie, user/password), JSON-RPC 2.0 handling, module
// methods (namespaced, routed with a timeout), the host's admin methods, module CLI commands,
// and the modhost command line against a running host process. Real HTTP, real hosts with
// TypeScript modules in isolates.

import test from "ava";
import { execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { ROOT, startHost, tempDir, waitFor, type InlineModule, type TestHost } from "./helpers/host.ts";
import { basic, call, cookieAuth, freePort, get, manifest, post, RpcFailure } from "./helpers/rpc.ts";
import { inlineModule } from "./helpers/modules.ts";
import { postRaw } from "../fuzz/edges-seeds.ts";

const run = promisify(execFile);
const MODHOST = path.join(ROOT, "bin/modhost.js");

/** Serves echo/fail/hang, tries to register names it may not have, and has two CLI commands. */
const ECHO: InlineModule = {
  toml: manifest("echo", ["register_rpc_endpoint"]),
  files: {
    "index.ts": `
export default async function start(ctx: any) {
  const full = await ctx.rpc.register("echo", "Echo the params", (params: unknown) => ({ echoed: params, from: ctx.module.name }));
  await ctx.rpc.register("fail", "Always fails", () => { throw new Error("boom " + (6 * 7)); });
  await ctx.rpc.register("hang", "Never answers", () => new Promise(() => {}));
  for (const bad of ["list", "second.echo", "a.b"]) {
    try {
      await ctx.rpc.register(bad, "sneaky", () => "sneaky");
      ctx.log.info("registered " + bad);
    } catch (err: any) {
      ctx.log.info("refused " + bad + ": " + err.code + ": " + err.message);
    }
  }
  await ctx.rpc.registerCli({ name: "echo", about: "Echo things", commands: [
    { name: "greet", about: "Say hello", args: [{ name: "who", required: true }] },
    { name: "sum", about: "Add numbers" },
  ] }, {
    greet: (args: string[]) => "hello " + args[0],
    sum: (args: string[]) => ({ sum: args.reduce((a, b) => a + Number(b), 0) }),
  });
  ctx.log.info("serving " + full);
}
`,
  },
};

/** Registers a method with the same short name as echo's. */
const SECOND: InlineModule = {
  toml: manifest("second", ["register_rpc_endpoint"]),
  files: {
    "index.ts": `
export default async function start(ctx: any) {
  await ctx.rpc.register("echo", "Not the other one", () => "second here");
  ctx.log.info("second ready");
}
`,
  },
};

const GRANTS = { echo: ["register_rpc_endpoint"], second: ["register_rpc_endpoint"] };

async function echoHost(t: import("ava").ExecutionContext, configure?: (c: import("../host/config.ts").HostConfig) => void): Promise<TestHost> {
  const h = await startHost(t, { inline: { echo: ECHO, second: SECOND }, grants: GRANTS, ...(configure ? { configure } : {}) });
  await h.waitForLog(/^serving echo\.echo$/, { source: "echo" });
  await h.waitForLog(/^second ready$/, { source: "second" });
  return h;
}

async function rpcError(t: import("ava").ExecutionContext, p: Promise<unknown>): Promise<RpcFailure> {
  const err = await t.throwsAsync(p);
  if (!(err instanceof RpcFailure)) throw new Error(`expected an RPC error, got ${String(err)}`);
  return err;
}

test("authentication: no or wrong credentials get 401; the cookie and user/password work; the cookie file is 0600 and removed on stop", async (t) => {
  const h = await startHost(t, {
    configure: (c) => {
      c.rpc.user = "alice";
      c.rpc.password = "correct horse battery";
    },
  });
  const cookieFile = h.config.rpc.cookie_file;
  const text = await readFile(cookieFile, "utf8");
  t.regex(text, /^__cookie__:[0-9a-f]{64}$/);
  t.is((await stat(cookieFile)).mode & 0o777, 0o600);

  const list = { jsonrpc: "2.0", id: 1, method: "list" };
  const none = await post(h, list, null);
  t.is(none.status, 401);
  t.is(none.headers.get("www-authenticate"), 'Basic realm="modhost"');
  t.is((await post(h, list, basic("__cookie__", "0".repeat(64)))).status, 401);
  t.is((await post(h, list, basic("alice", "wrong"))).status, 401);
  t.is((await post(h, list, "Bearer abc")).status, 401);
  const cookie = text.slice("__cookie__:".length);
  t.is((await post(h, list, basic("alice", cookie))).status, 401, "the cookie is not alice's password");
  t.is((await post(h, list, basic("__cookie__", "correct horse battery"))).status, 401, "alice's password is not the cookie");
  t.is((await post(h, list, basic("alice:correct", "horse battery"))).status, 401, "user and password are not one string");
  t.is((await get(h, "/metrics", null)).status, 401, "/metrics needs auth by default");

  const byCookie = await post(h, list);
  t.is(byCookie.status, 200);
  t.deepEqual(byCookie.json.result, []);
  const byPassword = await post(h, list, basic("alice", "correct horse battery"));
  t.is(byPassword.status, 200);
  t.deepEqual(byPassword.json, { jsonrpc: "2.0", id: 1, result: [] });

  await h.stop();
  t.false(existsSync(cookieFile), "the cookie is removed on stop");
});

test("module methods are namespaced, answered, and their failures reported; no module can take a host name or another module's", async (t) => {
  const h = await echoHost(t);

  t.deepEqual(await call(h, "echo.echo", { a: 1 }), { echoed: { a: 1 }, from: "echo" });
  t.deepEqual(await call(h, "echo.echo", [1, "two"]), { echoed: [1, "two"], from: "echo" });
  t.is(await call(h, "second.echo"), "second here", "same short name, no shadowing");

  const fail = await rpcError(t, call(h, "echo.fail"));
  t.is(fail.code, -32000);
  t.regex(fail.message, /boom 42/);

  // Refused registrations, with invalid_params and a reason.
  await h.waitForLog(/^refused list: invalid_params: .*name of a host method/, { source: "echo" });
  await h.waitForLog(/^refused second\.echo: invalid_params: .*without a dot/, { source: "echo" });
  await h.waitForLog(/^refused a\.b: invalid_params/, { source: "echo" });
  t.falsy(h.logsOf("echo").find((r) => r.message.startsWith("registered")));
  t.deepEqual(await call(h, "list").then((l: Array<{ name: string }>) => l.map((m) => m.name).sort()), ["echo", "second"], "list is still the host's");
  t.is(await call(h, "second.echo"), "second here");

  const missing = await rpcError(t, call(h, "echo.nope"));
  t.is(missing.code, -32601);
  const unknownHost = await rpcError(t, call(h, "lsit"));
  t.is(unknownHost.code, -32601);
  t.regex(unknownHost.message, /did you mean list/);

  const methods = await call(h, "rpc_methods");
  t.deepEqual(methods.modules.map((m: { method: string }) => m.method), ["echo.echo", "echo.fail", "echo.hang", "second.echo"]);
  t.truthy(methods.host.find((m: { method: string }) => m.method === "reload"));
});

test("a module method that never answers times out; the host and the module keep answering", async (t) => {
  const h = await echoHost(t, (c) => (c.rpc.call_timeout_ms = 300));
  const started = Date.now();
  const err = await rpcError(t, call(h, "echo.hang"));
  t.is(err.code, -32001);
  t.regex(err.message, /did not answer within 300 ms/);
  t.true(Date.now() - started < 3000);
  t.deepEqual(await call(h, "echo.echo", { again: true }), { echoed: { again: true }, from: "echo" });
  t.is(h.mustStatus("echo").state, "running");
});

test("JSON-RPC 2.0: batches, notifications, parse errors, invalid requests, body limit", async (t) => {
  const h = await echoHost(t);

  const batch = await post(h, [
    { jsonrpc: "2.0", id: 1, method: "echo.echo", params: { n: 1 } },
    { jsonrpc: "2.0", method: "echo.echo", params: { n: 2 } }, // notification: no answer
    { jsonrpc: "2.0", id: "b", method: "nope" },
    { jsonrpc: "2.0", id: 3, method: "second.echo" },
    42,
  ]);
  t.is(batch.status, 200);
  t.is(batch.json.length, 4);
  t.deepEqual(batch.json[0], { jsonrpc: "2.0", id: 1, result: { echoed: { n: 1 }, from: "echo" } });
  t.is(batch.json[1].id, "b");
  t.is(batch.json[1].error.code, -32601);
  t.deepEqual(batch.json[2], { jsonrpc: "2.0", id: 3, result: "second here" });
  t.deepEqual(batch.json[3].error.code, -32600);

  const parse = await post(h, '{"jsonrpc": "2.0", "id": 1, "method": ');
  t.is(parse.status, 200);
  t.is(parse.json.error.code, -32700);
  t.is(parse.json.id, null);

  t.is((await post(h, [])).json.error.code, -32600, "empty batch");
  t.is((await post(h, { jsonrpc: "1.0", id: 1, method: "list" })).json.error.code, -32600);
  t.is((await post(h, { jsonrpc: "2.0", id: 1, method: 7 })).json.error.code, -32600);
  t.is((await post(h, { jsonrpc: "2.0", id: 1, method: "list", params: "x" })).json.error.code, -32600);
  t.is((await post(h, { jsonrpc: "2.0", id: 1, method: "info", params: { modul: "echo" } })).json.error.code, -32602);

  const note = await post(h, { jsonrpc: "2.0", method: "list" });
  t.is(note.status, 204, "a lone notification gets no body");

  const big = await post(h, JSON.stringify({ jsonrpc: "2.0", id: 1, method: "echo.echo", params: { x: "y".repeat(1024 * 1024) } }));
  t.is(big.status, 413);
  t.is(big.json.error.code, -32600);
  t.deepEqual(await call(h, "second.echo"), "second here", "still serving");
});

test("admin methods: list, info, unload, load, reload one module while the other keeps running; audited", async (t) => {
  const h = await echoHost(t);

  const list = await call(h, "list");
  t.deepEqual(list.map((m: { name: string; state: string }) => [m.name, m.state]).sort(), [["echo", "running"], ["second", "running"]]);

  const info = await call(h, "info", ["echo"]);
  t.is(info.name, "echo");
  t.is(info.state, "running");
  t.deepEqual(info.grants, ["register_rpc_endpoint"]);
  t.deepEqual(info.manifest.requested, ["register_rpc_endpoint"]);
  t.deepEqual(info.rpc_methods.map((m: { method: string }) => m.method), ["echo.echo", "echo.fail", "echo.hang"]);
  t.deepEqual(info.cli.commands.map((c: { name: string }) => c.name), ["greet", "sum"]);
  t.true(info.session.requests >= 7);
  const nobody = await rpcError(t, call(h, "info", { module: "nobody" }));
  t.is(nobody.code, -32004);

  const pid = h.mustStatus("second").pid;
  const unloaded = await call(h, "unload", { module: "echo" });
  t.is(unloaded.state, "stopped");
  const gone = await rpcError(t, call(h, "echo.echo"));
  t.is(gone.code, -32003, "a stopped module's methods are unavailable");
  t.is(await call(h, "second.echo"), "second here");
  t.is(h.mustStatus("second").pid, pid, "the other module was not touched");

  t.is((await call(h, "unload", ["echo"])).state, "stopped", "unloading a stopped module is harmless");

  const loaded = await call(h, "load", { module: "echo" });
  t.is(loaded.state, "running");
  await h.waitFor(async () => (await call(h, "rpc_methods")).modules.some((m: { method: string }) => m.method === "echo.echo"), 30_000, "echo.echo registered again");
  t.is((await call(h, "echo.echo", {})).from, "echo");

  const before = h.mustStatus("echo").pid;
  const reloaded = await call(h, "reload", { module: "echo" });
  t.is(reloaded.state, "running");
  t.not(reloaded.pid, before);
  const loadRunning = await rpcError(t, call(h, "load", { module: "echo" }));
  t.is(loadRunning.code, -32004);
  t.regex(loadRunning.message, /running/);
  t.is(h.mustStatus("second").pid, pid);

  const audit = (await readFile(h.config.host.audit_log, "utf8")).trim().split("\n").map((l) => JSON.parse(l));
  const operator = audit.filter((r) => r.module === "operator").map((r) => `${r.action}:${r.detail.target}:${r.detail.ok}`);
  t.deepEqual(operator, ["unload:echo:true", "unload:echo:true", "load:echo:true", "reload:echo:true", "load:echo:false"]);
});

test("module CLI commands run through run_cli; cli_specs lists them; health answers", async (t) => {
  const h = await echoHost(t);
  const specs = await call(h, "cli_specs");
  t.deepEqual(Object.keys(specs), ["echo"]);
  t.is(specs.echo.about, "Echo things");
  t.is(await call(h, "run_cli", { module: "echo", command: "greet", args: ["world"] }), "hello world");
  t.deepEqual(await call(h, "run_cli", { module: "echo", command: "sum", args: ["1", "2", "39"] }), { sum: 42 });
  const usage = await rpcError(t, call(h, "run_cli", { module: "echo", command: "greet" }));
  t.is(usage.code, -32602);
  t.regex(usage.message, /<who>/);
  const typo = await rpcError(t, call(h, "run_cli", { module: "echo", command: "gret", args: [] }));
  t.regex(typo.message, /did you mean "greet"/);
  const noCli = await rpcError(t, call(h, "run_cli", { module: "second", command: "x" }));
  t.regex(noCli.message, /no CLI commands/);

  const health = await call(h, "health");
  t.is(health.status, "ok");
  t.is(health.chain.height, 101);
  t.deepEqual(health.modules.map((m: { name: string; health: { status: string } }) => [m.name, m.health.status]).sort(), [["echo", "ok"], ["second", "ok"]]);
});

test("the host refuses a second RPC server on a port in use, and a non-loopback bind is a config error", async (t) => {
  const { parseConfig } = await import("../host/config.ts");
  const err = t.throws(() => parseConfig({ rpc: { bind: "0.0.0.0" } }, '[rpc]\nbind = "0.0.0.0"\n', "/x/modhost.toml"));
  t.regex(err!.message, /modhost\.toml:2:1: rpc\.bind: "0\.0\.0\.0" is not a loopback address/);
  t.is(parseConfig({ rpc: { bind: "0.0.0.0", allow_remote: true } }, "", "/x/modhost.toml").rpc.bind, "0.0.0.0");
  t.throws(() => parseConfig({ rpc: { user: "a" } }, "", "/x/modhost.toml"), { message: /user and password go together/ });

  const first = await startHost(t);
  const port = first.host.rpcServer!.address!.port;
  const dir = await tempDir(t);
  const err2 = await t.throwsAsync(startHost(t, { dir, configure: (c) => (c.rpc.port = port) }));
  t.regex(err2!.message, /RPC server cannot start: 127\.0\.0\.1:\d+ is in use/);
  t.true(existsSync(first.config.rpc.cookie_file), "the running host's cookie is untouched");
  t.is((await post(first, { jsonrpc: "2.0", id: 1, method: "list" })).status, 200);
});

// ---------------------------------------------------------------------------------------
// The command line against a running host process

async function writeConfig(dir: string, port: number): Promise<string> {
  const file = path.join(dir, "modhost.toml");
  await writeFile(file, [
    "[host]", 'log_level = "info"', "",
    "[chain]", "mature_blocks = 10", "",
    "[modules]", 'modules_dir = "modules"', "",
    "[modules.default_limits]", "health_interval_ms = 0", "stop_timeout_ms = 1000", "",
    "[modules.grants.echo]", 'allow = ["register_rpc_endpoint"]', "",
    "[rpc]", `port = ${port}`, 'cookie_file = "run/.cookie"', "",
    "[trust]", 'signatures = "allow-unsigned"', "", // an unsigned test module (docs/signing.md)
  ].join("\n"));
  return file;
}

async function modhost(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [MODHOST, ...args], { cwd: ROOT, timeout: 30_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === "number" ? e.code : -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

test("CLI: modhost list, a module command, call and stop against a running host", async (t) => {
  t.timeout(180_000);
  const dir = await tempDir(t);
  await mkdir(path.join(dir, "modules", "echo"), { recursive: true });
  await writeFile(path.join(dir, "modules", "echo", "module.toml"), ECHO.toml);
  await writeFile(path.join(dir, "modules", "echo", "index.ts"), ECHO.files["index.ts"]!);
  const config = await writeConfig(dir, await freePort());
  const child = spawn(process.execPath, [MODHOST, "run", "--config", config], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  child.stdout.on("data", (d) => (log += d));
  child.stderr.on("data", (d) => (log += d));
  let ended: number | null | undefined;
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve((ended = code))));
  t.teardown(() => {
    child.kill("SIGKILL");
  });
  const cookie = path.join(dir, "run", ".cookie");
  await waitFor(() => {
    if (ended !== undefined) throw new Error(`the host ended (code ${ended}) before serving:\n${log}`);
    return existsSync(cookie) && /serving echo\.echo/.test(log);
  }, 90_000, "the host to serve", () => log);

  const list = await modhost(["list", "--config", config]);
  t.is(list.code, 0, list.stderr);
  t.regex(list.stdout, /^MODULE\s+VERSION\s+RUNTIME\s+SANDBOX\s+STATE/m);
  t.regex(list.stdout, /^echo\s+0\.1\.0\s+isolate\s+(isolate|full|degraded)\s+running\s+\d+\s+0\s+\d+(\.\d+)? \S+\/\d+(\.\d+)? \S+\s+\d+\/\d+$/m);

  const greet = await modhost(["echo", "greet", "world", "--config", config]);
  t.is(greet.code, 0, greet.stderr);
  t.is(greet.stdout, "hello world\n");

  const help = await modhost(["echo", "--config", config]);
  t.regex(help.stdout, /modhost echo greet <who>\s+Say hello/);

  const usage = await modhost(["echo", "greet", "--config", config]);
  t.is(usage.code, 1);
  t.regex(usage.stderr, /echo greet needs <who>/);

  const called = await modhost(["call", "echo.echo", '{"x": 1}', "--config", config]);
  t.is(called.code, 0, called.stderr);
  t.deepEqual(JSON.parse(called.stdout), { echoed: { x: 1 }, from: "echo" });

  const unknown = await modhost(["nosuchmodule", "--config", config]);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /unknown command "nosuchmodule"/);

  const stop = await modhost(["stop", "--config", config]);
  t.is(stop.code, 0, stop.stderr);
  t.is(await exited, 0, log);
  t.false(existsSync(cookie), "the cookie is gone with the host");
});

test("CLI: with no running host, host commands and module commands fail clearly with exit 1; other words get the usage", async (t) => {
  const dir = await tempDir(t);
  await mkdir(path.join(dir, "modules", "echo"), { recursive: true });
  await writeFile(path.join(dir, "modules", "echo", "module.toml"), ECHO.toml);
  const port = await freePort();
  const config = await writeConfig(dir, port);

  const list = await modhost(["list", "--config", config]);
  t.is(list.code, 1);
  t.regex(list.stderr, new RegExp(`no modhost is running at 127\\.0\\.0\\.1:${port} \\(no cookie file at .*\\.cookie\\); start one with modhost run`));

  // A stale cookie from a host that died: the connection is what fails.
  await mkdir(path.join(dir, "run"), { recursive: true });
  await writeFile(path.join(dir, "run", ".cookie"), `__cookie__:${"ab".repeat(32)}`, { mode: 0o600 });
  const mod = await modhost(["echo", "greet", "x", "--config", config]);
  t.is(mod.code, 1);
  t.regex(mod.stderr, new RegExp(`no modhost is running at 127\\.0\\.0\\.1:${port} \\(could not connect\\); start one with modhost run`));

  const other = await modhost(["frobnicate", "--config", config]);
  t.is(other.code, 2);
  t.regex(other.stderr, /unknown command "frobnicate"/);
  t.regex(other.stderr, /Usage:/);
});

test("a client that half-closes its connection once its request is sent (shutdown for writing) gets the answer of a module's method, and the connection then ends (before: 0 of 20 answered, the connection closed with nothing)", async (t) => {
  const h = await startHost(t, {
    inline: { target: inlineModule("target", ["register_rpc_endpoint"], `await ctx.rpc.register("echo", "answers its params", (params: any) => ({ got: params }));`) },
    grants: { target: ["register_rpc_endpoint"] },
  });
  const auth = await cookieAuth(h);
  const port = h.host.rpcServer!.address!.port;
  const answers: unknown[] = [];
  for (let i = 0; i < 20; i++) {
    // postRaw half-closes after the body and resolves when the server has closed the connection.
    const r = await postRaw(port, auth, Buffer.from(JSON.stringify({ jsonrpc: "2.0", id: i, method: "target.echo", params: { i } })));
    t.is(r.status, 200, r.text.slice(0, 200));
    answers.push((JSON.parse(r.text) as { result: unknown }).result);
  }
  t.deepEqual(answers, Array.from({ length: 20 }, (_, i) => ({ got: { i } })));
});
