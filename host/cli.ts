// The modhost command line. The subcommands, their options and their help are declared in
// host/cli-table.ts; this file runs them (host/rpc/commands.ts for those that ask a running host).
//
//   modhost run | check | dev | docs | bitcoind-config | version | help      (here)
//   modhost list | info | ... | call | chain ...   ask the running host over its RPC server
//   modhost keygen | sign | verify                   host/verify/cli.ts
//   modhost search | install | update | remove | registry ...   host/registry/cli.ts
//   modhost <module> <command> ...                   run a module's CLI command in the running host

import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { ConfigError, formatProblem, ModhostError } from "./errors.ts";
import { HOST_VERSION } from "./version.ts";
import { commandHelp, findCommand, globalHelp, GROUPS, groupHelp, parseCommand, suggestCommand, wantsHelp, type CommandSpec, type Parsed } from "./cli-table.ts";
// Everything else is imported when a command needs it: `modhost version`, `--help` and the
// remote commands start without loading the host (docs/operator-guide.md, "The command line").
import type { HostConfig } from "./config.ts";
import type { Host } from "./host.ts";

const HELP = globalHelp(HOST_VERSION);

/**
 * The longest line of an error the CLI prints: an error's message may quote a remote party's
 * answer (an RPC server's, a registry's) of any length.
 */
const MAX_ERROR_LINE_CHARS = 8192;

/** The most lines of one error message (or hint) the CLI prints; past them, one line says so. */
const MAX_ERROR_LINES = 64;

/**
 * The configuration `run`, `check` and `dev --config` start with. A file past
 * CONFIG_ON_LOOP_BYTES is read, parsed and checked in a worker thread, as a reload reads it
 * (host/config-off.ts): its own heap and a deadline, the loop free (a modhost.toml of
 * MAX_TOML_BYTES of unknown keys held the start's loop 3.6 s, load 14).
 */
async function configFrom(file: string | undefined): Promise<HostConfig> {
  const { loadConfigAtStart } = await import("./config-off.ts");
  if (file) return loadConfigAtStart(file);
  if (existsSync("modhost.toml")) return loadConfigAtStart("modhost.toml");
  const { defaultConfig } = await import("./config.ts");
  return defaultConfig(process.cwd());
}

async function runUntilSignal(host: Host): Promise<void> {
  const { installLastResort } = await import("./last-resort.ts");
  // What escapes every handler is logged and contained, not the end of the host (host/last-resort.ts).
  installLastResort({
    logger: host.logger,
    contain: (module) => host.manager?.processOf(module)?.kill(),
    giveUp: (reason) => {
      host.exitCode = 70;
      void host.stop(reason);
    },
  });
  let first = 0;
  const onSignal = (sig: string) => {
    // Some supervisors (and `timeout`) signal both the process and its group: a repeat within
    // a second is the same request. A later one means "stop waiting".
    if (first !== 0) {
      if (Date.now() - first < 1000) return;
      host.logger.log("warn", "host", `second ${sig}: exiting now`);
      process.exit(130);
    }
    first = Date.now();
    void host.stop(sig);
  };
  process.on("SIGINT", () => onSignal("SIGINT"));
  process.on("SIGTERM", () => onSignal("SIGTERM"));
  process.on("SIGHUP", () => void host.reloadConfig());
  void host.stopped.then(() => process.exit(host.exitCode));
}

async function run({ values }: Parsed): Promise<number> {
  // The host's code loads while the worker reads the file.
  const [config, { Host }] = await Promise.all([configFrom(values.config as string | undefined), import("./host.ts")]);
  const host = new Host({ config });
  await runUntilSignal(host);
  await host.start();
  return -1; // keep running
}

