// Raw serialisations (a block's bytes, a transaction's) travel as MessagePack bin since protocol
// version 2 (docs/protocol.md 6.3); modules are given hex. The catalogue names the fields
// (MethodShape.sdk.hex: dotted paths, "*" for every item of a list). Two places make the hex:
// the host for a session that negotiated version 1 (host/older-protocol.ts), and the isolate
// host process for its module's isolate (runtime/isolate/worker.ts), both with Buffer's native
// hex, never byte by byte in JavaScript.

/**
 * `value` with the bytes at each of `paths` replaced by their hex; copied along a path only
 * where something changed (answers may be frozen and shared), a copy of a frozen value frozen
 * too. A field that is already a string (a backend that holds only hex) stays.
 */
export function withRawHex(value: unknown, paths: readonly (readonly string[])[]): unknown {
  let out = value;
  for (const p of paths) out = hexAt(out, p, 0);
  return out;
}

function hexAt(value: unknown, path: readonly string[], i: number): unknown {
  if (i === path.length) return value instanceof Uint8Array ? Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("hex") : value;
  if (value === null || typeof value !== "object" || value instanceof Uint8Array) return value;
  const seg = path[i]!;
  if (seg === "*") {
    if (!Array.isArray(value)) return value;
    let copy: unknown[] | undefined;
    for (let k = 0; k < value.length; k++) {
      const v = hexAt(value[k], path, i + 1);
      if (v !== value[k]) (copy ??= [...value])[k] = v;
    }
    return copy ? likeFrozen(value, copy) : value;
  }
  if (Array.isArray(value) || !Object.hasOwn(value, seg)) return value;
  const rec = value as Record<string, unknown>;
  const v = hexAt(rec[seg], path, i + 1);
  return v === rec[seg] ? value : likeFrozen(value, { ...rec, [seg]: v });
}

const likeFrozen = <T extends object>(source: object, copy: T): T => (Object.isFrozen(source) ? Object.freeze(copy) : copy);

/** The catalogue's hex paths of a method, split once. */
export function splitHexPaths(paths: readonly string[] | undefined): readonly (readonly string[])[] | undefined {
  return paths && paths.length > 0 ? paths.map((p) => p.split(".")) : undefined;
}
