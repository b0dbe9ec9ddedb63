// Loaded with `node --import` ahead of everything else (tsx, the host): makes each step of
// runtime/sandbox/volume.ts countable, and kills the process with SIGKILL (no finally, no
// cleanup: a real crash, as a host killed with -9 mid-mount) just before step number
// VOLUME_CRASH_STEP, or before the first step that the regular expression VOLUME_CRASH_AT
// matches (a host mounting several volumes counts theirs together). A step is each system tool volume.ts runs (through the tool runner, which
// then kills the tool) and each change it makes to the file system (mkdir, chmod, rename, rm,
// rmdir, truncate, open). The steps are counted by redirecting volume.ts's imports of the tool
// runner and of node:fs/promises to counting wrappers (module.registerHooks), so the runtime
// code has no test hook. With VOLUME_CRASH_TRACE set, each step is written to stderr as
// "volume step N: WHAT" before it is taken. Used by test/faults-round16.test.ts.
import { registerHooks } from "node:module";

const stop = Number(process.env.VOLUME_CRASH_STEP ?? 0);
const at = process.env.VOLUME_CRASH_AT ? new RegExp(process.env.VOLUME_CRASH_AT) : undefined;
const trace = process.env.VOLUME_CRASH_TRACE === "1";
let taken = 0;
globalThis.__volumeStep = (what) => {
  taken++;
  if (trace) process.stderr.write(`volume step ${taken}: ${what}\n`);
  if (taken === stop || at?.test(what)) process.kill(process.pid, "SIGKILL");
};

const wrappers = {
  "node:fs/promises": new URL("./volume-crash-fs.mjs", import.meta.url).href,
  "./tool-runner.ts": new URL("./volume-crash-tools.mjs", import.meta.url).href,
};
registerHooks({
  resolve(specifier, context, next) {
    const to = wrappers[specifier];
    if (to && context.parentURL?.endsWith("/runtime/sandbox/volume.ts")) return { url: to, format: "module", shortCircuit: true };
    return next(specifier, context);
  },
});
