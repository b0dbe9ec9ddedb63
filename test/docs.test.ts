import test from "ava";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import { parse as parseToml } from "smol-toml";
import { GENERATED_DOCS, permissionsMarkdown } from "../host/docs.ts";
import { PERMISSION_NAMES } from "../capabilities/catalogue.ts";
import { METHODS } from "../capabilities/families.ts";
import { parseConfig, sectionSchemas } from "../host/config.ts";
import { COMMANDS, findCommand, GROUPS } from "../host/cli-table.ts";
import { RPC_ERRORS } from "../host/rpc/server.ts";
import { HOST_RPC_METHODS } from "../host/services/rpc.ts";
import { TARGETS as EDGES_TARGETS } from "../fuzz/edges-driver.ts";
import { configTables } from "../host/config-docs.ts";
import { DEFAULT_MAX_PAYLOAD_BYTES, HOOK_POINT_NAMES, HOOK_POINTS } from "../capabilities/hooks.ts";

for (const [file, make] of Object.entries(GENERATED_DOCS)) {
  test(`${file} matches the catalogue (regenerate with: node bin/modhost.js docs --write)`, async (t) => {
    const committed = await readFile(new URL(`../${file}`, import.meta.url), "utf8");
    t.is(committed, make());
  });
}

// The seeds' permission list (Security Model, "Core" and "Additional" permissions, and the two
// mining ones of the Permission enum: submit_block, queue_inbound_block), by name.
const SEED_PERMISSIONS = [
  "read_blockchain", "read_utxo", "read_chain_state", "subscribe_events", "send_transactions",
  "read_mempool", "read_network", "network_access", "read_lightning", "read_payment",
  "read_storage", "write_storage", "manage_storage", "read_filesystem", "write_filesystem", "manage_filesystem",
  "register_rpc_endpoint", "manage_timers", "report_metrics", "read_metrics", "discover_modules",
  "publish_events", "call_module", "register_module_api", "submit_block", "queue_inbound_block",
];
// Permissions modhost has beyond the seeds, each for a capability the seeds have no name for.
const MODHOST_PERMISSIONS: string[] = ["register_hook"];

test("the catalogue has every permission of the seeds by name, plus only modhost's own listed ones, snake_case", (t) => {
  t.is(SEED_PERMISSIONS.length, 26);
  t.deepEqual([...PERMISSION_NAMES].sort(), [...SEED_PERMISSIONS, ...MODHOST_PERMISSIONS].sort());
  for (const p of PERMISSION_NAMES) t.regex(p, /^[a-z]+(_[a-z]+)*$/);
});

test("every method names an existing permission and appears in the permissions page", (t) => {
  const page = permissionsMarkdown();
  for (const m of METHODS.values()) {
    if (m.permission !== null) t.true(PERMISSION_NAMES.includes(m.permission), m.name);
    t.true(page.includes(`\`${m.name}\``), m.name);
  }
});

// ---------------------------------------------------------------------------------------
// Claims of the hand-written docs that can be checked against the code.

const read = (file: string) => readFile(new URL(`../${file}`, import.meta.url), "utf8");

/** The docs this file holds to the code (permissions.md and events.md are generated from the catalogue, and held too). */
const AUTHORED_DOCS = [
  "README.md", "docs/operator-guide.md", "docs/module-guide.md", "docs/protocol.md", "docs/signing.md",
  "docs/security.md", "docs/architecture.md", "docs/performance-log.md", "docs/permissions.md", "docs/events.md",
  "fuzz/README.md", "templates/ts/README.md", "templates/rust/README.md", "sdk/rust/README.md", "sdk/node/README.md",
];

type AnySchema = { type: string; wrapped?: AnySchema; entries?: Record<string, AnySchema>; value?: AnySchema };

/** Every key path of a TOML table schema: `a.b`, with `NAME` for a table of named tables; free-form tables have none. */
function configKeyPaths(schema: AnySchema, prefix: string): string[] {
  let s = schema;
  while (s.wrapped) s = s.wrapped;
  if (s.type === "toml_named_tables" && s.value) return configKeyPaths(s.value, `${prefix}.NAME`);
  if (s.type !== "toml_table" || !s.entries) return [];
  return Object.entries(s.entries).flatMap(([key, entry]) => [`${prefix}.${key}`, ...configKeyPaths(entry, `${prefix}.${key}`)]);
}

