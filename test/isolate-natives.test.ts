// What the isolate host script loads at its boot (runtime/isolate/natives.ts): it runs without a
// startup snapshot (--no-node-snapshot), so every builtin it loads is compiled at every boot of
// every isolate host. Checked on the script the host hands out (isolateHostScript), booted as a
// pool process (it says pool_ready on fd 3 once it has loaded everything and made its isolate)
// with a preload that reports, as it exits, the builtins loaded and what msgpackr found.

import test, { type ExecutionContext } from "ava";
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import type { Socket } from "node:net";
import { isolateHostScript } from "../runtime/isolate/runtime.ts";
import { msgpackrExtractor, msgpackrModule } from "../runtime/isolate/natives.ts";
import { tempDir } from "./helpers/host.ts";

const require = createRequire(import.meta.url);

interface Boot {
  builtins: string[];
  /** typeof the extractStrings msgpackr-extract's cache entry holds. */
  extractor: string;
}

/** Boot the isolate host script as a pool process, wait for pool_ready, close its channel; what it had loaded. */
async function bootReport(t: ExecutionContext): Promise<Boot> {
  const script = await isolateHostScript();
  const extractor = msgpackrExtractor(require.resolve("msgpackr"));
  if (!extractor) throw new Error("msgpackr-extract is not installed here: nothing to check");
  const dir = await tempDir(t);
  const preload = path.join(dir, "report.cjs");
  await writeFile(preload, [
    `process.on("exit", () => {`,
    `  const entry = require.cache[${JSON.stringify(extractor.entry)}];`,
    `  process.stderr.write("REPORT " + JSON.stringify({`,
    `    builtins: process.moduleLoadList.filter((m) => m.startsWith("NativeModule ")).map((m) => m.slice(13)),`,
    `    extractor: typeof entry?.exports?.extractStrings,`,
    `  }) + "\\n");`,
    `});`,
  ].join("\n"));
  const child = spawn(process.execPath, ["--no-node-snapshot", "--require", preload, script, "--pool", "--memory-mb", "64"], { stdio: ["ignore", "ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const channel = child.stdio[3] as Socket;
  // Its first frame is pool_ready; a pool process whose channel closes before a hand-over exits 0.
  channel.once("data", () => channel.end());
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  const line = /^REPORT (.*)$/m.exec(stderr)?.[1];
  if (code !== 0 || !line) throw new Error(`the isolate host exited ${code} without a report:\n${stderr}`);
  return JSON.parse(line) as Boot;
}

test("the isolate host boots without node:child_process, worker_threads, node:util's lazy parts or Web Crypto, and with msgpackr's native extractor", async (t) => {
  const boot = await bootReport(t);
  // msgpackr-extract found through node-gyp-build-optional-packages and detect-libc brings
  // node:child_process (and node:dgram); an ES import of node:util, or esbuild's interop reading
  // its descriptors, brings worker_threads, the diff code and more; of node:fs, its promises;
  // the `crypto` global (protocol/codec.ts's hash coefficients, once), Web Crypto and its keys.
  for (const name of ["child_process", "dgram", "worker_threads", "internal/util/diff", "internal/fs/promises", "internal/readline/interface", "perf_hooks", "internal/crypto/webcrypto", "internal/crypto/keys"]) {
    t.false(boot.builtins.includes(name), `${name} is loaded at boot`);
  }
  t.is(boot.extractor, "function", "msgpackr-extract's entry in require's cache holds the addon (msgpackr decodes strings with it)");
  // What the boot still needs (the channel's socket): a check that the report reads the list at all.
  t.true(boot.builtins.includes("net"));
});

test("an extractor the isolate host cannot load leaves msgpackr to look for it itself: the script still gets msgpackr", (t) => {
  const msgpackr = require.resolve("msgpackr");
  const real = msgpackrExtractor(msgpackr);
  if (!real) throw new Error("msgpackr-extract is not installed here: nothing to check");
  // As the generated module runs in the isolate host (CommonJS, its own `module`), with an addon
  // path that does not exist (a sandbox that does not bind it, say).
  const source = msgpackrModule(msgpackr, { entry: real.entry, addon: path.join(path.dirname(real.addon), "missing.node") });
  const module = { exports: {} as { Packr?: unknown } };
  t.notThrows(() => new Function("module", "process", source)(module, process));
  t.is(typeof module.exports.Packr, "function");
});
