// Key-value storage: the module's own LevelDB, in named trees. The store handed to these
// handlers is the calling module's and no other, so no parameter can name another module's data.
import * as v from "valibot";
import { CapabilityError, method, type CallContext, type Family } from "./types.ts";
import { Entry, IterPage, Plain, StorageUsage, done, doc, named } from "./schemas.ts";
import type { ModuleStore } from "../storage/store.ts";

const MAX_TRANSACTION_OPS = 10_000;
const tree = v.string();
const key = v.string();
const ops = v.pipe(
  v.array(named("StorageOp", v.variant("op", [
    v.object({ op: v.literal("put"), key, value: v.unknown() }),
    v.object({ op: v.literal("delete"), key }),
  ]), { rust: "an enum of its own" })),
  v.maxLength(MAX_TRANSACTION_OPS, `at most ${MAX_TRANSACTION_OPS} operations per transaction`),
);
/**
 * A transaction too big for one message is sent in parts (docs/protocol.md section 6.2): every
 * part names the transaction's id (the module's pick) and whether more follow; the host holds
 * the parts and writes nothing until the last.
 */
const part = doc(
  "For a transaction sent in parts: its id and whether more parts follow. The SDKs split a transaction that does not fit one message by themselves.",
  v.optional(named("TransactionPart", v.object({
    id: v.pipe(v.number(), v.integer("part.id must be an integer"), v.minValue(0), v.maxValue(0xffffffff)),
    more: v.boolean("part.more must be true or false"),
  }))),
);
/**
 * storage_transaction's parameters as `ops` and `part` above accept them, checked by hand (the
 * hub's `accepts`): valibot's parse of 3000 ops of an indexer's shape took ~9 ms of the host's
 * CPU, and ModuleStore.batch checks every op again as it encodes it. Anything else goes to the
 * schema. The op count is checked before any op is looked at.
 */
function plainTransaction(p: Record<string, unknown>): boolean {
  const list = p.ops;
  if (typeof p.tree !== "string" || !Array.isArray(list) || list.length > MAX_TRANSACTION_OPS) return false;
  const part = p.part as { id?: unknown; more?: unknown } | undefined;
  if (part !== undefined) {
    if (part === null || typeof part !== "object" || Array.isArray(part) || typeof part.more !== "boolean") return false;
    const id = part.id;
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id > 0xffffffff) return false;
  }
  for (const op of list as Array<{ op?: unknown; key?: unknown } | null>) {
    if (op === null || typeof op !== "object" || Array.isArray(op) || typeof op.key !== "string") return false;
    if (op.op === "put" ? !Object.hasOwn(op, "value") : op.op !== "delete") return false;
  }
  return true;
}
/**
 * A storage_transaction refused before its handler (its parameters invalid, a permission
 * denied, or before the hub: its body did not decode, no room to wait): when it names a
 * transaction in parts (a `part.id` the schema would take), that transaction's held parts are
 * dropped, as an error in any part drops the whole transaction (docs/protocol.md 6.2), and its
 * later parts are refused (storage/store.ts MAX_DROPPED); when its parameters could not be
 * read (`p` undefined), nor so which transaction it was a part of, every transaction in parts
 * of the module is. Before, they stayed held for STAGED_IDLE_MS (60 s), each a place of the 4
 * a module may hold: a module whose last part was refused so, and that sent its transaction
 * again, was refused `quota_exceeded` after four tries, for a minute.
 */
function refusedTransaction(c: CallContext, p: Record<string, unknown> | undefined): string | undefined {
  if (!c.store) return undefined;
  if (p === undefined) {
    void c.store.dropPart(undefined, undefined, "a storage_transaction whose parameters could not be read was refused").catch(() => {});
    return " (it could not be told which transaction in parts it was a part of: every one of this module held so far, if any, is dropped)";
  }
  const part = p.part as { id?: unknown; more?: unknown } | null | undefined;
  const id = typeof part === "object" && part !== null ? part.id : undefined;
  if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id > 0xffffffff) return undefined;
  const more = typeof part!.more === "boolean" ? part!.more : undefined;
  void c.store.dropPart(id, more, "a part was refused before the store had it").catch(() => {});
  return ` (the parts of transaction ${id} held so far, if any, are dropped too${more === false ? "" : "; its later parts are refused"})`;
}
const bound = v.optional(v.string());
const iterBounds = {
  gt: bound, gte: bound, lt: bound, lte: bound,
  prefix: doc("Only keys starting with this string (combined with the range options).", bound),
  reverse: v.optional(v.boolean()),
  limit: doc("Default 1000, at most 10000.", v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(10_000)))),
  paged: doc(
    "Page through a range: the answer is {entries, cursor} instead of an array, and it stops at the byte limit (storage_iter_max_bytes) as well as at `limit`.",
    v.optional(v.boolean()),
  ),
  cursor: doc("From a previous paged answer: go on after the last entry it returned.", v.optional(v.pipe(v.string(), v.maxLength(100_000)))),
};
/** Bounds for storage iteration (the params of storage_iter but the tree). */
const IterOptions = named("IterOptions", v.object(iterBounds), { rust: "built with its own methods" });
const iterOpts = v.object({ tree, ...IterOptions.entries });

