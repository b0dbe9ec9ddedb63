// Mining: block templates, and blocks submitted by a module. A submitted block goes through
// the backend's full block checks (proof of work against its bits, parent = the active tip,
// merkle root, coinbase value, inputs spending existing outputs, ...) before it is connected;
// a module cannot change consensus state except by producing a block the chain accepts.
//
// As in the BLVM node, get_block_template needs only read_blockchain; submitting needs
// submit_block, and queueing a block "as if received from a peer" queue_inbound_block.
import * as v from "valibot";
import { hexToBytes } from "@noble/hashes/utils.js";
import { CapabilityError, method, type Family, type MethodPages } from "./types.ts";
import { PAGE_BYTES, pageOf } from "./pages.ts";
import { BlockTemplate as BlockTemplateResult, SubmitBlockResult, named } from "./schemas.ts";
import { bytesToHex } from "@noble/hashes/utils.js";
import { describeTransaction, displayHex, sha256d, witnessCommitment } from "../chain/serialise.ts";
import { parseTransaction } from "../chain/parse.ts";
import { Slicer } from "../chain/slices.ts";
import { ownBytes } from "../protocol/codec.ts";
import { blockSubsidy, coinbaseTransaction } from "../chain/blocks.ts";
import { bytesOfRaw, hexOfRaw, type BlockTemplate } from "../chain/backend.ts";
import type { CallContext } from "./types.ts";
import { BlockBudget } from "./block-budget.ts";

/** Hex of raw bytes, at most `maxBytes` bytes. */
function rawHex(maxBytes: number) {
  return named("Hex", v.pipe(
    v.string(),
    v.maxLength(maxBytes * 2, `at most ${maxBytes} bytes (${maxBytes * 2} hex characters)`),
    v.regex(/^(?:[0-9a-fA-F]{2})+$/, "expected hex (an even number of 0-9a-f characters)"),
    v.toLowerCase(),
  ));
}

/**
 * Raw bytes of at most `maxBytes`: binary (MessagePack bin; Uint8Array in TypeScript, bytes
 * in Rust), or their hex as a string. Binary is the form for anything large: a module's
 * message holds at most max_total_string_bytes (1 MiB) of strings, which a block over 512 KB
 * as hex passes (docs/protocol.md section 3.1); hex is kept for what is small and for modules
 * written before. Either way the handler gets the bytes (toBytes): the chain reads them in
 * slices (chain/parse.ts), never as one long stretch of the host's loop.
 */
export function rawBytes(maxBytes: number) {
  return v.union([
    rawHex(maxBytes),
    named("Bytes", v.pipe(
      v.custom<Uint8Array>((x) => x instanceof Uint8Array, "expected bytes (binary) or hex"),
      v.check((b) => b.byteLength <= maxBytes, `at most ${maxBytes} bytes`),
    )),
  ], `expected the raw bytes as binary, or as hex (an even number of 0-9a-f characters), at most ${maxBytes} bytes`);
}

/**
 * The bytes of what rawBytes accepted (hex decoded natively; binary as is, a view of the frame,
 * unless it is less than half of what it views: the chain keeps a block's and a transaction's
 * bytes, and a small one must not keep a large frame alive, see ownBytes).
 */
export function toBytes(raw: string | Uint8Array): Uint8Array {
  return typeof raw === "string" ? Buffer.from(raw, "hex") : ownBytes(raw);
}

/** A block is at most 4 MB (weight 4,000,000, every byte at least weight 1). */
export const MAX_BLOCK_BYTES = 4_000_000;

const templateOptions = named("BlockTemplateOptions", v.object({
  rules: v.optional(v.pipe(v.array(v.pipe(v.string(), v.maxLength(64))), v.maxLength(32))),
  coinbase_script: v.optional(rawHex(10_000)),
  /** A later page of a template (its answer's next_page); the other options are then ignored. */
  page: v.optional(v.pipe(v.string(), v.maxLength(64, "page is the next_page of an earlier answer (at most 64 characters)"))),
}), { rust: "built with its own methods" });

