//! The typed methods of [`Client`], one per host method.
//!
//! Generated from the catalogue: edit the family file (capabilities/*.ts; named types in
//! capabilities/schemas.ts), not this file. `node bin/modhost.js docs --write` rewrites it;
//! test/docs.test.ts fails when it is stale.
//!
//! The methods listed in [`HAND_WRITTEN`] are written by hand in requests.rs instead (why is
//! beside each). The structs of the named types are below; these are written by hand in
//! types.rs:
//! - `LightBlockHeader`: the Rust SDK reads both forms into BlockHeader.
//! - `LightTransaction`: the Rust SDK reads both forms into Transaction.
//! - `LightBlock`: the Rust SDK reads both forms into Block.
//! - `Entry`: generic in its value type.
//! - `IterPage`: generic in its value type.
//! - `StorageOp`: an enum of its own.
//! - `StorageQuota`: also reads the camelCase keys older hosts sent.
//! - `StorageUsage`: quota is an Option there, for older hosts.
//! - `IterOptions`: built with its own methods.
//! - `CliArg`: built with its own methods.
//! - `CliCommand`: built with its own methods.
//! - `CliSpec`: built with its own methods.
//! - `MetricKind`: an enum, its variants documented one by one.
//! - `Metric`: its value is the MetricValue enum, which numbers and slices convert into.
//! - `FileType`: an enum, its variants documented one by one.
//! - `ProviderKind`: an enum, its variants documented one by one.
//! - `HttpResponse`: its body is always bytes there (read_text and json decode it).
//! - `BlockTemplateOptions`: built with its own methods.
//! - `SubmitBlockStatus`: an enum, its variants documented one by one.
//! - `HookPoint`: an enum, its variants documented one by one.

#![allow(clippy::all)]

#[allow(unused_imports)]
use std::collections::BTreeMap;

#[allow(unused_imports)]
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::error::Result;
#[allow(unused_imports)]
use crate::types::*;
#[allow(unused_imports)]
use crate::value::{Bytes, Value};

/// Every method of the host's catalogue, by wire name, in the catalogue's order.
pub const CATALOGUE_METHODS: &[&str] = &[
    "get_block",
    "get_block_header",
    "get_block_by_height",
    "get_transaction",
    "has_transaction",
    "get_chain_tip",
    "get_block_height",
    "get_chain_info",
    "get_utxo",
    "get_mempool_transactions",
    "get_mempool_txids",
    "get_mempool_transaction",
    "get_mempool_entry",
    "get_mempool_size",
    "check_transaction_in_mempool",
    "get_fee_estimate",
    "submit_transaction",
    "storage_open_tree",
    "storage_list_trees",
    "storage_drop_tree",
    "storage_get",
    "storage_contains_key",
    "storage_insert",
    "storage_remove",
    "storage_iter",
    "storage_transaction",
    "storage_usage",
    "subscribe_events",
    "publish_event",
    "unsubscribe_events",
    "get_config",
    "register_rpc_endpoint",
    "unregister_rpc_endpoint",
    "register_cli_spec",
    "report_metric",
    "get_module_metrics",
    "get_all_metrics",
    "read_file",
    "write_file",
    "delete_file",
    "list_directory",
    "create_directory",
    "get_file_metadata",
    "call_module",
    "register_module_api",
    "unregister_module_api",
    "discover_modules",
    "get_module_info",
    "is_module_available",
    "register_timer",
    "schedule_task",
    "cancel_timer",
    "get_lightning_node_url",
    "get_lightning_info",
    "get_payment_state",
    "register_provider",
    "get_network_stats",
    "get_network_peers",
    "http_request",
    "get_block_template",
    "submit_block",
    "queue_received_block",
    "register_hook",
    "unregister_hook",
];

