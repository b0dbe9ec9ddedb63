// Module metrics (HostServices.metrics): what modules report, kept per module, and read back.
// The Prometheus text of them and of the host's own metrics: host/services/prometheus.ts.
//
// Every module has its own series, keyed by name and labels; a module reports only under its
// own name (the family passes the caller's name from the CallContext). Counters add, gauges
// set, histograms count observations in fixed buckets (HISTOGRAM_BUCKETS) with an all-time
// count and sum, and are rendered for Prometheus as histograms. Names and labels follow
// Prometheus' rules; a module has at most MAX_SERIES series, whose names and labels hold at
// most MAX_SERIES_TEXT_CHARS characters together.
//
// Decision: what a read costs is bounded by the size of its answer. A series is a fixed-size
// summary (never a list of observations), each series' answer size is known when it is
// created, and get/all refuse an answer larger than the caller can receive before building it.
//
// Decision: a module's metrics live as long as its process. When the process ends (stop,
// crash, reload) `forget` drops them, like its RPC methods: values reported by a process that
// is gone are stale, Prometheus handles the counter reset, and the host's own
// `modhost_module_up` says the module is down.

import { CapabilityError, type Metric } from "../../capabilities/types.ts";
import { DEFAULT_BODY_LIMITS } from "../../protocol/codec.ts";
import { hostBytes, type HeldAccount } from "../../protocol/host-bytes.ts";

const METRIC_NAME_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const LABEL_NAME_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
export const MAX_SERIES = 1000;
/**
 * Characters of names and labels (each series' key: its name and labels as JSON) a module's
 * series hold together. MAX_SERIES alone let them hold 1000 x 16 labels of 128-character names
 * and 256-character values: ~6,300 characters a series, 10.5 MiB of host heap for one module
 * (test/hostile-maxed.test.ts). 256 Ki characters is 260 a series at MAX_SERIES.
 */
const MAX_SERIES_TEXT_CHARS = 256 * 1024;
/** Most observations in one report. */
export const MAX_OBSERVATIONS_PER_REPORT = 1000;
/**
 * Upper bounds of the histogram buckets, for any unit: 1, 2.5, 5 per decade from 0.001 to
 * 100000 (and +Inf). Fixed, so that every histogram costs the same to keep and to read.
 */
export const HISTOGRAM_BUCKETS: readonly number[] = Object.freeze([
  ...[-3, -2, -1, 0, 1, 2, 3, 4].flatMap((e) => [1, 2.5, 5].map((m) => Number((m * 10 ** e).toPrecision(3)))),
  100000,
]);
/**
 * Values (containers, map keys and elements, as the protocol counts max_values) one series
 * adds to an answer: its map, five keys and five values. Its labels add two each; a histogram's
 * value six more (a map of count, sum and the buckets' array) and three per bucket holding any.
 */
const SERIES_VALUES = 11;
const HISTOGRAM_VALUES = 6;
const BUCKET_VALUES = 3;
/** The map keys every answer may use besides label names: a series' five and a histogram's three, the envelope's. */
const FIXED_KEYS = 16;
/** What one series adds to an answer beyond its name and labels (kind, value, timestamp, framing). */
const SERIES_OVERHEAD_BYTES = 64;
/** What a histogram's value adds: count, sum and its buckets as [le, count] pairs. */
const HISTOGRAM_VALUE_BYTES = 32 + HISTOGRAM_BUCKETS.length * 20;
/**
 * What one series holds in the host's heap, estimated from above for [host] module_bytes_mb:
 * measured in-process, a gauge without labels 256 bytes, with a 220-character key 704, a
 * histogram 455 and 897 (its buckets' Float64Array): a fixed part, two bytes per character of
 * its key (the key and its labels' copy), and a histogram's buckets.
 */