/** A template's transactions come a page at a time (docs/protocol.md 6.1); the SDKs join them. */
const templatePages: MethodPages = { cursor: "page", items: "transactions", next: "next_page", same: "template_id" };

/**
 * Templates of more than one page, kept for their later pages: at most TEMPLATES_KEPT per
 * module (making another drops its oldest), each for TEMPLATE_KEPT_MS. A kept template is a
 * list of references to mempool transactions (~100 bytes each, ~1.6 MB for a full block of
 * the smallest ones). docs/protocol.md 6.1 names both.
 */
export const TEMPLATES_KEPT = 4;
const TEMPLATE_KEPT_MS = 60_000;
const keptTemplates = new Map<string, Map<string, { template: BlockTemplate; id: string; until: number }>>();
let nextTemplate = 1;

/** The module's kept templates, the expired ones dropped (and, while at it, those of every module). */
function keptOf(module: string, now: number): Map<string, { template: BlockTemplate; id: string; until: number }> {
  for (const [m, kept] of keptTemplates) {
    for (const [id, k] of kept) if (k.until <= now) kept.delete(id);
    if (kept.size === 0 && m !== module) keptTemplates.delete(m);
  }
  let kept = keptTemplates.get(module);
  if (!kept) keptTemplates.set(module, (kept = new Map()));
  return kept;
}

/** The page of `template` (named `id`) that starts at transaction `offset`. */
function templatePage(template: BlockTemplate, id: string, offset: number) {
  const whole = { ...template, template_id: id, tx_count: template.transactions.length };
  const page = pageOf(whole, "transactions", offset, "next_page") as typeof whole & { next_page: number | string | null };
  page.next_page = page.next_page === null ? null : `${id}:${page.next_page}`;
  return page as typeof whole & { next_page: string | null };
}

/** The first page of a new template; kept for its later pages when it has any. */
function firstTemplatePage(c: CallContext, template: BlockTemplate) {
  const now = Date.now();
  const id = `${now.toString(36)}-${nextTemplate++}`;
  const page = templatePage(template, id, 0);
  if (page.next_page !== null) {
    const kept = keptOf(c.module, now);
    while (kept.size >= TEMPLATES_KEPT) kept.delete(kept.keys().next().value as string);
    kept.set(id, { template, id, until: now + TEMPLATE_KEPT_MS });
  }
  return page;
}

/** A later page (`page` = "<template_id>:<tx offset>") of a template this module was given. */
function laterTemplatePage(c: CallContext, cursor: string) {
  const at = cursor.lastIndexOf(":");
  const id = cursor.slice(0, at);
  const offset = Number(cursor.slice(at + 1));
  if (at < 1 || !Number.isInteger(offset) || offset < 0) {
    throw new CapabilityError("invalid_params", `page "${cursor}" is not a next_page of get_block_template: pass the next_page of the answer before, as it came`);
  }
  const kept = keptOf(c.module, Date.now()).get(id);
  if (!kept) {
    throw new CapabilityError("not_found", `block template ${id} is no longer kept (the host keeps at most ${TEMPLATES_KEPT} templates per module, each for ${TEMPLATE_KEPT_MS / 1000} s; fixed): ask for a new template, without page`);
  }
  return templatePage(kept.template, id, offset);
}

/** The budget of hosts that give none (unit tests): every module at DEFAULT_BLOCK_RATE. */
const defaultBudget = new BlockBudget();

/**
 * Hand a module's block to the chain, within its rate (./block-budget.ts): over it, refused
 * before the block is read; a block the chain does not accept gives its share back.
 */
