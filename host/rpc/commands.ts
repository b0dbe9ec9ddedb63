// The command-line subcommands that talk to a running host over its RPC server:
//
//   modhost list | info <m> | load <m> | unload <m> | reload <m> | enable <m> | health | stop | methods
//   modhost call <method> [params...]
//   modhost chain info | mine [N] | reorg DEPTH | send ADDRESS SATS
//   modhost <module> [<command> [args...]]
//
// Their options are declared in host/cli-table.ts. Each finds the host with --config FILE
// (default ./modhost.toml) and the bitcoin-cli style --rpcconnect, --rpcport, --rpccookiefile
// and --datadir, which override [rpc]. For module commands these are taken out of the
// arguments unless they come after `--`.

import { DEFAULT_MAX_RESPONSE_BYTES } from "./answer-limit.ts";
import { existsSync } from "node:fs";
import { isIP } from "node:net";
import { readdir } from "node:fs/promises";
import path from "node:path";
import type { HostConfig, RpcConfig } from "../config.ts";
import { ModhostError } from "../errors.ts";
import type { ModuleStatus } from "../manager.ts";
import type { CliSpec } from "../../capabilities/types.ts";
import { clientFor, type RpcClient } from "./client.ts";
import { escapeText, terminalJson } from "../log.ts";

/**
 * Text a module controls (a crash reason with its goodbye or start error, a health error, its
 * manifest's description, its RPC and CLI descriptions) as it is printed on the operator's
 * terminal: control characters, terminal escapes and bidi controls shown visibly (\x1b, \r,
 * \u202e), so that it can neither drive the terminal nor pass for another row of the table.
 */
const shown = (s: string | null | undefined): string => escapeText(String(s ?? ""), Infinity).text;
/** shown() line by line, for text whose own lines are printed one under the other. */
const shownLines = (s: string): string[] => s.split("\n").map(shown);

/** Connection options, as bitcoin-cli spells them (host/cli-table.ts CONNECTION_OPTIONS). */
export interface Connection {
  config?: string | undefined;
  rpcconnect?: string | undefined;
  rpcport?: string | undefined;
  rpccookiefile?: string | undefined;
  datadir?: string | undefined;
}

const CONNECTION_KEYS = ["config", "rpcconnect", "rpcport", "rpccookiefile", "datadir"] as const;

interface Split {
  connection: Connection;
  rest: string[];
}

/** Take the connection options (--config/-c, --rpcport N, ...) out of a module command's `argv`; everything after `--` is left as is. */
function split(argv: string[]): Split {
  const out: Split = { connection: {}, rest: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") {
      out.rest.push(...argv.slice(i + 1));
      break;
    }
    const m = /^(?:--(config|rpcconnect|rpcport|rpccookiefile|datadir)|(-c))(?:=(.*))?$/s.exec(a);
    if (m) {
      const key = (m[1] ?? "config") as (typeof CONNECTION_KEYS)[number];
      const v = m[3] ?? argv[++i];
      if (v === undefined) throw new ModhostError("cli_usage", `${a} needs a value`);
      out.connection[key] = v;
    } else {
      out.rest.push(a);
    }
  }
  return out;
}

/** What a client needs of a configuration: where the host is, and where its modules are. */
export interface ConnectionConfig {
  file?: string | null | undefined;
  rpc: Pick<RpcConfig, "enabled" | "bind" | "port" | "cookie_file" | "user" | "password" | "max_response_bytes">;
  modules: Pick<HostConfig["modules"], "modules_dir">;
}

/**
 * defaultConfig(dir)'s [rpc] and modules_dir, without loading the configuration code (TOML,
 * schemas, keys): `modhost list --rpcport N` where there is no modhost.toml starts faster.
 * test/cli-help.test.ts checks these against defaultConfig.
 */
export function connectionDefaults(dir: string): ConnectionConfig {
  return { rpc: { enabled: true, bind: "127.0.0.1", port: 8339, cookie_file: path.resolve(dir, "data/.cookie"), max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES }, modules: { modules_dir: path.resolve(dir, "modules") } };
}

async function configFrom(file: string | undefined): Promise<ConnectionConfig> {
  if (!file && !existsSync("modhost.toml")) return connectionDefaults(process.cwd());
  const { loadConfig } = await import("../config.ts");
  return loadConfig(file ?? "modhost.toml");
}

/** Longest host name or address --rpcconnect takes (a DNS name's limit). */
const MAX_HOST_LENGTH = 253;

/**
 * The configuration to reach a host with: --config FILE's (or ./modhost.toml's, or the
 * defaults), with [rpc] bind, port and cookie_file replaced by the connection options given.
 */
