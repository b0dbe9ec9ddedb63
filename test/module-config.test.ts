import test from "ava";
import { parseConfig } from "../host/config.ts";
import { parseManifest } from "../host/manifest.ts";
import { moduleConfig } from "../host/module-config.ts";
import { ConfigError } from "../host/errors.ts";
import { parse } from "smol-toml";

const manifestSource = `
name = "watcher"
version = "1.0.0"
entry_point = "index.ts"
[config_schema]
interval = { type = "integer", default = 5, description = "seconds between polls" }
label = "free text"
token = { type = "string", required = true }
`;
const manifest = parseManifest(parse(manifestSource) as Record<string, unknown>, manifestSource, "/m/watcher/module.toml");

function configOf(source: string) {
  return parseConfig(parse(source) as Record<string, unknown>, source, "/etc/modhost/modhost.toml");
}

test("defaults fill in, given values pass through", (t) => {
  const cfg = configOf(`[modules.module_configs.watcher]\ntoken = "abc"\nlabel = "x"\n`);
  t.deepEqual(moduleConfig(cfg, manifest), { token: "abc", label: "x", interval: 5 });
});

test("a wrong type, an unknown key and a missing required key are all reported with lines", (t) => {
  const src = `[modules]\nenabled = true\n\n[modules.module_configs.watcher]\ninterval = "often"\nintervall = 3\n`;
  const err = t.throws(() => moduleConfig(configOf(src), manifest), { instanceOf: ConfigError });
  const text = err!.message;
  t.regex(text, /modhost\.toml:5:1: modules\.module_configs\.watcher\.interval: watcher expects interval to be an integer, found a string/);
  t.regex(text, /modhost\.toml:6:1: .*unknown key "intervall"\n {2}fix: did you mean "interval"\?/);
  t.regex(text, /requires token/);
  t.is(err!.problems.length, 3);
});

test("a module without a schema gets its config as given", (t) => {
  const src = `name = "free"\nversion = "1.0.0"\nentry_point = "index.ts"\n`;
  const free = parseManifest(parse(src) as Record<string, unknown>, src, "/m/free/module.toml");
  const cfg = configOf(`[modules.module_configs.free]\nanything = [1, 2]\n`);
  t.deepEqual(moduleConfig(cfg, free), { anything: [1, 2] });
});
