// The events' payloads: what the event bus carries, as msgpack maps with these fields on the
// wire (docs/protocol.md) and as these types in both SDKs. Every side shares them: the chain
// backends emit ChainEvents (chain/backend.ts), the host's event catalogue says who may publish
// each event and checks a provider's payloads (capabilities/event-types.ts), and module authors
// receive them (modhost/sdk).
//
// This file is the one declaration of the payloads, and it imports nothing: `modhost docs
// --write` copies it as it is into sdk/types/events.ts, which module authors import outside the
// checkout (test/docs.test.ts fails when that copy is stale). The Rust SDK's payload structs
// are in sdk/rust/src/types.rs.

/** Lowercase hex in display (RPC) byte order: block hashes, txids. */
type Hex = string;

/** The provider roles an operator designates a module for ([modules.providers]). */
export type ProviderRole = "lightning" | "payment" | "mining" | "governance";

/** Events a backend emits. Payloads are plain data. */
export interface ChainEvents {
  NewBlock: { hash: Hex; height: number; time: number; tx_count: number };
  BlockDisconnected: { hash: Hex; height: number };
  ChainReorg: { old_tip: Hex; new_tip: Hex; fork_height: number; disconnected: Hex[]; connected: Hex[] };
  MempoolTransactionAdded: { txid: Hex; fee: number; vsize: number; fee_rate: number };
  /**
   * "other": the backend knows the transaction left the mempool but not why (Bitcoin Core's
   * ZMQ `sequence` topic does not say; removals by a block are reported as "block").
   */
  MempoolTransactionRemoved: { txid: Hex; reason: "block" | "reorg" | "conflict" | "evicted" | "replaced" | "other" };
  /** The node connected to a peer (a backend with a real node: Bitcoin Core, from getpeerinfo). */
  PeerConnected: { addr: string; transport_type: string; services: number; version: number };
  PeerDisconnected: { addr: string };
  /** The backend lost its node (a backend with a remote node only); requests fail with `backend_unavailable` until ChainBackendRestored. */
  ChainBackendUnavailable: { backend: string; reason: string };
  /** The backend reached its node again and caught up: the chain events it missed were emitted before this one. */
  ChainBackendRestored: { backend: string; unavailable_ms: number; height: number; tip_hash: Hex };
}

/**
 * The events a provider role's designated module publishes as the real type. The host checks
 * each payload against its schema before publishing (capabilities/event-types.ts,
 * ROLE_EVENT_SCHEMAS, which must agree with these types: the typecheck fails otherwise).
 * Strings are at most 256 characters unless said otherwise.
 */
export interface RoleEvents {
  /** `description`: at most 1024 characters. */
  PaymentRequestCreated: { payment_id: string; amount_sats: number; description?: string; expires_at?: number };
  /** `preimage`: at most 128 characters. */
  PaymentSettled: { payment_id: string; amount_sats: number; tx_hash?: Hex; preimage?: string };
  /** `reason`: at most 1024 characters (as every `reason` and `description` below). */
  PaymentFailed: { payment_id: string; reason: string };
  PaymentVerified: { payment_id: string; amount_sats: number; confirmations: number };
  PaymentRouteFound: { payment_id: string; hops: number; fee_sats: number };
  PaymentRouteFailed: { payment_id: string; reason: string };
  ChannelOpened: { channel_id: string; peer: string; capacity_sats: number; funding_txid?: Hex };
  ChannelClosed: { channel_id: string; peer: string; reason: string; closing_txid?: Hex };
  BlockTemplateUpdated: { previous_block_hash: Hex; height: number; transaction_count: number; coinbase_value: number; reason: "new_block" | "mempool" };
  MiningJobCreated: { job_id: string; height: number; previous_block_hash: Hex };
  ShareSubmitted: { job_id: string; worker: string; accepted: boolean; difficulty: number };
  MergeMiningReward: { chain: string; amount: number; block_hash: string };
  MiningPoolConnected: { pool: string };
  MiningPoolDisconnected: { pool: string; reason: string };
  /** `title`: at most 1024 characters. */
  GovernanceProposalCreated: { proposal_id: string; title: string; author?: string };
  /** `vote`: at most 64 characters. */
  GovernanceProposalVoted: { proposal_id: string; voter: string; vote: string };
  GovernanceProposalMerged: { proposal_id: string };
  GovernanceForkDetected: { height: number; description: string };
  EconomicNodeRegistered: { node_id: string; weight?: number };
  EconomicNodeVeto: { node_id: string; proposal_id: string };
  VetoThresholdReached: { proposal_id: string; veto_weight: number; threshold: number };
  /** `url`: at most 2048 characters; `event_type`: at most 128. */
  WebhookSent: { url: string; event_type: string; status: number };
  /** `url`: at most 2048 characters; `event_type`: at most 128; `error`: at most 1024. */
  WebhookFailed: { url: string; event_type: string; error: string; attempts: number };
}

