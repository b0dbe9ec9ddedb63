// The SDKs generated from the catalogue (host/sdkgen.ts). That the committed files are current
// is test/docs.test.ts's job; here: what the generator makes of a method, that it refuses what
// it cannot express with the way out in its message, and (checked by tsc, which CI runs before
// the tests) that the generated TypeScript types are the schemas' types and that ctx has every
// catalogue method.

import test from "ava";
import * as v from "valibot";
import { METHODS } from "../capabilities/families.ts";
import * as S from "../capabilities/schemas.ts";
import { method, type Family } from "../capabilities/types.ts";
import { NotMechanical, rustSdk, typescriptSdk } from "../host/sdkgen.ts";
import type * as Sdk from "../sdk/types/generated.ts";
import type { ModuleContext } from "../sdk/types/index.ts";

// ---- checked by tsc ----

/** Each generated interface is the type its schema describes (both ways assignable). */
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const sameAsSchema: Record<string, true> = {
  Block: true satisfies Same<Sdk.Block, v.InferOutput<typeof S.Block>>,
  LightBlock: true satisfies Same<Sdk.LightBlock, v.InferOutput<typeof S.LightBlock>>,
  Transaction: true satisfies Same<Sdk.Transaction, v.InferOutput<typeof S.Transaction>>,
  Utxo: true satisfies Same<Sdk.Utxo, v.InferOutput<typeof S.Utxo>>,
  ChainInfo: true satisfies Same<Sdk.ChainInfo, v.InferOutput<typeof S.ChainInfo>>,
  MempoolEntry: true satisfies Same<Sdk.MempoolEntry, v.InferOutput<typeof S.MempoolEntry>>,
  MempoolInfo: true satisfies Same<Sdk.MempoolInfo, v.InferOutput<typeof S.MempoolInfo>>,
  NetworkStats: true satisfies Same<Sdk.NetworkStats, v.InferOutput<typeof S.NetworkStats>>,
  PeerInfo: true satisfies Same<Sdk.PeerInfo, v.InferOutput<typeof S.PeerInfo>>,
  BlockTemplate: true satisfies Same<Sdk.BlockTemplate, v.InferOutput<typeof S.BlockTemplate>>,
  SubmitBlockResult: true satisfies Same<Sdk.SubmitBlockResult, v.InferOutput<typeof S.SubmitBlockResult>>,
  StorageUsage: true satisfies Same<Sdk.StorageUsage, v.InferOutput<typeof S.StorageUsage>>,
  DirEntry: true satisfies Same<Sdk.DirEntry, v.InferOutput<typeof S.DirEntry>>,
  FileMetadata: true satisfies Same<Sdk.FileMetadata, v.InferOutput<typeof S.FileMetadata>>,
  ModuleInfo: true satisfies Same<Sdk.ModuleInfo, v.InferOutput<typeof S.ModuleInfo>>,
  Metric: true satisfies Same<Sdk.Metric, v.InferOutput<typeof S.Metric>>,
};

/** Catalogue methods missing from their family's interface on ctx (never, or tsc fails below). */
type Missing = { [F in keyof Sdk.CatalogueMethods]: Exclude<Sdk.CatalogueMethods[F], keyof ModuleContext[F]> }[keyof Sdk.CatalogueMethods];
const missing: [Missing] extends [never] ? [] : [Missing] = [];

// A handler must answer what its result schema says: tsc refuses this one.
method({
  name: "answers_wrongly", js: "answersWrongly", permission: null, args: [], params: S.none, result: v.boolean(), summary: "",
  // @ts-expect-error: the handler answers a string where the result schema is a boolean
  handler: async () => "yes",
});

test("the generated TypeScript types are the schemas' types, and ctx has every catalogue method (both checked by tsc)", (t) => {
  t.is(Object.keys(sameAsSchema).length, 16);
  t.deepEqual(missing, []);
});

// ---- what the generator makes ----

const Thing = S.named("Thing", v.object({ id: S.u64, label: S.doc("What it is called.", v.nullable(v.string())), type: v.picklist(["a", "b"]) }));
const family = (methods: Family["methods"]): Family[] => [{ name: "things", summary: "Things of a test.", methods }];
const getThing = method({
  name: "get_thing", js: "getThing", permission: "read_blockchain", args: ["id", "tag"],
  params: v.object({ id: S.vout, tag: v.optional(v.string()) }), result: v.nullable(Thing),
  summary: "A thing by id, or null.", handler: async () => null,
});

