// The Core backend's warnings, held to a rate: most are about what the node (or anything in its
// place) sends, one per ZMQ message or per sync step, so a publisher sending malformed
// notifications, or sequence numbers that jump at every message, wrote one line each to the
// host's log: 170,000-250,000 lines in 3 s. Warnings of one kind (the message with its numbers
// and hashes taken out) are written at most WARNINGS_PER_KIND times a WARNING_WINDOW_MS; past
// it they are counted, and one line at the window's end says how many were not written.

/** Warnings of one kind written in one window; the rest counted. */
export const WARNINGS_PER_KIND = 5;
/** The window of WARNINGS_PER_KIND, in ms. */
const WARNING_WINDOW_MS = 10_000;
/** Kinds followed at once (a kind is a message's text without its numbers and hashes); past it, the rest share one more. */
const MAX_KINDS = 64;

type Warn = (message: string, fields?: Record<string, unknown>) => void;

interface Kind {
  written: number;
  dropped: number;
  example: string;
  timer: NodeJS.Timeout;
}

/** `warn`, held to WARNINGS_PER_KIND per kind per WARNING_WINDOW_MS. */
export function limitWarnings(warn: Warn): Warn & { close(): void } {
  const kinds = new Map<string, Kind>();
  const limited = (message: string, fields?: Record<string, unknown>) => {
    let key = message.replace(/[0-9a-f]{16,}|\d+/gi, "#").slice(0, 200);
    // Texts the node chose (its error messages) make kinds of their own: past MAX_KINDS, one kind for the rest.
    if (!kinds.has(key) && kinds.size >= MAX_KINDS) key = "(more kinds than MAX_KINDS)";
    let kind = kinds.get(key);
    if (kind === undefined) {
      const entry: Kind = {
        written: 0,
        dropped: 0,
        example: message,
        timer: setTimeout(() => {
          kinds.delete(key);
          if (entry.dropped > 0) {
            warn(`${entry.dropped} more warning(s) like "${entry.example.slice(0, 200)}" were not written in the last ${WARNING_WINDOW_MS / 1000} s (WARNINGS_PER_KIND, ${WARNINGS_PER_KIND} of a kind in WARNING_WINDOW_MS)`, { dropped: entry.dropped });
          }
        }, WARNING_WINDOW_MS),
      };
      entry.timer.unref();
      kinds.set(key, (kind = entry));
    }
    if (kind.written >= WARNINGS_PER_KIND) {
      kind.dropped++;
      return;
    }
    kind.written++;
    warn(message, fields);
  };
  return Object.assign(limited, {
    close() {
      for (const k of kinds.values()) clearTimeout(k.timer);
      kinds.clear();
    },
  });
}
