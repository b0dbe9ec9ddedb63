// modhost.toml: the operator's configuration. Every section and key is optional and has a
// default; unknown keys are errors (with "did you mean"), since a typo in a grant or a limit
// must not silently fall back to a default. Relative paths are resolved against the
// directory of the config file.
//
// The schema below (valibot, with host/schema.ts's TOML tables) is the one declaration of the
// file: the types (v.InferOutput), the defaults, the validation with located errors, and the
// operator guide's key tables (host/config-docs.ts) all come from it. Rules across keys (an
// RPC user needs a password, a bind address needs allow_remote, ...) run after the schema in
// `crossKeyRules`, each on fields that are valid on their own, so every problem of a file is
// reported at once. Adding a limit is one line in LIMIT_FIELDS.
//
// One file on purpose, a little over 500 lines: the sections' schemas, the types inferred from
// them, the cross-key rules over them and the lookups the host reads them through are one
// declaration of modhost.toml, and adding a key touches all of them together.

import { isIP } from "node:net";
import path from "node:path";
import * as v from "valibot";
import { DEFAULT_CGROUP_LIMITS, DEFAULT_SANDBOX_LIMITS, DEFAULT_UID_CLAIMS_DIR, type SandboxMode } from "../runtime/sandbox/policy.ts";
import { DEFAULT_RPC_LIMITS, type RpcLimits } from "./rpc/server.ts";
import type { Descriptor } from "../capabilities/grants.ts";
import { CLOSEST_MAX_CELLS, closest } from "../capabilities/catalogue.ts";
import { dnsServerProblem } from "../capabilities/dns.ts";
import { descriptorList, MODULE_NAME_HINT, MODULE_NAME_RE } from "./manifest.ts";
import { PROVIDER_ROLES, type ProviderRole } from "../capabilities/event-types.ts";
import { Checker, isTable, readToml, typeName } from "./toml.ts";
import { HOOK_PAYLOAD_RANGE, HOOK_POINT_NAMES, HOOK_TIMEOUT_RANGE, type HooksConfig } from "../capabilities/hooks.ts";
import { DEFAULT_BLOCK_RATE } from "../capabilities/block-budget.ts";
import { MODULE_BYTES_DEFAULT_MB } from "../protocol/host-bytes.ts";
import { bool, checked, checkSchema, doc, int, KEY, namedTables, oneOf, PATH, type Range, say, type Schema, str, strings, table, valid } from "./schema.ts";
import {
  checkPublisherRefs, MODULE_TRUST_SCHEMA, moduleTrustRules, readTrustRules, registryRules, registrySchema, TRUST_SCHEMA,
  type ModuleTrust, type RegistryConfig, type TrustConfig,
} from "./verify/config.ts";

type RestartPolicy = "never" | "on-failure" | "always";
export type MissingGrantPolicy = "refuse" | "reduce";
type LogLevel = "debug" | "info" | "warn" | "error";

const RESTART_POLICIES: readonly RestartPolicy[] = ["never", "on-failure", "always"];
const MISSING_GRANT_POLICIES: readonly MissingGrantPolicy[] = ["refuse", "reduce"];
const SANDBOX_MODES: readonly SandboxMode[] = ["auto", "full", "degraded", "off"];
const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

const MiB = 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Limits: [modules.default_limits] and [modules.limits.NAME]

/** One limit: its schema, its default, what it means (for the guide), how the guide shows the default. */
function limit<S extends Schema>(schema: S, dflt: v.InferOutput<S>, description: string, shown?: string) {
  return { schema: doc(schema, description, shown === undefined ? {} : { shown }), default: dflt };
}

