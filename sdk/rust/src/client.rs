use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::Shutdown as SocketShutdown;
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::bootstrap::Bootstrap;
use crate::error::{Error, HandlerError, Result};
use crate::events::{Event, Events};
use crate::protocol::*;
use crate::types::*;
use crate::value::{decode_value, from_value, to_value, Bytes, Value};

/// Requests in flight at most (the host refuses more with `unavailable`); further calls wait.
pub const MAX_IN_FLIGHT: usize = 1024;
/// How long `connect` waits for `welcome`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the host's `shutdown` invocation said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shutdown {
    pub reason: String,
    /// How long the host waits for the process to exit before SIGTERM.
    pub timeout_ms: u64,
}

type Handler = Arc<dyn Fn(Value) -> std::result::Result<Value, HandlerError> + Send + Sync>;
type ShutdownHandler = Box<dyn FnMut(&Shutdown) + Send>;

/// A connection to the host. Cheap to clone (an `Arc`); every method may be called from any
/// thread, and many requests may be in flight at once.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

enum Incoming {
    Event(EventMessage),
    End,
}

struct Pending {
    waiting: HashMap<u64, SyncSender<Result<Value>>>,
    closed: bool,
}

#[derive(Default)]
struct State {
    /// The first shutdown invocation received.
    shutdown: Option<Shutdown>,
    /// Its answer has been sent.
    shutdown_answered: bool,
    closed: bool,
    close_reason: Option<String>,
}

pub(crate) struct Inner {
    writer: Mutex<UnixStream>,
    max_frame: usize,
    welcome: Welcome,
    config: Mutex<Value>,
    next_id: AtomicU64,
    pending: Mutex<Pending>,
    pending_cv: Condvar,
    handlers: RwLock<HashMap<String, Handler>>,
    shutdown_handler: Mutex<Option<ShutdownHandler>>,
    state: Mutex<State>,
    state_cv: Condvar,
    events_tx: Mutex<Option<Sender<Incoming>>>,
    events_rx: Mutex<Receiver<Incoming>>,
    events_done: AtomicBool,
    /// Highest seq handed out by `next_event`, and highest acknowledged.
    taken: AtomicU64,
    acked: Mutex<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking user handler must not make the client unusable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

static FD_TAKEN: AtomicBool = AtomicBool::new(false);

#[derive(Serialize)]
struct NoParams {}

impl Client {
    /// Connects over the channel the host passed to this process (`MODHOST_FD`, fd 3), as the
    /// module named by `--module-id`/`MODULE_ID`, and runs the handshake. `version` is the
    /// module's version (e.g. `env!("CARGO_PKG_VERSION")`).
    pub fn connect(version: &str) -> Result<Client> {
        Client::connect_with(&Bootstrap::from_env(), version)
    }

    /// [`Client::connect`] with an explicit bootstrap.
    pub fn connect_with(boot: &Bootstrap, version: &str) -> Result<Client> {
        let module = boot
            .module_id
            .clone()
            .ok_or_else(|| Error::NotUnderHost("no module id: neither --module-id nor MODULE_ID is set".into()))?;
        let stream = take_fd(boot.fd)?;
        Client::from_stream(stream, &module, version)
    }

