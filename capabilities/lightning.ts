// Lightning and payments. The host runs no Lightning node: these methods are answered by the
// module that registered itself as the provider of the kind ("lightning" or "payment"), through
// a `provider` invocation {kind, method, params}. With no provider running they fail with a
// clear `unavailable` error, never a silent null.
import * as v from "valibot";
import { method, type CallContext, type Family, serviceOf } from "./types.ts";
import { Plain, done, none, named } from "./schemas.ts";


const providers = (c: CallContext) => serviceOf(c, "providers");

export const lightning: Family = {
  name: "lightning",
  summary: "Lightning node information and payment state, answered by a provider module.",
  methods: [
    method({
      name: "get_lightning_node_url", result: Plain, handWritten: { rust: "decoded as Option<String>, the answer a Lightning provider gives" }, js: "getNodeUrl", permission: "read_lightning", args: [], params: none,
      summary: "The Lightning node's URL, from the lightning provider (its getNodeUrl).",
      handler: (c) => providers(c).call("lightning", "getNodeUrl", {}, c.module),
    }),
    method({
      name: "get_lightning_info", result: Plain, js: "getInfo", permission: "read_lightning", args: [], params: none,
      summary: "Lightning node information, from the lightning provider (its getInfo).",
      handler: (c) => providers(c).call("lightning", "getInfo", {}, c.module),
    }),
    method({
      name: "get_payment_state", result: Plain, js: "getPaymentState", permission: "read_payment", args: ["payment_id"],
      params: v.object({ payment_id: v.pipe(v.string(), v.minLength(1, "payment_id is empty"), v.maxLength(256)) }),
      summary: "State of a payment, from the payment provider (its getPaymentState({payment_id})).",
      handler: (c, p) => providers(c).call("payment", "getPaymentState", { payment_id: p.payment_id }, c.module),
    }),
    method({
      name: "register_provider", result: done, callback: "provider", js: "provide", permission: "register_module_api", args: ["kind"],
      params: v.object({ kind: named("ProviderKind", v.picklist(["lightning", "payment", "mining", "governance"], 'kind must be "lightning", "payment", "mining" or "governance"')) }),
      summary: "Become the provider of a role the operator designated this module for ([modules.providers]): answer the role's methods and publish its events. One provider per role.",
      audit: true,
      handler: async (c, p) => {
        providers(c).register(c.module, p.kind);
        return true as const;
      },
    }),
  ],
};
