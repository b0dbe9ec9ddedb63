// scratch
import test from "ava";
import { chmod, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { bundleNodeModule } from "../sdk/node/bundle.ts";
import { buildModulesDir, sleep, startHost, tempDir, writeModule, GOOD_GRANTS } from "./helpers/host.ts";
import { inlineModule } from "./helpers/modules.ts";
import { call, post } from "./helpers/rpc.ts";

const PROBE = fileURLToPath(new URL("./fixtures/hostile-wire/main.ts", import.meta.url));
const MB = 1024 * 1024;

const NATIVE: Record<string, [string, string[]]> = {
  "w-answers": ["answers", ["register_rpc_endpoint", "register_module_api"]],
  "w-dupids": ["dupids", ["read_chain_state"]],
  "w-churn": ["churn", ["subscribe_events", "manage_timers", "register_rpc_endpoint", "register_module_api", "report_metrics"]],
  "w-handshake": ["handshake", ["read_chain_state"]],
  "w-hs-early": ["handshake", ["read_chain_state"]],
  "w-hs-noversion": ["handshake", ["read_chain_state"]],
  "w-fds": ["fds", ["read_chain_state"]],
};

test("explore wire", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"], {
    "w-caller": inlineModule("w-caller", ["call_module"], `
      void (async () => {
        const seen: Record<string, number> = {};
        for (let i = 0; i < 200; i++) {
          const r = await ctx.modules.call("w-answers", "m", {}).then(() => "ok", (e: any) => e.code + ":" + String(e.message).length);
          seen[r] = (seen[r] ?? 0) + 1;
        }
        ctx.log.info("caller report", seen);
      })();
    `),
  });
  const code = await bundleNodeModule(PROBE);
  for (const [name, [, caps]] of Object.entries(NATIVE)) {
    const toml = `name = "${name}"\nversion = "0.1.0"\nentry_point = "main.mjs"\nruntime = "native"\ncapabilities = [${caps.map((c) => JSON.stringify(c)).join(", ")}]\n`;
    const d = await writeModule(modulesDir, name, { toml, files: {} });
    await writeFile(path.join(d, "main.mjs"), code, { mode: 0o755 });
    await chmod(d, 0o755);
  }
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, "w-caller": ["call_module=w-answers"], ...Object.fromEntries(Object.entries(NATIVE).map(([n, [, caps]]) => [n, caps])) },
    moduleConfigs: Object.fromEntries(Object.entries(NATIVE).map(([n, [mode]]) => [n, { mode, duration_ms: 15_000 }])),
  });
  await h.waitForState("good", "running", 30_000);
  const heap0 = process.memoryUsage().heapUsed;
  const lines0 = h.lines.reduce((n, l) => n + l.length, 0);
  for (let i = 0; i < 8; i++) {
    const mark = h.mark();
    const height = await h.mine(1);
    const ok = await h.waitForLog(new RegExp(`^stored block ${height}$`), { source: "good", since: mark, timeoutMs: 5000 }).then(() => true, () => false);
    const answered = await Promise.race([call(h, "list").then(() => true, () => false), sleep(5000).then(() => false)]);
    const r = await Promise.race([post(h, { jsonrpc: "2.0", id: 1, method: "w-answers.m", params: {} }).then((a) => `${a.text.length} ${a.text.slice(0, 150)}`), sleep(20000).then(() => "no answer in 20 s")]);
    const hl = await Promise.race([post(h, { jsonrpc: "2.0", id: 1, method: "health", params: [] }).then((a) => `${a.text.length}`), sleep(20000).then(() => "no answer in 20 s")]);
    t.log(`block ${height} stored=${ok} rpc=${answered} w-answers.m: ${r} health: ${hl}`);
    await sleep(1000);
  }
  await sleep(8000);
  t.log(`heap +${((process.memoryUsage().heapUsed - heap0) / MB).toFixed(0)} MB, log +${((h.lines.reduce((n, l) => n + l.length, 0) - lines0) / 1024).toFixed(0)} KiB`);
  const methods = await post(h, { jsonrpc: "2.0", id: 1, method: "rpc_methods", params: [] });
  t.log(`rpc_methods ${methods.text.length} bytes`);
  for (const n of [...Object.keys(NATIVE), "w-caller"]) t.log(n, h.status(n)?.state, h.status(n)?.restarts, h.status(n)?.problem);
  for (const r of h.records) if (r.source !== "good" && !/stored block|UNVERIFIED/.test(r.message)) t.log(`${r.level} [${r.source}] ${r.message.slice(0, 300)} ${r.fields ? JSON.stringify(r.fields).slice(0, 300) : ""}`);
  t.log(h.lines.filter((l) => l.length > 5000).length, "lines over 5000 chars; longest", Math.max(...h.lines.map((l) => l.length)));
  for (const n of [...Object.keys(NATIVE), "w-caller"]) {
    await h.manager.reload(n).catch((e) => t.log("reload " + n + " " + e));
    await h.waitForState(n, "running", 30_000).catch((e) => t.log(String(e).slice(0, 300)));
  }
  t.pass();
});