export async function connectionConfig(c: Connection): Promise<ConnectionConfig> {
  const config = await configFrom(c.config);
  const rpc = config.rpc;
  const explicit = c.rpcconnect !== undefined || c.rpcport !== undefined || c.rpccookiefile !== undefined || c.datadir !== undefined;
  if (c.rpcconnect !== undefined) {
    if (c.rpcconnect.length === 0 || c.rpcconnect.length > MAX_HOST_LENGTH + 8) throw new ModhostError("cli_usage", `--rpcconnect must be a host name or address of at most ${MAX_HOST_LENGTH} characters (optionally with :PORT), got ${c.rpcconnect.length} characters`);
    // HOST, HOST:PORT, [IPV6] or [IPV6]:PORT, as bitcoin-cli takes them.
    const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(c.rpcconnect) ?? /^([^:]+)(?::(\d+))?$/.exec(c.rpcconnect);
    if (m) {
      rpc.bind = m[1]!;
      if (m[2] !== undefined) rpc.port = portNumber(m[2], "--rpcconnect's port");
    } else if (isIP(c.rpcconnect) === 6) {
      rpc.bind = c.rpcconnect;
    } else {
      throw new ModhostError("cli_usage", `--rpcconnect ${JSON.stringify(c.rpcconnect)} is not HOST, HOST:PORT or [IPV6]:PORT`);
    }
  }
  if (c.rpcport !== undefined) rpc.port = portNumber(c.rpcport, "--rpcport");
  if (c.datadir !== undefined) rpc.cookie_file = path.resolve(c.datadir, ".cookie");
  if (c.rpccookiefile !== undefined) rpc.cookie_file = path.resolve(c.rpccookiefile);
  // Naming the host to reach is asking to reach it, whatever the config file says of its own server.
  if (explicit) rpc.enabled = true;
  return config;
}

function portNumber(word: string, what: string): number {
  if (!/^\d{1,5}$/.test(word) || Number(word) < 1 || Number(word) > 65535) throw new ModhostError("cli_usage", `${what} must be a port number from 1 to 65535, got ${JSON.stringify(word.slice(0, 40))}`);
  return Number(word);
}

function print(value: unknown): void {
  if (value === null || value === undefined) return;
  // A string (a module's CLI output) keeps its lines and tabs; anything else is JSON, whose strings may
  // still hold what JSON.stringify leaves raw (DEL, C1 controls, bidi controls): \u escapes.
  console.log(typeof value === "string" ? value.replace(/\n$/, "").split("\t").map((part) => escapeText(part, Infinity, true).text).join("\t") : terminalJson(value, 2));
}

/** Longest `--timeout` (a day): a timer's delay past 2^31 ms fires at once. */
const MAX_TIMEOUT_SECONDS = 86_400;

/** `--timeout SECONDS` as milliseconds, or a usage error naming the option. */
function deadlineOf(word: string): number {
  const seconds = /^\d{1,6}(\.\d{1,3})?$/.test(word) ? Number(word) : NaN;
  if (!(seconds > 0 && seconds <= MAX_TIMEOUT_SECONDS)) throw new ModhostError("cli_usage", `--timeout must be a number of seconds above 0 and at most ${MAX_TIMEOUT_SECONDS}, got ${JSON.stringify(word.slice(0, 40))}`);
  return Math.round(seconds * 1000);
}

/** A host command of the table (host/cli-table.ts), its options parsed there. */
export async function hostCommandFromCli(name: string, parsed: { values: Record<string, unknown>; positionals: string[] }): Promise<number> {
  const v = parsed.values as Connection & { json?: boolean; timeout?: string };
  const client = await clientFor(await connectionConfig(v), v.timeout === undefined ? undefined : deadlineOf(v.timeout));
  const [command, sub] = name.split(" ") as [string, string | undefined];
  return hostCommand(client, command, sub === undefined ? parsed.positionals : [sub, ...parsed.positionals], v.json === true);
}

/**
 * `modhost MODULE [COMMAND [ARGS...]]`: run a module's CLI command in the running host.
 * Returns undefined when `command` is no module's name (the caller says "unknown command").
 */
