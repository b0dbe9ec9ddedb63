// The operator guide's key tables, generated from the config schema (host/config.ts): the
// keys, their defaults and what they mean come from the schema and its metadata, so the guide
// cannot drift from what modhost accepts. `modhost docs --write` splices them into
// docs/operator-guide.md between `<!-- config-table:NAME:start -->` and `...:end -->`
// markers; test/config-schema.test.ts fails when a committed table differs.

import { sectionSchemas } from "./config.ts";
import { docOf, type Schema, type TableSchema } from "./schema.ts";

/** How the guide shows a default value. */
function shownDefault(value: unknown, optional: boolean): string {
  if (value === undefined || value === null) return optional ? "none" : "required";
  if (typeof value === "string") return `\`${JSON.stringify(value)}\``;
  if (Array.isArray(value) && value.length === 0) return "`[]`";
  return `\`${JSON.stringify(value)}\``;
}

/** A `| Key | Default | Meaning |` table of one TOML table's keys. */
export function keyTable(schema: TableSchema<Record<string, Schema>>): string {
  const out = ["| Key | Default | Meaning |", "|---|---|---|"];
  for (const [key, entry] of Object.entries(schema.entries)) {
    const d = docOf(entry);
    if (d.hidden) continue;
    if (!d.description) throw new Error(`config key ${key} has no description: add one with doc(...) in its schema`);
    out.push(`| ${d.label ?? `\`${key}\``} | ${d.shown ?? shownDefault(d.default, d.optional)} | ${d.description} |`);
  }
  return out.join("\n");
}

/** Every generated table of the guide, by marker name. */
export function configTables(): Record<string, string> {
  const s = sectionSchemas(".");
  return {
    host: keyTable(s.host),
    chain: keyTable(s.chain),
    modules: keyTable(s.modules),
    hooks: keyTable(s.hooks),
    limits: keyTable(s.limits),
    rpc: keyTable(s.rpc),
    registry: keyTable(s.registry),
  };
}

const start = (name: string) => `<!-- config-table:${name}:start -->`;
const end = (name: string) => `<!-- config-table:${name}:end -->`;

/** `guide` with each generated table replaced by what the schema says now. */
export function spliceConfigTables(guide: string, tables: Record<string, string> = configTables()): string {
  let out = guide;
  for (const [name, text] of Object.entries(tables)) {
    const a = out.indexOf(start(name));
    const b = out.indexOf(end(name));
    if (a < 0 || b < a) throw new Error(`docs/operator-guide.md has no ${start(name)} ... ${end(name)} section`);
    out = `${out.slice(0, a + start(name).length)}\n${text}\n${out.slice(b)}`;
  }
  return out;
}

/** The generated tables as committed in `guide`, by marker name (undefined: markers missing). */
export function committedConfigTables(guide: string): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  for (const name of Object.keys(configTables())) {
    const a = guide.indexOf(start(name));
    const b = guide.indexOf(end(name));
    out[name] = a < 0 || b < a ? undefined : guide.slice(a + start(name).length + 1, b - 1);
  }
  return out;
}