export interface HostEvents extends ChainEvents, RoleEvents {
  // Core chain and mempool, beyond the backend's own (chain/backend.ts)
  NewTransaction: { txid: Hex; fee: number; vsize: number; fee_rate: number };
  FeeRateChanged: { target_blocks: number; old_fee_rate: number; new_fee_rate: number };
  MempoolThresholdExceeded: { transaction_count: number; size_bytes: number; threshold_bytes: number };
  MempoolCleared: { reason: string };
  // Mining
  BlockMined: { hash: Hex; height: number; submitted_by: string };
  MiningDifficultyChanged: { height: number; old_bits: number; new_bits: number };
  // Network
  PeerBanned: { addr: string; ban_duration_seconds: number | null };
  MessageReceived: { peer: string; command: string; size: number };
  MessageSent: { peer: string; command: string; size: number };
  BroadcastStarted: { txid: Hex };
  BroadcastCompleted: { txid: Hex; peers: number };
  RouteDiscovered: { destination: string; hops: number };
  RouteFailed: { destination: string; reason: string };
  // Module lifecycle
  ModuleLoaded: { module: string; version: string; runtime: string };
  ModuleUnloaded: { module: string; version: string; reason: string };
  ModuleCrashed: { module: string; error: string; exit_code: number | null; signal: string | null; will_restart: boolean; quarantined: boolean };
  ModuleRestarted: { module: string; attempt: number };
  ModuleDiscovered: { module: string; version: string; source: string };
  ModuleInstalled: { module: string; version: string };
  ModuleUpdated: { module: string; old_version: string; new_version: string };
  ModuleRemoved: { module: string; version: string };
  ProviderAvailable: { role: ProviderRole; module: string };
  ProviderUnavailable: { role: ProviderRole; module: string; reason: string };
  // Configuration and node lifecycle
  /** `config_json`: the receiving module's own configuration as JSON (its [modules.module_configs.NAME], validated); absent for non-module subscribers. */
  ConfigLoaded: { changed_sections: string[]; config_json?: string };
  NodeStartupCompleted: { modules: string[] };
  NodeShutdown: { reason: string; timeout_seconds: number };
  NodeShutdownCompleted: { duration_ms: number };
  // Maintenance and resources
  DataMaintenance: { operation: string; urgency: "low" | "normal" | "high"; reason: string; timeout_seconds: number };
  MaintenanceStarted: { operation: string };
  MaintenanceCompleted: { operation: string; duration_ms: number };
  HealthCheck: { modules: Array<{ module: string; state: string; healthy: boolean }>; chain_height: number };
  DiskSpaceLow: { path: string; free_bytes: number; total_bytes: number; threshold_bytes: number };
  ResourceLimitWarning: { module: string; resource: string; used: number; limit: number };
  // Consensus (modhost never touches consensus; a backend that validates could report these)
  BlockValidationStarted: { hash: Hex; height: number };
  BlockValidationCompleted: { hash: Hex; height: number; valid: boolean; duration_ms: number };
  ScriptVerificationStarted: { hash: Hex };
  ScriptVerificationCompleted: { hash: Hex; valid: boolean };
  DifficultyAdjusted: { height: number; old_bits: number; new_bits: number };
  SoftForkActivated: { name: string; height: number };
}