export async function moduleCommand(command: string, argv: string[]): Promise<number | undefined> {
  const { MODULE_NAME_RE } = await import("../manifest.ts");
  if (!MODULE_NAME_RE.test(command)) return undefined;
  const s = split(argv);
  const config = await connectionConfig(s.connection);
  let client: RpcClient;
  let specs: Record<string, CliSpec>;
  try {
    client = await clientFor(config);
    specs = (await client.call("cli_specs")) as Record<string, CliSpec>;
  } catch (err) {
    // No host to ask: a module on disk gets the connection error, any other word the usage.
    if (err instanceof ModhostError && err.code === "not_running" && !(await moduleOnDisk(config, command))) return undefined;
    throw err;
  }
  const spec = Object.hasOwn(specs, command) ? specs[command] : undefined;
  if (!spec) {
    const statuses = (await client.call("list")) as ModuleStatus[];
    const status = statuses.find((x) => x.name === command);
    if (!status) return undefined;
    const withCli = Object.keys(specs);
    throw new ModhostError("no_cli", `module ${command} has no CLI commands${status.state === "running" ? "" : ` (it is ${status.state})`}`, withCli.length ? `modules with commands: ${withCli.join(", ")}` : undefined);
  }
  const [sub, ...args] = s.rest;
  if (sub === undefined || sub === "--help" || sub === "-h" || sub === "help") {
    console.log(moduleHelp(command, spec));
    return 0;
  }
  print(await client.call("run_cli", { module: command, command: sub, args }));
  return 0;
}

function moduleHelp(module: string, spec: CliSpec): string {
  const lines = [`${spec.name && spec.name !== module ? `${module} (${spec.name})` : module}${spec.about ? `: ${spec.about}` : ""}`, "", "Commands:"];
  const usage = spec.commands.map((c) => [c, [c.name, ...(c.args ?? []).map((a) => (a.required ? `<${a.name}>` : `[${a.name}]`))].join(" ")] as const);
  const width = Math.max(0, ...usage.map(([, u]) => u.length));
  for (const [c, u] of usage) lines.push(`  modhost ${module} ${u.padEnd(width)}${c.about ? `  ${c.about}` : ""}`);
  if (spec.commands.length === 0) lines.push("  (none)");
  return lines.join("\n");
}