async function handBlock(c: CallContext, raw: string | Uint8Array, before?: (bytes: Uint8Array) => void) {
  const size = typeof raw === "string" ? raw.length / 2 : raw.byteLength;
  const charge = (c.services.blockBudget ?? defaultBudget).take(c.module, size);
  let accepted = false;
  try {
    const bytes = toBytes(raw);
    before?.(bytes);
    const { storedBytes, ...answer } = await c.chain.submitBlock(bytes);
    accepted = answer.result === "accepted";
    if (accepted) charge.written(storedBytes ?? size);
    return answer;
  } finally {
    if (!accepted) charge.giveBack();
  }
}

export const mining: Family = {
  name: "mining",
  summary: "Block templates, and submitting mined blocks.",
  methods: [
    method({
      name: "get_block_template", result: BlockTemplateResult, js: "getBlockTemplate", permission: "read_blockchain", args: ["options"], params: templateOptions,
      pages: templatePages,
      handWritten: { rust: "get_block_template reads every page (template_id, next_page) and joins them" },
      summary: `A template for the next block: parent, height, bits, target, times, mempool transactions with fees (highest fee rate first, a full block's worth), coinbase value, witness commitment; with coinbase_script also a ready coinbase transaction paying to it. One answer carries a page of the transactions (template_id, next_page: the host keeps a template of several pages ${TEMPLATE_KEPT_MS / 1000} s, at most ${TEMPLATES_KEPT} per module); the SDKs read them all. With block_template hooks registered, the template is one page (16,384 values, 1 MiB of hex) before the hooks see it. \`rules\` is accepted for compatibility (templates always follow segwit rules).`,
      handler: async (c, p) => {
        if (p.page !== undefined) return laterTemplatePage(c, p.page);
        const template = await c.chain.getBlockTemplate(p.coinbase_script === undefined ? {} : { coinbaseScript: p.coinbase_script });
        // A hook's invocation carries the whole template: one page of it (as before pages).
        if (c.services.hooks?.active("block_template")) return firstTemplatePage(c, await hookedTemplate(c, boundedTemplate(template, p.coinbase_script), p.coinbase_script));
        return firstTemplatePage(c, template);
      },
    }),
    method({
      name: "submit_block", result: SubmitBlockResult, js: "submitBlock", permission: "submit_block", args: ["hex"], params: v.object({ hex: rawBytes(MAX_BLOCK_BYTES) }),
      handWritten: { rust: "submit_block (hex, sent as binary) and submit_block_bytes" },
      summary: 'Submit a serialised block (binary, or hex); answers {result, reason?, hash?} with result "accepted", "duplicate" or "rejected" (reason: why).',
      audit: true,
      handler: (c, p) => handBlock(c, p.hex, (bytes) => {
        // Said before submitting: a backend may announce the block (NewBlock) before it answers.
        if (bytes.length >= 80) c.services.blockSubmitted?.(displayHex(sha256d(bytes.subarray(0, 80))), c.module);
      }),
    }),
    method({
      name: "queue_received_block", result: SubmitBlockResult, js: "queueBlock", permission: "queue_inbound_block", args: ["hex"], params: v.object({ hex: rawBytes(MAX_BLOCK_BYTES) }),
      handWritten: { rust: "queue_received_block (hex, sent as binary) and queue_received_block_bytes" },
      summary: "Hand the node a serialised block (binary, or hex) as if a peer had sent it; checked and connected like submit_block, same answer.",
      audit: true,
      handler: (c, p) => handBlock(c, p.hex),
    }),
  ],
};

/** The BIP141 commitment output script prefix: OP_RETURN, push 36, aa21a9ed. */
const COMMITMENT_PREFIX = "6a24aa21a9ed";
let extraNonce = 1;

/**
 * The block_template hooks see the template (capabilities/hooks.ts); one that left
 * transactions out gets a template rebuilt around the rest: coinbase value, witness
 * commitment and (when asked for) the coinbase transaction follow the kept transactions.
 */
