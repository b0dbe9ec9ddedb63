// The module's own configuration ([modules.module_configs.NAME]). Every module may read its
// own configuration; nothing else is reachable here.
import * as v from "valibot";
import { method, type Family } from "./types.ts";
import { Plain } from "./schemas.ts";

export const config: Family = {
  name: "config",
  summary: "The module's own configuration.",
  methods: [
    method({ name: "get_config", result: v.record(v.string(), Plain), handWritten: { ts: "not a method on ctx: ctx.config is the configuration itself, kept current by the host" }, js: "get", permission: null, args: [], params: v.object({}), summary: "The module's configuration table.", handler: async (c) => c.config }),
  ],
};