const SERIES_HEAP_BYTES = 320;
const HISTOGRAM_HEAP_BYTES = 256;
const MAX_LABELS = 16;
const MAX_NAME_LENGTH = 128;
const MAX_LABEL_VALUE_LENGTH = 256;
/** Labels the host adds itself (module) or that summaries use (quantile). */
const RESERVED_LABELS = new Set(["module", "quantile", "le"]);

export interface Series {
  name: string;
  kind: Metric["kind"];
  labels: Record<string, string>;
  /** Counter/gauge value. */
  value: number;
  /** Histogram: observations per bucket (not cumulative); the last one is +Inf. */
  buckets: Float64Array | undefined;
  count: number;
  sum: number;
  timestamp: number;
  /** Upper bound of this series' share of a get/all answer, in bytes. */
  answerBytes: number;
}

/** Per module: what its series put in a get/all answer besides bytes (the protocol's max_values and max_map_keys). */
interface AnswerShape {
  /** Values, exactly as the answer will hold them (SERIES_VALUES ...). */
  values: number;
  /** Label names in use, with the number of series using each: its distinct map keys. */
  labelNames: Map<string, number>;
}

/** What get/all answer for a histogram: observations counted in fixed buckets. */
export interface HistogramValue {
  count: number;
  sum: number;
  /** [upper bound, observations <= it] for each bucket that holds any (cumulative, ascending); +Inf is `count`. */
  buckets: Array<[number, number]>;
}

export class MetricsStore {
  private readonly modules = new Map<string, Map<string, Series>>();
  /** Per module: the sum of its series' answerBytes. */
  private readonly answerBytes = new Map<string, number>();
  /** Per module: the characters of its series' keys (MAX_SERIES_TEXT_CHARS). */
  private readonly textChars = new Map<string, number>();
  /** Per module: the values and distinct keys of its answer. */
  private readonly shapes = new Map<string, AnswerShape>();
  /** Per module: each metric name's kind (a name is one kind across its series). */
  private readonly kinds = new Map<string, Map<string, Metric["kind"]>>();
  /**
   * Per module: its account in [host] module_bytes_mb, and the heap its series hold by
   * SERIES_HEAP_BYTES. Before, series were bounded per module only (MAX_SERIES,
   * MAX_SERIES_TEXT_CHARS: ~0.9 MiB at the limits), so MAX_MODULES modules at them held
   * ~230 MiB outside the cap that bounds the sum of what modules make the host hold.
   */
  private readonly held = new Map<string, { account: HeldAccount; bytes: number }>();

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
    // Checked one by one below: a reported value is a number or a list of numbers.
    const values = (Array.isArray(metric.value) ? metric.value : [metric.value]) as number[];
    if (kind !== "histogram" && Array.isArray(metric.value)) {
      throw new CapabilityError("invalid_params", `metric ${name}: a ${kind} takes one number; only histograms take a list of observations`);
    }
    for (const v of values) {
      if (typeof v !== "number" || !Number.isFinite(v)) throw new CapabilityError("invalid_params", `metric ${name}: value must be a finite number`);
    }
    if (kind === "counter" && values[0]! < 0) {
      throw new CapabilityError("invalid_params", `metric ${name}: a counter only goes up; report a non-negative increment (use a gauge for values that go down)`);
    }
    if (values.length > MAX_OBSERVATIONS_PER_REPORT) {
      throw new CapabilityError("invalid_params", `metric ${name}: at most ${MAX_OBSERVATIONS_PER_REPORT} observations per report`);
    }

