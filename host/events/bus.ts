// The event bus. Every subscriber has its own bounded FIFO queue and its own sequence
// numbers. Delivery to a subscriber is windowed: at most `window` events are in flight until
// the subscriber acknowledges them, so a slow module holds back only its own queue. When a
// queue is full the oldest queued event is dropped and counted, and the next event delivered
// carries `missed`, the number dropped since the previous delivery: nothing is lost silently.
//
// A queue is bounded in bytes too (`queueBytes`, the operator's event_queue_bytes): a module
// event's payload may be 64 KiB, so 1024 of them would hold 64 MiB (and their encodings) for one
// subscriber that does not read. Past either bound the oldest are dropped the same way.
//
// A subscriber learns of drops at once: when the first drop since its last acknowledgement
// happens while its window is full, the next queued event is sent right away anyway, carrying
// `missed` (so at most window + 1 events are ever unacknowledged). Without this, a slow
// subscriber would hear of drops only after working through the whole window of old events.
//
// Delivery is sliced by the host's per-turn budget (runtime/turn.ts, given as `gate`): an
// event published to 200 subscribers is queued for all of them at once (cheap, and the drop
// accounting stays exact), but each subscriber's sending (an envelope and a frame each, its
// payload encoded once per publish) asks the budget first; past it, that subscriber's sending
// is parked and resumed in a later turn, after the work parked before it. Only the sending
// waits: events are still admitted to the window at once (counted in flight, in an outbox of
// at most window + 1), so a parked sending causes no drop the window would have avoided, and
// a subscriber cannot acknowledge what it was not sent yet. Each subscriber's events go out
// in order. The time a resumed sending takes is charged to the account it was parked under
// (chain/slices.ts sliceAccount: the publishing module's host_cpu_ms_per_s).

import { performance } from "node:perf_hooks";
import { sliceAccount } from "../../chain/slices.ts";
import type { ReadGate } from "../../protocol/channel.ts";

export interface BusEvent {
  seq: number;
  type: string;
  payload: unknown;
  time: number;
  missed?: number;
  /**
   * The same object for every subscriber of one publish(): a sender may keep the payload's
   * encoding with it, so that a payload is encoded once per publish, not once per subscriber.
   */
  shared?: object;
  /** The payload's size as the publisher measured it (an estimate of its encoding), if known. */
  bytes?: number;
}

/** What an event whose size was not measured counts against `queueBytes` (host events are small). */
const UNMEASURED_EVENT_BYTES = 256;

export type Deliver = (event: BusEvent) => void;

export interface SubscriberOptions {
  /** Max queued (not yet sent) events before the oldest are dropped. */
  queueLimit: number;
  /** Max sent but unacknowledged events. Infinity = no acks needed. */
  window: number;
  /** Max bytes of queued (not yet sent) payloads before the oldest are dropped. */
  queueBytes: number;
  /**
   * Whether the subscriber may hold `bytes` more beside what every module makes the host hold
   * ([host] module_bytes_mb, protocol/host-bytes.ts); when not, its queue does not grow: the
   * oldest are dropped for the new one, counted in `missed` like those over queueBytes.
   */
  admits?: (bytes: number) => boolean;
}

export interface EventBusOptions {
  /** The budget per turn of the loop that sending shares with other work (none: sent at once). */
  gate?: ReadGate;
}

export class Subscription {
  readonly types = new Set<string>();
  private queue: BusEvent[] = [];
  private head = 0;
  private nextSeq = 1;
  /** Sequence numbers sent and not yet acknowledged, in order (dropped events never count). */
  private unacked: number[] = [];
  private unackedHead = 0;
  private missed = 0;
  private closed = false;
  /** Bytes of the payloads queued and not yet sent (see SubscriberOptions.queueBytes). */
  private queuedBytes = 0;
  /** An over-the-window event was sent to announce drops; cleared by the next acknowledgement. */
  private noticeOut = false;
  /** Sending waits for the gate (a later turn): nothing is sent until it resumes. */
  private parked = false;
  /** Admitted to the window (in flight) and not yet sent, in order: at most window + 1. */
  private outbox: BusEvent[] = [];
  private outHead = 0;
  /** The seq of the last event sent (acknowledgements beyond it are cut to it). */
  private lastDelivered = 0;
  /** Total events dropped over this subscription's life. */
  droppedTotal = 0;
  deliveredTotal = 0;
  /** Times this subscriber's sending was parked for a later turn (tests and metrics). */
  parkedTotal = 0;

