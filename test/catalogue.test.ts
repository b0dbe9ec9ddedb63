// The whole capability catalogue, method by method, from both runtimes: for every permission
// that unlocks methods (and for the methods every module has), a module granted exactly that
// permission tries EVERY method of METHODS with valid example parameters, once as an isolate
// module and once as a native module. With the grant a method must work; without it, it must
// be refused:
//
// - native (test/fixtures/native-probe/main.ts, a Node program on the SDK, bundled into one
//   executable): every request goes on the wire; a refused one must fail with
//   permission_denied and data.capability naming the method's permission. The welcome must
//   list exactly the granted methods.
// - isolate (ISOLATE_PROBE_SOURCE in helpers/probes.ts): ctx has exactly the granted methods;
//   an absent method is the refusal there. Module code cannot send a request for an absent
//   method: the bootstrap removes the raw channel from the isolate's global object before the
//   module runs, so there is no way to put a refused request on the wire from an isolate. The
//   isolate host's requests go over the same channel to the same hub as a native module's
//   (the native probe covers that wire); in addition, every refused method is checked
//   against the hub with the isolate module's effective grants as the manager recorded them.
//
// examples() holds the parameters of every method, keyed by wire name; a method added to a
// family without an example fails the first test. The examples are set up to succeed (a tree
// and a file to read, a mempool transaction, a spend and a block to submit, an "echo" module to
// call, providers to answer, an HTTP server on 127.0.0.1 to fetch from); each one's `check`
// says what its successful answer looks like, and `effect` what the host must see afterwards
// (a file written, a metric, an event, a request that reached the server...).
//
// One host runs all probes (the register_module_api ones first: they are the providers), a
// few at a time, each unloaded once it has reported; the native ones run in whatever sandbox
// the machine gives (the summary says which).

