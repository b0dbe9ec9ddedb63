//! The requests a module makes of the host, typed: one method of [`Client`] per host method
//! whose typed form is written by hand (generated.rs has the mechanical ones), and the param
//! structs they send. client.rs connects and holds the rest of the API.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::types::*;
use crate::value::{from_value, Bytes, Value};

impl Client {
    // ---- requests ----

    /// Calls a host method with any serialisable params (a struct or map; `&()` for none)
    /// and returns the result as a dynamic value.
    pub fn request_raw<P: Serialize + ?Sized>(&self, method: &str, params: &P) -> Result<Value> {
        self.inner.request(method, params)
    }

    /// Calls a host method and converts its result into `R`.
    pub fn request<P: Serialize + ?Sized, R: DeserializeOwned>(&self, method: &str, params: &P) -> Result<R> {
        let v = self.inner.request(method, params)?;
        from_value(v).map_err(|e| Error::Protocol(format!("unexpected result of {method}: {e}")))
    }

    // The typed methods are generated from the catalogue (generated.rs); these are the
    // ones whose form is not mechanical (generated.rs lists them in HAND_WRITTEN, with why).

    // chain

    /// Block by hash, or `None`, with all its transactions (read a page at a time: see
    /// docs/protocol.md, "Paged answers").
    pub fn get_block(&self, hash: &str) -> Result<Option<Block>> {
        self.block_pages("get_block", Some(hash), None, true)
    }
    /// Block of the active chain at a height, or `None` (pages as for [`Client::get_block`]).
    pub fn get_block_by_height(&self, height: u64) -> Result<Option<Block>> {
        self.block_pages("get_block_by_height", None, Some(height), true)
    }
    /// [`Client::get_block`] with options: [`BlockOptions::light`] leaves out the raw hex of
    /// the block, its header and its transactions (their `hex` fields are then empty).
    pub fn get_block_with(&self, hash: &str, options: BlockOptions) -> Result<Option<Block>> {
        self.block_pages("get_block", Some(hash), None, options.include_hex)
    }
    /// [`Client::get_block_by_height`] with options (see [`Client::get_block_with`]).
    pub fn get_block_by_height_with(&self, height: u64, options: BlockOptions) -> Result<Option<Block>> {
        self.block_pages("get_block_by_height", None, Some(height), options.include_hex)
    }