/** Every limit, in the guide's order. A new limit is one line here (and its use). */
const LIMIT_FIELDS = {
  memory_mb: limit(int({ min: 8 }), 128, "heap limit of a TypeScript module's isolate (min 8); beyond it the isolate is stopped. What the isolate holds outside its heap (`Intl` objects) counts through its isolate host's size: past `ISOLATE_HOST_RSS_BASE_MB` (160) + 2 × `memory_mb` the module is stopped too, naming `memory_mb`"),
  cpu_time_ms: limit(int({ min: 1 }), 1000, "longest a module may run without yielding (start, one event handler, a continuation); beyond it the isolate is stopped"),
  start_timeout_ms: limit(int({ min: 1 }), 10_000, "time from the process's start to `ready` (a TypeScript module's `start()` resolved, a native module's `ready` message); past it the start fails, naming this key, and counts as a failure (restart policy, quarantine)"),
  stop_timeout_ms: limit(int(), 5000, "time to stop after the shutdown request, before SIGTERM (and then SIGKILL)"),
  storage_max_bytes: limit(int(), 64 * MiB, "storage quota: bytes of keys and values; a write past it fails with `quota_exceeded` and writes nothing", "64 MiB"),
  storage_max_keys: limit(int(), 1_000_000, "storage quota: number of keys (as `storage_max_bytes`)"),
  storage_max_trees: limit(int(), 64, "storage quota: number of trees (as `storage_max_bytes`)"),
  max_data_bytes: limit(int(), 256 * MiB, "data directory quota: bytes of the files in the module's data directory (`<data_dir>/NAME`; 0 = none). A write, append or `create_directory` through the file API that would pass it fails with `quota_exceeded` and writes nothing. A native module writes there directly: with a data volume (`data_volume`) the kernel refuses a write past it (`ENOSPC`; counted in blocks of 4 KiB, its directories included); without one it is measured at start (over it, it does not start) and while it runs, when the kernel reports a change at the top of its directory (from 0.25 s after the last scan) and at least every 10 s (over it, it is stopped, naming this key)", "256 MiB"),
  max_data_files: limit(int({ min: 1 }), 10_000, "data directory quota: files, directories and links in the module's data directory (as `max_data_bytes`); the host's walk of the directory stops after this many entries. With a data volume, its inode count is this rounded up by mkfs (a few dozen more), and the host reads the file system's count each second: past this, the module is stopped"),
  data_volume: limit(oneOf(["auto", "volume", "scan"] as const), "auto", "how a native module's data directory is held to `max_data_bytes` and `max_data_files`: `volume` (an ext4 image of its own, `<data_dir>/.volumes/NAME.ext4`, loop-mounted on it: the kernel refuses a write past the quota with `ENOSPC`; the start fails where the machine cannot mount one), `scan` (the plain directory, measured by the host: a module may pass its quota by what it writes between two scans), `auto` (a volume where the host is root with loop devices and e2fsprogs, scans elsewhere; the startup log says which). TypeScript modules write through the file API, which counts exactly: they never get one"),
  restart: limit(oneOf(RESTART_POLICIES), "on-failure", "after a crash: `never`, `on-failure` (not after a clean exit), `always`"),
  max_restarts: limit(int(), 5, "give up after this many restarts within `restart_window_ms`: the module is then `failed` and stays stopped"),
  restart_window_ms: limit(int({ min: 1 }), 60_000, "the window for `max_restarts`"),
  event_queue: limit(int({ min: 1 }), 1024, "events queued for a slow module before the oldest are dropped (the module is told how many it missed)"),
  kill_timeout_ms: limit(int({ min: 1 }), 2000, "after SIGTERM, how long before SIGKILL"),
  health_interval_ms: limit(int(), 10_000, "how often the host asks a running module whether it is healthy (0 = never)"),
  health_timeout_ms: limit(int({ min: 1 }), 5000, "a module that does not answer a health check within this is killed (and restarted per policy)"),
  important: limit(bool(), false, "if this module fails for good (crashed and not restarted, or quarantined while the host runs), stop the host with a non-zero exit"),
  address_space_mb: limit(int(), DEFAULT_SANDBOX_LIMITS.address_space_mb, "`RLIMIT_AS` per process (0 = none); an isolate host gets at least 2048 + 3 × `memory_mb` (V8 reserves ~1.6 GB up front); past it the kernel refuses the allocation, which most programs (Node, Rust) end on"),
  open_files: limit(int(), DEFAULT_SANDBOX_LIMITS.open_files, "`RLIMIT_NOFILE` (an isolate host: at least 128); past it the kernel refuses to open more (`EMFILE`)"),
  processes: limit(int(), DEFAULT_SANDBOX_LIMITS.processes, "processes and threads of the module (`RLIMIT_NPROC` under its own uid, and its cgroup's `pids.max`; an isolate host has about 13 threads and gets at least 64); past it the kernel refuses to start another (`EAGAIN`)"),
  cpu_seconds: limit(int(), DEFAULT_SANDBOX_LIMITS.cpu_seconds, "CPU seconds per process over its whole life (0 = none; for short-lived work); past it the kernel ends the process (`SIGXCPU`, and `SIGKILL` one CPU second later)"),
  file_size_mb: limit(int(), DEFAULT_SANDBOX_LIMITS.file_size_mb, "largest file it may write (`RLIMIT_FSIZE`); past it the kernel sends `SIGXFSZ`, which ends the process unless it ignores the signal (then the write fails with `EFBIG`)"),
  handler_timeout_ms: limit(int({ min: 1 }), 120_000, "longest one handler of a TypeScript module (an event handler, an RPC, module API, timer, CLI or provider call) may take; after it the caller gets a `timeout` error (an event handler is logged and the next events are delivered). Callers usually have shorter deadlines of their own (a module call at most 60 s, a timer run 30 s); this one is the backstop, and what keeps a stuck event handler from stalling the module's events"),
  log_bytes_per_second: limit(int({ min: 1024 }), 32 * 1024, "bytes per second the module may add to the host log: its log messages, stdout and stderr (min 1024; bursts of 4 s worth, at least 64 KiB); the rest is dropped and counted; the host's notes about the module (throttled, denied, events not delivered) have their own budget of 2048 bytes/s, bursts of 16 KiB"),
  audit_bytes_per_second: limit(int({ min: 1024 }), 16 * 1024, "bytes per second of audit records the module may cause: its denials and audited actions (min 1024; bursts of 4 s worth, at least 64 KiB); the rest are counted in `summary` records"),
  memory_total_mb: limit(int(), DEFAULT_CGROUP_LIMITS.memory_mb, "memory of **all** the module's processes together, shared memory, `memfd`, `/tmp` and page cache included (its cgroup; 0 = none); beyond it the kernel kills its processes and the log says `the kernel killed N of its processes at its memory limit`. An isolate host gets at least 192 + 2 × `memory_mb`"),
  cpu_weight: limit(int({ min: 1, max: 10_000 }), DEFAULT_CGROUP_LIMITS.cpu_weight, "the module's CPU share among the host's modules when the CPU is contended (1-10000, cgroup `cpu.weight`; v1 `cpu.shares` = weight × 10.24)"),
  cpu_max_percent: limit(int(), DEFAULT_CGROUP_LIMITS.cpu_max_percent, "most CPU the module may use, in percent of one core (0 = no ceiling): by default no module can take more than one core"),
  quarantine_after: limit(int(), 5, "quarantine the module after this many failures (crashes and failed starts, across host restarts) within `quarantine_window_ms` (0 = never)"),
  quarantine_window_ms: limit(int({ min: 1 }), 600_000, "the window for `quarantine_after`"),
  max_requests_in_flight: limit(int({ min: 1 }), 64, "requests the host serves for the module at once; further ones wait (the host stops reading its socket)"),
  requests_per_second: limit(int({ min: 1 }), 2000, "requests admitted per second (a burst of one second's worth); further ones wait"),
  host_cpu_ms_per_s: limit(int({ min: 1, max: 1000 }), 250, "host CPU time (ms per second, 1-1000) spent serving the module's requests and handling what it sends (dispatch, answer encoding, work done in slices after the request's first turn such as a submitted block's checks, the decoding of frames of 4 KiB or more, each chunk read from its socket, such as small log lines and acks, the reading and parsing of its `http_request` answers, measured); over it, its requests wait and its socket is not read. The reading of its stdout and stderr has a bucket of its own of the same size: over it, only its output pipes are not read"),
  request_timeout_ms: limit(int({ min: 1 }), 30_000, "longest the host works on one request before answering `timeout`"),
  max_calls_per_caller: limit(int({ min: 1, max: 512 }), 64, "calls made for one other module (its module calls, its provider calls, the `tx_submit` and `block_template` hooks its requests run) that may wait for this module's answers at once (1-512); the caller's next call is refused at once with `quota_exceeded` naming this key, and its calls are given up when its instance ends. The host keeps at most 1024 calls waiting at one module in all, so one caller cannot take the places of the others"),
  max_rpc_calls: limit(int({ min: 1, max: 768 }), 256, "JSON-RPC and CLI calls of this module's methods (and the `rpc_dispatch` hook calls made for them) that may wait for its answers at once, from all clients together (1-768); the next is refused at once with `quota_exceeded` naming this key, and a client's calls are given up when its connection is reset. Of the 1024 calls the host keeps waiting at one module, the rest stay for modules, hooks, timers and health checks"),
  max_subscriptions: limit(int({ min: 1 }), 64, "event types the module may be subscribed to at once; a subscription past it fails with `quota_exceeded`"),
  max_unread_bytes: limit(int({ min: MiB }), 32 * MiB, "answers, events and host calls (invocations) sent but not read by the module, plus what its requests being served may still answer (min 1 MiB): each request reserves its answer's largest size (a frame for transactions and for blocks the chain does not hold in memory; a page of a recent block by hash what it can take, ~1.5 MiB for a small block; 8 MiB for a file; an HTTP request's `max_bytes`, 8 MiB by default; see security.md) and waits while that does not fit (a module call's answer is not reserved: it is refused if it arrives while the module is over this); while what it has not read is over it, a host call to it (a JSON-RPC call of its method, say) is refused at once naming this key, and a module over it for 5 s is disconnected (`goodbye` says why). Raise it to pipeline more large answers (blocks by height, or not in memory: this ÷ `max_frame_bytes` at a time)", "32 MiB"),
  max_request_bytes_in_flight: limit(int({ min: MiB }), 32 * MiB, "bytes of the module's requests the host holds while serving them (each request's frame; min 1 MiB): a request larger than 64 KiB waits (the host stops reading its socket) while it does not fit beside those being served, one is served whatever its size when none is; smaller ones never wait, so the host holds at most this + 64 KiB × `max_requests_in_flight` of them. A `call_module` holds its params until the callee answers (up to 60 s)", "32 MiB"),
  event_window: limit(int({ min: 1 }), 64, "events sent and not yet acknowledged (one more when drops begin, to say so at once); further events wait in `event_queue`"),
  event_queue_bytes: limit(int({ min: MiB }), 8 * MiB, "bytes of event payloads queued for a slow module (min 1 MiB; a module event's payload may be 64 KiB); past it the oldest are dropped and counted like those over `event_queue`", "8 MiB"),
  submit_blocks_per_minute: limit(int({ min: 1 }), DEFAULT_BLOCK_RATE.blocksPerMinute, "blocks the module may hand the chain per minute (`submit_block`, `queue_received_block`; bursts of one minute's worth): a block over it is refused with `quota_exceeded` before it is read, saying when to try again; a block the chain does not accept (rejected, duplicate) does not count. Regtest proof of work is trivial, so this, `submit_block_mb_per_minute` and `[chain] max_chain_mb` are what bound the chain's growth"),
  submit_block_mb_per_minute: limit(int({ min: 1 }), DEFAULT_BLOCK_RATE.mbPerMinute, "bytes (in MB of 1,000,000) the chain may write per minute for the module's blocks, as `submit_blocks_per_minute` (bursts of one minute's worth, at least one 4 MB block): a block is admitted against its size, and what the chain wrote for it beyond that (undo data, transaction index, UTXO set: a block of many small outputs writes ~25 times its size) is charged after it, so its next blocks wait longer"),
  storage_iter_max_bytes: limit(int({ min: 1024 }), MiB, "keys and values one `storage_iter` reads; a wider range is refused unless paged (`paged: true`, then follow `cursor`)", "1 MiB"),
  storage_io_concurrency: limit(int({ min: 1 }), 2, "the module's LevelDB operations running at once; the rest wait in its own queue (first come, first served), then for their turn in the host's share of the thread pool (`[host] pool_jobs`)"),
  inspect: limit(
    checked((s) => {
      const problem = inspectAddressProblem(s);
      return problem ? { message: problem, hint: 'write inspect = "127.0.0.1:9229" (development only; the debugger can run any code in the module), or leave it out' } : undefined;
    }),
    "",
    "**development only**: `\"127.0.0.1:PORT\"` (or `localhost:PORT`, `[::1]:PORT`; port 0 picks a free one) turns on the V8 inspector for this TypeScript module, served on that loopback address for Chrome DevTools or VS Code (docs/module-guide.md, \"Debugging\"). Whoever can connect to it runs any code in the module with its grants: any other address is refused. `modhost dev --inspect[=PORT]` sets it for every module",
    '`""` (off)',
  ),
};

