//! Typed results of the host methods, and (from incoming.rs, re-exported here) the typed
//! invocations and event payloads. Field names are the wire's
//! (snake_case). Hashes and txids are lowercase hex in display order; amounts are satoshis.
//! Unknown fields are ignored, so later hosts may add fields without breaking modules.
//!
//! The structs of the catalogue's result types are generated (generated.rs, re-exported here);
//! this file holds the types written by hand (generated.rs lists them, with why) and the
//! methods of the generated ones.
//!
//! One module, a little over 500 lines: the hand-written result types of every capability
//! family, one section each in the catalogue's order, so that they read beside generated.rs
//! (a module per family would hold a few structs each).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::generated::*;
pub use crate::incoming::*;
use crate::value::{to_value, Value, ValueError};

// ---- chain ----

/// Options of `get_block_with` and `get_block_by_height_with`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockOptions {
    /// False for the light view: the block without the raw hex of the block, its header and
    /// its transactions (about half the bytes), for modules that read fields only.
    pub include_hex: bool,
}

impl Default for BlockOptions {
    fn default() -> BlockOptions {
        BlockOptions { include_hex: true }
    }
}

impl BlockOptions {
    /// The light view: fields only, no raw hex.
    pub fn light() -> BlockOptions {
        BlockOptions { include_hex: false }
    }
}

// ---- mempool ----

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

/// One page of `storage_iter_page`: the entries, and the cursor that continues the range
/// (`None` at its end). A page stops at the options' limit or at the host's byte limit per
/// answer (`storage_iter_max_bytes`), whichever comes first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterPage<T = Value> {
    pub entries: Vec<Entry<T>>,
    #[serde(default)]
    pub cursor: Option<String>,
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
        Ok(StorageOp::Put {
            key: key.into(),
            value: to_value(value)?,
        })
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

// ---- files ----

/** What a directory entry is; a type this SDK does not know reads as `Other`. */
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    File,
    Directory,
    /// A symbolic link (the host never follows one).
    Symlink,
    #[serde(other)]
    Other,
}

// ---- modules ----

impl ModuleInfo {
    pub fn is_running(&self) -> bool {
        self.state == "running"
    }
    /// Failed too often: not started again until the operator runs `modhost enable`.
    pub fn is_quarantined(&self) -> bool {
        self.state == "quarantined"
    }
}

// ---- RPC and CLI ----

/// The module's CLI (`register_cli_spec`): `modhost <module> <command> [args]` runs a command
/// as a `cli` invocation (see [`Client::on_cli`](crate::Client::on_cli)).
///
/// ```
/// use modhost_sdk::{CliArg, CliCommand, CliSpec};
/// let spec = CliSpec::new()
///     .about("Recorded blocks")
///     .command(CliCommand::new("last").about("The last recorded block"))
///     .command(CliCommand::new("show").arg(CliArg::required("height").about("a block height")));
/// # assert_eq!(spec.commands.len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CliSpec {
    /// Shown in help; the host uses the module's name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub about: Option<String>,
    /// At most 64; names are lowercase letters, digits, '_' and '-', a letter first.
    #[serde(default)]
    pub commands: Vec<CliCommand>,
}

impl CliSpec {
    pub fn new() -> CliSpec {
        CliSpec::default()
    }
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    pub fn about(mut self, about: impl Into<String>) -> Self {
        self.about = Some(about.into());
        self
    }
    pub fn command(mut self, command: CliCommand) -> Self {
        self.commands.push(command);
        self
    }
}

/// One command of a [`CliSpec`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CliCommand {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub about: Option<String>,
    /// Positional arguments; the host refuses a run with fewer arguments than required ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<CliArg>,
}

impl CliCommand {
    pub fn new(name: impl Into<String>) -> CliCommand {
        CliCommand {
            name: name.into(),
            about: None,
            args: Vec::new(),
        }
    }
    pub fn about(mut self, about: impl Into<String>) -> Self {
        self.about = Some(about.into());
        self
    }
    pub fn arg(mut self, arg: CliArg) -> Self {
        self.args.push(arg);
        self
    }
}

/// A positional argument of a [`CliCommand`] (for usage text and the required-count check).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CliArg {
    pub name: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub about: Option<String>,
}

impl CliArg {
    pub fn required(name: impl Into<String>) -> CliArg {
        CliArg {
            name: name.into(),
            required: true,
            about: None,
        }
    }
    pub fn optional(name: impl Into<String>) -> CliArg {
        CliArg {
            name: name.into(),
            required: false,
            about: None,
        }
    }
    pub fn about(mut self, about: impl Into<String>) -> Self {
        self.about = Some(about.into());
        self
    }
}

// ---- metrics ----

/// Counters add the reported value, gauges set it, histograms record observations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// A metric value: one number (counter, gauge; a histogram also takes one observation), or
/// observations (histogram only; at most 1000 per report). Numbers and slices convert into it.
/// Read back (`get_module_metrics`, `get_all_metrics`), a histogram is a [`HistogramSummary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetricValue {
    Number(f64),
    Observations(Vec<f64>),
    Histogram(HistogramSummary),
}