/// The methods whose typed form is written by hand in requests.rs, and why.
pub const HAND_WRITTEN: &[&str] = &[
    // get_block: one Block struct for both forms (get_block_with: the hex fields are then empty)
    "get_block",
    // get_block_by_height: one Block struct for both forms (get_block_by_height_with: the hex fields are then empty)
    "get_block_by_height",
    // get_mempool_transactions: get_mempool_transactions reads every page of get_mempool_txids
    "get_mempool_transactions",
    // get_mempool_txids: get_mempool_txids joins every page into a Vec<String>
    "get_mempool_txids",
    // submit_transaction: submit_transaction (hex, sent as binary) and submit_transaction_bytes
    "submit_transaction",
    // storage_iter: two methods, storage_iter and storage_iter_page (paged), with generic values
    "storage_iter",
    // storage_transaction: splits a transaction that does not fit one message into parts
    "storage_transaction",
    // subscribe_events: the event types as &[&str]; events arrive through Client::events, not a callback
    "subscribe_events",
    // report_metric: MetricValue, MetricKind and labels as pairs
    "report_metric",
    // read_file: read_file (bytes) and read_file_string (utf8)
    "read_file",
    // write_file: data as impl AsRef<[u8]>, sent as binary; append_file for append
    "write_file",
    // call_module: call_module and call_module_timeout (a Duration)
    "call_module",
    // get_lightning_node_url: decoded as Option<String>, the answer a Lightning provider gives
    "get_lightning_node_url",
    // http_request: takes an HttpRequest built with its own methods
    "http_request",
    // get_block_template: get_block_template reads every page (template_id, next_page) and joins them
    "get_block_template",
    // submit_block: submit_block (hex, sent as binary) and submit_block_bytes
    "submit_block",
    // queue_received_block: queue_received_block (hex, sent as binary) and queue_received_block_bytes
    "queue_received_block",
    // register_hook: before and after as slices, left out when empty
    "register_hook",
];

