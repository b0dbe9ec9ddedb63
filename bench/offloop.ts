// What the host parses and reads for parties it does not control (#8), on its loop: each
// result next to the way it was done before, in the same run.
//
// Results: a module.toml of MAX_MANIFEST_BYTES (small tables, the costliest shape measured)
// read by loadManifest, against 640 KiB of the same read as the old shared 1 MiB limit allowed;
// the longest turn of this thread's loop while a running host's look at a registry (an index of
// just under MAX_INDEX_BYTES) runs in its worker, against the same index fetched and checked on
// this thread, as the look did before; the bitcoind client's loop CPU per second against a node
// answering a byte per write, against fetch reading the same answer (the old client).

import { mkdir, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { CoreRpc } from "../chain/bitcoind/rpc.ts";
import { defaultConfig } from "../host/config.ts";
import { loadManifest } from "../host/manifest.ts";
import { fetchIndex } from "../host/registry/client.ts";
import { INDEX_FORMAT, MAX_INDEX_BYTES, signIndex } from "../host/registry/format.ts";
import { lookInWorker } from "../host/registry/look.ts";
import { serveRegistry } from "../host/registry/serve.ts";
import { MAX_MANIFEST_BYTES, readToml } from "../host/toml.ts";
import { newKey } from "../test/helpers/signing.ts";
import { watchTurns } from "../test/helpers/turns.ts";
import { atCleanup, cpuPerSecond, portServer, type Benchmark, type Row } from "./common.ts";
import { summarise } from "./stats.ts";

const ROUNDS = 3;
const DRIBBLE_MS = 3000;
const FIXTURES = fileURLToPath(new URL("../test/fixtures/", import.meta.url));

function tables(bytes: number): string {
  let s = `name = "m"\nversion = "0.1.0"\nentry_point = "index.ts"\ncapabilities = []\n`;
  for (let i = 0; ; i++) {
    const t = `[[signatures.maintainers]]\nname = "m${i}"\nkey = "k"\nsignature = "s"\n`;
    if (s.length + t.length > bytes) return s;
    s += t;
  }
}

function hugeIndex(): Buffer {
  const h64 = "ab".repeat(32);
  const head = `{"format":"${INDEX_FORMAT}","version":1,"generated":"2026-01-01T00:00:00Z","expires":"2099-01-01T00:00:00Z","modules":{`;
  const parts: string[] = [];
  let size = head.length + 2;
  for (let i = 0; ; i++) {
    const e = `"m${String(i).padStart(6, "0")}":{"versions":{"1.0.0":${JSON.stringify({
      runtime: "native", hash: `sha256:${h64}`, manifest: { sha256: h64, size: 1000 },
      files: [{ path: "main", size: 1000, sha256: h64 }], capabilities: ["read_blocks"], dependencies: {}, signers: [], published: "2026-01-01T00:00:00Z",
    })}}}`;
    if (size + e.length + 1 > MAX_INDEX_BYTES) break;
    parts.push(e);
    size += e.length + 1;
  }
  return Buffer.from(`${head}${parts.join(",")}}}`);
}

const dribbler = () => portServer([`${FIXTURES}http-dribble/dribble-server.cjs`, "body", "plain", "", ""]);

/** The old client's read: fetch, its body read to the deadline. */
async function fetchAll(url: string, timeoutMs: number): Promise<void> {
  const res = await fetch(url, { method: "POST", body: "{}", signal: AbortSignal.timeout(timeoutMs) });
  for await (const _ of res.body as unknown as AsyncIterable<Uint8Array>) { /* read */ }
}

export const offloopBench: Benchmark = {
  name: "offloop",
  title: "inputs of parties the host does not control: a manifest at its limit, a registry look of 8 MiB, a dribbling bitcoind (each against the way it was done before)",
  async run(): Promise<Row[]> {
    const dir = path.join(os.tmpdir(), `modhost-bench-offloop-${process.pid}`);
    await mkdir(path.join(dir, "registry"), { recursive: true });
    atCleanup(() => void import("node:fs").then((fs) => fs.rmSync(dir, { recursive: true, force: true })));
    const s = { manifest: [] as number[], oldManifest: [] as number[], look: [] as number[], inline: [] as number[], rpc: [] as number[], fetch: [] as number[] };
    const file = path.join(dir, "module.toml");
    const small = tables(MAX_MANIFEST_BYTES);
    const large = tables(640 * 1024);
    for (let r = 0; r < ROUNDS * 3; r++) {
      await writeFile(file, small);
      let t0 = performance.now();
      await loadManifest(file).catch(() => undefined); // its problems are part of the cost
      s.manifest.push(performance.now() - t0);
      await writeFile(file, large);
      t0 = performance.now();
      await readToml(file);
      s.oldManifest.push(performance.now() - t0);
    }
    const key = newKey("registry");
    const index = hugeIndex();
    await writeFile(path.join(dir, "registry", "index.json"), index);
    await writeFile(path.join(dir, "registry", "index.sig"), JSON.stringify(signIndex(index, [key])));
    const server = await serveRegistry(path.join(dir, "registry"));
    try {
      const config = defaultConfig(dir);
      config.registry.url = server.url;
      config.registry.keys = [key.publicKey];
      for (let r = 0; r < ROUNDS; r++) {
        const turns = watchTurns();
        await lookInWorker({ settings: { file: config.file, registry: config.registry }, installed: [], announced: [] });
        s.look.push(turns.reset());
        await fetchIndex(config);
        s.inline.push(turns.reset());
        await turns.stop();
      }
    } finally {
      await server.close();
    }
    for (let r = 0; r < ROUNDS; r++) {
      const node = await dribbler();
      s.rpc.push(await cpuPerSecond(() => new CoreRpc({ url: `http://127.0.0.1:${node.port}/`, auth: { user: "u", password: "p" }, timeoutMs: DRIBBLE_MS }).call("getblockcount")));
      node.stop();
      const old = await dribbler();
      s.fetch.push(await cpuPerSecond(() => fetchAll(`http://127.0.0.1:${old.port}/`, DRIBBLE_MS)));
      old.stop();
    }
    const oldManifest = "module.toml of 640 KiB, read as the old 1 MiB limit allowed";
    const inline = "registry look, the same index fetched and checked on this thread (before): longest turn of the loop";
    const fetched = `fetch reading the same answer (the old client): loop CPU (ms) per second, to its ${DRIBBLE_MS} ms deadline`;
    return [
      { what: `module.toml of MAX_MANIFEST_BYTES (${MAX_MANIFEST_BYTES}) read by loadManifest`, kind: "result", unit: "ms", stats: summarise(s.manifest), vs: oldManifest },
      { what: oldManifest, kind: "baseline", unit: "ms", stats: summarise(s.oldManifest) },
      { what: `registry look of a ${index.length}-byte index in its worker: longest turn of the loop`, kind: "result", unit: "ms", stats: summarise(s.look), vs: inline },
      { what: inline, kind: "baseline", unit: "ms", stats: summarise(s.inline) },
      { what: `bitcoind client, node answering one byte per write: loop CPU (ms) per second, to its ${DRIBBLE_MS} ms deadline`, kind: "result", unit: "ms", stats: summarise(s.rpc), vs: fetched },
      { what: fetched, kind: "baseline", unit: "ms", stats: summarise(s.fetch) },
    ];
  },
};
