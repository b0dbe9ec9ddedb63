// Metrics. A module reports its own metrics (counters add, gauges set, histograms collect
// observations); modules holding read_metrics read any module's. The host keeps them
// (host/services/metrics.ts) and serves them, with its own, as Prometheus text on the RPC
// server's /metrics.
import * as v from "valibot";
import { method, type CallContext, type Family, serviceOf } from "./types.ts";
import { Metric, done } from "./schemas.ts";

const service = (c: CallContext) => serviceOf(c, "metrics");

const kind = v.picklist(["counter", "gauge", "histogram"]);
const value = v.union([v.number(), v.pipe(v.array(v.number()), v.maxLength(1000))]);

export const metrics: Family = {
  name: "metrics",
  summary: "Report the module's metrics; read modules' metrics.",
  methods: [
    method({
      name: "report_metric", result: done, handWritten: { ts: "a number or a list, kind and labels in options", rust: "MetricValue, MetricKind and labels as pairs" }, js: "report", permission: "report_metrics", args: ["name", "value", "options"],
      params: v.object({ name: v.string(), value, kind: v.optional(kind), labels: v.optional(v.record(v.string(), v.string())) }),
      summary: "Report a metric: kind counter (adds value), gauge (sets it; the default for a number) or histogram (observations; the default for a list); optional labels.",
      handler: async (c, p) => {
        const k = p.kind ?? (Array.isArray(p.value) ? "histogram" : "gauge");
        service(c).report(c.module, { name: p.name, kind: k, value: p.value, labels: p.labels ?? {} });
        return true as const;
      },
    }),
    method({
      name: "get_module_metrics", result: v.array(Metric), js: "get", permission: "read_metrics", args: ["module"],
      params: v.object({ module: v.string() }),
      summary: "A module's metrics: [{name, kind, value, labels, timestamp}] (empty when it reported none or is not running); a histogram's value is {count, sum, buckets: [[le, cumulative count], ...]}.",
      handler: async (c, p) => service(c).get(p.module, c.maxAnswerBytes),
    }),
    method({
      name: "get_all_metrics", result: v.record(v.string(), v.array(Metric)), js: "all", permission: "read_metrics", args: [],
      params: v.object({}),
      summary: "Every running module's metrics, by module name.",
      handler: async (c) => service(c).all(c.maxAnswerBytes),
    }),
  ],
};
