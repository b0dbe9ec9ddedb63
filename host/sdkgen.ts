// The SDKs' typed methods, generated from the catalogue (capabilities/families.ts, each method's
// params and result schema; named types from capabilities/schemas.ts):
//
// - sdk/types/generated.ts: the result and parameter types module authors see, and one
//   interface of methods per family (ChainMethods, ...) that sdk/types/index.ts extends with
//   what is hand-written there (overloads, methods that take a function);
// - sdk/rust/src/generated.rs: the Rust SDK's typed methods on `Client`, with their param
//   structs, and the catalogue's method list (the result structs stay in types.rs, which
//   test/sdkgen.test.ts checks against the named schemas field by field).
//
// - sdk/types/events.ts: the event payloads, a copy of protocol/events.ts (their one
//   declaration, shared by the chain backends and the host's event catalogue), so that
//   modhost/sdk imports nothing outside sdk/types.
//
// Only what is mechanical is generated; a method whose SDK form is not (overloads, a Rust
// form the wire does not have) says so in its family file (`handWritten`), and is then
// written by hand in sdk/types/index.ts or sdk/rust/src/requests.rs. Both files are written by
// `modhost docs --write` beside the generated docs and checked by the same test.

import { readFileSync } from "node:fs";
import type * as v from "valibot";
import { FAMILIES } from "../capabilities/families.ts";
import { nameOf as nameOfExact, rustByHand as rustByHandExact } from "../capabilities/schemas.ts";
import type { Family, MethodDef } from "../capabilities/types.ts";

type Schema = v.GenericSchema & Record<string, unknown>;

const HEADER = [
  "Generated from the catalogue: edit the family file (capabilities/*.ts; named types in",
  "capabilities/schemas.ts), not this file. `node bin/modhost.js docs --write` rewrites it;",
  "test/docs.test.ts fails when it is stale.",
];

/** Words of `text` in lines of at most `width` characters. */
function wrap(text: string, width = 92): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines;
}

/** An SDK cannot express this schema mechanically: the method must be hand-written there. */
export class NotMechanical extends Error {}

function fail(where: string, what: string, sdk: "ts" | "rust"): never {
  throw new NotMechanical(
    `${where}: ${what} has no generated form in the ${sdk === "ts" ? "TypeScript" : "Rust"} SDK; ` +
    `give a named type in capabilities/schemas.ts, or mark the method handWritten: { ${sdk}: "why" } in its family file and write it in ${sdk === "ts" ? "sdk/types/index.ts" : "sdk/rust/src/requests.rs"}`,
  );
}

const s = (schema: unknown) => schema as Schema;
/** A lookup by schema that also sees through a pipe (which only adds a description or checks). */
const throughPipe = <T>(look: (x: object) => T | undefined) => (schema: object): T | undefined => {
  const pipe = (schema as Schema)["pipe"];
  return look(schema) ?? (Array.isArray(pipe) ? look(pipe[0] as object) : undefined);
};
/** A schema's SDK name (capabilities/schemas.ts named()). */
const nameOf = throughPipe(nameOfExact);
const rustByHand = throughPipe(rustByHandExact);
/** The actions of a schema's pipe, with those of the schema it extends (doc(u64) pipes a pipe). */
const actionsOf = (y: Schema): Array<Record<string, unknown>> =>
  ((y["pipe"] as Array<Record<string, unknown>> | undefined) ?? []).flatMap((a, i) => (i === 0 && a !== y && a["kind"] === "schema" ? actionsOf(a as Schema) : [a]));
const metadata = (schema: Schema, key: string): boolean =>
  actionsOf(schema).some((a) => a["type"] === "metadata" && (a["metadata"] as Record<string, unknown>)[key] === true);
const entries = (schema: Schema) => schema["entries"] as Record<string, Schema>;
const isOptional = (schema: Schema) => schema.type === "optional" || schema.type === "exact_optional" || schema.type === "nullish";
const descriptionOf = (schema: Schema): string | undefined => {
  const pipe = schema["pipe"] as Array<Record<string, unknown>> | undefined;
  const d = pipe?.find((a) => a["type"] === "description");
  return d ? String(d["description"]) : undefined;
};
/** The schema a wrapper (optional, nullable, ...) wraps. */
const inner = (schema: Schema) => schema["wrapped"] as Schema;

