// Event fan-out in slices (host/events/bus.ts): an event published to many subscribers is
// queued for all of them at once, but each subscriber's sending asks the host's per-turn
// budget first and, past it, waits for a later turn. These tests give the bus a budget of 0
// ms (one piece of work per turn), so that what is sliced does not depend on the machine's
// speed: per-subscriber order, the drop and `missed` accounting, and who pays are checked.

import test from "ava";
import { EventBus, type BusEvent } from "../host/events/bus.ts";
import { TurnBudget } from "../runtime/turn.ts";
import { openSession, type SessionPair } from "./helpers/peer.ts";

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

async function until(cond: () => boolean, what: string, turns = 100_000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (cond()) return;
    await turn();
  }
  throw new Error(`not reached within ${turns} turns: ${what}`);
}

/** 200 subscribers (window 4, queue 8) of 16 events published at once, acknowledging window by window until all is sent. */
async function scenario(gate?: TurnBudget) {
  const bus = new EventBus(gate ? { gate } : {});
  const got: BusEvent[][] = [];
  const subs = Array.from({ length: 200 }, (_, k) => {
    got.push([]);
    const sub = bus.subscribe(`s${k}`, (ev) => got[k]!.push({ ...ev }), { window: 4, queueLimit: 8 });
    sub.types.add("x:tick");
    return sub;
  });
  for (let i = 1; i <= 16; i++) bus.publish("x:tick", { i });
  const atOnce = { sent: got.reduce((n, g) => n + g.length, 0), state: subs.map((s) => [s.inFlight, s.pending, s.droppedTotal]) };
  // A subscriber cannot acknowledge what it was not sent: acks ahead are cut to the last sent.
  subs[7]!.ack(1000);
  const ackedAhead = subs[7]!.inFlight;
  await until(() => {
    for (const [k, s] of subs.entries()) if (got[k]!.length > 0) s.ack(got[k]!.at(-1)!.seq);
    return subs.every((s) => s.pending === 0 && s.inFlight === 0);
  }, "every queue is sent and acknowledged");
  return { atOnce, ackedAhead, subs, seen: got.map((g) => g.map((e) => [e.seq, e.missed ?? 0, (e.payload as { i: number }).i])) };
}

test("a publish to 200 subscribers is sliced by the turn budget; each subscriber's order, window, drops and missed are those of the bus without it", async (t) => {
  const gate = new TurnBudget(0);
  const sliced = await scenario(gate);
  const whole = await scenario();
  // In the publishing turn only the first piece of work was done; the rest was parked.
  t.is(sliced.atOnce.sent, 1, "one event sent within the turn that published 16 to 200 subscribers");
  t.is(whole.atOnce.sent, 200 * 5, "without the budget: every window (and the drop notice) sent at once");
  t.true(sliced.subs.slice(1).every((s) => s.parkedTotal >= 1), "every other subscriber's sending was parked");
  t.true(gate.parkedTotal >= 199);
  // The window is filled at once though the sending waits: in flight, queued and dropped as without the budget.
  t.deepEqual(sliced.atOnce.state, whole.atOnce.state);
  t.is(sliced.ackedAhead, 5, "nothing of subscriber 7's window was sent yet: its ack of seq 1000 freed nothing");
  t.is(whole.ackedAhead, 4, "without the budget all five had been sent: the ack freed them and the next four went out");
  t.deepEqual(sliced.seen, whole.seen, "every subscriber got the same events, in the same order, with the same missed counts");
  for (const seen of sliced.seen) {
    t.is(seen.length + seen.reduce((n, [, missed]) => n + missed!, 0), 16, "every event received or counted as missed");
    t.deepEqual(seen.slice(-8).map(([, , i]) => i), [9, 10, 11, 12, 13, 14, 15, 16], "the newest 8 kept");
  }
});

test("a closed subscriber's parked sending sends nothing; the others still get theirs", async (t) => {
  const bus = new EventBus({ gate: new TurnBudget(0) });
  const got = [0, 0, 0];
  const subs = got.map((_, k) => {
    const sub = bus.subscribe(`s${k}`, () => got[k]!++, { window: 64, queueLimit: 64 });
    sub.types.add("x:tick");
    return sub;
  });
  for (let i = 0; i < 5; i++) bus.publish("x:tick", i);
  subs[1]!.close();
  await until(() => got[0] === 5 && got[2] === 5, "the open subscribers have every event");
  for (let i = 0; i < 5; i++) await turn();
  t.deepEqual(got, [5, 0, 5]);
});

test.serial("a hostile module publishes a 60 KiB event to 200 subscriber sessions: their sending is sliced across turns and charged to the publisher; every subscriber gets the payload whole, once", async (t) => {
  t.timeout(120_000);
  const gate = new TurnBudget(0);
  const bus = new EventBus({ gate });
  const subs: SessionPair[] = [];
  for (let k = 0; k < 200; k++) subs.push(await openSession(t, { module: `sub${k}`, bus, grants: ["subscribe_events"] }));
  await Promise.all(subs.map(async (s) => t.deepEqual((await s.peer.call("subscribe_events", { types: ["hostile:big"] })).result, ["hostile:big"])));
  const publisher = await openSession(t, { module: "hostile", bus, grants: ["publish_events"] });
  const payload = { blob: "z".repeat(60 * 1024) };
  const sliced0 = publisher.session.flowStats.slicedMs;
  const res = await publisher.peer.call("publish_event", { name: "big", payload });
  t.is(res.result, "hostile:big");
  await Promise.all(subs.map((s) => s.peer.next((f) => f.t === "event" && f.type === "hostile:big", 60_000)));
  for (const s of subs) {
    const events = s.peer.framesOf("event");
    t.is(events.length, 1);
    t.deepEqual(events[0]!.payload, payload);
    t.is(events[0]!.missed, undefined);
  }
  t.is(subs.filter((s) => s.session.eventStats.delivered === 1).length, 200, "each session delivered it once");
  t.true(bus.subscriptions.filter((s) => s.parkedTotal > 0).length >= 199, "all but the first subscriber's sending waited for a later turn");
  t.true(publisher.session.flowStats.slicedMs > sliced0, "the parked sending was charged to the publisher's host_cpu_ms_per_s");
});
