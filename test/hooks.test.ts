// Hooks with results (capabilities/hooks.ts, host/services/hooks.ts), under the real host, in
// both runtimes: isolate modules and native modules (a Node program on the SDK client) run the
// same hook behaviours (test/fixtures/hook-module/behaviour.ts), chosen by their configuration.
// Each hook module logs "hook called" before it answers, and "hook registered" / "hook refused"
// with what its registrations were answered. The tests run one at a time: each starts a host
// with several module processes.

import test from "ava";
import type { ExecutionContext } from "ava";
import { chmod, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { hexToBytes } from "@noble/hashes/utils.js";
import { bundleNodeModule } from "../sdk/node/bundle.ts";
import { buildModulesDir, GOOD_GRANTS, sleep, startHost, tempDir, writeModule, type InlineModule, type TestHost } from "./helpers/host.ts";
import { HOST_NOTE_BURST_BYTES, HOST_NOTE_BYTES_PER_SECOND } from "../host/log.ts";
import { callApi, inlineModule, REPORT, services, type Outcome } from "./helpers/modules.ts";
import { call, RpcFailure } from "./helpers/rpc.ts";
import { canaryRound } from "./helpers/canary.ts";
import * as v from "valibot";
import { bytesToHex } from "@noble/hashes/utils.js";
import { describeTransaction, displayHex, encodeBlock, encodeHeader, grindNonce, internalBytes, merkleRoot, type RawTransaction } from "../chain/serialise.ts";
import { HOOK_POINTS, type HookPointName } from "../capabilities/hooks.ts";
import type { HookSpec } from "./fixtures/hook-module/behaviour.ts";
import type { HookRegistry } from "../host/services/hooks.ts";
import type { HostConfig } from "../host/config.ts";
import { parseDescriptor } from "../capabilities/grants.ts";
import { hexOfRaw } from "../chain/backend.ts";

const FIXTURE = fileURLToPath(new URL("./fixtures/hook-module/", import.meta.url));
let bundled: Promise<string> | undefined;

type Runtime = "isolate" | "native";

const ISOLATE_INDEX = `
import { answerHook, hookSpecs } from "./behaviour.ts";
export default async function start(ctx: any): Promise<void> {
  for (const s of hookSpecs(ctx.config)) {
    try {
      const handler = async (payload: any, meta: any) => {
        ctx.log.info("hook called", { point: meta.point, payload });
        return answerHook(s, ctx.module.name, payload);
      };
      const result = await ctx.hooks.register(s.point, handler, { before: s.before, after: s.after });
      ctx.log.info("hook registered", { point: s.point, result });
    } catch (e: any) {
      ctx.log.info("hook refused", { point: s.point, code: String(e?.code ?? "thrown"), message: String(e?.message ?? e) });
    }
  }
}
`;

function manifest(name: string, runtime: Runtime, capabilities: string[]): string {
  return [
    `name = "${name}"`, `version = "0.1.0"`, `entry_point = "${runtime === "native" ? "main.mjs" : "index.ts"}"`,
    ...(runtime === "native" ? [`runtime = "native"`] : []),
    `capabilities = ${JSON.stringify(capabilities)}`, "",
  ].join("\n");
}

/** Write a hook module of `runtime` requesting `capabilities` into `modulesDir`. */
async function writeHookModule(modulesDir: string, name: string, runtime: Runtime, capabilities: string[]): Promise<void> {
  const behaviour = await readFile(path.join(FIXTURE, "behaviour.ts"), "utf8");
  if (runtime === "isolate") {
    await writeModule(modulesDir, name, { toml: manifest(name, runtime, capabilities), files: { "index.ts": ISOLATE_INDEX, "behaviour.ts": behaviour } });
    return;
  }
  const dir = await writeModule(modulesDir, name, { toml: manifest(name, runtime, capabilities), files: {} });
  bundled ??= bundleNodeModule(path.join(FIXTURE, "main.ts"));
  await writeFile(path.join(dir, "main.mjs"), await bundled, { mode: 0o755 });
  await chmod(path.join(dir, "main.mjs"), 0o755);
  await chmod(dir, 0o755);
}

interface HookModule {
  runtime: Runtime;
  hooks: HookSpec[];
  /** Requested and granted; default: register_hook scoped to the points of `hooks`. */
  grants?: string[];
}

/** A host with these hook modules (and `inline` isolate modules), each granted what it requests. */
async function hookHost(t: ExecutionContext, modules: Record<string, HookModule>, inline: Record<string, InlineModule & { grants: string[] }> = {}, configure?: (config: HostConfig) => void): Promise<TestHost> {
  const dir = await tempDir(t);
  const modulesDir = await buildModulesDir(dir);
  const grants: Record<string, string[]> = {};
  const moduleConfigs: Record<string, Record<string, unknown>> = {};
  // Generous start deadlines: the machine these tests run on may be loaded far beyond its cores.
  const moduleLimits: Record<string, { restart: "never"; start_timeout_ms: number }> = {};
  for (const [name, m] of Object.entries(modules)) {
    grants[name] = m.grants ?? [`register_hook=${[...new Set(m.hooks.map((h) => h.point))].join(",")}`];
    moduleConfigs[name] = { hooks: m.hooks };
    moduleLimits[name] = { restart: "never", start_timeout_ms: 60_000 };
    await writeHookModule(modulesDir, name, m.runtime, grants[name]!);
  }
  for (const [name, m] of Object.entries(inline)) {
    grants[name] = m.grants;
    await writeModule(modulesDir, name, m);
  }
  return startHost(t, { dir, grants, moduleConfigs, moduleLimits, limits: { start_timeout_ms: 60_000 }, ...(configure ? { configure } : {}) });
}

const registry = (h: TestHost) => services(h).hooks as HookRegistry;

/** The "hook called" records of `module` since `since`. */
const callsOf = (h: TestHost, module: string, since: number) => h.records.slice(since).filter((r) => r.source === module && r.message === "hook called");

/** Every payload the hook modules were called with fits its point's declared schema; returns how many were checked. */
function payloadsFitSchemas(t: ExecutionContext, h: TestHost): number {
  const calls = h.records.filter((r) => r.message === "hook called");
  for (const r of calls) {
    const { point, payload } = r.fields as { point: HookPointName; payload: unknown };
    const parsed = v.safeParse(HOOK_POINTS[point].payload, payload);
    t.true(parsed.success, `${point} payload ${JSON.stringify(payload).slice(0, 200)}: ${parsed.success ? "" : v.summarize(parsed.issues)}`);
  }
  return calls.length;
}

/** Wait until every module has registered its hooks (or said it was refused). */
async function registered(h: TestHost, names: string[]): Promise<Record<string, Record<string, unknown>>> {
  const out: Record<string, Record<string, unknown>> = {};
  for (const name of names) out[name] = (await h.waitForLog(/^hook (registered|refused)$/, { source: name, timeoutMs: 60_000 })).fields as Record<string, unknown>;
  return out;
}

/** An unsigned spend of a mature coinbase (the embedded chain does not run scripts). */
async function spendCoinbase(h: TestHost, height: number): Promise<{ txid: string; hex: string }> {
  const cb = (await h.chain.getBlockByHeight(height))!.transactions[0]!;
  const raw: RawTransaction = {
    version: 2, segwitFlag: false,
    inputs: [{ txid: hexToBytes(cb.txid), index: 0, finalScriptSig: new Uint8Array(0), sequence: 0xffffffff }],
    outputs: [{ amount: BigInt(cb.outputs[0]!.value - 10_000), script: hexToBytes("51") }],
    witnesses: undefined, lockTime: 0,
  };
  const tx = describeTransaction(raw);
  return { txid: tx.txid, hex: hexOfRaw(tx.hex) };
}

/** An isolate module whose API submits a transaction and answers the outcome as data. */
const SUBMITTER = {
  ...inlineModule("submitter", ["send_transactions", "read_blockchain", "register_module_api"], `
    await ctx.modules.registerApi({
      submit: (p: any) => report(() => ctx.mempool.submit(p.hex)),
      template: () => report(() => ctx.mining.getBlockTemplate({ coinbase_script: "51" })),
    });
  `, REPORT),
  grants: ["send_transactions", "read_blockchain", "register_module_api"],
};

const TARGET = {
  ...inlineModule("target", ["register_rpc_endpoint"], `await ctx.rpc.register("echo", "answers its params", (params: any) => ({ got: params }));`),
  grants: ["register_rpc_endpoint"],
};

// ---------------------------------------------------------------------------------------

test.serial("hooks of both runtimes run in the order before/after and the operator's order give; each modify reaches the next hook and the caller", async (t) => {
  t.timeout(240_000);
  const trail = (extra: Partial<HookSpec> = {}): HookSpec[] => [{ point: "rpc_dispatch", behaviour: "trail", ...extra }];
  const h = await hookHost(t, {
    "hook-a": { runtime: "isolate", hooks: trail() },
    "hook-n": { runtime: "native", hooks: trail() },
    // Asks to run before hook-n.
    "hook-c": { runtime: "isolate", hooks: trail({ before: ["hook-n"] }) },
  }, { target: TARGET }, (config) => {
    config.hooks = { rpc_dispatch: { order: ["hook-n", "hook-a"] } };
  });
  const regs = await registered(h, ["hook-a", "hook-n", "hook-c"]);
  for (const name of ["hook-a", "hook-n", "hook-c"]) t.like(regs[name], { point: "rpc_dispatch" }, `${name} registered`);
  await h.waitForLog(/^loaded target/, { timeoutMs: 60_000 });

  // Operator: hook-n before hook-a; hook-c: before hook-n.
  t.deepEqual(registry(h).chain("rpc_dispatch"), ["hook-c", "hook-n", "hook-a"]);
  t.deepEqual(await call(h, "target.echo", { trail: ["client"] }), { got: { trail: ["client", "hook-c", "hook-n", "hook-a"] } },
    "each hook saw the previous hook's params and the module got the last ones");
  const since = h.mark();
  // The operator reverses the order (a reload applies at once): hook-a first; hook-c still before hook-n.
  h.host.config.hooks = { rpc_dispatch: { order: ["hook-a", "hook-n"] } };
  t.deepEqual(await call(h, "target.echo", { trail: [] }), { got: { trail: ["hook-a", "hook-c", "hook-n"] } });
  // What each hook was given: the payload as the previous hook left it.
  const seen = callsOf(h, "hook-n", since).map((r) => (r.fields as { payload: { params: { trail: string[] } } }).payload.params.trail);
  t.deepEqual(seen, [["hook-a", "hook-c"]]);
  t.true(payloadsFitSchemas(t, h) >= 6);
});

test.serial("a before/after cycle is refused naming the modules, and a hook that modifies what its point does not allow is a failure of that hook", async (t) => {
  t.timeout(240_000);
  const h = await hookHost(t, {
    "cyc-a": { runtime: "isolate", hooks: [{ point: "tx_submit", behaviour: "continue", before: ["cyc-b"] }] },
    "cyc-b": { runtime: "native", hooks: [{ point: "tx_submit", behaviour: "continue", before: ["cyc-a"] }] },
    "bad": { runtime: "native", hooks: [{ point: "tx_submit", behaviour: "bad-modify" }] },
  }, { submitter: SUBMITTER });
  const regs = await registered(h, ["cyc-a", "cyc-b", "bad"]);
  // Whichever registered second closed the cycle and was refused; the other holds its hook.
  const refused = Object.entries(regs).filter(([, f]) => f["code"] === "invalid_params");
  t.is(refused.length, 1, JSON.stringify(regs));
  const [loser, fields] = refused[0]!;
  const winner = loser === "cyc-a" ? "cyc-b" : "cyc-a";
  t.is(String(fields["message"]), `the hook of "${loser}" at tx_submit cannot be ordered: the order has a cycle: "${loser}" -> "${winner}" -> "${loser}" ("${loser}" asked to run before "${winner}"; "${winner}" asked to run before "${loser}"); drop one of these constraints`);
  t.deepEqual(registry(h).chain("tx_submit").sort(), ["bad", winner].sort());
  await h.waitForState("submitter", "running", 60_000);

  // bad-modify changes the transaction's hex, which tx_submit hooks may not change: under the
  // default fail-open policy the hook is logged as failed and the submission goes on unchanged.
  const tx = await spendCoinbase(h, 1);
  const since = h.mark();
  t.deepEqual(await callApi<Outcome>(h, "submitter", "submit", { hex: tx.hex }), { ok: true, value: tx.txid });
  t.true(await h.chain.isInMempool(tx.txid));
  t.true(h.records.slice(since).some((r) => r.source === "hooks" && r.level === "warn" &&
    r.message === `tx_submit: the hook of bad failed (its modify changed "hex", which tx_submit hooks may not change (nothing is modifiable at this point)); fail-open: going on as if it answered continue`));
});

test.serial("a reject stops the chain: the submitting module sees hook_rejected naming the hook's module and its reason, later hooks are not called; a template hook leaves out a transaction", async (t) => {
  t.timeout(240_000);
  const h = await hookHost(t, {
    "policy": { runtime: "native", hooks: [{ point: "tx_submit", behaviour: "reject", reason: "outputs to OP_TRUE are not relayed here" }] },
    "later": { runtime: "isolate", hooks: [{ point: "tx_submit", behaviour: "continue", after: ["policy"] }, { point: "block_template", behaviour: "drop-first" }] },
  }, { submitter: SUBMITTER });
  await registered(h, ["policy", "later"]);
  await h.waitForLog(/^loaded submitter/, { timeoutMs: 60_000 });
  t.deepEqual(registry(h).chain("tx_submit"), ["policy", "later"]);
  const tx = await spendCoinbase(h, 1);
  const since = h.mark();
  const out = await callApi<Outcome>(h, "submitter", "submit", { hex: tx.hex });
  t.like(out, { ok: false, code: "hook_rejected" });
  t.is((out as { message: string }).message, `refused at hook point tx_submit by the hook of module "policy": outputs to OP_TRUE are not relayed here`);
  t.is(callsOf(h, "policy", since).length, 1);
  t.is(callsOf(h, "later", since).length, 0, "the chain stopped at the reject");
  t.false(await h.chain.isInMempool(tx.txid));

  // block_template: "later" leaves out the first of two transactions; the template is rebuilt
  // around the rest (coinbase value, commitment, coinbase transaction).
  const first = await h.chain.createTransaction({ feeRate: 5 });
  const second = await h.chain.createTransaction({ feeRate: 5 });
  const plain = await h.chain.getBlockTemplate();
  t.deepEqual(plain.transactions.map((x) => x.txid).sort(), [first, second].sort());
  const got = await callApi<Outcome>(h, "submitter", "template", {});
  t.true(got.ok, JSON.stringify(got));
  const tpl = (got as { value: typeof plain }).value;
  t.deepEqual(tpl.transactions.map((x) => x.txid), plain.transactions.slice(1).map((x) => x.txid));
  t.is(tpl.coinbase_value, plain.coinbase_value - plain.transactions[0]!.fee);
  t.truthy(tpl.coinbase_tx, "the coinbase transaction is rebuilt");
  // The rebuilt template makes a block the chain accepts (coinbase value and commitment fit the kept transactions).
  const txids = [tpl.coinbase_tx!.txid, ...tpl.transactions.map((x) => x.txid)];
  const header = encodeHeader({
    version: tpl.version, prev_hash: tpl.previous_block_hash, merkle_root: displayHex(merkleRoot(txids.map(internalBytes))),
    time: tpl.cur_time, bits: tpl.bits, nonce: 0,
  });
  grindNonce(header, BigInt(`0x${tpl.target}`));
  const block = bytesToHex(encodeBlock(header, [tpl.coinbase_tx!.hex, ...tpl.transactions.map((x) => x.hex)]));
  t.like(await h.chain.submitBlock(block), { result: "accepted" });
  t.true(payloadsFitSchemas(t, h) >= 2);
});

test.serial("a hook that times out: fail-open goes on, fail-closed refuses naming the hook's module, in both runtimes", async (t) => {
  t.timeout(240_000);
  const h = await hookHost(t, {
    "slow-i": { runtime: "isolate", hooks: [{ point: "tx_submit", behaviour: "hang" }] },
    "slow-n": { runtime: "native", hooks: [{ point: "tx_submit", behaviour: "hang" }] },
  }, { submitter: SUBMITTER }, (config) => {
    config.hooks = { tx_submit: { timeout_ms: 300, failure: "open" } };
  });
  await registered(h, ["slow-i", "slow-n"]);
  await h.waitForLog(/^loaded submitter/, { timeoutMs: 60_000 });

  // fail-open: both time out, each is logged, the transaction is accepted.
  const tx1 = await spendCoinbase(h, 1);
  let since = h.mark();
  t.deepEqual(await callApi<Outcome>(h, "submitter", "submit", { hex: tx1.hex }), { ok: true, value: tx1.txid });
  for (const m of ["slow-i", "slow-n"]) {
    t.true(h.records.slice(since).some((r) => r.source === "hooks" && r.message === `tx_submit: the hook of ${m} failed (it did not answer within 300 ms ([hooks.tx_submit] timeout_ms)); fail-open: going on as if it answered continue`), m);
  }

  // fail-closed: the first hook's timeout refuses the submission, naming it (each runtime first once).
  const tx2 = await spendCoinbase(h, 2);
  for (const first of ["slow-i", "slow-n"]) {
    h.host.config.hooks = { tx_submit: { timeout_ms: 300, failure: "closed", order: [first] } };
    since = h.mark();
    const out = await callApi<Outcome>(h, "submitter", "submit", { hex: tx2.hex });
    t.deepEqual(out, { ok: false, code: "hook_rejected", message: `refused at hook point tx_submit: the hook of module "${first}" failed (it did not answer within 300 ms ([hooks.tx_submit] timeout_ms)) and tx_submit is fail-closed` });
    t.is(callsOf(h, first === "slow-i" ? "slow-n" : "slow-i", since).length, 0, "the chain stopped at the failed hook");
  }
  t.false(await h.chain.isInMempool(tx2.txid));
});

test.serial("a hook whose module is killed mid-call: fail-open goes on, fail-closed refuses naming the hook's module, in both runtimes; its hooks end with it", async (t) => {
  t.timeout(300_000);
  const h = await hookHost(t, {
    "dies-i": { runtime: "isolate", hooks: [{ point: "tx_submit", behaviour: "hang" }] },
    "dies-n": { runtime: "native", hooks: [{ point: "tx_submit", behaviour: "hang" }] },
  }, { submitter: SUBMITTER }, (config) => {
    config.hooks = { tx_submit: { timeout_ms: 30_000, failure: "open", order: ["dies-i", "dies-n"] } };
  });
  await registered(h, ["dies-i", "dies-n"]);
  await h.waitForLog(/^loaded submitter/, { timeoutMs: 60_000 });
  /** Kill `module` as soon as its hook has been called (since `since`). */
  const killWhenCalled = async (module: string, since: number) => {
    await h.waitForLog(/^hook called$/, { source: module, since, timeoutMs: 60_000 });
    h.manager.processOf(module)!.kill();
  };
  const reload = async (module: string) => {
    if (h.mustStatus(module).state === "running") return;
    const at = h.mark();
    await h.manager.load(module);
    await h.waitForLog(/^hook registered$/, { source: module, since: at, timeoutMs: 60_000 });
  };

  // fail-open: each module is killed while its hook runs; the chain goes on, the tx is accepted.
  const tx1 = await spendCoinbase(h, 1);
  let since = h.mark();
  const submitted = callApi<Outcome>(h, "submitter", "submit", { hex: tx1.hex }, 60_000);
  await killWhenCalled("dies-i", since);
  await killWhenCalled("dies-n", since);
  t.deepEqual(await submitted, { ok: true, value: tx1.txid });
  for (const m of ["dies-i", "dies-n"]) {
    t.true(h.records.slice(since).some((r) => r.source === "hooks" && r.message === `tx_submit: the hook of ${m} failed (its module stopped before answering); fail-open: going on as if it answered continue`), m);
  }
  // A dead module's hooks are gone with it.
  await h.waitForState("dies-i", ["crashed", "failed", "stopped"]);
  await h.waitForState("dies-n", ["crashed", "failed", "stopped"]);
  t.deepEqual(registry(h).chain("tx_submit"), []);

  // fail-closed: the killed hook's module is named, the tx refused (each runtime first once).
  const tx2 = await spendCoinbase(h, 2);
  for (const first of ["dies-i", "dies-n"]) {
    await reload("dies-i");
    await reload("dies-n");
    h.host.config.hooks = { tx_submit: { timeout_ms: 30_000, failure: "closed", order: [first] } };
    since = h.mark();
    const out = callApi<Outcome>(h, "submitter", "submit", { hex: tx2.hex }, 60_000);
    await killWhenCalled(first, since);
    t.deepEqual(await out, { ok: false, code: "hook_rejected", message: `refused at hook point tx_submit: the hook of module "${first}" failed (its module stopped before answering) and tx_submit is fail-closed` });
  }
  t.false(await h.chain.isInMempool(tx2.txid));
});

test.serial("a module without the grant cannot register a hook: permission_denied naming register_hook, for an unscoped and a scoped grant; an isolate has no ctx.hooks", async (t) => {
  t.timeout(240_000);
  const h = await hookHost(t, {
    // Hostile: asks for a hook at every point with no register_hook grant at all.
    "no-grant": { runtime: "native", hooks: [{ point: "module_load", behaviour: "reject" }], grants: ["read_chain_state"] },
    // Granted tx_submit only; tries rpc_dispatch too.
    "wrong-point": { runtime: "native", hooks: [{ point: "tx_submit", behaviour: "continue" }, { point: "rpc_dispatch", behaviour: "reject" }], grants: ["register_hook=tx_submit"] },
    "no-grant-i": { runtime: "isolate", hooks: [{ point: "rpc_dispatch", behaviour: "reject" }], grants: ["read_chain_state"] },
  });
  const refused = (await registered(h, ["no-grant"]))["no-grant"]!;
  t.like(refused, { code: "permission_denied", capability: "register_hook" });
  t.regex(String(refused["message"]), /register_hook/);
  const at = (point: string) => h.waitForLog(/^hook (registered|refused)$/, { source: "wrong-point", timeoutMs: 60_000, since: 0 }).then(() =>
    h.records.find((r) => r.source === "wrong-point" && (r.fields as { point?: string } | undefined)?.point === point)?.fields as Record<string, unknown>);
  await h.waitForState("wrong-point", "running");
  t.like(await at("tx_submit"), { point: "tx_submit" });
  t.is((await at("tx_submit"))["code"], undefined, "the granted point is registered");
  const denied = await at("rpc_dispatch");
  t.like(denied, { code: "permission_denied", capability: "register_hook" });
  t.regex(String(denied["message"]), /"register_hook" is not granted for hook point "rpc_dispatch"/);
  const isolate = (await registered(h, ["no-grant-i"]))["no-grant-i"]!;
  t.regex(String(isolate["message"]), /Cannot read properties of undefined \(reading 'register'\)/, "ctx has no hooks family without the grant");
  t.deepEqual(registry(h).chain("module_load"), []);
  t.deepEqual(registry(h).chain("rpc_dispatch"), []);
  t.deepEqual(registry(h).chain("tx_submit"), ["wrong-point"]);
});

test.serial("module_load hooks: a reject stops the load with the hook's reason, the hook sees the module and its grants; the hook ends with its module", async (t) => {
  t.timeout(240_000);
  const h = await hookHost(t, {
    "vetter": { runtime: "native", hooks: [{ point: "module_load", behaviour: "reject", reason: "not on the vetted list" }] },
  });
  await registered(h, ["vetter"]);
  // A module added while the host runs, after the vetter registered its hook.
  await writeModule(h.config.modules.modules_dir, "target", TARGET);
  h.config.modules.grants["target"] = { allow: [parseDescriptor("register_rpc_endpoint")], deny: [] };
  const since = h.mark();
  const status = await h.manager.load("target").catch((e: Error) => e);
  const problem = status instanceof Error ? status.message : String(h.mustStatus("target").problem);
  t.regex(problem, /refused at hook point module_load by the hook of module "vetter": not on the vetted list/);
  t.not(h.status("target")?.state, "running");
  const seen = callsOf(h, "vetter", since).map((r) => (r.fields as { payload: Record<string, unknown> }).payload);
  t.deepEqual(seen, [{ module: "target", version: "0.1.0", runtime: "isolate", grants: ["register_rpc_endpoint"], restart: false }]);
  // The hook's module stops: its hooks end with it, and the next load is not vetted.
  await h.manager.unload("vetter");
  t.deepEqual(registry(h).chain("module_load"), []);
  await h.manager.load("target");
  await h.waitForState("target", "running", 60_000);
  t.is(payloadsFitSchemas(t, h), 1);
});

test.serial("an RPC client refused by a hook gets JSON-RPC error -32005 naming the hook's module; an oversized modify is a failure of the hook, an oversized payload is refused before any hook sees it", async (t) => {
  t.timeout(240_000);
  const h = await hookHost(t, {
    "gate": { runtime: "native", hooks: [{ point: "rpc_dispatch", behaviour: "big-modify" }] },
  }, { target: TARGET }, (config) => {
    config.hooks = { rpc_dispatch: { max_payload_bytes: 4096 } };
  });
  await registered(h, ["gate"]);
  await h.waitForState("target", "running", 60_000);
  // rpc_dispatch is fail-closed by default: the 64 KiB modify is over the limit, so the call is refused.
  let since = h.mark();
  const big = await call(h, "target.echo", { n: 1 }).catch((e: unknown) => e);
  t.true(big instanceof RpcFailure, String(big));
  t.is((big as RpcFailure).code, -32005);
  t.is((big as RpcFailure).message, `refused at hook point rpc_dispatch: the hook of module "gate" failed (its modified payload is over 4096 bytes ([hooks.rpc_dispatch] max_payload_bytes)) and rpc_dispatch is fail-closed`);
  t.like((big as RpcFailure).data, { code: "hook_rejected", point: "rpc_dispatch", hook_module: "gate" });
  t.is(callsOf(h, "gate", since).length, 1);
  // A payload over the limit is refused before it is sent to any hook.
  since = h.mark();
  const over = await call(h, "target.echo", { s: "y".repeat(8000) }).catch((e: unknown) => e);
  t.true(over instanceof RpcFailure, String(over));
  t.regex((over as RpcFailure).message, /refused at hook point rpc_dispatch: its payload is over 4096 bytes, more than the hooks there take \(\[hooks\.rpc_dispatch\] max_payload_bytes in modhost\.toml raises it\)/);
  t.is(callsOf(h, "gate", since).length, 0);
  // Fail-open instead: the failed hook is skipped and the module gets the caller's params.
  h.host.config.hooks = { rpc_dispatch: { max_payload_bytes: 4096, failure: "open" } };
  t.deepEqual(await call(h, "target.echo", { n: 2 }), { got: { n: 2 } });
});

test.serial("[hooks.POINT] in modhost.toml: order, failure, timeout_ms and max_payload_bytes are read and checked", async (t) => {
  const { parseConfig } = await import("../host/config.ts");
  const ok = parseConfig({ hooks: { tx_submit: { order: ["a", "b"], failure: "closed", timeout_ms: 500 }, rpc_dispatch: { max_payload_bytes: 4096 } } }, "", "/tmp/modhost.toml");
  t.deepEqual(ok.hooks, { tx_submit: { order: ["a", "b"], failure: "closed", timeout_ms: 500 }, rpc_dispatch: { max_payload_bytes: 4096 } });
  const bad = t.throws(() => parseConfig({ hooks: { tx_sumbit: {}, rpc_dispatch: { failure: "maybe", timeout_ms: 0, order: ["a", "a"] } } }, "", "/tmp/modhost.toml"));
  t.regex(bad!.message, /tx_sumbit/);
  t.regex(bad!.message, /tx_submit/, "did you mean");
  t.regex(bad!.message, /failure/);
  t.regex(bad!.message, /timeout_ms/);
  t.regex(bad!.message, /"a" is listed twice/);
});

// ---------------------------------------------------------------------------------------
// Hostile: the host's lines about hooks, under a flood.

/** A transaction that parses (one input, one output) and that the mempool refuses (its input does not exist). */
const UNSPENDABLE_TX = `02000000 01 ${"11".repeat(32)} 00000000 00 ffffffff 01 0000000000000000 01 51 00000000`.replace(/ /g, "");
const HOSTILE_HOOKS = {
  // Rejects every transaction with the longest reason kept (1024 characters).
  "k-flood": { ...inlineModule("k-flood", ["register_hook"], `await ctx.hooks.register("tx_submit", async () => ({ result: "reject", reason: "no".repeat(600) }));`), grants: ["register_hook=tx_submit"] },
  // Submits that transaction from 32 loops, as fast as it is answered: a line about k-flood's hook each time.
  "k-sub": { ...inlineModule("k-sub", ["send_transactions"], `
    const loop = async () => { for (;;) await ctx.mempool.submit("${UNSPENDABLE_TX}").catch(() => 0); };
    for (let i = 0; i < 32; i++) void loop();
  `), grants: ["send_transactions"] },
  // A module named as the host's hook lines are tagged, writing one of them.
  "hooks": { ...inlineModule("hooks", [], `ctx.log.warn("tx_submit: the hook of good failed (forged); fail-open: going on as if it answered continue");`), grants: [] as string[] },
  // An honest template hook: its one rejection must be in the log whatever k-flood does.
  "k-honest": { ...inlineModule("k-honest", ["register_hook"], `await ctx.hooks.register("block_template", async () => ({ result: "reject", reason: "honest filter says no" }));`), grants: ["register_hook=block_template"] },
};

test.serial("hostile: a hook rejecting every call of a module submitting as fast as it can fills only its own share of the host's notes (2 KiB/s): the line about another module's hook is still written, the canary gets every block, RPC answers; a module named \"hooks\" cannot write a line tagged like the host's [hooks]", async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const inline = { ...HOSTILE_HOOKS, submitter: SUBMITTER };
  await buildModulesDir(dir, ["good"], inline);
  const probes = Object.keys(HOSTILE_HOOKS);
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, ...Object.fromEntries(Object.entries(inline).map(([n, m]) => [n, m.grants])) },
    limits: { start_timeout_ms: 60_000 },
  });
  for (const m of ["good", "submitter", ...probes]) await h.waitForState(m, "running", 60_000);
  const logger = h.host.logger;
  // The flood is on once the lines about k-flood's hook are over their budget (before the fix,
  // over the budget all hook lines shared, charged to a module named "hooks").
  const dropped = () => logger.module("k-flood").noteTotals.dropped + logger.module("hooks").totals.dropped;
  await h.waitFor(() => dropped() > 0, 60_000, "the lines about k-flood's hook to pass their budget");
  const start = h.lines.length;
  const started = Date.now();

  // While it floods: blocks stored by the canary within 5 s, RPC answered within 5 s, and the
  // honest hook's rejection of a template, asked for each round, written each time.
  let late = 0;
  let unanswered = 0;
  let honestWritten = 0;
  const rounds = 5;
  for (let i = 0; i < rounds; i++) {
    const { stored, answered } = await canaryRound(h);
    if (!stored) late++;
    if (!answered) unanswered++;
    const lines = h.lines.length;
    const outcome = await callApi<Outcome>(h, "submitter", "template", {}, 30_000);
    t.like(outcome, { ok: false, code: "hook_rejected" });
    if (h.lines.slice(lines).some((l) => l.includes("[hooks] block_template: the hook of k-honest rejected: honest filter says no"))) honestWritten++;
    await sleep(1000);
  }
  const seconds = (Date.now() - started) / 1000;
  t.is(late, 0, "the canary stored every block within 5 s");
  t.is(unanswered, 0, "the host answered every RPC call within 5 s");
  t.is(honestWritten, rounds, "each rejection by the honest hook was written while k-flood's were dropped");
  const floodBytes = h.lines.slice(start).filter((l) => l.includes("the hook of k-flood")).reduce((n, l) => n + Buffer.byteLength(l) + 1, 0);
  t.log(`over ${seconds.toFixed(1)} s: lines about k-flood's hook ${floodBytes} bytes; dropped ${logger.module("k-flood").noteTotals.dropped}`);
  // At most a burst and the rate over the window (plus one line in flight).
  t.true(floodBytes <= HOST_NOTE_BURST_BYTES + HOST_NOTE_BYTES_PER_SECOND * seconds + 4096, `the lines about k-flood's hook came to ${floodBytes} bytes in ${seconds.toFixed(1)} s`);
  t.true(logger.module("k-flood").noteTotals.dropped > 0, "k-flood's hook lines met their budget");

  // The module named "hooks" is tagged as a module: its text is not a host line.
  const forged = h.lines.filter((l) => l.includes("the hook of good failed (forged)"));
  t.true(forged.length > 0, "the module named hooks logged its line");
  t.true(forged.every((l) => l.includes("[module:hooks] ")), forged.join("\n"));

  for (const p of probes) {
    await h.manager.reload(p);
    await h.waitForState(p, "running", 60_000);
  }
});