test("the operator guide names every key of modhost.toml's schema, every section and every nested table", async (t) => {
  const guide = await read("docs/operator-guide.md");
  const paths = Object.entries(sectionSchemas(".")).flatMap(([section, schema]) => configKeyPaths(schema as unknown as AnySchema, section));
  t.true(paths.includes("registry.discover_minutes") && paths.includes("modules.grants.NAME.deny") && paths.includes("trust.publishers.NAME.threshold"));
  // Named: in a table or the text (`key`), in a table header ([modules.grants.<name>]), or as `[storage] dir`.
  const named = (p: string) => {
    const key = p.split(".").at(-1)!;
    return guide.includes(`\`${key}\``) || guide.includes(`] ${key}\``) || new RegExp(`\\[[a-z_.]*\\.${key}[.\\]]`).test(guide);
  };
  t.deepEqual(paths.filter((p) => !named(p)), [], "keys the operator guide never names");
});

test("every command of the README's command table is one modhost has (host/cli-table.ts)", async (t) => {
  const readme = await read("README.md");
  const rows = readme.split("\n").filter((l) => l.startsWith("| `npx modhost"));
  t.true(rows.length >= 10);
  const named: string[] = [];
  for (const row of rows) {
    const cell = row.split(" | ")[0]!;
    let group: string | undefined; // `npx modhost chain info`, `mine [N]`: the later ones are chain commands
    for (const [, span] of cell.matchAll(/`([^`]+)`/g)) {
      let words = span!.replace(/^(npx )?modhost /, "").split(" ");
      if (group !== undefined && !span!.includes("modhost") && !COMMANDS.some((c) => c.name.split(" ")[0] === words[0])) words = [group, ...words];
      if (GROUPS.includes(words[0]!)) group = words[0];
      const name = words.slice(0, GROUPS.includes(words[0]!) ? 2 : 1).join(" ");
      if (/^[A-Z]/.test(name)) continue; // `modhost M COMMAND`: a module's command
      named.push(name);
    }
  }
  t.true(named.includes("chain reorg") && named.includes("registry serve"));
  t.deepEqual(named.filter((n) => findCommand(n) === undefined), []);
  const documented = new Set(named);
  t.deepEqual(COMMANDS.map((c) => c.name).filter((n) => !documented.has(n) && !["version", "help"].includes(n)), [], "commands the README's table leaves out");
});

test("every `npm run SCRIPT` the docs show is a script of package.json", async (t) => {
  const scripts = Object.keys((JSON.parse(await read("package.json")) as { scripts: Record<string, string> }).scripts);
  for (const file of AUTHORED_DOCS) {
    for (const [, name] of (await read(file)).matchAll(/npm run ([a-z][a-z:-]*)/g)) t.true(scripts.includes(name!), `${file}: npm run ${name}`);
  }
});

test("every repository path the docs name exists (tests cited as proof, sources, scripts)", async (t) => {
  const re = /(?:^|[^A-Za-z0-9_.<>/-])((?:test|host|bench|fuzz|modules|sdk|scripts|docs|capabilities|runtime|chain|protocol|storage|testing|templates|bin)\/[A-Za-z0-9_./-]*[A-Za-z0-9_])/g;
  // What a module's own directory holds (templates' READMEs), and the guides' example module.
  const notOurs = (p: string) => p.includes("my-module") || p === "test/module.test.ts";
  let checked = 0;
  for (const file of AUTHORED_DOCS) {
    for (const [, p] of (await read(file)).matchAll(re)) {
      if (notOurs(p!)) continue;
      checked++;
      t.true(existsSync(new URL(`../${p}`, import.meta.url)), `${file} names ${p}, which does not exist`);
    }
  }
  t.true(checked > 50);
});

test("the operator guide's error table has every JSON-RPC error code the host answers with", async (t) => {
  const guide = await read("docs/operator-guide.md");
  const table = guide.slice(guide.indexOf("| Error code | Meaning |"));
  for (const [name, code] of Object.entries(RPC_ERRORS)) t.true(table.includes(`\`${code}\``), `${name} (${code})`);
});

