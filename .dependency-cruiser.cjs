// The import direction (docs/architecture.md, "Rooms and the import direction"):
//
//   bin → host → runtime → capabilities → storage
//                                  ↘ protocol, chain (below all of them)
//   sdk/node → protocol only;  sdk/types → nothing of the project
//
// Tests and benchmarks may import anything. `npx depcruise --config .dependency-cruiser.cjs .`
// runs in CI and fails on any import against the direction.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "runtime-not-to-host",
      comment: "runtime/ receives narrow inputs from the host; it never imports host/.",
      severity: "error",
      from: { path: "^runtime/" },
      to: { path: "^host/" },
    },
    {
      name: "capabilities-not-up",
      comment: "capabilities/ serves both runtimes through CallContext/HostServices; it never imports host/ or runtime/.",
      severity: "error",
      from: { path: "^capabilities/" },
      to: { path: "^(host|runtime)/" },
    },
    {
      name: "storage-not-up",
      severity: "error",
      from: { path: "^storage/" },
      to: { path: "^(host|runtime|capabilities)/" },
    },
    {
      name: "protocol-and-chain-at-the-bottom",
      comment: "protocol/ and chain/ are shared by every side; they import nothing of the project above them.",
      severity: "error",
      from: { path: "^(protocol|chain)/" },
      to: { path: "^(host|runtime|capabilities|storage|sdk)/" },
    },
    {
      name: "sdk-node-only-protocol",
      comment: "The Node SDK is what a native module links: the wire protocol and nothing of the host.",
      severity: "error",
      from: { path: "^sdk/node/" },
      to: { path: "^(host|runtime|capabilities|storage|chain)/" },
    },
    {
      name: "sdk-types-standalone",
      comment: "modhost/sdk is imported by module authors outside the checkout: it must stand alone.",
      severity: "error",
      from: { path: "^sdk/types/" },
      to: { path: "^(host|runtime|capabilities|storage|chain|protocol)/" },
    },
    {
      name: "no-ambient-io-in-capabilities",
      comment:
        "All I/O a module can reach goes through a few audited files: only capabilities/fs.ts, fs-path.ts, http.ts and dns.ts (http_request's name resolution) may import node:fs, node:net, node:dgram, node:http(s), node:dns, node:child_process (grants.ts and address-policy.ts take net.isIP, a pure function, to canonicalise network scopes and judge addresses).",
      severity: "error",
      from: { path: "^capabilities/", pathNot: "^capabilities/(fs|fs-path|http|dns|grants|address-policy)\\.ts$" },
      to: { dependencyTypes: ["core"], path: "^(node:)?(fs|fs/promises|net|dgram|http|https|dns|dns/promises|child_process)$" },
    },
    {
      name: "no-circular-folders",
      severity: "error",
      from: { path: "^(host|runtime|capabilities|storage|protocol|chain|sdk)/" },
      to: { circular: true, pathNot: "^(test|bench)/" , viaOnly: { path: "^(host|runtime|capabilities|storage|protocol|chain|sdk)/" } },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "(^|/)(node_modules|target|dist|\\.git)/" },
    // Node's core modules are in the graph too, or the ambient-I/O rule above would see nothing.
    includeOnly: ["^(bin|host|runtime|capabilities|storage|protocol|chain|sdk|modules)/", "^(node:)?(fs|fs/promises|net|http|https|dns|dns/promises|child_process)$"],
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: { extensions: [".ts", ".js", ".mjs"] },
  },
};
