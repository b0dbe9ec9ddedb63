// The modhost subcommands, declared once: this table is the option parser of every subcommand,
// its `--help` text, the global usage and the CLI reference in docs/operator-guide.md (checked
// against it by test/cli-help.test.ts). It imports nothing heavy, so `modhost version`,
// `modhost --help` and `modhost X --help` start without loading the host.

import { parseArgs } from "node:util";
import { closest, editDistance } from "../capabilities/catalogue.ts";
import { ModhostError } from "./errors.ts";

interface OptionSpec {
  /** Long name, without the dashes. */
  name: string;
  type: "string" | "boolean";
  short?: string;
  /** The value's placeholder in the usage (string options). */
  value?: string;
  multiple?: boolean;
  help: string;
}

export interface CommandSpec {
  /** "list", or "chain mine" for a subcommand of a group. */
  name: string;
  /** The positional arguments as the usage shows them, e.g. "MODULE" or "[N]". */
  args?: string;
  /** Bounds on the number of positional arguments (checked before anything runs). */
  minArgs?: number;
  /** undefined: any number. */
  maxArgs?: number;
  summary: string;
  /** More lines for `--help`. */
  details?: string;
  options: OptionSpec[];
  /** The section of the global usage. */
  group: "host" | "remote" | "chain" | "signing" | "registry";
  /** It asks a running host over RPC (takes the connection options). */
  remote?: boolean;
  /** Words after the first positional argument may start with "-" (call's parameters, e.g. -1). */
  looseArgs?: boolean;
}

const CONFIG: OptionSpec = { name: "config", short: "c", type: "string", value: "FILE", help: "the host's configuration (default ./modhost.toml, else the built-in defaults)" };
const JSON_OPT: OptionSpec = { name: "json", type: "boolean", help: "print the answer as JSON (stable keys, documented in docs/operator-guide.md)" };

/**
 * How to reach a running host, as bitcoin-cli spells it. Each overrides what --config FILE's
 * [rpc] section says; without them the client uses ./modhost.toml's [rpc] (or the defaults).
 */
const CONNECTION_OPTIONS: readonly OptionSpec[] = [
  CONFIG,
  { name: "rpcconnect", type: "string", value: "HOST", help: "the host's RPC address (default [rpc] bind, 127.0.0.1)" },
  { name: "rpcport", type: "string", value: "N", help: "the host's RPC port (default [rpc] port, 8339)" },
  { name: "rpccookiefile", type: "string", value: "FILE", help: "the host's cookie file (default [rpc] cookie_file, or DIR/.cookie with --datadir)" },
  { name: "datadir", type: "string", value: "DIR", help: "the directory that holds the host's .cookie (what `modhost dev` prints)" },
];

/** The total deadline of a command's call to the host (host/rpc/client.ts DEFAULT_CALL_DEADLINE_MS). */
const TIMEOUT_OPT: OptionSpec = { name: "timeout", type: "string", value: "SECONDS", help: "give up when the host has not answered in full within this (default 300; a silent connection is given up after 60 s whatever this says)" };

const remote = (name: string, summary: string, extra: Partial<CommandSpec> = {}, options: OptionSpec[] = []): CommandSpec => ({
  name, summary, group: "remote", remote: true, minArgs: 0, maxArgs: 0, ...extra, options: [...options, TIMEOUT_OPT, ...CONNECTION_OPTIONS],
});
const chain = (name: string, summary: string, extra: Partial<CommandSpec> = {}): CommandSpec => ({
  ...remote(`chain ${name}`, summary, extra, [JSON_OPT]), group: "chain",
});

