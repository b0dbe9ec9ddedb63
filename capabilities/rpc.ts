// RPC endpoints and CLI commands. A module serves JSON-RPC methods under its own name
// (`<module>.<method>`) on the host's RPC server, and CLI commands that `modhost <module>
// <command>` runs. The handlers stay in the module: the host calls them with `rpc` and `cli`
// invocations. Registration goes through HostServices.rpc with the caller's name, so a module
// can only ever register under its own name.
import * as v from "valibot";
import { method, type CallContext, type CliSpec, type Family, serviceOf } from "./types.ts";
import { done, named } from "./schemas.ts";

const service = (c: CallContext) => serviceOf(c, "rpc");

const name = v.pipe(v.string(), v.maxLength(128));
const text = v.pipe(v.string(), v.maxLength(1024));
const arg = named("CliArg", v.object({ name, required: v.optional(v.boolean()), about: v.optional(text) }), { rust: "built with its own methods" });
const command = named("CliCommand", v.object({ name, about: v.optional(text), args: v.optional(v.pipe(v.array(arg), v.maxLength(32))) }), { rust: "built with its own methods" });
// `subcommands` is the BLVM node's spelling (CliSpec.subcommands); `commands` is modhost's.
const spec = named("CliSpec", v.pipe(
  v.object({
    name: v.optional(name),
    about: v.optional(text),
    version: v.optional(v.number()),
    commands: v.optional(v.pipe(v.array(command), v.maxLength(64))),
    subcommands: v.optional(v.pipe(v.array(command), v.maxLength(64))),
  }),
  v.check((s) => s.commands !== undefined || s.subcommands !== undefined, "the spec needs a commands list"),
), { rust: "built with its own methods" });

export const rpc: Family = {
  name: "rpc",
  summary: "Serve JSON-RPC methods (as <module>.<method>) and CLI commands (modhost <module> <command>).",
  methods: [
    method({
      name: "register_rpc_endpoint", result: v.string(), callback: "rpc", js: "register", permission: "register_rpc_endpoint", args: ["method", "description"],
      params: v.object({ method: name, description: v.optional(text) }),
      summary: "Serve `method` as <module>.<method> on the host's RPC server; returns that full name. The handler stays in the module (an `rpc` invocation).",
      audit: true,
      handler: async (c, p) => service(c).register(c.module, p.method, p.description ?? ""),
    }),
    method({
      name: "unregister_rpc_endpoint", result: v.boolean(), js: "unregister", permission: "register_rpc_endpoint", args: ["method"],
      params: v.object({ method: name }),
      summary: "Stop serving a method; true if it was registered.",
      handler: async (c, p) => service(c).unregister(c.module, p.method),
    }),
    method({
      name: "register_cli_spec", result: done, callback: "cli", js: "registerCli", permission: "register_rpc_endpoint", args: ["spec"],
      params: v.object({ spec }),
      summary: "Declare the module's CLI commands (replaces any earlier spec); `modhost <module> <command> [args]` runs them (a `cli` invocation).",
      audit: true,
      handler: async (c, p) => {
        const s = p.spec;
        const out: CliSpec = {
          name: s.name ?? c.module,
          ...(s.about !== undefined ? { about: s.about } : {}),
          commands: s.commands ?? s.subcommands ?? [],
        };
        service(c).registerCli(c.module, out);
        return true as const;
      },
    }),
  ],
};
