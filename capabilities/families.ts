// Every capability family, and the method index derived from them.
import type { Family, MethodDef } from "./types.ts";
import { binHexPaths } from "./schemas.ts";
import type { Permission } from "./catalogue.ts";
import { chain } from "./chain.ts";
import { mempool } from "./mempool.ts";
import { storage } from "./storage.ts";
import { events } from "./events.ts";
import { config } from "./config.ts";
import { fs } from "./fs.ts";
import { rpc } from "./rpc.ts";
import { metrics } from "./metrics.ts";
import { modules } from "./modules.ts";
import { timers } from "./timers.ts";
import { lightning } from "./lightning.ts";
import { network } from "./network.ts";
import { mining } from "./mining.ts";
import { hooks } from "./hooks.ts";

export const FAMILIES: readonly Family[] = [chain, mempool, storage, events, config, rpc, metrics, fs, modules, timers, lightning, network, mining, hooks];

/** What the SDKs need beyond a method's name and arguments to give its answer as the types say. */
export interface SdkShape {
  /** Paths of fields that are binary on the wire and hex in the SDKs (schemas.ts binHexPaths). */
  readonly hex?: readonly string[];
  /** MethodDef.via. */
  readonly via?: { readonly method: string; readonly field: string };
}

export interface IndexedMethod extends MethodDef {
  readonly family: string;
  /** Derived from the result schema and `via`; absent when the answer needs nothing. */
  readonly sdk?: SdkShape;
}

function sdkShape(m: MethodDef): SdkShape | undefined {
  const hex = binHexPaths(m.result);
  if (hex.length === 0 && !m.via) return undefined;
  return { ...(hex.length ? { hex } : {}), ...(m.via ? { via: m.via } : {}) };
}

export const METHODS: ReadonlyMap<string, IndexedMethod> = new Map(
  FAMILIES.flatMap((f) => f.methods.map((m) => {
    const sdk = sdkShape(m);
    return [m.name, { ...m, family: f.name, ...(sdk ? { sdk } : {}) }] as const;
  })),
);

/** The methods each permission unlocks (derived; used for docs and `modhost check`). */
export function methodsByPermission(): Map<Permission | null, string[]> {
  const out = new Map<Permission | null, string[]>();
  for (const m of METHODS.values()) {
    const list = out.get(m.permission) ?? [];
    list.push(m.name);
    out.set(m.permission, list);
  }
  return out;
}
