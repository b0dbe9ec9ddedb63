import test from "ava";
import { readFile } from "node:fs/promises";
import { GENERATED_DOCS, permissionsMarkdown } from "../host/docs.ts";
import { PERMISSION_NAMES } from "../capabilities/catalogue.ts";
import { METHODS } from "../capabilities/families.ts";

for (const [file, make] of Object.entries(GENERATED_DOCS)) {
  test(`${file} matches the catalogue (regenerate with: node bin/modhost.js docs --write)`, async (t) => {
    const committed = await readFile(new URL(`../${file}`, import.meta.url), "utf8");
    t.is(committed, make());
  });
}

test("the catalogue has the 26 permissions of the seeds and modhost's register_hook, snake_case", (t) => {
  t.is(PERMISSION_NAMES.filter((p) => p !== "register_hook").length, 26);
  t.true(PERMISSION_NAMES.includes("register_hook"));
  for (const p of PERMISSION_NAMES) t.regex(p, /^[a-z]+(_[a-z]+)*$/);
});

test("every method names an existing permission and appears in the permissions page", (t) => {
  const page = permissionsMarkdown();
  for (const m of METHODS.values()) {
    if (m.permission !== null) t.true(PERMISSION_NAMES.includes(m.permission), m.name);
    t.true(page.includes(`\`${m.name}\``), m.name);
  }
});
