// __NAME__ (built: npm run build) under a real modhost (embedded chain, native sandbox), with the
// modhost/testing harness and node:test. Run: npm test (`modhost test`, which runs ./build.sh first).
import { test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { startHost } from "modhost/testing";

const MODULE = fileURLToPath(new URL("..", import.meta.url));

test("stores each mined block and serves the last over RPC", async (t) => {
  const h = await startHost({ modules: [MODULE], teardown: (stop) => t.after(stop) });
  await h.waitForState("__NAME__", "running");
  const height = await h.mine(1);
  await h.waitForLog(new RegExp(`^block ${height} stored`), { module: "__NAME__" });

  const tip = await h.chain.getChainTip();
  const stored = await h.storage("__NAME__").get("blocks", String(height).padStart(10, "0"));
  assert.equal(stored, tip, "height -> hash");
  assert.deepEqual(await h.rpc("__NAME__.last"), { height, hash: tip });
});
