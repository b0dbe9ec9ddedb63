import test from "ava";
import { startHost, GOOD_GRANTS } from "./helpers/host.ts";
test("smoke", async (t) => {
  const h = await startHost(t, { modules: ["good", "probe-globals"], grants: { good: GOOD_GRANTS , "probe-globals": ["read_chain_state", "read_storage", "write_storage"]} });
  await h.waitForLog(/PROBE/, { source: "probe-globals" , timeoutMs: 3000}).catch(()=>{});
  t.log(h.lines.join("\n"));
  t.pass();
});
