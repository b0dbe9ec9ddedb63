// What one accepted frame may cost the host (docs/protocol.md section 3.1): a native module
// under the real host, in its sandbox, sends the most expensive frame shapes it can (32,760
// distinct map keys, 16 MiB strings, 65,500 values, a 9,000-operation transaction, a 15 MiB
// log line) and serves JSON-RPC answers as large as a frame allows. The distinct keys are
// refused by max_map_keys, the rest answered; meanwhile a well-behaved module keeps storing
// blocks and the RPC server answers. The longest stall of the host's loop is logged (t.log),
// not asserted: speed lives in bench/host-loop.ts.

import test from "ava";
import { chmod, writeFile } from "node:fs/promises";
import path from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { bundleNodeModule } from "../sdk/node/bundle.ts";
import { buildModulesDir, startHost, tempDir, writeModule, GOOD_GRANTS } from "./helpers/host.ts";
import { call, post } from "./helpers/rpc.ts";

const MAIN = fileURLToPath(new URL("./fixtures/wire-cost/main.ts", import.meta.url));

test("hostile: the costliest frames a native module can send are refused (distinct keys) or answered; blocks keep being stored, RPC keeps answering", async (t) => {
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  const toml = `name = "wire"\nversion = "0.1.0"\nentry_point = "main.mjs"\nruntime = "native"\ncapabilities = ["read_chain_state", "read_storage", "write_storage", "register_rpc_endpoint"]\n`;
  const mdir = await writeModule(modulesDir, "wire", { toml, files: {} });
  await writeFile(path.join(mdir, "main.mjs"), await bundleNodeModule(MAIN), { mode: 0o755 });
  await chmod(mdir, 0o755);
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  t.teardown(() => loop.disable());
  const h = await startHost(t, {
    dir,
    modules: [],
    grants: { good: GOOD_GRANTS, wire: ["read_chain_state", "read_storage", "write_storage", "register_rpc_endpoint"] },
    moduleLimits: { wire: { restart: "never", request_timeout_ms: 60_000 } },
  });
  loop.reset();
  const report = (await h.waitForLog(/^wire-cost report$/, { source: "wire", timeoutMs: 120_000 })).fields as Record<string, string | number>;
  t.regex(String(report.distinct_keys), /^invalid_message: .*distinct map keys.* over the protocol limit max_map_keys = 4096/);
  for (const shape of ["ascii_16mib", "two_byte_16mib", "strings_65500", "nils_65500", "storage_transaction_9000"]) {
    t.is(report[shape], "answered", shape);
  }
  t.is(report.after_all, 101, "the log line was handled and the session still serves");
  t.truthy(h.records.find((r) => r.source === "wire" && r.message.length === 15 * 1024 * 1024 || (r.source === "wire" && /^m{100}/.test(r.message))), "the 15 MiB log line reached the log (cut or whole)");

  const framesStall = loop.max / 1e6;
  loop.reset();
  // JSON-RPC answers as large as a frame allows: answered in slices, binary as hex.
  const s = await call(h, "wire.big_string");
  t.is(s.s.length, 16 * 1024 * 1024 - 4096);
  const b = await post(h, { jsonrpc: "2.0", id: 2, method: "wire.big_binary" });
  t.is(b.json.result.b.length, 24 * 1024 * 1024);
  t.true(/^(ab)+$/.test(b.json.result.b.slice(0, 64)));

  // The canary: still storing blocks, the RPC server still answering.
  const mark = h.mark();
  const height = await h.mine(1);
  await h.waitForLog(new RegExp(`stored block ${height}`), { source: "good", since: mark, timeoutMs: 20_000 });
  t.is(h.mustStatus("good").state, "running");
  t.is(h.mustStatus("wire").state, "running");
  t.log(`longest stall of the loop (host and test share it) while the frames were handled: ${framesStall.toFixed(1)} ms; during the RPC calls (the test's own JSON.parse of 16-24 MiB included): ${(loop.max / 1e6).toFixed(1)} ms`);
});