export const COMMANDS: readonly CommandSpec[] = [
  { name: "run", group: "host", maxArgs: 0, summary: "run the host with the modules enabled in FILE (default ./modhost.toml)", options: [CONFIG],
    details: "Exit status: 0 after a clean stop (SIGINT/SIGTERM, modhost stop), also when no module is enabled (the host\nwarns, and serves RPC and the chain); 1 on a configuration error; 70 when the host gives up." },
  { name: "check", group: "host", maxArgs: 0, summary: "show what would load, in which order, with which grants, and every problem", options: [CONFIG, JSON_OPT],
    details: "Exit status: 0 when there is no problem, 1 otherwise (warnings do not count)." },
  { name: "dev", group: "host", args: "[PATH]", maxArgs: 1,
    summary: "run the module in PATH (or the modules under PATH) on the embedded regtest chain, for module authors",
    details: "Mines a block every --interval seconds, grants every requested capability and reloads a module when\nits files change: never for production. It prints the command that reaches it (modhost list --datadir DIR ...).",
    options: [CONFIG, { name: "interval", type: "string", value: "SECONDS", help: "seconds between mined blocks (default 3; 0: only on request)" },
      { name: "inspect", type: "string", value: "[PORT]", help: "attach Chrome DevTools or VS Code to the TypeScript modules (127.0.0.1; --inspect alone: port 9229)" }] },
  { name: "new", group: "host", args: "NAME", minArgs: 1, maxArgs: 1, summary: "write a new module that works at once (manifest, entry, RPC method, test, README)",
    options: [{ name: "lang", type: "string", value: "ts|rust", help: "the module's language (default ts)" }, { name: "dir", type: "string", value: "DIR", help: "where to write it (default ./NAME)" }] },
  { name: "test", group: "host", args: "[FILE...]", summary: "run a module's tests (node:test, with the modhost/testing harness) in the current directory",
    options: [{ name: "no-build", type: "boolean", help: "do not run build.sh first (Rust modules)" }] },
  { name: "docs", group: "host", maxArgs: 0, summary: "print what is generated from the code (docs/permissions.md, docs/events.md, the SDKs' typed methods); --write: write them and the operator guide's tables",
    options: [{ name: "write", type: "boolean", help: "write the files instead of printing them" }] },
  { name: "bitcoind-config", group: "host", maxArgs: 0,
    summary: "print bitcoin.conf lines for a least-authority RPC user for modhost and the matching [chain] table",
    options: [
      { name: "user", type: "string", value: "NAME", help: "the RPC user's name (default modhost)" },
      { name: "rpc-port", type: "string", value: "N", help: "bitcoind's RPC port" },
      { name: "zmq-port", type: "string", value: "N", help: "bitcoind's ZMQ port" },
    ] },
  { name: "version", group: "host", maxArgs: 0, summary: "print the version", options: [] },
  { name: "help", group: "host", args: "[COMMAND]", maxArgs: 2, summary: "print this usage, or one command's (same as COMMAND --help)", options: [] },

  remote("list", "every module with its state", {}, [JSON_OPT]),
  remote("info", "one module: status, manifest, grants, RPC methods, CLI, metrics", { args: "MODULE", minArgs: 1, maxArgs: 1 }, [JSON_OPT]),
  remote("load", "load a module (manifest, code and grants read from disk)", { args: "MODULE", minArgs: 1, maxArgs: 1 }, [JSON_OPT]),
  remote("unload", "stop one module; the others keep running", { args: "MODULE", minArgs: 1, maxArgs: 1 }, [JSON_OPT]),
  remote("reload", "unload and load a module again", { args: "MODULE", minArgs: 1, maxArgs: 1 }, [JSON_OPT]),
  remote("enable", "lift a module's quarantine and load it again", { args: "MODULE", minArgs: 1, maxArgs: 1 }, [JSON_OPT]),
  remote("health", "host uptime, chain height, every module's health (exit 1 if degraded)", {}, [JSON_OPT]),
  remote("methods", "every RPC method: the host's and the modules'", {}, [JSON_OPT]),
  remote("stop", "stop the host gracefully", {}),
  remote("call", "call any RPC method; one JSON object/array, or one value per parameter", {
    args: "METHOD [PARAMS...]", minArgs: 1, maxArgs: undefined, looseArgs: true,
    details: "Each parameter is JSON when it parses as JSON (10, true, \"x\", [1]), else a string.\nA single JSON object or array is the whole params: call block-stats.summary '{\"last\":10}'.",
  }),
  chain("info", "the chain's tip, height, mempool, data directory"),
  chain("mine", "mine N blocks (default 1) on the embedded regtest chain", { args: "[N]", maxArgs: 1 }),
  chain("reorg", "replace the top DEPTH blocks with DEPTH+1 new ones (a reorg)", { args: "DEPTH", minArgs: 1, maxArgs: 1 }),
  chain("send", "pay SATS from the embedded wallet to a regtest address", { args: "ADDRESS SATS", minArgs: 2, maxArgs: 2 }),

  { name: "keygen", group: "signing", maxArgs: 0, summary: "make a secret key file (mode 0600) and print its public key",
    options: [{ name: "out", short: "o", type: "string", value: "FILE", help: "where to write the key (default modhost-key.toml)" }, { name: "name", type: "string", value: "NAME", help: "the signer's name (default maintainer)" }] },
  { name: "sign", group: "signing", args: "DIR", minArgs: 1, maxArgs: 1, summary: "set [binary] hash in DIR/module.toml and add this key's signature",
    options: [{ name: "key", short: "k", type: "string", value: "FILE", help: "the secret key file (modhost keygen)" }, { name: "scheme", type: "string", value: "schnorr|ecdsa", help: "the signature scheme (default schnorr)" }] },
  { name: "verify", group: "signing", args: "DIR", minArgs: 1, maxArgs: 1, summary: "check a module's hash, signatures and compatibility as the host would",
    options: [CONFIG, { name: "trust-key", type: "string", multiple: true, value: "HEX", help: "trust this public key (repeatable) instead of the config's" }, { name: "threshold", type: "string", value: "N", help: "signatures required from the --trust-key keys" }] },

  { name: "search", group: "registry", args: "[TERM]", maxArgs: 1, summary: "list the registry's modules (name or description matching TERM)", options: [CONFIG] },
  { name: "install", group: "registry", args: "NAME[@RANGE]...", minArgs: 1, summary: "download, verify and install a module and its dependencies", options: [CONFIG] },
  { name: "update", group: "registry", args: "[NAME[@RANGE]]", maxArgs: 1,
    summary: "install newer versions; one that asks for new capabilities waits for --activate",
    options: [CONFIG, { name: "force", type: "boolean", help: "update even though installed modules that depend on the old version will not load" }, { name: "activate", type: "boolean", help: "activate NAME's pending update once its capabilities are granted" }] },
  { name: "remove", group: "registry", args: "NAME", minArgs: 1, maxArgs: 1, summary: "remove an installed module (refused while others depend on it)",
    options: [CONFIG, { name: "force", type: "boolean", help: "remove it even though others depend on it" }] },
  { name: "registry build", group: "registry", args: "[DIR...]", summary: "make or extend a static registry from module directories (without DIR: sign the index again)",
    options: [
      { name: "out", short: "o", type: "string", value: "OUT", help: "the registry directory to write" },
      { name: "key", short: "k", type: "string", multiple: true, value: "FILE", help: "a secret key file to sign the index with (repeatable)" },
      { name: "expires-days", type: "string", value: "N", help: "days until the index expires" },
      { name: "version", type: "string", value: "N", help: "the index's version number" },
    ] },
  { name: "registry serve", group: "registry", args: "DIR", minArgs: 1, maxArgs: 1, summary: "serve a registry directory on http://127.0.0.1 (for testing)",
    options: [
      { name: "port", short: "p", type: "string", value: "N", help: "the port (default 8341)" },
      { name: "host", type: "string", value: "ADDRESS", help: "the address (default 127.0.0.1)" },
      { name: "quiet", type: "boolean", help: "do not log each request" },
    ] },
];

