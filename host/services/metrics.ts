// Module metrics (HostServices.metrics) and the Prometheus text rendering of them and of the
// host's own metrics.
//
// Every module has its own series, keyed by name and labels; a module reports only under its
// own name (the family passes the caller's name from the CallContext). Counters add, gauges
// set, histograms keep their last HISTOGRAM_WINDOW observations plus an all-time count and sum,
// and are rendered for Prometheus as summaries (quantiles over the kept window). Names and
// labels follow Prometheus' rules; a module has at most MAX_SERIES series.
//
// Decision: a module's metrics live as long as its process. When the process ends (stop,
// crash, reload) `forget` drops them, like its RPC methods: values reported by a process that
// is gone are stale, Prometheus handles the counter reset, and the host's own
// `modhost_module_up` says the module is down.

import { CapabilityError, type Metric } from "../../capabilities/types.ts";

export const METRIC_NAME_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
export const LABEL_NAME_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
export const MAX_SERIES = 1000;
export const HISTOGRAM_WINDOW = 1000;
export const MAX_LABELS = 16;
export const MAX_NAME_LENGTH = 128;
export const MAX_LABEL_VALUE_LENGTH = 256;
/** Labels the host adds itself (module) or that summaries use (quantile). */
const RESERVED_LABELS = new Set(["module", "quantile", "le"]);
/** Quantiles rendered for histograms. */
const QUANTILES = [0.5, 0.9, 0.99] as const;

interface Series {
  name: string;
  kind: Metric["kind"];
  labels: Record<string, string>;
  /** Counter/gauge value. */
  value: number;
  /** Histogram: the last HISTOGRAM_WINDOW observations, oldest first. */
  observations: number[];
  count: number;
  sum: number;
  timestamp: number;
}

export class MetricsStore {
  private readonly modules = new Map<string, Map<string, Series>>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Record a metric for `module`. Throws CapabilityError (invalid_params, quota_exceeded). */
  report(module: string, metric: Omit<Metric, "timestamp">): void {
    const { name, kind } = metric;
    if (typeof name !== "string" || name.length > MAX_NAME_LENGTH || !METRIC_NAME_RE.test(name)) {
      throw new CapabilityError("invalid_params", `metric name "${String(name).slice(0, 64)}" is not valid: use letters, digits and '_', not starting with a digit, at most ${MAX_NAME_LENGTH} characters (Prometheus naming)`);
    }
    if (name.startsWith("modhost_") || name.startsWith("__")) {
      throw new CapabilityError("invalid_params", `metric name "${name}": names starting with "modhost_" or "__" are reserved for the host`);
    }
    const labels = checkLabels(name, metric.labels ?? {});
    const values = Array.isArray(metric.value) ? metric.value : [metric.value];
    if (kind !== "histogram" && Array.isArray(metric.value)) {
      throw new CapabilityError("invalid_params", `metric ${name}: a ${kind} takes one number; only histograms take a list of observations`);
    }
    for (const v of values) {
      if (typeof v !== "number" || !Number.isFinite(v)) throw new CapabilityError("invalid_params", `metric ${name}: value must be a finite number`);
    }
    if (kind === "counter" && values[0]! < 0) {
      throw new CapabilityError("invalid_params", `metric ${name}: a counter only goes up; report a non-negative increment (use a gauge for values that go down)`);
    }
    if (values.length > HISTOGRAM_WINDOW) {
      throw new CapabilityError("invalid_params", `metric ${name}: at most ${HISTOGRAM_WINDOW} observations per report`);
    }

    let series = this.modules.get(module);
    if (!series) {
      series = new Map();
      this.modules.set(module, series);
    }
    for (const s of series.values()) {
      if (s.name === name && s.kind !== kind) {
        throw new CapabilityError("invalid_params", `metric ${name} is a ${s.kind}; it cannot also be reported as a ${kind}`);
      }
    }
    const key = seriesKey(name, labels);
    let s = series.get(key);
    if (!s) {
      if (series.size >= MAX_SERIES) {
        throw new CapabilityError("quota_exceeded", `metric ${name}: this module already has ${MAX_SERIES} metric series (name and label combinations); reuse label values instead of putting unbounded data (ids, hashes) in labels`);
      }
      s = { name, kind, labels, value: 0, observations: [], count: 0, sum: 0, timestamp: 0 };
      series.set(key, s);
    }
    s.timestamp = this.now();
    if (kind === "counter") s.value += values[0]!;
    else if (kind === "gauge") s.value = values[0]!;
    else {
      for (const v of values) {
        s.observations.push(v);
        s.count++;
        s.sum += v;
      }
      if (s.observations.length > HISTOGRAM_WINDOW) s.observations.splice(0, s.observations.length - HISTOGRAM_WINDOW);
    }
  }