/** Named schemas reachable from the catalogue, in first-use order (a name's first definition wins). */
function collectNamed(families: readonly Family[]): Map<string, Schema> {
  const out = new Map<string, Schema>();
  const seen = new Set<object>();
  const walk = (x: Schema) => {
    if (seen.has(x)) return;
    seen.add(x);
    const name = nameOf(x);
    if (name && out.has(name)) return;
    for (const key of ["wrapped", "item", "value"]) if (x[key] && typeof x[key] === "object") walk(x[key] as Schema);
    for (const key of ["options", "items"]) if (Array.isArray(x[key])) for (const o of x[key] as unknown[]) if (o && typeof o === "object" && "kind" in o) walk(o as Schema);
    if (x["entries"]) for (const e of Object.values(entries(x))) walk(e);
    if (name) out.set(name, x);
  };
  for (const f of families) {
    for (const m of f.methods) { walk(s(m.params)); walk(s(m.result)); }
    for (const t of f.types ?? []) walk(s(t));
  }
  return out;
}

// ---------------------------------------------------------------- TypeScript

const camel = (name: string) => name.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
const tsKey = (k: string) => (/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(k) ? k : JSON.stringify(k));

function tsType(x: Schema, where: string, top = true): string {
  const name = nameOf(x);
  if (name && !top) return name === "Bytes" ? "Uint8Array" : name;
  switch (x.type) {
    case "string": return "string";
    case "number": return "number";
    case "boolean": return "boolean";
    case "unknown": return "Plain";
    case "null": return "null";
    case "literal": return JSON.stringify(x["literal"]);
    case "picklist": return (x["options"] as unknown[]).map((o) => JSON.stringify(o)).join(" | ");
    case "custom": if (name === "Bytes") return "Uint8Array"; if (metadata(x, "binOnWire")) return "string"; break;
    case "nullable": return `${tsType(inner(x), where, false)} | null`;
    case "optional": case "exact_optional": return tsType(inner(x), where, false);
    case "array": { const t = tsType(s(x["item"]), where, false); return /^[A-Za-z0-9_]+$/.test(t) ? `${t}[]` : `Array<${t}>`; }
    case "record": return `Record<string, ${tsType(s(x["value"]), where, false)}>`;
    case "tuple": return `[${(x["items"] as Schema[]).map((i) => tsType(i, where, false)).join(", ")}]`;
    case "union": case "variant": return (x["options"] as Schema[]).map((o) => tsType(o, where, false)).join(" | ");
    case "object": case "strict_object": case "loose_object": {
      const fields = Object.entries(entries(x)).map(([k, e]) => `${tsKey(k)}${isOptional(e) ? "?" : ""}: ${tsType(e, `${where}.${k}`, false)}`);
      return fields.length ? `{ ${fields.join("; ")} }` : "Record<string, never>";
    }
  }
  return fail(where, `a schema of type "${x.type}"`, "ts");
}

const jsdoc = (lines: string[], indent = "") => {
  const text = wrap(lines.filter(Boolean).join(" "));
  if (!text.length) return [];
  if (text.length === 1 && text[0]!.length < 90) return [`${indent}/** ${text[0]} */`];
  return [`${indent}/**`, ...text.map((l) => `${indent} * ${l}`), `${indent} */`];
};

/** Whether a schema contains `unknown` where a generic type parameter can stand (top level or under nullable). */
const genericResult = (x: Schema): boolean => x.type === "unknown" || (x.type === "nullable" && inner(x).type === "unknown");

