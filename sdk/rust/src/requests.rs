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

    /// Block by hash, or `None`.
    pub fn get_block(&self, hash: &str) -> Result<Option<Block>> {
        self.request("get_block", &Hash { hash })
    }
    /// Block of the active chain at a height, or `None`.
    pub fn get_block_by_height(&self, height: u64) -> Result<Option<Block>> {
        self.request("get_block_by_height", &Height { height })
    }
    /// [`Client::get_block`] with options: [`BlockOptions::light`] leaves out the raw hex of
    /// the block, its header and its transactions (their `hex` fields are then empty).
    pub fn get_block_with(&self, hash: &str, options: BlockOptions) -> Result<Option<Block>> {
        self.request(
            "get_block",
            &HashWith {
                hash,
                include_hex: options.include_hex,
            },
        )
    }
    /// [`Client::get_block_by_height`] with options (see [`Client::get_block_with`]).
    pub fn get_block_by_height_with(&self, height: u64, options: BlockOptions) -> Result<Option<Block>> {
        self.request(
            "get_block_by_height",
            &HeightWith {
                height,
                include_hex: options.include_hex,
            },
        )
    }

    // storage

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
}

#[derive(Serialize)]
struct NoParams {}

// ---- params ----

#[derive(Serialize)]
struct Hash<'a> {
    hash: &'a str,
}
#[derive(Serialize)]
struct Height {
    height: u64,
}
#[derive(Serialize)]
struct HashWith<'a> {
    hash: &'a str,
    include_hex: bool,
}
#[derive(Serialize)]
struct HeightWith {
    height: u64,
    include_hex: bool,
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
