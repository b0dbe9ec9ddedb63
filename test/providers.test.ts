// Providers through real isolate modules: with no provider the methods fail with a clear
// "no provider" error (not a silent null); the module the operator designated answers for
// another module; no other module can take the role, even first; a provider's registration
// dies with it and modules are told; only the designated provider publishes its role's events
// as the real types.

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
    configure: (config) => {
      if (withProvider) config.modules.providers = { lightning: "ln", payment: "ln" };
    },
  });
  for (const m of ["shop", "ln2", ...(withProvider ? ["ln"] : [])]) t.is(h.mustStatus(m).state, "running", m);
  return h;
}

test("no provider: a clear unavailable error, not a silent null", async (t) => {
  const h = await host(t, false);
  const info = await callApi<Outcome>(h, "shop", "info");
  t.deepEqual(info, {
    ok: false,
    code: "unavailable",
    message: 'no Lightning provider module is running; the operator designates one with [modules.providers] lightning = "NAME", and that module calls register_provider (kind "lightning")',
  });
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

test("only the designated module is the provider: a rival is refused even while the role is free; the registration dies with the provider and modules are told", async (t) => {
  const h = await host(t, true);
  const told: Array<{ type: string; payload: unknown }> = [];
  const sub = h.host.bus.subscribe("test-providers", (ev) => told.push({ type: ev.type, payload: ev.payload }));
  sub.types.add("ProviderUnavailable");
  const r = await callApi<Outcome>(h, "ln2", "claim");
  t.is(!r.ok && r.code, "permission_denied");
  t.regex(!r.ok ? r.message : "", /the operator designated "ln" as the Lightning provider \(\[modules.providers\] lightning = "ln"\), not "ln2"/);
  t.is(providerRegistry(h).providerOf("lightning"), "ln");
  t.deepEqual(await callApi(h, "shop", "info"), { ok: true, value: { alias: "ln-test", channels: 2, provider: "ln" } });

  await h.manager.unload("ln");
  t.is(providerRegistry(h).providerOf("lightning"), undefined, "the registration died with ln");
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.deepEqual(told.map((e) => e.payload).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))), [
    { role: "lightning", module: "ln", reason: "the provider module stopped" },
    { role: "payment", module: "ln", reason: "the provider module stopped" },
  ]);
  const none = await callApi<Outcome>(h, "shop", "info");
  t.is(!none.ok && none.code, "unavailable");
  t.regex(!none.ok ? none.message : "", /the Lightning provider "ln" has not registered/);
  // Registering first wins nothing: the role stays ln's.
  const again = await callApi<Outcome>(h, "ln2", "claim");
  t.is(!again.ok && again.code, "permission_denied");
});


const PAY_CAPS = ["register_module_api", "publish_events"];
const PAYER = inlineModule("payer", PAY_CAPS, `
  await ctx.lightning.provide("payment", { getPaymentState: (p: any) => ({ payment_id: p.payment_id, status: "settled" }) });
  await ctx.modules.registerApi({
    settle: (p: any) => report(() => ctx.events.publish("PaymentSettled", p)),
  });
`, REPORT);
const FORGER = inlineModule("forger", PAY_CAPS, `
  await ctx.modules.registerApi({
    settle: (p: any) => report(() => ctx.events.publish("PaymentSettled", p)),
  });
`, REPORT);

test("role events: only the designated payment provider publishes PaymentSettled, as the real type and with a checked payload; another module is refused", async (t) => {
  const h = await startHost(t, {
    inline: { payer: PAYER, forger: FORGER },
    grants: { payer: PAY_CAPS, forger: PAY_CAPS },
    configure: (config) => {
      config.modules.providers = { payment: "payer" };
    },
  });
  const seen: Array<{ type: string; payload: unknown }> = [];
  const sub = h.host.bus.subscribe("test-role-events", (ev) => seen.push({ type: ev.type, payload: ev.payload }));
  sub.types.add("PaymentSettled");
  sub.types.add("forger:PaymentSettled");
  const settled = { payment_id: "p-1", amount_sats: 2500 };
  t.deepEqual(await callApi(h, "payer", "settle", settled), { ok: true, value: "PaymentSettled" });
  const forged = await callApi<Outcome>(h, "forger", "settle", { payment_id: "p-2", amount_sats: 1 });
  t.is(!forged.ok && forged.code, "permission_denied");
  t.regex(!forged.ok ? forged.message : "", /only "payer", the designated payment provider, may publish it/);
  const bad = await callApi<Outcome>(h, "payer", "settle", { payment_id: "p-3", amount_sats: -5 });
  t.is(!bad.ok && bad.code, "invalid_params");
  t.regex(!bad.ok ? bad.message : "", /payload of PaymentSettled: amount_sats/);
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.deepEqual(seen, [{ type: "PaymentSettled", payload: settled }], "one real PaymentSettled, nothing forged");
});