type LimitFields = typeof LIMIT_FIELDS;
type LimitKey = keyof LimitFields;

/** A module's limits (docs: LIMIT_FIELDS, and the operator guide's Limits table). */
export type Limits = { [K in LimitKey]: v.InferOutput<LimitFields[K]["schema"]> };

function mapLimits<T>(f: (field: LimitFields[LimitKey], key: LimitKey) => T): Record<LimitKey, T> {
  return Object.fromEntries(Object.entries(LIMIT_FIELDS).map(([k, field]) => [k, f(field, k as LimitKey)])) as Record<LimitKey, T>;
}

export const DEFAULT_LIMITS: Limits = Object.freeze(mapLimits((f) => f.default) as Limits);

/** [modules.default_limits]: every limit, defaults filled in. */
export const DEFAULT_LIMITS_SCHEMA = table(mapLimits((f) => v.optional(f.schema as Schema, f.default)));
/** [modules.limits.NAME]: only the limits the table sets. */
const MODULE_LIMITS_SCHEMA = table(mapLimits((f) => v.optional(f.schema as Schema)));

// ---------------------------------------------------------------------------------------
// The other sections

const moduleNameProblem = (name: string) => (MODULE_NAME_RE.test(name) ? undefined : { message: `"${name}" is not a valid module name`, hint: MODULE_NAME_HINT });
const moduleName = () => checked(moduleNameProblem);
/** An array of module names, each checked at its index. */
const moduleNames = () =>
  strings(
    v.rawCheck<string>(({ dataset, addIssue }) => {
      if (!dataset.typed) return;
      const bad = moduleNameProblem(dataset.value);
      if (bad) addIssue({ message: say(bad.message, bad.hint) });
    }),
  );

/** DNS servers as resolv.conf lines read by Node give them ("IP", "IP:port", "[IPv6]:port"), each checked by capabilities/dns.ts. */
const dnsServers = () =>
  v.pipe(
    strings(
      v.rawCheck<string>(({ dataset, addIssue }) => {
        if (!dataset.typed) return;
        const bad = dnsServerProblem(dataset.value);
        if (bad) addIssue({ message: say(`"${dataset.value}" is not a DNS server address (${bad})`, 'write an IP address, with a port if not 53: "192.0.2.53", "192.0.2.53:5353", "[2001:db8::53]:5353"') });
      }),
    ),
    v.maxLength(8, say("more than 8 DNS servers", "list at most 8 (they are asked in turn)")),
  );

/** A path, relative to the config file's directory (`base`) or absolute; resolved. */
function pathString(base: string) {
  return v.pipe(
    checked((s) => (s.trim() === "" || s.includes("\0") ? { message: "empty path", hint: `write a path, relative to the config file or absolute, e.g. ${KEY} = "data"` } : undefined)),
    v.transform((s) => path.resolve(base, s)),
  );
}

/** Absent: null. */
function orNull<S extends Schema>(schema: S) {
  return v.nullish(schema, null);
}

const anyTable = () => v.custom<Record<string, unknown>>(isTable, (i) => say(`expected a table, found ${typeName(i.input)}`, `write it as a [${PATH}] section or an inline table { ... }`));