function tsMethod(family: string, m: MethodDef): string[] {
  const where = `${m.name} (capabilities/${family}.ts)`;
  const params = s(m.params);
  const fields = entries(params);
  const args: string[] = [];
  const argNames = new Set(m.args);
  m.args.forEach((arg, i) => {
    const rest = m.args.slice(i + 1);
    const laterRequired = rest.some((a) => a !== "options" && fields[a] && !isOptional(fields[a]));
    if (arg === "options") {
      const opt = Object.entries(fields).filter(([k]) => !argNames.has(k));
      const named = nameOf(params);
      const type = named ?? `{ ${opt.map(([k, e]) => `${tsKey(k)}${isOptional(e) ? "?" : ""}: ${tsType(e, `${where}.${k}`, false)}`).join("; ")} }`;
      const optional = opt.every(([, e]) => isOptional(e)) && !laterRequired;
      args.push(`options${optional ? "?" : ""}: ${type}`);
      return;
    }
    const e = fields[arg];
    if (!e) fail(where, `the argument "${arg}" (not a parameter)`, "ts");
    args.push(`${camel(arg)}${isOptional(e) && !laterRequired ? "?" : ""}: ${tsType(e, `${where}.${arg}`, false)}`);
  });
  const result = s(m.result);
  const generic = genericResult(result);
  const ret = generic ? (result.type === "nullable" ? "T | null" : "T") : tsType(result, `${where} result`, false);
  const perm = m.permission ? `Needs ${m.permission}.` : "";
  return [...jsdoc([m.summary, perm], "  "), `  ${m.js}${generic ? "<T extends Plain = Plain>" : ""}(${args.join(", ")}): Promise<${ret}>;`];
}

const interfaceName = (family: string) => `${family[0]!.toUpperCase()}${family.slice(1)}Methods`;

/** sdk/types/generated.ts; `families` are the catalogue's unless a test passes its own. */
export function typescriptSdk(families: readonly Family[] = FAMILIES): string {
  const out: string[] = [
    "// The typed methods of `ctx` and the types they answer.",
    "//",
    ...HEADER.map((l) => `// ${l}`),
    "//",
    "// Imported by sdk/types/index.ts (what module authors import as modhost/sdk), which adds the",
    "// methods written by hand (listed in HandWritten below, with why).",
    "",
    "/** Plain data: what crosses into and out of a module (copied, never shared). */",
    "export type Plain = null | boolean | number | string | Uint8Array | Plain[] | { [key: string]: Plain };",
    "",
  ];
  for (const [name, x] of collectNamed(families)) {
    if (name === "Bytes") continue;
    const desc = descriptionOf(x);
    const type = x.type;
    if (type === "object" || type === "strict_object" || type === "loose_object") {
      out.push(...jsdoc([desc ?? ""]), `export interface ${name} {`);
      for (const [k, e] of Object.entries(entries(x))) {
        out.push(...jsdoc([descriptionOf(e) ?? ""], "  "), `  ${tsKey(k)}${isOptional(e) ? "?" : ""}: ${tsType(e, `${name}.${k}`, false)};`);
      }
      out.push("}", "");
    } else {
      out.push(...jsdoc([desc ?? ""]), `export type ${name} = ${tsType(x, name)};`, "");
    }
  }
  const handWritten: string[] = [];
  const all: string[] = [];
  for (const f of families) {
    const generated: string[] = [];
    const names: string[] = [];
    for (const m of f.methods) {
      names.push(JSON.stringify(m.js));
      const why = m.callback ? `takes a function, which the host calls with \`${m.callback}\` invocations` : m.handWritten?.ts;
      if (why) handWritten.push(`  /** ${f.name}.${m.js}: ${why}. */`, `  ${JSON.stringify(`${f.name}.${m.js}`)}: true;`);
      else generated.push(...tsMethod(f.name, m));
    }
    out.push(`/** ctx.${f.name}: ${f.summary} */`);
    if (generated.length) out.push(`export interface ${interfaceName(f.name)} {`, ...generated, "}", "");
    else out.push(`export type ${interfaceName(f.name)} = Record<never, never>;`, "");
    all.push(`  ${f.name}: ${names.join(" | ")};`);
  }
  out.push(
    "/** The methods of each family on `ctx`, by name: every one must be on its family's interface. */",
    "export interface CatalogueMethods {", ...all, "}", "",
    "/** The methods sdk/types/index.ts writes by hand, and why. */",
    "export interface HandWritten {", ...handWritten, "}",
  );
  return out.join("\n") + "\n";
}

// ---------------------------------------------------------------- Rust

