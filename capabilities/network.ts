// Network information from the chain backend. Read-only: nothing here opens a connection or
// changes the node's peers (that is network_access, a separate, host-scoped permission).
import { method, type Family } from "./types.ts";
import { none } from "./schemas.ts";

export const network: Family = {
  name: "network",
  summary: "Read network statistics and the peer list.",
  methods: [
    method({ name: "get_network_stats", js: "getStats", permission: "read_network", args: [], params: none, summary: "Peer count, hash rate, bytes sent and received.", handler: (c) => c.chain.getNetworkStats() }),
    method({ name: "get_network_peers", js: "getPeers", permission: "read_network", args: [], params: none, summary: "Connected peers: address, transport, services, version, since.", handler: (c) => c.chain.getPeers() }),
  ],
};
