use std::fmt;
use std::io;

use crate::value::Value;

/// Everything that can go wrong talking to the host.
#[derive(Debug)]
pub enum Error {
    /// The host answered with an error (`response.error`, or `goodbye` during the handshake).
    /// `code` is machine-readable: `permission_denied`, `invalid_params`, `unknown_method`,
    /// `not_found`, `quota_exceeded`, `backend_error`, `timeout`, `unavailable`,
    /// `invalid_message`, `protocol_error`, `internal` (see docs/protocol.md section 6).
    Remote {
        code: String,
        message: String,
        data: Option<Value>,
    },
    /// A protocol rule was broken, or a message or result did not have the expected shape.
    Protocol(String),
    /// A frame body was not one valid MessagePack value of plain data. The frame boundary is
    /// intact: the connection stays usable.
    Decode(String),
    /// A bad frame header (zero length, above `max_frame_bytes`) or a stream that ended inside
    /// a frame. The connection cannot be used any more and is closed.
    Framing(String),
    /// Reading or writing the channel failed.
    Io(io::Error),
    /// The process has no channel to the host (no module id, or fd 3 is not the host's
    /// socket): it was not started by modhost.
    NotUnderHost(String),
    /// The connection to the host is closed (the host stopped, said goodbye, or a framing
    /// error closed it); see [`Client::close_reason`](crate::Client::close_reason).
    Closed,
}

impl Error {
    /// The machine-readable code of a [`Error::Remote`] error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Remote { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Remote { code, message, data } => {
                write!(f, "{code}: {message}")?;
                match code.as_str() {
                    "permission_denied" => {
                        if let Some(cap) = data.as_ref().and_then(|d| d.get("capability")).and_then(Value::as_str) {
                            write!(f, " (add \"{cap}\" to the module's capabilities in module.toml and ask the operator to grant it under [modules.grants.<name>])")?;
                        }
                    }
                    "unavailable" => f.write_str(" (try again later)")?,
                    _ => {}
                }
                Ok(())
            }
            Error::Protocol(m) => write!(f, "protocol error: {m}"),
            Error::Decode(m) => write!(f, "undecodable message: {m}"),
            Error::Framing(m) => write!(f, "framing error, connection closed: {m}"),
            Error::Io(e) => write!(f, "channel I/O error: {e}"),
            Error::NotUnderHost(m) => write!(
                f,
                "{m}; a module is started by the host (`modhost run` with the module enabled and granted), not by hand"
            ),
            Error::Closed => f.write_str("the connection to the host is closed; the module should finish and exit"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error an invocation handler answers with (`invocation_result.error`).
///
/// Any `(code, message)` pair of strings converts into it, so a handler can return
/// `Err(("invalid_params", "expected a name"))`.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerError {
    pub code: String,
    pub message: String,
    pub data: Option<Value>,
}

impl HandlerError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> HandlerError {
        HandlerError {
            code: code.into(),
            message: message.into(),
            data: None,
        }
    }
    pub fn with_data(mut self, data: impl Into<Value>) -> HandlerError {
        self.data = Some(data.into());
        self
    }
}

impl<C: Into<String>, M: Into<String>> From<(C, M)> for HandlerError {
    fn from((code, message): (C, M)) -> HandlerError {
        HandlerError::new(code, message)
    }
}

impl From<Error> for HandlerError {
    /// A failed request inside a handler: remote errors keep their code, others become
    /// `module_error`.
    fn from(e: Error) -> HandlerError {
        match e {
            Error::Remote { code, message, data } => HandlerError { code, message, data },
            other => HandlerError::new("module_error", other.to_string()),
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}
