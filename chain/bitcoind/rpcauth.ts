// Bitcoin Core's `rpcauth=` lines (share/rpcauth/rpcauth.py): `USER:SALT$HMAC`, where SALT is
// 16 random bytes in hex and HMAC is HMAC-SHA256 keyed with the salt (as text) over the
// password, in hex. The node stores only the line; the client sends USER:PASSWORD.

import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { REQUIRED_RPCS } from "./backend.ts";

export function rpcauthLine(user: string, password: string, salt = randomBytes(16).toString("hex")): string {
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(user)) throw new Error(`an RPC user name is 1-64 letters, digits, '_', '.' or '-'; got ${JSON.stringify(user)}`);
  return `${user}:${salt}$${createHmac("sha256", salt).update(password).digest("hex")}`;
}

/** Whether USER:PASSWORD matches an rpcauth line's value (`USER:SALT$HMAC`). */
export function checkRpcauth(line: string, user: string, password: string): boolean {
  const m = /^([^:]+):([0-9a-f]+)\$([0-9a-f]{64})$/.exec(line);
  if (!m || m[1] !== user) return false;
  const expected = Buffer.from(m[3]!, "hex");
  const actual = createHmac("sha256", m[2]!).update(password).digest();
  return timingSafeEqual(expected, actual);
}

export interface BitcoindConfigLines {
  user: string;
  password: string;
  /** The lines for bitcoin.conf. */
  bitcoinConf: string[];
  /** The [chain] table for modhost.toml. */
  modhostToml: string[];
}

/**
 * What `modhost bitcoind-config` prints: a least-authority RPC user for modhost (only the
 * RPCs it calls: no wallet, no `stop`, no peer management) and the ZMQ topic it follows.
 */
export function bitcoindConfig(opts: { user?: string; password?: string; rpcPort?: number; zmqPort?: number } = {}): BitcoindConfigLines {
  const user = opts.user ?? "modhost";
  const password = opts.password ?? randomBytes(24).toString("base64url");
  const rpcPort = opts.rpcPort ?? 8332;
  const zmqPort = opts.zmqPort ?? 28332;
  return {
    user,
    password,
    bitcoinConf: [
      `# modhost: an RPC user that may call only what modhost needs (no wallet, no stop).`,
      `rpcauth=${rpcauthLine(user, password)}`,
      `rpcwhitelist=${user}:${REQUIRED_RPCS.join(",")}`,
      `# Users without their own rpcwhitelist line keep full access (set 1 to refuse them everything).`,
      `rpcwhitelistdefault=0`,
      `# Block and mempool notifications for modhost (one topic carries both, with sequence numbers).`,
      `zmqpubsequence=tcp://127.0.0.1:${zmqPort}`,
      `# Needed to look up confirmed transactions by txid (get_transaction).`,
      `txindex=1`,
    ],
    modhostToml: [
      `[chain]`,
      `backend = "bitcoind"`,
      `rpc_url = "http://127.0.0.1:${rpcPort}/"`,
      `rpc_user = "${user}"`,
      `rpc_password = "${password}"`,
      `zmq_sequence = "tcp://127.0.0.1:${zmqPort}"`,
    ],
  };
}
