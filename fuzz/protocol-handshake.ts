// Fuzz target: the handshake. Every input is the first bytes a fresh module connection sends
// (mutated hellos, other kinds, junk). Whatever they are, the host ends up in one of three
// states and says so consistently: open (it sent one welcome, nothing refused it), closed
// (it sent a goodbye with a reason, or the framing broke), or still waiting for a hello.

import { encodeBody } from "../protocol/codec.ts";
import { protocolVectorFrames, type FuzzTarget } from "./driver.ts";
import { connect, frame, MODULE, shared, turns, type Shared } from "./session-harness.ts";

export async function handshakeTarget(s?: Shared): Promise<FuzzTarget> {
  const own = s === undefined;
  const env = s ?? (await shared());
  const hello = frame(encodeBody({ t: "hello", protocol: [1, 1], module: MODULE, version: "1.0.0", sdk: "fuzz" }));
  const seeds = [hello, frame(encodeBody({ t: "hello", protocol: [1, 3], module: MODULE, version: "1" })), ...(await protocolVectorFrames())];
  seeds.push(Buffer.concat([hello, frame(encodeBody({ t: "request", id: 1, method: "get_block_height", params: {} }))]));
  return {
    name: "protocol-handshake",
    seeds,
    async run(input) {
      const c = connect(env);
      try {
        c.peer.write(input);
        await turns(4);
        if (c.junk > 0) throw new Error("the host sent a frame that does not decode");
        const welcomes = c.received.filter((f) => f.t === "welcome").length;
        const goodbyes = c.received.filter((f) => f.t === "goodbye").length;
        if (welcomes > 1) throw new Error(`${welcomes} welcomes`);
        if (welcomes === 1 && goodbyes === 0 && !c.session.isOpen && !c.closed) throw new Error("welcomed but not open");
        if (goodbyes > 0 && !c.closed) throw new Error("said goodbye but did not close");
        if (goodbyes > 1) throw new Error(`${goodbyes} goodbyes`);
        if (welcomes === 0 && c.session.isOpen) throw new Error("open without a welcome");
      } finally {
        c.close();
      }
    },
    async close() {
      if (own) await env.close();
    },
  };
}