    /// Runs the handshake over an already-connected stream (tests, or a socket obtained some
    /// other way) and starts the reader thread.
    pub fn from_stream(stream: UnixStream, module: &str, version: &str) -> Result<Client> {
        let hello = Message::Hello(Hello {
            protocol: [PROTOCOL_MIN, PROTOCOL_MAX],
            module: module.to_owned(),
            version: version.to_owned(),
            sdk: Some(SDK_NAME.to_owned()),
        });
        let mut writer = stream.try_clone()?;
        writer.write_all(&encode_frame(&hello, DEFAULT_MAX_FRAME_BYTES)?)?;

        stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let welcome = {
            let body = match read_frame(&mut reader, DEFAULT_MAX_FRAME_BYTES) {
                Ok(Some(body)) => body,
                Ok(None) => {
                    return Err(Error::Protocol(
                        "the host closed the connection during the handshake".into(),
                    ))
                }
                Err(Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    return Err(Error::Protocol(format!(
                        "no welcome from the host within {} s",
                        HANDSHAKE_TIMEOUT.as_secs()
                    )))
                }
                Err(e) => return Err(e),
            };
            match decode_message(&body) {
                Ok(Message::Welcome(w)) => w,
                Ok(Message::Goodbye(g)) => {
                    let _ = stream.shutdown(SocketShutdown::Both);
                    return Err(match g.error {
                        Some(e) => Error::Remote {
                            code: e.code,
                            message: format!("the host refused the module: {}", e.message),
                            data: e.data,
                        },
                        None => Error::Protocol("the host said goodbye during the handshake".into()),
                    });
                }
                // An error answer to a hello the host could not read.
                Ok(Message::Response(Response { error: Some(e), .. })) => {
                    return Err(Error::Remote {
                        code: e.code,
                        message: e.message,
                        data: e.data,
                    })
                }
                Ok(other) => {
                    return Err(Error::Protocol(format!(
                        "expected welcome from the host, got {}",
                        kind_name(&other)
                    )))
                }
                Err(e) => return Err(e),
            }
        };
        stream.set_read_timeout(None)?;
        if welcome.protocol < PROTOCOL_MIN || welcome.protocol > PROTOCOL_MAX {
            return Err(Error::Protocol(format!(
                "the host chose protocol version {}, this SDK speaks {PROTOCOL_MIN}..{PROTOCOL_MAX}; update modhost-sdk",
                welcome.protocol
            )));
        }

        let (tx, rx) = mpsc::channel();
        let max_frame = usize::try_from(welcome.max_frame_bytes).unwrap_or(usize::MAX).max(1);
        let inner = Arc::new(Inner {
            writer: Mutex::new(writer),
            max_frame,
            config: Mutex::new(welcome.config.clone()),
            welcome,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(Pending {
                waiting: HashMap::new(),
                closed: false,
            }),
            pending_cv: Condvar::new(),
            handlers: RwLock::new(HashMap::new()),
            shutdown_handler: Mutex::new(None),
            state: Mutex::new(State::default()),
            state_cv: Condvar::new(),
            events_tx: Mutex::new(Some(tx)),
            events_rx: Mutex::new(rx),
            events_done: AtomicBool::new(false),
            taken: AtomicU64::new(0),
            acked: Mutex::new(0),
        });
        let weak = Arc::downgrade(&inner);
        thread::Builder::new()
            .name("modhost-reader".into())
            .spawn(move || reader_loop(weak, reader))
            .map_err(Error::Io)?;
        Ok(Client { inner })
    }

    // ---- what the host said ----

    /// The host's `welcome`.
    pub fn welcome(&self) -> &Welcome {
        &self.inner.welcome
    }
    pub fn module_id(&self) -> &str {
        &self.inner.welcome.module_id
    }
    /// The module's data directory: the only place it may write.
    pub fn data_dir(&self) -> &Path {
        Path::new(&self.inner.welcome.data_dir)
    }
    /// Whether the welcome lists `method` among those this module may call.
    pub fn may_call(&self, method: &str) -> bool {
        self.inner.welcome.methods.iter().any(|m| m == method)
    }
    /// The module's configuration: from `welcome`, updated by `config` invocations.
    pub fn config(&self) -> Value {
        lock(&self.inner.config).clone()
    }

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
        let id = NEXT_TRANSACTION_ID.fetch_add(1, Ordering::Relaxed);
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

    // ---- events ----

    /// The event stream (see [`Events`] for when events are acknowledged). May be called more
    /// than once; all streams share one queue.
    pub fn events(&self) -> Events {
        Events { client: self.clone() }
    }

    /// Acknowledges every event up to and including `seq`.
    pub fn ack(&self, seq: u64) -> Result<()> {
        self.inner.ack_up_to(seq)
    }

    // ---- messages to the host ----

    /// Start-up is complete: the host marks the module running.
    pub fn ready(&self) -> Result<()> {
        self.inner.send(&Message::Ready)
    }

    /// A line for the host log. The host keeps the first 8,192 characters of a message; only
    /// those are sent (a longer one would cost bandwidth, and past 1 MiB be refused:
    /// `max_total_string_bytes`).
    pub fn log(&self, level: LogLevel, message: &str) -> Result<()> {
        self.inner.send(&Message::Log(LogMessage {
            level,
            message: log_text(message),
            fields: None,
        }))
    }

