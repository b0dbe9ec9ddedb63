// modhost/testing, the harness for module authors (testing/index.ts), tried as an author's
// test would use it: through the package export, against modules in their own directories.
import test from "ava";
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { RpcError, startHost } from "modhost/testing";
import { tempDir } from "./helpers/host.ts";

/** A module directory outside any modules dir, as an author has one. */
async function moduleDir(parent: string, name: string, capabilities: string[], code: string): Promise<string> {
  const dir = path.join(parent, name);
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, "module.toml"), `name = "${name}"\nversion = "0.1.0"\nentry_point = "index.ts"\ncapabilities = ${JSON.stringify(capabilities)}\n`);
  await writeFile(path.join(dir, "index.ts"), code);
  return dir;
}

const ECHO_CAPS = ["read_chain_state", "subscribe_events=NewBlock", "read_storage", "write_storage", "register_rpc_endpoint", "register_module_api", "report_metrics", "publish_events"];
const ECHO = `
export default async function start(ctx) {
  await ctx.storage.openTree("seen");
  await ctx.rpc.register("height", "tip height", async () => ctx.chain.getBlockHeight());
  await ctx.rpc.register("fail", "always throws", async () => { throw new Error("asked to fail"); });
  await ctx.modules.registerApi({ whoami: async (_p, { caller }) => ({ caller }) });
  await ctx.events.subscribe("NewBlock", async (ev) => {
    await ctx.storage.put("seen", String(ev.payload.height), ev.payload.hash);
    await ctx.metrics.report("blocks", 1, { kind: "counter" });
    await ctx.events.publish("stored", { height: ev.payload.height });
    ctx.log.info("stored " + ev.payload.height);
  });
}
`;

test("startHost grants what module.toml requests and reaches the module by RPC, module API, storage, metrics, logs and events", async (t) => {
  const src = await moduleDir(await tempDir(t), "echo", ECHO_CAPS, ECHO);
  const h = await startHost({ modules: [src], teardown: t.teardown.bind(t) });
  t.is((await h.waitForState("echo", "running")).state, "running");
  t.deepEqual([...h.status("echo")!.grants].sort(), [...ECHO_CAPS].sort());

  const since = h.eventMark();
  const height = await h.mine(1);
  await h.waitForLog(new RegExp(`^stored ${height}$`), { module: "echo" });
  t.is(await h.storage("echo").get("seen", String(height)), await h.chain.getChainTip());
  t.is(await h.rpc("echo.height"), height);
  const err = await t.throwsAsync(h.rpc("echo.fail"), { instanceOf: RpcError });
  t.is(err?.code, -32000);
  t.regex(err?.message ?? "", /asked to fail/);
  t.deepEqual(await h.callModule("echo", "whoami", {}, { caller: "my-test" }), { caller: "my-test" });
  t.is(h.metric("echo", "blocks"), 1);
  const ev = await h.waitForEvent("echo:stored", (p) => p.height === height, { since });
  t.deepEqual(ev.payload, { height });
});

test("with a directory of its own choosing, the host keeps it at stop and storage stays readable", async (t) => {
  const parent = await tempDir(t);
  const src = await moduleDir(parent, "echo", ECHO_CAPS, ECHO);
  const h = await startHost({ modules: [src], dir: path.join(parent, "host"), teardown: t.teardown.bind(t) });
  await h.waitForState("echo", "running");
  const height = await h.mine(1);
  await h.waitForLog(new RegExp(`^stored ${height}$`), { module: "echo" });
  const tip = await h.chain.getChainTip();
  await h.stop();
  t.true(existsSync(h.dir));
  t.is(h.status("echo")?.state, "stopped");
  t.deepEqual(await h.storage("echo").iterate("seen"), [{ key: String(height), value: tip }]);
});