function hostSchema(base: string) {
  return table({
    log_level: v.optional(doc(oneOf(LOG_LEVELS), "`debug`, `info`, `warn` or `error`"), "info"),
    log_format: v.optional(doc(oneOf(["pretty", "json"] as const), "`pretty` for terminals, `json` for one JSON object per line"), "pretty"),
    audit_log: v.optional(doc(pathString(base), "append-only JSON-lines record of every denied request and every privileged action"), "data/audit.log"),
    audit_max_mb: v.optional(doc(int({ min: 1, max: 1_048_576 }), "size of the audit log at which it is rotated: `audit.log` becomes `audit.log.1`, the older ones move up one, and a new file starts with an `audit_rotated` record (1-1048576 MB)"), 64),
    audit_keep: v.optional(doc(int({ min: 1, max: 1000 }), "rotated audit files kept (`audit.log.1` the newest; the oldest beyond this is removed): the audit takes at most (audit_keep + 1) x audit_max_mb of disk (1-1000)"), 4),
    health_event_seconds: v.optional(doc(int(), "publish a `HealthCheck` event (every module's state, the chain height) this often; 0 = never"), 60),
    disk_space_low_mb: v.optional(doc(int(), "publish `DiskSpaceLow` when free space on the data directory's disk falls below this (once per crossing); 0 = never"), 1024),
    isolate_pool: v.optional(doc(int({ min: 0, max: 16 }), "pre-booted isolate hosts kept for TypeScript module starts, restarts and `modhost dev` reloads (0-16; 0 = off): a start that finds one skips Node's boot (~120 ms instead of ~330 ms or more for a trivial module). Each is sandboxed as a fresh isolate host, under a single-use uid, and costs ~25 MB while it waits; refilled in the background after a start. Only modules whose `memory_mb` and rlimits equal those of the last start that wanted one can take it: the startup log and each `loaded` line (`isolate_pool=warm` or `cold`) say what happened. [security.md](security.md#sandbox-levels) says what the pool changes"), 1),
    uid_claims_dir: v.optional(doc(pathString(base), "where a host running as root claims the uids it gives its modules and its pre-booted isolate hosts, so that no two hosts on the machine give one uid to two modules, whatever their data directories (one small file per uid, mode 0700, root's; [operator-guide.md](operator-guide.md#sandboxing), **Module uids**, says what to back up and what a conflict means). Every host on the machine must use the same one. A change takes effect at the next host start"), DEFAULT_UID_CLAIMS_DIR),
    pool_jobs: v.optional(doc(int({ min: 0, max: 1024 }), "modules' jobs in libuv's thread pool (their LevelDB operations and file API calls) running at once, all modules together (0-1024; 0 = the pool's threads minus four, at least one: four are kept for the host's own work; modules' DNS lookups take no thread, see `dns_servers`): the rest wait, and a free place goes to the waiting module with the fewest jobs running, so a module waits for at most one job of those running, never for another module's queue ([architecture.md](architecture.md#the-thread-pool-share)). Keep it below the pool's threads: the rest are the host's own. The pool has `UV_THREADPOOL_SIZE` threads, which `modhost` sets to 8 unless the environment already sets it (1-1024; each thread reserves 8 MB of address space and takes ~10 KB of memory). A change takes effect at the next host start", { shown: "`0` (4 with 8 threads)" }), 0),
    dns_servers: v.optional(doc(dnsServers(), "DNS servers that `http_request` asks for host names (at most 8; `\"IP\"` or `\"IP:port\"`); empty: the `nameserver` lines of /etc/resolv.conf. Names in /etc/hosts are answered from it first. Lookups run on the host's own stub resolver (UDP, TCP for a truncated answer; never a thread of the pool; at most 1024 at once, all modules together), each server in turn when one fails (SERVFAIL, REFUSED, a malformed answer, no answer), and are cancelled at the request's deadline; unlike getaddrinfo, no search domains and no other nsswitch sources ([security.md](security.md#what-is-not-protected)). A change takes effect at the next host start", { shown: "`[]` (resolv.conf's)" }), []),
    module_bytes_mb: v.optional(doc(int({ min: 64, max: 1_048_576 }), "bytes the host holds for all modules together, in MiB (64-1048576): their requests being served, the answers reserved for them (an answer relayed from another module counts once sent, not reserved) and sent but not read, their queued events, their storage transactions staged in parts and their metric series. Each module's own limits (`max_unread_bytes`, `max_request_bytes_in_flight`, `event_queue_bytes`) still apply; this bounds their sum. A module within its fair part (half of this divided among the modules) is never held back by the others; past it, while all modules together hold more than half of this, its requests wait (the log says `throttled: its requests wait for [host] module_bytes_mb`) and a staged part or a new metric series is refused (`quota_exceeded` naming this key). A change takes effect at the next host start"), MODULE_BYTES_DEFAULT_MB),
    turn_budget_ms: v.optional(doc(int({ min: 1, max: 1000 }), "work on modules' input (chunks read from their sockets, their stdout and stderr, their waiting requests and answers) the host does in one turn of its event loop before the rest waits for the next turn (1-1000 ms; runtime/turn.ts). Lower keeps timers, the RPC server and quiet modules' events prompt while many modules flood it; higher lets floods through with fewer turns. A change takes effect at the next host start"), 5),
  });
}

const ZMQ_ENDPOINT = () =>
  checked((s) => (/^(tcp:\/\/[^\s]+:\d+|ipc:\/\/\S+)$/.test(s) ? undefined : { message: `"${s}" is not a ZMQ endpoint`, hint: 'write "tcp://HOST:PORT" (as in the node\'s zmqpubsequence line) or "ipc:///path"' }));

function coreRpcBindProblem(bind: string) {
  const m = /^(.+):(\d{1,5})$/.exec(bind);
  if (!m || Number(m[2]) > 65535) return { message: `"${bind}" is not HOST:PORT`, hint: 'write e.g. "127.0.0.1:18443" (regtest\'s usual RPC port)' };
  if (!isLoopback(m[1]!.replace(/^\[|\]$/g, ""))) return { message: `"${bind}" is not a loopback address`, hint: "serve the Core-compatible RPC on 127.0.0.1 only: it has no TLS" };
  return undefined;
}

