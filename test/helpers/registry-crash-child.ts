// Runs one registry command and kills itself with SIGKILL (no finally, no cleanup: a real
// crash) just before the journaled step named on the command line; with STEP "pause:STEP" it
// says "paused" there instead and waits, alive, to be killed by the test. Used by
// test/registry-crash.test.ts.
//   node --import tsx registry-crash-child.ts CONFIG.json install|update|remove|activate SPEC STEP

import { readFile } from "node:fs/promises";
import type { HostConfig } from "../../host/config.ts";
import { activatePending, install, remove, update, type RegistryOptions } from "../../host/registry/install.ts";

const [configFile, op, spec, step] = process.argv.slice(2) as [string, string, string, string];
const config = JSON.parse(await readFile(configFile, "utf8")) as HostConfig;
const opts: RegistryOptions = {
  log: () => undefined,
  progress: { write: () => true },
  notifyHost: false,
  crash: (at) => {
    if (at === step) process.kill(process.pid, "SIGKILL");
    if (`pause:${at}` === step) {
      process.stdout.write("paused\n");
      // Blocks this process for good, holding whatever it holds (modules_dir's lock).
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
    }
  },
};
if (op === "install") await install(config, spec, opts);
else if (op === "update") await update(config, spec, opts);
else if (op === "remove") await remove(config, spec, opts);
else if (op === "activate") await activatePending(config, spec, opts);
else throw new Error(`unknown op ${op}`);
// Reached only when the step never came.
process.stdout.write("finished without reaching the step\n");
