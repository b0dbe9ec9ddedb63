// What one accepted frame may cost the host (docs/protocol.md section 3.1): a native module
// under the real host, in its sandbox, sends the most expensive frame shapes it can (32,760
// distinct map keys, 16 MiB strings, 65,500 strings, a 15 MiB log line, a 3 MB block as hex)
// and what stays allowed (65,500 nils, 60,000 short strings, a 9,000-operation transaction, a
// 3 MB block as binary), and serves JSON-RPC answers as large or as deep as it can. The
// distinct keys are refused by max_map_keys, the strings by max_total_string_bytes, answers
// nested 65 deep by the data-value depth; meanwhile a well-behaved module keeps storing blocks
// and the RPC server answers. The longest stall of the host's loop is logged (t.log),
// not asserted: speed lives in bench/host-loop.ts.

import test from "ava";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { buildModulesDir, startHost, tempDir, GOOD_GRANTS } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";
import { call, post } from "./helpers/rpc.ts";

const MAIN = fileURLToPath(new URL("./fixtures/wire-cost/main.ts", import.meta.url));

test("hostile: the costliest frames a native module can send are refused (distinct keys, strings past 1 MiB, answers 65 deep) or answered (binary, short strings, batches cut at max_response_bytes); blocks keep being stored, RPC keeps answering", async (t) => {
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  await writeNodeNative(modulesDir, "wire", MAIN, ["read_chain_state", "read_storage", "write_storage", "register_rpc_endpoint", "submit_block"]);
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  t.teardown(() => loop.disable());
  const h = await startHost(t, {
    dir,
    modules: [],
    grants: { good: GOOD_GRANTS, wire: ["read_chain_state", "read_storage", "write_storage", "register_rpc_endpoint", "submit_block"] },
    moduleLimits: { wire: { restart: "never", request_timeout_ms: 60_000 } },
  });
  loop.reset();
  const report = (await h.waitForLog(/^wire-cost report$/, { source: "wire", timeoutMs: 120_000 })).fields as Record<string, string | number>;
  t.regex(String(report.distinct_keys), /^invalid_message: .*distinct map keys.* over the protocol limit max_map_keys = 4096/);
  for (const shape of ["ascii_16mib", "two_byte_16mib", "strings_65500", "submit_block_hex_3mb"]) {
    t.regex(String(report[shape]), /^invalid_message: .* bytes of strings so far \(send large data, .* as binary.*over the protocol limit max_total_string_bytes = 1048576/, shape);
  }
  for (const shape of ["nils_65500", "strings_16b_60000", "storage_transaction_9000"]) t.is(report[shape], "answered", shape);
  t.is(report.submit_block_binary_3mb, "answered rejected", "3 MB of binary reaches the chain's checks (and is no block)");
  t.is(report.after_all, 101, "the log line was handled and the session still serves");
  t.regex(String(report.log_15mib), /over the protocol limit max_total_string_bytes/, "the 15 MiB log line was refused, and the module told why");

  const framesStall = loop.max / 1e6;
  loop.reset();
  // JSON-RPC answers as large as the limits allow: answered in slices, binary as hex.
  const s = await call(h, "wire.big_string");
  t.is(s.s.length, 1024 * 1024 - 4096);
  const huge = await post(h, { jsonrpc: "2.0", id: 3, method: "wire.huge_string" });
  t.regex(JSON.stringify(huge.json.error), /invocation_result was refused: .*max_total_string_bytes/, "16 MiB of string in an answer is refused");
  const b = await post(h, { jsonrpc: "2.0", id: 2, method: "wire.big_binary" });
  t.is(b.json.result.b.length, 24 * 1024 * 1024);
  t.true(/^(ab)+$/.test(b.json.result.b.slice(0, 64)));
  // A batch of answers that together pass max_response_bytes (32 MiB): each 24 MiB of JSON.
  const batch = await post(h, [1, 2, 3].map((id) => ({ jsonrpc: "2.0", id, method: "wire.big_binary" })));
  t.is(batch.json.length, 3);
  t.is(batch.json.filter((a: { result?: unknown }) => a.result !== undefined).length, 1, "one answer fits");
  t.deepEqual(batch.json.filter((a: { error?: { code: number } }) => a.error).map((a: { error: { code: number } }) => a.error.code), [-32006, -32006]);
  // Data values of 64 levels are answered; 65 are refused (the frame itself allows 72).
  const deep = await post(h, { jsonrpc: "2.0", id: 4, method: "wire.deep_64" });
  t.truthy(deep.json.result, JSON.stringify(deep.json.error));
  const deeper = await post(h, { jsonrpc: "2.0", id: 5, method: "wire.deep_65" });
  t.regex(JSON.stringify(deeper.json.error), /result is nested deeper than 64 levels/);

  // The canary: still storing blocks, the RPC server still answering.
  const mark = h.mark();
  const height = await h.mine(1);
  await h.waitForLog(new RegExp(`stored block ${height}`), { source: "good", since: mark, timeoutMs: 20_000 });
  t.is(h.mustStatus("good").state, "running");
  t.is(h.mustStatus("wire").state, "running");
  t.log(`longest stall of the loop (host and test share it) while the frames were handled: ${framesStall.toFixed(1)} ms; during the RPC calls (the test's own JSON.parse of 16-24 MiB included): ${(loop.max / 1e6).toFixed(1)} ms`);
});
