// The shipped modules that modhost.toml (the `npm start` configuration) runs with
// signatures = "require" verify under it: an edit to one of them without signing it again fails
// here, with the command that signs it. And the check bites: an edited copy is refused.

import test from "ava";
import { execFile } from "node:child_process";
import { cp, readdir, readFile, appendFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { parse } from "smol-toml";
import { ROOT, tempDir } from "./helpers/host.ts";

const run = promisify(execFile);
const MODHOST = path.join(ROOT, "bin/modhost.js");
const CONFIG = path.join(ROOT, "modhost.toml");

type Trust = { signatures?: string; publisher?: string };

async function requiredModules(): Promise<string[]> {
  const config = parse(await readFile(CONFIG, "utf8")) as { trust?: Trust; modules?: { trust?: Record<string, Trust> } };
  const fallback = config.trust?.signatures ?? "require";
  const names: string[] = [];
  for (const entry of await readdir(path.join(ROOT, "modules"), { withFileTypes: true })) {
    if (!entry.isDirectory() || !existsSync(path.join(ROOT, "modules", entry.name, "module.toml"))) continue;
    const policy = config.modules?.trust?.[entry.name]?.signatures ?? fallback;
    if (policy === "require") names.push(entry.name);
  }
  return names.sort();
}

async function verify(dir: string): Promise<{ code: number; output: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [MODHOST, "verify", dir, "--config", CONFIG], { cwd: ROOT, timeout: 180_000 });
    return { code: 0, output: stdout + stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === "number" ? e.code : -1, output: `${e.stdout ?? ""}${e.stderr ?? ""}` };
  }
}

test("every shipped module that modhost.toml requires signatures for verifies under it", async (t) => {
  const names = await requiredModules();
  // The three signed TypeScript modules at least; a module added with "require" joins them.
  for (const expected of ["block-stats", "fee-watch", "governance-webhook"]) t.true(names.includes(expected), `${expected} requires signatures in modhost.toml`);
  for (const name of names) {
    const { code, output } = await verify(path.join("modules", name));
    t.is(
      code,
      0,
      `modules/${name} does not verify under modhost.toml: it was changed after it was signed. A maintainer signs it again:\n` +
        `  node bin/modhost.js sign modules/${name} --key <the modhost maintainers' key file>\n` +
        `(docs/signing.md, "Shipped modules"). What modhost verify said:\n${output}`,
    );
    if (code === 0) t.regex(output, /OK: verified/);
  }
});

test("an edited copy of a signed shipped module is refused under modhost.toml", async (t) => {
  const dir = await tempDir(t);
  const copy = path.join(dir, "block-stats");
  await cp(path.join(ROOT, "modules/block-stats"), copy, { recursive: true });
  t.is((await verify(copy)).code, 0, "the untouched copy verifies");
  await appendFile(path.join(copy, "summary.ts"), "\n// an edit\n");
  const { code, output } = await verify(copy);
  t.not(code, 0);
  t.regex(output, /hash/i);
});
