//! The public face of a connection to the host: connecting (the handshake), what the host
//! said in `welcome`, the event stream, messages to the host, and the connection's state. The
//! typed requests are requests.rs (and generated.rs), the invocation handlers invocations.rs,
//! and the machinery behind them connection.rs: each adds to [`Client`].

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::Shutdown as SocketShutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread;
use std::time::Duration;

use serde::Serialize;

use crate::bootstrap::Bootstrap;
use crate::connection::*;
use crate::error::{Error, HandlerError, Result};
use crate::events::Events;
use crate::protocol::*;
use crate::value::{to_value, Value};

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

/// A connection to the host. Cheap to clone (an `Arc`); every method may be called from any
/// thread, and many requests may be in flight at once.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

static FD_TAKEN: AtomicBool = AtomicBool::new(false);

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

/// Characters of a log message the host keeps (host/log.ts MODULE_LOG_LIMITS.messageChars).
const LOG_MESSAGE_CHARS: usize = 8192;
/// The part of a log message the host keeps.
fn log_text(message: &str) -> String {
    match message.char_indices().nth(LOG_MESSAGE_CHARS) {
        Some((cut, _)) => message[..cut].to_owned(),
        None => message.to_owned(),
    }
}
