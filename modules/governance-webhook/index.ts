// governance-webhook: POSTs signed JSON to the operator's webhook URLs when configured events
// happen (by default the governance events and the module lifecycle events).
//
// Delivery is at least once, in order per URL, and survives restarts:
//  - every delivery is written to the outbox (this module's storage) before it is tried, and
//    removed only after the receiver answered 2xx;
//  - a failed attempt (no connection, a timeout, any other status) is retried with exponential
//    backoff and jitter; the next delivery to the same URL waits behind it (one lane per URL);
//  - after max_attempts attempts, or max_age_seconds after the event, it moves to the
//    dead-letter tree (a metric and a log line say so);
//  - the outbox holds at most max_outbox deliveries: when full, the oldest is dropped (a
//    metric and a log line say so).
// The receiver checks the signature (HMAC-SHA256 of the exact body with the shared secret),
// the body's sent_at (replay window) and its delivery_id (duplicates): README.md.
//
// Configuration changes (ConfigLoaded) take effect at once: new URLs, secrets and events. A
// delivery whose URL is no longer configured waits (until max_age_seconds) in case it comes
// back; `governance-webhook.outbox` (RPC) shows every lane.
import type { ModuleContext, Plain } from "modhost/sdk";
import { backoff, readSettings, type Settings, type Webhook } from "./settings.ts";
import { laneId, signature, utf8 } from "./sign.ts";

const VERSION = "0.1.0";
const OUTBOX = "outbox"; // "q/<lane>/<seq>" -> Delivery; "meta/seq" -> the last sequence number used
const DEAD = "dead"; // "<seq>" -> DeadLetter
const SEQ_KEY = "meta/seq";
const BLOCK_KEY = "meta/block"; // the last block enqueued as NewBlock: { height, hash }

type Delivery = {
  id: string;
  seq: number;
  url: string;
  node_id: string | null;
  event: { type: string; payload: Plain; missed: number; catch_up?: boolean };
  /** Unix milliseconds when the event arrived. */
  created_at: number;
  attempts: number;
  /** Unix milliseconds; 0 = at once. */
  next_attempt: number;
  last_error: string | null;
};
type DeadLetter = Delivery & { reason: string; dead_at: number };

interface Lane {
  id: string;
  url: string;
  /** Sequence numbers pending for this URL, oldest first (mirrors the outbox). */
  seqs: number[];
  busy: boolean;
  again: boolean;
  timer: ReturnType<typeof setTimeout> | undefined;
  wakeAt: number | null;
  lastError: string | null;
  delivered: number;
}

const pad = (n: number): string => String(n).padStart(16, "0");
const qKey = (lane: string, seq: number): string => `q/${lane}/${pad(seq)}`;

function randomId(): string {
  let s = "";
  for (let i = 0; i < 4; i++) s += Math.floor(Math.random() * 2 ** 32).toString(16).padStart(8, "0");
  return s;
}