const RUST_KEYWORDS = new Set(["type", "move", "ref", "match", "fn", "mod", "use", "impl", "loop", "self", "crate", "super", "where", "async", "await", "dyn", "box", "in", "for", "if", "else", "let", "mut", "pub", "return", "static", "struct", "trait", "true", "false", "enum", "const", "extern", "unsafe", "while", "break", "continue", "as"]);
const rustIdent = (k: string) => (RUST_KEYWORDS.has(k) ? `r#${k}` : k);
const pascal = (name: string) => name.split("_").map((p) => p[0]!.toUpperCase() + p.slice(1)).join("");

/** Range of an integer schema from its pipe: the Rust integer type. */
function rustNumber(x: Schema): string {
  const pipe = actionsOf(x);
  if (!pipe.some((a) => a["type"] === "integer")) return "f64";
  const min = pipe.filter((a) => a["type"] === "min_value").map((a) => Number(a["requirement"]));
  const max = pipe.filter((a) => a["type"] === "max_value").map((a) => Number(a["requirement"]));
  if (!min.length || Math.max(...min) < 0) return "i64";
  return max.length && Math.min(...max) <= 0xffffffff ? "u32" : "u64";
}

interface RustParam {
  /** The argument's type in the method's signature. */
  arg: string;
  /** The field's type in the param struct. */
  field: string;
  /** Uses the struct's lifetime. */
  borrows: boolean;
  /** A generic serialisable value: `&T`. */
  generic: boolean;
}

function rustParam(x: Schema, where: string): RustParam {
  const name = nameOf(x);
  const plain = (t: string): RustParam => ({ arg: t, field: t, borrows: false, generic: false });
  const borrowed = (t: string): RustParam => ({ arg: `&${t}`, field: `&'a ${t}`, borrows: true, generic: false });
  if (name && (x.type === "picklist" || x.type === "variant" || x.type === "union" || x.type.endsWith("object"))) {
    return x.type === "picklist" ? plain(name) : borrowed(name);
  }
  switch (x.type) {
    case "string": case "picklist": return borrowed("str");
    case "number": return plain(rustNumber(x));
    case "boolean": return plain("bool");
    case "unknown": return { arg: "&T", field: "&'a T", borrows: true, generic: true };
    case "optional": case "exact_optional": return rustParam(inner(x), where);
    case "array": {
      const item = s(x["item"]);
      const itemName = nameOf(item);
      if (itemName) return borrowed(`[${itemName}]`);
      if (item.type === "string") return { arg: "&[&str]", field: "&'a [&'a str]", borrows: true, generic: false };
      break;
    }
  }
  return fail(where, `a parameter schema of type "${x.type}"`, "rust");
}

function rustResult(x: Schema, where: string, generic: string | undefined): string {
  const name = nameOf(x);
  if (name === "Bytes") return "Bytes";
  if (name && name !== "Hex") return name;
  switch (x.type) {
    case "string": case "picklist": return "String";
    case "number": return rustNumber(x);
    case "boolean": return "bool";
    case "unknown": if (generic) return generic; break;
    case "nullable": return `Option<${rustResult(inner(x), where, generic)}>`;
    case "array": return `Vec<${rustResult(s(x["item"]), where, undefined)}>`;
    case "record": {
      const value = s(x["value"]);
      return value.type === "unknown" ? "Value" : `BTreeMap<String, ${rustResult(value, where, undefined)}>`;
    }
  }
  return fail(where, `a result schema of type "${x.type}"`, "rust");
}

function rustFieldType(x: Schema, where: string): string {
  const name = nameOf(x);
  if (metadata(x, "binOnWire")) return "String";
  if (name && name !== "Hex") return name;
  switch (x.type) {
    case "string": case "picklist": return "String";
    case "number": return rustNumber(x);
    case "boolean": return "bool";
    case "unknown": return "Value";
    case "optional": case "exact_optional": case "nullable": case "nullish": return `Option<${rustFieldType(inner(x), where)}>`;
    case "array": return `Vec<${rustFieldType(s(x["item"]), where)}>`;
    case "record": return `BTreeMap<String, ${rustFieldType(s(x["value"]), where)}>`;
    case "tuple": return `(${(x["items"] as Schema[]).map((i) => rustFieldType(i, where)).join(", ")})`;
  }
  return fail(where, `a field schema of type "${x.type}"`, "rust");
}