  get(module: string): Metric[] {
    return [...(this.modules.get(module)?.values() ?? [])].map(toMetric);
  }

  all(): Record<string, Metric[]> {
    const out: Record<string, Metric[]> = {};
    for (const module of [...this.modules.keys()].sort()) out[module] = this.get(module);
    return out;
  }

  /** How many series a module has (for the host's own metrics). */
  seriesCount(module: string): number {
    return this.modules.get(module)?.size ?? 0;
  }

  forget(module: string): void {
    this.modules.delete(module);
  }

  /** Every module's series, for rendering. */
  series(): Array<{ module: string; series: readonly Series[] }> {
    return [...this.modules.keys()].sort().map((module) => ({ module, series: [...this.modules.get(module)!.values()] }));
  }
}

function checkLabels(name: string, labels: unknown): Record<string, string> {
  if (!labels || typeof labels !== "object" || Array.isArray(labels)) throw new CapabilityError("invalid_params", `metric ${name}: labels must be a map of strings`);
  const entries = Object.entries(labels as Record<string, unknown>);
  if (entries.length > MAX_LABELS) throw new CapabilityError("invalid_params", `metric ${name}: at most ${MAX_LABELS} labels`);
  const out: Record<string, string> = {};
  for (const [k, v] of entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (!LABEL_NAME_RE.test(k) || k.startsWith("__") || k.length > MAX_NAME_LENGTH) {
      throw new CapabilityError("invalid_params", `metric ${name}: label name "${k.slice(0, 64)}" is not valid: use letters, digits and '_', not starting with a digit or "__"`);
    }
    if (RESERVED_LABELS.has(k)) throw new CapabilityError("invalid_params", `metric ${name}: label "${k}" is reserved (the host adds "module" itself)`);
    if (typeof v !== "string") throw new CapabilityError("invalid_params", `metric ${name}: label ${k} must be a string`);
    if (v.length > MAX_LABEL_VALUE_LENGTH) throw new CapabilityError("invalid_params", `metric ${name}: label ${k} is longer than ${MAX_LABEL_VALUE_LENGTH} characters`);
    out[k] = v;
  }
  return out;
}

function seriesKey(name: string, labels: Record<string, string>): string {
  return JSON.stringify([name, labels]);
}

function toMetric(s: Series): Metric {
  return {
    name: s.name,
    kind: s.kind,
    value: s.kind === "histogram" ? [...s.observations] : s.value,
    labels: { ...s.labels },
    timestamp: s.timestamp,
  };
}

// ---------------------------------------------------------------------------------------
// Prometheus text exposition format 0.0.4

/** One host metric family. */
export interface HostMetricFamily {
  name: string;
  help: string;
  type: "counter" | "gauge";
  samples: Array<{ labels?: Record<string, string>; value: number }>;
}

export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function labelText(labels: Record<string, string>): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabelValue(v)}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

function num(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = q * (sorted.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

/**
 * The text page for GET /metrics: the host's families, then every module's metrics with a
 * `module` label. Module metrics keep their names. When two modules use one name for
 * different kinds, the kind of the alphabetically first module keeps the name and the others
 * are rendered as `<name>_<kind>` (one family has one type in Prometheus).
 */
export function renderPrometheus(host: readonly HostMetricFamily[], store: MetricsStore): string {
  const out: string[] = [];
  for (const f of host) {
    out.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) out.push(`${f.name}${labelText(s.labels ?? {})} ${num(s.value)}`);
  }
  // family name -> kind and lines
  const families = new Map<string, { kind: Metric["kind"]; lines: string[] }>();
  for (const { module, series } of store.series()) {
    for (const s of series) {
      let family = s.name;
      const existing = families.get(family);
      if (existing && existing.kind !== s.kind) family = `${s.name}_${s.kind}`;
      let f = families.get(family);
      if (!f) {
        f = { kind: s.kind, lines: [] };
        families.set(family, f);
      }
      const labels = { module, ...s.labels };
      if (s.kind === "histogram") {
        const sorted = [...s.observations].sort((a, b) => a - b);
        for (const q of QUANTILES) f.lines.push(`${family}${labelText({ ...labels, quantile: String(q) })} ${num(quantile(sorted, q))}`);
        f.lines.push(`${family}_sum${labelText(labels)} ${num(s.sum)}`, `${family}_count${labelText(labels)} ${num(s.count)}`);
      } else {
        f.lines.push(`${family}${labelText(labels)} ${num(s.value)}`);
      }
    }
  }
  for (const [name, f] of families) {
    const type = f.kind === "histogram" ? "summary" : f.kind;
    out.push(`# HELP ${name} Reported by modules (${f.kind}).`, `# TYPE ${name} ${type}`, ...f.lines);
  }
  return out.join("\n") + "\n";
}
