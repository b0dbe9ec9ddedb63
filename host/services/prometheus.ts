// The /metrics page: the Prometheus text exposition format 0.0.4 of the host's own metrics and
// of every module's series (host/services/metrics.ts keeps them), rendered in slices of the
// loop and bounded as a whole (MAX_METRICS_PAGE_BYTES).

import type { Metric } from "../../capabilities/types.ts";
import { Slicer } from "../../chain/slices.ts";
import { HISTOGRAM_BUCKETS, type MetricsStore, type Series } from "./metrics.ts";

/** One host metric family. */
export interface HostMetricFamily {
  name: string;
  help: string;
  type: "counter" | "gauge";
  samples: Array<{ labels?: Record<string, string>; value: number }>;
}

function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

/** `k="v",...` of `labels`, escaped, without braces. */
function labelPairs(labels: Record<string, string>): string {
  return Object.entries(labels).map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(",");
}

function labelText(labels: Record<string, string>): string {
  const pairs = labelPairs(labels);
  return pairs ? `{${pairs}}` : "";
}

function num(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}


/** Bytes of one piece of the /metrics page (a series' lines are never cut across pieces). */
const PIECE_BYTES = 64 * 1024;

/**
 * The page's bytes, written as it is rendered into pieces of PIECE_BYTES (Buffers, outside the
 * JavaScript heap). The page used to be kept as strings, ~26 MiB for four modules at the
 * limits: young strings that survived into the next minor garbage collections, which copied
 * them (stretches of 0.14-1.1 s at load 28 in-process, GET /metrics under the real host up to
 * ~0.3 s). Now each series' lines live only until they are written here.
 */
class PageBytes {
  readonly pieces: Buffer[] = [];
  #buf = Buffer.allocUnsafeSlow(PIECE_BYTES);
  #used = 0;

  write(text: string): void {
    // UTF-8 is at most 3 bytes per UTF-16 unit: measure only when that bound does not fit.
    if (this.#used + text.length * 3 > this.#buf.length) {
      const need = Buffer.byteLength(text);
      if (this.#used + need > this.#buf.length) {
        this.#finish();
        this.#buf = Buffer.allocUnsafeSlow(Math.max(PIECE_BYTES, need));
      }
    }
    this.#used += this.#buf.write(text, this.#used);
  }

  /** The pieces written, the last one included; write no more after. */
  end(): Buffer[] {
    this.#finish();
    return this.pieces;
  }

  #finish(): void {
    if (this.#used > 0) this.pieces.push(this.#buf.subarray(0, this.#used));
    this.#used = 0;
  }
}

/**
 * Bytes of the /metrics page that modules' series may take, all modules together. A module at
 * its limits (MAX_SERIES histograms, MAX_SERIES_TEXT_CHARS) is ~6.6 MiB of page, and a host runs
 * up to 256 modules: 32 of them made a page of 207 MiB, 1.2 s of rendering and +260 MiB of the
 * host's memory at every scrape (in-process), 256 would make 1.6 GiB. Past it, each module gets
 * a fair part (water-filling: a module under an equal share keeps all its series, the others
 * share what is left equally); the series past a module's part are left off the page, counted
 * in `modhost_module_metric_series_omitted` and said in a comment line.
 */
export const MAX_METRICS_PAGE_BYTES = 64 * 1024 * 1024;