const orNull = (value: unknown) => value ?? null;

function store(c: CallContext): ModuleStore {
  if (!c.store) throw new CapabilityError("unavailable", "storage is not open for this module");
  return c.store;
}

export const storage: Family = {
  name: "storage",
  summary: "The module's own key-value trees (LevelDB), with quotas.",
  // storage_iter's params but the tree: the options argument of storage.iterate.
  types: [IterOptions],
  methods: [
    method({ name: "storage_open_tree", result: done, js: "openTree", permission: "write_storage", args: ["tree"], params: v.object({ tree }), summary: "Create a tree if it does not exist.", handler: async (c, p) => { await store(c).openTree(p.tree); return true as const; } }),
    method({ name: "storage_list_trees", result: v.array(v.string()), js: "listTrees", permission: "read_storage", args: [], params: v.object({}), summary: "Names of the module's trees.", handler: (c) => store(c).listTrees() }),
    method({ name: "storage_drop_tree", result: done, js: "dropTree", permission: "manage_storage", args: ["tree"], params: v.object({ tree }), summary: "Delete a tree and all its keys.", audit: true, handler: async (c, p) => { await store(c).dropTree(p.tree); return true as const; } }),
    method({ name: "storage_get", result: v.nullable(Plain), js: "get", permission: "read_storage", args: ["tree", "key"], params: v.object({ tree, key }), summary: "Value of a key, or null.", handler: (c, p) => {
      // An open tree is read at once (getNow: a synchronous read), and the value is answered
      // as it is: the session sends it in the same pass (host/session.ts serve), as its stored
      // bytes when the session sends them as they are (answersEncoded).
      const value = c.answersEncoded === true ? store(c).getNow(p.tree, p.key, true) : store(c).getNow(p.tree, p.key);
      return value instanceof Promise ? value.then(orNull) : (value ?? null);
    } }),
    method({ name: "storage_contains_key", result: v.boolean(), js: "has", permission: "read_storage", args: ["tree", "key"], params: v.object({ tree, key }), summary: "Whether a key exists.", handler: (c, p) => store(c).has(p.tree, p.key) }),
    method({ name: "storage_insert", result: done, js: "put", permission: "write_storage", args: ["tree", "key", "value"], params: v.object({ tree, key, value: v.unknown() }), summary: "Set a key to a value (any plain data).", handler: async (c, p) => { await store(c).put(p.tree, p.key, p.value); return true as const; } }),
    method({ name: "storage_remove", result: v.boolean(), js: "delete", permission: "write_storage", args: ["tree", "key"], params: v.object({ tree, key }), summary: "Delete a key; true if it existed.", handler: (c, p) => store(c).delete(p.tree, p.key) }),
    method({
      name: "storage_iter", result: v.union([v.array(Entry), IterPage]), handWritten: { ts: "overloads: paged: true answers an IterPage", rust: "two methods, storage_iter and storage_iter_page (paged), with generic values" }, js: "iterate", permission: "read_storage", args: ["tree", "options"], params: iterOpts,
      summary: "Entries in key order, within gt/gte/lt/lte/prefix bounds, up to limit (default 1000) and storage_iter_max_bytes; with paged: true, {entries, cursor} (pass cursor back for the next page; null at the end).",
      handler: (c, p) => { const { tree: t, ...opts } = p; return store(c).iterate(t, opts, c.maxAnswerBytes === undefined ? undefined : Math.floor(c.maxAnswerBytes * 0.9)); },
    }),
    method({ name: "storage_transaction", result: done, js: "transaction", permission: "write_storage", args: ["tree", "ops"], params: v.object({ tree, ops, part }), accepts: plainTransaction, refused: refusedTransaction, handWritten: { rust: "splits a transaction that does not fit one message into parts" }, summary: "Apply put/delete operations atomically: all or none (at most 10000 over all parts of a transaction sent in parts).", handler: async (c, p) => { await store(c).batch(p.tree, p.ops, p.part); return true as const; } }),
    method({ name: "storage_usage", result: StorageUsage, js: "usage", permission: "read_storage", args: [], params: v.object({}), summary: "Bytes, keys and trees used, and the quota.", handler: async (c) => {
      // snake_case on the wire, like every other result.
      const u = await store(c).usage();
      const q = u.quota;
      return { bytes: u.bytes, keys: u.keys, trees: u.trees, quota: { max_bytes: q.maxBytes, max_keys: q.maxKeys, max_trees: q.maxTrees, max_value_bytes: q.maxValueBytes, max_key_bytes: q.maxKeyBytes } };
    } }),
  ],
};