test("the docs list every host RPC method, where they say which names a module may not take", async (t) => {
  const guide = await read("docs/operator-guide.md");
  const methods = guide.slice(guide.indexOf("**Methods.**"), guide.indexOf("| Error code |"));
  const authors = await read("docs/module-guide.md");
  const reserved = authors.slice(authors.indexOf("the name of a host method"), authors.indexOf("### CLI commands"));
  for (const m of HOST_RPC_METHODS) {
    t.true(methods.includes(`\`${m}\``) || methods.includes(`\`${m} {`), `operator guide, Methods: ${m}`);
    t.true(reserved.includes(`\`${m}\``), `module guide, RPC methods: ${m}`);
  }
});

test("fuzz/README.md names every file of fuzz/ and every target of both drivers", async (t) => {
  const readme = await read("fuzz/README.md");
  const files = readdirSync(new URL("../fuzz/", import.meta.url)).filter((f) => f.endsWith(".ts"));
  t.true(files.length > 10);
  for (const f of files) t.true(readme.includes(`\`${f}\``), f);
  for (const target of EDGES_TARGETS) t.true(readme.includes(`\`${target}\``), target);
});

test("the protocol's error table has exactly the error codes of protocol/messages.ts", async (t) => {
  const source = await read("protocol/messages.ts");
  const union = source.slice(source.indexOf("export type ErrorCode ="), source.indexOf(";", source.indexOf("export type ErrorCode =")));
  const codes = [...union.matchAll(/"([a-z_]+)"/g)].map((m) => m[1]!);
  t.true(codes.length >= 10);
  const spec = await read("docs/protocol.md");
  const table = spec.slice(spec.indexOf("| Error code | Meaning |"), spec.indexOf("\n\n", spec.indexOf("| Error code | Meaning |")));
  const documented = [...table.matchAll(/^\| `([a-z_]+)` \|/gm)].map((m) => m[1]!);
  t.deepEqual([...documented].sort(), [...codes].sort());
});

test("the [hooks.POINT] table's per-point defaults are the hook points' own (capabilities/hooks.ts)", (t) => {
  const table = configTables().hooks ?? "";
  const row = (key: string) => table.split("\n").find((l) => l.startsWith(`| \`${key}\``))!;
  const points = HOOK_POINT_NAMES.map((name) => HOOK_POINTS[name]);
  t.true(row("timeout_ms").includes(`per point: ${points.map((p) => p.timeoutMs).join(", ")} |`));
  const failure = row("failure");
  for (const policy of ["open", "closed"] as const) {
    const names = points.filter((p) => p.failure === policy).map((p) => `\`${p.name}\``).join(" and ");
    t.true(failure.includes(`\`${policy}\` for ${names}`), `${policy}: ${names}`);
  }
  t.true(row("max_payload_bytes").includes(`| ${DEFAULT_MAX_PAYLOAD_BYTES} |`));
});

test("every TOML example of the operator guide and the shipped modules' READMEs is a modhost.toml that modhost accepts (no placeholder where a value belongs)", async (t) => {
  const docs = ["docs/operator-guide.md", ...readdirSync(new URL("../modules", import.meta.url)).map((m) => `modules/${m}/README.md`).filter((f) => existsSync(new URL(`../${f}`, import.meta.url)))];
  const blocks: Array<{ text: string; where: string }> = [];
  for (const doc of docs) {
    const text = await read(doc);
    for (const m of text.matchAll(/^```toml\n([\s\S]*?)^```/gm)) blocks.push({ text: m[1]!, where: `${doc}:${text.slice(0, m.index).split("\n").length}` });
  }
  t.true(blocks.filter((b) => b.where.startsWith("docs/")).length >= 8 && blocks.some((b) => b.where.startsWith("modules/")), `${blocks.length} TOML examples`);
  for (const { text, where } of blocks) {
    const problem = (() => {
      try {
        parseConfig(parseToml(text) as Record<string, unknown>, text, where);
        return undefined;
      } catch (err) {
        return (err as Error).message;
      }
    })();
    t.is(problem, undefined, `the example at ${where}`);
  }
});

