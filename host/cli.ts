// The modhost command line.
//
//   modhost run [--config FILE]     the host, with the modules the config enables
//   modhost check [--config FILE]   what would load, with which grants, and every problem
//   modhost dev [PATH]              the host on the embedded chain for a module author
//   modhost version | help
//   modhost list | info | load | unload | reload | enable | health | methods | stop | call ...
//                                   ask the running host over its RPC server (host/rpc/commands.ts)
//   modhost <module> <command> ...  run a module's CLI command in the running host

import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { defaultConfig, inspectAddressProblem, loadConfig, sandboxModeFor, type HostConfig } from "./config.ts";
import { ConfigError, ModhostError } from "./errors.ts";
import { Host } from "./host.ts";
import { ModuleManager } from "./manager.ts";
import { EventBus } from "./events/bus.ts";
import { Logger } from "./log.ts";
import { installLastResort } from "./last-resort.ts";
import { loadManifest } from "./manifest.ts";
import { HOST_VERSION } from "./version.ts";
import { checkModule } from "./verify/module.ts";
import { keygenCommand, signCommand, verifyCommand, VERIFY_HELP } from "./verify/cli.ts";
import { installCommand, registryCommand, removeCommand, searchCommand, updateCommand, REGISTRY_HELP } from "./registry/cli.ts";
import { GENERATED_DOCS } from "./docs.ts";
import { moduleConfig } from "./module-config.ts";
import { describeSandboxes, detectSandbox } from "../runtime/sandbox/index.ts";
import { remoteCommand, REMOTE_HELP } from "./rpc/commands.ts";
import { bitcoindConfig } from "../chain/bitcoind/rpcauth.ts";
import { newCommand } from "./scaffold.ts";
import { testCommand } from "./test-command.ts";
import { DevReloader, devBanner } from "./dev.ts";

const HELP = `modhost ${HOST_VERSION}: a capability-sandboxed module host for a Bitcoin node

Usage:
  modhost run [--config FILE]     run the host with the modules enabled in FILE (default ./modhost.toml)
  modhost check [--config FILE]   show what would load, in which order, with which grants, and every problem
  modhost dev [PATH] [--inspect[=PORT]]
                                  run the module in PATH (or the modules under PATH) on the embedded
                                  regtest chain, mining a block every few seconds, every requested
                                  capability granted, reloading a module when its files change
                                  (for module authors; never for production); --inspect: attach
                                  Chrome DevTools or VS Code to the TypeScript modules (127.0.0.1:9229)
  modhost docs [--write]          print (or regenerate) docs/permissions.md and docs/events.md
  modhost bitcoind-config [--user NAME] [--rpc-port N] [--zmq-port N]
                                  print the bitcoin.conf lines for a least-authority RPC user for
                                  modhost (rpcauth, rpcwhitelist, zmqpubsequence) and the matching
                                  [chain] table for modhost.toml
  modhost new NAME [--lang ts|rust] [--dir DIR]
                                  write a new module that runs at once (manifest, code, test, README)
  modhost test [FILE...]          run a module's tests (node:test files using modhost/testing)
  modhost version                 print the version

${REMOTE_HELP}

${VERIFY_HELP}

${REGISTRY_HELP}

Docs: docs/operator-guide.md, docs/module-guide.md`;

async function configFrom(file: string | undefined): Promise<HostConfig> {
  if (file) return loadConfig(file);
  if (existsSync("modhost.toml")) return loadConfig("modhost.toml");
  return defaultConfig(process.cwd());
}

function runUntilSignal(host: Host): void {
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

async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { config: { type: "string", short: "c" } }, strict: true });
  const config = await configFrom(values.config);
  const host = new Host({ config });
  runUntilSignal(host);
  await host.start();
  return -1; // keep running
}

async function dev(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    // A bare --inspect means the usual port.
    args: argv.map((a) => (a === "--inspect" ? "--inspect=9229" : a)),
    options: { config: { type: "string", short: "c" }, interval: { type: "string", default: "3" }, inspect: { type: "string" } },
    allowPositionals: true,
    strict: true,
  });
  const target = path.resolve(positionals[0] ?? ".");
  const config = values.config ? await loadConfig(values.config) : defaultConfig(process.cwd());
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
  config.chain.block_interval_seconds = Number(values.interval);
  // A module under development is not signed yet: it runs with the "allow-unsigned" warning
  // (a [modules.trust.NAME] signatures setting in --config FILE still applies).
  config.trust.signatures = "allow-unsigned";
  if (values.inspect !== undefined) {
    // The inspector for every TypeScript module, on loopback only (host/inspector.ts).
    const address = /^\d+$/.test(values.inspect) ? `127.0.0.1:${values.inspect}` : values.inspect;
    const problem = inspectAddressProblem(address);
    if (problem) throw new ModhostError("invalid_argument", `--inspect: ${problem}`, "use --inspect or --inspect=PORT (served on 127.0.0.1)");
    config.modules.default_limits.inspect = address;
  }
  const host = new Host({ config, grantAll: true });
  runUntilSignal(host);
  console.error(devBanner({ inspect: config.modules.default_limits.inspect }));
  await host.start();
  new DevReloader(host).start();
  return -1;
}