/** The words that start a command: "chain" and "registry" take a second word. */
export const GROUPS: readonly string[] = [...new Set(COMMANDS.filter((c) => c.name.includes(" ")).map((c) => c.name.split(" ")[0]!))];
const TOP_WORDS = [...new Set(COMMANDS.map((c) => c.name.split(" ")[0]!))];

/** Words longer than this get no "did you mean" (the edit distance costs the product of the lengths). */
export const MAX_SUGGEST_LENGTH = 64;

/** The closest of `candidates` to a mistyped `word`, only when it is close (a typo, not another word). */
export function didYouMean(word: string, candidates: readonly string[]): string | undefined {
  if (word.length === 0 || word.length > MAX_SUGGEST_LENGTH) return undefined;
  const best = closest(word, candidates);
  if (best === undefined) return undefined;
  const d = editDistance(word.toLowerCase(), best.toLowerCase());
  // A prefix ("inf" for "info") or up to a third of the letters wrong (at least 2).
  return best.startsWith(word) || d <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

export function findCommand(name: string): CommandSpec | undefined {
  return COMMANDS.find((c) => c.name === name);
}

/** A suggestion for a first word that is no command (undefined when nothing is close). */
export function suggestCommand(word: string): string | undefined {
  return didYouMean(word, TOP_WORDS);
}

function optionUsage(o: OptionSpec): string {
  const flag = `${o.short ? `-${o.short}, ` : ""}--${o.name}${o.type === "string" ? ` ${o.value ?? "VALUE"}` : ""}`;
  return flag;
}

function usageLine(c: CommandSpec): string {
  const opts = c.options.some((o) => o === CONNECTION_OPTIONS[1]) ? " [OPTIONS]" : c.options.length ? " [OPTIONS]" : "";
  return `modhost ${c.name}${c.args ? ` ${c.args}` : ""}${opts}`;
}

/** `modhost NAME --help`. */
export function commandHelp(c: CommandSpec): string {
  const lines = [`Usage: ${usageLine(c)}`, "", c.summary];
  if (c.details) lines.push("", ...c.details.split("\n"));
  const own = c.options.filter((o) => !CONNECTION_OPTIONS.includes(o) || (o === CONFIG && !c.remote));
  const table = (opts: readonly OptionSpec[]) => {
    const flags = opts.map(optionUsage);
    const width = Math.max(...flags.map((f) => f.length));
    return opts.map((o, i) => `  ${flags[i]!.padEnd(width)}  ${o.help}${o.multiple ? " (repeatable)" : ""}`);
  };
  const help: OptionSpec = { name: "help", short: "h", type: "boolean", help: "print this help and do nothing else" };
  lines.push("", "Options:", ...table([...own, help]));
  if (c.remote) lines.push("", "Connection (as bitcoin-cli; each overrides --config FILE's [rpc]):", ...table(CONNECTION_OPTIONS));
  return lines.join("\n");
}

/** A group word alone: `modhost chain --help`. */
export function groupHelp(group: string): string {
  const subs = COMMANDS.filter((c) => c.name.startsWith(`${group} `));
  return [`Usage: modhost ${group} COMMAND [OPTIONS]`, "", "Commands:", ...commandList(subs), "", `modhost ${group} COMMAND --help shows one command's options.`].join("\n");
}

function commandList(list: readonly CommandSpec[]): string[] {
  const heads = list.map((c) => `modhost ${c.name}${c.args ? ` ${c.args}` : ""}`);
  const width = Math.min(34, Math.max(...heads.map((h) => h.length)));
  return list.map((c, i) => (heads[i]!.length > width ? `  ${heads[i]}\n  ${"".padEnd(width)}  ${c.summary}` : `  ${heads[i]!.padEnd(width)}  ${c.summary}`));
}

const SECTIONS: Record<CommandSpec["group"], string> = {
  host: "Running and checking the host:",
  remote: "Talking to a running host (connection: --config FILE, or --rpcconnect HOST --rpcport N --rpccookiefile FILE / --datadir DIR):",
  chain: "The embedded regtest chain's controls (a running host):",
  signing: "Signing modules (docs/signing.md):",
  registry: "Modules from a registry (docs/operator-guide.md, \"Verified modules and the registry\"):",
};

/** The global usage, made from the table. */
export function globalHelp(version: string): string {
  const out = [`modhost ${version}: a capability-sandboxed module host for a Bitcoin node`, "", "Usage: modhost COMMAND [ARGS] [OPTIONS]    (modhost COMMAND --help: its options)"];
  for (const [group, title] of Object.entries(SECTIONS)) {
    out.push("", title, ...commandList(COMMANDS.filter((c) => c.group === group)));
    if (group === "remote") out.push("  modhost MODULE [COMMAND [ARGS..]]  run a module's CLI command (without COMMAND: list its commands)");
  }
  out.push("", "Docs: docs/operator-guide.md, docs/module-guide.md");
  return out.join("\n");
}

/** The CLI reference for docs/operator-guide.md (between the generated-section markers). */
export function cliReference(): string {
  const out = ["| Command | What it does | Options |", "|---|---|---|"];
  for (const c of COMMANDS) {
    const opts = c.options.filter((o) => !CONNECTION_OPTIONS.includes(o) || o === CONFIG).map((o) => `\`--${o.name}\``);
    if (c.remote) opts.push("connection options");
    out.push(`| \`modhost ${c.name}${c.args ? ` ${c.args}` : ""}\` | ${c.summary} | ${opts.join(" ") || "-"} |`);
  }
  return out.join("\n");
}

const START = "<!-- cli-reference:start -->";
const END = "<!-- cli-reference:end -->";

/** `guide` with the text between the cli-reference markers replaced by `reference`. */
export function spliceCliReference(guide: string, reference: string): string {
  const a = guide.indexOf(START);
  const b = guide.indexOf(END);
  if (a < 0 || b < a) throw new Error(`docs/operator-guide.md has no ${START} ... ${END} section`);
  return `${guide.slice(0, a + START.length)}\n${reference}\n${guide.slice(b)}`;
}

export interface Parsed {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

/** Whether `argv` (before any `--`) asks for help. */
export function wantsHelp(argv: readonly string[]): boolean {
  for (const a of argv) {
    if (a === "--") return false;
    if (a === "--help" || a === "-h") return true;
  }
  return false;
}

/**
 * Parse `argv` against `c`'s declared options: an unknown option is refused with the closest
 * known one, a missing value and a wrong number of arguments with the usage.
 */
export function parseCommand(c: CommandSpec, argv: readonly string[]): Parsed {
  const options: Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }> = {};
  for (const o of c.options) options[o.name] = { type: o.type, ...(o.short ? { short: o.short } : {}), ...(o.multiple ? { multiple: true } : {}) };
  const { tokens } = parseArgs({ args: [...argv], options, strict: false, allowPositionals: true, tokens: true });
  const values: Parsed["values"] = {};
  const positionals: string[] = [];
  const usage = `usage: ${usageLine(c)} (modhost ${c.name} --help for more)`;
  let lastIndex = -1;
  for (const t of tokens) {
    if (t.kind === "option-terminator") continue;
    if (t.kind === "positional") {
      positionals.push(t.value);
      continue;
    }
    const raw = argv[t.index]!;
    // A negative number is a value, not an option (modhost call METHOD -1).
    if (/^-\d/.test(raw)) {
      if (t.index !== lastIndex) positionals.push(raw);
      lastIndex = t.index;
      continue;
    }
    if (c.looseArgs && positionals.length > 0 && !(t.name in options)) {
      if (t.index !== lastIndex) positionals.push(raw);
      lastIndex = t.index;
      continue;
    }
    const spec = c.options.find((o) => o.name === t.name || o.short === t.name);
    if (!spec) {
      const known = c.options.map((o) => `--${o.name}`);
      const shown = raw.length > MAX_SUGGEST_LENGTH ? `${raw.slice(0, MAX_SUGGEST_LENGTH)}…` : raw;
      const guess = didYouMean(`--${t.name}`, known);
      throw new ModhostError("cli_usage", `modhost ${c.name}: unknown option ${shown}${guess ? `; did you mean ${guess}?` : ""}`, `${usage}; its options: ${known.join(", ") || "none"}`);
    }
    if (spec.type === "string") {
      if (t.value === undefined || (t.inlineValue === false && t.value.startsWith("-") && t.value.length > 1 && !/^-\d/.test(t.value))) {
        throw new ModhostError("cli_usage", `modhost ${c.name}: --${spec.name} needs a value (${spec.value ?? "VALUE"})`, usage);
      }
      if (spec.multiple) values[spec.name] = [...((values[spec.name] as string[] | undefined) ?? []), t.value];
      else values[spec.name] = t.value;
    } else {
      if (t.inlineValue) throw new ModhostError("cli_usage", `modhost ${c.name}: --${spec.name} takes no value (got --${spec.name}=${t.value})`, usage);
      values[spec.name] = true;
    }
  }
  const min = c.minArgs ?? 0;
  if (positionals.length < min || (c.maxArgs !== undefined && positionals.length > c.maxArgs)) {
    const what = positionals.length < min ? `needs ${c.args}` : positionals.length === 0 ? "takes no arguments" : `takes ${c.maxArgs === 0 ? "no arguments" : `at most ${c.maxArgs} argument${c.maxArgs === 1 ? "" : "s"} (${c.args})`}, got ${positionals.map((p) => JSON.stringify(p.length > 40 ? `${p.slice(0, 40)}…` : p)).join(" ")}`;
    throw new ModhostError("cli_usage", `modhost ${c.name} ${what}`, usage);
  }
  return { values, positionals };
}
