// Hostile probes of round 16 (issue #8): remote parties the host talks to, and the isolate
// host's way out.
//
// 1. An HTTP(S) server behind a granted http_request that sends bytes Node's parser takes
//    without counting them toward any limit: a chunk size of endless leading zeros, a header
//    value of endless spaces. Before: the request ran to its timeout (up to 60 s, 16 in flight
//    per module), each costing the host's loop ~0.5 s of CPU a second (2.3-2.7 s in 5 s). Now
//    every byte the server sends is counted before the parser sees it
//    (MAX_RESPONSE_HEAD_WIRE_BYTES, MAX_RESPONSE_FRAMING_BYTES beside the body's bound): the
//    request fails with quota_exceeded naming the limit. Over TLS too, where stopping inside the
//    socket's data event must not leave Node's HTTP client without its parser (which kills the
//    process with an internal assertion).
// 2. Under the real host, beside the canary ("good", which stores every block):
//    q-cpu, q-mem  a module queues 40,000 calls without awaiting them (the host takes them at
//             requests_per_second), then spins (q-cpu) or allocates past memory_mb (q-mem).
//             Before: every call left the isolate and waited in the isolate host (~2 KB each:
//             that process reached ~190-310 MB). Now at most MAX_CALLS_UNANSWERED are
//             unanswered, the rest refused at once naming it; the module is stopped naming its
//             limit and comes back.
//    q-big    a module the host takes 5 requests a second from queues 200 calls of 100 KB:
//             past MAX_UNSENT_CALL_BYTES waiting in the isolate host, calls are refused naming it.
//    rpc      a remote JSON-RPC party: 1 MiB of "[" and of {"a":, two batches of 1000 calls to a
//             module method that answers in 2 s, 100 requests pipelined in one write (held).
// While they run: the canary stores every block within 5 s, RPC answers within 5 s, the host's
// heap and log stay bounded, its longest loop turn is measured.

import test from "ava";
import { readFile } from "node:fs/promises";
import net from "node:net";
import tls from "node:tls";
import { fileURLToPath } from "node:url";
import { httpExchange, MAX_RESPONSE_FRAMING_BYTES, MAX_RESPONSE_HEAD_WIRE_BYTES, parseHttpUrl } from "../capabilities/http.ts";
import { CapabilityError } from "../capabilities/types.ts";
import { buildModulesDir, sleep, startHost, tempDir, GOOD_GRANTS } from "./helpers/host.ts";
import { callApi, inlineModule } from "./helpers/modules.ts";
import { cookieAuth, post } from "./helpers/rpc.ts";
import { watchHost } from "./helpers/host-watch.ts";
import { descendants, spawnPortServer } from "./helpers/procs.ts";
import { threadCpuMs, watchTurns } from "./helpers/turns.ts";

const MB = 1024 * 1024;
const TLS_DIR = fileURLToPath(new URL("./fixtures/tls/", import.meta.url));
const WIRE_SERVER = fileURLToPath(new URL("./fixtures/hostile-round16/wire-server.cjs", import.meta.url));

function wireServer(t: import("ava").ExecutionContext, mode: "zeros" | "spaces", kind: "plain" | "tls"): Promise<number> {
  return spawnPortServer(t, "wire server", WIRE_SERVER, [mode, kind, `${TLS_DIR}key.pem`, `${TLS_DIR}cert.pem`]);
}

