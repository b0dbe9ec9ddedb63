// Parameter schemas shared by several families.
import * as v from "valibot";

export const hash = v.pipe(v.string(), v.regex(/^[0-9a-fA-F]{64}$/, "expected a 64-character hex hash"), v.toLowerCase());
export const height = v.pipe(v.number(), v.integer("expected an integer height"), v.minValue(0));
export const vout = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(0xffffffff));
export const none = v.object({});
