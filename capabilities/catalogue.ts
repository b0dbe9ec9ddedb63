// The permission catalogue: the single source of truth for permission names, what they
// mean and how they may be scoped. Which API methods a permission unlocks is declared by
// each method in its capability family (./families.ts) and derived from there, so the two
// can never disagree. docs/permissions.md is generated from this file
// (`node bin/modhost.js docs permissions`) and a test checks it is current.

/**
 * How a grant of a permission may be narrowed:
 * - none:   the permission is all or nothing.
 * - path:   paths inside the module's own data directory ("reports", "cache/tmp").
 * - host:   network hosts, "host" or "host:port" (names canonicalised, numeric tricks refused).
 * - module: target module names (for calling other modules).
 * - event:  event type names (for subscriptions).
 * - hook:   hook point names (for register_hook: "tx_submit", "rpc_dispatch", ...).
 */
export type ScopeKind = "none" | "path" | "host" | "module" | "event" | "hook";

/**
 * The points where the host runs hooks (capabilities/hooks.ts declares each one's payload,
 * what a hook may modify, its deadline and its failure policy). Listed here because the
 * grant grammar checks `register_hook=POINT` scopes against them.
 */
export const HOOK_POINT_NAMES = ["tx_submit", "block_template", "rpc_dispatch", "module_load"] as const;
export type HookPointName = (typeof HOOK_POINT_NAMES)[number];

export interface PermissionInfo {
  readonly description: string;
  readonly scope: ScopeKind;
  /** The family of API this permission belongs to, for docs. */
  readonly area: string;
}

export const PERMISSIONS = {
  read_blockchain: { area: "chain", scope: "none", description: "Read blocks, headers and transactions of the active chain." },
  read_utxo: { area: "chain", scope: "none", description: "Look up unspent transaction outputs (read-only)." },
  read_chain_state: { area: "chain", scope: "none", description: "Read the chain tip, height and chain information." },
  subscribe_events: { area: "events", scope: "event", description: "Receive events from the event bus (blocks, mempool, reorgs, module lifecycle, config)." },
  send_transactions: { area: "mempool", scope: "none", description: "Submit transactions to the node's mempool." },
  read_mempool: { area: "mempool", scope: "none", description: "Read mempool transactions, sizes and fee estimates." },
  read_network: { area: "network", scope: "none", description: "Read network statistics and the peer list." },
  network_access: { area: "network", scope: "host", description: "HTTP(S) requests to the granted hosts, made and checked by the host per request; a native module also shares the host's network namespace (not scoped)." },
  read_lightning: { area: "lightning", scope: "none", description: "Read Lightning node information from the Lightning provider module." },
  read_payment: { area: "lightning", scope: "none", description: "Read payment state from the payment provider module." },
  read_storage: { area: "storage", scope: "none", description: "Read the module's own key-value storage trees." },
  write_storage: { area: "storage", scope: "none", description: "Create trees in and write to the module's own key-value storage." },
  manage_storage: { area: "storage", scope: "none", description: "Drop whole storage trees of the module's own storage." },
  read_filesystem: { area: "filesystem", scope: "path", description: "Read files inside the module's own data directory." },
  write_filesystem: { area: "filesystem", scope: "path", description: "Write files inside the module's own data directory." },
  manage_filesystem: { area: "filesystem", scope: "path", description: "Delete files and create directories inside the module's own data directory." },
  register_rpc_endpoint: { area: "rpc", scope: "none", description: "Serve JSON-RPC methods under the module's own name and register CLI commands." },
  manage_timers: { area: "timers", scope: "none", description: "Register periodic timers and one-shot scheduled tasks." },
  report_metrics: { area: "metrics", scope: "none", description: "Report this module's metrics (counters, gauges, histograms), shown on the host's /metrics." },
  read_metrics: { area: "metrics", scope: "none", description: "Read the metrics modules reported (any module's, or all)." },
  discover_modules: { area: "modules", scope: "none", description: "List loaded modules and read their public information." },
  publish_events: { area: "events", scope: "none", description: "Publish events in the module's own namespace." },
  call_module: { area: "modules", scope: "module", description: "Call the API of the granted modules." },
  register_module_api: { area: "modules", scope: "none", description: "Expose an API that other modules may call, and serve a provider role the operator designated the module for ([modules.providers])." },
  submit_block: { area: "mining", scope: "none", description: "Submit mined blocks to the node." },
  queue_inbound_block: { area: "mining", scope: "none", description: "Queue a block as if received from a peer." },
  register_hook: { area: "hooks", scope: "hook", description: "Register hooks that see, and may delay, refuse or modify within a schema, what the host is about to do at the granted hook points (transaction submit, block template, RPC dispatch, module load)." },
} as const satisfies Record<string, PermissionInfo>;

