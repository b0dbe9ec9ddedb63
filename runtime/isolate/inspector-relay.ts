// The inspector relay of an isolate host (development only): the host sends the debugger's
// Chrome DevTools Protocol messages in "inspector" invocations and gets the isolate's answers
// and notifications back in their results, long-polling (wait_ms) when there are none yet. A
// message larger than fits one result is sent in pieces. What waits for the host is bounded
// (INSPECTOR_BACKLOG_BYTES): a debugger that stops reading loses its session, not the module.
//
// isolated-vm loses a wake-up: a message dispatched while the isolate is entering its pause
// loop (after V8 sent Debugger.paused, before the loop waits) is queued, and the loop sleeps
// without running it until another message comes. The debugger, waiting for the answer, sends
// none, and hangs (1-3 % of pauses answered at once from a direct loop on this machine, ~0.4 %
// through this relay, 1 of 3 CI runs of test/debug.test.ts's one pause). So when nothing has come back NUDGE_MS after a dispatch, the relay dispatches a
// message of its own (an unknown method, answered with an error under NUDGE_ID and dropped
// here): it wakes the loop, which runs everything queued, in order.

/** What the relay needs of isolated-vm's InspectorSession. */
export interface InspectorSessionLike {
  onResponse: (callId: number, message: string) => void;
  onNotification: (message: string) => void;
  dispatchProtocolMessage(message: string): void;
  dispose(): void;
}

const INSPECTOR_BACKLOG_BYTES = 256 * 1024 * 1024;
/** The id of the relay's own wake-up message: debuggers number their commands from 1. */
export const NUDGE_ID = -1;
const NUDGE = JSON.stringify({ id: NUDGE_ID, method: "Modhost.wake" });
/** When a dispatch still has nothing back, the relay nudges: at most this many times per dispatch. */
export const NUDGE_MS = [50, 500] as const;
/** The longest long-poll a host may ask for. */
const MAX_WAIT_MS = 5000;

export interface InspectorRelayOptions {
  /** Opens the isolate's inspector session (at the first invocation after none or a close). */
  open: () => InspectorSessionLike;
  /** Characters of messages in one result (the frame budget less room for the rest). */
  budget: number;
  warn: (message: string) => void;
  backlogBytes?: number;
}

export class InspectorRelay {
  private session: InspectorSessionLike | undefined;
  private outbox: string[] = [];
  private queued = 0;
  private wake: (() => void) | undefined;
  /** Responses seen (the relay's own included): a dispatch with none after it is nudged. */
  private answered = 0;
  private readonly backlogBytes: number;

  constructor(private readonly opts: InspectorRelayOptions) {
    this.backlogBytes = opts.backlogBytes ?? INSPECTOR_BACKLOG_BYTES;
  }

  /** One "inspector" invocation: { messages?: string[], wait_ms?: number } or { close: true }. */
  async invoke(params: Record<string, unknown>): Promise<{ messages: [string, boolean][] }> {
    if (params.close === true) {
      this.close();
      return { messages: [] };
    }
    const session = this.session ?? this.openSession();
    const messages = Array.isArray(params.messages) ? params.messages : [];
    const before = this.answered;
    for (const m of messages) session.dispatchProtocolMessage(String(m));
    if (messages.length > 0) this.nudgeAfter(before);
    const waitMs = Math.min(MAX_WAIT_MS, Math.max(0, Number(params.wait_ms) || 0));
    if (this.outbox.length === 0 && waitMs > 0) {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          if (this.wake === done) this.wake = undefined;
          resolve();
        };
        const timer = setTimeout(done, waitMs);
        this.wake = done;
      });
    }
    return { messages: this.take() };
  }

  close(): void {
    try {
      this.session?.dispose();
    } catch {
      // already gone with the isolate
    }
    this.session = undefined;
    this.outbox = [];
    this.queued = 0;
  }

  private openSession(): InspectorSessionLike {
    const session = this.opts.open();
    session.onResponse = (id, message) => {
      this.answered++;
      if (id !== NUDGE_ID) this.push(message);
    };
    session.onNotification = (message) => this.push(message);
    this.session = session;
    return session;
  }

  private nudgeAfter(seen: number): void {
    for (const ms of NUDGE_MS) {
      setTimeout(() => {
        if (!this.session || this.answered !== seen) return;
        try {
          this.session.dispatchProtocolMessage(NUDGE);
        } catch {
          // the session went with the isolate
        }
      }, ms).unref();
    }
  }

  private push(message: string): void {
    this.queued += message.length;
    if (this.queued > this.backlogBytes) {
      this.close();
      this.opts.warn(`inspector session closed: more than ${this.backlogBytes} bytes of debugger messages were waiting for the host`);
      return;
    }
    this.outbox.push(message);
    this.wake?.();
  }

  /** What fits one result: whole messages, or pieces of one large message. */
  private take(): [string, boolean][] {
    const out: [string, boolean][] = [];
    const budget = this.opts.budget;
    let size = 0;
    while (this.outbox.length > 0 && size < budget) {
      const next = this.outbox[0]!;
      const room = budget - size;
      if (next.length <= room) {
        out.push([next, true]);
        size += next.length;
        this.outbox.shift();
        this.queued -= next.length;
      } else {
        out.push([next.slice(0, room), false]);
        this.outbox[0] = next.slice(room);
        this.queued -= room;
        break;
      }
    }
    return out;
  }
}