test("the operator guide's count of permissions is the catalogue's", async (t) => {
  const guide = await read("docs/operator-guide.md");
  const said = /All (\d+) permissions/.exec(guide);
  t.truthy(said, "the guide says how many permissions there are");
  t.is(Number(said?.[1]), PERMISSION_NAMES.length);
});

/**
 * The test titles a doc quotes after a test file it names (`test/x.test.ts` ("title ...", "... part"));
 * a quote opens after "(", ", ", "; " or ": " (so a quoted word inside a description is not taken
 * for a title), and "..." elides.
 */
function quotedTitles(doc: string): Array<{ file: string; fragment: string; line: number }> {
  const out: Array<{ file: string; fragment: string; line: number }> = [];
  for (const m of doc.matchAll(/`(test\/[\w./-]+\.test\.ts)`\s*\(/g)) {
    let depth = 1;
    let end = m.index + m[0].length;
    while (end < doc.length && depth > 0) {
      if (doc[end] === "(") depth++;
      else if (doc[end] === ")") depth--;
      end++;
    }
    const body = doc.slice(m.index + m[0].length, end - 1);
    for (const q of body.matchAll(/(?:^|[(]|[,;:] )"((?:[^"\\\n]|\\.){12,}?)"/g)) {
      for (const part of q[1]!.replaceAll('\\"', '"').split(/\.\.\.|…/)) {
        const fragment = part.trim().replace(/^[`,.]+|[`,.]+$/g, "");
        if (fragment.length >= 8) out.push({ file: m[1]!, fragment, line: doc.slice(0, m.index).split("\n").length });
      }
    }
  }
  return out;
}

test("every test title the docs quote after a test file is text of that file (a test renamed since shows here)", async (t) => {
  const titles = new Map<string, string[]>();
  const titlesOf = async (file: string) => {
    if (!titles.has(file)) {
      const source = (await read(file)).replaceAll('\\"', '"');
      // A title made with a template literal (`invalid vector ${name}: ...`): its text before the first ${...}.
      titles.set(file, [source, ...[...source.matchAll(/test(?:\.serial)?\(`([^`$]{8,})\$\{/g)].map((m) => m[1]!)]);
    }
    return titles.get(file)!;
  };
  let checked = 0;
  for (const doc of AUTHORED_DOCS) {
    for (const { file, fragment, line } of quotedTitles(await read(doc))) {
      if (!existsSync(new URL(`../${file}`, import.meta.url))) continue; // the path test above reports it
      const [source, ...templates] = await titlesOf(file);
      const found = source!.includes(fragment) || templates.some((head) => fragment.startsWith(head));
      checked++;
      t.true(found, `${doc}:${line} quotes "${fragment}" from ${file}, which has no such test title`);
    }
  }
  t.log(`${checked} quoted titles checked`);
  t.true(checked > 100, `${checked} quoted titles checked`);
});

test("every product source file over 500 lines says at its top why it is one file (docs/architecture.md, \"File size\")", (t) => {
  // Product TypeScript: not tests, benchmarks, fuzzers, declarations or generated files; not the
  // shipped modules (signed: their bytes are what was signed) nor the Rust SDK (its sources' line
  // numbers are in block-template's signed binary).
  const files = execFileSync("git", ["ls-files", "*.ts", "*.mjs"], { cwd: new URL("..", import.meta.url), encoding: "utf8" })
    .split("\n")
    .filter((f) => f && !/^(test|bench|fuzz|types|modules|dist)\//.test(f) && !f.endsWith(".d.ts") && !f.includes("generated"));
  t.true(files.length > 100, `${files.length} files`);
  const silent: string[] = [];
  for (const f of files) {
    const text = readFileSync(new URL(`../${f}`, import.meta.url), "utf8");
    const lines = text.split("\n").length - 1;
    if (lines > 500 && !text.split("\n").slice(0, 40).some((l) => l.startsWith("// One file"))) silent.push(`${f} (${lines} lines)`);
  }
  t.deepEqual(silent, [], "split each of these, or say at its top why it is one file (\"// One file: ...\")");
});
