import type { Benchmark } from "./common.ts";
export const storageCall: Benchmark = { name: "storage-call", title: "x", run: async () => [] };
