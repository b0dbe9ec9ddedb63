// Looking into an isolate host from the outside (tests of the sandbox and of the isolate pool).

import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { FIXTURES, type InlineModule } from "./host.ts";

/** The "good" fixture under another name: a module (and so a uid) no other test file runs. */
export async function goodAs(name: string): Promise<InlineModule> {
  const toml = (await readFile(path.join(FIXTURES, "good", "module.toml"), "utf8")).replace(/^name = "good"$/m, `name = "${name}"`);
  return { toml, files: { "index.ts": await readFile(path.join(FIXTURES, "good", "index.ts"), "utf8") } };
}

/** The process running node inside the sandbox started as `pid` (bwrap -> bwrap's init -> node). */
export async function sandboxedNode(pid: number): Promise<number> {
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.shift()!;
    const cmdline = await readFile(`/proc/${p}/cmdline`, "utf8").catch(() => "");
    if (cmdline.split("\0")[0] === process.execPath) return p;
    for (const task of await readdir(`/proc/${p}/task`).catch(() => [] as string[])) {
      const children = await readFile(`/proc/${p}/task/${task}/children`, "utf8").catch(() => "");
      queue.push(...children.trim().split(/\s+/).filter(Boolean).map(Number));
    }
  }
  throw new Error(`no node process under ${pid}`);
}

/** A field of /proc/PID/status ("Uid", "CapEff", ...). */
export function field(status: string, name: string): string | undefined {
  return new RegExp(`^${name}:[ \\t]*(.*)$`, "m").exec(status)?.[1];
}