  constructor(
    readonly id: string,
    private readonly deliver: Deliver,
    private readonly opts: SubscriberOptions,
    private readonly onClose: (s: Subscription) => void,
    private readonly gate?: ReadGate,
  ) {}

  /** Called by the bus. */
  offer(type: string, payload: unknown, time: number, shared?: object, bytes = UNMEASURED_EVENT_BYTES): void {
    if (this.closed) return;
    // Past its fair part of the host's cap over all modules, the queue holds no more than it does now.
    const hostBytes = this.queuedBytes > 0 && this.opts.admits?.(bytes) === false ? this.queuedBytes : Infinity;
    this.queue.push(shared ? { seq: this.nextSeq++, type, payload, time, shared, bytes } : { seq: this.nextSeq++, type, payload, time, bytes });
    this.queuedBytes += bytes;
    let dropped = false;
    // The newest event is always kept: a queue over its bytes holds at least the one just offered.
    while (this.queue.length - this.head > this.opts.queueLimit || ((this.queuedBytes > this.opts.queueBytes || this.queuedBytes > hostBytes) && this.queue.length - this.head > 1)) {
      const old = this.queue[this.head]!;
      this.queue[this.head] = undefined as unknown as BusEvent; // let its payload go now
      this.head++;
      this.queuedBytes -= old.bytes ?? 0;
      this.missed++;
      this.droppedTotal++;
      dropped = true;
    }
    if (dropped && !this.noticeOut && this.opts.window !== Infinity && this.inFlight >= this.opts.window && this.head < this.queue.length) {
      this.noticeOut = true;
      this.admitNext();
    }
    this.pump();
  }

  /** Bytes of the payloads waiting to be sent (limit: queueBytes). */
  get pendingBytes(): number {
    return this.queuedBytes;
  }

  /** The subscriber handled everything up to `seq` (acks are cumulative). */
  ack(seq: number): void {
    // Only what was sent can be acknowledged: admitted events still waiting for the gate stay in flight.
    if (seq > this.lastDelivered) seq = this.lastDelivered;
    const before = this.unackedHead;
    while (this.unackedHead < this.unacked.length && this.unacked[this.unackedHead]! <= seq) this.unackedHead++;
    if (this.unackedHead === before) return;
    this.noticeOut = false;
    if (this.unackedHead > 1024 && this.unackedHead * 2 > this.unacked.length) {
      this.unacked = this.unacked.slice(this.unackedHead);
      this.unackedHead = 0;
    }
    this.pump();
  }

  get pending(): number {
    return this.queue.length - this.head;
  }

  get inFlight(): number {
    return this.unacked.length - this.unackedHead;
  }