async function moduleOnDisk(config: ConnectionConfig, name: string): Promise<boolean> {
  const { loadManifest } = await import("../manifest.ts");
  const dir = config.modules.modules_dir;
  if (existsSync(path.join(dir, name, "module.toml"))) return true;
  let entries: string[];
  try {
    entries = (await readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch {
    return false;
  }
  for (const e of entries) {
    try {
      if ((await loadManifest(path.join(dir, e, "module.toml"))).name === name) return true;
    } catch {
      // not a module, or a broken one
    }
  }
  return false;
}

function needModule(command: string, rest: string[]): string {
  const [name, ...extra] = rest;
  if (name === undefined || extra.length > 0) throw new ModhostError("usage", `usage: modhost ${command} MODULE [--config FILE]`);
  return name;
}

async function hostCommand(client: RpcClient, command: string, rest: string[], json: boolean): Promise<number> {
  switch (command) {
    case "list": {
      if (rest.length) throw new ModhostError("usage", "usage: modhost list [--json] [--config FILE]");
      const list = (await client.call("list")) as ModuleStatus[];
      if (json) print(list);
      else console.log(formatList(list));
      return 0;
    }
    case "info": {
      const i = (await client.call("info", { module: needModule(command, rest) })) as InfoAnswer;
      if (json) print(i);
      else console.log(formatInfo(i));
      return 0;
    }
    case "load":
    case "reload":
    case "enable": {
      const s = (await client.call(command, { module: needModule(command, rest) })) as ModuleStatus;
      if (json) {
        print(s);
        return 0;
      }
      console.log(`${command === "load" ? "loaded" : command === "reload" ? "reloaded" : "enabled and loaded"} ${shown(s.name)} ${shown(s.version ?? "")} (${s.state}${s.pid ? `, pid ${s.pid}` : ""})`);
      return 0;
    }
    case "unload": {
      const s = (await client.call(command, { module: needModule(command, rest) })) as ModuleStatus;
      if (json) {
        print(s);
        return 0;
      }
      console.log(`unloaded ${shown(s.name)} (${s.state})`);
      return 0;
    }
    case "health": {
      const h = (await client.call("health")) as HealthAnswer;
      if (json) print(h);
      else console.log(formatHealth(h));
      return h.status === "ok" ? 0 : 1;
    }
    case "methods": {
      const m = (await client.call("rpc_methods")) as { host: Array<{ method: string; description: string }>; modules: Array<{ method: string; description: string }> };
      if (json) print(m);
      else {
        const all = [...m.host, ...m.modules];
        const width = Math.max(...all.map((x) => x.method.length));
        console.log(all.map((x) => `${x.method.padEnd(width)}  ${shown(x.description)}`).join("\n"));
      }
      return 0;
    }
    case "stop":
      await client.call("stop");
      console.log(`modhost at ${client.where} is stopping`);
      return 0;
    case "chain":
      return chainCommand(client, rest, json);
    case "call": {
      const [method, ...params] = rest;
      if (method === undefined) throw new ModhostError("usage", "usage: modhost call METHOD [PARAMS...] [--config FILE]");
      print(await client.call(method, callParams(params)));
      return 0;
    }
  }
  return 2;
}

const CHAIN_USAGE = "usage: modhost chain info | mine [N] | reorg DEPTH | send ADDRESS SATS [--config FILE]";

/** A whole number from a command-line word, or a usage error naming it. */
function wholeNumber(word: string | undefined, what: string): number {
  if (word === undefined || !/^\d{1,15}$/.test(word)) throw new ModhostError("usage", `${what} must be a whole number, got ${word === undefined ? "nothing" : JSON.stringify(word)}`, CHAIN_USAGE);
  return Number(word);
}

async function chainCommand(client: RpcClient, rest: string[], json: boolean): Promise<number> {
  const [sub, ...args] = rest;
  const arity = (n: number, optional = 0) => {
    if (args.length < n || args.length > n + optional) throw new ModhostError("usage", CHAIN_USAGE);
  };
  switch (sub) {
    case "info": {
      arity(0);
      const i = (await client.call("chain_info")) as { backend: string; chain: string; height: number; tip_hash: string; mempool: { transaction_count: number; size_bytes: number }; data_dir?: string | null; wallet_address?: string; stored_bytes?: number; max_stored_bytes?: number };
      if (json) print(i);
      else {
        console.log([
          `${i.chain} (${i.backend}) at height ${i.height}, tip ${i.tip_hash}`,
          `mempool: ${i.mempool.transaction_count} transactions, ${i.mempool.size_bytes} vB`,
          ...(i.data_dir !== undefined ? [`data: ${i.data_dir ?? "in memory (not kept across restarts)"}`] : []),
          ...(i.wallet_address ? [`wallet: ${i.wallet_address}`] : []),
          ...(i.stored_bytes !== undefined && i.max_stored_bytes !== undefined ? [`held by its database: ${(i.stored_bytes / 1e6).toFixed(1)} of ${(i.max_stored_bytes / 1e6).toFixed(0)} MB ([chain] max_chain_mb)`] : []),
        ].join("\n"));
      }
      return 0;
    }
    case "mine": {
      arity(0, 1);
      const r = (await client.call("chain_mine", { count: args[0] === undefined ? 1 : wholeNumber(args[0], "N") })) as { hashes: string[]; height: number };
      if (json) print(r);
      else console.log(`mined ${r.hashes.length} block${r.hashes.length === 1 ? "" : "s"}; height ${r.height}, tip ${r.hashes[r.hashes.length - 1] ?? "-"}`);
      return 0;
    }
    case "reorg": {
      arity(1);
      const r = (await client.call("chain_reorg", { depth: wholeNumber(args[0], "DEPTH") })) as { fork_height: number; disconnected: string[]; connected: string[]; height: number };
      if (json) print(r);
      else console.log(`reorganised at height ${r.fork_height}: ${r.disconnected.length} blocks disconnected, ${r.connected.length} connected; height ${r.height}`);
      return 0;
    }
    case "send": {
      arity(2);
      const r = (await client.call("chain_send", { address: args[0], amount: wholeNumber(args[1], "SATS") })) as { txid: string; fee: number };
      if (json) print(r);
      else console.log(`sent ${args[1]} sats to ${args[0]} in ${r.txid} (fee ${r.fee} sats); it confirms in the next block (modhost chain mine)`);
      return 0;
    }
    default:
      throw new ModhostError("usage", sub === undefined ? CHAIN_USAGE : `unknown chain command "${sub}"; ${CHAIN_USAGE}`);
  }
}

/** One JSON object or array is the params; otherwise each argument is one positional value. */
function callParams(args: string[]): unknown {
  if (args.length === 0) return undefined;
  const parse = (a: string): unknown => {
    try {
      return JSON.parse(a);
    } catch {
      return a;
    }
  };
  if (args.length === 1) {
    const v = parse(args[0]!);
    if (v !== null && typeof v === "object") return v;
    return [v];
  }
  return args.map(parse);
}

/** Bytes for a person: 0, 512 B, 4.0 KiB, 12.5 MiB, 1.0 GiB. */
function shortBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return `${v.toFixed(1)} ${units[u]}`;
}

/** A module's data directory against its quota: "12.5 MiB/256.0 MiB", "12/10000" (max_data_bytes = 0: no quota). */
function dataColumns(d: ModuleStatus["data"]): [string, string] {
  if (!d) return ["-", "-"];
  return [`${shortBytes(d.bytes)}/${d.max_bytes > 0 ? shortBytes(d.max_bytes) : "no quota"}`, `${d.files}/${d.max_files}`];
}

function formatList(list: ModuleStatus[]): string {
  if (list.length === 0) return "no modules";
  const rows = list.map((s) => [shown(s.name), shown(s.version ?? "-"), s.runtime ?? "-", s.sandbox ?? "-", s.state, s.pid ? String(s.pid) : "-", String(s.restarts), ...dataColumns(s.data)]);
  const head = ["MODULE", "VERSION", "RUNTIME", "SANDBOX", "STATE", "PID", "RESTARTS", "DATA", "FILES"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  const out = [line(head)];
  list.forEach((s, i) => {
    out.push(line(rows[i]!));
    if (s.problem) out.push(...shownLines(s.problem).map((l) => `    ${l}`));
    if (s.waiting_for) out.push(`    starting: waiting for ${s.waiting_for}`);
  });
  return out.join("\n");
}

interface HealthAnswer {
  status: string;
  version: string;
  uptime_seconds: number;
  chain: { backend: string; chain: string; height: number };
  modules: Array<{ name: string; state: string; restarts: number; problem?: string; health: { status?: string; error?: string } | null }>;
}

function formatHealth(h: HealthAnswer): string {
  const out = [`${h.status}: modhost ${h.version}, up ${h.uptime_seconds} s, chain ${h.chain.chain} (${h.chain.backend}) at height ${h.chain.height}`];
  for (const m of h.modules) {
    const health = m.health ? ` health=${shown(m.health.status ?? "?")}${m.health.error ? ` (${shown(m.health.error)})` : ""}` : "";
    out.push(`  ${shown(m.name)}: ${m.state}${health}${m.restarts ? ` restarts=${m.restarts}` : ""}${m.problem ? ` - ${shown(m.problem.split("\n")[0])}` : ""}`);
  }
  return out.join("\n");
}


interface InfoAnswer extends ModuleStatus {
  manifest?: { description: string | null; author: string | null; dir: string; entry_point: string; requested: string[]; dependencies: Record<string, string> };
  rpc_methods: Array<{ method: string; description: string }>;
  cli: CliSpec | null;
  session?: Record<string, unknown>;
  metrics?: unknown;
}

/** `modhost info MODULE` for a person (--json prints the answer itself). */
function formatInfo(i: InfoAnswer): string {
  const out = [`${shown(i.name)} ${shown(i.version ?? "")} (${i.runtime ?? "?"}): ${i.state}${i.pid ? `, pid ${i.pid}` : ""}${i.restarts ? `, ${i.restarts} restarts` : ""}${i.sandbox ? `, sandbox ${i.sandbox}` : ""}`];
  if (i.problem) out.push(...shownLines(i.problem).map((l) => `  ${l}`));
  if (i.manifest) {
    if (i.manifest.description) out.push(`  ${shown(i.manifest.description)}`);
    if (i.manifest.author) out.push(`  author:       ${shown(i.manifest.author)}`);
    out.push(`  directory:    ${shown(i.manifest.dir)} (entry ${shown(i.manifest.entry_point)})`);
    out.push(`  requested:    ${i.manifest.requested.join(", ") || "(nothing)"}`);
    const deps = Object.entries(i.manifest.dependencies ?? {});
    if (deps.length) out.push(`  dependencies: ${deps.map(([n, r]) => `${n} ${r}`).join(", ")}`);
  }
  out.push(`  granted:      ${i.grants.join(", ") || "(nothing)"}`);
  if (i.missing.length) out.push(`  missing:      ${i.missing.join(", ")}`);
  if (i.verification) out.push(`  verification: ${i.verification}`);
  if (i.rpc_methods.length) {
    out.push("  RPC methods:");
    const width = Math.max(...i.rpc_methods.map((m) => m.method.length));
    for (const m of i.rpc_methods) out.push(`    ${m.method.padEnd(width)}  ${shown(m.description)}`);
  }
  if (i.cli?.commands.length) {
    out.push("  CLI commands:");
    for (const c of i.cli.commands) out.push(`    modhost ${i.name} ${shown([c.name, ...(c.args ?? []).map((a) => (a.required ? `<${a.name}>` : `[${a.name}]`))].join(" "))}${c.about ? `  ${shown(c.about)}` : ""}`);
  }
  out.push("  (modhost info --json for everything: counters, events, metrics)");
  return out.join("\n");
}
