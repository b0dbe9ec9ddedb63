// Fuzz target: the registry's index.json and index.sig as a client parses them (parseIndex,
// parseSignatures, then resolution of every module against the parsed index). The only error
// allowed is ModhostError("registry_invalid") from parsing, ModhostError from resolution.

import { ModhostError } from "../host/errors.ts";
import { parseIndex, parseSignatures } from "../host/registry/format.ts";
import { resolve } from "../host/registry/resolve.ts";
import type { EdgesTarget } from "./edges-driver.ts";

const H = (c: string) => c.repeat(64);
const INDEX = {
  format: "modhost-registry-index-v1",
  version: 3,
  generated: "2026-12-01T00:00:00.000Z",
  expires: "2027-01-01T00:00:00.000Z",
  modules: {
    alpha: {
      versions: {
        "1.0.0": {
          runtime: "isolate", description: "the alpha module", hash: `sha256:${H("a")}`, manifest: { sha256: H("b"), size: 120 },
          files: [{ path: "index.ts", sha256: H("c"), size: 300 }, { path: "lib/x.ts", sha256: H("d"), size: 10, executable: false }],
          capabilities: ["read_storage"], dependencies: {}, signers: [H("e")], published: "2026-12-01T00:00:00.000Z",
        },
        "1.1.0-rc.1": {
          runtime: "native", hash: `sha256:${H("f")}`, manifest: { sha256: H("1"), size: 1 }, files: [],
          capabilities: [], dependencies: { modhost: ">=0.1.0" }, signers: [], published: "2026-12-02T00:00:00.000Z",
        },
      },
    },
    beta: {
      versions: {
        "2.0.0": {
          runtime: "isolate", hash: `sha256:${H("2")}`, manifest: { sha256: H("3"), size: 5 }, files: [{ path: "index.ts", sha256: H("4"), size: 7 }],
          capabilities: ["network_access=example.com:443"], dependencies: { alpha: "^1.0.0" }, signers: [H("5")], published: "2026-12-03T00:00:00.000Z",
        },
      },
    },
  },
};
const SIG = { format: "modhost-registry-signature-v1", index_sha256: H("6"), signatures: [{ key: H("7"), signature: "8".repeat(128) }] };

const target: EdgesTarget = {
  dictionary: ['"versions"', '"files"', '"path"', '"../x"', '"/etc/passwd"', '"dependencies"', '"1.0.0"', '"*"', '">=2 <1"', "{", "}", "[", "]", ",", ":", '"__proto__"', '"constructor"'],
  maxInputBytes: 256 * 1024,
  seeds() {
    return [Buffer.from(JSON.stringify(INDEX, null, 2)), Buffer.from(JSON.stringify(INDEX)), Buffer.from(JSON.stringify(SIG))];
  },
  run(input) {
    try {
      parseSignatures(input, "fuzz");
    } catch (err) {
      if (!(err instanceof ModhostError) || err.code !== "registry_invalid") throw err;
    }
    let index: ReturnType<typeof parseIndex>;
    try {
      index = parseIndex(input, "fuzz");
    } catch (err) {
      if (!(err instanceof ModhostError) || err.code !== "registry_invalid") throw err;
      return;
    }
    for (const name of Object.keys(index.modules)) {
      try {
        resolve(index, [{ name, range: "*", by: "you" }], new Map());
      } catch (err) {
        if (!(err instanceof ModhostError)) throw err;
      }
    }
  },
};
export default target;
