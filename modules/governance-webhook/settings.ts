// The module's configuration ([modules.module_configs.governance-webhook]) read into settings.
// Three ways to name webhooks, all combined:
//   webhook_url = "...", secret = "..."                    one webhook (the seed's name)
//   governance.webhook_url = "...", governance.node_id ... the seed's dotted names
//   webhooks = [{ url = "...", secret = "...", events = [...] }, ...]
// A webhook that cannot be used (no secret, not http/https, too long) is left out and said so;
// the others still work. Numeric limits are clamped to their documented bounds.

const GOVERNANCE_EVENTS = [
  "GovernanceProposalCreated",
  "GovernanceProposalVoted",
  "GovernanceProposalMerged",
  "GovernanceForkDetected",
  "EconomicNodeRegistered",
  "EconomicNodeVeto",
  "VetoThresholdReached",
];
const LIFECYCLE_EVENTS = [
  "ModuleLoaded",
  "ModuleUnloaded",
  "ModuleCrashed",
  "ModuleRestarted",
  "ModuleInstalled",
  "ModuleUpdated",
  "ModuleRemoved",
];
const DEFAULT_EVENTS = [...GOVERNANCE_EVENTS, ...LIFECYCLE_EVENTS];

/** Hard bounds on what the operator may configure. */
const MAX_WEBHOOKS = 16;
const MAX_URL_BYTES = 2048;
const MAX_EVENTS_PER_WEBHOOK = 128;

export interface Webhook {
  url: string;
  secret: string;
  events: string[];
}

export interface Settings {
  webhooks: Webhook[];
  node_id: string | null;
  max_outbox: number;
  max_dead_letters: number;
  max_attempts: number;
  max_age_seconds: number;
  retry_initial_ms: number;
  retry_max_ms: number;
  request_timeout_ms: number;
  max_event_bytes: number;
  max_catch_up_blocks: number;
  /** What was wrong with the configuration (each line says what to change). */
  problems: string[];
}

type Cfg = Readonly<Record<string, unknown>>;

function str(v: unknown): string | undefined {
  return typeof v === "string" && v.trim() !== "" ? v.trim() : undefined;
}

function int(cfg: Cfg, key: string, dflt: number, min: number, max: number, problems: string[]): number {
  const v = cfg[key];
  if (v === undefined) return dflt;
  if (typeof v !== "number" || !Number.isFinite(v)) {
    problems.push(`${key} must be a number; using ${dflt}`);
    return dflt;
  }
  if (v < min || v > max) {
    const c = Math.min(max, Math.max(min, v));
    problems.push(`${key} = ${v} is outside ${min}..${max}; using ${c}`);
    return Math.floor(c);
  }
  return Math.floor(v);
}

