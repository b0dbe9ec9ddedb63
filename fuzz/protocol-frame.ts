// Fuzz target: the frame reader. Any byte stream, cut into chunks at arbitrary points, gives
// whole bodies (each 1..max bytes, none invented) or a FramingError; nothing else. Half the
// inputs go to a decoder that gathers every body over 16 bytes as it arrives (the path of large
// frames), and what it holds for a frame in progress stays within 3x what arrived plus ~130 KiB.

import { FrameDecoder, FramingError, GATHER_FROM_BYTES } from "../protocol/frame.ts";
import { protocolVectorFrames, Rng, type FuzzTarget } from "./driver.ts";

export async function frameTarget(maxFrameBytes = 4096): Promise<FuzzTarget> {
  const rng = new Rng(7);
  return {
    name: "protocol-frame",
    seeds: await protocolVectorFrames(),
    run(input) {
      const decoder = new FrameDecoder(maxFrameBytes, rng.below(2) === 0 ? 16 : GATHER_FROM_BYTES);
      const buf = Buffer.from(input);
      let bodies = 0;
      let at = 0;
      try {
        while (at < buf.length) {
          const n = 1 + rng.below(Math.min(64, buf.length - at));
          for (const body of decoder.push(buf.subarray(at, at + n))) {
            if (body.length === 0 || body.length > maxFrameBytes) throw new Error(`a body of ${body.length} bytes came out`);
            bodies += 4 + body.length;
          }
          at += n;
          if (decoder.held > 3 * decoder.buffered + 130 * 1024) throw new Error(`${decoder.held} bytes held for ${decoder.buffered} arrived`);
        }
      } catch (err) {
        if (err instanceof FramingError) return;
        throw err;
      }
      if (decoder.error) return; // the frames before a bad length came out; the rest is lost
      if (bodies + decoder.buffered !== buf.length) throw new Error(`bytes lost or invented: ${bodies} in frames + ${decoder.buffered} buffered != ${buf.length}`);
    },
  };
}