    /// A line for the host log with structured fields (a struct or map).
    pub fn log_fields<F: Serialize + ?Sized>(&self, level: LogLevel, message: &str, fields: &F) -> Result<()> {
        let fields = to_value(fields).map_err(|e| Error::Protocol(format!("log fields: {e}")))?;
        self.inner.send(&Message::Log(LogMessage {
            level,
            message: log_text(message),
            fields: Some(fields),
        }))
    }

    /// `log(Info, ..)`; if the host cannot be told, the line goes to stderr (which the host
    /// also reads).
    pub fn info(&self, message: &str) {
        self.log_or_stderr(LogLevel::Info, message)
    }
    pub fn debug(&self, message: &str) {
        self.log_or_stderr(LogLevel::Debug, message)
    }
    pub fn warn(&self, message: &str) {
        self.log_or_stderr(LogLevel::Warn, message)
    }
    pub fn error(&self, message: &str) {
        self.log_or_stderr(LogLevel::Error, message)
    }

    fn log_or_stderr(&self, level: LogLevel, message: &str) {
        if self.log(level, message).is_err() {
            eprintln!("[{level:?}] {message}");
        }
    }

    /// Says goodbye (optionally with why) and closes the connection. Pending requests fail
    /// with [`Error::Closed`].
    pub fn goodbye(&self, error: Option<HandlerError>) -> Result<()> {
        let msg = Message::Goodbye(Goodbye {
            error: error.map(|e| WireError {
                code: e.code,
                message: e.message,
                data: e.data,
            }),
        });
        let sent = self.inner.send(&msg);
        self.inner.close("the module said goodbye".into());
        sent
    }

    // ---- invocations ----

    /// Handles invocations of `kind` ("cli", "rpc", "module_api", "timer", "provider",
    /// "config", "health", ...). The handler runs on its own thread (it may make requests) and answers
    /// with its result, or with its error's code and message. A later registration replaces
    /// an earlier one. Kinds without a handler are answered `unknown_method`, except
    /// `health` (`{status: "ok"}`), `config` (the new configuration is stored, see
    /// [`Client::config`]) and `shutdown` (see [`Client::on_shutdown`]). Register handlers
    /// before [`Client::ready`]: an invocation that arrives first finds none. The typed
    /// helpers ([`Client::on_module_api`], [`Client::on_rpc`], [`Client::on_cli`],
    /// [`Client::on_timer`], [`Client::on_provider`], [`Client::on_config`]) register a
    /// handler of their kind through this method.
    pub fn on_invocation<F, R, E>(&self, kind: &str, handler: F)
    where
        F: Fn(Value) -> std::result::Result<R, E> + Send + Sync + 'static,
        R: Serialize,
        E: Into<HandlerError>,
    {
        let h: Handler = Arc::new(move |params| match handler(params) {
            Ok(r) => {
                to_value(&r).map_err(|e| HandlerError::new("not_plain_data", format!("cannot encode the result: {e}")))
            }
            Err(e) => Err(e.into()),
        });
        self.inner
            .handlers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(kind.to_owned(), h);
    }

    /// Handles calls of this module's API by other modules (`module_api` invocations): match
    /// on `call.method` and answer `Err(call.unknown_method())` for others. Register it before
    /// [`Client::register_module_api`].
    ///
    /// ```no_run
    /// # let client: modhost_sdk::Client = unimplemented!();
    /// use modhost_sdk::{HandlerError, ModuleApiCall, Value};
    /// client.on_module_api(|call: ModuleApiCall| -> Result<Value, HandlerError> {
    ///     match call.method.as_str() {
    ///         "echo" => Ok(Value::from_pairs([("from", call.caller.into()), ("params", call.params)])),
    ///         _ => Err(call.unknown_method()),
    ///     }
    /// });
    /// client.register_module_api(&["echo"])?;
    /// # Ok::<(), modhost_sdk::Error>(())
    /// ```
    pub fn on_module_api<F, R, E>(&self, handler: F)
    where
        F: Fn(ModuleApiCall) -> std::result::Result<R, E> + Send + Sync + 'static,
        R: Serialize,
        E: Into<HandlerError>,
    {
        self.on_typed_invocation("module_api", handler)
    }