/** Characters of `v` once escaped as a label value. */
function escapedLength(v: string): number {
  let n = v.length;
  if (/[\\\n"]/.test(v)) for (let i = 0; i < v.length; i++) if (v[i] === "\\" || v[i] === "\n" || v[i] === '"') n++;
  return n;
}

/** Characters of the `le` values of HISTOGRAM_BUCKETS and +Inf, on a histogram's bucket lines. */
const LE_CHARS = HISTOGRAM_BUCKETS.reduce((n, b) => n + String(b).length, 0) + 4;

/**
 * Characters of the lines of series `s` of `module` under family name `family` as its values
 * are now (what the fair parts are made from; the lines written are measured as they are).
 */
function pageCharsOf(family: string, module: string, s: Series): number {
  let pairs = module.length + 9;
  for (const k in s.labels) pairs += k.length + escapedLength(s.labels[k]!) + 4;
  if (s.kind !== "histogram") return family.length + pairs + num(s.value).length + 4;
  const count = num(s.count).length;
  const buckets = HISTOGRAM_BUCKETS.length + 1;
  // family_bucket{pairs,le="X"} N per bucket, then family_sum{pairs} S and family_count{pairs} N.
  return buckets * (family.length + pairs + count + 18) + LE_CHARS + (family.length + pairs + num(s.sum).length + 9) + (family.length + pairs + count + 11);
}

/** Each module's part of `cap` (water-filling over what each would take). */
function fairParts(wants: ReadonlyMap<string, number>, cap: number): Map<string, number> {
  const parts = new Map<string, number>();
  const order = [...wants].sort((a, b) => a[1] - b[1]);
  let left = cap;
  for (let i = 0; i < order.length; i++) {
    const [module, want] = order[i]!;
    const share = left / (order.length - i);
    const part = Math.min(want, share);
    parts.set(module, part);
    left -= part;
  }
  return parts;
}

/**
 * The text page for GET /metrics, in pieces (written one after the other): the host's
 * families, then every module's metrics with a `module` label. Module metrics keep their
 * names. When two modules use one name for different kinds, the kind of the alphabetically
 * first module keeps the name and the others are rendered as `<name>_<kind>` (one family has
 * one type in Prometheus). Modules' series take at most `cap` bytes of it (MAX_METRICS_PAGE_BYTES).
 *
 * A module may hold MAX_SERIES histograms of 28 lines each, their labels at
 * MAX_SERIES_TEXT_CHARS: 6.6 MiB of page per module. It was built in one piece on the host's
 * loop (0.3-0.5 s per such module at load 8-10), and a family's lines were spread into one
 * call (`push(...lines)`), past the stack's limit when ten modules shared a name: every
 * scrape failed. Now each series' labels are escaped once, the work gives the loop a turn
 * every few milliseconds (chain/slices.ts), and no list is spread.
 */
export async function renderPrometheus(host: readonly HostMetricFamily[], store: MetricsStore, cap = MAX_METRICS_PAGE_BYTES): Promise<Buffer[]> {
  const slicer = new Slicer();
  const head: string[] = [];
  for (const f of host) {
    head.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) head.push(`${f.name}${labelText(s.labels ?? {})} ${num(s.value)}`);
  }
  const pieces: Buffer[] = [Buffer.from(head.length ? head.join("\n") + "\n" : "")];
  // Family name -> kind and its series, in order; then each family's lines written in turn into
  // one PageBytes. A PageBytes per family (before) reserved a piece of PIECE_BYTES for each:
  // a module's 1000 gauges of distinct names made a page of 86 KiB hold 62.6 MiB of buffers,
  // sixteen such modules 1,001 MiB (test/hostile-round25-native.test.ts).
  const families = new Map<string, { kind: Metric["kind"]; members: Array<{ module: string; series: Series; chars: number }> }>();
  const wants = new Map<string, number>();
  let total = 0;
  for (const { module, series } of store.series()) {
    let want = 0;
    for (const s of series) {
      let family = s.name;
      const existing = families.get(family);
      if (existing && existing.kind !== s.kind) family = `${s.name}_${s.kind}`;
      let f = families.get(family);
      if (!f) {
        f = { kind: s.kind, members: [] };
        families.set(family, f);
      }
      const chars = pageCharsOf(family, module, s);
      f.members.push({ module, series: s, chars });
      want += chars;
    }
    wants.set(module, want);
    total += want;
    await slicer.tick();
  }
  // Within the cap, every series; past it, each module's fair part, its series in page order.
  const parts = total > cap ? fairParts(wants, cap) : undefined;
  const used = new Map<string, number>();
  const omitted = new Map<string, number>();
  const page = new PageBytes();
  for (const [family, f] of families) {
    let headed = false;
    for (const { module, series: s, chars } of f.members) {
      // Its characters as counted above (at most its bytes): a series that cannot fit is not made.
      if (parts && (used.get(module) ?? 0) + chars > parts.get(module)!) {
        omitted.set(module, (omitted.get(module) ?? 0) + 1);
        continue;
      }
      const pairs = labelPairs({ module, ...s.labels });
      let text: string;
      if (s.kind === "histogram") {
        let cumulative = 0;
        text = "";
        for (let i = 0; i < HISTOGRAM_BUCKETS.length; i++) {
          cumulative += s.buckets![i]!;
          text += `${family}_bucket{${pairs},le="${HISTOGRAM_BUCKETS[i]}"} ${num(cumulative)}\n`;
        }
        text += `${family}_bucket{${pairs},le="+Inf"} ${num(s.count)}\n${family}_sum{${pairs}} ${num(s.sum)}\n${family}_count{${pairs}} ${num(s.count)}\n`;
      } else {
        text = `${family}{${pairs}} ${num(s.value)}\n`;
      }
      if (parts) {
        const bytes = Buffer.byteLength(text);
        const now = used.get(module) ?? 0;
        if (now + bytes > parts.get(module)!) {
          omitted.set(module, (omitted.get(module) ?? 0) + 1);
          await slicer.tick();
          continue;
        }
        used.set(module, now + bytes);
      }
      if (!headed) {
        page.write(`# HELP ${family} Reported by modules (${f.kind}).\n# TYPE ${family} ${f.kind}\n`);
        headed = true;
      }
      page.write(text);
      await slicer.tick();
    }
  }
  if (omitted.size > 0) {
    const lines = [
      `# modhost: the series of ${omitted.size} module(s) would pass the ${cap} bytes of this page the host gives modules' metrics (MAX_METRICS_PAGE_BYTES, host/services/prometheus.ts); each module keeps a fair part, and the series past it are left off`,
      "# HELP modhost_module_metric_series_omitted Series of a module left off this page: its metrics would pass its fair part of MAX_METRICS_PAGE_BYTES.",
      "# TYPE modhost_module_metric_series_omitted gauge",
    ];
    for (const [module, n] of [...omitted].sort((a, b) => (a[0] < b[0] ? -1 : 1))) lines.push(`modhost_module_metric_series_omitted${labelText({ module })} ${n}`);
    page.write(lines.join("\n") + "\n");
  }
  for (const piece of page.end()) pieces.push(piece);
  return pieces;
}
