// The host process's last resort: an error that escapes every handler (an uncaught exception,
// an unhandled rejection) would otherwise end the host and every module with it. This logs it
// with its stack and contains it: when it happened while serving a module (its channel, its
// output, its requests: runtime/process.ts runs all of that in the module's async context),
// that module's process is ended, which the supervisor reports as a crash and the restart
// policy handles; the host and the other modules carry on. It is not the fix: every such
// error is a bug, and the log says so. Errors that cannot be attributed are logged and the
// host carries on, unless they keep coming (UNATTRIBUTED_LIMIT within UNATTRIBUTED_WINDOW_MS):
// then the host stops in order, with a non-zero exit code, rather than spin on a broken state.

import { moduleScope } from "../runtime/process.ts";
import type { Logger } from "./log.ts";

const UNATTRIBUTED_LIMIT = 10;
const UNATTRIBUTED_WINDOW_MS = 60_000;

export interface LastResortOptions {
  logger: Logger;
  /** End the process of `module` (it caused the error). */
  contain: (module: string) => void;
  /** Errors nobody can be blamed for keep coming: stop the host. */
  giveUp: (reason: string) => void;
}

export interface LastResort {
  /** Handle one escaped error as the process handlers would; exposed for tests. */
  handle(kind: "uncaught exception" | "unhandled rejection", err: unknown): void;
  uninstall(): void;
}

export function installLastResort(opts: LastResortOptions): LastResort {
  const recent: number[] = [];
  let gaveUp = false;
  const handle: LastResort["handle"] = (kind, err) => {
    try {
      const module = moduleScope.getStore();
      const text = err instanceof Error ? (err.stack ?? `${err.name}: ${err.message}`) : `a non-error value: ${safeString(err)}`;
      if (module !== undefined) {
        opts.logger.log("error", "host", `${kind} while serving module ${module} (a host bug; contained by ending that module's process): ${text}`, { module, contained: true });
        opts.contain(module);
        return;
      }
      const now = Date.now();
      recent.push(now);
      while (recent.length > 0 && now - recent[0]! > UNATTRIBUTED_WINDOW_MS) recent.shift();
      opts.logger.log("error", "host", `${kind} (a host bug; the host carries on): ${text}`, { contained: false });
      if (recent.length >= UNATTRIBUTED_LIMIT && !gaveUp) {
        gaveUp = true;
        opts.giveUp(`${recent.length} unexpected errors within ${UNATTRIBUTED_WINDOW_MS / 1000} s`);
      }
    } catch {
      // The last resort itself must not throw (that would end the process).
    }
  };
  const onException = (err: unknown) => handle("uncaught exception", err);
  const onRejection = (err: unknown) => handle("unhandled rejection", err);
  process.on("uncaughtException", onException);
  process.on("unhandledRejection", onRejection);
  return {
    handle,
    uninstall: () => {
      process.off("uncaughtException", onException);
      process.off("unhandledRejection", onRejection);
    },
  };
}

function safeString(v: unknown): string {
  try {
    return String(v).slice(0, 1000);
  } catch {
    return typeof v;
  }
}
