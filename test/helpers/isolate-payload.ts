// A payload of the test's choosing (test/fixtures/isolate-sandbox/payload.mjs) run in place of
// the worker script, under exactly the sandbox policy the manager gives a module's isolate host
// (isolateHostSandbox): what code that escaped the isolate would find.

import { fileURLToPath } from "node:url";
import { DEFAULT_LIMITS, type Limits } from "../../host/config.ts";
import { loadManifest } from "../../host/manifest.ts";
import { isolateHostSandbox, type IsolateSandboxOptions } from "../../runtime/isolate/runtime.ts";
import { sandboxSpawnSpec, type SandboxedSpawn } from "../../runtime/sandbox/index.ts";

export const PAYLOAD = fileURLToPath(new URL("../fixtures/isolate-sandbox/payload.mjs", import.meta.url));

export async function payloadSpawn(
  manifestFile: string,
  bundle: string,
  args: string[],
  opts: IsolateSandboxOptions & { limits?: Partial<Limits> } = {},
): Promise<SandboxedSpawn> {
  const manifest = await loadManifest(manifestFile);
  const { spec, policy } = await isolateHostSandbox(manifest, bundle, { ...DEFAULT_LIMITS, ...opts.limits }, opts);
  // The worker script's place in the command line: node --no-node-snapshot --max-old-space-size=N <script> ...
  const script = spec.args.findIndex((a) => a.endsWith(".mjs"));
  if (script < 0) throw new Error(`no script in ${spec.args.join(" ")}`);
  return sandboxSpawnSpec(
    { ...spec, args: [...spec.args.slice(0, script), PAYLOAD, ...args] },
    { ...policy, readOnly: [...(policy.readOnly ?? []), PAYLOAD] },
  );
}