/// The params of a method that takes none.
#[derive(Serialize)]
struct NoParams {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockHeader {
    pub hash: String,
    pub height: u64,
    pub version: i64,
    pub prev_hash: String,
    pub merkle_root: String,
    pub time: u64,
    pub bits: u64,
    pub nonce: u64,
    /// Hex of the 80 serialised header bytes (empty in the Rust SDK when include_hex is false).
    #[serde(default)]
    pub hex: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TxInput {
    pub txid: String,
    pub vout: u64,
    pub script_sig: String,
    pub sequence: u64,
    #[serde(default)]
    pub witness: Vec<String>,
    /// True for the single input of a coinbase transaction.
    pub coinbase: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TxOutput {
    pub value: u64,
    pub script_pubkey: String,
    /// The regtest address of the output script, when it has one.
    #[serde(default)]
    pub address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    pub txid: String,
    pub wtxid: String,
    pub version: i64,
    pub locktime: u64,
    #[serde(default)]
    pub inputs: Vec<TxInput>,
    #[serde(default)]
    pub outputs: Vec<TxOutput>,
    pub size: u64,
    pub vsize: u64,
    pub weight: u64,
    /// Full serialisation, witness included (binary on the wire, hex in the SDKs).
    #[serde(default, deserialize_with = "crate::value::hex_from_bin")]
    pub hex: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    pub header: BlockHeader,
    pub hash: String,
    pub height: u64,
    pub size: u64,
    pub weight: u64,
    /// Transactions in the block: the length of `transactions` once every page is read.
    pub tx_count: u64,
    /// On the wire, one answer carries a page of `transactions` (docs/protocol.md, "Paged
    /// answers"): the `tx_offset` to ask for next, or null after the last page. The SDKs read every
    /// page, so a block they return has all its transactions and null here.
    #[serde(default)]
    pub next_tx_offset: Option<u64>,
    #[serde(default)]
    pub transactions: Vec<Transaction>,
    /// Full block serialisation (binary on the wire, hex in the SDKs).
    #[serde(default, deserialize_with = "crate::value::hex_from_bin")]
    pub hex: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainInfo {
    pub chain: String,
    pub tip_hash: String,
    pub height: u64,
    pub bits: u64,
    pub difficulty: f64,
    /// Total work of the active chain, as a decimal string (it exceeds 2^53).
    pub chain_work: String,
    pub median_time: u64,
    pub is_synced: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Utxo {
    pub txid: String,
    pub vout: u64,
    pub value: u64,
    pub script_pubkey: String,
    #[serde(default)]
    pub address: Option<String>,
    pub height: u64,
    pub coinbase: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MempoolTxids {
    /// A page of txids (the SDKs join every page).
    #[serde(default)]
    pub txids: Vec<String>,
    /// Pass it as `after` for the next page; null after the last.
    #[serde(default)]
    pub next_after: Option<u64>,
    /// Transactions in the mempool when the page was read.
    pub count: u64,
    /// What the pages follow: "accepted" (the embedded chain: order of acceptance, each transaction
    /// exactly once), "position" (Bitcoin Core: position in its list).
    pub order: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MempoolEntry {
    pub txid: String,
    pub fee: u64,
    pub vsize: u64,
    /// Fee rate in sat/vB.
    pub fee_rate: f64,
    pub time: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MempoolInfo {
    pub transaction_count: u64,
    pub size_bytes: u64,
    pub total_fee_sats: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransactionPart {
    pub id: u32,
    pub more: bool,
}

/// A histogram read back: observations counted in fixed buckets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramSummary {
    pub count: u64,
    pub sum: f64,
    /// \[upper bound, cumulative count\] pairs, in increasing bound order.
    #[serde(default)]
    pub buckets: Vec<(f64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: FileType,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileMetadata {
    /// The canonical path, relative to the data directory ("" for the directory itself).
    pub path: String,
    pub size: u64,
    pub is_file: bool,
    pub is_directory: bool,
    /// Milliseconds since the epoch.
    pub modified: i64,
    /// Milliseconds since the epoch; null when the filesystem does not record it.
    #[serde(default)]
    pub created: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleInfo {
    pub name: String,
    pub version: String,
    /// "native" or "isolate".
    pub runtime: String,
    /// "running", "starting", "stopped", "crashed", "failed", "quarantined", ...
    pub state: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Methods of its module API, when it registered one.
    #[serde(default)]
    pub api: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkStats {
    pub peer_count: u64,
    /// Estimated network hash rate (hashes per second).
    pub hash_rate: f64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub addr: String,
    pub transport_type: String,
    /// Service bits the peer advertises.
    pub services: u64,
    /// Its protocol version.
    pub version: u64,
    /// Seconds since the epoch.
    pub connected_since: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateTransaction {
    pub txid: String,
    pub wtxid: String,
    /// Binary on the wire, hex in the SDKs.
    #[serde(deserialize_with = "crate::value::hex_from_bin")]
    pub hex: String,
    pub fee: u64,
    pub weight: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoinbaseTx {
    pub txid: String,
    /// Binary on the wire, hex in the SDKs.
    #[serde(deserialize_with = "crate::value::hex_from_bin")]
    pub hex: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockTemplate {
    pub version: i64,
    pub previous_block_hash: String,
    pub height: u64,
    pub bits: u64,
    /// The proof-of-work target for `bits`, as 64 hex characters.
    pub target: String,
    /// Suggested header time; min_time is the earliest the chain accepts (median time past + 1).
    pub cur_time: u64,
    pub min_time: u64,
    /// Mempool transactions for the block, in a valid order, with their fees.
    #[serde(default)]
    pub transactions: Vec<TemplateTransaction>,
    /// Subsidy plus the fees of `transactions`: the most the coinbase may pay out.
    pub coinbase_value: u64,
    /// The BIP141 witness commitment output script (uses a 32-byte zero witness reserved value).
    pub default_witness_commitment: String,
    /// With a coinbase script: a complete coinbase (BIP34 height, commitment) paying coinbase_value
    /// to it.
    #[serde(default)]
    pub coinbase_tx: Option<CoinbaseTx>,
    /// Names this template; its later pages are asked by `page` (next_page).
    pub template_id: String,
    /// Transactions in the whole template: the length of `transactions` once every page is read.
    pub tx_count: u64,
    /// On the wire, one answer carries a page of `transactions` (docs/protocol.md, "Paged
    /// answers"): the `page` to ask for next, or null after the last page. The SDKs read every
    /// page, so a template they return has all its transactions and null here.
    #[serde(default)]
    pub next_page: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitBlockResult {
    pub result: SubmitBlockStatus,
    /// Why a block was rejected (a bitcoind-style reason code and an explanation).
    #[serde(default)]
    pub reason: Option<String>,
    /// The block hash, when the block could be decoded.
    #[serde(default)]
    pub hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookRegistered {
    pub point: HookPoint,
    #[serde(default)]
    pub order: Vec<String>,
}

/// The params of `get_block_header`.
#[derive(Serialize)]
struct GetBlockHeaderParams<'a> {
    hash: &'a str,
}

/// The params of `get_transaction`.
#[derive(Serialize)]
struct GetTransactionParams<'a> {
    txid: &'a str,
}

/// The params of `has_transaction`.
#[derive(Serialize)]
struct HasTransactionParams<'a> {
    txid: &'a str,
}

/// The params of `get_utxo`.
#[derive(Serialize)]
struct GetUtxoParams<'a> {
    txid: &'a str,
    vout: u32,
}

/// The params of `get_mempool_transaction`.
#[derive(Serialize)]
struct GetMempoolTransactionParams<'a> {
    txid: &'a str,
}

/// The params of `get_mempool_entry`.
#[derive(Serialize)]
struct GetMempoolEntryParams<'a> {
    txid: &'a str,
}

/// The params of `check_transaction_in_mempool`.
#[derive(Serialize)]
struct CheckTransactionInMempoolParams<'a> {
    txid: &'a str,
}

/// The params of `get_fee_estimate`.
#[derive(Serialize)]
struct GetFeeEstimateParams {
    target_blocks: u32,
}

/// The params of `storage_open_tree`.
#[derive(Serialize)]
struct StorageOpenTreeParams<'a> {
    tree: &'a str,
}

/// The params of `storage_drop_tree`.
#[derive(Serialize)]
struct StorageDropTreeParams<'a> {
    tree: &'a str,
}

/// The params of `storage_get`.
#[derive(Serialize)]
struct StorageGetParams<'a> {
    tree: &'a str,
    key: &'a str,
}

/// The params of `storage_contains_key`.
#[derive(Serialize)]
struct StorageContainsKeyParams<'a> {
    tree: &'a str,
    key: &'a str,
}

/// The params of `storage_insert`.
#[derive(Serialize)]
struct StorageInsertParams<'a, T: Serialize + ?Sized> {
    tree: &'a str,
    key: &'a str,
    value: &'a T,
}

/// The params of `storage_remove`.
#[derive(Serialize)]
struct StorageRemoveParams<'a> {
    tree: &'a str,
    key: &'a str,
}

/// The params of `publish_event`.
#[derive(Serialize)]
struct PublishEventParams<'a, T: Serialize + ?Sized> {
    name: &'a str,
    payload: &'a T,
}

/// The params of `unsubscribe_events`.
#[derive(Serialize)]
struct UnsubscribeEventsParams<'a> {
    types: &'a [&'a str],
}

/// The params of `register_rpc_endpoint`.
#[derive(Serialize)]
struct RegisterRpcEndpointParams<'a> {
    method: &'a str,
    description: &'a str,
}

