// A hostile native module under the real host, in the real sandbox, next to a well-behaved
// TypeScript module: it requests capabilities it lacks, sends garbage on its channel, tries to
// leave its sandbox, then breaks the framing; another one claims to be a different module.
// Every attempt fails, the audit log records the denials, and the good module keeps working.

import test from "ava";
import { readFile, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { buildModulesDir, startHost, tempDir, GOOD_GRANTS } from "./helpers/host.ts";
import { writeNodeNative } from "./helpers/native.ts";

const MAIN = fileURLToPath(new URL("./fixtures/hostile-native/main.ts", import.meta.url));

async function writeHostile(modulesDir: string, name: string): Promise<void> {
  await writeNodeNative(modulesDir, name, MAIN, ["read_chain_state"]);
}

test("a hostile native module is refused at every step; the audit log records it; the host and the good module carry on", async (t) => {
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  await writeHostile(modulesDir, "hostile");
  const secret = path.join(dir, "host-secret.txt");
  await writeFile(secret, "HOST SECRET");
  const server = net.createServer((s) => s.end("hello from the host's loopback\n"));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  t.teardown(() => server.close());
  const port = (server.address() as net.AddressInfo).port;

  const h = await startHost(t, {
    dir,
    modules: [],
    grants: { good: GOOD_GRANTS, hostile: ["read_chain_state"] },
    moduleLimits: { hostile: { restart: "never" } },
    moduleConfigs: { hostile: { other_data_dir: path.join(dir, "data", "modules", "good"), host_pid: process.pid, port, secret } },
  });
  const report = (await h.waitForLog(/^hostile report$/, { source: "hostile", timeoutMs: 30_000 })).fields as Record<string, unknown>;

  // Capabilities it lacks: refused, the connection kept.
  t.is(report.storage_insert, "permission_denied");
  t.is(report.read_file, "permission_denied");
  t.is(report.call_module, "permission_denied");
  t.is(report.invalid_msgpack, "invalid_message");
  t.is(report.unknown_kind, "invalid_message");
  t.is(report.still_served, 101, "served normally after the garbage");
  // The sandbox: nothing outside is reachable.
  t.is(report.read_secret, "ENOENT");
  t.is(report.read_shadow, "ENOENT");
  t.is(report.other_data, "ENOENT");
  t.regex(String(report.write_usr), /^(EROFS|EACCES|EPERM|ENOENT)$/);
  t.is(report.kill_host, "ESRCH");
  t.regex(String(report.tcp), /^(EPERM|EACCES|ENETUNREACH|ECONNREFUSED)$/);
  t.is(h.mustStatus("hostile").sandbox, "full");

  // The oversized frame ends its connection, and with it the module (restart = never).
  const crashed = await h.waitForEvent("ModuleCrashed", (p) => p.module === "hostile", { timeoutMs: 20_000 });
  t.regex(String((crashed.payload as { error: string }).error), /exceeds the maximum|closed|exited/);

  // The audit log has one denied record per refused request, naming module and capability.
  const audit = (await readFile(h.config.host.audit_log, "utf8")).trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
  const denied = audit.filter((r) => r.kind === "denied" && r.module === "hostile");
  t.deepEqual(denied.map((r) => [r.action, r.permission]).sort(), [["call_module", "call_module"], ["read_file", "read_filesystem"], ["storage_insert", "write_storage"]]);
  t.truthy(audit.find((r) => r.kind === "lifecycle" && r.module === "hostile" && r.action === "crash"));

  // The host and the good module are unaffected.
  const mark = h.mark();
  const height = await h.mine(1);
  await h.waitForLog(new RegExp(`stored block ${height}`), { source: "good", since: mark, timeoutMs: 20_000 });
  t.is(h.mustStatus("good").state, "running");
});

test("a native module that says hello as another module is refused", async (t) => {
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir, ["good"]);
  await writeHostile(modulesDir, "impostor");
  const h = await startHost(t, {
    dir,
    modules: [],
    grants: { good: GOOD_GRANTS, impostor: ["read_chain_state"] },
    moduleConfigs: { impostor: { impersonate: "good" } },
  });
  const s = await h.waitForState("impostor", "failed", 30_000);
  t.regex(s.problem ?? "", /this channel belongs to module "impostor", not "good"/);
  t.is(h.mustStatus("good").state, "running");
});