    /// Handles this module's JSON-RPC methods (`rpc` invocations, `call.method` without the
    /// module prefix). Errors reach the RPC client: `invalid_params` and `unknown_method` as
    /// JSON-RPC "invalid params" and "method not found", others as module errors.
    pub fn on_rpc<F, R, E>(&self, handler: F)
    where
        F: Fn(RpcCall) -> std::result::Result<R, E> + Send + Sync + 'static,
        R: Serialize,
        E: Into<HandlerError>,
    {
        self.on_typed_invocation("rpc", handler)
    }

    /// Handles this module's CLI commands (`cli` invocations). A string result is printed as
    /// is, anything else as JSON.
    pub fn on_cli<F, R, E>(&self, handler: F)
    where
        F: Fn(CliCall) -> std::result::Result<R, E> + Send + Sync + 'static,
        R: Serialize,
        E: Into<HandlerError>,
    {
        self.on_typed_invocation("cli", handler)
    }

    /// Handles fired timers and scheduled tasks (`timer` invocations) with the id that
    /// [`Client::register_timer`] or [`Client::schedule_task`] returned. Runs of one timer
    /// never overlap (the host skips a tick while the previous run goes on); each must finish
    /// within 30 s.
    pub fn on_timer<F, R, E>(&self, handler: F)
    where
        F: Fn(u64) -> std::result::Result<R, E> + Send + Sync + 'static,
        R: Serialize,
        E: Into<HandlerError>,
    {
        self.on_typed_invocation("timer", move |t: TimerCall| handler(t.id))
    }

    /// Handles lightning or payment methods for this module as a provider (`provider`
    /// invocations; see [`Client::register_provider`]).
    pub fn on_provider<F, R, E>(&self, handler: F)
    where
        F: Fn(ProviderCall) -> std::result::Result<R, E> + Send + Sync + 'static,
        R: Serialize,
        E: Into<HandlerError>,
    {
        self.on_typed_invocation("provider", handler)
    }

    /// Answers this module's hooks (`hook` invocations; see [`Client::register_hook`]): return
    /// [`HookAnswer::Continue`], [`HookAnswer::Modify`] with the new payload (only the fields
    /// the point declares modifiable may differ) or [`HookAnswer::Reject`] with a reason.
    /// Answer within the point's deadline: past it the point's failure policy applies.
    ///
    /// ```no_run
    /// # let client: modhost_sdk::Client = unimplemented!();
    /// use modhost_sdk::types::{HookAnswer, HookCall, HookPoint};
    /// use modhost_sdk::HandlerError;
    /// client.on_hook(|call: HookCall| -> Result<HookAnswer, HandlerError> {
    ///     match call.point {
    ///         HookPoint::TxSubmit => Ok(HookAnswer::Reject { reason: "not now".into() }),
    ///         _ => Ok(HookAnswer::Continue),
    ///     }
    /// });
    /// client.register_hook(HookPoint::TxSubmit, &[], &[]).unwrap();
    /// ```
    pub fn on_hook<F, E>(&self, handler: F)
    where
        F: Fn(HookCall) -> std::result::Result<HookAnswer, E> + Send + Sync + 'static,
        E: Into<HandlerError>,
    {
        self.on_typed_invocation("hook", handler)
    }

    /// Runs `handler` with the new configuration when the operator changes it (`config`
    /// invocations). The SDK has already stored it ([`Client::config`]) when the handler runs.
    pub fn on_config<F, R, E>(&self, handler: F)
    where
        F: Fn(Value) -> std::result::Result<R, E> + Send + Sync + 'static,
        R: Serialize,
        E: Into<HandlerError>,
    {
        self.on_typed_invocation("config", move |c: ConfigCall| handler(c.config))
    }