/// The params of `unregister_rpc_endpoint`.
#[derive(Serialize)]
struct UnregisterRpcEndpointParams<'a> {
    method: &'a str,
}

/// The params of `register_cli_spec`.
#[derive(Serialize)]
struct RegisterCliSpecParams<'a> {
    spec: &'a CliSpec,
}

/// The params of `get_module_metrics`.
#[derive(Serialize)]
struct GetModuleMetricsParams<'a> {
    module: &'a str,
}

/// The params of `delete_file`.
#[derive(Serialize)]
struct DeleteFileParams<'a> {
    path: &'a str,
}

/// The params of `list_directory`.
#[derive(Serialize)]
struct ListDirectoryParams<'a> {
    path: &'a str,
}

/// The params of `create_directory`.
#[derive(Serialize)]
struct CreateDirectoryParams<'a> {
    path: &'a str,
}

/// The params of `get_file_metadata`.
#[derive(Serialize)]
struct GetFileMetadataParams<'a> {
    path: &'a str,
}

/// The params of `register_module_api`.
#[derive(Serialize)]
struct RegisterModuleApiParams<'a> {
    methods: &'a [&'a str],
}

/// The params of `get_module_info`.
#[derive(Serialize)]
struct GetModuleInfoParams<'a> {
    module: &'a str,
}