test("an HTTP(S) answer of endless chunk-size zeros or header spaces (bytes the parser counts toward no limit) fails with quota_exceeded naming the wire bound, long before its timeout and with bounded CPU, over TLS too", async (t) => {
  t.timeout(180_000);
  // The host's TLS client trusts the fixture certificate (this process only).
  tls.setDefaultCACertificates([...tls.getCACertificates("default"), await readFile(`${TLS_DIR}cert.pem`, "utf8")]);
  const cases = [
    { mode: "zeros", kind: "plain", limit: "MAX_RESPONSE_FRAMING_BYTES", bytes: MAX_RESPONSE_FRAMING_BYTES },
    { mode: "spaces", kind: "plain", limit: "MAX_RESPONSE_HEAD_WIRE_BYTES", bytes: MAX_RESPONSE_HEAD_WIRE_BYTES },
    { mode: "zeros", kind: "tls", limit: "MAX_RESPONSE_FRAMING_BYTES", bytes: MAX_RESPONSE_FRAMING_BYTES },
    { mode: "spaces", kind: "tls", limit: "MAX_RESPONSE_HEAD_WIRE_BYTES", bytes: MAX_RESPONSE_HEAD_WIRE_BYTES },
  ] as const;
  for (const c of cases) {
    const port = await wireServer(t, c.mode, c.kind);
    const cpu0 = threadCpuMs();
    const t0 = Date.now();
    const err = await t.throwsAsync(httpExchange(`r16-${c.mode}`, { target: parseHttpUrl(`${c.kind === "tls" ? "https" : "http"}://127.0.0.1:${port}/`), method: "GET", headers: {}, body: undefined, timeoutMs: 60_000 }));
    const ms = Date.now() - t0;
    const cpu = threadCpuMs() - cpu0;
    t.log(`${c.mode} over ${c.kind}: ${ms} ms, ${cpu.toFixed(0)} ms of this thread's CPU: ${err?.message.slice(0, 160)}`);
    t.true(err instanceof CapabilityError, `${c.mode}/${c.kind}: a capability error`);
    t.is((err as CapabilityError).code, "quota_exceeded", `${c.mode}/${c.kind}: quota_exceeded`);
    t.true(err!.message.includes(c.limit) && err!.message.includes(String(c.bytes)), `${c.mode}/${c.kind}: names ${c.limit} and its value`);
    // Before: the request's whole timeout (60 s here), at ~0.5 s of CPU a second. Now ~10 MB at
    // most go through the parser: 0.1-0.5 s on a loaded machine.
    t.true(ms < 30_000, `${c.mode}/${c.kind}: ended after ${ms} ms, not at its timeout`);
  }
});

const CAPS = ["read_storage", "write_storage", "register_module_api", "manage_timers"];
/**
 * Floods when asked; every start answers ping with its start count. `die` overruns in the
 * handler itself: a setTimeout is a host call too, refused while MAX_CALLS_UNANSWERED calls wait.
 */
const FLOODER = (after: string) => `
  await ctx.storage.openTree("t");
  const runs = ((await ctx.storage.get("t", "runs")) as number | null) ?? 0;
  await ctx.storage.put("t", "runs", runs + 1);
  const seen = { refused: 0, other: 0, message: "" };
  const count = (e: any) => {
    if (e?.code === "quota_exceeded") { seen.refused++; seen.message = String(e.message); } else seen.other++;
  };
  await ctx.modules.registerApi({
    ping: () => runs,
    stats: () => seen,
    flood: async (p: any) => {
      for (let k = 0; k < p.batches; k++) {
        for (let i = 0; i < p.per; i++) {
          void (p.size ? ctx.storage.put("t", "k" + i, "v".repeat(p.size)) : ctx.storage.get("t", "runs")).catch(count);
        }
        await null;
      }
      await null;
      return seen;
    },
    ${after}
  });
`;
const MODULES = {
  "q-cpu": inlineModule("q-cpu", CAPS, FLOODER(`die: () => { for (;;) {} },`)),
  "q-mem": inlineModule("q-mem", CAPS, FLOODER(`die: () => { const k: unknown[] = []; for (;;) k.push(new Array(1e6).fill(0.5)); },`)),
  "q-big": inlineModule("q-big", CAPS, FLOODER("")),
  "r-slow": inlineModule("r-slow", ["register_rpc_endpoint", "manage_timers"], `
    await ctx.rpc.register("slow", "answers in 2 s", () => new Promise((r) => setTimeout(() => r(1), 2000)));
    await ctx.rpc.register("echo", "answers its params", (p: unknown) => p);
  `),
};

/** The isolate host (node) process of a module whose sandbox process is `pid`. */
async function nodeProcess(pid: number): Promise<number | undefined> {
  for (const p of [pid, ...(await descendants(pid))]) {
    const cmd = await readFile(`/proc/${p}/cmdline`, "utf8").catch(() => "");
    if (cmd.startsWith(process.execPath)) return p;
  }
  return undefined;
}
const rssMb = async (pid: number) => Number((await readFile(`/proc/${pid}/status`, "utf8").catch(() => "")).match(/VmRSS:\s+(\d+)/)?.[1] ?? 0) / 1024;