    /// `on_invocation` with the params decoded into `T`; params that do not fit are answered
    /// `invalid_params` without calling the handler.
    fn on_typed_invocation<T, F, R, E>(&self, kind: &'static str, handler: F)
    where
        T: DeserializeOwned,
        F: Fn(T) -> std::result::Result<R, E> + Send + Sync + 'static,
        R: Serialize,
        E: Into<HandlerError>,
    {
        self.on_invocation(kind, move |params: Value| -> std::result::Result<R, HandlerError> {
            let call = from_value::<T>(params)
                .map_err(|e| HandlerError::new("invalid_params", format!("malformed {kind} invocation: {e}")))?;
            handler(call).map_err(Into::into)
        })
    }

    /// Runs `handler` when the host asks the module to stop, before the SDK answers the
    /// `shutdown` invocation. Finish work here (or in the main loop: after the answer the
    /// event stream ends and [`Client::wait_shutdown`] returns), then exit with status 0.
    pub fn on_shutdown<F: FnMut(&Shutdown) + Send + 'static>(&self, handler: F) {
        *lock(&self.inner.shutdown_handler) = Some(Box::new(handler));
    }

    /// Blocks until the host's `shutdown` invocation has been answered; returns what it said.
    /// `Err(Error::Closed)` when the connection closed without one.
    pub fn wait_shutdown(&self) -> Result<Shutdown> {
        let mut st = lock(&self.inner.state);
        loop {
            if st.shutdown_answered {
                return Ok(st.shutdown.clone().expect("answered implies received"));
            }
            if st.closed {
                return Err(Error::Closed);
            }
            st = self.inner.state_cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Whether the host has asked the module to stop.
    pub fn is_shutting_down(&self) -> bool {
        lock(&self.inner.state).shutdown.is_some()
    }
    pub fn is_closed(&self) -> bool {
        lock(&self.inner.state).closed
    }
    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<String> {
        lock(&self.inner.state).close_reason.clone()
    }
}

fn kind_name(m: &Message) -> &'static str {
    match m {
        Message::Hello(_) => "hello",
        Message::Welcome(_) => "welcome",
        Message::Request(_) => "request",
        Message::Response(_) => "response",
        Message::Event(_) => "event",
        Message::Ack(_) => "ack",
        Message::Log(_) => "log",
        Message::Invocation(_) => "invocation",
        Message::InvocationResult(_) => "invocation_result",
        Message::Ready => "ready",
        Message::Goodbye(_) => "goodbye",
    }
}

/// Takes ownership of the inherited channel descriptor, after checking that it is an open
/// socket (so that a module started by hand fails with a clear message).
fn take_fd(fd: i32) -> Result<UnixStream> {
    use std::os::unix::io::FromRawFd;
    if fd < 0 {
        return Err(Error::NotUnderHost(format!("MODHOST_FD={fd} is not a descriptor")));
    }
    let link = Path::new("/proc/self/fd").join(fd.to_string());
    if Path::new("/proc/self/fd").is_dir() {
        match std::fs::read_link(&link) {
            Ok(target) if target.to_string_lossy().starts_with("socket:") => {}
            Ok(target) => {
                return Err(Error::NotUnderHost(format!(
                    "fd {fd} is {}, not the host's channel socket",
                    target.display()
                )))
            }
            Err(_) => {
                return Err(Error::NotUnderHost(format!(
                    "fd {fd} is not open, so there is no channel to the host"
                )))
            }
        }
    }
    if FD_TAKEN.swap(true, Ordering::SeqCst) {
        return Err(Error::Protocol(format!(
            "fd {fd} is already in use by another Client; clone the first Client instead"
        )));
    }
    // SAFETY: the descriptor is open, is a socket, and is owned by nothing else in this
    // process (FD_TAKEN): the host passed it to us for exactly this use.
    Ok(unsafe { UnixStream::from_raw_fd(fd) })
}

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
/// Characters of a log message the host keeps (host/log.ts MODULE_LOG_LIMITS.messageChars).
const LOG_MESSAGE_CHARS: usize = 8192;
/// The part of a log message the host keeps.
fn log_text(message: &str) -> String {
    match message.char_indices().nth(LOG_MESSAGE_CHARS) {
        Some((cut, _)) => message[..cut].to_owned(),
        None => message.to_owned(),
    }
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
#[derive(Deserialize)]
struct TimerCall {
    id: u64,
}
#[derive(Deserialize)]
struct ConfigCall {
    #[serde(default = "Value::map")]
    config: Value,
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

// ---- the connection's machinery ----

impl Inner {
    fn send<T: Serialize + ?Sized>(&self, message: &T) -> Result<()> {
        let frame = encode_frame(message, self.max_frame)?;
        let mut w = lock(&self.writer);
        if lock(&self.state).closed {
            return Err(Error::Closed);
        }
        w.write_all(&frame).map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::NotConnected => {
                Error::Closed
            }
            _ => Error::Io(e),
        })
    }

    fn request<P: Serialize + ?Sized>(&self, method: &str, params: &P) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode_frame(
            &RequestRef {
                t: "request",
                id,
                method,
                params,
            },
            self.max_frame,
        )?;
        let (tx, rx) = mpsc::sync_channel(1);
        {
            let mut p = lock(&self.pending);
            while !p.closed && p.waiting.len() >= MAX_IN_FLIGHT {
                p = self.pending_cv.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            if p.closed {
                return Err(Error::Closed);
            }
            p.waiting.insert(id, tx);
        }
        let sent = {
            let mut w = lock(&self.writer);
            w.write_all(&frame)
        };
        if let Err(e) = sent {
            self.forget(id);
            return Err(match e.kind() {
                std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::NotConnected => Error::Closed,
                _ => Error::Io(e),
            });
        }
        rx.recv().unwrap_or(Err(Error::Closed))
    }

    fn forget(&self, id: u64) {
        let mut p = lock(&self.pending);
        p.waiting.remove(&id);
        self.pending_cv.notify_one();
    }

    fn answer(&self, id: u64, result: Result<Value>) -> bool {
        let tx = {
            let mut p = lock(&self.pending);
            let tx = p.waiting.remove(&id);
            self.pending_cv.notify_one();
            tx
        };
        match tx {
            Some(tx) => {
                let _ = tx.send(result);
                true
            }
            None => false,
        }
    }

    pub(crate) fn ack_up_to(&self, seq: u64) -> Result<()> {
        let mut acked = lock(&self.acked);
        if seq <= *acked {
            return Ok(());
        }
        self.send(&Message::Ack(Ack { seq }))?;
        *acked = seq;
        Ok(())
    }

    pub(crate) fn next_event(self: &Arc<Self>, timeout: Option<Duration>) -> Result<Option<Event>> {
        // Taking the next event means the previous one was handled.
        let taken = self.taken.load(Ordering::SeqCst);
        if taken > 0 {
            let _ = self.ack_up_to(taken);
        }
        if self.events_done.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        let rx = lock(&self.events_rx);
        let got = match timeout {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(t) => rx.recv_timeout(t),
        };
        match got {
            Ok(Incoming::Event(m)) => {
                self.taken.fetch_max(m.seq, Ordering::SeqCst);
                Ok(Some(Event {
                    seq: m.seq,
                    type_: m.type_,
                    payload: m.payload,
                    time: m.time,
                    missed: m.missed.unwrap_or(0),
                    client: Arc::downgrade(self),
                }))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Ok(Incoming::End) | Err(RecvTimeoutError::Disconnected) => {
                self.events_done.store(true, Ordering::SeqCst);
                Err(Error::Closed)
            }
        }
    }

    fn end_events(&self) {
        if let Some(tx) = lock(&self.events_tx).take() {
            let _ = tx.send(Incoming::End);
        }
    }

    /// Marks the connection closed, fails every pending request and ends the event stream.
    fn close(&self, reason: String) {
        {
            let mut st = lock(&self.state);
            if !st.closed {
                st.closed = true;
                st.close_reason = Some(reason);
            }
        }
        self.state_cv.notify_all();
        {
            let mut p = lock(&self.pending);
            p.closed = true;
            p.waiting.clear(); // dropping the senders wakes every waiter with Error::Closed
        }
        self.pending_cv.notify_all();
        self.end_events();
        let w = lock(&self.writer);
        let _ = w.shutdown(SocketShutdown::Both);
    }

    fn warn(&self, message: String) {
        let text = format!("modhost-sdk: {message}");
        if self
            .send(&Message::Log(LogMessage {
                level: LogLevel::Warn,
                message: text.clone(),
                fields: None,
            }))
            .is_err()
        {
            eprintln!("{text}");
        }
    }

    fn dispatch(self: &Arc<Self>, body: Vec<u8>) {
        let value = match decode_value(&body) {
            Ok(v) => v,
            Err(e) => {
                self.warn(format!("ignored an undecodable message from the host: {e}"));
                return;
            }
        };
        let kind = value.get("t").and_then(Value::as_str).unwrap_or("").to_owned();
        match kind.as_str() {
            "response" => {
                let id = value.get("id").and_then(Value::as_u64);
                match from_value::<Response>(value) {
                    Ok(r) => {
                        let result = match r.error {
                            Some(e) => Err(Error::Remote {
                                code: e.code,
                                message: e.message,
                                data: e.data,
                            }),
                            None => Ok(r.result.unwrap_or(Value::Nil)),
                        };
                        let id = r.id;
                        if !self.answer(id, result) {
                            self.note_unmatched(id);
                        }
                    }
                    Err(e) => {
                        let err = Error::Protocol(format!("malformed response from the host: {e}"));
                        if !id.is_some_and(|id| self.answer(id, Err(err))) {
                            self.warn(format!("ignored a malformed response from the host: {e}"));
                        }
                    }
                }
            }
            "event" => match event_from_value(value) {
                Ok(ev) => {
                    if let Some(tx) = lock(&self.events_tx).as_ref() {
                        let _ = tx.send(Incoming::Event(ev));
                    }
                }
                Err(e) => self.warn(format!("ignored a malformed event from the host: {e}")),
            },
            "invocation" => match from_value::<Invocation>(value) {
                Ok(inv) => {
                    let inner = Arc::clone(self);
                    let spawned = thread::Builder::new()
                        .name(format!("modhost-invocation-{}", inv.kind))
                        .spawn(move || inner.invoke(inv));
                    if let Err(e) = spawned {
                        self.warn(format!("could not start a thread for an invocation: {e}"));
                    }
                }
                Err(e) => self.warn(format!("ignored a malformed invocation from the host: {e}")),
            },
            "goodbye" => {
                let why = match from_value::<Goodbye>(value) {
                    Ok(Goodbye { error: Some(e) }) => format!("the host said goodbye: {}: {}", e.code, e.message),
                    _ => "the host said goodbye".to_owned(),
                };
                self.close(why);
            }
            // Kinds a later protocol version may add are ignored (docs/protocol.md section 9).
            _ => {}
        }
    }

    fn note_unmatched(&self, id: u64) {
        // The host answers id 0 to a message it could not read: an SDK bug, worth a line.
        eprintln!("modhost-sdk: response for unknown request id {id} ignored");
    }

    fn invoke(self: Arc<Self>, inv: Invocation) {
        let params = if inv.params.is_nil() { Value::map() } else { inv.params };
        let is_shutdown = inv.kind == "shutdown";
        let outcome = catch_unwind(AssertUnwindSafe(|| self.run_invocation(&inv.kind, params))).unwrap_or_else(|_| {
            Err(HandlerError::new(
                "module_error",
                format!("the {} handler panicked", inv.kind),
            ))
        });
        let msg = match outcome {
            Ok(v) => InvocationResult {
                id: inv.id,
                result: Some(v),
                error: None,
            },
            Err(e) => InvocationResult {
                id: inv.id,
                result: None,
                error: Some(WireError {
                    code: e.code,
                    message: e.message,
                    data: e.data,
                }),
            },
        };
        match self.send(&Message::InvocationResult(msg)) {
            Ok(()) | Err(Error::Closed) => {}
            Err(Error::Protocol(why)) => {
                // An answer that cannot be sent (over max_frame_bytes or max_total_string_bytes, or not encodable) is the
                // caller's error, answered as one: never silence, which the caller would wait
                // out until its timeout.
                let too_large =
                    why.contains("exceeds the maximum frame size") || why.contains("max_total_string_bytes");
                let message: String = format!(
                    "the answer to this {} invocation could not be sent: {why}; {}",
                    inv.kind,
                    if too_large {
                        "answer with less"
                    } else {
                        "answer with plain data"
                    }
                )
                .chars()
                .take(4096)
                .collect();
                let code = if too_large {
                    "result_too_large"
                } else {
                    "not_plain_data"
                };
                let refusal = InvocationResult {
                    id: inv.id,
                    result: None,
                    error: Some(WireError {
                        code: code.to_owned(),
                        message,
                        data: None,
                    }),
                };
                if let Err(e) = self.send(&Message::InvocationResult(refusal)) {
                    eprintln!("modhost-sdk: could not answer the {} invocation: {e}", inv.kind);
                }
            }
            Err(e) => eprintln!("modhost-sdk: could not answer the {} invocation: {e}", inv.kind),
        }
        if is_shutdown {
            lock(&self.state).shutdown_answered = true;
            self.state_cv.notify_all();
            self.end_events();
        }
    }

    fn run_invocation(&self, kind: &str, params: Value) -> std::result::Result<Value, HandlerError> {
        if kind == "shutdown" {
            let sd = Shutdown {
                reason: params.get("reason").and_then(Value::as_str).unwrap_or("").to_owned(),
                timeout_ms: params.get("timeout_ms").and_then(Value::as_u64).unwrap_or(0),
            };
            let first = {
                let mut st = lock(&self.state);
                let first = st.shutdown.is_none();
                if first {
                    st.shutdown = Some(sd.clone());
                }
                first
            };
            if first {
                if let Some(h) = lock(&self.shutdown_handler).as_mut() {
                    h(&sd);
                }
            }
            return Ok(Value::from_pairs([("stopped", Value::Bool(true))]));
        }
        if kind == "config" {
            if let Some(c) = params.get("config") {
                *lock(&self.config) = c.clone();
            }
        }
        let handler = self
            .handlers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(kind)
            .cloned();
        match (handler, kind) {
            (Some(h), _) => h(params),
            (None, "health") => Ok(Value::from_pairs([("status", Value::from("ok"))])),
            (None, "config") => Ok(Value::Nil),
            (None, _) => Err(HandlerError::new(
                "unknown_method",
                format!("this module does not handle {kind} invocations"),
            )),
        }
    }
}

/// An event as leniently as its acknowledgement allows: it needs a `seq` (or it can never be
/// acknowledged) and a `type`; the payload is any value; a missing or odd `time` or `missed`
/// reads as 0 rather than losing the event.
fn event_from_value(mut value: Value) -> std::result::Result<EventMessage, String> {
    let num = |v: Option<&Value>| {
        v.and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_f64().filter(|x| *x >= 0.0).map(|x| x as u64))
        })
    };
    let seq = num(value.get("seq"))
        .filter(|s| *s >= 1)
        .ok_or("event without a positive integer seq")?;
    let type_ = value
        .get("type")
        .and_then(Value::as_str)
        .ok_or("event without a string type")?
        .to_owned();
    let time = num(value.get("time")).unwrap_or(0);
    let missed = num(value.get("missed")).filter(|m| *m > 0);
    let payload = match &mut value {
        Value::Map(entries) => entries
            .iter_mut()
            .find(|(k, _)| k == "payload")
            .map(|(_, v)| std::mem::take(v))
            .unwrap_or_default(),
        _ => Value::Nil,
    };
    Ok(EventMessage {
        seq,
        type_,
        payload,
        time,
        missed,
    })
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Wakes the reader thread (it holds its own handle on the socket) and tells the host.
        if let Ok(w) = self.writer.get_mut() {
            let _ = w.shutdown(SocketShutdown::Both);
        }
    }
}

fn reader_loop(weak: std::sync::Weak<Inner>, mut reader: BufReader<UnixStream>) {
    loop {
        let max = match weak.upgrade() {
            Some(inner) => inner.max_frame,
            None => return, // every Client is gone
        };
        let frame = read_frame(&mut reader, max);
        let Some(inner) = weak.upgrade() else { return };
        match frame {
            Ok(Some(body)) => inner.dispatch(body),
            Ok(None) => {
                inner.close("the host closed the connection".into());
                return;
            }
            Err(e) => {
                if !inner.state.lock().map(|s| s.closed).unwrap_or(true) {
                    inner.close(e.to_string());
                }
                return;
            }
        }
    }
}