/// The params of `is_module_available`.
#[derive(Serialize)]
struct IsModuleAvailableParams<'a> {
    module: &'a str,
}

/// The params of `register_timer`.
#[derive(Serialize)]
struct RegisterTimerParams {
    interval_seconds: f64,
}

/// The params of `schedule_task`.
#[derive(Serialize)]
struct ScheduleTaskParams {
    delay_seconds: f64,
}

/// The params of `cancel_timer`.
#[derive(Serialize)]
struct CancelTimerParams {
    timer_id: u64,
}

/// The params of `get_payment_state`.
#[derive(Serialize)]
struct GetPaymentStateParams<'a> {
    payment_id: &'a str,
}

/// The params of `register_provider`.
#[derive(Serialize)]
struct RegisterProviderParams {
    kind: ProviderKind,
}

/// The params of `unregister_hook`.
#[derive(Serialize)]
struct UnregisterHookParams {
    point: HookPoint,
}

impl Client {
    // chain: Read blocks, transactions, UTXOs and chain state.

    /// Block header by hash, or null. Needs `read_blockchain`.
    pub fn get_block_header(&self, hash: &str) -> Result<Option<BlockHeader>> {
        self.request("get_block_header", &GetBlockHeaderParams { hash })
    }

    /// Confirmed or mempool transaction by txid, or null. Needs `read_blockchain`.
    pub fn get_transaction(&self, txid: &str) -> Result<Option<Transaction>> {
        self.request("get_transaction", &GetTransactionParams { txid })
    }

    /// Whether a transaction is known. Needs `read_blockchain`.
    pub fn has_transaction(&self, txid: &str) -> Result<bool> {
        self.request("has_transaction", &HasTransactionParams { txid })
    }

    /// Hash of the active chain's tip. Needs `read_chain_state`.
    pub fn get_chain_tip(&self) -> Result<String> {
        self.request("get_chain_tip", &NoParams {})
    }

    /// Height of the active chain's tip. Needs `read_chain_state`.
    pub fn get_block_height(&self) -> Result<u64> {
        self.request("get_block_height", &NoParams {})
    }

    /// Chain name, tip, height, difficulty, chain work. Needs `read_chain_state`.
    pub fn get_chain_info(&self) -> Result<ChainInfo> {
        self.request("get_chain_info", &NoParams {})
    }

    /// Unspent output by outpoint, or null. Needs `read_utxo`.
    pub fn get_utxo(&self, txid: &str, vout: u32) -> Result<Option<Utxo>> {
        self.request("get_utxo", &GetUtxoParams { txid, vout })
    }

    // mempool: Read mempool transactions, size and fee estimates.

    /// Mempool transaction by txid, or null. Needs `read_mempool`.
    pub fn get_mempool_transaction(&self, txid: &str) -> Result<Option<Transaction>> {
        self.request("get_mempool_transaction", &GetMempoolTransactionParams { txid })
    }