export function readSettings(cfg: Cfg): Settings {
  const problems: string[] = [];
  const gov = (typeof cfg.governance === "object" && cfg.governance !== null && !Array.isArray(cfg.governance) ? cfg.governance : {}) as Cfg;
  const defaultEvents = Array.isArray(cfg.events) ? cfg.events.filter((e): e is string => typeof e === "string") : DEFAULT_EVENTS;
  const defaultSecret = str(cfg.secret) ?? str(gov.secret);

  const wanted: Array<{ where: string; url: unknown; secret: unknown; events: unknown }> = [];
  const single = str(cfg.webhook_url) ?? str(gov.webhook_url);
  if (single) wanted.push({ where: cfg.webhook_url !== undefined ? "webhook_url" : "governance.webhook_url", url: single, secret: defaultSecret, events: undefined });
  if (cfg.webhooks !== undefined && !Array.isArray(cfg.webhooks)) problems.push("webhooks must be an array of tables { url, secret, events }");
  for (const [i, w] of (Array.isArray(cfg.webhooks) ? cfg.webhooks : []).entries()) {
    if (typeof w !== "object" || w === null || Array.isArray(w)) {
      problems.push(`webhooks[${i}] must be a table { url = "...", secret = "...", events = [...] }`);
      continue;
    }
    const t = w as Cfg;
    wanted.push({ where: `webhooks[${i}]`, url: t.url, secret: str(t.secret) ?? defaultSecret, events: t.events });
  }

  const webhooks: Webhook[] = [];
  for (const w of wanted) {
    const url = str(w.url);
    if (!url) {
      problems.push(`${w.where}: url is missing; add url = "https://receiver.example/hook"`);
      continue;
    }
    if (!/^https?:\/\//i.test(url)) {
      problems.push(`${w.where}: ${JSON.stringify(url.slice(0, 80))} is not an http:// or https:// URL; it is left out`);
      continue;
    }
    if (url.length > MAX_URL_BYTES) {
      problems.push(`${w.where}: the URL is ${url.length} characters, over the limit of ${MAX_URL_BYTES}; it is left out`);
      continue;
    }
    const secret = str(w.secret);
    if (!secret) {
      problems.push(`${w.where}: no secret for ${url}, and deliveries are never sent unsigned; set secret = "..." (in the webhook's table, or the module's secret)`);
      continue;
    }
    if (webhooks.some((x) => x.url === url)) {
      problems.push(`${w.where}: ${url} is configured twice; the first one is used`);
      continue;
    }
    let events = defaultEvents;
    if (w.events !== undefined) {
      if (!Array.isArray(w.events) || w.events.some((e) => typeof e !== "string")) {
        problems.push(`${w.where}: events must be an array of event names; using the module's events`);
      } else events = w.events as string[];
    }
    if (events.length > MAX_EVENTS_PER_WEBHOOK) {
      problems.push(`${w.where}: ${events.length} events, over the limit of ${MAX_EVENTS_PER_WEBHOOK}; the first ${MAX_EVENTS_PER_WEBHOOK} are used`);
      events = events.slice(0, MAX_EVENTS_PER_WEBHOOK);
    }
    webhooks.push({ url, secret, events: [...new Set(events)] });
  }
  if (webhooks.length > MAX_WEBHOOKS) {
    problems.push(`${webhooks.length} webhooks configured, over the limit of ${MAX_WEBHOOKS}; the first ${MAX_WEBHOOKS} are used`);
    webhooks.length = MAX_WEBHOOKS;
  }

  const retry_initial_ms = int(cfg, "retry_initial_ms", 1000, 50, 3_600_000, problems);
  return {
    webhooks,
    node_id: str(cfg.node_id) ?? str(gov.node_id) ?? null,
    max_outbox: int(cfg, "max_outbox", 1000, 1, 100_000, problems),
    max_dead_letters: int(cfg, "max_dead_letters", 1000, 1, 100_000, problems),
    max_attempts: int(cfg, "max_attempts", 12, 1, 1000, problems),
    max_age_seconds: int(cfg, "max_age_seconds", 86_400, 1, 30 * 86_400, problems),
    retry_initial_ms,
    retry_max_ms: Math.max(retry_initial_ms, int(cfg, "retry_max_ms", 300_000, 50, 3_600_000, problems)),
    request_timeout_ms: int(cfg, "request_timeout_ms", 10_000, 100, 60_000, problems),
    max_event_bytes: int(cfg, "max_event_bytes", 65_536, 256, 512 * 1024, problems),
    max_catch_up_blocks: int(cfg, "max_catch_up_blocks", 100, 0, 10_000, problems),
    problems,
  };
}

/** Delay before attempt `attempts + 1`: exponential from retry_initial_ms, capped, with "equal jitter" (half fixed, half random). */
export function backoff(s: Settings, attempts: number, random: () => number = Math.random): number {
  const base = Math.min(s.retry_max_ms, s.retry_initial_ms * 2 ** Math.min(30, Math.max(0, attempts - 1)));
  return Math.round(base / 2 + random() * (base / 2));
}