async function dev({ values, positionals }: Parsed): Promise<number> {
  const { defaultConfig } = await import("./config.ts");
  const { loadManifest } = await import("./manifest.ts");
  const interval = (values.interval as string | undefined) ?? "3";
  if (!/^\d{1,6}(\.\d{1,3})?$/.test(interval)) throw new ModhostError("usage", `modhost dev --interval must be a number of seconds (0 to 999999), got ${JSON.stringify(interval.slice(0, 40))}`, "e.g. --interval 10, or --interval 0 to mine only on request (modhost chain mine)");
  const target = path.resolve(positionals[0] ?? ".");
  const config = values.config ? await configFrom(values.config as string) : defaultConfig(process.cwd());
  if (existsSync(path.join(target, "module.toml"))) {
    const manifest = await loadManifest(path.join(target, "module.toml"));
    config.modules.modules_dir = path.dirname(target);
    config.modules.enabled_modules = [manifest.name];
  } else {
    config.modules.modules_dir = target;
  }
  const scratch = path.join(os.tmpdir(), `modhost-dev-${path.basename(target)}`);
  if (!values.config) {
    config.modules.data_dir = path.join(scratch, "modules");
    config.storage.dir = path.join(scratch, "storage");
    // Its own chain too: `npm start` holds the lock on data/chain.
    config.chain.data_dir = path.join(scratch, "chain");
    config.host.audit_log = path.join(scratch, "audit.log");
    config.rpc.cookie_file = path.join(scratch, ".cookie");
    // Its own port, so a development host can run beside `npm start`.
    config.rpc.port = 8340;
    config.host.log_level = "debug";
  }
  config.chain.block_interval_seconds = Number(interval);
  if (values.inspect !== undefined) {
    // The inspector for every TypeScript module, on loopback only (host/inspector.ts).
    const { inspectAddressProblem } = await import("./config.ts");
    const raw = values.inspect as string;
    const address = /^\d+$/.test(raw) ? `127.0.0.1:${raw}` : raw;
    const problem = inspectAddressProblem(address);
    if (problem) throw new ModhostError("invalid_argument", `--inspect: ${problem}`, "use --inspect or --inspect=PORT (served on 127.0.0.1)");
    config.modules.default_limits.inspect = address;
  }
  // A module under development is not signed yet: it runs with the "allow-unsigned" warning
  // (a [modules.trust.NAME] signatures setting in --config FILE still applies).
  config.trust.signatures = "allow-unsigned";
  const { Host } = await import("./host.ts");
  const { DevReloader, devBanner } = await import("./dev.ts");
  const host = new Host({ config, grantAll: true });
  await runUntilSignal(host);
  console.error(devBanner({ inspect: config.modules.default_limits.inspect }));
  await host.start();
  new DevReloader(host).start();
  printReach(host);
  return -1;
}

/**
 * modhost dev: say how `modhost list`/`call` reach this host, as an exact command (the cookie
 * is in the dev data directory, a stable place for the same module directory).
 */
function printReach(host: Host): void {
  const at = host.rpcServer?.address;
  if (!at) return;
  const rpc = host.config.rpc;
  const dir = path.dirname(rpc.cookie_file);
  const where = path.basename(rpc.cookie_file) === ".cookie" ? `--datadir ${dir}` : `--rpccookiefile ${rpc.cookie_file}`;
  const connect = at.host === "127.0.0.1" ? "" : ` --rpcconnect ${at.host.includes(":") ? `[${at.host}]` : at.host}`;
  host.logger.for("dev").info(`reach this host with: modhost list ${where} --rpcport ${at.port}${connect}  (the same options work for call, info, chain ...)`);
}

