// modhost/testing at run time (package.json "exports"; the types are testing/index.ts). The
// harness is TypeScript like the rest of modhost: tsx compiles it on import, so an author's
// test runs under any runner and any loader (node:test with Node's own type stripping, ava,
// vitest) without a build step.
import { tsImport } from "tsx/esm/api";

const harness = await tsImport("./index.ts", import.meta.url);

export const startHost = harness.startHost;
export const TestHost = harness.TestHost;
export const RpcError = harness.RpcError;
export const TEST_LIMITS = harness.TEST_LIMITS;
