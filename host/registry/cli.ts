// The registry commands:
//
//   modhost registry build DIR... --out OUT --key FILE [--key FILE ...] [--expires-days N] [--version N]
//   modhost registry serve DIR [--port N] [--host ADDRESS]
//   modhost search [TERM]
//   modhost install NAME[@RANGE]
//   modhost update [NAME[@RANGE]] [--force] | modhost update --activate NAME
//   modhost remove NAME [--force]
//
// The client commands read --config FILE (default ./modhost.toml) for [registry], [trust],
// the modules directory and the grants.

import path from "node:path";
import { parseArgs } from "node:util";
import { ModhostError } from "../errors.ts";
import { terminalLine } from "../log.ts";
import { readKeyFile } from "../verify/keys.ts";
import { configFrom } from "../verify/cli.ts";
import { buildRegistry } from "./build.ts";
import { activatePending, install, MAX_REGISTRY_LINE_CHARS, remove, search, update } from "./install.ts";
import { serveRegistry } from "./serve.ts";

export const REGISTRY_HELP = `Modules from a registry (docs/operator-guide.md, "Verified modules and the registry"):
  modhost search [TERM]           list the registry's modules (name or description matching TERM)
  modhost install NAME[@RANGE]    download, verify and install a module and its dependencies
  modhost update [NAME[@RANGE]] [--force]
                                  install newer versions; one that asks for new capabilities waits
                                  until you grant them: then modhost update --activate NAME
  modhost remove NAME [--force]   remove an installed module (refused while others depend on it)
  modhost registry build [DIR...] --out OUT --key FILE [--expires-days N] [--version N]
                                  make or extend a static registry from module directories
                                  (without DIR: sign the index again, with a new expiry)
  modhost registry serve DIR [--port N]
                                  serve a registry directory on http://127.0.0.1 (for testing)`;

export async function registryCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === "build") {
    const { values, positionals } = parseArgs({
      args: rest,
      options: {
        out: { type: "string", short: "o" },
        key: { type: "string", short: "k", multiple: true },
        "expires-days": { type: "string" },
        version: { type: "string" },
      },
      allowPositionals: true,
      strict: true,
    });
    if (!values.out || !values.key?.length) {
      throw new ModhostError("usage", "usage: modhost registry build [DIR...] --out OUT --key FILE [--expires-days N] [--version N]");
    }
    const keys = [];
    // What the build prints quotes its sources (module names, directories, signers' names):
    // escaped and cut like every line a registry command prints.
    const say = (line: string) => console.error(terminalLine(line, MAX_REGISTRY_LINE_CHARS));
    for (const k of values.key) keys.push(await readKeyFile(k, (w) => say(`warning: ${w}`)));
    const days = values["expires-days"] !== undefined ? Number(values["expires-days"]) : undefined;
    if (days !== undefined && (!Number.isFinite(days) || days <= 0)) throw new ModhostError("usage", "--expires-days must be a positive number");
    const version = values.version !== undefined ? Number(values.version) : undefined;
    if (version !== undefined && (!Number.isInteger(version) || version < 1)) throw new ModhostError("usage", "--version must be a whole number, 1 or more");
    const r = await buildRegistry({
      sources: positionals, out: values.out, keys,
      ...(days !== undefined ? { expiresDays: days } : {}),
      ...(version !== undefined ? { version } : {}),
      log: say,
    });
    const out = path.resolve(values.out);
    console.log([
      `wrote ${out}/index.json version ${r.index.version} (expires ${r.index.expires}), signed by ${keys.map((k) => k.publicKey).join(", ")}`,
      terminalLine(`added: ${r.added.join(", ") || "nothing"}${r.unchanged.length ? `; already there: ${r.unchanged.join(", ")}` : ""}`, Number.POSITIVE_INFINITY),
      "",
      "clients pin the registry in modhost.toml:",
      "  [registry]",
      '  url = "http://127.0.0.1:8341/"      # where OUT is served',
      `  keys = [${keys.map((k) => `"${k.publicKey}"`).join(", ")}]`,
      "",
      "re-run the build before the expiry (clients refuse an expired index)",
    ].join("\n"));
    return 0;
  }
  if (sub === "serve") {
    const { values, positionals } = parseArgs({
      args: rest,
      options: { port: { type: "string", short: "p", default: "8341" }, host: { type: "string", default: "127.0.0.1" }, quiet: { type: "boolean", default: false } },
      allowPositionals: true,
      strict: true,
    });
    const dir = positionals[0];
    if (!dir) throw new ModhostError("usage", "usage: modhost registry serve DIR [--port N]");
    const port = Number(values.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ModhostError("usage", "--port must be from 0 to 65535");
    const s = await serveRegistry(dir, {
      port,
      host: values.host,
      // A request's method and path are the client's: escaped and cut.
      ...(values.quiet ? {} : { onRequest: (m: string, u: string, status: number) => console.error(`${new Date().toISOString()} ${terminalLine(`${m} ${u}`, MAX_REGISTRY_LINE_CHARS)} ${status}`) }),
    });
    console.log(`serving ${path.resolve(dir)} at ${s.url} (Ctrl-C stops)`);
    const stop = () => void s.close().then(() => process.exit(0));
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
    return -1;
  }
  throw new ModhostError("usage", `unknown registry command "${sub ?? ""}"; use modhost registry build or modhost registry serve`);
}

export async function searchCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { config: { type: "string", short: "c" } }, allowPositionals: true, strict: true });
  await search(await configFrom(values.config), positionals[0]);
  return 0;
}

export async function installCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { config: { type: "string", short: "c" } }, allowPositionals: true, strict: true });
  if (positionals.length === 0) throw new ModhostError("usage", "usage: modhost install NAME[@RANGE] [--config FILE]");
  const config = await configFrom(values.config);
  for (const spec of positionals) await install(config, spec);
  return 0;
}

export async function updateCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { config: { type: "string", short: "c" }, activate: { type: "boolean", default: false }, force: { type: "boolean", default: false } },
    allowPositionals: true,
    strict: true,
  });
  const config = await configFrom(values.config);
  if (values.activate) {
    if (positionals.length !== 1) throw new ModhostError("usage", "usage: modhost update --activate NAME");
    await activatePending(config, positionals[0]!);
    return 0;
  }
  const outcomes = await update(config, positionals[0], { force: values.force });
  // Not activated yet is not a failure, but scripts may want to know.
  return outcomes.some((o) => o.status === "pending") ? 3 : 0;
}

export async function removeCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { config: { type: "string", short: "c" }, force: { type: "boolean", default: false } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 1) throw new ModhostError("usage", "usage: modhost remove NAME [--force]");
  await remove(await configFrom(values.config), positionals[0]!, { force: values.force });
  return 0;
}
