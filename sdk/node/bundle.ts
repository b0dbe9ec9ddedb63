// Packaging a native module written in Node.js: its entry file and everything it imports (this
// SDK's ModuleClient, msgpackr, the module's own files) bundled with esbuild into ONE
// executable ESM script. A sandboxed native module sees only the system directories and its
// own directory, so it cannot import from a node_modules elsewhere; the bundle needs nothing
// but `node` on the PATH. Write it into the module directory with mode 0755 and name it as the
// manifest's entry_point (a .mjs name, with runtime = "native").

import * as esbuild from "esbuild";

export async function bundleNodeModule(entry: string): Promise<string> {
  const result = await esbuild.build({
    entryPoints: [entry],
    bundle: true,
    write: false,
    format: "esm",
    platform: "node",
    target: "node20",
    logLevel: "silent",
    banner: { js: "#!/usr/bin/env node" },
    // msgpackr's optional native accelerator: its require fails inside a try and msgpackr
    // carries on in plain JavaScript.
    external: ["msgpackr-extract"],
  });
  return result.outputFiles[0]!.text;
}