function chainSchema(base: string) {
  return table({
    backend: v.optional(doc(oneOf(["embedded", "bitcoind"] as const), "where node data comes from: `embedded`, an in-process chain with regtest rules, or `bitcoind`, a Bitcoin Core node"), "embedded"),
    rpc_url: v.optional(
      doc(checked((url) => (/^https?:\/\/[^/\s]+(\/.*)?$/.test(url) ? undefined : { message: `"${url}" is not an http URL`, hint: 'write the node\'s RPC address, e.g. "http://127.0.0.1:8332/"' })), "bitcoind: the node's JSON-RPC address. Its answers are checked, not trusted: a block, header or transaction must be the one asked for, a block at most 4,000,000 bytes (`MAX_NODE_BLOCK_BYTES`), a header's height within Core's range, a template at most 16,666 transactions, JSON at most 512 deep; the rest is refused naming what came (in the log; modules get `backend_error`)"),
      "http://127.0.0.1:8332/",
    ),
    rpc_cookie_file: orNull(doc(pathString(base), "bitcoind: the node's `.cookie` (read again when the node restarts)", { shown: "none" })),
    rpc_user: orNull(doc(str(), "bitcoind: a user of the node's `rpcauth=` (instead of the cookie); `modhost bitcoind-config` prints both", { shown: "none", label: "`rpc_user`, `rpc_password`" })),
    rpc_password: orNull(doc(str(), "", { hidden: true })),
    zmq_sequence: orNull(doc(ZMQ_ENDPOINT(), "bitcoind: the node's `zmqpubsequence` endpoint, e.g. `\"tcp://127.0.0.1:28332\"`; without it modhost polls. Notifications are read at most 5,000 a second (`ZMQ_NOTICES_PER_SECOND`; past it ZMQ drops and the gap in sequence numbers asks for one resync by RPC); a publisher sending a frame over 1 KiB is disconnected and connected to again a second later", { shown: "none" })),
    poll_interval_ms: v.optional(doc(int(), "bitcoind: how often the best block is checked as a safety net", { shown: "`0` (= 1000 without ZMQ, 30000 with)" }), 0),
    core_rpc_bind: orNull(doc(checked(coreRpcBindProblem), "embedded: also serve the chain over Bitcoin Core's RPC on this loopback `\"HOST:PORT\"` (cookie in `core-rpc.cookie` beside the RPC cookie), for ordinary Bitcoin tools; a request body holds at most 32 MiB and 640,000 JSON values (`,` `[` `{` counted before parsing: 64 per call of the largest batch), nested at most 512 deep (`FACADE_MAX_JSON_DEPTH`, Core's own limit), a batch at most 10,000 calls (413 past either); a call's `id` is echoed up to 1,024 characters of JSON (`MAX_ID_JSON_CHARS`; past it the call is answered `-32600` naming it, with id null); the answers of all requests in progress hold at most 64 MiB of JSON together (`FACADE_ANSWER_BYTES_HELD`: past it a call is answered Core's `-7` naming it, and a client asks again once it has read what it was given; a call alone is always answered whole); request bodies over 4 KiB in progress hold at most 64 MiB together (`FACADE_BODY_BYTES_IN_PROGRESS`: past it a request waits, unread, for earlier ones to be answered); a body over 64 KiB is parsed off the host's loop, in a worker thread (`chain/json-off.ts`); at most 256 connections (`MAX_FACADE_CONNECTIONS`: a new one past them closes the oldest idle one, or is answered 503 when all are busy), a request's head within 10 s and the whole request within 60 s; a client that half-closes its connection once its request is sent still gets the answer", { shown: "none" })),
    core_zmq_bind: orNull(doc(ZMQ_ENDPOINT(), "embedded: and publish Core's ZMQ topics (`hashblock`, `rawblock`, `hashtx`, `rawtx`, `sequence`) here", { shown: "none" })),
    block_interval_seconds: v.optional(doc(int(), "mine a block this often (0 = never); for demos and development"), 0),
    transactions_per_block: v.optional(doc(int(), "fee-paying transactions added to the mempool before each mined block"), 3),
    mature_blocks: v.optional(doc(int(), "blocks mined when the chain is created (first start on an empty `data_dir`) so coinbase outputs are spendable"), 101),
    data_dir: v.optional(doc(pathString(base), "the embedded chain's own LevelDB database (blocks, undo data, UTXO set, wallet coins); relative to the config file"), "data/chain"),
    block_cache: v.optional(doc(int({ min: 1, max: 100_000 }), "full blocks (with undo data) kept in memory besides the tip (1 to 100000)"), 64),
    block_cache_mb: v.optional(doc(int({ min: 1, max: 65_536 }), "what the cached blocks may hold of host memory together, estimated (6 bytes a serialised byte, plus 1 KiB a transaction): a block of heavy witness data holds ~20 MB, so `block_cache` alone could reach gigabytes (1 to 65536)"), 128),
    utxo_cache: v.optional(doc(int({ min: 0, max: 10_000_000 }), "UTXOs kept in memory (0 to 10000000)"), 20_000),
    utxo_cache_mb: v.optional(doc(int({ min: 1, max: 65_536 }), "what the cached UTXOs may hold of host memory together, estimated (2 bytes a character of their script and address, plus 256): a block's outputs can carry ~4 MB of script, so `utxo_cache` alone could reach gigabytes (1 to 65536)"), 64),
    max_mempool_mb: v.optional(doc(int({ min: 1, max: 65_536 }), "what the mempool's transactions may hold of host memory, estimated (3 bytes a serialised byte, plus 512 an input or output, plus 1 KiB), as bitcoind's `-maxmempool`; a full mempool takes a transaction only in place of lower fee rates, which it evicts (1 to 65536)"), 300),
    max_chain_mb: v.optional(doc(int({ min: 16, max: 16_777_216 }), "embedded: what the chain's database in `data_dir` may hold (MB of 1,000,000 bytes: blocks, undo data, transaction index and UTXO set, as keys and values; lowered by spent outputs and by reorganisations, not counting LevelDB's files before compaction; 16 to 16777216). A block handed by a module or over Core's RPC whose writes would pass it is rejected before it is written (`chain-full`, naming this key), and near it mined blocks carry only the mempool transactions that fit, then none, so the chain goes on with small blocks; `modhost chain info` shows `stored_bytes`. Raise it, or start a new chain (another `data_dir`); a chain made before this count is measured once, in slices, after it is opened"), 4096),
    max_blocks_per_call: v.optional(doc(int({ min: 1, max: 100_000 }), "most blocks one `modhost chain mine` mines, and the deepest `modhost chain reorg` (1 to 100000)"), 1000),
  });
}

const GRANTS_SCHEMA = table({
  allow: v.optional(descriptorList(), []),
  deny: v.optional(descriptorList(), []),
  on_missing_grant: v.optional(oneOf(MISSING_GRANT_POLICIES)),
});

const sub = { hidden: true } as const;