export type Permission = keyof typeof PERMISSIONS;

export const PERMISSION_NAMES = Object.keys(PERMISSIONS) as Permission[];

function isPermission(name: string): name is Permission {
  return Object.hasOwn(PERMISSIONS, name);
}

/** Levenshtein distance, for "did you mean" hints. */
export function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j]!;
      prev[j] = Math.min(up + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length]!;
}

/**
 * The closest name in `candidates`, or undefined when nothing is reasonably close. `budget`:
 * edit-distance cells shared by several guesses (one file's problems), spent here; by default
 * each guess has CLOSEST_MAX_CELLS of its own.
 */
export function closest(name: string, candidates: readonly string[], budget: { cells: number } = { cells: CLOSEST_MAX_CELLS }): string | undefined {
  // The edit distance costs the product of the lengths: a name far longer than every
  // candidate (a module's 4 MiB "method") is close to none of them, and is not compared.
  if (name.length > 128) return undefined;
  const norm = (s: string) => s.toLowerCase().replace(/[^a-z0-9]/g, "");
  const limit = Math.max(3, Math.floor(name.length / 2));
  const wanted = norm(name);
  let best: string | undefined;
  let bestScore = Infinity;
  // The candidates grow with the modules loaded (50 modules x 256 RPC methods: one guess took
  // 0.5-1 s of the host's loop): the comparisons stop after CLOSEST_MAX_CELLS, and a candidate
  // whose length alone puts it beyond the limit is not compared.
  let cells = 0;
  for (const c of candidates) {
    const other = norm(c);
    if (Math.abs(other.length - wanted.length) > Math.min(limit, bestScore)) continue;
    const cost = (wanted.length + 1) * (other.length + 1);
    if (cells + cost > CLOSEST_MAX_CELLS || cost > budget.cells) break;
    cells += cost;
    budget.cells -= cost;
    const d = editDistance(wanted, other);
    if (d < bestScore) {
      bestScore = d;
      best = c;
    }
  }
  return best !== undefined && bestScore <= limit ? best : undefined;
}

/** The most edit-distance cells one closest() computes (~2-4 ms): a guess, not a search. */
export const CLOSEST_MAX_CELLS = 1_000_000;

/**
 * Capability names that manifests written for the BLVM node use but that are not permissions
 * of their own there: each is the permission the node checks for that request. (The seeds'
 * Mining OS manifest lists "get_block_template", which the node maps to ReadBlockchain.)
 */
export const PERMISSION_ALIASES: Readonly<Record<string, Permission>> = Object.freeze({
  get_block_template: "read_blockchain",
});

/**
 * Accepts the snake_case name, and for compatibility with manifests written for the BLVM
 * node also the PascalCase enum spelling ("ReadUTXO", "ReadBlockchain") and the aliases above.
 */
export function normalisePermission(name: string): Permission | undefined {
  if (isPermission(name)) return name;
  if (Object.hasOwn(PERMISSION_ALIASES, name)) return PERMISSION_ALIASES[name];
  if (/^[A-Z][A-Za-z]+$/.test(name)) {
    const snake = name.replace(/UTXO/g, "Utxo").replace(/([a-z0-9])([A-Z])/g, "$1_$2").toLowerCase();
    if (isPermission(snake)) return snake;
  }
  return undefined;
}
