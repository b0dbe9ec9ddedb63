// The shipped Rust module, built by `npm run setup` (scripts/build-rust.sh), runs under the
// host in the native sandbox: it reads chain data, follows new blocks through events and keeps
// height -> hash in its storage through the host, serves an RPC method and a metric, and
// stops cleanly.

import test from "ava";
import { existsSync } from "node:fs";
import path from "node:path";
import { startHost, ROOT } from "./helpers/host.ts";
import { call, get } from "./helpers/rpc.ts";
import { ModuleStore } from "../storage/store.ts";
import { detectSandbox } from "../runtime/sandbox/index.ts";

const BINARY = path.join(ROOT, "modules/rust-example/target/release/rust-example");
const GRANTS = ["read_blockchain", "read_chain_state", "subscribe_events=NewBlock", "read_storage", "write_storage", "register_rpc_endpoint", "report_metrics"];

/** A host running the shipped rust-example from modules/ (built by npm run setup). */
async function rustExampleHost(t: Parameters<typeof startHost>[0]) {
  t.true(existsSync(BINARY), `${BINARY} is missing: build it with scripts/build-rust.sh (npm run setup does)`);
  return startHost(t, {
    grants: { "rust-example": GRANTS },
    configure: (config) => {
      config.modules.modules_dir = path.join(ROOT, "modules");
      config.modules.enabled_modules = ["rust-example"];
      // The shipped module is unsigned (it is built in place); the harness allows unsigned
      // modules, and verification is tested in verify.test.ts.
    },
  });
}

test("rust-example runs sandboxed, follows blocks and stores height -> hash", async (t) => {
  const h = await rustExampleHost(t);
  const status = await h.waitForState("rust-example", "running", 30_000);
  const caps = await detectSandbox();
  t.is(status.sandbox, caps.best, "the module got the best sandbox this machine offers");
  t.is(status.runtime, "native");
  await h.waitForLog(/rust-example: regtest chain at height 101/, { source: "rust-example", timeoutMs: 20_000 });
  // A first start has no cursor: it records the tip it finds (the catch-up contract).
  await h.waitForLog(/rust-example: caught up: 1 blocks recorded, 0 unwound/, { source: "rust-example", timeoutMs: 20_000 });

  const hashes: string[] = [await h.chain.getChainTip()];
  for (let i = 0; i < 3; i++) {
    const mark = h.mark();
    const height = await h.mine(1);
    hashes.push(await h.chain.getChainTip());
    await h.waitForLog(new RegExp(`rust-example: block ${height} has \\d+ txs`), { source: "rust-example", since: mark, timeoutMs: 20_000 });
  }
  // Its RPC method and its metric, served by the host.
  t.deepEqual(await call(h, "rust-example.last"), { height: 104, hash: hashes[3] });
  t.regex((await get(h, "/metrics")).text, /^blocks_seen_total\{module="rust-example"\} 4$/m);

  const mark = h.mark();
  await h.stop();
  t.truthy(h.logsOf("rust-example", mark).find((r) => /rust-example: stopped after 3 blocks/.test(r.message)), "it stopped cleanly after its shutdown invocation");

  // What it stored went through the host into its own LevelDB.
  const store = await ModuleStore.open(h.storageDir("rust-example"));
  t.teardown(() => store.close());
  const rows = await store.iterate("tips");
  t.deepEqual(rows.map((r) => r.value), hashes);
  t.deepEqual(rows.map((r) => r.key), ["0000000101", "0000000102", "0000000103", "0000000104"]);
});

test("rust-example ends as the active chain when a reorg replaces blocks its running catch-up already recorded", async (t) => {
  const h = await rustExampleHost(t);
  await h.waitForState("rust-example", "running", 30_000);
  await h.waitForLog(/rust-example: caught up: 1 blocks recorded, 0 unwound/, { source: "rust-example", timeoutMs: 20_000 });
  const base = await h.chain.getBlockHeight();
  // 40 blocks at once: a catch-up records them one after another. The host holds its write of
  // height base + 20 until a reorg has replaced 30 blocks, 10 of them below that write.
  const store = h.manager.storeOf("rust-example")!;
  const put = store.put.bind(store);
  let reorged: Promise<unknown> | undefined;
  store.put = async (tree, key, value) => {
    if (key === String(base + 20).padStart(10, "0")) await (reorged ??= h.chain.reorg(30));
    return put(tree, key, value);
  };
  await h.mine(40);
  await h.waitFor(() => reorged, 20_000, `its write of height ${base + 20}`);
  await reorged;
  const tip = await h.chain.getBlockHeight();
  const active: string[] = [];
  for (let height = base; height <= tip; height++) active.push((await h.chain.getBlockByHeight(height))!.hash);
  const stored = async () => (await store.iterate("tips", { gte: String(base).padStart(10, "0") })).map((r) => r.value);
  await h.waitFor(async () => (await stored()).join() === active.join(), 20_000, `its records of heights ${base}..${tip} to be the active chain`).catch(() => undefined);
  t.deepEqual(await stored(), active, "each height of the active chain once");
});