    /// Reads every page of a block's transactions and joins them. A page of another block
    /// (the block at a height changed in a reorganisation between two pages) starts again.
    fn block_pages(
        &self,
        method: &str,
        hash: Option<&str>,
        height: Option<u64>,
        include_hex: bool,
    ) -> Result<Option<Block>> {
        let params = |tx_offset| BlockParams {
            hash,
            height,
            include_hex,
            tx_offset,
        };
        'again: for _ in 0..4 {
            let Some(mut block) = self.request::<_, Option<Block>>(method, &params(0))? else {
                return Ok(None);
            };
            let mut at = block.next_tx_offset;
            while let Some(offset) = at {
                match self.request::<_, Option<Block>>(method, &params(offset))? {
                    Some(page) if page.hash == block.hash => {
                        block.transactions.extend(page.transactions);
                        at = page.next_tx_offset;
                    }
                    _ => continue 'again,
                }
            }
            block.next_tx_offset = None;
            return Ok(Some(block));
        }
        Err(Error::Protocol(format!(
            "{method}: the block changed between its pages four times in a row; try again"
        )))
    }

    // mempool

    /// Txids in the mempool, read a page at a time (`get_mempool_txids`, at most 8,192 txids
    /// each) and joined. On the embedded chain each transaction in the mempool during the whole
    /// reading comes exactly once, those accepted meanwhile at the end. Needs `read_mempool`.
    pub fn get_mempool_txids(&self) -> Result<Vec<String>> {
        let mut page: MempoolTxids = self.request("get_mempool_txids", &AfterParams { after: 0 })?;
        let mut txids = std::mem::take(&mut page.txids);
        while let Some(after) = page.next_after {
            page = self.request("get_mempool_txids", &AfterParams { after })?;
            txids.append(&mut page.txids);
        }
        Ok(txids)
    }

    /// Every txid in the mempool: [`Client::get_mempool_txids`], which reads them a page at a
    /// time (the wire's `get_mempool_transactions` answers one array, and `result_too_large`
    /// past 8,192 txids). Needs `read_mempool`.
    pub fn get_mempool_transactions(&self) -> Result<Vec<String>> {
        self.get_mempool_txids()
    }

    // mining

    /// A template for the next block with all its transactions, read a page at a time
    /// (`template_id`, `next_page`; docs/protocol.md, "Paged answers") and joined. Needs
    /// `read_blockchain`.
    pub fn get_block_template(&self, options: &BlockTemplateOptions) -> Result<BlockTemplate> {
        let mut template: BlockTemplate = self.request("get_block_template", options)?;
        let mut at = template.next_page.take();
        while let Some(page) = at {
            let later = BlockTemplateOptions {
                page: Some(page),
                ..BlockTemplateOptions::default()
            };
            let mut next: BlockTemplate = self.request("get_block_template", &later)?;
            if next.template_id != template.template_id {
                return Err(Error::Protocol(format!(
                    "get_block_template: a page of template {} came for template {}",
                    next.template_id, template.template_id
                )));
            }
            template.transactions.append(&mut next.transactions);
            at = next.next_page.take();
        }
        Ok(template)
    }

    // storage

    /// Apply put/delete operations atomically: all or none (at most 10,000). Needs
    /// `write_storage`. Ops that do not fit one message are sent in parts of one transaction,
    /// which the host writes all at once with the last (docs/protocol.md section 6.2).
    pub fn storage_transaction(&self, tree: &str, ops: &[StorageOp]) -> Result<()> {
        let parts = crate::parts::split_ops(ops);
        if parts.len() == 1 {
            return self
                .request_raw("storage_transaction", &TransactionParams { tree, ops, part: None })
                .map(drop);
        }
        let id = NEXT_TRANSACTION_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for (i, ops) in parts.iter().enumerate() {
            let part = Some(TransactionPart {
                id,
                more: i + 1 < parts.len(),
            });
            self.request_raw("storage_transaction", &TransactionParams { tree, ops, part })?;
        }
        Ok(())
    }

    /// Entries in key order within the options' bounds (at most `limit`, default 1000). The
    /// host refuses a range whose entries exceed its byte limit per answer
    /// (`storage_iter_max_bytes`): page through large ranges with [`Client::storage_iter_page`].
    pub fn storage_iter<T: DeserializeOwned>(&self, tree: &str, options: &IterOptions) -> Result<Vec<Entry<T>>> {
        self.request(
            "storage_iter",
            &IterParams {
                tree,
                options,
                page: None,
            },
        )
    }
    /// One page of a range: at most `limit` entries and at most the host's byte limit per
    /// answer. Pass `None` as `cursor` for the first page, then the page's `cursor` until it
    /// is `None`.
    ///
    /// ```no_run
    /// # fn f(client: &modhost_sdk::Client) -> Result<(), modhost_sdk::Error> {
    /// use modhost_sdk::IterOptions;
    /// let mut cursor = None;
    /// loop {
    ///     let page = client.storage_iter_page::<String>("tips", &IterOptions::new(), cursor.as_deref())?;
    ///     for entry in &page.entries { /* ... */ }
    ///     cursor = page.cursor;
    ///     if cursor.is_none() { break; }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn storage_iter_page<T: DeserializeOwned>(
        &self,
        tree: &str,
        options: &IterOptions,
        cursor: Option<&str>,
    ) -> Result<IterPage<T>> {
        self.request(
            "storage_iter",
            &IterParams {
                tree,
                options,
                page: Some(cursor),
            },
        )
    }

    // events and config

    /// Adds event types to the subscription; returns the full list.
    pub fn subscribe_events(&self, types: &[&str]) -> Result<Vec<String>> {
        self.request("subscribe_events", &Types { types })
    }

    // files (paths are relative to the data directory; "" is the directory itself)

    /// The contents of a file (at most 8 MiB; needs `read_filesystem`).
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        self.request::<_, Bytes>("read_file", &PathParams { path }).map(|b| b.0)
    }
    /// The contents of a UTF-8 text file; `invalid_params` when it is not valid UTF-8.
    pub fn read_file_string(&self, path: &str) -> Result<String> {
        self.request("read_file", &ReadText { path, encoding: "utf8" })
    }
    /// Creates or replaces a file (missing parent directories are an error; see
    /// [`Client::create_directory`]). `data` is bytes or a string (needs `write_filesystem`).
    pub fn write_file(&self, path: &str, data: impl AsRef<[u8]>) -> Result<()> {
        self.request_raw(
            "write_file",
            &WriteParams {
                path,
                data: BinRef(data.as_ref()),
                append: None,
            },
        )
        .map(drop)
    }
    /// Adds to the end of a file, creating it when it does not exist.
    pub fn append_file(&self, path: &str, data: impl AsRef<[u8]>) -> Result<()> {
        self.request_raw(
            "write_file",
            &WriteParams {
                path,
                data: BinRef(data.as_ref()),
                append: Some(true),
            },
        )
        .map(drop)
    }

    // modules

    /// Calls `method` of `target`'s module API with any serialisable params (`&()` for none)
    /// and converts the answer into `R` ([`Value`] for any). The callee sees this module as
    /// the caller. Fails with `unavailable` (not running), `unknown_method`, `timeout` (after
    /// 10 s), `quota_exceeded` (calls nested more than 8 deep) or `module_error` (the
    /// handler failed). Needs `call_module` for `target`.
    pub fn call_module<P: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        target: &str,
        method: &str,
        params: &P,
    ) -> Result<R> {
        self.request(
            "call_module",
            &CallParams {
                target,
                method,
                params,
                timeout_ms: None,
            },
        )
    }
    /// [`Client::call_module`] waiting up to `timeout` (1 ms to 60 s) instead of 10 s.
    pub fn call_module_timeout<P: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        target: &str,
        method: &str,
        params: &P,
        timeout: Duration,
    ) -> Result<R> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.request(
            "call_module",
            &CallParams {
                target,
                method,
                params,
                timeout_ms: Some(timeout_ms),
            },
        )
    }

    // metrics

    /// Reports a metric (needs `report_metrics`): a counter adds `value` (at least 0), a
    /// gauge sets it, a histogram records it (a number or a slice of observations). Names
    /// and labels follow Prometheus' rules; the host adds the `module` label itself.
    pub fn report_metric(
        &self,
        name: &str,
        value: impl Into<MetricValue>,
        kind: MetricKind,
        labels: &[(&str, &str)],
    ) -> Result<()> {
        let value = value.into();
        self.request_raw(
            "report_metric",
            &ReportParams {
                name,
                value: &value,
                kind,
                labels: Labels(labels),
            },
        )
        .map(drop)
    }

    // lightning and payments (answered by the provider module; `unavailable` without one)

    /// The Lightning node's URL from the lightning provider, or `None` when it answers nil
    /// (needs `read_lightning`).
    pub fn get_lightning_node_url(&self) -> Result<Option<String>> {
        self.request("get_lightning_node_url", &NoParams {})
    }

    // hooks (needs register_hook, scoped by point; calls arrive as `hook` invocations, see Client::on_hook)

    /// Runs this module's hook at `point` (one per point; registering again replaces it).
    /// `before` / `after` name modules whose hooks this one must precede or follow; a cycle is
    /// refused with `invalid_params` naming the modules. Returns the chain's order at the
    /// point. Handle the calls with [`Client::on_hook`] first.
    pub fn register_hook(&self, point: HookPoint, before: &[&str], after: &[&str]) -> Result<HookRegistered> {
        self.request("register_hook", &HookRegister { point, before, after })
    }

    // network (needs read_network)

    /// Makes an HTTP(S) request through the host (needs `network_access` for the URL's host;
    /// a host name must resolve to public addresses). Any status is `Ok`; a refused URL is
    /// `permission_denied` or `invalid_params`, a failed exchange `unavailable`, no answer in
    /// time `timeout`, an answer above 8 MiB `quota_exceeded`.
    pub fn http_request(&self, request: &HttpRequest) -> Result<HttpResponse> {
        self.request("http_request", request)
    }

    // ---- mining and mempool: raw bytes travel as binary ----

    /// Submits a serialised block given as hex (needs `submit_block`); answers accepted,
    /// duplicate or rejected with the reason. Valid hex is sent as binary: a module's message
    /// may hold at most 1 MiB of strings (`max_total_string_bytes`), less than a large block's
    /// hex. Anything else is sent as it is, for the host to say what is wrong with it.
    pub fn submit_block(&self, hex: &str) -> Result<SubmitBlockResult> {
        self.request_raw_bytes("submit_block", hex)
    }
    /// [`Client::submit_block`] with the block's bytes.
    pub fn submit_block_bytes(&self, block: &[u8]) -> Result<SubmitBlockResult> {
        self.request("submit_block", &RawParams { hex: BinRef(block) })
    }
    /// Hands the node a serialised block (hex) as if a peer had sent it (needs
    /// `queue_inbound_block`); checked and connected like [`Client::submit_block`], same answer.
    pub fn queue_received_block(&self, hex: &str) -> Result<SubmitBlockResult> {
        self.request_raw_bytes("queue_received_block", hex)
    }
    /// [`Client::queue_received_block`] with the block's bytes.
    pub fn queue_received_block_bytes(&self, block: &[u8]) -> Result<SubmitBlockResult> {
        self.request("queue_received_block", &RawParams { hex: BinRef(block) })
    }
    /// Submits a serialised transaction (hex) to the mempool (needs `send_transactions`);
    /// returns its txid. Valid hex is sent as binary, as for [`Client::submit_block`].
    pub fn submit_transaction(&self, hex: &str) -> Result<String> {
        self.request_raw_bytes("submit_transaction", hex)
    }
    /// [`Client::submit_transaction`] with the transaction's bytes.
    pub fn submit_transaction_bytes(&self, tx: &[u8]) -> Result<String> {
        self.request("submit_transaction", &RawParams { hex: BinRef(tx) })
    }
    fn request_raw_bytes<T: DeserializeOwned>(&self, method: &str, hex: &str) -> Result<T> {
        match hex_to_bytes(hex) {
            Some(bytes) => self.request(method, &RawParams { hex: BinRef(&bytes) }),
            None => self.request(method, &HexParams { hex }),
        }
    }
}

