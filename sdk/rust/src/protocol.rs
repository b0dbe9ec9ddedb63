//! The wire format of the module protocol, version 1 (`docs/protocol.md`): frames, and the
//! message kinds as typed structs.
//!
//! Every message is a MessagePack map keyed by field name with the kind in `t`. Encoding
//! writes `t` first and then the fields in the order they are declared here (the order of
//! the spec's tables and of `docs/protocol-vectors.json`), skipping absent optional fields.
//! Decoding accepts keys in any order and ignores unknown keys.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::value::{decode_value, from_value, total_string_bytes, Value, MAX_TOTAL_STRING_BYTES};

/// The protocol versions this SDK speaks.
pub const PROTOCOL_MIN: u32 = 1;
pub const PROTOCOL_MAX: u32 = 2;
/// The frame size limit until `welcome` states the real one (the spec's default, 16 MiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// `sdk` as sent in `hello`.
pub const SDK_NAME: &str = concat!("modhost-rust/", env!("CARGO_PKG_VERSION"));

// ---- frames ----

/// Writes one frame (4-byte big-endian body length, then the body) in a single write.
/// Refuses an empty body or one above `max_frame_bytes` without writing anything.
pub fn write_frame<W: Write>(w: &mut W, body: &[u8], max_frame_bytes: usize) -> Result<(), Error> {
    check_body_len(body.len(), max_frame_bytes)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(body);
    w.write_all(&frame)?;
    Ok(())
}

fn check_body_len(len: usize, max_frame_bytes: usize) -> Result<(), Error> {
    if len == 0 {
        return Err(Error::Protocol("refusing to send an empty frame".into()));
    }
    if len > max_frame_bytes || len > u32::MAX as usize {
        return Err(Error::Protocol(format!(
            "message of {len} bytes exceeds the maximum frame size of {max_frame_bytes} bytes (max_frame_bytes in welcome); send less data per message"
        )));
    }
    Ok(())
}

/// Encodes a message and frames it.
pub fn encode_frame<T: Serialize + ?Sized>(message: &T, max_frame_bytes: usize) -> Result<Vec<u8>, Error> {
    let body = encode_body(message)?;
    check_body_len(body.len(), max_frame_bytes)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Reads one frame body. `Ok(None)` is a clean end of stream at a frame boundary. A zero
/// length, a length above `max_frame_bytes` (the body is then not read) or a stream that ends
/// inside a frame is [`Error::Framing`]: the caller must close the connection.
pub fn read_frame<R: Read>(r: &mut R, max_frame_bytes: usize) -> Result<Option<Vec<u8>>, Error> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(Error::Framing(format!(
                    "the stream ended inside a frame header ({got} of 4 bytes)"
                )))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(e)),
        }
    }
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 {
        return Err(Error::Framing("zero-length frame".into()));
    }
    if len > max_frame_bytes {
        return Err(Error::Framing(format!(
            "frame of {len} bytes exceeds the maximum of {max_frame_bytes}"
        )));
    }
    let mut body = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match r.read(&mut body[got..]) {
            Ok(0) => {
                return Err(Error::Framing(format!(
                    "the stream ended inside a frame ({got} of {len} body bytes)"
                )))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(e)),
        }
    }
    Ok(Some(body))
}

// ---- bodies ----

/// MessagePack with maps keyed by field name (never the compact array form).
/// Refuses a body with more than [`MAX_TOTAL_STRING_BYTES`] of strings, which the host would
/// refuse (`max_total_string_bytes`, docs/protocol.md section 3.1), without sending it.
pub fn encode_body<T: Serialize + ?Sized>(message: &T) -> Result<Vec<u8>, Error> {
    let body = rmp_serde::to_vec_named(message).map_err(|e| Error::Protocol(format!("cannot encode message: {e}")))?;
    // Only a body of more than the limit in all can hold more than the limit of strings.
    if body.len() > MAX_TOTAL_STRING_BYTES {
        let strings = total_string_bytes(&body).unwrap_or(0);
        if strings > MAX_TOTAL_STRING_BYTES {
            return Err(Error::Protocol(format!(
                "the message holds {strings} bytes of strings: over the protocol limit max_total_string_bytes = {MAX_TOTAL_STRING_BYTES} (docs/protocol.md, section 3.1); send large data, such as a block, a transaction or a file, as binary (Bytes, submit_block_bytes)"
            )));
        }
    }
    Ok(body)
}