    /// Fee, vsize and fee rate of a mempool transaction, or null. Needs `read_mempool`.
    pub fn get_mempool_entry(&self, txid: &str) -> Result<Option<MempoolEntry>> {
        self.request("get_mempool_entry", &GetMempoolEntryParams { txid })
    }

    /// Transaction count, bytes and total fees. Needs `read_mempool`.
    pub fn get_mempool_size(&self) -> Result<MempoolInfo> {
        self.request("get_mempool_size", &NoParams {})
    }

    /// Whether a txid is in the mempool. Needs `read_mempool`.
    pub fn check_transaction_in_mempool(&self, txid: &str) -> Result<bool> {
        self.request("check_transaction_in_mempool", &CheckTransactionInMempoolParams { txid })
    }

    /// Fee rate (sat/vB) to confirm within target_blocks. Needs `read_mempool`.
    pub fn get_fee_estimate(&self, target_blocks: u32) -> Result<f64> {
        self.request("get_fee_estimate", &GetFeeEstimateParams { target_blocks })
    }

    // storage: The module's own key-value trees (LevelDB), with quotas.

    /// Create a tree if it does not exist. Needs `write_storage`.
    pub fn storage_open_tree(&self, tree: &str) -> Result<()> {
        self.request_raw("storage_open_tree", &StorageOpenTreeParams { tree }).map(drop)
    }

    /// Names of the module's trees. Needs `read_storage`.
    pub fn storage_list_trees(&self) -> Result<Vec<String>> {
        self.request("storage_list_trees", &NoParams {})
    }

    /// Delete a tree and all its keys. Needs `manage_storage`.
    pub fn storage_drop_tree(&self, tree: &str) -> Result<()> {
        self.request_raw("storage_drop_tree", &StorageDropTreeParams { tree }).map(drop)
    }

    /// Value of a key, or null. Needs `read_storage`.
    pub fn storage_get<T: DeserializeOwned>(&self, tree: &str, key: &str) -> Result<Option<T>> {
        self.request("storage_get", &StorageGetParams { tree, key })
    }

    /// Whether a key exists. Needs `read_storage`.
    pub fn storage_contains_key(&self, tree: &str, key: &str) -> Result<bool> {
        self.request("storage_contains_key", &StorageContainsKeyParams { tree, key })
    }

    /// Set a key to a value (any plain data). Needs `write_storage`.
    pub fn storage_insert<T: Serialize + ?Sized>(&self, tree: &str, key: &str, value: &T) -> Result<()> {
        self.request_raw("storage_insert", &StorageInsertParams { tree, key, value }).map(drop)
    }

    /// Delete a key; true if it existed. Needs `write_storage`.
    pub fn storage_remove(&self, tree: &str, key: &str) -> Result<bool> {
        self.request("storage_remove", &StorageRemoveParams { tree, key })
    }

    /// Bytes, keys and trees used, and the quota. Needs `read_storage`.
    pub fn storage_usage(&self) -> Result<StorageUsage> {
        self.request("storage_usage", &NoParams {})
    }

    // events: Subscribe to node and module events.

    /// Publish an event in this module's namespace, as "module-name:name" (payload: plain data, at
    /// most 65536 bytes); returns the full event type. A provider role's event (PaymentSettled,
    /// BlockTemplateUpdated, ...) is published as the real type, only by the module the operator
    /// designated for the role, with a payload checked against its schema. Needs `publish_events`.
    pub fn publish_event<T: Serialize + ?Sized>(&self, name: &str, payload: &T) -> Result<String> {
        self.request("publish_event", &PublishEventParams { name, payload })
    }

    /// Remove event types from the subscription; returns the remaining list. Needs
    /// `subscribe_events`.
    pub fn unsubscribe_events(&self, types: &[&str]) -> Result<Vec<String>> {
        self.request("unsubscribe_events", &UnsubscribeEventsParams { types })
    }

    // config: The module's own configuration.

