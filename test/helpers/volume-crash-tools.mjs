// The tool runner as runtime/sandbox/volume.ts sees it under test/helpers/volume-crash-child.ts:
// each tool it runs is a step (which may be the one the child dies at).
import { runTool as realRunTool } from "../../runtime/sandbox/tool-runner.ts";
export { toolFailure } from "../../runtime/sandbox/tool-runner.ts";
export function runTool(call) {
  globalThis.__volumeStep(`${call.file.split("/").pop()} ${call.args.join(" ")}`);
  return realRunTool(call);
}
