//! What the host sends a module unasked, typed: its invocations (docs/protocol.md section 8)
//! with their parameters and answers, the hook points' payloads and verdicts, and the event
//! payloads (protocol/events.ts). Re-exported by `types`, as everything the crate types.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::HandlerError;
use crate::types::*;
use crate::value::{from_value, Value};

// ---- invocations (docs/protocol.md section 8) ----

fn params_as<T: DeserializeOwned>(what: &str, params: &Value) -> Result<T, HandlerError> {
    from_value(params.clone()).map_err(|e| HandlerError::new("invalid_params", format!("{what}: {e}")))
}

/// A call of this module's API by another module (`module_api` invocation; see
/// [`Client::on_module_api`](crate::Client::on_module_api)).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModuleApiCall {
    /// The calling module, set by the host (it cannot be forged).
    pub caller: String,
    pub method: String,
    /// What the caller passed (nil when nothing).
    #[serde(default)]
    pub params: Value,
    /// The length of the call chain that led here (the host refuses chains deeper than 8).
    #[serde(default)]
    pub depth: u64,
}

impl ModuleApiCall {
    /// The params as a typed value; `invalid_params` when they do not fit.
    pub fn params_as<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        params_as(&self.method, &self.params)
    }
    /// The answer for a method this module's API does not have.
    pub fn unknown_method(&self) -> HandlerError {
        HandlerError::new(
            "unknown_method",
            format!("this module's API has no method {}", self.method),
        )
    }
}

/// A JSON-RPC call of one of this module's methods (`rpc` invocation; see
/// [`Client::on_rpc`](crate::Client::on_rpc)).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RpcCall {
    /// The method's short name, without the `<module>.` prefix.
    pub method: String,
    /// The request's params: a map or an array (an empty map when the request had none).
    #[serde(default)]
    pub params: Value,
}

impl RpcCall {
    /// The params as a typed value; `invalid_params` (a JSON-RPC "invalid params" error for the
    /// client) when they do not fit.
    pub fn params_as<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        params_as(&self.method, &self.params)
    }
    /// The answer for a method this module does not serve ("method not found" for the client).
    pub fn unknown_method(&self) -> HandlerError {
        HandlerError::new("unknown_method", format!("no handler for RPC method {}", self.method))
    }
}

/// A CLI command run by `modhost <module> <command> [args]` (`cli` invocation; see
/// [`Client::on_cli`](crate::Client::on_cli)).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CliCall {
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
}

impl CliCall {
    pub fn unknown_command(&self) -> HandlerError {
        HandlerError::new("unknown_method", format!("no handler for command {}", self.command))
    }
}

/// A lightning or payment method another module called, for this module as the provider
/// (`provider` invocation; see [`Client::on_provider`](crate::Client::on_provider)).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ProviderCall {
    pub kind: ProviderKind,
    /// "getNodeUrl" or "getInfo" (lightning), "getPaymentState" (payment).
    pub method: String,
    /// `{}`, or `{payment_id}` for getPaymentState.
    #[serde(default)]
    pub params: Value,
}

impl ProviderCall {
    pub fn params_as<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        params_as(&self.method, &self.params)
    }
    /// The `payment_id` of a getPaymentState call.
    pub fn payment_id(&self) -> Option<&str> {
        self.params.get("payment_id").and_then(Value::as_str)
    }
    pub fn unknown_method(&self) -> HandlerError {
        let kind = match self.kind {
            ProviderKind::Lightning => "lightning",
            ProviderKind::Payment => "payment",
            ProviderKind::Mining => "mining",
            ProviderKind::Governance => "governance",
        };
        HandlerError::new(
            "unknown_method",
            format!("this module does not provide {kind}.{}", self.method),
        )
    }
}

// ---- hooks (capabilities/hooks.ts) ----

/// A point where the host runs hooks (docs/permissions.md, Hook points).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookPoint {
    /// A module's submit_transaction, before the transaction reaches the mempool. Payload
    /// `{txid, hex, module}`; nothing is modifiable.
    TxSubmit,
    /// get_block_template, before the template is served. Payload `{module, height,
    /// previous_block_hash, transactions, coinbase_value}`; `transactions` may only lose entries.
    BlockTemplate,
    /// A JSON-RPC call of a module's method. Payload `{module, method, params}`; `params` is modifiable.
    RpcDispatch,
    /// A module about to be started. Payload `{module, version, runtime, grants, restart}`; nothing is modifiable.
    ModuleLoad,
}

/// A hook call (`hook` invocation; see [`Client::on_hook`](crate::Client::on_hook)).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HookCall {
    pub point: HookPoint,
    /// What the host is about to do, as the previous hook in the chain left it.
    #[serde(default)]
    pub payload: Value,
}

/// What a hook answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum HookAnswer {
    /// Go on with the payload as it is.
    Continue,
    /// Go on with this payload: fields the point does not declare modifiable must be left
    /// out or unchanged, or the answer counts as a failure of this hook.
    Modify { payload: Value },
    /// Stop the chain; the caller is refused with this reason, naming this module.
    Reject { reason: String },
}

// ---- event payloads (protocol/events.ts) ----

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

/// Published by the designated mining provider: it has a new block template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockTemplateUpdated {
    pub previous_block_hash: String,
    pub height: u64,
    pub transaction_count: u64,
    pub coinbase_value: u64,
    /// "new_block" or "mempool".
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
    /// It failed too often and will not start again until the operator runs `modhost enable`.
    #[serde(default)]
    pub quarantined: bool,
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
    Other {
        type_: String,
        payload: Value,
    },
}
