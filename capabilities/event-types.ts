// The event catalogue: every event type the bus carries, with its payload and who may
// publish it. It covers the seeds' whole catalogue (core chain, mempool, payment, mining,
// network, module lifecycle, configuration, maintenance and resources, governance,
// consensus), each typed, and says for each who produces it:
//
//  - "host": the host itself (lifecycle, configuration, its own measurements);
//  - "backend": the chain backend (the embedded chain or a Bitcoin Core node);
//  - a provider role ("payment", "lightning", "mining", "governance"): only the module the
//    operator designated for that role ([modules.providers]) may publish it, as the real type
//    (not namespaced), with a payload checked against the schema below;
//  - "none": in the catalogue so modules can be written against it, but nothing in modhost
//    produces it yet (its description says why).
//
// Every other module event is published in the module's own namespace ("<module>:<name>"),
// so no module can forge a node event or another module's.

import * as v from "valibot";
import type { HostEvents, ProviderRole, RoleEvents } from "../protocol/events.ts";

// The payload types are the wire's (protocol/events.ts); this file adds who may publish each.
export type { HostEvents, ProviderRole };
export const PROVIDER_ROLES: readonly ProviderRole[] = ["lightning", "payment", "mining", "governance"];

const hex = v.pipe(v.string(), v.regex(/^[0-9a-f]{64}$/, "a 64-character lowercase hex hash"));
const text = (max = 256) => v.pipe(v.string(), v.maxLength(max));
const sats = v.pipe(v.number(), v.integer(), v.minValue(0));
const count = v.pipe(v.number(), v.integer(), v.minValue(0));

/** Payload schemas of the events a designated provider publishes (checked before publishing). */
export const ROLE_EVENT_SCHEMAS = {
  PaymentRequestCreated: v.strictObject({ payment_id: text(), amount_sats: sats, description: v.optional(text(1024)), expires_at: v.optional(count) }),
  PaymentSettled: v.strictObject({ payment_id: text(), amount_sats: sats, tx_hash: v.optional(hex), preimage: v.optional(text(128)) }),
  PaymentFailed: v.strictObject({ payment_id: text(), reason: text(1024) }),
  PaymentVerified: v.strictObject({ payment_id: text(), amount_sats: sats, confirmations: count }),
  PaymentRouteFound: v.strictObject({ payment_id: text(), hops: count, fee_sats: sats }),
  PaymentRouteFailed: v.strictObject({ payment_id: text(), reason: text(1024) }),
  ChannelOpened: v.strictObject({ channel_id: text(), peer: text(), capacity_sats: sats, funding_txid: v.optional(hex) }),
  ChannelClosed: v.strictObject({ channel_id: text(), peer: text(), reason: text(1024), closing_txid: v.optional(hex) }),
  BlockTemplateUpdated: v.strictObject({ previous_block_hash: hex, height: count, transaction_count: count, coinbase_value: sats, reason: v.picklist(["new_block", "mempool"]) }),
  MiningJobCreated: v.strictObject({ job_id: text(), height: count, previous_block_hash: hex }),
  ShareSubmitted: v.strictObject({ job_id: text(), worker: text(), accepted: v.boolean(), difficulty: v.number() }),
  MergeMiningReward: v.strictObject({ chain: text(), amount: v.number(), block_hash: text() }),
  MiningPoolConnected: v.strictObject({ pool: text() }),
  MiningPoolDisconnected: v.strictObject({ pool: text(), reason: text(1024) }),
  GovernanceProposalCreated: v.strictObject({ proposal_id: text(), title: text(1024), author: v.optional(text()) }),
  GovernanceProposalVoted: v.strictObject({ proposal_id: text(), voter: text(), vote: text(64) }),
  GovernanceProposalMerged: v.strictObject({ proposal_id: text() }),
  GovernanceForkDetected: v.strictObject({ height: count, description: text(1024) }),
  EconomicNodeRegistered: v.strictObject({ node_id: text(), weight: v.optional(v.number()) }),
  EconomicNodeVeto: v.strictObject({ node_id: text(), proposal_id: text() }),
  VetoThresholdReached: v.strictObject({ proposal_id: text(), veto_weight: v.number(), threshold: v.number() }),
  WebhookSent: v.strictObject({ url: text(2048), event_type: text(128), status: count }),
  WebhookFailed: v.strictObject({ url: text(2048), event_type: text(128), error: text(1024), attempts: count }),
};

