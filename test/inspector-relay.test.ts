// The isolate host's inspector relay (runtime/isolate/inspector-relay.ts), on its own: against a
// real isolate with V8's inspector, and against a session that loses wake-ups on purpose.

import test from "ava";
import ivm from "isolated-vm";
import { InspectorRelay, NUDGE_ID, NUDGE_MS, type InspectorSessionLike } from "../runtime/isolate/inspector-relay.ts";

type Piece = [string, boolean];
const texts = (pieces: Piece[]) => pieces.map(([text]) => text);

/** A debugger's side of the relay: commands out, whatever came back gathered by id and method. */
class Debugger {
  private id = 0;
  readonly seen: any[] = [];
  constructor(private readonly relay: InspectorRelay) {}
  /** Sends a command, then long-polls until its answer comes (or deadlineMs passes: undefined). */
  async command(method: string, params: Record<string, unknown> = {}, deadlineMs = 2000): Promise<any> {
    const id = ++this.id;
    let pieces = (await this.relay.invoke({ messages: [JSON.stringify({ id, method, params })], wait_ms: 0 })).messages;
    const until = Date.now() + deadlineMs;
    for (;;) {
      for (const text of texts(pieces)) this.seen.push(JSON.parse(text));
      const answer = this.seen.find((m) => m.id === id);
      if (answer) return answer;
      if (Date.now() >= until) return undefined;
      pieces = (await this.relay.invoke({ wait_ms: until - Date.now() })).messages;
    }
  }
  async notification(method: string, from: number): Promise<any> {
    for (;;) {
      const n = this.seen.slice(from).find((m) => m.method === method);
      if (n) return n;
      for (const text of texts((await this.relay.invoke({ wait_ms: 2000 })).messages)) this.seen.push(JSON.parse(text));
    }
  }
}

test("2,000 pauses of a real isolate, each answered at once through the relay: every evaluateOnCallFrame is answered within 2 s, though isolated-vm loses a few of these wake-ups (the log counts those answered after a nudge), and the nudges' own answers never reach the debugger", async (t) => {
  t.timeout(60_000);
  const isolate = new ivm.Isolate({ memoryLimit: 32, inspector: true });
  const context = await isolate.createContext({ inspector: true });
  const relay = new InspectorRelay({ open: () => isolate.createInspectorSession(), budget: 1 << 20, warn: () => {} });
  const dbg = new Debugger(relay);
  t.truthy(await dbg.command("Debugger.enable"));
  const ROUNDS = 2000;
  let slow = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const from = dbg.seen.length;
    const run = context.eval(`let x${round} = ${round}; debugger; 0`, { promise: false });
    const paused = await dbg.notification("Debugger.paused", from);
    const started = Date.now();
    const answer = await dbg.command("Debugger.evaluateOnCallFrame", { callFrameId: paused.params.callFrames[0].callFrameId, expression: `x${round}` });
    if (answer === undefined) {
      t.fail(`pause ${round}: evaluateOnCallFrame was not answered within 2 s`);
      await dbg.command("Debugger.resume"); // a dispatch wakes the pause loop: the isolate can go
      await run;
      break;
    }
    if (Date.now() - started >= NUDGE_MS[0]) slow++;
    t.is(answer.result.result.value, round);
    t.truthy(await dbg.command("Debugger.resume"));
    await run;
  }
  t.false(dbg.seen.some((m) => m.id === NUDGE_ID), "the relay's own answers are dropped");
  t.log(`${ROUNDS} pauses; ${slow} answered only after a nudge`);
  relay.close();
  isolate.dispose();
});

/** A session that answers each command at once, except those it is told to lose until the next dispatch. */
class LossySession implements InspectorSessionLike {
  onResponse: (callId: number, message: string) => void = () => {};
  onNotification: (message: string) => void = () => {};
  readonly dispatched: string[] = [];
  private queue: string[] = [];
  constructor(private lose: number) {}
  dispatchProtocolMessage(message: string): void {
    this.dispatched.push(message);
    this.queue.push(message);
    if (this.lose > 0) {
      this.lose--;
      return;
    }
    for (const m of this.queue.splice(0)) {
      const { id } = JSON.parse(m) as { id: number };
      this.onResponse(id, JSON.stringify({ id, result: {} }));
    }
  }
  dispose(): void {}
}

for (const lost of [0, 1, 2]) {
  test(`a session that loses ${lost} wake-up(s) in a row: the command is answered ${lost === 0 ? "at once and no nudge is sent" : `after nudge ${lost} (${NUDGE_MS[lost - 1]} ms)`}, and the nudge's answer is dropped`, async (t) => {
    const session = new LossySession(lost);
    const relay = new InspectorRelay({ open: () => session, budget: 1 << 20, warn: () => {} });
    const started = Date.now();
    const first = await relay.invoke({ messages: ['{"id":1,"method":"Runtime.evaluate"}'], wait_ms: 2000 });
    const elapsed = Date.now() - started;
    t.deepEqual(texts(first.messages), ['{"id":1,"result":{}}']);
    if (lost > 0) t.true(elapsed >= NUDGE_MS[lost - 1]! - 5, `answered after ${elapsed} ms`);
    else t.true(elapsed < NUDGE_MS[0], `answered after ${elapsed} ms`);
    await new Promise((resolve) => setTimeout(resolve, NUDGE_MS[NUDGE_MS.length - 1]! + 100));
    t.is(session.dispatched.length, 1 + lost, "one nudge per lost wake-up, none once answered");
    t.deepEqual(texts((await relay.invoke({ wait_ms: 0 })).messages), [], "the nudge's answer never reaches the debugger");
  });
}

test("a message larger than one result goes in pieces; past the backlog the session is closed and the operator told", async (t) => {
  const session = new LossySession(0);
  const warnings: string[] = [];
  const relay = new InspectorRelay({ open: () => session, budget: 10, warn: (m) => warnings.push(m), backlogBytes: 100 });
  await relay.invoke({ messages: [] });
  session.onNotification("a".repeat(25));
  const pieces: Piece[] = [];
  for (let i = 0; i < 3; i++) pieces.push(...(await relay.invoke({ wait_ms: 0 })).messages);
  t.deepEqual(pieces, [["a".repeat(10), false], ["a".repeat(10), false], ["a".repeat(5), true]]);
  session.onNotification("b".repeat(101));
  t.regex(warnings[0] ?? "", /more than 100 bytes of debugger messages were waiting/);
  t.deepEqual((await relay.invoke({ wait_ms: 0 })).messages, []);
});
