// Paged answers: a list that can outgrow one message of the module protocol (a block's
// transactions: a full mainnet block described field by field is several hundred thousand
// MessagePack values, over the protocol's max_values) is answered a page at a time. A page
// stops before it passes PAGE_VALUES values or PAGE_BYTES bytes of strings and binary, so the
// host encodes any one answer in a few milliseconds and the peer never refuses it; a page
// always holds at least one item, so reading every page ends. The SDKs read the pages and join
// them (MethodDef.pages); docs/protocol.md, "Paged answers", is the wire's side.

/** MessagePack values in one page, the answer's own fields included. */
export const PAGE_VALUES = 16_384;
/** Bytes of strings and binary in one page (a block's raw hex comes on top, see pageOf). */
export const PAGE_BYTES = 1 << 20;

interface Weight {
  values: number;
  bytes: number;
}

/** Values (map keys included) and string/binary bytes of a plain value, as the codec counts them. */
function weigh(value: unknown, w: Weight): void {
  w.values++;
  if (typeof value === "string") {
    w.bytes += value.length; // hex, txids and addresses are ASCII; a wider string is cut short here, not refused
  } else if (value instanceof Uint8Array) {
    w.bytes += value.byteLength;
  } else if (Array.isArray(value)) {
    for (const item of value) weigh(item, w);
  } else if (value !== null && typeof value === "object") {
    for (const [k, item] of Object.entries(value)) {
      if (item === undefined) continue;
      w.values++;
      w.bytes += k.length;
      weigh(item, w);
    }
  }
}

/**
 * Where the page of `items` that starts at `start` ends (exclusive), given what the rest of
 * the answer already weighs (`base`). At least one item, unless none is left.
 */
function pageEnd(items: readonly unknown[], start: number, base: Weight): number {
  const w = { values: base.values, bytes: base.bytes };
  let end = start;
  while (end < items.length) {
    weigh(items[end], w);
    if (end > start && (w.values > PAGE_VALUES || w.bytes > PAGE_BYTES)) break;
    end++;
  }
  return end;
}

/**
 * Pages of frozen lists (the chain's blocks are frozen and shared), by list and start: the
 * same block asked by many modules is one page object, which the codec encodes once. Only the
 * pages the SDKs read are kept: the one at 0 and each one starting where a kept page ends (its
 * `next`), so what is kept is one encoding of the list, however many offsets are asked. A page
 * at any other offset is built for its caller and not kept (not frozen either, so the codec
 * does not keep its encoding): kept by offset, a module asking a 1,500-transaction block at
 * offsets 0..299 made the host hold +108 MiB, every offset of a large block several GB.
 */
const built = new WeakMap<object, { pages: Map<number, object>; starts: Set<number> }>();

/**
 * The page of `whole[field]` that starts at `offset`, as the answer: the other fields of
 * `whole`, the page in `field`, and `next` set to where the next page starts (null after the
 * last). The fields named in `firstOnly` (a block's raw hex: the whole block again, up to
 * 8 MB) come with the first page only; the first page then holds what fits beside them, one
 * item at least.
 */
export function pageOf<T extends object>(whole: T, field: keyof T & string, offset: number, next: string, firstOnly: readonly string[] = []): T {
  const items = whole[field] as readonly unknown[];
  const start = Math.min(offset, items.length);
  const kept = built.get(whole);
  const cached = kept?.pages.get(start);
  if (cached) return cached as T;
  const answer: Record<string, unknown> = {};
  const base: Weight = { values: 0, bytes: 0 };
  for (const [k, value] of Object.entries(whole)) {
    if (k === field || (start > 0 && firstOnly.includes(k))) continue;
    answer[k] = value;
    weigh({ [k]: value }, base);
  }
  const end = pageEnd(items, start, base);
  const page = start === 0 && end === items.length ? items : items.slice(start, end);
  // Kept only at 0 and where a kept page ends (see `built`).
  const keep = Object.isFrozen(whole) && (start === 0 || kept?.starts.has(start) === true);
  // A kept page of a frozen list is frozen too (its items already are): the codec encodes only
  // a deeply frozen answer once (protocol/codec.ts encodeEnvelope). Left unfrozen, the slice
  // made every page of a 1000-transaction block be encoded again for every reader.
  answer[field] = keep && page !== items ? Object.freeze(page) : page;
  answer[next] = end < items.length ? end : null;
  if (keep) {
    let entry = kept;
    if (!entry) built.set(whole, (entry = { pages: new Map(), starts: new Set() }));
    entry.pages.set(start, Object.freeze(answer));
    if (end < items.length) entry.starts.add(end);
  }
  return answer as T;
}