async function check(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { config: { type: "string", short: "c" } }, strict: true });
  const config = await configFrom(values.config);
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
  const out = [
    `config: ${config.file ?? "(defaults)"}`,
    `modules_dir: ${config.modules.modules_dir}`,
    `load order: ${order.join(" -> ") || "(none)"}`,
    sandbox.full ? sandbox.text : `${sandbox.text} (less protection than the full sandbox: see docs/security.md)`,
    `providers: ${Object.entries(config.modules.providers).map(([role, m]) => `${role} = ${m}`).join(", ") || "(none designated)"}`,
    "",
  ];
  // A designated provider that is not among the modules would leave its role empty.
  for (const [role, name] of Object.entries(config.modules.providers)) {
    if (!byName.has(name)) problems.set(`providers.${role}`, `[modules.providers] ${role} = "${name}", but there is no module "${name}" in ${config.modules.modules_dir}`);
  }
  for (const [key, problem] of problems) if (key.startsWith("providers.")) out.push(`✗ ${problem}`);
  for (const s of manager.status()) {
    const problem = problems.get(s.name);
    out.push(`${problem ? "✗" : "✓"} ${s.name} ${s.version ?? ""} (${s.runtime ?? "?"})`);
    if (s.grants.length) out.push(`    granted: ${s.grants.join(", ")}`);
    if (s.missing.length) out.push(`    missing: ${s.missing.join(", ")}`);
    const verified = verification.get(s.name);
    if (verified && !problem) out.push(`    ${verified}`);
    if (problem) out.push(...problem.split("\n").map((l) => `    ${l}`));
  }
  out.push("", problems.size ? `${problems.size} problem(s) found` : "no problems found");
  console.log(out.join("\n"));
  return problems.size ? 1 : 0;
}

/** Print or (--write) regenerate the reference pages generated from the catalogues. */
async function docs(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { write: { type: "boolean", default: false } }, strict: true });
  const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
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

function bitcoindConfigCommand(args: string[]): number {
  const { values } = parseArgs({ args, options: { user: { type: "string" }, "rpc-port": { type: "string" }, "zmq-port": { type: "string" }, help: { type: "boolean", short: "h" } } });
  if (values.help) {
    console.log("modhost bitcoind-config [--user NAME] [--rpc-port N] [--zmq-port N]\n\nPrints a new random password's rpcauth line, an rpcwhitelist of exactly the RPCs modhost calls, and the [chain] table for modhost.toml.");
    return 0;
  }
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

async function main(): Promise<number> {
  const [command, ...rest] = process.argv.slice(2);
  switch (command) {
    case "run":
      return run(rest);
    case "check":
      return check(rest);
    case "dev":
      return dev(rest);
    case "docs":
      return docs(rest);
    case "bitcoind-config":
      return bitcoindConfigCommand(rest);
    case "new":
      return newCommand(rest);
    case "test":
      return testCommand(rest);
    case "keygen":
      return keygenCommand(rest);
    case "sign":
      return signCommand(rest);
    case "verify":
      return verifyCommand(rest);
    case "registry":
      return registryCommand(rest);
    case "search":
      return searchCommand(rest);
    case "install":
      return installCommand(rest);
    case "update":
      return updateCommand(rest);
    case "remove":
      return removeCommand(rest);
    case "version":
    case "--version":
      console.log(HOST_VERSION);
      return 0;
    case undefined:
    case "help":
    case "--help":
    case "-h":
      console.log(HELP);
      return 0;
    default: {
      const code = await remoteCommand(command, rest);
      if (code !== undefined) return code;
      console.error(`modhost: unknown command "${command}"\n\n${HELP}`);
      return 2;
    }
  }
}

try {
  const code = await main();
  if (code >= 0) process.exit(code);
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(`modhost: configuration error\n${err.message}`);
  } else if (err instanceof ModhostError) {
    console.error(`modhost: ${err.message}${err.hint ? `\n  fix: ${err.hint}` : ""}`);
  } else if ((err as { code?: string }).code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
    console.error(`modhost: ${(err as Error).message}\n\n${HELP}`);
  } else {
    console.error(`modhost: ${(err as Error)?.stack ?? String(err)}`);
  }
  process.exit(1);
}
