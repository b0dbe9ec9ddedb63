import type { Benchmark } from "./common.ts";
export const roundtrip: Benchmark = { name: "roundtrip", title: "x", run: async () => [] };
