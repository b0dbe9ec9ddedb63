// Helpers for the verification and registry tests: real keys, real module directories on
// disk, real signatures (host/verify/sign.ts, the code behind `modhost sign`).

import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import type { HostConfig } from "../../host/config.ts";
import { generateSecretKey, secretKeyFromBytes, type Scheme, type SecretKey } from "../../host/verify/keys.ts";
import { signModule } from "../../host/verify/sign.ts";

export function newKey(name: string): SecretKey {
  return secretKeyFromBytes(generateSecretKey(), name);
}

export interface TsModuleSpec {
  name: string;
  version?: string;
  capabilities?: string[];
  dependencies?: Record<string, string>;
  /** The body of start(ctx). */
  body?: string;
  /** Extra manifest lines (top level, before any table). */
  extra?: string;
  /** Extra tables appended to the manifest. */
  tables?: string;
  description?: string;
}

/** A TypeScript module directory (module.toml, index.ts, lib.ts) at `dir`. */
export async function writeTsModule(dir: string, spec: TsModuleSpec): Promise<string> {
  await mkdir(dir, { recursive: true });
  const deps = Object.entries(spec.dependencies ?? {});
  const toml = [
    `# ${spec.name}: a test module`,
    `name = "${spec.name}"`,
    `version = "${spec.version ?? "1.0.0"}"`,
    'entry_point = "index.ts"',
    `description = "${spec.description ?? `test module ${spec.name}`}"`,
    `capabilities = [${(spec.capabilities ?? []).map((c) => JSON.stringify(c)).join(", ")}]`,
    spec.extra ?? "",
    ...(deps.length ? ["", "[dependencies]", ...deps.map(([d, r]) => `"${d}" = "${r}"`)] : []),
    spec.tables ?? "",
    "",
  ].join("\n");
  await writeFile(path.join(dir, "module.toml"), toml);
  await writeFile(path.join(dir, "lib.ts"), `export const LABEL = "${spec.name} ${spec.version ?? "1.0.0"}";\n`);
  await writeFile(path.join(dir, "index.ts"), [
    'import { LABEL } from "./lib.ts";',
    "export default async function start(ctx: any): Promise<void> {",
    // biome-ignore lint/suspicious/noTemplateCurlyInString: module source code, interpolated when the module runs.
    "  ctx.log.info(`started ${LABEL}`);",
    `  ${spec.body ?? ""}`,
    "}",
    "",
  ].join("\n"));
  return dir;
}

/** Sign `dir` with each key in turn (as several maintainers would). */
export async function signWith(dir: string, keys: SecretKey[], scheme: Scheme = "schnorr"): Promise<void> {
  for (const k of keys) await signModule(dir, k, { scheme });
}

/** Require signatures for `module` from `keys` (threshold default 1). */
export function trust(config: HostConfig, module: string, keys: SecretKey[], threshold = 1): void {
  config.modules.trust[module] = { keys: keys.map((k) => k.publicKey), threshold, signatures: "require" };
}