/** The Rust structs of the named object types, and the named types written by hand in types.rs (with why). */
function rustStructs(families: readonly Family[]): { code: string[]; byHand: string[] } {
  const code: string[] = [];
  const byHand: string[] = [];
  for (const [name, x] of collectNamed(families)) {
    if (name === "Hex" || name === "Bytes") continue;
    const hand = rustByHand(x) ?? (x.type === "picklist" ? "an enum, its variants documented one by one" : undefined);
    if (hand) {
      byHand.push(`//! - \`${name}\`: ${hand}.`);
      continue;
    }
    if (!x.type.endsWith("object")) fail(name, `a named schema of type "${x.type}"`, "rust");
    code.push(...rustDoc([literal(descriptionOf(x) ?? "")], ""), "#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]", `pub struct ${name} {`);
    for (const [k, e] of Object.entries(entries(x))) {
      // Left out of the Rust struct (serde skips what it does not name): see capabilities/schemas.ts notInRust.
      if (metadata(e, "notInRust")) continue;
      const type = rustFieldType(e, `${name}.${k}`);
      code.push(...rustDoc([literal(descriptionOf(e) ?? "")], "    "));
      // Absent, an Option reads as None and a list as empty (older hosts, lighter forms).
      // Binary on the wire, hex here (capabilities/schemas.ts RawHex): read by value::hex_from_bin.
      const hex = metadata(e, "binOnWire") ? ', deserialize_with = "crate::value::hex_from_bin"' : "";
      if (type.startsWith("Option<") || type.startsWith("Vec<") || metadata(e, "omittedWhenLight")) code.push(`    #[serde(default${hex})]`);
      else if (hex) code.push(`    #[serde(${hex.slice(2)})]`);
      const field = RUST_KEYWORDS.has(k) ? `${k}_` : k;
      if (field !== k) code.push(`    #[serde(rename = "${k}")]`);
      code.push(`    pub ${field}: ${type},`);
    }
    code.push("}", "");
  }
  return { code, byHand };
}

const rustDoc = (lines: string[], indent: string) => wrap(lines.filter(Boolean).join(" ")).map((l) => `${indent}/// ${l}`);
/** Text for a doc comment whose square brackets are not links. */
const literal = (text: string) => text.replace(/\[/g, "\\[").replace(/\]/g, "\\]");

function rustMethod(family: string, m: MethodDef, structs: string[]): string[] {
  const where = `${m.name} (capabilities/${family}.ts)`;
  const params = s(m.params);
  const fields = entries(params);
  const perm = m.permission ? `Needs \`${m.permission}\`.` : "";
  const calls = m.callback ? `Calls arrive as \`${m.callback}\` invocations: handle them with [\`Client::on_${m.callback}\`] first.` : "";
  const docs = rustDoc([literal(m.summary), calls, perm], "    ");
  const result = s(m.result);
  const unit = result.type === "literal" && result["literal"] === true;
  // A callback's function is not a wire parameter: in Rust it is registered with Client::on_*.
  const wireArgs = m.args.filter((a) => a !== "options" && !(m.callback && !fields[a]));
  const params_ = wireArgs.map((a) => {
    const e = fields[a];
    if (!e) fail(where, `the argument "${a}" (not a parameter)`, "rust");
    return [a, rustParam(e, `${where}.${a}`)] as const;
  });
  const paramGeneric = params_.some(([, p]) => p.generic);
  const resultGeneric = genericResult(result) ? (paramGeneric ? "R" : "T") : undefined;
  const ret = unit ? "()" : rustResult(result, `${where} result`, resultGeneric);
  const generics = [
    ...(paramGeneric ? [`T: Serialize + ?Sized`] : []),
    ...(resultGeneric ? [`${resultGeneric}: DeserializeOwned`] : []),
  ];
  const signature = params_.map(([a, p]) => `${rustIdent(a)}: ${p.arg}`);
  let body: string;
  const call = unit ? "self.request_raw" : "self.request";
  const tail = unit ? ".map(drop)" : "";
  if (m.args.length === 1 && m.args[0] === "options" && nameOf(params)) {
    // The whole params object is one named type the caller builds.
    signature.push(`options: &${nameOf(params)}`);
    body = `${call}("${m.name}", options)${tail}`;
  } else if (params_.length === 0) {
    body = `${call}("${m.name}", &NoParams {})${tail}`;
  } else {
    const struct = `${pascal(m.name)}Params`;
    const borrows = params_.some(([, p]) => p.borrows);
    const typeParams = [...(borrows ? ["'a"] : []), ...(paramGeneric ? ["T: Serialize + ?Sized"] : [])];
    structs.push(
      `/// The params of \`${m.name}\`.`,
      "#[derive(Serialize)]",
      `struct ${struct}${typeParams.length ? `<${typeParams.join(", ")}>` : ""} {`,
      ...params_.map(([a, p]) => `    ${rustIdent(a)}: ${p.field},`),
      "}",
      "",
    );
    body = `${call}("${m.name}", &${struct} { ${params_.map(([a]) => rustIdent(a)).join(", ")} })${tail}`;
  }
  return [
    ...docs,
    `    pub fn ${m.name}${generics.length ? `<${generics.join(", ")}>` : ""}(&self${signature.map((x) => `, ${x}`).join("")}) -> Result<${ret}> {`,
    `        ${body}`,
    "    }",
  ];
}

