#!/usr/bin/env node
// modhost's command line. The sources are TypeScript. Set-up builds them into plain JavaScript
// in dist/ (scripts/build-dist.mjs); this file runs dist/modhost.mjs while it is fresh (built
// from exactly the sources in this checkout, by this Node), and compiles the sources with tsx
// otherwise (development: edit a file and run, no build step). MODHOST_TSX=1 forces tsx.
//
// modhost needs Node 24 (isolated-vm 7, a V8 that still gets security fixes). Set-up installs
// it into node_modules (the npm registry's node-linux-* package), and npm scripts and npx find
// it first on PATH. Run directly under an older system Node, this file hands over to that one.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { constants } from "node:os";
import { fileURLToPath } from "node:url";

// libuv's thread pool takes its size from UV_THREADPOOL_SIZE at its first use, which comes
// after this line (nothing above uses it): 8 threads instead of libuv's 4 unless the operator
// set it. Modules' jobs get at most [host] pool_jobs of them (storage/pool.ts), the rest stay
// free for the host's own work.
process.env.UV_THREADPOOL_SIZE ??= "8";

const major = Number(process.versions.node.split(".")[0]);
if (major < 24) {
  const local = fileURLToPath(new URL("../node_modules/.bin/node", import.meta.url));
  if (!existsSync(local)) {
    console.error(`modhost needs Node 24 or newer (this is ${process.version}); run \`npm run setup\`, which installs it into node_modules.`);
    process.exit(1);
  }
  const r = spawnSync(local, [...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: "inherit" });
  process.exit(r.status ?? 128 + (r.signal ? constants.signals[r.signal] : 0));
}

const { distIsFresh } = await import("./dist-fresh.js");
if (process.env.MODHOST_TSX !== "1" && distIsFresh(fileURLToPath(new URL("..", import.meta.url)))) {
  await import("../dist/modhost.mjs");
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import("../host/cli.ts");
}
