// One read of modhost.toml at a reload, in a worker thread (host/config-off.ts runs it): the
// read, smol-toml's parse and the schema check of a file of up to MAX_TOML_BYTES (the worst
// 1 MiB shapes: 1.3-5.5 s of parsing at load 17-21) never run on the host's loop. What comes
// back is the checked configuration, or its located problems.

import { parentPort, workerData } from "node:worker_threads";
import { loadConfig, type HostConfig } from "./config.ts";
import { ConfigError, type ConfigProblem } from "./errors.ts";

export type ConfigReadResult = { ok: true; config: HostConfig } | { ok: false; problems: ConfigProblem[] } | { ok: false; message: string };

const file = (workerData as { modhostConfigFile: string }).modhostConfigFile;
let result: ConfigReadResult;
try {
  result = { ok: true, config: await loadConfig(file) };
} catch (err) {
  result = err instanceof ConfigError ? { ok: false, problems: err.problems } : { ok: false, message: (err as Error)?.stack ?? String(err) };
}
parentPort!.postMessage(result);