    /// The module's configuration table.
    pub fn get_config(&self) -> Result<Value> {
        self.request("get_config", &NoParams {})
    }

    // rpc: Serve JSON-RPC methods (as <module>.<method>) and CLI commands (modhost <module> <command>).

    /// Serve `method` as <module>.<method> on the host's RPC server; returns that full name. The
    /// handler stays in the module (an `rpc` invocation). Calls arrive as `rpc` invocations: handle
    /// them with [`Client::on_rpc`] first. Needs `register_rpc_endpoint`.
    pub fn register_rpc_endpoint(&self, method: &str, description: &str) -> Result<String> {
        self.request("register_rpc_endpoint", &RegisterRpcEndpointParams { method, description })
    }

    /// Stop serving a method; true if it was registered. Needs `register_rpc_endpoint`.
    pub fn unregister_rpc_endpoint(&self, method: &str) -> Result<bool> {
        self.request("unregister_rpc_endpoint", &UnregisterRpcEndpointParams { method })
    }

    /// Declare the module's CLI commands (replaces any earlier spec); `modhost <module> <command>
    /// \[args\]` runs them (a `cli` invocation). Calls arrive as `cli` invocations: handle them
    /// with [`Client::on_cli`] first. Needs `register_rpc_endpoint`.
    pub fn register_cli_spec(&self, spec: &CliSpec) -> Result<()> {
        self.request_raw("register_cli_spec", &RegisterCliSpecParams { spec }).map(drop)
    }

    // metrics: Report the module's metrics; read modules' metrics.

    /// A module's metrics: \[{name, kind, value, labels, timestamp}\] (empty when it reported none
    /// or is not running); a histogram's value is {count, sum, buckets: \[\[le, cumulative count\],
    /// ...\]}. Needs `read_metrics`.
    pub fn get_module_metrics(&self, module: &str) -> Result<Vec<Metric>> {
        self.request("get_module_metrics", &GetModuleMetricsParams { module })
    }

    /// Every running module's metrics, by module name. Needs `read_metrics`.
    pub fn get_all_metrics(&self) -> Result<BTreeMap<String, Vec<Metric>>> {
        self.request("get_all_metrics", &NoParams {})
    }

    // fs: Files in the module's own data directory (symbolic links are never followed).

    /// Delete a file, a symbolic link (not its target) or an empty directory. Needs
    /// `manage_filesystem`.
    pub fn delete_file(&self, path: &str) -> Result<()> {
        self.request_raw("delete_file", &DeleteFileParams { path }).map(drop)
    }

    /// Entries of a directory sorted by name, as { name, type }; type is "file", "directory",
    /// "symlink" or "other" (at most 10000). Needs `read_filesystem`.
    pub fn list_directory(&self, path: &str) -> Result<Vec<DirEntry>> {
        self.request("list_directory", &ListDirectoryParams { path })
    }

    /// Create a directory and any missing parents. Needs `manage_filesystem`.
    pub fn create_directory(&self, path: &str) -> Result<()> {
        self.request_raw("create_directory", &CreateDirectoryParams { path }).map(drop)
    }

    /// { path, size, is_file, is_directory, modified, created } (milliseconds; created may be
    /// null). Needs `read_filesystem`.
    pub fn get_file_metadata(&self, path: &str) -> Result<FileMetadata> {
        self.request("get_file_metadata", &GetFileMetadataParams { path })
    }

    // modules: Call other modules' APIs, expose one, and discover running modules.

    /// Expose these methods to modules granted call_module for this one (replaces an earlier API).
    /// Calls arrive as `module_api` invocations: handle them with [`Client::on_module_api`] first.
    /// Needs `register_module_api`.
    pub fn register_module_api(&self, methods: &[&str]) -> Result<()> {
        self.request_raw("register_module_api", &RegisterModuleApiParams { methods }).map(drop)
    }