/** The schemas check exactly the payload types the wire declares (protocol/events.ts): a field or event on one side only fails the typecheck here. */
type SchemaOutputs = { [K in keyof typeof ROLE_EVENT_SCHEMAS]: v.InferOutput<(typeof ROLE_EVENT_SCHEMAS)[K]> };
type Same<X, Y> = [X] extends [Y] ? ([Y] extends [X] ? true : false) : false;
type Agree<A, B> = Same<keyof A, keyof B> extends true
  ? false extends { [K in keyof A & keyof B]: Same<keyof A[K], keyof B[K]> extends true ? Same<A[K], B[K]> : false }[keyof A & keyof B] ? false : true
  : false;
true satisfies Agree<SchemaOutputs, RoleEvents>;


export type HostEventName = keyof HostEvents;

type EventProducer = "host" | "backend" | ProviderRole | "none";

export interface EventTypeInfo {
  readonly category: "chain" | "mempool" | "payment" | "mining" | "network" | "module" | "config" | "node" | "maintenance" | "governance" | "consensus";
  readonly producer: EventProducer;
  readonly description: string;
}

const NOT_YET_NODE = "Not produced yet: neither the embedded chain nor the Bitcoin Core backend reports it.";

export const EVENT_TYPES: Record<HostEventName, EventTypeInfo> = {
  NewBlock: { category: "chain", producer: "backend", description: "A block was connected to the active chain." },
  BlockDisconnected: { category: "chain", producer: "backend", description: "A block was disconnected from the active chain (reorganisation)." },
  ChainReorg: { category: "chain", producer: "backend", description: "The active chain switched to another branch; sent after the disconnects and connects." },
  ChainBackendUnavailable: { category: "chain", producer: "backend", description: "The chain backend lost its node; chain requests fail with backend_unavailable until ChainBackendRestored." },
  ChainBackendRestored: { category: "chain", producer: "backend", description: "The chain backend reached its node again; the chain events missed meanwhile were sent before this one." },
  NewTransaction: { category: "chain", producer: "host", description: "A new transaction entered the mempool (the seeds' name; sent with MempoolTransactionAdded, same payload)." },
  MempoolTransactionAdded: { category: "mempool", producer: "backend", description: "A transaction entered the mempool." },
  MempoolTransactionRemoved: { category: "mempool", producer: "backend", description: "A transaction left the mempool (mined, conflicted, evicted)." },
  FeeRateChanged: { category: "mempool", producer: "host", description: "The fee estimate for the next block (target 1) changed after a block; old and new in sat/vB." },
  MempoolThresholdExceeded: { category: "mempool", producer: "none", description: "The mempool grew past a size threshold. Not produced yet: modhost sets no mempool threshold." },
  MempoolCleared: { category: "mempool", producer: "none", description: "The mempool was emptied. Not produced yet." },
  PaymentRequestCreated: { category: "payment", producer: "payment", description: "The payment provider created a payment request." },
  PaymentSettled: { category: "payment", producer: "payment", description: "A payment settled." },
  PaymentFailed: { category: "payment", producer: "payment", description: "A payment failed." },
  PaymentVerified: { category: "payment", producer: "payment", description: "A payment was verified on chain." },
  PaymentRouteFound: { category: "payment", producer: "payment", description: "A route for a payment was found." },
  PaymentRouteFailed: { category: "payment", producer: "payment", description: "No route for a payment." },
  ChannelOpened: { category: "payment", producer: "lightning", description: "A Lightning channel opened." },
  ChannelClosed: { category: "payment", producer: "lightning", description: "A Lightning channel closed." },
  BlockMined: { category: "mining", producer: "host", description: "A block a module submitted (submit_block) was accepted and connected." },
  BlockTemplateUpdated: { category: "mining", producer: "mining", description: "The mining provider has a new block template (a new block, or mempool changes)." },
  MiningDifficultyChanged: { category: "mining", producer: "host", description: "The tip's difficulty bits differ from its parent's." },
  MiningJobCreated: { category: "mining", producer: "mining", description: "The mining provider created a job for its miners." },
  ShareSubmitted: { category: "mining", producer: "mining", description: "A miner submitted a share to the mining provider." },
  MergeMiningReward: { category: "mining", producer: "mining", description: "A merge-mining reward was received." },
  MiningPoolConnected: { category: "mining", producer: "mining", description: "The mining provider connected to a pool." },
  MiningPoolDisconnected: { category: "mining", producer: "mining", description: "The mining provider lost its pool." },
  PeerConnected: { category: "network", producer: "backend", description: "The node connected to a peer (the Bitcoin Core backend, from getpeerinfo)." },
  PeerDisconnected: { category: "network", producer: "backend", description: "The node disconnected from a peer (the Bitcoin Core backend, from getpeerinfo)." },
  PeerBanned: { category: "network", producer: "none", description: `A peer was banned. ${NOT_YET_NODE}` },
  MessageReceived: { category: "network", producer: "none", description: `A P2P message arrived. ${NOT_YET_NODE}` },
  MessageSent: { category: "network", producer: "none", description: `A P2P message was sent. ${NOT_YET_NODE}` },
  BroadcastStarted: { category: "network", producer: "none", description: `A transaction broadcast started. ${NOT_YET_NODE}` },
  BroadcastCompleted: { category: "network", producer: "none", description: `A transaction broadcast completed. ${NOT_YET_NODE}` },
  RouteDiscovered: { category: "network", producer: "none", description: "A mesh route was found. Not produced yet: modhost has no mesh network." },
  RouteFailed: { category: "network", producer: "none", description: "A mesh route failed. Not produced yet: modhost has no mesh network." },
  ModuleLoaded: { category: "module", producer: "host", description: "A module finished starting. Replayed to new subscribers for modules already loaded." },
  ModuleUnloaded: { category: "module", producer: "host", description: "A module was stopped and unloaded." },
  ModuleCrashed: { category: "module", producer: "host", description: "A module's process died or its isolate was disposed; `quarantined` when it will not start again until the operator runs `modhost enable`." },
  ModuleRestarted: { category: "module", producer: "host", description: "A crashed module was started again by its restart policy." },
  ModuleDiscovered: { category: "module", producer: "host", description: "The registry offers a module that is not installed, or a newer stable version of one that is: looked for every [registry] discover_minutes (off by default), in the verified index only; each version announced once." },
  ModuleInstalled: { category: "module", producer: "host", description: "A module appeared in modules_dir (`modhost install`, or copied there): announced when a running host is asked to load it, or at the next start. The host's very first start announces nothing (it has nothing to compare with)." },
  ModuleUpdated: { category: "module", producer: "host", description: "A module in modules_dir has another version than the host saw last (`modhost update`); announced as ModuleInstalled is." },
  ModuleRemoved: { category: "module", producer: "host", description: "A module left modules_dir (`modhost remove`); announced as ModuleInstalled is." },
  ProviderAvailable: { category: "module", producer: "host", description: "The module the operator designated for a provider role registered as its provider." },
  ProviderUnavailable: { category: "module", producer: "host", description: "A role's provider stopped (crashed, unloaded); calls for the role fail with unavailable until ProviderAvailable." },
  ConfigLoaded: { category: "config", producer: "host", description: "The operator's configuration was loaded: once to each module when it subscribes (every section listed), then at each reload with the sections that changed. `config_json` is the receiving module's own configuration, never the host's." },
  NodeStartupCompleted: { category: "node", producer: "host", description: "The host finished loading its modules." },
  NodeShutdown: { category: "node", producer: "host", description: "The host is shutting down; modules have timeout_seconds to finish." },
  NodeShutdownCompleted: { category: "node", producer: "host", description: "The host finished shutting down." },
  DataMaintenance: { category: "maintenance", producer: "none", description: "Modules should flush or clean up data. Not produced yet." },
  MaintenanceStarted: { category: "maintenance", producer: "none", description: "A maintenance operation started. Not produced yet." },
  MaintenanceCompleted: { category: "maintenance", producer: "none", description: "A maintenance operation finished. Not produced yet." },
  HealthCheck: { category: "maintenance", producer: "host", description: "Periodic summary of the modules' states and the chain height ([host] health_event_seconds)." },
  DiskSpaceLow: { category: "maintenance", producer: "host", description: "Free space on the host's data directory fell below [host] disk_space_low_mb." },
  ResourceLimitWarning: { category: "maintenance", producer: "host", description: "A module nears one of its limits (80% or more of memory_total_mb, max_requests_in_flight, requests_per_second, host_cpu_ms_per_s, max_unread_bytes or log_bytes_per_second, as the host measures them every 2 s); `resource` is the limit's key in [modules.limits.NAME]. At most one per module and resource per minute." },
  GovernanceProposalCreated: { category: "governance", producer: "governance", description: "A governance proposal was created." },
  GovernanceProposalVoted: { category: "governance", producer: "governance", description: "A vote was cast on a governance proposal." },
  GovernanceProposalMerged: { category: "governance", producer: "governance", description: "A governance proposal was merged." },
  GovernanceForkDetected: { category: "governance", producer: "governance", description: "The governance provider detected a fork." },
  EconomicNodeRegistered: { category: "governance", producer: "governance", description: "An economic node registered." },
  EconomicNodeVeto: { category: "governance", producer: "governance", description: "An economic node vetoed a proposal." },
  VetoThresholdReached: { category: "governance", producer: "governance", description: "A proposal's vetoes reached the threshold." },
  WebhookSent: { category: "governance", producer: "governance", description: "The governance provider delivered a webhook." },
  WebhookFailed: { category: "governance", producer: "governance", description: "The governance provider gave up delivering a webhook (for now)." },
  BlockValidationStarted: { category: "consensus", producer: "none", description: "Validation of a block started. Not produced: modhost never runs consensus code; it only reads a node." },
  BlockValidationCompleted: { category: "consensus", producer: "none", description: "Validation of a block finished. Not produced (as BlockValidationStarted)." },
  ScriptVerificationStarted: { category: "consensus", producer: "none", description: "Script verification started. Not produced (as BlockValidationStarted)." },
  ScriptVerificationCompleted: { category: "consensus", producer: "none", description: "Script verification finished. Not produced (as BlockValidationStarted)." },
  DifficultyAdjusted: { category: "consensus", producer: "host", description: "A retarget changed the difficulty bits (sent with MiningDifficultyChanged)." },
  SoftForkActivated: { category: "consensus", producer: "none", description: "A soft fork activated. Not produced yet." },
};

export const HOST_EVENT_NAMES = Object.keys(EVENT_TYPES) as HostEventName[];

export function isHostEvent(name: string): name is HostEventName {
  return Object.hasOwn(EVENT_TYPES, name);
}

export type RoleEventName = keyof typeof ROLE_EVENT_SCHEMAS;

/** The provider role whose designated module may publish `name` as the real type, if any. */
export function roleOf(name: string): ProviderRole | undefined {
  if (!isHostEvent(name)) return undefined;
  const producer = EVENT_TYPES[name].producer;
  return (PROVIDER_ROLES as readonly string[]).includes(producer) ? (producer as ProviderRole) : undefined;
}

/** Module-published events are named "<module>:<name>". */
export const MODULE_EVENT = /^([A-Za-z0-9][A-Za-z0-9_-]{0,63}):([A-Za-z][A-Za-z0-9_.-]{0,63})$/;
