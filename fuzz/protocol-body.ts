// Fuzz target: the body decoder and message validation. Any body is decoded, validated as a
// module message and as a host message, and its envelope read; only CodecError and
// MessageError may come out. What decodes must be accepted by the encoder too and round-trip
// to the same value (what one side accepts, the other can send back).

import { isDeepStrictEqual } from "node:util";
import { CodecError, decodeBody, encodeBody, readEnvelope } from "../protocol/codec.ts";
import { MessageError, parseHostMessage, parseModuleMessage } from "../protocol/messages.ts";
import { protocolVectorFrames, type FuzzTarget } from "./driver.ts";

export async function bodyTarget(): Promise<FuzzTarget> {
  return {
    name: "protocol-body",
    seeds: (await protocolVectorFrames()).map((f) => f.subarray(4)),
    run(input) {
      const env = readEnvelope(input);
      if (env.id !== undefined && !(Number.isSafeInteger(env.id) && env.id > 0)) throw new Error(`envelope id ${env.id}`);
      let value: unknown;
      try {
        value = decodeBody(input);
      } catch (err) {
        if (err instanceof CodecError) return;
        throw err;
      }
      const again = decodeBody(encodeBody(value));
      if (!isDeepStrictEqual(normalise(again), normalise(value))) throw new Error("decode(encode(value)) differs from value");
      for (const parse of [parseModuleMessage, parseHostMessage]) {
        try {
          parse(structuredClone(value));
        } catch (err) {
          if (!(err instanceof MessageError)) throw err;
        }
      }
    },
  };
}

/** Binary comes back as a Buffer either way; compare bytes. */
function normalise(v: unknown): unknown {
  if (v instanceof Uint8Array) return Buffer.from(v).toString("hex");
  if (Array.isArray(v)) return v.map(normalise);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, normalise(x)]));
  return v;
}