test("a method becomes a typed ctx method and a typed Rust method with its param struct; a named result type, an interface and a struct", (t) => {
  const ts = typescriptSdk(family([getThing]));
  t.true(ts.includes("export interface ThingsMethods {\n  /** A thing by id, or null. Needs read_blockchain. */\n  getThing(id: number, tag?: string): Promise<Thing | null>;\n}"), ts);
  t.true(ts.includes('export interface Thing {\n  id: number;\n  /** What it is called. */\n  label: string | null;\n  type: "a" | "b";\n}'), ts);
  t.true(ts.includes('things: "getThing";'), ts);
  const rust = rustSdk(family([getThing]));
  t.true(rust.includes("struct GetThingParams<'a> {\n    id: u32,\n    tag: &'a str,\n}"), rust);
  t.true(rust.includes("pub fn get_thing(&self, id: u32, tag: &str) -> Result<Option<Thing>> {\n        self.request(\"get_thing\", &GetThingParams { id, tag })\n    }"), rust);
  t.true(rust.includes('pub struct Thing {\n    pub id: u64,\n    /// What it is called.\n    #[serde(default)]\n    pub label: Option<String>,\n    #[serde(rename = "type")]\n    pub type_: String,\n}'), rust);
});

test("a method with a callback or marked handWritten is left to the hand-written SDK code, and listed with why", (t) => {
  const every = method({
    name: "every_thing", js: "every", permission: "manage_timers", args: ["seconds", "handler"], params: v.object({ seconds: v.number() }),
    result: S.u64, callback: "timer", summary: "A timer.", handler: async () => 1,
  });
  const odd = method({ ...getThing, name: "odd_thing", js: "odd", handWritten: { ts: "overloads", rust: "two methods" } });
  const ts = typescriptSdk(family([every, odd]));
  t.true(ts.includes("export type ThingsMethods = Record<never, never>;"), ts);
  t.true(ts.includes('/** things.every: takes a function, which the host calls with `timer` invocations. */\n  "things.every": true;'), ts);
  t.true(ts.includes('/** things.odd: overloads. */\n  "things.odd": true;'), ts);
  const rust = rustSdk(family([every, odd]));
  t.true(rust.includes("pub fn every_thing(&self, seconds: f64) -> Result<u64>"), rust);
  t.true(rust.includes("handle them with [`Client::on_timer`] first"), rust);
  t.false(rust.includes("pub fn odd_thing"), rust);
  t.true(rust.includes('    // odd_thing: two methods\n    "odd_thing",'), rust);
});

test("a schema the generator cannot express is refused, naming the method, the field and the way out", (t) => {
  const dated = method({ ...getThing, name: "dated_thing", params: v.object({ id: S.vout, when: v.date() }), args: ["id", "when"] });
  const ts = t.throws(() => typescriptSdk(family([dated])), { instanceOf: NotMechanical });
  t.regex(ts.message, /^dated_thing \(capabilities\/things\.ts\)\.when: a schema of type "date" has no generated form in the TypeScript SDK/);
  t.regex(ts.message, /mark the method handWritten: \{ ts: "why" \} in its family file and write it in sdk\/types\/index\.ts/);
  const rust = t.throws(() => rustSdk(family([dated])), { instanceOf: NotMechanical });
  t.regex(rust.message, /handWritten: \{ rust: "why" \}.*sdk\/rust\/src\/requests\.rs/);
});

test("every catalogue method declares a result schema, and one that takes a function says which invocation calls it", (t) => {
  const callbacks: Record<string, string> = {};
  for (const m of METHODS.values()) {
    t.is(typeof (m.result as { kind?: unknown }).kind, "string", m.name);
    if (m.callback) callbacks[m.name] = m.callback;
  }
  t.deepEqual(callbacks, {
    subscribe_events: "event", register_rpc_endpoint: "rpc", register_cli_spec: "cli", register_module_api: "module_api",
    register_timer: "timer", schedule_task: "timer", register_provider: "provider", register_hook: "hook",
  });
});