async function check({ values }: Parsed): Promise<number> {
  const [config, { Logger, escapeText, terminalJson }, { ModuleManager }, { EventBus }, { moduleConfig }, { checkModule }, { sandboxModeFor, strayModuleWarnings }, { describeSandboxes, detectSandbox }, { describeDataVolumes }] = await Promise.all([
    configFrom(values.config as string | undefined), import("./log.ts"), import("./manager.ts"), import("./events/bus.ts"), import("./module-config.ts"), import("./verify/module.ts"), import("./config.ts"), import("../runtime/sandbox/index.ts"), import("./data-quota.ts"),
  ]);
  const logger = new Logger({ level: "error", write: () => {} });
  const manager = new ModuleManager({ config, bus: new EventBus(), logger });
  await manager.prepare();
  const byName = new Map((await manager.discover()).manifests.map((m) => [m.name, m]));

  // Every problem of every module first, so the load order shows only what would start.
  const problems = new Map<string, string>();
  const verification = new Map<string, string>();
  for (const s of manager.status()) {
    if (s.state !== "pending") {
      problems.set(s.name, s.problem ?? s.state);
      continue;
    }
    const manifest = byName.get(s.name)!;
    try {
      moduleConfig(config, manifest);
    } catch (err) {
      problems.set(s.name, `${err instanceof ConfigError ? "configuration" : "does not compile"}:\n${(err as Error).message}`);
      continue;
    }
    // Compile TypeScript modules (an import that cannot work is a problem worth knowing now),
    // hash what would run, check signatures and compatibility, as a load does (host/verify).
    const checked = await checkModule(manifest, config);
    if (checked.report) verification.set(s.name, checked.report.summary);
    if (checked.problem) problems.set(s.name, checked.problem);
  }
  const order: string[] = [];
  for (const name of manager.order) {
    if (problems.has(name)) continue;
    const blocker = Object.keys(byName.get(name)?.dependencies ?? {}).find((d) => problems.has(d));
    if (blocker) problems.set(name, `depends on ${blocker}, which would not start`);
    else order.push(name);
  }

  const caps = await detectSandbox();
  const sandbox = describeSandboxes({ native: sandboxModeFor(config, "native"), isolate: sandboxModeFor(config, "isolate") }, caps);
  const volumes = await describeDataVolumes(config.modules.data_dir);
  // A designated provider that is not among the modules would leave its role empty.
  for (const [role, name] of Object.entries(config.modules.providers)) {
    if (!byName.has(name)) problems.set(`providers.${role}`, `[modules.providers] ${role} = "${name}", but there is no module "${name}" in ${config.modules.modules_dir}`);
  }
  const discovered = await manager.discover();
  const warnings = strayModuleWarnings(config, [...discovered.manifests.map((m) => m.name), ...discovered.broken.map((b) => path.basename(b.dir))]);
  if (values.json) {
    // Stable keys, documented in docs/operator-guide.md ("modhost check --json").
    console.log(terminalJson({
      config: config.file ?? null,
      modules_dir: config.modules.modules_dir,
      load_order: order,
      sandbox: { full: sandbox.full, text: sandbox.text },
      data_volumes: { available: volumes.volumes, text: volumes.text },
      providers: config.modules.providers,
      modules: manager.status().map((s) => ({
        name: s.name, version: s.version, runtime: s.runtime, ok: !problems.has(s.name),
        granted: s.grants, missing: s.missing, verification: verification.get(s.name) ?? null, problem: problems.get(s.name) ?? null,
      })),
      problems: [...problems].map(([key, problem]) => ({ key, problem })),
      warnings,
    }, 2));
    return problems.size ? 1 : 0;
  }
  // Names of module directories and the problems found in them (manifest excerpts included) are
  // the modules' text: control characters and terminal escapes are shown, not acted on.
  const shown = (text: string) => escapeText(text, Infinity).text;
  const out = [
    `config: ${config.file ?? "(defaults)"}`,
    `modules_dir: ${config.modules.modules_dir}`,
    `load order: ${shown(order.join(" -> ")) || "(none)"}`,
    sandbox.full ? sandbox.text : `${sandbox.text} (less protection than the full sandbox: see docs/security.md)`,
    volumes.text,
    `providers: ${Object.entries(config.modules.providers).map(([role, m]) => `${role} = ${m}`).join(", ") || "(none designated)"}`,
    "",
  ];
  for (const [key, problem] of problems) if (key.startsWith("providers.")) out.push(`✗ ${shown(problem)}`);
  for (const w of warnings) out.push(`! warning: ${shown(w)}`);
  for (const s of manager.status()) {
    const problem = problems.get(s.name);
    out.push(`${problem ? "✗" : "✓"} ${shown(s.name)} ${shown(s.version ?? "")} (${s.runtime ?? "?"})`);
    if (s.grants.length) out.push(`    granted: ${s.grants.join(", ")}`);
    if (s.missing.length) out.push(`    missing: ${s.missing.join(", ")}`);
    const verified = verification.get(s.name);
    if (verified && !problem) out.push(`    ${verified}`);
    if (problem) out.push(...problem.split("\n").map((l) => `    ${shown(l)}`));
  }
  out.push("", `${problems.size ? `${problems.size} problem(s) found` : "no problems found"}${warnings.length ? `, ${warnings.length} warning(s)` : ""}`);
  console.log(out.join("\n"));
  return problems.size ? 1 : 0;
}

/** Print or (--write) regenerate the reference pages generated from the catalogues. */
async function docs({ values }: Parsed): Promise<number> {
  const { GENERATED_DOCS } = await import("./docs.ts");
  const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
  const { cliReference, spliceCliReference } = await import("./cli-table.ts");
  const guide = path.join(root, "docs", "operator-guide.md");
  const { spliceConfigTables } = await import("./config-docs.ts");
  if (values.write) {
    await writeFile(guide, spliceConfigTables(spliceCliReference(await readFile(guide, "utf8"), cliReference())));
    console.log("wrote docs/operator-guide.md (the command line reference and the configuration key tables)");
  }
  for (const [file, make] of Object.entries(GENERATED_DOCS)) {
    if (values.write) {
      await writeFile(path.join(root, file), make());
      console.log(`wrote ${file}`);
    } else {
      console.log(make());
    }
  }
  return 0;
}