/** Raw bytes to the RPC port; what came back within `ms` (or until the server closed). */
function raw(port: number, data: string, ms: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    let got = "";
    s.on("data", (d) => (got += d.toString("latin1")));
    s.on("error", () => undefined);
    s.on("connect", () => s.write(data));
    const timer = setTimeout(() => s.destroy(), ms);
    s.on("close", () => {
      clearTimeout(timer);
      resolve(got);
    });
  });
}

test.serial("round 16 under the real host: calls queued past MAX_CALLS_UNANSWERED and MAX_UNSENT_CALL_BYTES are refused naming them, and a module that queued 40,000 then overran its CPU or memory is stopped naming the limit and restarts; a remote JSON-RPC party's deep bodies, module batches and pipelining are bounded: the canary gets every block, RPC answers, host heap and log stay bounded", async (t) => {
  t.timeout(480_000);
  const dir = await tempDir(t);
  await buildModulesDir(dir, ["good"], MODULES);
  const again = { max_restarts: 50, quarantine_after: 0 };
  const h = await startHost(t, {
    dir, modules: [],
    grants: { good: GOOD_GRANTS, "q-cpu": CAPS, "q-mem": CAPS, "q-big": CAPS, "r-slow": ["register_rpc_endpoint", "manage_timers"] },
    moduleLimits: {
      // Its flood (40,000 calls and their refusals' handlers, with `await null` between batches:
      // one crossing of the isolate) took ~1 s of CPU at load 7 in the fresh-clone CI, and was
      // stopped by the default cpu_time_ms (1 s) before it answered: the spin of `die`, not the
      // flood, must be what the watchdog stops, so it gets 3 s.
      "q-cpu": { ...again, cpu_time_ms: 3000 },
      // Allocating past memory_mb can take a while of CPU on a loaded machine: the memory
      // limit, not the CPU watchdog, must be what stops it.
      "q-mem": { ...again, cpu_time_ms: 10_000 },
      // The host takes its requests slowly, so that its calls wait in its isolate host.
      "q-big": { requests_per_second: 5 },
    },
  });
  for (const m of ["good", ...Object.keys(MODULES)]) await h.waitForState(m, "running", 90_000);
  // The JSON-RPC probes time the loop's turns themselves (below): no ticker of the watch's.
  const watch = watchHost(t, h, { turns: false });
  const canary = watch.canaryLoop(300, 4);

  const figures: Record<string, unknown> = {};
  let longest = 0;
  let step = "start";
  const probes = async () => {
  // q-cpu and q-mem: 40 turns of 1,000 calls in one stretch (below MAX_CALLS_PER_STRETCH), then overrun.
  const crashOf = (n: string, since: number) => h.records.slice(since).find((r) => r.source === "host" && r.message.startsWith(`${n} crashed: `))?.message;
  for (const [n, limit] of [["q-cpu", /cpu_time_ms/], ["q-mem", /memory_mb/]] as const) {
    const node = await nodeProcess(h.status(n)!.pid!);
    let rssPeak = 0;
    let sampling = true;
    // However the test ends, the sampler stops (a loop of timers would keep ava's worker alive).
    t.teardown(() => {
      sampling = false;
    });
    const sampler = (async () => {
      while (sampling && node !== undefined) {
        rssPeak = Math.max(rssPeak, await rssMb(node));
        await sleep(25);
      }
    })();
    step = `${n} flood`;
    const seen = await callApi<{ refused: number; other: number; message: string }>(h, n, "flood", { batches: 40, per: 1000 }, 60_000);
    t.true(seen.refused >= 40_000 - 16_384 - 1000, `${n}: ${seen.refused} of 40,000 calls refused at once`);
    t.regex(seen.message, /16384 host calls are unanswered.*MAX_CALLS_UNANSWERED/, `${n}: the refusal names MAX_CALLS_UNANSWERED and its value`);
    step = `${n} overrun`;
    const mark = h.mark();
    const t0 = Date.now();
    await callApi(h, n, "die", {}, 30_000).catch(() => undefined);
    await h.waitFor(() => crashOf(n, mark), 60_000, `${n} to crash`);
    const crashMs = Date.now() - t0;
    sampling = false;
    await sampler;
    t.regex(crashOf(n, mark)!, limit, `${n}: the crash reason names its limit`);
    figures[n] = { refused: seen.refused, crashMs, isolateHostRssPeakMb: Math.round(rssPeak), reason: crashOf(n, mark)!.slice(0, 200) };
    // The watchdog needs cpu_time_ms (3 s for q-cpu, 10 s for q-mem, which its memory limit stops first) of the isolate's CPU, stretched by load; the exit after it is prompt.
    t.true(crashMs < 30_000, `${n}: stopped and reported ${crashMs} ms after it began to overrun`);
    step = `${n} back`;
    await h.waitForState(n, "running", 60_000);
    t.is(await callApi(h, n, "ping", {}, 30_000), 1, `${n} runs again`);
  }

  step = "q-big";
  // q-big: 200 calls of 100 KB while the host takes 5 a second.
  await callApi(h, "q-big", "flood", { batches: 1, per: 200, size: 100_000 }, 60_000);
  const big = await h.waitFor(async () => {
    const s = await callApi<{ refused: number; message: string }>(h, "q-big", "stats", {}, 30_000);
    return s.refused > 0 ? s : undefined;
  }, 60_000, "q-big's calls to be refused");
  figures["q-big"] = { refused: big.refused };
  t.regex(big.message, /MAX_UNSENT_CALL_BYTES \(8388608\)/, "q-big: the refusal names MAX_UNSENT_CALL_BYTES and its value");

  // A remote JSON-RPC party; every turn of the host's loop watched meanwhile (a busy ticker: only here).
  step = "rpc";
  const turns = watchTurns();
  t.teardown(() => turns.stop());
  const port = h.host.rpcServer!.address!.port;
  const auth = await cookieAuth(h);
  const head = (length: number) => `POST / HTTP/1.1\r\nHost: x\r\nAuthorization: ${auth}\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n`;
  for (const body of ["[".repeat(MB), '{"a":'.repeat(200_000)]) {
    const a = await raw(port, head(body.length) + body, 20_000);
    t.regex(a, /max_json_depth/, `${body.slice(0, 5)}...: refused naming max_json_depth`);
  }
  const batch = JSON.stringify(Array.from({ length: 1000 }, (_, i) => ({ jsonrpc: "2.0", id: i, method: "r-slow.slow", params: {} })));
  const batches = await Promise.all([post(h, batch), post(h, batch)]);
  for (const b of batches) {
    t.is(b.json?.length, 1000, "a batch of 1000 module calls: 1000 answers");
    const odd = (b.json as Array<{ result?: unknown; error?: { message: string } }>).filter((a) => a.result !== 1 && !/call_timeout_ms|invocations unanswered/.test(a.error?.message ?? ""));
    t.deepEqual(odd.slice(0, 3), [], "each is the result, or an error naming call_timeout_ms or the invocations limit");
  }
  const one = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "r-slow.echo", params: { a: 1 } });
  const piped = await raw(port, Array(100).fill(head(one.length) + one).join(""), 15_000);
  t.is((piped.match(/HTTP\/1.1 200/g) ?? []).length + (piped.match(/HTTP\/1.1 429/g) ?? []).length, 100, "100 pipelined requests: each answered, 200 or 429");
  t.regex(piped, /MAX_PIPELINED_REQUESTS/, "the 429s name MAX_PIPELINED_REQUESTS");

  longest = turns.longest;
  await turns.stop();
  };
  await probes().catch((err: Error) => {
    // Said at once: a failed step names itself here, whatever ava prints later.
    console.error(`round 16 failed at ${step}: ${err.stack ?? err.message}\n${h.tail(20)}`);
    throw err;
  });
  await canary.stop();
  const logChars = h.records.reduce((a, r) => a + r.message.length, 0);
  t.log(figures);
  t.log(`longest host loop turn during the JSON-RPC probes ${longest.toFixed(0)} ms of CPU; host log ${h.records.length} records, ${(logChars / MB).toFixed(1)} MB`);
  watch.assertCanary(t);
  t.true(logChars < 8 * MB, `host log ${(logChars / MB).toFixed(1)} MB`);
  await watch.finish(t, Object.keys(MODULES).length + 1);
});
