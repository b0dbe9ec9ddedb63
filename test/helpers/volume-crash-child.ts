// Mounts one module's data volume as a host's start does (runtime/sandbox/volume.ts's
// mountVolume), then releases it and stops. Run under test/helpers/volume-crash-hook.mjs, which
// kills it at the step the test names. Used by test/faults-round16.test.ts.
//   VOLUME_CRASH_STEP=N node --import ./volume-crash-hook.mjs volume-crash-child.ts ROOT NAME MAX_BYTES MAX_FILES
// (Node's own type stripping runs it: no tsx to start in each of a sweep's children.)

import { mountVolume } from "../../runtime/sandbox/volume.ts";
import { stopToolRunner } from "../../runtime/sandbox/tool-runner.ts";

const [root, name, maxBytes, maxFiles] = process.argv.slice(2) as [string, string, string, string];
const v = await mountVolume(root, name, { maxBytes: Number(maxBytes), maxEntries: Number(maxFiles) });
await v.release();
await stopToolRunner();