#[derive(Serialize)]
struct NoParams {}

// ---- params ----

#[derive(Serialize)]
struct TransactionParams<'a> {
    tree: &'a str,
    ops: &'a [StorageOp],
    #[serde(skip_serializing_if = "Option::is_none")]
    part: Option<TransactionPart>,
}
/// Ids of transactions sent in parts: unique in this process (the host forgets held parts
/// when a new instance of the module starts).
static NEXT_TRANSACTION_ID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
#[derive(Serialize)]
struct AfterParams {
    after: u64,
}
#[derive(Serialize)]
struct BlockParams<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    height: Option<u64>,
    include_hex: bool,
    tx_offset: u64,
}
#[derive(Serialize)]
struct Types<'a> {
    types: &'a [&'a str],
}
#[derive(Serialize)]
struct PathParams<'a> {
    path: &'a str,
}
#[derive(Serialize)]
struct ReadText<'a> {
    path: &'a str,
    encoding: &'static str,
}
/// Bytes that serialise as MessagePack binary.
struct BinRef<'a>(&'a [u8]);
/// `{hex: bytes}`: the raw-bytes methods take binary or hex in the same field.
#[derive(Serialize)]
struct RawParams<'a> {
    hex: BinRef<'a>,
}
#[derive(Serialize)]
struct HexParams<'a> {
    hex: &'a str,
}
/// The bytes of an even-length string of hex digits, or None.
fn hex_to_bytes(hex: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let b = hex.as_bytes();
    if b.is_empty() || !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}
