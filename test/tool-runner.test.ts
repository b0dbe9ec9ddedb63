// The tool runner (runtime/sandbox/tool-runner.ts): the one process that runs mount, chown and
// the sandbox probes for the host, so the host's loop never forks for them. What it must do:
// report a tool's failure with its stderr, keep output bounded, refuse what is not on its list,
// fail the calls in flight when it dies and work again at the next call, and leave nothing
// behind when the host is killed with -9 (it exits when its IPC channel closes; its tools die
// with it).

import test from "ava";
import { execFile, spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { holdToolRunner, OUTPUT_LIMIT, runTool, stopToolRunner, toolFailure, toolRunnerPid } from "../runtime/sandbox/tool-runner.ts";

const CP = "/usr/bin/cp";

/** Alive and not a zombie (a zombie's parent is gone or will reap it: it runs nothing). */
async function alive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  return stat !== "" && !/^\d+ \(.*\) [ZX] /s.test(stat);
}

async function until(what: string, cond: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  for (let pause = 5; !(await cond()); pause = Math.min(pause * 2, 200)) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting until ${what}`);
    await new Promise((r) => setTimeout(r, pause));
  }
}

/** The runner's children that already run the tool `name` (setpriv has armed its parent-death signal and exec'd it). */
async function toolsOf(pid: number, name: string): Promise<number[]> {
  const text = await readFile(`/proc/${pid}/task/${pid}/children`, "utf8").catch(() => "");
  const pids = text.split(/\s+/).filter(Boolean).map(Number);
  const comms = await Promise.all(pids.map((p) => readFile(`/proc/${p}/comm`, "utf8").catch(() => "")));
  return pids.filter((_, i) => comms[i]!.trim() === name);
}

test.serial("a tool's failure is reported with its exit code and its stderr, naming the tool and its arguments", async (t) => {
  const call = { file: CP, args: ["--no-such-option"] };
  const r = await runTool(call);
  t.is(r.code, 1);
  t.regex(r.stderr, /unrecognized option '--no-such-option'/);
  t.regex(toolFailure(call, r)?.message ?? "", /^cp --no-such-option: .*unrecognized option/);
  t.is(toolFailure(call, r, [0, 1]), null);
});

test.serial("a program outside the runner's fixed list, or a listed tool outside the system directories, is refused", async (t) => {
  for (const file of ["/bin/sh", "cp", "/tmp/cp", "/usr/bin/../bin/sh"]) {
    const r = await runTool({ file, args: ["-c", "true"] });
    t.regex(r.error ?? "", /runs only its fixed list of system tools/, file);
    t.regex(toolFailure({ file, args: [] }, r)?.message ?? "", /fixed list/);
  }
});

test.serial(`a tool's output is kept up to ${OUTPUT_LIMIT} bytes per stream; the rest is counted, not kept`, async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "modhost-tool-runner-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // cp names each missing source in stderr: 6 names of 100 000 bytes, ~600 KB of stderr.
  const args = ["-t", dir, ...Array.from({ length: 6 }, (_, i) => path.join(dir, String(i).repeat(100_000)))];
  const whole = await new Promise<string>((resolve) => execFile(CP, args, { maxBuffer: 16 * 1024 * 1024 }, (_e, _o, stderr) => resolve(String(stderr))));
  t.true(whole.length > 6 * 100_000);
  const r = await runTool({ file: CP, args });
  t.is(r.code, 1);
  t.is(r.stderr, whole.slice(0, OUTPUT_LIMIT));
  t.is(r.dropped, whole.length - OUTPUT_LIMIT);
});

test.serial("a tool past its timeout is ended and reported as timed out", async (t) => {
  const call = { file: CP, args: ["/dev/zero", "/dev/null"], timeoutMs: 300 };
  const r = await runTool(call);
  t.true(r.timedOut);
  t.is(r.signal, "SIGTERM");
  t.regex(toolFailure(call, r)?.message ?? "", /timed out after 300 ms/);
});

test.serial("a runner killed mid-call fails that call saying so, takes its tool with it, and the next call starts a new runner", async (t) => {
  t.timeout(120_000); // a new runner's Node start on a loaded machine
  await runTool({ file: CP, args: ["--version"] });
  const pid = toolRunnerPid();
  if (pid === undefined) return t.fail("no runner after a call");
  const call = runTool({ file: CP, args: ["/dev/zero", "/dev/null"], timeoutMs: 120_000 });
  let tools: number[] = [];
  await until("the runner runs the tool", async () => (tools = await toolsOf(pid, "cp")).length > 0);
  process.kill(pid, "SIGKILL");
  const err = await t.throwsAsync(call);
  t.regex(err?.message ?? "", new RegExp(`tool runner \\(pid ${pid}\\) ended \\(signal SIGKILL\\) while running cp /dev/zero /dev/null: this call failed`));
  await until("the killed runner's tool is gone too", async () => !(await alive(tools[0]!)));
  const again = await runTool({ file: CP, args: ["--version"] });
  t.is(again.code, 0);
  t.not(toolRunnerPid(), pid);
});