function modulesSchema(base: string) {
  return table({
    enabled: v.optional(doc(bool(), "`false` runs the host without modules"), true),
    modules_dir: v.optional(doc(pathString(base), "one subdirectory per module, each with a `module.toml`"), "modules"),
    data_dir: v.optional(doc(pathString(base), "each module gets `<data_dir>/<name>`, its only writable directory"), "data/modules"),
    enabled_modules: v.optional(doc(moduleNames(), "load only these (empty: every module found)"), []),
    disabled_modules: v.optional(doc(moduleNames(), "never load these"), []),
    on_missing_grant: v.optional(doc(oneOf(MISSING_GRANT_POLICIES), "what to do with a module that requests more than it is granted (below)"), "refuse"),
    sandbox: v.optional(doc(oneOf(SANDBOX_MODES), "how module processes are confined, native modules and the isolate hosts of TypeScript modules alike: `auto` (the best this machine offers; if there is none, native modules are refused and isolate hosts run unsandboxed, with a warning), `full` (refuse unless bubblewrap, seccomp, a per-module uid and a per-module cgroup are available), `degraded` (the util-linux fallback), `off` (no sandbox: your explicit opt-out)"), "auto"),
    native_sandbox: orNull(doc(oneOf(SANDBOX_MODES), "the older key, for native modules only: when set, overrides `sandbox` for them", { shown: "unset" })),
    start_concurrency: v.optional(doc(int({ min: 0, max: 1024 }), "how many modules boot at the same time (0 = the number of CPUs): a module holds its place until its process has said hello; see below"), 0),
    module_configs: v.optional(doc(namedTables(moduleNameProblem, anyTable()), "[modules.module_configs.NAME]: each module's own settings", sub), {}),
    default_limits: v.optional(doc(DEFAULT_LIMITS_SCHEMA, "[modules.default_limits]: every module's limits", sub), {}),
    limits: v.optional(doc(namedTables(moduleNameProblem, MODULE_LIMITS_SCHEMA), "[modules.limits.NAME]: one module's limits over default_limits", sub), {}),
    grants: v.optional(doc(namedTables(moduleNameProblem, GRANTS_SCHEMA), "[modules.grants.NAME]: what a module may do", sub), {}),
    trust: v.optional(doc(namedTables(moduleNameProblem, MODULE_TRUST_SCHEMA), "[modules.trust.NAME]: whose signatures count for the module", sub), {}),
    providers: v.optional(
      doc(table(Object.fromEntries(PROVIDER_ROLES.map((role) => [role, v.optional(moduleName())])) as Record<ProviderRole, v.OptionalSchema<ReturnType<typeof moduleName>, undefined>>), "[modules.providers]: the module chosen for each provider role", sub),
      {},
    ),
  });
}

/** What the guide says of each [rpc] limit (the limits themselves: RpcLimits, host/rpc/server.ts). */
const RPC_LIMIT_DOCS: Record<keyof RpcLimits, string> = {
  max_connections: "connections open at once, from everyone; never more than a quarter of the host's open-file limit (`ulimit -n`; the host logs when it lowers the cap)",
  max_connections_per_address: "connections open at once from one address (local clients all share `127.0.0.1`)",
  header_timeout_ms: "a connection must send complete request headers within this, idle new connections included (`408`). Meanwhile a connection whose bytes have made no whole request for 20 ms is read once every 20 ms (what came meanwhile, at once), so a client sending a byte at a time costs ~50 reads a second, not one per byte",
  request_timeout_ms: "a whole request (headers and body) must arrive within this (`408`); at least `header_timeout_ms`",
  idle_timeout_ms: "a keep-alive connection with no request for this long is closed",
  max_header_bytes: "request line and headers (`431`)",
  max_body_bytes: "request body, refused from `Content-Length` or as a chunked body grows (`413`); a body in more than 4,096 pieces (chunks, or reads: `MAX_REQUEST_BODY_PIECES`; one per 256 bytes of this limit when that is more) is refused too, and a body the server will not use (an unauthorised request, say) is read at most this far before its connection is closed. A body over 64 KiB (`JSON_ON_LOOP_BYTES`) is measured and parsed in a worker thread, not on the host's loop, so raising this costs the loop little; one parse runs at a time, 64 more wait (`JSON_QUEUE`), more are refused",
  max_batch: "requests in one JSON-RPC batch; its calls run 16 at a time (`MAX_PIPELINED_REQUESTS`, as a connection's pipelined requests), answered in their order",
  max_json_depth: "nesting of arrays and objects in a body, checked before it is parsed",
  max_method_length: "characters in a method name",
  max_response_bytes: "bytes of JSON in one answer (a batch's answers together); an answer that does not fit is replaced by a `-32006` error with its id (in a batch, at once as it arrives: its data is not held while the rest of the batch runs). Answers are written in slices of ~2 ms, binary as hex. The command line (`modhost call`, `list`, ...) takes an answer of at most this (from the configuration it reads) plus 64 KiB, counted as it arrives",
  max_unsent_bytes: "bytes of answers (and `/metrics` pages) written to clients and not yet taken by their sockets, all connections together; past it, the connections whose answers waited longest (clients that do not read) are closed until the new answer fits. Answers of 64 KiB or less are not counted",
};

function rpcSchema(base: string) {
  const limits = Object.fromEntries(
    (Object.keys(DEFAULT_RPC_LIMITS) as (keyof RpcLimits)[]).map((key) => [key, v.optional(doc(int({ min: 1 }), RPC_LIMIT_DOCS[key]), DEFAULT_RPC_LIMITS[key])]),
  ) as unknown as Record<keyof RpcLimits, v.OptionalSchema<Schema<number>, number>>;
  return table({
    enabled: v.optional(doc(bool(), "`false`: no RPC server (and no `modhost list`, ...)"), true),
    bind: v.optional(doc(checked((bind) => (isIP(bind) === 0 && bind !== "localhost" ? { message: `"${bind}" is not an IP address`, hint: 'write an address such as "127.0.0.1" or "::1"' } : undefined)), "the address to listen on; a non-loopback address is refused unless `allow_remote = true`"), "127.0.0.1"),
    allow_remote: v.optional(doc(bool(), "allow a non-loopback `bind`. RPC is plain HTTP: put TLS in front if you do"), false),
    port: v.optional(doc(int({ min: 0, max: 65535 }), "TCP port (`0`: any free port, written to `<cookie_file>.port` for the command line)"), 8339),
    cookie_file: v.optional(doc(pathString(base), "where the host writes its cookie at start (mode 0600), and its port beside it (`<cookie_file>.port`), and removes both at stop"), "data/.cookie"),
    user: v.optional(doc(checked((user) => (user === "" || user.includes(":") || user === "__cookie__" ? { message: `"${user}" cannot be an RPC user name`, hint: 'use a non-empty name without ":" (and not "__cookie__", which the cookie uses)' } : undefined)), "optional fixed credentials (both or neither; password of 8 characters or more)", { shown: "—", label: "`user`, `password`" })),
    password: v.optional(doc(checked((pw) => (pw.length < 8 ? { message: "the RPC password is shorter than 8 characters", hint: "use a long random password, or only the cookie file" } : undefined)), "", { hidden: true })),
    call_timeout_ms: v.optional(doc(int({ min: 1 }), "how long a module's RPC method or CLI command may take. At most 256 such calls wait at one module at once, from all clients together (the module's `max_rpc_calls` in `[modules.limits.NAME]`, so that its other callers keep places among its 1,024): past it a call is refused at once naming the limit. A call whose client's connection is reset is given up at once; a client that only closes its sending side (a FIN: also what a client that exits leaves) is still answered, so its calls run until they answer or time out"), 10_000),
    metrics_without_auth: v.optional(doc(bool(), "serve `GET /metrics` without credentials (for Prometheus scrapers)"), false),
    ...limits,
  });
}

