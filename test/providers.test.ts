// Lightning and payment providers through real isolate modules: with no provider the methods
// fail with a clear "no provider" error (not a silent null); a provider module answers for
// another module; one provider per kind; a provider's registration dies with it.

import test from "ava";
import { startHost, type TestHost } from "./helpers/host.ts";
import { REPORT, callApi, hubError, inlineModule, providerRegistry, type Outcome } from "./helpers/modules.ts";

const USER_CAPS = ["read_lightning", "read_payment", "register_module_api"];
const USER = inlineModule("shop", USER_CAPS, `
  await ctx.modules.registerApi({
    info: () => report(() => ctx.lightning.getInfo()),
    url: () => report(() => ctx.lightning.getNodeUrl()),
    payment: (p: any) => report(() => ctx.lightning.getPaymentState(p.id)),
  });
`, REPORT);

const PROVIDER_CAPS = ["register_module_api"];
const PROVIDER = inlineModule("ln", PROVIDER_CAPS, `
  await ctx.lightning.provide("lightning", {
    getInfo: () => ({ alias: "ln-test", channels: 2, provider: ctx.module.name }),
    getNodeUrl: () => "lnd://127.0.0.1:10009",
  });
  await ctx.lightning.provide("payment", {
    getPaymentState: (p: any) => ({ payment_id: p.payment_id, status: "settled", amount_sats: 1000 }),
  });
  await ctx.modules.registerApi({ ping: () => "pong" });
`);

const RIVAL = inlineModule("ln2", PROVIDER_CAPS, `
  await ctx.modules.registerApi({
    claim: () => report(() => ctx.lightning.provide("lightning", { getInfo: () => ({ alias: "rival" }) })),
  });
`, REPORT);

async function host(t: import("ava").ExecutionContext, withProvider: boolean): Promise<TestHost> {
  const h = await startHost(t, {
    inline: { shop: USER, ln2: RIVAL, ...(withProvider ? { ln: PROVIDER } : {}) },
    grants: { shop: USER_CAPS, ln: PROVIDER_CAPS, ln2: PROVIDER_CAPS },
  });
  for (const m of ["shop", "ln2", ...(withProvider ? ["ln"] : [])]) t.is(h.mustStatus(m).state, "running", m);
  return h;
}

test("no provider: a clear unavailable error, not a silent null", async (t) => {
  const h = await host(t, false);
  const info = await callApi<Outcome>(h, "shop", "info");
  t.deepEqual(info, { ok: false, code: "unavailable", message: 'no Lightning provider module is running; load one that calls register_provider (kind "lightning")' });
  const url = await callApi<Outcome>(h, "shop", "url");
  t.is(!url.ok && url.code, "unavailable");
  const pay = await callApi<Outcome>(h, "shop", "payment", { id: "p1" });
  t.is(!pay.ok && pay.code, "unavailable");
  t.regex(!pay.ok ? pay.message : "", /no payment provider module is running/);
});

test("a provider module answers for another module", async (t) => {
  const h = await host(t, true);
  t.deepEqual(await callApi(h, "shop", "info"), { ok: true, value: { alias: "ln-test", channels: 2, provider: "ln" } });
  t.deepEqual(await callApi(h, "shop", "url"), { ok: true, value: "lnd://127.0.0.1:10009" });
  t.deepEqual(await callApi(h, "shop", "payment", { id: "p-42" }), { ok: true, value: { payment_id: "p-42", status: "settled", amount_sats: 1000 } });
  // The permission still applies to the reader.
  const denied = await hubError(h, "nosy", ["read_payment"], "get_lightning_info", {});
  t.is(denied.code, "permission_denied");
});

test("one provider per kind: a second is refused naming the first; the slot frees when it stops", async (t) => {
  const h = await host(t, true);
  const r = await callApi<Outcome>(h, "ln2", "claim");
  t.is(!r.ok && r.code, "unavailable");
  t.regex(!r.ok ? r.message : "", /module "ln" is already the Lightning provider/);
  t.is(providerRegistry(h).providerOf("lightning"), "ln");
  // Still answered by ln.
  t.deepEqual(await callApi(h, "shop", "info"), { ok: true, value: { alias: "ln-test", channels: 2, provider: "ln" } });

  await h.manager.unload("ln");
  t.is(providerRegistry(h).providerOf("lightning"), undefined, "the registration died with ln");
  const none = await callApi<Outcome>(h, "shop", "info");
  t.is(!none.ok && none.code, "unavailable");
  t.deepEqual(await callApi(h, "ln2", "claim"), { ok: true, value: true });
  t.deepEqual(await callApi(h, "shop", "info"), { ok: true, value: { alias: "rival" } });
  // ln2 did not implement getNodeUrl.
  const url = await callApi<Outcome>(h, "shop", "url");
  t.is(!url.ok && url.code, "unknown_method", JSON.stringify(url));
  t.regex(!url.ok ? url.message : "", /does not provide lightning\.getNodeUrl/);
});
