import test from "ava";
import { startHost, GOOD_GRANTS } from "./helpers/host.ts";
test("smoke", async (t) => {
  const t0 = Date.now();
  const h = await startHost(t, { modules: ["good"], grants: { good: GOOD_GRANTS } });
  t.log("started in", Date.now() - t0);
  t.log(h.lines.join("\n"));
  await h.mine(1);
  await h.waitForLog(/stored block 102/, { source: "good" });
  t.pass();
});