async function hookedTemplate(c: CallContext, template: BlockTemplate, coinbaseScript: string | undefined): Promise<BlockTemplate> {
  const payload = {
    module: c.module, height: template.height, previous_block_hash: template.previous_block_hash,
    // The hook payload's hex stays a string (its schema, capabilities/hooks.ts): made here, only when a hook is registered.
    transactions: template.transactions.map((t) => (typeof t.hex === "string" ? t : { ...t, hex: hexOfRaw(t.hex) })), coinbase_value: template.coinbase_value,
  };
  const out = await c.services.hooks!.run("block_template", payload, { caller: c.module });
  if (out === payload || out.transactions.length === template.transactions.length) return template;
  const kept = new Set(out.transactions.map((k) => k.txid));
  // A kept transaction spending a left-out one would make the block invalid: leave it out too.
  const dropped = new Set(template.transactions.filter((t) => !kept.has(t.txid)).map((t) => t.txid));
  const transactions: BlockTemplate["transactions"] = [];
  const slicer = new Slicer();
  for (const t of template.transactions) {
    if (dropped.has(t.txid)) continue;
    const spendsDropped = (await parseTransaction(bytesOfRaw(t.hex), slicer)).inputs.some((i) => dropped.has(i.txid));
    if (spendsDropped) dropped.add(t.txid);
    else transactions.push(t);
  }
  return rebuiltAround(template, transactions, coinbaseScript);
}

/**
 * What one get_block_template answer carries of transactions: a page's bounds
 * (capabilities/pages.ts), 16,384 values and 1 MiB of their hex, so that the host encodes the
 * answer in a few milliseconds and it fits any message. A template for a full block of small
 * transactions (up to ~16,000 of them, 8 MB of hex) is more than that.
 */
const TEMPLATE_VALUES = 16_384 - 64;
/** Values of one transaction entry of a template: a map of 5 keys and their values, plus itself. */
const TEMPLATE_ENTRY_VALUES = 11;

/**
 * The template, or (when its transactions pass TEMPLATE_VALUES / PAGE_BYTES) a template of
 * the longest prefix of them that fits, rebuilt around it: coinbase value, witness commitment
 * and coinbase transaction follow. A prefix is a valid block's content (a template lists
 * parents before children), and the highest fee rates come first.
 */
function boundedTemplate(template: BlockTemplate, coinbaseScript: string | undefined): BlockTemplate {
  let values = 0;
  let bytes = 0;
  let kept = 0;
  for (const tx of template.transactions) {
    values += TEMPLATE_ENTRY_VALUES;
    bytes += tx.hex.length + tx.txid.length + tx.wtxid.length + 24;
    if (values > TEMPLATE_VALUES || bytes > PAGE_BYTES) break;
    kept++;
  }
  return kept === template.transactions.length ? template : rebuiltAround(template, template.transactions.slice(0, kept), coinbaseScript);
}

/** `template` with only `transactions` (a valid subset, in order): coinbase value, commitment and coinbase rebuilt. */
function rebuiltAround(template: BlockTemplate, transactions: BlockTemplate["transactions"], coinbaseScript: string | undefined): BlockTemplate {
  const coinbaseValue = blockSubsidy(template.height) + transactions.reduce((sum, t) => sum + t.fee, 0);
  const wtxids = transactions.map((t) => t.wtxid);
  const { coinbase_tx: _old, ...rest } = template;
  // At most a page of transactions here (boundedTemplate): ~3,000 hashes, made once.
  const commitment = witnessCommitment(wtxids, new Uint8Array(32));
  const next: BlockTemplate = {
    ...rest, transactions, coinbase_value: coinbaseValue,
    default_witness_commitment: COMMITMENT_PREFIX + bytesToHex(commitment),
  };
  if (coinbaseScript !== undefined) {
    const coinbase = describeTransaction(coinbaseTransaction(template.height, extraNonce++, coinbaseValue, hexToBytes(coinbaseScript), wtxids, commitment));
    next.coinbase_tx = { txid: coinbase.txid, hex: coinbase.hex };
  }
  return next;
}