/// Decodes a frame body into a typed message. A body that is not one valid MessagePack value
/// of plain data is [`Error::Decode`]; a map without a known `t`, or with a field of the wrong
/// type, is [`Error::Protocol`]. Neither affects the frame boundary.
pub fn decode_message(body: &[u8]) -> Result<Message, Error> {
    let value = decode_value(body).map_err(|e| Error::Decode(e.to_string()))?;
    message_from_value(value)
}

/// Interprets a decoded body as a typed message.
pub fn message_from_value(value: Value) -> Result<Message, Error> {
    let kind = match value.get("t") {
        Some(Value::Str(t)) => t.clone(),
        _ => {
            return Err(Error::Protocol(format!(
                "a message is a map with a string field t, got a {}",
                value.kind()
            )))
        }
    };
    if !KINDS.contains(&kind.as_str()) {
        return Err(Error::Protocol(format!(
            "unknown message kind \"{}\"",
            kind.chars().take(64).collect::<String>()
        )));
    }
    from_value::<Message>(value).map_err(|e| Error::Protocol(format!("malformed {kind} message: {e}")))
}

const KINDS: &[&str] = &[
    "hello",
    "welcome",
    "request",
    "response",
    "event",
    "ack",
    "log",
    "invocation",
    "invocation_result",
    "ready",
    "goodbye",
];

/// Every message kind of protocol version 1, both directions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Message {
    Hello(Hello),
    Welcome(Welcome),
    Request(Request),
    Response(Response),
    Event(EventMessage),
    Ack(Ack),
    Log(LogMessage),
    Invocation(Invocation),
    InvocationResult(InvocationResult),
    Ready,
    Goodbye(Goodbye),
}

/// M→H, the first message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// `[min, max]` protocol versions the module speaks.
    pub protocol: [u32; 2],
    pub module: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk: Option<String>,
}

/// H→M, the answer to a good hello.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol: u32,
    pub host: String,
    pub module_id: String,
    /// Effective grants as descriptors (`"subscribe_events=NewBlock"`).
    #[serde(default)]
    pub grants: Vec<String>,
    /// Every request method the module may call with these grants.
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub config: Value,
    #[serde(default)]
    pub data_dir: String,
    #[serde(default = "default_event_window")]
    pub event_window: u64,
    #[serde(default = "default_max_frame")]
    pub max_frame_bytes: u64,
}

fn default_event_window() -> u64 {
    64
}
fn default_max_frame() -> u64 {
    DEFAULT_MAX_FRAME_BYTES as u64
}

/// M→H, a call of a host method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    pub method: String,
    #[serde(default)]
    pub params: Value,
}

/// The same as [`Request`] with borrowed, typed params: what the client sends.
#[derive(Serialize)]
pub(crate) struct RequestRef<'a, P: Serialize + ?Sized> {
    pub t: &'static str,
    pub id: u64,
    pub method: &'a str,
    pub params: &'a P,
}

/// An error as carried in `response`, `invocation_result` and `goodbye`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// H→M, the answer to the request with the same id: `result` or `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub id: u64,
    /// `None` when absent or nil.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

/// H→M, an event the module subscribed to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMessage {
    pub seq: u64,
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub payload: Value,
    #[serde(default)]
    pub time: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<u64>,
}

/// M→H: every event up to and including `seq` has been handled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// M→H, a line for the host log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogMessage {
    pub level: LogLevel,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Value>,
}

/// H→M, the host calls the module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invocation {
    pub id: u64,
    pub kind: String,
    #[serde(default)]
    pub params: Value,
}

/// M→H, the answer to the invocation with the same id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationResult {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

/// Either direction: the sender is about to close on purpose.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Goodbye {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}
