// `modhost new NAME [--lang ts|rust] [--dir DIR]`: write a complete module that runs at once
// (templates/ts, templates/rust): a commented module.toml, an entry that follows the catch-up
// contract on NewBlock and stores each block, an RPC method, a test with modhost/testing, a
// tsconfig.json for the editor, a README (and for Rust a crate with build.sh).
//
// The new module reaches this modhost through node_modules/modhost, a link to this checkout
// (what `npm install` does for the "file:" dependency written into its package.json), so that
// `npx modhost dev`, `import type ... from "modhost/sdk"`, `modhost/testing` and the Rust SDK's
// path dependency work outside the checkout with no network.

import { chmod, mkdir, readdir, readFile, stat, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { ModhostError } from "./errors.ts";
import { MODULE_NAME_RE } from "./manifest.ts";

/** The checkout (or installed package) this modhost runs from: host/ and dist/ are both one level down. */
export const MODHOST_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

export const LANGS = ["ts", "rust"] as const;
export type Lang = (typeof LANGS)[number];

export const NEW_HELP = `modhost new NAME [--lang ts|rust] [--dir DIR]

Writes a new module NAME into DIR (default ./NAME, which must not exist or be empty): a
commented module.toml, code that stores every new block and serves the last one over RPC, a
test with modhost/testing, tsconfig.json, README.md, package.json; for --lang rust a crate
and build.sh. Then:  cd DIR && npx modhost dev      (and npm test)`;

export interface ScaffoldOptions {
  name: string;
  lang?: Lang;
  /** The module's directory (default: ./NAME). */
  dir?: string;
  /** The modhost the module links to (default: this one). */
  root?: string;
}

/** Write the module; returns its directory and the files written (relative). */
export async function scaffold(opts: ScaffoldOptions): Promise<{ dir: string; files: string[] }> {
  const { name } = opts;
  const lang = opts.lang ?? "ts";
  if (!MODULE_NAME_RE.test(name)) {
    throw new ModhostError("invalid_argument", `"${name}" cannot be a module name: a name is 1 to 64 letters, digits, '-' and '_', starting with a letter or digit`, "choose a name such as my-module");
  }
  if (!LANGS.includes(lang)) {
    throw new ModhostError("invalid_argument", `--lang must be one of ${LANGS.join(", ")}, not "${lang}"`);
  }
  const root = opts.root ?? MODHOST_ROOT;
  const dir = path.resolve(opts.dir ?? name);
  const existing = await readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return [];
    throw new ModhostError("invalid_argument", `${dir} cannot be used for the module: ${err.message}`, "give another directory with --dir");
  });
  if (existing.length > 0) {
    throw new ModhostError("invalid_argument", `${dir} already exists and is not empty; modhost new never overwrites files`, `choose another name or --dir, or remove ${dir}`);
  }
  const templates = path.join(root, "templates", lang);
  const replace = (text: string) => text.replaceAll("__NAME__", name).replaceAll("__MODHOST_DEP__", `file:${root}`);
  const files: string[] = [];
  const copy = async (from: string, rel: string): Promise<void> => {
    for (const entry of await readdir(from, { withFileTypes: true })) {
      const src = path.join(from, entry.name);
      // npm drops .gitignore from packages: the templates carry it as "gitignore".
      const outRel = path.join(rel, entry.name === "gitignore" ? ".gitignore" : entry.name);
      const dest = path.join(dir, outRel);
      if (entry.isDirectory()) {
        await mkdir(dest, { recursive: true });
        await copy(src, outRel);
      } else {
        await writeFile(dest, replace(await readFile(src, "utf8")));
        await chmod(dest, (await stat(src)).mode & 0o777);
        files.push(outRel);
      }
    }
  };
  await mkdir(dir, { recursive: true });
  await copy(templates, "");
  // node_modules/modhost -> this modhost, and its command on npx's PATH.
  await mkdir(path.join(dir, "node_modules", ".bin"), { recursive: true });
  await symlink(root, path.join(dir, "node_modules", "modhost"), "dir");
  await symlink(path.join("..", "modhost", "bin", "modhost.js"), path.join(dir, "node_modules", ".bin", "modhost"));
  return { dir, files: files.sort() };
}

export async function newCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { lang: { type: "string", default: "ts" }, dir: { type: "string" }, help: { type: "boolean", short: "h" } },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    console.log(NEW_HELP);
    return 0;
  }
  if (positionals.length !== 1) {
    console.error(`modhost new: give exactly one module name${positionals.length ? ` (got ${positionals.join(", ")})` : ""}\n\n${NEW_HELP}`);
    return 2;
  }
  const name = positionals[0]!;
  const lang = values.lang as Lang;
  const { dir, files } = await scaffold({ name, lang, ...(values.dir ? { dir: values.dir } : {}) });
  const rel = path.relative(process.cwd(), dir) || ".";
  console.log(`created ${name} (${lang === "rust" ? "Rust, native" : "TypeScript, isolate"}) in ${rel}:`);
  for (const f of files) console.log(`  ${f}`);
  console.log(`  node_modules/modhost -> ${MODHOST_ROOT}`);
  console.log("\nnext:");
  console.log(`  cd ${rel}`);
  if (lang === "rust") console.log("  npm run build        # cargo build --release (./build.sh)");
  console.log("  npx modhost dev      # run it on the embedded regtest chain, a block every 3 s");
  console.log("  npm test             # its test, with modhost/testing");
  return 0;
}