import test from "ava";
import type { ExecutionContext } from "ava";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { access, mkdir, readFile, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";
import { METHODS, type IndexedMethod } from "../capabilities/families.ts";
import { PERMISSION_NAMES, type Permission } from "../capabilities/catalogue.ts";
import { ModuleStore } from "../storage/store.ts";
import {
  describeTransaction, displayHex, encodeBlock, encodeHeader, grindNonce, internalBytes,
  merkleRoot, sha256d,
} from "../chain/serialise.ts";
import { blockSubsidy, coinbaseTransaction } from "../chain/blocks.ts";
import { sleep, startHost, writeModule, type TestHost } from "./helpers/host.ts";
import { PAYOUT, spend } from "./helpers/blocks.ts";
import { hubError, inlineModule, services } from "./helpers/modules.ts";
import { writeNativeProbe } from "./helpers/native-probe.ts";
import { ISOLATE_PROBE_SOURCE, PROBE_LOG, type ProbeCall, type ProbeReport, type ProbeResult, type ProbeRuntime, type ResultRef } from "./helpers/probes.ts";

const RUNTIMES: readonly ProbeRuntime[] = ["isolate", "native"];

/** Granted with a scope where the permission takes one (the target of the example). */
const DESCRIPTOR: Partial<Record<Permission, string>> = {
  call_module: "call_module=echo", network_access: "network_access=127.0.0.1",
  // A fail-open point: a probe's hook (the native probe answers no hook) cannot stop other probes.
  register_hook: "register_hook=block_template",
};

/** Chain data and files the examples point at, made before the probes start. */
interface Setup {
  tip: string;
  confirmedTxid: string;
  utxo: { txid: string; vout: number };
  mempoolTxid: string;
  /** One spend per runtime: the same transaction twice would be refused as a duplicate. */
  spends: Record<ProbeRuntime, { txid: string; hex: string }>;
  block: { hash: string; hex: string };
  /** Base URL of the test's HTTP server ("http://127.0.0.1:<port>"). */
  httpUrl: string;
}

type Params = Record<string, unknown>;
interface Example {
  params: Params | ((runtime: ProbeRuntime) => Params);
  /** Given the answer's JSON (cut at VALUE_CHARS), whether it is the success the example is set up for. */
  check?: (json: string, runtime: ProbeRuntime) => boolean;
  /** Seen from the host after the probe ran (before it is unloaded): whether the call had its effect. */
  effect?: (h: TestHost, module: string, runtime: ProbeRuntime) => boolean | Promise<boolean>;
}

const notNull = (v: string) => v !== "null";
const isTrue = (v: string) => v === "true";
const isId = (v: string) => /^[1-9][0-9]*$/.test(v);
const has = (...parts: string[]) => (v: string) => parts.every((p) => v.includes(p));
const blockAnswer = (v: string) => /^\{"result":"(accepted|duplicate)"/.test(v);
const later = (method: string, otherwise: unknown): ResultRef => ({ $result: method, otherwise });
const dataFile = (h: TestHost, module: string, file: string) => path.join(h.config.modules.data_dir, module, file);
const exists = (file: string) => access(file).then(() => true, () => false);

/** Module events on the bus (the harness records only the node's own event types). */
const published: Array<{ type: string; payload: unknown }> = [];

/** The x-probe header of every request the test's HTTP server received (the probe's runtime). */
const fetched = new Set<string>();

/** Valid parameters for every method, keyed by wire name. */
function examples(d: Setup): Record<string, Example> {
  return {
    // chain
    get_block: { params: { hash: d.tip }, check: has(`"hash":"${d.tip}"`) },
    get_block_header: { params: { hash: d.tip }, check: has(`"hash":"${d.tip}"`) },
    get_block_by_height: { params: { height: 1 }, check: has(`"height":1`) },
    get_transaction: { params: { txid: d.confirmedTxid }, check: has(`"txid":"${d.confirmedTxid}"`) },
    has_transaction: { params: { txid: d.confirmedTxid }, check: isTrue },
    get_chain_tip: { params: {}, check: (v) => /^"[0-9a-f]{64}"$/.test(v) },
    get_block_height: { params: {}, check: (v) => Number(v) >= 101 },
    get_chain_info: { params: {}, check: has(`"height":`) },
    get_utxo: { params: { txid: d.utxo.txid, vout: d.utxo.vout }, check: notNull },
    // mempool
    get_mempool_transactions: { params: {}, check: has(d.mempoolTxid) },
    get_mempool_txids: { params: {}, check: has(d.mempoolTxid) },
    get_mempool_transaction: { params: { txid: d.mempoolTxid }, check: has(`"txid":"${d.mempoolTxid}"`) },
    get_mempool_entry: { params: { txid: d.mempoolTxid }, check: notNull },
    get_mempool_size: { params: {}, check: notNull },
    check_transaction_in_mempool: { params: { txid: d.mempoolTxid }, check: isTrue },
    get_fee_estimate: { params: { target_blocks: 6 }, check: (v) => Number(v) > 0 },
    submit_transaction: {
      params: (rt) => ({ hex: d.spends[rt].hex }),
      check: (v, rt) => v === JSON.stringify(d.spends[rt].txid),
      effect: (h, _m, rt) => h.chain.isInMempool(d.spends[rt].txid),
    },
    // storage (the probes' stores hold tree "t" with a = "0" and k = "v")
    storage_open_tree: { params: { tree: "t" }, check: isTrue },
    storage_list_trees: { params: {}, check: (v) => v === `["t"]` },
    storage_drop_tree: { params: { tree: "t" }, check: isTrue },
    storage_get: { params: { tree: "t", key: "k" }, check: (v) => v === `"v"` },
    storage_contains_key: { params: { tree: "t", key: "k" }, check: isTrue },
    storage_insert: { params: { tree: "t", key: "k2", value: { n: 1 } }, check: isTrue },
    storage_remove: { params: { tree: "t", key: "k2" }, check: isTrue },
    storage_iter: { params: { tree: "t", prefix: "k", limit: 10 }, check: (v) => v === `[{"key":"k","value":"v"}]` },
    storage_transaction: { params: { tree: "t", ops: [{ op: "put", key: "k3", value: 3 }, { op: "delete", key: "k3" }] }, check: isTrue },
    storage_usage: { params: {}, check: has(`"quota":`) },
    // events
    subscribe_events: { params: { types: ["NewBlock"] }, check: (v, rt) => (rt === "isolate" ? v === "<function>" : v === `["NewBlock"]`) },
    unsubscribe_events: { params: { types: ["NewBlock"] }, check: (v) => v === "[]" },
    publish_event: {
      params: { name: "probed", payload: { n: 1 } },
      check: (v) => v.endsWith(`:probed"`),
      effect: (_h, m) => published.some((e) => e.type === `${m}:probed` && JSON.stringify(e.payload) === `{"n":1}`),
    },
    // config
    get_config: { params: {}, check: has(`"probe":`) },
    // rpc
    register_rpc_endpoint: { params: { method: "ping", description: "catalogue probe" }, check: (v) => v.endsWith(`.ping"`) },
    unregister_rpc_endpoint: { params: { method: "ping" }, check: isTrue },
    register_cli_spec: { params: { spec: { about: "catalogue probe", commands: [{ name: "probe" }] } }, check: isTrue },
    // metrics
    report_metric: {
      params: { name: "probe_calls", value: 2, kind: "counter", labels: { probe: "yes" } },
      check: isTrue,
      effect: (h, m) => services(h).metrics!.get(m).some((s) => s.name === "probe_calls" && s.kind === "counter" && s.value === 2 && s.labels.probe === "yes"),
    },
    get_module_metrics: { params: { module: "echo" }, check: (v) => v.startsWith("[") },
    get_all_metrics: { params: {}, check: (v) => v.startsWith("{") },
    // fs (the probes' data directories hold x.txt = "hello" and out.txt = "x")
    read_file: { params: { path: "x.txt", encoding: "utf8" }, check: (v) => v === `"hello"` },
    write_file: { params: { path: "out.txt", data: "probe", append: true }, check: isTrue, effect: async (h, m) => (await readFile(dataFile(h, m, "out.txt"), "utf8")) === "xprobe" },
    delete_file: { params: { path: "x.txt" }, check: isTrue, effect: async (h, m) => !(await exists(dataFile(h, m, "x.txt"))) },
    list_directory: { params: { path: "." }, check: has(`"name":"x.txt"`) },
    create_directory: { params: { path: "made/here" }, check: isTrue, effect: async (h, m) => (await stat(dataFile(h, m, "made/here"))).isDirectory() },
    get_file_metadata: { params: { path: "x.txt" }, check: has(`"is_file":true`) },
    // modules ("echo" serves ping)
    call_module: {
      params: { target: "echo", method: "ping", params: { n: 1 }, timeout_ms: 10_000 },
      check: (v, rt) => v === JSON.stringify({ pong: true, caller: probeName("call_module", rt), params: { n: 1 } }),
    },
    register_module_api: { params: { methods: ["ping"] }, check: isTrue },
    unregister_module_api: { params: {}, check: isTrue },
    discover_modules: { params: {}, check: has(`"name":"echo"`) },
    get_module_info: { params: { module: "echo" }, check: has(`"name":"echo"`, `"api":["ping"]`) },
    is_module_available: { params: { module: "echo" }, check: isTrue },
    // timers (long enough never to fire during the test)
    register_timer: { params: { interval_seconds: 3600 }, check: isId },
    schedule_task: { params: { delay_seconds: 3600 }, check: isId },
    cancel_timer: { params: { timer_id: later("register_timer", 1) }, check: isTrue },
    // lightning: the isolate register_module_api probe provides "lightning", the native one "payment"
    get_lightning_node_url: { params: {}, check: has("probe://isolate-probe/lightning") },
    get_lightning_info: { params: {}, check: has(`"alias":"isolate-probe"`) },
    get_payment_state: { params: { payment_id: "pay-1" }, check: has(`"provider":"native-probe"`, `"payment_id":"pay-1"`) },
    register_provider: { params: (rt) => ({ kind: PROVIDES[rt] }), check: isTrue },
    // network
    get_network_stats: { params: {}, check: has(`"peer_count":`) },
    get_network_peers: { params: {}, check: (v) => v.startsWith("[") },
    http_request: {
      params: (rt) => ({ url: `${d.httpUrl}/probe`, headers: { "x-probe": rt } }),
      check: has(`"status":200`, `"url":"${d.httpUrl}/probe"`, `"x-served-by":"catalogue-test"`),
      effect: (_h, _m, rt) => fetched.has(rt),
    },
    // mining (one block on the tip; whoever submits it first gets "accepted", then "duplicate")
    get_block_template: { params: { coinbase_script: "51" }, check: has(`"previous_block_hash":`, `"coinbase_tx":`) },
    submit_block: { params: { hex: d.block.hex }, check: blockAnswer },
    queue_received_block: { params: { hex: d.block.hex }, check: blockAnswer },
    // hooks
    register_hook: { params: { point: "block_template" }, check: has(`"point":"block_template"`, `"order":[`) },
    unregister_hook: { params: { point: "block_template" }, check: isTrue },
  };
}

const PROVIDES: Record<ProbeRuntime, "lightning" | "payment"> = { isolate: "lightning", native: "payment" };

/** Probes of these permissions register the providers, so they run (and stay up) first. */
const FIRST: readonly Permission[] = ["register_module_api"];

/** null: the methods every module has (the probe is granted nothing). */
type ProbePermission = Permission | null;

function probeName(perm: ProbePermission, runtime: ProbeRuntime): string {
  return `probe-${perm ?? "none"}-${runtime}`;
}

function probePermissions(): ProbePermission[] {
  const used = new Set([...METHODS.values()].map((m) => m.permission));
  return [null, ...PERMISSION_NAMES.filter((p) => used.has(p))];
}

function descriptors(perm: ProbePermission): string[] {
  return perm === null ? [] : [DESCRIPTOR[perm] ?? perm];
}

/** The ctx form's positional arguments: the inverse of the bootstrap's args -> params. */
function ctxArgs(m: IndexedMethod, params: Params): unknown[] {
  const named = new Set(m.args.filter((a) => a !== "options"));
  const args = m.args.map((name) => {
    if (name !== "options") return params[name];
    const rest = Object.fromEntries(Object.entries(params).filter(([k]) => !named.has(k)));
    return Object.keys(rest).length > 0 ? rest : undefined;
  });
  while (args.length > 0 && args.at(-1) === undefined) args.pop();
  return args;
}

function paramsOf(ex: Example, runtime: ProbeRuntime): Params {
  return typeof ex.params === "function" ? ex.params(runtime) : ex.params;
}

function plan(table: Record<string, Example>, runtime: ProbeRuntime): ProbeCall[] {
  const calls: ProbeCall[] = [];
  for (const m of METHODS.values()) {
    const ex = table[m.name];
    if (!ex) continue; // reported by the first test
    const params = paramsOf(ex, runtime);
    calls.push({ method: m.name, family: m.family, js: m.js, params, args: ctxArgs(m, params) });
  }
  return calls;
}

// ---------------------------------------------------------------------------------------
// Setup

async function chainSetup(h: TestHost): Promise<Omit<Setup, "httpUrl">> {
  const chain = h.chain;
  // Enough depth that the first few coinbases are mature (100 confirmations).
  await chain.mine(10, { includeMempool: false });
  const mempoolTxid = await chain.createTransaction({ feeRate: 5 });
  const walletInputs = new Set((await chain.getMempoolTransaction(mempoolTxid))!.inputs.map((i) => i.txid));
  // Mature coinbases the wallet transaction does not spend: two to spend, one to look up as a
  // UTXO, one to look up as a confirmed transaction.
  const coinbases: Array<{ txid: string; value: number }> = [];
  for (let height = 1; coinbases.length < 4; height++) {
    const cb = (await chain.getBlockByHeight(height))!.transactions[0]!;
    if (!walletInputs.has(cb.txid)) coinbases.push({ txid: cb.txid, value: cb.outputs[0]!.value });
  }
  const [a, b, c, confirmed] = coinbases as [typeof coinbases[0], typeof coinbases[0], typeof coinbases[0], typeof coinbases[0]];

  // A block with only a coinbase on the current tip (mempool transactions stay in the mempool).
  const tpl = await chain.getBlockTemplate();
  const coinbase = describeTransaction(coinbaseTransaction(tpl.height, 7, blockSubsidy(tpl.height), hexToBytes(PAYOUT), []));
  const header = encodeHeader({
    version: tpl.version,
    prev_hash: tpl.previous_block_hash,
    merkle_root: displayHex(merkleRoot([internalBytes(coinbase.txid)])),
    time: tpl.cur_time,
    bits: tpl.bits,
    nonce: 0,
  });
  grindNonce(header, BigInt(`0x${tpl.target}`));
  return {
    tip: await chain.getChainTip(),
    confirmedTxid: confirmed.txid,
    utxo: { txid: c.txid, vout: 0 },
    mempoolTxid,
    spends: { isolate: spend(a.txid, 0, a.value - 10_000), native: spend(b.txid, 0, b.value - 10_000) },
    block: { hash: displayHex(sha256d(header)), hex: bytesToHex(encodeBlock(header, [coinbase.hex])) },
  };
}

/** An HTTP server on 127.0.0.1 for http_request: answers every request, records its x-probe header. */
async function httpServer(t: ExecutionContext): Promise<string> {
  const server = http.createServer((req, res) => {
    const probe = req.headers["x-probe"];
    if (typeof probe === "string") fetched.add(probe);
    res.setHeader("X-Served-By", "catalogue-test");
    res.end("probed");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** Storage and data-directory contents for the probes that read, write or delete them. */
async function moduleSetup(h: TestHost, perm: ProbePermission, name: string): Promise<void> {
  if (perm === "read_storage" || perm === "write_storage" || perm === "manage_storage") {
    const store = await ModuleStore.open(h.storageDir(name), {}, { label: name });
    try {
      await store.openTree("t");
      await store.put("t", "a", "0");
      await store.put("t", "k", "v");
    } finally {
      await store.close();
    }
  }
  if (perm === "read_filesystem" || perm === "write_filesystem" || perm === "manage_filesystem") {
    const dir = path.join(h.config.modules.data_dir, name);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await writeFile(path.join(dir, "x.txt"), "hello");
    await writeFile(path.join(dir, "out.txt"), "x");
  }
}

/** Run `fn` over `items`, at most `limit` at a time. */
async function pool<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all(Array.from({ length: Math.min(limit, queue.length) }, async () => {
    for (let item = queue.shift(); item !== undefined; item = queue.shift()) await fn(item);
  }));
}

// ---------------------------------------------------------------------------------------
// Checks

interface Probe {
  perm: ProbePermission;
  runtime: ProbeRuntime;
  name: string;
  report?: ProbeReport;
  /** What went wrong running it (no report, other grants than intended). */
  problem?: string;
  /** Methods whose effect the host did not see (Example.effect), with why. */
  noEffect: Map<string, string>;
  /** The confinement the manager applied ("isolate", or the native sandbox level). */
  sandbox?: string;
}

const REFUSED_CODES = ["permission_denied", "invalid_params", "unknown_method"];

function granted(m: IndexedMethod, perm: ProbePermission): boolean {
  return m.permission === null || m.permission === perm;
}

/** "<family>.<js>" of the functions an isolate module granted `perm` should find on ctx. */
function expectedCtx(perm: ProbePermission): string[] {
  const out: string[] = [];
  for (const m of METHODS.values()) {
    if (!granted(m, perm) || m.family === "config") continue; // ctx.config is the table itself
    out.push(`${m.family}.${m.js}`);
    if (m.name === "subscribe_events") out.push("events.on"); // the bootstrap's alias
  }
  return out.sort();
}

function checkProbe(p: Probe, table: Record<string, Example>, violations: string[], succeeded: Map<string, Set<string>>): void {
  const where = `${p.name} (granted ${p.perm ?? "nothing"})`;
  if (p.problem) violations.push(`${where}: ${p.problem}`);
  if (!p.report) {
    if (!p.problem) violations.push(`${where}: no report`);
    return;
  }
  const { results, methods } = p.report;
  const byMethod = new Map(results.map((r) => [r.method, r]));
  if (p.runtime === "native") {
    const expected = [...METHODS.values()].filter((m) => granted(m, p.perm)).map((m) => m.name).sort();
    if (JSON.stringify([...methods].sort()) !== JSON.stringify(expected)) {
      violations.push(`${where}: welcome lists ${JSON.stringify(methods)}, expected ${JSON.stringify(expected)}`);
    }
  } else if (JSON.stringify(methods) !== JSON.stringify(expectedCtx(p.perm))) {
    violations.push(`${where}: ctx has ${JSON.stringify(methods)}, expected ${JSON.stringify(expectedCtx(p.perm))}`);
  }
  for (const m of METHODS.values()) {
    const ex = table[m.name];
    if (!ex) continue;
    const r: ProbeResult | undefined = byMethod.get(m.name);
    const what = `${where}: ${m.name} [${m.permission ?? "always"}]`;
    if (!r) {
      violations.push(`${what}: not tried`);
      continue;
    }
    const outcome = r.ok ? `ok ${r.value}` : r.present ? `${r.code}: ${r.message}` : "absent from ctx";
    if (granted(m, p.perm)) {
      if (!r.present) violations.push(`${what}: granted but absent from ctx`);
      else if (!r.ok && REFUSED_CODES.includes(r.code ?? "")) violations.push(`${what}: granted but refused: ${outcome}`);
      else if (!r.ok) violations.push(`${what}: granted, the example did not succeed: ${outcome}`);
      else if (ex.check && !ex.check(r.value ?? "", p.runtime)) violations.push(`${what}: unexpected answer: ${r.value}`);
      else if (p.noEffect.has(m.name)) violations.push(`${what}: answered ${r.value}, but the host does not see its effect (${p.noEffect.get(m.name)})`);
      else succeeded.get(m.name)!.add(p.runtime);
    } else if (p.runtime === "native") {
      const named = r.capability === m.permission && (r.message ?? "").includes(m.name) && (r.message ?? "").includes(`"${m.permission}"`);
      if (r.ok || r.code !== "permission_denied" || !named) {
        violations.push(`${what}: not granted, expected permission_denied naming "${m.permission}", got ${outcome}${r.ok ? "" : ` (data.capability ${JSON.stringify(r.capability)})`}`);
      }
    } else if (r.present) {
      violations.push(`${what}: not granted, but ctx has it (${outcome})`);
    }
  }
}

// ---------------------------------------------------------------------------------------

test("every method of the catalogue has an example, and every example a method", (t) => {
  const dummy: Setup = {
    tip: "00".repeat(32), confirmedTxid: "00".repeat(32), utxo: { txid: "00".repeat(32), vout: 0 }, mempoolTxid: "00".repeat(32),
    spends: { isolate: { txid: "", hex: "" }, native: { txid: "", hex: "" } }, block: { hash: "", hex: "" }, httpUrl: "",
  };
  const table = examples(dummy);
  t.deepEqual([...METHODS.keys()].filter((name) => !(name in table)), [], "methods without an example in EXAMPLES: add one");
  t.deepEqual(Object.keys(table).filter((name) => !METHODS.has(name)), [], "examples of methods that do not exist");
  const used = new Set([...METHODS.values()].map((m) => m.permission));
  // network_access used to unlock nothing (only the native sandbox's network namespace); it now
  // unlocks http_request, so every permission is served, and enforced, by the hub.
  t.deepEqual(PERMISSION_NAMES.filter((p) => !used.has(p)), [], "permissions that unlock no method");
});

test("every method works with its grant and is refused without it, from an isolate and from a native module", async (t) => {
  t.timeout(180_000);
  const started = Date.now();
  const perms = probePermissions();
  const probes: Probe[] = perms.flatMap((perm) => RUNTIMES.map((runtime) => ({ perm, runtime, name: probeName(perm, runtime), noEffect: new Map<string, string>() })));
  const grants: Record<string, string[]> = { echo: ["register_module_api"] };
  for (const p of probes) grants[p.name] = descriptors(p.perm);

  const h = await startHost(t, {
    inline: {
      echo: inlineModule("echo", ["register_module_api"], `
        await ctx.modules.registerApi({ ping: (params: any, meta: any) => ({ pong: true, caller: meta.caller, params }) });
      `),
    },
    grants,
    // The register_module_api probes register the providers: the operator designates them.
    configure: (config) => {
      config.modules.providers = { [PROVIDES.isolate]: probeName("register_module_api", "isolate"), [PROVIDES.native]: probeName("register_module_api", "native") };
    },
  });
  t.is(h.mustStatus("echo").state, "running");
  const recorder = h.host.bus.subscribe("catalogue-test", (ev) => published.push({ type: ev.type, payload: ev.payload }), { queueLimit: 10_000 });
  for (const rt of RUNTIMES) recorder.types.add(`${probeName("publish_events", rt)}:probed`);

  const setup: Setup = { ...(await chainSetup(h)), httpUrl: await httpServer(t) };
  const table = examples(setup);
  const modulesDir = h.config.modules.modules_dir;
  for (const p of probes) {
    if (p.runtime === "native") await writeNativeProbe(modulesDir, p.name, descriptors(p.perm));
    else await writeModule(modulesDir, p.name, { ...inlineModule(p.name, descriptors(p.perm), ""), files: { "index.ts": ISOLATE_PROBE_SOURCE } });
    await moduleSetup(h, p.perm, p.name);
    h.config.modules.module_configs[p.name] = { probe: { calls: plan(table, p.runtime) } };
  }

  /** Load a probe (it reports before it says ready), read its report; unload it unless asked to keep it. */
  const run = async (p: Probe, keep: boolean) => {
    const since = h.mark();
    try {
      await h.manager.load(p.name);
      // The probe reports before it says ready, but an isolate's ctx.log is sent asynchronously:
      // the record may come just after.
      const record = await h.waitForLog(new RegExp(`^${PROBE_LOG}$`), { source: p.name, since, timeoutMs: 15_000 });
      p.report = record.fields as unknown as ProbeReport;
      const status = h.mustStatus(p.name);
      p.sandbox = status.sandbox;
      const grantsNow = status.grants;
      if (JSON.stringify(grantsNow) !== JSON.stringify(descriptors(p.perm))) p.problem = `effective grants ${JSON.stringify(grantsNow)}`;
      for (const m of METHODS.values()) {
        const effect = table[m.name]?.effect;
        if (!effect || !granted(m, p.perm)) continue;
        // Some effects arrive a little later (bus delivery): look again for a while.
        const check = () => Promise.resolve(effect(h, p.name, p.runtime)).catch((err: Error) => err.message);
        let seen = await check();
        for (const deadline = Date.now() + 3000; seen !== true && Date.now() < deadline; seen = await check()) await sleep(25);
        if (seen !== true) p.noEffect.set(m.name, seen === false ? "not seen" : seen);
      }
    } catch (err) {
      p.problem = (err as Error).message.split("\n")[0];
    }
    if (!keep) await h.manager.unload(p.name, "probe done").catch(() => undefined);
  };
  // The providers first (they stay up to answer), then everything else, a few at a time.
  const first = probes.filter((p) => p.perm !== null && FIRST.includes(p.perm));
  await Promise.all(first.map((p) => run(p, true)));
  await pool(probes.filter((p) => !first.includes(p)), 6, (p) => run(p, false));
  const ranMs = Date.now() - started;

  const violations: string[] = [];
  const succeeded = new Map([...METHODS.keys()].map((name) => [name, new Set<string>()]));
  for (const p of probes) checkProbe(p, table, violations, succeeded);

  // Host side of the isolate runtime: the hub refuses every method outside the isolate
  // module's effective grants (the grants the manager recorded for it, as its session uses).
  for (const p of probes.filter((x) => x.runtime === "isolate")) {
    const effective = h.status(p.name)?.grants ?? [];
    for (const m of METHODS.values()) {
      const ex = table[m.name];
      if (granted(m, p.perm) || !ex) continue;
      const err = await hubError(h, p.name, effective, m.name, paramsOf(ex, "isolate")).catch((e: Error) => ({ code: "none", message: e.message }));
      if (err.code !== "permission_denied" || !err.message.includes(`"${m.permission}"`)) {
        violations.push(`${p.name}: the hub, with its grants ${JSON.stringify(effective)}, answered ${m.name} with ${err.code}: ${err.message}`);
      }
    }
  }

  const both = [...succeeded].filter(([, s]) => s.size === RUNTIMES.length).map(([name]) => name);
  const partly = [...succeeded].filter(([, s]) => s.size > 0 && s.size < RUNTIMES.length).map(([name, s]) => `${name} (${[...s].join("")} only)`);
  const never = [...succeeded].filter(([, s]) => s.size === 0).map(([name]) => name);
  t.log(`${probes.length} probes (${perms.length} grants x ${RUNTIMES.length} runtimes) x ${METHODS.size} methods in ${ranMs} ms`);
  t.log(`succeeded with the grant in both runtimes: ${both.length} of ${METHODS.size}`);
  t.log(`native probes ran with sandbox: ${[...new Set(probes.filter((p) => p.runtime === "native").map((p) => p.sandbox ?? "?"))].join(", ")}`);
  if (partly.length > 0) t.log(`in one runtime only: ${partly.join(", ")}`);
  if (never.length > 0) t.log(`in neither: ${never.join(", ")}`);
  t.deepEqual(violations, [], "every granted method works, every other one is refused");
  t.is(both.length, METHODS.size, "every example succeeds in both runtimes");
});
