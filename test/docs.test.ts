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
