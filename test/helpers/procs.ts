// Process and network helpers for the sandbox and lifecycle tests: who runs under a uid, a
// process's descendants, polling a check, a TCP server on the host's loopback for modules to
// try to reach, a server script in a process of its own.

import type { ExecutionContext } from "ava";
import { spawn } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";

/** Live (not zombie: an orphan waits for the host's init to reap it) processes of a uid, host-wide. */
export async function processesOf(uid: number): Promise<number> {
  let n = 0;
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
    if (new RegExp(`^Uid:\\s+${uid}\\s`, "m").test(status) && !/^State:\s+Z/m.test(status)) n++;
  }
  return n;
}

/** Whether a process with this pid exists (a zombie counts: it has not been reaped). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== "ESRCH";
  }
}

/** Poll `check` every 50 ms; true once it holds, false after `ms`. */
export async function eventually(check: () => Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A TCP server on 127.0.0.1 that answers "hi". */
export function listen(): Promise<{ server: Server; port: number }> {
  return new Promise((resolve) => {
    const server = createServer((s) => {
      s.on("error", () => undefined); // the module may go away without reading
      s.end("hi\n");
    });
    server.listen(0, "127.0.0.1", () => resolve({ server, port: (server.address() as { port: number }).port }));
  });
}

/** Every descendant of `pid`, from /proc (processes that end meanwhile are skipped). */
export async function descendants(pid: number): Promise<number[]> {
  const parent = new Map<number, number>();
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = await readFile(`/proc/${name}/stat`, "utf8");
      parent.set(Number(name), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {
      // gone meanwhile
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const [child, pp] of parent) if (pp === p) (out.push(child), walk(child));
  };
  walk(pid);
  return out;
}

/**
 * A server script run in its own process (so the CPU this test process measures is the host's
 * side only), which prints the port it listens on as its first line; killed at teardown.
 */
export function spawnPortServer(t: ExecutionContext, what: string, script: string, args: string[]): Promise<number> {
  const server = spawn(process.execPath, [script, ...args], { stdio: ["pipe", "pipe", "inherit"] });
  t.teardown(() => server.kill("SIGKILL"));
  return new Promise<number>((resolve, reject) => {
    let text = "";
    server.stdout.on("data", (d: Buffer) => {
      text += d.toString();
      if (text.includes("\n")) resolve(Number(text.split("\n")[0]));
    });
    server.once("exit", (code) => reject(new Error(`the ${what} exited (${code})`)));
  });
}
