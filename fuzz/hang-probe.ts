// A target that hangs (a synchronous endless loop) at iteration 3: proves the edges driver's
// watchdog (test/fuzz-edges.test.ts). Not a real target; not in TARGETS.

import type { EdgesTarget } from "./edges-driver.ts";

let n = 0;
const target: EdgesTarget = {
  seeds: () => [Buffer.from("x")],
  run() {
    if (n++ === 3) for (;;);
  },
};
export default target;
