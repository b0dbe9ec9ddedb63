// The isolate bootstrap (./in-isolate/main.ts and what it imports) as the one script the
// isolate host evaluates in each module's isolate before the module. The sources are
// TypeScript, type-checked and linted with the rest; esbuild bundles them into one IIFE.
// Built once per build of the isolate host script: by runtime.ts when it bundles the worker
// (development), by scripts/build-dist.mjs for dist/ (production). Either way the result is
// written into the worker as the constant __MODHOST_BOOTSTRAP__ (worker.ts).

import { fileURLToPath } from "node:url";
import path from "node:path";
import * as esbuild from "esbuild";
import { DEFAULT_BODY_LIMITS, MAX_VALUE_DEPTH } from "../../protocol/codec.ts";

const ENTRY = fileURLToPath(new URL("./in-isolate/main.ts", import.meta.url));

export interface BuiltBootstrap {
  /** The script (plain JavaScript, one IIFE). */
  code: string;
  /** The source files it was built from, relative to `root` (dist/build.json lists them). */
  inputs: string[];
}

/** Bundle the bootstrap; `root` is what `inputs` are relative to (the checkout). */
export async function buildBootstrap(root: string = path.resolve(path.dirname(ENTRY), "../../..")): Promise<BuiltBootstrap> {
  const result = await esbuild.build({
    entryPoints: [ENTRY],
    absWorkingDir: root,
    bundle: true,
    write: false,
    metafile: true,
    format: "iife",
    // The isolate's V8 is Node's own.
    platform: "neutral",
    target: "node24",
    logLevel: "silent",
    define: { __MODHOST_MAX_VALUE_DEPTH__: String(MAX_VALUE_DEPTH), __MODHOST_MAX_FRAME_DEPTH__: String(DEFAULT_BODY_LIMITS.maxDepth), __MODHOST_MAX_VALUES__: String(DEFAULT_BODY_LIMITS.maxValues), __MODHOST_MAX_TOTAL_STRING_BYTES__: String(DEFAULT_BODY_LIMITS.maxTotalStringBytes) },
  });
  return { code: result.outputFiles[0]!.text, inputs: Object.keys(result.metafile.inputs) };
}

/** The esbuild `define` that writes the bootstrap into the worker script. */
export function bootstrapDefine(built: BuiltBootstrap): Record<string, string> {
  return { __MODHOST_BOOTSTRAP__: JSON.stringify(built.code) };
}