impl MetricValue {
    /// The number of a counter or gauge.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            MetricValue::Number(n) => Some(*n),
            MetricValue::Observations(_) | MetricValue::Histogram(_) => None,
        }
    }
    /// The observations of a histogram.
    pub fn observations(&self) -> Option<&[f64]> {
        match self {
            MetricValue::Observations(v) => Some(v),
            MetricValue::Number(_) | MetricValue::Histogram(_) => None,
        }
    }
    /// A histogram as the host answers it when metrics are read back.
    pub fn histogram(&self) -> Option<&HistogramSummary> {
        match self {
            MetricValue::Histogram(h) => Some(h),
            _ => None,
        }
    }
}

macro_rules! metric_from_number {
    ($($t:ty),*) => {$(
        impl From<$t> for MetricValue {
            fn from(n: $t) -> MetricValue {
                MetricValue::Number(n as f64)
            }
        }
    )*};
}
metric_from_number!(f64, f32, i32, u32, i64, u64, usize);

impl From<Vec<f64>> for MetricValue {
    fn from(v: Vec<f64>) -> MetricValue {
        MetricValue::Observations(v)
    }
}
impl From<&[f64]> for MetricValue {
    fn from(v: &[f64]) -> MetricValue {
        MetricValue::Observations(v.to_vec())
    }
}
impl<const N: usize> From<[f64; N]> for MetricValue {
    fn from(v: [f64; N]) -> MetricValue {
        MetricValue::Observations(v.to_vec())
    }
}

/// A reported metric (`get_module_metrics`, `get_all_metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub kind: MetricKind,
    /// Counter and gauge: the value; histogram: its [`HistogramSummary`] (read back).
    pub value: MetricValue,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Milliseconds since the epoch of the last report, set by the host.
    pub timestamp: u64,
}

// ---- lightning and payments ----

/// What a provider module answers for (`register_provider`; `provider` invocations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// `get_lightning_node_url` and `get_lightning_info` (methods `getNodeUrl`, `getInfo`).
    Lightning,
    /// `get_payment_state` (method `getPaymentState`, params `{payment_id}`).
    Payment,
    /// The mining provider: publishes BlockTemplateUpdated and the other mining events.
    Mining,
    /// The governance provider: publishes the governance events.
    Governance,
}

// ---- network ----

/// An HTTP(S) request the host makes for the module (`http_request`; needs `network_access`
/// for the URL's host). Redirects are not followed; the host sets `Host`, `Content-Length`
/// and `Connection` itself and refuses hop-by-hop headers.
///
/// ```
/// use modhost_sdk::HttpRequest;
/// let req = HttpRequest::post("https://api.example.com/v1/notify", r#"{"height":101}"#)
///     .header("content-type", "application/json")
///     .timeout(std::time::Duration::from_secs(5));
/// # assert_eq!(req.method, "POST");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpRequest {
    /// An absolute http: or https: URL without credentials.
    pub url: String,
    /// GET, HEAD, POST, PUT, DELETE or PATCH.
    pub method: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// At most 1 MiB; GET and HEAD requests have none.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "bin::serialize_opt")]
    pub body: Option<Vec<u8>>,
    /// The deadline for the whole exchange (the host's default is 10 s, its maximum 60 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl HttpRequest {
    /// A request with any method and no body.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> HttpRequest {
        HttpRequest {
            url: url.into(),
            method: method.into(),
            headers: BTreeMap::new(),
            body: None,
            timeout_ms: None,
        }
    }
    pub fn get(url: impl Into<String>) -> HttpRequest {
        HttpRequest::new("GET", url)
    }
    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> HttpRequest {
        HttpRequest::new("POST", url).body(body)
    }
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout_ms = Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        self
    }
}

/// The answer to an [`HttpRequest`]: any status (a 404 or a 3xx is a response, not an error).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpResponse {
    pub status: u16,
    /// Lowercased names; a header received several times is joined with ", ".
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// At most 8 MiB.
    #[serde(with = "bin")]
    pub body: Vec<u8>,
    /// The URL that answered (the one requested: redirects are not followed).
    pub url: String,
}

impl HttpResponse {
    /// A header by name, in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
    /// A 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.body)
    }
}

/// `Vec<u8>` fields as MessagePack binary.
mod bin {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }
    pub fn serialize_opt<S: Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match b {
            Some(b) => s.serialize_bytes(b),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        crate::value::Bytes::deserialize(d).map(|b| b.0)
    }
}

// ---- mining ----

/// Options of `get_block_template`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockTemplateOptions {
    /// Accepted for compatibility with `getblocktemplate`; templates always follow segwit rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// Hex of an output script: the template then carries a ready coinbase transaction
    /// paying `coinbase_value` to it ([`BlockTemplate::coinbase_tx`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coinbase_script: Option<String>,
    /// A later page of a template (the `next_page` of the answer before); set by
    /// [`crate::Client::get_block_template`], which reads every page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
}

impl BlockTemplateOptions {
    pub fn new() -> BlockTemplateOptions {
        BlockTemplateOptions::default()
    }
    pub fn coinbase_script(mut self, script_hex: impl Into<String>) -> Self {
        self.coinbase_script = Some(script_hex.into());
        self
    }
    pub fn rule(mut self, rule: impl Into<String>) -> Self {
        self.rules.push(rule.into());
        self
    }
}

/// How a submitted block fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubmitBlockStatus {
    Accepted,
    Duplicate,
    Rejected,
}

impl SubmitBlockResult {
    pub fn is_accepted(&self) -> bool {
        self.result == SubmitBlockStatus::Accepted
    }
}