/** One [hooks.POINT] table; the defaults are the point's own (capabilities/hooks.ts). */
const HOOK_POINT_SCHEMA = table({
  order: v.optional(
    doc(
      v.pipe(
        moduleNames(),
        v.rawCheck<string[]>(({ dataset, addIssue }) => {
          if (!dataset.typed) return;
          const twice = dataset.value.find((name, i) => dataset.value.indexOf(name) !== i);
          if (twice !== undefined) addIssue({ message: say(`"${twice}" is listed twice`, "list each module once") });
        }),
      ),
      "modules whose hooks run first, in this order (together with the modules' own `before`/`after`; a conflict is refused when a module registers, naming the modules)",
      { shown: "`[]`" },
    ),
  ),
  failure: v.optional(doc(oneOf(["open", "closed"] as const), "`open`: a failed hook is logged and the chain goes on as if it answered continue; `closed`: the call is refused, naming the hook's module", { shown: "per point: `open` for `tx_submit` and `block_template`, `closed` for `rpc_dispatch` and `module_load`" })),
  timeout_ms: v.optional(doc(int(HOOK_TIMEOUT_RANGE as Range), "how long one hook may take (1 to 60000); a hook past it has failed", { shown: "per point: 2000, 1000, 2000, 5000" })),
  max_payload_bytes: v.optional(doc(int(HOOK_PAYLOAD_RANGE as Range), "largest payload sent to the point's hooks and accepted back from a `modify` (1024 to 15728640); a larger payload refuses the call, naming this key", { shown: "10485760" })),
});

const HOOKS_SCHEMA = table(Object.fromEntries(HOOK_POINT_NAMES.map((p) => [p, v.optional(HOOK_POINT_SCHEMA)])) as Record<(typeof HOOK_POINT_NAMES)[number], v.OptionalSchema<typeof HOOK_POINT_SCHEMA, undefined>>);

function storageSchema(base: string) {
  return table({ dir: v.optional(doc(pathString(base), "where modules' storage lives (one LevelDB database per module)"), "data/storage") });
}

/** The whole of modhost.toml; paths resolved against `base`, the config file's directory. */
function configSchema(base: string) {
  return table({
    host: v.optional(hostSchema(base), {}),
    chain: v.optional(chainSchema(base), {}),
    modules: v.optional(modulesSchema(base), {}),
    storage: v.optional(storageSchema(base), {}),
    rpc: v.optional(rpcSchema(base), {}),
    trust: v.optional(TRUST_SCHEMA, {}),
    registry: v.optional(registrySchema(base), {}),
    hooks: v.optional(HOOKS_SCHEMA, {}),
  });
}

/** The sections' schemas, for the operator guide's tables (host/config-docs.ts) and test/docs.test.ts's check that the guide names every key. */
export function sectionSchemas(base: string) {
  return {
    host: hostSchema(base), chain: chainSchema(base), modules: modulesSchema(base), storage: storageSchema(base), rpc: rpcSchema(base),
    trust: TRUST_SCHEMA, registry: registrySchema(base), hooks: HOOK_POINT_SCHEMA, limits: DEFAULT_LIMITS_SCHEMA,
  };
}

// ---------------------------------------------------------------------------------------
// Types, from the schema

type Parsed = v.InferOutput<ReturnType<typeof configSchema>>;

export interface ModuleGrants {
  allow: Descriptor[];
  deny: Descriptor[];
  on_missing_grant?: MissingGrantPolicy;
}

export type RpcConfig = Parsed["rpc"];

export interface HostConfig {
  /** Absolute path; null when built from defaults. */
  file: string | null;
  /** Base directory for relative paths: the config file's directory, or the cwd. */
  dir: string;
  /** The TOML text, for locating later problems (a module's config) in the file. */
  source: string | null;
  host: Parsed["host"];
  chain: Parsed["chain"];
  modules: Omit<Parsed["modules"], "default_limits" | "limits" | "grants" | "trust" | "providers"> & {
    /** [modules.default_limits] merged over DEFAULT_LIMITS. */
    default_limits: Limits;
    limits: Record<string, Partial<Limits>>;
    grants: Record<string, ModuleGrants>;
    trust: Record<string, ModuleTrust>;
    providers: Partial<Record<ProviderRole, string>>;
  };
  storage: Parsed["storage"];
  rpc: RpcConfig;
  /** [trust]: signature policy and publishers' keys (host/verify/config.ts). */
  trust: TrustConfig;
  /** [registry]: where modhost install finds modules (host/registry). */
  registry: RegistryConfig;
  /** [hooks.POINT]: the operator's order, failure policy, deadline and payload limit per hook point (capabilities/hooks.ts). */
  hooks: HooksConfig;
}

/** The top-level tables of modhost.toml (ConfigLoaded at start lists them all). */
export const CONFIG_SECTIONS = ["host", "chain", "modules", "storage", "rpc", "trust", "registry", "hooks"] as const;

function build(parsed: Parsed, dir: string): HostConfig {
  return { file: null, dir, source: null, ...(parsed as Omit<HostConfig, "file" | "dir" | "source">) };
}

export function defaultConfig(dir: string): HostConfig {
  const base = path.resolve(dir);
  return build(v.parse(configSchema(base), {}), base);
}

export async function loadConfig(file: string): Promise<HostConfig> {
  const abs = path.resolve(file);
  const { data, source } = await readToml(abs);
  return parseConfig(data, source, abs);
}

/** Validates a parsed modhost.toml. Throws one ConfigError listing every problem found. */
export function parseConfig(data: Record<string, unknown>, source: string, file: string): HostConfig {
  const abs = path.resolve(file);
  const dir = path.dirname(abs);
  const c = new Checker(file, source);
  const parsed = checkSchema(c, configSchema(dir), data);
  crossKeyRules(c, data);
  c.throwIfProblems();
  const config = build(parsed!, dir);
  config.file = abs;
  config.source = source;
  return config;
}

// ---------------------------------------------------------------------------------------
// Rules across keys: after the schema, each on raw fields that are valid on their own.

function section(data: Record<string, unknown>, key: string): Record<string, unknown> | undefined {
  const t = data[key];
  return isTable(t) ? t : undefined;
}

function crossKeyRules(c: Checker, data: Record<string, unknown>): void {
  const modules = section(data, "modules");
  if (modules) {
    const enabled = modules["enabled_modules"];
    const disabled = modules["disabled_modules"];
    if (Array.isArray(enabled) && Array.isArray(disabled)) {
      disabled.forEach((name, index) => {
        if (typeof name === "string" && MODULE_NAME_RE.test(name) && enabled.includes(name) && disabled.indexOf(name) === index) {
          c.report(["modules", "disabled_modules", index], `"${name}" is both enabled and disabled`, "remove it from one of the two lists");
        }
      });
    }
    const trust = modules["trust"];
    if (isTable(trust)) {
      for (const [name, t] of Object.entries(trust)) if (MODULE_NAME_RE.test(name) && isTable(t)) moduleTrustRules(c, t, ["modules", "trust", name]);
    }
  }
  const trust = section(data, "trust");
  if (trust) readTrustRules(c, trust);
  const registry = section(data, "registry");
  if (registry) registryRules(c, registry);
  checkPublisherRefs(c, data);
  const chain = section(data, "chain");
  if (chain) chainRules(c, chain);
  const rpc = section(data, "rpc");
  if (rpc) rpcRules(c, rpc);
}