export default async function start(ctx: ModuleContext): Promise<void> {
  let settings: Settings = readSettings(ctx.config);
  const lanes = new Map<string, Lane>();
  let lastSeq = 0;
  let deadCount = 0;
  let stopped = false;
  stopHook = () => {
    stopped = true;
    for (const lane of lanes.values()) if (lane.timer) clearTimeout(lane.timer);
  };

  // Changes to the outbox and the lanes happen one at a time (HTTP requests do not).
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = queue.then(fn, fn);
    queue = run.catch(() => undefined);
    return run;
  };
  // With on_missing_grant = "reduce" a family may be missing: say what it costs, once.
  const can = {
    network: typeof ctx.network?.fetch === "function",
    timers: typeof ctx.timers?.after === "function",
    metrics: typeof ctx.metrics?.report === "function",
    rpc: typeof ctx.rpc?.register === "function",
    chain: typeof ctx.chain?.getBlockByHeight === "function" && typeof ctx.chain?.getBlockHeight === "function",
  };
  const missing = (Object.keys(can) as Array<keyof typeof can>).filter((f) => !can[f]);
  const need = { network: "network_access (nothing can be sent)", timers: "manage_timers (failed deliveries are retried only when the next event comes)", metrics: "report_metrics (no metrics)", rpc: "register_rpc_endpoint (no outbox RPC)", chain: "read_blockchain and read_chain_state (NewBlock is delivered as it comes, without catching up on blocks missed)" };
  for (const f of missing) ctx.log.error(`running without ${need[f]}: grant it in [modules.grants.governance-webhook]`);
  const metric = (name: string, value: number, kind: "counter" | "gauge"): void => {
    if (can.metrics) void ctx.metrics.report(name, value, { kind }).catch(() => undefined);
  };
  const pending = (): number => [...lanes.values()].reduce((n, l) => n + l.seqs.length, 0);
  const gauges = (): void => {
    metric("webhook_outbox_pending", pending(), "gauge");
    metric("webhook_dead_letters", deadCount, "gauge");
  };
  const laneFor = (url: string): Lane => {
    const id = laneId(url);
    let lane = lanes.get(id);
    if (!lane) {
      lane = { id, url, seqs: [], busy: false, again: false, timer: undefined, wakeAt: null, lastError: null, delivered: 0 };
      lanes.set(id, lane);
    }
    return lane;
  };

  // --- The outbox as it was left (a restart, a crash): rebuild the lanes from storage. ---
  await ctx.storage.openTree(OUTBOX);
  await ctx.storage.openTree(DEAD);
  lastSeq = Number((await ctx.storage.get<number>(OUTBOX, SEQ_KEY)) ?? 0);
  let cursor: string | null = null;
  do {
    const page: { entries: Array<{ key: string; value: Delivery }>; cursor: string | null } = await ctx.storage.iterate<Delivery>(OUTBOX, { prefix: "q/", paged: true, ...(cursor ? { cursor } : {}) });
    for (const { value } of page.entries) {
      laneFor(value.url).seqs.push(value.seq);
      lastSeq = Math.max(lastSeq, value.seq);
    }
    cursor = page.cursor;
  } while (cursor);
  for (const lane of lanes.values()) lane.seqs.sort((a, b) => a - b);
  cursor = null;
  do {
    const page: { entries: Array<{ key: string; value: DeadLetter }>; cursor: string | null } = await ctx.storage.iterate<DeadLetter>(DEAD, { paged: true, limit: 1000, ...(cursor ? { cursor } : {}) });
    deadCount += page.entries.length;
    cursor = page.cursor;
  } while (cursor);

  // --- Dead letters and drops ---
  const bury = (lane: Lane, d: Delivery, reason: string): Promise<void> =>
    serial(async () => {
      if (lane.seqs[0] !== d.seq) return; // dropped meanwhile
      while (deadCount >= settings.max_dead_letters) {
        const [oldest] = await ctx.storage.iterate<DeadLetter>(DEAD, { limit: 1 });
        if (!oldest) break;
        await ctx.storage.delete(DEAD, oldest.key);
        deadCount--;
      }
      await ctx.storage.put(DEAD, pad(d.seq), { ...d, reason, dead_at: Date.now() } satisfies DeadLetter);
      deadCount++;
      await ctx.storage.delete(OUTBOX, qKey(lane.id, d.seq));
      lane.seqs.shift();
      ctx.log.warn(`delivery ${d.id} (${d.event.type}) to ${d.url} moved to the dead letters: ${reason}`);
      metric("webhook_dead_letters_total", 1, "counter");
      gauges();
    });

  /** Drop the oldest pending delivery of all lanes (the outbox is full). Inside serial. */
  const dropOldest = async (): Promise<void> => {
    let lane: Lane | undefined;
    for (const l of lanes.values()) if (l.seqs.length && (!lane || l.seqs[0]! < lane.seqs[0]!)) lane = l;
    if (!lane) return;
    const seq = lane.seqs.shift()!;
    const d = await ctx.storage.get<Delivery>(OUTBOX, qKey(lane.id, seq));
    await ctx.storage.delete(OUTBOX, qKey(lane.id, seq));
    ctx.log.warn(
      `the outbox is full (max_outbox = ${settings.max_outbox}): dropped the oldest delivery ${d?.id ?? seq} (${d?.event.type ?? "?"}, to ${lane.url}, ${d?.attempts ?? 0} attempts); ` +
        `raise max_outbox in [modules.module_configs.governance-webhook] or fix the receiver`,
    );
    metric("webhook_dropped_total", 1, "counter");
  };

  // --- Sending ---
  const send = async (hook: Webhook, d: Delivery): Promise<{ ok: boolean; error: string | null }> => {
    const sentAt = Math.floor(Date.now() / 1000);
    const body = utf8(
      JSON.stringify({
        delivery_id: d.id,
        seq: d.seq,
        sent_at: sentAt,
        created_at: Math.floor(d.created_at / 1000),
        attempt: d.attempts + 1,
        node_id: d.node_id,
        event: d.event,
      }),
    );
    if (!can.network) return { ok: false, error: "network_access is not granted (grant network_access for this host:port in [modules.grants.governance-webhook])" };
    try {
      const r = await ctx.network.fetch(hook.url, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "user-agent": `modhost-governance-webhook/${VERSION}`,
          "x-modhost-signature": signature(hook.secret, body),
          "x-modhost-delivery": d.id,
          "x-modhost-timestamp": String(sentAt),
          "x-modhost-event": d.event.type,
        },
        body,
        timeout_ms: settings.request_timeout_ms,
      });
      if (r.status >= 200 && r.status < 300) return { ok: true, error: null };
      return { ok: false, error: `the receiver answered HTTP ${r.status}` };
    } catch (err) {
      const e = err as { code?: string; message?: string };
      const hint = e.code === "permission_denied" ? ` (grant network_access for this host:port in [modules.grants.governance-webhook])` : "";
      return { ok: false, error: `${e.code ?? "error"}: ${String(e.message ?? err).slice(0, 300)}${hint}` };
    }
  };

  const schedule = (lane: Lane, ms: number): void => {
    if (!can.timers) return; // no manage_timers: the next event pumps the lane again
    if (lane.timer) clearTimeout(lane.timer);
    const delay = Math.max(50, Math.min(ms, 2_000_000_000));
    lane.wakeAt = Date.now() + delay;
    lane.timer = setTimeout(() => {
      lane.timer = undefined;
      lane.wakeAt = null;
      void pump(lane);
    }, delay);
  };

  /** Deliver this lane's deliveries in order until it is empty or must wait. */
  const drain = async (lane: Lane): Promise<void> => {
    for (;;) {
      if (stopped) return;
      const seq = lane.seqs[0];
      if (seq === undefined) return;
      const d = await ctx.storage.get<Delivery>(OUTBOX, qKey(lane.id, seq));
      if (!d) {
        await serial(async () => void (lane.seqs[0] === seq && lane.seqs.shift()));
        continue;
      }
      const now = Date.now();
      const deadline = d.created_at + settings.max_age_seconds * 1000;
      if (now >= deadline) {
        await bury(lane, d, `not delivered within max_age_seconds (${settings.max_age_seconds}) after ${d.attempts} attempts${d.last_error ? `; last error: ${d.last_error}` : ""}`);
        continue;
      }
      const hook = settings.webhooks.find((w) => w.url === d.url);
      if (!hook) {
        // Held: the URL may come back with the next configuration; max_age_seconds still applies.
        lane.lastError = "this URL is no longer configured; held until it is again or max_age_seconds passes";
        schedule(lane, deadline - now);
        return;
      }
      if (d.next_attempt > now) {
        schedule(lane, d.next_attempt - now);
        return;
      }
      const result = await send(hook, d);
      if (result.ok) {
        await serial(async () => {
          if (lane.seqs[0] !== seq) return;
          await ctx.storage.delete(OUTBOX, qKey(lane.id, seq));
          lane.seqs.shift();
        });
        lane.lastError = null;
        lane.delivered++;
        ctx.log.debug(`delivered ${d.id} (${d.event.type}) to ${d.url} after ${d.attempts + 1} attempt(s)`);
        metric("webhook_deliveries_total", 1, "counter");
        gauges();
        continue;
      }
      d.attempts++;
      d.last_error = result.error;
      lane.lastError = result.error;
      metric("webhook_attempt_failures_total", 1, "counter");
      if (d.attempts >= settings.max_attempts) {
        await bury(lane, d, `gave up after ${d.attempts} attempts (max_attempts); last error: ${result.error}`);
        continue;
      }
      const delay = backoff(settings, d.attempts);
      d.next_attempt = Date.now() + delay;
      ctx.log.warn(`delivery ${d.id} (${d.event.type}) to ${d.url} failed (attempt ${d.attempts} of ${settings.max_attempts}): ${result.error}; next attempt in ${Math.round(delay / 100) / 10} s`);
      await serial(async () => {
        if (lane.seqs[0] === seq) await ctx.storage.put(OUTBOX, qKey(lane.id, seq), d);
      });
    }
  };

  const pump = async (lane: Lane): Promise<void> => {
    if (lane.busy) {
      lane.again = true;
      return;
    }
    lane.busy = true;
    try {
      do {
        lane.again = false;
        await drain(lane);
      } while (lane.again && !stopped);
    } catch (err) {
      // A storage error (the host stopping, a quota): try again later rather than stall.
      ctx.log.error(`the lane for ${lane.url} stopped on an error: ${(err as Error).message}; retrying in ${settings.retry_initial_ms} ms`);
      if (!stopped) schedule(lane, settings.retry_initial_ms);
    } finally {
      lane.busy = false;
    }
  };

  // --- Enqueueing events ---
  const enqueue = async (ev: { type: string; payload: unknown; missed: number; catch_up?: boolean }, extra: Array<{ op: "put"; key: string; value: Plain }> = []): Promise<void> => {
    const targets = settings.webhooks.filter((w) => w.events.includes(ev.type));
    if (targets.length === 0) return;
    if (ev.missed > 0) {
      ctx.log.warn(`${ev.missed} events were dropped by the host before this ${ev.type} (this module's event queue overflowed: raise event_queue in its [modules.limits]); the deliveries carry event.missed`);
      metric("webhook_events_missed_total", ev.missed, "counter");
    }
    const event = { type: ev.type, payload: (ev.payload ?? null) as Plain, missed: ev.missed, ...(ev.catch_up ? { catch_up: true } : {}) };
    // Payloads are bounded by the host (64 KiB for published events); this limit is checked
    // before anything is stored.
    const size = utf8(JSON.stringify(event)).length;
    if (size > settings.max_event_bytes) {
      ctx.log.error(`a ${ev.type} event of ${size} bytes is over max_event_bytes (${settings.max_event_bytes}) and is not delivered; raise max_event_bytes in [modules.module_configs.governance-webhook]`);
      metric("webhook_refused_events_total", 1, "counter");
      return;
    }
    const touched: Lane[] = [];
    await serial(async () => {
      for (const hook of targets) {
        while (pending() >= settings.max_outbox) await dropOldest();
        const seq = ++lastSeq;
        const lane = laneFor(hook.url);
        const d: Delivery = { id: randomId(), seq, url: hook.url, node_id: settings.node_id, event, created_at: Date.now(), attempts: 0, next_attempt: 0, last_error: null };
        try {
          await ctx.storage.transaction(OUTBOX, [
            { op: "put", key: SEQ_KEY, value: seq },
            { op: "put", key: qKey(lane.id, seq), value: d },
            ...extra,
          ]);
        } catch (err) {
          const e = err as { code?: string; message?: string };
          ctx.log.error(`a ${ev.type} event for ${hook.url} could not be written to the outbox and is lost: ${e.code ?? ""} ${e.message ?? err}`);
          metric("webhook_refused_events_total", 1, "counter");
          continue;
        }
        lane.seqs.push(seq);
        touched.push(lane);
      }
    });
    gauges();
    for (const lane of touched) void pump(lane);
  };

  // --- Subscriptions follow the configuration ---
  const subscribed = new Map<string, () => Promise<void>>();
  const refused = new Set<string>();
  const onEvent = async (ev: { type: string; payload: unknown; missed: number }): Promise<void> => {
    if (ev.type === "ConfigLoaded") await reconfigure(ev.payload);
    if (ev.type === "NewBlock" && can.chain) await blocks((ev.payload as { hash?: string } | null)?.hash);
    else await enqueue(ev);
  };

  // --- NewBlock follows the catch-up contract (docs/module-guide.md) ---
  // The cursor is the last block enqueued, written in the same storage transaction as its
  // deliveries. On every NewBlock, and at start, each block of the active chain after the
  // cursor is enqueued in height order (at most max_catch_up_blocks of them; older ones are
  // skipped with a warning), after walking back from a cursor that a reorg left off the active
  // chain; a block that does not build on the last one enqueued (a reorg during the catch-up)
  // sends it back to walking. Blocks enqueued while catching up carry event.catch_up = true.
  const wantsBlocks = (): boolean => settings.webhooks.some((w) => w.events.includes("NewBlock"));
  let blockQueue: Promise<unknown> = Promise.resolve();
  /** `live`: the hash of the block whose NewBlock event asked; every other block is a catch-up. */
  const blocks = (live?: string): Promise<void> => {
    const run = blockQueue.then(() => catchUpBlocks(live), () => catchUpBlocks(live));
    blockQueue = run.catch(() => undefined);
    return run;
  };
  const catchUpBlocks = async (live: string | undefined): Promise<void> => {
    if (!wantsBlocks()) return;
    // Again from the cursor when the chain changed under this catch-up (see below).
    for (;;) {
      const tip = await ctx.chain.getBlockHeight();
      const cursor = await ctx.storage.get<{ height: number; hash: string }>(OUTBOX, BLOCK_KEY);
      if (!cursor && live === undefined) {
        // A first start (or NewBlock newly configured): begin at the tip, with no history.
        const block = await ctx.chain.getBlockByHeight(tip, { include_hex: false });
        if (block) await ctx.storage.put(OUTBOX, BLOCK_KEY, { height: tip, hash: block.hash });
        return;
      }
      let from = tip;
      // The hash the next block must build on, when known.
      let parent: string | null = null;
      if (cursor) {
        let height = cursor.height;
        let hash = cursor.hash;
        // Walk back to the fork point: blocks that left the active chain are still readable by hash.
        for (let steps = 0; height >= 0 && steps <= settings.max_catch_up_blocks; steps++) {
          const active = await ctx.chain.getBlockByHeight(height, { include_hex: false });
          if (active?.hash === hash) {
            parent = hash;
            break;
          }
          const gone = await ctx.chain.getBlock(hash, { include_hex: false });
          if (!gone) break;
          hash = gone.header.prev_hash;
          height--;
        }
        from = height + 1;
      }
      if (tip - from + 1 > settings.max_catch_up_blocks) {
        const skip = tip - from + 1 - settings.max_catch_up_blocks;
        ctx.log.warn(`${skip} blocks (${from}..${from + skip - 1}) were mined while NewBlock was not delivered, more than max_catch_up_blocks (${settings.max_catch_up_blocks}): only the last ${settings.max_catch_up_blocks} are delivered`);
        from += skip;
        parent = null;
      }
      let forked = false;
      for (let h = from; h <= tip; h++) {
        const block = await ctx.chain.getBlockByHeight(h, { include_hex: false });
        if (!block) break;
        // A block that does not build on the last one enqueued: a reorg replaced that one
        // during this catch-up. Walk back again, so that the replacements are delivered too.
        if (parent !== null && block.header.prev_hash !== parent) {
          forked = true;
          break;
        }
        const payload = { hash: block.hash, height: block.height, time: block.header.time, tx_count: block.transactions.length };
        await enqueue({ type: "NewBlock", payload, missed: 0, catch_up: block.hash !== live }, [{ op: "put", key: BLOCK_KEY, value: { height: h, hash: block.hash } }]);
        parent = block.hash;
      }
      if (!forked) return;
    }
  };
  const resubscribe = async (): Promise<void> => {
    const wanted = new Set<string>(["ConfigLoaded"]);
    for (const w of settings.webhooks) for (const e of w.events) wanted.add(e);
    for (const [type, off] of subscribed) {
      if (!wanted.has(type)) {
        subscribed.delete(type);
        await off().catch(() => undefined);
      }
    }
    for (const type of wanted) {
      if (subscribed.has(type)) continue;
      try {
        subscribed.set(type, await ctx.events.subscribe(type as "ConfigLoaded", (ev) => onEvent(ev as { type: string; payload: unknown; missed: number })));
        refused.delete(type);
      } catch (err) {
        const e = err as { code?: string; message?: string };
        if (!refused.has(type)) {
          refused.add(type);
          ctx.log.error(`cannot subscribe to ${type}, so it is not delivered: ${e.code ?? ""} ${e.message ?? err}` + (e.code === "permission_denied" ? `; add it to subscribe_events in [modules.grants.governance-webhook]` : ""));
        }
      }
    }
  };
  const describe = (): void => {
    for (const p of settings.problems) ctx.log.error(`configuration: ${p}`);
    if (settings.webhooks.length === 0) {
      ctx.log.info(`no webhook configured: nothing is sent. Set webhook_url and secret (or webhooks = [{ url, secret, events }]) in [modules.module_configs.governance-webhook] and grant network_access for its host`);
    } else {
      for (const w of settings.webhooks) ctx.log.info(`webhook ${w.url}: ${w.events.join(", ")}`);
    }
  };
  const reconfigure = async (payload: unknown): Promise<void> => {
    const changed = (payload as { changed_sections?: unknown } | null)?.changed_sections;
    if (Array.isArray(changed) && !changed.some((c) => typeof c === "string" && c.includes("governance-webhook"))) return;
    settings = readSettings(ctx.config);
    ctx.log.info("configuration reloaded");
    for (const [id, lane] of lanes) {
      if (lane.seqs.length === 0 && !lane.busy && !settings.webhooks.some((w) => w.url === lane.url)) {
        if (lane.timer) clearTimeout(lane.timer);
        lanes.delete(id);
      }
    }
    describe();
    await resubscribe();
    if (!wantsBlocks()) await ctx.storage.delete(OUTBOX, BLOCK_KEY);
    // New URLs, secrets or limits: every lane looks again (held lanes may be configured now).
    for (const lane of lanes.values()) void pump(lane);
  };

  // --- Operators: the outbox state ---
  const state = async (params: Plain): Promise<Plain> => {
    const p = (Array.isArray(params) ? { dead: params[0] } : params ?? {}) as { dead?: unknown };
    const deadShown = Math.min(100, Math.max(0, Number(p.dead ?? 10) || 0));
    const laneStates: Plain[] = [];
    for (const lane of lanes.values()) {
      const head = lane.seqs.length ? await ctx.storage.get<Delivery>(OUTBOX, qKey(lane.id, lane.seqs[0]!)) : null;
      laneStates.push({
        url: lane.url,
        configured: settings.webhooks.some((w) => w.url === lane.url),
        pending: lane.seqs.length,
        delivered_since_start: lane.delivered,
        oldest: head ? { id: head.id, event: head.event.type, age_seconds: Math.round((Date.now() - head.created_at) / 1000), attempts: head.attempts, last_error: head.last_error } : null,
        next_attempt_in_ms: lane.wakeAt === null ? null : Math.max(0, lane.wakeAt - Date.now()),
        last_error: lane.lastError,
      });
    }
    const dead = deadShown ? await ctx.storage.iterate<DeadLetter>(DEAD, { reverse: true, limit: deadShown }) : [];
    return {
      node_id: settings.node_id,
      webhooks: settings.webhooks.map((w) => ({ url: w.url, events: w.events })),
      subscribed: [...subscribed.keys()],
      refused_subscriptions: [...refused],
      pending: pending(),
      max_outbox: settings.max_outbox,
      lanes: laneStates,
      dead_letters: deadCount,
      recent_dead_letters: dead.map(({ value: d }) => ({ id: d.id, seq: d.seq, url: d.url, event: d.event.type, attempts: d.attempts, reason: d.reason, dead_at: new Date(d.dead_at).toISOString() })),
      problems: settings.problems,
    };
  };
  if (can.rpc) await ctx.rpc.register("outbox", "Pending webhook deliveries per URL, limits, and the newest dead letters ({dead: N}, default 10)", state);

  describe();
  await resubscribe();
  if (!wantsBlocks()) await ctx.storage.delete(OUTBOX, BLOCK_KEY);
  else if (can.chain) await blocks(); // blocks mined while this module was stopped
  const held = pending();
  if (held > 0) ctx.log.info(`${held} deliveries pending; resuming them in order`);
  gauges();
  for (const lane of lanes.values()) void pump(lane);
}

let stopHook: (() => void) | undefined;

export function stop(): void {
  // Every delivery is already in the outbox; a request in flight is tried again at the next start.
  stopHook?.();
}