    /// Withdraw this module's API. Needs `register_module_api`.
    pub fn unregister_module_api(&self) -> Result<()> {
        self.request_raw("unregister_module_api", &NoParams {}).map(drop)
    }

    /// Every loaded module: name, version, runtime, state, description, API methods. Needs
    /// `discover_modules`.
    pub fn discover_modules(&self) -> Result<Vec<ModuleInfo>> {
        self.request("discover_modules", &NoParams {})
    }

    /// Public information about one module, or null. Needs `discover_modules`.
    pub fn get_module_info(&self, module: &str) -> Result<Option<ModuleInfo>> {
        self.request("get_module_info", &GetModuleInfoParams { module })
    }

    /// Whether a module is running now. Needs `discover_modules`.
    pub fn is_module_available(&self, module: &str) -> Result<bool> {
        self.request("is_module_available", &IsModuleAvailableParams { module })
    }

    // timers: Periodic timers and one-shot tasks, delivered into the module.

    /// Run a callback every interval_seconds (at least 0.05; shorter intervals are raised to it). A
    /// tick is skipped while the previous run is still going. Returns the timer id. Calls arrive as
    /// `timer` invocations: handle them with [`Client::on_timer`] first. Needs `manage_timers`.
    pub fn register_timer(&self, interval_seconds: f64) -> Result<u64> {
        self.request("register_timer", &RegisterTimerParams { interval_seconds })
    }

    /// Run a callback once, after delay_seconds. Returns the task id (cancel it with cancel_timer).
    /// Calls arrive as `timer` invocations: handle them with [`Client::on_timer`] first. Needs
    /// `manage_timers`.
    pub fn schedule_task(&self, delay_seconds: f64) -> Result<u64> {
        self.request("schedule_task", &ScheduleTaskParams { delay_seconds })
    }

    /// Stop a timer or a pending task of this module; false if there was none. Needs
    /// `manage_timers`.
    pub fn cancel_timer(&self, timer_id: u64) -> Result<bool> {
        self.request("cancel_timer", &CancelTimerParams { timer_id })
    }

    // lightning: Lightning node information and payment state, answered by a provider module.

    /// Lightning node information, from the lightning provider (its getInfo). Needs
    /// `read_lightning`.
    pub fn get_lightning_info<T: DeserializeOwned>(&self) -> Result<T> {
        self.request("get_lightning_info", &NoParams {})
    }

    /// State of a payment, from the payment provider (its getPaymentState({payment_id})). Needs
    /// `read_payment`.
    pub fn get_payment_state<T: DeserializeOwned>(&self, payment_id: &str) -> Result<T> {
        self.request("get_payment_state", &GetPaymentStateParams { payment_id })
    }

    /// Become the provider of a role the operator designated this module for
    /// (\[modules.providers\]): answer the role's methods and publish its events. One provider per
    /// role. Calls arrive as `provider` invocations: handle them with [`Client::on_provider`]
    /// first. Needs `register_module_api`.
    pub fn register_provider(&self, kind: ProviderKind) -> Result<()> {
        self.request_raw("register_provider", &RegisterProviderParams { kind }).map(drop)
    }

    // network: Network statistics and peers; HTTP requests to granted hosts, made by the host.

    /// Peer count, hash rate, bytes sent and received. Needs `read_network`.
    pub fn get_network_stats(&self) -> Result<NetworkStats> {
        self.request("get_network_stats", &NoParams {})
    }

    /// Connected peers: address, transport, services, version, since. Needs `read_network`.
    pub fn get_network_peers(&self) -> Result<Vec<PeerInfo>> {
        self.request("get_network_peers", &NoParams {})
    }

    // mining: Block templates, and submitting mined blocks.

    // hooks: Hooks with results at the host's hook points (docs/module-guide.md, Hooks).

    /// Remove this module's hook at `point`; true if it had one. Needs `register_hook`.
    pub fn unregister_hook(&self, point: HookPoint) -> Result<bool> {
        self.request("unregister_hook", &UnregisterHookParams { point })
    }
}
