// The chain backend the operator configured ([chain] backend), and the Core-compatible face
// of the embedded chain when [chain] core_rpc_bind asks for one.

import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import type { ChainBackend } from "../chain/backend.ts";
import { EmbeddedChain } from "../chain/embedded.ts";
import { BitcoindBackend } from "../chain/bitcoind/backend.ts";
import { CoreFacade } from "../chain/bitcoind/facade.ts";
import type { HostConfig } from "./config.ts";
import type { SourceLogger } from "./log.ts";
import { ModhostError } from "./errors.ts";

export interface ConfiguredChain {
  backend: ChainBackend;
  /** The embedded chain served over Core's RPC/ZMQ, when configured. */
  facade?: CoreFacade;
}

export async function createChain(config: HostConfig, log: SourceLogger): Promise<ConfiguredChain> {
  const c = config.chain;
  if (c.backend === "bitcoind") {
    const auth = c.rpc_user !== null && c.rpc_password !== null ? { user: c.rpc_user, password: c.rpc_password } : { cookieFile: c.rpc_cookie_file! };
    try {
      const backend = await BitcoindBackend.create({
        rpcUrl: c.rpc_url,
        auth,
        ...(c.zmq_sequence ? { zmqSequence: c.zmq_sequence } : {}),
        ...(c.poll_interval_ms > 0 ? { pollIntervalMs: c.poll_interval_ms } : {}),
        warn: (message, fields) => log.warn(message, fields),
      });
      if (!c.zmq_sequence) log.warn("no [chain] zmq_sequence: following the node by polling; set the node's zmqpubsequence for prompt events");
      return { backend };
    } catch (err) {
      throw new ModhostError(
        "backend_unavailable",
        `cannot use the node at ${c.rpc_url}: ${(err as Error).message}`,
        "start bitcoind first, and check [chain] rpc_url and its credentials (`modhost bitcoind-config` prints a matching pair of config blocks)",
      );
    }
  }
  const backend = await EmbeddedChain.create({ matureBlocks: c.mature_blocks, dataDir: c.data_dir, blockCache: c.block_cache, blockCacheBytes: c.block_cache_mb * 1024 * 1024, utxoCache: c.utxo_cache, utxoCacheBytes: c.utxo_cache_mb * 1024 * 1024, mempoolBytes: c.max_mempool_mb * 1024 * 1024, maxStoredBytes: c.max_chain_mb * 1_000_000 });
  if (!c.core_rpc_bind && !c.core_zmq_bind) return { backend };
  const [host, port] = splitHostPort(c.core_rpc_bind ?? "127.0.0.1:0");
  // A cookie like bitcoind's: bitcoin-cli -rpccookiefile=PATH reads it.
  const cookie = `__cookie__:${randomBytes(32).toString("hex")}`;
  const cookieFile = path.join(path.dirname(config.rpc.cookie_file), "core-rpc.cookie");
  await mkdir(path.dirname(cookieFile), { recursive: true });
  await writeFile(cookieFile, cookie, { mode: 0o600 });
  const facade = new CoreFacade({
    backend,
    rpcHost: host,
    rpcPort: port,
    cookie,
    ...(c.core_zmq_bind ? { zmqEndpoint: c.core_zmq_bind } : {}),
    mine: (n) => backend.mine(n),
  });
  await facade.start();
  log.info(`embedded chain served over Bitcoin Core's RPC at ${facade.rpcUrl}`, { cookie: cookieFile, ...(c.core_zmq_bind ? { zmq: facade.zmqEndpoint } : {}) });
  return { backend, facade };
}

function splitHostPort(s: string): [string, number] {
  const i = s.lastIndexOf(":");
  return [s.slice(0, i).replace(/^\[|\]$/g, ""), Number(s.slice(i + 1))];
}
