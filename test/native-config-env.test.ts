// A native module's config reaches it as MODULE_CONFIG_<KEY> environment entries. The kernel
// refuses an entry over 128 KiB (spawn then fails with a bare E2BIG); the host refuses it
// first, naming the key, the limit and what to do.

import test from "ava";
import { MAX_CONFIG_ENV_BYTES, MAX_ENV_ENTRY_BYTES, nativeSpawnSpec } from "../runtime/native/runtime.ts";

const manifest = { name: "big-config", dir: "/m", entry_point: "bin", runtime: "native" } as never;

test("config entries become MODULE_CONFIG_ environment entries; tables as JSON", (t) => {
  const spec = nativeSpawnSpec(manifest, "/d", { peers: ["a", "b"], url: "http://x", "fee-rate": 2 });
  t.is(spec.env["MODULE_CONFIG_PEERS"], '["a","b"]');
  t.is(spec.env["MODULE_CONFIG_URL"], "http://x");
  t.is(spec.env["MODULE_CONFIG_FEE_RATE"], "2");
});

test("a config entry over one environment entry's limit is refused naming the key and the limit, not left to spawn's E2BIG", (t) => {
  const big = "x".repeat(MAX_ENV_ENTRY_BYTES);
  const err = t.throws(() => nativeSpawnSpec(manifest, "/d", { small: 1, blob: big }));
  t.regex(err.message, /native module big-config .*MODULE_CONFIG_BLOB is \d+ bytes, over the 131072 bytes one environment entry may hold; keep large data in a file .*\[modules\.big-config\]/);
  t.notThrows(() => nativeSpawnSpec(manifest, "/d", { blob: "x".repeat(MAX_ENV_ENTRY_BYTES - 100) }), "just under the limit passes");
});

test("config entries that together pass the environment's budget are refused naming the total", (t) => {
  const entries = Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`part${i}`, "y".repeat(120 * 1024)]));
  const err = t.throws(() => nativeSpawnSpec(manifest, "/d", entries));
  t.regex(err.message, new RegExp(`MODULE_CONFIG_ entries take \\d+ bytes with MODULE_CONFIG_PART\\d, over ${MAX_CONFIG_ENV_BYTES} in all`));
});