impl Serialize for BinRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}
#[derive(Serialize)]
struct WriteParams<'a> {
    path: &'a str,
    data: BinRef<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    append: Option<bool>,
}
// Optional params are left out rather than sent as nil: the host's schemas take a missing
// field as "not given" but refuse nil.
#[derive(Serialize)]
struct CallParams<'a, P: Serialize + ?Sized> {
    target: &'a str,
    method: &'a str,
    params: &'a P,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
}
/// Label pairs that serialise as a map.
struct Labels<'a>(&'a [(&'a str, &'a str)]);
impl Labels<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
impl Serialize for Labels<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (*k, *v)))
    }
}
#[derive(Serialize)]
struct ReportParams<'a> {
    name: &'a str,
    value: &'a MetricValue,
    kind: MetricKind,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    labels: Labels<'a>,
}
#[derive(Serialize)]
struct HookRegister<'a> {
    point: HookPoint,
    #[serde(skip_serializing_if = "<[&str]>::is_empty")]
    before: &'a [&'a str],
    #[serde(skip_serializing_if = "<[&str]>::is_empty")]
    after: &'a [&'a str],
}

/// `storage_iter` takes the tree and the options side by side in one map.
struct IterParams<'a> {
    tree: &'a str,
    options: &'a IterOptions,
    /// Paged (`Some`), with the cursor of the previous page (`Some(None)`: the first page).
    page: Option<Option<&'a str>>,
}

impl Serialize for IterParams<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let o = self.options;
        let strings = [
            ("gt", &o.gt),
            ("gte", &o.gte),
            ("lt", &o.lt),
            ("lte", &o.lte),
            ("prefix", &o.prefix),
        ];
        let paging = match self.page {
            None => 0,
            Some(None) => 1,
            Some(Some(_)) => 2,
        };
        let n = 1
            + strings.iter().filter(|(_, v)| v.is_some()).count()
            + o.reverse.is_some() as usize
            + o.limit.is_some() as usize
            + paging;
        let mut m = s.serialize_map(Some(n))?;
        m.serialize_entry("tree", self.tree)?;
        for (k, v) in strings {
            if let Some(v) = v {
                m.serialize_entry(k, v)?;
            }
        }
        if let Some(r) = o.reverse {
            m.serialize_entry("reverse", &r)?;
        }
        if let Some(l) = o.limit {
            m.serialize_entry("limit", &l)?;
        }
        if let Some(cursor) = self.page {
            m.serialize_entry("paged", &true)?;
            if let Some(c) = cursor {
                m.serialize_entry("cursor", c)?;
            }
        }
        m.end()
    }
}
