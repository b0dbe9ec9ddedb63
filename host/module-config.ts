// A module's configuration: the operator's [modules.module_configs.NAME] checked against the
// module's [config_schema]. Defaults from the schema fill in what the operator left out;
// required keys must be present; values must have the declared type; keys the schema does not
// declare are refused (with "did you mean") when the module declares a schema at all. Problems
// point at the line in modhost.toml.

import type { HostConfig } from "./config.ts";
import type { ConfigField, ModuleManifest } from "./manifest.ts";
import { Checker, typeName } from "./toml.ts";

function hasType(field: ConfigField, v: unknown): boolean {
  switch (field.type) {
    case "any": return true;
    case "string": return typeof v === "string";
    case "number": return typeof v === "number";
    case "integer": return typeof v === "number" && Number.isInteger(v);
    case "boolean": return typeof v === "boolean";
    case "array": return Array.isArray(v);
    case "table": return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);
  }
}

/** The configuration handed to the module; throws ConfigError naming each problem. */
export function moduleConfig(config: HostConfig, manifest: ModuleManifest): Record<string, unknown> {
  const given = config.modules.module_configs[manifest.name] ?? {};
  const schema = manifest.config_schema;
  const at = ["modules", "module_configs", manifest.name];
  const c = new Checker(config.file ?? "modhost.toml", config.source ?? "");
  const out: Record<string, unknown> = {};
  const declared = Object.keys(schema);
  if (declared.length > 0) c.knownKeys(given, at, declared);
  for (const [key, value] of Object.entries(given)) {
    const field = schema[key];
    if (field && !hasType(field, value)) {
      c.report([...at, key], `${manifest.name} expects ${key} to be ${field.type === "integer" || field.type === "array" ? "an" : "a"} ${field.type}, found ${typeName(value)}`, field.description ? `${key}: ${field.description}` : undefined);
      continue;
    }
    if (value instanceof Date) {
      c.report([...at, key], "dates and times cannot be handed to a module", "quote it as a string");
      continue;
    }
    out[key] = value;
  }
  for (const [key, field] of Object.entries(schema)) {
    if (key in out) continue;
    if (field.default !== undefined) out[key] = field.default;
    else if (field.required) c.report(at, `${manifest.name} requires ${key} in [${at.join(".")}]`, `add ${key} = ...${field.description ? ` (${field.description})` : ""}`);
  }
  c.throwIfProblems();
  return out;
}