test("reading a module's storage while it loads never takes its store: the load succeeds and the reads see its data", async (t) => {
  const parent = await tempDir(t);
  const src = await moduleDir(parent, "echo", ECHO_CAPS, ECHO);
  const h = await startHost({ modules: [src], teardown: t.teardown.bind(t) });
  await h.waitForState("echo", "running");
  const height = await h.mine(1);
  await h.waitForLog(new RegExp(`^stored ${height}$`), { module: "echo" });
  const tip = await h.chain.getChainTip();
  for (let round = 0; round < 3; round++) {
    await h.host.manager.unload("echo");
    // Reads in a loop from before the load until after it: a reader that opened the store on
    // its own while the module was stopped made the load fail ("LevelDB lock held").
    let loaded = false;
    const reads: unknown[] = [];
    const reader = (async () => {
      while (!loaded) {
        reads.push(await h.storage("echo").get("seen", String(height)));
        await new Promise((r) => setImmediate(r)); // a read of an open store is microtasks only: let the load go on
      }
    })();
    const status = await h.host.manager.load("echo").finally(() => (loaded = true));
    await reader;
    t.is(status.state, "running", `round ${round}`);
    t.true(reads.length > 0 && reads.every((r) => r === tip), `round ${round}: ${reads.length} reads, each of the stored value`);
  }
});

test("each host has its own directory, chain and port, and stop() removes the directory", async (t) => {
  const src = await moduleDir(await tempDir(t), "echo", ECHO_CAPS, ECHO);
  const [a, b] = await Promise.all([startHost({ modules: [src] }), startHost({ modules: [src] })]);
  t.teardown(() => Promise.all([a.stop(), b.stop()]));
  t.not(a.dir, b.dir);
  t.not(a.host.rpcServer?.address?.port, b.host.rpcServer?.address?.port);
  await a.mine(3);
  t.is(await a.height(), 104);
  t.is(await b.height(), 101, "the other host's chain did not move");
  await a.stop();
  t.false(existsSync(a.dir), "a's directory is gone");
  t.true(existsSync(b.dir), "b's directory is still there");
});

test("a smaller grant than the module requests is refused as the product refuses it", async (t) => {
  const src = await moduleDir(await tempDir(t), "echo", ECHO_CAPS, ECHO);
  const h = await startHost({ modules: [src], grants: { echo: ["read_chain_state"] }, teardown: t.teardown.bind(t) });
  const status = await h.waitForState("echo", ["skipped", "failed"]);
  t.true(status.missing.includes("register_rpc_endpoint"), `missing: ${status.missing.join(", ")}`);
});

test("sendTransaction and reorg reach the module as mempool and chain events", async (t) => {
  const src = await moduleDir(await tempDir(t), "watcher", ["subscribe_events=MempoolTransactionAdded,ChainReorg"], `
export default async function start(ctx) {
  await ctx.events.subscribe(["MempoolTransactionAdded", "ChainReorg"], (ev) => ctx.log.info(ev.type + " " + (ev.payload.txid ?? ev.payload.fork_height)));
}
`);
  const h = await startHost({ modules: [src], teardown: t.teardown.bind(t) });
  await h.waitForState("watcher", "running");
  const txid = await h.sendTransaction();
  await h.waitForLog(new RegExp(`^MempoolTransactionAdded ${txid}$`), { module: "watcher" });
  await h.mine(2);
  const { disconnected, connected } = await h.reorg(2, 3);
  t.is(disconnected.length, 2);
  t.is(connected.length, 3);
  await h.waitForLog(/^ChainReorg 101$/, { module: "watcher" });
  t.is(await h.height(), 104);
});

test("a wait that times out says what it waited for and shows the log's tail", async (t) => {
  const src = await moduleDir(await tempDir(t), "echo", ECHO_CAPS, ECHO);
  const h = await startHost({ modules: [src], teardown: t.teardown.bind(t) });
  const err = await t.throwsAsync(h.waitForLog(/never said/, { module: "echo", timeoutMs: 200 }));
  t.regex(err?.message ?? "", /timed out after 200 ms waiting for a log line matching \/never said\/ from echo/);
  t.regex(err?.message ?? "", /--- log tail ---[\s\S]*loaded echo/);
});

test("startHost says what is wrong with a directory that is not a module", async (t) => {
  const dir = await tempDir(t);
  await t.throwsAsync(startHost({ modules: [dir] }), { message: new RegExp(`${dir} has no module.toml`) });
  await t.throwsAsync(startHost({ modules: [] }), { message: /give the module directories to run/ });
});