  /**
   * Admit what the window allows, then send what was admitted while the gate's budget allows;
   * `resumed`: the gate's turn, when one event goes out whatever the budget. Admission (the
   * window's accounting) never waits for the gate, so a parked sending causes no drop that the
   * window would have avoided; only the sending (the envelope and the frame) waits.
   */
  private pump(resumed = false): void {
    let first = resumed;
    for (;;) {
      this.admit();
      if (this.parked || this.closed || this.outHead >= this.outbox.length) break;
      if (!first && this.gate?.overBudget()) {
        this.parked = true;
        this.parkedTotal++;
        this.gate.park(this.resume);
        break;
      }
      first = false;
      const ev = this.outbox[this.outHead]!;
      this.outbox[this.outHead++] = undefined as unknown as BusEvent;
      this.lastDelivered = ev.seq;
      this.deliveredTotal++;
      this.deliver(ev);
    }
    if (this.outHead >= this.outbox.length) {
      this.outbox = [];
      this.outHead = 0;
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }

  /**
   * Queue -> window: a windowed subscriber's events up to its window (so the outbox never holds
   * more than window + 1); an unwindowed one's one at a time, when the last one was sent (while
   * its sending is parked, its events wait in the queue, under its limits).
   */
  private admit(): void {
    while (!this.closed && this.head < this.queue.length && this.inFlight < this.opts.window && (this.opts.window !== Infinity || this.outHead >= this.outbox.length)) this.admitNext();
  }

  /** The gate's turn came: send what the window allows, charging the time to the parker's account. */
  private readonly resume = (): void => {
    this.parked = false;
    const t0 = performance.now();
    this.pump(true);
    sliceAccount.getStore()?.(performance.now() - t0);
  };

  /** The next queued event into the window (counted in flight) and the outbox, to be sent in order. */
  private admitNext(): void {
    const ev = this.queue[this.head]!;
    this.queue[this.head++] = undefined as unknown as BusEvent;
    this.queuedBytes -= ev.bytes ?? 0;
    if (this.missed > 0) {
      ev.missed = this.missed;
      this.missed = 0;
    }
    // Unwindowed subscribers count as having handled what they were given.
    if (this.opts.window !== Infinity) this.unacked.push(ev.seq);
    this.outbox.push(ev);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.queue = [];
    this.head = 0;
    this.outbox = [];
    this.outHead = 0;
    this.queuedBytes = 0;
    this.onClose(this);
  }
}

export class EventBus {
  private readonly subs = new Set<Subscription>();
  private publishedTotal = 0;

  constructor(private readonly options: EventBusOptions = {}) {}

  subscribe(id: string, deliver: Deliver, opts: Partial<SubscriberOptions> = {}): Subscription {
    const sub = new Subscription(id, deliver, { queueLimit: opts.queueLimit ?? 1024, window: opts.window ?? Infinity, queueBytes: opts.queueBytes ?? Infinity, ...(opts.admits ? { admits: opts.admits } : {}) }, (s) => this.subs.delete(s), this.options.gate);
    this.subs.add(sub);
    return sub;
  }

  /**
   * Deliver `payload` to every subscriber of `type`. Payloads must be treated as immutable.
   * `bytes`: the payload's measured size, counted against each queue's `queueBytes`.
   */
  publish(type: string, payload: unknown, bytes?: number): void {
    this.publishedTotal++;
    const time = Date.now();
    const shared = {};
    for (const sub of this.subs) {
      if (sub.types.has(type)) sub.offer(type, payload, time, shared, bytes);
    }
  }

  /**
   * Deliver to every subscriber of `type` a payload made for it (`payloadFor(subscriber id)`):
   * for events whose content depends on who receives it, such as ConfigLoaded, which carries
   * each module's own configuration and nobody else's.
   */
  publishEach(type: string, payloadFor: (subscriber: string) => unknown): void {
    this.publishedTotal++;
    const time = Date.now();
    for (const sub of this.subs) {
      if (sub.types.has(type)) sub.offer(type, payloadFor(sub.id), time);
    }
  }

  /**
   * Resolves true once every subscriber of `type` has handled (acknowledged) everything sent
   * to it, or false after `timeoutMs`. Used to honour NodeShutdown's timeout.
   */
  async settled(type: string, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    const busy = () => [...this.subs].some((s) => s.types.has(type) && (s.pending > 0 || s.inFlight > 0));
    while (busy()) {
      if (Date.now() >= deadline) return false;
      await new Promise((r) => setTimeout(r, 20));
    }
    return true;
  }

  get published(): number {
    return this.publishedTotal;
  }

  get subscriptions(): readonly Subscription[] {
    return [...this.subs];
  }
}
