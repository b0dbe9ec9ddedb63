// `modhost test [FILE...]`: run a module's tests (node:test files using modhost/testing) with
// the Node that runs modhost and its TypeScript loader, from the module's directory. For a
// native module with a build.sh (`modhost new --lang rust`), the module is built first, so a
// test never runs an old binary. Rust authors write their tests this way: the harness drives a
// real host around the built binary.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";

export const TEST_HELP = `modhost test [FILE...] [--no-build]

Runs the module's tests in the current directory with node:test (default: test/**/*.test.ts,
.mts, .js, .mjs and the same under tests/), TypeScript compiled on the fly; tests use the
harness of modhost/testing. With a build.sh next to Cargo.toml (a Rust module), runs it first
unless --no-build.`;

const TEST_FILE = /\.test\.(ts|mts|js|mjs)$/;
/** Directories searched for tests, and how deep (a limit, so that a stray link cannot make the walk endless). */
const TEST_DIRS = ["test", "tests"];
const MAX_DEPTH = 8;

async function findTests(dir: string, depth = 0): Promise<string[]> {
  if (depth > MAX_DEPTH) return [];
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  const found: string[] = [];
  for (const e of entries) {
    if (e.name === "node_modules" || e.name.startsWith(".")) continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) found.push(...(await findTests(p, depth + 1)));
    else if (e.isFile() && TEST_FILE.test(e.name)) found.push(p);
  }
  return found.sort();
}

function run(cmd: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: "inherit" });
    child.on("error", reject);
    child.on("exit", (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}

export async function testCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { "no-build": { type: "boolean", default: false }, help: { type: "boolean", short: "h" } },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    console.log(TEST_HELP);
    return 0;
  }
  if (!values["no-build"] && existsSync("Cargo.toml") && existsSync("build.sh")) {
    console.error("modhost test: building first (./build.sh; --no-build skips it)");
    const code = await run("bash", ["build.sh"]);
    if (code !== 0) {
      console.error(`modhost test: ./build.sh failed (exit ${code}); no tests run`);
      return code;
    }
  }
  const files = positionals.length > 0 ? positionals : (await Promise.all(TEST_DIRS.map((d) => findTests(d)))).flat();
  if (files.length === 0) {
    console.error(`modhost test: no test files in ${TEST_DIRS.map((d) => `${d}/`).join(" or ")} of ${process.cwd()} (names ending in .test.ts, .test.mts, .test.js or .test.mjs); give files as arguments, or run it in the module's directory`);
    return 2;
  }
  // The TypeScript loader modhost itself uses, wherever the test files are.
  const tsx = import.meta.resolve("tsx");
  return run(process.execPath, ["--no-node-snapshot", "--import", tsx, "--test", ...files]);
}
