// Checking a module's parameters against a schema at a cost that does not grow with how wrong
// they are. valibot makes an issue for every element that fails (a subscribe_events whose
// types are 65,000 numbers: 65,000 issues, then a summary of 4.4 MB, for a refusal cut to 4 KiB:
// 106 ms of the host's loop in one turn at load 11, 150-650 ms in a bench). Here the parse
// stops at the first problem; only a value of at most FULL_CHECK_MAX_VALUES values is checked
// again in full for the message, which names at most MAX_NAMED_ISSUES problems and counts the rest.

import * as v from "valibot";

/** Values a failed parameter check may walk again in full to name every problem. */
const FULL_CHECK_MAX_VALUES = 1000;
/** Problems a refusal names; the rest are counted. */
const MAX_NAMED_ISSUES = 16;

/** Whether `value` holds at most `max` values (nested ones counted), found without walking past `max`. */
function atMostValues(value: unknown, max: number): boolean {
  const stack: unknown[] = [value];
  let seen = 0;
  while (stack.length > 0) {
    const x = stack.pop();
    if (++seen > max) return false;
    if (Array.isArray(x)) {
      if (seen + x.length > max) return false;
      for (const y of x) stack.push(y);
    } else if (x !== null && typeof x === "object" && !ArrayBuffer.isView(x)) {
      for (const k in x) {
        if (!Object.hasOwn(x, k)) continue;
        if (++seen > max) return false;
        stack.push((x as Record<string, unknown>)[k]);
      }
    }
  }
  return true;
}

export type BoundedParse<T> = { success: true; output: T } | { success: false; message: string };

/** `schema`'s parse of `input`, or a refusal's text (valibot's summary, one problem a line). */
export function parseBounded<S extends v.GenericSchema>(schema: S, input: unknown): BoundedParse<v.InferOutput<S>> {
  const quick = v.safeParse(schema, input, { abortEarly: true });
  if (quick.success) return { success: true, output: quick.output };
  const whole = atMostValues(input, FULL_CHECK_MAX_VALUES);
  const issues = (whole ? v.safeParse(schema, input).issues : undefined) ?? quick.issues;
  const named = issues.slice(0, MAX_NAMED_ISSUES) as typeof issues;
  const notes = [
    ...(issues.length > named.length ? [`(${issues.length - named.length} more problems)`] : []),
    ...(whole ? [] : [`(the first problem only: the parameters hold more than ${FULL_CHECK_MAX_VALUES} values, FULL_CHECK_MAX_VALUES)`]),
  ];
  return { success: false, message: [v.summarize(named), ...notes].join("\n") };
}