function chainRules(c: Checker, t: Record<string, unknown>): void {
  const at = ["chain"];
  const user = typeof t["rpc_user"] === "string";
  const password = typeof t["rpc_password"] === "string";
  if (user !== password) {
    c.report([...at, user ? "rpc_user" : "rpc_password"], "rpc_user and rpc_password go together", "set both (`modhost bitcoind-config` prints them with the node's rpcauth line), or use rpc_cookie_file");
  }
  const cookie = t["rpc_cookie_file"];
  const hasCookie = typeof cookie === "string" && cookie.trim() !== "" && !cookie.includes("\0");
  if (t["backend"] === "bitcoind" && !hasCookie && !(user && password)) {
    c.report([...at, "backend"], "the bitcoind backend needs credentials", "set rpc_cookie_file (the node's .cookie) or rpc_user + rpc_password (`modhost bitcoind-config` prints a least-authority user)");
  }
}

function rpcRules(c: Checker, t: Record<string, unknown>): void {
  const at = ["rpc"];
  const header = valid(int({ min: 1 }), t["header_timeout_ms"]) ? (t["header_timeout_ms"] as number) : DEFAULT_RPC_LIMITS.header_timeout_ms;
  const request = valid(int({ min: 1 }), t["request_timeout_ms"]) ? (t["request_timeout_ms"] as number) : DEFAULT_RPC_LIMITS.request_timeout_ms;
  if (header > request) {
    c.report([...at, t["header_timeout_ms"] !== undefined ? "header_timeout_ms" : "request_timeout_ms"], `header_timeout_ms (${header}) is longer than request_timeout_ms (${request})`, "the headers are part of the request: make request_timeout_ms at least header_timeout_ms");
  }
  const bind = t["bind"];
  const allowRemote = t["allow_remote"] === true;
  if (typeof bind === "string" && (isIP(bind) !== 0 || bind === "localhost") && !isLoopback(bind) && !allowRemote) {
    c.report([...at, "bind"], `"${bind}" is not a loopback address: the RPC server would be reachable from other machines`, "keep the default \"127.0.0.1\", or set allow_remote = true in [rpc] if you mean it (and put TLS in front: RPC is plain HTTP)");
  }
  const user = t["user"];
  const password = t["password"];
  const userBad = typeof user === "string" && (user === "" || user.includes(":") || user === "__cookie__");
  if (!userBad && (user === undefined) !== (password === undefined)) {
    c.report([...at, user === undefined ? "password" : "user"], "user and password go together", "set both, or neither (the cookie file always works)");
  }
}

// ---------------------------------------------------------------------------------------
// Reading the result

/** The sandbox mode for a runtime's processes: [modules] sandbox, or native_sandbox for native modules when set. */
export function sandboxModeFor(config: HostConfig, runtime: "isolate" | "native"): SandboxMode {
  return (runtime === "native" ? config.modules.native_sandbox : null) ?? config.modules.sandbox;
}

export function limitsFor(config: HostConfig, module: string): Limits {
  const own = Object.hasOwn(config.modules.limits, module) ? config.modules.limits[module] : undefined;
  return { ...config.modules.default_limits, ...own };
}

/** The operator's grants for a module; empty allow and deny when there are none. */
export function grantsFor(config: HostConfig, module: string): ModuleGrants {
  const own = Object.hasOwn(config.modules.grants, module) ? config.modules.grants[module] : undefined;
  return own ?? { allow: [], deny: [] };
}

export function missingGrantPolicy(config: HostConfig, module: string): MissingGrantPolicy {
  return grantsFor(config, module).on_missing_grant ?? config.modules.on_missing_grant;
}

/** Whether an IP literal (or "localhost") is a loopback address. */
function isLoopback(address: string): boolean {
  if (address === "localhost" || address === "::1") return true;
  if (isIP(address) === 4) return address.startsWith("127.");
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return mapped !== null && mapped[1]!.startsWith("127.");
}

/**
 * Why `inspect` (a [modules.limits] key) cannot be used, or undefined: it must be "" (off) or a
 * loopback address with a port. Whoever reaches the inspector can run any code in the module,
 * with its grants; it is never served on another interface.
 */
export function inspectAddressProblem(value: string): string | undefined {
  if (value === "") return undefined;
  const m = /^(127\.0\.0\.1|localhost|\[::1\]):(\d{1,5})$/.exec(value);
  if (!m) return `inspect = "${value}" is not a loopback address with a port: the inspector is only served on 127.0.0.1, localhost or [::1]`;
  const port = Number(m[2]);
  if (port > 65535) return `inspect = "${value}": the port must be from 1 to 65535 (0: any free port)`;
  return undefined;
}

/**
 * Entries of the configuration that name a module that is not installed: a grant, an
 * enabled_modules/disabled_modules entry, a module_configs, limits or trust table. Each is
 * most likely a typo (the closest installed name is suggested) or a module not installed
 * yet; the host warns and runs the modules it has. `installed`: the module names found in
 * modules_dir. With no module at all, one warning says so.
 */
export function strayModuleWarnings(config: HostConfig, installed: Iterable<string>): string[] {
  const names = [...installed];
  const m = config.modules;
  const where = config.file ?? "the configuration";
  if (names.length === 0) {
    return [`there are no modules in ${m.modules_dir} ([modules] modules_dir in ${where}): the host runs with none (RPC and the chain only); install one with modhost install NAME, or point modules_dir at your modules`];
  }
  const known = new Set(names);
  const entries: Array<[string, string]> = [
    ...m.enabled_modules.map((n) => [n, "[modules] enabled_modules"] as [string, string]),
    ...m.disabled_modules.map((n) => [n, "[modules] disabled_modules"] as [string, string]),
    ...Object.keys(m.grants).map((n) => [n, `[modules.grants.${n}]`] as [string, string]),
    ...Object.keys(m.module_configs).map((n) => [n, `[modules.module_configs.${n}]`] as [string, string]),
    ...Object.keys(m.limits).map((n) => [n, `[modules.limits.${n}]`] as [string, string]),
    ...Object.keys(m.trust).map((n) => [n, `[modules.trust.${n}]`] as [string, string]),
  ];
  const out: string[] = [];
  // One budget for all the guesses: each compared its name with every installed one, and 300
  // entries against 256 modules of 64-character names took 1.3 s of the loop as the host started.
  const budget = { cells: CLOSEST_MAX_CELLS };
  for (const [name, key] of entries) {
    if (known.has(name)) continue;
    const guess = closest(name, names, budget);
    out.push(`${key} in ${where} names module "${name}", which is not in ${m.modules_dir}${guess ? `; did you mean "${guess}"?` : ""} (the entry has no effect until such a module is installed)`);
  }
  return out;
}