test.serial("stopToolRunner ends the runner; a later call starts another", async (t) => {
  await runTool({ file: CP, args: ["--version"] });
  const pid = toolRunnerPid()!;
  await stopToolRunner();
  t.is(toolRunnerPid(), undefined);
  await until("the stopped runner is gone", async () => !(await alive(pid)));
  t.is((await runTool({ file: CP, args: ["--version"] })).code, 0);
  await stopToolRunner();
});

test.serial("hosts of one process share the runner: the first host to let go does not stop it under the others, the last one does", async (t) => {
  // Before: each host stopped the runner at its own stop, and tools the other hosts of the same
  // process were running failed ("the tool runner ended while running tune2fs"), as in CI.
  await stopToolRunner();
  const first = holdToolRunner();
  const second = holdToolRunner();
  const pid = toolRunnerPid()!;
  const long = runTool({ file: CP, args: ["--version"] });
  await first();
  await first(); // letting go twice counts once
  t.is((await long).code, 0, "a call in flight when one host let go completes");
  t.is((await runTool({ file: CP, args: ["--version"] })).code, 0);
  t.is(toolRunnerPid(), pid, "the same runner serves the host still holding it");
  await second();
  t.is(toolRunnerPid(), undefined, "stopped when the last host let go");
  await until("the runner is gone", async () => !(await alive(pid)));
});

test.serial("a host killed with -9 leaves no runner and no tool behind: the runner exits when its IPC channel closes", async (t) => {
  t.timeout(120_000); // a Node start with tsx, and the runner's, on a loaded machine
  const script = [
    `import { runTool, toolRunnerPid } from ${JSON.stringify(path.resolve("runtime/sandbox/tool-runner.ts"))};`,
    `void runTool({ file: "${CP}", args: ["/dev/zero", "/dev/null"], timeoutMs: 120000 });`,
    `console.log(toolRunnerPid());`,
    `setInterval(() => {}, 1000);`,
  ].join("\n");
  const host = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
  t.teardown(() => { host.kill("SIGKILL"); });
  const runner = await new Promise<number>((resolve, reject) => {
    let out = "";
    host.stdout!.on("data", (b: Buffer) => { out += b; if (/^\d+\n/.test(out)) resolve(Number(out.trim())); });
    host.on("exit", () => reject(new Error(`the host ended first: ${out}`)));
  });
  let tools: number[] = [];
  await until("the runner runs the tool", async () => (tools = await toolsOf(runner, "cp")).length > 0);
  host.kill("SIGKILL");
  await until("the runner is gone", async () => !(await alive(runner)));
  await until("its tool is gone", async () => !(await alive(tools[0]!)));
  t.pass();
});

test.serial("a tool holds fds 0-2 only: neither the runner's IPC channel (fd 3) nor a descriptor the host inherited without close-on-exec (fd 40) reaches it", async (t) => {
  t.timeout(120_000); // a Node start with tsx, and the runner's, on a loaded machine
  const dir = await mkdtemp(path.join(os.tmpdir(), "modhost-runner-fds-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // The "host" is started by a shell that opened fd 40 without close-on-exec (as an operator's
  // shell or a development loader can pass one down). cp stats its source before it opens anything, so copying
  // /proc/self/fdinfo/N fails with "cannot stat" exactly when the tool does not hold fd N.
  const copy = (fd: number) => `await runTool({ file: "${CP}", args: ["/proc/self/fdinfo/${fd}", ${JSON.stringify(path.join(dir, "fd"))} + ${fd}] })`;
  const script = [
    `import { readdirSync } from "node:fs";`,
    `import { runTool, stopToolRunner } from ${JSON.stringify(path.resolve("runtime/sandbox/tool-runner.ts"))};`,
    `const r = { 2: ${copy(2)}, 3: ${copy(3)}, 40: ${copy(40)} };`,
    `console.log(JSON.stringify({ r, hostHas40: readdirSync("/proc/self/fd").includes("40") }));`,
    `await stopToolRunner();`,
  ].join("\n");
  const out = await new Promise<string>((resolve, reject) => {
    const host = spawn("/bin/bash", ["-c", 'exec 40</dev/null; exec "$0" "$@"', process.execPath, "--import", "tsx", "--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    let text = "";
    host.stdout!.on("data", (b: Buffer) => (text += b));
    host.on("error", reject);
    host.on("exit", (code) => (code === 0 ? resolve(text) : reject(new Error(`the host exited ${code}: ${text}`))));
  });
  const { r, hostHas40 } = JSON.parse(out.trim().split("\n").pop()!) as { r: Record<string, { code: number; stderr: string }>; hostHas40: boolean };
  t.true(hostHas40, "the host process really had the inherited descriptor on fd 40");
  t.is(r[2]!.code, 0, `the tool holds its stderr (the probe works): ${r[2]!.stderr}`);
  for (const fd of [3, 40]) {
    t.is(r[fd]!.code, 1, `fd ${fd} is not the tool's`);
    t.regex(r[fd]!.stderr, new RegExp(`cannot stat '/proc/self/fdinfo/${fd}'`));
  }
});
