//! Typed results of the host methods and typed event payloads. Field names are the wire's
//! (snake_case). Hashes and txids are lowercase hex in display order; amounts are satoshis.
//! Unknown fields are ignored, so later hosts may add fields without breaking modules.

use serde::{Deserialize, Serialize};

use crate::value::{to_value, Value, ValueError};

// ---- chain ----

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
    /// Hex of the 80 serialised header bytes.
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
    #[serde(default)]
    pub coinbase: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TxOutput {
    pub value: u64,
    pub script_pubkey: String,
    #[serde(default)]
    pub address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    pub txid: String,
    pub wtxid: String,
    pub version: i64,
    pub locktime: u64,
    pub inputs: Vec<TxInput>,
    pub outputs: Vec<TxOutput>,
    pub size: u64,
    pub vsize: u64,
    pub weight: u64,
    /// Full serialisation, witness included.
    pub hex: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    pub header: BlockHeader,
    pub hash: String,
    pub height: u64,
    pub size: u64,
    pub weight: u64,
    pub transactions: Vec<Transaction>,
    /// Full block serialisation.
    pub hex: String,
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
pub struct ChainInfo {
    /// "regtest", "testnet", "signet" or "main".
    pub chain: String,
    pub tip_hash: String,
    pub height: u64,
    pub bits: u64,
    pub difficulty: f64,
    /// Total work of the active chain as a decimal string (it exceeds 2^53).
    pub chain_work: String,
    pub median_time: u64,
    pub is_synced: bool,
}

// ---- mempool ----

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MempoolEntry {
    pub txid: String,
    pub fee: u64,
    pub vsize: u64,
    /// sat/vB.
    pub fee_rate: f64,
    pub time: u64,
}

/// The result of `get_mempool_size`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MempoolInfo {
    pub transaction_count: u64,
    pub size_bytes: u64,
    pub total_fee_sats: u64,
}

// ---- storage ----

/// Options of `storage_iter`: bounds on the key (UTF-8 byte order), a prefix, direction and
/// a limit (the host's default is 1000, its maximum 10000).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IterOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl IterOptions {
    pub fn new() -> IterOptions {
        IterOptions::default()
    }
    pub fn prefix(mut self, p: impl Into<String>) -> Self {
        self.prefix = Some(p.into());
        self
    }
    pub fn gt(mut self, k: impl Into<String>) -> Self {
        self.gt = Some(k.into());
        self
    }
    pub fn gte(mut self, k: impl Into<String>) -> Self {
        self.gte = Some(k.into());
        self
    }
    pub fn lt(mut self, k: impl Into<String>) -> Self {
        self.lt = Some(k.into());
        self
    }
    pub fn lte(mut self, k: impl Into<String>) -> Self {
        self.lte = Some(k.into());
        self
    }
    pub fn reverse(mut self, r: bool) -> Self {
        self.reverse = Some(r);
        self
    }
    pub fn limit(mut self, n: u32) -> Self {
        self.limit = Some(n);
        self
    }
}

/// One entry returned by `storage_iter`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry<T = Value> {
    pub key: String,
    pub value: T,
}

/// One operation of `storage_transaction`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum StorageOp {
    Put { key: String, value: Value },
    Delete { key: String },
}

impl StorageOp {
    /// A put of any serialisable value.
    pub fn put<T: Serialize + ?Sized>(key: impl Into<String>, value: &T) -> Result<StorageOp, ValueError> {
        Ok(StorageOp::Put { key: key.into(), value: to_value(value)? })
    }
    pub fn delete(key: impl Into<String>) -> StorageOp {
        StorageOp::Delete { key: key.into() }
    }
}

/// The limits of a module's storage. The host currently sends these keys in camelCase
/// (`maxBytes`); snake_case is accepted too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageQuota {
    #[serde(rename = "maxBytes", alias = "max_bytes")]
    pub max_bytes: u64,
    #[serde(rename = "maxKeys", alias = "max_keys")]
    pub max_keys: u64,
    #[serde(rename = "maxTrees", alias = "max_trees")]
    pub max_trees: u64,
    #[serde(rename = "maxValueBytes", alias = "max_value_bytes")]
    pub max_value_bytes: u64,
    #[serde(rename = "maxKeyBytes", alias = "max_key_bytes")]
    pub max_key_bytes: u64,
}

/// The result of `storage_usage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageUsage {
    pub bytes: u64,
    pub keys: u64,
    pub trees: u64,
    #[serde(default)]
    pub quota: Option<StorageQuota>,
}

// ---- event payloads (host/events/types.ts) ----

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewBlock {
    pub hash: String,
    pub height: u64,
    pub time: u64,
    pub tx_count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockDisconnected {
    pub hash: String,
    pub height: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainReorg {
    pub old_tip: String,
    pub new_tip: String,
    pub fork_height: u64,
    pub disconnected: Vec<String>,
    pub connected: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MempoolTransactionAdded {
    pub txid: String,
    pub fee: u64,
    pub vsize: u64,
    pub fee_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MempoolTransactionRemoved {
    pub txid: String,
    /// "block", "reorg", "conflict", "evicted" or "replaced".
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleLoaded {
    pub module: String,
    pub version: String,
    pub runtime: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleUnloaded {
    pub module: String,
    pub version: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleCrashed {
    pub module: String,
    pub error: String,
    pub exit_code: Option<i64>,
    pub signal: Option<String>,
    pub will_restart: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleRestarted {
    pub module: String,
    pub attempt: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigLoaded {
    pub changed_sections: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStartupCompleted {
    pub modules: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeShutdown {
    pub reason: String,
    pub timeout_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeShutdownCompleted {
    pub duration_ms: f64,
}

/// An event with its payload decoded by type; see [`Event::kind`](crate::Event::kind).
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    NewBlock(NewBlock),
    BlockDisconnected(BlockDisconnected),
    ChainReorg(ChainReorg),
    MempoolTransactionAdded(MempoolTransactionAdded),
    MempoolTransactionRemoved(MempoolTransactionRemoved),
    ModuleLoaded(ModuleLoaded),
    ModuleUnloaded(ModuleUnloaded),
    ModuleCrashed(ModuleCrashed),
    ModuleRestarted(ModuleRestarted),
    ConfigLoaded(ConfigLoaded),
    NodeStartupCompleted(NodeStartupCompleted),
    NodeShutdown(NodeShutdown),
    NodeShutdownCompleted(NodeShutdownCompleted),
    /// A module event (`"module:name"`) or a type this SDK does not know: the raw payload.
    Other { type_: String, payload: Value },
}
