// JSON from parties the host does not control (#8, chain/json-off.ts): the longest turn of this
// thread's loop (its CPU time, test/helpers/turns.ts) while the worst text each JSON reader can
// be sent is parsed by parseJson, against JSON.parse of the same text on the loop (as they all
// did before); and what JSON.parse costs on the loop for the worst shapes of JSON_ON_LOOP_BYTES,
// the size below which parseJson stays on the loop.
//
// Texts: the Core face's 31 MiB body of one string, and of 600,000 short strings (its token
// count, TOKENS_PER_CALL, allows 640,000); the host's RPC server with max_body_bytes raised to
// 16 MiB, a body of 900,000 0s (RPC_BODY_MAX_VALUES, 1,000,000, refuses more); the bitcoind client's answer of one 60 MB string.

import { JSON_ON_LOOP_BYTES, parseJson } from "../chain/json-off.ts";
import { watchTurns } from "../test/helpers/turns.ts";
import type { Benchmark, Row } from "./common.ts";
import { summarise } from "./stats.ts";

const ROUNDS = 3;
const MB = 1024 * 1024;

function texts(): Array<[string, () => Buffer]> {
  const call = (junk: string) => Buffer.from(`{"jsonrpc":"1.0","id":1,"method":"getblockcount","params":[],"junk":${junk}}`);
  return [
    ["Core face: a 31 MiB body of one string", () => call(`"${"a".repeat(31 * MB)}"`)],
    ["Core face: a 31 MiB body of 600,000 strings of 48 characters", () => call(`[${Array(600_000).fill(`"${"s".repeat(48)}"`).join(",")}]`)],
    ["RPC server (max_body_bytes 16 MiB): 900,000 0s (RPC_BODY_MAX_VALUES refuses more)", () => call(`[${"0,".repeat(900_000 - 1)}0]`)],
    ["bitcoind client: an answer of one 60 MB string", () => Buffer.from(`{"result":"${"a".repeat(60_000_000)}","error":null,"id":1}`)],
  ];
}

/** Shapes of JSON_ON_LOOP_BYTES that cost JSON.parse the most per byte. */
function smallShapes(): Array<[string, string]> {
  const n = JSON_ON_LOOP_BYTES;
  return [
    ["0s", `[${"0,".repeat(n / 2 - 2)}0]`],
    ["[{}] nested", `[${Array(Math.floor(n / 5)).fill("[{}]").join(",")}]`],
    ["short strings", `[${Array(Math.floor(n / 4)).fill('"a"').join(",")}]`],
    ["escapes", `"${"\\u0000".repeat(Math.floor(n / 6) - 1)}"`],
  ];
}

export const jsonoffBench: Benchmark = {
  name: "jsonoff",
  title: "JSON from parties the host does not control: the loop's longest turn parsing the worst text of each reader with parseJson, against JSON.parse on the loop",
  async run(): Promise<Row[]> {
    const rows: Row[] = [];
    for (const [name, shape] of smallShapes()) {
      const samples: number[] = [];
      for (let r = 0; r < 30; r++) {
        const t0 = performance.now();
        JSON.parse(shape);
        samples.push(performance.now() - t0);
      }
      rows.push({ what: `JSON.parse on the loop of ${JSON_ON_LOOP_BYTES} bytes (JSON_ON_LOOP_BYTES) of ${name}`, kind: "reference", unit: "ms", stats: summarise(samples) });
    }
    for (const [name, make] of texts()) {
      const off: number[] = [];
      const on: number[] = [];
      for (let r = 0; r < ROUNDS; r++) {
        const text = make();
        const turns = watchTurns();
        await new Promise((resolve) => setTimeout(resolve, 20));
        turns.reset();
        let value = await parseJson(text, { lane: "rpc-server", maxValues: 20_000_000, valuesName: "bench", maxDepth: Number.MAX_SAFE_INTEGER, depthName: "none" });
        off.push(turns.reset());
        value = null;
        await new Promise((resolve) => setTimeout(resolve, 20));
        turns.reset();
        value = JSON.parse(text.toString("utf8"));
        await new Promise((resolve) => setImmediate(resolve));
        on.push(turns.reset());
        await turns.stop();
        void value;
      }
      const baseline = `${name}: JSON.parse on the loop (before), longest turn`;
      rows.push({ what: `${name}: parseJson, longest turn of the loop`, kind: "result", unit: "ms", stats: summarise(off), vs: baseline });
      rows.push({ what: baseline, kind: "baseline", unit: "ms", stats: summarise(on) });
    }
    return rows;
  },
};
