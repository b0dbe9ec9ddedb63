// The byte bounds the small servers share (chain/http-caps.ts): ByteRoom (request bodies in
// progress: the JSON-RPC server's BODY_BYTES_IN_PROGRESS, the Core facade's
// FACADE_BODY_BYTES_IN_PROGRESS) and AnswerBytes (answers held by requests in progress:
// ANSWER_BYTES_HELD, FACADE_ANSWER_BYTES_HELD), on their own. Under the servers they are
// attacked in test/hostile-round25-remote.test.ts and test/facade-slices.test.ts.

import test from "ava";
import { EventEmitter } from "node:events";
import type { ServerResponse } from "node:http";
import { AnswerBytes, ByteRoom } from "../chain/http-caps.ts";

const response = () => new EventEmitter() as unknown as ServerResponse;

test("ByteRoom: bodies that fit are taken at once, the rest wait in order until room is let go; one that finds nothing held is taken whatever its size; a waiter whose client closes leaves the line", async (t) => {
  const room = new ByteRoom(100);
  t.true(room.take(60, response()));
  const second = room.take(60, response());
  t.true(second instanceof Promise, "60 more would pass 100: it waits");
  const gone = response();
  const third = room.take(10, gone);
  t.true(third instanceof Promise, "behind a waiter, even what fits waits (in order)");
  gone.emit("close");
  t.false(await third, "its client closed: it is not granted");
  room.release(60);
  t.true(await second);
  t.is(room.held, 60);
  room.release(60);
  t.true(room.take(500, response()), "nothing held: a body larger than the cap is taken alone");
  t.is(room.waited, 2);
});

test("AnswerBytes: answers past the cap are refused and counted, one alone is made whole, a refused answer's bytes come back, and a share that ended holds and counts nothing more", (t) => {
  const pool = new AnswerBytes(100);
  const a = pool.share();
  const b = pool.share();
  a.startAnswer();
  t.true(a.take(250), "alone (nothing held anywhere): made whole past the cap");
  b.startAnswer();
  t.false(b.take(1), "another request's answer past the cap is refused");
  t.is(pool.refused, 1);
  b.force(5);
  t.is(pool.held, 255, "error answers are counted whatever is held");
  a.startAnswer();
  t.false(a.take(10), "not alone any more (it holds an earlier answer, and b holds 5)");
  a.end();
  t.is(pool.held, 5, "an ended share gives back everything");
  t.false(a.take(1));
  a.force(1000);
  t.is(pool.held, 5, "and counts nothing more (a batch going on for a client that left once held 66 MB for good this way)");
  b.startAnswer();
  t.true(b.take(50));
  t.true(b.take(40));
  t.false(b.take(20), "5 + 90 + 20 passes 100");
  b.dropAnswer();
  t.is(pool.held, 5, "the refused answer's pieces are given back, the earlier error's kept");
  b.end();
  t.is(pool.held, 0);
});
