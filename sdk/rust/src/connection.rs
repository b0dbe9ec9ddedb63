//! The connection's machinery behind [`Client`](crate::Client): the shared state, writing
//! frames, matching responses to waiting callers, the event queue and its acknowledgements,
//! running invocation handlers on threads of their own, and the reader thread. client.rs holds
//! the public API that drives it.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::Shutdown as SocketShutdown;
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread;
use std::time::Duration;

use serde::Serialize;

use crate::client::{Shutdown, MAX_IN_FLIGHT};
use crate::error::{Error, HandlerError, Result};
use crate::events::Event;
use crate::protocol::*;
use crate::value::{decode_value, from_value, Value};

pub(crate) type Handler = Arc<dyn Fn(Value) -> std::result::Result<Value, HandlerError> + Send + Sync>;
pub(crate) type ShutdownHandler = Box<dyn FnMut(&Shutdown) + Send>;

pub(crate) enum Incoming {
    Event(EventMessage),
    End,
}

pub(crate) struct Pending {
    pub(crate) waiting: HashMap<u64, SyncSender<Result<Value>>>,
    pub(crate) closed: bool,
}

#[derive(Default)]
pub(crate) struct State {
    /// The first shutdown invocation received.
    pub(crate) shutdown: Option<Shutdown>,
    /// Its answer has been sent.
    pub(crate) shutdown_answered: bool,
    pub(crate) closed: bool,
    pub(crate) close_reason: Option<String>,
}

pub(crate) struct Inner {
    pub(crate) writer: Mutex<UnixStream>,
    pub(crate) max_frame: usize,
    pub(crate) welcome: Welcome,
    pub(crate) config: Mutex<Value>,
    pub(crate) next_id: AtomicU64,
    pub(crate) pending: Mutex<Pending>,
    pub(crate) pending_cv: Condvar,
    pub(crate) handlers: RwLock<HashMap<String, Handler>>,
    pub(crate) shutdown_handler: Mutex<Option<ShutdownHandler>>,
    pub(crate) state: Mutex<State>,
    pub(crate) state_cv: Condvar,
    pub(crate) events_tx: Mutex<Option<Sender<Incoming>>>,
    pub(crate) events_rx: Mutex<Receiver<Incoming>>,
    pub(crate) events_done: AtomicBool,
    /// Highest seq handed out by `next_event`, and highest acknowledged.
    pub(crate) taken: AtomicU64,
    pub(crate) acked: Mutex<u64>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking user handler must not make the client unusable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---- the connection's machinery ----

impl Inner {
    pub(crate) fn send<T: Serialize + ?Sized>(&self, message: &T) -> Result<()> {
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

    pub(crate) fn request<P: Serialize + ?Sized>(&self, method: &str, params: &P) -> Result<Value> {
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

    pub(crate) fn forget(&self, id: u64) {
        let mut p = lock(&self.pending);
        p.waiting.remove(&id);
        self.pending_cv.notify_one();
    }

    pub(crate) fn answer(&self, id: u64, result: Result<Value>) -> bool {
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

    pub(crate) fn end_events(&self) {
        if let Some(tx) = lock(&self.events_tx).take() {
            let _ = tx.send(Incoming::End);
        }
    }

    /// Marks the connection closed, fails every pending request and ends the event stream.
    pub(crate) fn close(&self, reason: String) {
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

    pub(crate) fn warn(&self, message: String) {
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

    pub(crate) fn dispatch(self: &Arc<Self>, body: Vec<u8>) {
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

    pub(crate) fn note_unmatched(&self, id: u64) {
        // The host answers id 0 to a message it could not read: an SDK bug, worth a line.
        eprintln!("modhost-sdk: response for unknown request id {id} ignored");
    }

    pub(crate) fn invoke(self: Arc<Self>, inv: Invocation) {
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

    pub(crate) fn run_invocation(&self, kind: &str, params: Value) -> std::result::Result<Value, HandlerError> {
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

pub(crate) fn reader_loop(weak: std::sync::Weak<Inner>, mut reader: BufReader<UnixStream>) {
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