async function bitcoindConfigCommand(parsed: Parsed): Promise<number> {
  const values = parsed.values as { user?: string; "rpc-port"?: string; "zmq-port"?: string };
  const { bitcoindConfig } = await import("../chain/bitcoind/rpcauth.ts");
  const port = (v: string | undefined, name: string) => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > 65535) throw new ModhostError("invalid_argument", `--${name} must be a port number from 1 to 65535, got "${v}"`);
    return n;
  };
  const rpcPort = port(values["rpc-port"], "rpc-port");
  const zmqPort = port(values["zmq-port"], "zmq-port");
  const cfg = bitcoindConfig({ ...(values.user ? { user: values.user } : {}), ...(rpcPort ? { rpcPort } : {}), ...(zmqPort ? { zmqPort } : {}) });
  console.log("# bitcoin.conf (restart bitcoind after adding these lines)");
  console.log(cfg.bitcoinConf.join("\n"));
  console.log("\n# modhost.toml (keep this file private: it holds the password)");
  console.log(cfg.modhostToml.join("\n"));
  return 0;
}

/** What each command of the table runs; `args` is the command line after the command's words. */
const HANDLERS: Record<string, (parsed: Parsed, args: string[]) => Promise<number>> = {
  run,
  check,
  dev,
  docs,
  "bitcoind-config": bitcoindConfigCommand,
  version: async () => {
    console.log(HOST_VERSION);
    return 0;
  },
  keygen: async (_p, args) => (await import("./verify/cli.ts")).keygenCommand(args),
  sign: async (_p, args) => (await import("./verify/cli.ts")).signCommand(args),
  verify: async (_p, args) => (await import("./verify/cli.ts")).verifyCommand(args),
  search: async (_p, args) => (await import("./registry/cli.ts")).searchCommand(args),
  install: async (_p, args) => (await import("./registry/cli.ts")).installCommand(args),
  update: async (_p, args) => (await import("./registry/cli.ts")).updateCommand(args),
  remove: async (_p, args) => (await import("./registry/cli.ts")).removeCommand(args),
  new: async (_p, args) => (await import("./scaffold.ts")).newCommand(args),
  test: async (_p, args) => (await import("./test-command.ts")).testCommand(args),
  "registry build": async (_p, args) => (await import("./registry/cli.ts")).registryCommand(["build", ...args]),
  "registry serve": async (_p, args) => (await import("./registry/cli.ts")).registryCommand(["serve", ...args]),
};

/** The handler of every command in the table (test/cli-help.test.ts checks none is missing). */
export function handlerOf(spec: CommandSpec): ((parsed: Parsed, args: string[]) => Promise<number>) {
  if (spec.remote) return async (parsed) => (await import("./rpc/commands.ts")).hostCommandFromCli(spec.name, parsed);
  const h = HANDLERS[spec.name];
  if (!h) throw new Error(`no handler for modhost ${spec.name}`);
  return h;
}

function unknownCommand(word: string): ModhostError {
  const shown = word.length > 64 ? `${word.slice(0, 64)}…` : word;
  const guess = suggestCommand(word);
  return new ModhostError("cli_usage", `unknown command "${shown}"${guess ? `; did you mean "modhost ${guess}"?` : ""}`, "Usage: modhost COMMAND [ARGS] [OPTIONS]; modhost --help lists the commands, and a module's own are modhost MODULE COMMAND (with a host running)");
}