    let series = this.modules.get(module);
    if (!series) {
      series = new Map();
      this.modules.set(module, series);
    }
    let kinds = this.kinds.get(module);
    if (!kinds) this.kinds.set(module, (kinds = new Map()));
    const known = kinds.get(name);
    if (known !== undefined && known !== kind) {
      throw new CapabilityError("invalid_params", `metric ${name} is a ${known}; it cannot also be reported as a ${kind}`);
    }
    const key = seriesKey(name, labels);
    let s = series.get(key);
    if (!s) {
      if (series.size >= MAX_SERIES) {
        throw new CapabilityError("quota_exceeded", `metric ${name}: this module already has ${MAX_SERIES} metric series (name and label combinations); reuse label values instead of putting unbounded data (ids, hashes) in labels`);
      }
      const text = (this.textChars.get(module) ?? 0) + key.length;
      if (text > MAX_SERIES_TEXT_CHARS) {
        throw new CapabilityError("quota_exceeded", `metric ${name}: this module's series already hold ${text - key.length} characters of names and labels, and this one's ${key.length} would pass the ${MAX_SERIES_TEXT_CHARS} the host keeps for a module; use shorter names and label values, or fewer label combinations`);
      }
      const heap = SERIES_HEAP_BYTES + 2 * key.length + (kind === "histogram" ? HISTOGRAM_HEAP_BYTES : 0);
      let held = this.held.get(module);
      if (!held) {
        const entry = { account: undefined as unknown as HeldAccount, bytes: 0 };
        entry.account = hostBytes.join(module, () => entry.bytes);
        this.held.set(module, (held = entry));
      }
      if (!held.account.admits(heap)) {
        throw new CapabilityError("quota_exceeded", `metric ${name}: a new series (~${heap} bytes of the host's memory) would pass this module's fair part of [host] module_bytes_mb (${hostBytes.cap} bytes for all modules together, ${held.account.fairPart()} now its own, ${held.bytes} held by its ${series.size} series): the host holds more than half of it; report under the series it has, or the operator raises [host] module_bytes_mb`);
      }
      held.bytes += heap;
      this.textChars.set(module, text);
      kinds.set(name, kind);
      const answerBytes = key.length + SERIES_OVERHEAD_BYTES + (kind === "histogram" ? HISTOGRAM_VALUE_BYTES : 0);
      s = { name, kind, labels, value: 0, buckets: kind === "histogram" ? new Float64Array(HISTOGRAM_BUCKETS.length + 1) : undefined, count: 0, sum: 0, timestamp: 0, answerBytes };
      series.set(key, s);
      this.answerBytes.set(module, (this.answerBytes.get(module) ?? 0) + answerBytes);
      let shape = this.shapes.get(module);
      if (!shape) this.shapes.set(module, (shape = { values: 0, labelNames: new Map() }));
      const names = Object.keys(labels);
      shape.values += SERIES_VALUES + 2 * names.length + (kind === "histogram" ? HISTOGRAM_VALUES : 0);
      for (const n of names) shape.labelNames.set(n, (shape.labelNames.get(n) ?? 0) + 1);
    }
    s.timestamp = this.now();
    if (kind === "counter") s.value += values[0]!;
    else if (kind === "gauge") s.value = values[0]!;
    else {
      const shape = this.shapes.get(module)!;
      for (const v of values) {
        const b = bucketOf(v);
        // A bucket that holds its first observation is one more [le, count] pair in answers (not +Inf's).
        if (s.buckets![b] === 0 && b < HISTOGRAM_BUCKETS.length) shape.values += BUCKET_VALUES;
        s.buckets![b]!++;
        s.count++;
        s.sum += v;
      }
    }
  }

  /**
   * A module's metrics. With `maxBytes` (the caller's largest answer), an answer that could be
   * larger is refused before it is built.
   */
  get(module: string, maxBytes?: number): Metric[] {
    this.checkSize([module], maxBytes, "get_module_metrics");
    return [...(this.modules.get(module)?.values() ?? [])].map(toMetric);
  }

  /** Every module's metrics, by module name; refused like `get` when it could exceed `maxBytes`. */
  all(maxBytes?: number): Record<string, Metric[]> {
    const modules = [...this.modules.keys()].sort();
    this.checkSize(modules, maxBytes, "get_all_metrics");
    const out: Record<string, Metric[]> = {};
    for (const module of modules) out[module] = this.get(module);
    return out;
  }

  /** Upper bound of the answer size of `modules`' metrics, in bytes. */
  answerSize(modules: readonly string[]): number {
    let bytes = 64;
    for (const m of modules) bytes += 16 + m.length + (this.answerBytes.get(m) ?? 0);
    return bytes;
  }

  /**
   * Refuses, before it is built, an answer one message could not carry: over `maxBytes`, or
   * over the protocol's max_values or max_map_keys (before: 1000 histograms with their buckets
   * filled, ~95,000 values, or 256 series of 16 distinct label names were built, 6-10 ms, and
   * then failed to encode, 6-26 ms more, on the host's loop at every call).
   */
  private checkSize(modules: readonly string[], maxBytes: number | undefined, method: string): void {
    if (maxBytes === undefined) return;
    const size = this.answerSize(modules);
    const what = modules.length === 1 ? "ask the module to report fewer series" : "read one module at a time with get_module_metrics, or ask the modules to report fewer series";
    if (size > maxBytes) {
      throw new CapabilityError("invalid_params", `${method}: the answer could be ${size} bytes, more than the ${maxBytes} bytes one message may carry; ${what}`);
    }
    // The outer map of get_all_metrics: a key and an array per module; the envelope: a few.
    let values = 16;
    let keys = FIXED_KEYS + (modules.length > 1 ? modules.length : 0);
    for (const m of modules) {
      const shape = this.shapes.get(m);
      values += 2 + (shape?.values ?? 0);
      keys += shape?.labelNames.size ?? 0;
    }
    if (values > DEFAULT_BODY_LIMITS.maxValues) {
      throw new CapabilityError("invalid_params", `${method}: the answer would hold ${values} values, more than the ${DEFAULT_BODY_LIMITS.maxValues} one message may carry (max_values, docs/protocol.md section 3); ${what} (a histogram is up to ${SERIES_VALUES + HISTOGRAM_VALUES + BUCKET_VALUES * HISTOGRAM_BUCKETS.length} values)`);
    }
    if (keys > DEFAULT_BODY_LIMITS.maxMapKeys) {
      throw new CapabilityError("invalid_params", `${method}: the answer could hold ${keys} distinct map keys (label names), more than the ${DEFAULT_BODY_LIMITS.maxMapKeys} one message may carry (max_map_keys, docs/protocol.md section 3); ${what}, or use fewer distinct label names`);
    }
  }

  /** How many series a module has (for the host's own metrics). */
  seriesCount(module: string): number {
    return this.modules.get(module)?.size ?? 0;
  }

  forget(module: string): void {
    const held = this.held.get(module);
    if (held) {
      this.held.delete(module);
      held.account.leave();
    }
    this.kinds.delete(module);
    this.modules.delete(module);
    this.answerBytes.delete(module);
    this.textChars.delete(module);
    this.shapes.delete(module);
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

/** Index of the bucket of `v`: the first bound >= v, or the +Inf bucket. */
function bucketOf(v: number): number {
  let lo = 0;
  let hi = HISTOGRAM_BUCKETS.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (HISTOGRAM_BUCKETS[mid]! >= v) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

function histogramValue(s: Series): HistogramValue {
  const buckets: Array<[number, number]> = [];
  let cumulative = 0;
  for (let i = 0; i < HISTOGRAM_BUCKETS.length; i++) {
    const n = s.buckets![i]!;
    cumulative += n;
    if (n > 0) buckets.push([HISTOGRAM_BUCKETS[i]!, cumulative]);
  }
  return { count: s.count, sum: s.sum, buckets };
}

function toMetric(s: Series): Metric {
  return {
    name: s.name,
    kind: s.kind,
    value: s.kind === "histogram" ? histogramValue(s) : s.value,
    labels: { ...s.labels },
    timestamp: s.timestamp,
  };
}