/** sdk/rust/src/generated.rs; `families` are the catalogue's unless a test passes its own. */
export function rustSdk(families: readonly Family[] = FAMILIES): string {
  const structs: string[] = [];
  const methods: string[] = [];
  const all: string[] = [];
  const hand: string[] = [];
  for (const f of families) {
    methods.push(`    // ${f.name}: ${f.summary}`, "");
    for (const m of f.methods) {
      all.push(`    "${m.name}",`);
      if (m.handWritten?.rust) {
        hand.push(`    // ${m.name}: ${m.handWritten.rust}`, `    "${m.name}",`);
        continue;
      }
      methods.push(...rustMethod(f.name, m, structs), "");
    }
  }
  while (methods.at(-1) === "") methods.pop();
  const types = rustStructs(families);
  return [
    "//! The typed methods of [`Client`], one per host method.",
    "//!",
    ...HEADER.map((l) => `//! ${l}`),
    "//!",
    "//! The methods listed in [`HAND_WRITTEN`] are written by hand in requests.rs instead (why is",
    "//! beside each). The structs of the named types are below; these are written by hand in",
    "//! types.rs:",
    ...types.byHand,
    "",
    "#![allow(clippy::all)]",
    "",
    "#[allow(unused_imports)]",
    "use std::collections::BTreeMap;",
    "",
    "#[allow(unused_imports)]",
    "use serde::de::DeserializeOwned;",
    "use serde::{Deserialize, Serialize};",
    "",
    "use crate::client::Client;",
    "use crate::error::Result;",
    "#[allow(unused_imports)]",
    "use crate::types::*;",
    "#[allow(unused_imports)]",
    "use crate::value::{Bytes, Value};",
    "",
    "/// Every method of the host's catalogue, by wire name, in the catalogue's order.",
    "pub const CATALOGUE_METHODS: &[&str] = &[",
    ...all,
    "];",
    "",
    "/// The methods whose typed form is written by hand in requests.rs, and why.",
    "pub const HAND_WRITTEN: &[&str] = &[",
    ...hand,
    "];",
    "",
    "/// The params of a method that takes none.",
    "#[derive(Serialize)]",
    "struct NoParams {}",
    "",
    ...types.code,
    ...structs,
    "impl Client {",
    ...methods,
    "}",
    "",
  ].join("\n");
}

/** sdk/types/events.ts: protocol/events.ts as it is, under a header that says so. */
export function typescriptEvents(): string {
  const source = readFileSync(new URL("../protocol/events.ts", import.meta.url), "utf8");
  return [
    "// The event payloads module authors receive: a copy of protocol/events.ts, the one",
    "// declaration the host and the chain backends use. Edit that file, not this one;",
    "// `node bin/modhost.js docs --write` copies it again, and test/docs.test.ts fails when this",
    "// copy is stale.",
    "",
    source,
  ].join("\n");
}
