// `modhost dev`: from a save by rename to the new version running (its first log line), as
// an author sees it. Runs `node bin/modhost.js dev` on a module that logs a word at start,
// saves ten times by rename (write a temporary file, rename it over index.ts), each after
// the previous version is running and PAUSE_MS more (an author does not save faster; the pool
// refills meanwhile), with [host] isolate_pool = 1 (the default) and = 0, taking turns.
// Run: node --no-node-snapshot --import tsx bench/dev-reload.ts [saves]

import { spawn } from "node:child_process";
import { mkdir, mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const SAVES = Number(process.argv[2] ?? 10);
const PAUSE_MS = 1500;

function source(word: string): string {
  return `export default async function start(ctx: any): Promise<void> {\n  ctx.log.info("draft says ${word}");\n}\n`;
}

async function run(pool: number): Promise<{ took: number[]; warm: number; reported: number[] }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "modhost-devbench-"));
  try {
    const mod = path.join(dir, "modules", "draft");
    await mkdir(mod, { recursive: true });
    await writeFile(path.join(mod, "module.toml"), 'name = "draft"\nversion = "0.1.0"\nentry_point = "index.ts"\ncapabilities = []\n');
    await writeFile(path.join(mod, "index.ts"), source("w0"));
    await writeFile(path.join(dir, "modhost.toml"), [
      "[host]", `isolate_pool = ${pool}`, "",
      "[chain]", "block_interval_seconds = 0", "",
      "[modules]", 'modules_dir = "modules"', 'data_dir = "data/modules"', "",
      "[modules.default_limits]", "stop_timeout_ms = 1000", "",
      "[storage]", 'dir = "data/storage"', "", "[rpc]", "port = 0", "",
    ].join("\n"));
    const child = spawn(process.execPath, [path.join(ROOT, "bin", "modhost.js"), "dev", mod, "--config", path.join(dir, "modhost.toml"), "--interval", "0"], { cwd: dir, env: { ...process.env, NO_COLOR: "1" }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const until = async (re: RegExp, ms = 120_000) => {
      const end = Date.now() + ms;
      while (!re.test(out)) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${re}\n${out.slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 2));
      }
    };
    await until(/draft says w0/);
    await until(/\[dev\] watching/);
    const took: number[] = [];
    for (let i = 1; i <= SAVES; i++) {
      await new Promise((r) => setTimeout(r, PAUSE_MS));
      const file = path.join(mod, "index.ts");
      const tmp = path.join(mod, `.index.ts.tmp`);
      await writeFile(tmp, source(`w${i}`));
      const t0 = performance.now();
      await rename(tmp, file);
      await until(new RegExp(`draft says w${i}\\b`));
      took.push(performance.now() - t0);
    }
    await until(new RegExp(`(\\[dev\\] reloaded draft[^\\n]*\\n[\\s\\S]*){${SAVES}}`));
    const warm = (out.match(/loaded draft 0\.1\.0.*isolate_pool=warm/g) ?? []).length;
    const reported = [...out.matchAll(/reloaded draft \((\d+) ms after the change was seen\)/g)].map((m) => Number(m[1]));
    child.kill("SIGINT");
    await new Promise((r) => child.once("exit", r));
    return { took, warm, reported };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
const fmt = (a: number[]) => `median ${median(a).toFixed(0)} ms (min ${Math.min(...a).toFixed(0)}, max ${Math.max(...a).toFixed(0)})`;
console.log(`load average before: ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}`);
for (const pool of [1, 0]) {
  const r = await run(pool);
  console.log(`isolate_pool = ${pool}: save by rename -> new version's first log line: ${fmt(r.took)} over ${r.took.length} saves; ${r.warm} warm starts; dev's own report (from the change seen): ${fmt(r.reported)}`);
}
console.log(`load average after: ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}`);