async function main(): Promise<number> {
  const [command, ...rest] = process.argv.slice(2);
  if (command === undefined || command === "--help" || command === "-h" || (command === "help" && rest.length === 0)) {
    console.log(HELP);
    return 0;
  }
  if (command === "--version") {
    console.log(HOST_VERSION);
    return 0;
  }
  // modhost help COMMAND [SUB] is COMMAND [SUB] --help.
  const words = command === "help" ? (rest[0] === "--help" || rest[0] === "-h" ? ["help"] : rest) : [command, ...rest];
  const asksHelp = command === "help" || wantsHelp(rest);
  let spec: CommandSpec | undefined;
  let args: string[];
  if (GROUPS.includes(words[0]!)) {
    const sub = words[1];
    if (sub === undefined || sub === "--help" || sub === "-h") {
      if (sub === undefined && !asksHelp) {
        console.error(groupHelp(words[0]!));
        return 2;
      }
      console.log(groupHelp(words[0]!));
      return 0;
    }
    spec = findCommand(`${words[0]} ${sub}`);
    if (!spec) {
      const { didYouMean, COMMANDS } = await import("./cli-table.ts");
      const subs = COMMANDS.filter((c) => c.name.startsWith(`${words[0]} `)).map((c) => c.name.split(" ")[1]!);
      const guess = didYouMean(sub, subs);
      throw new ModhostError("cli_usage", `unknown ${words[0]} command "${sub.slice(0, 64)}"${guess ? `; did you mean "modhost ${words[0]} ${guess}"?` : ""}`, `modhost ${words[0]} --help lists them: ${subs.join(", ")}`);
    }
    args = words.slice(2);
  } else {
    spec = findCommand(words[0]!);
    args = words.slice(1);
  }
  if (spec) {
    if (asksHelp) {
      console.log(commandHelp(spec));
      return 0;
    }
    // modhost dev --inspect alone means the usual port.
    if (spec.name === "dev") args = args.map((a) => (a === "--inspect" ? "--inspect=9229" : a));
    return handlerOf(spec)(parseCommand(spec, args), args);
  }
  if (command === "help") throw unknownCommand(words[0]!);
  // Not a command of modhost's own: a module's name (modhost MODULE COMMAND ...), if a host runs one.
  const { moduleCommand } = await import("./rpc/commands.ts");
  const code = await moduleCommand(command, rest);
  if (code !== undefined) return code;
  throw unknownCommand(command);
}

/**
 * Exit once stdout and stderr have taken what was printed. Written to a pipe, output leaves in
 * pieces as the reader takes them; process.exit at once cut it at the pipe's buffer (before,
 * `modhost call` of a 15 MiB answer piped to a reader printed 146 KB of its 30 MB).
 */
async function exitWhenPrinted(code: number): Promise<never> {
  await Promise.all([process.stdout, process.stderr].map((s) => new Promise<void>((r) => s.write("", () => r()))));
  process.exit(code);
}

try {
  const code = await main();
  if (code >= 0) await exitWhenPrinted(code);
} catch (err) {
  // An error may quote what a remote party wrote (a registry, the modules it publishes and their
  // signers, a module's answer through the host, an RPC server's error): each line printed is
  // escaped (host/log.ts terminalLine) and cut at MAX_ERROR_LINE_CHARS, and a message's own lines
  // are marked as its (below), so that no quoted text starts a line that looks like the CLI's. The printer's own lines (a problem's fix, the stack's
  // frames) are printed as lines.
  const { terminalLine } = await import("./log.ts");
  const line = (text: string) => terminalLine(text, MAX_ERROR_LINE_CHARS);
  // A message's own lines (a load's manifest problems, say) stay lines, but each one after the
  // first is printed behind "  | ", so none can pass for a line of the printer's own.
  const lines = (text: string): string => {
    const parts = text.split("\n", MAX_ERROR_LINES + 1);
    const shown = parts.slice(0, MAX_ERROR_LINES).map((l, i) => (i === 0 ? line(l) : `  | ${line(l)}`));
    if (parts.length > MAX_ERROR_LINES) shown.push(`  | ... (more lines, cut at MAX_ERROR_LINES = ${MAX_ERROR_LINES})`);
    return shown.join("\n");
  };
  if (err instanceof ConfigError) {
    console.error(`modhost: configuration error\n${err.problems.map((p) => formatProblem(p, line)).join("\n")}`);
  } else if (err instanceof ModhostError) {
    console.error(`modhost: ${lines(err.message)}${err.hint ? `\n  fix: ${lines(err.hint)}` : ""}`);
    // A usage error (a mistyped command or option, a missing argument) exits 2, as before.
    if (err.code === "cli_usage") await exitWhenPrinted(2);
  } else if ((err as { code?: string }).code?.startsWith("ERR_PARSE_ARGS_")) {
    console.error(`modhost: ${lines((err as Error).message)}`);
  } else if (err instanceof Error) {
    // A bug's stack: its message escaped, then its frames (the code's own paths).
    const frames = (err.stack ?? "").split("\n").filter((l) => /^\s+at /.test(l)).slice(0, 32).map(line);
    console.error([`modhost: ${line(`${err.name}: ${err.message}`)}`, ...frames].join("\n"));
  } else {
    console.error(`modhost: ${line(String(err))}`);
  }
  await exitWhenPrinted(1);
}
